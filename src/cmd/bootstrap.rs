//! `homelab-flux bootstrap`: set up Flux on the cluster from the repository.
//!
//! Read, decide, act: everything the run needs is read first (the configuration, GitHub in one
//! round, the cluster); [`plan::plan`] decides every write from that; then the plan is carried
//! out, or only shown with `--dry-run`, and the run waits for Flux. The order of the writes is
//! chosen so that every stop leaves a state the next run repairs: nothing touches the cluster
//! before the configuration and GitHub are checked and a new deploy key is proven; stale keys
//! are deleted only after the Secret with the new one is applied; every cluster write is an
//! idempotent server-side apply.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use secrecy::SecretString;
use serde_json::Value;

use crate::cluster::{self, Cluster, LeaseState};
use crate::cmd::{Global, parse_duration};
use crate::config::{Credential, Loaded, Secrets, Valid};
use crate::flux::Kind;
use crate::github::{self, GitHub};
use crate::keys::KeyPair;
use crate::output::{Format, Steps, Ui};
use crate::plan::{self, Change, Credentials, GitHubView, Live, Plan, SecretPlan, Wait};
use crate::settings::FluxConfig;
use crate::step::{Step, short};
use crate::{flux, git_remote, manifests};

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
    pub cluster: super::ClusterArgs,

    /// Output format of the steps: `text` (lines on stderr) or `json` (one object per line,
    /// on stdout).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,

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

/// Why `bootstrap` did not end with exit 0.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] super::CannotLoad),
    /// The findings (configuration, hygiene, GitHub) hold an error (exit 1); nothing was changed.
    #[error(transparent)]
    Reported(#[from] super::Reported),
    #[error(transparent)]
    Runtime(#[from] super::NoRuntime),
    /// A guard of the plan (exit 1, except an unusable SSH address: 2).
    #[error(transparent)]
    Refused(#[from] plan::Refusal),
    /// The deploy key did not open the repository over SSH (exit 1).
    #[error(transparent)]
    NotProven(#[from] Box<NotProven>),
    /// Flux did not get Ready in time, or stalled (exit 1).
    #[error(transparent)]
    NotReady(#[from] NotReady),
    /// Everything was applied (and synced), but GitHub did not delete stale keys (exit 1).
    #[error(transparent)]
    StaleKeysLeft(#[from] StaleKeysLeft),
    #[error("interrupted; run `homelab-flux bootstrap` again: it finishes what this run started")]
    Interrupted,
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    #[error(transparent)]
    GitHub(#[from] github::Error),
    #[error(transparent)]
    Key(#[from] crate::keys::Error),
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
    /// Anything else that kept the run from going on (exit 2).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Reported(_)
            | Error::NotProven(_)
            | Error::NotReady(_)
            | Error::StaleKeysLeft(_)
            | Error::Refused(
                plan::Refusal::OldKubernetes { .. }
                | plan::Refusal::TakenOver(_)
                | plan::Refusal::NoAgeIdentity,
            ) => 1,
            Error::Refused(plan::Refusal::SshUrl(_))
            | Error::Load(_)
            | Error::Runtime(_)
            | Error::Interrupted
            | Error::Cluster(_)
            | Error::GitHub(_)
            | Error::Key(_)
            | Error::Output(_)
            | Error::Failed(_) => 2,
        }
    }

    pub fn is_reported(&self) -> bool {
        matches!(self, Error::Reported(_))
    }
}

/// The deploy key did not open the repository over SSH; the cluster was not changed. Worded as
/// the proof's own message: it says what the user can do.
#[derive(Debug)]
pub struct NotProven {
    pub proof: git_remote::Error,
    /// The key this run created, when deleting it again failed.
    pub left_behind: Option<(String, u64, github::Error)>,
}

impl std::fmt::Display for NotProven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; the cluster was not changed", self.proof)?;
        if let Some((title, id, e)) = &self.left_behind {
            write!(
                f,
                "; the new deploy key `{title}` (id {id}) could not be deleted again ({e}): delete it under the repository's Settings → Deploy keys, or run `homelab-flux bootstrap` again, which deletes it as stale"
            )?;
        }
        Ok(())
    }
}

/// Stale keys of this cluster that GitHub did not delete. The cluster holds its new key and
/// the run went on; the next run deletes them as stale again.
#[derive(Debug)]
pub struct StaleKeysLeft(pub Vec<(String, u64)>);

impl std::fmt::Display for StaleKeysLeft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self
            .0
            .iter()
            .map(|(title, id)| format!("`{title}` (id {id})"))
            .collect();
        write!(
            f,
            "the cluster holds its new deploy key, but GitHub did not delete the stale key{} {}; run `homelab-flux bootstrap` again to delete {}, or delete {} under the repository's Settings → Deploy keys",
            if keys.len() == 1 { "" } else { "s" },
            keys.join(", "),
            if keys.len() == 1 { "it" } else { "them" },
            if keys.len() == 1 { "it" } else { "them" },
        )
    }
}

impl std::error::Error for StaleKeysLeft {}

/// The proof's message is this error's own, so the chain goes on below it (libgit2's words are
/// not shown: the proof's message says what to do).
impl std::error::Error for NotProven {}

/// A Flux object that did not get Ready: the controller's words and a hint.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error(
        "{kind} `{}/{}` has no Ready condition yet: are the Flux controllers running? (`kubectl -n flux-system get pods`)",
        flux::NAMESPACE,
        flux::NAME
    )]
    NoCondition { kind: &'static str },
    #[error(
        "{kind} `{}/{}` is not Ready: {reason}: {message} (hint: {hint})",
        flux::NAMESPACE,
        flux::NAME
    )]
    Failing {
        kind: &'static str,
        reason: String,
        message: String,
        hint: &'static str,
    },
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

