//! The GitHub client against the fake GitHub: each test names the documented GitHub behaviour it
//! stands for (see `../shared/reference/github/`).

use crate::support;

use std::time::Duration;

use homelab_flux::github::{self, Error, GitHub, Options, RetryPolicy};
use secrecy::SecretString;
use support::fake_github::{Access, FakeGitHub, RepoSpec, TEST_TOKEN, TokenSpec};

const SECRET_PART: &str = "FakeGitHubTestToken";

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
    }
}

fn client(fake: &FakeGitHub, token: &str) -> GitHub {
    let options = Options {
        retry: fast_retries(),
        ..Options::default()
    };
    GitHub::with_options(&fake.url(), &SecretString::from(token), options).unwrap()
}

/// A fake with one fine-grained token for `octocat` and a private repository `octocat/manifests`.
fn fake() -> (FakeGitHub, GitHub) {
    let fake = FakeGitHub::start();
    fake.add_token(TEST_TOKEN, TokenSpec::fine_grained("octocat"));
    fake.add_repo(RepoSpec::new("octocat", "manifests"));
    let gh = client(&fake, TEST_TOKEN);
    (fake, gh)
}

fn assert_no_token(err: &Error) {
    let shown = format!(
        "{err} / {err:?} / {:#}",
        anyhow::Error::msg(err.to_string())
    );
    assert!(!shown.contains(SECRET_PART), "token leaked: {shown}");
}

#[tokio::test]
async fn every_request_carries_the_documented_headers() {
    let (fake, gh) = fake();
    let user = gh.get_user().await.unwrap();
    assert_eq!(user.login, "octocat");

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/user");
    assert_eq!(
        request.header("accept"),
        Some("application/vnd.github+json")
    );
    assert_eq!(request.header("x-github-api-version"), Some("2022-11-28"));
    let ua = format!("homelab-flux/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(request.header("user-agent"), Some(ua.as_str()));
    assert_eq!(request.header("authorization"), Some("Bearer <redacted>"));
    // The fake recognised the token, so the Bearer value was the token itself.
    assert_eq!(request.login.as_deref(), Some("octocat"));
}

#[tokio::test]
async fn classic_token_reports_its_scopes_and_fine_grained_none() {
    // [D-scopes]: classic tokens get `X-OAuth-Scopes`; fine-grained tokens do not.
    let (fake, gh) = fake();
    fake.add_token(
        "ghp_classic",
        TokenSpec::classic("octocat", &["repo", "read:org"]),
    );
    let classic = client(&fake, "ghp_classic").get_user().await.unwrap();
    assert_eq!(
        classic.oauth_scopes,
        Some(vec!["repo".to_owned(), "read:org".to_owned()])
    );
    let fine = gh.get_user().await.unwrap();
    assert_eq!(fine.oauth_scopes, None);
    assert_eq!(fine.token_expiration, None);
}

#[tokio::test]
async fn token_expiration_header_is_parsed_in_both_recorded_formats() {
    // headers.md: `2023-01-31 23:00:00 UTC` and `2023-04-26 23:23:18 +0200` (go-github#2649).
    let fake = FakeGitHub::start();
    fake.add_token(
        "t_utc",
        TokenSpec::fine_grained("octocat").expiring("2023-01-31 23:00:00 UTC"),
    );
    fake.add_token(
        "t_offset",
        TokenSpec::fine_grained("octocat").expiring("2023-04-26 23:23:18 +0200"),
    );
    let utc = client(&fake, "t_utc").get_user().await.unwrap();
    assert_eq!(
        homelab_flux::text::format_utc(utc.token_expiration.unwrap()),
        "2023-01-31 23:00:00 UTC"
    );
    let offset = client(&fake, "t_offset").get_user().await.unwrap();
    assert_eq!(
        homelab_flux::text::format_utc(offset.token_expiration.unwrap()),
        "2023-04-26 21:23:18 UTC"
    );
}

#[tokio::test]
async fn unknown_token_is_unauthorized() {
    // errors.json `bad-credentials-401` (recorded response).
    let (fake, _) = fake();
    let err = client(&fake, "ghp_FakeGitHubTestTokenRevoked000000000000")
        .get_user()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "GET /user: token rejected (expired, revoked or mistyped)"
    );
    assert_no_token(&err);
    // No retry on 401.
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn revoked_token_is_unauthorized() {
    let (fake, gh) = fake();
    gh.get_user().await.unwrap();
    fake.revoke_token(TEST_TOKEN);
    let err = gh.get_user().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
}

#[tokio::test]
async fn repository_fields_are_kept() {
    let (fake, gh) = fake();
    fake.add_repo(
        RepoSpec::new("octocat", "old")
            .public()
            .archived()
            .default_branch("trunk")
            .ssh_url("ssh://git@127.0.0.1:2222/octocat/old.git"),
    );
    let repo = gh.get_repo("octocat", "manifests").await.unwrap();
    assert_eq!(repo.full_name, "octocat/manifests");
    assert_eq!(repo.default_branch, "main");
    assert_eq!(repo.ssh_url, "git@github.com:octocat/manifests.git");
    assert_eq!(repo.clone_url, "https://github.com/octocat/manifests.git");
    assert!(repo.private);
    assert_eq!(repo.visibility.as_deref(), Some("private"));
    assert!(!repo.archived);
    assert!(repo.permissions.unwrap().admin);

    let old = gh.get_repo("octocat", "old").await.unwrap();
    assert!(!old.private);
    assert_eq!(old.visibility.as_deref(), Some("public"));
    assert!(old.archived);
    assert_eq!(old.default_branch, "trunk");
    assert_eq!(old.ssh_url, "ssh://git@127.0.0.1:2222/octocat/old.git");
}

#[tokio::test]
async fn missing_repository_is_not_found() {
    // errors.json `not-found-404`; [D-trouble]: private repositories a token cannot see are 404.
    let (fake, gh) = fake();
    let err = gh.get_repo("octocat", "nope").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { accepted_permissions: None, message, .. } if message == "Not Found"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "GET /repos/octocat/nope: not found, or the token cannot see it"
    );
    fake.add_repo(RepoSpec::new("someone-else", "private"));
    let err = gh.get_repo("someone-else", "private").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn branch_gives_its_commit_sha_and_a_missing_branch_is_not_found() {
    let (fake, gh) = fake();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    fake.add_repo(RepoSpec::new("octocat", "manifests").branch("feature/x", sha));
    let branch = gh
        .get_branch("octocat", "manifests", "feature/x")
        .await
        .unwrap();
    assert_eq!(branch.name, "feature/x");
    assert_eq!(branch.commit_sha, sha);
    // The slash travels percent-encoded, as go-github sends it.
    assert!(
        fake.requests()
            .last()
            .unwrap()
            .path
            .ends_with("/branches/feature%2Fx")
    );

    let err = gh
        .get_branch("octocat", "manifests", "nope")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { message, .. } if message == "Branch not found"),
        "{err:?}"
    );
}

