//! Proves the test environment is real, without any homelab-flux code: the API server is the
//! Kubernetes version we claim, the Flux CRDs are served, Flux's own controllers clone from
//! the SSH and HTTP git servers and apply what they find, and Deployments roll out onto the fake
//! Node (or show `ImagePullBackOff` for an image that cannot be pulled). If these fail, every end-to-end test
//! built on `tests/it/support` would fail for reasons that are not the tool's.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use support::cluster::{self, CONTEXT, FLUX_CRDS};
use support::git_server::{self, GitRepo, HttpGitServer, SEED_CONFIG_MAP, SshGitServer};

const FIELD_MANAGER: &str = "homelab-flux-environment-test";
/// Namespace of the Flux objects the tests create.
const FLUX_NAMESPACE: &str = "flux-system";
/// Long enough for a first clone on a busy 2-core machine, short of hiding a hang.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(90);

fn git_repository_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "GitRepository"),
        "gitrepositories",
    )
}

fn kustomization_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        "kustomizations",
    )
}

async fn apply_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&namespace),
    )
    .await
    .expect("applying namespace");
}

async fn apply_secret(client: &kube::Client, name: &str, data: &[(&str, &str)]) {
    let api: Api<Secret> = Api::namespaced(client.clone(), FLUX_NAMESPACE);
    let data: BTreeMap<String, ByteString> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .expect("applying secret");
}

async fn apply_dynamic(client: &kube::Client, resource: &ApiResource, object: Value) {
    let name = object["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
        .to_owned();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), FLUX_NAMESPACE, resource);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|err| panic!("applying {} `{name}`: {err}", resource.kind));
}

async fn apply_git_repository(client: &kube::Client, name: &str, url: &str, secret: &str) {
    let object = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": FLUX_NAMESPACE},
        "spec": {
            "url": url,
            "ref": {"branch": "main"},
            "interval": "2s",
            "timeout": "20s",
            "secretRef": {"name": secret},
        },
    });
    apply_dynamic(client, &git_repository_resource(), object).await;
}

fn condition<'a>(object: &'a DynamicObject, type_: &str) -> Option<&'a Value> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == type_)
}

/// Polls a Flux object until `done` holds; the timeout message shows its status and the
/// controller's log.
async fn wait_for(
    client: &kube::Client,
    resource: &ApiResource,
    name: &str,
    what: &str,
    done: impl Fn(&DynamicObject) -> bool,
) -> DynamicObject {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), FLUX_NAMESPACE, resource);
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < RECONCILE_TIMEOUT {
        if let Some(object) = api.get_opt(name).await.expect("reading Flux object") {
            if done(&object) {
                return object;
            }
            last = Some(object);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = last
        .map(|object| object.data["status"].to_string())
        .unwrap_or_default();
    let controller = if resource.group.starts_with("source") {
        "source-controller"
    } else {
        "kustomize-controller"
    };
    panic!(
        "{} `{name}` not {what} after {RECONCILE_TIMEOUT:?}; status: {status}\n{controller} log:\n{}",
        resource.kind,
        cluster::cluster().log_tail(controller, 30)
    );
}

fn is_ready(object: &DynamicObject) -> bool {
    condition(object, "Ready").is_some_and(|c| c["status"] == "True")
}

/// Ready with an artifact, in a status written for the object's current generation. A status
/// patch can show Ready before the artifact it describes (seen on a loaded machine: Ready with an
/// empty revision), so "done" is the artifact, and the test then checks which revision it is.
fn has_ready_artifact(object: &DynamicObject) -> bool {
    let observed = object.data["status"]["observedGeneration"].as_i64();
    is_ready(object)
        && observed.is_some()
        && observed == object.metadata.generation
        && !revision(object).is_empty()
}

fn revision(object: &DynamicObject) -> String {
    object.data["status"]["artifact"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A GitRepository over SSH with a key the server authorizes; returns the repo and the server.
async fn ssh_git_repository(client: &kube::Client, name: &str) -> (SshGitServer, GitRepo) {
    let server = SshGitServer::start();
    let repo = server.create_repo(&format!("seed-{name}"));
    let key = git_server::generate_ssh_key(name);
    server.add_authorized_key(&key.public_key);
    apply_secret(
        client,
        name,
        &[
            ("identity", &key.private_key),
            ("identity.pub", &key.public_key),
            ("known_hosts", &server.known_hosts_line()),
        ],
    )
    .await;
    apply_git_repository(client, name, &server.url(&repo), name).await;
    (server, repo)
}

async fn flux_client() -> kube::Client {
    let cluster = cluster::cluster();
    cluster.start_flux();
    let client = cluster.client().await;
    apply_namespace(&client, FLUX_NAMESPACE).await;
    client
}

#[tokio::test]
async fn api_server_reports_kubernetes_1_36() {
    let cluster = cluster::cluster();
    let _shared = cluster.shared().await;
    assert_eq!(cluster.context(), CONTEXT);
    let version = cluster
        .client()
        .await
        .apiserver_version()
        .await
        .expect("GET /version");
    assert!(
        version.git_version.starts_with("v1.36."),
        "/version says {version:?}"
    );
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "36")
    );
}

#[tokio::test]
async fn the_seven_flux_crds_are_established() {
    let cluster = cluster::cluster();
    let _shared = cluster.shared().await;
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client().await);
    for name in FLUX_CRDS {
        let crd = api
            .get(name)
            .await
            .unwrap_or_else(|err| panic!("CRD `{name}`: {err}"));
        let established = crd
            .status
            .and_then(|status| status.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "CRD `{name}` is not Established");
    }
}

