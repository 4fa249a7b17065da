//! nftables enforcement with real traffic between network namespaces that
//! each test creates and deletes: a client reaches a service on the
//! server; once the server's banhammer bans the client (IPv4 and IPv6) the
//! service is closed to it (dropped, or rejected), its web requests get the
//! ban page, and when the ban ends the service is open again, also when
//! banhammer was stopped in between (the kernel lifts the ban). A third
//! namespace routed through the server shows that forwarded traffic is
//! blocked too. The host's own ruleset is never touched.

mod common;
use common::netns::{elements, link, Netns};
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A configuration for the server namespace: one jail on a log file with
/// the given action, a ban page on port 8080.
fn server_setup(action: &str, bantime: u32) -> Setup {
    let s = Setup::new("");
    s.write(
        "conf/jail.conf",
        &format!(
            "[svc]\nenabled = true\nfilter = sshd\nlogpath = {}\nmaxretry = 2\nfindtime = 600\nbantime = {bantime}\nbanaction = nftables\naction = {action}\n",
            s.path("auth.log").display()
        ),
    );
    s.write("auth.log", "");
    s.write_daemon_conf(
        "[web]\nbanpage_listen = [::]:8080\nbanpage_ports = 80\ncontact = abuse@example.test\n",
    );
    s
}

/// Two failed logins from `ip`, on a connection of their own (sshd's
/// filter ties the lines of one process id together).
fn fail(s: &Setup, ip: &str) {
    let pid = 1000 + ip.bytes().map(u32::from).sum::<u32>();
    let lines: Vec<String> = ["root", "admin"]
        .iter()
        .map(|u| sshd_failure(ip, u).replace("sshd[4242]", &format!("sshd[{pid}]")))
        .collect();
    s.append("auth.log", &lines);
}

