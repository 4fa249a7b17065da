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

/// `value`'s Debug text into `out` (emptied first); a quoted string
/// loses its quotes.
fn debug_into(out: &mut String, value: &dyn std::fmt::Debug) {
    out.clear();
    let _ = write!(out, "{value:?}");
    if out.len() >= 2 && out.starts_with('"') && out.ends_with('"') {
        out.pop();
        out.remove(0);
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                self.message.clear();
                let _ = write!(self.message, "{value:?}");
            }
            "jail" => debug_into(self.jail.get_or_insert_with(String::new), value),
            "ip" => debug_into(self.ip.get_or_insert_with(String::new), value),
            "notice" => {
                let mut t = String::new();
                debug_into(&mut t, value);
                self.notice = t == "true";
            }
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => value.clone_into(&mut self.message),
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
    clock: LocalSecond,
}

/// The local time of one second as the log writes it
/// (`2026-11-22 10:15:02`), made once per second: the time zone lookup and
/// the formatting cost more than the rest of a line.
#[derive(Default)]
struct LocalSecond {
    second: Option<i64>,
    text: String,
}

impl LocalSecond {
    /// Appends `YYYY-mm-dd HH:MM:SS,mmm` for the current time to `out`.
    fn write_now(&mut self, out: &mut Vec<u8>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let second = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if self.second != Some(second) {
            use chrono::TimeZone;
            self.text.clear();
            if let chrono::LocalResult::Single(t) = chrono::Local.timestamp_opt(second, 0) {
                let _ = write!(self.text, "{}", t.format("%Y-%m-%d %H:%M:%S"));
            }
            self.second = Some(second);
        }
        out.extend_from_slice(self.text.as_bytes());
        let ms = now.subsec_millis();
        out.extend_from_slice(&[
            b',',
            b'0' + (ms / 100 % 10) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
        ]);
    }
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

/// Fail2Ban's logger name for a target: `banhammer::jail::window` ->
/// `banhammer.jail`.
fn push_logger_name(out: &mut Vec<u8>, target: &str) {
    // where the first `::` starts (targets are short: a byte scan)
    fn sep(b: &[u8]) -> Option<usize> {
        b.windows(2).position(|w| w == b"::")
    }
    let t = target.as_bytes();
    let Some(end) = sep(t) else {
        out.extend_from_slice(t);
        return;
    };
    out.extend_from_slice(&t[..end]);
    let rest = &t[end + 2..];
    out.push(b'.');
    out.extend_from_slice(&rest[..sep(rest).unwrap_or(rest.len())]);
}

struct LineLayer {
    sink: Sink,
    level: LogLevel,
    /// `[PID]: `, as every line has it.
    pid_tag: String,
}

impl LineLayer {
    fn new(sink: Sink, level: LogLevel, pid: u32) -> LineLayer {
        LineLayer {
            sink,
            level,
            pid_tag: format!("[{pid}]: "),
        }
    }
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
        if matches!(*meta.level(), Level::DEBUG | Level::TRACE) && self.level < LogLevel::Debug {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if !self.enabled(meta.level(), f.notice) {
            return;
        }
        let (level, priority) = level_name(meta.level(), f.notice);
        let mut msg = String::with_capacity(f.message.len() + 48);
        if let Some(j) = &f.jail {
            msg.push('[');
            msg.push_str(j);
            msg.push_str("] ");
        }
        msg.push_str(&f.message);
        if let Some(ip) = &f.ip {
            msg.push(' ');
            msg.push_str(ip);
        }
        msg.push_str(&f.rest);
        match &self.sink {
            Sink::Write(w) => {
                if let Ok(mut w) = w.lock() {
                    let w = &mut *w;
                    w.clock.write_now(&mut w.buf);
                    w.buf.push(b' ');
                    let logger_at = w.buf.len();
                    push_logger_name(&mut w.buf, meta.target());
                    let width = w.buf.len() - logger_at;
                    w.buf
                        .resize(w.buf.len() + 24usize.saturating_sub(width), b' ');
                    w.buf.extend_from_slice(self.pid_tag.as_bytes());
                    // the level padded to 7, as `{:<7}` would
                    w.buf.extend_from_slice(level.as_bytes());
                    w.buf
                        .resize(w.buf.len() + 7usize.saturating_sub(level.len()), b' ');
                    w.buf.push(b' ');
                    w.buf.extend_from_slice(msg.as_bytes());
                    w.buf.push(b'\n');
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
            clock: LocalSecond::default(),
        })));
        let _ = WRITER.set(w);
        Sink::Write(w)
    };
    let layer = LineLayer::new(sink, level, std::process::id());
    let subscriber = tracing_subscriber::registry().with(layer);
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn logger_names_are_the_first_two_parts_of_the_target() {
        let name = |t: &str| {
            let mut out = Vec::new();
            push_logger_name(&mut out, t);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(name("banhammer::jail::window"), "banhammer.jail");
        assert_eq!(name("banhammer::jail"), "banhammer.jail");
        assert_eq!(name("banhammer.syslog"), "banhammer.syslog");
        assert_eq!(name("banhammer"), "banhammer");
        assert_eq!(name("banhammer::"), "banhammer.");
    }

    /// Lines in Fail2Ban's format (what `recidive` and operators read),
    /// levels filtered, a NOTICE written at once.
    #[test]
    fn lines_have_fail2bans_format() {
        let out = Shared::default();
        let w: &'static Mutex<Buffered> = Box::leak(Box::new(Mutex::new(Buffered {
            out: Box::new(out.clone()),
            buf: Vec::new(),
            clock: LocalSecond::default(),
        })));
        let layer = LineLayer::new(Sink::Write(w), LogLevel::Info, 4242);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let jail = String::from("sshd");
            tracing::debug!(jail = %jail, "not written at INFO");
            tracing::info!(jail = %jail, ip = %"192.0.2.7", "Found");
            tracing::info!(jail = %jail, ip = "192.0.2.7", notice = true, "Ban");
            tracing::warn!(count = 3, "plain warning");
        });
        w.lock().unwrap().flush();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let shape = regex::Regex::new(
            r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} banhammer\.logging {7}\[4242\]: (.{7}) (.*)$",
        )
        .unwrap();
        let parts: Vec<(String, String)> = lines
            .iter()
            .map(|l| {
                let c = shape.captures(l).unwrap_or_else(|| panic!("{l}"));
                (c[1].to_string(), c[2].to_string())
            })
            .collect();
        assert_eq!(
            parts[0],
            ("INFO   ".into(), "[sshd] Found 192.0.2.7".into())
        );
        assert_eq!(parts[1], ("NOTICE ".into(), "[sshd] Ban 192.0.2.7".into()));
        assert_eq!(parts[2], ("WARNING".into(), "plain warning count=3".into()));
        // the time is the local time of now
        let stamp = &lines[0][..19];
        let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S").unwrap();
        let now = chrono::Local::now().naive_local();
        assert!((now - t).num_seconds().abs() <= 2, "{stamp} vs {now}");
    }
}
