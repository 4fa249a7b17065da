//! The syslog parse path: any datagram parses to a message (or a whole-text
//! fallback), and the line handed to filters is built without a panic.
#![no_main]
use banhammer::source::syslog::parse::{parse, SyslogZone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap_or_default();
    for zone in [
        SyslogZone::Local,
        SyslogZone::parse("+0530").unwrap_or(SyslogZone::Local),
    ] {
        let (m, _) = parse(data, "192.0.2.1".parse().unwrap(), now, zone);
        let _ = m.line();
        assert!(m.time.is_finite());
    }
});
