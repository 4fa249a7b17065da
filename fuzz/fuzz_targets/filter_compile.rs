//! Filter compilation: any failregex/prefregex/ignoreregex/datepattern text
//! compiles or is refused with an error, never a panic; what compiles runs
//! on a few lines.
#![no_main]
use banhammer::filter::reader::FilterDefinition;
use banhammer::filter::{Filter, FilterOptions, FilterState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1}');
    let failregex: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    let prefregex = parts.next().map(String::from).filter(|s| !s.is_empty());
    let ignoreregex: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    let datepattern = parts.next().map(String::from).filter(|s| !s.is_empty());
    let def = FilterDefinition {
        name: "fuzz".into(),
        failregex,
        prefregex,
        ignoreregex,
        datepattern,
        ..FilterDefinition::default()
    };
    if let Ok(f) = Filter::compile(def, FilterOptions::default()) {
        let mut st = FilterState::new(&f);
        for line in [
            "Dec  1 10:00:00 srv sshd[1]: Failed password for root from 192.0.2.1 port 22 ssh2",
            "2026-12-01T10:00:00Z host app: x from 2001:db8::1",
            &text,
        ] {
            let _ = st.process_line(&f, line, 1_796_000_000.0);
        }
    }
});
