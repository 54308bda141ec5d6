//! Stored versions migrated before Flux's CRDs are applied (SPEC §4a), as `flux migrate` does:
//! every object of a CRD that the new CRD would strand is rewritten at the storage version (read,
//! then written back unchanged with a PUT: the API server stores what it writes at the storage
//! version), then the CRD's `status.storedVersions` is set to that version. What to do is
//! [`crate::crd_versions`]'s decision; this module reads and writes.
//!
//! Every step is safe to cut short. The objects are rewritten in place, so an object done twice
//! is only written twice; `storedVersions` is set only after every object is rewritten; a bridge
//! CRD left live is what the next run starts from (its storage version is the new one, so no
//! second bridge is needed), and the new CRD replaces it when the manifests are applied.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{GroupVersionKind, TypeMeta};
use serde_json::Value;

use super::{Cluster, Error, FIELD_MANAGER};
use crate::crd_versions::{self, Migration};
use crate::flux::Kind;

/// Objects read per page while rewriting.
const PAGE: u32 = 250;
/// Conflicts on one object (another writer between the read and the PUT) before giving up.
const MAX_CONFLICTS: usize = 10;
/// How often discovery is asked whether the API server writes at the new storage version yet.
const DISCOVERY_POLL: Duration = Duration::from_millis(100);

/// A migration the manifests' CRDs need, and how many objects it rewrites (as counted now).
#[derive(Clone, Debug)]
pub struct Pending {
    pub migration: Migration,
    pub objects: usize,
}

/// Why the stored versions could not be migrated. Each message says what to do; the run can be
/// repeated and finishes what this one started.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the CRD `{name}` in the Flux manifests is not a valid CustomResourceDefinition")]
    NotACrd {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the API server refused to rewrite {kind} `{name}` at {version} while migrating it from {from}: {message}; fix or delete that object, then run `homelab-flux bootstrap` again, which finishes the migration"
    )]
    Refused {
        kind: String,
        name: String,
        version: String,
        from: String,
        message: String,
    },
    #[error(
        "{kind} `{name}` kept changing while it was rewritten at {version} ({MAX_CONFLICTS} conflicts in a row); run `homelab-flux bootstrap` again"
    )]
    Conflicts {
        kind: String,
        name: String,
        version: String,
    },
    #[error(
        "the API server did not start storing {kind} at {version} within {} s of the CRD `{crd}` changing; run `homelab-flux bootstrap` again (or with a longer `--timeout`)",
        after.as_secs()
    )]
    StorageNotSwitched {
        crd: String,
        kind: String,
        version: String,
        after: Duration,
    },
    #[error(
        "the CRD `{crd}` no longer stores at {version} (something else changed it meanwhile); run `homelab-flux bootstrap` again"
    )]
    StorageChanged { crd: String, version: String },
    #[error(
        "the CRD `{crd}` kept changing while its stored versions were set ({MAX_CONFLICTS} conflicts in a row); run `homelab-flux bootstrap` again"
    )]
    CrdConflicts { crd: String },
}

impl Cluster {
    /// The migrations the CRDs of `documents` (Flux's install manifests) need before they are
    /// applied: every live CRD whose `status.storedVersions` lists a version its new CRD drops,
    /// with its objects counted (read only; what `--dry-run` shows).
    pub async fn pending_migrations(&self, documents: &[Value]) -> Result<Vec<Pending>, Error> {
        let mut pending = Vec::new();
        for (migration, served) in self.migrations(documents).await? {
            let objects = self.count(&migration, &served).await?;
            pending.push(Pending { migration, objects });
        }
        Ok(pending)
    }

