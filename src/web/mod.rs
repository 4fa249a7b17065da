//! Web: the ban page that banned visitors are redirected to (and its
//! `/check` endpoint for reverse proxies), the admin view with its JSON API
//! and Prometheus metrics.
//!
//! Owns the HTTP listeners. Each router is built by a plain function from
//! its state (so tests drive it with `oneshot`), separate from serving it.
//! Handlers ask the jails through the [`JailDirectory`] and render askama
//! templates from `templates/`; errors become a [`WebError`], which shows a
//! plain message and logs the detail.

pub mod admin;
pub mod api;
pub mod banpage;
pub mod client_ip;
pub mod metrics;
pub mod session;
pub mod stats;

use crate::jail::JailDirectory;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// An error a handler returns: the visitor sees `public`, the log gets
/// `detail`.
#[derive(Debug)]
pub struct WebError {
    pub status: StatusCode,
    pub public: &'static str,
    pub detail: String,
}

impl WebError {
    pub fn internal(detail: impl Into<String>) -> WebError {
        WebError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            public: "Something went wrong on our side. Please try again in a minute.",
            detail: detail.into(),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        tracing::warn!(target: "banhammer.web", status = self.status.as_u16(), "{}", self.detail);
        (self.status, self.public).into_response()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("[web] cannot listen on {addr} ({what}): {cause}")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub what: &'static str,
    pub cause: std::io::Error,
}

/// Binds `addr` and serves `router` until `cancel`; returns the bound
/// address (port 0 resolved).
pub async fn serve(
    addr: SocketAddr,
    what: &'static str,
    router: axum::Router,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ListenError> {
    let err = |cause| ListenError { addr, what, cause };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    tracing::info!(target: "banhammer.web", listen = %bound, "{what} listening");
    let task = tokio::spawn(async move {
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(target: "banhammer.web", "{what}: {e}");
        }
    });
    Ok((bound, task))
}

/// What the web pages share.
#[derive(Clone)]
pub struct WebState {
    pub jails: JailDirectory,
    pub cfg: std::sync::Arc<crate::config::web::WebConfig>,
}

#[cfg(test)]
mod tests;
