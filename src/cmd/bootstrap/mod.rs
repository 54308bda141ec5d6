//! `homelab-flux bootstrap`: set up Flux on the cluster from the repository.
//!
//! Read, decide, act, wait. Everything the run needs is read first (`read.rs`: the
//! configuration, GitHub in one round, the cluster in one round); [`plan::plan`] decides every
//! write from that; then the plan is carried out (`apply.rs`), or with `--dry-run` checked and
//! shown (`dry_run.rs`); and the run follows the controllers until they are rolled out
//! (`rollout.rs`) and Flux until it has synced (`wait.rs`). The order of
//! the writes is chosen so that every stop leaves a state the next run repairs: nothing touches
//! the cluster before the configuration and GitHub are checked and a new deploy key is proven;
//! stale keys are deleted only after the Secret with the new one is applied; every cluster
//! write is an idempotent server-side apply.

mod apply;
mod args;
mod dry_run;
mod error;
mod export;
mod read;
mod rollout;
mod wait;

pub use args::{Args, MAX_TIMEOUT};
pub use error::{Error, KeyLeftBehind, NotProven, NotReady, StaleKeysLeft};
pub use rollout::{NotRolledOut, Unrolled};

use crate::cluster::lease::HeldLease;
use crate::cmd::{Global, NoRuntime};
use crate::flux::{self, Kind};
use crate::output::{Steps, Ui};
use crate::plan::{self, Credentials, SecretPlan};
use crate::step::Step;
use apply::Run;

