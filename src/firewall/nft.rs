//! Native nftables: one table, `inet banhammer`, owned by one thread.
//!
//! Owns the kernel side of every jail whose action is `nftables` (or one
//! of Fail2Ban's nftables names): per jail an IPv4 and an IPv6 set with
//! `flags interval, timeout` (so prefix bans fit and the kernel lifts bans
//! on time even while the daemon is down), drop/reject rules in an `input`
//! and a `forward` chain (forwarded and container traffic is covered, not
//! only local services), and, with a ban page configured, a `nat`
//! prerouting chain that redirects banned visitors' HTTP ports to it.
//!
//! Receives [`FwCmd`]s from the jails' actions and keeps a model of what
//! the table must hold. Changes go to the kernel as one `nft -f -` batch per
//! burst, written with idioms that succeed whether or not an element has
//! expired in the meantime. The whole table is rebuilt from the model in one
//! transaction when jails start (at start-up: once every jail has restored
//! its bans from the database) and whenever a batch fails; a failing `nft`
//! is reported and retried with backoff, and nothing is forgotten meanwhile
//! (the bans are in the database already, and in the model).
//!
//! The kernel cannot hold overlapping intervals in one set, so an element
//! inside another (an address inside a banned /64) is kept in the model
//! only, and written when the one around it goes.

use super::BanInfo;
use ipnet::IpNet;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The table banhammer owns.
pub const TABLE: &str = "banhammer";

/// Where banned visitors' web traffic goes: `[web] banpage_ports` are
/// redirected to the ban page listener's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub ports: Vec<u16>,
    pub to: u16,
}

/// Daemon-wide settings of the nftables backend.
#[derive(Debug, Clone)]
pub struct NftSettings {
    /// The `nft` binary.
    pub nft: String,
    pub redirect: Option<Redirect>,
}

impl Default for NftSettings {
    fn default() -> NftSettings {
        NftSettings {
            nft: "nft".into(),
            redirect: None,
        }
    }
}

/// Which ports of a jail are closed to its banned addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// `type = allports`.
    All,
    /// `type = multiport`: nft port expressions (`22`, `ssh`, `1000-2000`).
    List(Vec<String>),
}

/// What a jail asks of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailRules {
    pub jail: String,
    pub ports: Ports,
    pub protocols: Vec<String>,
    /// `drop`, `reject`, or `reject with ...`.
    pub blocktype: String,
}

