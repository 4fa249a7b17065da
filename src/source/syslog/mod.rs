//! The syslog receiver: listeners (UDP, TCP, TLS) that accept messages
//! from allowed senders, and the routes that hand each message to the
//! jails whose selector takes it.
//!
//! Three layers, as RFC 6587 separates them: transport ([`udp`], [`tcp`]),
//! framing ([`framing`], streams only: a datagram is one message) and
//! parsing ([`parse`]). Every problem is counted in [`SyslogStats`];
//! nothing stops a listener but shutdown.
//!
//! Each `backend = syslog` jail gets a bounded queue and a worker thread
//! that runs the jail's filter on batches of messages. A full queue makes
//! TCP connections wait (backpressure) and UDP drop (counted): the UDP
//! socket is never blocked by slow matching.

pub mod framing;
pub mod parse;
pub mod tcp;
pub mod udp;

use crate::config::syslog::{Listen, SyslogConfig, Transport};
use crate::jail::{JailMsg, Line, Matcher, Origin};
use ipnet::IpNet;
use parse::{ParseNotes, SyslogMessage};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// Which received messages a jail takes (`backend = syslog[app=...,
/// facility=..., host=...]`); an empty list takes every value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    /// Globs on the app name (`sshd`, `postfix/*`).
    pub apps: Vec<String>,
    /// Facility codes.
    pub facilities: Vec<u8>,
    /// Sending hosts: CIDRs match the peer address, globs the header's
    /// host name.
    pub hosts: Vec<String>,
}

#[derive(Debug)]
struct CompiledSelector {
    apps: Vec<glob::Pattern>,
    facilities: Vec<u8>,
    nets: Vec<IpNet>,
    names: Vec<glob::Pattern>,
}

impl Selector {
    fn compile(&self) -> Result<CompiledSelector, String> {
        let pattern =
            |g: &String| glob::Pattern::new(g).map_err(|e| format!("syslog selector {g:?}: {e}"));
        let mut nets = Vec::new();
        let mut names = Vec::new();
        for h in &self.hosts {
            match h
                .parse::<IpNet>()
                .or_else(|_| h.parse::<IpAddr>().map(IpNet::from))
            {
                Ok(n) => nets.push(n),
                Err(_) => names.push(pattern(h)?),
            }
        }
        Ok(CompiledSelector {
            apps: self.apps.iter().map(pattern).collect::<Result<_, _>>()?,
            facilities: self.facilities.clone(),
            nets,
            names,
        })
    }
}

