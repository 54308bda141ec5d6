//! `bootstrap` with `auth: github-app` on the real kube-apiserver (`--no-wait`: what is applied,
//! not whether Flux fetches; the fetch through the real source-controller is the end-to-end test
//! of the HTTPS git server): the Secret source-controller reads for a GitHub App, the
//! GitRepository with `provider: github`, this cluster's old deploy key deleted, and a switch
//! deploy-key → github-app → deploy-key that converges and is idempotent afterwards. Every run
//! at `-vv`, checked for the token, the App's key and every installation token.

use crate::support;

use support::cli::assert_has;
use support::fake_github::{AppSpec, InstallationSpec, RepoSpec};
use support::world::{World, flux_api, fresh, secret_value};

const APP_ID: u64 = 424242;

/// The world's repository as GitHub describes one: its `clone_url` on the host and path of its
/// `ssh_url` (the SSH server here), so that both name one repository, as github.com's do.
fn same_host_clone_url(w: &World) {
    let ssh = w.ssh.url(&w.repo);
    let path = ssh.split_once("127.0.0.1:").unwrap().1;
    let path = &path[path.find('/').unwrap()..];
    w.gh.add_repo(
        RepoSpec::new("username", "manifests")
            .branch("main", w.repo.seeded_commit())
            .ssh_url(&ssh)
            .clone_url(&format!("https://127.0.0.1{path}")),
    );
}

