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

/// Binds `addr` and serves `router` until `cancel` (over TLS with
/// `tls`); returns the bound address (port 0 resolved).
pub async fn serve(
    addr: SocketAddr,
    what: &'static str,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ListenError> {
    use axum::serve::ListenerExt;
    let err = |cause| ListenError { addr, what, cause };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    tracing::info!(target: "banhammer.web", listen = %bound, tls = tls.is_some(), "{what} listening");
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        let r = match tls {
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }
            Some(acceptor) => {
                let l = TlsListener::start(listener, acceptor, bound, cancel.clone());
                axum::serve(l.tap_io(|_| {}), app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }
        };
        if let Err(e) = r {
            tracing::error!(target: "banhammer.web", "{what}: {e}");
        }
    });
    Ok((bound, task))
}

type TlsConn = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// A TLS listener for axum: TCP connections are accepted and their
/// handshakes run on tasks of their own (a slow or silent client cannot
/// hold up the others), finished ones are handed to the server.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsConn, SocketAddr)>,
    local: SocketAddr,
}

/// A TLS handshake must be done within this.
const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

impl TlsListener {
    fn start(
        listener: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        local: SocketAddr,
        cancel: CancellationToken,
    ) -> TlsListener {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = cancel.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((tcp, peer)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(target: "banhammer.web", peer = %peer, "TLS handshake failed: {e}")
                        }
                        Err(_) => {
                            tracing::debug!(target: "banhammer.web", peer = %peer, "TLS handshake timed out")
                        }
                    }
                });
            }
        });
        TlsListener { rx, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // the accept loop has stopped (shutdown): nothing more comes
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// What the web pages share.
#[derive(Clone)]
pub struct WebState {
    pub jails: JailDirectory,
    pub cfg: std::sync::Arc<crate::config::web::WebConfig>,
}

#[cfg(test)]
mod tests;
