//! Persistent storage on a 3-node cluster (tests/common/cluster.rs), the acceptance of
//! issue #11: a claim of the default `local-path` class binds once its pod is scheduled,
//! its data survives the pod and the next pod lands on the volume's node; deleting a
//! claim in use waits for the pod; Delete removes the directory on that node, Retain
//! keeps it; `kubectl get pv,pvc` columns; a `local` volume on a block device (a loop
//! device, formatted on first use); a StatefulSet whose replicas keep their data and
//! whose claims follow `persistentVolumeClaimRetentionPolicy`.
//!
//! Needs root, iproute2, containerd, runc, busybox-static, kubectl and, for the block
//! device, e2fsprogs and losetup and blkid (`apt-get install containerd runc iproute2
//! busybox-static e2fsprogs mount util-linux`); every test fails loudly when one is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cluster::{Cluster, IMAGE};
use common::eventually;

fn claim_yaml(name: &str, class: Option<&str>) -> String {
    let class = class
        .map(|c| format!("  storageClassName: {c}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n{class}  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 64Mi\n"
    )
}

/// A pod (placed by the scheduler: no nodeName) mounting claim `claim` at /data.
fn pod_yaml(name: &str, claim: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", {command:?}]\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  - name: data\n    persistentVolumeClaim:\n      claimName: {claim}\n"
    )
}

fn gone(c: &Cluster, kind_name: &str) -> bool {
    let r = c.kubectl(&["get", kind_name, "-o", "name"]);
    r.code != 0 && r.stderr.contains("NotFound")
}

#[track_caller]
fn wait_gone(c: &Cluster, secs: u64, kind_name: &str) {
    assert!(
        eventually(secs, || gone(c, kind_name)),
        "{kind_name} still there after {secs}s:\n{}\n{}",
        c.kubectl(&["get", kind_name, "-o", "yaml"]).stdout,
        c.logs_tail()
    );
}

/// Deletes `kind_name` and waits until it is gone. `--wait=false`, then wait here:
/// kubectl's own wait can miss a deletion that follows right after a protection
/// finalizer's removal (a known watch bug).
#[track_caller]
fn delete(c: &Cluster, kind_name: &str) {
    c.kubectl(&["delete", kind_name, "--wait=false"]).ok();
    wait_gone(c, 60, kind_name);
}

/// The index of the node pod `pod` runs on.
#[track_caller]
fn node_of(c: &Cluster, pod: &str) -> usize {
    let n = c.jsonpath(&format!("pod/{pod}"), "{.spec.nodeName}");
    n.strip_prefix("node-")
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("pod {pod} is on no cluster node ({n:?})"))
}

/// The host directory of the volume bound to `claim`.
#[track_caller]
fn volume_dir(c: &Cluster, claim: &str) -> PathBuf {
    let pv = c.jsonpath(&format!("pvc/{claim}"), "{.spec.volumeName}");
    assert!(!pv.is_empty(), "claim {claim} is not bound");
    PathBuf::from(c.jsonpath(&format!("pv/{pv}"), "{.spec.hostPath.path}"))
}

/// Whether node `i`'s agent made (and may delete) the local-path volume `pv`.
fn recorded_on(c: &Cluster, i: usize, pv: &str) -> bool {
    c.data_dir(i)
        .join("agent")
        .join("local-path")
        .join(pv)
        .exists()
}

/// The pod's logs (empty when kubectl fails).
fn logs(c: &Cluster, pod: &str) -> String {
    c.kubectl(&["logs", pod]).stdout
}

