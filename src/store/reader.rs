//! Read-only queries for the web pages and the API, on a connection of
//! their own.
//!
//! Owns a second, read-only SQLite connection (WAL lets it read while the
//! store thread writes) and the thread that uses it. Receives queries as
//! closures, runs them in order and sends each result back on a `oneshot`:
//! a slow page never delays the store's writes. The queries themselves
//! (bans with search and pagination, an address's history, counts per hour,
//! top addresses and senders) live here too, so that SQL stays in the
//! store module.

use super::{ban_from_row, BanRecord, BAN_COLUMNS};
use rusqlite::{params, Connection, OpenFlags};
use serde::Serialize;
use std::path::Path;
use std::sync::mpsc;

type Job = Box<dyn FnOnce(&Connection) + Send>;

/// A handle to the reader thread.
#[derive(Clone)]
pub struct Reader {
    tx: mpsc::Sender<Job>,
}

impl Reader {
    /// Opens `path` read-only on a new thread.
    pub fn open(path: &Path) -> Result<(Reader, std::thread::JoinHandle<()>), String> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("database {} (read-only): {e}", path.display()))?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        let (tx, rx) = mpsc::channel::<Job>();
        let t = std::thread::Builder::new()
            .name("store-reader".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&conn);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok((Reader { tx }, t))
    }

    /// Runs `f` on the reader's connection.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Box::new(move |c: &Connection| {
                let _ = tx.send(f(c).map_err(|e| e.to_string()));
            }))
            .map_err(|_| "the database reader has stopped".to_string())?;
        rx.await
            .map_err(|_| "the database reader has stopped".to_string())?
    }
}

/// Which bans a list shows.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct BanQuery {
    /// Address, network or reference text (`sshd-42`) to look for.
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub jail: Option<String>,
    /// `active`, `ended` or all.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub page: Option<u32>,
    #[serde(default)]
    pub per_page: Option<u32>,
}

/// A ban as the lists show it: the record, and whether (and when) it ended.
#[derive(Debug, Clone, Serialize)]
pub struct BanRow {
    #[serde(flatten)]
    pub ban: BanRecord,
    pub active: bool,
    /// When it was lifted (by time or by hand), if it was.
    pub ended: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BanPage {
    pub bans: Vec<BanRow>,
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
}

/// One stored failure.
#[derive(Debug, Clone, Serialize)]
pub struct FailureRow {
    pub id: i64,
    pub jail: String,
    pub ip: String,
    pub time: f64,
    pub line: Option<String>,
    pub host: Option<String>,
    pub peer: Option<String>,
}

fn ban_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BanRow> {
    Ok(BanRow {
        ban: ban_from_row(r)?,
        active: r.get::<_, i64>(9)? != 0,
        ended: r.get(10)?,
    })
}

fn failure_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FailureRow> {
    Ok(FailureRow {
        id: r.get(0)?,
        jail: r.get(1)?,
        ip: r.get(2)?,
        time: r.get(3)?,
        line: r.get(4)?,
        host: r.get(5)?,
        peer: r.get(6)?,
    })
}

const FAILURE_COLUMNS: &str = "id, jail, ip, time, line, host, peer";

/// Bans matching `q`, newest first, one page of them.
pub fn bans(c: &Connection, q: &BanQuery) -> rusqlite::Result<BanPage> {
    let per_page = q.per_page.unwrap_or(50).clamp(1, 500);
    let page = q.page.unwrap_or(1).max(1);
    let mut cond = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(j) = q.jail.as_ref().filter(|j| !j.is_empty()) {
        cond.push("jail = ?".to_string());
        args.push(j.clone().into());
    }
    match q.state.as_deref() {
        Some("active") => cond.push("active = 1".into()),
        Some("ended") => cond.push("active = 0".into()),
        _ => {}
    }
    if let Some(text) = q.q.as_ref().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        // a reference (`sshd-42`) names one ban
        if let Some(id) = text
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse::<i64>().ok())
            .filter(|_| !text.contains(':') && !text.contains('.'))
        {
            cond.push("id = ?".into());
            args.push(id.into());
        } else if text.ends_with('.') || text.ends_with(':') || text.ends_with('*') {
            // a prefix as a range, so that the address index serves it
            // (addresses are stored in lower case)
            let prefix = text.trim_end_matches('*').to_ascii_lowercase();
            let mut upper = prefix.clone();
            if let Some(last) = upper.pop() {
                upper.push(char::from_u32(last as u32 + 1).unwrap_or(char::MAX));
            }
            cond.push("ip >= ? AND ip < ?".into());
            args.push(prefix.into());
            args.push(upper.into());
        } else {
            cond.push("ip = ?".into());
            args.push(text.to_string().into());
        }
    }
    let wh = if cond.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", cond.join(" AND "))
    };
    let total: i64 = c
        .prepare_cached(&format!("SELECT COUNT(*) FROM bans {wh}"))?
        .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
    let mut page_args = args.clone();
    page_args.push(i64::from(per_page).into());
    page_args.push((i64::from(page - 1) * i64::from(per_page)).into());
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {BAN_COLUMNS}, active, ended FROM bans {wh} ORDER BY id DESC LIMIT ? OFFSET ?"
    ))?;
    let bans = stmt
        .query_map(rusqlite::params_from_iter(page_args.iter()), ban_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(BanPage {
        bans,
        total: total as u64,
        page,
        per_page,
    })
}

