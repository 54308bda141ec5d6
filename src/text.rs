//! Text that is safe on a terminal: control characters and bidi controls from any source
//! (configuration values, GitHub's or Flux's messages) are shown escaped, never raw. Pure
//! functions; the output module applies them to every line.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Shows text safely on a terminal: C0 and C1 control characters (newlines and tabs included),
/// DEL and the Unicode bidi controls become `\u{1b}`-style escapes, so that a value from a file,
/// GitHub or Flux cannot move the cursor, set the clipboard (OSC 52), fake a line or reorder what
/// is shown. Everything else is kept as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// Characters a terminal may act on rather than show.
pub fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The Unicode bidi controls: text around them is shown in another order than it is stored.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

pub fn push_escaped(out: &mut String, c: char) {
    if needs_escape(c) {
        let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
    } else {
        out.push(c);
    }
}

/// JSON that is also safe on a terminal: serde_json escapes C0 controls already; DEL, C1 and
/// bidi controls, which JSON allows raw, are escaped as `\uXXXX` too. They only ever occur
/// inside strings, so replacing them in the finished document keeps it valid and equal.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    // C0 controls outside strings are JSON's own whitespace; inside, serde_json escaped them.
    let raw_in_json = |c: char| needs_escape(c) && c >= ' ';
    if !json.chars().any(raw_in_json) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if raw_in_json(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Formats a timestamp the way the tool shows times: `2026-11-27 01:02:03 UTC`.
pub fn format_utc(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped_and_the_rest_kept() {
        assert_eq!(
            escape("a\x1b]52;c;SGVsbG8=\x07b\u{202e}c\u{9b}d\x7fe\nf"),
            "a\\u{1b}]52;c;SGVsbG8=\\u{7}b\\u{202e}c\\u{9b}d\\u{7f}e\\u{a}f"
        );
        assert!(matches!(escape("é ✓ plain"), Cow::Borrowed("é ✓ plain")));
        let json = json_safe("{\n\"m\": \"\\u001b x\u{7f}\u{202e}\"}");
        assert_eq!(json, "{\n\"m\": \"\\u001b x\\u007f\\u202e\"}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["m"], "\u{1b} x\u{7f}\u{202e}");
    }
}
