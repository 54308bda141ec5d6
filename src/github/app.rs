//! The GitHub App's side of the API (`auth: github-app`): the App's JWT (RS256, signed with
//! ring), the App and installation look-ups it authenticates, and the installation token scoped
//! to one repository. Every request goes through the same [`GitHub`] client as the token's (same
//! headers, timeouts, retries and rate-limit handling): a client made with the JWT for the App's
//! endpoints, and one made with the installation token for the repository's.
//!
//! The JWT and the installation token are secrets: they live only inside a sensitive
//! `Authorization` header value of a client, never in a message, a `Debug` print or a log line.

use base64::Engine as _;
use reqwest::Method;
use secrecy::SecretString;
use serde::Deserialize;

use super::{Error, GitHub, Options, decode};
use crate::app_key::{AppKey, KeyFormat};
use crate::facts::{App, Installation, InstallationTokenInfo};

/// A JWT is issued this long in the past, against clock drift (GitHub's recommendation).
pub const JWT_BACKDATE_SECS: i64 = 60;
/// ... and valid this long from now (GitHub accepts at most 10 minutes).
pub const JWT_LIFETIME_SECS: i64 = 9 * 60;

/// The JWT's claims, as signed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Claims {
    pub iat: i64,
    pub exp: i64,
    /// The App ID, as a string (GitHub accepts the App ID or the Client ID here).
    pub iss: String,
}

impl Claims {
    /// The claims of a JWT made at `now` (Unix seconds).
    pub fn at(app_id: u64, now: i64) -> Claims {
        Claims {
            iat: now - JWT_BACKDATE_SECS,
            exp: now + JWT_LIFETIME_SECS,
            iss: app_id.to_string(),
        }
    }
}

/// The App's JWT: `base64url(header).base64url(claims).base64url(RS256 signature)`.
pub fn jwt(key: &AppKey, claims: &Claims) -> Result<SecretString, Error> {
    use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let body = serde_json::to_vec(claims).map_err(|_| Error::Signing)?;
    let signing_input = format!("{header}.{}", b64.encode(body));
    let pair = match key.format() {
        KeyFormat::Pkcs1 => RsaKeyPair::from_der(key.expose_der()),
        KeyFormat::Pkcs8 => RsaKeyPair::from_pkcs8(key.expose_der()),
    }
    .map_err(|_| Error::Signing)?;
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| Error::Signing)?;
    Ok(SecretString::from(format!(
        "{signing_input}.{}",
        b64.encode(signature)
    )))
}

/// A client authenticated as the App (with a fresh JWT) against `api_base`.
pub fn app_client(
    api_base: &str,
    app_id: u64,
    key: &AppKey,
    options: Options,
) -> Result<GitHub, Error> {
    let now = jiff::Timestamp::now().as_second();
    GitHub::with_options(api_base, &jwt(key, &Claims::at(app_id, now))?, options)
}

impl GitHub {
    /// `GET /app` (JWT): the App the key belongs to.
    pub async fn get_app(&self) -> Result<App, Error> {
        let answer = self.send(Method::GET, self.url(&["app"]), None).await?;
        decode("GET /app", &answer.body)
    }

    /// `GET /repos/{owner}/{repo}/installation` (JWT): the App's installation that reaches
    /// the repository.
    pub async fn get_repo_installation(
        &self,
        owner: &str,
        repo: &str,
    ) -> Result<Installation, Error> {
        let url = self.url(&["repos", owner, repo, "installation"]);
        let answer = self.send(Method::GET, url, None).await?;
        decode(
            &format!("GET /repos/{owner}/{repo}/installation"),
            &answer.body,
        )
    }

    /// `GET /app/installations/{id}` (JWT).
    pub async fn get_installation(&self, id: u64) -> Result<Installation, Error> {
        let id = id.to_string();
        let url = self.url(&["app", "installations", &id]);
        let answer = self.send(Method::GET, url, None).await?;
        decode(&format!("GET /app/installations/{id}"), &answer.body)
    }

