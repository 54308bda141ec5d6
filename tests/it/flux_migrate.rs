//! Stored versions migrated before an upgrade (SPEC §4a, issue 18): Flux objects made under old
//! CRDs (stored at `v1beta2`) survive an upgrade to CRDs that only have `v1`. The real binary at
//! `-vv` (the token checked in every output) against the real kube-apiserver, with the CRDs of
//! two older Flux release lines (`target/testenv/crds-old`, from the controllers' modules):
//! source-controller v0.36.1 and kustomize-controller v0.35.1 (Flux 0.41, storing `v1beta2`),
//! and source-controller v1.2.5 and kustomize-controller v1.2.2 (Flux 2.2: GitRepository and
//! Kustomization store `v1` and still serve `v1beta2`; the other sources still store `v1beta2`).
//!
//! These tests replace the Flux CRDs of the shared cluster: they hold it exclusively, stop the
//! Flux controllers while the old CRDs are there, and put the current CRDs back (with no Flux
//! object left) when they end, also when they fail.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support;
use support::cli::assert_has;
use support::cluster::{self, Cluster};
use support::world::{self, World, ready_line};

const SOURCE: &str = "source.toolkit.fluxcd.io";
const KUSTOMIZE: &str = "kustomize.toolkit.fluxcd.io";
/// A bound on waits for the API server to take a CRD (milliseconds when idle).
const CRD_TAKEN: Duration = Duration::from_secs(60);

/// A Flux kind: group, kind, plural.
#[derive(Clone, Copy, Debug)]
struct FluxKind(&'static str, &'static str, &'static str);

const GIT_REPOSITORY: FluxKind = FluxKind(SOURCE, "GitRepository", "gitrepositories");
const KUSTOMIZATION: FluxKind = FluxKind(KUSTOMIZE, "Kustomization", "kustomizations");
const BUCKET: FluxKind = FluxKind(SOURCE, "Bucket", "buckets");
const HELM_REPOSITORY: FluxKind = FluxKind(SOURCE, "HelmRepository", "helmrepositories");
const OCI_REPOSITORY: FluxKind = FluxKind(SOURCE, "OCIRepository", "ocirepositories");

impl FluxKind {
    fn crd(self) -> String {
        format!("{}.{}", self.2, self.0)
    }

    fn api(self, client: &kube::Client, version: &str, ns: &str) -> Api<DynamicObject> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.0, version, self.1),
            self.2,
        );
        Api::namespaced_with(client.clone(), ns, &ar)
    }
}

/// Puts the current Flux CRDs back, with no Flux object left, when a test ends (also when it
/// fails: the other tests of the binary need them), and deletes what else the test made.
struct Restore(&'static Cluster);

impl Drop for Restore {
    fn drop(&mut self) {
        let kubeconfig = self.0.kubeconfig_path().to_path_buf();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let client = cluster::client_for(&kubeconfig).await.unwrap();
                    support::admission::delete(&client, FROZEN).await;
                })
        })
        .join();
        self.0.delete_crds();
        self.0.install_crds();
    }
}

/// Applies the CRDs of an older release line (`target/testenv/crds-old/LINE`), labelled as that
/// Flux release's `install.yaml` labels them, and waits until the API server writes each at
/// its storage version (discovery's `storageVersionHash`).
async fn apply_old_crds(client: &kube::Client, line: &str, release: &str) {
    let dir = cluster::testenv_dir().join("crds-old").join(line);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run `tests/env/setup`", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in files {
        let mut crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        crd.metadata.labels = serde_json::from_value(cluster::flux_labels(release)).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {name} of {line}: {e}"));
        let storage = crd.spec.versions.iter().find(|v| v.storage).unwrap();
        wait_stored_at(
            client,
            &crd.spec.group,
            &storage.name,
            &crd.spec.names.kind,
            &crd.spec.names.plural,
        )
        .await;
    }
}

