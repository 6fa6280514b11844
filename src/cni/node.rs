//! Node-side setup done once per agent start ([`super::Cni::start`]): find the uplink and
//! its MTU, sysctls, bridge `cni0`, the VXLAN device `flannel.1`, masquerade rules and the
//! IPAM store. Every step converges on the wanted state without disturbing what is
//! already right, so restarting the agent keeps running pods connected.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVxlan};

use super::nl::{self, errno, fail};
use super::reaper::Reaper;
use super::{
    ipam, masq, nsthread, Backend, Cni, CniError, NodeNetwork, BRIDGE, VXLAN_DEVICE,
    VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_VNI,
};

/// IPAM network name, as k3s's flannel CNI config calls its network.
const NETWORK_NAME: &str = "cbr0";

/// Smallest MTU IPv4 allows; a uplink MTU so small that the overhead would go below it
/// is clamped rather than failing.
const MIN_MTU: u32 = 68;

pub(super) async fn start(cfg: NodeNetwork) -> Result<Cni, CniError> {
    // Capture the node namespace and bind the netlink socket to it before the first
    // await: after an await the task may resume on another thread.
    let host_ns = Arc::new(nsthread::current()?);
    let (conn, host, _) = rtnetlink::new_connection().map_err(|source| CniError::Io {
        what: "open netlink socket in",
        path: nsthread::SELF_NS.into(),
        source,
    })?;
    tokio::spawn(conn);

    let (uplink_index, uplink_mtu) = uplink(&host, cfg.node_ip).await?;
    let overhead = match cfg.backend {
        Backend::Vxlan => VXLAN_OVERHEAD,
        Backend::HostGw | Backend::None => 0,
    };
    let mtu = uplink_mtu.saturating_sub(overhead).max(MIN_MTU);

    sysctls(host_ns.clone()).await?;
    let bridge_index = ensure_bridge(&host, &cfg, mtu).await?;
    let vtep = match cfg.backend {
        Backend::Vxlan => Some(ensure_vxlan(&host, &cfg, uplink_index, mtu).await?),
        // A previous run with vxlan left the device (and its routes): drop them.
        Backend::HostGw | Backend::None => {
            remove_vxlan(&host).await?;
            None
        }
    };
    masq::apply(&host_ns, cfg.cluster_cidr).await?;
    let reaper = Reaper::start(host_ns)?;

    let dir = cfg.state_dir.join("ipam").join(NETWORK_NAME);
    let store = tokio::task::spawn_blocking(move || ipam::HostLocal::open(dir))
        .await
        .map_err(|_| CniError::Thread("IPAM store".into()))??;
    tracing::info!(
        bridge = BRIDGE,
        pod_cidr = %cfg.pod_cidr,
        backend = %cfg.backend,
        mtu,
        "pod network ready"
    );
    Ok(Cni {
        cfg,
        host,
        ipam: Arc::new(store),
        reaper,
        bridge_index,
        mtu,
        vtep,
        peers_lock: tokio::sync::Mutex::new(()),
    })
}

/// Index and MTU of the link holding `node_ip`.
async fn uplink(h: &Handle, node_ip: Ipv4Addr) -> Result<(u32, u32), CniError> {
    let addrs: Vec<_> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(fail("list addresses of the node"))?;
    let index = addrs
        .iter()
        .find(|m| {
            m.attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(ip)) if *ip == node_ip))
        })
        .map(|m| m.header.index)
        .ok_or(CniError::NoUplink(node_ip))?;
    let link = nl::link_by_index(h, index)
        .await?
        .ok_or(CniError::NoUplink(node_ip))?;
    Ok((index, nl::mtu(&link).unwrap_or(1500)))
}

/// `net.ipv4.ip_forward=1` and, when br_netfilter is loaded, bridge-nf-call-iptables=1,
/// written from a thread inside the node namespace (these files are per namespace).
async fn sysctls(host_ns: Arc<File>) -> Result<(), CniError> {
    nsthread::run_in(host_ns, "sysctl", || {
        set_sysctl(Path::new("/proc/sys/net/ipv4/ip_forward"), true)?;
        set_sysctl(
            Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables"),
            false,
        )?;
        Ok(())
    })
    .await
}

/// Writes `1` unless already set; a missing optional file is skipped.
fn set_sysctl(path: &Path, required: bool) -> Result<(), CniError> {
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            tracing::debug!(path = %path.display(), "sysctl not present (br_netfilter not loaded)");
            return Ok(());
        }
        Err(source) => {
            return Err(CniError::Io {
                what: "read sysctl",
                path: path.into(),
                source,
            })
        }
    }
    std::fs::write(path, "1").map_err(|source| CniError::Io {
        what: "write sysctl",
        path: path.into(),
        source,
    })
}

/// A locally administered unicast MAC from a prefix byte and an IPv4 address, so the
/// bridge and the VTEP get stable addresses across restarts and reboots (a bridge with
/// a kernel-chosen MAC changes it as ports come and go, which breaks pods' ARP caches).
fn derived_mac(first: u8, ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [first, 0x58, o[0], o[1], o[2], o[3]]
}

