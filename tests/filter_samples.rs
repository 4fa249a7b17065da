//! Every shipped filter against its annotated sample log (tests/samples/NAME),
//! in Fail2Ban's failJSON format: `# failJSON: {...}` before a line says what
//! the line must produce; `# filterOptions: [{...}, ...]` starts a block run
//! with those filter options (`"logtype": "journal"` lines carry no date);
//! any other non-comment line must produce no failure.

use banhammer::config::options::NamedOptions;
use banhammer::filter::date::LocalClock;
use banhammer::filter::{read_filter, Failure, FailureDetail, Filter, FilterOptions, FilterState};
use indexmap::IndexMap;
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;

/// Fail2Ban's test clock: 2005-08-14 12:00:00 CEST.
const NOW: f64 = 1124013600.0;

struct Instance {
    filter: Filter,
    state: FilterState,
    journal: bool,
}

fn same_host(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> Option<IpAddr> {
        let ip: IpAddr = s.trim_matches(['[', ']']).parse().ok()?;
        Some(match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        })
    };
    match (norm(a), norm(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn zurich_epoch(text: &str) -> f64 {
    let (main, frac) = text.split_once('.').unwrap_or((text, ""));
    let t =
        chrono::NaiveDateTime::parse_from_str(main, "%Y-%m-%dT%H:%M:%S").expect("failJSON time");
    let secs = LocalClock::default().to_epoch(t).expect("local time") as f64;
    let frac: f64 = if frac.is_empty() {
        0.0
    } else {
        format!("0.{frac}").parse().unwrap()
    };
    secs + frac
}

/// Compares one result with its failJSON; returns what is wrong.
fn check(expect: &Value, got: Option<&Failure>) -> Option<String> {
    let want_match = expect
        .get("match")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(f) = got else {
        return want_match.then(|| "expected a failure, got none".to_string());
    };
    if !want_match {
        return Some(format!("expected no failure, got {:?}", f.fid));
    }
    let obj = expect.as_object()?;
    for (k, v) in obj {
        let problem = match k.as_str() {
            "match" | "desc" | "constraint" => None,
            "host" => {
                let host = f.host().unwrap_or_default();
                (!same_host(v.as_str().unwrap_or_default(), host))
                    .then(|| format!("host {host:?}, expected {v}"))
            }
            "time" => match v.as_str() {
                None => None,
                Some(t) => {
                    let want = zurich_epoch(t);
                    match f.time {
                        Some(got) if (got - want).abs() < 0.001 => None,
                        got => Some(format!("time {got:?}, expected {want} ({t})")),
                    }
                }
            },
            "attempts" => (v.as_u64() != Some(f.attempts() as u64))
                .then(|| format!("attempts {}, expected {v}", f.attempts())),
            "users" => {
                let mut want: Vec<String> = v
                    .as_array()?
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect();
                want.sort();
                let got: Vec<String> = f
                    .data
                    .users
                    .iter()
                    .flatten()
                    .map(|u| u.to_string())
                    .collect();
                (want != got).then(|| format!("users {got:?}, expected {want:?}"))
            }
            key => {
                let got = f.data.get(key);
                match v {
                    Value::Null => got.map(|g| format!("{key} {g:?}, expected none")),
                    v => (got != v.as_str()).then(|| format!("{key} {got:?}, expected {v}")),
                }
            }
        };
        if problem.is_some() {
            return problem;
        }
    }
    None
}

fn option_sets(v: &Value) -> Vec<IndexMap<String, String>> {
    let list = match v {
        Value::Array(a) => a.clone(),
        o => vec![o.clone()],
    };
    list.iter()
        .map(|o| {
            o.as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| !k.starts_with("test."))
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str()
                                    .map(String::from)
                                    .unwrap_or_else(|| v.to_string()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect()
}

struct Counts {
    failures: usize,
    non_failures: usize,
    injection: bool,
}

fn run_sample(name: &str, filters: &Path, sample: &Path, errors: &mut Vec<String>) -> Counts {
    let text = std::fs::read_to_string(sample).expect("sample log");
    let mut instances: IndexMap<String, Instance> = IndexMap::new();
    let mut current: Vec<String> = Vec::new();
    let mut counts = Counts {
        failures: 0,
        non_failures: 0,
        injection: false,
    };
    let open =
        |opts: IndexMap<String, String>, instances: &mut IndexMap<String, Instance>| -> String {
            let key = format!("{opts:?}");
            if !instances.contains_key(&key) {
                let journal = opts.get("logtype").is_some_and(|v| v == "journal");
                let spec = NamedOptions {
                    name: name.to_string(),
                    options: opts,
                };
                let def = read_filter(filters, &spec).unwrap_or_else(|e| panic!("{e}"));
                let filter = Filter::compile(def, FilterOptions::default())
                    .unwrap_or_else(|e| panic!("{e}"));
                let state = FilterState::new(&filter);
                instances.insert(
                    key.clone(),
                    Instance {
                        filter,
                        state,
                        journal,
                    },
                );
            }
            key
        };
    current.push(open(IndexMap::new(), &mut instances));
    let mut expect: Option<Value> = None;
    for (lineno, line) in text.lines().enumerate() {
        let annotation = line
            .trim_start_matches('#')
            .strip_prefix(' ')
            .or_else(|| Some(line.trim_start_matches('#')))
            .filter(|_| line.starts_with('#'));
        if let (None, Some(a)) = (&expect, annotation) {
            if let Some(json) = a.strip_prefix("failJSON:") {
                expect = Some(
                    serde_json::from_str(json)
                        .unwrap_or_else(|e| panic!("{}:{}: {e}", sample.display(), lineno + 1)),
                );
                continue;
            }
            if let Some(json) = a.strip_prefix("filterOptions:") {
                let v: Value = serde_json::from_str(json).expect("filterOptions JSON");
                current = option_sets(&v)
                    .into_iter()
                    .map(|o| open(o, &mut instances))
                    .collect();
                continue;
            }
        }
        let e = match expect.take() {
            Some(e) => e,
            None if line.starts_with('#') || line.trim().is_empty() => continue,
            None => serde_json::json!({"match": false}),
        };
        if e.get("match").and_then(Value::as_bool) == Some(true) {
            counts.failures += 1;
        } else {
            counts.non_failures += 1;
        }
        if line.contains("from 192.0.2.7")
            || e.get("desc")
                .and_then(Value::as_str)
                .is_some_and(|d| d.contains("inject"))
        {
            counts.injection = true;
        }
        for key in &current {
            let inst = &mut instances[key];
            let found = if inst.journal {
                inst.state.process_dated(&inst.filter, line, NOW, "")
            } else {
                inst.state.process_line(&inst.filter, line, NOW)
            };
            let first = found.iter().find(|f| f.fid.is_some() && !f.is_nofail());
            if let Some(problem) = check(&e, first) {
                errors.push(format!(
                    "{}:{} [{key}]: {problem}\n    {line}",
                    sample.display(),
                    lineno + 1
                ));
            }
        }
    }
    counts
}

#[test]
fn every_shipped_filter_passes_its_sample_log() {
    // failJSON times are local times in Europe/Zurich (as in Fail2Ban's tests)
    std::env::set_var("TZ", "Europe/Zurich");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let filters = root.join("filters");
    let samples = root.join("tests/samples");
    let mut errors = Vec::new();
    let mut tested = Vec::new();
    for entry in std::fs::read_dir(&filters).expect("filters/") {
        let path = entry.expect("dir entry").path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "conf") || name == "common" {
            continue;
        }
        let sample = samples.join(name);
        assert!(
            sample.is_file(),
            "filter {name} has no sample log at {}",
            sample.display()
        );
        let c = run_sample(name, &filters, &sample, &mut errors);
        assert!(
            c.failures >= 5,
            "{name}: sample has {} lines that must match (need at least 5)",
            c.failures
        );
        assert!(
            c.non_failures >= 3,
            "{name}: sample has {} lines that must not match (need at least 3)",
            c.non_failures
        );
        tested.push(name.to_string());
    }
    assert!(
        tested.len() >= 10,
        "only {} filters tested: {tested:?}",
        tested.len()
    );
    assert!(
        errors.is_empty(),
        "{} wrong lines:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

/// The daemon's failures (`Evidence`) and `banhammer regex`'s (`Lean`) are
/// the full ones with parts left out: the same lines fail with the same
/// regex, id and time; `Evidence` keeps every group and log line, and
/// only the `<F-MLFID>` connection's users are left out.
#[test]
fn fewer_details_change_no_failure() {
    std::env::set_var("TZ", "Europe/Zurich");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = NamedOptions {
        name: "sshd".into(),
        options: IndexMap::new(),
    };
    let def = read_filter(&root.join("filters"), &spec).expect("sshd filter");
    let filter = Filter::compile(def, FilterOptions::default()).expect("compiles");
    let text = std::fs::read_to_string(root.join("tests/samples/sshd")).expect("sample");
    let mut states: Vec<FilterState> = [
        FailureDetail::Full,
        FailureDetail::Evidence,
        FailureDetail::Lean,
    ]
    .into_iter()
    .map(|d| {
        let mut st = FilterState::new(&filter);
        st.set_failure_detail(d);
        st
    })
    .collect();
    let (mut failures, mut with_users) = (0, 0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let got: Vec<Vec<Failure>> = states
            .iter_mut()
            .map(|st| st.process_line(&filter, line, NOW))
            .collect();
        let decided = |fs: &[Failure]| -> Vec<(usize, Option<String>, Option<f64>, bool)> {
            fs.iter()
                .map(|f| {
                    (
                        f.regex,
                        f.fid.as_ref().map(|v| v.to_string()),
                        f.time,
                        f.is_nofail(),
                    )
                })
                .collect()
        };
        let (full, evidence, lean) = (&got[0], &got[1], &got[2]);
        assert_eq!(decided(full), decided(evidence), "{line}");
        assert_eq!(decided(full), decided(lean), "{line}");
        for (f, e) in full.iter().zip(evidence) {
            let groups = |f: &Failure| -> Vec<(String, Option<String>)> {
                f.data
                    .groups
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                    .collect()
            };
            assert_eq!(groups(f), groups(e), "{line}");
            let lines =
                |f: &Failure| -> Vec<String> { f.data.matches.iter().map(|m| m.full()).collect() };
            assert_eq!(lines(f), lines(e), "{line}");
            assert!(e.data.users.is_none(), "{line}");
            failures += 1;
            with_users += usize::from(f.data.users.is_some());
        }
    }
    // the sample has connections with users, so something was left out
    assert!(
        failures > 30 && with_users > 10,
        "{failures} failures, {with_users} with users"
    );
}

/// Failregexes searched ahead by the state that reads
/// ([`FilterState::search_ahead`], as `banhammer regex --threads 2` does)
/// give the failures searching them in turn gives, for every shipped
/// filter, with and without `check_all`, whichever failregexes are
/// handed over; and the finishing state then does not search them.
#[test]
fn failregexes_searched_ahead_give_what_searching_in_turn_gives() {
    std::env::set_var("TZ", "Europe/Zurich");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut compared = 0;
    let mut names: Vec<String> = std::fs::read_dir(root.join("tests/samples"))
        .expect("samples")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        let spec = NamedOptions {
            name: name.clone(),
            options: IndexMap::new(),
        };
        let def = read_filter(&root.join("filters"), &spec).expect("filter");
        let text = std::fs::read_to_string(root.join("tests/samples").join(name)).expect("sample");
        for check_all in [true, false] {
            let options = FilterOptions {
                check_all,
                ..FilterOptions::default()
            };
            let filter = Filter::compile(def.clone(), options).expect("compiles");
            let n = filter.failregex_sources().len();
            let handed: [Vec<usize>; 3] = [
                (0..n).collect(),
                (0..n).step_by(2).collect(),
                (1..n).step_by(2).collect(),
            ];
            for regexes in &handed {
                let mut in_turn = FilterState::new(&filter);
                let mut reading = FilterState::new(&filter);
                reading.search_ahead(&filter, regexes);
                let mut finishing = FilterState::new(&filter);
                finishing.time_searches(&filter, true);
                let mut front = banhammer::filter::LineFront::default();
                let (mut want, mut got) = (Vec::new(), Vec::new());
                for line in text.lines().filter(|l| !l.starts_with('#')) {
                    want.clear();
                    got.clear();
                    in_turn.process_line_into(&filter, line, NOW, &mut want);
                    reading.front_line(&filter, line, NOW, &mut front);
                    finishing.finish_line(&filter, &mut front, NOW, &mut got);
                    assert_eq!(
                        format!("{want:?}"),
                        format!("{got:?}"),
                        "{name} check_all={check_all} ahead {regexes:?}: {line}"
                    );
                    compared += want.len();
                }
                if name == "sshd" && check_all {
                    // single-line: every handed-over search was taken as done
                    let times = finishing.search_times().expect("timed");
                    for &i in regexes {
                        assert_eq!(times[i], std::time::Duration::ZERO, "regex {i}");
                    }
                    let others = (0..n).filter(|i| !regexes.contains(i));
                    assert!(
                        regexes.len() == n
                            || others.map(|i| times[i]).sum::<std::time::Duration>()
                                > std::time::Duration::ZERO,
                        "the others were searched"
                    );
                }
            }
        }
    }
    assert!(names.len() >= 11, "{names:?}");
    assert!(compared > 500, "{compared} failures compared");
}
