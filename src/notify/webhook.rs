//! Webhook delivery: the worker that sends the outbox's due messages.
//!
//! Owns the HTTP client and the set of messages in flight. Messages are
//! already in SQLite (see [`crate::store::outbox`]); the worker asks the
//! store for due ones, sends each as a JSON POST (signed with HMAC-SHA256
//! when the webhook has a `secret`) to the webhook's targets in random order
//! until one answers 2xx, and records the outcome through the store: sent,
//! to be retried later (exponential backoff with jitter), or failed once the
//! message is older than `max_age`. Delivery is at least once: a message
//! sent just before a crash may be sent again, and its `id` lets receivers
//! drop the duplicate. An optional `callback` gets a report of each
//! delivery (best effort).

use crate::config::notify::WebhookConfig;
use crate::store::outbox::{Attempt, OutboxItem};
use crate::store::{Store, StoreCmd};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// Deliveries at once.
const PARALLEL: usize = 32;
/// Messages fetched at once.
const FETCH: usize = 512;
/// The longest pause between retries of one message.
const MAX_BACKOFF: f64 = 3600.0;

/// `sha256=HEX` of the body under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// When to try again after `attempts` failed tries: `base * 2^attempts`,
/// at most an hour, with ±50% jitter so that retries of many messages do
/// not arrive together.
pub fn next_try(base: f64, attempts: u32, now: f64) -> f64 {
    let d = (base * 2f64.powi(attempts.min(30) as i32)).min(MAX_BACKOFF);
    now + d * (0.5 + crate::random::unit())
}

/// What the worker shares with its delivery tasks.
struct Shared {
    store: Store,
    hooks: HashMap<String, WebhookConfig>,
    client: reqwest::Client,
    in_flight: Mutex<HashSet<String>>,
    slots: Semaphore,
    /// Counters for metrics: delivered, retried, failed.
    stats: Arc<WebhookStats>,
}

#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: std::sync::atomic::AtomicU64,
    pub retried: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
}

/// Sends one message to its targets, in random order, until one accepts.
async fn deliver(sh: &Shared, item: &OutboxItem) -> Attempt {
    let Some(hook) = sh.hooks.get(&item.webhook) else {
        return Attempt::Failed {
            error: format!("webhook '{}' is no longer configured", item.webhook),
        };
    };
    let mut targets = hook.urls.clone();
    // Fisher-Yates with kernel randomness
    for i in (1..targets.len()).rev() {
        let j = (crate::random::unit() * (i + 1) as f64) as usize;
        targets.swap(i, j.min(i));
    }
    let body = item.payload.clone().into_bytes();
    let mut errors = Vec::new();
    for url in &targets {
        let mut req = sh
            .client
            .post(url)
            .timeout(Duration::from_secs_f64(hook.timeout))
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("banhammer/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-banhammer-id", &item.id)
            .header("x-banhammer-event", &item.event);
        if let Some(secret) = &hook.secret {
            req = req.header("x-banhammer-signature", signature(secret, &body));
        }
        for (k, v) in &hook.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.body(body.clone()).send().await {
            Ok(r) if r.status().is_success() => {
                return Attempt::Delivered {
                    target: url.clone(),
                }
            }
            Ok(r) => errors.push(format!("{url}: HTTP {}", r.status().as_u16())),
            Err(e) => errors.push(format!("{url}: {}", short_error(&e))),
        }
    }
    let error = errors.join("; ");
    let now = crate::jail::now();
    if now - item.created > hook.max_age {
        Attempt::Failed { error }
    } else {
        Attempt::Retry {
            due: next_try(hook.retry, item.attempts, now),
            error,
        }
    }
}

fn short_error(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg.chars().take(300).collect()
}

async fn report(sh: &Shared, item: &OutboxItem, a: &Attempt) {
    let Some(url) = sh.hooks.get(&item.webhook).and_then(|h| h.callback.clone()) else {
        return;
    };
    let (state, target, error) = match a {
        Attempt::Delivered { target } => ("delivered", Some(target.as_str()), None),
        Attempt::Retry { error, .. } => ("retrying", None, Some(error.as_str())),
        Attempt::Failed { error } => ("failed", None, Some(error.as_str())),
    };
    let body = serde_json::json!({
        "id": item.id, "webhook": item.webhook, "event": item.event, "state": state,
        "attempts": item.attempts + 1, "target": target, "error": error,
    });
    let _ = sh
        .client
        .post(&url)
        .timeout(Duration::from_secs(10))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
}

