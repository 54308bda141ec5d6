//! What `bootstrap` will do, decided from what is there. Pure logic: no I/O.
//!
//! The command reads everything first into one value ([`Live`] for the cluster, [`GitHubView`]
//! for GitHub); [`plan`] decides every write from it (the deploy key to make or keep, the keys
//! to delete afterwards, each object to apply with the fields that differ, the guards that
//! trip); the command then carries the [`Plan`] out, or prints it for `--dry-run`. Because the
//! decisions are a function of values, unit tests cover each of them with literals.
//!
//! New objects have an obvious place: a field of [`Plan`] beside [`Plan::secret`] for a Secret
//! applied before the Kustomization (as [`Plan::sops_secret`] is), and the desired Kustomization
//! built in [`plan`].

use secrecy::SecretString;
use serde::Serialize;
use serde_json::Value;

use crate::facts::{DeployKey, Repository};
use crate::flux;
use crate::flux::{FluxParts, Kind, ManagedBy, Support, Version};
use crate::keys::{self, KeyPair};
use crate::settings::{Auth, FluxConfig};
use crate::sops::AgeIdentity;
use crate::ssh_url::{self, InvalidSshUrl, SshEndpoint};
use crate::token::Token;

mod flux_step;
mod object;
mod switch;
pub mod uninstall;
pub use flux_step::{FluxStep, flux_step};
use object::Masked;
pub use object::{Change, FieldChange, Object};
pub use switch::AppSecret;

/// What GitHub said, all read in one round.
#[derive(Debug, Clone)]
pub struct GitHubView {
    pub repo: Repository,
    /// The branch's head from the API; `None` when the token cannot read contents (a deploy-key
    /// token with Metadata and Administration only), or the branch was not asked for.
    pub head: Option<String>,
    /// The repository's deploy keys (`auth: deploy-key`).
    pub keys: Vec<DeployKey>,
    /// The SSH host keys from `/meta`.
    pub host_keys: Vec<String>,
}

/// What the cluster holds, as read before anything is written.
#[derive(Clone, Default)]
pub struct Live {
    pub context: String,
    pub server: String,
    /// `major.minor` of the API server, and its `gitVersion`.
    pub version: (u32, u32),
    pub git_version: String,
    /// The parts of Flux that are missing.
    pub flux_missing: FluxParts,
    /// The objects `flux-system` as JSON, `None` when absent (or not readable yet, because the
    /// CRDs are not installed).
    pub namespace: Option<Value>,
    pub secret: Option<Value>,
    pub git_repository: Option<Value>,
    pub kustomization: Option<Value>,
    /// The Secret `sops-age`, read only for `decryption: sops`.
    pub sops_secret: Option<Value>,
    /// A FluxInstance (the Flux Operator's), `namespace/name`; read only when the run would
    /// change the Flux release.
    pub flux_instance: Option<String>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn masked(v: &Option<Value>) -> Option<Masked<'_>> {
            v.as_ref().map(Masked)
        }
        f.debug_struct("Live")
            .field("context", &self.context)
            .field("server", &self.server)
            .field("version", &self.version)
            .field("git_version", &self.git_version)
            .field("flux_missing", &self.flux_missing)
            .field("namespace", &masked(&self.namespace))
            .field("secret", &masked(&self.secret))
            .field("git_repository", &masked(&self.git_repository))
            .field("kustomization", &masked(&self.kustomization))
            .field("sops_secret", &masked(&self.sops_secret))
            .field("flux_instance", &self.flux_instance)
            .finish()
    }
}

/// The choices of the command line that decide anything, and the age identity found for
/// `decryption: sops` (a secret like the token: `Debug` shows its recipient only).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--force`: take over a GitRepository or Kustomization set up for another repository or
    /// path.
    pub force: bool,
    /// `--key-title`.
    pub key_title: Option<String>,
    /// The identity that goes into Secret `sops-age`.
    pub age_identity: Option<AgeIdentity>,
    /// The Flux release wanted: the label of `--flux-manifests`, else `--flux-version`; `None`
    /// for the pinned release.
    pub flux_version: Option<Version>,
    /// `auth: github-app`: what the Secret holds.
    pub github_app: Option<AppSecret>,
}

/// How the cluster reads the repository.
#[derive(Debug)]
pub enum Credentials {
    /// The key in the cluster's Secret, which GitHub still lists: kept.
    Reuse(KeyPair),
    /// No usable key in the cluster: a new one is made, registered read-only and proven over
    /// SSH before the Secret holding it is applied.
    NewKey,
    /// `auth: token`: the token itself, rewritten into the Secret on every run.
    Token,
    /// `auth: github-app`: the App's ID, installation and key; no deploy key.
    GitHubApp,
}

/// The Secret `flux-system`.
#[derive(Debug, Clone)]
pub enum SecretPlan {
    /// Known now (a kept key, a token).
    Apply(Object),
    /// Written with the new key once it is made; `Create` or an update of the live Secret.
    NewKey { change: Change },
}

impl SecretPlan {
    pub fn change(&self) -> &Change {
        match self {
            SecretPlan::Apply(o) => &o.change,
            SecretPlan::NewKey { change } => change,
        }
    }
}

/// A guard that tripped, with `--force`: what is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Takeover {
    Repository,
    Path,
}

/// A live object that a guard found pointing elsewhere: its kind, which field, the live value
/// and the one this run wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    pub kind: Kind,
    pub what: Takeover,
    pub live: String,
    pub wanted: String,
}

impl std::fmt::Display for TakenOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = match self.what {
            Takeover::Repository => "follows",
            Takeover::Path => "applies",
        };
        write!(
            f,
            "{} `{}/{}` {verb} `{}`, not `{}`",
            self.kind.name(),
            flux::NAMESPACE,
            flux::NAME,
            self.live,
            self.wanted
        )
    }
}