/// The default class, WaitForFirstConsumer, data across pods on the volume's node,
/// pvc-protection, Delete on that node, `kubectl get pv,pvc`, then Retain.
fn claims_on_the_default_class(c: &Cluster) {
    let classes = c.kubectl(&["get", "storageclass"]).ok().to_string();
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

    c.apply(&claim_yaml("data", None));
    c.wait_for(30, "pvc/data", "{.spec.storageClassName}", "local-path");
    // WaitForFirstConsumer: nothing binds before a pod uses the claim.
    let waiting = |c: &Cluster| {
        c.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=data",
        ])
        .stdout
        .contains("WaitForFirstConsumer")
    };
    assert!(
        eventually(30, || waiting(c)),
        "no WaitForFirstConsumer event"
    );
    assert_eq!(c.jsonpath("pvc/data", "{.status.phase}"), "Pending");

    c.apply(&pod_yaml(
        "writer",
        "data",
        "echo hello > /data/f && sleep 3600",
    ));
    c.wait_pod_running("writer");
    c.wait_for(30, "pvc/data", "{.status.phase}", "Bound");
    let node = node_of(c, "writer");
    let pv = c.jsonpath("pvc/data", "{.spec.volumeName}");
    let uid = c.jsonpath("pvc/data", "{.metadata.uid}");
    assert_eq!(pv, format!("pvc-{uid}"));
    assert_eq!(
        c.jsonpath(
            "pvc/data",
            "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"
        ),
        c.node_name(node)
    );
    assert_eq!(
        c.jsonpath(
            &format!("pv/{pv}"),
            "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"
        ),
        c.node_name(node),
        "the volume is not pinned to its pod's node"
    );
    // The path is the server's --default-local-storage-path (as k3s: one path for all
    // nodes); the directory is made and owned by the pod's node.
    let dir = volume_dir(c, "data");
    assert_eq!(
        dir,
        c.data_dir(1)
            .join("storage")
            .join(format!("pvc-{uid}_default_data"))
    );
    assert!(
        eventually(30, || std::fs::read_to_string(dir.join("f"))
            .is_ok_and(|t| t == "hello\n")),
        "the pod's file is not in {}",
        dir.display()
    );
    assert!(recorded_on(c, node, &pv), "node-{node} does not own {pv}");

    // Columns as upstream's printers.
    let table = c.kubectl(&["get", "pv,pvc"]).ok().to_string();
    assert!(
        table.contains("CAPACITY   ACCESS MODES   RECLAIM POLICY   STATUS   CLAIM")
            && table.contains("STORAGECLASS   VOLUMEATTRIBUTESCLASS   REASON   AGE")
            && table.contains("STATUS   VOLUME")
            && table
                .contains("CAPACITY   ACCESS MODES   STORAGECLASS   VOLUMEATTRIBUTESCLASS   AGE"),
        "{table}"
    );
    let line_of = |prefix: String| {
        table
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_default()
            .to_string()
    };
    let pv_line = line_of(format!("persistentvolume/{pv} "));
    for want in [
        "64Mi",
        "RWO",
        "Delete",
        "Bound",
        "default/data",
        "local-path",
        "<unset>",
    ] {
        assert!(pv_line.contains(want), "pv line lacks {want}: {table}");
    }
    let pvc_line = line_of("persistentvolumeclaim/data ".to_string());
    for want in ["Bound", &pv, "64Mi", "RWO", "local-path", "<unset>"] {
        assert!(pvc_line.contains(want), "pvc line lacks {want}: {table}");
    }

    // A new pod with the same claim lands on the volume's node and finds the file.
    c.kubectl(&["delete", "pod", "writer", "--wait=true"]).ok();
    c.apply(&pod_yaml("reader", "data", "cat /data/f; sleep 3600"));
    c.wait_pod_running("reader");
    assert_eq!(node_of(c, "reader"), node, "volume node affinity ignored");
    assert!(
        eventually(30, || logs(c, "reader").contains("hello")),
        "reader did not see the file: {}",
        logs(c, "reader")
    );

    // The claim is in use: deletion waits for the pod. `--wait=false`, then wait here:
    // kubectl's own wait can miss the deletion right after the finalizer goes.
    c.kubectl(&["delete", "pvc", "data", "--wait=false"]).ok();
    assert!(eventually(10, || c
        .kubectl(&["get", "pvc", "data"])
        .stdout
        .contains("Terminating")));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!gone(c, "pvc/data"), "claim deleted while a pod used it");
    assert_eq!(
        c.jsonpath("pvc/data", "{.metadata.finalizers[0]}"),
        "kubernetes.io/pvc-protection"
    );
    c.kubectl(&["delete", "pod", "reader", "--wait=true"]).ok();
    wait_gone(c, 60, "pvc/data");
    // Reclaim policy Delete: the volume goes, and its node removes the directory.
    wait_gone(c, 30, &format!("pv/{pv}"));
    assert!(
        eventually(60, || !dir.exists() && !recorded_on(c, node, &pv)),
        "node-{node} did not remove {}",
        dir.display()
    );

    // Retain: the volume is Released and its directory stays.
    c.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: keep\nprovisioner: rancher.io/local-path\nreclaimPolicy: Retain\nvolumeBindingMode: WaitForFirstConsumer\n",
    );
    c.apply(&claim_yaml("kept", Some("keep")));
    c.apply(&pod_yaml("once", "kept", "echo kept > /data/f"));
    c.wait_for(120, "pod/once", "{.status.phase}", "Succeeded");
    let node = node_of(c, "once");
    let pv = c.jsonpath("pvc/kept", "{.spec.volumeName}");
    let dir = volume_dir(c, "kept");
    assert_eq!(
        c.jsonpath(&format!("pv/{pv}"), "{.spec.persistentVolumeReclaimPolicy}"),
        "Retain"
    );
    c.kubectl(&["delete", "pod", "once"]).ok();
    delete(c, "pvc/kept");
    c.wait_for(30, &format!("pv/{pv}"), "{.status.phase}", "Released");
    // Longer than the agents' cleanup period: the directory stays on its node.
    std::thread::sleep(std::time::Duration::from_secs(8));
    assert_eq!(
        std::fs::read_to_string(dir.join("f")).unwrap_or_default(),
        "kept\n"
    );
    assert!(recorded_on(c, node, &pv));
    assert!(!gone(c, &format!("pv/{pv}")));
    // Deleting the retained volume leaves the data too: the node forgets the directory.
    delete(c, &format!("pv/{pv}"));
    assert!(
        eventually(30, || !recorded_on(c, node, &pv)),
        "node-{node} still tracks {pv}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("f")).unwrap_or_default(),
        "kept\n",
        "a retained volume's data went with the volume object"
    );
}

