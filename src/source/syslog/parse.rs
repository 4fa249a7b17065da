//! Syslog messages: one frame's bytes parsed with `syslog_loose` (RFC 5424
//! first, then RFC 3164) into a [`SyslogMessage`], and the line filters
//! see (Fail2Ban's journal-backend form `HOST APP[PID]: MESSAGE`).
//!
//! Nothing here fails: invalid UTF-8 is replaced, a frame that parses as
//! neither RFC keeps its whole text as the message and the time of
//! receipt; both are reported in [`ParseNotes`] to be counted.

use chrono::{DateTime, Datelike, FixedOffset, Local, TimeZone, Utc};
use std::net::IpAddr;
use syslog_loose::{IncompleteDate, Variant};

/// The time zone of RFC 3164 timestamps (which carry none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SyslogZone {
    Local,
    Fixed(FixedOffset),
}

impl SyslogZone {
    /// `local`, `UTC`, or an offset such as `+0100` / `-05:30`.
    pub fn parse(s: &str) -> Option<SyslogZone> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "local" | "" => return Some(SyslogZone::Local),
            "utc" | "gmt" | "z" => return Some(SyslogZone::Fixed(FixedOffset::east_opt(0)?)),
            _ => {}
        }
        let (sign, rest) = match s.as_bytes().first()? {
            b'+' => (1, &s[1..]),
            b'-' => (-1, &s[1..]),
            _ => return None,
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let h: i32 = digits[..2].parse().ok()?;
        let m: i32 = digits[2..].parse().ok()?;
        FixedOffset::east_opt(sign * (h * 3600 + m * 60)).map(SyslogZone::Fixed)
    }
}

/// A received syslog message.
#[derive(Debug, Clone, PartialEq)]
pub struct SyslogMessage {
    /// Epoch seconds: the header's timestamp, else the time of receipt.
    pub time: f64,
    /// The header's HOSTNAME.
    pub host: Option<String>,
    pub app: Option<String>,
    pub pid: Option<String>,
    /// Facility code (0 = kern ... 23 = local7).
    pub facility: Option<u8>,
    pub severity: Option<u8>,
    pub msgid: Option<String>,
    /// RFC 5424 structured data, as written (`[id k="v"]...`).
    pub structured_data: Option<String>,
    pub text: String,
    /// The address the message came from.
    pub peer: IpAddr,
}

/// What parsing noticed (for the counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseNotes {
    pub invalid_utf8: bool,
    /// Parsed as neither RFC 5424 nor RFC 3164.
    pub unparsed: bool,
}

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "security", "console", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// A facility's name (`auth`, `local0`, ...).
pub fn facility_name(code: u8) -> &'static str {
    FACILITIES.get(code as usize).copied().unwrap_or("?")
}

/// A facility code by name (also `audit` for 13 and `alert` for 14).
pub fn facility_code(name: &str) -> Option<u8> {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "audit" => Some(13),
        "alert" => Some(14),
        _ => FACILITIES.iter().position(|f| *f == n).map(|p| p as u8),
    }
}

/// The year of a year-less date: this year, unless that puts it more than
/// a day in the future (a December line read in January).
fn infer_year(now: DateTime<Utc>, d: IncompleteDate) -> i32 {
    let (month, day, ..) = d;
    let year = now.year();
    let later = (month, day) > (now.month(), now.day());
    if later {
        // more than a day ahead: last year's
        let candidate = Utc
            .with_ymd_and_hms(year, month, day.min(28), 0, 0, 0)
            .single();
        if candidate.is_none_or(|c| c > now + chrono::Duration::days(1)) {
            return year - 1;
        }
    }
    year
}

/// Which parsers to try: RFC 3164 alone where RFC 5424 cannot match
/// (its VERSION digit does not follow the PRI), else both, 5424 first.
/// Either way the result is what trying both gives.
fn variant(text: &str) -> Variant {
    let t = text.trim_start().as_bytes();
    // a PRI of at most 3 digits, which the 5424 parser takes whole
    let after_pri = match t.first() {
        Some(b'<') => {
            let digits = t[1..].iter().take_while(|b| b.is_ascii_digit()).count();
            match t.get(1 + digits) {
                Some(b'>') if (1..=3).contains(&digits) => &t[digits + 2..],
                _ => return Variant::Either,
            }
        }
        _ => t,
    };
    match after_pri.first() {
        Some(b) if b.is_ascii_digit() => Variant::Either,
        _ => Variant::RFC3164,
    }
}

