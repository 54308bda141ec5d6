//! Stored versions of a CRD, and what must happen before a new CRD may drop one (SPEC §4a).
//! Pure logic.
//!
//! The API server keeps, in a CRD's `status.storedVersions`, every version its objects may
//! still be stored at in etcd, and refuses a CRD whose `spec.versions` lacks one of them ("must
//! appear in spec.versions"): an upgrade from an old Flux (objects stored at `v1beta2`) to CRDs
//! that only have `v1` fails there (fluxcd/flux2#5598, #5852). The way out is `flux migrate`'s:
//! rewrite every object at the storage version, then set `storedVersions` to it. This module
//! decides, from the live CRD and the new one, whether that is needed and at which version.
//!
//! When the live CRD *stores* at a version the new one drops (a cluster still on CRDs that store
//! `v1beta2`, going straight to CRDs that only have `v1`), its objects cannot be rewritten at a
//! version it does not serve. The API server accepts a CRD whose old versions stay listed as
//! served, non-storage versions beside the new ones: that "bridge" CRD makes the new storage
//! version current while every stored version is still listed, so the objects can be rewritten;
//! then the new CRD is applied as it is. (Flux's CRDs convert between versions with strategy
//! `None`: the API server relabels the object, the fields stay.)

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use sha2::{Digest, Sha256};

/// What one CRD's objects need before the new CRD is applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Migration {
    /// The CRD's name, `gitrepositories.source.toolkit.fluxcd.io`.
    pub crd: String,
    pub group: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// The stored versions the new CRD no longer has: what the objects are migrated from.
    pub dropped: Vec<String>,
    /// The version every object is rewritten at, which is the storage version meanwhile, and
    /// what `status.storedVersions` is set to afterwards.
    pub to: String,
    /// The versions of the new CRD: a managed-fields entry of any other version is moved to
    /// [`Migration::to`], since the API server cannot convert it once the version is gone.
    pub kept: Vec<String>,
    /// When the live CRD stores at a dropped version: the CRD to apply first, so that
    /// [`Migration::to`] becomes the storage version ([`bridge`]).
    pub bridge: Option<CustomResourceDefinition>,
}

/// The versions of a CRD's `spec.versions`, in order.
fn names(crd: &CustomResourceDefinition) -> Vec<String> {
    crd.spec.versions.iter().map(|v| v.name.clone()).collect()
}

fn storage(crd: &CustomResourceDefinition) -> Option<&CustomResourceDefinitionVersion> {
    crd.spec.versions.iter().find(|v| v.storage)
}

/// What the live CRD needs before `new` (the same CRD, from the manifests) can be applied:
/// `None` when every stored version is still in `new`'s `spec.versions`.
///
/// The objects are rewritten at the live storage version when `new` keeps it (and the live CRD
/// serves it); otherwise at `new`'s storage version, after a [`bridge`] CRD has made that the
/// storage version.
pub fn migration(
    live: &CustomResourceDefinition,
    new: &CustomResourceDefinition,
) -> Option<Migration> {
    let kept = names(new);
    let stored = live
        .status
        .as_ref()
        .and_then(|s| s.stored_versions.clone())
        .unwrap_or_default();
    let dropped: Vec<String> = stored.into_iter().filter(|v| !kept.contains(v)).collect();
    if dropped.is_empty() {
        return None;
    }
    let live_storage = storage(live).filter(|v| v.served && kept.contains(&v.name));
    let (to, bridge) = match live_storage {
        Some(v) => (v.name.clone(), None),
        None => (storage(new)?.name.clone(), Some(bridge(live, new))),
    };
    Some(Migration {
        crd: new.metadata.name.clone().unwrap_or_default(),
        group: new.spec.group.clone(),
        kind: new.spec.names.kind.clone(),
        plural: new.spec.names.plural.clone(),
        namespaced: new.spec.scope == "Namespaced",
        dropped,
        to,
        kept,
        bridge,
    })
}

/// `new` with every version of `live` that it lacks appended as a non-storage version, served as
/// it is served now: the API server accepts it (every stored version is listed), `new`'s storage
/// version becomes the one objects are written at, and clients of the old versions (the old
/// controllers, still running until their Deployments are replaced) keep working meanwhile.
pub fn bridge(
    live: &CustomResourceDefinition,
    new: &CustomResourceDefinition,
) -> CustomResourceDefinition {
    let mut bridge = new.clone();
    let kept = names(new);
    for v in live
        .spec
        .versions
        .iter()
        .filter(|v| !kept.contains(&v.name))
    {
        let mut v = v.clone();
        v.storage = false;
        bridge.spec.versions.push(v);
    }
    bridge
}

