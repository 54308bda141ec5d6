//! Hostile input that needs the real cluster, through the real binary.
//!
//! `bootstrap --flux-manifests URL` on a cluster without Flux (the test environment with its CRDs
//! deleted), against a manifest server on loopback, over https (a CA made with `openssl` for the
//! test, trusted through `SSL_CERT_FILE`) and plain http: redirects only to https, the size cap
//! with and without a `Content-Length`, the SHA-256 printed and pinned. Every refusal happens
//! before anything is applied: the cluster stays without Flux.
//!
//! `status` with Flux conditions whose reason and message carry terminal escapes (they are
//! written by whoever controls the repository's content): shown escaped, in text and JSON.
//!
//! Both tests take the cluster exclusively (one deletes the CRDs); each sets up what it needs,
//! whatever a test before it left (the cluster may be shared with other end-to-end tests).

use crate::support;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use support::cli::{Run, assert_has, assert_no_leak, command, run_with_limit};
use support::cluster;
use support::fake_github::{FakeGitHub, RepoSpec, TokenSpec, fake_sha};

/// The manifest served at `/install.yaml`: a Namespace that nothing else creates, so that its
/// absence proves nothing of the manifest was applied.
const PROBE: &str = "homelab-flux-manifest-probe";
const MANIFEST: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: homelab-flux-manifest-probe\n  labels:\n    app.kubernetes.io/version: v2.10.1\n";
/// One byte over the binary's cap (16 MiB).
const HUGE: usize = 16 * 1024 * 1024 + 1;

type Body = BoxBody<Bytes, Infallible>;

/// What the manifest server answers, by path.
fn answer(path: &str, http_port: u16) -> Response<Body> {
    let full = |b: Bytes| Full::new(b).boxed();
    match path {
        "/install.yaml" => Response::new(full(Bytes::from_static(MANIFEST.as_bytes()))),
        // GitHub's release downloads answer 302 to their object store; here the target is http.
        "/redirect-to-http" => Response::builder()
            .status(302)
            .header(
                "location",
                format!("http://127.0.0.1:{http_port}/install.yaml"),
            )
            .body(full(Bytes::new()))
            .unwrap(),
        "/huge-with-length" => Response::new(full(Bytes::from(vec![b'#'; HUGE]))),
        // Chunked: no Content-Length to refuse up front, the cap must hold while reading.
        "/huge-chunked" => {
            let chunks = (0..=HUGE / 65536)
                .map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'#'; 65536]))));
            Response::new(StreamBody::new(futures::stream::iter(chunks)).boxed())
        }
        _ => Response::builder()
            .status(404)
            .body(full(Bytes::new()))
            .unwrap(),
    }
}

/// Serves [`answer`] on loopback, over TLS when a config is given; returns the port.
fn serve(tls: Option<Arc<rustls::ServerConfig>>, http_port: u16) -> u16 {
    support::loopback::serve(move |stream| {
        let tls = tls.clone();
        async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                Ok::<_, Infallible>(answer(req.uri().path(), http_port))
            });
            match tls {
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        }
    })
}

/// A fine-grained token shaped like GitHub's.
fn token() -> String {
    let mut t = "github_pat_11MANIFESTS".to_string();
    let fill = "Qz9yX8wV7uT6s5R4q3P2o1N0mL9kJ8iH7gF6eD5cB4aZ3yX2wV1uT0sR9qP8oN7mL6kJ5iQ4hG3fE2dC1bA0zYxWvUtSr";
    t.push_str(&fill[..93 - t.len()]);
    t
}

/// The run's `error:` line (step lines carry timings), with the servers' ports named.
fn error_line(r: &Run, ports: &[(u16, &str)]) -> String {
    let mut line = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect::<Vec<_>>()
        .join("\n");
    for (port, name) in ports {
        line = line.replace(&format!(":{port}/"), &format!(":{name}/"));
    }
    line
}

/// Flux is still not installed: no Namespace from the manifest, no Flux CRD.
fn assert_nothing_applied(context: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ns, crd) = runtime.block_on(async {
        let client = cluster::cluster().client().await;
        let ns = Api::<Namespace>::all(client.clone())
            .get_opt(PROBE)
            .await
            .unwrap();
        let crd = Api::<CustomResourceDefinition>::all(client)
            .get_opt("gitrepositories.source.toolkit.fluxcd.io")
            .await
            .unwrap();
        (ns, crd)
    });
    assert!(
        ns.is_none() && crd.is_none(),
        "{context}: something was applied"
    );
}

