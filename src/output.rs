//! The one module that writes to the terminal.
//!
//! Results go to stdout (exported YAML, JSON reports, completions); everything meant for the
//! person (diagnostics, step lines, logs, errors) goes to stderr. Colours only on a terminal and
//! never with `NO_COLOR`.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};

use serde::Serialize;

use crate::config::Source;
use crate::diag::{Diagnostic, Report, Severity, Summary};

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
        stdout.write_all(text.as_bytes())?;
        stdout.flush()
    }

    /// A step line on stderr (hidden by `--quiet`).
    pub fn step(&self, text: &str) {
        if !self.quiet {
            self.err_line(text);
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
        let _ = writeln!(io::stderr().lock(), "{text}");
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
                stderr.write_all(text.as_bytes())
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
