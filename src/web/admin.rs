//! The admin view: login, dashboard, jail pages, the ban list, the address
//! page, manual ban and unban, live failures.
//!
//! Its own listener (`[web] admin_listen`, loopback by default). Every page
//! but the login sits behind [`require_session`]: no session cookie, no
//! page (a redirect to the login). Sessions are random tokens in an
//! HttpOnly, SameSite=Strict cookie (Secure under TLS); every form carries
//! the session's CSRF token and a POST without it is refused (403). Failed
//! logins are rate-limited per address and logged as `[admin] Failed admin
//! login from ADDR`, which the shipped `banhammer-admin` filter reads.
//! Pages read live figures from the jails, history from the database
//! reader, and the costly dashboard figures from [`super::stats`]. Text
//! from log lines is escaped by the templates like everything else.

use super::session::{cookie, same, Session, Sessions};
use super::stats::{ban_chart, Dashboard};
use super::{client_ip, WebError, WebState};
use crate::control::{Incoming, Request, Response as CtlResponse};
use crate::jail::{Inspection, JailStatus};
use crate::store::reader::{self, AddressHistory, BanPage, BanQuery, FailureRow, Reader};
use askama::Template;
use axum::extract::{ConnectInfo, Path, Query, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

pub const SESSION_COOKIE: &str = "bh_session";
const LOGIN_COOKIE: &str = "bh_login";

/// What the admin pages share.
#[derive(Clone)]
pub struct AdminState {
    pub web: WebState,
    pub sessions: Arc<Sessions>,
    pub reader: Option<Reader>,
    /// The daemon's main loop (bans and unbans go the way the CLI's go).
    pub control: mpsc::Sender<Incoming>,
    pub dashboard: watch::Receiver<Dashboard>,
    /// The listener speaks TLS: cookies are `Secure`.
    pub secure: bool,
    pub metrics: super::metrics::MetricsSources,
}

impl AdminState {
    pub async fn ask_daemon(&self, req: Request) -> Result<serde_json::Value, String> {
        let (tx, rx) = oneshot::channel::<CtlResponse>();
        self.control
            .send((req, tx))
            .await
            .map_err(|_| "the daemon is stopping".to_string())?;
        let r = rx
            .await
            .map_err(|_| "the daemon did not answer".to_string())?;
        if r.ok {
            Ok(r.result.unwrap_or_default())
        } else {
            Err(r.error.unwrap_or_else(|| "failed".into()))
        }
    }

    fn reader(&self) -> Result<&Reader, WebError> {
        self.reader.as_ref().ok_or(WebError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            public: "There is no database (dbfile = None), so there is no history to show.",
            detail: "admin page needs the database reader".into(),
        })
    }
}

