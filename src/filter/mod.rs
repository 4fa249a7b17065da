//! The filter engine: Fail2Ban `filter.d` filters compiled once and run
//! line by line.
//!
//! A [`Filter`] is immutable (shared by all sources of a jail); the mutable
//! part (multi-line buffer, `<F-MLFID>` cache, last timestamp, date template
//! order) lives in a [`FilterState`]. A line goes in, failures come out;
//! nothing here does I/O. The per-line path allocates nothing unless a
//! failregex matches.

pub mod date;
pub mod prefilter;
pub mod pyre;
pub mod reader;
pub mod tags;

use date::{DateDetector, DateError, DateState};
use prefilter::Prefilter;
use pyre::{glob_to_local_flags, Pattern, PatternError, Slots};
pub use reader::{definition_options, resolve_for_jail, FILTER_OPTIONS};
pub use reader::{read_filter, read_filter_at, FilterDefinition, ReadError};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
pub use tags::UseDns;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(
        "filter '{name}': {what} does not compile: {cause}; the regex is {pattern:?}{}",
        in_file(file)
    )]
    Regex {
        name: String,
        what: String,
        pattern: String,
        file: String,
        cause: Box<PatternError>,
    },
    #[error(
        "filter '{name}': {what} has no failure id group: add <HOST>, <ADDR> or <F-ID>...</F-ID>{}",
        in_file(file)
    )]
    NoFailureId {
        name: String,
        what: String,
        file: String,
    },
    #[error("filter '{name}' has no failregex{}", in_file(file))]
    NoFailRegex { name: String, file: String },
    #[error("filter '{name}': {cause}{}", in_file(file))]
    Date {
        name: String,
        file: String,
        cause: Box<DateError>,
    },
}

fn in_file(file: &str) -> String {
    if file.is_empty() {
        String::new()
    } else {
        format!(" (in {file})")
    }
}

/// One log line split around its date: Fail2Ban's `(prefix, date, suffix)`.
/// Regexes see `pre + post`; `pre + date + post` is the original line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TupleLine {
    pub pre: String,
    pub date: String,
    pub post: String,
}

impl TupleLine {
    pub fn full(&self) -> String {
        let mut s = String::with_capacity(self.pre.len() + self.date.len() + self.post.len());
        s.push_str(&self.pre);
        s.push_str(&self.date);
        s.push_str(&self.post);
        s
    }
    /// Whether `s` is this line whole (`full() == s`, without building it).
    pub fn is(&self, s: &str) -> bool {
        s.len() == self.pre.len() + self.date.len() + self.post.len()
            && s.starts_with(&self.pre)
            && s[self.pre.len()..].starts_with(&self.date)
            && s.ends_with(&self.post)
    }
    fn stripped_eq(&self, s: &str) -> bool {
        s.len() == self.pre.len() + self.post.len()
            && s.starts_with(&self.pre)
            && s.ends_with(&self.post)
    }
    fn set(&mut self, pre: &str, date: &str, post: &str) {
        self.pre.clear();
        self.pre.push_str(pre);
        self.date.clear();
        self.date.push_str(date);
        self.post.clear();
        self.post.push_str(post);
    }
}

/// A captured value: short ones (addresses, user names) stay inline.
pub type Value = compact_str::CompactString;

/// Named groups of a match (Python's `groupdict`, plus merged values):
/// a handful of entries, so a small vector searched linearly.
///
/// Names are interned (see [`intern`]): copying a failure's groups then
/// copies pointers instead of counting references to shared names, which
/// the hot path did several times per failure.
#[derive(Debug, Clone, Default)]
pub struct Groups(Vec<(&'static str, Option<Value>)>);

impl Groups {
    pub fn get(&self, name: &str) -> Option<&Option<Value>> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
    pub fn insert(&mut self, name: Arc<str>, value: Option<Value>) {
        self.set(intern(&name), value);
    }
    fn set(&mut self, name: &'static str, value: Option<Value>) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
    pub fn remove(&mut self, name: &str) -> Option<Option<Value>> {
        let pos = self.0.iter().position(|(k, _)| *k == name)?;
        Some(self.0.remove(pos).1)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(k, v)| (*k, v.as_deref()))
    }
    /// The entries with their interned names and values as stored.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, Option<&Value>)> {
        self.0.iter().map(|(k, v)| (*k, v.as_ref()))
    }
}

/// The one `'static` copy of a group name. Names come from filter files
/// (a few dozen distinct ones: `user`, `ip4`, `mlfid`, ...), never from
/// log lines, so the copies kept for the life of the process stay few even
/// across reloads (a name already known is not copied again).
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> =
        OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    // a poisoned lock still holds a valid set (insertions are atomic)
    let mut set = names.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&known) = set.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// The data of one failure (Fail2Ban's `fail` dict).
#[derive(Debug, Clone, Default)]
pub struct FailData {
    pub groups: Groups,
    /// The log lines that make up this failure.
    pub matches: Vec<Arc<TupleLine>>,
    nofail_matches: Vec<Arc<TupleLine>>,
    /// All users seen for this `<F-MLFID>` connection.
    pub users: Option<BTreeSet<Value>>,
    mlfpending: bool,
}

fn truthy(v: Option<&Option<Value>>) -> bool {
    matches!(v, Some(Some(s)) if !s.is_empty())
}

