//! Wait: after the writes, until Flux has synced the proven commit (or a newer head of the
//! branch), following the GitRepository and then the Kustomization with watches, not polling.

use std::time::Duration;

use futures::StreamExt;

use super::apply::{Run, SshAccess, prove};
use super::{Error, NotReady};
use crate::cluster::{self, Cluster};
use crate::flux::{self, Kind};
use crate::github::{self, GitHub};
use crate::health;
use crate::output::Steps;
use crate::plan::{self, Live, Plan, Wait};
use crate::settings::FluxConfig;
use crate::step::{Step, short};

/// Waits until Flux has synced the commit, or a newer head of the branch.
pub(super) async fn wait(
    run: &Run<'_>,
    plan: &Plan,
    live: &Live,
    sha: &str,
    ssh: Option<&SshAccess>,
    deadline: tokio::time::Instant,
    steps: &mut Steps<'_>,
) -> Result<(), Error> {
    let (request_reconcile, request_kustomization) = match plan::wait(plan, live, sha) {
        Wait::Synced => {
            steps.emit(Step::Synced {
                commit: sha.to_string(),
            });
            return Ok(());
        }
        Wait::Watch {
            request_reconcile,
            request_kustomization,
        } => (request_reconcile, request_kustomization),
    };
    let request = |kind: Kind, asked: bool| async move {
        if !asked {
            return Ok::<_, crate::cluster::Error>(None);
        }
        let stamp = jiff::Timestamp::now().to_string();
        run.cluster
            .request_reconcile(kind, flux::NAMESPACE, flux::NAME, &stamp)
            .await?;
        Ok(Some(stamp))
    };
    let requested = request(Kind::GitRepository, request_reconcile).await?;
    let ks_requested = request(Kind::Kustomization, request_kustomization).await?;
    let mut heads = Heads {
        gh: run.gh,
        cfg: run.cfg,
        branch: &plan.branch,
        ssh,
        api_refuses: false,
        accepted: vec![sha.to_string()],
    };
    // Ready at a commit, and, when a reconcile was asked for, after handling that request.
    let done_after = |requested: Option<String>| {
        move |o: &flux::Observed| {
            o.ready_commit().map(str::to_string).filter(|_| {
                requested
                    .as_deref()
                    .is_none_or(|s| o.status.last_handled_reconcile_at.as_deref() == Some(s))
            })
        }
    };
    let (repo_done, ks_done) = (done_after(requested), done_after(ks_requested));
    // What each should reach: the commit proven, then the GitRepository's.
    let mut wanted = sha.to_string();
    for (kind, done) in [
        (
            Kind::GitRepository,
            &repo_done as &(dyn Fn(&flux::Observed) -> Option<String> + Sync),
        ),
        (Kind::Kustomization, &ks_done),
    ] {
        let at = wait_for(
            run.cluster,
            kind,
            deadline,
            steps,
            done,
            &wanted,
            &mut heads,
        )
        .await?;
        wanted = at.clone();
        steps.emit(Step::Ready {
            kind: kind.name(),
            name: format!("{}/{}", flux::NAMESPACE, flux::NAME),
            branch: plan.branch.clone(),
            moved_from: (at != sha).then(|| sha.to_string()),
            commit: at,
        });
    }
    Ok(())
}