fn wait_element(s: &Setup, ns: &Netns, set: &str, ip: &str) -> Duration {
    let t = Instant::now();
    while !elements(ns, set).iter().any(|e| e == ip) {
        if t.elapsed() > Duration::from_secs(10) {
            panic!(
                "{ip} not in {set} after 10 s: {:?}\ndaemon log:\n{}",
                elements(ns, set),
                s.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

fn wait_open(client: &Netns, to: SocketAddr, timeout: Duration) {
    let t = Instant::now();
    loop {
        match client.connect(to) {
            Ok(g) if g == "hello\n" => return,
            r if t.elapsed() > timeout => panic!("{to} still closed after {timeout:?}: {r:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn a_banned_client_is_dropped_sees_the_ban_page_and_is_let_in_again_after_the_ban() {
    let server = Netns::new("srv");
    let client = Netns::new("cli");
    link(
        &server,
        &client,
        "10.77.0.1/24",
        "10.77.0.2/24",
        "fd77::1/64",
        "fd77::2/64",
    );
    server.serve_hello(2222);
    let v4 = addr("10.77.0.1:2222");
    let v6 = addr("[fd77::1]:2222");
    wait_open(&client, v4, Duration::from_secs(5));
    wait_open(&client, v6, Duration::from_secs(5));

    let s = server_setup(
        r#"%(banaction)s[port="2222", protocol="tcp", blocktype=drop]"#,
        6,
    );
    let d = s.start_in(Some(&server.name));
    let (_, body) = client.http_get(addr("10.77.0.1:8080"), "/").unwrap();
    assert!(body.contains("not blocked"), "before any ban: {body}");

    fail(&s, "10.77.0.2");
    fail(&s, "fd77::2");
    wait_element(&s, &server, "svc_v4", "10.77.0.2");
    wait_element(&s, &server, "svc_v6", "fd77::2");
    for to in [v4, v6] {
        let e = client
            .connect(to)
            .expect_err("a banned client must not get through");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            "blocktype = drop: the SYN is dropped (timeout), got {e:?}"
        );
    }
    // its web requests are answered by the ban page, whatever the Host
    for to in ["10.77.0.1:80", "[fd77::1]:80"] {
        let (status, body) = client.http_get(addr(to), "/wp-login.php").unwrap();
        assert!(status.contains("403"), "{to}: {status}");
        assert!(body.contains("Access blocked"), "{to}: {body}");
        assert!(body.contains("the SSH login"), "{to}: the reason: {body}");
        assert!(
            body.contains("abuse@example.test"),
            "{to}: the contact: {body}"
        );
        let me = if to.starts_with('[') {
            "fd77::2"
        } else {
            "10.77.0.2"
        };
        assert!(body.contains(me), "{to}: the visitor's own address: {body}");
    }
    // the server itself still reaches its own service
    assert_eq!(server.connect(v4).unwrap(), "hello\n");

    // stopped while the ban runs: the kernel lifts it on time
    d.stop();
    assert!(
        !elements(&server, "svc_v4").is_empty(),
        "the bans stay when the daemon stops"
    );
    assert!(
        client.connect(v4).is_err(),
        "still banned right after the stop"
    );
    wait_open(&client, v4, Duration::from_secs(15));
    wait_open(&client, v6, Duration::from_secs(5));
}

#[test]
fn reject_answers_at_once_and_a_restart_restores_the_bans() {
    let server = Netns::new("srv");
    let client = Netns::new("cli");
    link(
        &server,
        &client,
        "10.78.0.1/24",
        "10.78.0.2/24",
        "fd78::1/64",
        "fd78::2/64",
    );
    server.serve_hello(2222);
    let v4 = addr("10.78.0.1:2222");
    let s = server_setup(r#"nftables[port="2222", protocol="tcp"]"#, 600);
    let d = s.start_in(Some(&server.name));
    fail(&s, "10.78.0.2");
    wait_element(&s, &server, "svc_v4", "10.78.0.2");
    let t = Instant::now();
    let e = client.connect(v4).expect_err("banned");
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "blocktype = reject (Fail2Ban's default): {e:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // someone flushes the table by hand while banhammer is down; the
    // restart puts every ban back from the database
    d.stop();
    let (ok, _, err) = common::netns::exec(
        &server.name,
        &["nft", "delete", "table", "inet", "banhammer"],
    );
    assert!(ok, "{err}");
    assert_eq!(client.connect(v4).unwrap(), "hello\n");
    let d = s.start_in(Some(&server.name));
    wait_element(&s, &server, "svc_v4", "10.78.0.2");
    assert!(client.connect(v4).is_err());
    // unban through the CLI opens it at once
    d.ctl(&["unban", "10.78.0.2"]);
    wait_open(&client, v4, Duration::from_secs(5));
    // stop --flush removes the table
    let _ = d.try_ctl(&["stop", "--flush"]);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10)
        && common::netns::exec(&server.name, &["nft", "list", "table", "inet", "banhammer"]).0
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !common::netns::exec(&server.name, &["nft", "list", "table", "inet", "banhammer"]).0,
        "stop --flush leaves no table"
    );
}

#[test]
fn forwarded_traffic_through_the_server_is_blocked_too() {
    // client -- server (router, runs banhammer) -- far (the service)
    let client = Netns::new("cli");
    let server = Netns::new("rtr");
    let far = Netns::new("far");
    link(
        &server,
        &client,
        "10.79.1.1/24",
        "10.79.1.2/24",
        "fd79:1::1/64",
        "fd79:1::2/64",
    );
    link(
        &server,
        &far,
        "10.79.2.1/24",
        "10.79.2.2/24",
        "fd79:2::1/64",
        "fd79:2::2/64",
    );
    server.sysctl("net.ipv4.ip_forward", "1");
    server.sysctl("net.ipv6.conf.all.forwarding", "1");
    common::netns::ip(
        Some(&client.name),
        &["route", "add", "default", "via", "10.79.1.1"],
    );
    common::netns::ip(
        Some(&client.name),
        &["-6", "route", "add", "default", "via", "fd79:1::1"],
    );
    common::netns::ip(
        Some(&far.name),
        &["route", "add", "default", "via", "10.79.2.1"],
    );
    common::netns::ip(
        Some(&far.name),
        &["-6", "route", "add", "default", "via", "fd79:2::1"],
    );
    far.serve_hello(2222);
    let v4 = addr("10.79.2.2:2222");
    let v6 = addr("[fd79:2::2]:2222");
    // routed through the server
    wait_open(&client, v4, Duration::from_secs(5));
    wait_open(&client, v6, Duration::from_secs(5));
    let s = server_setup(
        r#"nftables[port="2222", protocol="tcp", blocktype=drop]"#,
        600,
    );
    let d = s.start_in(Some(&server.name));
    fail(&s, "10.79.1.2");
    fail(&s, "fd79:1::2");
    wait_element(&s, &server, "svc_v4", "10.79.1.2");
    wait_element(&s, &server, "svc_v6", "fd79:1::2");
    assert!(
        client.connect(v4).is_err(),
        "forwarded IPv4 traffic of a banned client"
    );
    assert!(
        client.connect(v6).is_err(),
        "forwarded IPv6 traffic of a banned client"
    );
    d.stop();
}

/// The members of an ipset inside `ns`.
fn ipset_members(ns: &Netns, set: &str) -> Vec<String> {
    let (_, out, _) = common::netns::exec(&ns.name, &["ipset", "list", set]);
    out.lines()
        .skip_while(|l| !l.starts_with("Members:"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

#[test]
fn iptables_with_ipset_enforces_bans_where_nftables_is_not_wanted() {
    let server = Netns::new("srv");
    let client = Netns::new("cli");
    link(
        &server,
        &client,
        "10.80.0.1/24",
        "10.80.0.2/24",
        "fd80::1/64",
        "fd80::2/64",
    );
    server.serve_hello(2222);
    let v4 = addr("10.80.0.1:2222");
    let v6 = addr("[fd80::1]:2222");
    wait_open(&client, v4, Duration::from_secs(5));
    wait_open(&client, v6, Duration::from_secs(5));
    let s = server_setup(r#"iptables-multiport[port="2222", protocol="tcp"]"#, 600);
    let d = s.start_in(Some(&server.name));
    fail(&s, "10.80.0.2");
    fail(&s, "fd80::2");
    wait_for("the ipset members", Duration::from_secs(10), || {
        ipset_members(&server, "bh-svc-v4").contains(&"10.80.0.2".to_string())
            && ipset_members(&server, "bh-svc-v6").contains(&"fd80::2".to_string())
    });
    for to in [v4, v6] {
        let e = client.connect(to).expect_err("banned");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "REJECT: {e:?}"
        );
    }
    let (status, body) = client.http_get(addr("10.80.0.1:80"), "/").unwrap();
    assert!(
        status.contains("403") && body.contains("10.80.0.2"),
        "{status} {body}"
    );
    d.ctl(&["unban", "10.80.0.2", "fd80::2"]);
    wait_open(&client, v4, Duration::from_secs(5));
    wait_open(&client, v6, Duration::from_secs(5));
    let _ = d.try_ctl(&["stop", "--flush"]);
    wait_for(
        "the chains and sets removed",
        Duration::from_secs(10),
        || {
            let (_, rules, _) = common::netns::exec(&server.name, &["iptables", "-S"]);
            let (_, sets, _) = common::netns::exec(&server.name, &["ipset", "list", "-n"]);
            !rules.contains("banhammer") && !sets.contains("bh-svc")
        },
    );
}

#[test]
fn a_failing_nft_is_reported_retried_and_loses_no_ban() {
    let server = Netns::new("srv");
    let s = server_setup(r#"nftables[port="2222", protocol="tcp"]"#, 600);
    // `nft` is missing at first
    let nft = s.path("bin/nft");
    s.write_daemon_conf(&format!("[firewall]\nnft = {}\n", nft.display()));
    let d = s.start_in(Some(&server.name));
    fail(&s, "10.81.0.2");
    wait_for("the ban in the database", Duration::from_secs(10), || {
        d.is_banned("10.81.0.2")
    });
    wait_for("the error in status", Duration::from_secs(10), || {
        let st = d.ctl(&["status"]);
        st["firewall"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not found") && e.contains("nftables package"))
    });
    assert!(elements(&server, "svc_v4").is_empty());
    // nft comes back: the retry writes the table with the ban
    s.write("bin/nft", "#!/bin/sh\nexec nft \"$@\"\n");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    wait_element(&s, &server, "svc_v4", "10.81.0.2");
    let st = d.ctl(&["status"]);
    assert!(
        st["firewall"][0]["last_error"].is_null(),
        "the error clears: {st}"
    );
    assert!(s.log().contains("not found"), "the failure was logged");
    d.stop();
}
