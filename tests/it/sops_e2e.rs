//! `decryption: sops` end to end: a repository whose Secret is encrypted with the real sops CLI
//! (tests/env/sops) for an identity made by `age-keygen`, bootstrapped onto the real cluster,
//! where the real kustomize-controller decrypts it with the Secret `flux-system/sops-age` that
//! bootstrap applied. Real behaviour: a homelab keeps its Secrets in git with SOPS; after a
//! rebuild the decryption key must be back before Flux needs it, with no `kubectl create secret`
//! by hand; and a repository encrypted for another key is caught before the cluster is touched.
//!
//! The config directory is a clone-like git work tree holding the same `.sops.yaml` and
//! encrypted file as the served repository (as a user's manifests repository does), so that
//! `validate` sees what Flux will see. Every wait is on an object in the API server or a line
//! the run printed; every run is checked for the token and the identities (the canary check).

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use support::cli::{Run, age_keygen, age_keygen_pq, assert_has, assert_no_identity_leak};
use support::cluster;
use support::world::{self, World, flux_api, ready_line};

const SECRET_NAME: &str = "homelab-sops";
const ENCRYPTED_PATH: &str = "clusters/home/secret.enc.yaml";

/// The sops CLI that tests/env/setup built.
fn sops_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/testenv/bin/sops")
}

/// A Secret manifest encrypted by sops for `recipients` (comma-separated), with Flux's guide's
/// `--encrypted-regex` so that kustomize can still read its kind and name.
fn encrypt(namespace: &str, password: &str, recipients: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("secret.yaml");
    std::fs::write(
        &plain,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {SECRET_NAME}\n  namespace: {namespace}\nstringData:\n  password: {password}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(sops_bin())
        .args(["--encrypt", "--age", recipients])
        .args(["--encrypted-regex", "^(data|stringData)$"])
        .arg(&plain)
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_FILE")
        .env("HOME", dir.path())
        .output()
        .expect("target/testenv/bin/sops is missing: run tests/env/setup");
    assert!(
        out.status.success(),
        "sops failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains(password),
        "sops left the value in plain text"
    );
    text
}

/// One SOPS scenario: the world, its identities, and what is committed.
struct Sops {
    w: World,
    /// Every identity this scenario used: none may show in any output.
    identities: Vec<String>,
}

impl Sops {
    fn new(w: World) -> Sops {
        std::fs::write(
            w.dir.path().join("config/flux.yaml"),
            "repo: https://github.com/username/manifests.git\nbranch: main\npath: ./clusters/home\ndecryption: sops\n",
        )
        .unwrap();
        git2::Repository::init(w.dir.path()).unwrap();
        std::fs::write(w.dir.path().join(".gitignore"), "config/secrets-*.yaml\n").unwrap();
        Sops {
            w,
            identities: Vec::new(),
        }
    }

    /// Gives the cluster this identity (`ageKey` in the secrets file).
    fn use_identity(&mut self, identity: &str) {
        let path = self.w.dir.path().join("config/secrets-flux.yaml");
        std::fs::write(
            &path,
            format!("token: {}\nageKey: {identity}\n", self.w.token),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        self.identities.push(identity.to_string());
    }

    /// Gives no `ageKey`: the identities are in sops' own `keys.txt` (in `$HOME/.config`, the
    /// scratch directory), as on a machine set up for sops. Written after the last `commit`, so
    /// that the file is not staged.
    fn use_keys_txt(&mut self, identities: &[&str]) {
        let path = self.w.dir.path().join("config/secrets-flux.yaml");
        std::fs::write(&path, format!("token: {}\n", self.w.token)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let keys = self.w.dir.path().join(".config/sops/age/keys.txt");
        std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
        let mut text = String::from("# created: 2026-12-04T18:00:00Z\n");
        for identity in identities {
            text.push_str(&format!("{identity}\n"));
            self.identities.push(identity.to_string());
        }
        std::fs::write(&keys, text).unwrap();
    }

    /// Commits `.sops.yaml` and the encrypted Secret to the served repository (and GitHub's
    /// branch), and stages the same files in the config directory's work tree.
    fn commit(&self, rule_recipients: &str, encrypted: &str) -> String {
        let rules = format!(
            "creation_rules:\n  - path_regex: clusters/.*\\.enc\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    age: {rule_recipients}\n"
        );
        let files = [(".sops.yaml", rules.as_str()), (ENCRYPTED_PATH, encrypted)];
        let sha = self.w.repo.commit(&files, "an encrypted Secret");
        self.w.gh.set_branch("username", "manifests", "main", &sha);
        let root = self.w.dir.path();
        for (path, text) in files {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), text).unwrap();
        }
        let repo = git2::Repository::open(root).unwrap();
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        sha
    }

    fn check(&self, r: &Run, what: &str) {
        for identity in &self.identities {
            assert_no_identity_leak(identity, &r.transcript(), what);
        }
    }

    fn bootstrap(&self) -> Run {
        let r = self.w.bootstrap(&[]);
        self.check(&r, "bootstrap");
        r
    }

    /// `validate --offline` in the config directory's work tree.
    fn validate(&self) -> Run {
        let mut cmd = support::cli::command(self.w.dir.path());
        cmd.args(["-vv", "validate", "--offline"]);
        let r = support::cli::run(cmd);
        self.w.check(&r, "validate");
        self.check(&r, "validate");
        r
    }

    fn run(&self, args: &[&str]) -> Run {
        let cmd = self
            .w
            .command_with(cluster::cluster().kubeconfig_path(), args);
        let r = support::cli::run_with_limit(cmd, Duration::from_secs(120));
        self.w.check(&r, &args.join(" "));
        self.check(&r, &args.join(" "));
        r
    }
}

/// The decrypted Secret as kustomize-controller applied it, decoded.
async fn decrypted_password(namespace: &str) -> Option<String> {
    let client = cluster::cluster().client().await;
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, namespace);
    let s = api.get_opt(SECRET_NAME).await.unwrap()?;
    let bytes = s.data?.remove("password")?;
    String::from_utf8(bytes.0).ok()
}

