//! UDP transport: one datagram is one message. A thread of its own reads
//! batches of datagrams (`recvmmsg`) from a socket with a large receive
//! buffer, checks the sender and the size, and hands each batch to a
//! parsing thread, which parses and routes without ever waiting for a jail
//! (a full queue drops, counted). The receiving thread does as little as
//! it can, at a higher priority where allowed, and the parser runs at a
//! lower one: when the CPUs are short, datagrams are taken from the kernel
//! first (it drops what does not fit its buffer, uncounted by us) and
//! parsed as time allows.

use super::{add, parse, Receiver};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Datagrams per `recvmmsg` call.
const VLEN: usize = 64;

/// The parsing thread's nice value (a lower priority).
const PARSER_NICE: i32 = 5;

/// The receiving thread's nice value (a higher priority, where allowed).
const RECEIVER_NICE: i32 = -5;

/// The datagrams of one `recvmmsg` call, from the receiving thread to the
/// parsing thread.
struct Datagrams {
    /// When they were received.
    at: chrono::DateTime<chrono::Utc>,
    /// Their bytes, back to back.
    bytes: Vec<u8>,
    /// Each one's sender and where it ends in `bytes`.
    ends: Vec<(IpAddr, usize)>,
}

/// Binds `addr` and starts the receiving thread; returns the bound address.
pub fn spawn(
    addr: SocketAddr,
    receiver: Arc<Receiver>,
    cancel: CancellationToken,
) -> std::io::Result<(std::thread::JoinHandle<()>, SocketAddr)> {
    let sock = UdpSocket::bind(addr)?;
    set_receive_buffer(&sock, receiver.cfg.udp_buffer);
    // wake up now and then to notice shutdown
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let bound = sock.local_addr()?;
    // the parser's backlog, in batches: about as many datagrams as a jail
    // queue holds
    let (tx, rx) = mpsc::sync_channel::<Datagrams>((receiver.cfg.queue / VLEN).max(16));
    let parser_receiver = receiver.clone();
    let parser = std::thread::Builder::new()
        .name(format!("udp-parse/{}", bound.port()))
        .spawn(move || {
            crate::source::set_thread_nice(PARSER_NICE);
            parse_all(&rx, &parser_receiver)
        })?;
    let t = std::thread::Builder::new()
        .name(format!("udp/{}", bound.port()))
        .spawn(move || {
            crate::source::set_thread_nice(RECEIVER_NICE);
            serve(&sock, &receiver, &tx, &cancel);
            // the parser ends once its backlog is done
            drop(tx);
            let _ = parser.join();
        })?;
    Ok((t, bound))
}

/// The parsing thread: every batch, in order, parsed and routed.
fn parse_all(rx: &mpsc::Receiver<Datagrams>, receiver: &Receiver) {
    while let Ok(batch) = rx.recv() {
        let mut start = 0;
        let mut parsed = Vec::with_capacity(batch.ends.len());
        for &(peer, end) in &batch.ends {
            let raw = &batch.bytes[start..end];
            start = end;
            parsed.push(parse::parse(raw, peer, batch.at, receiver.cfg.timezone));
        }
        receiver.route_now(parsed);
    }
}

/// SO_RCVBUFFORCE (root may exceed net.core.rmem_max), else SO_RCVBUF.
fn set_receive_buffer(sock: &UdpSocket, bytes: usize) {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |opt| {
        // SAFETY: setsockopt with a valid fd and a pointer to a c_int of
        // the size passed.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
        tracing::warn!(target: "banhammer.syslog", bytes, "cannot set the UDP receive buffer size");
    }
}

fn peer_of(storage: &libc::sockaddr_storage) -> Option<IpAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(IpAddr::from(a.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

fn serve(
    sock: &UdpSocket,
    receiver: &Receiver,
    parser: &mpsc::SyncSender<Datagrams>,
    cancel: &CancellationToken,
) {
    let max = receiver.cfg.max_message_size;
    // one byte more than allowed: a datagram that fills it is oversized
    let size = max + 1;
    let mut bufs = vec![0u8; size * VLEN];
    // SAFETY (zeroed): plain C structs for which all-zero is a valid value.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; VLEN];
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; VLEN];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; VLEN];
    let fd = sock.as_raw_fd();
    while !cancel.is_cancelled() {
        for i in 0..VLEN {
            iovs[i].iov_base = bufs[i * size..].as_mut_ptr().cast();
            iovs[i].iov_len = size;
            msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_flags = 0;
            msgs[i].msg_len = 0;
        }
        // SAFETY: every mmsghdr points at its own iovec, buffer and address
        // storage, all alive and of the sizes given, for the whole call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                VLEN as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => continue,
                _ => {
                    tracing::error!(target: "banhammer.syslog", error = %e, "UDP receive failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        let mut batch = Datagrams {
            at: chrono::Utc::now(),
            bytes: Vec::with_capacity(
                msgs.iter()
                    .take(n as usize)
                    .map(|m| m.msg_len as usize)
                    .sum(),
            ),
            ends: Vec::with_capacity(n as usize),
        };
        for i in 0..n as usize {
            let Some(peer) = peer_of(&addrs[i]) else {
                continue;
            };
            if !receiver.allowed(peer) {
                add(&receiver.stats.rejected_senders);
                continue;
            }
            let len = msgs[i].msg_len as usize;
            if len > max || msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                add(&receiver.stats.oversized);
                continue;
            }
            add(&receiver.stats.received);
            batch
                .bytes
                .extend_from_slice(&bufs[i * size..i * size + len]);
            batch
                .ends
                .push((crate::jail::ignore::canonical(peer), batch.bytes.len()));
        }
        if batch.ends.is_empty() {
            continue;
        }
        let count = batch.ends.len() as u64;
        match parser.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                receiver
                    .stats
                    .queue_full
                    .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return,
        }
    }
}
