//! `banhammer test-filter` and `banhammer regex` as a user runs them: the real
//! binary, real files, and the bad inputs an operator will eventually feed
//! it (unknown filter, broken include, broken regex, invalid UTF-8, huge
//! lines, empty files).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_banhammer")
}

fn filters() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("filters")
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("TZ", "Europe/Zurich")
        .output()
        .expect("run banhammer")
}

fn test_filter(dir: &Path, spec: &str, log: &Path) -> Output {
    run(&[
        "test-filter",
        "--filter-dir",
        dir.to_str().unwrap(),
        "--json",
        "--now",
        "1124013600",
        spec,
        log.to_str().unwrap(),
    ])
}

fn stdout_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "one-line message expected, got: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "message should mention {n:?}: {err}");
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn reports_one_json_object_per_line_with_times_and_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let log = write(
        tmp.path(),
        "auth.log",
        b"Aug 14 11:58:01 srv sshd[1234]: Failed password for root from 192.0.2.1 port 22 ssh2\n\
          Aug 14 11:59:01 srv sshd[1235]: Accepted password for root from 192.0.2.1 port 22 ssh2\n\
          \n\
          Aug 14 11:59:30 srv sshd[1236]: Invalid user admin from 2001:db8::7 port 4242",
    );
    let o = test_filter(&filters(), "sshd", &log);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = stdout_lines(&o);
    assert_eq!(
        v.len(),
        4,
        "one object per line, the empty one and the last unterminated one included"
    );
    assert_eq!(v[0]["match"], true);
    assert_eq!(v[0]["host"], "192.0.2.1");
    assert_eq!(v[0]["user"], "root");
    // 2005-08-14 11:58:01 CEST
    assert_eq!(v[0]["time"], 1124013481.0);
    assert_eq!(v[1]["match"], false);
    assert_eq!(v[2]["match"], false);
    assert_eq!(v[3]["match"], true);
    assert_eq!(v[3]["ip6"], "2001:db8::7");
}

#[test]
fn unknown_filter_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let log = write(tmp.path(), "a.log", b"x\n");
    let o = test_filter(&filters(), "no-such-filter", &log);
    assert_clean_failure(
        &o,
        &[
            "no-such-filter",
            "no no-such-filter.conf or no-such-filter.local",
        ],
    );
}

#[test]
fn missing_include_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "broken.conf",
        b"[INCLUDES]\nbefore = not-there.conf\n[Definition]\nfailregex = ^x <HOST>$\n",
    );
    let log = write(tmp.path(), "a.log", b"x 192.0.2.1\n");
    let o = test_filter(tmp.path(), "broken", &log);
    assert_clean_failure(&o, &["not-there.conf", "broken.conf:2"]);
}

#[test]
fn regex_that_does_not_compile_names_filter_index_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "bad.conf",
        b"[Definition]\nfailregex = ^ok <HOST>$\n            ^(unclosed <HOST>\n",
    );
    let log = write(tmp.path(), "a.log", b"ok 192.0.2.1\n");
    let o = test_filter(tmp.path(), "bad", &log);
    assert_clean_failure(
        &o,
        &["filter 'bad'", "failregex 2 does not compile", "bad.conf"],
    );
}

#[test]
fn broken_config_syntax_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "syn.conf",
        b"[Definition]\nfailregex = ^x <HOST>$\nthis is not an option\n",
    );
    let log = write(tmp.path(), "a.log", b"x\n");
    let o = test_filter(tmp.path(), "syn", &log);
    assert_clean_failure(&o, &["syn.conf:3"]);
}

#[test]
fn malformed_filter_spec_and_missing_log_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let log = write(tmp.path(), "a.log", b"x\n");
    assert_clean_failure(
        &test_filter(&filters(), "sshd[mode=aggressive", &log),
        &["missing closing ']'"],
    );
    let o = test_filter(&filters(), "sshd", &tmp.path().join("missing.log"));
    assert_clean_failure(&o, &["cannot read log file", "missing.log"]);
}

