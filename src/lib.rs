//! homelab-flux: bootstrap Flux onto a homelab Kubernetes cluster from a GitHub repository.
//!
//! Modules that talk to the outside world, one per system:
//! - [`config`]: the configuration files;
//! - [`git`] and [`git_remote`]: git2, for the local repository (secrets hygiene) and for the
//!   remote one (the deploy key's proof over SSH);
//! - [`github`]: GitHub's REST API, through reqwest;
//! - [`cluster`]: the Kubernetes API server, through kube-rs;
//! - [`manifests`]: Flux's install manifests, from a file or an `https://` URL, size-capped and
//!   hashed.
//!
//! Pure logic beside them: [`repo_url`], [`branch`], [`repo_path`], [`token`] check and normalise
//! values; [`token_host`] keeps the token to its own host; [`sops`] parses age identities and
//! SOPS metadata and decides whether the repository is encrypted for the cluster's identity;
//! [`keys`] makes deploy keys in memory; [`flux`] holds what homelab-flux knows about Flux (its
//! constants, the objects it applies, typed views of their status); [`online`] turns GitHub's
//! answers into findings; [`plan`] decides every write of `bootstrap` from what is there, and
//! [`step`] is its progress as events; [`diag`] holds findings. [`cmd`] has one module per
//! subcommand; [`output`] is the only module that prints.

pub mod branch;
pub mod cli;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod diag;
pub mod flux;
pub mod git;
pub mod git_remote;
pub mod github;
pub mod keys;
pub mod manifests;
pub mod online;
pub mod output;
pub mod plan;
pub mod repo_path;
pub mod repo_url;
pub mod sops;
pub mod step;
pub mod token;
pub mod token_host;

use std::process::ExitCode;

use cli::{Cli, Command};
use output::Ui;

/// How a command that ran to its end went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done, no errors (exit 0).
    Ok,
    /// Done, and problems were found (exit 1).
    Problems,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        match e {
            Exit::Ok => ExitCode::SUCCESS,
            Exit::Problems => ExitCode::from(1),
        }
    }
}

/// Runs a parsed command line. An `Err` means the command could not run (exit 2).
pub fn run(cli: Cli, ui: &Ui) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Validate(args) => cmd::validate::run(&args, &cli.global, ui),
        Command::Bootstrap(args) => cmd::bootstrap::run(&args, &cli.global, ui),
        Command::Status(args) => cmd::status::run(&args, &cli.global, ui),
        Command::Completions(args) => cmd::completions::run(&args, ui),
        Command::Man(args) => cmd::completions::man(&args, ui),
    }
}

/// A check failed after the command ran (a key refused, a branch missing, Flux not ready): the
/// message is printed as an error and the exit code is 1, not 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// The exit code for an error: 1 for [`CheckFailed`] and a guard of the plan that tripped,
/// else 2 (could not run).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| {
        e.downcast_ref::<CheckFailed>().is_some()
            || e.downcast_ref::<plan::Refusal>()
                .is_some_and(|r| !matches!(r, plan::Refusal::SshUrl(_)))
    }) {
        1
    } else {
        2
    }
}

/// True when the error is a closed stdout (`homelab-flux ... | head`), which is not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
