//! Faults and hostile input: a full disk under the database (bans are
//! enforced from memory and written once space returns), `kill -9` at
//! random moments of heavy ingest (the database stays sound, every
//! acknowledged ban comes back), log injection through every shipped
//! filter, and `ignoreip` in every notation an address can take.
//!
//! `BANHAMMER_SOAK=1` runs the long forms (100 kills instead of 10).

mod common;
use common::netns::{elements, Netns};
use common::receiver::{Receiver, SECRET};
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs the test mounts and always unmounts.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs (the tests run as root)");
        Tmpfs { dir }
    }

    /// Fills the file system to the last byte.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.path().join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let mut one = [0u8; 1];
        while f.write_all(&mut one).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("filler"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

const RECORD_ACTION: &str = "[Definition]\nactionban = printf '%%s\\n' \"<ip>\" >> <target>\nactionunban = true\n[Init]\ntarget = /dev/null\n";

#[test]
fn a_full_disk_does_not_stop_bans_and_loses_none() {
    let fs = Tmpfs::mount("3m");
    let s = Setup::new("");
    let d = s.dir.path().display().to_string();
    let db = fs.dir.path().join("bh.sqlite3");
    s.write(
        "conf/banhammer.conf",
        &format!("[Definition]\nloglevel = INFO\nlogtarget = {d}/banhammer.log\nsocket = {d}/bh.sock\npidfile = {d}/bh.pid\ndbfile = {}\n", db.display()),
    );
    s.write("conf/action.d/record.conf", RECORD_ACTION);
    s.write("auth.log", "");
    let enforced = s.path("enforced.txt");
    s.write(
        "conf/jail.conf",
        &format!(
            "[sshd]\nenabled = true\nfilter = sshd\nlogpath = {}\nmaxretry = 1\nbantime = 1h\naction = record[target=\"{}\"]\n",
            s.path("auth.log").display(),
            enforced.display()
        ),
    );
    let daemon = s.start();
    fs.fill();
    let ips: Vec<String> = (1..=3).map(|i| format!("192.0.2.{}", 100 + i)).collect();
    let lines: Vec<String> = ips
        .iter()
        .enumerate()
        .map(|(n, ip)| {
            sshd_failure(ip, "root").replace("sshd[4242]", &format!("sshd[{}]", 700 + n))
        })
        .collect();
    s.append("auth.log", &lines);
    // enforced from memory although nothing can be written
    wait_for("the bans enforced", Duration::from_secs(15), || {
        let text = std::fs::read_to_string(&enforced).unwrap_or_default();
        ips.iter().all(|ip| text.contains(ip.as_str()))
    });
    for ip in &ips {
        assert!(daemon.is_banned(ip), "{ip} shown as banned");
    }
    wait_for("the error reported", Duration::from_secs(10), || {
        s.log().contains("cannot write to the database")
    });
    assert!(
        s.log()
            .contains("Ban enforced before the database recorded it"),
        "{}",
        s.log()
    );
    // space comes back: the bans are written, and survive a restart
    fs.free();
    wait_for("the bans written", Duration::from_secs(30), || {
        s.log().contains("Ban recorded in the database")
            && s.log().matches("Ban recorded in the database").count() >= 3
    });
    daemon.stop();
    let daemon = s.start();
    for ip in &ips {
        assert!(
            daemon.is_banned(ip),
            "{ip} restored from the database after the restart"
        );
    }
    daemon.stop();
}

/// `kill -9` at random moments while lines stream in and bans are made,
/// the daemon in a network namespace of the test's with native nftables and
/// a webhook: after each restart the database is sound and every ban the
/// daemon had acknowledged (listed by `banned`) is still active, in SQLite
/// and in the kernel's set; in the end every ban's webhook message arrived.
#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_ban() {
    let rounds = if std::env::var("BANHAMMER_SOAK").is_ok() {
        100
    } else {
        10
    };
    let ns = Netns::new("kill9");
    let rx = Receiver::default();
    rx.start_in(Some(&ns), 18080);
    let s = Setup::new("");
    s.write("auth.log", "");
    s.write(
        "conf/jail.conf",
        &format!(
            "[sshd]\nenabled = true\nfilter = sshd\nlogpath = {}\nmaxretry = 2\nfindtime = 1h\nbantime = 1d\naction = nftables[port=\"22\", protocol=\"tcp\"]\n",
            s.path("auth.log").display()
        ),
    );
    s.write_daemon_conf(&format!(
        "[webhook hook]\nurl = http://127.0.0.1:18080/hook\nevents = ban\nsecret = {SECRET}\nretry = 1s\n"
    ));
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut acknowledged: std::collections::HashSet<String> = Default::default();
    let mut n = 0u32;
    for round in 0..rounds {
        let d = s.start_in(Some(&ns.name));
        // everything acknowledged before is still banned
        let now: std::collections::HashSet<String> = d
            .banned()
            .iter()
            .filter_map(|b| b["ip"].as_str().map(String::from))
            .collect();
        let lost: Vec<&String> = acknowledged.difference(&now).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged bans lost: {lost:?}"
        );
        // and in the kernel (the table is rebuilt from SQLite at start)
        let mut missing = Vec::new();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            let set: std::collections::HashSet<String> =
                elements(&ns, "sshd_v4").into_iter().collect();
            missing = acknowledged.difference(&set).cloned().collect();
            if missing.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged bans not in the nft set: {} (e.g. {:?})",
            missing.len(),
            missing.first()
        );
        // a burst of failures, then a kill at a random moment within it
        let writer = {
            let log = s.path("auth.log");
            let start = n;
            std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
                for i in 0..400u32 {
                    let k = start + i;
                    let ip = format!(
                        "10.{}.{}.{}",
                        100 + (k >> 16) % 100,
                        (k >> 8) & 255,
                        k & 255
                    );
                    let line = sshd_failure(&ip, "root")
                        .replace("sshd[4242]", &format!("sshd[{}]", 30_000 + k));
                    let _ = writeln!(f, "{line}\n{line}");
                    if i % 50 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        };
        n += 400;
        std::thread::sleep(Duration::from_millis(rnd() % 400));
        acknowledged = d
            .banned()
            .iter()
            .filter_map(|b| b["ip"].as_str().map(String::from))
            .collect();
        d.kill9();
        writer.join().unwrap();
        let out = Command::new("python3")
            .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])"])
            .arg(s.path("bh.sqlite3"))
            .output()
            .expect("python3 sqlite3");
        let verdict = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            verdict.trim(),
            "ok",
            "round {round}: integrity_check: {verdict} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // at the end every address has two failures: every one is banned
    let d = s.start_in(Some(&ns.name));
    let expected = n as usize;
    let t = Instant::now();
    while d.banned().len() < expected && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        d.banned().len(),
        expected,
        "every address banned exactly once in the end"
    );
    // no webhook lost: a ban message for every address (duplicates from
    // the kills are allowed; the receiver drops them by id)
    let t = Instant::now();
    let mut told = std::collections::HashSet::new();
    while t.elapsed() < Duration::from_secs(60) {
        told = rx
            .unique("ban")
            .values()
            .filter_map(|m| m.body["ip"].as_str().map(String::from))
            .collect::<std::collections::HashSet<String>>();
        if told.len() >= expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(told.len(), expected, "a ban message for every ban");
    assert_eq!(*rx.bad_signatures.lock().unwrap(), 0);
    d.stop();
}

