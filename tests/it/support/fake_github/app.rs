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
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{self, RsaKeyPair};
use serde_json::{Value, json};

use super::{Access, App, Reply, RepoSpec, State, TokenKind, TokenSpec};
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

/// Why a JWT was refused: the key of its errors.json entry.
fn verify_jwt(state: &State, jwt: &str) -> Result<u64, &'static str> {
    const UNDECODABLE: &str = "jwt-not-decoded-401";
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, payload, sig] = parts[..] else {
        return Err(UNDECODABLE);
    };
    let decode = |part: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
    };
    let (Some(head), Some(claims), Ok(sig)) =
        (decode(header), decode(payload), URL_SAFE_NO_PAD.decode(sig))
    else {
        return Err(UNDECODABLE);
    };
    if head["alg"] != "RS256" {
        return Err(UNDECODABLE);
    }
    // GitHub accepts the App ID as a string or a number.
    let iss = match &claims["iss"] {
        Value::String(s) => s.parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
    .ok_or(UNDECODABLE)?;
    let key = state
        .apps
        .apps
        .iter()
        .find(|a| a.spec.id == iss)
        .and_then(|a| a.public_key.as_ref())
        .ok_or(UNDECODABLE)?;
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key)
        .verify(format!("{header}.{payload}").as_bytes(), &sig)
        .map_err(|_| UNDECODABLE)?;
    let now = jiff::Timestamp::now().as_second();
    match claims["iat"].as_i64() {
        Some(iat) if iat <= now => {}
        _ => return Err("jwt-iat-401"),
    }
    match claims["exp"].as_i64() {
        Some(exp) if exp <= now => Err("jwt-exp-401"),
        Some(exp) if exp - now > MAX_JWT_LIFETIME => Err("jwt-exp-too-far-401"),
        Some(_) => Ok(iss),
        None => Err("jwt-exp-401"),
    }
}

fn random_token() -> String {
    use ring::rand::SecureRandom as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 36];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("random bytes");
    let body: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("ghs_{body}")
}