impl FailData {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.groups.get(name).and_then(|v| v.as_deref())
    }
    fn truthy(&self, name: &str) -> bool {
        truthy(self.groups.get(name))
    }
    fn pop(&mut self, name: &str) -> Option<Option<Value>> {
        self.groups.remove(name)
    }
    /// A copy with only the groups that decide what a failure is (see
    /// [`FailureDetail::Lean`]).
    fn deciding(&self) -> FailData {
        FailData {
            groups: Groups(
                self.groups
                    .0
                    .iter()
                    .filter(|(k, _)| *k == "nofail" || ID_GROUPS.contains(k))
                    .cloned()
                    .collect(),
            ),
            ..FailData::default()
        }
    }

    /// A copy with the groups and lines, without the connection's
    /// bookkeeping (see [`FailureDetail::Evidence`]).
    fn evidence(&self) -> FailData {
        FailData {
            groups: self.groups.clone(),
            matches: self.matches.clone(),
            mlfpending: self.mlfpending,
            ..FailData::default()
        }
    }

    /// `dict.update` with the non-`None` values of `other`'s groups.
    fn update_non_none(&mut self, other: &FailData) {
        for &(k, ref v) in &other.groups.0 {
            if v.is_some() {
                self.groups.set(k, v.clone());
            }
        }
        if other.users.is_some() {
            self.users = other.users.clone();
        }
        if other.mlfpending {
            self.mlfpending = true;
        }
    }
    /// Adds `user` to the users seen; returns whether more than one user
    /// is known now (all that merging needs to know about them).
    fn update_users(&mut self, user: Option<&str>) -> bool {
        if let Some(u) = user {
            let users = self.users.get_or_insert_with(BTreeSet::new);
            if !users.contains(u) {
                users.insert(Value::from(u));
            }
        }
        self.users.as_ref().is_some_and(|u| u.len() > 1)
    }
}

/// One failure found on a line.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Index of the failregex that matched.
    pub regex: usize,
    /// The failure id (address, host name or `<F-ID>`), as captured.
    /// `None` for a pending multi-line failure (only in check-all mode).
    pub fid: Option<Value>,
    /// Epoch seconds, if the line's time is known.
    pub time: Option<f64>,
    pub data: FailData,
}

impl Failure {
    /// `<F-NOFAIL>`: the match is known but is not a failure.
    pub fn is_nofail(&self) -> bool {
        self.data.truthy("nofail")
    }
    /// The `host` group if the regex has one, else the failure id.
    pub fn host(&self) -> Option<&str> {
        self.data.get("host").or(self.fid.as_deref())
    }
    /// Number of log lines in this failure.
    pub fn attempts(&self) -> usize {
        self.data
            .get("attempts")
            .and_then(|a| a.parse().ok())
            .unwrap_or(self.data.matches.len())
    }
}

/// How a filter runs.
#[derive(Debug, Clone, Copy)]
pub struct FilterOptions {
    pub use_dns: UseDns,
    /// Try every failregex on a line (as `fail2ban-regex` and Fail2Ban's
    /// sample tests do) instead of stopping at the first match.
    pub check_all: bool,
    /// Drop multi-line failures that have no address yet.
    pub ignore_pending: bool,
    /// `logtimezone` in minutes.
    pub log_tz: Option<i32>,
}

impl Default for FilterOptions {
    fn default() -> Self {
        FilterOptions {
            use_dns: UseDns::Warn,
            check_all: false,
            ignore_pending: true,
            log_tz: None,
        }
    }
}

