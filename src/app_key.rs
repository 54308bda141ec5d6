//! The GitHub App's credentials (`githubApp` in `secrets-flux.yaml`): the App ID, the optional
//! installation ID and the App's RSA private key, kept secret from the moment it is read. Pure
//! logic: the PEM is decoded and the key checked with ring, which signs the App's JWTs later.
//!
//! Nothing here ever puts the key, or a piece of it, into a message or a `Debug` print.

use std::fmt;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Which container the key's PEM is: GitHub's download is PKCS#1; `openssl pkcs8 -topk8` makes
/// PKCS#8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// `-----BEGIN RSA PRIVATE KEY-----`.
    Pkcs1,
    /// `-----BEGIN PRIVATE KEY-----`.
    Pkcs8,
}

/// The App's private key: the PEM as written (what the cluster's Secret gets) and its DER
/// (what signs). `Debug` is redacted; [`AppKey::expose_pem`] is the only way to the PEM.
pub struct AppKey {
    pem: SecretString,
    der: SecretBox<Vec<u8>>,
    format: KeyFormat,
}

impl Clone for AppKey {
    fn clone(&self) -> Self {
        AppKey {
            pem: self.pem.clone(),
            der: SecretBox::new(Box::new(self.der.expose_secret().clone())),
            format: self.format,
        }
    }
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppKey({:?}, [REDACTED])", self.format)
    }
}

impl PartialEq for AppKey {
    fn eq(&self, other: &Self) -> bool {
        self.der.expose_secret() == other.der.expose_secret()
    }
}

/// Why a text is not a usable App private key. Never holds any of the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is not a PEM private key (no `-----BEGIN RSA PRIVATE KEY-----` line)")]
    NotPem,
    #[error("is an encrypted private key; GitHub's download is not encrypted")]
    Encrypted,
    #[error("is a PEM `{0}`, not an RSA private key")]
    OtherKind(&'static str),
    #[error("has no `-----END` line matching its `-----BEGIN` line")]
    Unterminated,
    #[error("has a PEM body that is not valid base64")]
    Base64,
    #[error("does not parse as an RSA private key")]
    NotRsa,
}

impl KeyError {
    /// What to do about it.
    pub fn hint(self) -> &'static str {
        match self {
            KeyError::Encrypted => {
                "decrypt it (`openssl rsa -in key.pem -out app.pem`), or generate a new private key on the App's settings page"
            }
            _ => {
                "paste the whole `.pem` file the App's settings page downloaded (\"Generate a private key\"), `-----BEGIN RSA PRIVATE KEY-----` to `-----END RSA PRIVATE KEY-----`"
            }
        }
    }
}

const PKCS1: &str = "RSA PRIVATE KEY";
const PKCS8: &str = "PRIVATE KEY";

impl AppKey {
    /// Reads a PEM private key (PKCS#1 or PKCS#8, RSA) and checks that ring accepts it.
    pub fn parse(text: &str) -> Result<AppKey, KeyError> {
        let (label, body) = pem_block(text)?;
        let format = match label {
            PKCS1 => KeyFormat::Pkcs1,
            PKCS8 => KeyFormat::Pkcs8,
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            "EC PRIVATE KEY" => return Err(KeyError::OtherKind("EC PRIVATE KEY")),
            "OPENSSH PRIVATE KEY" => return Err(KeyError::OtherKind("OPENSSH PRIVATE KEY")),
            "PUBLIC KEY" | "RSA PUBLIC KEY" => return Err(KeyError::OtherKind("PUBLIC KEY")),
            _ => return Err(KeyError::NotPem),
        };
        if body.contains("Proc-Type:") || body.contains("DEK-Info:") {
            return Err(KeyError::Encrypted);
        }
        let compact: String = body.split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| KeyError::Base64)?;
        let parsed = match format {
            KeyFormat::Pkcs1 => ring::signature::RsaKeyPair::from_der(&der).is_ok(),
            KeyFormat::Pkcs8 => ring::signature::RsaKeyPair::from_pkcs8(&der).is_ok(),
        };
        if !parsed {
            return Err(KeyError::NotRsa);
        }
        Ok(AppKey {
            pem: SecretString::from(text.trim().to_string() + "\n"),
            der: SecretBox::new(Box::new(der)),
            format,
        })
    }

    /// The PEM, for the cluster's Secret and the leak scanner only.
    pub fn expose_pem(&self) -> &str {
        self.pem.expose_secret()
    }

    /// The PEM as a secret, for the output's redaction list.
    pub fn secret(&self) -> &SecretString {
        &self.pem
    }

    /// The DER, for signing only.
    pub fn expose_der(&self) -> &[u8] {
        self.der.expose_secret()
    }

    pub fn format(&self) -> KeyFormat {
        self.format
    }

    /// Lines of the PEM body that are found nowhere else: what the hygiene scan searches
    /// tracked files for. The first lines are shared by every RSA key of the size (the DER
    /// header); a line from the middle is the key's own, and so is the one after it.
    pub fn needles(&self) -> Vec<String> {
        let lines: Vec<&str> = self
            .expose_pem()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .collect();
        let mid = lines.len() / 2;
        lines
            .iter()
            .skip(mid)
            .take(1)
            .filter(|l| l.len() >= 32)
            .map(|l| l.to_string())
            .collect()
    }
}

