//! How often one principal may alert a person.
//!
//! A generic cell rate algorithm: each principal has a theoretical arrival time (`tat`). An alert
//! is allowed while `tat` is less than one window ahead of now; each allowed alert pushes `tat` on
//! by one interval (`window / alerts`). So a principal gets a burst of `alerts` and then one alert
//! per interval, and a principal whose `tat` has passed is idle and can be forgotten.

use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::time::Instant;

/// At most `alerts` new alerts per `window` for each principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AlertRate {
    pub(crate) alerts: u32,
    pub(crate) window: Duration,
}

pub(crate) struct RateLimiter {
    interval: Duration,
    /// How far ahead of now a principal's `tat` may run: one window less one interval.
    tolerance: Duration,
    tat: FxHashMap<Arc<str>, Instant>,
    /// The map's size after the last sweep of idle principals; the next sweep waits until it
    /// doubles, so sweeping costs O(1) per alert.
    swept_at: usize,
}

impl RateLimiter {
    pub(crate) fn new(rate: AlertRate) -> Self {
        let interval = rate.window / rate.alerts;
        RateLimiter {
            interval,
            tolerance: rate.window.saturating_sub(interval),
            tat: FxHashMap::default(),
            swept_at: 0,
        }
    }

    /// Takes one alert from `principal`'s allowance; `false` if none is left.
    pub(crate) fn take(&mut self, principal: &Arc<str>, now: Instant) -> bool {
        let tat = self.tat.get(principal).map_or(now, |&tat| tat.max(now));
        if tat > now + self.tolerance {
            return false;
        }
        self.tat.insert(principal.clone(), tat + self.interval);
        if self.tat.len() > 1024.max(2 * self.swept_at) {
            self.tat.retain(|_, tat| *tat > now);
            self.swept_at = self.tat.len();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let mut limiter = RateLimiter::new(AlertRate {
            alerts: 3,
            window: Duration::from_secs(60),
        });
        let agent: Arc<str> = "agent".into();
        let other: Arc<str> = "other".into();
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.take(&agent, t0)));
        assert!(!limiter.take(&agent, t0), "the burst is spent");
        assert!(limiter.take(&other, t0), "principals are limited apart");
        assert!(!limiter.take(&agent, t0 + Duration::from_secs(19)));
        assert!(limiter.take(&agent, t0 + Duration::from_secs(20)));
        assert!(!limiter.take(&agent, t0 + Duration::from_secs(20)));
        assert!((0..3).all(|_| limiter.take(&agent, t0 + Duration::from_secs(200))));
    }

    #[test]
    fn idle_principals_are_forgotten() {
        let mut limiter = RateLimiter::new(AlertRate {
            alerts: 1,
            window: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        for n in 0..5000 {
            let principal: Arc<str> = format!("p{n}").into();
            assert!(limiter.take(&principal, t0 + Duration::from_secs(n)));
        }
        assert!(limiter.tat.len() <= 2048, "{}", limiter.tat.len());
    }
}
