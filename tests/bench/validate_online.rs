//! Benchmark: online `validate` against the fake GitHub delaying every answer by 100 ms.
//! SPEC §7: under 250 ms in all, which needs the independent requests in flight together.
//! Run: `cargo bench --bench validate_online` (set `HOMELAB_FLUX_BIN=target/release/homelab-flux`
//! to time the release binary). See BENCHMARKS.md.

#[allow(dead_code, reason = "a benchmark uses a part of the tests' support")]
#[path = "../it/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::cli::command;
use support::fake_github::{FakeGitHub, RepoSpec, TokenSpec, fake_sha};

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
        std::fs::write(
            dir.path().join("config/flux.yaml"),
            format!("repo: https://github.com/username/manifests.git\n{extra}"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config/secrets-flux.yaml"),
            format!("token: {token}\n"),
        )
        .unwrap();
        let mut times = Vec::new();
        let mut requests = 0;
        for _ in 0..10 {
            gh.clear_log();
            let mut cmd = command(dir.path());
            if let Some(bin) = &bin {
                cmd = std::process::Command::new(bin);
                cmd.current_dir(dir.path()).env_remove("HOMELAB_FLUX_TOKEN");
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
        println!(
            "online validate ({label}, 100 ms per answer): {requests} requests, max in flight {}, min {:?}, median {:?}, max {:?}",
            gh.max_in_flight(),
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}
