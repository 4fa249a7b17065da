//! TCP and TLS transports: an accept loop per listener (sender check,
//! connection limit) and a task per connection that reads, frames
//! ([`SyslogFramer`]), parses and routes, waiting when a jail's queue is
//! full (so a fast sender is slowed down, not dropped).
//!
//! A connection is closed when it sends nothing for `idle_timeout`, or
//! when a frame (or the TLS handshake) takes longer than `frame_timeout`:
//! a sender dribbling bytes cannot hold a slot for long.

use super::framing::{DropReason, SyslogFrame, SyslogFramer};
use super::{add, parse, Receiver, SyslogError};
use crate::config::syslog::SyslogConfig;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// The TLS side of `tls://` listeners: the server certificate and key, and
/// with `tls_client_ca` the CA that client certificates must chain to
/// (mutual TLS, RFC 5425).
pub fn tls_acceptor(cfg: &SyslogConfig) -> Result<TlsAcceptor, SyslogError> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Err(SyslogError::Tls(
            "a tls:// listener needs tls_cert and tls_key".into(),
        ));
    };
    crate::tls::acceptor(cert, key, cfg.tls_client_ca.as_deref()).map_err(SyslogError::Tls)
}

/// Binds `addr` and starts accepting; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    receiver: Arc<Receiver>,
    cancel: CancellationToken,
) -> std::io::Result<(tokio::task::JoinHandle<()>, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(receiver.cfg.max_connections));
    let task = tokio::spawn(accept_loop(listener, tls, receiver, slots, cancel));
    Ok((task, bound))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    receiver: Arc<Receiver>,
    slots: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // out of file descriptors and the like: wait, do not spin
                tracing::warn!(target: "banhammer.syslog", error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = crate::jail::ignore::canonical(peer.ip());
        if !receiver.allowed(ip) {
            add(&receiver.stats.rejected_senders);
            tracing::debug!(target: "banhammer.syslog", peer = %ip, "connection from a sender not in allowed_senders refused");
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            add(&receiver.stats.connections_refused);
            continue;
        };
        add(&receiver.stats.connections);
        let _ = stream.set_nodelay(true);
        let receiver = receiver.clone();
        let cancel = cancel.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            let handshake = Duration::from_secs_f64(receiver.cfg.frame_timeout);
            match tls {
                None => serve(stream, ip, &receiver, &cancel).await,
                Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => serve(s, ip, &receiver, &cancel).await,
                    Ok(Err(e)) => {
                        add(&receiver.stats.tls_errors);
                        tracing::debug!(target: "banhammer.syslog", peer = %ip, error = %e, "TLS handshake failed");
                    }
                    Err(_) => add(&receiver.stats.timeouts),
                },
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// Parses the frames of one read and routes their messages together.
async fn handle(frames: &mut Vec<SyslogFrame>, peer: std::net::IpAddr, receiver: &Receiver) {
    if frames.is_empty() {
        return;
    }
    let now = chrono::Utc::now();
    let mut parsed = Vec::with_capacity(frames.len());
    for frame in frames.drain(..) {
        match frame {
            SyslogFrame::Message(raw) => {
                add(&receiver.stats.received);
                parsed.push(parse::parse(&raw, peer, now, receiver.cfg.timezone));
            }
            SyslogFrame::Dropped(reason) => add(match reason {
                DropReason::Oversized => &receiver.stats.oversized,
                DropReason::BadFraming => &receiver.stats.bad_framing,
                DropReason::Truncated => &receiver.stats.truncated,
            }),
        }
    }
    receiver.route(parsed).await;
}

/// One connection, until it ends, times out or the receiver stops.
async fn serve<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: std::net::IpAddr,
    receiver: &Receiver,
    cancel: &CancellationToken,
) {
    let idle = Duration::from_secs_f64(receiver.cfg.idle_timeout);
    let frame_limit = Duration::from_secs_f64(receiver.cfg.frame_timeout);
    let mut framer = SyslogFramer::new(receiver.cfg.max_message_size);
    let mut buf = BytesMut::with_capacity(64 << 10);
    // since when the current frame has been incomplete
    let mut partial_since: Option<Instant> = None;
    let mut frames = Vec::new();
    loop {
        let failed = loop {
            match framer.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        let complete = !frames.is_empty();
        handle(&mut frames, peer, receiver).await;
        if failed {
            return;
        }
        let pending = !buf.is_empty() || framer.mid_frame();
        partial_since = match (pending, complete) {
            (false, _) => None,
            (true, true) => Some(Instant::now()),
            (true, false) => partial_since.or_else(|| Some(Instant::now())),
        };
        let wait = match partial_since {
            Some(t) => frame_limit.saturating_sub(t.elapsed()),
            None => idle,
        };
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 << 10);
        }
        let read = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(wait, stream.read_buf(&mut buf)) => r,
        };
        match read {
            Err(_) => {
                add(&receiver.stats.timeouts);
                tracing::debug!(target: "banhammer.syslog", peer = %peer, "syslog connection timed out");
                return;
            }
            Ok(Ok(0)) => {
                while let Ok(Some(frame)) = framer.decode_eof(&mut buf) {
                    frames.push(frame);
                }
                handle(&mut frames, peer, receiver).await;
                return;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(target: "banhammer.syslog", peer = %peer, error = %e, "syslog connection failed");
                return;
            }
        }
    }
}
