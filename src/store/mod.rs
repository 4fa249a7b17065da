//! The store: one SQLite database (WAL), owned by one thread, fed by a
//! channel.
//!
//! Owns the connection and the schema. Receives [`StoreCmd`]s from jails
//! and the control server; commands are applied in the order they arrive,
//! many per transaction, so a burst of failures costs one commit. Replies
//! go back on `oneshot` channels: a ban is reported only after the
//! transaction that records it has committed. A failed commit (full disk,
//! I/O error) is retried with the same batch until it succeeds; the error
//! is logged, nothing is dropped.

pub mod outbox;
pub mod reader;
mod schema;

use crate::jail::Origin;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {cause}")]
    Open {
        path: String,
        cause: rusqlite::Error,
    },
    #[error("database {path}: {msg}")]
    Schema { path: String, msg: String },
    #[error("the store thread has stopped")]
    Gone,
}

/// A recorded failure, as restored at start.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFailure {
    pub ip: String,
    pub time: f64,
    pub line: Option<String>,
}

/// A ban as stored (and as actions and the control socket see it).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BanRecord {
    pub id: i64,
    pub jail: String,
    pub ip: String,
    pub start: f64,
    /// `None`: permanent.
    pub end: Option<f64>,
    /// How many earlier bans of this address counted for escalation.
    pub ban_count: u32,
    pub failures: u32,
    pub matches: Vec<String>,
    /// What the filter captured from the failure that caused the ban
    /// (`user`, ...): Fail2Ban's `<F-*>` action tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

/// How long a new ban lasts (the jail's policy, evaluated by the store,
/// which knows the address's ban history).
#[derive(Debug, Clone)]
pub struct BanRequest {
    pub jail: String,
    pub ip: String,
    pub start: f64,
    pub failures: u32,
    /// Evidence: the log lines of the failures, oldest first.
    pub matches: Vec<String>,
    /// See [`BanRecord::fields`].
    pub fields: Vec<(String, String)>,
    /// Who sent the failure that caused it (syslog), for notifications.
    pub origin: Option<Arc<Origin>>,
    pub policy: crate::jail::BanPolicy,
}

/// A log position: file identity and offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
    pub fingerprint: String,
}

/// What a jail finds in the database when it starts.
#[derive(Debug, Default)]
pub struct JailState {
    pub bans: Vec<BanRecord>,
    /// Bans that ended while the daemon was not running.
    pub expired: Vec<BanRecord>,
    pub failures: Vec<StoredFailure>,
    pub positions: Vec<(String, Position)>,
    pub cursor: Option<String>,
    pub total_bans: u64,
}

/// One effect of a chunk of log lines.
pub enum ChunkOp {
    Failure {
        ip: String,
        time: f64,
        line: Arc<str>,
        origin: Option<Arc<Origin>>,
    },
    Ban {
        req: BanRequest,
        reply: oneshot::Sender<BanRecord>,
    },
}

/// Where a source stood after a chunk.
#[derive(Debug, Clone)]
pub enum SourcePos {
    File { path: String, pos: Position },
    Cursor(String),
}

