//! Read: everything the plan needs, before anything is written. The configuration with its
//! hygiene and GitHub's answers in one round, then the cluster in one round.

use serde_json::Value;

use super::Error;
use crate::cluster::{self, Cluster};
use crate::cmd::{self, Global, Reported};
use crate::config::{Credential, Loaded, Secrets, Valid};
use crate::flux::{self, Kind};
use crate::github::GitHub;
use crate::output::{Format, Ui};
use crate::plan::{GitHubView, Live};
use crate::settings::FluxConfig;
use crate::sops::AgeIdentity;
use crate::token::Token;

/// The configuration and what the run read from GitHub besides the findings.
pub(super) struct Read {
    pub cfg: FluxConfig,
    pub token: Token,
    /// For `decryption: sops`: the identity the repository is encrypted for.
    pub age_identity: Option<AgeIdentity>,
    pub gh: GitHub,
    pub github: GitHubView,
}

/// The configuration, valid offline (its findings not yet printed).
pub(super) struct Offline {
    cfg: FluxConfig,
    token: Token,
    origin: crate::config::TokenOrigin,
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
            credential: Some(Credential { token, origin }),
            age_identities,
            findings,
        }) => Ok(Offline {
            cfg: flux,
            token,
            origin,
            age_identities,
            findings,
        }),
        loaded => cmd::finish(&loaded.into_findings(), ui, FINDINGS, "the configuration")
            .and(Err(Error::Reported(Reported))),
    }
}

/// GitHub's answers, all read in one round, and the findings of the whole configuration
/// printed. [`Error::Reported`] when they stop the run.
pub(super) async fn github(offline: Offline, ui: &Ui) -> Result<Read, Error> {
    let format = FINDINGS;
    let Offline {
        cfg,
        token,
        origin,
        age_identities,
        mut findings,
    } = offline;
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
        token,
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