#[derive(Debug)]
struct CompiledRegex {
    /// The regex as written (tags not expanded), for reports.
    source: String,
    pattern: Pattern,
    /// (group number, name) of every named group.
    named: Vec<(usize, &'static str)>,
    /// `alt_user_1` -> `user` style merges: (group number, target name).
    alts: Vec<(usize, &'static str)>,
    skiplines: Vec<usize>,
    /// The group number of `content` when its value is its own text (no
    /// `alt_` group merges into it): the prefregex leaves it out of the
    /// groups and reads it from the match.
    content: Option<usize>,
}

impl CompiledRegex {
    fn new(src: &str, multiline: bool, use_dns: UseDns) -> Result<CompiledRegex, PatternError> {
        let resolved = tags::resolve_regex_tags(src, use_dns);
        if resolved.trim_start().is_empty() {
            return Err(PatternError::Compile {
                pattern: src.to_string(),
                msg: "empty regex".into(),
            });
        }
        let pattern = Pattern::new(&glob_to_local_flags(&resolved), multiline)?;
        let mut named = Vec::new();
        let mut alts: Vec<(String, usize, &'static str)> = Vec::new();
        let mut skip: Vec<(usize, usize)> = Vec::new();
        for (i, n) in pattern.names().iter().enumerate() {
            let Some(n) = n else { continue };
            named.push((i, intern(n)));
            if let Some(rest) = n.strip_prefix("alt_") {
                let base = strip_numeric_suffix(rest);
                alts.push((n.clone(), i, intern(&tags::custom_group_name(base))));
            }
            if let Some(k) = n
                .strip_prefix("skiplines")
                .and_then(|k| k.parse::<usize>().ok())
            {
                skip.push((k, i));
            }
        }
        alts.sort_by(|a, b| a.0.cmp(&b.0));
        skip.sort();
        let content = named
            .iter()
            .find(|(_, n)| *n == "content")
            .map(|(i, _)| *i)
            .filter(|_| !alts.iter().any(|(_, _, t)| *t == "content"));
        Ok(CompiledRegex {
            source: src.to_string(),
            pattern,
            named,
            alts: alts.into_iter().map(|(_, i, t)| (i, t)).collect(),
            skiplines: skip.into_iter().map(|(_, i)| i).collect(),
            content,
        })
    }

    fn has_group(&self, name: &str) -> bool {
        self.named.iter().any(|(_, n)| *n == name)
    }

    /// `groupdict()` with `alt_` values merged, into `g` (emptied first,
    /// so its buffer is reused), with room for `extra` more entries; group
    /// number `skip` is left out (as if removed afterwards; only for a
    /// group no `alt_` group merges into).
    fn groups_into(
        &self,
        hay: &str,
        slots: &Slots,
        extra: usize,
        skip: Option<usize>,
        g: &mut Groups,
    ) {
        g.0.clear();
        g.0.reserve(self.named.len() + self.alts.len() + extra);
        g.0.extend(
            self.named
                .iter()
                .filter(|(i, _)| Some(*i) != skip)
                .map(|&(i, n)| (n, slots.text(hay, i).map(Value::from))),
        );
        for &(i, target) in &self.alts {
            if let Some(v) = slots.text(hay, i).filter(|v| !v.is_empty()) {
                if !truthy(g.get(target)) {
                    g.set(target, Some(Value::from(v)));
                }
            }
        }
    }

    fn skipped_lines(&self, hay: &str, slots: &Slots) -> Vec<String> {
        let mut all = String::new();
        for &i in &self.skiplines {
            if let Some(t) = slots.text(hay, i) {
                all.push_str(t);
            }
        }
        all.lines().map(str::to_string).collect()
    }
}

/// `name_1` -> `name` (Fail2Ban's `(?:_\d+)?$` suffix).
fn strip_numeric_suffix(s: &str) -> &str {
    if let Some(p) = s.rfind('_') {
        if p > 0 && p + 1 < s.len() && s[p + 1..].bytes().all(|b| b.is_ascii_digit()) {
            return &s[..p];
        }
    }
    s
}

const ID_GROUPS: [&str; 4] = ["fid", "ip4", "ip6", "dns"];

/// A compiled filter.
#[derive(Debug)]
pub struct Filter {
    pub definition: FilterDefinition,
    pub options: FilterOptions,
    prefregex: Option<CompiledRegex>,
    failregex: Vec<CompiledRegex>,
    ignoreregex: Vec<CompiledRegex>,
    maxlines: usize,
    dates: DateDetector,
    prefilter: Option<Prefilter>,
}

impl Filter {
    pub fn compile(def: FilterDefinition, options: FilterOptions) -> Result<Filter, FilterError> {
        let name = def.name.clone();
        let file = def.main_file();
        let regex_err = |what: String, pattern: &str, cause| FilterError::Regex {
            name: name.clone(),
            what,
            pattern: pattern.to_string(),
            file: file.clone(),
            cause: Box::new(cause),
        };
        let use_dns = def
            .usedns
            .as_deref()
            .and_then(UseDns::parse)
            .unwrap_or(options.use_dns);
        let maxlines = def.maxlines.unwrap_or(1);
        let multiline = maxlines > 1;
        let prefregex = match &def.prefregex {
            Some(p) => Some(
                CompiledRegex::new(p, false, use_dns)
                    .map_err(|e| regex_err("prefregex".into(), p, e))?,
            ),
            None => None,
        };
        let pref_has_id = prefregex.as_ref().is_some_and(|p| {
            ID_GROUPS
                .iter()
                .chain(["mlfid"].iter())
                .any(|g| p.has_group(g))
        });
        let mut failregex = Vec::new();
        for (i, r) in def.failregex.iter().enumerate() {
            let what = format!("failregex {}", i + 1);
            let c = CompiledRegex::new(r, multiline, use_dns)
                .map_err(|e| regex_err(what.clone(), r, e))?;
            if !pref_has_id
                && !ID_GROUPS
                    .iter()
                    .chain(["mlfid"].iter())
                    .any(|g| c.has_group(g))
            {
                return Err(FilterError::NoFailureId { name, what, file });
            }
            failregex.push(c);
        }
        if failregex.is_empty() {
            return Err(FilterError::NoFailRegex { name, file });
        }
        let mut ignoreregex = Vec::new();
        for (i, r) in def.ignoreregex.iter().enumerate() {
            ignoreregex.push(
                CompiledRegex::new(r, false, use_dns)
                    .map_err(|e| regex_err(format!("ignoreregex {}", i + 1), r, e))?,
            );
        }
        let date_err = |cause| FilterError::Date {
            name: name.clone(),
            file: file.clone(),
            cause: Box::new(cause),
        };
        let mut dates = match &def.datepattern {
            Some(p) => DateDetector::from_datepattern(p).map_err(date_err)?,
            None => DateDetector::default(),
        };
        if dates.templates.is_empty() {
            dates = DateDetector::with_defaults();
        }
        dates.default_tz = options.log_tz;
        let prefilter = if maxlines == 1 {
            let pats: Vec<&str> = failregex.iter().map(|r| r.pattern.std_pattern()).collect();
            Prefilter::new(&pats)
        } else {
            None
        };
        Ok(Filter {
            definition: def,
            options,
            prefregex,
            failregex,
            ignoreregex,
            maxlines,
            dates,
            prefilter,
        })
    }

    pub fn name(&self) -> &str {
        &self.definition.name
    }
    pub fn failregex_sources(&self) -> Vec<&str> {
        self.failregex.iter().map(|r| r.source.as_str()).collect()
    }
    pub fn ignoreregex_sources(&self) -> Vec<&str> {
        self.ignoreregex.iter().map(|r| r.source.as_str()).collect()
    }
    pub fn prefregex_source(&self) -> Option<&str> {
        self.prefregex.as_ref().map(|r| r.source.as_str())
    }
    pub fn maxlines(&self) -> usize {
        self.maxlines
    }
    pub fn date_detector(&self) -> &DateDetector {
        &self.dates
    }
    /// Regexes that run on the backtracking engine (for reports).
    pub fn fancy_regexes(&self) -> usize {
        self.failregex
            .iter()
            .filter(|r| r.pattern.is_fancy())
            .count()
    }
}

#[derive(Debug)]
struct MlfidEntry {
    data: FailData,
    expires: f64,
    /// Insertion number: the entry's place in the eviction order.
    seq: u64,
}

/// Fail2Ban's `<F-MLFID>` cache: at most 100 connections, 5 minutes each,
/// the oldest dropped first.
#[derive(Debug, Default)]
struct MlfidCache {
    entries: std::collections::HashMap<Value, MlfidEntry, BuildFx>,
    /// Insertion order; keys whose entry was removed or replaced are
    /// skipped when they come up.
    order: std::collections::VecDeque<(u64, Value)>,
    next_seq: u64,
}

/// FxHash (rustc's hasher) for the `<F-MLFID>` cache: its keys come from
/// log lines, but it holds at most [`MLFID_MAX`] entries, so keys made to
/// collide cost at most that many comparisons; SipHash took longer than
/// the rest of a lookup.
#[derive(Debug, Default, Clone, Copy)]
struct BuildFx;

impl std::hash::BuildHasher for BuildFx {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, w: u64) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
    }
}

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        // the multiply leaves the low bits weak; the table indexes by them
        let h = self.0;
        h ^ (h >> 29) ^ (h >> 47)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

const MLFID_MAX: usize = 100;
const MLFID_TTL: f64 = 300.0;

impl MlfidCache {
    fn get(&mut self, k: &str, now: f64) -> Option<&mut MlfidEntry> {
        // two lookups by the borrowed key: the entry API would copy the
        // key on every call, an allocation for keys of over 24 bytes
        let expired = self.entries.get(k).is_some_and(|e| e.expires <= now);
        if expired {
            self.entries.remove(k);
            return None;
        }
        self.entries.get_mut(k)
    }
    fn remove(&mut self, k: &str) {
        self.entries.remove(k);
    }
    /// Pops the oldest live entry.
    fn pop_oldest(&mut self) -> Option<MlfidEntry> {
        while let Some((seq, key)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                return self.entries.remove(&key);
            }
        }
        None
    }
    fn set(&mut self, k: &str, data: FailData, now: f64) {
        if self.entries.len() >= MLFID_MAX {
            while let Some(e) = self.pop_oldest() {
                if e.expires > now && self.entries.len() < MLFID_MAX {
                    break;
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((seq, Value::from(k)));
        self.entries.insert(
            Value::from(k),
            MlfidEntry {
                data,
                expires: now + MLFID_TTL,
                seq,
            },
        );
        if self.order.len() > 4 * MLFID_MAX {
            let entries = &self.entries;
            self.order
                .retain(|(s, key)| entries.get(key).is_some_and(|e| e.seq == *s));
        }
    }
}

/// What happened on the last line (for `banhammer regex` statistics).
#[derive(Debug, Default, Clone)]
pub struct LineInfo {
    pub prefregex_matched: bool,
    /// Indices of ignoreregexes that matched.
    pub ignored_by: Vec<usize>,
}

/// The mutable side of a filter: one per jail (or per `regex` run).
#[derive(Debug)]
pub struct FilterState {
    dates: DateState,
    /// The line being matched; shared with the failures made of it (the
    /// next line gets a new one if a failure still holds it).
    current: Arc<TupleLine>,
    line_buffer: Vec<Arc<TupleLine>>,
    last_date: Option<f64>,
    last_time_text: String,
    mlfid: MlfidCache,
    buf: String,
    content: String,
    /// The prefregex's groups of the current line (reused buffer).
    pre_groups: Groups,
    slots: Slots,
    /// Indices of the failregexes the prefilter let through.
    candidates: Vec<usize>,
    pub info: LineInfo,
    /// See [`FilterState::set_failure_detail`].
    detail: FailureDetail,
    /// The failregexes [`front_line`](FilterState::front_line) searches,
    /// by index (empty: none; see [`FilterState::search_ahead`]).
    ahead: Vec<bool>,
    /// Time spent searching each failregex, while timed (see
    /// [`FilterState::time_searches`]).
    search_times: Option<Vec<Duration>>,
}

/// What the [`Failure`]s a [`FilterState`] returns carry. Which lines
/// fail, with which regex and id, is the same in each; the `<F-MLFID>`
/// cache always keeps its full data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureDetail {
    /// Everything, also the connection's bookkeeping (`banhammer
    /// test-filter` prints the users seen).
    #[default]
    Full,
    /// The groups and the log lines, without the users a connection saw
    /// and its lines of messages that were not failures: what a jail
    /// records and bans with.
    Evidence,
    /// Only what decides them (`regex`, `fid`, `time` and the `nofail`,
    /// `fid`, `ip4`, `ip6`, `dns` groups): for counting (`banhammer regex`).
    Lean,
}

/// Buffers [`FilterState::find_failure_in`] reuses from line to line.
#[derive(Debug, Default)]
struct Scratch {
    buf: String,
    hay_owned: String,
    pre_groups: Groups,
    /// Failregex searches done ahead on the line's haystack, in the order
    /// of the candidates, their group spans in `ahead_spans`.
    ahead: Vec<Searched>,
    ahead_spans: Vec<Option<(usize, usize)>>,
}

/// One failregex searched ahead ([`FilterState::search_ahead`]): whether it
/// matched, and where its group spans are in [`Scratch::ahead_spans`].
#[derive(Debug, Clone, Copy)]
struct Searched {
    regex: usize,
    found: bool,
    spans: (usize, usize),
}

/// What [`FilterState::front`] found: whether the failregexes are to be
/// tried (on the candidates it left), whether the prefregex matched, and
/// where its content is.
#[derive(Debug, Clone, Copy)]
struct Front {
    go: bool,
    prefregex_matched: bool,
    content: Option<(usize, usize)>,
}

/// One line with the part of its matching that depends on the line alone
/// done ([`FilterState::front_line`]: its date, the prefregex and the
/// prefilter), for another [`FilterState`] to finish, lines in their
/// order ([`FilterState::finish_line`]). The two halves of a line's work
/// can so run on two threads (`banhammer regex` does), with the same
/// outcome as [`FilterState::process_line_into`].
#[derive(Debug, Default)]
pub struct LineFront {
    current: TupleLine,
    date: Option<f64>,
    scratch: Scratch,
    candidates: Vec<usize>,
    /// `None`: nothing done ahead (a multi-line filter, or ignoreregexes
    /// tried first): the finishing state does it all.
    front: Option<Front>,
}

/// Joins buffered lines as Fail2Ban hands them to regexes: each line
/// without its date, `\n`-separated, with a final `\n`.
fn join_lines(lines: &[Arc<TupleLine>], out: &mut String) {
    out.clear();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&l.pre);
        out.push_str(&l.post);
    }
    out.push('\n');
}

