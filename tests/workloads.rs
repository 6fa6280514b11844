//! ReplicationController, ReplicaSet and Deployment on a three-node harness cluster
//! (tests/common/cluster.rs: real pods on each node's containerd) driven by the real
//! kubectl: the classic ReplicationController
//! lab (relabel, scale, delete pods, delete with and without cascade), the same with a
//! ReplicaSet using matchExpressions, and a Deployment rolling from image A to B without
//! dropping below replicas−maxUnavailable Ready pods, then `rollout undo`, `history`,
//! `status`, `pause`/`resume` and `restart`. Needs root, containerd, runc, iproute2,
//! nftables and busybox-static (CI has them; locally `apt-get install containerd runc
//! iproute2 nftables busybox-static` and run as root).

mod common;

use common::cluster::{Cluster, ClusterBuilder, IMAGE};
use common::eventually;
use serde_json::Value;

const IMAGE_A: &str = IMAGE;
const IMAGE_B: &str = "k3rs.test/busybox:2";

/// Three nodes (node 1 the server) with two tags of the busybox test image.
fn cluster() -> Cluster {
    ClusterBuilder::new(3).image(IMAGE_B).start()
}

/// The nodes the pods run on, without repeats.
fn nodes_of(pods: &[Value]) -> std::collections::BTreeSet<String> {
    pods.iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .map(String::from)
        .collect()
}

/// A pod template that stops at once on SIGTERM, so deletions finish quickly.
fn template(labels: &str, image: &str) -> String {
    format!(
        "  template:\n    metadata:\n      labels: {labels}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: main\n        image: {image}\n        command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
    )
}

/// Active (not deleting, not finished) pods matching `selector`.
fn active_pods(s: &Cluster, selector: &str) -> Vec<Value> {
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

fn jsonpath(s: &Cluster, what: &str, path: &str) -> String {
    s.kubectl(&["get", what, "-o", &format!("jsonpath={path}")])
        .stdout
        .trim()
        .to_string()
}

/// Waits until exactly `n` active pods match `selector` and all are Ready.
fn wait_ready_pods(s: &Cluster, selector: &str, n: usize, why: &str) -> Vec<Value> {
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
        s.logs_tail()
    );
    pods
}

fn owners(p: &Value) -> usize {
    p["metadata"]["ownerReferences"]
        .as_array()
        .map_or(0, |a| a.len())
}

/// The lab on an RC or RS named `web` (`what` = `rc/web` or `rs/web`) already applied.
fn replica_lab(s: &Cluster, what: &str, manifest: &str) {
    s.kubectl_stdin(&["apply", "-f", "-"], manifest).ok();
    let pods = wait_ready_pods(s, "app=web", 3, "created");
    assert!(
        nodes_of(&pods).len() >= 2,
        "3 replicas on one node of three: {:?}",
        nodes_of(&pods)
    );
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
    assert_eq!(names(&released), std::slice::from_ref(&x));
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

fn deployment(image: &str, cause: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    kubernetes.io/change-cause: {cause}\nspec:\n  replicas: 4\n  strategy:\n    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}\n  selector:\n    matchLabels: {{app: web}}\n{}",
        template("{app: web}", image)
    )
}

fn images_of(pods: &[Value]) -> Vec<String> {
    pods.iter()
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn rollout_status(s: &Cluster) {
    let r = s.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert_eq!(
        r.code,
        0,
        "rollout status: {} {}\n{}\nlog:\n{}",
        r.stdout,
        r.stderr,
        s.kubectl(&["get", "deploy,rs,pods", "-o", "wide"]).stdout,
        s.logs_tail()
    );
    assert!(r.stdout.contains("successfully rolled out"), "{}", r.stdout);
}

/// Applies `manifest` and returns the fewest Ready pods seen while the rollout ran.
fn roll(s: &Cluster, manifest: &str) -> usize {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut min = usize::MAX;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let n = active_pods(s, "app=web")
                    .iter()
                    .filter(|p| ready(p))
                    .count();
                min = min.min(n);
            }
            min
        });
        s.kubectl_stdin(&["apply", "-f", "-"], manifest).ok();
        rollout_status(s);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        poller.join().expect("poller")
    })
}

