//! One bootstrap scenario for the end-to-end tests: a repository served over SSH, the fake
//! GitHub that describes it (its deploy keys are the SSH server's authorized keys, its `/meta`
//! lists the server's host key), a config directory, and the real binary pointed at a cluster's
//! kubeconfig. Every run is at `-vv` and checked for the world's token (the canary check). Also
//! a TCP listener that accepts and stays silent (a stalled server), and helpers that read and
//! reset the Flux objects of any test cluster.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cli::{Run, Spawned, assert_no_leak, command, run_with_limit};
use super::cluster::Cluster;
use super::fake_github::{FakeApp, FakeGitHub, FakeKey, RepoSpec, TokenSpec};
use super::git_server::{GitRepo, SshGitServer};

/// A fine-grained token shaped like GitHub's, unique per tag. The tag is scrambled into letters
/// that no hex SHA holds: spelled out, it would show in repository names and trip the leak check.
pub fn token(tag: &str) -> String {
    let scrambled: String = super::fake_github::fake_sha(tag)[..16]
        .bytes()
        .map(|b| char::from(b'G' + (b as char).to_digit(16).unwrap() as u8))
        .collect();
    let mut t = format!("github_pat_11E2E{scrambled}");
    let fill = "Qz9yX8wV7uT6s5R4q3P2o1N0mL9kJ8iH7gF6eD5cB4aZ3yX2wV1uT0sR9qP8oN7mL6kJ5iQ4hG3fE2dC1bA0zYxWvUtSr";
    t.push_str(&fill[..93 - t.len()]);
    t
}

/// A fake GitHub where `username/manifests` is `repo` on `ssh` (branch `main` at the seeded
/// commit), `token` a fine-grained token of `username`, deploy keys the server's authorized keys
/// and `/meta` its host key.
#[allow(
    dead_code,
    reason = "the bootstrap_rerun benchmark's world; the tests use World"
)]
pub fn github_serving(ssh: &SshGitServer, repo: &GitRepo, token: &str) -> FakeGitHub {
    serve(FakeGitHub::start(), ssh, repo, token)
}

fn serve(gh: FakeGitHub, ssh: &SshGitServer, repo: &GitRepo, token: &str) -> FakeGitHub {
    gh.add_token(token, TokenSpec::fine_grained("username"));
    gh.add_repo(
        RepoSpec::new("username", "manifests")
            .branch("main", repo.seeded_commit())
            .ssh_url(&ssh.url(repo)),
    );
    gh.set_host_keys(&[ssh.host_key()]);
    gh.set_authorized_keys_file(ssh.authorized_keys_path());
    gh
}

/// A GitHub repository `username/manifests` served over SSH, and a config directory for it.
pub struct World {
    pub gh: FakeGitHub,
    pub ssh: SshGitServer,
    pub repo: GitRepo,
    pub dir: tempfile::TempDir,
    pub token: String,
    /// Every token this world has used (a rotation adds one): none may show in any output.
    tokens: Mutex<Vec<String>>,
    kubeconfig: PathBuf,
}

impl World {
    /// A world whose runs use `kubeconfig`, with `path:` in `flux.yaml`.
    pub fn new(tag: &str, path: &str, kubeconfig: &Path) -> World {
        Self::with_github(FakeGitHub::start(), tag, path, kubeconfig)
    }

    /// The same with the fake GitHub over HTTPS ([`FakeGitHub::start_https`]); runs trust the
    /// test CA (`SSL_CERT_FILE`), as the Flux controllers do.
    pub fn new_https(tag: &str, path: &str, kubeconfig: &Path) -> World {
        Self::with_github(FakeGitHub::start_https(), tag, path, kubeconfig)
    }

    fn with_github(gh: FakeGitHub, tag: &str, path: &str, kubeconfig: &Path) -> World {
        let ssh = SshGitServer::start();
        let repo = ssh.create_repo(&format!("manifests-{tag}"));
        let token = token(tag);
        let gh = serve(gh, &ssh, &repo, &token);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        let w = World {
            gh,
            ssh,
            repo,
            dir,
            tokens: Mutex::new(vec![token.clone()]),
            token,
            kubeconfig: kubeconfig.to_path_buf(),
        };
        w.set_path(path);
        super::cli::write_secrets(
            &w.dir.path().join("config/secrets-flux.yaml"),
            &format!("token: {}\n", w.token),
        );
        w
    }

