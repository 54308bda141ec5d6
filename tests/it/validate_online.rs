//! Online `validate` through the real binary against the fake GitHub. Each case names the
//! documented GitHub behaviour it stands for (see tests/it/support/fake_github.rs and
//! ../shared/reference/github/).

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::cli::{Run, assert_has, assert_no_leak, command, run};
use support::fake_github::{Access, FakeGitHub, RepoSpec, TokenSpec, fake_sha};

/// A fine-grained token shaped like GitHub's (93 characters), unique per test.
fn token(tag: &str) -> String {
    let mut t = format!("github_pat_11HFTEST{tag}");
    let fill = "aZ9yX8wV7uT6s5R4q3P2o1N0mL9kJ8iH7gF6eD5cB4aZ3yX2wV1uT0sR9qP8oN7mL6kJ5iQ4hG3fE2dC1bA0zYxWvUtSr";
    t.push_str(&fill[..93 - t.len()]);
    t
}

struct Case {
    gh: FakeGitHub,
    dir: tempfile::TempDir,
    token: String,
}

impl Case {
    /// A private repository `username/manifests` with `main`, and `token` granted on it.
    fn new(tag: &str, spec: TokenSpec, flux_extra: &str) -> Case {
        let gh = FakeGitHub::start();
        let token = token(tag);
        gh.add_token(&token, spec);
        gh.add_repo(RepoSpec::new("username", "manifests").branch("main", &fake_sha("main")));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        std::fs::write(
            dir.path().join("config/flux.yaml"),
            format!("repo: https://github.com/username/manifests.git\n{flux_extra}"),
        )
        .unwrap();
        support::cli::write_secrets(
            &dir.path().join("config/secrets-flux.yaml"),
            &format!("token: {token}\n"),
        );
        Case { gh, dir, token }
    }

    fn validate(&self, extra: &[&str]) -> Run {
        validate_at(self.dir.path(), &self.gh.url(), &self.token, extra)
    }
}

fn validate_at(dir: &Path, api: &str, token: &str, extra: &[&str]) -> Run {
    let mut cmd = command(dir);
    cmd.args(["-vv", "validate"])
        .args(extra)
        .env("HOMELAB_FLUX_GITHUB_API_URL", api);
    let r = run(cmd);
    assert_no_leak(token, &r.transcript(), "online validate");
    r
}

/// `-vv` shows the HTTP libraries' own tracing events (reqwest's `log` records bridged, hyper's
/// events), through the same masking as every line: the token, which each of those requests
/// carries, is in none of them. `-v` shows homelab-flux's own debug lines only.
#[test]
fn the_http_libraries_log_at_vv_and_never_the_token() {
    let c = Case::new("vv", TokenSpec::fine_grained("username"), "branch: main\n");
    let r = c.validate(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for from in ["debug: reqwest::connect: ", "debug: hyper_util::"] {
        assert!(
            r.stderr.lines().any(|l| l.starts_with(from)),
            "no `{from}` line at -vv:\n{}",
            r.stderr
        );
    }
    let mut cmd = command(c.dir.path());
    cmd.args(["-v", "validate"])
        .env("HOMELAB_FLUX_GITHUB_API_URL", c.gh.url());
    let v = run(cmd);
    assert_no_leak(&c.token, &v.transcript(), "validate -v");
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert_has(
        &v,
        &format!(
            "debug: checking `https://github.com/username/manifests.git` against the GitHub API at {}",
            c.gh.url()
        ),
    );
    assert!(
        !v.stderr.contains("reqwest::") && !v.stderr.contains("hyper_util::"),
        "library lines at -v:\n{}",
        v.stderr
    );
}

#[test]
fn a_working_token_repository_and_branch_pass_with_the_documented_headers() {
    let c = Case::new("ok", TokenSpec::fine_grained("username"), "branch: main\n");
    let r = c.validate(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.ends_with("ok: the configuration is valid\n"),
        "{}",
        r.stderr
    );
    let requests = c.gh.requests();
    let paths: Vec<&str> = requests.iter().map(|q| q.path.as_str()).collect();
    for p in [
        "/user",
        "/repos/username/manifests",
        "/repos/username/manifests/branches/main",
    ] {
        assert!(paths.contains(&p), "{paths:?}");
    }
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/repos/username/manifests/keys")),
        "{paths:?}"
    );
    for q in &requests {
        assert_eq!(q.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(q.header("x-github-api-version"), Some("2022-11-28"));
        assert_eq!(
            q.header("user-agent"),
            Some(concat!("homelab-flux/", env!("CARGO_PKG_VERSION")))
        );
    }
    assert!(c.gh.writes().is_empty(), "validate never writes");
}

#[test]
fn the_requests_are_in_flight_together() {
    let c = Case::new(
        "conc",
        TokenSpec::fine_grained("username"),
        "branch: main\n",
    );
    // Answers are held until all four requests are in flight: a sequential client would show 1.
    c.gh.hold_until_in_flight(4, Duration::from_secs(20));
    let r = c.validate(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.gh.requests().len(), 4);
    assert_eq!(
        c.gh.max_in_flight(),
        4,
        "all four independent requests overlap"
    );
}

#[test]
fn without_a_branch_the_default_branch_is_checked_and_named() {
    let c = Case::new("dflt", TokenSpec::fine_grained("username"), "");
    let r = c.validate(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_has(
        &r,
        "note[HF112]: `branch` is not set; Flux will follow the default branch `main`",
    );
}

/// errors.json `bad-credentials-401`: a revoked, expired or mistyped token.
#[test]
fn a_rejected_token() {
    let c = Case::new("bad", TokenSpec::fine_grained("username"), "branch: main\n");
    c.gh.revoke_token(&c.token);
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF101]: GitHub rejected the token (expired, revoked or mistyped)",
    );
    assert_has(&r, "\n--> config/secrets-flux.yaml\n");
}

