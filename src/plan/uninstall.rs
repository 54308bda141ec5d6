//! What `uninstall` removes, decided from what was read (SPEC §4b). Pure: the command reads the
//! cluster and GitHub, this module decides, the command carries it out or shows it.
//!
//! The order of the writes is the order of [`Plan`]'s fields: every stop leaves a state that the
//! next run reads and finishes. The deploy key goes before the Namespace, because the Namespace
//! holds the Secret that says which key is this cluster's: once it is gone, no later run could
//! tell.

use serde::Serialize;

use crate::facts::DeployKey;
pub use crate::flux::ObjectRef;

/// A Flux custom resource as it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FluxResource {
    pub object: ObjectRef,
    /// Its finalizers (a Flux controller's, which would prune what it applied).
    pub finalizers: Vec<String>,
}

/// What the cluster and GitHub hold, as read.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// Every object of every kind of the `*.toolkit.fluxcd.io` CRDs, in every namespace.
    pub resources: Vec<FluxResource>,
    /// The controllers' objects: labelled as part of Flux, instance `flux-system`.
    pub controllers: Vec<ObjectRef>,
    /// The names of the `*.toolkit.fluxcd.io` CRDs.
    pub crds: Vec<String>,
    /// The Namespace `flux-system`: `None` when absent, `Some(true)` when it is being deleted.
    pub namespace_terminating: Option<bool>,
    /// The public key in the Secret `flux-system/flux-system`, when there is one.
    pub public_key: Option<String>,
    /// GitHub's deploy keys of the repository; `None` when they were not read (see [`NoGitHub`]).
    pub keys: Option<Vec<DeployKey>>,
    /// Why GitHub was not asked, when it was not.
    pub no_github: Option<NoGitHub>,
}

/// Why the deploy key is not deleted by the tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoGitHub {
    /// No configuration could be loaded.
    NoConfig,
    /// The configuration has no token.
    NoToken,
    /// `auth: token`: no deploy key was made (the token is in the Secret).
    TokenAuth,
    /// `auth: github-app` without a token: no deploy key was made; one left from before cannot
    /// be deleted with the App's read-only installation.
    AppAuth,
}

/// What becomes of the deploy key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "key", rename_all = "snake_case")]
pub enum KeyPlan {
    /// No deploy key in the cluster: nothing to do on GitHub.
    None,
    /// This cluster's key, registered on GitHub: deleted.
    Delete {
        id: u64,
        title: String,
        fingerprint: String,
    },
    /// The key in the cluster is not registered on GitHub (any more): nothing to do.
    NotRegistered { fingerprint: String },
    /// To be deleted by hand on GitHub.
    ByHand {
        fingerprint: String,
        reason: NoGitHub,
    },
}

/// Everything `uninstall` does, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The Flux resources whose finalizers are removed (those that have any).
    pub finalizers: Vec<ObjectRef>,
    /// Every Flux resource, deleted.
    pub resources: Vec<ObjectRef>,
    /// The controllers' objects, deleted.
    pub controllers: Vec<ObjectRef>,
    /// The deploy key.
    pub key: KeyPlan,
    /// The bootstrap's Secrets in `flux-system` deleted, with `--keep-namespace` only (else the
    /// Namespace takes them).
    pub secrets: Vec<String>,
    /// The CRDs, deleted (the API server deletes what is left of their objects).
    pub crds: Vec<String>,
    /// The Namespace `flux-system`, deleted.
    pub namespace: bool,
}

impl Plan {
    /// True when there is nothing to write: a second run, or a cluster without Flux. A key to
    /// delete by hand is a note, not a write.
    pub fn is_empty(&self) -> bool {
        self.finalizers.is_empty()
            && self.resources.is_empty()
            && self.controllers.is_empty()
            && !matches!(self.key, KeyPlan::Delete { .. })
            && self.secrets.is_empty()
            && self.crds.is_empty()
            && !self.namespace
    }
}

