//! The scheduler and node lifecycle through the real server and kubectl, on fake nodes:
//! Node objects created through the API with a Ready status and a Lease the test renews
//! (no containerd needed). Pods get bound and spread, unfit pods wait with upstream's
//! FailedScheduling message until a node fits, filters and cordon are honoured, and a
//! node whose Lease stops goes Unknown, gets the unreachable taint and loses its pods;
//! drain honours a PodDisruptionBudget; PriorityClasses are admitted and resolved, a
//! high-priority pod preempts a lower one, and Events expire after `--event-ttl`. One
//! test runs a pod on the real embedded agent (root and containerd).

mod common;
#[path = "common/images.rs"]
mod images;
#[path = "common/pods.rs"]
mod pods;

use common::{eventually, Server};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn now_micro() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Registers a Ready fake node with `cpu` allocatable and a fresh Lease.
fn add_node(s: &Server, name: &str, cpu: &str, labels: &[(&str, &str)], taints: &str) {
    let mut l = format!("    kubernetes.io/hostname: {name}\n");
    for (k, v) in labels {
        l.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    let spec = if taints.is_empty() {
        String::new()
    } else {
        format!("spec:\n  taints: {taints}\n")
    };
    let yaml =
        format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n{l}{spec}");
    s.kubectl_stdin(&["create", "-f", "-"], &yaml).ok();
    set_ready(s, name, cpu, "True");
    renew(s, name);
}

fn set_ready(s: &Server, name: &str, cpu: &str, status: &str) {
    let now = now_micro();
    let now = &now[..19];
    let patch = format!(
        r#"{{"status":{{"allocatable":{{"cpu":"{cpu}","memory":"8Gi","pods":"110"}},"capacity":{{"cpu":"{cpu}","memory":"8Gi","pods":"110"}},"conditions":[{{"type":"Ready","status":"{status}","reason":"KubeletReady","message":"kubelet is posting ready status","lastHeartbeatTime":"{now}Z","lastTransitionTime":"{now}Z"}}]}}}}"#,
    );
    s.kubectl(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])
    .ok();
}

fn renew(s: &Server, name: &str) {
    let yaml = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {name}\n  namespace: kube-node-lease\nspec:\n  holderIdentity: {name}\n  leaseDurationSeconds: 40\n  renewTime: \"{}\"\n",
        now_micro()
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
}

fn pod_yaml(name: &str, cpu: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: web\nspec:\n{extra}  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests:\n        cpu: {cpu}\n"
    )
}

/// Waits until the scheduler places a pod on each of `nodes` (one small pod pinned to
/// each, left in place so every node carries the same extra load): a node just made Ready
/// through the API may not have reached the scheduler's cache yet.
fn wait_schedulable(s: &Server, nodes: &[&str]) {
    for n in nodes {
        let probe = format!("probe-{n}");
        let yaml = pod_yaml(
            &probe,
            "10m",
            &format!("  nodeSelector:\n    kubernetes.io/hostname: {n}\n"),
        )
        .replace("app: web", "app: probe");
        s.kubectl_stdin(&["create", "-f", "-"], &yaml).ok();
        assert_eq!(wait_bound(s, &probe), *n);
    }
}

fn node_of(s: &Server, pod: &str) -> String {
    s.kubectl(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
        .stdout
        .trim()
        .to_string()
}

fn wait_bound(s: &Server, pod: &str) -> String {
    let mut node = String::new();
    let ok = eventually(30, || {
        node = node_of(s, pod);
        !node.is_empty()
    });
    assert!(ok, "pod {pod} was not scheduled; log:\n{}", s.log());
    node
}

fn events(s: &Server, pod: &str, reason: &str) -> String {
    s.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason={reason}"),
        "-o",
        "jsonpath={.items[*].message}",
    ])
    .stdout
    .trim()
    .to_string()
}

