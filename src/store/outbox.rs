//! The outbox: notifications written to SQLite before anything is sent,
//! in the same transaction as the ban or unban they report, so that none
//! is lost to a crash or a restart.
//!
//! Owns the outbox table's SQL and the payloads. The store thread calls
//! [`on_ban`] and [`on_unban`] inside its transactions; the delivery worker
//! (`notify::webhook`) reads due messages and records results through the
//! store. A ban with an end schedules its `unban` message at that end, so it
//! is delivered on time even if the daemon is down then; an early unban
//! moves it to now.

use super::{BanRecord, BanRequest};
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Which webhook wants which events of which jails.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyRule {
    pub webhook: String,
    pub events: Vec<String>,
    /// `None`: every jail.
    pub jails: Option<Vec<String>>,
    /// Evidence lines go into the payload.
    pub matches: bool,
}

impl NotifyRule {
    fn wants(&self, event: &str, jail: Option<&str>) -> bool {
        self.events.iter().any(|e| e == event)
            && match (&self.jails, jail) {
                (None, _) => true,
                (Some(list), Some(j)) => list.iter().any(|x| x == j),
                (Some(_), None) => true,
            }
    }
}

/// A message as the delivery worker and the CLI see it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct OutboxItem {
    pub id: String,
    pub webhook: String,
    pub event: String,
    pub jail: Option<String>,
    pub ip: Option<String>,
    pub created: f64,
    pub due: f64,
    pub attempts: u32,
    /// `pending`, `delivered`, `failed` or `cancelled`.
    pub state: String,
    pub last_error: Option<String>,
    pub target: Option<String>,
    pub done: Option<f64>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub payload: String,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered { target: String },
    Retry { due: f64, error: String },
    Failed { error: String },
}

/// A random message id (the receivers' key for dropping duplicates).
pub fn new_id() -> String {
    let mut buf = [0u8; 16];
    if crate::random::fill(&mut buf).is_err() {
        // the time and a counter are unique enough within one daemon
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        buf[..8].copy_from_slice(&crate::jail::now().to_bits().to_le_bytes());
        buf[8..].copy_from_slice(&n.to_le_bytes());
    }
    let h: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn server() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(crate::config::notify::hostname)
}

fn insert(
    tx: &Transaction<'_>,
    rule: &NotifyRule,
    event: &str,
    jail: Option<&str>,
    ip: Option<&str>,
    ban_id: Option<i64>,
    mut payload: Value,
    now: f64,
    due: f64,
) -> rusqlite::Result<String> {
    let id = new_id();
    payload["id"] = json!(id);
    payload["event"] = json!(event);
    payload["webhook"] = json!(rule.webhook);
    payload["server"] = json!(server());
    tx.prepare_cached(
        "INSERT INTO outbox (id, webhook, event, jail, ip, ban_id, payload, created, due, attempts, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, 'pending')",
    )?
    .execute(params![
        id,
        rule.webhook,
        event,
        jail,
        ip,
        ban_id,
        payload.to_string(),
        now,
        due
    ])?;
    Ok(id)
}

fn ban_payload(rec: &BanRecord, req: Option<&BanRequest>, with_matches: bool) -> Value {
    let mut v = json!({
        "time": crate::jail::now(),
        "jail": rec.jail,
        "ip": rec.ip,
        "failures": rec.failures,
        "ban_id": rec.id,
        "ban_count": rec.ban_count + 1,
        "start": rec.start,
        "end": rec.end,
        "permanent": rec.end.is_none(),
    });
    if let Some(o) = req.and_then(|r| r.origin.as_ref()) {
        v["host"] = json!(o.host);
        v["peer"] = json!(o.peer.to_string());
    }
    if let Some((_, user)) = rec.fields.iter().find(|(k, _)| k == "user") {
        v["user"] = json!(user);
    }
    if with_matches {
        v["matches"] = json!(rec.matches);
    }
    v
}

