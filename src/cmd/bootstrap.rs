//! `homelab-flux bootstrap`: set up Flux on the cluster from the repository.

use std::path::PathBuf;
use std::time::Duration;

use crate::Exit;
use crate::cli::{Global, parse_duration};
use crate::config::Secrets;
use crate::flux;
use crate::output::{Format, Ui};

/// Install Flux if needed, give it read access to the repository, apply the GitRepository and
/// Kustomization `flux-system`, and wait until Flux has synced. Safe to run again at any time.
///
/// With `--export`, print the GitRepository and Kustomization as YAML instead, touching nothing,
/// for committing to the repository so that Flux manages them afterwards.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the GitRepository and Kustomization as YAML and stop; no network, no cluster.
    #[arg(long, conflicts_with_all = ["dry_run", "force", "no_wait"])]
    pub export: bool,

    /// Show what would change: server-side dry run on the cluster, no GitHub writes.
    #[arg(long)]
    pub dry_run: bool,

    /// Take over a GitRepository or Kustomization that points at another repository or path.
    #[arg(long)]
    pub force: bool,

    /// Apply and return without waiting for Flux to sync.
    #[arg(long)]
    pub no_wait: bool,

    /// How long to wait for Flux to sync, for example `90s` or `10m`.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// Flux's install manifests, a file or an `https://` URL (default: the pinned Flux release).
    #[arg(long, value_name = "FILE|URL")]
    pub flux_manifests: Option<String>,

    /// Title of the deploy key on GitHub (default: `homelab-flux <context>`).
    #[arg(long, value_name = "TITLE")]
    pub key_title: Option<String>,
}

pub fn run(args: &Args, global: &Global, ui: &Ui) -> anyhow::Result<Exit> {
    if args.export {
        return export(global, ui);
    }
    anyhow::bail!(
        "bootstrapping a cluster is not available in this version yet; `homelab-flux bootstrap --export` prints the Flux objects to apply by hand"
    )
}

/// Prints the GitRepository and Kustomization; the token is not read.
fn export(global: &Global, ui: &Ui) -> anyhow::Result<Exit> {
    let loaded = super::load_config(&global.config_dir, Secrets::Ignored)?;
    let Some(cfg) = loaded.flux.as_ref().filter(|_| !loaded.report.has_errors()) else {
        return super::finish(&loaded, ui, Format::Text, "the configuration");
    };
    if !loaded.report.is_empty() {
        ui.report(
            &loaded.report,
            &loaded.sources,
            Format::Text,
            "the configuration",
        )?;
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
    let yaml = flux::export_yaml(&[flux::git_repository(cfg, branch), flux::kustomization(cfg)]);
    ui.out(&yaml)?;
    Ok(Exit::Ok)
}
