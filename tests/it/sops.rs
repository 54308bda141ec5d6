//! `decryption: sops` offline, through the real binary: where the age identity comes from, and
//! whether the repository's `.sops.yaml` and encrypted files are for it.
//!
//! The fixtures in `tests/fixtures/sops` are real: the identities were made with `age-keygen`
//! (`pq-*`: `age-keygen -pq` of age v1.3.2, tests/env/age) and the files encrypted with the sops
//! CLI of tests/env (`sops --encrypt --age RECIPIENTS`), for the identity the folder is named
//! after (`mixed`: for both `cluster` and `pq-cluster`). The canary identities are made fresh
//! by `age-keygen` (and `age-keygen -pq`) on every run.

use crate::support;

use std::path::Path;

use git2::{IndexAddOption, Repository};
use support::cli::{
    CANARY_COMMANDS, Run, age_keygen, age_keygen_pq, assert_has, assert_no_identity_leak,
    assert_no_leak, canary_token, closed_api_url, command, fixtures, run,
};

const FLUX_SOPS: &str =
    "repo: https://github.com/username/manifests.git\nbranch: main\ndecryption: sops\n";
const TOKEN: &str = "ghp_R8vK2mQ9xLp4Tz7Wn3Bc6Hd1Jf5Gs0YaEuVi";

/// A fixture identity and its recipient, from the file `age-keygen` wrote.
fn fixture_key(name: &str) -> (String, String) {
    let text = std::fs::read_to_string(fixtures().join(format!("sops/keys/{name}.txt"))).unwrap();
    let identity = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (identity, recipient)
}

