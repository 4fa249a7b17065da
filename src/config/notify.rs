//! `[webhook NAME]` and `[statsd]` in `banhammer.conf`: where notifications
//! go, resolved and validated (URLs, events, durations, headers checked).

use super::duration::parse_seconds;
use super::ini::{Config, Vars};

/// The events a webhook can ask for.
pub const EVENTS: &[&str] = &["ban", "unban", "ban-extended", "start", "stop"];

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub name: String,
    /// Targets, tried in random order until one accepts.
    pub urls: Vec<String>,
    pub events: Vec<String>,
    /// Only these jails (empty: every jail, unless jails name this webhook
    /// in their actions).
    pub jails: Vec<String>,
    /// Key of the `X-Banhammer-Signature` HMAC-SHA256.
    pub secret: Option<String>,
    /// Per request, seconds.
    pub timeout: f64,
    pub headers: Vec<(String, String)>,
    /// Include the ban's evidence (log lines) in the payload.
    pub matches: bool,
    /// Receives a delivery report for every message.
    pub callback: Option<String>,
    /// Retried until the message is this old (seconds), then failed.
    pub max_age: f64,
    /// First retry after this (seconds), doubling each time.
    pub retry: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatsdConfig {
    pub host: String,
    pub port: u16,
    /// Prefix of every metric (default `banhammer.HOSTNAME`).
    pub prefix: String,
    pub sample_rate: f64,
    /// How often counters and gauges are sent (seconds).
    pub interval: f64,
}

const WEBHOOK_KEYS: &[&str] = &[
    "url", "events", "jails", "secret", "timeout", "headers", "matches", "callback", "max_age",
    "retry",
];
const STATSD_KEYS: &[&str] = &["host", "port", "prefix", "sample_rate", "interval"];

/// This machine's name (for payloads and the StatsD prefix).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn words(v: &str) -> Vec<String> {
    v.split([' ', ',', '\n', '\t'])
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

fn yes(key: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" | "" => Ok(false),
        _ => Err(format!("{key} = {v:?}: use yes or no")),
    }
}

/// Every `[webhook NAME]` section; `warnings` gets unknown keys.
pub fn read_webhooks(
    raw: &Config,
    warnings: &mut Vec<String>,
) -> Result<Vec<WebhookConfig>, String> {
    let mut out = Vec::new();
    for section in raw.sections.keys() {
        let Some(name) = section.strip_prefix("webhook ").map(str::trim) else {
            continue;
        };
        let bad = |key: &str, msg: &str| format!("[{section}] {key}: {msg}");
        for key in raw.own_options(section) {
            if !WEBHOOK_KEYS.contains(&key.as_str()) {
                warnings.push(format!("[{section}]: unknown option '{key}' ignored"));
            }
        }
        let get = |key: &str| -> Result<Option<String>, String> {
            raw.get(section, key, &Vars::new())
                .map(|v| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
                .map_err(|e| e.to_string())
        };
        let urls = words(&get("url")?.unwrap_or_default());
        if urls.is_empty() {
            return Err(bad("url", "at least one http:// or https:// URL is needed"));
        }
        if let Some(u) = urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(bad(
                "url",
                &format!("{u:?} is not an http:// or https:// URL"),
            ));
        }
        let events = match get("events")? {
            Some(v) => words(&v),
            None => vec!["ban".into(), "unban".into()],
        };
        if let Some(e) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(bad(
                "events",
                &format!("unknown event {e:?} (use {})", EVENTS.join(", ")),
            ));
        }
        let secs = |key: &str, default: f64| -> Result<f64, String> {
            match get(key)? {
                Some(v) => parse_seconds(&v).ok().filter(|s| *s > 0.0).ok_or_else(|| {
                    bad(
                        key,
                        &format!("{v:?} is not a positive time such as 10s or 1d"),
                    )
                }),
                None => Ok(default),
            }
        };
        let headers = match get("headers")? {
            Some(v) => v
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, val) = l.split_once(':').ok_or_else(|| {
                        bad(
                            "headers",
                            &format!("{l:?}: write Name: value, one per line"),
                        )
                    })?;
                    let k = k.trim();
                    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                        return Err(bad("headers", &format!("{k:?} is not a header name")));
                    }
                    Ok((k.to_string(), val.trim().to_string()))
                })
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let callback = get("callback")?;
        if let Some(c) = &callback {
            if !(c.starts_with("http://") || c.starts_with("https://")) {
                return Err(bad(
                    "callback",
                    &format!("{c:?} is not an http:// or https:// URL"),
                ));
            }
        }
        out.push(WebhookConfig {
            name: name.to_string(),
            urls,
            events,
            jails: words(&get("jails")?.unwrap_or_default()),
            secret: get("secret")?,
            timeout: secs("timeout", 10.0)?,
            headers,
            matches: yes("matches", &get("matches")?.unwrap_or_default())
                .map_err(|e| bad("matches", &e))?,
            callback,
            max_age: secs("max_age", 86400.0)?,
            retry: secs("retry", 5.0)?,
        });
    }
    Ok(out)
}