#[test]
fn deployment_rolls_out_undoes_pauses_and_restarts() {
    let s = cluster();
    s.kubectl_stdin(&["apply", "-f", "-"], &deployment(IMAGE_A, "image-a"))
        .ok();
    rollout_status(&s);
    let pods = wait_ready_pods(&s, "app=web", 4, "created");
    assert!(images_of(&pods).iter().all(|i| i == IMAGE_A));
    let hash = pods[0]["metadata"]["labels"]["pod-template-hash"].clone();
    assert!(hash.is_string(), "pod-template-hash label: {}", pods[0]);

    // A → B never drops below replicas − maxUnavailable = 3 Ready pods.
    let min = roll(&s, &deployment(IMAGE_B, "image-b"));
    assert!(min >= 3, "only {min} Ready pods during the rollout");
    let pods = wait_ready_pods(&s, "app=web", 4, "rolled to B");
    assert!(
        images_of(&pods).iter().all(|i| i == IMAGE_B),
        "{:?}",
        images_of(&pods)
    );
    assert_eq!(
        jsonpath(
            &s,
            "deploy/web",
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "2"
    );
    let conds = jsonpath(&s, "deploy/web", "{.status.conditions[*].reason}");
    assert!(
        conds.contains("NewReplicaSetAvailable") && conds.contains("MinimumReplicasAvailable"),
        "{conds}"
    );

    let history = s
        .kubectl(&["rollout", "history", "deployment/web"])
        .ok()
        .to_string();
    assert!(
        history.contains("image-a") && history.contains("image-b"),
        "{history}"
    );

    // Undo goes back to A: revision 1 becomes 3.
    s.kubectl(&["rollout", "undo", "deployment/web"]).ok();
    rollout_status(&s);
    let pods = wait_ready_pods(&s, "app=web", 4, "undone to A");
    assert!(
        images_of(&pods).iter().all(|i| i == IMAGE_A),
        "{:?}",
        images_of(&pods)
    );
    assert_eq!(
        pods[0]["metadata"]["labels"]["pod-template-hash"], hash,
        "the old ReplicaSet is reused"
    );
    let history = s
        .kubectl(&["rollout", "history", "deployment/web"])
        .ok()
        .to_string();
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");

    // Undo to a named revision.
    s.kubectl(&["rollout", "undo", "deployment/web", "--to-revision=2"])
        .ok();
    rollout_status(&s);
    let pods = wait_ready_pods(&s, "app=web", 4, "undone to revision 2");
    assert!(images_of(&pods).iter().all(|i| i == IMAGE_B));

    // Paused: template changes wait; resumed, they roll out.
    s.kubectl(&["rollout", "pause", "deployment/web"]).ok();
    s.kubectl(&["set", "image", "deployment/web", &format!("main={IMAGE_A}")])
        .ok();
    let paused = eventually(20, || {
        jsonpath(
            &s,
            "deploy/web",
            "{.status.conditions[?(@.type==\"Progressing\")].reason}",
        ) == "DeploymentPaused"
    });
    assert!(
        paused,
        "{}",
        s.kubectl(&["get", "deploy/web", "-o", "yaml"]).stdout
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        images_of(&active_pods(&s, "app=web"))
            .iter()
            .all(|i| i == IMAGE_B),
        "paused deployment rolled"
    );
    s.kubectl(&["rollout", "resume", "deployment/web"]).ok();
    rollout_status(&s);
    let pods = wait_ready_pods(&s, "app=web", 4, "resumed");
    assert!(images_of(&pods).iter().all(|i| i == IMAGE_A));

    // Restart: every pod is replaced, the template gets restartedAt.
    let before = names(&pods);
    s.kubectl(&["rollout", "restart", "deployment/web"]).ok();
    rollout_status(&s);
    let pods = wait_ready_pods(&s, "app=web", 4, "restarted");
    assert!(
        names(&pods).iter().all(|n| !before.contains(n)),
        "{:?} vs {before:?}",
        names(&pods)
    );

    // Scale mid-way is honoured; the events describe the scaling.
    s.kubectl(&["scale", "deployment/web", "--replicas=2"]).ok();
    wait_ready_pods(&s, "app=web", 2, "scaled to 2");
    let events = s
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Deployment",
            "-o",
            "json",
        ])
        .stdout;
    assert!(events.contains("ScalingReplicaSet"), "{events}");
}

#[test]
fn recreate_replaces_all_pods_at_once() {
    let s = cluster();
    let manifest = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  strategy:\n    type: Recreate\n  selector:\n    matchLabels: {{app: web}}\n{}",
            template("{app: web}", image)
        )
    };
    s.kubectl_stdin(&["apply", "-f", "-"], &manifest(IMAGE_A))
        .ok();
    rollout_status(&s);
    s.kubectl_stdin(&["apply", "-f", "-"], &manifest(IMAGE_B))
        .ok();
    rollout_status(&s);
    let pods = wait_ready_pods(&s, "app=web", 2, "recreated");
    assert!(images_of(&pods).iter().all(|i| i == IMAGE_B));
    let rs = s
        .kubectl(&["get", "rs", "-o", "jsonpath={.items[*].spec.replicas}"])
        .stdout;
    let mut sizes: Vec<&str> = rs.split_whitespace().collect();
    sizes.sort();
    assert_eq!(sizes, ["0", "2"], "{rs}");
}
