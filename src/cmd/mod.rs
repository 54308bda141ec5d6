//! One module per subcommand, each with its clap `Args` and one `run` function; what several
//! of them share (loading the configuration, asking GitHub, the cluster's arguments) is here, so
//! that no command borrows from another.

pub mod bootstrap;
pub mod completions;
pub mod init;
pub mod status;
pub mod uninstall;
pub mod validate;

use std::path::{Path, PathBuf};

use crate::app_key::GitHubApp;
use crate::config::{self, Findings, Loaded, Secrets, TokenOrigin};
use crate::diag::Diagnostic;
use crate::github::{self, GitHub};
use crate::online::{self, Answers};
use crate::online_app::{self, AppAnswers};
use crate::output::{Format, Ui};
use crate::settings::{Auth, FluxConfig};
use crate::token::Token;

/// Options of every command: how much it says.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// More logs on stderr: `-v` for debug, `-vv` also for trace and the debug events of kube-rs,
    /// hyper and reqwest (the token is never logged).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// Where the configuration is: the option of every command that reads it.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Directory holding `flux.yaml` and `secrets-flux.yaml`.
    #[arg(long = "config-dir", value_name = "DIR", default_value = "config")]
    pub dir: PathBuf,
}

/// What every command that reads the configuration is told.
#[derive(Debug, Clone)]
pub struct Global {
    /// The config directory (`--config-dir`).
    pub config_dir: PathBuf,
}

impl From<&ConfigArgs> for Global {
    fn from(args: &ConfigArgs) -> Global {
        Global {
            config_dir: args.dir.clone(),
        }
    }
}

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

