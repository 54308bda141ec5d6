//! The fake GitHub's App endpoints (SPEC §3a): Apps with a real RSA-2048 key pair, their
//! installations, JWTs verified as GitHub does (RS256 with the App's public key, `iss`, `iat`,
//! `exp`), installation tokens (`ghs_` + 36 alphanumerics) that expire and are scoped to
//! repositories and permissions, and the check an HTTPS git server asks before it serves a clone
//! ([`GIT_AUTH_PATH`], for nginx's `auth_request`).
//!
//! Bodies are the reference bodies of `tests/fixtures/github-app/` (GitHub's OpenAPI examples and
//! recorded answers, see its SOURCES.md), rewritten with the fake's ids, names and URLs.
//!
//! What the fake decides where GitHub's documentation is silent (SOURCES.md, "Choices"):
//! - a JWT that is not three base64url parts of JSON, is not RS256, names no App of the fake, or
//!   whose signature the App's current public key does not verify (a wrong or revoked key), is
//!   401 "A JSON web token could not be decoded";
//! - `iat` must be an integer not after now (no leeway: the fake and its clients share a clock);
//!   `exp` an integer after now and at most 600 s after now (the documented 10 minutes);
//! - the JWT endpoints accept only `Authorization: Bearer` (the docs: a JWT must use `Bearer`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaKeyPair};
use serde_json::{Value, json};

use super::{Access, Reply, TokenKind, TokenSpec};

mod answer;
pub(super) use answer::is_jwt_endpoint;
use hyper::StatusCode;

/// The path of the fake that answers nginx's `auth_request` for the HTTPS git server: 200 when
/// the request's HTTP Basic credentials are `x-access-token` and an installation token the fake
/// issued, unexpired, scoped to the repository of `X-Original-URI` with `contents` read; 401
/// otherwise. Not part of GitHub's API; kept out of [`super::FakeGitHub::requests`].
pub const GIT_AUTH_PATH: &str = "/_fake/git-auth";

/// The lifetime GitHub gives an installation token ("Installation tokens expire one hour from
/// the time you create them", REST docs, "Create an installation access token for an app").
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The longest `exp - now` GitHub accepts ("no more than 10 minutes into the future", docs
/// "Generating a JSON Web Token (JWT) for a GitHub App").
const MAX_JWT_LIFETIME: i64 = 600;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github-app"
    ))
    .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fake GitHub needs {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reference bodies of `tests/fixtures/github-app/`.
pub(super) struct AppReferences {
    app: Value,
    installation: Value,
    token: Value,
    errors: Value,
}

impl AppReferences {
    pub(super) fn load() -> AppReferences {
        AppReferences {
            app: fixture("app.json"),
            installation: fixture("installation.json"),
            token: fixture("installation-token.json"),
            errors: fixture("errors.json"),
        }
    }

    pub(super) fn error(&self, key: &str) -> Reply {
        let entry = &self.errors[key];
        let status = StatusCode::from_u16(entry["status"].as_u64().expect("status") as u16)
            .expect("valid status");
        let mut reply = Reply::json(status, entry["body"].clone());
        if let Some(headers) = entry["headers"].as_object() {
            for (k, v) in headers {
                reply = reply.header(k, v.as_str().unwrap_or_default());
            }
        }
        reply
    }
}

/// A GitHub App the fake knows.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// The App ID.
    pub id: u64,
    /// The slug (also the name).
    pub slug: String,
    /// The login of the account that owns the App.
    pub owner: String,
}

impl AppSpec {
    /// An App owned by `username` (the owner of the worlds' repositories).
    pub fn new(id: u64, slug: &str) -> AppSpec {
        AppSpec {
            id,
            slug: slug.to_owned(),
            owner: "username".to_owned(),
        }
    }

    /// Sets the owning account.
    #[allow(
        dead_code,
        reason = "API of the App fake for the CLI-level tests (notes/app-contract.md)"
    )]
    pub fn owner(mut self, login: &str) -> AppSpec {
        self.owner = login.to_owned();
        self
    }
}

