//! Preemption (upstream's DefaultPreemption post-filter), decided from memory: when a
//! pod fits nowhere, find the nodes where removing pods of lower priority makes it fit,
//! keep as many of those pods as possible (the most important first, those whose
//! PodDisruptionBudget would be violated before the others), and pick one node by
//! upstream's order: fewest budget violations, lowest highest-priority victim, lowest
//! sum of priorities, fewest victims, latest start among the most important victims.
//! The caller deletes the victims and nominates the node; see `super::run`.

use super::cache::Cache;
use super::filter::{filter, Diagnosis, Failure};
use super::types::{NodeInfo, PodInfo};
use crate::api::selector::LabelSelector;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// A node's failure when it has no pod of lower priority to evict.
const NO_VICTIMS: Failure = Failure {
    reason: "No preemption victims found for incoming pod",
    resolvable: false,
};
/// Upstream's summary for nodes preemption was not tried on.
const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Upstream's minCandidateNodesPercentage and minCandidateNodesAbsolute.
const MIN_CANDIDATE_PERCENT: usize = 10;
const MIN_CANDIDATE_ABSOLUTE: usize = 100;

/// A PodDisruptionBudget as preemption reads it.
#[derive(Clone, Debug)]
pub struct Budget {
    namespace: String,
    selector: Option<LabelSelector>,
    allowed: i64,
    disrupted: HashSet<String>,
}

impl Budget {
    /// Parses a PodDisruptionBudget; an invalid or empty selector matches nothing.
    pub fn parse(pdb: &Value) -> Budget {
        let selector = match &pdb["spec"]["selector"] {
            Value::Object(m) if !m.is_empty() => {
                LabelSelector::from_json(&pdb["spec"]["selector"]).ok()
            }
            _ => None,
        };
        Budget {
            namespace: crate::api::meta::namespace(pdb).to_string(),
            selector,
            allowed: pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0),
            disrupted: pdb["status"]["disruptedPods"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }

    fn covers(&self, pod: &PodInfo) -> bool {
        !pod.labels.is_empty()
            && self.namespace == pod.namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(Some(&pod.labels)))
    }
}

/// The node chosen for a preemptor and the pods to evict there.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The node to nominate.
    pub node: String,
    /// Victims, most important first.
    pub victims: Vec<Arc<PodInfo>>,
    /// How many victims' budgets the eviction violates.
    pub pdb_violations: usize,
}

/// What preemption concluded for one unschedulable pod.
#[derive(Debug)]
pub enum Outcome {
    /// Evict these victims and nominate the node.
    Nominate(Candidate),
    /// No preemption; the post-filter text (after `preemption: `) and whether a stale
    /// nomination should be cleared.
    Fail { message: String, clear: bool },
}

/// Whether `a` is more important than `b` (upstream's MoreImportantPod): higher
/// priority, then the one that started earlier. An unknown start counts as now.
fn more_important(a: &PodInfo, b: &PodInfo) -> bool {
    if a.priority != b.priority {
        return a.priority > b.priority;
    }
    let start = |p: &PodInfo| {
        if p.start_time.is_empty() {
            "~".to_string() // sorts after every timestamp
        } else {
            p.start_time.clone()
        }
    };
    start(a) < start(b)
}

