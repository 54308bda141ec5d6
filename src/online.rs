//! What GitHub's answers mean for the configuration: the online checks of `validate`, as pure
//! logic over the answers the [`github`](crate::github) module fetched.
//!
//! Each answer becomes diagnostics with a hint; answers that say GitHub could not be asked at all
//! (unreachable, rate limited, server errors after retries) are returned as the error, so the
//! command exits 2 instead of pretending the configuration is wrong.

use jiff::{SignedDuration, Timestamp};

use crate::diag::{Code, Diagnostic, Severity};
use crate::facts::{Branch, DeployKey, Meta, Refusal, Refused, Repository, User};
use crate::settings::{Auth, FluxConfig};
use crate::token::TokenKind;

/// A token that expires within this many days gets a warning (an error with `auth: token`).
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// The answers of the independent requests; `E` is the GitHub client's error.
#[derive(Debug)]
pub struct Answers<E> {
    pub user: Result<User, E>,
    pub repo: Result<Repository, E>,
    /// The branch checked (configured, or the default branch) and GitHub's answer.
    pub branch: Option<(String, Result<Branch, E>)>,
    /// `GET /keys`, asked for `auth: deploy-key` only.
    pub keys: Option<Result<Vec<DeployKey>, E>>,
    /// `GET /meta`, asked by `bootstrap` with `auth: deploy-key` (the SSH host keys); not a
    /// check of its own.
    pub meta: Option<Result<Meta, E>>,
}

/// Where findings point: the files as the user names them.
pub struct Files<'a> {
    pub flux: &'a str,
    pub token: &'a str,
}

