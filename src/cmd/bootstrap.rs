//! `homelab-flux bootstrap`: set up Flux on the cluster from the repository.
//!
//! The order is chosen so that every stop leaves a state the next run repairs: nothing touches
//! the cluster before the configuration, GitHub and the deploy key are proven; stale keys are
//! deleted only after the new one works; every cluster write is an idempotent server-side apply.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use kube::api::DynamicObject;
use secrecy::SecretString;
use serde_json::Value;

use crate::cli::{Global, parse_duration};
use crate::cluster::{self, Applied, Cluster, Kind, LeaseState};
use crate::config::{Auth, FluxConfig, Secrets};
use crate::github::{DeployKey, GitHub, Repository};
use crate::keys::KeyPair;
use crate::output::{Format, Ui};
use crate::{CheckFailed, Exit, flux, git_remote, keys, manifests};

/// The Flux release whose `install.yaml` is applied when Flux is missing.
pub const FLUX_VERSION: &str = "v2.9.0";

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

    /// How long to wait for Flux to sync, for example `90s` or `10m` (at most `24h`).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// Flux's install manifests, a file or an `https://` URL (default: the pinned Flux release).
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

pub fn run(args: &Args, global: &Global, ui: &Ui) -> anyhow::Result<Exit> {
    if args.export {
        return export(global, ui);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let lease = HeldLease::default();
    // Ctrl-C stops the run between two steps with a message rather than mid-line and silent.
    // Every step is safe to cut short: the next run repairs what this one left (a key that was
    // not yet in the cluster is deleted then as stale, and every apply is idempotent).
    let result = runtime.block_on(async {
        let result = tokio::select! {
            result = bootstrap(args, global, ui, &lease) => result,
            _ = tokio::signal::ctrl_c() => {
                ui.progress_done();
                Err(anyhow::anyhow!(
                    "interrupted; run `homelab-flux bootstrap` again: it finishes what this run started"
                ))
            }
        };
        // A run that stopped early gives the Lease back, so that the next one need not wait
        // for it to expire.
        lease.release(ui).await;
        result
    });
    // An SSH proof still running on a blocking thread is abandoned, not waited for.
    runtime.shutdown_background();
    result
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
    let yaml = flux::export_yaml(&[
        flux::git_repository(&flux::source_url(cfg), branch),
        flux::kustomization(cfg),
    ]);
    ui.out(&yaml)?;
    Ok(Exit::Ok)
}

/// Step lines with the time each step took.
struct Steps<'a> {
    ui: &'a Ui,
    last: Instant,
}

impl Steps<'_> {
    fn done(&mut self, text: &str) {
        let ms = self.last.elapsed().as_millis();
        self.ui.step(&format!("- {text} ({ms} ms)"));
        self.last = Instant::now();
    }
}

