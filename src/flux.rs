//! Everything homelab-flux knows about Flux, in one place. Pure logic.
//!
//! The API groups, versions, names and annotations; the objects homelab-flux applies, built
//! from the configuration; and typed views of what Flux reports back (conditions, the artifact's
//! revision, the last applied revision). The objects match what `flux bootstrap` generates
//! (`gotk-sync.yaml`), so a cluster can move between the two tools; `bootstrap --export` prints
//! them for committing to the repository.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::settings::{Auth, Decryption, FluxConfig};

/// The namespace Flux runs in, and the name of every object homelab-flux owns.
pub const NAMESPACE: &str = "flux-system";
/// The name of the Secret, the GitRepository and the Kustomization.
pub const NAME: &str = "flux-system";
/// The branch used when the configuration names none and GitHub cannot be asked.
pub const OFFLINE_DEFAULT_BRANCH: &str = "main";

/// The pinned Flux release: installed when Flux is missing, and what an older Flux is upgraded
/// to, unless `--flux-version` or `--flux-manifests` says otherwise (SPEC §4a).
pub const FLUX_VERSION: &str = "v2.10.1";

/// The label Flux's install manifests put on every object: the Flux release (`v2.10.1`).
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// The labels Flux's install manifests put on every object besides the version.
pub const PART_OF_LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "flux");
pub const INSTANCE_LABEL: (&str, &str) = ("app.kubernetes.io/instance", "flux-system");
/// Set by kustomize-controller on what a Kustomization applied: on the controllers' own
/// Deployments, it means `flux bootstrap`'s `gotk-components.yaml` is applied from Git.
pub const KUSTOMIZE_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
/// Set by the Flux Operator on what a FluxInstance applied.
pub const OPERATOR_NAME_LABEL: &str = "fluxcd.controlplane.io/name";
/// The CRD of the Flux Operator's FluxInstance.
pub const FLUX_INSTANCE_CRD: &str = "fluxinstances.fluxcd.controlplane.io";

