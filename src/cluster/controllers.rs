//! Flux's controllers as the cluster runs them: their Deployments, read and watched, and the
//! Pods behind a Deployment that does not roll out (what `flux check` and `status` look at).

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::{Cluster, Error, WATCH_TIMEOUT_SECS};
use crate::flux;
use crate::health::{self, PodProblem};

/// A change to the Deployments of a namespace, from a watch.
pub enum DeploymentEvent {
    /// A Deployment as it is now (listed, added or changed).
    Seen(Value),
    /// A Deployment was deleted (`namespace/name`).
    Gone(String),
    /// The watch listed everything again (after a drop): what was seen before may be gone.
    Relisted,
}

impl Cluster {
    /// The Deployments of Flux's controllers in `flux-system`: those labelled as part of Flux.
    pub async fn flux_deployments(&self) -> Result<Vec<Value>, Error> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), flux::NAMESPACE);
        let selector = format!("{}={}", flux::PART_OF_LABEL.0, flux::PART_OF_LABEL.1);
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.unreachable_or("listing Flux's Deployments", e))?;
        let mut out: Vec<Value> = list
            .items
            .iter()
            .map(|d| serde_json::to_value(d).unwrap_or_default())
            .collect();
        out.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        Ok(out)
    }

    /// The Deployments of `namespace` and their changes, from a watch (not polling). After an
    /// error the stream goes on (it lists and watches again when polled).
    pub fn watch_deployments(
        &self,
        namespace: &str,
    ) -> futures::stream::BoxStream<'static, Result<DeploymentEvent, kube::runtime::watcher::Error>>
    {
        use kube::runtime::watcher::{self, Event};
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let config = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
        let name_of = |d: &Deployment| {
            format!(
                "{}/{}",
                d.metadata.namespace.as_deref().unwrap_or_default(),
                d.metadata.name.as_deref().unwrap_or_default()
            )
        };
        watcher::watcher(api, config)
            .filter_map(move |event| {
                futures::future::ready(match event {
                    Ok(Event::Apply(d) | Event::InitApply(d)) => Some(Ok(DeploymentEvent::Seen(
                        serde_json::to_value(&d).unwrap_or_default(),
                    ))),
                    Ok(Event::Delete(d)) => Some(Ok(DeploymentEvent::Gone(name_of(&d)))),
                    Ok(Event::Init) => Some(Ok(DeploymentEvent::Relisted)),
                    Ok(Event::InitDone) => None,
                    Err(e) => Some(Err(e)),
                })
            })
            .boxed()
    }

    /// What the Pods of a Deployment (its `spec.selector.matchLabels`) say about why they do not
    /// run. Read only for a Deployment that did not roll out, to name the reason.
    pub async fn pod_problems(&self, deployment: &Value) -> Result<Vec<PodProblem>, Error> {
        let namespace = deployment["metadata"]["namespace"]
            .as_str()
            .unwrap_or(flux::NAMESPACE);
        let Some(labels) = deployment["spec"]["selector"]["matchLabels"].as_object() else {
            return Ok(Vec::new());
        };
        let selector = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pods = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.unreachable_or("listing the controllers' Pods", e))?;
        Ok(pods
            .items
            .iter()
            .flat_map(|p| health::pod_problems(&serde_json::to_value(p).unwrap_or_default()))
            .collect())
    }
}