async fn bootstrap(
    args: &Args,
    global: &Global,
    ui: &Ui,
    lease: &HeldLease,
) -> anyhow::Result<Exit> {
    let mut steps = Steps {
        ui,
        last: Instant::now(),
    };
    let prefix = if args.dry_run { "(dry run) " } else { "" };

    // 1. The configuration, offline and online; nothing is touched when it has errors.
    let mut loaded = super::check_offline(&global.config_dir, Secrets::Required, ui)?;
    let (cfg, token) = match (
        loaded.flux.clone(),
        loaded.token.clone(),
        loaded.report.has_errors(),
    ) {
        (Some(cfg), Some(token), false) => (cfg, token),
        _ => return super::finish(&loaded, ui, Format::Text, "the configuration"),
    };
    let (found, repo) = super::validate::check_github(&cfg, &token, &loaded, ui).await?;
    loaded.report.extend(found);
    if loaded.report.has_errors() || !loaded.report.is_empty() {
        let exit = super::finish(&loaded, ui, Format::Text, "the configuration")?;
        if exit == Exit::Problems {
            return Ok(exit);
        }
    }
    let repo = repo.context("GitHub did not describe the repository")?;
    let gh = super::validate::client(&cfg, &token)?;
    let branch = cfg
        .branch
        .as_ref()
        .map_or_else(|| repo.default_branch.clone(), |b| b.to_string());
    steps.done(&format!(
        "checked the configuration and `{}` on GitHub",
        cfg.repo
    ));

    // 2. The cluster: reachable, recent enough, Flux installed.
    let cluster = Cluster::connect(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    ui.log(
        1,
        &format!(
            "kubeconfig context `{}`, API server {}",
            cluster.context(),
            cluster.server()
        ),
    );
    let (version, git_version) = cluster.version().await?;
    if version < cluster::MIN_VERSION {
        return Err(CheckFailed(format!(
            "the cluster runs Kubernetes {git_version}; Flux needs {}.{} or newer: upgrade the cluster first",
            cluster::MIN_VERSION.0,
            cluster::MIN_VERSION.1
        ))
        .into());
    }
    steps.done(&format!(
        "connected to `{}` (Kubernetes {git_version})",
        cluster.context()
    ));
    // In a dry run Flux's CRDs are not installed for real, so nothing of theirs can be read or
    // dry-run applied yet.
    let mut crds_pending = false;
    let missing = cluster.missing_flux_parts().await?;
    if !missing.is_empty() {
        ui.log(
            1,
            &format!("Flux is not fully installed: no {}", missing.join(", no ")),
        );
        crds_pending = args.dry_run
            && missing
                .iter()
                .any(|m| m.starts_with(Kind::CustomResourceDefinition.name()));
        let source = args
            .flux_manifests
            .clone()
            .unwrap_or_else(default_manifests);
        let documents = read_manifests(&source, args.flux_manifests_sha256.as_deref(), ui).await?;
        let (count, written) = cluster
            .install(&documents, args.dry_run, args.timeout)
            .await?;
        ui.log(
            1,
            &format!(
                "{written} of {count} objects written, {} already as wanted",
                count - written
            ),
        );
        steps.done(&format!(
            "{prefix}installed Flux from `{source}` ({count} objects)"
        ));
    }

    // 3. The Namespace (the Lease of step 5 lives in it).
    let ns = flux::NAMESPACE;
    let verb = |a: Applied| match (args.dry_run, a) {
        (true, Applied::Created) => "would be created".to_string(),
        (true, Applied::Updated) => "would be updated".to_string(),
        (_, a) => a.to_string(),
    };
    let live_ns = cluster.get(Kind::Namespace, None, ns).await?;
    let ns_applied = cluster
        .apply(
            Kind::Namespace,
            &flux::namespace(),
            live_ns.as_ref(),
            args.dry_run,
        )
        .await?;
    steps.done(&format!("{prefix}Namespace `{ns}` {}", verb(ns_applied)));

    // 4. What is there now, and the guards against taking over someone else's set-up.
    let (live_secret, live_repo, live_ks) = tokio::join!(
        cluster.get(Kind::Secret, Some(ns), flux::NAME),
        get_unless(&cluster, Kind::GitRepository, crds_pending),
        get_unless(&cluster, Kind::Kustomization, crds_pending),
    );
    let (live_secret, live_repo, live_ks) = (live_secret?, live_repo?, live_ks?);
    let live_url = live_repo
        .as_ref()
        .and_then(|o| o.data["spec"]["url"].as_str());
    let url = source_url(&cfg, &repo, live_url)?;
    let desired_repo = flux::git_repository(&url, &branch);
    let desired_ks = flux::kustomization(&cfg);
    let live_path = live_ks
        .as_ref()
        .and_then(|o| o.data["spec"]["path"].as_str());
    let taken_over = takeovers(live_url, &url, live_path, cfg.path.as_str());
    if !taken_over.is_empty() && !args.force {
        return Err(CheckFailed(format!(
            "{}; nothing was changed. Run again with `--force` to point Flux at the new repository or path",
            taken_over.join("; ")
        ))
        .into());
    }
    if !taken_over.is_empty() && live_ks.is_some() {
        steps.ui.step(&format!(
            "note: the Kustomization `{ns}/{}` has `prune: true`: Flux deletes what it applied from the old {} that the new one does not hold",
            flux::NAME,
            if live_url.is_some_and(|old| !flux::same_repo_url(old, &url)) {
                "repository"
            } else {
                "path"
            }
        ));
    }

    // 5. Credentials, proven before the cluster is touched. Making a new key takes the Lease
    //    that keeps a second run of this cluster from doing the same at once (each would delete
    //    the other's key as stale); a run that reuses the key in the cluster writes nothing
    //    and needs no Lease, so a re-run stays free of writes.
    let title = args
        .key_title
        .clone()
        .unwrap_or_else(|| keys::default_title(cluster.context(), cluster.server()));
    let force_secret = args.force && !taken_over.is_empty();
    let credentials = match cfg.auth {
        Auth::DeployKey => {
            let serialise = Serialise {
                cluster: &cluster,
                lease,
                deadline: tokio::time::Instant::now() + args.timeout,
                force_secret,
            };
            let in_cluster = live_secret.as_ref().filter(|_| !force_secret);
            deploy_key(
                &gh,
                &cfg,
                &repo,
                &branch,
                in_cluster,
                &title,
                (!args.dry_run).then_some(&serialise),
                &mut steps,
            )
            .await?
        }
        Auth::Token => {
            let b = gh
                .get_branch(&cfg.repo.owner, &cfg.repo.name, &branch)
                .await
                .context("cannot read the branch with the token")?;
            steps.done(&format!("branch `{branch}` is at {}", short(&b.commit_sha)));
            Credentials {
                secret: Some(flux::token_secret(token.expose())),
                sha: Some(b.commit_sha),
                stale: Vec::new(),
                ssh: None,
                live_secret: None,
            }
        }
    };

    // 6. Apply, in order; stale keys go only once the Secret with the new key is in place.
    if force_secret && live_secret.is_some() {
        cluster
            .delete(Kind::Secret, Some(ns), flux::NAME, args.dry_run)
            .await?;
        steps.done(&format!(
            "{prefix}Secret `{ns}/{}` deleted, to be replaced",
            flux::NAME
        ));
    }
    let live_secret = match (force_secret, credentials.live_secret.clone()) {
        (true, _) => None,
        (false, Some(fresh)) => fresh,
        (false, None) => live_secret,
    };
    let mut changed = ns_applied != Applied::Unchanged;
    let mut secret_changed = false;
    // A dry run cannot check objects in a Namespace that does not exist yet (nor Flux objects
    // without their CRDs): those are reported as to be created, unchecked.
    let ns_pending = args.dry_run && live_ns.is_none();
    let apply = |kind: Kind, desired: &Value, live: Option<&DynamicObject>, pending: bool| {
        let desired = desired.clone();
        let live = live.cloned();
        let cluster = &cluster;
        async move {
            if pending {
                return Ok(Applied::Created);
            }
            cluster
                .apply(kind, &desired, live.as_ref(), args.dry_run)
                .await
        }
    };
    match &credentials.secret {
        Some(s) => {
            let r = apply(Kind::Secret, s, live_secret.as_ref(), ns_pending).await?;
            changed |= r != Applied::Unchanged;
            secret_changed = r != Applied::Unchanged;
            steps.done(&format!("{prefix}Secret `{ns}/{}` {}", flux::NAME, verb(r)));
        }
        None => steps.done(&format!(
            "{prefix}Secret `{ns}/{}` would be written with the new deploy key",
            flux::NAME
        )),
    }
    if !args.dry_run {
        delete_stale_keys(&gh, &cfg, &credentials.stale, &mut steps).await?;
    }
    // The age identity, before the Kustomization that decrypts with it (SPEC §8). Loading the
    // configuration for bootstrap made a missing identity an error, so there is one here.
    let mut sops_changed = false;
    if cfg.decryption.is_some()
        && let Some(identity) = loaded.age_identities.first()
    {
        let live = match ns_pending {
            true => None,
            false => {
                cluster
                    .get(Kind::Secret, Some(ns), flux::SOPS_SECRET)
                    .await?
            }
        };
        let desired = flux::sops_age_secret(identity.expose());
        let r = apply(Kind::Secret, &desired, live.as_ref(), ns_pending).await?;
        sops_changed = r != Applied::Unchanged;
        changed |= sops_changed;
        steps.done(&format!(
            "{prefix}Secret `{ns}/{}` {} (age recipient `{}`)",
            flux::SOPS_SECRET,
            verb(r),
            identity.recipient()
        ));
    }
    let pending = ns_pending || crds_pending;
    for desired in [&desired_repo, &desired_ks] {
        ui.log(
            2,
            &format!(
                "desired {} spec: {}",
                desired["kind"].as_str().unwrap_or_default(),
                desired["spec"]
            ),
        );
    }
    let repo_applied = apply(
        Kind::GitRepository,
        &desired_repo,
        live_repo.as_ref(),
        pending,
    )
    .await?;
    steps.done(&format!(
        "{prefix}GitRepository `{ns}/{}` {}",
        flux::NAME,
        verb(repo_applied)
    ));
    let ks_applied = apply(Kind::Kustomization, &desired_ks, live_ks.as_ref(), pending).await?;
    steps.done(&format!(
        "{prefix}Kustomization `{ns}/{}` {}",
        flux::NAME,
        verb(ks_applied)
    ));
    changed |= repo_applied != Applied::Unchanged || ks_applied != Applied::Unchanged;
    // The credentials are settled: another run may go on while this one waits for Flux.
    lease.release(ui).await;

    if args.dry_run || args.no_wait {
        return Ok(Exit::Ok);
    }
    let Some(sha) = credentials.sha.clone() else {
        return Ok(Exit::Ok);
    };

    // 7. Wait until Flux has synced the proven commit, or a newer head of the branch.
    let synced = |o: &Option<DynamicObject>, f: fn(&Value) -> Option<String>| {
        o.as_ref().and_then(|o| f(&o.data)).as_deref() == Some(sha.as_str())
    };
    if !changed
        && synced(&live_repo, repo_ready_revision)
        && synced(&live_ks, kustomization_ready_revision)
    {
        steps.done(&format!("Flux is synced at {}", short(&sha)));
        return Ok(Exit::Ok);
    }
    // Flux watches no Secrets, and an unchanged GitRepository spec is no new generation: when
    // the credentials changed (a new key, a rotated token), or nothing changed and Flux is not
    // at the commit, ask it to fetch now, and wait until it has handled that very request, so
    // that Ready means the new credentials work.
    let mut requested = None;
    if repo_applied == Applied::Unchanged
        && (secret_changed || !synced(&live_repo, repo_ready_revision))
    {
        let stamp = jiff::Timestamp::now().to_string();
        cluster
            .request_reconcile(Kind::GitRepository, ns, flux::NAME, &stamp)
            .await?;
        requested = Some(stamp);
    }
    // Nor does kustomize-controller watch the decryption Secret: a new identity is tried now,
    // not at the next interval, and Ready must come from that attempt.
    let mut ks_requested = None;
    if sops_changed && ks_applied == Applied::Unchanged {
        let stamp = jiff::Timestamp::now().to_string();
        cluster
            .request_reconcile(Kind::Kustomization, ns, flux::NAME, &stamp)
            .await?;
        ks_requested = Some(stamp);
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut heads = Heads {
        gh: &gh,
        cfg: &cfg,
        branch: &branch,
        ssh: credentials.ssh.as_ref(),
        accepted: vec![sha.clone()],
    };
    let repo_done = |data: &Value| {
        repo_ready_revision(data).filter(|_| {
            requested
                .as_deref()
                .is_none_or(|s| data["status"]["lastHandledReconcileAt"] == s)
        })
    };
    let at = wait_for(
        &cluster,
        Kind::GitRepository,
        deadline,
        ui,
        &repo_done,
        &mut heads,
    )
    .await?;
    steps.done(&format!(
        "GitRepository `{ns}/{}` is Ready at {}{}",
        flux::NAME,
        short(&at),
        moved_note(&branch, &sha, &at)
    ));
    let ks_done = |data: &Value| {
        kustomization_ready_revision(data).filter(|_| {
            ks_requested
                .as_deref()
                .is_none_or(|s| data["status"]["lastHandledReconcileAt"] == s)
        })
    };
    let at = wait_for(
        &cluster,
        Kind::Kustomization,
        deadline,
        ui,
        &ks_done,
        &mut heads,
    )
    .await?;
    steps.done(&format!(
        "Kustomization `{ns}/{}` is Ready at {}{}",
        flux::NAME,
        short(&at),
        moved_note(&branch, &sha, &at)
    ));
    Ok(Exit::Ok)
}

/// What the step line adds when Flux synced a newer head than the one proven.
fn moved_note(branch: &str, proven: &str, at: &str) -> String {
    if at == proven {
        String::new()
    } else {
        format!(
            " (`{branch}` moved on from {} while bootstrap waited)",
            short(proven)
        )
    }
}

/// The GitRepository's URL: the SSH endpoint GitHub gives (`ssh_url`), or the clone URL for
/// `auth: token`. Spelled as `bootstrap --export` spells it when both name the same repository
/// (GitHub's casing may differ from `flux.yaml`'s), and as the live object spells it when that
/// names the same repository too, so that an exported copy committed to the repository, applied
/// by Flux itself, and bootstrap never rewrite each other's URL.
fn source_url(
    cfg: &FluxConfig,
    repo: &Repository,
    live: Option<&str>,
) -> Result<String, git_remote::Error> {
    let from_github = match cfg.auth {
        Auth::DeployKey => git_remote::SshEndpoint::parse(&repo.ssh_url)?.url(),
        Auth::Token => repo.clone_url.clone(),
    };
    let exported = flux::source_url(cfg);
    let url = if flux::same_repo_url(&from_github, &exported) {
        exported
    } else {
        from_github
    };
    Ok(match live {
        Some(live) if flux::same_repo_url(live, &url) => live.to_string(),
        _ => url,
    })
}

/// The guards' findings: the live GitRepository follows another repository, the live
/// Kustomization applies another path.
fn takeovers(
    live_url: Option<&str>,
    url: &str,
    live_path: Option<&str>,
    path: &str,
) -> Vec<String> {
    let (ns, name) = (flux::NAMESPACE, flux::NAME);
    let mut found = Vec::new();
    if let Some(old) = live_url
        && !flux::same_repo_url(old, url)
    {
        found.push(format!(
            "GitRepository `{ns}/{name}` follows `{old}`, not `{url}`"
        ));
    }
    if let Some(old) = live_path
        && old != path
    {
        found.push(format!(
            "Kustomization `{ns}/{name}` applies `{old}`, not `{path}`"
        ));
    }
    found
}

/// The bootstrap Lease of this run, once taken; renewed in the background until released.
#[derive(Default)]
struct HeldLease {
    held: tokio::sync::Mutex<Option<(Cluster, String, tokio::task::JoinHandle<()>)>>,
}

impl HeldLease {
    /// Takes the Lease, waiting (with a progress line) while another run holds it, until
    /// `deadline`.
    async fn acquire(
        &self,
        cluster: &Cluster,
        deadline: tokio::time::Instant,
        steps: &mut Steps<'_>,
    ) -> anyhow::Result<()> {
        let ns = flux::NAMESPACE;
        let holder = holder_identity();
        let mut changes = cluster.watch_lease(ns);
        let mut shown = String::new();
        loop {
            let (other, expires) = match cluster.try_acquire_lease(ns, &holder).await? {
                LeaseState::Acquired => break,
                LeaseState::Held { holder, expires } => (holder, expires),
            };
            let text = format!(
                "  waiting for another bootstrap of this cluster to finish (Lease `{ns}/{}` held by `{other}`)",
                cluster::LEASE_NAME
            );
            if shown != text {
                steps.ui.progress(&text);
                shown = text;
            }
            // Wake when the Lease changes (released, renewed) or would expire unrenewed.
            let left = (expires - jiff::Timestamp::now())
                .try_into()
                .unwrap_or(Duration::ZERO);
            let wake =
                (tokio::time::Instant::now() + left + Duration::from_millis(50)).min(deadline);
            tokio::select! {
                next = changes.next() => {
                    if !matches!(next, Some(Ok(()))) {
                        // The watch dropped: look again after a pause rather than spinning.
                        tokio::time::sleep_until(wake.min(tokio::time::Instant::now() + Duration::from_secs(1))).await;
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                steps.ui.progress_done();
                anyhow::bail!(
                    "another bootstrap of this cluster (`{other}`) still holds the Lease `{ns}/{}`; nothing was changed. Run again once it has finished; a run that died releases it within {} s",
                    cluster::LEASE_NAME,
                    cluster::LEASE_DURATION.as_secs()
                );
            }
        }
        if !shown.is_empty() {
            steps.ui.progress_done();
            steps.done("another bootstrap of this cluster finished; going on");
        }
        steps.ui.log(
            1,
            &format!(
                "took the Lease `{ns}/{}` as `{holder}`",
                cluster::LEASE_NAME
            ),
        );
        let renewer = {
            let (cluster, holder) = (cluster.clone(), holder.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(cluster::LEASE_DURATION / 3).await;
                    // A failed renewal is tried again; the Lease only lapses if every try fails.
                    let _ = cluster.renew_lease(ns, &holder).await;
                }
            })
        };
        *self.held.lock().await = Some((cluster.clone(), holder, renewer));
        Ok(())
    }

    /// Gives the Lease back, if held. Failing to is no error: it expires on its own.
    async fn release(&self, ui: &Ui) {
        let Some((cluster, holder, renewer)) = self.held.lock().await.take() else {
            return;
        };
        renewer.abort();
        let release = cluster.release_lease(flux::NAMESPACE, &holder);
        match tokio::time::timeout(Duration::from_secs(5), release).await {
            Ok(Ok(())) => ui.log(1, "released the Lease"),
            Ok(Err(e)) => ui.log(1, &format!("could not release the Lease: {e}")),
            Err(_) => ui.log(
                1,
                "could not release the Lease in time; it expires on its own",
            ),
        }
    }
}

/// Who holds the Lease, as `kubectl get lease` shows it: host, process and start time.
fn holder_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string());
    format!(
        "homelab-flux on {host}, pid {}, {}",
        std::process::id(),
        jiff::Timestamp::now()
    )
}

