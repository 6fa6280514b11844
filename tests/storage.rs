//! Persistent storage end to end on `k3rs server` with its embedded agent: the default
//! `local-path` class, WaitForFirstConsumer binding and provisioning, data surviving a
//! pod's deletion, pvc-protection, Retain and Delete reclaim, `kubectl get pv,pvc`.
//!
//! Needs root, containerd, runc and busybox-static (`apt-get install containerd runc
//! busybox-static`); every test fails loudly, never skips, when one is missing.

mod common;
#[path = "common/images.rs"]
mod images;
#[path = "common/pods.rs"]
mod pods;

use common::{eventually, Server};
use pods::{cluster, jsonpath, wait_for, IMAGE};
use std::path::PathBuf;

fn claim_yaml(name: &str, class: Option<&str>) -> String {
    let class = class
        .map(|c| format!("  storageClassName: {c}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n{class}  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 128Mi\n"
    )
}

/// A pod (scheduled by the scheduler, no nodeName) mounting claim `claim` at /data.
fn pod_yaml(name: &str, claim: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", {command:?}]\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  - name: data\n    persistentVolumeClaim:\n      claimName: {claim}\n"
    )
}

fn apply(s: &Server, yaml: &str) {
    s.kubectl_stdin(&["apply", "-f", "-"], yaml).ok();
}

fn volume_dir(s: &Server, claim: &str) -> PathBuf {
    let pv = jsonpath(s, &format!("pvc/{claim}"), "{.spec.volumeName}");
    assert!(!pv.is_empty(), "claim {claim} is not bound");
    PathBuf::from(jsonpath(s, &format!("pv/{pv}"), "{.spec.hostPath.path}"))
}

fn gone(s: &Server, kind_name: &str) -> bool {
    let r = s.kubectl(&["get", kind_name, "-o", "name"]);
    r.code != 0 && r.stderr.contains("NotFound")
}

#[test]
fn claim_binds_on_first_consumer_keeps_data_and_is_protected() {
    let s = cluster();
    let classes = s.kubectl(&["get", "storageclass"]).ok().to_string();
    let line = classes
        .lines()
        .find(|l| l.starts_with("local-path"))
        .unwrap_or_default();
    assert!(
        line.starts_with("local-path (default)")
            && line.contains("rancher.io/local-path")
            && line.contains("Delete")
            && line.contains("WaitForFirstConsumer"),
        "{classes}"
    );

    apply(&s, &claim_yaml("data", None));
    wait_for(&s, 30, "pvc/data", "{.spec.storageClassName}", "local-path");
    // WaitForFirstConsumer: nothing binds before a pod uses the claim.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(jsonpath(&s, "pvc/data", "{.status.phase}"), "Pending");
    let events = s.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=data",
    ]);
    assert!(
        events.ok().contains("WaitForFirstConsumer"),
        "{}",
        events.stdout
    );

    apply(
        &s,
        &pod_yaml("writer", "data", "echo hello > /data/f && sleep 3600"),
    );
    wait_for(&s, 90, "pod/writer", "{.status.phase}", "Running");
    wait_for(&s, 30, "pvc/data", "{.status.phase}", "Bound");
    let pv = jsonpath(&s, "pvc/data", "{.spec.volumeName}");
    let uid = jsonpath(&s, "pvc/data", "{.metadata.uid}");
    assert_eq!(pv, format!("pvc-{uid}"));
    assert_eq!(
        jsonpath(
            &s,
            "pvc/data",
            "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"
        ),
        "test-node"
    );
    let dir = volume_dir(&s, "data");
    assert_eq!(
        dir,
        s.data_dir()
            .join("storage")
            .join(format!("pvc-{uid}_default_data"))
    );
    assert!(
        eventually(30, || std::fs::read_to_string(dir.join("f"))
            .is_ok_and(|t| t == "hello\n")),
        "the pod's file is not in {}",
        dir.display()
    );

    // Columns as upstream's printers.
    let table = s.kubectl(&["get", "pv,pvc"]).ok().to_string();
    assert!(
        table.contains("NAME")
            && table.contains("CAPACITY   ACCESS MODES   RECLAIM POLICY   STATUS   CLAIM")
            && table.contains("STORAGECLASS   VOLUMEATTRIBUTESCLASS   REASON   AGE"),
        "{table}"
    );
    assert!(
        table.contains("STATUS   VOLUME")
            && table
                .contains("CAPACITY   ACCESS MODES   STORAGECLASS   VOLUMEATTRIBUTESCLASS   AGE"),
        "{table}"
    );
    let pv_line = table
        .lines()
        .find(|l| l.starts_with(&format!("persistentvolume/{pv}")))
        .unwrap_or_default();
    for want in [
        "128Mi",
        "RWO",
        "Delete",
        "Bound",
        "default/data",
        "local-path",
        "<unset>",
    ] {
        assert!(pv_line.contains(want), "pv line lacks {want}: {table}");
    }

    // Delete and recreate the pod: the data is still there.
    s.kubectl(&["delete", "pod", "writer", "--wait=true"]).ok();
    apply(&s, &pod_yaml("reader", "data", "cat /data/f; sleep 3600"));
    wait_for(&s, 90, "pod/reader", "{.status.phase}", "Running");
    assert!(
        eventually(30, || s
            .kubectl(&["logs", "reader"])
            .stdout
            .contains("hello")),
        "reader did not see the file"
    );

    // The claim is in use: deletion waits for the pod.
    s.kubectl(&["delete", "pvc", "data", "--wait=false"]).ok();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!gone(&s, "pvc/data"), "claim deleted while a pod used it");
    assert_eq!(
        jsonpath(&s, "pvc/data", "{.metadata.finalizers[0]}"),
        "kubernetes.io/pvc-protection"
    );
    let listed = s.kubectl(&["get", "pvc", "data"]).ok().to_string();
    assert!(listed.contains("Terminating"), "{listed}");
    s.kubectl(&["delete", "pod", "reader", "--wait=true"]).ok();
    assert!(
        eventually(30, || gone(&s, "pvc/data")),
        "claim not deleted after its pod"
    );
    // Reclaim policy Delete: the volume and its directory go.
    assert!(
        eventually(30, || gone(&s, &format!("pv/{pv}"))),
        "volume {pv} not deleted"
    );
    assert!(
        eventually(60, || !dir.exists()),
        "directory {} not removed",
        dir.display()
    );
}

