//! syslog_flood: a fast syslog load generator (and null sink) for benchmarks.
//!
//! Not part of banhammer: `bench/syslog-throughput` uses it to flood
//! banhammer's `[syslog]` listeners and rsyslog's imudp/imtcp with the same
//! load. Build it with `cargo build --release --example syslog_flood`.
//!
//! ```text
//! syslog_flood --udp 127.0.0.1:5514 --count 1000000 --gso          # as fast as possible
//! syslog_flood --udp 127.0.0.1:5514 --rate 300000 --count 1500000  # paced
//! syslog_flood --tcp 127.0.0.1:5514 --framing octet --connections 4 --count 2000000
//! syslog_flood --format 5424 --dump 10                             # print 10 messages
//! syslog_flood --sink --udp 127.0.0.1:5514 --count 1000000         # null receiver
//! ```
//!
//! Messages are sshd auth lines, RFC 3164 (`<38>Mar  1 00:00:00 srv01
//! sshd[1234]: Failed password for root from 10.1.2.3 port 51234 ssh2`) or
//! RFC 5424 (`<38>1 2026-03-01T00:00:00.000000+00:00 srv01 sshd 1234 - -
//! ...`). 40 % are failures the stock sshd filter counts (`Failed password
//! for USER`, `Failed password for invalid user USER`); the rest are
//! `Accepted publickey`, `Connection closed by ... [preauth]`,
//! `Disconnected from user ...` and `pam_unix(sshd:session): session
//! opened/closed` lines, which it does not. Half of the failures come from a
//! small set of persistent attackers, the other addresses are drawn from all
//! of 10.0.0.0/8, so many distinct addresses appear. A pool of `--pool`
//! messages (default 65,536) is built once, stamped with the current time,
//! and sent round-robin.
//!
//! UDP: one datagram per message, sent in batches with `sendmmsg(2)` from a
//! connected socket (`--batch` datagrams per call, `--threads` sending
//! threads with a socket each). That costs the sender about 4 us per
//! datagram on loopback (the kernel's whole receive path runs in the
//! sender's system call): ~240,000/s per thread on a small VM. `--gso` sends
//! runs of up to 64 equal-length messages as one UDP GSO send
//! (`UDP_SEGMENT`); the kernel splits them into ordinary datagrams before
//! the receiving socket, so receivers see exactly the same datagrams, and
//! one thread exceeds 1,000,000/s. The pool is then sent in order of length.
//! TCP: `--connections` parallel connections, each a thread writing large
//! buffers of framed messages (`--framing octet`: RFC 6587 octet counting,
//! `LEN MSG`; `lf`: `MSG\n`).
//!
//! `--rate N` paces the total to N messages/s: each sender sends small
//! batches and sleeps until the schedule (start + sent / rate) is due.
//! Without it (`--rate 0`) it sends as fast as it can.
//!
//! At the end it prints how many messages it sent, in how long, and the
//! achieved rate; with `--json` a single JSON object on stdout instead
//! (`sent`, `errors`, `seconds`, `rate`, `start_monotonic`,
//! `end_monotonic`: CLOCK_MONOTONIC seconds of the first and the last send,
//! comparable with Python's `time.monotonic()`).
//!
//! `--sink` turns it into a null receiver on the `--udp`/`--tcp` address
//! (port 0 picks one; the first line on stdout says `listening on ADDR`).
//! It counts datagrams or frames until `--count` arrived or nothing came for
//! `--idle` seconds, then prints what it received and the rate between the
//! first and the last message. It measures the generator's own ceiling
//! (`--spin`: poll the UDP socket without sleeping).

use clap::{Parser, ValueEnum};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Framing {
    /// RFC 6587 octet counting: `LEN MSG`.
    Octet,
    /// Non-transparent framing: `MSG\n`.
    Lf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    #[value(name = "3164")]
    Rfc3164,
    #[value(name = "5424")]
    Rfc5424,
}