pub fn run(args: &Args, global: &Global, ui: &Ui) -> Result<(), Error> {
    if args.export {
        return export(global, ui);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(super::NoRuntime)?;
    let lease = HeldLease::default();
    // Ctrl-C stops the run between two steps with a message rather than mid-line and silent.
    // Every step is safe to cut short: the next run repairs what this one left (a key that was
    // not yet in the cluster is deleted then as stale, and every apply is idempotent).
    let result = runtime.block_on(async {
        let result = tokio::select! {
            result = bootstrap(args, global, ui, &lease) => result,
            _ = tokio::signal::ctrl_c() => {
                ui.progress_done();
                Err(Error::Interrupted)
            }
        };
        // A run that stopped early gives the Lease back, so that the next one need not wait
        // for it to expire.
        lease.release().await;
        result
    });
    // An SSH proof still running on a blocking thread is abandoned, not waited for.
    runtime.shutdown_background();
    result
}

/// Prints the GitRepository and Kustomization; the token is not read.
fn export(global: &Global, ui: &Ui) -> Result<(), Error> {
    let (cfg, findings) = match super::load_config(&global.config_dir, Secrets::Ignored)? {
        Loaded::Valid(Valid { flux, findings, .. }) => (flux, findings),
        Loaded::Invalid(i) => {
            return super::finish(&i.findings, ui, Format::Text, "the configuration");
        }
    };
    if !findings.report.is_empty() {
        super::finish::<Error>(&findings, ui, Format::Text, "the configuration")?;
    }
    let cfg = &cfg;
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
    Ok(())
}

/// What the run read from GitHub besides the findings.
struct Read {
    cfg: FluxConfig,
    token: crate::token::Token,
    /// For `decryption: sops`: the identity the repository is encrypted for.
    age_identity: Option<crate::sops::AgeIdentity>,
    gh: GitHub,
    github: GitHubView,
}

async fn bootstrap(args: &Args, global: &Global, ui: &Ui, lease: &HeldLease) -> Result<(), Error> {
    let mut steps = Steps::new(ui, args.format, args.dry_run);

    // Read: the configuration, then GitHub in one round; nothing is touched when they have
    // errors.
    let read = read_config_and_github(global, ui).await?;
    let Read {
        cfg,
        token,
        age_identity,
        gh,
        mut github,
    } = read;
    steps.emit(Step::Checked {
        repo: cfg.repo.to_string(),
    });

    // Read: the cluster.
    let cluster = args.cluster.connect().await?;
    tracing::debug!(
        "kubeconfig context `{}`, API server {}",
        cluster.context(),
        cluster.server()
    );
    let mut live = read_live(&cluster, cfg.decryption.is_some()).await?;
    steps.emit(Step::Connected {
        context: live.context.clone(),
        kubernetes: live.git_version.clone(),
    });

    // Decide.
    let options = plan::Options {
        force: args.force,
        key_title: args.key_title.clone(),
        age_identity,
    };
    let mut plan = plan::plan(&cfg, &token, &github, &live, &options)?;
    for o in [&plan.git_repository, &plan.kustomization] {
        tracing::trace!("desired {} spec: {}", o.kind.name(), o.desired["spec"]);
    }

    // Act, in order.
    let run = Run {
        args,
        cluster: &cluster,
        gh: &gh,
        cfg: &cfg,
    };
    // In a dry run the Namespace and Flux's CRDs are not really created: what lives in them
    // cannot be checked by the API server, and counts as to be created.
    let pending =
        args.dry_run && (plan.namespace.change == Change::Create || plan.install.crds_missing);
    run.apply(&plan.namespace, false, &mut steps).await?;
    if !plan.install.missing.is_empty() {
        run.install(&plan.install.missing, &mut steps).await?;
    }
    if let Some(note) = plan.takeover {
        steps.emit(Step::TakeoverNote {
            name: format!("{}/{}", flux::NAMESPACE, flux::NAME),
            what: note,
        });
    }

    // A new key is made under the Lease that keeps a second run of this cluster from doing the
    // same at once (each would delete the other's key as stale). Another run may have put a
    // working key in place while this one waited: what it changed is read again, and decided
    // again. A run that keeps the key in the cluster writes nothing and needs no Lease.
    if matches!(plan.credentials, Credentials::NewKey) && !args.dry_run {
        let deadline = tokio::time::Instant::now() + args.timeout;
        lease.acquire(&cluster, deadline, &mut steps).await?;
        let (secret, keys) = tokio::join!(
            cluster.get(Kind::Secret, Some(flux::NAMESPACE), flux::NAME),
            gh.list_deploy_keys(&cfg.repo.owner, &cfg.repo.name)
        );
        live.secret = secret?.map(|s| to_value(&s));
        github.keys = keys?;
        plan = plan::plan(&cfg, &token, &github, &live, &options)?;
    }
    let settled = run.credentials(&plan, &mut steps).await?;

    if plan.replace_secret {
        cluster
            .delete(
                Kind::Secret,
                Some(flux::NAMESPACE),
                flux::NAME,
                args.dry_run,
            )
            .await?;
        steps.emit(Step::SecretReplaced {
            name: format!("{}/{}", flux::NAMESPACE, flux::NAME),
        });
    }
    match (&plan.secret, &settled.secret) {
        (SecretPlan::Apply(object), _) => run.apply(object, pending, &mut steps).await?,
        (SecretPlan::NewKey { change }, Some(desired)) => {
            let object = plan::Object {
                kind: Kind::Secret,
                desired: desired.clone(),
                change: change.clone(),
            };
            run.apply(&object, pending, &mut steps).await?;
        }
        (SecretPlan::NewKey { .. }, None) => steps.emit(Step::SecretWithNewKey {
            name: format!("{}/{}", flux::NAMESPACE, flux::NAME),
        }),
    }
    let left = run.delete_stale_keys(&plan, &mut steps).await;
    if let Some(sops_secret) = &plan.sops_secret {
        run.apply(sops_secret, pending, &mut steps).await?;
    }
    run.apply(&plan.git_repository, pending, &mut steps).await?;
    run.apply(&plan.kustomization, pending, &mut steps).await?;
    // The credentials are settled: another run may go on while this one waits for Flux.
    lease.release().await;

    if let (false, false, Some(sha)) = (args.dry_run, args.no_wait, &settled.sha) {
        run.wait(&plan, &live, sha, settled.ssh.as_ref(), &mut steps)
            .await?;
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(StaleKeysLeft(left).into())
    }
}

/// The configuration with its hygiene, and GitHub's answers, all read in one round; the
/// findings printed. [`Error::Reported`] when they stop the run.
async fn read_config_and_github(global: &Global, ui: &Ui) -> Result<Read, Error> {
    // The findings are for the person: on stderr as text, also with `--format json` (whose
    // stdout holds the steps, one JSON object per line).
    let format = Format::Text;
    let (cfg, token, origin, age_identities, mut findings) =
        match super::check_offline(&global.config_dir, Secrets::Required)? {
            Loaded::Valid(Valid {
                flux,
                credential: Some(Credential { token, origin }),
                age_identities,
                findings,
            }) => (flux, token, origin, age_identities, findings),
            loaded => {
                return super::finish(&loaded.into_findings(), ui, format, "the configuration")
                    .and(Err(Error::Reported(super::Reported)));
            }
        };
    let gh = super::github_client(&cfg, &token, ui)?;
    tracing::debug!(
        "checking `{}` against the GitHub API at {}",
        cfg.repo,
        gh.api_base()
    );
    let mut answers = super::ask(&gh, &cfg, true).await;
    // What the run goes on with, kept before the answers become findings.
    let repo = answers.repo.as_ref().ok().cloned();
    let head = answers
        .branch
        .as_ref()
        .and_then(|(_, b)| b.as_ref().ok())
        .map(|b| b.commit_sha.clone());
    let keys = answers.keys.as_ref().and_then(|k| k.as_ref().ok()).cloned();
    let meta = answers.meta.take();
    let found = super::github_findings(&cfg, &token, &origin, &findings, answers)?;
    findings.report.extend(found);
    if !findings.report.is_empty() {
        super::finish::<Error>(&findings, ui, format, "the configuration")?;
    }
    let repo = repo.context("GitHub did not describe the repository")?;
    let host_keys = match meta {
        Some(meta) => meta.context("cannot read GitHub's SSH host keys")?.ssh_keys,
        None => Vec::new(),
    };
    tracing::debug!(
        "GitHub lists {} deploy key(s) on `{}`; {} SSH host key(s) in /meta",
        keys.as_ref().map_or(0, Vec::len),
        cfg.repo,
        host_keys.len()
    );
    Ok(Read {
        github: GitHubView {
            repo,
            head,
            keys: keys.unwrap_or_default(),
            host_keys,
        },
        age_identity: cfg
            .decryption
            .and_then(|_| age_identities.into_iter().next()),
        cfg,
        token,
        gh,
    })
}

fn to_value(o: &kube::api::DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

/// Everything the plan needs from the cluster, in one round of reads. The Flux objects cannot
/// be read before their CRDs exist; what comes back for them then is ignored. Secret
/// `sops-age` is read only for `decryption: sops`.
async fn read_live(cluster: &Cluster, sops: bool) -> anyhow::Result<Live> {
    let get = |kind: Kind, namespace: Option<&'static str>| async move {
        cluster.get(kind, namespace, flux::NAME).await
    };
    let ns = Some(flux::NAMESPACE);
    let sops_secret = async {
        match sops {
            true => cluster.get(Kind::Secret, ns, flux::SOPS_SECRET).await,
            false => Ok(None),
        }
    };
    let (version, missing, namespace, secret, repo, ks, sops_secret) = tokio::join!(
        cluster.version(),
        cluster.missing_flux_parts(),
        cluster.get(Kind::Namespace, None, flux::NAMESPACE),
        get(Kind::Secret, ns),
        get(Kind::GitRepository, ns),
        get(Kind::Kustomization, ns),
        sops_secret,
    );
    let ((version, git_version), missing) = (version?, missing?);
    let crds = !missing.crds_missing;
    let flux_object = |o: Result<Option<kube::api::DynamicObject>, cluster::Error>| {
        if crds {
            o.map(|o| o.map(|o| to_value(&o)))
        } else {
            Ok(None)
        }
    };
    Ok(Live {
        context: cluster.context().to_string(),
        server: cluster.server().to_string(),
        version,
        git_version,
        flux_missing: missing,
        namespace: namespace?.map(|o| to_value(&o)),
        secret: secret?.map(|o| to_value(&o)),
        git_repository: flux_object(repo)?,
        kustomization: flux_object(ks)?,
        sops_secret: sops_secret?.map(|o| to_value(&o)),
    })
}

/// What the credentials step settled.
struct Settled {
    /// The Secret holding a new key (`None` when the plan's Secret is known, or in a dry run).
    secret: Option<Value>,
    /// The branch's commit, proven over SSH or read from GitHub (`None` in a dry run that would
    /// make a new key).
    sha: Option<String>,
    /// How to read the branch's head over SSH when the token cannot read it from the API.
    ssh: Option<SshAccess>,
}

/// A deploy key and where it opens the repository.
struct SshAccess {
    ssh_url: String,
    private: SecretString,
    host_keys: Vec<String>,
}

/// Carries a plan out.
struct Run<'a> {
    args: &'a Args,
    cluster: &'a Cluster,
    gh: &'a GitHub,
    cfg: &'a FluxConfig,
}