impl CompiledSelector {
    fn takes(&self, m: &SyslogMessage) -> bool {
        let app_ok = self.apps.is_empty()
            || m.app
                .as_deref()
                .is_some_and(|a| self.apps.iter().any(|p| p.matches(a)));
        let facility_ok =
            self.facilities.is_empty() || m.facility.is_some_and(|f| self.facilities.contains(&f));
        let host_ok = (self.nets.is_empty() && self.names.is_empty())
            || self.nets.iter().any(|n| n.contains(&m.peer))
            || m.host
                .as_deref()
                .is_some_and(|h| self.names.iter().any(|p| p.matches(h)));
        app_ok && facility_ok && host_ok
    }
}

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        /// What the receiver saw, counted since start.
        #[derive(Debug, Default)]
        pub struct SyslogStats {
            $(#[doc = $doc] pub $name: AtomicU64,)*
        }

        /// A snapshot of [`SyslogStats`].
        #[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
        pub struct SyslogCounts {
            $(#[doc = $doc] pub $name: u64,)*
        }

        impl SyslogStats {
            pub fn snapshot(&self) -> SyslogCounts {
                SyslogCounts { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl SyslogCounts {
            /// (name, value) pairs, in declaration order.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters! {
    received: "Messages accepted (framed, from an allowed sender).",
    delivered: "Messages handed to at least one jail.",
    unrouted: "Messages no jail's selector took.",
    queue_full: "UDP messages dropped because a jail's queue (or the UDP parser's backlog) was full.",
    rejected_senders: "Datagrams and connections from senders not in allowed_senders.",
    oversized: "Messages longer than max_message_size (dropped).",
    bad_framing: "Frames that did not start where one should (wrong octet counts), dropped up to the next line.",
    truncated: "Connections that ended inside an octet-counted frame.",
    invalid_utf8: "Messages with invalid UTF-8 (replaced, then matched).",
    unparsed: "Messages that are neither RFC 5424 nor RFC 3164 (kept whole, received time).",
    connections: "TCP and TLS connections accepted.",
    connections_refused: "Connections refused at max_connections.",
    timeouts: "Connections closed for idling or for a frame or handshake too slow.",
    tls_errors: "Failed TLS handshakes.",
}

pub fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A jail's queue: batches of messages, bounded by the number of messages
/// in them (`queue`). A sender takes room for a batch before sending it;
/// the jail's worker gives the room back as it takes batches out.
#[derive(Clone)]
struct JailQueue {
    tx: mpsc::UnboundedSender<Vec<Arc<SyslogMessage>>>,
    room: Arc<Semaphore>,
    /// The most messages queued at once.
    capacity: usize,
}

impl JailQueue {
    /// Queues `batch`, waiting for room (in parts of at most `capacity`
    /// messages); returns how many messages were queued: all, unless the
    /// jail's worker has gone.
    async fn send(&self, mut batch: Vec<Arc<SyslogMessage>>) -> usize {
        let mut queued = 0;
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(self.capacity));
            let n = batch.len();
            match self
                .room
                .acquire_many(u32::try_from(n).unwrap_or(u32::MAX))
                .await
            {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
            if self.tx.send(batch).is_err() {
                break;
            }
            queued += n;
            batch = rest;
        }
        queued
    }

    /// Queues as much of `batch` as there is room for, now; returns how
    /// many messages were queued (the rest are dropped).
    fn send_now(&self, mut batch: Vec<Arc<SyslogMessage>>) -> usize {
        let room = self.room.available_permits().min(batch.len());
        if room == 0 {
            return 0;
        }
        // another sender may have taken the room meanwhile: then all drop
        let Ok(permit) = self
            .room
            .try_acquire_many(u32::try_from(room).unwrap_or(u32::MAX))
        else {
            return 0;
        };
        permit.forget();
        batch.truncate(room);
        match self.tx.send(batch) {
            Ok(()) => room,
            Err(_) => 0,
        }
    }
}

struct Route {
    jail: String,
    selector: CompiledSelector,
    queue: JailQueue,
}

/// What listeners share: the settings, the counters and the routes.
pub struct Receiver {
    pub cfg: SyslogConfig,
    pub stats: SyslogStats,
    routes: RwLock<Vec<Route>>,
}

/// Messages parsed together (one read of a connection, one `recvmmsg`),
/// with what parsing noticed about each.
pub type Parsed = Vec<(SyslogMessage, ParseNotes)>;

/// Each taking jail's queue with the positions of the messages it takes.
type Parts = Vec<(JailQueue, Vec<usize>)>;

impl Receiver {
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let ip = crate::jail::ignore::canonical(ip);
        self.cfg.allowed_senders.iter().any(|n| n.contains(&ip))
    }

    fn note(&self, notes: ParseNotes) {
        if notes.invalid_utf8 {
            add(&self.stats.invalid_utf8);
        }
        if notes.unparsed {
            add(&self.stats.unparsed);
        }
    }

    /// Each jail's part of a batch: its queue and the positions in
    /// `parsed` of the messages its selector takes. Counts the messages
    /// no jail takes.
    fn split(&self, parsed: Parsed) -> (Vec<Arc<SyslogMessage>>, Parts) {
        let routes = match self.routes.read() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        let mut parts: Parts = routes
            .iter()
            .map(|r| (r.queue.clone(), Vec::with_capacity(parsed.len())))
            .collect();
        let mut messages = Vec::with_capacity(parsed.len());
        let mut unrouted = 0u64;
        for (i, (m, notes)) in parsed.into_iter().enumerate() {
            self.note(notes);
            let mut taken = false;
            for (route, (_, part)) in routes.iter().zip(parts.iter_mut()) {
                if route.selector.takes(&m) {
                    part.push(i);
                    taken = true;
                }
            }
            unrouted += u64::from(!taken);
            messages.push(Arc::new(m));
        }
        self.stats.unrouted.fetch_add(unrouted, Ordering::Relaxed);
        parts.retain(|(_, part)| !part.is_empty());
        (messages, parts)
    }

    /// Hands a batch to its jails without waiting (UDP): what does not fit
    /// a jail's queue is dropped for that jail, counted.
    pub fn route_now(&self, parsed: Parsed) {
        let (messages, parts) = self.split(parsed);
        let mut delivered = vec![false; messages.len()];
        for (queue, part) in parts {
            let batch = part.iter().map(|&i| messages[i].clone()).collect();
            let queued = queue.send_now(batch);
            part[..queued].iter().for_each(|&i| delivered[i] = true);
            self.stats
                .queue_full
                .fetch_add((part.len() - queued) as u64, Ordering::Relaxed);
        }
        self.count_delivered(&delivered);
    }

    /// Hands a batch to its jails, waiting for room (TCP, TLS).
    pub async fn route(&self, parsed: Parsed) {
        let (messages, parts) = self.split(parsed);
        let mut delivered = vec![false; messages.len()];
        for (queue, part) in parts {
            let batch = part.iter().map(|&i| messages[i].clone()).collect();
            let queued = queue.send(batch).await;
            part[..queued].iter().for_each(|&i| delivered[i] = true);
        }
        self.count_delivered(&delivered);
    }

    fn count_delivered(&self, delivered: &[bool]) {
        let n = delivered.iter().filter(|d| **d).count();
        self.stats.delivered.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("[syslog] cannot listen on {listen}: {cause}")]
    Bind {
        listen: Listen,
        cause: std::io::Error,
    },
    #[error("[syslog] {0}")]
    Tls(String),
    #[error("jail '{jail}': {msg}")]
    Jail { jail: String, msg: String },
}

/// The running receiver: its listeners and the jails it feeds.
pub struct SyslogHub {
    receiver: Arc<Receiver>,
    cancel: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The addresses actually bound (port 0 resolved).
    pub bound: Vec<Listen>,
}

/// Messages a jail worker takes from its queue at once.
const BATCH: usize = 4096;

/// A jail worker's nice value (a lower priority than the listeners').
const WORKER_NICE: i32 = 5;

impl SyslogHub {
    /// A receiver for `cfg`, not listening yet: add the jails first, then
    /// [`Self::listen`], so no message arrives before its jail can take it.
    pub fn new(cfg: &SyslogConfig, cancel: CancellationToken) -> SyslogHub {
        SyslogHub {
            receiver: Arc::new(Receiver {
                cfg: cfg.clone(),
                stats: SyslogStats::default(),
                routes: RwLock::new(Vec::new()),
            }),
            cancel,
            threads: Vec::new(),
            tasks: Vec::new(),
            bound: Vec::new(),
        }
    }

    /// Binds every listener (an error names the one that failed) and starts
    /// serving. Call inside the runtime.
    pub async fn listen(&mut self) -> Result<(), SyslogError> {
        let cfg = self.receiver.cfg.clone();
        let tls = if cfg.listen.iter().any(|l| l.transport == Transport::Tls) {
            Some(tcp::tls_acceptor(&cfg)?)
        } else {
            None
        };
        for l in &cfg.listen {
            let bind = |cause| SyslogError::Bind { listen: *l, cause };
            let addr = match l.transport {
                Transport::Udp => {
                    let (t, addr) = udp::spawn(l.addr, self.receiver.clone(), self.cancel.clone())
                        .map_err(bind)?;
                    self.threads.push(t);
                    addr
                }
                Transport::Tcp | Transport::Tls => {
                    let acceptor = match l.transport {
                        Transport::Tls => tls.clone(),
                        _ => None,
                    };
                    let (t, addr) =
                        tcp::spawn(l.addr, acceptor, self.receiver.clone(), self.cancel.clone())
                            .await
                            .map_err(bind)?;
                    self.tasks.push(t);
                    addr
                }
            };
            let l = Listen {
                transport: l.transport,
                addr,
            };
            tracing::info!(target: "banhammer.syslog", listen = %l, "Listening for syslog");
            self.bound.push(l);
        }
        Ok(())
    }

    pub fn config(&self) -> &SyslogConfig {
        &self.receiver.cfg
    }

    pub fn counts(&self) -> SyslogCounts {
        self.receiver.stats.snapshot()
    }

    /// The shared receiver (its counters, for metrics).
    pub fn receiver(&self) -> Arc<Receiver> {
        self.receiver.clone()
    }

    /// Feeds a jail: the messages its selector takes go through its filter
    /// on a worker thread, and what is found goes to `jail`.
    pub fn add_jail(
        &self,
        name: &str,
        selector: &Selector,
        matcher: Arc<Matcher>,
        jail: mpsc::Sender<JailMsg>,
    ) -> Result<std::thread::JoinHandle<()>, SyslogError> {
        let err = |msg: String| SyslogError::Jail {
            jail: name.to_string(),
            msg,
        };
        let selector = selector.compile().map_err(err)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let capacity = self.receiver.cfg.queue.clamp(1, Semaphore::MAX_PERMITS);
        let queue = JailQueue {
            tx,
            room: Arc::new(Semaphore::new(capacity)),
            capacity,
        };
        let room = queue.room.clone();
        let t = std::thread::Builder::new()
            .name(format!("syslog/{name}"))
            .spawn(move || {
                // a backlog worker: the listeners come first when CPUs are short
                crate::source::set_thread_nice(WORKER_NICE);
                feed_jail(rx, &room, &matcher, &jail)
            })
            .map_err(|e| err(e.to_string()))?;
        let mut routes = match self.receiver.routes.write() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        routes.retain(|r| r.jail != name);
        routes.push(Route {
            jail: name.to_string(),
            selector,
            queue,
        });
        Ok(t)
    }

    /// Stops feeding a jail (its worker ends once its queue is empty).
    pub fn remove_jail(&self, name: &str) {
        let mut routes = match self.receiver.routes.write() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        routes.retain(|r| r.jail != name);
    }

    /// Stops the listeners and waits for them, then drops every route, so
    /// that the jails' worker threads see their input end (the receiver
    /// itself may live on in the metrics).
    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        match self.receiver.routes.write() {
            Ok(mut r) => r.clear(),
            Err(p) => p.into_inner().clear(),
        }
    }
}

/// A jail's worker: batches from the queue, through the filter, to the jail.
fn feed_jail(
    mut rx: mpsc::UnboundedReceiver<Vec<Arc<SyslogMessage>>>,
    room: &Semaphore,
    matcher: &Matcher,
    jail: &mpsc::Sender<JailMsg>,
) {
    // senders waiting for room see the worker gone, also on a panic
    struct Close<'a>(&'a Semaphore);
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _close = Close(room);
    let mut batch: Vec<Arc<SyslogMessage>> = Vec::with_capacity(BATCH);
    let take = |batch: &mut Vec<Arc<SyslogMessage>>, part: Vec<Arc<SyslogMessage>>| {
        room.add_permits(part.len());
        batch.extend(part);
    };
    while let Some(first) = rx.blocking_recv() {
        take(&mut batch, first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(part) => take(&mut batch, part),
                Err(_) => break,
            }
        }
        // one Origin for a run of messages from the same sender
        let mut origin: Option<Arc<Origin>> = None;
        let lines: Vec<Line> = batch
            .drain(..)
            .map(|m| {
                let same = origin
                    .as_ref()
                    .is_some_and(|o| o.peer == m.peer && o.host == m.host);
                if !same {
                    origin = Some(Arc::new(Origin {
                        host: m.host.clone(),
                        peer: m.peer,
                    }));
                }
                Line {
                    text: m.line().into(),
                    time: Some(m.time),
                    live: true,
                    origin: origin.clone(),
                }
            })
            .collect();
        let msg = JailMsg::Chunk {
            lines: lines.len() as u64,
            found: matcher.scan(&lines),
            checkpoint: None,
        };
        if jail.blocking_send(msg).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A receiver with one route, `selector`, whose queue holds `capacity`
    /// messages; the test plays the jail's worker.
    fn receiver(
        capacity: usize,
        selector: Selector,
    ) -> (
        Arc<Receiver>,
        mpsc::UnboundedReceiver<Vec<Arc<SyslogMessage>>>,
        Arc<Semaphore>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(capacity));
        let receiver = Receiver {
            cfg: SyslogConfig::default(),
            stats: SyslogStats::default(),
            routes: RwLock::new(vec![Route {
                jail: "sshd".into(),
                selector: selector.compile().expect("selector"),
                queue: JailQueue {
                    tx,
                    room: room.clone(),
                    capacity,
                },
            }]),
        };
        (Arc::new(receiver), rx, room)
    }

    fn messages(app: &str, n: usize) -> Parsed {
        (0..n)
            .map(|i| {
                let raw = format!("<38>Nov 22 09:59:58 web1 {app}[{i}]: message {i}");
                parse::parse(
                    raw.as_bytes(),
                    IpAddr::from([127, 0, 0, 1]),
                    chrono::Utc::now(),
                    parse::SyslogZone::Local,
                )
            })
            .collect()
    }

    fn texts(batch: &[Arc<SyslogMessage>]) -> Vec<String> {
        batch.iter().map(|m| m.text.clone()).collect()
    }

    #[test]
    fn a_full_queue_drops_datagrams_and_counts_them() {
        let (r, mut rx, room) = receiver(3, Selector::default());
        r.route_now(messages("sshd", 5));
        let c = r.stats.snapshot();
        assert_eq!((c.delivered, c.queue_full), (3, 2));
        let batch = rx.try_recv().expect("a batch");
        assert_eq!(texts(&batch), ["message 0", "message 1", "message 2"]);
        // nothing taken out yet: no room for more
        r.route_now(messages("sshd", 2));
        assert_eq!(r.stats.snapshot().queue_full, 4);
        assert!(rx.try_recv().is_err());
        // the worker takes the batch out and gives its room back
        room.add_permits(batch.len());
        r.route_now(messages("sshd", 1));
        let c = r.stats.snapshot();
        assert_eq!((c.delivered, c.queue_full), (4, 4));
        assert_eq!(rx.try_recv().expect("a batch").len(), 1);
    }

    #[test]
    fn messages_no_selector_takes_are_counted_not_queued() {
        let selector = Selector {
            apps: vec!["sshd".into()],
            ..Selector::default()
        };
        let (r, mut rx, _room) = receiver(10, selector);
        let mut batch = messages("nginx", 2);
        batch.extend(messages("sshd", 1));
        r.route_now(batch);
        let c = r.stats.snapshot();
        assert_eq!((c.delivered, c.unrouted, c.queue_full), (1, 2, 0));
        assert_eq!(
            rx.try_recv().expect("a batch")[0].app.as_deref(),
            Some("sshd")
        );
    }

    /// Routes `n` messages as a connection does, in a task of its own,
    /// which must still be waiting for room 50 ms later.
    async fn waiting_route(r: &Arc<Receiver>, n: usize) -> tokio::task::JoinHandle<()> {
        let sender = tokio::spawn({
            let r = r.clone();
            async move { r.route(messages("sshd", n)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sender.is_finished(), "waits while the queue is full");
        sender
    }

    #[tokio::test]
    async fn a_stream_waits_for_room_and_loses_nothing() {
        let (r, mut rx, room) = receiver(2, Selector::default());
        let sender = waiting_route(&r, 5).await;
        assert_eq!(r.stats.snapshot().delivered, 0);
        let mut got = Vec::new();
        while got.len() < 5 {
            let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("the sender goes on as room is given")
                .expect("a batch");
            assert!(batch.len() <= 2, "never more than the queue holds");
            room.add_permits(batch.len());
            got.extend(texts(&batch));
        }
        sender.await.expect("sender");
        let want: Vec<String> = (0..5).map(|i| format!("message {i}")).collect();
        assert_eq!(got, want);
        let c = r.stats.snapshot();
        assert_eq!((c.delivered, c.queue_full), (5, 0));
    }

    #[tokio::test]
    async fn a_gone_worker_ends_the_wait() {
        let (r, mut rx, room) = receiver(1, Selector::default());
        let sender = waiting_route(&r, 3).await;
        // what feed_jail's guard does when the worker ends
        room.close();
        tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .expect("the sender stops waiting")
            .expect("sender");
        assert_eq!(rx.try_recv().expect("the first part").len(), 1);
        assert_eq!(r.stats.snapshot().delivered, 1);
    }
}