pub fn router(state: AdminState) -> Router {
    let pages = Router::new()
        .route("/", get(dashboard))
        .route("/jails/{name}", get(jail_page))
        .route("/bans", get(bans_page))
        .route("/address/{ip}", get(address_page))
        .route("/ban", post(ban))
        .route("/unban", post(unban))
        .route("/failures/recent", get(recent_failures))
        .route("/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route("/login", get(login_page).post(login))
        .merge(pages)
        .nest("/api/v1", super::api::router(state.clone()))
        .route("/metrics", get(super::metrics::metrics))
        .with_state(state)
}

/// No live session: to the login page (pages) or 401 (scripts).
async fn require_session(
    State(state): State<AdminState>,
    mut req: HttpRequest,
    next: Next,
) -> Response {
    let session =
        cookie(req.headers(), SESSION_COOKIE).and_then(|t| state.sessions.get(&t).map(|s| (t, s)));
    match session {
        Some((token, s)) => {
            req.extensions_mut().insert(SessionToken(token));
            req.extensions_mut().insert(s);
            next.run(req).await
        }
        None if req.uri().path() == "/failures/recent" => StatusCode::UNAUTHORIZED.into_response(),
        None => Redirect::to("/login").into_response(),
    }
}

#[derive(Clone)]
struct SessionToken(String);

fn cookie_header(
    state: &AdminState,
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if state.secure {
        c.push_str("; Secure");
    }
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    HeaderValue::from_str(&c).unwrap_or(HeaderValue::from_static(""))
}

fn render<T: Template>(t: &T) -> Result<Html<String>, WebError> {
    t.render()
        .map(Html)
        .map_err(|e| WebError::internal(format!("template: {e}")))
}

fn forbidden(what: &str) -> WebError {
    WebError {
        status: StatusCode::FORBIDDEN,
        public: "This form has expired or did not come from this site. Go back, reload the page and try again.",
        detail: format!("CSRF check failed: {what}"),
    }
}

/// `2026-12-01 10:20:00` (UTC).
pub fn when(t: f64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A ban's end for the lists.
pub fn until(end: Option<f64>) -> String {
    end.map_or("permanent".to_string(), when)
}

// ---- login ----

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
    configured: bool,
}

async fn login_page(State(state): State<AdminState>) -> Result<Response, WebError> {
    let csrf = super::session::random_token();
    let page = render(&LoginPage {
        csrf: csrf.clone(),
        error: None,
        configured: state.web.cfg.admin_password_hash.is_some(),
    })?;
    let c = cookie_header(&state, LOGIN_COOKIE, &csrf, "/login", Some(3600));
    Ok(([(header::SET_COOKIE, c)], page).into_response())
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let ip = client_ip::visitor(peer.ip(), &headers, &state.web.cfg.trusted_proxies);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&expected, &form.csrf) {
        return Err(forbidden("login form"));
    }
    let again = |error: &str, status: StatusCode| -> Result<Response, WebError> {
        let csrf = super::session::random_token();
        let page = render(&LoginPage {
            csrf: csrf.clone(),
            error: Some(error.to_string()),
            configured: state.web.cfg.admin_password_hash.is_some(),
        })?;
        let c = cookie_header(&state, LOGIN_COOKIE, &csrf, "/login", Some(3600));
        Ok((status, [(header::SET_COOKIE, c)], page).into_response())
    };
    if !state.sessions.may_try(ip) {
        tracing::warn!(target: "banhammer.web", jail = "admin", ip = %ip, "Failed admin login from");
        return again(
            "Too many failed logins from your address. Wait ten minutes and try again.",
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let Some(hash) = state.web.cfg.admin_password_hash.clone() else {
        return again(
            "No admin password is set: put `admin_password_hash = ...` (from `banhammer hash-password`) into [web] in banhammer.conf.",
            StatusCode::FORBIDDEN,
        );
    };
    let password = form.password;
    let ok = tokio::task::spawn_blocking(move || super::session::verify_password(&password, &hash))
        .await
        .map_err(|e| WebError::internal(e.to_string()))?
        .map_err(WebError::internal)?;
    if !ok {
        state.sessions.failed_login(ip);
        tracing::warn!(target: "banhammer.web", jail = "admin", ip = %ip, "Failed admin login from");
        return again("Wrong password.", StatusCode::UNAUTHORIZED);
    }
    state.sessions.good_login(ip);
    tracing::info!(target: "banhammer.web", jail = "admin", ip = %ip, "Admin login from");
    let (token, _) = state.sessions.create();
    let c = cookie_header(&state, SESSION_COOKIE, &token, "/", None);
    let clear = cookie_header(&state, LOGIN_COOKIE, "", "/login", Some(0));
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().append(header::SET_COOKIE, c);
    resp.headers_mut().append(header::SET_COOKIE, clear);
    Ok(resp)
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AdminState>,
    Extension(session): Extension<Session>,
    Extension(token): Extension<SessionToken>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    if !same(&session.csrf, &form.csrf) {
        return Err(forbidden("logout"));
    }
    state.sessions.remove(&token.0);
    let c = cookie_header(&state, SESSION_COOKIE, "", "/", Some(0));
    Ok(([(header::SET_COOKIE, c)], Redirect::to("/login")).into_response())
}

// ---- dashboard ----

pub struct JailRow {
    pub name: String,
    pub filter: String,
    pub failing: usize,
    pub failures: u64,
    pub banned: usize,
    pub bans: u64,
    pub lines: u64,
}

fn jail_rows(jails: &[JailStatus]) -> Vec<JailRow> {
    jails
        .iter()
        .map(|j| JailRow {
            name: j.name.clone(),
            filter: j.filter.clone(),
            failing: j.currently_failed,
            failures: j.total_failed,
            banned: j.currently_banned,
            bans: j.total_banned,
            lines: j.lines,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
struct DashboardPage {
    csrf: String,
    jails: Vec<JailRow>,
    chart: String,
    d: Dashboard,
    updated: String,
    failures: Vec<FailureView>,
    last_id: i64,
}

/// A failure as the pages show it.
#[derive(serde::Serialize)]
pub struct FailureView {
    pub id: i64,
    pub when: String,
    pub jail: String,
    pub ip: String,
    pub host: String,
    pub line: String,
}

fn failure_views(rows: Vec<FailureRow>) -> Vec<FailureView> {
    rows.into_iter()
        .map(|f| FailureView {
            id: f.id,
            when: when(f.time),
            jail: f.jail,
            ip: f.ip,
            host: match (f.host, f.peer) {
                (Some(h), Some(p)) => format!("{h} ({p})"),
                (None, Some(p)) => p,
                (Some(h), None) => h,
                (None, None) => String::new(),
            },
            line: f.line.unwrap_or_default(),
        })
        .collect()
}

async fn dashboard(
    State(state): State<AdminState>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, WebError> {
    let jails = state.web.jails.brief().await;
    let mut d = state.dashboard.borrow().clone();
    // the cheap figures live, the costly ones from the last refresh
    d.active_bans = jails.iter().map(|j| j.currently_banned as u64).sum();
    let failures = match &state.reader {
        Some(r) => {
            let (rows, (bans, failures)) = r
                .run(|c| Ok((reader::recent_failures(c, None, 0, 20)?, reader::totals(c)?)))
                .await
                .map_err(WebError::internal)?;
            d.total_bans = bans;
            d.total_failures = failures;
            rows
        }
        None => Vec::new(),
    };
    let last_id = failures.first().map_or(0, |f| f.id);
    render(&DashboardPage {
        csrf: session.csrf,
        jails: jail_rows(&jails),
        chart: ban_chart(&d.bans_per_hour),
        updated: when(d.at),
        d,
        failures: failure_views(failures),
        last_id,
    })
}

#[derive(serde::Deserialize)]
struct AfterQuery {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    jail: Option<String>,
}

/// New failures since `after` (the dashboard polls this).
async fn recent_failures(
    State(state): State<AdminState>,
    Query(q): Query<AfterQuery>,
) -> Result<Json<Vec<FailureView>>, WebError> {
    let r = state.reader()?.clone();
    let rows = r
        .run(move |c| reader::recent_failures(c, q.jail.as_deref(), q.after, 50))
        .await
        .map_err(WebError::internal)?;
    Ok(Json(failure_views(rows)))
}

// ---- jail ----

#[derive(Template)]
#[template(path = "admin/jail.html")]
struct JailPage {
    csrf: String,
    j: JailStatus,
    bans: Vec<BanView>,
    total_active: u64,
    failures: Vec<FailureView>,
    findtime: String,
    bantime: String,
}

/// A ban as the lists show it.
pub struct BanView {
    pub reference: String,
    pub jail: String,
    pub ip: String,
    pub start: String,
    pub end: String,
    pub failures: u32,
    pub active: bool,
    pub ended: String,
    pub user: String,
}

fn ban_views(page: &BanPage) -> Vec<BanView> {
    page.bans
        .iter()
        .map(|b| BanView {
            reference: format!("{}-{}", b.ban.jail, b.ban.id),
            jail: b.ban.jail.clone(),
            ip: b.ban.ip.clone(),
            start: when(b.ban.start),
            end: until(b.ban.end),
            failures: b.ban.failures,
            active: b.active,
            ended: b.ended.map(when).unwrap_or_default(),
            user: b
                .ban
                .fields
                .iter()
                .find(|(k, _)| k == "user")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        })
        .collect()
}

async fn jail_page(
    State(state): State<AdminState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Result<Html<String>, WebError> {
    let j = state
        .web
        .jails
        .brief()
        .await
        .into_iter()
        .find(|j| j.name == name)
        .ok_or(WebError {
            status: StatusCode::NOT_FOUND,
            public: "No such jail is running.",
            detail: format!("jail page: no jail {name:?}"),
        })?;
    let r = state.reader()?.clone();
    let jail = name.clone();
    let (page, failures) = r
        .run(move |c| {
            let q = BanQuery {
                jail: Some(jail.clone()),
                state: Some("active".into()),
                per_page: Some(50),
                ..BanQuery::default()
            };
            Ok((
                reader::bans(c, &q)?,
                reader::recent_failures(c, Some(&jail), 0, 30)?,
            ))
        })
        .await
        .map_err(WebError::internal)?;
    render(&JailPage {
        csrf: session.csrf,
        bans: ban_views(&page),
        total_active: page.total,
        failures: failure_views(failures),
        findtime: super::banpage::span_text(j.findtime),
        bantime: if j.bantime < 0.0 {
            "permanent".into()
        } else {
            super::banpage::span_text(j.bantime)
        },
        j,
    })
}

// ---- bans ----

#[derive(Template)]
#[template(path = "admin/bans.html")]
struct BansPage {
    csrf: String,
    bans: Vec<BanView>,
    total: u64,
    page: u32,
    pages: u32,
    q: String,
    jail: String,
    state: String,
    jails: Vec<String>,
    prev: Option<String>,
    next: Option<String>,
}

fn page_link(q: &BanQuery, page: u32) -> String {
    let enc = |s: &Option<String>| {
        s.as_deref()
            .unwrap_or("")
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b':' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "/bans?q={}&jail={}&state={}&page={page}",
        enc(&q.q),
        enc(&q.jail),
        enc(&q.state)
    )
}

async fn bans_page(
    State(state): State<AdminState>,
    Extension(session): Extension<Session>,
    Query(q): Query<BanQuery>,
) -> Result<Html<String>, WebError> {
    let r = state.reader()?.clone();
    let query = q.clone();
    let page = r
        .run(move |c| reader::bans(c, &query))
        .await
        .map_err(WebError::internal)?;
    let pages = (page.total.div_ceil(u64::from(page.per_page)).max(1)) as u32;
    let jails = state.web.jails.names();
    render(&BansPage {
        csrf: session.csrf,
        bans: ban_views(&page),
        total: page.total,
        page: page.page,
        pages,
        q: q.q.clone().unwrap_or_default(),
        jail: q.jail.clone().unwrap_or_default(),
        state: q.state.clone().unwrap_or_default(),
        jails,
        prev: (page.page > 1).then(|| page_link(&q, page.page - 1)),
        next: (page.page < pages).then(|| page_link(&q, page.page + 1)),
    })
}

// ---- address ----

#[derive(Template)]
#[template(path = "admin/address.html")]
struct AddressPage {
    csrf: String,
    ip: String,
    history: Option<AddressHistory>,
    failures: Vec<FailureView>,
    bans: Vec<BanView>,
    decisions: Vec<Inspection>,
    jails: Vec<String>,
    message: Option<String>,
}

#[derive(serde::Deserialize)]
struct MessageQuery {
    #[serde(default)]
    msg: Option<String>,
}

async fn address_page(
    State(state): State<AdminState>,
    Extension(session): Extension<Session>,
    Path(ip): Path<String>,
    Query(m): Query<MessageQuery>,
) -> Result<Html<String>, WebError> {
    let addr: IpAddr = crate::jail::ignore::parse_addr(&ip).ok_or(WebError {
        status: StatusCode::NOT_FOUND,
        public: "That is not an IP address.",
        detail: format!("address page: {ip:?}"),
    })?;
    let key = addr.to_string();
    let r = state.reader()?.clone();
    let history = r
        .run(move |c| reader::address(c, &key, 500))
        .await
        .map_err(WebError::internal)?;
    let decisions = state.web.jails.inspect(addr).await;
    let page = BanPage {
        bans: history.bans.clone(),
        total: history.bans.len() as u64,
        page: 1,
        per_page: 500,
    };
    let jails = state.web.jails.names();
    render(&AddressPage {
        csrf: session.csrf,
        ip: addr.to_string(),
        failures: failure_views(history.failures.clone()),
        bans: ban_views(&page),
        history: Some(history),
        decisions,
        jails,
        message: m.msg.filter(|s| s.len() < 300),
    })
}

// ---- ban, unban ----

#[derive(serde::Deserialize)]
struct BanForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    jail: Option<String>,
}

fn back_to(ip: &str, msg: &str) -> Redirect {
    let enc: String = msg
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    match crate::jail::ignore::parse_addr(ip) {
        Some(a) => Redirect::to(&format!("/address/{a}?msg={enc}")),
        None => Redirect::to("/bans"),
    }
}

async fn ban(
    State(state): State<AdminState>,
    Extension(session): Extension<Session>,
    Form(f): Form<BanForm>,
) -> Result<Redirect, WebError> {
    if !same(&session.csrf, &f.csrf) {
        return Err(forbidden("ban"));
    }
    let jail = f.jail.clone().unwrap_or_default();
    let r = state
        .ask_daemon(Request::Ban {
            jail: jail.clone(),
            ips: vec![f.ip.trim().to_string()],
        })
        .await;
    tracing::info!(target: "banhammer.web", jail = %jail, ip = %f.ip, "Manual ban from the admin view");
    Ok(back_to(
        f.ip.trim(),
        &match r {
            Ok(_) => format!("Banned in {jail}."),
            Err(e) => format!("Not banned: {e}"),
        },
    ))
}

async fn unban(
    State(state): State<AdminState>,
    Extension(session): Extension<Session>,
    Form(f): Form<BanForm>,
) -> Result<Redirect, WebError> {
    if !same(&session.csrf, &f.csrf) {
        return Err(forbidden("unban"));
    }
    let r = state
        .ask_daemon(Request::Unban {
            ips: vec![f.ip.trim().to_string()],
            all: false,
        })
        .await;
    tracing::info!(target: "banhammer.web", ip = %f.ip, "Manual unban from the admin view");
    Ok(back_to(
        f.ip.trim(),
        &match r {
            Ok(v) if v.as_array().is_some_and(|a| !a.is_empty()) => "Unbanned.".to_string(),
            Ok(_) => "It was not banned.".to_string(),
            Err(e) => format!("Not unbanned: {e}"),
        },
    ))
}
