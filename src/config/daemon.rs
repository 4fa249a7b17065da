//! `banhammer.conf`: the daemon's own settings (`[Definition]` with
//! fail2ban.conf's keys). Later issues read their sections (`[syslog]`,
//! `[web]`, ...) from [`DaemonConfig::raw`].

use super::duration::parse_seconds;
use super::ini::{Config, IniError, Vars};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DaemonConfigError {
    #[error(transparent)]
    Ini(#[from] IniError),
    #[error("{file}: [Definition] {key} = {value:?}: {msg}")]
    Value {
        file: String,
        key: String,
        value: String,
        msg: String,
    },
    #[error("{file}: {msg}")]
    Section { file: String, msg: String },
}

/// Where the daemon's own log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    Stdout,
    Journal,
    File(PathBuf),
}

/// Fail2Ban's log levels, ordered from quietest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Critical,
    Error,
    Warning,
    Notice,
    Info,
    Debug,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.trim().to_uppercase().as_str() {
            "CRITICAL" | "FATAL" => LogLevel::Critical,
            "ERROR" => LogLevel::Error,
            "WARNING" | "WARN" => LogLevel::Warning,
            "NOTICE" => LogLevel::Notice,
            "INFO" => LogLevel::Info,
            "DEBUG" | "TRACEDEBUG" | "HEAVYDEBUG" => LogLevel::Debug,
            n => match n.parse::<u32>().ok()? {
                0..=10 => LogLevel::Debug,
                11..=20 => LogLevel::Info,
                21..=25 => LogLevel::Notice,
                26..=30 => LogLevel::Warning,
                31..=40 => LogLevel::Error,
                _ => LogLevel::Critical,
            },
        })
    }
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub config_dir: PathBuf,
    pub loglevel: LogLevel,
    pub logtarget: LogTarget,
    pub socket: PathBuf,
    pub pidfile: PathBuf,
    /// `None`: no database (state kept in memory only; `dbfile = None`).
    pub dbfile: Option<PathBuf>,
    /// Seconds after which ended bans and old failures are purged.
    pub dbpurgeage: f64,
    /// Evidence lines kept per ban.
    pub dbmaxmatches: usize,
    /// `[syslog]`: the syslog receiver.
    pub syslog: super::syslog::SyslogConfig,
    /// `[web]`: the ban page, the admin view and the API.
    pub web: super::web::WebConfig,
    /// `[firewall]`: the nftables backend.
    pub firewall: super::web::FirewallConfig,
    /// `[webhook NAME]` sections.
    pub webhooks: Vec<super::notify::WebhookConfig>,
    /// `[statsd]`.
    pub statsd: Option<super::notify::StatsdConfig>,
    /// Unknown keys and the like, to log.
    pub warnings: Vec<String>,
    /// Everything read, for the sections other subsystems own.
    pub raw: Config,
}

pub const DEFAULT_SOCKET: &str = "/run/banhammer/banhammer.sock";
pub const DEFAULT_PIDFILE: &str = "/run/banhammer/banhammer.pid";
pub const DEFAULT_DBFILE: &str = "/var/lib/banhammer/banhammer.sqlite3";

