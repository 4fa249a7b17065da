//! The firewall's model and its owner thread, shared by the kernel
//! backends (native nftables, iptables with ipset).
//!
//! Owns what the kernel must hold for every jail that bans through a
//! backend: its rules and its two sets (IPv4, IPv6) of bans with their
//! ends. One thread per backend receives [`FwCmd`]s from the jails'
//! actions, applies them to the model and hands the changes to its
//! [`Kernel`] as one batch per burst. The whole table is rebuilt from the
//! model in one transaction when jails start (at start-up: once every jail
//! has restored its bans from the database) and whenever a batch fails; a
//! failing kernel command is reported and retried with backoff, and nothing
//! is forgotten meanwhile (the bans are in the database already, and in the
//! model). Where a backend cannot hold overlapping elements in one set (nft
//! interval sets), an element inside another (an address inside a banned
//! /64) is kept in the model only, and written when the one around it goes.
//! Where it limits timeouts (ipset), longer bans are written with the
//! longest timeout and refreshed before it runs out.

use super::BanInfo;
use ipnet::IpNet;
use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a kernel backend does with the model.
pub trait Kernel: Send + 'static {
    /// `nftables`, `iptables-ipset`.
    fn backend(&self) -> &'static str;
    /// What it owns in the kernel, for messages (`inet banhammer`).
    fn table(&self) -> String;
    fn set_name(&self, jail: &str, v6: bool) -> String;
    /// Whether one set may hold an element inside another.
    fn overlap_ok(&self) -> bool;
    /// The longest element timeout the kernel takes, in seconds.
    fn max_timeout(&self) -> Option<f64> {
        None
    }
    /// Writes everything from scratch, in one transaction where the
    /// kernel allows.
    fn rebuild(&mut self, jails: &BTreeMap<String, JailTable>, now: f64) -> Result<(), String>;
    /// Batch lines that put `key` into `set` (or refresh its timeout),
    /// whether or not it is there or has just expired.
    fn add_lines(&self, out: &mut Vec<String>, set: &str, key: &IpNet, end: Option<f64>, now: f64);
    /// Batch lines that take `key` out of `set`, whether or not it is there.
    fn remove_lines(&self, out: &mut Vec<String>, set: &str, key: &IpNet);
    fn apply(&mut self, lines: &[String]) -> Result<(), String>;
    /// Removes everything the backend made (`banhammer stop --flush`).
    fn flush(&mut self) -> Result<(), String>;
}

pub(super) fn word_ok(w: &str) -> bool {
    !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where banned visitors' web traffic goes: `[web] banpage_ports` are
/// redirected to the ban page listener's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub ports: Vec<u16>,
    pub to: u16,
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
                    return Err(
                        "port is empty (use a port, a service name or a range such as 1000:2000)"
                            .into(),
                    );
                }
                if let Some(bad) = ports.iter().find(|p| !word_ok(p)) {
                    return Err(format!("port {bad:?} is not a port, service name or range"));
                }
                Ports::List(ports)
            }
            other => {
                return Err(format!(
                    "type = {other:?} is not supported (use multiport or allports)"
                ))
            }
        };
        let blocktype = normal_blocktype(blocktype);
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

/// A block type in nft's words: Fail2Ban's nftables values (`drop`,
/// `reject`, `reject with tcp reset`) as they are, its iptables values
/// (`DROP`, `REJECT --reject-with icmp-port-unreachable`, `REJECT
/// --reject-with tcp-reset`) translated.
fn normal_blocktype(b: &str) -> String {
    let words: Vec<&str> = b.split_whitespace().collect();
    match words.as_slice() {
        [one] if one.eq_ignore_ascii_case("drop") => "drop".into(),
        [one] if one.eq_ignore_ascii_case("reject") => "reject".into(),
        [r, "--reject-with", kind] if r.eq_ignore_ascii_case("reject") => match *kind {
            "icmp-port-unreachable" | "icmp6-port-unreachable" => "reject".into(),
            "tcp-reset" => "reject with tcp reset".into(),
            other => format!(
                "reject with icmpx type {}",
                other
                    .trim_start_matches("icmp-")
                    .trim_start_matches("icmp6-")
            ),
        },
        _ => words.join(" "),
    }
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
    /// Starts the owner thread of `kernel`.
    pub fn spawn<K: Kernel>(kernel: K) -> std::io::Result<(Firewall, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
        let t = std::thread::Builder::new()
            .name(kernel.backend().into())
            .spawn(move || Owner::new(kernel).run(&rx))?;
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
            .map_err(|_| "the firewall thread did not answer".to_string())?
    }
}

