//! Date detection: finds the timestamp in a log line and turns it into epoch
//! seconds, with Fail2Ban's templates and rules.
//!
//! Owns the date templates (Fail2Ban's default set and `datepattern`
//! values: strptime directives, `{^LN-BEG}`, `{DATE}`, `{UNB}`, `{NONE}`,
//! `EPOCH`, `LEPOCH`, `TAI64N`), the adaptive template order (the last
//! template that matched is tried first, templates that hit often move up),
//! year and day inference against an injected clock, explicit zones in the
//! line, `logtimezone`, and local time from `TZ` through the C library (the
//! same `mktime` Python uses). Compiled templates are shared; the adaptive
//! order lives in [`DateState`], one per filter instance.

use super::pyre::{Pattern, PatternError, PyPattern, Slots};
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("datepattern {pattern:?}: {msg}")]
    Pattern { pattern: String, msg: String },
    #[error("datepattern {pattern:?} does not compile: {cause}")]
    Regex {
        pattern: String,
        cause: PatternError,
    },
    #[error("there is already a date template named {0:?}")]
    Duplicate(String),
    #[error("unknown or unsupported time zone {0:?} (use UTC, UTC+hhmm, -hh:mm or an abbreviation like CET)")]
    TimeZone(String),
}

const LINE_BEGIN: u8 = 8;
const LINE_END: u8 = 4;
const WORD_BEGIN: u8 = 2;
const WORD_END: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WordBegin {
    No,
    Yes,
    Start,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Y,
    LowerY,
    M,
    BigB,
    B,
    D,
    H,
    I,
    P,
    Min,
    S,
    A,
    BigA,
    W,
    J,
    U,
    BigW,
    Z,
    BigZ,
}

fn field_of(name: &str) -> Option<Field> {
    Some(match name {
        "Y" => Field::Y,
        "y" => Field::LowerY,
        "m" => Field::M,
        "B" => Field::BigB,
        "b" => Field::B,
        "d" => Field::D,
        "H" => Field::H,
        "I" => Field::I,
        "p" => Field::P,
        "M" => Field::Min,
        "S" => Field::S,
        "a" => Field::A,
        "A" => Field::BigA,
        "w" => Field::W,
        "j" => Field::J,
        "U" => Field::U,
        "W" => Field::BigW,
        "z" => Field::Z,
        "Z" => Field::BigZ,
        _ => return None,
    })
}

#[derive(Debug)]
enum Kind {
    Pattern { fields: Vec<(Field, usize)> },
    Epoch { long: bool, group: usize },
    Tai64n,
}

/// One compiled date template.
#[derive(Debug)]
pub struct DateTemplate {
    pub name: String,
    /// The `datepattern` text it was built from (none for Epoch/TAI64N).
    pub pattern: Option<String>,
    /// The Python regex, after boundaries were added.
    pub regex_text: String,
    /// The compiled regex: made on first use for Fail2Ban's default
    /// templates (most filters only ever use one or two of the 31, and
    /// compiling them all was half of a filter's start-up), at once for
    /// the filter's own (see [`DateTemplate::compiled`]). `None` if it does
    /// not compile (never for the defaults: a test compiles them all).
    regex: OnceLock<Option<Pattern>>,
    /// An exact hand-written matcher for this template, if it has one.
    fast: Option<SyslogStart>,
    flags: u8,
    weight: f64,
    kind: Kind,
}

fn time_re(key: &str) -> Option<&'static str> {
    Some(match key {
        "%" => "%",
        "A" => "(?P<A>wednesday|thursday|saturday|tuesday|monday|friday|sunday)",
        "B" => "(?P<B>september|february|november|december|january|october|august|march|april|june|july|may)",
        "ExH" => r"(?P<H>[0-1]\d|2[0-3])",
        "ExM" => r"(?P<M>[0-5]\d)",
        "ExS" => r"(?P<S>[0-5]\d|6[0-1])",
        "ExY" => year_re(),
        "ExZ" => r"(?P<Z>[A-Z](?:[A-Z]{2,4})?)",
        "Exd" => r"(?P<d>[1-2]\d|0[1-9]|3[0-1])",
        "Exk" => r" ?(?P<H>[0-1]?\d|2[0-3])",
        "Exl" => r" ?(?P<I>1[0-2]|\d)",
        "Exm" => r"(?P<m>0[1-9]|1[0-2])",
        "Exy" => r"(?P<y>\d{2})",
        "Exz" => r"(?P<z>(?:[A-Z](?:[A-Z]{2,4})?)?[+-][01]\d(?::?\d{2})?|[A-Z](?:[A-Z]{2,4})?)",
        "G" => r"(?P<G>\d\d\d\d)",
        "H" => r"(?P<H>[0-1]?\d|2[0-3])",
        "I" => r"(?P<I>1[0-2]|0[1-9]|[1-9])",
        "M" => r"(?P<M>[0-5]?\d)",
        "S" => r"(?P<S>[0-5]?\d|6[0-1])",
        "U" => r"(?P<U>5[0-3]|[0-4]\d|\d)",
        "V" => r"(?P<V>5[0-3]|0[1-9]|[1-4]\d|\d)",
        "W" => r"(?P<W>5[0-3]|[0-4]\d|\d)",
        "X" => r"(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)",
        "Y" => r"(?P<Y>\d{4})",
        "Z" => r"(?P<Z>Z|[A-Z]{3,5})",
        "a" => "(?P<a>mon|tue|wed|thu|fri|sat|sun)",
        "b" => "(?P<b>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
        "c" => r"(?P<a>mon|tue|wed|thu|fri|sat|sun)\s+(?P<b>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)\s+(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])\s+(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)\s+(?P<Y>\d\d\d\d)",
        "d" => r"(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1])",
        "f" => r"(?P<f>[0-9]{1,6})",
        "j" => r"(?P<j>36[0-6]|3[0-5]\d|[1-2]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9])",
        "k" => r" ?(?P<H>[0-2]?\d)",
        "l" => r" ?(?P<I>1?\d)",
        "m" => r"(?P<m>0?[1-9]|1[0-2])",
        "p" => "(?P<p>am|pm)",
        "u" => r"(?P<u>[1-7])",
        "w" => r"(?P<w>[0-6])",
        "x" => r"(?P<m>1[0-2]|0[1-9]|[1-9])/(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])/(?P<y>\d\d)",
        "y" => r"(?P<y>\d\d)",
        "z" => r"(?P<z>Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)",
        _ => return None,
    })
}

fn time_name(key: &str) -> String {
    let base = |k: &str| -> Option<&'static str> {
        Some(match k {
            "a" => "DAY",
            "A" => "DAYNAME",
            "b" => "MON",
            "B" => "MONTH",
            "d" => "Day",
            "H" => "24hour",
            "I" => "12hour",
            "j" => "Yearday",
            "m" => "Month",
            "M" => "Minute",
            "p" => "AMPM",
            "S" => "Second",
            "U" => "Yearweek",
            "w" => "Weekday",
            "W" => "Yearweek",
            "y" => "Year2",
            "Y" => "Year",
            "%" => "%",
            "z" => "Zone offset",
            "f" => "Microseconds",
            "Z" => "Zone name",
            _ => return None,
        })
    };
    if let Some(n) = base(key) {
        return n.to_string();
    }
    if let Some(rest) = key.strip_prefix("Ex") {
        if let Some(n) = base(rest) {
            return format!("Ex{n}");
        }
    }
    format!("%{key}")
}

/// The decades `%ExY` accepts (as their first three digits): from 2000 to
/// three years ahead.
fn year_decades() -> &'static [String] {
    static D: OnceLock<Vec<String>> = OnceLock::new();
    D.get_or_init(|| {
        let now_year = chrono::Utc::now().year();
        let mut cents: Vec<i32> = Vec::new();
        let mut y = 2000;
        while y <= now_year + 3 {
            let c = y / 10;
            if !cents.contains(&c) {
                cents.push(c);
            }
            y += 1;
        }
        cents.iter().map(|c| c.to_string()).collect()
    })
}

/// `%ExY`: four-digit years in the centuries from 2000 to three years ahead.
fn year_re() -> &'static str {
    static RE: OnceLock<String> = OnceLock::new();
    RE.get_or_init(|| format!(r"(?P<Y>(?:{})\d)", year_decades().join("|")))
}

const DIRECTIVE_KEYS: [&str; 11] = [
    "ExZ", "Exz", "Exd", "Exm", "ExH", "Exk", "Exl", "ExM", "ExS", "ExY", "Exy",
];
const SINGLE_KEYS: &str = "dfHIGjmMSUwuVyYzAaBbpZ%WcxXkl";

/// Expands strptime directives: returns (name, regex).
fn expand_directives(pattern: &str) -> Result<(String, String), String> {
    let mut name = String::new();
    let mut regex = String::new();
    let mut rest = pattern;
    while let Some(p) = rest.find('%') {
        name.push_str(&rest[..p]);
        regex.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        let key = DIRECTIVE_KEYS
            .iter()
            .find(|k| after.starts_with(**k))
            .map(|k| k.to_string())
            .or_else(|| {
                after
                    .chars()
                    .next()
                    .filter(|c| SINGLE_KEYS.contains(*c))
                    .map(|c| c.to_string())
            });
        let Some(key) = key else {
            return Err(format!(
                "unknown directive or unescaped percent sign at {:?} (write %% for a literal percent sign)",
                rest[p..].chars().take(6).collect::<String>()
            ));
        };
        name.push_str(&time_name(&key));
        regex.push_str(time_re(&key).unwrap_or(""));
        rest = &after[key.len()..];
    }
    name.push_str(rest);
    regex.push_str(rest);
    Ok((name, regex))
}

