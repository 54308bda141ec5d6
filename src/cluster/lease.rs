//! The bootstrap Lease: two runs of `bootstrap` on one cluster take turns, so that neither deletes
//! the other's new deploy key as stale. [`HeldLease`] is the protocol (take it, waiting while
//! another run holds it; renew it in the background; give it back); the [`Cluster`] methods
//! are its calls to the API server.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::Api;

use super::{Cluster, Error, watch_one};

/// The Lease that serialises bootstraps of one cluster.
pub const LEASE_NAME: &str = "homelab-flux-bootstrap";
/// How long a Lease stays valid without renewal: a run that died holds it no longer than this.
pub const LEASE_DURATION: Duration = Duration::from_secs(30);

/// Another run still held the Lease when the deadline came; nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error(
    "another bootstrap of this cluster (`{holder}`) still holds the Lease `{namespace}/{LEASE_NAME}`; nothing was changed. Run again once it has finished; a run that died releases it within {} s",
    LEASE_DURATION.as_secs()
)]
pub struct StillHeld {
    pub namespace: String,
    pub holder: String,
}

/// Why the Lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error(transparent)]
    StillHeld(#[from] StillHeld),
    #[error(transparent)]
    Cluster(#[from] Error),
}

impl Cluster {
    /// One attempt to take the bootstrap Lease in `namespace` for `holder`: created when absent,
    /// taken over when expired, renewed when `holder` has it already. Conflicts (another run
    /// won the race) come back as the Lease's holder, like a Lease held by another run.
    pub async fn try_acquire_lease(
        &self,
        namespace: &str,
        holder: &str,
    ) -> Result<LeaseState, Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("the Lease `{namespace}/{LEASE_NAME}`");
        let live = api
            .get_opt(LEASE_NAME)
            .await
            .map_err(|e| self.unreachable_or(&what, e))?;
        let now = jiff::Timestamp::now();
        if let Some(live) = &live
            && let Some(other) = lease_holder(live, holder, now)
        {
            return Ok(other);
        }
        let lease = Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(LEASE_NAME.to_string()),
                namespace: Some(namespace.to_string()),
                resource_version: live
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone()),
                ..Default::default()
            },
            spec: Some(lease_spec(holder, now)),
        };
        let result = match &live {
            None => api.create(&Default::default(), &lease).await,
            Some(_) => api.replace(LEASE_NAME, &Default::default(), &lease).await,
        };
        match result {
            Ok(_) => Ok(LeaseState::Acquired),
            // Another run created or took it between the read and the write.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(LeaseState::Held {
                holder: "another bootstrap".to_string(),
                expires: now + LEASE_DURATION,
            }),
            Err(e) => Err(self.unreachable_or(&what, e)),
        }
    }

    /// Renews the Lease while `holder` has it; false when it is no longer ours.
    pub async fn renew_lease(&self, namespace: &str, holder: &str) -> Result<bool, Error> {
        Ok(matches!(
            self.try_acquire_lease(namespace, holder).await?,
            LeaseState::Acquired
        ))
    }

    /// Deletes the Lease if `holder` still has it, so that the next run need not wait.
    pub async fn release_lease(&self, namespace: &str, holder: &str) -> Result<(), Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("the Lease `{namespace}/{LEASE_NAME}`");
        let Some(live) = api
            .get_opt(LEASE_NAME)
            .await
            .map_err(|e| self.unreachable_or(&what, e))?
        else {
            return Ok(());
        };
        let ours = live
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(holder);
        if !ours {
            return Ok(());
        }
        // Only this very version: a run that took the Lease over meanwhile keeps it.
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: live.metadata.resource_version.clone(),
                uid: None,
            }),
            ..Default::default()
        };
        match api.delete(LEASE_NAME, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(self.unreachable_or(&what, e)),
        }
    }

    /// A stream of the Lease's states (see [`Cluster::watch`]); a waiting run wakes on changes.
    pub fn watch_lease(
        &self,
        namespace: &str,
    ) -> impl futures::Stream<Item = Result<(), kube::runtime::watcher::Error>> + Send + use<> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        watch_one(api, LEASE_NAME).map(|r| r.map(|_| ()))
    }
}

/// The bootstrap Lease of this run, once taken; renewed in the background until released.
#[derive(Default)]
pub struct HeldLease {
    held: tokio::sync::Mutex<Option<Held>>,
}

/// A Lease this run holds: where, as whom, and the task that renews it.
struct Held {
    cluster: Cluster,
    namespace: String,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
}

