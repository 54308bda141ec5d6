//! The one host the token may be sent to, and the check that `repo` is on it. Pure logic.
//!
//! The host is named on the uncommitted side (`host:` in `secrets-flux.yaml`, or
//! `HOMELAB_FLUX_GITHUB_HOST` beside `HOMELAB_FLUX_TOKEN`; `github.com` by default), never taken
//! from the committed `flux.yaml`: a typo there (`githb.com`), or a pull request that edits it,
//! must not make the tool send the token to another server.

use crate::diag::{Code, Diagnostic};
use crate::repo_url::RepoUrl;

/// The host a token belongs to when nothing says otherwise.
pub const DEFAULT_HOST: &str = "github.com";

/// A checked, lower-cased `host` or `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenHost(String);

impl Default for TokenHost {
    fn default() -> Self {
        TokenHost(DEFAULT_HOST.to_string())
    }
}

impl TokenHost {
    /// Reads a `host:` value (or `HOMELAB_FLUX_GITHUB_HOST`): a host name, optionally with a port,
    /// without scheme or path.
    pub fn parse(value: &str) -> Result<TokenHost, Diagnostic> {
        let bare = value
            .strip_prefix("https://")
            .map(|v| v.trim_end_matches('/'));
        if bare.is_some_and(|b| TokenHost::parse(b).is_ok()) {
            return Err(invalid().with_hint("write the host alone, without `https://`"));
        }
        let lower = value.to_ascii_lowercase();
        let (host, port) = match lower.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (lower.as_str(), None),
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-')
            })
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
        if !host_ok || !port_ok {
            return Err(invalid().with_hint(
                "the host of your GitHub, for example `github.com` or `ghe.example.com:8443`",
            ));
        }
        if host == "www.github.com" {
            return Err(invalid().with_hint(format!("use `{DEFAULT_HOST}`")));
        }
        Ok(TokenHost(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `Some(finding)` when `repo` is on another host than the token's: an error, so that no
    /// request is made. Where the two are one or two edits apart, the hint suggests the token's
    /// host ("did you mean `github.com`?").
    pub fn check_repo(&self, repo: &RepoUrl, host_setting: &str) -> Option<Diagnostic> {
        let repo_host = repo.authority();
        if repo_host == self.0 {
            return None;
        }
        let d = Diagnostic::error(
            Code::RepoHostNotTokenHost,
            format!(
                "`repo` is on `{repo_host}`, but the token is for `{}`; the token is only ever sent to its own host",
                self.0
            ),
        );
        let distance = strsim::levenshtein(&repo_host, &self.0);
        Some(if (1..=2).contains(&distance) {
            d.with_hint(format!("did you mean `{}`?", self.0))
        } else if repo_host == DEFAULT_HOST {
            d.with_hint(format!(
                "point `repo` at `{}`, or change {host_setting} (without it, the token is for `{DEFAULT_HOST}`)",
                self.0
            ))
        } else {
            d.with_hint(format!(
                "if `{repo_host}` is your GitHub Enterprise Server, set {host_setting} to `{repo_host}`"
            ))
        })
    }
}

impl std::fmt::Display for TokenHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value is not echoed: it sits in the secrets file, where a pasted token may stand.
fn invalid() -> Diagnostic {
    Diagnostic::error(
        Code::TokenHostInvalid,
        "`host` is not a host name like `github.com`",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(url: &str) -> RepoUrl {
        crate::repo_url::parse(url).url.unwrap()
    }

    #[test]
    fn hosts_are_checked_and_lower_cased() {
        assert_eq!(
            TokenHost::parse("GHE.example.com").unwrap().as_str(),
            "ghe.example.com"
        );
        assert_eq!(
            TokenHost::parse("ghe.example.com:8443").unwrap().as_str(),
            "ghe.example.com:8443"
        );
        for bad in [
            "",
            "https://github.com",
            "github.com/x",
            "-a.com",
            "a..b",
            "a.com:0",
            "a.com:x",
            "www.github.com",
            "a b",
        ] {
            assert_eq!(
                TokenHost::parse(bad).unwrap_err().code,
                Code::TokenHostInvalid,
                "{bad}"
            );
        }
        let d = TokenHost::parse("https://ghe.example.com/").unwrap_err();
        assert_eq!(
            d.hint.as_deref(),
            Some("write the host alone, without `https://`")
        );
    }

    /// Regression: `repo: https://githb.com/...` sent the token to githb.com.
    #[test]
    fn a_repo_on_another_host_is_an_error_with_a_suggestion_when_close() {
        let host = TokenHost::default();
        assert!(
            host.check_repo(&repo("https://github.com/o/r"), "x")
                .is_none()
        );
        let d = host
            .check_repo(&repo("https://githb.com/o/r"), "x")
            .unwrap();
        assert_eq!(d.code, Code::RepoHostNotTokenHost);
        assert_eq!(d.hint.as_deref(), Some("did you mean `github.com`?"));
        let d = host
            .check_repo(&repo("https://gitlab.example.org/o/r"), "`host:`")
            .unwrap();
        assert!(
            d.hint
                .unwrap()
                .contains("set `host:` to `gitlab.example.org`")
        );
        let ghe = TokenHost::parse("ghe.example.com:8443").unwrap();
        assert!(
            ghe.check_repo(&repo("https://ghe.example.com:8443/o/r"), "x")
                .is_none()
        );
        assert!(
            ghe.check_repo(&repo("https://ghe.example.com/o/r"), "x")
                .is_some()
        );
    }
}
