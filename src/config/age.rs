//! Finding the age identity for `decryption: sops`: `ageKey` in the secrets file, else the
//! places sops itself reads (`SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, and `sops/age/keys.txt` in the
//! user config directory), so that a machine set up for sops needs nothing more.
//!
//! Every identity found is returned; which one the cluster gets is decided against what the
//! repository is encrypted for ([`crate::sops::choose`]). No message names an identity.

use std::path::Path;

use super::{Decryption, Env, LoadError, Secrets, read};
use crate::diag::{Code, Diagnostic, Position, Report, Severity};
use crate::sops::{self, AgeIdentity, IdentityError};

/// Identities themselves, one or more (as sops reads it).
pub const KEY_ENV: &str = "SOPS_AGE_KEY";
/// A file of identities (as sops reads it).
pub const KEY_FILE_ENV: &str = "SOPS_AGE_KEY_FILE";
/// sops' identity file inside the user config directory.
pub const USER_KEYS_FILE: &str = "sops/age/keys.txt";

/// The hint for a value that is not an identity.
pub const IDENTITY_HINT: &str = "paste the `AGE-SECRET-KEY-1...` or `AGE-SECRET-KEY-PQ-1...` line of the file `age-keygen` wrote (not the `age1...` public key)";

/// The identities for `decryption: sops`, pushing findings for every malformed one and for
/// none at all. `age_key` is the secrets file's `ageKey` (already checked) and where it stands;
/// `decryption` is `Err` when its value was invalid (reported already).
pub(super) fn find(
    age_key: Option<(AgeIdentity, Position)>,
    decryption: Result<Option<Decryption>, ()>,
    secrets: Secrets,
    secrets_path: &Path,
    env: &Env,
    report: &mut Report,
) -> Result<Vec<AgeIdentity>, LoadError> {
    if secrets == Secrets::TokenOnly {
        return Ok(Vec::new());
    }
    let shown_secrets = secrets_path.display().to_string();
    if let Some((identity, pos)) = age_key {
        if decryption == Ok(None) {
            report.push(
                Diagnostic::warning(
                    Code::AgeKeyUnused,
                    "`ageKey` is set, but `flux.yaml` has no `decryption: sops`, so the cluster does not get it",
                )
                .at(&shown_secrets, pos)
                .with_hint("add `decryption: sops` to `flux.yaml`, or remove `ageKey`"),
            );
        }
        return Ok(vec![identity]);
    }
    if decryption != Ok(Some(Decryption::Sops)) || secrets == Secrets::Ignored {
        return Ok(Vec::new());
    }

    let mut found: Vec<AgeIdentity> = Vec::new();
    if let Some(value) = &env.sops_age_key {
        // sops reads several identities here, also several on one line.
        for (i, entry) in value.split_whitespace().enumerate() {
            match AgeIdentity::parse(entry) {
                Ok(id) => found.push(id),
                Err(IdentityError::Plugin(name)) => {
                    report.push(plugin_skipped(
                        format!("entry {} of `${KEY_ENV}`", i + 1),
                        name.as_deref(),
                        format!("${KEY_ENV}"),
                        None,
                    ));
                }
                Err(e) => report.push(
                    Diagnostic::error(
                        Code::AgeKeyInvalid,
                        format!("entry {} of `${KEY_ENV}` {e}", i + 1),
                    )
                    .in_file(format!("${KEY_ENV}"))
                    .with_hint(IDENTITY_HINT),
                ),
            }
        }
    }
    if let Some(path) = &env.sops_age_key_file
        && !from_file(path, &mut found, report)?
    {
        report.push(
            Diagnostic::error(
                Code::AgeKeyInvalid,
                format!(
                    "`${KEY_FILE_ENV}` names `{}`, which does not exist",
                    path.display()
                ),
            )
            .in_file(format!("${KEY_FILE_ENV}"))
            .with_hint(format!(
                "point `{KEY_FILE_ENV}` at the file `age-keygen` wrote, or unset it"
            )),
        );
    }
    if let Some(home) = &env.config_home {
        from_file(&home.join(USER_KEYS_FILE), &mut found, report)?;
    }

    // The same identity in two places counts once.
    let mut unique: Vec<AgeIdentity> = Vec::new();
    for id in found {
        if !unique.iter().any(|u| u.recipient() == id.recipient()) {
            unique.push(id);
        }
    }
    if unique.is_empty() && !report.iter().any(|d| d.code == Code::AgeKeyInvalid) {
        let severity = if secrets == Secrets::Required {
            Severity::Error
        } else {
            Severity::Warning
        };
        report.push(
            Diagnostic::new(
                severity,
                Code::AgeKeyMissing,
                "`decryption: sops` is set, but no age identity was found, so the cluster could not decrypt the repository's secrets",
            )
            .in_file(&shown_secrets)
            .with_hint(format!(
                "add `ageKey: AGE-SECRET-KEY-1...` (or `AGE-SECRET-KEY-PQ-1...`) to `{shown_secrets}`, or set `{KEY_ENV}` or `{KEY_FILE_ENV}`, or keep it in `~/.config/{USER_KEYS_FILE}` as sops does"
            )),
        );
    }
    Ok(unique)
}