#[derive(Parser, Debug)]
#[command(
    name = "syslog_flood",
    about = "Fast syslog load generator (sshd auth messages) over UDP or TCP, and a null sink"
)]
struct Args {
    /// Send datagrams to HOST:PORT (or, with --sink, receive on it).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "tcp")]
    udp: Option<String>,
    /// Send over TCP to HOST:PORT (or, with --sink, listen on it).
    #[arg(long, value_name = "HOST:PORT")]
    tcp: Option<String>,
    /// Messages per second in total; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Messages to send (with --sink: stop once this many arrived; 0 = only
    /// the idle timeout ends it).
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// TCP framing.
    #[arg(long, value_enum, default_value_t = Framing::Octet)]
    framing: Framing,
    /// Parallel TCP connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Message format: RFC 3164 or RFC 5424.
    #[arg(long, value_enum, default_value_t = Format::Rfc3164)]
    format: Format,
    /// UDP sending threads, a socket each.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Datagrams per sendmmsg call (at most; pacing may use smaller batches).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// UDP: send runs of up to 64 equal-length messages as one UDP GSO
    /// (UDP_SEGMENT) send. The kernel splits them into separate datagrams
    /// before they reach the receiving socket, so the receiver sees the same
    /// datagrams; the sender saves most of its per-datagram cost. Messages
    /// then go out grouped by length.
    #[arg(long)]
    gso: bool,
    /// Distinct messages built in advance and sent round-robin.
    #[arg(long, default_value_t = 65536)]
    pool: usize,
    /// Random seed for the message pool.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Host name in the messages' header.
    #[arg(long, default_value = "srv01")]
    hostname: String,
    /// Print N messages (unframed, one a line) to stdout and exit.
    #[arg(long, value_name = "N")]
    dump: Option<usize>,
    /// Receive and count instead of sending (null sink).
    #[arg(long)]
    sink: bool,
    /// --sink: stop after this many seconds without a message (once one came).
    #[arg(long, default_value_t = 2.0)]
    idle: f64,
    /// --sink: stop after this many seconds even if nothing came.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// --sink: poll the UDP socket without sleeping (MSG_DONTWAIT in a loop),
    /// so senders never pay for waking the sink up: the generator's ceiling.
    #[arg(long)]
    spin: bool,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into the valid pointer given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// xorshift64*: fast, deterministic, good enough for picking addresses.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const ATTACK_USERS: &[&str] = &[
    "root", "admin", "test", "user", "oracle", "postgres", "ubuntu", "git", "guest", "ftpuser",
    "pi", "deploy", "support", "mysql", "tomcat", "jenkins", "hadoop", "nagios", "dev", "backup",
];
const VALID_USERS: &[&str] = &["alice", "bob", "carol", "deploy", "backup", "ci"];

fn addr10(r: &mut Rng) -> String {
    let x = r.next() >> 40; // 24 bits
    format!(
        "10.{}.{}.{}",
        (x >> 16) & 255,
        (x >> 8) & 255,
        (x & 255).clamp(1, 254)
    )
}

/// The message pool: `n` messages in one buffer, with their end offsets.
struct Pool {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Pool {
    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }
    fn len(&self) -> usize {
        self.ends.len()
    }
}

