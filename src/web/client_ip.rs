//! Who a visitor is: the TCP peer, or, when the peer is one of
//! `[web] trusted_proxies`, the client those proxies name in
//! `X-Forwarded-For` or `Forwarded`. Only headers added by trusted proxies
//! count: the list is read from the right, skipping trusted hops, and the
//! first address that is not a trusted proxy is the visitor (anything to its
//! left was written by the visitor and could be anything).

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

/// One `Forwarded` `for=` value: `192.0.2.1`, `"[2001:db8::1]:4711"`,
/// `192.0.2.1:80`; `unknown` and obfuscated names give `None`.
fn forwarded_for(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse::<IpAddr>()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
}

/// The hops a request went through, as the proxies recorded them, in
/// order (client first).
fn hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut out = Vec::new();
    for v in headers.get_all("forwarded") {
        let Ok(v) = v.to_str() else { continue };
        for element in v.split(',') {
            let f = element
                .split(';')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .map(|(_, v)| forwarded_for(v));
            if let Some(f) = f {
                out.push(f);
            }
        }
    }
    if !out.is_empty() {
        return out;
    }
    for v in headers.get_all("x-forwarded-for") {
        let Ok(v) = v.to_str() else { continue };
        out.extend(v.split(',').map(|s| forwarded_for(s)));
    }
    out
}

/// The visitor's address.
pub fn visitor(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = crate::jail::ignore::canonical(peer);
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut last = peer;
    for hop in hops(headers).into_iter().rev() {
        match hop {
            Some(ip) => {
                let ip = crate::jail::ignore::canonical(ip);
                if !trusted(ip, proxies) {
                    return ip;
                }
                last = ip;
            }
            // a hop that cannot be read: stop at the last known one
            None => return last,
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = h(&[("x-forwarded-for", "198.51.100.7, 203.0.113.5")]);
        // not from a proxy: the header is the visitor's own invention
        assert_eq!(
            visitor(ip("203.0.113.9"), &xff, &proxies),
            ip("203.0.113.9")
        );
        // from the proxy: the rightmost untrusted hop, not the spoofable left
        assert_eq!(visitor(ip("10.0.0.2"), &xff, &proxies), ip("203.0.113.5"));
        let chain = h(&[("x-forwarded-for", "203.0.113.5, 10.0.0.3")]);
        assert_eq!(visitor(ip("10.0.0.2"), &chain, &proxies), ip("203.0.113.5"));
        let fwd = h(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8::7]:4711\"",
        )]);
        assert_eq!(visitor(ip("10.0.0.2"), &fwd, &proxies), ip("2001:db8::7"));
        // mapped IPv4 from a dual-stack socket is the IPv4 address
        assert_eq!(
            visitor(ip("::ffff:203.0.113.1"), &HeaderMap::new(), &proxies),
            ip("203.0.113.1")
        );
        let junk = h(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(visitor(ip("10.0.0.2"), &junk, &proxies), ip("10.0.0.2"));
    }
}
