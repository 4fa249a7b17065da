//! Addresses a jail never bans: `ignoreip` (addresses, networks, host
//! names, `file:` lists), `ignoreself` (this host's own addresses) and
//! `ignorecommand` (an external verdict, cached).

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// `::ffff:192.0.2.1` is `192.0.2.1`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Parses a captured address (`[2001:db8::1]`, `::ffff:1.2.3.4`, `192.0.2.1`).
pub fn parse_addr(text: &str) -> Option<IpAddr> {
    if let Some(v4) = plain_ipv4(text.as_bytes()) {
        return Some(IpAddr::V4(v4));
    }
    let t = text.trim().trim_start_matches('[').trim_end_matches(']');
    t.parse::<IpAddr>().ok().map(canonical)
}

/// A dotted quad exactly as the standard parser accepts one (four decimal
/// octets of one to three digits, at most 255, no leading zero), read
/// without its general machinery: nearly every failure's address is one.
/// None for anything else, which the standard parser then decides.
fn plain_ipv4(b: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v: u32 = 0;
        while i - start < 3 {
            match b.get(i) {
                Some(d) if d.is_ascii_digit() => v = v * 10 + u32::from(d - b'0'),
                _ => break,
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || (digits > 1 && b[start] == b'0') {
            return None;
        }
        *octet = u8::try_from(v).ok()?;
    }
    (i == b.len()).then_some(std::net::Ipv4Addr::from(octets))
}

#[derive(Debug, Default)]
pub struct IgnoreList {
    nets: Vec<IpNet>,
    command: Option<String>,
    verdicts: HashMap<IpAddr, (bool, Instant)>,
    pub warnings: Vec<String>,
}

/// How long an `ignorecommand` answer is reused.
const COMMAND_CACHE: Duration = Duration::from_secs(300);

impl IgnoreList {
    pub fn build(entries: &[String], ignoreself: bool, command: Option<String>) -> IgnoreList {
        let mut list = IgnoreList {
            command,
            ..IgnoreList::default()
        };
        for e in entries {
            list.add_entry(e);
        }
        if ignoreself {
            list.nets
                .extend(own_addresses().into_iter().map(IpNet::from));
            for lo in ["127.0.0.0/8", "::1/128"] {
                if let Ok(n) = lo.parse() {
                    list.nets.push(n);
                }
            }
        }
        list
    }

    fn add_entry(&mut self, e: &str) {
        if let Some(path) = e.strip_prefix("file:") {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    for line in text.lines() {
                        let l = line.split('#').next().unwrap_or("").trim();
                        for w in l.split([' ', ',', '\t']).filter(|w| !w.is_empty()) {
                            self.add_entry(w);
                        }
                    }
                }
                Err(err) => self
                    .warnings
                    .push(format!("ignoreip {e}: cannot read: {err}")),
            }
            return;
        }
        if let Ok(n) = e.parse::<IpNet>() {
            self.nets.push(n.trunc());
            return;
        }
        if let Some(ip) = parse_addr(e) {
            self.nets.push(IpNet::from(ip));
            return;
        }
        // a host name: its current addresses
        match (e, 0).to_socket_addrs() {
            Ok(addrs) => {
                let mut any = false;
                for a in addrs {
                    self.nets.push(IpNet::from(canonical(a.ip())));
                    any = true;
                }
                if !any {
                    self.warnings
                        .push(format!("ignoreip {e}: host name has no address"));
                }
            }
            Err(err) => self.warnings.push(format!(
                "ignoreip {e}: not an address, network or resolvable host name ({err})"
            )),
        }
    }

    /// True if the address is covered by `ignoreip`/`ignoreself`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    pub fn has_command(&self) -> bool {
        self.command.is_some()
    }

    /// The `ignorecommand` verdict (true: ignore), run with `<ip>` replaced
    /// and cached for a while.
    pub fn command_says_ignore(&mut self, ip: IpAddr) -> bool {
        let Some(cmd) = &self.command else {
            return false;
        };
        if let Some((v, at)) = self.verdicts.get(&ip) {
            if at.elapsed() < COMMAND_CACHE {
                return *v;
            }
        }
        let line = cmd.replace("<ip>", &ip.to_string());
        let verdict = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&line)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if self.verdicts.len() > 10_000 {
            self.verdicts.clear();
        }
        self.verdicts.insert(ip, (verdict, Instant::now()));
        verdict
    }
}

/// The addresses of this host's interfaces.
pub fn own_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a linked list we only read and then free
    // with freeifaddrs; each ifa_addr is checked for null and its family
    // before it is read as the matching sockaddr type.
    unsafe {
        let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dotted-quad shortcut accepts exactly what the standard parser
    /// accepts, with the same value.
    #[test]
    fn plain_ipv4_agrees_with_the_standard_parser() {
        let mut texts: Vec<String> = [
            "0.0.0.0",
            "1.2.3.4",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1234.1.1.1",
            "1.2.3.4x",
            "",
            ".",
            "1.2.3.",
            "10.0.0.00",
            "192.168.1.1",
            "::1",
            "1.2.3.999",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut seed: u32 = 7;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let pick = |s: u32| {
                [
                    "0", "1", "9", "25", "255", "256", "00", "012", "99", "300", "1000", "",
                ][(s >> 8) as usize % 12]
            };
            texts.push(format!(
                "{}.{}.{}.{}",
                pick(seed),
                pick(seed >> 3),
                pick(seed >> 6),
                pick(seed >> 9)
            ));
        }
        for t in &texts {
            assert_eq!(
                plain_ipv4(t.as_bytes()),
                t.parse::<std::net::Ipv4Addr>().ok(),
                "{t:?}"
            );
        }
        assert_eq!(parse_addr("[::ffff:1.2.3.4]"), "1.2.3.4".parse().ok());
    }

    #[test]
    fn lists() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("trusted");
        std::fs::write(&f, "# office\n198.51.100.0/24 203.0.113.9\n").unwrap();
        let l = IgnoreList::build(
            &[
                "192.0.2.1".into(),
                "2001:db8::/48".into(),
                format!("file:{}", f.display()),
                "localhost".into(),
            ],
            false,
            None,
        );
        assert!(l.contains("192.0.2.1".parse().unwrap()));
        assert!(
            l.contains("::ffff:192.0.2.1".parse().unwrap()),
            "mapped IPv4 counts as IPv4"
        );
        assert!(!l.contains("192.0.2.2".parse().unwrap()));
        assert!(l.contains("2001:db8:0:1::5".parse().unwrap()));
        assert!(l.contains("198.51.100.77".parse().unwrap()));
        assert!(l.contains("203.0.113.9".parse().unwrap()));
        assert!(
            l.contains("127.0.0.1".parse().unwrap()),
            "localhost resolves"
        );
        let s = IgnoreList::build(&[], true, None);
        assert!(s.contains("127.0.0.1".parse().unwrap()));
        for a in own_addresses() {
            assert!(s.contains(a));
        }
        let mut c = IgnoreList::build(&[], false, Some("test <ip> = 192.0.2.5".into()));
        assert!(c.command_says_ignore("192.0.2.5".parse().unwrap()));
        assert!(!c.command_says_ignore("192.0.2.6".parse().unwrap()));
    }
}