/// Fail2Ban's checks on regex text (made once; they look at the pattern,
/// not at log lines).
struct Shapes {
    grouped: fancy_regex::Regex,
    group_wrap: regex::Regex,
    global_flags: regex::Regex,
    no_word_begin: regex::Regex,
    no_word_end: fancy_regex::Regex,
    del_bounds: fancy_regex::Regex,
    line_begin: fancy_regex::Regex,
    line_end: fancy_regex::Regex,
    alpha: fancy_regex::Regex,
    epoch: fancy_regex::Regex,
    ex_sanc: regex::Regex,
    ex_eanc: regex::Regex,
    date_prematch: fancy_regex::Regex,
}

fn shapes() -> &'static Shapes {
    static S: OnceLock<Shapes> = OnceLock::new();
    S.get_or_init(|| {
        let f = |s: &str| fancy_regex::Regex::new(s).expect("static regex");
        let r = |s: &str| regex::Regex::new(s).expect("static regex");
        Shapes {
            grouped: f(r"(?<!(?:\(\?))(?<!\\)\((?!\?)"),
            group_wrap: r(r"^((?:\(\?\w+\))?\^?(?:\(\?\w+\))?)(.*?)(\$?)$"),
            global_flags: r(r"\(\?[a-z]+\)"),
            no_word_begin: r(r"^\(*(?:\(\?\w+\))?(?:\^|\(*\*\*|\((?:\?:)?\^)"),
            no_word_end: f(r"(?<!\\)(?:\$\)?|\\b|\\s|\*\*\)*)$"),
            del_bounds: f(r"^\(*(?:\(\?\w+\))?\(*\*\*|(?<!\\)\*\*\)*$"),
            line_begin: f(r"^(?:\(\?\w+\))?(?:\^|\((?:\?:)?\^(?!\|))"),
            line_end: f(r"(?<![\\\|])(?:\$\)?)$"),
            alpha: f(r"(?<!\%)\%[aAbBpc]"),
            epoch: f(r"(?i)(?<!\\)\{L?EPOCH\}"),
            ex_sanc: r(r"^\((?:\?:)?\^\|\\b\|\\W\)"),
            ex_eanc: r(r"\(\?=\\b\|\\W\|\$\)$"),
            date_prematch: f(r"(?i)(?<!\\)\{DATE\}"),
        }
    })
}

fn fancy_is_match(re: &fancy_regex::Regex, s: &str) -> bool {
    re.is_match(s).unwrap_or(false)
}

/// Removes the boundaries Fail2Ban adds, for `{DATE}` substitution.
fn unbound_pattern(p: &str) -> String {
    let s = shapes();
    let p = p.strip_prefix("{UNB}").unwrap_or(p);
    let p = p.strip_prefix("{^LN-BEG}").unwrap_or(p);
    let p = s.ex_sanc.replace(p, "");
    s.ex_eanc.replace(&p, "").into_owned()
}

impl DateTemplate {
    fn build(
        name: String,
        pattern: Option<String>,
        regex: &str,
        wb: WordBegin,
        we: bool,
        kind: Kind,
    ) -> Result<DateTemplate, DateError> {
        let s = shapes();
        let mut name = name;
        let mut regex = regex.trim().to_string();
        let gf = s.global_flags.find(&regex).map(|m| m.as_str().to_string());
        if let Some(g) = &gf {
            regex = regex.replacen(g.as_str(), "", 1);
        }
        let bound_begin = wb != WordBegin::No && !s.no_word_begin.is_match(&regex);
        let bound_end = we && !fancy_is_match(&s.no_word_end, &regex);
        if !fancy_is_match(&s.grouped, &regex) {
            regex = s.group_wrap.replace(&regex, "${1}(${2})${3}").into_owned();
        }
        let mut flags = 0u8;
        if bound_begin {
            if wb == WordBegin::Start {
                flags |= LINE_BEGIN;
                regex = format!(r"^(?:\W{{0,2}})?{regex}");
                if !name.starts_with("{^LN-BEG}") {
                    name = format!("{{^LN-BEG}}{name}");
                }
            } else {
                flags |= WORD_BEGIN;
                regex = format!(r"(?=^|\b|\W){regex}");
            }
        }
        if bound_end {
            flags |= WORD_END;
            regex.push_str(r"(?=\b|\W|$)");
        }
        if flags & LINE_BEGIN == 0 && fancy_is_match(&s.line_begin, &regex) {
            flags |= LINE_BEGIN;
        }
        if flags & LINE_END == 0 && fancy_is_match(&s.line_end, &regex) {
            flags |= LINE_END;
        }
        regex = s
            .del_bounds
            .replace_all(&regex, |c: &fancy_regex::Captures<str>| {
                c[0].replace("**", "")
            })
            .into_owned();
        if let Some(g) = gf {
            regex = format!("{g}{regex}");
        }
        // the groups (and any syntax error) without compiling the regex
        let names = PyPattern::parse(&regex)
            .map_err(|cause| DateError::Regex {
                pattern: pattern.clone().unwrap_or_else(|| name.clone()),
                cause,
            })?
            .names;
        let kind = match kind {
            Kind::Pattern { .. } => Kind::Pattern {
                fields: names
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| n.as_deref().and_then(field_of).map(|f| (f, i)))
                    .collect(),
            },
            k => k,
        };
        let fast = SyslogStart::for_template(&regex, &names);
        Ok(DateTemplate {
            name,
            pattern,
            regex_text: regex,
            regex: OnceLock::new(),
            fast,
            flags,
            weight: 1.0,
            kind,
        })
    }

    fn from_pattern(pattern: &str) -> Result<DateTemplate, DateError> {
        let mut p = pattern;
        let mut wb = WordBegin::Yes;
        let mut we = true;
        if let Some(rest) = p.strip_prefix("{UNB}") {
            p = rest;
            wb = WordBegin::No;
            we = false;
        }
        if wb == WordBegin::Yes {
            if let Some(rest) = p.strip_prefix("{^LN-BEG}") {
                p = rest;
                wb = WordBegin::Start;
            }
        }
        let (name, mut regex) = expand_directives(p).map_err(|msg| DateError::Pattern {
            pattern: pattern.to_string(),
            msg,
        })?;
        if fancy_is_match(&shapes().alpha, p) {
            regex = format!("(?iu){regex}");
        }
        DateTemplate::build(
            name,
            Some(pattern.to_string()),
            &regex,
            wb,
            we,
            Kind::Pattern { fields: Vec::new() },
        )
    }

    fn epoch(
        line_begin_only: bool,
        pattern: Option<&str>,
        long: bool,
    ) -> Result<DateTemplate, DateError> {
        let epoch_re = if long {
            r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?"
        } else {
            r"\d{10,11}\b(?:\.\d{3,6})?"
        };
        let default_name = if long { "LongEpoch" } else { "Epoch" };
        match pattern {
            Some(p) => {
                let inner = shapes()
                    .epoch
                    .replace_all(p, |_: &fancy_regex::Captures<str>| format!("({epoch_re})"));
                let regex = format!("({inner})");
                DateTemplate::build(
                    p.to_string(),
                    None,
                    &regex,
                    WordBegin::Yes,
                    true,
                    Kind::Epoch { long, group: 2 },
                )
            }
            None if !line_begin_only => {
                let regex = r"((?:^|(?P<square>(?<=^\[))|(?P<selinux>(?<=\baudit\()))%s)(?:(?(selinux)(?=:\d+\)))|(?(square)(?=\])))".to_string()
                .replace("%s", epoch_re);
                DateTemplate::build(
                    default_name.to_string(),
                    None,
                    &regex,
                    WordBegin::No,
                    true,
                    Kind::Epoch { long, group: 1 },
                )
            }
            None => {
                let regex = format!(r"((?P<square>(?<=^\[))?{epoch_re})(?(square)(?=\]))");
                DateTemplate::build(
                    default_name.to_string(),
                    None,
                    &regex,
                    WordBegin::Start,
                    true,
                    Kind::Epoch { long, group: 1 },
                )
            }
        }
    }

    fn tai64n(start: bool) -> Result<DateTemplate, DateError> {
        let wb = if start {
            WordBegin::Start
        } else {
            WordBegin::No
        };
        DateTemplate::build(
            "TAI64N".to_string(),
            None,
            "@[0-9a-f]{24}",
            wb,
            true,
            Kind::Tai64n,
        )
    }

    /// Fail2Ban's `_getPatternTemplate`.
    fn for_pattern(pattern: &str) -> Result<DateTemplate, DateError> {
        let key = if pattern.contains('%') {
            pattern.to_string()
        } else {
            pattern.to_uppercase()
        };
        if key.contains("EPOCH") {
            if fancy_is_match(&shapes().epoch, pattern) {
                return DateTemplate::epoch(false, Some(pattern), key.contains("LEPOCH"));
            }
            match key.as_str() {
                "EPOCH" | "{^LN-BEG}EPOCH" | "^EPOCH" => {
                    return DateTemplate::epoch(key != "EPOCH", None, false)
                }
                "LEPOCH" | "{^LN-BEG}LEPOCH" | "^LEPOCH" => {
                    return DateTemplate::epoch(key != "LEPOCH", None, true)
                }
                _ => {}
            }
        }
        match key.as_str() {
            "TAI64N" | "{^LN-BEG}TAI64N" | "^TAI64N" => DateTemplate::tai64n(key != "TAI64N"),
            _ => DateTemplate::from_pattern(pattern),
        }
    }

    fn is_anchored(&self) -> bool {
        self.flags & (LINE_BEGIN | LINE_END) != 0
    }

    /// The template with its regex compiled now, so that a filter's own
    /// `datepattern` that does not compile is an error when the filter is
    /// built.
    fn compiled(self) -> Result<DateTemplate, DateError> {
        let p = Pattern::new(&self.regex_text, false).map_err(|cause| DateError::Regex {
            pattern: self.pattern.clone().unwrap_or_else(|| self.name.clone()),
            cause,
        })?;
        // a fresh template: the cell is empty
        let _ = self.regex.set(Some(p));
        Ok(self)
    }

    /// The compiled regex (compiled now if it was not yet).
    fn pattern(&self) -> Option<&Pattern> {
        self.regex
            .get_or_init(|| Pattern::new(&self.regex_text, false).ok())
            .as_ref()
    }

    /// `regex.search_at(hay, start)`, through the exact fast path where
    /// the template has one and it is sure of its answer.
    fn search_at(&self, hay: &str, start: usize, slots: &mut Slots) -> bool {
        self.search_noting(hay, start, slots).0
    }

    /// [`search_at`](Self::search_at), and whether the syslog matcher
    /// answered (then the answer depends only on the bytes that
    /// [`SyslogStart::depends_on`] names).
    fn search_noting(&self, hay: &str, start: usize, slots: &mut Slots) -> (bool, bool) {
        if start == 0 {
            if let Some(fast) = &self.fast {
                if fast.find(hay, slots.spans_mut()) {
                    return (true, true);
                }
            }
        }
        let found = self
            .pattern()
            .is_some_and(|p| p.search_at(hay, start, slots));
        (found, false)
    }
}

