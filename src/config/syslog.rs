//! `[syslog]` in `banhammer.conf`: the syslog receiver's listeners and
//! limits, resolved and validated (addresses parsed, sizes and durations
//! checked, TLS files named).

use super::duration::parse_seconds;
use super::ini::{Config, Vars};
use crate::source::syslog::parse::SyslogZone;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Listen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.transport.name(), self.addr)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyslogConfig {
    pub listen: Vec<Listen>,
    /// Who may send; everyone else is dropped and counted.
    pub allowed_senders: Vec<IpNet>,
    /// Longest message accepted, in bytes.
    pub max_message_size: usize,
    /// Open TCP/TLS connections at most.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (seconds).
    pub idle_timeout: f64,
    /// A frame (or a TLS handshake) must complete within this (seconds):
    /// a sender dribbling bytes cannot hold a connection for long.
    pub frame_timeout: f64,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    /// Time zone of RFC 3164 timestamps.
    pub timezone: SyslogZone,
    /// UDP receive buffer (SO_RCVBUF), bytes.
    pub udp_buffer: usize,
    /// Messages waiting per jail; beyond that UDP drops (counted) and TCP
    /// waits.
    pub queue: usize,
}

impl Default for SyslogConfig {
    fn default() -> SyslogConfig {
        SyslogConfig {
            listen: Vec::new(),
            allowed_senders: vec![
                "127.0.0.0/8".parse().unwrap_or_else(|_| IpNet::default()),
                "::1/128".parse().unwrap_or_else(|_| IpNet::default()),
            ],
            max_message_size: 64 << 10,
            max_connections: 512,
            idle_timeout: 3600.0,
            frame_timeout: 30.0,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            timezone: SyslogZone::Local,
            udp_buffer: 16 << 20,
            queue: 65536,
        }
    }
}

const KEYS: &[&str] = &[
    "listen",
    "allowed_senders",
    "max_message_size",
    "max_connections",
    "idle_timeout",
    "frame_timeout",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "timezone",
    "udp_buffer",
    "queue",
];

/// `64k`, `1M`, `65536`.
pub fn parse_size(s: &str) -> Option<usize> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(mult)
}

fn parse_listen(word: &str) -> Result<Listen, String> {
    let (scheme, rest) = word.split_once("://").ok_or_else(|| {
        format!("{word:?}: write udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT")
    })?;
    let transport = match scheme.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        other => {
            return Err(format!(
                "{word:?}: unknown transport {other:?} (udp, tcp or tls)"
            ))
        }
    };
    let addr = rest
        .trim_end_matches('/')
        .parse::<SocketAddr>()
        .map_err(|_| {
            format!(
                "{word:?}: {rest:?} is not an address and port (such as 0.0.0.0:514 or [::]:514)"
            )
        })?;
    Ok(Listen { transport, addr })
}

