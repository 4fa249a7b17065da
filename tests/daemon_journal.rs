//! The daemon on the systemd journal: real journal files written with
//! `systemd-journal-remote`, appended while the daemon runs and while it is
//! stopped.

mod common;
use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// Appends sshd entries (journal export format) to DIR/remote-test.journal.
fn journal_append(dir: &Path, messages: &[String]) {
    let mut export = String::new();
    for (i, m) in messages.iter().enumerate() {
        let usec = (unix_now() * 1e6) as u64 + i as u64;
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={usec}\n__MONOTONIC_TIMESTAMP={usec}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=srv\n_COMM=sshd\nSYSLOG_IDENTIFIER=sshd\n_PID=4242\n_SYSTEMD_UNIT=sshd.service\nMESSAGE={m}\n\n"
        ));
    }
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg("-o")
        .arg(dir.join("remote-test.journal"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{JOURNAL_REMOTE} (package systemd-journal-remote): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "systemd-journal-remote failed"
    );
}

fn failed(ip: &str, user: &str) -> String {
    format!("Failed password for {user} from {ip} port 22 ssh2")
}

#[test]
fn journal_entries_ban_and_a_restart_resumes_at_the_cursor() {
    let s = Setup::new("");
    let jdir = s.path("journal");
    std::fs::create_dir_all(&jdir).unwrap();
    // an entry from before the daemon ever ran, older than nothing: it counts
    journal_append(&jdir, &[failed("192.0.2.70", "old")]);
    s.write(
        "conf/jail.conf",
        &format!(
            "[sshd]\nenabled = true\nfilter = sshd\nbackend = systemd[journalpath={}]\nmaxretry = 3\nfindtime = 600\nbantime = 600\n",
            jdir.display()
        ),
    );
    let d = s.start();
    d.wait_lines("sshd", 1);
    journal_append(&jdir, &[failed("192.0.2.70", "a")]);
    d.wait_lines("sshd", 2);
    assert!(!d.is_banned("192.0.2.70"));
    journal_append(&jdir, &[failed("192.0.2.70", "b")]);
    wait_for("the journal ban", Duration::from_secs(15), || {
        d.is_banned("192.0.2.70")
    });
    let st = d.jail_status("sshd");
    assert_eq!(st["lines"], 3, "{st}");
    // the filter saw journal-style lines (`HOST sshd[PID]: message`)
    assert!(s.log().contains("[sshd] Found 192.0.2.70"));
    journal_append(&jdir, &[failed("192.0.2.71", "c")]);
    d.wait_lines("sshd", 4);
    d.stop();

    // written while the daemon is down
    journal_append(&jdir, &[failed("192.0.2.71", "d")]);
    let d = s.start();
    d.wait_lines("sshd", 1);
    std::thread::sleep(Duration::from_millis(500));
    let st = d.jail_status("sshd");
    assert_eq!(
        st["lines"], 1,
        "after the restart only the new entry is read: {st}"
    );
    assert!(d.is_banned("192.0.2.70"), "the ban was restored");
    assert!(
        !d.is_banned("192.0.2.71"),
        "two failures (one before the restart) do not ban yet"
    );
    journal_append(&jdir, &[failed("192.0.2.71", "e")]);
    wait_for(
        "the ban counting failures from before the restart",
        Duration::from_secs(15),
        || d.is_banned("192.0.2.71"),
    );
    d.stop();
}
