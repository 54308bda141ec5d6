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
    for identity in &loaded.age_identities {
        crate::output::hide(identity.secret());
    }
    Ok(loaded)
}

/// The offline checks every command that reads secrets runs: the configuration, the secrets
/// hygiene of the git work tree, and, for `decryption: sops`, whether the repository is
/// encrypted for the age identity the cluster gets (then the only one left in
/// `age_identities`).
pub(crate) fn check_offline(dir: &Path, secrets: Secrets, ui: &Ui) -> anyhow::Result<Loaded> {
    let mut loaded = load_config(dir, secrets)?;
    let hygiene = crate::git::hygiene(
        dir,
        &loaded.secrets_path,
        crate::git::Secrets {
            token: loaded.token.as_ref(),
            age_identities: &loaded.age_identities,
        },
    );
    loaded.report.extend(hygiene.findings);
    if loaded.decryption.is_some()
        && let Some(identity) = crate::sops::choose(&loaded.age_identities, &hygiene.sops).cloned()
    {
        ui.log(
            1,
            &format!(
                "the cluster gets the age identity of recipient `{}` (of {} found)",
                identity.recipient(),
                loaded.age_identities.len()
            ),
        );
        loaded
            .report
            .extend(crate::sops::check(&identity, &hygiene.sops));
        loaded.age_identities = vec![identity];
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
