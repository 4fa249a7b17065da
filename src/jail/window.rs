//! Failure windows: per source, its recent failures (time and log line;
//! the lines are the evidence a ban keeps).
//!
//! A source is banned when `maxretry` of its failures fall within
//! `findtime` of each other: an exact sliding window (Fail2Ban estimates
//! the count from a rate once the first failure is older than `findtime`;
//! here a failure simply stops counting once it is `findtime` old).

use ipnet::IpNet;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// One failure: its time and its log line(s).
pub type Failure = (f64, Arc<str>);

#[derive(Debug, Default)]
pub struct FailureWindows {
    windows: HashMap<IpNet, VecDeque<Failure>>,
}

impl FailureWindows {
    /// Records a failure at `time` and returns how many failures of `key`
    /// lie within `findtime` up to it (keeping at most `maxretry`).
    pub fn add(
        &mut self,
        key: IpNet,
        time: f64,
        line: Arc<str>,
        findtime: f64,
        maxretry: u32,
    ) -> u32 {
        let w = self.windows.entry(key).or_default();
        // keep the times sorted (lines of several files may interleave)
        let pos = w.iter().rposition(|f| f.0 <= time).map_or(0, |p| p + 1);
        w.insert(pos, (time, line));
        let newest = w.back().map_or(time, |f| f.0);
        while w.front().is_some_and(|f| f.0 <= newest - findtime) {
            w.pop_front();
        }
        while w.len() > maxretry as usize {
            w.pop_front();
        }
        w.len() as u32
    }

    /// Failures of `key` still counting at `now`.
    pub fn count(&self, key: &IpNet, now: f64, findtime: f64) -> u32 {
        self.windows.get(key).map_or(0, |w| {
            w.iter().filter(|f| f.0 > now - findtime).count() as u32
        })
    }

    /// Removes the window of `key`, returning its failures, oldest first.
    pub fn take(&mut self, key: &IpNet) -> Vec<Failure> {
        self.windows.remove(key).map(Vec::from).unwrap_or_default()
    }

    /// Drops sources whose last failure is older than `findtime`.
    pub fn expire(&mut self, now: f64, findtime: f64) {
        self.windows
            .retain(|_, w| w.back().is_some_and(|f| f.0 > now - findtime));
    }

    /// Sources with failures that still count.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &IpNet> {
        self.windows.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxretry_within_findtime() {
        let mut w = FailureWindows::default();
        let k: IpNet = "192.0.2.1/32".parse().unwrap();
        let l = |s: &str| Arc::<str>::from(s);
        assert_eq!(w.add(k, 100.0, l("a"), 60.0, 3), 1);
        assert_eq!(w.add(k, 130.0, l("b"), 60.0, 3), 2);
        // the first failure is 60 s old now: it no longer counts
        assert_eq!(w.add(k, 160.0, l("c"), 60.0, 3), 2);
        assert_eq!(w.add(k, 161.0, l("d"), 60.0, 3), 3);
        // out of order is fine
        let k2: IpNet = "192.0.2.2/32".parse().unwrap();
        w.add(k2, 200.0, l("y"), 60.0, 3);
        w.add(k2, 150.0, l("x"), 60.0, 3);
        assert_eq!(w.count(&k2, 200.0, 60.0), 2);
        // one older than findtime before the newest does not count
        assert_eq!(w.add(k2, 120.0, l("w"), 60.0, 3), 2);
        let lines: Vec<_> = w.take(&k).into_iter().map(|f| f.1).collect();
        assert_eq!(lines, [l("b"), l("c"), l("d")]);
        w.expire(300.0, 60.0);
        assert!(w.is_empty());
    }
}