/// A git work tree with the config files, `.sops.yaml` for `rule_for` (if any) and the
/// encrypted fixtures of `encrypted_for` (if any) under `clusters/home`, all staged.
fn work_tree(
    flux: &str,
    secrets: &str,
    rule_for: Option<&str>,
    encrypted_for: Option<&str>,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let repo = Repository::init(root).unwrap();
    write(root, "config/flux.yaml", flux);
    write(root, "config/secrets-flux.yaml", secrets);
    chmod_600(&root.join("config/secrets-flux.yaml"));
    write(root, ".gitignore", "config/secrets-*.yaml\n");
    if let Some(recipient) = rule_for {
        write(
            root,
            ".sops.yaml",
            &format!(
                "creation_rules:\n  - path_regex: clusters/.*\\.(yaml|json|env)$\n    age: {recipient}\n"
            ),
        );
    }
    if let Some(who) = encrypted_for {
        for f in ["secret.enc.yaml", "secret.enc.json", "app.enc.env"] {
            let text = std::fs::read_to_string(fixtures().join(format!("sops/{who}/{f}"))).unwrap();
            write(root, &format!("clusters/home/{f}"), &text);
        }
    }
    let mut index = repo.index().unwrap();
    index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    dir
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn chmod_600(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn secrets_with(identity: &str) -> String {
    format!("token: {TOKEN}\nageKey: {identity}\n")
}

fn homelab_flux(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = command(dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let r = run(cmd);
    // Whatever the case, no fixture identity is ever printed.
    for key in FIXTURE_KEYS {
        assert_no_identity_leak(&fixture_key(key).0, &r.transcript(), &format!("{args:?}"));
    }
    r
}

/// Every identity of `tests/fixtures/sops/keys`.
const FIXTURE_KEYS: [&str; 4] = ["cluster", "other", "pq-cluster", "pq-other"];

fn validate(dir: &Path, env: &[(&str, &str)]) -> Run {
    homelab_flux(dir, &["validate", "--offline"], env)
}

#[test]
fn a_repository_encrypted_for_the_identity_is_valid() {
    let (identity, recipient) = fixture_key("cluster");
    let dir = work_tree(
        FLUX_SOPS,
        &secrets_with(&identity),
        Some(&recipient),
        Some("cluster"),
    );
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_snapshot!("encrypted_for_the_identity", r.transcript());
}

/// The most common SOPS mistake: the repository is encrypted for another key than the cluster's.
#[test]
fn a_repository_encrypted_for_another_identity_is_an_error_per_file() {
    let (identity, _) = fixture_key("cluster");
    let (_, other) = fixture_key("other");
    let dir = work_tree(
        FLUX_SOPS,
        &secrets_with(&identity),
        Some(&other),
        Some("other"),
    );
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_no_identity_leak(&identity, &r.transcript(), "wrong recipient");
    assert_snapshot!("encrypted_for_another_identity", r.transcript());
    // The same findings in JSON, one per file.
    let r = homelab_flux(
        dir.path(),
        &["validate", "--offline", "--format", "json"],
        &[],
    );
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut codes: Vec<(String, String)> = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["file"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            ("HF073", ".sops.yaml"),
            ("HF074", "clusters/home/app.enc.env"),
            ("HF074", "clusters/home/secret.enc.json"),
            ("HF074", "clusters/home/secret.enc.yaml"),
        ]
        .map(|(c, f)| (c.to_string(), f.to_string()))
    );
}

#[test]
fn a_creation_rule_for_another_identity_is_an_error_before_anything_is_encrypted() {
    let (identity, _) = fixture_key("cluster");
    let (_, other) = fixture_key("other");
    let dir = work_tree(FLUX_SOPS, &secrets_with(&identity), Some(&other), None);
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(&r, "error[HF073]");
    assert!(!r.stderr.contains("HF074"), "{}", r.stderr);
}

#[test]
fn a_malformed_age_key_is_an_error_that_never_shows_the_value() {
    let (identity, recipient) = fixture_key("cluster");
    let mut truncated = identity.clone();
    truncated.truncate(identity.len() - 5);
    for (name, value) in [
        ("truncated", truncated.as_str()),
        ("public-key", recipient.as_str()),
        ("not-a-key", "hunter2-hunter2"),
    ] {
        let dir = work_tree(FLUX_SOPS, &secrets_with(value), None, None);
        let r = validate(dir.path(), &[]);
        assert_eq!(r.code, 1, "{name}: {}", r.stderr);
        assert_no_identity_leak(&identity, &r.transcript(), name);
        assert!(!r.stderr.contains("hunter2"), "{name}: {}", r.stderr);
        assert_snapshot!(format!("malformed_age_key__{name}"), r.transcript());
    }
}

#[test]
fn no_identity_is_a_warning_in_validate_and_an_error_in_bootstrap() {
    let dir = work_tree(FLUX_SOPS, &format!("token: {TOKEN}\n"), None, None);
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_snapshot!("no_identity__validate", r.transcript());
    let r = homelab_flux(dir.path(), &["validate", "--offline", "--strict"], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    // Stopped with the configuration's findings, before GitHub or a cluster is asked.
    let r = homelab_flux(dir.path(), &["bootstrap"], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        "error[HF071]: `decryption: sops` is set, but no age identity was found",
    );
}

/// sops' own places: `SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, and `keys.txt` in the user config
/// directory, where several identities may be listed and the repository's is taken.
#[test]
fn the_identity_is_found_where_sops_reads_it() {
    let (cluster, recipient) = fixture_key("cluster");
    let (other, _) = fixture_key("other");
    let dir = work_tree(
        FLUX_SOPS,
        &format!("token: {TOKEN}\n"),
        Some(&recipient),
        Some("cluster"),
    );
    let root = dir.path();
    let keys = format!("# created: 2026-12-01\n# public key: ...\n{other}\n\n{cluster}\n");
    write(root, "home-keys/keys.txt", &keys);

    let both = format!("{other}\n{cluster}");
    let r = validate(root, &[("SOPS_AGE_KEY", &both)]);
    assert_eq!(r.code, 0, "SOPS_AGE_KEY: {}", r.stderr);

    let file = root.join("home-keys/keys.txt");
    let r = validate(root, &[("SOPS_AGE_KEY_FILE", file.to_str().unwrap())]);
    assert_eq!(r.code, 0, "SOPS_AGE_KEY_FILE: {}", r.stderr);

    // $HOME/.config (tests set HOME to the scratch dir), then $XDG_CONFIG_HOME.
    write(root, ".config/sops/age/keys.txt", &keys);
    let r = homelab_flux(root, &["-v", "validate", "--offline"], &[]);
    assert_eq!(r.code, 0, "keys.txt: {}", r.stderr);
    assert_has(&r, &format!("recipient `{recipient}` (of 2 found)"));
    std::fs::remove_file(root.join(".config/sops/age/keys.txt")).unwrap();
    let xdg = root.join("xdg");
    write(&xdg, "sops/age/keys.txt", &keys);
    let r = validate(root, &[("XDG_CONFIG_HOME", xdg.to_str().unwrap())]);
    assert_eq!(r.code, 0, "XDG_CONFIG_HOME: {}", r.stderr);

    // Only the other identity: the repository is not encrypted for it.
    let r = validate(root, &[("SOPS_AGE_KEY", &other)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(&r, "error[HF074]");
}

#[test]
fn a_broken_identity_file_is_an_error_naming_the_line() {
    let (cluster, _) = fixture_key("cluster");
    let dir = work_tree(FLUX_SOPS, &format!("token: {TOKEN}\n"), None, None);
    let root = dir.path();
    let mut broken = cluster.clone();
    broken.truncate(40);
    write(
        root,
        "keys.txt",
        &format!("# a comment\n{cluster}\n{broken}\n"),
    );
    let file = root.join("keys.txt");
    let r = validate(root, &[("SOPS_AGE_KEY_FILE", file.to_str().unwrap())]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(
        &r,
        &format!(
            "error[HF070]: line 3 of `{}` starts like an age identity but is not one",
            file.display()
        ),
    );
    assert_no_identity_leak(&cluster, &r.transcript(), "broken keys file");

    // A file far too large to be an identity file is refused, not read to its end.
    write(root, "huge.txt", &"#".repeat(100 * 1024));
    let huge = root.join("huge.txt");
    let r = validate(root, &[("SOPS_AGE_KEY_FILE", huge.to_str().unwrap())]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(&r, "an identity file is at most 64 KiB");

    let missing = root.join("nowhere.txt");
    let r = validate(root, &[("SOPS_AGE_KEY_FILE", missing.to_str().unwrap())]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_has(&r, "error[HF070]: `$SOPS_AGE_KEY_FILE` names");
}

#[test]
fn an_identity_in_a_tracked_file_is_an_error_naming_the_file() {
    let (identity, recipient) = fixture_key("cluster");
    let dir = work_tree(FLUX_SOPS, &secrets_with(&identity), Some(&recipient), None);
    let root = dir.path();
    write(
        root,
        "notes.md",
        &format!("my key: {}\n", identity.to_ascii_lowercase()),
    );
    let repo = Repository::open(root).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("notes.md")).unwrap();
    index.write().unwrap();
    let r = validate(root, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_no_identity_leak(&identity, &r.transcript(), "tracked identity");
    assert_snapshot!("identity_in_a_tracked_file", r.transcript());
}

#[test]
fn an_age_key_without_decryption_and_a_bad_decryption_value() {
    let (identity, _) = fixture_key("cluster");
    let flux = "repo: https://github.com/username/manifests.git\nbranch: main\n";
    let dir = work_tree(flux, &secrets_with(&identity), None, None);
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_snapshot!("age_key_without_decryption", r.transcript());

    let dir = work_tree(
        &format!("{flux}decryption: age\n"),
        &secrets_with(&identity),
        None,
        None,
    );
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_snapshot!("decryption_typo", r.transcript());

    // An identity pasted into the committed file is never echoed.
    let dir = work_tree(
        &format!("{flux}decryption: {identity}\n"),
        &format!("token: {TOKEN}\n"),
        None,
        None,
    );
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_no_identity_leak(&identity, &r.transcript(), "identity in flux.yaml");
    assert_snapshot!("decryption_holds_an_identity", r.transcript());
}

#[test]
fn export_prints_the_decryption_block() {
    let dir = work_tree(FLUX_SOPS, "", None, None);
    let r = homelab_flux(dir.path(), &["bootstrap", "--export"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_snapshot!("export_with_decryption", r.stdout);
}

/// `age1pq1…` as messages show it: its first 16 and last 8 characters.
fn shortened(recipient: &str) -> String {
    format!("{}…{}", &recipient[..16], &recipient[recipient.len() - 8..])
}

/// A post-quantum identity (`age-keygen -pq`) with a rule and files for it: as valid as an
/// X25519 one (until age v1.3 support this was `error[HF070]`).
#[test]
fn a_repository_encrypted_for_the_post_quantum_identity_is_valid() {
    let (identity, recipient) = fixture_key("pq-cluster");
    assert!(identity.starts_with("AGE-SECRET-KEY-PQ-1"));
    assert!(recipient.starts_with("age1pq1") && recipient.len() == 1959);
    let dir = work_tree(
        FLUX_SOPS,
        &secrets_with(&identity),
        Some(&recipient),
        Some("pq-cluster"),
    );
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_snapshot!("pq_encrypted_for_the_identity", r.transcript());
    // Lower case is the same identity.
    let dir = work_tree(
        FLUX_SOPS,
        &secrets_with(&identity.to_ascii_lowercase()),
        Some(&recipient),
        Some("pq-cluster"),
    );
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_repository_encrypted_for_another_post_quantum_identity_is_an_error_per_file() {
    let (identity, recipient) = fixture_key("pq-cluster");
    let (_, other) = fixture_key("pq-other");
    let dir = work_tree(
        FLUX_SOPS,
        &secrets_with(&identity),
        Some(&other),
        Some("pq-other"),
    );
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "error[HF074]: `clusters/home/secret.enc.yaml` is encrypted with SOPS for other age recipients than `{}`; the cluster could not decrypt it",
            shortened(&recipient)
        )),
        "{}",
        r.stderr
    );
    // The whole recipient is too long for a message: the hint says where to get it.
    assert!(!r.stderr.contains(&recipient), "{}", r.stderr);
    assert_snapshot!("pq_encrypted_for_another_identity", r.transcript());
    let r = homelab_flux(
        dir.path(),
        &["validate", "--offline", "--format", "json"],
        &[],
    );
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut found: Vec<(String, String)> = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["file"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("HF073", ".sops.yaml"),
            ("HF074", "clusters/home/app.enc.env"),
            ("HF074", "clusters/home/secret.enc.json"),
            ("HF074", "clusters/home/secret.enc.yaml"),
        ]
        .map(|(c, f)| (c.to_string(), f.to_string()))
    );
}

/// A rule and files for an X25519 and a post-quantum recipient at once (sops encrypts the data
/// key for each): either identity can decrypt them. Files encrypted for the X25519 one alone
/// are not for the post-quantum identity, whatever the rule says.
#[test]
fn rules_and_files_may_mix_both_kinds_of_recipient() {
    let (x25519, x25519_recipient) = fixture_key("cluster");
    let (pq, pq_recipient) = fixture_key("pq-cluster");
    let both = format!("{x25519_recipient},{pq_recipient}");
    for identity in [&x25519, &pq] {
        let dir = work_tree(
            FLUX_SOPS,
            &secrets_with(identity),
            Some(&both),
            Some("mixed"),
        );
        let r = validate(dir.path(), &[]);
        assert_eq!(r.code, 0, "{}", r.transcript());
    }
    let dir = work_tree(FLUX_SOPS, &secrets_with(&pq), Some(&both), Some("cluster"));
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stderr.matches("error[HF074]").count(), 3, "{}", r.stderr);
    assert!(!r.stderr.contains("HF073"), "{}", r.stderr);
    // And the other way round: the X25519 identity with files for the post-quantum one alone.
    let dir = work_tree(
        FLUX_SOPS,
        &secrets_with(&x25519),
        Some(&both),
        Some("pq-cluster"),
    );
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stderr.matches("error[HF074]").count(), 3, "{}", r.stderr);
}

/// sops' places holding both kinds, the X25519 identity first: the repository is encrypted for
/// the post-quantum one, so that one is the cluster's. A plugin identity among them is skipped
/// with a note naming the plugin, and the others still count.
#[test]
fn the_post_quantum_identity_is_chosen_among_several() {
    let (x25519, _) = fixture_key("cluster");
    let (pq, recipient) = fixture_key("pq-cluster");
    let (pq_other, _) = fixture_key("pq-other");
    let plugin = "AGE-PLUGIN-YUBIKEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZSN8KHV";
    let dir = work_tree(
        FLUX_SOPS,
        &format!("token: {TOKEN}\n"),
        Some(&recipient),
        Some("pq-cluster"),
    );
    let root = dir.path();
    let keys = format!(
        "# created: 2026-12-04T18:00:00Z\n# public key: ...\n{x25519}\n{pq_other}\n{plugin}\n\n{pq}\n"
    );
    let chosen = format!("recipient `{}` (of 3 found)", shortened(&recipient));

    write(root, ".config/sops/age/keys.txt", &keys);
    let r = homelab_flux(root, &["-v", "validate", "--offline"], &[]);
    assert_eq!(r.code, 0, "keys.txt: {}", r.stderr);
    assert!(r.stderr.contains(&chosen), "{}", r.stderr);
    let file = root.join(".config/sops/age/keys.txt");
    assert!(
        r.stderr.contains(&format!(
            "note[HF077]: line 5 of `{}` is an identity of the age plugin `age-plugin-yubikey`, skipped",
            file.display()
        )),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(&plugin[20..40]), "{}", r.stderr);
    std::fs::remove_file(&file).unwrap();

    write(root, "keys/keys.txt", &keys);
    let file = root.join("keys/keys.txt");
    let r = homelab_flux(
        root,
        &["-v", "validate", "--offline"],
        &[("SOPS_AGE_KEY_FILE", file.to_str().unwrap())],
    );
    assert_eq!(r.code, 0, "SOPS_AGE_KEY_FILE: {}", r.stderr);
    assert!(r.stderr.contains(&chosen), "{}", r.stderr);

    // Several on one line, or one a line, as sops reads `SOPS_AGE_KEY`.
    for value in [
        format!("{x25519} {pq_other} {plugin} {pq}"),
        format!("{x25519}\n{pq_other}\n{plugin}\n{pq}\n"),
    ] {
        let r = homelab_flux(
            root,
            &["-v", "validate", "--offline"],
            &[("SOPS_AGE_KEY", &value)],
        );
        assert_eq!(r.code, 0, "SOPS_AGE_KEY: {}", r.stderr);
        assert!(r.stderr.contains(&chosen), "{}", r.stderr);
        assert!(
            r.stderr.contains("note[HF077]: entry 3 of `$SOPS_AGE_KEY` is an identity of the age plugin `age-plugin-yubikey`"),
            "{}",
            r.stderr
        );
    }

    // Without it, the repository is for none of them: an error per file.
    let r = validate(root, &[("SOPS_AGE_KEY", &format!("{x25519}\n{pq_other}"))]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("error[HF074]"), "{}", r.stderr);
}

/// One character of a post-quantum identity mistyped, or the line cut short: a clear error
/// wherever it was read, never the value.
#[test]
fn a_mistyped_post_quantum_identity_is_an_error_that_never_shows_the_value() {
    let (identity, recipient) = fixture_key("pq-cluster");
    let mut mistyped: Vec<char> = identity.chars().collect();
    mistyped[40] = if mistyped[40] == 'Q' { 'P' } else { 'Q' };
    let mistyped: String = mistyped.into_iter().collect();
    let mut truncated = identity.clone();
    truncated.truncate(identity.len() - 5);

    let dir = work_tree(
        FLUX_SOPS,
        &secrets_with(&mistyped),
        Some(&recipient),
        Some("pq-cluster"),
    );
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_no_identity_leak(&identity, &r.transcript(), "mistyped ageKey");
    assert_snapshot!("pq_mistyped_age_key", r.transcript());

    let dir = work_tree(
        FLUX_SOPS,
        &format!("token: {TOKEN}\n"),
        Some(&recipient),
        None,
    );
    let root = dir.path();
    write(root, "keys.txt", &format!("# a comment\n{truncated}\n"));
    let file = root.join("keys.txt");
    let r = validate(root, &[("SOPS_AGE_KEY_FILE", file.to_str().unwrap())]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "error[HF070]: line 2 of `{}` starts like an age identity but is not one (a character is missing or mistyped)",
            file.display()
        )),
        "{}",
        r.stderr
    );
    assert_no_identity_leak(&identity, &r.transcript(), "truncated in keys.txt");

    let r = validate(root, &[("SOPS_AGE_KEY", &mistyped)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "error[HF070]: entry 1 of `$SOPS_AGE_KEY` starts like an age identity but is not one"
        ),
        "{}",
        r.stderr
    );
    assert_no_identity_leak(&identity, &r.transcript(), "mistyped in SOPS_AGE_KEY");

    // Its recipient pasted instead of the identity.
    let dir = work_tree(FLUX_SOPS, &secrets_with(&recipient), None, None);
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("error[HF070]: `ageKey` is an age recipient (the public key)"),
        "{}",
        r.stderr
    );
}

/// A post-quantum identity committed to a tracked file, in either case, or pasted into
/// `flux.yaml`: an error naming the file, the value masked.
#[test]
fn a_post_quantum_identity_in_a_tracked_file_is_an_error_naming_the_file() {
    let (identity, recipient) = fixture_key("pq-cluster");
    let dir = work_tree(FLUX_SOPS, &secrets_with(&identity), Some(&recipient), None);
    let root = dir.path();
    write(root, "notes.md", &format!("my key: {identity}\n"));
    write(
        root,
        "docs/setup.md",
        &format!("export SOPS_AGE_KEY={}\n", identity.to_ascii_lowercase()),
    );
    let repo = Repository::open(root).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("notes.md")).unwrap();
    index.add_path(Path::new("docs/setup.md")).unwrap();
    index.write().unwrap();
    let r = validate(root, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_no_identity_leak(&identity, &r.transcript(), "tracked identity");
    assert_snapshot!("pq_identity_in_a_tracked_file", r.transcript());

    // Found the same when the identity comes from sops' places rather than `ageKey`.
    let dir = work_tree(
        FLUX_SOPS,
        &format!("token: {TOKEN}\n"),
        Some(&recipient),
        None,
    );
    let root = dir.path();
    write(root, "notes.md", &format!("my key: {identity}\n"));
    let repo = Repository::open(root).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("notes.md")).unwrap();
    index.write().unwrap();
    let r = validate(root, &[("SOPS_AGE_KEY", &identity)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("error[HF075]: an age identity is in `notes.md`, a file git tracks"),
        "{}",
        r.stderr
    );
    assert_no_identity_leak(&identity, &r.transcript(), "tracked identity, SOPS_AGE_KEY");

    let flux = "repo: https://github.com/username/manifests.git\nbranch: main\n";
    let dir = work_tree(
        &format!("{flux}decryption: {identity}\n"),
        &format!("token: {TOKEN}\n"),
        None,
        None,
    );
    let r = validate(dir.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "error[HF039]: `decryption` holds an age identity, a secret, in a committed file"
        ),
        "{}",
        r.stderr
    );
    assert_no_identity_leak(&identity, &r.transcript(), "identity in flux.yaml");
}

/// A fresh identity run through every command and failure path at `-vv`: no piece of it may
/// appear in stdout or stderr, wherever it was put, in plain or in base64.
#[test]
fn the_canary_identity_never_appears() {
    let (identity, recipient) = age_keygen();
    let (_, other) = age_keygen();
    canary(&identity, &recipient, &other);
}

/// The same with a fresh post-quantum identity, the other recipient being an X25519 one.
#[test]
fn the_canary_post_quantum_identity_never_appears() {
    let (identity, recipient) = age_keygen_pq();
    let (_, other) = age_keygen();
    canary(&identity, &recipient, &other);
}

fn canary(identity: &str, recipient: &str, other: &str) {
    let identity = identity.to_string();
    let token = canary_token();
    let secrets = format!("token: {token}\nageKey: {identity}\n");
    let mut truncated = identity.clone();
    truncated.truncate(50);
    let plain_flux = "repo: https://github.com/username/manifests.git\nbranch: main\n";
    // (name, flux.yaml, secrets file, .sops.yaml recipient, environment)
    type Scenario<'a> = (
        &'a str,
        String,
        String,
        Option<&'a str>,
        Vec<(&'a str, String)>,
    );
    let scenarios: Vec<Scenario> = vec![
        (
            "valid",
            FLUX_SOPS.into(),
            secrets.clone(),
            Some(recipient),
            vec![],
        ),
        (
            "other recipient",
            FLUX_SOPS.into(),
            secrets.clone(),
            Some(other),
            vec![],
        ),
        (
            "truncated",
            FLUX_SOPS.into(),
            format!("token: {token}\nageKey: {truncated}\n"),
            None,
            vec![],
        ),
        (
            "lower case",
            FLUX_SOPS.into(),
            format!(
                "token: {token}\nageKey: {}\n",
                identity.to_ascii_lowercase()
            ),
            None,
            vec![],
        ),
        (
            "as a list",
            FLUX_SOPS.into(),
            format!("token: {token}\nageKey: [{identity}]\n"),
            None,
            vec![],
        ),
        (
            "as a key",
            FLUX_SOPS.into(),
            format!("token: {token}\n{identity}: x\n"),
            None,
            vec![],
        ),
        (
            "under another key",
            FLUX_SOPS.into(),
            format!("token: {token}\nagekey: {identity}\n"),
            None,
            vec![],
        ),
        (
            "as the token",
            FLUX_SOPS.into(),
            format!("token: {identity}\n"),
            None,
            vec![],
        ),
        (
            "broken yaml",
            FLUX_SOPS.into(),
            format!("token: {token}\nageKey: \"{identity}\n"),
            None,
            vec![],
        ),
        (
            "in flux.yaml",
            format!("{plain_flux}decryption: {identity}\n"),
            format!("token: {token}\n"),
            None,
            vec![],
        ),
        (
            "as the branch",
            format!("repo: https://github.com/o/r\nbranch: \"{identity} \"\ndecryption: sops\n"),
            secrets.clone(),
            None,
            vec![],
        ),
        (
            "without decryption",
            plain_flux.into(),
            secrets.clone(),
            None,
            vec![],
        ),
        (
            "SOPS_AGE_KEY",
            FLUX_SOPS.into(),
            format!("token: {token}\n"),
            Some(recipient),
            vec![("SOPS_AGE_KEY", identity.clone())],
        ),
        (
            "SOPS_AGE_KEY broken",
            FLUX_SOPS.into(),
            format!("token: {token}\n"),
            None,
            vec![("SOPS_AGE_KEY", format!("{identity} {truncated}"))],
        ),
        (
            "token from the environment",
            FLUX_SOPS.into(),
            String::new(),
            Some(other),
            vec![
                ("HOMELAB_FLUX_TOKEN", token.clone()),
                ("SOPS_AGE_KEY", identity.clone()),
            ],
        ),
    ];
    let api = closed_api_url();
    for (name, flux, secrets, rule, env) in &scenarios {
        let dir = work_tree(flux, secrets, *rule, None);
        // The identity also sits in a tracked file, for the hygiene finding's path.
        write(dir.path(), "leak.txt", &identity);
        let repo = Repository::open(dir.path()).unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("leak.txt")).unwrap();
        index.write().unwrap();
        for args in CANARY_COMMANDS {
            let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            env.push(("HOMELAB_FLUX_GITHUB_API_URL", &api));
            let r = homelab_flux(dir.path(), args, &env);
            let context = format!("{name}: {}", args.join(" "));
            assert_no_identity_leak(&identity, &r.transcript(), &context);
            assert_no_leak(&token, &r.transcript(), &context);
            assert!(
                !r.stderr.contains("homelab-flux crashed"),
                "{context} panicked:\n{}",
                r.stderr
            );
        }
    }
}
