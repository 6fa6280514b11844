//! The scheduling decision, free of I/O: the node infos plus the sampling and
//! tie-breaking state. [`Core::place`] filters, scores, picks a node and assumes the
//! pod there at once, so the next pod of a burst already sees it (upstream's assume in
//! the scheduler cache) — the binding is written later, by another task.

use super::cache::Cache;
use super::filter::{self, Diagnosis};
use super::preempt::{self, Budget, Outcome};
use super::score;
use super::types::PodInfo;
use super::volumes::PodClaims;
use std::sync::Arc;

/// How many feasible nodes are enough (upstream's adaptive percentageOfNodesToScore).
fn nodes_to_find(n: usize) -> usize {
    if n < 100 {
        return n;
    }
    let pct = 50usize.saturating_sub(n / 125).max(5);
    (n * pct / 100).max(100)
}

/// Node infos and the decision state.
pub struct Core {
    /// Nodes with their bound and assumed pods.
    pub cache: Cache,
    next_start: usize,
    rng: u64,
}

impl Core {
    /// An empty core; `seed` drives tie-breaking.
    pub fn new(seed: u64) -> Self {
        Core {
            cache: Cache::default(),
            next_start: 0,
            rng: seed | 1,
        }
    }

    /// xorshift64: tie-breaking and sampling offsets only, no security role.
    pub fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Whether `pod` passes every filter on `node`.
    fn fits(&self, pod: &PodInfo, node: &str, claims: Option<&PodClaims>) -> bool {
        self.cache.node(node).is_some_and(|n| {
            filter::filter(pod, n, &self.cache).is_empty()
                && claims.is_none_or(|c| c.filter(n).is_none())
        })
    }

    /// Picks a node, or explains why none fits.
    pub fn find_node(
        &mut self,
        pod: &PodInfo,
        claims: Option<&PodClaims>,
    ) -> Result<String, Diagnosis> {
        // A pod nominated by preemption goes to its node when it fits there now
        // (upstream's evaluateNominatedNode).
        let nominated = self
            .cache
            .nominated_node(&pod.key())
            .map(str::to_string)
            .unwrap_or_else(|| pod.nominated_node.clone());
        if !nominated.is_empty() && self.fits(pod, &nominated, claims) {
            return Ok(nominated);
        }
        let n = self.cache.node_count();
        let mut diag = Diagnosis {
            nodes: n,
            ..Default::default()
        };
        let want = nodes_to_find(n);
        let mut feasible = Vec::new();
        let start = self.next_start;
        let mut visited = 0;
        for i in 0..n {
            visited += 1;
            let Some(node) = self.cache.node_at((start + i) % n) else {
                continue;
            };
            let mut failures = filter::filter(pod, node, &self.cache);
            if failures.is_empty() {
                if let Some(c) = claims {
                    failures.extend(c.filter(node));
                }
            }
            if failures.is_empty() {
                feasible.push(node);
                if feasible.len() >= want {
                    break;
                }
            } else {
                diag.add(&node.name, &failures);
            }
        }
        if n > 0 {
            self.next_start = (start + visited) % n;
        }
        if feasible.is_empty() {
            return Err(diag);
        }
        if feasible.len() == 1 {
            return Ok(feasible[0].name.clone());
        }
        let scores = score::score(pod, &feasible, &self.cache);
        let names: Vec<String> = feasible.iter().map(|n| n.name.clone()).collect();
        let best = scores.iter().copied().max().unwrap_or(0);
        let mut chosen = 0;
        let mut ties = 0u64;
        for (i, s) in scores.iter().enumerate() {
            if *s == best {
                ties += 1;
                if self.random().is_multiple_of(ties) {
                    chosen = i;
                }
            }
        }
        Ok(names[chosen].clone())
    }

    /// Picks a node and assumes the pod on it (accounted until the binding is confirmed
    /// or fails).
    pub fn place(&mut self, pod: PodInfo, claims: Option<&PodClaims>) -> Result<String, Diagnosis> {
        let node = self.find_node(&pod, claims)?;
        self.cache.unnominate(&pod.key());
        self.cache.add_pod(Arc::new(pod), &node, true);
        Ok(node)
    }

    /// Runs preemption for a pod that fits nowhere; on success the pod is nominated to
    /// the chosen node at once, and lower-priority pods nominated there lose their
    /// nomination (returned with the outcome, for their status).
    pub fn preempt(
        &mut self,
        pod: &PodInfo,
        diag: &Diagnosis,
        budgets: &[Budget],
    ) -> (Outcome, Vec<String>) {
        let offset = match diag.potential.len() {
            0 => 0,
            n => (self.random() % n as u64) as usize,
        };
        let outcome = preempt::preempt(pod, diag, &self.cache, budgets, offset);
        let mut displaced = Vec::new();
        match &outcome {
            Outcome::Nominate(c) => {
                let lower: Vec<String> = self
                    .cache
                    .nominated_on(&c.node, &pod.key())
                    .filter(|p| p.priority < pod.priority)
                    .map(|p| p.key())
                    .collect();
                for k in lower {
                    self.cache.unnominate(&k);
                    displaced.push(k);
                }
                self.cache.nominate(Arc::new(pod.clone()), &c.node);
            }
            Outcome::Fail { clear: true, .. } => {
                self.cache.unnominate(&pod.key());
            }
            Outcome::Fail { .. } => {}
        }
        (outcome, displaced)
    }
}
