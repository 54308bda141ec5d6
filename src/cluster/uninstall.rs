//! What `uninstall` reads and writes: Flux's custom resources of every `*.toolkit.fluxcd.io`
//! CRD, the controllers' objects by Flux's labels, the CRDs and the Namespace.

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;

use super::install::PRUNED_KINDS;
use super::{Cluster, Error};
use crate::flux::{self, Kind, ObjectRef};

/// The group suffix of every Flux CRD.
pub const FLUX_GROUP_SUFFIX: &str = ".toolkit.fluxcd.io";

/// What the cluster holds of Flux, as `uninstall` reads it.
#[derive(Debug, Default)]
pub struct Removal {
    /// Every Flux custom resource, with its finalizers.
    pub resources: Vec<(ObjectRef, Vec<String>)>,
    /// The controllers' objects (Flux's labels, in the kinds of its `install.yaml`).
    pub controllers: Vec<ObjectRef>,
    /// The names of the Flux CRDs.
    pub crds: Vec<String>,
    /// `None`: no Namespace `flux-system`; `Some(true)`: it is being deleted.
    pub namespace_terminating: Option<bool>,
    /// The Secret `flux-system/flux-system`, as JSON.
    pub secret: Option<serde_json::Value>,
}

fn api_resource(o: &ObjectRef) -> ApiResource {
    let (group, version) = o
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", o.api_version.as_str()));
    ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: o.api_version.clone(),
        kind: o.kind.clone(),
        plural: o.plural.clone(),
    }
}

impl Cluster {
    fn dynamic(&self, o: &ObjectRef) -> Api<DynamicObject> {
        let ar = api_resource(o);
        match &o.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Reads everything `uninstall` may remove.
    pub async fn read_removal(&self) -> Result<Removal, Error> {
        let mut removal = Removal::default();
        let crds = self
            .api(Kind::CustomResourceDefinition, None)
            .list(&ListParams::default())
            .await
            .map_err(|e| self.unreachable_or("listing the CRDs", e))?;
        let mut kinds = Vec::new();
        for crd in crds.items {
            let spec = &crd.data["spec"];
            let group = spec["group"].as_str().unwrap_or_default();
            if !group.ends_with(FLUX_GROUP_SUFFIX) {
                continue;
            }
            removal
                .crds
                .push(crd.metadata.name.clone().unwrap_or_default());
            // A CRD being deleted still lists its objects until they are gone.
            let versions = spec["versions"].as_array().cloned().unwrap_or_default();
            let version = versions
                .iter()
                .find(|v| v["storage"] == true)
                .or_else(|| versions.iter().find(|v| v["served"] == true))
                .and_then(|v| v["name"].as_str());
            let (Some(version), Some(kind), Some(plural)) = (
                version,
                spec["names"]["kind"].as_str(),
                spec["names"]["plural"].as_str(),
            ) else {
                continue;
            };
            kinds.push(ObjectRef {
                api_version: format!("{group}/{version}"),
                kind: kind.to_string(),
                plural: plural.to_string(),
                namespace: None,
                name: String::new(),
            });
        }
        for kind in kinds {
            let list = match self.dynamic(&kind).list(&ListParams::default()).await {
                Ok(list) => list,
                // The CRD went away (or is not served yet) between the two reads.
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => return Err(self.unreachable_or(&format!("listing {}s", kind.kind), e)),
            };
            for o in list.items {
                let object = ObjectRef {
                    namespace: o.metadata.namespace.clone(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                    ..kind.clone()
                };
                removal
                    .resources
                    .push((object, o.metadata.finalizers.clone().unwrap_or_default()));
            }
        }
        let selector = format!(
            "{}={},{}={}",
            flux::PART_OF_LABEL.0,
            flux::PART_OF_LABEL.1,
            flux::INSTANCE_LABEL.0,
            flux::INSTANCE_LABEL.1,
        );
        for (group, version, kind, plural, namespaced) in PRUNED_KINDS {
            let kind = ObjectRef {
                api_version: match group {
                    "" => version.to_string(),
                    g => format!("{g}/{version}"),
                },
                kind: kind.to_string(),
                plural: plural.to_string(),
                namespace: namespaced.then(|| flux::NAMESPACE.to_string()),
                name: String::new(),
            };
            let list = self
                .dynamic(&kind)
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| self.unreachable_or(&format!("listing Flux's {}s", kind.kind), e))?;
            for o in list.items {
                // An object already being deleted needs nothing more from this run.
                if o.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                removal.controllers.push(ObjectRef {
                    name: o.metadata.name.clone().unwrap_or_default(),
                    ..kind.clone()
                });
            }
        }
        let (namespace, secret) = tokio::join!(
            self.get(Kind::Namespace, None, flux::NAMESPACE),
            self.get(Kind::Secret, Some(flux::NAMESPACE), flux::NAME),
        );
        removal.namespace_terminating = namespace?.map(|n| n.metadata.deletion_timestamp.is_some());
        removal.secret = secret?.and_then(|s| serde_json::to_value(s).ok());
        Ok(removal)
    }

    /// Removes a Flux resource's finalizers and suspends it, in one write: a controller that
    /// adds its finalizer back before the deletion finds the object suspended, and a
    /// suspended object is not pruned when it is deleted.
    pub async fn strip_finalizers(&self, o: &ObjectRef) -> Result<(), Error> {
        let patch = json!({"metadata": {"finalizers": null}, "spec": {"suspend": true}});
        self.merge(o, &patch).await
    }

    async fn merge(&self, o: &ObjectRef, patch: &serde_json::Value) -> Result<(), Error> {
        match self
            .dynamic(o)
            .patch(&o.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.unreachable_or(&format!("updating {}", o.shown()), e)),
        }
    }

    /// Deletes an object (gone already is fine). A Flux resource that got a finalizer back
    /// after [`Cluster::strip_finalizers`] has it removed again, so that it goes at once.
    pub async fn delete_object(&self, o: &ObjectRef) -> Result<(), Error> {
        let api = self.dynamic(o);
        match api.delete(&o.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(self.unreachable_or(&format!("deleting {}", o.shown()), e)),
        }
        if o.api_version.contains(FLUX_GROUP_SUFFIX) {
            let left = api
                .get_opt(&o.name)
                .await
                .map_err(|e| self.unreachable_or(&format!("reading {}", o.shown()), e))?;
            if left.is_some_and(|l| l.metadata.finalizers.is_some_and(|f| !f.is_empty())) {
                self.merge(o, &json!({"metadata": {"finalizers": null}}))
                    .await?;
            }
        }
        Ok(())
    }
}

/// A cluster-scoped object of a known kind, as an [`ObjectRef`].
pub fn known(kind: Kind, namespace: Option<&str>, name: &str) -> ObjectRef {
    let (ar, _) = super::resource(kind);
    ObjectRef {
        api_version: ar.api_version,
        kind: ar.kind,
        plural: ar.plural,
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
    }
}