/// Reads a Flux object, or assumes it absent when its CRD is not installed yet (a dry run).
async fn get_unless(
    cluster: &Cluster,
    kind: Kind,
    pending: bool,
) -> Result<Option<DynamicObject>, cluster::Error> {
    if pending {
        return Ok(None);
    }
    cluster.get(kind, Some(flux::NAMESPACE), flux::NAME).await
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// What the credentials step settled.
struct Credentials {
    /// The Secret to apply (`None` in a dry run that would need a new key).
    secret: Option<Value>,
    /// The branch's commit, proven over SSH or read from GitHub.
    sha: Option<String>,
    /// Keys of this cluster's title that are not the key going into the cluster: deleted once
    /// the Secret is applied.
    stale: Vec<DeployKey>,
    /// How to read the branch's head over SSH when the token cannot read it from the API.
    ssh: Option<SshAccess>,
    /// The Secret as read again under the Lease, when it was (another run may have changed it).
    live_secret: Option<Option<DynamicObject>>,
}

/// What a run that needs a new key takes the Lease with.
struct Serialise<'a> {
    cluster: &'a Cluster,
    lease: &'a HeldLease,
    deadline: tokio::time::Instant,
    /// `--force` onto another repository: the Secret in the cluster is not reused.
    force_secret: bool,
}