#[tokio::test]
async fn fine_grained_token_without_contents_cannot_read_a_private_branch() {
    // [D-trouble] "Resource not accessible": 403 with `X-Accepted-GitHub-Permissions`.
    let (fake, _) = fake();
    fake.add_token(
        "no_contents",
        TokenSpec::fine_grained("octocat").contents(Access::None),
    );
    fake.add_repo(RepoSpec::new("octocat", "open").public());
    let gh = client(&fake, "no_contents");
    let err = gh
        .get_branch("octocat", "manifests", "main")
        .await
        .unwrap_err();
    match &err {
        Error::Forbidden {
            message,
            accepted_permissions,
            ..
        } => {
            assert_eq!(message, "Resource not accessible by personal access token");
            assert_eq!(accepted_permissions.as_deref(), Some("contents=read"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.accepted_permissions(), Some("contents=read"));
    assert!(err.to_string().contains("`contents=read`"), "{err}");
    // Public repositories are readable without the permission.
    gh.get_branch("octocat", "open", "main").await.unwrap();
}

#[tokio::test]
async fn fine_grained_token_without_administration_cannot_use_deploy_keys() {
    // errors.json `resource-not-accessible-403`: `administration=read` for listing.
    let (fake, _) = fake();
    fake.add_token(
        "no_admin",
        TokenSpec::fine_grained("octocat").administration(Access::None),
    );
    fake.add_token(
        "admin_read",
        TokenSpec::fine_grained("octocat").administration(Access::Read),
    );
    let err = client(&fake, "no_admin")
        .list_deploy_keys("octocat", "manifests")
        .await
        .unwrap_err();
    assert_eq!(err.accepted_permissions(), Some("administration=read"));
    assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");

    let read_only = client(&fake, "admin_read");
    assert!(
        read_only
            .list_deploy_keys("octocat", "manifests")
            .await
            .unwrap()
            .is_empty()
    );
    let err = read_only
        .create_deploy_key("octocat", "manifests", "t", &public_key(1), true)
        .await
        .unwrap_err();
    assert_eq!(err.accepted_permissions(), Some("administration=write"));
    assert!(fake.deploy_keys("octocat", "manifests").is_empty());
}

#[tokio::test]
async fn primary_rate_limit_says_when_it_resets_and_is_not_retried() {
    // errors.json `rate-limited-403` (docs example: reset 1377013266); [D-rate]: 403 or 429.
    for status in [403, 429] {
        let (fake, gh) = fake();
        fake.set_primary_rate_limit(Some((status, 1_377_013_266)));
        let err = gh.get_user().await.unwrap_err();
        match &err {
            Error::RateLimited { reset, .. } => {
                assert_eq!(reset.unwrap().as_second(), 1_377_013_266);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "GET /user: GitHub API rate limit exhausted; it resets at 2013-08-20 15:41:06 UTC"
        );
        assert_eq!(fake.requests().len(), 1, "status {status}");
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    // errors.json `server-error-500`: a burst of two, then GitHub recovers.
    let (fake, gh) = fake();
    fake.fail_next(2, 500);
    let user = gh.get_user().await.unwrap();
    assert_eq!(user.login, "octocat");
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
}

#[tokio::test]
async fn server_errors_give_up_after_the_bound() {
    let (fake, gh) = fake();
    fake.fail_next(10, 502);
    let err = gh.get_repo("octocat", "manifests").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Server {
                status: 502,
                attempts: 4,
                ..
            }
        ),
        "{err:?}"
    );
    // max_retries 3: four requests, no more.
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn secondary_rate_limit_honours_retry_after() {
    // errors.json `secondary-rate-limit-403`: [D-rate] "you should not retry your request until
    // after that many seconds has elapsed".
    let (fake, gh) = fake();
    fake.secondary_rate_limit_next(1, 403, Some(1));
    gh.get_user().await.unwrap();
    let requests = fake.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [403, 200]
    );
    let waited = requests[1].at.duration_since(requests[0].at);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test]
async fn secondary_rate_limit_429_without_retry_after_backs_off() {
    // errors.json `secondary-rate-limit-429`; no retry-after: the client's own backoff.
    let (fake, gh) = fake();
    fake.secondary_rate_limit_next(2, 429, None);
    gh.get_user().await.unwrap();
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn persistent_secondary_rate_limit_gives_up() {
    let (fake, gh) = fake();
    fake.secondary_rate_limit_next(10, 403, Some(0));
    let err = gh.get_user().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SecondaryRateLimited {
                attempts: 4,
                retry_after: Some(d),
                ..
            } if d.is_zero()
        ),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), 4);
}

fn public_key(n: u8) -> String {
    // Distinct, well-formed-looking ed25519 public keys (the fake checks the shape only).
    let body: String = std::iter::repeat_n(char::from(b'A' + n % 26), 43).collect();
    format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{body}= test-{n}")
}

#[tokio::test]
async fn deploy_keys_are_created_listed_and_deleted() {
    let (fake, gh) = fake();
    let dir = tempfile::tempdir().unwrap();
    let authorized_keys = dir.path().join("authorized_keys");
    fake.set_authorized_keys_file(&authorized_keys);

    let key = public_key(1);
    let created = gh
        .create_deploy_key("octocat", "manifests", "homelab-flux test", &key, true)
        .await
        .unwrap();
    assert!(created.read_only);
    assert_eq!(created.title, "homelab-flux test");
    assert!(created.matches_public_key(&key));
    // GitHub keeps no comment.
    assert!(!created.key.contains("test-1"));
    let written = std::fs::read_to_string(&authorized_keys).unwrap();
    assert!(written.contains(created.key.as_str()), "{written}");

    let post = fake.writes();
    assert_eq!(post.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&post[0].body).unwrap();
    assert_eq!(body["read_only"], true);
    assert_eq!(body["key"], key.as_str());

    let listed = gh.list_deploy_keys("octocat", "manifests").await.unwrap();
    assert_eq!(listed, vec![created.clone()]);

    // errors.json `validation-failed-422` (recorded): the same key again.
    let err = gh
        .create_deploy_key("octocat", "manifests", "again", &key, true)
        .await
        .unwrap_err();
    assert!(err.is_key_already_in_use(), "{err:?}");
    assert!(matches!(err, Error::Validation { .. }));
    assert!(err.to_string().contains("key is already in use"), "{err}");

    gh.delete_deploy_key("octocat", "manifests", created.id)
        .await
        .unwrap();
    assert!(fake.deploy_keys("octocat", "manifests").is_empty());
    assert_eq!(std::fs::read_to_string(&authorized_keys).unwrap(), "");
    // A second DELETE answers 404 (the key is gone): success, as after a retry whose first
    // answer was lost to a timeout.
    gh.delete_deploy_key("octocat", "manifests", created.id)
        .await
        .unwrap();
    let deletes: Vec<u16> = fake
        .writes()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.status)
        .collect();
    assert_eq!(deletes, [204, 404], "both DELETEs reached GitHub");
}