/// A release `vMAJOR.MINOR.PATCH` (of Flux or of Kubernetes), ordered as semver orders
/// releases. Pre-release and build suffixes (`v1.36.3+k3s1`) are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// `v2.10.1`, `2.10.1` or a Kubernetes `gitVersion` such as `v1.36.3+k3s1`; `None` when it is
    /// not three numbers.
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let core = text.split(['-', '+']).next().unwrap_or_default();
        let mut parts = core.split('.').map(|p| {
            (!p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                .then(|| p.parse::<u32>().ok())
                .flatten()
        });
        let (Some(Some(major)), Some(Some(minor)), Some(Some(patch)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some(Version::new(major, minor, patch))
    }

    /// The release line, `2.10`.
    pub fn line(self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

/// As text, `"v2.10.1"`, in JSON output.
impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A Flux release line and the Kubernetes it supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseLine {
    /// `(2, 10)`.
    pub line: (u32, u32),
    /// The newest release of the line this tool knows: what an older `--flux-version` hint names.
    pub latest: Version,
    /// The oldest Kubernetes the line supports (`flux check` refuses older ones).
    pub min_kubernetes: Version,
    /// The newest Kubernetes minor release the line is tested with; newer ones are a warning.
    pub tested_kubernetes: (u32, u32),
}

/// Every Flux release line this tool knows, oldest first (SPEC §4a): the one table the
/// preflight and `status` read.
pub const RELEASE_LINES: [ReleaseLine; 2] = [
    ReleaseLine {
        line: (2, 9),
        latest: Version::new(2, 9, 5),
        min_kubernetes: Version::new(1, 33, 0),
        tested_kubernetes: (1, 36),
    },
    ReleaseLine {
        line: (2, 10),
        latest: Version::new(2, 10, 1),
        min_kubernetes: Version::new(1, 35, 2),
        tested_kubernetes: (1, 37),
    },
];

/// The pinned release, as a [`Version`].
pub fn pinned() -> Version {
    Version::parse(FLUX_VERSION).unwrap_or(Version::new(0, 0, 0))
}

/// The line of a release, when the table knows it.
pub fn release_line(version: Version) -> Option<&'static ReleaseLine> {
    RELEASE_LINES.iter().find(|l| l.line == version.line())
}

/// How a Kubernetes release fits a Flux release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    Supported,
    /// Newer than the line's tested maximum: it may work; a warning.
    Untested {
        tested: (u32, u32),
    },
    /// Older than the line's minimum: Flux does not run there.
    TooOld {
        min: Version,
        /// The newest known release of an older line that supports this Kubernetes.
        older: Option<Version>,
    },
    /// A release line this tool has no table row for: nothing is known.
    UnknownLine,
}

/// Whether `kubernetes` is within what the Flux release `flux` supports (SPEC §4a).
pub fn supports(flux: Version, kubernetes: Version) -> Support {
    let Some(line) = release_line(flux) else {
        return Support::UnknownLine;
    };
    if kubernetes < line.min_kubernetes {
        let older = RELEASE_LINES
            .iter()
            .rev()
            .find(|l| l.line < line.line && kubernetes >= l.min_kubernetes)
            .map(|l| l.latest);
        return Support::TooOld {
            min: line.min_kubernetes,
            older,
        };
    }
    if (kubernetes.major, kubernetes.minor) > line.tested_kubernetes {
        return Support::Untested {
            tested: line.tested_kubernetes,
        };
    }
    Support::Supported
}

/// The Flux release the manifests are: the [`VERSION_LABEL`] of the controllers' Deployments
/// (or, when the manifests hold none, of the first object that has the label).
pub fn manifests_version(documents: &[Value]) -> Option<Version> {
    let label = |d: &Value| {
        d["metadata"]["labels"][VERSION_LABEL]
            .as_str()
            .and_then(Version::parse)
    };
    documents
        .iter()
        .filter(|d| d["kind"] == "Deployment" && d["metadata"]["namespace"] == NAMESPACE)
        .find_map(label)
        .or_else(|| documents.iter().find_map(label))
}

/// Who else manages the Flux controllers, from their Deployments' labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagedBy {
    /// `flux bootstrap`: the Kustomization `flux-system` applies `gotk-components.yaml`.
    FluxBootstrap,
    /// The Flux Operator, through a FluxInstance.
    FluxOperator,
}

/// What a controller's Deployment says about the Flux running: its release, and who manages it.
pub fn deployment_release(deployment: &Value) -> (Option<Version>, Option<ManagedBy>) {
    let labels = &deployment["metadata"]["labels"];
    let version = labels[VERSION_LABEL].as_str().and_then(Version::parse);
    let managed = if labels[KUSTOMIZE_NAME_LABEL].is_string() {
        Some(ManagedBy::FluxBootstrap)
    } else if labels[OPERATOR_NAME_LABEL].is_string() {
        Some(ManagedBy::FluxOperator)
    } else {
        None
    };
    (version, managed)
}

/// The API group of the GitRepository.
pub const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
/// The API group of the Kustomization.
pub const KUSTOMIZE_GROUP: &str = "kustomize.toolkit.fluxcd.io";
/// The version of both APIs.
pub const API_VERSION: &str = "v1";
pub const GIT_REPOSITORY_API: &str = "source.toolkit.fluxcd.io/v1";
pub const KUSTOMIZATION_API: &str = "kustomize.toolkit.fluxcd.io/v1";
pub const GIT_REPOSITORY_PLURAL: &str = "gitrepositories";
pub const KUSTOMIZATION_PLURAL: &str = "kustomizations";
/// The CRDs Flux needs here; with [`DEPLOYMENTS`], what "Flux is installed" means.
pub const CRDS: [&str; 2] = [
    "gitrepositories.source.toolkit.fluxcd.io",
    "kustomizations.kustomize.toolkit.fluxcd.io",
];
/// The controllers' Deployments in `flux-system`. An install cut short after the CRDs (Ctrl-C,
/// a refused object, `kubectl delete ns flux-system`) has the CRDs but not these.
pub const DEPLOYMENTS: [&str; 2] = ["source-controller", "kustomize-controller"];
/// The annotation that makes a Flux controller reconcile now.
pub const RECONCILE_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";
pub const GIT_REPOSITORY_INTERVAL: &str = "1m0s";
pub const KUSTOMIZATION_INTERVAL: &str = "10m0s";
/// The Secret with the age identity for `decryption: sops`, and its key, as Flux's SOPS guide
/// names them (`kubectl create secret generic sops-age --from-file=age.agekey=...`).
pub const SOPS_SECRET: &str = "sops-age";
pub const SOPS_SECRET_KEY: &str = "age.agekey";