/// Fail2Ban's split of a buffer into the lines a match covered and the
/// rest (minus lines consumed by `<SKIPLINES>`).
fn split_matched<'o>(
    buf: &str,
    start: usize,
    end: usize,
    org: &'o [Arc<TupleLine>],
    skipped: &[String],
) -> (Cow<'o, [Arc<TupleLine>]>, Vec<Arc<TupleLine>>) {
    if org.len() <= 1 {
        return (Cow::Borrowed(org), Vec::new());
    }
    let line_start = buf[..(start + 1).min(buf.len())]
        .rfind('\n')
        .map_or(0, |p| p + 1);
    let from = end.saturating_sub(1).min(buf.len());
    let line_end = buf[from..].find('\n').map_or(buf.len(), |p| from + p + 1);
    let c1 = buf[..line_start].matches('\n').count().min(org.len());
    let c2 = buf[..line_end].matches('\n').count().min(org.len()).max(c1);
    let mut matched: Vec<Arc<TupleLine>> = org[c1..c2].to_vec();
    let mut unmatched: Vec<Arc<TupleLine>> = org[..c1].to_vec();
    let mut n = 0;
    for s in skipped {
        if let Some(m) = matched[n.min(matched.len())..]
            .iter()
            .position(|l| l.stripped_eq(s))
        {
            unmatched.push(matched.remove(n + m));
            n += m;
        }
    }
    unmatched.extend_from_slice(&org[c2..]);
    (Cow::Owned(matched), unmatched)
}

