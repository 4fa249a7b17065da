//! Prometheus `/metrics`: lines read per source, failures and bans per
//! jail, active bans, syslog receiver counters (drops among them),
//! firewall batches and errors, action errors, and the database's size,
//! in the text exposition format, computed when scraped.

use super::admin::AdminState;
use crate::firewall::table::Firewall;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the figures come from besides the jails.
#[derive(Clone, Default)]
pub struct MetricsSources {
    pub store: Option<crate::store::Store>,
    pub webhooks: Option<Arc<crate::notify::webhook::WebhookStats>>,
    pub syslog: Option<Arc<crate::source::syslog::Receiver>>,
    pub firewalls: Vec<Firewall>,
    pub db_path: Option<PathBuf>,
}

/// A label value, escaped as the format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut out = String::with_capacity(4096);
    let jails = state.web.jails.brief().await;
    family(
        &mut out,
        "banhammer_lines_total",
        "counter",
        "Log lines read, per jail and source.",
    );
    for j in &jails {
        for (src, n) in &j.source_lines {
            let _ = writeln!(
                out,
                "banhammer_lines_total{{jail=\"{}\",source=\"{}\"}} {n}",
                label(&j.name),
                label(src)
            );
        }
    }
    let per_jail: [(&str, &str, &str, fn(&crate::jail::JailStatus) -> u64); 6] = [
        (
            "banhammer_failures_total",
            "counter",
            "Failures counted.",
            |j| j.total_failed,
        ),
        (
            "banhammer_bans_total",
            "counter",
            "Bans made (including restored ones).",
            |j| j.total_banned,
        ),
        (
            "banhammer_unbans_total",
            "counter",
            "Bans lifted (expired or by hand).",
            |j| j.total_unbanned,
        ),
        ("banhammer_active_bans", "gauge", "Bans in force.", |j| {
            j.currently_banned as u64
        }),
        (
            "banhammer_failing_addresses",
            "gauge",
            "Addresses with failures in the window.",
            |j| j.currently_failed as u64,
        ),
        (
            "banhammer_action_errors_total",
            "counter",
            "Action calls that failed.",
            |j| j.action_errors,
        ),
    ];
    for (name, kind, help, get) in per_jail {
        family(&mut out, name, kind, help);
        for j in &jails {
            let _ = writeln!(out, "{name}{{jail=\"{}\"}} {}", label(&j.name), get(j));
        }
    }
    if let Some(r) = &state.metrics.syslog {
        family(
            &mut out,
            "banhammer_syslog_messages_total",
            "counter",
            "Syslog receiver events (received, dropped and why).",
        );
        for (k, v) in r.stats.snapshot().pairs() {
            let _ = writeln!(out, "banhammer_syslog_messages_total{{event=\"{k}\"}} {v}");
        }
    }
    family(
        &mut out,
        "banhammer_firewall_batches_total",
        "counter",
        "Batches written to the kernel.",
    );
    let mut fw = Vec::new();
    for f in &state.metrics.firewalls {
        if let Some(st) = f.status().await {
            fw.push(st);
        }
    }
    for st in &fw {
        let _ = writeln!(
            out,
            "banhammer_firewall_batches_total{{backend=\"{}\"}} {}",
            st.backend, st.batches
        );
    }
    family(
        &mut out,
        "banhammer_firewall_errors_total",
        "counter",
        "Kernel commands that failed.",
    );
    for st in &fw {
        let _ = writeln!(
            out,
            "banhammer_firewall_errors_total{{backend=\"{}\"}} {}",
            st.backend, st.errors
        );
    }
    family(
        &mut out,
        "banhammer_firewall_elements",
        "gauge",
        "Bans the firewall holds.",
    );
    for st in &fw {
        let _ = writeln!(
            out,
            "banhammer_firewall_elements{{backend=\"{}\"}} {}",
            st.backend, st.elements
        );
    }
    if let Some(st) = &state.metrics.store {
        if let Ok(counts) = st.ask(crate::store::StoreCmd::OutboxCounts).await {
            family(
                &mut out,
                "banhammer_webhook_messages",
                "gauge",
                "Webhook messages in the outbox, by state.",
            );
            for (k, n) in counts {
                let _ = writeln!(
                    out,
                    "banhammer_webhook_messages{{state=\"{}\"}} {n}",
                    label(&k)
                );
            }
        }
    }
    if let Some(w) = &state.metrics.webhooks {
        use std::sync::atomic::Ordering::Relaxed;
        family(
            &mut out,
            "banhammer_webhook_attempts_total",
            "counter",
            "Webhook delivery attempts since start, by result.",
        );
        for (k, v) in [
            ("delivered", &w.delivered),
            ("retried", &w.retried),
            ("failed", &w.failed),
        ] {
            let _ = writeln!(
                out,
                "banhammer_webhook_attempts_total{{result=\"{k}\"}} {}",
                v.load(Relaxed)
            );
        }
    }
    if let Some(p) = &state.metrics.db_path {
        let size: u64 = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{}{s}", p.display())).ok())
            .map(|m| m.len())
            .sum();
        family(
            &mut out,
            "banhammer_database_bytes",
            "gauge",
            "Size of the SQLite database (with its WAL).",
        );
        let _ = writeln!(out, "banhammer_database_bytes {size}");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
