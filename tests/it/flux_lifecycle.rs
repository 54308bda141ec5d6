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
