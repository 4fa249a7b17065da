//! The daemon's own log: Fail2Ban's line format (so `recidive` filters and
//! operators' habits keep working), to stderr, stdout, a file or the
//! journal.
//!
//! Events are `tracing` events with structured fields; this layer renders
//! `jail` and `ip` the way Fail2Ban writes them:
//! `2026-11-22 10:15:02,123 banhammer.actions       [4242]: NOTICE  [sshd] Ban 192.0.2.7`.
//! An event with `notice = true` is a NOTICE (between INFO and WARNING).

use crate::config::daemon::{LogLevel, LogTarget};
use std::fmt::Write as _;
use std::io::Write;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Default)]
struct Fields {
    message: String,
    jail: Option<String>,
    ip: Option<String>,
    notice: bool,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "jail" => self.jail = Some(format!("{value:?}").trim_matches('"').to_string()),
            "ip" => self.ip = Some(format!("{value:?}").trim_matches('"').to_string()),
            "notice" => self.notice = format!("{value:?}") == "true",
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "jail" => self.jail = Some(value.to_string()),
            "ip" => self.ip = Some(value.to_string()),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "notice" {
            self.notice = value;
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

enum Sink {
    Write(&'static Mutex<Buffered>),
    Journal,
}

/// Log lines wait in `buf` until a NOTICE or worse, a full buffer or the
/// flusher thread (every [`FLUSH_EVERY`]) writes them: a burst of `Found`
/// lines costs one write, and no line waits longer than that.
struct Buffered {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
}

const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
const FLUSH_SIZE: usize = 64 << 10;

impl Buffered {
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.out.write_all(&self.buf);
            let _ = self.out.flush();
            self.buf.clear();
        }
    }
}

static WRITER: std::sync::OnceLock<&'static Mutex<Buffered>> = std::sync::OnceLock::new();

/// Starts the thread that writes buffered lines out every [`FLUSH_EVERY`]
/// (after `init`, and after the daemon went to the background: a fork
/// keeps no threads).
pub fn start_flusher() {
    if WRITER.get().is_some() {
        let _ = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            });
    }
}

/// Writes out the log lines waiting in the buffer (at shutdown).
pub fn flush() {
    if let Some(w) = WRITER.get() {
        if let Ok(mut w) = w.lock() {
            w.flush();
        }
    }
}

struct LineLayer {
    sink: Sink,
    level: LogLevel,
    pid: u32,
}

fn level_name(level: &Level, notice: bool) -> (&'static str, u8) {
    if notice {
        return ("NOTICE", 5);
    }
    match *level {
        Level::ERROR => ("ERROR", 3),
        Level::WARN => ("WARNING", 4),
        Level::INFO => ("INFO", 6),
        Level::DEBUG => ("DEBUG", 7),
        Level::TRACE => ("TRACE", 7),
    }
}

impl LineLayer {
    fn enabled(&self, level: &Level, notice: bool) -> bool {
        let want = if notice {
            LogLevel::Notice
        } else {
            match *level {
                Level::ERROR => LogLevel::Error,
                Level::WARN => LogLevel::Warning,
                Level::INFO => LogLevel::Info,
                _ => LogLevel::Debug,
            }
        };
        want <= self.level
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("banhammer") {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if !self.enabled(meta.level(), f.notice) {
            return;
        }
        let (level, priority) = level_name(meta.level(), f.notice);
        let mut msg = String::new();
        if let Some(j) = &f.jail {
            let _ = write!(msg, "[{j}] ");
        }
        msg.push_str(&f.message);
        if let Some(ip) = &f.ip {
            let _ = write!(msg, " {ip}");
        }
        msg.push_str(&f.rest);
        let logger = meta.target().replace("::", ".");
        let logger = match logger.split('.').nth(1) {
            Some(part) => format!("banhammer.{part}"),
            None => logger,
        };
        match &self.sink {
            Sink::Write(w) => {
                let now = chrono::Local::now();
                if let Ok(mut w) = w.lock() {
                    let _ = writeln!(
                        w.buf,
                        "{} {:<24}[{}]: {:<7} {}",
                        now.format("%Y-%m-%d %H:%M:%S,%3f"),
                        logger,
                        self.pid,
                        level,
                        msg
                    );
                    if priority <= 5 || w.buf.len() >= FLUSH_SIZE {
                        w.flush();
                    }
                }
            }
            Sink::Journal => {
                let message = format!("MESSAGE={level:<7} {msg}");
                let prio = format!("PRIORITY={priority}");
                let jail = f.jail.as_ref().map(|j| format!("BANHAMMER_JAIL={j}"));
                let ip = f.ip.as_ref().map(|i| format!("BANHAMMER_IP={i}"));
                let mut args: Vec<&str> = vec![&message, &prio, "SYSLOG_IDENTIFIER=banhammer"];
                args.extend(jail.as_deref());
                args.extend(ip.as_deref());
                let _ = systemd::journal::send(&args);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("log target {target}: {cause}")]
pub struct LogError {
    pub target: String,
    pub cause: std::io::Error,
}

/// Installs the log; call once, before anything logs.
pub fn init(target: &LogTarget, level: LogLevel) -> Result<(), LogError> {
    let out: Box<dyn Write + Send> = match target {
        LogTarget::Stderr => Box::new(std::io::stderr()),
        LogTarget::Stdout => Box::new(std::io::stdout()),
        LogTarget::Journal => Box::new(std::io::sink()),
        LogTarget::File(p) => {
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|cause| LogError {
                    target: p.display().to_string(),
                    cause,
                })?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o640));
            Box::new(f)
        }
    };
    let sink = if matches!(target, LogTarget::Journal) {
        Sink::Journal
    } else {
        let w: &'static Mutex<Buffered> = Box::leak(Box::new(Mutex::new(Buffered {
            out,
            buf: Vec::with_capacity(FLUSH_SIZE),
        })));
        let _ = WRITER.set(w);
        Sink::Write(w)
    };
    let layer = LineLayer {
        sink,
        level,
        pid: std::process::id(),
    };
    let subscriber = tracing_subscriber::registry().with(layer);
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}
