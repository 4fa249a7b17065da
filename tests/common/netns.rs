//! Network namespaces for firewall tests: created by the test, joined by
//! veth pairs, always deleted (also when the test fails). Code runs inside
//! a namespace on a thread of its own (`setns`), so sockets the test opens
//! there are real traffic between namespaces; the host's own network and
//! firewall are never touched.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip ARGS` (inside `ns` if given); panics with its message.
pub fn ip(ns: Option<&str>, args: &[&str]) {
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["netns", "exec", ns, "ip"]);
    }
    let out = c.args(args).output().expect("run ip (package iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?} in {ns:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command inside `ns`; returns (success, stdout, stderr).
pub fn exec(ns: &str, argv: &[&str]) -> (bool, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .output()
        .expect("ip netns exec");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A namespace that is deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Netns {
        let name = format!(
            "bh{}-{}-{role}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(None, &["netns", "add", &name]);
        let ns = Netns { name };
        ip(Some(&ns.name), &["link", "set", "lo", "up"]);
        // no duplicate address detection: addresses (link-local ones too)
        // are usable at once, not seconds later
        for key in ["all", "default"] {
            ns.sysctl(&format!("net.ipv6.conf.{key}.accept_dad"), "0");
            ns.sysctl(&format!("net.ipv6.conf.{key}.dad_transmits"), "0");
        }
        ns
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        let (ok, _, err) = exec(
            &self.name,
            &["sysctl", "-q", "-w", &format!("{key}={value}")],
        );
        assert!(ok, "sysctl {key} in {}: {err}", self.name);
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("thread in namespace")
    }

    /// A TCP service inside this namespace on `port` (IPv4 and IPv6):
    /// answers every connection with `hello\n`. It lives as long as the
    /// test process.
    pub fn serve_hello(&self, port: u16) {
        let path = format!("/var/run/netns/{}", self.name);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            enter(&path);
            let l = std::net::TcpListener::bind(("::", port)).expect("bind the test service");
            tx.send(()).unwrap();
            for s in l.incoming().flatten() {
                let mut s = s;
                let _ = s.write_all(b"hello\n");
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("service up");
    }

    /// Connects from this namespace to `to`; Ok(the greeting) or the error.
    pub fn connect(&self, to: SocketAddr) -> std::io::Result<String> {
        self.run(move || {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(1500))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        })
    }

    /// An HTTP GET from this namespace; (status line, body).
    pub fn http_get(&self, to: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n");
        self.run(move || {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(1500))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(req.as_bytes())?;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            let text = String::from_utf8_lossy(&buf).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            Ok((
                head.lines().next().unwrap_or("").to_string(),
                body.to_string(),
            ))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn enter(path: &str) {
    let f = std::fs::File::open(path).expect("open the namespace");
    // SAFETY: setns on a valid namespace fd; it changes only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Joins `a` and `b` with a veth pair; `a4`/`b4` are IPv4 and `a6`/`b6`
/// IPv6 addresses with prefix (`10.1.0.1/24`, `fd00:1::1/64`).
pub fn link(a: &Netns, b: &Netns, a4: &str, b4: &str, a6: &str, b6: &str) {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let (va, vb) = (format!("bha{n}"), format!("bhb{n}"));
    ip(
        None,
        &[
            "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns",
            &b.name,
        ],
    );
    for (ns, dev, v4, v6) in [(a, &va, a4, a6), (b, &vb, b4, b6)] {
        ip(Some(&ns.name), &["addr", "add", v4, "dev", dev]);
        ip(
            Some(&ns.name),
            &["-6", "addr", "add", v6, "dev", dev, "nodad"],
        );
        ip(Some(&ns.name), &["link", "set", dev, "up"]);
    }
}

/// The elements of a jail's banhammer sets inside `ns`, as nft lists them.
pub fn elements(ns: &Netns, set: &str) -> Vec<String> {
    let (ok, out, _) = exec(
        &ns.name,
        &["nft", "-j", "list", "set", "inet", "banhammer", set],
    );
    if !ok {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let mut found = Vec::new();
    for item in v["nftables"].as_array().cloned().unwrap_or_default() {
        for e in item["set"]["elem"].as_array().cloned().unwrap_or_default() {
            let val = if e["elem"].is_object() {
                e["elem"]["val"].clone()
            } else {
                e
            };
            found.push(match val {
                serde_json::Value::String(s) => s,
                v if v["prefix"].is_object() => format!(
                    "{}/{}",
                    v["prefix"]["addr"].as_str().unwrap_or_default(),
                    v["prefix"]["len"]
                ),
                v => v.to_string(),
            });
        }
    }
    found
}