/// Every write of a run, decided before the first one.
#[derive(Debug)]
pub struct Plan {
    /// The branch Flux follows (configured, else GitHub's default branch).
    pub branch: String,
    /// The deploy key's title for this cluster.
    pub title: String,
    /// Flux's missing parts: when there are any, the install manifests are applied.
    pub install: FluxParts,
    /// What happens to Flux itself: kept, installed, upgraded.
    pub flux: FluxStep,
    /// Kubernetes is newer than the wanted Flux release is tested with: `(kubernetes, tested)`.
    pub untested_kubernetes: Option<(Version, (u32, u32))>,
    pub namespace: Object,
    pub credentials: Credentials,
    /// `--force` onto another repository or path: the live Secret is deleted and written anew,
    /// never left pointing at the old repository.
    pub replace_secret: bool,
    pub secret: SecretPlan,
    pub git_repository: Object,
    /// `decryption: sops`: Secret `sops-age` with the age identity, applied before the
    /// Kustomization that decrypts with it.
    pub sops_secret: Option<Object>,
    pub kustomization: Object,
    /// Keys of this cluster's title that are not the key going into the cluster: deleted once
    /// the Secret holding the new key is applied.
    pub stale_keys: Vec<DeployKey>,
    /// With `--force`, what the Kustomization's `prune: true` will clean up after.
    pub takeover: Option<Takeover>,
    /// The branch's head from GitHub's API, when it could be read.
    pub head: Option<String>,
    /// The SSH endpoint and host keys, for a proof or for reading the head over SSH.
    pub ssh_url: String,
    pub host_keys: Vec<String>,
    pub known_hosts: String,
    /// The live Secret held a deploy key of this cluster (this title) that cannot be looked up
    /// on GitHub (no token beside the GitHub App): named in a note, with how to delete it.
    pub old_key_unlisted: Option<String>,
}

impl Plan {
    /// Whether any object is written (the Secret included).
    pub fn writes_objects(&self) -> bool {
        self.replace_secret
            || [
                &self.namespace.change,
                self.secret.change(),
                &self.git_repository.change,
                &self.kustomization.change,
            ]
            .iter()
            .any(|c| c.is_write())
            || self.sops_secret_changes()
    }

    /// Whether Secret `sops-age` is written (a new or another identity).
    pub fn sops_secret_changes(&self) -> bool {
        self.sops_secret
            .as_ref()
            .is_some_and(|o| o.change.is_write())
    }
}

/// Why `plan` stops the run before anything is written (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the cluster runs Kubernetes {git_version}; Flux {flux} needs Kubernetes {min} or newer; nothing was changed. Upgrade the cluster{}",
        match older {
            Some(v) => format!(", or choose an older Flux with `--flux-version {v}`"),
            None => " first".to_string(),
        }
    )]
    OldKubernetes {
        git_version: String,
        flux: Version,
        min: Version,
        older: Option<Version>,
    },
    #[error(
        "the cluster runs Flux {live}, newer than {wanted}; nothing was changed. Run again with `--force` to downgrade, or with `--flux-version {live}` to keep it"
    )]
    Downgrade { live: Version, wanted: Version },
    #[error(
        "{}; nothing was changed. {}",
        match (by, instance) {
            (_, Some(i)) => format!("Flux{} is managed by the Flux Operator (FluxInstance `{i}`), which would undo a change to {wanted}", live.map(|v| format!(" {v}")).unwrap_or_default()),
            (ManagedBy::FluxOperator, None) => format!("Flux{}'s controllers are applied by the Flux Operator (label `{}`), which would undo a change to {wanted}", live.map(|v| format!(" {v}")).unwrap_or_default(), flux::OPERATOR_NAME_LABEL),
            (ManagedBy::FluxBootstrap, None) => format!("Flux{}'s controllers are applied from Git by a Kustomization (label `{}`: `flux bootstrap`'s `gotk-components.yaml`), which would undo a change to {wanted}", live.map(|v| format!(" {v}")).unwrap_or_default(), flux::KUSTOMIZE_NAME_LABEL),
        },
        match (by, instance) {
            (ManagedBy::FluxOperator, _) | (_, Some(_)) => format!("Upgrade Flux in the FluxInstance instead (`spec.distribution.version: \"{}.x\"`)", format_args!("{}.{}", wanted.major, wanted.minor)),
            (ManagedBy::FluxBootstrap, None) => format!("Upgrade Flux in the repository instead: `flux install --version={wanted} --export > gotk-components.yaml` in its `flux-system` folder, committed"),
        }
    )]
    ManagedElsewhere {
        by: ManagedBy,
        instance: Option<String>,
        live: Option<Version>,
        wanted: Version,
    },
    #[error(
        "{}; nothing was changed. Run again with `--force` to point Flux at the new repository or path",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    TakenOver(Vec<TakenOver>),
    #[error("GitHub's SSH address of the repository cannot be used")]
    SshUrl(#[source] InvalidSshUrl),
    #[error(
        "`decryption: sops` is set, but no age identity was found: add `ageKey` to the secrets file, or set `SOPS_AGE_KEY`"
    )]
    NoAgeIdentity,
    #[error("`auth: {0}` needs {1}, and there is none")]
    NoCredential(Auth, &'static str),
}