fn word_ok(w: &str) -> bool {
    !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl JailRules {
    /// Validates Fail2Ban's action options (`type`, `port`, `protocol`,
    /// `blocktype`) and turns them into nft syntax. Everything goes into an
    /// nft script, so only plain words are accepted.
    pub fn new(
        jail: &str,
        kind: &str,
        port: &str,
        protocol: &str,
        blocktype: &str,
    ) -> Result<JailRules, String> {
        let list = |s: &str| -> Vec<String> {
            s.split([',', ' ', '\t', '\n'])
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect()
        };
        let protocols = list(protocol);
        if protocols.is_empty() {
            return Err("protocol is empty (use tcp, udp, ...)".into());
        }
        if let Some(bad) = protocols.iter().find(|p| !word_ok(p)) {
            return Err(format!("protocol {bad:?} is not a protocol name"));
        }
        let ports = match kind.trim() {
            "allports" => Ports::All,
            "multiport" | "" => {
                let ports: Vec<String> = list(port).iter().map(|p| p.replace(':', "-")).collect();
                if ports.is_empty() {
                    return Err("port is empty (use a port, a service name or a range such as 1000:2000)".into());
                }
                if let Some(bad) = ports.iter().find(|p| !word_ok(p)) {
                    return Err(format!(
                        "port {bad:?} is not a port, service name or range"
                    ));
                }
                Ports::List(ports)
            }
            other => {
                return Err(format!(
                    "type = {other:?} is not supported by the nftables backend (use multiport or allports)"
                ))
            }
        };
        let blocktype = blocktype.split_whitespace().collect::<Vec<_>>().join(" ");
        let ok = blocktype == "drop"
            || blocktype == "reject"
            || (blocktype.starts_with("reject with ") && blocktype.split(' ').all(word_ok));
        if !ok {
            return Err(format!(
                "blocktype = {blocktype:?}: use drop, reject, or reject with ... (such as reject with tcp reset)"
            ));
        }
        Ok(JailRules {
            jail: jail.to_string(),
            ports,
            protocols,
            blocktype,
        })
    }
}

/// A set's name for a jail: the jail name reduced to what nft accepts
/// everywhere, made unique with a hash when that changed it.
pub fn set_name(jail: &str, v6: bool) -> String {
    let clean: String = jail
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = if clean == jail && jail.starts_with(|c: char| c.is_ascii_alphabetic()) {
        clean
    } else {
        let mut h: u32 = 0x811c_9dc5;
        for b in jail.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        format!("j_{clean}_{h:08x}")
    };
    format!("{base}_{}", if v6 { "v6" } else { "v4" })
}

/// What the firewall thread is told.
pub enum FwCmd {
    /// Start-up or reload begins: collect the jails' bans, write nothing
    /// until [`FwCmd::Expect`]'s jails have all restored theirs.
    Hold,
    /// These jails have started: once all of them have restored their
    /// bans, the table is rebuilt in one transaction (jails that did not
    /// come back are left out).
    Expect(Vec<String>),
    /// A jail's action started: its rules (replaces earlier ones).
    JailUp(JailRules),
    /// A ban restored from the database (part of the start-up rebuild).
    Restore {
        jail: String,
        key: IpNet,
        end: Option<f64>,
    },
    /// The jail has restored all its bans.
    Restored {
        jail: String,
    },
    Ban {
        jail: String,
        key: IpNet,
        end: Option<f64>,
    },
    Unban {
        jail: String,
        key: IpNet,
    },
    /// The jail stopped: its sets stay in the kernel (bans keep working)
    /// until the next rebuild without it.
    JailDown {
        jail: String,
    },
    /// Remove the table (`banhammer stop --flush`); replies when done.
    Flush(mpsc::Sender<Result<(), String>>),
    Status(tokio::sync::oneshot::Sender<FwStatus>),
    Stop,
}

/// How the firewall stands (for `status` and metrics).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FwStatus {
    pub backend: &'static str,
    pub table: String,
    pub jails: usize,
    pub elements: usize,
    /// Batches applied since start.
    pub batches: u64,
    /// Elements written since start.
    pub elements_written: u64,
    pub rebuilds: u64,
    pub errors: u64,
    /// The last `nft` error, while it is not resolved.
    pub last_error: Option<String>,
    /// Changes waiting for `nft` to work again.
    pub pending: usize,
}

/// A handle to the firewall thread.
#[derive(Clone)]
pub struct Firewall {
    tx: mpsc::Sender<FwCmd>,
}

impl Firewall {
    pub fn spawn(
        settings: NftSettings,
    ) -> std::io::Result<(Firewall, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
        let t = std::thread::Builder::new()
            .name("nftables".into())
            .spawn(move || Owner::new(settings).run(&rx))?;
        Ok((Firewall { tx }, t))
    }

    pub fn send(&self, cmd: FwCmd) {
        let _ = self.tx.send(cmd);
    }

    pub async fn status(&self) -> Option<FwStatus> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(FwCmd::Status(tx));
        rx.await.ok()
    }

    /// Removes the table; waits for the answer.
    pub fn flush(&self) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.send(FwCmd::Flush(tx));
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the nftables thread did not answer".to_string())?
    }
}

/// One family's set of a jail: the bans it must hold (key → end, `None`
/// for permanent).
#[derive(Debug, Default, Clone)]
struct BanSet {
    name: String,
    elements: BTreeMap<IpNet, Option<f64>>,
}

impl BanSet {
    /// The element around `key`, if one contains it (not `key` itself).
    fn container(&self, key: &IpNet) -> Option<IpNet> {
        (0..key.prefix_len()).rev().find_map(|len| {
            let outer = IpNet::new(key.addr(), len).ok()?.trunc();
            self.elements.contains_key(&outer).then_some(outer)
        })
    }

