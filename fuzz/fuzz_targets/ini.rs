//! The INI reader: any text gives a configuration or an error with a line,
//! and interpolating every option of it never panics or loops.
#![no_main]
use banhammer::config::ini::{parse_lenient, parse_str, Config, Vars};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let p = Path::new("fuzz.conf");
    let _ = parse_str(p, &text);
    let file = parse_lenient(p, &text);
    let mut cfg = Config::default();
    cfg.merge(&file);
    let sections: Vec<String> = cfg.sections.keys().cloned().collect();
    for s in sections {
        for o in cfg.options(&s) {
            let _ = cfg.get(&s, &o, &Vars::new());
            let _ = cfg.get_ex(&s, &o, &Vars::new());
        }
    }
});
