//! `bootstrap` keeps its promises on clusters as homelabs have them (issue 9): two clusters
//! whose contexts are both `default` on one repository, runs that fail half-way or overlap, a
//! branch that moves while bootstrap waits, servers that stall, an API server that restarts, and
//! a Flux install cut short. The real binary, at `-vv` with the token checked in every output,
//! against real kube-apiservers with the real Flux controllers, a real sshd and the fake GitHub.
//!
//! Each test takes the cluster and starts from `world::fresh` or `world::reset` ("Flux
//! installed, nothing bootstrapped"); every wait is for an observable event (a line the run printed, an
//! object's state in the API), never a fixed sleep.

use crate::support;

use std::time::{Duration, Instant};

use kube::Api;
use support::cli::assert_has;
use support::cluster;
use support::fake_github::{Access, RepoSpec, TokenSpec};
use support::world::{
    self, SilentServer, World, condition_status, flux_api, fresh, key_in_cluster, ready_line,
    reconcile_git_repository, signal,
};

fn title_of(c: &cluster::Cluster, context: &str) -> String {
    homelab_flux::keys::default_title(context, c.server_url())
}

/// Waits until the run prints `text`; fails if it ended without.
fn wait_for(run: &support::cli::Spawned, text: &str, limit: Duration) {
    assert!(
        run.wait_for_stderr(text, limit),
        "the run ended without printing `{text}`"
    );
}

/// Defect 1: k3s names every context `default`. Two clusters on one repository (paths `./a`
/// and `./b`), both `default`: each run used to delete the other cluster's key as "stale".
/// Now each title carries the cluster's id: after a, b, a, b both clusters still fetch, and
/// GitHub lists one key per cluster.
#[tokio::test(flavor = "multi_thread")]
async fn two_clusters_whose_contexts_are_both_default_keep_their_own_keys() {
    let a = cluster::cluster();
    let _exclusive = a.exclusive().await;
    world::reset(a).await;
    let b = cluster::second_cluster();
    world::reset(b).await;
    let (ka, kb) = (
        a.kubeconfig_with_context("default"),
        b.kubeconfig_with_context("default"),
    );
    let w = World::new("twoclusters", "./a", &ka);
    let sha = w.repo.commit(
        &[
            (
                "a/namespace.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: cluster-a\n",
            ),
            (
                "b/namespace.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: cluster-b\n",
            ),
        ],
        "one folder per cluster",
    );
    w.gh.set_branch("username", "manifests", "main", &sha);
    let (title_a, title_b) = (title_of(a, "default"), title_of(b, "default"));
    assert_ne!(title_a, title_b);

    for round in 0..2 {
        for (kubeconfig, path, title) in [(&ka, "./a", &title_a), (&kb, "./b", &title_b)] {
            w.set_path(path);
            w.gh.clear_log();
            let r = w.bootstrap_on(kubeconfig, &[]);
            assert_eq!(r.code, 0, "round {round}, {path}: {}", r.transcript());
            if round == 0 {
                assert_has(&r, &format!("- created the read-only deploy key `{title}`"));
                assert_has(&r, &ready_line(&sha));
            } else {
                // The second round finds everything as the first left it.
                assert_has(
                    &r,
                    "the deploy key in the cluster is still registered on GitHub",
                );
                assert_has(&r, &format!("- Flux is synced at {}", &sha[..12]));
                assert!(w.gh.writes().is_empty(), "{:?}", w.gh.writes());
            }
            assert!(
                !r.stderr.contains("deleted the stale deploy key"),
                "no key of the other cluster is stale: {}",
                r.stderr
            );
        }
    }
    let keys = w.gh.deploy_keys("username", "manifests");
    assert_eq!(keys.len(), 2, "one key per cluster: {keys:?}");
    for (c, title) in [(a, &title_a), (b, &title_b)] {
        let client = c.client().await;
        let mine = w.keys_titled(title);
        assert_eq!(mine.len(), 1, "{title}: {keys:?}");
        assert_eq!(mine[0].key, key_in_cluster(client.clone()).await);
        // The cluster still fetches with its key when asked to.
        let handled = reconcile_git_repository(client).await;
        assert_eq!(
            condition_status(&handled, "Ready").as_deref(),
            Some("True"),
            "{title}: {:?}",
            handled.data["status"]
        );
    }
    b.stop_flux();
}