    /// Rewrites `flux.yaml` with another `path:`.
    pub fn set_path(&self, path: &str) {
        std::fs::write(
            self.dir.path().join("config/flux.yaml"),
            format!(
                "repo: https://github.com/username/manifests.git\nbranch: main\npath: {path}\n"
            ),
        )
        .unwrap();
    }

    /// `homelab-flux -vv ARGS --kubeconfig KUBECONFIG` against this world's fake GitHub.
    pub fn command_with<S: AsRef<std::ffi::OsStr>>(
        &self,
        kubeconfig: &Path,
        args: &[S],
    ) -> Command {
        let mut cmd = command(self.dir.path());
        cmd.arg("-vv")
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("HOMELAB_FLUX_GITHUB_API_URL", self.gh.url());
        if self.gh.url().starts_with("https://") {
            cmd.env("SSL_CERT_FILE", super::tls::test_ca().bundle_path());
        }
        cmd
    }

    /// Replaces the token in the secrets file (the old one stays in the leak check).
    pub fn set_token(&self, token: &str) {
        super::cli::write_secrets(
            &self.dir.path().join("config/secrets-flux.yaml"),
            &format!("token: {token}\n"),
        );
        self.tokens.lock().unwrap().push(token.to_string());
    }

    /// Fails if any token of this world shows in the run's output; prints the run.
    pub fn check(&self, r: &Run, what: &str) {
        for token in self.tokens.lock().unwrap().iter() {
            assert_no_leak(token, &r.transcript(), what);
        }
        eprintln!("{}", r.transcript());
    }

    /// `homelab-flux -vv ARGS` on the world's cluster, checked (a hang guard of 300 s).
    pub fn run(&self, args: &[&str]) -> Run {
        let r = run_with_limit(
            self.command_with(&self.kubeconfig, args),
            Duration::from_secs(300),
        );
        self.check(&r, &args.join(" "));
        r
    }

    /// Starts `homelab-flux -vv ARGS` on the world's cluster; [`World::finish`] ends it.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        Spawned::start(self.command_with(&self.kubeconfig, args))
    }

    /// Waits for a spawned run (a hang guard of 300 s) and checks it like [`World::run`].
    pub fn finish(&self, run: Spawned, args: &[&str]) -> Run {
        let r = run.finish(Duration::from_secs(300));
        self.check(&r, &args.join(" "));
        r
    }

    /// `bootstrap EXTRA` on the world's cluster (see [`bootstrap_args`]).
    pub fn bootstrap(&self, extra: &[&str]) -> Run {
        self.bootstrap_on(&self.kubeconfig, extra)
    }

    /// `bootstrap --timeout 150s EXTRA` on the cluster of `kubeconfig`.
    pub fn bootstrap_on(&self, kubeconfig: &Path, extra: &[&str]) -> Run {
        let args = bootstrap_args(extra);
        let r = run_with_limit(
            self.command_with(kubeconfig, &args),
            Duration::from_secs(300),
        );
        self.check(&r, &args.join(" "));
        r
    }

    /// Starts `bootstrap EXTRA` and returns at once, to act on what the run announces.
    pub fn spawn_bootstrap(&self, extra: &[&str]) -> Spawned {
        let args = bootstrap_args(extra);
        Spawned::start(self.command_with(&self.kubeconfig, &args))
    }

    /// `flux.yaml` with `auth: github-app`, and `secrets-flux.yaml` with the App (its key in
    /// `app.pem` beside it, mode 600) and, when `with_token`, the world's token (which deletes
    /// the cluster's old deploy key).
    pub fn use_github_app(&self, app: &FakeApp, with_token: bool) {
        let config = self.dir.path().join("config");
        std::fs::write(
            config.join("flux.yaml"),
            "repo: https://github.com/username/manifests.git\nbranch: main\npath: ./clusters/home\nauth: github-app\n",
        )
        .unwrap();
        super::cli::write_secrets(&config.join("app.pem"), &app.private_key_pem());
        let token = match with_token {
            true => format!("token: {}\n", self.token),
            false => String::new(),
        };
        super::cli::write_secrets(
            &config.join("secrets-flux.yaml"),
            &format!(
                "{token}githubApp:\n  id: {}\n  privateKeyFile: app.pem\n",
                app.id()
            ),
        );
    }

    /// Back to the default `auth: deploy-key` with `path: ./clusters/home`, the token alone in
    /// the secrets file.
    pub fn use_deploy_key(&self) {
        self.set_path("./clusters/home");
        super::cli::write_secrets(
            &self.dir.path().join("config/secrets-flux.yaml"),
            &format!("token: {}\n", self.token),
        );
    }

    /// Fails if the App's private key (any line of its PEM body) or any installation token the
    /// fake issued shows in the run's output.
    pub fn check_app_secrets(&self, app: &FakeApp, r: &Run) {
        let transcript = r.transcript();
        let pem = app.private_key_pem();
        let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(body.len() > 20, "a 2048-bit PEM body");
        for line in body {
            assert_no_leak(line, &transcript, "the App's private key");
        }
        for issued in self.gh.installation_tokens() {
            assert_no_leak(&issued.token, &transcript, "an installation token");
        }
    }

    /// A re-run that changed nothing: the Secret, GitRepository and Kustomization unchanged and
    /// nothing written to GitHub but installation token requests (since the last
    /// [`FakeGitHub::clear_log`]).
    pub fn assert_unchanged(&self, r: &Run) {
        for what in [
            "Secret `flux-system/flux-system` unchanged",
            "GitRepository `flux-system/flux-system` unchanged",
            "Kustomization `flux-system/flux-system` unchanged",
        ] {
            super::cli::assert_has(r, what);
        }
        let writes: Vec<String> = self.gh.writes().into_iter().map(|q| q.path).collect();
        assert!(
            writes.iter().all(|p| p.ends_with("/access_tokens")),
            "{writes:?}"
        );
    }

    /// The keys GitHub lists on `username/manifests` with this title.
    pub fn keys_titled(&self, title: &str) -> Vec<FakeKey> {
        self.gh
            .deploy_keys("username", "manifests")
            .into_iter()
            .filter(|k| k.title == title)
            .collect()
    }
}

