//! The one place that talks to the Kubernetes API server, through kube-rs.
//!
//! Every write is a server-side apply with the field manager [`FIELD_MANAGER`] and forced
//! ownership, and is skipped when the live object already holds every field homelab-flux sets:
//! a re-run on a bootstrapped cluster reads, compares and writes nothing.

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::Value;

use crate::flux::{self, FluxParts, Kind};

mod controllers;
mod install;
mod uninstall;
pub use uninstall::{Removal, known};
pub mod lease;
mod migrate;
mod watch;
pub use controllers::DeploymentEvent;
pub use install::Write;
pub use lease::{LEASE_DURATION, LEASE_NAME, LeaseState};
pub use migrate::{MigrateError, Pending};
pub use watch::is_refusal;
use watch::watch_one;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "homelab-flux";
/// A TCP connection (and TLS handshake) to the API server that takes longer fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer from the API server that takes longer than this after the request fails. kube-rs
/// sets none by default, so a server that accepts and never answers would hang the run.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The server-side timeout of a watch, kept below [`READ_TIMEOUT`]: the API server ends a quiet
/// watch before the client would take the silence for a dead connection, and it is resumed.
const WATCH_TIMEOUT_SECS: u32 = 20;

/// What can go wrong with the cluster. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read the kubeconfig `{}` ({source}); pass `--kubeconfig FILE` or set `KUBECONFIG`",
        path.display()
    )]
    Kubeconfig {
        /// `--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`.
        path: std::path::PathBuf,
        #[source]
        source: crate::chain::Innermost<kube::config::KubeconfigError>,
    },
    /// The server answered, but not as a Kubernetes API server does.
    #[error(
        "`{server}` answered the version request with {answer}, which no Kubernetes API server does: is it the API server's address? (see `server:` in the kubeconfig, and `--context`)"
    )]
    NotKubernetes { server: String, answer: String },
    #[error("the kubeconfig has no context `{0}`; `kubectl config get-contexts` lists them")]
    NoContext(String),
    #[error("cannot set up the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error(
        "cannot reach the Kubernetes API server at {server} ({source}); is the cluster up, and is `--context` right?"
    )]
    Unreachable {
        server: String,
        #[source]
        source: Transport,
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
    /// The stored versions of a CRD could not be migrated before its new version (SPEC §4a).
    #[error(transparent)]
    Migrate(#[from] MigrateError),
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
        let path = match kubeconfig {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
                Some(v) => std::path::PathBuf::from(v),
                None => std::env::home_dir()
                    .unwrap_or_default()
                    .join(".kube/config"),
            },
        };
        let kubeconfig_error = |e| Error::Kubeconfig {
            path: path.clone(),
            source: crate::chain::Innermost(e),
        };
        let kc = match kubeconfig {
            Some(p) => Kubeconfig::read_from(p),
            None => Kubeconfig::read(),
        }
        .map_err(kubeconfig_error)?;
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
            .map_err(kubeconfig_error)?;
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
                source: Transport(e),
            },
            e => Error::Api {
                what: what.to_string(),
                source: e,
            },
        }
    }

    /// `major.minor` and the `gitVersion` of the API server.
    pub async fn version(&self) -> Result<((u32, u32), String), Error> {
        let info = self.client.apiserver_version().await.map_err(|e| match e {
            // An API server always answers `/version` with its JSON: anything else is another
            // server at that address (a web server, a proxy's error page).
            kube::Error::Api(status) if status.reason == "Failed to parse error data" => {
                Error::NotKubernetes {
                    server: self.server.clone(),
                    answer: format!("HTTP {}", status.code),
                }
            }
            kube::Error::SerdeError(_) => Error::NotKubernetes {
                server: self.server.clone(),
                answer: "a body that is not Kubernetes' version document".to_string(),
            },
            e => self.unreachable_or("the version request", e),
        })?;
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
        match self.api(kind, namespace).get_opt(name).await {
            // A plain 404 (not a Status): the API version is not served. A cluster on old Flux
            // CRDs serves no `v1` yet; its objects are read at the version it stores (SPEC §4a:
            // they are migrated before the new CRDs are applied).
            Err(kube::Error::Api(s))
                if s.code == 404
                    && s.reason == "Failed to parse error data"
                    && matches!(kind, Kind::GitRepository | Kind::Kustomization) =>
            {
                self.get_at_stored_version(kind, namespace, name).await
            }
            result => result
                .map_err(|e| self.unreachable_or(&format!("reading {} `{name}`", kind.name()), e)),
        }
    }

    /// What of Flux is missing: the CRDs and the controllers' Deployments, their release, and
    /// which of them are not rolled out.
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
        // The release the controllers run: the oldest of their labels, unknown when one has
        // none; who else applies them, from the same labels.
        let (mut version, mut managed_by, mut unlabelled) = (None, None, false);
        let mut not_rolled_out = Vec::new();
        for d in [&d0, &d1] {
            if let Ok(Some(d)) = d {
                let d = serde_json::to_value(d).unwrap_or_default();
                let rollout = crate::health::rollout(&d);
                if !rollout.rolled_out {
                    not_rolled_out.push(rollout.name);
                }
                let (v, by) = flux::deployment_release(&d);
                unlabelled |= v.is_none();
                version = match (version, v) {
                    (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                    (a, b) => a.or(b),
                };
                managed_by = managed_by.or(by);
            }
        }
        let version = version.filter(|_| !unlabelled);
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
            version,
            managed_by,
            not_rolled_out,
        })
    }

    /// The first FluxInstance (the Flux Operator's) in any namespace, `namespace/name`;
    /// `None` when there is none or the Flux Operator's CRD is not installed.
    pub async fn flux_instance(&self) -> Result<Option<String>, Error> {
        let ar = kube::api::ApiResource {
            group: "fluxcd.controlplane.io".to_string(),
            version: "v1".to_string(),
            api_version: "fluxcd.controlplane.io/v1".to_string(),
            kind: "FluxInstance".to_string(),
            plural: "fluxinstances".to_string(),
        };
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Ok(list) => Ok(list.items.first().map(|o| {
                format!(
                    "{}/{}",
                    o.metadata.namespace.as_deref().unwrap_or_default(),
                    o.metadata.name.as_deref().unwrap_or_default()
                )
            })),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(self.unreachable_or("listing FluxInstances", e)),
        }
    }

    /// Server-side applies `desired` (a JSON object); whether anything differs is the plan's to
    /// decide.
    pub async fn apply(&self, kind: Kind, desired: &Value) -> Result<(), Error> {
        self.patch(kind, desired, &PatchParams::apply(FIELD_MANAGER).force())
            .await
    }

    async fn patch(&self, kind: Kind, desired: &Value, params: &PatchParams) -> Result<(), Error> {
        let name = desired["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = desired["metadata"]["namespace"].as_str();
        self.api(kind, namespace)
            .patch(name, params, &Patch::Apply(desired))
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
    ) -> Result<(), Error> {
        self.delete_with(kind, namespace, name, &Default::default())
            .await
    }

    async fn delete_with(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        params: &kube::api::DeleteParams,
    ) -> Result<(), Error> {
        match self.api(kind, namespace).delete(name, params).await {
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
}

/// The connection to the API server failed: the kube-rs error, shown as its innermost cause
/// (for example `Connection refused (os error 111)`; the layers above it only repeat "client
/// error"), or as the timeout that passed.
#[derive(Debug)]
pub struct Transport(pub kube::Error);

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::chain::chain;
        // A server that accepts and stays silent: hyper-timeout reports its connect timeout and
        // its read timeout alike, as an I/O `TimedOut`.
        let timed_out = chain(&self.0).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
        if timed_out {
            return write!(
                f,
                "no answer within the {} s connect or {} s read timeout",
                CONNECT_TIMEOUT.as_secs(),
                READ_TIMEOUT.as_secs()
            );
        }
        match chain(&self.0).last() {
            Some(innermost) => write!(f, "{innermost}"),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Its text is the innermost cause already: the chain below it is not printed again.
impl std::error::Error for Transport {}
