//! The post-quantum recipient homelab-flux derives (`src/age_pq.rs`) against the real tool:
//! fresh identities from `age-keygen -pq` of age v1.3.2 (built by tests/env/setup), their
//! recipients from the same tool's `-y`, and homelab-flux's derivation of each. The fixed vectors
//! in `tests/fixtures/age-pq` are checked by the unit tests; these are new on every run.

use crate::support;

use std::io::Write;
use std::process::{Command, Stdio};

use homelab_flux::age_pq;
use secrecy::ExposeSecret;
use support::cli::{age_keygen_pq, testenv_bin};

/// How many fresh identities a run checks.
const KEYS: usize = 200;

#[test]
fn fresh_identities_give_the_recipients_age_keygen_prints() {
    let keys: Vec<(String, String)> = (0..KEYS).map(|_| age_keygen_pq()).collect();

    // `age-keygen -y` reads them all as one identity file and prints one recipient per line.
    let identities: String = keys.iter().map(|(id, _)| format!("{id}\n")).collect();
    let mut child = Command::new(testenv_bin("age-keygen"))
        .arg("-y")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("target/testenv/bin/age-keygen is missing: run tests/env/setup");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(identities.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "age-keygen -y: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let converted: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(converted.len(), KEYS);

    let mut recipients = std::collections::HashSet::new();
    for ((identity, written), from_y) in keys.iter().zip(&converted) {
        // The tool agrees with itself: `# public key:` at generation and `-y` later.
        assert_eq!(written, from_y);
        let ours = age_pq::parse_identity(identity).expect("a valid identity");
        assert_eq!(
            &ours.recipient, from_y,
            "the derivation differs for a fresh key"
        );
        assert_eq!(ours.canonical.expose_secret(), identity);
        // A recipient the tool printed is one homelab-flux reads.
        assert_eq!(
            age_pq::parse_recipient(from_y).map(|k| k.len()),
            Some(age_pq::PUBLIC_KEY_SIZE)
        );
        recipients.insert(from_y.clone());
    }
    // Every key was a new one (the tool did not hand out one key again and again).
    assert_eq!(recipients.len(), KEYS);
}

#[test]
fn the_tool_is_the_one_with_post_quantum_keys() {
    let out = Command::new(testenv_bin("age-keygen"))
        .arg("--version")
        .output()
        .expect("target/testenv/bin/age-keygen is missing: run tests/env/setup");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1.3.2");
}
