//! Notifications against real receivers started by the tests: an HTTP
//! server that checks webhook signatures and drops duplicate message ids
//! (as a receiver should), down for a while and then up; the daemon killed
//! with `kill -9` while a thousand messages wait; a scheduled message
//! cancelled from the CLI; and a UDP listener reading StatsD lines.

mod common;
use common::receiver::{Receiver, SECRET};
use common::*;
use std::collections::{HashMap, HashSet};
use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon whose sshd jail bans at the first failure, with a webhook.
fn setup(port: u16, extra: &str) -> Setup {
    let s = Setup::new("");
    s.write("auth.log", "");
    s.write(
        "conf/jail.conf",
        &format!(
            "[sshd]\nenabled = true\nfilter = sshd\nlogpath = {}\nmaxretry = 1\nfindtime = 1h\nbantime = 1h\n",
            s.path("auth.log").display()
        ),
    );
    s.write_daemon_conf(&format!(
        "[webhook hook]\nurl = http://127.0.0.1:{port}/hook\nevents = ban unban ban-extended start stop\nsecret = {SECRET}\nretry = 1s\nmax_age = 1h\ntimeout = 5s\n{extra}"
    ));
    s
}

/// One failed login for each address, each on its own sshd connection.
fn failures(s: &Setup, ips: &[String]) {
    let lines: Vec<String> = ips
        .iter()
        .enumerate()
        .map(|(n, ip)| {
            sshd_failure(ip, "root").replace("sshd[4242]", &format!("sshd[{}]", 10_000 + n))
        })
        .collect();
    s.append("auth.log", &lines);
}

fn addresses(n: usize, third: u8) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{third}.{}.{}", i / 250, i % 250 + 1))
        .collect()
}