/// A loop device on a file of its own; detached on drop (lazily by the kernel while it
/// is still mounted).
struct LoopDevice {
    device: String,
    _dir: tempfile::TempDir,
}

impl LoopDevice {
    fn new(size_mib: u64) -> LoopDevice {
        for (bin, pkg) in [
            ("mkfs.ext4", "e2fsprogs"),
            ("debugfs", "e2fsprogs"),
            ("losetup", "mount"),
            ("blkid", "util-linux"),
        ] {
            let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .any(|d| Path::new(d).join(bin).is_file());
            assert!(
                found,
                "{bin} not found: the block-device volume test needs it; apt-get install {pkg}"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir for the loop device's file");
        let file = dir.path().join("disk.img");
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(size_mib << 20))
            .expect("loop device backing file");
        let out = Command::new("losetup")
            .arg("-f")
            .arg("--show")
            .arg(&file)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup -f --show failed (needs root and /dev/loop-control): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        LoopDevice { device, _dir: dir }
    }

    /// Whether the device is mounted anywhere (in this mount namespace).
    fn mounted(&self) -> bool {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .any(|l| l.split(" - ").nth(1).and_then(|r| r.split(' ').nth(1)) == Some(&self.device))
    }

    /// `debugfs -R "cat <path>"`: a file on the device's filesystem, read without
    /// mounting it.
    fn read(&self, path: &str) -> String {
        let out = Command::new("debugfs")
            .args(["-R", &format!("cat {path}"), &self.device])
            .output()
            .expect("run debugfs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).output();
    }
}

/// A static `local` PersistentVolume `name` (Retain, no class) on `path` with volume
/// mode `mode`, with node affinity to node 2.
fn local_pv_yaml(c: &Cluster, name: &str, path: &str, mode: &str) -> String {
    format!(
        "apiVersion: v1
kind: PersistentVolume
metadata:
  name: {name}
spec:
  storageClassName: \"\"
  capacity:
    storage: 64Mi
  accessModes: [ReadWriteOnce]
  volumeMode: {mode}
  persistentVolumeReclaimPolicy: Retain
  local:
    path: {path}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: kubernetes.io/hostname, operator: In, values: [{node}]}}
",
        node = c.node_name(2)
    )
}

