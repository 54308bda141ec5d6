//! The one place that talks to the Kubernetes API server, through kube-rs.
//!
//! Every write is a server-side apply with the field manager [`FIELD_MANAGER`] and forced
//! ownership, and is skipped when the live object already holds every field homelab-flux sets:
//! a re-run on a bootstrapped cluster reads, compares and writes nothing.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use kube::{Client, Config};
use serde_json::Value;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "homelab-flux";
/// The `User-Agent` of every request to the API server.
pub const USER_AGENT: &str = concat!("homelab-flux/", env!("CARGO_PKG_VERSION"));
/// Flux 2.9 needs Kubernetes 1.33 or newer.
pub const MIN_VERSION: (u32, u32) = (1, 33);
/// The CRDs whose presence means Flux is installed.
pub const FLUX_CRDS: [&str; 2] = [
    "gitrepositories.source.toolkit.fluxcd.io",
    "kustomizations.kustomize.toolkit.fluxcd.io",
];

/// What can go wrong with the cluster. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the kubeconfig; pass `--kubeconfig FILE` or set `KUBECONFIG`")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("the kubeconfig has no context `{0}`; `kubectl config get-contexts` lists them")]
    NoContext(String),
    #[error("cannot set up the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error(
        "cannot reach the Kubernetes API server at {server} ({cause}); is the cluster up, and is `--context` right?"
    )]
    Unreachable {
        server: String,
        /// The innermost cause (for example `Connection refused (os error 111)`); the layers
        /// above it only repeat "client error".
        cause: String,
    },
    #[error("the API server refused {what}: {message}")]
    Refused { what: String, message: String },
    #[error("the API server failed on {what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("`{0}` is not a Kubernetes object (no apiVersion, kind or metadata.name)")]
    NotAnObject(String),
    #[error("the CRD `{0}` did not become Established in time")]
    CrdNotEstablished(String),
}

/// One of the objects homelab-flux knows without asking the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Namespace,
    Secret,
    GitRepository,
    Kustomization,
    CustomResourceDefinition,
}

impl Kind {
    fn resource(self) -> (ApiResource, bool) {
        let (group, version, kind, plural, namespaced) = match self {
            Kind::Namespace => ("", "v1", "Namespace", "namespaces", false),
            Kind::Secret => ("", "v1", "Secret", "secrets", true),
            Kind::GitRepository => (
                "source.toolkit.fluxcd.io",
                "v1",
                "GitRepository",
                "gitrepositories",
                true,
            ),
            Kind::Kustomization => (
                "kustomize.toolkit.fluxcd.io",
                "v1",
                "Kustomization",
                "kustomizations",
                true,
            ),
            Kind::CustomResourceDefinition => (
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            ),
        };
        (
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
            namespaced,
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Secret => "Secret",
            Kind::GitRepository => "GitRepository",
            Kind::Kustomization => "Kustomization",
            Kind::CustomResourceDefinition => "CustomResourceDefinition",
        }
    }
}

/// What an apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Created,
    Updated,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Applied::Unchanged => "unchanged",
            Applied::Created => "created",
            Applied::Updated => "updated",
        })
    }
}

/// A connection to one cluster.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    context: String,
    server: String,
}

/// Credential plugins of the kubeconfig (an `exec` command, an auth provider's `cmd-path`)
/// inherit this process's environment: `HOMELAB_FLUX_TOKEN` is removed from theirs, since a
/// cluster's credential helper has no business with the GitHub token.
fn keep_token_from_plugins(kc: &mut Kubeconfig) {
    let token_env = crate::config::TOKEN_ENV;
    for named in &mut kc.auth_infos {
        let Some(info) = named.auth_info.as_mut() else {
            continue;
        };
        if let Some(exec) = info.exec.as_mut() {
            exec.drop_env
                .get_or_insert_with(Vec::new)
                .push(token_env.to_string());
        }
        if let Some(provider) = info.auth_provider.as_mut() {
            let drop = provider
                .config
                .entry("cmd-drop-env".to_string())
                .or_default();
            drop.push(' ');
            drop.push_str(token_env);
        }
    }
}

