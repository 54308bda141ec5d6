//! The repository URL: `https://HOST/OWNER/REPO[.git][/]`, checked and normalised. Pure logic.
//!
//! Anything else a user may paste (an SSH or scp-like address, `http://`, a browser URL with
//! `/tree/main`, credentials) is refused with the `https://` form that would work as the hint.

use std::fmt;
use std::ops::Range;

use crate::diag::{Code, Diagnostic};

/// A GitHub (or GitHub Enterprise Server) repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoUrl {
    /// Lower-cased host name, for example `github.com`.
    pub host: String,
    /// A port, only ever set for GitHub Enterprise Server hosts.
    pub port: Option<u16>,
    pub owner: String,
    pub name: String,
}

impl RepoUrl {
    pub fn is_github_com(&self) -> bool {
        self.host == "github.com"
    }

    /// `host` or `host:port`.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// `https://host/owner/repo.git`: the canonical form, and the URL for `auth: token`.
    pub fn https_url(&self) -> String {
        format!(
            "https://{}/{}/{}.git",
            self.authority(),
            self.owner,
            self.name
        )
    }

    /// `ssh://git@host/owner/repo.git`, the form `flux bootstrap` writes for deploy keys.
    pub fn ssh_url(&self) -> String {
        format!("ssh://git@{}/{}/{}.git", self.host, self.owner, self.name)
    }

    /// The REST API base: `https://api.github.com`, or `https://HOST/api/v3` for Enterprise Server.
    pub fn api_base(&self) -> String {
        if self.is_github_com() {
            "https://api.github.com".to_string()
        } else {
            format!("https://{}/api/v3", self.authority())
        }
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.https_url())
    }
}

/// The outcome of reading a `repo:` value.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Set when there were no errors.
    pub url: Option<RepoUrl>,
    /// Errors, warnings and notes, without a location (the caller knows where the value is).
    pub findings: Vec<Diagnostic>,
    /// Byte range of credentials inside the value, which must never be shown.
    pub secret: Option<Range<usize>>,
}