/// A ban was recorded (`extended`: it replaced an active one): queue its
/// messages, and the `unban` message for when it ends.
pub fn on_ban(
    tx: &Transaction<'_>,
    rules: &[NotifyRule],
    rec: &BanRecord,
    req: &BanRequest,
    extended: bool,
) -> rusqlite::Result<usize> {
    let now = crate::jail::now();
    let event = if extended { "ban-extended" } else { "ban" };
    let mut n = 0;
    if extended {
        // the replaced ban's scheduled unban is void
        tx.prepare_cached(
            "UPDATE outbox SET state = 'cancelled', done = ?3 WHERE state = 'pending' AND event = 'unban'
             AND ban_id IN (SELECT id FROM bans WHERE jail = ?1 AND ip = ?2 AND id <> ?4)",
        )?
        .execute(params![rec.jail, rec.ip, now, rec.id])?;
    }
    for r in rules.iter().filter(|r| r.wants(event, Some(&rec.jail))) {
        insert(
            tx,
            r,
            event,
            Some(&rec.jail),
            Some(&rec.ip),
            Some(rec.id),
            ban_payload(rec, Some(req), r.matches),
            now,
            now,
        )?;
        n += 1;
    }
    if let Some(end) = rec.end {
        for r in rules.iter().filter(|r| r.wants("unban", Some(&rec.jail))) {
            let mut p = ban_payload(rec, Some(req), false);
            p["reason"] = json!("expired");
            p["time"] = json!(end);
            insert(
                tx,
                r,
                "unban",
                Some(&rec.jail),
                Some(&rec.ip),
                Some(rec.id),
                p,
                now,
                end,
            )?;
            n += 1;
        }
    }
    Ok(n)
}

