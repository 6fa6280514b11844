//! Slows down guessing: each client address that keeps failing authentication on the join
//! endpoints waits longer before its next answer (exponential, capped). A success clears the
//! address. The table is small and bounded; the oldest entries go first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before answers are delayed.
const FREE_FAILURES: u32 = 3;
/// The first delay, doubled for each further failure.
const BASE_DELAY: Duration = Duration::from_millis(250);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Addresses tracked at most.
const MAX_ENTRIES: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// Per-address failure counts.
#[derive(Debug, Default)]
pub struct Limiter {
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl Limiter {
    /// How long to wait before answering `addr` at `now`.
    pub fn delay(&self, addr: IpAddr, now: Instant) -> Duration {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&addr) {
            Some(e) if now.saturating_duration_since(e.last) < FORGET_AFTER => {
                delay_for(e.failures)
            }
            _ => Duration::ZERO,
        }
    }

    /// Records a failed authentication from `addr`.
    pub fn failure(&self, addr: IpAddr, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&addr) {
            entries.retain(|_, e| now.saturating_duration_since(e.last) < FORGET_AFTER);
            if entries.len() >= MAX_ENTRIES {
                if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.last).map(|(a, _)| *a) {
                    entries.remove(&oldest);
                }
            }
        }
        let e = entries.entry(addr).or_insert(Entry {
            failures: 0,
            last: now,
        });
        if now.saturating_duration_since(e.last) >= FORGET_AFTER {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last = now;
    }

    /// Records a successful authentication from `addr`.
    pub fn success(&self, addr: IpAddr) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
    }
}

fn delay_for(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let shift = (failures - FREE_FAILURES).min(16);
    BASE_DELAY.saturating_mul(1 << shift).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_are_slowed_and_success_clears() {
        let l = Limiter::default();
        let a: IpAddr = "10.0.0.7".parse().unwrap();
        let b: IpAddr = "10.0.0.8".parse().unwrap();
        let t = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(l.delay(a, t), Duration::ZERO);
            l.failure(a, t);
        }
        assert_eq!(l.delay(a, t), BASE_DELAY);
        l.failure(a, t);
        assert_eq!(l.delay(a, t), BASE_DELAY * 2);
        for _ in 0..40 {
            l.failure(a, t);
        }
        assert_eq!(l.delay(a, t), MAX_DELAY);
        // Other addresses are not affected.
        assert_eq!(l.delay(b, t), Duration::ZERO);
        // Old failures are forgotten.
        assert_eq!(l.delay(a, t + FORGET_AFTER), Duration::ZERO);
        l.success(a);
        assert_eq!(l.delay(a, t), Duration::ZERO);
    }

    #[test]
    fn table_is_bounded() {
        let l = Limiter::default();
        let t = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            l.failure(
                IpAddr::from(i.to_be_bytes()),
                t + Duration::from_millis(i as u64),
            );
        }
        assert!(l.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
