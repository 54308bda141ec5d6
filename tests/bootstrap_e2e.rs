//! `bootstrap` and `status` end to end: the real binary against a real kube-apiserver with the
//! real Flux controllers, the SSH and HTTP git servers on loopback, and the fake GitHub (whose
//! deploy keys are the SSH server's authorized keys, and whose `/meta` lists its host key).
//!
//! The tests share one cluster per test binary and take it exclusively, one at a time.

mod support;

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use support::cli::{Run, assert_no_leak, command, run_with_limit};
use support::cluster;
use support::fake_github::{FakeGitHub, RepoSpec, TokenSpec};
use support::git_server::{GitRepo, SEED_CONFIG_MAP, SshGitServer};

const TITLE: &str = "homelab-flux homelab-test";

/// A fine-grained token shaped like GitHub's, unique per test.
fn token(tag: &str) -> String {
    let mut t = format!("github_pat_11E2E{tag}");
    let fill = "Qz9yX8wV7uT6s5R4q3P2o1N0mL9kJ8iH7gF6eD5cB4aZ3yX2wV1uT0sR9qP8oN7mL6kJ5iQ4hG3fE2dC1bA0zYxWvUtSr";
    t.push_str(&fill[..93 - t.len()]);
    t
}

/// One scenario: a GitHub repository served over SSH, a config directory, the binary.
struct World {
    gh: FakeGitHub,
    ssh: SshGitServer,
    repo: GitRepo,
    dir: tempfile::TempDir,
    token: String,
}

impl World {
    fn new(tag: &str, path: &str) -> World {
        let ssh = SshGitServer::start();
        let repo = ssh.create_repo(&format!("manifests-{tag}"));
        let gh = FakeGitHub::start();
        let token = token(tag);
        gh.add_token(&token, TokenSpec::fine_grained("username"));
        gh.add_repo(
            RepoSpec::new("username", "manifests")
                .branch("main", repo.seeded_commit())
                .ssh_url(&ssh.url(&repo)),
        );
        gh.set_host_keys(&[ssh.host_key()]);
        gh.set_authorized_keys_file(ssh.authorized_keys_path());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        write_flux(dir.path(), &format!("branch: main\npath: {path}\n"));
        std::fs::write(
            dir.path().join("config/secrets-flux.yaml"),
            format!("token: {token}\n"),
        )
        .unwrap();
        World {
            gh,
            ssh,
            repo,
            dir,
            token,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let c = cluster::cluster();
        let mut cmd = command(self.dir.path());
        cmd.arg("-vv")
            .args(args)
            .arg("--kubeconfig")
            .arg(c.kubeconfig_path())
            .env("HOMELAB_FLUX_GITHUB_API_URL", self.gh.url());
        let r = run_with_limit(cmd, Duration::from_secs(300));
        assert_no_leak(&self.token, &r.transcript(), &format!("{args:?}"));
        eprintln!("{}", r.transcript());
        r
    }

    fn bootstrap(&self, extra: &[&str]) -> Run {
        let mut args = vec!["bootstrap", "--timeout", "150s"];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

fn write_flux(dir: &Path, extra: &str) {
    std::fs::write(
        dir.join("config/flux.yaml"),
        format!("repo: https://github.com/username/manifests.git\n{extra}"),
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
        out.push(o.metadata.resource_version.unwrap_or_default());
    }
    out
}

async fn seeded_config_map(namespace: &str) -> Option<k8s_openapi::api::core::v1::ConfigMap> {
    let client = cluster::cluster().client().await;
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, namespace);
    api.get_opt(SEED_CONFIG_MAP).await.unwrap()
}

/// Resets the cluster's Flux objects between scenarios (the API server has no garbage collector,
/// so objects are deleted one by one).
async fn clean_flux_objects() {
    let client = cluster::cluster().client().await;
    for (kind, plural, group) in [
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
        ("Secret", "secrets", ""),
    ] {
        let ar = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(group, "v1", kind),
            plural,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "flux-system", &ar);
        let _ = api.delete("flux-system", &Default::default()).await;
    }
}

/// Scenarios 1 and 2 of the issue: a fresh bootstrap reaches Ready at the seeded commit with a
/// read-only key titled after the context; a re-run changes nothing anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn fresh_bootstrap_then_an_idempotent_rerun() {
    let c = cluster::cluster();
    let _exclusive = c.exclusive().await;
    c.start_flux();
    clean_flux_objects().await;
    let w = World::new("fresh", "./clusters/home");

    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let keys = w.gh.deploy_keys("username", "manifests");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].read_only);
    assert_eq!(keys[0].title, TITLE);
    let sha = w.repo.seeded_commit().to_string();
    assert!(
        r.stderr.contains(&format!(
            "Kustomization `flux-system/flux-system` is Ready at {}",
            &sha[..12]
        )),
        "{}",
        r.stderr
    );
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
        assert!(r.stderr.contains(what), "missing `{what}`:\n{}", r.stderr);
    }
    assert_eq!(
        resource_versions().await,
        before,
        "a re-run changes no object"
    );
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