async fn sops_age() -> Option<DynamicObject> {
    flux_api(cluster::cluster().client().await, "Secret")
        .get_opt("sops-age")
        .await
        .unwrap()
}

/// The identity in Secret `sops-age`, decoded.
async fn identity_in_cluster() -> Option<String> {
    let s = sops_age().await?;
    let bytes: k8s_openapi::ByteString =
        serde_json::from_value(s.data["data"]["age.agekey"].clone()).ok()?;
    String::from_utf8(bytes.0).ok()
}

/// Scenario 1: bootstrap applies `sops-age` before the Kustomization, which decrypts the
/// committed Secret into the cluster; a re-run says `unchanged`; after a rebuild, the next
/// bootstrap restores the key and so the Secret, with no hand step.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_decrypts_the_repository_and_a_rebuild_restores_the_key() {
    let (c, _exclusive, w) = world::fresh("sops").await;
    let mut s = Sops::new(w);
    let (identity, recipient) = age_keygen();
    s.use_identity(&identity);
    let namespace = s.w.repo.name().to_string();
    let password = format!("pw-{}", &recipient[10..30]);
    let sha = s.commit(&recipient, &encrypt(&namespace, &password, &recipient));

    let r = s.validate();
    assert_eq!(r.code, 0, "{}", r.transcript());

    let r = s.bootstrap();
    assert_eq!(r.code, 0, "{}", r.transcript());
    let applied = "- Secret `flux-system/sops-age` created";
    assert_has(&r, applied);
    assert_has(&r, &ready_line(&sha));
    let ks_line = r
        .stderr
        .find("Kustomization `flux-system/flux-system` created")
        .unwrap();
    assert!(
        r.stderr.find(applied).unwrap() < ks_line,
        "sops-age before the Kustomization:\n{}",
        r.stderr
    );
    // Ready at the commit means kustomize-controller applied it, decrypted.
    assert_eq!(decrypted_password(&namespace).await, Some(password.clone()));
    assert_eq!(
        identity_in_cluster().await.as_deref(),
        Some(identity.as_str())
    );
    let ks = flux_api(c.client().await, "Kustomization")
        .get("flux-system")
        .await
        .unwrap();
    assert_eq!(
        ks.data["spec"]["decryption"],
        serde_json::json!({"provider": "sops", "secretRef": {"name": "sops-age"}})
    );

    let before = sops_age().await.unwrap().metadata.resource_version;
    let r = s.bootstrap();
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "- Secret `flux-system/sops-age` unchanged");
    assert_eq!(sops_age().await.unwrap().metadata.resource_version, before);
    let r = s.run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.transcript());

    // The cluster is rebuilt: nothing of it is left, the decrypted Secret included.
    c.wipe();
    assert!(sops_age().await.is_none());
    assert_eq!(decrypted_password(&namespace).await, None);
    let r = s.bootstrap();
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, applied);
    assert_has(&r, &ready_line(&sha));
    assert_eq!(decrypted_password(&namespace).await, Some(password));
}