fn build_pool(a: &Args) -> Pool {
    let mut r = Rng::new(a.seed);
    let now = chrono::Local::now();
    let stamp = match a.format {
        Format::Rfc3164 => now.format("%b %e %H:%M:%S").to_string(),
        Format::Rfc5424 => now.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string(),
    };
    // persistent attackers: half of all failures
    let attackers: Vec<String> = (0..1000).map(|_| addr10(&mut r)).collect();
    let n = a.pool.max(1);
    let mut data = Vec::with_capacity(n * 110);
    let mut ends = Vec::with_capacity(n);
    for _ in 0..n {
        let pid = 1000 + r.below(60000);
        let port = 1024 + r.below(64000);
        let roll = r.below(100);
        let addr = if roll < 40 && r.below(2) == 0 {
            attackers[r.below(attackers.len() as u64) as usize].clone()
        } else {
            addr10(&mut r)
        };
        let (pri, text) = match roll {
            0..=24 => (
                38,
                format!(
                    "Failed password for {} from {addr} port {port} ssh2",
                    r.pick(ATTACK_USERS)
                ),
            ),
            25..=39 => (
                38,
                format!(
                    "Failed password for invalid user {} from {addr} port {port} ssh2",
                    r.pick(ATTACK_USERS)
                ),
            ),
            40..=54 => (
                38,
                format!(
                    "Accepted publickey for {} from {addr} port {port} ssh2: ED25519 SHA256:{:016x}{:016x}",
                    r.pick(VALID_USERS),
                    r.next(),
                    r.next()
                ),
            ),
            55..=69 => (
                38,
                format!("Connection closed by {addr} port {port} [preauth]"),
            ),
            70..=79 => (
                38,
                format!(
                    "Disconnected from user {} {addr} port {port}",
                    r.pick(VALID_USERS)
                ),
            ),
            80..=89 => (
                86,
                format!(
                    "pam_unix(sshd:session): session opened for user {}(uid={}) by (uid=0)",
                    r.pick(VALID_USERS),
                    1000 + r.below(10)
                ),
            ),
            _ => (
                86,
                format!(
                    "pam_unix(sshd:session): session closed for user {}",
                    r.pick(VALID_USERS)
                ),
            ),
        };
        let msg = match a.format {
            Format::Rfc3164 => format!("<{pri}>{stamp} {} sshd[{pid}]: {text}", a.hostname),
            Format::Rfc5424 => format!("<{pri}>1 {stamp} {} sshd {pid} - - {text}", a.hostname),
        };
        data.extend_from_slice(msg.as_bytes());
        ends.push(data.len());
    }
    Pool { data, ends }
}

fn resolve(s: &str) -> SocketAddr {
    match s.to_socket_addrs().ok().and_then(|mut it| it.next()) {
        Some(a) => a,
        None => {
            eprintln!("syslog_flood: {s:?} is not HOST:PORT");
            std::process::exit(2);
        }
    }
}

fn set_buffer(fd: i32, force: libc::c_int, plain: libc::c_int, bytes: libc::c_int) {
    let set = |opt| {
        // SAFETY: setsockopt on a valid fd with a pointer to a c_int of the
        // size passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(force) != 0 {
        set(plain);
    }
}

/// Sleeps until `due` (an Instant) if it lies ahead.
fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    errors: AtomicU64,
    first: std::sync::Mutex<Option<f64>>,
    last: std::sync::Mutex<Option<f64>>,
}

impl Totals {
    fn mark_first(&self, t: f64) {
        let mut f = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none_or(|x| t < x) {
            *f = Some(t);
        }
    }
    fn mark_last(&self, t: f64) {
        let mut l = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if l.is_none_or(|x| t > x) {
            *l = Some(t);
        }
    }
}

/// Splits `total` over `k` senders.
fn share(total: u64, k: usize, i: usize) -> u64 {
    total / k as u64 + u64::from((i as u64) < total % k as u64)
}

/// Messages per batch when pacing `rate` per sender: about 5,000 batches/s
/// (sleeps of ~200 us), at least 1, at most `max`.
fn paced_batch(rate: f64, max: usize) -> usize {
    ((rate / 5000.0) as usize).clamp(1, max.max(1))
}

/// `UDP_SEGMENT` (linux/udp.h): the cmsg / socket option of UDP GSO.
const UDP_SEGMENT: libc::c_int = 103;
/// Segments per GSO send at most (the kernel's UDP_MAX_SEGMENTS is 64 on
/// older kernels).
const GSO_MAX: usize = 64;

struct UdpJob<'a> {
    target: SocketAddr,
    pool: &'a Pool,
    offset: usize,
    count: u64,
    rate: f64,
    batch_max: usize,
    gso: bool,
}

