//! Router tests: every route of the ban page, the admin view, the API and
//! the metrics, driven with `oneshot` against a real SQLite database (made
//! with the real store) and a jail that answers as a running jail does.

use super::admin::{self, AdminState};
use super::{banpage, session, WebState};
use crate::config::web::WebConfig;
use crate::control::{Incoming, Request as CtlRequest, Response as CtlResponse};
use crate::jail::{BanDetail, Inspection, JailCmd, JailDirectory, JailMsg, JailStatus};
use crate::store::{BanRecord, BanRequest, Store, StoreCmd};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

const PASSWORD: &str = "s3cret horse";
const TOKEN: &str = "api-token-for-tests";
const BANNED: &str = "192.0.2.66";
const HOSTILE: &str = "<script>alert('pwned')</script>";

fn ban_record() -> BanRecord {
    BanRecord {
        id: 42,
        jail: "sshd".into(),
        ip: BANNED.into(),
        start: crate::jail::now() - 60.0,
        end: Some(crate::jail::now() + 540.0),
        ban_count: 0,
        failures: 3,
        matches: vec![format!(
            "sshd[1]: Failed password for {HOSTILE} from {BANNED}"
        )],
        fields: vec![("user".into(), HOSTILE.into())],
    }
}

/// A jail task that answers as `sshd` would, with one ban.
fn fake_jail() -> JailDirectory {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<JailMsg>(16);
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let JailMsg::Control(cmd) = msg else { continue };
            let status = || JailStatus {
                name: "sshd".into(),
                filter: "sshd".into(),
                backend: "Auto".into(),
                sources: vec![("/var/log/auth.log".into(), "inotify".into())],
                lines: 10,
                currently_failed: 1,
                total_failed: 4,
                currently_banned: 1,
                total_banned: 1,
                total_unbanned: 0,
                banned: vec![],
                senders: vec![],
                maxretry: 3,
                findtime: 600.0,
                bantime: 600.0,
                description: None,
                source_lines: vec![("/var/log/auth.log".into(), 10)],
                action_errors: 0,
            };
            match cmd {
                JailCmd::Brief(r) | JailCmd::Status(r) => {
                    let _ = r.send(status());
                }
                JailCmd::Lookup { ip, reply } => {
                    let _ = reply.send((ip.to_string() == BANNED).then(|| BanDetail {
                        ban: ban_record(),
                        findtime: 600.0,
                        maxretry: 3,
                        description: None,
                        filter: "sshd".into(),
                    }));
                }
                JailCmd::Inspect { ip, reply } => {
                    let _ = reply.send(Inspection {
                        jail: "sshd".into(),
                        failures: 1,
                        maxretry: 3,
                        findtime: 600.0,
                        ignored: false,
                        ban: (ip.to_string() == BANNED).then(ban_record),
                    });
                }
                _ => {}
            }
        }
    });
    let d = JailDirectory::default();
    d.set("sshd", tx);
    d
}

/// A main loop that answers ban and unban the way the daemon does.
fn fake_daemon() -> tokio::sync::mpsc::Sender<Incoming> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Incoming>(8);
    tokio::spawn(async move {
        while let Some((req, reply)) = rx.recv().await {
            let r = match req {
                CtlRequest::Ban { ips, .. } => CtlResponse::ok(serde_json::json!(ips)),
                CtlRequest::Unban { ips, .. } => CtlResponse::ok(serde_json::json!(ips)),
                CtlRequest::Outbox { action, id, .. } => match (action.as_str(), id) {
                    ("list", _) => {
                        CtlResponse::ok(serde_json::json!([{"id": "m1", "state": "pending"}]))
                    }
                    (_, Some(id)) if id == "m1" => CtlResponse::ok(serde_json::json!(true)),
                    _ => CtlResponse::err("no such message"),
                },
                _ => CtlResponse::err("unexpected"),
            };
            let _ = reply.send(r);
        }
    });
    tx
}

struct Fixture {
    _dir: tempfile::TempDir,
    admin: Router,
    banpage: Router,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bh.sqlite3");
    let (store, _t) = Store::open(Some(&db)).unwrap();
    store
        .send(StoreCmd::Failure {
            jail: "sshd".into(),
            ip: BANNED.into(),
            time: crate::jail::now() - 30.0,
            line: format!("Failed password for {HOSTILE} from {BANNED}").into(),
            origin: None,
        })
        .unwrap();
    store
        .ban(BanRequest {
            jail: "sshd".into(),
            ip: BANNED.into(),
            start: crate::jail::now() - 20.0,
            failures: 3,
            matches: vec!["a line".into()],
            fields: vec![("user".into(), HOSTILE.into())],
            origin: None,
            policy: crate::jail::BanPolicy {
                bantime: 600.0,
                increment: None,
            },
        })
        .await
        .unwrap();
    store.flush().await.unwrap();
    let (reader, _rt) = crate::store::reader::Reader::open(&db).unwrap();
    let cfg = Arc::new(WebConfig {
        admin_password_hash: Some(session::hash_password(PASSWORD).unwrap()),
        api_tokens: vec![TOKEN.into()],
        contact: Some("abuse@example.test".into()),
        ..WebConfig::default()
    });
    let jails = fake_jail();
    let web = WebState {
        jails: jails.clone(),
        cfg,
    };
    let (_, dashboard) = tokio::sync::watch::channel(super::stats::Dashboard::default());
    let state = AdminState {
        web: web.clone(),
        sessions: Arc::new(session::Sessions::default()),
        reader: Some(reader),
        control: fake_daemon(),
        dashboard,
        secure: false,
        metrics: Default::default(),
    };
    Fixture {
        _dir: dir,
        admin: admin::router(state),
        banpage: banpage::router(web),
    }
}

