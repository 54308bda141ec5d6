//! Local git repositories, through git2: the secrets-hygiene checks of `validate`.
//!
//! When the config directory is inside a git work tree, the secrets file must never reach a
//! commit: not tracked, not staged, ignored; and neither the token nor an age identity may sit in
//! any other file git tracks. The same pass collects what the repository says about SOPS
//! (`.sops.yaml` creation rules, the recipients of every encrypted file) for [`crate::sops`].
//! Nothing here changes the repository.

use std::path::{Path, PathBuf};

use git2::{Repository, RepositoryOpenFlags};

use crate::app_key::AppKey;
use crate::diag::{Code, Diagnostic, Position};
use crate::sops::{self, AgeIdentity, FileFormat, Inventory};
use crate::token::Token;

/// The secrets the scan looks for in tracked files.
#[derive(Clone, Copy, Debug, Default)]
pub struct Secrets<'a> {
    pub token: Option<&'a Token>,
    pub age_identities: &'a [AgeIdentity],
    /// The GitHub App's private key: a line of its PEM body is searched for.
    pub app_key: Option<&'a AppKey>,
}

/// What the hygiene checks found.
#[derive(Debug, Default)]
pub struct Hygiene {
    pub findings: Vec<Diagnostic>,
    /// The SOPS side of the tracked files; empty outside a git work tree.
    pub sops: Inventory,
}

/// Files larger than this are not searched for the token (they are not hand-edited text).
const MAX_SCAN_SIZE: usize = 8 * 1024 * 1024;

/// Runs every hygiene check. Outside a git work tree there is nothing to check.
///
/// `secrets_path` is the secrets file as the user names it (it need not exist); `secrets` are the
/// token and the age identities, wherever they came from, for the search of tracked files.
pub fn hygiene(config_dir: &Path, secrets_path: &Path, secrets: Secrets<'_>) -> Hygiene {
    let mut hygiene = Hygiene::default();
    let out = &mut hygiene.findings;
    let shown = secrets_path.display().to_string();
    let exists = secrets_path.exists();
    // Readable by others is a problem in a git work tree or not.
    if exists {
        out.extend(permissions(secrets_path, &shown));
    }
    let Ok(repo) = Repository::open_ext(
        config_dir,
        RepositoryOpenFlags::empty(),
        std::iter::empty::<&Path>(),
    ) else {
        return hygiene;
    };
    let Some(workdir) = repo.workdir().and_then(|w| w.canonicalize().ok()) else {
        return hygiene;
    };
    let Ok(dir) = config_dir.canonicalize() else {
        return hygiene;
    };
    let Ok(rel_dir) = dir.strip_prefix(&workdir) else {
        return hygiene;
    };
    let file_name = secrets_path
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_default();
    let rel = rel_dir.join(&file_name);
    let index = repo.index().ok();

    let in_head = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_tree().ok())
        .is_some_and(|tree| tree.get_path(&rel).is_ok());
    let staged = index
        .as_ref()
        .is_some_and(|i| i.get_path(&rel, 0).is_some());

    if in_head || staged {
        let (what, rotate) = if in_head {
            (
                "is committed",
                "; the token is in the history now, so revoke it and create a new one",
            )
        } else {
            ("is staged for the next commit", "")
        };
        out.push(
            Diagnostic::error(
                Code::SecretsTracked,
                format!("the secrets file `{shown}` {what}"),
            )
            .in_file(&shown)
            .with_hint(format!(
                "run `git rm --cached {}` and add `{}` to .gitignore{rotate}",
                rel.display(),
                ignore_line(rel_dir)
            )),
        );
    } else if exists && !repo.is_path_ignored(&rel).unwrap_or(false) {
        out.push(
            Diagnostic::error(
                Code::SecretsNotIgnored,
                format!("the secrets file `{shown}` is not ignored by git"),
            )
            .in_file(&shown)
            .with_hint(format!(
                "add the line `{}` to .gitignore",
                ignore_line(rel_dir)
            )),
        );
    }

    for stray in crate::config::stray_secrets_files(config_dir, file_name.as_os_str()) {
        let Some(name) = stray.file_name() else {
            continue;
        };
        if repo.is_path_ignored(rel_dir.join(name)).unwrap_or(false) {
            continue;
        }
        let stray_shown = stray.display().to_string();
        out.push(
            Diagnostic::error(
                Code::SecretsStray,
                format!(
                    "`{stray_shown}` looks like a secrets file, but homelab-flux reads `{shown}` and git does not ignore `{stray_shown}`"
                ),
            )
            .in_file(&stray_shown)
            .with_hint(format!(
                "rename it to `{shown}` (then it is read, and ignored by the line `{}` in .gitignore), or delete it",
                ignore_line(rel_dir)
            )),
        );
    }

    if let Some(index) = index {
        scan_tracked(&repo, &index, &workdir, &rel, secrets, &mut hygiene);
    }
    hygiene
}

/// What `init` needs to know of the git repository around a directory.
#[derive(Debug, Default)]
pub struct Around {
    /// The work tree's root.
    pub root: Option<PathBuf>,
    /// `origin`'s URL.
    pub origin: Option<String>,
    /// The branch checked out.
    pub branch: Option<String>,
}

