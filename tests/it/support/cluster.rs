//! A real Kubernetes control plane on loopback for the integration tests: etcd and kube-apiserver
//! with the seven Flux CRDs installed; kube-controller-manager, kube-scheduler and kwok with one
//! fake Node ([`FAKE_NODE`]), so that Deployments roll out (ReplicaSets, Pods bound and Running),
//! garbage collection happens and deleted namespaces go; and on demand Flux's source-controller
//! and kustomize-controller running against it as plain processes. (The controllers do the
//! reconciling; the Deployments of Flux's install manifests roll out onto the fake Node, so their
//! labels and health are the ones a real cluster shows.)
//!
//! The binaries come from `tests/env/setup`, which builds them into `target/testenv/bin`. The
//! environment starts once per test binary ([`cluster`]) on free loopback ports, with a kubeconfig
//! whose context is [`CONTEXT`]. Rust has no global test teardown, so every process is started
//! through `setpriv --pdeathsig KILL` from one long-lived thread: the kernel kills it when the test
//! binary exits, whether the tests passed, panicked or the binary was killed. (The death signal
//! fires when the spawning *thread* ends, and test threads end early, hence the dedicated thread.)
//!
//! Tests that stop, restart or wipe the cluster disturb every other test that uses it: hold
//! [`Cluster::exclusive`] in such tests and [`Cluster::shared`] in the others. Every module of the
//! test binary shares the cluster, so a test also sets up the state it needs (see
//! `world::reset`) rather than count on what a test before it left.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Name of the kubeconfig context (and cluster) the tests use.
pub const CONTEXT: &str = "homelab-test";

/// Field manager of the CRDs the environment applies.
const FIELD_MANAGER: &str = "homelab-flux-testenv";

/// Bearer token of the `admin` user (group `system:masters`).
const ADMIN_TOKEN: &str = "homelab-test-admin-token";

const ETCD_READY: Duration = Duration::from_secs(30);
const APISERVER_READY: Duration = Duration::from_secs(90);
const CRDS_ESTABLISHED: Duration = Duration::from_secs(60);
const CONTROLLER_READY: Duration = Duration::from_secs(60);
/// A hang guard for kube-controller-manager's first work and kwok's Node turning Ready.
const KUBE_CONTROLLERS_READY: Duration = Duration::from_secs(90);

/// The one Node of every cluster: kwok manages it (annotation `kwok.x-k8s.io/node: fake`) and
/// moves the Pods bound to it through their lifecycle (the stages of
/// `target/testenv/kwok-stages.yaml`).
pub const FAKE_NODE: &str = "kwok-node-0";

/// An image that never gets pulled: a Pod using it stays Pending with its containers waiting,
/// reason `ImagePullBackOff` (our kwok stage matches `homelab-flux-unpullable` in the image).
pub const UNPULLABLE_IMAGE: &str = "ghcr.io/fluxcd/homelab-flux-unpullable:v0.0.0";

/// A hang guard for CRD deletion once no object of the CRD is left (seconds when idle).
const CRDS_DELETED: Duration = Duration::from_secs(180);

/// The Flux CRDs `tests/env/setup` extracts, all of which the environment installs.
pub const FLUX_CRDS: [&str; 7] = [
    "buckets.source.toolkit.fluxcd.io",
    "externalartifacts.source.toolkit.fluxcd.io",
    "gitrepositories.source.toolkit.fluxcd.io",
    "helmcharts.source.toolkit.fluxcd.io",
    "helmrepositories.source.toolkit.fluxcd.io",
    "ocirepositories.source.toolkit.fluxcd.io",
    "kustomizations.kustomize.toolkit.fluxcd.io",
];

/// Where `tests/env/setup` puts what it builds.
pub fn testenv_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/testenv")
}

/// Path of a binary built by `tests/env/setup`; panics with the fix if it is missing.
pub fn testenv_binary(name: &str) -> PathBuf {
    let path = testenv_dir().join("bin").join(name);
    assert!(
        path.is_file(),
        "test environment binary `{}` is missing: run `tests/env/setup` first",
        path.display()
    );
    path
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The cluster of this test binary, started on first use (etcd, kube-apiserver, Flux CRDs).
///
/// Blocking; fine to call from an async test. Panics with the failing component's log tail if
/// the cluster cannot start, and on every later call with the same message.
pub fn cluster() -> &'static Cluster {
    let started = CLUSTER.get_or_init(|| {
        let begin = Instant::now();
        let cluster = Cluster::start().map_err(|err| format!("{err:#}"));
        if cluster.is_ok() {
            log(&format!("cluster up in {:.1?}", begin.elapsed()));
        }
        cluster
    });
    match started {
        Ok(cluster) => cluster,
        Err(err) => panic!("the test cluster did not start: {err}"),
    }
}

static SECOND: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// A second, independent control plane (its own etcd, API server and, on demand, controllers),
/// started on first use: two clusters on one repository. Its [`Cluster::kubeconfig_path`] uses
/// [`CONTEXT`] too; [`Cluster::kubeconfig_with_context`] names the context otherwise.
pub fn second_cluster() -> &'static Cluster {
    let started = SECOND.get_or_init(|| Cluster::start().map_err(|err| format!("{err:#}")));
    match started {
        Ok(cluster) => cluster,
        Err(err) => panic!("the second test cluster did not start: {err}"),
    }
}

/// The control plane of one test binary. See the module docs.
pub struct Cluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    etcd_port: u16,
    etcd_peer_port: u16,
    api_port: u16,
    state: Mutex<State>,
    tests: RwLock<()>,
}

#[derive(Default)]
struct State {
    etcd: Option<Process>,
    apiserver: Option<Process>,
    kube: Option<KubeControllers>,
    flux: Option<Flux>,
}

/// What a bare API server lacks to run Pods (killed when dropped).
struct KubeControllers {
    controller_manager: Process,
    scheduler: Process,
    kwok: Process,
}

