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
                let d = if cfg.auth == Auth::Token {
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
        (Auth::DeployKey, false) => None,
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
        };
        Diagnostic::new(Severity::Error, Code::TokenScopes, format!("the classic token has {listed}; {what} needs `repo`"))
            .in_file(file)
            .with_hint("tick the `repo` scope at https://github.com/settings/tokens, or use a fine-grained token for this repository")
    })
}