/// Tells whether a commit Flux reports is one bootstrap can call synced: the proven commit, or
/// the branch's current head (a commit landed while bootstrap waited, e.g. a Renovate merge).
struct Heads<'a> {
    gh: &'a GitHub,
    cfg: &'a FluxConfig,
    branch: &'a str,
    ssh: Option<&'a SshAccess>,
    /// The API answered 403 for the branch (a token without contents access): from then on the
    /// SSH remote is asked alone, not after another refusal each time.
    api_refuses: bool,
    /// Commits known good: the proven one, and heads seen since.
    accepted: Vec<String>,
}
impl Heads<'_> {
    async fn accepts(&mut self, sha: &str) -> bool {
        if self.accepted.iter().any(|a| a == sha) {
            return true;
        }
        let from_api = match self.api_refuses {
            true => None,
            false => self
                .gh
                .get_branch(&self.cfg.repo.owner, &self.cfg.repo.name, self.branch)
                .await
                .inspect_err(|e| self.api_refuses = matches!(e, github::Error::Forbidden { .. }))
                .ok(),
        };
        let head = match (from_api, self.ssh) {
            (Some(b), _) => Some(b.commit_sha),
            // A token without contents access (deploy-key set-ups): ask the SSH remote.
            (None, Some(access)) => prove(access, self.branch).await.ok(),
            (None, None) => None,
        };
        tracing::debug!(
            "Flux reports {}; `{}` is at {}",
            short(sha),
            self.branch,
            head.as_deref().map_or("(unknown)", short)
        );
        // Not remembered when it differs: GitHub's answer may lag behind a push Flux has seen.
        let current = head.as_deref() == Some(sha);
        if current {
            self.accepted.push(sha.to_string());
        }
        current
    }
}

/// Watches one Flux object until it is Ready at a commit `heads` accepts, showing what it
/// waits for as it changes; returns that commit. A watch that drops (an API server restart, a
/// 410 Gone) is resumed until `deadline`; an API server that keeps refusing (403, 404) ends the
/// wait early, and so does a state that does not change by itself (suspended, stalled).
/// `wanted` is the revision it should reach, for the words of a Ready-but-behind state.
async fn wait_for(
    cluster: &Cluster,
    kind: Kind,
    deadline: tokio::time::Instant,
    steps: &mut Steps<'_>,
    ready_at: &(dyn Fn(&flux::Observed) -> Option<String> + Sync),
    wanted: &str,
    heads: &mut Heads<'_>,
) -> Result<String, Error> {
    /// A refusal seen this many times in a row is not passing.
    const REFUSALS: u32 = 3;
    let mut stream = cluster.watch(kind, flux::NAMESPACE, flux::NAME);
    let mut last: Option<health::Waiting> = None;
    let mut failing: Option<cluster::Error> = None;
    let (mut retries, mut refusals) = (0u32, 0u32);
    loop {
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(next)) => next,
            Ok(None) => {
                return Err(Error::WatchEnded(kind.name()));
            }
            Err(_) => {
                steps.progress_done();
                return Err(match (failing, &last) {
                    (Some(e), _) => e.into(),
                    (None, Some(waiting)) => NotReady::from_waiting(kind, waiting).into(),
                    (None, None) => NotReady::from_condition(kind, None).into(),
                });
            }
        };
        let object = match next {
            Ok(object) => {
                (retries, refusals, failing) = (0, 0, None);
                object
            }
            Err(e) => {
                let refused = cluster::is_refusal(&e);
                let error = cluster.watch_error(kind, flux::NAME, e);
                refusals = if refused { refusals + 1 } else { 0 };
                if refusals >= REFUSALS {
                    steps.progress_done();
                    return Err(error.into());
                }
                tracing::debug!("the watch on {} dropped ({error}); resuming", kind.name());
                failing = Some(error);
                // 0.25 s, doubling to 5 s: quick after a blip, gentle on a restarting server.
                let pause =
                    Duration::from_millis(250 << retries.min(5)).min(Duration::from_secs(5));
                retries += 1;
                tokio::time::sleep_until((tokio::time::Instant::now() + pause).min(deadline)).await;
                continue;
            }
        };
        let Some(object) = object else { continue };
        let value = super::read::to_value(&object);
        let observed = flux::Observed::from_object(&value);
        if let Some(sha) = ready_at(&observed)
            && heads.accepts(&sha).await
        {
            steps.progress_done();
            return Ok(sha);
        }
        let waiting = health::waiting(&value, Some(wanted));
        steps.emit(Step::Waiting {
            kind: kind.name(),
            name: flux::NAME.to_string(),
            condition: waiting.condition.clone(),
            state: waiting.state.clone(),
        });
        if waiting.state.is_final() {
            steps.progress_done();
            return Err(NotReady::from_waiting(kind, &waiting).into());
        }
        last = Some(waiting);
    }
}
