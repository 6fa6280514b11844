//! DaemonSet (one pod per node, also on a node that joins later), StatefulSet, Job,
//! CronJob, a pod no node can fit, namespace deletion and cascading deletion with real
//! pods on three-node harness clusters (tests/common/cluster.rs).
//!
//! Needs root, containerd, runc, iproute2, nftables, busybox-static and kubectl
//! (`apt-get install containerd runc iproute2 nftables busybox-static`); the tests fail
//! loudly, never skip, when one is missing.

mod common;

use common::cluster::{Cluster, IMAGE};
use common::eventually;

fn job_yaml(name: &str, spec: &str, command: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {IMAGE}\n        command: [\"sh\", \"-c\", {command:?}]\n"
    )
}

/// Pod phases of the pods matching `selector`, one per line.
fn phases(s: &Cluster, selector: &str) -> Vec<String> {
    let r = s.kubectl(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
    ]);
    r.stdout.lines().map(String::from).collect()
}

#[test]
fn a_job_runs_five_completions_never_more_than_two_at_once() {
    let s = Cluster::start(3);
    let yaml = job_yaml("five", "  completions: 5\n  parallelism: 2\n", "sleep 1");
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    let mut most = 0;
    let done = eventually(180, || {
        let running = phases(&s, "job-name=five")
            .iter()
            .filter(|p| *p != "Succeeded" && *p != "Failed")
            .count();
        most = most.max(running);
        s.jsonpath(
            "job/five",
            "{.status.conditions[?(@.type==\"Complete\")].status}",
        ) == "True"
    });
    assert!(
        done,
        "job not Complete:\n{}\n{}",
        s.kubectl(&["get", "job", "five", "-o", "yaml"]).stdout,
        s.kubectl(&["get", "pods", "-o", "wide"]).stdout
    );
    assert!(
        most <= 2,
        "{most} job pods were active at once (parallelism 2)"
    );
    assert_eq!(s.jsonpath("job/five", "{.status.succeeded}"), "5");
    let done_pods = phases(&s, "job-name=five");
    assert_eq!(done_pods.len(), 5, "pods: {done_pods:?}");
    assert!(
        done_pods.iter().all(|p| p == "Succeeded"),
        "pods: {done_pods:?}"
    );
    assert_eq!(
        s.jsonpath(
            "job/five",
            "{.status.conditions[?(@.type==\"SuccessCriteriaMet\")].status}"
        ),
        "True"
    );
    assert!(!s
        .jsonpath("job/five", "{.status.completionTime}")
        .is_empty());
    let events = s.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=five",
    ]);
    assert!(
        events.stdout.contains("Job completed"),
        "events: {}",
        events.stdout
    );

    // Indexed: each pod gets its index in the environment and its hostname.
    let yaml = job_yaml(
        "idx",
        "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
        "echo index=$JOB_COMPLETION_INDEX host=$(hostname)",
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    s.wait_for(120, "job/idx", "{.status.completedIndexes}", "0-2");
    let logs = s
        .kubectl(&["logs", "-l", "job-name=idx", "--prefix=false"])
        .ok()
        .to_string();
    for i in 0..3 {
        assert!(
            logs.contains(&format!("index={i} host=idx-{i}")),
            "logs: {logs}"
        );
    }

    // podFailurePolicy: exit code 42 fails the job at once, without retries.
    let yaml = job_yaml(
        "fatal",
        "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes:\n        containerName: main\n        operator: In\n        values: [42]\n",
        "exit 42",
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    s.wait_for(
        120,
        "job/fatal",
        "{.status.conditions[?(@.type==\"Failed\")].reason}",
        "PodFailurePolicy",
    );
    assert_eq!(phases(&s, "job-name=fatal"), vec!["Failed".to_string()]);

    // activeDeadlineSeconds: a job running too long fails and its pod is stopped.
    let yaml = job_yaml("slow", "  activeDeadlineSeconds: 3\n", "sleep 300");
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    s.wait_for(
        120,
        "job/slow",
        "{.status.conditions[?(@.type==\"Failed\")].reason}",
        "DeadlineExceeded",
    );
    assert_eq!(s.jsonpath("job/slow", "{.status.active}"), "");

    // ttlSecondsAfterFinished: a finished job deletes itself.
    let yaml = job_yaml("brief", "  ttlSecondsAfterFinished: 1\n", "true");
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    let gone = eventually(120, || s.kubectl(&["get", "job", "brief"]).code != 0);
    assert!(
        gone,
        "{}",
        s.kubectl(&["get", "job", "brief", "-o", "yaml"]).stdout
    );
}

#[test]
fn a_cronjob_creates_a_job_within_a_minute() {
    let s = Cluster::start(3);
    let yaml = format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: tick\nspec:\n  schedule: \"*/1 * * * *\"\n  successfulJobsHistoryLimit: 1\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          terminationGracePeriodSeconds: 1\n          containers:\n          - name: main\n            image: {IMAGE}\n            command: [\"sh\", \"-c\", \"echo tick\"]\n"
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    let owner = "{range .items[*]}{.metadata.ownerReferences[0].name}{\"\\n\"}{end}";
    let fired = eventually(75, || {
        s.kubectl(&["get", "jobs", "-o", &format!("jsonpath={owner}")])
            .stdout
            .lines()
            .any(|l| l == "tick")
    });
    assert!(
        fired,
        "no job from the cronjob after 75 s:\n{}",
        s.kubectl(&["get", "cronjob", "tick", "-o", "yaml"]).stdout
    );
    assert!(!s
        .jsonpath("cronjob/tick", "{.status.lastScheduleTime}")
        .is_empty());
    let job = s
        .kubectl(&["get", "jobs", "-o", "jsonpath={.items[0].metadata.name}"])
        .ok()
        .to_string();
    assert!(job.starts_with("tick-"), "job name {job}");
    s.wait_for(120, &format!("job/{job}"), "{.status.succeeded}", "1");
    let ok = eventually(30, || {
        !s.jsonpath("cronjob/tick", "{.status.lastSuccessfulTime}")
            .is_empty()
    });
    assert!(
        ok,
        "{}",
        s.kubectl(&["get", "cronjob", "tick", "-o", "yaml"]).stdout
    );
    // Suspended: no more jobs, and the describe output still works.
    s.kubectl(&[
        "patch",
        "cronjob",
        "tick",
        "-p",
        "{\"spec\":{\"suspend\":true}}",
    ])
    .ok();
    let described = s.kubectl(&["describe", "cronjob", "tick"]).ok().to_string();
    assert!(described.contains("SuccessfulCreate"), "{described}");
}

fn statefulset_yaml(name: &str, policy: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {name}\nspec:\n  serviceName: {name}\n  replicas: 2\n  podManagementPolicy: {policy}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      terminationGracePeriodSeconds: 4\n      containers:\n      - name: main\n        image: {IMAGE}\n        command: [\"sh\", \"-c\", \"trap '' TERM; while true; do sleep 1; done\"]\n"
    )
}

#[test]
fn statefulsets_and_cascading_deletion() {
    let s = Cluster::start(3);
    // OrderedReady: web-0 then web-1, with stable names and hostnames.
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &statefulset_yaml("web", "OrderedReady"),
    )
    .ok();
    s.wait_for(120, "statefulset/web", "{.status.readyReplicas}", "2");
    for i in 0..2 {
        let pod = format!("pod/web-{i}");
        assert_eq!(
            s.jsonpath(&pod, "{.spec.hostname} {.spec.subdomain}"),
            format!("web-{i} web")
        );
    }
    let t0 = s.jsonpath("pod/web-0", "{.metadata.creationTimestamp}");
    let t1 = s.jsonpath("pod/web-1", "{.metadata.creationTimestamp}");
    assert!(t0 <= t1, "web-1 ({t1}) created before web-0 ({t0})");

    // --cascade=orphan leaves the pods, without their owner reference.
    s.kubectl(&["delete", "statefulset", "web", "--cascade=orphan"])
        .ok();
    let ok = eventually(30, || {
        s.kubectl(&["get", "statefulset", "web"]).code != 0
            && s.jsonpath("pod/web-0", "{.metadata.ownerReferences}")
                .is_empty()
            && s.jsonpath("pod/web-1", "{.metadata.ownerReferences}")
                .is_empty()
    });
    assert!(ok, "{}", s.kubectl(&["get", "pods", "-o", "yaml"]).stdout);
    assert_eq!(phases(&s, "app=web"), vec!["Running", "Running"]);

    // Foreground: the set stays (deleting) until its pods are gone.
    s.kubectl_stdin(&["apply", "-f", "-"], &statefulset_yaml("db", "Parallel"))
        .ok();
    s.wait_for(120, "statefulset/db", "{.status.readyReplicas}", "2");
    // A partitioned rolling update replaces only the ordinals at or above the partition.
    let old_rev = s.jsonpath("pod/db-0", "{.metadata.labels.controller-revision-hash}");
    let patch = r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":1}},"template":{"metadata":{"annotations":{"rev":"2"}}}}}"#;
    s.kubectl(&["patch", "statefulset", "db", "-p", patch]).ok();
    s.wait_for(120, "statefulset/db", "{.status.updatedReplicas}", "1");
    s.wait_for(120, "statefulset/db", "{.status.readyReplicas}", "2");
    let new_rev = s.jsonpath("statefulset/db", "{.status.updateRevision}");
    assert_ne!(new_rev, old_rev);
    assert_eq!(
        s.jsonpath("pod/db-1", "{.metadata.labels.controller-revision-hash}"),
        new_rev
    );
    assert_eq!(
        s.jsonpath("pod/db-0", "{.metadata.labels.controller-revision-hash}"),
        old_rev
    );
    s.kubectl(&[
        "delete",
        "statefulset",
        "db",
        "--cascade=foreground",
        "--wait=false",
    ])
    .ok();
    let fins = s.jsonpath("statefulset/db", "{.metadata.finalizers}");
    assert!(fins.contains("foregroundDeletion"), "finalizers: {fins:?}");
    assert!(!s
        .jsonpath("statefulset/db", "{.metadata.deletionTimestamp}")
        .is_empty());
    let gone = eventually(60, || s.kubectl(&["get", "statefulset", "db"]).code != 0);
    assert!(
        gone,
        "{}",
        s.kubectl(&["get", "statefulset", "db", "-o", "yaml"])
            .stdout
    );
    assert!(
        phases(&s, "app=db").is_empty(),
        "db pods left: {:?}",
        phases(&s, "app=db")
    );
    s.kubectl(&["delete", "pods", "-l", "app=web", "--grace-period=1"])
        .ok();
}