impl DaemonConfig {
    /// Reads `DIR/banhammer.conf` (and `.local`, `.d/`); missing files give
    /// the defaults.
    pub fn read(dir: &Path) -> Result<DaemonConfig, DaemonConfigError> {
        let raw = Config::read_layered(&dir.join("banhammer"))?.unwrap_or_default();
        let file = raw
            .files
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| dir.join("banhammer.conf").display().to_string());
        let get = |key: &str| -> Result<Option<String>, DaemonConfigError> {
            Ok(raw
                .get("Definition", key, &Vars::new())?
                .map(|v| v.trim().to_string()))
        };
        let bad = |key: &str, value: &str, msg: &str| DaemonConfigError::Value {
            file: file.clone(),
            key: key.to_string(),
            value: value.to_string(),
            msg: msg.to_string(),
        };
        let loglevel = match get("loglevel")? {
            Some(v) => LogLevel::parse(&v).ok_or_else(|| {
                bad(
                    "loglevel",
                    &v,
                    "use CRITICAL, ERROR, WARNING, NOTICE, INFO or DEBUG",
                )
            })?,
            None => LogLevel::Info,
        };
        let logtarget = match get("logtarget")?.as_deref() {
            None | Some("STDERR") => LogTarget::Stderr,
            Some("STDOUT") => LogTarget::Stdout,
            Some("SYSTEMD-JOURNAL") | Some("SYSLOG") => LogTarget::Journal,
            Some(p) if p.starts_with('/') => LogTarget::File(PathBuf::from(p)),
            Some(p) => {
                return Err(bad(
                    "logtarget",
                    p,
                    "use STDERR, STDOUT, SYSTEMD-JOURNAL or an absolute file path",
                ))
            }
        };
        let path_or = |key: &str, default: &str| -> Result<PathBuf, DaemonConfigError> {
            Ok(PathBuf::from(
                get(key)?.unwrap_or_else(|| default.to_string()),
            ))
        };
        let dbfile = match get("dbfile")? {
            Some(v) if v.eq_ignore_ascii_case("none") => None,
            Some(v) => Some(PathBuf::from(v)),
            None => Some(PathBuf::from(DEFAULT_DBFILE)),
        };
        let dbpurgeage = match get("dbpurgeage")? {
            Some(v) => parse_seconds(&v).map_err(|m| bad("dbpurgeage", &v, &m))?,
            None => 86400.0,
        };
        let dbmaxmatches = match get("dbmaxmatches")? {
            Some(v) => v
                .parse()
                .map_err(|_| bad("dbmaxmatches", &v, "must be a whole number"))?,
            None => 10,
        };
        let mut warnings = Vec::new();
        let syslog = super::syslog::SyslogConfig::read(&raw, &mut warnings).map_err(|msg| {
            DaemonConfigError::Section {
                file: file.clone(),
                msg,
            }
        })?;
        let section = |msg: String| DaemonConfigError::Section {
            file: file.clone(),
            msg,
        };
        let web = super::web::WebConfig::read(&raw, &mut warnings).map_err(section)?;
        let firewall = super::web::FirewallConfig::read(&raw, &mut warnings).map_err(section)?;
        let webhooks = super::notify::read_webhooks(&raw, &mut warnings).map_err(section)?;
        let statsd = super::notify::read_statsd(&raw, &mut warnings).map_err(section)?;
        Ok(DaemonConfig {
            config_dir: dir.to_path_buf(),
            syslog,
            web,
            firewall,
            webhooks,
            statsd,
            warnings,
            loglevel,
            logtarget,
            socket: path_or("socket", DEFAULT_SOCKET)?,
            pidfile: path_or("pidfile", DEFAULT_PIDFILE)?,
            dbfile,
            dbpurgeage,
            dbmaxmatches,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let c = DaemonConfig::read(dir.path()).unwrap();
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.dbpurgeage, 86400.0);
        std::fs::write(
            dir.path().join("banhammer.conf"),
            "[Definition]\nloglevel = DEBUG\nlogtarget = /tmp/x.log\nsocket = /tmp/s.sock\ndbfile = None\ndbpurgeage = 7d\ndbmaxmatches = 3\n",
        )
        .unwrap();
        let c = DaemonConfig::read(dir.path()).unwrap();
        assert_eq!(c.loglevel, LogLevel::Debug);
        assert_eq!(c.logtarget, LogTarget::File("/tmp/x.log".into()));
        assert_eq!(c.dbfile, None);
        assert_eq!(c.dbpurgeage, 7.0 * 86400.0);
        assert_eq!(c.dbmaxmatches, 3);
        std::fs::write(
            dir.path().join("banhammer.conf"),
            "[Definition]\ndbpurgeage = soon\n",
        )
        .unwrap();
        let e = DaemonConfig::read(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("banhammer.conf") && e.contains("dbpurgeage"),
            "{e}"
        );
    }
}