/// A `local` PersistentVolume on an unformatted loop device on node 2: formatted (ext4)
/// and mounted for the pod, unmounted when the pod goes, the file on the device; the
/// same device as a volumeMode Block volume: a FailedMount event saying it is not
/// supported.
fn local_volume_on_a_block_device(c: &Cluster) {
    let dev = LoopDevice::new(64);
    c.apply(&local_pv_yaml(c, "disk", &dev.device, "Filesystem"));
    c.apply(&claim_yaml("disk", Some("\"\"")));
    c.wait_for(30, "pvc/disk", "{.status.phase}", "Bound");
    c.apply(&pod_yaml(
        "disk-user",
        "disk",
        "echo on-disk > /data/f && sync && sleep 3600",
    ));
    c.wait_pod_running("disk-user");
    assert_eq!(node_of(c, "disk-user"), 2, "the volume's node affinity");
    assert!(dev.mounted(), "{} is not mounted for the pod", dev.device);
    let blkid = Command::new("blkid")
        .args(["-o", "value", "-s", "TYPE", &dev.device])
        .output()
        .expect("run blkid");
    assert_eq!(String::from_utf8_lossy(&blkid.stdout).trim(), "ext4");

    c.kubectl(&["delete", "pod", "disk-user", "--wait=true"])
        .ok();
    assert!(
        eventually(30, || !dev.mounted()),
        "{} still mounted after its pod was deleted:\n{}",
        dev.device,
        c.logs_tail()
    );
    assert_eq!(dev.read("/f"), "on-disk\n");
    delete(c, "pvc/disk");
    delete(c, "pv/disk");

    // volumeMode Block (a raw device in the container) is not supported: the pod says
    // so in a FailedMount event.
    c.apply(&local_pv_yaml(c, "raw", &dev.device, "Block"));
    c.apply(&format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: raw
spec:
  storageClassName: \"\"
  volumeMode: Block
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 64Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: raw-user
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    command: [\"sleep\", \"3600\"]
    volumeDevices:
    - {{name: raw, devicePath: /dev/xvda}}
  volumes:
  - name: raw
    persistentVolumeClaim:
      claimName: raw
",
    ));
    let event = |c: &Cluster| {
        c.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=raw-user",
        ])
        .stdout
    };
    assert!(
        eventually(60, || event(c)
            .contains("has volumeMode Block, which k3rs does not support")),
        "no FailedMount event for a Block volume: {}\n{}",
        event(c),
        c.kubectl(&["describe", "pod", "raw-user"]).stdout
    );
    assert!(!dev.mounted());
    c.kubectl(&["delete", "pod", "raw-user", "--wait=true"])
        .ok();
    delete(c, "pvc/raw");
    delete(c, "pv/raw");
}

