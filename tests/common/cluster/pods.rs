//! Pod helpers of a test cluster (the counterpart of tests/common/pods.rs for a
//! single-node server): busybox pods pinned to a node with `spec.nodeName`, jsonpath
//! queries, waiting for a state, and deleting every pod when the cluster goes away.

use std::time::{Duration, Instant};

use super::{eventually, Cluster, IMAGE};

impl Cluster {
    /// A busybox pod `name` pinned to node `i`, running `sh -c command`.
    pub fn pod_yaml(&self, name: &str, i: usize, command: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", {command:?}]\n",
            node = self.node_name(i)
        )
    }

    /// Applies [`Cluster::pod_yaml`]; fails the test when kubectl does.
    #[track_caller]
    pub fn run_pod(&self, name: &str, i: usize, command: &str) {
        self.apply(&self.pod_yaml(name, i, command));
    }

    /// `kubectl get <kind_name> -o jsonpath=<path>`, trimmed (empty when it fails).
    pub fn jsonpath(&self, kind_name: &str, path: &str) -> String {
        let r = self.kubectl(&["get", kind_name, "-o", &format!("jsonpath={path}")]);
        if r.code == 0 {
            r.stdout.trim().to_string()
        } else {
            String::new()
        }
    }

    /// Waits up to `secs` until `jsonpath(kind_name, path) == want`; fails with the object
    /// and the logs.
    #[track_caller]
    pub fn wait_for(&self, secs: u64, kind_name: &str, path: &str, want: &str) {
        let ok = eventually(secs, || self.jsonpath(kind_name, path) == want);
        assert!(
            ok,
            "{kind_name} {path}: want {want:?}, have {:?}\n{}\n{}",
            self.jsonpath(kind_name, path),
            self.kubectl(&["get", kind_name, "-o", "yaml"]).stdout,
            self.logs_tail()
        );
    }

    /// Waits until pod `name` is Running (120 s).
    #[track_caller]
    pub fn wait_pod_running(&self, name: &str) {
        self.wait_for(120, &format!("pod/{name}"), "{.status.phase}", "Running");
    }

    /// Deletes every pod and waits (at most 30 s) until the running agents have removed
    /// them, so containers stop the way a user's would. Never panics: runs in Drop.
    pub(super) fn delete_pods_for_cleanup(&self) {
        let listed = self.kubectl_quiet(&["get", "pods", "-A", "-o", "name"]);
        if listed.code != 0 || listed.stdout.trim().is_empty() {
            return;
        }
        let delete: Vec<&str> = "delete pods --all --all-namespaces --grace-period=1 --wait=false"
            .split(' ')
            .collect();
        self.kubectl_quiet(&delete);
        // Pods of a stopped node never go away by themselves; the purge kills their
        // containers instead.
        let running: Vec<String> = (1..=self.node_count())
            .filter(|&i| self.nodes[i - 1].child.is_some())
            .map(|i| self.node_name(i))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let r = self.kubectl_quiet(&[
                "get",
                "pods",
                "-A",
                "-o",
                "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
            ]);
            if r.code != 0 || !r.stdout.lines().any(|n| running.iter().any(|r| r == n)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