#[tokio::test]
async fn git_repository_over_ssh_becomes_ready_at_the_seeded_commit() {
    let _shared = cluster::cluster().shared().await;
    let client = flux_client().await;
    let (_server, repo) = ssh_git_repository(&client, "env-ssh").await;
    let object = wait_for(
        &client,
        &git_repository_resource(),
        "env-ssh",
        "Ready with an artifact",
        has_ready_artifact,
    )
    .await;
    assert_eq!(
        revision(&object),
        format!("main@sha1:{}", repo.seeded_commit())
    );
}

#[tokio::test]
async fn git_repository_over_http_basic_auth_becomes_ready_at_the_seeded_commit() {
    let _shared = cluster::cluster().shared().await;
    let client = flux_client().await;
    let server = HttpGitServer::start("git", "first-token");
    let repo = server.create_repo("seed-env-http");
    // The token changes before Flux ever sees it: the server takes the new one.
    server.set_password("token-2");
    apply_secret(
        &client,
        "env-http",
        &[("username", "git"), ("password", "token-2")],
    )
    .await;
    apply_git_repository(&client, "env-http", &server.url(&repo), "env-http").await;
    let object = wait_for(
        &client,
        &git_repository_resource(),
        "env-http",
        "Ready with an artifact",
        has_ready_artifact,
    )
    .await;
    assert_eq!(
        revision(&object),
        format!("main@sha1:{}", repo.seeded_commit())
    );
}

#[tokio::test]
async fn git_repository_over_ssh_with_an_unknown_key_fails_authentication() {
    let _shared = cluster::cluster().shared().await;
    let client = flux_client().await;
    let server = SshGitServer::start();
    let repo = server.create_repo("seed-env-wrong-key");
    let authorized = git_server::generate_ssh_key("authorized");
    let presented = git_server::generate_ssh_key("presented");
    server.add_authorized_key(&authorized.public_key);
    apply_secret(
        &client,
        "env-wrong-key",
        &[
            ("identity", &presented.private_key),
            ("identity.pub", &presented.public_key),
            ("known_hosts", &server.known_hosts_line()),
        ],
    )
    .await;
    apply_git_repository(
        &client,
        "env-wrong-key",
        &server.url(&repo),
        "env-wrong-key",
    )
    .await;
    let object = wait_for(
        &client,
        &git_repository_resource(),
        "env-wrong-key",
        "failed",
        |object| condition(object, "Ready").is_some_and(|c| c["status"] == "False"),
    )
    .await;
    let ready = condition(&object, "Ready").expect("Ready condition");
    assert_eq!(ready["reason"], "GitOperationFailed", "{ready}");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(message.contains("unable to authenticate"), "{message}");
    assert!(!message.contains("timeout"), "{message}");
}