/// Attacker-written text through every shipped filter: user names, URLs
/// and headers that contain `from <address>`, fake dates, newlines, NULs and
/// ANSI escapes. No failure may name the injected address.
#[test]
fn log_injection_never_yields_the_injected_address() {
    let injected = "198.51.100.66";
    let payloads = [
        format!("x from {injected} port 22"),
        format!("{injected}"),
        format!("from {injected}"),
        format!("rhost={injected} user=root"),
        format!("\u{1b}[2K\rfrom {injected}"),
        format!("a\u{0}b from {injected}"),
        format!(
            "Nov 22 10:15:02 srv sshd[1]: Failed password for root from {injected} port 22 ssh2"
        ),
        format!("[client {injected}] user admin: authentication failure"),
        format!("X-Forwarded-For: {injected}"),
    ];
    let real = "192.0.2.33";
    // each template puts the payload where an attacker controls the text
    let templates = [
        ("sshd", format!("Dec  1 10:00:00 srv sshd[900]: Failed password for invalid user PAYLOAD from {real} port 22 ssh2")),
        ("sshd", format!("Dec  1 10:00:00 srv sshd[901]: Invalid user PAYLOAD from {real} port 4242")),
        ("nginx-http-auth", format!("2026/12/01 10:00:00 [error] 8#8: *1 user \"PAYLOAD\" was not found in \"/etc/nginx/.htpasswd\", client: {real}, server: example.org, request: \"GET / HTTP/1.1\", host: \"example.org\"")),
        ("apache-auth", format!("[Tue Dec 01 10:00:00.000000 2026] [auth_basic:error] [pid 1] [client {real}:4242] AH01618: user PAYLOAD not found: /")),
        ("postfix", format!("Dec  1 10:00:00 mail postfix/smtpd[1]: warning: unknown[{real}]: SASL LOGIN authentication failed: PAYLOAD")),
        ("dovecot", format!("Dec  1 10:00:00 mail dovecot: auth: passwd-file(PAYLOAD,{real}): unknown user")),
        ("vsftpd", format!("Tue Dec  1 10:00:00 2026 [pid 1] [PAYLOAD] FAIL LOGIN: Client \"{real}\"")),
        ("elgg", format!("Dec  1 10:00:00 web elgg(web.example.com)[1]: Authentication failure for PAYLOAD from {real}")),
        ("webapp", format!("[2026-12-01 10:00:00] Authorization failure: {real} PAYLOAD")),
        ("recidive", "2026-12-01 10:00:00,123 banhammer.jail [1]: NOTICE  [PAYLOAD] Ban 192.0.2.33".to_string()),
        ("banhammer-admin", format!("2026-12-01 10:00:00,123 banhammer.web [1]: WARNING [admin] Failed admin login from {real} PAYLOAD")),
        ("nginx-limit-req", format!("2026/12/01 10:00:00 [error] 8#8: *1 limiting requests, excess: 1.000 by zone \"PAYLOAD\", client: {real}, server: example.org, request: \"GET / HTTP/1.1\", host: \"example.org\"")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (filter, template) in &templates {
        let mut log = String::new();
        for p in &payloads {
            // the payload as one line (newlines inside it stay inside)
            log.push_str(&template.replace("PAYLOAD", &p.replace('\n', " ")));
            log.push('\n');
        }
        let path = dir.path().join(format!("{filter}.log"));
        std::fs::write(&path, log).unwrap();
        let out = Command::new(bin())
            .args([
                "test-filter",
                "--json",
                "--now",
                "1796000000",
                "--filter-dir",
            ])
            .arg(repo().join("filters"))
            .arg(filter)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{filter}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_ne!(v["host"], injected, "{filter} was fooled: {line}");
            checked += 1;
        }
    }
    assert!(
        checked >= templates.len() * payloads.len(),
        "every line went through: {checked}"
    );
}

#[test]
fn ignoreip_wins_in_every_notation() {
    let s = Setup::new("");
    s.write("auth.log", "");
    s.write(
        "conf/jail.conf",
        &format!(
            "[sshd]\nenabled = true\nfilter = sshd\nlogpath = {}\nmaxretry = 1\nignoreip = 192.0.2.200 2001:db8:1::/48\n",
            s.path("auth.log").display()
        ),
    );
    let d = s.start();
    let forms = [
        "::ffff:192.0.2.200",
        "192.0.2.200",
        "2001:db8:1::7",
        "2001:0db8:0001:0000::9",
        "[2001:db8:1::8]",
    ];
    let lines: Vec<String> = forms
        .iter()
        .enumerate()
        .map(|(n, ip)| {
            sshd_failure(ip, "root").replace("sshd[4242]", &format!("sshd[{}]", 800 + n))
        })
        .collect();
    s.append("auth.log", &lines);
    // a control address that is not ignored, after them
    s.append(
        "auth.log",
        &[sshd_failure("192.0.2.201", "root").replace("sshd[4242]", "sshd[899]")],
    );
    wait_for("the control ban", Duration::from_secs(10), || {
        d.is_banned("192.0.2.201")
    });
    let banned: Vec<String> = d
        .banned()
        .iter()
        .filter_map(|b| b["ip"].as_str().map(String::from))
        .collect();
    assert_eq!(banned, ["192.0.2.201"], "only the control address");
    d.stop();
}
