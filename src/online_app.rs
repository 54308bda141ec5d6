//! What GitHub's answers mean for `auth: github-app`: the App's key, its installation on the
//! repository, an installation token with Contents read, then the repository and branch as that
//! token sees them. Pure logic over the answers the [`github`](crate::github) module fetched,
//! like [`online`](crate::online), whose checks of the repository and branch it reuses.
//!
//! Each failure carries GitHub's own message as the cause and says what to change, and where.

use crate::diag::{Code, Diagnostic};
use crate::facts::{
    App, Branch, Installation, InstallationTokenInfo, Refusal, Refused, Repository, User,
};
use crate::online::{self, Answers, Files};
use crate::settings::FluxConfig;
use crate::token::TokenKind;

/// The answers, in their rounds: the App and the installation together (JWT), then the
/// installation token, then the repository and the branch together (installation token).
/// A later round is `None` when an earlier answer stopped it.
#[derive(Debug)]
pub struct AppAnswers<E> {
    pub app: Result<App, E>,
    pub installation: Result<Installation, E>,
    pub token: Option<Result<InstallationTokenInfo, E>>,
    pub repo: Option<Result<Repository, E>>,
    pub branch: Option<(String, Result<Branch, E>)>,
}

/// What the configuration says of the App, for the messages.
#[derive(Debug, Clone, Copy)]
pub struct AppConfig {
    pub id: u64,
    pub installation_id: Option<u64>,
}

/// Turns the answers into findings. `Err` when GitHub could not be asked (exit 2).
pub fn evaluate<E: Refused>(
    cfg: &FluxConfig,
    app_cfg: AppConfig,
    answers: AppAnswers<E>,
    files: &Files<'_>,
) -> Result<Vec<Diagnostic>, E> {
    let repo_name = format!("{}/{}", cfg.repo.owner, cfg.repo.name);
    let cause = |e: &E| {
        e.github_message()
            .map(|m| format!(" (GitHub: \"{}\")", crate::text::escape(m)))
            .unwrap_or_default()
    };
    let AppAnswers {
        app,
        installation,
        token,
        repo,
        branch,
    } = answers;

    // 1. The key: a JWT GitHub cannot verify makes every other answer meaningless.
    let app = match app {
        Ok(app) => Some(app),
        Err(e) if e.refusal() == Refusal::Unauthorized => {
            return Ok(vec![Diagnostic::error(
                Code::AppKeyRejected,
                format!("GitHub rejected the App's JWT for App ID {}{}", app_cfg.id, cause(&e)),
            )
            .in_file(files.token)
            .with_hint("check `githubApp.id` (the App ID on the App's settings page, not the Client ID), and that the private key is one the App still lists: a key deleted there is revoked; generate a new one and save it")]);
        }
        Err(e) if matches!(e.refusal(), Refusal::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let slug = app.as_ref().and_then(|a| a.slug.clone());
    let install_link = match &slug {
        Some(slug) => format!("https://github.com/apps/{slug}/installations/new"),
        None => "the App's public page (`https://github.com/apps/<slug>`), \"Install\"".to_string(),
    };

    // 2. The installation on the repository.
    let installation = match installation {
        Ok(i) => i,
        Err(e)
            if matches!(
                e.refusal(),
                Refusal::NotFound { .. } | Refusal::Unauthorized
            ) =>
        {
            let d = match app_cfg.installation_id {
                None => Diagnostic::error(
                    Code::AppNotInstalled,
                    format!(
                        "the GitHub App{} is not installed on `{repo_name}`{}",
                        slug.as_ref().map(|s| format!(" `{s}`")).unwrap_or_default(),
                        cause(&e)
                    ),
                )
                .in_file(files.flux)
                .with_hint(format!(
                    "install it on `{}` with access to `{repo_name}`: {install_link}",
                    cfg.repo.owner
                )),
                Some(id) => Diagnostic::error(
                    Code::AppNotInstalled,
                    format!("the GitHub App has no installation {id}{}", cause(&e)),
                )
                .in_file(files.token)
                .with_hint(format!(
                    "fix `githubApp.installationId`, or remove it to have the installation on `{repo_name}` looked up; to install the App: {install_link}"
                )),
            };
            return Ok(vec![d]);
        }
        Err(e) => return Err(e),
    };
    let account = installation
        .account
        .as_ref()
        .map(|a| a.login.clone())
        .unwrap_or_else(|| cfg.repo.owner.to_string());
    let configure = format!("`{account}`'s settings, GitHub Apps, \"Configure\" beside the App");
    if let Some(since) = &installation.suspended_at {
        return Ok(vec![suspended(&account, Some(since), &configure, files)]);
    }

    // 3. An installation token for this repository with Contents read.
    match token {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            let refusal = e.refusal();
            let message = e.github_message().unwrap_or_default().to_ascii_lowercase();
            if matches!(refusal, Refusal::Forbidden { .. }) && message.contains("suspend") {
                return Ok(vec![suspended(&account, None, &configure, files)]);
            }
            if matches!(refusal, Refusal::Forbidden { .. } | Refusal::Unprocessable) {
                return Ok(vec![Diagnostic::error(
                    Code::AppContentsForbidden,
                    format!(
                        "GitHub refused the App an installation token to read the contents of `{repo_name}`{}",
                        cause(&e)
                    ),
                )
                .in_file(files.flux)
                .with_hint(format!(
                    "give the App Contents: Read-only (its settings, Permissions & events), accept it in {configure}, and include `{repo_name}` there"
                ))]);
            }
            if matches!(refusal, Refusal::NotFound { .. }) {
                return Ok(vec![
                    Diagnostic::error(
                        Code::AppNotInstalled,
                        format!(
                            "the App's installation {} was not found when asked for a token{}",
                            installation.id,
                            cause(&e)
                        ),
                    )
                    .in_file(files.token)
                    .with_hint(format!("install the App again: {install_link}")),
                ]);
            }
            return Err(e);
        }
        None => {}
    }

    // 4. The repository and the branch, as the installation token sees them.
    let Some(repo) = repo else {
        return Ok(Vec::new());
    };
    let user = User {
        login: slug.unwrap_or_default(),
        token_expiration: None,
        oauth_scopes: None,
    };
    let answers = Answers {
        user: Ok(user),
        repo,
        branch,
        keys: None,
        meta: None,
    };
    let mut out = online::evaluate(
        cfg,
        TokenKind::Installation,
        answers,
        jiff::Timestamp::now(),
        files,
    )?;
    for d in &mut out {
        if d.code == Code::RepoNotFound {
            d.message =
                format!("repository `{repo_name}` not found with the App's installation token");
            d.hint = Some(format!(
                "check the spelling of `{repo_name}`, and that the installation's repository access includes it ({configure})"
            ));
        }
    }
    Ok(out)
}

fn suspended(account: &str, since: Option<&str>, configure: &str, files: &Files<'_>) -> Diagnostic {
    Diagnostic::error(
        Code::AppSuspended,
        format!(
            "the GitHub App's installation on `{account}` is suspended{}",
            since
                .map(|s| format!(" (since {})", crate::text::escape(s)))
                .unwrap_or_default()
        ),
    )
    .in_file(files.token)
    .with_hint(format!(
        "unsuspend it: {configure}, \"Unsuspend\"; Flux cannot fetch while it is suspended"
    ))
}
