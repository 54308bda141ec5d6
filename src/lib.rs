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
//! SOPS metadata and decides whether the repository is encrypted for the cluster's identity
//! ([`age_pq`] derives the recipient of a post-quantum one);
//! [`keys`] makes deploy keys in memory; [`flux`] holds what homelab-flux knows about Flux (its
//! constants, the objects it applies, typed views of their status); [`online`] turns GitHub's
//! answers into findings; [`plan`] decides every write of `bootstrap` from what is there, and
//! [`step`] is its progress as events; [`diag`] holds findings. [`cmd`] has one module per
//! subcommand; [`output`] is the only module that prints.

pub mod age_pq;
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

use std::io;

use cli::{Cli, Command};
use output::Ui;

/// Why a command did not end with exit 0; [`Error::exit_code`] says which of 1 or 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Validate(#[from] cmd::validate::Error),
    #[error(transparent)]
    Bootstrap(#[from] cmd::bootstrap::Error),
    #[error(transparent)]
    Status(#[from] cmd::status::Error),
    /// `completions` and `man` could not write their output.
    #[error("cannot write the output")]
    Output(#[source] io::Error),
}

impl Error {
    /// `1` when the command ran and found problems, `2` when it could not run (SPEC §2).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Validate(e) => e.exit_code(),
            Error::Bootstrap(e) => e.exit_code(),
            Error::Status(e) => e.exit_code(),
            Error::Output(_) => 2,
        }
    }

    /// True when the problems are on screen already (the findings, the status): nothing more
    /// is printed.
    pub fn is_reported(&self) -> bool {
        match self {
            Error::Validate(e) => e.is_reported(),
            Error::Bootstrap(e) => e.is_reported(),
            Error::Status(e) => e.is_reported(),
            Error::Output(_) => false,
        }
    }

    /// True when the error is a closed stdout (`homelab-flux ... | head`), which is not a
    /// failure.
    pub fn is_broken_pipe(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = next {
            if e.downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli, ui: &Ui) -> Result<(), Error> {
    match cli.command {
        Command::Validate(args) => Ok(cmd::validate::run(&args, &cli.global, ui)?),
        Command::Bootstrap(args) => Ok(cmd::bootstrap::run(&args, &cli.global, ui)?),
        Command::Status(args) => Ok(cmd::status::run(&args, &cli.global, ui)?),
        Command::Completions(args) => cmd::completions::run(&args, ui).map_err(Error::Output),
        Command::Man(args) => cmd::completions::man(&args, ui).map_err(Error::Output),
    }
}