/// A ban was lifted at `time` (`ban` is the row that was active): an early
/// unban moves its scheduled message to now; a ban without one (permanent)
/// gets its message now.
pub fn on_unban(
    tx: &Transaction<'_>,
    rules: &[NotifyRule],
    ban: Option<(i64, Option<f64>)>,
    jail: &str,
    ip: &str,
    time: f64,
) -> rusqlite::Result<usize> {
    let Some((ban_id, end)) = ban else {
        return Ok(0);
    };
    let early = end.is_none_or(|e| time < e - 1.0);
    let mut n = 0;
    for r in rules.iter().filter(|r| r.wants("unban", Some(jail))) {
        let row: Option<(String, String, String)> = tx
            .prepare_cached(
                "SELECT id, payload, state FROM outbox WHERE ban_id = ?1 AND webhook = ?2 AND event = 'unban'",
            )?
            .query_row(params![ban_id, r.webhook], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)))
            .optional()?;
        match row {
            // cancelled by the operator (or already sent): that stands
            Some((_, _, state)) if state != "pending" => {}
            Some((id, payload, _)) => {
                if early {
                    let mut p: Value = serde_json::from_str(&payload).unwrap_or_else(|_| json!({}));
                    p["reason"] = json!("lifted");
                    p["time"] = json!(time);
                    tx.prepare_cached("UPDATE outbox SET due = ?2, payload = ?3 WHERE id = ?1")?
                        .execute(params![id, time, p.to_string()])?;
                    n += 1;
                }
            }
            None => {
                let p = json!({
                    "time": time, "jail": jail, "ip": ip, "ban_id": ban_id,
                    "end": end, "reason": if early { "lifted" } else { "expired" },
                });
                insert(
                    tx,
                    r,
                    "unban",
                    Some(jail),
                    Some(ip),
                    Some(ban_id),
                    p,
                    crate::jail::now(),
                    time,
                )?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// A daemon event (`start`, `stop`).
pub fn on_event(
    tx: &Transaction<'_>,
    rules: &[NotifyRule],
    event: &str,
    data: &Value,
) -> rusqlite::Result<usize> {
    let now = crate::jail::now();
    let mut n = 0;
    for r in rules.iter().filter(|r| r.wants(event, None)) {
        let mut p = data.clone();
        p["time"] = json!(now);
        insert(tx, r, event, None, None, None, p, now, now)?;
        n += 1;
    }
    Ok(n)
}

const COLUMNS: &str = "id, webhook, event, jail, ip, created, due, attempts, state, last_error, target, done, payload";

fn item(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxItem> {
    Ok(OutboxItem {
        id: r.get(0)?,
        webhook: r.get(1)?,
        event: r.get(2)?,
        jail: r.get(3)?,
        ip: r.get(4)?,
        created: r.get(5)?,
        due: r.get(6)?,
        attempts: r.get::<_, i64>(7)? as u32,
        state: r.get(8)?,
        last_error: r.get(9)?,
        target: r.get(10)?,
        done: r.get(11)?,
        payload: r.get(12)?,
    })
}

/// Pending messages due by `now` (at most `limit`, oldest due first) that
/// are not leased (handed out, outcome not yet recorded) until later than
/// `now`, and when the next one after them is due.
pub fn due(
    tx: &Transaction<'_>,
    now: f64,
    limit: usize,
    leases: &HashMap<String, f64>,
) -> rusqlite::Result<(Vec<OutboxItem>, Option<f64>)> {
    let mut items = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE state = 'pending' AND due <= ?1 ORDER BY due LIMIT ?2"
        ))?
        .query_map(params![now, (limit + leases.len()) as i64], item)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    items.retain(|i| leases.get(&i.id).is_none_or(|&until| until <= now));
    items.truncate(limit);
    let next: Option<f64> = tx
        .prepare_cached("SELECT MIN(due) FROM outbox WHERE state = 'pending' AND due > ?1")?
        .query_row(params![now], |r| r.get(0))?;
    Ok((items, next))
}

pub fn record(tx: &Transaction<'_>, id: &str, a: &Attempt) -> rusqlite::Result<()> {
    let now = crate::jail::now();
    match a {
        Attempt::Delivered { target } => tx
            .prepare_cached("UPDATE outbox SET state = 'delivered', attempts = attempts + 1, target = ?2, done = ?3, last_error = NULL WHERE id = ?1 AND state = 'pending'")?
            .execute(params![id, target, now])?,
        Attempt::Retry { due, error } => tx
            .prepare_cached("UPDATE outbox SET attempts = attempts + 1, due = ?2, last_error = ?3 WHERE id = ?1 AND state = 'pending'")?
            .execute(params![id, due, error])?,
        Attempt::Failed { error } => tx
            .prepare_cached("UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?2, done = ?3 WHERE id = ?1 AND state = 'pending'")?
            .execute(params![id, error, now])?,
    };
    Ok(())
}

pub fn list(
    tx: &Transaction<'_>,
    state: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<OutboxItem>> {
    let mut items = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE (?1 IS NULL OR state = ?1)
             ORDER BY state <> 'pending', CASE WHEN state = 'pending' THEN due ELSE -due END LIMIT ?2"
        ))?
        .query_map(params![state, limit as i64], item)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for i in &mut items {
        i.payload.clear();
    }
    Ok(items)
}

/// Cancels a pending message; false if there is none with that id.
pub fn cancel(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached(
            "UPDATE outbox SET state = 'cancelled', done = ?2 WHERE id = ?1 AND state = 'pending'",
        )?
        .execute(params![id, crate::jail::now()])?
        > 0)
}

/// Sends a failed (or pending) message again, now.
pub fn retry(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("UPDATE outbox SET state = 'pending', due = ?2, done = NULL WHERE id = ?1 AND state IN ('failed', 'pending')")?
        .execute(params![id, crate::jail::now()])?
        > 0)
}

/// Messages per state.
pub fn counts(tx: &Transaction<'_>) -> rusqlite::Result<Vec<(String, u64)>> {
    tx.prepare_cached("SELECT state, COUNT(*) FROM outbox GROUP BY state")?
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect()
}
