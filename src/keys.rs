//! Deploy keys, made in memory: an ed25519 key pair, its OpenSSH encodings and fingerprint.
//!
//! Pure: no file is written and nothing leaves the process. The private half is a
//! [`SecretString`] from the moment it is encoded, so it cannot reach a message or a `Debug` print.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

/// What can go wrong with a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key could not be generated or encoded.
    #[error("could not generate an ed25519 deploy key")]
    Generate {
        /// What ssh-key reported.
        #[source]
        source: ssh_key::Error,
    },
    /// A stored private key (e.g. the cluster's `identity`) is not an OpenSSH private key.
    #[error("the private key is not a valid unencrypted OpenSSH private key")]
    InvalidPrivateKey,
    /// A public key line is not `type base64 [comment]`.
    #[error("`{line}` is not an OpenSSH public key")]
    InvalidPublicKey {
        /// The rejected line (public data).
        line: String,
    },
}

/// An ed25519 key pair for a deploy key.
pub struct KeyPair {
    private_openssh: SecretString,
    public_openssh: String,
    fingerprint: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_openssh", &self.public_openssh)
            .field("fingerprint", &self.fingerprint)
            .field("private_openssh", &"[redacted]")
            .finish()
    }
}

impl KeyPair {
    /// A new random ed25519 key pair whose public line ends with `comment`.
    pub fn generate(comment: &str) -> Result<KeyPair, Error> {
        let mut private = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
            .map_err(|source| Error::Generate { source })?;
        private.set_comment(comment);
        KeyPair::from_private(&private).map_err(|source| Error::Generate { source })
    }

    /// Reads an unencrypted OpenSSH private key (the `identity` of a Flux Secret).
    pub fn from_private_openssh(private_openssh: &SecretString) -> Result<KeyPair, Error> {
        let private = PrivateKey::from_openssh(private_openssh.expose_secret())
            .map_err(|_| Error::InvalidPrivateKey)?;
        if private.is_encrypted() {
            return Err(Error::InvalidPrivateKey);
        }
        KeyPair::from_private(&private).map_err(|_| Error::InvalidPrivateKey)
    }

    fn from_private(private: &PrivateKey) -> Result<KeyPair, ssh_key::Error> {
        let encoded = private.to_openssh(LineEnding::LF)?;
        let public = private.public_key();
        Ok(KeyPair {
            private_openssh: SecretString::from(encoded.as_str()),
            public_openssh: public.to_openssh()?,
            fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
        })
    }

    /// The private key, `-----BEGIN OPENSSH PRIVATE KEY-----...` (the Secret's `identity`).
    pub fn private_key_openssh(&self) -> &SecretString {
        &self.private_openssh
    }

