//! The Flux lifecycle (issue 18, SPEC §4a): the release read from the labels, upgrade on re-run,
//! a downgrade refused without `--force`, and a Flux that `flux bootstrap` manages left to it.
//! The real binary at `-vv` (the token checked in every output) against the real kube-apiserver
//! and Flux controllers, with install manifests labelled per release as Flux labels them.

use crate::support;

use kube::Api;
use kube::api::{Patch, PatchParams};
use support::cli::assert_has;
use support::cluster;
use support::world::{self, World, ready_line};

/// The release label of each controller's Deployment and its image.
async fn releases(c: &cluster::Cluster) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(c.client().await, "flux-system");
    let mut out = Vec::new();
    for name in cluster::FLUX_DEPLOYMENTS {
        let d = api.get(name).await.unwrap();
        let label = d.metadata.labels.unwrap_or_default()["app.kubernetes.io/version"].clone();
        let image = d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default();
        out.push((label, image));
    }
    out
}

/// Puts the controllers' Deployments at `release`, as that release's `install.yaml` has them.
async fn deploy_release(c: &cluster::Cluster, release: &str, extra_label: Option<(&str, &str)>) {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(c.client().await, "flux-system");
    for name in cluster::FLUX_DEPLOYMENTS {
        let mut d = cluster::flux_deployment_at(name, release);
        if let Some((k, v)) = extra_label {
            d["metadata"]["labels"][k] = v.into();
        }
        api.patch(
            name,
            &PatchParams::apply("homelab-flux-testenv").force(),
            &Patch::Apply(&d),
        )
        .await
        .unwrap();
    }
    // The Deployment controller rolls them out onto the fake Node: waited for, so that a run
    // after this finds the release rolled out, as a cluster left alone for a while has it.
    for name in cluster::FLUX_DEPLOYMENTS {
        c.wait_rolled_out("flux-system", name, std::time::Duration::from_secs(180))
            .await
            .unwrap_or_else(|e| panic!("{name} at {release} did not roll out: {e:#}"));
    }
}

fn manifests_file(w: &World, release: &str) -> String {
    let (text, _) = cluster::flux_manifests_at(release, &cluster::testenv_dir().join("crds"));
    let file = w.dir.path().join(format!("install-{release}.yaml"));
    std::fs::write(&file, text).unwrap();
    file.to_str().unwrap().to_string()
}

