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

use common::{eventually, Server};
use std::time::{Duration, Instant};

const IMAGE: &str = "k3rs.test/busybox:1";

fn require_environment() {
    images::require_agent_environment("agent_pods");
}

fn cluster() -> Server {
    require_environment();
    Server::start_with_agent(&[], |data| {
        images::write_oci_archive(&data.join("agent/images/busybox.tar"), IMAGE, false);
    })
}

fn pod_yaml(name: &str, policy: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: test-node\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", {command:?}]\n"
    )
}

fn jsonpath(s: &Server, kind_name: &str, path: &str) -> String {
    let r = s.kubectl(&["get", kind_name, "-o", &format!("jsonpath={path}")]);
    r.stdout.trim().to_string()
}

fn wait_for(s: &Server, secs: u64, kind_name: &str, path: &str, want: &str) {
    let ok = eventually(secs, || jsonpath(s, kind_name, path) == want);
    assert!(
        ok,
        "{kind_name} {path}: want {want:?}, have {:?}\n{}\nlog:\n{}",
        jsonpath(s, kind_name, path),
        s.kubectl(&["get", kind_name, "-o", "yaml"]).stdout,
        s.log()
    );
}

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

    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("ok", "Never", "echo hello; exit 0"),
    )
    .ok();
    s.kubectl_stdin(&["apply", "-f", "-"], &pod_yaml("fail", "Never", "exit 3"))
        .ok();
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("web", "Always", "exec httpd -f -p 8080 -h /var/www"),
    )
    .ok();
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
    let pods_dir = s.data_dir().join("agent/pods");
    let left = std::fs::read_dir(&pods_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "pod directories left in {}", pods_dir.display());
}
