//! Fail2Ban command actions from `action.d/`: a real action file that
//! writes what it is given to a file receives correctly substituted tags,
//! and values from log lines (a user name full of shell metacharacters)
//! arrive literally, never executed.

mod common;
use common::*;
use std::time::Duration;

const RECORD: &str = r#"[Definition]
actionstart = printf 'start %%s\n' "<name>" >> <target>
actionstop = printf 'stop %%s\n' "<name>" >> <target>
actionban = printf 'ban ip=%%s name=%%s port=%%s protocol=%%s bantime=%%s failures=%%s family=%%s user=[%%s]\n' "<ip>" "<name>" "<port>" "<protocol>" "<bantime>" "<failures>" "<family>" "<F-USER>" >> <target>
            printf 'matches=[%%s]\n' "<matches>" >> <target>
actionunban = printf 'unban %%s\n' "<ip>" >> <target>

[Init]
target = /dev/null
port = 1
protocol = tcp
"#;

#[test]
fn a_command_action_gets_its_tags_and_hostile_values_stay_inert() {
    let s = Setup::new("");
    let out = s.path("actions.txt");
    let pwned = s.path("pwned");
    s.write("conf/action.d/record.conf", RECORD);
    s.write("auth.log", "");
    s.write(
        "conf/jail.conf",
        &format!(
            "[svc]\nenabled = true\nfilter = sshd\nlogpath = {}\nmaxretry = 2\nbantime = 600\nport = ssh,2222\naction = record[target=\"{}\", port=\"%(port)s\"]\n",
            s.path("auth.log").display(),
            out.display()
        ),
    );
    let d = s.start();
    let user = format!(
        "$(touch {}) `touch {}`; x' \"y\" | z",
        pwned.display(),
        pwned.display()
    );
    let line = |n: u32| {
        sshd_failure("192.0.2.9", "x")
            .replace("for x from", &format!("for invalid user {user} from"))
            .replace("sshd[4242]", &format!("sshd[{}]", 5000 + n))
    };
    s.append("auth.log", &[line(1), line(2)]);
    wait_for("the ban", Duration::from_secs(10), || {
        d.is_banned("192.0.2.9")
    });
    wait_for("the action's output", Duration::from_secs(10), || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("matches=")
    });
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("start svc\n"), "{text}");
    assert!(
        text.contains("ban ip=192.0.2.9 name=svc port=ssh,2222 protocol=tcp bantime=600 failures=2 family=inet4 "),
        "static and dynamic tags: {text}"
    );
    assert!(
        text.contains(&format!("user=[{user}]")),
        "the user name, literally: {text}"
    );
    assert!(
        text.contains("Failed password for invalid user $(touch"),
        "the matches, literally: {text}"
    );
    assert!(!pwned.exists(), "a value from the log was executed");
    d.ctl(&["unban", "192.0.2.9"]);
    wait_for("the unban", Duration::from_secs(10), || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("unban 192.0.2.9")
    });
    d.stop();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.ends_with("stop svc\n"),
        "actionstop when the jail stops: {text}"
    );
}

#[test]
fn a_missing_or_broken_action_skips_the_jail_with_a_clear_message() {
    let s = Setup::new("");
    s.write("auth.log", "");
    let log = s.path("auth.log");
    s.write(
        "conf/jail.conf",
        &format!(
            "[good]\nenabled = true\nfilter = sshd\nlogpath = {0}\n[noaction]\nenabled = true\nfilter = sshd\nlogpath = {0}\naction = nosuchaction\n[badnft]\nenabled = true\nfilter = sshd\nlogpath = {0}\naction = nftables[port=\"22; flush ruleset\"]\n",
            log.display()
        ),
    );
    let d = s.start();
    let st = d.ctl(&["status"]);
    let running: Vec<&str> = st["jails"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(running, ["good"], "{st}");
    let skipped = st["skipped"].to_string();
    assert!(
        skipped.contains("'noaction'") && skipped.contains("nosuchaction.conf"),
        "{skipped}"
    );
    assert!(
        skipped.contains("'badnft'") && skipped.contains("not a port"),
        "{skipped}"
    );
    d.stop();
}