fn req(method: &str, uri: &str, from: &str) -> axum::http::request::Builder {
    let peer: SocketAddr = format!("{from}:5555").parse().unwrap();
    Request::builder()
        .method(method)
        .uri(uri)
        .extension(ConnectInfo(peer))
}

async fn send(r: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = r.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn form(pairs: &[(&str, &str)]) -> Body {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    Body::from(
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect::<Vec<_>>()
            .join("&"),
    )
}

fn set_cookie(h: &axum::http::HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(String::from)
}

fn hidden(body: &str, name: &str) -> String {
    let at = body
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} field in {body}"));
    let rest = &body[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// Logs in; returns (session cookie, CSRF token of the session).
async fn login(f: &Fixture) -> (String, String) {
    let (_, h, body) = send(
        &f.admin,
        req("GET", "/login", "127.0.0.1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let csrf = hidden(&body, "csrf");
    let login_cookie = set_cookie(&h, "bh_login").unwrap();
    let login_cookie = login_cookie.split(';').next().unwrap().to_string();
    let (status, h, _) = send(
        &f.admin,
        req("POST", "/login", "127.0.0.1")
            .header(header::COOKIE, &login_cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[("password", PASSWORD), ("csrf", &csrf)]))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let c = set_cookie(&h, admin::SESSION_COOKIE).expect("a session cookie");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict"),
        "{c}"
    );
    let cookie = c.split(';').next().unwrap().to_string();
    let (status, _, body) = send(
        &f.admin,
        req("GET", "/", "127.0.0.1")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (cookie, hidden(&body, "csrf"))
}

#[tokio::test]
async fn pages_need_a_session_and_forms_their_csrf_token() {
    let f = fixture().await;
    for path in ["/", "/bans", "/jails/sshd", &format!("/address/{BANNED}")] {
        let (status, h, _) = send(
            &f.admin,
            req("GET", path, "127.0.0.1").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(h[header::LOCATION], "/login", "{path}");
    }
    let (status, _, _) = send(
        &f.admin,
        req("GET", "/failures/recent", "127.0.0.1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (cookie, csrf) = login(&f).await;
    for (path, token) in [
        ("/unban", ""),
        ("/unban", "wrong"),
        ("/ban", "wrong"),
        ("/logout", ""),
    ] {
        let (status, _, _) = send(
            &f.admin,
            req("POST", path, "127.0.0.1")
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form(&[("ip", BANNED), ("jail", "sshd"), ("csrf", token)]))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} with csrf {token:?}");
    }
    // with the token: done, back to the address page
    let (status, h, _) = send(
        &f.admin,
        req("POST", "/unban", "127.0.0.1")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[("ip", BANNED), ("csrf", &csrf)]))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(h[header::LOCATION]
        .to_str()
        .unwrap()
        .starts_with(&format!("/address/{BANNED}?msg=Unbanned")));
    // a login form without its cookie is refused
    let (status, _, _) = send(
        &f.admin,
        req("POST", "/login", "127.0.0.1")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[("password", PASSWORD), ("csrf", "x")]))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // logout ends the session
    let (status, _, _) = send(
        &f.admin,
        req("POST", "/logout", "127.0.0.1")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[("csrf", &csrf)]))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = send(
        &f.admin,
        req("GET", "/", "127.0.0.1")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the old cookie no longer works"
    );
}

#[tokio::test]
async fn every_page_renders_and_log_text_stays_escaped() {
    let f = fixture().await;
    let (cookie, _) = login(&f).await;
    for path in [
        "/",
        "/bans",
        "/bans?q=192.0.2.&state=active&page=1",
        "/jails/sshd",
        &format!("/address/{BANNED}"),
        "/failures/recent?after=0",
    ] {
        let (status, _, body) = send(
            &f.admin,
            req("GET", path, "127.0.0.1")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        // JSON carries the text as it is (the page inserts it as text)
        if !path.starts_with("/failures") {
            assert!(
                !body.contains(HOSTILE),
                "{path}: raw markup from a log line: {body}"
            );
        }
    }
    let (_, _, body) = send(
        &f.admin,
        req("GET", &format!("/address/{BANNED}"), "127.0.0.1")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(
        body.contains("&#60;script&#62;alert("),
        "escaped user and line: {body}"
    );
    assert!(body.contains("banned"), "the jail's decision: {body}");
    let (_, _, body) = send(
        &f.admin,
        req("GET", "/bans?q=sshd-1", "127.0.0.1")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(body.contains(BANNED), "search by reference: {body}");
    let (status, _, _) = send(
        &f.admin,
        req("GET", "/jails/nosuch", "127.0.0.1")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn failed_logins_are_limited_and_logged() {
    let f = fixture().await;
    let mut last = StatusCode::OK;
    for _ in 0..(session::MAX_FAILED_LOGINS + 1) {
        let (_, h, body) = send(
            &f.admin,
            req("GET", "/login", "198.51.100.9")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        let csrf = hidden(&body, "csrf");
        let c = set_cookie(&h, "bh_login").unwrap();
        let (status, _, _) = send(
            &f.admin,
            req("POST", "/login", "198.51.100.9")
                .header(header::COOKIE, c.split(';').next().unwrap())
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form(&[("password", "guess"), ("csrf", &csrf)]))
                .unwrap(),
        )
        .await;
        last = status;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_api_wants_its_token() {
    let f = fixture().await;
    for path in ["/api/v1/jails", "/api/v1/bans", "/api/v1/failures"] {
        let (status, _, _) = send(
            &f.admin,
            req("GET", path, "127.0.0.1").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let (status, _, _) = send(
            &f.admin,
            req("GET", path, "127.0.0.1")
                .header(header::AUTHORIZATION, "Bearer nope")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let (status, _, body) = send(
            &f.admin,
            req("GET", path, "127.0.0.1")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON");
    }
    let (_, _, body) = send(
        &f.admin,
        req("GET", "/api/v1/bans?state=active", "127.0.0.1")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["bans"][0]["ip"], BANNED, "{v}");
    for (path, body) in [
        ("/api/v1/ban", r#"{"jail":"sshd","ip":"192.0.2.70"}"#),
        ("/api/v1/unban", r#"{"ips":["192.0.2.70"]}"#),
    ] {
        let (status, _, out) = send(
            &f.admin,
            req("POST", path, "127.0.0.1")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}: {out}");
        assert!(out.contains("192.0.2.70"), "{out}");
    }
    let (status, _, _) = send(
        &f.admin,
        req("POST", "/api/v1/ban", "127.0.0.1")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{not json"))
            .unwrap(),
    )
    .await;
    assert!(status.is_client_error(), "a broken body: {status}");
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = send(
        &f.admin,
        req("GET", "/api/v1/outbox", "127.0.0.1")
            .header(header::AUTHORIZATION, &auth)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("m1"), "{body}");
    for (path, want) in [
        ("/api/v1/outbox/m1/cancel", StatusCode::OK),
        ("/api/v1/outbox/m1/retry", StatusCode::OK),
        (
            "/api/v1/outbox/nope/cancel",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, _, body) = send(
            &f.admin,
            req("POST", path, "127.0.0.1")
                .header(header::AUTHORIZATION, &auth)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, want, "{path}: {body}");
    }
    let (status, _, _) = send(
        &f.admin,
        req("POST", "/api/v1/outbox/m1/cancel", "127.0.0.1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, h, body) = send(
        &f.admin,
        req("GET", "/metrics", "127.0.0.1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        body.contains("banhammer_active_bans{jail=\"sshd\"} 1")
            && body.contains("banhammer_unbans_total{jail=\"sshd\"} "),
        "{body}"
    );
    assert!(
        body.contains("banhammer_lines_total{jail=\"sshd\",source=\"/var/log/auth.log\"} 10"),
        "{body}"
    );
}

#[tokio::test]
async fn the_ban_page_explains_only_the_visitors_own_ban() {
    let f = fixture().await;
    let (status, h, body) = send(
        &f.banpage,
        req("GET", "/any/path?x=1", BANNED)
            .header(header::HOST, "whatever.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let retry: u64 = h[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((500..=600).contains(&retry), "{retry}");
    for want in [
        BANNED,
        "the SSH login",
        "3 failed attempts",
        "10 minutes",
        "sshd-42",
        "abuse@example.test",
        "lang=\"en\"",
    ] {
        assert!(body.contains(want), "{want}: {body}");
    }
    assert!(
        !body.contains("Failed password"),
        "no log lines unless the operator allows them"
    );
    let (status, _, body) = send(
        &f.banpage,
        req("GET", "/", "192.0.2.67").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("not blocked") && !body.contains(BANNED),
        "{body}"
    );
    let (status, _, _) = send(
        &f.banpage,
        req("GET", "/check", BANNED).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = send(
        &f.banpage,
        req("GET", "/check", "192.0.2.67")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // a forged header from an untrusted peer changes nothing
    let (status, _, _) = send(
        &f.banpage,
        req("GET", "/check", "192.0.2.67")
            .header("x-forwarded-for", BANNED)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}