fn parse_in<Tz: TimeZone + Copy>(
    text: &str,
    now: DateTime<Utc>,
    tz: Tz,
) -> Option<syslog_loose::Message<&str>> {
    syslog_loose::parse_message_with_year_exact_tz(
        text,
        |d| infer_year(now, d),
        Some(tz),
        variant(text),
    )
    .ok()
}

/// Parses one frame (or datagram) from `peer` received at `now`.
pub fn parse(
    raw: &[u8],
    peer: IpAddr,
    now: DateTime<Utc>,
    zone: SyslogZone,
) -> (SyslogMessage, ParseNotes) {
    let mut notes = ParseNotes::default();
    // the validator's fast path first: nearly every message is valid
    let decoded = match std::str::from_utf8(raw) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(raw),
    };
    notes.invalid_utf8 = matches!(decoded, std::borrow::Cow::Owned(_));
    let text = decoded.trim_end_matches(['\n', '\r', '\0']);
    let received = now.timestamp_micros() as f64 / 1e6;
    let parsed = match zone {
        SyslogZone::Local => parse_in(text, now, Local),
        SyslogZone::Fixed(off) => parse_in(text, now, off),
    };
    let Some(m) = parsed.filter(|m| m.facility.is_some() || m.timestamp.is_some()) else {
        notes.unparsed = true;
        return (
            SyslogMessage {
                time: received,
                host: None,
                app: None,
                pid: None,
                facility: None,
                severity: None,
                msgid: None,
                structured_data: None,
                text: text.to_string(),
                peer,
            },
            notes,
        );
    };
    let structured_data = (!m.structured_data.is_empty()).then(|| {
        m.structured_data
            .iter()
            .map(|e| e.to_string())
            .collect::<String>()
    });
    let msg = m.msg.trim_start_matches('\u{feff}');
    let own = |s: Option<&str>| s.filter(|v| !v.is_empty() && *v != "-").map(str::to_string);
    (
        SyslogMessage {
            time: m
                .timestamp
                .map_or(received, |t| t.timestamp_micros() as f64 / 1e6),
            host: own(m.hostname),
            app: own(m.appname),
            pid: m.procid.as_ref().map(|p| p.to_string()),
            facility: m.facility.map(|f| f as u8),
            severity: m.severity.map(|s| s as u8),
            msgid: own(m.msgid),
            structured_data,
            text: msg.to_string(),
            peer,
        },
        notes,
    )
}

