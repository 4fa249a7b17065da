//! How long a ban lasts: `bantime`, and Fail2Ban's `bantime.increment` for
//! repeat offenders.
//!
//! With `n` earlier bans of the address (in this jail, or in every jail
//! with `bantime.overalljails`), the n-th repeat ban lasts
//! `bantime * factor * multipliers[min(n, len-1)]` when `bantime.multipliers`
//! is set, else `max(bantime, bantime * 2^min(n, 20) * factor)`; then it is
//! capped at `bantime.maxtime` and up to `bantime.rndtime` random seconds
//! are added. The first ban (n = 0) always lasts `bantime`. A negative
//! `bantime` bans forever and is never incremented.

use crate::config::jail::Increment;

#[derive(Debug, Clone)]
pub struct BanPolicy {
    /// Seconds; negative is permanent.
    pub bantime: f64,
    pub increment: Option<Increment>,
}

impl BanPolicy {
    pub fn overalljails(&self) -> bool {
        self.increment.as_ref().is_some_and(|i| i.overalljails)
    }

    /// Ban length in seconds for an address banned `prior` times before;
    /// `None` for a permanent ban.
    pub fn bantime(&self, prior: u32) -> Option<f64> {
        if self.bantime < 0.0 {
            return None;
        }
        let base = self.bantime;
        let Some(inc) = &self.increment else {
            return Some(base);
        };
        if prior == 0 {
            return Some(base);
        }
        let mut t = if inc.multipliers.is_empty() {
            let doubling = f64::from(1u32 << prior.min(20));
            (base * doubling * inc.factor).max(base)
        } else {
            let i = (prior as usize).min(inc.multipliers.len() - 1);
            base * inc.factor * inc.multipliers[i]
        };
        if let Some(max) = inc.maxtime {
            t = t.min(max);
        }
        if let Some(rnd) = inc.rndtime {
            t += random_unit() * rnd;
        }
        Some(t)
    }
}

/// A number in [0, 1) from the clock and a counter (no cryptographic use:
/// `rndtime` only spreads unban times).
fn random_unit() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ nanos;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(multipliers: &[f64]) -> Increment {
        Increment {
            factor: 1.0,
            multipliers: multipliers.to_vec(),
            maxtime: Some(5000.0),
            rndtime: None,
            overalljails: false,
        }
    }

    #[test]
    fn escalation() {
        let p = BanPolicy {
            bantime: 600.0,
            increment: None,
        };
        assert_eq!(p.bantime(3), Some(600.0));
        let p = BanPolicy {
            bantime: 600.0,
            increment: Some(inc(&[])),
        };
        assert_eq!(p.bantime(0), Some(600.0));
        assert_eq!(p.bantime(1), Some(1200.0));
        assert_eq!(p.bantime(2), Some(2400.0));
        assert_eq!(p.bantime(3), Some(4800.0));
        assert_eq!(p.bantime(4), Some(5000.0), "capped by maxtime");
        let p = BanPolicy {
            bantime: 100.0,
            increment: Some(inc(&[1.0, 5.0, 30.0])),
        };
        assert_eq!(p.bantime(1), Some(500.0));
        assert_eq!(p.bantime(7), Some(3000.0));
        let p = BanPolicy {
            bantime: -1.0,
            increment: Some(inc(&[])),
        };
        assert_eq!(p.bantime(5), None);
        let mut i = inc(&[]);
        i.rndtime = Some(10.0);
        let p = BanPolicy {
            bantime: 100.0,
            increment: Some(i),
        };
        let t = p.bantime(1).unwrap();
        assert!((200.0..210.0).contains(&t), "{t}");
    }
}
