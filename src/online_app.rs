//! What GitHub's answers mean for `auth: github-app`: the App's key, its installation on the
//! repository, an installation token with Contents read, then the repository and branch as that
//! token sees them. Pure logic over the answers the [`github`](crate::github) module fetched,
//! like [`crate::online`], whose checks of the repository and branch it reuses.
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

#[cfg(test)]
mod tests {
    //! Each decision of `evaluate`, from answers as the fake GitHub serves them (GitHub's
    //! documented App bodies and errors), with the findings' code, file and the words that
    //! carry the hint.
    use super::*;
    use crate::github::{Error, ValidationError};
    use std::collections::BTreeMap;

    const FILES: Files<'static> = Files {
        flux: "config/flux.yaml",
        token: "config/secrets-flux.yaml",
    };
    const APP: AppConfig = AppConfig {
        id: 123456,
        installation_id: None,
    };

    fn cfg() -> FluxConfig {
        crate::config::parse_flux(
            "repo: https://github.com/username/manifests\nbranch: main\nauth: github-app\n",
            "f",
        )
        .0
        .unwrap()
    }

    fn app() -> App {
        App {
            id: 123456,
            slug: Some("homelab-flux-test".to_string()),
            name: None,
            permissions: BTreeMap::new(),
        }
    }

    fn installation(suspended: bool) -> Installation {
        Installation {
            id: 987654,
            app_id: Some(123456),
            app_slug: None,
            account: Some(crate::facts::Account {
                login: "username".to_string(),
            }),
            repository_selection: Some("selected".to_string()),
            permissions: BTreeMap::new(),
            suspended_at: suspended.then(|| "2026-01-01T00:00:00Z".to_string()),
        }
    }

    fn ok() -> AppAnswers<Error> {
        AppAnswers {
            app: Ok(app()),
            installation: Ok(installation(false)),
            token: Some(Ok(InstallationTokenInfo {
                expires_at: "2026-12-07T11:00:00Z".to_string(),
                permissions: BTreeMap::from([("contents".to_string(), "read".to_string())]),
            })),
            repo: Some(Ok(Repository::example())),
            branch: Some((
                "main".to_string(),
                Ok(Branch {
                    name: "main".to_string(),
                    commit_sha: "0".repeat(40),
                }),
            )),
        }
    }

    fn findings(answers: AppAnswers<Error>, app: AppConfig) -> Vec<Diagnostic> {
        evaluate(&cfg(), app, answers, &FILES).unwrap_or_else(|e| panic!("not asked: {e}"))
    }

    fn only(found: &[Diagnostic], code: Code) -> &Diagnostic {
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].code, code, "{found:#?}");
        &found[0]
    }

    #[test]
    fn an_installation_that_reads_the_repository_has_no_findings() {
        assert!(findings(ok(), APP).is_empty());
    }

    #[test]
    fn a_rejected_jwt_is_the_only_finding_with_githubs_message() {
        let mut a = ok();
        a.app = Err(Error::Unauthorized {
            endpoint: "GET /app".to_string(),
            message: "A JSON web token could not be decoded".to_string(),
        });
        let found = findings(a, APP);
        let d = only(&found, Code::AppKeyRejected);
        assert!(
            d.message
                .contains("\"A JSON web token could not be decoded\""),
            "{d:?}"
        );
        assert_eq!(d.location.as_ref().unwrap().file, FILES.token);
    }

    #[test]
    fn not_installed_links_to_the_install_page_or_names_the_configured_id() {
        let mut a = ok();
        a.installation = Err(Error::NotFound {
            endpoint: "GET /repos/username/manifests/installation".to_string(),
            message: "Not Found".to_string(),
            accepted_permissions: None,
        });
        let found = findings(a, APP);
        let d = only(&found, Code::AppNotInstalled);
        assert!(
            d.hint
                .as_deref()
                .unwrap()
                .contains("https://github.com/apps/homelab-flux-test/installations/new"),
            "{d:?}"
        );
        let mut a = ok();
        a.installation = Err(Error::NotFound {
            endpoint: "GET /app/installations/5".to_string(),
            message: "Not Found".to_string(),
            accepted_permissions: None,
        });
        let found = findings(
            a,
            AppConfig {
                installation_id: Some(5),
                ..APP
            },
        );
        let d = only(&found, Code::AppNotInstalled);
        assert!(d.message.contains("installation 5"), "{d:?}");
        assert!(
            d.hint.as_deref().unwrap().contains("installationId"),
            "{d:?}"
        );
    }

    #[test]
    fn a_token_refused_for_contents_names_the_permission() {
        let mut a = ok();
        a.token = Some(Err(Error::Validation {
            endpoint: "POST /app/installations/987654/access_tokens".to_string(),
            message: "The permissions requested are not granted to this installation.".to_string(),
            errors: Vec::<ValidationError>::new(),
        }));
        a.repo = None;
        a.branch = None;
        let found = findings(a, APP);
        let d = only(&found, Code::AppContentsForbidden);
        assert!(
            d.hint.as_deref().unwrap().contains("Contents: Read-only"),
            "{d:?}"
        );
        assert!(d.message.contains("not granted"), "{d:?}");
    }

    #[test]
    fn a_suspended_installation_is_named_from_its_answer_or_the_tokens_403() {
        let mut a = ok();
        a.installation = Ok(installation(true));
        a.token = None;
        only(&findings(a, APP), Code::AppSuspended);
        let mut a = ok();
        a.token = Some(Err(Error::Forbidden {
            endpoint: "POST /app/installations/987654/access_tokens".to_string(),
            message: "This installation has been suspended".to_string(),
            accepted_permissions: None,
        }));
        only(&findings(a, APP), Code::AppSuspended);
    }

    #[test]
    fn a_repository_the_token_cannot_see_points_at_the_installations_access() {
        let mut a = ok();
        a.repo = Some(Err(Error::NotFound {
            endpoint: "GET /repos/username/manifests".to_string(),
            message: "Not Found".to_string(),
            accepted_permissions: None,
        }));
        let found = findings(a, APP);
        let d = only(&found, Code::RepoNotFound);
        assert!(d.message.contains("installation token"), "{d:?}");
    }

    #[test]
    fn github_unreachable_is_not_a_finding() {
        let mut a = ok();
        a.installation = Err(Error::Server {
            endpoint: "GET /repos/username/manifests/installation".to_string(),
            status: 502,
            attempts: 4,
        });
        assert!(evaluate(&cfg(), APP, a, &FILES).is_err());
    }
}
