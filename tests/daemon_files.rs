//! The daemon on log files: counting, banning, unbanning, ignoring,
//! escalating, rotation and restarts, with the real binary.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn jail(extra: &str) -> String {
    format!(
        "[DEFAULT]\nbantime = 3\nfindtime = 600\nmaxretry = 3\n[sshd]\nenabled = true\nfilter = sshd\nlogpath = %(__name__)s.log\n{extra}"
    )
}

fn setup(extra: &str) -> Setup {
    let s = Setup::new("");
    let log = s.path("auth.log");
    s.write("auth.log", "");
    s.write(
        "conf/jail.conf",
        &jail(extra).replace("%(__name__)s.log", log.to_str().unwrap()),
    );
    s
}

#[test]
fn bans_after_exactly_maxretry_and_unbans_on_time() {
    let s = setup("");
    let d = s.start();
    s.append(
        "auth.log",
        &[
            sshd_failure("192.0.2.10", "root"),
            sshd_failure("192.0.2.10", "admin"),
        ],
    );
    d.wait_lines("sshd", 2);
    assert!(
        !d.is_banned("192.0.2.10"),
        "two failures with maxretry 3 must not ban"
    );
    assert_eq!(d.jail_status("sshd")["currently_failed"], 1);
    s.append("auth.log", &[sshd_failure("192.0.2.10", "guest")]);
    wait_for("the ban", Duration::from_secs(10), || {
        d.is_banned("192.0.2.10")
    });
    let banned_at = Instant::now();
    let b = d.ban_of("192.0.2.10");
    let len = b["end"].as_f64().unwrap() - b["start"].as_f64().unwrap();
    assert!((len - 3.0).abs() < 0.01, "bantime 3 s, got {len}");
    wait_for("the unban", Duration::from_secs(10), || {
        !d.is_banned("192.0.2.10")
    });
    let lasted = banned_at.elapsed().as_secs_f64();
    assert!((2.0..5.0).contains(&lasted), "ban lasted {lasted} s");
    let log = s.log();
    assert!(log.contains("NOTICE  [sshd] Ban 192.0.2.10"), "{log}");
    assert!(log.contains("NOTICE  [sshd] Unban 192.0.2.10"), "{log}");
    d.stop();
}

/// A line with bytes that are not UTF-8 costs nothing but itself: it is
/// matched with the bytes replaced, and the valid lines around it (with
/// multi-byte user names) are read exactly as written.
#[test]
fn invalid_utf8_in_a_log_loses_no_failure() {
    use std::io::Write;
    let s = setup("");
    let d = s.start();
    let write = |bytes: &[u8]| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(s.path("auth.log"))
            .unwrap();
        f.write_all(bytes).unwrap();
        f.write_all(b"\n").unwrap();
    };
    // a valid block with multi-byte text, then one with bytes that are not
    // UTF-8 in the user name, then a valid one again
    write(sshd_failure("192.0.2.30", "j\u{f6}rg").as_bytes());
    d.wait_lines("sshd", 1);
    let mut bad = sshd_failure("192.0.2.30", "@@").into_bytes();
    let at = bad.windows(2).position(|w| w == b"@@").unwrap();
    bad.splice(at..at + 2, [b'x', 0xff, 0xfe, b'y']);
    write(&bad);
    d.wait_lines("sshd", 2);
    write(sshd_failure("192.0.2.30", "\u{7528}\u{6237}").as_bytes());
    d.wait_lines("sshd", 3);
    wait_for("the ban", Duration::from_secs(10), || {
        d.is_banned("192.0.2.30")
    });
    let b = d.ban_of("192.0.2.30");
    let matches: Vec<String> = b["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    assert_eq!(matches.len(), 3, "{matches:?}");
    assert!(matches[0].contains("for j\u{f6}rg from"), "{matches:?}");
    assert!(
        matches[1].contains("for x\u{fffd}\u{fffd}y from"),
        "{matches:?}"
    );
    assert!(
        matches[2].contains("for \u{7528}\u{6237} from"),
        "{matches:?}"
    );
    assert_eq!(d.jail_status("sshd")["total_failed"], 3);
    d.stop();
}

#[test]
fn ignoreip_and_ignoreself_are_honoured() {
    let s = setup("ignoreip = 198.51.100.0/24\n");
    let d = s.start();
    let mut lines = Vec::new();
    for _ in 0..5 {
        lines.push(sshd_failure("198.51.100.7", "root"));
        lines.push(sshd_failure("127.0.0.1", "root"));
        lines.push(sshd_failure("::ffff:198.51.100.8", "root"));
    }
    s.append("auth.log", &lines);
    d.wait_lines("sshd", 15);
    assert!(
        d.banned().is_empty(),
        "ignored addresses were banned: {:?}",
        d.banned()
    );
    // and a normal address still bans
    s.append(
        "auth.log",
        &[
            sshd_failure("192.0.2.11", "a"),
            sshd_failure("192.0.2.11", "b"),
            sshd_failure("192.0.2.11", "c"),
        ],
    );
    wait_for("the ban", Duration::from_secs(10), || {
        d.is_banned("192.0.2.11")
    });
    d.stop();
}

