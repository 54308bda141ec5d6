//! The `-v`/`-vv` log: `tracing` events written as stderr lines, escaped and redacted like
//! every other line.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::{redact, stderr_color};
use crate::text::escape;

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