impl Run<'_> {
    /// Applies an object the plan says changes (a server-side dry run with `--dry-run`;
    /// nothing when `pending`: its Namespace or CRD is not really there in a dry run).
    async fn apply(
        &self,
        object: &plan::Object,
        pending: bool,
        steps: &mut Steps<'_>,
    ) -> anyhow::Result<()> {
        if object.change.is_write() && !pending {
            self.cluster
                .apply(object.kind, &object.desired, self.args.dry_run)
                .await?;
        }
        steps.emit(Step::Applied {
            kind: object.kind.name(),
            name: object.name(),
            change: object.change.clone(),
        });
        Ok(())
    }

    /// Applies Flux's install manifests (a server-side dry run with `--dry-run`).
    async fn install(&self, missing: &[String], steps: &mut Steps<'_>) -> anyhow::Result<()> {
        tracing::debug!("Flux is not fully installed: no {}", missing.join(", no "));
        let source = self
            .args
            .flux_manifests
            .clone()
            .unwrap_or_else(default_manifests);
        let pinned = self.args.flux_manifests_sha256.as_deref();
        let fetched = manifests::fetch(&source, pinned)
            .await
            .context("cannot use the Flux manifests")?;
        steps.emit(Step::ManifestsRead {
            source: source.to_string(),
            sha256: fetched.sha256.clone(),
            pinned: pinned.is_some(),
        });
        let documents = documents(&source, &fetched.text)?;
        let (count, written) = self
            .cluster
            .install(&documents, self.args.dry_run, self.args.timeout)
            .await?;
        tracing::debug!(
            "{written} of {count} objects written, {} already as wanted",
            count - written
        );
        steps.emit(Step::Installed {
            source: source.to_string(),
            objects: count,
        });
        Ok(())
    }

    /// Keeps the key in the cluster, or makes, registers and proves a new one (deleting it
    /// again if the proof fails), or takes the token; the branch's commit.
    async fn credentials(&self, plan: &Plan, steps: &mut Steps<'_>) -> Result<Settled, Error> {
        let (owner, name) = (self.cfg.repo.owner.as_str(), self.cfg.repo.name.as_str());
        let branch = plan.branch.as_str();
        let access = |pair: &KeyPair| SshAccess {
            ssh_url: plan.ssh_url.clone(),
            private: pair.private_key_openssh().clone(),
            host_keys: plan.host_keys.clone(),
        };
        match &plan.credentials {
            Credentials::Token => {
                let sha = match &plan.head {
                    Some(sha) => sha.clone(),
                    None => {
                        self.gh
                            .get_branch(owner, name, branch)
                            .await
                            .context("cannot read the branch with the token")?
                            .commit_sha
                    }
                };
                steps.emit(Step::BranchHead {
                    branch: branch.to_string(),
                    commit: sha.clone(),
                    token: true,
                });
                Ok(Settled {
                    secret: None,
                    sha: Some(sha),
                    ssh: None,
                })
            }
            Credentials::Reuse(pair) => {
                steps.emit(Step::KeyKept {
                    fingerprint: pair.fingerprint().to_string(),
                });
                let access = access(pair);
                // The key GitHub still lists is the one Flux already uses: the API's head is
                // enough, unless the token cannot read contents; then the SSH remote says.
                let sha = match &plan.head {
                    Some(sha) => {
                        steps.emit(Step::BranchHead {
                            branch: branch.to_string(),
                            commit: sha.clone(),
                            token: false,
                        });
                        sha.clone()
                    }
                    None => self.prove(&access, branch, None, steps).await?,
                };
                Ok(Settled {
                    secret: None,
                    sha: Some(sha),
                    ssh: Some(access),
                })
            }
            Credentials::NewKey if self.args.dry_run => {
                steps.emit(Step::KeyToCreate {
                    title: plan.title.clone(),
                });
                Ok(Settled {
                    secret: None,
                    sha: None,
                    ssh: None,
                })
            }
            Credentials::NewKey => {
                let title = plan.title.as_str();
                let pair = KeyPair::generate(title)?;
                let key = self
                    .gh
                    .create_deploy_key(owner, name, title, pair.public_key_openssh(), true)
                    .await
                    .context("cannot create the deploy key on GitHub")?;
                steps.emit(Step::KeyCreated {
                    title: title.to_string(),
                    fingerprint: pair.fingerprint().to_string(),
                });
                let access = access(&pair);
                let sha = self
                    .prove(&access, branch, Some((title, key.id)), steps)
                    .await?;
                use secrecy::ExposeSecret;
                let secret = flux::deploy_key_secret(
                    pair.private_key_openssh().expose_secret(),
                    pair.public_key_openssh(),
                    &plan.known_hosts,
                );
                Ok(Settled {
                    secret: Some(secret),
                    sha: Some(sha),
                    ssh: Some(access),
                })
            }
        }
    }

    /// Proves a key over SSH: the branch's head there. A key that opens nothing is deleted
    /// again when this run created it (`created`), so that no unproven key is left behind.
    async fn prove(
        &self,
        access: &SshAccess,
        branch: &str,
        created: Option<(&str, u64)>,
        steps: &mut Steps<'_>,
    ) -> Result<String, Error> {
        match prove(access, branch).await? {
            Ok(sha) => {
                steps.emit(Step::KeyProved {
                    branch: branch.to_string(),
                    commit: sha.clone(),
                });
                Ok(sha)
            }
            Err(proof) => {
                if let Some(detail) = std::error::Error::source(&proof) {
                    tracing::debug!("the SSH proof failed: {detail}");
                }
                let mut left_behind = None;
                if let Some((title, id)) = created
                    && let Err(e) = self
                        .gh
                        .delete_deploy_key(&self.cfg.repo.owner, &self.cfg.repo.name, id)
                        .await
                {
                    left_behind = Some((title.to_string(), id, e));
                }
                Err(Box::new(NotProven { proof, left_behind }).into())
            }
        }
    }

    /// Deletes the keys of this cluster's title that the cluster no longer holds (in a dry run,
    /// says which). A key GitHub does not delete is a step line and is returned: the cluster
    /// already holds its new key, so the run goes on, and the next run deletes it as stale.
    async fn delete_stale_keys(&self, plan: &Plan, steps: &mut Steps<'_>) -> Vec<(String, u64)> {
        let mut left = Vec::new();
        for key in &plan.stale_keys {
            let (title, id) = (key.title.clone(), key.id);
            if self.args.dry_run {
                steps.emit(Step::StaleKeyToDelete { title, id });
                continue;
            }
            match self
                .gh
                .delete_deploy_key(&self.cfg.repo.owner, &self.cfg.repo.name, id)
                .await
            {
                Ok(()) => steps.emit(Step::StaleKeyDeleted { title, id }),
                Err(e) => {
                    steps.emit(Step::StaleKeyLeft {
                        title: title.clone(),
                        id,
                        reason: e.to_string(),
                    });
                    left.push((title, id));
                }
            }
        }
        left
    }

    /// Waits until Flux has synced the commit, or a newer head of the branch.
    async fn wait(
        &self,
        plan: &Plan,
        live: &Live,
        sha: &str,
        ssh: Option<&SshAccess>,
        steps: &mut Steps<'_>,
    ) -> Result<(), Error> {
        let (request_reconcile, request_kustomization) = match plan::wait(plan, live, sha) {
            Wait::Synced => {
                steps.emit(Step::Synced {
                    commit: sha.to_string(),
                });
                return Ok(());
            }
            Wait::Watch {
                request_reconcile,
                request_kustomization,
            } => (request_reconcile, request_kustomization),
        };
        let request = |kind: Kind, asked: bool| async move {
            if !asked {
                return Ok::<_, anyhow::Error>(None);
            }
            let stamp = jiff::Timestamp::now().to_string();
            self.cluster
                .request_reconcile(kind, flux::NAMESPACE, flux::NAME, &stamp)
                .await?;
            Ok(Some(stamp))
        };
        let requested = request(Kind::GitRepository, request_reconcile).await?;
        let ks_requested = request(Kind::Kustomization, request_kustomization).await?;
        let deadline = tokio::time::Instant::now() + self.args.timeout;
        let mut heads = Heads {
            gh: self.gh,
            cfg: self.cfg,
            branch: &plan.branch,
            ssh,
            api_refuses: false,
            accepted: vec![sha.to_string()],
        };
        // Ready at a commit, and, when a reconcile was asked for, after handling that request.
        let done_after = |requested: Option<String>| {
            move |o: &flux::Observed| {
                o.ready_commit().map(str::to_string).filter(|_| {
                    requested
                        .as_deref()
                        .is_none_or(|s| o.status.last_handled_reconcile_at.as_deref() == Some(s))
                })
            }
        };
        let (repo_done, ks_done) = (done_after(requested), done_after(ks_requested));
        for (kind, done) in [
            (
                Kind::GitRepository,
                &repo_done as &(dyn Fn(&flux::Observed) -> Option<String> + Sync),
            ),
            (Kind::Kustomization, &ks_done),
        ] {
            let at = wait_for(self.cluster, kind, deadline, steps, done, &mut heads).await?;
            steps.emit(Step::Ready {
                kind: kind.name(),
                name: format!("{}/{}", flux::NAMESPACE, flux::NAME),
                branch: plan.branch.clone(),
                moved_from: (at != sha).then(|| sha.to_string()),
                commit: at,
            });
        }
        Ok(())
    }
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
        let mut waited = false;
        loop {
            let (other, expires) = match cluster.try_acquire_lease(ns, &holder).await? {
                LeaseState::Acquired => break,
                LeaseState::Held { holder, expires } => (holder, expires),
            };
            steps.emit(Step::LeaseHeld {
                name: format!("{ns}/{}", cluster::LEASE_NAME),
                holder: other.clone(),
            });
            waited = true;
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
                steps.progress_done();
                anyhow::bail!(
                    "another bootstrap of this cluster (`{other}`) still holds the Lease `{ns}/{}`; nothing was changed. Run again once it has finished; a run that died releases it within {} s",
                    cluster::LEASE_NAME,
                    cluster::LEASE_DURATION.as_secs()
                );
            }
        }
        if waited {
            steps.emit(Step::LeaseFree);
        }
        tracing::debug!(
            "took the Lease `{ns}/{}` as `{holder}`",
            cluster::LEASE_NAME
        );
        let renewer = {
            let (cluster, holder) = (cluster.clone(), holder.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(cluster::LEASE_DURATION / 3).await;
                    // A failed renewal is tried again; the Lease only lapses if every try fails.
                    match cluster.renew_lease(ns, &holder).await {
                        Ok(true) => {}
                        Ok(false) => tracing::debug!(
                            "the Lease `{ns}/{}` lapsed and another run holds it now",
                            cluster::LEASE_NAME
                        ),
                        Err(e) => tracing::debug!("renewing the Lease failed ({e}); trying again"),
                    }
                }
            })
        };
        *self.held.lock().await = Some((cluster.clone(), holder, renewer));
        Ok(())
    }

    /// Gives the Lease back, if held. Failing to is no error: it expires on its own.
    async fn release(&self) {
        let Some((cluster, holder, renewer)) = self.held.lock().await.take() else {
            return;
        };
        renewer.abort();
        let release = cluster.release_lease(flux::NAMESPACE, &holder);
        match tokio::time::timeout(Duration::from_secs(5), release).await {
            Ok(Ok(())) => tracing::debug!("released the Lease"),
            Ok(Err(e)) => tracing::debug!("could not release the Lease: {e}"),
            Err(_) => tracing::debug!("could not release the Lease in time; it expires on its own"),
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
    /// The API answered 403 for the branch (a token without contents access): from then on the
    /// SSH remote is asked alone, not after another refusal each time.
    api_refuses: bool,
    /// Commits known good: the proven one, and heads seen since.
    accepted: Vec<String>,
}
impl Heads<'_> {
    async fn accepts(&mut self, sha: &str) -> bool {
        if self.accepted.iter().any(|a| a == sha) {
            return true;
        }
        let from_api = match self.api_refuses {
            true => None,
            false => self
                .gh
                .get_branch(&self.cfg.repo.owner, &self.cfg.repo.name, self.branch)
                .await
                .inspect_err(|e| self.api_refuses = matches!(e, github::Error::Forbidden { .. }))
                .ok(),
        };
        let head = match (from_api, self.ssh) {
            (Some(b), _) => Some(b.commit_sha),
            // A token without contents access (deploy-key set-ups): ask the SSH remote.
            (None, Some(access)) => prove(access, self.branch).await.ok().and_then(Result::ok),
            (None, None) => None,
        };
        tracing::debug!(
            "Flux reports {}; `{}` is at {}",
            short(sha),
            self.branch,
            head.as_deref().map_or("(unknown)", short)
        );
        // Not remembered when it differs: GitHub's answer may lag behind a push Flux has seen.
        let current = head.as_deref() == Some(sha);
        if current {
            self.accepted.push(sha.to_string());
        }
        current
    }
}

