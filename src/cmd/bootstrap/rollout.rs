//! Wait for the controllers (SPEC §4a): after an install, upgrade or repair, until every
//! controller Deployment of the manifests is rolled out, followed with a watch up to the
//! deadline. One that is not rolled out in time is named with its condition and what its Pods
//! say (`ImagePullBackOff`, `CrashLoopBackOff`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::Error;
use super::apply::Run;
use crate::cluster::{self, DeploymentEvent};
use crate::flux;
use crate::health::{self, PodProblem, Rollout};
use crate::output::Steps;
use crate::step::Step;

/// A controller that did not roll out in time: its rollout and what its Pods say.
#[derive(Debug)]
pub struct Unrolled {
    pub name: String,
    pub rollout: Option<Rollout>,
    pub pods: Vec<PodProblem>,
}

/// Flux's controllers did not roll out before the deadline (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct NotRolledOut(pub Vec<Unrolled>);

fn describe(unrolled: &[Unrolled]) -> String {
    let mut parts = Vec::new();
    let mut first_pod = None;
    for u in unrolled {
        let mut line = match &u.rollout {
            None => format!("Deployment `{}` is missing", u.name),
            Some(r) => format!(
                "Deployment `{}` is not rolled out: {}",
                u.name,
                r.availability()
            ),
        };
        for p in &u.pods {
            first_pod.get_or_insert_with(|| p.pod.clone());
            line.push_str(&format!("; Pod `{}`: {}", p.pod, p.reason));
            if !p.message.is_empty() {
                line.push_str(&format!(": {}", p.message));
            }
        }
        parts.push(line);
    }
    let hint = match first_pod {
        Some(pod) => format!(
            "see `kubectl -n {} describe pod {pod}`; an image that cannot be pulled needs a registry the cluster reaches, or `--flux-manifests` naming one",
            flux::NAMESPACE
        ),
        None => format!(
            "see `kubectl -n {} get deployments,pods` and the Deployments' events",
            flux::NAMESPACE
        ),
    };
    format!(
        "Flux's controllers did not roll out in time: {} (hint: {hint}); run `homelab-flux bootstrap` again once they can: it applies the manifests again and waits",
        parts.join("; ")
    )
}

/// The controller Deployments in manifests, as `namespace/name`.
pub(super) fn controllers(documents: &[Value]) -> Vec<String> {
    documents
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| {
            format!(
                "{}/{}",
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(flux::NAMESPACE),
                d["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// Waits until every Deployment of `names` is rolled out. A watch that drops is resumed until
/// the deadline; an API server that keeps refusing ends the wait.
pub(super) async fn rolled_out(
    run: &Run<'_>,
    names: &[String],
    deadline: tokio::time::Instant,
    steps: &mut Steps<'_>,
) -> Result<(), Error> {
    const REFUSALS: u32 = 3;
    if names.is_empty() {
        return Ok(());
    }
    let mut stream = run.cluster.watch_deployments(flux::NAMESPACE);
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    let mut shown: Option<Step> = None;
    let (mut retries, mut refusals) = (0u32, 0u32);
    loop {
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(next)) => next,
            Ok(None) => return Err(Error::WatchEnded("Deployment")),
            Err(_) => {
                steps.progress_done();
                return Err(unrolled(run.cluster, names, &seen).await?.into());
            }
        };
        match next {
            Ok(DeploymentEvent::Seen(d)) => {
                (retries, refusals) = (0, 0);
                let r = health::rollout(&d);
                seen.insert(r.name, d);
            }
            Ok(DeploymentEvent::Gone(name)) => {
                seen.remove(&name);
            }
            Ok(DeploymentEvent::Relisted) => seen.clear(),
            Err(e) => {
                refusals = match cluster::is_refusal(&e) {
                    true => refusals + 1,
                    false => 0,
                };
                let error = run.cluster.watch_error(flux::Kind::Deployment, "*", e);
                if refusals >= REFUSALS {
                    steps.progress_done();
                    return Err(error.into());
                }
                tracing::debug!("the watch on Flux's Deployments dropped ({error}); resuming");
                let pause =
                    Duration::from_millis(250 << retries.min(5)).min(Duration::from_secs(5));
                retries += 1;
                tokio::time::sleep_until((tokio::time::Instant::now() + pause).min(deadline)).await;
                continue;
            }
        }
        let pending = names
            .iter()
            .find(|n| seen.get(*n).is_none_or(|d| !health::rollout(d).rolled_out));
        let Some(pending) = pending else {
            steps.progress_done();
            steps.emit(Step::RolledOut {
                names: names.to_vec(),
            });
            return Ok(());
        };
        let progress = Step::RollingOut {
            name: pending.clone(),
            rollout: seen.get(pending).map(health::rollout),
        };
        if shown.as_ref() != Some(&progress) {
            steps.emit(progress.clone());
            shown = Some(progress);
        }
    }
}

/// The controllers not rolled out at the deadline, with their Pods' reasons.
async fn unrolled(
    cluster: &cluster::Cluster,
    names: &[String],
    seen: &BTreeMap<String, Value>,
) -> Result<NotRolledOut, Error> {
    let mut out = Vec::new();
    for name in names {
        let rollout = seen.get(name).map(health::rollout);
        if rollout.as_ref().is_some_and(|r| r.rolled_out) {
            continue;
        }
        let pods = match seen.get(name) {
            Some(d) => cluster.pod_problems(d).await?,
            None => Vec::new(),
        };
        out.push(Unrolled {
            name: name.clone(),
            rollout,
            pods,
        });
    }
    Ok(NotRolledOut(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_that_did_not_roll_out_is_named_with_its_pods_reason() {
        let d = serde_json::json!({
            "metadata": {"namespace": "flux-system", "name": "source-controller", "generation": 2},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 0,
                "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."}]},
        });
        let e = NotRolledOut(vec![
            Unrolled {
                name: "flux-system/source-controller".to_string(),
                rollout: Some(health::rollout(&d)),
                pods: vec![PodProblem {
                    pod: "source-controller-7d9f".to_string(),
                    reason: "ImagePullBackOff".to_string(),
                    message: "Back-off pulling image \"x\"".to_string(),
                }],
            },
            Unrolled {
                name: "flux-system/kustomize-controller".to_string(),
                rollout: None,
                pods: Vec::new(),
            },
        ]);
        assert_eq!(
            e.to_string(),
            "Flux's controllers did not roll out in time: Deployment `flux-system/source-controller` is not rolled out: 0 of 1 replicas available (MinimumReplicasUnavailable: Deployment does not have minimum availability.); Pod `source-controller-7d9f`: ImagePullBackOff: Back-off pulling image \"x\"; Deployment `flux-system/kustomize-controller` is missing (hint: see `kubectl -n flux-system describe pod source-controller-7d9f`; an image that cannot be pulled needs a registry the cluster reaches, or `--flux-manifests` naming one); run `homelab-flux bootstrap` again once they can: it applies the manifests again and waits"
        );
    }

    #[test]
    fn the_controllers_are_the_deployments_of_the_manifests() {
        let docs = vec![
            serde_json::json!({"kind": "Namespace", "metadata": {"name": "flux-system"}}),
            serde_json::json!({"kind": "Deployment", "metadata": {"namespace": "flux-system", "name": "source-controller"}}),
            serde_json::json!({"kind": "Deployment", "metadata": {"namespace": "flux-system", "name": "helm-controller"}}),
        ];
        assert_eq!(
            controllers(&docs),
            [
                "flux-system/source-controller",
                "flux-system/helm-controller"
            ]
        );
    }
}
