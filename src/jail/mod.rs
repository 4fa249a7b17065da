//! Jails: one task per jail owns its failure windows and active bans.
//!
//! The filter runs on the source threads (a [`Matcher`] per jail, shared
//! by its sources), so matching and counting proceed side by side. A jail
//! receives the failures of each chunk of log lines (with the source
//! position after the chunk), control commands, and confirmations
//! from the store. It sends failures, positions, bans and unbans to the
//! store in the order they happen (so a position is never committed
//! before the failures of the lines before it), and ban events to its
//! actions once the store confirms the ban is recorded.

pub mod ignore;
pub mod policy;
pub mod window;

use crate::config::jail::JailConfig;
use crate::filter::{Failure, FailureDetail, Filter, FilterState, Value};
use crate::firewall::{ActionEvent, ActionRunner};
use crate::store::{BanRecord, BanRequest, ChunkOp, JailState, Store, StoreCmd};
use ignore::{parse_addr, IgnoreList};
use ipnet::IpNet;
pub use policy::BanPolicy;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use window::FailureWindows;

/// One line from a source.
#[derive(Debug, Clone)]
pub struct Line {
    /// Shared with the failures found in it (their evidence line).
    pub text: Arc<str>,
    /// The time the source knows for it (journal entries); `None` if it is
    /// in the text.
    pub time: Option<f64>,
    /// False while a source catches up on what was written before the
    /// daemon started: old failures then do not count.
    pub live: bool,
    /// Who sent it (syslog).
    pub origin: Option<Arc<Origin>>,
}

/// The sender of a syslog message: the header's host name and the peer
/// address it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Origin {
    pub host: Option<String>,
    pub peer: IpAddr,
}

/// Where a source stands after a chunk.
pub type Checkpoint = crate::store::SourcePos;

/// A failure found in a line: what the jail counts (made on the source
/// thread, so the filter's own structures are freed where they were made).
pub struct Found {
    /// The failure id (an address, or a host name with `usedns`).
    pub fid: String,
    /// The log time, if the line had one.
    pub time: Option<f64>,
    /// The log line(s) of the failure: the evidence a ban keeps.
    pub line: Arc<str>,
    /// See [`Line::live`].
    pub live: bool,
    pub origin: Option<Arc<Origin>>,
    /// The filter's other captures (`user`, `alt_user`, custom `<F-*>`),
    /// as the filter made them (copied into strings only for a ban).
    pub fields: Vec<(&'static str, Value)>,
    /// When the line was matched (epoch seconds): ban latency starts here.
    pub read_at: f64,
}

/// Captures that are the failure's id or the filter's own bookkeeping, not
/// data for `<F-*>` action tags.
const INTERNAL_GROUPS: &[&str] = &[
    "ip4",
    "ip6",
    "dns",
    "fid",
    "ip",
    "mlfid",
    "content",
    "nofail",
    "mlfforget",
    "mlfgained",
];

impl Found {
    fn new(f: Failure, from: &Line) -> Option<Found> {
        let line: Arc<str> = match f.data.matches.as_slice() {
            // the usual case: the match is the line itself
            [one] if one.is(&from.text) => Arc::clone(&from.text),
            [one] => one.full().into(),
            many => many
                .iter()
                .map(|m| m.full())
                .collect::<Vec<_>>()
                .join("\n")
                .into(),
        };
        let fields = f
            .data
            .groups
            .entries()
            .filter(|(k, _)| !INTERNAL_GROUPS.contains(k))
            .filter_map(|(k, v)| Some((k, v?.clone())))
            .collect();
        Some(Found {
            fid: f.fid?.into(),
            time: f.time,
            line,
            live: from.live,
            origin: from.origin.clone(),
            fields,
            read_at: 0.0,
        })
    }
}

/// A jail's filter and its state, run by the jail's sources on their own
/// threads. One state per jail, as Fail2Ban has one per jail: the sources
/// of a jail take turns, a chunk at a time.
pub struct Matcher {
    filter: Arc<Filter>,
    state: std::sync::Mutex<FilterState>,
    /// `match_time.JAIL`, the StatsD timer name.
    timer: String,
}

impl Matcher {
    pub fn new(filter: Arc<Filter>, jail: &str) -> Matcher {
        let mut state = FilterState::new(&filter);
        state.set_failure_detail(FailureDetail::Evidence);
        Matcher {
            state: std::sync::Mutex::new(state),
            filter,
            timer: format!("match_time.{}", crate::notify::statsd::part(jail)),
        }
    }

