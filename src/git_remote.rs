//! Proving a deploy key over SSH with git2, before the cluster is touched.
//!
//! GitHub accepting `POST /keys` says nothing about whether the key opens the repository: the
//! proof lists the remote's refs with the in-memory private key, checks the server's host key
//! against the keys `GET /meta` gave over HTTPS (never trust on first use), and reads the commit
//! the branch points at, which the bootstrap later expects Flux to report.
//!
//! git2 is blocking: call [`prove_key`] from `tokio::task::spawn_blocking`, under
//! [`PROOF_DEADLINE`] (libgit2's own socket timeouts are process-wide settings behind `unsafe`,
//! and do not reach libssh2's reads, so the deadline is kept by the caller).

use std::cell::Cell;
use std::time::Duration;

use git2::{
    CertificateCheckStatus, Cred, Direction, ErrorClass, ErrorCode, Remote, RemoteCallbacks,
};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use ssh_key::sha2::{Digest, Sha256};

use crate::keys;

/// How long the proof may take: a server that accepts TCP and never answers fails the proof
/// after this, rather than holding the run (and the new key on GitHub) forever.
pub const PROOF_DEADLINE: Duration = Duration::from_secs(30);

/// What can go wrong proving a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository's `ssh_url` is neither `git@host:owner/repo.git` nor
    /// `ssh://git@host[:port]/owner/repo.git`.
    #[error("`{url}` is not an SSH git URL: {reason}")]
    InvalidSshUrl {
        /// The rejected URL.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// No usable host key to check the server against.
    #[error("no SSH host key to check {host} against; GitHub's `/meta` listed none")]
    NoHostKeys {
        /// The SSH host.
        host: String,
    },
    /// The server presented a host key that `/meta` does not list.
    #[error(
        "the SSH host key of {host} ({presented}) is not one GitHub lists in `/meta`; refusing to connect"
    )]
    HostKeyMismatch {
        /// The SSH host.
        host: String,
        /// The presented key's type and SHA256 fingerprint, when known.
        presented: String,
    },
    /// The server refused the key.
    #[error(
        "the deploy key was refused by {url}: GitHub does not (or not yet) accept it for this repository"
    )]
    AuthenticationFailed {
        /// The SSH URL.
        url: String,
        /// What libgit2 reported.
        #[source]
        source: git2::Error,
    },
    /// The branch does not exist on the remote.
    #[error("the branch `{branch}` does not exist in {url}")]
    BranchNotFound {
        /// The SSH URL.
        url: String,
        /// The branch asked for.
        branch: String,
    },
    /// The server did not finish answering within [`PROOF_DEADLINE`].
    #[error(
        "the SSH server of {url} did not answer within {} s: check that the SSH endpoint is reachable (a firewall that drops packets rather than refusing them stalls like this)",
        .after.as_secs()
    )]
    TimedOut {
        /// The SSH URL.
        url: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// Any other failure (connection refused, DNS, protocol).
    #[error("could not list the refs of {url} over SSH")]
    Git {
        /// The SSH URL.
        url: String,
        /// What libgit2 reported.
        #[source]
        source: git2::Error,
    },
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
    pub fn parse(ssh_url: &str) -> Result<SshEndpoint, Error> {
        let invalid = |reason| Error::InvalidSshUrl {
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

/// Lists the refs of `ssh_url` with the in-memory `private_key_openssh`, accepting only a server
/// whose host key is among `host_keys` (`ssh-ed25519 AAAA...` lines from `/meta`), and returns
/// the commit SHA of `refs/heads/<branch>`.
pub fn prove_key(
    ssh_url: &str,
    private_key_openssh: &SecretString,
    host_keys: &[String],
    branch: &str,
) -> Result<String, Error> {
    let endpoint = SshEndpoint::parse(ssh_url)?;
    let url = endpoint.url();
    let blobs: Vec<Vec<u8>> = host_keys
        .iter()
        .filter_map(|line| keys::host_key_blob(line))
        .collect();
    if blobs.is_empty() {
        return Err(Error::NoHostKeys {
            host: endpoint.host.clone(),
        });
    }

    let mismatch: Cell<Option<String>> = Cell::new(None);
    let credential_calls = Cell::new(0u32);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(|_url, username, _allowed| {
        credential_calls.set(credential_calls.get() + 1);
        if credential_calls.get() > 1 {
            // libgit2 asks again after a refusal; there is only one key to offer.
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Ssh,
                "the deploy key was refused",
            ));
        }
        Cred::ssh_key_from_memory(
            username.unwrap_or(&endpoint.user),
            None,
            private_key_openssh.expose_secret(),
            None,
        )
    });
    callbacks.certificate_check(|cert, _host| {
        let Some(hostkey) = cert.as_hostkey() else {
            mismatch.set(Some("not an SSH host key".to_owned()));
            return Err(git2::Error::from_str("not an SSH host key"));
        };
        let accepted = match hostkey.hostkey() {
            Some(raw) => blobs.iter().any(|b| b.as_slice() == raw),
            // Without the raw key (older libssh2), compare SHA-256 digests of the blobs.
            None => hostkey.hash_sha256().is_some_and(|presented| {
                blobs
                    .iter()
                    .any(|b| Sha256::digest(b).as_slice() == presented.as_slice())
            }),
        };
        if accepted {
            Ok(CertificateCheckStatus::CertificateOk)
        } else {
            mismatch.set(Some(describe_hostkey(hostkey)));
            Err(git2::Error::from_str(
                "the host key is not listed by GitHub",
            ))
        }
    });

    let result = list_branch(&url, callbacks, branch);
    let presented = mismatch.take();
    match result {
        Ok(Some(sha)) => Ok(sha),
        Ok(None) => Err(Error::BranchNotFound {
            url,
            branch: branch.to_owned(),
        }),
        Err(_) if presented.is_some() => Err(Error::HostKeyMismatch {
            host: endpoint.host,
            presented: presented.unwrap_or_default(),
        }),
        Err(source) if is_auth_failure(&source, credential_calls.get()) => {
            Err(Error::AuthenticationFailed { url, source })
        }
        Err(source) => Err(Error::Git { url, source }),
    }
}

fn list_branch(
    url: &str,
    callbacks: RemoteCallbacks<'_>,
    branch: &str,
) -> Result<Option<String>, git2::Error> {
    let mut remote = Remote::create_detached(url)?;
    let connection = remote.connect_auth(Direction::Fetch, Some(callbacks), None)?;
    let wanted = format!("refs/heads/{branch}");
    let sha = connection
        .list()?
        .iter()
        .find(|head| head.name() == wanted)
        .map(|head| head.oid().to_string());
    Ok(sha)
}

fn is_auth_failure(err: &git2::Error, credential_calls: u32) -> bool {
    err.code() == ErrorCode::Auth
        || (credential_calls > 0
            && err.class() == ErrorClass::Ssh
            && err.message().to_ascii_lowercase().contains("authenticat"))
}

fn describe_hostkey(hostkey: &git2::cert::CertHostkey<'_>) -> String {
    let kind = match hostkey.hostkey_type() {
        Some(t) => t.name().to_owned(),
        None => "unknown type".to_owned(),
    };
    match hostkey.hostkey() {
        Some(raw) => {
            let digest = Sha256::digest(raw);
            format!("{kind} SHA256:{}", base64_unpadded(digest.as_slice()))
        }
        None => kind,
    }
}

/// Standard base64 without padding, as SSH fingerprints are printed.
fn base64_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
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
                matches!(SshEndpoint::parse(bad), Err(Error::InvalidSshUrl { .. })),
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

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_unpadded(b""), "");
        assert_eq!(base64_unpadded(b"f"), "Zg");
        assert_eq!(base64_unpadded(b"fo"), "Zm8");
        assert_eq!(base64_unpadded(b"foo"), "Zm9v");
        assert_eq!(base64_unpadded(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn no_host_keys_is_refused_before_connecting() {
        let err = prove_key(
            "git@github.com:o/r.git",
            &SecretString::from("unused"),
            &["garbage".to_owned()],
            "main",
        )
        .unwrap_err();
        assert!(matches!(err, Error::NoHostKeys { .. }), "{err:?}");
    }
}
