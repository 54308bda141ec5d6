//! What the outside systems report, as plain data: the repository, its branch, deploy keys and
//! SSH host keys as GitHub describes them. [`github`](crate::github) fills these in; the
//! decisions ([`plan`](crate::plan), [`online`](crate::online)) read them without knowing where
//! they came from.

use serde::Deserialize;

/// The authenticated user (`GET /user`) and what the response headers say about the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The account's login.
    pub login: String,
    /// `github-authentication-token-expiration`: absent for tokens without an expiry.
    pub token_expiration: Option<jiff::Timestamp>,
    /// `x-oauth-scopes`: present for classic tokens only (`None` means fine-grained or app token).
    pub oauth_scopes: Option<Vec<String>>,
}

/// A repository (`GET /repos/{owner}/{repo}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Repository {
    /// `owner/name` as GitHub spells it.
    pub full_name: String,
    /// The default branch.
    pub default_branch: String,
    /// `git@host:owner/repo.git` (or `ssh://` on some servers).
    pub ssh_url: String,
    /// `https://host/owner/repo.git`.
    pub clone_url: String,
    /// Private or internal.
    pub private: bool,
    /// `public`, `private` or `internal`, when GitHub sends it.
    #[serde(default)]
    pub visibility: Option<String>,
    /// Archived repositories are read-only.
    #[serde(default)]
    pub archived: bool,
    /// The token owner's permissions, when GitHub sends them.
    #[serde(default)]
    pub permissions: Option<RepoPermissions>,
}

#[cfg(test)]
impl Repository {
    /// `username/manifests` as GitHub answers for it: private, not archived, default branch
    /// `main`; the fixture the decision modules' tests share.
    pub fn example() -> Repository {
        serde_json::from_value(serde_json::json!({
            "full_name": "username/manifests",
            "default_branch": "main",
            "ssh_url": "git@github.com:username/manifests.git",
            "clone_url": "https://github.com/username/manifests.git",
            "private": true,
            "visibility": "private",
            "archived": false,
        }))
        .unwrap()
    }
}

/// The `permissions` object of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RepoPermissions {
    /// Admin (needed for deploy keys with a classic token).
    #[serde(default)]
    pub admin: bool,
    /// Push.
    #[serde(default)]
    pub push: bool,
    /// Pull.
    #[serde(default)]
    pub pull: bool,
}

/// A branch (`GET /repos/{owner}/{repo}/branches/{branch}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    /// The branch name.
    pub name: String,
    /// The SHA of its head commit.
    pub commit_sha: String,
}

/// A deploy key of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DeployKey {
    /// GitHub's id (for deletion).
    pub id: u64,
    /// The public key, `ssh-ed25519 AAAA...` (GitHub drops the comment).
    pub key: String,
    /// The title.
    #[serde(default)]
    pub title: String,
    /// Read-only keys cannot push.
    #[serde(default)]
    pub read_only: bool,
    /// When it was created (ISO 8601).
    #[serde(default)]
    pub created_at: Option<String>,
    /// When it was last used (ISO 8601), if ever.
    #[serde(default)]
    pub last_used: Option<String>,
}

impl DeployKey {
    /// True when `public_key` (`type base64 [comment]`) is this key, comments ignored.
    pub fn matches_public_key(&self, public_key: &str) -> bool {
        key_material(&self.key) == key_material(public_key)
    }
}

fn key_material(line: &str) -> Option<(&str, &str)> {
    let mut parts = line.split_whitespace();
    Some((parts.next()?, parts.next()?))
}

/// `GET /meta`, the parts homelab-flux uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Meta {
    /// The SSH host keys of the git endpoint, `ssh-ed25519 AAAA...`.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
}

/// How GitHub refused a request, as far as the decisions need to tell refusals apart: the
/// outside system's error type says it through [`Refused`], so that the decisions never
/// depend on that type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal<'a> {
    /// 401: the token was rejected.
    Unauthorized,
    /// 404, with GitHub's `X-Accepted-GitHub-Permissions` when it sent one.
    NotFound {
        accepted_permissions: Option<&'a str>,
    },
    /// 403 (not a rate limit), with `X-Accepted-GitHub-Permissions` when sent.
    Forbidden {
        accepted_permissions: Option<&'a str>,
    },
    /// 422: GitHub refused the request's content (an installation token asked for a
    /// permission the App does not have).
    Unprocessable,
    /// Anything else: GitHub could not be asked (unreachable, rate limited, failing).
    Other,
}

/// An error of a request to GitHub that can say how GitHub refused it.
pub trait Refused: std::error::Error {
    fn refusal(&self) -> Refusal<'_>;

    /// GitHub's own words (the `message` of its error body), when it sent any.
    fn github_message(&self) -> Option<&str> {
        None
    }
}

/// The GitHub App (`GET /app`, authenticated with its JWT).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct App {
    pub id: u64,
    /// The App's URL name: `https://github.com/apps/{slug}`.
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// The permissions the App asks for, e.g. `{"contents": "read", "metadata": "read"}`.
    #[serde(default)]
    pub permissions: std::collections::BTreeMap<String, String>,
}

/// An installation of the App (`GET /repos/{o}/{r}/installation`, `GET /app/installations/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Installation {
    pub id: u64,
    #[serde(default)]
    pub app_id: Option<u64>,
    #[serde(default)]
    pub app_slug: Option<String>,
    /// The account it is installed on.
    #[serde(default)]
    pub account: Option<Account>,
    /// `all` or `selected`.
    #[serde(default)]
    pub repository_selection: Option<String>,
    /// The permissions the installation granted.
    #[serde(default)]
    pub permissions: std::collections::BTreeMap<String, String>,
    /// Set when the installation is suspended.
    #[serde(default)]
    pub suspended_at: Option<String>,
}

/// A user or organisation, by login.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Account {
    pub login: String,
}

/// An installation token's metadata (`POST /app/installations/{id}/access_tokens`); the token
/// itself stays inside the GitHub client that was made with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationTokenInfo {
    /// When it expires (ISO 8601 as GitHub sends it).
    pub expires_at: String,
    /// The permissions it carries.
    pub permissions: std::collections::BTreeMap<String, String>,
}