fn expiry_header(days_from_now: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * days_from_now);
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `github-authentication-token-expiration` (format from recorded responses, headers.md).
#[test]
fn a_token_expiring_soon_is_a_warning_and_an_expired_one_an_error() {
    let c = Case::new(
        "soon",
        TokenSpec::fine_grained("username").expiring(&expiry_header(5)),
        "branch: main\n",
    );
    let r = c.validate(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_has(&r, "warning[HF102]: the token expires on ");

    let c = Case::new(
        "gone",
        TokenSpec::fine_grained("username").expiring(&expiry_header(-1)),
        "branch: main\n",
    );
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(&r, "error[HF103]: the token expired on ");

    // With `auth: token` the cluster keeps the token, so a near expiry is an error.
    let c = Case::new(
        "tok",
        TokenSpec::fine_grained("username").expiring(&expiry_header(5)),
        "branch: main\nauth: token\n",
    );
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(&r, "error[HF102]");
}

/// `X-OAuth-Scopes` on classic tokens ([D-scopes]).
#[test]
fn a_classic_token_without_the_repo_scope() {
    let c = Case::new(
        "scope",
        TokenSpec::classic("username", &["read:user", "gist"]),
        "branch: main\n",
    );
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF104]: the classic token has `read:user`, `gist`; creating a deploy key needs `repo`",
    );
}

/// 404 for a repository that does not exist or that the token may not see ([D-trouble]).
#[test]
fn a_missing_or_invisible_repository_gets_the_checklist_for_the_token_type() {
    let c = Case::new(
        "miss",
        TokenSpec::fine_grained("username").only_repositories(&["username/other"]),
        "branch: main\n",
    );
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF105]: repository `username/manifests` not found, or the token cannot see it",
    );
    assert_has(&r, "that the token's resource owner is `username`");
    // Nothing else is reported about a repository that cannot be seen.
    assert!(
        !r.stderr.contains("HF108") && !r.stderr.contains("HF110"),
        "{}",
        r.stderr
    );
}

