//! The directory of the repository that the Kustomization applies. Pure logic.

use std::fmt;

use crate::diag::{Code, Diagnostic};

/// A relative path inside the repository, normalised to `./x/y` (or `./` for the root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoPath(String);

impl Default for RepoPath {
    fn default() -> Self {
        RepoPath("./".to_string())
    }
}

impl RepoPath {
    pub fn parse(value: &str) -> Result<RepoPath, Diagnostic> {
        if value.contains('\\') {
            return Err(Diagnostic::error(
                Code::PathInvalid,
                format!("`path` `{}` contains `\\`", value.escape_debug()),
            )
            .with_hint(format!(
                "use `/` as separator: `{}`",
                value.replace('\\', "/")
            )));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(Diagnostic::error(
                Code::PathInvalid,
                "`path` contains a control character",
            )
            .with_hint("use a plain directory name such as `./clusters/home`"));
        }
        if value.starts_with('/') || value.starts_with('~') {
            let relative =
                normalise(value.trim_start_matches(['/', '~'])).unwrap_or_else(|| "./".to_string());
            return Err(Diagnostic::error(
                Code::PathAbsolute,
                format!("`path` `{value}` is absolute; it must be relative to the repository root"),
            )
            .with_hint(format!("use `{relative}`")));
        }
        match normalise(value) {
            Some(p) => Ok(RepoPath(p)),
            None => Err(Diagnostic::error(
                Code::PathEscapes,
                format!("`path` `{value}` leaves the repository (`..`)"),
            )
            .with_hint("name a directory inside the repository, such as `./clusters/home`")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `x//./y/` → `./x/y`; `None` when `..` climbs above the root.
fn normalise(value: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in value.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(if parts.is_empty() {
        "./".to_string()
    } else {
        format!("./{}", parts.join("/"))
    })
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        for (v, want) in [
            ("", "./"),
            (".", "./"),
            ("./", "./"),
            ("clusters/home", "./clusters/home"),
            ("./clusters//home/", "./clusters/home"),
            ("a/../b", "./b"),
        ] {
            assert_eq!(RepoPath::parse(v).unwrap().as_str(), want, "{v}");
        }
    }

    #[test]
    fn refuses_escapes_and_absolute_paths() {
        assert_eq!(RepoPath::parse("../x").unwrap_err().code, Code::PathEscapes);
        assert_eq!(
            RepoPath::parse("a/../../x").unwrap_err().code,
            Code::PathEscapes
        );
        let d = RepoPath::parse("/clusters/home").unwrap_err();
        assert_eq!(d.code, Code::PathAbsolute);
        assert_eq!(d.hint.unwrap(), "use `./clusters/home`");
    }
}
