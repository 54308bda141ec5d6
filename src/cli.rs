//! The command line, as clap definitions. Each subcommand's arguments live with its command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cmd;

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
    pub global: Global,

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
            Err(err) if is_help_or_version(&err) => return Err(err),
            Err(err) => err,
        };
        Err(Cli::command()
            .styles(clap::builder::Styles::plain())
            .try_get_matches_from(std::env::args_os())
            .err()
            .unwrap_or(err))
    }
}

/// True when clap has help or a version to print rather than an error.
pub fn is_help_or_version(err: &clap::Error) -> bool {
    use clap::error::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Directory holding `flux.yaml` and `secrets-flux.yaml`.
    #[arg(long, global = true, value_name = "DIR", default_value = "config")]
    pub config_dir: PathBuf,

    /// More logs on stderr: `-v` for debug, `-vv` also for trace and the debug events of kube-rs,
    /// hyper and reqwest (the token is never logged).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Validate(cmd::validate::Args),
    Bootstrap(cmd::bootstrap::Args),
    Status(cmd::status::Args),
    Completions(cmd::completions::Args),
    Man(cmd::completions::ManArgs),
}

/// Parses durations such as `5m`, `90s`, `1m30s`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("`{s}` is not a duration; use for example `90s`, `5m` or `1h`");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_duration("1m30s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("45").unwrap().as_secs(), 45);
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        assert!(parse_duration("9999999999999999999h").is_err(), "overflow");
    }
}
