//! Read: everything the plan needs, before anything is written. The configuration with its
//! hygiene and GitHub's answers in one round, then the cluster in one round.

use serde_json::Value;

use super::Error;
use crate::app_key::GitHubApp;
use crate::cluster::{self, Cluster};
use crate::cmd::{self, Global, Reported};
use crate::config::{Credential, Loaded, Secrets, Valid};
use crate::flux::{self, Kind};
use crate::github::GitHub;
use crate::output::{Format, Ui};
use crate::plan::{AppSecret, GitHubView, Live};
use crate::settings::{Auth, FluxConfig};
use crate::sops::AgeIdentity;
use crate::token::Token;

/// The configuration and what the run read from GitHub besides the findings.
pub(super) struct Read {
    pub cfg: FluxConfig,
    /// `None` only with `auth: github-app`, or when the token could not list this cluster's
    /// old deploy keys beside it.
    pub token: Option<Token>,
    /// For `decryption: sops`: the identity the repository is encrypted for.
    pub age_identity: Option<AgeIdentity>,
    /// The client that reads the repository: the token's, or the App installation's.
    pub gh: GitHub,
    /// The client that manages deploy keys: the token's (`gh` itself but with the App).
    pub keys_gh: Option<GitHub>,
    pub github: GitHubView,
    /// `auth: github-app`: what the Secret holds.
    pub app: Option<AppSecret>,
}

/// The configuration, valid offline (its findings not yet printed).
pub(super) struct Offline {
    cfg: FluxConfig,
    credential: Option<Credential>,
    app: Option<GitHubApp>,
    age_identities: Vec<AgeIdentity>,
    findings: crate::config::Findings,
}

/// The findings are for the person: on stderr as text, also with `--format json` (whose stdout
/// holds the steps, one JSON object per line).
const FINDINGS: Format = Format::Text;

/// The configuration with its hygiene, read offline. [`Error::Reported`] (the findings
/// printed) when it has errors.
pub(super) fn config(global: &Global, ui: &Ui) -> Result<Offline, Error> {
    match cmd::check_offline(&global.config_dir, Secrets::Required)? {
        Loaded::Valid(Valid {
            flux,
            credential,
            age_identities,
            app,
            findings,
        }) if credential.is_some() || (flux.auth == Auth::GitHubApp && app.is_some()) => {
            Ok(Offline {
                cfg: flux,
                credential,
                app,
                age_identities,
                findings,
            })
        }
        loaded => cmd::finish(&loaded.into_findings(), ui, FINDINGS, "the configuration")
            .and(Err(Error::Reported(Reported))),
    }
}

/// GitHub's answers, all read in one round, and the findings of the whole configuration
/// printed. [`Error::Reported`] when they stop the run.
pub(super) async fn github(offline: Offline, ui: &Ui) -> Result<Read, Error> {
    if let Some(app) = &offline.app {
        let app = app.clone();
        return github_app(offline, app, ui).await;
    }
    let format = FINDINGS;
    let Offline {
        cfg,
        credential,
        age_identities,
        mut findings,
        ..
    } = offline;
    let Some(Credential { token, origin }) = credential else {
        return Err(Error::Reported(Reported));
    };
    let gh = cmd::github_client(&cfg, &token, ui)?;
    tracing::debug!(
        "checking `{}` against the GitHub API at {}",
        cfg.repo,
        gh.api_base()
    );
    let mut answers = cmd::ask(&gh, &cfg, true).await;
    // What the run goes on with, kept before the answers become findings.
    let repo = answers.repo.as_ref().ok().cloned();
    let head = answers
        .branch
        .as_ref()
        .and_then(|(_, b)| b.as_ref().ok())
        .map(|b| b.commit_sha.clone());
    let keys = answers.keys.as_ref().and_then(|k| k.as_ref().ok()).cloned();
    let meta = answers.meta.take();
    let found = cmd::github_findings(&cfg, &token, &origin, &findings, answers)?;
    findings.report.extend(found);
    if !findings.report.is_empty() {
        cmd::finish::<Error>(&findings, ui, format, "the configuration")?;
    }
    let repo = repo.ok_or(Error::NoRepository)?;
    let host_keys = match meta {
        Some(meta) => meta.map_err(Error::HostKeys)?.ssh_keys,
        None => Vec::new(),
    };
    tracing::debug!(
        "GitHub lists {} deploy key(s) on `{}`; {} SSH host key(s) in /meta",
        keys.as_ref().map_or(0, Vec::len),
        cfg.repo,
        host_keys.len()
    );
    Ok(Read {
        github: GitHubView {
            repo,
            head,
            keys: keys.unwrap_or_default(),
            host_keys,
        },
        age_identity: cfg
            .decryption
            .and_then(|_| age_identities.into_iter().next()),
        cfg,
        token: Some(token),
        keys_gh: Some(gh.clone()),
        gh,
        app: None,
    })
}

