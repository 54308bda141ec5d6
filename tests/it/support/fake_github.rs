//! A fake GitHub REST API for the tests: a real HTTP server on 127.0.0.1 that answers with the
//! bodies, status codes and headers GitHub documents.
//!
//! Bodies come from `../shared/reference/github/` (GitHub's OpenAPI examples and recorded
//! responses, see its SOURCES.md), rewritten with the fake's own owners, names and SHAs. Every
//! scenario switch says which documented behaviour it stands for, so a test that passes here is
//! a statement about real GitHub.
//!
//! ```ignore
//! let gh = FakeGitHub::start();
//! gh.add_token(TOKEN, TokenSpec::fine_grained("octocat"));
//! gh.add_repo(RepoSpec::new("octocat", "manifests"));
//! // point the client (or HOMELAB_FLUX_GITHUB_API_URL) at gh.url()
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

mod app;
#[allow(
    unused_imports,
    reason = "the App fake's API; the benchmarks that build this support use none of it"
)]
pub use app::{AppSpec, FakeApp, GIT_AUTH_PATH, GitAuth, InstallationSpec, IssuedToken};

/// A token the tests can use; it looks like a classic PAT but is not one.
pub const TEST_TOKEN: &str = "ghp_FakeGitHubTestToken0123456789abcdefAB";

/// The API versions the fake serves. GitHub answers 400 to a version it does not support
/// ([D-ver] "api-versions": "If you specify an API version that is no longer supported, you will
/// receive a 400 error").
const SUPPORTED_API_VERSIONS: &[&str] = &["2022-11-28", "2026-03-10"];

/// The primary rate limit of an authenticated user ([D-rate]: 5,000 requests per hour).
const RATE_LIMIT: u64 = 5000;

fn reference_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/github"
    ))
}

