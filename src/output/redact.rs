//! The last line of defence for secrets: every line the tool prints passes through [`redact`],
//! which masks registered secrets and anything shaped like a GitHub token or an age identity;
//! the panic hook sends even a bug's message through it.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};

use crate::text::escape;

/// Values that must never be printed, whatever prints them (the token, once it is read).
static HIDDEN: Mutex<Vec<SecretString>> = Mutex::new(Vec::new());

/// Registers a value that every later line of output will have masked, in its plain and its
/// base64 form (the form a Kubernetes Secret's `data` holds it in).
pub fn hide(secret: &SecretString) {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(secret.expose_secret());
    if let Ok(mut hidden) = HIDDEN.lock() {
        hidden.push(secret.clone());
        hidden.push(SecretString::from(encoded));
    }
}

/// Masks registered secrets and anything shaped like a GitHub token, keeping the text's width
/// (so that markers under source lines stay aligned). The last line of defence: messages are
/// written not to contain secrets in the first place.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    if let Ok(hidden) = HIDDEN.lock() {
        for secret in hidden.iter() {
            let needle = secret.expose_secret();
            if needle.len() >= 8 {
                ranges.extend(text.match_indices(needle).map(|(i, m)| (i, i + m.len())));
            }
        }
    }
    // Shaped like a GitHub token, or like an age identity (bech32 is one case throughout),
    // registered or not.
    let token_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let bech32_char = |c: char| c.is_ascii_alphanumeric();
    let shapes: [(&str, &dyn Fn(char) -> bool); 10] = [
        ("github_pat_", &token_char),
        ("ghp_", &token_char),
        ("gho_", &token_char),
        ("ghu_", &token_char),
        ("ghs_", &token_char),
        ("ghr_", &token_char),
        (crate::sops::IDENTITY_PREFIX, &bech32_char),
        (crate::sops::IDENTITY_PREFIX_LOWER, &bech32_char),
        (crate::age_pq::IDENTITY_PREFIX, &bech32_char),
        (crate::age_pq::IDENTITY_PREFIX_LOWER, &bech32_char),
    ];
    for (prefix, allowed) in shapes {
        for (i, _) in text.match_indices(prefix) {
            let end = text[i + prefix.len()..]
                .find(|c: char| !allowed(c))
                .map_or(text.len(), |j| i + prefix.len() + j);
            if end - i - prefix.len() >= 16 {
                ranges.push((i, end));
            }
        }
    }
    if ranges.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        if ranges.iter().any(|&(a, b)| i >= a && i < b) {
            out.push('*');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Routes panic messages through [`redact`], so that not even a bug can print the token.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            io::stderr().lock(),
            "error: homelab-flux crashed{at}: {}\nThis is a bug; please report it.",
            escape(&redact(&message))
        );
        // A crash is "could not run" (2), not Rust's 101; the hook runs before unwinding, so
        // nothing half-printed follows.
        std::process::exit(2);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_masks_tokens_and_keeps_width() {
        let t = "ghp_R8vK2mQ9xLp4Tz7Wn3Bc6Hd1Jf5Gs0YaEuVi";
        let line = format!("branch `{t}` x");
        let shown = redact(&line);
        assert_eq!(shown, format!("branch `{}` x", "*".repeat(t.len())));
        hide(&SecretString::from(
            "3f2a9c4e5b6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f".to_string(),
        ));
        assert!(!redact("a 3f2a9c4e5b6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f b").contains("3f2a"));
        assert_eq!(redact("plain ghp_ text"), "plain ghp_ text");
    }

    /// The `auth: token` Secret's `data` holds the token in base64.
    #[test]
    fn the_base64_form_of_a_hidden_value_is_masked_too() {
        hide(&SecretString::from(
            "ghp_B64canaryQ9xLp4Tz7Wn3Bc6Hd1Jf5Gs0Ya".to_string(),
        ));
        let shown = redact("password: Z2hwX0I2NGNhbmFyeVE5eExwNFR6N1duM0JjNkhkMUpmNUdzMFlh");
        assert!(!shown.contains("Z2hw"), "{shown}");
    }
}
