//! The built-in bridge CNI: everything that gives pods on this node a network.
//!
//! [`Cni`] is the one entry point the agent holds. It owns the node-side setup (sysctls,
//! bridge `cni0`, the VXLAN device `flannel.1`, masquerade rules), per-pod wiring (veth
//! pair, address from [`ipam`], default route) and cross-node state (routes, neighbours and
//! FDB entries towards other nodes' pod subnets). All link, address, route and neighbour
//! work goes through netlink; `setns` happens only on short-lived dedicated threads.
//!
//! The node ("host") namespace is the network namespace of the thread that calls
//! [`Cni::start`]; every host-side operation is bound to it (a netlink socket created
//! there, sysctl writes and `nft` from threads or children that entered it). That lets the
//! agent run inside a per-node namespace of the multi-node test harness.
//!
//! Layout: [`node`] (start-time setup), [`pod`] (attach, detach, gc), [`peers`]
//! (cross-node sync), [`masq`] (nftables), [`nl`] (netlink helpers), [`nsthread`]
//! (namespace threads), [`reaper`] (link deletion off the async runtime).

pub mod ipam;
mod masq;
mod nl;
mod node;
mod nsthread;
mod peers;
mod pod;
mod reaper;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// Name of the pod bridge, as in k3s (flannel's CNI config uses `cni0`).
pub const BRIDGE: &str = "cni0";
/// Name of the VXLAN device, as flannel names it for VNI 1.
pub const VXLAN_DEVICE: &str = "flannel.1";
/// VXLAN network identifier flannel uses by default.
pub const VXLAN_VNI: u32 = 1;
/// VXLAN UDP port flannel uses (the Linux default, not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;
/// Bytes the VXLAN encapsulation adds (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Name of the pod's interface inside its namespace.
pub const POD_IFNAME: &str = "eth0";
/// The nftables table holding our masquerade and forward rules.
pub const NFT_TABLE: &str = "k3rs-cni";

/// Cross-node backend, named like k3s's `--flannel-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// VXLAN overlay through `flannel.1` (the default).
    Vxlan,
    /// Plain routes to other nodes' pod subnets via their node IPs (needs one L2 segment).
    HostGw,
    /// No cross-node setup at all (the user brings their own).
    None,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::None => "none",
        })
    }
}

impl FromStr for Backend {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Backend, CniError> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            "none" => Ok(Backend::None),
            other => Err(CniError::UnknownBackend(other.to_string())),
        }
    }
}

/// What the node's pod network looks like.
#[derive(Debug, Clone)]
pub struct NodeNetwork {
    /// This node's `spec.podCIDR`.
    pub pod_cidr: ipam::Ipv4Subnet,
    /// `--cluster-cidr`: traffic from it to anything outside it is masqueraded.
    pub cluster_cidr: ipam::Ipv4Subnet,
    /// The node's InternalIP; the uplink is the link holding it.
    pub node_ip: Ipv4Addr,
    /// Cross-node backend.
    pub backend: Backend,
    /// `<data-dir>/agent/cni`; IPAM state lives below it.
    pub state_dir: PathBuf,
}

/// The network a pod got from [`Cni::attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// Prefix length of the pod subnet.
    pub prefix: u8,
    /// The default gateway (the bridge address).
    pub gateway: Ipv4Addr,
    /// Name of the host end of the veth pair.
    pub host_veth: String,
}

/// Another node, as far as cross-node networking cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Node name (for messages).
    pub name: String,
    /// Its InternalIP.
    pub node_ip: Ipv4Addr,
    /// Its `spec.podCIDR`.
    pub pod_cidr: ipam::Ipv4Subnet,
    /// Its VTEP MAC (flannel's `backend-data` annotation); vxlan peers without it are
    /// skipped until they publish one.
    pub vtep_mac: Option<[u8; 6]>,
}

