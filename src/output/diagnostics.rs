//! Diagnostics as a compiler shows them (text on stderr) or as one JSON document.

use std::borrow::Cow;
use std::io::{self, Write};

use serde::Serialize;

use super::{Format, Ui, redact};
use crate::config::Source;
use crate::diag::{Diagnostic, Report, Severity, Summary};
use crate::text::{escape, json_safe, push_escaped};

/// About how many characters of a source line are shown around the reported column.
pub const LINE_WINDOW: usize = 120;
/// Messages and hints longer than this (a value echoed from a huge line) are cut in the middle.
const MAX_MESSAGE: usize = 240;

/// A long message cut to its start and end, so a 60 KB value echoed in it stays readable.
fn clip(text: &str) -> Cow<'_, str> {
    let count = text.chars().count();
    if count <= MAX_MESSAGE {
        return Cow::Borrowed(text);
    }
    let head: String = text.chars().take(MAX_MESSAGE - 60).collect();
    let tail: String = text.chars().skip(count - 59).collect();
    Cow::Owned(format!("{head}…{tail}"))
}

/// A source line as shown under a diagnostic: at most about [`LINE_WINDOW`] characters around
/// the column (`…` where it is cut), control characters escaped. Returns the text, and the
/// 0-based display column and width of the marker.
fn source_window(line: &str, column: usize, width: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    let at = column.saturating_sub(1).min(chars.len());
    let (start, end) = if chars.len() <= LINE_WINDOW {
        (0, chars.len())
    } else {
        let start = at.saturating_sub(LINE_WINDOW / 3);
        let end = (start + LINE_WINDOW).min(chars.len());
        (end.saturating_sub(LINE_WINDOW).min(start), end)
    };
    let mut shown = String::new();
    if start > 0 {
        shown.push('…');
    }
    let mut marker_start = None;
    let mut marker_end = None;
    for (i, &c) in chars.iter().enumerate().take(end).skip(start) {
        if i == at {
            marker_start = Some(shown.chars().count());
        }
        if i == at + width.max(1) {
            marker_end = Some(shown.chars().count());
        }
        push_escaped(&mut shown, c);
    }
    let text_end = shown.chars().count();
    if end < chars.len() {
        shown.push('…');
    }
    let marker_start = marker_start.unwrap_or(text_end);
    let marker_width = marker_end.unwrap_or(text_end).saturating_sub(marker_start);
    (shown, marker_start, marker_width.max(1))
}

impl Ui {
    /// Renders a report: text on stderr like a compiler, or one JSON document on stdout.
    pub fn report(
        &self,
        report: &Report,
        sources: &[Source],
        format: Format,
        subject: &str,
    ) -> io::Result<()> {
        self.render_report(report, sources, format, subject, true)
    }

    /// Renders the findings of checks that could not all run: without the line that would call
    /// the subject valid (the error that follows says what could not be checked).
    pub fn report_unfinished(
        &self,
        report: &Report,
        sources: &[Source],
        format: Format,
        subject: &str,
    ) -> io::Result<()> {
        self.render_report(report, sources, format, subject, false)
    }

