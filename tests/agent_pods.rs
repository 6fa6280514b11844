//! The embedded agent end to end: `k3rs server` with its agent on real containerd and
//! runc, driven by the real kubectl. Pods are bound with `nodeName` in the manifest
//! (the scheduler is another issue). Images come from tarballs the test builds from
//! Debian's busybox-static and drops into `<data-dir>/agent/images`.
//!
//! Needs root, containerd, runc and busybox-static (`apt-get install containerd runc
//! busybox-static`); every test fails loudly, never skips, when one is missing.

mod common;
#[path = "common/images.rs"]
mod images;
#[path = "common/pods.rs"]
mod pods;
#[path = "common/registry.rs"]
mod registry;

use common::{eventually, Server};
use pods::{apply_pod, cluster, ctr, jsonpath, pod_yaml, wait_for, IMAGE};
use std::time::{Duration, Instant};

#[test]
fn node_is_ready_and_pods_run_to_completion() {
    let s = cluster();
    let nodes = s.kubectl(&["get", "nodes", "-o", "wide"]);
    let out = nodes.ok();
    assert!(
        out.contains("test-node") && out.contains(" Ready "),
        "{out}"
    );
    assert!(out.contains("127.0.0.1"), "InternalIP column: {out}");
    assert!(out.contains("containerd://"), "runtime column: {out}");
    let lease = s.kubectl(&[
        "get",
        "lease",
        "test-node",
        "-n",
        "kube-node-lease",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(lease.ok().trim(), "test-node");

    apply_pod(&s, "ok", "Never", "echo hello; exit 0");
    apply_pod(&s, "fail", "Never", "exit 3");
    apply_pod(&s, "web", "Always", "exec httpd -f -p 8080 -h /var/www");
    wait_for(&s, 60, "pod/ok", "{.status.phase}", "Succeeded");
    wait_for(&s, 60, "pod/fail", "{.status.phase}", "Failed");
    wait_for(&s, 60, "pod/web", "{.status.phase}", "Running");
    assert_eq!(
        jsonpath(
            &s,
            "pod/fail",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "3"
    );
    let table = s.kubectl(&["get", "pods"]).ok().to_string();
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("ok ").contains("Completed"), "{table}");
    assert!(line("fail ").contains("Error"), "{table}");
    assert!(
        line("web ").contains("Running") && line("web ").contains("1/1"),
        "{table}"
    );
    assert_eq!(
        jsonpath(
            &s,
            "pod/web",
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "True"
    );
    assert_eq!(jsonpath(&s, "pod/web", "{.status.hostIP}"), "127.0.0.1");

    // Deleting returns once the containers are gone, and nothing is left behind.
    let uids: Vec<String> = ["web", "ok", "fail"]
        .iter()
        .map(|p| jsonpath(&s, &format!("pod/{p}"), "{.metadata.uid}"))
        .collect();
    let started = Instant::now();
    s.kubectl(&["delete", "pod", "web", "ok", "fail", "--timeout=60s"])
        .ok();
    assert!(started.elapsed() < Duration::from_secs(60));
    let left = std::fs::read_dir(s.run_dir().join("netns"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        left, 0,
        "network namespaces left after all pods were deleted"
    );
    let events = s.kubectl(&["get", "events"]).ok().to_string();
    assert!(events.contains("Started"), "{events}\n{}", s.log());
    let pods_dir = s.data_dir().join("agent/pods");
    let left = std::fs::read_dir(&pods_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "pod directories left in {}", pods_dir.display());
    assert_eq!(
        ctr(&s, &["containers", "ls", "-q"]).trim(),
        "",
        "containers left"
    );
    assert_eq!(ctr(&s, &["tasks", "ls", "-q"]).trim(), "", "tasks left");
    let snapshots = ctr(&s, &["snapshots", "--snapshotter", "overlayfs", "ls"]);
    assert!(
        !snapshots.contains("Active"),
        "container snapshots left:\n{snapshots}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroups: Vec<std::path::PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    for uid in &uids {
        assert!(!mounts.contains(uid.as_str()), "mounts of pod {uid} left");
        for c in cgroups
            .iter()
            .chain(std::iter::once(&std::path::PathBuf::from("/sys/fs/cgroup")))
        {
            let dir = c.join("k3rs").join(uid);
            assert!(!dir.exists(), "cgroup {} left", dir.display());
        }
    }
}

fn restart_count(s: &Server, pod: &str) -> u32 {
    jsonpath(
        s,
        &format!("pod/{pod}"),
        "{.status.containerStatuses[0].restartCount}",
    )
    .parse()
    .unwrap_or(0)
}

#[test]
fn crashing_container_restarts_with_growing_back_off() {
    let s = cluster();
    apply_pod(&s, "crash", "Always", "echo run; exit 1");
    // Record when each restart shows up, and whether CrashLoopBackOff was reported.
    let mut seen_at: Vec<(u32, Instant)> = Vec::new();
    let mut crash_loop = false;
    let deadline = Instant::now() + Duration::from_secs(150);
    while Instant::now() < deadline {
        let n = restart_count(&s, "crash");
        if seen_at.last().map(|(c, _)| *c) != Some(n) {
            seen_at.push((n, Instant::now()));
        }
        let reason = jsonpath(
            &s,
            "pod/crash",
            "{.status.containerStatuses[0].state.waiting.reason}",
        );
        crash_loop |= reason == "CrashLoopBackOff";
        if n >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let counts: Vec<u32> = seen_at.iter().map(|(c, _)| *c).collect();
    assert!(
        counts.ends_with(&[1, 2, 3, 4]),
        "restart counts seen: {counts:?}\n{}",
        s.log()
    );
    assert!(crash_loop, "CrashLoopBackOff was never reported");
    let at = |n: u32| {
        seen_at
            .iter()
            .find(|(c, _)| *c == n)
            .map(|(_, t)| *t)
            .expect("seen")
    };
    // Back-off is 10 s, then 20 s, then 40 s (lower bounds: a loaded machine is slower).
    assert!(
        at(2) - at(1) >= Duration::from_secs(9),
        "gap 1->2: {:?}",
        at(2) - at(1)
    );
    assert!(
        at(3) - at(2) >= Duration::from_secs(19),
        "gap 2->3: {:?}",
        at(3) - at(2)
    );
    assert!(
        at(4) - at(3) >= Duration::from_secs(39),
        "gap 3->4: {:?}",
        at(4) - at(3)
    );
    assert_eq!(
        jsonpath(
            &s,
            "pod/crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "1"
    );
    let table = s.kubectl(&["get", "pod", "crash"]).ok().to_string();
    assert!(
        table.contains("CrashLoopBackOff") || table.contains("Error") || table.contains("Running"),
        "{table}"
    );
    let events = s
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=crash",
        ])
        .ok()
        .to_string();
    assert!(events.contains("BackOff"), "{events}");
}

#[test]
fn deletion_waits_for_sigterm_handlers_and_kills_at_the_grace_period() {
    let s = cluster();
    // Handles SIGTERM by working 3 more seconds, then exits.
    let trap = "trap 'sleep 3; exit 0' TERM; while true; do sleep 1; done";
    // Ignores SIGTERM: only SIGKILL at the end of its 4 s grace period stops it.
    let ignore = "trap '' TERM; while true; do sleep 1; done";
    for (name, cmd) in [("trapper", trap), ("stubborn", ignore)] {
        let yaml = pod_yaml(name, "Always", cmd).replace(
            "terminationGracePeriodSeconds: 5",
            "terminationGracePeriodSeconds: 4",
        );
        s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    }
    wait_for(&s, 60, "pod/trapper", "{.status.phase}", "Running");
    wait_for(&s, 60, "pod/stubborn", "{.status.phase}", "Running");
    std::thread::sleep(Duration::from_secs(1)); // the shells are in their loops

    let t = Instant::now();
    s.kubectl(&[
        "delete",
        "pod",
        "trapper",
        "--grace-period=30",
        "--timeout=60s",
    ])
    .ok();
    let handler = t.elapsed();
    assert!(
        handler >= Duration::from_secs(3),
        "delete returned before the handler finished: {handler:?}"
    );
    assert!(
        handler < Duration::from_secs(30),
        "the grace period was used up: {handler:?}"
    );

    let t = Instant::now();
    s.kubectl(&["delete", "pod", "stubborn", "--timeout=60s"])
        .ok();
    let killed = t.elapsed();
    assert!(
        killed >= Duration::from_secs(4),
        "killed before its grace period: {killed:?}"
    );
    assert!(
        s.kubectl(&["get", "pod", "stubborn"]).code != 0,
        "pod object still there"
    );
}

#[test]
fn restarting_the_server_adopts_running_containers() {
    let mut s = cluster();
    apply_pod(&s, "web", "Always", "exec httpd -f -p 8080 -h /var/www");
    wait_for(&s, 60, "pod/web", "{.status.phase}", "Running");
    let path = "{.status.containerStatuses[0].state.running.startedAt} {.status.containerStatuses[0].containerID}";
    let before = jsonpath(&s, "pod/web", path);
    std::thread::sleep(Duration::from_secs(2));
    s.restart();
    s.wait_node_ready();
    // The agent posts the status again after adopting; give it a moment.
    std::thread::sleep(Duration::from_secs(3));
    let after = jsonpath(&s, "pod/web", path);
    assert_eq!(
        before,
        after,
        "container was restarted by the agent restart\n{}",
        s.log()
    );
    assert_eq!(restart_count(&s, "web"), 0);
    assert_eq!(jsonpath(&s, "pod/web", "{.status.phase}"), "Running");
}

#[test]
fn images_are_pulled_from_a_registry_and_missing_ones_back_off() {
    let s = cluster();
    let registry = registry::Registry::start(None);
    registry.push_image("library/pulled", "v1", images::host_arch());
    let image = format!("{}/library/pulled:v1", registry.host());
    let yaml =
        pod_yaml("pulled", "Always", "exec httpd -f -p 8081 -h /var/www").replace(IMAGE, &image);
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    wait_for(&s, 120, "pod/pulled", "{.status.phase}", "Running");

    // Nothing listens on this port: the pull fails, then backs off.
    let missing = format!("127.0.0.1:{}/library/missing:v1", common::free_port());
    let yaml = pod_yaml("missing", "Always", "true").replace(IMAGE, &missing);
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    let reason = "{.status.containerStatuses[0].state.waiting.reason}";
    let mut seen = Vec::new();
    let ok = eventually(60, || {
        let r = jsonpath(&s, "pod/missing", reason);
        if seen.last() != Some(&r) {
            seen.push(r.clone());
        }
        seen.iter().any(|r| r == "ErrImagePull") && r == "ImagePullBackOff"
    });
    assert!(ok, "waiting reasons seen: {seen:?}");
    let message = jsonpath(
        &s,
        "pod/missing",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(message.contains(&missing), "{message}");
    let table = s.kubectl(&["get", "pod", "missing"]).ok().to_string();
    assert!(
        table.contains("ImagePullBackOff") || table.contains("ErrImagePull"),
        "{table}"
    );
}

#[test]
fn configmap_volume_is_readable_and_follows_updates() {
    let s = cluster();
    s.kubectl(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=greeting=hello",
    ])
    .ok();
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: reader\nspec:\n  nodeName: test-node\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"while true; do cat /config/greeting; echo; sleep 1; done\"]\n    env:\n    - name: GREETING\n      valueFrom:\n        configMapKeyRef: {{name: settings, key: greeting}}\n    volumeMounts:\n    - {{name: config, mountPath: /config}}\n  volumes:\n  - name: config\n    configMap: {{name: settings}}\n"
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    wait_for(&s, 60, "pod/reader", "{.status.phase}", "Running");
    // The file as the container sees it: read from the pod's volume on the node.
    let uid = jsonpath(&s, "pod/reader", "{.metadata.uid}");
    let file = s
        .data_dir()
        .join("agent/pods")
        .join(&uid)
        .join("volumes/kubernetes.io~configmap/config/greeting");
    let log_dir = s.pod_log_dir().join(format!("default_reader_{uid}/main"));
    let log = || std::fs::read_to_string(log_dir.join("0.log")).unwrap_or_default();
    assert!(
        eventually(30, || log().contains("hello")),
        "container did not read the volume: {:?}",
        log()
    );
    s.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"greeting":"bonjour"}}"#,
    ])
    .ok();
    assert!(
        eventually(60, || log().contains("bonjour")),
        "update did not reach the running pod; file {} = {:?}; log {:?}",
        file.display(),
        std::fs::read_to_string(&file),
        log()
    );

    // A missing configmap keeps the pod waiting with the kubelet's reason.
    let missing = yaml
        .replace("name: reader", "name: needy")
        .replace("name: settings, key", "name: absent, key");
    s.kubectl_stdin(&["apply", "-f", "-"], &missing).ok();
    wait_for(
        &s,
        60,
        "pod/needy",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CreateContainerConfigError",
    );
    let message = jsonpath(
        &s,
        "pod/needy",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert_eq!(message, "configmap \"absent\" not found");
}

#[test]
fn lifecycle_hooks_run_after_start_and_before_stop() {
    let s = cluster();
    let shared = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hooked\nspec:\n  nodeName: test-node\n  terminationGracePeriodSeconds: 10\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"while true; do sleep 1; done\"]\n    lifecycle:\n      postStart:\n        exec: {{command: [\"sh\", \"-c\", \"echo started > /shared/post-start\"]}}\n      preStop:\n        exec: {{command: [\"sh\", \"-c\", \"echo stopping > /shared/pre-stop\"]}}\n    volumeMounts:\n    - {{name: shared, mountPath: /shared}}\n  volumes:\n  - name: shared\n    hostPath: {{path: {}, type: Directory}}\n",
        shared.path().display()
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    wait_for(&s, 60, "pod/hooked", "{.status.phase}", "Running");
    let post = std::fs::read_to_string(shared.path().join("post-start")).unwrap_or_default();
    assert_eq!(
        post, "started\n",
        "postStart hook did not run before Running"
    );
    assert!(!shared.path().join("pre-stop").exists());
    s.kubectl(&["delete", "pod", "hooked", "--timeout=60s"])
        .ok();
    let pre = std::fs::read_to_string(shared.path().join("pre-stop")).unwrap_or_default();
    assert_eq!(
        pre, "stopping\n",
        "preStop hook did not run before the container stopped"
    );
}

#[test]
fn init_containers_run_in_order_before_the_app() {
    let s = cluster();
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: staged\nspec:\n  nodeName: test-node\n  initContainers:\n  - name: first\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo one > /work/steps; sleep 2\"]\n    volumeMounts: [{{name: work, mountPath: /work}}]\n  - name: second\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo two >> /work/steps\"]\n    volumeMounts: [{{name: work, mountPath: /work}}]\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"cat /work/steps; sleep 3600\"]\n    volumeMounts: [{{name: work, mountPath: /work}}]\n  - name: side\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n  volumes:\n  - name: work\n    emptyDir: {{}}\n"
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    // While the first init container runs, kubectl shows Init:0/2 and the app waits.
    let init_seen = eventually(30, || {
        s.kubectl(&["get", "pod", "staged"])
            .stdout
            .contains("Init:0/2")
    });
    assert!(
        init_seen,
        "{}",
        s.kubectl(&["get", "pod", "staged", "-o", "yaml"]).stdout
    );
    assert_eq!(
        jsonpath(
            &s,
            "pod/staged",
            "{.status.containerStatuses[0].state.waiting.reason}"
        ),
        "PodInitializing"
    );
    wait_for(&s, 60, "pod/staged", "{.status.phase}", "Running");
    assert_eq!(
        jsonpath(
            &s,
            "pod/staged",
            "{.status.conditions[?(@.type==\"Initialized\")].status}"
        ),
        "True"
    );
    // Both app containers of the pod share one runc shim process (grouped by pod).
    let socket = s.run_dir().join("containerd/containerd.sock");
    let shims = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("containerd-shim-runc-v2") && c.contains(&*socket.to_string_lossy()))
        .count();
    assert_eq!(shims, 1, "runc shims for a pod with two running containers");
    let logs = eventually(20, || s.kubectl(&["logs", "staged"]).stdout == "one\ntwo\n");
    assert!(
        logs,
        "init containers did not run in order: {:?}",
        s.kubectl(&["logs", "staged"]).stdout
    );
    assert_eq!(
        jsonpath(
            &s,
            "pod/staged",
            "{.status.initContainerStatuses[*].state.terminated.reason}"
        ),
        "Completed Completed"
    );
}

