//! A new user's first hour (issue 17): `init` in a fresh repository (with and without a
//! terminal), the pre-commit hooks with the real `pre-commit`, a secrets file under another
//! name, shell completions in a real bash, the cluster errors a first run meets, and the help.

use crate::support;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::cli::{Run, assert_has, assert_no_leak, bin, canary_token, command, run};

const REMOTE: &str = "git@github.com:octo/homelab.git";

/// A git repository with an `origin` on GitHub and one commit on `main`.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init_opts(
        dir.path(),
        git2::RepositoryInitOptions::new().initial_head("main"),
    )
    .unwrap();
    repo.remote("origin", REMOTE).unwrap();
    std::fs::write(dir.path().join("README.md"), "homelab\n").unwrap();
    commit(&repo, &["README.md"], "start");
    dir
}

fn commit(repo: &git2::Repository, paths: &[&str], message: &str) {
    let mut index = repo.index().unwrap();
    for p in paths {
        index.add_path(Path::new(p)).unwrap();
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parents: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap();
}

fn with_stdin(mut cmd: Command, input: &str) -> Run {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // A run that stops before it reads its input (a file exists) closes the pipe: not an error.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn init(dir: &Path, args: &[&str], input: &str) -> Run {
    let mut cmd = command(dir);
    cmd.arg("init").args(args);
    with_stdin(cmd, input)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_a_configuration_that_validates_clean() {
    let dir = repository();
    let token = canary_token();
    let r = init(dir.path(), &["--token-stdin"], &format!("{token}\n"));
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_no_leak(&token, &r.transcript(), "init");
    let flux = std::fs::read_to_string(dir.path().join("config/flux.yaml")).unwrap();
    assert!(
        flux.contains("repo: https://github.com/octo/homelab.git\nbranch: main\n"),
        "{flux}"
    );
    let secrets = dir.path().join("config/secrets-flux.yaml");
    assert_eq!(
        std::fs::read_to_string(&secrets).unwrap(),
        format!("token: \"{token}\"\n")
    );
    assert_eq!(mode(&secrets), 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".gitignore")).unwrap(),
        "config/secrets-*.yaml\n"
    );
    assert_has(&r, "ok: the configuration is valid");
    assert_has(&r, "next: `homelab-flux validate`");
    // And `validate --offline` agrees, hygiene included.
    let v = run({
        let mut c = command(dir.path());
        c.args(["validate", "--offline"]);
        c
    });
    assert_eq!(v.code, 0, "{}", v.transcript());
    assert!(!v.stderr.contains("warning"), "{}", v.stderr);
}

#[test]
fn init_never_overwrites_without_force() {
    let dir = repository();
    let token = canary_token();
    assert_eq!(
        init(dir.path(), &["--token-stdin"], &format!("{token}\n")).code,
        0
    );
    std::fs::write(
        dir.path().join("config/flux.yaml"),
        "repo: https://github.com/octo/mine.git\n",
    )
    .unwrap();
    let other = canary_token();
    let r = init(dir.path(), &["--token-stdin"], &format!("{other}\n"));
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_has(
        &r,
        "error: `config/flux.yaml` exists; nothing was written. Run with `--force` to overwrite it",
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("config/flux.yaml")).unwrap(),
        "repo: https://github.com/octo/mine.git\n"
    );
    assert!(
        std::fs::read_to_string(dir.path().join("config/secrets-flux.yaml"))
            .unwrap()
            .contains(&token),
        "the secrets file is untouched too"
    );
    let r = init(
        dir.path(),
        &["--token-stdin", "--force"],
        &format!("{other}\n"),
    );
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(
        std::fs::read_to_string(dir.path().join("config/secrets-flux.yaml"))
            .unwrap()
            .contains(&other)
    );
    let ignore = std::fs::read_to_string(dir.path().join(".gitignore")).unwrap();
    assert_eq!(ignore.matches("secrets-*.yaml").count(), 1, "{ignore}");
}

#[test]
fn init_without_a_terminal_names_the_flag_of_what_it_cannot_ask() {
    let dir = repository();
    let r = init(dir.path(), &[], "");
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_eq!(
        r.stderr,
        "error: no token: there is no terminal to ask for it; pass it on standard input with `--token-stdin` (never as an argument)\n"
    );
    let bare = tempfile::tempdir().unwrap();
    let r = init(bare.path(), &["--token-stdin"], "x\n");
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_eq!(
        r.stderr,
        "error: no repository: the `origin` remote is not a GitHub repository; pass `--repo https://github.com/OWNER/REPO`\n"
    );
    assert!(!dir.path().join("config").exists(), "nothing was written");
    assert!(!bare.path().join("config").exists(), "nothing was written");
}

