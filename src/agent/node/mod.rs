//! This node in the API: registers (or updates) the Node object with its labels,
//! addresses, capacity and nodeInfo; renews its Lease in `kube-node-lease` every 10 s;
//! re-reads the machine every 10 s and posts the node status when a condition changes,
//! or once a minute.

pub mod host;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agent::client::{ApiClient, ClientError, PatchType};

/// How often the Lease is renewed, and the machine re-read.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How often the status is posted when nothing changed.
pub const STATUS_REPORT: Duration = Duration::from_secs(60);
/// The Lease's duration: four missed renewals.
pub const LEASE_DURATION_SECONDS: u64 = 40;
/// Pods a node takes (upstream's default).
pub const MAX_PODS: u32 = 110;

/// Eviction-style thresholds behind the pressure conditions (upstream's hard defaults).
const MEMORY_AVAILABLE_MIN: u64 = 100 * 1024 * 1024;
const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;

/// What the node says about itself.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub node_ip: IpAddr,
    pub kubelet_port: u16,
    /// A `k3rs server` node: gets the control-plane role labels.
    pub control_plane: bool,
    /// Extra `--node-label`s.
    pub labels: Vec<(String, String)>,
    /// Where pod data lives (its filesystem is the node's ephemeral storage).
    pub data_dir: PathBuf,
    /// containerd's version, for nodeInfo.
    pub runtime_version: String,
}

fn node_path(name: &str) -> String {
    format!("/api/v1/nodes/{name}")
}

fn labels(cfg: &NodeConfig) -> serde_json::Map<String, Value> {
    let mut l = serde_json::Map::new();
    let arch = host::arch();
    for (k, v) in [
        ("beta.kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("kubernetes.io/hostname", cfg.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("node.kubernetes.io/instance-type", "k3rs"),
    ] {
        l.insert(k.into(), v.into());
    }
    if cfg.control_plane {
        l.insert(
            "node-role.kubernetes.io/control-plane".into(),
            "true".into(),
        );
        l.insert("node-role.kubernetes.io/master".into(), "true".into());
    }
    for (k, v) in &cfg.labels {
        l.insert(k.clone(), v.clone().into());
    }
    l
}

/// Creates the Node, or brings an existing one's labels up to date.
pub async fn register(client: &ApiClient, cfg: &NodeConfig) -> Result<(), ClientError> {
    let path = node_path(&cfg.name);
    let existing: Option<Value> = client.get(&path).await?;
    match existing {
        None => {
            let node = json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": cfg.name,
                    "labels": labels(cfg),
                    "annotations": {
                        "node.alpha.kubernetes.io/ttl": "0",
                        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                        "k3rs.io/node-ip": cfg.node_ip.to_string(),
                    },
                },
                "spec": {},
            });
            match client.create::<_, Value>("/api/v1/nodes", &node).await {
                Ok(_) => tracing::info!(node = %cfg.name, "node registered"),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Some(_) => {
            let patch = json!({"metadata": {
                "labels": labels(cfg),
                "annotations": {"k3rs.io/node-ip": cfg.node_ip.to_string()},
            }});
            client
                .patch::<Value>(&path, PatchType::Merge, &patch)
                .await?;
            tracing::info!(node = %cfg.name, "node already registered; labels updated");
        }
    }
    Ok(())
}

/// One condition as computed now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    kind: &'static str,
    status: &'static str,
    reason: &'static str,
    message: String,
}

fn conditions(runtime_ok: bool, network_ready: bool, cfg: &NodeConfig) -> Vec<Condition> {
    let (_, mem_avail) = host::memory();
    let (disk_total, disk_avail) = host::filesystem(&cfg.data_dir);
    let (pids_running, pid_max) = host::pids();
    let memory_pressure = mem_avail > 0 && mem_avail < MEMORY_AVAILABLE_MIN;
    let disk_pressure =
        disk_total > 0 && disk_avail * 100 < disk_total * DISK_AVAILABLE_MIN_PERCENT;
    let pid_pressure = pids_running * 100 > pid_max * 90;
    let c =
        |kind, pressure: bool, yes: &'static str, no: &'static str, my: &str, mn: &str| Condition {
            kind,
            status: if pressure { "True" } else { "False" },
            reason: if pressure { yes } else { no },
            message: if pressure { my } else { mn }.to_string(),
        };
    vec![
        c(
            "MemoryPressure",
            memory_pressure,
            "KubeletHasInsufficientMemory",
            "KubeletHasSufficientMemory",
            "kubelet has insufficient memory available",
            "kubelet has sufficient memory available",
        ),
        c(
            "DiskPressure",
            disk_pressure,
            "KubeletHasDiskPressure",
            "KubeletHasNoDiskPressure",
            "kubelet has disk pressure",
            "kubelet has no disk pressure",
        ),
        c(
            "PIDPressure",
            pid_pressure,
            "KubeletHasInsufficientPID",
            "KubeletHasSufficientPID",
            "kubelet has insufficient PID available",
            "kubelet has sufficient PID available",
        ),
        match (runtime_ok, network_ready) {
            (true, true) => Condition {
                kind: "Ready",
                status: "True",
                reason: "KubeletReady",
                message: "kubelet is posting ready status".into(),
            },
            (false, _) => Condition {
                kind: "Ready",
                status: "False",
                reason: "KubeletNotReady",
                message: "container runtime is down".into(),
            },
            // The kubelet's words while the CNI has not initialised.
            (true, false) => Condition {
                kind: "Ready",
                status: "False",
                reason: "KubeletNotReady",
                message: "container runtime network not ready: NetworkReady=false \
                          reason:NetworkPluginNotReady message:Network plugin returns error: \
                          cni plugin not initialized"
                    .into(),
            },
        },
    ]
}

