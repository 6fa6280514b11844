//! Node IPAM through the real server and kubectl: nodes get distinct pod subnets from
//! `--cluster-cidr`, exhaustion is reported with upstream's event, a deleted node's subnet
//! goes to a waiting node, and a restart changes nothing.

mod common;

use common::Server;
use std::time::{Duration, Instant};

fn node_yaml(name: &str) -> String {
    format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n")
}

fn pod_cidrs(s: &Server, name: &str) -> String {
    s.kubectl(&[
        "get",
        "node",
        name,
        "-o",
        "jsonpath={.spec.podCIDR} {.spec.podCIDRs}",
    ])
    .ok()
    .trim()
    .to_string()
}

/// Polls until `f` returns Some (the controller works asynchronously); panics with `what`.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn nodes_get_distinct_pod_cidrs_until_the_range_is_exhausted() {
    let mut s = Server::start_with(&["--cluster-cidr", "10.99.0.0/23"]);
    for n in ["ipam-a", "ipam-b", "ipam-c"] {
        s.kubectl_stdin(&["create", "-f", "-"], &node_yaml(n)).ok();
        // One at a time, so the creation order decides who is left without a subnet.
        wait_for("a decision for the node", || {
            let got = pod_cidrs(&s, n);
            let events = s.kubectl(&[
                "get",
                "events",
                "-n",
                "default",
                "--field-selector",
                &format!("involvedObject.name={n},reason=CIDRNotAvailable"),
                "-o",
                "jsonpath={.items[*].message}",
            ]);
            (!got.is_empty() || !events.ok().trim().is_empty()).then_some(())
        });
    }
    assert_eq!(pod_cidrs(&s, "ipam-a"), r#"10.99.0.0/24 ["10.99.0.0/24"]"#);
    assert_eq!(pod_cidrs(&s, "ipam-b"), r#"10.99.1.0/24 ["10.99.1.0/24"]"#);
    assert_eq!(pod_cidrs(&s, "ipam-c"), "");
    let ev = s
        .kubectl(&[
            "get", "events", "-n", "default",
            "--field-selector", "involvedObject.name=ipam-c",
            "-o", "jsonpath={.items[0].type} {.items[0].reason} {.items[0].source.component}: {.items[0].message}",
        ])
        .ok()
        .to_string();
    assert_eq!(
        ev,
        "Normal CIDRNotAvailable cidrAllocator: Node ipam-c status is now: CIDRNotAvailable"
    );

    // The API refuses to move a node's subnet.
    let moved = s.kubectl(&[
        "patch",
        "node",
        "ipam-a",
        "-p",
        r#"{"spec":{"podCIDR":"10.99.1.0/24","podCIDRs":["10.99.1.0/24"]}}"#,
    ]);
    assert!(
        moved.err().contains("may not change podCIDR"),
        "{}",
        moved.stderr
    );

    // Deleting a node releases its subnet to the waiting node.
    s.kubectl(&["delete", "node", "ipam-a"]).ok();
    let c = wait_for("ipam-c to get the freed subnet", || {
        Some(pod_cidrs(&s, "ipam-c")).filter(|c| !c.is_empty())
    });
    assert_eq!(c, r#"10.99.0.0/24 ["10.99.0.0/24"]"#);

    // A restart keeps every assignment.
    s.restart();
    s.kubectl_stdin(&["create", "-f", "-"], &node_yaml("ipam-d"))
        .ok();
    wait_for("an event for ipam-d", || {
        let r = s.kubectl(&[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            "involvedObject.name=ipam-d",
            "-o",
            "jsonpath={.items[*].reason}",
        ]);
        r.ok().contains("CIDRNotAvailable").then_some(())
    });
    assert_eq!(pod_cidrs(&s, "ipam-b"), r#"10.99.1.0/24 ["10.99.1.0/24"]"#);
    assert_eq!(pod_cidrs(&s, "ipam-c"), r#"10.99.0.0/24 ["10.99.0.0/24"]"#);
    assert_eq!(pod_cidrs(&s, "ipam-d"), "");
}
