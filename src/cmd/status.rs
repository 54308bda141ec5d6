//! `homelab-flux status`: the Flux objects in the cluster and the deploy key on GitHub.

use serde::Serialize;

use super::Global;
use crate::cluster;
use crate::config::{Credential, Loaded, Secrets, Valid};
use crate::flux;
use crate::flux::Kind;
use crate::health::{self, PodProblem, Rollout, WaitState};
use crate::output::{Format, Ui};
use crate::settings::Auth;

/// Show whether Flux is synced: each object's Ready condition, revision and last message, and
/// whether the deploy key in the cluster is still registered on GitHub (when a token is set).
///
/// Exit 0 when all are Ready, 1 otherwise, 2 when the cluster cannot be reached.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  homelab-flux status
  homelab-flux status --context home --format json")]
pub struct Args {
    #[command(flatten)]
    pub config: crate::cmd::ConfigArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,

    #[command(flatten)]
    pub cluster: super::ClusterArgs,
}

/// One object's state.
#[derive(Debug, Serialize)]
struct ObjectStatus {
    kind: &'static str,
    name: String,
    exists: bool,
    ready: bool,
    reason: Option<String>,
    revision: Option<String>,
    message: Option<String>,
    /// Set when the object is not Ready because of a SOPS decryption error: what to do.
    decryption_failure: Option<&'static str>,
    /// What it waits for, when it is not Ready, or Ready behind its source (SPEC §4a).
    #[serde(flatten)]
    waiting: Option<WaitState>,
}

/// A controller's Deployment (SPEC §4a, as `flux check` reads it).
#[derive(Debug, Serialize)]
struct Controller {
    #[serde(flatten)]
    rollout: Rollout,
    /// What its Pods say, when it is not rolled out.
    pods: Vec<PodProblem>,
}

#[derive(Debug, Serialize)]
struct Status {
    context: String,
    /// The Flux release the controllers run (the oldest of their labels); `None` when no
    /// controller is there or one has no label.
    flux_version: Option<String>,
    /// The release this homelab-flux installs by default.
    pinned: String,
    /// The pinned release is newer than the one the cluster runs.
    upgrade_available: bool,
    controllers: Vec<Controller>,
    objects: Vec<ObjectStatus>,
    /// How the cluster reads the repository, from its objects: `deploy-key`, `token` or
    /// `github-app`; `None` without a Secret and GitRepository to tell.
    auth: Option<String>,
    /// `Some(true)` registered, `Some(false)` gone, `None` not checked (no token, or `auth: token`).
    deploy_key_registered: Option<bool>,
    /// `auth: github-app`: `Some(true)` when the App's installation still reaches the
    /// repository (key accepted, installed, an installation token reads it), `Some(false)`
    /// when not (with `app_problem`), `None` not checked (no App credentials configured).
    app_installation_ok: Option<bool>,
    /// What GitHub said when the installation does not reach the repository.
    app_problem: Option<String>,
    ready: bool,
}

