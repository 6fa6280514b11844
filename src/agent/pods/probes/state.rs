//! The prober's bookkeeping, free of I/O: a probe's timing with upstream's defaults
//! (period 10 s, timeout 1 s, thresholds 1 and 3), and the threshold state machine of
//! one probe on one container run (the kubelet's worker: a result changes only after
//! `successThreshold` consecutive successes or `failureThreshold` consecutive failures).

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

/// Which of a container's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    /// The name upstream uses in events ("Liveness probe failed: ...").
    pub fn label(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }

    /// The lowercase form in "Container web failed liveness probe, will be restarted".
    pub fn lower(self) -> &'static str {
        match self {
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
            Kind::Startup => "startup",
        }
    }
}

/// When and how often a probe runs, and what it takes to change its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The probe-level terminationGracePeriodSeconds (liveness and startup kills).
    pub termination_grace: Option<Duration>,
}

impl Timing {
    /// The timing of `probe`, with upstream's defaults for unset or invalid fields.
    pub fn of(probe: &Probe, kind: Kind) -> Timing {
        let secs = |v: Option<i32>, default: u64, min: u64| {
            Duration::from_secs(v.map_or(default, |s| (s.max(0) as u64).max(min)))
        };
        let count = |v: Option<i32>, default: u32| v.map_or(default, |n| n.max(1) as u32);
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            // Validation requires 1 for liveness and startup; be as strict here.
            success_threshold: match kind {
                Kind::Readiness => count(probe.success_threshold, 1),
                _ => 1,
            },
            failure_threshold: count(probe.failure_threshold, 3),
            termination_grace: probe
                .termination_grace_period_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64)),
        }
    }
}

/// One probe's result on one container run, with the consecutive-run counting that
/// applies the thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    /// The effective result (`None`: not known yet).
    result: Option<bool>,
    /// The last raw result and how many times in a row it came.
    last: Option<bool>,
    run: u32,
}

impl Tracker {
    /// The state before the first probe: readiness starts failed (a container is not
    /// ready until proven), liveness starts successful (alive until proven dead), and
    /// startup is unknown.
    pub fn new(kind: Kind) -> Tracker {
        Tracker {
            result: match kind {
                Kind::Readiness => Some(false),
                Kind::Liveness => Some(true),
                Kind::Startup => None,
            },
            last: None,
            run: 0,
        }
    }

    /// The effective result.
    pub fn result(&self) -> Option<bool> {
        self.result
    }

    /// Feeds one probe outcome; returns whether the effective result changed.
    pub fn observe(&mut self, success: bool, timing: &Timing) -> bool {
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let needed = if success {
            timing.success_threshold
        } else {
            timing.failure_threshold
        };
        if self.run < needed {
            return false;
        }
        let changed = self.result != Some(success);
        self.result = Some(success);
        if !success {
            // A failed liveness or startup probe kills the container; a new count
            // starts with the next run (and readiness keeps counting from zero too).
            self.run = 0;
            self.last = None;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
            termination_grace: None,
        }
    }

    #[test]
    fn initial_results_follow_the_kind() {
        assert_eq!(Tracker::new(Kind::Readiness).result(), Some(false));
        assert_eq!(Tracker::new(Kind::Liveness).result(), Some(true));
        assert_eq!(Tracker::new(Kind::Startup).result(), None);
    }

    #[test]
    fn failure_threshold_needs_consecutive_failures() {
        let t = timing(1, 3);
        let mut l = Tracker::new(Kind::Liveness);
        assert!(!l.observe(false, &t));
        assert!(!l.observe(false, &t));
        // A success in between starts the count again.
        assert!(!l.observe(true, &t));
        assert!(!l.observe(false, &t));
        assert!(!l.observe(false, &t));
        assert_eq!(l.result(), Some(true));
        assert!(l.observe(false, &t));
        assert_eq!(l.result(), Some(false));
    }

    #[test]
    fn success_threshold_applies_to_readiness() {
        let t = timing(2, 1);
        let mut r = Tracker::new(Kind::Readiness);
        assert!(!r.observe(true, &t));
        assert_eq!(r.result(), Some(false));
        assert!(r.observe(true, &t));
        assert_eq!(r.result(), Some(true));
        // One failure (threshold 1) flips it back; then two successes again.
        assert!(r.observe(false, &t));
        assert!(!r.observe(true, &t));
        assert!(r.observe(true, &t));
        // Further successes change nothing.
        assert!(!r.observe(true, &t));
    }

    #[test]
    fn startup_becomes_known_on_first_success() {
        let t = timing(1, 30);
        let mut s = Tracker::new(Kind::Startup);
        for _ in 0..29 {
            assert!(!s.observe(false, &t));
        }
        assert_eq!(s.result(), None);
        assert!(s.observe(true, &t));
        assert_eq!(s.result(), Some(true));
    }

    #[test]
    fn defaults_and_clamping_match_upstream() {
        let p = Probe::default();
        let t = Timing::of(&p, Kind::Liveness);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
        let p = Probe {
            success_threshold: Some(3),
            period_seconds: Some(0),
            termination_grace_period_seconds: Some(4),
            ..Probe::default()
        };
        assert_eq!(Timing::of(&p, Kind::Liveness).success_threshold, 1);
        let r = Timing::of(&p, Kind::Readiness);
        assert_eq!(r.success_threshold, 3);
        assert_eq!(r.period, Duration::from_secs(1));
        assert_eq!(r.termination_grace, Some(Duration::from_secs(4)));
    }
}