/// A deploy key and where it opens the repository.
struct SshAccess {
    ssh_url: String,
    private: SecretString,
    host_keys: Vec<String>,
}

/// Reuses the key in the cluster while GitHub still lists it; otherwise creates a new read-only
/// key and proves it over SSH (deleting it again if the proof fails). Keys of this cluster's
/// title that are not the key going into the cluster come back as stale: they are deleted only
/// once the Secret holding the new key is applied. Keys of other titles, and keys of the title
/// homelab-flux used before titles carried a cluster id, are never stale: they may be another
/// cluster's (the key in this cluster's Secret is recognised by its value, whatever its title).
#[allow(clippy::too_many_arguments)]
async fn deploy_key(
    gh: &GitHub,
    cfg: &FluxConfig,
    repo: &Repository,
    branch: &str,
    live_secret: Option<&DynamicObject>,
    title: &str,
    serialise: Option<&Serialise<'_>>,
    steps: &mut Steps<'_>,
) -> anyhow::Result<Credentials> {
    let dry_run = serialise.is_none();
    let (owner, name) = (cfg.repo.owner.as_str(), cfg.repo.name.as_str());
    // The branch's head comes along, so that a key GitHub still lists needs no SSH round trip.
    let (meta, keys, head) = tokio::join!(
        gh.meta(),
        gh.list_deploy_keys(owner, name),
        gh.get_branch(owner, name, branch)
    );
    let (meta, mut keys) = (meta?, keys?);
    steps.ui.log(
        1,
        &format!(
            "GitHub lists {} deploy key(s) on `{owner}/{name}`, {} titled `{title}`; {} SSH host key(s) in /meta",
            keys.len(),
            keys.iter().filter(|k| k.title == title).count(),
            meta.ssh_keys.len()
        ),
    );
    let endpoint = git_remote::SshEndpoint::parse(&repo.ssh_url)?;
    steps.ui.log(2, &format!("SSH endpoint {}", endpoint.url()));
    let known_hosts = git_remote::known_hosts(&endpoint, &meta.ssh_keys);

    let reusable = |secret: Option<&DynamicObject>, keys: &[DeployKey]| {
        secret
            .and_then(|s| secret_value(s, "identity"))
            .and_then(|pem| KeyPair::from_private_openssh(&SecretString::from(pem)).ok())
            .filter(|k| {
                keys.iter()
                    .any(|d| d.matches_public_key(k.public_key_openssh()))
            })
    };
    let mut found = reusable(live_secret, &keys);
    let mut fresh_secret = None;
    if found.is_none()
        && let Some(s) = serialise
    {
        s.lease.acquire(s.cluster, s.deadline, steps).await?;
        // Another run may have put a working key in place while this one waited.
        let (secret, listed) = tokio::join!(
            s.cluster
                .get(Kind::Secret, Some(flux::NAMESPACE), flux::NAME),
            gh.list_deploy_keys(owner, name)
        );
        let secret = secret?.filter(|_| !s.force_secret);
        keys = listed?;
        found = reusable(secret.as_ref(), &keys);
        fresh_secret = Some(secret);
    }
    let reusable = found;
    let (pair, created) = match reusable {
        Some(k) => {
            steps.done(&format!(
                "the deploy key in the cluster is still registered on GitHub ({})",
                k.fingerprint()
            ));
            (k, None)
        }
        None if dry_run => {
            steps.done(&format!(
                "(dry run) would create the read-only deploy key `{title}` on GitHub"
            ));
            return Ok(Credentials {
                secret: None,
                sha: None,
                stale: Vec::new(),
                ssh: None,
                live_secret: None,
            });
        }
        None => {
            let k = KeyPair::generate(title)?;
            let key = gh
                .create_deploy_key(owner, name, title, k.public_key_openssh(), true)
                .await
                .context("cannot create the deploy key on GitHub")?;
            steps.done(&format!(
                "created the read-only deploy key `{title}` ({})",
                k.fingerprint()
            ));
            (k, Some(key.id))
        }
    };
    let access = SshAccess {
        ssh_url: repo.ssh_url.clone(),
        private: pair.private_key_openssh().clone(),
        host_keys: meta.ssh_keys.clone(),
    };

    // A new key is proven over SSH before anything relies on it. A key GitHub still lists is
    // the one Flux already uses: the API's branch head is enough, unless the token cannot read
    // contents (then the head comes from the SSH remote, as for a new key).
    let sha = match (created, head) {
        (None, Ok(head)) => {
            steps.done(&format!("`{branch}` is at {}", short(&head.commit_sha)));
            head.commit_sha
        }
        _ => match prove(&access, branch).await? {
            Ok(sha) => {
                steps.done(&format!(
                    "proved the deploy key over SSH: `{branch}` is at {}",
                    short(&sha)
                ));
                sha
            }
            Err(e) => {
                // The key opens nothing: remove it, so that no unproven key is left behind.
                let cleanup = match created {
                    Some(id) => match gh.delete_deploy_key(owner, name, id).await {
                        Ok(()) => String::new(),
                        Err(d) => format!(
                            "; the new deploy key `{title}` (id {id}) could not be deleted again ({d}): delete it under the repository's Settings → Deploy keys, or run `homelab-flux bootstrap` again, which deletes it as stale"
                        ),
                    },
                    None => String::new(),
                };
                return Err(
                    CheckFailed(format!("{e:#}; the cluster was not changed{cleanup}")).into(),
                );
            }
        },
    };

    let stale = keys
        .into_iter()
        .filter(|k| k.title == title && !k.matches_public_key(pair.public_key_openssh()))
        .collect();
    use secrecy::ExposeSecret;
    let secret = flux::deploy_key_secret(
        pair.private_key_openssh().expose_secret(),
        pair.public_key_openssh(),
        &known_hosts,
    );
    Ok(Credentials {
        secret: Some(secret),
        sha: Some(sha),
        stale,
        ssh: Some(access),
        live_secret: fresh_secret,
    })
}

