//! The node's pod network as the agent runs it: wait for the node's podCIDR (the server's
//! node IPAM assigns it), bring up the built-in CNI ([`crate::cni`]) on it, publish the
//! node annotations flannel uses (so tools that read them, and the other nodes, find this
//! node's VTEP), and keep the cross-node routes in step with the other Nodes.
//!
//! With `--flannel-backend none` nothing is set up: pods get a namespace with loopback
//! only, for users who bring their own network.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::agent::client::{query_escape, ApiClient, PatchType};
use crate::cni::ipam::Ipv4Subnet;
use crate::cni::{format_mac, parse_mac, Backend, Cni, NodeNetwork, Peer};

/// flannel's node annotations (k3s keeps these names; the prefix is flannel's default).
pub const ANNOTATION_BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const ANNOTATION_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const ANNOTATION_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const ANNOTATION_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// How often the peer routes are rebuilt even without a node change (repairs routes
/// someone removed by hand).
const RESYNC: Duration = Duration::from_secs(60);

/// What the agent's network needs to know.
pub struct NetworkOptions {
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    pub backend: Backend,
    pub cluster_cidr: Ipv4Subnet,
    /// `<data-dir>/agent/cni`.
    pub state_dir: PathBuf,
}

/// Brings the node network up and starts following the other nodes. Returns `None`
/// for `--flannel-backend none`, or when `shutdown` comes first.
pub async fn start(
    api: &ApiClient,
    opts: NetworkOptions,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<Arc<Cni>>> {
    if opts.backend == Backend::None {
        tracing::info!("flannel backend none: pods get no network from k3rs");
        return Ok(None);
    }
    let Some(pod_cidr) = wait_for_pod_cidr(api, &opts.node_name, shutdown.clone()).await else {
        return Ok(None);
    };
    let cni = Cni::start(NodeNetwork {
        pod_cidr,
        cluster_cidr: opts.cluster_cidr,
        node_ip: opts.node_ip,
        backend: opts.backend,
        state_dir: opts.state_dir.clone(),
    })
    .await
    .with_context(|| format!("setting up the pod network on {pod_cidr}"))?;
    let cni = Arc::new(cni);
    publish_annotations(api, &opts, &cni)
        .await
        .context("publishing the node's network annotations")?;
    tracing::info!(
        pod_cidr = %pod_cidr,
        backend = ?opts.backend,
        mtu = cni.mtu(),
        "pod network is up"
    );
    tokio::spawn(follow_peers(
        api.clone(),
        cni.clone(),
        opts.node_name,
        shutdown,
    ));
    Ok(Some(cni))
}

/// Polls the node until the server gave it a podCIDR (IPv4).
async fn wait_for_pod_cidr(
    api: &ApiClient,
    node: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Ipv4Subnet> {
    let mut warned = false;
    loop {
        match api.get::<Value>(&format!("/api/v1/nodes/{node}")).await {
            Ok(Some(n)) => match ipv4_pod_cidr(&n) {
                Some(c) => return Some(c),
                None if !warned => {
                    tracing::info!(node, "waiting for the server to assign a podCIDR");
                    warned = true;
                }
                None => {}
            },
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the node"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = shutdown.changed() => return None,
        }
    }
}

/// The IPv4 entry of `spec.podCIDRs` (or `spec.podCIDR`).
fn ipv4_pod_cidr(node: &Value) -> Option<Ipv4Subnet> {
    let spec = &node["spec"];
    spec["podCIDRs"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&spec["podCIDR"]))
        .filter_map(Value::as_str)
        .find_map(|c| c.parse::<Ipv4Subnet>().ok())
}

/// The annotations flannel puts on its node (`backend-data` carries the VTEP MAC for
/// vxlan, `null` for host-gw).
fn annotations(opts: &NetworkOptions, vtep_mac: Option<[u8; 6]>) -> Value {
    let (kind, data) = match (opts.backend, vtep_mac) {
        (Backend::Vxlan, Some(mac)) => (
            "vxlan",
            json!({"VNI": 1, "VtepMAC": format_mac(&mac)}).to_string(),
        ),
        (Backend::Vxlan, None) => ("vxlan", "null".to_string()),
        _ => ("host-gw", "null".to_string()),
    };
    json!({
        ANNOTATION_BACKEND_TYPE: kind,
        ANNOTATION_BACKEND_DATA: data,
        ANNOTATION_PUBLIC_IP: opts.node_ip.to_string(),
        ANNOTATION_SUBNET_MANAGER: "true",
    })
}

async fn publish_annotations(
    api: &ApiClient,
    opts: &NetworkOptions,
    cni: &Cni,
) -> Result<(), crate::agent::client::ClientError> {
    let body = json!({"metadata": {"annotations": annotations(opts, cni.vtep_mac())}});
    api.patch::<Value>(
        &format!("/api/v1/nodes/{}", opts.node_name),
        PatchType::Merge,
        &body,
    )
    .await
    .map(|_| ())
}

/// A peer as its Node object describes it: InternalIP (flannel's public-ip annotation
/// first), podCIDR, and the VTEP MAC from backend-data.
fn peer_of(node: &Value) -> Option<Peer> {
    let name = node["metadata"]["name"].as_str()?.to_string();
    let annotations = &node["metadata"]["annotations"];
    let internal_ip = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "InternalIP")
        .filter_map(|a| a["address"].as_str())
        .find_map(|a| a.parse::<Ipv4Addr>().ok());
    let node_ip = annotations[ANNOTATION_PUBLIC_IP]
        .as_str()
        .and_then(|a| a.parse::<Ipv4Addr>().ok())
        .or(internal_ip)?;
    let pod_cidr = ipv4_pod_cidr(node)?;
    let vtep_mac = annotations[ANNOTATION_BACKEND_DATA]
        .as_str()
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .and_then(|d| d["VtepMAC"].as_str().and_then(parse_mac));
    Some(Peer {
        name,
        node_ip,
        pod_cidr,
        vtep_mac,
    })
}