#[test]
fn deleting_a_namespace_removes_everything_in_it() {
    let s = Cluster::start(3);
    s.kubectl(&["create", "namespace", "doomed"]).ok();
    // Every namespace gets its `default` service account, and gets it back when deleted.
    let has_default = || {
        s.kubectl(&["get", "serviceaccount", "default", "-n", "doomed"])
            .code
            == 0
    };
    assert!(
        eventually(30, has_default),
        "no default service account in a new namespace"
    );
    s.kubectl(&["delete", "serviceaccount", "default", "-n", "doomed"])
        .ok();
    assert!(
        eventually(30, has_default),
        "the default service account did not come back"
    );
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\n  namespace: doomed\nspec:\n  terminationGracePeriodSeconds: 3\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"trap '' TERM; while true; do sleep 1; done\"]\n"
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &pod).ok();
    s.kubectl(&[
        "create",
        "configmap",
        "cm",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ])
    .ok();
    let held = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: doomed\n  finalizers: [example.com/hold]\n";
    s.kubectl_stdin(&["apply", "-f", "-"], held).ok();
    let running = eventually(120, || {
        s.kubectl(&[
            "get",
            "pod",
            "sleeper",
            "-n",
            "doomed",
            "-o",
            "jsonpath={.status.phase}",
        ])
        .stdout
            == "Running"
    });
    assert!(running, "pod not running:\n{}", s.logs_tail());
    s.kubectl(&["delete", "namespace", "doomed", "--wait=false"])
        .ok();
    // The pod takes its grace period to stop: the namespace is Terminating meanwhile.
    assert_eq!(
        s.jsonpath("namespace/doomed", "{.status.phase}"),
        "Terminating"
    );
    let refused = s.kubectl(&["create", "configmap", "late", "-n", "doomed"]);
    assert!(
        refused.err().contains("being terminated"),
        "{}",
        refused.stderr
    );
    // A finalizer on a config map holds the namespace, and its status says so.
    let want = "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances";
    let path = "{.status.conditions[?(@.type==\"NamespaceFinalizersRemaining\")].message}";
    s.wait_for(60, "namespace/doomed", path, want);
    assert_eq!(
        s.jsonpath("namespace/doomed", "{.status.phase}"),
        "Terminating"
    );
    s.kubectl(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "doomed",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .ok();
    let gone = eventually(90, || s.kubectl(&["get", "namespace", "doomed"]).code != 0);
    assert!(
        gone,
        "namespace still there:\n{}",
        s.kubectl(&["get", "namespace", "doomed", "-o", "yaml"])
            .stdout
    );
    let left = s.kubectl(&["get", "pods,configmaps", "-n", "doomed", "-o", "name"]);
    assert_eq!(
        left.stdout.trim(),
        "",
        "left in the namespace: {}",
        left.stdout
    );
}

