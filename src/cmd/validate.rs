//! `homelab-flux validate`: check the configuration, offline and against GitHub.

use anyhow::Context;

use crate::Exit;
use crate::cli::Global;
use crate::config::{FluxConfig, Loaded, Secrets, TokenOrigin};
use crate::diag::{Code, Diagnostic};
use crate::github::{self, GitHub, Repository};
use crate::online::{self, Answers};
use crate::output::{Format, Ui};
use crate::token::Token;

/// Check the configuration files, the secrets hygiene of the git work tree, and GitHub.
///
/// Offline it checks both files (every problem at once, with file:line:col and a hint) and, when
/// the config directory is in a git work tree, that the secrets file is not tracked, staged or
/// unignored, that it is not readable by others, and that the token is in no tracked file.
/// Online it also asks GitHub whether the token works, the repository and branch exist, and the
/// token may manage deploy keys. Built for pre-commit: use `--offline` there.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip the GitHub checks (repository, branch, token permissions).
    #[arg(long)]
    pub offline: bool,

    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,

    /// Output format: `text` (compiler-style, on stderr) or `json` (one document, on stdout).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(args: &Args, global: &Global, ui: &Ui) -> anyhow::Result<Exit> {
    let mut loaded = super::check_offline(&global.config_dir, Secrets::Optional, ui)?;

    let mut unreachable = None;
    if !args.offline {
        match (&loaded.flux, &loaded.token, loaded.report.has_errors()) {
            (Some(cfg), Some(token), false) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?;
                match runtime.block_on(check_github(cfg, token, &loaded, ui)) {
                    Ok((found, _)) => loaded.report.extend(found),
                    Err(e) => unreachable = Some(e),
                }
            }
            (_, None, false) => loaded.report.push(
                Diagnostic::note(
                    Code::OnlineSkipped,
                    "the GitHub checks were skipped: there is no token",
                )
                .with_hint(format!(
                    "create `{}` or set `HOMELAB_FLUX_TOKEN`",
                    loaded.secrets_path.display()
                )),
            ),
            _ => loaded.report.push(
                Diagnostic::note(
                    Code::OnlineSkipped,
                    "the GitHub checks were skipped because of the errors above",
                )
                .with_hint("fix them and run again"),
            ),
        }
    }
    if args.strict {
        loaded.report.make_strict();
    }
    let exit = super::finish(&loaded, ui, args.format, "the configuration")?;
    match unreachable {
        Some(e) => Err(e),
        None => Ok(exit),
    }
}

/// Asks GitHub the independent questions at once and turns the answers into findings; also
/// returns the repository as GitHub describes it, when it could be read.
pub(crate) async fn check_github(
    cfg: &FluxConfig,
    token: &Token,
    loaded: &Loaded,
    ui: &Ui,
) -> anyhow::Result<(Vec<Diagnostic>, Option<Repository>)> {
    let client = client(cfg, token)?;
    announce_api_base(&client, cfg, ui);
    ui.log(
        1,
        &format!(
            "checking `{}` against the GitHub API at {}",
            cfg.repo,
            client.api_base()
        ),
    );
    let answers = ask(&client, cfg).await;
    let repository = answers.repo.as_ref().ok().cloned();
    let flux_file = loaded
        .sources
        .first()
        .map(|s| s.name().to_string())
        .unwrap_or_default();
    let token_file = match &loaded.token_origin {
        Some(TokenOrigin::File(p)) => p.display().to_string(),
        _ => format!("${}", crate::config::TOKEN_ENV),
    };
    let files = online::Files {
        flux: &flux_file,
        token: &token_file,
    };
    let found = online::evaluate(cfg, token.kind(), answers, jiff::Timestamp::now(), &files)
        .context("cannot check the configuration against GitHub")?;
    Ok((found, repository))
}

/// The client for the repository's host (which loading the configuration proved to be the
/// token's host), or the `HOMELAB_FLUX_GITHUB_API_URL` override.
pub(crate) fn client(cfg: &FluxConfig, token: &Token) -> anyhow::Result<GitHub> {
    let env = std::env::var(github::API_URL_ENV).ok();
    let base = github::resolve_api_base(&cfg.repo.authority(), env.as_deref())?;
    Ok(GitHub::new(&base, token.secret())?)
}

/// Where the token goes is never a surprise: an API base other than the host's own (the
/// `HOMELAB_FLUX_GITHUB_API_URL` override) is printed, `--quiet` or not.
pub(crate) fn announce_api_base(client: &GitHub, cfg: &FluxConfig, ui: &Ui) {
    let default = github::api_base_for_host(&cfg.repo.authority());
    if client.api_base() != default {
        ui.notice(&format!(
            "the token goes to the GitHub API at `{}` (from `{}`), not `{default}`",
            client.api_base(),
            github::API_URL_ENV
        ));
    }
}

/// The requests of SPEC §3, all in flight together. Without a configured branch, the default
/// branch is taken from the repository's answer and not asked for separately (a request that
/// would have to wait for another); bootstrap still proves it over SSH.
pub(crate) async fn ask(gh: &GitHub, cfg: &FluxConfig) -> Answers {
    let (owner, name) = (cfg.repo.owner.as_str(), cfg.repo.name.as_str());
    let keys = async {
        match cfg.auth {
            crate::config::Auth::DeployKey => Some(gh.list_deploy_keys(owner, name).await),
            crate::config::Auth::Token => None,
        }
    };
    let branch = async {
        match &cfg.branch {
            Some(b) => Some((b.to_string(), gh.get_branch(owner, name, b.as_str()).await)),
            None => None,
        }
    };
    let (user, repo, branch, keys) =
        tokio::join!(gh.get_user(), gh.get_repo(owner, name), branch, keys);
    Answers {
        user,
        repo,
        branch,
        keys,
    }
}