/// The git repository around `dir`, if any (`dir` need not exist yet: its parent is asked).
pub fn around(dir: &Path) -> Around {
    let start = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("."));
    let Ok(repo) = Repository::open_ext(
        start,
        RepositoryOpenFlags::empty(),
        std::iter::empty::<&Path>(),
    ) else {
        return Around::default();
    };
    Around {
        root: repo.workdir().and_then(|w| w.canonicalize().ok()),
        origin: repo
            .find_remote("origin")
            .ok()
            .and_then(|r| r.url().ok().map(str::to_string)),
        branch: repo
            .head()
            .ok()
            .filter(git2::Reference::is_branch)
            .and_then(|h| h.shorthand().ok().map(str::to_string)),
    }
}

/// Whether git ignores `rel` (a path relative to the work tree at `root`).
pub fn is_ignored(root: &Path, rel: &Path) -> bool {
    Repository::open(root).is_ok_and(|repo| repo.is_path_ignored(rel).unwrap_or(false))
}

/// The .gitignore line that covers every secrets file of the config directory.
pub fn ignore_line(rel_dir: &Path) -> String {
    if rel_dir.as_os_str().is_empty() {
        "secrets-*.yaml".to_string()
    } else {
        format!("{}/secrets-*.yaml", rel_dir.display())
    }
}

#[cfg(unix)]
fn permissions(path: &Path, shown: &str) -> Option<Diagnostic> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        Diagnostic::warning(
            Code::SecretsPermissions,
            format!(
                "the secrets file `{shown}` is readable by other users (mode {:o})",
                mode & 0o777
            ),
        )
        .in_file(shown)
        .with_hint(format!("run `chmod 600 {shown}`"))
    })
}

#[cfg(not(unix))]
fn permissions(_: &Path, _: &str) -> Option<Diagnostic> {
    None
}

/// Searches every tracked or staged file (staged content and working-tree content) for the
/// token and the age identities, YAML files for plaintext Kubernetes Secrets, and collects the
/// SOPS creation rules and encrypted files.
fn scan_tracked(
    repo: &Repository,
    index: &git2::Index,
    workdir: &Path,
    secrets_rel: &Path,
    secrets: Secrets<'_>,
    hygiene: &mut Hygiene,
) {
    use memchr::memmem::Finder;
    let token = secrets.token.map(|t| Finder::new(t.expose().as_bytes()));
    // age writes identities upper-case; a hand-copied one may be lower-case.
    let identities: Vec<String> = secrets
        .age_identities
        .iter()
        .flat_map(|id| [id.expose().to_string(), id.expose().to_ascii_lowercase()])
        .collect();
    let identities: Vec<Finder<'_>> = identities.iter().map(Finder::new).collect();
    let app_lines = secrets.app_key.map(AppKey::needles).unwrap_or_default();
    let app_key: Vec<Finder<'_>> = app_lines.iter().map(Finder::new).collect();
    // Every file is searched for the secrets when there are any; otherwise only YAML files
    // (plaintext Secrets) and, with an identity, the SOPS files are read at all.
    let search = token.is_some() || !identities.is_empty() || !app_key.is_empty();
    let sops = !secrets.age_identities.is_empty();
    let odb = repo.odb().ok();
    let out = &mut hygiene.findings;
    for entry in index.iter() {
        // Submodules (gitlinks) have no content here.
        if entry.mode == 0o160000 {
            continue;
        }
        let rel = PathBuf::from(String::from_utf8_lossy(&entry.path).into_owned());
        if rel == secrets_rel {
            continue;
        }
        let shown = rel.display().to_string();
        let is_yaml = rel.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if !(search || is_yaml || sops && is_sops_file(&shown)) {
            continue;
        }
        let on_disk = read_regular(&workdir.join(&rel));
        // Searched, the staged blob counts too when it differs from the file on disk (usually
        // it is the same content, which is then scanned once); otherwise it stands in for a
        // file missing on disk. Its size comes from the header first, so a large blob is never
        // loaded.
        let wants_staged = match on_disk.as_deref() {
            Some(c) if search => {
                git2::Oid::hash_object(git2::ObjectType::Blob, c).is_ok_and(|oid| oid != entry.id)
            }
            Some(_) => false,
            None => true,
        };
        let staged = odb
            .as_ref()
            .filter(|_| wants_staged)
            .and_then(|odb| odb.read_header(entry.id).ok())
            .filter(|&(size, _)| size <= MAX_SCAN_SIZE)
            .and_then(|_| repo.find_blob(entry.id).ok());
        let staged = staged.as_ref().map(git2::Blob::content);
        let contents = [on_disk.as_deref(), staged];
        let holds = |finder: &Finder<'_>| {
            contents
                .into_iter()
                .flatten()
                .any(|c| finder.find(c).is_some())
        };
        if token.as_ref().is_some_and(holds) {
            out.push(
                Diagnostic::error(Code::TokenInTrackedFile, format!("the token's value is in `{shown}`, a file git tracks"))
                    .in_file(&shown)
                    .with_hint("remove it from that file; if it was ever committed, revoke the token and create a new one"),
            );
        }
        if identities.iter().any(holds) {
            out.push(
                Diagnostic::error(Code::AgeKeyInTrackedFile, format!("an age identity is in `{shown}`, a file git tracks"))
                    .in_file(&shown)
                    .with_hint("remove it from that file; if it was ever committed, make a new identity with `age-keygen` and re-encrypt the repository for it"),
            );
        }
        if app_key.iter().any(holds) {
            out.push(
                Diagnostic::error(Code::AppKeyInTrackedFile, format!("the GitHub App's private key is in `{shown}`, a file git tracks"))
                    .in_file(&shown)
                    .with_hint("remove it from that file; if it was ever committed, generate a new private key on the App's settings page and delete the old one there"),
            );
        }
        // Only with an identity to check it against.
        if sops && let Some(content) = on_disk.as_deref().or(staged) {
            collect_sops(&shown, content, &mut hygiene.sops);
        }
        if is_yaml
            && let Some(content) = on_disk.as_deref().or(staged)
            && let Some(line) = plaintext_secret(&String::from_utf8_lossy(content))
        {
            {
                out.push(
                    Diagnostic::warning(
                        Code::PlaintextSecret,
                        format!(
                            "`{shown}` is a Kubernetes Secret with plaintext `data`/`stringData`"
                        ),
                    )
                    .at(
                        &shown,
                        Position {
                            line,
                            column: 1,
                            width: 12,
                        },
                    )
                    .with_hint(
                        "encrypt it with SOPS (`sops --encrypt --in-place`), or keep it out of git",
                    ),
                );
            }
        }
    }
}