fn udp_sender(job: &UdpJob, start: &Barrier, totals: &Totals) {
    let UdpJob {
        target,
        pool,
        offset,
        count,
        rate,
        batch_max,
        gso,
    } = *job;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(bind).unwrap_or_else(|e| {
        eprintln!("syslog_flood: bind: {e}");
        std::process::exit(2)
    });
    if let Err(e) = sock.connect(target) {
        eprintln!("syslog_flood: connect {target}: {e}");
        std::process::exit(2);
    }
    let fd = sock.as_raw_fd();
    set_buffer(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, 8 << 20);
    // messages per sendmmsg call
    let vlen = if rate > 0.0 {
        paced_batch(rate, batch_max)
    } else {
        batch_max.max(1)
    };
    // SAFETY (zeroed): plain C structs for which all-zero is valid.
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; vlen];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; vlen];
    // messages in each mmsghdr (1, or a GSO run of equal-length messages)
    let mut ks: Vec<usize> = vec![0; vlen];
    // SAFETY: CMSG_SPACE only computes a size.
    let cspace = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    let words = cspace.div_ceil(8);
    let mut cbufs: Vec<u64> = vec![0; words * vlen];
    let n_pool = pool.len();
    let mut next = offset % n_pool;
    // messages handed to sendmmsg, and those of them that failed
    let mut attempted: u64 = 0;
    let mut errors: u64 = 0;
    start.wait();
    let t0 = Instant::now();
    totals.mark_first(monotonic());
    while attempted < count {
        let budget = ((count - attempted) as usize).min(vlen);
        let (mut h, mut m, mut idx) = (0usize, 0usize, next);
        while m < budget {
            let first = pool.get(idx);
            let len = first.len();
            let mut k = 1;
            if gso {
                let max_k = GSO_MAX
                    .min(budget - m)
                    .min(65000 / len.max(1))
                    .min(n_pool - idx);
                while k < max_k && pool.get(idx + k).len() == len {
                    k += 1;
                }
            }
            let begin = pool.ends[idx] - len;
            let end = pool.ends[idx + k - 1];
            iovs[h].iov_base = pool.data[begin..].as_ptr() as *mut libc::c_void;
            iovs[h].iov_len = end - begin;
            let hdr = &mut msgs[h].msg_hdr;
            hdr.msg_iov = &mut iovs[h];
            hdr.msg_iovlen = 1;
            if k > 1 {
                let buf = cbufs[h * words..].as_mut_ptr().cast::<u8>();
                hdr.msg_control = buf.cast();
                hdr.msg_controllen = cspace as _;
                // SAFETY: the control buffer holds CMSG_SPACE(2) bytes,
                // 8-aligned; CMSG_FIRSTHDR/CMSG_DATA point inside it.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), len as u16);
                }
            } else {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
            msgs[h].msg_len = 0;
            ks[h] = k;
            h += 1;
            m += k;
            idx = (idx + k) % n_pool;
        }
        let mut done = 0usize;
        while done < h {
            // SAFETY: msgs[done..h] point at iovecs that point into the
            // pool and at their control buffers, all alive for the call;
            // the socket is connected, so msg_name is null.
            let r = unsafe {
                libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), (h - done) as libc::c_uint, 0)
            };
            if r > 0 {
                done += r as usize;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
                Some(libc::EIO) | Some(libc::EINVAL) if ks[done] > 1 => {
                    eprintln!("syslog_flood: UDP GSO refused ({e}); run without --gso");
                    std::process::exit(2);
                }
                _ => {
                    // ECONNREFUSED (nobody listening: an ICMP came back) and
                    // the like: these messages are lost, go on with the next
                    if errors == 0 {
                        eprintln!("syslog_flood: send: {e}");
                    }
                    errors += ks[done] as u64;
                    done += 1;
                }
            }
        }
        attempted += m as u64;
        next = idx;
        if rate > 0.0 {
            sleep_until(t0 + Duration::from_secs_f64(attempted as f64 / rate));
        }
    }
    totals.mark_last(monotonic());
    totals.sent.fetch_add(attempted - errors, Ordering::Relaxed);
    totals.errors.fetch_add(errors, Ordering::Relaxed);
}

