//! A configuration file's text as the user wrote it, for positions and for showing source lines.
//!
//! The secrets file is never shown as written: every value on a line is masked, so that a
//! diagnostic about that file cannot print the token, whatever the finding is.

use std::ops::Range;

use crate::diag::Position;

/// One file's text with what must never be shown of it.
#[derive(Clone)]
pub struct Source {
    name: String,
    text: String,
    /// Byte ranges replaced by `*` whenever a line is shown (credentials in a URL).
    masks: Vec<Range<usize>>,
    /// Mask every value on every line (the secrets file).
    secret: bool,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The text may hold the token: only the name is shown.
        f.debug_struct("Source").field("name", &self.name).finish()
    }
}

impl Source {
    /// A file whose lines may be shown as written.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
            masks: Vec::new(),
            secret: false,
        }
    }

    /// A file whose values are never shown.
    pub fn secret(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            secret: true,
            ..Source::new(name, text)
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// Never show these bytes (for example the `user:password@` part of a URL).
    pub fn add_mask(&mut self, range: Range<usize>) {
        self.masks.push(range);
    }

    /// Byte offset of a 1-based line and column (in characters).
    pub fn offset(&self, line: usize, column: usize) -> usize {
        let start = self.line_start(line);
        let rest = &self.text[start..];
        rest.char_indices()
            .nth(column.saturating_sub(1))
            .map_or(self.text.len(), |(i, _)| start + i)
    }

    fn line_start(&self, line: usize) -> usize {
        if line <= 1 {
            return 0;
        }
        self.text
            .match_indices('\n')
            .nth(line - 2)
            .map_or(self.text.len(), |(i, _)| i + 1)
    }

    /// The position of a byte offset, marking `width` characters.
    pub fn position_of(&self, offset: usize, width: usize) -> Position {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Position {
            line,
            column,
            width,
        }
    }

    /// The text of a 1-based line as it may be shown: without its line ending, masked.
    pub fn display_line(&self, line: usize) -> Option<String> {
        let start = self.line_start(line);
        if start >= self.text.len() && !(line == 1 && self.text.is_empty()) {
            return None;
        }
        let end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let raw = self.text[start..end].trim_end_matches('\r');
        let mut shown: String = raw
            .char_indices()
            .map(|(i, c)| {
                let at = start + i;
                if self.masks.iter().any(|m| m.contains(&at)) {
                    '*'
                } else {
                    c
                }
            })
            .collect();
        if self.secret {
            shown = mask_values(&shown);
        }
        Some(shown)
    }
}

/// Keeps the indentation and a leading `key:` of a line; every other visible character becomes `*`.
fn mask_values(line: &str) -> String {
    let indent = line.len() - line.trim_start().len();
    let rest = &line[indent..];
    let key_len = rest
        .find(':')
        .filter(|&i| {
            let key = &rest[..i];
            !key.is_empty()
                && key.len() <= 16
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ' ')
                && !crate::token::looks_like_token(key.trim())
        })
        .map_or(0, |i| i + 1);
    let mut out = String::with_capacity(line.len());
    out.push_str(&line[..indent + key_len]);
    for c in rest[key_len..].chars() {
        out.push(if c.is_whitespace() { c } else { '*' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_and_lines() {
        let s = Source::new("f", "é: x\nrepo: \"ab\"\n");
        assert_eq!(s.position_of(s.offset(2, 7), 4).column, 7);
        assert_eq!(s.position_of(s.offset(2, 7), 4).line, 2);
        assert_eq!(s.offset(1, 4), 4, "é is two bytes");
    }

    #[test]
    fn secret_lines_keep_only_keys() {
        let s = Source::secret("f", "token: \"ghp_abc\"  # my token\r\n");
        assert_eq!(s.display_line(1).unwrap(), "token: *********  * ** *****");
    }

    #[test]
    fn a_token_pasted_as_a_key_is_masked() {
        let s = Source::secret("f", "ghp_Zt9aQ3LmX8bV: x\n");
        assert_eq!(s.display_line(1).unwrap(), "***************** *");
    }

    #[test]
    fn masks_hide_credentials() {
        let mut s = Source::new("f", "repo: https://u:pw@github.com/o/r\n");
        s.add_mask(14..19);
        assert_eq!(
            s.display_line(1).unwrap(),
            "repo: https://*****github.com/o/r"
        );
    }
}
