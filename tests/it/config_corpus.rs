//! The corpus of configurations: every invalid one with its exact diagnostics (insta snapshots),
//! every valid variant accepted, all through the real binary.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use support::cli::{assert_has, assert_no_leak, command, fixtures, run_with_limit, scratch_copy};

/// A hang guard for one `validate` run (milliseconds when idle).
const HANG_GUARD: Duration = Duration::from_secs(120);

fn cases(kind: &str) -> Vec<(String, PathBuf)> {
    let mut cases: Vec<(String, PathBuf)> = std::fs::read_dir(fixtures().join(kind))
        .expect("fixtures folder")
        .map(|e| e.expect("entry"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    cases.sort();
    cases
}

/// Every token-looking value in a fixture's secrets file, for the leak check.
fn fixture_tokens(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("config/secrets-flux.yaml")).unwrap_or_default();
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.len() >= 20)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_corpus_has_at_least_40_invalid_configurations() {
    assert!(
        cases("invalid").len() >= 40,
        "only {} invalid fixtures",
        cases("invalid").len()
    );
}

#[test]
fn every_invalid_configuration_gives_its_exact_diagnostics() {
    let mut failures = Vec::new();
    for (name, dir) in cases("invalid") {
        let scratch = scratch_copy(&dir);
        let mut cmd = command(scratch.path());
        cmd.args(["validate", "--offline"]);
        // The limit guards against hangs (alias bombs, huge files); speed is measured elsewhere.
        let run = run_with_limit(cmd, HANG_GUARD);
        if run.code != 1 {
            failures.push(format!(
                "{name}: exit {} instead of 1\n{}",
                run.code, run.stderr
            ));
        }
        for token in fixture_tokens(&dir) {
            assert_no_leak(&token, &run.transcript(), &name);
        }
        assert_snapshot!(format!("invalid__{name}"), run.transcript());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_valid_variant_passes() {
    for (name, dir) in cases("valid") {
        let scratch = scratch_copy(&dir);
        let mut cmd = command(scratch.path());
        cmd.args(["validate", "--offline"]);
        let run = run_with_limit(cmd, HANG_GUARD);
        assert_eq!(run.code, 0, "{name}:\n{}", run.stderr);
        assert!(!run.stderr.contains("error"), "{name}:\n{}", run.stderr);
        for token in fixture_tokens(&dir) {
            assert_no_leak(&token, &run.transcript(), &name);
        }
        assert_snapshot!(format!("valid__{name}"), run.transcript());
    }
}

#[test]
fn json_output_is_one_document_with_every_field() {
    let scratch = scratch_copy(&fixtures().join("invalid/many-errors-at-once"));
    let mut cmd = command(scratch.path());
    cmd.args(["validate", "--offline", "--format", "json"]);
    let run = run_with_limit(cmd, HANG_GUARD);
    assert_eq!(run.code, 1);
    let doc: serde_json::Value =
        serde_json::from_str(&run.stdout).expect("stdout is one JSON document");
    let first = &doc["diagnostics"][0];
    for field in [
        "severity", "code", "message", "file", "line", "column", "hint",
    ] {
        assert!(first.get(field).is_some(), "missing {field} in {first}");
    }
    assert_eq!(doc["summary"]["errors"], 5);
    assert_snapshot!("json__many-errors-at-once", run.stdout);
}

#[test]
fn strict_turns_warnings_into_errors() {
    let scratch = scratch_copy(&fixtures().join("valid/oauth-token-warning"));
    let mut cmd = command(scratch.path());
    cmd.args(["validate", "--offline"]);
    assert_eq!(run_with_limit(cmd, HANG_GUARD).code, 0);
    let mut cmd = command(scratch.path());
    cmd.args(["validate", "--offline", "--strict"]);
    let run = run_with_limit(cmd, HANG_GUARD);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_has(&run, "error[HF047]");
}