/// Existing keys titled the old way (`homelab-flux <context>`) are this cluster's when its
/// Secret holds them: reused, not replaced; an old-style key the Secret does not hold may be
/// another cluster's and is never deleted.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_titled_the_old_way_is_reused_and_never_deleted_as_stale() {
    let (_, _exclusive, w) = fresh("legacy").await;
    // What an earlier version left: the key in the Secret, titled after the context alone.
    let r = w.bootstrap(&["--key-title", "homelab-flux homelab-test"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let other = support::git_server::generate_ssh_key("another cluster, same context");
    let other_id = w.gh.add_deploy_key(
        "username",
        "manifests",
        "homelab-flux homelab-test",
        &other.public_key,
        true,
    );
    w.gh.clear_log();
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        "the deploy key in the cluster is still registered on GitHub",
    );
    assert!(w.gh.writes().is_empty(), "{:?}", w.gh.writes());
    let legacy = w.keys_titled("homelab-flux homelab-test");
    assert_eq!(legacy.len(), 2, "{legacy:?}");
    assert!(legacy.iter().any(|k| k.id == other_id));
}

/// Defect 2: a rebuilt cluster needs a new key, and the Secret's apply is refused (an admission
/// policy here; RBAC, a webhook or the network in life). The old key must stay on GitHub
/// until the Secret holding the new key is applied; the next run converges to one key.
#[tokio::test(flavor = "multi_thread")]
async fn stale_keys_stay_on_github_until_the_secret_with_the_new_key_is_applied() {
    let (c, _exclusive, w) = fresh("applyfails").await;
    let title = title_of(c, cluster::CONTEXT);
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let old = w.keys_titled(&title);
    assert_eq!(old.len(), 1);

    c.wipe();
    let client = c.client().await;
    let policy = DenySecretPolicy::install(client.clone()).await;
    w.gh.clear_log();
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_has(&r, "the API server refused applying Secret `flux-system`");
    assert_has(&r, "- proved the deploy key over SSH");
    assert!(
        !r.stderr.contains("deleted the stale deploy key"),
        "{}",
        r.stderr
    );
    let writes: Vec<String> =
        w.gh.writes()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
    assert_eq!(writes, ["POST /repos/username/manifests/keys"], "no DELETE");
    assert!(
        w.keys_titled(&title).iter().any(|k| k.id == old[0].id),
        "the old key is still on GitHub"
    );

    policy.remove().await;
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
    let now = w.keys_titled(&title);
    assert_eq!(now.len(), 1, "one key per title: {now:?}");
    assert_eq!(now[0].key, key_in_cluster(client).await);
}

/// A ValidatingAdmissionPolicy that refuses writes of the Secret `flux-system`.
struct DenySecretPolicy {
    client: kube::Client,
}

impl DenySecretPolicy {
    async fn install(client: kube::Client) -> DenySecretPolicy {
        support::admission::deny(
            &client,
            "deny-flux-secret",
            serde_json::json!({
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["secrets"],
            }),
            "object.metadata.name != 'flux-system'",
            "test policy: the Secret flux-system is refused",
        )
        .await;
        wait_until_secret_writes_are_refused(&client, true).await;
        DenySecretPolicy { client }
    }

    async fn remove(self) {
        support::admission::delete(&self.client, "deny-flux-secret").await;
        wait_until_secret_writes_are_refused(&self.client, false).await;
    }
}