/// A static hostPath volume binds to a matching claim without a class, defaults to
/// Retain and is Released, its data kept, once the claim is gone.
fn static_volume_binds_to_a_matching_claim(c: &Cluster) {
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("seed"), "static\n").expect("seed file");
    c.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: manual\nspec:\n  storageClassName: \"\"\n  capacity:\n    storage: 1Gi\n  accessModes: [ReadWriteOnce]\n  hostPath:\n    path: {}\n",
        host.path().display()
    ));
    c.wait_for(30, "pv/manual", "{.status.phase}", "Available");
    c.apply(&claim_yaml("small", Some("\"\"")));
    c.wait_for(30, "pvc/small", "{.status.phase}", "Bound");
    assert_eq!(c.jsonpath("pvc/small", "{.spec.volumeName}"), "manual");
    assert_eq!(c.jsonpath("pvc/small", "{.status.capacity.storage}"), "1Gi");
    c.apply(&pod_yaml("user", "small", "cat /data/seed"));
    c.wait_for(120, "pod/user", "{.status.phase}", "Succeeded");
    assert!(logs(c, "user").contains("static"));
    c.kubectl(&["delete", "pod", "user"]).ok();
    delete(c, "pvc/small");
    c.wait_for(30, "pv/manual", "{.status.phase}", "Released");
    assert!(host.path().join("seed").exists());
    delete(c, "pv/manual");
}

#[test]
fn claims_follow_their_node_and_reclaim_there() {
    let c = Cluster::start(3);
    claims_on_the_default_class(&c);
    static_volume_binds_to_a_matching_claim(&c);
    local_volume_on_a_block_device(&c);
}

/// StatefulSet `web` of `replicas` pods writing their hostname into their claim once
/// and printing it, with retention policy `when_deleted`/`when_scaled`.
fn stateful_set(name: &str, replicas: usize, policy: Option<(&str, &str)>) -> String {
    let policy = policy
        .map(|(d, s)| {
            format!("  persistentVolumeClaimRetentionPolicy:\n    whenDeleted: {d}\n    whenScaled: {s}\n")
        })
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  podManagementPolicy: Parallel
  serviceName: {name}
{policy}  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        command: [\"sh\", \"-c\", \"[ -f /data/name ] || hostname > /data/name; cat /data/name; sleep 3600\"]
        volumeMounts:
        - {{name: data, mountPath: /data}}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 16Mi
"
    )
}

fn wait_replicas_ready(c: &Cluster, set: &str, n: usize) {
    c.wait_for(
        180,
        &format!("statefulset/{set}"),
        "{.status.readyReplicas}",
        &n.to_string(),
    );
}

/// The kinds of the owners of claim `claim`, space-separated.
fn claim_owners(c: &Cluster, claim: &str) -> String {
    c.jsonpath(
        &format!("pvc/{claim}"),
        "{.metadata.ownerReferences[*].kind}",
    )
}

