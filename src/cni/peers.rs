//! Cross-node state: routes (and for vxlan neighbour and FDB entries on `flannel.1`)
//! towards the other nodes' pod subnets, synced to exactly the given peer list.
//!
//! Ownership is exact: our routes carry the dedicated route protocol [`RTPROT_K3RS`]
//! (`ip route show proto 75`), so routes of other software are never touched; every
//! permanent neighbour and FDB entry on `flannel.1` is ours because we own the device.
//! Per peer, vxlan mirrors flannel: route `<podCIDR> via <podCIDR network> dev flannel.1
//! onlink`, neighbour `<podCIDR network> lladdr <VTEP MAC>`, FDB `<VTEP MAC> dst <node IP>`.
//! host-gw: route `<podCIDR> via <node IP>`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::nl::{errno, fail};
use super::{format_mac, Backend, Cni, CniError, Peer, VXLAN_DEVICE};

/// Route protocol marking routes this module made (unassigned in iproute2's rt_protos).
pub const RTPROT_K3RS: u8 = 75;

/// What one of our routes should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    gateway: Ipv4Addr,
    /// Set for vxlan (`dev flannel.1 onlink`); host-gw lets the kernel pick the link.
    oif: Option<u32>,
}

/// Destination network and prefix.
type Dst = (Ipv4Addr, u8);

pub(super) async fn sync(cni: &Cni, peers: &[Peer]) -> Result<(), CniError> {
    let own = cni.cfg.pod_cidr;
    let mut routes: HashMap<Dst, Want> = HashMap::new();
    let mut neigh: HashMap<Ipv4Addr, [u8; 6]> = HashMap::new();
    let mut fdb: HashMap<[u8; 6], Ipv4Addr> = HashMap::new();
    for p in peers {
        if p.node_ip == cni.cfg.node_ip || p.pod_cidr == own {
            tracing::debug!(peer = %p.name, "skipping peer that is this node");
            continue;
        }
        let dst = (p.pod_cidr.network(), p.pod_cidr.prefix());
        match (cni.cfg.backend, cni.vtep) {
            (Backend::Vxlan, Some((vtep, _))) => {
                let Some(mac) = p.vtep_mac else {
                    tracing::debug!(peer = %p.name, "peer has no VTEP MAC yet; skipped");
                    continue;
                };
                routes.insert(
                    dst,
                    Want {
                        gateway: dst.0,
                        oif: Some(vtep),
                    },
                );
                neigh.insert(dst.0, mac);
                fdb.insert(mac, p.node_ip);
            }
            (Backend::HostGw, _) => {
                routes.insert(
                    dst,
                    Want {
                        gateway: p.node_ip,
                        oif: None,
                    },
                );
            }
            _ => {}
        }
    }
    // Remove stale routes first so traffic stops using a gone peer before its L2
    // entries go; add L2 entries before routes so the first packet finds them.
    sync_routes(&cni.host, &routes, true).await?;
    if let Some((vtep, _)) = cni.vtep {
        sync_fdb(&cni.host, vtep, &fdb).await?;
        sync_neighbours(&cni.host, vtep, &neigh).await?;
    }
    sync_routes(&cni.host, &routes, false).await
}

/// Our routes (protocol [`RTPROT_K3RS`], main table) as they are now.
async fn our_routes(h: &Handle) -> Result<Vec<(Dst, Want, RouteMessage)>, CniError> {
    let all: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(fail("list routes"))?;
    Ok(all
        .into_iter()
        .filter(|r| {
            r.header.protocol == RouteProtocol::Other(RTPROT_K3RS)
                && r.header.table == RouteHeader::RT_TABLE_MAIN
        })
        .filter_map(|r| {
            let mut dst = None;
            let mut gateway = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let key = (dst?, r.header.destination_prefix_length);
            Some((
                key,
                Want {
                    gateway: gateway?,
                    oif,
                },
                r,
            ))
        })
        .collect())
}

