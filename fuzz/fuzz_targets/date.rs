//! Date detection: Fail2Ban's default templates and any datepattern, on any
//! line, find a date or none, never panic; a found date is a real time.
#![no_main]
use banhammer::filter::date::{DateDetector, DateState};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn defaults() -> &'static DateDetector {
    static D: OnceLock<DateDetector> = OnceLock::new();
    D.get_or_init(DateDetector::with_defaults)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, line) = text.split_once('\u{1}').unwrap_or(("", &text));
    let own = if pattern.is_empty() {
        None
    } else {
        DateDetector::from_datepattern(pattern).ok()
    };
    for det in std::iter::once(defaults()).chain(own.as_ref()) {
        let mut st = DateState::new(det);
        for _ in 0..2 {
            if let Some(m) = st.match_time(det, line) {
                assert!(m.start <= m.end && m.end <= line.len());
                if let Some(t) = st.get_time(det, line, &m, 1_796_000_000.0) {
                    assert!(t.is_finite());
                }
            }
        }
    }
});