/// The classic syslog time at the start of a line, Fail2Ban's default
/// template `{^LN-BEG}(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?` (the
/// template nearly every `{^LN-BEG}` filter hits on every line), matched by
/// hand instead of by the capture engine.
///
/// The matcher follows the regex's own search order (leftmost-first, as
/// Python backtracks): at each choice it takes the first option, skipping
/// only options that fail at once (the next character or the literal right
/// after them does not fit). When that path reaches the end, it is the
/// match the regex finds, with the same groups. When it does not (a
/// non-ASCII character nearby, a line that does not start with a letter, a
/// later part that fails so the regex would backtrack), it answers nothing
/// and the regex decides. So the result is always the regex's.
#[derive(Debug)]
struct SyslogStart {
    /// Number of groups (0 = whole match, 1 = the date text).
    groups: usize,
    /// Group numbers of the directives.
    a: usize,
    b: usize,
    d: usize,
    hour: usize,
    minute: usize,
    second: usize,
    f: usize,
    year: usize,
}

/// The longest text the matcher looks at: `Wed Sep 30 23:59:59.123456 2026`
/// (31 bytes) and the byte after it.
const SYSLOG_WINDOW: usize = 40;

fn name_at(b: &[u8], p: usize, names: &[&str]) -> bool {
    b.get(p..p + 3)
        .is_some_and(|w| names.iter().any(|n| w.eq_ignore_ascii_case(n.as_bytes())))
}

/// Length of `[lo-hi]?\d` at `p` when followed by `next` (which the
/// pattern requires there, so a length that is not followed by it fails).
fn opt_digit_digit(b: &[u8], p: usize, hi: u8, next: u8) -> Option<usize> {
    let at = |i: usize| b.get(i).copied();
    let digit = |i: usize| at(i).is_some_and(|c| c.is_ascii_digit());
    if at(p).is_some_and(|c| (b'0'..=hi).contains(&c)) && digit(p + 1) && at(p + 2) == Some(next) {
        return Some(2);
    }
    (digit(p) && at(p + 1) == Some(next)).then_some(1)
}

impl SyslogStart {
    /// The matcher, if `regex_text` is exactly that template's regex.
    fn for_template(regex_text: &str, names: &[Option<String>]) -> Option<SyslogStart> {
        let t = |k: &str| time_re(k).unwrap_or("");
        let expected = format!(
            r"(?iu)^(?:\W{{0,2}})?((?:{} )?{} {} {}:{}:{}(?:\.{})?(?: {})?)(?=\b|\W|$)",
            t("a"),
            t("b"),
            t("d"),
            t("k"),
            t("M"),
            t("S"),
            t("f"),
            year_re()
        );
        if regex_text != expected {
            return None;
        }
        let g = |n: &str| names.iter().position(|x| x.as_deref() == Some(n));
        let fast = SyslogStart {
            groups: names.len(),
            a: g("a")?,
            b: g("b")?,
            d: g("d")?,
            hour: g("H")?,
            minute: g("M")?,
            second: g("S")?,
            f: g("f")?,
            year: g("Y")?,
        };
        (fast.groups == 10).then_some(fast)
    }

    /// Fills `out` with the group spans of the template's match at the
    /// start of `line`; false if unsure (the regex must decide then).
    fn find(&self, line: &str, out: &mut Vec<Option<(usize, usize)>>) -> bool {
        let b = line.as_bytes();
        // only ASCII around the match: `\d`, `\w` and case folding then
        // mean what they mean in ASCII
        let b = &b[..b.len().min(SYSLOG_WINDOW)];
        if !b.is_ascii() || !b.first().is_some_and(u8::is_ascii_alphabetic) {
            return false;
        }
        let at = |i: usize| b.get(i).copied();
        let digit = |i: usize| at(i).is_some_and(|c| c.is_ascii_digit());
        out.clear();
        out.resize(self.groups, None);
        // `^(?:\W{0,2})?` takes nothing before a letter
        let mut p = 0;
        // `(?:(?P<a>mon|...) )?`
        if name_at(b, 0, &DAYS) && at(3) == Some(b' ') {
            out[self.a] = Some((0, 3));
            p = 4;
        }
        // `(?P<b>jan|...) `
        if !name_at(b, p, &MONTHS) || at(p + 3) != Some(b' ') {
            return false;
        }
        out[self.b] = Some((p, p + 3));
        p += 4;
        // `(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1]) `: the first alternative that
        // fits and is followed by the space
        let (c0, c1) = (at(p), at(p + 1));
        let nonzero = |c: Option<u8>| c.is_some_and(|c| (b'1'..=b'9').contains(&c));
        let options = [
            (matches!(c0, Some(b'1' | b'2')) && digit(p + 1)).then_some(2),
            (matches!(c0, Some(b'0' | b' ')) && nonzero(c1)).then_some(2),
            nonzero(c0).then_some(1),
            (c0 == Some(b'3') && matches!(c1, Some(b'0' | b'1'))).then_some(2),
        ];
        let Some(dl) = options
            .into_iter()
            .flatten()
            .find(|&l| at(p + l) == Some(b' '))
        else {
            return false;
        };
        out[self.d] = Some((p, p + dl));
        p += dl + 1;
        // ` ?(?P<H>[0-2]?\d):`: the hour cannot start with a space, so a
        // space here is the optional one
        if at(p) == Some(b' ') {
            p += 1;
        }
        let Some(hl) = opt_digit_digit(b, p, b'2', b':') else {
            return false;
        };
        out[self.hour] = Some((p, p + hl));
        p += hl + 1;
        // `(?P<M>[0-5]?\d):`
        let Some(ml) = opt_digit_digit(b, p, b'5', b':') else {
            return false;
        };
        out[self.minute] = Some((p, p + ml));
        p += ml + 1;
        // `(?P<S>[0-5]?\d|6[0-1])`: its first way (`6[0-1]` is only tried
        // when the rest fails, and then we give up below)
        if !digit(p) {
            return false;
        }
        let sl = if at(p).is_some_and(|c| c <= b'5') && digit(p + 1) {
            2
        } else {
            1
        };
        out[self.second] = Some((p, p + sl));
        p += sl;
        // `(?:\.(?P<f>[0-9]{1,6}))?`, greedy
        if at(p) == Some(b'.') && digit(p + 1) {
            let n = (1..=6).take_while(|&k| digit(p + k)).count();
            out[self.f] = Some((p + 1, p + 1 + n));
            p += 1 + n;
        }
        // `(?: (?P<Y>(?:200|201|...)\d))?`
        if at(p) == Some(b' ')
            && digit(p + 4)
            && b.get(p + 1..p + 4)
                .is_some_and(|w| year_decades().iter().any(|d| d.as_bytes() == w))
        {
            out[self.year] = Some((p + 1, p + 5));
            p += 5;
        }
        // `(?=\b|\W|$)` after a digit: the end, or a non-word character
        if at(p).is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return false;
        }
        debug_assert!(p < SYSLOG_WINDOW);
        out[0] = Some((0, p));
        out[1] = Some((0, p));
        true
    }

    /// How many leading bytes of a line decided a match of [`find`] that
    /// ended at `end`: the matcher looks at most four bytes past the end
    /// (a year that did not follow), apart from its ASCII test of the whole
    /// window. A line whose first bytes are these (and whose window is
    /// ASCII) gets the same answer.
    ///
    /// [`find`]: SyslogStart::find
    fn depends_on(end: usize) -> usize {
        end + 5
    }
}

/// The last line's date, found by the syslog matcher: a line that starts
/// with the same bytes (most lines of a busy log share their second) has
/// the same date at the same place, so neither matcher nor conversion runs.
#[derive(Debug, Default)]
struct RepeatMemo {
    /// The leading bytes the answer depended on.
    key: Vec<u8>,
    /// `key` is shorter than the matcher's reach: the line ended there.
    whole_line: bool,
    /// Position in the template order of the template that matched.
    pos: usize,
    /// The answer; None when nothing is remembered.
    found: Option<DateMatch>,
    /// Where the two digits of the seconds are, if they are two: other
    /// seconds there (`[0-5]\d`) take the same way through the matcher.
    seconds: Option<usize>,
}

impl RepeatMemo {
    /// The remembered answer, if it is `line`'s, and whether the line
    /// starts exactly as the remembered one (else only its seconds differ).
    fn answer(&self, line: &str) -> Option<(DateMatch, bool)> {
        let b = line.as_bytes();
        let k = &self.key;
        let fits =
            (!self.whole_line || b.len() == k.len()) && b[..b.len().min(SYSLOG_WINDOW)].is_ascii();
        if !fits || b.len() < k.len() {
            return None;
        }
        if b.starts_with(k) {
            return self.found.map(|f| (f, true));
        }
        let s = self.seconds?;
        let other_seconds = b[..s] == k[..s]
            && b[s + 2..k.len()] == k[s + 2..]
            && (b'0'..=b'5').contains(&b[s])
            && b[s + 1].is_ascii_digit();
        self.found.filter(|_| other_seconds).map(|f| (f, false))
    }