/// Waits until discovery says the API server writes `plural` at `version`.
async fn wait_stored_at(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) {
    let want = homelab_flux::crd_versions::storage_version_hash(group, version, kind);
    let deadline = Instant::now() + CRD_TAKEN;
    loop {
        let shown = client
            .list_api_group_resources(&format!("{group}/{version}"))
            .await
            .ok()
            .and_then(|l| l.resources.into_iter().find(|r| r.name == plural))
            .and_then(|r| r.storage_version_hash);
        if shown.as_deref() == Some(want.as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "discovery does not show {plural} stored at {group}/{version}: {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates (server-side applies, as kustomize-controller applies `gotk-sync.yaml`) a Flux
/// object at `v1beta2`, so that etcd holds it at `v1beta2` and its managed fields name
/// `v1beta2`.
async fn create_v1beta2(client: &kube::Client, kind: FluxKind, ns: &str, name: &str, spec: Value) {
    let object = json!({
        "apiVersion": format!("{}/v1beta2", kind.0),
        "kind": kind.1,
        "metadata": {
            "name": name, "namespace": ns,
            "labels": {"homelab-flux-test": "migrate"},
            "annotations": {"homelab-flux-test/made-at": "v1beta2"},
        },
        "spec": spec,
    });
    kind.api(client, "v1beta2", ns)
        .patch(
            name,
            &PatchParams::apply("kustomize-controller").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("creating {} {ns}/{name}: {e}", kind.1));
}

/// A finalizer as the controllers add one (they are stopped here).
async fn add_finalizer(client: &kube::Client, kind: FluxKind, ns: &str, name: &str) {
    let patch = json!({"metadata": {"finalizers": ["finalizers.fluxcd.io"]}});
    kind.api(client, "v1beta2", ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn stored_versions(client: &kube::Client, kind: FluxKind) -> Vec<String> {
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get(&kind.crd())
        .await
        .unwrap();
    crd.status.unwrap().stored_versions.unwrap_or_default()
}

async fn versions(client: &kube::Client, kind: FluxKind) -> Vec<String> {
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get(&kind.crd())
        .await
        .unwrap();
    crd.spec.versions.into_iter().map(|v| v.name).collect()
}

/// Every field of `before` is in `after` with the same value (defaults of the new version may
/// be added).
fn kept(before: &Value, after: &Value) -> bool {
    homelab_flux::flux::is_subset(before, after)
}

/// The fields of `spec` that the live CRD's storage version has: what an object stored there
/// can keep (`v1` dropped a few, such as GitRepository's `gitImplementation`).
async fn spec_fields(client: &kube::Client, kind: FluxKind) -> Vec<String> {
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get(&kind.crd())
        .await
        .unwrap();
    let version = crd.spec.versions.into_iter().find(|v| v.storage).unwrap();
    let schema = version.schema.unwrap().open_api_v3_schema.unwrap();
    schema.properties.unwrap()["spec"]
        .properties
        .clone()
        .unwrap()
        .into_keys()
        .collect()
}

/// What the migration must keep of an object: its spec (the fields in `fields`), labels,
/// annotations, finalizers.
fn essence(o: &DynamicObject, fields: &[String]) -> Value {
    let mut spec = o.data["spec"].clone();
    if let Some(spec) = spec.as_object_mut() {
        spec.retain(|k, _| fields.contains(k));
    }
    json!({
        "spec": spec,
        "labels": o.metadata.labels,
        "annotations": o.metadata.annotations,
        "finalizers": o.metadata.finalizers,
    })
}

/// The objects the old cluster holds: `(kind, namespace, name)`.
fn old_objects() -> Vec<(FluxKind, &'static str, &'static str)> {
    vec![
        (GIT_REPOSITORY, "flux-system", "flux-system"),
        (GIT_REPOSITORY, "default", "podinfo"),
        (KUSTOMIZATION, "flux-system", "flux-system"),
        (KUSTOMIZATION, "default", "apps"),
        (BUCKET, "default", "backups"),
        (HELM_REPOSITORY, "default", "charts"),
        (OCI_REPOSITORY, "default", "manifests"),
    ]
}

/// Flux's install manifests at the pinned release (the current CRDs, which have only `v1`), as
/// a file of the world.
fn new_manifests(w: &World) -> String {
    let (text, _) =
        cluster::flux_manifests_at(cluster::FLUX_RELEASE, &cluster::testenv_dir().join("crds"));
    let file = w.dir.path().join("install.yaml");
    std::fs::write(&file, text).unwrap();
    file.to_str().unwrap().to_string()
}

/// The controllers' Deployments labelled as an older Flux release, so that bootstrap upgrades.
async fn deploy_release(client: &kube::Client, release: &str) {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "flux-system");
    for name in cluster::FLUX_DEPLOYMENTS {
        api.patch(
            name,
            &PatchParams::apply("homelab-flux-testenv").force(),
            &Patch::Apply(cluster::flux_deployment_at(name, release)),
        )
        .await
        .unwrap();
    }
}

/// A cluster whose objects were made under Flux 0.41's CRDs (stored at `v1beta2`), then moved
/// to Flux 2.2's CRDs (`storedVersions: [v1beta2, v1]` for GitRepository and Kustomization; the
/// other sources still stored at `v1beta2`), is upgraded to v2.10.1, whose CRDs only have `v1`:
/// the dry run says what would be migrated and writes nothing; the run migrates every kind,
/// applies the new CRDs, keeps every object with its spec, and leaves `storedVersions: [v1]`;
/// the real controllers then sync the migrated objects; a re-run migrates nothing.
#[tokio::test(flavor = "multi_thread")]
async fn objects_stored_at_v1beta2_survive_the_upgrade_to_crds_without_it() {
    let c = cluster::cluster();
    let _exclusive = c.exclusive().await;
    world::reset(c).await;
    c.stop_flux();
    c.delete_crds();
    let _restore = Restore(c);
    let client = c.client().await;
    let w = World::new("migrate", "./clusters/home", c.kubeconfig_path());
    let new = new_manifests(&w);

    // Flux 0.41: everything stored at v1beta2.
    apply_old_crds(&client, "source-controller-v0.36.1", "v0.41.2").await;
    apply_old_crds(&client, "kustomize-controller-v0.35.1", "v0.41.2").await;
    let url = w.ssh.url(&w.repo);
    create_v1beta2(&client, GIT_REPOSITORY, "flux-system", "flux-system",
        json!({"interval": "1m0s", "ref": {"branch": "main"}, "secretRef": {"name": "flux-system"}, "url": url}),
    ).await;
    create_v1beta2(&client, GIT_REPOSITORY, "default", "podinfo",
        json!({"interval": "5m0s", "ref": {"tag": "6.0.0"}, "url": "https://github.com/stefanprodan/podinfo", "ignore": "/*\n!/kustomize\n"}),
    ).await;
    create_v1beta2(&client, KUSTOMIZATION, "flux-system", "flux-system",
        json!({"interval": "10m0s", "path": "./clusters/home", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}),
    ).await;
    create_v1beta2(&client, KUSTOMIZATION, "default", "apps",
        json!({"interval": "1h", "path": "./kustomize", "prune": false, "targetNamespace": "default", "sourceRef": {"kind": "GitRepository", "name": "podinfo"}}),
    ).await;
    create_v1beta2(&client, BUCKET, "default", "backups",
        json!({"interval": "5m", "bucketName": "backups", "endpoint": "minio.example.com", "provider": "generic"}),
    ).await;
    create_v1beta2(
        &client,
        HELM_REPOSITORY,
        "default",
        "charts",
        json!({"interval": "1h", "url": "https://charts.example.com"}),
    )
    .await;
    create_v1beta2(&client, OCI_REPOSITORY, "default", "manifests",
        json!({"interval": "10m", "url": "oci://ghcr.io/example/manifests", "ref": {"tag": "latest"}}),
    ).await;
    add_finalizer(&client, GIT_REPOSITORY, "default", "podinfo").await;
    add_finalizer(&client, KUSTOMIZATION, "default", "apps").await;

    // Flux 2.2's CRDs on top: v1 stored from now on for two kinds, the old objects not moved.
    apply_old_crds(&client, "source-controller-v1.2.5", "v2.2.3").await;
    apply_old_crds(&client, "kustomize-controller-v1.2.2", "v2.2.3").await;
    deploy_release(&client, "v2.2.3").await;
    assert_eq!(
        stored_versions(&client, GIT_REPOSITORY).await,
        ["v1beta2", "v1"]
    );
    assert_eq!(
        stored_versions(&client, KUSTOMIZATION).await,
        ["v1beta2", "v1"]
    );
    assert_eq!(stored_versions(&client, BUCKET).await, ["v1beta2"]);

    let mut before = Vec::new();
    for (kind, ns, name) in old_objects() {
        before.push(kind.api(&client, "v1beta2", ns).get(name).await.unwrap());
    }
    let expected = [
        "would migrate 2 GitRepository objects from v1beta2 to v1",
        "would migrate 2 Kustomization objects from v1beta2 to v1",
        "would migrate 1 Bucket object from v1beta2 to v1",
        "would migrate 1 HelmRepository object from v1beta2 to v1",
        "would migrate 1 OCIRepository object from v1beta2 to v1",
        "would migrate 0 HelmChart objects from v1beta2 to v1",
    ];

    // The plan; nothing written.
    let r = w.bootstrap(&["--flux-manifests", &new, "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "(dry run) Flux v2.2.3 → v2.10.1");
    for line in expected {
        assert_has(&r, &format!("(dry run) {line}"));
    }
    assert_eq!(
        stored_versions(&client, GIT_REPOSITORY).await,
        ["v1beta2", "v1"]
    );
    assert_eq!(stored_versions(&client, BUCKET).await, ["v1beta2"]);
    assert_eq!(versions(&client, BUCKET).await, ["v1beta1", "v1beta2"]);
    for (o, (kind, ns, name)) in before.iter().zip(old_objects()) {
        let now = kind.api(&client, "v1beta2", ns).get(name).await.unwrap();
        assert_eq!(
            now.metadata.resource_version, o.metadata.resource_version,
            "the dry run wrote {} {ns}/{name}",
            kind.1
        );
    }

    // The upgrade (the controllers are stopped: no wait for them).
    let r = w.bootstrap(&["--flux-manifests", &new, "--no-wait"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "- Flux v2.2.3 → v2.10.1");
    for line in expected {
        assert_has(
            &r,
            &format!("- {}", line.replace("would migrate", "migrated")),
        );
    }
    for kind in [
        GIT_REPOSITORY,
        KUSTOMIZATION,
        BUCKET,
        HELM_REPOSITORY,
        OCI_REPOSITORY,
    ] {
        assert_eq!(stored_versions(&client, kind).await, ["v1"], "{}", kind.1);
        assert_eq!(versions(&client, kind).await, ["v1"], "{}", kind.1);
    }
    for (o, (kind, ns, name)) in before.iter().zip(old_objects()) {
        let after = kind
            .api(&client, "v1", ns)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{} {ns}/{name} after the upgrade: {e}", kind.1));
        let fields = spec_fields(&client, kind).await;
        let (b, a) = (essence(o, &fields), essence(&after, &fields));
        assert!(
            kept(&b, &a),
            "{} {ns}/{name} lost something:\nbefore {b}\nafter {a}",
            kind.1
        );
        // Regression: with entries left at v1beta2, the next server-side apply of the object
        // failed with "request to convert CR to an invalid group/version" (seen here).
        for entry in after.metadata.managed_fields.unwrap_or_default() {
            assert_eq!(
                entry.api_version.as_deref(),
                Some(format!("{}/v1", kind.0).as_str()),
                "{} {ns}/{name}: {entry:?}",
                kind.1
            );
        }
    }

    // The real controllers reconcile what was migrated; a re-run migrates nothing.
    c.start_flux();
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
    assert!(!r.stderr.contains("- migrated "), "{}", r.stderr);
    c.stop_flux();
}

/// The name of the admission policy that freezes one GitRepository.
const FROZEN: &str = "homelab-flux-test-frozen";

/// Whether the API server takes an update of GitRepository `default/NAME` now, asked as a
/// server-side dry run (which admission sees like a write, and which keeps nothing).
async fn update_allowed(client: &kube::Client, name: &str) -> bool {
    // At v1beta2, which the old CRD, the bridge and the policy all have.
    let api = GIT_REPOSITORY.api(client, "v1beta2", "default");
    let o = api.get(name).await.unwrap();
    let params = PostParams {
        dry_run: true,
        field_manager: None,
    };
    match api.replace(name, &params, &o).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => false,
        Err(e) => panic!("dry-run update of {name}: {e}"),
    }
}

/// Waits until the API server's admission takes (`true`) or refuses updates of `name`: a policy
/// takes effect a moment after it is written.
async fn wait_update_allowed(client: &kube::Client, name: &str, allowed: bool) {
    let deadline = Instant::now() + CRD_TAKEN;
    while update_allowed(client, name).await != allowed {
        assert!(
            Instant::now() < deadline,
            "the policy on {name} did not change in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Straight from Flux 0.41's CRDs (the live storage version `v1beta2` is itself dropped, so a
/// bridge CRD comes first), and stopped half way: an admission policy refuses the rewrite of
/// one GitRepository, so the run stops after the ones listed before it, with a message naming
/// it (exit 2). That is the state a run killed there leaves: the bridge CRD live, some objects
/// rewritten, `storedVersions` not yet set. Once the policy is gone, the next run finishes:
/// every object kept, the new CRDs applied, `storedVersions: [v1]`.
#[tokio::test(flavor = "multi_thread")]
async fn a_migration_stopped_half_way_is_finished_by_the_next_run() {
    let c = cluster::cluster();
    let _exclusive = c.exclusive().await;
    world::reset(c).await;
    c.stop_flux();
    c.delete_crds();
    let _restore = Restore(c);
    let client = c.client().await;
    let w = World::new("migrate-stopped", "./clusters/home", c.kubeconfig_path());
    let new = new_manifests(&w);

    apply_old_crds(&client, "source-controller-v0.36.1", "v0.41.2").await;
    apply_old_crds(&client, "kustomize-controller-v0.35.1", "v0.41.2").await;
    deploy_release(&client, "v0.41.2").await;
    // Listed in name order: `a` and `b` are rewritten before `c` is refused.
    for name in ["a", "b", "c"] {
        create_v1beta2(&client, GIT_REPOSITORY, "default", name,
            json!({"interval": "1m0s", "ref": {"branch": "main"}, "url": format!("https://github.com/example/{name}")}),
        ).await;
    }
    create_v1beta2(&client, KUSTOMIZATION, "default", "k",
        json!({"interval": "10m0s", "path": "./", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "a"}}),
    ).await;
    assert_eq!(stored_versions(&client, GIT_REPOSITORY).await, ["v1beta2"]);
    let read = |name: &'static str| {
        let api = GIT_REPOSITORY.api(&client, "v1beta2", "default");
        async move { api.get(name).await.unwrap() }
    };
    let before = [read("a").await, read("b").await, read("c").await];

    support::admission::deny(
        &client,
        FROZEN,
        json!({
            "apiGroups": [SOURCE], "apiVersions": ["*"], "operations": ["UPDATE"],
            "resources": ["gitrepositories"],
        }),
        "object.metadata.name != 'c'",
        "GitRepository c is frozen by the test",
    )
    .await;
    wait_update_allowed(&client, "c", false).await;

    let r = w.bootstrap(&["--flux-manifests", &new, "--no-wait"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_has(
        &r,
        "the API server refused to rewrite GitRepository `default/c` at v1 while migrating it from v1beta2: ",
    );
    assert_has(
        &r,
        "GitRepository c is frozen by the test; fix or delete that object, then run `homelab-flux bootstrap` again, which finishes the migration",
    );
    // Stopped half way: the bridge CRD (v1 stored, v1beta2 still there), `a` and `b` rewritten,
    // `c` not, the stored versions not set yet.
    assert_eq!(
        versions(&client, GIT_REPOSITORY).await,
        ["v1", "v1beta1", "v1beta2"]
    );
    assert_eq!(
        stored_versions(&client, GIT_REPOSITORY).await,
        ["v1beta2", "v1"]
    );
    let after = [read("a").await, read("b").await, read("c").await];
    for (b, a) in before.iter().zip(&after) {
        let name = b.metadata.name.as_deref().unwrap();
        let rewritten = b.metadata.resource_version != a.metadata.resource_version;
        assert_eq!(rewritten, name != "c", "{name}");
    }
    assert_eq!(stored_versions(&client, KUSTOMIZATION).await, ["v1beta2"]);

    // The policy gone, the next run finishes.
    support::admission::delete(&client, FROZEN).await;
    wait_update_allowed(&client, "c", true).await;
    let r = w.bootstrap(&["--flux-manifests", &new, "--no-wait"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "- migrated 3 GitRepository objects from v1beta2 to v1");
    assert_has(&r, "- migrated 1 Kustomization object from v1beta2 to v1");
    for kind in [GIT_REPOSITORY, KUSTOMIZATION, BUCKET] {
        assert_eq!(stored_versions(&client, kind).await, ["v1"], "{}", kind.1);
        assert_eq!(versions(&client, kind).await, ["v1"], "{}", kind.1);
    }
    for b in &before {
        let name = b.metadata.name.as_deref().unwrap();
        let a = GIT_REPOSITORY
            .api(&client, "v1", "default")
            .get(name)
            .await
            .unwrap();
        let fields = spec_fields(&client, GIT_REPOSITORY).await;
        let (b, a) = (essence(b, &fields), essence(&a, &fields));
        assert!(kept(&b, &a), "{name}: {b} vs {a}");
    }
    let k = KUSTOMIZATION
        .api(&client, "v1", "default")
        .get("k")
        .await
        .unwrap();
    assert_eq!(k.data["spec"]["sourceRef"]["name"], "a");
}