#[tokio::test]
async fn deploy_key_listing_follows_every_page() {
    // The spec's `link` header: the client asks for 100 a page and follows rel="next", which
    // GitHub points at /repositories/{id}/....
    let (fake, gh) = fake();
    for n in 0..250u32 {
        let key = format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{n:0>43}");
        fake.add_deploy_key("octocat", "manifests", &format!("k{n}"), &key, true);
    }
    let keys = gh.list_deploy_keys("octocat", "manifests").await.unwrap();
    assert_eq!(keys.len(), 250);
    assert_eq!(keys[0].title, "k0");
    assert_eq!(keys[249].title, "k249");
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert_eq!(paths[0], "/repos/octocat/manifests/keys?per_page=100");
    assert!(paths[1].starts_with("/repositories/"), "{paths:?}");
    assert!(paths[2].ends_with("page=3"), "{paths:?}");
}

#[tokio::test]
async fn meta_lists_the_configured_host_keys() {
    let (fake, gh) = fake();
    fake.set_host_keys(&["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIhostkey"]);
    let meta = gh.meta().await.unwrap();
    assert_eq!(
        meta.ssh_keys,
        ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIhostkey"]
    );
}

#[tokio::test]
async fn independent_requests_run_concurrently() {
    // §7: independent requests are in flight together. The fake holds its answers until all
    // four have arrived (a client that sends them one by one waits out the limit on each and
    // shows 1), so the count does not depend on how fast this machine is.
    let (fake, gh) = fake();
    fake.hold_until_in_flight(4, Duration::from_secs(20));
    let (user, repo, branch, keys) = tokio::join!(
        gh.get_user(),
        gh.get_repo("octocat", "manifests"),
        gh.get_branch("octocat", "manifests", "main"),
        gh.list_deploy_keys("octocat", "manifests"),
    );
    user.unwrap();
    repo.unwrap();
    branch.unwrap();
    keys.unwrap();
    assert_eq!(fake.requests().len(), 4);
    assert_eq!(fake.max_in_flight(), 4);
}