/// `bootstrap EXTRA`, with `--timeout 150s` unless EXTRA sets one.
fn bootstrap_args(extra: &[&str]) -> Vec<String> {
    let timeout: &[&str] = if extra.contains(&"--timeout") {
        &[]
    } else {
        &["--timeout", "150s"]
    };
    std::iter::once(&"bootstrap")
        .chain(timeout)
        .chain(extra)
        .map(|a| a.to_string())
        .collect()
}

/// A TCP listener on 127.0.0.1 that accepts every connection and never sends a byte: a server
/// that hangs (an overloaded host, a half-dead tunnel). Connections are held until it drops.
pub struct SilentServer {
    port: u16,
    accepted: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                held.lock().unwrap().push(stream);
            }
        });
        SilentServer { port, accepted }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it has taken so far.
    pub fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

/// A server that completes the TLS handshake, reads what it is sent and never answers: an API
/// server that hangs once the connection is up. Where [`SilentServer`] stands for the connect
/// timeout, this one stands for the read timeout.
pub struct SilentTlsServer {
    port: u16,
    received: Arc<std::sync::atomic::AtomicUsize>,
    _certs: tempfile::TempDir,
}

impl SilentTlsServer {
    pub fn start() -> SilentTlsServer {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncReadExt as _;
        let certs = tempfile::tempdir().unwrap();
        let (config, _) = super::tls::config(certs.path());
        let received = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&received);
        let port = super::loopback::serve(move |stream| {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&config));
            let seen = Arc::clone(&seen);
            async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                // Takes the request, and never writes a byte back.
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    seen.fetch_add(n, Ordering::SeqCst);
                }
            }
        });
        SilentTlsServer {
            port,
            received,
            _certs: certs,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many bytes of requests it has read over TLS so far.
    pub fn received(&self) -> usize {
        self.received.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A kubeconfig for `https://127.0.0.1:port` that skips TLS verification, written to `path`.
pub fn kubeconfig_for_port(path: &Path, port: u16) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stalled\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: stalled\n  user:\n    token: not-a-real-token\ncontexts:\n- name: stalled\n  context:\n    cluster: stalled\n    user: stalled\ncurrent-context: stalled\n"
        ),
    )
    .unwrap();
}

/// The step line of a run that ended synced: the Kustomization Ready at `sha`.
pub fn ready_line(sha: &str) -> String {
    format!(
        "Kustomization `flux-system/flux-system` is Ready at {}",
        &sha[..12]
    )
}

/// The Flux objects' API in `flux-system` (`Secret`, `GitRepository`, `Kustomization`).
pub fn flux_api(client: kube::Client, kind: &str) -> kube::Api<kube::api::DynamicObject> {
    let (group, plural) = match kind {
        "GitRepository" => ("source.toolkit.fluxcd.io", "gitrepositories"),
        "Kustomization" => ("kustomize.toolkit.fluxcd.io", "kustomizations"),
        _ => ("", "secrets"),
    };
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(group, "v1", kind),
        plural,
    );
    kube::Api::namespaced_with(client, "flux-system", &ar)
}

