//! The syslog receiver with real senders: `logger` (RFC 3164 and 5424, UDP
//! and TCP, octet counting), a private `rsyslogd` forwarding over UDP, TCP
//! with LF framing and TCP with octet counting, `openssl s_client` over
//! TLS; and bad input from raw sockets, which must be counted while the
//! listener keeps serving.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon with `[syslog]` listeners on free loopback ports and an sshd
/// jail on syslog.
fn start(syslog: &str, backend: &str) -> (Setup, Daemon) {
    let s = Setup::new(&format!(
        "[sshd]\nenabled = true\nfilter = sshd\nbackend = {backend}\nmaxretry = 3\nfindtime = 600\nbantime = 600\n"
    ));
    s.write_daemon_conf(&format!("[syslog]\n{syslog}\n"));
    let d = s.start();
    (s, d)
}

fn syslog_status(d: &Daemon) -> Value {
    d.ctl(&["status"])["syslog"].clone()
}

/// The bound address of the listener of `transport` (`udp`, `tcp`, `tls`).
fn listener(d: &Daemon, transport: &str) -> SocketAddr {
    let st = syslog_status(d);
    let l = st["listen"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .find(|l| l.starts_with(&format!("{transport}://")))
        })
        .unwrap_or_else(|| panic!("no {transport} listener in {st}"));
    l.split_once("://").unwrap().1.parse().unwrap()
}

fn counter(d: &Daemon, name: &str) -> u64 {
    syslog_status(d)["counters"][name].as_u64().unwrap_or(0)
}

fn wait_banned(d: &Daemon, ip: &str) {
    wait_for(&format!("the ban of {ip}"), Duration::from_secs(20), || {
        d.is_banned(ip)
    });
}

fn logger(args: &[&str], msg: &str) {
    let st = Command::new("logger")
        .args(args)
        .arg(msg)
        .status()
        .expect("run logger");
    assert!(st.success(), "logger {args:?} failed");
}

fn failure(ip: &str, n: usize) -> String {
    format!("Failed password for user{n} from {ip} port 22 ssh2")
}