#[test]
fn pods_deleted_while_the_agent_was_away_are_cleaned_up() {
    let mut s = cluster();
    apply_pod(&s, "gone", "Always", "sleep 3600");
    wait_for(&s, 60, "pod/gone", "{.status.phase}", "Running");
    let uid = jsonpath(&s, "pod/gone", "{.metadata.uid}");
    // The server comes back without its agent; the pod is force-deleted meanwhile.
    s.stop();
    s.start_again_with(&["--disable-agent"]);
    s.kubectl(&["delete", "pod", "gone", "--force", "--grace-period=0"])
        .ok();
    s.stop();
    s.start_again_with(&[]);
    s.wait_node_ready();
    let netns = s.run_dir().join("netns").join(&uid);
    let pod_dir = s.data_dir().join("agent/pods").join(&uid);
    let cleaned = eventually(30, || !netns.exists() && !pod_dir.exists());
    assert!(
        cleaned,
        "leftovers of the deleted pod: netns {} dir {}\n{}",
        netns.exists(),
        pod_dir.exists(),
        s.log()
    );
    assert_eq!(
        ctr(&s, &["containers", "ls", "-q"]).trim(),
        "",
        "containers of the deleted pod left"
    );
}

#[test]
fn container_over_its_memory_limit_is_oom_killed() {
    let s = cluster();
    // `tail` looks for the last line of an endless stream without newlines: it keeps
    // everything in memory until the cgroup limit stops it.
    let yaml = pod_yaml("hungry", "Never", "tail /dev/zero").replace(
        "    command:",
        "    resources:\n      limits: {memory: 24Mi}\n    command:",
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &yaml).ok();
    wait_for(&s, 60, "pod/hungry", "{.status.phase}", "Failed");
    let state = "{.status.containerStatuses[0].state.terminated}";
    assert_eq!(
        jsonpath(
            &s,
            "pod/hungry",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "OOMKilled",
        "{}",
        jsonpath(&s, "pod/hungry", state)
    );
    assert_eq!(
        jsonpath(
            &s,
            "pod/hungry",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "137"
    );
    assert!(s
        .kubectl(&["get", "pod", "hungry"])
        .ok()
        .contains("OOMKilled"));
}
