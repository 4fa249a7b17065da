//! The ban page: what a banned visitor sees instead of a timeout.
//!
//! Answers any path on any Host (the nftables redirect sends banned
//! visitors' HTTP connections here): HTTP 403 with `Retry-After` and an
//! explanation of their own ban (which service protected itself, how many
//! failures in what window, since when, until when, a reference, whom to
//! contact), or 200 and "not blocked" for anyone else. It shows nothing
//! about other addresses, and the log lines only when the operator allows
//! it. `GET /check` is the same question for reverse proxies (nginx
//! `auth_request`, Traefik forwardAuth): 204 when not banned, 403 when
//! banned.

use super::{client_ip, WebState};
use crate::jail::BanDetail;
use askama::Template;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::{IpAddr, SocketAddr};

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/check", get(check))
        .fallback(page)
        .with_state(state)
}

/// A readable name for what a filter protects, when the jail has no
/// `description`.
pub fn service_name(filter: &str) -> String {
    let base = filter.split('[').next().unwrap_or(filter);
    match base {
        "sshd" | "sshd-ddos" => "the SSH login".into(),
        "nginx-http-auth" | "apache-auth" | "nginx-botsearch" | "apache-badbots" => {
            "the web site's login".into()
        }
        "nginx-limit-req" => "the web site's rate limit".into(),
        "postfix" | "postfix-sasl" | "exim" | "sendmail-auth" => "the mail server's login".into(),
        "dovecot" | "courier-auth" => "the mailbox login (IMAP/POP3)".into(),
        "vsftpd" | "proftpd" | "pure-ftpd" => "the FTP login".into(),
        "recidive" => "the server, because of repeated bans".into(),
        "elgg" => "the community site's login".into(),
        "webapp" => "the web application's login".into(),
        "banhammer-admin" => "the firewall's admin login".into(),
        other => format!("the {other} service"),
    }
}

/// "9 minutes", "2 hours 5 minutes", "3 days".
pub fn span_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let plural = |n: u64, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    match s {
        0..=59 => plural(s.max(1), "second"),
        60..=3599 => plural(s.div_ceil(60), "minute"),
        3600..=86399 => {
            let (h, m) = (s / 3600, (s % 3600) / 60);
            if m == 0 {
                plural(h, "hour")
            } else {
                format!("{} {}", plural(h, "hour"), plural(m, "minute"))
            }
        }
        _ => {
            let (d, h) = (s / 86400, (s % 86400) / 3600);
            if h == 0 || d >= 7 {
                plural(d, "day")
            } else {
                format!("{} {}", plural(d, "day"), plural(h, "hour"))
            }
        }
    }
}

/// `2026-12-01 10:20:00 UTC`, and the same as RFC 3339 for `<time>`.
fn utc(t: f64) -> (String, String) {
    let dt = chrono::DateTime::from_timestamp(t as i64, 0).unwrap_or_default();
    (
        dt.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// One ban, as the page shows it.
pub struct BanView {
    pub service: String,
    pub failures: u32,
    pub window: String,
    pub since: String,
    pub since_iso: String,
    /// `None`: permanent.
    pub until: Option<(String, String)>,
    pub remaining: Option<String>,
    pub reference: String,
    pub lines: Vec<String>,
}

impl BanView {
    fn new(d: &BanDetail, now: f64, show_lines: bool) -> BanView {
        let (since, since_iso) = utc(d.ban.start);
        BanView {
            service: d
                .description
                .clone()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| service_name(&d.filter)),
            failures: d.ban.failures,
            window: span_text(d.findtime),
            since,
            since_iso,
            until: d.ban.end.map(utc),
            remaining: d.ban.end.map(|e| span_text(e - now)),
            reference: reference(d),
            lines: if show_lines {
                d.ban.matches.clone()
            } else {
                Vec::new()
            },
        }
    }
}

/// The reference a visitor quotes to the operator: the jail and the ban's
/// row in the database.
pub fn reference(d: &BanDetail) -> String {
    format!("{}-{}", d.ban.jail, d.ban.id)
}

#[derive(Template)]
#[template(path = "banpage.html")]
struct BanPage<'a> {
    site: &'a str,
    ip: String,
    bans: Vec<BanView>,
    permanent: bool,
    contact: Option<&'a str>,
    appeal: Option<&'a str>,
    /// Seconds until the page reloads itself (when the ban ends soon).
    refresh: Option<u64>,
}

