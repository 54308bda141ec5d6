//! One module per subcommand, each with its clap `Args` and one `run` function; what several
//! of them share (loading the configuration, asking GitHub, the cluster's arguments) is here, so
//! that no command borrows from another.

pub mod bootstrap;
pub mod completions;
pub mod status;
pub mod validate;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{self, Findings, FluxConfig, Loaded, Secrets, TokenOrigin};
use crate::diag::Diagnostic;
use crate::github::{self, GitHub};
use crate::online::{self, Answers};
use crate::output::{Format, Ui};
use crate::token::Token;

/// Which cluster: the arguments of every command that talks to one.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl ClusterArgs {
    pub async fn connect(&self) -> Result<crate::cluster::Cluster, crate::cluster::Error> {
        crate::cluster::Cluster::connect(self.kubeconfig.as_deref(), self.context.as_deref()).await
    }
}

/// The configuration files could not be read (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("cannot load the configuration")]
pub struct CannotLoad(#[source] pub config::LoadError);

/// The findings are printed and hold an error (exit 1): there is nothing more to say.
#[derive(Debug, thiserror::Error)]
#[error("problems were found (shown above)")]
pub struct Reported;

/// The async runtime could not be started (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime")]
pub struct NoRuntime(#[source] pub std::io::Error);

/// Loads the configuration for a command; `HOMELAB_FLUX_TOKEN` replaces the secrets file.
pub(crate) fn load_config(dir: &Path, secrets: Secrets) -> Result<Loaded, CannotLoad> {
    let loaded = config::load(dir, secrets, &config::Env::from_process()).map_err(CannotLoad)?;
    if let Some(token) = loaded.token() {
        crate::output::hide(token.secret());
    }
    for identity in loaded.age_identities() {
        crate::output::hide(identity.secret());
    }
    Ok(loaded)
}

/// The offline checks every command that reads secrets runs: the configuration, the secrets
/// hygiene of the git work tree, and, for `decryption: sops`, whether the repository is
/// encrypted for the age identity the cluster gets (then the only one left in
/// `age_identities`). An error among them makes the configuration [`Loaded::Invalid`].
pub(crate) fn check_offline(dir: &Path, secrets: Secrets) -> Result<Loaded, CannotLoad> {
    let loaded = load_config(dir, secrets)?;
    let hygiene = crate::git::hygiene(
        dir,
        &loaded.findings().secrets_path,
        crate::git::Secrets {
            token: loaded.token(),
            age_identities: loaded.age_identities(),
        },
    );
    let mut loaded = loaded.extend(hygiene.findings);
    if loaded.decryption().is_some()
        && let Some(identity) = crate::sops::choose(loaded.age_identities(), &hygiene.sops).cloned()
    {
        tracing::debug!(
            "the cluster gets the age identity of recipient `{}` (of {} found)",
            identity.recipient_shown(),
            loaded.age_identities().len()
        );
        loaded = loaded.extend(crate::sops::check(&identity, &hygiene.sops));
        loaded.keep_age_identity(identity);
    }
    Ok(loaded)
}

/// Prints the findings; [`Reported`] when they hold an error.
pub(crate) fn finish<E: From<Reported> + From<std::io::Error>>(
    findings: &Findings,
    ui: &Ui,
    format: Format,
    subject: &str,
) -> Result<(), E> {
    ui.report(&findings.report, &findings.sources, format, subject)?;
    if findings.report.has_errors() {
        return Err(Reported.into());
    }
    Ok(())
}

/// A runtime for one thread (`validate`, `status`).
pub(crate) fn current_thread_runtime() -> Result<tokio::runtime::Runtime, NoRuntime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NoRuntime)
}

/// The client for the repository's host (which loading the configuration proved to be the
/// token's host), or the `HOMELAB_FLUX_GITHUB_API_URL` override. Where the token goes is never
/// a surprise: an API base other than the host's own is printed, `--quiet` or not.
pub(crate) fn github_client(cfg: &FluxConfig, token: &Token, ui: &Ui) -> anyhow::Result<GitHub> {
    let env = std::env::var(github::API_URL_ENV).ok();
    let base = github::resolve_api_base(&cfg.repo.authority(), env.as_deref())?;
    let client = GitHub::new(&base, token.secret())?;
    let default = github::api_base_for_host(&cfg.repo.authority());
    if client.api_base() != default {
        ui.notice(&format!(
            "the token goes to the GitHub API at `{}` (from `{}`), not `{default}`",
            client.api_base(),
            github::API_URL_ENV
        ));
    }
    Ok(client)
}

/// Turns GitHub's answers into findings (see [`online::evaluate`]); `Err` when GitHub could
/// not be asked.
pub(crate) fn github_findings(
    cfg: &FluxConfig,
    token: &Token,
    origin: &TokenOrigin,
    findings: &Findings,
    answers: Answers,
) -> anyhow::Result<Vec<Diagnostic>> {
    let flux_file = findings
        .sources
        .first()
        .map(|s| s.name().to_string())
        .unwrap_or_default();
    let token_file = match origin {
        TokenOrigin::File(p) => p.display().to_string(),
        TokenOrigin::Env => format!("${}", config::TOKEN_ENV),
    };
    let files = online::Files {
        flux: &flux_file,
        token: &token_file,
    };
    online::evaluate(cfg, token.kind(), answers, jiff::Timestamp::now(), &files)
        .context("cannot check the configuration against GitHub")
}
