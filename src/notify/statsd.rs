//! StatsD: counters, gauges and timers over UDP, never blocking the daemon.
//!
//! Owns the UDP socket (non-blocking: a full buffer drops the datagram) and
//! the last values sent. A task every `interval` turns the jails' and the
//! syslog receiver's totals into counter increments (`lines.JAIL.SOURCE`,
//! `failures.JAIL`, `bans.JAIL`, `unbans.JAIL`, `syslog.EVENT`) and sends
//! gauges (`active_bans.JAIL`); timers (`match_time.JAIL`, ms per line of
//! a chunk, and `ban_latency.JAIL`, ms from reading the line to the ban
//! being recorded) are sent where they happen, through [`timer`]. Every
//! name starts with the prefix (default `banhammer.HOSTNAME`), so several
//! servers can share one StatsD server.

use crate::config::notify::StatsdConfig;
use crate::jail::JailDirectory;
use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

/// Largest datagram sent (fits the usual MTU with headers).
const DATAGRAM: usize = 1400;

pub struct Statsd {
    sock: UdpSocket,
    prefix: String,
    sample_rate: f64,
}

static CLIENT: OnceLock<Arc<Statsd>> = OnceLock::new();

/// A metric name part: letters, digits, `_` and `-` (a path such as
/// `/var/log/auth.log` becomes `var_log_auth_log`).
pub fn part(s: &str) -> String {
    let p: String = s
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if p.is_empty() {
        "_".into()
    } else {
        p
    }
}

impl Statsd {
    pub fn new(cfg: &StatsdConfig) -> std::io::Result<Statsd> {
        let sock = UdpSocket::bind(("0.0.0.0", 0)).or_else(|_| UdpSocket::bind(("::", 0)))?;
        sock.connect((cfg.host.as_str(), cfg.port))?;
        sock.set_nonblocking(true)?;
        Ok(Statsd {
            sock,
            prefix: cfg.prefix.clone(),
            sample_rate: cfg.sample_rate,
        })
    }

    /// Sends lines, packed into datagrams.
    pub fn send_lines(&self, lines: &[String]) {
        let mut buf = String::new();
        for l in lines {
            if !buf.is_empty() && buf.len() + l.len() + 1 > DATAGRAM {
                let _ = self.sock.send(buf.as_bytes());
                buf.clear();
            }
            if !buf.is_empty() {
                buf.push('\n');
            }
            buf.push_str(l);
        }
        if !buf.is_empty() {
            // a full socket buffer drops the datagram: metrics never wait
            let _ = self.sock.send(buf.as_bytes());
        }
    }

    fn line(&self, name: &str, value: &str, kind: &str) -> String {
        format!("{}.{name}:{value}|{kind}", self.prefix)
    }
}

/// Installs the client that [`timer`] uses.
pub fn install(s: Arc<Statsd>) {
    let _ = CLIENT.set(s);
}

/// Sends a timer sample (milliseconds), honouring the sample rate.
pub fn timer(name: &str, ms: f64) {
    let Some(s) = CLIENT.get() else { return };
    if s.sample_rate < 1.0 && rand_unit() >= s.sample_rate {
        return;
    }
    let rate = if s.sample_rate < 1.0 {
        format!("|@{}", s.sample_rate)
    } else {
        String::new()
    };
    s.send_lines(&[format!("{}.{name}:{ms:.3}|ms{rate}", s.prefix)]);
}

/// Cheap uniform [0, 1) for sampling (not for anything secret).
fn rand_unit() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut x = STATE.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Starts the periodic counters and gauges.
pub fn spawn(
    s: Arc<Statsd>,
    interval: f64,
    jails: JailDirectory,
    syslog: Option<Arc<crate::source::syslog::Receiver>>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs_f64(interval));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let mut lines = Vec::new();
            let mut counter = |name: String, total: u64, lines: &mut Vec<String>| {
                let before = last.insert(name.clone(), total).unwrap_or(0);
                let delta = total.saturating_sub(before);
                if delta > 0 {
                    lines.push(s.line(&name, &delta.to_string(), "c"));
                }
            };
            for j in jails.brief().await {
                let jail = part(&j.name);
                for (src, n) in &j.source_lines {
                    counter(format!("lines.{jail}.{}", part(src)), *n, &mut lines);
                }
                counter(format!("failures.{jail}"), j.total_failed, &mut lines);
                counter(format!("bans.{jail}"), j.total_banned, &mut lines);
                counter(format!("unbans.{jail}"), j.total_unbanned, &mut lines);
                lines.push(s.line(
                    &format!("active_bans.{jail}"),
                    &j.currently_banned.to_string(),
                    "g",
                ));
            }
            if let Some(r) = &syslog {
                for (k, v) in r.stats.snapshot().pairs() {
                    counter(format!("syslog.{k}"), v, &mut lines);
                }
            }
            s.send_lines(&lines);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_packed_and_names_cleaned() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rx.local_addr().unwrap().port();
        let s = Statsd::new(&StatsdConfig {
            host: "127.0.0.1".into(),
            port,
            prefix: "bh.test".into(),
            sample_rate: 1.0,
            interval: 1.0,
        })
        .unwrap();
        let lines: Vec<String> = (0..100)
            .map(|i| s.line(&format!("c{i}"), "1", "c"))
            .collect();
        s.send_lines(&lines);
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut got = 0;
        let mut buf = [0u8; 2048];
        while got < 100 {
            let n = rx.recv(&mut buf).unwrap();
            assert!(n <= DATAGRAM);
            got += std::str::from_utf8(&buf[..n]).unwrap().lines().count();
        }
        assert_eq!(got, 100);
        assert_eq!(part("/var/log/auth.log"), "var_log_auth_log");
    }
}