/// The repository a git remote (`git remote get-url origin`) points at, as a valid `repo:`
/// value: `git@host:owner/repo.git`, `ssh://git@host[:port]/owner/repo.git` and
/// `https://[user@]host/owner/repo[.git]` all become `https://host/owner/repo.git`. `None` for
/// anything else (a local path, another scheme, a path that is not `owner/repo`).
pub fn from_remote(remote: &str) -> Option<RepoUrl> {
    let remote = remote.trim();
    let (host, path) = if let Some(rest) = remote
        .strip_prefix("ssh://")
        .or_else(|| remote.strip_prefix("https://"))
        .or_else(|| remote.strip_prefix("http://"))
    {
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        // A port belongs to the SSH or HTTP endpoint, not to the repository's web address.
        let host = host.split_once(':').map_or(host, |(h, _)| h);
        (host, path)
    } else if !remote.contains("://") {
        let (user_host, path) = remote.split_once(':')?;
        let host = user_host.rsplit_once('@').map_or(user_host, |(_, h)| h);
        (host, path)
    } else {
        return None;
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let (owner, name) = path.split_once('/')?;
    if host.is_empty() || name.contains('/') {
        return None;
    }
    let host = if host.eq_ignore_ascii_case("www.github.com") {
        "github.com"
    } else {
        host
    };
    parse(&format!("https://{host}/{owner}/{name}.git")).url
}

/// Checks a `repo:` value.
pub fn parse(value: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut errors = Vec::new();
    let fix = |host: &str, owner: &str, name: &str| -> Option<String> {
        (valid_owner(owner) && valid_name(name) && !host.is_empty()).then(|| {
            let host = if host == "www.github.com" {
                "github.com"
            } else {
                host
            };
            format!("https://{host}/{owner}/{name}.git")
        })
    };

    if value.trim().is_empty() {
        errors.push(
            Diagnostic::error(Code::RepoPath, "`repo` is empty").with_hint(
                "set it to the repository's address, like `https://github.com/owner/repo.git`",
            ),
        );
        out.findings = errors;
        return out;
    }
    if value.chars().any(char::is_whitespace) {
        errors.push(
            Diagnostic::error(Code::RepoPath, "`repo` contains whitespace")
                .with_hint("remove the spaces; the form is `https://github.com/owner/repo.git`"),
        );
        out.findings = errors;
        return out;
    }

    // scp-like SSH: git@github.com:owner/repo.git
    if !value.contains("://") {
        if let Some((user_host, path)) = value.split_once(':')
            && let Some((_, host)) = user_host.split_once('@')
        {
            let (owner, name) = split_owner_name(path);
            let mut d = Diagnostic::error(
                Code::RepoScheme,
                "`repo` is an scp-like SSH address; homelab-flux needs the `https://` address and creates the SSH deploy key itself",
            );
            d = with_fix(d, fix(&host.to_ascii_lowercase(), owner, name));
            out.findings.push(d);
            return out;
        }
        let (host, path) = value.split_once('/').unwrap_or((value, ""));
        let (owner, name) = split_owner_name(path);
        let d = Diagnostic::error(Code::RepoScheme, "`repo` has no scheme");
        out.findings
            .push(with_fix(d, fix(&host.to_ascii_lowercase(), owner, name)));
        return out;
    }

    let (scheme, rest) = value.split_once("://").unwrap_or(("", value));
    let scheme_lower = scheme.to_ascii_lowercase();
    let rest_start = scheme.len() + 3;

    // Query and fragment.
    let mut rest_end = rest.len();
    if let Some(i) = rest.find(['?', '#']) {
        rest_end = i;
        let what = if rest[i..].starts_with('?') {
            "a query string"
        } else {
            "a fragment"
        };
        errors.push(Diagnostic::error(
            Code::RepoQuery,
            format!("`repo` has {what}, which a repository address cannot have"),
        ));
    }
    let rest = &rest[..rest_end];
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };

    // Credentials: user[:password]@host. Never echoed back.
    let authority = match authority.rfind('@') {
        Some(at) => {
            // The user name `git` of an SSH address (`ssh://git@github.com/...`) is no secret;
            // anything else in front of `@` may be a token.
            let plain_ssh_user =
                !(scheme_lower == "https" || scheme_lower == "http") && &authority[..at] == "git";
            if !plain_ssh_user {
                out.secret = Some(rest_start..rest_start + at + 1);
            }
            if scheme_lower == "https" || scheme_lower == "http" {
                errors.push(
                    Diagnostic::error(
                        Code::RepoCredentials,
                        "`repo` contains credentials; they would end up in the repository's history",
                    )
                    .with_hint("remove the `user:password@` part and put the token in `secrets-flux.yaml`; if that was a real token, revoke it"),
                );
            }
            &authority[at + 1..]
        }
        None => authority,
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
        None => (authority.to_ascii_lowercase(), None),
    };
    let (owner, name) = split_owner_name(path.trim_start_matches('/'));
    let suggestion = fix(&host, owner, name);

    match scheme_lower.as_str() {
        "https" => {}
        "http" => errors.push(with_fix(
            Diagnostic::error(
                Code::RepoScheme,
                "`repo` uses `http://`; GitHub is only reached over `https://`",
            ),
            suggestion.clone(),
        )),
        "ssh" | "git+ssh" | "ssh+git" | "git" => errors.push(with_fix(
            Diagnostic::error(
                Code::RepoScheme,
                format!(
                    "`repo` uses `{scheme}://`; homelab-flux needs the `https://` address and creates the SSH deploy key itself"
                ),
            ),
            suggestion.clone(),
        )),
        _ => errors.push(with_fix(
            Diagnostic::error(
                Code::RepoScheme,
                format!("`repo` uses the unsupported scheme `{scheme}`"),
            ),
            suggestion.clone(),
        )),
    }

    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        || host.starts_with(['.', '-'])
        || host.ends_with(['.', '-'])
    {
        errors.push(
            Diagnostic::error(
                Code::RepoHost,
                format!("`repo` has an invalid host `{host}`"),
            )
            .with_hint("the form is `https://github.com/owner/repo.git`"),
        );
    } else if host == "www.github.com" {
        errors.push(with_fix(
            Diagnostic::error(Code::RepoHost, "`repo` uses the host `www.github.com`"),
            suggestion.clone(),
        ));
    }

    let mut parsed_port = None;
    if let Some(p) = port {
        if host == "github.com" && scheme_lower == "https" {
            errors.push(with_fix(
                Diagnostic::error(
                    Code::RepoPort,
                    format!(
                        "`repo` has a port (`{p}`); github.com is only served on the default port"
                    ),
                ),
                suggestion.clone(),
            ));
        } else if scheme_lower == "https" {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => parsed_port = Some(n),
                _ => errors.push(Diagnostic::error(
                    Code::RepoPort,
                    format!("`repo` has an invalid port `{p}`"),
                )),
            }
        }
    }

    // Path: exactly /owner/repo, optional .git, optional trailing slash.
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    if scheme_lower == "https" {
        if segments.len() > 2 {
            errors.push(with_fix(
                Diagnostic::error(
                    Code::RepoPath,
                    format!(
                        "`repo` has extra path segments after `/{}/{}`",
                        segments[0], segments[1]
                    ),
                ),
                fix(&host, segments[0], segments[1].trim_end_matches(".git")),
            ));
        } else if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
            errors.push(
                Diagnostic::error(
                    Code::RepoPath,
                    "`repo` must name an owner and a repository, like `/owner/repo`",
                )
                .with_hint(format!(
                    "`https://{}/OWNER/REPO.git`",
                    if host.is_empty() { "github.com" } else { &host }
                )),
            );
        } else {
            let name = segments[1].strip_suffix(".git").unwrap_or(segments[1]);
            if !valid_owner(segments[0]) {
                errors.push(
                    Diagnostic::error(
                        Code::RepoOwner,
                        format!("`{}` is not a valid GitHub owner", segments[0]),
                    )
                    .with_hint("an owner is 1-39 letters, digits or `-`, and does not start or end with `-`"),
                );
            }
            if !valid_name(name) {
                errors.push(
                    Diagnostic::error(
                        Code::RepoName,
                        format!("`{name}` is not a valid repository name"),
                    )
                    .with_hint("a repository name is 1-100 letters, digits, `.`, `_` or `-`, and is not `.` or `..`"),
                );
            }
        }
    }

    if errors.is_empty() {
        let url = RepoUrl {
            host,
            port: parsed_port,
            owner: segments[0].to_string(),
            name: segments[1]
                .strip_suffix(".git")
                .unwrap_or(segments[1])
                .to_string(),
        };
        if !url.is_github_com() {
            out.findings.push(Diagnostic::note(
                Code::EnterpriseHost,
                format!(
                    "`{}` is treated as GitHub Enterprise Server, with its API at `{}`",
                    url.host,
                    url.api_base()
                ),
            ));
        }
        out.url = Some(url);
    }
    out.findings.splice(0..0, errors);
    out
}