/// Waits until a dry-run create of the Secret `flux-system` is refused (or, with `refused`
/// false, accepted): the API server's view of the policy, observed.
async fn wait_until_secret_writes_are_refused(client: &kube::Client, refused: bool) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "flux-system");
    let probe: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "flux-system", "namespace": "flux-system"}}),
    )
    .unwrap();
    let dry = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    // No event says that a policy took effect: its own refusal, asked for with a dry run, is
    // what is waited on (any other error, or an admission, means not yet).
    let by_the_policy = |r: &Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(e)) if e.message.contains("test policy"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while by_the_policy(&secrets.create(&dry, &probe).await) != refused {
        assert!(
            Instant::now() < deadline,
            "the policy did not take effect (refused: {refused})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Defect 3, the Lease: while another run holds `flux-system/homelab-flux-bootstrap`, a
/// bootstrap says it waits, and goes on once the Lease is released; a Lease that stays held
/// past `--timeout` stops the run with a clear message before anything changed.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_bootstrap_waits_for_the_lease_or_stops_with_a_clear_message() {
    let (c, _exclusive, w) = fresh("lease").await;
    let client = c.client().await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "flux-system");
    let hold = |seconds: i32| {
        // A MicroTime: microseconds, as the API server parses it.
        let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ");
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "homelab-flux-bootstrap", "namespace": "flux-system"},
            "spec": {"holderIdentity": "another run", "leaseDurationSeconds": seconds,
                     "acquireTime": now.to_string(), "renewTime": now.to_string()},
        })
    };
    let params = kube::api::PatchParams::apply("homelab-flux-test").force();

    // Held for an hour: the run gives up at its timeout, having changed nothing.
    leases
        .patch(
            "homelab-flux-bootstrap",
            &params,
            &kube::api::Patch::Apply(hold(3600)),
        )
        .await
        .unwrap();
    let r = w.bootstrap(&["--timeout", "3s"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr.ends_with("error: another bootstrap of this cluster (`another run`) still holds the Lease `flux-system/homelab-flux-bootstrap`; nothing was changed. Run again once it has finished; a run that died releases it within 30 s\n"),
        "{}",
        r.stderr
    );
    assert!(w.gh.writes().is_empty(), "{:?}", w.gh.writes());
    assert!(
        flux_api(client.clone(), "Secret")
            .get_opt("flux-system")
            .await
            .unwrap()
            .is_none()
    );

    // Released while the run waits: it goes on and converges.
    let run = w.spawn_bootstrap(&[]);
    wait_for(
        &run,
        "waiting for another bootstrap of this cluster to finish (Lease `flux-system/homelab-flux-bootstrap` held by `another run`)",
        Duration::from_secs(60),
    );
    leases
        .delete("homelab-flux-bootstrap", &Default::default())
        .await
        .unwrap();
    let r = run.finish(Duration::from_secs(300));
    w.check(&r, "bootstrap after the Lease was released");
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "- another bootstrap of this cluster finished; going on");
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
    // The run gave its Lease back.
    assert!(
        leases
            .get_opt("homelab-flux-bootstrap")
            .await
            .unwrap()
            .is_none()
    );
}

/// Defect 3, two runs at once on a cluster that needs a new key: both finish, and GitHub ends
/// with one key for the cluster, the one in its Secret.
#[tokio::test(flavor = "multi_thread")]
async fn two_bootstraps_at_once_end_with_one_key() {
    let (c, _exclusive, w) = fresh("together").await;
    let title = title_of(c, cluster::CONTEXT);
    let first = w.spawn_bootstrap(&[]);
    let second = w.spawn_bootstrap(&[]);
    for (n, run) in [first, second].into_iter().enumerate() {
        let r = run.finish(Duration::from_secs(300));
        w.check(&r, &format!("concurrent bootstrap {n}"));
        assert_eq!(r.code, 0, "run {n}: {}", r.transcript());
        assert_has(&r, &ready_line(w.repo.seeded_commit()));
    }
    let keys = w.keys_titled(&title);
    assert_eq!(keys.len(), 1, "never two keys for one cluster: {keys:?}");
    assert_eq!(keys[0].key, key_in_cluster(c.client().await).await);
}

/// SIGCONTs a paused controller even when the test fails half-way.
struct Paused(u32);

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// Defect 4: a commit lands (a Renovate merge) while bootstrap waits. source-controller is
/// paused until the commit is pushed, so that Flux first fetches the new head: Ready at a newer
/// head of the branch is synced, not a timeout. The head is read from GitHub's API.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_landing_during_the_wait_counts_as_synced() {
    the_branch_moves_while_bootstrap_waits("moving", Access::Read).await;
}

/// Defect 4 with a token that cannot read contents (Metadata and Administration only, a
/// private repository): GitHub answers 403 for the branch, so the new head is read over SSH
/// with the deploy key.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_landing_during_the_wait_counts_as_synced_without_contents_access() {
    the_branch_moves_while_bootstrap_waits("movingssh", Access::None).await;
}

