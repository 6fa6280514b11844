//! Scheduling decisions on hand-made nodes: filters, messages and spreading.

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
            d.add(&f);
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