/// Starts the delivery worker; `wake` is what the store notifies when it
/// queues messages. The worker runs on its own thread and runtime at a
/// lower CPU priority (nice +10): during a burst, enforcing bans comes
/// before telling receivers about them.
pub fn spawn(
    store: Store,
    hooks: Vec<WebhookConfig>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) -> Result<(tokio::task::JoinHandle<()>, Arc<WebhookStats>), String> {
    let stats = Arc::new(WebhookStats::default());
    let mine = stats.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let thread = std::thread::Builder::new()
        .name("webhooks".into())
        .spawn(move || {
            crate::source::set_thread_nice(10);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("webhooks: cannot start a runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let client = match reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .pool_max_idle_per_host(PARALLEL)
                    .build()
                {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx
                            .send(Err(format!("webhooks: cannot make an HTTP client: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let sh = Arc::new(Shared {
                    store,
                    hooks: hooks.into_iter().map(|h| (h.name.clone(), h)).collect(),
                    client,
                    in_flight: Mutex::new(HashSet::new()),
                    slots: Semaphore::new(PARALLEL),
                    stats: mine,
                });
                run(sh, wake, cancel).await;
            });
        })
        .map_err(|e| format!("webhooks: cannot start the delivery thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "webhooks: the delivery thread ended at start".to_string())??;
    let task = tokio::task::spawn_blocking(move || {
        let _ = thread.join();
    });
    Ok((task, stats))
}

/// The delivery loop: fetch due messages, send each in its own task, wait
/// for more.
async fn run(sh: Arc<Shared>, wake: Arc<Notify>, cancel: CancellationToken) {
    // how long a fetched message may take before it may be fetched again:
    // its wait for a delivery slot behind a whole fetch, then every target
    // timing out (leases are in memory: after a restart nothing is leased)
    let slowest = sh
        .hooks
        .values()
        .map(|h| h.timeout * h.urls.len().max(1) as f64)
        .fold(0.0, f64::max);
    let lease = slowest * (FETCH / PARALLEL + 1) as f64 + 60.0;
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let now = crate::jail::now();
        let due = sh
            .store
            .ask(|reply| StoreCmd::OutboxDue {
                now,
                limit: FETCH,
                lease,
                reply,
            })
            .await;
        let (items, next) = match due {
            Ok(d) => d,
            Err(_) => break,
        };
        let mut started = 0;
        for item in items {
            {
                let mut f = sh.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                if !f.insert(item.id.clone()) {
                    continue;
                }
            }
            started += 1;
            let sh = sh.clone();
            tasks.spawn(async move {
                let _slot = sh.slots.acquire().await;
                let a = deliver(&sh, &item).await;
                use std::sync::atomic::Ordering::Relaxed;
                match &a {
                    Attempt::Delivered { .. } => sh.stats.delivered.fetch_add(1, Relaxed),
                    Attempt::Retry { error, .. } => {
                        tracing::debug!(target: "banhammer.notify", webhook = %item.webhook, id = %item.id, "webhook delivery failed, will retry: {error}");
                        sh.stats.retried.fetch_add(1, Relaxed)
                    }
                    Attempt::Failed { error } => {
                        tracing::warn!(target: "banhammer.notify", webhook = %item.webhook, id = %item.id, "webhook message given up: {error}");
                        sh.stats.failed.fetch_add(1, Relaxed)
                    }
                };
                let _ = sh.store.send(StoreCmd::OutboxRecord {
                    id: item.id.clone(),
                    attempt: a.clone(),
                });
                sh.in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&item.id);
                report(&sh, &item, &a).await;
            });
        }
        // more due right away (a burst), else wait for new messages, the
        // next due one, or a periodic look (results of the tasks)
        let wait = if started >= FETCH / 2 {
            Duration::from_millis(10)
        } else {
            let until_next = next.map_or(60.0, |n| (n - crate::jail::now()).max(0.0));
            Duration::from_secs_f64(until_next.min(1.0))
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tasks.close();
    // deliveries under way finish (or time out) before the daemon stops
    let _ = tokio::time::timeout(Duration::from_secs(15), tasks.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_and_backoff() {
        // RFC 4231 test case 2
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        for attempts in 0..40 {
            let t = next_try(5.0, attempts, 1000.0) - 1000.0;
            let base = (5.0 * 2f64.powi(attempts.min(30) as i32)).min(MAX_BACKOFF);
            assert!(t >= base * 0.5 && t < base * 1.5, "{attempts}: {t}");
        }
    }
}