#[test]
fn repeat_offenders_get_longer_bans() {
    let s = setup("bantime = 2\nbantime.increment = true\n");
    let d = s.start();
    let three = || {
        (0..3)
            .map(|i| sshd_failure("192.0.2.12", &format!("u{i}")))
            .collect::<Vec<_>>()
    };
    s.append("auth.log", &three());
    wait_for("the first ban", Duration::from_secs(10), || {
        d.is_banned("192.0.2.12")
    });
    let first = d.ban_of("192.0.2.12");
    wait_for("the first unban", Duration::from_secs(10), || {
        !d.is_banned("192.0.2.12")
    });
    s.append("auth.log", &three());
    wait_for("the second ban", Duration::from_secs(10), || {
        d.is_banned("192.0.2.12")
    });
    let second = d.ban_of("192.0.2.12");
    let len = |b: &serde_json::Value| b["end"].as_f64().unwrap() - b["start"].as_f64().unwrap();
    assert!((len(&first) - 2.0).abs() < 0.01);
    assert!(
        (len(&second) - 4.0).abs() < 0.01,
        "second ban should double: {}",
        len(&second)
    );
    assert_eq!(second["ban_count"], 1);
    d.stop();
}

#[test]
fn ipv6_sources_can_be_counted_per_prefix() {
    let s = setup("ipv6prefix = 64\n");
    let d = s.start();
    s.append(
        "auth.log",
        &[
            sshd_failure("2001:db8:1:2::10", "a"),
            sshd_failure("2001:db8:1:2::20", "b"),
            sshd_failure("2001:db8:1:2:ffff::30", "c"),
        ],
    );
    wait_for("the prefix ban", Duration::from_secs(10), || {
        d.is_banned("2001:db8:1:2::/64")
    });
    let listed = d.ctl(&["banned", "2001:db8:1:2::99"]);
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "an address inside the banned prefix is listed as banned"
    );
    d.stop();
}

