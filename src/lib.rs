//! homelab-flux: bootstrap Flux onto a homelab Kubernetes cluster from a GitHub repository.
//!
//! The modules stand in layers; a module imports only from its own layer or one below, and no
//! files import each other in a circle (`tests/layers.rs` checks both):
//!
//! 1. **Face**: `main` parses the command line ([`cli`]) and calls [`run`], which dispatches.
//! 2. **Commands**: [`cmd`], one module per subcommand (`bootstrap` is a folder: read, plan,
//!    apply or dry run, wait); what several commands share lives in `cmd` itself.
//! 3. **Output**: [`output`], the only module that prints: redaction, the `-v` log,
//!    diagnostics, and the steps of `bootstrap`.
//! 4. **Decisions**, pure: [`plan`] decides every write of `bootstrap` from what is there, and
//!    [`step`] is its progress as events; [`online`] turns GitHub's answers into findings ([`online_app`] for a GitHub App). They
//!    never import an outside system: they read the plain values below.
//! 5. **Outside systems**, one module each, each owning its I/O: [`config`] (the files),
//!    [`github`] (the REST API, through reqwest), [`git`] (the local repository's hygiene) and
//!    [`git_remote`] (the deploy key's proof over SSH), [`cluster`] (the API server, through
//!    kube-rs), [`manifests`] (Flux's install manifests); [`http`] is what their HTTP clients
//!    share.
//! 6. **Values**, pure: [`settings`] (the typed configuration), [`facts`] (what GitHub reports),
//!    [`flux`] (Flux's names, the objects applied, typed views of their status), [`health`]
//!    (controllers rolled out, and what a Flux object that is not synced waits for),
//!    [`crd_versions`] (whether a CRD's stored versions must be migrated first), [`repo_url`],
//!    [`branch`], [`repo_path`], [`token`], [`token_host`] and [`app_key`] (checked values),
//!    [`ssh_url`], [`pkt_line`] (git's ref advertisement),
//!    [`sops`] (age identities and SOPS metadata; [`age_pq`] derives the recipient of a
//!    post-quantum one), [`keys`] (deploy keys in memory), [`diag`]
//!    (findings), [`text`] (terminal-safe text) and [`chain`] (an error's causes).

pub mod age_pq;
pub mod app_key;
pub mod branch;
pub mod chain;
pub mod cli;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod crd_versions;
pub mod diag;
pub mod facts;
pub mod flux;
pub mod git;
pub mod git_remote;
pub mod github;
pub mod health;
pub mod http;
pub mod keys;
pub mod manifests;
pub mod online;
pub mod online_app;
pub mod output;
pub mod pkt_line;
pub mod plan;
pub mod repo_path;
pub mod repo_url;
pub mod settings;
pub mod sops;
pub mod ssh_url;
pub mod step;
pub mod text;
pub mod token;
pub mod token_host;

use std::io;

use clap::CommandFactory as _;
use cli::{Cli, Command};
use output::Ui;

/// Why a command did not end with exit 0; [`Error::exit_code`] says which of 1 or 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Init(#[from] cmd::init::Error),
    #[error(transparent)]
    Validate(#[from] cmd::validate::Error),
    #[error(transparent)]
    Bootstrap(#[from] cmd::bootstrap::Error),
    #[error(transparent)]
    Status(#[from] cmd::status::Error),
    #[error(transparent)]
    Uninstall(#[from] cmd::uninstall::Error),
    /// `completions` and `man` could not write their output.
    #[error("cannot write the output")]
    Output(#[source] io::Error),
}

impl Error {
    /// `1` when the command ran and found problems, `2` when it could not run (SPEC §2).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Init(e) => e.exit_code(),
            Error::Validate(e) => e.exit_code(),
            Error::Bootstrap(e) => e.exit_code(),
            Error::Status(e) => e.exit_code(),
            Error::Uninstall(e) => e.exit_code(),
            Error::Output(_) => 2,
        }
    }

    /// True when the problems are on screen already (the findings, the status): nothing more
    /// is printed.
    pub fn is_reported(&self) -> bool {
        match self {
            Error::Init(e) => e.is_reported(),
            Error::Validate(e) => e.is_reported(),
            Error::Bootstrap(e) => e.is_reported(),
            Error::Status(e) => e.is_reported(),
            Error::Uninstall(e) => e.is_reported(),
            Error::Output(_) => false,
        }
    }

    /// True when the error is a closed stdout (`homelab-flux ... | head`), which is not a
    /// failure.
    pub fn is_broken_pipe(&self) -> bool {
        chain::chain(self).any(|e| {
            e.downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
        })
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli, ui: &Ui) -> Result<(), Error> {
    match cli.command {
        Command::Init(args) => Ok(cmd::init::run(&args, ui)?),
        Command::Validate(args) => Ok(cmd::validate::run(&args, &(&args.config).into(), ui)?),
        Command::Bootstrap(args) => Ok(cmd::bootstrap::run(&args, &(&args.config).into(), ui)?),
        Command::Status(args) => Ok(cmd::status::run(&args, &(&args.config).into(), ui)?),
        Command::Uninstall(args) => Ok(cmd::uninstall::run(&args, &(&args.config).into(), ui)?),
        Command::Completions(args) => {
            cmd::completions::run(&args, Cli::command(), ui).map_err(Error::Output)
        }
        Command::Man(args) => {
            cmd::completions::man(&args, Cli::command(), ui).map_err(Error::Output)
        }
    }
}