/// `[statsd]`, if present.
pub fn read_statsd(
    raw: &Config,
    warnings: &mut Vec<String>,
) -> Result<Option<StatsdConfig>, String> {
    if !raw.has_section("statsd") {
        return Ok(None);
    }
    for key in raw.own_options("statsd") {
        if !STATSD_KEYS.contains(&key.as_str()) {
            warnings.push(format!("[statsd]: unknown option '{key}' ignored"));
        }
    }
    let get = |key: &str| -> Result<Option<String>, String> {
        raw.get("statsd", key, &Vars::new())
            .map(|v| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
            .map_err(|e| e.to_string())
    };
    let port = match get("port")? {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("[statsd] port = {p:?} is not a port"))?,
        None => 8125,
    };
    let sample_rate = match get("sample_rate")? {
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|r| *r > 0.0 && *r <= 1.0)
            .ok_or_else(|| {
                format!("[statsd] sample_rate = {v:?}: a number above 0 and at most 1")
            })?,
        None => 1.0,
    };
    let interval = match get("interval")? {
        Some(v) => parse_seconds(&v)
            .ok()
            .filter(|s| *s >= 0.1)
            .ok_or_else(|| format!("[statsd] interval = {v:?}: a time of at least 0.1 s"))?,
        None => 10.0,
    };
    let prefix = get("prefix")?.unwrap_or_else(|| {
        // one metric tree per server, so several can share a StatsD server
        let host: String = hostname()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("banhammer.{host}")
    });
    Ok(Some(StatsdConfig {
        host: get("host")?.unwrap_or_else(|| "127.0.0.1".into()),
        port,
        prefix: prefix.trim_end_matches('.').to_string(),
        sample_rate,
        interval,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        text: &str,
    ) -> (
        Result<Vec<WebhookConfig>, String>,
        Result<Option<StatsdConfig>, String>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("banhammer.conf");
        std::fs::write(&p, text).unwrap();
        let raw = Config::read_files(&[p]).unwrap();
        let mut w = Vec::new();
        (read_webhooks(&raw, &mut w), read_statsd(&raw, &mut w))
    }

    #[test]
    fn webhooks_and_statsd_are_read_and_checked() {
        let (hooks, statsd) = read(
            "[webhook chat]\nurl = https://a.example/hook http://b.example/hook\nevents = ban unban start\nsecret = k\nheaders = X-Team: ops\n  Authorization: Bearer t\nmax_age = 2h\n[statsd]\nport = 9125\n",
        );
        let hooks = hooks.unwrap();
        assert_eq!(hooks[0].name, "chat");
        assert_eq!(hooks[0].urls.len(), 2);
        assert_eq!(
            hooks[0].headers[1],
            ("Authorization".into(), "Bearer t".into())
        );
        assert_eq!(hooks[0].max_age, 7200.0);
        let s = statsd.unwrap().unwrap();
        assert_eq!(s.port, 9125);
        assert!(s.prefix.starts_with("banhammer."), "{}", s.prefix);
        let (e, _) = read("[webhook x]\nurl = ftp://x\n");
        assert!(e.unwrap_err().contains("url"));
        let (e, _) = read("[webhook x]\nurl = http://x\nevents = ban explode\n");
        assert!(e.unwrap_err().contains("explode"));
    }
}