/// A registered App: its id and private key (what its settings page lets one download), and
/// JWT signing for tests that build their own.
#[derive(Clone)]
pub struct FakeApp {
    id: u64,
    pem: String,
    key: Arc<RsaKeyPair>,
}

impl std::fmt::Debug for FakeApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApp")
            .field("id", &self.id)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl FakeApp {
    /// The App ID.
    #[allow(
        dead_code,
        reason = "API of the App fake for the CLI-level tests (notes/app-contract.md)"
    )]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The private key as GitHub downloads it: PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`).
    #[allow(
        dead_code,
        reason = "API of the App fake for the CLI-level tests (notes/app-contract.md)"
    )]
    pub fn private_key_pem(&self) -> String {
        self.pem.clone()
    }

    /// A JWT with these claims, signed RS256 with this App's key (header `{"alg":"RS256","typ":"JWT"}`).
    pub fn jwt_with_claims(&self, claims: &Value) -> String {
        sign_jwt(&self.key, claims)
    }

    /// A JWT for this App as GitHub's docs make one: `iat` 60 s in the past, `exp` 9 minutes on.
    pub fn jwt(&self) -> String {
        let now = jiff::Timestamp::now().as_second();
        self.jwt_with_claims(
            &json!({"iat": now - 60, "exp": now + 540, "iss": self.id.to_string()}),
        )
    }
}

fn sign_jwt(key: &RsaKeyPair, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .expect("RS256 signing");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// An installation of an App on one account, with its repositories and permissions.
#[derive(Debug, Clone)]
pub struct InstallationSpec {
    /// The installation id (default: 1000 + the count of installations so far).
    pub id: Option<u64>,
    /// The account (user or organisation) it is installed on.
    pub account: String,
    /// Selected repository names of the account; `None`: all of them.
    pub repositories: Option<Vec<String>>,
    /// Contents permission (default read).
    pub contents: Access,
    /// Administration permission (default none).
    pub administration: Access,
    /// Suspended installations get 403 on a token request.
    pub suspended: bool,
}

impl InstallationSpec {
    /// An installation on `owner` with only `repo` selected, `contents: read` and `metadata: read`.
    pub fn new(owner: &str, repo: &str) -> InstallationSpec {
        InstallationSpec {
            id: None,
            account: owner.to_owned(),
            repositories: Some(vec![repo.to_owned()]),
            contents: Access::Read,
            administration: Access::None,
            suspended: false,
        }
    }

    /// Sets the installation id.
    pub fn id(mut self, id: u64) -> InstallationSpec {
        self.id = Some(id);
        self
    }

    /// Sets the Contents permission (`Access::None`: not granted).
    pub fn contents(mut self, access: Access) -> InstallationSpec {
        self.contents = access;
        self
    }

    /// Sets the Administration permission.
    #[allow(
        dead_code,
        reason = "API of the App fake for the CLI-level tests (notes/app-contract.md)"
    )]
    pub fn administration(mut self, access: Access) -> InstallationSpec {
        self.administration = access;
        self
    }

    /// Suspended or not.
    #[allow(
        dead_code,
        reason = "API of the App fake for the CLI-level tests (notes/app-contract.md)"
    )]
    pub fn suspended(mut self, suspended: bool) -> InstallationSpec {
        self.suspended = suspended;
        self
    }

    /// Adds a selected repository.
    #[allow(
        dead_code,
        reason = "API of the App fake for the CLI-level tests (notes/app-contract.md)"
    )]
    pub fn repository(mut self, name: &str) -> InstallationSpec {
        self.repositories
            .get_or_insert_with(Vec::new)
            .push(name.to_owned());
        self
    }

    /// Every repository of the account (`repository_selection: all`).
    #[allow(
        dead_code,
        reason = "API of the App fake for the CLI-level tests (notes/app-contract.md)"
    )]
    pub fn all_repositories(mut self) -> InstallationSpec {
        self.repositories = None;
        self
    }

    fn permissions(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::from([("metadata".to_owned(), "read".to_owned())]);
        for (name, access) in [
            ("contents", self.contents),
            ("administration", self.administration),
        ] {
            if let Some(level) = level_name(access) {
                map.insert(name.to_owned(), level.to_owned());
            }
        }
        map
    }

    fn covers(&self, owner: &str, name: &str) -> bool {
        self.account.eq_ignore_ascii_case(owner)
            && self
                .repositories
                .as_ref()
                .is_none_or(|list| list.iter().any(|r| r.eq_ignore_ascii_case(name)))
    }
}

fn level_name(access: Access) -> Option<&'static str> {
    match access {
        Access::None => None,
        Access::Read => Some("read"),
        Access::Write => Some("write"),
    }
}

fn level_of(name: Option<&str>) -> Access {
    match name {
        Some("write") => Access::Write,
        Some("read") => Access::Read,
        _ => Access::None,
    }
}

/// An installation token the fake issued.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// `ghs_` + 36 alphanumerics.
    pub token: String,
    /// The installation it belongs to.
    pub installation_id: u64,
    /// `owner/name` of every repository it reaches.
    pub repositories: Vec<String>,
    /// Permission name → `read` / `write`.
    pub permissions: BTreeMap<String, String>,
    /// When it stops working.
    pub expires_at: jiff::Timestamp,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"ghs_<redacted>")
            .field("installation_id", &self.installation_id)
            .field("repositories", &self.repositories)
            .field("permissions", &self.permissions)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl IssuedToken {
    /// Not yet expired.
    pub fn is_live(&self) -> bool {
        jiff::Timestamp::now() < self.expires_at
    }
}

/// One question of the HTTPS git server to [`GIT_AUTH_PATH`] and the fake's answer.
#[derive(Clone)]
pub struct GitAuth {
    /// `owner/name` from the URL of the git request.
    pub repo: String,
    /// The Basic user name sent, if any.
    pub user: Option<String>,
    /// The Basic password sent, if any (compare it; never print it).
    pub password: Option<String>,
    /// Whether the fake let it through.
    pub allowed: bool,
    /// Why, in a few words (`ok`, `no credentials`, `unknown token`, `expired`, ...).
    pub reason: &'static str,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field("repo", &self.repo)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("allowed", &self.allowed)
            .field("reason", &self.reason)
            .finish()
    }
}

struct AppEntry {
    spec: AppSpec,
    /// DER `RSAPublicKey`; `None` once the key was revoked.
    public_key: Option<Vec<u8>>,
}

struct Installation {
    id: u64,
    app_id: u64,
    spec: InstallationSpec,
}

/// The App side of the fake's state.
pub(super) struct Apps {
    apps: Vec<AppEntry>,
    installations: Vec<Installation>,
    tokens: Vec<IssuedToken>,
    ttl: Duration,
    git_auth: Vec<GitAuth>,
}

impl Default for Apps {
    fn default() -> Apps {
        Apps {
            apps: Vec::new(),
            installations: Vec::new(),
            tokens: Vec::new(),
            ttl: DEFAULT_TOKEN_TTL,
            git_auth: Vec::new(),
        }
    }
}

impl Apps {
    /// The [`TokenSpec`] the repository endpoints use for an issued installation token:
    /// `Some(Err(()))` when it has expired (GitHub: 401), `None` when the fake never issued it.
    pub(super) fn token_spec(&self, token: &str) -> Option<Result<TokenSpec, ()>> {
        let issued = self.tokens.iter().find(|t| t.token == token)?;
        if !issued.is_live() {
            return Some(Err(()));
        }
        let account = self
            .installations
            .iter()
            .find(|i| i.id == issued.installation_id)
            .map(|i| i.spec.account.clone())
            .unwrap_or_default();
        Some(Ok(TokenSpec {
            login: account,
            kind: TokenKind::Installation {
                repositories: issued.repositories.clone(),
                contents: level_of(issued.permissions.get("contents").map(String::as_str)),
                administration: level_of(
                    issued.permissions.get("administration").map(String::as_str),
                ),
            },
            expiration: None,
        }))
    }
}

/// Makes an RSA-2048 key pair with `openssl genrsa -traditional` (PKCS#1 PEM, as GitHub hands
/// out App keys).
fn generate_key() -> (String, RsaKeyPair) {
    use rustls::pki_types::PrivatePkcs1KeyDer;
    use rustls::pki_types::pem::PemObject as _;
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl genrsa: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8(out.stdout).expect("PEM is ASCII");
    let der = PrivatePkcs1KeyDer::from_pem_slice(pem.as_bytes()).expect("a PKCS#1 PEM");
    let key = RsaKeyPair::from_der(der.secret_pkcs1_der()).expect("an RSA key ring accepts");
    (pem, key)
}

impl super::FakeGitHub {
    /// Registers an App with a new RSA-2048 key pair.
    pub fn add_app(&self, spec: AppSpec) -> FakeApp {
        let (pem, key) = generate_key();
        let public_key = key.public().as_ref().to_vec();
        let id = spec.id;
        let mut state = self.state();
        state.apps.apps.retain(|a| a.spec.id != id);
        state.apps.apps.push(AppEntry {
            spec,
            public_key: Some(public_key),
        });
        FakeApp {
            id,
            pem,
            key: Arc::new(key),
        }
    }

    /// Installs App `app_id`; returns the installation id.
    pub fn install_app(&self, app_id: u64, spec: InstallationSpec) -> u64 {
        let mut state = self.state();
        let id = spec
            .id
            .unwrap_or(1000 + state.apps.installations.len() as u64);
        state.apps.installations.retain(|i| i.id != id);
        state
            .apps
            .installations
            .push(Installation { id, app_id, spec });
        id
    }

    /// Suspends (or unsuspends) an installation: token requests then answer 403.
    pub fn set_installation_suspended(&self, installation_id: u64, suspended: bool) {
        let mut state = self.state();
        for i in &mut state.apps.installations {
            if i.id == installation_id {
                i.spec.suspended = suspended;
            }
        }
    }

    /// Removes an installation (the App uninstalled from the account).
    #[allow(
        dead_code,
        reason = "API of the App fake for the CLI-level tests (notes/app-contract.md)"
    )]
    pub fn uninstall_app(&self, installation_id: u64) {
        self.state()
            .apps
            .installations
            .retain(|i| i.id != installation_id);
    }

    /// The lifetime of tokens issued from now on (default 1 h, as GitHub).
    pub fn set_installation_token_ttl(&self, ttl: Duration) {
        self.state().apps.ttl = ttl;
    }

    /// Every installation token issued so far, in order.
    pub fn installation_tokens(&self) -> Vec<IssuedToken> {
        self.state().apps.tokens.clone()
    }

    /// Makes every token issued so far expire now (GitHub then answers 401 to them, and the git
    /// server refuses them).
    pub fn expire_installation_tokens(&self) {
        let now = jiff::Timestamp::now();
        for t in &mut self.state().apps.tokens {
            t.expires_at = t.expires_at.min(now);
        }
    }

    /// The App's key rotated away: JWTs signed with the key [`FakeApp`] holds get 401.
    pub fn revoke_app_key(&self, app_id: u64) {
        for a in &mut self.state().apps.apps {
            if a.spec.id == app_id {
                a.public_key = None;
            }
        }
    }

    /// Every question the HTTPS git server asked ([`GIT_AUTH_PATH`]), in order.
    pub fn git_auth_log(&self) -> Vec<GitAuth> {
        self.state().apps.git_auth.clone()
    }
}