fn iso(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl App {
    /// Answers the JWT endpoints; `None` for every other path. `authorization` is the raw header.
    pub(super) fn app_answer(
        &self,
        state: &mut State,
        method: &str,
        segments: &[&str],
        authorization: Option<&str>,
        body: &str,
    ) -> Option<Reply> {
        let endpoint = matches!(
            (method, segments),
            ("GET", ["app"])
                | ("GET", ["app", "installations", _])
                | ("POST", ["app", "installations", _, "access_tokens"])
                | ("GET", ["repos", _, _, "installation"])
        );
        if !endpoint {
            return None;
        }
        let Some(authorization) = authorization else {
            // The spec's `requires_authentication` response (body as in fake_github.rs).
            return Some(Reply::json(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Requires authentication", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
            ));
        };
        let jwt = authorization.strip_prefix("Bearer ").unwrap_or("");
        let app_id = match verify_jwt(state, jwt) {
            Ok(id) => id,
            Err(key) => return Some(self.refs.apps.error(key)),
        };
        Some(
            match (method, segments) {
                ("GET", ["app"]) => self.app_body(state, app_id),
                ("GET", ["app", "installations", id]) => {
                    match find_installation(state, app_id, id) {
                    Some(i) => Reply::json(StatusCode::OK, self.installation_body(state, i)),
                    None => self.not_found(
                        "Not Found",
                        "https://docs.github.com/rest/apps/apps#get-an-installation-for-the-authenticated-app",
                    ),
                }
                }
                ("GET", ["repos", owner, name, _]) => {
                    let found = state
                        .apps
                        .installations
                        .iter()
                        .find(|i| i.app_id == app_id && i.spec.covers(owner, name));
                    match found {
                    Some(i) => Reply::json(StatusCode::OK, self.installation_body(state, i)),
                    None => self.not_found(
                        "Not Found",
                        "https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app",
                    ),
                }
                }
                (_, [_, _, id, _]) => self.issue_token(state, app_id, id, body),
                _ => unreachable!("matched above"),
            },
        )
    }

    fn app_body(&self, state: &State, app_id: u64) -> Reply {
        let Some(entry) = state.apps.apps.iter().find(|a| a.spec.id == app_id) else {
            return self.refs.apps.error("jwt-not-decoded-401");
        };
        let spec = &entry.spec;
        let mut body = self.refs.apps.app.clone();
        body["id"] = json!(spec.id);
        body["slug"] = json!(spec.slug);
        body["name"] = json!(spec.slug);
        body["client_id"] = json!(format!("Iv23li{:014}", spec.id));
        body["node_id"] = json!(STANDARD.encode(format!("Integration{}", spec.id)));
        body["html_url"] = json!(format!("https://github.com/apps/{}", spec.slug));
        body["owner"] = self.account_body(&body["owner"], &spec.owner);
        body["permissions"] = json!({"metadata": "read", "contents": "read"});
        body["events"] = json!([]);
        body["installations_count"] = json!(
            state
                .apps
                .installations
                .iter()
                .filter(|i| i.app_id == app_id)
                .count()
        );
        Reply::json(StatusCode::OK, body)
    }

    /// The owner/account object of a reference body, moved to `login`.
    fn account_body(&self, template: &Value, login: &str) -> Value {
        let mut account = template.clone();
        let text = account.to_string().replace("octocat", login);
        account = serde_json::from_str(&text).expect("still JSON");
        account["url"] = json!(format!("{}/users/{login}", self.base));
        account
    }

    fn installation_body(&self, state: &State, i: &Installation) -> Value {
        let mut body = self.refs.apps.installation.clone();
        let slug = state
            .apps
            .apps
            .iter()
            .find(|a| a.spec.id == i.app_id)
            .map(|a| a.spec.slug.clone())
            .unwrap_or_default();
        body["id"] = json!(i.id);
        body["account"] = self.account_body(&body["account"], &i.spec.account);
        body["account"]["type"] = json!("User");
        body["access_tokens_url"] = json!(format!(
            "{}/app/installations/{}/access_tokens",
            self.base, i.id
        ));
        body["repositories_url"] = json!(format!("{}/installation/repositories", self.base));
        body["html_url"] = json!(format!(
            "https://github.com/settings/installations/{}",
            i.id
        ));
        body["app_id"] = json!(i.app_id);
        body["app_slug"] = json!(slug);
        body["target_type"] = json!("User");
        body["permissions"] = json!(i.spec.permissions());
        body["events"] = json!([]);
        body["repository_selection"] = json!(if i.spec.repositories.is_some() {
            "selected"
        } else {
            "all"
        });
        if i.spec.suspended {
            body["suspended_at"] = json!("2026-01-01T00:00:00Z");
        }
        body
    }

    fn issue_token(&self, state: &mut State, app_id: u64, id: &str, body: &str) -> Reply {
        const DOCS: &str =
            "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app";
        let Some(installation) = find_installation(state, app_id, id) else {
            return self.not_found("Not Found", DOCS);
        };
        if installation.spec.suspended {
            return self.refs.apps.error("installation-suspended-403");
        }
        let (installation_id, spec) = (installation.id, installation.spec.clone());
        // No body, `null` or `{}`: every repository and permission of the installation.
        let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let granted = spec.permissions();
        let permissions = match request["permissions"].as_object() {
            Some(asked) => {
                let mut chosen = BTreeMap::new();
                for (name, level) in asked {
                    let level = level.as_str().unwrap_or_default();
                    if level_of(Some(level)) == Access::None
                        || level_of(granted.get(name).map(String::as_str)) < level_of(Some(level))
                    {
                        return self.refs.apps.error("permissions-not-granted-422");
                    }
                    chosen.insert(name.clone(), level.to_owned());
                }
                chosen
            }
            None => granted,
        };
        let account_repos: Vec<(u64, RepoSpec)> = state
            .repos
            .iter()
            .filter(|(_, r)| r.owner.eq_ignore_ascii_case(&spec.account))
            .cloned()
            .collect();
        let mut names: Vec<String> = Vec::new();
        let named = request["repositories"].as_array();
        let ids = request["repository_ids"].as_array();
        for value in named.into_iter().flatten() {
            names.push(value.as_str().unwrap_or_default().to_owned());
        }
        for value in ids.into_iter().flatten() {
            match account_repos
                .iter()
                .find(|(rid, _)| Some(*rid) == value.as_u64())
            {
                Some((_, r)) => names.push(r.name.clone()),
                None => return self.refs.apps.error("repositories-not-accessible-422"),
            }
        }
        let asked = named.is_some() || ids.is_some();
        if names.iter().any(|n| !spec.covers(&spec.account, n)) {
            return self.refs.apps.error("repositories-not-accessible-422");
        }
        if !asked {
            names = match &spec.repositories {
                Some(list) => list.clone(),
                None => account_repos.iter().map(|(_, r)| r.name.clone()).collect(),
            };
        }
        let now = jiff::Timestamp::now();
        let expires_at =
            jiff::Timestamp::from_second(now.as_second() + state.apps.ttl.as_secs() as i64)
                .expect("a valid time");
        let token = random_token();
        let mut reply = self.refs.apps.token.clone();
        reply["token"] = json!(token);
        reply["expires_at"] = json!(iso(expires_at));
        reply["permissions"] = json!(permissions);
        reply["repository_selection"] = json!(if asked || spec.repositories.is_some() {
            "selected"
        } else {
            "all"
        });
        let template = reply["repositories"][0].clone();
        if asked {
            reply["repositories"] = Value::Array(
                names
                    .iter()
                    .map(|n| self.token_repository(&template, &spec.account, n, &account_repos))
                    .collect(),
            );
        } else if let Some(object) = reply.as_object_mut() {
            // "When you omit repository_ids, the response does not contain the repositories key."
            object.remove("repositories");
        }
        state.apps.tokens.push(IssuedToken {
            token,
            installation_id,
            repositories: names
                .iter()
                .map(|n| format!("{}/{n}", spec.account))
                .collect(),
            permissions,
            expires_at,
        });
        Reply::json(StatusCode::CREATED, reply)
    }

    fn token_repository(
        &self,
        template: &Value,
        owner: &str,
        name: &str,
        known: &[(u64, RepoSpec)],
    ) -> Value {
        let text = template
            .to_string()
            .replace("octocat/Hello-World", &format!("{owner}/{name}"))
            .replace("Hello-World", name)
            .replace("octocat", owner)
            .replace("https://api.github.com", &self.base);
        let mut repo: Value = serde_json::from_str(&text).expect("still JSON");
        if let Some((id, spec)) = known
            .iter()
            .find(|(_, r)| r.name.eq_ignore_ascii_case(name))
        {
            repo["id"] = json!(id);
            repo["private"] = json!(spec.private);
            repo["visibility"] = json!(if spec.private { "private" } else { "public" });
            repo["default_branch"] = json!(spec.default_branch);
        }
        repo
    }

    /// The answer to nginx's `auth_request` ([`GIT_AUTH_PATH`]).
    pub(super) fn git_auth(&self, original_uri: &str, authorization: Option<&str>) -> Reply {
        let path = original_uri.split('?').next().unwrap_or_default();
        let mut parts = path.trim_start_matches('/').split('/');
        let owner = parts.next().unwrap_or_default();
        let name = parts.next().unwrap_or_default().trim_end_matches(".git");
        let repo = format!("{owner}/{name}");
        let credentials = authorization
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let (user, password) = match credentials.as_deref().and_then(|c| c.split_once(':')) {
            Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
            None => (None, None),
        };
        let mut state = self.state();
        let issued = password
            .as_deref()
            .and_then(|p| state.apps.tokens.iter().find(|t| t.token == p));
        let reason = match (&user, issued) {
            (None, _) => "no credentials",
            (Some(u), _) if u != "x-access-token" => "user is not x-access-token",
            (_, None) => "unknown token",
            (_, Some(t)) if !t.is_live() => "expired",
            (_, Some(t)) if !t.repositories.iter().any(|r| r.eq_ignore_ascii_case(&repo)) => {
                "not scoped to this repository"
            }
            (_, Some(t))
                if level_of(t.permissions.get("contents").map(String::as_str)) == Access::None =>
            {
                "no contents permission"
            }
            _ => "ok",
        };
        let allowed = reason == "ok";
        state.apps.git_auth.push(GitAuth {
            repo,
            user,
            password,
            allowed,
            reason,
        });
        if allowed {
            Reply {
                status: StatusCode::OK,
                headers: Vec::new(),
                body: None,
            }
        } else {
            Reply {
                status: StatusCode::UNAUTHORIZED,
                headers: vec![(
                    "www-authenticate".to_owned(),
                    "Basic realm=\"git\"".to_owned(),
                )],
                body: None,
            }
        }
    }
}

fn find_installation<'a>(state: &'a State, app_id: u64, id: &str) -> Option<&'a Installation> {
    let id = id.parse::<u64>().ok()?;
    state
        .apps
        .installations
        .iter()
        .find(|i| i.id == id && i.app_id == app_id)
}