/// Lists and watches all Nodes; after every change, makes the routes match the other
/// nodes (every [`RESYNC`] as well).
async fn follow_peers(
    api: ApiClient,
    cni: Arc<Cni>,
    me: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut nodes: BTreeMap<String, Value> = BTreeMap::new();
    loop {
        let list: Value = match api
            .request_json(http::Method::GET, "/api/v1/nodes", None)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list nodes; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        nodes.clear();
        for n in list["items"].as_array().into_iter().flatten() {
            if let Some(name) = n["metadata"]["name"].as_str() {
                nodes.insert(name.to_string(), n.clone());
            }
        }
        sync(&cni, &nodes, &me).await;
        let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0");
        let path = format!(
            "/api/v1/nodes?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={}",
            query_escape(rv),
            RESYNC.as_secs()
        );
        let mut stream = match api.watch(&path).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch nodes; relisting");
                continue;
            }
        };
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = shutdown.changed() => return,
            };
            let ev = match event {
                Ok(Some(ev)) => ev,
                // The watch timed out or broke: relist, which also resyncs.
                Ok(None) | Err(_) => break,
            };
            let Some(name) = ev.object["metadata"]["name"].as_str().map(str::to_string) else {
                continue;
            };
            let changed = match ev.kind.as_str() {
                "DELETED" => nodes.remove(&name).is_some(),
                "ADDED" | "MODIFIED" => {
                    let before = nodes.get(&name).and_then(peer_of).map(route_facts);
                    let after = peer_of(&ev.object).map(route_facts);
                    nodes.insert(name, ev.object);
                    before != after
                }
                _ => false,
            };
            if changed {
                sync(&cni, &nodes, &me).await;
            }
        }
    }
}

/// What of a peer the routes depend on (node status updates every few seconds do not
/// change it).
fn route_facts(p: Peer) -> (Ipv4Addr, Ipv4Subnet, Option<[u8; 6]>) {
    (p.node_ip, p.pod_cidr, p.vtep_mac)
}

async fn sync(cni: &Cni, nodes: &BTreeMap<String, Value>, me: &str) {
    let peers: Vec<Peer> = nodes
        .iter()
        .filter(|(name, _)| name.as_str() != me)
        .filter_map(|(_, n)| peer_of(n))
        .collect();
    if let Err(e) = cni.sync_peers(&peers).await {
        tracing::warn!(error = %e, "cannot update the routes to other nodes");
    } else {
        tracing::debug!(peers = peers.len(), "routes to other nodes updated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_come_from_node_objects() {
        let node = json!({
            "metadata": {"name": "n2", "annotations": {
                ANNOTATION_BACKEND_DATA: "{\"VNI\":1,\"VtepMAC\":\"0a:1b:2c:3d:4e:5f\"}",
            }},
            "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["fd00:42::/64", "10.42.1.0/24"]},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n2"},
                {"type": "InternalIP", "address": "172.30.0.12"},
            ]},
        });
        let p = peer_of(&node).expect("peer");
        assert_eq!(p.name, "n2");
        assert_eq!(p.node_ip, Ipv4Addr::new(172, 30, 0, 12));
        assert_eq!(p.pod_cidr.to_string(), "10.42.1.0/24");
        assert_eq!(p.vtep_mac, Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]));
        // A node without a podCIDR yet is no peer.
        let mut bare = node.clone();
        bare["spec"] = json!({});
        assert!(peer_of(&bare).is_none());
    }

    #[test]
    fn annotations_carry_the_vtep_mac() {
        let opts = NetworkOptions {
            node_name: "n1".into(),
            node_ip: Ipv4Addr::new(172, 30, 0, 11),
            backend: Backend::Vxlan,
            cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
            state_dir: PathBuf::new(),
        };
        let a = annotations(&opts, Some([0xaa, 0, 0, 0, 0, 1]));
        assert_eq!(a[ANNOTATION_BACKEND_TYPE], "vxlan");
        assert_eq!(
            a[ANNOTATION_BACKEND_DATA],
            "{\"VNI\":1,\"VtepMAC\":\"aa:00:00:00:00:01\"}"
        );
        assert_eq!(a[ANNOTATION_PUBLIC_IP], "172.30.0.11");
        assert_eq!(parse_mac("aa:00:00:00:00:01"), Some([0xaa, 0, 0, 0, 0, 1]));
        assert_eq!(parse_mac("aa:00"), None);
        let host_gw = NetworkOptions {
            backend: Backend::HostGw,
            ..opts
        };
        assert_eq!(annotations(&host_gw, None)[ANNOTATION_BACKEND_DATA], "null");
    }
}