impl HeldLease {
    /// Takes the Lease in `namespace`, waiting while another run holds it, until `deadline`.
    /// `waiting` is told the other holder each time the wait starts or the holder changes;
    /// returns whether this run waited.
    pub async fn acquire(
        &self,
        cluster: &Cluster,
        namespace: &str,
        deadline: tokio::time::Instant,
        mut waiting: impl FnMut(&str),
    ) -> Result<bool, AcquireError> {
        let holder = holder_identity();
        let mut changes = cluster.watch_lease(namespace);
        let mut waited = false;
        loop {
            let (other, expires) = match cluster.try_acquire_lease(namespace, &holder).await? {
                LeaseState::Acquired => break,
                LeaseState::Held { holder, expires } => (holder, expires),
            };
            waiting(&other);
            waited = true;
            // Wake when the Lease changes (released, renewed) or would expire unrenewed.
            let left = (expires - jiff::Timestamp::now())
                .try_into()
                .unwrap_or(Duration::ZERO);
            let wake =
                (tokio::time::Instant::now() + left + Duration::from_millis(50)).min(deadline);
            tokio::select! {
                next = changes.next() => {
                    if !matches!(next, Some(Ok(()))) {
                        // The watch dropped: look again after a pause rather than spinning.
                        tokio::time::sleep_until(wake.min(tokio::time::Instant::now() + Duration::from_secs(1))).await;
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StillHeld {
                    namespace: namespace.to_string(),
                    holder: other,
                }
                .into());
            }
        }
        tracing::debug!("took the Lease `{namespace}/{LEASE_NAME}` as `{holder}`");
        let renewer = {
            let (cluster, namespace, holder) =
                (cluster.clone(), namespace.to_string(), holder.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LEASE_DURATION / 3).await;
                    // A failed renewal is tried again; the Lease only lapses if every try fails.
                    match cluster.renew_lease(&namespace, &holder).await {
                        Ok(true) => {}
                        Ok(false) => tracing::debug!(
                            "the Lease `{namespace}/{LEASE_NAME}` lapsed and another run holds it now"
                        ),
                        Err(e) => tracing::debug!("renewing the Lease failed ({e}); trying again"),
                    }
                }
            })
        };
        *self.held.lock().await = Some(Held {
            cluster: cluster.clone(),
            namespace: namespace.to_string(),
            holder,
            renewer,
        });
        Ok(waited)
    }

    /// Gives the Lease back, if held. Failing to is no error: it expires on its own.
    pub async fn release(&self) {
        let Some(Held {
            cluster,
            namespace,
            holder,
            renewer,
        }) = self.held.lock().await.take()
        else {
            return;
        };
        renewer.abort();
        let release = cluster.release_lease(&namespace, &holder);
        match tokio::time::timeout(Duration::from_secs(5), release).await {
            Ok(Ok(())) => tracing::debug!("released the Lease"),
            Ok(Err(e)) => tracing::debug!("could not release the Lease: {e}"),
            Err(_) => tracing::debug!("could not release the Lease in time; it expires on its own"),
        }
    }
}

/// Who holds the Lease, as `kubectl get lease` shows it: host, process and start time.
fn holder_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string());
    format!(
        "homelab-flux on {host}, pid {}, {}",
        std::process::id(),
        jiff::Timestamp::now()
    )
}

/// Whether a bootstrap Lease is ours to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// This run holds it now.
    Acquired,
    /// Another run holds it until `expires`, unless it renews it.
    Held {
        holder: String,
        expires: jiff::Timestamp,
    },
}

/// `Some(Held)` when a live Lease belongs to another holder and has not expired at `now`.
pub fn lease_holder(lease: &Lease, me: &str, now: jiff::Timestamp) -> Option<LeaseState> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    if holder == me {
        return None;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)?;
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    let expires = renewed + jiff::SignedDuration::from_secs(seconds);
    (expires > now).then_some(LeaseState::Held { holder, expires })
}

fn lease_spec(holder: &str, now: jiff::Timestamp) -> LeaseSpec {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    LeaseSpec {
        holder_identity: Some(holder.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_by_another_run_until_it_expires() {
        use k8s_openapi::api::coordination::v1::Lease;
        let now: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let lease = |holder: &str, renewed: &str| Lease {
            spec: Some(lease_spec(holder, renewed.parse().unwrap())),
            ..Default::default()
        };
        assert_eq!(
            lease_holder(&lease("other", "2026-12-01T09:59:50Z"), "me", now),
            Some(LeaseState::Held {
                holder: "other".to_string(),
                expires: "2026-12-01T10:00:20Z".parse().unwrap(),
            })
        );
        // Expired (a run that died), or ours: free to take.
        assert_eq!(
            lease_holder(&lease("other", "2026-12-01T09:59:00Z"), "me", now),
            None
        );
        assert_eq!(
            lease_holder(&lease("me", "2026-12-01T09:59:59Z"), "me", now),
            None
        );
        assert_eq!(lease_holder(&Lease::default(), "me", now), None);
    }
}
