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

use crate::flux::{self, FluxParts, Kind, is_subset};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "homelab-flux";
/// The `User-Agent` of every request to the API server.
/// A TCP connection (and TLS handshake) to the API server that takes longer fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer from the API server that takes longer than this after the request fails. kube-rs
/// sets none by default, so a server that accepts and never answers would hang the run.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The server-side timeout of a watch, kept below [`READ_TIMEOUT`]: the API server ends a quiet
/// watch before the client would take the silence for a dead connection, and it is resumed.
const WATCH_TIMEOUT_SECS: u32 = 20;
/// The Lease that serialises bootstraps of one cluster.
pub const LEASE_NAME: &str = "homelab-flux-bootstrap";
/// How long a Lease stays valid without renewal: a run that died holds it no longer than this.
pub const LEASE_DURATION: Duration = Duration::from_secs(30);

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

/// The API resource of a kind, and whether it is namespaced.
fn resource(kind: Kind) -> (ApiResource, bool) {
    let (group, version, kind, plural, namespaced) = match kind {
        Kind::Namespace => ("", "v1", "Namespace", "namespaces", false),
        Kind::Secret => ("", "v1", "Secret", "secrets", true),
        Kind::GitRepository => (
            flux::SOURCE_GROUP,
            flux::API_VERSION,
            "GitRepository",
            flux::GIT_REPOSITORY_PLURAL,
            true,
        ),
        Kind::Kustomization => (
            flux::KUSTOMIZE_GROUP,
            flux::API_VERSION,
            "Kustomization",
            flux::KUSTOMIZATION_PLURAL,
            true,
        ),
        Kind::CustomResourceDefinition => (
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
        Kind::Deployment => ("apps", "v1", "Deployment", "deployments", true),
    };
    (
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
        namespaced,
    )
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
        // No request waits forever (kube-rs sets no read timeout by default). The read timeout
        // counts from the request, not from when a pooled connection went idle.
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        config.write_timeout = Some(READ_TIMEOUT);
        config.reset_reader_on_write = true;
        // Named in the API server's audit log, like kubectl and the Flux controllers are.
        config.headers.push((
            reqwest::header::USER_AGENT,
            reqwest::header::HeaderValue::from_static(crate::http::USER_AGENT),
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

    /// The API server's address from the kubeconfig (with the context, it identifies the
    /// cluster in the deploy key's title).
    pub fn server(&self) -> &str {
        &self.server
    }

    fn unreachable_or(&self, what: &str, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(status) => Error::Refused {
                what: what.to_string(),
                message: status.message.clone(),
            },
            e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => Error::Unreachable {
                server: self.server.clone(),
                cause: match root_cause(&e) {
                    // A server that accepts and stays silent: hyper-timeout reports its connect
                    // timeout and its read timeout alike, as an I/O `TimedOut`.
                    _ if has_timed_out(&e) => format!(
                        "no answer within the {} s connect or {} s read timeout",
                        CONNECT_TIMEOUT.as_secs(),
                        READ_TIMEOUT.as_secs()
                    ),
                    c => c,
                },
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
        let (ar, namespaced) = resource(kind);
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

    /// What of Flux is missing: the CRDs and the controllers' Deployments. (Whether the Deployments are available is the
    /// wait's business: Flux not reconciling shows there, with the controller's words.)
    pub async fn missing_flux_parts(&self) -> Result<FluxParts, Error> {
        let ns = flux::NAMESPACE;
        let (c0, c1, d0, d1) = tokio::join!(
            self.get(Kind::CustomResourceDefinition, None, flux::CRDS[0]),
            self.get(Kind::CustomResourceDefinition, None, flux::CRDS[1]),
            self.get(Kind::Deployment, Some(ns), flux::DEPLOYMENTS[0]),
            self.get(Kind::Deployment, Some(ns), flux::DEPLOYMENTS[1]),
        );
        let crds_missing =
            c0.as_ref().is_ok_and(Option::is_none) || c1.as_ref().is_ok_and(Option::is_none);
        let mut missing = Vec::new();
        for (found, kind, name) in [
            (
                c0?,
                Kind::CustomResourceDefinition,
                flux::CRDS[0].to_string(),
            ),
            (
                c1?,
                Kind::CustomResourceDefinition,
                flux::CRDS[1].to_string(),
            ),
            (
                d0?,
                Kind::Deployment,
                format!("{ns}/{}", flux::DEPLOYMENTS[0]),
            ),
            (
                d1?,
                Kind::Deployment,
                format!("{ns}/{}", flux::DEPLOYMENTS[1]),
            ),
        ] {
            if found.is_none() {
                missing.push(format!("{} `{name}`", kind.name()));
            }
        }
        Ok(FluxParts {
            missing,
            crds_missing,
        })
    }

    /// Server-side applies `desired` (a JSON object); whether anything differs is the plan's to
    /// decide. With `dry_run`, the API server checks the write without persisting it.
    pub async fn apply(&self, kind: Kind, desired: &Value, dry_run: bool) -> Result<(), Error> {
        let name = desired["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = desired["metadata"]["namespace"].as_str();
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        self.api(kind, namespace)
            .patch(&name, &params, &Patch::Apply(desired))
            .await
            .map_err(|e| self.unreachable_or(&format!("applying {} `{name}`", kind.name()), e))?;
        Ok(())
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
        let (ar, _) = resource(kind);
        let patch = serde_json::json!({
            "apiVersion": ar.api_version,
            "kind": ar.kind,
            "metadata": {"name": name, "namespace": namespace, "annotations": {flux::RECONCILE_ANNOTATION: stamp}},
        });
        let params = PatchParams::apply(&format!("{FIELD_MANAGER}-reconcile")).force();
        self.api(kind, Some(namespace))
            .patch(name, &params, &Patch::Apply(&patch))
            .await
            .map_err(|e| self.unreachable_or(&format!("annotating {} `{name}`", kind.name()), e))?;
        Ok(())
    }

    /// Installs manifests (Flux's `install.yaml`): CRDs and Namespaces first, waits for the CRDs
    /// to be Established, then everything else. Kinds are resolved through discovery. Objects
    /// already as wanted (an install cut short and run again) are not written. Returns how many
    /// objects the manifests hold and how many were written.
    pub async fn install(
        &self,
        documents: &[Value],
        dry_run: bool,
        timeout: Duration,
    ) -> Result<(usize, usize), Error> {
        let first = |d: &&Value| {
            matches!(
                d["kind"].as_str(),
                Some("CustomResourceDefinition" | "Namespace")
            )
        };
        let (early, late): (Vec<&Value>, Vec<&Value>) = documents.iter().partition(first);
        let mut written = 0;
        for doc in &early {
            written += usize::from(self.apply_any(doc, dry_run).await?);
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
        // A dry run has not really created the Namespaces: objects in one that does not exist
        // yet cannot be checked, and count as to be created.
        let mut absent = std::collections::BTreeMap::new();
        for doc in &late {
            if dry_run && let Some(ns) = doc["metadata"]["namespace"].as_str() {
                if !absent.contains_key(ns) {
                    let missing = self.get(Kind::Namespace, None, ns).await?.is_none();
                    absent.insert(ns.to_string(), missing);
                }
                if absent[ns] {
                    written += 1;
                    continue;
                }
            }
            written += usize::from(self.apply_any(doc, dry_run).await?);
        }
        Ok((early.len() + late.len(), written))
    }

    /// Applies one manifest unless the live object holds all of it; true when it was written.
    async fn apply_any(&self, doc: &Value, dry_run: bool) -> Result<bool, Error> {
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
        let live = api
            .get_opt(name)
            .await
            .map_err(|e| self.unreachable_or(&format!("reading {kind} `{name}`"), e))?;
        if let Some(live) = live
            && is_subset(doc, &serde_json::to_value(live).unwrap_or(Value::Null))
        {
            return Ok(false);
        }
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        api.patch(name, &params, &Patch::Apply(doc))
            .await
            .map_err(|e| self.unreachable_or(&format!("applying {kind} `{name}`"), e))?;
        Ok(true)
    }

    async fn wait_established(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        let api = self.api(Kind::CustomResourceDefinition, None);
        let established = |o: Option<&DynamicObject>| {
            o.is_some_and(|o| {
                flux::Observed::from_object(&o.data)
                    .condition("Established")
                    .is_some_and(flux::Condition::is_true)
            })
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

    /// A stream of one object's states, from a watch (not polling): `Some` when it is there or
    /// changed, `None` when it is absent or deleted. After an error the stream goes on (it lists
    /// and watches again when polled), so a caller can resume a dropped watch.
    pub fn watch(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> impl futures::Stream<Item = Result<Option<DynamicObject>, kube::runtime::watcher::Error>>
    + Send
    + use<> {
        watch_one(self.api(kind, Some(namespace)), name)
    }

    /// One attempt to take the bootstrap Lease in `namespace` for `holder`: created when absent,
    /// taken over when expired, renewed when `holder` has it already. Conflicts (another run
    /// won the race) come back as the Lease's holder, like a Lease held by another run.
    pub async fn try_acquire_lease(
        &self,
        namespace: &str,
        holder: &str,
    ) -> Result<LeaseState, Error> {
        use k8s_openapi::api::coordination::v1::Lease;
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("the Lease `{namespace}/{LEASE_NAME}`");
        let live = api
            .get_opt(LEASE_NAME)
            .await
            .map_err(|e| self.unreachable_or(&what, e))?;
        let now = jiff::Timestamp::now();
        if let Some(live) = &live
            && let Some(other) = lease_holder(live, holder, now)
        {
            return Ok(other);
        }
        let lease = Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(LEASE_NAME.to_string()),
                namespace: Some(namespace.to_string()),
                resource_version: live
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone()),
                ..Default::default()
            },
            spec: Some(lease_spec(holder, now)),
        };
        let result = match &live {
            None => api.create(&Default::default(), &lease).await,
            Some(_) => api.replace(LEASE_NAME, &Default::default(), &lease).await,
        };
        match result {
            Ok(_) => Ok(LeaseState::Acquired),
            // Another run created or took it between the read and the write.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(LeaseState::Held {
                holder: "another bootstrap".to_string(),
                expires: now + LEASE_DURATION,
            }),
            Err(e) => Err(self.unreachable_or(&what, e)),
        }
    }

    /// Renews the Lease while `holder` has it; false when it is no longer ours.
    pub async fn renew_lease(&self, namespace: &str, holder: &str) -> Result<bool, Error> {
        Ok(matches!(
            self.try_acquire_lease(namespace, holder).await?,
            LeaseState::Acquired
        ))
    }

    /// Deletes the Lease if `holder` still has it, so that the next run need not wait.
    pub async fn release_lease(&self, namespace: &str, holder: &str) -> Result<(), Error> {
        use k8s_openapi::api::coordination::v1::Lease;
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("the Lease `{namespace}/{LEASE_NAME}`");
        let Some(live) = api
            .get_opt(LEASE_NAME)
            .await
            .map_err(|e| self.unreachable_or(&what, e))?
        else {
            return Ok(());
        };
        let ours = live
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(holder);
        if !ours {
            return Ok(());
        }
        // Only this very version: a run that took the Lease over meanwhile keeps it.
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: live.metadata.resource_version.clone(),
                uid: None,
            }),
            ..Default::default()
        };
        match api.delete(LEASE_NAME, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(self.unreachable_or(&what, e)),
        }
    }

    /// A stream of the Lease's states (see [`Cluster::watch`]); a waiting run wakes on changes.
    pub fn watch_lease(
        &self,
        namespace: &str,
    ) -> impl futures::Stream<Item = Result<(), kube::runtime::watcher::Error>> + Send + use<> {
        use k8s_openapi::api::coordination::v1::Lease;
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        watch_one(api, LEASE_NAME).map(|r| r.map(|_| ()))
    }
}

/// Whether a bootstrap Lease is ours to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// This run holds it now.
    Acquired,
    /// Another run holds it until `expires`, unless it renews it.
    Held {
        holder: String,
        expires: jiff::Timestamp,
    },
}

/// `Some(Held)` when a live Lease belongs to another holder and has not expired at `now`.
pub fn lease_holder(
    lease: &k8s_openapi::api::coordination::v1::Lease,
    me: &str,
    now: jiff::Timestamp,
) -> Option<LeaseState> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    if holder == me {
        return None;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)?;
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    let expires = renewed + jiff::SignedDuration::from_secs(seconds);
    (expires > now).then_some(LeaseState::Held { holder, expires })
}