impl Filter {
    /// Whether ignoreregexes are tried on a line before the prefregex and
    /// the failregexes (where they are few beside many failregexes).
    fn ignores_first(&self) -> bool {
        !self.ignoreregex.is_empty()
            && (self.ignoreregex.len() as isize) < (self.failregex.len() as isize - 2)
    }
}

impl FilterState {
    pub fn new(filter: &Filter) -> FilterState {
        FilterState {
            dates: DateState::new(&filter.dates),
            current: Arc::default(),
            line_buffer: Vec::new(),
            last_date: None,
            last_time_text: String::new(),
            mlfid: MlfidCache::default(),
            buf: String::new(),
            content: String::new(),
            pre_groups: Groups::default(),
            slots: Slots::default(),
            candidates: Vec::new(),
            info: LineInfo::default(),
            detail: FailureDetail::Full,
            ahead: Vec::new(),
            search_times: None,
        }
    }

    /// Makes [`front_line`](Self::front_line) also search the failregexes
    /// `regexes` (indices), so that [`finish_line`](Self::finish_line) on
    /// another thread takes their outcome instead of searching: a share of
    /// the work moves to the thread that reads ahead. The outcome is the
    /// same, whichever thread searched.
    pub fn search_ahead(&mut self, filter: &Filter, regexes: &[usize]) {
        self.ahead = vec![false; filter.failregex.len()];
        for &i in regexes {
            if let Some(a) = self.ahead.get_mut(i) {
                *a = true;
            }
        }
    }

    /// Starts (or stops) timing the failregex searches this state does.
    pub fn time_searches(&mut self, filter: &Filter, on: bool) {
        self.search_times = on.then(|| vec![Duration::ZERO; filter.failregex.len()]);
    }

    /// Time spent searching each failregex since timing began, by index.
    pub fn search_times(&self) -> Option<&[Duration]> {
        self.search_times.as_deref()
    }

    /// How much of each failure is copied out for the caller.
    pub fn set_failure_detail(&mut self, detail: FailureDetail) {
        self.detail = detail;
    }

    /// Lines held for a multi-line match (`maxlines` > 1).
    pub fn buffered_lines(&self) -> &[Arc<TupleLine>] {
        &self.line_buffer
    }

    /// Searches abandoned at the backtracking limit (counted as no match).
    pub fn regex_errors(&self) -> u64 {
        self.slots.backtrack_limit_hits
    }

    /// Hits per date template, by template index (for reports).
    pub fn date_hits(&self) -> &[u64] {
        &self.dates.hits
    }

    /// Processes one log line whose timestamp is in the text.
    /// `now` is the clock (epoch seconds) for year and day inference.
    pub fn process_line(&mut self, filter: &Filter, line: &str, now: f64) -> Vec<Failure> {
        let mut out = Vec::new();
        self.process_line_into(filter, line, now, &mut out);
        out
    }

    /// [`process_line`](Self::process_line), appending the failures to
    /// `out` (a caller that reuses `out` from line to line saves an
    /// allocation per line).
    pub fn process_line_into(
        &mut self,
        filter: &Filter,
        line: &str,
        now: f64,
        out: &mut Vec<Failure>,
    ) {
        let date = self.split_line(filter, line, now);
        self.find_failure(filter, date, now, out);
    }

    /// The first half of [`process_line_into`](Self::process_line_into)
    /// into `lf`, for [`finish_line`](Self::finish_line) to complete.
    pub fn front_line(&mut self, filter: &Filter, line: &str, now: f64, lf: &mut LineFront) {
        lf.date = self.split_line(filter, line, now);
        // the line's parts move to `lf` (this state's line is never shared:
        // it makes no failures), its old buffers come back for the next line
        match Arc::get_mut(&mut self.current) {
            Some(c) => std::mem::swap(c, &mut lf.current),
            None => {
                let c = &self.current;
                lf.current.set(&c.pre, &c.date, &c.post);
            }
        }
        lf.front = None;
        lf.scratch.ahead.clear();
        lf.scratch.ahead_spans.clear();
        if filter.maxlines > 1 || filter.ignores_first() {
            return;
        }
        let c = &lf.current;
        let buf = &mut lf.scratch.buf;
        buf.clear();
        buf.push_str(&c.pre);
        buf.push_str(&c.post);
        buf.push('\n');
        let front = self.front(filter, &mut lf.scratch);
        lf.front = Some(front);
        lf.candidates.clear();
        lf.candidates.extend_from_slice(&self.candidates);
        if front.go && !self.ahead.is_empty() {
            self.search_ahead_on(filter, front, &mut lf.scratch);
        }
    }

