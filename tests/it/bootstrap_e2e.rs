//! `bootstrap` and `status` end to end: the real binary against a real kube-apiserver with the
//! real Flux controllers, the SSH and HTTP git servers on loopback, and the fake GitHub (whose
//! deploy keys are the SSH server's authorized keys, and whose `/meta` lists its host key).
//!
//! The tests share the test binary's cluster and take it exclusively, one at a time; each
//! starts from `world::fresh` ("Flux installed, nothing bootstrapped", whatever the test before
//! left: a stopped API server, missing CRDs, stopped controllers, a wiped etcd), so their order
//! does not matter. Every run is at `-vv` and checked for every token of its world (the canary
//! check).

use crate::support;

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use support::cli::{Run, assert_has};
use support::cluster;
use support::fake_github::{RepoSpec, TokenSpec};
use support::git_server::{HttpGitServer, SEED_CONFIG_MAP, generate_ssh_key};
use support::world::{World, fresh, ready_line, token};

/// The deploy key's title: the context and the id of this API server's address (SPEC §3).
fn title() -> String {
    homelab_flux::keys::default_title(cluster::CONTEXT, cluster::cluster().server_url())
}

/// The progress line a run prints once its watch on the GitRepository has delivered the object
/// and no controller has reported on it yet: the run is in its wait.
const WAITING_LINE: &str = "  GitRepository `flux-system`: waiting for the controller";

fn write_flux(dir: &Path, extra: &str) {
    write_flux_for(dir, "manifests", extra);
}

fn write_flux_for(dir: &Path, repo: &str, extra: &str) {
    std::fs::write(
        dir.join("config/flux.yaml"),
        format!("repo: https://github.com/username/{repo}.git\n{extra}"),
    )
    .unwrap();
}

async fn object(kind: &str, plural: &str, group: &str) -> Option<DynamicObject> {
    let client = cluster::cluster().client().await;
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(group, "v1", kind),
        plural,
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, "flux-system", &ar);
    api.get_opt("flux-system").await.unwrap()
}

/// What a write of homelab-flux would change: the Secret's resourceVersion (no controller writes
/// it), and of the Flux objects their generation, labels, annotations and spec. Their
/// resourceVersion is not compared: the controllers write their status whenever they reconcile,
/// which on a loaded machine can land at any moment of a run.
async fn resource_versions() -> Vec<String> {
    let mut out = Vec::new();
    for (kind, plural, group) in [
        ("Secret", "secrets", ""),
        (
            "GitRepository",
            "gitrepositories",
            "source.toolkit.fluxcd.io",
        ),
        (
            "Kustomization",
            "kustomizations",
            "kustomize.toolkit.fluxcd.io",
        ),
    ] {
        let o = object(kind, plural, group)
            .await
            .unwrap_or_else(|| panic!("{kind} missing"));
        if kind == "Secret" {
            out.push(o.metadata.resource_version.unwrap_or_default());
        } else {
            out.push(
                serde_json::json!({
                    "generation": o.metadata.generation,
                    "labels": o.metadata.labels,
                    "annotations": o.metadata.annotations,
                    "spec": o.data["spec"],
                })
                .to_string(),
            );
        }
    }
    out
}

async fn seeded_config_map(namespace: &str) -> Option<k8s_openapi::api::core::v1::ConfigMap> {
    let client = cluster::cluster().client().await;
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, namespace);
    api.get_opt(SEED_CONFIG_MAP).await.unwrap()
}

/// resourceVersions of the Namespace, Secret, GitRepository and Kustomization (`None`: absent).
async fn flux_state() -> Vec<Option<String>> {
    let client = cluster::cluster().client().await;
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let mut out = vec![
        ns.get_opt("flux-system")
            .await
            .unwrap()
            .and_then(|n| n.metadata.resource_version),
    ];
    for (kind, plural, group) in KINDS {
        out.push(
            object(kind, plural, group)
                .await
                .and_then(|o| o.metadata.resource_version),
        );
    }
    out
}