    /// Elements strictly inside `key`.
    fn inside(&self, key: &IpNet) -> Vec<IpNet> {
        let (lo, hi) = match key {
            IpNet::V4(n) => (
                IpNet::from(ipnet::Ipv4Net::new(n.network(), 0).unwrap_or_default()),
                IpNet::from(ipnet::Ipv4Net::new(n.broadcast(), 32).unwrap_or_default()),
            ),
            IpNet::V6(n) => (
                IpNet::from(ipnet::Ipv6Net::new(n.network(), 0).unwrap_or_default()),
                IpNet::from(ipnet::Ipv6Net::new(n.broadcast(), 128).unwrap_or_default()),
            ),
        };
        self.elements
            .range(lo..=hi)
            .map(|(k, _)| *k)
            .filter(|k| k != key && key.contains(k))
            .collect()
    }

    /// Whether `key` is (to be) in the kernel: held, and not inside
    /// another held element.
    fn in_kernel(&self, key: &IpNet) -> bool {
        self.elements.contains_key(key) && self.container(key).is_none()
    }
}

#[derive(Debug, Clone)]
struct JailTable {
    rules: JailRules,
    v4: BanSet,
    v6: BanSet,
    up: bool,
}

impl JailTable {
    fn new(rules: JailRules) -> JailTable {
        let jail = rules.jail.clone();
        JailTable {
            rules,
            v4: BanSet {
                name: set_name(&jail, false),
                ..BanSet::default()
            },
            v6: BanSet {
                name: set_name(&jail, true),
                ..BanSet::default()
            },
            up: true,
        }
    }

    fn set_mut(&mut self, key: &IpNet) -> &mut BanSet {
        match key {
            IpNet::V4(_) => &mut self.v4,
            IpNet::V6(_) => &mut self.v6,
        }
    }
}

fn element(key: &IpNet, end: Option<f64>, now: f64) -> Option<String> {
    let text = crate::jail::key_text(key);
    match end {
        None => Some(text),
        Some(e) => {
            let ms = ((e - now) * 1000.0).ceil();
            (ms >= 1.0).then(|| format!("{text} timeout {}ms", ms as u64))
        }
    }
}

/// The whole table, from scratch, in one transaction.
fn rebuild_script(
    jails: &BTreeMap<String, JailTable>,
    redirect: Option<&Redirect>,
    now: f64,
) -> String {
    let mut s = String::with_capacity(4096);
    s.push_str(&format!(
        "add table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n"
    ));
    for j in jails.values() {
        for (set, ty) in [(&j.v4, "ipv4_addr"), (&j.v6, "ipv6_addr")] {
            s.push_str(&format!(
                "  set {} {{\n    type {ty}; flags interval, timeout;\n",
                set.name
            ));
            let elems: Vec<String> = set
                .elements
                .iter()
                .filter(|(k, _)| set.container(k).is_none())
                .filter_map(|(k, e)| element(k, *e, now))
                .collect();
            if !elems.is_empty() {
                s.push_str("    elements = {\n      ");
                s.push_str(&elems.join(",\n      "));
                s.push_str("\n    }\n");
            }
            s.push_str("  }\n");
        }
    }
    let mut input = Vec::new();
    let mut forward = Vec::new();
    let mut nat = Vec::new();
    if let Some(r) = redirect {
        // a banned visitor redirected to the ban page must reach it, even
        // from a jail that closes every port
        input.push(format!("ct status dnat tcp dport {} accept", r.to));
    }
    for j in jails.values() {
        let r = &j.rules;
        for (fam, set) in [("ip", &j.v4.name), ("ip6", &j.v6.name)] {
            match &r.ports {
                Ports::All => {
                    let rule = format!(
                        "meta l4proto {{ {} }} {fam} saddr @{set} {}",
                        r.protocols.join(", "),
                        r.blocktype
                    );
                    input.push(rule.clone());
                    forward.push(rule);
                }
                Ports::List(ports) => {
                    let ports = ports.join(", ");
                    for p in &r.protocols {
                        input.push(format!(
                            "meta l4proto {p} th dport {{ {ports} }} {fam} saddr @{set} {}",
                            r.blocktype
                        ));
                        // the port the client asked for, also when it was
                        // translated on the way to a container
                        forward.push(format!(
                            "meta l4proto {p} ct original proto-dst {{ {ports} }} {fam} saddr @{set} {}",
                            r.blocktype
                        ));
                    }
                }
            }
            if let Some(rd) = redirect {
                let ports: Vec<String> = rd.ports.iter().map(u16::to_string).collect();
                nat.push(format!(
                    "{fam} saddr @{set} tcp dport {{ {} }} redirect to :{}",
                    ports.join(", "),
                    rd.to
                ));
            }
        }
    }
    let chain = |s: &mut String, name: &str, head: &str, rules: &[String]| {
        s.push_str(&format!("  chain {name} {{\n    {head}\n"));
        for r in rules {
            s.push_str(&format!("    {r}\n"));
        }
        s.push_str("  }\n");
    };
    chain(
        &mut s,
        "input",
        "type filter hook input priority filter - 10; policy accept;",
        &input,
    );
    chain(
        &mut s,
        "forward",
        "type filter hook forward priority filter - 10; policy accept;",
        &forward,
    );
    if redirect.is_some() {
        chain(
            &mut s,
            "banpage",
            "type nat hook prerouting priority dstnat - 10; policy accept;",
            &nat,
        );
    }
    s.push_str("}\n");
    s
}

