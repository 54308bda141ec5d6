//! Hostile and odd input through the real binary (issue 10): reads that would never end, flags
//! that could only end badly, the token kept to its own host and out of credential plugins and
//! proxies, and terminal escapes in JSON. The escape, depth and long-line cases of the config
//! files themselves are fixtures of the corpus (tests/it/config_corpus.rs).

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::cli::{Run, assert_no_leak, canary_token, command, run_with_limit};
use support::fake_github::{FakeGitHub, RepoSpec, TokenSpec, fake_sha};

const FLUX: &str = "repo: https://github.com/username/manifests.git\nbranch: main\n";

/// A config directory with `flux.yaml` (`None`: not written) and a secrets file.
fn config_dir(flux: Option<&str>, token: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    if let Some(flux) = flux {
        std::fs::write(dir.path().join("config/flux.yaml"), flux).unwrap();
    }
    let secrets = dir.path().join("config/secrets-flux.yaml");
    std::fs::write(&secrets, format!("token: {token}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

/// Runs with a hang guard that fails the test instead of waiting forever: a read that never
/// ends is exactly the defect these cases stand for.
fn homelab_flux(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = command(dir);
    cmd.args(args);
    run_with_limit(cmd, Duration::from_secs(30))
}

/// Regression: `config/flux.yaml` as a FIFO hung `validate --offline` forever.
#[test]
fn a_fifo_as_the_config_file_is_refused_at_once() {
    let dir = config_dir(None, &canary_token());
    let fifo = dir.path().join("config/flux.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let r = homelab_flux(dir.path(), &["validate", "--offline"]);
    assert_snapshot!("fifo_config", r.transcript());
}

/// Regression: `config/flux.yaml` (or the secrets file) as a symlink to `/dev/zero` read forever.
#[test]
fn a_symlink_to_a_device_is_refused_and_one_to_a_file_is_read() {
    let token = canary_token();
    let dir = config_dir(None, &token);
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("config/flux.yaml")).unwrap();
    let r = homelab_flux(dir.path(), &["validate", "--offline"]);
    assert_snapshot!("dev_zero_config", r.transcript());

    let secrets = dir.path().join("config/secrets-flux.yaml");
    std::fs::remove_file(dir.path().join("config/flux.yaml")).unwrap();
    std::fs::write(dir.path().join("config/flux.yaml"), FLUX).unwrap();
    std::fs::remove_file(&secrets).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &secrets).unwrap();
    let r = homelab_flux(dir.path(), &["validate", "--offline"]);
    assert_snapshot!("dev_zero_secrets", r.transcript());

    // Dotfile managers link the real file in: that is fine.
    std::fs::remove_file(&secrets).unwrap();
    let real = dir.path().join("real-secrets.yaml");
    std::fs::write(&real, format!("token: {token}\n")).unwrap();
    std::os::unix::fs::symlink(&real, &secrets).unwrap();
    let r = homelab_flux(dir.path(), &["validate", "--offline"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_no_leak(&token, &r.transcript(), "symlinked secrets");
}

/// Regression: a tracked symlink to `/dev/zero` anywhere in the work tree hung the hygiene scan,
/// which followed it; a FIFO in the index did the same.
#[test]
fn the_hygiene_scan_skips_what_is_not_a_regular_file() {
    let token = canary_token();
    let dir = config_dir(Some(FLUX), &token);
    std::fs::write(dir.path().join(".gitignore"), "config/secrets-*.yaml\n").unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zeros")).unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("zeros")).unwrap();
    index.add_path(Path::new("config/flux.yaml")).unwrap();
    index.add_path(Path::new(".gitignore")).unwrap();
    // A file whose content is the token, staged, then replaced on disk by a FIFO: the staged
    // blob is still searched, the FIFO never opened.
    std::fs::write(dir.path().join("leak.txt"), &token).unwrap();
    index.add_path(Path::new("leak.txt")).unwrap();
    index.write().unwrap();
    std::fs::remove_file(dir.path().join("leak.txt")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(dir.path().join("leak.txt"))
        .status()
        .unwrap();
    assert!(made.success());
    let r = homelab_flux(dir.path(), &["validate", "--offline"]);
    assert_no_leak(&token, &r.transcript(), "hygiene with a FIFO");
    assert_snapshot!("hygiene_skips_devices_and_fifos", r.transcript());
}

/// Regression: `--timeout 99999999999999h` was accepted and would have panicked at
/// `Instant + timeout` after the cluster writes. Checked before anything else.
#[test]
fn flags_that_can_only_end_badly_are_usage_errors() {
    let dir = config_dir(Some(FLUX), &canary_token());
    let mut transcript = String::new();
    for args in [
        &["bootstrap", "--timeout", "99999999999999h"][..],
        &["bootstrap", "--timeout", "99999999999999999999999s"],
        &["bootstrap", "--timeout", "25h"],
        &[
            "bootstrap",
            "--flux-manifests",
            "http://example.com/install.yaml",
        ],
        &[
            "bootstrap",
            "--flux-manifests",
            "ftp://example.com/install.yaml",
        ],
        &["bootstrap", "--flux-manifests-sha256", "deadbeef"],
    ] {
        let r = homelab_flux(dir.path(), args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        transcript.push_str(&format!("$ {}\n{}\n", args.join(" "), r.transcript()));
    }
    assert_snapshot!("usage_errors", transcript);
}

/// Regression: clap quoted the arguments of a bad command line as they were typed. A carriage
/// return, a backspace, a bidi control or a C1 control reached the terminal raw, an escape
/// sequence vanished from the message (or, on a terminal, was sent as it was), and a token
/// pasted in the wrong place was shown. Now each is shown escaped and the token masked, and the
/// exit code stays 2.
#[test]
fn a_bad_command_line_is_quoted_escaped_and_masked() {
    let token = canary_token();
    let dir = config_dir(Some(FLUX), &token);
    let hostile = "a\rb\u{202e}c\u{8}d\u{1b}[31m\u{9b}e";
    let cases: [(&[&str], &str); 4] = [
        (
            &["validate", "--format", hostile],
            "error: invalid value 'a\\u{d}b\\u{202e}c\\u{8}d\\u{1b}[31m\\u{9b}e' for '--format <FORMAT>'",
        ),
        (
            &["bootstrap", "--timeout", "\u{1b}]52;c;aGk=\u{7}"],
            "'\\u{1b}]52;c;aGk=\\u{7}'",
        ),
        (&["validate", &token], "error: unexpected argument '****"),
        (
            &["\u{1b}[2Jvalidate"],
            "error: unrecognized subcommand '\\u{1b}[2Jvalidate'",
        ),
    ];
    for (args, shown) in cases {
        let r = homelab_flux(dir.path(), args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
        assert!(r.stderr.contains(shown), "{args:?}: {}", r.stderr);
        let raw: Vec<char> = r
            .stderr
            .chars()
            .filter(|&c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
            .collect();
        assert!(raw.is_empty(), "{args:?}: raw {raw:?} in {}", r.stderr);
        assert_no_leak(&token, &r.stderr, "a bad command line");
    }
    // Help and version are clap's own text, on stdout, exit 0.
    let r = homelab_flux(dir.path(), &["validate", "--help"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("Check the configuration files"),
        "{}",
        r.stdout
    );
    let r = homelab_flux(dir.path(), &["--version"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "homelab-flux 0.1.0\n"));
}

/// The panic hook (issue 10): a crash, on any thread, exits 2 (not Rust's 101) with one line
/// that names it a bug, the message escaped and the token masked. The test runs itself again as
/// a child process with `HOMELAB_FLUX_PANIC_CHILD` set; the child installs the hook, hides the
/// token and panics with both in the message.
#[test]
fn a_panic_exits_2_with_the_message_escaped_and_the_token_masked() {
    const CHILD: &str = "HOMELAB_FLUX_PANIC_CHILD";
    if let Some(how) = std::env::var_os(CHILD) {
        let token = std::env::var("HOMELAB_FLUX_PANIC_TOKEN").unwrap();
        homelab_flux::output::hide(&secrecy::SecretString::from(token.clone()));
        homelab_flux::output::install_panic_hook();
        let message = format!("boom \u{1b}[2J {token}");
        if how == "thread" {
            let _ = std::thread::spawn(move || panic!("{message}")).join();
        } else {
            panic!("{message}");
        }
        unreachable!("the hook exits");
    }
    for how in ["main", "thread"] {
        let token = canary_token();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "hostile::a_panic_exits_2_with_the_message_escaped_and_the_token_masked",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, how)
            .env("HOMELAB_FLUX_PANIC_TOKEN", &token)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{how}: {stderr}");
        assert!(
            stderr.contains("error: homelab-flux crashed at tests/it/hostile.rs:"),
            "{how}: {stderr}"
        );
        assert!(
            stderr.contains(": boom \\u{1b}[2J ****************************************\nThis is a bug; please report it.\n"),
            "{how}: {stderr}"
        );
        assert!(!stderr.contains('\u{1b}'), "{how}: {stderr}");
        assert_no_leak(&token, &stderr, "a panic");
        assert_no_leak(&token, &String::from_utf8_lossy(&out.stdout), "a panic");
    }
}

/// A fine-grained token shaped like GitHub's, unique per test.
fn fine_grained(tag: &str) -> String {
    let mut t = format!("github_pat_11HOSTILE{tag}");
    let fill = "aZ9yX8wV7uT6s5R4q3P2o1N0mL9kJ8iH7gF6eD5cB4aZ3yX2wV1uT0sR9qP8oN7mL6kJ5iQ4hG3fE2dC1bA0zYxWvUtSr";
    t.push_str(&fill[..93 - t.len()]);
    t
}

/// A fake GitHub that knows `token` on `username/manifests`.
fn fake_github(token: &str) -> FakeGitHub {
    let gh = FakeGitHub::start();
    gh.add_token(token, TokenSpec::fine_grained("username"));
    gh.add_repo(RepoSpec::new("username", "manifests").branch("main", &fake_sha("main")));
    gh
}

/// Regression: `repo: https://githb.com/...` was taken for GitHub Enterprise and the token was
/// sent there. Now it is an error before any request, even with the API override pointing at a
/// server that would answer.
#[test]
fn a_repo_on_another_host_sends_no_request() {
    let token = fine_grained("typo");
    let gh = fake_github(&token);
    let dir = config_dir(
        Some("repo: https://githb.com/username/manifests.git\nbranch: main\n"),
        &token,
    );
    let mut transcript = String::new();
    for args in [&["-vv", "validate"][..], &["-vv", "bootstrap"]] {
        let mut cmd = command(dir.path());
        cmd.args(args)
            .env("HOMELAB_FLUX_GITHUB_API_URL", gh.url())
            .env("KUBECONFIG", dir.path().join("no-kubeconfig"));
        let r = run_with_limit(cmd, Duration::from_secs(30));
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert_no_leak(&token, &r.transcript(), "githb.com");
        transcript.push_str(&format!("$ {}\n{}\n", args.join(" "), r.transcript()));
    }
    assert!(gh.requests().is_empty(), "{:?}", gh.requests());
    assert_snapshot!("repo_on_another_host", transcript);
}

/// `HOMELAB_FLUX_GITHUB_HOST` names the host of `HOMELAB_FLUX_TOKEN` (for CI): an Enterprise
/// repository passes offline with it, and fails without it.
#[test]
fn the_token_host_comes_from_the_environment_beside_the_token() {
    let token = canary_token();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/flux.yaml"),
        "repo: https://ghe.example.com/team/manifests.git\nbranch: main\n",
    )
    .unwrap();
    let mut transcript = String::new();
    for host in [None, Some("GHE.example.com"), Some("ghe.example.com/api")] {
        let mut cmd = command(dir.path());
        cmd.args(["validate", "--offline"])
            .env("HOMELAB_FLUX_TOKEN", &token);
        if let Some(h) = host {
            cmd.env("HOMELAB_FLUX_GITHUB_HOST", h);
        }
        let r = run_with_limit(cmd, Duration::from_secs(30));
        assert_no_leak(&token, &r.transcript(), "host from env");
        transcript.push_str(&format!(
            "$ HOMELAB_FLUX_GITHUB_HOST={host:?}\n{}\n",
            r.transcript()
        ));
    }
    assert_snapshot!("token_host_from_env", transcript);
}

/// The loopback `http://` override never goes through `HTTP_PROXY` (the proxy would read the
/// `Authorization` header): with a proxy that does not answer, the fake GitHub is still reached,
/// and the non-default API base is printed, `--quiet` or not.
#[test]
fn the_loopback_api_override_bypasses_the_proxy_and_is_announced() {
    let token = fine_grained("proxy");
    let gh = fake_github(&token);
    let dir = config_dir(Some(FLUX), &token);
    std::fs::write(dir.path().join("config/.gitignore"), "secrets-*.yaml\n").unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", dead.local_addr().unwrap());
    let mut cmd = command(dir.path());
    cmd.args(["--quiet", "validate"])
        .env("HOMELAB_FLUX_GITHUB_API_URL", gh.url())
        .env("HTTP_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env("ALL_PROXY", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    let r = run_with_limit(cmd, Duration::from_secs(30));
    drop(dead);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!gh.requests().is_empty(), "the fake GitHub was not reached");
    assert_eq!(
        r.stderr,
        format!(
            "note: the token goes to the GitHub API at `{}` (from `HOMELAB_FLUX_GITHUB_API_URL`), not `https://api.github.com`\n",
            gh.url().trim_end_matches('/')
        )
    );
}

/// Kubeconfig credential plugins inherit the environment; `HOMELAB_FLUX_TOKEN` is taken out of
/// theirs. The plugin here writes its environment to a file and hands out a credential; the API
/// server address is a closed port, so the run ends "unreachable" after the plugin ran.
#[test]
fn kubeconfig_exec_plugins_do_not_get_the_token() {
    let token = canary_token();
    let dir = config_dir(Some(FLUX), &token);
    let plugin = dir.path().join("plugin.sh");
    let dump = dir.path().join("plugin-env.txt");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\nenv > '{}'\necho '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"cluster-credential\"}}}}'\n",
            dump.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:{closed}
    insecure-skip-tls-verify: true
users:
- name: u
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: {}
      interactiveMode: Never
contexts:
- name: home
  context: {{cluster: c, user: u}}
current-context: home
",
            plugin.display()
        ),
    )
    .unwrap();
    let mut cmd = command(dir.path());
    cmd.args(["-vv", "status", "--kubeconfig"])
        .arg(&kubeconfig)
        .env("HOMELAB_FLUX_TOKEN", &token)
        .env("HOMELAB_FLUX_PLUGIN_CANARY", "seen");
    let r = run_with_limit(cmd, Duration::from_secs(60));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_no_leak(&token, &r.transcript(), "exec plugin");
    let env = std::fs::read_to_string(&dump).expect("the plugin ran");
    assert!(env.contains("HOMELAB_FLUX_PLUGIN_CANARY=seen"), "{env}");
    assert!(!env.contains("HOMELAB_FLUX_TOKEN"), "{env}");
    assert_no_leak(&token, &env, "the plugin's environment");
}

/// JSON output escapes what JSON allows raw but a terminal acts on (DEL, C1, bidi controls), so
/// `validate --format json` piped to a terminal is safe too, and still parses to the same text.
#[test]
fn json_output_escapes_terminal_controls() {
    let dir = config_dir(
        Some(
            "repo: https://github.com/username/manifests.git\nauth: \"\\e]52;c;aGk=\\a\\u202e\\x7f\\x9b\"\n",
        ),
        &canary_token(),
    );
    let r = homelab_flux(dir.path(), &["validate", "--offline", "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        !r.stdout
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{}",
        r.stdout
    );
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        doc["diagnostics"][0]["message"],
        "`auth` must be `deploy-key`, `token` or `github-app`, not `\u{1b}]52;c;aGk=\u{7}\u{202e}\u{7f}\u{9b}`"
    );
    assert_snapshot!("json_escapes", r.stdout);
}