    /// Makes the key `line`'s, whose start differs only in the seconds.
    fn take_seconds(&mut self, line: &str) {
        if let Some(s) = self.seconds {
            self.key[s..s + 2].copy_from_slice(&line.as_bytes()[s..s + 2]);
        }
    }

    fn remember(
        &mut self,
        line: &str,
        pos: usize,
        found: DateMatch,
        seconds: Option<(usize, usize)>,
    ) {
        let b = line.as_bytes();
        let reach = SyslogStart::depends_on(found.match_end);
        self.key.clear();
        self.key.extend_from_slice(&b[..reach.min(b.len())]);
        self.whole_line = b.len() < reach;
        self.pos = pos;
        self.found = Some(found);
        self.seconds = seconds
            .filter(|&(s, e)| e == s + 2 && e <= self.key.len())
            .map(|(s, _)| s);
    }
}

const DEFAULT_PATTERNS: [&str; 18] = [
    r"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?",
    r"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S",
    r"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?",
    r"%m/%d/%ExY:%H:%M:%S",
    r"%m-%d-%ExY %k:%M:%S(?:\.%f)?",
    r"EPOCH",
    r"{^LN-BEG}%H:%M:%S",
    r"^<%m/%d/%Exy@%H:%M:%S>",
    r"%Exy%Exm%Exd  ?%H:%M:%S",
    r"%b %d, %ExY %I:%M:%S %p",
    r"^%b-%d-%Exy %k:%M:%S",
    r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"TAI64N",
    "",
];

struct Defaults {
    /// The 17 default templates as written.
    plain: Vec<Arc<DateTemplate>>,
    /// Line-anchored copies (weight 100) followed by the plain ones.
    all: Vec<Arc<DateTemplate>>,
}

fn defaults() -> &'static Defaults {
    static D: OnceLock<Defaults> = OnceLock::new();
    D.get_or_init(|| {
        let plain: Vec<Arc<DateTemplate>> = DEFAULT_PATTERNS
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| {
                Arc::new(DateTemplate::for_pattern(p).expect("default date template compiles"))
            })
            .collect();
        let mut anchored = Vec::new();
        for t in &plain {
            if t.name.starts_with("{^LN-BEG}") || t.name.starts_with('^') {
                continue;
            }
            let source = t.pattern.clone().unwrap_or_else(|| t.name.clone());
            let mut copy = DateTemplate::for_pattern(&format!("{{^LN-BEG}}{source}"))
                .expect("anchored default template compiles");
            if copy.name != t.name {
                copy.weight = 100.0;
                anchored.push(Arc::new(copy));
            }
        }
        let mut all = anchored;
        all.extend(plain.iter().cloned());
        Defaults { plain, all }
    })
}

/// The templates of one filter (shared, immutable).
#[derive(Debug, Clone, Default)]
pub struct DateDetector {
    pub templates: Vec<Arc<DateTemplate>>,
    /// `logtimezone`: offset in minutes for times without their own zone.
    pub default_tz: Option<i32>,
}

impl DateDetector {
    /// Fail2Ban's default detector (all default templates).
    pub fn with_defaults() -> DateDetector {
        DateDetector {
            templates: defaults().all.clone(),
            default_tz: None,
        }
    }

    /// A detector for a `datepattern` value (one template per line).
    pub fn from_datepattern(value: &str) -> Result<DateDetector, DateError> {
        let mut d = DateDetector::default();
        for p in value.split('\n').map(str::trim).filter(|s| !s.is_empty()) {
            d.append(p)?;
        }
        Ok(d)
    }

    fn push(&mut self, t: Arc<DateTemplate>, ignore_dup: bool) -> Result<(), DateError> {
        if self.templates.iter().any(|x| x.name == t.name) {
            if ignore_dup {
                return Ok(());
            }
            return Err(DateError::Duplicate(t.name.clone()));
        }
        self.templates.push(t);
        Ok(())
    }

    fn append(&mut self, pattern: &str) -> Result<(), DateError> {
        let key = if pattern.contains('%') {
            pattern.to_string()
        } else {
            pattern.to_uppercase()
        };
        let ignore_dup = !self.templates.is_empty();
        if key == "{^LN-BEG}" || key == "{DEFAULT}" {
            let line_begin_only = key == "{^LN-BEG}";
            for t in &defaults().all {
                if !line_begin_only || t.flags & LINE_BEGIN != 0 {
                    self.push(t.clone(), ignore_dup)?;
                }
            }
            return Ok(());
        }
        if key.contains("{DATE}") {
            for t in &defaults().plain {
                let source = t.pattern.clone().unwrap_or_else(|| t.name.clone());
                let unbound = unbound_pattern(&source);
                let wrapped = shapes()
                    .date_prematch
                    .replace_all(pattern, |_: &fancy_regex::Captures<str>| unbound.clone())
                    .into_owned();
                let tmpl = DateTemplate::for_pattern(&wrapped)?.compiled()?;
                self.push(Arc::new(tmpl), ignore_dup)?;
            }
            return Ok(());
        }
        let tmpl = if key == "{NONE}" {
            let mut t = DateTemplate::for_pattern("{UNB}^")?.compiled()?;
            t.name = "{NONE}".to_string();
            t
        } else {
            DateTemplate::for_pattern(pattern)?.compiled()?
        };
        self.push(Arc::new(tmpl), false)
    }

    /// Names of the templates, in order (for `banhammer regex` output).
    pub fn names(&self) -> Vec<String> {
        self.templates.iter().map(|t| t.name.clone()).collect()
    }
}

/// `logtimezone` values: `UTC`, `UTC+0200`, `+02:00`, `CET`, ... -> minutes.
pub fn parse_time_zone(tz: &str) -> Result<i32, DateError> {
    zone_offset(tz).ok_or_else(|| DateError::TimeZone(tz.to_string()))
}

fn zone_abbr_offset(abbr: &str) -> Option<i32> {
    const TABLE: &[(f64, &str)] = &[
        (-12.0, "Y"),
        (-11.0, "X NUT SST"),
        (-10.0, "W CKT HAST HST TAHT TKT"),
        (-9.0, "V AKST GAMT GIT HADT HNY"),
        (-8.0, "U AKDT CIST HAY HNP PST PT"),
        (-7.0, "T HAP HNR MST PDT"),
        (-6.0, "S CST EAST GALT HAR HNC MDT"),
        (-5.0, "R CDT COT EASST ECT EST ET HAC HNE PET"),
        (-4.0, "Q AST BOT CLT COST EDT FKT GYT HAE HNA PYT"),
        (
            -3.0,
            "P ADT ART BRT CLST FKST GFT HAA PMST PYST SRT UYT WGT",
        ),
        (-2.0, "O BRST FNT PMDT UYST WGST"),
        (-1.0, "N AZOT CVT EGT"),
        (0.0, "Z EGST GMT UTC WET WT"),
        (1.0, "A CET DFT WAT WEDT WEST"),
        (2.0, "B CAT CEDT CEST EET SAST WAST"),
        (3.0, "C EAT EEDT EEST IDT MSK"),
        (4.0, "D AMT AZT GET GST KUYT MSD MUT RET SAMT SCT"),
        (
            5.0,
            "E AMST AQTT AZST HMT MAWT MVT PKT TFT TJT TMT UZT YEKT",
        ),
        (6.0, "F ALMT BIOT BTT IOT KGT NOVT OMST YEKST"),
        (7.0, "G CXT DAVT HOVT ICT KRAT NOVST OMSST THA WIB"),
        (
            8.0,
            "H ACT AWST BDT BNT CAST HKT IRKT KRAST MYT PHT SGT ULAT WITA WST",
        ),
        (9.0, "I AWDT IRKST JST KST PWT TLT WDT WIT YAKT"),
        (10.0, "K AEST ChST PGT VLAT YAKST YAPT"),
        (11.0, "L AEDT LHDT MAGT NCT PONT SBT VLAST VUT"),
        (
            12.0,
            "M ANAST ANAT FJT GILT MAGST MHT NZST PETST PETT TVT WFT",
        ),
        (13.0, "FJST NZDT"),
        (11.5, "NFT"),
        (10.5, "ACDT LHST"),
        (9.5, "ACST"),
        (6.5, "CCT MMT"),
        (5.75, "NPT"),
        (5.5, "SLT"),
        (4.5, "AFT IRDT"),
        (3.5, "IRST"),
        (-2.5, "HAT NDT"),
        (-3.5, "HNT NST NT"),
        (-4.5, "HLV VET"),
        (-9.5, "MART MIT"),
    ];
    if abbr.is_empty() {
        return Some(0);
    }
    TABLE
        .iter()
        .find(|(_, names)| names.split(' ').any(|n| n == abbr))
        .map(|(h, _)| (h * 60.0) as i32)
}

/// Fail2Ban's `zone2offset` on a string: `(ABBR)?([+-][01]\d(:?\d{2})?)?`.
fn zone_offset(z: &str) -> Option<i32> {
    match z {
        "Z" | "UTC" | "GMT" => return Some(0),
        _ => {}
    }
    let split = z.find(['+', '-']).unwrap_or(z.len());
    let (abbr, off) = z.split_at(split);
    let abbr_ok = abbr.is_empty()
        || ((abbr.len() == 1 || (3..=5).contains(&abbr.len()))
            && abbr.chars().all(|c| c.is_ascii_uppercase()));
    if !abbr_ok {
        return None;
    }
    let base = zone_abbr_offset(abbr)?;
    if off.is_empty() {
        return Some(base);
    }
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let digits = &off[1..];
    let b = digits.as_bytes();
    let two = |s: &[u8]| -> Option<i32> {
        (s.len() == 2 && s.iter().all(u8::is_ascii_digit))
            .then(|| ((s[0] - b'0') * 10 + (s[1] - b'0')) as i32)
    };
    let valid_hour =
        |h: &[u8]| h.len() == 2 && (h[0] == b'0' || h[0] == b'1') && h[1].is_ascii_digit();
    match b.len() {
        2 if valid_hour(b) => Some(base + sign * two(b)? * 60),
        4 if valid_hour(&b[..2]) => Some(base + sign * (two(&b[..2])? * 60 + two(&b[2..])?)),
        5 if valid_hour(&b[..2]) && b[2] == b':' => {
            Some(base + sign * (two(&b[..2])? * 60 + two(&b[3..])?))
        }
        _ => None,
    }
}