/// The test binary's cluster, taken exclusively (hold the guard to the end of the test) and put
/// back to "Flux installed and running, nothing bootstrapped" ([`reset`]), and a world on it
/// named after `tag` whose `flux.yaml` has `path: ./clusters/home`: where a scenario starts.
pub async fn fresh(
    tag: &str,
) -> (
    &'static Cluster,
    tokio::sync::RwLockWriteGuard<'static, ()>,
    World,
) {
    let c = super::cluster::cluster();
    let exclusive = c.exclusive().await;
    reset(c).await;
    (
        c,
        exclusive,
        World::new(tag, "./clusters/home", c.kubeconfig_path()),
    )
}

/// Puts a cluster back to "Flux installed and running, nothing bootstrapped": the API server
/// and controllers up, the CRDs and Deployments in place, no Lease, Kustomization, GitRepository
/// or Secret (nor `sops-age`). Objects are deleted while the controllers run, so that they remove their
/// finalizers; one a controller never got to loses its finalizer after 30 s.
pub async fn reset(c: &Cluster) {
    use kube::runtime::wait::await_condition;
    c.start_api_server();
    c.install_crds();
    c.start_flux();
    // Rolled out, as Flux is on a cluster left alone: a run then finds it current.
    for name in super::cluster::FLUX_DEPLOYMENTS {
        c.wait_rolled_out("flux-system", name, Duration::from_secs(180))
            .await
            .unwrap_or_else(|e| panic!("{name} did not roll out: {e:#}"));
    }
    let client = c.client().await;
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), "flux-system");
    let _ = leases
        .delete("homelab-flux-bootstrap", &Default::default())
        .await;
    for kind in ["Kustomization", "GitRepository", "Secret"] {
        let api = flux_api(client.clone(), kind);
        let _ = api.delete("flux-system", &Default::default()).await;
        let gone = |o: Option<&kube::api::DynamicObject>| o.is_none();
        let wait = await_condition(api.clone(), "flux-system", gone);
        if tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .is_err()
        {
            let patch = serde_json::json!({"metadata": {"finalizers": null}});
            let _ = api
                .patch(
                    "flux-system",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await;
            tokio::time::timeout(
                Duration::from_secs(30),
                await_condition(api, "flux-system", gone),
            )
            .await
            .unwrap_or_else(|_| panic!("{kind} flux-system is not deleted"))
            .unwrap();
        }
    }
    // The age identity of `decryption: sops` (no finalizers: gone at once).
    let _ = flux_api(client, "Secret")
        .delete("sops-age", &Default::default())
        .await;
}

/// Asks source-controller to fetch now (as `flux reconcile source git` does) and waits, with a
/// watch, until it has handled that request; returns the GitRepository then.
pub async fn reconcile_git_repository(client: kube::Client) -> kube::api::DynamicObject {
    let api = flux_api(client, "GitRepository");
    let stamp = jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}});
    api.patch(
        "flux-system",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let handled = move |o: Option<&kube::api::DynamicObject>| {
        o.is_some_and(|o| o.data["status"]["lastHandledReconcileAt"] == stamp.as_str())
    };
    let wait = kube::runtime::wait::await_condition(api, "flux-system", handled);
    tokio::time::timeout(Duration::from_secs(90), wait)
        .await
        .expect("source-controller handled the request")
        .unwrap()
        .expect("the GitRepository")
}

/// The status of a condition of an object (`"True"`, `"False"`), if it has one.
pub fn condition_status(o: &kube::api::DynamicObject, type_: &str) -> Option<String> {
    o.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

/// A value of the `flux-system` Secret, decoded.
pub async fn secret_value(client: kube::Client, key: &str) -> Option<String> {
    let s = flux_api(client, "Secret")
        .get_opt("flux-system")
        .await
        .unwrap()?;
    let encoded = s.data["data"][key].as_str()?.to_string();
    let bytes: k8s_openapi::ByteString =
        serde_json::from_value(serde_json::Value::String(encoded)).ok()?;
    String::from_utf8(bytes.0).ok()
}

/// `type base64` of the public key in a cluster's Secret (GitHub keeps no comment).
pub async fn key_in_cluster(client: kube::Client) -> String {
    let public = secret_value(client, "identity.pub")
        .await
        .expect("identity.pub in the Secret");
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sends a signal (`STOP`, `CONT`, `INT`) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}