#[tokio::test]
async fn kustomization_applies_clusters_home_and_follows_new_commits() {
    let _shared = cluster::cluster().shared().await;
    let client = flux_client().await;
    let created = Instant::now();
    let (_server, repo) = ssh_git_repository(&client, "env-kustomize").await;
    let kustomization = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "env-kustomize", "namespace": FLUX_NAMESPACE},
        "spec": {
            "interval": "1m",
            "path": "./clusters/home",
            "prune": true,
            "sourceRef": {"kind": "GitRepository", "name": "env-kustomize"},
        },
    });
    apply_dynamic(&client, &kustomization_resource(), kustomization).await;

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), repo.name());
    let data = |revision: &'static str| {
        let config_maps = config_maps.clone();
        async move {
            let start = Instant::now();
            while start.elapsed() < RECONCILE_TIMEOUT {
                if let Ok(Some(map)) = config_maps.get_opt(SEED_CONFIG_MAP).await {
                    let data = map.data.unwrap_or_default();
                    if data.get("revision").map(String::as_str) == Some(revision) {
                        return data;
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let object = Api::<DynamicObject>::namespaced_with(
                config_maps.clone().into_client(),
                FLUX_NAMESPACE,
                &kustomization_resource(),
            )
            .get_opt("env-kustomize")
            .await;
            panic!(
                "ConfigMap `{SEED_CONFIG_MAP}` never had revision {revision}; Kustomization: {:?}\n\
                 kustomize-controller log:\n{}",
                object.map(|o| o.map(|o| o.data["status"].to_string())),
                cluster::cluster().log_tail("kustomize-controller", 30)
            );
        }
    };

    let seeded = data("1").await;
    assert_eq!(seeded.get("repo").map(String::as_str), Some(repo.name()));
    eprintln!(
        "GitRepository created to ConfigMap applied: {:.1?}",
        created.elapsed()
    );

    let pushed = Instant::now();
    let commit = repo.commit_config_map_revision("2");
    data("2").await;
    eprintln!(
        "commit pushed to ConfigMap changed: {:.1?}",
        pushed.elapsed()
    );
    let object = wait_for(
        &client,
        &kustomization_resource(),
        "env-kustomize",
        "Ready at the new commit",
        |o| o.data["status"]["lastAppliedRevision"] == format!("main@sha1:{commit}") && is_ready(o),
    )
    .await;
    assert_eq!(
        condition(&object, "Ready").map(|c| c["reason"].clone()),
        Some(json!("ReconciliationSucceeded")),
        "{}",
        object.data["status"]
    );
}

#[tokio::test]
async fn api_server_restart_keeps_data_and_wipe_rebuilds_the_cluster() {
    let cluster = cluster::cluster();
    let _exclusive = cluster.exclusive().await;
    apply_namespace(&cluster.client().await, "env-wipe").await;

    cluster.restart_api_server();
    assert!(cluster.api_server_running());
    let namespaces: Api<Namespace> = Api::all(cluster.client().await);
    namespaces
        .get("env-wipe")
        .await
        .expect("a namespace survives an API server restart");

    cluster.stop_api_server();
    let refused = cluster.client().await.apiserver_version().await;
    assert!(
        refused.is_err(),
        "a stopped API server answered: {refused:?}"
    );
    cluster.start_api_server();

    // The controller-manager, scheduler and kwok outlive API server restarts (they reconnect).
    assert!(
        cluster.kube_controllers_running(),
        "a controller died with the API server restarts:\n{}",
        cluster.log_tail("kube-controller-manager", 20)
    );

    cluster.wipe();
    let namespaces: Api<Namespace> = Api::all(cluster.client().await);
    let gone = namespaces
        .get_opt("env-wipe")
        .await
        .expect("listing after the wipe");
    assert!(gone.is_none(), "the wipe kept namespace `env-wipe`");
    assert!(cluster.kube_controllers_running());
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client().await);
    nodes
        .get(cluster::FAKE_NODE)
        .await
        .expect("the fake Node is back after the wipe");
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client().await);
    for name in FLUX_CRDS {
        crds.get(name)
            .await
            .unwrap_or_else(|err| panic!("CRD `{name}` after the wipe: {err}"));
    }
}

