//! The dashboard's figures that are too costly to compute per page view
//! (counts over a million stored failures), refreshed in the background,
//! and the ban chart drawn as SVG on the server.
//!
//! Owns a task that every [`REFRESH`] asks the database reader and the
//! jails for bans per hour, the top addresses and senders of the last day,
//! and lines read per source (turned into rates between two snapshots),
//! and publishes the result on a `watch` channel that pages read without
//! waiting.

use crate::jail::JailDirectory;
use crate::store::reader::{self, Reader};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub const REFRESH: Duration = Duration::from_secs(15);
const DAY: f64 = 86400.0;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Dashboard {
    /// Epoch seconds of the refresh.
    pub at: f64,
    /// (hour start, bans) over the last 24 hours, every hour present.
    pub bans_per_hour: Vec<(f64, u64)>,
    pub top_addresses: Vec<(String, u64)>,
    /// (header host, peer address, failures).
    pub top_senders: Vec<(String, String, u64)>,
    /// (jail, source, lines per second).
    pub rates: Vec<(String, String, f64)>,
    /// Bans and failures ever recorded, active bans.
    pub total_bans: u64,
    pub active_bans: u64,
    pub total_failures: u64,
    /// Webhook messages per state, and the last ones that failed
    /// (webhook, event, error).
    pub outbox: Vec<(String, u64)>,
    pub outbox_failed: Vec<(String, String, String)>,
    /// A query failed: shown on the page.
    pub error: Option<String>,
}

/// Fills every hour of the last day, so that the chart has no gaps.
fn full_day(rows: &[(f64, u64)], now: f64) -> Vec<(f64, u64)> {
    let last = (now / 3600.0).floor() * 3600.0;
    let have: HashMap<i64, u64> = rows.iter().map(|(h, n)| (*h as i64, *n)).collect();
    (0..24)
        .rev()
        .map(|i| {
            let h = last - f64::from(i) * 3600.0;
            (h, have.get(&(h as i64)).copied().unwrap_or(0))
        })
        .collect()
}

async fn compute(
    reader: Option<&Reader>,
    jails: &JailDirectory,
    last: &mut Option<(Instant, HashMap<(String, String), u64>)>,
) -> Dashboard {
    let now = crate::jail::now();
    let mut d = Dashboard {
        at: now,
        ..Dashboard::default()
    };
    if let Some(r) = reader {
        let since = now - DAY;
        let q = r
            .run(move |c| {
                Ok((
                    reader::bans_per_hour(c, since - 3600.0, None)?,
                    reader::top_addresses(c, since, 10)?,
                    reader::top_senders(c, since, 10)?,
                    reader::outbox_summary(c)?,
                ))
            })
            .await;
        match q {
            Ok((per_hour, top, senders, (outbox, failed))) => {
                d.bans_per_hour = full_day(&per_hour, now);
                d.top_addresses = top;
                d.top_senders = senders;
                d.outbox = outbox;
                d.outbox_failed = failed;
            }
            Err(e) => d.error = Some(e),
        }
    } else {
        d.bans_per_hour = full_day(&[], now);
        d.error = Some("no database (dbfile = None): history is not kept".into());
    }
    let mut snap = HashMap::new();
    for j in jails.brief().await {
        for (src, n) in j.source_lines {
            snap.insert((j.name.clone(), src), n);
        }
    }
    if let Some((t, prev)) = last.as_ref() {
        let dt = t.elapsed().as_secs_f64().max(0.001);
        let mut rates: Vec<(String, String, f64)> = snap
            .iter()
            .map(|((j, s), n)| {
                let before = prev.get(&(j.clone(), s.clone())).copied().unwrap_or(0);
                (j.clone(), s.clone(), n.saturating_sub(before) as f64 / dt)
            })
            .collect();
        rates.sort_by(|a, b| b.2.total_cmp(&a.2));
        d.rates = rates;
    }
    *last = Some((Instant::now(), snap));
    d
}

/// Starts the refresh task; the receiver always holds the latest figures.
pub fn spawn(
    reader: Option<Reader>,
    jails: JailDirectory,
    cancel: CancellationToken,
) -> watch::Receiver<Dashboard> {
    let (tx, rx) = watch::channel(Dashboard::default());
    tokio::spawn(async move {
        let mut last = None;
        let mut tick = tokio::time::interval(REFRESH);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    let d = compute(reader.as_ref(), &jails, &mut last).await;
                    if tx.send(d).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// A bar chart of bans per hour as inline SVG (no script, readable by
/// screen readers through its title and table fallback on the page).
pub fn ban_chart(hours: &[(f64, u64)]) -> String {
    let (w, h, pad_l, pad_b, pad_t) = (720.0, 180.0, 36.0, 22.0, 10.0);
    let max = hours.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    // a round top for the axis
    let step = [
        1u64, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
    ]
    .into_iter()
    .find(|s| max / s <= 4)
    .unwrap_or(max.div_ceil(4));
    let top = max.div_ceil(step) * step;
    let plot_w = w - pad_l - 4.0;
    let plot_h = h - pad_b - pad_t;
    let n = hours.len().max(1) as f64;
    let bar = plot_w / n;
    let total: u64 = hours.iter().map(|(_, n)| n).sum();
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">Bans per hour over the last 24 hours: {total} in all, at most {max} in one hour</title>"#
    );
    let mut v = 0;
    while v <= top {
        let y = pad_t + plot_h - plot_h * v as f64 / top as f64;
        s.push_str(&format!(
            r#"<line x1="{pad_l}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" class="axis" text-anchor="end">{v}</text>"#,
            w - 4.0,
            pad_l - 6.0,
            y + 4.0
        ));
        v += step;
    }
    for (i, (hour, count)) in hours.iter().enumerate() {
        let bh = plot_h * *count as f64 / top as f64;
        let x = pad_l + bar * i as f64 + 1.0;
        let y = pad_t + plot_h - bh;
        let label = chrono::DateTime::from_timestamp(*hour as i64, 0)
            .map(|t| t.format("%H:00").to_string())
            .unwrap_or_default();
        s.push_str(&format!(
            r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}" class="bar"><title>{label} UTC: {count} bans</title></rect>"#,
            (bar - 2.0).max(1.0)
        ));
        if i % 3 == 0 {
            s.push_str(&format!(
                r#"<text x="{:.1}" y="{}" class="axis" text-anchor="middle">{label}</text>"#,
                x + bar / 2.0,
                h - 6.0
            ));
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_has_every_hour_and_the_chart_its_bars() {
        let now = 1_800_000_000.0;
        let last = (now / 3600.0_f64).floor() * 3600.0;
        let d = full_day(&[(last, 7), (last - 7200.0, 3)], now);
        assert_eq!(d.len(), 24);
        assert_eq!(d[23], (last, 7));
        assert_eq!(d[21], (last - 7200.0, 3));
        let svg = ban_chart(&d);
        assert_eq!(svg.matches("<rect").count(), 24);
        assert!(svg.contains("10 in all, at most 7"), "{svg}");
    }
}
