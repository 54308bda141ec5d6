//! The GitHub token: kept secret from the moment it is read, and classified by its form. Pure logic.
//!
//! GitHub's token formats: `ghp_` (classic personal access token), `github_pat_` (fine-grained),
//! `gho_` (OAuth app), `ghu_` (GitHub App user-to-server), `ghs_` (GitHub App installation, expires
//! within an hour), `ghr_` (refresh token, cannot call the API), and the legacy 40-hex form.
//! Nothing here ever puts the token, or a piece of it, into a message.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::diag::{Code, Diagnostic};
use crate::settings::Auth;

/// The token. `Debug` and `Display` are redacted; [`Token::expose`] is the only way to the value.
#[derive(Clone)]
pub struct Token(SecretString);

impl Token {
    pub fn new(value: &str) -> Self {
        Token(SecretString::from(value.to_string()))
    }

    /// The value, for the `Authorization` header, the cluster Secret and the leak scanner only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }

    /// The token's kind, from its prefix.
    pub fn kind(&self) -> TokenKind {
        TokenKind::of(self.expose())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}, [REDACTED])", self.kind())
    }
}

/// What kind of token a value is, judged by its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Classic,
    FineGrained,
    OAuth,
    UserToServer,
    Installation,
    Refresh,
    Legacy,
    Unknown,
}

impl TokenKind {
    pub fn of(v: &str) -> Self {
        if v.starts_with("github_pat_") {
            TokenKind::FineGrained
        } else if v.starts_with("ghp_") {
            TokenKind::Classic
        } else if v.starts_with("gho_") {
            TokenKind::OAuth
        } else if v.starts_with("ghu_") {
            TokenKind::UserToServer
        } else if v.starts_with("ghs_") {
            TokenKind::Installation
        } else if v.starts_with("ghr_") {
            TokenKind::Refresh
        } else if v.len() == 40 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
            TokenKind::Legacy
        } else {
            TokenKind::Unknown
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            TokenKind::Classic => "ghp_",
            TokenKind::FineGrained => "github_pat_",
            TokenKind::OAuth => "gho_",
            TokenKind::UserToServer => "ghu_",
            TokenKind::Installation => "ghs_",
            TokenKind::Refresh => "ghr_",
            TokenKind::Legacy | TokenKind::Unknown => "",
        }
    }

    /// The length GitHub issues this kind with.
    fn expected_len(self) -> Option<usize> {
        match self {
            TokenKind::FineGrained => Some(93),
            TokenKind::Legacy | TokenKind::Unknown => None,
            _ => Some(40),
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenKind::Classic => "classic personal access token",
            TokenKind::FineGrained => "fine-grained personal access token",
            TokenKind::OAuth => "OAuth app token",
            TokenKind::UserToServer => "GitHub App user token",
            TokenKind::Installation => "GitHub App installation token",
            TokenKind::Refresh => "refresh token",
            TokenKind::Legacy => "legacy 40-hex token",
            TokenKind::Unknown => "unrecognised token",
        })
    }
}

/// True for strings that have a token's form (used to hide pasted tokens in unexpected places).
pub fn looks_like_token(s: &str) -> bool {
    !matches!(TokenKind::of(s), TokenKind::Unknown)
}

