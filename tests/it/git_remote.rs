//! The deploy-key proof against a real sshd: the fake GitHub registers the key (and writes sshd's
//! `authorized_keys`, as GitHub's own SSH endpoint would honour a new deploy key) and lists the
//! server's host key in `/meta`.

use crate::support;

use std::time::Duration;

use homelab_flux::git_remote::{self, Error};
use homelab_flux::github::{GitHub, Options, RetryPolicy};
use homelab_flux::keys::KeyPair;
use secrecy::SecretString;
use support::fake_github::{FakeGitHub, RepoSpec, TEST_TOKEN, TokenSpec};
use support::git_server::{GitRepo, SshGitServer};

struct Setup {
    server: SshGitServer,
    repo: GitRepo,
    fake: FakeGitHub,
    gh: GitHub,
}

fn setup() -> Setup {
    setup_on(SshGitServer::start())
}

/// A repository on `server` and a fake GitHub for it that lists the server's first host key.
fn setup_on(server: SshGitServer) -> Setup {
    let repo = server.create_repo("manifests");
    let fake = FakeGitHub::start();
    fake.add_token(TEST_TOKEN, TokenSpec::fine_grained("octocat"));
    fake.add_repo(RepoSpec::new("octocat", "manifests").ssh_url(&server.url(&repo)));
    fake.set_host_keys(&[server.host_key()]);
    fake.set_authorized_keys_file(server.authorized_keys_path());
    let options = Options {
        retry: RetryPolicy {
            max_retries: 1,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        },
        ..Options::default()
    };
    let gh = GitHub::with_options(&fake.url(), &SecretString::from(TEST_TOKEN), options).unwrap();
    Setup {
        server,
        repo,
        fake,
        gh,
    }
}

/// Registers `key` read-only on `octocat/manifests` (so in sshd's `authorized_keys`).
async fn register(gh: &GitHub, key: &KeyPair) {
    gh.create_deploy_key(
        "octocat",
        "manifests",
        "homelab-flux test",
        key.public_key_openssh(),
        true,
    )
    .await
    .unwrap();
}

fn prove(
    ssh_url: &str,
    key: &KeyPair,
    host_keys: &[String],
    branch: &str,
) -> Result<String, Error> {
    git_remote::prove_key(ssh_url, key.private_key_openssh(), host_keys, branch)
}

#[tokio::test]
async fn a_registered_deploy_key_is_proven_and_gives_the_branch_head() {
    let s = setup();
    let key = KeyPair::generate("homelab-flux test").unwrap();
    let repo = s.gh.get_repo("octocat", "manifests").await.unwrap();
    let meta = s.gh.meta().await.unwrap();
    register(&s.gh, &key).await;
    let sha =
        tokio::task::spawn_blocking(move || prove(&repo.ssh_url, &key, &meta.ssh_keys, "main"))
            .await
            .unwrap()
            .unwrap_or_else(|err| panic!("{err:#?}\n{}", s.server.log_tail(20)));
    assert_eq!(sha, s.repo.seeded_commit());
}

#[test]
fn an_unregistered_key_is_refused() {
    let s = setup();
    let key = KeyPair::generate("never registered").unwrap();
    let url = s.server.url(&s.repo);
    let err = prove(&url, &key, &[s.server.host_key().to_owned()], "main").unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
    assert!(!format!("{err:?}").contains("PRIVATE KEY"));
    drop(s.fake);
}

#[tokio::test]
async fn a_deleted_key_is_refused() {
    let s = setup();
    let key = KeyPair::generate("deleted").unwrap();
    let created =
        s.gh.create_deploy_key("octocat", "manifests", "t", key.public_key_openssh(), true)
            .await
            .unwrap();
    s.gh.delete_deploy_key("octocat", "manifests", created.id)
        .await
        .unwrap();
    let url = s.server.url(&s.repo);
    let host = vec![s.server.host_key().to_owned()];
    let err = tokio::task::spawn_blocking(move || prove(&url, &key, &host, "main"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
}

#[test]
fn a_host_key_that_meta_does_not_list_is_refused() {
    let s = setup();
    let key = KeyPair::generate("k").unwrap();
    s.fake
        .add_deploy_key("octocat", "manifests", "k", key.public_key_openssh(), true);
    let impostor = KeyPair::generate("other host").unwrap();
    let url = s.server.url(&s.repo);
    let err = prove(
        &url,
        &key,
        &[impostor.public_key_openssh().to_owned()],
        "main",
    )
    .unwrap_err();
    match &err {
        Error::HostKeyMismatch { host, presented } => {
            assert_eq!(host, "127.0.0.1");
            assert!(presented.contains("SHA256:"), "{presented}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_branch_is_reported() {
    let s = setup();
    let key = KeyPair::generate("k").unwrap();
    s.fake
        .add_deploy_key("octocat", "manifests", "k", key.public_key_openssh(), true);
    let url = s.server.url(&s.repo);
    let err = prove(&url, &key, &[s.server.host_key().to_owned()], "nope").unwrap_err();
    assert!(
        matches!(&err, Error::BranchNotFound { branch, .. } if branch == "nope"),
        "{err:?}"
    );
}

/// GitHub's `/meta` lists ed25519, ECDSA and RSA host keys, and a server may offer any of them.
/// Only ed25519 lines used to be read, so a server with an ECDSA or RSA host key alone was
/// refused although `/meta` listed its key. Each type alone is proven now, with `/meta` listing
/// it beside another server's keys (and refused without it); and a server offering all three,
/// all listed.
#[tokio::test]
async fn a_host_key_of_each_type_meta_lists_is_accepted() {
    let other = setup_on(SshGitServer::with_host_keys(&["ed25519", "ecdsa", "rsa"]));
    for kind in ["ecdsa", "rsa", "ed25519"] {
        let s = setup_on(SshGitServer::with_host_keys(&[kind]));
        let key = KeyPair::generate("homelab-flux test").unwrap();
        register(&s.gh, &key).await;
        let url = s.server.url(&s.repo);
        let mut listed = other.server.host_keys().to_vec();
        listed.push(s.server.host_key().to_string());
        let sha = prove(&url, &key, &listed, "main")
            .unwrap_or_else(|e| panic!("a server with an {kind} host key: {e}"));
        assert_eq!(sha, s.repo.seeded_commit(), "{kind}");
        let err = prove(&url, &key, other.server.host_keys(), "main").unwrap_err();
        assert!(
            matches!(err, Error::HostKeyMismatch { .. }),
            "{kind}, not listed: {err:?}"
        );
    }
    let key = KeyPair::generate("homelab-flux test").unwrap();
    register(&other.gh, &key).await;
    let url = other.server.url(&other.repo);
    assert_eq!(
        prove(&url, &key, other.server.host_keys(), "main").unwrap(),
        other.repo.seeded_commit()
    );
}
