//! `githubApp` of the secrets file: `{id, installationId?, privateKey | privateKeyFile}`, read
//! strictly (unknown and duplicate keys, types, positions), and the key file read with the
//! rules of the configuration files. The key is a secret: the secrets file's lines are masked
//! whenever they are shown, and no message holds any of it.

use std::path::Path;

use super::names::{list, mark, suggest};
use super::yaml::{Node, NodeKind, Resolved};
use crate::app_key::{AppKey, GitHubApp};
use crate::diag::{Code, Diagnostic, Position, Report};

/// The keys of `githubApp`.
pub(super) const APP_KEYS: &[&str] = &["id", "installationId", "privateKey", "privateKeyFile"];

/// Where the key comes from.
#[derive(Debug)]
pub(super) enum KeySource {
    /// `privateKey:`, parsed already.
    Inline(AppKey),
    /// `privateKeyFile:` as written, and where its value stands.
    File(String, Position),
}

/// `githubApp` as the file says it, before the key file is read.
#[derive(Debug)]
pub(super) struct AppRead {
    pub id: u64,
    pub installation_id: Option<u64>,
    pub key: KeySource,
}

const HINT: &str = "write it as `githubApp:` with the lines `  id: 123456` and `  privateKeyFile: app.pem` (or `  privateKey: |` and the PEM) indented below it";