/// Checks a token value. Every finding is about the token's form; none contains the token.
pub fn check(value: &str, auth: Auth) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if value.is_empty() {
        out.push(
            Diagnostic::error(Code::TokenEmpty, "the token is empty")
                .with_hint("create a token at https://github.com/settings/personal-access-tokens and paste it here"),
        );
        return out;
    }
    if value.chars().any(char::is_whitespace) {
        let where_ = if value.trim_end() != value && value.trim() == value.trim_end() {
            "at its end (a `|` block adds a newline; use a quoted string)"
        } else {
            "inside it"
        };
        out.push(
            Diagnostic::error(
                Code::TokenWhitespace,
                format!("the token has whitespace {where_}"),
            )
            .with_hint("write it on one line in quotes: `token: \"github_pat_...\"`"),
        );
        return out;
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        out.push(
            Diagnostic::error(
                Code::TokenCharacters,
                "the token has characters other than letters, digits and `_`",
            )
            .with_hint("copy the token again from GitHub; tokens never contain quotes, dashes or other symbols"),
        );
        return out;
    }
    if value.len() > 255 {
        out.push(
            Diagnostic::error(
                Code::TokenTooLong,
                format!(
                    "the token is {} characters long; GitHub tokens are at most 255",
                    value.len()
                ),
            )
            .with_hint("check that only one token was pasted"),
        );
        return out;
    }

    let kind = TokenKind::of(value);
    let body = &value[kind.prefix().len()..];
    if is_placeholder(value, body) {
        out.push(
            Diagnostic::error(Code::TokenPlaceholder, "the token is a placeholder, not a real token")
                .with_hint("replace it with a token created at https://github.com/settings/personal-access-tokens"),
        );
        return out;
    }
    match kind {
        TokenKind::Refresh => {
            out.push(
                Diagnostic::error(Code::TokenRefresh, "the token is a refresh token (`ghr_`), which cannot call the API")
                    .with_hint("use a fine-grained personal access token (`github_pat_`)"),
            );
            return out;
        }
        TokenKind::Installation => {
            let d = Diagnostic::new(
                if auth == Auth::Token {
                    crate::diag::Severity::Error
                } else {
                    crate::diag::Severity::Warning
                },
                Code::TokenInstallation,
                "the token is a GitHub App installation token (`ghs_`), which expires within an hour",
            );
            out.push(if auth == Auth::Token {
                d.with_hint("with `auth: token` the cluster keeps the token: use a fine-grained personal access token, or `auth: deploy-key`")
            } else {
                d.with_hint("fine for a one-off bootstrap; for anything repeated use a fine-grained personal access token")
            });
        }
        TokenKind::OAuth | TokenKind::UserToServer => out.push(
            Diagnostic::warning(
                Code::TokenOAuth,
                format!("the token is an {kind} (`{}`), not a personal access token", kind.prefix()),
            )
            .with_hint("a fine-grained personal access token (`github_pat_`) limited to this repository is safer"),
        ),
        TokenKind::Unknown => out.push(
            Diagnostic::warning(Code::TokenUnknownFormat, "the token does not look like a GitHub token")
                .with_hint("GitHub tokens start with `github_pat_` or `ghp_`; check that the right value was pasted"),
        ),
        _ => {}
    }
    if let Some(want) = kind.expected_len()
        && value.len() != want
    {
        out.push(
            Diagnostic::warning(
                Code::TokenLength,
                format!(
                    "the token is {} characters long; a {kind} is usually {want}",
                    value.len()
                ),
            )
            .with_hint("check that the whole token was pasted"),
        );
    }
    out
}

