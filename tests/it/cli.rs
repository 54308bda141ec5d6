//! The command line through the real binary: help texts, export, completions, exit codes, and
//! the canary token that must never appear in any output.

use crate::support;

use std::path::Path;

use support::cli::{
    CANARY_COMMANDS, assert_has, assert_no_leak, canary_token, closed_api_url, command, fixtures,
    run, scratch_copy,
};

fn config_dir(flux: &str, secrets: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/flux.yaml"), flux).unwrap();
    if let Some(s) = secrets {
        support::cli::write_secrets(&dir.path().join("config/secrets-flux.yaml"), s);
    }
    dir
}

fn homelab_flux(dir: &Path, args: &[&str]) -> support::cli::Run {
    let mut cmd = command(dir);
    cmd.args(args);
    run(cmd)
}

#[test]
fn help_of_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["init", "--help"],
        &["validate", "--help"],
        &["bootstrap", "--help"],
        &["status", "--help"],
        &["uninstall", "--help"],
        &["completions", "--help"],
        &["man", "--help"],
    ] {
        let r = homelab_flux(dir.path(), args);
        assert_eq!(r.code, 0);
        assert_snapshot!(
            format!("help__{}", args.join("_").trim_start_matches('-')),
            r.stdout
        );
    }
}

#[test]
fn export_with_a_deploy_key() {
    let dir = config_dir(
        "repo: https://github.com/username/manifests\nbranch: main\npath: clusters/home/\n",
        None,
    );
    let r = homelab_flux(dir.path(), &["bootstrap", "--export"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    assert_snapshot!("export__deploy_key", r.stdout);
}

#[test]
fn export_with_a_token_reads_no_secret_and_defaults_the_branch() {
    let token = canary_token();
    let dir = config_dir(
        "repo: https://github.com/username/manifests.git\nauth: token\n",
        Some(&format!("token: {token}\n")),
    );
    let r = homelab_flux(dir.path(), &["bootstrap", "--export", "-vv"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_no_leak(&token, &r.transcript(), "export");
    assert!(!r.stdout.contains("kind: Secret"));
    assert_snapshot!("export__token", r.transcript());
}

#[test]
fn export_of_an_invalid_configuration_prints_the_diagnostics_and_nothing_on_stdout() {
    let scratch = scratch_copy(&fixtures().join("invalid/repo-scp-like"));
    let r = homelab_flux(scratch.path(), &["bootstrap", "--export"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty());
    assert_has(&r, "error[HF020]");
}

#[test]
fn completions_and_man_page_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let r = homelab_flux(dir.path(), &["completions", "bash"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("complete -F _homelab__flux"),
        "{}",
        &r.stdout[..200.min(r.stdout.len())]
    );
    assert!(r.stdout.contains("--offline"));
    let r = homelab_flux(dir.path(), &["man"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.starts_with(".ie"),
        "{}",
        &r.stdout[..80.min(r.stdout.len())]
    );
    assert!(r.stdout.contains("homelab\\-flux"));
}

#[test]
fn a_missing_config_directory_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let r = homelab_flux(dir.path(), &["validate", "--offline"]);
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot load the configuration: `config/flux.yaml` not found (looked in `{}`); run `homelab-flux init` to write it, or pass `--config-dir` if the configuration is elsewhere\n",
            dir.path().join("config").display()
        )
    );
}

#[test]
fn an_unreadable_file_cannot_run() {
    let dir = config_dir("repo: https://github.com/o/r\n", None);
    // A directory where the file should be is unreadable for root too.
    std::fs::create_dir(dir.path().join("config/secrets-flux.yaml")).unwrap();
    let r = homelab_flux(dir.path(), &["validate", "--offline"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "error: cannot load the configuration: `config/secrets-flux.yaml` is a directory, not a regular file; configuration files are read only from regular files (or symlinks to them)\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let r = homelab_flux(dir.path(), &["validate", "--format", "xml"]);
    assert_eq!(r.code, 2);
    let r = homelab_flux(dir.path(), &["bootstrap", "--timeout", "soon"]);
    assert_eq!(r.code, 2);
    assert_has(&r, "`soon` is not a duration");
    let r = homelab_flux(dir.path(), &["validate", "--token", "ghp_abc"]);
    assert_eq!(r.code, 2, "a token is never accepted as an argument");
}

#[test]
fn the_config_dir_flag_is_honoured() {
    let dir = config_dir("repo: https://github.com/o/r\n", None);
    std::fs::rename(dir.path().join("config"), dir.path().join("elsewhere")).unwrap();
    let r = homelab_flux(
        dir.path(),
        &["validate", "--offline", "--config-dir", "elsewhere"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_has(&r, "`elsewhere/secrets-flux.yaml` not found");
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let dir = config_dir("repo: https://github.com/o/r\n", None);
    let mut cmd = command(dir.path());
    cmd.args(["completions", "zsh"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A realistic token run through every command and failure path at `-vv`: no 8-character piece
/// of it may appear in stdout or stderr.
#[test]
fn the_canary_token_never_appears() {
    let token = canary_token();
    let good_flux = "repo: https://github.com/username/manifests.git\nbranch: main\n";
    let scenarios: Vec<(&str, String, Option<String>)> = vec![
        ("valid", good_flux.into(), Some(format!("token: {token}\n"))),
        (
            "token with newline",
            good_flux.into(),
            Some(format!("token: |\n  {token}\n")),
        ),
        (
            "token with a space",
            good_flux.into(),
            Some(format!("token: \"{} {}\"\n", &token[..10], &token[10..])),
        ),
        (
            "token as a key",
            good_flux.into(),
            Some(format!("{token}: x\n")),
        ),
        (
            "token in a list",
            good_flux.into(),
            Some(format!("token: [{token}]\n")),
        ),
        (
            "token under another key",
            good_flux.into(),
            Some(format!("tokn: {token}\n")),
        ),
        (
            "token twice",
            good_flux.into(),
            Some(format!("token: {token}\ntoken: {token}\n")),
        ),
        (
            "broken yaml",
            good_flux.into(),
            Some(format!("token: \"{token}\n")),
        ),
        (
            "second document",
            good_flux.into(),
            Some(format!("token: {token}\n---\ntoken: {token}\n")),
        ),
        (
            "token in the repo url",
            format!("repo: https://x:{token}@github.com/username/manifests\n"),
            None,
        ),
        (
            "token as the branch",
            format!("repo: https://github.com/o/r\nbranch: \"{token} \"\n"),
            Some(format!("token: {token}\n")),
        ),
        (
            "repo on another host than the token's",
            "repo: https://githb.com/username/manifests.git\nbranch: main\n".into(),
            Some(format!("token: {token}\n")),
        ),
        (
            "token pasted as the host",
            good_flux.into(),
            Some(format!("token: {token}\nhost: {token}\n")),
        ),
        (
            "token behind a terminal escape",
            format!("repo: https://github.com/o/r\nbranch: \"\\e[2J{token}\"\n"),
            Some(format!("token: {token}\n")),
        ),
        (
            "installation token for auth token",
            format!("{good_flux}auth: token\n"),
            Some(format!("token: ghs_{}\n", &token[4..])),
        ),
    ];
    // Online paths run against a closed loopback port here; tests/it/validate_online.rs runs them
    // against the fake GitHub, each with the same leak check.
    let api = closed_api_url();
    for (name, flux, secrets) in &scenarios {
        let dir = config_dir(flux, secrets.as_deref());
        for args in CANARY_COMMANDS {
            let mut cmd = command(dir.path());
            cmd.args(*args).env("HOMELAB_FLUX_GITHUB_API_URL", &api);
            let r = run(cmd);
            assert_no_leak(
                &token,
                &r.transcript(),
                &format!("{name}: {}", args.join(" ")),
            );
            assert!(
                !r.stderr.contains("homelab-flux crashed"),
                "{name}: {args:?} panicked:\n{}",
                r.stderr
            );
        }
        let mut cmd = command(dir.path());
        cmd.args(["-vv", "validate", "--offline"])
            .env("HOMELAB_FLUX_TOKEN", &token);
        let r = run(cmd);
        assert_no_leak(&token, &r.transcript(), &format!("{name}: env token"));
    }
}

#[test]
fn the_readme_lists_every_diagnostic_code() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for code in homelab_flux::diag::Code::ALL {
        let row = format!("| {} | {} |", code.as_str(), code.name());
        assert!(readme.contains(&row), "README.md lacks the row `{row}`");
    }
}