fn reference(name: &str) -> Value {
    let path = reference_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fake GitHub needs {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documented bodies, loaded once per fake.
struct References {
    user: Value,
    repository: Value,
    branch: Value,
    deploy_key: Value,
    meta: Value,
    errors: Value,
    apps: app::AppReferences,
}

impl References {
    fn load() -> References {
        References {
            user: reference("user.json"),
            repository: reference("repository.json"),
            branch: reference("branch.json"),
            deploy_key: reference("deploy-key.json"),
            meta: reference("meta.json"),
            errors: reference("errors.json"),
            apps: app::AppReferences::load(),
        }
    }

    /// An entry of errors.json: status, headers, body.
    fn error(&self, key: &str) -> (StatusCode, Vec<(String, String)>, Value) {
        let entry = &self.errors[key];
        let status = StatusCode::from_u16(entry["status"].as_u64().expect("status") as u16)
            .expect("valid status");
        let headers = entry["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        (status, headers, entry["body"].clone())
    }
}

/// How much a fine-grained token may do with one permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Not granted.
    None,
    /// Read.
    Read,
    /// Read and write.
    Write,
}

/// The kind of token, which decides GitHub's headers and permission answers.
#[derive(Debug, Clone)]
pub enum TokenKind {
    /// A classic PAT: GitHub sends `X-OAuth-Scopes` with its scopes on every response
    /// ([D-scopes]).
    Classic {
        /// e.g. `["repo"]`.
        scopes: Vec<String>,
    },
    /// A fine-grained PAT: no `X-OAuth-Scopes`; a missing permission on a repository the token
    /// can see is a 403 "Resource not accessible by personal access token" with
    /// `X-Accepted-GitHub-Permissions` ([D-trouble]).
    FineGrained {
        /// Repositories (`owner/name`) selected; `None` means all of the owner's.
        repositories: Option<Vec<String>>,
        /// Contents permission.
        contents: Access,
        /// Administration permission (deploy keys).
        administration: Access,
    },
    /// A GitHub App installation token the fake issued (see `app.rs`): it reaches exactly
    /// `repositories` (`owner/name`); a missing permission on one of them is a 403 "Resource not
    /// accessible by integration".
    Installation {
        /// `owner/name` of every repository the token reaches.
        repositories: Vec<String>,
        /// Contents permission.
        contents: Access,
        /// Administration permission.
        administration: Access,
    },
}

/// A token the fake accepts.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The user the token belongs to.
    pub login: String,
    /// Classic or fine-grained.
    pub kind: TokenKind,
    /// The raw `github-authentication-token-expiration` value, sent when set
    /// (e.g. `2023-01-31 23:00:00 UTC`, format per go-github and recorded values, see headers.md).
    pub expiration: Option<String>,
}

impl TokenSpec {
    /// A classic PAT with the given scopes.
    pub fn classic(login: &str, scopes: &[&str]) -> TokenSpec {
        TokenSpec {
            login: login.to_owned(),
            kind: TokenKind::Classic {
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            },
            expiration: None,
        }
    }

    /// A fine-grained PAT on all of the owner's repositories with the permissions the docs ask
    /// for (Metadata read, Administration read/write) plus Contents read.
    pub fn fine_grained(login: &str) -> TokenSpec {
        TokenSpec {
            login: login.to_owned(),
            kind: TokenKind::FineGrained {
                repositories: None,
                contents: Access::Read,
                administration: Access::Write,
            },
            expiration: None,
        }
    }

    /// Sets `github-authentication-token-expiration` to this raw value.
    pub fn expiring(mut self, header_value: &str) -> TokenSpec {
        self.expiration = Some(header_value.to_owned());
        self
    }

    /// Fine-grained only: sets the Contents permission.
    pub fn contents(mut self, access: Access) -> TokenSpec {
        if let TokenKind::FineGrained { contents, .. } = &mut self.kind {
            *contents = access;
        }
        self
    }

    /// Fine-grained only: sets the Administration permission.
    pub fn administration(mut self, access: Access) -> TokenSpec {
        if let TokenKind::FineGrained { administration, .. } = &mut self.kind {
            *administration = access;
        }
        self
    }

    /// Fine-grained only: limits the token to these `owner/name` repositories.
    pub fn only_repositories(mut self, repos: &[&str]) -> TokenSpec {
        if let TokenKind::FineGrained { repositories, .. } = &mut self.kind {
            *repositories = Some(repos.iter().map(|s| (*s).to_owned()).collect());
        }
        self
    }
}

/// A repository the fake serves.
#[derive(Debug, Clone)]
pub struct RepoSpec {
    /// Owner login.
    pub owner: String,
    /// Repository name.
    pub name: String,
    /// Private (the default) or public.
    pub private: bool,
    /// Archived.
    pub archived: bool,
    /// The default branch (must be among `branches`).
    pub default_branch: String,
    /// Branch name → head SHA.
    pub branches: BTreeMap<String, String>,
    /// `ssh_url`; defaults to `git@github.com:owner/name.git`.
    pub ssh_url: Option<String>,
    /// `clone_url`; defaults to `https://github.com/owner/name.git`.
    pub clone_url: Option<String>,
}

impl RepoSpec {
    /// A private repository with one branch `main`.
    pub fn new(owner: &str, name: &str) -> RepoSpec {
        let mut branches = BTreeMap::new();
        branches.insert("main".to_owned(), fake_sha(&format!("{owner}/{name}@main")));
        RepoSpec {
            owner: owner.to_owned(),
            name: name.to_owned(),
            private: true,
            archived: false,
            default_branch: "main".to_owned(),
            branches,
            ssh_url: None,
            clone_url: None,
        }
    }

    /// Public visibility.
    pub fn public(mut self) -> RepoSpec {
        self.private = false;
        self
    }

    /// Archived.
    pub fn archived(mut self) -> RepoSpec {
        self.archived = true;
        self
    }

    /// Adds or replaces a branch.
    pub fn branch(mut self, name: &str, sha: &str) -> RepoSpec {
        self.branches.insert(name.to_owned(), sha.to_owned());
        self
    }

    /// Sets the default branch (adding it with a made-up SHA if missing).
    pub fn default_branch(mut self, name: &str) -> RepoSpec {
        let sha = fake_sha(&format!("{}/{}@{name}", self.owner, self.name));
        self.branches.entry(name.to_owned()).or_insert(sha);
        self.default_branch = name.to_owned();
        self
    }

    /// Sets `ssh_url`, e.g. `ssh://git@127.0.0.1:2222/owner/name.git` for a local SSH server.
    pub fn ssh_url(mut self, url: &str) -> RepoSpec {
        self.ssh_url = Some(url.to_owned());
        self
    }

    /// Sets `clone_url`.
    pub fn clone_url(mut self, url: &str) -> RepoSpec {
        self.clone_url = Some(url.to_owned());
        self
    }
}

/// A stable made-up 40-hex SHA for a label.
pub fn fake_sha(label: &str) -> String {
    // FNV-1a, widened to 160 bits by re-seeding: stable across runs and platforms.
    let mut out = String::with_capacity(40);
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    while out.len() < 40 {
        for b in label.bytes() {
            seed ^= u64::from(b);
            seed = seed.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{seed:016x}"));
    }
    out.truncate(40);
    out
}

/// A deploy key held by the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeKey {
    /// GitHub's id.
    pub id: u64,
    /// `owner/name`.
    pub repo: String,
    /// `type base64` (GitHub keeps no comment).
    pub key: String,
    /// Title.
    pub title: String,
    /// Read-only.
    pub read_only: bool,
    /// ISO 8601 creation time.
    pub created_at: String,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    /// Lower-case names; the `authorization` value is reduced to its scheme (`Bearer <redacted>`).
    pub headers: Vec<(String, String)>,
    /// The login the token belongs to, when the token was known.
    pub login: Option<String>,
    /// The request body (JSON for POST).
    pub body: String,
    /// When the request arrived.
    pub at: Instant,
    /// How many other requests were in flight when it arrived (0: it waited on no answer).
    #[allow(dead_code, reason = "read by the bootstrap_rerun benchmark only")]
    pub others_in_flight: usize,
    /// The status answered.
    pub status: u16,
}

impl LoggedRequest {
    /// The value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// True for requests that change GitHub.
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }
}

#[derive(Default)]
struct State {
    tokens: BTreeMap<String, TokenSpec>,
    repos: Vec<(u64, RepoSpec)>,
    keys: Vec<FakeKey>,
    next_key_id: u64,
    next_repo_id: u64,
    host_keys: Vec<String>,
    authorized_keys_file: Option<PathBuf>,
    delay: Duration,
    server_errors: Vec<u16>,
    delete_errors: Option<u16>,
    secondary_limits: Vec<(u16, Option<u64>)>,
    primary_limit: Option<(u16, u64)>,
    used: u64,
    log: Vec<LoggedRequest>,
    in_flight: usize,
    max_in_flight: usize,
    /// Answers are held until this many requests are in flight (or the deadline passes).
    gate: Option<(usize, Duration)>,
    /// Apps, installations and installation tokens (`app.rs`).
    apps: app::Apps,
}