/// Moves the managed-fields entries of `group` whose version is not in `kept` to `to`; true when
/// one moved. Server-side apply converts every entry to the version of a request, and an entry
/// of a version the CRD no longer has makes it fail ("request to convert CR to an invalid
/// group/version"); the field paths of Flux's versions are the same, so only the label moves.
pub fn retarget_managed_fields(
    entries: &mut [ManagedFieldsEntry],
    group: &str,
    kept: &[String],
    to: &str,
) -> bool {
    let mut moved = false;
    for entry in entries {
        let Some(api_version) = entry.api_version.as_deref() else {
            continue;
        };
        let (g, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        if g == group && !kept.iter().any(|k| k == version) {
            entry.api_version = Some(format!("{group}/{to}"));
            moved = true;
        }
    }
    moved
}

/// The `storageVersionHash` the API server's discovery shows for a resource stored at
/// `group/version` as `kind`: the first 8 bytes of the SHA-256 of `group/version/kind`, in
/// base64. Once discovery shows it, the API server writes that resource at that version.
pub fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    use base64::Engine as _;
    let digest = Sha256::digest(format!("{group}/{version}/{kind}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CRD of `gitrepositories.source.toolkit.fluxcd.io` with `versions` as (name, served,
    /// storage) and `stored` as its `status.storedVersions`.
    fn crd(versions: &[(&str, bool, bool)], stored: &[&str]) -> CustomResourceDefinition {
        let versions: Vec<serde_json::Value> = versions
            .iter()
            .map(|(name, served, storage)| {
                serde_json::json!({
                    "name": name, "served": served, "storage": storage,
                    "schema": {"openAPIV3Schema": {"type": "object", "description": format!("{name} schema")}},
                    "subresources": {"status": {}},
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "gitrepositories.source.toolkit.fluxcd.io"},
            "spec": {
                "group": "source.toolkit.fluxcd.io",
                "names": {"kind": "GitRepository", "listKind": "GitRepositoryList", "plural": "gitrepositories", "singular": "gitrepository"},
                "scope": "Namespaced",
                "versions": versions,
            },
            "status": {"storedVersions": stored, "acceptedNames": {"kind": "GitRepository", "plural": "gitrepositories"}},
        }))
        .unwrap()
    }

    fn versions(crd: &CustomResourceDefinition) -> Vec<(String, bool, bool)> {
        crd.spec
            .versions
            .iter()
            .map(|v| (v.name.clone(), v.served, v.storage))
            .collect()
    }

    /// Flux 2.2's CRDs (storing v1, serving v1beta2) after objects were made under 0.41's
    /// (storing v1beta2): the objects are rewritten at v1, where the live CRD stores already.
    #[test]
    fn both_stored_versions_listed_rewrite_at_the_live_storage_version() {
        let live = crd(
            &[
                ("v1", true, true),
                ("v1beta1", true, false),
                ("v1beta2", true, false),
            ],
            &["v1beta2", "v1"],
        );
        let new = crd(&[("v1", true, true)], &[]);
        let m = migration(&live, &new).unwrap();
        assert_eq!(m.crd, "gitrepositories.source.toolkit.fluxcd.io");
        assert_eq!(
            (
                m.group.as_str(),
                m.kind.as_str(),
                m.plural.as_str(),
                m.namespaced
            ),
            (
                "source.toolkit.fluxcd.io",
                "GitRepository",
                "gitrepositories",
                true
            )
        );
        assert_eq!(m.dropped, ["v1beta2"]);
        assert_eq!(m.to, "v1");
        assert_eq!(m.kept, ["v1"]);
        assert_eq!(m.bridge, None);
    }

    /// Straight from CRDs that store v1beta2 to CRDs that only have v1: a bridge first, with
    /// v1 as storage and the old versions served as before, their schemas kept.
    #[test]
    fn a_dropped_storage_version_needs_a_bridge() {
        let live = crd(
            &[("v1beta1", true, false), ("v1beta2", true, true)],
            &["v1beta2"],
        );
        let new = crd(&[("v1", true, true)], &[]);
        let m = migration(&live, &new).unwrap();
        assert_eq!(m.dropped, ["v1beta2"]);
        assert_eq!(m.to, "v1");
        let bridge = m.bridge.unwrap();
        assert_eq!(
            versions(&bridge),
            [
                ("v1".to_string(), true, true),
                ("v1beta1".to_string(), true, false),
                ("v1beta2".to_string(), true, false),
            ]
        );
        let schema = |v: &CustomResourceDefinitionVersion| {
            v.schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap()
                .description
                .clone()
        };
        assert_eq!(
            schema(&bridge.spec.versions[2]),
            Some("v1beta2 schema".to_string())
        );
        assert_eq!(bridge.metadata, new.metadata);
        // The bridge needs no second bridge: once it is live, the objects are rewritten at v1.
        let mut live_bridge = bridge.clone();
        live_bridge.status = live.status.clone();
        live_bridge
            .status
            .as_mut()
            .unwrap()
            .stored_versions
            .as_mut()
            .unwrap()
            .push("v1".to_string());
        let next = migration(&live_bridge, &new).unwrap();
        assert_eq!((next.to.as_str(), next.bridge), ("v1", None));
        assert_eq!(next.dropped, ["v1beta2"]);
    }

    /// A live storage version that the new CRD keeps but the live CRD does not serve cannot be
    /// listed at: the bridge again.
    #[test]
    fn an_unserved_storage_version_is_bridged_too() {
        let live = crd(
            &[("v1", false, true), ("v1beta2", true, false)],
            &["v1beta2", "v1"],
        );
        let new = crd(&[("v1", true, true)], &[]);
        let m = migration(&live, &new).unwrap();
        assert_eq!(m.to, "v1");
        assert!(m.bridge.is_some());
    }

    #[test]
    fn nothing_to_do_when_every_stored_version_stays() {
        let new = crd(&[("v1", true, true)], &[]);
        for live in [
            crd(&[("v1", true, true)], &["v1"]),
            crd(&[("v1", true, true), ("v1beta2", true, false)], &["v1"]),
            // An interrupted run set storedVersions and stopped before the new CRD.
            crd(&[("v1", true, true), ("v1beta2", true, false)], &["v1"]),
            // A status the API server has not written yet.
            crd(&[("v1", true, true)], &[]),
        ] {
            assert_eq!(migration(&live, &new), None);
        }
        // The new CRD keeps v1beta2 beside v1: both may stay stored.
        let both = crd(&[("v1", true, true), ("v1beta2", true, false)], &[]);
        let live = crd(
            &[("v1", true, true), ("v1beta2", true, false)],
            &["v1beta2", "v1"],
        );
        assert_eq!(migration(&live, &both), None);
    }

    /// Only what the new CRD drops is migrated from; a kept old version stays stored.
    #[test]
    fn only_dropped_versions_are_migrated_from() {
        let live = crd(
            &[("v1beta1", true, false), ("v1beta2", true, true)],
            &["v1beta1", "v1beta2"],
        );
        let new = crd(&[("v1", true, true), ("v1beta2", true, false)], &[]);
        let m = migration(&live, &new).unwrap();
        assert_eq!(m.dropped, ["v1beta1"]);
        assert_eq!((m.to.as_str(), m.bridge.is_none()), ("v1beta2", true));
    }

    #[test]
    fn managed_fields_of_dropped_versions_move_to_the_new_one() {
        let entry = |manager: &str, api_version: &str| ManagedFieldsEntry {
            manager: Some(manager.to_string()),
            api_version: Some(api_version.to_string()),
            operation: Some("Apply".to_string()),
            ..Default::default()
        };
        let mut entries = vec![
            entry("flux", "source.toolkit.fluxcd.io/v1beta2"),
            entry("homelab-flux", "source.toolkit.fluxcd.io/v1"),
            entry("other", "example.com/v1beta2"),
        ];
        let kept = ["v1".to_string()];
        assert!(retarget_managed_fields(
            &mut entries,
            "source.toolkit.fluxcd.io",
            &kept,
            "v1"
        ));
        let versions: Vec<_> = entries
            .iter()
            .map(|e| e.api_version.clone().unwrap())
            .collect();
        assert_eq!(
            versions,
            [
                "source.toolkit.fluxcd.io/v1",
                "source.toolkit.fluxcd.io/v1",
                "example.com/v1beta2"
            ]
        );
        assert!(!retarget_managed_fields(
            &mut entries,
            "source.toolkit.fluxcd.io",
            &kept,
            "v1"
        ));
    }

    /// The values Kubernetes' own tests pin (`storageversionhashdata`) for two core kinds.
    #[test]
    fn storage_version_hashes_match_the_api_servers() {
        assert_eq!(storage_version_hash("", "v1", "ConfigMap"), "qFsyl6wFWjQ=");
        assert_eq!(storage_version_hash("", "v1", "Pod"), "xPOwRZ+Yhw8=");
    }
}
