//! Benchmark: online `validate` against the fake GitHub delaying every answer by 100 ms.
//! SPEC §7: under 250 ms in all, which needs the independent requests in flight together.
//! With `auth: github-app` (issue 20): the rounds of requests (the JWT's look-ups, the
//! installation token, the repository reads), counted from when each request arrived.
//! Run: `cargo bench --bench validate_online` (set `HOMELAB_FLUX_BIN=target/release/homelab-flux`
//! to time the release binary). See BENCHMARKS.md.

#[allow(dead_code, reason = "a benchmark uses a part of the tests' support")]
#[path = "../it/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::cli::command;
use support::fake_github::{AppSpec, FakeGitHub, InstallationSpec, RepoSpec, TokenSpec, fake_sha};

fn main() {
    let bin = std::env::var("HOMELAB_FLUX_BIN").ok();
    let gh = FakeGitHub::start();
    let token = "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G3fE2dC1";
    let token = &token[..93];
    gh.add_token(token, TokenSpec::fine_grained("username"));
    gh.add_repo(RepoSpec::new("username", "manifests").branch("main", &fake_sha("main")));
    gh.set_delay(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    for (extra, label) in [("branch: main\n", "branch set"), ("", "default branch")] {
        let (times, requests) = time_runs(
            &gh,
            dir.path(),
            bin.as_deref(),
            extra,
            &format!("token: {token}\n"),
        );
        report(
            &format!("online validate ({label}, 100 ms per answer)"),
            &gh,
            &times,
            requests,
        );
    }
    // `auth: github-app`: the App installed on the repository, its key in `app.pem`.
    let app = gh.add_app(AppSpec::new(123456, "homelab-flux-bench"));
    gh.install_app(
        123456,
        InstallationSpec::new("username", "manifests").id(987654),
    );
    write_private(&dir.path().join("config/app.pem"), &app.private_key_pem());
    for (secrets, label) in [
        ("", "installation looked up"),
        ("  installationId: 987654\n", "installationId set"),
    ] {
        let secrets = format!("githubApp:\n  id: 123456\n  privateKeyFile: app.pem\n{secrets}");
        let (times, requests) = time_runs(
            &gh,
            dir.path(),
            bin.as_deref(),
            "branch: main\nauth: github-app\n",
            &secrets,
        );
        report(
            &format!("online validate, github-app ({label}, 100 ms per answer)"),
            &gh,
            &times,
            requests,
        );
        println!("  rounds: {}", rounds(&gh, Duration::from_millis(100)));
    }
}

fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn report(label: &str, gh: &FakeGitHub, times: &[Duration], requests: usize) {
    println!(
        "{label}: {requests} requests, max in flight {}, min {:?}, median {:?}, max {:?}",
        gh.max_in_flight(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// The requests of the last run, grouped into rounds: a request that arrives before an answer
/// of the round could have come back (`delay`) is in that round.
fn rounds(gh: &FakeGitHub, delay: Duration) -> String {
    let mut requests = gh.requests();
    requests.sort_by_key(|q| q.at);
    let mut rounds: Vec<(Instant, Vec<String>)> = Vec::new();
    for q in requests {
        let name = format!("{} {}", q.method, q.path);
        match rounds.last_mut() {
            Some((start, names)) if q.at.duration_since(*start) < delay / 2 => names.push(name),
            _ => rounds.push((q.at, vec![name])),
        }
    }
    format!(
        "{} — {}",
        rounds.len(),
        rounds
            .iter()
            .map(|(_, names)| names.join(" + "))
            .collect::<Vec<_>>()
            .join(" | ")
    )
}

fn time_runs(
    gh: &FakeGitHub,
    dir: &std::path::Path,
    bin: Option<&str>,
    extra: &str,
    secrets: &str,
) -> (Vec<Duration>, usize) {
    {
        std::fs::write(
            dir.join("config/flux.yaml"),
            format!("repo: https://github.com/username/manifests.git\n{extra}"),
        )
        .unwrap();
        write_private(&dir.join("config/secrets-flux.yaml"), secrets);
        let mut times = Vec::new();
        let mut requests = 0;
        for _ in 0..10 {
            gh.clear_log();
            let mut cmd = command(dir);
            if let Some(bin) = bin {
                cmd = std::process::Command::new(bin);
                cmd.current_dir(dir).env_remove("HOMELAB_FLUX_TOKEN");
            }
            cmd.arg("validate")
                .env("HOMELAB_FLUX_GITHUB_API_URL", gh.url());
            let start = Instant::now();
            let out = cmd.output().unwrap();
            times.push(start.elapsed());
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            requests = gh.requests().len();
        }
        times.sort();
        (times, requests)
    }
}
