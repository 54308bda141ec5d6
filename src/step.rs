//! The progress of `bootstrap` as events. The command yields them; [`crate::output`] renders
//! them as step lines or as JSON lines. Pure data: no event formats itself.

use serde::Serialize;

use crate::plan::{Change, Object, Takeover};

/// One thing `bootstrap` did, or (in a dry run) would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The configuration and GitHub's answers are fine.
    Checked {
        repo: String,
    },
    /// The API server answered.
    Connected {
        context: String,
        kubernetes: String,
    },
    /// The install manifests were read.
    ManifestsRead {
        source: String,
        sha256: String,
        pinned: bool,
    },
    /// The Flux release changes: an upgrade, or a downgrade with `--force`.
    FluxRelease {
        from: crate::flux::Version,
        to: crate::flux::Version,
    },
    /// The release wanted runs, but these controllers are not rolled out: the manifests are
    /// applied again.
    FluxRepair {
        version: crate::flux::Version,
        names: Vec<String>,
        /// The manifests are applied again (`--flux-manifests` given); else the rollout is
        /// only waited for.
        reapply: bool,
    },
    /// Kubernetes is newer than the Flux release is tested with: a warning.
    KubernetesUntested {
        kubernetes: crate::flux::Version,
        flux: crate::flux::Version,
        tested: String,
    },
    /// The objects of a Flux kind rewritten at the CRD's storage version, and its
    /// `storedVersions` set to it, so that the new CRD may drop the versions they were stored
    /// at (SPEC §4a).
    Migrated {
        kind: String,
        objects: usize,
        from: Vec<String>,
        to: String,
    },
    /// Objects of the old release that the new one dropped, deleted.
    Pruned {
        names: Vec<String>,
    },
    /// Flux's install manifests were applied.
    Installed {
        source: String,
        objects: usize,
    },
    /// An object was applied (or found as wanted).
    Applied {
        kind: &'static str,
        name: String,
        #[serde(flatten)]
        change: Change,
    },
    /// Dry run: the Secret would hold a deploy key not made yet.
    SecretWithNewKey {
        name: String,
    },
    /// `--force`: the Secret was deleted, to be written for the new repository.
    SecretReplaced {
        name: String,
    },
    /// `--force` took over a Kustomization whose `prune: true` cleans up after the old one.
    TakeoverNote {
        name: String,
        what: Takeover,
    },
    /// Another run of this cluster held the Lease.
    LeaseHeld {
        name: String,
        holder: String,
    },
    /// ... and has let it go.
    LeaseFree,
    /// The key in the cluster's Secret is still registered on GitHub.
    KeyKept {
        fingerprint: String,
    },
    /// Dry run: a new deploy key would be made.
    KeyToCreate {
        title: String,
    },
    KeyCreated {
        title: String,
        fingerprint: String,
    },
    /// The new key opened the repository over SSH; the branch's head there.
    KeyProved {
        branch: String,
        commit: String,
    },
    /// The branch's head from the API (`token`: read with the token, `auth: token`).
    BranchHead {
        branch: String,
        commit: String,
        token: bool,
    },
    StaleKeyDeleted {
        title: String,
        id: u64,
    },
    /// GitHub did not delete a stale key (the run goes on; it ends with exit 1).
    StaleKeyLeft {
        title: String,
        id: u64,
        reason: String,
    },
    /// `auth: github-app` without a token: this cluster's old deploy key cannot be looked up,
    /// so it is named for the user to delete.
    OldKeyUnlisted {
        title: String,
        repo: String,
    },
    /// Dry run: a stale key would be deleted.
    StaleKeyToDelete {
        title: String,
        id: u64,
    },
    /// Nothing was written and Flux is Ready at the commit already.
    Synced {
        commit: String,
    },
    /// Waiting for a controller's Deployment to roll out (`rollout` `None` while it is not
    /// there yet).
    RollingOut {
        name: String,
        rollout: Option<crate::health::Rollout>,
    },
    /// Every controller Deployment of the manifests is rolled out.
    RolledOut {
        names: Vec<String>,
    },
    /// Waiting: what the object waits for, and its Ready condition as the controller reports
    /// it (the `Stalled` condition when it stalled).
    Waiting {
        kind: &'static str,
        name: String,
        /// The condition, once the controller has written one.
        condition: Option<crate::flux::Condition>,
        #[serde(flatten)]
        state: crate::health::WaitState,
    },
    /// The object is Ready at `commit`; `moved_from` the proven commit when a newer head
    /// landed while bootstrap waited.
    Ready {
        kind: &'static str,
        name: String,
        branch: String,
        commit: String,
        moved_from: Option<String>,
    },
    /// `uninstall`: what it removes, in order, one line each.
    ToRemove {
        what: Vec<String>,
    },
    /// `uninstall`: nothing of Flux is left in the cluster, nor this cluster's key on GitHub.
    NothingToRemove,
    /// `uninstall`: the finalizers of these Flux resources were removed (and each suspended).
    FinalizersRemoved {
        names: Vec<String>,
    },
    /// `uninstall`: objects deleted (`what`: which part of Flux they are).
    Deleted {
        what: &'static str,
        names: Vec<String>,
    },
    /// `uninstall`: this cluster's deploy key was deleted on GitHub.
    KeyDeleted {
        title: String,
        id: u64,
        fingerprint: String,
    },
    /// `uninstall`: the key in the cluster is not registered on GitHub.
    KeyNotRegistered {
        fingerprint: String,
    },
    /// `uninstall`: the deploy key is to be deleted on GitHub by hand.
    KeyByHand {
        fingerprint: String,
        reason: crate::plan::uninstall::NoGitHub,
    },
}

impl Step {
    /// An object applied (or found as wanted), as the plan decided it.
    pub fn applied(object: &Object) -> Step {
        Step::Applied {
            kind: object.kind.name(),
            name: object.name(),
            change: object.change.clone(),
        }
    }

    /// A migration of stored versions done (or, in a dry run, to do) on `objects` objects.
    pub fn migrated(migration: &crate::crd_versions::Migration, objects: usize) -> Step {
        Step::Migrated {
            kind: migration.kind.clone(),
            objects,
            from: migration.dropped.clone(),
            to: migration.to.clone(),
        }
    }

    /// Live progress, rewritten in place on a terminal, rather than a finished step.
    pub fn is_progress(&self) -> bool {
        matches!(
            self,
            Step::Waiting { .. } | Step::LeaseHeld { .. } | Step::RollingOut { .. }
        )
    }
}

/// The first twelve characters of a commit, as step lines show it.
pub fn short(sha: &str) -> &str {
    // By characters' bytes only where they fall: a revision read from the cluster is not checked.
    sha.get(..12).unwrap_or(sha)
}
