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
    Write(Mutex<Box<dyn Write + Send>>),
    Journal,
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
                let line = format!(
                    "{} {:<24}[{}]: {:<7} {}\n",
                    now.format("%Y-%m-%d %H:%M:%S,%3f"),
                    logger,
                    self.pid,
                    level,
                    msg
                );
                if let Ok(mut w) = w.lock() {
                    let _ = w.write_all(line.as_bytes());
                    let _ = w.flush();
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
    let sink = match target {
        LogTarget::Stderr => Sink::Write(Mutex::new(Box::new(std::io::stderr()))),
        LogTarget::Stdout => Sink::Write(Mutex::new(Box::new(std::io::stdout()))),
        LogTarget::Journal => Sink::Journal,
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
            Sink::Write(Mutex::new(Box::new(f)))
        }
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
