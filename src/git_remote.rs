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
use secrecy::{ExposeSecret, SecretString};
use ssh_key::sha2::{Digest, Sha256};

use crate::keys;
pub use crate::ssh_url::{InvalidSshUrl, SshEndpoint, known_hosts};

/// How long the proof may take: a server that accepts TCP and never answers fails the proof
/// after this, rather than holding the run (and the new key on GitHub) forever.
pub const PROOF_DEADLINE: Duration = Duration::from_secs(30);

/// What can go wrong proving a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    InvalidSshUrl(#[from] InvalidSshUrl),
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
