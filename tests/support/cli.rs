//! Running the real `homelab-flux` binary in a scratch directory, and the canary-token check.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_homelab-flux"))
}

/// The fixtures folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A `homelab-flux` command run in `dir`, with an environment that does not leak from the
/// developer's shell (no token, no colours, no kubeconfig, no GitHub override).
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .env_remove("HOMELAB_FLUX_TOKEN")
        .env_remove("HOMELAB_FLUX_GITHUB_API_URL")
        .env_remove("KUBECONFIG")
        .env_remove("NO_COLOR")
        .env("HOME", dir)
        .stdin(Stdio::null());
    cmd
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The whole run as one text, for snapshots.
    pub fn transcript(&self) -> String {
        let mut s = format!("exit: {}\n", self.code);
        if !self.stdout.is_empty() {
            s.push_str("--- stdout\n");
            s.push_str(&self.stdout);
        }
        if !self.stderr.is_empty() {
            s.push_str("--- stderr\n");
            s.push_str(&self.stderr);
        }
        s
    }
}

/// Runs a command, killing it if it takes longer than `limit` (a hang guard, not a speed test).
pub fn run_with_limit(mut cmd: Command, limit: Duration) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start homelab-flux");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait failed").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("homelab-flux did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait failed");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs with a generous hang guard.
pub fn run(cmd: Command) -> Run {
    run_with_limit(cmd, Duration::from_secs(60))
}

/// Copies a fixture's `config/` into a fresh temporary directory outside any git work tree.
pub fn scratch_copy(fixture: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture.join("config"), &dir.path().join("config"));
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Fails if any 8-character piece of `token` appears in `text`.
pub fn assert_no_leak(token: &str, text: &str, context: &str) {
    let bytes = token.as_bytes();
    for window in bytes.windows(8) {
        let piece = std::str::from_utf8(window).expect("ascii token");
        assert!(
            !text.contains(piece),
            "{context}: a piece of the token ({} chars at a time) leaked into the output:\n{text}",
            window.len()
        );
    }
}

/// A realistic, random-looking classic token, different on every call.
pub fn canary_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(42)
        ^ u64::from(std::process::id()).rotate_left(32);
    let mut s = String::from("ghp_");
    for _ in 0..36 {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let r = seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
        s.push(ALPHABET[(r >> 33) as usize % ALPHABET.len()] as char);
    }
    s
}
