//! What the readers of both files share: a finding's position at a YAML node, a list of key
//! names for a hint, and the "did you mean" of a mistyped word.

use super::yaml;
use crate::diag::Position;

/// A finding's position at a YAML node's position, marking `width` characters.
pub(super) fn mark(pos: yaml::Pos, width: usize) -> Position {
    Position {
        line: pos.line,
        column: pos.column,
        width,
    }
}

pub(super) fn list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closest known word, if it is close enough to be a typo.
pub fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase().replace('_', "-");
    known
        .iter()
        .map(|k| (k, strsim::levenshtein(&lower, &k.to_ascii_lowercase())))
        .filter(|(k, d)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| *k)
}