pub fn run(args: &Args, global: &Global, ui: &Ui) -> Result<(), Error> {
    if args.export {
        return export::export(global, ui);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(NoRuntime)?;
    let lease = HeldLease::default();
    // Ctrl-C stops the run between two steps with a message rather than mid-line and silent.
    // Every step is safe to cut short: the next run repairs what this one left (a key that was
    // not yet in the cluster is deleted then as stale, and every apply is idempotent).
    let result = runtime.block_on(async {
        let result = tokio::select! {
            result = bootstrap(args, global, ui, &lease) => result,
            _ = tokio::signal::ctrl_c() => {
                ui.progress_done();
                Err(Error::Interrupted)
            }
        };
        // A run that stopped early gives the Lease back, so that the next one need not wait
        // for it to expire.
        lease.release().await;
        result
    });
    // An SSH proof still running on a blocking thread is abandoned, not waited for.
    runtime.shutdown_background();
    result
}

/// The story of a run.
async fn bootstrap(args: &Args, global: &Global, ui: &Ui, lease: &HeldLease) -> Result<(), Error> {
    let mut steps = match args.dry_run {
        true => Steps::plan(ui, args.format),
        false => Steps::new(ui, args.format),
    };

    // Read what is local first, so that a missing file fails at once: the configuration, the
    // kubeconfig and its context (nothing is sent yet), the manifests file. Then GitHub in one
    // round, then the cluster; nothing is touched when they have errors.
    let offline = read::config(global, ui)?;
    let cluster = args.cluster.connect().await?;
    tracing::debug!(
        "kubeconfig context `{}`, API server {}",
        cluster.context(),
        cluster.server()
    );
    if let Some(source) = &args.flux_manifests {
        crate::manifests::check_local(source).map_err(Error::Manifests)?;
    }
    let read::Read {
        cfg,
        token,
        age_identity,
        gh,
        keys_gh,
        mut github,
        app,
    } = read::github(offline, ui).await?;
    steps.emit(Step::Checked {
        repo: cfg.repo.to_string(),
    });
    let mut live = read::live(&cluster, cfg.decryption.is_some()).await?;
    steps.emit(Step::Connected {
        context: live.context.clone(),
        kubernetes: live.git_version.clone(),
    });
    let run = Run {
        args,
        cluster: &cluster,
        gh: &gh,
        keys_gh: keys_gh.as_ref().unwrap_or(&gh),
        cfg: &cfg,
    };

    // The Flux release wanted: the label of `--flux-manifests` (read now for it), else
    // `--flux-version`. The default manifests are downloaded only to install or upgrade.
    let mut manifests = match args.flux_manifests {
        Some(_) => Some(run.manifests(flux::pinned()).await?),
        None => None,
    };
    let wanted = manifests
        .as_ref()
        .map(|m| m.version)
        .or(args.flux_version)
        .unwrap_or_else(flux::pinned);
    // Changing the release of a Flux that the Flux Operator manages is refused: whether a
    // FluxInstance exists is read only then.
    if live.flux_missing.version.is_some_and(|v| v != wanted) {
        live.flux_instance = cluster.flux_instance().await?;
    }

    // Decide.
    let options = plan::Options {
        force: args.force,
        key_title: args.key_title.clone(),
        age_identity,
        flux_version: Some(wanted),
        github_app: app,
    };
    let mut plan = plan::plan(&cfg, token.as_ref(), &github, &live, &options)?;
    for o in [&plan.git_repository, &plan.kustomization] {
        tracing::trace!("desired {} spec: {}", o.kind.name(), o.desired["spec"]);
    }
    if let Some((kubernetes, tested)) = plan.untested_kubernetes {
        steps.emit(Step::KubernetesUntested {
            kubernetes,
            flux: wanted,
            tested: format!("{}.{}", tested.0, tested.1),
        });
    }
    // A controller of the wanted release that is not rolled out is waited for; its manifests
    // are applied again only when given (`--flux-manifests`): a rollout under way, after a
    // rebuild say, needs no download, and one that fails is named by the wait.
    let only_wait = matches!(plan.flux, plan::FluxStep::Repair { .. }) && manifests.is_none();
    if plan.flux.applies_manifests() && manifests.is_none() && !only_wait {
        manifests = Some(run.manifests(wanted).await?);
    }
    if args.dry_run {
        return dry_run::show(&run, &plan, manifests.as_ref(), &mut steps).await;
    }

    // Act, in order: Flux itself, then the credentials, then the objects that use them.
    run.apply(&plan.namespace, &mut steps).await?;
    if let (true, Some(m)) = (plan.flux.applies_manifests(), &manifests) {
        run.install(&plan, m, &mut steps).await?;
    } else if only_wait {
        apply::flux_change(&plan, false, &mut steps);
    }
    if let Some(what) = plan.takeover {
        steps.emit(Step::TakeoverNote {
            name: format!("{}/{}", flux::NAMESPACE, flux::NAME),
            what,
        });
    }

    // A new key is made under the Lease that keeps a second run of this cluster from doing the
    // same at once (each would delete the other's key as stale). Another run may have put a
    // working key in place while this one waited: what it changed is read again, and decided
    // again. A run that keeps the key in the cluster writes nothing and needs no Lease.
    if matches!(plan.credentials, Credentials::NewKey) {
        let deadline = tokio::time::Instant::now() + args.timeout;
        let name = format!("{}/{}", flux::NAMESPACE, crate::cluster::LEASE_NAME);
        let acquired = lease
            .acquire(&cluster, flux::NAMESPACE, deadline, |holder| {
                steps.emit(Step::LeaseHeld {
                    name: name.clone(),
                    holder: holder.to_string(),
                })
            })
            .await;
        steps.progress_done();
        if acquired.map_err(|e| match e {
            crate::cluster::lease::AcquireError::StillHeld(e) => Error::LeaseHeld(e),
            crate::cluster::lease::AcquireError::Cluster(e) => Error::Cluster(e),
        })? {
            steps.emit(Step::LeaseFree);
        }
        let (secret, keys) = tokio::join!(
            cluster.get(Kind::Secret, Some(flux::NAMESPACE), flux::NAME),
            gh.list_deploy_keys(&cfg.repo.owner, &cfg.repo.name)
        );
        live.secret = secret?.map(|s| read::to_value(&s));
        github.keys = keys?;
        plan = plan::plan(&cfg, token.as_ref(), &github, &live, &options)?;
    }
    let settled = run.credentials(&plan, &mut steps).await?;

    if plan.replace_secret {
        cluster
            .delete(Kind::Secret, Some(flux::NAMESPACE), flux::NAME)
            .await?;
        steps.emit(Step::SecretReplaced {
            name: format!("{}/{}", flux::NAMESPACE, flux::NAME),
        });
    }
    match (&plan.secret, settled.secret) {
        (SecretPlan::Apply(object), _) => run.apply(object, &mut steps).await?,
        (SecretPlan::NewKey { change }, Some(desired)) => {
            let object = plan::Object {
                kind: Kind::Secret,
                desired,
                change: change.clone(),
            };
            run.apply(&object, &mut steps).await?;
        }
        (SecretPlan::NewKey { .. }, None) => unreachable!("a new key's Secret is settled"),
    }
    let left = run.delete_stale_keys(&plan, &mut steps).await;
    if let Some(title) = &plan.old_key_unlisted {
        steps.emit(Step::OldKeyUnlisted {
            title: title.clone(),
            repo: cfg.repo.to_string(),
        });
    }
    if let Some(sops_secret) = &plan.sops_secret {
        run.apply(sops_secret, &mut steps).await?;
    }
    run.apply(&plan.git_repository, &mut steps).await?;
    run.apply(&plan.kustomization, &mut steps).await?;
    // The credentials are settled: another run may go on while this one waits for Flux.
    lease.release().await;

    // Wait, within one `--timeout`: for the controllers to roll out after an install, upgrade or
    // repair, then for Flux to sync.
    if !args.no_wait {
        let deadline = tokio::time::Instant::now() + args.timeout;
        let controllers = match (&manifests, only_wait) {
            (Some(m), false) if plan.flux.applies_manifests() => rollout::controllers(&m.documents),
            (_, true) => plan.install.not_rolled_out.clone(),
            _ => Vec::new(),
        };
        rollout::rolled_out(&run, &controllers, deadline, &mut steps).await?;
        if let Some(sha) = &settled.sha {
            let ssh = settled.ssh.as_ref();
            wait::wait(&run, &plan, &live, sha, ssh, deadline, &mut steps).await?;
        }
    }
    match left.is_empty() {
        true => Ok(()),
        false => Err(StaleKeysLeft(left).into()),
    }
}