const KINDS: [(&str, &str, &str); 3] = [
    ("Secret", "secrets", ""),
    (
        "GitRepository",
        "gitrepositories",
        "source.toolkit.fluxcd.io",
    ),
    (
        "Kustomization",
        "kustomizations",
        "kustomize.toolkit.fluxcd.io",
    ),
];

async fn secret() -> Option<DynamicObject> {
    object("Secret", "secrets", "").await
}

async fn git_repository() -> Option<DynamicObject> {
    object(
        "GitRepository",
        "gitrepositories",
        "source.toolkit.fluxcd.io",
    )
    .await
}

/// A value of the `flux-system` Secret, decoded.
async fn secret_value(key: &str) -> Option<String> {
    support::world::secret_value(cluster::cluster().client().await, key).await
}

/// `type base64` of the public key in the cluster's Secret (GitHub keeps no comment).
async fn key_in_cluster() -> String {
    support::world::key_in_cluster(cluster::cluster().client().await).await
}

fn keys_titled(w: &World, repo: &str, title: &str) -> Vec<support::fake_github::FakeKey> {
    w.gh.deploy_keys("username", repo)
        .into_iter()
        .filter(|k| k.title == title)
        .collect()
}

/// `METHOD path` of every GitHub write so far.
fn write_summary(w: &World) -> Vec<String> {
    w.gh.writes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// The run after a failure converges: exit 0, Flux Ready at the seeded commit, one key titled
/// after the context on GitHub.
fn assert_converges(w: &World) -> Run {
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
    assert_eq!(keys_titled(w, "manifests", &title()).len(), 1);
    r
}

/// Scenarios 1 and 2 of the issue: a fresh bootstrap reaches Ready at the seeded commit with a
/// read-only key titled after the context; a re-run changes nothing anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn fresh_bootstrap_then_an_idempotent_rerun() {
    let (_, _exclusive, w) = fresh("fresh").await;

    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let keys = w.gh.deploy_keys("username", "manifests");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].read_only);
    assert_eq!(keys[0].title, title());
    let sha = w.repo.seeded_commit().to_string();
    assert_has(&r, &ready_line(&sha));
    let cm = seeded_config_map(w.repo.name())
        .await
        .expect("the ConfigMap from the repository");
    assert_eq!(cm.data.unwrap()["revision"], "1");
    let repo = object(
        "GitRepository",
        "gitrepositories",
        "source.toolkit.fluxcd.io",
    )
    .await
    .unwrap();
    assert_eq!(repo.data["spec"]["url"], w.ssh.url(&w.repo));
    assert_eq!(repo.data["spec"]["interval"], "1m0s");

    let before = resource_versions().await;
    w.gh.clear_log();
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for what in [
        "Namespace `flux-system` unchanged",
        "Secret `flux-system/flux-system` unchanged",
        "GitRepository `flux-system/flux-system` unchanged",
        "Kustomization `flux-system/flux-system` unchanged",
    ] {
        assert_has(&r, what);
    }
    assert_eq!(
        resource_versions().await,
        before,
        "a re-run changes no object"
    );
    // The key GitHub still lists is not proven again over SSH: GitHub's branch head is enough.
    assert_has(&r, &format!("- `main` is at {}", &sha[..12]));
    assert!(!r.stderr.contains("proved the deploy key"), "{}", r.stderr);
    assert!(
        w.gh.writes().is_empty(),
        "a re-run writes nothing to GitHub: {:?}",
        w.gh.writes()
    );

    // `status` agrees.
    let r = w.run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains("deploy key: registered on GitHub"),
        "{}",
        r.stdout
    );
}

