//! `homelab-flux uninstall` (SPEC §4b) on the shared test cluster: what Flux applied stays,
//! Flux goes, only this cluster's key is deleted on GitHub, a second run has nothing to do, and
//! `bootstrap` afterwards converges. The test holds the cluster exclusively and puts Flux back.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::runtime::wait::await_condition;

use crate::support::cli::assert_has;
use crate::support::cluster;
use crate::support::git_server::SEED_CONFIG_MAP;
use crate::support::world::{self, World, ready_line};

const WORKLOAD: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: homelab-app\n  namespace: default\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {app: homelab-app}\n  template:\n    metadata:\n      labels: {app: homelab-app}\n    spec:\n      containers:\n      - name: app\n        image: registry.invalid/app:1\n";

/// resourceVersions of the Flux CRDs and the controllers' Deployments: a write moves one.
async fn flux_versions(client: &kube::Client) -> Vec<Option<String>> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "flux-system");
    let mut out = Vec::new();
    for name in [
        "gitrepositories.source.toolkit.fluxcd.io",
        "kustomizations.kustomize.toolkit.fluxcd.io",
    ] {
        out.push(
            crds.get_opt(name)
                .await
                .unwrap()
                .and_then(|c| c.metadata.resource_version),
        );
    }
    for name in ["source-controller", "kustomize-controller"] {
        out.push(
            deployments
                .get_opt(name)
                .await
                .unwrap()
                .and_then(|d| d.metadata.resource_version),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn uninstall_removes_flux_keeps_what_it_applied_and_only_this_clusters_key() {
    let a = cluster::cluster();
    let _exclusive = a.exclusive().await;
    world::reset(a).await;
    let client = a.client().await;
    let w = World::new("uninstall", "./clusters/home", a.kubeconfig_path());
    let sha = w
        .repo
        .commit(&[("clusters/home/app.yaml", WORKLOAD)], "a workload");
    w.gh.set_branch("username", "manifests", "main", &sha);
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, &ready_line(&sha));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    assert!(deployments.get_opt("homelab-app").await.unwrap().is_some());
    // A second cluster's key on the same repository.
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDZ0b3RoZXJjbHVzdGVyc2tleW9uZ2l0aHViMDAw";
    w.gh.add_deploy_key("username", "manifests", "another cluster", other, true);
    let keys_before = w.gh.deploy_keys("username", "manifests");
    assert_eq!(keys_before.len(), 2, "{keys_before:?}");

    // Without a terminal and without `--yes`: exit 2, naming `--yes`, nothing written.
    let before = flux_versions(&client).await;
    w.gh.clear_log();
    let r = w.run(&["uninstall"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_has(&r, "--yes");
    // A dry run: the plan, and no write anywhere.
    let r = w.run(&["uninstall", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "(dry run) uninstall removes:");
    assert_has(&r, "Kustomization flux-system/flux-system");
    assert_has(&r, "Namespace flux-system");
    assert!(w.gh.writes().is_empty(), "{:?}", w.gh.writes());
    assert_eq!(
        flux_versions(&client).await,
        before,
        "a dry run writes nothing"
    );

    // The uninstall.
    let r = w.run(&["uninstall", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "removed the finalizers of");
    assert_has(&r, "deleted this cluster's deploy key");
    let keys: Vec<_> = w.gh.deploy_keys("username", "manifests");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].title, "another cluster");
    // What Flux applied stays (the Kustomization is gone: nothing can prune it any more).
    let ks = world::flux_api(client.clone(), "Kustomization");
    assert!(ks.get_opt("flux-system").await.is_err_or_none());
    assert!(deployments.get_opt("homelab-app").await.unwrap().is_some());
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), w.repo.name());
    assert!(
        config_maps
            .get_opt(SEED_CONFIG_MAP)
            .await
            .unwrap()
            .is_some()
    );
    // Flux is gone: the controllers' Deployments, the CRDs (waited for: the API server deletes
    // them after their objects), the Namespace being deleted.
    let flux_deployments: Api<Deployment> = Api::namespaced(client.clone(), "flux-system");
    for name in ["source-controller", "kustomize-controller"] {
        let d = flux_deployments.get_opt(name).await.unwrap();
        assert!(
            d.is_none_or(|d| d.metadata.deletion_timestamp.is_some()),
            "{name}"
        );
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        "gitrepositories.source.toolkit.fluxcd.io",
        "kustomizations.kustomize.toolkit.fluxcd.io",
    ] {
        let gone = await_condition(
            crds.clone(),
            name,
            |c: Option<&CustomResourceDefinition>| c.is_none(),
        );
        tokio::time::timeout(Duration::from_secs(60), gone)
            .await
            .unwrap_or_else(|_| panic!("the CRD `{name}` is deleted"))
            .unwrap();
    }
    // The namespace controller (kube-controller-manager) finishes the Namespace's deletion.
    let ns: Api<Namespace> = Api::all(client.clone());
    let gone = await_condition(ns, "flux-system", |n: Option<&Namespace>| n.is_none());
    tokio::time::timeout(Duration::from_secs(120), gone)
        .await
        .expect("the Namespace `flux-system` is gone")
        .unwrap();

    // A second run has nothing to remove.
    w.gh.clear_log();
    let r = w.run(&["uninstall", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "nothing to remove");
    assert!(w.gh.writes().is_empty(), "{:?}", w.gh.writes());

    // `bootstrap` afterwards works as on a fresh cluster (the CRDs and controllers put back as
    // the test env has them).
    a.install_crds();
    a.start_flux();
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, &ready_line(&sha));
    assert_eq!(w.gh.deploy_keys("username", "manifests").len(), 2);
    world::reset(a).await;
}

/// `ssh-keygen -lf`'s `SHA256:…` fingerprint of an OpenSSH public key line: an outside check
/// of the fingerprint the tool names.
fn ssh_keygen_fingerprint(public: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pub");
    std::fs::write(&path, format!("{public}\n")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&path)
        .output()
        .expect("ssh-keygen runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .expect("a fingerprint")
        .to_string()
}

/// Without a token (the secrets file gone), `--keep-namespace` and `--format json`: the plan and
/// the steps are JSON lines, this cluster's key is named for deleting by hand (and left alone on
/// GitHub), the Namespace stays while the bootstrap's Secret goes, and `bootstrap` afterwards
/// makes a new key and removes the old one of this cluster's title.
#[tokio::test(flavor = "multi_thread")]
async fn uninstall_without_a_token_keeps_the_namespace_and_names_the_key_as_json() {
    let a = cluster::cluster();
    let _exclusive = a.exclusive().await;
    world::reset(a).await;
    let client = a.client().await;
    let w = World::new("uninstall-json", "./clusters/home", a.kubeconfig_path());
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let keys = w.gh.deploy_keys("username", "manifests");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let fingerprint = ssh_keygen_fingerprint(&keys[0].key);

    let secrets = w.dir.path().join("config/secrets-flux.yaml");
    std::fs::remove_file(&secrets).unwrap();
    w.gh.clear_log();
    let r = w.run(&["uninstall", "--yes", "--keep-namespace", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let steps = crate::support::cli::json_lines(&r);
    let plan = steps
        .iter()
        .find(|s| s["step"] == "to_remove")
        .unwrap_or_else(|| panic!("no plan in {steps:?}"));
    let what: Vec<&str> = plan["what"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        what.contains(&format!("(by hand) the deploy key {fingerprint} on GitHub").as_str()),
        "{what:?}"
    );
    assert!(what.contains(&"Secret flux-system/flux-system"), "{what:?}");
    assert!(
        !what.iter().any(|w| w.starts_with("Namespace")),
        "--keep-namespace: {what:?}"
    );
    assert_eq!(plan["dry_run"], false);
    assert!(
        steps.iter().any(|s| s["step"] == "key_by_hand"
            && s["fingerprint"] == fingerprint.as_str()
            && s["reason"] == "no_token"),
        "{steps:?}"
    );
    assert!(
        !steps.iter().any(|s| s["step"] == "key_deleted"),
        "{steps:?}"
    );
    // Nothing was asked of GitHub without a token, and the key is still there.
    assert!(w.gh.requests().is_empty(), "{:?}", w.gh.requests());
    assert_eq!(w.gh.deploy_keys("username", "manifests"), keys);
    // The Namespace stays (not being deleted); the Secret that held the key is gone.
    let ns: Api<Namespace> = Api::all(client.clone());
    let namespace = ns.get("flux-system").await.unwrap();
    assert!(namespace.metadata.deletion_timestamp.is_none());
    let secrets_api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "flux-system");
    assert!(secrets_api.get_opt("flux-system").await.unwrap().is_none());
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let gone = await_condition(
        crds,
        "gitrepositories.source.toolkit.fluxcd.io",
        |c: Option<&CustomResourceDefinition>| c.is_none(),
    );
    tokio::time::timeout(Duration::from_secs(60), gone)
        .await
        .expect("the CRD is deleted")
        .unwrap();

    // With the token back, bootstrap converges: a new key, the old one of this title removed.
    crate::support::cli::write_secrets(&secrets, &format!("token: {}\n", w.token));
    a.install_crds();
    a.start_flux();
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let after = w.gh.deploy_keys("username", "manifests");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].key, keys[0].key, "a new key");
    assert_eq!(after[0].title, keys[0].title);
    world::reset(a).await;
}

trait ErrOrNone {
    fn is_err_or_none(&self) -> bool;
}

impl<T, E> ErrOrNone for Result<Option<T>, E> {
    /// Gone: absent, or its kind no longer served.
    fn is_err_or_none(&self) -> bool {
        !matches!(self, Ok(Some(_)))
    }
}

/// A cluster that cannot be reached: exit 2 with the message the other commands give, no
/// configuration needed, and the canary token (in the environment) never shown.
#[test]
fn an_unreachable_cluster_is_exit_2_with_the_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = cluster::free_port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: gone\n  context: {{cluster: gone, user: gone}}\ncurrent-context: gone\nusers:\n- name: gone\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let token = crate::support::cli::canary_token();
    let mut cmd = crate::support::cli::command(dir.path());
    cmd.args(["-vv", "uninstall", "--yes", "--kubeconfig"])
        .arg(&kubeconfig)
        .env("HOMELAB_FLUX_TOKEN", &token);
    let r = crate::support::cli::run(cmd);
    crate::support::cli::assert_no_leak(&token, &r.transcript(), "uninstall");
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_has(
        &r,
        &format!("error: cannot reach the Kubernetes API server at http://127.0.0.1:{port}/ ("),
    );
}
