//! Unit tests of the HPA arithmetic: the cases of upstream's replica calculator and
//! normalization that a user notices (scale up, tolerance, unready and missing pods,
//! stabilization, policies, clamps).

use super::*;
use crate::server::controllers::hpa_normalize::*;
use serde_json::json;

const NOW: i64 = 1_000_000_000;
const MIN: i64 = 60_000;

/// A running pod, ready for 10 minutes, requesting `request` milli-CPU.
fn pod(name: &str, request: i64) -> PodInfo {
    PodInfo {
        name: name.into(),
        ignored: false,
        pending: false,
        ready: Some((true, NOW - 10 * MIN)),
        start_ms: Some(NOW - 10 * MIN),
        request: Ok(request),
    }
}

fn samples(values: &[(&str, i64)]) -> BTreeMap<String, Sample> {
    values
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                Sample {
                    value: *v,
                    timestamp_ms: NOW - 1000,
                    window_ms: 15_000,
                },
            )
        })
        .collect()
}

fn cpu(current: i64, target: i64, pods: &[PodInfo], s: &[(&str, i64)]) -> Proposal {
    resource_replicas(
        "cpu",
        current,
        Target::Utilization(target),
        pods,
        &samples(s),
        NOW,
    )
    .expect("proposal")
}

#[test]
fn busy_pod_scales_up_by_ratio_rounded_up() {
    // 100m request, 180m used: 180% of request against a 50% target → ceil(3.6) = 4.
    let p = cpu(1, 50, &[pod("a", 100)], &[("a", 180)]);
    assert_eq!(p.replicas, 4);
    assert_eq!(p.utilization, Some(180));
    assert_eq!(p.average, 180);
}

#[test]
fn ratio_within_tolerance_keeps_current() {
    let p = cpu(
        2,
        50,
        &[pod("a", 100), pod("b", 100)],
        &[("a", 54), ("b", 54)],
    );
    assert_eq!(p.replicas, 2);
    assert_eq!(p.utilization, Some(54));
    let p = cpu(
        2,
        50,
        &[pod("a", 100), pod("b", 100)],
        &[("a", 56), ("b", 56)],
    );
    assert_eq!(p.replicas, 3, "1.12 is outside the tolerance");
}

#[test]
fn idle_pods_scale_down() {
    let p = cpu(
        3,
        50,
        &[pod("a", 100), pod("b", 100), pod("c", 100)],
        &[("a", 1), ("b", 2), ("c", 0)],
    );
    assert_eq!(p.replicas, 1);
    assert_eq!(p.utilization, Some(1));
}

#[test]
fn unready_pods_count_as_zero_on_scale_up() {
    let mut young = pod("b", 100);
    young.ready = Some((false, NOW - 5000));
    young.start_ms = Some(NOW - 20_000);
    // a: 200% alone would ask for 4; with b counted as 0 → 100% of 2 pods vs 50% → 4.
    let p = cpu(
        2,
        50,
        &[pod("a", 100), young.clone()],
        &[("a", 200), ("b", 200)],
    );
    assert_eq!(p.replicas, 4);
    assert_eq!(p.utilization, Some(200), "unready samples are not reported");
    // A pending pod is unready too.
    let mut pending = pod("c", 100);
    pending.pending = true;
    let p = cpu(2, 50, &[pod("a", 100), pending], &[("a", 60)]);
    // a alone: 60% (ratio 1.2, up); with c at 0%: 30% (ratio 0.6, down): the direction
    // flips, so the count stays.
    assert_eq!(p.replicas, 2);
}

#[test]
fn young_pod_sample_counts_once_a_window_after_ready() {
    let mut p = pod("a", 100);
    p.start_ms = Some(NOW - 60_000);
    p.ready = Some((true, NOW - 10_000));
    // The sample ends 1 s ago with a 15 s window: it started before readiness.
    let r = resource_replicas(
        "cpu",
        1,
        Target::Utilization(50),
        &[p.clone()],
        &samples(&[("a", 200)]),
        NOW,
    );
    assert_eq!(r, Err(MetricError::AllUnready));
    p.ready = Some((true, NOW - 30_000));
    assert_eq!(cpu(1, 50, &[p], &[("a", 200)]).replicas, 4);
}