/// Why `status` did not end with exit 0.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Some object is not Ready, or the deploy key is gone (exit 1); the status says which.
    #[error("Flux is not ready (see the status above)")]
    NotReady,
    #[error(transparent)]
    Runtime(#[from] super::NoRuntime),
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// The GitHub client could not be set up.
    #[error(transparent)]
    GitHub(#[from] crate::github::Error),
    /// GitHub could not be asked about the deploy key.
    #[error("cannot list the deploy keys on GitHub")]
    DeployKeys(#[source] crate::github::Error),
    /// GitHub could not be asked about the App's installation.
    #[error("cannot check the GitHub App's installation")]
    App(#[source] crate::github::Error),
    #[error("cannot write the status")]
    Output(#[from] std::io::Error),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotReady => 1,
            Error::Runtime(_)
            | Error::Cluster(_)
            | Error::GitHub(_)
            | Error::DeployKeys(_)
            | Error::App(_)
            | Error::Output(_) => 2,
        }
    }

    pub fn is_reported(&self) -> bool {
        matches!(self, Error::NotReady)
    }
}

pub fn run(args: &Args, global: &Global, ui: &Ui) -> Result<(), Error> {
    super::current_thread_runtime()?.block_on(status(args, global, ui))
}

async fn status(args: &Args, global: &Global, ui: &Ui) -> Result<(), Error> {
    let cluster = args.cluster.connect().await?;
    let ns = flux::NAMESPACE;
    // The version, asked alongside, tells a server that is not Kubernetes from a cluster
    // without Flux (both answer 404 for a GitRepository).
    let (version, repo, ks, secret, deployments) = tokio::join!(
        cluster.version(),
        cluster.get(Kind::GitRepository, Some(ns), flux::NAME),
        cluster.get(Kind::Kustomization, Some(ns), flux::NAME),
        cluster.get(Kind::Secret, Some(ns), flux::NAME),
        cluster.flux_deployments(),
    );
    version?;
    let (repo, ks, secret, deployments) = (repo?, ks?, secret?, deployments?);
    let mut controllers = Vec::new();
    for d in &deployments {
        let rollout = health::rollout(d);
        let pods = match rollout.rolled_out {
            true => Vec::new(),
            false => cluster.pod_problems(d).await?,
        };
        controllers.push(Controller { rollout, pods });
    }
    let flux_version = running_release(&controllers);
    let repo_revision = repo
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok())
        .and_then(|v| {
            flux::Observed::from_object(&v)
                .revision()
                .map(str::to_string)
        });
    let describe = |kind: Kind, o: &Option<kube::api::DynamicObject>| {
        let value = o.as_ref().and_then(|o| serde_json::to_value(o).ok());
        let observed = value.as_ref().map(flux::Observed::from_object);
        let wanted = match kind {
            Kind::Kustomization => repo_revision.as_deref(),
            _ => None,
        };
        let waiting = value
            .as_ref()
            .map(|v| health::waiting(v, wanted).state)
            .filter(|state| {
                let ready = observed.as_ref().is_some_and(flux::Observed::is_ready);
                !ready || matches!(state, WaitState::Behind { .. } | WaitState::Suspended)
            });
        let condition = observed
            .as_ref()
            .and_then(|o| o.condition("Ready"))
            .cloned();
        let ready = observed.as_ref().is_some_and(flux::Observed::is_ready);
        ObjectStatus {
            kind: kind.name(),
            name: format!("{ns}/{}", flux::NAME),
            exists: o.is_some(),
            ready,
            decryption_failure: condition
                .as_ref()
                .filter(|_| !ready && kind == Kind::Kustomization)
                .and_then(|c| crate::sops::decryption_failure_hint(&c.message)),
            reason: condition.as_ref().map(|c| c.reason.clone()),
            revision: observed
                .as_ref()
                .and_then(|o| o.revision())
                .map(str::to_string),
            message: condition.map(|c| c.message),
            waiting,
        }
    };
    let objects = vec![
        describe(Kind::GitRepository, &repo),
        describe(Kind::Kustomization, &ks),
    ];

    let secret_value = secret.as_ref().and_then(|s| serde_json::to_value(s).ok());
    let repo_value = repo.as_ref().and_then(|o| serde_json::to_value(o).ok());
    let auth = live_auth(secret_value.as_ref(), repo_value.as_ref());

    // The App's installation, when the cluster uses one and its credentials are configured.
    let (mut app_installation_ok, mut app_problem) = (None, None);
    if auth == Some(Auth::GitHubApp)
        && let Ok(Loaded::Valid(Valid {
            flux: cfg,
            app: Some(app),
            findings,
            ..
        })) = super::load_config(&global.config_dir, Secrets::TokenOnly)
    {
        let base = super::api_base(&cfg)?;
        let (answers, _) = super::ask_app(&base, &app, &cfg, false, ui).await?;
        let found =
            super::app_findings(&cfg, &app, &findings, answers).map_err(|e| Error::App(e.0))?;
        let problem = found
            .iter()
            .find(|d| d.severity == crate::diag::Severity::Error);
        app_installation_ok = Some(problem.is_none());
        app_problem = problem.map(|d| match &d.hint {
            Some(h) => format!("{}: {h}", d.message),
            None => d.message.clone(),
        });
    }

    // The deploy key on GitHub, when a token is at hand (never an error when it is not).
    let mut deploy_key_registered = None;
    if let Ok(Loaded::Valid(Valid {
        flux: cfg,
        credential: Some(Credential { token, .. }),
        ..
    })) = super::load_config(&global.config_dir, Secrets::TokenOnly)
        && cfg.auth == Auth::DeployKey
        && let Some(public) = secret
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|s| flux::deploy_public_key(&s))
    {
        let gh = super::github_client(&cfg, &token, ui)?;
        let keys = gh
            .list_deploy_keys(&cfg.repo.owner, &cfg.repo.name)
            .await
            .map_err(Error::DeployKeys)?;
        deploy_key_registered = Some(keys.iter().any(|k| k.matches_public_key(&public)));
    }

    let rolled_out = !controllers.is_empty() && controllers.iter().all(|c| c.rollout.rolled_out);
    let ready = objects.iter().all(|o| o.ready)
        && rolled_out
        && deploy_key_registered != Some(false)
        && app_installation_ok != Some(false);
    let pinned = flux::pinned();
    let status = Status {
        context: cluster.context().to_string(),
        upgrade_available: flux_version.is_some_and(|v| v < pinned),
        flux_version: flux_version.map(|v| v.to_string()),
        pinned: pinned.to_string(),
        controllers,
        objects,
        auth: auth.map(|a| a.to_string()),
        deploy_key_registered,
        app_installation_ok,
        app_problem,
        ready,
    };
    match args.format {
        Format::Json => ui.out_json(&status)?,
        Format::Text => ui.out_lines(&render(&status))?,
    }
    if status.ready {
        Ok(())
    } else {
        Err(Error::NotReady)
    }
}

