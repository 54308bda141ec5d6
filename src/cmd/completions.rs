//! `homelab-flux completions <shell>` and `homelab-flux man`, generated from the clap definitions.

use std::io;

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

/// Writes the completion script for `command`, the whole command line's definition.
pub fn run(args: &Args, mut command: clap::Command, ui: &Ui) -> io::Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut command, "homelab-flux", &mut buf);
    ui.out(&String::from_utf8_lossy(&buf))
}

/// Writes the man page of `command`.
pub fn man(_: &ManArgs, command: clap::Command, ui: &Ui) -> io::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(command).render(&mut buf)?;
    ui.out(&String::from_utf8_lossy(&buf))
}
