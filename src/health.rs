//! Health, as `flux check` sees it, and the states a Flux object can be left in (SPEC §4a, §5).
//!
//! Pure readings of objects the cluster returned: whether a controller's Deployment is rolled
//! out and, where it is not, what its Pods say; and what a GitRepository or Kustomization that
//! is not (yet) synced is waiting for: a suspension, a stall, a dependency, a newer revision.
//! `bootstrap`'s wait and `status` word the same states, from here.

use serde::Serialize;
use serde_json::Value;

use crate::flux::{self, Condition, Observed};

/// A controller's Deployment, as `kubectl rollout status` reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// `namespace/name`.
    pub name: String,
    /// `spec.replicas` (1 when unset, as the API server defaults it).
    pub replicas: i64,
    /// Pods at the current template.
    pub updated: i64,
    /// Pods available (ready for `minReadySeconds`).
    pub available: i64,
    /// The Deployment's release label, `app.kubernetes.io/version`.
    pub version: Option<String>,
    /// Rolled out: the controller has seen the current spec and every replica is updated and
    /// available, with no Pod of an older template left.
    pub rolled_out: bool,
    /// Where it is not: the condition that says why (`Available` false, `Progressing` with
    /// `ProgressDeadlineExceeded`), as `reason: message`.
    pub reason: Option<String>,
}

impl Rollout {
    /// How far it is: `N of M replicas available`, and the condition's reason when there is one.
    pub fn availability(&self) -> String {
        let mut out = format!("{} of {} replicas available", self.available, self.replicas);
        if let Some(why) = &self.reason {
            out.push_str(&format!(" ({why})"));
        }
        out
    }
}

/// Reads a Deployment's rollout from its spec and status.
pub fn rollout(deployment: &Value) -> Rollout {
    let meta = &deployment["metadata"];
    let status = &deployment["status"];
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let generation = int(&meta["generation"]);
    let observed = int(&status["observedGeneration"]);
    let (updated, available) = (
        int(&status["updatedReplicas"]),
        int(&status["availableReplicas"]),
    );
    let total = int(&status["replicas"]);
    let rolled_out =
        observed >= generation && updated >= replicas && available >= replicas && total <= updated;
    let conditions: Vec<Condition> =
        serde_json::from_value(status["conditions"].clone()).unwrap_or_default();
    let failing = |type_: &str, status: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
    };
    let reason = match rolled_out {
        true => None,
        false => failing("Progressing", "False")
            .or_else(|| failing("Available", "False"))
            .or_else(|| failing("ReplicaFailure", "True"))
            .map(|c| format!("{}: {}", c.reason, c.message))
            .or_else(|| {
                Some(match observed < generation {
                    true => "the Deployment controller has not seen the new spec yet".to_string(),
                    false => format!("{updated} of {replicas} replicas updated"),
                })
            }),
    };
    Rollout {
        name: format!(
            "{}/{}",
            meta["namespace"].as_str().unwrap_or_default(),
            meta["name"].as_str().unwrap_or_default()
        ),
        replicas,
        updated,
        available,
        version: meta["labels"][flux::VERSION_LABEL]
            .as_str()
            .map(str::to_string),
        rolled_out,
        reason,
    }
}

/// Why a Pod does not run: a container waiting (`ImagePullBackOff`, `CrashLoopBackOff`, …) or
/// the Pod not scheduled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodProblem {
    pub pod: String,
    pub reason: String,
    pub message: String,
}

