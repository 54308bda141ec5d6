//! The `homelab-flux` binary: parse arguments, run, print the error chain once, exit 0 / 1 / 2.

use std::process::ExitCode;

use clap::Parser;
use homelab_flux::{cli::Cli, output::Ui};

fn main() -> ExitCode {
    homelab_flux::output::install_panic_hook();
    let cli = Cli::parse();
    let ui = Ui::new(cli.global.quiet, cli.global.verbose);
    match homelab_flux::run(cli, &ui) {
        Ok(exit) => exit.into(),
        Err(err) if homelab_flux::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            ui.error(&format!("{err:#}"));
            ExitCode::from(homelab_flux::exit_code(&err))
        }
    }
}
