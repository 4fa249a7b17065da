//! The systemd journal, read through libsystemd on its own thread (a
//! `Journal` cannot move between threads).
//!
//! Owns one reader: the jail's `journalmatch` (each entry a match group,
//! `+` between alternatives), the journal files or directories the backend
//! names, the cursor to resume from. Entries reach the jail formatted as
//! Fail2Ban's journal backend formats them (`HOST IDENT[PID]: MESSAGE`)
//! with the entry's own time; every chunk is followed by the cursor of its
//! last entry, so a restart continues right after it.

use super::SourceEvent;
use crate::jail::{Checkpoint, Line};
use std::path::PathBuf;
use std::time::Duration;
use systemd::journal::{self, Journal, JournalRecord};
use tokio_util::sync::CancellationToken;

pub struct JournalSource {
    pub jail: String,
    pub paths: Vec<PathBuf>,
    pub files: Vec<PathBuf>,
    pub flags: Option<i32>,
    /// `journalmatch` entries.
    pub matches: Vec<String>,
    pub cursor: Option<String>,
    /// Without a cursor: start this many seconds back (the jail's findtime).
    pub lookback: f64,
}

/// Fail2Ban's journal line: `HOST IDENT[PID]: MESSAGE`.
pub fn format_entry(e: &JournalRecord) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(h) = e.get("_HOSTNAME").filter(|v| !v.is_empty()) {
        parts.push(h.clone());
    }
    let ident = e
        .get("SYSLOG_IDENTIFIER")
        .filter(|v| !v.is_empty())
        .or_else(|| e.get("_COMM").filter(|v| !v.is_empty()));
    if let Some(id) = ident {
        let mut s = id.clone();
        if let Some(pid) = e
            .get("SYSLOG_PID")
            .filter(|v| !v.is_empty())
            .or_else(|| e.get("_PID"))
        {
            s.push_str(&format!("[{}]", pid.trim()));
        }
        s.push(':');
        parts.push(s);
    }
    parts.push(e.get("MESSAGE").cloned().unwrap_or_default());
    parts.join(" ").replace('\n', "\\n")
}

#[derive(Debug, thiserror::Error)]
#[error("jail '{jail}': journal: {msg}")]
pub struct JournalError {
    pub jail: String,
    pub msg: String,
}

impl JournalSource {
    fn open(&self) -> Result<Journal, JournalError> {
        let err = |msg: String| JournalError {
            jail: self.jail.clone(),
            msg,
        };
        let mut j = if !self.files.is_empty() {
            let files: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
            journal::OpenFilesOptions::default()
                .open_files(files.iter().map(String::as_str))
                .map_err(|e| err(format!("cannot open journal files {files:?}: {e}")))?
        } else if let Some(dir) = self.paths.first() {
            journal::OpenDirectoryOptions::default()
                .open_directory(dir.display().to_string().as_str())
                .map_err(|e| {
                    err(format!(
                        "cannot open journal directory {}: {e}",
                        dir.display()
                    ))
                })?
        } else {
            let mut o = journal::OpenOptions::default();
            if let Some(f) = self.flags {
                o.extra_raw_flags(f);
            }
            o.open()
                .map_err(|e| err(format!("cannot open the system journal: {e}")))?
        };
        for (i, m) in self.matches.iter().enumerate() {
            if i > 0 {
                j.match_or().map_err(|e| err(e.to_string()))?;
            }
            for term in m.split_whitespace() {
                if term == "+" {
                    j.match_or().map_err(|e| err(e.to_string()))?;
                    continue;
                }
                let Some((k, v)) = term.split_once('=') else {
                    return Err(err(format!(
                        "journalmatch term {term:?} is not FIELD=value"
                    )));
                };
                j.match_add(k, v)
                    .map_err(|e| err(format!("journalmatch {term:?}: {e}")))?;
            }
        }
        Ok(j)
    }

    /// Reads until `cancel`.
    pub fn run(self, cancel: CancellationToken, events: &dyn Fn(SourceEvent) -> bool) {
        let mut j = match self.open() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("{e}");
                events(SourceEvent::Status {
                    id: "journal".into(),
                    state: format!("error: {}", e.msg),
                });
                return;
            }
        };
        let mut skip_cursor: Option<String> = None;
        let positioned = match &self.cursor {
            Some(c) => match j.seek_cursor(c.as_str()) {
                Ok(()) => {
                    skip_cursor = Some(c.clone());
                    true
                }
                Err(e) => {
                    tracing::warn!(jail = %self.jail, "stored journal cursor not usable ({e}); starting {}s back", self.lookback);
                    false
                }
            },
            None => false,
        };
        if !positioned {
            let since = (crate::jail::now() - self.lookback).max(0.0);
            let _ = j.seek_realtime_usec((since * 1e6) as u64);
        }
        events(SourceEvent::Status {
            id: "journal".into(),
            state: "following".into(),
        });
        let mut live = false;
        while !cancel.is_cancelled() {
            let mut lines = Vec::new();
            let mut last_cursor = None;
            while lines.len() < 1024 {
                match j.next_entry() {
                    Ok(Some(e)) => {
                        let cursor = j.cursor().ok();
                        if let (Some(skip), Some(c)) = (&skip_cursor, &cursor) {
                            if skip == c {
                                skip_cursor = None;
                                continue;
                            }
                        }
                        skip_cursor = None;
                        let time = j
                            .timestamp_usec()
                            .map(|u| u as f64 / 1e6)
                            .unwrap_or_else(|_| crate::jail::now());
                        lines.push(Line {
                            text: format_entry(&e).into(),
                            time: Some(time),
                            live,
                            origin: None,
                        });
                        last_cursor = cursor;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(jail = %self.jail, "journal read error: {e}");
                        break;
                    }
                }
            }
            let got = !lines.is_empty();
            if got
                && !events(SourceEvent::Chunk {
                    lines,
                    checkpoint: last_cursor.map(Checkpoint::Cursor),
                })
            {
                return;
            }
            if !got {
                live = true;
                let _ = j.wait(Some(Duration::from_millis(250)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_look_like_fail2ban_journal_lines() {
        let mut e = JournalRecord::new();
        e.insert("_HOSTNAME".into(), "srv".into());
        e.insert("SYSLOG_IDENTIFIER".into(), "sshd".into());
        e.insert("_PID".into(), "42".into());
        e.insert(
            "MESSAGE".into(),
            "Failed password for root from 192.0.2.1 port 22 ssh2".into(),
        );
        assert_eq!(
            format_entry(&e),
            "srv sshd[42]: Failed password for root from 192.0.2.1 port 22 ssh2"
        );
        e.remove("SYSLOG_IDENTIFIER");
        e.insert("_COMM".into(), "sshd-session".into());
        e.insert("MESSAGE".into(), "a\nb".into());
        assert_eq!(format_entry(&e), "srv sshd-session[42]: a\\nb");
    }
}