#[test]
fn stateful_set_replicas_keep_their_data_and_claims_follow_the_retention_policy() {
    let c = Cluster::start(3);
    c.apply(&stateful_set("web", 3, Some(("Retain", "Delete"))));
    c.apply(&stateful_set("solo", 1, None));
    wait_replicas_ready(&c, "web", 3);
    wait_replicas_ready(&c, "solo", 1);

    let mut placed = Vec::new();
    for i in 0..3 {
        let pod = format!("web-{i}");
        let claim = format!("data-web-{i}");
        c.wait_for(30, &format!("pvc/{claim}"), "{.status.phase}", "Bound");
        let node = node_of(&c, &pod);
        assert_eq!(
            c.jsonpath(
                &format!("pvc/{claim}"),
                "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"
            ),
            c.node_name(node)
        );
        assert!(
            eventually(30, || logs(&c, &pod).trim() == pod),
            "{pod} did not write its name: {:?}",
            logs(&c, &pod)
        );
        let uid = c.jsonpath(&format!("pod/{pod}"), "{.metadata.uid}");
        placed.push((pod, claim, node, uid));
    }

    // Delete every replica: each comes back on its claim's node with its own data.
    c.kubectl(&["delete", "pod", "web-0", "web-1", "web-2", "--wait=false"])
        .ok();
    for (pod, _, _, old_uid) in &placed {
        assert!(
            eventually(120, || {
                let uid = c.jsonpath(&format!("pod/{pod}"), "{.metadata.uid}");
                !uid.is_empty() && &uid != old_uid
            }),
            "{pod} was not recreated"
        );
    }
    wait_replicas_ready(&c, "web", 3);
    for (pod, claim, node, _) in &placed {
        assert_eq!(node_of(&c, pod), *node, "{pod} left its volume's node");
        assert_eq!(
            c.jsonpath(
                &format!("pod/{pod}"),
                "{.spec.volumes[0].persistentVolumeClaim.claimName}"
            ),
            *claim
        );
        assert!(
            eventually(30, || logs(&c, pod).trim() == pod),
            "{pod} did not read back its own data: {:?}",
            logs(&c, pod)
        );
    }

    // whenScaled: Delete — the claim of a scaled-down replica goes with its pod; the
    // others stay (whenDeleted: Retain: not owned by the set).
    let old_claim = c.jsonpath("pvc/data-web-2", "{.metadata.uid}");
    c.kubectl(&["scale", "statefulset", "web", "--replicas=2"])
        .ok();
    wait_gone(&c, 60, "pod/web-2");
    wait_gone(&c, 60, "pvc/data-web-2");
    for claim in ["data-web-0", "data-web-1"] {
        assert_eq!(
            c.jsonpath(&format!("pvc/{claim}"), "{.status.phase}"),
            "Bound"
        );
        assert_eq!(claim_owners(&c, claim), "");
    }
    // Scaling up again makes a new claim: the replica starts with an empty volume.
    c.kubectl(&["scale", "statefulset", "web", "--replicas=3"])
        .ok();
    wait_replicas_ready(&c, "web", 3);
    c.wait_for(30, "pvc/data-web-2", "{.status.phase}", "Bound");
    assert_ne!(c.jsonpath("pvc/data-web-2", "{.metadata.uid}"), old_claim);
    assert!(
        eventually(30, || logs(&c, "web-2").trim() == "web-2"),
        "web-2 did not write its name again: {:?}",
        logs(&c, "web-2")
    );

    // A changed policy reaches the existing claims: whenDeleted Delete, whenScaled
    // Retain makes the set their owner; scaling down now keeps the claim.
    c.kubectl(&[
        "patch",
        "statefulset",
        "web",
        "--type=merge",
        "-p",
        "{\"spec\":{\"persistentVolumeClaimRetentionPolicy\":{\"whenDeleted\":\"Delete\",\"whenScaled\":\"Retain\"}}}",
    ])
    .ok();
    for claim in ["data-web-0", "data-web-1", "data-web-2"] {
        assert!(
            eventually(30, || claim_owners(&c, claim) == "StatefulSet"),
            "{claim} owners: {:?}",
            claim_owners(&c, claim)
        );
    }
    c.kubectl(&["scale", "statefulset", "web", "--replicas=1"])
        .ok();
    wait_gone(&c, 60, "pod/web-1");
    wait_gone(&c, 60, "pod/web-2");
    std::thread::sleep(std::time::Duration::from_secs(3));
    for claim in ["data-web-1", "data-web-2"] {
        assert_eq!(
            c.jsonpath(&format!("pvc/{claim}"), "{.status.phase}"),
            "Bound"
        );
        assert_eq!(claim_owners(&c, claim), "StatefulSet");
    }

    // Deleting the sets: whenDeleted Delete takes web's claims, Retain (the default)
    // keeps solo's.
    c.kubectl(&["delete", "statefulset", "web", "solo", "--wait=false"])
        .ok();
    for claim in ["data-web-0", "data-web-1", "data-web-2"] {
        wait_gone(&c, 60, &format!("pvc/{claim}"));
    }
    wait_gone(&c, 60, "pod/solo-0");
    assert_eq!(c.jsonpath("pvc/data-solo-0", "{.status.phase}"), "Bound");
}