    /// `POST /app/installations/{id}/access_tokens` (JWT), scoped to one repository with
    /// `contents: read`: a client authenticated with the installation token, and what GitHub
    /// says of the token. The token itself never leaves the client.
    pub async fn installation_client(
        &self,
        installation_id: u64,
        repo: &str,
    ) -> Result<(GitHub, InstallationTokenInfo), Error> {
        #[derive(Deserialize)]
        struct Raw {
            /// Moved into a `SecretString` at once.
            token: String,
            expires_at: String,
            #[serde(default)]
            permissions: std::collections::BTreeMap<String, String>,
        }
        let id = installation_id.to_string();
        let url = self.url(&["app", "installations", &id, "access_tokens"]);
        let body = serde_json::json!({
            "repositories": [repo],
            "permissions": { "contents": "read" },
        });
        let endpoint = format!("POST /app/installations/{id}/access_tokens");
        let answer = self.send(Method::POST, url, Some(body)).await?;
        let raw: Raw = decode(&endpoint, &answer.body)?;
        let token = SecretString::from(raw.token);
        let client = GitHub {
            http: self.http.clone(),
            base: self.base.clone(),
            authorization: super::bearer(&token)?,
            retry: self.retry,
        };
        Ok((
            client,
            InstallationTokenInfo {
                expires_at: raw.expires_at,
                permissions: raw.permissions,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_key::tests::{TEST_KEY_PKCS1, TEST_KEY_PKCS8};

    #[test]
    fn claims_are_backdated_a_minute_and_valid_nine() {
        let c = Claims::at(123456, 1_700_000_000);
        assert_eq!(c.iat, 1_700_000_000 - 60);
        assert_eq!(c.exp, 1_700_000_000 + 540);
        assert_eq!(c.iss, "123456");
        assert!(c.exp - c.iat <= 600, "GitHub refuses more than 10 minutes");
    }

    /// The JWT's three parts decode to the header and claims, and the signature verifies
    /// with the key's public half (RS256), for both PEM containers.
    #[test]
    fn the_jwt_is_rs256_over_header_and_claims() {
        use ring::signature::{
            KeyPair as _, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey,
        };
        use secrecy::ExposeSecret as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for pem in [TEST_KEY_PKCS1, TEST_KEY_PKCS8] {
            let key = AppKey::parse(pem).unwrap();
            let claims = Claims::at(42, 1_700_000_000);
            let token = jwt(&key, &claims).unwrap();
            let parts: Vec<&str> = token.expose_secret().split('.').collect();
            assert_eq!(parts.len(), 3);
            let header: serde_json::Value =
                serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
            assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
            let decoded: Claims = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
            assert_eq!(decoded, claims);
            let pair = match key.format() {
                KeyFormat::Pkcs1 => RsaKeyPair::from_der(key.expose_der()),
                KeyFormat::Pkcs8 => RsaKeyPair::from_pkcs8(key.expose_der()),
            }
            .unwrap();
            let public =
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pair.public_key().as_ref());
            let signed = format!("{}.{}", parts[0], parts[1]);
            public
                .verify(signed.as_bytes(), &b64.decode(parts[2]).unwrap())
                .expect("the signature verifies");
            // A changed claim does not.
            let forged = format!(
                "{}.{}",
                parts[0],
                b64.encode(br#"{"iat":1,"exp":2,"iss":"42"}"#)
            );
            assert!(
                public
                    .verify(forged.as_bytes(), &b64.decode(parts[2]).unwrap())
                    .is_err()
            );
        }
    }

    #[test]
    fn debug_of_an_app_client_never_shows_the_jwt() {
        use secrecy::ExposeSecret as _;
        let key = AppKey::parse(TEST_KEY_PKCS1).unwrap();
        let token = jwt(&key, &Claims::at(1, 1_700_000_000)).unwrap();
        let client = GitHub::new("https://api.github.com", &token).unwrap();
        let shown = format!("{client:?} {:?}", client.authorization);
        let signature = token
            .expose_secret()
            .rsplit('.')
            .next()
            .unwrap()
            .to_string();
        assert!(!shown.contains(&signature), "{shown}");
    }
}