/// Decides every write of a run from what is there.
pub fn plan(
    cfg: &FluxConfig,
    token: Option<&Token>,
    github: &GitHubView,
    live: &Live,
    options: &Options,
) -> Result<Plan, Refusal> {
    // The preflight: the Kubernetes the wanted Flux release supports (SPEC §4a).
    let wanted = options.flux_version.unwrap_or_else(flux::pinned);
    let kubernetes = Version::parse(&live.git_version).unwrap_or(Version::new(
        live.version.0,
        live.version.1,
        0,
    ));
    let untested_kubernetes = match flux::supports(wanted, kubernetes) {
        Support::TooOld { min, older } => {
            return Err(Refusal::OldKubernetes {
                git_version: live.git_version.clone(),
                flux: wanted,
                min,
                older,
            });
        }
        Support::Untested { tested } => Some((kubernetes, tested)),
        Support::Supported | Support::UnknownLine => None,
    };
    let flux_step = flux_step(
        &live.flux_missing,
        live.flux_instance.as_deref(),
        wanted,
        options.force,
    )?;
    let branch = cfg
        .branch
        .as_ref()
        .map_or_else(|| github.repo.default_branch.clone(), |b| b.to_string());

    // The guards against taking over someone else's set-up.
    let live_url = live
        .git_repository
        .as_ref()
        .and_then(|o| o["spec"]["url"].as_str());
    let live_path = live
        .kustomization
        .as_ref()
        .and_then(|o| o["spec"]["path"].as_str());
    let url = source_url(cfg, &github.repo, live_url).map_err(Refusal::SshUrl)?;
    let taken_over = takeovers(live_url, &url, live_path, cfg.path.as_str());
    if !taken_over.is_empty() && !options.force {
        return Err(Refusal::TakenOver(taken_over));
    }
    // A Secret of another mode is written anew: server-side apply would leave the keys of the
    // old mode that it did not set itself.
    let switched = live
        .secret
        .as_ref()
        .is_some_and(|s| switch::holds_other_keys(s, switch::secret_keys(cfg.auth, options)));
    let replace_secret = (!taken_over.is_empty() || switched) && live.secret.is_some();
    let takeover = match (taken_over.is_empty(), live.kustomization.is_some()) {
        (false, true) => Some(
            if live_url.is_some_and(|old| !flux::same_repository(old, &url)) {
                Takeover::Repository
            } else {
                Takeover::Path
            },
        ),
        _ => None,
    };
    // The Secret as it will be before this run writes it: gone when it is replaced.
    let live_secret = live.secret.as_ref().filter(|_| !replace_secret);

    let title = options
        .key_title
        .clone()
        .unwrap_or_else(|| keys::default_title(&live.context, &live.server));
    // The deploy key's known_hosts: GitHub's host keys for its SSH endpoint.
    let known_hosts = match cfg.auth {
        Auth::DeployKey => {
            let endpoint = SshEndpoint::parse(&github.repo.ssh_url).map_err(Refusal::SshUrl)?;
            ssh_url::known_hosts(&endpoint, &github.host_keys)
        }
        Auth::Token | Auth::GitHubApp => String::new(),
    };
    // This cluster's deploy keys (its title), for a run that no longer uses one.
    let own_keys = || {
        github
            .keys
            .iter()
            .filter(|k| k.title == title)
            .cloned()
            .collect::<Vec<_>>()
    };

    let (credentials, secret, stale_keys) = match cfg.auth {
        Auth::Token => (
            Credentials::Token,
            SecretPlan::Apply(Object::new(
                Kind::Secret,
                flux::token_secret(
                    token
                        .ok_or(Refusal::NoCredential(Auth::Token, "a token"))?
                        .expose(),
                ),
                live_secret,
            )),
            Vec::new(),
        ),
        Auth::GitHubApp => {
            let app = options.github_app.as_ref().ok_or(Refusal::NoCredential(
                Auth::GitHubApp,
                "the App's credentials",
            ))?;
            (
                Credentials::GitHubApp,
                SecretPlan::Apply(Object::new(
                    Kind::Secret,
                    flux::github_app_secret(
                        app.app_id,
                        app.installation_id,
                        app.key.expose_pem(),
                        app.base_url.as_deref(),
                    ),
                    live_secret,
                )),
                // Listed only with a token at hand.
                own_keys(),
            )
        }
        Auth::DeployKey => {
            // The key in the cluster, recognised by its value whatever its title.
            let kept = live_secret
                .and_then(|s| flux::secret_value(s, "identity"))
                .and_then(|pem| KeyPair::from_private_openssh(&SecretString::from(pem)).ok())
                .filter(|k| {
                    github
                        .keys
                        .iter()
                        .any(|d| d.matches_public_key(k.public_key_openssh()))
                });
            // Keys of this title that are not the one going into the cluster. Keys of other
            // titles, and of the title used before titles carried a cluster id, may be another
            // cluster's: never stale.
            let stale = |keep: Option<&str>| {
                github
                    .keys
                    .iter()
                    .filter(|k| k.title == title && keep.is_none_or(|p| !k.matches_public_key(p)))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            match kept {
                Some(pair) => {
                    use secrecy::ExposeSecret;
                    let desired = flux::deploy_key_secret(
                        pair.private_key_openssh().expose_secret(),
                        pair.public_key_openssh(),
                        &known_hosts,
                    );
                    let stale = stale(Some(pair.public_key_openssh()));
                    (
                        Credentials::Reuse(pair),
                        SecretPlan::Apply(Object::new(Kind::Secret, desired, live_secret)),
                        stale,
                    )
                }
                None => {
                    let change = match live_secret {
                        None => Change::Create,
                        Some(_) => Change::Update(vec![FieldChange {
                            field: "data".to_string(),
                            old: Some("(the old deploy key)".to_string()),
                            new: "(a new deploy key)".to_string(),
                        }]),
                    };
                    (
                        Credentials::NewKey,
                        SecretPlan::NewKey { change },
                        stale(None),
                    )
                }
            }
        }
    };

    // The decryption Secret, compared like the others: `unchanged` until the identity changes.
    let sops_secret = match (cfg.decryption, &options.age_identity) {
        (None, _) => None,
        (Some(_), None) => return Err(Refusal::NoAgeIdentity),
        (Some(_), Some(identity)) => Some(Object::new(
            Kind::Secret,
            flux::sops_age_secret(identity.expose()),
            live.sops_secret.as_ref(),
        )),
    };

    // Without a token the deploy keys were not listed: an old key of this cluster is named.
    let old_key_unlisted = (cfg.auth == Auth::GitHubApp
        && token.is_none()
        && live
            .secret
            .as_ref()
            .is_some_and(|s| flux::deploy_public_key(s).is_some()))
    .then(|| title.clone());
    let mut git_repository = Object::new(
        Kind::GitRepository,
        flux::git_repository(&url, &branch, cfg.auth),
        live.git_repository.as_ref(),
    );
    switch::drop_provider(&mut git_repository, live.git_repository.as_ref());

    Ok(Plan {
        old_key_unlisted,
        install: live.flux_missing.clone(),
        flux: flux_step,
        untested_kubernetes,
        namespace: Object::new(Kind::Namespace, flux::namespace(), live.namespace.as_ref()),
        credentials,
        replace_secret,
        secret,
        git_repository,
        sops_secret,
        kustomization: Object::new(
            Kind::Kustomization,
            flux::kustomization(cfg),
            live.kustomization.as_ref(),
        ),
        stale_keys,
        takeover,
        head: github.head.clone(),
        ssh_url: github.repo.ssh_url.clone(),
        host_keys: github.host_keys.clone(),
        known_hosts,
        branch,
        title,
    })
}

/// How the run ends once everything is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Nothing was written and Flux is Ready at the commit: done.
    Synced,
    /// Watch until Flux is Ready at the commit. `request_reconcile`: Flux watches no Secrets
    /// and an unchanged GitRepository is no new generation, so when the credentials changed,
    /// or nothing changed and Flux is not at the commit, it is asked to fetch now (and the wait
    /// holds out for that very request, so that Ready means the new credentials work).
    /// `request_kustomization`: the same for the Kustomization when only its decryption
    /// Secret changed (kustomize-controller does not watch it either).
    Watch {
        request_reconcile: bool,
        request_kustomization: bool,
    },
}