/// One of the objects homelab-flux knows without asking the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Namespace,
    Secret,
    GitRepository,
    Kustomization,
    CustomResourceDefinition,
    Deployment,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Secret => "Secret",
            Kind::GitRepository => "GitRepository",
            Kind::Kustomization => "Kustomization",
            Kind::CustomResourceDefinition => "CustomResourceDefinition",
            Kind::Deployment => "Deployment",
        }
    }
}

/// Which parts of Flux a cluster lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FluxParts {
    /// Each missing part, as `Kind \`name\``; empty when Flux is installed.
    pub missing: Vec<String>,
    /// A Flux CRD is among them: no Flux object can be read or written yet.
    pub crds_missing: bool,
    /// The release the controllers' Deployments are labelled with (the oldest, when they
    /// differ: an upgrade cut short); `None` when none is there or one has no label.
    pub version: Option<Version>,
    /// Who else applies the controllers' Deployments, from their labels.
    pub managed_by: Option<ManagedBy>,
    /// The controllers' Deployments that are there but not rolled out (`namespace/name`): the
    /// manifests are applied again and the rollout waited for.
    pub not_rolled_out: Vec<String>,
}

/// A Flux release's `install.yaml` on GitHub: the default `--flux-manifests`.
pub fn default_manifests_url(version: Version) -> String {
    format!("https://github.com/fluxcd/flux2/releases/download/{version}/install.yaml")
}

/// The URL Flux clones: SSH for a deploy key, HTTPS for a token or a GitHub App.
pub fn source_url(cfg: &FluxConfig) -> String {
    match cfg.auth {
        Auth::DeployKey => cfg.repo.ssh_url(),
        Auth::Token | Auth::GitHubApp => cfg.repo.https_url(),
    }
}

/// True when two repository URLs name the same repository: compared without case (GitHub's
/// owner and repository names are case-insensitive, and its `ssh_url` may spell them otherwise
/// than `flux.yaml`), with `.git` and a trailing `/` optional.
pub fn same_repo_url(a: &str, b: &str) -> bool {
    fn key(url: &str) -> String {
        let url = url.trim().trim_end_matches('/');
        let url = url.strip_suffix(".git").unwrap_or(url);
        url.to_ascii_lowercase()
    }
    key(a) == key(b)
}

/// True when two URLs reach the same repository whatever the protocol: `ssh://git@host:22/o/r`
/// and `https://host/o/r` are one repository (what a switch between `deploy-key` and `token` or
/// `github-app` changes), compared like [`same_repo_url`] past the scheme, user and port. The
/// guard against taking over another repository asks this; the spelling kept asks
/// [`same_repo_url`].
pub fn same_repository(a: &str, b: &str) -> bool {
    fn key(url: &str) -> String {
        let url = url.trim();
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit('@').next().unwrap_or(authority);
        let host = host.split(':').next().unwrap_or(host);
        format!("{host}/{path}")
    }
    same_repo_url(&key(a), &key(b))
}

/// The Namespace `flux-system`.
pub fn namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
}

/// The Secret `flux-system` with the deploy key, as `flux bootstrap` writes it.
pub fn deploy_key_secret(identity: &str, identity_pub: &str, known_hosts: &str) -> Value {
    secret(&[
        ("identity", identity),
        ("identity.pub", identity_pub),
        ("known_hosts", known_hosts),
    ])
}

/// The Secret `flux-system` for `auth: token`: HTTP Basic auth with the token as password.
pub fn token_secret(token: &str) -> Value {
    secret(&[("username", "git"), ("password", token)])
}