pub enum StoreCmd {
    /// Everything a chunk of lines caused, and the source position after
    /// it, in one transaction: after a crash either all of it is there (and
    /// the lines are not read again) or none of it (and they are).
    Chunk {
        jail: String,
        ops: Vec<ChunkOp>,
        pos: Option<SourcePos>,
    },
    Failure {
        jail: String,
        ip: String,
        time: f64,
        line: Arc<str>,
        origin: Option<Arc<Origin>>,
    },
    Position {
        jail: String,
        path: String,
        pos: Position,
    },
    Cursor {
        jail: String,
        cursor: String,
    },
    Ban {
        req: BanRequest,
        reply: oneshot::Sender<BanRecord>,
    },
    Unban {
        jail: String,
        ip: String,
        time: f64,
    },
    Load {
        jail: String,
        findtime: f64,
        now: f64,
        reply: oneshot::Sender<JailState>,
    },
    Purge {
        before: f64,
    },
    /// Replies once everything sent before it is committed.
    Flush(oneshot::Sender<()>),
    /// Which webhooks want what; `wake` is told when messages are queued.
    SetRules {
        rules: Vec<outbox::NotifyRule>,
        wake: Arc<tokio::sync::Notify>,
    },
    /// A daemon event for the webhooks (`start`, `stop`).
    Notify {
        event: String,
        data: serde_json::Value,
    },
    /// Due messages, each leased to the caller until `now + lease`: a later
    /// call does not return it again before then unless its outcome is
    /// recorded as a retry (or the daemon restarts with the lease expired).
    OutboxDue {
        now: f64,
        limit: usize,
        lease: f64,
        reply: oneshot::Sender<(Vec<outbox::OutboxItem>, Option<f64>)>,
    },
    OutboxRecord {
        id: String,
        attempt: outbox::Attempt,
    },
    OutboxList {
        state: Option<String>,
        limit: usize,
        reply: oneshot::Sender<Vec<outbox::OutboxItem>>,
    },
    OutboxCancel {
        id: String,
        reply: oneshot::Sender<bool>,
    },
    OutboxRetry {
        id: String,
        reply: oneshot::Sender<bool>,
    },
    OutboxCounts(oneshot::Sender<Vec<(String, u64)>>),
    Stop,
}

/// The cheap, clonable side of the store. The channel is bounded: when the
/// database falls behind, senders wait (backpressure) instead of queueing
/// without limit.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::SyncSender<StoreCmd>,
}

/// Commands that may wait for the store thread.
const QUEUE: usize = 1024;

impl Store {
    /// Opens (or creates) the database and starts the store thread.
    /// `None` keeps everything in memory.
    pub fn open(path: Option<&Path>) -> Result<(Store, std::thread::JoinHandle<()>), StoreError> {
        let name = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| ":memory:".into());
        let conn = open_connection(path).map_err(|cause| StoreError::Open {
            path: name.clone(),
            cause,
        })?;
        schema::migrate(&conn).map_err(|msg| StoreError::Schema {
            path: name.clone(),
            msg,
        })?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                Worker {
                    conn,
                    name,
                    rules: Vec::new(),
                    wake: None,
                    leases: HashMap::new(),
                }
                .run(rx)
            })
            .map_err(|e| StoreError::Schema {
                path: "store thread".into(),
                msg: e.to_string(),
            })?;
        Ok((Store { tx }, handle))
    }

    pub fn send(&self, cmd: StoreCmd) -> Result<(), StoreError> {
        match self.tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(StoreError::Gone),
            Err(mpsc::TrySendError::Full(cmd)) => {
                // wait for room without stalling other tasks of the runtime
                let in_runtime = tokio::runtime::Handle::try_current().is_ok_and(|h| {
                    h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                });
                let send = || self.tx.send(cmd).map_err(|_| StoreError::Gone);
                if in_runtime {
                    tokio::task::block_in_place(send)
                } else {
                    send()
                }
            }
        }
    }

    pub async fn ban(&self, req: BanRequest) -> Result<BanRecord, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(StoreCmd::Ban { req, reply })?;
        rx.await.map_err(|_| StoreError::Gone)
    }

    pub async fn load(&self, jail: &str, findtime: f64, now: f64) -> Result<JailState, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(StoreCmd::Load {
            jail: jail.to_string(),
            findtime,
            now,
            reply,
        })?;
        rx.await.map_err(|_| StoreError::Gone)
    }

    /// Asks the store thread something and waits for the answer.
    pub async fn ask<T>(
        &self,
        q: impl FnOnce(oneshot::Sender<T>) -> StoreCmd,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(q(reply))?;
        rx.await.map_err(|_| StoreError::Gone)
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(StoreCmd::Flush(reply))?;
        rx.await.map_err(|_| StoreError::Gone)
    }
}