/// Scenario 2: the cluster is given another identity than the repository is encrypted for:
/// `validate` and `bootstrap` stop it before the cluster is touched, naming the file. Once the
/// repository is re-encrypted for both, bootstrap rewrites `sops-age` and the Kustomization
/// decrypts with the new key at once. A file pushed for a key the cluster lacks shows in
/// `status` as a decryption error, with a hint.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_identity_is_stopped_before_the_cluster_and_a_new_one_is_rewritten() {
    let (c, _exclusive, w) = world::fresh("sopswrong").await;
    let mut s = Sops::new(w);
    let (first, first_recipient) = age_keygen();
    let (second, second_recipient) = age_keygen();
    let namespace = s.w.repo.name().to_string();
    s.use_identity(&first);
    let sha = s.commit(
        &first_recipient,
        &encrypt(&namespace, "one", &first_recipient),
    );
    let r = s.bootstrap();
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, &ready_line(&sha));
    let before = sops_age().await.unwrap().metadata.resource_version;

    // The wrong identity: found offline, and bootstrap writes nothing.
    s.use_identity(&second);
    let r = s.validate();
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert_has(
        &r,
        &format!(
            "error[HF074]: `{ENCRYPTED_PATH}` is encrypted with SOPS for other age recipients than `{second_recipient}`; the cluster could not decrypt it"
        ),
    );
    assert_has(&r, "error[HF073]: creation rule 1 of `.sops.yaml`");
    s.w.gh.clear_log();
    let r = s.bootstrap();
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert_has(&r, "error[HF074]");
    assert!(
        !r.stderr.contains("connected to"),
        "the cluster was not even asked:\n{}",
        r.stderr
    );
    assert!(s.w.gh.writes().is_empty());
    assert_eq!(sops_age().await.unwrap().metadata.resource_version, before);
    assert_eq!(identity_in_cluster().await.as_deref(), Some(first.as_str()));

    // Re-encrypted for both: the new identity is written, and the Kustomization tries it now.
    let both = format!("{first_recipient},{second_recipient}");
    let sha = s.commit(&both, &encrypt(&namespace, "two", &both));
    let r = s.bootstrap();
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "- Secret `flux-system/sops-age` updated");
    assert_has(&r, &ready_line(&sha));
    assert_eq!(
        identity_in_cluster().await.as_deref(),
        Some(second.as_str())
    );
    assert_eq!(decrypted_password(&namespace).await.as_deref(), Some("two"));

    // Someone pushes a file for the first key only, from elsewhere (validate never saw it).
    let sha = s.w.repo.commit(
        &[(
            ENCRYPTED_PATH,
            &encrypt(&namespace, "three", &first_recipient),
        )],
        "encrypted for the old key",
    );
    world::reconcile_git_repository(c.client().await).await;
    // The new artifact starts one reconcile (kustomize-controller acts on a revision change of
    // its source); once that has failed, nothing else is due for the interval (10 minutes).
    let attempted = format!("main@sha1:{sha}");
    let failed = move |o: Option<&DynamicObject>| {
        o.is_some_and(|o| {
            o.data["status"]["lastAttemptedRevision"] == attempted.as_str()
                && o.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        c["type"] == "Ready"
                            && c["status"] == "False"
                            && c["message"].as_str().is_some_and(|m| m.contains("decrypt"))
                    })
        })
    };
    let api = flux_api(c.client().await, "Kustomization");
    tokio::time::timeout(
        Duration::from_secs(120),
        kube::runtime::wait::await_condition(api, "flux-system", failed),
    )
    .await
    .unwrap_or_else(|_| panic!("kustomize-controller reported no decryption error for {sha}"))
    .unwrap();
    let r = s.run(&["status"]);
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert!(
        r.stdout.contains("  a SOPS decryption error: the cluster's age identity cannot decrypt a file of the repository"),
        "{}",
        r.transcript()
    );
    let r = s.run(&["status", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        doc["objects"][1]["decryption_failure"].is_string(),
        "{}",
        r.stdout
    );

    // bootstrap, waiting on that Kustomization, ends with the same hint. Nothing it does makes
    // Flux reconcile again (nothing changed), so the failure it sees is the one above; the short
    // --timeout is the tool's own deadline for a state that holds for the interval.
    s.w.gh.set_branch("username", "manifests", "main", &sha);
    let r = s.w.bootstrap(&["--timeout", "10s"]);
    s.check(&r, "bootstrap after a push for the old key");
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert_has(
        &r,
        "(hint: the cluster's age identity cannot decrypt a file of the repository: run `homelab-flux validate --offline`",
    );
}