/// GitHub could not be asked (exit 2): unreachable, rate limited, failing.
#[derive(Debug, thiserror::Error)]
#[error("cannot check the configuration against GitHub")]
pub struct CannotAsk(#[source] pub github::Error);

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
    if let Some(key) = loaded.app_key() {
        crate::output::hide(key.secret());
        // Shown line by line, a PEM is never whole: each body line is hidden on its own.
        for line in key.expose_pem().lines().map(str::trim) {
            if line.len() >= 16 && !line.starts_with("-----") {
                crate::output::hide(&secrecy::SecretString::from(line.to_string()));
            }
        }
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
            app_key: loaded.app_key(),
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
pub(crate) fn github_client(
    cfg: &FluxConfig,
    token: &Token,
    ui: &Ui,
) -> Result<GitHub, github::Error> {
    let client = GitHub::new(&api_base(cfg)?, token.secret())?;
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

/// The API base for the repository's host, or the `HOMELAB_FLUX_GITHUB_API_URL` override.
pub(crate) fn api_base(cfg: &FluxConfig) -> Result<String, github::Error> {
    let env = std::env::var(github::API_URL_ENV).ok();
    github::resolve_api_base(&cfg.repo.authority(), env.as_deref())
}

/// What `auth: github-app` asks GitHub, in the fewest rounds the answers allow (SPEC §3a): the
/// App and its installation together (the JWT), then the installation token (it needs the
/// installation's id; asked in the first round when `installationId` gives it), then the
/// repository and the branch together (they need the token).
/// `head`: without a configured branch, the default branch is read too (a fourth round).
pub(crate) async fn ask_app(
    api_base: &str,
    app: &GitHubApp,
    cfg: &FluxConfig,
    head: bool,
    ui: &Ui,
) -> Result<(AppAnswers<github::Error>, Option<GitHub>), github::Error> {
    let default = github::api_base_for_host(&cfg.repo.authority());
    if api_base != default {
        ui.notice(&format!(
            "the GitHub App's requests go to the GitHub API at `{api_base}` (from `{}`), not `{default}`",
            github::API_URL_ENV
        ));
    }
    let (owner, name) = (cfg.repo.owner.as_str(), cfg.repo.name.as_str());
    let jwt = github::app::app_client(api_base, app.id, &app.key, github::Options::default())?;
    let installation = async {
        match app.installation_id {
            Some(id) => jwt.get_installation(id).await,
            None => jwt.get_repo_installation(owner, name).await,
        }
    };
    // With `installationId` given, the token needs nothing the other two return: it is asked
    // for in the same round (two rounds in all, not three).
    let early_token = async {
        match app.installation_id {
            Some(id) => Some(jwt.installation_client(id, name).await),
            None => None,
        }
    };
    let (found, installation, early_token) = tokio::join!(jwt.get_app(), installation, early_token);
    let mut answers = AppAnswers {
        app: found,
        installation,
        token: None,
        repo: None,
        branch: None,
    };
    let id = match &answers.installation {
        Ok(i) if answers.app.is_ok() && i.suspended_at.is_none() => i.id,
        _ => return Ok((answers, None)),
    };
    let minted = match early_token {
        Some(minted) => minted,
        None => {
            tracing::debug!(
                "asking for an installation token of installation {id}, for `{name}` with contents: read"
            );
            jwt.installation_client(id, name).await
        }
    };
    let (client, info) = match minted {
        Ok((client, info)) => (client, info),
        Err(e) => {
            answers.token = Some(Err(e));
            return Ok((answers, None));
        }
    };
    tracing::debug!("installation token issued, expires at {}", info.expires_at);
    answers.token = Some(Ok(info));
    let branch = async {
        match &cfg.branch {
            Some(b) => Some((
                b.to_string(),
                client.get_branch(owner, name, b.as_str()).await,
            )),
            None => None,
        }
    };
    let (repo, mut branch) = tokio::join!(client.get_repo(owner, name), branch);
    if head
        && branch.is_none()
        && let Ok(r) = &repo
    {
        let b = r.default_branch.clone();
        let answer = client.get_branch(owner, name, &b).await;
        branch = Some((b, answer));
    }
    answers.repo = Some(repo);
    answers.branch = branch;
    Ok((answers, Some(client)))
}

/// `flux.yaml` as the findings name it.
fn flux_file(findings: &Findings) -> String {
    findings
        .sources
        .first()
        .map(|s| s.name().to_string())
        .unwrap_or_default()
}

/// Turns the App's answers into findings (see [`online_app::evaluate`]).
pub(crate) fn app_findings(
    cfg: &FluxConfig,
    app: &GitHubApp,
    findings: &Findings,
    answers: AppAnswers<github::Error>,
) -> Result<Vec<Diagnostic>, CannotAsk> {
    let flux_file = flux_file(findings);
    let secrets_file = findings.secrets_path.display().to_string();
    let files = online::Files {
        flux: &flux_file,
        token: &secrets_file,
    };
    let app_cfg = online_app::AppConfig {
        id: app.id,
        installation_id: app.installation_id,
    };
    online_app::evaluate(cfg, app_cfg, answers, &files).map_err(CannotAsk)
}

/// Every read a command needs, all in flight together: one round trip (SPEC §3). `GET
/// /keys` for `auth: deploy-key`; `GET /meta` too when `meta` (bootstrap needs the SSH host
/// keys). Without a configured branch, the default branch comes from the repository's
/// answer and is not asked for here (a request that would have to wait for another).
pub(crate) async fn ask(gh: &GitHub, cfg: &FluxConfig, meta: bool) -> Answers<github::Error> {
    let (owner, name) = (cfg.repo.owner.as_str(), cfg.repo.name.as_str());
    let deploy_key = cfg.auth == Auth::DeployKey;
    let keys = async {
        match deploy_key {
            true => Some(gh.list_deploy_keys(owner, name).await),
            false => None,
        }
    };
    let host_keys = async {
        match deploy_key && meta {
            true => Some(gh.meta().await),
            false => None,
        }
    };
    let branch = async {
        match &cfg.branch {
            Some(b) => Some((b.to_string(), gh.get_branch(owner, name, b.as_str()).await)),
            None => None,
        }
    };
    let (user, repo, branch, keys, meta) = tokio::join!(
        gh.get_user(),
        gh.get_repo(owner, name),
        branch,
        keys,
        host_keys
    );
    Answers {
        user,
        repo,
        branch,
        keys,
        meta,
    }
}

/// Turns GitHub's answers into findings (see [`online::evaluate`]); `Err` when GitHub could
/// not be asked.
pub(crate) fn github_findings(
    cfg: &FluxConfig,
    token: &Token,
    origin: &TokenOrigin,
    findings: &Findings,
    answers: Answers<github::Error>,
) -> Result<Vec<Diagnostic>, CannotAsk> {
    let flux_file = flux_file(findings);
    let token_file = match origin {
        TokenOrigin::File(p) => p.display().to_string(),
        TokenOrigin::Env => format!("${}", config::TOKEN_ENV),
    };
    let files = online::Files {
        flux: &flux_file,
        token: &token_file,
    };
    online::evaluate(cfg, token.kind(), answers, jiff::Timestamp::now(), &files).map_err(CannotAsk)
}

/// Parses durations such as `5m`, `90s`, `1m30s`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("`{s}` is not a duration; use for example `90s`, `5m` or `1h`");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_duration("1m30s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("45").unwrap().as_secs(), 45);
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        assert!(parse_duration("9999999999999999999h").is_err(), "overflow");
    }
}
