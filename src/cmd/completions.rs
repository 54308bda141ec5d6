//! `homelab-flux completions <shell>` and `homelab-flux man`, generated from the clap definitions.

use clap::CommandFactory;

use std::io;

use crate::cli::Cli;
use crate::output::Ui;

/// Print a shell completion script to stdout.
///
/// For example: `homelab-flux completions bash > /etc/bash_completion.d/homelab-flux`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Print the man page (roff) to stdout.
///
/// For example: `homelab-flux man > /usr/local/share/man/man1/homelab-flux.1`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {}

pub fn run(args: &Args, ui: &Ui) -> io::Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "homelab-flux", &mut buf);
    ui.out(&String::from_utf8_lossy(&buf))
}

pub fn man(_: &ManArgs, ui: &Ui) -> io::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
    ui.out(&String::from_utf8_lossy(&buf))
}