#[test]
fn init_refuses_a_placeholder_token_and_writes_nothing() {
    let dir = repository();
    let r = init(
        dir.path(),
        &["--token-stdin"],
        &format!("ghp_{}\n", "x".repeat(32)),
    );
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert_has(&r, "error[HF044]");
    assert!(!dir.path().join("config").exists());
}

/// On a terminal the token is asked for and never echoed. The test answers when the prompt is
/// on the screen (the run announces it), never at a guessed moment.
#[test]
fn init_on_a_terminal_asks_for_the_token_without_echo() {
    let dir = repository();
    let token = canary_token();
    // util-linux's `script` gives the command a pseudo-terminal and relays our pipe to it.
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("{} init", bin().display()))
        .arg("/dev/null")
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env_remove("HOMELAB_FLUX_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs the command on a terminal");
    let mut stdout = child.stdout.take().unwrap();
    let mut screen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&screen).contains("GitHub token (input hidden): ") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the prompt never came:\n{}",
            String::from_utf8_lossy(&screen)
        );
        screen.extend_from_slice(&buf[..n]);
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{token}\r").as_bytes()).unwrap();
    stdout.read_to_end(&mut screen).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    let screen = String::from_utf8_lossy(&screen);
    assert!(status.success(), "{status:?}: {screen}");
    assert_no_leak(&token, &screen, "the terminal");
    assert!(screen.contains("the configuration is valid"), "{screen}");
    assert!(
        std::fs::read_to_string(dir.path().join("config/secrets-flux.yaml"))
            .unwrap()
            .contains(&token)
    );
}

