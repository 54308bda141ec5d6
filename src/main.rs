//! The `homelab-flux` binary: parse arguments, set up the log, run, print the error chain once,
//! exit 0 / 1 / 2.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};
use homelab_flux::{cli::Cli, output::Ui};

fn main() -> ExitCode {
    homelab_flux::output::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let err = unstyled(err);
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

/// clap's plain rendering of an error drops what looks like styling from the arguments it quotes
/// (an escape sequence typed by the user simply vanishes). The same arguments parsed again
/// without styles give the same error with the user's bytes intact, for `command_line` to show
/// escaped. Help and version keep clap's own rendering.
fn unstyled(err: clap::Error) -> clap::Error {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return err;
    }
    Cli::command()
        .styles(clap::builder::Styles::plain())
        .try_get_matches_from(std::env::args_os())
        .err()
        .unwrap_or(err)
}