    /// The failures in a chunk of lines.
    pub fn scan(&self, lines: &[Line]) -> Vec<Found> {
        let now = now();
        let started = std::time::Instant::now();
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out = Vec::new();
        let mut found = Vec::new();
        for line in lines {
            match line.time {
                Some(t) => found = state.process_dated(&self.filter, &line.text, t, ""),
                None => state.process_line_into(&self.filter, &line.text, now, &mut found),
            }
            out.extend(
                found
                    .drain(..)
                    .filter(|f| !f.is_nofail())
                    .filter_map(|f| Found::new(f, line)),
            );
        }
        for f in &mut out {
            f.read_at = now;
        }
        if !lines.is_empty() {
            let per_line = started.elapsed().as_secs_f64() * 1000.0 / lines.len() as f64;
            crate::notify::statsd::timer(&self.timer, per_line);
        }
        out
    }
}

pub enum JailCmd {
    Status(oneshot::Sender<JailStatus>),
    /// The status without the list of banned addresses.
    Brief(oneshot::Sender<JailStatus>),
    Inspect {
        ip: IpAddr,
        reply: oneshot::Sender<Inspection>,
    },
    Ban {
        ips: Vec<IpAddr>,
        reply: oneshot::Sender<Vec<String>>,
    },
    Unban {
        /// `None`: every banned address.
        ips: Option<Vec<IpAddr>>,
        reply: oneshot::Sender<Vec<String>>,
    },
    Banned(oneshot::Sender<Vec<BanRecord>>),
    /// The active ban covering one address, if any (the ban page).
    Lookup {
        ip: IpAddr,
        reply: oneshot::Sender<Option<BanDetail>>,
    },
}

/// A ban with what a visitor may be told about the jail that made it.
#[derive(Debug, Clone, Serialize)]
pub struct BanDetail {
    pub ban: BanRecord,
    pub findtime: f64,
    pub maxretry: u32,
    pub description: Option<String>,
    pub filter: String,
}

/// The running jails, for those who ask them questions outside the main
/// loop (the web pages). The daemon updates it as jails start and stop;
/// readers copy the senders out and never hold the lock across `.await`.
#[derive(Clone, Default)]
pub struct JailDirectory {
    jails: Arc<std::sync::RwLock<Vec<(String, mpsc::Sender<JailMsg>)>>>,
}

/// Asks one jail; `None` when it does not answer.
async fn ask<T>(
    tx: &mpsc::Sender<JailMsg>,
    q: impl FnOnce(oneshot::Sender<T>) -> JailCmd,
) -> Option<T> {
    let (r, rx) = oneshot::channel();
    tx.send(JailMsg::Control(q(r))).await.ok()?;
    tokio::time::timeout(std::time::Duration::from_secs(5), rx)
        .await
        .ok()?
        .ok()
}

impl JailDirectory {
    /// Every jail's status, without the lists of banned addresses.
    pub async fn brief(&self) -> Vec<JailStatus> {
        let mut out = Vec::new();
        for (_, tx) in self.snapshot() {
            out.extend(ask(&tx, JailCmd::Brief).await);
        }
        out
    }

    /// What every jail knows about `ip`.
    pub async fn inspect(&self, ip: IpAddr) -> Vec<Inspection> {
        let mut out = Vec::new();
        for (_, tx) in self.snapshot() {
            out.extend(ask(&tx, |reply| JailCmd::Inspect { ip, reply }).await);
        }
        out
    }

    pub fn set(&self, name: &str, tx: mpsc::Sender<JailMsg>) {
        let mut j = self.jails.write().unwrap_or_else(|p| p.into_inner());
        j.retain(|(n, _)| n != name);
        j.push((name.to_string(), tx));
    }