impl Cluster {
    /// Connects with `--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`; `--context`, else
    /// the current context. Nothing is sent yet.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Cluster, Error> {
        let kc = match kubeconfig {
            Some(p) => Kubeconfig::read_from(p),
            None => Kubeconfig::read(),
        }
        .map_err(Error::Kubeconfig)?;
        let mut kc = kc;
        keep_token_from_plugins(&mut kc);
        let name = match context {
            Some(c) => c.to_string(),
            None => kc.current_context.clone().unwrap_or_default(),
        };
        if !kc.contexts.iter().any(|c| c.name == name) {
            return Err(Error::NoContext(name));
        }
        let options = KubeConfigOptions {
            context: Some(name.clone()),
            ..KubeConfigOptions::default()
        };
        let mut config = Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(Error::Kubeconfig)?;
        // Named in the API server's audit log, like kubectl and the Flux controllers are.
        config.headers.push((
            reqwest::header::USER_AGENT,
            reqwest::header::HeaderValue::from_static(USER_AGENT),
        ));
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(Error::Client)?;
        Ok(Cluster {
            client,
            context: name,
            server,
        })
    }

    /// The kubeconfig context in use (it names the deploy key).
    pub fn context(&self) -> &str {
        &self.context
    }

    fn unreachable_or(&self, what: &str, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(status) => Error::Refused {
                what: what.to_string(),
                message: status.message.clone(),
            },
            e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => Error::Unreachable {
                server: self.server.clone(),
                cause: root_cause(&e),
            },
            e => Error::Api {
                what: what.to_string(),
                source: e,
            },
        }
    }

    /// `major.minor` and the `gitVersion` of the API server.
    pub async fn version(&self) -> Result<((u32, u32), String), Error> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| self.unreachable_or("the version request", e))?;
        let digits = |s: &str| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        };
        Ok(((digits(&info.major), digits(&info.minor)), info.git_version))
    }

    fn api(&self, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let (ar, namespaced) = kind.resource();
        match (namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Reads one object; `None` when it does not exist.
    pub async fn get(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<DynamicObject>, Error> {
        self.api(kind, namespace)
            .get_opt(name)
            .await
            .map_err(|e| self.unreachable_or(&format!("reading {} `{name}`", kind.name()), e))
    }

    /// True when both Flux CRDs exist.
    pub async fn flux_installed(&self) -> Result<bool, Error> {
        let (a, b) = tokio::join!(
            self.get(Kind::CustomResourceDefinition, None, FLUX_CRDS[0]),
            self.get(Kind::CustomResourceDefinition, None, FLUX_CRDS[1])
        );
        Ok(a?.is_some() && b?.is_some())
    }

    /// Server-side applies `desired` (a JSON object) unless `live` already holds every field of
    /// it. With `dry_run`, the API server checks the write without persisting it.
    pub async fn apply(
        &self,
        kind: Kind,
        desired: &Value,
        live: Option<&DynamicObject>,
        dry_run: bool,
    ) -> Result<Applied, Error> {
        let name = desired["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = desired["metadata"]["namespace"].as_str();
        if let Some(live) = live {
            let live = serde_json::to_value(live).unwrap_or(Value::Null);
            if is_subset(desired, &live) {
                return Ok(Applied::Unchanged);
            }
        }
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        self.api(kind, namespace)
            .patch(&name, &params, &Patch::Apply(desired))
            .await
            .map_err(|e| self.unreachable_or(&format!("applying {} `{name}`", kind.name()), e))?;
        Ok(if live.is_some() {
            Applied::Updated
        } else {
            Applied::Created
        })
    }

    /// Deletes an object (used by `--force` to replace the Secret).
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<(), Error> {
        let params = kube::api::DeleteParams {
            dry_run,
            ..Default::default()
        };
        match self.api(kind, namespace).delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.unreachable_or(&format!("deleting {} `{name}`", kind.name()), e)),
        }
    }

    /// Sets `reconcile.fluxcd.io/requestedAt`, which makes a Flux controller reconcile now.
    pub async fn request_reconcile(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        stamp: &str,
    ) -> Result<(), Error> {
        let (ar, _) = kind.resource();
        let patch = serde_json::json!({
            "apiVersion": ar.api_version,
            "kind": ar.kind,
            "metadata": {"name": name, "namespace": namespace, "annotations": {"reconcile.fluxcd.io/requestedAt": stamp}},
        });
        let params = PatchParams::apply(&format!("{FIELD_MANAGER}-reconcile")).force();
        self.api(kind, Some(namespace))
            .patch(name, &params, &Patch::Apply(&patch))
            .await
            .map_err(|e| self.unreachable_or(&format!("annotating {} `{name}`", kind.name()), e))?;
        Ok(())
    }

    /// Installs manifests (Flux's `install.yaml`): CRDs and Namespaces first, waits for the CRDs
    /// to be Established, then everything else. Kinds are resolved through discovery.
    pub async fn install(
        &self,
        documents: &[Value],
        dry_run: bool,
        timeout: Duration,
    ) -> Result<usize, Error> {
        let first = |d: &&Value| {
            matches!(
                d["kind"].as_str(),
                Some("CustomResourceDefinition" | "Namespace")
            )
        };
        let (early, late): (Vec<&Value>, Vec<&Value>) = documents.iter().partition(first);
        let mut count = 0;
        for doc in &early {
            self.apply_any(doc, dry_run).await?;
            count += 1;
        }
        if !dry_run {
            for doc in early
                .iter()
                .filter(|d| d["kind"] == "CustomResourceDefinition")
            {
                let name = doc["metadata"]["name"].as_str().unwrap_or_default();
                self.wait_established(name, timeout).await?;
            }
        }
        for doc in late {
            self.apply_any(doc, dry_run).await?;
            count += 1;
        }
        Ok(count)
    }

    async fn apply_any(&self, doc: &Value, dry_run: bool) -> Result<(), Error> {
        let (Some(api_version), Some(kind), Some(name)) = (
            doc["apiVersion"].as_str(),
            doc["kind"].as_str(),
            doc["metadata"]["name"].as_str(),
        ) else {
            return Err(Error::NotAnObject(
                doc.to_string().chars().take(80).collect(),
            ));
        };
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| self.unreachable_or(&format!("looking up {kind}"), e))?;
        let api: Api<DynamicObject> = match (caps.scope, doc["metadata"]["namespace"].as_str()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (Scope::Namespaced, None) => Api::default_namespaced_with(self.client.clone(), &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        };
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        api.patch(name, &params, &Patch::Apply(doc))
            .await
            .map_err(|e| self.unreachable_or(&format!("applying {kind} `{name}`"), e))?;
        Ok(())
    }

    async fn wait_established(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        let api = self.api(Kind::CustomResourceDefinition, None);
        let established = |o: Option<&DynamicObject>| {
            o.is_some_and(|o| condition(&o.data, "Established").is_some_and(|c| c.status == "True"))
        };
        let wait = kube::runtime::wait::await_condition(api, name, established);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Error::CrdNotEstablished(name.to_string())),
        }
    }

    /// A failed watch as an [`Error`], so that a stopped API server reads as unreachable.
    pub fn watch_error(&self, kind: Kind, name: &str, e: kube::runtime::watcher::Error) -> Error {
        use kube::runtime::watcher::Error as W;
        let what = format!("watching {} `{name}`", kind.name());
        match e {
            W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => {
                self.unreachable_or(&what, e)
            }
            W::WatchError(status) => Error::Refused {
                what,
                message: status.message,
            },
            W::NoResourceVersion => Error::Refused {
                what,
                message: "the watch answered without a resourceVersion".to_string(),
            },
        }
    }

    /// A stream of one object's states, from a watch (not polling).
    pub fn watch(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> impl futures::Stream<Item = Result<Option<DynamicObject>, kube::runtime::watcher::Error>>
    + Send
    + use<> {
        kube::runtime::watcher::watch_object(self.api(kind, Some(namespace)), name).boxed()
    }
}

/// The last error of a source chain, which names what actually failed.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// A status condition of a Flux object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// The condition `type_` of an object's `status.conditions`.
pub fn condition(data: &Value, type_: &str) -> Option<Condition> {
    data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| Condition {
            status: c["status"].as_str().unwrap_or_default().to_string(),
            reason: c["reason"].as_str().unwrap_or_default().to_string(),
            message: c["message"].as_str().unwrap_or_default().to_string(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_compares_only_what_is_set() {
        let desired = json!({"spec": {"interval": "1m0s", "ref": {"branch": "main"}}});
        let live = json!({"spec": {"interval": "1m0s", "ref": {"branch": "main"}, "timeout": "60s"}, "status": {}});
        assert!(is_subset(&desired, &live));
        let moved = json!({"spec": {"interval": "1m0s", "ref": {"branch": "dev"}}});
        assert!(!is_subset(&moved, &live));
        assert!(!is_subset(&json!({"a": [1, 2]}), &json!({"a": [1]})));
    }

    #[test]
    fn conditions_are_read_by_type() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "GitOperationFailed", "message": "auth"}]}});
        let c = condition(&o, "Ready").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "GitOperationFailed")
        );
        assert!(condition(&o, "Stalled").is_none());
    }
}