impl SyslogMessage {
    /// The line filters see: `HOST APP[PID]: MESSAGE`, as Fail2Ban's
    /// journal backend writes a journal entry (newlines as `\n`).
    pub fn line(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 48);
        if let Some(h) = &self.host {
            out.push_str(h);
            out.push(' ');
        }
        if let Some(app) = &self.app {
            out.push_str(app);
            if let Some(pid) = &self.pid {
                out.push('[');
                out.push_str(pid);
                out.push(']');
            }
            out.push_str(": ");
        }
        if self.text.contains('\n') {
            out.push_str(&self.text.replace('\n', "\\n"));
        } else {
            out.push_str(&self.text);
        }
        out
    }

    /// The sending host for people: the header's name, else the peer.
    pub fn sender(&self) -> String {
        self.host.clone().unwrap_or_else(|| self.peer.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0)
            .single()
            .expect("valid date")
    }

    fn peer() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    fn utc() -> SyslogZone {
        SyslogZone::parse("UTC").expect("zone")
    }

    #[test]
    fn rfc3164_becomes_a_journal_style_line() {
        let (m, notes) = parse(
            b"<38>Nov 22 09:59:58 web1 sshd[4242]: Failed password for root from 192.0.2.7 port 22 ssh2\n",
            peer(),
            now(),
            utc(),
        );
        assert_eq!(notes, ParseNotes::default());
        assert_eq!(
            m.line(),
            "web1 sshd[4242]: Failed password for root from 192.0.2.7 port 22 ssh2"
        );
        assert_eq!(m.time, now().timestamp() as f64 - 2.0);
        assert_eq!(m.facility.map(facility_name), Some("auth"));
    }

    #[test]
    fn rfc5424_keeps_structured_data_and_rsyslogs_double_space() {
        let (m, _) = parse(
            b"<86>1 2026-11-22T09:00:00.5+01:00 web2 sshd 77 - [origin ip=\"10.0.0.2\"]  Invalid user x from 192.0.2.8",
            peer(),
            now(),
            utc(),
        );
        assert_eq!(m.line(), "web2 sshd[77]: Invalid user x from 192.0.2.8");
        // 09:00 at +01:00 is 08:00 UTC
        assert_eq!(m.time, now().timestamp() as f64 - 7200.0 + 0.5);
        assert_eq!(
            m.structured_data.as_deref(),
            Some("[origin ip=\"10.0.0.2\"]")
        );
        assert_eq!(m.facility.map(facility_name), Some("authpriv"));
    }

    #[test]
    fn a_december_line_in_january_is_last_year() {
        let jan = Utc
            .with_ymd_and_hms(2027, 1, 1, 0, 5, 0)
            .single()
            .expect("date");
        let (m, _) = parse(b"<13>Dec 31 23:59:00 h app: x", peer(), jan, utc());
        let want = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 0)
            .single()
            .expect("date");
        assert_eq!(m.time, want.timestamp() as f64);
    }

    #[test]
    fn time_zone_of_rfc3164() {
        let zone = SyslogZone::parse("+0100").expect("zone");
        let (m, _) = parse(b"<13>Nov 22 10:00:00 h app: x", peer(), now(), zone);
        assert_eq!(m.time, now().timestamp() as f64 - 3600.0);
        assert_eq!(SyslogZone::parse("+01:00"), Some(zone));
        assert_eq!(SyslogZone::parse("nowhere"), None);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_noted() {
        let (m, notes) = parse(b"<13>Nov 22 10:00:00 h app: caf\xe9", peer(), now(), utc());
        assert!(notes.invalid_utf8);
        assert_eq!(m.text, "caf\u{fffd}");
    }

    #[test]
    fn rfc3164_alone_is_tried_only_where_rfc5424_cannot_match() {
        let frames: [&[u8]; 9] = [
            b"<38>Nov 22 09:59:58 web1 sshd[4242]: Failed password for root from 192.0.2.7 port 22 ssh2",
            b"<86>1 2026-11-22T09:00:00.5+01:00 web2 sshd 77 - - Invalid user x from 192.0.2.8",
            b"  <13>1 2026-11-22T09:00:00Z h app - - - indented 5424",
            b"<13>Nov 22 10:00:00 h app: x",
            b"Nov 22 10:00:00 h app: no PRI",
            b"1 2026-11-22T09:00:00Z h app - - - no PRI, 5424",
            b"<99999>1 2026-11-22T09:00:00Z h app - - - long PRI",
            b"<x>Nov 22 10:00:00 h app: bad PRI",
            b"<>",
        ];
        for raw in frames {
            let text = std::str::from_utf8(raw).expect("utf-8");
            let picked = parse_in(text, now(), Utc);
            let both = syslog_loose::parse_message_with_year_exact_tz(
                text,
                |d| infer_year(now(), d),
                Some(Utc),
                Variant::Either,
            )
            .ok();
            assert_eq!(picked, both, "{text}");
        }
        assert!(matches!(
            variant("<38>Nov 22 09:59:58 h a: m"),
            Variant::RFC3164
        ));
        assert!(matches!(
            variant("<86>1 2026-11-22T09:00:00Z h a - - - m"),
            Variant::Either
        ));
    }

    #[test]
    fn garbage_keeps_its_text() {
        let (m, notes) = parse(b"\x01\x02 no header at all", peer(), now(), utc());
        assert!(notes.unparsed);
        assert_eq!(m.text, "\u{1}\u{2} no header at all");
        assert_eq!(m.line(), m.text);
        assert_eq!(m.time, now().timestamp() as f64);
    }
}
