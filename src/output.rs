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
use crate::step::Step;

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

/// What clap has to say about the command line. Help and version are clap's own text and go out
/// as clap prints them. An error quotes the arguments as they were typed, and those are the
/// user's bytes: an escape sequence, a bidi control or a pasted token. So it is printed plain,
/// line by line through [`escape`] and [`redact`], with only `error:` in colour on a terminal.
pub fn command_line(err: &clap::Error) {
    if crate::cli::is_help_or_version(err) {
        let _ = err.print();
        return;
    }
    let color = stderr_color();
    let mut out = String::new();
    for line in err.render().ansi().to_string().lines() {
        let line = redact(&escape(line)).into_owned();
        match line.strip_prefix("error:") {
            Some(rest) if color => {
                let _ = write!(out, "\x1b[1;31merror\x1b[0m:{rest}");
            }
            _ => out.push_str(&line),
        }
        out.push('\n');
    }
    let _ = io::stderr().lock().write_all(out.as_bytes());
}

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
fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The Unicode bidi controls: text around them is shown in another order than it is stored.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
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
    color: bool,
}

/// Whether stderr gets colours: on a terminal, and never with `NO_COLOR`.
fn stderr_color() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && io::stderr().is_terminal()
}

/// Sets up the `-v`/`-vv` log: the `tracing` events of homelab-flux at `-v` (debug) and, at
/// `-vv`, its trace events and the debug events of kube-rs, hyper and reqwest (whose `log`
/// records are bridged to `tracing`). Every line goes through [`escape`] and [`redact`] like
/// any other line on stderr. Without `-v` (or with `--quiet`) nothing is installed, so a
/// quiet run pays nothing for it.
pub fn init_logging(quiet: bool, verbose: u8) {
    use tracing::level_filters::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    if quiet || verbose == 0 {
        return;
    }
    let targets = if verbose == 1 {
        tracing_subscriber::filter::Targets::new().with_target("homelab_flux", LevelFilter::DEBUG)
    } else {
        tracing_subscriber::filter::Targets::new()
            .with_target("homelab_flux", LevelFilter::TRACE)
            .with_default(LevelFilter::DEBUG)
    };
    let max = if verbose == 1 {
        tracing_log::log::LevelFilter::Off
    } else {
        tracing_log::log::LevelFilter::Debug
    };
    let subscriber = tracing_subscriber::registry()
        .with(LogLines {
            color: stderr_color(),
        })
        .with(targets);
    // Both fail only when something was installed already (a second call): nothing to do.
    let _ = tracing::subscriber::set_global_default(subscriber);
    let _ = tracing_log::LogTracer::builder().with_max_level(max).init();
}

/// True once the command has returned: see [`close_log`]. A log line is written while holding
/// it, so once `close_log` returns no line is being written and none will be.
static LOG_CLOSED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

/// Ends the `-v`/`-vv` log before the final line is printed. Connections that a finished
/// command leaves to background threads are closed a moment later (rustls's `CloseNotify`, a
/// pool's "stream closed"); their events would otherwise land after the error line, which is
/// meant to be the last thing a failed run prints.
pub fn close_log() {
    *LOG_CLOSED.lock().unwrap_or_else(|e| e.into_inner()) = true;
}

/// Writes each `tracing` event as one stderr line: `debug: message` for homelab-flux's own,
/// `debug: target: message field=value` for a library's.
struct LogLines {
    color: bool,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        use tracing_log::NormalizeEvent as _;
        let closed = LOG_CLOSED.lock().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return;
        }
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut fields = LogFields::default();
        event.record(&mut fields);
        let mut text = String::new();
        if !meta.target().starts_with("homelab_flux") {
            let _ = write!(text, "{}: ", meta.target());
        }
        text.push_str(&fields.line());
        let level = meta.level().as_str().to_ascii_lowercase();
        let tag = if self.color {
            format!("\x1b[2m{level}\x1b[0m")
        } else {
            level
        };
        let _ = writeln!(io::stderr().lock(), "{tag}: {}", redact(&escape(&text)));
    }
}

/// An event's message, then its other fields as `name=value` (the `log` bridge's own fields
/// left out: the target says where the line comes from).
#[derive(Default)]
struct LogFields {
    message: String,
    rest: String,
}