impl SyslogConfig {
    /// Reads `[syslog]` from `raw`; `warnings` gets unknown keys. Errors
    /// name the key and say what is expected.
    pub fn read(raw: &Config, warnings: &mut Vec<String>) -> Result<SyslogConfig, String> {
        let mut c = SyslogConfig::default();
        if !raw.has_section("syslog") {
            return Ok(c);
        }
        for key in raw.own_options("syslog") {
            if !KEYS.contains(&key.as_str()) {
                warnings.push(format!("[syslog]: unknown option '{key}' ignored"));
            }
        }
        let vars = Vars::new();
        let get = |key: &str| -> Result<Option<String>, String> {
            raw.get("syslog", key, &vars)
                .map(|v| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
                .map_err(|e| e.to_string())
        };
        let bad = |key: &str, v: &str, what: &str| format!("[syslog] {key} = {v:?}: {what}");
        if let Some(v) = get("listen")? {
            for w in v.split_whitespace() {
                let l = parse_listen(w).map_err(|e| format!("[syslog] listen: {e}"))?;
                if !c.listen.contains(&l) {
                    c.listen.push(l);
                }
            }
        }
        if let Some(v) = get("allowed_senders")? {
            c.allowed_senders = v
                .split_whitespace()
                .map(|w| {
                    w.parse::<IpNet>()
                        .or_else(|_| w.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| bad("allowed_senders", w, "not an address or CIDR"))
                })
                .collect::<Result<_, _>>()?;
        }
        let size = |key: &str, min: usize| -> Result<Option<usize>, String> {
            match get(key)? {
                Some(v) => match parse_size(&v) {
                    Some(n) if n >= min => Ok(Some(n)),
                    _ => Err(bad(
                        key,
                        &v,
                        &format!("a size of at least {min} bytes, such as 64k"),
                    )),
                },
                None => Ok(None),
            }
        };
        let secs = |key: &str| -> Result<Option<f64>, String> {
            match get(key)? {
                Some(v) => match parse_seconds(&v) {
                    Ok(s) if s > 0.0 => Ok(Some(s)),
                    _ => Err(bad(key, &v, "a positive time such as 30s or 10m")),
                },
                None => Ok(None),
            }
        };
        if let Some(n) = size("max_message_size", 480)? {
            c.max_message_size = n;
        }
        if let Some(n) = size("udp_buffer", 4096)? {
            c.udp_buffer = n;
        }
        if let Some(v) = get("max_connections")? {
            c.max_connections = v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("max_connections", &v, "a whole number above 0"))?;
        }
        if let Some(v) = get("queue")? {
            c.queue = v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("queue", &v, "a whole number above 0"))?;
        }
        if let Some(s) = secs("idle_timeout")? {
            c.idle_timeout = s;
        }
        if let Some(s) = secs("frame_timeout")? {
            c.frame_timeout = s;
        }
        if let Some(v) = get("timezone")? {
            c.timezone = SyslogZone::parse(&v)
                .ok_or_else(|| bad("timezone", &v, "local, UTC, or an offset such as +0100"))?;
        }
        c.tls_cert = get("tls_cert")?.map(PathBuf::from);
        c.tls_key = get("tls_key")?.map(PathBuf::from);
        c.tls_client_ca = get("tls_client_ca")?.map(PathBuf::from);
        let tls = c.listen.iter().any(|l| l.transport == Transport::Tls);
        if tls && (c.tls_cert.is_none() || c.tls_key.is_none()) {
            return Err("[syslog] a tls:// listener needs tls_cert and tls_key".into());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<SyslogConfig, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("banhammer.conf");
        std::fs::write(&p, text).expect("write");
        let raw = Config::read_files(&[p]).map_err(|e| e.to_string())?;
        SyslogConfig::read(&raw, &mut Vec::new())
    }

    #[test]
    fn listeners_and_limits() {
        let c = read(
            "[syslog]\nlisten = udp://127.0.0.1:514 tcp://0.0.0.0:514\n  tls://[::]:6514\ntls_cert = /c.pem\ntls_key = /k.pem\nmax_message_size = 8k\nallowed_senders = 10.0.0.0/8 192.0.2.1\ntimezone = UTC\n",
        )
        .expect("valid");
        let names: Vec<String> = c.listen.iter().map(|l| l.to_string()).collect();
        assert_eq!(
            names,
            [
                "udp://127.0.0.1:514",
                "tcp://0.0.0.0:514",
                "tls://[::]:6514"
            ]
        );
        assert_eq!(c.max_message_size, 8192);
        assert_eq!(c.allowed_senders.len(), 2);
    }

    #[test]
    fn mistakes_are_named() {
        let e = read("[syslog]\nlisten = udp:/127.0.0.1:514\n").unwrap_err();
        assert!(e.contains("listen") && e.contains("udp://"), "{e}");
        let e = read("[syslog]\nlisten = tls://127.0.0.1:6514\n").unwrap_err();
        assert!(e.contains("tls_cert"), "{e}");
        let e = read("[syslog]\nmax_message_size = huge\n").unwrap_err();
        assert!(e.contains("max_message_size"), "{e}");
    }
}