#[test]
fn a_daemonset_runs_one_pod_per_node_also_on_a_node_that_joins_later() {
    let mut c = Cluster::start(3);
    let yaml = format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels:\n      app: agent\n  template:\n    metadata:\n      labels:\n        app: agent\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {}\n        command: [\"sh\", \"-c\", \"sleep 3600\"]\n",
        common::cluster::IMAGE
    );
    c.apply(&yaml);
    let nodes_of_pods = |c: &Cluster| {
        // Running and not terminating: `<node> <deletionTimestamp>`.
        let path = "jsonpath={range .items[?(@.status.phase==\"Running\")]}{.spec.nodeName} {.metadata.deletionTimestamp}{\"\\n\"}{end}";
        let r = c
            .kubectl(&["get", "pods", "-l", "app=agent", "-o", path])
            .stdout;
        let mut v: Vec<String> = r
            .lines()
            .filter(|l| l.split(' ').nth(1).is_none_or(str::is_empty))
            .map(|l| l.trim().to_string())
            .collect();
        v.sort();
        v
    };
    let all: Vec<String> = (1..=3).map(|i| c.node_name(i)).collect();
    let ok = eventually(180, || nodes_of_pods(&c) == all);
    assert!(
        ok,
        "daemon pods on {:?}, want {all:?}\n{}",
        nodes_of_pods(&c),
        c.logs_tail()
    );
    c.wait_for(30, "daemonset/agent", "{.status.numberReady}", "3");
    assert_eq!(
        c.jsonpath("daemonset/agent", "{.status.desiredNumberScheduled}"),
        "3"
    );

    // A template change rolls out to every node (RollingUpdate, maxUnavailable 1).
    let hashes = |c: &Cluster| {
        let path = "jsonpath={range .items[*]}{.metadata.labels.controller-revision-hash} {.metadata.deletionTimestamp}{\"\\n\"}{end}";
        let r = c
            .kubectl(&["get", "pods", "-l", "app=agent", "-o", path])
            .stdout;
        r.lines()
            .filter(|l| l.split(' ').nth(1).is_none_or(str::is_empty))
            .map(|l| l.trim().to_string())
            .collect::<std::collections::BTreeSet<String>>()
    };
    let before = hashes(&c);
    assert_eq!(
        before.len(),
        1,
        "revision hashes before the update: {before:?}"
    );
    let patch = r#"{"spec":{"template":{"metadata":{"annotations":{"rev":"2"}}}}}"#;
    c.kubectl(&["patch", "daemonset", "agent", "-p", patch])
        .ok();
    let rolled = c.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=180s"]);
    assert_eq!(
        rolled.code, 0,
        "rollout status: {} {}",
        rolled.stdout, rolled.stderr
    );
    let ok = eventually(60, || {
        let now = hashes(&c);
        now.len() == 1 && now != before
    });
    assert!(
        ok,
        "pods not all on the new revision: {:?} (was {before:?})",
        hashes(&c)
    );
    let history = c
        .kubectl(&["rollout", "history", "daemonset/agent"])
        .ok()
        .to_string();
    assert!(
        history.contains('1') && history.contains('2'),
        "rollout history: {history}"
    );
    // `rollout undo` goes back to the first template, which becomes revision 3.
    c.kubectl(&["rollout", "undo", "daemonset/agent"]).ok();
    let ok = eventually(180, || hashes(&c) == before);
    assert!(
        ok,
        "pods not back on {before:?} after undo: {:?}",
        hashes(&c)
    );
    let history = c
        .kubectl(&["rollout", "history", "daemonset/agent"])
        .ok()
        .to_string();
    let numbers: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(
        numbers,
        vec!["2", "3"],
        "rollout history after undo: {history}"
    );
    let ok = eventually(60, || nodes_of_pods(&c) == all);
    assert!(
        ok,
        "daemon pods on {:?} after the rollout",
        nodes_of_pods(&c)
    );

    // Node 3 leaves: its daemon pod goes with it; when it joins again it gets a new one.
    c.remove_node(3);
    c.wait_for(
        60,
        "daemonset/agent",
        "{.status.desiredNumberScheduled}",
        "2",
    );
    c.start_node(3);
    c.wait_node_ready(3);
    let ok = eventually(180, || nodes_of_pods(&c) == all);
    assert!(
        ok,
        "daemon pods on {:?} after node-3 rejoined\n{}",
        nodes_of_pods(&c),
        c.logs_tail()
    );
    c.wait_for(60, "daemonset/agent", "{.status.numberReady}", "3");
}

#[test]
fn a_pod_no_node_can_fit_stays_pending_with_upstreams_reason() {
    let s = Cluster::start(3);
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n    resources:\n      requests:\n        cpu: \"1000\"\n"
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &pod).ok();
    let want = "0/3 nodes are available: 3 Insufficient cpu.";
    let message = || {
        s.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=huge,reason=FailedScheduling",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .stdout
    };
    let ok = eventually(60, || message().contains(want));
    assert!(
        ok,
        "FailedScheduling message: {:?}, want {want:?}",
        message()
    );
    assert_eq!(s.jsonpath("pod/huge", "{.status.phase}"), "Pending");
    assert_eq!(s.jsonpath("pod/huge", "{.spec.nodeName}"), "");
    let cond = s.jsonpath(
        "pod/huge",
        "{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
    );
    assert_eq!(cond, "Unschedulable");
    let described = s.kubectl(&["describe", "pod", "huge"]).ok().to_string();
    assert!(described.contains(want), "{described}");
}