#[test]
fn manual_ban_and_unban_through_the_cli() {
    let s = setup("");
    let d = s.start();
    assert_eq!(
        d.ctl(&["ban", "sshd", "203.0.113.5"]),
        serde_json::json!(["203.0.113.5"])
    );
    wait_for("the manual ban", Duration::from_secs(10), || {
        d.is_banned("203.0.113.5")
    });
    let err = d.try_ctl(&["ban", "sshd", "not-an-ip"]).unwrap_err();
    assert!(err.contains("not an IP address"), "{err}");
    let err = d.try_ctl(&["ban", "nojail", "203.0.113.6"]).unwrap_err();
    assert!(err.contains("no running jail 'nojail'"), "{err}");
    assert_eq!(
        d.ctl(&["unban", "203.0.113.5"]),
        serde_json::json!(["203.0.113.5"])
    );
    assert!(!d.is_banned("203.0.113.5"));
    // the human output is a table
    let out = std::process::Command::new(bin())
        .args(["--socket", d.socket.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("JAIL  FILTER  FAILING"), "{text}");
    d.stop();
}

#[test]
fn a_restart_neither_rereads_nor_skips_lines() {
    let s = setup("maxretry = 4\n");
    let d = s.start();
    s.append(
        "auth.log",
        &[
            sshd_failure("192.0.2.20", "a"),
            sshd_failure("192.0.2.20", "b"),
        ],
    );
    d.wait_lines("sshd", 2);
    d.stop();
    // written while the daemon was down
    s.append("auth.log", &[sshd_failure("192.0.2.20", "c")]);
    let d = s.start();
    d.wait_lines("sshd", 1);
    assert_eq!(
        d.jail_status("sshd")["lines"],
        1,
        "only the new line is read"
    );
    assert!(
        !d.is_banned("192.0.2.20"),
        "three failures (two before the restart) must not ban with maxretry 4"
    );
    s.append("auth.log", &[sshd_failure("192.0.2.20", "d")]);
    wait_for("the ban after the restart", Duration::from_secs(10), || {
        d.is_banned("192.0.2.20")
    });
    d.stop();
}

#[test]
fn rotation_loses_no_line_and_reads_none_twice() {
    // a distinct address per line: each line is one failure, maxretry 1
    let s = setup("maxretry = 1\nbantime = 600\n");
    let d = s.start();
    let log = s.path("auth.log");
    // a file rotated before the daemon first opened it cannot be followed
    // by anyone: wait until `status` shows it watched
    wait_for("the log file watched", Duration::from_secs(10), || {
        d.jail_status("sshd")["sources"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    let mut n = 0u32;
    let mut written: Vec<String> = Vec::new();
    let mut batch = |s: &Setup, count: u32| {
        let lines: Vec<String> = (0..count)
            .map(|_| {
                n += 1;
                let ip = format!("10.9.{}.{}", n / 250, n % 250 + 1);
                let line = sshd_failure(&ip, "r");
                written.push(ip);
                line
            })
            .collect();
        s.append("auth.log", &lines);
    };
    batch(&s, 100);
    // rename-and-create, with lines written to the old file after the rename
    std::fs::rename(&log, s.path("auth.log.1")).unwrap();
    {
        use std::io::Write;
        let mut old = std::fs::OpenOptions::new()
            .append(true)
            .open(s.path("auth.log.1"))
            .unwrap();
        writeln!(old, "{}", sshd_failure("10.9.200.1", "late")).unwrap();
    }
    s.write("auth.log", "");
    batch(&s, 100);
    // copytruncate
    std::thread::sleep(Duration::from_millis(300));
    batch(&s, 50);
    std::fs::copy(&log, s.path("auth.log.0")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    batch(&s, 100);
    let expected = 351;
    let t = std::time::Instant::now();
    while d.banned().len() < expected && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    written.push("10.9.200.1".into());
    let got: std::collections::HashSet<String> = d
        .banned()
        .iter()
        .filter_map(|b| b["ip"].as_str().map(String::from))
        .collect();
    let missing: Vec<&String> = written.iter().filter(|ip| !got.contains(*ip)).collect();
    assert!(
        missing.is_empty(),
        "lines lost in rotation, never banned: {missing:?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let bans = d.banned();
    assert_eq!(
        bans.len(),
        expected,
        "each line's address banned exactly once"
    );
    let st = d.jail_status("sshd");
    assert_eq!(st["total_banned"], expected as u64);
    d.stop();
}

#[test]
fn bad_jails_are_skipped_and_bad_reloads_keep_the_running_configuration() {
    let s = Setup::new("");
    let log = s.path("auth.log");
    s.write("auth.log", "");
    let good = format!(
        "[sshd]\nenabled = true\nfilter = sshd\nlogpath = {}\nmaxretry = 1\n",
        log.display()
    );
    s.write(
        "conf/jail.conf",
        &format!(
            "{good}[nofilter]\nenabled = true\nfilter = nosuch\nlogpath = {}\n[nolog]\nenabled = true\nfilter = sshd\nlogpath = /nonexistent/x.log\n[badregex]\nenabled = true\nfilter = sshd\nlogpath = {}\nfailregex = ^(unclosed <HOST>\n[syntax]\nenabled = true\nthis is not an option\n",
            log.display(),
            log.display()
        ),
    );
    let d = s.start();
    let st = d.ctl(&["status"]);
    let jails: Vec<&str> = st["jails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(jails, ["sshd"]);
    let skipped = st["skipped"].to_string();
    assert!(
        skipped.contains("'nofilter'") && skipped.contains("nosuch.conf"),
        "{skipped}"
    );
    assert!(
        skipped.contains("'nolog'") && skipped.contains("/nonexistent/x.log"),
        "{skipped}"
    );
    assert!(
        skipped.contains("'badregex'") && skipped.contains("does not compile"),
        "{skipped}"
    );
    assert!(
        skipped.contains("'syntax'") && skipped.contains("jail.conf:"),
        "{skipped}"
    );
    // a reload with a broken file is refused; the running jail keeps working
    s.write("conf/jail.local", "[sshd]\nfailregex = ^(broken <HOST>\n");
    let err = d.try_ctl(&["reload"]).unwrap_err();
    assert!(
        err.contains("reload refused") && err.contains("does not compile"),
        "{err}"
    );
    s.append("auth.log", &[sshd_failure("192.0.2.30", "root")]);
    wait_for(
        "a ban by the old configuration",
        Duration::from_secs(10),
        || d.is_banned("192.0.2.30"),
    );
    // a good reload goes through
    std::fs::remove_file(s.path("conf/jail.local")).unwrap();
    s.write(
        "conf/jail.conf",
        &format!(
            "{good}[sshd2]\nenabled = true\nfilter = sshd\nlogpath = {}\n",
            log.display()
        ),
    );
    let ok = d.ctl(&["reload"]);
    assert!(ok.as_str().unwrap().contains("2 jail(s) running"), "{ok}");
    assert!(d.is_banned("192.0.2.30"), "bans survive a reload");
    d.stop();
}