fn kib(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

/// When each condition last changed: type → (status, lastTransitionTime).
type Transitions = HashMap<String, (String, String)>;

/// Records `conds` at `now`, keeping the transition time of a condition whose status
/// did not change.
fn update_transitions(transitions: &mut Transitions, conds: &[Condition], now: &str) {
    for c in conds {
        let entry = transitions
            .entry(c.kind.to_string())
            .or_insert_with(|| (c.status.to_string(), now.to_string()));
        if entry.0 != c.status {
            *entry = (c.status.to_string(), now.to_string());
        }
    }
}

fn status_body(
    cfg: &NodeConfig,
    conds: &[Condition],
    transitions: &Transitions,
    now: &str,
) -> Value {
    let (mem_total, _) = host::memory();
    let (disk_total, _) = host::filesystem(&cfg.data_dir);
    let resources = json!({
        "cpu": host::cpus().to_string(),
        "ephemeral-storage": kib(disk_total),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": kib(mem_total),
        "pods": MAX_PODS.to_string(),
    });
    let conditions: Vec<Value> = conds
        .iter()
        .map(|c| {
            let since = transitions
                .get(c.kind)
                .map(|(_, t)| t.as_str())
                .unwrap_or(now);
            json!({
                "type": c.kind,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            })
        })
        .collect();
    let version = crate::version::git_version();
    json!({
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip.to_string()},
            {"type": "Hostname", "address": cfg.name},
        ],
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
        "nodeInfo": {
            "architecture": host::arch(),
            "bootID": host::boot_id(),
            "containerRuntimeVersion": format!("containerd://{}", cfg.runtime_version),
            "kernelVersion": host::kernel_version(),
            "kubeProxyVersion": version,
            "kubeletVersion": version,
            "machineID": host::machine_id(),
            "operatingSystem": "linux",
            "osImage": host::os_image(),
            "systemUUID": host::system_uuid(),
        },
    })
}