/// The installed binary's directory first on `PATH`, as `language: system` hooks need.
fn path_with_binary() -> String {
    format!(
        "{}:{}",
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn pre_commit() -> PathBuf {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/testenv/pre-commit/bin/pre-commit");
    assert!(
        path.exists(),
        "{} is missing: run tests/env/setup (it installs pre-commit)",
        path.display()
    );
    path
}

fn git(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("PATH", path_with_binary())
        .env("PRE_COMMIT_HOME", dir.join(".cache-pre-commit"))
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The hook `init --pre-commit` writes, installed with the real pre-commit: a commit that puts
/// the token into a file outside `config/` is refused (the hook runs whatever files change).
#[test]
fn the_pre_commit_hook_refuses_a_commit_that_leaks_the_token_anywhere() {
    let dir = repository();
    let token = canary_token();
    let r = init(
        dir.path(),
        &["--token-stdin", "--pre-commit"],
        &format!("{token}\n"),
    );
    assert_eq!(r.code, 0, "{}", r.transcript());
    let hook_config = std::fs::read_to_string(dir.path().join(".pre-commit-config.yaml")).unwrap();
    assert!(hook_config.contains("always_run: true"), "{hook_config}");
    let install = Command::new(pre_commit())
        .arg("install")
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(install.status.success(), "{install:?}");

    let ok = git(
        dir.path(),
        &[
            "add",
            "config/flux.yaml",
            ".gitignore",
            ".pre-commit-config.yaml",
        ],
    );
    assert_eq!(ok.code, 0, "{}", ok.transcript());
    let ok = git(dir.path(), &["commit", "-q", "-m", "homelab-flux config"]);
    assert_eq!(ok.code, 0, "a clean commit passes:\n{}", ok.transcript());

    std::fs::create_dir_all(dir.path().join("apps/renovate")).unwrap();
    std::fs::write(
        dir.path().join("apps/renovate/values.yaml"),
        format!("token: {token}\n"),
    )
    .unwrap();
    git(dir.path(), &["add", "apps/renovate/values.yaml"]);
    let refused = git(dir.path(), &["commit", "-q", "-m", "renovate"]);
    assert_ne!(refused.code, 0, "{}", refused.transcript());
    let text = refused.transcript();
    assert!(text.contains("error[HF063]"), "{text}");
    assert!(text.contains("apps/renovate/values.yaml"), "{text}");
    assert_no_leak(&token, &text, "the hook's output");
}

/// This repository's `.pre-commit-hooks.yaml`, as another repository uses it: the hook for an
/// installed binary, through `pre-commit try-repo` (the `language: rust` one differs only in who
/// builds the binary: pre-commit runs a release build of several minutes for it).
#[test]
fn the_shipped_hook_catches_the_token_in_any_file() {
    let hooks: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".pre-commit-hooks.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let hooks = hooks.as_sequence().unwrap();
    for hook in hooks {
        assert_eq!(hook["always_run"], true, "{hook:?}");
        assert_eq!(hook["entry"], "homelab-flux validate --offline", "{hook:?}");
        assert!(hook.get("files").is_none(), "no files filter: {hook:?}");
    }
    let dir = repository();
    let token = canary_token();
    assert_eq!(
        init(dir.path(), &["--token-stdin"], &format!("{token}\n")).code,
        0
    );
    std::fs::write(dir.path().join("leak.yaml"), format!("t: {token}\n")).unwrap();
    git(dir.path(), &["add", "-A"]);
    let out = Command::new(pre_commit())
        .args([
            "try-repo",
            env!("CARGO_MANIFEST_DIR"),
            "homelab-flux-validate-system",
        ])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("PATH", path_with_binary())
        .env("PRE_COMMIT_HOME", dir.path().join(".cache-pre-commit"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("error[HF063]") && text.contains("leak.yaml"),
        "{text}"
    );
}

/// Regression: the token saved as `config/secrets.yaml` was read by nothing and protected by
/// nothing, and committing it passed.
#[test]
fn a_secrets_file_under_another_name_is_an_error_until_ignored() {
    let dir = repository();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/flux.yaml"),
        "repo: https://github.com/octo/homelab.git\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config/secrets.yaml"),
        format!("token: {}\n", canary_token()),
    )
    .unwrap();
    let validate = || {
        let mut c = command(dir.path());
        c.args(["validate", "--offline"]);
        run(c)
    };
    let r = validate();
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert_has(
        &r,
        "error[HF065]: `config/secrets.yaml` looks like a secrets file, but homelab-flux reads `config/secrets-flux.yaml` and git does not ignore `config/secrets.yaml`",
    );
    assert!(
        !r.stderr.contains(".example"),
        "no hint cites a file the user does not have:\n{}",
        r.stderr
    );
    std::fs::write(dir.path().join(".gitignore"), "config/secrets*.yaml\n").unwrap();
    let r = validate();
    assert!(!r.stderr.contains("HF065"), "{}", r.transcript());
}

#[cfg(unix)]
#[test]
fn a_secrets_file_readable_by_others_is_a_warning_outside_git_too() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/flux.yaml"),
        "repo: https://github.com/octo/homelab.git\n",
    )
    .unwrap();
    let secrets = dir.path().join("config/secrets-flux.yaml");
    std::fs::write(&secrets, format!("token: {}\n", canary_token())).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = command(dir.path());
    c.args(["validate", "--offline"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_has(
        &r,
        "warning[HF062]: the secrets file `config/secrets-flux.yaml` is readable by other users (mode 644)",
    );
}

/// Regression: clap_complete named the bash cases of a hyphenated binary's subcommands wrongly
/// (clap-rs/clap#6421), so `homelab-flux bootstrap --kube<TAB>` completed nothing.
#[test]
fn bash_completes_the_options_of_a_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = command(dir.path());
    c.args(["completions", "bash"]);
    let script = run(c);
    assert_eq!(script.code, 0);
    let file = dir.path().join("homelab-flux.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    let complete = |words: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                r#"source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _homelab__flux homelab-flux "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"; printf '%s\n' "${{COMPREPLY[@]}}""#,
                file.display()
            ))
            .output()
            .expect("bash");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(complete("homelab-flux bootstrap --kube"), "--kubeconfig\n");
    assert_eq!(complete("homelab-flux validate --off"), "--offline\n");
    let commands = complete("homelab-flux ini");
    assert_eq!(commands, "init\n");
}

/// A kubeconfig pointing at `server`, with context `home`.
fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: home\n  cluster:\n    server: {server}\ncontexts:\n- name: home\n  context:\n    cluster: home\n    user: home\ncurrent-context: home\nusers:\n- name: home\n  user:\n    token: abc\n"
        ),
    )
    .unwrap();
    path
}

/// A configuration that validates offline, with the GitHub API pointed at a closed port.
fn offline_world() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/flux.yaml"),
        "repo: https://github.com/octo/homelab.git\nbranch: main\n",
    )
    .unwrap();
    let secrets = dir.path().join("config/secrets-flux.yaml");
    std::fs::write(&secrets, format!("token: {}\n", canary_token())).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