    /// The `n`th failregex to try on the line: of the candidates the
    /// prefilter left, in order, or of every failregex.
    fn candidate(&self, filter: &Filter, n: usize) -> Option<usize> {
        match &filter.prefilter {
            Some(_) => self.candidates.get(n).copied(),
            None => (n < filter.failregex.len()).then_some(n),
        }
    }

    /// The searches of [`search_ahead`](Self::search_ahead) on the line
    /// [`front`](Self::front) left in `scratch`, into its `ahead`.
    fn search_ahead_on(&mut self, filter: &Filter, front: Front, scratch: &mut Scratch) {
        let Scratch {
            buf,
            hay_owned,
            ahead,
            ahead_spans,
            ..
        } = scratch;
        let hay: &str = match front.content {
            Some(_) => hay_owned,
            None => buf,
        };
        let mut next = 0;
        while let Some(idx) = self.candidate(filter, next) {
            next += 1;
            if !self.ahead[idx] {
                continue;
            }
            let found = filter.failregex[idx].pattern.search(hay, &mut self.slots);
            let from = ahead_spans.len();
            if found {
                ahead_spans.extend_from_slice(self.slots.spans_mut());
            }
            ahead.push(Searched {
                regex: idx,
                found,
                spans: (from, ahead_spans.len()),
            });
        }
    }

    /// The second half of [`process_line_into`](Self::process_line_into)
    /// for a line [`front_line`](Self::front_line) began (on a state of
    /// the same filter that saw the same lines before).
    pub fn finish_line(
        &mut self,
        filter: &Filter,
        lf: &mut LineFront,
        now: f64,
        out: &mut Vec<Failure>,
    ) {
        match Arc::get_mut(&mut self.current) {
            Some(c) => std::mem::swap(c, &mut lf.current),
            None => self.current = Arc::new(std::mem::take(&mut lf.current)),
        }
        std::mem::swap(&mut self.candidates, &mut lf.candidates);
        let current = Arc::clone(&self.current);
        self.find_failure_in(
            filter,
            lf.date,
            now,
            &current,
            &mut lf.scratch,
            lf.front,
            out,
        );
        std::mem::swap(&mut self.candidates, &mut lf.candidates);
    }

    /// Date detection for `line`: sets the current line's parts; its time.
    fn split_line(&mut self, filter: &Filter, line: &str, now: f64) -> Option<f64> {
        let mut date: Option<f64> = None;
        match self.dates.match_time(&filter.dates, line) {
            Some(m) => {
                let (s, e) = (m.start, m.end);
                self.set_current(&line[..s], &line[s..e], &line[e..]);
                if e > s {
                    date = self.dates.get_time(&filter.dates, line, &m, now);
                    if let Some(d) = date {
                        self.last_time_text.clear();
                        self.last_time_text.push_str(&line[s..e]);
                        self.last_date = Some(d);
                    }
                } else if let Some(d) = self.recent_date(now) {
                    let text = std::mem::take(&mut self.last_time_text);
                    self.set_current("", &text, line);
                    self.last_time_text = text;
                    date = Some(d);
                } else {
                    date = Some(now);
                }
            }
            None => self.set_current("", "", line),
        }
        if date.is_none() {
            if let Some(d) = self.recent_date(now) {
                let text = std::mem::take(&mut self.last_time_text);
                self.set_current("", &text, line);
                self.last_time_text = text;
                date = Some(d);
            }
        }
        date
    }

    /// Processes one message whose time is known (journal, syslog header):
    /// the whole message is what the regexes see.
    pub fn process_dated(
        &mut self,
        filter: &Filter,
        message: &str,
        time: f64,
        time_text: &str,
    ) -> Vec<Failure> {
        self.set_current("", time_text, message);
        self.last_time_text.clear();
        self.last_time_text.push_str(time_text);
        self.last_date = Some(time);
        let mut out = Vec::new();
        self.find_failure(filter, Some(time), time, &mut out);
        out
    }

    fn recent_date(&self, now: f64) -> Option<f64> {
        self.last_date.filter(|d| *d > now - 60.0)
    }

    /// Runs ignoreregexes; returns the first that matched.
    fn ignore_line(
        &mut self,
        filter: &Filter,
        buf: &str,
        matched_lines: Option<&[Arc<TupleLine>]>,
    ) -> Option<usize> {
        let owned;
        let hay: &str = match &matched_lines {
            Some(lines) if filter.maxlines > 1 => {
                let mut s = String::new();
                join_lines(lines, &mut s);
                owned = s;
                &owned
            }
            _ => buf,
        };
        let mut found = None;
        for (i, r) in filter.ignoreregex.iter().enumerate() {
            if r.pattern.search(hay, &mut self.slots) {
                found.get_or_insert(i);
                self.info.ignored_by.push(i);
                if !filter.options.check_all {
                    break;
                }
            }
        }
        found
    }

    fn find_failure(
        &mut self,
        filter: &Filter,
        date: Option<f64>,
        now: f64,
        out: &mut Vec<Failure>,
    ) {
        let mut scratch = Scratch {
            buf: std::mem::take(&mut self.buf),
            hay_owned: std::mem::take(&mut self.content),
            pre_groups: std::mem::take(&mut self.pre_groups),
            ..Scratch::default()
        };
        let current = Arc::clone(&self.current);
        self.find_failure_in(filter, date, now, &current, &mut scratch, None, out);
        self.buf = scratch.buf;
        self.content = scratch.hay_owned;
        self.pre_groups = scratch.pre_groups;
    }