/// Reads the `githubApp` mapping. Every problem is pushed; `None` when there was one. A valid
/// inline key is returned with the problems too (`.1`), so that it is still hidden and searched
/// for in tracked files.
pub(super) fn read(
    value: &Node,
    key: &Node,
    name: &str,
    report: &mut Report,
) -> (Option<AppRead>, Option<AppKey>) {
    let NodeKind::Mapping(entries) = &value.kind else {
        report.push(
            Diagnostic::error(
                Code::WrongType,
                format!("`githubApp` must be a mapping, not {}", value.describe()),
            )
            .at(
                name,
                mark(
                    if value.resolved() == Some(Resolved::Null) {
                        key.pos
                    } else {
                        value.pos
                    },
                    9,
                ),
            )
            .with_hint(HINT),
        );
        return (None, None);
    };
    let before = report.summary().errors;
    let mut seen: Vec<(&str, &Node, &Node)> = Vec::new();
    for (k, v) in entries {
        let key_name = match &k.kind {
            NodeKind::Scalar { value, .. } if k.resolved() == Some(Resolved::Str) => value.as_str(),
            _ => {
                report.push(
                    Diagnostic::error(
                        Code::WrongType,
                        format!("a key of `githubApp` is {}, not a name", k.describe()),
                    )
                    .at(name, mark(k.pos, 1))
                    .with_hint(format!("the keys of `githubApp` are {}", list(APP_KEYS))),
                );
                continue;
            }
        };
        // A key long enough to be a pasted secret is not echoed.
        let shown = if key_name.len() > 16 || crate::token::looks_like_token(key_name) {
            "(hidden: it looks like a secret)".to_string()
        } else {
            format!("`{key_name}`")
        };
        let key_pos = mark(k.pos, key_name.chars().count().max(1));
        if let Some((_, first, _)) = seen.iter().find(|(n, _, _)| *n == key_name) {
            report.push(
                Diagnostic::error(
                    Code::DuplicateKey,
                    format!("duplicate key {shown} in `githubApp`"),
                )
                .at(name, key_pos)
                .with_hint(format!(
                    "it is already set on line {}; keep one",
                    first.pos.line
                )),
            );
            continue;
        }
        if !APP_KEYS.contains(&key_name) {
            let hint = match suggest(key_name, APP_KEYS) {
                Some(s) if !shown.starts_with("(hidden") => format!("did you mean `{s}`?"),
                _ => format!("the keys of `githubApp` are {}", list(APP_KEYS)),
            };
            report.push(
                Diagnostic::error(
                    Code::UnknownKey,
                    format!("unknown key {shown} in `githubApp`"),
                )
                .at(name, key_pos)
                .with_hint(hint),
            );
            continue;
        }
        seen.push((key_name, k, v));
    }
    let get = |n: &str| {
        seen.iter()
            .find(|(k, _, _)| *k == n)
            .map(|(_, k, v)| (*k, *v))
    };

    let id = match get("id") {
        None => {
            report.push(
                Diagnostic::error(Code::MissingKey, "missing required key `id` in `githubApp`")
                    .at(name, mark(key.pos, 9))
                    .with_hint("add `id: 123456`: the App ID on the App's settings page (not the Client ID)"),
            );
            None
        }
        Some((k, v)) => number(k, v, "id", name, report),
    };
    let installation_id =
        get("installationId").and_then(|(k, v)| number(k, v, "installationId", name, report));

    let inline = get("privateKey")
        .and_then(|(k, v)| string(k, v, "privateKey", name, report).map(|s| (s, v)));
    let file = get("privateKeyFile")
        .and_then(|(k, v)| string(k, v, "privateKeyFile", name, report).map(|s| (s, v)));
    let mut key_seen = None;
    let key_source = match (inline, file, get("privateKey"), get("privateKeyFile")) {
        (_, _, Some(_), Some((k, _))) => {
            report.push(
                Diagnostic::error(
                    Code::AppKeySource,
                    "`githubApp` sets both `privateKey` and `privateKeyFile`",
                )
                .at(name, mark(k.pos, "privateKeyFile".len()))
                .with_hint("keep one: the key itself, or the path of the `.pem` file"),
            );
            None
        }
        (None, None, None, None) => {
            report.push(
                Diagnostic::error(
                    Code::AppKeySource,
                    "`githubApp` has neither `privateKey` nor `privateKeyFile`",
                )
                .at(name, mark(key.pos, 9))
                .with_hint("add `privateKeyFile: app.pem` (a path relative to the config directory, mode 600), or `privateKey: |` with the PEM indented below it"),
            );
            None
        }
        (Some((pem, v)), None, _, _) => match AppKey::parse(&pem) {
            Ok(k) => {
                key_seen = Some(k.clone());
                Some(KeySource::Inline(k))
            }
            Err(e) => {
                report.push(
                    Diagnostic::error(Code::AppKeyInvalid, format!("`privateKey` {e}"))
                        .at(name, mark(v.pos, 1))
                        .with_hint(e.hint()),
                );
                None
            }
        },
        (None, Some((path, v)), _, _) => {
            let width = path.chars().count().max(1);
            Some(KeySource::File(path, mark(v.pos, width)))
        }
        // A value of the wrong type, reported already.
        _ => None,
    };
    let ok = report.summary().errors == before;
    let read = match (id, key_source) {
        (Some(id), Some(key)) if ok => Some(AppRead {
            id,
            installation_id,
            key,
        }),
        _ => None,
    };
    (read, key_seen)
}

/// A positive integer (`id: 123456`; a quoted `"123456"` is read as well).
fn number(k: &Node, v: &Node, field: &str, name: &str, report: &mut Report) -> Option<u64> {
    let (text, ok_type) = match (&v.kind, v.resolved()) {
        (NodeKind::Scalar { value, .. }, Some(Resolved::Int | Resolved::Str)) => {
            (value.as_str(), true)
        }
        _ => ("", false),
    };
    let parsed = text
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && ok_type && text.bytes().all(|b| b.is_ascii_digit()));
    if parsed.is_none() {
        let what = if v.resolved() == Some(Resolved::Null) {
            "has no value".to_string()
        } else if ok_type {
            "is not a positive whole number".to_string()
        } else {
            format!("must be a number, not {}", v.describe())
        };
        let pos = if v.resolved() == Some(Resolved::Null) {
            mark(k.pos, field.len())
        } else {
            mark(v.pos, text.chars().count().max(1))
        };
        let hint = if field == "id" {
            "write the App ID from the App's settings page (\"App ID\", digits only; not the Client ID `Iv1...`)"
        } else {
            "write the number at the end of the installation's URL (`.../settings/installations/12345678`), or remove the line to have it looked up"
        };
        report.push(
            Diagnostic::error(Code::AppIdInvalid, format!("`githubApp.{field}` {what}"))
                .at(name, pos)
                .with_hint(hint),
        );
    }
    parsed
}

