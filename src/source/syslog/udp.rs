//! UDP transport: one datagram is one message. A thread of its own reads
//! batches of datagrams (`recvmmsg`) from a socket with a large receive
//! buffer, checks the sender, parses and routes without ever waiting for a
//! jail (a full jail queue drops, counted).

use super::{add, parse, Receiver};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Datagrams per `recvmmsg` call.
const VLEN: usize = 64;

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
    let t = std::thread::Builder::new()
        .name(format!("udp/{}", bound.port()))
        .spawn(move || serve(&sock, &receiver, &cancel))?;
    Ok((t, bound))
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

fn serve(sock: &UdpSocket, receiver: &Receiver, cancel: &CancellationToken) {
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
        let now = chrono::Utc::now();
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
            let raw = &bufs[i * size..i * size + len];
            let peer = crate::jail::ignore::canonical(peer);
            let (m, notes) = parse::parse(raw, peer, now, receiver.cfg.timezone);
            receiver.route_now(m, notes);
        }
    }
}
