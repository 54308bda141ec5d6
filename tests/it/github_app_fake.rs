//! The fake GitHub's App endpoints checked against GitHub's documented behaviour (bodies and
//! sources in `tests/fixtures/github-app/`, see its SOURCES.md): a JWT verified for real (RS256
//! with the App's public key, `iss`, `iat`, `exp`), installation lookups, installation tokens
//! scoped to repositories and permissions that expire, and the check of the HTTPS git server.
//! Over HTTPS, trusting the test CA, as the clients under test see it.

use crate::support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use support::fake_github::{
    Access, AppSpec, FakeApp, FakeGitHub, GIT_AUTH_PATH, GitAuth, InstallationSpec, IssuedToken,
    RepoSpec,
};
use support::git_server::{GitRepo, HttpsGitServer};

const APP_ID: u64 = 123_456;
const INSTALLATION: u64 = 987_654;

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

fn client(gh: &FakeGitHub) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(gh.ca_path()).unwrap();
    reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&ca).unwrap()])
        .no_proxy()
        .build()
        .unwrap()
}

async fn call(
    gh: &FakeGitHub,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client(gh)
        .request(method, format!("{}{path}", gh.url()))
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// An HTTPS fake with App 123456 installed on `username/manifests` (contents read) and the
/// private repositories `username/manifests` and `username/other`.
fn world() -> (FakeGitHub, FakeApp) {
    let gh = FakeGitHub::start_https();
    gh.add_repo(RepoSpec::new("username", "manifests"));
    gh.add_repo(RepoSpec::new("username", "other"));
    let app = gh.add_app(AppSpec::new(APP_ID, "homelab-flux-test"));
    let id = gh.install_app(
        APP_ID,
        InstallationSpec::new("username", "manifests").id(INSTALLATION),
    );
    assert_eq!(id, INSTALLATION);
    (gh, app)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn bearer(jwt: &str) -> String {
    format!("Bearer {jwt}")
}

/// Docs "Generating a JWT": RS256, `iss` the App ID (string or integer), `iat` in the past,
/// `exp` at most 10 minutes on. `GET /app` then answers the App (OpenAPI example `integration`).
#[tokio::test]
async fn a_valid_jwt_gets_the_authenticated_app() {
    let (gh, app) = world();
    for iss in [json!(APP_ID.to_string()), json!(APP_ID)] {
        let jwt = app.jwt_with_claims(&json!({"iat": now() - 60, "exp": now() + 540, "iss": iss}));
        let a = call(&gh, "GET", "/app", Some(&bearer(&jwt)), None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["id"], APP_ID);
        assert_eq!(a.body["slug"], "homelab-flux-test");
        assert_eq!(
            a.body["html_url"],
            "https://github.com/apps/homelab-flux-test"
        );
        assert_eq!(a.body["installations_count"], 1);
        assert!(a.body["owner"]["login"] == "username", "{}", a.body);
        assert_eq!(a.headers["content-type"], "application/json; charset=utf-8");
        assert!(a.headers.contains_key("x-ratelimit-remaining"));
    }
    let logged = gh.requests();
    assert_eq!(logged.len(), 2);
    assert_eq!(logged[0].header("authorization"), Some("Bearer <redacted>"));
}

/// A JWT the App's key did not sign (another key, or the key revoked on the App's settings
/// page), or one that is no JWT at all: 401 "A JSON web token could not be decoded".
#[tokio::test]
async fn a_wrong_or_revoked_key_is_401_could_not_be_decoded() {
    let (gh, app) = world();
    let other = gh.add_app(AppSpec::new(7, "someone-else"));
    let forged = other.jwt_with_claims(
        &json!({"iat": now() - 60, "exp": now() + 540, "iss": APP_ID.to_string()}),
    );
    let not_a_jwt = "ghp_FakeGitHubTestToken0123456789abcdefAB";
    let unknown_app =
        app.jwt_with_claims(&json!({"iat": now() - 60, "exp": now() + 540, "iss": "424242"}));
    for (what, auth) in [
        ("another key", bearer(&forged)),
        ("a personal token", bearer(not_a_jwt)),
        ("an App ID the key is not of", bearer(&unknown_app)),
        ("the `token` scheme", format!("token {}", app.jwt())),
    ] {
        let a = call(&gh, "GET", "/app", Some(&auth), None).await;
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        assert_eq!(
            a.message(),
            "A JSON web token could not be decoded",
            "{what}"
        );
        assert_eq!(a.body["documentation_url"], "https://docs.github.com/rest");
        assert_eq!(a.body["status"], "401");
    }
    let good = app.jwt();
    assert_eq!(
        call(&gh, "GET", "/app", Some(&bearer(&good)), None)
            .await
            .status,
        200
    );
    gh.revoke_app_key(APP_ID);
    let a = call(&gh, "GET", "/app", Some(&bearer(&good)), None).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.message(), "A JSON web token could not be decoded");
}

/// The recorded 401s of a JWT whose times GitHub refuses: `exp` past, `exp` more than 10
/// minutes on, `iat` in the future (or not an integer).
#[tokio::test]
async fn jwt_times_are_checked_as_github_does() {
    let (gh, app) = world();
    let cases = [
        (
            json!({"iat": now() - 700, "exp": now() - 100, "iss": APP_ID}),
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        ),
        (
            json!({"iat": now() - 60, "exp": now() + 660, "iss": APP_ID}),
            "'Expiration time' claim ('exp') is too far in the future",
        ),
        (
            json!({"iat": now() + 120, "exp": now() + 300, "iss": APP_ID}),
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
        ),
        (
            json!({"iat": "yesterday", "exp": now() + 300, "iss": APP_ID}),
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
        ),
    ];
    for (claims, message) in cases {
        let a = call(
            &gh,
            "GET",
            "/app",
            Some(&bearer(&app.jwt_with_claims(&claims))),
            None,
        )
        .await;
        assert_eq!(a.status, 401, "{claims}");
        assert_eq!(a.message(), message, "{claims}");
    }
    // Exactly 10 minutes is allowed.
    let edge = app.jwt_with_claims(&json!({"iat": now() - 10, "exp": now() + 590, "iss": APP_ID}));
    assert_eq!(
        call(&gh, "GET", "/app", Some(&bearer(&edge)), None)
            .await
            .status,
        200
    );
    let none = call(&gh, "GET", "/app", None, None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.message(), "Requires authentication");
}

/// `GET /repos/{owner}/{repo}/installation` and `GET /app/installations/{id}`: the installation
/// (OpenAPI example `base-installation`) or 404 Not Found.
#[tokio::test]
async fn installations_are_found_by_repository_and_by_id() {
    let (gh, app) = world();
    let jwt = bearer(&app.jwt());
    let a = call(
        &gh,
        "GET",
        "/repos/username/manifests/installation",
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["id"], INSTALLATION);
    assert_eq!(a.body["app_id"], APP_ID);
    assert_eq!(a.body["account"]["login"], "username");
    assert_eq!(a.body["repository_selection"], "selected");
    assert_eq!(
        a.body["permissions"],
        json!({"contents": "read", "metadata": "read"})
    );
    assert_eq!(
        a.body["access_tokens_url"],
        format!(
            "{}/app/installations/{INSTALLATION}/access_tokens",
            gh.url()
        )
    );
    let missing = call(
        &gh,
        "GET",
        "/repos/username/other/installation",
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.message(), "Not Found");
    assert!(
        missing.body["documentation_url"]
            .as_str()
            .unwrap()
            .ends_with("#get-a-repository-installation-for-the-authenticated-app")
    );
    let by_id = call(
        &gh,
        "GET",
        &format!("/app/installations/{INSTALLATION}"),
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(by_id.status, 200);
    assert_eq!(by_id.body["id"], INSTALLATION);
    let by_owner = call(&gh, "GET", "/users/username/installation", Some(&jwt), None).await;
    assert_eq!(by_owner.status, 200);
    assert_eq!(by_owner.body["id"], INSTALLATION);
    let as_org = call(&gh, "GET", "/orgs/username/installation", Some(&jwt), None).await;
    assert_eq!(as_org.status, 404, "the fake's accounts are users");
    let other_app = gh.add_app(AppSpec::new(8, "other"));
    let foreign = bearer(&other_app.jwt());
    let not_its = call(
        &gh,
        "GET",
        &format!("/app/installations/{INSTALLATION}"),
        Some(&foreign),
        None,
    )
    .await;
    assert_eq!(not_its.status, 404, "an installation of another App");
}

/// `POST /app/installations/{id}/access_tokens` (OpenAPI example `installation-token`): 201, a
/// `ghs_` token expiring in an hour, scoped to the requested repositories and permissions; the
/// repository endpoints take it (`Bearer` or `token`) for those repositories only.
#[tokio::test]
async fn installation_tokens_are_scoped_and_accepted_where_scoped() {
    let (gh, app) = world();
    let jwt = bearer(&app.jwt());
    let path = format!("/app/installations/{INSTALLATION}/access_tokens");
    let body = json!({"repositories": ["manifests"], "permissions": {"contents": "read"}});
    let a = call(&gh, "POST", &path, Some(&jwt), Some(body)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let token = a.body["token"].as_str().unwrap().to_owned();
    let rest = token.strip_prefix("ghs_").expect("ghs_ prefix");
    assert!(
        rest.len() == 36 && rest.bytes().all(|b| b.is_ascii_alphanumeric()),
        "the token's shape"
    );
    let expires = a.body["expires_at"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    let left = expires.as_second() - now();
    assert!(
        (3590..=3600).contains(&left),
        "expires in an hour, not {left} s"
    );
    assert_eq!(a.body["permissions"], json!({"contents": "read"}));
    assert_eq!(a.body["repository_selection"], "selected");
    assert_eq!(a.body["repositories"][0]["full_name"], "username/manifests");
    assert_eq!(a.body["repositories"][0]["private"], true);

    let issued: Vec<IssuedToken> = gh.installation_tokens();
    assert_eq!(issued.len(), 1);
    assert!(
        issued[0].token == token,
        "the issued token is the one answered"
    );
    assert_eq!(issued[0].installation_id, INSTALLATION);
    assert_eq!(issued[0].repositories, ["username/manifests"]);
    assert!(
        !format!("{:?}", issued[0]).contains(rest),
        "Debug masks the token"
    );

    for scheme in ["Bearer", "token"] {
        let auth = format!("{scheme} {token}");
        let repo = call(&gh, "GET", "/repos/username/manifests", Some(&auth), None).await;
        assert_eq!(repo.status, 200, "{scheme}: {}", repo.body);
        let branch = call(
            &gh,
            "GET",
            "/repos/username/manifests/branches/main",
            Some(&auth),
            None,
        )
        .await;
        assert_eq!(branch.status, 200, "{scheme}");
        let other = call(&gh, "GET", "/repos/username/other", Some(&auth), None).await;
        assert_eq!(
            other.status, 404,
            "{scheme}: a repository outside the token's scope"
        );
        let keys = call(
            &gh,
            "GET",
            "/repos/username/manifests/keys",
            Some(&auth),
            None,
        )
        .await;
        assert_eq!(keys.status, 403, "no Administration permission");
        assert_eq!(keys.message(), "Resource not accessible by integration");
        assert_eq!(
            keys.headers["x-accepted-github-permissions"],
            "administration=read"
        );
    }
    let user = call(&gh, "GET", "/user", Some(&format!("Bearer {token}")), None).await;
    assert_eq!(user.status, 403);
    assert_eq!(user.message(), "Resource not accessible by integration");
}

/// Without a body the token gets every repository and permission of the installation, and the
/// answer has no `repositories` key (REST docs); a token without Contents cannot read a branch.
#[tokio::test]
async fn a_token_request_without_body_gets_the_whole_installation() {
    let (gh, app) = world();
    gh.install_app(
        APP_ID,
        InstallationSpec::new("username", "other")
            .id(55)
            .contents(Access::None),
    );
    let a = call(
        &gh,
        "POST",
        "/app/installations/55/access_tokens",
        Some(&bearer(&app.jwt())),
        None,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(a.body.get("repositories").is_none(), "{}", a.body);
    assert_eq!(a.body["permissions"], json!({"metadata": "read"}));
    let auth = format!("Bearer {}", a.body["token"].as_str().unwrap());
    assert_eq!(
        call(&gh, "GET", "/repos/username/other", Some(&auth), None)
            .await
            .status,
        200
    );
    let branch = call(
        &gh,
        "GET",
        "/repos/username/other/branches/main",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(branch.status, 403);
    assert_eq!(
        branch.headers["x-accepted-github-permissions"],
        "contents=read"
    );
}

/// The refusals of a token request: 422 for permissions or repositories the installation does
/// not have, 403 for a suspended installation, 404 for an unknown one.
#[tokio::test]
async fn token_requests_beyond_the_installation_are_refused() {
    let (gh, app) = world();
    let jwt = bearer(&app.jwt());
    let path = format!("/app/installations/{INSTALLATION}/access_tokens");
    let write = call(
        &gh,
        "POST",
        &path,
        Some(&jwt),
        Some(json!({"permissions": {"contents": "write"}})),
    )
    .await;
    assert_eq!(write.status, 422);
    assert_eq!(
        write.message(),
        "The permissions requested are not granted to this installation."
    );
    let admin = call(
        &gh,
        "POST",
        &path,
        Some(&jwt),
        Some(json!({"permissions": {"administration": "read"}})),
    )
    .await;
    assert_eq!(admin.status, 422);
    let repo = call(
        &gh,
        "POST",
        &path,
        Some(&jwt),
        Some(json!({"repositories": ["other"]})),
    )
    .await;
    assert_eq!(repo.status, 422);
    assert_eq!(
        repo.message(),
        "There is at least one repository that does not exist or is not accessible to the parent installation."
    );
    let unknown = call(
        &gh,
        "POST",
        "/app/installations/1/access_tokens",
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(unknown.status, 404);
    gh.set_installation_suspended(INSTALLATION, true);
    let suspended = call(&gh, "POST", &path, Some(&jwt), None).await;
    assert_eq!(suspended.status, 403);
    assert_eq!(suspended.message(), "This installation has been suspended");
    assert!(gh.installation_tokens().is_empty(), "no token was issued");
}

/// "Using an expired token produces a status code of 401": a token past its `expires_at` (a
/// shorter lifetime, or every token expired at once) is Bad credentials.
#[tokio::test]
async fn installation_tokens_expire() {
    let (gh, app) = world();
    let jwt = bearer(&app.jwt());
    let path = format!("/app/installations/{INSTALLATION}/access_tokens");
    gh.set_installation_token_ttl(Duration::ZERO);
    let dead = call(&gh, "POST", &path, Some(&jwt), None).await;
    assert_eq!(dead.status, 201);
    let auth = format!("Bearer {}", dead.body["token"].as_str().unwrap());
    let a = call(&gh, "GET", "/repos/username/manifests", Some(&auth), None).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.message(), "Bad credentials");

    gh.set_installation_token_ttl(Duration::from_secs(3600));
    let live = call(&gh, "POST", &path, Some(&jwt), None).await;
    let auth = format!("Bearer {}", live.body["token"].as_str().unwrap());
    assert_eq!(
        call(&gh, "GET", "/repos/username/manifests", Some(&auth), None)
            .await
            .status,
        200
    );
    gh.expire_installation_tokens();
    assert_eq!(
        call(&gh, "GET", "/repos/username/manifests", Some(&auth), None)
            .await
            .status,
        401
    );
    assert!(gh.installation_tokens().iter().all(|t| !t.is_live()));
}

/// The question nginx's `auth_request` asks for the HTTPS git server: only `x-access-token`
/// with a live token scoped to the repository of the URL passes.
#[tokio::test]
async fn the_git_check_passes_only_live_scoped_tokens() {
    let (gh, app) = world();
    let path = format!("/app/installations/{INSTALLATION}/access_tokens");
    let a = call(&gh, "POST", &path, Some(&bearer(&app.jwt())), None).await;
    let token = a.body["token"].as_str().unwrap().to_owned();
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let check = |uri: &'static str, auth: Option<String>| {
        let client = client(&gh);
        let url = format!("{}{GIT_AUTH_PATH}", gh.url());
        async move {
            let mut r = client.get(url).header("x-original-uri", uri);
            if let Some(auth) = auth {
                r = r.header("authorization", auth);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    let refs = "/username/manifests.git/info/refs?service=git-upload-pack";
    assert_eq!(
        check(refs, Some(basic("x-access-token", &token))).await,
        200
    );
    assert_eq!(check(refs, Some(basic("someone", &token))).await, 401);
    assert_eq!(
        check(refs, Some(basic("x-access-token", "ghs_unknown"))).await,
        401
    );
    assert_eq!(check(refs, None).await, 401);
    assert_eq!(
        check(
            "/username/other.git/info/refs",
            Some(basic("x-access-token", &token))
        )
        .await,
        401
    );
    gh.expire_installation_tokens();
    assert_eq!(
        check(refs, Some(basic("x-access-token", &token))).await,
        401
    );
    let log: Vec<GitAuth> = gh.git_auth_log();
    let reasons: Vec<&str> = log.iter().map(|g| g.reason).collect();
    assert_eq!(
        reasons,
        [
            "ok",
            "user is not x-access-token",
            "unknown token",
            "no credentials",
            "not scoped to this repository",
            "expired"
        ]
    );
    assert!(
        !format!("{log:?}").contains(&token[4..]),
        "Debug masks the password"
    );
    assert!(
        gh.requests()
            .iter()
            .all(|r| !r.path.starts_with(GIT_AUTH_PATH)),
        "not GitHub API traffic"
    );
}

/// `git ls-remote` over HTTPS with a Basic header for `x-access-token` (what go-git sends for
/// source-controller's App credentials, `AccessTokenUsername` in fluxcd/pkg/auth/githubapp).
fn ls_remote(
    git: &HttpsGitServer,
    repo: &GitRepo,
    user: &str,
    password: &str,
) -> std::process::Output {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::process::Command::new("git")
        .args(["ls-remote", &git.url(repo), "refs/heads/main"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSL_CAINFO", support::tls::test_ca().ca_path())
        // The header rides in the environment, not on the command line.
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.extraHeader")
        .env(
            "GIT_CONFIG_VALUE_0",
            format!("Authorization: Basic {basic}"),
        )
        .output()
        .unwrap()
}

/// The HTTPS git server serves a clone to an issued installation token scoped to the repository,
/// and refuses everything else, a token that has expired included.
#[tokio::test]
async fn the_https_git_server_takes_only_issued_scoped_tokens() {
    let (gh, app) = world();
    let git = HttpsGitServer::start_for_app(&gh);
    let manifests = git.create_repo("username", "manifests");
    let other = git.create_repo("username", "other");
    assert!(git.url(&manifests).starts_with("https://127.0.0.1:"));
    assert!(git.url(&manifests).ends_with("/username/manifests.git"));
    let path = format!("/app/installations/{INSTALLATION}/access_tokens");
    let a = call(&gh, "POST", &path, Some(&bearer(&app.jwt())), None).await;
    let token = a.body["token"].as_str().unwrap().to_owned();

    let out = ls_remote(&git, &manifests, "x-access-token", &token);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.starts_with(manifests.seeded_commit()), "{listed}");
    assert!(
        git.access_log().contains("x-access-token"),
        "{}",
        git.access_log()
    );

    // git asks for a user name after a 401 (and cannot, with prompts off): the fake's log says
    // what was refused and why.
    let unknown = "ghs_0123456789abcdefghijklmnopqrstuvwxyz";
    for (what, repo, user, password, reason) in [
        (
            "another user",
            &manifests,
            "git",
            token.as_str(),
            "user is not x-access-token",
        ),
        (
            "a token the fake did not issue",
            &manifests,
            "x-access-token",
            unknown,
            "unknown token",
        ),
        (
            "a repository out of scope",
            &other,
            "x-access-token",
            token.as_str(),
            "not scoped to this repository",
        ),
    ] {
        let before = gh.git_auth_log().len();
        let out = ls_remote(&git, repo, user, password);
        assert!(!out.status.success(), "{what} was let through");
        let asked = gh.git_auth_log().split_off(before);
        assert!(!asked.is_empty(), "{what}: nginx did not ask the fake");
        assert!(
            asked.iter().all(|g| !g.allowed && g.reason == reason),
            "{what}: {asked:?}"
        );
    }
    gh.expire_installation_tokens();
    let out = ls_remote(&git, &manifests, "x-access-token", &token);
    assert!(!out.status.success(), "an expired token was let through");
    let reasons: Vec<&str> = gh.git_auth_log().iter().map(|g| g.reason).collect();
    assert!(
        reasons.contains(&"ok") && reasons.contains(&"expired"),
        "{reasons:?}"
    );
}

/// The JWT endpoints sit behind the same front end as the rest: a 5xx burst and the rate limits
/// a test switches on answer them too (the CLI's retries are tested through them).
#[tokio::test]
async fn server_errors_and_rate_limits_reach_the_app_endpoints() {
    let (gh, app) = world();
    let jwt = bearer(&app.jwt());
    let path = format!("/app/installations/{INSTALLATION}/access_tokens");
    gh.fail_next(1, 502);
    assert_eq!(call(&gh, "POST", &path, Some(&jwt), None).await.status, 502);
    gh.secondary_rate_limit_next(1, 429, Some(1));
    let limited = call(&gh, "POST", &path, Some(&jwt), None).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers["retry-after"], "1");
    let issued = call(&gh, "POST", &path, Some(&jwt), None).await;
    assert_eq!(issued.status, 201);
    assert_eq!(
        issued.headers["x-ratelimit-used"], "1",
        "only the answered request counts"
    );
    assert_eq!(gh.installation_tokens().len(), 1);
}