/// Scenario 3: a post-quantum identity (`age-keygen -pq`, age v1.3.2). sops' `keys.txt` lists
/// an X25519 identity first and the post-quantum one after it; the repository is encrypted by
/// the real sops CLI for the `age1pq1…` recipient, so the post-quantum identity is the one
/// bootstrap puts into `sops-age`, and the real kustomize-controller decrypts the Secret with
/// it. The same identity given as `ageKey` afterwards leaves `sops-age` unchanged. Every run
/// is at `-vv` and checked for the identities in plain and in base64.
#[tokio::test(flavor = "multi_thread")]
async fn a_post_quantum_identity_decrypts_the_repository() {
    let (_c, _exclusive, w) = world::fresh("sopspq").await;
    let mut s = Sops::new(w);
    let (x25519, _) = age_keygen();
    let (pq, pq_recipient) = age_keygen_pq();
    assert!(pq_recipient.starts_with("age1pq1"), "{pq_recipient}");
    let namespace = s.w.repo.name().to_string();
    let password = format!("pw-{}", &pq_recipient[10..30]);
    let encrypted = encrypt(&namespace, &password, &pq_recipient);
    assert!(
        encrypted.contains(&format!("recipient: {pq_recipient}")),
        "sops encrypted for the post-quantum recipient:\n{encrypted}"
    );
    let sha = s.commit(&pq_recipient, &encrypted);
    s.use_keys_txt(&[&x25519, &pq]);

    let r = s.validate();
    assert_eq!(r.code, 0, "{}", r.transcript());

    let r = s.bootstrap();
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "- Secret `flux-system/sops-age` created");
    assert_has(&r, &ready_line(&sha));
    assert_eq!(identity_in_cluster().await.as_deref(), Some(pq.as_str()));
    // Ready at the commit: kustomize-controller decrypted the Secret with that identity.
    assert_eq!(decrypted_password(&namespace).await, Some(password));

    let before = sops_age().await.unwrap().metadata.resource_version;
    std::fs::remove_file(s.w.dir.path().join(".config/sops/age/keys.txt")).unwrap();
    s.use_identity(&pq.to_ascii_lowercase());
    let r = s.bootstrap();
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(&r, "- Secret `flux-system/sops-age` unchanged");
    assert_eq!(sops_age().await.unwrap().metadata.resource_version, before);
    let r = s.run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
}