/// The running Flux controllers (killed when dropped).
struct Flux {
    source: Process,
    kustomize: Process,
}

impl Cluster {
    fn start() -> Result<Cluster> {
        let dir = scratch_dir("cluster")?;
        let etcd_port = free_port();
        let etcd_peer_port = free_port();
        let api_port = free_port();
        let server = format!("https://127.0.0.1:{api_port}");

        fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,uid-admin,\"system:masters\"\n"),
        )?;
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(dir.join("sa.key"))
            .arg("2048"))
        .context("generating the service account signing key")?;
        fs::create_dir_all(dir.join("certs"))?;
        // One line per request, with its user agent: what the benchmarks count requests with.
        fs::write(
            dir.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
        )?;

        let cluster = Cluster {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            server,
            etcd_port,
            etcd_peer_port,
            api_port,
            state: Mutex::new(State::default()),
            tests: RwLock::new(()),
        };
        {
            let mut state = cluster.lock();
            state.etcd = Some(cluster.start_etcd()?);
            state.apiserver = Some(cluster.start_apiserver()?);
        }
        cluster.write_kubeconfig()?;
        cluster.wait_api_ready()?;
        cluster.apply_crds()?;
        let kube = cluster.start_kube_controllers()?;
        cluster.lock().kube = Some(kube);
        Ok(cluster)
    }

    /// Path of a kubeconfig whose current context is [`CONTEXT`], with an admin token.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Name of the kubeconfig context, [`CONTEXT`].
    pub fn context(&self) -> &'static str {
        CONTEXT
    }

    /// `https://127.0.0.1:PORT` of the API server (the port survives restarts and wipes).
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// kube-apiserver's audit log: one JSON event per request (two for a watch: started and
    /// complete), with `verb`, `requestURI`, `userAgent` and `auditID`; kept across restarts.
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// A new client for the admin identity. Make one per tokio runtime (each `#[tokio::test]` has
    /// its own): a client's connections belong to the runtime it was first used on.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig)
            .await
            .unwrap_or_else(|err| panic!("cannot build a client for the test cluster: {err:#}"))
    }

    /// Read guard for tests that only use the cluster; see [`Cluster::exclusive`]. (An async
    /// lock: the guard is held across `.await`s, one runtime per test.)
    pub async fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.tests.read().await
    }

    /// Write guard for tests that stop, restart or wipe the cluster, so that tests holding
    /// [`Cluster::shared`] do not run meanwhile.
    pub async fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.tests.write().await
    }

    /// [`Cluster::exclusive`] for sync tests (panics inside an async runtime).
    pub fn exclusive_blocking(&self) -> RwLockWriteGuard<'_, ()> {
        self.tests.blocking_write()
    }

    /// Kills kube-apiserver; connections are refused until [`Cluster::start_api_server`].
    pub fn stop_api_server(&self) {
        if let Some(mut process) = self.lock().apiserver.take() {
            process.stop();
        }
    }

    /// Starts kube-apiserver again on the same port and waits until it serves; no-op if running.
    pub fn start_api_server(&self) {
        {
            let mut state = self.lock();
            if state.apiserver.is_some() {
                return;
            }
            state.apiserver = Some(
                self.start_apiserver()
                    .unwrap_or_else(|err| panic!("{err:#}")),
            );
        }
        self.wait_api_ready()
            .unwrap_or_else(|err| panic!("{err:#}"));
    }

    /// Stops and starts kube-apiserver; the data in etcd stays.
    pub fn restart_api_server(&self) {
        self.stop_api_server();
        self.start_api_server();
    }

    /// Stops kube-apiserver, writes a key outside `/registry` straight to etcd (its JSON gateway,
    /// `POST /v3/kv/put`) and starts kube-apiserver again. Its watch cache then starts past
    /// every resourceVersion a client saw before, so a watch resumed from one is answered
    /// 410 Gone ("too old resource version"), every time.
    pub fn restart_api_server_past_every_watch(&self) {
        self.stop_api_server();
        http_post(
            self.etcd_port,
            "/v3/kv/put",
            // base64 of `homelab-flux-test/bump` and `x`.
            r#"{"key": "aG9tZWxhYi1mbHV4LXRlc3QvYnVtcA==", "value": "eA=="}"#,
        )
        .unwrap_or_else(|err| panic!("writing to etcd: {err:#}"));
        self.start_api_server();
    }

    /// Whether kube-apiserver is running (not stopped by a test, not crashed).
    pub fn api_server_running(&self) -> bool {
        self.lock()
            .apiserver
            .as_mut()
            .is_some_and(Process::is_running)
    }

    /// "The cluster was rebuilt": stops the Flux controllers, kwok, the scheduler, the
    /// controller-manager and the API server, deletes etcd's data, starts everything again (the
    /// Flux controllers only if they were running), reinstalls the Flux CRDs and the fake Node.
    /// Same ports, same kubeconfig.
    pub fn wipe(&self) {
        self.try_wipe()
            .unwrap_or_else(|err| panic!("wiping the test cluster failed: {err:#}"));
    }

    fn try_wipe(&self) -> Result<()> {
        let flux_was_running = {
            let mut state = self.lock();
            let flux = state.flux.take();
            let was_running = flux.is_some();
            drop(flux);
            // Their caches hold the old cluster: they start again with the new one.
            drop(state.kube.take());
            drop(state.apiserver.take());
            drop(state.etcd.take());
            was_running
        };
        let data = self.dir.join("etcd");
        if data.exists() {
            fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        }
        {
            let mut state = self.lock();
            state.etcd = Some(self.start_etcd()?);
            state.apiserver = Some(self.start_apiserver()?);
        }
        self.wait_api_ready()?;
        self.apply_crds()?;
        let kube = self.start_kube_controllers()?;
        self.lock().kube = Some(kube);
        if flux_was_running {
            self.start_flux();
        }
        Ok(())
    }

    /// Applies the seven Flux CRDs again and waits until they are Established.
    pub fn install_crds(&self) {
        self.apply_crds()
            .unwrap_or_else(|err| panic!("installing the Flux CRDs failed: {err:#}"));
    }

    /// Deletes the seven Flux CRDs (and so every Flux object) and waits until they are gone: a
    /// cluster where Flux was never installed. [`Cluster::install_crds`] undoes it.
    ///
    /// The Flux objects go first, their finalizers removed: the controllers may not be running
    /// to remove them, and the API server's CRD finalizer would otherwise wait on every such
    /// object (a minute at a time) before it lets the CRD go.
    pub fn delete_crds(&self) {
        let kubeconfig = self.kubeconfig.clone();
        block_on(async move {
            let client = client_for(&kubeconfig).await?;
            let api: Api<CustomResourceDefinition> = Api::all(client.clone());
            for name in FLUX_CRDS {
                if let Some(crd) = api.get_opt(name).await? {
                    delete_all_instances(&client, &crd).await?;
                }
            }
            for name in FLUX_CRDS {
                let _ = api.delete(name, &Default::default()).await;
            }
            let deadline = Instant::now() + CRDS_DELETED;
            for name in FLUX_CRDS {
                while let Some(crd) = api.get_opt(name).await? {
                    if Instant::now() > deadline {
                        let conditions = crd
                            .status
                            .and_then(|status| status.conditions)
                            .unwrap_or_default()
                            .iter()
                            .map(|c| {
                                format!(
                                    "{}={} {}",
                                    c.type_,
                                    c.status,
                                    c.message.as_deref().unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>();
                        bail!("CRD `{name}` still there after {CRDS_DELETED:?}: {conditions:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Ok(())
        })
        .unwrap_or_else(|err| panic!("deleting the Flux CRDs failed: {err:#}"));
    }

    /// Starts source-controller and kustomize-controller (no-op if they run) and waits until
    /// both answer `/readyz`. Their Deployments are applied too (see
    /// [`Cluster::apply_flux_deployments`]).
    pub fn start_flux(&self) {
        self.apply_flux_deployments();
        let mut state = self.lock();
        if state.flux.is_some() {
            return;
        }
        let begin = Instant::now();
        let flux = self.spawn_flux().unwrap_or_else(|err| panic!("{err:#}"));
        log(&format!(
            "Flux controllers ready in {:.1?}",
            begin.elapsed()
        ));
        state.flux = Some(flux);
    }

    /// Applies the Namespace `flux-system` and the Deployments `source-controller` and
    /// `kustomize-controller` in it, as Flux's `install.yaml` holds them. They roll out onto the
    /// fake Node (kwok runs no container: the Pods' images are never pulled), while the
    /// controllers that do the work run as processes of this support. Returns once applied, not
    /// rolled out: see [`Cluster::wait_rolled_out`]. [`Cluster::stop_flux`] leaves them.
    pub fn apply_flux_deployments(&self) {
        let kubeconfig = self.kubeconfig.clone();
        block_on(async move {
            let client = client_for(&kubeconfig).await?;
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system", "labels": flux_labels(FLUX_RELEASE)}});
            Api::<Namespace>::all(client.clone())
                .patch("flux-system", &params, &Patch::Apply(&namespace))
                .await
                .context("applying the Namespace `flux-system`")?;
            let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
                Api::namespaced(client, "flux-system");
            for name in FLUX_DEPLOYMENTS {
                deployments
                    .patch(name, &params, &Patch::Apply(flux_deployment(name)))
                    .await
                    .with_context(|| format!("applying the Deployment `{name}`"))?;
            }
            Ok(())
        })
        .unwrap_or_else(|err| panic!("applying the Flux Deployments failed: {err:#}"));
    }

    /// Deletes the controllers' Deployments (not the processes): a Flux install cut short
    /// after its CRDs.
    pub fn delete_flux_deployments(&self) {
        let kubeconfig = self.kubeconfig.clone();
        block_on(async move {
            let client = client_for(&kubeconfig).await?;
            let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
                Api::namespaced(client, "flux-system");
            for name in FLUX_DEPLOYMENTS {
                let _ = deployments.delete(name, &Default::default()).await;
            }
            Ok(())
        })
        .unwrap_or_else(|err: anyhow::Error| {
            panic!("deleting the Flux Deployments failed: {err:#}")
        });
    }

    /// Stops both Flux controllers; no-op if they are not running.
    pub fn stop_flux(&self) {
        drop(self.lock().flux.take());
    }

    /// Waits until the Deployment `namespace/name` has rolled out ([`rolled_out`]: its latest
    /// generation observed, every replica updated and available). Watches the Deployment;
    /// `timeout` is a hang guard only, and its error holds the Deployment's status, its Pods'
    /// states and the last lines of the logs of the components that roll it out.
    pub async fn wait_rolled_out(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<()> {
        let client = self.client().await;
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let done = |d: Option<&Deployment>| d.is_some_and(rolled_out);
        match tokio::time::timeout(timeout, await_condition(api.clone(), name, done)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => {
                Err(anyhow!(err).context(format!("watching Deployment {namespace}/{name}")))
            }
            Err(_) => {
                let status = match api.get_opt(name).await {
                    Ok(Some(d)) => serde_json::to_string(&d.status).unwrap_or_default(),
                    Ok(None) => "(no such Deployment)".to_owned(),
                    Err(err) => format!("(reading it: {err})"),
                };
                let pods = pod_states(&client, namespace).await;
                bail!(
                    "Deployment {namespace}/{name} not rolled out after {timeout:?}; status: {status}\n\
                     Pods in {namespace}: {pods}\n{}",
                    self.kube_logs()
                )
            }
        }
    }

    /// Waits until a Pod of `namespace` matching `label_selector` has a container waiting with
    /// `reason` (`ImagePullBackOff` for [`UNPULLABLE_IMAGE`]) and returns that Pod. Watches the
    /// Pods; `timeout` is a hang guard only.
    pub async fn wait_pod_waiting(
        &self,
        namespace: &str,
        label_selector: &str,
        reason: &str,
        timeout: Duration,
    ) -> Result<Pod> {
        use futures::TryStreamExt as _;
        use kube::runtime::{WatchStreamExt as _, watcher};
        let client = self.client().await;
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().labels(label_selector);
        let waiting = |pod: &Pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|statuses| {
                    statuses.iter().any(|c| {
                        c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .and_then(|w| w.reason.as_deref())
                            == Some(reason)
                    })
                })
        };
        let found = async {
            let mut pods = std::pin::pin!(watcher(api, config).applied_objects());
            while let Some(pod) = pods.try_next().await? {
                if waiting(&pod) {
                    return Ok(pod);
                }
            }
            bail!("the watch of Pods ended")
        };
        match tokio::time::timeout(timeout, found).await {
            Ok(result) => result,
            Err(_) => bail!(
                "no Pod `{label_selector}` in {namespace} waiting with {reason} after {timeout:?}; Pods: {}\n{}",
                pod_states(&client, namespace).await,
                self.kube_logs()
            ),
        }
    }

    /// Whether kube-controller-manager, kube-scheduler and kwok all run (none crashed; they are
    /// stopped only by [`Cluster::wipe`], which starts them again).
    pub fn kube_controllers_running(&self) -> bool {
        let mut state = self.lock();
        state.kube.as_mut().is_some_and(|k| {
            [&mut k.controller_manager, &mut k.scheduler, &mut k.kwok]
                .into_iter()
                .all(Process::is_running)
        })
    }

    /// The last lines of the logs of kube-controller-manager, kube-scheduler and kwok.
    fn kube_logs(&self) -> String {
        ["kube-controller-manager", "kube-scheduler", "kwok"]
            .iter()
            .map(|name| format!("last lines of {name}.log:\n{}", self.log_tail(name, 15)))
            .collect()
    }

    /// Last lines of a component's log: `etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, `kwok`, `source-controller` or `kustomize-controller`. Useful in
    /// assertion messages.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        tail(&self.dir.join(format!("{component}.log")), lines)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start_etcd(&self) -> Result<Process> {
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer = format!("http://127.0.0.1:{}", self.etcd_peer_port);
        let mut command = Command::new(testenv_binary("etcd"));
        command
            .arg("--name=homelab-test")
            .arg(format!("--data-dir={}", self.dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=homelab-test={peer}"))
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let mut etcd = Process::spawn("etcd", command, &self.dir)?;
        let port = self.etcd_port;
        etcd.wait_ready(ETCD_READY, "etcd /health", || {
            http_get(port, "/health").is_ok_and(|body| body.contains("\"health\":\"true\""))
        })?;
        Ok(etcd)
    }

    fn start_apiserver(&self) -> Result<Process> {
        let key = self.dir.join("sa.key");
        let mut command = Command::new(testenv_binary("kube-apiserver"));
        command
            .arg(format!(
                "--etcd-servers=http://127.0.0.1:{}",
                self.etcd_port
            ))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.api_port))
            .arg(format!("--cert-dir={}", self.dir.join("certs").display()))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--authorization-mode=RBAC")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", key.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                key.display()
            ))
            .arg(format!(
                "--token-auth-file={}",
                self.dir.join("tokens.csv").display()
            ))
            .arg(format!(
                "--audit-policy-file={}",
                self.dir.join("audit-policy.yaml").display()
            ))
            .arg(format!(
                "--audit-log-path={}",
                self.audit_log_path().display()
            ))
            .arg("--v=1");
        let mut apiserver = Process::spawn("kube-apiserver", command, &self.dir)?;
        // Readiness proper is checked through the client (wait_api_ready); this only waits for
        // the port, so that an early crash shows its log.
        let port = self.api_port;
        apiserver.wait_ready(APISERVER_READY, "kube-apiserver port", || {
            TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_secs(1),
            )
            .is_ok()
        })?;
        Ok(apiserver)
    }

    /// Writes (once) and returns a kubeconfig for this cluster whose only context is `context`,
    /// as k3s names every context `default`.
    pub fn kubeconfig_with_context(&self, context: &str) -> PathBuf {
        let path = self.dir.join(format!("kubeconfig-{context}"));
        let text = self
            .kubeconfig_text(context)
            .unwrap_or_else(|err| panic!("writing a kubeconfig: {err:#}"));
        fs::write(&path, text).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
        path
    }

    /// The pid of a running Flux controller (`source-controller`, `kustomize-controller`), for
    /// pausing it with SIGSTOP.
    pub fn flux_pid(&self, controller: &str) -> Option<u32> {
        let state = self.lock();
        let flux = state.flux.as_ref()?;
        [&flux.source, &flux.kustomize]
            .into_iter()
            .find(|p| p.name() == controller)
            .map(Process::pid)
    }

    fn write_kubeconfig(&self) -> Result<()> {
        fs::write(&self.kubeconfig, self.kubeconfig_text(CONTEXT)?)?;
        Ok(())
    }

    fn kubeconfig_text(&self, context: &str) -> Result<String> {
        // The API server made a self-signed CA and serving certificate (for 127.0.0.1) in
        // --cert-dir; the file holds the serving certificate followed by the CA.
        let cert = self.dir.join("certs/apiserver.crt");
        let ca = fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?;
        let ca = serde_json::to_value(k8s_openapi::ByteString(ca))?;
        let ca = ca.as_str().context("base64 of the CA")?;
        Ok(format!(
            "apiVersion: v1
kind: Config
clusters:
- name: {context}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {context}-admin
  user:
    token: {ADMIN_TOKEN}
contexts:
- name: {context}
  context:
    cluster: {context}
    user: {context}-admin
current-context: {context}
",
            server = self.server
        ))
    }

    /// Waits until the API server serves reads from etcd and has made the `default` namespace.
    fn wait_api_ready(&self) -> Result<()> {
        let kubeconfig = self.kubeconfig.clone();
        let result = block_on(async move {
            let client = client_for(&kubeconfig).await?;
            let namespaces: Api<Namespace> = Api::all(client);
            let deadline = Instant::now() + APISERVER_READY;
            loop {
                match namespaces.get_opt("default").await {
                    Ok(Some(_)) => return Ok(()),
                    Ok(None) => {}
                    Err(err) if Instant::now() > deadline => {
                        return Err(anyhow!(err).context("kube-apiserver did not become ready"));
                    }
                    Err(_) => {}
                }
                if Instant::now() > deadline {
                    bail!("kube-apiserver did not create the `default` namespace");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        result.map_err(|err| {
            err.context(format!(
                "after {APISERVER_READY:?}; last lines of kube-apiserver.log:\n{}",
                self.log_tail("kube-apiserver", 40)
            ))
        })
    }

    fn apply_crds(&self) -> Result<()> {
        let crds_dir = testenv_dir().join("crds");
        let mut crds = Vec::new();
        for name in FLUX_CRDS {
            let path = crd_file(&crds_dir, name)?;
            let text = fs::read_to_string(&path)
                .with_context(|| format!("reading {}: run `tests/env/setup`", path.display()))?;
            let mut crd: CustomResourceDefinition = serde_yaml::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            // Labelled as Flux's `install.yaml` labels them (see `flux_manifests`).
            crd.metadata.labels = serde_json::from_value(flux_labels(FLUX_RELEASE))?;
            crds.push(crd);
        }
        let kubeconfig = self.kubeconfig.clone();
        block_on(async move {
            let client = client_for(&kubeconfig).await?;
            let api: Api<CustomResourceDefinition> = Api::all(client);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            for crd in &crds {
                let name = crd.metadata.name.clone().unwrap_or_default();
                api.patch(&name, &params, &Patch::Apply(crd))
                    .await
                    .with_context(|| format!("applying CRD `{name}`"))?;
            }
            let deadline = Instant::now() + CRDS_ESTABLISHED;
            for name in FLUX_CRDS {
                loop {
                    let crd = api.get(name).await?;
                    let established = crd
                        .status
                        .and_then(|status| status.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    if established {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("CRD `{name}` not Established after {CRDS_ESTABLISHED:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Ok(())
        })
    }

    /// Waits until discovery lists the seven Flux kinds (all `v1`). A freshly started API server serves its CRDs'
    /// discovery a moment after `/readyz`, and a controller started in between exits with "no
    /// matches for source.toolkit.fluxcd.io/v1".
    fn wait_flux_discovery(&self) -> Result<()> {
        let kubeconfig = self.kubeconfig.clone();
        block_on(async move {
            let client = client_for(&kubeconfig).await?;
            let deadline = Instant::now() + CRDS_ESTABLISHED;
            for crd in FLUX_CRDS {
                let (plural, group) = crd.split_once('.').unwrap_or((crd, ""));
                let group_version = format!("{group}/v1");
                loop {
                    let served = client
                        .list_api_group_resources(&group_version)
                        .await
                        .is_ok_and(|list| list.resources.iter().any(|r| r.name == plural));
                    if served {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("discovery does not list `{crd}` after {CRDS_ESTABLISHED:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Ok(())
        })
    }

    /// Applies the fake Node, starts kube-controller-manager, kube-scheduler and kwok, and waits
    /// until kwok has made the Node Ready and the controller-manager has done its first work
    /// (the `default` ServiceAccount of `default`). The scheduler needs no more than the API
    /// server; that it still runs then is checked.
    fn start_kube_controllers(&self) -> Result<KubeControllers> {
        let begin = Instant::now();
        self.apply_fake_node()?;
        let kubeconfig = self.kubeconfig.display().to_string();

        let mut command = Command::new(testenv_binary("kube-controller-manager"));
        command
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .arg("--use-service-account-credentials=false")
            .arg(format!(
                "--service-account-private-key-file={}",
                self.dir.join("sa.key").display()
            ))
            .arg("--controllers=*,-serviceaccount-token");
        let mut controller_manager = Process::spawn("kube-controller-manager", command, &self.dir)?;

        let mut command = Command::new(testenv_binary("kube-scheduler"));
        command
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg("--leader-elect=false")
            .arg("--secure-port=0");
        let mut scheduler = Process::spawn("kube-scheduler", command, &self.dir)?;

        let stages = testenv_dir().join("kwok-stages.yaml");
        if !stages.is_file() {
            bail!("{} is missing: run `tests/env/setup`", stages.display());
        }
        let kwok_port = free_port();
        let mut command = Command::new(testenv_binary("kwok"));
        command
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg("--manage-all-nodes=false")
            .arg("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake")
            .arg("--node-ip=10.0.0.1")
            // The Node's heartbeat, as a kubelet's: without a Lease the controller-manager would
            // mark the Node unreachable after 50 s (tainted: no new Pod scheduled, old ones
            // evicted). kwok's default of 40 s is not in force with a --config of stages alone.
            .arg("--node-lease-duration-seconds=40")
            .arg(format!("--config={}", stages.display()))
            .arg(format!("--server-address=127.0.0.1:{kwok_port}"));
        let mut kwok = Process::spawn("kwok", command, &self.dir)?;
        kwok.wait_ready(CONTROLLER_READY, "kwok /healthz", || {
            http_get(kwok_port, "/healthz").is_ok()
        })?;

        let kubeconfig = self.kubeconfig.clone();
        let ready = block_on(async move {
            let client = client_for(&kubeconfig).await?;
            let nodes: Api<Node> = Api::all(client.clone());
            let node_ready = |n: Option<&Node>| {
                n.and_then(|n| n.status.as_ref())
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            };
            let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
            let made = |a: Option<&ServiceAccount>| a.is_some();
            tokio::time::timeout(KUBE_CONTROLLERS_READY, async {
                await_condition(nodes, FAKE_NODE, node_ready).await?;
                await_condition(accounts, "default", made).await?;
                anyhow::Ok(())
            })
            .await
            .map_err(|_| anyhow!("not ready after {KUBE_CONTROLLERS_READY:?}"))?
        });
        if let Err(err) = ready {
            return Err(err.context(format!(
                "Node `{FAKE_NODE}` Ready (kwok) and ServiceAccount default/default \
                 (kube-controller-manager)\n{}",
                self.kube_logs()
            )));
        }
        for process in [&mut controller_manager, &mut scheduler, &mut kwok] {
            if !process.is_running() {
                bail!(
                    "{} exited; last lines of its log:\n{}",
                    process.name,
                    tail(&process.log, 40)
                );
            }
        }
        log(&format!(
            "controller-manager, scheduler, kwok and Node ready in {:.1?}",
            begin.elapsed()
        ));
        Ok(KubeControllers {
            controller_manager,
            scheduler,
            kwok,
        })
    }

    /// Applies [`FAKE_NODE`]: annotated for kwok, with room for every Pod the tests make.
    fn apply_fake_node(&self) -> Result<()> {
        let node = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": FAKE_NODE,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": FAKE_NODE,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/role": "agent",
                    "type": "kwok",
                },
            },
            "status": {
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            },
        });
        let kubeconfig = self.kubeconfig.clone();
        block_on(async move {
            let client = client_for(&kubeconfig).await?;
            Api::<Node>::all(client)
                .patch(
                    FAKE_NODE,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&node),
                )
                .await
                .with_context(|| format!("applying the Node `{FAKE_NODE}`"))?;
            Ok(())
        })
    }

    fn spawn_flux(&self) -> Result<Flux> {
        self.wait_flux_discovery()?;
        let storage = self.dir.join("flux-storage");
        fs::create_dir_all(&storage)?;
        let storage_addr = format!("127.0.0.1:{}", free_port());
        let source_health_addr = format!("127.0.0.1:{}", free_port());
        let kustomize_health_addr = format!("127.0.0.1:{}", free_port());
        // Each controller gets a temporary directory of its own: kustomize-controller removes
        // every `kustomization-*` directory in its TMPDIR when it starts, so with the shared
        // /tmp, a controller starting for another cluster (or another test binary) deleted the
        // working directory of one in the middle of a build ("lstat /tmp/kustomization-...").
        let source_tmp = self.dir.join("tmp-source-controller");
        let kustomize_tmp = self.dir.join("tmp-kustomize-controller");
        fs::create_dir_all(&source_tmp)?;
        fs::create_dir_all(&kustomize_tmp)?;

        let mut command = Command::new(testenv_binary("source-controller"));
        command
            .env("TMPDIR", &source_tmp)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUNTIME_NAMESPACE", "flux-system")
            // The machine's roots plus the test CA: source-controller then reaches the HTTPS
            // fake GitHub (`githubAppBaseURL`) and the HTTPS git server, and the web as before.
            // Go reads its roots once per process, so this is set for every start, not per test.
            .env("SSL_CERT_FILE", super::tls::test_ca().bundle_path())
            .arg(format!("--storage-path={}", storage.display()))
            .arg(format!("--storage-addr={storage_addr}"))
            .arg(format!("--storage-adv-addr={storage_addr}"))
            .arg(format!("--metrics-addr=127.0.0.1:{}", free_port()))
            .arg(format!("--health-addr={source_health_addr}"))
            .arg("--log-level=debug");
        let mut source = Process::spawn("source-controller", command, &self.dir)?;

        let mut command = Command::new(testenv_binary("kustomize-controller"));
        command
            .env("TMPDIR", &kustomize_tmp)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUNTIME_NAMESPACE", "flux-system")
            .arg(format!("--metrics-addr=127.0.0.1:{}", free_port()))
            .arg(format!("--health-addr={kustomize_health_addr}"))
            .arg("--log-level=debug");
        let mut kustomize = Process::spawn("kustomize-controller", command, &self.dir)?;

        for (process, addr) in [
            (&mut source, &source_health_addr),
            (&mut kustomize, &kustomize_health_addr),
        ] {
            let port: u16 = addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let what = format!("{} /readyz", process.name);
            process.wait_ready(CONTROLLER_READY, &what, || {
                http_get(port, "/readyz").is_ok()
            })?;
        }
        Ok(Flux { source, kustomize })
    }
}

/// Whether a Deployment has rolled out: the controller-manager has seen its latest generation
/// (`observedGeneration == generation`) and `spec.replicas` replicas (1 if unset) are there, all
/// updated and available (no old one left).
pub fn rolled_out(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (&d.spec, &d.status) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    status.observed_generation.is_some()
        && status.observed_generation == d.metadata.generation
        && status.replicas.unwrap_or(0) == want
        && status.updated_replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
}

/// `name: phase [container: state reason]`, for each Pod of a namespace: for failure messages.
async fn pod_states(client: &kube::Client, namespace: &str) -> String {
    let pods = match Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
    {
        Ok(list) => list.items,
        Err(err) => return format!("(listing them: {err})"),
    };
    let mut out = String::new();
    for pod in pods {
        let status = pod.status.unwrap_or_default();
        let _ = write!(
            out,
            "\n  {} on {}: {}",
            pod.metadata.name.unwrap_or_default(),
            pod.spec
                .and_then(|s| s.node_name)
                .unwrap_or_else(|| "(no node)".into()),
            status.phase.unwrap_or_default()
        );
        for c in status.container_statuses.unwrap_or_default() {
            let state = c.state.unwrap_or_default();
            let what = if let Some(w) = state.waiting {
                format!("waiting {}", w.reason.unwrap_or_default())
            } else if state.running.is_some() {
                "running".to_owned()
            } else if let Some(t) = state.terminated {
                format!("terminated {}", t.reason.unwrap_or_default())
            } else {
                "unknown".to_owned()
            };
            let _ = write!(out, " [{}: {what}, ready {}]", c.name, c.ready);
        }
    }
    out
}

/// The controllers whose Deployments mean "Flux is installed" to homelab-flux.
pub const FLUX_DEPLOYMENTS: [&str; 2] = ["source-controller", "kustomize-controller"];

/// The Flux release the test environment's manifests are: the pinned one.
pub const FLUX_RELEASE: &str = "v2.10.1";
/// The controllers' image tag of each Flux release the tests use (Flux's `install.yaml`; the
/// older lines' as the `flux2` modules' `manifests/bases` pin them).
pub fn controller_tag(release: &str, name: &str) -> &'static str {
    match (release, name) {
        ("v2.9.5", "source-controller") => "v1.9.5",
        ("v2.9.5", _) => "v1.9.5",
        ("v2.2.3", "source-controller") => "v1.2.4",
        ("v2.2.3", _) => "v1.2.2",
        ("v0.41.2", "source-controller") => "v0.36.1",
        ("v0.41.2", _) => "v0.35.1",
        (_, _) => "v1.10.1",
    }
}

/// The CRDs of an older release line's controller, `target/testenv/crds-old/<module>-<version>`
/// (`tests/env/README.md`): `source-controller` v0.36.1 or v1.2.5, `kustomize-controller`
/// v0.35.1 or v1.2.2.
pub fn old_crds_dir(module: &str, version: &str) -> PathBuf {
    testenv_dir()
        .join("crds-old")
        .join(format!("{module}-{version}"))
}

/// The labels Flux's `install.yaml` puts on every object of a release.
pub fn flux_labels(release: &str) -> serde_json::Value {
    serde_json::json!({
        "app.kubernetes.io/instance": "flux-system",
        "app.kubernetes.io/part-of": "flux",
        "app.kubernetes.io/version": release,
    })
}

/// A Deployment of a Flux controller at the pinned release, trimmed from Flux's `install.yaml`.
pub fn flux_deployment(name: &str) -> serde_json::Value {
    flux_deployment_at(name, FLUX_RELEASE)
}

/// A Deployment of a Flux controller of a release, trimmed from Flux's `install.yaml` (the
/// controller's `config/manager/deployment.yaml` with the patches and label transformers of the
/// `flux2` module's `manifests/`, as checked for v2.9.5): its labels and its Pod template's, its
/// selector and strategy, its image and what places the Pod (service account, priority class,
/// node selector, resource requests). Probes, ports, arguments, environment and volumes are
/// left out: kwok runs no container, so they change nothing here.
pub fn flux_deployment_at(name: &str, release: &str) -> serde_json::Value {
    let mut pod_labels = flux_labels(release);
    pod_labels["app.kubernetes.io/component"] = name.into();
    let mut labels = pod_labels.clone();
    labels["control-plane"] = "controller".into();
    // The install's label transformers label the Pod template too: a new release rolls out.
    pod_labels["app"] = name.into();
    let (cpu, grace) = match name {
        "source-controller" => ("50m", 10),
        _ => ("100m", 60),
    };
    let mut deployment = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "flux-system", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {"prometheus.io/port": "8080", "prometheus.io/scrape": "true"},
                },
                "spec": {
                    "containers": [{
                        "name": "manager",
                        "image": format!("ghcr.io/fluxcd/{name}:{}", controller_tag(release, name)),
                        "imagePullPolicy": "IfNotPresent",
                        "resources": {
                            "limits": {"cpu": "1000m", "memory": "1Gi"},
                            "requests": {"cpu": cpu, "memory": "64Mi"},
                        },
                    }],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": grace,
                },
            },
        },
    });
    if name == "source-controller" {
        // Its storage volume is not shared between Pods (kustomize-controller has the default).
        deployment["spec"]["strategy"] = serde_json::json!({"type": "Recreate"});
    }
    deployment
}

/// Flux's install manifests as this environment has them: the Namespace `flux-system`, the
/// seven CRDs `tests/env/setup` extracted (in file order) and the two Deployments, every object
/// labelled as Flux labels the pinned release. Returns the YAML stream and how many objects it
/// holds.
pub fn flux_manifests() -> (String, usize) {
    flux_manifests_at(FLUX_RELEASE, &testenv_dir().join("crds"))
}

/// Flux's install manifests of a release, as [`flux_manifests`], with the CRDs of `crds_dir`
/// (`target/testenv/crds`, or a folder of an older line's CRDs from `target/testenv/crds-old/`).
pub fn flux_manifests_at(release: &str, crds_dir: &Path) -> (String, usize) {
    flux_manifests_from(release, &[crds_dir])
}

/// Flux's install manifests of a release, as [`flux_manifests_at`], with each CRD from the first
/// of `crds_dirs` that has it: an older line's are [`old_crds_dir`] of source-controller and of
/// kustomize-controller.
pub fn flux_manifests_from(release: &str, crds_dirs: &[&Path]) -> (String, usize) {
    let mut objects = vec![serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "flux-system", "labels": flux_labels(release)},
    })];
    for name in FLUX_CRDS {
        let Some(path) = crds_dirs.iter().find_map(|dir| crd_file(dir, name).ok()) else {
            // An older line without this kind (ExternalArtifact came with 2.7).
            continue;
        };
        let text = fs::read_to_string(path).expect("a CRD file");
        let mut crd: serde_json::Value = serde_yaml::from_str(&text).expect("a CRD");
        crd["metadata"]["labels"] = flux_labels(release);
        objects.push(crd);
    }
    for name in FLUX_DEPLOYMENTS {
        objects.push(flux_deployment_at(name, release));
    }
    let mut manifests = String::new();
    for o in &objects {
        manifests.push_str("---\n");
        manifests.push_str(&serde_yaml::to_string(o).expect("YAML"));
    }
    (manifests, objects.len())
}

