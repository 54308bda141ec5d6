//! `bootstrap --export`: the GitRepository and Kustomization as YAML, for committing to the
//! repository. Offline: the token is not read, nothing is asked.

use super::Error;
use crate::cmd::{self, Global};
use crate::config::{Loaded, Secrets, Valid};
use crate::flux;
use crate::output::{Format, Ui};

pub(super) fn export(global: &Global, ui: &Ui) -> Result<(), Error> {
    let (cfg, findings) = match cmd::load_config(&global.config_dir, Secrets::Ignored)? {
        Loaded::Valid(Valid { flux, findings, .. }) => (flux, findings),
        Loaded::Invalid(i) => {
            return cmd::finish(&i.findings, ui, Format::Text, "the configuration");
        }
    };
    if !findings.report.is_empty() {
        cmd::finish::<Error>(&findings, ui, Format::Text, "the configuration")?;
    }
    let branch = match &cfg.branch {
        Some(b) => b.as_str(),
        None => {
            ui.step(&format!(
                "note: `branch` is not set in `{}`; exporting `{}` (set `branch:` to be explicit)",
                global.config_dir.join(crate::config::FLUX_FILE).display(),
                flux::OFFLINE_DEFAULT_BRANCH
            ));
            flux::OFFLINE_DEFAULT_BRANCH
        }
    };
    let yaml = flux::export_yaml(&[
        flux::git_repository(&flux::source_url(&cfg), branch, cfg.auth),
        flux::kustomization(&cfg),
    ]);
    ui.out(&yaml)?;
    Ok(())
}