    fn set_current(&mut self, pre: &str, date: &str, post: &str) {
        match Arc::get_mut(&mut self.current) {
            Some(c) => c.set(pre, date, post),
            None => {
                self.current = Arc::new(TupleLine {
                    pre: pre.to_string(),
                    date: date.to_string(),
                    post: post.to_string(),
                })
            }
        }
    }

    /// The part of matching `scratch.buf` that depends on its text alone:
    /// the prefregex (its groups into `scratch.pre_groups`, its content
    /// into `scratch.hay_owned`) and the prefilter (into
    /// `self.candidates`).
    fn front(&mut self, filter: &Filter, scratch: &mut Scratch) -> Front {
        let Scratch {
            buf,
            hay_owned,
            pre_groups: pre_scratch,
            ..
        } = scratch;
        let mut front = Front {
            go: false,
            prefregex_matched: false,
            content: None,
        };
        if let Some(pref) = &filter.prefregex {
            if !pref.pattern.search(buf, &mut self.slots) {
                return front;
            }
            front.prefregex_matched = true;
            // the groups without `content` (its text is taken from the slots)
            let removed: Option<Value>;
            let c: Option<&str> = match pref.content {
                Some(ci) => {
                    pref.groups_into(buf, &self.slots, 0, Some(ci), pre_scratch);
                    self.slots.text(buf, ci)
                }
                None => {
                    pref.groups_into(buf, &self.slots, 0, None, pre_scratch);
                    removed = pre_scratch.remove("content").flatten();
                    removed.as_deref()
                }
            };
            if let Some(c) = c.filter(|c| !c.is_empty()) {
                if let Some(idx) = pref.pattern.group_index("content") {
                    front.content = self.slots.get(idx);
                }
                if filter.maxlines > 1 {
                    self.line_buffer = vec![Arc::new(TupleLine {
                        pre: String::new(),
                        date: String::new(),
                        post: c.to_string(),
                    })];
                }
            }
        }
        // the text failregexes search: `content\n` or the whole buffer
        hay_owned.clear();
        let hay: &str = match front.content {
            Some((s, e)) => {
                hay_owned.push_str(&buf[s..e]);
                hay_owned.push('\n');
                hay_owned
            }
            None => buf,
        };
        front.go = match &filter.prefilter {
            Some(pf) => pf.candidates(hay, &mut self.candidates),
            None => true,
        };
        front
    }

    /// Fail2Ban's `findFailure`, appending to `out`. `front` is the
    /// line's [`Front`] if it was found already (see [`LineFront`]; the
    /// scratch then holds its buffers).
    #[allow(clippy::too_many_arguments)]
    fn find_failure_in(
        &mut self,
        filter: &Filter,
        date: Option<f64>,
        now: f64,
        current: &Arc<TupleLine>,
        scratch: &mut Scratch,
        front: Option<Front>,
        out: &mut Vec<Failure>,
    ) {
        self.info.prefregex_matched = false;
        self.info.ignored_by.clear();
        let check_all = filter.options.check_all;
        let multi = filter.maxlines > 1;
        // the lines a match is made of: in single-line mode the current
        // line, shared (made once, only if some regex matches)
        let mut org: Vec<Arc<TupleLine>>;
        let front = match front {
            Some(f) => {
                org = Vec::new();
                f
            }
            None => {
                let buf = &mut scratch.buf;
                if multi {
                    self.line_buffer.push(Arc::clone(current));
                    let excess = self.line_buffer.len().saturating_sub(filter.maxlines);
                    self.line_buffer.drain(..excess);
                    org = self.line_buffer.clone();
                    join_lines(&org, buf);
                } else {
                    org = Vec::new();
                    buf.clear();
                    buf.push_str(&current.pre);
                    buf.push_str(&current.post);
                    buf.push('\n');
                }
                if filter.ignores_first() && self.ignore_line(filter, buf, None).is_some() {
                    return;
                }
                self.front(filter, scratch)
            }
        };
        self.info.prefregex_matched = front.prefregex_matched;
        if !front.go {
            return;
        }
        let Scratch {
            buf,
            hay_owned,
            pre_groups: pre_scratch,
            ahead,
            ahead_spans,
        } = scratch;
        // the next of the searches done ahead (in the candidates' order)
        let mut ahead_at = 0;
        let mut content = front.content;
        let pre_groups = front.prefregex_matched.then_some(&*pre_scratch);
        let mut hay_valid = true;
        // single-line mode: set once a failure consumed the line
        let mut single_cleared = false;
        // the candidates in order, or every failregex
        let mut next = 0;
        while let Some(idx) = self.candidate(filter, next) {
            next += 1;
            let fr = &filter.failregex[idx];
            if !hay_valid {
                // the buffer changed: search what is left of it
                if multi {
                    join_lines(&self.line_buffer, buf);
                    content = None;
                } else if single_cleared {
                    buf.clear();
                    buf.push('\n');
                    content = None;
                }
                hay_valid = true;
            }
            let hay: &str = match content {
                Some(_) => hay_owned,
                None => buf,
            };
            while ahead.get(ahead_at).is_some_and(|a| a.regex < idx) {
                ahead_at += 1;
            }
            // what was searched ahead holds while the haystack is the line's
            let searched = ahead
                .get(ahead_at)
                .filter(|a| a.regex == idx && !single_cleared);
            let found = match (searched, &mut self.search_times) {
                (Some(a), _) => {
                    let spans = self.slots.spans_mut();
                    spans.clear();
                    spans.extend_from_slice(&ahead_spans[a.spans.0..a.spans.1]);
                    a.found
                }
                (None, Some(times)) => {
                    let t = Instant::now();
                    let found = fr.pattern.search(hay, &mut self.slots);
                    times[idx] += t.elapsed();
                    found
                }
                (None, None) => fr.pattern.search(hay, &mut self.slots),
            };
            if !found {
                continue;
            }
            let (ms, me) = self.slots.get(0).unwrap_or((0, 0));
            let mut fail = FailData::default();
            // room for the prefregex's groups, merged below
            let extra = pre_groups.map_or(0, |p| p.0.len());
            fr.groups_into(hay, &self.slots, extra, None, &mut fail.groups);
            let skipped = if multi {
                fr.skipped_lines(hay, &self.slots)
            } else {
                Vec::new()
            };
            // (lean single-line failures carry no lines: nothing decides by them)
            if !multi && org.is_empty() && self.detail != FailureDetail::Lean {
                org.push(Arc::clone(current));
            }
            let (matched, unmatched) = split_matched(hay, ms, me, &org, &skipped);
            if !filter.ignoreregex.is_empty()
                && self.ignore_line(filter, hay, Some(&matched)).is_some()
            {
                if !check_all || multi {
                    if multi {
                        self.line_buffer = unmatched;
                    } else {
                        single_cleared = true;
                    }
                }
                hay_valid = false;
                if !check_all {
                    break;
                }
                continue;
            }
            if !check_all || multi {
                if multi {
                    self.line_buffer = unmatched;
                } else {
                    single_cleared = true;
                }
                hay_valid = false;
            }
            if let Some(pre) = pre_groups {
                // `pre.copy().update(fail)`: the failregex's values win
                for &(k, ref v) in &pre.0 {
                    if fail.groups.get(k).is_none() {
                        fail.groups.0.push((k, v.clone()));
                    }
                }
            }
            let mlfid = fail.get("mlfid").map(Value::from);
            let mut in_cache = false;
            if let Some(id) = &mlfid {
                let (merged, cached) = self.merge_failure(id, fail, &matched, now);
                fail = merged;
                in_cache = cached;
                if fail.truthy("nofail") && !check_all {
                    return;
                }
            } else {
                fail.matches.extend_from_slice(&matched);
            }
            let fid = fail.get("fid").map(Value::from);
            let ip = fail
                .get("ip4")
                .or_else(|| fail.get("ip6"))
                .or_else(|| fail.get("dns"))
                .map(Value::from)
                .or_else(|| fid.clone());
            let Some(ip) = ip else {
                if mlfid.is_none() {
                    // a regex without any id group matched: Fail2Ban logs and goes on
                    continue;
                }
                fail.mlfpending = true;
                if in_cache {
                    if let Some(e) = self.mlfid.get(mlfid.as_deref().unwrap_or_default(), now) {
                        e.data.mlfpending = true;
                    }
                }
                if !check_all && filter.options.ignore_pending {
                    return;
                }
                out.push(Failure {
                    regex: idx,
                    fid: None,
                    time: date,
                    data: fail,
                });
                if !check_all {
                    break;
                }
                continue;
            };
            let fid = match fid {
                Some(f) if f != ip => {
                    fail.groups.set("ip", Some(ip));
                    f
                }
                _ => ip,
            };
            out.push(Failure {
                regex: idx,
                fid: Some(fid),
                time: date,
                data: fail,
            });
            if !check_all {
                break;
            }
        }
    }

