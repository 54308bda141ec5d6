//! Secrets hygiene of `validate --offline` in git work trees made with git2 in temp dirs.

use crate::support;

use std::path::Path;

use git2::{IndexAddOption, Repository, Signature};
use support::cli::{Run, assert_has, assert_no_leak, canary_token, command, run};

const FLUX: &str = "repo: https://github.com/username/manifests.git\nbranch: main\n";

/// A work tree with the config directory, the secrets file (mode 600) and a .gitignore.
fn work_tree(token: &str, gitignore: &str) -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    write(dir.path(), "config/flux.yaml", FLUX);
    write(
        dir.path(),
        "config/secrets-flux.yaml",
        &format!("token: \"{token}\"\n"),
    );
    chmod(&dir.path().join("config/secrets-flux.yaml"), 0o600);
    write(dir.path(), ".gitignore", gitignore);
    (dir, repo)
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn stage(repo: &Repository, paths: &[&str]) {
    let mut index = repo.index().unwrap();
    for p in paths {
        index.add_path(Path::new(p)).unwrap();
    }
    index.write().unwrap();
}

fn stage_all(repo: &Repository) {
    let mut index = repo.index().unwrap();
    index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
}

fn commit(repo: &Repository) {
    let mut index = repo.index().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("t", "t@example.com").unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parents: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &parents)
        .unwrap();
}

fn validate(dir: &Path, token: &str) -> Run {
    let mut cmd = command(dir);
    cmd.args(["validate", "--offline"]);
    let r = run(cmd);
    assert_no_leak(token, &r.transcript(), "hygiene");
    r
}

#[test]
fn a_clean_work_tree_has_no_findings() {
    let token = canary_token();
    let (dir, repo) = work_tree(&token, "config/secrets-*.yaml\n");
    stage_all(&repo);
    commit(&repo);
    let r = validate(dir.path(), &token);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr, "ok: the configuration is valid\n");
}

#[test]
fn a_committed_secrets_file_is_an_error_that_says_to_rotate() {
    let token = canary_token();
    let (dir, repo) = work_tree(&token, "");
    stage(&repo, &["config/flux.yaml", "config/secrets-flux.yaml"]);
    commit(&repo);
    let r = validate(dir.path(), &token);
    assert_eq!(r.code, 1);
    assert_has(
        &r,
        "error[HF060]: the secrets file `config/secrets-flux.yaml` is committed",
    );
    assert_has(&r, "git rm --cached config/secrets-flux.yaml");
    assert_has(&r, "revoke it and create a new one");
}

#[test]
fn a_staged_secrets_file_is_an_error() {
    let token = canary_token();
    let (dir, repo) = work_tree(&token, "");
    stage(&repo, &["config/secrets-flux.yaml"]);
    let r = validate(dir.path(), &token);
    assert_eq!(r.code, 1);
    assert_has(
        &r,
        "error[HF060]: the secrets file `config/secrets-flux.yaml` is staged for the next commit",
    );
}

#[test]
fn an_unignored_secrets_file_is_an_error_with_the_line_to_add() {
    let token = canary_token();
    let (dir, _repo) = work_tree(&token, "target/\n");
    let r = validate(dir.path(), &token);
    assert_eq!(r.code, 1);
    assert_has(&r, "error[HF061]");
    assert_has(&r, "add the line `config/secrets-*.yaml` to .gitignore");
}

#[test]
fn a_secrets_file_readable_by_others_is_a_warning() {
    let token = canary_token();
    let (dir, _repo) = work_tree(&token, "config/secrets-*.yaml\n");
    chmod(&dir.path().join("config/secrets-flux.yaml"), 0o644);
    let r = validate(dir.path(), &token);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_has(&r, "warning[HF062]");
    assert_has(&r, "chmod 600 config/secrets-flux.yaml");
}

#[test]
fn the_token_in_a_tracked_or_staged_file_is_named_by_file_never_by_value() {
    let token = canary_token();
    let (dir, repo) = work_tree(&token, "config/secrets-*.yaml\n");
    write(
        dir.path(),
        "notes/setup.md",
        &format!("my token is {token}\n"),
    );
    write(dir.path(), "scripts/run.sh", &format!("export T={token}\n"));
    stage(&repo, &["notes/setup.md"]);
    commit(&repo);
    stage(&repo, &["scripts/run.sh"]);
    let r = validate(dir.path(), &token);
    assert_eq!(r.code, 1);
    assert_has(&r, "error[HF063]: the token's value is in `notes/setup.md`");
    assert_has(&r, "error[HF063]: the token's value is in `scripts/run.sh`");
}

