//! `banhammer test-filter`: one JSON object per log line, as
//! `../shared/conformance/CONTRACT.md` specifies.

use super::{for_each_line, read_log, CmdError};
use crate::config::options::parse_named;
use crate::filter::{read_filter, Failure, Filter, FilterOptions, FilterState};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;

pub struct TestFilterArgs<'a> {
    pub filter_dir: &'a Path,
    pub spec: &'a str,
    pub log: &'a str,
    pub now: f64,
    pub no_date: bool,
    pub check_all: bool,
}

/// `datetime.utcfromtimestamp(now).isoformat()`: the time text journal
/// lines carry in Fail2Ban's tests.
fn iso_utc(now: f64) -> String {
    let secs = now.floor() as i64;
    let micros = ((now - now.floor()) * 1e6).round() as u32;
    match chrono::DateTime::from_timestamp(secs, micros * 1000) {
        Some(t) if micros > 0 => t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
        None => String::new(),
    }
}

pub fn failure_json(f: &Failure) -> Value {
    let mut m = Map::new();
    m.insert("match".into(), Value::Bool(true));
    let fid = f.fid.as_deref().unwrap_or_default();
    m.insert("fid".into(), json!(fid));
    m.insert("host".into(), json!(f.data.get("host").unwrap_or(fid)));
    m.insert("time".into(), f.time.map_or(Value::Null, |t| json!(t)));
    for k in ["user", "ip4", "ip6", "dns"] {
        if let Some(v) = f.data.get(k) {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(users) = &f.data.users {
        m.insert(
            "users".into(),
            json!(users.iter().map(|u| u.as_str()).collect::<Vec<_>>()),
        );
    }
    m.insert("attempts".into(), json!(f.attempts()));
    m.insert("failregex".into(), json!(f.regex));
    Value::Object(m)
}

pub fn run(args: &TestFilterArgs) -> Result<(), CmdError> {
    let spec =
        parse_named(args.spec).map_err(|e| CmdError::Usage(format!("bad filter spec: {e}")))?;
    let def = read_filter(args.filter_dir, &spec).map_err(crate::filter::FilterError::from)?;
    let filter = Filter::compile(
        def,
        FilterOptions {
            check_all: args.check_all,
            ..FilterOptions::default()
        },
    )?;
    let data = read_log(args.log)?;
    let mut state = FilterState::new(&filter);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let time_text = iso_utc(args.now);
    let mut result: Result<(), std::io::Error> = Ok(());
    for_each_line(&data, |line| {
        if result.is_err() {
            return;
        }
        let found = if args.no_date {
            state.process_dated(&filter, line, args.now, &time_text)
        } else {
            state.process_line(&filter, line, args.now)
        };
        let first = found.iter().find(|f| f.fid.is_some() && !f.is_nofail());
        result = match first {
            Some(f) => writeln!(out, "{}", failure_json(f)),
            None => writeln!(out, "{{\"match\": false}}"),
        };
    });
    result?;
    out.flush()?;
    Ok(())
}