async fn the_branch_moves_while_bootstrap_waits(tag: &str, contents: Access) {
    let (c, _exclusive, w) = fresh(tag).await;
    w.gh.add_token(
        &w.token,
        TokenSpec::fine_grained("username").contents(contents),
    );
    let source = c
        .flux_pid("source-controller")
        .expect("source-controller runs");
    signal(source, "STOP");
    let paused = Paused(source);
    let run = w.spawn_bootstrap(&[]);
    wait_for(
        &run,
        "- Kustomization `flux-system/flux-system` created",
        Duration::from_secs(120),
    );
    let proven = w.repo.seeded_commit().to_string();
    let newer = w.repo.commit_config_map_revision("2");
    w.gh.set_branch("username", "manifests", "main", &newer);
    drop(paused);
    let r = run.finish(Duration::from_secs(300));
    w.check(&r, "bootstrap while the branch moves");
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        &format!("debug: Flux reports {0}; `main` is at {0}", &newer[..12]),
    );
    if contents == Access::None {
        // GitHub refused every branch read, so the head the run names came over SSH.
        let branch_reads: Vec<u16> =
            w.gh.requests()
                .iter()
                .filter(|q| q.path.ends_with("/branches/main"))
                .map(|q| q.status)
                .collect();
        assert!(
            !branch_reads.is_empty() && branch_reads.iter().all(|s| *s == 403),
            "{branch_reads:?}"
        );
        // One in the first round, one in the wait: after a 403 the wait asks over SSH alone.
        assert!(branch_reads.len() <= 2, "{branch_reads:?}");
    }
    for kind in ["GitRepository", "Kustomization"] {
        assert_has(
            &r,
            &format!(
                "- {kind} `flux-system/flux-system` is Ready at {} (`main` moved on from {} while bootstrap waited)",
                &newer[..12],
                &proven[..12]
            ),
        );
    }
}

/// Defect 5, SSH: a server that accepts TCP and never answers kept the run going forever with
/// the unproven key on GitHub. The proof gives up at its 30 s deadline, deletes the new key
/// and leaves the cluster untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_ssh_server_fails_the_proof_at_its_deadline() {
    let (c, _exclusive, w) = fresh("stalledssh").await;
    let silent = SilentServer::start();
    let url = format!(
        "ssh://git@127.0.0.1:{}/srv/git/manifests.git",
        silent.port()
    );
    w.gh.add_repo(
        RepoSpec::new("username", "manifests")
            .branch("main", w.repo.seeded_commit())
            .ssh_url(&url),
    );
    let begin = Instant::now();
    let r = w.bootstrap(&["--timeout", "2m"]);
    let took = begin.elapsed();
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert!(
        r.stderr.ends_with(&format!(
            "error: the SSH server of {url} did not answer within 30 s: check that the SSH endpoint is reachable (a firewall that drops packets rather than refusing them stalls like this); the cluster was not changed\n"
        )),
        "{}",
        r.stderr
    );
    assert!(silent.connections() >= 1, "the proof reached the server");
    assert!(took >= Duration::from_secs(30), "gave up early: {took:?}");
    eprintln!("gave up on the stalled SSH server after {took:?}");
    assert_eq!(w.gh.deploy_keys("username", "manifests"), []);
    let writes: Vec<String> = w.gh.writes().iter().map(|r| r.method.clone()).collect();
    assert_eq!(writes, ["POST", "DELETE"]);
    let client = c.client().await;
    for kind in ["Secret", "GitRepository", "Kustomization"] {
        assert!(
            flux_api(client.clone(), kind)
                .get_opt("flux-system")
                .await
                .unwrap()
                .is_none(),
            "{kind} was created"
        );
    }
}

/// Defect 5, API server: a server that accepts TCP and never answers (the TLS handshake never
/// completes) ends `bootstrap` and `status` with "cannot reach" (exit 2) after the connect
/// timeout, with nothing written to GitHub.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_api_server_ends_the_run_at_the_request_timeout() {
    let c = cluster::cluster();
    let _shared = c.shared().await;
    let silent = SilentServer::start();
    let w = World::new("stalledapi", "./clusters/home", c.kubeconfig_path());
    let kubeconfig = w.dir.path().join("stalled.kubeconfig");
    support::world::kubeconfig_for_port(&kubeconfig, silent.port());
    for args in [vec!["bootstrap", "--timeout", "2m"], vec!["status"]] {
        let begin = Instant::now();
        let r = support::cli::run_with_limit(
            w.command_with(&kubeconfig, &args),
            Duration::from_secs(120),
        );
        let took = begin.elapsed();
        w.check(&r, &args.join(" "));
        assert_eq!(r.code, 2, "{}", r.transcript());
        assert_has(
            &r,
            &format!(
                "cannot reach the Kubernetes API server at https://127.0.0.1:{}/ (no answer within the 10 s connect or 30 s read timeout)",
                silent.port()
            ),
        );
        assert!(took >= Duration::from_secs(10), "gave up early: {took:?}");
        eprintln!(
            "{}: gave up on the stalled API server after {took:?}",
            args[0]
        );
    }
    assert!(w.gh.writes().is_empty(), "{:?}", w.gh.writes());
}