async fn secret_keys(client: kube::Client) -> Vec<String> {
    let s = flux_api(client, "Secret")
        .get("flux-system")
        .await
        .expect("the Secret");
    let mut keys: Vec<String> = s.data["data"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

async fn repo_spec(client: kube::Client) -> serde_json::Value {
    flux_api(client, "GitRepository")
        .get("flux-system")
        .await
        .expect("the GitRepository")
        .data["spec"]
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_deploy_key_to_github_app_and_back_converges_and_is_idempotent() {
    let (c, _exclusive, w) = fresh("appswitch").await;
    same_host_clone_url(&w);
    let client = c.client().await;
    let app = w.gh.add_app(AppSpec::new(APP_ID, "homelab-flux-switch"));
    let installation =
        w.gh.install_app(APP_ID, InstallationSpec::new("username", "manifests"));

    // 1. deploy-key: a key of this cluster on GitHub.
    let r = w.bootstrap(&["--no-wait"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let title = homelab_flux::keys::default_title(c.context(), c.server_url());
    assert_eq!(w.keys_titled(&title).len(), 1);

    // 2. github-app, with the token at hand: the Secret written anew with exactly the App's
    // keys, the GitRepository over https with `provider: github`, the old key deleted.
    w.use_github_app(&app, true);
    let r = w.bootstrap(&["--no-wait"]);
    w.check_app_secrets(&app, &r);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_eq!(
        secret_keys(client.clone()).await,
        [
            "githubAppBaseURL",
            "githubAppID",
            "githubAppInstallationID",
            "githubAppPrivateKey"
        ]
    );
    assert_eq!(
        secret_value(client.clone(), "githubAppID").await.as_deref(),
        Some(APP_ID.to_string().as_str())
    );
    assert_eq!(
        secret_value(client.clone(), "githubAppInstallationID")
            .await
            .as_deref(),
        Some(installation.to_string().as_str())
    );
    assert_eq!(
        secret_value(client.clone(), "githubAppBaseURL")
            .await
            .as_deref(),
        Some(w.gh.url().as_str()),
        "the fake's API base, not api.github.com"
    );
    assert_eq!(
        secret_value(client.clone(), "githubAppPrivateKey")
            .await
            .map(|k| k.trim().to_string()),
        Some(app.private_key_pem().trim().to_string())
    );
    let spec = repo_spec(client.clone()).await;
    assert_eq!(spec["provider"], "github", "{spec}");
    assert!(
        spec["url"].as_str().unwrap().starts_with("https://"),
        "{spec}"
    );
    assert_eq!(spec["secretRef"]["name"], "flux-system");
    assert!(
        w.keys_titled(&title).is_empty(),
        "the old deploy key is deleted"
    );
    assert_has(&r, "deleted the stale deploy key");

    // 3. Again: nothing changes, nothing is written to GitHub but the installation token.
    w.gh.clear_log();
    let r = w.bootstrap(&["--no-wait"]);
    w.check_app_secrets(&app, &r);
    assert_eq!(r.code, 0, "{}", r.transcript());
    w.assert_unchanged(&r);

    // 4. Back to deploy-key: a new key, the App's keys gone from the Secret, no `provider`.
    w.use_deploy_key();
    let r = w.bootstrap(&["--no-wait"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_eq!(
        secret_keys(client.clone()).await,
        ["identity", "identity.pub", "known_hosts"]
    );
    let spec = repo_spec(client.clone()).await;
    assert!(spec.get("provider").is_none(), "{spec}");
    assert!(
        spec["url"].as_str().unwrap().starts_with("ssh://"),
        "{spec}"
    );
    assert_eq!(w.keys_titled(&title).len(), 1);

    // 5. And again: unchanged, no GitHub writes.
    w.gh.clear_log();
    let r = w.bootstrap(&["--no-wait"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "Secret `flux-system/flux-system` unchanged");
    assert_has(&r, "GitRepository `flux-system/flux-system` unchanged");
    assert!(w.gh.writes().is_empty(), "{:?}", w.gh.writes());
}

/// Without a token beside the App, this cluster's old deploy key cannot be looked up: a note
/// names it. `--dry-run` shows the plan, `--export` the GitRepository with `provider: github`.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_the_old_key_is_named_and_dry_run_and_export_know_the_app() {
    let (c, _exclusive, w) = fresh("appnotoken").await;
    same_host_clone_url(&w);
    let client = c.client().await;
    let app = w.gh.add_app(AppSpec::new(APP_ID, "homelab-flux-notoken"));
    let installation =
        w.gh.install_app(APP_ID, InstallationSpec::new("username", "manifests"));
    let r = w.bootstrap(&["--no-wait"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let title = homelab_flux::keys::default_title(c.context(), c.server_url());

    w.use_github_app(&app, false);
    w.gh.clear_log();
    let r = w.bootstrap(&["--dry-run"]);
    w.check_app_secrets(&app, &r);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        "Secret `flux-system/flux-system` deleted, to be replaced",
    );
    assert_has(&r, "spec.provider: (none) → github");
    assert!(
        w.gh.writes()
            .iter()
            .all(|q| q.path.ends_with("/access_tokens")),
        "{:?}",
        w.gh.writes()
    );
    assert!(
        secret_value(client.clone(), "identity").await.is_some(),
        "a dry run changes nothing"
    );

    let r = w.bootstrap(&["--no-wait"]);
    w.check_app_secrets(&app, &r);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        &format!("note: the cluster no longer uses its deploy key `{title}`"),
    );
    assert_eq!(
        w.keys_titled(&title).len(),
        1,
        "not deleted without a token"
    );
    assert_eq!(repo_spec(client.clone()).await["provider"], "github");

    // `status` knows the mode and asks whether the installation still reaches the repository.
    let r = w.run(&["status", "--format", "json"]);
    w.check_app_secrets(&app, &r);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON document");
    assert_eq!(doc["auth"], "github-app", "{doc}");
    assert_eq!(doc["app_installation_ok"], true, "{doc}");
    assert_eq!(
        doc["deploy_key_registered"],
        serde_json::Value::Null,
        "{doc}"
    );
    w.gh.set_installation_suspended(installation, true);
    let r = w.run(&["status"]);
    w.check_app_secrets(&app, &r);
    assert_eq!(r.code, 1, "{}", r.transcript());
    for line in [
        "auth: github-app",
        "GitHub App: the installation does NOT reach the repository: the GitHub App's installation on `username` is suspended",
    ] {
        assert!(
            r.stdout.contains(line),
            "missing `{line}` in:\n{}",
            r.stdout
        );
    }
    w.gh.set_installation_suspended(installation, false);

    let r = w.run(&["bootstrap", "--export"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(r.stdout.contains("provider: github"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("url: https://github.com/username/manifests.git"),
        "{}",
        r.stdout
    );
}
