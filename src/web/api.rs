//! The JSON API under `/api/v1`: jails, bans, failures, ban, unban.
//!
//! Every request needs `Authorization: Bearer TOKEN` with a token from
//! `[web] api_tokens` (401 otherwise; with no tokens configured the API is
//! closed). Bans and unbans take the same path as the CLI's, through the
//! daemon's main loop; reads come from the jails and the database reader.

use super::admin::AdminState;
use super::session::same;
use super::WebError;
use crate::control::Request;
use crate::store::reader::{self, BanQuery};
use axum::extract::{Path, Query, Request as HttpRequest, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn router(state: AdminState) -> Router<AdminState> {
    Router::new()
        .route("/jails", get(jails))
        .route("/bans", get(bans))
        .route("/failures", get(failures))
        .route("/ban", post(ban))
        .route("/unban", post(unban))
        .route("/outbox", get(outbox_list))
        .route("/outbox/{id}/cancel", post(outbox_cancel))
        .route("/outbox/{id}/retry", post(outbox_retry))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

fn unauthorized(msg: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": msg })),
    )
        .into_response()
}

async fn require_token(State(state): State<AdminState>, req: HttpRequest, next: Next) -> Response {
    let tokens = &state.web.cfg.api_tokens;
    if tokens.is_empty() {
        return unauthorized("the API is closed: set api_tokens in [web]");
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if tokens.iter().any(|k| same(k, t)) => next.run(req).await,
        _ => unauthorized("missing or wrong bearer token"),
    }
}

fn api_error(e: WebError) -> Response {
    (e.status, Json(json!({ "error": e.public }))).into_response()
}

async fn jails(State(state): State<AdminState>) -> Response {
    Json(state.web.jails.brief().await).into_response()
}

async fn bans(State(state): State<AdminState>, Query(q): Query<BanQuery>) -> Response {
    let Some(r) = state.reader.clone() else {
        return api_error(WebError::internal("no database"));
    };
    match r.run(move |c| reader::bans(c, &q)).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => api_error(WebError::internal(e)),
    }
}

#[derive(serde::Deserialize)]
struct FailureQuery {
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    jail: Option<String>,
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
}

async fn failures(State(state): State<AdminState>, Query(q): Query<FailureQuery>) -> Response {
    let Some(r) = state.reader.clone() else {
        return api_error(WebError::internal("no database"));
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let res = match q.ip {
        Some(ip) => {
            let Some(addr) = crate::jail::ignore::parse_addr(&ip) else {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": format!("{ip:?} is not an IP address")})),
                )
                    .into_response();
            };
            r.run(move |c| reader::address(c, &addr.to_string(), limit).map(|h| h.failures))
                .await
        }
        None => {
            r.run(move |c| {
                reader::recent_failures(c, q.jail.as_deref(), q.after.unwrap_or(0), limit)
            })
            .await
        }
    };
    match res {
        Ok(v) => Json(v).into_response(),
        Err(e) => api_error(WebError::internal(e)),
    }
}

/// The body of `POST /api/v1/ban` and `/api/v1/unban`.
#[derive(Debug, serde::Deserialize)]
pub struct BanBody {
    #[serde(default)]
    pub jail: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub all: bool,
}

impl BanBody {
    fn addresses(&self) -> Vec<String> {
        self.ip.iter().chain(self.ips.iter()).cloned().collect()
    }

    /// The daemon request for a ban.
    pub fn ban(&self) -> Result<Request, String> {
        let jail = self.jail.clone().ok_or("jail is missing")?;
        Ok(Request::Ban {
            jail,
            ips: self.addresses(),
        })
    }

    /// The daemon request for an unban.
    pub fn unban(&self) -> Request {
        Request::Unban {
            ips: self.addresses(),
            all: self.all,
        }
    }
}

fn answer(r: Result<Value, String>) -> Response {
    match r {
        Ok(v) => Json(json!({ "ok": true, "result": v })).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "ok": false, "error": e })),
        )
            .into_response(),
    }
}

async fn ban(State(state): State<AdminState>, Json(b): Json<BanBody>) -> Response {
    match b.ban() {
        Ok(r) => answer(state.ask_daemon(r).await),
        Err(e) => answer(Err(e)),
    }
}

async fn unban(State(state): State<AdminState>, Json(b): Json<BanBody>) -> Response {
    answer(state.ask_daemon(b.unban()).await)
}

#[derive(serde::Deserialize)]
struct OutboxQuery {
    #[serde(default)]
    state: Option<String>,
}

async fn outbox_list(State(state): State<AdminState>, Query(q): Query<OutboxQuery>) -> Response {
    answer(
        state
            .ask_daemon(Request::Outbox {
                action: "list".into(),
                id: None,
                state: q.state,
            })
            .await,
    )
}

async fn outbox_cancel(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    answer(
        state
            .ask_daemon(Request::Outbox {
                action: "cancel".into(),
                id: Some(id),
                state: None,
            })
            .await,
    )
}

async fn outbox_retry(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    answer(
        state
            .ask_daemon(Request::Outbox {
                action: "retry".into(),
                id: Some(id),
                state: None,
            })
            .await,
    )
}