#[test]
fn the_token_from_the_environment_is_searched_for_too() {
    let token = canary_token();
    let (dir, repo) = work_tree(&token, "config/secrets-*.yaml\n");
    std::fs::remove_file(dir.path().join("config/secrets-flux.yaml")).unwrap();
    write(dir.path(), "ci.env", &format!("TOKEN={token}\n"));
    stage(&repo, &["ci.env"]);
    let mut cmd = command(dir.path());
    cmd.args(["validate", "--offline"])
        .env("HOMELAB_FLUX_TOKEN", &token);
    let r = run(cmd);
    assert_no_leak(&token, &r.transcript(), "env token");
    assert_eq!(r.code, 1);
    assert_has(&r, "error[HF063]: the token's value is in `ci.env`");
}

#[test]
fn a_tracked_plaintext_secret_manifest_is_a_warning_and_sops_files_are_not() {
    let token = canary_token();
    let (dir, repo) = work_tree(&token, "config/secrets-*.yaml\n");
    write(
        dir.path(),
        "apps/db.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n",
    );
    write(
        dir.path(),
        "apps/enc.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: enc\ndata:\n  password: ENC[AES256_GCM,data:x]\nsops:\n  version: 3.9.0\n",
    );
    stage(&repo, &["apps/db.yaml", "apps/enc.yaml"]);
    let r = validate(dir.path(), &token);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_has(&r, "warning[HF064]: `apps/db.yaml` is a Kubernetes Secret");
    assert_has(&r, "\n--> apps/db.yaml:2:1\n");
    assert!(!r.stderr.contains("apps/enc.yaml"), "{}", r.stderr);
}

#[test]
fn a_missing_secrets_file_is_a_warning_in_validate() {
    let token = canary_token();
    let (dir, _repo) = work_tree(&token, "config/secrets-*.yaml\n");
    std::fs::remove_file(dir.path().join("config/secrets-flux.yaml")).unwrap();
    let r = validate(dir.path(), &token);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_has(&r, "warning[HF050]");
}

/// The GitHub App's private key (`auth: github-app`): a tracked `app.pem`, or its PEM pasted into
/// another tracked file (even re-indented, as in a YAML block), is named by file, never shown;
/// the key file kept untracked and ignored is fine.
#[test]
fn the_github_app_key_in_a_tracked_file_is_an_error_and_never_shown() {
    let pem = std::fs::read_to_string(support::cli::fixtures().join("app-key-pkcs1.pem")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    write(
        dir.path(),
        "config/flux.yaml",
        &format!("{FLUX}auth: github-app\n"),
    );
    write(
        dir.path(),
        "config/secrets-flux.yaml",
        "githubApp:\n  id: 123456\n  privateKeyFile: app.pem\n",
    );
    chmod(&dir.path().join("config/secrets-flux.yaml"), 0o600);
    write(dir.path(), "config/app.pem", &pem);
    chmod(&dir.path().join("config/app.pem"), 0o600);
    write(
        dir.path(),
        ".gitignore",
        "config/secrets-*.yaml\nconfig/*.pem\n",
    );
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    write(
        dir.path(),
        "notes/secret.yaml",
        &format!("key: |\n{indented}"),
    );
    stage_all(&repo);
    commit(&repo);
    let leak_check = |r: &Run| {
        for line in pem.lines().filter(|l| !l.starts_with("-----")).skip(1) {
            assert_no_leak(line, &r.transcript(), "hygiene with the App's key");
        }
    };
    let r = validate(dir.path(), "unused-token-value");
    leak_check(&r);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF086]: the GitHub App's private key is in `notes/secret.yaml`, a file git tracks",
    );
    assert!(
        !r.stderr.contains("config/app.pem`, a file"),
        "{}",
        r.stderr
    );
    // Tracked by mistake: the key file itself.
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("config/app.pem")).unwrap();
    index.write().unwrap();
    std::fs::remove_file(dir.path().join("notes/secret.yaml")).unwrap();
    index.remove_path(Path::new("notes/secret.yaml")).unwrap();
    index.write().unwrap();
    let r = validate(dir.path(), "unused-token-value");
    leak_check(&r);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF086]: the GitHub App's private key is in `config/app.pem`, a file git tracks",
    );
}