/// One family's set of a jail: the bans it must hold (key → end, `None`
/// for permanent).
#[derive(Debug, Default, Clone)]
pub struct BanSet {
    pub name: String,
    pub elements: BTreeMap<IpNet, Option<f64>>,
}

impl BanSet {
    /// The element around `key`, if one contains it (not `key` itself).
    pub fn container(&self, key: &IpNet) -> Option<IpNet> {
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
    pub fn in_kernel(&self, key: &IpNet) -> bool {
        self.elements.contains_key(key) && self.container(key).is_none()
    }
}

/// A jail's part of the table.
#[derive(Debug, Clone)]
pub struct JailTable {
    pub rules: JailRules,
    pub v4: BanSet,
    pub v6: BanSet,
    up: bool,
}

impl JailTable {
    fn new(rules: JailRules, kernel: &dyn Kernel) -> JailTable {
        let jail = rules.jail.clone();
        JailTable {
            rules,
            v4: BanSet {
                name: kernel.set_name(&jail, false),
                ..BanSet::default()
            },
            v6: BanSet {
                name: kernel.set_name(&jail, true),
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

struct Owner<K: Kernel> {
    kernel: K,
    /// When long bans are next rewritten (kernels that limit timeouts).
    refresh_at: Option<Instant>,
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
/// How often bans longer than the kernel's longest timeout are rewritten.
const REFRESH_EVERY: Duration = Duration::from_secs(3600);

impl<K: Kernel> Owner<K> {
    fn new(kernel: K) -> Owner<K> {
        Owner {
            refresh_at: kernel.max_timeout().map(|_| Instant::now() + REFRESH_EVERY),
            status: FwStatus {
                backend: kernel.backend(),
                table: kernel.table(),
                ..FwStatus::default()
            },
            kernel,
            jails: BTreeMap::new(),
            held: false,
            held_until: None,
            waiting: None,
            restored: HashSet::new(),
            rebuild: false,
            pending: Vec::new(),
            pending_elements: 0,
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
        [
            self.retry_at,
            self.held.then_some(self.held_until).flatten(),
            self.refresh_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
    }

    /// Rewrites the bans that outlast the kernel's longest timeout.
    fn refresh_long_bans(&mut self, now: f64) {
        let Some(max) = self.kernel.max_timeout() else {
            return;
        };
        self.refresh_at = Some(Instant::now() + REFRESH_EVERY);
        if self.rebuild {
            return;
        }
        let margin = REFRESH_EVERY.as_secs_f64() * 2.0;
        for t in self.jails.values() {
            for set in [&t.v4, &t.v6] {
                for (k, e) in &set.elements {
                    let long = e.is_some_and(|e| e - now > max - margin);
                    if long && set.container(k).is_none() {
                        self.kernel
                            .add_lines(&mut self.pending, &set.name, k, *e, now);
                    }
                }
            }
        }
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
                        let t = JailTable::new(rules, &self.kernel);
                        self.jails.insert(jail.clone(), t);
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
                let r = self.kernel.flush();
                if r.is_ok() {
                    tracing::info!(target: "banhammer.actions", backend = self.kernel.backend(), table = %self.kernel.table(), "firewall table removed (flush)");
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
            tracing::warn!(target: "banhammer.actions", jail, ip = %key, "ban for a jail without firewall rules; not enforced");
            return;
        };
        let set = t.set_mut(&key);
        set.elements.insert(key, end);
        if self.rebuild {
            return;
        }
        let overlap_ok = self.kernel.overlap_ok();
        if !overlap_ok && set.container(&key).is_some() {
            // covered by a wider ban already in the kernel
            return;
        }
        if !overlap_ok {
            for inner in set.inside(&key) {
                if set.container(&inner) == Some(key) {
                    self.kernel
                        .remove_lines(&mut self.pending, &set.name, &inner);
                }
            }
        }
        let name = set.name.clone();
        self.kernel
            .add_lines(&mut self.pending, &name, &key, end, now);
        self.pending_elements += 1;
    }

    fn unban(&mut self, jail: &str, key: IpNet, now: f64) {
        let Some(t) = self.jails.get_mut(jail) else {
            return;
        };
        let set = t.set_mut(&key);
        let overlap_ok = self.kernel.overlap_ok();
        let was_in_kernel = overlap_ok || set.in_kernel(&key);
        let Some(end) = set.elements.remove(&key) else {
            return;
        };
        if self.rebuild || !was_in_kernel {
            return;
        }
        // a ban that ran out has left the kernel by itself: nothing to write
        let ran_out = end.is_some_and(|e| e <= now + 0.5);
        if !ran_out {
            self.kernel.remove_lines(&mut self.pending, &set.name, &key);
        }
        if overlap_ok {
            return;
        }
        // what the removed element covered is enforced on its own again
        for inner in set.inside(&key) {
            if set.container(&inner).is_none() {
                let end = set.elements.get(&inner).copied().flatten();
                self.kernel
                    .add_lines(&mut self.pending, &set.name, &inner, end, now);
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
                tracing::warn!(target: "banhammer.actions", "jails did not finish restoring their bans in time; building the firewall table with what has arrived");
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
        if self.refresh_at.is_some_and(|t| now_i >= t) {
            self.refresh_long_bans(now);
        }
        if !self.rebuild && self.pending.is_empty() {
            return;
        }
        let what = self.rebuild || !self.built;
        let started = Instant::now();
        let result = if what {
            self.kernel.rebuild(&self.jails, now)
        } else {
            self.kernel.apply(&self.pending)
        };
        let backend = self.kernel.backend();
        let table = self.kernel.table();
        match result {
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
                    tracing::info!(target: "banhammer.actions", jails = self.jails.len(), elements = n, ms = started.elapsed().as_millis() as u64, "{backend} table {table} built");
                } else {
                    self.status.elements_written += self.pending_elements;
                    tracing::debug!(target: "banhammer.actions", lines = self.pending.len(), ms = started.elapsed().as_millis() as u64, "{backend} batch applied");
                }
                if self.status.last_error.take().is_some() {
                    tracing::info!(target: "banhammer.actions", "{backend} works again; the table is up to date");
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
                    tracing::error!(target: "banhammer.actions", retry_in = ?self.backoff, "cannot build the {backend} table {table}: {e}; bans are kept in the database and will be applied when it works");
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                } else {
                    // out of step with the kernel (edited by hand?):
                    // rebuild everything from the model, now
                    tracing::warn!(target: "banhammer.actions", "{backend} batch failed: {e}; rebuilding the table");
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

/// A jail's action on a kernel backend: hands its bans to the backend's
/// owner thread.
pub struct SetAction {
    name: &'static str,
    rules: JailRules,
    fw: Firewall,
}

impl SetAction {
    pub fn new(name: &'static str, rules: JailRules, fw: Firewall) -> SetAction {
        SetAction { name, rules, fw }
    }

    fn key(ban: &BanInfo) -> Option<IpNet> {
        crate::jail::parse_key(&ban.ip)
    }
}

impl super::Action for SetAction {
    fn name(&self) -> &str {
        self.name
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::nft::{rebuild_script, set_name, NftKernel};

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
        let mut t = JailTable::new(rules("sshd"), &NftKernel::default());
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
        let mut o = Owner::new(NftKernel::default());
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
        let mut o = Owner::new(NftKernel::default());
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
            .find("add element inet banhammer web_v6net { 2001:db8::/64 timeout 6")
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