fn lease_spec(holder: &str, now: jiff::Timestamp) -> k8s_openapi::api::coordination::v1::LeaseSpec {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    k8s_openapi::api::coordination::v1::LeaseSpec {
        holder_identity: Some(holder.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..Default::default()
    }
}

/// True for a watch error that retrying will not cure: the API server answered 403 (RBAC) or
/// 404 (the kind is not served). Connection errors, timeouts and 410 Gone are passing.
pub fn is_refusal(e: &kube::runtime::watcher::Error) -> bool {
    use kube::runtime::watcher::Error as W;
    let status = match e {
        W::InitialListFailed(kube::Error::Api(s))
        | W::WatchStartFailed(kube::Error::Api(s))
        | W::WatchFailed(kube::Error::Api(s)) => s.code,
        W::WatchError(s) => s.code,
        _ => return false,
    };
    matches!(status, 403 | 404)
}

/// `watch_object` of kube-runtime, with a server-side timeout below the client's read timeout.
fn watch_one<K>(
    api: Api<K>,
    name: &str,
) -> futures::stream::BoxStream<'static, Result<Option<K>, kube::runtime::watcher::Error>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use kube::runtime::watcher::{self, Event};
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(WATCH_TIMEOUT_SECS);
    watcher::watcher(api, config)
        .scan(false, |seen, event| {
            match &event {
                Ok(Event::Init) => *seen = false,
                Ok(Event::InitApply(_)) => *seen = true,
                _ => {}
            }
            futures::future::ready(Some((*seen, event)))
        })
        .filter_map(|(seen, event)| async move {
            match event {
                Ok(Event::Apply(o) | Event::InitApply(o)) => Some(Ok(Some(o))),
                Ok(Event::Delete(_)) => Some(Ok(None)),
                Ok(Event::InitDone) if !seen => Some(Ok(None)),
                Ok(Event::Init | Event::InitDone) => None,
                Err(e) => Some(Err(e)),
            }
        })
        .boxed()
}

/// True when an I/O error in the chain timed out (hyper-timeout's connect, read and write
/// timeouts).
fn has_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The last error of a source chain, which names what actually failed.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_by_another_run_until_it_expires() {
        use k8s_openapi::api::coordination::v1::Lease;
        let now: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let lease = |holder: &str, renewed: &str| Lease {
            spec: Some(lease_spec(holder, renewed.parse().unwrap())),
            ..Default::default()
        };
        assert_eq!(
            lease_holder(&lease("other", "2026-12-01T09:59:50Z"), "me", now),
            Some(LeaseState::Held {
                holder: "other".to_string(),
                expires: "2026-12-01T10:00:20Z".parse().unwrap(),
            })
        );
        // Expired (a run that died), or ours: free to take.
        assert_eq!(
            lease_holder(&lease("other", "2026-12-01T09:59:00Z"), "me", now),
            None
        );
        assert_eq!(
            lease_holder(&lease("me", "2026-12-01T09:59:59Z"), "me", now),
            None
        );
        assert_eq!(lease_holder(&Lease::default(), "me", now), None);
    }
}