/// With `remove`, deletes our routes that are not wanted or differ; otherwise adds (or
/// replaces) the wanted ones that are missing or differ.
async fn sync_routes(h: &Handle, want: &HashMap<Dst, Want>, remove: bool) -> Result<(), CniError> {
    let have = our_routes(h).await?;
    let matches =
        |w: &Want, got: &Want| w.gateway == got.gateway && w.oif.is_none_or(|o| got.oif == Some(o));
    if remove {
        for (dst, got, msg) in have {
            if want.get(&dst).is_some_and(|w| matches(w, &got)) {
                continue;
            }
            match h.route().del(msg).execute().await {
                Ok(()) => {
                    tracing::info!(dst = %format!("{}/{}", dst.0, dst.1), "removed route to peer pod subnet")
                }
                Err(e) if errno(&e) == Some(libc::ESRCH) => {}
                Err(e) => return Err(fail(format!("delete route to {}/{}", dst.0, dst.1))(e)),
            }
        }
        return Ok(());
    }
    let current: HashMap<Dst, Want> = have.into_iter().map(|(d, w, _)| (d, w)).collect();
    for (dst, w) in want {
        if current.get(dst).is_some_and(|got| matches(w, got)) {
            continue;
        }
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.0, dst.1)
            .gateway(w.gateway)
            .protocol(RouteProtocol::Other(RTPROT_K3RS));
        if let Some(oif) = w.oif {
            b = b.output_interface(oif).onlink();
        }
        h.route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(fail(format!(
                "add route to {}/{} via {}",
                dst.0, dst.1, w.gateway
            )))?;
        tracing::info!(dst = %format!("{}/{}", dst.0, dst.1), via = %w.gateway, "route to peer pod subnet");
    }
    Ok(())
}

/// Permanent entries of `family` on link `index`.
pub(crate) async fn entries(
    h: &Handle,
    index: u32,
    family: AddressFamily,
) -> Result<Vec<NeighbourMessage>, CniError> {
    let all: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(family)
        .execute()
        .try_collect()
        .await
        .map_err(fail(format!("list neighbours of {VXLAN_DEVICE}")))?;
    Ok(all
        .into_iter()
        .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
        .collect())
}

pub(crate) fn lladdr(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(v) => <[u8; 6]>::try_from(v.as_slice()).ok(),
        _ => None,
    })
}

/// The entry's IPv4 destination. FDB (bridge family) entries come back as raw bytes
/// because the parser cannot tell their address family from the message.
pub(crate) fn destination(m: &NeighbourMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(v)) => {
            <[u8; 4]>::try_from(v.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}

/// A minimal delete request for a dumped entry (only the keys the kernel needs).
fn delete_message(m: &NeighbourMessage) -> NeighbourMessage {
    let mut del = NeighbourMessage::default();
    del.header = m.header.clone();
    del.attributes = m
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                NeighbourAttribute::Destination(_) | NeighbourAttribute::LinkLayerAddress(_)
            )
        })
        .cloned()
        .collect();
    del
}

async fn delete_entry(h: &Handle, m: &NeighbourMessage, what: String) -> Result<(), CniError> {
    match h.neighbours().del(delete_message(m)).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(libc::ENOENT) | Some(libc::ESRCH)) => Ok(()),
        Err(e) => Err(fail(what)(e)),
    }
}

/// ARP entries on `flannel.1`: peer subnet network address -> peer VTEP MAC.
async fn sync_neighbours(
    h: &Handle,
    vtep: u32,
    want: &HashMap<Ipv4Addr, [u8; 6]>,
) -> Result<(), CniError> {
    let mut ok = Vec::new();
    for m in entries(h, vtep, AddressFamily::Inet).await? {
        let (Some(ip), mac) = (destination(&m), lladdr(&m)) else {
            continue;
        };
        if mac.is_some() && want.get(&ip) == mac.as_ref() {
            ok.push(ip);
            continue;
        }
        delete_entry(h, &m, format!("delete neighbour {ip} on {VXLAN_DEVICE}")).await?;
    }
    for (ip, mac) in want {
        if ok.contains(ip) {
            continue;
        }
        h.neighbours()
            .add(vtep, IpAddr::V4(*ip))
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(fail(format!(
                "add neighbour {ip} lladdr {} on {VXLAN_DEVICE}",
                format_mac(mac)
            )))?;
    }
    Ok(())
}

/// FDB entries on `flannel.1`: peer VTEP MAC -> peer node IP.
async fn sync_fdb(
    h: &Handle,
    vtep: u32,
    want: &HashMap<[u8; 6], Ipv4Addr>,
) -> Result<(), CniError> {
    let mut ok = Vec::new();
    for m in entries(h, vtep, AddressFamily::Bridge).await? {
        let Some(mac) = lladdr(&m) else { continue };
        let dst = destination(&m);
        if dst.is_some() && want.get(&mac) == dst.as_ref() {
            ok.push(mac);
            continue;
        }
        delete_entry(
            h,
            &m,
            format!("delete FDB entry {} on {VXLAN_DEVICE}", format_mac(&mac)),
        )
        .await?;
    }
    for (mac, node_ip) in want {
        if ok.contains(mac) {
            continue;
        }
        h.neighbours()
            .add_bridge(vtep, mac)
            .destination(IpAddr::V4(*node_ip))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(fail(format!(
                "add FDB entry {} dst {node_ip} on {VXLAN_DEVICE}",
                format_mac(mac)
            )))?;
    }
    Ok(())
}