#[test]
fn signed_messages_arrive_once_after_the_receiver_comes_back_and_cancelled_ones_never() {
    let port = free_port();
    let rx = Receiver::default();
    let s = setup(port, "");
    let d = s.start();
    // the receiver is down: bans happen, messages wait
    let ips = addresses(20, 50);
    failures(&s, &ips);
    wait_for("20 bans", Duration::from_secs(15), || {
        d.banned().len() == 20
    });
    std::thread::sleep(Duration::from_secs(2));
    let pending = d.ctl(&["outbox", "list", "--state", "pending"]);
    let pending = pending.as_array().unwrap();
    let bans_waiting = pending.iter().filter(|m| m["event"] == "ban").count();
    assert_eq!(
        bans_waiting, 20,
        "ban messages wait in the outbox: {pending:?}"
    );
    assert!(
        pending
            .iter()
            .filter(|m| m["event"] == "ban")
            .all(|m| m["attempts"].as_u64() >= Some(1)),
        "they were tried"
    );
    // cancel the scheduled unban of one address
    let cancel = pending
        .iter()
        .find(|m| m["event"] == "unban" && m["ip"] == ips[0])
        .expect("a scheduled unban message");
    d.ctl(&["outbox", "cancel", cancel["id"].as_str().unwrap()]);

    rx.start(port);
    let bans = rx.wait_unique("ban", 20, Duration::from_secs(30));
    let seen: HashSet<String> = bans
        .values()
        .map(|m| m.body["ip"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, ips.iter().cloned().collect(), "every ban, once each");
    for m in bans.values() {
        assert_eq!(m.body["jail"], "sshd");
        assert_eq!(m.body["failures"], 1);
        assert_eq!(m.body["id"], m.id.as_str(), "the id in header and body");
        assert!(m.body["end"].as_f64().unwrap() > m.body["start"].as_f64().unwrap());
    }
    assert_eq!(
        *rx.bad_signatures.lock().unwrap(),
        0,
        "every signature verifies"
    );
    rx.wait_unique("start", 1, Duration::from_secs(10));
    // early unbans: the scheduled message goes now, the cancelled one never
    d.ctl(&["unban", &ips[0], &ips[1]]);
    rx.wait_unique("unban", 1, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    let unbans: Vec<String> = rx
        .unique("unban")
        .values()
        .map(|m| m.body["ip"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        unbans,
        vec![ips[1].clone()],
        "only the unban that was not cancelled: {unbans:?}"
    );
    // banned again by hand while banned: the ban is extended
    d.ctl(&["ban", "sshd", &ips[2]]);
    let ext = rx.wait_unique("ban-extended", 1, Duration::from_secs(15));
    assert_eq!(ext.values().next().unwrap().body["ip"], ips[2].as_str());
    d.stop();
    rx.wait_unique("stop", 1, Duration::from_secs(10));
}

/// With the receiver up, a burst of bans is delivered once each: a message
/// handed to the sender is not handed out again while its outcome is being
/// recorded.
#[test]
fn a_burst_is_delivered_once_each() {
    let port = free_port();
    let rx = Receiver::default();
    rx.start(port);
    let s = setup(port, "");
    let d = s.start();
    let ips = addresses(1500, 70);
    failures(&s, &ips);
    rx.wait_unique("ban", 1500, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let copies = rx
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.event == "ban")
        .count();
    assert_eq!(copies, 1500, "every ban message arrived exactly once");
    d.stop();
}

#[test]
fn a_thousand_pending_messages_survive_kill_9() {
    let port = free_port();
    let rx = Receiver::default();
    let s = setup(port, "");
    let d = s.start();
    let ips = addresses(1000, 60);
    failures(&s, &ips);
    wait_for("1000 bans", Duration::from_secs(60), || {
        d.jail_status("sshd")["total_banned"].as_u64() == Some(1000)
    });
    let pending = d.ctl(&["outbox", "list", "--state", "pending"]);
    let waiting = pending
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["event"] == "ban")
        .count();
    assert_eq!(waiting, 1000);
    d.kill9();
    rx.start(port);
    let d = s.start();
    let bans = rx.wait_unique("ban", 1000, Duration::from_secs(60));
    let seen: HashSet<&str> = bans
        .values()
        .map(|m| m.body["ip"].as_str().unwrap())
        .collect();
    assert_eq!(seen.len(), 1000);
    assert_eq!(*rx.bad_signatures.lock().unwrap(), 0);
    d.stop();
}

#[test]
fn statsd_gets_counters_gauges_and_timers() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sport = udp.local_addr().unwrap().port();
    let s = Setup::new("");
    s.write("auth.log", "");
    s.write(
        "conf/jail.conf",
        &format!(
            "[sshd]\nenabled = true\nfilter = sshd\nlogpath = {}\nmaxretry = 2\nbantime = 1h\n",
            s.path("auth.log").display()
        ),
    );
    s.write_daemon_conf(&format!(
        "[statsd]\nhost = 127.0.0.1\nport = {sport}\nprefix = bh.test\ninterval = 0.3s\n"
    ));
    let d = s.start();
    let ips = addresses(3, 70);
    // two failures each: three bans, six failures
    let mut lines = Vec::new();
    for (n, ip) in ips.iter().enumerate() {
        for k in 0..2 {
            lines.push(
                sshd_failure(ip, "root")
                    .replace("sshd[4242]", &format!("sshd[{}]", 20_000 + n * 2 + k)),
            );
        }
    }
    s.append("auth.log", &lines);
    wait_for("3 bans", Duration::from_secs(10), || d.banned().len() == 3);
    let mut sums: HashMap<String, f64> = HashMap::new();
    let mut gauges: HashMap<String, f64> = HashMap::new();
    let mut timers: HashMap<String, usize> = HashMap::new();
    let t = Instant::now();
    let mut buf = [0u8; 65536];
    while t.elapsed() < Duration::from_secs(10) {
        let Ok(n) = udp.recv(&mut buf) else { continue };
        for line in std::str::from_utf8(&buf[..n]).unwrap().lines() {
            let (name, rest) = line.split_once(':').expect("name:value|type");
            let (value, kind) = rest.split_once('|').expect("value|type");
            let v: f64 = value.parse().expect("a number");
            assert!(name.starts_with("bh.test."), "{line}");
            match kind.split('|').next().unwrap() {
                "c" => *sums.entry(name.into()).or_default() += v,
                "g" => {
                    gauges.insert(name.into(), v);
                }
                "ms" => *timers.entry(name.into()).or_default() += 1,
                other => panic!("unknown type {other} in {line}"),
            }
        }
        if sums.get("bh.test.failures.sshd") == Some(&6.0)
            && sums.get("bh.test.bans.sshd") == Some(&3.0)
            && gauges.get("bh.test.active_bans.sshd") == Some(&3.0)
            && timers.contains_key("bh.test.ban_latency.sshd")
            && timers.contains_key("bh.test.match_time.sshd")
        {
            break;
        }
    }
    assert_eq!(sums.get("bh.test.failures.sshd"), Some(&6.0), "{sums:?}");
    assert_eq!(sums.get("bh.test.bans.sshd"), Some(&3.0), "{sums:?}");
    let line_counter = sums
        .iter()
        .find(|(k, _)| k.starts_with("bh.test.lines.sshd."))
        .map(|(_, v)| *v);
    assert_eq!(line_counter, Some(6.0), "{sums:?}");
    assert_eq!(
        gauges.get("bh.test.active_bans.sshd"),
        Some(&3.0),
        "{gauges:?}"
    );
    assert_eq!(
        timers.get("bh.test.ban_latency.sshd"),
        Some(&3),
        "one latency sample per ban: {timers:?}"
    );
    assert!(timers.contains_key("bh.test.match_time.sshd"), "{timers:?}");
    d.ctl(&["unban", &ips[0]]);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) && sums.get("bh.test.unbans.sshd").is_none() {
        if let Ok(n) = udp.recv(&mut buf) {
            for line in std::str::from_utf8(&buf[..n]).unwrap().lines() {
                if let Some(v) = line
                    .strip_prefix("bh.test.unbans.sshd:")
                    .and_then(|r| r.strip_suffix("|c"))
                {
                    *sums.entry("bh.test.unbans.sshd".into()).or_default() +=
                        v.parse::<f64>().unwrap();
                }
            }
        }
    }
    assert_eq!(sums.get("bh.test.unbans.sshd"), Some(&1.0));
    d.stop();
}
