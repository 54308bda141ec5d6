//! TLS for the test servers: a CA and a certificate for 127.0.0.1, made with `openssl`.

use std::path::Path;
use std::sync::Arc;

/// A CA and a certificate for 127.0.0.1 signed by it, made with `openssl`; returns the server
/// config and the CA's PEM file (for `SSL_CERT_FILE`).
pub fn config(dir: &Path) -> (Arc<rustls::ServerConfig>, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=homelab-flux test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca);
    let mut csr = vec!["req", "-new", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "leaf.key", "-out", "leaf.csr"]);
    openssl(&csr);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "leaf.pem",
    ]);
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    (Arc::new(config), dir.join("ca.pem"))
}

/// The test CA of this test binary and its certificate for 127.0.0.1, made once: the HTTPS fake
/// GitHub and the HTTPS git server serve it, and the Flux controllers trust it through
/// [`TestCa::bundle_path`] (Go reads its roots once per process, so the CA has to exist before
/// the controllers start, see `cluster.rs`).
pub struct TestCa {
    dir: std::path::PathBuf,
    config: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// The rustls server config with the 127.0.0.1 certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }

    /// The CA certificate (PEM).
    pub fn ca_path(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    /// The 127.0.0.1 certificate (PEM), for servers other than rustls ones (nginx).
    pub fn cert_path(&self) -> std::path::PathBuf {
        self.dir.join("leaf.pem")
    }

    /// The 127.0.0.1 certificate's private key (PEM).
    pub fn key_path(&self) -> std::path::PathBuf {
        self.dir.join("leaf.key")
    }

    /// The machine's CA bundle with the test CA appended: what `SSL_CERT_FILE` of a process
    /// that must trust both the web and the test servers points at.
    pub fn bundle_path(&self) -> std::path::PathBuf {
        self.dir.join("bundle.pem")
    }
}

static TEST_CA: std::sync::OnceLock<TestCa> = std::sync::OnceLock::new();

/// The test binary's [`TestCa`], made on first use.
pub fn test_ca() -> &'static TestCa {
    TEST_CA.get_or_init(|| {
        let dir = super::cluster::scratch_dir("test-ca").expect("a folder for the test CA");
        let (config, ca) = config(&dir);
        let system =
            std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
        let ca_pem = std::fs::read_to_string(&ca).expect("the test CA");
        std::fs::write(dir.join("bundle.pem"), format!("{system}\n{ca_pem}"))
            .expect("the CA bundle");
        TestCa { dir, config }
    })
}