/// The pool reordered by message length (stable), so that equal lengths
/// are contiguous: runs for UDP GSO.
fn by_length(pool: &Pool) -> Pool {
    let mut order: Vec<usize> = (0..pool.len()).collect();
    order.sort_by_key(|&i| pool.get(i).len());
    let mut data = Vec::with_capacity(pool.data.len());
    let mut ends = Vec::with_capacity(pool.len());
    for i in order {
        data.extend_from_slice(pool.get(i));
        ends.push(data.len());
    }
    Pool { data, ends }
}

/// The pool framed for a stream, with the end offset of each frame.
fn frame_pool(pool: &Pool, framing: Framing) -> Pool {
    let mut data = Vec::with_capacity(pool.data.len() + pool.len() * 5);
    let mut ends = Vec::with_capacity(pool.len());
    for i in 0..pool.len() {
        let m = pool.get(i);
        match framing {
            Framing::Octet => {
                data.extend_from_slice(m.len().to_string().as_bytes());
                data.push(b' ');
                data.extend_from_slice(m);
            }
            Framing::Lf => {
                data.extend_from_slice(m);
                data.push(b'\n');
            }
        }
        ends.push(data.len());
    }
    Pool { data, ends }
}

fn tcp_sender(
    target: SocketAddr,
    framed: &Pool,
    offset: usize,
    count: u64,
    rate: f64,
    start: &Barrier,
    totals: &Totals,
) {
    let mut s = match TcpStream::connect(target) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("syslog_flood: connect {target}: {e}");
            start.wait();
            totals.errors.fetch_add(count, Ordering::Relaxed);
            return;
        }
    };
    set_buffer(
        s.as_raw_fd(),
        libc::SO_SNDBUFFORCE,
        libc::SO_SNDBUF,
        4 << 20,
    );
    let n_pool = framed.len();
    let byte_at = |i: usize| if i == 0 { 0 } else { framed.ends[i - 1] };
    // messages per write(): ~256 KiB when flooding, small batches when paced
    let per_write = if rate > 0.0 {
        paced_batch(rate, 4096)
    } else {
        (256 << 10) / (framed.data.len() / n_pool).max(1)
    }
    .max(1);
    let mut next = offset % n_pool;
    let mut sent: u64 = 0;
    start.wait();
    let t0 = Instant::now();
    totals.mark_first(monotonic());
    while sent < count {
        let want = ((count - sent) as usize).min(per_write).min(n_pool - next);
        let chunk = &framed.data[byte_at(next)..framed.ends[next + want - 1]];
        if let Err(e) = s.write_all(chunk) {
            eprintln!("syslog_flood: write to {target}: {e}");
            totals.errors.fetch_add(count - sent, Ordering::Relaxed);
            break;
        }
        sent += want as u64;
        next = (next + want) % n_pool;
        if rate > 0.0 {
            sleep_until(t0 + Duration::from_secs_f64(sent as f64 / rate));
        }
    }
    let _ = s.flush();
    totals.mark_last(monotonic());
    totals.sent.fetch_add(sent, Ordering::Relaxed);
    // a clean end of stream: FIN after the data, then wait for the peer's
    // close (or a short while) so no data is cut by a reset
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut b = [0u8; 512];
    while let Ok(n) = s.read(&mut b) {
        if n == 0 {
            break;
        }
    }
}