/// The docs' example token, one repeated character, a short repeated pattern, a counting run,
/// placeholder words, or otherwise far less varied than a random token.
fn is_placeholder(value: &str, body: &str) -> bool {
    if value == format!("ghp_{}", "x".repeat(32)) {
        return true;
    }
    let chars: Vec<char> = body.chars().filter(|&c| c != '_').collect();
    if chars.len() < 8 {
        return chars.len() < 2 || chars.iter().all(|&c| c == chars[0]);
    }
    let lower = body.to_ascii_lowercase();
    if [
        "xxxxx",
        "example",
        "placeholder",
        "changeme",
        "yourtoken",
        "your_token",
        "token_here",
        "redacted",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        return true;
    }
    // A short repeating unit (`abcabcabc...`).
    if (1..=4).any(|p| chars.len() > 2 * p && chars.iter().skip(p).zip(&chars).all(|(a, b)| a == b))
    {
        return true;
    }
    // Counting runs (`0123456789abcdef...`).
    let steps = chars
        .windows(2)
        .filter(|w| w[1] as u32 == w[0] as u32 + 1)
        .count();
    if steps * 10 >= (chars.len() - 1) * 7 {
        return true;
    }
    // Shannon entropy per character: random base62 text of this length scores above 4.
    let mut counts = std::collections::HashMap::new();
    for &c in &chars {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let n = chars.len() as f64;
    let entropy: f64 = counts
        .values()
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2()
        })
        .sum();
    entropy < 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSIC: &str = "ghp_R8vK2mQ9xLp4Tz7Wn3Bc6Hd1Jf5Gs0YaEuVi";
    const FINE: &str = "github_pat_11ABCDEFG0aZ9yX8wV7uT6_s5R4q3P2o1N0mL9kJ8iH7gF6eD5cB4aZ3yX2wV1uT0sR9qP8oN7mL6kJ5iQ";

    fn codes(v: &str, auth: Auth) -> Vec<Code> {
        check(v, auth).into_iter().map(|d| d.code).collect()
    }

    #[test]
    fn real_looking_tokens_pass() {
        assert_eq!(CLASSIC.len(), 40);
        assert_eq!(FINE.len(), 93);
        assert!(codes(CLASSIC, Auth::DeployKey).is_empty());
        assert!(codes(FINE, Auth::Token).is_empty());
        assert!(codes("3f2a9c4e5b6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f", Auth::DeployKey).is_empty());
    }

    #[test]
    fn placeholders_are_errors() {
        for v in [
            "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "github_pat_abcabcabcabcabcabcabcabc",
            "ghp_0123456789abcdefghijklmnopqrstuvwxyz",
            "github_pat_YOUR_TOKEN_HERE",
            "ghp_1212121212121233333333333311111111",
        ] {
            assert_eq!(
                codes(v, Auth::DeployKey),
                vec![Code::TokenPlaceholder],
                "{v}"
            );
        }
    }

    #[test]
    fn prefixes_decide_severity() {
        let ghs = "ghs_R8vK2mQ9xLp4Tz7Wn3Bc6Hd1Jf5Gs0YaEuVi";
        assert_eq!(
            check(ghs, Auth::DeployKey)[0].severity,
            crate::diag::Severity::Warning
        );
        assert_eq!(
            check(ghs, Auth::Token)[0].severity,
            crate::diag::Severity::Error
        );
        assert_eq!(
            codes("ghr_R8vK2mQ9xLp4Tz7Wn3Bc6Hd1Jf5Gs0YaEuVi", Auth::DeployKey),
            vec![Code::TokenRefresh]
        );
        assert_eq!(
            codes("gho_R8vK2mQ9xLp4Tz7Wn3Bc6Hd1Jf5Gs0YaEuVi", Auth::DeployKey),
            vec![Code::TokenOAuth]
        );
        assert_eq!(
            codes("ghp_R8vK2mQ9xLp4Tz7Wn3Bc6Hd1Jf5Gs0Ya", Auth::DeployKey),
            vec![Code::TokenLength]
        );
    }

    #[test]
    fn form_errors() {
        assert_eq!(
            codes(&format!("{CLASSIC}\n"), Auth::DeployKey),
            vec![Code::TokenWhitespace]
        );
        assert_eq!(
            codes("ghp_R8vK2mQ9-Lp4Tz7Wn3", Auth::DeployKey),
            vec![Code::TokenCharacters]
        );
        assert_eq!(
            codes(&format!("ghp_{}", "aB3".repeat(90)), Auth::DeployKey),
            vec![Code::TokenTooLong]
        );
    }

    #[test]
    fn debug_is_redacted() {
        let t = Token::new(CLASSIC);
        let shown = format!("{t:?}");
        assert!(!shown.contains(&CLASSIC[4..12]), "{shown}");
    }
}