/// Watches one Flux object until it is Ready at a commit `heads` accepts, showing its Ready
/// condition as it changes; returns that commit. A watch that drops (an API server restart, a
/// 410 Gone) is resumed until `deadline`; only an API server that keeps refusing (403, 404)
/// ends the wait early.
async fn wait_for(
    cluster: &Cluster,
    kind: Kind,
    deadline: tokio::time::Instant,
    steps: &mut Steps<'_>,
    ready_at: &(dyn Fn(&flux::Observed) -> Option<String> + Sync),
    heads: &mut Heads<'_>,
) -> Result<String, Error> {
    /// A refusal seen this many times in a row is not passing.
    const REFUSALS: u32 = 3;
    let mut stream = cluster.watch(kind, flux::NAMESPACE, flux::NAME);
    let mut last: Option<flux::Condition> = None;
    let mut failing: Option<cluster::Error> = None;
    let (mut retries, mut refusals) = (0u32, 0u32);
    loop {
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(next)) => next,
            Ok(None) => {
                return Err(
                    anyhow::anyhow!("the watch on {} ended unexpectedly", kind.name()).into(),
                );
            }
            Err(_) => {
                steps.progress_done();
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
                    steps.progress_done();
                    return Err(error.into());
                }
                tracing::debug!("the watch on {} dropped ({error}); resuming", kind.name());
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
        let observed = flux::Observed::from_object(&to_value(&object));
        if let Some(sha) = ready_at(&observed)
            && heads.accepts(&sha).await
        {
            steps.progress_done();
            return Ok(sha);
        }
        let condition = observed.condition("Ready").cloned();
        steps.emit(Step::Waiting {
            kind: kind.name(),
            name: flux::NAME.to_string(),
            condition: condition.clone(),
        });
        if observed.is_stalled() {
            steps.progress_done();
            return Err(not_ready(kind, condition.as_ref()).into());
        }
        last = condition;
    }
}

