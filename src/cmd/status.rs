//! `homelab-flux status`: the Flux objects in the cluster and the deploy key on GitHub.

use serde::Serialize;

use super::Global;
use crate::cluster;
use crate::config::{Credential, Loaded, Secrets, Valid};
use crate::flux;
use crate::flux::Kind;
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
}

#[derive(Debug, Serialize)]
struct Status {
    context: String,
    objects: Vec<ObjectStatus>,
    /// `Some(true)` registered, `Some(false)` gone, `None` not checked (no token, or `auth: token`).
    deploy_key_registered: Option<bool>,
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
    let (version, repo, ks, secret) = tokio::join!(
        cluster.version(),
        cluster.get(Kind::GitRepository, Some(ns), flux::NAME),
        cluster.get(Kind::Kustomization, Some(ns), flux::NAME),
        cluster.get(Kind::Secret, Some(ns), flux::NAME),
    );
    version?;
    let (repo, ks, secret) = (repo?, ks?, secret?);
    let describe = |kind: Kind, o: &Option<kube::api::DynamicObject>| {
        let observed = o
            .as_ref()
            .and_then(|o| serde_json::to_value(o).ok())
            .map(|v| flux::Observed::from_object(&v));
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
        }
    };
    let objects = vec![
        describe(Kind::GitRepository, &repo),
        describe(Kind::Kustomization, &ks),
    ];

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

    let ready = objects.iter().all(|o| o.ready) && deploy_key_registered != Some(false);
    let status = Status {
        context: cluster.context().to_string(),
        objects,
        deploy_key_registered,
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

/// The text report, one entry per line; [`crate::output::Ui::out_lines`] escapes each line, so a condition
/// message (written by whoever controls the repository's content) cannot drive the terminal
/// nor, with a newline of its own, fake a line.
fn render(s: &Status) -> Vec<String> {
    let mut out = vec![format!("context: {}", s.context)];
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
        if let Some(hint) = o.decryption_failure {
            out.push(format!("  a SOPS decryption error: {hint}"));
        }
    }
    out.push(match s.deploy_key_registered {
        Some(true) => "deploy key: registered on GitHub".to_string(),
        Some(false) => "deploy key: NOT registered on GitHub any more (deleted, or its token was deleted): run `homelab-flux bootstrap` to replace it".to_string(),
        None => "deploy key: not checked (no token, or `auth: token`)".to_string(),
    });
    out
}
