//! Jails: `jail.conf`, `jail.d/*.conf`, `jail.local`, `jail.d/*.local`, read
//! with Fail2Ban's rules and resolved into [`JailConfig`]s.
//!
//! Owns the meaning of jail options: defaults, `[DEFAULT]` inheritance, the
//! filter each jail reads (with the jail's own `failregex`/`maxlines`/...
//! replacing the filter's, and the filter's options visible to the jail as
//! `known/...`), time spans, address lists, actions (kept as references for
//! the action layer). A jail that cannot be built is reported with file and
//! line and skipped; the others are unaffected. Options banhammer does not
//! know are reported once.

use super::duration::parse_seconds;
use super::ini::{Config, IniError, Origin, Vars};
use super::options::{parse_named, split_references, NamedOptions};
use crate::filter::{
    definition_options, resolve_for_jail, Filter, FilterDefinition, FilterOptions, UseDns,
    FILTER_OPTIONS,
};
use indexmap::IndexMap;
use std::path::{Path, PathBuf};

/// How a jail reads its logs.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// inotify where it works, polling otherwise.
    Auto,
    Polling,
    Inotify,
    Systemd {
        /// Journal directories (`journalpath=`).
        paths: Vec<PathBuf>,
        /// Journal files (`journalfiles=`).
        files: Vec<PathBuf>,
        /// `journalflags=`: sd_journal_open flags (0: local system journal).
        flags: Option<i32>,
    },
    /// Messages from the syslog receiver (`[syslog]` in banhammer.conf),
    /// `syslog[app="sshd", facility="auth authpriv", host="10.0.0.0/8 web*"]`.
    Syslog(crate::source::syslog::Selector),
}

impl Backend {
    /// Reads `logpath` files (else journal entries or syslog messages,
    /// which filters see in the journal's line form).
    pub fn reads_files(&self) -> bool {
        matches!(self, Backend::Auto | Backend::Polling | Backend::Inotify)
    }
}

/// One `logpath` entry: a path or glob, read from the start or the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPath {
    pub pattern: String,
    /// ` tail`: start at the end of the file the first time it is seen.
    pub tail: bool,
}

/// `bantime.increment` and friends.
#[derive(Debug, Clone, PartialEq)]
pub struct Increment {
    pub factor: f64,
    /// `bantime.multipliers`: replaces the doubling formula when given.
    pub multipliers: Vec<f64>,
    /// Cap in seconds (`bantime.maxtime`).
    pub maxtime: Option<f64>,
    /// Up to this many random seconds added (`bantime.rndtime`).
    pub rndtime: Option<f64>,
    /// Count bans of the address in every jail, not only this one.
    pub overalljails: bool,
}

/// A jail, ready to run.
#[derive(Debug, Clone)]
pub struct JailConfig {
    pub name: String,
    pub filter: FilterDefinition,
    pub backend: Backend,
    pub logpaths: Vec<LogPath>,
    pub maxretry: u32,
    pub findtime: f64,
    /// Seconds; negative means permanent.
    pub bantime: f64,
    pub increment: Option<Increment>,
    pub ignoreip: Vec<String>,
    pub ignoreself: bool,
    pub ignorecommand: Option<String>,
    pub usedns: UseDns,
    pub maxmatches: usize,
    pub logtimezone: Option<i32>,
    /// Prefix length for counting and banning IPv6 sources (128 = per address).
    pub ipv6prefix: u8,
    /// `action =` references, kept for the action layer.
    pub actions: Vec<NamedOptions>,
    /// The jail's own option values (and `[DEFAULT]`'s), interpolated: the
    /// values actions fall back to for their tags (`port`, `protocol`, ...).
    pub vars: IndexMap<String, String>,
    pub description: Option<String>,
    pub origin: Option<Origin>,
}