    pub fn remove(&self, name: &str) {
        let mut j = self.jails.write().unwrap_or_else(|p| p.into_inner());
        j.retain(|(n, _)| n != name);
    }

    /// The running jails' names, in start order.
    pub fn names(&self) -> Vec<String> {
        self.snapshot().into_iter().map(|(n, _)| n).collect()
    }

    pub fn snapshot(&self) -> Vec<(String, mpsc::Sender<JailMsg>)> {
        self.jails.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every active ban covering `ip`, from every jail.
    pub async fn lookup(&self, ip: IpAddr) -> Vec<BanDetail> {
        let mut out = Vec::new();
        for (_, tx) in self.snapshot() {
            let (r, rx) = oneshot::channel();
            if tx
                .send(JailMsg::Control(JailCmd::Lookup { ip, reply: r }))
                .await
                .is_ok()
            {
                if let Ok(Ok(Some(d))) =
                    tokio::time::timeout(std::time::Duration::from_secs(5), rx).await
                {
                    out.push(d);
                }
            }
        }
        out
    }
}

pub enum JailMsg {
    /// What a source found in a chunk of `lines` lines.
    Chunk {
        lines: u64,
        found: Vec<Found>,
        checkpoint: Option<Checkpoint>,
    },
    /// A source's status line (file watched, missing, ...).
    Source {
        id: String,
        state: String,
    },
    Stored(BanRecord),
    /// A ban the store has not confirmed within [`STORE_GRACE`].
    Unrecorded(BanRecord),
    Control(JailCmd),
}

#[derive(Debug, Clone, Serialize)]
pub struct JailStatus {
    pub name: String,
    pub filter: String,
    pub backend: String,
    pub sources: Vec<(String, String)>,
    pub lines: u64,
    pub currently_failed: usize,
    pub total_failed: u64,
    pub currently_banned: usize,
    pub total_banned: u64,
    pub total_unbanned: u64,
    pub banned: Vec<String>,
    /// Syslog senders whose messages had failures, most recent first.
    pub senders: Vec<SenderStatus>,
    pub maxretry: u32,
    pub findtime: f64,
    /// Seconds; negative: permanent.
    pub bantime: f64,
    pub description: Option<String>,
    /// Lines read per source (file path, `journal`, `syslog`).
    pub source_lines: Vec<(String, u64)>,
    /// Action commands that failed since start.
    pub action_errors: u64,
}

/// What a jail knows about one address right now (the admin view's
/// "decisions").
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub jail: String,
    /// Failures in the current window.
    pub failures: u32,
    pub maxretry: u32,
    pub findtime: f64,
    /// In `ignoreip` (or `ignoreself`): never banned by this jail.
    pub ignored: bool,
    pub ban: Option<BanRecord>,
}

/// Failures from one syslog sender.
#[derive(Debug, Clone, Serialize)]
pub struct SenderStatus {
    pub host: Option<String>,
    pub peer: IpAddr,
    pub failures: u64,
    /// Epoch seconds of the last failure.
    pub last: f64,
}

/// How long a ban may wait for the database before it is enforced anyway.
const STORE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Restored bans logged one by one at start, at most.
const RESTORE_LOGGED: usize = 1000;

/// Senders listed by `status JAIL` at most.
const SENDERS_SHOWN: usize = 50;

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What a jail counts and bans: an address, or an IPv6 network.
pub fn ban_key(ip: IpAddr, ipv6prefix: u8) -> IpNet {
    match ip {
        IpAddr::V6(_) if ipv6prefix < 128 => IpNet::new(ip, ipv6prefix)
            .map(|n| n.trunc())
            .unwrap_or(IpNet::from(ip)),
        _ => IpNet::from(ip),
    }
}

/// `192.0.2.1`, `2001:db8::1`, or `2001:db8::/64` for a prefix.
pub fn key_text(key: &IpNet) -> String {
    match key {
        // the usual key, written digit by digit (a formatter per octet
        // cost more than the rest of counting the failure)
        IpNet::V4(n) if n.prefix_len() == 32 => {
            let mut out = String::with_capacity(15);
            for (k, o) in n.addr().octets().into_iter().enumerate() {
                if k > 0 {
                    out.push('.');
                }
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + o / 10 % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
            out
        }
        _ if key.prefix_len() == key.max_prefix_len() => key.addr().to_string(),
        _ => key.to_string(),
    }
}

pub fn parse_key(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| parse_addr(text).map(IpNet::from))
}

/// Whole milliseconds, to order unban times.
fn ms(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

struct Active {
    rec: BanRecord,
}

pub struct Jail {
    cfg: JailConfig,
    filter: Arc<Filter>,
    windows: FailureWindows,
    banned: HashMap<IpNet, Active>,
    /// Bans sent to the store, not confirmed yet.
    pending: HashSet<IpNet>,
    unbans: BTreeSet<(i64, IpNet)>,
    ignore: IgnoreList,
    policy: BanPolicy,
    store: Store,
    actions: ActionRunner,
    me: mpsc::Sender<JailMsg>,
    sources: Vec<(String, String)>,
    lines: u64,
    total_failed: u64,
    total_banned: u64,
    total_unbanned: u64,
    warned_clock: bool,
    /// When the line behind each pending ban was read (for `ban_latency`).
    pending_since: HashMap<IpNet, f64>,
    /// While a chunk is processed: its effects, recorded with its position.
    chunk: Option<Vec<ChunkOp>>,
    /// Failures per syslog sender: (count, last time).
    senders: HashMap<Arc<Origin>, (u64, f64)>,
    /// Lines read per source.
    source_lines: std::collections::BTreeMap<String, u64>,
}

impl Jail {
    pub fn new(
        cfg: JailConfig,
        filter: Arc<Filter>,
        store: Store,
        actions: ActionRunner,
        me: mpsc::Sender<JailMsg>,
    ) -> Jail {
        let ignore = IgnoreList::build(&cfg.ignoreip, cfg.ignoreself, cfg.ignorecommand.clone());
        for w in &ignore.warnings {
            tracing::warn!(jail = %cfg.name, "{w}");
        }
        let policy = BanPolicy {
            bantime: cfg.bantime,
            increment: cfg.increment.clone(),
        };
        Jail {
            cfg,
            filter,
            windows: FailureWindows::default(),
            banned: HashMap::new(),
            pending: HashSet::new(),
            unbans: BTreeSet::new(),
            ignore,
            policy,
            store,
            actions,
            me,
            sources: Vec::new(),
            lines: 0,
            total_failed: 0,
            total_banned: 0,
            total_unbanned: 0,
            warned_clock: false,
            pending_since: HashMap::new(),
            chunk: None,
            senders: HashMap::new(),
            source_lines: std::collections::BTreeMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Brings back what the database remembers: active bans (with their
    /// remaining time), ended ones closed, failures that still count.
    pub fn restore(&mut self, st: JailState) {
        let now = now();
        self.total_banned = st.total_bans;
        for b in st.expired {
            self.store_send(StoreCmd::Unban {
                jail: self.cfg.name.clone(),
                ip: b.ip.clone(),
                time: b.end.unwrap_or(now),
            });
        }
        let restoring = st.bans.len();
        for (n, b) in st.bans.into_iter().enumerate() {
            let Some(key) = parse_key(&b.ip) else {
                continue;
            };
            // one line per ban as Fail2Ban writes them, but not a hundred
            // thousand of them at start
            if n < RESTORE_LOGGED {
                tracing::info!(target: "banhammer.actions", notice = true, jail = %self.cfg.name, ip = %b.ip, "Restore Ban");
            } else if n == RESTORE_LOGGED {
                tracing::info!(target: "banhammer.actions", notice = true, jail = %self.cfg.name, "Restoring {} more bans without a line each", restoring - RESTORE_LOGGED);
            }
            self.actions.send(ActionEvent::Restore(Arc::new(b.clone())));
            if let Some(end) = b.end {
                self.unbans.insert((ms(end), key));
            }
            self.banned.insert(key, Active { rec: b });
        }
        self.actions.send(ActionEvent::Restored);
        let mut hot = Vec::new();
        for f in st.failures {
            let Some(key) = parse_key(&f.ip) else {
                continue;
            };
            if self.banned.contains_key(&key) {
                continue;
            }
            let line: Arc<str> = f.line.unwrap_or_default().into();
            let n = self
                .windows
                .add(key, f.time, line, self.cfg.findtime, self.cfg.maxretry);
            if n >= self.cfg.maxretry {
                hot.push((key, n));
            }
        }
        for (key, n) in hot {
            self.start_ban(key, n, now, Vec::new(), None);
        }
    }

    fn store_send(&self, cmd: StoreCmd) {
        if self.store.send(cmd).is_err() {
            tracing::error!(jail = %self.cfg.name, "the store has stopped; state is not recorded");
        }
    }

    /// Counts the failures of one chunk of lines; they, the bans they
    /// cause and the source position after the chunk go to the store as
    /// one transaction.
    fn on_chunk(&mut self, lines: u64, found: Vec<Found>, checkpoint: Option<Checkpoint>) {
        let now = now();
        self.chunk = Some(Vec::new());
        self.lines += lines;
        let source = match &checkpoint {
            Some(crate::store::SourcePos::File { path, .. }) => path.as_str(),
            Some(crate::store::SourcePos::Cursor(_)) => "journal",
            None => match &self.cfg.backend {
                crate::config::jail::Backend::Syslog(_) => "syslog",
                crate::config::jail::Backend::Systemd { .. } => "journal",
                _ => "files",
            },
        };
        match self.source_lines.get_mut(source) {
            Some(n) => *n += lines,
            None => {
                self.source_lines.insert(source.to_string(), lines);
            }
        }
        for f in found {
            self.on_failure(f, now);
        }
        let ops = self.chunk.take().unwrap_or_default();
        if !ops.is_empty() || checkpoint.is_some() {
            self.store_send(StoreCmd::Chunk {
                jail: self.cfg.name.clone(),
                ops,
                pos: checkpoint,
            });
        }
    }

    fn on_failure(&mut self, f: Found, now: f64) {
        let ip = match parse_addr(&f.fid) {
            Some(ip) => ip,
            None => match self.resolve(&f.fid) {
                Some(ip) => ip,
                None => {
                    tracing::debug!(jail = %self.cfg.name, id = %f.fid, "failure id is not an address; not counted");
                    return;
                }
            },
        };
        let mut time = f.time.unwrap_or(now);
        if f.live {
            if (time - now).abs() > 60.0 {
                if !self.warned_clock {
                    tracing::warn!(jail = %self.cfg.name, offset = time - now, "a log line's time is more than a minute off the current time (time zone or latency problem?); treating such lines as just written");
                    self.warned_clock = true;
                }
                time = now;
            }
        } else if time < now - self.cfg.findtime {
            return;
        }
        let ignored = self.ignore.contains(ip)
            || (self.ignore.has_command()
                && tokio::task::block_in_place(|| self.ignore.command_says_ignore(ip)));
        if ignored {
            tracing::info!(jail = %self.cfg.name, ip = %ip, "Ignore");
            return;
        }
        let key = ban_key(ip, self.cfg.ipv6prefix);
        // counted as Fail2Ban counts it, also when the address is banned
        // already (its lines still arrive until the firewall drops them)
        self.total_failed += 1;
        if let Some(o) = &f.origin {
            let e = self.senders.entry(o.clone()).or_insert((0, 0.0));
            e.0 += 1;
            e.1 = time;
        }
        if self.banned.contains_key(&key) || self.pending.contains(&key) {
            return;
        }
        let text = key_text(&key);
        tracing::info!(jail = %self.cfg.name, ip = %text, "Found");
        let line = f.line;
        match self.chunk.as_mut() {
            Some(ops) => ops.push(ChunkOp::Failure {
                ip: text,
                time,
                line: line.clone(),
                origin: f.origin.clone(),
            }),
            None => self.store_send(StoreCmd::Failure {
                jail: self.cfg.name.clone(),
                ip: text,
                time,
                line: line.clone(),
                origin: f.origin.clone(),
            }),
        }
        let n = self
            .windows
            .add(key, time, line, self.cfg.findtime, self.cfg.maxretry);
        if n >= self.cfg.maxretry {
            self.pending_since.insert(key, f.read_at);
            self.start_ban(key, n, now, f.fields, f.origin);
        }
    }

    /// A host name in a failure (`usedns`): its address, if it has one.
    fn resolve(&self, host: &str) -> Option<IpAddr> {
        use crate::filter::UseDns;
        if !matches!(self.cfg.usedns, UseDns::Yes | UseDns::Warn) {
            return None;
        }
        use std::net::ToSocketAddrs;
        let addrs = tokio::task::block_in_place(|| (host, 0).to_socket_addrs()).ok()?;
        let ip = addrs.map(|a| ignore::canonical(a.ip())).next()?;
        if self.cfg.usedns == UseDns::Warn {
            tracing::warn!(jail = %self.cfg.name, host = %host, ip = %ip, "host name resolved to an address (usedns = warn); a log line an attacker controls can name any host");
        }
        Some(ip)
    }

    fn start_ban(
        &mut self,
        key: IpNet,
        failures: u32,
        now: f64,
        fields: Vec<(&'static str, Value)>,
        origin: Option<Arc<Origin>>,
    ) {
        if self.banned.contains_key(&key) || !self.pending.insert(key) {
            return;
        }
        let evidence = self.windows.take(&key);
        let skip = evidence.len().saturating_sub(self.cfg.maxmatches);
        let req = BanRequest {
            jail: self.cfg.name.clone(),
            ip: key_text(&key),
            start: now,
            failures,
            matches: evidence[skip..].iter().map(|f| f.1.to_string()).collect(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect(),
            origin,
            policy: self.policy.clone(),
        };
        let (reply, rx) = oneshot::channel();
        // what is enforced if the database cannot record the ban in time
        let provisional = BanRecord {
            id: 0,
            jail: req.jail.clone(),
            ip: req.ip.clone(),
            start: now,
            end: self.policy.bantime(0).map(|s| now + s),
            ban_count: 0,
            failures,
            matches: req.matches.clone(),
            fields: req.fields.clone(),
        };
        match self.chunk.as_mut() {
            // recorded with the chunk that caused it
            Some(ops) => ops.push(ChunkOp::Ban { req, reply }),
            None => self.store_send(StoreCmd::Ban { req, reply }),
        }
        let me = self.me.clone();
        let jail = self.cfg.name.clone();
        tokio::spawn(async move {
            let mut rx = rx;
            let rec = match tokio::time::timeout(STORE_GRACE, &mut rx).await {
                Ok(r) => r,
                Err(_) => {
                    // the database is stuck (a full disk, say): protect now,
                    // the record follows when the store can write again
                    let _ = me.send(JailMsg::Unrecorded(provisional)).await;
                    rx.await
                }
            };
            match rec {
                Ok(rec) => {
                    let _ = me.send(JailMsg::Stored(rec)).await;
                }
                Err(_) => tracing::error!(jail = %jail, "ban not recorded: the store stopped"),
            }
        });
    }

    /// A ban the store has not confirmed in time: enforced from memory.
    fn on_unrecorded(&mut self, rec: BanRecord) {
        let Some(key) = parse_key(&rec.ip) else {
            return;
        };
        if !self.pending.contains(&key) || self.banned.contains_key(&key) {
            return;
        }
        tracing::warn!(target: "banhammer.actions", jail = %self.cfg.name, ip = %rec.ip, "Ban enforced before the database recorded it (the database is slow or cannot write: a full disk?); it is recorded as soon as the database catches up");
        tracing::info!(target: "banhammer.actions", notice = true, jail = %self.cfg.name, ip = %rec.ip, "Ban");
        if let Some(end) = rec.end {
            self.unbans.insert((ms(end), key));
        }
        self.actions.send(ActionEvent::Ban(Arc::new(rec.clone())));
        self.banned.insert(key, Active { rec });
    }

    fn on_stored(&mut self, rec: BanRecord) {
        let Some(key) = parse_key(&rec.ip) else {
            return;
        };
        self.pending.remove(&key);
        if let Some(t) = self.pending_since.remove(&key).filter(|t| *t > 0.0) {
            crate::notify::statsd::timer(
                &format!(
                    "ban_latency.{}",
                    crate::notify::statsd::part(&self.cfg.name)
                ),
                (now() - t) * 1000.0,
            );
        }
        let mut provisional = false;
        if let Some(old) = self.banned.remove(&key) {
            if let Some(end) = old.rec.end {
                self.unbans.remove(&(ms(end), key));
            }
            // id 0: enforced from memory while the database could not write
            provisional = old.rec.id == 0;
        }
        if provisional {
            tracing::info!(target: "banhammer.actions", jail = %self.cfg.name, ip = %rec.ip, "Ban recorded in the database");
        } else {
            tracing::info!(target: "banhammer.actions", notice = true, jail = %self.cfg.name, ip = %rec.ip, "Ban");
        }
        if let Some(end) = rec.end {
            self.unbans.insert((ms(end), key));
        }
        self.total_banned += 1;
        self.actions.send(ActionEvent::Ban(Arc::new(rec.clone())));
        self.banned.insert(key, Active { rec });
    }

    fn unban(&mut self, key: IpNet, now: f64) -> Option<String> {
        let a = self.banned.remove(&key)?;
        self.total_unbanned += 1;
        if let Some(end) = a.rec.end {
            self.unbans.remove(&(ms(end), key));
        }
        tracing::info!(target: "banhammer.actions", notice = true, jail = %self.cfg.name, ip = %a.rec.ip, "Unban");
        self.store_send(StoreCmd::Unban {
            jail: self.cfg.name.clone(),
            ip: a.rec.ip.clone(),
            time: now,
        });
        self.actions
            .send(ActionEvent::Unban(Arc::new(a.rec.clone())));
        Some(a.rec.ip)
    }

    fn expire(&mut self, now: f64) {
        while let Some(&(end, key)) = self.unbans.first() {
            if end > ms(now) {
                break;
            }
            self.unbans.pop_first();
            self.unban(key, now);
        }
    }

    /// Seconds until the next unban, if any.
    fn next_unban_in(&self, now: f64) -> Option<f64> {
        self.unbans
            .first()
            .map(|&(end, _)| (end as f64 / 1000.0 - now).max(0.0))
    }

    fn status(&self, with_banned: bool) -> JailStatus {
        let mut banned: Vec<String> = if with_banned {
            self.banned.values().map(|a| a.rec.ip.clone()).collect()
        } else {
            Vec::new()
        };
        banned.sort();
        let mut senders: Vec<SenderStatus> = self
            .senders
            .iter()
            .map(|(o, &(failures, last))| SenderStatus {
                host: o.host.clone(),
                peer: o.peer,
                failures,
                last,
            })
            .collect();
        senders.sort_by(|a, b| b.last.total_cmp(&a.last));
        senders.truncate(SENDERS_SHOWN);
        JailStatus {
            name: self.cfg.name.clone(),
            filter: self.filter.name().to_string(),
            backend: format!("{:?}", self.cfg.backend),
            sources: self.sources.clone(),
            lines: self.lines,
            currently_failed: self.windows.len(),
            total_failed: self.total_failed,
            currently_banned: self.banned.len(),
            total_banned: self.total_banned,
            total_unbanned: self.total_unbanned,
            banned,
            senders,
            maxretry: self.cfg.maxretry,
            findtime: self.cfg.findtime,
            bantime: self.cfg.bantime,
            description: self.cfg.description.clone(),
            source_lines: self
                .source_lines
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            action_errors: self.actions.errors(),
        }
    }

    fn on_control(&mut self, cmd: JailCmd) {
        let now = now();
        match cmd {
            JailCmd::Status(reply) => {
                let _ = reply.send(self.status(true));
            }
            JailCmd::Brief(reply) => {
                let _ = reply.send(self.status(false));
            }
            JailCmd::Inspect { ip, reply } => {
                let ip = ignore::canonical(ip);
                let key = ban_key(ip, self.cfg.ipv6prefix);
                let _ = reply.send(Inspection {
                    jail: self.cfg.name.clone(),
                    failures: self.windows.count(&key, now, self.cfg.findtime),
                    maxretry: self.cfg.maxretry,
                    findtime: self.cfg.findtime,
                    ignored: self.ignore.contains(ip),
                    ban: self.banned.get(&key).map(|a| a.rec.clone()),
                });
            }
            JailCmd::Ban { ips, reply } => {
                let mut done = Vec::new();
                for ip in ips {
                    let key = ban_key(ignore::canonical(ip), self.cfg.ipv6prefix);
                    done.push(key_text(&key));
                    // a manual ban replaces an active one
                    self.banned.remove(&key);
                    self.pending.remove(&key);
                    self.start_ban(
                        key,
                        self.windows.count(&key, now, self.cfg.findtime),
                        now,
                        Vec::new(),
                        None,
                    );
                }
                let _ = reply.send(done);
            }
            JailCmd::Unban { ips, reply } => {
                let keys: Vec<IpNet> = match ips {
                    None => self.banned.keys().copied().collect(),
                    Some(ips) => ips
                        .into_iter()
                        .filter_map(|ip| {
                            let ip = ignore::canonical(ip);
                            self.banned.keys().find(|k| k.contains(&ip)).copied()
                        })
                        .collect(),
                };
                let done = keys
                    .into_iter()
                    .filter_map(|k| self.unban(k, now))
                    .collect();
                let _ = reply.send(done);
            }
            JailCmd::Lookup { ip, reply } => {
                let ip = ignore::canonical(ip);
                let key = ban_key(ip, self.cfg.ipv6prefix);
                let found = self
                    .banned
                    .get(&key)
                    .or_else(|| self.banned.get(&IpNet::from(ip)))
                    .map(|a| BanDetail {
                        ban: a.rec.clone(),
                        findtime: self.cfg.findtime,
                        maxretry: self.cfg.maxretry,
                        description: self.cfg.description.clone(),
                        filter: self.filter.name().to_string(),
                    });
                let _ = reply.send(found);
            }
            JailCmd::Banned(reply) => {
                let mut v: Vec<BanRecord> = self.banned.values().map(|a| a.rec.clone()).collect();
                v.sort_by(|a, b| a.ip.cmp(&b.ip));
                let _ = reply.send(v);
            }
        }
    }

    /// The jail's loop: until cancelled.
    pub async fn run(mut self, mut rx: mpsc::Receiver<JailMsg>, cancel: CancellationToken) {
        let mut housekeeping = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            let wait = self.next_unban_in(now()).unwrap_or(3600.0);
            tokio::select! {
                _ = cancel.cancelled() => break,
                msg = rx.recv() => match msg {
                    None => break,
                    Some(JailMsg::Chunk { lines, found, checkpoint }) => self.on_chunk(lines, found, checkpoint),
                    Some(JailMsg::Source { id, state }) => {
                        match self.sources.iter_mut().find(|(i, _)| *i == id) {
                            Some(s) => s.1 = state,
                            None => self.sources.push((id, state)),
                        }
                    }
                    Some(JailMsg::Stored(rec)) => self.on_stored(rec),
                    Some(JailMsg::Unrecorded(rec)) => self.on_unrecorded(rec),
                    Some(JailMsg::Control(cmd)) => self.on_control(cmd),
                },
                _ = tokio::time::sleep(std::time::Duration::from_secs_f64(wait)) => {}
                _ = housekeeping.tick() => self.windows.expire(now(), self.cfg.findtime),
            }
            self.expire(now());
        }
        tracing::debug!(jail = %self.cfg.name, "jail stopped");
        self.actions.send(ActionEvent::Stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are written as the standard formatter writes them.
    #[test]
    fn key_text_writes_addresses_as_the_formatter_does() {
        for a in (0..=255u8).step_by(3) {
            for b in [0u8, 7, 10, 99, 100, 255] {
                let ip = std::net::Ipv4Addr::new(a, b, 255 - a, b / 2);
                let key = IpNet::from(std::net::IpAddr::V4(ip));
                assert_eq!(key_text(&key), ip.to_string());
            }
        }
        let net: IpNet = "2001:db8::/64".parse().unwrap();
        assert_eq!(key_text(&net), "2001:db8::/64");
        let v6: IpNet = "2001:db8::1/128".parse().unwrap();
        assert_eq!(key_text(&v6), "2001:db8::1");
    }
}
