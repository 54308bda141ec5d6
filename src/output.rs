//! The one module that writes to the terminal.
//!
//! Results go to stdout (exported YAML, JSON reports, completions); everything meant for the
//! person (diagnostics, step lines, logs, errors) goes to stderr. Colours only on a terminal and
//! never with `NO_COLOR`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};

use serde::Serialize;

use crate::config::Source;
use crate::diag::{Diagnostic, Report, Severity, Summary};

/// Values that must never be printed, whatever prints them (the token, once it is read).
static HIDDEN: Mutex<Vec<SecretString>> = Mutex::new(Vec::new());

/// Registers a value that every later line of output will have masked.
pub fn hide(secret: &SecretString) {
    if let Ok(mut hidden) = HIDDEN.lock() {
        hidden.push(secret.clone());
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
    for prefix in ["github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        for (i, _) in text.match_indices(prefix) {
            let end = text[i + prefix.len()..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
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
            redact(&message)
        );
    }));
}

/// Output format of `validate` and `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// How much to say, and whether stderr gets colours.
#[derive(Clone, Debug)]
pub struct Ui {
    quiet: bool,
    verbose: u8,
    color: bool,
}

impl Ui {
    /// Settings from the command line and the environment (`NO_COLOR`).
    pub fn new(quiet: bool, verbose: u8) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Ui {
            quiet,
            verbose,
            color: !no_color && io::stderr().is_terminal(),
        }
    }

    /// Writes a result to stdout.
    pub fn out(&self, text: &str) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        stdout.write_all(redact(text).as_bytes())?;
        stdout.flush()
    }

    /// A step line on stderr (hidden by `--quiet`).
    pub fn step(&self, text: &str) {
        if !self.quiet {
            self.err_line(text);
        }
    }

    /// A live progress line: rewritten in place on a terminal, a new line on each change
    /// otherwise (hidden by `--quiet`).
    pub fn progress(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.color {
            let _ = write!(io::stderr().lock(), "\r\x1b[2K{}", redact(text));
        } else {
            self.err_line(text);
        }
    }

    /// Ends a live progress line.
    pub fn progress_done(&self) {
        if self.color && !self.quiet {
            let _ = write!(io::stderr().lock(), "\r\x1b[2K");
        }
    }

    /// A log line for `-v` (level 1) or `-vv` (level 2). Callers never pass the token.
    pub fn log(&self, level: u8, text: &str) {
        if self.verbose >= level && !self.quiet {
            let tag = self.paint("2", if level == 1 { "debug" } else { "trace" });
            self.err_line(&format!("{tag}: {text}"));
        }
    }

    /// An error line: `error: ...`, shown even with `--quiet`.
    pub fn error(&self, text: &str) {
        let tag = self.paint("1;31", "error");
        self.err_line(&format!("{tag}: {text}"));
    }

    fn err_line(&self, text: &str) {
        // A closed stderr is not worth failing over.
        let _ = writeln!(io::stderr().lock(), "{}", redact(text));
    }

    fn paint(&self, sgr: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Renders a report: text on stderr like a compiler, or one JSON document on stdout.
    pub fn report(
        &self,
        report: &Report,
        sources: &[Source],
        format: Format,
        subject: &str,
    ) -> io::Result<()> {
        match format {
            Format::Json => self.out(&report_json(report)),
            Format::Text => {
                let mut text = String::new();
                for d in report.sorted() {
                    if self.quiet && d.severity != Severity::Error {
                        continue;
                    }
                    text.push_str(&self.render(d, sources));
                    text.push('\n');
                }
                let s = report.summary();
                if !self.quiet || s.errors > 0 {
                    text.push_str(&self.summary_line(s, subject));
                }
                let mut stderr = io::stderr().lock();
                stderr.write_all(redact(&text).as_bytes())
            }
        }
    }

    fn summary_line(&self, s: Summary, subject: &str) -> String {
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let mut parts = Vec::new();
        if s.errors > 0 {
            parts.push(count(s.errors, "error"));
        }
        if s.warnings > 0 {
            parts.push(count(s.warnings, "warning"));
        }
        if s.notes > 0 {
            parts.push(count(s.notes, "note"));
        }
        if s.errors > 0 {
            format!(
                "{}: {subject} is not valid: {}\n",
                self.paint("1;31", "error"),
                parts.join(", ")
            )
        } else if parts.is_empty() {
            format!("{}: {subject} is valid\n", self.paint("1;32", "ok"))
        } else {
            format!(
                "{}: {subject} is valid ({})\n",
                self.paint("1;32", "ok"),
                parts.join(", ")
            )
        }
    }

    /// One diagnostic, compiler style:
    ///
    /// ```text
    /// error[HF007]: unknown key `brnch`
    ///   --> config/flux.yaml:2:1
    ///    |
    ///  2 | brnch: main
    ///    | ^^^^^
    ///    = hint: did you mean `branch`?
    /// ```
    pub fn render(&self, d: &Diagnostic, sources: &[Source]) -> String {
        let (sgr, word) = match d.severity {
            Severity::Error => ("1;31", "error"),
            Severity::Warning => ("1;33", "warning"),
            Severity::Note => ("1;36", "note"),
        };
        let mut s = format!(
            "{}: {}\n",
            self.paint(sgr, &format!("{word}[{}]", d.code)),
            d.message
        );
        let pos = d.location.as_ref().and_then(|l| l.position);
        let line_text = match (&d.location, pos) {
            (Some(loc), Some(p)) => sources
                .iter()
                .find(|src| src.name() == loc.file)
                .and_then(|src| src.display_line(p.line)),
            _ => None,
        };
        let gutter = pos.map_or(1, |p| p.line.to_string().len());
        let pad = " ".repeat(gutter);
        let bar = self.paint("1;34", "|");
        if let Some(loc) = &d.location {
            let arrow = self.paint("1;34", "-->");
            match pos {
                Some(p) => {
                    let _ = writeln!(s, "{pad}{arrow} {}:{}:{}", loc.file, p.line, p.column);
                }
                None => {
                    let _ = writeln!(s, "{pad}{arrow} {}", loc.file);
                }
            }
        }
        if let (Some(p), Some(text)) = (pos, line_text) {
            let number = self.paint("1;34", &p.line.to_string());
            let _ = writeln!(s, "{pad} {bar}");
            let _ = writeln!(s, "{number} {bar} {text}");
            let available = text.chars().count().saturating_sub(p.column - 1).max(1);
            let marker = "^".repeat(p.width.clamp(1, available));
            let _ = writeln!(
                s,
                "{pad} {bar} {}{}",
                " ".repeat(p.column - 1),
                self.paint(sgr, &marker)
            );
        }
        if let Some(hint) = &d.hint {
            let _ = writeln!(s, "{pad} {} hint: {hint}", self.paint("1;34", "="));
        }
        s
    }
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
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    severity: Severity,
    code: &'a str,
    name: &'a str,
    message: &'a str,
    file: Option<&'a str>,
    line: Option<usize>,
    column: Option<usize>,
    hint: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    diagnostics: Vec<JsonDiagnostic<'a>>,
    summary: Summary,
}

/// The report as one JSON document (with a trailing newline).
pub fn report_json(report: &Report) -> String {
    let diagnostics = report
        .sorted()
        .into_iter()
        .map(|d| {
            let pos = d.location.as_ref().and_then(|l| l.position);
            JsonDiagnostic {
                severity: d.severity,
                code: d.code.as_str(),
                name: d.code.name(),
                message: &d.message,
                file: d.location.as_ref().map(|l| l.file.as_str()),
                line: pos.map(|p| p.line),
                column: pos.map(|p| p.column),
                hint: d.hint.as_deref(),
            }
        })
        .collect();
    let doc = JsonReport {
        diagnostics,
        summary: report.summary(),
    };
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