fn with_fix(d: Diagnostic, fix: Option<String>) -> Diagnostic {
    match fix {
        Some(f) => d.with_hint(format!("use `{f}`")),
        None => d.with_hint("the form is `https://github.com/owner/repo.git`"),
    }
}

fn split_owner_name(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    let path = path.strip_suffix('/').unwrap_or(path);
    let (owner, rest) = path.split_once('/').unwrap_or((path, ""));
    let name = rest.split('/').next().unwrap_or("");
    (owner, name.strip_suffix(".git").unwrap_or(name))
}

/// GitHub owners: 1-39 of `[A-Za-z0-9-]`, no leading or trailing `-`.
pub fn valid_owner(s: &str) -> bool {
    (1..=39).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Repository names: 1-100 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn valid_name(s: &str) -> bool {
    (1..=100).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && s != "."
        && s != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_becomes_the_https_form() {
        for remote in [
            "git@github.com:octo/homelab.git",
            "ssh://git@github.com/octo/homelab.git",
            "ssh://git@github.com:22/octo/homelab",
            "https://github.com/octo/homelab",
            "https://octo@github.com/octo/homelab.git/",
            "https://www.github.com/octo/homelab.git",
        ] {
            assert_eq!(
                from_remote(remote).map(|u| u.https_url()).as_deref(),
                Some("https://github.com/octo/homelab.git"),
                "{remote}"
            );
        }
        for remote in [
            "/srv/git/homelab.git",
            "file:///srv/x/y.git",
            "git@github.com:onlyname",
            "https://github.com/a/b/c",
        ] {
            assert!(from_remote(remote).is_none(), "{remote}");
        }
    }

    fn ok(s: &str) -> RepoUrl {
        let p = parse(s);
        p.url.unwrap_or_else(|| panic!("{s}: {:?}", p.findings))
    }

    fn first_error(s: &str) -> Diagnostic {
        let p = parse(s);
        assert!(p.url.is_none(), "{s} was accepted");
        p.findings.into_iter().next().unwrap()
    }

    #[test]
    fn accepts_the_documented_forms() {
        for s in [
            "https://github.com/username/manifests.git",
            "https://github.com/username/manifests",
            "https://github.com/username/manifests/",
            "https://github.com/username/manifests.git/",
            "https://GitHub.com/username/manifests",
        ] {
            let u = ok(s);
            assert_eq!(u.https_url(), "https://github.com/username/manifests.git");
            assert_eq!(u.ssh_url(), "ssh://git@github.com/username/manifests.git");
        }
    }

    #[test]
    fn enterprise_hosts_get_a_note_and_their_api() {
        let p = parse("https://git.example.com:8443/team/infra");
        let u = p.url.unwrap();
        assert_eq!(u.api_base(), "https://git.example.com:8443/api/v3");
        assert_eq!(p.findings[0].code, Code::EnterpriseHost);
    }

    #[test]
    fn refuses_other_forms_with_the_https_fix() {
        for (s, code) in [
            ("git@github.com:o/r.git", Code::RepoScheme),
            ("ssh://git@github.com/o/r.git", Code::RepoScheme),
            ("http://github.com/o/r", Code::RepoScheme),
            ("https://github.com:443/o/r", Code::RepoPort),
            ("https://github.com/o/r/tree/main", Code::RepoPath),
        ] {
            let d = first_error(s);
            assert_eq!(d.code, code, "{s}");
            assert_eq!(
                d.hint.as_deref(),
                Some("use `https://github.com/o/r.git`"),
                "{s}"
            );
        }
    }

    #[test]
    fn credentials_are_masked_and_never_echoed() {
        let s = "https://x-access-token:ghp_secretsecret@github.com/o/r";
        let p = parse(s);
        let range = p.secret.unwrap();
        assert_eq!(&s[range], "x-access-token:ghp_secretsecret@");
        for d in &p.findings {
            assert!(
                !d.message.contains("ghp_secret")
                    && !d.hint.clone().unwrap_or_default().contains("ghp_secret")
            );
        }
    }

    #[test]
    fn owner_and_name_rules() {
        assert!(valid_owner("a-b"));
        assert!(!valid_owner("-a"));
        assert!(!valid_owner(&"a".repeat(40)));
        assert!(valid_name("my.repo_x-1"));
        assert!(!valid_name(".."));
        assert!(!valid_name(&"a".repeat(101)));
    }
}
