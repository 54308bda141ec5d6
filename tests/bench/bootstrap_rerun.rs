//! SPEC §7 `bootstrap` targets, measured on the real test environment (kube-apiserver, Flux
//! controllers, SSH git server, fake GitHub). A benchmark program, not a test; run it with
//! `tests/bench/bootstrap-rerun`, which builds the release binary and runs:
//!
//! ```text
//! HOMELAB_FLUX_BIN=target/release/homelab-flux cargo bench --bench bootstrap_rerun
//! ```
//!
//! 1. A re-run on a bootstrapped cluster against `kubectl apply --server-side --field-manager
//!    homelab-flux` of the same four objects: API server requests (counted in kube-apiserver's
//!    audit log by user agent, so the Flux controllers' traffic is not counted), writes among
//!    them, and wall time, interleaved run by run.
//!    The same re-run again with the fake GitHub delaying every answer by 100 ms: the number
//!    of sequential GitHub rounds per run and the median wall time (SPEC §7: one round, at most
//!    200 ms).
//! 2. The delay between the Kustomization turning Ready, seen by a watch in this process, and
//!    the bootstrap process exiting.
//! 3. A fresh bootstrap to Ready after the cluster is rebuilt (etcd wiped, the controllers
//!    restarted): a new deploy key, its proof over SSH, the four objects applied, the wait until
//!    Flux has synced; wall time from spawn to exit.
//! 4. An upgrade re-run, Flux one minor release behind (v2.9.5 → v2.10.1, each downgraded
//!    first with `--force`): requests and writes to the API server, and wall time to the
//!    controllers rolled out and Flux synced, beside the re-run after it (nothing to upgrade).

#[allow(dead_code, reason = "a benchmark uses a part of the tests' support")]
#[path = "../it/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use support::cli::assert_no_leak;
use support::cluster;
use support::fake_github::FakeGitHub;
use support::git_server::SshGitServer;

const TOKEN: &str = "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3fE2d";
const RUNS: usize = 15;
const WAIT_RUNS: usize = 8;
const FRESH_RUNS: usize = 5;
const UPGRADE_RUNS: usize = 3;

fn bin() -> PathBuf {
    std::env::var_os("HOMELAB_FLUX_BIN").map_or_else(support::cli::bin, PathBuf::from)
}

/// One request in the audit log.
struct Event {
    agent: String,
    verb: String,
    uri: String,
    received: jiff::Timestamp,
}

/// Every request of the audit log, once each (a watch logs ResponseStarted and ResponseComplete).
fn audit_events(path: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        if !seen.insert(field("auditID")) {
            continue;
        }
        let Ok(received) = field("requestReceivedTimestamp").parse() else {
            continue;
        };
        out.push(Event {
            agent: field("userAgent"),
            verb: field("verb"),
            uri: field("requestURI"),
            received,
        });
    }
    out
}

/// A run's time window, to attribute audit events to it by their arrival time.
#[derive(Clone, Copy)]
struct Window(jiff::Timestamp, jiff::Timestamp);

/// Runs a command to its end; its wall time from spawn to exit, and its window.
fn timed(mut cmd: Command) -> (Duration, std::process::Output, Window) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let from = jiff::Timestamp::now();
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let elapsed = start.elapsed();
    (elapsed, out, Window(from, jiff::Timestamp::now()))
}

/// The requests with this user agent that arrived within the window, as (verb, URI). Read
/// after the runs: the log is written as requests complete, not necessarily by the time the
/// client has its answer.
fn requests_in(events: &[Event], window: Window, agent: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.agent.starts_with(agent) && e.received >= window.0 && e.received <= window.1)
        .map(|e| (e.verb.clone(), e.uri.clone()))
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
    let gh = support::world::github_serving(&ssh, &repo, TOKEN);
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

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bootstrap_rerun_and_wait_latency());
}