/// A `.sops.yaml`, or a file of a format SOPS encrypts (YAML, JSON, `.env`).
fn is_sops_file(shown: &str) -> bool {
    is_sops_config(shown) || FileFormat::of(shown).is_some()
}

fn is_sops_config(shown: &str) -> bool {
    let name = shown.rsplit('/').next().unwrap_or(shown);
    name == ".sops.yaml" || name == ".sops.yml"
}

/// Adds a tracked file's SOPS facts to the inventory: the rules of a `.sops.yaml`, or the
/// recipients of an encrypted file.
fn collect_sops(shown: &str, content: &[u8], inventory: &mut Inventory) {
    let Ok(text) = std::str::from_utf8(content) else {
        return;
    };
    if is_sops_config(shown) {
        match sops::creation_rules(text) {
            Ok(rules) => inventory
                .rules
                .extend(rules.into_iter().map(|r| (shown.to_string(), r))),
            Err(reason) => inventory
                .unreadable_configs
                .push((shown.to_string(), reason)),
        }
    } else if let Some(format) = FileFormat::of(shown)
        // Only files that mention sops at all are parsed: a large repository costs a byte
        // search per file.
        && memchr::memmem::find(content, b"sops").is_some()
        && let Some(found) = sops::encrypted(format, text)
    {
        inventory.files.push((shown.to_string(), found));
    }
}

/// A work-tree file's content when it is a regular file (not followed through a symlink: git
/// tracks a symlink's target path, not what it points to) of at most [`MAX_SCAN_SIZE`] bytes.
/// A FIFO, a device or a symlink to `/dev/zero` is skipped, never opened.
fn read_regular(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() || meta.len() > MAX_SCAN_SIZE as u64 {
        return None;
    }
    let mut content = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .ok()?
        .take(MAX_SCAN_SIZE as u64 + 1)
        .read_to_end(&mut content)
        .ok()?;
    (content.len() <= MAX_SCAN_SIZE).then_some(content)
}

/// The line of `kind: Secret` of the first document that has data and no `sops:` key.
pub fn plaintext_secret(text: &str) -> Option<usize> {
    let mut kind_line = None;
    let (mut has_data, mut has_sops) = (false, false);
    let lines: Vec<&str> = text.lines().collect();
    for (i, raw) in lines.iter().chain(std::iter::once(&"---")).enumerate() {
        let line = raw.trim_end();
        if line == "---" || line.starts_with("--- ") {
            if let (Some(k), true, false) = (kind_line, has_data, has_sops) {
                return Some(k);
            }
            kind_line = None;
            has_data = false;
            has_sops = false;
            continue;
        }
        // Only top-level keys count.
        if let Some(value) = line.strip_prefix("kind:") {
            if value.trim().trim_matches(['"', '\'']) == "Secret" {
                kind_line = Some(i + 1);
            }
        } else if line.starts_with("data:") || line.starts_with("stringData:") {
            has_data = true;
        } else if line.starts_with("sops:") {
            has_sops = true;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_plaintext_secrets_only() {
        let plain = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\nstringData:\n  a: b\n";
        assert_eq!(plaintext_secret(plain), Some(2));
        let sops = format!("{plain}sops:\n  version: 3\n");
        assert_eq!(plaintext_secret(&sops), None);
        let cm = "kind: ConfigMap\ndata:\n  a: b\n";
        assert_eq!(plaintext_secret(cm), None);
        let second = format!("{cm}---\n{plain}");
        assert_eq!(plaintext_secret(&second), Some(6));
    }
}