struct App {
    base: String,
    refs: References,
    state: Mutex<State>,
    /// The high-water mark of requests in flight, for [`FakeGitHub::hold_until_in_flight`]: it
    /// only grows, so a waiter woken late (after the first answers went out) still sees it.
    most_in_flight: tokio::sync::watch::Sender<usize>,
}

/// The running fake. Dropping it stops the server.
pub struct FakeGitHub {
    app: Arc<App>,
    /// The CA file of [`FakeGitHub::start_https`].
    ca: Option<PathBuf>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl FakeGitHub {
    /// Starts the fake on a free 127.0.0.1 port, on its own thread and runtime, with no tokens
    /// and no repositories. `/meta` lists the placeholder keys of meta.json until
    /// [`FakeGitHub::set_host_keys`].
    pub fn start() -> FakeGitHub {
        Self::start_with(None)
    }

    /// The same over TLS with the test binary's CA ([`super::tls::test_ca`]): `url()` is
    /// `https://127.0.0.1:PORT`, [`FakeGitHub::ca_path`] the CA to trust. The Flux controllers
    /// of the test cluster trust it already.
    pub fn start_https() -> FakeGitHub {
        Self::start_with(Some(super::tls::test_ca()))
    }

    /// The PEM file of the CA that signed the certificate of [`FakeGitHub::start_https`].
    ///
    /// Panics for a fake started with [`FakeGitHub::start`] (plain http).
    pub fn ca_path(&self) -> &std::path::Path {
        self.ca
            .as_deref()
            .expect("ca_path() of a fake GitHub started with start_https()")
    }

    fn start_with(tls: Option<&super::tls::TestCa>) -> FakeGitHub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local addr");
        let refs = References::load();
        let host_keys = refs.meta["ssh_keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let app = Arc::new(App {
            base: format!("{}://{addr}", if tls.is_some() { "https" } else { "http" }),
            refs,
            state: Mutex::new(State {
                next_key_id: 1001,
                next_repo_id: 1_296_269,
                host_keys,
                ..State::default()
            }),
            most_in_flight: tokio::sync::watch::Sender::new(0),
        });
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let served = app.clone();
        let acceptor = tls.map(|ca| tokio_rustls::TlsAcceptor::from(ca.server_config()));
        let thread = std::thread::Builder::new()
            .name("fake-github".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let app = served.clone();
                                let acceptor = acceptor.clone();
                                tokio::spawn(async move {
                                    let service = service_fn(move |req| {
                                        let app = app.clone();
                                        async move { Ok::<_, Infallible>(app.handle(req).await) }
                                    });
                                    let connection = http1::Builder::new();
                                    match acceptor {
                                        Some(acceptor) => {
                                            let Ok(stream) = acceptor.accept(stream).await else {
                                                return;
                                            };
                                            let _ = connection
                                                .serve_connection(TokioIo::new(stream), service)
                                                .await;
                                        }
                                        None => {
                                            let _ = connection
                                                .serve_connection(TokioIo::new(stream), service)
                                                .await;
                                        }
                                    }
                                });
                            }
                        }
                    }
                });
            })
            .expect("spawn fake-github thread");
        FakeGitHub {
            app,
            ca: tls.map(super::tls::TestCa::ca_path),
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The API base, `http://127.0.0.1:PORT` (`https://` for [`FakeGitHub::start_https`]):
    /// what `HOMELAB_FLUX_GITHUB_API_URL` and source-controller's `githubAppBaseURL` hold.
    pub fn url(&self) -> String {
        self.app.base.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.app.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts `token` for the given user.
    pub fn add_token(&self, token: &str, spec: TokenSpec) {
        self.state().tokens.insert(token.to_owned(), spec);
    }

    /// Revokes a token: GitHub then answers 401 Bad credentials (errors.json
    /// `bad-credentials-401`, a recorded response).
    pub fn revoke_token(&self, token: &str) {
        self.state().tokens.remove(token);
    }

    /// Adds (or replaces) a repository.
    pub fn add_repo(&self, spec: RepoSpec) {
        let mut state = self.state();
        let full = format!("{}/{}", spec.owner, spec.name);
        if let Some(slot) = state
            .repos
            .iter_mut()
            .find(|(_, r)| format!("{}/{}", r.owner, r.name) == full)
        {
            slot.1 = spec;
            return;
        }
        let id = state.next_repo_id;
        state.next_repo_id += 1;
        state.repos.push((id, spec));
    }

    /// Moves a branch (e.g. after a push to the git server).
    pub fn set_branch(&self, owner: &str, name: &str, branch: &str, sha: &str) {
        let mut state = self.state();
        if let Some((_, repo)) = state
            .repos
            .iter_mut()
            .find(|(_, r)| r.owner == owner && r.name == name)
        {
            repo.branches.insert(branch.to_owned(), sha.to_owned());
        }
    }

    /// The `ssh_keys` that `/meta` lists (meta.json's placeholders replaced), e.g. the host key
    /// of a local SSH git server: `ssh-ed25519 AAAA...`.
    pub fn set_host_keys(&self, keys: &[&str]) {
        self.state().host_keys = keys.iter().map(|k| (*k).to_owned()).collect();
    }

    /// From now on every deploy key change rewrites this file with one line per key
    /// (`type base64 title`), for an sshd whose `AuthorizedKeysFile` points here. The file is
    /// written at once too.
    pub fn set_authorized_keys_file(&self, path: impl Into<PathBuf>) {
        let mut state = self.state();
        state.authorized_keys_file = Some(path.into());
        write_authorized_keys(&state);
    }

    /// Registers a deploy key directly (as if made earlier, e.g. by another cluster).
    pub fn add_deploy_key(
        &self,
        owner: &str,
        name: &str,
        title: &str,
        public_key: &str,
        read_only: bool,
    ) -> u64 {
        let mut state = self.state();
        let id = state.next_key_id;
        state.next_key_id += 1;
        state.keys.push(FakeKey {
            id,
            repo: format!("{owner}/{name}"),
            key: key_material(public_key).unwrap_or_else(|| public_key.to_owned()),
            title: title.to_owned(),
            read_only,
            created_at: now_iso(),
        });
        write_authorized_keys(&state);
        id
    }

    /// Deletes a deploy key directly (as a person would in the web UI, or as GitHub does when
    /// the token that created it is deleted).
    pub fn remove_deploy_key(&self, id: u64) {
        let mut state = self.state();
        state.keys.retain(|k| k.id != id);
        write_authorized_keys(&state);
    }

    /// The deploy keys of a repository.
    pub fn deploy_keys(&self, owner: &str, name: &str) -> Vec<FakeKey> {
        let full = format!("{owner}/{name}");
        self.state()
            .keys
            .iter()
            .filter(|k| k.repo == full)
            .cloned()
            .collect()
    }

    /// Every answer waits this long first (e.g. 100 ms, to measure concurrency).
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Holds every answer until `count` requests are in flight at once, or until `limit` has
    /// passed since the request arrived. A client that really sends them together is answered
    /// as soon as the last one arrives, on a loaded machine too; one that sends them one after
    /// another waits out `limit` on each and shows a high-water mark of 1.
    pub fn hold_until_in_flight(&self, count: usize, limit: Duration) {
        self.state().gate = Some((count, limit));
    }

    /// The next `count` requests fail with `status` (a 5xx) and errors.json `server-error-500`'s
    /// body (GitHub docs "Timeouts": "Server Error"; the spec's `internal_error` response).
    pub fn fail_next(&self, count: usize, status: u16) {
        let mut state = self.state();
        state
            .server_errors
            .extend(std::iter::repeat_n(status, count));
    }

    /// While set, every DELETE fails with `status` (a 5xx) and errors.json `server-error-500`'s
    /// body, through all of the client's retries; `None` lets them through again. The rest of
    /// the API answers as usual: GitHub failing in the middle of a run's clean-up.
    pub fn fail_deletes(&self, status: Option<u16>) {
        self.state().delete_errors = status;
    }

    /// The next `count` authenticated requests hit a secondary rate limit: `status` 403 or 429
    /// ([D-rate]: "403 or 429"), body of errors.json `secondary-rate-limit-403` (docs example),
    /// and `retry-after: secs` when given (documented header; without it, "wait at least one
    /// minute").
    pub fn secondary_rate_limit_next(&self, count: usize, status: u16, retry_after: Option<u64>) {
        let mut state = self.state();
        state
            .secondary_limits
            .extend(std::iter::repeat_n((status, retry_after), count));
    }

    /// While set, every authenticated request answers the primary rate limit: `status` 403 or
    /// 429 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset: reset` (epoch seconds); body
    /// of errors.json `rate-limited-403` (docs example). `None` lifts it.
    pub fn set_primary_rate_limit(&self, limit: Option<(u16, u64)>) {
        self.state().primary_limit = limit;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state().log.clone()
    }

    /// Requests that change GitHub (POST, PATCH, PUT, DELETE).
    pub fn writes(&self) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_write())
            .collect()
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state().max_in_flight
    }

    /// Forgets the request log and the in-flight high-water mark.
    pub fn clear_log(&self) {
        let mut state = self.state();
        state.log.clear();
        state.max_in_flight = 0;
        self.app.most_in_flight.send_replace(0);
    }
}

