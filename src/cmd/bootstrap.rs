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
use crate::cluster::{self, Applied, Cluster, Kind};
use crate::config::{Auth, FluxConfig, Secrets};
use crate::github::{GitHub, Repository};
use crate::keys::KeyPair;
use crate::output::{Format, Ui};
use crate::{CheckFailed, Exit, flux, git_remote, manifests};

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

    /// Title of the deploy key on GitHub (default: `homelab-flux <context>`).
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
    // Ctrl-C stops the run between two steps with a message rather than mid-line and silent.
    // Every step is safe to cut short: the next run repairs what this one left (a key that was
    // not yet in the cluster is deleted then as stale, and every apply is idempotent).
    let result = runtime.block_on(async {
        tokio::select! {
            result = bootstrap(args, global, ui) => result,
            _ = tokio::signal::ctrl_c() => {
                ui.progress_done();
                Err(anyhow::anyhow!(
                    "interrupted; run `homelab-flux bootstrap` again: it finishes what this run started"
                ))
            }
        }
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

async fn bootstrap(args: &Args, global: &Global, ui: &Ui) -> anyhow::Result<Exit> {
    let mut steps = Steps {
        ui,
        last: Instant::now(),
    };
    let prefix = if args.dry_run { "(dry run) " } else { "" };

    // 1. The configuration, offline and online; nothing is touched when it has errors.
    let mut loaded = super::load_config(&global.config_dir, Secrets::Required)?;
    let hygiene = crate::git::hygiene(
        &global.config_dir,
        &loaded.secrets_path,
        loaded.token.as_ref(),
    );
    loaded.report.extend(hygiene);
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
    ui.log(1, &format!("kubeconfig context `{}`", cluster.context()));
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
    if !cluster.flux_installed().await? {
        crds_pending = args.dry_run;
        let source = args
            .flux_manifests
            .clone()
            .unwrap_or_else(default_manifests);
        let documents = read_manifests(&source, args.flux_manifests_sha256.as_deref(), ui).await?;
        let count = cluster
            .install(&documents, args.dry_run, args.timeout)
            .await?;
        steps.done(&format!(
            "{prefix}installed Flux from `{source}` ({count} objects)"
        ));
    }

    // 3. What is there now, and the guards against taking over someone else's set-up.
    let ns = flux::NAMESPACE;
    let (live_ns, live_secret, live_repo, live_ks) = tokio::join!(
        cluster.get(Kind::Namespace, None, ns),
        cluster.get(Kind::Secret, Some(ns), flux::NAME),
        get_unless(&cluster, Kind::GitRepository, crds_pending),
        get_unless(&cluster, Kind::Kustomization, crds_pending),
    );
    let (live_ns, live_secret, live_repo, live_ks) = (live_ns?, live_secret?, live_repo?, live_ks?);
    let url = match cfg.auth {
        Auth::DeployKey => git_remote::SshEndpoint::parse(&repo.ssh_url)?.url(),
        Auth::Token => repo.clone_url.clone(),
    };
    let desired_repo = flux::git_repository(&url, &branch);
    let desired_ks = flux::kustomization(&cfg);
    let mut taken_over = Vec::new();
    if let Some(live) = &live_repo
        && let Some(old) = live.data["spec"]["url"].as_str()
        && old != url
    {
        taken_over.push(format!(
            "GitRepository `{ns}/{}` follows `{old}`, not `{url}`",
            flux::NAME
        ));
    }
    if let Some(live) = &live_ks
        && let Some(old) = live.data["spec"]["path"].as_str()
        && old != cfg.path.as_str()
    {
        taken_over.push(format!(
            "Kustomization `{ns}/{}` applies `{old}`, not `{}`",
            flux::NAME,
            cfg.path
        ));
    }
    if !taken_over.is_empty() && !args.force {
        return Err(CheckFailed(format!(
            "{}; nothing was changed. Run again with `--force` to point Flux at the new repository or path",
            taken_over.join("; ")
        ))
        .into());
    }

    // 4. Credentials, proven before the cluster is touched.
    let title = args
        .key_title
        .clone()
        .unwrap_or_else(|| format!("homelab-flux {}", cluster.context()));
    let (secret, sha) = match cfg.auth {
        Auth::DeployKey => {
            deploy_key(
                &gh,
                &cfg,
                &repo,
                &branch,
                live_secret.as_ref(),
                &title,
                args.dry_run,
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
            (Some(flux::token_secret(token.expose())), Some(b.commit_sha))
        }
    };

    // 5. Apply, in order.
    if args.force && !taken_over.is_empty() && live_secret.is_some() {
        cluster
            .delete(Kind::Secret, Some(ns), flux::NAME, args.dry_run)
            .await?;
        steps.done(&format!(
            "{prefix}Secret `{ns}/{}` deleted, to be replaced",
            flux::NAME
        ));
    }
    let live_secret = if args.force && !taken_over.is_empty() {
        None
    } else {
        live_secret
    };
    let mut changed = false;
    let mut secret_changed = false;
    // A dry run cannot check objects in a Namespace that does not exist yet (nor Flux objects
    // without their CRDs): those are reported as to be created, unchecked.
    let ns_pending = args.dry_run && live_ns.is_none();
    let verb = |a: Applied| match (args.dry_run, a) {
        (true, Applied::Created) => "would be created".to_string(),
        (true, Applied::Updated) => "would be updated".to_string(),
        (_, a) => a.to_string(),
    };
    let ns_applied = cluster
        .apply(
            Kind::Namespace,
            &flux::namespace(),
            live_ns.as_ref(),
            args.dry_run,
        )
        .await?;
    changed |= ns_applied != Applied::Unchanged;
    steps.done(&format!("{prefix}Namespace `{ns}` {}", verb(ns_applied)));
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
    match &secret {
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

    if args.dry_run || args.no_wait {
        return Ok(Exit::Ok);
    }
    let Some(sha) = sha else { return Ok(Exit::Ok) };

    // 6. Wait until Flux has synced the proven commit.
    let synced = |o: &Option<DynamicObject>, f: fn(&Value, &str) -> bool| {
        o.as_ref().is_some_and(|o| f(&o.data, &sha))
    };
    if !changed && synced(&live_repo, repo_ready_at) && synced(&live_ks, kustomization_ready_at) {
        steps.done(&format!("Flux is synced at {}", short(&sha)));
        return Ok(Exit::Ok);
    }
    // Flux watches no Secrets, and an unchanged GitRepository spec is no new generation: when
    // the credentials changed (a new key, a rotated token), or nothing changed and Flux is not
    // at the commit, ask it to fetch now, and wait until it has handled that very request, so
    // that Ready means the new credentials work.
    let mut requested = None;
    if repo_applied == Applied::Unchanged && (secret_changed || !synced(&live_repo, repo_ready_at))
    {
        let stamp = jiff::Timestamp::now().to_string();
        cluster
            .request_reconcile(Kind::GitRepository, ns, flux::NAME, &stamp)
            .await?;
        requested = Some(stamp);
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    let repo_done = |data: &Value| {
        repo_ready_at(data, &sha)
            && requested
                .as_deref()
                .is_none_or(|s| data["status"]["lastHandledReconcileAt"] == s)
    };
    wait_for(&cluster, Kind::GitRepository, deadline, ui, &repo_done).await?;
    steps.done(&format!(
        "GitRepository `{ns}/{}` is Ready at {}",
        flux::NAME,
        short(&sha)
    ));
    let ks_done = |data: &Value| kustomization_ready_at(data, &sha);
    wait_for(&cluster, Kind::Kustomization, deadline, ui, &ks_done).await?;
    steps.done(&format!(
        "Kustomization `{ns}/{}` is Ready at {}",
        flux::NAME,
        short(&sha)
    ));
    Ok(Exit::Ok)
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

/// Reuses the key in the cluster while GitHub still lists it; otherwise creates a new read-only
/// key. Either way the key is proven over SSH, and only then are stale keys of the same title
/// deleted. Returns the Secret to apply (`None` in a dry run that would need a new key) and the
/// branch's commit.
#[allow(clippy::too_many_arguments)]
async fn deploy_key(
    gh: &GitHub,
    cfg: &FluxConfig,
    repo: &Repository,
    branch: &str,
    live_secret: Option<&DynamicObject>,
    title: &str,
    dry_run: bool,
    steps: &mut Steps<'_>,
) -> anyhow::Result<(Option<Value>, Option<String>)> {
    let (owner, name) = (cfg.repo.owner.as_str(), cfg.repo.name.as_str());
    // The branch's head comes along, so that a key GitHub still lists needs no SSH round trip.
    let (meta, keys, head) = tokio::join!(
        gh.meta(),
        gh.list_deploy_keys(owner, name),
        gh.get_branch(owner, name, branch)
    );
    let (meta, keys) = (meta?, keys?);
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

    let in_cluster = live_secret
        .and_then(|s| secret_value(s, "identity"))
        .and_then(|pem| KeyPair::from_private_openssh(&SecretString::from(pem)).ok());
    let reusable = in_cluster.filter(|k| {
        keys.iter()
            .any(|d| d.matches_public_key(k.public_key_openssh()))
    });
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
            return Ok((None, None));
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

    // A new key is proven over SSH before anything relies on it. A key GitHub still lists is
    // the one Flux already uses: the API's branch head is enough, unless the token cannot read
    // contents (then the head comes from the SSH remote, as for a new key).
    let sha = match (created, head) {
        (None, Ok(head)) => {
            steps.done(&format!("`{branch}` is at {}", short(&head.commit_sha)));
            head.commit_sha
        }
        _ => {
            let sha = match prove(repo, &pair, &meta.ssh_keys, branch).await? {
                Ok(sha) => sha,
                Err(e) => {
                    if let Some(id) = created {
                        // The key opens nothing: remove it, so that no unproven key is left behind.
                        let _ = gh.delete_deploy_key(owner, name, id).await;
                    }
                    return Err(CheckFailed(format!("{e:#}; the cluster was not changed")).into());
                }
            };
            steps.done(&format!(
                "proved the deploy key over SSH: `{branch}` is at {}",
                short(&sha)
            ));
            sha
        }
    };

    if !dry_run {
        for stale in keys
            .iter()
            .filter(|k| k.title == title && !k.matches_public_key(pair.public_key_openssh()))
        {
            gh.delete_deploy_key(owner, name, stale.id)
                .await
                .with_context(|| format!("cannot delete the stale deploy key {}", stale.id))?;
            steps.done(&format!(
                "deleted the stale deploy key `{title}` (id {})",
                stale.id
            ));
        }
    }
    use secrecy::ExposeSecret;
    let secret = flux::deploy_key_secret(
        pair.private_key_openssh().expose_secret(),
        pair.public_key_openssh(),
        &known_hosts,
    );
    Ok((Some(secret), Some(sha)))
}

/// Lists the remote's refs over SSH with the key, checking the host key; the branch's head.
async fn prove(
    repo: &Repository,
    pair: &KeyPair,
    host_keys: &[String],
    branch: &str,
) -> anyhow::Result<Result<String, git_remote::Error>> {
    let ssh_url = repo.ssh_url.clone();
    let private = pair.private_key_openssh().clone();
    let host_keys = host_keys.to_vec();
    let branch = branch.to_string();
    tokio::task::spawn_blocking(move || {
        git_remote::prove_key(&ssh_url, &private, &host_keys, &branch)
    })
    .await
    .context("the SSH proof did not finish")
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

/// The GitRepository is Ready with an artifact of the commit.
fn repo_ready_at(data: &Value, sha: &str) -> bool {
    generation_observed(data)
        && ready(data)
        && data["status"]["artifact"]["revision"]
            .as_str()
            .is_some_and(|r| r.ends_with(sha))
}

/// The Kustomization is Ready and last applied the commit.
fn kustomization_ready_at(data: &Value, sha: &str) -> bool {
    generation_observed(data)
        && ready(data)
        && data["status"]["lastAppliedRevision"]
            .as_str()
            .is_some_and(|r| r.ends_with(sha))
}

/// Watches one Flux object until `done`, showing its Ready condition as it changes.
async fn wait_for(
    cluster: &Cluster,
    kind: Kind,
    deadline: tokio::time::Instant,
    ui: &Ui,
    done: &(dyn Fn(&Value) -> bool + Sync),
) -> anyhow::Result<()> {
    let mut stream = cluster.watch(kind, flux::NAMESPACE, flux::NAME);
    let mut last = None;
    let mut shown = String::new();
    loop {
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(next)) => next,
            Ok(None) => anyhow::bail!("the watch on {} ended unexpectedly", kind.name()),
            Err(_) => {
                ui.progress_done();
                return Err(not_ready(kind, last.as_ref()).into());
            }
        };
        let object = match next {
            Ok(object) => object,
            Err(e) => {
                ui.progress_done();
                return Err(cluster.watch_error(kind, flux::NAME, e).into());
            }
        };
        let Some(object) = object else { continue };
        if done(&object.data) {
            ui.progress_done();
            return Ok(());
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
    let hint = if lower.contains("authenticat")
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
