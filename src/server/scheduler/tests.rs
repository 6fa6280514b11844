//! Scheduling decisions on hand-made nodes: filters, messages, spreading of a burst,
//! preemption and nominations.

use super::cache::Cache;
use super::filter::Diagnosis;
use super::*;
use serde_json::json;

fn node(name: &str, cpu: &str, labels: Value, taints: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels},
           "spec": {"taints": taints},
           "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn pod(name: &str, spec: Value) -> PodInfo {
    PodInfo::parse(
        &json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                                        "ownerReferences": [{"uid": "rs-1", "controller": true}]},
                           "spec": spec}),
    )
}

fn diagnose(cache: &Cache, p: &PodInfo) -> Diagnosis {
    let mut d = Diagnosis {
        nodes: cache.node_count(),
        ..Default::default()
    };
    for i in 0..cache.node_count() {
        let n = cache.node_at(i).expect("node");
        let f = filter::filter(p, n, cache);
        if !f.is_empty() {
            d.add(&n.name, &f);
        }
    }
    d
}

#[test]
fn filters_explain_every_node() {
    let mut c = Cache::default();
    c.set_node(&node("a", "1", json!({"disk": "ssd"}), json!([])));
    c.set_node(&node(
        "b",
        "8",
        json!({}),
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    ));
    c.set_node(&node("c", "8", json!({}), json!([])));
    let big = pod(
        "big",
        json!({"containers": [{"resources": {"requests": {"cpu": "2"}}}], "nodeSelector": {"disk": "ssd"}}),
    );
    assert_eq!(
        diagnose(&c, &big).message(),
        "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint(s). no new claims to deallocate, preemption: 0/3 nodes are available: \
         1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
    );
    let tolerant = pod(
        "t",
        json!({"containers": [{}], "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]}]}}}}),
    );
    assert!(filter::filter(&tolerant, c.node("b").unwrap(), &c).is_empty());
    assert!(!filter::filter(&tolerant, c.node("a").unwrap(), &c).is_empty());
}

#[test]
fn anti_affinity_and_host_ports_keep_pods_apart() {
    let mut c = Cache::default();
    c.set_node(&node(
        "a",
        "8",
        json!({"kubernetes.io/hostname": "a"}),
        json!([]),
    ));
    let spec = json!({"containers": [{"ports": [{"containerPort": 80, "hostPort": 8080}]}],
        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    let first = pod("p1", spec.clone());
    assert!(filter::filter(&first, c.node("a").unwrap(), &c).is_empty());
    c.add_pod(Arc::new(first), "a", false);
    let second = pod("p2", spec);
    assert_eq!(
        filter::filter(&second, c.node("a").unwrap(), &c)[0].reason,
        "node(s) didn't have free ports for the requested pod ports"
    );
}

#[test]
fn pods_of_one_owner_spread() {
    let mut c = Cache::default();
    for n in ["a", "b", "c"] {
        c.set_node(&node(n, "8", json!({}), json!([])));
    }
    c.add_pod(Arc::new(pod("p1", json!({"containers": [{}]}))), "a", false);
    c.add_pod(Arc::new(pod("p2", json!({"containers": [{}]}))), "b", false);
    let p = pod("p3", json!({"containers": [{}]}));
    let nodes: Vec<&types::NodeInfo> = ["a", "b", "c"].iter().map(|n| c.node(n).unwrap()).collect();
    let s = score::score(&p, &nodes, &c);
    assert!(s[2] > s[0] && s[2] > s[1], "{s:?}");
}

fn prio_pod(name: &str, cpu: &str, priority: i64, owner: &str, start: &str) -> PodInfo {
    PodInfo::parse(&json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name},
                     "ownerReferences": [{"uid": owner, "controller": true}]},
        "spec": {"priority": priority,
                 "containers": [{"resources": {"requests": {"cpu": cpu}}}]},
        "status": {"startTime": start}}))
}

#[test]
fn a_burst_spreads_because_each_placement_is_assumed_at_once() {
    for seed in 1..20u64 {
        let mut core = Core::new(seed);
        for n in ["a", "b", "c"] {
            core.cache.set_node(&node(n, "8", json!({}), json!([])));
        }
        // No informer event arrives between the decisions: only the assumed pods
        // tell the scorer where the earlier replicas went.
        let mut placed = std::collections::BTreeSet::new();
        for i in 0..3 {
            let p = prio_pod(&format!("web-{i}"), "100m", 0, "rs-1", "");
            placed.insert(core.place(p, None).expect("fits"));
        }
        assert_eq!(placed.len(), 3, "seed {seed}: replicas on {placed:?}");
        assert!(core.cache.is_assumed("default/web-0"));
    }
}