async fn bootstrap_rerun_and_wait_latency() {
    let c = cluster::cluster();
    c.start_flux();
    let audit = c.audit_log_path();
    let s = setup();
    eprintln!("binary: {}", bin().display());

    let (_, out, _) = timed(bootstrap(&s, false));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");

    // --- 1. re-run against kubectl apply --server-side ------------------------------------
    let objects = s.dir.path().join("objects.yaml");
    std::fs::write(&objects, objects_yaml(&s).await).unwrap();
    // KUBECTL picks another kubectl (e.g. one of the versions behind gcloud's dispatcher).
    let kubectl_bin = std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".to_string());
    eprintln!("kubectl: {kubectl_bin}");
    let kube_home = tempfile::tempdir().unwrap();
    let kubectl = || {
        let mut cmd = Command::new(&kubectl_bin);
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
    let (cold_time, out, cold_window) = timed(kubectl());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rv_before = resource_versions().await;
    if rv_before != rv_bootstrapped {
        eprintln!(
            "note: kubectl's first apply changed objects: {rv_bootstrapped:?} -> {rv_before:?}\n\
             Namespace managedFields before: {ns_fields}\nafter: {}",
            namespace_managed_fields().await
        );
    }

    let (mut ours_t, mut kubectl_t) = (Vec::new(), Vec::new());
    let (mut ours_w, mut kubectl_w) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (t, out, w) = timed(bootstrap(&s, false));
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Flux is synced at"), "{stderr}");
        ours_t.push(t);
        ours_w.push(w);

        let (t, out, w) = timed(kubectl());
        assert!(out.status.success());
        kubectl_t.push(t);
        kubectl_w.push(w);
    }
    assert_eq!(
        resource_versions().await,
        rv_before,
        "neither tool changed an object"
    );
    // The same re-run at -vv, for the leak check.
    let (_, out, _) = timed(bootstrap(&s, true));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_leak(TOKEN, &text, "bootstrap -vv re-run");

    std::thread::sleep(Duration::from_secs(1));
    let events = audit_events(&audit);
    let cold = requests_in(&events, cold_window, "kubectl");
    let counts = |windows: &[Window], agent: &str| {
        let n: Vec<usize> = windows
            .iter()
            .map(|w| requests_in(&events, *w, agent).len())
            .collect();
        (*n.iter().min().unwrap(), *n.iter().max().unwrap())
    };
    let (ours_n, kubectl_n) = (
        counts(&ours_w, "homelab-flux/"),
        counts(&kubectl_w, "kubectl"),
    );
    let ours_req = requests_in(&events, *ours_w.last().unwrap(), "homelab-flux/");
    let kubectl_req = requests_in(&events, *kubectl_w.last().unwrap(), "kubectl");
    let all_writes = |windows: &[Window], agent: &str| {
        windows
            .iter()
            .flat_map(|w| requests_in(&events, *w, agent))
            .filter(|(v, _)| is_write(v))
            .count()
    };
    eprintln!(
        "requests per run, min-max over {RUNS} runs: homelab-flux {ours_n:?}, kubectl {kubectl_n:?}; \
         writes in all runs: homelab-flux {}, kubectl {}",
        all_writes(&ours_w, "homelab-flux/"),
        all_writes(&kubectl_w, "kubectl")
    );

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

    // --- 1b. the same re-run with GitHub answering every request after 100 ms -------------
    // SPEC §7: all GitHub reads in one round, median at most 200 ms. A round is a group of
    // requests that arrive together: a request arriving later than 80 ms after the round's
    // first one waited for an answer, and starts the next round.
    let delay = Duration::from_millis(100);
    s.gh.set_delay(delay);
    let mut delayed_t = Vec::new();
    let mut rounds = Vec::new();
    let mut per_round = Vec::new();
    for _ in 0..RUNS {
        s.gh.clear_log();
        let (t, out, _) = timed(bootstrap(&s, false));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        delayed_t.push(t);
        // In arrival order, a request that found no other in flight waited on every answer
        // before it: it starts a round; the others join the round in flight.
        let mut log = s.gh.requests();
        log.sort_by_key(|r| r.at);
        let mut sizes: Vec<usize> = Vec::new();
        for r in &log {
            match sizes.last_mut() {
                Some(size) if r.others_in_flight > 0 => *size += 1,
                _ => sizes.push(1),
            }
        }
        rounds.push(sizes.len());
        per_round = log
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>();
        per_round.insert(0, format!("rounds of {sizes:?}:"));
    }
    s.gh.set_delay(Duration::ZERO);
    eprintln!(
        "\n=== bootstrap re-run, every GitHub answer delayed by 100 ms ({RUNS} runs)\n\
         sequential GitHub rounds per run: min {}, max {}\n\
         wall time: median {} ms, min {} ms, max {} ms (kubectl apply --server-side, warm: median {} ms)\n\
         requests of the last run, {}",
        rounds.iter().min().unwrap(),
        rounds.iter().max().unwrap(),
        ms(median(delayed_t.clone())),
        ms(*delayed_t.iter().min().unwrap()),
        ms(*delayed_t.iter().max().unwrap()),
        ms(median(kubectl_t.clone())),
        per_round.join("\n    ")
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
            let (_, out, _) = timed(cmd);
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
        // Both watches get the same event; the test's may be scheduled a little after the
        // process has already exited, hence signed.
        let delay = if exited >= ready {
            exited.duration_since(ready).as_secs_f64()
        } else {
            -ready.duration_since(exited).as_secs_f64()
        } * 1000.0;
        delays.push(delay);
    }
    let mut sorted = delays.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "\n=== Kustomization Ready (independent watch) -> bootstrap exit ({WAIT_RUNS} runs)\n\
         delays ms: {}\nmedian {:.1} ms, max {:.1} ms",
        delays
            .iter()
            .map(|d| format!("{d:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );

    // --- 3. a fresh bootstrap after a cluster rebuild -----------------------------------
    let mut fresh = Vec::new();
    let mut last_steps = String::new();
    for _ in 0..FRESH_RUNS {
        c.wipe();
        // A rebuilt cluster left alone rolls Flux out before anyone bootstraps it again.
        for name in cluster::FLUX_DEPLOYMENTS {
            c.wait_rolled_out("flux-system", name, Duration::from_secs(180))
                .await
                .unwrap();
        }
        // The controllers' Deployments bring the Namespace back; the bootstrap's objects are gone.
        assert_eq!(resource_versions().await[1..], [None, None, None]);
        let (t, out, _) = timed(bootstrap(&s, false));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("created the read-only deploy key"),
            "{stderr}"
        );
        assert!(stderr.contains("is Ready at"), "{stderr}");
        assert_no_leak(TOKEN, &stderr, "a fresh bootstrap");
        last_steps = stderr.into_owned();
        fresh.push(t);
    }
    eprintln!(
        "\n=== fresh bootstrap to Ready after a cluster rebuild ({FRESH_RUNS} runs)\n\
         wall ms: {}\nmedian {} ms, min {} ms, max {} ms\nthe last run's steps:\n{last_steps}",
        fresh.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
        ms(median(fresh.clone())),
        ms(*fresh.iter().min().unwrap()),
        ms(*fresh.iter().max().unwrap()),
    );

    // --- 4. an upgrade re-run, Flux one minor release behind -------------------------------
    let crds = cluster::testenv_dir().join("crds");
    let manifests = |release: &str| {
        let path = s.dir.path().join(format!("install-{release}.yaml"));
        std::fs::write(&path, cluster::flux_manifests_at(release, &crds).0).unwrap();
        path
    };
    let (old, new) = (manifests("v2.9.5"), manifests(cluster::FLUX_RELEASE));
    let with = |m: &Path, extra: &[&str]| {
        let mut cmd = bootstrap(&s, false);
        cmd.arg("--flux-manifests").arg(m).args(extra);
        cmd
    };
    let (mut up_t, mut up_w, mut same_t, mut same_w) = (vec![], vec![], vec![], vec![]);
    for _ in 0..UPGRADE_RUNS {
        let (_, out, _) = timed(with(&old, &["--force"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let (t, out, w) = timed(with(&new, &[]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("Flux v2.9.5 → v2.10.1"), "{stderr}");
        assert!(stderr.contains("controllers are rolled out"), "{stderr}");
        up_t.push(t);
        up_w.push(w);
        let (t, out, w) = timed(with(&new, &[]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains(" → "), "{stderr}");
        same_t.push(t);
        same_w.push(w);
    }
    std::thread::sleep(Duration::from_secs(1));
    let events = audit_events(&audit);
    let count = |windows: &[Window]| {
        windows
            .iter()
            .map(|w| {
                let r = requests_in(&events, *w, "homelab-flux");
                let writes: Vec<String> = r
                    .iter()
                    .filter(|(v, _)| is_write(v))
                    .map(|(v, u)| format!("{v} {}", u.split('?').next().unwrap_or(u)))
                    .collect();
                (r.len(), writes)
            })
            .collect::<Vec<_>>()
    };
    let (up, same) = (count(&up_w), count(&same_w));
    eprintln!(
        "\n=== upgrade re-run v2.9.5 → v2.10.1, to controllers rolled out and synced ({UPGRADE_RUNS} runs)\n\
         wall ms: {} (median {})\nrequests: {:?}\nwrites of the last upgrade: {:#?}\n\
         === the re-run after it, nothing to upgrade\nwall ms: {} (median {})\nrequests: {:?}, writes: {:?}",
        up_t.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
        ms(median(up_t.clone())),
        up.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        up.last().map(|(_, w)| w.clone()).unwrap_or_default(),
        same_t.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
        ms(median(same_t.clone())),
        same.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        same.iter().map(|(_, w)| w.len()).collect::<Vec<_>>(),
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