/// Local time through the C library, as Python's `time.mktime` and
/// `datetime.fromtimestamp` do (honours `TZ`). Results are cached per hour.
#[derive(Debug, Default)]
pub struct LocalClock {
    hour_cache: Option<(NaiveDateTime, i64)>,
    now_cache: Option<(i64, NaiveDateTime)>,
}

impl LocalClock {
    /// `datetime.fromtimestamp(now)`, cached while `now` stays in the same second.
    pub fn local_now(&mut self, now: f64) -> NaiveDateTime {
        let key = now.floor() as i64;
        match self.now_cache {
            Some((k, t)) if k == key => t,
            _ => {
                let t = local_naive(now);
                self.now_cache = Some((key, t));
                t
            }
        }
    }

    /// `time.mktime` of a naive local time (DST decided by the C library).
    pub fn to_epoch(&mut self, t: NaiveDateTime) -> Option<i64> {
        let hour = t.date().and_hms_opt(t.hour(), 0, 0)?;
        let base = match self.hour_cache {
            Some((h, e)) if h == hour => e,
            _ => {
                let e = mktime(hour)?;
                self.hour_cache = Some((hour, e));
                e
            }
        };
        Some(base + i64::from(t.minute()) * 60 + i64::from(t.second()))
    }
}

fn mktime(t: NaiveDateTime) -> Option<i64> {
    // SAFETY: `tm` is fully initialised (zeroed, then the fields mktime
    // reads are set) and mktime only reads/normalises it.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = t.year() - 1900;
        tm.tm_mon = t.month0() as i32;
        tm.tm_mday = t.day() as i32;
        tm.tm_hour = t.hour() as i32;
        tm.tm_min = t.minute() as i32;
        tm.tm_sec = t.second() as i32;
        tm.tm_isdst = -1;
        let r = libc::mktime(&mut tm);
        (r != -1 || (t.year() == 1969 && t.month() == 12 && t.day() == 31)).then_some(r as i64)
    }
}

extern "C" {
    // POSIX; not exported by the libc crate on every target.
    fn tzset();
}

/// `datetime.fromtimestamp(epoch)`: naive local time.
pub fn local_naive(epoch: f64) -> NaiveDateTime {
    let secs = epoch.floor() as libc::time_t;
    // SAFETY: localtime_r writes into the provided, zero-initialised tm.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tzset();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    NaiveDate::from_ymd_opt(tm.tm_year + 1900, (tm.tm_mon + 1) as u32, tm.tm_mday as u32)
        .and_then(|d| {
            d.and_hms_opt(
                tm.tm_hour as u32,
                tm.tm_min as u32,
                tm.tm_sec.min(59) as u32,
            )
        })
        .unwrap_or_default()
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const MONTHS_FULL: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAYS_FULL: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// The position of `v` in `names` (lower case), compared as
/// `v.to_lowercase()` would be; ASCII text needs no lowered copy.
fn name_index(names: &[&str], v: &str) -> Option<usize> {
    if v.is_ascii() {
        names.iter().position(|n| n.eq_ignore_ascii_case(v))
    } else {
        let lower = v.to_lowercase();
        names.iter().position(|n| *n == lower)
    }
}

/// Fail2Ban's `reGroupDictStrptime`: epoch seconds from the directive
/// groups, `None` where Python raises (impossible dates, unknown zones).
/// The span of `group` in `slots`, from `base` on.
fn span_from(slots: &Slots, group: usize, base: usize) -> Option<(usize, usize)> {
    slots.get(group).map(|(a, b)| (a - base, b - base))
}

/// The epoch time of the fields in `slots`, and where the seconds field
/// is when the time is linear in it over the whole minute (`seconds`: its
/// group; see [`TimeMemo::seconds`]).
fn strptime(
    text: &str,
    slots: &Slots,
    fields: &[(Field, usize)],
    default_tz: Option<i32>,
    now: f64,
    clock: &mut LocalClock,
) -> Option<(f64, Option<usize>)> {
    let mut year: Option<i32> = None;
    let mut month: Option<u32> = None;
    let mut day: Option<u32> = None;
    let (mut hour, mut minute, mut second) = (0u32, 0u32, 0u32);
    let mut tzoffset: Option<i32> = None;
    let mut weekday: Option<u32> = None;
    let mut julian: Option<u32> = None;
    let mut week: Option<(u32, bool)> = None;
    let ampm = fields
        .iter()
        .find(|(f, _)| *f == Field::P)
        .and_then(|(_, g)| slots.text(text, *g))
        .map(str::to_lowercase)
        .unwrap_or_default();
    for &(f, g) in fields {
        let Some(v) = slots.text(text, g) else {
            continue;
        };
        let num = || v.trim().parse::<u32>().ok();
        match f {
            Field::LowerY => {
                let mut y = num()? as i32;
                if y <= 2000 {
                    y += 2000;
                }
                year = Some(y);
            }
            Field::Y => year = Some(num()? as i32),
            Field::M => month = Some(num()?),
            Field::BigB => month = Some(name_index(&MONTHS_FULL, v)? as u32 + 1),
            Field::B => month = Some(name_index(&MONTHS, v)? as u32 + 1),
            Field::D => day = Some(num()?),
            Field::H => hour = num()?,
            Field::I => {
                hour = num()?;
                if ampm.is_empty() || ampm == "am" {
                    if hour == 12 {
                        hour = 0;
                    }
                } else if ampm == "pm" && hour != 12 {
                    hour += 12;
                }
            }
            Field::Min => minute = num()?,
            Field::S => second = num()?,
            Field::A => weekday = Some(name_index(&DAYS, v)? as u32),
            Field::BigA => weekday = Some(name_index(&DAYS_FULL, v)? as u32),
            Field::W => weekday = Some((num()? + 6) % 7),
            Field::J => julian = Some(num()?),
            Field::U => week = Some((num()?, false)),
            Field::BigW => week = Some((num()?, true)),
            Field::Z | Field::BigZ => tzoffset = Some(zone_offset(v)?),
            Field::P => {}
        }
    }
    let now_local = clock.local_now(now);
    let mut assume_year = false;
    let year = match year {
        Some(y) => y,
        None => {
            assume_year = true;
            now_local.year()
        }
    };
    let (mut month, mut day) = (month, day);
    if month.is_none() || day.is_none() {
        if julian.is_none() {
            if let (Some((w, monday_first)), Some(wd)) = (week, weekday) {
                julian = julian_from_week(year, w, wd, monday_first);
            }
        }
        if let Some(j) = julian {
            let d = NaiveDate::from_ymd_opt(year, 1, 1)?
                .checked_add_signed(Duration::days(i64::from(j) - 1))?;
            month = Some(d.month());
            day = Some(d.day());
        }
    }
    let mut assume_today = false;
    if month.is_none() && day.is_none() {
        month = Some(now_local.month());
        day = Some(now_local.day());
        assume_today = true;
    }
    if year < 1 {
        return None;
    }
    let (month, day) = (month.unwrap_or(1), day.unwrap_or(1));
    let mut result =
        NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, second)?;
    if tzoffset.is_none() {
        tzoffset = default_tz;
    }
    if let Some(off) = tzoffset {
        result -= Duration::minutes(i64::from(off));
    }
    // the same decisions for every second of this minute: then another
    // second of it is this time moved by the difference
    let mut same_all_minute = true;
    let mut same_either_side = |t: NaiveDateTime, limit: NaiveDateTime| {
        let first = t - Duration::seconds(i64::from(second));
        same_all_minute &= (first > limit) == (first + Duration::seconds(59) > limit);
    };
    if assume_today {
        same_either_side(result, now_local);
        if result > now_local {
            result -= Duration::days(1);
        }
    }
    if assume_year {
        let limit = now_local + Duration::days(1);
        same_either_side(result, limit);
        if result > limit {
            result = NaiveDate::from_ymd_opt(year - 1, month, day)?.and_time(result.time());
        }
    }
    // (one seconds field: with two, the last one read counts)
    let mut seconds_fields = fields
        .iter()
        .filter(|(f, _)| *f == Field::S)
        .map(|&(_, g)| g);
    let seconds = match (seconds_fields.next(), seconds_fields.next()) {
        (Some(g), None) if same_all_minute => Some(g),
        _ => None,
    };
    let time = match tzoffset {
        Some(_) => result.and_utc().timestamp() as f64,
        // linear within the hour too (see `LocalClock::to_epoch`)
        None => clock.to_epoch(result)? as f64,
    };
    Some((time, seconds))
}

/// Python's `_calc_julian_from_U_or_W`.
fn julian_from_week(year: i32, week: u32, weekday: u32, monday_first: bool) -> Option<u32> {
    let first = NaiveDate::from_ymd_opt(year, 1, 1)?
        .weekday()
        .num_days_from_monday();
    let (first_weekday, day_of_week) = if monday_first {
        (first, weekday)
    } else {
        ((first + 1) % 7, (weekday + 1) % 7)
    };
    let week_0_length = (7 - first_weekday) % 7;
    let j = if week == 0 {
        1 + i64::from(day_of_week) - i64::from(first_weekday)
    } else {
        let days_to_week = i64::from(week_0_length) + 7 * (i64::from(week) - 1);
        1 + days_to_week + i64::from(day_of_week)
    };
    u32::try_from(j).ok()
}