/// What failed while setting up pod or node networking.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A netlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// The operation, naming the link or address.
        what: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The node IP is on no link of the node namespace.
    #[error(
        "node IP {0} is not assigned to any interface in the node's network namespace; \
         set --node-ip to an address of this machine"
    )]
    NoUplink(Ipv4Addr),
    /// Pod address allocation failed.
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
    /// A file or namespace operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `nft` rejected our ruleset.
    #[error("applying nftables table {NFT_TABLE} failed: {0}")]
    Nft(String),
    /// A `--flannel-backend` value we do not know.
    #[error("unknown flannel backend {0:?}: use vxlan, host-gw or none")]
    UnknownBackend(String),
    /// A helper thread died.
    #[error("network namespace helper thread for {0} failed to run")]
    Thread(String),
}

/// The node's pod network; `Send + Sync`, meant to live in an `Arc` for the agent's life.
pub struct Cni {
    cfg: NodeNetwork,
    /// Netlink connection bound to the node namespace, kept for the Cni's life.
    host: rtnetlink::Handle,
    ipam: Arc<ipam::HostLocal>,
    /// Deletes links on a thread of its own (see [`reaper`]).
    reaper: reaper::Reaper,
    bridge_index: u32,
    mtu: u32,
    /// `flannel.1` index and MAC (vxlan only).
    vtep: Option<(u32, [u8; 6])>,
    /// Serialises [`Cni::sync_peers`] so two syncs do not fight over the same entries.
    peers_lock: tokio::sync::Mutex<()>,
}

// The agent shares one Cni across tasks in an Arc.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Cni>();
};

impl Cni {
    /// Idempotent node setup (an agent restart does not disturb running pods): sysctls,
    /// bridge `cni0` with the first address of the pod subnet, MTU from the uplink minus
    /// the overlay overhead, `flannel.1` for vxlan (MAC kept across restarts), and the
    /// masquerade/forward rules. The calling thread's network namespace becomes the
    /// node namespace for everything this Cni does.
    pub async fn start(cfg: NodeNetwork) -> Result<Cni, CniError> {
        node::start(cfg).await
    }

    /// MTU of the bridge and of every pod interface.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// MAC of `flannel.1` (vxlan only), to publish in the node's annotations.
    pub fn vtep_mac(&self) -> Option<[u8; 6]> {
        self.vtep.map(|(_, mac)| mac)
    }

    /// The configuration this Cni was started with.
    pub fn config(&self) -> &NodeNetwork {
        &self.cfg
    }

    /// Gives the pod in `netns` (a bind-mounted namespace file) its network: an address
    /// owned by `pod_uid`, a veth pair (host end [`host_veth_name`] on `cni0` with hairpin,
    /// pod end `eth0`), address, default route via the gateway, MTU. Idempotent per
    /// `pod_uid`: a repeated call ends in the same state and returns the same address.
    pub async fn attach(&self, pod_uid: &str, netns: &Path) -> Result<PodNet, CniError> {
        pod::attach(self, pod_uid, netns).await
    }

    /// Idempotent teardown: deletes the host veth if present (its peer goes with it) and
    /// releases the address. Works whether or not the pod namespace still exists.
    pub async fn detach(&self, pod_uid: &str) -> Result<(), CniError> {
        pod::detach(self, pod_uid).await
    }

    /// After an agent restart: releases addresses and host veths of pods not in `live`.
    pub async fn gc(&self, live: &[String]) -> Result<(), CniError> {
        pod::gc(self, live).await
    }

    /// Makes cross-node state match exactly `peers` (the other nodes): adds new, updates
    /// changed and removes gone routes, neighbours and FDB entries. Only entries this
    /// module made are touched.
    pub async fn sync_peers(&self, peers: &[Peer]) -> Result<(), CniError> {
        let _guard = self.peers_lock.lock().await;
        peers::sync(self, peers).await
    }
}

/// Name of the host end of a pod's veth: `veth` + 8 hex digits of a stable hash of the
/// pod UID (FNV-1a; stable across builds, unlike std's hasher), 12 characters, within
/// the kernel's 15-character limit.
pub fn host_veth_name(pod_uid: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in pod_uid.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("veth{h:08x}")
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff` (flannel's `VtepMAC` annotation format).
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`; `None` when malformed.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}