/// `cni0` up with MTU `mtu` and exactly the gateway address; returns its index.
async fn ensure_bridge(h: &Handle, cfg: &NodeNetwork, mtu: u32) -> Result<u32, CniError> {
    let gateway = ipam::gateway(cfg.pod_cidr);
    if nl::link_by_name(h, BRIDGE).await?.is_none() {
        let msg = LinkBridge::new(BRIDGE)
            .mtu(mtu)
            .address(derived_mac(0x0a, gateway).to_vec())
            .build();
        match h.link().add(msg).execute().await {
            Ok(()) => tracing::info!(bridge = BRIDGE, "created pod bridge"),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(fail(format!("create bridge {BRIDGE}"))(e)),
        }
    }
    let link = nl::link_by_name(h, BRIDGE)
        .await?
        .ok_or_else(|| missing(BRIDGE))?;
    let index = link.header.index;
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(fail(format!("set {BRIDGE} up with MTU {mtu}")))?;
    nl::ensure_only_addr(h, index, gateway, cfg.pod_cidr.prefix(), BRIDGE).await?;
    Ok(index)
}

fn missing(name: &str) -> CniError {
    CniError::Netlink {
        what: format!("look up {name} right after creating it"),
        source: std::io::Error::from_raw_os_error(libc::ENODEV),
    }
}

/// Whether an existing `flannel.1` has the parameters we would give it.
fn vxlan_matches(link: &LinkMessage, cfg: &NodeNetwork, uplink: u32) -> bool {
    let Some(infos) = nl::link_attr(link, |a| match a {
        LinkAttribute::LinkInfo(v) => Some(v.clone()),
        _ => None,
    }) else {
        return false;
    };
    let Some(data) = infos.into_iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(d)) => Some(d),
        _ => None,
    }) else {
        return false;
    };
    let has = |want: &InfoVxlan| data.iter().any(|d| d == want);
    has(&InfoVxlan::Id(VXLAN_VNI))
        && has(&InfoVxlan::Local(cfg.node_ip))
        && has(&InfoVxlan::Port(VXLAN_PORT))
        && has(&InfoVxlan::Link(uplink))
        && has(&InfoVxlan::Learning(false))
}

/// `flannel.1` (VNI 1, UDP 8472, local node IP, dev uplink, nolearning) up with MTU
/// `mtu` and the pod subnet's network address as /32, as flannel sets it. An existing
/// compatible device is kept as is (MAC included); an incompatible one (node IP or
/// uplink changed) is recreated with the same MAC. Returns index and MAC.
async fn ensure_vxlan(
    h: &Handle,
    cfg: &NodeNetwork,
    uplink: u32,
    mtu: u32,
) -> Result<(u32, [u8; 6]), CniError> {
    let mut mac = derived_mac(0x0e, cfg.node_ip);
    let existing = nl::link_by_name(h, VXLAN_DEVICE).await?;
    let mut keep = false;
    if let Some(link) = &existing {
        if let Some(m) = nl::mac(link) {
            mac = m;
        }
        keep = vxlan_matches(link, cfg, uplink);
        if !keep {
            tracing::warn!(
                device = VXLAN_DEVICE,
                "existing VXLAN device is not compatible (node IP or uplink changed); recreating it"
            );
            h.link()
                .del(link.header.index)
                .execute()
                .await
                .map_err(fail(format!("delete incompatible {VXLAN_DEVICE}")))?;
        }
    }
    if !keep {
        let msg = LinkVxlan::new(VXLAN_DEVICE, VXLAN_VNI)
            .dev(uplink)
            .local(cfg.node_ip)
            .port(VXLAN_PORT)
            .learning(false)
            .mtu(mtu)
            .address(mac.to_vec())
            .build();
        h.link()
            .add(msg)
            .execute()
            .await
            .map_err(fail(format!("create VXLAN device {VXLAN_DEVICE}")))?;
    }
    let link = nl::link_by_name(h, VXLAN_DEVICE)
        .await?
        .ok_or_else(|| missing(VXLAN_DEVICE))?;
    let index = link.header.index;
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(fail(format!("set {VXLAN_DEVICE} up with MTU {mtu}")))?;
    nl::ensure_only_addr(h, index, cfg.pod_cidr.network(), 32, VXLAN_DEVICE).await?;
    Ok((index, nl::mac(&link).unwrap_or(mac)))
}

async fn remove_vxlan(h: &Handle) -> Result<(), CniError> {
    if let Some(link) = nl::link_by_name(h, VXLAN_DEVICE).await? {
        match h.link().del(link.header.index).execute().await {
            Ok(()) => tracing::info!(
                device = VXLAN_DEVICE,
                "removed VXLAN device (backend is not vxlan)"
            ),
            Err(e) if errno(&e) == Some(libc::ENODEV) => {}
            Err(e) => return Err(fail(format!("delete {VXLAN_DEVICE}"))(e)),
        }
    }
    Ok(())
}