/// A synced cluster on Flux 2.9.5 is upgraded by a re-run: the plan says `Flux v2.9.5 →
/// v2.10.1`, a dry run writes nothing, the run relabels the controllers and stays synced, and a
/// second re-run writes nothing. Then a downgrade is refused without `--force` and done with it.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_flux_is_upgraded_on_rerun_and_a_downgrade_needs_force() {
    let c = cluster::cluster();
    let _exclusive = c.exclusive().await;
    world::reset(c).await;
    let w = World::new("upgrade", "./clusters/home", c.kubeconfig_path());
    let new = manifests_file(&w, cluster::FLUX_RELEASE);
    let old = manifests_file(&w, "v2.9.5");

    // Bootstrapped on 2.9.5.
    let r = w.bootstrap(&["--flux-manifests", &old]);
    assert_eq!(
        r.code,
        1,
        "2.9.5 runs on 1.36, but 2.10.1 is in the cluster: {}",
        r.transcript()
    );
    assert_has(
        &r,
        "the cluster runs Flux v2.10.1, newer than v2.9.5; nothing was changed",
    );
    deploy_release(c, "v2.9.5", None).await;
    let r = w.bootstrap(&["--flux-manifests", &old]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
    assert!(releases(c).await.iter().all(|(v, _)| v == "v2.9.5"));

    // The plan of the upgrade; nothing written.
    let r = w.bootstrap(&["--flux-manifests", &new, "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "(dry run) Flux v2.9.5 → v2.10.1");
    assert!(releases(c).await.iter().all(|(v, _)| v == "v2.9.5"));

    // The upgrade.
    let r = w.bootstrap(&["--flux-manifests", &new]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "- Flux v2.9.5 → v2.10.1");
    let seeded = w.repo.seeded_commit();
    assert_has(&r, &format!("- Flux is synced at {}", &seeded[..12]));
    for (label, image) in releases(c).await {
        assert_eq!(label, "v2.10.1");
        assert!(image.ends_with(":v1.10.1"), "{image}");
    }

    // A second re-run: nothing of Flux written, nothing downloaded.
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(!r.stderr.contains("installed Flux"), "{}", r.stderr);
    assert!(!r.stderr.contains(" → "), "{}", r.stderr);

    // Downgrade: refused, then forced.
    let r = w.bootstrap(&["--flux-manifests", &old]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert_has(
        &r,
        "the cluster runs Flux v2.10.1, newer than v2.9.5; nothing was changed. Run again with `--force` to downgrade",
    );
    assert!(releases(c).await.iter().all(|(v, _)| v == "v2.10.1"));
    let r = w.bootstrap(&["--flux-manifests", &old, "--force"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "- Flux v2.10.1 → v2.9.5 (a downgrade, `--force`)");
    assert!(releases(c).await.iter().all(|(v, _)| v == "v2.9.5"));
    deploy_release(c, cluster::FLUX_RELEASE, None).await;
}

/// Controllers that `flux bootstrap` applies from Git (`kustomize.toolkit.fluxcd.io/name`) are
/// not upgraded here, even with `--force`: the message says where to upgrade.
#[tokio::test(flavor = "multi_thread")]
async fn a_flux_that_flux_manages_is_not_upgraded() {
    let c = cluster::cluster();
    let _exclusive = c.exclusive().await;
    world::reset(c).await;
    let w = World::new("managed", "./clusters/home", c.kubeconfig_path());
    let new = manifests_file(&w, cluster::FLUX_RELEASE);
    deploy_release(
        c,
        "v2.9.5",
        Some(("kustomize.toolkit.fluxcd.io/name", "flux-system")),
    )
    .await;
    for extra in [&[][..], &["--force"][..]] {
        let mut args = vec!["--flux-manifests", new.as_str(), "--no-wait"];
        args.extend_from_slice(extra);
        let r = w.bootstrap(&args);
        assert_eq!(r.code, 1, "{}", r.transcript());
        assert_has(
            &r,
            "Flux v2.9.5's controllers are applied from Git by a Kustomization",
        );
        assert_has(&r, "flux install --version=v2.10.1 --export");
    }
    assert!(releases(c).await.iter().all(|(v, _)| v == "v2.9.5"));
    // Back as the other tests expect it (the extra label removed with the field manager's apply).
    deploy_release(c, cluster::FLUX_RELEASE, None).await;
}

/// Manifests without Flux's release label are refused, naming the file; nothing is applied.
#[tokio::test(flavor = "multi_thread")]
async fn manifests_without_a_release_label_are_refused() {
    let c = cluster::cluster();
    let _exclusive = c.exclusive().await;
    world::reset(c).await;
    let w = World::new("nolabel", "./clusters/home", c.kubeconfig_path());
    let file = w.dir.path().join("install.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let r = w.bootstrap(&["--flux-manifests", file, "--no-wait"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_has(
        &r,
        &format!("`{file}` carries no `app.kubernetes.io/version` label"),
    );
    assert!(w.gh.writes().is_empty());
}

/// The manifests of the pinned release with one controller's image replaced.
fn manifests_with_image(w: &World, controller: &str, image: &str) -> String {
    let (text, _) =
        cluster::flux_manifests_at(cluster::FLUX_RELEASE, &cluster::testenv_dir().join("crds"));
    let good = format!(
        "ghcr.io/fluxcd/{controller}:{}",
        cluster::controller_tag(cluster::FLUX_RELEASE, controller)
    );
    assert!(text.contains(&good), "the manifests name {good}");
    let file = w.dir.path().join(format!("install-{controller}-bad.yaml"));
    std::fs::write(&file, text.replace(&good, image)).unwrap();
    file.to_str().unwrap().to_string()
}

/// A fresh bootstrap installs Flux v2.10.1, waits for both controllers to roll out onto the
/// cluster's node, and syncs; `status` then names the release and each controller's health.
#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_install_waits_for_the_controllers_to_roll_out_and_status_shows_them() {
    let (c, _exclusive, w) = world::fresh("rollout").await;
    c.delete_flux_deployments();
    let manifests = manifests_file(&w, cluster::FLUX_RELEASE);
    let r = w.bootstrap(&["--flux-manifests", &manifests]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        "Flux's controllers are rolled out: `flux-system/source-controller`, `flux-system/kustomize-controller`",
    );
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
    // Read once, not waited for: the run said they are rolled out, so they are now.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(c.client().await, "flux-system");
    for name in cluster::FLUX_DEPLOYMENTS {
        let d = deployments.get(name).await.unwrap();
        assert!(
            cluster::rolled_out(&d),
            "{name} is said rolled out but is not: {:?}",
            d.status
        );
    }

    let r = w.run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(
        r.stdout
            .contains("Flux v2.10.1 (the release homelab-flux pins)\n")
            && r.stdout.contains(
                "Deployment flux-system/source-controller v2.10.1: rolled out (1/1 available)\n"
            ),
        "{}",
        r.transcript()
    );
    let r = w.run(&["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(status["flux_version"], "v2.10.1");
    assert_eq!(status["upgrade_available"], false);
    assert_eq!(status["controllers"][0]["rolled_out"], true, "{status}");

    // An older release in the cluster: `status` says the pinned one is out.
    deploy_release(c, "v2.9.5", None).await;
    let r = w.run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(
        r.stdout.contains(
            "Flux v2.9.5; v2.10.1 is out: run `homelab-flux bootstrap` to upgrade to it\n"
        ),
        "{}",
        r.transcript()
    );
    deploy_release(c, cluster::FLUX_RELEASE, None).await;
}

/// A controller whose image cannot be pulled: the wait ends at `--timeout` naming the
/// Deployment and the Pod's `ImagePullBackOff` (exit 1), `status` says the same, and the next
/// run with good manifests repairs it and converges.
#[tokio::test(flavor = "multi_thread")]
async fn a_controller_whose_image_cannot_be_pulled_is_named_and_the_next_run_repairs_it() {
    let (c, _exclusive, w) = world::fresh("unpullable").await;
    c.delete_flux_deployments();
    let bad = manifests_with_image(&w, "source-controller", cluster::UNPULLABLE_IMAGE);
    // Installed without waiting; the Pod's failure is then awaited here, on its status, so
    // that the run below finds it whatever the machine's speed.
    let r = w.bootstrap(&["--flux-manifests", &bad, "--no-wait"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    c.wait_pod_waiting(
        "flux-system",
        "app=source-controller",
        "ImagePullBackOff",
        std::time::Duration::from_secs(180),
    )
    .await
    .unwrap();
    // The other controller's rollout is not what this test is about: awaited.
    c.wait_rolled_out(
        "flux-system",
        "kustomize-controller",
        std::time::Duration::from_secs(180),
    )
    .await
    .unwrap();

    let r = w.bootstrap(&["--flux-manifests", &bad, "--timeout", "3s"]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert_has(
        &r,
        "Flux v2.10.1 runs, but `flux-system/source-controller` is not rolled out: its manifests are applied again",
    );
    assert_has(
        &r,
        "Deployment `flux-system/source-controller` is not rolled out: 0 of 1 replicas available",
    );
    assert_has(&r, ": ImagePullBackOff");
    assert_has(&r, "kubectl -n flux-system describe pod source-controller-");
    assert!(
        !r.stderr.contains("kustomize-controller` is not rolled out"),
        "{}",
        r.stderr
    );

    let r = w.run(&["status"]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert!(
        r.stdout
            .contains("Deployment flux-system/source-controller v2.10.1: NOT rolled out")
            && r.stdout.contains(": ImagePullBackOff: "),
        "{}",
        r.transcript()
    );

    let good = manifests_file(&w, cluster::FLUX_RELEASE);
    let r = w.bootstrap(&["--flux-manifests", &good]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "Flux's controllers are rolled out");
    // Flux may have synced the objects the first run applied already, or does it now.
    let seeded = w.repo.seeded_commit();
    assert!(
        r.stderr.contains(&ready_line(seeded))
            || r.stderr
                .contains(&format!("- Flux is synced at {}", &seeded[..12])),
        "{}",
        r.transcript()
    );
    let (_, image) = releases(c).await.remove(0);
    assert_eq!(image, "ghcr.io/fluxcd/source-controller:v1.10.1");
}

/// A GitRepository suspended as `flux suspend` does it: the wait ends at once (not at a
/// `--timeout` of an hour) saying it is suspended and how to resume it; `status` says it too.
#[tokio::test(flavor = "multi_thread")]
async fn a_suspended_source_ends_the_wait_at_once_with_how_to_resume_it() {
    let (c, _exclusive, w) = world::fresh("suspended").await;
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let repos = world::flux_api(c.client().await, "GitRepository");
    repos
        .patch(
            "flux-system",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    let newer = w
        .repo
        .commit(&[("clusters/home/new.txt", "x")], "a newer commit");
    w.gh.set_branch("username", "manifests", "main", &newer);

    let r = w.bootstrap(&["--timeout", "1h"]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert_has(
        &r,
        "GitRepository `flux-system/flux-system` is suspended (`spec.suspend: true`, as `flux suspend` sets it)",
    );
    assert_has(&r, "`flux resume source git flux-system -n flux-system`");
    // Left as the person set it: resuming is theirs to decide.
    let live = repos.get("flux-system").await.unwrap();
    assert_eq!(live.data["spec"]["suspend"], true);
    assert!(!r.stderr.contains(&ready_line(&newer)), "{}", r.stderr);

    let r = w.run(&["status"]);
    assert_ne!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stdout
            .contains("  suspended (`spec.suspend: true`): Flux does not reconcile it"),
        "{}",
        r.transcript()
    );
}

/// A ValidatingAdmissionPolicy that refuses updates of Flux's controller Deployments: an
/// upgrade then stops after the CRDs, before the Deployments, as a run killed there does.
struct DenyDeploymentUpdates {
    client: kube::Client,
}

const DENY: &str = "deny-flux-deployment-updates";

impl DenyDeploymentUpdates {
    async fn install(client: kube::Client) -> DenyDeploymentUpdates {
        support::admission::deny(
            &client,
            DENY,
            serde_json::json!({
                "apiGroups": ["apps"], "apiVersions": ["v1"],
                "operations": ["UPDATE"], "resources": ["deployments"],
            }),
            "request.userInfo.username != 'admin' || object.metadata.namespace != 'flux-system'",
            "test policy: the controllers' Deployments are refused",
        )
        .await;
        let deny = DenyDeploymentUpdates { client };
        deny.wait_until_refused(true).await;
        deny
    }

    async fn remove(self) {
        support::admission::delete(&self.client, DENY).await;
        self.wait_until_refused(false).await;
    }

    /// Waits until a dry-run update of a controller's Deployment is refused by the policy (or,
    /// with `refused` false, no longer): the API server's own answer, observed.
    async fn wait_until_refused(&self, refused: bool) {
        let api: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.client.clone(), "flux-system");
        let mut dry = PatchParams::apply("homelab-flux-test-probe").force();
        dry.dry_run = true;
        let probe = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "source-controller", "annotations": {"probe": "x"}},
        });
        let by_policy = |r: &Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(e)) if e.message.contains("test policy"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while by_policy(
            &api.patch("source-controller", &dry, &Patch::Apply(&probe))
                .await,
        ) != refused
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the policy did not take effect (refused: {refused})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// An upgrade cut short after the CRDs, before the Deployments (here by a policy refusing the
/// Deployments' update, the state a run killed there leaves): the run ends with the API
/// server's refusal (exit 2), the controllers still at the old release; the next run finishes
/// the upgrade and waits for the rollout.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_cut_short_after_the_crds_is_finished_by_the_next_run() {
    let (c, _exclusive, w) = world::fresh("cutshort").await;
    deploy_release(c, "v2.9.5", None).await;
    // The CRD as the old release labelled it.
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(c.client().await);
    let crd_name = "gitrepositories.source.toolkit.fluxcd.io";
    crds.patch(
        crd_name,
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/version": "v2.9.5"}}}),
        ),
    )
    .await
    .unwrap();
    let new = manifests_file(&w, cluster::FLUX_RELEASE);
    let deny = DenyDeploymentUpdates::install(c.client().await).await;
    let r = w.bootstrap(&["--flux-manifests", &new]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_has(&r, "test policy: the controllers' Deployments are refused");
    assert!(releases(c).await.iter().all(|(v, _)| v == "v2.9.5"));
    let crd = crds.get(crd_name).await.unwrap();
    assert_eq!(
        crd.metadata.labels.unwrap_or_default()["app.kubernetes.io/version"],
        "v2.10.1",
        "the CRDs were applied before the run stopped"
    );
    deny.remove().await;

    let r = w.bootstrap(&["--flux-manifests", &new]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "- Flux v2.9.5 → v2.10.1");
    assert_has(&r, "Flux's controllers are rolled out");
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
    for (label, image) in releases(c).await {
        assert_eq!(label, "v2.10.1");
        assert!(image.ends_with(":v1.10.1"), "{image}");
    }
}