#[test]
fn retain_keeps_the_directory_and_the_released_volume() {
    let s = cluster();
    apply(
        &s,
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: keep\nprovisioner: rancher.io/local-path\nreclaimPolicy: Retain\nvolumeBindingMode: WaitForFirstConsumer\n",
    );
    apply(&s, &claim_yaml("kept", Some("keep")));
    apply(&s, &pod_yaml("once", "kept", "echo kept > /data/f"));
    wait_for(&s, 90, "pod/once", "{.status.phase}", "Succeeded");
    let pv = jsonpath(&s, "pvc/kept", "{.spec.volumeName}");
    let dir = volume_dir(&s, "kept");
    assert_eq!(
        jsonpath(
            &s,
            &format!("pv/{pv}"),
            "{.spec.persistentVolumeReclaimPolicy}"
        ),
        "Retain"
    );
    s.kubectl(&["delete", "pod", "once"]).ok();
    // `--wait=false`, then wait here: kubectl's own wait can miss the deletion that
    // follows the protection finalizer's removal (a known watch bug, see the notes).
    s.kubectl(&["delete", "pvc", "kept", "--wait=false"]).ok();
    assert!(eventually(30, || gone(&s, "pvc/kept")));
    wait_for(&s, 30, &format!("pv/{pv}"), "{.status.phase}", "Released");
    // Longer than the agent's cleanup period: the directory stays.
    std::thread::sleep(std::time::Duration::from_secs(8));
    assert_eq!(
        std::fs::read_to_string(dir.join("f")).unwrap_or_default(),
        "kept\n"
    );
    assert!(!gone(&s, &format!("pv/{pv}")));
}

#[test]
fn static_volume_binds_to_a_matching_claim() {
    let s = cluster();
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("seed"), "static\n").expect("seed file");
    apply(
        &s,
        &format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: manual\nspec:\n  storageClassName: \"\"\n  capacity:\n    storage: 1Gi\n  accessModes: [ReadWriteOnce]\n  hostPath:\n    path: {}\n",
            host.path().display()
        ),
    );
    wait_for(&s, 30, "pv/manual", "{.status.phase}", "Available");
    apply(&s, &claim_yaml("small", Some("\"\"")));
    wait_for(&s, 30, "pvc/small", "{.status.phase}", "Bound");
    assert_eq!(jsonpath(&s, "pvc/small", "{.spec.volumeName}"), "manual");
    assert_eq!(
        jsonpath(&s, "pvc/small", "{.status.capacity.storage}"),
        "1Gi"
    );
    apply(&s, &pod_yaml("user", "small", "cat /data/seed"));
    wait_for(&s, 90, "pod/user", "{.status.phase}", "Succeeded");
    assert!(s.kubectl(&["logs", "user"]).ok().contains("static"));
    // A static volume defaults to Retain: released, kept.
    s.kubectl(&["delete", "pod", "user"]).ok();
    s.kubectl(&["delete", "pvc", "small", "--wait=false"]).ok();
    assert!(eventually(30, || gone(&s, "pvc/small")));
    wait_for(&s, 30, "pv/manual", "{.status.phase}", "Released");
    assert!(host.path().join("seed").exists());
}
