//! The one module that writes to the terminal.
//!
//! Results go to stdout (exported YAML, JSON reports, completions); everything meant for the
//! person (diagnostics, step lines, logs, errors) goes to stderr. Colours only on a terminal and
//! never with `NO_COLOR`.
//!
//! Every line passes through [`redact`] and [`escape`]. The parts: `redact.rs` (masking
//! secrets, the panic hook), `log.rs` (the `-v` log), `diagnostics.rs` (findings, text or JSON)
//! and `steps.rs` (the events of `bootstrap`).

mod diagnostics;
mod log;
mod redact;
mod steps;

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};

use serde::Serialize;

use crate::text::{escape, json_safe};
pub use diagnostics::{LINE_WINDOW, report_json};
pub use log::{close_log, init_logging};
pub use redact::{hide, install_panic_hook, redact};
pub use steps::{Steps, step_lines};

/// True when clap has help or a version to print rather than an error.
pub fn is_help_or_version(err: &clap::Error) -> bool {
    use clap::error::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

/// What clap has to say about the command line. Help and version are clap's own text and go out
/// as clap prints them. An error quotes the arguments as they were typed, and those are the
/// user's bytes: an escape sequence, a bidi control or a pasted token. So it is printed plain,
/// line by line through [`escape`] and [`redact`], with only `error:` in colour on a terminal.
pub fn command_line(err: &clap::Error) {
    if is_help_or_version(err) {
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

    /// True when stdin and stderr are terminals: a question can be asked and answered.
    pub fn can_ask(&self) -> bool {
        io::stdin().is_terminal() && io::stderr().is_terminal()
    }

    /// Asks a yes/no question on stderr and reads the answer from stdin; only `y` or `yes`
    /// is a yes (the default is no).
    pub fn confirm(&self, question: &str) -> io::Result<bool> {
        {
            let mut err = io::stderr().lock();
            write!(err, "{} [y/N] ", redact(&escape(question)))?;
            err.flush()?;
        }
        let mut answer = String::new();
        io::stdin().read_line(&mut answer)?;
        Ok(matches!(
            answer.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
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

    /// An error and its causes on one line (see [`crate::chain::line`]); shown even with
    /// `--quiet`.
    pub fn error_chain(&self, err: &(dyn std::error::Error + 'static)) {
        self.error(&crate::chain::line(err));
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
}