/// `type base64` of an OpenSSH public key line; GitHub stores and returns the key without its
/// comment.
fn key_material(line: &str) -> Option<String> {
    let mut parts = line.split_whitespace();
    let kind = parts.next()?;
    let data = parts.next()?;
    let valid_kind =
        kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-") || kind.starts_with("sk-");
    let valid_data = data
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    (valid_kind && valid_data && data.len() >= 16).then(|| format!("{kind} {data}"))
}

fn write_authorized_keys(state: &State) {
    let Some(path) = &state.authorized_keys_file else {
        return;
    };
    let mut text = String::new();
    for key in &state.keys {
        text.push_str(&format!(
            "{} {}\n",
            key.key,
            key.title.replace(char::is_whitespace, "_")
        ));
    }
    // Write then rename, so sshd never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write authorized_keys");
    std::fs::rename(&tmp, path).expect("rename authorized_keys");
}

/// An answer being built.
struct Reply {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            response = response.header(name.as_str(), value.as_str());
        }
        let bytes = match &self.body {
            Some(body) => {
                if !self.headers.iter().any(|(k, _)| k == "content-type") {
                    response = response.header("content-type", "application/json; charset=utf-8");
                }
                serde_json::to_vec_pretty(body).expect("json")
            }
            None => Vec::new(),
        };
        response
            .body(Full::new(Bytes::from(bytes)))
            .expect("valid response")
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(Ok(b)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16))
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn now_iso() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Headers GitHub sends on every authenticated answer ([D-rate], [D-scopes], headers.md).
fn rate_headers(reply: Reply, used: u64) -> Reply {
    reply
        .header("x-ratelimit-limit", RATE_LIMIT.to_string())
        .header(
            "x-ratelimit-remaining",
            RATE_LIMIT.saturating_sub(used).to_string(),
        )
        .header("x-ratelimit-used", used.to_string())
        .header("x-ratelimit-reset", reset_epoch().to_string())
        .header("x-ratelimit-resource", "core")
        .header("x-github-api-version-selected", "2022-11-28")
}