/// `auth: github-app`: the App's checks (key, installation, installation token, repository and
/// branch), and with a token beside them this cluster's deploy keys, all at once.
async fn github_app(offline: Offline, app: GitHubApp, ui: &Ui) -> Result<Read, Error> {
    let Offline {
        cfg,
        credential,
        age_identities,
        mut findings,
        ..
    } = offline;
    let base = cmd::api_base(&cfg)?;
    let token_gh = match &credential {
        Some(c) => Some(cmd::github_client(&cfg, &c.token, ui)?),
        None => None,
    };
    let keys = async {
        match &token_gh {
            Some(gh) => Some(gh.list_deploy_keys(&cfg.repo.owner, &cfg.repo.name).await),
            None => None,
        }
    };
    let (answers, keys) = tokio::join!(cmd::ask_app(&base, &app, &cfg, true, ui), keys);
    let (answers, installation_gh) = answers?;
    let repo = answers.repo.as_ref().and_then(|r| r.as_ref().ok()).cloned();
    let head = answers
        .branch
        .as_ref()
        .and_then(|(_, b)| b.as_ref().ok())
        .map(|b| b.commit_sha.clone());
    let installation_id = answers.installation.as_ref().ok().map(|i| i.id);
    let found = cmd::app_findings(&cfg, &app, &findings, answers)?;
    findings.report.extend(found);
    if !findings.report.is_empty() {
        cmd::finish::<Error>(&findings, ui, FINDINGS, "the configuration")?;
    }
    let (Some(repo), Some(installation_id), Some(gh)) = (repo, installation_id, installation_gh)
    else {
        return Err(Error::NoRepository);
    };
    // The old deploy keys, when the token may list them; otherwise the old key is named.
    let (token, keys) = match (credential, keys) {
        (Some(c), Some(Ok(keys))) => (Some(c.token), keys),
        (_, Some(Err(e))) => {
            tracing::warn!(
                "the token cannot list the deploy keys of `{}`: {e}",
                cfg.repo
            );
            (None, Vec::new())
        }
        _ => (None, Vec::new()),
    };
    let default_base = crate::github::api_base_for_host("github.com");
    Ok(Read {
        github: GitHubView {
            repo,
            head,
            keys,
            host_keys: Vec::new(),
        },
        age_identity: cfg
            .decryption
            .and_then(|_| age_identities.into_iter().next()),
        app: Some(AppSecret {
            app_id: app.id,
            installation_id,
            key: app.key,
            base_url: (base != default_base).then_some(base),
        }),
        cfg,
        token,
        keys_gh: token_gh,
        gh,
    })
}

/// An object as the plan reads it.
pub(super) fn to_value(o: &kube::api::DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

/// Everything the plan needs from the cluster, in one round of reads. The Flux objects cannot
/// be read before their CRDs exist; what comes back for them then is ignored. Secret
/// `sops-age` is read only for `decryption: sops`.
pub(super) async fn live(cluster: &Cluster, sops: bool) -> Result<Live, cluster::Error> {
    let get = |kind: Kind, namespace: Option<&'static str>| async move {
        cluster.get(kind, namespace, flux::NAME).await
    };
    let ns = Some(flux::NAMESPACE);
    let sops_secret = async {
        match sops {
            true => cluster.get(Kind::Secret, ns, flux::SOPS_SECRET).await,
            false => Ok(None),
        }
    };
    let (version, missing, namespace, secret, repo, ks, sops_secret) = tokio::join!(
        cluster.version(),
        cluster.missing_flux_parts(),
        cluster.get(Kind::Namespace, None, flux::NAMESPACE),
        get(Kind::Secret, ns),
        get(Kind::GitRepository, ns),
        get(Kind::Kustomization, ns),
        sops_secret,
    );
    let ((version, git_version), missing) = (version?, missing?);
    let crds = !missing.crds_missing;
    let flux_object = |o: Result<Option<kube::api::DynamicObject>, cluster::Error>| {
        if crds {
            o.map(|o| o.map(|o| to_value(&o)))
        } else {
            Ok(None)
        }
    };
    Ok(Live {
        context: cluster.context().to_string(),
        server: cluster.server().to_string(),
        version,
        git_version,
        flux_missing: missing,
        namespace: namespace?.map(|o| to_value(&o)),
        secret: secret?.map(|o| to_value(&o)),
        git_repository: flux_object(repo)?,
        kustomization: flux_object(ks)?,
        sops_secret: sops_secret?.map(|o| to_value(&o)),
        flux_instance: None,
    })
}