/// Everything stored about one address (its failures newest first, at
/// most `limit`, and every ban).
#[derive(Debug, Clone, Serialize)]
pub struct AddressHistory {
    pub ip: String,
    pub failures: Vec<FailureRow>,
    pub failures_total: u64,
    pub bans: Vec<BanRow>,
}

/// How many failures an address has (`?1`).
pub(crate) const ADDRESS_FAILURE_COUNT: &str = "SELECT COUNT(*) FROM failures WHERE ip = ?1";

/// An address's failures (`?1`), newest first, at most `?2`.
pub(crate) fn address_failures_sql() -> String {
    format!("SELECT {FAILURE_COLUMNS} FROM failures WHERE ip = ?1 ORDER BY time DESC LIMIT ?2")
}

pub fn address(c: &Connection, ip: &str, limit: u32) -> rusqlite::Result<AddressHistory> {
    let failures_total: i64 = c
        .prepare_cached(ADDRESS_FAILURE_COUNT)?
        .query_row(params![ip], |r| r.get(0))?;
    let failures = c
        .prepare_cached(&address_failures_sql())?
        .query_map(params![ip, limit], failure_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let bans = c
        .prepare_cached(&format!(
            "SELECT {BAN_COLUMNS}, active, ended FROM bans WHERE ip = ?1 ORDER BY id DESC"
        ))?
        .query_map(params![ip], ban_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(AddressHistory {
        ip: ip.to_string(),
        failures,
        failures_total: failures_total as u64,
        bans,
    })
}

/// The newest failures (after `after_id`, for live updates), newest first.
pub fn recent_failures(
    c: &Connection,
    jail: Option<&str>,
    after_id: i64,
    limit: u32,
) -> rusqlite::Result<Vec<FailureRow>> {
    let (sql, jail) = match jail {
        Some(j) => (
            format!("SELECT {FAILURE_COLUMNS} FROM failures WHERE id > ?1 AND jail = ?3 ORDER BY id DESC LIMIT ?2"),
            j.to_string(),
        ),
        None => (
            format!("SELECT {FAILURE_COLUMNS} FROM failures WHERE id > ?1 AND ?3 = ?3 ORDER BY id DESC LIMIT ?2"),
            String::new(),
        ),
    };
    c.prepare_cached(&sql)?
        .query_map(params![after_id, limit, jail], failure_row)?
        .collect()
}

/// Bans started per hour since `since` (epoch seconds): (hour start, count).
pub fn bans_per_hour(
    c: &Connection,
    since: f64,
    jail: Option<&str>,
) -> rusqlite::Result<Vec<(f64, u64)>> {
    let mut stmt = c.prepare_cached(
        "SELECT CAST(start / 3600 AS INTEGER) * 3600 AS h, COUNT(*) FROM bans
         WHERE start >= ?1 AND (?2 IS NULL OR jail = ?2) GROUP BY h ORDER BY h",
    )?;
    let rows = stmt
        .query_map(params![since, jail], |r| {
            Ok((r.get::<_, i64>(0)? as f64, r.get::<_, i64>(1)? as u64))
        })?
        .collect();
    rows
}

/// The addresses with most failures since `since`.
pub fn top_addresses(
    c: &Connection,
    since: f64,
    limit: u32,
) -> rusqlite::Result<Vec<(String, u64)>> {
    c.prepare_cached(
        "SELECT ip, COUNT(*) AS n FROM failures WHERE time >= ?1 GROUP BY ip ORDER BY n DESC LIMIT ?2",
    )?
    .query_map(params![since, limit], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
    .collect()
}

/// The syslog senders (header host, peer) with most failures since `since`.
pub fn top_senders(
    c: &Connection,
    since: f64,
    limit: u32,
) -> rusqlite::Result<Vec<(String, String, u64)>> {
    c.prepare_cached(
        "SELECT COALESCE(host, ''), COALESCE(peer, ''), COUNT(*) AS n FROM failures
         WHERE time >= ?1 AND peer IS NOT NULL GROUP BY host, peer ORDER BY n DESC LIMIT ?2",
    )?
    .query_map(params![since, limit], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
    })?
    .collect()
}

/// Totals: (bans, failures) ever recorded.
pub fn totals(c: &Connection) -> rusqlite::Result<(u64, u64)> {
    let one = |sql: &str| -> rusqlite::Result<u64> {
        c.prepare_cached(sql)?
            .query_row([], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
    };
    Ok((
        one("SELECT COALESCE(MAX(id), 0) FROM bans")?,
        one("SELECT COALESCE(MAX(id), 0) FROM failures")?,
    ))
}

/// Webhook messages per state, and the last few that failed.
pub fn outbox_summary(
    c: &Connection,
) -> rusqlite::Result<(Vec<(String, u64)>, Vec<(String, String, String)>)> {
    let counts = c
        .prepare_cached("SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state")?
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let failed = c
        .prepare_cached(
            "SELECT webhook, event, COALESCE(last_error, '') FROM outbox WHERE state = 'failed' ORDER BY done DESC LIMIT 5",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((counts, failed))
}
