//! `banhammer regex LOG FILTER [IGNOREREGEX]`: the counterpart of
//! `fail2ban-regex`, with its report format and its counting (every
//! failregex is tried on every line unless `--no-check-all`; comment and
//! empty lines are skipped; host names are not resolved, as with `--raw`).

use super::{for_each_line_in, open_log, CmdError};
use crate::config::options::parse_named;
use crate::filter::{
    read_filter, read_filter_at, FailureDetail, Filter, FilterDefinition, FilterError,
    FilterOptions, FilterState, TupleLine,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub struct RegexArgs {
    pub log: String,
    pub filter: String,
    pub ignore: Option<String>,
    pub filter_dir: PathBuf,
    pub check_all: bool,
    pub print_all_matched: bool,
    pub print_all_missed: bool,
    pub print_all_ignored: bool,
    pub datepattern: Option<String>,
    pub maxlines: Option<usize>,
    pub now: Option<f64>,
}

/// What FILTER names: a filter file, a filter in the filter dir, or a regex.
enum Source {
    File(PathBuf, String),
    Named(String),
    Regex(String),
}

fn classify(value: &str, filter_dir: &Path) -> Source {
    if let Ok(spec) = parse_named(value) {
        let p = Path::new(&spec.name);
        let looks_like_path = spec.name.contains('/')
            || spec.name.ends_with(".conf")
            || spec.name.ends_with(".local");
        if looks_like_path && p.is_file() {
            return Source::File(p.to_path_buf(), value.to_string());
        }
        if !spec.name.contains(['/', '<', '\\', '^', '(']) {
            let base = filter_dir.join(&spec.name);
            if base.with_extension("conf").is_file() || base.with_extension("local").is_file() {
                return Source::Named(value.to_string());
            }
        }
    }
    Source::Regex(value.to_string())
}

fn load(value: &str, filter_dir: &Path) -> Result<(FilterDefinition, String), CmdError> {
    match classify(value, filter_dir) {
        Source::File(path, spec) => {
            let named = parse_named(&spec).map_err(|e| CmdError::Usage(e.to_string()))?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("filter")
                .to_string();
            let base = path.with_extension("");
            let def = read_filter_at(&base, &stem, &named.options).map_err(FilterError::from)?;
            let dir = path
                .parent()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            Ok((
                def,
                format!("Use   failregex filter file : {stem}, basedir: {dir}"),
            ))
        }
        Source::Named(spec) => {
            let named = parse_named(&spec).map_err(|e| CmdError::Usage(e.to_string()))?;
            let def = read_filter(filter_dir, &named).map_err(FilterError::from)?;
            Ok((
                def,
                format!(
                    "Use   failregex filter file : {}, basedir: {}",
                    named.name,
                    filter_dir.display()
                ),
            ))
        }
        Source::Regex(r) => Ok((
            FilterDefinition {
                name: "regex".into(),
                failregex: vec![r.clone()],
                ..FilterDefinition::default()
            },
            format!("Use      failregex line : {}", shorten(&r)),
        )),
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 53 {
        let head: String = s.chars().take(50).collect();
        format!("{head}...")
    } else {
        s.to_string()
    }
}

fn pprint(out: &mut impl Write, lines: &[String], header: Option<&str>) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    if let Some(h) = header {
        writeln!(out, "|- {h}")?;
    }
    writeln!(out, "|  {}\n`-", lines.join("\n|  "))
}

#[derive(Default)]
struct Stats {
    tested: u64,
    matched: i64,
    ignored: u64,
    missed: i64,
    prefregex: u64,
    fail_hits: Vec<u64>,
    ignore_hits: Vec<u64>,
    matched_lines: Vec<String>,
    missed_lines: Vec<String>,
    ignored_lines: Vec<String>,
}

/// Lines kept for printing when not all are asked for.
const PRINT_MAX: usize = 20;

pub fn run(args: &RegexArgs) -> Result<(), CmdError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut def, use_line) = load(&args.filter, &args.filter_dir)?;
    let mut header = vec![use_line];
    if let Some(ign) = &args.ignore {
        match classify(ign, &args.filter_dir) {
            Source::Regex(r) => {
                header.push(format!("Use    ignoreregex line : {}", shorten(&r)));
                def.ignoreregex.push(r);
            }
            _ => {
                let (idef, line) = load(ign, &args.filter_dir)?;
                header.push(line.replace("failregex", "ignoreregex"));
                def.ignoreregex.extend(idef.ignoreregex);
            }
        }
    }
    if let Some(dp) = &args.datepattern {
        def.datepattern = Some(dp.clone());
        header.push(format!("Use      datepattern : {dp}"));
    }
    if let Some(n) = args.maxlines {
        def.maxlines = Some(n);
        header.push(format!("Use         maxlines : {n}"));
    }
    for w in &def.warnings {
        eprintln!("warning: {w}");
    }
    let filter = Filter::compile(
        def,
        FilterOptions {
            check_all: args.check_all,
            ..FilterOptions::default()
        },
    )?;
    let from_file = args.log == "-" || Path::new(&args.log).is_file();
    let input: Box<dyn std::io::Read> = if from_file {
        let input = open_log(&args.log)?;
        header.push(format!("Use         log file : {}", args.log));
        header.push("Use         encoding : UTF-8\n".to_string());
        input
    } else {
        header.push(format!("Use      single line : {}\n", shorten(&args.log)));
        Box::new(std::io::Cursor::new(args.log.clone().into_bytes()))
    };
    writeln!(out, "\nRunning tests\n=============\n")?;
    for h in header {
        writeln!(out, "{h}")?;
    }
    out.flush()?;

    let now = args.now.unwrap_or_else(super::now);
    let mut state = FilterState::new(&filter);
    // only the regex and `<F-NOFAIL>` of each failure are counted
    state.set_failure_detail(FailureDetail::Lean);
    let mut st = Stats {
        fail_hits: vec![0; filter.failregex_sources().len()],
        ignore_hits: vec![0; filter.ignoreregex_sources().len()],
        ..Stats::default()
    };
    let started = Instant::now();
    let multi = filter.maxlines() > 1;
    let mut before: Vec<Arc<TupleLine>> = Vec::new();
    // the failures of the current line (one buffer for all lines)
    let mut found = Vec::new();
    // like fail2ban-regex (which reads files as a tailing daemon would), a
    // last line without its newline is not read from a file
    let left_out = for_each_line_in(input, &args.log, !from_file, |line| {
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        if multi {
            before.clear();
            before.extend_from_slice(state.buffered_lines());
        }
        found.clear();
        state.process_line_into(&filter, line, now, &mut found);
        if multi {
            // buffered lines that a multi-line match consumed count as matched
            let full = before.len() >= filter.maxlines();
            for b in before.iter().skip(usize::from(full)) {
                if !state.buffered_lines().iter().any(|x| x == b) {
                    let text = b.full();
                    if let Some(p) = st.missed_lines.iter().position(|m| *m == text) {
                        st.missed_lines.remove(p);
                    }
                    if args.print_all_matched {
                        st.matched_lines.push(text);
                    }
                    st.matched += 1;
                    st.missed -= 1;
                }
            }
        }
        let mut failures = 0;
        let mut ignored = !state.info.ignored_by.is_empty();
        for &i in &state.info.ignored_by {
            st.ignore_hits[i] += 1;
        }
        for f in &found {
            st.fail_hits[f.regex] += 1;
            if f.is_nofail() {
                ignored = true;
            } else {
                failures += 1;
            }
        }
        if state.info.prefregex_matched {
            st.prefregex += 1;
        }
        st.tested += 1;
        let keep = |v: &mut Vec<String>, all: bool| {
            if all || v.len() <= PRINT_MAX {
                v.push(line.to_string());
            }
        };
        if ignored {
            st.ignored += 1;
            keep(&mut st.ignored_lines, args.print_all_ignored);
        } else if failures > 0 {
            st.matched += 1;
            if args.print_all_matched {
                st.matched_lines.push(line.to_string());
            }
        } else {
            st.missed += 1;
            keep(&mut st.missed_lines, args.print_all_missed);
        }
    })?;
    if left_out {
        eprintln!(
            "note: the last line of {} has no newline and was not read (as fail2ban-regex does)",
            args.log
        );
    }
    let elapsed = started.elapsed().as_secs_f64();

    writeln!(out, "\nResults\n=======")?;
    if let Some(p) = filter.prefregex_source() {
        writeln!(out, "\nPrefregex: {} total", st.prefregex)?;
        pprint(&mut out, &[p.to_string()], None)?;
    }
    for (title, sources, hits) in [
        ("Failregex", filter.failregex_sources(), &st.fail_hits),
        ("Ignoreregex", filter.ignoreregex_sources(), &st.ignore_hits),
    ] {
        let total: u64 = hits.iter().sum();
        let lines: Vec<String> = sources
            .iter()
            .zip(hits.iter())
            .enumerate()
            .filter(|(_, (_, h))| **h > 0)
            .map(|(i, (s, h))| format!("{:2}) [{h}] {s}", i + 1))
            .collect();
        writeln!(out, "\n{title}: {total} total")?;
        pprint(&mut out, &lines, Some(" #) [# of hits] regular expression"))?;
    }
    writeln!(out, "\nDate template hits:")?;
    let det = filter.date_detector();
    let dates: Vec<String> = det
        .templates
        .iter()
        .zip(state.date_hits())
        .filter(|(_, h)| **h > 0)
        .map(|(t, h)| format!("[{h}] {}", t.name))
        .collect();
    pprint(&mut out, &dates, Some("[# of hits] date format"))?;
    writeln!(
        out,
        "\nLines: {} lines, {} ignored, {} matched, {} missed",
        st.tested, st.ignored, st.matched, st.missed
    )?;
    writeln!(out, "[processed in {elapsed:.2} sec]")?;
    if state.regex_errors > 0 {
        writeln!(
            out,
            "[{} lines exceeded the backtracking limit and counted as missed]",
            state.regex_errors
        )?;
    }
    writeln!(out)?;
    for (kind, count, lines, all) in [
        (
            "matched",
            st.matched,
            &st.matched_lines,
            args.print_all_matched,
        ),
        (
            "ignored",
            st.ignored as i64,
            &st.ignored_lines,
            args.print_all_ignored,
        ),
        ("missed", st.missed, &st.missed_lines, args.print_all_missed),
    ] {
        if kind == "matched" && !all {
            continue;
        }
        if count == 0 {
            continue;
        }
        let header = format!("{}{} line(s):", kind[..1].to_uppercase(), &kind[1..]);
        if all || (count as usize) < PRINT_MAX {
            pprint(&mut out, lines, Some(&header))?;
        } else {
            writeln!(
                out,
                "{header} too many to print.  Use --print-all-{kind} to print all {count} lines"
            )?;
        }
    }
    out.flush()?;
    Ok(())
}