fn open_connection(path: Option<&Path>) -> rusqlite::Result<Connection> {
    let conn = match path {
        Some(p) => {
            if let Some(dir) = p.parent() {
                if !dir.as_os_str().is_empty() && !dir.exists() {
                    let _ = std::fs::create_dir_all(dir);
                    set_mode(dir, 0o700);
                }
            }
            let conn = Connection::open(p)?;
            set_mode(p, 0o600);
            conn
        }
        None => Connection::open_in_memory()?,
    };
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed ban survives power loss too, not only a crash
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // checkpoints after 16 MB of WAL instead of 4: a busy store (a
    // catch-up, an attack) copies each hot index page back once per few
    // transactions, not after nearly every one; 15 % fewer bytes written
    // on the daemon benchmark. Idle, the WAL grows slowly and nothing
    // changes.
    conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
    // 16 MiB of page cache instead of 2: failures go into an index by
    // address, all over the tree; with the hot pages kept, a busy store
    // needs 9 % less CPU on the daemon benchmark (grown only when used)
    conn.pragma_update(None, "cache_size", -16384)?;
    Ok(conn)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

struct Worker {
    conn: Connection,
    name: String,
    rules: Vec<outbox::NotifyRule>,
    wake: Option<Arc<tokio::sync::Notify>>,
    /// Outbox messages handed to the delivery worker and not yet recorded,
    /// with when the hand-out lapses. In memory only: after a restart
    /// nothing is in flight.
    leases: HashMap<String, f64>,
}

/// The active ban of an address in a jail (index `bans_jail_ip_active`).
const ACTIVE_BAN: &str =
    "SELECT id, end FROM bans WHERE jail = ?1 AND ip = ?2 AND active = 1 ORDER BY id DESC LIMIT 1";
/// Ends the active ban of an address in a jail at `?3`.
const END_ACTIVE_BAN: &str =
    "UPDATE bans SET active = 0, ended = ?3 WHERE jail = ?1 AND ip = ?2 AND active = 1";

/// Largest batch applied in one transaction.
const BATCH: usize = 4096;

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<StoreCmd>) {
        let mut batch: Vec<StoreCmd> = Vec::with_capacity(BATCH);
        loop {
            let Ok(first) = rx.recv() else { break };
            batch.push(first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let mut delay = Duration::from_millis(100);
            let mut stop = false;
            let mut purged = false;
            loop {
                stop |= batch.iter().any(|c| matches!(c, StoreCmd::Stop));
                purged |= batch.iter().any(|c| matches!(c, StoreCmd::Purge { .. }));
                match self.apply(&mut batch) {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(db = %self.name, error = %e, "cannot write to the database; retrying (nothing is lost while the daemon runs)");
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(10));
                        // keep taking commands meanwhile, so that jails never
                        // wait for a disk that stays full: they go into the
                        // batch written once it can be
                        while let Ok(c) = rx.try_recv() {
                            batch.push(c);
                        }
                    }
                }
            }
            batch.clear();
            if purged {
                // give the pages of purged rows back to the file system
                if let Err(e) = self.conn.execute_batch("PRAGMA incremental_vacuum;") {
                    tracing::warn!(db = %self.name, "compacting the database: {e}");
                }
            }
            if stop {
                break;
            }
        }
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    }

    /// Applies a batch in one transaction, then answers the commands that
    /// wait for a reply. On error nothing is committed and the batch stays
    /// intact for the retry.
    fn apply(&mut self, batch: &mut Vec<StoreCmd>) -> rusqlite::Result<()> {
        enum Outcome {
            Ban(BanRecord),
            Bans(Vec<BanRecord>),
            State(JailState),
            Due((Vec<outbox::OutboxItem>, Option<f64>)),
            List(Vec<outbox::OutboxItem>),
            Done(bool),
            Counts(Vec<(String, u64)>),
        }
        // new rules apply to this batch already
        for cmd in batch.iter_mut() {
            if let StoreCmd::SetRules { rules, wake } = cmd {
                self.rules = std::mem::take(rules);
                self.wake = Some(wake.clone());
            }
        }
        let rules = &self.rules;
        let mut queued = 0usize;
        let tx = self.conn.transaction()?;
        // taken from the statement cache once per batch, not per failure
        let mut insert = tx.prepare_cached(INSERT_FAILURE)?;
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(batch.len());
        for cmd in batch.iter() {
            outcomes.push(match cmd {
                StoreCmd::Chunk { jail, ops, pos } => {
                    let mut bans = Vec::new();
                    for op in ops {
                        match op {
                            ChunkOp::Failure {
                                ip,
                                time,
                                line,
                                origin,
                            } => insert_failure(
                                &mut insert,
                                jail,
                                ip,
                                *time,
                                line,
                                origin.as_deref(),
                            )?,
                            ChunkOp::Ban { req, .. } => {
                                let (rec, extended) = record_ban(&tx, req)?;
                                queued += outbox::on_ban(&tx, rules, &rec, req, extended)?;
                                bans.push(rec)
                            }
                        }
                    }
                    match pos {
                        Some(SourcePos::File { path, pos }) => save_position(&tx, jail, path, pos)?,
                        Some(SourcePos::Cursor(c)) => save_cursor(&tx, jail, c)?,
                        None => {}
                    }
                    Some(Outcome::Bans(bans))
                }
                StoreCmd::Failure {
                    jail,
                    ip,
                    time,
                    line,
                    origin,
                } => {
                    insert_failure(&mut insert, jail, ip, *time, line, origin.as_deref())?;
                    None
                }
                StoreCmd::Position { jail, path, pos } => {
                    save_position(&tx, jail, path, pos)?;
                    None
                }
                StoreCmd::Cursor { jail, cursor } => {
                    save_cursor(&tx, jail, cursor)?;
                    None
                }
                StoreCmd::Ban { req, .. } => {
                    let (rec, extended) = record_ban(&tx, req)?;
                    queued += outbox::on_ban(&tx, rules, &rec, req, extended)?;
                    Some(Outcome::Ban(rec))
                }
                StoreCmd::Unban { jail, ip, time } => {
                    let active: Option<(i64, Option<f64>)> = tx
                        .prepare_cached(ACTIVE_BAN)?
                        .query_row(params![jail, ip], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    tx.prepare_cached(END_ACTIVE_BAN)?
                        .execute(params![jail, ip, time])?;
                    queued += outbox::on_unban(&tx, rules, active, jail, ip, *time)?;
                    None
                }
                StoreCmd::Notify { event, data } => {
                    queued += outbox::on_event(&tx, rules, event, data)?;
                    None
                }
                StoreCmd::OutboxDue { now, limit, .. } => {
                    Some(Outcome::Due(outbox::due(&tx, *now, *limit, &self.leases)?))
                }
                StoreCmd::OutboxRecord { id, attempt } => {
                    outbox::record(&tx, id, attempt)?;
                    None
                }
                StoreCmd::OutboxList { state, limit, .. } => {
                    Some(Outcome::List(outbox::list(&tx, state.as_deref(), *limit)?))
                }
                StoreCmd::OutboxCancel { id, .. } => Some(Outcome::Done(outbox::cancel(&tx, id)?)),
                StoreCmd::OutboxRetry { id, .. } => {
                    let done = outbox::retry(&tx, id)?;
                    queued += usize::from(done);
                    Some(Outcome::Done(done))
                }
                StoreCmd::OutboxCounts(_) => Some(Outcome::Counts(outbox::counts(&tx)?)),
                StoreCmd::SetRules { .. } => None,
                StoreCmd::Load {
                    jail,
                    findtime,
                    now,
                    ..
                } => Some(Outcome::State(load_state(&tx, jail, *findtime, *now)?)),
                StoreCmd::Purge { before } => {
                    purge(&tx, *before)?;
                    None
                }
                StoreCmd::Flush(_) | StoreCmd::Stop => None,
            });
        }
        drop(insert);
        tx.commit()?;
        if queued > 0 {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
        for (cmd, outcome) in batch.drain(..).zip(outcomes) {
            match (cmd, outcome) {
                (StoreCmd::Ban { reply, .. }, Some(Outcome::Ban(r))) => {
                    let _ = reply.send(r);
                }
                (StoreCmd::Chunk { ops, .. }, Some(Outcome::Bans(bans))) => {
                    let replies = ops.into_iter().filter_map(|op| match op {
                        ChunkOp::Ban { reply, .. } => Some(reply),
                        ChunkOp::Failure { .. } => None,
                    });
                    for (reply, rec) in replies.zip(bans) {
                        let _ = reply.send(rec);
                    }
                }
                (StoreCmd::Load { reply, .. }, Some(Outcome::State(s))) => {
                    let _ = reply.send(s);
                }
                (StoreCmd::Flush(reply), _) => {
                    let _ = reply.send(());
                }
                (
                    StoreCmd::OutboxDue {
                        now, lease, reply, ..
                    },
                    Some(Outcome::Due(d)),
                ) => {
                    self.leases.retain(|_, until| *until > now);
                    for i in &d.0 {
                        self.leases.insert(i.id.clone(), now + lease);
                    }
                    let _ = reply.send(d);
                }
                (StoreCmd::OutboxRecord { id, .. }, _) => {
                    self.leases.remove(&id);
                }
                (StoreCmd::OutboxList { reply, .. }, Some(Outcome::List(l))) => {
                    let _ = reply.send(l);
                }
                (StoreCmd::OutboxCancel { reply, .. }, Some(Outcome::Done(d)))
                | (StoreCmd::OutboxRetry { reply, .. }, Some(Outcome::Done(d))) => {
                    let _ = reply.send(d);
                }
                (StoreCmd::OutboxCounts(reply), Some(Outcome::Counts(c))) => {
                    let _ = reply.send(c);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

const INSERT_FAILURE: &str =
    "INSERT INTO failures (jail, ip, time, line, host, peer) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

fn insert_failure(
    insert: &mut rusqlite::CachedStatement<'_>,
    jail: &str,
    ip: &str,
    time: f64,
    line: &str,
    origin: Option<&Origin>,
) -> rusqlite::Result<()> {
    insert.execute(params![
        jail,
        ip,
        time,
        truncate(line, 2000),
        origin.and_then(|o| o.host.as_deref()),
        origin.map(|o| o.peer.to_string())
    ])?;
    Ok(())
}

fn save_position(
    tx: &rusqlite::Transaction<'_>,
    jail: &str,
    path: &str,
    pos: &Position,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO positions (jail, path, inode, offset, fingerprint) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(jail, path) DO UPDATE SET inode = ?3, offset = ?4, fingerprint = ?5",
    )?
    .execute(params![
        jail,
        path,
        pos.inode as i64,
        pos.offset as i64,
        pos.fingerprint
    ])?;
    Ok(())
}

fn save_cursor(tx: &rusqlite::Transaction<'_>, jail: &str, cursor: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO cursors (jail, cursor) VALUES (?1, ?2) ON CONFLICT(jail) DO UPDATE SET cursor = ?2")?
        .execute(params![jail, cursor])?;
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Inserts a ban, its duration from the policy and the address's history.
/// The failures that led to it stay in the table until purged; a ban
/// consumes the failures of its address up to its start (see
/// [`load_state`]).
fn record_ban(
    tx: &rusqlite::Transaction<'_>,
    req: &BanRequest,
) -> rusqlite::Result<(BanRecord, bool)> {
    let count: i64 = if req.policy.overalljails() {
        tx.prepare_cached("SELECT COUNT(*) FROM bans WHERE ip = ?1")?
            .query_row(params![req.ip], |r| r.get(0))?
    } else {
        tx.prepare_cached("SELECT COUNT(*) FROM bans WHERE ip = ?1 AND jail = ?2")?
            .query_row(params![req.ip, req.jail], |r| r.get(0))?
    };
    let seconds = req.policy.bantime(count as u32);
    let end = seconds.map(|s| req.start + s);
    let matches = req.matches.clone();
    // an address banned again while active (manual ban): the new ban replaces it
    let replaced = tx
        .prepare_cached(END_ACTIVE_BAN)?
        .execute(params![req.jail, req.ip, req.start])?
        > 0;
    tx.prepare_cached(
        "INSERT INTO bans (jail, ip, start, end, ban_count, failures, matches, active, fields) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8)",
    )?
    .execute(params![
        req.jail,
        req.ip,
        req.start,
        end,
        count,
        req.failures,
        serde_json::to_string(&matches).unwrap_or_else(|_| "[]".into()),
        (!req.fields.is_empty())
            .then(|| serde_json::to_string(&req.fields).unwrap_or_default())
    ])?;
    let id = tx.last_insert_rowid();
    Ok((
        BanRecord {
            id,
            jail: req.jail.clone(),
            ip: req.ip.clone(),
            start: req.start,
            end,
            ban_count: count as u32,
            failures: req.failures,
            matches,
            fields: req.fields.clone(),
        },
        replaced,
    ))
}

pub(crate) fn ban_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BanRecord> {
    let matches: String = r.get(7)?;
    Ok(BanRecord {
        id: r.get(0)?,
        jail: r.get(1)?,
        ip: r.get(2)?,
        start: r.get(3)?,
        end: r.get(4)?,
        ban_count: r.get::<_, i64>(5)? as u32,
        failures: r.get::<_, i64>(6)? as u32,
        matches: serde_json::from_str(&matches).unwrap_or_default(),
        fields: r
            .get::<_, Option<String>>(8)?
            .and_then(|f| serde_json::from_str(&f).ok())
            .unwrap_or_default(),
    })
}

pub(crate) const BAN_COLUMNS: &str =
    "id, jail, ip, start, end, ban_count, failures, matches, fields";

fn load_state(
    conn: &Connection,
    jail: &str,
    findtime: f64,
    now: f64,
) -> rusqlite::Result<JailState> {
    let mut state = JailState::default();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {BAN_COLUMNS} FROM bans WHERE jail = ?1 AND active = 1 ORDER BY start"
    ))?;
    for b in stmt.query_map(params![jail], ban_from_row)? {
        let b = b?;
        if b.end.is_some_and(|e| e <= now) {
            state.expired.push(b);
        } else {
            state.bans.push(b);
        }
    }
    // failures that still count: recent, and not consumed by a ban of
    // their address that started after them
    let mut stmt = conn.prepare_cached(
        "SELECT ip, time, line FROM failures f WHERE jail = ?1 AND time > ?2
           AND NOT EXISTS (SELECT 1 FROM bans b WHERE b.ip = f.ip AND b.jail = f.jail AND b.start >= f.time)
         ORDER BY time, id",
    )?;
    for f in stmt.query_map(params![jail, now - findtime], |r| {
        Ok(StoredFailure {
            ip: r.get(0)?,
            time: r.get(1)?,
            line: r.get(2)?,
        })
    })? {
        state.failures.push(f?);
    }
    let mut stmt = conn
        .prepare_cached("SELECT path, inode, offset, fingerprint FROM positions WHERE jail = ?1")?;
    for p in stmt.query_map(params![jail], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Position {
                inode: r.get::<_, i64>(1)? as u64,
                offset: r.get::<_, i64>(2)? as u64,
                fingerprint: r.get(3)?,
            },
        ))
    })? {
        state.positions.push(p?);
    }
    state.cursor = conn
        .prepare_cached("SELECT cursor FROM cursors WHERE jail = ?1")?
        .query_row(params![jail], |r| r.get(0))
        .optional()?;
    state.total_bans = conn
        .prepare_cached("SELECT COUNT(*) FROM bans WHERE jail = ?1")?
        .query_row(params![jail], |r| r.get::<_, i64>(0))? as u64;
    Ok(state)
}

/// Drops what is older than `before`: failures, and bans that ended.
fn purge(tx: &rusqlite::Transaction<'_>, before: f64) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM failures WHERE time < ?1", params![before])?;
    tx.execute(
        "DELETE FROM bans WHERE active = 0 AND ended < ?1",
        params![before],
    )?;
    tx.execute(
        "DELETE FROM outbox WHERE state <> 'pending' AND done < ?1",
        params![before],
    )?;
    Ok(())
}

/// Where the database lives, for messages.
pub fn describe(path: Option<&PathBuf>) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| "(in memory)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jail::BanPolicy;

    /// SQLite's plan for `sql`, its steps joined by `; ` (`args` as many as
    /// the statement takes).
    fn query_plan(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> String {
        let mut st = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let plan: Vec<String> = st
            .query_map(&args[..st.parameter_count()], |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        plan.join("; ")
    }

    fn failure(ip: &str, time: f64) -> StoreCmd {
        StoreCmd::Failure {
            jail: "j".into(),
            ip: ip.into(),
            time,
            line: format!("line {time}").into(),
            origin: None,
        }
    }

    /// With many active bans in a jail, lifting one looks up that address
    /// through its index, not by walking the jail's active bans (which
    /// stalled the store once bans began to expire under load).
    #[test]
    fn one_address_s_active_ban_is_found_through_its_index() {
        let conn = open_connection(None).expect("open");
        schema::migrate(&conn).expect("migrate");
        {
            let mut ins = conn
                .prepare("INSERT INTO bans (jail, ip, start, end, ban_count, failures, active) VALUES ('j', ?1, 0, 1, 0, 1, 1)")
                .expect("insert");
            for i in 0..5000 {
                ins.execute(params![format!("10.0.{}.{}", i / 250, i % 250)])
                    .expect("row");
            }
        }
        for sql in [ACTIVE_BAN, END_ACTIVE_BAN] {
            let plan = query_plan(&conn, sql, &[&"j", &"10.0.1.1", &2.0]);
            assert!(
                plan.contains("bans_jail_ip_active (jail=? AND ip=? AND active=?)"),
                "{sql}: {plan}"
            );
        }
    }

    /// The admin view's address page finds an address's failures through
    /// their index, not by reading every failure.
    #[test]
    fn an_address_s_failures_are_found_through_their_index() {
        let conn = open_connection(None).expect("open");
        schema::migrate(&conn).expect("migrate");
        for (ip, t) in [("192.0.2.1", 1.0), ("192.0.2.2", 2.0), ("192.0.2.1", 3.0)] {
            conn.execute(
                "INSERT INTO failures (jail, ip, time, line) VALUES ('j', ?1, ?2, 'l')",
                params![ip, t],
            )
            .expect("insert");
        }
        let h = reader::address(&conn, "192.0.2.1", 10).expect("address");
        assert_eq!(h.failures_total, 2);
        assert_eq!(
            h.failures.iter().map(|f| f.time).collect::<Vec<_>>(),
            [3.0, 1.0]
        );
        for sql in [
            reader::ADDRESS_FAILURE_COUNT.to_string(),
            reader::address_failures_sql(),
        ] {
            let plan = query_plan(&conn, &sql, &[&"192.0.2.1", &5]);
            assert!(plan.contains("INDEX failures_ip (ip=?)"), "{sql}: {plan}");
        }
    }

    #[test]
    fn a_ban_consumes_the_failures_before_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, thread) = Store::open(Some(&dir.path().join("db.sqlite3"))).expect("open");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            for (ip, t) in [
                ("192.0.2.1", 100.0),
                ("192.0.2.1", 101.0),
                ("192.0.2.2", 102.0),
            ] {
                store.send(failure(ip, t)).expect("send");
            }
            let policy = BanPolicy {
                bantime: 600.0,
                increment: None,
            };
            let rec = store
                .ban(BanRequest {
                    jail: "j".into(),
                    ip: "192.0.2.1".into(),
                    start: 105.0,
                    failures: 2,
                    matches: vec!["line 100".into(), "line 101".into()],
                    fields: Vec::new(),
                    origin: None,
                    policy,
                })
                .await
                .expect("ban");
            assert_eq!(rec.matches, ["line 100", "line 101"]);
            assert_eq!(rec.end, Some(705.0));
            // after the ban, the address's failures count again
            store.send(failure("192.0.2.1", 110.0)).expect("send");
            let st = store.load("j", 600.0, 120.0).await.expect("load");
            let got: Vec<_> = st
                .failures
                .iter()
                .map(|f| (f.ip.as_str(), f.time, f.line.as_deref()))
                .collect();
            assert_eq!(
                got,
                [
                    ("192.0.2.2", 102.0, Some("line 102")),
                    ("192.0.2.1", 110.0, Some("line 110"))
                ]
            );
            assert_eq!(st.bans.len(), 1);
            store.send(StoreCmd::Stop).expect("stop");
        });
        thread.join().expect("store thread");
    }
}
