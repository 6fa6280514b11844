//! Unit tests of the node IPAM planner: allocation order, dual stack, state taken from the
//! nodes (restart, deletion), exhaustion and foreign podCIDRs.

use super::*;

fn node(name: &str, created: &str, cidrs: &[&str]) -> Value {
    let mut n = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-{name}"),
                     "creationTimestamp": created, "resourceVersion": "7"},
        "spec": {},
    });
    if let Some(first) = cidrs.first() {
        n["spec"]["podCIDR"] = json!(first);
        n["spec"]["podCIDRs"] = json!(cidrs);
    }
    n
}

fn assigned(d: &[Decision]) -> Vec<(String, Vec<String>)> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Assign { name, cidrs, .. } => Some((name.clone(), cidrs.clone())),
            _ => None,
        })
        .collect()
}

fn pair(name: &str, cidrs: &[&str]) -> (String, Vec<String>) {
    (
        name.to_string(),
        cidrs.iter().map(|s| s.to_string()).collect(),
    )
}

#[test]
fn allocates_lowest_free_subnets_in_creation_order() {
    let ipam = NodeIpam::new("10.42.0.0/16", 24, 64).expect("ipam");
    let nodes = [
        node("b", "2024-01-01T00:00:02Z", &[]),
        node("a", "2024-01-01T00:00:03Z", &[]),
        node("c", "2024-01-01T00:00:01Z", &[]),
    ];
    let d = ipam.plan(&nodes);
    assert_eq!(
        assigned(&d),
        vec![
            pair("c", &["10.42.0.0/24"]),
            pair("b", &["10.42.1.0/24"]),
            pair("a", &["10.42.2.0/24"]),
        ]
    );
    match &d[0] {
        Decision::Assign {
            resource_version, ..
        } => assert_eq!(resource_version, "7"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn dual_stack_gives_one_subnet_per_family_in_cluster_cidr_order() {
    let ipam = NodeIpam::new("10.42.0.0/16,fd00:42::/56", 24, 64).expect("ipam");
    let nodes = [
        node("a", "t1", &["10.42.0.0/24", "fd00:42::/64"]),
        node("b", "t2", &[]),
    ];
    assert_eq!(
        assigned(&ipam.plan(&nodes)),
        vec![pair("b", &["10.42.1.0/24", "fd00:42:0:1::/64"])]
    );
    let v6_first = NodeIpam::new("fd00:42::/56,10.42.0.0/16", 24, 64).expect("ipam");
    assert_eq!(
        assigned(&v6_first.plan(&[node("x", "t", &[])])),
        vec![pair("x", &["fd00:42::/64", "10.42.0.0/24"])]
    );
}

#[test]
fn state_comes_from_the_nodes_so_restarts_and_deletions_are_consistent() {
    let ipam = NodeIpam::new("10.42.0.0/16", 24, 64).expect("ipam");
    // After a restart the nodes still carry their subnets: nothing moves, the new node
    // gets the first hole.
    let nodes = vec![
        node("a", "t1", &["10.42.0.0/24"]),
        node("b", "t2", &["10.42.2.0/24"]),
        node("new", "t3", &[]),
    ];
    assert_eq!(
        assigned(&ipam.plan(&nodes)),
        vec![pair("new", &["10.42.1.0/24"])]
    );
    // Deleting "a" releases 10.42.0.0/24.
    let after_delete = vec![node("b", "t2", &["10.42.2.0/24"]), node("c", "t4", &[])];
    assert_eq!(
        assigned(&ipam.plan(&after_delete)),
        vec![pair("c", &["10.42.0.0/24"])]
    );
}

#[test]
fn exhaustion_is_reported_and_nothing_is_assigned_twice() {
    let ipam = NodeIpam::new("10.99.0.0/23", 24, 64).expect("ipam");
    let nodes = [
        node("a", "t1", &[]),
        node("b", "t2", &[]),
        node("c", "t3", &[]),
    ];
    let d = ipam.plan(&nodes);
    assert_eq!(
        assigned(&d),
        vec![pair("a", &["10.99.0.0/24"]), pair("b", &["10.99.1.0/24"])]
    );
    assert_eq!(d[2], Decision::Exhausted { name: "c".into() });
}

#[test]
fn foreign_pod_cidrs_are_left_alone_and_overlaps_are_not_handed_out() {
    let ipam = NodeIpam::new("10.99.0.0/23", 24, 64).expect("ipam");
    let nodes = [
        node("foreign", "t1", &["192.168.5.0/24"]),
        node("wide", "t1", &["10.99.1.0/25"]),
        node("new", "t2", &[]),
        node("newer", "t3", &[]),
    ];
    let d = ipam.plan(&nodes);
    assert_eq!(assigned(&d), vec![pair("new", &["10.99.0.0/24"])]);
    assert_eq!(
        d[1],
        Decision::Exhausted {
            name: "newer".into()
        }
    );
}

#[test]
fn deleting_nodes_get_nothing_but_keep_their_subnet() {
    let ipam = NodeIpam::new("10.99.0.0/23", 24, 64).expect("ipam");
    let mut going = node("going", "t1", &["10.99.0.0/24"]);
    going["metadata"]["deletionTimestamp"] = json!("t9");
    let mut bare = node("bare", "t1", &[]);
    bare["metadata"]["deletionTimestamp"] = json!("t9");
    let d = ipam.plan(&[going, bare, node("new", "t2", &[])]);
    assert_eq!(
        d,
        vec![Decision::Assign {
            name: "new".into(),
            resource_version: "7".into(),
            cidrs: vec!["10.99.1.0/24".into()],
        }]
    );
}

#[test]
fn masks_that_do_not_fit_are_refused() {
    let e = NodeIpam::new("10.42.0.0/16", 8, 64).expect_err("mask /8 in a /16");
    assert!(e.to_string().contains("10.42.0.0/16"), "{e}");
    assert!(NodeIpam::new("fd00::/80", 24, 64).is_err());
    assert!(NodeIpam::new("fd00::/8", 24, 64).is_ok());
}
