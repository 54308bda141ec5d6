//! The `homelab-flux` binary: parse arguments, set up the log, run, print the error chain once,
//! exit 0 / 1 / 2.

use std::process::ExitCode;

use homelab_flux::{cli::Cli, output::Ui};

fn main() -> ExitCode {
    homelab_flux::output::install_panic_hook();
    let cli = match Cli::from_args() {
        Ok(cli) => cli,
        Err(err) => {
            homelab_flux::output::command_line(&err);
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    homelab_flux::output::init_logging(cli.global.quiet, cli.global.verbose);
    let ui = Ui::new(cli.global.quiet);
    let result = homelab_flux::run(cli, &ui);
    homelab_flux::output::close_log();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is_broken_pipe() => ExitCode::SUCCESS,
        Err(err) => {
            if !err.is_reported() {
                ui.error_chain(&err);
            }
            ExitCode::from(err.exit_code())
        }
    }
}