/// A string value; any other type is a finding (the value is never echoed).
fn string(k: &Node, v: &Node, field: &str, name: &str, report: &mut Report) -> Option<String> {
    match (&v.kind, v.resolved()) {
        (NodeKind::Scalar { value, .. }, Some(Resolved::Str)) => Some(value.clone()),
        _ => {
            let empty = v.resolved() == Some(Resolved::Null);
            report.push(
                Diagnostic::error(
                    Code::WrongType,
                    if empty {
                        format!("`githubApp.{field}` has no value")
                    } else {
                        format!("`githubApp.{field}` must be a string, not {}", v.describe())
                    },
                )
                .at(
                    name,
                    if empty {
                        mark(k.pos, field.len())
                    } else {
                        mark(v.pos, 1)
                    },
                )
                .with_hint(if field == "privateKey" {
                    "write `privateKey: |` and the PEM indented on the lines below it"
                } else {
                    "write the path of the `.pem` file, relative to the config directory"
                }),
            );
            None
        }
    }
}

/// Turns what the file says into the App's credentials: the key file is read (relative paths
/// from the config directory) with the configuration files' rules, refused when group- or
/// world-readable, and parsed.
pub(super) fn resolve(
    read: AppRead,
    dir: &Path,
    name: &str,
    report: &mut Report,
) -> Option<GitHubApp> {
    let key = match read.key {
        KeySource::Inline(k) => k,
        KeySource::File(path, pos) => {
            let full = dir.join(&path);
            let shown = full.display().to_string();
            let fail = |report: &mut Report, code, message: String, hint: String| {
                report.push(
                    Diagnostic::error(code, message)
                        .at(name, pos)
                        .with_hint(hint),
                );
            };
            let contents = match super::read(&full) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    fail(report, Code::AppKeyFile, format!("the App's private key file `{shown}` does not exist"), "download the key on the App's settings page (\"Generate a private key\") and save it there, or fix the path (relative paths start at the config directory)".into());
                    return None;
                }
                Err(e) => {
                    fail(
                        report,
                        Code::AppKeyFile,
                        crate::chain::line(&e),
                        "point `privateKeyFile` at the `.pem` file itself".into(),
                    );
                    return None;
                }
            };
            if let Some(mode) = others_may_read(&full) {
                fail(
                    report,
                    Code::AppKeyFilePermissions,
                    format!(
                        "the App's private key file `{shown}` is readable by other users (mode {mode:o})"
                    ),
                    format!(
                        "run `chmod 600 {shown}`; the key lets anyone read the repository as the App"
                    ),
                );
                return None;
            }
            if contents.size > super::MAX_FILE_SIZE as u64 {
                fail(
                    report,
                    Code::AppKeyFile,
                    format!(
                        "`{shown}` is {} bytes; a private key file is a few KiB",
                        contents.size
                    ),
                    "point `privateKeyFile` at the `.pem` file the App's settings page downloaded"
                        .into(),
                );
                return None;
            }
            let text = String::from_utf8_lossy(&contents.bytes);
            match AppKey::parse(&text) {
                Ok(k) => k,
                Err(e) => {
                    fail(
                        report,
                        Code::AppKeyInvalid,
                        format!("`{shown}` {e}"),
                        e.hint().into(),
                    );
                    return None;
                }
            }
        }
    };
    Some(GitHubApp {
        id: read.id,
        installation_id: read.installation_id,
        key,
    })
}

/// The mode's permission bits when the group or others may read or write the file.
#[cfg(unix)]
fn others_may_read(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn others_may_read(_: &Path) -> Option<u32> {
    None
}