/// Scenario 3: the cluster was rebuilt (etcd wiped: no Secret, no Flux objects) while GitHub still
/// holds the old cluster's key. Real behaviour: after reinstalling a homelab, bootstrap runs again;
/// the private key died with the old Secret, so a new key is made and proven, and only then is the
/// old key of the same title deleted. Another cluster's key on the same repository is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuilt_cluster_gets_a_new_key_and_the_stale_one_goes_after_the_proof() {
    let (c, _exclusive, w) = fresh("rebuilt").await;
    let other = generate_ssh_key("other cluster");
    let other_title = "homelab-flux other-cluster";
    let other_id = w.gh.add_deploy_key(
        "username",
        "manifests",
        other_title,
        &other.public_key,
        true,
    );
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let old = keys_titled(&w, "manifests", &title());
    assert_eq!(old.len(), 1, "{old:?}");

    c.wipe();
    assert!(secret().await.is_none(), "the wipe keeps no Secret");
    assert!(git_repository().await.is_none());
    w.gh.clear_log();
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let deleted = format!(
        "- deleted the stale deploy key `{}` (id {})",
        title(),
        old[0].id
    );
    assert_has(&r, &deleted);
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
    let proved = r.stderr.find("- proved the deploy key over SSH").unwrap();
    assert!(
        proved < r.stderr.find(&deleted).unwrap(),
        "the stale key goes only after the proof:\n{}",
        r.stderr
    );
    assert_eq!(
        write_summary(&w),
        [
            "POST /repos/username/manifests/keys".to_string(),
            format!("DELETE /repos/username/manifests/keys/{}", old[0].id),
        ],
        "the new key is created before the stale one is deleted"
    );
    let now = keys_titled(&w, "manifests", &title());
    assert_eq!(now.len(), 1, "one key per title: {now:?}");
    assert_ne!(now[0].id, old[0].id);
    assert_eq!(now[0].key, key_in_cluster().await, "the key in the cluster");
    let others = keys_titled(&w, "manifests", other_title);
    assert_eq!(others.len(), 1, "{others:?}");
    assert_eq!(
        others[0].id, other_id,
        "another title's key is never touched"
    );
}

/// Scenario 4: the deploy key was deleted on GitHub, by hand or by GitHub itself when the token
/// that created it was deleted. Real behaviour: Flux's next fetch fails authentication; `status`
/// says the key is gone (exit 1); bootstrap makes a new key and Flux recovers at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_key_deleted_on_github_is_replaced_and_flux_recovers() {
    let (_, _exclusive, w) = fresh("keygone").await;
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let old = keys_titled(&w, "manifests", &title());
    assert_eq!(old.len(), 1);
    w.gh.remove_deploy_key(old[0].id);
    // Flux notices at its next fetch; ask for it now, as `flux reconcile source git` does.
    let handled = reconcile_git_repository().await;
    assert_eq!(
        handled.as_deref().and_then(ready_status),
        Some("False".to_string()),
        "Flux fails without the key: {handled:?}"
    );

    let r = w.run(&["status"]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert!(
        r.stdout.contains("deploy key: NOT registered on GitHub any more (deleted, or its token was deleted): run `homelab-flux bootstrap` to replace it\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("GitRepository flux-system/flux-system: not Ready (GitOperationFailed)"),
        "{}",
        r.stdout
    );

    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        &format!("- created the read-only deploy key `{}`", title()),
    );
    assert_has(&r, "- Secret `flux-system/flux-system` updated");
    assert_has(&r, "- GitRepository `flux-system/flux-system` unchanged");
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
    let now = keys_titled(&w, "manifests", &title());
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0].key, key_in_cluster().await);
    let r = w.run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(r.stdout.contains("deploy key: registered on GitHub\n"));
}

/// Asks source-controller to fetch now and waits until it has handled the request; returns the
/// GitRepository as it was then.
async fn reconcile_git_repository() -> Option<Box<DynamicObject>> {
    let client = cluster::cluster().client().await;
    Some(Box::new(
        support::world::reconcile_git_repository(client).await,
    ))
}

fn ready_status(o: &DynamicObject) -> Option<String> {
    support::world::condition_status(o, "Ready")
}