fn send(a: &Args, pool: Pool) {
    let (target, tcp) = match (&a.udp, &a.tcp) {
        (Some(u), None) => (resolve(u), false),
        (None, Some(t)) => (resolve(t), true),
        _ => {
            eprintln!("syslog_flood: give --udp HOST:PORT or --tcp HOST:PORT");
            std::process::exit(2);
        }
    };
    let k = if tcp { a.connections } else { a.threads }.max(1);
    let pool = Arc::new(if tcp {
        frame_pool(&pool, a.framing)
    } else if a.gso {
        by_length(&pool)
    } else {
        pool
    });
    let gso = a.gso && !tcp;
    let totals = Arc::new(Totals::default());
    let barrier = Arc::new(Barrier::new(k));
    let per_rate = a.rate as f64 / k as f64;
    let handles: Vec<_> = (0..k)
        .map(|i| {
            let pool = pool.clone();
            let totals = totals.clone();
            let barrier = barrier.clone();
            let count = share(a.count, k, i);
            let offset = i * pool.len() / k;
            let batch = a.batch;
            std::thread::spawn(move || {
                if tcp {
                    tcp_sender(target, &pool, offset, count, per_rate, &barrier, &totals)
                } else {
                    let job = UdpJob {
                        target,
                        pool: &pool,
                        offset,
                        count,
                        rate: per_rate,
                        batch_max: batch,
                        gso,
                    };
                    udp_sender(&job, &barrier, &totals)
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let errors = totals.errors.load(Ordering::Relaxed);
    let sent = totals.sent.load(Ordering::Relaxed);
    let first = totals
        .first
        .lock()
        .map(|x| *x)
        .ok()
        .flatten()
        .unwrap_or(0.0);
    let last = totals
        .last
        .lock()
        .map(|x| *x)
        .ok()
        .flatten()
        .unwrap_or(first);
    let secs = (last - first).max(1e-9);
    let transport = if tcp {
        format!(
            "tcp ({} framing, {k} connection{})",
            match a.framing {
                Framing::Octet => "octet-counting",
                Framing::Lf => "LF",
            },
            if k == 1 { "" } else { "s" }
        )
    } else {
        format!(
            "udp ({k} thread{}{})",
            if k == 1 { "" } else { "s" },
            if gso { ", GSO" } else { "" }
        )
    };
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "sent": sent, "errors": errors, "seconds": secs, "rate": sent as f64 / secs,
                "start_monotonic": first, "end_monotonic": last,
                "transport": transport, "target": target.to_string(),
                "requested_rate": a.rate,
            })
        );
    } else {
        println!(
            "sent {sent} messages to {target} over {transport} in {secs:.3} s: {:.0} messages/s{}{}",
            sent as f64 / secs,
            if a.rate > 0 {
                format!(" (asked for {}/s)", a.rate)
            } else {
                String::new()
            },
            if errors > 0 {
                format!("; {errors} send errors")
            } else {
                String::new()
            }
        );
    }
}

/// What a sink saw: messages and the time of the first and the latest.
#[derive(Default)]
struct SinkCount {
    n: AtomicU64,
    bytes: AtomicU64,
}

fn sink_udp(sock: UdpSocket, c: Arc<SinkCount>, spin: bool) {
    const VLEN: usize = 256;
    const SIZE: usize = 2048;
    set_buffer(
        sock.as_raw_fd(),
        libc::SO_RCVBUFFORCE,
        libc::SO_RCVBUF,
        16 << 20,
    );
    let mut bufs = vec![0u8; SIZE * VLEN];
    // SAFETY (zeroed): plain C structs for which all-zero is valid.
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; VLEN];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; VLEN];
    let fd = sock.as_raw_fd();
    loop {
        for i in 0..VLEN {
            iovs[i].iov_base = bufs[i * SIZE..].as_mut_ptr().cast();
            iovs[i].iov_len = SIZE;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every mmsghdr points at its own iovec and buffer, alive
        // and of the size given, for the whole call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                VLEN as libc::c_uint,
                if spin {
                    libc::MSG_DONTWAIT
                } else {
                    libc::MSG_WAITFORONE
                },
                std::ptr::null_mut(),
            )
        };
        if r > 0 {
            let bytes: u64 = msgs[..r as usize]
                .iter()
                .map(|m| u64::from(m.msg_len))
                .sum();
            c.bytes.fetch_add(bytes, Ordering::Relaxed);
            c.n.fetch_add(r as u64, Ordering::Relaxed);
        }
    }
}

