//! Normalization of an HPA's replica proposal, as upstream's: without `behavior`
//! ([`normalize`]) the highest recommendation of the last 5 minutes, the scale-up limit
//! max(2×current, 4) and the min/max clamps; with one ([`normalize_with_behavior`])
//! the stabilization windows of both directions, the Pods/Percent policies combined by
//! selectPolicy, then the clamps; each with upstream's AbleToScale / ScalingLimited
//! reasons ([`Why`]). [`History`] is the per-HPA memory of recent recommendations and
//! scale events this needs. Times are milliseconds since the epoch.

use serde_json::Value;

/// The downscale stabilization window without `behavior` and the default of
/// `behavior.scaleDown.stabilizationWindowSeconds` (`--horizontal-pod-autoscaler-downscale-stabilization`).
pub const DOWNSCALE_STABILIZATION_SECS: i64 = 300;

/// How a scaling direction's policies combine (`selectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the most change (default).
    Max,
    /// The policy allowing the least change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One scaling policy: `value` pods or percent per `period_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Percent (true) or Pods.
    pub percent: bool,
    /// Pods or percent.
    pub value: i64,
    /// The period the change is measured over.
    pub period_secs: i64,
}

/// The rules of one direction, with upstream's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// stabilizationWindowSeconds.
    pub stabilization_secs: i64,
    /// selectPolicy.
    pub select: Select,
    /// policies.
    pub policies: Vec<Policy>,
}

/// `spec.behavior` with defaults (upstream's GenerateHPAScaleUpRules/ScaleDownRules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    /// scaleUp.
    pub up: Rules,
    /// scaleDown.
    pub down: Rules,
}

fn rules(v: &Value, default_window: i64, default_policies: Vec<Policy>) -> Rules {
    let select = match v["selectPolicy"].as_str() {
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        _ => Select::Max,
    };
    let policies: Vec<Policy> = v["policies"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| Policy {
                    percent: p["type"] == "Percent",
                    value: p["value"].as_i64().unwrap_or(0),
                    period_secs: p["periodSeconds"].as_i64().unwrap_or(15),
                })
                .collect()
        })
        .filter(|ps: &Vec<Policy>| !ps.is_empty())
        .unwrap_or(default_policies);
    Rules {
        stabilization_secs: v["stabilizationWindowSeconds"]
            .as_i64()
            .unwrap_or(default_window),
        select,
        policies,
    }
}

/// The behavior of an HPA spec, None when `spec.behavior` is unset (upstream then uses
/// the older normalization of [`normalize`]).
pub fn behavior_of(spec: &Value) -> Option<Behavior> {
    let b = spec.get("behavior").filter(|b| b.is_object())?;
    let per = |percent, value| Policy {
        percent,
        value,
        period_secs: 15,
    };
    Some(Behavior {
        up: rules(&b["scaleUp"], 0, vec![per(false, 4), per(true, 100)]),
        down: rules(
            &b["scaleDown"],
            DOWNSCALE_STABILIZATION_SECS,
            vec![per(true, 100)],
        ),
    })
}

/// What this controller remembers of one HPA between syncs: recent recommendations
/// (for stabilization) and recent scale changes (for the rate policies).
#[derive(Debug, Clone, Default)]
pub struct History {
    recommendations: Vec<(i64, i64)>,
    up_events: Vec<(i64, i64)>,
    down_events: Vec<(i64, i64)>,
}

impl History {
    /// Records a rescale from `from` to `to` at `now_ms`, dropping events older than
    /// the longest policy period (they can no longer limit anything).
    pub fn record_scale(&mut self, behavior: Option<&Behavior>, from: i64, to: i64, now_ms: i64) {
        let Some(b) = behavior else { return };
        let (events, rules) = if to > from {
            (&mut self.up_events, &b.up)
        } else {
            (&mut self.down_events, &b.down)
        };
        let longest = rules
            .policies
            .iter()
            .map(|p| p.period_secs)
            .max()
            .unwrap_or(0);
        events.retain(|(t, _)| *t > now_ms - longest * 1000);
        events.push((now_ms, (to - from).abs()));
    }
}

/// A reason of the AbleToScale or ScalingLimited condition set by normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// ReadyForNewScale.
    Ready,
    /// ScaleDownStabilized.
    DownStabilized,
    /// ScaleUpStabilized.
    UpStabilized,
    /// DesiredWithinRange.
    Within,
    /// ScaleUpLimit.
    UpLimit,
    /// ScaleDownLimit.
    DownLimit,
    /// TooManyReplicas.
    TooMany,
    /// TooFewReplicas.
    TooFew,
}

impl Why {
    /// The condition's reason and message, as upstream words them.
    pub fn text(self) -> (&'static str, &'static str) {
        match self {
            Why::Ready => ("ReadyForNewScale", "recommended size matches current size"),
            Why::DownStabilized => ("ScaleDownStabilized", "recent recommendations were higher than current one, applying the highest recent recommendation"),
            Why::UpStabilized => ("ScaleUpStabilized", "recent recommendations were lower than current one, applying the lowest recent recommendation"),
            Why::Within => ("DesiredWithinRange", "the desired count is within the acceptable range"),
            Why::UpLimit => ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate"),
            Why::DownLimit => ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate"),
            Why::TooMany => ("TooManyReplicas", "the desired replica count is more than the maximum replica count"),
            Why::TooFew => ("TooFewReplicas", "the desired replica count is less than the minimum replica count"),
        }
    }
}

