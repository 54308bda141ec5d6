//! Online `validate` with `auth: github-app`, through the real binary against the fake GitHub's
//! App endpoints (tests/it/support/fake_github/app.rs: JWTs verified RS256 against the App's
//! key, installation tokens scoped and expiring, GitHub's documented error bodies). Every run is
//! at `-vv` and checked for the App's private key and every installation token the fake issued.

use crate::support;

use support::cli::{Run, assert_has, assert_no_leak, command, run};
use support::fake_github::{Access, AppSpec, FakeGitHub, InstallationSpec, RepoSpec, fake_sha};

const APP_ID: u64 = 123456;
const SLUG: &str = "homelab-flux-test";

struct Case {
    gh: FakeGitHub,
    dir: tempfile::TempDir,
    pem: String,
}

impl Case {
    /// A private repository `username/manifests` with `main`, the App registered (not
    /// installed), and the config with the App's key in `app.pem` (mode 600).
    fn new(app_yaml: &str) -> Case {
        let gh = FakeGitHub::start();
        gh.add_repo(RepoSpec::new("username", "manifests").branch("main", &fake_sha("main")));
        let app = gh.add_app(AppSpec::new(APP_ID, SLUG));
        let pem = app.private_key_pem();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        std::fs::write(
            config.join("flux.yaml"),
            "repo: https://github.com/username/manifests.git\nbranch: main\nauth: github-app\n",
        )
        .unwrap();
        support::cli::write_secrets(&config.join("app.pem"), &pem);
        support::cli::write_secrets(
            &config.join("secrets-flux.yaml"),
            &format!("githubApp:\n  id: {APP_ID}\n  privateKeyFile: app.pem\n{app_yaml}"),
        );
        Case { gh, dir, pem }
    }

    fn install(&self, spec: InstallationSpec) -> u64 {
        self.gh.install_app(APP_ID, spec)
    }

    fn validate(&self, extra: &[&str]) -> Run {
        let mut cmd = command(self.dir.path());
        cmd.args(["-vv", "validate"])
            .args(extra)
            .env("HOMELAB_FLUX_GITHUB_API_URL", self.gh.url());
        let r = run(cmd);
        if std::env::var_os("SHOW_APP_RUNS").is_some() {
            eprintln!(
                "{}",
                r.stderr
                    .lines()
                    .filter(|l| !l.starts_with("debug: ") && !l.starts_with("trace: "))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        self.assert_nothing_secret(&r);
        r
    }

    /// Neither the App's key (any line of its body past the DER header every RSA key shares)
    /// nor an installation token the fake issued is in the output.
    fn assert_nothing_secret(&self, r: &Run) {
        let transcript = r.transcript();
        for line in self.pem.lines().filter(|l| !l.starts_with("-----")).skip(1) {
            assert_no_leak(line, &transcript, "the App's private key at -vv");
        }
        for issued in self.gh.installation_tokens() {
            assert_no_leak(&issued.token, &transcript, "an installation token at -vv");
        }
    }

    fn paths(&self) -> Vec<(String, String)> {
        self.gh
            .requests()
            .into_iter()
            .map(|q| (q.method, q.path))
            .collect()
    }
}

#[test]
fn an_installed_app_with_contents_read_passes_and_asks_a_token_for_this_repository_only() {
    let c = Case::new("");
    let id = c.install(InstallationSpec::new("username", "manifests").id(987654));
    let r = c.validate(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.ends_with("ok: the configuration is valid\n"),
        "{}",
        r.stderr
    );
    let paths = c.paths();
    for want in [
        ("GET", "/app".to_string()),
        ("GET", "/repos/username/manifests/installation".to_string()),
        ("POST", format!("/app/installations/{id}/access_tokens")),
        ("GET", "/repos/username/manifests".to_string()),
        ("GET", "/repos/username/manifests/branches/main".to_string()),
    ] {
        assert!(
            paths.iter().any(|(m, p)| m == want.0 && *p == want.1),
            "{want:?} not in {paths:?}"
        );
    }
    assert!(
        !paths
            .iter()
            .any(|(_, p)| p == "/user" || p.contains("/keys")),
        "no token checks with the App: {paths:?}"
    );
    let issued = c.gh.installation_tokens();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0].installation_id, id);
    assert_eq!(
        issued[0].repositories,
        vec!["username/manifests".to_string()]
    );
    assert_eq!(
        issued[0].permissions.get("contents").map(String::as_str),
        Some("read")
    );
    assert_eq!(
        issued[0].permissions.len(),
        1,
        "{:?}",
        issued[0].permissions
    );
    // The repository was read with the installation token.
    let repo_read =
        c.gh.requests()
            .into_iter()
            .find(|q| q.path == "/repos/username/manifests")
            .unwrap();
    let auth = repo_read
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(auth.as_deref(), Some("Bearer <redacted>"));
    assert!(
        c.gh.writes()
            .iter()
            .all(|w| w.path.ends_with("/access_tokens"))
    );
}