/// How the cluster reads the repository, from its GitRepository and Secret.
fn live_auth(secret: Option<&serde_json::Value>, repo: Option<&serde_json::Value>) -> Option<Auth> {
    let provider = repo.and_then(|r| r["spec"]["provider"].as_str());
    let has = |key: &str| secret.is_some_and(|s| !s["data"][key].is_null());
    if provider == Some(flux::GITHUB_PROVIDER) {
        Some(Auth::GitHubApp)
    } else if has("identity") {
        Some(Auth::DeployKey)
    } else if has("password") {
        Some(Auth::Token)
    } else {
        None
    }
}

/// The release the controllers run: the oldest of their labels, `None` when one has none.
fn running_release(controllers: &[Controller]) -> Option<flux::Version> {
    let mut oldest = None;
    for c in controllers {
        let v = c
            .rollout
            .version
            .as_deref()
            .and_then(flux::Version::parse)?;
        oldest = Some(oldest.map_or(v, |o: flux::Version| o.min(v)));
    }
    oldest
}

/// The text report, one entry per line; [`crate::output::Ui::out_lines`] escapes each line, so a condition
/// message (written by whoever controls the repository's content) cannot drive the terminal
/// nor, with a newline of its own, fake a line.
fn render(s: &Status) -> Vec<String> {
    let mut out = vec![format!("context: {}", s.context)];
    if let Some(auth) = &s.auth {
        out.push(format!("auth: {auth}"));
    }
    out.push(match (&s.flux_version, s.controllers.is_empty()) {
        (_, true) => format!(
            "Flux: no controller in `{}` (run `homelab-flux bootstrap` to install {})",
            flux::NAMESPACE,
            s.pinned
        ),
        (None, false) => "Flux: a release without version labels".to_string(),
        (Some(v), false) if s.upgrade_available => format!(
            "Flux {v}; {} is out: run `homelab-flux bootstrap` to upgrade to it",
            s.pinned
        ),
        (Some(v), false) if *v == s.pinned => format!("Flux {v} (the release homelab-flux pins)"),
        (Some(v), false) => format!("Flux {v} (homelab-flux pins {})", s.pinned),
    });
    for c in &s.controllers {
        let r = &c.rollout;
        let release = r.version.as_deref().unwrap_or("(no version label)");
        out.push(match r.rolled_out {
            true => format!(
                "Deployment {} {release}: rolled out ({}/{} available)",
                r.name, r.available, r.replicas
            ),
            false => format!(
                "Deployment {} {release}: NOT rolled out: {}",
                r.name,
                r.availability()
            ),
        });
        for p in &c.pods {
            out.push(format!("  Pod {}: {}: {}", p.pod, p.reason, p.message));
        }
    }
    for o in &s.objects {
        if !o.exists {
            out.push(format!(
                "{} {}: missing (run `homelab-flux bootstrap`)",
                o.kind, o.name
            ));
            continue;
        }
        out.push(format!(
            "{} {}: {} ({}) revision {}",
            o.kind,
            o.name,
            if o.ready { "Ready" } else { "not Ready" },
            o.reason.as_deref().unwrap_or("no condition yet"),
            o.revision.as_deref().unwrap_or("none"),
        ));
        if let Some(m) = o.message.as_deref().filter(|m| !m.is_empty()) {
            out.push(format!("  {m}"));
        }
        match &o.waiting {
            Some(WaitState::Suspended) => out.push(format!(
                "  suspended (`spec.suspend: true`): Flux does not reconcile it; resume it with `{}`",
                health::resume_command(if o.kind == "GitRepository" {
                    Kind::GitRepository
                } else {
                    Kind::Kustomization
                })
            )),
            Some(WaitState::Stalled) => out.push(
                "  stalled: the controller does not retry until its spec changes".to_string(),
            ),
            Some(WaitState::Dependency) => {
                out.push("  waiting for a Kustomization it `dependsOn`".to_string())
            }
            Some(WaitState::Behind { at, wanted }) => out.push(format!(
                "  applied {}, the GitRepository is at {}: Flux applies it at its next reconcile",
                crate::step::short(at),
                wanted.as_deref().map_or("(unknown)", crate::step::short)
            )),
            Some(WaitState::Pending | WaitState::NotReady) | None => {}
        }
        if let Some(hint) = o.decryption_failure {
            out.push(format!("  a SOPS decryption error: {hint}"));
        }
    }
    if s.auth.as_deref() == Some("github-app") {
        out.push(match (s.app_installation_ok, &s.app_problem) {
            (Some(true), _) => "GitHub App: the installation reaches the repository (an installation token reads it)".to_string(),
            (Some(false), Some(problem)) => format!("GitHub App: the installation does NOT reach the repository: {problem}"),
            (Some(false), None) => "GitHub App: the installation does NOT reach the repository".to_string(),
            (None, _) => "GitHub App: not checked (no `githubApp` in the secrets file)".to_string(),
        });
        return out;
    }
    out.push(match s.deploy_key_registered {
        Some(true) => "deploy key: registered on GitHub".to_string(),
        Some(false) => "deploy key: NOT registered on GitHub any more (deleted, or its token was deleted): run `homelab-flux bootstrap` to replace it".to_string(),
        None => "deploy key: not checked (no token, or `auth: token`)".to_string(),
    });
    out
}