#[test]
fn pods_spread_and_an_unfit_pod_waits_for_a_big_enough_node() {
    let s = Server::start();
    for n in ["node-a", "node-b", "node-c"] {
        add_node(&s, n, "2", &[], "");
    }
    wait_schedulable(&s, &["node-a", "node-b", "node-c"]);
    for i in 0..6 {
        s.kubectl_stdin(
            &["create", "-f", "-"],
            &pod_yaml(&format!("web-{i}"), "100m", ""),
        )
        .ok();
    }
    let mut per_node = std::collections::BTreeMap::new();
    for i in 0..6 {
        *per_node
            .entry(wait_bound(&s, &format!("web-{i}")))
            .or_insert(0) += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "pods not spread: {per_node:?}"
    );
    let node = node_of(&s, "web-0");
    let ok = eventually(10, || {
        events(&s, "web-0", "Scheduled") == format!("Successfully assigned default/web-0 to {node}")
    });
    assert!(
        ok,
        "Scheduled event: {:?}",
        events(&s, "web-0", "Scheduled")
    );
    let cond = s
        .kubectl(&[
            "get",
            "pod",
            "web-0",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}",
        ])
        .stdout;
    assert_eq!(cond.trim(), "True");

    s.kubectl_stdin(&["create", "-f", "-"], &pod_yaml("huge", "4", ""))
        .ok();
    let want = "0/3 nodes are available: 3 Insufficient cpu. no new claims to deallocate, preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    let ok = eventually(30, || events(&s, "huge", "FailedScheduling") == want);
    assert!(
        ok,
        "FailedScheduling: {:?}",
        events(&s, "huge", "FailedScheduling")
    );
    let cond = s
        .kubectl(&["get", "pod", "huge", "-o", "jsonpath={.status.phase} {.status.conditions[?(@.type==\"PodScheduled\")].status} {.status.conditions[?(@.type==\"PodScheduled\")].reason}: {.status.conditions[?(@.type==\"PodScheduled\")].message}"])
        .stdout;
    assert_eq!(cond.trim(), format!("Pending False Unschedulable: {want}"));
    let describe = s.kubectl(&["describe", "pod", "huge"]).stdout;
    assert!(
        describe.contains("FailedScheduling") && describe.contains("default-scheduler"),
        "{describe}"
    );

    add_node(&s, "big-1", "16", &[], "");
    assert_eq!(wait_bound(&s, "huge"), "big-1");
}

#[test]
fn node_selector_taints_affinity_and_cordon_are_honoured() {
    let s = Server::start();
    add_node(&s, "ssd", "2", &[("disk", "ssd")], "");
    add_node(
        &s,
        "gpu",
        "2",
        &[],
        "[{key: dedicated, value: gpu, effect: NoSchedule}]",
    );
    add_node(&s, "plain", "2", &[], "");

    s.kubectl_stdin(
        &["create", "-f", "-"],
        &pod_yaml("wants-ssd", "100m", "  nodeSelector:\n    disk: ssd\n"),
    )
    .ok();
    assert_eq!(wait_bound(&s, "wants-ssd"), "ssd");

    let tolerant = "  tolerations:\n  - {key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: kubernetes.io/hostname, operator: In, values: [gpu]}\n";
    s.kubectl_stdin(
        &["create", "-f", "-"],
        &pod_yaml("on-gpu", "100m", tolerant),
    )
    .ok();
    assert_eq!(wait_bound(&s, "on-gpu"), "gpu");

    s.kubectl(&["cordon", "ssd"]).ok();
    s.kubectl(&["cordon", "plain"]).ok();
    s.kubectl_stdin(&["create", "-f", "-"], &pod_yaml("waits", "100m", ""))
        .ok();
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint(s), 2 node(s) were unschedulable. no new claims to deallocate, preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    let ok = eventually(30, || events(&s, "waits", "FailedScheduling") == want);
    assert!(
        ok,
        "FailedScheduling: {:?}",
        events(&s, "waits", "FailedScheduling")
    );
    // The node lifecycle controller mirrors the cordon as upstream's taint.
    let ok = eventually(10, || {
        s.kubectl(&[
            "get",
            "node",
            "plain",
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ])
        .stdout
        .contains("node.kubernetes.io/unschedulable")
    });
    assert!(ok, "no unschedulable taint on the cordoned node");
    s.kubectl(&["uncordon", "plain"]).ok();
    assert_eq!(wait_bound(&s, "waits"), "plain");
}