/// The outcome of normalization and the two conditions it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The replicas to scale to.
    pub replicas: i64,
    /// AbleToScale (status True) reason.
    pub able: Why,
    /// ScalingLimited: status and reason.
    pub limited: (bool, Why),
}

fn limited(replicas: i64, wanted: i64, able: Why, why: Why) -> Normalized {
    Normalized {
        replicas,
        able,
        limited: (replicas != wanted, why),
    }
}

/// Normalization without `behavior` (upstream's normalizeDesiredReplicas): the highest
/// recommendation of the last 5 minutes, then at most max(2×current, 4) and the
/// min/max clamps.
pub fn normalize(
    history: &mut History,
    current: i64,
    proposed: i64,
    min: i64,
    max: i64,
    now_ms: i64,
) -> Normalized {
    let cutoff = now_ms - DOWNSCALE_STABILIZATION_SECS * 1000;
    let mut stabilized = proposed;
    let mut old = None;
    for (i, (t, r)) in history.recommendations.iter().enumerate() {
        if *t < cutoff {
            old = Some(i);
        } else if *r > stabilized {
            stabilized = *r;
        }
    }
    match old {
        Some(i) => history.recommendations[i] = (now_ms, proposed),
        None => history.recommendations.push((now_ms, proposed)),
    }
    let able = if stabilized != proposed {
        Why::DownStabilized
    } else {
        Why::Ready
    };
    let up_limit = (2 * current).max(4);
    let (max_allowed, over) = if max > up_limit {
        (up_limit, Why::UpLimit)
    } else {
        (max, Why::TooMany)
    };
    let min_allowed = min.max(1);
    let (replicas, why) = if stabilized < min_allowed {
        (min_allowed, Why::TooFew)
    } else if stabilized > max_allowed {
        (max_allowed, over)
    } else {
        (stabilized, Why::Within)
    };
    limited(replicas, stabilized, able, why)
}

/// Replicas added (or removed) within the last `period_secs`.
fn change_in_period(events: &[(i64, i64)], period_secs: i64, now_ms: i64) -> i64 {
    let cutoff = now_ms - period_secs * 1000;
    events
        .iter()
        .filter(|(t, _)| *t > cutoff)
        .map(|(_, c)| c)
        .sum()
}

fn scale_limit(history: &History, current: i64, rules: &Rules, up: bool, now_ms: i64) -> i64 {
    // For scaling down the least change is the highest count, so Min takes the max.
    let take_max = matches!(
        (rules.select, up),
        (Select::Max, true) | (Select::Min, false)
    );
    let mut result = if take_max { i64::MIN } else { i64::MAX };
    for p in &rules.policies {
        let added = change_in_period(&history.up_events, p.period_secs, now_ms);
        let removed = change_in_period(&history.down_events, p.period_secs, now_ms);
        let start = current - added + removed;
        let proposed = match (up, p.percent) {
            (true, false) => start + p.value,
            (true, true) => (start as f64 * (1.0 + p.value as f64 / 100.0)).ceil() as i64,
            (false, false) => start - p.value,
            (false, true) => (start as f64 * (1.0 - p.value as f64 / 100.0)) as i64,
        };
        result = if take_max {
            result.max(proposed)
        } else {
            result.min(proposed)
        };
    }
    result
}

/// Normalization with `behavior` (upstream's normalizeDesiredReplicasWithBehaviors):
/// the stabilization windows of both directions, then the rate policies and clamps.
pub fn normalize_with_behavior(
    history: &mut History,
    behavior: &Behavior,
    current: i64,
    proposed: i64,
    min: i64,
    max: i64,
    now_ms: i64,
) -> Normalized {
    let up_cutoff = now_ms - behavior.up.stabilization_secs * 1000;
    let down_cutoff = now_ms - behavior.down.stabilization_secs * 1000;
    let (mut up_rec, mut down_rec) = (proposed, proposed);
    let mut old = None;
    for (i, (t, r)) in history.recommendations.iter().enumerate() {
        if *t > up_cutoff {
            up_rec = up_rec.min(*r);
        }
        if *t > down_cutoff {
            down_rec = down_rec.max(*r);
        }
        if *t < up_cutoff && *t < down_cutoff {
            old = Some(i);
        }
    }
    let stabilized = current.max(up_rec).min(down_rec);
    match old {
        Some(i) => history.recommendations[i] = (now_ms, proposed),
        None => history.recommendations.push((now_ms, proposed)),
    }
    let able = if stabilized == proposed {
        Why::Ready
    } else if proposed >= current {
        Why::UpStabilized
    } else {
        Why::DownStabilized
    };
    let (replicas, why) = if stabilized > current {
        let mut limit = match behavior.up.select {
            Select::Disabled => current,
            _ => scale_limit(history, current, &behavior.up, true, now_ms),
        };
        limit = limit.max(current);
        let (allowed, why) = if max > limit {
            (limit, Why::UpLimit)
        } else {
            (max, Why::TooMany)
        };
        if stabilized > allowed {
            (allowed, why)
        } else {
            (stabilized, Why::Within)
        }
    } else if stabilized < current {
        let mut limit = match behavior.down.select {
            Select::Disabled => current,
            _ => scale_limit(history, current, &behavior.down, false, now_ms),
        };
        limit = limit.min(current);
        let (allowed, why) = if min < limit {
            (limit, Why::DownLimit)
        } else {
            (min, Why::TooFew)
        };
        if stabilized < allowed {
            (allowed, why)
        } else {
            (stabilized, Why::Within)
        }
    } else {
        (stabilized, Why::Within)
    };
    limited(replicas, stabilized, able, why)
}