/// Deletes the keys of this cluster's title that the cluster no longer holds.
async fn delete_stale_keys(
    gh: &GitHub,
    cfg: &FluxConfig,
    stale: &[DeployKey],
    steps: &mut Steps<'_>,
) -> anyhow::Result<()> {
    for key in stale {
        gh.delete_deploy_key(&cfg.repo.owner, &cfg.repo.name, key.id)
            .await
            .with_context(|| {
                format!(
                    "the cluster holds its new deploy key, but the stale key `{}` (id {}) could not be deleted; run `homelab-flux bootstrap` again to delete it",
                    key.title, key.id
                )
            })?;
        steps.done(&format!(
            "deleted the stale deploy key `{}` (id {})",
            key.title, key.id
        ));
    }
    Ok(())
}

/// Lists the remote's refs over SSH with the key, checking the host key; the branch's head.
/// Gives up after [`git_remote::PROOF_DEADLINE`]; the blocking thread is then abandoned (git2
/// cannot be interrupted) and ends with the process.
async fn prove(
    access: &SshAccess,
    branch: &str,
) -> anyhow::Result<Result<String, git_remote::Error>> {
    let ssh_url = access.ssh_url.clone();
    let private = access.private.clone();
    let host_keys = access.host_keys.clone();
    let branch = branch.to_string();
    let proof = tokio::task::spawn_blocking(move || {
        git_remote::prove_key(&ssh_url, &private, &host_keys, &branch)
    });
    match tokio::time::timeout(git_remote::PROOF_DEADLINE, proof).await {
        Ok(joined) => joined.context("the SSH proof did not finish"),
        Err(_) => {
            let url = git_remote::SshEndpoint::parse(&access.ssh_url)
                .map_or_else(|_| access.ssh_url.clone(), |e| e.url());
            Ok(Err(git_remote::Error::TimedOut {
                url,
                after: git_remote::PROOF_DEADLINE,
            }))
        }
    }
}