#[test]
fn a_node_that_stops_renewing_its_lease_loses_its_pods() {
    let s = Server::start_with(&[
        "--node-monitor-grace-period",
        "4s",
        "--default-unreachable-toleration-seconds",
        "3",
    ]);
    add_node(&s, "alive", "2", &[], "");
    add_node(&s, "lost", "2", &[], "");
    let stop = Arc::new(AtomicBool::new(false));
    // The test plays the agent of "alive": its Lease keeps being renewed.
    let renewer = {
        let (stop, kubeconfig) = (stop.clone(), s.kubeconfig());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let yaml = format!(
                    "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: alive\n  namespace: kube-node-lease\nspec:\n  holderIdentity: alive\n  renewTime: \"{}\"\n",
                    now_micro()
                );
                let mut c = std::process::Command::new("kubectl")
                    .args([
                        "--kubeconfig",
                        &kubeconfig.to_string_lossy(),
                        "apply",
                        "-f",
                        "-",
                    ])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("kubectl");
                use std::io::Write;
                let _ = c.stdin.take().map(|mut i| i.write_all(yaml.as_bytes()));
                let _ = c.wait();
                std::thread::sleep(std::time::Duration::from_millis(700));
            }
        })
    };
    s.kubectl_stdin(
        &["create", "-f", "-"],
        &pod_yaml("victim", "100m", "  nodeName: lost\n"),
    )
    .ok();
    let tol = s
        .kubectl(&["get", "pod", "victim", "-o", "jsonpath={.spec.tolerations[?(@.key==\"node.kubernetes.io/unreachable\")].tolerationSeconds}"])
        .stdout;
    assert_eq!(
        tol.trim(),
        "3",
        "default toleration from --default-unreachable-toleration-seconds"
    );

    let ok = eventually(40, || {
        s.kubectl(&["get", "node", "lost", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}: {.status.conditions[?(@.type==\"Ready\")].message}"])
            .stdout
            .trim()
            == "Unknown: Kubelet stopped posting node status."
    });
    assert!(ok, "lost node not Unknown; log:\n{}", s.log());
    let ok = eventually(10, || {
        s.kubectl(&[
            "get",
            "node",
            "lost",
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ])
        .stdout
        .contains("node.kubernetes.io/unreachable")
    });
    assert!(ok, "no unreachable taint");
    let ok = eventually(30, || {
        let r = s.kubectl(&[
            "get",
            "pod",
            "victim",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]);
        r.code != 0 || !r.stdout.trim().is_empty()
    });
    assert!(ok, "pod not evicted from the lost node");
    assert!(events(&s, "victim", "TaintManagerEviction")
        .contains("Marking for deletion Pod default/victim"));
    // The renewed node stayed Ready.
    let ready = s
        .kubectl(&[
            "get",
            "node",
            "alive",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints}",
        ])
        .stdout;
    assert_eq!(ready.trim(), "True");

    // The node comes back: Ready again, taints gone.
    renew(&s, "lost");
    set_ready(&s, "lost", "2", "True");
    let ok = eventually(10, || {
        s.kubectl(&["get", "node", "lost", "-o", "jsonpath={.spec.taints}"])
            .stdout
            .trim()
            .is_empty()
    });
    assert!(ok, "taints not removed from the returning node");
    stop.store(true, Ordering::Relaxed);
    let _ = renewer.join();
}

/// A running, Ready pod bound to `node` (the test plays its agent).
fn running_pod(s: &Server, name: &str, node: &str) {
    let extra = format!("  nodeName: {node}\n  terminationGracePeriodSeconds: 0\n");
    s.kubectl_stdin(
        &["create", "-f", "-"],
        &pod_yaml(name, "100m", &extra).replace("app: web", "app: db"),
    )
    .ok();
    s.kubectl(&[
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    ])
    .ok();
}

