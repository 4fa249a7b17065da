//! A webhook receiver for the tests: an HTTP server that checks
//! signatures and keeps every delivery, so tests can drop duplicates by id
//! (as a receiver should) and count them.

use super::netns::Netns;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "webhook secret";

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub event: String,
    pub body: serde_json::Value,
}

/// An HTTP receiver on a fixed port, started when the test wants it up.
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<Delivery>>>,
    pub bad_signatures: Arc<Mutex<u32>>,
}

impl Receiver {
    pub fn start(&self, port: u16) {
        self.start_in(None, port)
    }

    /// Listens on 127.0.0.1:`port` inside `ns` (the namespace's own
    /// loopback, where a daemon started in it sends).
    pub fn start_in(&self, ns: Option<&Netns>, port: u16) {
        let l = match ns {
            Some(ns) => ns.run(move || TcpListener::bind(("127.0.0.1", port))),
            None => TcpListener::bind(("127.0.0.1", port)),
        }
        .expect("the receiver's port");
        let me = self.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || me.serve(s));
            }
        });
    }

    fn serve(&self, s: std::net::TcpStream) {
        let mut r = BufReader::new(s.try_clone().unwrap());
        loop {
            let mut head = HashMap::new();
            let mut first = String::new();
            if r.read_line(&mut first).unwrap_or(0) == 0 {
                return;
            }
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap_or(0) == 0 {
                    return;
                }
                let l = l.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    head.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = head
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
            let sig = head
                .get("x-banhammer-signature")
                .and_then(|v| v.strip_prefix("sha256="))
                .and_then(|h| {
                    (0..h.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                        .collect::<Option<Vec<u8>>>()
                });
            let ok = sig.is_some_and(|sig| ring::hmac::verify(&key, &body, &sig).is_ok());
            if !ok {
                *self.bad_signatures.lock().unwrap() += 1;
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            self.got.lock().unwrap().push(Delivery {
                id: head.get("x-banhammer-id").cloned().unwrap_or_default(),
                event: head.get("x-banhammer-event").cloned().unwrap_or_default(),
                body: v,
            });
            let mut w = s.try_clone().unwrap();
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    }

    /// Distinct messages of `event` (duplicates dropped by id).
    pub fn unique(&self, event: &str) -> HashMap<String, Delivery> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.event == event)
            .map(|d| (d.id.clone(), d.clone()))
            .collect()
    }

    pub fn wait_unique(
        &self,
        event: &str,
        n: usize,
        timeout: Duration,
    ) -> HashMap<String, Delivery> {
        let t = Instant::now();
        loop {
            let u = self.unique(event);
            if u.len() >= n {
                return u;
            }
            assert!(
                t.elapsed() < timeout,
                "{} of {n} {event} messages after {timeout:?}",
                u.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
