//! The command line, as clap definitions. Each subcommand's arguments live with its command.

use clap::{Parser, Subcommand};

use crate::cmd::{self, GlobalArgs};

/// Bootstrap Flux (GitOps) onto a homelab Kubernetes cluster from a GitHub repository.
///
/// Configuration lives in two files of the config directory: `flux.yaml` (committed: `repo`,
/// optional `branch`, `path`, `auth`) and `secrets-flux.yaml` (never committed: `token`).
/// `HOMELAB_FLUX_TOKEN` replaces the secrets file; a token is never taken as an argument.
///
/// Exit codes: 0 done and no errors; 1 done and found problems; 2 could not run.
#[derive(Debug, Parser)]
#[command(
    name = "homelab-flux",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The process's arguments, parsed. An error (other than help and version, which are clap's
    /// own text) is that of a second parse without styles: clap's plain rendering drops what
    /// looks like styling from the arguments it quotes, so an escape sequence the user typed
    /// would vanish instead of being shown escaped by [`crate::output::command_line`].
    pub fn from_args() -> Result<Cli, clap::Error> {
        use clap::CommandFactory as _;
        let err = match Cli::try_parse() {
            Ok(cli) => return Ok(cli),
            Err(err) if crate::output::is_help_or_version(&err) => return Err(err),
            Err(err) => err,
        };
        Err(Cli::command()
            .styles(clap::builder::Styles::plain())
            .try_get_matches_from(std::env::args_os())
            .err()
            .unwrap_or(err))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Init(cmd::init::Args),
    Validate(cmd::validate::Args),
    Bootstrap(cmd::bootstrap::Args),
    Status(cmd::status::Args),
    Uninstall(cmd::uninstall::Args),
    Completions(cmd::completions::Args),
    Man(cmd::completions::ManArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