    /// Fail2Ban's `_mergeFailure`: combines a failure with what is known
    /// about its `<F-MLFID>` connection. Returns the merged data and whether
    /// it is (still) cached.
    fn merge_failure(
        &mut self,
        mlfid: &str,
        mut fail: FailData,
        matched: &[Arc<TupleLine>],
        now: f64,
    ) -> (FailData, bool) {
        let mut flags = 0u8;
        if fail.truthy("mlfgained") {
            flags |= 8 | 1;
            if !fail.truthy("nofail") {
                let g = fail.groups.get("mlfgained").cloned().flatten();
                fail.groups.set("nofail", g);
            }
        } else if fail.truthy("nofail") {
            flags |= 1;
        }
        if truthy(fail.pop("mlfforget").as_ref()) {
            flags |= 2;
        }
        let user = fail.get("user").map(Value::from);
        let user = user.as_deref();
        let forget = flags & 2 != 0;
        let many_users;
        // the merged data: the cached entry updated in place, or this failure
        let entry = self.mlfid.get(mlfid, now).map(|e| &mut e.data);
        let was_cached = entry.is_some();
        let merged: &mut FailData = match entry {
            Some(g) => {
                many_users = g.update_users(user);
                if truthy(g.pop("nofail").as_ref()) {
                    flags |= 4;
                }
                if truthy(g.pop("mlfgained").as_ref()) {
                    flags |= 4;
                }
                if flags & 8 != 0 {
                    g.mlfpending = false;
                }
                if flags & 4 == 0 && !g.mlfpending {
                    g.matches.clear();
                }
                g.update_non_none(&fail);
                g
            }
            None => {
                many_users = !forget && fail.update_users(user);
                &mut fail
            }
        };
        let pending = std::mem::take(&mut merged.mlfpending);
        if pending || many_users {
            merged.pop("nofail");
            merged.pop("mlfgained");
            flags &= !(8 | 1);
        }
        if flags & 1 == 0 {
            let mut m = std::mem::take(&mut merged.nofail_matches);
            m.append(&mut merged.matches);
            if flags & 8 == 0 {
                m.extend(matched.iter().cloned());
            }
            merged.matches = m;
        } else if flags & 3 == 1 {
            merged.nofail_matches.extend(matched.iter().cloned());
        }
        if was_cached {
            let result = match self.detail {
                FailureDetail::Lean => merged.deciding(),
                FailureDetail::Evidence => merged.evidence(),
                FailureDetail::Full => merged.clone(),
            };
            if forget {
                self.mlfid.remove(mlfid);
            }
            return (result, !forget);
        }
        if !forget {
            let result = match self.detail {
                FailureDetail::Lean => fail.deciding(),
                FailureDetail::Evidence => fail.evidence(),
                FailureDetail::Full => fail.clone(),
            };
            self.mlfid.set(mlfid, fail, now);
            return (result, true);
        }
        (fail, !forget)
    }
}