/// The Secret `flux-system` for `auth: github-app`: exactly the keys source-controller reads
/// (fluxcd/pkg `auth/githubapp`); `githubAppBaseURL` is the API base, given only when it is not
/// `https://api.github.com` (GitHub Enterprise Server, or a test's fake).
pub fn github_app_secret(
    app_id: u64,
    installation_id: u64,
    private_key: &str,
    base_url: Option<&str>,
) -> Value {
    let (app_id, installation_id) = (app_id.to_string(), installation_id.to_string());
    let mut entries = vec![
        (APP_ID_KEY, app_id.as_str()),
        (APP_INSTALLATION_ID_KEY, installation_id.as_str()),
        (APP_PRIVATE_KEY_KEY, private_key),
    ];
    if let Some(base) = base_url {
        entries.push((APP_BASE_URL_KEY, base));
    }
    secret(&entries)
}

/// The keys of Secret `flux-system` that source-controller reads for `provider: github`.
pub const APP_ID_KEY: &str = "githubAppID";
pub const APP_INSTALLATION_ID_KEY: &str = "githubAppInstallationID";
pub const APP_PRIVATE_KEY_KEY: &str = "githubAppPrivateKey";
pub const APP_BASE_URL_KEY: &str = "githubAppBaseURL";

/// Every key the Secret `flux-system` holds in one of the three modes: a key of another mode
/// left in it means the mode changed, and the Secret is written anew (server-side apply drops
/// only fields this field manager set before).
pub const CREDENTIAL_KEYS: &[&str] = &[
    "identity",
    "identity.pub",
    "known_hosts",
    "username",
    "password",
    APP_ID_KEY,
    APP_INSTALLATION_ID_KEY,
    APP_PRIVATE_KEY_KEY,
    APP_BASE_URL_KEY,
];

/// The GitRepository's `spec.provider` for a GitHub App.
pub const GITHUB_PROVIDER: &str = "github";

/// The Secret `sops-age` that kustomize-controller decrypts with.
pub fn sops_age_secret(identity: &str) -> Value {
    let mut s = secret(&[(SOPS_SECRET_KEY, identity)]);
    s["metadata"]["name"] = Value::from(SOPS_SECRET);
    s
}

fn secret(entries: &[(&str, &str)]) -> Value {
    let data: std::collections::BTreeMap<String, k8s_openapi::ByteString> = entries
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_string(),
                k8s_openapi::ByteString(v.as_bytes().to_vec()),
            )
        })
        .collect();
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(NAME.to_string()),
            namespace: Some(NAMESPACE.to_string()),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    };
    // A Secret of strings always serialises.
    sorted(serde_json::to_value(secret).unwrap_or(Value::Null))
}

/// The GitRepository `flux-system` for the repository at `url`.
pub fn git_repository(url: &str, branch: &str, auth: Auth) -> Value {
    let mut repo = json!({
        "apiVersion": GIT_REPOSITORY_API,
        "kind": "GitRepository",
        "metadata": { "name": NAME, "namespace": NAMESPACE },
        "spec": {
            "interval": GIT_REPOSITORY_INTERVAL,
            "ref": { "branch": branch },
            "secretRef": { "name": NAME },
            "url": url,
        },
    });
    // Flux 2.5+: source-controller mints installation tokens from the App's key.
    if auth == Auth::GitHubApp {
        repo["spec"]["provider"] = Value::from(GITHUB_PROVIDER);
    }
    sorted(repo)
}

/// The Kustomization `flux-system`; with `decryption: sops` it decrypts with [`SOPS_SECRET`].
pub fn kustomization(cfg: &FluxConfig) -> Value {
    let mut k = json!({
        "apiVersion": KUSTOMIZATION_API,
        "kind": "Kustomization",
        "metadata": { "name": NAME, "namespace": NAMESPACE },
        "spec": {
            "interval": KUSTOMIZATION_INTERVAL,
            "path": cfg.path.as_str(),
            "prune": true,
            "sourceRef": { "kind": "GitRepository", "name": NAME },
        },
    });
    if cfg.decryption == Some(Decryption::Sops) {
        k["spec"]["decryption"] =
            json!({ "provider": "sops", "secretRef": { "name": SOPS_SECRET } });
    }
    sorted(k)
}