    fn render_report(
        &self,
        report: &Report,
        sources: &[Source],
        format: Format,
        subject: &str,
        finished: bool,
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
                if (!self.quiet && finished) || s.errors > 0 {
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

    /// One diagnostic, compiler style, rendered by annotate-snippets (what rustc and cargo
    /// render with):
    ///
    /// ```text
    /// error[HF007]: unknown key `brnch`
    ///  --> config/flux.yaml:2:1
    ///   |
    /// 2 | brnch: main
    ///   | ^^^^^
    ///   |
    ///   = hint: did you mean `branch`?
    /// ```
    ///
    /// The source line is ours, not the library's: `source_window` cuts it to about
    /// [`LINE_WINDOW`] characters and escapes it, and annotate-snippets is given only that (with a
    /// width it never needs to cut at) and the marker's byte span in it. Message, file name and
    /// hint are clipped and escaped here too; the caller redacts the finished text.
    pub fn render(&self, d: &Diagnostic, sources: &[Source]) -> String {
        use annotate_snippets::{AnnotationKind, Group, Level, Origin, Renderer, Snippet};
        let level = match d.severity {
            Severity::Error => Level::ERROR,
            Severity::Warning => Level::WARNING,
            Severity::Note => Level::NOTE,
        };
        let title = level
            .clone()
            .primary_title(escape(&clip(&d.message)).into_owned())
            .id(d.code.to_string());
        let mut group = Group::with_title(title);
        let pos = d.location.as_ref().and_then(|l| l.position);
        // The column annotate-snippets prints, when it is not the diagnostic's (see below).
        let mut library_column = None;
        if let Some(loc) = &d.location {
            let file = escape(&loc.file).into_owned();
            let line_text = pos.and_then(|p| {
                sources
                    .iter()
                    .find(|src| src.name() == loc.file)
                    .and_then(|src| src.display_line(p.line))
            });
            group = match (pos, line_text) {
                (Some(p), Some(text)) => {
                    let (shown, at, width) = source_window(&text, p.column, p.width);
                    // annotate-snippets replaces indentation of over 20 columns by `...`, at any
                    // width. A zero-width joiner first makes the line start with no whitespace
                    // for that count, and it drops the joiner when it prints the line.
                    let (shown, at) = if shown.starts_with(char::is_whitespace) {
                        (format!("\u{200d}{shown}"), at + 1)
                    } else {
                        (shown, at)
                    };
                    let span = byte_offset(&shown, at)..byte_offset(&shown, at + width);
                    if at + 1 != p.column {
                        library_column = Some((p.line, at + 1, p.column));
                    }
                    group.element(
                        Snippet::source(shown)
                            .line_start(p.line)
                            .path(file)
                            .annotation(AnnotationKind::Primary.span(span)),
                    )
                }
                (Some(p), None) => {
                    group.element(Origin::path(file).line(p.line).char_column(p.column))
                }
                (None, _) => group.element(Origin::path(file)),
            };
        }
        if let Some(hint) = &d.hint {
            let hint = escape(&clip(hint)).into_owned();
            group = group.element(Level::HELP.with_name(Some("hint")).message(hint));
        }
        let renderer = if self.color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let mut s = renderer.term_width(RENDER_WIDTH).render(&[group]);
        if let Some((line, shown, column)) = library_column {
            fix_column(&mut s, line, shown, column);
        }
        s.push('\n');
        s
    }
}

/// Wide enough that annotate-snippets never cuts or re-centres a source line itself: the window
/// is at most [`LINE_WINDOW`] + 2 characters, each shown as at most an 8-character escape
/// (`\u{2069}`) or 2 columns, plus the gutter.
const RENDER_WIDTH: usize = 16 * LINE_WINDOW + 64;

/// The byte offset of the `chars`-th character of `text` (its length past the end).
fn byte_offset(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i)
}

/// annotate-snippets prints the column of the marker in the text it was given, which for a
/// window of a long line or a line with escapes before the marker is not the column in the
/// file. The `-->` line (the one after the title, which is one line: its text is escaped) then
/// gets the file's column back.
fn fix_column(rendered: &mut String, line: usize, shown: usize, column: usize) {
    let Some(title_end) = rendered.find('\n') else {
        return;
    };
    let origin_end = rendered[title_end + 1..]
        .find('\n')
        .map_or(rendered.len(), |i| title_end + 1 + i);
    let wrong = format!(":{line}:{shown}");
    if let Some(i) = rendered[title_end..origin_end].rfind(&wrong) {
        let at = title_end + i;
        rendered.replace_range(at..at + wrong.len(), &format!(":{line}:{column}"));
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
    json_safe(&s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_shown_around_the_column() {
        let line = format!("repo: {}X{}", "a".repeat(30_000), "b".repeat(30_000));
        let (shown, at, width) = source_window(&line, 30_007, 1);
        assert!(shown.chars().count() <= LINE_WINDOW + 2, "{}", shown.len());
        assert!(shown.starts_with('…') && shown.ends_with('…'));
        assert_eq!(shown.chars().nth(at), Some('X'));
        assert_eq!(width, 1);
        let (shown, at, width) = source_window("k: \x1b[2Jv", 4, 5);
        assert_eq!(shown, "k: \\u{1b}[2Jv");
        assert_eq!((at, width), (3, 10), "the marker covers the escape");
        assert_eq!(source_window("short", 9, 3), ("short".into(), 5, 1));
    }

    /// annotate-snippets places the marker by display width and prints the column of the text it
    /// was given; the marker must sit under the value after wide and multi-byte characters and
    /// an escape, and the `-->` line must keep the file's column.
    #[test]
    fn the_marker_sits_under_the_value_after_wide_characters_and_escapes() {
        use crate::diag::{Code, Diagnostic, Position};
        let source = Source::new("config/flux.yaml", "repo: x\nk: 日本é\u{7} bad\n");
        let position = Position {
            line: 2,
            column: 9,
            width: 3,
        };
        let d = Diagnostic::error(Code::UnknownKey, "unknown key `bad`")
            .at("config/flux.yaml", position)
            .with_hint("did you mean `branch`?");
        let plain = Ui {
            quiet: false,
            color: false,
        };
        let text = plain.render(&d, std::slice::from_ref(&source));
        // `k: ` 3 columns, `日本` 4, `é` 1, the escape `\u{7}` 5, a space 1: 14 columns.
        assert_eq!(
            text,
            "error[HF007]: unknown key `bad`\n \
             --> config/flux.yaml:2:9\n  \
             |\n\
             2 | k: 日本é\\u{7} bad\n  \
             |               ^^^\n  \
             |\n  \
             = hint: did you mean `branch`?\n"
        );
        // In colour the same text, column included, between the escape sequences.
        let styled = Ui {
            quiet: false,
            color: true,
        }
        .render(&d, std::slice::from_ref(&source));
        assert_ne!(styled, text);
        assert_eq!(strip_sgr(&styled), text);
    }

    /// annotate-snippets would show a deep indentation as `...`; the line is shown whole.
    #[test]
    fn a_deeply_indented_line_is_shown_whole() {
        use crate::diag::{Code, Diagnostic, Position};
        let indent = " ".repeat(32);
        let source = Source::new("f.yaml", format!("repo: x\n{indent}branch: main\n"));
        let position = Position {
            line: 2,
            column: 39,
            width: 1,
        };
        let d = Diagnostic::error(Code::YamlSyntax, "invalid YAML").at("f.yaml", position);
        let ui = Ui {
            quiet: false,
            color: false,
        };
        assert_eq!(
            ui.render(&d, std::slice::from_ref(&source)),
            format!(
                "error[HF001]: invalid YAML\n --> f.yaml:2:39\n  |\n2 | {indent}branch: main\n  | {}^\n",
                " ".repeat(38)
            )
        );
    }

    /// A file without a position, and a position without a source line, keep the file's name
    /// and column.
    #[test]
    fn a_file_without_a_source_line_is_named_with_its_position() {
        use crate::diag::{Code, Diagnostic, Position};
        let ui = Ui {
            quiet: false,
            color: false,
        };
        let d = Diagnostic::warning(Code::EmptyFile, "the file is empty").in_file("f\x1b.yaml");
        assert_eq!(
            ui.render(&d, &[]),
            "warning[HF004]: the file is empty\n--> f\\u{1b}.yaml\n"
        );
        let position = Position {
            line: 3,
            column: 60_009,
            width: 1,
        };
        let d = Diagnostic::note(Code::EmptyFile, "gone").at("f.yaml", position);
        assert_eq!(
            ui.render(&d, &[]),
            "note[HF004]: gone\n--> f.yaml:3:60009\n"
        );
    }

    /// The text without SGR colour sequences.
    fn strip_sgr(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("\x1b[") {
            out.push_str(&rest[..i]);
            let tail = &rest[i + 2..];
            let end = tail.find('m').map_or(tail.len(), |j| j + 1);
            rest = &tail[end..];
        }
        out.push_str(rest);
        out
    }
}