#[test]
fn a_configured_installation_id_is_checked_directly() {
    let c = Case::new("  installationId: 555111\n");
    c.install(InstallationSpec::new("username", "manifests").id(555111));
    let r = c.validate(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let paths = c.paths();
    assert!(
        paths.iter().any(|(_, p)| p == "/app/installations/555111"),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|(_, p)| p.ends_with("/installation")),
        "{paths:?}"
    );
}

#[test]
fn a_revoked_key_is_rejected_with_githubs_message() {
    let c = Case::new("");
    c.install(InstallationSpec::new("username", "manifests"));
    c.gh.revoke_app_key(APP_ID);
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF114]: GitHub rejected the App's JWT for App ID 123456",
    );
    assert_has(&r, "(GitHub: \"");
    assert_has(&r, "check `githubApp.id`");
    assert!(c.gh.installation_tokens().is_empty());
}

#[test]
fn an_app_not_installed_on_the_repository_links_to_its_install_page() {
    let c = Case::new("");
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF115]: the GitHub App `homelab-flux-test` is not installed on `username/manifests`",
    );
    assert_has(
        &r,
        "https://github.com/apps/homelab-flux-test/installations/new",
    );
}

#[test]
fn an_installation_without_contents_read_is_named() {
    let c = Case::new("");
    c.install(InstallationSpec::new("username", "manifests").contents(Access::None));
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF116]: GitHub refused the App an installation token to read the contents of `username/manifests`",
    );
    assert_has(&r, "Contents: Read-only");
    assert!(c.gh.installation_tokens().is_empty());
}

#[test]
fn a_suspended_installation_is_named() {
    let c = Case::new("");
    c.install(InstallationSpec::new("username", "manifests").suspended(true));
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF117]: the GitHub App's installation on `username` is suspended",
    );
    assert_has(&r, "Unsuspend");
}

#[test]
fn a_repository_outside_the_installation_is_not_installed() {
    let c = Case::new("");
    c.install(InstallationSpec::new("username", "other-repo"));
    let r = c.validate(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(&r, "error[HF115]");
}

#[test]
fn an_unreachable_github_cannot_run() {
    let c = Case::new("");
    let mut cmd = command(c.dir.path());
    cmd.args(["validate"]).env(
        "HOMELAB_FLUX_GITHUB_API_URL",
        support::cli::closed_api_url(),
    );
    let r = run(cmd);
    assert_eq!(r.code, 2, "{}", r.stderr);
    c.assert_nothing_secret(&r);
}

#[test]
fn json_output_carries_the_app_findings() {
    let c = Case::new("");
    let r = c.validate(&["--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON document");
    let codes: Vec<&str> = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["code"].as_str())
        .collect();
    assert!(codes.contains(&"HF115"), "{codes:?}");
}
