//! Ranking of the nodes that passed the filters, with upstream's default plugins and
//! weights: least-allocated (1) and balanced resources (1), spreading the pods of one
//! owner (2, like the default PodTopologySpread on hostname), preferred node affinity
//! (2), preferred pod (anti-)affinity (2) and PreferNoSchedule taints (3). Each plugin
//! scores 0..=100 per node.

use super::cache::Cache;
use super::filter::domain;
use super::types::{tolerated, NodeInfo, PodInfo};

const MAX: i64 = 100;

fn least_allocated(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let part = |alloc: i64, used: i64| -> i64 {
        if alloc <= 0 {
            return 0;
        }
        let free = alloc - used;
        if free < 0 {
            0
        } else {
            free * MAX / alloc
        }
    };
    let cpu = part(
        n.allocatable.milli_cpu,
        n.nonzero_requested.milli_cpu + pod.nonzero.milli_cpu,
    );
    let mem = part(
        n.allocatable.memory,
        n.nonzero_requested.memory + pod.nonzero.memory,
    );
    (cpu + mem) / 2
}

fn balanced(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let frac = |alloc: i64, used: i64| -> f64 {
        if alloc <= 0 {
            1.0
        } else {
            (used as f64 / alloc as f64).min(1.0)
        }
    };
    let cpu = frac(
        n.allocatable.milli_cpu,
        n.requested.milli_cpu + pod.requests.milli_cpu,
    );
    let mem = frac(
        n.allocatable.memory,
        n.requested.memory + pod.requests.memory,
    );
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX as f64) as i64
}

/// Rescales raw scores to 0..=100 (`reverse`: fewer is better), like upstream's
/// DefaultNormalizeScore.
fn normalize(raw: &mut [i64], reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            raw.iter_mut().for_each(|s| *s = MAX);
        }
        return;
    }
    for s in raw.iter_mut() {
        *s = *s * MAX / max;
        if reverse {
            *s = MAX - *s;
        }
    }
}

/// Rescales possibly negative raw scores to 0..=100 (min-max), as InterPodAffinity does.
fn normalize_min_max(raw: &mut [i64]) {
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    if max == min {
        raw.iter_mut().for_each(|s| *s = 0);
        return;
    }
    for s in raw.iter_mut() {
        *s = (*s - min) * MAX / (max - min);
    }
}

/// Total weighted score of each feasible node, in input order.
pub fn score(pod: &PodInfo, nodes: &[&NodeInfo], cache: &Cache) -> Vec<i64> {
    let mut total: Vec<i64> = nodes
        .iter()
        .map(|n| least_allocated(pod, n) + balanced(pod, n))
        .collect();
    let mut add = |raw: Vec<i64>, weight: i64| {
        for (t, r) in total.iter_mut().zip(raw) {
            *t += r * weight;
        }
    };
    if let Some(owner) = &pod.owner {
        let mut raw: Vec<i64> = nodes
            .iter()
            .map(|n| n.owner_counts.get(owner).copied().unwrap_or(0) as i64)
            .collect();
        normalize(&mut raw, true);
        add(raw, 2);
    }
    if !pod.preferred_terms.is_empty() {
        let mut raw: Vec<i64> = nodes
            .iter()
            .map(|n| {
                pod.preferred_terms
                    .iter()
                    .filter(|(_, t)| t.matches(n))
                    .map(|(w, _)| *w)
                    .sum()
            })
            .collect();
        normalize(&mut raw, false);
        add(raw, 2);
    }
    if !pod.preferred_pod.is_empty() {
        let mut raw: Vec<i64> = nodes
            .iter()
            .map(|n| {
                pod.preferred_pod
                    .iter()
                    .map(|term| {
                        let matches: usize = domain(cache, n, &term.topology_key)
                            .iter()
                            .map(|d| d.pods.values().filter(|p| term.selects(p)).count())
                            .sum();
                        term.weight * matches as i64
                    })
                    .sum()
            })
            .collect();
        normalize_min_max(&mut raw);
        add(raw, 2);
    }
    if nodes
        .iter()
        .any(|n| n.taints.iter().any(|t| t.effect == "PreferNoSchedule"))
    {
        let mut raw: Vec<i64> = nodes
            .iter()
            .map(|n| {
                n.taints
                    .iter()
                    .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&pod.tolerations, t))
                    .count() as i64
            })
            .collect();
        normalize(&mut raw, true);
        add(raw, 3);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        let mut v = vec![0, 2, 4];
        normalize(&mut v, true);
        assert_eq!(v, vec![100, 50, 0]);
        let mut v = vec![-10, 0, 10];
        normalize_min_max(&mut v);
        assert_eq!(v, vec![0, 50, 100]);
    }
}
