//! The whole `auth: github-app` path with the real source-controller and no homelab-flux code:
//! a hand-made Secret `flux-system/flux-system` with the keys source-controller reads
//! (`githubAppID`, `githubAppInstallationID`, `githubAppPrivateKey`, `githubAppBaseURL`) and a
//! GitRepository with `provider: github` and an `https://` URL. source-controller makes a JWT with
//! the App's key, asks the HTTPS fake GitHub for an installation token (fluxcd/pkg/auth
//! `githubapp`: `POST /app/installations/{id}/access_tokens` under `githubAppBaseURL`, which it
//! rewrites from `/api/v3/` back to the given path) and clones from the HTTPS git server as
//! `x-access-token`. Both servers use the test CA, which the controller trusts through
//! `SSL_CERT_FILE` (`cluster.rs`).

use crate::support;

use std::time::Duration;

use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::json;
use support::cli::assert_has;
use support::fake_github::{AppSpec, FakeApp, FakeGitHub, InstallationSpec, RepoSpec};
use support::git_server::{GitRepo, HttpsGitServer};
use support::world::{World, flux_api, ready_line, secret_value};

/// A hang guard for source-controller's fetch (seconds when idle).
const FETCH: Duration = Duration::from_secs(120);

/// An HTTPS fake GitHub and git server with `username/manifests` (branch `main` at the seeded
/// commit) and `username/other`, and App `app_id`.
struct AppWorld {
    gh: FakeGitHub,
    git: HttpsGitServer,
    repo: GitRepo,
    app: FakeApp,
}

fn app_world(app_id: u64) -> AppWorld {
    let gh = FakeGitHub::start_https();
    let git = HttpsGitServer::start_for_app(&gh);
    let repo = git.create_repo("username", "manifests");
    let other = git.create_repo("username", "other");
    for (name, r) in [("manifests", &repo), ("other", &other)] {
        gh.add_repo(
            RepoSpec::new("username", name)
                .branch("main", r.seeded_commit())
                .clone_url(&git.url(r)),
        );
    }
    let app = gh.add_app(AppSpec::new(app_id, "homelab-flux-test"));
    AppWorld { gh, git, repo, app }
}

/// Applies the Secret and the GitRepository `flux-system/flux-system` as an operator would by
/// hand for a GitHub App.
async fn apply_app_source(client: kube::Client, w: &AppWorld, installation_id: u64) {
    let params = PatchParams::apply("github-app-e2e").force();
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "flux-system", "namespace": "flux-system"},
        "type": "Opaque",
        "stringData": {
            "githubAppID": w.app.id().to_string(),
            "githubAppInstallationID": installation_id.to_string(),
            "githubAppPrivateKey": w.app.private_key_pem(),
            "githubAppBaseURL": w.gh.url(),
        },
    });
    flux_api(client.clone(), "Secret")
        .patch("flux-system", &params, &Patch::Apply(&secret))
        .await
        .expect("the Secret applies");
    let source = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "flux-system", "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "url": w.git.url(&w.repo),
            "ref": {"branch": "main"},
            "provider": "github",
            "secretRef": {"name": "flux-system"},
        },
    });
    flux_api(client, "GitRepository")
        .patch("flux-system", &params, &Patch::Apply(&source))
        .await
        .expect("the GitRepository applies");
}

/// Watches the GitRepository until its Ready condition is `status` for its latest generation;
/// returns it then. `FETCH` is a hang guard only.
async fn wait_ready_status(client: kube::Client, status: &'static str) -> DynamicObject {
    let api = flux_api(client, "GitRepository");
    // source-controller patches the conditions before `status.artifact` and
    // `status.observedGeneration`, and a failed fetch leaves `observedGeneration` at -1: Ready
    // True counts once the whole status is of the latest generation, Ready False once the
    // condition's own `observedGeneration` is.
    let settled = move |o: Option<&DynamicObject>| {
        o.is_some_and(|o| {
            let generation = json!(o.metadata.generation);
            let whole = o.data["status"]["observedGeneration"] == generation;
            o.data["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| {
                    c["status"] == status
                        && c["observedGeneration"] == generation
                        && (whole || status == "False")
                })
        })
    };
    let wait = kube::runtime::wait::await_condition(api.clone(), "flux-system", settled);
    match tokio::time::timeout(FETCH, wait).await {
        Ok(found) => found.unwrap().expect("the GitRepository"),
        Err(_) => {
            let now = api.get_opt("flux-system").await.ok().flatten();
            panic!(
                "GitRepository not Ready={status} after {FETCH:?}: {}\nsource-controller:\n{}",
                now.map(|o| o.data["status"].to_string())
                    .unwrap_or_default(),
                support::cluster::cluster().log_tail("source-controller", 30)
            )
        }
    }
}

