//! Helpers for tests that run pods on a `k3rs server` with its embedded agent: the
//! cluster (with the busybox test image imported), pod manifests, status queries.

#![allow(dead_code)]

use super::common::{eventually, Server};
use super::images;

pub const IMAGE: &str = "k3rs.test/busybox:1";

pub fn cluster() -> Server {
    images::require_agent_environment("agent_*");
    Server::start_with_agent(&[], |data| {
        images::write_oci_archive(&data.join("agent/images/busybox.tar"), IMAGE, false);
    })
}

pub fn pod_yaml(name: &str, policy: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: test-node\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", {command:?}]\n"
    )
}

/// `kubectl apply` of [`pod_yaml`]; fails loudly when kubectl does.
pub fn apply_pod(s: &Server, name: &str, policy: &str, command: &str) {
    s.kubectl_stdin(&["apply", "-f", "-"], &pod_yaml(name, policy, command))
        .ok();
}

pub fn jsonpath(s: &Server, kind_name: &str, path: &str) -> String {
    let r = s.kubectl(&["get", kind_name, "-o", &format!("jsonpath={path}")]);
    r.stdout.trim().to_string()
}

pub fn wait_for(s: &Server, secs: u64, kind_name: &str, path: &str, want: &str) {
    let ok = eventually(secs, || jsonpath(s, kind_name, path) == want);
    assert!(
        ok,
        "{kind_name} {path}: want {want:?}, have {:?}\n{}\nlog:\n{}",
        jsonpath(s, kind_name, path),
        s.kubectl(&["get", kind_name, "-o", "yaml"]).stdout,
        s.log()
    );
}

/// Runs Debian's `ctr` against the server's containerd in the `k8s.io` namespace (where
/// the agent keeps pod containers) and returns its output; fails loudly when ctr does.
pub fn ctr(s: &Server, args: &[&str]) -> String {
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(s.run_dir().join("containerd/containerd.sock"))
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .expect("ctr (from Debian's containerd package)");
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
