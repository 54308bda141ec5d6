//! SPEC §7 `bootstrap` targets, measured on the real test environment (kube-apiserver, Flux
//! controllers, SSH git server, fake GitHub). A benchmark, not a correctness test, hence
//! `#[ignore]`; run it with `tests/bench/bootstrap-rerun`, which builds the release binary and
//! runs:
//!
//! ```text
//! HOMELAB_FLUX_BIN=target/release/homelab-flux \
//!     cargo test --test bootstrap_bench -- --ignored --nocapture
//! ```
//!
//! 1. A re-run on a bootstrapped cluster against `kubectl apply --server-side --field-manager
//!    homelab-flux` of the same four objects: API server requests (counted in kube-apiserver's
//!    audit log by user agent, so the Flux controllers' traffic is not counted), writes among
//!    them, and wall time, interleaved run by run.
//! 2. The delay between the Kustomization turning Ready, seen by a watch in this process, and
//!    the bootstrap process exiting.

mod support;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use support::cli::assert_no_leak;
use support::cluster;
use support::fake_github::{FakeGitHub, RepoSpec, TokenSpec};
use support::git_server::SshGitServer;

const TOKEN: &str = "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3fE2d";
const RUNS: usize = 15;
const WAIT_RUNS: usize = 8;

fn bin() -> PathBuf {
    std::env::var_os("HOMELAB_FLUX_BIN").map_or_else(support::cli::bin, PathBuf::from)
}

/// Events of the audit log after `offset` as (auditID, userAgent, verb, requestURI).
fn audit_since(path: &Path, offset: u64) -> Vec<(String, String, String, String)> {
    let mut file = std::fs::File::open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    let mut out: Vec<(String, String, String, String)> = Vec::new();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        let id = field("auditID");
        if out.iter().any(|(i, ..)| *i == id) {
            continue; // a watch logs ResponseStarted and ResponseComplete
        }
        out.push((id, field("userAgent"), field("verb"), field("requestURI")));
    }
    out
}

fn audit_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Runs a command to its end; its wall time from spawn to exit.
fn timed(mut cmd: Command) -> (Duration, std::process::Output) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output().unwrap();
    (start.elapsed(), out)
}

/// Requests of one run, after the audit log has caught up (the log backend writes as each request
/// completes, so a short settle is enough).
fn requests_of(path: &Path, offset: u64, agent: &str) -> Vec<(String, String)> {
    std::thread::sleep(Duration::from_millis(200));
    audit_since(path, offset)
        .into_iter()
        .filter(|(_, ua, ..)| ua.starts_with(agent))
        .map(|(_, _, verb, uri)| (verb, uri))
        .collect()
}

fn is_write(verb: &str) -> bool {
    !matches!(verb, "get" | "list" | "watch")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

struct Setup {
    gh: FakeGitHub,
    _ssh: SshGitServer,
    repo: support::git_server::GitRepo,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let ssh = SshGitServer::start();
    let repo = ssh.create_repo("manifests-bench");
    let gh = FakeGitHub::start();
    gh.add_token(TOKEN, TokenSpec::fine_grained("username"));
    gh.add_repo(
        RepoSpec::new("username", "manifests")
            .branch("main", repo.seeded_commit())
            .ssh_url(&ssh.url(&repo)),
    );
    gh.set_host_keys(&[ssh.host_key()]);
    gh.set_authorized_keys_file(ssh.authorized_keys_path());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/flux.yaml"),
        "repo: https://github.com/username/manifests.git\nbranch: main\npath: ./clusters/home\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config/secrets-flux.yaml"),
        format!("token: {TOKEN}\n"),
    )
    .unwrap();
    Setup {
        gh,
        _ssh: ssh,
        repo,
        dir,
    }
}

/// `homelab-flux [-vv] bootstrap` of the binary under measurement, with the environment of
/// `support::cli::command` (no token, kubeconfig or colours from the developer's shell).
fn bootstrap(s: &Setup, verbose: bool) -> Command {
    let dir = s.dir.path();
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .env_remove("HOMELAB_FLUX_TOKEN")
        .env_remove("KUBECONFIG")
        .env_remove("NO_COLOR")
        .env("HOME", dir)
        .env("HOMELAB_FLUX_GITHUB_API_URL", s.gh.url())
        .stdin(Stdio::null());
    if verbose {
        cmd.arg("-vv");
    }
    cmd.args(["bootstrap", "--timeout", "120s", "--kubeconfig"])
        .arg(cluster::cluster().kubeconfig_path());
    cmd
}

