//! Log files: tailed on their own thread, rotation-safe, resumable.
//!
//! Owns the open files of one `logpath` entry (a path or glob). It reads
//! what was appended, follows rename-and-create rotation (the old file is
//! read to its end first) and copytruncate (the lines written before the
//! truncation are read from the rotated copy when it can be identified),
//! re-checks the glob, and sends lines in chunks to its jail, each chunk
//! followed by the position after it. A file is identified by its inode
//! and a fingerprint of its first line, so a restart resumes exactly where
//! the last committed position was: nothing is read twice or skipped.
//! inotify wakes the thread; every second it also polls, which is all it
//! does with `backend = polling` or where inotify is not available. The
//! watches ask only for what concerns the followed files (their writes;
//! names appearing, moving or going in their directories), so other
//! files written in the same directory (`/var/log/syslog` beside
//! `auth.log`, the daemon's own log or database) wake nothing.

use super::SourceEvent;
use crate::jail::{Checkpoint, Line};
use crate::store::Position;
use inotify::{Inotify, WatchMask};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Lines per chunk sent to the jail, at most (a chunk is what has been
/// written since the last read; this many only while catching up). Its
/// failures and the position after it are one transaction: with the
/// random places an address index is updated at, fewer, larger
/// transactions write far fewer pages (4,096 lines per chunk wrote
/// 480 MB to the WAL for a 26 MB database on 1M sshd lines; 16,384 about
/// 260 MB, and the writing slowed the matching on the other core).
const CHUNK_LINES: usize = 16384;
/// Bytes read at once.
const READ_SIZE: usize = 1 << 20;
/// How long a rotated file is still read after it was replaced.
const ROTATED_GRACE: Duration = Duration::from_secs(10);

/// FNV-1a: stable across builds (positions are stored).
fn fnv(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Fingerprint of a file: its first line (up to 4 KiB); empty while the
/// first line is not complete.
fn fingerprint(file: &mut File) -> String {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    if file.seek(SeekFrom::Start(0)).is_err() {
        return String::new();
    }
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    match memchr::memchr(b'\n', &buf[..n]) {
        Some(p) => fnv(&buf[..=p]),
        None if n == buf.len() => fnv(&buf),
        None => String::new(),
    }
}

/// A file being followed.
struct Tracked {
    path: PathBuf,
    file: File,
    inode: u64,
    offset: u64,
    fingerprint: String,
}

impl Tracked {
    fn open(path: &Path) -> std::io::Result<Tracked> {
        let mut file = File::open(path)?;
        let inode = file.metadata()?.ino();
        let fingerprint = fingerprint(&mut file);
        Ok(Tracked {
            path: path.to_path_buf(),
            file,
            inode,
            offset: 0,
            fingerprint,
        })
    }

    /// Whether the file was truncated and written again past our offset
    /// before we looked (copytruncate under load): its size moved and its
    /// first line is no longer the one we fingerprinted.
    fn rewritten(&mut self, len: u64) -> bool {
        if len == self.offset || self.fingerprint.is_empty() {
            return false;
        }
        let now = fingerprint(&mut self.file);
        !now.is_empty() && now != self.fingerprint
    }

    fn position(&self) -> Position {
        Position {
            inode: self.inode,
            offset: self.offset,
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// Reads the complete lines after `offset` (and with `final_partial`,
    /// an unterminated last line too) and hands them to `f` in batches of
    /// at most `max`, each with the position right after its last line.
    /// Stops early (returning false) when `f` does.
    fn read_chunks(
        &mut self,
        final_partial: bool,
        max: usize,
        f: &mut dyn FnMut(Vec<Arc<str>>, Position) -> bool,
    ) -> std::io::Result<bool> {
        if self.fingerprint.is_empty() {
            self.fingerprint = fingerprint(&mut self.file);
        }
        self.file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0u8; READ_SIZE];
        let mut carry: Vec<u8> = Vec::new();
        let mut batch: Vec<Arc<str>> = Vec::new();
        loop {
            let n = self.file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            carry.extend_from_slice(&buf[..n]);
            let Some(last) = memchr::memrchr(b'\n', &carry) else {
                continue;
            };
            let mut start = 0;
            // one check for the whole block (lines are cut at ASCII bytes,
            // so a valid block gives valid lines); line by line otherwise
            let valid = std::str::from_utf8(&carry[..=last]).ok();
            for nl in memchr::memchr_iter(b'\n', &carry[..=last]) {
                let mut raw = &carry[start..nl];
                while let [rest @ .., b'\r' | b'\n'] = raw {
                    raw = rest;
                }
                batch.push(match valid {
                    Some(text) => Arc::from(&text[start..start + raw.len()]),
                    None => Arc::from(String::from_utf8_lossy(raw).as_ref()),
                });
                self.offset += (nl + 1 - start) as u64;
                start = nl + 1;
                if batch.len() >= max && !f(std::mem::take(&mut batch), self.position()) {
                    return Ok(false);
                }
            }
            carry.drain(..=last);
        }
        if final_partial && !carry.is_empty() {
            batch.push(Arc::from(String::from_utf8_lossy(&carry).as_ref()));
            self.offset += carry.len() as u64;
        }
        if !batch.is_empty() {
            return Ok(f(batch, self.position()));
        }
        Ok(true)
    }
}

pub struct FileSource {
    pub jail: String,
    pub pattern: String,
    pub tail: bool,
    pub polling: bool,
    /// Positions remembered from the last run, by path.
    pub positions: HashMap<String, Position>,
}

/// Files that may hold the lines of a rotated file: `x.1`, `x.0`,
/// `x-DATE`, newest first.
fn rotated_candidates(path: &Path) -> Vec<PathBuf> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    let rest = n.strip_prefix(name)?;
                    let rotated = (rest.starts_with('.') || rest.starts_with('-'))
                        && !rest.ends_with(".gz")
                        && !rest.ends_with(".xz")
                        && !rest.ends_with(".bz2")
                        && !rest.ends_with(".zst");
                    rotated.then(|| {
                        (
                            e.metadata()
                                .and_then(|m| m.modified())
                                .unwrap_or(std::time::UNIX_EPOCH),
                            e.path(),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// The rotated copy of a file we had read up to `pos`: same inode (moved)
/// or same first line (copied), and at least as long as what we read.
fn find_rotated(path: &Path, pos: &Position) -> Option<Tracked> {
    for cand in rotated_candidates(path) {
        let Ok(mut t) = Tracked::open(&cand) else {
            continue;
        };
        let len = t.file.metadata().map(|m| m.len()).unwrap_or(0);
        let same = t.inode == pos.inode
            || (!pos.fingerprint.is_empty() && t.fingerprint == pos.fingerprint);
        if same && len >= pos.offset {
            t.offset = pos.offset;
            return Some(t);
        }
    }
    None
}

/// inotify watches of one file source: its directories for names that
/// appear, move or go (rotation, new files of a glob), its files for
/// writes and truncation.
struct Wakeups {
    inotify: Inotify,
    dirs: Vec<PathBuf>,
    /// The inode each followed path was watched as (a rotated path gets a
    /// watch on its new file; the old one's watch goes with its inode).
    files: HashMap<PathBuf, u64>,
    buffer: Vec<u8>,
}

const DIR_EVENTS: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::ONLYDIR);
const FILE_EVENTS: WatchMask = WatchMask::MODIFY
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CLOSE_WRITE);

impl Wakeups {
    fn new() -> Option<Wakeups> {
        match Inotify::init() {
            Ok(inotify) => Some(Wakeups {
                inotify,
                dirs: Vec::new(),
                files: HashMap::new(),
                buffer: vec![0; 4096],
            }),
            Err(e) => {
                tracing::warn!("inotify is not available, polling every second: {e}");
                None
            }
        }
    }

    fn watch_dir(&mut self, dir: &Path) {
        if !self.dirs.iter().any(|d| d == dir)
            && self.inotify.watches().add(dir, DIR_EVENTS).is_ok()
        {
            self.dirs.push(dir.to_path_buf());
        }
    }

    fn watch_file(&mut self, path: &Path, inode: u64) {
        if self.files.get(path) == Some(&inode) {
            return;
        }
        if self.inotify.watches().add(path, FILE_EVENTS).is_ok() {
            self.files.insert(path.to_path_buf(), inode);
        }
    }

    /// Waits up to `timeout` for an event; true if one came (all pending
    /// events are consumed: one look at the files serves them all).
    fn wait(&mut self, timeout: Duration) -> bool {
        let mut fd = libc::pollfd {
            fd: self.inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, for the duration of the call.
        if unsafe { libc::poll(&mut fd, 1, ms) } <= 0 {
            return false;
        }
        while self.inotify.read_events(&mut self.buffer).is_ok() {}
        true
    }
}

struct Runner<'a> {
    src: &'a FileSource,
    events: &'a dyn Fn(SourceEvent) -> bool,
    live: bool,
}

impl Runner<'_> {
    /// Sends the lines of `t` after its offset, in chunks, then (with
    /// `checkpoint`) its position as the position of `report_as`.
    fn drain(
        &self,
        t: &mut Tracked,
        final_partial: bool,
        report_as: &Path,
        checkpoint: bool,
    ) -> bool {
        let live = self.live;
        let path = report_as.display().to_string();
        let mut pending_err = None;
        // each chunk carries the position after it: its failures and the
        // position are committed together
        let r = t.read_chunks(final_partial, CHUNK_LINES, &mut |texts, pos| {
            let lines = texts
                .into_iter()
                .map(|text| Line {
                    text,
                    time: None,
                    live,
                    origin: None,
                })
                .collect();
            (self.events)(SourceEvent::Chunk {
                lines,
                checkpoint: checkpoint.then(|| Checkpoint::File {
                    path: path.clone(),
                    pos,
                }),
            })
        });
        let ok = match r {
            Ok(ok) => ok,
            Err(e) => {
                pending_err = Some(e);
                true
            }
        };
        if let Some(e) = pending_err {
            tracing::warn!(jail = %self.src.jail, file = %t.path.display(), "read error: {e}");
        }
        ok
    }
}

impl FileSource {
    /// Follows the files until `cancel`; `events` returns false once the
    /// jail is gone.
    pub fn run(self, cancel: CancellationToken, events: &dyn Fn(SourceEvent) -> bool) {
        let mut watcher = if self.polling { None } else { Wakeups::new() };
        let mut tracked: HashMap<PathBuf, Tracked> = HashMap::new();
        let mut rotated: Vec<(Tracked, Instant, PathBuf)> = Vec::new();
        let mut runner = Runner {
            src: &self,
            events,
            live: false,
        };
        let mut first = true;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            // (re)expand the glob
            let paths: Vec<PathBuf> = glob::glob(&self.pattern)
                .map(|g| g.flatten().filter(|p| p.is_file()).collect())
                .unwrap_or_default();
            for p in &paths {
                if let Some(w) = watcher.as_mut() {
                    w.watch_dir(p.parent().unwrap_or(Path::new("/")));
                }
                if tracked.contains_key(p) {
                    continue;
                }
                match self.open_new(p, first, &runner) {
                    Some(t) => {
                        (runner.events)(SourceEvent::Status {
                            id: p.display().to_string(),
                            state: if watcher.is_some() {
                                "inotify"
                            } else {
                                "polling"
                            }
                            .into(),
                        });
                        tracked.insert(p.clone(), t);
                    }
                    None => continue,
                }
            }
            // follow each file
            let keys: Vec<PathBuf> = tracked.keys().cloned().collect();
            for p in keys {
                let Some(t) = tracked.get_mut(&p) else {
                    continue;
                };
                match std::fs::metadata(&p) {
                    Ok(m) if m.ino() != t.inode => {
                        // renamed away and replaced: finish the old one first
                        let _ = runner.drain(t, false, &p, true);
                        match Tracked::open(&p) {
                            Ok(new) => {
                                let old = std::mem::replace(t, new);
                                rotated.push((old, Instant::now(), p.clone()));
                            }
                            Err(_) => continue,
                        }
                    }
                    Ok(m) if m.len() < t.offset || t.rewritten(m.len()) => {
                        // truncated in place (copytruncate): the lines written
                        // after our position went into the copy
                        let before = t.position();
                        if let Some(mut copy) = find_rotated(&p, &before) {
                            let _ = runner.drain(&mut copy, true, &p, false);
                        } else {
                            tracing::warn!(jail = %self.jail, file = %p.display(), "file was truncated and its rotated copy was not found; lines written just before the truncation may be missed");
                        }
                        t.offset = 0;
                        t.fingerprint = String::new();
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // gone for now: keep reading what we have open
                        let _ = runner.drain(t, false, &p, false);
                        continue;
                    }
                }
                if let Some(t) = tracked.get_mut(&p) {
                    if let Some(w) = watcher.as_mut() {
                        w.watch_file(&p, t.inode);
                    }
                    if !runner.drain(t, false, &p, true) {
                        return;
                    }
                }
            }
            // rotated files still being written for a moment
            rotated.retain_mut(|(t, since, path)| {
                let done = since.elapsed() > ROTATED_GRACE;
                let _ = runner.drain(t, done, path, false);
                !done
            });
            if first {
                first = false;
                runner.live = true;
            }
            // sleep until something changes (or poll every second)
            let timeout = Duration::from_secs(1);
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline && !cancel.is_cancelled() {
                let slice = Duration::from_millis(200)
                    .min(deadline.saturating_duration_since(Instant::now()));
                match watcher.as_mut() {
                    Some(w) => {
                        if w.wait(slice) {
                            break;
                        }
                    }
                    None => std::thread::sleep(slice),
                }
            }
        }
    }

    /// Opens a file seen for the first time, at the right place: the stored
    /// position, the rest of its rotated predecessor first if it was
    /// rotated while we were away, the end with ` tail`, else the start.
    fn open_new(&self, p: &Path, at_start: bool, runner: &Runner<'_>) -> Option<Tracked> {
        let mut t = match Tracked::open(p) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(jail = %self.jail, file = %p.display(), "cannot open: {e}");
                return None;
            }
        };
        let len = t.file.metadata().map(|m| m.len()).unwrap_or(0);
        let key = p.display().to_string();
        match self.positions.get(&key) {
            Some(pos)
                if pos.inode == t.inode
                    && (pos.fingerprint.is_empty() || pos.fingerprint == t.fingerprint)
                    && len >= pos.offset =>
            {
                t.offset = pos.offset;
            }
            Some(pos) if at_start => {
                // rotated while the daemon was down: finish the old file
                if let Some(mut old) = find_rotated(p, pos) {
                    if old.inode != t.inode {
                        let _ = runner.drain(&mut old, true, p, false);
                    }
                }
                t.offset = 0;
            }
            _ if self.tail && at_start => t.offset = len,
            _ => t.offset = 0,
        }
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The watches wake the thread for the followed file and for names in
    /// its directory, not for writes to other files there.
    #[test]
    fn only_the_followed_files_and_names_wake_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        let other = dir.path().join("syslog");
        let mut log_f = File::create(&log).unwrap();
        let mut other_f = File::create(&other).unwrap();
        let mut w = Wakeups::new().expect("inotify");
        w.watch_dir(dir.path());
        let inode = std::fs::metadata(&log).unwrap().ino();
        w.watch_file(&log, inode);
        let short = Duration::from_millis(100);
        assert!(!w.wait(short), "nothing happened yet");

        for _ in 0..100 {
            other_f.write_all(b"another file's line\n").unwrap();
        }
        other_f.sync_all().unwrap();
        assert!(!w.wait(short), "a write to another file woke the thread");

        log_f.write_all(b"a line\n").unwrap();
        assert!(
            w.wait(short),
            "a write to the followed file did not wake it"
        );
        assert!(!w.wait(short), "one wake-up serves all pending events");

        // rotation: the name moves away, a new file takes it
        std::fs::rename(&log, dir.path().join("auth.log.1")).unwrap();
        assert!(w.wait(short), "the rename did not wake it");
        File::create(&log).unwrap();
        assert!(w.wait(short), "the new file did not wake it");
        let new_inode = std::fs::metadata(&log).unwrap().ino();
        w.watch_file(&log, new_inode);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"first line of the new file\n")
            .unwrap();
        assert!(w.wait(short), "a write to the new file did not wake it");
        // the rotated file is still read for a while: its writes count too
        log_f.write_all(b"late line of the old file\n").unwrap();
        assert!(w.wait(short), "a write to the rotated file did not wake it");
    }
}