/// Counts frames on one connection (octet counting or LF, whichever each
/// frame starts with, as rsyslog and banhammer detect it).
fn sink_tcp_conn(mut s: TcpStream, c: Arc<SinkCount>) {
    let mut buf = vec![0u8; 1 << 20];
    // parser state: Some(len so far) while reading a count, else skipping
    let mut counting: Option<usize> = None;
    let mut skip: usize = 0;
    let mut in_lf_frame = false;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        c.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let mut frames = 0u64;
        let mut i = 0;
        let data = &buf[..n];
        while i < n {
            if skip > 0 {
                let take = skip.min(n - i);
                skip -= take;
                i += take;
                if skip == 0 {
                    frames += 1;
                }
                continue;
            }
            if in_lf_frame {
                match memchr::memchr(b'\n', &data[i..]) {
                    Some(p) => {
                        frames += 1;
                        in_lf_frame = false;
                        i += p + 1;
                    }
                    None => i = n,
                }
                continue;
            }
            let b = data[i];
            match (counting, b) {
                (Some(len), b' ') => {
                    counting = None;
                    skip = len;
                    if len == 0 {
                        frames += 1;
                    }
                }
                (Some(len), b'0'..=b'9') => counting = Some(len * 10 + (b - b'0') as usize),
                (None, b'0'..=b'9') => counting = Some((b - b'0') as usize),
                (None, b'\n') => {}
                _ => {
                    counting = None;
                    in_lf_frame = true;
                    continue; // this byte starts an LF frame
                }
            }
            i += 1;
        }
        c.n.fetch_add(frames, Ordering::Relaxed);
    }
}

fn sink(a: &Args) {
    let c = Arc::new(SinkCount::default());
    let (addr, what) = match (&a.udp, &a.tcp) {
        (Some(u), None) => {
            let sock = UdpSocket::bind(resolve(u)).unwrap_or_else(|e| {
                eprintln!("syslog_flood: bind {u}: {e}");
                std::process::exit(2)
            });
            let addr = sock.local_addr().unwrap_or_else(|_| resolve(u));
            let c = c.clone();
            let spin = a.spin;
            std::thread::spawn(move || sink_udp(sock, c, spin));
            (addr, "udp")
        }
        (None, Some(t)) => {
            let l = TcpListener::bind(resolve(t)).unwrap_or_else(|e| {
                eprintln!("syslog_flood: listen {t}: {e}");
                std::process::exit(2)
            });
            let addr = l.local_addr().unwrap_or_else(|_| resolve(t));
            let c = c.clone();
            std::thread::spawn(move || {
                for s in l.incoming().flatten() {
                    let c = c.clone();
                    std::thread::spawn(move || sink_tcp_conn(s, c));
                }
            });
            (addr, "tcp")
        }
        _ => {
            eprintln!("syslog_flood: --sink needs --udp HOST:PORT or --tcp HOST:PORT");
            std::process::exit(2);
        }
    };
    println!("listening on {what}://{addr}");
    let _ = std::io::stdout().flush();
    let begin = monotonic();
    let (mut first, mut last, mut seen) = (None::<f64>, 0.0f64, 0u64);
    loop {
        std::thread::sleep(Duration::from_millis(2));
        let now = monotonic();
        let n = c.n.load(Ordering::Relaxed);
        if n != seen {
            if first.is_none() {
                first = Some(now);
            }
            seen = n;
            last = now;
        }
        let done = (a.count > 0 && n >= a.count)
            || (first.is_some() && now - last > a.idle)
            || now - begin > a.timeout;
        if done {
            break;
        }
    }
    let first = first.unwrap_or(last);
    let secs = (last - first).max(1e-9);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "received": seen, "bytes": c.bytes.load(Ordering::Relaxed),
                "seconds": secs, "rate": seen as f64 / secs,
                "first_monotonic": first, "last_monotonic": last,
            })
        );
    } else {
        println!(
            "received {seen} messages on {what}://{addr} in {secs:.3} s: {:.0} messages/s",
            seen as f64 / secs
        );
    }
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

fn main() {
    let a = Args::parse();
    if let Some(n) = a.dump {
        let pool = build_pool(&a);
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for i in 0..n {
            let _ = out.write_all(pool.get(i % pool.len()));
            let _ = out.write_all(b"\n");
        }
        return;
    }
    if a.sink {
        sink(&a);
        return;
    }
    let pool = build_pool(&a);
    send(&a, pool);
}
