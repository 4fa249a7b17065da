//! Helpers for the daemon tests: a configuration directory in a temp dir,
//! the real `banhammer` binary started on it, and its CLI.
#![allow(dead_code)]

pub mod netns;
pub mod receiver;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_banhammer")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A configuration directory with the shipped filters and a
/// `banhammer.conf` that keeps everything inside the temp dir.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new(jail_conf: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(conf.join("filter.d")).unwrap();
        for e in std::fs::read_dir(repo().join("filters")).unwrap().flatten() {
            std::fs::copy(e.path(), conf.join("filter.d").join(e.file_name())).unwrap();
        }
        let s = Setup { dir };
        s.write_daemon_conf("");
        s.write("conf/jail.conf", jail_conf);
        s
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn conf(&self) -> PathBuf {
        self.path("conf")
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }

    pub fn write_daemon_conf(&self, extra: &str) {
        let d = self.dir.path().display();
        self.write(
            "conf/banhammer.conf",
            &format!(
                "[Definition]\nloglevel = DEBUG\nlogtarget = {d}/banhammer.log\nsocket = {d}/bh.sock\npidfile = {d}/bh.pid\ndbfile = {d}/bh.sqlite3\n{extra}"
            ),
        );
    }

    pub fn append(&self, rel: &str, lines: &[String]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(rel))
            .unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        f.flush().unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("banhammer.log")).unwrap_or_default()
    }

    pub fn start(&self) -> Daemon {
        self.start_in(None)
    }

    /// Starts the daemon inside a network namespace (`ip netns exec`).
    pub fn start_in(&self, netns: Option<&str>) -> Daemon {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin()]);
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .args([
                "--config-dir",
                self.conf().to_str().unwrap(),
                "run",
                "--foreground",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start banhammer");
        let d = Daemon {
            child: Some(child),
            conf: self.conf(),
            socket: self.path("bh.sock"),
        };
        d.wait_ready();
        d
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub conf: PathBuf,
    pub socket: PathBuf,
}

impl Daemon {
    fn wait_ready(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if self.try_ctl(&["ping"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "banhammer did not answer on {} within 30 s",
            self.socket.display()
        );
    }

    /// Runs `banhammer --json ARGS` against this daemon.
    pub fn try_ctl(&self, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(bin())
            .args(["--socket", self.socket.to_str().unwrap(), "--json"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    pub fn ctl(&self, args: &[&str]) -> Value {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("banhammer {args:?} failed: {e}"))
    }

    /// The active bans as (address, jail) with start and end.
    pub fn banned(&self) -> Vec<Value> {
        self.ctl(&["banned"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The active ban of `ip` (panics if there is none).
    pub fn ban_of(&self, ip: &str) -> Value {
        self.banned()
            .into_iter()
            .find(|b| b["ip"] == ip)
            .unwrap_or_else(|| panic!("{ip} is not banned"))
    }

    pub fn is_banned(&self, ip: &str) -> bool {
        self.banned().iter().any(|b| b["ip"] == ip)
    }

    pub fn jail_status(&self, jail: &str) -> Value {
        self.ctl(&["status", jail])
    }

    /// Waits until the jail has read `n` lines.
    pub fn wait_lines(&self, jail: &str, n: u64) {
        wait_for(
            &format!("jail {jail} to read {n} lines"),
            Duration::from_secs(30),
            || self.jail_status(jail)["lines"].as_u64().unwrap_or(0) >= n,
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `banhammer stop` and wait for the exit.
    pub fn stop(mut self) -> String {
        let _ = self.try_ctl(&["stop"]);
        let mut err = String::new();
        if let Some(mut c) = self.child.take() {
            let t = Instant::now();
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if t.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                    panic!("banhammer did not stop within 30 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            use std::io::Read;
            if let Some(mut e) = c.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
        }
        err
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `openssl ARGS` in `dir` (keys and certificates for TLS tests).
pub fn openssl(args: &[&str], dir: &Path) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(st.success(), "openssl {args:?}");
}

/// Polls `cond` until it holds or `timeout` passes (then panics).
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// An sshd failure line in syslog file format, dated now.
pub fn sshd_failure(ip: &str, user: &str) -> String {
    let now = chrono::Local::now();
    format!(
        "{} srv sshd[4242]: Failed password for {user} from {ip} port 22 ssh2",
        now.format("%b %e %H:%M:%S")
    )
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
