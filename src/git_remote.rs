//! Proving a deploy key over SSH, before the cluster is touched: the SSH git remote.
//!
//! GitHub accepting `POST /keys` says nothing about whether the key opens the repository: the
//! proof logs in with the in-memory private key, runs `git-upload-pack` and reads its ref
//! advertisement (see [`crate::pkt_line`]), and keeps the commit the branch points at, which the
//! bootstrap later expects Flux to report.
//!
//! The server's host key is checked against the keys `GET /meta` gave over HTTPS (never trust on
//! first use). Only the host key algorithms of the key types `/meta` lists are offered, so a
//! server that also has a key of another type proves itself with one `/meta` vouches for; the
//! key it then presents must be byte for byte one of `/meta`'s.
//!
//! The SSH client is russh (pure Rust; ring and RustCrypto underneath), on the caller's tokio
//! runtime. The whole proof (connect, key exchange, login, the refs) has one deadline,
//! [`PROOF_DEADLINE`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{
    Algorithm, EcdsaCurve, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate,
};
use russh::{AlgorithmKind, ChannelMsg, Disconnect};
use secrecy::{ExposeSecret, SecretString};

use crate::keys;
pub use crate::pkt_line::Ref;
use crate::pkt_line::{self, Advertisement};
pub use crate::ssh_url::{InvalidSshUrl, SshEndpoint, known_hosts};

/// How long the proof may take: a server that accepts TCP and never answers fails the proof
/// after this, rather than holding the run (and the new key on GitHub) forever.
pub const PROOF_DEADLINE: Duration = Duration::from_secs(30);

/// The most of a ref advertisement kept (GitHub advertises pull request refs too).
const MAX_ADVERTISEMENT: usize = 64 << 20;

/// The most of the remote command's stderr kept for an error message.
const MAX_STDERR: usize = 4096;

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
        /// The presented key's type and SHA256 fingerprint.
        presented: String,
    },
    /// The server has no host key of a type `/meta` lists, so none it could present would be
    /// one GitHub vouches for.
    #[error(
        "the SSH server {host} offers host keys of the types {offered} only, and GitHub's `/meta` lists keys of the types {listed}; refusing to connect"
    )]
    NoListedHostKeyType {
        /// The SSH host.
        host: String,
        /// The server's host key algorithms, comma-separated.
        offered: String,
        /// The algorithms offered for `/meta`'s keys, comma-separated.
        listed: String,
    },
    /// The server refused the key.
    #[error(
        "the deploy key was refused by {url}: GitHub does not (or not yet) accept it for this repository"
    )]
    AuthenticationFailed {
        /// The SSH URL.
        url: String,
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
    /// Any other failure (connection refused, DNS, SSH or git protocol).
    #[error("could not list the refs of {url} over SSH")]
    Git {
        /// The SSH URL.
        url: String,
        /// What went wrong.
        #[source]
        source: Cause,
    },
}