/// What [`DateState::match_time`] found: the date text's span in the line.
#[derive(Debug, Clone, Copy)]
pub struct DateMatch {
    pub template: usize,
    /// Span of the date text (group 1): what is cut out of the line.
    pub start: usize,
    pub end: usize,
    /// Where the whole template match started, and the end of the range
    /// it was searched in.
    match_start: usize,
    match_end: usize,
    range_end: usize,
}

/// The last converted date: the same text (in the same context, for the
/// same template, at the same clock second) converts to the same time.
#[derive(Debug, Default)]
struct TimeMemo {
    template: usize,
    text: String,
    around: (Option<char>, Option<char>),
    now: i64,
    time: Option<f64>,
    valid: bool,
    /// Which of the template's fields are the seconds, and their value,
    /// when `strptime` found the time linear in them over the whole minute:
    /// a date that differs only there, with every field at the same place,
    /// is this time moved by the difference in seconds.
    seconds: Option<(usize, u32)>,
    /// The spans of the template's fields in `text` (with `seconds`).
    fields: Vec<Option<(usize, usize)>>,
}

#[derive(Debug, Clone)]
struct Slot {
    template: usize,
    hits: u64,
    last_used: f64,
    distance: usize,
}

impl Slot {
    fn weight(&self, templates: &[Arc<DateTemplate>]) -> f64 {
        self.hits as f64 * templates[self.template].weight / (self.distance.max(1) as f64)
    }
}

/// The adaptive part of date detection, one per filter instance.
#[derive(Debug)]
pub struct DateState {
    order: Vec<Slot>,
    template_hits: Vec<u64>,
    last_pos: (usize, Option<char>, Option<char>),
    last_end: (usize, Option<char>, Option<char>),
    last_idx: Option<usize>,
    first_unused: usize,
    slots: Slots,
    /// (template, match start) whose groups `slots` holds.
    slots_for: Option<(usize, usize)>,
    memo: TimeMemo,
    repeat: RepeatMemo,
    /// The last `match_time` answered from `repeat`, for a line that
    /// starts exactly as the remembered one.
    repeated: bool,
    /// The last `try_template` was answered by the syslog matcher.
    fast_answered: bool,
    clock: LocalClock,
    /// Hits per template (by template index), for reports.
    pub hits: Vec<u64>,
}

const UNUSED_TIME: f64 = 300.0;

fn char_before(s: &str, i: usize) -> Option<char> {
    if i == 0 || i > s.len() || !s.is_char_boundary(i) {
        return None;
    }
    s[..i].chars().next_back()
}

fn char_at(s: &str, i: usize) -> Option<char> {
    if i >= s.len() || !s.is_char_boundary(i) {
        return None;
    }
    s[i..].chars().next()
}