#[derive(Template)]
#[template(path = "notbanned.html")]
struct NotBanned<'a> {
    site: &'a str,
    ip: String,
}

async fn lookup(
    state: &WebState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> (IpAddr, Vec<BanDetail>) {
    let ip = client_ip::visitor(peer.ip(), headers, &state.cfg.trusted_proxies);
    let mut bans = state.jails.lookup(ip).await;
    // the ban that lasts longest first: that is when the visitor is free
    bans.sort_by(|a, b| {
        let end = |d: &BanDetail| d.ban.end.unwrap_or(f64::INFINITY);
        end(b).total_cmp(&end(a))
    });
    (ip, bans)
}

fn html<T: Template>(t: &T) -> Result<String, super::WebError> {
    t.render()
        .map_err(|e| super::WebError::internal(format!("template: {e}")))
}

async fn page(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, super::WebError> {
    let (ip, bans) = lookup(&state, peer, &headers).await;
    let site = state.cfg.site_name.as_deref().unwrap_or("this server");
    let no_store = (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if bans.is_empty() {
        let body = html(&NotBanned {
            site,
            ip: ip.to_string(),
        })?;
        return Ok((StatusCode::OK, [no_store], Html(body)).into_response());
    }
    banned(&state, ip, &bans)
}

/// The 403 page for a banned visitor, with `Retry-After`.
fn banned(state: &WebState, ip: IpAddr, bans: &[BanDetail]) -> Result<Response, super::WebError> {
    let site = state.cfg.site_name.as_deref().unwrap_or("this server");
    let no_store = (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let now = crate::jail::now();
    let permanent = bans.iter().any(|b| b.ban.end.is_none());
    let last_end = bans.iter().filter_map(|b| b.ban.end).fold(0.0, f64::max);
    let retry = (!permanent).then(|| (last_end - now).max(1.0).ceil() as u64);
    let views: Vec<BanView> = bans
        .iter()
        .map(|b| BanView::new(b, now, state.cfg.show_log_lines))
        .collect();
    let body = html(&BanPage {
        site,
        ip: ip.to_string(),
        bans: views,
        permanent,
        contact: state.cfg.contact.as_deref(),
        appeal: state.cfg.appeal.as_deref(),
        refresh: retry.filter(|s| *s <= 86400).map(|s| s + 1),
    })?;
    let mut resp = (StatusCode::FORBIDDEN, [no_store], Html(body)).into_response();
    if let Some(s) = retry {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    Ok(resp)
}

/// For reverse proxies: 204 when the visitor is not banned, else the ban
/// page with 403 (nginx `auth_request` looks at the status only; Traefik's
/// forwardAuth shows the page).
async fn check(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, super::WebError> {
    let (ip, bans) = lookup(&state, peer, &headers).await;
    if bans.is_empty() {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        banned(&state, ip, &bans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span_text(0.2), "1 second");
        assert_eq!(span_text(59.0), "59 seconds");
        assert_eq!(span_text(61.0), "2 minutes");
        assert_eq!(span_text(600.0), "10 minutes");
        assert_eq!(span_text(3600.0), "1 hour");
        assert_eq!(span_text(3600.0 * 2.0 + 300.0), "2 hours 5 minutes");
        assert_eq!(span_text(86400.0 * 3.0), "3 days");
        assert_eq!(span_text(86400.0 + 7200.0), "1 day 2 hours");
    }

    #[test]
    fn services_have_readable_names() {
        assert_eq!(service_name("sshd[mode=aggressive]"), "the SSH login");
        assert_eq!(service_name("custom"), "the custom service");
    }
}