#[test]
fn drain_evicts_through_the_eviction_api_and_honours_a_disruption_budget() {
    let s = Server::start();
    add_node(&s, "d1", "2", &[], "");
    add_node(&s, "d2", "2", &[], "");
    running_pod(&s, "db-1", "d1");
    running_pod(&s, "db-2", "d1");
    running_pod(&s, "db-3", "d2");
    s.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: db\nspec:\n  minAvailable: 2\n  selector:\n    matchLabels:\n      app: db\n",
    )
    .ok();
    let drain = s.kubectl(&["drain", "d1", "--force", "--timeout=8s"]);
    let err = drain.err();
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    let left = s
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=db",
            "--field-selector",
            "spec.nodeName=d1",
            "-o",
            "name",
        ])
        .ok()
        .lines()
        .count();
    assert_eq!(left, 1, "exactly one pod may leave d1 under minAvailable=2");
    let unsched = s
        .kubectl(&["get", "node", "d1", "-o", "jsonpath={.spec.unschedulable}"])
        .stdout;
    assert_eq!(unsched.trim(), "true", "drain cordons the node");

    // The eviction API answers 429 with upstream's cause.
    let victim = s
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=db",
            "--field-selector",
            "spec.nodeName=d1",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .stdout;
    let body = format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{}","namespace":"default"}}}}"#,
        victim.trim()
    );
    let path = std::env::temp_dir().join(format!("eviction-{}.json", std::process::id()));
    std::fs::write(&path, body).expect("eviction body");
    let r = s.kubectl(&[
        "create",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/{}/eviction", victim.trim()),
        "-f",
        &path.to_string_lossy(),
    ]);
    let _ = std::fs::remove_file(&path);
    assert!(
        r.err().contains("TooManyRequests") || r.stderr.contains("disruption budget"),
        "{}",
        r.stderr
    );

    s.kubectl(&["delete", "pdb", "db"]).ok();
    s.kubectl(&["drain", "d1", "--force", "--timeout=20s"]).ok();
    let left = s
        .kubectl(&[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=d1",
            "-o",
            "name",
        ])
        .ok()
        .trim()
        .to_string();
    assert_eq!(left, "");
    s.kubectl(&["uncordon", "d1"]).ok();
}

#[test]
fn a_pod_without_a_node_is_scheduled_onto_the_real_agent_and_runs() {
    let s = pods::cluster();
    let yaml =
        pods::pod_yaml("unbound", "Always", "sleep 3600").replace("  nodeName: test-node\n", "");
    assert!(!yaml.contains("nodeName"));
    s.kubectl_stdin(&["create", "-f", "-"], &yaml).ok();
    pods::wait_for(&s, 60, "pod/unbound", "{.spec.nodeName}", "test-node");
    pods::wait_for(&s, 120, "pod/unbound", "{.status.phase}", "Running");
    assert_eq!(
        events(&s, "unbound", "Scheduled"),
        "Successfully assigned default/unbound to test-node"
    );
}

fn uid_of(s: &Server, pod: &str) -> String {
    s.kubectl(&["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"])
        .stdout
        .trim()
        .to_string()
}

