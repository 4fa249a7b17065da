//! Matching with the shipped filters (sshd in every mode, and the rest):
//! any line, no panic, and a failure's id is always one of the line's own
//! substrings.
#![no_main]
use banhammer::config::options::parse_named;
use banhammer::filter::reader::read_filter;
use banhammer::filter::{Filter, FilterOptions, FilterState};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn filters() -> &'static Vec<Filter> {
    static F: OnceLock<Vec<Filter>> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../filters");
        [
            "sshd",
            "sshd[mode=aggressive]",
            "sshd[logtype=journal]",
            "nginx-http-auth",
            "nginx-limit-req",
            "apache-auth",
            "postfix",
            "dovecot",
            "vsftpd",
            "recidive",
            "elgg",
            "webapp",
            "banhammer-admin",
        ]
        .iter()
        .filter_map(|spec| {
            let spec = parse_named(spec).ok()?;
            let def = read_filter(&dir, &spec).ok()?;
            Filter::compile(def, FilterOptions::default()).ok()
        })
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for f in filters() {
        let mut st = FilterState::new(f);
        for line in text.split('\n') {
            for fail in st.process_line(f, line, 1_796_000_000.0) {
                if let Some(id) = &fail.fid {
                    assert!(
                        text.contains(id.as_str()) || id.parse::<std::net::IpAddr>().is_ok(),
                        "id {id:?} not from the input"
                    );
                }
            }
        }
    }
});