    /// The public key, `ssh-ed25519 AAAA... comment` (the Secret's `identity.pub`, and what
    /// GitHub gets).
    pub fn public_key_openssh(&self) -> &str {
        &self.public_openssh
    }

    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// The `SHA256:...` fingerprint of an OpenSSH public key line.
pub fn fingerprint(public_openssh: &str) -> Result<String, Error> {
    let key = parse_public(public_openssh)?;
    Ok(key.fingerprint(HashAlg::Sha256).to_string())
}

/// The key blob of a host key line from `/meta` (`TYPE BASE64`, any key type: GitHub lists
/// ed25519, ECDSA and RSA keys, and a server may offer any of them): the base64 part decoded,
/// kept only when its wire-format type name is the line's `TYPE`.
pub fn host_key_blob(line: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let mut parts = line.split_whitespace();
    let (kind, encoded) = (parts.next()?, parts.next()?);
    let blob = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    (blob.get(4..4usize.checked_add(len)?)? == kind.as_bytes()).then_some(blob)
}

fn parse_public(line: &str) -> Result<PublicKey, Error> {
    PublicKey::from_openssh(line.trim()).map_err(|_| invalid_public(line))
}

fn invalid_public(line: &str) -> Error {
    let mut shown: String = line.trim().chars().take(80).collect();
    if line.trim().chars().count() > 80 {
        shown.push('…');
    }
    Error::InvalidPublicKey { line: shown }
}

/// The default title of a cluster's deploy key: `homelab-flux <context> <cluster id>`.
///
/// k3s names every context `default` (kind and minikube reuse fixed names too), so the context
/// alone would give two clusters on one repository the same title, and each bootstrap would
/// delete the other's key as stale. The id is [`cluster_id`]: distinct for clusters at distinct
/// API server addresses, and the same after a rebuild at the same address, so that a rebuilt
/// cluster still finds its own stale key.
pub fn default_title(context: &str, server: &str) -> String {
    format!("homelab-flux {context} {}", cluster_id(context, server))
}

/// The title homelab-flux gave keys before titles carried a cluster id. Such a key is this
/// cluster's only when the cluster's Secret holds it; it is never deleted as stale.
pub fn legacy_title(context: &str) -> String {
    format!("homelab-flux {context}")
}

/// Eight hex digits of SHA-256 over the context name and the API server address (scheme, host
/// in lower case, port with the scheme's default filled in, path without a trailing `/`).
pub fn cluster_id(context: &str, server: &str) -> String {
    use ssh_key::sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{context}\n{}", normalise_server(server)));
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// `https://Host:443/` and `https://host` are one address.
fn normalise_server(server: &str) -> String {
    let Ok(url) = reqwest::Url::parse(server.trim()) else {
        return server.trim().trim_end_matches('/').to_ascii_lowercase();
    };
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let port = url.port_or_known_default().unwrap_or_default();
    format!(
        "{}://{host}:{port}{}",
        url.scheme(),
        url.path().trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_key_blob_is_read_for_any_type_and_only_when_its_type_matches() {
        use base64::Engine as _;
        let wire = |kind: &str, rest: &[u8]| {
            let mut blob = (kind.len() as u32).to_be_bytes().to_vec();
            blob.extend_from_slice(kind.as_bytes());
            blob.extend_from_slice(rest);
            base64::engine::general_purpose::STANDARD.encode(blob)
        };
        for kind in ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"] {
            let line = format!("{kind} {}", wire(kind, b"key material"));
            let blob = host_key_blob(&line).unwrap();
            assert!(blob.ends_with(b"key material"), "{kind}");
        }
        let ed = wire("ssh-ed25519", b"k");
        assert_eq!(
            host_key_blob(&format!("ssh-rsa {ed}")),
            None,
            "type and blob differ"
        );
        assert_eq!(host_key_blob("ssh-ed25519 not*base64"), None);
        assert_eq!(host_key_blob("ssh-ed25519 AAAA"), None, "truncated");
        assert_eq!(host_key_blob("ssh-ed25519"), None);
        let huge = base64::engine::general_purpose::STANDARD.encode([0xff, 0xff, 0xff, 0xff, b'x']);
        assert_eq!(
            host_key_blob(&format!("x {huge}")),
            None,
            "a length past the end"
        );
    }

    #[test]
    fn titles_tell_clusters_with_one_context_name_apart() {
        // Two k3s clusters: both contexts are `default`, the addresses differ.
        let a = default_title("default", "https://192.168.1.10:6443");
        let b = default_title("default", "https://192.168.1.20:6443");
        assert_ne!(a, b);
        assert!(a.starts_with("homelab-flux default "), "{a}");
        let id = a.rsplit(' ').next().unwrap();
        assert_eq!(id.len(), 8);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        // A rebuild at the same address, however the kubeconfig spells it, keeps the title.
        assert_eq!(a, default_title("default", "https://192.168.1.10:6443/"));
        assert_eq!(
            default_title("home", "https://K3S.lan"),
            default_title("home", "https://k3s.lan:443")
        );
        // Another context name at the same address is another cluster entry.
        assert_ne!(
            default_title("a", "https://k3s.lan"),
            default_title("b", "https://k3s.lan")
        );
        assert_eq!(legacy_title("default"), "homelab-flux default");
    }

    #[test]
    fn generated_keys_are_ed25519_openssh() {
        let pair = KeyPair::generate("homelab-flux test").unwrap();
        assert!(
            pair.public_key_openssh()
                .starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5")
        );
        assert!(pair.public_key_openssh().ends_with(" homelab-flux test"));
        let private = pair.private_key_openssh().expose_secret();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert!(private.ends_with("-----END OPENSSH PRIVATE KEY-----\n"));
        assert!(pair.fingerprint().starts_with("SHA256:"));
        assert_eq!(
            fingerprint(pair.public_key_openssh()).unwrap(),
            pair.fingerprint()
        );
        // Two keys differ.
        let other = KeyPair::generate("homelab-flux test").unwrap();
        assert_ne!(
            fingerprint(pair.public_key_openssh()).unwrap(),
            fingerprint(other.public_key_openssh()).unwrap()
        );
    }

    #[test]
    fn private_key_round_trips_to_the_same_public_key() {
        let pair = KeyPair::generate("c").unwrap();
        let again = KeyPair::from_private_openssh(pair.private_key_openssh()).unwrap();
        assert_eq!(again.public_key_openssh(), pair.public_key_openssh());
        assert!(matches!(
            KeyPair::from_private_openssh(&SecretString::from("nope")),
            Err(Error::InvalidPrivateKey)
        ));
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let pair = KeyPair::generate("c").unwrap();
        let debug = format!("{pair:?}");
        let private = pair.private_key_openssh().expose_secret();
        let body = private.lines().nth(1).unwrap();
        assert!(!debug.contains(body), "{debug}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }

    #[test]
    fn comments_do_not_change_the_key() {
        let pair = KeyPair::generate("one").unwrap();
        let bare: Vec<&str> = pair.public_key_openssh().split(' ').take(2).collect();
        assert_eq!(
            fingerprint(pair.public_key_openssh()).unwrap(),
            fingerprint(&bare.join(" ")).unwrap()
        );
        assert!(fingerprint("ssh-ed25519 garbage").is_err());
        assert!(matches!(
            fingerprint("not a key"),
            Err(Error::InvalidPublicKey { .. })
        ));
    }
}
