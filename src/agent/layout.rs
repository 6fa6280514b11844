//! Names and places every part of the agent agrees on: the containerd labels that tie
//! a container to its pod (upstream's CRI label names where they exist), container ids,
//! and where pod logs, pod state and volumes live on disk.
//!
//! The pod sync loop writes these; the kubelet endpoint (logs, exec, attach,
//! port-forward) and adoption after a restart read them back, so a container found in
//! containerd says by itself which pod, container and attempt it is.

use std::path::{Path, PathBuf};

/// Namespace of the pod a container belongs to.
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Name of the pod.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
/// UID of the pod.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
/// Name of the container in the pod spec.
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Which attempt this is: 0 for the first run, then the pod status' restartCount.
pub const LABEL_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// `init` for init containers, `app` for the others.
pub const LABEL_CONTAINER_KIND: &str = "k3rs.io/container-kind";
/// The CRI log file the shim writes for this attempt.
pub const LABEL_LOG_PATH: &str = "k3rs.io/log-path";
/// The pod's network namespace path; empty for hostNetwork pods.
pub const LABEL_NETNS: &str = "k3rs.io/netns";
/// The stdin FIFO of a container with `stdin: true` (what attach writes to); absent
/// otherwise.
pub const LABEL_STDIN_FIFO: &str = "k3rs.io/stdin-fifo";
/// `true` when the container runs with a terminal (`tty: true`).
pub const LABEL_TTY: &str = "k3rs.io/tty";

/// Where the agent writes container logs by default (upstream's place).
pub const DEFAULT_POD_LOG_DIR: &str = "/var/log/pods";

/// The containerd id of one attempt of one container: stable for (pod uid, container,
/// attempt), so a repeated create after a crash finds the same id, and short enough for
/// containerd's 76-character limit.
pub fn container_id(pod_uid: &str, container: &str, attempt: u32) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{pod_uid}/{container}/{attempt}").as_bytes(),
    );
    let mut id = String::with_capacity(64);
    for b in digest.as_ref() {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// `<log_root>/<namespace>_<name>_<uid>`: one pod's log directory.
pub fn pod_log_dir(log_root: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    log_root.join(format!("{namespace}_{name}_{uid}"))
}

/// `<pod log dir>/<container>/<attempt>.log`: one attempt's CRI log file.
pub fn container_log_path(pod_log_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_log_dir.join(container).join(format!("{attempt}.log"))
}

/// `<agent dir>/pods/<uid>`: one pod's state on disk (volumes, etc-hosts, ...).
pub fn pod_dir(agent_dir: &Path, pod_uid: &str) -> PathBuf {
    agent_dir.join("pods").join(pod_uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_stable_and_short() {
        let a = container_id("6a1f6f3e-0000-4000-8000-000000000001", "web", 0);
        assert_eq!(
            a,
            container_id("6a1f6f3e-0000-4000-8000-000000000001", "web", 0)
        );
        assert_ne!(
            a,
            container_id("6a1f6f3e-0000-4000-8000-000000000001", "web", 1)
        );
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn log_paths_follow_upstream_layout() {
        let dir = pod_log_dir(Path::new("/var/log/pods"), "default", "web", "u1");
        assert_eq!(dir, Path::new("/var/log/pods/default_web_u1"));
        assert_eq!(
            container_log_path(&dir, "httpd", 2),
            Path::new("/var/log/pods/default_web_u1/httpd/2.log")
        );
    }
}