#[test]
fn priority_classes_preemption_and_event_expiry() {
    let s = Server::start_with(&["--event-ttl", "30s"]);
    // The built-in classes, printed with upstream's columns.
    let out = s.kubectl(&["get", "priorityclasses"]).ok().to_string();
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    );
    assert!(
        out.contains("system-cluster-critical   2000000000   false"),
        "{out}"
    );
    assert!(
        out.contains("system-node-critical      2000001000   false"),
        "{out}"
    );

    let class = |name: &str, value: i64, extra: &str| {
        format!("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: {name}\nvalue: {value}\n{extra}")
    };
    s.kubectl_stdin(
        &["create", "-f", "-"],
        &class("low", 10, "globalDefault: true\n"),
    )
    .ok();
    s.kubectl_stdin(&["create", "-f", "-"], &class("high", 1000, ""))
        .ok();
    s.kubectl_stdin(
        &["create", "-f", "-"],
        &class("polite", 1000, "preemptionPolicy: Never\n"),
    )
    .ok();
    let err = s
        .kubectl_stdin(
            &["create", "-f", "-"],
            &class("other", 5, "globalDefault: true\n"),
        )
        .err()
        .to_string();
    assert!(
        err.contains("PriorityClass low is already marked as default. Only one default can exist"),
        "{err}"
    );
    let err = s
        .kubectl_stdin(&["create", "-f", "-"], &class("system-mine", 5, ""))
        .err()
        .to_string();
    assert!(
        err.contains("priority class names with 'system-' prefix are reserved for system use only"),
        "{err}"
    );

    // Priority admission.
    let err = s
        .kubectl_stdin(
            &["create", "-f", "-"],
            &pod_yaml("ghost", "100m", "  priorityClassName: nope\n"),
        )
        .err()
        .to_string();
    assert!(
        err.contains("pods \"ghost\" is forbidden: no PriorityClass with name nope was found"),
        "{err}"
    );
    let err = s
        .kubectl_stdin(
            &["create", "-f", "-"],
            &pod_yaml("liar", "100m", "  priorityClassName: high\n  priority: 5\n"),
        )
        .err()
        .to_string();
    assert!(err.contains("the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"), "{err}");

    // One node full of default-priority (low) pods that go at once when deleted.
    add_node(&s, "small", "2", &[], "");
    for name in ["low-1", "low-2"] {
        let extra = "  terminationGracePeriodSeconds: 0\n";
        s.kubectl_stdin(&["create", "-f", "-"], &pod_yaml(name, "1", extra))
            .ok();
        assert_eq!(wait_bound(&s, name), "small");
    }
    let prio = s
        .kubectl(&[
            "get",
            "pod",
            "low-1",
            "-o",
            "jsonpath={.spec.priorityClassName} {.spec.priority} {.spec.preemptionPolicy}",
        ])
        .stdout;
    assert_eq!(prio.trim(), "low 10 PreemptLowerPriority");

    // A class that never preempts waits, and says why.
    s.kubectl_stdin(
        &["create", "-f", "-"],
        &pod_yaml("polite", "1", "  priorityClassName: polite\n"),
    )
    .ok();
    let want = "0/1 nodes are available: 1 Insufficient cpu. no new claims to deallocate, preemption: not eligible due to preemptionPolicy=Never.";
    let ok = eventually(30, || events(&s, "polite", "FailedScheduling") == want);
    assert!(
        ok,
        "FailedScheduling: {:?}",
        events(&s, "polite", "FailedScheduling")
    );

    // A high-priority pod evicts exactly one low pod and takes its place.
    s.kubectl_stdin(
        &["create", "-f", "-"],
        &pod_yaml("vip", "1", "  priorityClassName: high\n"),
    )
    .ok();
    let uid = uid_of(&s, "vip");
    assert_eq!(wait_bound(&s, "vip"), "small");
    let left = s.kubectl(&["get", "pods", "-o", "name"]).ok().to_string();
    let lows: Vec<&str> = left.lines().filter(|l| l.starts_with("pod/low-")).collect();
    assert_eq!(lows.len(), 1, "one low pod preempted: {left}");
    let victim = if lows[0] == "pod/low-1" {
        "low-2"
    } else {
        "low-1"
    };
    let ok = eventually(10, || {
        events(&s, victim, "Preempted") == format!("Preempted by pod {uid} on node small")
    });
    assert!(ok, "Preempted event: {:?}", events(&s, victim, "Preempted"));
    assert_eq!(
        events(&s, "vip", "FailedScheduling"),
        "0/1 nodes are available: 1 Insufficient cpu.",
        "after nominating, the post-filter adds nothing (as upstream)"
    );
    // The polite pod did not take the freed room.
    assert_eq!(node_of(&s, "polite"), "");

    // Event expiry: an event is gone once 30 s passed since its last update.
    let ev = "apiVersion: v1\nkind: Event\nmetadata:\n  name: short-lived\ninvolvedObject:\n  kind: Pod\n  name: vip\n  namespace: default\nreason: Test\nmessage: expires\ntype: Normal\n";
    s.kubectl_stdin(&["create", "-f", "-"], ev).ok();
    let ok = eventually(90, || s.kubectl(&["get", "event", "short-lived"]).code != 0);
    assert!(ok, "event not expired; log:\n{}", s.log());
}
