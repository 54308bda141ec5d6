//! Branch names, checked by the rules of `git check-ref-format --branch`. Pure logic.

use std::fmt;

use crate::diag::{Code, Diagnostic};

/// Bidi controls, zero-width characters, the word joiner, the BOM and the soft hyphen.
fn is_invisible(c: char) -> bool {
    crate::text::is_bidi_control(c)
        || matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}
/// A valid git branch name (without `refs/heads/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchName(String);

impl BranchName {
    /// Checks `value`; the error says what rule it breaks, with a hint.
    pub fn parse(value: &str) -> Result<BranchName, Diagnostic> {
        if let Some(short) = value.strip_prefix("refs/heads/") {
            let hint = if Self::parse(short).is_ok() {
                format!("write the branch name only: `{short}`")
            } else {
                "write the branch name only, without `refs/heads/`".to_string()
            };
            return Err(Diagnostic::error(
                Code::BranchFullRef,
                format!("`{value}` is a full ref name, not a branch name"),
            )
            .with_hint(hint));
        }
        match rule_broken(value) {
            None => Ok(BranchName(value.to_string())),
            Some(rule) => Err(Diagnostic::error(
                Code::BranchInvalid,
                format!(
                    "`{}` is not a valid branch name: {rule}",
                    value.escape_debug()
                ),
            )
            .with_hint("see `git check-ref-format --branch`; for example `main`")),
        }
    }

    /// A warning when the name holds a character that is not seen as written: a bidi control
    /// (the name reads in another order), a zero-width character or a soft hyphen (the name
    /// looks like another, `main` for example). git accepts them, so the branch may well exist;
    /// Flux gets exactly the name in the file.
    pub fn invisible_character(&self) -> Option<Diagnostic> {
        let c = self.0.chars().find(|&c| is_invisible(c))?;
        Some(
            Diagnostic::warning(
                Code::BranchInvisible,
                format!(
                    "`branch` holds the invisible character U+{:04X}, so it is not the name it looks like",
                    u32::from(c)
                ),
            )
            .with_hint("type the branch name again; if the branch really has this name, rename it"),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn rule_broken(v: &str) -> Option<&'static str> {
    if v.is_empty() {
        return Some("it is empty");
    }
    if v.starts_with('-') {
        return Some("it starts with `-`");
    }
    if v == "HEAD" {
        return Some("`HEAD` is reserved");
    }
    if v == "@" {
        return Some("`@` alone is reserved");
    }
    if let Some(c) = v.chars().find(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Some(match c {
            ' ' => "it contains a space",
            c if c.is_ascii_control() => "it contains a control character",
            _ => "it contains one of `~ ^ : ? * [ \\`",
        });
    }
    if v.contains("..") {
        return Some("it contains `..`");
    }
    if v.contains("@{") {
        return Some("it contains `@{`");
    }
    if v.starts_with('/') || v.ends_with('/') || v.contains("//") {
        return Some("it has an empty path component (a leading, trailing or double `/`)");
    }
    if v.ends_with('.') {
        return Some("it ends with `.`");
    }
    for component in v.split('/') {
        if component.starts_with('.') {
            return Some("a component starts with `.`");
        }
        if component.ends_with(".lock") {
            return Some("a component ends with `.lock`");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_are_a_warning_and_the_name_is_kept() {
        for v in [
            "ma\u{202e}in",
            "main\u{200b}",
            "\u{feff}main",
            "ma\u{ad}in",
            "m\u{2066}a",
        ] {
            let b = BranchName::parse(v).unwrap_or_else(|d| panic!("{v:?}: {}", d.message));
            let d = b.invisible_character().unwrap_or_else(|| panic!("{v:?}"));
            assert_eq!(d.code, Code::BranchInvisible);
            assert_eq!(b.as_str(), v);
        }
        for v in ["main", "feature/flux-v2", "日本", "café"] {
            assert!(
                BranchName::parse(v)
                    .unwrap()
                    .invisible_character()
                    .is_none(),
                "{v}"
            );
        }
    }

    #[test]
    fn accepts_ordinary_names() {
        for v in ["main", "feature/x", "release-1.2", "a@b", "ünï"] {
            assert!(BranchName::parse(v).is_ok(), "{v}");
        }
    }

    #[test]
    fn refuses_what_git_refuses() {
        for v in [
            "",
            "-x",
            "HEAD",
            "@",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "a..b",
            "a@{1}",
            "/a",
            "a/",
            "a//b",
            "a.",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "a\tb",
        ] {
            assert!(BranchName::parse(v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn full_refs_get_the_short_name_as_hint() {
        let d = BranchName::parse("refs/heads/main").unwrap_err();
        assert_eq!(d.code, Code::BranchFullRef);
        assert_eq!(d.hint.unwrap(), "write the branch name only: `main`");
    }
}