/// Regression: with no kubeconfig and no network, bootstrap spent seconds on GitHub and named
/// only the DNS error; the local fact comes first now, said once.
#[test]
fn a_missing_kubeconfig_is_named_once_before_any_request() {
    let dir = offline_world();
    let mut c = command(dir.path());
    c.args(["bootstrap", "--kubeconfig", "nowhere/kubeconfig"])
        .env(
            "HOMELAB_FLUX_GITHUB_API_URL",
            support::cli::closed_api_url(),
        );
    let r = run(c);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_eq!(
        r.stderr,
        "error: cannot read the kubeconfig `nowhere/kubeconfig` (No such file or directory (os error 2)); pass `--kubeconfig FILE` or set `KUBECONFIG`\n"
    );
}

/// A server that answers 404 to everything, as a web server at a mistyped address does.
fn not_kubernetes() -> String {
    let port = support::loopback::serve(|mut stream| async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn a_server_that_is_not_kubernetes_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let server = not_kubernetes();
    let kc = kubeconfig(dir.path(), &server);
    let mut c = command(dir.path());
    c.args(["status", "--kubeconfig"]).arg(&kc);
    let r = run(c);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert_eq!(
        r.stderr,
        format!(
            "error: `{server}/` answered the version request with HTTP 404, which no Kubernetes API server does: is it the API server's address? (see `server:` in the kubeconfig, and `--context`)\n"
        )
    );
}

/// Regression: online `validate` printed "valid" right before saying it could not check.
#[test]
fn online_validate_does_not_say_valid_when_it_could_not_finish() {
    let dir = offline_world();
    let mut c = command(dir.path());
    c.arg("validate").env(
        "HOMELAB_FLUX_GITHUB_API_URL",
        support::cli::closed_api_url(),
    );
    let r = support::cli::run_with_limit(c, Duration::from_secs(120));
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(!r.stderr.contains("is valid"), "{}", r.stderr);
    assert_has(&r, "error: cannot check the configuration against GitHub");
}

#[test]
fn export_refuses_a_format_it_does_not_print() {
    let dir = offline_world();
    let mut c = command(dir.path());
    c.args(["bootstrap", "--export", "--format", "json"]);
    let r = run(c);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr
            .contains("'--export' cannot be used with '--format <FORMAT>'"),
        "{}",
        r.stderr
    );
}

/// Run from inside `config/`, the message says where it looked.
#[test]
fn a_missing_flux_yaml_names_the_directory_it_looked_in() {
    let dir = offline_world();
    let inside = dir.path().join("config");
    let mut c = command(&inside);
    c.args(["validate", "--offline"]);
    let r = run(c);
    assert_eq!(r.code, 2);
    let looked_in = inside.join("config");
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot load the configuration: `config/flux.yaml` not found (looked in `{}`); run `homelab-flux init` to write it, or pass `--config-dir` if the configuration is elsewhere\n",
            looked_in.display()
        )
    );
}

/// Every page the main man page names exists, and `completions` and `man` take no option they
/// do not use.
#[test]
fn the_man_pages_named_exist_and_completions_take_no_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    let man = |args: &[&str]| {
        let mut c = command(dir.path());
        c.arg("man").args(args);
        run(c)
    };
    let main = man(&[]);
    assert_eq!(main.code, 0);
    let named: Vec<String> = main
        .stdout
        .match_indices("homelab\\-flux\\-")
        .map(|(i, m)| {
            main.stdout[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase())
                .collect::<String>()
        })
        .filter(|page| !page.is_empty())
        .collect();
    assert!(named.len() >= 6, "{named:?}");
    for page in &named {
        let r = man(&[page.as_str()]);
        assert_eq!(r.code, 0, "{page}: {}", r.stderr);
        assert!(
            r.stdout.contains(&format!(".TH homelab-flux-{page} 1")),
            "{page}: {}",
            &r.stdout[..200.min(r.stdout.len())]
        );
    }
    for cmd in [&["completions", "--help"][..], &["man", "--help"]] {
        let mut c = command(dir.path());
        c.args(cmd);
        let r = run(c);
        assert!(!r.stdout.contains("--config-dir"), "{}", r.stdout);
        assert!(r.stdout.contains("Examples:"), "{}", r.stdout);
    }
}