/// What a Pod says about why it does not run; empty when it runs, or has not said yet.
pub fn pod_problems(pod: &Value) -> Vec<PodProblem> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let mut out = Vec::new();
    let status = &pod["status"];
    for list in ["initContainerStatuses", "containerStatuses"] {
        for c in status[list].as_array().into_iter().flatten() {
            let waiting = &c["state"]["waiting"];
            let Some(reason) = waiting["reason"].as_str() else {
                continue;
            };
            // A container being created says nothing yet.
            if matches!(reason, "ContainerCreating" | "PodInitializing") {
                continue;
            }
            out.push(PodProblem {
                pod: name.to_string(),
                reason: reason.to_string(),
                message: waiting["message"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    if out.is_empty() {
        let conditions: Vec<Condition> =
            serde_json::from_value(status["conditions"].clone()).unwrap_or_default();
        if let Some(c) = conditions
            .iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        {
            out.push(PodProblem {
                pod: name.to_string(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            });
        }
    }
    out
}

/// What a GitRepository or Kustomization that is not synced yet is waiting for: its state and
/// the Ready condition it shows (when it has one). Each state a person can leave Flux in is
/// named, so that no message calls an object "not Ready" while quoting a condition that says it
/// succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub state: WaitState,
    pub condition: Option<Condition>,
}

/// The states of [`Waiting`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WaitState {
    /// No Ready condition yet, or one for an older generation of the spec.
    Pending,
    /// Not Ready; the controller may still get it there (progressing, or failing and retrying).
    NotReady,
    /// `spec.suspend: true` (`flux suspend`): nothing changes until it is resumed.
    Suspended,
    /// `Stalled`: the controller gave up until the spec changes.
    Stalled,
    /// A Kustomization waiting on one of its `dependsOn`.
    Dependency,
    /// Ready, at a revision that is not the one wanted (for the Kustomization: not the
    /// GitRepository's yet).
    Behind { at: String, wanted: Option<String> },
}

impl WaitState {
    /// A state that does not change by itself: the wait ends at once, with what to do.
    pub fn is_final(&self) -> bool {
        matches!(self, WaitState::Suspended | WaitState::Stalled)
    }
}

/// Reads what an object that is not Ready at an accepted commit is waiting for. `wanted` is the
/// revision it should reach, when known (the GitRepository's, for the Kustomization).
pub fn waiting(object: &Value, wanted: Option<&str>) -> Waiting {
    let observed = Observed::from_object(object);
    let ready = observed.condition("Ready").cloned();
    let stalled = observed.condition("Stalled").filter(|c| c.is_true());
    let current =
        observed.generation.is_none() || observed.status.observed_generation == observed.generation;
    let (state, condition) = if object["spec"]["suspend"].as_bool() == Some(true) {
        (WaitState::Suspended, ready)
    } else if let Some(c) = stalled {
        (WaitState::Stalled, Some(c.clone()))
    } else if let Some(at) = observed.ready_commit()
        && wanted.is_none_or(|w| flux::revision_sha(w) != at)
    {
        let state = WaitState::Behind {
            at: at.to_string(),
            wanted: wanted.map(|w| flux::revision_sha(w).to_string()),
        };
        (state, ready)
    } else if observed.is_ready() {
        // Ready at the revision wanted, but not yet after the reconcile asked for.
        (WaitState::Pending, ready)
    } else {
        let state = match &ready {
            Some(c) if c.reason == DEPENDENCY_NOT_READY => WaitState::Dependency,
            Some(c) if current && !c.is_true() => WaitState::NotReady,
            _ => WaitState::Pending,
        };
        (state, ready)
    };
    Waiting { state, condition }
}

/// The Ready reason of a Kustomization waiting on a `dependsOn` (kustomize-controller's
/// `meta.DependencyNotReadyReason`).
pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";

/// What to run to resume a suspended object, as the Flux CLI spells it.
pub fn resume_command(kind: flux::Kind) -> String {
    let what = match kind {
        flux::Kind::GitRepository => "source git",
        _ => "kustomization",
    };
    format!("flux resume {what} {} -n {}", flux::NAME, flux::NAMESPACE)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(generation: i64, status: Value) -> Value {
        json!({
            "metadata": {"namespace": "flux-system", "name": "source-controller", "generation": generation,
                         "labels": {"app.kubernetes.io/version": "v2.10.1"}},
            "spec": {"replicas": 1},
            "status": status,
        })
    }

    #[test]
    fn a_deployment_is_rolled_out_when_every_replica_is_updated_and_available() {
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        );
        let r = rollout(&d);
        assert!(r.rolled_out, "{r:?}");
        assert_eq!(r.reason, None);
        assert_eq!(r.version.as_deref(), Some("v2.10.1"));
        assert_eq!(r.name, "flux-system/source-controller");
        assert_eq!(r.availability(), "1 of 1 replicas available");
        let waiting = Rollout {
            available: 0,
            reason: Some("MinimumReplicasUnavailable: no Pod is ready".to_string()),
            ..r
        };
        assert_eq!(
            waiting.availability(),
            "0 of 1 replicas available (MinimumReplicasUnavailable: no Pod is ready)"
        );
    }

    #[test]
    fn a_deployment_mid_rollout_or_unseen_is_not_rolled_out_and_says_why() {
        // The controller has not seen generation 3.
        let r = rollout(&deployment(
            3,
            json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        ));
        assert!(!r.rolled_out);
        assert_eq!(
            r.reason.as_deref(),
            Some("the Deployment controller has not seen the new spec yet")
        );
        // An old Pod is still there beside the new one.
        let r = rollout(&deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}),
        ));
        assert!(!r.rolled_out);
        // Unavailable, with the Deployment's own condition.
        let r = rollout(&deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0,
                   "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                                   "message": "Deployment does not have minimum availability."}]}),
        ));
        assert!(!r.rolled_out);
        assert_eq!(
            r.reason.as_deref(),
            Some("MinimumReplicasUnavailable: Deployment does not have minimum availability.")
        );
        // No status at all: nothing rolled out.
        assert!(!rollout(&deployment(1, Value::Null)).rolled_out);
    }

    #[test]
    fn a_pod_says_why_it_does_not_run() {
        let pod = json!({
            "metadata": {"name": "source-controller-abc"},
            "status": {"containerStatuses": [
                {"name": "manager", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}},
            ]},
        });
        assert_eq!(
            pod_problems(&pod),
            [PodProblem {
                pod: "source-controller-abc".to_string(),
                reason: "ImagePullBackOff".to_string(),
                message: "Back-off pulling image".to_string(),
            }]
        );
        let creating = json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [
            {"state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert!(pod_problems(&creating).is_empty());
        let unscheduled = json!({"metadata": {"name": "p"}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available"}]}});
        assert_eq!(pod_problems(&unscheduled)[0].reason, "Unschedulable");
        let running = json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [
            {"state": {"running": {}}}]}});
        assert!(pod_problems(&running).is_empty());
    }

    fn object(spec: Value, generation: i64, status: Value) -> Value {
        json!({"metadata": {"generation": generation}, "spec": spec, "status": status})
    }

    fn ready(status: &str, reason: &str, message: &str) -> Value {
        json!({"type": "Ready", "status": status, "reason": reason, "message": message})
    }

    #[test]
    fn each_state_a_person_can_leave_flux_in_is_named() {
        let state = |o: Value, wanted: Option<&str>| waiting(&o, wanted).state;
        // Suspended wins over whatever the status says: it will not change by itself.
        let s = state(
            object(
                json!({"suspend": true}),
                1,
                json!({"observedGeneration": 1}),
            ),
            None,
        );
        assert_eq!(s, WaitState::Suspended);
        assert!(s.is_final());

        let stalled = json!({"observedGeneration": 1, "conditions": [
            {"type": "Stalled", "status": "True", "reason": "InvalidURL", "message": "bad url"},
            ready("False", "InvalidURL", "bad url")]});
        let w = waiting(&object(json!({}), 1, stalled), None);
        assert_eq!(w.state, WaitState::Stalled);
        assert_eq!(w.condition.unwrap().type_, "Stalled");
        assert!(WaitState::Stalled.is_final());

        let dep = json!({"observedGeneration": 1, "conditions": [
            ready("False", DEPENDENCY_NOT_READY, "dependency 'flux-system/infra' is not ready")]});
        let s = state(object(json!({}), 1, dep), None);
        assert_eq!(s, WaitState::Dependency);
        assert!(!s.is_final());

        // Ready, but at an older revision than the source's: named as such, not "not Ready".
        let behind = json!({"observedGeneration": 1, "lastAppliedRevision": "main@sha1:aaaa",
            "conditions": [ready("True", "ReconciliationSucceeded", "Applied revision: main@sha1:aaaa")]});
        assert_eq!(
            state(object(json!({}), 1, behind), Some("main@sha1:bbbb")),
            WaitState::Behind {
                at: "aaaa".to_string(),
                wanted: Some("bbbb".to_string())
            }
        );

        // Ready for an older generation: pending, quoting the old condition.
        let old = json!({"observedGeneration": 1, "conditions": [ready("True", "Succeeded", "stored artifact")]});
        let w = waiting(&object(json!({}), 2, old), None);
        assert_eq!(w.state, WaitState::Pending);
        assert!(w.condition.unwrap().is_true());

        let failing = json!({"observedGeneration": 1, "conditions": [ready("False", "GitOperationFailed", "auth")]});
        assert_eq!(
            state(object(json!({}), 1, failing), None),
            WaitState::NotReady
        );
        assert_eq!(
            state(object(json!({}), 1, json!({})), None),
            WaitState::Pending
        );
    }

    #[test]
    fn resume_commands_are_the_flux_cli_s() {
        assert_eq!(
            resume_command(flux::Kind::GitRepository),
            "flux resume source git flux-system -n flux-system"
        );
        assert_eq!(
            resume_command(flux::Kind::Kustomization),
            "flux resume kustomization flux-system -n flux-system"
        );
    }
}