/// One of `status.conditions`, as the Flux controllers write it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Condition {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

impl Condition {
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The artifact a GitRepository produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Artifact {
    #[serde(default)]
    pub revision: String,
}

/// The parts of a GitRepository's or Kustomization's `status` homelab-flux reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// GitRepository: what was fetched.
    #[serde(default)]
    pub artifact: Option<Artifact>,
    /// Kustomization: what was applied.
    #[serde(default)]
    pub last_applied_revision: Option<String>,
    /// The last [`RECONCILE_ANNOTATION`] value the controller acted on.
    #[serde(default)]
    pub last_handled_reconcile_at: Option<String>,
}

/// A Flux object as its controller reports it: the generation asked for and the status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub generation: Option<i64>,
    pub status: Status,
}

impl Observed {
    /// Decodes an object once. A status that is not shaped as Flux writes it counts as none
    /// yet (the controller has not reported), never as an error.
    pub fn from_object(object: &Value) -> Observed {
        Observed {
            generation: object["metadata"]["generation"].as_i64(),
            status: Status::deserialize(&object["status"]).unwrap_or_default(),
        }
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Ready, and at the generation asked for (an older Ready says nothing about the new spec).
    pub fn is_ready(&self) -> bool {
        let current =
            self.generation.is_none() || self.status.observed_generation == self.generation;
        current && self.condition("Ready").is_some_and(Condition::is_true)
    }

    pub fn is_stalled(&self) -> bool {
        self.condition("Stalled").is_some_and(Condition::is_true)
    }

    /// The revision reported: the artifact's (GitRepository), else the last applied
    /// (Kustomization).
    pub fn revision(&self) -> Option<&str> {
        match &self.status.artifact {
            Some(a) => Some(a.revision.as_str()),
            None => self.status.last_applied_revision.as_deref(),
        }
    }

    /// The commit it is Ready at, when it is Ready at its current generation.
    pub fn ready_commit(&self) -> Option<&str> {
        self.revision()
            .filter(|_| self.is_ready())
            .map(revision_sha)
    }
}

/// The commit of a Flux revision: `main@sha1:abc…` (Flux v1 APIs) or `main/abc…` (older).
pub fn revision_sha(revision: &str) -> &str {
    revision
        .rsplit_once(':')
        .or_else(|| revision.rsplit_once('/'))
        .map_or(revision, |(_, sha)| sha)
}

/// A value of a Secret's `data`, decoded; `None` when absent or not UTF-8.
pub fn secret_value(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret["data"][key].as_str()?;
    let bytes: k8s_openapi::ByteString =
        serde_json::from_value(Value::String(encoded.to_string())).ok()?;
    String::from_utf8(bytes.0).ok()
}

/// The deploy key's public half in the Secret `flux-system`, if it holds one.
pub fn deploy_public_key(secret: &Value) -> Option<String> {
    secret_value(secret, "identity.pub")
}

/// The objects as a YAML stream, each document starting with `---`, keys sorted.
pub fn export_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        // Serialising a JSON value cannot fail: it has string keys and no non-finite floats.
        out.push_str(&serde_yaml::to_string(&sorted(o.clone())).unwrap_or_default());
    }
    out
}

/// Rebuilds every map with its keys in order, whatever map type serde_json was built with.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted(v)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// True when every field of `desired` is in `live` with the same value (lists element-wise).
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, v)| l.get(k).is_some_and(|lv| is_subset(v, lv))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (d, l) => d == l,
    }
}

/// What to do about a Flux object that is not Ready, from its condition's message: the
/// decryption hints of [`crate::sops`] first, then the deploy key, then the branch or path.
pub fn not_ready_hint(message: &str) -> &'static str {
    let lower = message.to_lowercase();
    if let Some(hint) = crate::sops::decryption_failure_hint(message) {
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
    }
}

