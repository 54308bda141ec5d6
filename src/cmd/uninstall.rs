//! `homelab-flux uninstall`: remove Flux and what `bootstrap` made (SPEC §4b).
//!
//! Read (the cluster, then GitHub's keys when a token is at hand), decide
//! ([`crate::plan::uninstall::plan`]), show the plan, ask, act. The writes go in the plan's order: the
//! finalizers first (so that no controller prunes what it applied), the Flux resources, the
//! controllers, this cluster's deploy key, the CRDs, the Namespace. Each is idempotent and each
//! stop leaves what the next run reads and finishes: the key goes before the Namespace, whose
//! Secret names it.

use super::{Global, NoRuntime};
use crate::cluster::{self, Cluster};
use crate::config::{Credential, Loaded, Secrets, Valid};
use crate::flux::{self, Kind, ObjectRef};
use crate::output::{Format, Steps, Ui};
use crate::plan::uninstall::{self, FluxResource, Found, KeyPlan, NoGitHub, Plan};
use crate::settings::Auth;
use crate::step::Step;

/// Remove Flux from the cluster: its custom resources (finalizers first, so that what Flux
/// applied stays), the controllers, the CRDs, the Namespace `flux-system`, and this cluster's
/// deploy key on GitHub.
///
/// What Flux applied (the homelab's workloads) stays. The plan is shown first; on a terminal it
/// asks before it removes anything. Without a token (or with `auth: token`) it says which deploy
/// key to delete by hand. Exit 0 when done or when there is nothing to remove, 2 when it could
/// not run.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  homelab-flux uninstall --dry-run
  homelab-flux uninstall --context home --yes")]
pub struct Args {
    #[command(flatten)]
    pub config: crate::cmd::ConfigArgs,

    #[command(flatten)]
    pub cluster: super::ClusterArgs,

    /// Remove without asking (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Print what would be removed, and change nothing (in the cluster and on GitHub).
    #[arg(long)]
    pub dry_run: bool,

    /// Keep the Namespace `flux-system` (the Secret of the deploy key in it is deleted).
    #[arg(long)]
    pub keep_namespace: bool,

    /// Output format of the steps.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Why `uninstall` did not end with exit 0.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] NoRuntime),
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// The GitHub client could not be set up.
    #[error(transparent)]
    GitHub(#[from] crate::github::Error),
    #[error("cannot list the deploy keys on GitHub; nothing was removed")]
    DeployKeys(#[source] crate::github::Error),
    #[error(
        "cannot delete the deploy key `{title}` (id {id}) on GitHub; run `homelab-flux uninstall` again to finish"
    )]
    DeleteKey {
        title: String,
        id: u64,
        #[source]
        source: crate::github::Error,
    },
    #[error(
        "uninstall removes Flux from the cluster and asks first, but stdin is not a terminal: pass `--yes` to remove without asking, or `--dry-run` to see the plan"
    )]
    NeedsYes,
    #[error("not confirmed: nothing was removed")]
    NotConfirmed,
    #[error("cannot read the answer")]
    Output(#[from] std::io::Error),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        2
    }

    pub fn is_reported(&self) -> bool {
        false
    }
}

pub fn run(args: &Args, global: &Global, ui: &Ui) -> Result<(), Error> {
    super::current_thread_runtime()?.block_on(uninstall(args, global, ui))
}

/// The GitHub side: a client and the repository, or why there is none.
enum GitHubSide {
    Client {
        gh: Box<crate::github::GitHub>,
        owner: String,
        name: String,
    },
    None(NoGitHub),
}

