//! The schema and its migrations: `PRAGMA user_version` is the schema
//! version; each migration runs once, in order, in one transaction.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: failures, bans, log positions, journal cursors
    "CREATE TABLE failures (
        id INTEGER PRIMARY KEY,
        jail TEXT NOT NULL,
        ip TEXT NOT NULL,
        time REAL NOT NULL,
        line TEXT
     );
     CREATE INDEX failures_jail_ip ON failures (jail, ip, time);
     CREATE INDEX failures_time ON failures (time);
     CREATE TABLE bans (
        id INTEGER PRIMARY KEY,
        jail TEXT NOT NULL,
        ip TEXT NOT NULL,
        start REAL NOT NULL,
        end REAL,
        ban_count INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        matches TEXT NOT NULL DEFAULT '[]',
        active INTEGER NOT NULL,
        ended REAL
     );
     CREATE INDEX bans_active ON bans (jail, active);
     CREATE INDEX bans_ip ON bans (ip, jail);
     CREATE TABLE positions (
        jail TEXT NOT NULL,
        path TEXT NOT NULL,
        inode INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        PRIMARY KEY (jail, path)
     );
     CREATE TABLE cursors (
        jail TEXT PRIMARY KEY,
        cursor TEXT NOT NULL
     );",
    // 2: a ban no longer deletes its failures (they are skipped at load),
    // so nothing looks failures up by address: one index less to update
    // at random places on every failure
    "DROP INDEX failures_jail_ip",
    // 3: who sent a failure that came by syslog (header host, peer address)
    "ALTER TABLE failures ADD COLUMN host TEXT; ALTER TABLE failures ADD COLUMN peer TEXT",
    // 4: what the filter captured from the failure behind a ban (user, ...)
    "ALTER TABLE bans ADD COLUMN fields TEXT",
    // 5: the admin view looks an address up (its failures and bans) and
    // charts bans over time
    "CREATE INDEX failures_ip ON failures (ip, time); CREATE INDEX bans_start ON bans (start)",
    // 6: the outbox of notifications (webhooks), written with what they report
    "CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        webhook TEXT NOT NULL,
        event TEXT NOT NULL,
        jail TEXT,
        ip TEXT,
        ban_id INTEGER,
        payload TEXT NOT NULL,
        created REAL NOT NULL,
        due REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        last_error TEXT,
        target TEXT,
        done REAL
     );
     CREATE INDEX outbox_due ON outbox (state, due);
     CREATE INDEX outbox_ban ON outbox (ban_id)",
    // 7: the dashboard's top syslog senders without reading every failure
    "CREATE INDEX failures_sender ON failures (peer, host, time) WHERE peer IS NOT NULL",
    // 8: one address's active ban in a jail (unban, ban extension) without
    // walking all the jail's active bans
    "CREATE INDEX bans_jail_ip_active ON bans (jail, ip, active)",
];

/// Brings the database to the current schema.
pub fn migrate(conn: &Connection) -> Result<(), String> {
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(|e| e.to_string())? as usize;
    if version > MIGRATIONS.len() {
        return Err(format!(
            "schema version {version} is newer than this banhammer understands ({}); use a newer banhammer or another dbfile",
            MIGRATIONS.len()
        ));
    }
    if version == 0 {
        // free pages are returned to the file system by the purge
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            .map_err(|e| e.to_string())?;
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx_sql = format!("BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1);
        conn.execute_batch(&tx_sql)
            .map_err(|e| format!("migration to schema {}: {e}", i + 1))?;
    }
    Ok(())
}