/// Reads an identity file into `found`; `Ok(false)` when it does not exist. Plugin identities
/// are skipped with a note: sops on this machine may use them, the cluster cannot.
fn from_file(
    path: &Path,
    found: &mut Vec<AgeIdentity>,
    report: &mut Report,
) -> Result<bool, LoadError> {
    let Some(contents) = read(path)? else {
        return Ok(false);
    };
    let shown = path.display().to_string();
    if contents.size > super::MAX_FILE_SIZE as u64 {
        report.push(
            Diagnostic::error(
                Code::AgeKeyInvalid,
                format!(
                    "`{shown}` is {} bytes; an identity file is at most {} KiB",
                    contents.size,
                    super::MAX_FILE_SIZE / 1024
                ),
            )
            .in_file(&shown)
            .with_hint("check that the right file is named; `age-keygen` writes three lines"),
        );
        return Ok(true);
    }
    let Ok(text) = std::str::from_utf8(&contents.bytes) else {
        report.push(
            Diagnostic::error(
                Code::AgeKeyInvalid,
                format!("`{shown}` is not valid UTF-8, so it holds no age identity"),
            )
            .in_file(&shown)
            .with_hint("an identity file is text: `age-keygen -o FILE` writes one"),
        );
        return Ok(true);
    };
    for (line, parsed) in sops::parse_identities(text) {
        match parsed {
            Ok(id) => found.push(id),
            Err(IdentityError::Plugin(name)) => report.push(plugin_skipped(
                format!("line {line} of `{shown}`"),
                name.as_deref(),
                shown.clone(),
                Some(line),
            )),
            Err(e) => report.push(
                Diagnostic::error(Code::AgeKeyInvalid, format!("line {line} of `{shown}` {e}"))
                    .at(
                        &shown,
                        Position {
                            line,
                            column: 1,
                            width: 1,
                        },
                    )
                    .with_hint(IDENTITY_HINT),
            ),
        }
    }
    Ok(true)
}

/// The note for a plugin identity (`AGE-PLUGIN-…`) among the identities: skipped, since Flux's
/// kustomize-controller runs no age plugin; the others in the same place still count.
fn plugin_skipped(
    what: String,
    plugin: Option<&str>,
    file: String,
    line: Option<usize>,
) -> Diagnostic {
    let plugin = sops::plugin_shown(plugin);
    let d = Diagnostic::note(
        Code::AgePluginSkipped,
        format!("{what} is an identity of {plugin}, skipped: Flux's kustomize-controller cannot use plugins"),
    )
    .with_hint("the cluster gets an `AGE-SECRET-KEY-1...` or `AGE-SECRET-KEY-PQ-1...` identity; encrypt the repository for one too");
    match line {
        Some(line) => d.at(
            &file,
            Position {
                line,
                column: 1,
                width: 1,
            },
        ),
        None => d.in_file(file),
    }
}