/// Why listing the refs failed, below [`Error::Git`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// The TCP connection (or name resolution).
    #[error(transparent)]
    Connect(std::io::Error),
    /// The SSH protocol.
    #[error(transparent)]
    Ssh(#[from] russh::Error),
    /// The private key could not be read (its text is never shown).
    #[error("the private key is not a valid unencrypted OpenSSH private key")]
    PrivateKey,
    /// The server would not run `git-upload-pack`.
    #[error("the server refused to run `git-upload-pack`")]
    ExecRefused,
    /// `git-upload-pack` ended before the advertisement was complete.
    #[error("`git-upload-pack` ended without listing the refs{}{}",
        .exit_status.map(|s| format!(" (exit status {s})")).unwrap_or_default(),
        if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    Ended {
        /// The remote command's exit status, when the server sent one.
        exit_status: Option<u32>,
        /// The remote command's stderr (`fatal: ... does not appear to be a git repository`).
        stderr: String,
    },
    /// The advertisement is not git's.
    #[error(transparent)]
    Protocol(#[from] pkt_line::Error),
}

/// Lists the refs of `ssh_url` with the in-memory `private_key_openssh`, accepting only a server
/// whose host key is among `host_keys` (`TYPE BASE64` lines from `/meta`), and returns the
/// commit SHA of `refs/heads/<branch>`. Gives up after [`PROOF_DEADLINE`].
pub async fn prove_key(
    ssh_url: &str,
    private_key_openssh: &SecretString,
    host_keys: &[String],
    branch: &str,
) -> Result<String, Error> {
    let endpoint = SshEndpoint::parse(ssh_url)?;
    let url = endpoint.url();
    let refs = list_refs(&endpoint, private_key_openssh, host_keys).await?;
    let wanted = format!("refs/heads/{branch}");
    match refs.into_iter().find(|r| r.name == wanted) {
        Some(r) => Ok(r.oid),
        None => Err(Error::BranchNotFound {
            url,
            branch: branch.to_owned(),
        }),
    }
}

/// The refs `git-upload-pack` advertises for `endpoint`, under [`PROOF_DEADLINE`]; see
/// [`prove_key`].
pub async fn list_refs(
    endpoint: &SshEndpoint,
    private_key_openssh: &SecretString,
    host_keys: &[String],
) -> Result<Vec<Ref>, Error> {
    let trusted = Trusted::from_meta(host_keys);
    if trusted.blobs.is_empty() || trusted.algorithms.is_empty() {
        return Err(Error::NoHostKeys {
            host: endpoint.host.clone(),
        });
    }
    let url = endpoint.url();
    let git = |source| Error::Git {
        url: url.clone(),
        source,
    };
    let key = PrivateKey::from_openssh(private_key_openssh.expose_secret())
        .map_err(|_| git(Cause::PrivateKey))?;
    let listing = session(endpoint, Arc::new(key), trusted);
    match tokio::time::timeout(PROOF_DEADLINE, listing).await {
        Ok(result) => result,
        Err(_) => Err(Error::TimedOut {
            url,
            after: PROOF_DEADLINE,
        }),
    }
}

/// The host keys `/meta` lists and the host key algorithms to offer for them, most preferred
/// first.
struct Trusted {
    blobs: Vec<Vec<u8>>,
    algorithms: Vec<Algorithm>,
}

impl Trusted {
    fn from_meta(host_keys: &[String]) -> Trusted {
        let blobs: Vec<Vec<u8>> = host_keys
            .iter()
            .filter_map(|line| keys::host_key_blob(line))
            .collect();
        let listed = |name: &str| {
            blobs
                .iter()
                .any(|b| b.get(4..4 + name.len()) == Some(name.as_bytes()))
        };
        // An `ssh-rsa` key signs as rsa-sha2-512 or rsa-sha2-256 (RFC 8332); SHA-1 is not offered.
        let algorithms = [
            ("ssh-ed25519", Algorithm::Ed25519),
            (
                "ecdsa-sha2-nistp256",
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP256,
                },
            ),
            (
                "ecdsa-sha2-nistp384",
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP384,
                },
            ),
            (
                "ecdsa-sha2-nistp521",
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP521,
                },
            ),
            (
                "ssh-rsa",
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
            ),
            (
                "ssh-rsa",
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ),
        ]
        .into_iter()
        .filter(|(name, _)| listed(name))
        .map(|(_, algorithm)| algorithm)
        .collect();
        Trusted { blobs, algorithms }
    }
}

/// Checks the server's host key during the key exchange.
struct HostKeyCheck {
    blobs: Vec<Vec<u8>>,
}

/// What ends the SSH session early: russh's error, or a host key `/meta` does not list.
#[derive(Debug)]
enum Refusal {
    Ssh(russh::Error),
    HostKey(String),
}

impl From<russh::Error> for Refusal {
    fn from(e: russh::Error) -> Refusal {
        Refusal::Ssh(e)
    }
}

impl client::Handler for HostKeyCheck {
    type Error = Refusal;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Refusal> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                let blob = key.to_bytes().map_err(russh::Error::from)?;
                if self.blobs.contains(&blob) {
                    return Ok(true);
                }
                let presented = format!(
                    "{} {}",
                    key.algorithm().as_str(),
                    key.fingerprint(HashAlg::Sha256)
                );
                Err(Refusal::HostKey(presented))
            }
            // No certificate algorithm is offered, so a server has no reason to send one.
            PublicKeyOrCertificate::Certificate(cert) => Err(Refusal::HostKey(format!(
                "a host certificate, {} {}",
                cert.algorithm().as_str(),
                cert.public_key().fingerprint(HashAlg::Sha256)
            ))),
        }
    }
}

/// Connect, key exchange, login, `git-upload-pack`: the refs.
async fn session(
    endpoint: &SshEndpoint,
    key: Arc<PrivateKey>,
    trusted: Trusted,
) -> Result<Vec<Ref>, Error> {
    let url = endpoint.url();
    let git = |source| Error::Git {
        url: url.clone(),
        source,
    };
    let listed = names(trusted.algorithms.iter().map(Algorithm::to_string));
    let config = client::Config {
        client_id: russh::SshId::Standard(Cow::Borrowed(concat!(
            "SSH-2.0-homelab-flux_",
            env!("CARGO_PKG_VERSION")
        ))),
        preferred: russh::Preferred {
            key: Cow::Owned(trusted.algorithms),
            ..russh::Preferred::default()
        },
        nodelay: true,
        ..client::Config::default()
    };
    let check = HostKeyCheck {
        blobs: trusted.blobs,
    };
    let port = endpoint.port.unwrap_or(22);
    let stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), port))
        .await
        .map_err(|e| git(Cause::Connect(e)))?;
    let _ = stream.set_nodelay(true);
    let mut handle = client::connect_stream(Arc::new(config), stream, check)
        .await
        .map_err(|refusal| match refusal {
            Refusal::HostKey(presented) => Error::HostKeyMismatch {
                host: endpoint.host.clone(),
                presented,
            },
            Refusal::Ssh(russh::Error::NoCommonAlgo {
                kind: AlgorithmKind::Key,
                theirs,
                ..
            }) => Error::NoListedHostKeyType {
                host: endpoint.host.clone(),
                offered: names(theirs),
                listed: listed.clone(),
            },
            Refusal::Ssh(e) => git(Cause::Ssh(e)),
        })?;

    let login = PrivateKeyWithHashAlg::new(key, None);
    let auth = handle
        .authenticate_publickey(endpoint.user.as_str(), login)
        .await
        .map_err(|e| git(Cause::Ssh(e)))?;
    if !auth.success() {
        return Err(Error::AuthenticationFailed { url });
    }
    let refs = upload_pack_refs(&handle, &endpoint.path)
        .await
        .map_err(git)?;
    let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
    Ok(refs)
}