/// Run only by `processes_die_with_the_test_binary`, in a child test process: starts a process
/// and exits without any cleanup, as a panicking or killed test binary would.
#[test]
#[ignore = "helper of processes_die_with_the_test_binary"]
fn helper_start_a_process_and_exit() {
    if std::env::var_os("HOMELAB_FLUX_ENV_HELPER").is_none() {
        return;
    }
    let dir = cluster::scratch_dir("helper").expect("scratch dir");
    let mut sleep = std::process::Command::new("sleep");
    sleep.arg("600");
    let process = cluster::Process::spawn("sleep", sleep, &dir).expect("spawning sleep");
    println!("child-pid={}", process.pid());
    std::process::exit(0);
}

#[test]
fn processes_die_with_the_test_binary() {
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "environment::helper_start_a_process_and_exit",
            "--nocapture",
        ])
        .env("HOMELAB_FLUX_ENV_HELPER", "1")
        .output()
        .expect("running the helper");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pid = stdout
        .lines()
        .find_map(|line| line.strip_prefix("child-pid="))
        .unwrap_or_else(|| panic!("the helper printed no pid: {stdout}"));
    let stat = std::path::Path::new("/proc").join(pid).join("stat");
    let start = Instant::now();
    // Gone, or a zombie nobody has reaped yet: either way no longer running.
    let dead = || {
        std::fs::read_to_string(&stat).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    };
    while !dead() {
        assert!(
            // A hang guard: the kernel's death signal acts at once, but a loaded machine may
            // take a while to schedule the reaping.
            start.elapsed() < Duration::from_secs(60),
            "process {pid} outlived its test binary"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Flux's Deployments (the test install manifests of the pinned release) roll out onto the fake
/// Node: 1/1 available, their Pods bound to it and Running. A Deployment whose image cannot be
/// pulled has its Pod waiting with `ImagePullBackOff` and never becomes available. Deleting
/// its namespace takes its objects with it (the namespace controller and the garbage collector
/// run).
#[tokio::test]
async fn deployments_roll_out_onto_the_fake_node_and_an_unpullable_image_backs_off() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    let cluster = cluster::cluster();
    let _shared = cluster.shared().await;
    cluster.apply_flux_deployments();
    let client = cluster.client().await;
    let begin = Instant::now();
    for name in cluster::FLUX_DEPLOYMENTS {
        cluster
            .wait_rolled_out(FLUX_NAMESPACE, name, RECONCILE_TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("{err:#}"));
        let d = Api::<Deployment>::namespaced(client.clone(), FLUX_NAMESPACE)
            .get(name)
            .await
            .unwrap();
        let status = d.status.unwrap();
        assert_eq!(
            (status.available_replicas, status.ready_replicas),
            (Some(1), Some(1)),
            "{name}"
        );
    }
    eprintln!("Flux Deployments rolled out in {:.1?}", begin.elapsed());
    let pods: Api<Pod> = Api::namespaced(client.clone(), FLUX_NAMESPACE);
    for name in cluster::FLUX_DEPLOYMENTS {
        let list = pods
            .list(&kube::api::ListParams::default().labels(&format!("app={name}")))
            .await
            .unwrap();
        let running: Vec<_> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        assert_eq!(running.len(), 1, "one Running Pod of {name}");
        let pod = running[0];
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(cluster::FAKE_NODE)
        );
        let image = pod.spec.as_ref().unwrap().containers[0].image.clone();
        assert_eq!(
            image.as_deref(),
            Some(
                format!(
                    "ghcr.io/fluxcd/{name}:{}",
                    cluster::controller_tag(cluster::FLUX_RELEASE, name)
                )
                .as_str()
            )
        );
    }

    // An image that cannot be pulled, in a namespace of its own.
    let namespace = "env-unpullable";
    apply_namespace(&client, namespace).await;
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "broken", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "broken"}},
            "template": {
                "metadata": {"labels": {"app": "broken"}},
                "spec": {"containers": [{"name": "manager", "image": cluster::UNPULLABLE_IMAGE}]},
            },
        },
    });
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    deployments
        .patch(
            "broken",
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&deployment),
        )
        .await
        .unwrap();
    let pod = cluster
        .wait_pod_waiting(
            namespace,
            "app=broken",
            "ImagePullBackOff",
            RECONCILE_TIMEOUT,
        )
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let waiting = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert!(
        waiting
            .message
            .unwrap_or_default()
            .contains(cluster::UNPULLABLE_IMAGE)
    );
    let d = deployments.get("broken").await.unwrap();
    assert_eq!(d.status.unwrap().available_replicas.unwrap_or(0), 0);

    // The namespace goes, and what was in it.
    Api::<Namespace>::all(client.clone())
        .delete(namespace, &Default::default())
        .await
        .unwrap();
    let gone = kube::runtime::wait::await_condition(
        Api::<Namespace>::all(client.clone()),
        namespace,
        |n: Option<&Namespace>| n.is_none(),
    );
    tokio::time::timeout(RECONCILE_TIMEOUT, gone)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "namespace {namespace} not deleted:\n{}",
                cluster.log_tail("kube-controller-manager", 20)
            )
        })
        .unwrap();
}

