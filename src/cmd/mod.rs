//! One module per subcommand, each with its clap `Args` and one `run` function.

pub mod bootstrap;
pub mod completions;
pub mod status;
pub mod validate;

use std::path::Path;

use anyhow::Context;

use crate::Exit;
use crate::config::{self, Loaded, Secrets};
use crate::output::{Format, Ui};

/// Loads the configuration for a command; `HOMELAB_FLUX_TOKEN` replaces the secrets file.
pub(crate) fn load_config(dir: &Path, secrets: Secrets) -> anyhow::Result<Loaded> {
    let loaded = config::load(dir, secrets, &config::Env::from_process())
        .context("cannot load the configuration")?;
    if let Some(token) = &loaded.token {
        crate::output::hide(token.secret());
    }
    Ok(loaded)
}

/// Prints the findings and turns them into the exit status.
pub(crate) fn finish(
    loaded: &Loaded,
    ui: &Ui,
    format: Format,
    subject: &str,
) -> anyhow::Result<Exit> {
    ui.report(&loaded.report, &loaded.sources, format, subject)?;
    Ok(if loaded.report.has_errors() {
        Exit::Problems
    } else {
        Exit::Ok
    })
}
