//! Failed logins counted per client address, shared by every front end that takes a password
//! (imapd, popd, mshttpd), so a password-guessing client meets the same wall everywhere.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked before stale ones are swept, so a scan from many addresses cannot grow
/// the table without bound.
const SWEEP_AT: usize = 10_000;

/// Recent failed logins per address: at `max` failures within `window`, the address is
/// refused until the oldest of them ages out.
#[derive(Debug)]
pub struct AuthFailures {
    max: usize,
    window: Duration,
    recent: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl AuthFailures {
    /// Refuse an address after `max` failures (at least 1) within `window`.
    pub fn new(max: usize, window: Duration) -> AuthFailures {
        AuthFailures {
            max: max.max(1),
            window,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` has failed too often lately (check before verifying a password).
    pub fn locked_out(&self, ip: IpAddr) -> bool {
        self.locked_out_at(ip, Instant::now())
    }

    /// Counts one failed login from `ip`.
    pub fn record(&self, ip: IpAddr) {
        self.record_at(ip, Instant::now())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, VecDeque<Instant>>> {
        // The table holds only counters: one left by a panicking thread is still usable.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn locked_out_at(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.table();
        let Some(q) = map.get_mut(&ip) else {
            return false;
        };
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.window)
        {
            q.pop_front();
        }
        let n = q.len();
        if n == 0 {
            map.remove(&ip);
        }
        n >= self.max
    }

    fn record_at(&self, ip: IpAddr, now: Instant) {
        let mut map = self.table();
        if map.len() >= SWEEP_AT && !map.contains_key(&ip) {
            map.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) <= self.window)
            });
            // Still full of fresh entries (a scan from many addresses): forget one rather
            // than grow.
            if map.len() >= SWEEP_AT {
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        let q = map.entry(ip).or_default();
        q.push_back(now);
        while q.len() > self.max {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_at_the_limit_until_the_window_passes() {
        let f = AuthFailures::new(3, Duration::from_secs(600));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..2 {
            f.record_at(ip, t0 + Duration::from_secs(i));
        }
        assert!(!f.locked_out_at(ip, t0 + Duration::from_secs(3)));
        f.record_at(ip, t0 + Duration::from_secs(3));
        assert!(f.locked_out_at(ip, t0 + Duration::from_secs(4)));
        assert!(!f.locked_out_at(other, t0 + Duration::from_secs(4)));
        // The first failure ages out: two left, under the limit.
        assert!(!f.locked_out_at(ip, t0 + Duration::from_secs(601)));
    }

    #[test]
    fn the_table_stays_bounded_under_a_scan() {
        for window in [Duration::from_secs(1), Duration::from_secs(600)] {
            let f = AuthFailures::new(5, window);
            let t0 = Instant::now();
            for i in 0..30_000u32 {
                let ip = IpAddr::from(i.to_be_bytes());
                f.record_at(ip, t0 + Duration::from_millis(u64::from(i)));
            }
            assert!(f.table().len() <= SWEEP_AT, "{}", f.table().len());
        }
    }
}