/// Deletes every object of a CRD in every namespace, removing finalizers first (nobody may be
/// running to honour them), and waits until none is left.
async fn delete_all_instances(client: &kube::Client, crd: &CustomResourceDefinition) -> Result<()> {
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .map_or("v1", |v| v.name.as_str());
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(&crd.spec.group, version, &crd.spec.names.kind),
        &crd.spec.names.plural,
    );
    let all: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &resource);
    let deadline = Instant::now() + CRDS_DELETED;
    loop {
        let left = all.list(&Default::default()).await?.items;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} objects of `{}` still there after {CRDS_DELETED:?}",
                left.len(),
                crd.spec.names.plural
            );
        }
        for object in &left {
            let (Some(name), Some(namespace)) = (&object.metadata.name, &object.metadata.namespace)
            else {
                continue;
            };
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            let patch = serde_json::json!({"metadata": {"finalizers": null}});
            let _ = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            let _ = api.delete(name, &Default::default()).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client for the context [`CONTEXT`] of a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    let file = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let options = KubeConfigOptions {
        context: Some(CONTEXT.to_owned()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(file, &options).await?;
    Ok(kube::Client::try_from(config)?)
}

/// `plural.group` is in `group_plural.yaml`, the file name of Flux's `config/crd/bases`.
fn crd_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let (plural, group) = name.split_once('.').unwrap_or((name, ""));
    let path = dir.join(format!("{group}_{plural}.yaml"));
    if !path.is_file() {
        bail!(
            "Flux CRD file `{}` is missing: run `tests/env/setup`",
            path.display()
        );
    }
    Ok(path)
}

/// Runs a future to completion on a runtime of its own, on a thread of its own, so that the
/// blocking API works from sync and async tests alike.
fn block_on<T: Send + 'static>(
    future: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(future)
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Minimal `GET http://127.0.0.1:PORT/path`; the body if the status is 200.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    http_request(port, "GET", path, "")
}

