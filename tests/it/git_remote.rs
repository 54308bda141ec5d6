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

async fn prove(
    ssh_url: &str,
    key: &KeyPair,
    host_keys: &[String],
    branch: &str,
) -> Result<String, Error> {
    git_remote::prove_key(ssh_url, key.private_key_openssh(), host_keys, branch).await
}

#[tokio::test]
async fn a_registered_deploy_key_is_proven_and_gives_the_branch_head() {
    let s = setup();
    let key = KeyPair::generate("homelab-flux test").unwrap();
    let repo = s.gh.get_repo("octocat", "manifests").await.unwrap();
    let meta = s.gh.meta().await.unwrap();
    register(&s.gh, &key).await;
    let sha = prove(&repo.ssh_url, &key, &meta.ssh_keys, "main")
        .await
        .unwrap_or_else(|err| panic!("{err:#?}\n{}", s.server.log_tail(20)));
    assert_eq!(sha, s.repo.seeded_commit());
}

#[tokio::test]
async fn an_unregistered_key_is_refused() {
    let s = setup();
    let key = KeyPair::generate("never registered").unwrap();
    let url = s.server.url(&s.repo);
    let err = prove(&url, &key, &[s.server.host_key().to_owned()], "main")
        .await
        .unwrap_err();
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
    let err = prove(&url, &key, &host, "main").await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
}

#[tokio::test]
async fn a_host_key_that_meta_does_not_list_is_refused() {
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
    .await
    .unwrap_err();
    match &err {
        Error::HostKeyMismatch { host, presented } => {
            assert_eq!(host, "127.0.0.1");
            let fingerprint = homelab_flux::keys::fingerprint(s.server.host_key()).unwrap();
            assert_eq!(presented, &format!("ssh-ed25519 {fingerprint}"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_missing_branch_is_reported() {
    let s = setup();
    let key = KeyPair::generate("k").unwrap();
    s.fake
        .add_deploy_key("octocat", "manifests", "k", key.public_key_openssh(), true);
    let url = s.server.url(&s.repo);
    let err = prove(&url, &key, &[s.server.host_key().to_owned()], "nope")
        .await
        .unwrap_err();
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
            .await
            .unwrap_or_else(|e| panic!("a server with an {kind} host key: {e}"));
        assert_eq!(sha, s.repo.seeded_commit(), "{kind}");
        let err = prove(&url, &key, other.server.host_keys(), "main")
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::HostKeyMismatch { .. }),
            "{kind}, not listed: {err:?}"
        );
    }
    let key = KeyPair::generate("homelab-flux test").unwrap();
    register(&other.gh, &key).await;
    let url = other.server.url(&other.repo);
    assert_eq!(
        prove(&url, &key, other.server.host_keys(), "main")
            .await
            .unwrap(),
        other.repo.seeded_commit()
    );
}

/// libssh2 chose the host key type itself, so a server with a key of a type `/meta` does not
/// list beside one it does could present the unlisted one and be refused. Only the algorithms of
/// `/meta`'s types are offered now, so the server proves itself with the listed key; both ways
/// round, including the one a default client would get wrong (ed25519 preferred, RSA listed).
#[tokio::test]
async fn a_server_offering_an_unlisted_type_beside_a_listed_one_proves_with_the_listed_one() {
    for (types, listed) in [(["rsa", "ed25519"], 1), (["ed25519", "rsa"], 1)] {
        let s = setup_on(SshGitServer::with_host_keys(&types));
        let key = KeyPair::generate("homelab-flux test").unwrap();
        register(&s.gh, &key).await;
        let url = s.server.url(&s.repo);
        let only = [s.server.host_keys()[listed].clone()];
        let sha = prove(&url, &key, &only, "main")
            .await
            .unwrap_or_else(|e| panic!("{types:?}, /meta listing {}: {e}", types[listed]));
        assert_eq!(sha, s.repo.seeded_commit(), "{types:?}");
    }
}

/// A server whose host keys are all of types `/meta` does not list has nothing to prove itself
/// with: the error names what it offers and what `/meta` lists.
#[tokio::test]
async fn a_server_offering_only_unlisted_types_is_refused_with_both_lists() {
    let s = setup_on(SshGitServer::with_host_keys(&["rsa"]));
    let elsewhere = SshGitServer::with_host_keys(&["ed25519", "ecdsa"]);
    let key = KeyPair::generate("homelab-flux test").unwrap();
    register(&s.gh, &key).await;
    let url = s.server.url(&s.repo);
    let err = prove(&url, &key, elsewhere.host_keys(), "main")
        .await
        .unwrap_err();
    match &err {
        Error::NoListedHostKeyType {
            host,
            offered,
            listed,
        } => {
            assert_eq!(host, "127.0.0.1");
            assert!(offered.contains("rsa-sha2-512"), "{offered}");
            assert!(!offered.contains("ed25519"), "{offered}");
            assert_eq!(listed, "ssh-ed25519, ecdsa-sha2-nistp256");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().starts_with(
            "the SSH server 127.0.0.1 offers host keys of the types rsa-sha2-512, rsa-sha2-256"
        ),
        "{err}"
    );
}

/// A repository without commits advertises only `capabilities^{}`: no branch, so not found.
#[tokio::test]
async fn an_empty_repository_has_no_branch() {
    let s = setup();
    let key = KeyPair::generate("k").unwrap();
    register(&s.gh, &key).await;
    let empty = s.server.create_empty_repo("empty");
    let url = format!("{}{}", s.server.url_prefix(), empty.display());
    let err = prove(&url, &key, &[s.server.host_key().to_owned()], "main")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::BranchNotFound { branch, .. } if branch == "main"),
        "{err:?}"
    );
}

/// A path that is no repository: git-upload-pack's own words reach the error's cause.
#[tokio::test]
async fn a_missing_repository_is_reported_with_the_servers_words() {
    let s = setup();
    let key = KeyPair::generate("k").unwrap();
    register(&s.gh, &key).await;
    let url = format!("{}/nowhere/missing.git", s.server.url_prefix());
    let err = prove(&url, &key, &[s.server.host_key().to_owned()], "main")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Git { .. }), "{err:?}");
    let line = homelab_flux::chain::line(&err);
    assert!(
        line.contains("does not appear to be a git repository"),
        "{line}"
    );
}