fn github_side(global: &Global, ui: &Ui) -> Result<GitHubSide, Error> {
    // Like `status`: the token only (no age identity); a configuration that cannot be loaded
    // does not stop the cluster's side.
    match super::load_config(&global.config_dir, Secrets::TokenOnly) {
        Ok(Loaded::Valid(Valid {
            flux: cfg,
            credential,
            ..
        })) => match (cfg.auth, credential) {
            (Auth::Token, _) => Ok(GitHubSide::None(NoGitHub::TokenAuth)),
            // The App made no deploy key; one left from an earlier mode is deleted with a token.
            (Auth::GitHubApp, None) => Ok(GitHubSide::None(NoGitHub::AppAuth)),
            (Auth::DeployKey | Auth::GitHubApp, Some(Credential { token, .. })) => {
                let gh = super::github_client(&cfg, &token, ui)?;
                Ok(GitHubSide::Client {
                    gh: Box::new(gh),
                    owner: cfg.repo.owner.to_string(),
                    name: cfg.repo.name.to_string(),
                })
            }
            (Auth::DeployKey, None) => Ok(GitHubSide::None(NoGitHub::NoToken)),
        },
        Ok(_) | Err(_) => Ok(GitHubSide::None(NoGitHub::NoConfig)),
    }
}

async fn uninstall(args: &Args, global: &Global, ui: &Ui) -> Result<(), Error> {
    let mut steps = match args.dry_run {
        true => Steps::plan(ui, args.format),
        false => Steps::new(ui, args.format),
    };
    let cluster = args.cluster.connect().await?;
    let (_, kubernetes) = cluster.version().await?;
    steps.emit(Step::Connected {
        context: cluster.context().to_string(),
        kubernetes,
    });
    let github = github_side(global, ui)?;
    if let GitHubSide::None(NoGitHub::NoConfig) = github {
        ui.notice(&format!(
            "no configuration in `{}`: the deploy key on GitHub is left to delete by hand",
            global.config_dir.display()
        ));
    }

    let removal = cluster.read_removal().await?;
    let public_key = removal.secret.as_ref().and_then(flux::deploy_public_key);
    let (keys, no_github) = match (&github, &public_key) {
        (GitHubSide::Client { gh, owner, name }, Some(_)) => (
            Some(
                gh.list_deploy_keys(owner, name)
                    .await
                    .map_err(Error::DeployKeys)?,
            ),
            None,
        ),
        (GitHubSide::None(why), _) => (None, Some(*why)),
        (GitHubSide::Client { .. }, None) => (None, None),
    };
    let found = Found {
        resources: removal
            .resources
            .into_iter()
            .map(|(object, finalizers)| FluxResource { object, finalizers })
            .collect(),
        controllers: removal.controllers,
        crds: removal.crds,
        namespace_terminating: removal.namespace_terminating,
        public_key,
        keys,
        no_github,
    };
    let plan = uninstall::plan(&found, args.keep_namespace, |public| {
        crate::keys::fingerprint(public).unwrap_or_else(|_| "(an unreadable key)".to_string())
    });
    tracing::debug!("uninstall plan: {plan:?}");

    if plan.is_empty() {
        key_note(&plan.key, &mut steps);
        steps.emit(Step::NothingToRemove);
        return Ok(());
    }
    steps.emit(Step::ToRemove {
        what: listing(&plan),
    });
    if args.dry_run {
        return Ok(());
    }
    if !args.yes {
        if !ui.can_ask() {
            return Err(Error::NeedsYes);
        }
        if !ui.confirm("Remove all of this?")? {
            return Err(Error::NotConfirmed);
        }
    }
    apply(&cluster, &github, &plan, &mut steps).await
}