/// `POST path` with a JSON `body` to 127.0.0.1:`port` over plain HTTP/1.0; the body of a 200.
pub fn http_post(port: u16, path: &str, body: &str) -> Result<String> {
    http_request(port, "POST", path, body)
}

fn http_request(port: u16, method: &str, path: &str, body: &str) -> Result<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("{method} {path}: {status}");
    }
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// A loopback TCP port that nothing listens on now (the OS picks it; never twice per binary).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("binding a loopback port");
        if given.insert(port) {
            return port;
        }
    }
}

/// A fresh folder for one component, under a per-process folder in the system temp dir that is
/// world-readable (sshd's git user must read the repositories and authorized keys in it).
/// Folders of test binaries that no longer run are removed on the way.
pub fn scratch_dir(name: &str) -> Result<PathBuf> {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    static COUNTER: Mutex<u32> = Mutex::new(0);
    let base = BASE.get_or_init(|| {
        let tmp = std::env::temp_dir();
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(pid) = file_name
                    .to_str()
                    .and_then(|n| n.strip_prefix("homelab-flux-test-"))
                else {
                    continue;
                };
                if !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        tmp.join(format!("homelab-flux-test-{}", std::process::id()))
    });
    let mut counter = COUNTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *counter += 1;
    let dir = base.join(format!("{name}-{counter}"));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    set_mode(base, 0o755)?;
    set_mode(&dir, 0o755)?;
    Ok(dir)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Runs a short command to completion; its output goes into the error if it fails.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Last `lines` lines of a file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text =
        fs::read_to_string(path).unwrap_or_else(|err| format!("({}: {err})\n", path.display()));
    let all: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for line in &all[all.len().saturating_sub(lines)..] {
        let _ = writeln!(out, "    {line}");
    }
    out
}

