//! The command line of `bootstrap`.

use std::time::Duration;

use crate::cmd::{ClusterArgs, parse_duration};
use crate::flux::Version;
use crate::manifests;
use crate::output::Format;

/// Install Flux if needed, give it read access to the repository, apply the GitRepository and
/// Kustomization `flux-system`, and wait until Flux has synced. Safe to run again at any time.
///
/// With `--export`, print the GitRepository and Kustomization as YAML instead, touching nothing,
/// for committing to the repository so that Flux manages them afterwards.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  homelab-flux bootstrap                             # install Flux and sync; run again any time
  homelab-flux bootstrap --dry-run                   # the plan, field by field; nothing changes
  homelab-flux bootstrap --context home --timeout 10m
  homelab-flux bootstrap --export > clusters/home/flux-system/sync.yaml")]
pub struct Args {
    #[command(flatten)]
    pub config: crate::cmd::ConfigArgs,

    /// Print the GitRepository and Kustomization as YAML and stop; no network, no cluster.
    #[arg(long, conflicts_with_all = ["dry_run", "force", "no_wait", "format"])]
    pub export: bool,

    /// Print the plan: each object with the fields that would change, the deploy keys that
    /// would be created or deleted. The API server checks the writes without keeping them;
    /// GitHub gets none.
    #[arg(long)]
    pub dry_run: bool,

    /// Take over a GitRepository or Kustomization that points at another repository or path.
    #[arg(long)]
    pub force: bool,

    /// Apply and return without waiting for Flux to sync.
    #[arg(long)]
    pub no_wait: bool,

    /// How long to wait for Flux to sync, for example `90s` or `10m` (at most `24h`).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Output format of the steps: `text` (lines on stderr) or `json` (one object per line,
    /// on stdout).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,

    /// The Flux release to install or upgrade to (default: the pinned release, v2.10.1); its
    /// `install.yaml` on GitHub is the default `--flux-manifests`.
    #[arg(long, value_name = "vX.Y.Z", value_parser = parse_flux_version, conflicts_with = "flux_manifests")]
    pub flux_version: Option<Version>,

    /// Flux's install manifests, a file or an `https://` URL (default: the `install.yaml` of
    /// `--flux-version`). Their `app.kubernetes.io/version` label is the release installed.
    #[arg(long, value_name = "FILE|URL", value_parser = manifests::parse_source)]
    pub flux_manifests: Option<manifests::Source>,

    /// The SHA-256 the install manifests must have (as `sha256sum` prints it); the run stops
    /// before applying anything else.
    #[arg(long, value_name = "HEX", value_parser = manifests::parse_sha256)]
    pub flux_manifests_sha256: Option<String>,

    /// Title of the deploy key on GitHub (default: `homelab-flux <context> <cluster id>`, the id
    /// derived from the context and the API server's address).
    #[arg(long, value_name = "TITLE")]
    pub key_title: Option<String>,
}

/// The longest `--timeout`: a day is more than any sync needs, and a deadline far beyond it would
/// overflow `Instant` after the cluster was already written to.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// `--timeout`: a duration of at most [`MAX_TIMEOUT`], refused as a usage error otherwise.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_TIMEOUT {
        return Err(format!("`{s}` is longer than the maximum, `24h`"));
    }
    Ok(d)
}

/// `--flux-version`: a release `vX.Y.Z`.
fn parse_flux_version(s: &str) -> Result<Version, String> {
    Version::parse(s)
        .filter(|_| s.trim().starts_with('v'))
        .ok_or_else(|| format!("`{s}` is not a Flux release such as `v2.10.1`"))
}
