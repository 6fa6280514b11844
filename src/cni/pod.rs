//! Per-pod wiring: [`attach`] gives a pod namespace its veth, address and default route,
//! [`detach`] undoes it, [`gc`] removes what dead pods left after an agent restart.
//!
//! Fast path (a new pod): one thread enters the pod namespace to open a netlink socket
//! there while the address is allocated; the host side creates the veth pair with the
//! peer placed straight into the pod namespace as `eth0` (MTU set, host end already
//! on `cni0` and up), then sets hairpin and the owner alias; the pod side adds the address
//! and brings `eth0` up with the address and the default route. A repeated call notices the existing pair (the create answers
//! EEXIST) and repairs instead of failing, so the result is the same either way.

use std::collections::HashSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkMessage};
use rtnetlink::{
    Handle, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::nl::{self, errno, fail};
use super::{host_veth_name, ipam, nsthread, Cni, CniError, PodNet, POD_IFNAME};

/// Prefix of the alias we put on host veths: `k3rs:<pod uid>` marks the owner.
const ALIAS_PREFIX: &str = "k3rs:";

pub(super) async fn attach(cni: &Cni, pod_uid: &str, netns: &Path) -> Result<PodNet, CniError> {
    let host_veth = host_veth_name(pod_uid);
    let pod_ns = Arc::new(nsthread::open(netns)?);
    let label = netns.display().to_string();
    let subnet = cni.cfg.pod_cidr;
    let store = cni.ipam.clone();
    let owner = pod_uid.to_string();
    let alloc = async move {
        tokio::task::spawn_blocking(move || store.allocate(subnet, &owner))
            .await
            .map_err(|_| CniError::Thread("IPAM allocation".into()))?
            .map_err(CniError::from)
    };
    let (pod, ip) = tokio::join!(nsthread::connect_in(pod_ns.clone(), &label), alloc);
    let (pod, ip) = (pod?, ip?);
    let gateway = ipam::gateway(subnet);
    let prefix = subnet.prefix();

    let repaired = ensure_veth(cni, &pod, &pod_ns, &host_veth, pod_uid, &label).await?;
    let eth0 = nl::link_by_name(&pod, POD_IFNAME)
        .await?
        .ok_or_else(|| CniError::Netlink {
            what: format!("find {POD_IFNAME} in {label} after creating it"),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })?
        .header
        .index;

    let host_side = async {
        let msg = LinkBridgePort::new(0)
            .name(host_veth.clone())
            .hairpin(true)
            .alias(format!("{ALIAS_PREFIX}{pod_uid}"))
            .build();
        cni.host
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(fail(format!("set hairpin on {host_veth}")))
    };
    let pod_side = async {
        pod.link()
            .set(LinkUnspec::new_with_index(eth0).up().build())
            .execute()
            .await
            .map_err(fail(format!("set {POD_IFNAME} up in {label}")))?;
        if repaired {
            nl::ensure_only_addr(&pod, eth0, ip, prefix, &format!("{POD_IFNAME} in {label}"))
                .await?;
        } else {
            pod.address()
                .add(eth0, IpAddr::V4(ip), prefix)
                .replace()
                .execute()
                .await
                .map_err(fail(format!(
                    "add {ip}/{prefix} to {POD_IFNAME} in {label}"
                )))?;
        }
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(eth0)
            .build();
        pod.route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(fail(format!("add default route via {gateway} in {label}")))
    };
    let (h, p) = tokio::join!(host_side, pod_side);
    h?;
    p?;
    Ok(PodNet {
        ip,
        prefix,
        gateway,
        host_veth,
    })
}

/// The veth create request: host end on the bridge and up, peer `eth0` straight into
/// the pod namespace, both with the pod MTU.
async fn create_veth(cni: &Cni, pod_ns: &File, host_veth: &str) -> Result<(), rtnetlink::Error> {
    // Not `up` here: the kernel refuses to open a veth end before its peer is linked
    // (ENOTCONN); the pod side brings it up.
    let peer = LinkUnspec::new_with_name(POD_IFNAME)
        .mtu(cni.mtu)
        .setns_by_fd(pod_ns.as_raw_fd())
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host_veth.to_string())
        .mtu(cni.mtu)
        .controller(cni.bridge_index)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    cni.host.link().add(msg).execute().await
}

