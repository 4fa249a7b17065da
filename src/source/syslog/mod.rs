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
use tokio::sync::mpsc;
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

struct Route {
    jail: String,
    selector: CompiledSelector,
    tx: mpsc::Sender<Arc<SyslogMessage>>,
}

/// What listeners share: the settings, the counters and the routes.
pub struct Receiver {
    pub cfg: SyslogConfig,
    pub stats: SyslogStats,
    routes: RwLock<Vec<Route>>,
}

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

    fn takers(&self, m: &SyslogMessage) -> Vec<mpsc::Sender<Arc<SyslogMessage>>> {
        let routes = match self.routes.read() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        routes
            .iter()
            .filter(|r| r.selector.takes(m))
            .map(|r| r.tx.clone())
            .collect()
    }

    /// Hands a message to its jails without waiting (UDP): a full queue
    /// drops it for that jail.
    pub fn route_now(&self, m: SyslogMessage, notes: ParseNotes) {
        self.note(notes);
        let takers = self.takers(&m);
        if takers.is_empty() {
            add(&self.stats.unrouted);
            return;
        }
        let m = Arc::new(m);
        let mut any = false;
        for tx in takers {
            match tx.try_send(m.clone()) {
                Ok(()) => any = true,
                Err(_) => add(&self.stats.queue_full),
            }
        }
        if any {
            add(&self.stats.delivered);
        }
    }

    /// Hands a message to its jails, waiting for room (TCP, TLS).
    pub async fn route(&self, m: SyslogMessage, notes: ParseNotes) {
        self.note(notes);
        let takers = self.takers(&m);
        if takers.is_empty() {
            add(&self.stats.unrouted);
            return;
        }
        let m = Arc::new(m);
        let mut any = false;
        for tx in takers {
            any |= tx.send(m.clone()).await.is_ok();
        }
        if any {
            add(&self.stats.delivered);
        }
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
        let (tx, rx) = mpsc::channel(self.receiver.cfg.queue);
        let t = std::thread::Builder::new()
            .name(format!("syslog/{name}"))
            .spawn(move || {
                // a backlog worker: the listeners come first when CPUs are short
                crate::source::set_thread_nice(WORKER_NICE);
                feed_jail(rx, &matcher, &jail)
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
            tx,
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
    mut rx: mpsc::Receiver<Arc<SyslogMessage>>,
    matcher: &Matcher,
    jail: &mpsc::Sender<JailMsg>,
) {
    let mut batch: Vec<Arc<SyslogMessage>> = Vec::with_capacity(BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let lines: Vec<Line> = batch
            .drain(..)
            .map(|m| Line {
                text: m.line().into(),
                time: Some(m.time),
                live: true,
                origin: Some(Arc::new(Origin {
                    host: m.host.clone(),
                    peer: m.peer,
                })),
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
