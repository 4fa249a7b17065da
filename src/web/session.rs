//! Admin sessions, CSRF tokens and the login rate limit.
//!
//! Owns the live sessions (random tokens, each with its own CSRF token and
//! an expiry) and the failed-login counts per address. Both sit behind a
//! plain mutex: they are touched once per admin request, never on the
//! ingest path, and the lock is never held across `.await`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts without use.
const IDLE: Duration = Duration::from_secs(8 * 3600);
/// Failed logins allowed per address within [`WINDOW`].
pub const MAX_FAILED_LOGINS: u32 = 5;
const WINDOW: Duration = Duration::from_secs(600);

/// 32 random bytes as hex, from the kernel.
pub fn random_token() -> String {
    let mut buf = [0u8; 32];
    // getrandom does not fail on a working Linux; if it does, the system is
    // broken enough that the error below is the right answer
    if let Err(e) = crate::random::fill(&mut buf) {
        tracing::error!(target: "banhammer.web", "{e}; sessions are not safe");
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets without revealing where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    seen: Instant,
}

#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    failed: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Sessions {
    /// A new session: (cookie token, CSRF token).
    pub fn create(&self) -> (String, String) {
        let token = random_token();
        let csrf = random_token();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, s| s.seen.elapsed() < IDLE);
        live.insert(
            token.clone(),
            Session {
                csrf: csrf.clone(),
                seen: Instant::now(),
            },
        );
        (token, csrf)
    }

    /// The session of a cookie token, if it is live (and marks it used).
    pub fn get(&self, token: &str) -> Option<Session> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let s = live.get_mut(token)?;
        if s.seen.elapsed() > IDLE {
            live.remove(token);
            return None;
        }
        s.seen = Instant::now();
        Some(s.clone())
    }

    pub fn remove(&self, token: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    /// Whether `ip` may try to log in now.
    pub fn may_try(&self, ip: IpAddr) -> bool {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        match failed.get(&ip) {
            Some((n, since)) => *n < MAX_FAILED_LOGINS || since.elapsed() > WINDOW,
            None => true,
        }
    }

    pub fn failed_login(&self, ip: IpAddr) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.retain(|_, (_, since)| since.elapsed() < WINDOW);
        let e = failed.entry(ip).or_insert((0, Instant::now()));
        e.0 += 1;
    }

    pub fn good_login(&self, ip: IpAddr) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

/// `name=value` from a Cookie header.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Hashes a password for `[web] admin_password_hash` (argon2id, random
/// salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    crate::random::fill(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against an argon2 hash; a malformed hash is an error.
pub fn verify_password(password: &str, hash: &str) -> Result<bool, String> {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(hash).map_err(|e| format!("admin_password_hash: {e}"))?;
    Ok(argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h).unwrap());
        assert!(!verify_password("wrong", &h).unwrap());
        assert!(verify_password("x", "not a hash").is_err());
    }

    #[test]
    fn logins_are_limited_per_address() {
        let s = Sessions::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_FAILED_LOGINS {
            assert!(s.may_try(ip));
            s.failed_login(ip);
        }
        assert!(!s.may_try(ip));
        assert!(s.may_try("192.0.2.2".parse().unwrap()));
        let (token, csrf) = s.create();
        assert_eq!(s.get(&token).unwrap().csrf, csrf);
        s.remove(&token);
        assert!(s.get(&token).is_none());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("a", "ab"));
    }
}
