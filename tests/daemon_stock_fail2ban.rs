//! `banhammer run --config-dir` on Debian's stock Fail2Ban 1.0.2
//! configuration (the package unpacked, not installed): enabled jails run,
//! a jail whose log is missing is skipped with a clear message. The stock
//! jails' firewall action really runs, so the daemon runs inside a network
//! namespace of the test's own.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Downloads and unpacks Debian's fail2ban package into `dir`.
fn unpack_fail2ban(dir: &Path) -> std::path::PathBuf {
    let out = Command::new("apt-get")
        .arg("download")
        .arg("fail2ban")
        .current_dir(dir)
        .output()
        .expect("apt-get");
    assert!(
        out.status.success(),
        "apt-get download fail2ban: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("the .deb");
    let root = dir.join("root");
    let st = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .expect("dpkg -x");
    assert!(st.success());
    root.join("etc/fail2ban")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn stock_fail2ban_configuration_runs() {
    let work = tempfile::tempdir().unwrap();
    let stock = unpack_fail2ban(work.path());
    let s = Setup::new("");
    let conf = s.conf();
    std::fs::remove_dir_all(&conf).unwrap();
    copy_dir(&stock, &conf);
    s.write_daemon_conf("");
    let auth = s.path("auth.log");
    let nginx = s.path("nginx-error.log");
    s.write("auth.log", "");
    s.write("nginx-error.log", "");
    s.write(
        "conf/jail.d/zz-test.local",
        &format!(
            "[DEFAULT]\nbackend = auto\n[sshd]\nlogpath = {}\nmaxretry = 2\n[nginx-http-auth]\nenabled = true\nlogpath = {}\n[apache-auth]\nenabled = true\nlogpath = /nonexistent/apache2/error.log\n",
            auth.display(),
            nginx.display()
        ),
    );
    let ns = common::netns::Netns::new("stock");
    let d = s.start_in(Some(&ns.name));
    let st = d.ctl(&["status"]);
    let mut jails: Vec<&str> = st["jails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    jails.sort();
    assert_eq!(jails, ["nginx-http-auth", "sshd"], "{st}");
    let skipped = st["skipped"].to_string();
    assert!(
        skipped.contains("'apache-auth'") && skipped.contains("no log file found"),
        "{skipped}"
    );
    // the stock sshd filter, unmodified, bans
    s.append(
        "auth.log",
        &[
            sshd_failure("192.0.2.80", "root"),
            sshd_failure("192.0.2.80", "admin"),
        ],
    );
    wait_for(
        "a ban by the stock sshd jail",
        Duration::from_secs(15),
        || d.is_banned("192.0.2.80"),
    );
    let log = s.log();
    assert!(
        !log.contains("unknown option"),
        "the stock configuration has no unknown options: {log}"
    );
    d.stop();
}