fn sort_by_importance(pods: &mut [Arc<PodInfo>]) {
    pods.sort_by(|a, b| {
        if more_important(a, b) {
            std::cmp::Ordering::Less
        } else if more_important(b, a) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
}

/// Splits victims (kept in order) into those whose eviction would violate a budget and
/// the others (upstream's filterPodsWithPDBViolation).
fn split_by_budget(
    pods: &[Arc<PodInfo>],
    budgets: &[Budget],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i64> = budgets.iter().map(|b| b.allowed).collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for p in pods {
        let mut violated = false;
        for (i, b) in budgets.iter().enumerate() {
            if !b.covers(p) || b.disrupted.contains(&p.name) {
                continue;
            }
            allowed[i] -= 1;
            if allowed[i] < 0 {
                violated = true;
            }
        }
        if violated {
            violating.push(p.clone());
        } else {
            fine.push(p.clone());
        }
    }
    (violating, fine)
}

/// The fewest pods of lower priority whose removal lets `pod` fit on `node`, and how
/// many of them violate a budget; or why preemption cannot help there.
pub fn select_victims(
    pod: &PodInfo,
    node: &NodeInfo,
    cache: &Cache,
    budgets: &[Budget],
) -> Result<(Vec<Arc<PodInfo>>, usize), Vec<Failure>> {
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .values()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(vec![NO_VICTIMS]);
    }
    let mut copy = node.clone();
    for p in &potential {
        copy.remove_pod(&p.key());
    }
    let failures = filter(pod, &copy, cache);
    if !failures.is_empty() {
        return Err(failures);
    }
    sort_by_importance(&mut potential);
    let (violating, fine) = split_by_budget(&potential, budgets);
    let mut victims = Vec::new();
    let mut violations = 0;
    for (p, counts) in violating
        .iter()
        .map(|p| (p, true))
        .chain(fine.iter().map(|p| (p, false)))
    {
        copy.add_pod(p.clone());
        if !filter(pod, &copy, cache).is_empty() {
            copy.remove_pod(&p.key());
            victims.push(p.clone());
            violations += counts as usize;
        }
    }
    if !violating.is_empty() && !fine.is_empty() {
        sort_by_importance(&mut victims);
    }
    Ok((victims, violations))
}

/// Picks one candidate by upstream's ordered criteria; the first on a full tie.
pub fn pick_one(candidates: &[Candidate]) -> Option<&Candidate> {
    type Score = fn(&Candidate) -> i128;
    let scores: [Score; 5] = [
        |c| -(c.pdb_violations as i128),
        |c| -(c.victims.first().map_or(0, |p| p.priority) as i128),
        // Shifted so that negative priorities still add up to more for more pods.
        |c| {
            -c.victims
                .iter()
                .map(|p| p.priority as i128 + i32::MAX as i128 + 1)
                .sum::<i128>()
        },
        |c| -(c.victims.len() as i128),
        |c| earliest_start_of_most_important(c),
    ];
    let mut left: Vec<&Candidate> = candidates.iter().collect();
    for f in scores {
        if left.len() <= 1 {
            break;
        }
        let best = left.iter().map(|c| f(c)).max()?;
        left.retain(|c| f(c) == best);
    }
    left.first().copied()
}

/// Upstream's GetEarliestPodStartTime over the highest-priority victims, as a number
/// that grows with time (seconds since the epoch; unknown counts as latest).
fn earliest_start_of_most_important(c: &Candidate) -> i128 {
    let Some(top) = c.victims.first().map(|p| p.priority) else {
        return i128::MIN;
    };
    c.victims
        .iter()
        .filter(|p| p.priority == top)
        .map(|p| {
            p.start_time
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_second() as i128)
                .unwrap_or(i128::MAX)
        })
        .min()
        .unwrap_or(i128::MIN)
}

/// Runs preemption for `pod`, which failed on every node as `diag` says. `offset` picks
/// where the dry run starts among the candidate nodes (random, as upstream).
pub fn preempt(
    pod: &PodInfo,
    diag: &Diagnosis,
    cache: &Cache,
    budgets: &[Budget],
    offset: usize,
) -> Outcome {
    if pod.preempt_never {
        return Outcome::Fail {
            message: "not eligible due to preemptionPolicy=Never.".into(),
            clear: false,
        };
    }
    let nominated = cache
        .nominated_node(&pod.key())
        .map(str::to_string)
        .unwrap_or_else(|| pod.nominated_node.clone());
    // Victims on the nominated node are still going: wait for them rather than evict
    // more, unless that node cannot take the pod anyway.
    if !nominated.is_empty() && diag.potential.contains(&nominated) {
        if let Some(node) = cache.node(&nominated) {
            if node
                .pods
                .values()
                .any(|p| p.priority < pod.priority && p.preempted)
            {
                return Outcome::Fail {
                    message: "not eligible due to a terminating pod on the nominated node.".into(),
                    clear: false,
                };
            }
        }
    }
    let n = diag.potential.len();
    let want = (n * MIN_CANDIDATE_PERCENT / 100)
        .max(MIN_CANDIDATE_ABSOLUTE)
        .min(n);
    let (mut fine, mut violating) = (Vec::new(), Vec::new());
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut failed = 0;
    for i in 0..n {
        let name = &diag.potential[(offset + i) % n];
        let Some(node) = cache.node(name) else {
            continue;
        };
        match select_victims(pod, node, cache, budgets) {
            Ok((victims, _)) if victims.is_empty() => {}
            Ok((victims, pdb_violations)) => {
                let c = Candidate {
                    node: name.clone(),
                    victims,
                    pdb_violations,
                };
                if pdb_violations == 0 {
                    fine.push(c);
                } else {
                    violating.push(c);
                }
                if !fine.is_empty() && fine.len() + violating.len() >= want {
                    break;
                }
            }
            Err(failures) => {
                failed += 1;
                for f in failures {
                    *reasons.entry(f.reason).or_insert(0) += 1;
                }
            }
        }
    }
    fine.extend(violating);
    match pick_one(&fine) {
        Some(c) => Outcome::Nominate(c.clone()),
        None => {
            let absent = diag.nodes.saturating_sub(failed);
            if absent > 0 {
                *reasons.entry(NOT_HELPFUL).or_insert(0) += absent;
            }
            Outcome::Fail {
                message: format!(
                    "0/{} nodes are available: {}.",
                    diag.nodes,
                    super::filter::histogram(reasons.into_iter())
                ),
                clear: !nominated.is_empty(),
            }
        }
    }
}