/// The plan as lines, in the order of the writes.
fn listing(plan: &Plan) -> Vec<String> {
    let mut what = Vec::new();
    if !plan.resources.is_empty() {
        what.push(format!(
            "{} Flux resource(s), their finalizers first: {}",
            plan.resources.len(),
            names(&plan.resources).join(", ")
        ));
    }
    if !plan.controllers.is_empty() {
        what.push(format!(
            "the controllers' objects: {}",
            names(&plan.controllers).join(", ")
        ));
    }
    match &plan.key {
        KeyPlan::Delete {
            title,
            id,
            fingerprint,
        } => what.push(format!(
            "this cluster's deploy key `{title}` (id {id}, {fingerprint}) on GitHub"
        )),
        KeyPlan::ByHand { fingerprint, .. } => {
            what.push(format!("(by hand) the deploy key {fingerprint} on GitHub"))
        }
        KeyPlan::None | KeyPlan::NotRegistered { .. } => {}
    }
    for secret in &plan.secrets {
        what.push(format!("Secret {}/{secret}", flux::NAMESPACE));
    }
    if !plan.crds.is_empty() {
        what.push(format!("the CRDs: {}", plan.crds.join(", ")));
    }
    if plan.namespace {
        what.push(format!("Namespace {}", flux::NAMESPACE));
    }
    what
}

fn names(objects: &[ObjectRef]) -> Vec<String> {
    objects.iter().map(ObjectRef::shown).collect()
}

fn key_note(key: &KeyPlan, steps: &mut Steps<'_>) {
    match key {
        KeyPlan::ByHand {
            fingerprint,
            reason,
        } => steps.emit(Step::KeyByHand {
            fingerprint: fingerprint.clone(),
            reason: *reason,
        }),
        KeyPlan::NotRegistered { fingerprint } => steps.emit(Step::KeyNotRegistered {
            fingerprint: fingerprint.clone(),
        }),
        KeyPlan::None | KeyPlan::Delete { .. } => {}
    }
}

/// Carries the plan out, in its order.
async fn apply(
    cluster: &Cluster,
    github: &GitHubSide,
    plan: &Plan,
    steps: &mut Steps<'_>,
) -> Result<(), Error> {
    for o in &plan.finalizers {
        cluster.strip_finalizers(o).await?;
    }
    if !plan.finalizers.is_empty() {
        steps.emit(Step::FinalizersRemoved {
            names: names(&plan.finalizers),
        });
    }
    delete_all(cluster, "Flux resources", &plan.resources, steps).await?;
    delete_all(
        cluster,
        "the controllers' objects",
        &plan.controllers,
        steps,
    )
    .await?;
    match (&plan.key, github) {
        (
            KeyPlan::Delete {
                title,
                id,
                fingerprint,
            },
            GitHubSide::Client { gh, owner, name },
        ) => {
            gh.delete_deploy_key(owner, name, *id)
                .await
                .map_err(|source| Error::DeleteKey {
                    title: title.clone(),
                    id: *id,
                    source,
                })?;
            steps.emit(Step::KeyDeleted {
                title: title.clone(),
                id: *id,
                fingerprint: fingerprint.clone(),
            });
        }
        (key, _) => key_note(key, steps),
    }
    let secrets: Vec<ObjectRef> = plan
        .secrets
        .iter()
        .map(|s| cluster::known(Kind::Secret, Some(flux::NAMESPACE), s))
        .collect();
    delete_all(cluster, "the bootstrap's Secret", &secrets, steps).await?;
    let crds: Vec<ObjectRef> = plan
        .crds
        .iter()
        .map(|c| cluster::known(Kind::CustomResourceDefinition, None, c))
        .collect();
    delete_all(cluster, "the CRDs", &crds, steps).await?;
    if plan.namespace {
        let ns = cluster::known(Kind::Namespace, None, flux::NAMESPACE);
        delete_all(cluster, "the Namespace", &[ns], steps).await?;
    }
    Ok(())
}

async fn delete_all(
    cluster: &Cluster,
    what: &'static str,
    objects: &[ObjectRef],
    steps: &mut Steps<'_>,
) -> Result<(), Error> {
    if objects.is_empty() {
        return Ok(());
    }
    for o in objects {
        cluster.delete_object(o).await?;
    }
    steps.emit(Step::Deleted {
        what,
        names: names(objects),
    });
    Ok(())
}