/// One object in the cluster, by its API resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ObjectRef {
    /// `group/version` (`v1` for the core group).
    pub api_version: String,
    pub kind: String,
    /// The resource's plural, as the API server's paths name it.
    pub plural: String,
    /// `None` for a cluster-scoped object.
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    /// `Kind namespace/name`, or `Kind name` for a cluster-scoped object.
    pub fn shown(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn versions_parse_and_order_as_releases() {
        assert_eq!(Version::parse("v2.10.1"), Some(Version::new(2, 10, 1)));
        assert_eq!(Version::parse("1.36.3+k3s1"), Some(Version::new(1, 36, 3)));
        assert_eq!(Version::parse("v1.37.0-rc.1"), Some(Version::new(1, 37, 0)));
        for bad in ["", "v2.10", "v2.10.1.2", "latest", "v2.x.1", "v-1.2.3"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
        assert!(Version::new(2, 9, 5) < Version::new(2, 10, 1));
        assert_eq!(Version::new(2, 10, 1).to_string(), "v2.10.1");
        assert_eq!(pinned(), Version::new(2, 10, 1));
        assert_eq!(release_line(pinned()).map(|l| l.latest), Some(pinned()));
    }

    #[test]
    fn the_table_decides_which_kubernetes_a_release_supports() {
        let v = Version::new;
        assert_eq!(supports(v(2, 10, 1), v(1, 36, 3)), Support::Supported);
        assert_eq!(supports(v(2, 10, 1), v(1, 35, 2)), Support::Supported);
        assert_eq!(
            supports(v(2, 10, 1), v(1, 35, 1)),
            Support::TooOld {
                min: v(1, 35, 2),
                older: Some(v(2, 9, 5))
            }
        );
        assert_eq!(
            supports(v(2, 10, 0), v(1, 32, 9)),
            Support::TooOld {
                min: v(1, 35, 2),
                older: None
            }
        );
        assert_eq!(
            supports(v(2, 9, 4), v(1, 37, 0)),
            Support::Untested { tested: (1, 36) }
        );
        assert_eq!(
            supports(v(2, 10, 1), v(1, 38, 0)),
            Support::Untested { tested: (1, 37) }
        );
        assert_eq!(supports(v(2, 11, 0), v(1, 36, 0)), Support::UnknownLine);
    }

    #[test]
    fn versions_are_read_from_the_labels() {
        let deployment = json!({"kind": "Deployment", "metadata": {"name": "source-controller", "namespace": NAMESPACE,
            "labels": {VERSION_LABEL: "v2.9.5", KUSTOMIZE_NAME_LABEL: "flux-system"}}});
        let crd = json!({"kind": "CustomResourceDefinition", "metadata": {"name": "x", "labels": {VERSION_LABEL: "v2.9.4"}}});
        assert_eq!(
            manifests_version(&[crd.clone(), deployment.clone()]),
            Some(Version::new(2, 9, 5))
        );
        assert_eq!(
            manifests_version(std::slice::from_ref(&crd)),
            Some(Version::new(2, 9, 4))
        );
        assert_eq!(
            manifests_version(&[json!({"kind": "Namespace", "metadata": {"name": "x"}})]),
            None
        );
        assert_eq!(
            deployment_release(&deployment),
            (Some(Version::new(2, 9, 5)), Some(ManagedBy::FluxBootstrap))
        );
        let operator = json!({"metadata": {"labels": {OPERATOR_NAME_LABEL: "flux"}}});
        assert_eq!(
            deployment_release(&operator),
            (None, Some(ManagedBy::FluxOperator))
        );
    }
    use super::*;
    use crate::config::parse_flux;

    #[test]
    fn repository_urls_compare_without_case_and_dot_git() {
        assert!(same_repo_url(
            "ssh://git@github.com/Username/Manifests.git",
            "ssh://git@github.com/username/manifests"
        ));
        assert!(same_repo_url(
            "https://github.com/o/r/",
            "https://github.com/o/r.git"
        ));
        assert!(!same_repo_url(
            "ssh://git@github.com/o/r.git",
            "ssh://git@github.com/o/other.git"
        ));
        assert!(!same_repo_url(
            "ssh://git@github.com/o/r.git",
            "https://github.com/o/r.git"
        ));
        assert!(same_repository(
            "ssh://git@github.com/o/r.git",
            "https://github.com/O/r"
        ));
        assert!(same_repository(
            "ssh://git@ghe.example.com:2222/o/r.git",
            "https://ghe.example.com/o/r.git"
        ));
        assert!(!same_repository(
            "ssh://git@github.com/o/r.git",
            "https://github.com/o/other.git"
        ));
        assert!(!same_repository(
            "ssh://git@ghe.example.com/o/r.git",
            "https://github.com/o/r.git"
        ));
    }

    #[test]
    fn status_is_decoded_once_and_a_malformed_one_is_none_yet() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(revision_sha(&format!("main@sha1:{sha}")), sha);
        assert_eq!(revision_sha(&format!("feature/x@sha1:{sha}")), sha);
        assert_eq!(revision_sha(&format!("main/{sha}")), sha);
        assert_eq!(revision_sha(sha), sha);
        let ready = json!({
            "metadata": {"generation": 2},
            "status": {
                "observedGeneration": 2,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": ""}],
                "artifact": {"revision": format!("main@sha1:{sha}")},
            }
        });
        let o = Observed::from_object(&ready);
        assert!(o.is_ready());
        assert_eq!(o.ready_commit(), Some(sha));
        let mut stale = ready.clone();
        stale["metadata"]["generation"] = 3.into();
        assert_eq!(Observed::from_object(&stale).ready_commit(), None);
        let ks = json!({"status": {"lastAppliedRevision": format!("main@sha1:{sha}"),
            "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(Observed::from_object(&ks).ready_commit(), Some(sha));
        let odd = json!({"status": {"conditions": "not a list"}});
        assert_eq!(Observed::from_object(&odd).status, Status::default());
        assert!(
            Observed::from_object(&json!({}))
                .condition("Ready")
                .is_none()
        );
    }

    #[test]
    fn secrets_hold_base64_data() {
        let s = token_secret("abc");
        assert_eq!(secret_value(&s, "password").as_deref(), Some("abc"));
        assert_eq!(s["data"]["password"], "YWJj");
        assert_eq!(s["data"]["username"], "Z2l0");
        assert_eq!(s["metadata"]["namespace"], NAMESPACE);
    }

    #[test]
    fn sops_decryption_names_the_sops_age_secret() {
        let (cfg, _) = parse_flux("repo: https://github.com/o/r\ndecryption: sops\n", "f");
        let k = kustomization(&cfg.unwrap());
        assert_eq!(
            k["spec"]["decryption"],
            json!({"provider": "sops", "secretRef": {"name": "sops-age"}})
        );
        let s = sops_age_secret("AGE-SECRET-KEY-1X");
        assert_eq!(s["metadata"]["name"], "sops-age");
        assert_eq!(s["data"]["age.agekey"], "QUdFLVNFQ1JFVC1LRVktMVg=");
    }

    #[test]
    fn export_matches_flux_bootstrap_layout() {
        let (cfg, _) = parse_flux("repo: https://github.com/o/r\npath: clusters/home\n", "f");
        let cfg = cfg.unwrap();
        let yaml = export_yaml(&[
            git_repository(&source_url(&cfg), "main", cfg.auth),
            kustomization(&cfg),
        ]);
        assert_eq!(
            yaml,
            "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 1m0s\n  ref:\n    branch: main\n  secretRef:\n    name: flux-system\n  url: ssh://git@github.com/o/r.git\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 10m0s\n  path: ./clusters/home\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n"
        );
    }

    #[test]
    fn subset_compares_only_what_is_set() {
        let desired = json!({"spec": {"interval": "1m0s", "ref": {"branch": "main"}}});
        let live = json!({"spec": {"interval": "1m0s", "ref": {"branch": "main"}, "timeout": "60s"}, "status": {}});
        assert!(is_subset(&desired, &live));
        let moved = json!({"spec": {"interval": "1m0s", "ref": {"branch": "dev"}}});
        assert!(!is_subset(&moved, &live));
        assert!(!is_subset(&json!({"a": [1, 2]}), &json!({"a": [1]})));
    }
}