fn reset_epoch() -> u64 {
    (jiff::Timestamp::now().as_second() as u64 / 3600 + 1) * 3600
}

/// What a token may do with one repository.
struct Grant {
    /// GET /repos/o/r answers.
    visible: bool,
    /// The token's user administers the repository.
    admin: bool,
    /// Fine-grained permissions; `None` for classic tokens (the scope decides).
    fine: Option<(bool, Access, Access)>,
}

fn grant(token: &TokenSpec, repo: &RepoSpec) -> Grant {
    let full = format!("{}/{}", repo.owner, repo.name);
    let owns = token.login == repo.owner;
    match &token.kind {
        TokenKind::Classic { scopes } => {
            let has = |s: &str| scopes.iter().any(|x| x == s);
            // [D-scopes]: `repo` grants private repositories; `public_repo` public ones only.
            let scoped = has("repo") || (!repo.private && has("public_repo"));
            Grant {
                // [D-trouble]: a private resource the token cannot read answers 404.
                visible: !repo.private || (owns && has("repo")),
                admin: owns && scoped,
                fine: None,
            }
        }
        TokenKind::FineGrained {
            repositories,
            contents,
            administration,
        } => {
            let selected = owns
                && repositories
                    .as_ref()
                    .is_none_or(|list| list.iter().any(|r| r == &full));
            Grant {
                // Fine-grained tokens always carry Metadata: read on their selected repositories.
                visible: !repo.private || selected,
                admin: selected && *administration == Access::Write,
                fine: Some((selected, *contents, *administration)),
            }
        }
        TokenKind::Installation {
            repositories,
            contents,
            administration,
        } => {
            let selected = repositories.iter().any(|r| r.eq_ignore_ascii_case(&full));
            Grant {
                visible: !repo.private || selected,
                admin: selected && *administration == Access::Write,
                fine: Some((selected, *contents, *administration)),
            }
        }
    }
}

