//! Running the real `homelab-flux` binary in a scratch directory, and the canary-token check.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
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
/// developer's shell (no token, no colours, no kubeconfig, no GitHub override, no age identity).
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .env_remove("HOMELAB_FLUX_TOKEN")
        .env_remove("HOMELAB_FLUX_GITHUB_API_URL")
        .env_remove("KUBECONFIG")
        .env_remove("NO_COLOR")
        // Where sops (and so homelab-flux) looks for an age identity besides `ageKey`.
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("XDG_CONFIG_HOME")
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
/// Its output is read while it runs, so a chatty run never blocks on a full pipe.
pub fn run_with_limit(cmd: Command, limit: Duration) -> Run {
    Spawned::start(cmd).finish(limit)
}

/// A running `homelab-flux` whose output is collected as it is printed, so that a test can act
/// at a point the run itself announces (a step line on stderr) rather than at a guessed moment.
pub struct Spawned {
    child: std::process::Child,
    output: Arc<(Mutex<Collected>, Condvar)>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Collected {
    stdout: String,
    stderr: String,
    /// Both pipes reached end of file (the process exited, or closed them).
    closed: usize,
}

impl Spawned {
    pub fn start(mut cmd: Command) -> Spawned {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start homelab-flux");
        let output = Arc::new((Mutex::new(Collected::default()), Condvar::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let readers = vec![
            collect(stdout, output.clone(), |c| &mut c.stdout),
            collect(stderr, output.clone(), |c| &mut c.stderr),
        ];
        Spawned {
            child,
            output,
            readers,
        }
    }

    /// The process id, to send it a signal.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Blocks until stderr holds `needle` (true), or the run closed its output without printing
    /// it (false). `limit` is a hang guard: past it the test fails with what was printed.
    pub fn wait_for_stderr(&self, needle: &str, limit: Duration) -> bool {
        let (lock, changed) = &*self.output;
        let deadline = Instant::now() + limit;
        let mut collected = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if collected.stderr.contains(needle) {
                return true;
            }
            if collected.closed == 2 {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "homelab-flux printed no `{needle}` within {limit:?}; stderr so far:\n{}",
                collected.stderr
            );
            collected = changed
                .wait_timeout(collected, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the exit (killing the run past `limit`, a hang guard) and returns the run.
    pub fn finish(mut self, limit: Duration) -> Run {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait failed") {
                break status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("homelab-flux did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
        let collected =
            std::mem::take(&mut *self.output.0.lock().unwrap_or_else(|e| e.into_inner()));
        Run {
            code: status.code().unwrap_or(-1),
            stdout: collected.stdout,
            stderr: collected.stderr,
        }
    }
}

/// Copies a pipe into the collected output as it arrives, waking waiters on every chunk.
fn collect(
    mut pipe: impl Read + Send + 'static,
    output: Arc<(Mutex<Collected>, Condvar)>,
    field: fn(&mut Collected) -> &mut String,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        let mut pending = Vec::new();
        loop {
            let n = pipe.read(&mut buffer).unwrap_or(0);
            let (lock, changed) = &*output;
            let mut collected = lock.lock().unwrap_or_else(|e| e.into_inner());
            if n == 0 {
                field(&mut collected).push_str(&String::from_utf8_lossy(&pending));
                collected.closed += 1;
                changed.notify_all();
                return;
            }
            pending.extend_from_slice(&buffer[..n]);
            // Only whole UTF-8 sequences are appended; a split one waits for its rest.
            let valid = match std::str::from_utf8(&pending) {
                Ok(_) => pending.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => pending.len(),
            };
            let text: Vec<u8> = pending.drain(..valid).collect();
            field(&mut collected).push_str(&String::from_utf8_lossy(&text));
            changed.notify_all();
        }
    })
}

/// Runs with a generous hang guard.
pub fn run(cmd: Command) -> Run {
    run_with_limit(cmd, Duration::from_secs(60))
}

/// Writes a secrets file as `init` does and a careful user keeps it: mode 600 (a file readable by
/// others is a warning of its own, HF062).
pub fn write_secrets(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the secrets file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

/// Copies a fixture's `config/` into a fresh temporary directory outside any git work tree. The
/// secrets file gets mode 600, as `init` writes it: the fixtures are about the files' content
/// (git does not keep a mode stricter than 644).
pub fn scratch_copy(fixture: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture.join("config"), &dir.path().join("config"));
    let secrets = dir.path().join("config/secrets-flux.yaml");
    #[cfg(unix)]
    if secrets.is_file() {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // git keeps no modes but 644 and 755: a GitHub App's key file gets 600 as a user
        // keeps it, except the one a case names for being readable by others.
        private_pem_files(&dir.path().join("config"));
    }
    dir
}

#[cfg(unix)]
fn private_pem_files(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    for entry in std::fs::read_dir(dir).expect("read scratch").flatten() {
        let path = entry.path();
        if path.is_dir() {
            private_pem_files(&path);
        } else if path.extension().is_some_and(|e| e == "pem")
            && !path.to_string_lossy().contains("readable-by-others")
        {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
    }
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

/// A fresh age identity and its recipient, made by `age-keygen` (Debian's `age`, installed by
/// tests/env/setup): the canary identity that must never appear in any output.
pub fn age_keygen() -> (String, String) {
    let out = Command::new("age-keygen")
        .output()
        .expect("`age-keygen` is missing: run tests/env/setup (it installs Debian's `age`)");
    assert!(out.status.success(), "age-keygen failed");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let identity = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .expect("an identity line")
        .to_string();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("a public key line")
        .to_string();
    (identity, recipient)
}

/// A fresh post-quantum age identity (`AGE-SECRET-KEY-PQ-1…`) and its recipient (`age1pq1…`),
/// made by `age-keygen -pq` of age v1.3.2, which tests/env/setup builds (Debian's has no `-pq`).
pub fn age_keygen_pq() -> (String, String) {
    let out = Command::new(testenv_bin("age-keygen"))
        .arg("-pq")
        .output()
        .expect("target/testenv/bin/age-keygen is missing: run tests/env/setup");
    assert!(out.status.success(), "age-keygen -pq failed");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let identity = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-PQ-1"))
        .expect("an identity line")
        .to_string();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("a public key line")
        .to_string();
    (identity, recipient)
}

/// A binary that tests/env/setup built into `target/testenv/bin`.
pub fn testenv_bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/testenv/bin")
        .join(name)
}

/// Fails if any 8-character piece of the identity's key material (after the
/// `AGE-SECRET-KEY-1` or `AGE-SECRET-KEY-PQ-1` every identity of its kind shares, and which
/// hints name) appears in `text`, in either case, or in base64 (as a Secret's `data` holds it).
pub fn assert_no_identity_leak(identity: &str, text: &str, context: &str) {
    use base64::Engine as _;
    let prefix = if identity.starts_with("AGE-SECRET-KEY-PQ-1") {
        "AGE-SECRET-KEY-PQ-1"
    } else {
        "AGE-SECRET-KEY-1"
    };
    let key = &identity[prefix.len()..];
    assert_no_leak(key, text, context);
    assert_no_leak(&key.to_ascii_lowercase(), text, context);
    // The first 18 bytes (`AGE-SECRET-KEY-PQ-`, `AGE-SECRET-KEY-1` and two key characters) are
    // the first 24 base64 characters; what follows depends on the key alone.
    let encoded = base64::engine::general_purpose::STANDARD.encode(identity);
    assert_no_leak(&encoded[24..], text, &format!("{context} (base64)"));
}

/// The run's stdout as `--format json` writes steps: one complete JSON document a line.
pub fn json_lines(r: &Run) -> Vec<serde_json::Value> {
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", r.transcript())))
        .collect()
}

/// Fails, showing the whole run, unless stderr holds `what`.
pub fn assert_has(r: &Run, what: &str) {
    assert!(
        r.stderr.contains(what),
        "missing `{what}` in:\n{}",
        r.transcript()
    );
}

/// Every command and mode the canary checks run, at the highest verbosity.
pub const CANARY_COMMANDS: &[&[&str]] = &[
    &["-vv", "validate", "--offline"],
    &["-vv", "validate", "--offline", "--format", "json"],
    &["-vv", "validate", "--offline", "--strict"],
    &["-vv", "validate"],
    &["-vv", "bootstrap", "--export"],
    &["-vv", "bootstrap"],
    &["-vv", "bootstrap", "--dry-run"],
    &["-vv", "status"],
];

/// `http://127.0.0.1:PORT` on a port nothing listens on: the online paths of the canary checks
/// end "unreachable" there.
pub fn closed_api_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}