fn log(message: &str) {
    // Test support may report progress; the tests' own output rules do not apply here.
    let _ = writeln!(std::io::stderr(), "[testenv] {message}");
}

/// A child process of the test binary: its stdout and stderr go to `<dir>/<name>.log`; it is
/// killed when dropped, and by the kernel when the test binary exits (see the module docs).
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

impl Process {
    /// Spawns `command` with its output in `<dir>/<name>.log`.
    pub fn spawn(name: &str, command: Command, dir: &Path) -> Result<Process> {
        static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
        let spawner = SPAWNER.get_or_init(|| {
            let (sender, requests) = mpsc::channel::<SpawnRequest>();
            // Lives as long as the process: the parent thread of every child, see module docs.
            std::thread::Builder::new()
                .name("testenv-spawner".into())
                .spawn(move || {
                    for (mut command, reply) in requests {
                        let _ = reply.send(command.spawn());
                    }
                })
                .expect("starting the spawner thread");
            Mutex::new(sender)
        });

        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut wrapped = Command::new("setpriv");
        wrapped
            .args(["--pdeathsig", "KILL", "--"])
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(cwd) = command.get_current_dir() {
            wrapped.current_dir(cwd);
        }
        wrapped
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);

        let (reply, answer) = mpsc::channel();
        spawner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send((wrapped, reply))
            .map_err(|_| anyhow!("the spawner thread is gone"))?;
        let child = answer
            .recv()
            .map_err(|_| anyhow!("the spawner thread is gone"))?
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        // setpriv arms the death signal before it execs the program: until then, an exiting
        // test binary would leave the program running. Wait for the exec (a few ms).
        let exe = Path::new("/proc").join(child.id().to_string()).join("exe");
        let start = Instant::now();
        while fs::read_link(&exe).is_ok_and(|path| path.ends_with("setpriv")) {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("{name} was not exec'd by setpriv within 60 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Process {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// Name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether it has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Polls `ready` until it holds; fails early with the log tail if the process exits, and
    /// after `timeout`.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        what: &str,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{} exited ({status}) before {what} answered; last lines of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 40)
                );
            }
            if ready() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{what} did not answer within {timeout:?}; last lines of {}:\n{}",
                    self.log.display(),
                    tail(&self.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