/// Keeps the Lease and the node status fresh until `shutdown`. `runtime_ok` is asked
/// each heartbeat whether the container runtime answers; `network_ready` says whether
/// the pod network is up (the status is posted as soon as it changes).
pub async fn run<F, Fut>(
    client: ApiClient,
    cfg: NodeConfig,
    mut runtime_ok: F,
    mut network_ready: tokio::sync::watch::Receiver<bool>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut last: Option<(Vec<Condition>, Instant)> = None;
    // Seeded from the node as it is on the server, so a restart keeps transition times.
    let mut transitions = Transitions::new();
    let mut node_uid: Option<String> = None;
    if let Ok(Some(node)) = client.get::<Value>(&node_path(&cfg.name)).await {
        node_uid = node["metadata"]["uid"].as_str().map(str::to_string);
        for c in node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let (Some(kind), Some(status), Some(since)) = (
                c["type"].as_str(),
                c["status"].as_str(),
                c["lastTransitionTime"].as_str(),
            ) {
                transitions.insert(kind.to_string(), (status.to_string(), since.to_string()));
            }
        }
    }
    let mut lease: Option<Value> = None;
    loop {
        let ok = runtime_ok().await;
        let net = *network_ready.borrow_and_update();
        let conds = conditions(ok, net, &cfg);
        let due = match &last {
            None => true,
            Some((prev, at)) => *prev != conds || at.elapsed() >= STATUS_REPORT,
        };
        if due {
            let now = crate::api::meta::now_rfc3339();
            update_transitions(&mut transitions, &conds, &now);
            let status = status_body(&cfg, &conds, &transitions, &now);
            let path = format!("{}/status", node_path(&cfg.name));
            match client
                .patch::<Value>(&path, PatchType::Merge, &json!({ "status": status }))
                .await
            {
                Ok(node) => {
                    if last.as_ref().map(|(p, _)| p != &conds).unwrap_or(true) {
                        tracing::info!(node = %cfg.name, ready = ok && net, "node status posted");
                    }
                    node_uid = node["metadata"]["uid"].as_str().map(str::to_string);
                    last = Some((conds, Instant::now()));
                }
                Err(e) if e.is_not_found() => {
                    tracing::warn!(node = %cfg.name, "node object is gone; registering again");
                    if let Err(e) = register(&client, &cfg).await {
                        tracing::warn!(error = %e, "cannot register node");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot post node status"),
            }
        }
        match renew_lease(&client, &cfg.name, node_uid.as_deref(), lease.take()).await {
            Ok(renewed) => lease = Some(renewed),
            Err(e) => tracing::warn!(error = %e, "cannot renew node lease"),
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            // Not an error when the sender is gone: then only the heartbeat wakes us.
            Ok(()) = network_ready.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Creates or renews `kube-node-lease/<node>`. `cached` is the Lease as the last
/// renewal left it (saves reading it again); returns it as renewed. A stale copy (a
/// conflict) is read again next time.
pub async fn renew_lease(
    client: &ApiClient,
    node: &str,
    node_uid: Option<&str>,
    cached: Option<Value>,
) -> Result<Value, ClientError> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}");
    let now = crate::api::meta::now_rfc3339_micro();
    let existing = match cached {
        Some(l) => Some(l),
        None => client.get(&path).await?,
    };
    match existing {
        Some(mut lease) => {
            lease["spec"]["renewTime"] = now.into();
            lease["spec"]["holderIdentity"] = node.into();
            lease["spec"]["leaseDurationSeconds"] = LEASE_DURATION_SECONDS.into();
            client.replace(&path, &lease).await
        }
        None => {
            let mut lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": node,
                    "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                    "renewTime": now,
                },
            });
            if let Some(uid) = node_uid {
                lease["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "v1", "kind": "Node", "name": node, "uid": uid,
                }]);
            }
            client
                .create(
                    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                    &lease,
                )
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NodeConfig {
        NodeConfig {
            name: "n1".into(),
            node_ip: "10.0.0.5".parse().expect("ip"),
            kubelet_port: 10250,
            control_plane: true,
            labels: vec![("tier".into(), "edge".into())],
            data_dir: PathBuf::from("/"),
            runtime_version: "1.6.20".into(),
        }
    }

    #[test]
    fn labels_carry_roles_and_platform() {
        let l = labels(&cfg());
        assert_eq!(l["kubernetes.io/hostname"], "n1");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["node-role.kubernetes.io/control-plane"], "true");
        assert_eq!(l["tier"], "edge");
    }

    #[test]
    fn status_has_upstream_shape() {
        let c = cfg();
        let conds = conditions(true, true, &c);
        let mut t = Transitions::new();
        update_transitions(&mut t, &conds, "t0");
        let s = status_body(&c, &conds, &t, "t0");
        assert_eq!(s["addresses"][0]["type"], "InternalIP");
        assert_eq!(s["addresses"][0]["address"], "10.0.0.5");
        assert_eq!(s["capacity"]["pods"], "110");
        assert!(s["capacity"]["memory"]
            .as_str()
            .expect("mem")
            .ends_with("Ki"));
        assert_eq!(s["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        assert_eq!(
            s["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
        let ready = s["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Ready")
            .expect("ready");
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["reason"], "KubeletReady");
        let down = conditions(false, true, &c);
        assert_eq!(down[3].reason, "KubeletNotReady");
        let no_network = conditions(true, false, &c);
        assert_eq!(no_network[3].status, "False");
        assert!(no_network[3].message.contains("NetworkPluginNotReady"));
    }

    #[test]
    fn transition_times_change_only_with_the_status() {
        let c = cfg();
        let up = conditions(true, true, &c);
        let down = conditions(false, true, &c);
        let mut t = Transitions::new();
        update_transitions(&mut t, &up, "t0");
        update_transitions(&mut t, &up, "t1");
        assert_eq!(t["Ready"], ("True".to_string(), "t0".to_string()));
        update_transitions(&mut t, &down, "t2");
        assert_eq!(t["Ready"], ("False".to_string(), "t2".to_string()));
        assert_eq!(t["MemoryPressure"].1, "t0");
    }
}