impl App {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() == GIT_AUTH_PATH {
            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
            let reply = self.git_auth(
                header("x-original-uri").unwrap_or_default(),
                header("authorization"),
            );
            return reply.into_response();
        }
        let at = Instant::now();
        let method = req.method().as_str().to_owned();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                let value = v.to_str().unwrap_or("<binary>");
                let value = if k == hyper::header::AUTHORIZATION {
                    let scheme = value.split_whitespace().next().unwrap_or("");
                    format!("{scheme} <redacted>")
                } else {
                    value.to_owned()
                };
                (k.as_str().to_owned(), value)
            })
            .collect();
        let authorization = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let token = authorization
            .as_deref()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("token "))
            })
            .map(str::to_owned);
        let (delay, gate, others_in_flight) = {
            let mut state = self.state();
            state.in_flight += 1;
            state.max_in_flight = state.max_in_flight.max(state.in_flight);
            self.most_in_flight.send_replace(state.max_in_flight);
            (state.delay, state.gate, state.in_flight - 1)
        };
        if let Some((count, limit)) = gate {
            let mut most = self.most_in_flight.subscribe();
            let _ = tokio::time::timeout(limit, most.wait_for(|n| *n >= count)).await;
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (reply, login) = self.answer(
            &method,
            &path,
            &headers,
            (token.as_deref(), authorization.as_deref()),
            &body,
        );
        let mut state = self.state();
        state.in_flight -= 1;
        state.log.push(LoggedRequest {
            method,
            path,
            headers,
            login,
            body,
            at,
            others_in_flight,
            status: reply.status.as_u16(),
        });
        drop(state);
        reply.into_response()
    }

    fn answer(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        (token, authorization): (Option<&str>, Option<&str>),
        body: &str,
    ) -> (Reply, Option<String>) {
        let mut state = self.state();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };

        // A 5xx burst comes before anything else: GitHub's front end fails independently of
        // the token.
        let delete_error = state.delete_errors.filter(|_| method == "DELETE");
        if !state.server_errors.is_empty() || delete_error.is_some() {
            let status = delete_error.unwrap_or_else(|| state.server_errors.remove(0));
            let (_, headers, body) = self.refs.error("server-error-500");
            let mut reply = Reply::json(StatusCode::from_u16(status).expect("5xx"), body);
            reply.headers = headers;
            return (reply, None);
        }

        if let Some(version) = header("x-github-api-version")
            && !SUPPORTED_API_VERSIONS.contains(&version)
        {
            // [D-ver]: an unsupported version is a 400. The body is assembled in basic-error form.
            return (
                Reply::json(
                    StatusCode::BAD_REQUEST,
                    json!({
                        "message": format!("API version '{version}' is not supported."),
                        "documentation_url": "https://docs.github.com/rest/about-the-rest-api/api-versions",
                        "status": "400"
                    }),
                ),
                None,
            );
        }

        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();

        // The App endpoints take a JWT, not a token (app.rs); rate limits apply to them too.
        if app::is_jwt_endpoint(method, &segments) {
            if let Some(reply) = self.rate_limited(&mut state) {
                return (reply, None);
            }
            state.used += 1;
            let reply = self.app_answer(&mut state, method, &segments, authorization, body);
            return (rate_headers(reply, state.used), None);
        }

        // GitHub rejects a bad token on every endpoint, public ones included (errors.json
        // `bad-credentials-401`, recorded response); an expired installation token too ("Using
        // an expired token produces a status code of 401", REST docs).
        let spec = match token {
            Some(t) => match state.tokens.get(t) {
                Some(spec) => Some(spec.clone()),
                None => match state.apps.token_spec(t) {
                    Some(Ok(spec)) => Some(spec),
                    _ => return (self.error("bad-credentials-401"), None),
                },
            },
            None => None,
        };
        let login = spec.as_ref().map(|s| s.login.clone());
        let Some(spec) = spec else {
            if segments == ["meta"] && method == "GET" {
                // `/meta` needs no authentication (REST docs, "Get GitHub meta information").
                return (self.meta(&state), None);
            }
            // The spec's `requires_authentication` response; body assembled in basic-error form.
            return (
                Reply::json(
                    StatusCode::UNAUTHORIZED,
                    json!({
                        "message": "Requires authentication",
                        "documentation_url": "https://docs.github.com/rest",
                        "status": "401"
                    }),
                ),
                None,
            );
        };

        if let Some(reply) = self.rate_limited(&mut state) {
            return (reply, login);
        }

        state.used += 1;
        let mut reply = self.route(&mut state, &spec, method, &segments, query, body);
        // Headers GitHub sends on every authenticated answer ([D-rate], [D-scopes], headers.md).
        reply = rate_headers(reply, state.used);
        if let TokenKind::Classic { scopes } = &spec.kind {
            reply = reply.header("x-oauth-scopes", scopes.join(", "));
        }
        if let Some(expiration) = &spec.expiration {
            reply = reply.header("github-authentication-token-expiration", expiration.clone());
        }
        (reply, login)
    }

    /// The primary or secondary rate limit a test switched on, if any (authenticated requests).
    fn rate_limited(&self, state: &mut State) -> Option<Reply> {
        if let Some((status, reset)) = state.primary_limit {
            // errors.json `rate-limited-403` (docs example); [D-rate]: 403 or 429.
            let (_, headers, body) = self.refs.error("rate-limited-403");
            let mut reply = Reply::json(StatusCode::from_u16(status).expect("status"), body);
            reply.headers = headers
                .into_iter()
                .filter(|(k, _)| k != "x-ratelimit-reset")
                .collect();
            reply
                .headers
                .push(("x-ratelimit-reset".to_owned(), reset.to_string()));
            return Some(reply);
        }
        if !state.secondary_limits.is_empty() {
            let (status, retry_after) = state.secondary_limits.remove(0);
            let key = if status == 429 {
                "secondary-rate-limit-429"
            } else {
                "secondary-rate-limit-403"
            };
            let (status, headers, body) = self.refs.error(key);
            let mut reply = Reply::json(status, body);
            reply.headers = headers
                .into_iter()
                .filter(|(k, _)| k != "retry-after")
                .collect();
            if let Some(secs) = retry_after {
                reply
                    .headers
                    .push(("retry-after".to_owned(), secs.to_string()));
            }
            return Some(reply);
        }
        None
    }

    fn error(&self, key: &str) -> Reply {
        let (status, headers, body) = self.refs.error(key);
        let mut reply = Reply::json(status, body);
        reply.headers = headers;
        reply
    }

    /// 404 in basic-error form with the operation's documentation URL.
    fn not_found(&self, message: &str, documentation_url: &str) -> Reply {
        Reply::json(
            StatusCode::NOT_FOUND,
            json!({ "message": message, "documentation_url": documentation_url, "status": "404" }),
        )
    }

    /// [D-trouble] "Resource not accessible": 403 with `X-Accepted-GitHub-Permissions`.
    /// With an installation token the message names the integration (errors.json of
    /// `tests/fixtures/github-app`, `not-accessible-by-integration-403`, recorded).
    fn not_accessible(
        &self,
        token: &TokenSpec,
        permission: &str,
        documentation_url: &str,
    ) -> Reply {
        let (status, headers, mut body) = self.refs.error("resource-not-accessible-403");
        body["documentation_url"] = json!(documentation_url);
        if matches!(token.kind, TokenKind::Installation { .. }) {
            body["message"] = json!("Resource not accessible by integration");
        }
        let mut reply = Reply::json(status, body);
        reply.headers = headers
            .into_iter()
            .filter(|(k, _)| k != "x-accepted-github-permissions")
            .collect();
        reply.headers.push((
            "x-accepted-github-permissions".to_owned(),
            permission.to_owned(),
        ));
        reply
    }

    fn meta(&self, state: &State) -> Reply {
        let mut meta = self.refs.meta.clone();
        meta["ssh_keys"] = json!(state.host_keys);
        Reply::json(StatusCode::OK, meta)
    }

    fn route(
        &self,
        state: &mut State,
        token: &TokenSpec,
        method: &str,
        segments: &[&str],
        query: &str,
        body: &str,
    ) -> Reply {
        match (method, segments) {
            ("GET", ["user"]) if matches!(token.kind, TokenKind::Installation { .. }) => {
                // An installation token is no user: recorded answer, errors.json of
                // tests/fixtures/github-app `not-accessible-by-integration-403`.
                self.refs.apps.error("not-accessible-by-integration-403")
            }
            ("GET", ["user"]) => {
                let mut user = self.refs.user.clone();
                user["login"] = json!(token.login);
                user["url"] = json!(format!("{}/users/{}", self.base, token.login));
                user["html_url"] = json!(format!("https://github.com/{}", token.login));
                Reply::json(StatusCode::OK, user)
            }
            ("GET", ["meta"]) => self.meta(state),
            (_, ["repos", owner, name, rest @ ..]) => {
                let found = state
                    .repos
                    .iter()
                    .find(|(_, r)| {
                        r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name)
                    })
                    .map(|(id, r)| (*id, r.clone()));
                self.repo_route(state, token, method, found, rest, query, body)
            }
            (_, ["repositories", id, rest @ ..]) => {
                let found = id.parse::<u64>().ok().and_then(|id| {
                    state
                        .repos
                        .iter()
                        .find(|(rid, _)| *rid == id)
                        .map(|(id, r)| (*id, r.clone()))
                });
                self.repo_route(state, token, method, found, rest, query, body)
            }
            _ => self.not_found("Not Found", "https://docs.github.com/rest"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn repo_route(
        &self,
        state: &mut State,
        token: &TokenSpec,
        method: &str,
        repo: Option<(u64, RepoSpec)>,
        rest: &[&str],
        query: &str,
        body: &str,
    ) -> Reply {
        const GET_REPO_DOCS: &str = "https://docs.github.com/rest/repos/repos#get-a-repository";
        let Some((id, repo)) = repo else {
            // errors.json `not-found-404`.
            return self.error("not-found-404");
        };
        let grant = grant(token, &repo);
        if !grant.visible {
            // [D-trouble]: a private repository the token cannot see is a 404, not a 403.
            return self.error("not-found-404");
        }
        let full = format!("{}/{}", repo.owner, repo.name);
        match (method, rest) {
            ("GET", []) => Reply::json(StatusCode::OK, self.repository_body(id, &repo, &grant))
                .header("x-accepted-oauth-scopes", "repo"),
            ("GET", ["branches", branch @ ..]) if !branch.is_empty() => {
                const DOCS: &str = "https://docs.github.com/rest/branches/branches#get-a-branch";
                if let Some((_, contents, _)) = grant.fine
                    && repo.private
                    && contents == Access::None
                {
                    // Fine-grained token without Contents on a private repository ([D-trouble];
                    // the brief's documented case: only Metadata and Administration granted).
                    return self.not_accessible(token, "contents=read", DOCS);
                }
                let branch = branch.join("/");
                match repo.branches.get(&branch) {
                    Some(sha) => Reply::json(StatusCode::OK, self.branch_body(&repo, &branch, sha)),
                    // GitHub's message for a missing branch; body in basic-error form.
                    None => self.not_found("Branch not found", DOCS),
                }
            }
            (_, ["keys", key_rest @ ..]) => {
                let write = method != "GET";
                let needed = if write { Access::Write } else { Access::Read };
                let docs = if write {
                    "https://docs.github.com/rest/deploy-keys/deploy-keys#create-a-deploy-key"
                } else {
                    "https://docs.github.com/rest/deploy-keys/deploy-keys#list-deploy-keys"
                };
                match grant.fine {
                    Some((selected, _, administration)) if !selected || administration < needed => {
                        // errors.json `resource-not-accessible-403`; the write side asks for
                        // `administration=write` (SOURCES.md gap 4: derived, not recorded).
                        let permission = if write {
                            "administration=write"
                        } else {
                            "administration=read"
                        };
                        return self.not_accessible(token, permission, docs);
                    }
                    // Classic tokens without admin rights get 404 ([D-trouble]).
                    None if !grant.admin => return self.error("not-found-404"),
                    _ => {}
                }
                self.keys_route(state, id, &full, method, key_rest, query, body)
            }
            _ => self.not_found("Not Found", GET_REPO_DOCS),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn keys_route(
        &self,
        state: &mut State,
        repo_id: u64,
        full: &str,
        method: &str,
        rest: &[&str],
        query: &str,
        body: &str,
    ) -> Reply {
        let not_found = || {
            self.not_found(
                "Not Found",
                "https://docs.github.com/rest/deploy-keys/deploy-keys#get-a-deploy-key",
            )
        };
        match (method, rest) {
            ("GET", []) => {
                // Pagination per the spec's `link` header: per_page default 30, max 100.
                let per_page = query_param(query, "per_page")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(30)
                    .clamp(1, 100);
                let page = query_param(query, "page")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(1)
                    .max(1);
                let keys: Vec<&FakeKey> = state.keys.iter().filter(|k| k.repo == full).collect();
                let last = keys.len().div_ceil(per_page).max(1);
                let items: Vec<Value> = keys
                    .iter()
                    .skip((page - 1) * per_page)
                    .take(per_page)
                    .map(|k| self.key_body(full, k))
                    .collect();
                let mut reply = Reply::json(StatusCode::OK, Value::Array(items));
                // GitHub's links point at /repositories/{id}/... (docs "Using pagination").
                let link = |p: usize, rel: &str| {
                    format!(
                        "<{}/repositories/{repo_id}/keys?per_page={per_page}&page={p}>; rel=\"{rel}\"",
                        self.base
                    )
                };
                let mut links = Vec::new();
                if page > 1 {
                    links.push(link(page - 1, "prev"));
                }
                if page < last {
                    links.push(link(page + 1, "next"));
                    links.push(link(last, "last"));
                }
                if page > 1 {
                    links.push(link(1, "first"));
                }
                if !links.is_empty() {
                    reply = reply.header("link", links.join(", "));
                }
                reply
            }
            ("POST", []) => {
                let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                let Some(key) = request["key"].as_str().and_then(key_material) else {
                    // `validation_failed` (422), shaped like errors.json `validation-failed-422`;
                    // the message is GitHub's wording for a malformed key (assembled).
                    return Reply::json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({
                            "message": "Validation Failed",
                            "errors": [{
                                "resource": "PublicKey",
                                "code": "custom",
                                "field": "key",
                                "message": "key is invalid. You must supply a key in OpenSSH public key format"
                            }],
                            "documentation_url": "https://docs.github.com/rest/deploy-keys#create-a-deploy-key"
                        }),
                    );
                };
                if state.keys.iter().any(|k| k.key == key) {
                    // errors.json `validation-failed-422` (recorded): a key is unique across
                    // all of GitHub, not just this repository.
                    return self.error("validation-failed-422");
                }
                let id = state.next_key_id;
                state.next_key_id += 1;
                let created = FakeKey {
                    id,
                    repo: full.to_owned(),
                    key,
                    title: request["title"].as_str().unwrap_or_default().to_owned(),
                    read_only: request["read_only"].as_bool().unwrap_or(false),
                    created_at: now_iso(),
                };
                let body = self.key_body(full, &created);
                state.keys.push(created);
                write_authorized_keys(state);
                // deploy-key-request.json: 201 with a Location header.
                Reply::json(StatusCode::CREATED, body)
                    .header("location", format!("{}/repos/{full}/keys/{id}", self.base))
            }
            ("GET", [id]) => {
                match state
                    .keys
                    .iter()
                    .find(|k| k.repo == full && id.parse() == Ok(k.id))
                {
                    Some(k) => Reply::json(StatusCode::OK, self.key_body(full, k)),
                    None => not_found(),
                }
            }
            ("DELETE", [id]) => {
                let before = state.keys.len();
                state
                    .keys
                    .retain(|k| !(k.repo == full && id.parse() == Ok(k.id)));
                if state.keys.len() == before {
                    return not_found();
                }
                write_authorized_keys(state);
                // REST docs "Delete a deploy key": 204 No Content.
                Reply {
                    status: StatusCode::NO_CONTENT,
                    headers: Vec::new(),
                    body: None,
                }
            }
            _ => not_found(),
        }
    }

    fn repository_body(&self, id: u64, repo: &RepoSpec, grant: &Grant) -> Value {
        let mut body = self.refs.repository.clone();
        let full = format!("{}/{}", repo.owner, repo.name);
        body["id"] = json!(id);
        body["name"] = json!(repo.name);
        body["full_name"] = json!(full);
        body["owner"]["login"] = json!(repo.owner);
        body["owner"]["url"] = json!(format!("{}/users/{}", self.base, repo.owner));
        body["owner"]["html_url"] = json!(format!("https://github.com/{}", repo.owner));
        body["private"] = json!(repo.private);
        body["visibility"] = json!(if repo.private { "private" } else { "public" });
        body["archived"] = json!(repo.archived);
        body["default_branch"] = json!(repo.default_branch);
        body["url"] = json!(format!("{}/repos/{full}", self.base));
        body["html_url"] = json!(format!("https://github.com/{full}"));
        body["keys_url"] = json!(format!("{}/repos/{full}/keys{{/key_id}}", self.base));
        body["branches_url"] = json!(format!("{}/repos/{full}/branches{{/branch}}", self.base));
        body["git_url"] = json!(format!("git://github.com/{full}.git"));
        body["svn_url"] = json!(format!("https://github.com/{full}"));
        body["ssh_url"] = json!(
            repo.ssh_url
                .clone()
                .unwrap_or_else(|| format!("git@github.com:{full}.git"))
        );
        body["clone_url"] = json!(
            repo.clone_url
                .clone()
                .unwrap_or_else(|| format!("https://github.com/{full}.git"))
        );
        body["permissions"] = json!({ "pull": true, "push": grant.admin, "admin": grant.admin });
        body
    }

    fn branch_body(&self, repo: &RepoSpec, branch: &str, sha: &str) -> Value {
        let full = format!("{}/{}", repo.owner, repo.name);
        let mut body = self.refs.branch.clone();
        body["name"] = json!(branch);
        body["commit"]["sha"] = json!(sha);
        body["commit"]["url"] = json!(format!("{}/repos/{full}/commits/{sha}", self.base));
        body["commit"]["html_url"] = json!(format!("https://github.com/{full}/commit/{sha}"));
        body["_links"]["self"] = json!(format!("{}/repos/{full}/branches/{branch}", self.base));
        body["_links"]["html"] = json!(format!("https://github.com/{full}/tree/{branch}"));
        body["protection_url"] = json!(format!(
            "{}/repos/{full}/branches/{branch}/protection",
            self.base
        ));
        body
    }

    fn key_body(&self, full: &str, key: &FakeKey) -> Value {
        let mut body = self.refs.deploy_key.clone();
        body["id"] = json!(key.id);
        body["key"] = json!(key.key);
        body["url"] = json!(format!("{}/repos/{full}/keys/{}", self.base, key.id));
        body["title"] = json!(key.title);
        body["read_only"] = json!(key.read_only);
        body["created_at"] = json!(key.created_at);
        body["last_used"] = Value::Null;
        body
    }
}