/// Scenario 5: `auth: token` over HTTPS, where the token itself is the password (GitHub accepts a
/// PAT as the password of any user name). Real behaviour: the cluster clones with the token;
/// after the token is replaced (the old one deleted on GitHub), bootstrap rewrites the Secret and
/// Flux fetches with the new token before bootstrap says Ready.
#[tokio::test(flavor = "multi_thread")]
async fn auth_token_over_https_then_a_new_token_rotates_the_secret() {
    let (_, _exclusive, w) = fresh("httptoken").await;
    let http = HttpGitServer::start("git", &w.token);
    let repo = http.create_repo("manifests-httptoken");
    w.gh.add_repo(
        RepoSpec::new("username", "manifests")
            .branch("main", repo.seeded_commit())
            .ssh_url(&w.ssh.url(&w.repo))
            .clone_url(&http.url(&repo)),
    );
    write_flux(
        w.dir.path(),
        "branch: main\npath: ./clusters/home\nauth: token\n",
    );
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, &ready_line(repo.seeded_commit()));
    assert!(
        w.gh.writes().is_empty(),
        "`auth: token` makes no deploy key"
    );
    let gr = git_repository().await.unwrap();
    assert_eq!(gr.data["spec"]["url"], http.url(&repo));
    assert_eq!(secret_value("username").await.as_deref(), Some("git"));
    assert!(secret_value("password").await.as_deref() == Some(w.token.as_str()));
    let before = gr.data["status"]["lastHandledReconcileAt"].clone();

    // A new token: the old one is deleted on GitHub, so the git server refuses it from now on.
    let new = token("httptokenrotated");
    w.gh.add_token(&new, TokenSpec::fine_grained("username"));
    w.gh.revoke_token(&w.token);
    http.set_password(&new);
    w.set_token(&new);
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "- Secret `flux-system/flux-system` updated");
    assert_has(&r, "- GitRepository `flux-system/flux-system` unchanged");
    assert_has(&r, &ready_line(repo.seeded_commit()));
    assert!(
        secret_value("password").await.as_deref() == Some(new.as_str()),
        "the Secret holds the new token"
    );
    // Regression: bootstrap used to call an already-Ready GitRepository done, so Flux had never
    // used the new token when it said Ready. Flux watches no Secrets: bootstrap must ask.
    let gr = git_repository().await.unwrap();
    assert_ne!(
        gr.data["status"]["lastHandledReconcileAt"], before,
        "Flux fetched again after the Secret changed"
    );
    assert_eq!(ready_status(&gr).as_deref(), Some("True"));
}