/// Tells whether a commit Flux reports is one bootstrap can call synced: the proven commit, or
/// the branch's current head (a commit landed while bootstrap waited, e.g. a Renovate merge).
struct Heads<'a> {
    gh: &'a GitHub,
    cfg: &'a FluxConfig,
    branch: &'a str,
    ssh: Option<&'a SshAccess>,
    /// Commits known good: the proven one, and heads seen since.
    accepted: Vec<String>,
}

impl Heads<'_> {
    async fn accepts(&mut self, sha: &str, ui: &Ui) -> bool {
        if self.accepted.iter().any(|a| a == sha) {
            return true;
        }
        let head = match self
            .gh
            .get_branch(&self.cfg.repo.owner, &self.cfg.repo.name, self.branch)
            .await
        {
            Ok(b) => Some(b.commit_sha),
            // A token without contents access (deploy-key set-ups): ask the SSH remote.
            Err(_) => match self.ssh {
                Some(access) => prove(access, self.branch).await.ok().and_then(Result::ok),
                None => None,
            },
        };
        ui.log(
            1,
            &format!(
                "Flux reports {}; `{}` is at {}",
                short(sha),
                self.branch,
                head.as_deref().map_or("(unknown)", short)
            ),
        );
        // Not remembered when it differs: GitHub's answer may lag behind a push Flux has seen.
        let current = head.as_deref() == Some(sha);
        if current {
            self.accepted.push(sha.to_string());
        }
        current
    }
}

/// A Secret's value, decoded.
fn secret_value(secret: &DynamicObject, key: &str) -> Option<String> {
    let encoded = secret.data["data"][key].as_str()?;
    let bytes: k8s_openapi::ByteString =
        serde_json::from_value(Value::String(encoded.to_string())).ok()?;
    String::from_utf8(bytes.0).ok()
}