/// Runs `git-upload-pack '<path>'`, reads its ref advertisement, and sends the flush-pkt that
/// tells it nothing is wanted, so it ends cleanly.
async fn upload_pack_refs(handle: &Handle<HostKeyCheck>, path: &str) -> Result<Vec<Ref>, Cause> {
    let mut channel = handle.channel_open_session().await?;
    channel
        .exec(true, format!("git-upload-pack {}", shell_quote(path)))
        .await?;
    let mut advertisement = Advertisement::new(MAX_ADVERTISEMENT);
    let mut stderr = Vec::new();
    let mut exit_status = None;
    while !advertisement.is_complete() {
        match channel.wait().await {
            Some(ChannelMsg::Data { data }) => {
                advertisement.feed(&data)?;
            }
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                let room = MAX_STDERR.saturating_sub(stderr.len());
                stderr.extend_from_slice(&data[..data.len().min(room)]);
            }
            Some(ChannelMsg::Failure) => return Err(Cause::ExecRefused),
            Some(ChannelMsg::ExitStatus { exit_status: s }) => exit_status = Some(s),
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                return Err(Cause::Ended {
                    exit_status,
                    stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
                });
            }
            Some(_) => {}
        }
    }
    channel.data(pkt_line::FLUSH).await?;
    channel.eof().await?;
    // upload-pack ends on the flush-pkt; its end is awaited so the server sees a clean exit.
    while let Some(msg) = channel.wait().await {
        if matches!(msg, ChannelMsg::ExitStatus { .. } | ChannelMsg::Close) {
            break;
        }
    }
    Ok(advertisement.into_refs())
}

/// `'path'`, as git quotes the path it passes to `git-upload-pack` (`'` becomes `'\''`, `!`
/// becomes `'\!'`).
fn shell_quote(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 2);
    out.push('\'');
    for c in path.chars() {
        match c {
            '\'' | '!' => {
                out.push_str("'\\");
                out.push(c);
                out.push('\'');
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `a, b, c`.
fn names(names: impl IntoIterator<Item = String>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_as_git_quotes_them() {
        assert_eq!(shell_quote("/o/r.git"), "'/o/r.git'");
        assert_eq!(shell_quote("/it's!.git"), "'/it'\\''s'\\!'.git'");
    }

    #[test]
    fn only_the_types_meta_lists_are_offered() {
        use base64::Engine as _;
        let line = |kind: &str| {
            let mut blob = (kind.len() as u32).to_be_bytes().to_vec();
            blob.extend_from_slice(kind.as_bytes());
            blob.extend_from_slice(b"material");
            format!(
                "{kind} {}",
                base64::engine::general_purpose::STANDARD.encode(blob)
            )
        };
        let offered = |lines: &[String]| {
            Trusted::from_meta(lines)
                .algorithms
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        // GitHub's three, in any order: ed25519 first, RSA with SHA-2 only.
        let github = [
            line("ssh-rsa"),
            line("ecdsa-sha2-nistp256"),
            line("ssh-ed25519"),
        ];
        assert_eq!(
            offered(&github),
            [
                "ssh-ed25519",
                "ecdsa-sha2-nistp256",
                "rsa-sha2-512",
                "rsa-sha2-256"
            ]
        );
        assert_eq!(
            offered(&[line("ssh-rsa")]),
            ["rsa-sha2-512", "rsa-sha2-256"]
        );
        assert_eq!(
            offered(&[line("ecdsa-sha2-nistp384")]),
            ["ecdsa-sha2-nistp384"]
        );
        // A type this client cannot check offers nothing.
        assert!(offered(&[line("ssh-dss")]).is_empty());
    }

    #[tokio::test]
    async fn no_host_keys_is_refused_before_connecting() {
        let err = prove_key(
            "git@github.com:o/r.git",
            &SecretString::from("unused"),
            &["garbage".to_owned()],
            "main",
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::NoHostKeys { .. }), "{err:?}");
    }
}