#[test]
fn missing_metrics_are_conservative() {
    // Scale-down: the pod without metrics counts as 100% of its request, which flips
    // the direction → stay.
    let p = cpu(2, 50, &[pod("a", 100), pod("b", 100)], &[("a", 10)]);
    assert_eq!(p.replicas, 2);
    // Scale-up: it counts as 0%: (300+0)/200 = 150% vs 50% → ceil(3×2) = 6.
    let p = cpu(2, 50, &[pod("a", 100), pod("b", 100)], &[("a", 300)]);
    assert_eq!(p.replicas, 6);
}

#[test]
fn errors_say_what_is_missing() {
    let none = resource_replicas(
        "cpu",
        1,
        Target::Utilization(50),
        &[pod("a", 100)],
        &BTreeMap::new(),
        NOW,
    );
    assert_eq!(
        none.unwrap_err().to_string(),
        "unable to get metrics for resource cpu: no metrics returned from resource metrics API"
    );
    let mut p = pod("a", 0);
    p.request = Err("main".into());
    let r = resource_replicas(
        "cpu",
        1,
        Target::Utilization(50),
        &[p],
        &samples(&[("a", 5)]),
        NOW,
    );
    assert_eq!(
        r.unwrap_err().to_string(),
        "missing request for cpu in container main of Pod a"
    );
    let r = resource_replicas(
        "cpu",
        1,
        Target::Utilization(50),
        &[],
        &samples(&[("a", 5)]),
        NOW,
    );
    assert_eq!(r, Err(MetricError::NoPods));
}

#[test]
fn average_value_targets_ignore_requests() {
    let mut p = pod("a", 0);
    p.request = Err("main".into());
    // 300 MB used vs 100 MB target per pod (milli-units).
    let mb = 1_000_000_000i64;
    let r = resource_replicas(
        "memory",
        1,
        Target::AverageValue(100 * mb),
        &[p],
        &samples(&[("a", 300 * mb)]),
        NOW,
    )
    .expect("proposal");
    assert_eq!(r.replicas, 3);
    assert_eq!(r.utilization, None);
    assert_eq!(format_milli(r.average), "300M");
}

#[test]
fn pod_info_reads_requests_readiness_and_phase() {
    let p = json!({
        "metadata": {"name": "web-1"},
        "spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "b", "resources": {"requests": {"cpu": "0.25"}}},
        ]},
        "status": {"phase": "Running", "startTime": "2024-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:10Z"}]},
    });
    let i = pod_info(&p, "cpu");
    assert_eq!(i.request, Ok(350));
    assert_eq!(i.ready.map(|r| r.0), Some(true));
    assert!(!i.ignored && !i.pending);
    assert_eq!(pod_info(&p, "memory").request, Err("a".to_string()));
}

#[test]
fn quantities_print_like_upstream() {
    assert_eq!(format_milli(250), "250m");
    assert_eq!(format_milli(1000), "1");
    assert_eq!(format_milli(52_428_800_000), "52428800");
    assert_eq!(format_milli(2_000_000), "2k");
    assert_eq!(format_milli(0), "0");
    assert_eq!(milli(&json!("100m")), Some(100));
    assert_eq!(milli(&json!("64Mi")), Some(67_108_864_000));
}

#[test]
fn without_behavior_scale_down_waits_for_the_window() {
    let mut h = History::default();
    let n = normalize(&mut h, 1, 3, 1, 5, NOW);
    assert_eq!(n.replicas, 3);
    assert!(!n.limited.0);
    // Load drops a minute later: the 3 of a minute ago still holds.
    let n = normalize(&mut h, 3, 1, 1, 5, NOW + MIN);
    assert_eq!(n.replicas, 3);
    assert_eq!(n.able, Why::DownStabilized);
    // Six minutes after the high recommendation it is forgotten.
    let n = normalize(&mut h, 3, 1, 1, 5, NOW + 6 * MIN);
    assert_eq!(n.replicas, 1);
}

#[test]
fn without_behavior_scale_up_is_limited_and_clamped() {
    let mut h = History::default();
    let n = normalize(&mut h, 1, 10, 1, 20, NOW);
    assert_eq!(n.replicas, 4);
    assert_eq!(n.limited, (true, Why::UpLimit));
    let mut h = History::default();
    let n = normalize(&mut h, 2, 10, 1, 3, NOW);
    assert_eq!(n.replicas, 3);
    assert_eq!(n.limited.1, Why::TooMany);
    let mut h = History::default();
    let n = normalize(&mut h, 2, 1, 2, 3, NOW);
    assert_eq!(n.replicas, 2);
    assert_eq!(n.limited.1, Why::TooFew);
}