    /// The migrations of [`Cluster::pending_migrations`], uncounted, each with a version the
    /// live CRD serves (its storage version, unless that is not served).
    pub(super) async fn migrations(
        &self,
        documents: &[Value],
    ) -> Result<Vec<(Migration, String)>, Error> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut migrations = Vec::new();
        for doc in documents
            .iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
        {
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            let new: CustomResourceDefinition =
                serde_json::from_value(doc.clone()).map_err(|source| MigrateError::NotACrd {
                    name: name.to_string(),
                    source,
                })?;
            let Some(live) = api
                .get_opt(name)
                .await
                .map_err(|e| self.unreachable_or(&format!("reading the CRD `{name}`"), e))?
            else {
                continue;
            };
            let Some(migration) = crd_versions::migration(&live, &new) else {
                continue;
            };
            let served = live.spec.versions.iter().filter(|v| v.served);
            let Some(served) = served
                .clone()
                .find(|v| v.storage)
                .or_else(|| served.clone().next())
                .map(|v| v.name.clone())
            else {
                // Nothing is served, so nothing can be read: the bridge serves the new version.
                migrations.push((migration.clone(), migration.to.clone()));
                continue;
            };
            migrations.push((migration, served));
        }
        Ok(migrations)
    }

    /// Carries out a migration: the bridge CRD first when there is one; once the API server
    /// writes at [`Migration::to`] (its discovery says so, within `timeout`), every object
    /// rewritten there; then `status.storedVersions` set to it. Returns how many objects were
    /// rewritten. The new CRD itself is applied afterwards with the rest of the manifests.
    pub async fn migrate(&self, m: &Migration, timeout: Duration) -> Result<usize, Error> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        if let Some(bridge) = &m.bridge {
            tracing::debug!(
                "the CRD `{}` stores at {}, which the new CRD drops: applying it with {} as the storage version first",
                m.crd,
                m.dropped.join(", "),
                m.to
            );
            crds.patch(
                &m.crd,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(bridge),
            )
            .await
            .map_err(|e| self.unreachable_or(&format!("applying the CRD `{}`", m.crd), e))?;
        }
        self.wait_storage_version(m, timeout).await?;
        let rewritten = self.rewrite_all(m).await?;
        self.set_stored_versions(&crds, m).await?;
        Ok(rewritten)
    }

    /// Reads a Flux object at the storage version of its live CRD, for a cluster whose CRD does
    /// not serve the version homelab-flux reads (an old Flux). `None` when the CRD or the
    /// object is not there. Flux converts between its versions with strategy `None`: the fields
    /// homelab-flux compares are the same.
    pub(super) async fn get_at_stored_version(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<DynamicObject>, Error> {
        let (ar, _) = super::resource(kind);
        let crd_name = format!("{}.{}", ar.plural, ar.group);
        let what = || format!("reading {} `{name}`", kind.name());
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let Some(crd) = crds
            .get_opt(&crd_name)
            .await
            .map_err(|e| self.unreachable_or(&what(), e))?
        else {
            return Ok(None);
        };
        let Some(version) = crd.spec.versions.iter().find(|v| v.storage && v.served) else {
            return Ok(None);
        };
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&ar.group, &version.name, &ar.kind),
            &ar.plural,
        );
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        api.get_opt(name)
            .await
            .map_err(|e| self.unreachable_or(&what(), e))
    }

    fn resource(m: &Migration, version: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&m.group, version, &m.kind),
            &m.plural,
        )
    }

    /// How many objects of the CRD there are, in every namespace, listed at `version`.
    async fn count(&self, m: &Migration, version: &str) -> Result<usize, Error> {
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &Self::resource(m, version));
        let mut params = ListParams::default().limit(PAGE);
        let mut count = 0;
        loop {
            let list = match api.list_metadata(&params).await {
                Ok(list) => list,
                // Not served at that version: nothing can be listed there.
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(count),
                Err(e) => return Err(self.unreachable_or(&format!("listing {}s", m.kind), e)),
            };
            count += list.items.len();
            match list.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(count),
            }
        }
    }

    /// Waits until discovery shows the `storageVersionHash` of [`Migration::to`] for the kind:
    /// the API server takes a CRD's new storage version a moment after the CRD changed, and an
    /// object rewritten before would be stored at the old version again.
    async fn wait_storage_version(&self, m: &Migration, timeout: Duration) -> Result<(), Error> {
        let want = crd_versions::storage_version_hash(&m.group, &m.to, &m.kind);
        let group_version = format!("{}/{}", m.group, m.to);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let shown = match self.client.list_api_group_resources(&group_version).await {
                Ok(list) => list
                    .resources
                    .into_iter()
                    .find(|r| r.name == m.plural)
                    .and_then(|r| r.storage_version_hash),
                // Not served yet: the CRD's new version is not in discovery yet.
                Err(kube::Error::Api(s)) if s.code == 404 => None,
                Err(e) => {
                    return Err(self
                        .unreachable_or(&format!("reading the discovery of {group_version}"), e));
                }
            };
            if shown.as_deref() == Some(want.as_str()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MigrateError::StorageNotSwitched {
                    crd: m.crd.clone(),
                    kind: m.kind.clone(),
                    version: m.to.clone(),
                    after: timeout,
                }
                .into());
            }
            tokio::time::sleep(DISCOVERY_POLL).await;
        }
    }

    /// Rewrites every object at [`Migration::to`], page by page. A page token that expired
    /// (410 Gone) starts the list again; objects already done are not written twice.
    async fn rewrite_all(&self, m: &Migration) -> Result<usize, Error> {
        let resource = Self::resource(m, &m.to);
        let all: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let mut done: BTreeSet<(String, String)> = BTreeSet::new();
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let list = match all.list(&params).await {
                Ok(list) => list,
                Err(kube::Error::Api(s)) if s.code == 410 && params.continue_token.is_some() => {
                    params = ListParams::default().limit(PAGE);
                    continue;
                }
                Err(e) => return Err(self.unreachable_or(&format!("listing {}s", m.kind), e)),
            };
            for object in list.items {
                let key = (
                    object.metadata.namespace.clone().unwrap_or_default(),
                    object.metadata.name.clone().unwrap_or_default(),
                );
                if done.contains(&key) {
                    continue;
                }
                self.rewrite(m, &resource, object).await?;
                done.insert(key);
            }
            match list.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(done.len()),
            }
        }
    }

    /// Writes one object back as read (a PUT with its resourceVersion), its managed fields
    /// moved off the dropped versions; on a conflict it is read again. An object deleted
    /// meanwhile has nothing left to migrate.
    async fn rewrite(
        &self,
        m: &Migration,
        resource: &ApiResource,
        mut object: DynamicObject,
    ) -> Result<(), Error> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        let shown = match object.metadata.namespace.as_deref() {
            Some(ns) => format!("{ns}/{name}"),
            None => name.clone(),
        };
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_string()),
        };
        for _ in 0..MAX_CONFLICTS {
            object.types = Some(TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            });
            if let Some(entries) = object.metadata.managed_fields.as_mut() {
                crd_versions::retarget_managed_fields(entries, &m.group, &m.kept, &m.to);
            }
            match api.replace(&name, &params, &object).await {
                Ok(_) => {
                    tracing::trace!("rewrote {} `{shown}` at {}", m.kind, m.to);
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    match api.get_opt(&name).await.map_err(|e| {
                        self.unreachable_or(&format!("reading {} `{shown}`", m.kind), e)
                    })? {
                        Some(again) => object = again,
                        None => return Ok(()),
                    }
                }
                Err(kube::Error::Api(s)) => {
                    return Err(MigrateError::Refused {
                        kind: m.kind.clone(),
                        name: shown,
                        version: m.to.clone(),
                        from: m.dropped.join(", "),
                        message: s.message,
                    }
                    .into());
                }
                Err(e) => {
                    return Err(self.unreachable_or(&format!("rewriting {} `{shown}`", m.kind), e));
                }
            }
        }
        Err(MigrateError::Conflicts {
            kind: m.kind.clone(),
            name: shown,
            version: m.to.clone(),
        }
        .into())
    }

    /// Sets `status.storedVersions` to [`Migration::to`] alone, on the CRD as read now: still
    /// storing there (else another writer changed it, and the next run decides again), and with
    /// its resourceVersion as the precondition, so that a CRD changed in between is not patched.
    async fn set_stored_versions(
        &self,
        crds: &Api<CustomResourceDefinition>,
        m: &Migration,
    ) -> Result<(), Error> {
        let reading = || format!("reading the CRD `{}`", m.crd);
        for _ in 0..MAX_CONFLICTS {
            let live = crds
                .get(&m.crd)
                .await
                .map_err(|e| self.unreachable_or(&reading(), e))?;
            if !live
                .spec
                .versions
                .iter()
                .any(|v| v.storage && v.name == m.to)
            {
                return Err(MigrateError::StorageChanged {
                    crd: m.crd.clone(),
                    version: m.to.clone(),
                }
                .into());
            }
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": live.metadata.resource_version},
                "status": {"storedVersions": [m.to]},
            });
            match crds
                .patch_status(&m.crd, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    return Err(self.unreachable_or(
                        &format!("setting the stored versions of the CRD `{}`", m.crd),
                        e,
                    ));
                }
            }
        }
        Err(MigrateError::CrdConflicts { crd: m.crd.clone() }.into())
    }
}