fn generation_observed(data: &Value) -> bool {
    let generation = data["metadata"]["generation"].as_i64();
    generation.is_none() || data["status"]["observedGeneration"].as_i64() == generation
}

fn ready(data: &Value) -> bool {
    cluster::condition(data, "Ready").is_some_and(|c| c.status == "True")
}

/// The commit of a Flux revision: `main@sha1:abc…` (Flux v1 APIs) or `main/abc…` (older).
fn revision_sha(revision: &str) -> &str {
    revision
        .rsplit_once(':')
        .or_else(|| revision.rsplit_once('/'))
        .map_or(revision, |(_, sha)| sha)
}

/// The commit of the GitRepository's artifact, when it is Ready at its current generation.
fn repo_ready_revision(data: &Value) -> Option<String> {
    (generation_observed(data) && ready(data))
        .then(|| data["status"]["artifact"]["revision"].as_str())
        .flatten()
        .map(|r| revision_sha(r).to_string())
}

/// The commit the Kustomization last applied, when it is Ready at its current generation.
fn kustomization_ready_revision(data: &Value) -> Option<String> {
    (generation_observed(data) && ready(data))
        .then(|| data["status"]["lastAppliedRevision"].as_str())
        .flatten()
        .map(|r| revision_sha(r).to_string())
}

/// Watches one Flux object until it is Ready at a commit `heads` accepts, showing its Ready
/// condition as it changes; returns that commit. A watch that drops (an API server restart, a
/// 410 Gone) is resumed until `deadline`; only an API server that keeps refusing (403, 404)
/// ends the wait early.
async fn wait_for(
    cluster: &Cluster,
    kind: Kind,
    deadline: tokio::time::Instant,
    ui: &Ui,
    ready_at: &(dyn Fn(&Value) -> Option<String> + Sync),
    heads: &mut Heads<'_>,
) -> anyhow::Result<String> {
    /// A refusal seen this many times in a row is not passing.
    const REFUSALS: u32 = 3;
    let mut stream = cluster.watch(kind, flux::NAMESPACE, flux::NAME);
    let mut last = None;
    let mut shown = String::new();
    let mut failing: Option<cluster::Error> = None;
    let (mut retries, mut refusals) = (0u32, 0u32);
    loop {
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(next)) => next,
            Ok(None) => anyhow::bail!("the watch on {} ended unexpectedly", kind.name()),
            Err(_) => {
                ui.progress_done();
                return Err(match failing {
                    Some(e) => e.into(),
                    None => not_ready(kind, last.as_ref()).into(),
                });
            }
        };
        let object = match next {
            Ok(object) => {
                (retries, refusals, failing) = (0, 0, None);
                object
            }
            Err(e) => {
                let refused = cluster::is_refusal(&e);
                let error = cluster.watch_error(kind, flux::NAME, e);
                refusals = if refused { refusals + 1 } else { 0 };
                if refusals >= REFUSALS {
                    ui.progress_done();
                    return Err(error.into());
                }
                ui.log(
                    1,
                    &format!("the watch on {} dropped ({error}); resuming", kind.name()),
                );
                failing = Some(error);
                // 0.25 s, doubling to 5 s: quick after a blip, gentle on a restarting server.
                let pause =
                    Duration::from_millis(250 << retries.min(5)).min(Duration::from_secs(5));
                retries += 1;
                tokio::time::sleep_until((tokio::time::Instant::now() + pause).min(deadline)).await;
                continue;
            }
        };
        let Some(object) = object else { continue };
        if let Some(sha) = ready_at(&object.data)
            && heads.accepts(&sha, ui).await
        {
            ui.progress_done();
            return Ok(sha);
        }
        let condition = cluster::condition(&object.data, "Ready");
        let text = match &condition {
            Some(c) => format!(
                "  {} `{}`: {} {}: {}",
                kind.name(),
                flux::NAME,
                c.status,
                c.reason,
                c.message
            ),
            None => format!(
                "  {} `{}`: waiting for the controller",
                kind.name(),
                flux::NAME
            ),
        };
        if text != shown {
            ui.progress(&text);
            shown = text;
        }
        if cluster::condition(&object.data, "Stalled").is_some_and(|c| c.status == "True") {
            ui.progress_done();
            return Err(not_ready(kind, condition.as_ref()).into());
        }
        last = condition;
    }
}

/// The failure after a timeout or a stall, with the controller's words and a hint.
fn not_ready(kind: Kind, condition: Option<&cluster::Condition>) -> CheckFailed {
    let Some(c) = condition else {
        return CheckFailed(format!(
            "{} `{}/{}` has no Ready condition yet: are the Flux controllers running? (`kubectl -n flux-system get pods`)",
            kind.name(),
            flux::NAMESPACE,
            flux::NAME
        ));
    };
    let lower = c.message.to_lowercase();
    let hint = if let Some(hint) = crate::sops::decryption_failure_hint(&c.message) {
        hint
    } else if lower.contains("authenticat")
        || lower.contains("permission denied")
        || lower.contains("handshake failed")
    {
        "the deploy key is missing on GitHub or was refused: run `homelab-flux bootstrap` again to replace it"
    } else if lower.contains("couldn't find remote ref") || lower.contains("not found") {
        "the branch or path may not exist in the repository: check `branch` and `path` in flux.yaml"
    } else {
        "see `kubectl -n flux-system describe` for the object, and the controller's logs"
    };
    CheckFailed(format!(
        "{} `{}/{}` is not Ready: {}: {} (hint: {hint})",
        kind.name(),
        flux::NAMESPACE,
        flux::NAME,
        c.reason,
        c.message
    ))
}