/// The label and body of the first PEM block of `text`.
fn pem_block(text: &str) -> Result<(&str, &str), KeyError> {
    let start = text.find("-----BEGIN ").ok_or(KeyError::NotPem)?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----").ok_or(KeyError::NotPem)?;
    let label = &rest[..label_end];
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker).ok_or(KeyError::Unterminated)?;
    if body_end < body_start {
        return Err(KeyError::Unterminated);
    }
    Ok((label, &rest[body_start..body_end]))
}

/// `githubApp` of the secrets file, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct GitHubApp {
    /// The App ID (the App's settings page, "App ID"; not the Client ID).
    pub id: u64,
    /// The installation on the repository; `None`: looked up with
    /// `GET /repos/{owner}/{repo}/installation`.
    pub installation_id: Option<u64>,
    pub key: AppKey,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 2048-bit test key (PKCS#8 from ring's test data would be DER; this one is generated
    /// for these tests only and used nowhere else).
    pub(crate) const TEST_KEY_PKCS1: &str = include_str!("../tests/fixtures/app-key-pkcs1.pem");
    pub(crate) const TEST_KEY_PKCS8: &str = include_str!("../tests/fixtures/app-key-pkcs8.pem");

    #[test]
    fn pkcs1_and_pkcs8_parse() {
        let k1 = AppKey::parse(TEST_KEY_PKCS1).unwrap();
        assert_eq!(k1.format(), KeyFormat::Pkcs1);
        let k8 = AppKey::parse(TEST_KEY_PKCS8).unwrap();
        assert_eq!(k8.format(), KeyFormat::Pkcs8);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = AppKey::parse(TEST_KEY_PKCS1).unwrap();
        let app = GitHubApp {
            id: 1,
            installation_id: None,
            key,
        };
        let shown = format!("{app:?}");
        let needle = &app.key.needles()[0];
        assert!(!shown.contains(needle.as_str()), "{shown}");
        assert!(!shown.contains("MII"), "{shown}");
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(AppKey::parse("hello").unwrap_err(), KeyError::NotPem);
        assert_eq!(
            AppKey::parse("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n").unwrap_err(),
            KeyError::Unterminated
        );
        assert_eq!(
            AppKey::parse("-----BEGIN RSA PRIVATE KEY-----\n!!!!\n-----END RSA PRIVATE KEY-----")
                .unwrap_err(),
            KeyError::Base64
        );
        assert_eq!(
            AppKey::parse("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----")
                .unwrap_err(),
            KeyError::NotRsa
        );
        assert_eq!(
            AppKey::parse(
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----"
            )
            .unwrap_err(),
            KeyError::Encrypted
        );
        assert_eq!(
            AppKey::parse(
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
            )
            .unwrap_err(),
            KeyError::OtherKind("OPENSSH PRIVATE KEY")
        );
    }

    #[test]
    fn the_needle_is_a_body_line_of_the_key_itself() {
        let k1 = AppKey::parse(TEST_KEY_PKCS1).unwrap();
        let needles = k1.needles();
        assert_eq!(needles.len(), 1);
        assert!(TEST_KEY_PKCS1.contains(&needles[0]));
        assert!(!needles[0].starts_with("MII"));
    }
}