/// Issue 9, the read timeout: a server that completes the TLS handshake, takes the request and
/// never answers ends `bootstrap` and `status` with "cannot reach" (exit 2) once the 30 s read
/// timeout has passed, never earlier, with nothing written to GitHub. Both runs go at once.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_server_that_takes_the_request_and_never_answers_ends_the_run_at_the_read_timeout() {
    let c = cluster::cluster();
    let _shared = c.shared().await;
    let silent = support::world::SilentTlsServer::start();
    let w = World::new("silenttls", "./clusters/home", c.kubeconfig_path());
    let kubeconfig = w.dir.path().join("silent.kubeconfig");
    support::world::kubeconfig_for_port(&kubeconfig, silent.port());
    let runs: Vec<_> = [vec!["bootstrap", "--timeout", "2m"], vec!["status"]]
        .into_iter()
        .map(|args| {
            let cmd = w.command_with(&kubeconfig, &args);
            std::thread::spawn(move || {
                let begin = Instant::now();
                let r = support::cli::run_with_limit(cmd, Duration::from_secs(180));
                (args, r, begin.elapsed())
            })
        })
        .collect();
    for run in runs {
        let (args, r, took) = run.join().unwrap();
        w.check(&r, &args.join(" "));
        assert_eq!(r.code, 2, "{}", r.transcript());
        assert_has(
            &r,
            &format!(
                "cannot reach the Kubernetes API server at https://127.0.0.1:{}/ (no answer within the 10 s connect or 30 s read timeout)",
                silent.port()
            ),
        );
        assert!(took >= Duration::from_secs(30), "gave up early: {took:?}");
        eprintln!(
            "{}: gave up on the silent API server after {took:?}",
            args[0]
        );
    }
    assert!(silent.received() > 0, "the requests went out over TLS");
    assert!(w.gh.writes().is_empty(), "{:?}", w.gh.writes());
}

/// Issue 9, a failed clean-up: after a rebuild, GitHub fails every DELETE (502, through all
/// retries) while the stale key of the old cluster is deleted. The run says which key is left
/// and what to do; the next run, with GitHub well again, deletes it and ends synced.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_key_github_fails_to_delete_is_reported_and_deleted_by_the_next_run() {
    let (c, _exclusive, w) = fresh("cleanup").await;
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let title = title_of(c, c.context());
    let old = w.gh.deploy_keys("username", "manifests");
    assert_eq!(old.len(), 1, "{old:?}");

    c.wipe();
    w.gh.fail_deletes(Some(502));
    let r = w.bootstrap(&[]);
    w.gh.fail_deletes(None);
    assert_eq!(r.code, 1, "{}", r.transcript());
    let id = old[0].id;
    assert_has(
        &r,
        &format!(
            "- could not delete the stale deploy key `{title}` (id {id}): DELETE /repos/username/manifests/keys/{id}: GitHub answered 502 after 4 attempts; try again later; the run goes on"
        ),
    );
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
    assert!(
        r.stderr.trim_end().ends_with(&format!(
            "error: the cluster holds its new deploy key, but GitHub did not delete the stale key `{title}` (id {id}); run `homelab-flux bootstrap` again to delete it, or delete it under the repository's Settings → Deploy keys"
        )),
        "{}",
        r.stderr
    );
    let keys = w.gh.deploy_keys("username", "manifests");
    assert_eq!(
        keys.len(),
        2,
        "the old key is left, beside the new: {keys:?}"
    );
    let in_cluster = key_in_cluster(c.client().await).await;
    assert!(keys.iter().any(|k| k.id == id && k.key != in_cluster));

    w.gh.clear_log();
    let r = w.bootstrap(&[]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        &format!("- deleted the stale deploy key `{title}` (id {id})"),
    );
    let writes: Vec<String> =
        w.gh.writes()
            .iter()
            .map(|q| format!("{} {}", q.method, q.path))
            .collect();
    assert_eq!(
        writes,
        [format!("DELETE /repos/username/manifests/keys/{id}")],
        "no new key: the cluster's is kept"
    );
    let keys = w.gh.deploy_keys("username", "manifests");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].key, key_in_cluster(c.client().await).await);
}

