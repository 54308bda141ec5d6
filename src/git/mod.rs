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
use crate::diag::{Code, Diagnostic};
use crate::sops::{AgeIdentity, Inventory};
use crate::token::Token;

mod scan;
mod search;

pub use search::plaintext_secret;

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
        scan::scan_tracked(&repo, &index, &workdir, &rel, secrets, &mut hygiene);
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
