//! `homelab-flux validate`: check the configuration, offline and (later) against GitHub.

use crate::Exit;
use crate::cli::Global;
use crate::config::Secrets;
use crate::output::{Format, Ui};

/// Check the configuration files and the secrets hygiene of the git work tree.
///
/// Offline it checks both files (every problem at once, with file:line:col and a hint) and, when
/// the config directory is in a git work tree, that the secrets file is not tracked, staged or
/// unignored, that it is not readable by others, and that the token is in no tracked file.
/// Built for pre-commit: use `--offline` there.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip the GitHub checks (repository, branch, token permissions).
    #[arg(long)]
    pub offline: bool,

    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,

    /// Output format: `text` (compiler-style, on stderr) or `json` (one document, on stdout).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(args: &Args, global: &Global, ui: &Ui) -> anyhow::Result<Exit> {
    let mut loaded = super::load_config(&global.config_dir, Secrets::Optional)?;
    let hygiene = crate::git::hygiene(
        &global.config_dir,
        &loaded.secrets_path,
        loaded.token.as_ref(),
    );
    loaded.report.extend(hygiene);
    if args.strict {
        loaded.report.make_strict();
    }
    let exit = super::finish(&loaded, ui, args.format, "the configuration")?;
    if !args.offline {
        anyhow::bail!(
            "the online checks against GitHub are not available in this version yet; run `homelab-flux validate --offline`"
        );
    }
    Ok(exit)
}
