//! TEMPORARY STUB (lead's tree only, replaced by the cni branch).
pub mod ipam;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend { Vxlan, HostGw, None }
pub struct NodeNetwork {
    pub pod_cidr: ipam::Ipv4Subnet,
    pub cluster_cidr: ipam::Ipv4Subnet,
    pub node_ip: Ipv4Addr,
    pub backend: Backend,
    pub state_dir: PathBuf,
}
pub struct PodNet { pub ip: Ipv4Addr, pub prefix: u8, pub gateway: Ipv4Addr, pub host_veth: String }
pub struct Peer { pub name: String, pub node_ip: Ipv4Addr, pub pod_cidr: ipam::Ipv4Subnet, pub vtep_mac: Option<[u8; 6]> }
#[derive(Debug, thiserror::Error)]
pub enum CniError { #[error("x")] X }
pub struct Cni;
impl Cni {
    pub async fn start(_cfg: NodeNetwork) -> Result<Cni, CniError> { todo!() }
    pub fn mtu(&self) -> u32 { 0 }
    pub fn vtep_mac(&self) -> Option<[u8; 6]> { None }
    pub async fn attach(&self, _pod_uid: &str, _netns: &Path) -> Result<PodNet, CniError> { todo!() }
    pub async fn detach(&self, _pod_uid: &str) -> Result<(), CniError> { todo!() }
    pub async fn gc(&self, _live: &[String]) -> Result<(), CniError> { todo!() }
    pub async fn sync_peers(&self, _peers: &[Peer]) -> Result<(), CniError> { todo!() }
}