/// The CRDs of the older release lines that `tests/env/setup` put in `target/testenv/crds-old`
/// store what the upgrade and migration tests count on: Flux v0.41.2's line `v1beta2` for
/// GitRepository and Kustomization, v2.2's line `v1` while still serving `v1beta2`; and install
/// manifests of those lines are made from them (no ExternalArtifact before 2.7).
#[test]
fn the_older_lines_crds_store_the_versions_the_migration_tests_need() {
    let versions = |dir: &std::path::Path, file: &str| -> (String, Vec<String>) {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err}: run `tests/env/setup`", path.display()));
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
        let stored = crd.spec.versions.iter().find(|v| v.storage).unwrap();
        let served = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.clone());
        (stored.name.clone(), served.collect())
    };
    let git = "source.toolkit.fluxcd.io_gitrepositories.yaml";
    let ks = "kustomize.toolkit.fluxcd.io_kustomizations.yaml";
    for (module, version, file, stores, serves) in [
        ("source-controller", "v0.36.1", git, "v1beta2", "v1beta2"),
        ("kustomize-controller", "v0.35.1", ks, "v1beta2", "v1beta2"),
        ("source-controller", "v1.2.5", git, "v1", "v1beta2"),
        ("kustomize-controller", "v1.2.2", ks, "v1", "v1beta2"),
    ] {
        let (stored, served) = versions(&cluster::old_crds_dir(module, version), file);
        assert_eq!(stored, stores, "{module} {version}");
        assert!(
            served.iter().any(|v| v == serves),
            "{module} {version}: {served:?}"
        );
    }
    let (current, _) = versions(&cluster::testenv_dir().join("crds"), ks);
    assert_eq!(current, "v1");

    let source = cluster::old_crds_dir("source-controller", "v0.36.1");
    let kustomize = cluster::old_crds_dir("kustomize-controller", "v0.35.1");
    let (manifests, count) = cluster::flux_manifests_from("v0.41.2", &[&source, &kustomize]);
    // The Namespace, five source kinds and Kustomization, the two Deployments.
    assert_eq!(count, 1 + 6 + 2);
    assert!(!manifests.contains("externalartifacts"));
    assert!(manifests.contains("ghcr.io/fluxcd/kustomize-controller:v0.35.1"));
    assert!(manifests.contains("app.kubernetes.io/version: v0.41.2"));
}