/// Creates the pair, or makes an existing one right. Returns whether it had to repair
/// (then the pod interface may carry stale addresses).
async fn ensure_veth(
    cni: &Cni,
    pod: &Handle,
    pod_ns: &File,
    host_veth: &str,
    pod_uid: &str,
    label: &str,
) -> Result<bool, CniError> {
    let what = || format!("create veth {host_veth} with {POD_IFNAME} in {label}");
    match create_veth(cni, pod_ns, host_veth).await {
        Ok(()) => return Ok(false),
        Err(e) if errno(&e) == Some(libc::EEXIST) => {}
        Err(e) => return Err(fail(what())(e)),
    }
    let host_link = nl::link_by_name(&cni.host, host_veth).await?;
    if let Some(owner) = host_link
        .as_ref()
        .and_then(nl::alias)
        .and_then(|a| a.strip_prefix(ALIAS_PREFIX).map(str::to_string))
    {
        if owner != pod_uid {
            return Err(CniError::Netlink {
                what: format!(
                    "host veth {host_veth} for pod {pod_uid} is already used by pod {owner} \
                     (name hash collision); delete that pod or this one"
                ),
                source: std::io::Error::from_raw_os_error(libc::EEXIST),
            });
        }
    }
    let eth0 = nl::link_by_name(pod, POD_IFNAME).await?;
    match (&host_link, &eth0) {
        (Some(h), Some(p)) if nl::peer_index(p) == Some(h.header.index) => {
            // Our pair from an earlier call: make sure both ends are as a fresh one.
            cni.host
                .link()
                .set(
                    LinkUnspec::new_with_index(h.header.index)
                        .controller(cni.bridge_index)
                        .mtu(cni.mtu)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(fail(format!("put {host_veth} on the bridge")))?;
            pod.link()
                .set(
                    LinkUnspec::new_with_index(p.header.index)
                        .mtu(cni.mtu)
                        .build(),
                )
                .execute()
                .await
                .map_err(fail(format!("set MTU of {POD_IFNAME} in {label}")))?;
        }
        _ => {
            // Half-made or foreign leftovers: remove both and start over.
            if let Some(h) = &host_link {
                delete_link(&cni.host, h, host_veth).await?;
            }
            if let Some(p) = &eth0 {
                delete_link(pod, p, &format!("{POD_IFNAME} in {label}")).await?;
            }
            create_veth(cni, pod_ns, host_veth)
                .await
                .map_err(fail(what()))?;
        }
    }
    Ok(true)
}

async fn delete_link(h: &Handle, link: &LinkMessage, what: &str) -> Result<(), CniError> {
    match h.link().del(link.header.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(fail(format!("delete {what}"))(e)),
    }
}

pub(super) async fn detach(cni: &Cni, pod_uid: &str) -> Result<(), CniError> {
    let host_veth = host_veth_name(pod_uid);
    cni.reaper.delete(&host_veth).await.map_err(|e| match e {
        CniError::Netlink { source, .. } => CniError::Netlink {
            what: format!("delete veth {host_veth} of pod {pod_uid}"),
            source,
        },
        other => other,
    })?;
    let store = cni.ipam.clone();
    let owner = pod_uid.to_string();
    tokio::task::spawn_blocking(move || store.release(&owner))
        .await
        .map_err(|_| CniError::Thread("IPAM release".into()))??;
    Ok(())
}

pub(super) async fn gc(cni: &Cni, live: &[String]) -> Result<(), CniError> {
    let live_set: HashSet<String> = live.iter().cloned().collect();
    let live_veths: HashSet<String> = live.iter().map(|u| host_veth_name(u)).collect();
    for link in nl::all_links(&cni.host).await? {
        let Some(name) = nl::name(&link) else {
            continue;
        };
        let alias = nl::alias(&link);
        let ours = alias
            .as_deref()
            .is_some_and(|a| a.starts_with(ALIAS_PREFIX))
            || (name.starts_with("veth") && nl::controller(&link) == Some(cni.bridge_index));
        let owner_live = alias
            .as_deref()
            .and_then(|a| a.strip_prefix(ALIAS_PREFIX))
            .is_some_and(|uid| live_set.contains(uid));
        if ours && !owner_live && !live_veths.contains(&name) {
            tracing::info!(veth = %name, "removing veth of a pod that no longer exists");
            cni.reaper.delete(&name).await?;
        }
    }
    let store = cni.ipam.clone();
    let released = tokio::task::spawn_blocking(move || store.release_all_except(&live_set))
        .await
        .map_err(|_| CniError::Thread("IPAM garbage collection".into()))??;
    for (ip, owner) in released {
        tracing::info!(%ip, pod = %owner, "released address of a pod that no longer exists");
    }
    Ok(())
}
