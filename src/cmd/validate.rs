//! `homelab-flux validate`: check the configuration, offline and against GitHub.

use anyhow::Context;

use crate::Exit;
use crate::cli::Global;
use crate::config::{FluxConfig, Loaded, Secrets};
use crate::diag::{Code, Diagnostic};
use crate::output::{Format, Ui};
use crate::token::Token;

/// Check the configuration files, the secrets hygiene of the git work tree, and GitHub.
///
/// Offline it checks both files (every problem at once, with file:line:col and a hint) and, when
/// the config directory is in a git work tree, that the secrets file is not tracked, staged or
/// unignored, that it is not readable by others, and that the token is in no tracked file.
/// Online it also asks GitHub whether the token works, the repository and branch exist, and the
/// token may manage deploy keys. Built for pre-commit: use `--offline` there.
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
    let mut loaded = super::check_offline(&global.config_dir, Secrets::Optional, ui)?;

    let mut unreachable = None;
    if !args.offline {
        match (&loaded.flux, &loaded.token, loaded.report.has_errors()) {
            (Some(cfg), Some(token), false) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?;
                match runtime.block_on(check_github(cfg, token, &loaded, ui)) {
                    Ok(found) => loaded.report.extend(found),
                    Err(e) => unreachable = Some(e),
                }
            }
            (_, None, false) => loaded.report.push(
                Diagnostic::note(
                    Code::OnlineSkipped,
                    "the GitHub checks were skipped: there is no token",
                )
                .with_hint(format!(
                    "create `{}` or set `HOMELAB_FLUX_TOKEN`",
                    loaded.secrets_path.display()
                )),
            ),
            _ => loaded.report.push(
                Diagnostic::note(
                    Code::OnlineSkipped,
                    "the GitHub checks were skipped because of the errors above",
                )
                .with_hint("fix them and run again"),
            ),
        }
    }
    if args.strict {
        loaded.report.make_strict();
    }
    let exit = super::finish(&loaded, ui, args.format, "the configuration")?;
    match unreachable {
        Some(e) => Err(e),
        None => Ok(exit),
    }
}

/// Asks GitHub the independent questions at once and turns the answers into findings.
async fn check_github(
    cfg: &FluxConfig,
    token: &Token,
    loaded: &Loaded,
    ui: &Ui,
) -> anyhow::Result<Vec<Diagnostic>> {
    let client = super::github_client(cfg, token, ui)?;
    ui.log(
        1,
        &format!(
            "checking `{}` against the GitHub API at {}",
            cfg.repo,
            client.api_base()
        ),
    );
    let answers = client.ask(cfg, false).await;
    super::github_findings(cfg, token, loaded, answers)
}