/// Turns the answers into findings. `Err` when GitHub could not be asked (exit 2).
pub fn evaluate<E: Refused>(
    cfg: &FluxConfig,
    token_kind: TokenKind,
    answers: Answers<E>,
    now: Timestamp,
    files: &Files<'_>,
) -> Result<Vec<Diagnostic>, E> {
    let mut out = Vec::new();
    let Answers {
        user,
        repo,
        branch,
        keys,
        meta: _,
    } = answers;
    let repo_name = format!("{}/{}", cfg.repo.owner, cfg.repo.name);

    // 1. The token itself. A rejected token makes every other answer meaningless.
    match user {
        Err(e) if e.refusal() == Refusal::Unauthorized => {
            out.push(
                Diagnostic::error(
                    Code::TokenRejected,
                    "GitHub rejected the token (expired, revoked or mistyped)",
                )
                .in_file(files.token)
                .with_hint(format!(
                    "create a new token with access to `{repo_name}` and paste it into `{}`",
                    files.token
                )),
            );
            return Ok(out);
        }
        Err(e) => return Err(e),
        Ok(user) => {
            out.extend(expiry(&user, cfg.auth, now, files.token));
            if let Some(scopes) = &user.oauth_scopes {
                out.extend(scopes_finding(scopes, cfg.auth, files.token, &repo));
            }
        }
    }

    // 2. The repository.
    let repository = match repo {
        Ok(r) => Some(r),
        Err(e) if is_not_found_or_forbidden(&e) => {
            out.push(
                Diagnostic::error(
                    Code::RepoNotFound,
                    format!("repository `{repo_name}` not found, or the token cannot see it"),
                )
                .in_file(files.flux)
                .with_hint(with_permissions(
                    not_found_checklist(token_kind, &repo_name),
                    &e,
                )),
            );
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(r) = &repository {
        if r.archived {
            out.push(
                Diagnostic::warning(Code::RepoArchived, format!("repository `{repo_name}` is archived"))
                    .in_file(files.flux)
                    .with_hint("Flux can read it, but nobody can push changes to it; unarchive it in the repository's settings"),
            );
        }
        if !r.private {
            out.push(
                Diagnostic::warning(
                    Code::RepoPublic,
                    format!(
                        "repository `{repo_name}` is public: everything in it is readable by anyone"
                    ),
                )
                .in_file(files.flux)
                .with_hint("keep Secrets in it encrypted (SOPS), or make the repository private"),
            );
        }
        if cfg.branch.is_none() {
            out.push(
                Diagnostic::note(
                    Code::DefaultBranch,
                    format!(
                        "`branch` is not set; Flux will follow the default branch `{}`",
                        r.default_branch
                    ),
                )
                .in_file(files.flux),
            );
        }
    }

    // 3. The branch (only meaningful once the repository is visible).
    if let (Some(_), Some((name, answer))) = (&repository, branch) {
        match answer {
            Ok(_) => {}
            Err(e) if matches!(e.refusal(), Refusal::NotFound { .. }) => {
                let default = repository
                    .as_ref()
                    .map(|r| r.default_branch.as_str())
                    .unwrap_or("main");
                out.push(
                    Diagnostic::error(
                        Code::BranchNotFound,
                        format!("branch `{name}` not found in `{repo_name}`"),
                    )
                    .in_file(files.flux)
                    .with_hint(with_permissions(
                        format!("the default branch is `{default}`: set `branch: {default}`, or push the branch `{name}` first"),
                        &e,
                    )),
                );
            }
            Err(e) if matches!(e.refusal(), Refusal::Forbidden { .. }) => {
                let d = if cfg.auth != Auth::DeployKey {
                    Diagnostic::error(
                        Code::ContentsForbidden,
                        format!("the token cannot read the contents of `{repo_name}`, which the cluster needs with `auth: token`"),
                    )
                    .with_hint(with_permissions("give the token Contents: Read on this repository".to_string(), &e))
                } else {
                    Diagnostic::note(
                        Code::BranchUnchecked,
                        format!("branch `{name}` cannot be checked with this token (no Contents: Read); bootstrap checks it over SSH with the deploy key"),
                    )
                    .with_hint(with_permissions("nothing to do; or give the token Contents: Read to check it now".to_string(), &e))
                };
                out.push(d.in_file(files.flux));
            }
            Err(e) => return Err(e),
        }
    }

    // 4. Deploy keys: listing them needs Administration: Read.
    if let (Some(_), Some(answer)) = (&repository, keys) {
        match answer {
            Ok(_) => {}
            Err(e) if is_not_found_or_forbidden(&e) => out.push(
                Diagnostic::error(
                    Code::DeployKeysForbidden,
                    format!("the token cannot manage the deploy keys of `{repo_name}`"),
                )
                .in_file(files.token)
                .with_hint(with_permissions(
                    "give the token Administration: Read and write on this repository (classic tokens: the `repo` scope and admin rights)".to_string(),
                    &e,
                )),
            ),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn is_not_found_or_forbidden(e: &impl Refused) -> bool {
    matches!(
        e.refusal(),
        Refusal::NotFound { .. } | Refusal::Forbidden { .. }
    )
}

/// Appends GitHub's `X-Accepted-GitHub-Permissions`, when it sent one.
fn with_permissions(hint: String, e: &impl Refused) -> String {
    match e.refusal() {
        Refusal::NotFound {
            accepted_permissions: Some(p),
        }
        | Refusal::Forbidden {
            accepted_permissions: Some(p),
        } if !p.is_empty() => format!("{hint} (GitHub says it needs `{p}`)"),
        _ => hint,
    }
}

fn not_found_checklist(kind: TokenKind, repo: &str) -> String {
    match kind {
        TokenKind::FineGrained => format!(
            "check the spelling of `{repo}`; that the token's resource owner is `{}`; and that its repository access includes this repository",
            repo.split('/').next().unwrap_or(repo)
        ),
        TokenKind::Classic | TokenKind::Legacy => format!(
            "check the spelling of `{repo}`; that the token has the `repo` scope; that your account can see the repository; and, for an organisation with SAML SSO, that the token is authorized for it"
        ),
        _ => format!("check the spelling of `{repo}` and that the token can see the repository"),
    }
}

fn expiry(user: &User, auth: Auth, now: Timestamp, file: &str) -> Option<Diagnostic> {
    let at = user.token_expiration?;
    let when = crate::text::format_utc(at);
    if at <= now {
        return Some(
            Diagnostic::error(Code::TokenExpired, format!("the token expired on {when}"))
                .in_file(file)
                .with_hint("create a new token and paste it into the secrets file"),
        );
    }
    let left = at.duration_since(now);
    let soon = left < SignedDuration::from_hours(24 * EXPIRY_WARNING_DAYS);
    let days = left.as_hours() / 24;
    match (auth, soon) {
        (Auth::Token, true) => Some(
            Diagnostic::error(
                Code::TokenExpiring,
                format!("the token expires on {when} (in {days} days), and with `auth: token` the cluster loses access then"),
            )
            .in_file(file)
            .with_hint("create a token with a later expiry, or use `auth: deploy-key`, whose key does not expire"),
        ),
        (Auth::Token, false) => Some(
            Diagnostic::warning(
                Code::TokenExpiring,
                format!("the token expires on {when}; with `auth: token` the cluster loses access then"),
            )
            .in_file(file)
            .with_hint("run `homelab-flux bootstrap` with a new token before then, or use `auth: deploy-key`"),
        ),
        (Auth::DeployKey, true) => Some(
            Diagnostic::warning(
                Code::TokenExpiring,
                format!("the token expires on {when} (in {days} days)"),
            )
            .in_file(file)
            .with_hint("the deploy key keeps working; you need a valid token for the next bootstrap"),
        ),
        // With the App the token only cleans up an old deploy key.
        (Auth::DeployKey | Auth::GitHubApp, false) => None,
        (Auth::GitHubApp, true) => Some(
            Diagnostic::note(
                Code::TokenExpiring,
                format!("the token expires on {when} (in {days} days)"),
            )
            .in_file(file)
            .with_hint("with `auth: github-app` the cluster does not use it; it only deletes this cluster's old deploy key"),
        ),
    }
}

fn scopes_finding<E>(
    scopes: &[String],
    auth: Auth,
    file: &str,
    repo: &Result<Repository, E>,
) -> Option<Diagnostic> {
    let has = |s: &str| scopes.iter().any(|x| x == s);
    let public = repo.as_ref().is_ok_and(|r| !r.private);
    let ok = has("repo") || (auth == Auth::Token && public && has("public_repo"));
    (!ok).then(|| {
        let listed = if scopes.is_empty() {
            "no scopes".to_string()
        } else {
            scopes.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        };
        let what = match auth {
            Auth::DeployKey => "creating a deploy key",
            Auth::Token => "reading the repository",
            Auth::GitHubApp => "deleting this cluster's old deploy key",
        };
        Diagnostic::new(Severity::Error, Code::TokenScopes, format!("the classic token has {listed}; {what} needs `repo`"))
            .in_file(file)
            .with_hint("tick the `repo` scope at https://github.com/settings/tokens, or use a fine-grained token for this repository")
    })
}

#[cfg(test)]
mod tests {
    //! Each decision of `evaluate`, from answers written out as GitHub gives them (errors.json
    //! and the documented bodies, as the fake GitHub of the integration tests serves them), to
    //! the findings written out in full: severity, code, message, file and hint.

    use super::*;
    use crate::github::Error;

    const FLUX: &str = "config/flux.yaml";
    const SECRETS: &str = "config/secrets-flux.yaml";
    const FILES: Files<'static> = Files {
        flux: FLUX,
        token: SECRETS,
    };
    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    /// `flux.yaml` for `username/manifests` with `rest` after the `repo:` line.
    fn config(rest: &str) -> FluxConfig {
        let text = format!("repo: https://github.com/username/manifests.git\n{rest}");
        crate::config::parse_flux(&text, FLUX)
            .0
            .expect("a valid flux.yaml")
    }

    /// `branch: main`, with a deploy key (the default `auth`).
    fn deploy_key() -> FluxConfig {
        config("branch: main\n")
    }

    /// `branch: main` with `auth: token`.
    fn auth_token() -> FluxConfig {
        config("branch: main\nauth: token\n")
    }

    /// `GET /user` of a fine-grained token without an expiry (no `x-oauth-scopes`).
    fn user() -> User {
        User {
            login: "username".to_string(),
            token_expiration: None,
            oauth_scopes: None,
        }
    }

    /// `GET /user` of a classic token with these `x-oauth-scopes`.
    fn classic(scopes: &[&str]) -> User {
        User {
            oauth_scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
            ..user()
        }
    }

    /// `GET /user` with `github-authentication-token-expiration` this far from now.
    fn expiring_in(left: SignedDuration) -> User {
        User {
            token_expiration: Some(now().checked_add(left).unwrap()),
            ..user()
        }
    }

    /// Every answer as a homelab wants it: the token accepted, the repository private, the
    /// branch `main` there, the deploy keys listed.
    fn answers() -> Answers<Error> {
        Answers {
            user: Ok(user()),
            repo: Ok(Repository::example()),
            branch: Some((
                "main".to_string(),
                Ok(Branch {
                    name: "main".to_string(),
                    commit_sha: SHA.to_string(),
                }),
            )),
            keys: Some(Ok(Vec::new())),
            meta: None,
        }
    }

    /// errors.json `not-found-404`, with `X-Accepted-GitHub-Permissions` when given.
    fn not_found(endpoint: &str, permissions: Option<&str>) -> Error {
        Error::NotFound {
            endpoint: endpoint.to_string(),
            message: "Not Found".to_string(),
            accepted_permissions: permissions.map(str::to_string),
        }
    }

    /// errors.json `resource-not-accessible-403`, with `X-Accepted-GitHub-Permissions`.
    fn forbidden(endpoint: &str, permissions: Option<&str>) -> Error {
        Error::Forbidden {
            endpoint: endpoint.to_string(),
            message: "Resource not accessible by personal access token".to_string(),
            accepted_permissions: permissions.map(str::to_string),
        }
    }

    /// 5xx after every retry: GitHub could not be asked.
    fn server_error(endpoint: &str) -> Error {
        Error::Server {
            endpoint: endpoint.to_string(),
            status: 502,
            attempts: 4,
        }
    }

    fn findings(cfg: &FluxConfig, kind: TokenKind, answers: Answers<Error>) -> Vec<Diagnostic> {
        evaluate(cfg, kind, answers, now(), &FILES)
            .unwrap_or_else(|e| panic!("GitHub counted as not asked: {e}"))
    }

    fn repo_not_found(hint: &str) -> Diagnostic {
        Diagnostic::error(
            Code::RepoNotFound,
            "repository `username/manifests` not found, or the token cannot see it",
        )
        .in_file(FLUX)
        .with_hint(hint)
    }

    #[test]
    fn answers_as_wanted_give_no_finding() {
        assert_eq!(
            findings(&deploy_key(), TokenKind::FineGrained, answers()),
            []
        );
        assert_eq!(
            findings(
                &auth_token(),
                TokenKind::FineGrained,
                Answers {
                    keys: None,
                    ..answers()
                }
            ),
            []
        );
    }

    #[test]
    fn the_meta_answer_is_not_a_check() {
        let answers = Answers {
            meta: Some(Err(server_error("GET /meta"))),
            ..answers()
        };
        assert_eq!(findings(&deploy_key(), TokenKind::FineGrained, answers), []);
    }

    #[test]
    fn a_rejected_token_is_the_only_finding_whatever_else_github_answered() {
        let answers = Answers {
            user: Err(Error::Unauthorized {
                endpoint: "GET /user".to_string(),
                message: "Bad credentials".to_string(),
            }),
            repo: Err(server_error("GET /repos/username/manifests")),
            branch: Some((
                "main".to_string(),
                Err(not_found(
                    "GET /repos/username/manifests/branches/main",
                    None,
                )),
            )),
            keys: Some(Err(forbidden("GET /repos/username/manifests/keys", None))),
            meta: None,
        };
        assert_eq!(
            findings(&deploy_key(), TokenKind::FineGrained, answers),
            [Diagnostic::error(
                Code::TokenRejected,
                "GitHub rejected the token (expired, revoked or mistyped)"
            )
            .in_file(SECRETS)
            .with_hint(
                "create a new token with access to `username/manifests` and paste it into `config/secrets-flux.yaml`"
            )]
        );
    }

    #[test]
    fn a_token_that_expired_is_an_error_with_either_auth() {
        let expired = Diagnostic::error(
            Code::TokenExpired,
            "the token expired on 2026-12-01 12:00:00 UTC",
        )
        .in_file(SECRETS)
        .with_hint("create a new token and paste it into the secrets file");
        for cfg in [deploy_key(), auth_token()] {
            let answers = Answers {
                user: Ok(expiring_in(SignedDuration::ZERO)),
                ..answers()
            };
            assert_eq!(
                findings(&cfg, TokenKind::FineGrained, answers),
                std::slice::from_ref(&expired),
                "{:?}",
                cfg.auth
            );
        }
    }

    #[test]
    fn a_token_expiring_within_14_days_warns_with_a_deploy_key_and_is_an_error_with_auth_token() {
        let soon = || Answers {
            user: Ok(expiring_in(SignedDuration::from_hours(14 * 24 - 1))),
            ..answers()
        };
        assert_eq!(
            findings(&deploy_key(), TokenKind::FineGrained, soon()),
            [Diagnostic::warning(
                Code::TokenExpiring,
                "the token expires on 2026-12-15 11:00:00 UTC (in 13 days)"
            )
            .in_file(SECRETS)
            .with_hint(
                "the deploy key keeps working; you need a valid token for the next bootstrap"
            )]
        );
        assert_eq!(
            findings(&auth_token(), TokenKind::FineGrained, soon()),
            [Diagnostic::error(
                Code::TokenExpiring,
                "the token expires on 2026-12-15 11:00:00 UTC (in 13 days), and with `auth: token` the cluster loses access then"
            )
            .in_file(SECRETS)
            .with_hint("create a token with a later expiry, or use `auth: deploy-key`, whose key does not expire")]
        );
    }

    #[test]
    fn a_token_expiring_in_14_days_or_later_is_silent_with_a_deploy_key_and_a_warning_with_auth_token()
     {
        let later = || Answers {
            user: Ok(expiring_in(SignedDuration::from_hours(
                24 * EXPIRY_WARNING_DAYS,
            ))),
            ..answers()
        };
        assert_eq!(findings(&deploy_key(), TokenKind::FineGrained, later()), []);
        assert_eq!(
            findings(&auth_token(), TokenKind::FineGrained, later()),
            [Diagnostic::warning(
                Code::TokenExpiring,
                "the token expires on 2026-12-15 12:00:00 UTC; with `auth: token` the cluster loses access then"
            )
            .in_file(SECRETS)
            .with_hint("run `homelab-flux bootstrap` with a new token before then, or use `auth: deploy-key`")]
        );
    }

    #[test]
    fn a_classic_token_needs_the_repo_scope() {
        let with = |scopes: &[&str]| Answers {
            user: Ok(classic(scopes)),
            ..answers()
        };
        let hint = "tick the `repo` scope at https://github.com/settings/tokens, or use a fine-grained token for this repository";
        assert_eq!(
            findings(
                &deploy_key(),
                TokenKind::Classic,
                with(&["read:user", "gist"])
            ),
            [Diagnostic::error(
                Code::TokenScopes,
                "the classic token has `read:user`, `gist`; creating a deploy key needs `repo`"
            )
            .in_file(SECRETS)
            .with_hint(hint)]
        );
        assert_eq!(
            findings(
                &auth_token(),
                TokenKind::Classic,
                Answers {
                    keys: None,
                    ..with(&[])
                }
            ),
            [Diagnostic::error(
                Code::TokenScopes,
                "the classic token has no scopes; reading the repository needs `repo`"
            )
            .in_file(SECRETS)
            .with_hint(hint)]
        );
        assert_eq!(
            findings(&deploy_key(), TokenKind::Classic, with(&["repo", "gist"])),
            []
        );
    }

    #[test]
    fn public_repo_is_enough_to_read_a_public_repository_with_auth_token_only() {
        let public = || {
            let mut repo = Repository::example();
            repo.private = false;
            repo.visibility = Some("public".to_string());
            Answers {
                user: Ok(classic(&["public_repo"])),
                repo: Ok(repo),
                ..answers()
            }
        };
        assert_eq!(
            findings(
                &auth_token(),
                TokenKind::Classic,
                Answers {
                    keys: None,
                    ..public()
                }
            ),
            [Diagnostic::warning(
                Code::RepoPublic,
                "repository `username/manifests` is public: everything in it is readable by anyone",
            )
            .in_file(FLUX)
            .with_hint("keep Secrets in it encrypted (SOPS), or make the repository private")]
        );
        // A deploy key is created with the token: `public_repo` does not allow that.
        let found = findings(&deploy_key(), TokenKind::Classic, public());
        assert_eq!(
            found.iter().map(|d| d.code).collect::<Vec<_>>(),
            [Code::TokenScopes, Code::RepoPublic]
        );
        assert_eq!(
            found[0].message,
            "the classic token has `public_repo`; creating a deploy key needs `repo`"
        );
        // A private repository needs `repo` to be read at all.
        let private = Answers {
            user: Ok(classic(&["public_repo"])),
            keys: None,
            ..answers()
        };
        assert_eq!(
            findings(&auth_token(), TokenKind::Classic, private)
                .iter()
                .map(|d| (d.code, d.message.as_str()))
                .collect::<Vec<_>>(),
            [(
                Code::TokenScopes,
                "the classic token has `public_repo`; reading the repository needs `repo`"
            )]
        );
    }

    #[test]
    fn a_repository_not_found_is_one_error_with_the_checklist_of_the_token_kind() {
        let missing = |error: Error| Answers {
            repo: Err(error),
            // Nothing is asked of, or said about, a repository that cannot be seen.
            branch: Some((
                "main".to_string(),
                Err(not_found(
                    "GET /repos/username/manifests/branches/main",
                    None,
                )),
            )),
            keys: Some(Err(server_error("GET /repos/username/manifests/keys"))),
            ..answers()
        };
        let endpoint = "GET /repos/username/manifests";
        assert_eq!(
            findings(
                &deploy_key(),
                TokenKind::FineGrained,
                missing(not_found(endpoint, None))
            ),
            [repo_not_found(
                "check the spelling of `username/manifests`; that the token's resource owner is `username`; and that its repository access includes this repository"
            )]
        );
        let classic = "check the spelling of `username/manifests`; that the token has the `repo` scope; that your account can see the repository; and, for an organisation with SAML SSO, that the token is authorized for it";
        for kind in [TokenKind::Classic, TokenKind::Legacy] {
            assert_eq!(
                findings(&deploy_key(), kind, missing(not_found(endpoint, None))),
                [repo_not_found(classic)],
                "{kind:?}"
            );
        }
        assert_eq!(
            findings(
                &deploy_key(),
                TokenKind::Installation,
                missing(not_found(endpoint, None))
            ),
            [repo_not_found(
                "check the spelling of `username/manifests` and that the token can see the repository"
            )]
        );
        // A 403 says the same, with the permission GitHub names (none when the header is empty).
        assert_eq!(
            findings(
                &deploy_key(),
                TokenKind::Classic,
                missing(forbidden(endpoint, Some("metadata=read")))
            ),
            [repo_not_found(&format!(
                "{classic} (GitHub says it needs `metadata=read`)"
            ))]
        );
        assert_eq!(
            findings(
                &deploy_key(),
                TokenKind::Classic,
                missing(forbidden(endpoint, Some("")))
            ),
            [repo_not_found(classic)]
        );
    }

    #[test]
    fn an_archived_or_public_repository_warns_and_an_unset_branch_names_the_default() {
        let mut repo = Repository::example();
        repo.archived = true;
        repo.private = false;
        repo.default_branch = "trunk".to_string();
        let answers = Answers {
            repo: Ok(repo),
            branch: Some((
                "trunk".to_string(),
                Ok(Branch {
                    name: "trunk".to_string(),
                    commit_sha: SHA.to_string(),
                }),
            )),
            ..answers()
        };
        assert_eq!(
            findings(&config(""), TokenKind::FineGrained, answers),
            [
                Diagnostic::warning(Code::RepoArchived, "repository `username/manifests` is archived")
                    .in_file(FLUX)
                    .with_hint("Flux can read it, but nobody can push changes to it; unarchive it in the repository's settings"),
                Diagnostic::warning(
                    Code::RepoPublic,
                    "repository `username/manifests` is public: everything in it is readable by anyone"
                )
                .in_file(FLUX)
                .with_hint("keep Secrets in it encrypted (SOPS), or make the repository private"),
                Diagnostic::note(
                    Code::DefaultBranch,
                    "`branch` is not set; Flux will follow the default branch `trunk`"
                )
                .in_file(FLUX),
            ]
        );
    }

    #[test]
    fn a_branch_not_found_names_the_default_branch() {
        let mut repo = Repository::example();
        repo.default_branch = "trunk".to_string();
        let answers = Answers {
            repo: Ok(repo),
            branch: Some((
                "develop".to_string(),
                Err(not_found(
                    "GET /repos/username/manifests/branches/develop",
                    None,
                )),
            )),
            ..answers()
        };
        assert_eq!(
            findings(&config("branch: develop\n"), TokenKind::FineGrained, answers),
            [Diagnostic::error(
                Code::BranchNotFound,
                "branch `develop` not found in `username/manifests`"
            )
            .in_file(FLUX)
            .with_hint("the default branch is `trunk`: set `branch: trunk`, or push the branch `develop` first")]
        );
    }

    #[test]
    fn a_branch_the_token_may_not_read_is_a_note_with_a_deploy_key_and_an_error_with_auth_token() {
        // errors.json `resource-not-accessible-403` with `X-Accepted-GitHub-Permissions`.
        let unreadable = || Answers {
            branch: Some((
                "main".to_string(),
                Err(forbidden(
                    "GET /repos/username/manifests/branches/main",
                    Some("contents=read"),
                )),
            )),
            ..answers()
        };
        assert_eq!(
            findings(&deploy_key(), TokenKind::FineGrained, unreadable()),
            [Diagnostic::note(
                Code::BranchUnchecked,
                "branch `main` cannot be checked with this token (no Contents: Read); bootstrap checks it over SSH with the deploy key"
            )
            .in_file(FLUX)
            .with_hint("nothing to do; or give the token Contents: Read to check it now (GitHub says it needs `contents=read`)")]
        );
        assert_eq!(
            findings(
                &auth_token(),
                TokenKind::FineGrained,
                Answers {
                    keys: None,
                    ..unreadable()
                }
            ),
            [Diagnostic::error(
                Code::ContentsForbidden,
                "the token cannot read the contents of `username/manifests`, which the cluster needs with `auth: token`"
            )
            .in_file(FLUX)
            .with_hint("give the token Contents: Read on this repository (GitHub says it needs `contents=read`)")]
        );
    }

    #[test]
    fn deploy_keys_the_token_may_not_list_are_an_error_on_403_and_404() {
        let hint = "give the token Administration: Read and write on this repository (classic tokens: the `repo` scope and admin rights)";
        let endpoint = "GET /repos/username/manifests/keys";
        for (error, hint) in [
            (
                forbidden(endpoint, Some("administration=read")),
                format!("{hint} (GitHub says it needs `administration=read`)"),
            ),
            (not_found(endpoint, None), hint.to_string()),
        ] {
            let answers = Answers {
                keys: Some(Err(error)),
                ..answers()
            };
            assert_eq!(
                findings(&deploy_key(), TokenKind::FineGrained, answers),
                [Diagnostic::error(
                    Code::DeployKeysForbidden,
                    "the token cannot manage the deploy keys of `username/manifests`"
                )
                .in_file(SECRETS)
                .with_hint(hint)]
            );
        }
    }

    #[test]
    fn an_answer_that_says_github_could_not_be_asked_is_the_error() {
        let cases: [(&str, Answers<Error>); 4] = [
            (
                "GET /user",
                Answers {
                    user: Err(Error::RateLimited {
                        endpoint: "GET /user".to_string(),
                        reset: None,
                    }),
                    ..answers()
                },
            ),
            (
                "GET /repos/username/manifests",
                Answers {
                    repo: Err(server_error("GET /repos/username/manifests")),
                    ..answers()
                },
            ),
            (
                "GET /repos/username/manifests/branches/main",
                Answers {
                    branch: Some((
                        "main".to_string(),
                        Err(Error::SecondaryRateLimited {
                            endpoint: "GET /repos/username/manifests/branches/main".to_string(),
                            attempts: 4,
                            retry_after: None,
                        }),
                    )),
                    ..answers()
                },
            ),
            (
                "GET /repos/username/manifests/keys",
                Answers {
                    keys: Some(Err(Error::Unexpected {
                        endpoint: "GET /repos/username/manifests/keys".to_string(),
                        status: 418,
                        message: "I'm a teapot".to_string(),
                    })),
                    ..answers()
                },
            ),
        ];
        for (asked, answers) in cases {
            match evaluate(
                &deploy_key(),
                TokenKind::FineGrained,
                answers,
                now(),
                &FILES,
            ) {
                Err(
                    Error::RateLimited { endpoint, .. }
                    | Error::Server { endpoint, .. }
                    | Error::SecondaryRateLimited { endpoint, .. }
                    | Error::Unexpected { endpoint, .. },
                ) => assert_eq!(endpoint, asked),
                other => panic!("{asked}: {other:?}"),
            }
        }
    }
}
