//! Restart back-off with the kubelet's numbers: a container that failed may restart at
//! once the first time, then waits 10 s, doubling up to 5 minutes, with a little
//! jitter; a container that ran for 10 minutes has its back-off forgotten. The same
//! schedule paces image pull retries (ImagePullBackOff).

use std::time::{Duration, Instant};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// Running this long without failing resets the back-off.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// One container's (or one image's) back-off state.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// The current delay; `None` before the first failure.
    delay: Option<Duration>,
    /// Until when a restart must wait.
    until: Option<Instant>,
}

impl Backoff {
    /// Records a failure at `now` (the container finished, or the pull failed). The
    /// first failure allows an immediate retry; later ones wait 10 s, 20 s, ... 5 min.
    /// `ran_for` resets the schedule when the container ran long enough.
    pub fn failed(&mut self, now: Instant, ran_for: Option<Duration>) {
        if ran_for.is_some_and(|d| d >= RESET_AFTER) {
            self.delay = None;
        }
        match self.delay {
            None => {
                self.delay = Some(Duration::ZERO);
                self.until = None;
            }
            Some(d) => {
                let next = if d.is_zero() {
                    INITIAL
                } else {
                    (d * 2).min(MAX)
                };
                self.delay = Some(next);
                self.until = Some(now + next + jitter(next));
            }
        }
    }

    /// When a restart may happen (`None`: now).
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Whether a restart must still wait at `now`.
    pub fn waiting(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| u > now)
    }

    /// The current delay, for the CrashLoopBackOff message.
    pub fn delay(&self) -> Duration {
        self.delay.unwrap_or_default()
    }

    /// Forget everything (e.g. a successful pull).
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// Up to 1 % of the delay, so many containers failing together spread out a little.
fn jitter(d: Duration) -> Duration {
    let [b] = crate::api::meta::random_bytes::<1>();
    d / 100 * u32::from(b) / 255
}

/// Upstream's wording of the waiting message: `back-off 20s restarting failed
/// container=web pod=web_default(<uid>)`.
pub fn crash_loop_message(
    delay: Duration,
    container: &str,
    pod: &str,
    ns: &str,
    uid: &str,
) -> String {
    format!(
        "back-off {} restarting failed container={container} pod={pod}_{ns}({uid})",
        format_duration(delay)
    )
}

/// Go's `time.Duration` string for whole seconds and minutes: `10s`, `1m20s`, `5m0s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_doubles_to_five_minutes() {
        let t = Instant::now();
        let mut b = Backoff::default();
        b.failed(t, Some(Duration::from_secs(1)));
        assert!(!b.waiting(t), "first restart is immediate");
        let mut seen = Vec::new();
        for _ in 0..7 {
            b.failed(t, Some(Duration::from_secs(1)));
            assert!(b.waiting(t));
            seen.push(b.delay().as_secs());
            let until = b.until().expect("until");
            assert!(until >= t + b.delay() && until <= t + b.delay() + b.delay() / 100);
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn long_run_resets() {
        let t = Instant::now();
        let mut b = Backoff::default();
        for _ in 0..4 {
            b.failed(t, None);
        }
        assert_eq!(b.delay(), Duration::from_secs(40));
        b.failed(t, Some(RESET_AFTER));
        assert!(!b.waiting(t));
        b.failed(t, None);
        assert_eq!(b.delay(), INITIAL);
    }

    #[test]
    fn messages_match_upstream() {
        assert_eq!(format_duration(Duration::from_secs(40)), "40s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(
            crash_loop_message(Duration::from_secs(10), "c", "p", "default", "u"),
            "back-off 10s restarting failed container=c pod=p_default(u)"
        );
    }
}
