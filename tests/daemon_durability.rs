//! `kill -9` with 1,000 active bans and 500 addresses part-way to a ban:
//! after the restart every ban is active with its remaining time, and one
//! more failure bans each of the 500.

mod common;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

fn addr(group: u32, i: u32) -> String {
    format!("10.{group}.{}.{}", i / 200, i % 200 + 1)
}

#[test]
fn kill_9_loses_no_ban_and_no_partial_count() {
    let s = Setup::new("");
    let log = s.path("auth.log");
    s.write(
        "conf/jail.conf",
        &format!("[sshd]\nenabled = true\nfilter = sshd\nlogpath = {}\nmaxretry = 3\nfindtime = 3600\nbantime = 3600\n", log.display()),
    );
    let mut lines = Vec::new();
    for round in 0..3 {
        for i in 0..1000 {
            lines.push(sshd_failure(&addr(1, i), &format!("u{round}")));
        }
        if round < 2 {
            for i in 0..500 {
                lines.push(sshd_failure(&addr(2, i), &format!("u{round}")));
            }
        }
    }
    s.append("auth.log", &lines);
    let d = s.start();
    wait_for("1,000 bans", Duration::from_secs(60), || {
        d.banned().len() == 1000
    });
    d.wait_lines("sshd", lines.len() as u64);
    let before: HashMap<String, (f64, f64)> = d
        .banned()
        .iter()
        .map(|b| {
            (
                b["ip"].as_str().unwrap().to_string(),
                (b["start"].as_f64().unwrap(), b["end"].as_f64().unwrap()),
            )
        })
        .collect();
    assert!(
        before.keys().all(|ip| ip.starts_with("10.1.")),
        "only the addresses with three failures are banned"
    );
    d.kill9();

    let d = s.start();
    let after = d.banned();
    assert_eq!(after.len(), 1000, "every acknowledged ban is back");
    for b in &after {
        let (start, end) = before[b["ip"].as_str().unwrap()];
        assert_eq!(b["start"].as_f64().unwrap(), start);
        assert_eq!(
            b["end"].as_f64().unwrap(),
            end,
            "the remaining time is kept"
        );
    }
    assert!(s.log().contains("NOTICE  [sshd] Restore Ban 10.1.0.1"));
    // nothing was counted twice: the 500 are still short of a ban
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.banned().len(), 1000);
    let more: Vec<String> = (0..500)
        .map(|i| sshd_failure(&addr(2, i), "last"))
        .collect();
    s.append("auth.log", &more);
    wait_for(
        "the 500 banned by one more failure each",
        Duration::from_secs(60),
        || d.banned().len() == 1500,
    );
    d.stop();
}