fn behavior(v: serde_json::Value) -> Behavior {
    behavior_of(&json!({ "behavior": v })).expect("behavior")
}

#[test]
fn behavior_defaults_match_upstream() {
    assert_eq!(behavior_of(&json!({})), None);
    let b = behavior(json!({}));
    assert_eq!(b.up.stabilization_secs, 0);
    assert_eq!(b.down.stabilization_secs, 300);
    assert_eq!(b.up.policies.len(), 2);
    assert_eq!(b.up.select, Select::Max);
    assert_eq!(
        b.down.policies,
        vec![Policy {
            percent: true,
            value: 100,
            period_secs: 15
        }]
    );
}

#[test]
fn zero_down_window_scales_down_at_once() {
    let b = behavior(json!({"scaleDown": {"stabilizationWindowSeconds": 0}}));
    let mut h = History::default();
    let n = normalize_with_behavior(&mut h, &b, 1, 3, 1, 3, NOW);
    assert_eq!(n.replicas, 3);
    h.record_scale(Some(&b), 1, 3, NOW);
    let n = normalize_with_behavior(&mut h, &b, 3, 1, 1, 3, NOW + 20_000);
    assert_eq!(n.replicas, 1);
    assert_eq!(n.able, Why::Ready);
}

#[test]
fn default_down_window_holds_the_highest_recommendation() {
    let b = behavior(json!({}));
    let mut h = History::default();
    normalize_with_behavior(&mut h, &b, 3, 3, 1, 5, NOW);
    let n = normalize_with_behavior(&mut h, &b, 3, 1, 1, 5, NOW + MIN);
    assert_eq!(n.replicas, 3);
    assert_eq!(n.able, Why::DownStabilized);
}

#[test]
fn policies_limit_the_rate_and_select_policy_picks() {
    let b = behavior(json!({"scaleUp": {"policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 60},
        {"type": "Percent", "value": 50, "periodSeconds": 60}]}}));
    let mut h = History::default();
    // Max of +1 and +50% (ceil(4×1.5) = 6) → 6.
    let n = normalize_with_behavior(&mut h, &b, 4, 10, 1, 20, NOW);
    assert_eq!(n.replicas, 6);
    assert_eq!(n.limited, (true, Why::UpLimit));
    h.record_scale(Some(&b), 4, 6, NOW);
    // Within the period the start is still 4: nothing more is allowed.
    let n = normalize_with_behavior(&mut h, &b, 6, 10, 1, 20, NOW + 30_000);
    assert_eq!(n.replicas, 6);
    let min = behavior(json!({"scaleUp": {"selectPolicy": "Min", "policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 60},
        {"type": "Percent", "value": 50, "periodSeconds": 60}]}}));
    let n = normalize_with_behavior(&mut History::default(), &min, 4, 10, 1, 20, NOW);
    assert_eq!(n.replicas, 5);
    let off = behavior(
        json!({"scaleDown": {"selectPolicy": "Disabled", "stabilizationWindowSeconds": 0}}),
    );
    let n = normalize_with_behavior(&mut History::default(), &off, 4, 1, 1, 20, NOW);
    assert_eq!(n.replicas, 4);
    assert_eq!(n.limited.1, Why::DownLimit);
}

#[test]
fn condition_texts_are_upstreams() {
    assert_eq!(
        Why::UpLimit.text(),
        (
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate"
        )
    );
    assert_eq!(Why::Within.text().0, "DesiredWithinRange");
}

#[test]
fn behavior_clamps_to_min_and_max() {
    let b = behavior(json!({"scaleDown": {"stabilizationWindowSeconds": 0}}));
    let n = normalize_with_behavior(&mut History::default(), &b, 2, 9, 1, 3, NOW);
    assert_eq!(n.replicas, 3);
    assert_eq!(n.limited, (true, Why::TooMany));
    let n = normalize_with_behavior(&mut History::default(), &b, 3, 1, 2, 3, NOW);
    assert_eq!(n.replicas, 2);
    assert_eq!(n.limited.1, Why::TooFew);
    let n = normalize_with_behavior(&mut History::default(), &b, 2, 2, 1, 3, NOW);
    assert_eq!(n.limited, (false, Why::Within));
}