/// The four objects as a re-run sees them, for kubectl: the Namespace, the Secret read back from
/// the cluster, and the GitRepository and Kustomization of `bootstrap --export` with the live URL
/// (the export names github.com; this cluster follows the local SSH server).
async fn objects_yaml(s: &Setup) -> String {
    let mut cmd = Command::new(bin());
    cmd.current_dir(s.dir.path())
        .env_remove("HOMELAB_FLUX_TOKEN")
        .args(["bootstrap", "--export"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let export = String::from_utf8(out.stdout).unwrap();
    let client = cluster::cluster().client().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "flux-system");
    let secret = secrets.get("flux-system").await.unwrap();
    let mut data = serde_json::Map::new();
    for (k, v) in secret.data.unwrap_or_default() {
        data.insert(k, serde_json::to_value(v).unwrap());
    }
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "flux-system", "namespace": "flux-system"},
        "type": "Opaque", "data": data,
    });
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "GitRepository"),
        "gitrepositories",
    );
    let repos: Api<DynamicObject> = Api::namespaced_with(client, "flux-system", &ar);
    let live_url = repos.get("flux-system").await.unwrap().data["spec"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let export = export.replace("ssh://git@github.com/username/manifests.git", &live_url);
    assert!(export.contains(&live_url), "{export}");
    format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n---\n{}\n{export}",
        serde_yaml::to_string(&secret).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with tests/bench/bootstrap-rerun"]
async fn bootstrap_rerun_and_wait_latency() {
    let c = cluster::cluster();
    c.start_flux();
    let audit = c.audit_log_path();
    let s = setup();
    eprintln!("binary: {}", bin().display());

    let (_, out) = timed(bootstrap(&s, false));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");

    // --- 1. re-run against kubectl apply --server-side ------------------------------------
    let objects = s.dir.path().join("objects.yaml");
    std::fs::write(&objects, objects_yaml(&s).await).unwrap();
    let kube_home = tempfile::tempdir().unwrap();
    let kubectl = || {
        let mut cmd = Command::new("/usr/bin/kubectl");
        cmd.env("HOME", kube_home.path())
            .arg("--kubeconfig")
            .arg(c.kubeconfig_path())
            .args([
                "apply",
                "--server-side",
                "--field-manager",
                "homelab-flux",
                "-f",
            ])
            .arg(&objects);
        cmd
    };
    let rv_bootstrapped = resource_versions().await;
    let ns_fields = namespace_managed_fields().await;
    // kubectl's first run fills its discovery cache (HOME/.kube/cache): counted apart.
    let offset = audit_len(&audit);
    let (cold_time, out) = timed(kubectl());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cold = requests_of(&audit, offset, "kubectl/");
    let rv_before = resource_versions().await;
    if rv_before != rv_bootstrapped {
        eprintln!(
            "note: kubectl's first apply changed objects: {rv_bootstrapped:?} -> {rv_before:?}\n\
             Namespace managedFields before: {ns_fields}\nafter: {}",
            namespace_managed_fields().await
        );
    }

    let (mut ours_t, mut kubectl_t) = (Vec::new(), Vec::new());
    let (mut ours_req, mut kubectl_req) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let offset = audit_len(&audit);
        let (t, out) = timed(bootstrap(&s, false));
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Flux is synced at"), "{stderr}");
        ours_t.push(t);
        ours_req = requests_of(&audit, offset, "homelab-flux/");

        let offset = audit_len(&audit);
        let (t, out) = timed(kubectl());
        assert!(out.status.success());
        kubectl_t.push(t);
        kubectl_req = requests_of(&audit, offset, "kubectl/");
    }
    assert_eq!(
        resource_versions().await,
        rv_before,
        "neither tool changed an object"
    );
    // The same re-run at -vv, for the leak check.
    let (_, out) = timed(bootstrap(&s, true));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_leak(TOKEN, &text, "bootstrap -vv re-run");

    let list = |r: &[(String, String)]| {
        r.iter()
            .map(|(v, u)| format!("    {v} {u}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let writes = |r: &[(String, String)]| r.iter().filter(|(v, _)| is_write(v)).count();
    eprintln!(
        "\n=== bootstrap re-run vs kubectl apply --server-side ({RUNS} runs each, interleaved)"
    );
    eprintln!(
        "| command | API requests | writes | median ms | min ms | max ms |\n|---|---|---|---|---|---|"
    );
    for (name, req, t) in [
        ("homelab-flux bootstrap (re-run)", &ours_req, &ours_t),
        (
            "kubectl apply --server-side (warm cache)",
            &kubectl_req,
            &kubectl_t,
        ),
    ] {
        eprintln!(
            "| {name} | {} | {} | {} | {} | {} |",
            req.len(),
            writes(req),
            ms(median(t.clone())),
            ms(*t.iter().min().unwrap()),
            ms(*t.iter().max().unwrap())
        );
    }
    eprintln!(
        "| kubectl apply --server-side (first run, cold cache) | {} | {} | {} | | |",
        cold.len(),
        writes(&cold),
        ms(cold_time)
    );
    eprintln!(
        "homelab-flux requests:\n{}\nkubectl requests (warm):\n{}",
        list(&ours_req),
        list(&kubectl_req)
    );

    // --- 2. Kustomization Ready -> process exit ------------------------------------------
    let client = c.client().await;
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        "kustomizations",
    );
    let kustomizations: Api<DynamicObject> = Api::namespaced_with(client, "flux-system", &ar);
    let mut delays = Vec::new();
    for n in 0..WAIT_RUNS {
        // A push: the re-run must wait for Flux to sync the new commit.
        let sha = s.repo.commit_config_map_revision(&format!("{}", n + 2));
        s.gh.set_branch("username", "manifests", "main", &sha);
        let ready_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let seen = ready_at.clone();
        let want = sha.clone();
        let mut stream =
            kube::runtime::watcher::watch_object(kustomizations.clone(), "flux-system").boxed();
        // The watch is established (first event) before the run starts.
        let first = stream.next().await;
        assert!(matches!(first, Some(Ok(Some(_)))), "{first:?}");
        let watch = tokio::spawn(async move {
            while let Some(Ok(Some(o))) = stream.next().await {
                let ready = o.data["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                let at_sha = o.data["status"]["lastAppliedRevision"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(&want));
                if ready && at_sha {
                    *seen.lock().unwrap() = Some(Instant::now());
                    return;
                }
            }
        });
        let cmd = bootstrap(&s, false);
        let run = tokio::task::spawn_blocking(move || {
            let (_, out) = timed(cmd);
            (Instant::now(), out)
        });
        let (exited, out) = run.await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), watch).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("is Ready at {}", &sha[..12])),
            "{stderr}"
        );
        let ready = ready_at.lock().unwrap().expect("the watch saw Ready");
        let delay = exited.saturating_duration_since(ready);
        let early = ready.saturating_duration_since(exited);
        assert!(
            early.is_zero(),
            "the process exited before Ready was seen: {early:?}"
        );
        delays.push(delay);
    }
    eprintln!(
        "\n=== Kustomization Ready (independent watch) -> bootstrap exit ({WAIT_RUNS} runs)\n\
         delays ms: {}\nmedian {} ms, max {} ms",
        delays.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
        ms(median(delays.clone())),
        ms(*delays.iter().max().unwrap())
    );
}

async fn resource_versions() -> Vec<Option<String>> {
    let client = cluster::cluster().client().await;
    let mut out = Vec::new();
    for (group, kind, plural, namespaced) in [
        ("", "Namespace", "namespaces", false),
        ("", "Secret", "secrets", true),
        (
            "source.toolkit.fluxcd.io",
            "GitRepository",
            "gitrepositories",
            true,
        ),
        (
            "kustomize.toolkit.fluxcd.io",
            "Kustomization",
            "kustomizations",
            true,
        ),
    ] {
        let ar = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(group, "v1", kind),
            plural,
        );
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), "flux-system", &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        out.push(
            api.get_opt("flux-system")
                .await
                .unwrap()
                .and_then(|o| o.metadata.resource_version),
        );
    }
    out
}

async fn namespace_managed_fields() -> String {
    let client = cluster::cluster().client().await;
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let ns = api.get("flux-system").await.unwrap();
    serde_json::to_string(&ns.metadata.managed_fields).unwrap()
}
