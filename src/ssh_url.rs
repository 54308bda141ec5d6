//! The SSH address of a repository, as GitHub's `ssh_url` gives it, and the `known_hosts` lines
//! for it. Pure: parsing and formatting, no connection.

use reqwest::Url;

/// The repository's `ssh_url` is neither `git@host:owner/repo.git` nor
/// `ssh://git@host[:port]/owner/repo.git`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{url}` is not an SSH git URL: {reason}")]
pub struct InvalidSshUrl {
    /// The rejected URL.
    pub url: String,
    /// Why.
    pub reason: &'static str,
}

/// An SSH git endpoint parsed from a repository's `ssh_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshEndpoint {
    /// The login, `git` on GitHub.
    pub user: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port, when not the default 22.
    pub port: Option<u16>,
    /// The repository path, starting with `/`: `/owner/repo.git`.
    pub path: String,
}

impl SshEndpoint {
    /// Parses `git@host:owner/repo.git` (scp-like) or `ssh://git@host[:port]/owner/repo.git`.
    pub fn parse(ssh_url: &str) -> Result<SshEndpoint, InvalidSshUrl> {
        let invalid = |reason| InvalidSshUrl {
            url: ssh_url.to_owned(),
            reason,
        };
        let trimmed = ssh_url.trim();
        if trimmed.starts_with("ssh://") {
            let url = Url::parse(trimmed).map_err(|_| invalid("not a URL"))?;
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| invalid("no host"))?;
            if url.password().is_some() {
                return Err(invalid("a password in an SSH URL is not supported"));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid("a query or fragment is not allowed"));
            }
            let path = url.path();
            if path.len() <= 1 {
                return Err(invalid("no repository path"));
            }
            let user = if url.username().is_empty() {
                "git"
            } else {
                url.username()
            };
            return Ok(SshEndpoint {
                user: user.to_owned(),
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port: url.port().filter(|p| *p != 22),
                path: path.to_owned(),
            });
        }
        if trimmed.contains("://") {
            return Err(invalid("only `ssh://` and `user@host:path` forms are SSH"));
        }
        let (user_host, path) = trimmed
            .split_once(':')
            .ok_or_else(|| invalid("expected `user@host:owner/repo.git`"))?;
        let (user, host) = match user_host.split_once('@') {
            Some((user, host)) => (user, host),
            None => ("git", user_host),
        };
        if user.is_empty() || host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(invalid("expected `user@host:owner/repo.git`"));
        }
        let path = path.trim_start_matches('/');
        if path.is_empty() {
            return Err(invalid("no repository path"));
        }
        Ok(SshEndpoint {
            user: user.to_owned(),
            host: host.to_owned(),
            port: None,
            path: format!("/{path}"),
        })
    }

    /// The `ssh://` form: `ssh://git@host[:port]/owner/repo.git` (what Flux's GitRepository takes).
    pub fn url(&self) -> String {
        format!("ssh://{}@{}{}", self.user, self.host_port(), self.path)
    }

    fn host_port(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// The host as `known_hosts` names it: `host`, or `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        match self.port {
            Some(port) => format!("[{}]:{port}", self.host),
            None => self.host.clone(),
        }
    }
}

/// `known_hosts` content for the endpoint: one line per `/meta` host key
/// (`github.com ssh-ed25519 AAAA...`), for the Flux Secret.
pub fn known_hosts(endpoint: &SshEndpoint, host_keys: &[String]) -> String {
    let name = endpoint.known_hosts_name();
    host_keys
        .iter()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            Some(format!("{name} {} {}\n", parts.next()?, parts.next()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_like_urls() {
        let e = SshEndpoint::parse("git@github.com:octocat/Hello-World.git").unwrap();
        assert_eq!(
            e,
            SshEndpoint {
                user: "git".to_owned(),
                host: "github.com".to_owned(),
                port: None,
                path: "/octocat/Hello-World.git".to_owned(),
            }
        );
        assert_eq!(e.url(), "ssh://git@github.com/octocat/Hello-World.git");
        assert_eq!(e.known_hosts_name(), "github.com");
    }

    #[test]
    fn ssh_urls_with_ports() {
        let e = SshEndpoint::parse("ssh://git@127.0.0.1:2222/srv/repos/m.git").unwrap();
        assert_eq!(e.host, "127.0.0.1");
        assert_eq!(e.port, Some(2222));
        assert_eq!(e.path, "/srv/repos/m.git");
        assert_eq!(e.url(), "ssh://git@127.0.0.1:2222/srv/repos/m.git");
        assert_eq!(e.known_hosts_name(), "[127.0.0.1]:2222");

        let e = SshEndpoint::parse("ssh://git@ghe.example.com:22/o/r.git").unwrap();
        assert_eq!(e.port, None);
        assert_eq!(e.url(), "ssh://git@ghe.example.com/o/r.git");

        let e = SshEndpoint::parse("ssh://git@[::1]:2222/o/r.git").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.url(), "ssh://git@[::1]:2222/o/r.git");
        assert_eq!(e.known_hosts_name(), "[::1]:2222");
    }

    #[test]
    fn invalid_urls() {
        for bad in [
            "https://github.com/o/r.git",
            "git@github.com",
            "git@github.com:",
            "ssh://git@github.com",
            "ssh://git@github.com/",
            "@github.com:o/r",
        ] {
            assert!(
                matches!(SshEndpoint::parse(bad), Err(InvalidSshUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn known_hosts_lines() {
        let e = SshEndpoint::parse("ssh://git@127.0.0.1:2222/o/r.git").unwrap();
        let keys = vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIx comment".to_owned(),
            "garbage".to_owned(),
        ];
        assert_eq!(
            known_hosts(&e, &keys),
            "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIx\n"
        );
    }
}