#[test]
fn invalid_utf8_is_replaced_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let log = write(
        tmp.path(),
        "bin.log",
        b"Aug 14 11:58:01 srv sshd[1]: Failed password for r\xffot from 192.0.2.9 port 22 ssh2\n\xfe\xfe\n",
    );
    let o = test_filter(&filters(), "sshd", &log);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = stdout_lines(&o);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["host"], "192.0.2.9");
    assert_eq!(v[0]["user"], "r\u{fffd}ot");
    assert_eq!(v[1]["match"], false);
}

#[test]
fn a_ten_megabyte_line_is_handled() {
    let tmp = tempfile::tempdir().unwrap();
    let mut data = b"Aug 14 11:58:01 srv sshd[1]: Failed password for ".to_vec();
    data.extend(std::iter::repeat_n(b'a', 10 << 20));
    data.extend_from_slice(b" from 192.0.2.10 port 22 ssh2\nAug 14 11:58:02 srv sshd[1]: Failed password for root from 192.0.2.11 port 22 ssh2\n");
    let log = write(tmp.path(), "big.log", &data);
    let o = test_filter(&filters(), "sshd", &log);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = stdout_lines(&o);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["host"], "192.0.2.10");
    assert_eq!(v[1]["host"], "192.0.2.11");
}

#[test]
fn an_empty_file_prints_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let log = write(tmp.path(), "empty.log", b"");
    let o = test_filter(&filters(), "sshd", &log);
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
    let o = run(&[
        "regex",
        "--filter-dir",
        filters().to_str().unwrap(),
        log.to_str().unwrap(),
        "sshd",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("Lines: 0 lines, 0 ignored, 0 matched, 0 missed"));
}