#[tokio::test]
async fn unreachable_github_names_the_url_but_never_the_token() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let options = Options {
        retry: RetryPolicy {
            max_retries: 1,
            ..fast_retries()
        },
        ..Options::default()
    };
    let gh = GitHub::with_options(&base, &SecretString::from(TEST_TOKEN), options).unwrap();
    let err = gh.get_user().await.unwrap_err();
    match &err {
        Error::Unreachable { url, .. } => assert_eq!(url, &format!("{base}/user")),
        other => panic!("{other:?}"),
    }
    assert_no_token(&err);
    let chain = format!("{:#}", anyhow::Error::new(err));
    assert!(!chain.contains(SECRET_PART), "{chain}");
}

#[tokio::test]
async fn timeouts_are_unreachable() {
    let (fake, _) = fake();
    // The answer would come long after the timeout, however loaded the machine is.
    fake.set_delay(Duration::from_secs(30));
    let options = Options {
        timeout: Duration::from_millis(100),
        retry: RetryPolicy {
            max_retries: 0,
            ..fast_retries()
        },
        ..Options::default()
    };
    let gh = GitHub::with_options(&fake.url(), &SecretString::from(TEST_TOKEN), options).unwrap();
    let err = gh.get_user().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
}

#[test]
fn http_override_is_refused_for_non_loopback_hosts() {
    let err = github::resolve_api_base("github.com", Some("http://api.example.com")).unwrap_err();
    assert!(matches!(err, Error::InvalidApiUrl { .. }));
    assert!(err.to_string().contains("loopback"), "{err}");
    assert_eq!(
        github::resolve_api_base("github.com", Some("http://127.0.0.1:4000/")).unwrap(),
        "http://127.0.0.1:4000"
    );
    assert_eq!(
        github::resolve_api_base("ghe.example.com", None).unwrap(),
        "https://ghe.example.com/api/v3"
    );
}

#[tokio::test]
async fn no_error_shows_the_token() {
    // A canary: every failure mode above, printed every way, never carries the token.
    let (fake, gh) = fake();
    let mut errors = Vec::new();
    errors.push(gh.get_repo("octocat", "missing").await.unwrap_err());
    errors.push(
        gh.get_branch("octocat", "manifests", "x")
            .await
            .unwrap_err(),
    );
    fake.fail_next(4, 503);
    errors.push(gh.get_user().await.unwrap_err());
    fake.set_primary_rate_limit(Some((403, 1_377_013_266)));
    errors.push(gh.get_user().await.unwrap_err());
    fake.set_primary_rate_limit(None);
    fake.revoke_token(TEST_TOKEN);
    errors.push(gh.get_user().await.unwrap_err());
    for err in &errors {
        assert_no_token(err);
    }
    let debug = format!("{gh:?}");
    assert!(!debug.contains(SECRET_PART), "{debug}");
    for request in fake.requests() {
        assert!(
            !format!("{request:?}").contains(SECRET_PART),
            "the fake's log keeps no token either"
        );
    }
}
