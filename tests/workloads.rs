//! ReplicationController, ReplicaSet and Deployment through the real server, its embedded
//! agent (real pods on containerd) and the real kubectl: the classic ReplicationController
//! lab (relabel, scale, delete pods, delete with and without cascade), the same with a
//! ReplicaSet using matchExpressions, and a Deployment rolling from image A to B without
//! dropping below replicas−maxUnavailable Ready pods, then `rollout undo`, `history`,
//! `status`, `pause`/`resume` and `restart`. Needs root and containerd.

mod common;
#[path = "common/images.rs"]
mod images;

use common::{eventually, Server};
use serde_json::Value;

const IMAGE_A: &str = "k3rs.test/busybox:1";
const IMAGE_B: &str = "k3rs.test/busybox:2";

/// A server with its agent and two tags of the busybox test image.
fn cluster() -> Server {
    images::require_agent_environment("workloads");
    Server::start_with_agent(&[], |data| {
        let dir = data.join("agent/images");
        images::write_oci_archive(&dir.join("a.tar"), IMAGE_A, false);
        images::write_oci_archive(&dir.join("b.tar"), IMAGE_B, false);
    })
}

/// A pod template that stops at once on SIGTERM, so deletions finish quickly.
fn template(labels: &str, image: &str) -> String {
    format!(
        "  template:\n    metadata:\n      labels: {labels}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: main\n        image: {image}\n        command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
    )
}

/// Active (not deleting, not finished) pods matching `selector`.
fn active_pods(s: &Server, selector: &str) -> Vec<Value> {
    let r = s.kubectl(&["get", "pods", "-l", selector, "-o", "json"]);
    let list: Value = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .collect()
}

fn names(pods: &[Value]) -> Vec<String> {
    pods.iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn jsonpath(s: &Server, what: &str, path: &str) -> String {
    s.kubectl(&["get", what, "-o", &format!("jsonpath={path}")])
        .stdout
        .trim()
        .to_string()
}

/// Waits until exactly `n` active pods match `selector` and all are Ready.
fn wait_ready_pods(s: &Server, selector: &str, n: usize, why: &str) -> Vec<Value> {
    let ok = eventually(90, || {
        let pods = active_pods(s, selector);
        pods.len() == n && pods.iter().all(ready)
    });
    let pods = active_pods(s, selector);
    assert!(
        ok,
        "{why}: want {n} Ready pods with {selector}, have {:?}\n{}\nlog:\n{}",
        names(&pods),
        s.kubectl(&["get", "pods", "-o", "wide", "--show-labels"])
            .stdout,
        s.log()
    );
    pods
}

fn owners(p: &Value) -> usize {
    p["metadata"]["ownerReferences"]
        .as_array()
        .map_or(0, |a| a.len())
}

/// The lab on an RC or RS named `web` (`what` = `rc/web` or `rs/web`) already applied.
fn replica_lab(s: &Server, what: &str, manifest: &str) {
    s.kubectl_stdin(&["apply", "-f", "-"], manifest).ok();
    let pods = wait_ready_pods(s, "app=web", 3, "created");
    for p in &pods {
        let r = &p["metadata"]["ownerReferences"][0];
        assert_eq!(r["controller"], true, "{p}");
        assert_eq!(r["blockOwnerDeletion"], true, "{p}");
        assert_eq!(r["name"], "web");
    }
    let status_ready = eventually(30, || jsonpath(s, what, "{.status.readyReplicas}") == "3");
    assert!(
        status_ready,
        "{}",
        s.kubectl(&["get", what, "-o", "yaml"]).stdout
    );

    // Relabel one pod: it is released and the controller makes a replacement.
    let x = names(&pods)[0].clone();
    s.kubectl(&["label", "pod", &x, "app=database", "--overwrite"])
        .ok();
    let after = wait_ready_pods(s, "app=web", 3, "relabelled away");
    assert!(!names(&after).contains(&x));
    let released = active_pods(s, "app=database");
    assert_eq!(names(&released), [x.clone()]);
    assert_eq!(owners(&released[0]), 0, "released pod keeps no owner");

    // Relabel it back: adopted again, and one pod is deleted.
    s.kubectl(&["label", "pod", &x, "app=web", "--overwrite"])
        .ok();
    wait_ready_pods(s, "app=web", 3, "relabelled back");
    assert!(active_pods(s, "app=database").is_empty());

    // Scale up and back down.
    s.kubectl(&["scale", what, "--replicas=5"]).ok();
    wait_ready_pods(s, "app=web", 5, "scaled to 5");
    s.kubectl(&["scale", what, "--replicas=3"]).ok();
    wait_ready_pods(s, "app=web", 3, "scaled back to 3");

    // Delete every pod: all are replaced.
    let before = names(&active_pods(s, "app=web"));
    s.kubectl(&["delete", "pods", "-l", "app=web", "--wait=false"])
        .ok();
    let replaced = wait_ready_pods(s, "app=web", 3, "pods deleted");
    for n in names(&replaced) {
        assert!(!before.contains(&n), "{n} survived its deletion");
    }

    // Delete with --cascade=orphan: the pods stay, without an owner.
    let kept = names(&replaced);
    s.kubectl(&["delete", what, "--cascade=orphan"]).ok();
    let orphaned = eventually(30, || {
        let pods = active_pods(s, "app=web");
        s.kubectl(&["get", what]).code != 0
            && names(&pods) == kept
            && pods.iter().all(|p| owners(p) == 0)
    });
    assert!(
        orphaned,
        "{}",
        s.kubectl(&["get", "pods", "-o", "yaml"]).stdout
    );

    // Recreated, it adopts the orphans instead of making new pods; deleted normally,
    // its pods go with it.
    s.kubectl_stdin(&["apply", "-f", "-"], manifest).ok();
    let adopted = eventually(30, || {
        active_pods(s, "app=web").iter().all(|p| owners(p) == 1)
    });
    assert!(adopted);
    assert_eq!(
        names(&active_pods(s, "app=web")),
        kept,
        "adopted, not replaced"
    );
    s.kubectl(&["delete", what]).ok();
    let gone = eventually(60, || active_pods(s, "app=web").is_empty());
    assert!(gone, "{}", s.kubectl(&["get", "pods"]).stdout);
}

#[test]
fn replication_controller_lab() {
    let s = cluster();
    let rc = format!(
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    app: web\n{}",
        template("{app: web}", IMAGE_A)
    );
    replica_lab(&s, "rc/web", &rc);
    let events = s.kubectl(&["get", "events", "-o", "json"]).stdout;
    assert!(events.contains("SuccessfulCreate"), "{events}");
    assert!(events.contains("replication-controller"), "{events}");
}

#[test]
fn replica_set_lab_with_match_expressions() {
    let s = cluster();
    let rs = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchExpressions:\n    - {{key: app, operator: In, values: [web, frontend]}}\n    - {{key: tier, operator: DoesNotExist}}\n{}",
        template("{app: web}", IMAGE_A)
    );
    replica_lab(&s, "rs/web", &rs);
}