#[test]
fn flux_manifests_come_over_https_within_the_cap_and_as_pinned() {
    let c = cluster::cluster();
    let _exclusive = c.exclusive_blocking();
    // A cluster without Flux: no controllers (they would lose their CRDs), no Deployments, no CRDs.
    c.stop_flux();
    c.delete_flux_deployments();
    c.delete_crds();

    let certs = tempfile::tempdir().unwrap();
    let (tls, ca) = support::tls::config(certs.path());
    let http = serve(None, 0);
    let https = serve(Some(tls), http);
    let ports = [(http, "HTTP_PORT"), (https, "HTTPS_PORT")];

    let token = token();
    let gh = FakeGitHub::start();
    gh.add_token(&token, TokenSpec::fine_grained("username"));
    gh.add_repo(RepoSpec::new("username", "manifests").branch("main", &fake_sha("main")));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/flux.yaml"),
        "repo: https://github.com/username/manifests.git\nbranch: main\nauth: token\n",
    )
    .unwrap();
    support::cli::write_secrets(
        &dir.path().join("config/secrets-flux.yaml"),
        &format!("token: {token}\n"),
    );
    let bootstrap = |source: String, extra: &[&str]| {
        let mut cmd = command(dir.path());
        cmd.args(["-vv", "bootstrap", "--flux-manifests", &source])
            .args(extra)
            .arg("--kubeconfig")
            .arg(c.kubeconfig_path())
            .env("HOMELAB_FLUX_GITHUB_API_URL", gh.url())
            .env("SSL_CERT_FILE", &ca);
        let r = run_with_limit(cmd, Duration::from_secs(120));
        assert_no_leak(&token, &r.transcript(), &source);
        r
    };

    let sha = "a6e1cc2e9c4b5d2cfe0c4a0bd0a41b7c0dc2e4b8e2b0aa54ee8b8bd0f3d4b9c1";
    let actual = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(MANIFEST.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_ne!(sha, actual);

    let mut transcript = String::new();
    for (source, extra) in [
        (
            format!("https://127.0.0.1:{https}/redirect-to-http"),
            &[][..],
        ),
        (format!("http://127.0.0.1:{http}/huge-with-length"), &[]),
        (format!("http://127.0.0.1:{http}/huge-chunked"), &[]),
        (
            format!("https://127.0.0.1:{https}/install.yaml"),
            &["--flux-manifests-sha256", sha],
        ),
    ] {
        let r = bootstrap(source.clone(), extra);
        assert_eq!(r.code, 2, "{source}:\n{}", r.stderr);
        assert_nothing_applied(&source);
        transcript.push_str(&format!("{}\n", error_line(&r, &ports)));
    }
    assert_snapshot!("refused_manifests", transcript);

    // Over https, as pinned (case-insensitive), in a dry run: the SHA-256 is printed.
    let source = format!("https://127.0.0.1:{https}/install.yaml");
    let r = bootstrap(
        source.clone(),
        &[
            "--dry-run",
            "--flux-manifests-sha256",
            &actual.to_uppercase(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = format!("- the Flux manifests `{source}` have SHA-256 {actual} (as pinned)\n");
    assert_has(&r, &line);
    assert_nothing_applied("dry run");

    c.install_crds();
}

/// The reason and message of a Flux condition come from the controllers, and so, in parts, from
/// the repository's content (a path, an error of kustomize): `status` shows them escaped.
#[test]
fn status_shows_flux_messages_escaped() {
    let c = cluster::cluster();
    let _exclusive = c.exclusive_blocking();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // No `flux-system` objects left by another test, and no controller to overwrite the
    // conditions written below.
    runtime.block_on(support::world::reset(c));
    c.stop_flux();
    let message = "kustomization path not found: ./\u{1b}]52;c;cm0gLXJmIH4=\u{7}\nok: all Ready \u{1b}[2J\u{202e}\u{9b}";
    runtime.block_on(async {
        let client = c.client().await;
        let ns: Api<Namespace> = Api::all(client.clone());
        let ssa = PatchParams::apply("homelab-flux-test").force();
        ns.patch(
            "flux-system",
            &ssa,
            &Patch::Apply(serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}
            })),
        )
        .await
        .unwrap();
        for (group, kind, plural, spec) in [
            (
                "source.toolkit.fluxcd.io",
                "GitRepository",
                "gitrepositories",
                serde_json::json!({"interval": "1m0s", "url": "ssh://git@github.com/o/r.git", "ref": {"branch": "main"}}),
            ),
            (
                "kustomize.toolkit.fluxcd.io",
                "Kustomization",
                "kustomizations",
                serde_json::json!({"interval": "10m0s", "path": "./", "prune": true,
                    "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}),
            ),
        ] {
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, "v1", kind),
                plural,
            );
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "flux-system", &ar);
            let object = serde_json::json!({
                "apiVersion": format!("{group}/v1"), "kind": kind,
                "metadata": {"name": "flux-system", "namespace": "flux-system"},
                "spec": spec,
            });
            api.patch("flux-system", &ssa, &Patch::Apply(object))
                .await
                .unwrap();
            let status = serde_json::json!({"status": {"observedGeneration": 1, "conditions": [{
                "type": "Ready", "status": "False", "reason": "BuildFailed",
                "message": message, "lastTransitionTime": "2026-12-01T00:00:00Z",
                "observedGeneration": 1,
            }]}});
            api.patch_status("flux-system", &PatchParams::default(), &Patch::Merge(status))
                .await
                .unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut transcript = String::new();
    for format in ["text", "json"] {
        let mut cmd = command(dir.path());
        cmd.args(["status", "--format", format, "--kubeconfig"])
            .arg(c.kubeconfig_path());
        let r = run_with_limit(cmd, Duration::from_secs(60));
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            !r.stdout
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{format}: {}",
            r.stdout
        );
        if format == "json" {
            let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            assert_eq!(doc["objects"][0]["message"], message);
        }
        transcript.push_str(&format!("$ status --format {format}\n{}\n", r.transcript()));
    }
    assert_snapshot!("status_escapes", transcript);
}