/// Decides the wait, once the commit to wait for is known.
pub fn wait(plan: &Plan, live: &Live, sha: &str) -> Wait {
    let at = |o: &Option<Value>| {
        o.as_ref()
            .map(flux::Observed::from_object)
            .is_some_and(|o| o.ready_commit() == Some(sha))
    };
    let repo_synced = !plan.git_repository.change.is_write() && at(&live.git_repository);
    let ks_synced = !plan.kustomization.change.is_write() && at(&live.kustomization);
    if !plan.writes_objects() && repo_synced && ks_synced {
        return Wait::Synced;
    }
    let secret_changed = plan.replace_secret || plan.secret.change().is_write();
    Wait::Watch {
        request_reconcile: !plan.git_repository.change.is_write()
            && (secret_changed || !repo_synced),
        request_kustomization: !plan.kustomization.change.is_write() && plan.sops_secret_changes(),
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
) -> Result<String, InvalidSshUrl> {
    let from_github = match cfg.auth {
        Auth::DeployKey => SshEndpoint::parse(&repo.ssh_url)?.url(),
        Auth::Token | Auth::GitHubApp => repo.clone_url.clone(),
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
) -> Vec<TakenOver> {
    let mut found = Vec::new();
    if let Some(old) = live_url
        && !flux::same_repository(old, url)
    {
        found.push(TakenOver {
            kind: Kind::GitRepository,
            what: Takeover::Repository,
            live: old.to_string(),
            wanted: url.to_string(),
        });
    }
    if let Some(old) = live_path
        && old != path
    {
        found.push(TakenOver {
            kind: Kind::Kustomization,
            what: Takeover::Path,
            live: old.to_string(),
            wanted: path.to_string(),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const SERVER: &str = "https://127.0.0.1:6443/";

    fn config(yaml: &str) -> FluxConfig {
        crate::config::parse_flux(yaml, "flux.yaml").0.unwrap()
    }

    fn deploy_key_config() -> FluxConfig {
        config("repo: https://github.com/username/manifests\nbranch: main\npath: ./clusters/home\n")
    }

    fn github(keys: Vec<DeployKey>) -> GitHubView {
        GitHubView {
            repo: Repository::example(),
            head: Some(SHA.to_string()),
            keys,
            host_keys: vec![
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
                    .to_string(),
            ],
        }
    }

    fn title() -> String {
        keys::default_title("default", SERVER)
    }

    fn key(id: u64, title: &str, pair: &KeyPair) -> DeployKey {
        DeployKey {
            id,
            key: pair.public_key_openssh().to_string(),
            title: title.to_string(),
            read_only: true,
            created_at: None,
            last_used: None,
        }
    }

    fn token() -> Token {
        Token::new("ghp_R8vK2mQ9xLp4Tz7Wn3Bc6Hd1Jf5Gs0YaEuVi")
    }

    /// The cluster as a finished bootstrap leaves it, with `pair` in the Secret; the objects
    /// as the API server returns them (with status and fields of its own).
    fn bootstrapped(cfg: &FluxConfig, pair: &KeyPair, known_hosts: &str) -> Live {
        use secrecy::ExposeSecret;
        // As Flux writes them: a GitRepository's revision is its artifact's, a Kustomization's
        // is the last one it applied (it has no artifact).
        let ready = |revision_field: &str, revision: Value| {
            let mut status = json!({
                "observedGeneration": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok"}],
            });
            status[revision_field] = revision;
            status
        };
        let revision = format!("main@sha1:{SHA}");
        let mut repo = flux::git_repository(
            "ssh://git@github.com/username/manifests.git",
            "main",
            Auth::DeployKey,
        );
        repo["metadata"]["generation"] = 1.into();
        repo["spec"]["timeout"] = "60s".into();
        repo["status"] = ready("artifact", json!({"revision": revision}));
        let mut ks = flux::kustomization(cfg);
        ks["metadata"]["generation"] = 1.into();
        ks["status"] = ready("lastAppliedRevision", json!(revision));
        Live {
            context: "default".to_string(),
            server: SERVER.to_string(),
            version: (1, 36),
            git_version: "v1.36.3".to_string(),
            flux_missing: installed(),
            namespace: Some(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system", "uid": "x"}}),
            ),
            secret: Some(flux::deploy_key_secret(
                pair.private_key_openssh().expose_secret(),
                pair.public_key_openssh(),
                known_hosts,
            )),
            git_repository: Some(repo),
            kustomization: Some(ks),
            sops_secret: None,
            flux_instance: None,
        }
    }

    /// Every part of Flux there, at the pinned release.
    fn installed() -> FluxParts {
        FluxParts {
            version: Some(flux::pinned()),
            ..FluxParts::default()
        }
    }

    fn known_hosts() -> String {
        let endpoint = SshEndpoint::parse(&Repository::example().ssh_url).unwrap();
        ssh_url::known_hosts(&endpoint, &github(vec![]).host_keys)
    }

    fn fresh() -> Live {
        Live {
            context: "default".to_string(),
            server: SERVER.to_string(),
            version: (1, 36),
            git_version: "v1.36.3".to_string(),
            flux_missing: installed(),
            ..Live::default()
        }
    }

    #[test]
    fn a_fresh_cluster_gets_a_new_key_and_every_object() {
        let cfg = deploy_key_config();
        let p = plan(
            &cfg,
            Some(&token()),
            &github(vec![]),
            &fresh(),
            &Options::default(),
        )
        .unwrap();
        assert!(matches!(p.credentials, Credentials::NewKey));
        assert_eq!(p.title, title());
        assert_eq!(p.namespace.change, Change::Create);
        assert_eq!(*p.secret.change(), Change::Create);
        assert_eq!(p.git_repository.change, Change::Create);
        assert_eq!(p.kustomization.change, Change::Create);
        assert_eq!(
            p.git_repository.desired["spec"]["url"],
            "ssh://git@github.com/username/manifests.git"
        );
        assert_eq!(p.kustomization.desired["spec"]["path"], "./clusters/home");
        assert!(p.stale_keys.is_empty() && p.install.missing.is_empty() && !p.replace_secret);
        assert!(
            p.known_hosts.starts_with("github.com ssh-ed25519 "),
            "{}",
            p.known_hosts
        );
    }

    #[test]
    fn a_rerun_keeps_the_key_and_writes_nothing_and_is_synced() {
        let cfg = deploy_key_config();
        let pair = KeyPair::generate("x").unwrap();
        let live = bootstrapped(&cfg, &pair, &known_hosts());
        let gh = github(vec![key(7, &title(), &pair)]);
        let p = plan(&cfg, Some(&token()), &gh, &live, &Options::default()).unwrap();
        assert!(
            matches!(&p.credentials, Credentials::Reuse(k) if k.fingerprint() == pair.fingerprint())
        );
        for c in [
            &p.namespace.change,
            p.secret.change(),
            &p.git_repository.change,
            &p.kustomization.change,
        ] {
            assert_eq!(*c, Change::Unchanged);
        }
        assert!(p.stale_keys.is_empty());
        assert!(!p.writes_objects());
        assert_eq!(p.head.as_deref(), Some(SHA));
        assert_eq!(wait(&p, &live, SHA), Wait::Synced);
        // A newer head on the branch: Flux is asked to fetch it now.
        assert_eq!(
            wait(&p, &live, "fedcba9876543210fedcba9876543210fedcba98"),
            Wait::Watch {
                request_reconcile: true,
                request_kustomization: false
            }
        );
    }

    #[test]
    fn sops_age_goes_in_with_the_identity_and_is_rewritten_only_when_it_changes() {
        let identity = |id: &age::x25519::Identity| {
            use secrecy::ExposeSecret;
            AgeIdentity::parse(id.to_string().expose_secret()).unwrap()
        };
        let (first, second) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        let cfg = config(
            "repo: https://github.com/username/manifests\nbranch: main\npath: ./clusters/home\ndecryption: sops\n",
        );
        let pair = KeyPair::generate("x").unwrap();
        let gh = github(vec![key(7, &title(), &pair)]);
        let with = |id: &AgeIdentity| Options {
            age_identity: Some(id.clone()),
            ..Options::default()
        };
        // No identity: refused before anything is written (loading reports it first).
        let live = bootstrapped(&cfg, &pair, &known_hosts());
        assert!(matches!(
            plan(&cfg, Some(&token()), &gh, &live, &Options::default()),
            Err(Refusal::NoAgeIdentity)
        ));
        // After a rebuild (no sops-age): created, and the Kustomization names it.
        let p = plan(&cfg, Some(&token()), &gh, &live, &with(&identity(&first))).unwrap();
        let sops = p.sops_secret.as_ref().unwrap();
        assert_eq!(sops.change, Change::Create);
        assert_eq!(sops.name(), "flux-system/sops-age");
        assert_eq!(
            p.kustomization.desired["spec"]["decryption"]["secretRef"]["name"],
            "sops-age"
        );
        assert!(p.writes_objects());
        // The same identity in the cluster: unchanged, and a re-run is synced.
        let mut live = live;
        live.sops_secret = Some(sops.desired.clone());
        let p = plan(&cfg, Some(&token()), &gh, &live, &with(&identity(&first))).unwrap();
        assert_eq!(p.sops_secret.as_ref().unwrap().change, Change::Unchanged);
        assert!(!p.writes_objects());
        assert_eq!(wait(&p, &live, SHA), Wait::Synced);
        // Another identity: rewritten, its value never shown, and the Kustomization (which
        // does not watch the Secret) asked to reconcile.
        let p = plan(&cfg, Some(&token()), &gh, &live, &with(&identity(&second))).unwrap();
        let change = &p.sops_secret.as_ref().unwrap().change;
        assert_eq!(
            *change,
            Change::Update(vec![FieldChange {
                field: "data.age.agekey".to_string(),
                old: Some("(secret)".to_string()),
                new: "(secret)".to_string(),
            }])
        );
        assert_eq!(
            wait(&p, &live, SHA),
            Wait::Watch {
                request_reconcile: false,
                request_kustomization: true
            }
        );
        let shown = format!("{p:?} {live:?}");
        assert!(
            !shown.contains(&identity(&second).expose()[16..]),
            "{shown}"
        );
        // Nor its base64 form, the one a Secret's `data` holds.
        for id in [&first, &second] {
            let encoded = base64::engine::general_purpose::STANDARD.encode(identity(id).expose());
            assert!(!shown.contains(&encoded[..40]), "{shown}");
        }
        assert!(shown.contains("(secret)"), "{shown}");
    }

    #[test]
    fn a_key_deleted_on_github_is_replaced_and_the_stale_one_of_this_title_goes() {
        // The key in the cluster is gone from GitHub; another key of this title is listed
        // (left by an interrupted run), one of another cluster and one of the legacy title too.
        let cfg = deploy_key_config();
        let pair = KeyPair::generate("x").unwrap();
        let leftover = KeyPair::generate("y").unwrap();
        let other = KeyPair::generate("z").unwrap();
        let live = bootstrapped(&cfg, &pair, &known_hosts());
        let gh = github(vec![
            key(8, &title(), &leftover),
            key(
                9,
                &keys::default_title("default", "https://10.0.0.9:6443"),
                &other,
            ),
            key(10, &keys::legacy_title("default"), &other),
        ]);
        let p = plan(&cfg, Some(&token()), &gh, &live, &Options::default()).unwrap();
        assert!(matches!(p.credentials, Credentials::NewKey));
        assert!(matches!(p.secret.change(), Change::Update(_)));
        assert_eq!(p.git_repository.change, Change::Unchanged);
        assert_eq!(
            p.stale_keys.iter().map(|k| k.id).collect::<Vec<_>>(),
            [8],
            "only this cluster's title"
        );
        // The credentials changed and the GitRepository did not: Flux is asked to fetch.
        assert_eq!(
            wait(&p, &live, SHA),
            Wait::Watch {
                request_reconcile: true,
                request_kustomization: false
            }
        );
    }

    #[test]
    fn a_kept_key_makes_older_keys_of_its_title_stale() {
        let cfg = deploy_key_config();
        let pair = KeyPair::generate("x").unwrap();
        let old = KeyPair::generate("y").unwrap();
        let live = bootstrapped(&cfg, &pair, &known_hosts());
        let gh = github(vec![key(3, &title(), &old), key(4, &title(), &pair)]);
        let p = plan(&cfg, Some(&token()), &gh, &live, &Options::default()).unwrap();
        assert!(matches!(p.credentials, Credentials::Reuse(_)));
        assert_eq!(p.stale_keys.iter().map(|k| k.id).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn a_wiped_cluster_with_flux_missing_installs_and_deletes_its_old_key() {
        let cfg = deploy_key_config();
        let old = KeyPair::generate("y").unwrap();
        let mut live = fresh();
        live.flux_missing = FluxParts {
            missing: vec![format!("CustomResourceDefinition `{}`", flux::CRDS[0])],
            crds_missing: true,
            ..FluxParts::default()
        };
        let p = plan(
            &cfg,
            Some(&token()),
            &github(vec![key(5, &title(), &old)]),
            &live,
            &Options::default(),
        )
        .unwrap();
        assert_eq!(p.install.missing.len(), 1);
        assert!(matches!(p.credentials, Credentials::NewKey));
        assert_eq!(p.stale_keys.len(), 1);
    }

    #[test]
    fn too_old_a_kubernetes_is_refused_before_any_write() {
        let mut live = fresh();
        (live.version, live.git_version) = ((1, 34), "v1.34.1".to_string());
        let e = plan(
            &deploy_key_config(),
            Some(&token()),
            &github(vec![]),
            &live,
            &Options::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the cluster runs Kubernetes v1.34.1; Flux v2.10.1 needs Kubernetes v1.35.2 or newer; nothing was changed. Upgrade the cluster, or choose an older Flux with `--flux-version v2.9.5`"
        );
        // 1.35.1 is below 2.10's minimum too: the patch release counts.
        (live.version, live.git_version) = ((1, 35), "v1.35.1+k3s1".to_string());
        assert!(matches!(
            plan(
                &deploy_key_config(),
                Some(&token()),
                &github(vec![]),
                &live,
                &Options::default()
            ),
            Err(Refusal::OldKubernetes { .. })
        ));
        // The older line the hint names is accepted on the same cluster.
        let older = Options {
            flux_version: Some(Version::new(2, 9, 5)),
            ..Options::default()
        };
        live.flux_missing.version = Some(Version::new(2, 9, 5));
        let p = plan(
            &deploy_key_config(),
            Some(&token()),
            &github(vec![]),
            &live,
            &older,
        )
        .unwrap();
        assert_eq!(
            p.flux,
            FluxStep::Current {
                version: Version::new(2, 9, 5)
            }
        );
        // Older than every line: no `--flux-version` to suggest.
        (live.version, live.git_version) = ((1, 32), "v1.32.9".to_string());
        let e = plan(
            &deploy_key_config(),
            Some(&token()),
            &github(vec![]),
            &live,
            &Options::default(),
        )
        .unwrap_err();
        assert!(e.to_string().ends_with("Upgrade the cluster first"), "{e}");
    }

    #[test]
    fn a_kubernetes_newer_than_tested_is_a_warning() {
        let mut live = fresh();
        (live.version, live.git_version) = ((1, 38), "v1.38.0".to_string());
        let p = plan(
            &deploy_key_config(),
            Some(&token()),
            &github(vec![]),
            &live,
            &Options::default(),
        )
        .unwrap();
        assert_eq!(
            p.untested_kubernetes,
            Some((Version::new(1, 38, 0), (1, 37)))
        );
        let p = plan(
            &deploy_key_config(),
            Some(&token()),
            &github(vec![]),
            &fresh(),
            &Options::default(),
        )
        .unwrap();
        assert_eq!(p.untested_kubernetes, None);
    }

    #[test]
    fn the_release_in_the_cluster_decides_install_upgrade_or_refusal() {
        let v = Version::new;
        let parts = |version: Option<Version>, missing: bool| FluxParts {
            missing: match missing {
                true => vec!["Deployment `flux-system/source-controller`".to_string()],
                false => vec![],
            },
            version,
            ..FluxParts::default()
        };
        let wanted = v(2, 10, 1);
        assert_eq!(
            flux_step(&parts(Some(wanted), false), None, wanted, false).unwrap(),
            FluxStep::Current { version: wanted }
        );
        assert_eq!(
            flux_step(&parts(None, true), None, wanted, false).unwrap(),
            FluxStep::Install { version: wanted }
        );
        // Deployments without the label: applied again, labels and all.
        assert_eq!(
            flux_step(&parts(None, false), None, wanted, false).unwrap(),
            FluxStep::Install { version: wanted }
        );
        assert_eq!(
            flux_step(&parts(Some(v(2, 9, 5)), false), None, wanted, false).unwrap(),
            FluxStep::Upgrade {
                from: v(2, 9, 5),
                to: wanted
            }
        );
        // At the wanted release but with a part missing (an upgrade cut short): applied again.
        assert_eq!(
            flux_step(&parts(Some(wanted), true), None, wanted, false).unwrap(),
            FluxStep::Install { version: wanted }
        );
        let e = flux_step(&parts(Some(v(2, 11, 0)), false), None, wanted, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the cluster runs Flux v2.11.0, newer than v2.10.1; nothing was changed. Run again with `--force` to downgrade, or with `--flux-version v2.11.0` to keep it"
        );
        assert_eq!(
            flux_step(&parts(Some(v(2, 11, 0)), false), None, wanted, true).unwrap(),
            FluxStep::Downgrade {
                from: v(2, 11, 0),
                to: wanted
            }
        );
    }

    #[test]
    fn a_controller_not_rolled_out_at_the_wanted_release_is_repaired() {
        let v = Version::new;
        let mut parts = FluxParts {
            version: Some(v(2, 10, 1)),
            not_rolled_out: vec!["flux-system/source-controller".to_string()],
            ..FluxParts::default()
        };
        let step = flux_step(&parts, None, v(2, 10, 1), false).unwrap();
        assert_eq!(
            step,
            FluxStep::Repair {
                version: v(2, 10, 1)
            }
        );
        assert!(step.applies_manifests());
        assert_eq!(step.replaced(), None);
        // An older release not rolled out is upgraded, as any older release.
        parts.version = Some(v(2, 9, 5));
        assert!(matches!(
            flux_step(&parts, None, v(2, 10, 1), false).unwrap(),
            FluxStep::Upgrade { .. }
        ));
        // Another tool manages it: its rollout is that tool's to repair; nothing is written.
        parts.version = Some(v(2, 10, 1));
        parts.managed_by = Some(ManagedBy::FluxBootstrap);
        assert_eq!(
            flux_step(&parts, None, v(2, 10, 1), false).unwrap(),
            FluxStep::Current {
                version: v(2, 10, 1)
            }
        );
    }

    #[test]
    fn a_flux_that_another_tool_manages_is_left_to_it() {
        let v = Version::new;
        let mut parts = FluxParts {
            version: Some(v(2, 9, 5)),
            managed_by: Some(ManagedBy::FluxBootstrap),
            ..FluxParts::default()
        };
        let e = flux_step(&parts, None, v(2, 10, 1), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Flux v2.9.5's controllers are applied from Git by a Kustomization (label `kustomize.toolkit.fluxcd.io/name`: `flux bootstrap`'s `gotk-components.yaml`), which would undo a change to v2.10.1; nothing was changed. Upgrade Flux in the repository instead: `flux install --version=v2.10.1 --export > gotk-components.yaml` in its `flux-system` folder, committed"
        );
        // `--force` does not help: the other tool would undo it.
        assert!(flux_step(&parts, None, v(2, 10, 1), true).is_err());
        // At the wanted release already, nothing is written to Flux: no refusal.
        parts.version = Some(v(2, 10, 1));
        assert!(flux_step(&parts, None, v(2, 10, 1), false).is_ok());
        parts.version = Some(v(2, 9, 5));
        parts.managed_by = None;
        let e = flux_step(&parts, Some("flux-system/flux"), v(2, 10, 1), false).unwrap_err();
        assert!(
            e.to_string().contains("FluxInstance `flux-system/flux`")
                && e.to_string()
                    .contains("`spec.distribution.version: \"2.10.x\"`"),
            "{e}"
        );
    }

    #[test]
    fn another_repository_or_path_stops_the_run_unless_forced() {
        let cfg = deploy_key_config();
        let pair = KeyPair::generate("x").unwrap();
        let mut live = bootstrapped(&cfg, &pair, &known_hosts());
        live.git_repository.as_mut().unwrap()["spec"]["url"] =
            "ssh://git@github.com/username/other.git".into();
        live.kustomization.as_mut().unwrap()["spec"]["path"] = "./a".into();
        let gh = github(vec![key(7, &title(), &pair)]);
        let e = plan(&cfg, Some(&token()), &gh, &live, &Options::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "GitRepository `flux-system/flux-system` follows `ssh://git@github.com/username/other.git`, not `ssh://git@github.com/username/manifests.git`; Kustomization `flux-system/flux-system` applies `./a`, not `./clusters/home`; nothing was changed. Run again with `--force` to point Flux at the new repository or path"
        );
        let forced = Options {
            force: true,
            ..Options::default()
        };
        let p = plan(&cfg, Some(&token()), &gh, &live, &forced).unwrap();
        assert!(
            p.replace_secret,
            "the Secret is never left on the old repository"
        );
        assert!(
            matches!(p.credentials, Credentials::NewKey),
            "the old Secret is not reused"
        );
        assert_eq!(p.takeover, Some(Takeover::Repository));
        assert_eq!(
            p.git_repository.change,
            Change::Update(vec![FieldChange {
                field: "spec.url".to_string(),
                old: Some("ssh://git@github.com/username/other.git".to_string()),
                new: "ssh://git@github.com/username/manifests.git".to_string(),
            }])
        );
        assert_eq!(
            p.kustomization.change,
            Change::Update(vec![FieldChange {
                field: "spec.path".to_string(),
                old: Some("./a".to_string()),
                new: "./clusters/home".to_string(),
            }])
        );
        // Only the path differs: the note names the path.
        let mut live = bootstrapped(&cfg, &pair, &known_hosts());
        live.kustomization.as_mut().unwrap()["spec"]["path"] = "./a".into();
        let p = plan(&cfg, Some(&token()), &gh, &live, &forced).unwrap();
        assert_eq!(p.takeover, Some(Takeover::Path));
    }

    #[test]
    fn the_guard_ignores_case_and_dot_git_and_keeps_the_live_spelling() {
        // Regression: GitHub's `ssh_url` casing tripped the guard.
        let cfg = config(
            "repo: https://github.com/Username/Manifests\nbranch: main\npath: ./clusters/home\n",
        );
        let pair = KeyPair::generate("x").unwrap();
        let mut live = bootstrapped(&cfg, &pair, &known_hosts());
        live.git_repository.as_mut().unwrap()["spec"]["url"] =
            "ssh://git@github.com/username/manifests".into();
        let gh = github(vec![key(7, &title(), &pair)]);
        let p = plan(&cfg, Some(&token()), &gh, &live, &Options::default()).unwrap();
        assert_eq!(p.git_repository.change, Change::Unchanged);
    }

    #[test]
    fn bootstrap_spells_the_url_as_export_does_for_the_same_repository() {
        let cfg = config("repo: https://github.com/Username/Manifests\n");
        let exported = flux::source_url(&cfg);
        assert_eq!(
            source_url(&cfg, &Repository::example(), None).unwrap(),
            exported
        );
        let live = "ssh://git@github.com/username/manifests";
        assert_eq!(
            source_url(&cfg, &Repository::example(), Some(live)).unwrap(),
            live
        );
        // Another SSH endpoint (Enterprise Server, a port, the test environment) is GitHub's.
        let mut elsewhere = Repository::example();
        elsewhere.ssh_url = "ssh://git@127.0.0.1:2222/srv/git/manifests.git".to_string();
        assert_eq!(
            source_url(&cfg, &elsewhere, Some(&exported)).unwrap(),
            "ssh://git@127.0.0.1:2222/srv/git/manifests.git"
        );
        let token_cfg = config("repo: https://github.com/Username/Manifests\nauth: token\n");
        assert_eq!(
            source_url(&token_cfg, &Repository::example(), None).unwrap(),
            flux::source_url(&token_cfg)
        );
    }

    #[test]
    fn a_branch_change_is_shown_field_by_field() {
        let cfg = config(
            "repo: https://github.com/username/manifests\nbranch: dev\npath: ./clusters/home\n",
        );
        let pair = KeyPair::generate("x").unwrap();
        let live = bootstrapped(&cfg, &pair, &known_hosts());
        let gh = github(vec![key(7, &title(), &pair)]);
        let p = plan(&cfg, Some(&token()), &gh, &live, &Options::default()).unwrap();
        assert_eq!(p.branch, "dev");
        assert_eq!(
            p.git_repository.change,
            Change::Update(vec![FieldChange {
                field: "spec.ref.branch".to_string(),
                old: Some("main".to_string()),
                new: "dev".to_string(),
            }])
        );
        // A new generation: no reconcile request needed, the wait sees the new spec.
        assert_eq!(
            wait(&p, &live, SHA),
            Wait::Watch {
                request_reconcile: false,
                request_kustomization: false
            }
        );
    }

    #[test]
    fn the_default_branch_comes_from_github() {
        let cfg = config("repo: https://github.com/username/manifests\n");
        let mut gh = github(vec![]);
        gh.repo.default_branch = "trunk".to_string();
        let p = plan(&cfg, Some(&token()), &gh, &fresh(), &Options::default()).unwrap();
        assert_eq!(p.git_repository.desired["spec"]["ref"]["branch"], "trunk");
    }

    #[test]
    fn a_token_secret_is_rewritten_when_the_token_rotates_and_its_value_never_shown() {
        let cfg =
            config("repo: https://github.com/username/manifests\nbranch: main\nauth: token\n");
        let mut live = fresh();
        live.namespace = Some(flux::namespace());
        live.secret = Some(flux::token_secret(
            "ghp_OLDtokenQ9xLp4Tz7Wn3Bc6Hd1Jf5Gs0YaEuVi",
        ));
        let p = plan(
            &cfg,
            Some(&token()),
            &github(vec![]),
            &live,
            &Options::default(),
        )
        .unwrap();
        assert!(matches!(p.credentials, Credentials::Token));
        assert_eq!(
            *p.secret.change(),
            Change::Update(vec![FieldChange {
                field: "data.password".to_string(),
                old: Some("(secret)".to_string()),
                new: "(secret)".to_string(),
            }])
        );
        assert_eq!(
            p.git_repository.desired["spec"]["url"],
            "https://github.com/username/manifests.git"
        );
        live.secret = Some(flux::token_secret(token().expose()));
        let p = plan(
            &cfg,
            Some(&token()),
            &github(vec![]),
            &live,
            &Options::default(),
        )
        .unwrap();
        assert_eq!(*p.secret.change(), Change::Unchanged);
    }

    fn app_config() -> FluxConfig {
        config(
            "repo: https://github.com/username/manifests\nbranch: main\npath: ./clusters/home\nauth: github-app\n",
        )
    }

    fn app_options(base_url: Option<&str>) -> Options {
        Options {
            github_app: Some(AppSecret {
                app_id: 123456,
                installation_id: 987654,
                key: crate::app_key::AppKey::parse(crate::app_key::tests::TEST_KEY_PKCS1).unwrap(),
                base_url: base_url.map(str::to_string),
            }),
            ..Options::default()
        }
    }

    fn data_keys(secret: &Value) -> Vec<String> {
        secret["data"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn github_app_writes_the_app_secret_and_provider_github_and_no_key() {
        let p = plan(
            &app_config(),
            None,
            &github(vec![]),
            &fresh(),
            &app_options(None),
        )
        .unwrap();
        assert!(matches!(p.credentials, Credentials::GitHubApp));
        let SecretPlan::Apply(secret) = &p.secret else {
            panic!("{:?}", p.secret)
        };
        assert_eq!(
            data_keys(&secret.desired),
            [
                "githubAppID",
                "githubAppInstallationID",
                "githubAppPrivateKey"
            ]
        );
        assert_eq!(
            flux::secret_value(&secret.desired, "githubAppID").as_deref(),
            Some("123456")
        );
        assert_eq!(
            flux::secret_value(&secret.desired, "githubAppInstallationID").as_deref(),
            Some("987654")
        );
        let spec = &p.git_repository.desired["spec"];
        assert_eq!(spec["provider"], "github");
        assert_eq!(spec["url"], "https://github.com/username/manifests.git");
        assert_eq!(spec["secretRef"]["name"], "flux-system");
        assert!(p.stale_keys.is_empty() && p.old_key_unlisted.is_none() && !p.replace_secret);
        assert!(p.known_hosts.is_empty());
        // GitHub Enterprise Server (or any API base but api.github.com): the base URL too.
        let p = plan(
            &app_config(),
            None,
            &github(vec![]),
            &fresh(),
            &app_options(Some("https://ghe.example.com/api/v3")),
        )
        .unwrap();
        let SecretPlan::Apply(secret) = &p.secret else {
            panic!()
        };
        assert_eq!(
            flux::secret_value(&secret.desired, "githubAppBaseURL").as_deref(),
            Some("https://ghe.example.com/api/v3")
        );
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("PRIVATE KEY") && !shown.contains("MII"),
            "{shown}"
        );
    }

    #[test]
    fn deploy_key_to_github_app_replaces_the_secret_and_deletes_or_names_the_old_key() {
        let pair = KeyPair::generate("x").unwrap();
        let live = bootstrapped(&deploy_key_config(), &pair, &known_hosts());
        // With a token: this cluster's key is listed and deleted once the Secret is applied.
        let gh = github(vec![
            key(7, &title(), &pair),
            key(8, "another cluster", &pair),
        ]);
        let p = plan(
            &app_config(),
            Some(&token()),
            &gh,
            &live,
            &app_options(None),
        )
        .unwrap();
        assert!(p.replace_secret, "the deploy key's fields must not linger");
        assert_eq!(*p.secret.change(), Change::Create);
        assert_eq!(p.stale_keys.iter().map(|k| k.id).collect::<Vec<_>>(), [7]);
        let Change::Update(fields) = &p.git_repository.change else {
            panic!("{:?}", p.git_repository.change)
        };
        let changed: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert!(
            changed.contains(&"spec.provider") && changed.contains(&"spec.url"),
            "{changed:?}"
        );
        // Without one: nothing listed, the old key named.
        let p = plan(
            &app_config(),
            None,
            &github(vec![]),
            &live,
            &app_options(None),
        )
        .unwrap();
        assert!(p.stale_keys.is_empty());
        assert_eq!(p.old_key_unlisted, Some(title()));
    }

    #[test]
    fn github_app_is_idempotent_and_leaving_it_drops_provider_and_the_app_keys() {
        let first = plan(
            &app_config(),
            None,
            &github(vec![]),
            &fresh(),
            &app_options(None),
        )
        .unwrap();
        let SecretPlan::Apply(secret) = &first.secret else {
            panic!()
        };
        let mut live = fresh();
        live.namespace = Some(flux::namespace());
        live.secret = Some(secret.desired.clone());
        live.git_repository = Some(first.git_repository.desired.clone());
        live.kustomization = Some(first.kustomization.desired.clone());
        let again = plan(
            &app_config(),
            None,
            &github(vec![]),
            &live,
            &app_options(None),
        )
        .unwrap();
        assert!(!again.writes_objects(), "{again:?}");
        assert!(!again.replace_secret && again.old_key_unlisted.is_none());
        // Back to a token: the App's keys go with the Secret, `provider` is removed.
        let cfg = config(
            "repo: https://github.com/username/manifests\nbranch: main\npath: ./clusters/home\nauth: token\n",
        );
        let back = plan(
            &cfg,
            Some(&token()),
            &github(vec![]),
            &live,
            &Options::default(),
        )
        .unwrap();
        assert!(back.replace_secret);
        assert_eq!(
            back.git_repository.change,
            Change::Update(vec![FieldChange {
                field: "spec.provider".to_string(),
                old: Some("github".to_string()),
                new: "(removed)".to_string(),
            }])
        );
        assert!(
            back.git_repository.desired["spec"]
                .get("provider")
                .is_none()
        );
        // Without the App's credentials there is nothing to write: refused, not guessed.
        assert!(matches!(
            plan(
                &app_config(),
                None,
                &github(vec![]),
                &fresh(),
                &Options::default()
            ),
            Err(Refusal::NoCredential(Auth::GitHubApp, _))
        ));
    }

    #[test]
    fn a_key_title_can_be_given() {
        let options = Options {
            key_title: Some("my title".to_string()),
            ..Options::default()
        };
        let p = plan(
            &deploy_key_config(),
            Some(&token()),
            &github(vec![]),
            &fresh(),
            &options,
        )
        .unwrap();
        assert_eq!(p.title, "my title");
    }
}