/// Scenario 6: flux.yaml now names another repository or path than the cluster follows. Real
/// behaviour: a typo or a copied config must not silently repoint a running cluster, so bootstrap
/// refuses and changes nothing; `--force` repoints it, with a new Secret for the new repository.
#[tokio::test(flavor = "multi_thread")]
async fn another_repository_or_path_is_refused_without_force_and_applied_with_it() {
    let (_, _exclusive, w) = fresh("movea").await;
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let repo_b = w.ssh.create_repo("manifests-moveb");
    w.gh.add_repo(
        RepoSpec::new("username", "manifests-two")
            .branch("main", repo_b.seeded_commit())
            .ssh_url(&w.ssh.url(&repo_b)),
    );
    let (url_a, url_b) = (w.ssh.url(&w.repo), w.ssh.url(&repo_b));
    let before = flux_state().await;
    let old_secret = secret().await.unwrap();
    w.gh.clear_log();

    // Another path.
    write_flux(w.dir.path(), "branch: main\npath: ./clusters/other\n");
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert!(
        r.stderr.ends_with("error: Kustomization `flux-system/flux-system` applies `./clusters/home`, not `./clusters/other`; nothing was changed. Run again with `--force` to point Flux at the new repository or path\n"),
        "{}",
        r.stderr
    );
    // Another repository.
    write_flux_for(
        w.dir.path(),
        "manifests-two",
        "branch: main\npath: ./clusters/home\n",
    );
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert!(
        r.stderr.ends_with(&format!("error: GitRepository `flux-system/flux-system` follows `{url_a}`, not `{url_b}`; nothing was changed. Run again with `--force` to point Flux at the new repository or path\n")),
        "{}",
        r.stderr
    );
    assert_eq!(flux_state().await, before, "nothing changed in the cluster");
    assert!(w.gh.writes().is_empty(), "{:?}", write_summary(&w));

    let r = w.bootstrap(&["--force"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        "- Secret `flux-system/flux-system` deleted, to be replaced",
    );
    assert_has(&r, "- Secret `flux-system/flux-system` created");
    assert_has(&r, "- GitRepository `flux-system/flux-system` updated");
    assert_has(&r, &ready_line(repo_b.seeded_commit()));
    let new_secret = secret().await.unwrap();
    assert_ne!(
        new_secret.metadata.uid, old_secret.metadata.uid,
        "the old Secret was replaced"
    );
    let keys = keys_titled(&w, "manifests-two", &title());
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(
        keys[0].key,
        key_in_cluster().await,
        "a key of the new repository"
    );
    assert_eq!(git_repository().await.unwrap().data["spec"]["url"], url_b);
    assert!(seeded_config_map(repo_b.name()).await.is_some());
}

/// Scenario 7: the API server goes away, before the run and in the middle of the wait. Real
/// behaviour: a control-plane node rebooting or a VPN dropping; bootstrap stops with a clear
/// message and exit 2 (could not run), and the next run, once the server is back, converges.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_stopped_before_or_during_a_bootstrap() {
    let (c, _exclusive, w) = fresh("apidown").await;
    // The cause in parentheses is the innermost error: refused before the run, reset (or
    // refused) when the server goes away under an open watch.
    let unreachable = format!(
        "error: cannot reach the Kubernetes API server at {}/ (Connection refused (os error 111)); is the cluster up, and is `--context` right?",
        c.server_url()
    );
    let unreachable_prefix = format!(
        "error: cannot reach the Kubernetes API server at {}/ (",
        c.server_url()
    );

    // Stopped before the run: nothing is created on GitHub either (the cluster is checked first).
    c.stop_api_server();
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_has(&r, &unreachable);
    assert!(w.gh.writes().is_empty(), "{:?}", write_summary(&w));
    let r = w.run(&["status"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_has(&r, &unreachable);
    c.start_api_server();

    // Stopped during the wait: the controllers are stopped so that the wait cannot end first,
    // and the server is stopped once the run says it is waiting (its first progress line comes
    // from the watch it opened), not when the objects merely show up in the API: the run may
    // not have read the answer to its own apply by then. The dropped watch is resumed until
    // the deadline (a restart would be survived), so the deadline is short here.
    c.stop_flux();
    let run = w.spawn(&["bootstrap", "--timeout", "30s"]);
    assert!(
        run.wait_for_stderr(WAITING_LINE, Duration::from_secs(240)),
        "the run ended before it waited"
    );
    c.stop_api_server();
    let r = w.finish(run, &["bootstrap"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_has(&r, "- Kustomization `flux-system/flux-system` created");
    assert_has(&r, &unreachable_prefix);
    assert_has(&r, "); is the cluster up, and is `--context` right?");

    c.start_api_server();
    c.start_flux();
    let r = assert_converges(&w);
    assert_has(
        &r,
        "the deploy key in the cluster is still registered on GitHub",
    );
}

/// Scenario 8: what fails before the cluster is touched. Real behaviours: a branch that does not
/// exist; a branch GitHub lists but the git server lacks (the API and git disagree, e.g. a
/// branch just deleted); a repository that does not exist or the token cannot see; a key the SSH
/// server refuses. Each ends with a clear message and exit 1, no Flux object created or changed,
/// and no key left behind on GitHub.
#[tokio::test(flavor = "multi_thread")]
async fn failures_before_the_cluster_is_touched_leave_it_and_github_clean() {
    let (c, _exclusive, w) = fresh("nobranch").await;
    let before = flux_state().await;
    assert_eq!(before[1..], [None, None, None]);

    // A branch missing everywhere: GitHub says so.
    write_flux(w.dir.path(), "branch: nope\npath: ./clusters/home\n");
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert_has(
        &r,
        "error[HF108]: branch `nope` not found in `username/manifests`\n--> config/flux.yaml\n = hint: the default branch is `main`: set `branch: main`, or push the branch `nope` first\n",
    );
    assert!(
        r.stderr
            .ends_with("error: the configuration is not valid: 1 error\n")
    );
    assert!(w.gh.writes().is_empty(), "{:?}", write_summary(&w));

    // A branch GitHub lists that the git server lacks: the key is made, fails its proof, and is
    // deleted again.
    let w = World::new("gitlacks", "./clusters/home", c.kubeconfig_path());
    w.gh.set_branch("username", "manifests", "release", w.repo.seeded_commit());
    write_flux(w.dir.path(), "branch: release\npath: ./clusters/home\n");
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert!(
        r.stderr.ends_with(&format!(
            "error: the branch `release` does not exist in {}; the cluster was not changed\n",
            w.ssh.url(&w.repo)
        )),
        "{}",
        r.stderr
    );
    assert_eq!(w.gh.deploy_keys("username", "manifests"), []);
    assert_eq!(write_summary(&w).len(), 2, "{:?}", write_summary(&w));

    // A repository that does not exist (or that the token cannot see).
    let w = World::new("norepo", "./clusters/home", c.kubeconfig_path());
    write_flux_for(
        w.dir.path(),
        "missing",
        "branch: main\npath: ./clusters/home\n",
    );
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert_has(
        &r,
        "error[HF105]: repository `username/missing` not found, or the token cannot see it\n--> config/flux.yaml\n = hint: check the spelling of `username/missing`; that the token's resource owner is `username`; and that its repository access includes this repository\n",
    );
    assert!(w.gh.writes().is_empty(), "{:?}", write_summary(&w));

    // A key the SSH server never sees: GitHub takes it, the server refuses it.
    let w = World::new("refused", "./clusters/home", c.kubeconfig_path());
    let elsewhere = tempfile::tempdir().unwrap();
    w.gh.set_authorized_keys_file(elsewhere.path().join("authorized_keys"));
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert!(
        r.stderr.ends_with(&format!(
            "error: the deploy key was refused by {}: GitHub does not (or not yet) accept it for this repository; the cluster was not changed\n",
            w.ssh.url(&w.repo)
        )),
        "{}",
        r.stderr
    );
    assert_eq!(w.gh.deploy_keys("username", "manifests"), []);
    let writes = write_summary(&w);
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes[0].starts_with("POST ") && writes[1].starts_with("DELETE "));

    assert_eq!(
        flux_state().await,
        before,
        "no Flux object created or changed"
    );
}

/// Scenario 9: a cluster without Flux, installed from `--flux-manifests FILE` (an air-gapped
/// homelab, or a pinned copy of Flux's install.yaml). Real behaviour: CRDs and the Namespace are
/// applied first and waited for, then the bootstrap goes on. The controllers here are processes
/// rather than the file's Deployments, so they are started once the CRDs exist.
#[tokio::test(flavor = "multi_thread")]
async fn flux_is_installed_from_a_manifests_file_when_its_crds_are_missing() {
    let (c, _exclusive, w) = fresh("install").await;
    // A cluster without Flux's CRDs (the controllers, being processes here, are started once the
    // CRDs exist).
    c.stop_flux();
    c.delete_crds();
    // Labelled with its Flux release, as Flux's `install.yaml` labels every object.
    let mut manifests = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n  labels:\n    app.kubernetes.io/version: {}\n",
        cluster::FLUX_RELEASE
    );
    let crds = cluster::testenv_dir().join("crds");
    let mut files: Vec<_> = std::fs::read_dir(&crds)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        manifests.push_str("---\n");
        manifests.push_str(&std::fs::read_to_string(f).unwrap());
    }
    let file = w.dir.path().join("install.yaml");
    std::fs::write(&file, manifests).unwrap();
    let file = file.to_str().unwrap();

    // The plan first. Regression: a dry run read and dry-ran objects whose CRDs it had not
    // really installed, and failed with exit 2 (`404 page not found`).
    let r = w.bootstrap(&["--flux-manifests", file, "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    for line in [
        format!(
            "- (dry run) installed Flux from `{file}` ({} objects)",
            files.len() + 1
        ),
        "- (dry run) Namespace `flux-system` unchanged".to_string(),
        "- (dry run) Secret `flux-system/flux-system` would be written with the new deploy key"
            .to_string(),
        "- (dry run) GitRepository `flux-system/flux-system` would be created".to_string(),
        "- (dry run) Kustomization `flux-system/flux-system` would be created".to_string(),
    ] {
        assert_has(&r, &line);
    }
    assert!(w.gh.writes().is_empty(), "{:?}", write_summary(&w));
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(c.client().await);
    assert!(
        crds.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "a dry run installs no CRD"
    );

    let r = w.bootstrap(&["--flux-manifests", file, "--no-wait"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        &format!(
            "- installed Flux from `{file}` ({} objects)",
            files.len() + 1
        ),
    );
    assert_has(&r, "- Namespace `flux-system` unchanged");
    assert_has(&r, "- GitRepository `flux-system/flux-system` created");
    assert_has(&r, "- Kustomization `flux-system/flux-system` created");

    c.start_flux();
    let r = w.bootstrap(&["--flux-manifests", file]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(!r.stderr.contains("installed Flux"), "installed once");
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
}

/// Scenario 10: `--dry-run`. Real behaviour: a careful user looks before letting a tool touch
/// the cluster and GitHub; the plan is printed, the API server checks every write without
/// keeping it, and GitHub gets no write.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_prints_the_plan_and_writes_nothing() {
    let (c, _exclusive, w) = fresh("dryrun").await;
    let before = flux_state().await;
    let r = w.bootstrap(&["--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    for line in [
        format!(
            "- (dry run) would create the read-only deploy key `{}` on GitHub",
            title()
        ),
        "- (dry run) Namespace `flux-system` unchanged".to_string(),
        "- (dry run) Secret `flux-system/flux-system` would be written with the new deploy key"
            .to_string(),
        "- (dry run) GitRepository `flux-system/flux-system` would be created".to_string(),
        "- (dry run) Kustomization `flux-system/flux-system` would be created".to_string(),
    ] {
        assert_has(&r, &line);
    }
    assert!(w.gh.writes().is_empty(), "{:?}", write_summary(&w));
    assert_eq!(w.gh.deploy_keys("username", "manifests"), []);
    assert_eq!(flux_state().await, before, "no object created");

    // A rebuilt cluster, not even the Namespace left, and so no Flux (its Deployments live in
    // that Namespace): the plan installs Flux too. Regression: the dry-run applies of the
    // objects in it failed on the Namespace that the dry run had not really created.
    c.stop_flux();
    c.wipe();
    let before = flux_state().await;
    assert_eq!(before, [None, None, None, None]);
    let manifests = w.dir.path().join("install.yaml");
    let (text, count) = cluster::flux_manifests();
    std::fs::write(&manifests, text).unwrap();
    let manifests = manifests.to_str().unwrap();
    let r = w.bootstrap(&["--dry-run", "--flux-manifests", manifests]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    for line in [
        format!("- (dry run) installed Flux from `{manifests}` ({count} objects)"),
        format!(
            "- (dry run) would create the read-only deploy key `{}` on GitHub",
            title()
        ),
        "- (dry run) Namespace `flux-system` would be created".to_string(),
        "- (dry run) Secret `flux-system/flux-system` would be written with the new deploy key"
            .to_string(),
        "- (dry run) GitRepository `flux-system/flux-system` would be created".to_string(),
        "- (dry run) Kustomization `flux-system/flux-system` would be created".to_string(),
    ] {
        assert_has(&r, &line);
    }
    assert!(w.gh.writes().is_empty(), "{:?}", write_summary(&w));
    assert_eq!(w.gh.deploy_keys("username", "manifests"), []);
    assert_eq!(flux_state().await, before, "no object created");
}

/// SPEC §7 reliability, an interrupted bootstrap: Ctrl-C while it waits for Flux. Real
/// behaviour: a user gives up on a slow sync, or closes the terminal; the run stops with a
/// message that says what to do, and the next run converges with one key per title.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_bootstrap_says_so_and_the_next_run_converges() {
    let (c, _exclusive, w) = fresh("interrupted").await;
    c.stop_flux(); // so that the wait cannot end before the interrupt
    let args = ["bootstrap", "--timeout", "150s"];
    let run = w.spawn(&args);
    // Into the wait: its first progress line comes from the watch it opened.
    assert!(
        run.wait_for_stderr(WAITING_LINE, Duration::from_secs(240)),
        "the run ended before it waited"
    );
    let killed = std::process::Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let r = w.finish(run, &args);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr.ends_with("\nerror: interrupted; run `homelab-flux bootstrap` again: it finishes what this run started\n"),
        "{}",
        r.stderr
    );

    c.start_flux();
    assert_converges(&w);
}

/// SPEC §7 reliability, GitHub failing: a burst of 502s (GitHub's "Server Error" under load) is
/// retried and the run succeeds; an exhausted rate limit stops the run before the cluster or
/// GitHub is changed, and once it resets the next run converges.
#[tokio::test(flavor = "multi_thread")]
async fn github_errors_are_retried_or_stop_the_run_cleanly() {
    let (_, _exclusive, w) = fresh("ghfail").await;
    let before = flux_state().await;

    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1800;
    w.gh.set_primary_rate_limit(Some((403, reset)));
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    let at = jiff::Timestamp::from_second(reset as i64)
        .unwrap()
        .strftime("%Y-%m-%d %H:%M:%S UTC");
    assert!(
        r.stderr.ends_with(&format!("error: cannot check the configuration against GitHub: GET /user: GitHub API rate limit exhausted; it resets at {at}\n")),
        "{}",
        r.stderr
    );
    assert_eq!(flux_state().await, before, "the cluster was not touched");
    assert!(w.gh.writes().is_empty(), "{:?}", write_summary(&w));

    w.gh.set_primary_rate_limit(None);
    w.gh.fail_next(2, 502);
    assert_converges(&w);
}

/// Scenario 10, continued: the plan of a dry run on a bootstrapped cluster names each field that
/// would change, old → new, and the keys that would be created or deleted; `--format json`
/// gives the same steps as one JSON object per line on stdout. Real behaviour: a user who moves
/// the Kustomization to another path looks at exactly what `--force` would rewrite first.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_shows_each_field_old_to_new_and_json_gives_the_steps() {
    let (_, _exclusive, w) = fresh("plan").await;
    let r = w.bootstrap(&["--no-wait"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let key = w.gh.deploy_keys("username", "manifests");
    assert_eq!(key.len(), 1, "{key:?}");

    write_flux(w.dir.path(), "branch: main\npath: ./clusters/other\n");
    let before = resource_versions().await;
    w.gh.clear_log();
    let r = w.bootstrap(&["--dry-run", "--force"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    for line in [
        "- (dry run) Kustomization `flux-system/flux-system` would be updated".to_string(),
        "    spec.path: ./clusters/home → ./clusters/other\n".to_string(),
        "- (dry run) GitRepository `flux-system/flux-system` unchanged".to_string(),
        "- (dry run) Secret `flux-system/flux-system` deleted, to be replaced".to_string(),
        format!(
            "- (dry run) would create the read-only deploy key `{}` on GitHub",
            title()
        ),
        format!(
            "- (dry run) would delete the stale deploy key `{}` (id {})",
            title(),
            key[0].id
        ),
    ] {
        assert_has(&r, &line);
    }
    assert_eq!(
        resource_versions().await,
        before,
        "a dry run changes no object"
    );
    assert!(w.gh.writes().is_empty(), "{:?}", write_summary(&w));

    // The same plan as JSON lines, each a complete document.
    let r = w.bootstrap(&["--dry-run", "--force", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let steps = crate::support::cli::json_lines(&r);
    let ks = steps
        .iter()
        .find(|s| s["step"] == "applied" && s["kind"] == "Kustomization")
        .unwrap_or_else(|| panic!("no Kustomization step in {steps:?}"));
    assert_eq!(ks["change"], "update");
    assert_eq!(
        ks["fields"],
        serde_json::json!([{"field": "spec.path", "old": "./clusters/home", "new": "./clusters/other"}])
    );
    assert_eq!(ks["dry_run"], true);
    assert!(ks["ms"].is_u64(), "{ks}");
    assert!(
        steps
            .iter()
            .any(|s| s["step"] == "stale_key_to_delete" && s["id"] == key[0].id),
        "{steps:?}"
    );
    assert!(
        !r.stderr.contains("- (dry run)"),
        "steps go to stdout only:\n{}",
        r.stderr
    );
    assert!(w.gh.writes().is_empty(), "{:?}", write_summary(&w));
}