#[test]
fn logger_over_udp_and_tcp_in_both_formats_bans() {
    let (_s, d) = start(
        "listen = udp://127.0.0.1:0 tcp://127.0.0.1:0",
        "syslog[app=sshd]",
    );
    let udp = listener(&d, "udp").port().to_string();
    let tcp = listener(&d, "tcp").port().to_string();
    let cases: [(&str, Vec<&str>); 4] = [
        ("192.0.2.31", vec!["--udp", "--port", &udp, "--rfc3164"]),
        ("192.0.2.32", vec!["--udp", "--port", &udp, "--rfc5424"]),
        (
            "192.0.2.33",
            vec!["--tcp", "--port", &tcp, "--rfc5424", "--octet-count"],
        ),
        ("192.0.2.34", vec!["--tcp", "--port", &tcp, "--rfc3164"]),
    ];
    for (ip, args) in &cases {
        let mut all = vec![
            "--server",
            "127.0.0.1",
            "-t",
            "sshd",
            "--id=4242",
            "-p",
            "auth.info",
        ];
        all.extend(args.iter().copied());
        for n in 0..3 {
            logger(&all, &failure(ip, n));
        }
    }
    for (ip, _) in &cases {
        wait_banned(&d, ip);
    }
    // another app's messages are not this jail's
    logger(
        &[
            "--server",
            "127.0.0.1",
            "--udp",
            "--port",
            &udp,
            "-t",
            "cron",
        ],
        &failure("192.0.2.35", 0),
    );
    wait_for("the cron message", Duration::from_secs(10), || {
        counter(&d, "unrouted") >= 1
    });
    let st = d.jail_status("sshd");
    assert_eq!(st["total_failed"], 12, "{st}");
    let senders = st["senders"].as_array().cloned().unwrap_or_default();
    let from_loopback: u64 = senders
        .iter()
        .filter(|x| x["peer"] == "127.0.0.1")
        .map(|x| x["failures"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(from_loopback, 12, "senders in status: {st}");
    let human = Command::new(bin())
        .args(["--socket", d.socket.to_str().unwrap(), "status", "sshd"])
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("Syslog senders") && human.contains("127.0.0.1"),
        "{human}"
    );
}

/// A private rsyslogd: UDP inputs on three ports, each forwarding to
/// banhammer its own way.
struct Rsyslog {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rsyslog(inputs: &[(u16, &str)]) -> Rsyslog {
    let dir = tempfile::tempdir().unwrap();
    let mut conf = format!(
        "global(workDirectory=\"{}\")\nmodule(load=\"imudp\")\n",
        dir.path().display()
    );
    for (i, (port, action)) in inputs.iter().enumerate() {
        conf.push_str(&format!(
            "input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"r{i}\")\nruleset(name=\"r{i}\") {{ {action} }}\n"
        ));
    }
    let conf_path = dir.path().join("rsyslog.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new("rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf_path)
        .arg("-i")
        .arg(dir.path().join("rsyslog.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rsyslogd");
    // rsyslog is listening once its pid file exists
    wait_for("rsyslogd to start", Duration::from_secs(10), || {
        dir.path().join("rsyslog.pid").exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    Rsyslog { child, _dir: dir }
}

#[test]
fn rsyslog_forwarding_over_udp_tcp_and_octet_counting_bans() {
    let (_s, d) = start(
        "listen = udp://127.0.0.1:0 tcp://127.0.0.1:0",
        "syslog[app=sshd, facility=auth authpriv]",
    );
    let udp = listener(&d, "udp").port();
    let tcp = listener(&d, "tcp").port();
    let ins: Vec<u16> = (0..3).map(|_| free_udp_port()).collect();
    let fwd = |proto: &str, port: u16, extra: &str| {
        format!("action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{port}\" protocol=\"{proto}\" {extra})")
    };
    let _r = rsyslog(&[
        (ins[0], &fwd("udp", udp, "")),
        (ins[1], &fwd("tcp", tcp, "TCP_Framing=\"traditional\"")),
        (
            ins[2],
            &fwd(
                "tcp",
                tcp,
                "TCP_Framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\"",
            ),
        ),
    ]);
    let ips = ["192.0.2.41", "192.0.2.42", "192.0.2.43"];
    for (ip, port) in ips.iter().zip(&ins) {
        for n in 0..3 {
            logger(
                &[
                    "--server",
                    "127.0.0.1",
                    "--udp",
                    "--port",
                    &port.to_string(),
                    "-t",
                    "sshd",
                    "--id=77",
                    "-p",
                    "authpriv.info",
                ],
                &failure(ip, n),
            );
        }
    }
    for ip in ips {
        wait_banned(&d, ip);
    }
    let c = syslog_status(&d)["counters"].clone();
    assert_eq!(c["bad_framing"], 0, "{c}");
    assert_eq!(c["unparsed"], 0, "{c}");
}

/// The shipped rsyslog snippet (`units/rsyslog-banhammer.conf`), pointed at
/// `port`: it must pass `rsyslogd -N1`, forward only auth and authpriv, and
/// keep what it could not deliver until banhammer is up.
#[test]
fn the_shipped_rsyslog_snippet_forwards_auth_and_queues_while_banhammer_is_down() {
    let snippet = std::fs::read_to_string(repo().join("units/rsyslog-banhammer.conf")).unwrap();
    let tcp_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(
        snippet.contains("port=\"5514\""),
        "the snippet names its port"
    );
    let action = snippet.replace("port=\"5514\"", &format!("port=\"{tcp_port}\""));
    let dir = tempfile::tempdir().unwrap();
    let udp_in = free_udp_port();
    let conf = format!(
        "global(workDirectory=\"{}\")\nmodule(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp_in}\")\n{action}\n",
        dir.path().display()
    );
    let conf_path = dir.path().join("rsyslog.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let check = Command::new("rsyslogd")
        .args(["-N1", "-f"])
        .arg(&conf_path)
        .output()
        .expect("rsyslogd -N1");
    assert!(
        check.status.success(),
        "rsyslogd -N1 rejects the snippet: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new("rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf_path)
        .arg("-i")
        .arg(dir.path().join("rsyslog.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rsyslogd");
    let _r = Rsyslog { child, _dir: dir };
    std::thread::sleep(Duration::from_millis(500));
    let send = |ip: &str, facility: &str| {
        for n in 0..3 {
            logger(
                &[
                    "--server",
                    "127.0.0.1",
                    "--udp",
                    "--port",
                    &udp_in.to_string(),
                    "-t",
                    "sshd",
                    "--id=4711",
                    "-p",
                    facility,
                ],
                &failure(ip, n),
            );
        }
    };
    // banhammer is not running yet: rsyslog has to keep these
    send("192.0.2.71", "auth.info");
    send("192.0.2.72", "mail.info");
    std::thread::sleep(Duration::from_millis(500));
    let (_s, d) = start(&format!("listen = tcp://127.0.0.1:{tcp_port}"), "syslog");
    wait_banned(&d, "192.0.2.71");
    send("192.0.2.73", "authpriv.notice");
    wait_banned(&d, "192.0.2.73");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !d.is_banned("192.0.2.72"),
        "mail messages are not forwarded"
    );
    let c = syslog_status(&d)["counters"].clone();
    // rsyslog delivers at least once: a message it was sending when the
    // connection failed may come twice, none may be missing
    assert!(
        c["received"].as_u64().unwrap_or(0) >= 6,
        "every auth message: {c}"
    );
    assert_eq!(c["bad_framing"], 0, "{c}");
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn rfc5424(ip: &str, n: usize) -> String {
    format!(
        "<38>1 {} web1 sshd 99 - - {}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ"),
        failure(ip, n)
    )
}

#[test]
fn bad_input_is_counted_and_the_listener_keeps_serving() {
    let (_s, d) = start(
        "listen = udp://127.0.0.1:0 tcp://127.0.0.1:0\nallowed_senders = 127.0.0.1\nmax_message_size = 1k\nmax_connections = 4\nframe_timeout = 1s",
        "syslog",
    );
    let t = listener(&d, "tcp");
    let u = listener(&d, "udp");

    // malformed and oversized frames, a wrong count, invalid UTF-8, on one
    // connection, and a good failure after each of them
    let mut c = tcp(t);
    let good = |n| {
        let m = rfc5424("192.0.2.51", n);
        format!("{} {m}", m.len())
    };
    let mut bytes: Vec<u8> = Vec::new();
    bytes.extend(format!("5000 {}", "x".repeat(5000)).as_bytes()); // oversized, counted
    bytes.extend(good(0).as_bytes());
    bytes.extend(b"9 <13>abcdefghijkl\n"); // a count too small: the rest is garbage
    bytes.extend(format!("{}\n", "y".repeat(3000)).as_bytes()); // oversized line
    bytes.extend(good(1).as_bytes());
    bytes.extend(b"\xff\xfe garbage \x00");
    let bad_utf8 = format!(
        "<38>1 {} web1 sshd 99 - - Failed password for caf\u{e9} from 192.0.2.51 port 22 ssh2",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    let bad_utf8 = bad_utf8.replace('\u{e9}', "\u{1}").into_bytes();
    let bad_utf8: Vec<u8> = bad_utf8
        .iter()
        .map(|&b| if b == 1 { 0xe9 } else { b })
        .collect();
    bytes.extend(format!("{} ", bad_utf8.len()).as_bytes());
    bytes.extend(&bad_utf8);
    c.write_all(&bytes).unwrap();
    c.flush().unwrap();
    wait_banned(&d, "192.0.2.51");
    for name in ["oversized", "bad_framing", "invalid_utf8"] {
        assert!(counter(&d, name) >= 1, "{name}: {}", syslog_status(&d));
    }
    assert_eq!(counter(&d, "oversized"), 2, "{}", syslog_status(&d));

    // a sender outside allowed_senders: dropped, counted, never matched
    let spoof = UdpSocket::bind("127.0.0.2:0").unwrap();
    for n in 0..5 {
        spoof
            .send_to(rfc5424("192.0.2.52", n).as_bytes(), u)
            .unwrap();
    }
    wait_for("rejected datagrams", Duration::from_secs(10), || {
        counter(&d, "rejected_senders") >= 5
    });
    let sock = connect_from("127.0.0.2", t);
    let mut buf = [0u8; 1];
    let closed = matches!(
        sock.map(|mut s| s.read(&mut buf)),
        Ok(Ok(0)) | Ok(Err(_)) | Err(_)
    );
    assert!(closed, "a connection from 127.0.0.2 must be refused");
    assert!(!d.is_banned("192.0.2.52"));

    // slow loris: a frame that never completes is cut at frame_timeout
    let mut slow = tcp(t);
    slow.write_all(b"<13>Nov 22 10:00:00 h sshd: Fai").unwrap();
    let before = counter(&d, "timeouts");
    let mut rest = Vec::new();
    let n = slow.read_to_end(&mut rest);
    assert!(
        matches!(n, Ok(0)) || n.is_err(),
        "the slow connection must be closed"
    );
    assert!(counter(&d, "timeouts") > before);

    // more connections than max_connections: the extra one is refused
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let held: Vec<TcpStream> = (0..4).map(|_| tcp(t)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = tcp(t);
    let mut b = [0u8; 1];
    let r = extra.read(&mut b);
    assert!(
        matches!(r, Ok(0)) || r.is_err(),
        "the 5th connection must be closed"
    );
    assert!(counter(&d, "connections_refused") >= 1);
    drop(held);

    // and the listeners still serve
    std::thread::sleep(Duration::from_millis(200));
    let ok = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..3 {
        ok.send_to(rfc5424("192.0.2.53", n).as_bytes(), u).unwrap();
    }
    wait_banned(&d, "192.0.2.53");
    let mut c2 = tcp(t);
    for n in 0..3 {
        c2.write_all(format!("{}\n", rfc5424("192.0.2.54", n)).as_bytes())
            .unwrap();
    }
    wait_banned(&d, "192.0.2.54");
}

/// A TCP connection from a chosen local address.
fn connect_from(local: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let local: std::net::Ipv4Addr = local.parse().unwrap();
    let SocketAddr::V4(to) = to else {
        unreachable!("the listener is IPv4")
    };
    // SAFETY: plain socket calls on a fresh fd that the TcpStream then owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let addr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let l = addr(local, 0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&l as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let r = addr(*to.ip(), to.port());
        if libc::connect(fd, (&r as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(stream)
    }
}

/// Sends `data` over TLS with `openssl s_client`; returns its exit status.
fn s_client(addr: SocketAddr, dir: &std::path::Path, client_cert: bool, data: &str) -> bool {
    let mut args = vec![
        "s_client".to_string(),
        "-quiet".into(),
        "-no_ign_eof".into(),
        "-connect".into(),
        addr.to_string(),
        "-CAfile".into(),
        "ca.pem".into(),
    ];
    if client_cert {
        args.extend([
            "-cert".into(),
            "client.pem".into(),
            "-key".into(),
            "client.key".into(),
        ]);
    }
    let mut child = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(data.as_bytes());
    std::thread::sleep(Duration::from_millis(1500));
    drop(stdin);
    // `-quiet` ignores the end of its input: it would wait for the server
    // to hang up, which an idle timeout of an hour does not do soon
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.success(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

#[test]
fn tls_with_client_certificates() {
    let pki = tempfile::tempdir().unwrap();
    let p = pki.path();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
        ],
        p,
    );
    for (name, cn) in [("server", "localhost"), ("client", "sender")] {
        openssl(
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
            p,
        );
        std::fs::write(
            p.join(format!("{name}.ext")),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
            p,
        );
    }
    let (_s, d) = start(
        &format!(
            "listen = tls://127.0.0.1:0\ntls_cert = {0}/server.pem\ntls_key = {0}/server.key\ntls_client_ca = {0}/ca.pem",
            p.display()
        ),
        "syslog",
    );
    let addr = listener(&d, "tls");
    let frames = |ip: &str| -> String {
        (0..3)
            .map(|n| {
                let m = rfc5424(ip, n);
                format!("{} {m}", m.len())
            })
            .collect()
    };
    s_client(addr, p, true, &frames("192.0.2.61"));
    wait_banned(&d, "192.0.2.61");
    // without a client certificate the handshake fails: nothing counted
    s_client(addr, p, false, &frames("192.0.2.62"));
    wait_for("the failed handshake", Duration::from_secs(10), || {
        counter(&d, "tls_errors") >= 1
    });
    assert!(!d.is_banned("192.0.2.62"));
}

/// A syslog jail with the web listeners on (their metrics keep the syslog
/// receiver alive): `stop` still ends every jail and the process.
#[test]
fn stop_ends_syslog_jails_while_the_web_is_on() {
    let s = Setup::new(
        "[sshd]\nenabled = true\nfilter = sshd\nbackend = syslog\nmaxretry = 3\nfindtime = 600\nbantime = 600\n",
    );
    s.write_daemon_conf(
        "[syslog]\nlisten = udp://127.0.0.1:0 tcp://127.0.0.1:0\n[web]\nadmin_listen = 127.0.0.1:0\nbanpage_listen = 127.0.0.1:0\napi_tokens = t\n",
    );
    let d = s.start();
    let udp = listener(&d, "udp").port().to_string();
    logger(
        &[
            "--server",
            "127.0.0.1",
            "--udp",
            "--port",
            &udp,
            "--rfc3164",
            "-t",
            "sshd",
        ],
        &failure("192.0.2.77", 1),
    );
    let t = Instant::now();
    d.stop();
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(s.log().contains("[sshd] Jail stopped"), "{}", s.log());
}