/// Lines that put `key` into set `set` (or refresh its timeout), whether or
/// not it is there or has just expired.
fn add_lines(out: &mut Vec<String>, set: &str, key: &IpNet, end: Option<f64>, now: f64) {
    let Some(el) = element(key, end, now) else {
        return;
    };
    remove_lines(out, set, key);
    out.push(format!("add element inet {TABLE} {set} {{ {el} }}"));
}

/// Lines that take `key` out of set `set`, whether or not it is there.
fn remove_lines(out: &mut Vec<String>, set: &str, key: &IpNet) {
    let k = crate::jail::key_text(key);
    out.push(format!(
        "add element inet {TABLE} {set} {{ {k} timeout 1s }}"
    ));
    out.push(format!("delete element inet {TABLE} {set} {{ {k} }}"));
}

/// Runs `nft -f -` with `script`; the error is nft's own message.
fn run_nft(nft: &str, script: &str) -> Result<(), String> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("cannot run {nft:?}: not found (install the nftables package)")
            }
            _ => format!("cannot run {nft:?}: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // a write error shows up as nft's own failure below
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{nft}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let first: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect();
    let mut msg = first.join(" | ");
    if msg.contains("Operation not permitted") {
        msg.push_str(" (banhammer needs CAP_NET_ADMIN to change the firewall)");
    } else if msg.contains("Protocol not supported")
        || msg.contains("No such file or directory") && msg.contains("Could not process rule")
    {
        msg.push_str(" (does this kernel have nf_tables?)");
    }
    Err(format!("nft failed ({}): {msg}", out.status))
}

struct Owner {
    settings: NftSettings,
    jails: BTreeMap<String, JailTable>,
    /// Start-up or reload is collecting bans (until `held_until`).
    held: bool,
    held_until: Option<Instant>,
    /// The jails the hold waits for, once the daemon has named them.
    waiting: Option<HashSet<String>>,
    /// Jails that finished restoring during the hold.
    restored: HashSet<String>,
    rebuild: bool,
    pending: Vec<String>,
    pending_elements: u64,
    status: FwStatus,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The table exists (or we think so): a rebuild has succeeded.
    built: bool,
}

/// How long start-up waits for the jails' bans before it builds anyway.
const HOLD_WAIT: Duration = Duration::from_secs(30);

impl Owner {
    fn new(settings: NftSettings) -> Owner {
        Owner {
            settings,
            jails: BTreeMap::new(),
            held: false,
            held_until: None,
            waiting: None,
            restored: HashSet::new(),
            rebuild: false,
            pending: Vec::new(),
            pending_elements: 0,
            status: FwStatus {
                backend: "nftables",
                table: format!("inet {TABLE}"),
                ..FwStatus::default()
            },
            retry_at: None,
            backoff: Duration::from_millis(500),
            built: false,
        }
    }