/// The pinned Flux release's `install.yaml`.
fn default_manifests() -> manifests::Source {
    let url =
        format!("https://github.com/fluxcd/flux2/releases/download/{FLUX_VERSION}/install.yaml");
    manifests::parse_source(&url).expect("the pinned release URL is https")
}

/// Reads Flux's install manifests (see [`manifests`]) into JSON documents; says which SHA-256
/// is applied.
async fn read_manifests(
    source: &manifests::Source,
    pinned: Option<&str>,
    ui: &Ui,
) -> anyhow::Result<Vec<Value>> {
    let fetched = manifests::fetch(source, pinned)
        .await
        .context("cannot use the Flux manifests")?;
    ui.step(&format!(
        "- the Flux manifests `{source}` have SHA-256 {}{}",
        fetched.sha256,
        if pinned.is_some() { " (as pinned)" } else { "" }
    ));
    let mut documents = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&fetched.text) {
        let value: Value = serde::Deserialize::deserialize(doc)
            .with_context(|| format!("`{source}` is not valid YAML"))?;
        if value.is_object() {
            documents.push(value);
        }
    }
    if documents.is_empty() {
        anyhow::bail!("`{source}` holds no Kubernetes objects");
    }
    Ok(documents)
}

/// Public for `status`: the Secret's deploy public key, if any.
pub(crate) fn deploy_public_key(secret: &DynamicObject) -> Option<String> {
    secret_value(secret, "identity.pub")
}

/// Public for `status`.
pub(crate) fn is_ready(data: &Value) -> bool {
    generation_observed(data) && ready(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(ssh_url: &str, clone_url: &str) -> Repository {
        serde_json::from_value(serde_json::json!({
            "full_name": "username/manifests",
            "default_branch": "main",
            "ssh_url": ssh_url,
            "clone_url": clone_url,
            "private": true,
        }))
        .unwrap()
    }

    fn config(yaml: &str) -> FluxConfig {
        crate::config::parse_flux(yaml, "flux.yaml").0.unwrap()
    }

    #[test]
    fn bootstrap_spells_the_url_as_export_does_for_the_same_repository() {
        // GitHub's `ssh_url` spells the names its own way; `flux.yaml` another.
        let cfg = config("repo: https://github.com/Username/Manifests\n");
        let gh = repo(
            "git@github.com:username/manifests.git",
            "https://github.com/username/manifests.git",
        );
        let exported = flux::source_url(&cfg);
        assert_eq!(source_url(&cfg, &gh, None).unwrap(), exported);
        // A live object that names the same repository keeps its spelling: no rewrite.
        let live = "ssh://git@github.com/username/manifests";
        assert_eq!(source_url(&cfg, &gh, Some(live)).unwrap(), live);
        // Another SSH endpoint (Enterprise Server, a port, the test environment) is GitHub's.
        let elsewhere = repo(
            "ssh://git@127.0.0.1:2222/srv/git/manifests.git",
            "https://github.com/username/manifests.git",
        );
        assert_eq!(
            source_url(&cfg, &elsewhere, Some(&exported)).unwrap(),
            "ssh://git@127.0.0.1:2222/srv/git/manifests.git"
        );
        let token = config("repo: https://github.com/Username/Manifests\nauth: token\n");
        assert_eq!(
            source_url(&token, &gh, None).unwrap(),
            flux::source_url(&token)
        );
    }

    #[test]
    fn the_guard_ignores_case_and_dot_git_but_not_another_repository_or_path() {
        // Regression: GitHub's `ssh_url` casing tripped the guard.
        assert!(
            takeovers(
                Some("ssh://git@github.com/Username/Manifests"),
                "ssh://git@github.com/username/manifests.git",
                Some("./clusters/home"),
                "./clusters/home",
            )
            .is_empty()
        );
        let found = takeovers(
            Some("ssh://git@github.com/username/other.git"),
            "ssh://git@github.com/username/manifests.git",
            Some("./a"),
            "./b",
        );
        assert_eq!(
            found,
            [
                "GitRepository `flux-system/flux-system` follows `ssh://git@github.com/username/other.git`, not `ssh://git@github.com/username/manifests.git`",
                "Kustomization `flux-system/flux-system` applies `./a`, not `./b`",
            ]
        );
    }

    #[test]
    fn revisions_name_their_commit() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(revision_sha(&format!("main@sha1:{sha}")), sha);
        assert_eq!(revision_sha(&format!("feature/x@sha1:{sha}")), sha);
        assert_eq!(revision_sha(&format!("main/{sha}")), sha);
        assert_eq!(revision_sha(sha), sha);
        let ready = serde_json::json!({
            "metadata": {"generation": 2},
            "status": {
                "observedGeneration": 2,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": ""}],
                "artifact": {"revision": format!("main@sha1:{sha}")},
                "lastAppliedRevision": format!("main@sha1:{sha}"),
            }
        });
        assert_eq!(repo_ready_revision(&ready).as_deref(), Some(sha));
        assert_eq!(kustomization_ready_revision(&ready).as_deref(), Some(sha));
        let mut stale = ready.clone();
        stale["metadata"]["generation"] = 3.into();
        assert_eq!(repo_ready_revision(&stale), None, "an older generation");
        assert_eq!(
            moved_note("main", "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"),
            " (`main` moved on from aaaaaaaaaaaa while bootstrap waited)"
        );
        assert_eq!(moved_note("main", sha, sha), "");
    }
}
