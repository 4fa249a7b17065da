//! The web pages in a real headless Chromium (driven through chromedriver's
//! WebDriver protocol) against a running daemon: the ban page for a banned
//! and a non-banned visitor, the admin login, the address page, an unban
//! from the browser and the ban disappearing. Screenshots of the ban page
//! and the dashboard are written to `target/screenshots/`.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 JSON client for chromedriver.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("chromedriver");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver keeps the connection open: read the head, then exactly
    // the body it announces
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let body = if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        let mut b = vec![0u8; len];
        s.read_exact(&mut b).unwrap();
        String::from_utf8_lossy(&b).into_owned()
    } else {
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest);
        if head.contains("transfer-encoding: chunked") {
            dechunk(&rest)
        } else {
            rest
        }
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {head}{body}"))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (package chromium-driver)");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
                         "--window-size=1280,1000", format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let v = http(port, "POST", "/session", Some(&caps));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        );
        if v["value"]["error"].is_string() {
            panic!("webdriver {path}: {v}");
        }
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn text(&self) -> String {
        let v = self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": "return document.body.innerText", "args": []})),
        );
        v.as_str().unwrap_or_default().to_string()
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = repo().join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, png).unwrap();
        p
    }

    fn wait_text(&self, want: &str) -> String {
        let t = Instant::now();
        loop {
            let text = self.text();
            if text.contains(want) {
                return text;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{want:?} not on the page: {text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn hash(password: &str) -> String {
    let mut c = Command::new(bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn ban_page_and_admin_view_in_a_real_browser() {
    let banpage = free_port();
    let admin = free_port();
    let s = Setup::new("");
    s.write("auth.log", "");
    s.write(
        "conf/jail.conf",
        &format!(
            "[sshd]\nenabled = true\nfilter = sshd\nlogpath = {}\nmaxretry = 2\nbantime = 3600\ndescription = the SSH login of build server 3\n",
            s.path("auth.log").display()
        ),
    );
    s.write_daemon_conf(&format!(
        "[web]\nbanpage_listen = 127.0.0.1:{banpage}\nadmin_listen = 127.0.0.1:{admin}\nadmin_password_hash = {}\ncontact = helpdesk@example.test\n",
        hash(PASSWORD)
    ));
    let d = s.start();
    // an attacker with a hostile user name, banned from the log
    let evil = "<img src=x onerror=alert(1)>";
    s.append(
        "auth.log",
        &[1, 2].map(|n| {
            sshd_failure("192.0.2.50", "x")
                .replace("for x from", &format!("for invalid user {evil} from"))
                .replace("sshd[4242]", &format!("sshd[{}]", 600 + n))
        }),
    );
    wait_for("the ban", Duration::from_secs(10), || {
        d.is_banned("192.0.2.50")
    });
    // the browser itself (127.0.0.1) banned by hand
    d.ctl(&["ban", "sshd", "127.0.0.1"]);
    let b = Browser::start();

    b.go(&format!("http://127.0.0.1:{banpage}/some/page"));
    let text = b.wait_text("Your address is blocked");
    for want in [
        "127.0.0.1",
        "the SSH login of build server 3",
        "helpdesk@example.test",
        "Reference",
        "Blocked until",
    ] {
        assert!(text.contains(want), "{want:?} on the ban page: {text}");
    }
    assert!(
        !text.contains("192.0.2.50"),
        "nothing about other addresses: {text}"
    );
    let shot = b.screenshot("banpage.png");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real picture"
    );

    // admin: a wrong password first, then the right one
    b.go(&format!("http://127.0.0.1:{admin}/"));
    b.wait_text("Password");
    b.type_into("#password", "not it");
    b.click("button[type=submit]");
    b.wait_text("Wrong password");
    b.type_into("#password", PASSWORD);
    b.click("button[type=submit]");
    let text = b.wait_text("Dashboard");
    assert!(
        text.contains("sshd") && text.contains("Bans over the last 24 hours"),
        "{text}"
    );
    b.wait_text("192.0.2.50");
    b.screenshot("dashboard.png");

    // the attacker's address page: the hostile name is shown as text
    b.go(&format!("http://127.0.0.1:{admin}/address/192.0.2.50"));
    let text = b.wait_text("What the jails decide");
    assert!(text.contains(evil), "the user name, as text: {text}");
    let alerted = b.cmd(
        "POST",
        "/execute/sync",
        Some(json!({"script": "return document.querySelectorAll('img').length", "args": []})),
    );
    assert_eq!(alerted, json!(0), "markup from the log became an element");

    // unban 127.0.0.1 from the browser; the ban disappears
    b.go(&format!("http://127.0.0.1:{admin}/address/127.0.0.1"));
    b.wait_text("banned");
    b.click("form[action='/unban'] button");
    b.wait_text("Unbanned.");
    wait_for("the unban", Duration::from_secs(10), || {
        !d.is_banned("127.0.0.1")
    });
    b.go(&format!(
        "http://127.0.0.1:{admin}/bans?q=127.0.0.1&state=active"
    ));
    b.wait_text("No bans match.");
    b.go(&format!("http://127.0.0.1:{banpage}/"));
    b.wait_text("Your address is not blocked");
    b.screenshot("notbanned.png");

    // the failed login is in the log in the form the shipped filter reads
    drop(b);
    d.stop();
    let out = Command::new(bin())
        .args(["regex", s.path("banhammer.log").to_str().unwrap()])
        .arg(repo().join("filters/banhammer-admin.conf"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("Failregex: 1 total"),
        "banhammer-admin on the daemon's log: {report}"
    );
}

/// The admin view over TLS: it answers HTTPS, and its cookies are Secure.
#[test]
fn the_admin_view_speaks_tls_with_secure_cookies() {
    let pki = tempfile::tempdir().unwrap();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        pki.path(),
    );
    let admin = free_port();
    let s = Setup::new("");
    s.write("auth.log", "");
    s.write(
        "conf/jail.conf",
        &format!(
            "[sshd]\nenabled = true\nfilter = sshd\nlogpath = {}\n",
            s.path("auth.log").display()
        ),
    );
    s.write_daemon_conf(&format!(
        "[web]\nadmin_listen = 127.0.0.1:{admin}\nadmin_password_hash = {}\nadmin_tls_cert = {}/cert.pem\nadmin_tls_key = {}/key.pem\n",
        hash(PASSWORD),
        pki.path().display(),
        pki.path().display()
    ));
    let d = s.start();
    wait_for("the admin TLS listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
    });
    // `-quiet` implies ignoring end of input: s_client keeps reading until
    // the server closes the connection (`Connection: close`).
    let mut c = Command::new("timeout")
        .args([
            "20",
            "openssl",
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{admin}"),
            "-CAfile",
        ])
        .arg(pki.path().join("cert.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = c.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let cookie = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: bh_login="))
        .unwrap_or_else(|| panic!("no login cookie: {text}"));
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    d.stop();
}