#[test]
fn regex_command_summarises_like_fail2ban_regex() {
    let tmp = tempfile::tempdir().unwrap();
    let log = write(
        tmp.path(),
        "auth.log",
        b"Aug 14 11:58:01 srv sshd[1]: Failed password for root from 192.0.2.1 port 22 ssh2\n\
          # a comment line is skipped\n\
          Aug 14 11:58:02 srv sshd[2]: Invalid user bob from 192.0.2.2 port 22\n\
          Aug 14 11:58:03 srv CRON[3]: pam_unix(cron:session): session opened for user root\n",
    );
    let o = run(&[
        "regex",
        "--filter-dir",
        filters().to_str().unwrap(),
        "--print-all-missed",
        log.to_str().unwrap(),
        "sshd",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Lines: 3 lines, 0 ignored, 2 matched, 1 missed"),
        "{out}"
    );
    assert!(out.contains("Failregex: 2 total"), "{out}");
    assert!(out.contains("CRON[3]"), "missed line printed: {out}");
    // a literal regex with <HOST> works too
    let o = run(&[
        "regex",
        log.to_str().unwrap(),
        r"Invalid user \S+ from <HOST>",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Lines: 3 lines, 0 ignored, 1 matched, 2 missed"),
        "{out}"
    );
    // and a broken one is an error, not a panic
    let o = run(&["regex", log.to_str().unwrap(), r"Invalid (user <HOST>"]);
    assert_clean_failure(&o, &["does not compile"]);
}

/// A pattern whose Unicode build would be too big still loads and runs on
/// ASCII lines; a non-ASCII line is not matched by it, and the command
/// says so on stderr instead of missing the line silently.
#[test]
fn a_pattern_too_big_for_unicode_lines_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let log = write(
        tmp.path(),
        "app.log",
        "2024-03-01 10:00:00 login failed from 192.0.2.1\n\
         2024-03-01 10:00:01 login failed (caf\u{e9}) from 192.0.2.2\n"
            .as_bytes(),
    );
    let o = run(&[
        "regex",
        log.to_str().unwrap(),
        r"login failed (?:\w{5000}|\S*) ?from <HOST>",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Lines: 2 lines, 0 ignored, 1 matched, 1 missed"),
        "{out}"
    );
    let err = stderr(&o);
    assert!(
        err.contains("it matches no line that is not ASCII") && err.contains("w{5000}"),
        "{err}"
    );
    assert_eq!(err.matches("not ASCII").count(), 1, "logged once: {err}");
}

#[test]
fn regex_counts_multi_line_matches_and_unterminated_lines_like_fail2ban_regex() {
    let tmp = tempfile::tempdir().unwrap();
    let filter = write(
        tmp.path(),
        "ml.conf",
        b"[Definition]\nfailregex = ^login attempt\\n.*from <HOST>$\nmaxlines = 2\ndatepattern = {NONE}\n",
    );
    // the first two lines make one failure: both count as matched;
    // the last line has no newline, so (as fail2ban-regex) it is not read
    let log = write(
        tmp.path(),
        "ml.log",
        b"login attempt\nuser x from 192.0.2.1\nnoise\nlogin attempt\nnoise 2\nlogin attempt",
    );
    let o = run(&["regex", log.to_str().unwrap(), filter.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Failregex: 1 total"), "{out}");
    assert!(
        out.contains("Lines: 5 lines, 0 ignored, 2 matched, 3 missed"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("has no newline and was not read"),
        "{}",
        stderr(&o)
    );
}

/// `regex` output without its timing line.
fn report(o: &Output) -> String {
    assert!(o.status.success(), "{}", stderr(o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with("[processed in"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn regex_reading_ahead_on_a_second_thread_reports_what_one_thread_does() {
    let tmp = tempfile::tempdir().unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let mut logs: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&samples).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        // many batches of lines: each sample repeated (sshd's past the
        // batches after which failregexes are handed to the reading thread)
        let text = std::fs::read(&path).unwrap();
        let mut long = Vec::new();
        for _ in 0..60 {
            long.extend_from_slice(&text);
            if !text.ends_with(b"\n") {
                long.push(b'\n');
            }
        }
        // and a last line without a newline (not read)
        long.extend_from_slice(b"unterminated line");
        let log = write(tmp.path(), &format!("{name}.log"), &long);
        let filter = filters().join(format!("{name}.conf"));
        logs.push((filter.to_str().unwrap().to_string(), log.clone()));
        if name == "sshd" {
            for mode in ["aggressive", "ddos"] {
                logs.push((
                    format!("{}[mode={mode}]", filters().join("sshd.conf").display()),
                    log.clone(),
                ));
            }
        }
    }
    assert!(logs.len() >= 11, "{} sample logs", logs.len());
    let mut compared = 0;
    for (filter, log) in &logs {
        for check in [None, Some("--no-check-all")] {
            let outputs: Vec<(String, String)> = ["1", "2"]
                .iter()
                .map(|threads| {
                    let mut args = vec![
                        "regex",
                        "--threads",
                        threads,
                        "--now",
                        "1124013600",
                        "--print-all-matched",
                        "--print-all-missed",
                        "--print-all-ignored",
                    ];
                    args.extend(check);
                    args.extend([log.to_str().unwrap(), filter.as_str()]);
                    let o = run(&args);
                    (report(&o), stderr(&o))
                })
                .collect();
            let (one, two) = (&outputs[0], &outputs[1]);
            assert_eq!(one, two, "{filter} {check:?}: one thread vs two");
            assert!(
                one.1.contains("has no newline and was not read"),
                "{}",
                one.1
            );
            let failures: u64 = one
                .0
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Failregex: ")?
                        .strip_suffix(" total")?
                        .parse()
                        .ok()
                })
                .unwrap_or_else(|| panic!("no Failregex line: {}", one.0));
            assert!(failures >= 60, "{filter}: {failures} failures");
            compared += 1;
        }
    }
    assert_eq!(compared, 2 * logs.len());
}

#[test]
fn regex_reports_lines_that_exceeded_the_backtracking_limit() {
    let tmp = tempfile::tempdir().unwrap();
    // a look-behind that can never hold after a run of nested stars: the
    // backtracking engine gives up on the long line, and fails the short
    // one in time
    let log = write(
        tmp.path(),
        "bt.log",
        format!("{} 192.0.2.1\nb 192.0.2.2\n", "a".repeat(40)).as_bytes(),
    );
    for threads in ["1", "2"] {
        let o = run(&[
            "regex",
            "--threads",
            threads,
            log.to_str().unwrap(),
            r"^(a*)*(?<=b)\1 <HOST>$",
        ]);
        let out = report(&o);
        assert!(
            out.contains("[1 lines exceeded the backtracking limit and counted as missed]"),
            "--threads {threads}: {out}"
        );
        assert!(
            out.contains("Lines: 2 lines, 0 ignored, 0 matched, 2 missed"),
            "--threads {threads}: {out}"
        );
    }
}
