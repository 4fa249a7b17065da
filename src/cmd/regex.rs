//! `banhammer regex LOG FILTER [IGNOREREGEX]`: the counterpart of
//! `fail2ban-regex`, with its report format and its counting (every
//! failregex is tried on every line unless `--no-check-all`; comment and
//! empty lines are skipped; host names are not resolved, as with `--raw`).

use super::{for_each_line_in, open_log, CmdError};
use crate::config::options::parse_named;
use crate::filter::{
    read_filter, read_filter_at, Failure, FailureDetail, Filter, FilterDefinition, FilterError,
    FilterOptions, FilterState, LineFront, TupleLine,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// 1 or 2 (see [`run`]); `None`: 2 where two CPUs are free.
    pub threads: Option<u8>,
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
    let input: Box<dyn std::io::Read + Send> = if from_file {
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
    let two = match args.threads {
        Some(n) => n >= 2,
        None => std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2),
    };
    let mut counter = Counter::new(args, &filter);
    let started = Instant::now();
    // like fail2ban-regex (which reads files as a tailing daemon would), a
    // last line without its newline is not read from a file
    let (left_out, front_state) = if two {
        let (left_out, front) = read_ahead(input, !from_file, &filter, now, &mut counter)?;
        (left_out, Some(front))
    } else {
        let left_out = for_each_line_in(input, &args.log, !from_file, |line| {
            if !skipped(line) {
                counter.line(line, |state, found| {
                    state.process_line_into(&filter, line, now, found)
                });
            }
        })?;
        (left_out, None)
    };
    let Counter { state, st, .. } = counter;
    // the state that dated the lines
    let dating = front_state.as_ref().unwrap_or(&state);
    let regex_errors = state.regex_errors() + front_state.as_ref().map_or(0, |f| f.regex_errors());
    let elapsed = started.elapsed().as_secs_f64();
    if left_out {
        eprintln!(
            "note: the last line of {} has no newline and was not read (as fail2ban-regex does)",
            args.log
        );
    }

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
        .zip(dating.date_hits())
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
    if regex_errors > 0 {
        writeln!(
            out,
            "[{} lines exceeded the backtracking limit and counted as missed]",
            regex_errors
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

/// Comment and empty lines are not tested (as fail2ban-regex does).
fn skipped(line: &str) -> bool {
    line.is_empty() || line.starts_with('#')
}

/// Lines per batch handed from the reading thread to the matching one.
const BATCH: usize = 256;

/// Lines read ahead, with their [`LineFront`]s.
#[derive(Default)]
struct Batch {
    lines: Vec<(String, LineFront)>,
    used: usize,
    /// The reading thread's time on this batch (reading included).
    busy: Duration,
}

/// Batches finished before the threads' shares are measured (the regexes'
/// caches fill up in the first ones), and batches measured.
const WARM_BATCHES: usize = 16;
const MEASURED_BATCHES: usize = 32;

/// Evens out the two threads' work: after [`WARM_BATCHES`], the matching
/// thread times its failregex searches and both threads their batches for
/// [`MEASURED_BATCHES`]; then failregexes whose search time makes up half
/// the difference are handed to the reading thread
/// ([`FilterState::search_ahead`]), once. Only speed depends on it: a
/// search gives the same result on either thread.
#[derive(Default)]
struct Balance {
    batches: usize,
    reader: Duration,
    finisher: Duration,
}

impl Balance {
    /// Before the matching thread's next batch.
    fn start(&mut self, filter: &Filter, state: &mut FilterState) {
        if self.batches == WARM_BATCHES {
            state.time_searches(filter, true);
        }
    }

    /// After a batch; the failregexes the reading thread is to search
    /// from now on, once they are chosen.
    fn end(
        &mut self,
        filter: &Filter,
        state: &mut FilterState,
        reader: Duration,
        finisher: Duration,
    ) -> Option<Vec<usize>> {
        self.batches += 1;
        if self.batches <= WARM_BATCHES {
            return None;
        }
        self.reader += reader;
        self.finisher += finisher;
        if self.batches < WARM_BATCHES + MEASURED_BATCHES {
            return None;
        }
        let times = state.search_times()?.to_vec();
        state.time_searches(filter, false);
        Some(share(&times, self.reader, self.finisher))
    }
}

/// Failregexes (indices) whose search `times` add up nearest to half of
/// what the matching thread (`finisher`) spent beyond the reading one. A
/// failregex never searched while timed stays: its cost is not known.
fn share(times: &[Duration], reader: Duration, finisher: Duration) -> Vec<usize> {
    let Some(excess) = finisher.checked_sub(reader) else {
        return Vec::new();
    };
    let goal = excess / 2;
    let mut order: Vec<usize> = (0..times.len()).filter(|&i| !times[i].is_zero()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(times[i]));
    // what fits below the goal, then the one search past it that comes nearer
    let mut moved = Duration::ZERO;
    let mut chosen = Vec::new();
    for &i in &order {
        if moved + times[i] <= goal {
            moved += times[i];
            chosen.push(i);
        }
    }
    let nearest = order
        .iter()
        .filter(|i| !chosen.contains(i))
        .min_by_key(|&&i| goal.abs_diff(moved + times[i]));
    if let Some(&i) = nearest.filter(|&&i| goal.abs_diff(moved + times[i]) < goal - moved) {
        chosen.push(i);
    }
    chosen.sort_unstable();
    chosen
}

/// `--threads 2`: a scoped thread reads the lines and begins their
/// matching ([`FilterState::front_line`]: the date, the prefregex and the
/// prefilter, and the failregexes [`Balance`] hands it), in batches; this
/// thread finishes them in order. Returns
/// whether the last line was left out, and the reading thread's state
/// (it counted the date templates).
fn read_ahead(
    input: Box<dyn std::io::Read + Send>,
    partial_last: bool,
    filter: &Filter,
    now: f64,
    counter: &mut Counter<'_>,
) -> Result<(bool, FilterState), CmdError> {
    use std::sync::mpsc;
    let log = &counter.args.log;
    let (full_tx, full_rx) = mpsc::sync_channel::<Batch>(4);
    let (empty_tx, empty_rx) = mpsc::channel::<Batch>();
    let (share_tx, share_rx) = mpsc::channel::<Vec<usize>>();
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut state = FilterState::new(filter);
            let mut batch = Batch::default();
            let mut began = Instant::now();
            let read = for_each_line_in(input, log, partial_last, |line| {
                if skipped(line) {
                    return;
                }
                if batch.used == batch.lines.len() {
                    batch.lines.push(Default::default());
                }
                let (text, lf) = &mut batch.lines[batch.used];
                text.clear();
                text.push_str(line);
                state.front_line(filter, line, now, lf);
                batch.used += 1;
                if batch.used == BATCH {
                    let next = empty_rx.try_recv().unwrap_or_default();
                    batch.busy = began.elapsed();
                    // a closed channel: the matching thread stopped, and reports why
                    let _ = full_tx.send(std::mem::replace(&mut batch, next));
                    batch.used = 0;
                    if let Ok(regexes) = share_rx.try_recv() {
                        state.search_ahead(filter, &regexes);
                    }
                    began = Instant::now();
                }
            });
            if batch.used > 0 {
                let _ = full_tx.send(batch);
            }
            read.map(|left_out| (left_out, state))
        });
        let mut balance = Balance::default();
        for mut batch in full_rx {
            let began = Instant::now();
            balance.start(filter, &mut counter.state);
            for (text, lf) in &mut batch.lines[..batch.used] {
                counter.line(text, |state, found| {
                    state.finish_line(filter, lf, now, found)
                });
            }
            let busy = began.elapsed();
            if let Some(regexes) = balance.end(filter, &mut counter.state, batch.busy, busy) {
                let _ = share_tx.send(regexes);
            }
            batch.used = 0;
            let _ = empty_tx.send(batch);
        }
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The per-line counting of a run: the matching state and the statistics.
struct Counter<'a> {
    args: &'a RegexArgs,
    filter: &'a Filter,
    state: FilterState,
    st: Stats,
    /// The lines buffered before this one (multi-line filters).
    before: Vec<Arc<TupleLine>>,
    /// The failures of the current line (one buffer for all lines).
    found: Vec<Failure>,
}

impl<'a> Counter<'a> {
    fn new(args: &'a RegexArgs, filter: &'a Filter) -> Counter<'a> {
        let mut state = FilterState::new(filter);
        // only the regex and `<F-NOFAIL>` of each failure are counted
        state.set_failure_detail(FailureDetail::Lean);
        Counter {
            args,
            filter,
            state,
            st: Stats {
                fail_hits: vec![0; filter.failregex_sources().len()],
                ignore_hits: vec![0; filter.ignoreregex_sources().len()],
                ..Stats::default()
            },
            before: Vec::new(),
            found: Vec::new(),
        }
    }

    /// Matches `line` with `process` (which fills the failures) and counts it.
    fn line(&mut self, line: &str, process: impl FnOnce(&mut FilterState, &mut Vec<Failure>)) {
        let Counter {
            args,
            filter,
            state,
            st,
            before,
            found,
        } = self;
        let multi = filter.maxlines() > 1;
        if multi {
            before.clear();
            before.extend_from_slice(state.buffered_lines());
        }
        found.clear();
        process(state, found);
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
        for f in found.iter() {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_share_handed_over_comes_nearest_to_half_the_excess() {
        let times = [ms(10), ms(40), ms(5), ms(25)];
        // 60 ms more on the matching thread: 30 ms to move
        assert_eq!(share(&times, ms(100), ms(160)), [2, 3]);
        // 80 to move: all four add up to it
        assert_eq!(share(&times, ms(0), ms(160)), [0, 1, 2, 3]);
        // 36 to move: 25 + 10 fit, 5 more would be further off
        assert_eq!(share(&times, ms(0), ms(72)), [0, 3]);
        // 32 to move: 25 fits, 10 more comes nearer (35)
        assert_eq!(share(&[ms(25), ms(10)], ms(0), ms(64)), [0, 1]);
        // 32 to move: 25 + 5 fit; 10 more would be further off
        assert_eq!(share(&[ms(25), ms(10), ms(5)], ms(0), ms(64)), [0, 2]);
        // the reading thread is the busier one, or neither: nothing moves
        assert!(share(&times, ms(200), ms(160)).is_empty());
        assert!(share(&times, ms(160), ms(160)).is_empty());
        // 2 to move: nothing is nearer to it than the cheapest search (5)
        assert!(share(&times, ms(100), ms(104)).is_empty());
        // a failregex never searched while timed is not handed over
        assert_eq!(share(&[ms(0), ms(30), ms(0)], ms(0), ms(60)), [1]);
        // more to move than there is: everything
        assert_eq!(share(&times, ms(0), ms(1000)), [0, 1, 2, 3]);
    }
}
