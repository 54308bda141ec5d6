//! `--dry-run`: the plan, checked and shown. The API server checks every write of the plan in
//! one call (a server-side dry run: nothing is kept); GitHub gets no write. Then the plan is
//! printed as the steps a run would take, in their order, each field that would change with its
//! old and new value. The credentials are read as a run reads them (the branch's head, a kept
//! key's proof over SSH): those are reads, not writes.

use super::Error;
use super::apply::Run;
use crate::cluster::Write;
use crate::flux::{self, Kind};
use crate::output::Steps;
use crate::plan::{Change, Credentials, Plan, SecretPlan};
use crate::step::Step;

pub(super) async fn show(
    run: &Run<'_>,
    plan: &Plan,
    manifests: Option<&super::apply::Manifests>,
    steps: &mut Steps<'_>,
) -> Result<(), Error> {
    let manifests = manifests.filter(|_| plan.flux.applies_manifests());
    run.cluster.check(&writes(plan, manifests)).await?;

    steps.emit(Step::applied(&plan.namespace));
    super::apply::flux_change(plan, manifests.is_some(), steps);
    if let Some(m) = manifests {
        for p in run.cluster.pending_migrations(&m.documents).await? {
            steps.emit(Step::migrated(&p.migration, p.objects));
        }
        run.installed(m, steps);
    }
    if let Some(what) = plan.takeover {
        steps.emit(Step::TakeoverNote {
            name: format!("{}/{}", flux::NAMESPACE, flux::NAME),
            what,
        });
    }
    match plan.credentials {
        Credentials::NewKey => steps.emit(Step::KeyToCreate {
            title: plan.title.clone(),
        }),
        Credentials::Token | Credentials::Reuse(_) | Credentials::GitHubApp => {
            run.known_credentials(plan, steps).await?;
        }
    }
    if plan.replace_secret {
        steps.emit(Step::SecretReplaced {
            name: format!("{}/{}", flux::NAMESPACE, flux::NAME),
        });
    }
    match &plan.secret {
        SecretPlan::Apply(object) => steps.emit(Step::applied(object)),
        SecretPlan::NewKey { .. } => steps.emit(Step::SecretWithNewKey {
            name: format!("{}/{}", flux::NAMESPACE, flux::NAME),
        }),
    }
    if let Some(title) = &plan.old_key_unlisted {
        steps.emit(Step::OldKeyUnlisted {
            title: title.clone(),
            repo: run.cfg.repo.to_string(),
        });
    }
    for key in &plan.stale_keys {
        steps.emit(Step::StaleKeyToDelete {
            title: key.title.clone(),
            id: key.id,
        });
    }
    for object in plan.sops_secret.iter() {
        steps.emit(Step::applied(object));
    }
    steps.emit(Step::applied(&plan.git_repository));
    steps.emit(Step::applied(&plan.kustomization));
    Ok(())
}

/// Every cluster write of the plan, in a run's order. What lives in a Namespace or under CRDs
/// that the plan creates cannot be checked before they really exist: it counts as to be
/// written, unchecked.
fn writes<'a>(plan: &'a Plan, manifests: Option<&'a super::apply::Manifests>) -> Vec<Write<'a>> {
    let pending = plan.namespace.change == Change::Create || plan.install.crds_missing;
    let mut writes = Vec::new();
    if plan.namespace.change.is_write() {
        writes.push(Write::Apply(Kind::Namespace, &plan.namespace.desired));
    }
    if let Some(m) = manifests {
        writes.push(Write::Install(&m.documents));
    }
    if plan.replace_secret {
        writes.push(Write::Delete {
            kind: Kind::Secret,
            namespace: Some(flux::NAMESPACE),
            name: flux::NAME,
        });
    }
    if pending {
        return writes;
    }
    let secret = match &plan.secret {
        SecretPlan::Apply(object) => Some(object),
        SecretPlan::NewKey { .. } => None,
    };
    let objects = secret
        .into_iter()
        .chain(&plan.sops_secret)
        .chain([&plan.git_repository, &plan.kustomization]);
    for object in objects.filter(|o| o.change.is_write()) {
        writes.push(Write::Apply(object.kind, &object.desired));
    }
    writes
}
