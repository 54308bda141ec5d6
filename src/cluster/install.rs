//! Writing manifests: Flux's install manifests applied in order (CRDs and Namespaces first,
//! waited for), the objects of an older release pruned after an upgrade, and the server-side dry
//! run of a plan's writes (`--dry-run`).

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use serde_json::Value;

use super::{Cluster, Error, FIELD_MANAGER};
use crate::flux::{self, Kind, is_subset};

/// A write the API server is asked to check without keeping it ([`Cluster::check`]).
#[derive(Clone, Copy, Debug)]
pub enum Write<'a> {
    /// A server-side apply of one object.
    Apply(Kind, &'a Value),
    /// A deletion.
    Delete {
        kind: Kind,
        namespace: Option<&'a str>,
        name: &'a str,
    },
    /// Install manifests, as [`Cluster::install`] writes them.
    Install(&'a [Value]),
}

/// Manifests in the order they are written: CRDs and Namespaces first, then the rest.
fn install_order(documents: &[Value]) -> (Vec<&Value>, Vec<&Value>) {
    documents.iter().partition(|d| {
        matches!(
            d["kind"].as_str(),
            Some("CustomResourceDefinition" | "Namespace")
        )
    })
}

impl Cluster {
    /// Has the API server check writes without keeping any (a server-side dry run): what
    /// `--dry-run` asks of it, in one call over the plan's writes. Manifests are checked as
    /// [`Cluster::install`] would write them, except that in a dry run their CRDs and
    /// Namespaces are not really there: what lives in a Namespace that does not exist yet
    /// cannot be checked, and counts as to be written.
    pub async fn check(&self, writes: &[Write<'_>]) -> Result<(), Error> {
        let mut apply = PatchParams::apply(FIELD_MANAGER).force();
        apply.dry_run = true;
        let delete = kube::api::DeleteParams {
            dry_run: true,
            ..Default::default()
        };
        for write in writes {
            match *write {
                Write::Apply(kind, desired) => self.patch(kind, desired, &apply).await?,
                Write::Delete {
                    kind,
                    namespace,
                    name,
                } => self.delete_with(kind, namespace, name, &delete).await?,
                Write::Install(documents) => {
                    let (early, late) = install_order(documents);
                    // A CRD whose stored versions are migrated first cannot be checked before
                    // the migration: the API server refuses it until then.
                    let migrated: std::collections::BTreeSet<String> = self
                        .migrations(documents)
                        .await?
                        .into_iter()
                        .map(|(m, _)| m.crd)
                        .collect();
                    for doc in early {
                        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
                        if doc["kind"] == "CustomResourceDefinition" && migrated.contains(name) {
                            continue;
                        }
                        self.apply_any(doc, &apply).await?;
                    }
                    let mut absent = std::collections::BTreeMap::new();
                    for doc in late {
                        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
                            if !absent.contains_key(ns) {
                                let missing = self.get(Kind::Namespace, None, ns).await?.is_none();
                                absent.insert(ns.to_string(), missing);
                            }
                            if absent[ns] {
                                continue;
                            }
                        }
                        self.apply_any(doc, &apply).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Installs manifests (Flux's `install.yaml`): CRDs and Namespaces first, waits for the CRDs
    /// to be Established, then everything else. A CRD whose stored versions the new one drops
    /// is refused by the API server: [`Cluster::migrate`] what [`Cluster::pending_migrations`]
    /// lists first. Kinds are resolved through discovery. Objects
    /// already as wanted (an install cut short and run again) are not written. Returns how many
    /// objects the manifests hold and how many were written.
    pub async fn install(
        &self,
        documents: &[Value],
        timeout: Duration,
    ) -> Result<(usize, usize), Error> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let (early, late) = install_order(documents);
        let mut written = 0;
        for doc in &early {
            written += usize::from(self.apply_any(doc, &params).await?);
        }
        for doc in early
            .iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
        {
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            self.wait_established(name, timeout).await?;
        }
        for doc in &late {
            written += usize::from(self.apply_any(doc, &params).await?);
        }
        Ok((early.len() + late.len(), written))
    }

    /// After an upgrade from `old`: deletes the objects still labelled as Flux `old` (part of
    /// Flux, instance `flux-system`) that the new manifests do not hold, in the kinds Flux's
    /// `install.yaml` uses. CRDs and Namespaces are never deleted here (that would delete every
    /// object in them). Returns `Kind namespace/name` of each deleted object.
    pub async fn prune_release(
        &self,
        old: flux::Version,
        documents: &[Value],
    ) -> Result<Vec<String>, Error> {
        let selector = format!(
            "{}={},{}={},{}={old}",
            flux::PART_OF_LABEL.0,
            flux::PART_OF_LABEL.1,
            flux::INSTANCE_LABEL.0,
            flux::INSTANCE_LABEL.1,
            flux::VERSION_LABEL
        );
        let kept: std::collections::HashSet<(String, String, String)> = documents
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap_or_default().to_string(),
                    d["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    d["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        let mut pruned = Vec::new();
        for (group, version, kind, plural, namespaced) in PRUNED_KINDS {
            let api_version = match group {
                "" => version.to_string(),
                g => format!("{g}/{version}"),
            };
            let ar = kube::api::ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                api_version,
                kind: kind.to_string(),
                plural: plural.to_string(),
            };
            let api: Api<DynamicObject> = match namespaced {
                true => Api::namespaced_with(self.client.clone(), flux::NAMESPACE, &ar),
                false => Api::all_with(self.client.clone(), &ar),
            };
            let list = api
                .list(&kube::api::ListParams::default().labels(&selector))
                .await
                .map_err(|e| self.unreachable_or(&format!("listing {kind}s of Flux {old}"), e))?;
            for o in list.items {
                let name = o.metadata.name.clone().unwrap_or_default();
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                if kept.contains(&(kind.to_string(), ns.clone(), name.clone())) {
                    continue;
                }
                match api.delete(&name, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        return Err(self.unreachable_or(&format!("deleting {kind} `{name}`"), e));
                    }
                }
                pruned.push(match ns.is_empty() {
                    true => format!("{kind} {name}"),
                    false => format!("{kind} {ns}/{name}"),
                });
            }
        }
        Ok(pruned)
    }

    /// Applies one manifest unless the live object holds all of it; true when it was written.
    async fn apply_any(&self, doc: &Value, params: &PatchParams) -> Result<bool, Error> {
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
        api.patch(name, params, &Patch::Apply(doc))
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
}

/// The kinds of Flux's `install.yaml` that an upgrade may prune: group, version, kind, plural,
/// namespaced (in `flux-system`).
pub(super) const PRUNED_KINDS: [(&str, &str, &str, &str, bool); 7] = [
    ("apps", "v1", "Deployment", "deployments", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    ("", "v1", "ResourceQuota", "resourcequotas", true),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
];