/// Defect 6: the API server restarts while bootstrap waits, and etcd moves on meanwhile. The
/// watch drops, its resumption is answered 410 Gone ("too old resource version"), it is
/// started afresh, and the run ends Ready (exit 0) once Flux syncs.
#[tokio::test(flavor = "multi_thread")]
async fn the_wait_survives_an_api_server_restart() {
    let (c, _exclusive, w) = fresh("restart").await;
    c.stop_flux(); // so that the wait cannot end before the restart
    let run = w.spawn_bootstrap(&[]);
    wait_for(
        &run,
        "- Kustomization `flux-system/flux-system` created",
        Duration::from_secs(120),
    );
    wait_for(
        &run,
        "GitRepository `flux-system`: waiting for the controller",
        Duration::from_secs(60),
    );
    // etcd moves on while the API server is down: the resumed watch is answered 410 Gone.
    c.restart_api_server_past_every_watch();
    c.start_flux();
    let r = run.finish(Duration::from_secs(300));
    w.check(&r, "bootstrap across an API server restart");
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "the watch on GitRepository dropped");
    assert_has(&r, "too old resource version");
    assert_has(&r, "; resuming");
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
}

/// Defect 7: a Flux install cut short after its CRDs (the controllers' Deployments missing)
/// used to count as installed, and bootstrap waited for controllers that did not exist. Now
/// the manifests are applied again, writing only what differs (the CRDs are not rewritten).
#[tokio::test(flavor = "multi_thread")]
async fn a_flux_install_cut_short_is_finished() {
    let (c, _exclusive, w) = fresh("halfinstalled").await;
    c.delete_flux_deployments();
    let (manifests, count) = cluster::flux_manifests();
    let file = w.dir.path().join("install.yaml");
    std::fs::write(&file, manifests).unwrap();
    let file = file.to_str().unwrap();
    let client = c.client().await;
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    let versions = || async {
        let mut v = Vec::new();
        for name in cluster::FLUX_CRDS {
            v.push(crds.get(name).await.unwrap().metadata.resource_version);
        }
        v
    };
    let before = versions().await;

    let r = w.bootstrap(&["--flux-manifests", file]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        "Flux is not fully installed: no Deployment `flux-system/source-controller`, no Deployment `flux-system/kustomize-controller`",
    );
    assert_has(
        &r,
        &format!("- installed Flux from `{file}` ({count} objects)"),
    );
    assert_has(
        &r,
        &format!(
            "2 of {count} objects written, {} already as wanted",
            count - 2
        ),
    );
    assert_has(&r, &ready_line(w.repo.seeded_commit()));
    assert_eq!(versions().await, before, "the CRDs were not rewritten");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client, "flux-system");
    for name in cluster::FLUX_DEPLOYMENTS {
        assert!(deployments.get_opt(name).await.unwrap().is_some(), "{name}");
    }
    let r = w.bootstrap(&["--flux-manifests", file]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(!r.stderr.contains("installed Flux"), "installed once");
}

/// Defect 8: `--force` onto another path says that `prune: true` makes Flux delete what the
/// old path applied.
#[tokio::test(flavor = "multi_thread")]
async fn force_onto_another_path_warns_about_prune() {
    let (_, _exclusive, w) = fresh("prune").await;
    let r = w.bootstrap(&["--no-wait"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    w.set_path("./clusters/other");
    let r = w.bootstrap(&["--no-wait"]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert!(!r.stderr.contains("prune"), "{}", r.stderr);
    let r = w.bootstrap(&["--no-wait", "--force"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        "note: the Kustomization `flux-system/flux-system` has `prune: true`: Flux deletes what it applied from the old path that the new one does not hold",
    );
}