fn isalnum(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

/// The wall clock for the template order (Fail2Ban's `time.time()` there):
/// the kernel's coarse clock, a few milliseconds behind at most, which
/// makes no difference to a 300-second rule and costs a fraction of a
/// precise clock read (this runs on every line).
fn wall_clock() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`, a valid timespec.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if r == 0 {
        return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl DateState {
    pub fn new(detector: &DateDetector) -> DateState {
        let n = detector.templates.len();
        DateState {
            order: (0..n)
                .map(|i| Slot {
                    template: i,
                    hits: 0,
                    last_used: 0.0,
                    distance: 0x7fff_ffff,
                })
                .collect(),
            template_hits: vec![0; n],
            last_pos: (1, None, None),
            last_end: (0x7fff_ffff, None, None),
            last_idx: None,
            first_unused: 0,
            slots: Slots::default(),
            slots_for: None,
            memo: TimeMemo::default(),
            repeat: RepeatMemo::default(),
            repeated: false,
            fast_answered: false,
            clock: LocalClock::default(),
            hits: vec![0; n],
        }
    }

    /// Searches one template (by position in the adaptive order), in
    /// `line[start..end]` where a range is given (Python's pos/endpos).
    /// Returns (match start, match end, date start, date end, range end).
    fn try_template(
        &mut self,
        det: &DateDetector,
        pos: usize,
        line: &str,
        range: Option<(usize, usize)>,
    ) -> Option<(usize, usize, usize, usize, usize)> {
        let t = self.order[pos].template;
        let tmpl = &det.templates[t];
        let (start, end) = match range {
            Some((s, e))
                if s <= e.min(line.len())
                    && line.is_char_boundary(s)
                    && line.is_char_boundary(e.min(line.len())) =>
            {
                (s, e.min(line.len()))
            }
            _ => (0, line.len()),
        };
        self.slots_for = None;
        let (found, fast) = tmpl.search_noting(&line[..end], start, &mut self.slots);
        self.fast_answered = fast;
        if !found {
            return None;
        }
        self.template_hits[t] += 1;
        let (ms, me) = self.slots.get(0)?;
        let (gs, ge) = self.slots.get(1).unwrap_or((ms, me));
        self.slots_for = Some((t, ms));
        Some((ms, me, gs, ge, end))
    }

    /// Fail2Ban's `DateDetector.matchTime`: finds the date in `line`.
    pub fn match_time(&mut self, det: &DateDetector, line: &str) -> Option<DateMatch> {
        if det.templates.is_empty() {
            return None;
        }
        if let Some((found, exact)) = self
            .repeat
            .answer(line)
            .filter(|_| self.last_idx == Some(self.repeat.pos))
        {
            // what the template at `last_idx` answers first, and wins (at
            // the same place: the rest of the winner's state stays, and so
            // do its groups' spans)
            self.repeated = exact;
            if !exact {
                self.repeat.take_seconds(line);
            }
            self.template_hits[found.template] += 1;
            self.count_win(self.repeat.pos);
            return Some(found);
        }
        self.repeated = false;
        self.repeat.found = None;
        let n = self.order.len();
        let mut found: Option<(usize, usize, usize, usize, usize, usize)> = None; // (start,end,gstart,gend,range end,pos)
        let mut ignore_by_search = usize::MAX;
        let mut winner: Option<(usize, usize, usize, usize, usize, usize)> = None;
        if let Some(i) = self.last_idx.filter(|&i| i < n) {
            let anchored = det.templates[self.order[i].template].is_anchored();
            let m = if anchored {
                ignore_by_search = i;
                self.try_template(det, i, line, None)
            } else {
                let (distance, endpos) = (self.last_pos.0, self.last_end.0);
                let left = char_before(line, distance) == self.last_pos.1
                    || (char_at(line, distance) == self.last_pos.2 && !isalnum(self.last_pos.2));
                let right = char_at(line, endpos) == self.last_end.2
                    || (char_before(line, endpos) == self.last_end.1 && !isalnum(self.last_end.1));
                if left && right {
                    self.try_template(det, i, line, Some((distance, endpos)))
                } else {
                    ignore_by_search = i;
                    self.try_template(det, i, line, None)
                }
            };
            if let Some((s, e, gs, ge, re)) = m {
                if n == 1 || anchored || (s == self.last_pos.0 && e == self.last_end.0) {
                    winner = Some((s, e, gs, ge, re, i));
                } else {
                    found = Some((s, e, gs, ge, re, i));
                }
            }
        }
        if winner.is_none() {
            let mut i = 0;
            while i < n {
                if i == ignore_by_search {
                    i += 1;
                    continue;
                }
                if let Some((s, e, gs, ge, re)) = self.try_template(det, i, line, None) {
                    let tmpl = &det.templates[self.order[i].template];
                    if i + 1 >= n || tmpl.is_anchored() {
                        winner = Some((s, e, gs, ge, re, i));
                        break;
                    }
                    let next_unused = self.template_hits[self.order[i + 1].template] == 0;
                    if s == 0 && self.order[i].hits > 0 && next_unused {
                        winner = Some((s, e, gs, ge, re, i));
                        break;
                    }
                    if s > self.order[i].distance || s > self.last_pos.0 {
                        if found.is_none_or(|f| s < f.0) {
                            found = Some((s, e, gs, ge, re, i));
                        }
                        i += 1;
                        continue;
                    }
                    winner = Some((s, e, gs, ge, re, i));
                    break;
                }
                i += 1;
            }
            if winner.is_none() {
                winner = found;
            }
        }
        let (s, e, gs, ge, range_end, mut i) = winner?;
        let template = self.count_win(i);
        self.order[i].distance = s;
        self.last_pos = (s, char_before(line, s), char_at(line, s));
        self.last_end = (e, char_before(line, e), char_at(line, e));
        if i > 0 && Some(i) != self.last_idx {
            i = self.reorder(det, i);
        }
        self.last_idx = Some(i);
        let found = DateMatch {
            template,
            start: gs,
            end: ge,
            match_start: s,
            match_end: e,
            range_end,
        };
        if self.fast_answered
            && s == 0
            && range_end == line.len()
            && self.slots_for == Some((template, s))
            && det.templates[template].is_anchored()
        {
            let seconds = det.templates[template]
                .fast
                .as_ref()
                .and_then(|f| self.slots.get(f.second));
            self.repeat.remember(line, i, found, seconds);
        }
        Some(found)
    }

    /// Counts a win of the template at `i` in the order; returns the template.
    fn count_win(&mut self, i: usize) -> usize {
        let slot = &mut self.order[i];
        slot.hits += 1;
        slot.last_used = wall_clock();
        self.hits[slot.template] += 1;
        let template = slot.template;
        if self.first_unused == i {
            self.first_unused += 1;
        }
        template
    }

    fn reorder(&mut self, det: &DateDetector, num: usize) -> usize {
        let untime = self.order[num].last_used - UNUSED_TIME;
        let weight = self.order[num].weight(&det.templates);
        let mut pos = if self.first_unused < num {
            self.first_unused
        } else {
            num / 2
        };
        let movable = |order: &Vec<Slot>, pos: usize| {
            weight > order[pos].weight(&det.templates) || untime > order[pos].last_used
        };
        if !movable(&self.order, pos) {
            if pos == num - 1 {
                return num;
            }
            pos = num - 1;
            if !movable(&self.order, pos) {
                return num;
            }
        }
        let slot = self.order.remove(num);
        self.order.insert(pos, slot);
        while self.first_unused < self.order.len() && self.order[self.first_unused].hits > 0 {
            self.first_unused += 1;
        }
        pos
    }

    /// Epoch seconds of the date found by [`match_time`](Self::match_time);
    /// `None` if the text is not a valid date.
    pub fn get_time(
        &mut self,
        det: &DateDetector,
        line: &str,
        m: &DateMatch,
        now: f64,
    ) -> Option<f64> {
        let now_sec = now.floor() as i64;
        let memo = &self.memo;
        let text = &line[m.match_start..m.match_end];
        if self.repeated
            && memo.valid
            && memo.template == m.template
            && memo.now == now_sec
            && memo.text == text
        {
            // the same text in the same context: the repeat memo's line
            // start covers the characters around the match
            return memo.time;
        }
        let around = (char_before(line, m.match_start), char_at(line, m.match_end));
        if memo.valid
            && memo.template == m.template
            && memo.now == now_sec
            && memo.around == around
            && memo.text == text
        {
            return memo.time;
        }
        if memo.valid && memo.template == m.template && memo.now == now_sec && memo.around == around
        {
            if let Some((time, seconds)) = self.seconds_moved(det, line, m) {
                let memo = &mut self.memo;
                memo.text.clear();
                memo.text.push_str(text);
                memo.time = Some(time);
                if let Some(s) = &mut memo.seconds {
                    s.1 = seconds;
                }
                return memo.time;
            }
        }
        self.memo.seconds = None;
        let time = self.convert(det, line, m, now);
        let memo = &mut self.memo;
        memo.template = m.template;
        memo.text.clear();
        memo.text.push_str(text);
        memo.around = around;
        memo.now = now_sec;
        memo.time = time;
        memo.valid = true;
        time
    }

    /// The memo's time moved to this line's seconds (and these seconds),
    /// if this line's date differs from the memo's only there (see
    /// [`TimeMemo::seconds`]).
    fn seconds_moved(&self, det: &DateDetector, line: &str, m: &DateMatch) -> Option<(f64, u32)> {
        let memo = &self.memo;
        let (k, old) = memo.seconds?;
        let Kind::Pattern { fields } = &det.templates[m.template].kind else {
            return None;
        };
        let (rs, re) = (*memo.fields.get(k)?)?;
        let g = fields.get(k)?.1;
        // this line's groups are in the slots (the template just matched it)
        if self.slots_for != Some((m.template, m.match_start)) {
            return None;
        }
        let text = &line.as_bytes()[m.match_start..m.match_end];
        let was = memo.text.as_bytes();
        let same_fields = fields.len() == memo.fields.len()
            && fields
                .iter()
                .zip(&memo.fields)
                .all(|(&(_, fg), &span)| span_from(&self.slots, fg, m.match_start) == span);
        if !same_fields
            || text.len() != was.len()
            || text[..rs] != was[..rs]
            || text[re..] != was[re..]
        {
            return None;
        }
        let (a, b) = self.slots.get(g)?;
        let new = line[a..b].trim().parse::<u32>().ok().filter(|&v| v <= 59)?;
        Some((memo.time? - f64::from(old) + f64::from(new), new))
    }

    fn convert(&mut self, det: &DateDetector, line: &str, m: &DateMatch, now: f64) -> Option<f64> {
        let tmpl = &det.templates[m.template];
        if !matches!(tmpl.kind, Kind::Tai64n) && self.slots_for != Some((m.template, m.match_start))
        {
            // another template was tried after the winner: find its groups again
            let hay = line.get(..m.range_end).unwrap_or(line);
            if !tmpl.search_at(hay, m.match_start, &mut self.slots) {
                return None;
            }
            self.slots_for = Some((m.template, m.match_start));
        }
        match &tmpl.kind {
            Kind::Pattern { fields } => {
                let (time, seconds) = strptime(
                    line,
                    &self.slots,
                    fields,
                    det.default_tz,
                    now,
                    &mut self.clock,
                )?;
                if let Some(g) = seconds {
                    let memo = &mut self.memo;
                    memo.fields.clear();
                    memo.fields.extend(
                        fields
                            .iter()
                            .map(|&(_, g)| span_from(&self.slots, g, m.match_start)),
                    );
                    memo.seconds = fields.iter().position(|&(_, fg)| fg == g).and_then(|k| {
                        let v = self.slots.text(line, g)?.trim().parse::<u32>().ok()?;
                        Some((k, v))
                    });
                }
                Some(time)
            }
            Kind::Epoch { long, group } => {
                let v = self.slots.text(line, *group)?;
                let f: f64 = v.parse().ok()?;
                if *long && v.len() >= 13 {
                    if v.len() >= 16 && !v.contains('.') {
                        return Some(f / 1_000_000.0);
                    }
                    return Some(f / 1000.0);
                }
                Some(f)
            }
            Kind::Tai64n => {
                let v = &line[m.start..m.end];
                let hex = v.get(2..17)?;
                i64::from_str_radix(hex, 16).ok().map(|s| s as f64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(det: &DateDetector, line: &str, now: f64) -> Option<(String, Option<f64>)> {
        let mut st = DateState::new(det);
        let m = st.match_time(det, line)?;
        let t = st.get_time(det, line, &m, now);
        Some((line[m.start..m.end].to_string(), t))
    }

    /// Found by fuzzing (fuzz/artifacts/date): an unknown directive followed
    /// by a multi-byte character made the error message slice inside it.
    #[test]
    fn an_unknown_directive_before_non_ascii_is_an_error_not_a_panic() {
        for p in [
            "%E\u{fffd}\u{fffd}xm",
            "%E\u{80}xm",
            "{^LN-BEG}%%E\u{80}%E\u{80}\u{a6}Exm",
            "%\u{e9}t\u{e9}",
        ] {
            let e = DateDetector::from_datepattern(p).err().expect("refused");
            assert!(e.to_string().contains("unknown directive"), "{e}");
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> f64 {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, s)
            .unwrap()
            .and_utc()
            .timestamp() as f64
    }

    #[test]
    fn default_templates_compile() {
        for t in &defaults().all {
            assert!(t.pattern().is_some(), "{}", t.name);
        }
    }

    #[test]
    fn default_template_names_match_fail2ban() {
        let d = DateDetector::with_defaults();
        assert_eq!(d.templates.len(), 31);
        assert_eq!(
            d.templates[1].name,
            r"{^LN-BEG}(?:DAY )?MON Day %k:Minute:Second(?:\.Microseconds)?(?: ExYear)?"
        );
        assert_eq!(d.templates[30].name, "TAI64N");
        let lb = DateDetector::from_datepattern("{^LN-BEG}").unwrap();
        assert_eq!(lb.templates.len(), 17);
    }

    #[test]
    fn explicit_zones_and_fractions() {
        let d = DateDetector::with_defaults();
        let now = utc(2005, 8, 14, 10, 0, 0);
        let (text, t) = detect(&d, "2005-06-21T16:47:48.954167-04:00 host msg", now).unwrap();
        assert_eq!(text, "2005-06-21T16:47:48.954167-04:00");
        assert_eq!(t, Some(utc(2005, 6, 21, 20, 47, 48)));
        let (_, t) = detect(&d, "[1124013600.500] x", now).unwrap();
        assert_eq!(t, Some(1124013600.5));
        let (_, t) = detect(&d, "@4000000042fe9ab00000000 x", now).unwrap_or_default();
        assert!(t.is_none() || t.is_some());
    }

    #[test]
    fn zones() {
        assert_eq!(zone_offset("UTC"), Some(0));
        assert_eq!(zone_offset("+0200"), Some(120));
        assert_eq!(zone_offset("-04:00"), Some(-240));
        assert_eq!(zone_offset("CEST"), Some(120));
        assert_eq!(zone_offset("CET+01"), Some(120));
        assert_eq!(zone_offset("error"), None);
        assert!(parse_time_zone("Europe/Nowhere").is_err());
    }

    /// Lines that start like the one before them are answered from the
    /// repeat memo, with what the matchers would have found: the same
    /// spans, time and template hits as a detector that never remembers.
    #[test]
    fn repeated_line_starts_give_what_the_matchers_give() {
        let now = 1_700_000_000.0;
        let lines = [
            "Mar  1 00:00:00 srv01 sshd[1]: a",
            "Mar  1 00:00:00 srv01 sshd[22]: b",
            "Mar  1 00:00:00 srv01 sshd[22]: c",
            "Mar  1 00:00:00 2024 srv01 x",
            "Mar  1 00:00:00 2024 srv01 y",
            "Mar  1 00:00:00.123 srv01 x",
            "Mar  1 00:00:00.1234 srv01 x",
            "Mar  1 00:00:00",
            "Mar  1 00:00:00",
            "Mar  1 00:00:00 srv01 \u{e9}t\u{e9}",
            "Mar  1 00:00:00 srv01 x",
            "Mar  1 00:00:01 srv01 x",
            "Mar  1 00:00:01x srv01",
            "Mar  1 00:00:01 srv01 x",
            "Tue Mar  1 00:00:01 srv01 x",
            "Tue Mar  1 00:00:01 srv01 x",
            "Tue Mar  1 00:00:09 srv01 x",
            "Tue Mar  1 00:00:59 srv01 y",
            "Tue Mar  1 00:00:60 srv01 y",
            "Tue Mar  1 00:00:61 srv01 y",
            "Tue Mar  1 00:00:62 srv01 y",
            "Tue Mar  1 00:00:5x srv01 y",
            "Tue Mar  1 00:00:55 srv01 y",
            "Tue Mar  1 00:00:55 srv01 y",
            "Tue Mar  1 00:00:5x srv01 y",
            "Tue Mar  1 00:00:55 srv01 y",
            "Tue Mar  1 00:00:65 srv01 y",
            "Tue Mar  1 00:00:55 srv01 y",
            "Tue Mar  1 00:01:55 srv01 y",
            "Tue Mar  1 00:00:56",
            "Tue Mar  1 00:00:57",
            "Tue Mar  1 00:00:58 2025 z",
            "Tue Mar  1 00:00:59 2025 z",
            "Tue Mar  1 00:00:00.5 z",
            "Tue Mar  1 00:00:01.5 z",
            "Tue Mar  1 00:00:02.5 z",
        ];
        for pattern in [None, Some("{^LN-BEG}")] {
            let det = match pattern {
                Some(p) => DateDetector::from_datepattern(p).unwrap(),
                None => DateDetector::with_defaults(),
            };
            let mut remembering = DateState::new(&det);
            let mut repeats = 0;
            for (k, line) in lines.iter().enumerate() {
                let m = remembering.match_time(&det, line);
                repeats += usize::from(remembering.repeated);
                let got = m.map(|m| (m.start, m.end, remembering.get_time(&det, line, &m, now)));
                // a detector that saw the same lines but answers this one afresh
                let mut fresh = DateState::new(&det);
                for l in &lines[..k] {
                    if let Some(m) = fresh.match_time(&det, l) {
                        fresh.get_time(&det, l, &m, now);
                    }
                }
                fresh.repeat.found = None;
                let m = fresh.match_time(&det, line);
                assert!(!fresh.repeated);
                let want = m.map(|m| (m.start, m.end, fresh.get_time(&det, line, &m, now)));
                assert_eq!(got, want, "{pattern:?} line {k}: {line:?}");
                assert_eq!(remembering.hits, fresh.hits, "{pattern:?} line {k}");
            }
            assert!(
                repeats >= 5,
                "{pattern:?}: {repeats} lines answered from the memo"
            );
        }
    }

    /// A date that differs from the last one only in its seconds is the
    /// last time moved by the difference, and gets what converting it
    /// afresh gives, also where a minute straddles the clock (a time of
    /// day is today's only up to now) or the year inference's limit (a
    /// date more than a day ahead is last year's).
    #[test]
    fn dates_that_differ_in_their_seconds_convert_as_afresh() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let now = 1_700_000_030.5; // 30.5 s into its minute
        let local = local_naive(now);
        let tomorrow = local + Duration::days(1);
        let formats = [
            ("{^LN-BEG}", "%b %e %H:%M:%S"),
            ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"),
            ("%d/%b %H:%M:%S", "%d/%b %H:%M:%S"),
            ("%H:%M:%S", "%H:%M:%S"),
            ("%S-%M-%H %d.%m.%Y", "%S-%M-%H %d.%m.%Y"),
            ("%H:%M:%S %z", "%H:%M:%S +0130"),
        ];
        let mut moved = 0;
        for (pattern, format) in formats {
            let det = DateDetector::from_datepattern(pattern).unwrap();
            let mut remembering = DateState::new(&det);
            for _ in 0..3000 {
                // now's minute (straddles the clock), tomorrow's (straddles
                // the year limit) or another
                let base = match next(3) {
                    0 => local,
                    1 => tomorrow,
                    _ => local - Duration::minutes(next(5000) as i64),
                };
                let t = base.with_second(next(62) as u32 % 60).unwrap();
                let line = format!("{} host app: x", t.format(format));
                let m = remembering.match_time(&det, &line);
                moved += usize::from(m.is_some_and(|m| {
                    remembering.memo.valid && remembering.seconds_moved(&det, &line, &m).is_some()
                }));
                let got = m.and_then(|m| remembering.get_time(&det, &line, &m, now));
                let mut fresh = DateState::new(&det);
                let want = fresh
                    .match_time(&det, &line)
                    .and_then(|m| fresh.get_time(&det, &line, &m, now));
                assert_eq!(got, want, "{pattern}: {line}");
                assert!(got.is_some(), "{pattern}: {line}");
            }
        }
        assert!(moved > 1000, "{moved} dates after a linear one");
    }

    /// A line whose date was matched but not converted leaves the time
    /// memo as it was: the next line still gets its own time.
    #[test]
    fn a_date_matched_but_not_converted_does_not_mislead_the_memo() {
        let now = 1_700_000_000.0;
        let det = DateDetector::from_datepattern("{^LN-BEG}").unwrap();
        let mut st = DateState::new(&det);
        let time = |st: &mut DateState, line: &str| {
            let m = st.match_time(&det, line).unwrap();
            st.get_time(&det, line, &m, now)
        };
        let a = time(&mut st, "Mar  1 00:00:07 srv01 x").unwrap();
        // matched only (as for a line whose date is empty)
        st.match_time(&det, "Mar  1 00:00:09 srv01 x").unwrap();
        assert_eq!(time(&mut st, "Mar  1 00:00:09 srv01 y"), Some(a + 2.0));
        st.match_time(&det, "Mar  1 00:00:11 srv01 x").unwrap();
        assert_eq!(time(&mut st, "Mar  1 00:00:09 srv01 y"), Some(a + 2.0));
        assert_eq!(time(&mut st, "Mar  1 00:00:07 srv01 y"), Some(a));
    }

    /// The seconds shortcut is taken within a minute, and not across one,
    /// nor in a minute that straddles the clock for a time of day.
    #[test]
    fn the_seconds_shortcut_is_taken_only_within_a_linear_minute() {
        let now = utc(2024, 5, 10, 12, 30, 30) + 0.5;
        let at = |det: &DateDetector, st: &mut DateState, line: &str| {
            let m = st.match_time(det, line).unwrap();
            let moved = st.memo.valid && st.seconds_moved(det, line, &m).is_some();
            (moved, st.get_time(det, line, &m, now).unwrap())
        };
        let det = DateDetector::from_datepattern("%Y-%m-%d %H:%M:%S").unwrap();
        let mut st = DateState::new(&det);
        at(&det, &mut st, "2024-05-10 10:00:07 a");
        assert!(st.memo.seconds.is_some());
        let first = st.memo.time.unwrap();
        assert_eq!(at(&det, &mut st, "2024-05-10 10:00:59 a").0, true);
        assert_eq!(st.memo.time, Some(first + 52.0));
        assert_eq!(at(&det, &mut st, "2024-05-10 10:01:00 a").0, false);
        // a time of day in the clock's minute: seconds past now are yesterday's
        let det = DateDetector::from_datepattern("%H:%M:%S").unwrap();
        let mut st = DateState::new(&det);
        let clock = local_naive(now);
        let line = |s: u32| format!("{} a", clock.with_second(s).unwrap().format("%H:%M:%S"));
        at(&det, &mut st, &line(10));
        assert!(st.memo.seconds.is_none());
        assert_eq!(at(&det, &mut st, &line(50)).0, false);
    }

    /// The hand-written syslog matcher must give exactly the regex's
    /// match (or no answer) on every text, including the ones that make the
    /// regex backtrack.
    #[test]
    fn syslog_fast_path_agrees_with_the_regex() {
        let det = DateDetector::from_datepattern("{^LN-BEG}").unwrap();
        let tmpl = det
            .templates
            .iter()
            .find(|t| t.fast.is_some())
            .expect("the {^LN-BEG} syslog template has a fast path");
        assert!(tmpl.name.starts_with("{^LN-BEG}(?:DAY )?MON Day"));
        let fast = tmpl.fast.as_ref().unwrap();
        // (options, how many of the first ones are the usual shapes)
        let parts: &[(&[&str], u64)] = &[
            (
                &["", "Sun ", "sat ", "Mon", "Xyz ", "[", " ", "é", "Ssun "],
                3,
            ),
            (&["Mar", "mar", "DEC", "Jan", "Sep", "ſep", "Foo", "Ma"], 5),
            (&[" ", "  ", "-"], 1),
            (
                &[
                    "1", " 1", "01", "09", "10", "29", "30", "31", "32", "3", "0", " ", "4",
                ],
                9,
            ),
            (&[" ", "  ", ""], 1),
            (
                &["0", "00", "09", "12", "23", "24", "29", "3", "x", " 5"],
                8,
            ),
            (&[":"], 1),
            (&["0", "00", "59", "60", "5", "7", ":"], 6),
            (&[":", ""], 1),
            (&["0", "00", "59", "60", "61", "62", "6", "9", "001"], 8),
            (&["", ".123456", ".1", ".", ".1234567", ".x", ",1"], 3),
            (
                &["", " 2026", " 2019", " 1999", " 20261", " 202", " 2026x"],
                3,
            ),
            (
                &["", " host", "x", "_", "1", ":", "é", " ssh[1]: a ٢", "\n"],
                2,
            ),
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut slots = Slots::default();
        let mut spans = Vec::new();
        let (mut answered, mut matched) = (0, 0);
        for _ in 0..200_000 {
            let line: String = parts
                .iter()
                .map(|&(o, usual)| {
                    let k = if next() % 8 == 0 {
                        o.len() as u64
                    } else {
                        usual
                    };
                    o[(next() % k) as usize]
                })
                .collect();
            let want = tmpl
                .pattern()
                .unwrap()
                .search_at(&line, 0, &mut slots)
                .then(|| (0..10).map(|g| slots.get(g)).collect::<Vec<_>>());
            matched += usize::from(want.is_some());
            if fast.find(&line, &mut spans) {
                answered += 1;
                assert_eq!(Some(spans.clone()), want, "line {line:?}");
            }
        }
        assert!(
            answered > 20_000 && matched > answered,
            "{answered} {matched}"
        );
    }

    #[test]
    fn bad_datepattern_is_an_error() {
        assert!(DateDetector::from_datepattern("%Q-%d").is_err());
        assert!(DateDetector::from_datepattern("^(%Y").is_err());
        assert!(DateDetector::from_datepattern("%Y-%m-%d\n%Y-%m-%d").is_err());
    }
}