    fn run(mut self, rx: &mpsc::Receiver<FwCmd>) {
        loop {
            let wait = self.next_wake();
            let first = match wait {
                None => rx.recv().map_err(|_| ()),
                Some(d) => match rx.recv_timeout(d) {
                    Ok(c) => Ok(c),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.tick();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
                },
            };
            let Ok(first) = first else { break };
            if !self.apply(first) {
                break;
            }
            // a burst: everything already queued goes into the same batch
            let mut stop = false;
            while let Ok(c) = rx.try_recv() {
                if !self.apply(c) {
                    stop = true;
                    break;
                }
            }
            self.tick();
            if stop {
                break;
            }
        }
        self.tick();
    }

    fn next_wake(&self) -> Option<Duration> {
        let now = Instant::now();
        let at = match (
            self.retry_at,
            self.held.then_some(self.held_until).flatten(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        at.map(|t| t.saturating_duration_since(now))
    }

    /// Applies one command to the model; false to stop.
    fn apply(&mut self, cmd: FwCmd) -> bool {
        let now = crate::jail::now();
        match cmd {
            FwCmd::Hold => {
                self.held = true;
                self.held_until = Some(Instant::now() + HOLD_WAIT);
                self.waiting = None;
                self.restored.clear();
            }
            FwCmd::Expect(names) => {
                self.waiting = Some(names.into_iter().collect());
            }
            FwCmd::JailUp(rules) => {
                let jail = rules.jail.clone();
                match self.jails.get_mut(&jail) {
                    Some(t) => {
                        // a restarted jail restores its bans afresh
                        t.rules = rules;
                        t.v4.elements.clear();
                        t.v6.elements.clear();
                        t.up = true;
                    }
                    None => {
                        self.jails.insert(jail.clone(), JailTable::new(rules));
                    }
                }
                self.restored.remove(&jail);
                self.rebuild = true;
            }
            FwCmd::Restore { jail, key, end } => {
                if !self.held {
                    // outside a start-up or reload: an ordinary ban
                    self.ban(&jail, key, end, now);
                } else if let Some(t) = self.jails.get_mut(&jail) {
                    t.set_mut(&key).elements.insert(key, end);
                }
            }
            FwCmd::Restored { jail } => {
                self.restored.insert(jail);
            }
            FwCmd::Ban { jail, key, end } => self.ban(&jail, key, end, now),
            FwCmd::Unban { jail, key } => self.unban(&jail, key, now),
            FwCmd::JailDown { jail } => {
                if let Some(t) = self.jails.get_mut(&jail) {
                    t.up = false;
                }
            }
            FwCmd::Flush(reply) => {
                let r = run_nft(
                    &self.settings.nft,
                    &format!("add table inet {TABLE}\ndelete table inet {TABLE}\n"),
                );
                if r.is_ok() {
                    tracing::info!(target: "banhammer.actions", table = %format!("inet {TABLE}"), "nftables table removed (flush)");
                    self.jails.clear();
                    self.pending.clear();
                    self.rebuild = false;
                    self.built = false;
                }
                let _ = reply.send(r);
            }
            FwCmd::Status(reply) => {
                let mut st = self.status.clone();
                st.jails = self.jails.len();
                st.elements = self
                    .jails
                    .values()
                    .map(|j| j.v4.elements.len() + j.v6.elements.len())
                    .sum();
                st.pending = self.pending.len() + usize::from(self.rebuild);
                let _ = reply.send(st);
            }
            FwCmd::Stop => return false,
        }
        true
    }

    fn ban(&mut self, jail: &str, key: IpNet, end: Option<f64>, now: f64) {
        let Some(t) = self.jails.get_mut(jail) else {
            tracing::warn!(target: "banhammer.actions", jail, ip = %key, "nftables: ban for a jail without rules; not enforced");
            return;
        };
        let set = t.set_mut(&key);
        set.elements.insert(key, end);
        if self.rebuild {
            return;
        }
        if set.container(&key).is_some() {
            // covered by a wider ban already in the kernel
            return;
        }
        for inner in set.inside(&key) {
            if set.container(&inner) == Some(key) {
                remove_lines(&mut self.pending, &set.name, &inner);
            }
        }
        let name = set.name.clone();
        add_lines(&mut self.pending, &name, &key, end, now);
        self.pending_elements += 1;
    }

    fn unban(&mut self, jail: &str, key: IpNet, now: f64) {
        let Some(t) = self.jails.get_mut(jail) else {
            return;
        };
        let set = t.set_mut(&key);
        let was_in_kernel = set.in_kernel(&key);
        if set.elements.remove(&key).is_none() || self.rebuild || !was_in_kernel {
            return;
        }
        remove_lines(&mut self.pending, &set.name, &key);
        // what the removed element covered is enforced on its own again
        for inner in set.inside(&key) {
            if set.container(&inner).is_none() {
                let end = set.elements.get(&inner).copied().flatten();
                add_lines(&mut self.pending, &set.name, &inner, end, now);
            }
        }
    }

    /// Writes what is pending, unless start-up is still collecting bans or
    /// a retry is not due.
    fn tick(&mut self) {
        let now_i = Instant::now();
        if self.held {
            let all_in = self
                .waiting
                .as_ref()
                .is_some_and(|w| w.iter().all(|j| self.restored.contains(j)));
            let late = self.held_until.is_some_and(|d| now_i >= d);
            if !all_in && !late {
                return;
            }
            if late && !all_in {
                tracing::warn!(target: "banhammer.actions", "nftables: jails did not finish restoring their bans in time; building the table with what has arrived");
            }
            self.held = false;
            // jails that did not come back leave the table now
            self.jails.retain(|_, j| j.up);
            self.rebuild = self.rebuild || self.built || !self.jails.is_empty();
        }
        if self.retry_at.is_some_and(|t| now_i < t) {
            return;
        }
        if !self.rebuild && self.pending.is_empty() {
            return;
        }
        let now = crate::jail::now();
        let (script, what) = if self.rebuild || !self.built {
            (
                rebuild_script(&self.jails, self.settings.redirect.as_ref(), now),
                true,
            )
        } else {
            let mut s = self.pending.join("\n");
            s.push('\n');
            (s, false)
        };
        let started = Instant::now();
        match run_nft(&self.settings.nft, &script) {
            Ok(()) => {
                self.status.batches += 1;
                if what {
                    let n: usize = self
                        .jails
                        .values()
                        .map(|j| j.v4.elements.len() + j.v6.elements.len())
                        .sum();
                    self.status.rebuilds += 1;
                    self.status.elements_written += n as u64;
                    tracing::info!(target: "banhammer.actions", jails = self.jails.len(), elements = n, ms = started.elapsed().as_millis() as u64, "nftables table inet banhammer built");
                } else {
                    self.status.elements_written += self.pending_elements;
                    tracing::debug!(target: "banhammer.actions", lines = self.pending.len(), ms = started.elapsed().as_millis() as u64, "nftables batch applied");
                }
                if self.status.last_error.take().is_some() {
                    tracing::info!(target: "banhammer.actions", "nftables works again; the table is up to date");
                }
                self.pending.clear();
                self.pending_elements = 0;
                self.rebuild = false;
                self.built = true;
                self.retry_at = None;
                self.backoff = Duration::from_millis(500);
            }
            Err(e) => {
                self.status.errors += 1;
                if what {
                    tracing::error!(target: "banhammer.actions", retry_in = ?self.backoff, "cannot build the nftables table: {e}; bans are kept in the database and will be applied when nft works");
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                } else {
                    // out of step with the kernel (edited by hand?):
                    // rebuild everything from the model, now
                    tracing::warn!(target: "banhammer.actions", "nftables batch failed: {e}; rebuilding the table");
                }
                self.status.last_error = Some(e);
                self.pending.clear();
                self.pending_elements = 0;
                self.rebuild = true;
                if !what {
                    self.tick();
                }
            }
        }
    }
}

/// The nftables action of one jail: hands its bans to the firewall thread.
pub struct NftAction {
    rules: JailRules,
    fw: Firewall,
}

impl NftAction {
    pub fn new(rules: JailRules, fw: Firewall) -> NftAction {
        NftAction { rules, fw }
    }

    fn key(ban: &BanInfo) -> Option<IpNet> {
        crate::jail::parse_key(&ban.ip)
    }
}

impl super::Action for NftAction {
    fn name(&self) -> &str {
        "nftables"
    }
    fn start(&mut self) -> Result<(), super::ActionError> {
        self.fw.send(FwCmd::JailUp(self.rules.clone()));
        Ok(())
    }
    fn ban(&mut self, ban: &BanInfo) -> Result<(), super::ActionError> {
        if let Some(key) = Self::key(ban) {
            self.fw.send(FwCmd::Ban {
                jail: self.rules.jail.clone(),
                key,
                end: ban.end,
            });
        }
        Ok(())
    }
    fn restore(&mut self, ban: &BanInfo) -> Result<(), super::ActionError> {
        if let Some(key) = Self::key(ban) {
            self.fw.send(FwCmd::Restore {
                jail: self.rules.jail.clone(),
                key,
                end: ban.end,
            });
        }
        Ok(())
    }
    fn restored(&mut self) -> Result<(), super::ActionError> {
        self.fw.send(FwCmd::Restored {
            jail: self.rules.jail.clone(),
        });
        Ok(())
    }
    fn unban(&mut self, ban: &BanInfo) -> Result<(), super::ActionError> {
        if let Some(key) = Self::key(ban) {
            self.fw.send(FwCmd::Unban {
                jail: self.rules.jail.clone(),
                key,
            });
        }
        Ok(())
    }
    fn stop(&mut self) -> Result<(), super::ActionError> {
        self.fw.send(FwCmd::JailDown {
            jail: self.rules.jail.clone(),
        });
        Ok(())
    }
}

/// Reads the elements of a jail's sets back from the kernel (`nft -j`):
/// for tests and `banhammer status`.
pub fn list_elements(nft: &str, jail: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        let set = set_name(jail, v6);
        let o = Command::new(nft)
            .args(["-j", "list", "set", "inet", TABLE, &set])
            .output()
            .map_err(|e| format!("{nft}: {e}"))?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).map_err(|e| format!("nft -j: {e}"))?;
        let sets = v["nftables"].as_array().cloned().unwrap_or_default();
        for s in sets {
            for e in s["set"]["elem"].as_array().cloned().unwrap_or_default() {
                let val = if e["elem"].is_object() {
                    &e["elem"]["val"]
                } else {
                    &e
                };
                let text = match val {
                    serde_json::Value::String(s) => s.clone(),
                    v if v["prefix"].is_object() => format!(
                        "{}/{}",
                        v["prefix"]["addr"].as_str().unwrap_or_default(),
                        v["prefix"]["len"]
                    ),
                    v => v.to_string(),
                };
                out.push(text);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(jail: &str) -> JailRules {
        JailRules::new(jail, "multiport", "ssh,2222", "tcp", "reject").unwrap()
    }

    fn net(s: &str) -> IpNet {
        crate::jail::parse_key(s).unwrap()
    }

    #[test]
    fn options_are_checked_before_they_reach_a_script() {
        assert!(JailRules::new("j", "multiport", "22; flush ruleset", "tcp", "drop").is_err());
        assert!(JailRules::new("j", "multiport", "22", "tcp }", "drop").is_err());
        assert!(JailRules::new("j", "multiport", "22", "tcp", "accept").is_err());
        assert!(JailRules::new("j", "weird", "22", "tcp", "drop").is_err());
        let r = JailRules::new(
            "j",
            "multiport",
            "0:65535",
            "tcp,udp",
            "reject with tcp reset",
        )
        .unwrap();
        assert_eq!(r.ports, Ports::List(vec!["0-65535".into()]));
        assert_eq!(r.protocols, ["tcp", "udp"]);
        assert_eq!(
            JailRules::new("j", "allports", "", "tcp", "drop")
                .unwrap()
                .ports,
            Ports::All
        );
    }

    #[test]
    fn set_names_are_safe_and_distinct() {
        assert_eq!(set_name("sshd", false), "sshd_v4");
        let a = set_name("my-jail", true);
        let b = set_name("my_jail", true);
        assert_ne!(a, b);
        assert!(
            a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'),
            "{a}"
        );
        assert!(set_name("9lives", false).starts_with("j_"));
    }

    #[test]
    fn the_rebuild_holds_every_ban_with_its_remaining_time() {
        let mut jails = BTreeMap::new();
        let mut t = JailTable::new(rules("sshd"));
        t.v4.elements.insert(net("192.0.2.1"), Some(1000.0 + 60.0));
        t.v4.elements.insert(net("192.0.2.2"), None);
        t.v4.elements.insert(net("192.0.2.3"), Some(999.0)); // over already
        t.v6.elements
            .insert(net("2001:db8::/64"), Some(1000.0 + 1.5));
        t.v6.elements.insert(net("2001:db8::7"), None); // inside the /64
        jails.insert("sshd".to_string(), t);
        let s = rebuild_script(
            &jails,
            Some(&Redirect {
                ports: vec![80, 8080],
                to: 8081,
            }),
            1000.0,
        );
        assert!(s.contains("192.0.2.1 timeout 60000ms"), "{s}");
        assert!(s.contains("192.0.2.2,") || s.contains("192.0.2.2\n"), "{s}");
        assert!(!s.contains("192.0.2.3"), "{s}");
        assert!(s.contains("2001:db8::/64 timeout 1500ms"), "{s}");
        assert!(
            !s.contains("2001:db8::7"),
            "overlapping element written: {s}"
        );
        assert!(
            s.contains("meta l4proto tcp th dport { ssh, 2222 } ip saddr @sshd_v4 reject"),
            "{s}"
        );
        assert!(
            s.contains("ct original proto-dst { ssh, 2222 } ip6 saddr @sshd_v6 reject"),
            "{s}"
        );
        assert!(
            s.contains("ip saddr @sshd_v4 tcp dport { 80, 8080 } redirect to :8081"),
            "{s}"
        );
        assert!(
            s.starts_with("add table inet banhammer\ndelete table inet banhammer\n"),
            "{s}"
        );
    }

    #[test]
    fn bans_and_unbans_are_written_so_that_they_cannot_fail_on_expired_elements() {
        let mut o = Owner::new(NftSettings::default());
        o.apply(FwCmd::JailUp(rules("sshd")));
        o.rebuild = false;
        o.built = true;
        o.ban(
            "sshd",
            net("192.0.2.9"),
            Some(crate::jail::now() + 600.0),
            crate::jail::now(),
        );
        assert_eq!(o.pending.len(), 3, "{:?}", o.pending);
        assert!(o.pending[0].ends_with("{ 192.0.2.9 timeout 1s }"));
        assert!(o.pending[1].starts_with("delete element inet banhammer sshd_v4"));
        assert!(o.pending[2].contains("192.0.2.9 timeout 6"));
        o.pending.clear();
        o.unban("sshd", net("192.0.2.9"), crate::jail::now());
        assert_eq!(o.pending.len(), 2, "{:?}", o.pending);
    }

    #[test]
    fn a_wider_ban_replaces_the_ones_inside_and_gives_them_back_when_it_ends() {
        let mut o = Owner::new(NftSettings::default());
        o.apply(FwCmd::JailUp(rules("web")));
        o.rebuild = false;
        o.built = true;
        let now = crate::jail::now();
        o.ban("web", net("2001:db8::5"), None, now);
        o.pending.clear();
        o.ban("web", net("2001:db8::/64"), Some(now + 60.0), now);
        let script = o.pending.join("\n");
        let del_inner = script
            .find("delete element inet banhammer web_v6 { 2001:db8::5 }")
            .unwrap();
        let add_outer = script
            .find("add element inet banhammer web_v6 { 2001:db8::/64 timeout 6")
            .unwrap();
        assert!(del_inner < add_outer, "{script}");
        o.pending.clear();
        // an address inside the banned network: nothing to write
        o.ban("web", net("2001:db8::9"), None, now);
        assert!(o.pending.is_empty(), "{:?}", o.pending);
        o.unban("web", net("2001:db8::/64"), now);
        let script = o.pending.join("\n");
        assert!(
            script.contains("add element inet banhammer web_v6 { 2001:db8::5 }"),
            "{script}"
        );
        assert!(
            script.contains("add element inet banhammer web_v6 { 2001:db8::9 }"),
            "{script}"
        );
    }
}