#[test]
fn archived_and_public_repositories_are_warnings() {
    let gh = FakeGitHub::start();
    let t = token("pub");
    gh.add_token(&t, TokenSpec::fine_grained("username"));
    gh.add_repo(
        RepoSpec::new("username", "manifests")
            .branch("main", &fake_sha("m"))
            .public()
            .archived(),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/flux.yaml"),
        "repo: https://github.com/username/manifests\nbranch: main\n",
    )
    .unwrap();
    support::cli::write_secrets(
        &dir.path().join("config/secrets-flux.yaml"),
        &format!("token: {t}\n"),
    );
    let r = validate_at(dir.path(), &gh.url(), &t, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_has(
        &r,
        "warning[HF106]: repository `username/manifests` is archived",
    );
    assert_has(
        &r,
        "warning[HF107]: repository `username/manifests` is public",
    );
    let r = validate_at(dir.path(), &gh.url(), &t, &["--strict"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
}

/// 404 "Branch not found" on GET /branches/{branch}.
#[test]
fn a_missing_branch_names_the_default_branch() {
    let c = Case::new(
        "br",
        TokenSpec::fine_grained("username"),
        "branch: develop\n",
    );
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF108]: branch `develop` not found in `username/manifests`",
    );
    assert_has(&r, "the default branch is `main`: set `branch: main`");
}

/// 403 "Resource not accessible by personal access token" with
/// `X-Accepted-GitHub-Permissions: contents=read` ([D-trouble]).
#[test]
fn no_contents_permission_is_a_note_for_deploy_keys_and_an_error_for_auth_token() {
    let spec = TokenSpec::fine_grained("username").contents(Access::None);
    let c = Case::new("nocont", spec.clone(), "branch: main\n");
    let r = c.validate(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_has(
        &r,
        "note[HF109]: branch `main` cannot be checked with this token",
    );
    assert_has(&r, "(GitHub says it needs `contents=read`)");

    let c = Case::new("nocont2", spec, "branch: main\nauth: token\n");
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(&r, "error[HF111]");
}

/// errors.json `resource-not-accessible-403` on GET /keys (`administration=read`).
#[test]
fn no_administration_permission_cannot_manage_deploy_keys() {
    let c = Case::new(
        "noadm",
        TokenSpec::fine_grained("username").administration(Access::None),
        "branch: main\n",
    );
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF110]: the token cannot manage the deploy keys of `username/manifests`",
    );
    assert_has(&r, "(GitHub says it needs `administration=read`)");
}

/// errors.json `rate-limited-403`: `x-ratelimit-remaining: 0` and `x-ratelimit-reset`.
#[test]
fn an_exhausted_rate_limit_cannot_run_and_says_when_it_resets() {
    let c = Case::new("rl", TokenSpec::fine_grained("username"), "branch: main\n");
    c.gh.set_primary_rate_limit(Some((403, 1_900_000_000)));
    let r = c.validate(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_has(
        &r,
        "rate limit exhausted; it resets at 2030-03-17 17:46:40 UTC",
    );
}

/// errors.json `server-error-500`: retried with backoff, then fine.
#[test]
fn a_burst_of_server_errors_is_retried() {
    let c = Case::new("5xx", TokenSpec::fine_grained("username"), "branch: main\n");
    c.gh.fail_next(2, 502);
    let r = c.validate(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        c.gh.requests().len() >= 6,
        "two failed requests were repeated"
    );
}

/// errors.json `secondary-rate-limit-429`: `retry-after` honoured.
#[test]
fn a_secondary_rate_limit_is_waited_out() {
    let c = Case::new("sec", TokenSpec::fine_grained("username"), "branch: main\n");
    c.gh.secondary_rate_limit_next(1, 429, Some(1));
    let start = std::time::Instant::now();
    let r = c.validate(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "retry-after: 1 was honoured"
    );
}

#[test]
fn an_unreachable_github_cannot_run() {
    let c = Case::new(
        "down",
        TokenSpec::fine_grained("username"),
        "branch: main\n",
    );
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = validate_at(
        c.dir.path(),
        &format!("http://127.0.0.1:{port}"),
        &c.token,
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_has(
        &r,
        "error: cannot check the configuration against GitHub: could not reach GitHub at http://127.0.0.1:",
    );
}

#[test]
fn plain_http_is_refused_for_hosts_other_than_loopback() {
    let c = Case::new(
        "http",
        TokenSpec::fine_grained("username"),
        "branch: main\n",
    );
    let r = validate_at(c.dir.path(), "http://github.example.com", &c.token, &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_has(&r, "`http://` is accepted only for loopback hosts");
}

#[test]
fn json_output_includes_the_online_findings() {
    let c = Case::new(
        "json",
        TokenSpec::fine_grained("username"),
        "branch: develop\n",
    );
    let r = c.validate(&["--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["diagnostics"][0]["code"], "HF108");
    assert_eq!(doc["summary"]["errors"], 1);
}