/// The failure after a timeout or a stall, with the controller's words and a hint.
fn not_ready(kind: Kind, condition: Option<&flux::Condition>) -> NotReady {
    let kind = kind.name();
    let Some(c) = condition else {
        return NotReady::NoCondition { kind };
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
    NotReady::Failing {
        kind,
        reason: c.reason.clone(),
        message: c.message.clone(),
        hint,
    }
}

/// The pinned Flux release's `install.yaml`.
fn default_manifests() -> manifests::Source {
    manifests::parse_source(&flux::default_manifests_url())
        .expect("the pinned release URL is https")
}

/// Flux's install manifests (see [`manifests`]) as JSON documents.
fn documents(source: &manifests::Source, text: &str) -> anyhow::Result<Vec<Value>> {
    let mut documents = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Exit 1 is for a run that found problems, 2 for one that could not run (SPEC §2), by one
    /// route: the error's variant.
    #[test]
    fn exit_codes_follow_the_variant() {
        let ssh = crate::ssh_url::InvalidSshUrl {
            url: "x".into(),
            reason: "no",
        };
        let not_ready = not_ready(Kind::Kustomization, None);
        let cases: Vec<(Error, u8)> = vec![
            (super::super::Reported.into(), 1),
            (plan::Refusal::TakenOver(vec!["a".into()]).into(), 1),
            (
                plan::Refusal::OldKubernetes {
                    git_version: "v1.30.0".into(),
                }
                .into(),
                1,
            ),
            (plan::Refusal::SshUrl(ssh).into(), 2),
            (not_ready.into(), 1),
            (Error::Interrupted, 2),
            (anyhow::anyhow!("no route").into(), 2),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error}");
        }
    }

    /// The failure after a wait reads as it did when it was a string, the controller's words
    /// and a hint kept as fields.
    #[test]
    fn not_ready_names_the_object_the_reason_and_a_hint() {
        let c = flux::Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "GitOperationFailed".into(),
            message: "ssh: handshake failed: unable to authenticate".into(),
        };
        assert_eq!(
            not_ready(Kind::GitRepository, Some(&c)).to_string(),
            "GitRepository `flux-system/flux-system` is not Ready: GitOperationFailed: ssh: handshake failed: unable to authenticate (hint: the deploy key is missing on GitHub or was refused: run `homelab-flux bootstrap` again to replace it)"
        );
        assert_eq!(
            not_ready(Kind::Kustomization, None).to_string(),
            "Kustomization `flux-system/flux-system` has no Ready condition yet: are the Flux controllers running? (`kubectl -n flux-system get pods`)"
        );
    }
}