/// Many tracked files, enough for the scan to run on every core.
fn many_files(root: &Path, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let rel = format!("apps/a{:02}/m{i:04}.yaml", i % 17);
            write(
                root,
                &rel,
                &format!("kind: ConfigMap\ndata:\n  n: \"{i}\"\n"),
            );
            rel
        })
        .collect()
}

/// The run failed on the token in `file` and in no other file.
fn assert_token_only_in(r: &Run, file: &str) {
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stderr.matches("error[HF063]").count(), 1, "{}", r.stderr);
    assert_has(
        r,
        &format!("error[HF063]: the token's value is in `{file}`"),
    );
}

#[test]
fn on_many_files_every_finding_is_made_in_the_index_order_every_time() {
    let token = canary_token();
    let (dir, repo) = work_tree(&token, "config/secrets-*.yaml\n");
    let files = many_files(dir.path(), 600);
    // The token in some, a plaintext Secret in others, both in one.
    let mut wanted = Vec::new();
    for i in [3, 150, 151, 420, 599] {
        write(dir.path(), &files[i], &format!("token: {token}\n"));
    }
    for i in [7, 420, 598] {
        let with = std::fs::read_to_string(dir.path().join(&files[i])).unwrap();
        write(
            dir.path(),
            &files[i],
            &format!("{with}---\nkind: Secret\nstringData:\n  a: b\n"),
        );
    }
    stage_all(&repo);
    let mut sorted: Vec<&String> = files.iter().collect();
    sorted.sort();
    for f in sorted {
        let i: usize = f[f.len() - 9..f.len() - 5].parse().unwrap();
        if [3, 150, 151, 420, 599].contains(&i) {
            wanted.push(format!("error[HF063]: the token's value is in `{f}`"));
        }
        if [7, 420, 598].contains(&i) {
            wanted.push(format!("warning[HF064]: `{f}` is a Kubernetes Secret"));
        }
    }
    let first = validate(dir.path(), &token);
    assert_eq!(first.code, 1, "{}", first.stderr);
    let made: Vec<&str> = first
        .stderr
        .lines()
        .filter(|l| l.starts_with("error[HF06") || l.starts_with("warning[HF06"))
        .collect();
    assert_eq!(made.len(), wanted.len(), "{}", first.stderr);
    for (m, w) in made.iter().zip(&wanted) {
        assert!(m.starts_with(w.as_str()), "{m} is not {w}");
    }
    for _ in 0..3 {
        assert_eq!(validate(dir.path(), &token).stderr, first.stderr);
    }
}

#[test]
fn the_token_in_one_file_of_many_is_found() {
    let token = canary_token();
    let (dir, repo) = work_tree(&token, "config/secrets-*.yaml\n");
    let files = many_files(dir.path(), 800);
    write(dir.path(), &files[517], &format!("x: {token}\n"));
    stage_all(&repo);
    commit(&repo);
    assert_token_only_in(&validate(dir.path(), &token), &files[517]);
}

/// The stat data of the index vouches for a file only when it cannot have changed since: a
/// file rewritten to the same size after it was staged is compared with its staged blob.
#[test]
fn a_staged_token_is_found_after_the_file_is_rewritten_to_the_same_size() {
    let token = canary_token();
    let (dir, repo) = work_tree(&token, "config/secrets-*.yaml\n");
    let files = many_files(dir.path(), 300);
    write(dir.path(), &files[42], &format!("x: {token}\n"));
    stage_all(&repo);
    write(
        dir.path(),
        &files[42],
        &format!("x: {}\n", "y".repeat(token.len())),
    );
    assert_token_only_in(&validate(dir.path(), &token), &files[42]);
}

#[test]
fn among_many_files_a_fifo_is_skipped_and_its_staged_blob_searched() {
    let token = canary_token();
    let (dir, repo) = work_tree(&token, "config/secrets-*.yaml\n");
    let files = many_files(dir.path(), 400);
    write(dir.path(), &files[200], &format!("x: {token}\n"));
    stage_all(&repo);
    std::fs::remove_file(dir.path().join(&files[200])).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(dir.path().join(&files[200]))
        .status()
        .unwrap();
    assert!(made.success());
    assert_token_only_in(&validate(dir.path(), &token), &files[200]);
}