impl LogFields {
    fn line(self) -> String {
        match (self.message.is_empty(), self.rest.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.rest,
            (false, false) => format!("{} {}", self.message, self.rest),
        }
    }

    fn push(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Display) {
        let name = field.name();
        if name == "message" {
            let _ = write!(self.message, "{value}");
        } else if !name.starts_with("log.") {
            let sep = if self.rest.is_empty() { "" } else { " " };
            let _ = write!(self.rest, "{sep}{name}={value}");
        }
    }
}

impl tracing::field::Visit for LogFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.push(field, &value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.push(field, &format_args!("{value:?}"));
    }
}

impl Ui {
    /// Settings from the command line and the environment (`NO_COLOR`).
    pub fn new(quiet: bool) -> Self {
        Ui {
            quiet,
            color: stderr_color(),
        }
    }

    /// Writes a result to stdout as it is (exported YAML, completions, the man page: text the
    /// tool made from checked values). See [`Ui::out_lines`] and [`Ui::out_json`] for the rest.
    pub fn out(&self, text: &str) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        stdout.write_all(redact(text).as_bytes())?;
        stdout.flush()
    }

    /// Writes lines of text to stdout, every line escaped (see [`escape`]).
    pub fn out_lines(&self, lines: &[String]) -> io::Result<()> {
        let mut text = String::new();
        for line in lines {
            text.push_str(&escape(line));
            text.push('\n');
        }
        self.out(&text)
    }

    /// Writes a value to stdout as one pretty JSON document, terminal-safe (see [`json_safe`]).
    pub fn out_json(&self, value: &impl Serialize) -> io::Result<()> {
        let mut json = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
        json.push('\n');
        self.out(&json_safe(&json))
    }

    /// A step line on stderr (hidden by `--quiet`).
    pub fn step(&self, text: &str) {
        if !self.quiet {
            self.err_line(text);
        }
    }

    /// A line that is printed even with `--quiet`, because it says where the token goes (a
    /// non-default GitHub API base).
    pub fn notice(&self, text: &str) {
        let tag = self.paint("1;36", "note");
        self.err_tagged(&tag, text);
    }

    /// A live progress line: rewritten in place on a terminal, a new line on each change
    /// otherwise (hidden by `--quiet`).
    pub fn progress(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.color {
            let _ = write!(io::stderr().lock(), "\r\x1b[2K{}", redact(&escape(text)));
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

    /// An error and its causes on one line, `error: what: why: why`, as anyhow's `{:#}`
    /// prints a chain; shown even with `--quiet`.
    pub fn error_chain(&self, err: &(dyn std::error::Error + 'static)) {
        let mut text = err.to_string();
        let mut next = err.source();
        while let Some(e) = next {
            text.push_str(": ");
            text.push_str(&e.to_string());
            next = e.source();
        }
        self.error(&text);
    }

    /// An error line: `error: ...`, shown even with `--quiet`.
    pub fn error(&self, text: &str) {
        let tag = self.paint("1;31", "error");
        self.err_tagged(&tag, text);
    }

    /// One line on stderr: the text escaped (see [`escape`]) and redacted. Every caller's text
    /// is one line; a newline inside it comes from a value and is shown escaped.
    fn err_line(&self, text: &str) {
        // A closed stderr is not worth failing over.
        let _ = writeln!(io::stderr().lock(), "{}", redact(&escape(text)));
    }

    /// [`Ui::err_line`] after a tag that may carry colours of our own.
    fn err_tagged(&self, tag: &str, text: &str) {
        let _ = writeln!(io::stderr().lock(), "{tag}: {}", redact(&escape(text)));
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

/// Renders the step events of `bootstrap`: step lines with timings on stderr, or one JSON
/// object per line on stdout (`--format json`). Progress (the wait's condition, a held Lease) is
/// a live line on a terminal.
pub struct Steps<'a> {
    ui: &'a Ui,
    format: Format,
    dry_run: bool,
    last: std::time::Instant,
    shown: String,
}

impl<'a> Steps<'a> {
    pub fn new(ui: &'a Ui, format: Format, dry_run: bool) -> Steps<'a> {
        Steps {
            ui,
            format,
            dry_run,
            last: std::time::Instant::now(),
            shown: String::new(),
        }
    }

    /// Shows one event. Progress that repeats the last one shown is skipped.
    pub fn emit(&mut self, step: Step) {
        let lines = step_lines(&step, self.dry_run);
        if step.is_progress() {
            let text = lines.concat();
            if text == self.shown {
                return;
            }
            self.shown = text;
        } else if !self.shown.is_empty() {
            self.progress_done();
        }
        let timed = !step.is_progress()
            && !matches!(step, Step::ManifestsRead { .. } | Step::TakeoverNote { .. });
        let ms = self.last.elapsed().as_millis();
        if timed {
            self.last = std::time::Instant::now();
        }
        match self.format {
            Format::Json => {
                #[derive(Serialize)]
                struct Line<'s> {
                    #[serde(flatten)]
                    step: &'s Step,
                    dry_run: bool,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    ms: Option<u128>,
                }
                let line = Line {
                    step: &step,
                    dry_run: self.dry_run,
                    ms: timed.then_some(ms),
                };
                if let Ok(mut json) = serde_json::to_string(&line) {
                    json.push('\n');
                    let _ = self.ui.out(&json_safe(&json));
                }
            }
            Format::Text if step.is_progress() => self.ui.progress(&lines[0]),
            Format::Text => {
                let mut lines = lines.into_iter();
                if let Some(first) = lines.next() {
                    if timed {
                        self.ui.step(&format!("- {first} ({ms} ms)"));
                    } else {
                        self.ui.step(&first);
                    }
                }
                for line in lines {
                    self.ui.step(&line);
                }
            }
        }
    }

    /// Ends a live progress line.
    pub fn progress_done(&mut self) {
        if !self.shown.is_empty() {
            self.shown.clear();
            self.ui.progress_done();
        }
    }
}

/// The text of an event: its line, then (in a dry run) one line per field that would change.
pub fn step_lines(step: &Step, dry_run: bool) -> Vec<String> {
    use crate::plan::Change;
    use crate::step::short;
    let prefix = if dry_run { "(dry run) " } else { "" };
    let would = |done: &str| {
        if dry_run {
            format!("would be {done}")
        } else {
            done.to_string()
        }
    };
    let one = |s: String| vec![s];
    match step {
        Step::Checked { repo } => one(format!("checked the configuration and `{repo}` on GitHub")),
        Step::Connected {
            context,
            kubernetes,
        } => one(format!(
            "connected to `{context}` (Kubernetes {kubernetes})"
        )),
        Step::ManifestsRead {
            source,
            sha256,
            pinned,
        } => one(format!(
            "- the Flux manifests `{source}` have SHA-256 {sha256}{}",
            if *pinned { " (as pinned)" } else { "" }
        )),
        Step::Installed { source, objects } => one(format!(
            "{prefix}installed Flux from `{source}` ({objects} objects)"
        )),
        Step::Applied { kind, name, change } => {
            let verb = match change {
                Change::Unchanged => "unchanged".to_string(),
                Change::Create => would("created"),
                Change::Update(_) => would("updated"),
            };
            let mut out = vec![format!("{prefix}{kind} `{name}` {verb}")];
            if let (true, Change::Update(fields)) = (dry_run, change) {
                for f in fields {
                    out.push(format!(
                        "    {}: {} → {}",
                        f.field,
                        f.old.as_deref().unwrap_or("(none)"),
                        f.new
                    ));
                }
            }
            out
        }
        Step::SecretWithNewKey { name } => one(format!(
            "{prefix}Secret `{name}` would be written with the new deploy key"
        )),
        Step::SecretReplaced { name } => {
            one(format!("{prefix}Secret `{name}` deleted, to be replaced"))
        }
        Step::TakeoverNote { name, what } => one(format!(
            "note: the Kustomization `{name}` has `prune: true`: Flux deletes what it applied from the old {} that the new one does not hold",
            match what {
                crate::plan::Takeover::Repository => "repository",
                crate::plan::Takeover::Path => "path",
            }
        )),
        Step::LeaseHeld { name, holder } => one(format!(
            "  waiting for another bootstrap of this cluster to finish (Lease `{name}` held by `{holder}`)"
        )),
        Step::LeaseFree => one("another bootstrap of this cluster finished; going on".to_string()),
        Step::KeyKept { fingerprint } => one(format!(
            "the deploy key in the cluster is still registered on GitHub ({fingerprint})"
        )),
        Step::KeyToCreate { title } => one(format!(
            "{prefix}would create the read-only deploy key `{title}` on GitHub"
        )),
        Step::KeyCreated { title, fingerprint } => one(format!(
            "created the read-only deploy key `{title}` ({fingerprint})"
        )),
        Step::KeyProved { branch, commit } => one(format!(
            "proved the deploy key over SSH: `{branch}` is at {}",
            short(commit)
        )),
        Step::BranchHead {
            branch,
            commit,
            token,
        } => one(format!(
            "{}`{branch}` is at {}",
            if *token { "branch " } else { "" },
            short(commit)
        )),
        Step::StaleKeyDeleted { title, id } => {
            one(format!("deleted the stale deploy key `{title}` (id {id})"))
        }
        Step::StaleKeyLeft { title, id, reason } => one(format!(
            "could not delete the stale deploy key `{title}` (id {id}): {reason}; the run goes on"
        )),
        Step::StaleKeyToDelete { title, id } => one(format!(
            "{prefix}would delete the stale deploy key `{title}` (id {id})"
        )),
        Step::Synced { commit } => one(format!("Flux is synced at {}", short(commit))),
        Step::Waiting {
            kind,
            name,
            condition,
        } => one(match condition {
            Some(c) => format!(
                "  {kind} `{name}`: {} {}: {}",
                c.status, c.reason, c.message
            ),
            None => format!("  {kind} `{name}`: waiting for the controller"),
        }),
        Step::Ready {
            kind,
            name,
            branch,
            commit,
            moved_from,
        } => one(format!(
            "{kind} `{name}` is Ready at {}{}",
            short(commit),
            match moved_from {
                Some(proven) => format!(
                    " (`{branch}` moved on from {} while bootstrap waited)",
                    short(proven)
                ),
                None => String::new(),
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_step_in_json_names_the_condition_fields() {
        let step = Step::Waiting {
            kind: "GitRepository",
            name: "flux-system".to_string(),
            condition: Some(crate::flux::Condition {
                type_: "Ready".to_string(),
                status: "False".to_string(),
                reason: "GitOperationFailed".to_string(),
                message: "auth failed".to_string(),
            }),
        };
        assert_eq!(
            serde_json::to_value(&step).unwrap(),
            serde_json::json!({
                "step": "waiting", "kind": "GitRepository", "name": "flux-system",
                "condition": {"type": "Ready", "status": "False", "reason": "GitOperationFailed", "message": "auth failed"},
            })
        );
        assert_eq!(
            step_lines(&step, false),
            ["  GitRepository `flux-system`: False GitOperationFailed: auth failed"]
        );
    }

    #[test]
    fn steps_read_as_before_and_a_dry_run_shows_each_field() {
        use crate::plan::{Change, FieldChange};
        let applied = |change| Step::Applied {
            kind: "GitRepository",
            name: "flux-system/flux-system".to_string(),
            change,
        };
        assert_eq!(
            step_lines(&applied(Change::Unchanged), false),
            ["GitRepository `flux-system/flux-system` unchanged"]
        );
        assert_eq!(
            step_lines(&applied(Change::Create), true),
            ["(dry run) GitRepository `flux-system/flux-system` would be created"]
        );
        let branch = Change::Update(vec![FieldChange {
            field: "spec.ref.branch".to_string(),
            old: Some("main".to_string()),
            new: "dev".to_string(),
        }]);
        assert_eq!(
            step_lines(&applied(branch.clone()), true),
            [
                "(dry run) GitRepository `flux-system/flux-system` would be updated",
                "    spec.ref.branch: main → dev",
            ]
        );
        assert_eq!(
            step_lines(&applied(branch), false),
            ["GitRepository `flux-system/flux-system` updated"]
        );
        let ready = Step::Ready {
            kind: "Kustomization",
            name: "flux-system/flux-system".to_string(),
            branch: "main".to_string(),
            commit: "bbbbbbbbbbbbbbbb".to_string(),
            moved_from: Some("aaaaaaaaaaaaaaaa".to_string()),
        };
        assert_eq!(
            step_lines(&ready, false),
            [
                "Kustomization `flux-system/flux-system` is Ready at bbbbbbbbbbbb (`main` moved on from aaaaaaaaaaaa while bootstrap waited)"
            ]
        );
        let json = serde_json::to_value(applied(Change::Unchanged)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"step": "applied", "kind": "GitRepository", "name": "flux-system/flux-system", "change": "unchanged"})
        );
    }

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