/// Decides what `uninstall` does. `fingerprint` gives a public key's `SHA256:` fingerprint.
pub fn plan(found: &Found, keep_namespace: bool, fingerprint: impl Fn(&str) -> String) -> Plan {
    let key = match (&found.public_key, &found.keys) {
        (None, _) => KeyPlan::None,
        (Some(public), Some(keys)) => match keys.iter().find(|k| k.matches_public_key(public)) {
            Some(k) => KeyPlan::Delete {
                id: k.id,
                title: k.title.clone(),
                fingerprint: fingerprint(public),
            },
            None => KeyPlan::NotRegistered {
                fingerprint: fingerprint(public),
            },
        },
        (Some(public), None) => KeyPlan::ByHand {
            fingerprint: fingerprint(public),
            reason: found.no_github.unwrap_or(NoGitHub::NoToken),
        },
    };
    // A Namespace being deleted goes with its Secrets: nothing more to write there.
    let namespace_lives = found.namespace_terminating == Some(false);
    let secrets = match (keep_namespace, namespace_lives, &found.public_key) {
        (true, true, Some(_)) => vec![crate::flux::NAME.to_string()],
        _ => Vec::new(),
    };
    Plan {
        finalizers: found
            .resources
            .iter()
            .filter(|r| !r.finalizers.is_empty())
            .map(|r| r.object.clone())
            .collect(),
        resources: found.resources.iter().map(|r| r.object.clone()).collect(),
        controllers: found.controllers.clone(),
        key,
        secrets,
        crds: found.crds.clone(),
        namespace: !keep_namespace && namespace_lives,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIThisCluster";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherCluster";

    fn object(kind: &str, ns: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "v1".to_string(),
            kind: kind.to_string(),
            plural: format!("{}s", kind.to_lowercase()),
            namespace: ns.map(str::to_string),
            name: name.to_string(),
        }
    }

    fn key(id: u64, key: &str, title: &str) -> DeployKey {
        DeployKey {
            id,
            key: key.to_string(),
            title: title.to_string(),
            read_only: true,
            created_at: None,
            last_used: None,
        }
    }

    fn bootstrapped() -> Found {
        Found {
            resources: vec![
                FluxResource {
                    object: object("Kustomization", Some("flux-system"), "flux-system"),
                    finalizers: vec!["finalizers.fluxcd.io".to_string()],
                },
                FluxResource {
                    object: object("GitRepository", Some("apps"), "other"),
                    finalizers: vec![],
                },
            ],
            controllers: vec![object(
                "Deployment",
                Some("flux-system"),
                "kustomize-controller",
            )],
            crds: vec!["kustomizations.kustomize.toolkit.fluxcd.io".to_string()],
            namespace_terminating: Some(false),
            public_key: Some(format!("{PUBLIC} flux")),
            keys: Some(vec![
                key(1, OTHER, "other cluster"),
                key(2, PUBLIC, "this one"),
            ]),
            no_github: None,
        }
    }

    fn fp(public: &str) -> String {
        format!("fp:{}", public.len())
    }

    #[test]
    fn a_bootstrapped_cluster_loses_everything_and_only_its_own_key() {
        let p = plan(&bootstrapped(), false, fp);
        assert_eq!(p.finalizers.len(), 1, "only the resource with finalizers");
        assert_eq!(p.finalizers[0].name, "flux-system");
        assert_eq!(p.resources.len(), 2);
        assert_eq!(
            p.controllers[0].shown(),
            "Deployment flux-system/kustomize-controller"
        );
        assert_eq!(
            p.key,
            KeyPlan::Delete {
                id: 2,
                title: "this one".to_string(),
                fingerprint: fp(&format!("{PUBLIC} flux")),
            }
        );
        assert!(p.namespace);
        assert!(p.secrets.is_empty(), "the Namespace takes the Secret");
        assert!(!p.is_empty());
    }

    #[test]
    fn keep_namespace_deletes_the_secret_instead() {
        let p = plan(&bootstrapped(), true, fp);
        assert!(!p.namespace);
        assert_eq!(p.secrets, ["flux-system"]);
    }

    #[test]
    fn without_a_token_the_key_is_named_for_deletion_by_hand() {
        let found = Found {
            keys: None,
            no_github: Some(NoGitHub::NoConfig),
            ..bootstrapped()
        };
        let p = plan(&found, false, fp);
        assert!(matches!(
            p.key,
            KeyPlan::ByHand {
                reason: NoGitHub::NoConfig,
                ..
            }
        ));
    }

    #[test]
    fn a_key_of_another_cluster_is_never_chosen() {
        let found = Found {
            keys: Some(vec![key(1, OTHER, "other cluster")]),
            ..bootstrapped()
        };
        assert!(matches!(
            plan(&found, false, fp).key,
            KeyPlan::NotRegistered { .. }
        ));
    }

    #[test]
    fn a_cluster_without_flux_or_a_second_run_has_nothing_to_remove() {
        assert!(plan(&Found::default(), false, fp).is_empty());
        // What an interrupted or finished run leaves: the Namespace being deleted, with its
        // Secret, whose key is no longer on GitHub.
        let left = Found {
            namespace_terminating: Some(true),
            public_key: Some(PUBLIC.to_string()),
            keys: Some(vec![key(1, OTHER, "other cluster")]),
            ..Found::default()
        };
        let p = plan(&left, false, fp);
        assert!(p.is_empty(), "{p:?}");
        // Without a token, the key by hand is a note only.
        let left = Found { keys: None, ..left };
        assert!(plan(&left, false, fp).is_empty());
    }

    #[test]
    fn a_run_cut_short_after_the_key_finishes_the_rest() {
        let found = Found {
            resources: vec![],
            controllers: vec![],
            keys: Some(vec![key(1, OTHER, "other cluster")]),
            ..bootstrapped()
        };
        let p = plan(&found, false, fp);
        assert!(matches!(p.key, KeyPlan::NotRegistered { .. }));
        assert_eq!(p.crds.len(), 1);
        assert!(p.namespace);
    }
}