/// The git server let source-controller clone `username/manifests`, as `x-access-token` with a
/// token the fake issued, and nothing else.
fn assert_cloned_with_issued_tokens(gh: &FakeGitHub) {
    let issued = gh.installation_tokens();
    let cloned: Vec<_> = gh
        .git_auth_log()
        .into_iter()
        .filter(|g| g.allowed)
        .collect();
    assert!(!cloned.is_empty(), "the git server let nothing through");
    for g in &cloned {
        assert_eq!(g.repo, "username/manifests");
        assert_eq!(g.user.as_deref(), Some("x-access-token"));
        assert!(
            issued.iter().any(|t| Some(&t.token) == g.password.as_ref()),
            "the clone used a token the fake issued"
        );
    }
}

fn ready_condition(o: &DynamicObject) -> (String, String) {
    let c = o.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    (
        c["reason"].as_str().unwrap_or_default().to_owned(),
        c["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Takes the cluster (reset), makes an [`AppWorld`] with App `app_id` installed as `spec`, lets
/// `prepare` act on it, applies the hand-made source and waits until it is Ready `status`.
async fn fetch(
    app_id: u64,
    spec: InstallationSpec,
    prepare: impl FnOnce(&AppWorld),
    status: &'static str,
) -> (
    tokio::sync::RwLockWriteGuard<'static, ()>,
    AppWorld,
    DynamicObject,
) {
    let c = support::cluster::cluster();
    let exclusive = c.exclusive().await;
    support::world::reset(c).await;
    let w = app_world(app_id);
    let installation = w.gh.install_app(app_id, spec);
    prepare(&w);
    let client = c.client().await;
    apply_app_source(client.clone(), &w, installation).await;
    let source = wait_ready_status(client, status).await;
    (exclusive, w, source)
}

/// App key in the Secret → installation token from the fake (through `githubAppBaseURL`, its CA
/// trusted) → clone with that token → the GitRepository Ready at the seeded commit.
#[tokio::test]
async fn source_controller_fetches_as_the_app_installation() {
    let spec = InstallationSpec::new("username", "manifests").id(987_654);
    let (_exclusive, w, source) = fetch(123_456, spec, |_| {}, "True").await;
    let revision = source.data["status"]["artifact"]["revision"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        revision,
        format!("main@sha1:{}", w.repo.seeded_commit()),
        "{}",
        source.data["status"]
    );

    let posts: Vec<_> =
        w.gh.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/app/installations/987654/access_tokens")
            .collect();
    assert!(!posts.is_empty(), "no token request: {:?}", w.gh.requests());
    assert!(posts.iter().all(|r| r.status == 201));
    assert_eq!(posts[0].header("authorization"), Some("Bearer <redacted>"));
    assert_cloned_with_issued_tokens(&w.gh);
    let log = w.git.access_log();
    assert!(
        log.lines().any(|l| l.contains("x-access-token")
            && l.contains("/username/manifests.git/info/refs?service=git-upload-pack")
            && l.contains("\" 200 ")),
        "nginx access log: {log}"
    );
}

/// The App's key rotated away: GitHub refuses the JWT, source-controller gets no token and the
/// GitRepository is not Ready, reason `AuthenticationFailed`, with GitHub's message.
#[tokio::test]
async fn a_revoked_app_key_is_an_authentication_failure() {
    let spec = InstallationSpec::new("username", "manifests");
    let revoke = |w: &AppWorld| w.gh.revoke_app_key(w.app.id());
    let (_exclusive, w, source) = fetch(223_456, spec, revoke, "False").await;
    let (reason, message) = ready_condition(&source);
    assert_eq!(reason, "AuthenticationFailed", "{message}");
    assert!(
        message.contains("A JSON web token could not be decoded"),
        "{message}"
    );
    assert!(w.gh.installation_tokens().is_empty());
    assert!(w.gh.git_auth_log().is_empty(), "no clone was tried");
}

/// An installation that does not include the repository: the token source-controller gets does
/// not reach it, the git server refuses the clone (401) and the GitRepository is not Ready.
#[tokio::test]
async fn an_installation_without_the_repository_cannot_clone() {
    let spec = InstallationSpec::new("username", "other");
    let (_exclusive, w, source) = fetch(323_456, spec, |_| {}, "False").await;
    let (reason, message) = ready_condition(&source);
    assert_eq!(reason, "GitOperationFailed", "{message}");
    assert!(message.contains("authentication required"), "{message}");
    let issued = w.gh.installation_tokens();
    assert!(!issued.is_empty(), "source-controller got a token");
    assert!(issued.iter().all(|t| t.repositories == ["username/other"]));
    let refused = w.gh.git_auth_log();
    assert!(!refused.is_empty() && refused.iter().all(|g| !g.allowed));
    assert!(
        refused
            .iter()
            .all(|g| g.reason == "not scoped to this repository"),
        "{refused:?}"
    );
}

const BOOTSTRAP_APP_ID: u64 = 523_456;

fn access_token_posts(w: &World, user_agent: &str) -> usize {
    w.gh.requests()
        .iter()
        .filter(|r| {
            r.method == "POST"
                && r.path.ends_with("/access_tokens")
                && r.status == 201
                && r.header("user-agent")
                    .is_some_and(|a| a.starts_with(user_agent))
        })
        .count()
}

/// `homelab-flux bootstrap` with `auth: github-app` against the HTTPS fake GitHub, the HTTPS
/// git server and the real controllers: deploy-key first, then the App (Kustomization Ready,
/// fetched by source-controller with its own installation token), a second run that changes
/// nothing and writes nothing to GitHub but the tool's own token request, and back to
/// deploy-key, Ready again. Every run at `-vv` without the App's key or an installation token.
#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_with_a_github_app_syncs_through_the_real_controllers_and_switches_back() {
    let c = support::cluster::cluster();
    let _exclusive = c.exclusive().await;
    support::world::reset(c).await;
    let w = World::new_https("appsync", "./clusters/home", c.kubeconfig_path());
    let git = HttpsGitServer::start_for_app(&w.gh);
    // One repository on both servers: the SSH one, served over HTTPS at the same path
    // (GitHub's `clone_url`), so that a switch of `auth` is no takeover of another repository.
    let https_url = git.serve_repo(&w.repo);
    w.gh.add_repo(
        RepoSpec::new("username", "manifests")
            .branch("main", w.repo.seeded_commit())
            .ssh_url(&w.ssh.url(&w.repo))
            .clone_url(&https_url),
    );
    let app =
        w.gh.add_app(AppSpec::new(BOOTSTRAP_APP_ID, "homelab-flux-e2e"));
    let installation = w.gh.install_app(
        BOOTSTRAP_APP_ID,
        InstallationSpec::new("username", "manifests"),
    );
    let client = c.client().await;
    let ready = ready_line(w.repo.seeded_commit());
    let synced = format!("Flux is synced at {}", &w.repo.seeded_commit()[..12]);
    let title = homelab_flux::keys::default_title(c.context(), c.server_url());

    // 1. deploy-key, synced over SSH.
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, &ready);
    assert_eq!(w.keys_titled(&title).len(), 1);

    // 2. github-app: synced by source-controller as the installation, the old key deleted.
    w.use_github_app(&app, true);
    w.gh.clear_log();
    let r = w.bootstrap(&[]);
    w.check_app_secrets(&app, &r);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, &ready);
    assert!(
        w.keys_titled(&title).is_empty(),
        "the old deploy key is deleted"
    );
    assert_eq!(
        secret_value(client.clone(), "githubAppInstallationID")
            .await
            .as_deref(),
        Some(installation.to_string().as_str())
    );
    let source = flux_api(client.clone(), "GitRepository")
        .get("flux-system")
        .await
        .unwrap();
    assert_eq!(source.data["spec"]["provider"], "github");
    assert_eq!(source.data["spec"]["url"], https_url.as_str());
    assert_eq!(
        source.data["status"]["artifact"]["revision"],
        format!("main@sha1:{}", w.repo.seeded_commit()).as_str()
    );
    assert!(
        access_token_posts(&w, "homelab-flux/") >= 1,
        "the tool's own token request"
    );
    assert!(
        access_token_posts(&w, "go-github") >= 1,
        "source-controller's token request: {:?}",
        w.gh.requests()
            .iter()
            .map(|q| (
                q.method.clone(),
                q.path.clone(),
                q.header("user-agent").map(str::to_owned)
            ))
            .collect::<Vec<_>>()
    );
    assert_cloned_with_issued_tokens(&w.gh);

    // 3. Again: nothing changes, nothing is written to GitHub but a token request.
    w.gh.clear_log();
    let r = w.bootstrap(&[]);
    w.check_app_secrets(&app, &r);
    assert_eq!(r.code, 0, "{}", r.transcript());
    w.assert_unchanged(&r);
    assert_has(&r, &synced);

    // 4. Back to deploy-key: a new key, synced over SSH again; then idempotent.
    w.use_deploy_key();
    let r = w.bootstrap(&[]);
    w.check_app_secrets(&app, &r);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, &ready);
    assert_eq!(w.keys_titled(&title).len(), 1);
    let source = flux_api(client.clone(), "GitRepository")
        .get("flux-system")
        .await
        .unwrap();
    assert!(
        source.data["spec"].get("provider").is_none(),
        "{}",
        source.data["spec"]
    );
    assert!(
        secret_value(client.clone(), "githubAppPrivateKey")
            .await
            .is_none()
    );
    w.gh.clear_log();
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "Secret `flux-system/flux-system` unchanged");
    assert!(w.gh.writes().is_empty(), "{:?}", w.gh.writes());
}