impl JailConfig {
    /// Compiles the jail's filter.
    pub fn compile_filter(&self) -> Result<Filter, crate::filter::FilterError> {
        Filter::compile(
            self.filter.clone(),
            FilterOptions {
                use_dns: self.usedns,
                log_tz: self.logtimezone,
                ..FilterOptions::default()
            },
        )
    }
}

/// A jail that could not be built, with the reason.
#[derive(Debug, Clone)]
pub struct JailProblem {
    pub jail: String,
    pub msg: String,
}

impl std::fmt::Display for JailProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "jail '{}' skipped: {}", self.jail, self.msg)
    }
}

#[derive(Debug, Default)]
pub struct Jails {
    pub jails: Vec<JailConfig>,
    pub problems: Vec<JailProblem>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JailsError {
    #[error(transparent)]
    Ini(#[from] IniError),
    #[error("no jail.conf or jail.local in {}", .0.display())]
    Missing(PathBuf),
}

/// Options a jail section may set (Fail2Ban's jail options, the filter
/// options, banhammer's extensions).
const JAIL_OPTIONS: &[&str] = &[
    "enabled",
    "backend",
    "maxretry",
    "maxmatches",
    "findtime",
    "bantime",
    "bantime.increment",
    "bantime.factor",
    "bantime.formula",
    "bantime.multipliers",
    "bantime.maxtime",
    "bantime.rndtime",
    "bantime.overalljails",
    "ignorecommand",
    "ignoreself",
    "ignoreip",
    "ignorecache",
    "filter",
    "logtimezone",
    "logencoding",
    "logpath",
    "action",
    "banaction",
    "banaction_allports",
    "ipv6prefix",
    "description",
    "skip_if_nologs",
];

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_lowercase().as_str() {
        "1" | "yes" | "true" | "on" | "enabled" => Some(true),
        "0" | "no" | "false" | "off" | "disabled" | "" => Some(false),
        _ => None,
    }
}

/// `systemd[journalpath=/x, journalfiles="/a /b", journalflags=1]`.
fn parse_backend(v: &str) -> Result<Backend, String> {
    let spec = parse_named(v).map_err(|e| e.to_string())?;
    let words = |key: &str| -> Vec<PathBuf> {
        spec.options
            .get(key)
            .map(|s| s.split_whitespace().map(PathBuf::from).collect())
            .unwrap_or_default()
    };
    Ok(match spec.name.to_lowercase().as_str() {
        "auto" => Backend::Auto,
        "polling" => Backend::Polling,
        "inotify" | "pyinotify" | "gamin" => Backend::Inotify,
        "systemd" => Backend::Systemd {
            paths: words("journalpath"),
            files: words("journalfiles"),
            flags: match spec.options.get("journalflags") {
                Some(f) => Some(
                    f.trim()
                        .parse()
                        .map_err(|_| format!("journalflags={f:?} is not a number"))?,
                ),
                None => None,
            },
        },
        "syslog" => {
            let list = |key: &str| -> Vec<String> {
                spec.options
                    .get(key)
                    .map(|s| {
                        s.split([' ', ',', '\n'])
                            .map(str::trim)
                            .filter(|w| !w.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if let Some(k) = spec
                .options
                .keys()
                .find(|k| !["app", "facility", "host"].contains(&k.as_str()))
            {
                return Err(format!(
                    "backend syslog: unknown selector {k:?} (use app, facility, host)"
                ));
            }
            let facilities = list("facility")
                .iter()
                .map(|f| {
                    crate::source::syslog::parse::facility_code(f)
                        .ok_or_else(|| format!("backend syslog: unknown facility {f:?}"))
                })
                .collect::<Result<_, _>>()?;
            Backend::Syslog(crate::source::syslog::Selector {
                apps: list("app"),
                facilities,
                hosts: list("host"),
            })
        }
        other => {
            return Err(format!(
            "unknown backend {other:?} (use auto, polling, inotify, systemd[...] or syslog[...])"
        ))
        }
    })
}

/// Every `%(name)s` and `<name>` a text refers to.
fn referenced_names(text: &str, out: &mut Vec<String>) {
    let mut rest = text;
    while let Some(p) = rest.find("%(") {
        rest = &rest[p + 2..];
        if let Some(e) = rest.find(")s") {
            out.push(rest[..e].to_lowercase());
        }
    }
    let mut rest = text;
    while let Some(p) = rest.find('<') {
        rest = &rest[p + 1..];
        if let Some(e) = rest.find(['>', ' ', '<']) {
            if rest.as_bytes()[e] == b'>' {
                out.push(rest[..e].to_lowercase());
            }
        }
    }
}

impl Jails {
    /// Reads the jails of the configuration directory `dir`.
    pub fn read(dir: &Path) -> Result<Jails, JailsError> {
        let files = super::ini::layered_files(&dir.join("jail"));
        if files.is_empty() {
            return Err(JailsError::Missing(dir.to_path_buf()));
        }
        let mut cfg = Config::read_files_lenient(&files)?;
        // Fail2Ban's built-in defaults that its jail.conf refers to
        let origin = Origin {
            file: std::sync::Arc::from(Path::new("<built-in>")),
            line: 0,
        };
        for (k, v) in [
            ("fail2ban_version", "1.0.2"),
            ("fail2ban_confpath", &dir.display().to_string()),
        ] {
            cfg.defaults
                .entry(k.to_string())
                .or_insert(super::ini::Value {
                    text: v.to_string(),
                    origin: origin.clone(),
                });
        }
        let mut out = Jails {
            warnings: cfg.warnings.clone(),
            ..Jails::default()
        };
        // names any value refers to: options used for interpolation
        // (`port`, `mode`, ...) are not unknown options
        let mut referenced = Vec::new();
        for sec in cfg.sections.values().chain(std::iter::once(&cfg.defaults)) {
            for v in sec.values() {
                referenced_names(&v.text, &mut referenced);
            }
        }
        scan_action_tags(&dir.join("action.d"), &mut referenced);
        let sections: Vec<String> = cfg
            .sections
            .keys()
            .filter(|s| !s.starts_with("KNOWN/") && *s != "INCLUDES")
            .cloned()
            .collect();
        for name in sections {
            let broken: Vec<String> = cfg
                .problems
                .iter()
                .filter(|p| p.section.as_deref() == Some(name.as_str()))
                .map(|p| format!("{}: {}", p.origin, p.msg))
                .collect();
            let enabled = match cfg.get(&name, "enabled", &Vars::new()) {
                Ok(v) => parse_bool(v.as_deref().unwrap_or("false")).unwrap_or(false),
                Err(e) => {
                    out.problems.push(JailProblem {
                        jail: name.clone(),
                        msg: e.to_string(),
                    });
                    continue;
                }
            };
            if !enabled {
                continue;
            }
            if !broken.is_empty() {
                out.problems.push(JailProblem {
                    jail: name.clone(),
                    msg: format!("syntax error: {}", broken.join("; ")),
                });
                continue;
            }
            for opt in cfg.own_options(&name) {
                let known = JAIL_OPTIONS.contains(&opt.as_str())
                    || FILTER_OPTIONS.contains(&opt.as_str())
                    || opt.starts_with("known/")
                    || cfg.defaults.contains_key(&opt)
                    || referenced.contains(&opt);
                if !known {
                    let at = cfg
                        .raw(&name, &opt)
                        .map(|v| format!(" ({})", v.origin))
                        .unwrap_or_default();
                    out.warnings
                        .push(format!("jail '{name}': unknown option '{opt}' ignored{at}"));
                }
            }
            match read_jail(&mut cfg, dir, &name) {
                Ok(j) => out.jails.push(j),
                Err(msg) => out.problems.push(JailProblem {
                    jail: name.clone(),
                    msg,
                }),
            }
        }
        Ok(out)
    }
}

/// `<tag>` names used in `action.d` files: jail options meant for actions.
fn scan_action_tags(dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if let Ok(text) = std::fs::read_to_string(e.path()) {
            referenced_names(&text, out);
        }
    }
}

fn read_jail(cfg: &mut Config, dir: &Path, name: &str) -> Result<JailConfig, String> {
    let get = |cfg: &Config, key: &str| -> Result<Option<String>, String> {
        cfg.get(name, key, &Vars::new()).map_err(|e| e.to_string())
    };
    let origin = cfg
        .sections
        .get(name)
        .and_then(|s| s.values().next())
        .map(|v| v.origin.clone());
    let at = |key: &str, cfg: &Config| {
        cfg.raw(name, key)
            .map(|v| format!(" ({})", v.origin))
            .unwrap_or_default()
    };
    let backend_text = get(cfg, "backend")?.unwrap_or_else(|| "auto".into());
    let backend =
        parse_backend(&backend_text).map_err(|e| format!("backend: {e}{}", at("backend", cfg)))?;

    // the filter, and its options published to the jail as `known/...`
    let filter_value = get(cfg, "filter")?.unwrap_or_default();
    if filter_value.trim().is_empty() {
        return Err(format!("no filter set{}", at("enabled", cfg)));
    }
    let mut spec = parse_named(&filter_value)
        .map_err(|e| format!("filter = {filter_value}: {e}{}", at("filter", cfg)))?;
    let filter_dir = dir.join("filter.d");
    let filter_cfg = Config::read_layered(&filter_dir.join(&spec.name))
        .map_err(|e| format!("filter '{}': {e}", spec.name))?
        .ok_or_else(|| {
            format!(
                "filter '{}' not found: no {}.conf or {}.local in {}{}",
                spec.name,
                spec.name,
                spec.name,
                filter_dir.display(),
                at("filter", cfg)
            )
        })?;
    let own_logtype = filter_cfg
        .sections
        .get("Definition")
        .is_some_and(|s| s.contains_key("logtype"));
    if !spec.options.contains_key("logtype") && !own_logtype {
        let lt = if !backend.reads_files() {
            "journal"
        } else {
            "file"
        };
        spec.options.insert("logtype".into(), lt.into());
    }
    let known =
        definition_options(&filter_cfg, &spec.name, &spec.options).map_err(|e| e.to_string())?;
    if let Some(sec) = cfg.sections.get_mut(name) {
        let origin = Origin {
            file: std::sync::Arc::from(Path::new("<filter>")),
            line: 0,
        };
        for (k, v) in known {
            sec.entry(format!("known/{k}"))
                .or_insert(super::ini::Value {
                    text: v,
                    origin: origin.clone(),
                });
        }
    }

    // the jail's own values
    let mut vars = Vars::new();
    for opt in JAIL_OPTIONS.iter().chain(FILTER_OPTIONS.iter()) {
        if let Some(v) = get(cfg, opt)? {
            vars.insert(opt.to_string(), v);
        }
    }
    let own = |key: &str| cfg.sections.get(name).is_some_and(|s| s.contains_key(key));
    let overrides: IndexMap<String, String> = FILTER_OPTIONS
        .iter()
        .filter(|k| own(k))
        .filter_map(|k| vars.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    let filter = resolve_for_jail(filter_cfg, &spec.name, &spec.options, &vars, &overrides)
        .map_err(|e| e.to_string())?;

    let num = |key: &str, default: f64| -> Result<f64, String> {
        match vars.get(key) {
            Some(v) => parse_seconds(v).map_err(|e| format!("{key}: {e}{}", at(key, cfg))),
            None => Ok(default),
        }
    };
    let int = |key: &str, default: u64| -> Result<u64, String> {
        match vars.get(key) {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("{key} = {v:?} is not a whole number{}", at(key, cfg))),
            None => Ok(default),
        }
    };
    let flag = |key: &str, default: bool| -> Result<bool, String> {
        match vars.get(key) {
            Some(v) => parse_bool(v)
                .ok_or_else(|| format!("{key} = {v:?} is not true or false{}", at(key, cfg))),
            None => Ok(default),
        }
    };
    let maxretry = int("maxretry", 3)? as u32;
    if maxretry == 0 {
        return Err(format!(
            "maxretry must be at least 1{}",
            at("maxretry", cfg)
        ));
    }
    let findtime = num("findtime", 600.0)?;
    let bantime = num("bantime", 600.0)?;
    let increment = if flag("bantime.increment", false)? {
        let multipliers = match vars.get("bantime.multipliers") {
            Some(m) => m
                .split_whitespace()
                .map(|x| {
                    x.parse::<f64>()
                        .map_err(|_| format!("bantime.multipliers: {x:?} is not a number"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        Some(Increment {
            factor: match vars.get("bantime.factor") {
                Some(f) => f
                    .trim()
                    .parse()
                    .map_err(|_| format!("bantime.factor = {f:?} is not a number"))?,
                None => 1.0,
            },
            multipliers,
            maxtime: vars
                .get("bantime.maxtime")
                .map(|v| parse_seconds(v))
                .transpose()?,
            rndtime: vars
                .get("bantime.rndtime")
                .map(|v| parse_seconds(v))
                .transpose()?,
            overalljails: flag("bantime.overalljails", false)?,
        })
    } else {
        None
    };
    let usedns = match vars.get("usedns") {
        Some(v) => {
            UseDns::parse(v).ok_or_else(|| format!("usedns = {v:?}: use yes, warn, no or raw"))?
        }
        None => UseDns::Warn,
    };
    let ipv6prefix = int("ipv6prefix", 128)?;
    if !(1..=128).contains(&ipv6prefix) {
        return Err(format!(
            "ipv6prefix must be between 1 and 128{}",
            at("ipv6prefix", cfg)
        ));
    }
    let logtimezone = match vars.get("logtimezone") {
        Some(tz) => Some(crate::filter::date::parse_time_zone(tz).map_err(|e| e.to_string())?),
        None => None,
    };
    let logpaths = if !backend.reads_files() {
        Vec::new()
    } else {
        vars.get("logpath")
            .map(|v| {
                v.split('\n')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| match l.rsplit_once(' ') {
                        Some((p, "tail")) => LogPath {
                            pattern: p.trim().to_string(),
                            tail: true,
                        },
                        Some((p, "head")) => LogPath {
                            pattern: p.trim().to_string(),
                            tail: false,
                        },
                        _ => LogPath {
                            pattern: l.to_string(),
                            tail: false,
                        },
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    if backend.reads_files() && logpaths.is_empty() {
        return Err(format!(
            "no logpath set (or use backend = systemd or syslog){}",
            at("enabled", cfg)
        ));
    }
    let actions = vars
        .get("action")
        .map(|v| {
            split_references(v)
                .into_iter()
                .filter(|a| !a.trim().is_empty())
                .map(|a| parse_named(&a).map_err(|e| format!("action: {e}")))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let mut jail_vars = IndexMap::new();
    let keys: Vec<String> = cfg
        .defaults
        .keys()
        .cloned()
        .chain(cfg.own_options(name))
        .collect();
    for key in keys {
        // a value that does not interpolate is reported where it is used
        if let Ok(Some(v)) = get(cfg, &key) {
            jail_vars.insert(key, v);
        }
    }
    Ok(JailConfig {
        name: name.to_string(),
        vars: jail_vars,
        filter,
        backend,
        logpaths,
        maxretry,
        findtime,
        bantime,
        increment,
        ignoreip: vars
            .get("ignoreip")
            .map(|v| {
                v.split([' ', ',', '\n', '\t'])
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        ignoreself: flag("ignoreself", true)?,
        ignorecommand: vars
            .get("ignorecommand")
            .filter(|c| !c.trim().is_empty())
            .cloned(),
        usedns,
        maxmatches: int("maxmatches", u64::from(maxretry))? as usize,
        logtimezone,
        ipv6prefix: ipv6prefix as u8,
        actions,
        description: vars.get("description").cloned(),
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(jail_local: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("filter.d")).unwrap();
        std::fs::write(
            p.join("filter.d/demo.conf"),
            "[Definition]\nfailregex = ^auth failure from <HOST>$\n            ^<mode> from <HOST>$\n[Init]\nmode = bad\n",
        )
        .unwrap();
        std::fs::write(
            p.join("jail.conf"),
            "[DEFAULT]\nbantime = 10m\nfindtime = 10m\nmaxretry = 5\nport = 0:65535\nfilter = %(__name__)s\naction = log[port=\"%(port)s\"]\n",
        )
        .unwrap();
        std::fs::write(p.join("jail.local"), jail_local).unwrap();
        dir
    }

    #[test]
    fn jail_inherits_defaults_and_reads_its_filter() {
        let dir = setup("[demo]\nenabled = true\nlogpath = /var/log/demo.log tail\n  /var/log/other*.log\nmaxretry = 3\nbantime = 1d12h\nipv6prefix = 64\nbantime.increment = true\nbantime.multipliers = 1 2 4\n[off]\nfilter = demo\nlogpath = /x\n");
        let j = Jails::read(dir.path()).unwrap();
        assert!(j.problems.is_empty(), "{:?}", j.problems);
        assert_eq!(j.jails.len(), 1);
        let d = &j.jails[0];
        assert_eq!(d.maxretry, 3);
        assert_eq!(d.findtime, 600.0);
        assert_eq!(d.bantime, 129600.0);
        assert_eq!(d.ipv6prefix, 64);
        assert_eq!(
            d.logpaths[0],
            LogPath {
                pattern: "/var/log/demo.log".into(),
                tail: true
            }
        );
        assert_eq!(d.logpaths[1].pattern, "/var/log/other*.log");
        assert_eq!(d.increment.as_ref().unwrap().multipliers, [1.0, 2.0, 4.0]);
        assert_eq!(d.filter.failregex.len(), 2);
        assert_eq!(d.filter.failregex[1], "^bad from <HOST>$");
        assert_eq!(d.actions[0].name, "log");
        assert_eq!(d.actions[0].options["port"], "0:65535");
        assert!(d.compile_filter().is_ok());
    }

    #[test]
    fn jail_overrides_and_extends_filter_options() {
        let dir = setup("[demo]\nenabled = true\nlogpath = /x\nfilter = demo[mode=worse]\nfailregex = %(known/failregex)s\n            ^extra <HOST>$\n");
        let j = Jails::read(dir.path()).unwrap();
        let d = &j.jails[0];
        assert_eq!(
            d.filter.failregex,
            [
                "^auth failure from <HOST>$",
                "^worse from <HOST>$",
                "^extra <HOST>$"
            ]
        );
    }

    #[test]
    fn broken_jails_are_skipped_with_reasons_and_unknown_options_warned() {
        let dir = setup("[demo]\nenabled = true\nlogpath = /x\nmaxretyr = 3\n[nofilter]\nenabled = true\nfilter = nosuch\nlogpath = /x\n[syntax]\nenabled = true\nthis line is broken\n[badtime]\nenabled = true\nfilter = demo\nlogpath = /x\nbantime = forever\n");
        let j = Jails::read(dir.path()).unwrap();
        assert_eq!(j.jails.len(), 1, "{:?}", j.problems);
        let msgs: Vec<String> = j.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("'nofilter'") && m.contains("nosuch.conf")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("'syntax'") && m.contains("jail.local:11")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("'badtime'") && m.contains("bantime")),
            "{msgs:?}"
        );
        assert!(
            j.warnings
                .iter()
                .any(|w| w.contains("maxretyr") && w.contains("jail.local:4")),
            "{:?}",
            j.warnings
        );
    }
}
