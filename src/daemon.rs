//! The daemon: starts the store, the jails with their sources and actions,
//! and the control socket; reloads and stops them.
//!
//! Shutdown is a tree: one root `CancellationToken`, a child per jail (its
//! task, source threads and action thread stop with it). Reload builds and
//! compiles the whole new configuration first and swaps it in only if every
//! enabled jail is good; otherwise the running jails stay as they are.

use crate::config::daemon::{DaemonConfig, DaemonConfigError};
use crate::config::jail::{Backend, JailConfig, Jails, JailsError};
use crate::control::{self, ControlError, Incoming, Request, Response};
use crate::filter::Filter;
use crate::firewall::table::{Firewall, FwCmd, Redirect};
use crate::firewall::{
    build_actions, ipset::IpsetKernel, is_iptables, is_nftables, nft::NftKernel, ActionEnv,
    ActionRunner,
};
use crate::jail::{now, Jail, JailCmd, JailMsg, JailStatus, Matcher};
use crate::source::syslog::SyslogHub;
use crate::source::{self, file::FileSource, journal::JournalSource};
use crate::store::BanRecord;
use crate::store::{Store, StoreCmd, StoreError};
use indexmap::IndexMap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] DaemonConfigError),
    #[error(transparent)]
    Syslog(#[from] crate::source::syslog::SyslogError),
    #[error(transparent)]
    Jails(#[from] JailsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Log(#[from] crate::logging::LogError),
    #[error(transparent)]
    Web(#[from] crate::web::ListenError),
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
}

pub struct RunOptions {
    pub config_dir: PathBuf,
    pub foreground: bool,
}

/// Reads the configuration, sets up the log, and runs until stopped.
pub fn run(opts: RunOptions) -> Result<(), DaemonError> {
    let dcfg = DaemonConfig::read(&opts.config_dir)?;
    crate::logging::init(&dcfg.logtarget, dcfg.loglevel)?;
    if !opts.foreground {
        daemonize().map_err(|cause| DaemonError::Io {
            what: "cannot go to the background (use --foreground)".into(),
            cause,
        })?;
    }
    crate::logging::start_flusher();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("banhammer")
        .build()
        .map_err(|cause| DaemonError::Io {
            what: "cannot start the runtime".into(),
            cause,
        })?;
    let result = rt.block_on(main_loop(opts.config_dir, dcfg));
    crate::logging::flush();
    result
}

fn daemonize() -> std::io::Result<()> {
    // SAFETY: called before any thread exists (the runtime, the store and
    // the sources start afterwards), so fork duplicates a single-threaded
    // process; the parent exits immediately without touching shared state.
    unsafe {
        match libc::fork() {
            -1 => return Err(std::io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        if libc::setsid() == -1 {
            return Err(std::io::Error::last_os_error());
        }
        let devnull = std::ffi::CString::new("/dev/null").unwrap_or_default();
        let fd = libc::open(devnull.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
    std::env::set_current_dir("/")
}

struct PidFile(PathBuf);

impl PidFile {
    fn create(path: &Path) -> Result<PidFile, DaemonError> {
        let io = |cause| DaemonError::Io {
            what: format!("pid file {}", path.display()),
            cause,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(io)?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct RunningJail {
    cfg: JailConfig,
    tx: mpsc::Sender<JailMsg>,
    /// Runs an nftables action.
    nft: bool,
    /// Runs an iptables action.
    ipt: bool,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

struct Daemon {
    config_dir: PathBuf,
    store: Store,
    root: CancellationToken,
    jails: IndexMap<String, RunningJail>,
    skipped: Vec<String>,
    /// The syslog receiver, if `[syslog] listen` names any listener.
    syslog: Option<SyslogHub>,
    firewall: Firewall,
    ipset: Firewall,
    actions: ActionEnv,
    /// The running jails, for the web pages.
    directory: crate::jail::JailDirectory,
    /// Set by `stop --flush`.
    flush_on_exit: bool,
    /// A jail has used the iptables backend (so `stop --flush` cleans it).
    ipset_used: bool,
    webhooks: Vec<crate::config::notify::WebhookConfig>,
    /// What the store tells when it queues webhook messages.
    wake: Arc<tokio::sync::Notify>,
}

/// A jail ready to start: its configuration and compiled filter.
type Prepared = (JailConfig, Arc<Filter>);

/// Reads and compiles every enabled jail; returns the good ones and the
/// reasons for the others.
fn prepare(config_dir: &Path) -> Result<(Vec<Prepared>, Vec<String>), JailsError> {
    let jails = Jails::read(config_dir)?;
    for w in &jails.warnings {
        tracing::warn!("{w}");
    }
    let mut problems: Vec<String> = jails.problems.iter().map(|p| p.to_string()).collect();
    let mut good = Vec::new();
    for cfg in jails.jails {
        match cfg.compile_filter() {
            Ok(f) => good.push((cfg, Arc::new(f))),
            Err(e) => problems.push(format!("jail '{}' skipped: {e}", cfg.name)),
        }
    }
    Ok((good, problems))
}

fn expand_logpaths(cfg: &JailConfig) -> Vec<String> {
    let mut found = Vec::new();
    for lp in &cfg.logpaths {
        if let Ok(g) = glob::glob(&lp.pattern) {
            found.extend(
                g.flatten()
                    .filter(|p| p.is_file())
                    .map(|p| p.display().to_string()),
            );
        }
    }
    found
}

impl Daemon {
    async fn start_jail(&mut self, cfg: JailConfig, filter: Arc<Filter>) -> Result<(), String> {
        let name = cfg.name.clone();
        if matches!(cfg.backend, Backend::Syslog(_)) && self.syslog.is_none() {
            return Err(format!("jail '{name}' skipped: backend = syslog, but banhammer.conf has no [syslog] listen = ... to receive messages"));
        }
        if cfg.backend.reads_files() && expand_logpaths(&cfg).is_empty() {
            let paths: Vec<&str> = cfg.logpaths.iter().map(|l| l.pattern.as_str()).collect();
            return Err(format!("jail '{name}' skipped: no log file found for logpath {} (is the service logging there?)", paths.join(", ")));
        }
        let state = self
            .store
            .load(&name, cfg.findtime, now())
            .await
            .map_err(|e| format!("jail '{name}' skipped: {e}"))?;
        let (actions, warnings) = build_actions(&cfg, &self.actions)
            .map_err(|e| format!("jail '{name}' skipped: {e}"))?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        let (runner, act_thread) =
            ActionRunner::spawn(&name, actions).map_err(|e| format!("jail '{name}': {e}"))?;
        let (tx, rx) = mpsc::channel::<JailMsg>(16);
        let positions: HashMap<String, crate::store::Position> =
            state.positions.iter().cloned().collect();
        let cursor = state.cursor.clone();
        let matcher = Arc::new(Matcher::new(filter.clone(), &name));
        let mut jail = Jail::new(cfg.clone(), filter, self.store.clone(), runner, tx.clone());
        jail.restore(state);
        let cancel = self.root.child_token();
        let task = tokio::spawn(jail.run(rx, cancel.clone()));
        let mut threads = vec![act_thread];
        match &cfg.backend {
            Backend::Systemd {
                paths,
                files,
                flags,
            } => {
                let src = JournalSource {
                    jail: name.clone(),
                    paths: paths.clone(),
                    files: files.clone(),
                    flags: *flags,
                    matches: cfg.filter.journalmatch.clone(),
                    cursor,
                    lookback: cfg.findtime,
                };
                let t = source::spawn(
                    format!("journal/{name}"),
                    matcher.clone(),
                    tx.clone(),
                    cancel.clone(),
                    move |c, ev| src.run(c, ev),
                )
                .map_err(|e| format!("jail '{name}': {e}"))?;
                threads.push(t);
            }
            Backend::Syslog(selector) => {
                if let Some(hub) = &self.syslog {
                    let t = hub
                        .add_jail(&name, selector, matcher.clone(), tx.clone())
                        .map_err(|e| e.to_string())?;
                    threads.push(t);
                }
            }
            backend => {
                for lp in &cfg.logpaths {
                    let src = FileSource {
                        jail: name.clone(),
                        pattern: lp.pattern.clone(),
                        tail: lp.tail,
                        polling: *backend == Backend::Polling,
                        positions: positions.clone(),
                    };
                    let t = source::spawn(
                        format!("file/{name}"),
                        matcher.clone(),
                        tx.clone(),
                        cancel.clone(),
                        move |c, ev| src.run(c, ev),
                    )
                    .map_err(|e| format!("jail '{name}': {e}"))?;
                    threads.push(t);
                }
            }
        }
        self.directory.set(&name, tx.clone());
        tracing::info!(jail = %name, "Jail started");
        self.jails.insert(
            name,
            RunningJail {
                cfg: cfg.clone(),
                nft: cfg.actions.iter().any(|a| is_nftables(&a.name)),
                ipt: {
                    let ipt = cfg.actions.iter().any(|a| is_iptables(&a.name));
                    self.ipset_used |= ipt;
                    ipt
                },
                tx,
                cancel,
                task,
                threads,
            },
        );
        Ok(())
    }

    async fn stop_jail(&mut self, name: &str) {
        let Some(j) = self.jails.shift_remove(name) else {
            return;
        };
        self.directory.remove(name);
        if let Some(hub) = &self.syslog {
            hub.remove_jail(name);
        }
        j.cancel.cancel();
        let _ = j.task.await;
        let threads = j.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        let _ = self.store.flush().await;
        tracing::info!(jail = %name, "Jail stopped");
    }

    async fn start_all(&mut self, prepared: Vec<Prepared>) {
        let cfgs: Vec<JailConfig> = prepared.iter().map(|(c, _)| c.clone()).collect();
        let _ = self.store.send(StoreCmd::SetRules {
            rules: crate::notify::rules(&self.webhooks, &cfgs),
            wake: self.wake.clone(),
        });
        // the firewall collects every jail's restored bans and writes the
        // table once, when all of them are in
        self.hold();
        for (cfg, filter) in prepared {
            if let Err(msg) = self.start_jail(cfg, filter).await {
                tracing::error!("{msg}");
                self.skipped.push(msg);
            }
        }
        self.expect();
    }

    /// Tells the firewall backends that jails are (re)starting.
    fn hold(&self) {
        self.firewall.send(FwCmd::Hold);
        self.ipset.send(FwCmd::Hold);
    }

    /// Tells each backend which running jails use it: it builds its table
    /// once they have all restored their bans.
    fn expect(&self) {
        let pick = |f: fn(&RunningJail) -> bool| -> Vec<String> {
            self.jails
                .iter()
                .filter(|(_, j)| f(j))
                .map(|(n, _)| n.clone())
                .collect()
        };
        self.firewall.send(FwCmd::Expect(pick(|j| j.nft)));
        self.ipset.send(FwCmd::Expect(pick(|j| j.ipt)));
        self.update_rules();
    }

    /// Tells the store which webhooks report which of the running jails.
    fn update_rules(&self) {
        let cfgs: Vec<JailConfig> = self.jails.values().map(|j| j.cfg.clone()).collect();
        let _ = self.store.send(StoreCmd::SetRules {
            rules: crate::notify::rules(&self.webhooks, &cfgs),
            wake: self.wake.clone(),
        });
    }

    /// Rebuilds the configuration; swaps it in only if every jail is good.
    async fn reload(&mut self, only: Option<String>) -> Result<String, String> {
        let (prepared, problems) = prepare(&self.config_dir)
            .map_err(|e| format!("reload refused, configuration kept: {e}"))?;
        let relevant: Vec<&String> = problems
            .iter()
            .filter(|p| only.as_ref().is_none_or(|j| p.contains(&format!("'{j}'"))))
            .collect();
        if !relevant.is_empty() {
            let msg = relevant
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(format!("reload refused, configuration kept: {msg}"));
        }
        match only {
            Some(name) => {
                let Some((cfg, filter)) = prepared.into_iter().find(|(c, _)| c.name == name) else {
                    return Err(format!("no enabled jail '{name}' in the configuration"));
                };
                self.hold();
                self.stop_jail(&name).await;
                self.skipped.retain(|s| !s.contains(&format!("'{name}'")));
                let r = self.start_jail(cfg, filter).await;
                self.expect();
                r?;
                Ok(format!("jail '{name}' reloaded"))
            }
            None => {
                self.hold();
                let names: Vec<String> = self.jails.keys().cloned().collect();
                for n in names {
                    self.stop_jail(&n).await;
                }
                self.skipped.clear();
                self.start_all(prepared).await;
                Ok(format!("reloaded: {} jail(s) running", self.jails.len()))
            }
        }
    }

    fn senders(&self) -> Vec<(String, mpsc::Sender<JailMsg>)> {
        self.jails
            .iter()
            .map(|(n, j)| (n.clone(), j.tx.clone()))
            .collect()
    }

    /// Answers a request; long ones run on their own task.
    async fn handle(&mut self, req: Request, reply: oneshot::Sender<Response>) -> bool {
        match req {
            Request::Ping => {
                let _ = reply.send(Response::ok(serde_json::json!("pong")));
            }
            Request::Outbox { action, id, state } => {
                let store = self.store.clone();
                tokio::spawn(async move {
                    let r = match (action.as_str(), id) {
                        ("list", _) => store
                            .ask(|reply| StoreCmd::OutboxList {
                                state,
                                limit: 10_000,
                                reply,
                            })
                            .await
                            .map(|v| serde_json::json!(v)),
                        ("counts", _) => store.ask(StoreCmd::OutboxCounts).await.map(|v| {
                            serde_json::json!(v
                                .into_iter()
                                .collect::<std::collections::BTreeMap<_, _>>())
                        }),
                        ("cancel", Some(id)) => store
                            .ask(|reply| StoreCmd::OutboxCancel { id, reply })
                            .await
                            .map(|v| serde_json::json!(v)),
                        ("retry", Some(id)) => store
                            .ask(|reply| StoreCmd::OutboxRetry { id, reply })
                            .await
                            .map(|v| serde_json::json!(v)),
                        _ => {
                            let _ = reply.send(Response::err(
                                "outbox: use list, counts, cancel ID or retry ID",
                            ));
                            return;
                        }
                    };
                    let _ = reply.send(match r {
                        Ok(serde_json::Value::Bool(false)) => {
                            Response::err("no such message (or it is not pending/failed)")
                        }
                        Ok(v) => Response::ok(v),
                        Err(e) => Response::err(e.to_string()),
                    });
                });
            }
            Request::Stop { flush } => {
                self.flush_on_exit = flush;
                let _ = reply.send(Response::ok(serde_json::json!(if flush {
                    "stopping; the firewall table will be removed"
                } else {
                    "stopping"
                })));
                return false;
            }
            Request::Reload { jail } => {
                let r = self.reload(jail).await;
                let _ = reply.send(match r {
                    Ok(m) => {
                        tracing::info!("{m}");
                        Response::ok(serde_json::json!(m))
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        Response::err(e)
                    }
                });
            }
            Request::Status { jail } => {
                let senders: Vec<_> = self
                    .senders()
                    .into_iter()
                    .filter(|(n, _)| jail.as_ref().is_none_or(|j| j == n))
                    .collect();
                if let Some(j) = &jail {
                    if senders.is_empty() {
                        let _ = reply.send(Response::err(format!("no running jail '{j}'")));
                        return true;
                    }
                }
                let skipped = self.skipped.clone();
                let syslog = self.syslog.as_ref().map(|h| {
                    serde_json::json!({
                        "listen": h.bound.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
                        "counters": h.counts(),
                    })
                });
                let kernels = [self.firewall.clone(), self.ipset.clone()];
                tokio::spawn(async move {
                    let all: Vec<JailStatus> = ask_all(senders, JailCmd::Status).await;
                    let mut firewall = Vec::new();
                    for k in kernels {
                        if let Some(st) =
                            k.status().await.filter(|st| st.jails > 0 || st.errors > 0)
                        {
                            firewall.push(st);
                        }
                    }
                    let v = match jail {
                        Some(_) => serde_json::to_value(all.first()).unwrap_or_default(),
                        None => serde_json::json!({
                            "version": env!("CARGO_PKG_VERSION"),
                            "jails": all,
                            "skipped": skipped,
                            "syslog": syslog,
                            "firewall": firewall,
                        }),
                    };
                    let _ = reply.send(Response::ok(v));
                });
            }
            Request::Banned { ips } => {
                let filter: Result<Vec<IpAddr>, String> = parse_ips(&ips);
                let filter = match filter {
                    Ok(f) => f,
                    Err(e) => {
                        let _ = reply.send(Response::err(e));
                        return true;
                    }
                };
                let senders = self.senders();
                tokio::spawn(async move {
                    let mut all: Vec<BanRecord> = ask_all(senders, JailCmd::Banned)
                        .await
                        .into_iter()
                        .flatten()
                        .collect();
                    if !filter.is_empty() {
                        all.retain(|b| {
                            crate::jail::parse_key(&b.ip)
                                .is_some_and(|k| filter.iter().any(|ip| k.contains(ip)))
                        });
                    }
                    let _ = reply.send(Response::ok(serde_json::to_value(all).unwrap_or_default()));
                });
            }
            Request::Ban { jail, ips } => {
                let ips = match parse_ips(&ips) {
                    Ok(v) if !v.is_empty() => v,
                    Ok(_) => {
                        let _ = reply.send(Response::err("no address given"));
                        return true;
                    }
                    Err(e) => {
                        let _ = reply.send(Response::err(e));
                        return true;
                    }
                };
                let Some(tx) = self.jails.get(&jail).map(|j| j.tx.clone()) else {
                    let _ = reply.send(Response::err(format!("no running jail '{jail}'")));
                    return true;
                };
                tokio::spawn(async move {
                    let (r, rx) = oneshot::channel();
                    let resp = if tx
                        .send(JailMsg::Control(JailCmd::Ban { ips, reply: r }))
                        .await
                        .is_ok()
                    {
                        match rx.await {
                            Ok(v) => Response::ok(serde_json::json!(v)),
                            Err(_) => Response::err("the jail stopped"),
                        }
                    } else {
                        Response::err("the jail stopped")
                    };
                    let _ = reply.send(resp);
                });
            }
            Request::Unban { ips, all } => {
                let ips = if all {
                    None
                } else {
                    match parse_ips(&ips) {
                        Ok(v) if !v.is_empty() => Some(v),
                        Ok(_) => {
                            let _ = reply.send(Response::err("no address given (or --all)"));
                            return true;
                        }
                        Err(e) => {
                            let _ = reply.send(Response::err(e));
                            return true;
                        }
                    }
                };
                let senders = self.senders();
                tokio::spawn(async move {
                    let done: Vec<String> = ask_all(senders, |reply| JailCmd::Unban {
                        ips: ips.clone(),
                        reply,
                    })
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                    let _ = reply.send(Response::ok(serde_json::json!(done)));
                });
            }
        }
        true
    }
}

/// Asks each jail the same question; collects the answers that come.
async fn ask_all<T: Send + 'static>(
    senders: Vec<(String, mpsc::Sender<JailMsg>)>,
    question: impl Fn(oneshot::Sender<T>) -> JailCmd,
) -> Vec<T> {
    let mut answers = Vec::new();
    for (_, tx) in senders {
        let (r, rx) = oneshot::channel();
        if tx.send(JailMsg::Control(question(r))).await.is_ok() {
            if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(30), rx).await {
                answers.push(v);
            }
        }
    }
    answers
}

/// Addresses given to `ban`, `unban` and `banned` (every notation
/// `ignoreip` accepts for one address).
pub fn parse_ips(ips: &[String]) -> Result<Vec<IpAddr>, String> {
    ips.iter()
        .map(|s| {
            crate::jail::ignore::parse_addr(s).ok_or_else(|| format!("{s:?} is not an IP address"))
        })
        .collect()
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(false, state);
}

async fn main_loop(config_dir: PathBuf, dcfg: DaemonConfig) -> Result<(), DaemonError> {
    let _pid = PidFile::create(&dcfg.pidfile)?;
    let (store, store_thread) = Store::open(dcfg.dbfile.as_deref())?;
    let listener = control::bind(&dcfg.socket)?;
    let root = CancellationToken::new();
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Incoming>(64);
    let control_task = tokio::spawn(control::serve(listener, ctl_tx.clone(), root.child_token()));
    let io = |what: &str| {
        let what = what.to_string();
        move |cause| DaemonError::Io { what, cause }
    };
    let mut hup = signal(SignalKind::hangup()).map_err(io("SIGHUP handler"))?;
    let mut term = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;

    tracing::info!(config = %config_dir.display(), db = %crate::store::describe(dcfg.dbfile.as_ref()), socket = %dcfg.socket.display(), "Starting banhammer {}", env!("CARGO_PKG_VERSION"));
    let redirect = dcfg.web.banpage_listen.map(|a| Redirect {
        ports: dcfg.web.banpage_ports.clone(),
        to: a.port(),
    });
    let (firewall, fw_thread) = Firewall::spawn(NftKernel {
        nft: dcfg.firewall.nft.clone(),
        redirect: redirect.clone(),
    })
    .map_err(io("the nftables thread"))?;
    let (ipset, ipset_thread) =
        Firewall::spawn(IpsetKernel { redirect }).map_err(io("the iptables thread"))?;
    let mut d = Daemon {
        firewall: firewall.clone(),
        actions: ActionEnv {
            config_dir: config_dir.clone(),
            firewall: Some(firewall.clone()),
            ipset: Some(ipset.clone()),
            webhooks: dcfg.webhooks.iter().map(|w| w.name.clone()).collect(),
        },
        ipset,
        flush_on_exit: false,
        ipset_used: false,
        webhooks: dcfg.webhooks.clone(),
        wake: Arc::new(tokio::sync::Notify::new()),
        directory: crate::jail::JailDirectory::default(),
        config_dir: config_dir.clone(),
        store: store.clone(),
        root: root.clone(),
        jails: IndexMap::new(),
        skipped: Vec::new(),
        syslog: (!dcfg.syslog.listen.is_empty())
            .then(|| SyslogHub::new(&dcfg.syslog, root.child_token())),
    };
    for w in &dcfg.warnings {
        tracing::warn!("{w}");
    }
    let (prepared, problems) = prepare(&config_dir)?;
    for p in problems {
        tracing::error!("{p}");
        d.skipped.push(p);
    }
    let mut notify_tasks = Vec::new();
    let mut webhook_stats = None;
    if !dcfg.webhooks.is_empty() {
        match crate::notify::webhook::spawn(
            store.clone(),
            dcfg.webhooks.clone(),
            d.wake.clone(),
            root.child_token(),
        ) {
            Ok((t, stats)) => {
                notify_tasks.push(t);
                webhook_stats = Some(stats);
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
    d.start_all(prepared).await;
    if let Some(hub) = d.syslog.as_mut() {
        hub.listen().await?;
    }
    let _ = store.send(StoreCmd::Notify {
        event: "start".into(),
        data: serde_json::json!({ "jails": d.jails.keys().collect::<Vec<_>>() }),
    });
    if let Some(sc) = &dcfg.statsd {
        match crate::notify::statsd::Statsd::new(sc) {
            Ok(s) => {
                let s = Arc::new(s);
                crate::notify::statsd::install(s.clone());
                notify_tasks.push(crate::notify::statsd::spawn(
                    s,
                    sc.interval,
                    d.directory.clone(),
                    d.syslog.as_ref().map(|h| h.receiver()),
                    root.child_token(),
                ));
                tracing::info!(target: "banhammer.notify", server = %format!("{}:{}", sc.host, sc.port), prefix = %sc.prefix, "StatsD metrics on");
            }
            Err(e) => tracing::error!("[statsd] {}:{}: {e}", sc.host, sc.port),
        }
    }
    let mut web_tasks = Vec::new();
    let reader = match &dcfg.dbfile {
        Some(p) => match crate::store::reader::Reader::open(p) {
            Ok((r, _thread)) => Some(r),
            Err(e) => {
                tracing::error!("{e}; the admin view has no history");
                None
            }
        },
        None => None,
    };
    let admin_addr = dcfg.web.admin_listen.or_else(|| {
        dcfg.web
            .admin_password_hash
            .as_ref()
            .map(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 8081)))
    });
    if let Some(addr) = admin_addr {
        let tls = match (&dcfg.web.admin_tls_cert, &dcfg.web.admin_tls_key) {
            (Some(c), Some(k)) => {
                Some(
                    crate::tls::acceptor(c, k, None).map_err(|e| DaemonError::Io {
                        what: format!("[web] admin_tls_cert/admin_tls_key: {e}"),
                        cause: std::io::Error::other("bad TLS files"),
                    })?,
                )
            }
            _ => None,
        };
        // the costly dashboard queries get a connection of their own, so
        // that pages never wait behind them
        let stats_reader = dcfg
            .dbfile
            .as_ref()
            .and_then(|p| crate::store::reader::Reader::open(p).ok())
            .map(|(r, _)| r);
        let dashboard =
            crate::web::stats::spawn(stats_reader, d.directory.clone(), root.child_token());
        let state = crate::web::admin::AdminState {
            web: crate::web::WebState {
                jails: d.directory.clone(),
                cfg: Arc::new(dcfg.web.clone()),
            },
            sessions: Arc::new(crate::web::session::Sessions::default()),
            reader: reader.clone(),
            control: ctl_tx.clone(),
            dashboard,
            secure: dcfg.web.admin_tls_cert.is_some(),
            metrics: crate::web::metrics::MetricsSources {
                store: Some(store.clone()),
                webhooks: webhook_stats.clone(),
                syslog: d.syslog.as_ref().map(|h| h.receiver()),
                firewalls: vec![d.firewall.clone(), d.ipset.clone()],
                db_path: dcfg.dbfile.clone(),
            },
        };
        let (_, t) = crate::web::serve(
            addr,
            "admin view",
            crate::web::admin::router(state),
            tls,
            root.child_token(),
        )
        .await?;
        web_tasks.push(t);
    }
    if let Some(addr) = dcfg.web.banpage_listen {
        let state = crate::web::WebState {
            jails: d.directory.clone(),
            cfg: Arc::new(dcfg.web.clone()),
        };
        let (_, t) = crate::web::serve(
            addr,
            "ban page",
            crate::web::banpage::router(state),
            None,
            root.child_token(),
        )
        .await?;
        web_tasks.push(t);
    }
    if d.jails.is_empty() {
        tracing::warn!("no jail is running; waiting for a reload with a working configuration");
    }
    notify(&[sd_notify::NotifyState::Ready]);
    let mut purge = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = hup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match d.reload(None).await {
                    Ok(m) => tracing::info!("{m}"),
                    Err(e) => tracing::error!("{e}"),
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            Some((req, reply)) = ctl_rx.recv() => {
                if !d.handle(req, reply).await {
                    break;
                }
            }
            _ = purge.tick() => {
                let _ = store.send(StoreCmd::Purge { before: now() - dcfg.dbpurgeage });
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("Shutdown in progress...");
    let _ = store.send(StoreCmd::Notify {
        event: "stop".into(),
        data: serde_json::json!({}),
    });
    if let Some(hub) = d.syslog.take() {
        hub.stop().await;
    }
    let names: Vec<String> = d.jails.keys().cloned().collect();
    for n in names {
        d.stop_jail(&n).await;
    }
    for (fw, used) in [(d.firewall.clone(), true), (d.ipset.clone(), d.ipset_used)] {
        if d.flush_on_exit && used {
            let f = fw.clone();
            match tokio::task::spawn_blocking(move || f.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("stop --flush: {e}"),
                Err(e) => tracing::error!("stop --flush: {e}"),
            }
        }
        fw.send(FwCmd::Stop);
    }
    let _ = tokio::task::spawn_blocking(move || {
        let _ = fw_thread.join();
        let _ = ipset_thread.join();
    })
    .await;
    root.cancel();
    let _ = control_task.await;
    for t in web_tasks.into_iter().chain(notify_tasks) {
        let _ = t.await;
    }
    let _ = store.flush().await;
    let _ = store.send(StoreCmd::Stop);
    let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
    let _ = std::fs::remove_file(&dcfg.socket);
    tracing::info!("Exiting banhammer");
    Ok(())
}