#[test]
fn preemption_evicts_the_fewest_lowest_priority_pods() {
    let mut core = Core::new(7);
    core.cache.set_node(&node("a", "2", json!({}), json!([])));
    core.cache.set_node(&node("b", "2", json!({}), json!([])));
    let t = "2024-01-01T00:00:00Z";
    // a: two low pods of 1 cpu each. b: one low pod of 1 cpu and one mid pod of 1 cpu.
    for (name, n, prio) in [
        ("low-1", "a", 10),
        ("low-2", "a", 10),
        ("low-3", "b", 10),
        ("mid", "b", 100),
    ] {
        core.cache
            .add_pod(Arc::new(prio_pod(name, "1", prio, name, t)), n, false);
    }
    let high = prio_pod("high", "1", 1000, "x", "");
    let diag = core.find_node(&high, None).expect_err("no room anywhere");
    assert_eq!(diag.potential.len(), 2);
    let (outcome, _) = core.preempt(&high, &diag, &[]);
    let preempt::Outcome::Nominate(c) = outcome else {
        panic!("expected a nomination, got {outcome:?}");
    };
    // Each node needs one victim of priority 10 (b keeps its mid pod): a tie on every
    // criterion, so either node will do.
    assert_eq!(c.victims.len(), 1, "{c:?}");
    assert_eq!(c.victims[0].priority, 10);
    assert_eq!(
        core.cache.nominated_node("default/high"),
        Some(c.node.as_str())
    );

    // The nomination holds the room against pods of lower priority.
    core.cache.remove_pod(&c.victims[0].key());
    let low = prio_pod("late-low", "1", 5, "y", "");
    assert!(!filter::filter(&low, core.cache.node(&c.node).unwrap(), &core.cache).is_empty());
    assert_eq!(core.place(high, None).expect("fits now"), c.node);
    assert_eq!(core.cache.nominated_node("default/high"), None);
}

#[test]
fn preemption_respects_budgets_and_policy_and_words_failures_as_upstream() {
    let mut core = Core::new(3);
    core.cache.set_node(&node("a", "1", json!({}), json!([])));
    core.cache.set_node(&node("b", "1", json!({}), json!([])));
    core.cache
        .add_pod(Arc::new(prio_pod("guarded", "1", 0, "g", "")), "a", false);
    core.cache
        .add_pod(Arc::new(prio_pod("free", "1", 0, "f", "")), "b", false);
    let pdb = preempt::Budget::parse(&json!({
        "metadata": {"namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "guarded"}}},
        "status": {"disruptionsAllowed": 0}}));
    let high = prio_pod("high", "1", 1000, "x", "");
    let diag = core.find_node(&high, None).expect_err("full");
    let (outcome, _) = core.preempt(&high, &diag, &[pdb]);
    let preempt::Outcome::Nominate(c) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(c.node, "b", "the node without a budget violation wins");
    assert_eq!(c.pdb_violations, 0);

    let mut never = prio_pod("polite", "1", 1000, "z", "");
    never.preempt_never = true;
    let diag = core.find_node(&never, None).expect_err("full");
    let (outcome, _) = core.preempt(&never, &diag, &[]);
    let preempt::Outcome::Fail { message, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        diag.message_with(Some(&message)),
        "0/2 nodes are available: 2 Insufficient cpu. no new claims to deallocate, \
         preemption: not eligible due to preemptionPolicy=Never."
    );

    // Equal priority: nothing to evict; a pod too big for any node even when empty.
    let peer = prio_pod("peer", "1", 0, "p", "");
    let diag = core.find_node(&peer, None).expect_err("full");
    let (outcome, _) = core.preempt(&peer, &diag, &[]);
    let preempt::Outcome::Fail { message, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        message,
        "0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
    let huge = prio_pod("huge", "4", 1000, "h", "");
    let diag = core.find_node(&huge, None).expect_err("too big");
    let (outcome, _) = core.preempt(&huge, &diag, &[]);
    let preempt::Outcome::Fail { message, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(message, "0/2 nodes are available: 2 Insufficient cpu.");
}

#[test]
fn node_pick_prefers_lower_victims_then_fewer() {
    let p = |name: &str, prio: i64| Arc::new(prio_pod(name, "1", prio, name, ""));
    let cands = vec![
        preempt::Candidate {
            node: "two-low".into(),
            victims: vec![p("l1", 1), p("l2", 1)],
            pdb_violations: 0,
        },
        preempt::Candidate {
            node: "one-mid".into(),
            victims: vec![p("m", 50)],
            pdb_violations: 0,
        },
        preempt::Candidate {
            node: "one-low".into(),
            victims: vec![p("l3", 1)],
            pdb_violations: 0,
        },
        preempt::Candidate {
            node: "violates".into(),
            victims: vec![p("l4", 0)],
            pdb_violations: 1,
        },
    ];
    assert_eq!(preempt::pick_one(&cands).unwrap().node, "one-low");
}
