//! Cross-node state: sync_peers for both backends, and two "nodes" (namespaces joined by
//! a veth pair as their uplinks) passing pod-to-pod TCP traffic.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::packet_route::AddressFamily;
use std::os::fd::AsRawFd;

use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{LinkMessageBuilder, LinkUnspec};

use super::*;
use crate::cni::peers::{destination, entries, lladdr, RTPROT_K3RS};
use crate::cni::{format_mac, Cni, Peer, VXLAN_DEVICE};

fn peer(name: &str, node_ip: &str, cidr: &str, mac: Option<[u8; 6]>) -> Peer {
    Peer {
        name: name.into(),
        node_ip: node_ip.parse().unwrap(),
        pod_cidr: cidr.parse().unwrap(),
        vtep_mac: mac,
    }
}

/// Our routes as `dst via gw`, sorted.
async fn our_routes(h: &Handle) -> BTreeSet<String> {
    ipv4_routes(h)
        .await
        .iter()
        .filter(|r| r.header.protocol == RouteProtocol::Other(RTPROT_K3RS))
        .map(|r| {
            format!(
                "{} via {}",
                destination_of(r).unwrap(),
                gateway_of(r).unwrap()
            )
        })
        .collect()
}

/// Permanent entries on flannel.1 of `family` as `ip mac`.
async fn vtep_entries(h: &Handle, family: AddressFamily) -> BTreeSet<String> {
    let idx = nl::link_by_name(h, VXLAN_DEVICE)
        .await
        .unwrap()
        .expect("flannel.1")
        .header
        .index;
    let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    entries(h, idx, family)
        .await
        .expect("list entries")
        .iter()
        .map(|m| {
            let ip = show(destination(m).map(|i| i.to_string()));
            format!("{ip} {}", show(lladdr(m).map(|m| format_mac(&m))))
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A route of someone else's that sync must never touch.
async fn foreign_route(h: &Handle) {
    let r = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix("10.99.0.0".parse().unwrap(), 24)
        .gateway("192.168.77.1".parse().unwrap())
        .build();
    h.route().add(r).execute().await.expect("foreign route");
}

async fn has_foreign_route(h: &Handle) -> bool {
    ipv4_routes(h)
        .await
        .iter()
        .any(|r| destination_of(r).map(|d| d.to_string()) == Some("10.99.0.0/24".into()))
}

#[test]
fn sync_peers_vxlan_installs_and_removes_exactly() {
    in_private_ns(|| async {
        let scratch = Scratch::new();
        let (h, cni) = single_node(&scratch, "10.42.0.0/24", Backend::Vxlan).await;
        foreign_route(&h).await;
        let m1 = [0x0e, 0x58, 1, 1, 1, 1];
        let m2 = [0x0e, 0x58, 2, 2, 2, 2];
        let m3 = [0x0e, 0x58, 3, 3, 3, 3];
        let peers = vec![
            peer("self", "192.168.77.10", "10.42.0.0/24", cni.vtep_mac()),
            peer("n2", "192.168.77.11", "10.42.1.0/24", Some(m1)),
            peer("n3", "192.168.77.12", "10.42.2.0/24", None),
            peer("n4", "192.168.77.13", "10.42.4.0/24", Some(m2)),
        ];
        cni.sync_peers(&peers).await.expect("sync");
        cni.sync_peers(&peers).await.expect("sync again is a no-op");
        assert_eq!(
            our_routes(&h).await,
            set(&["10.42.1.0/24 via 10.42.1.0", "10.42.4.0/24 via 10.42.4.0"])
        );
        assert_eq!(
            vtep_entries(&h, AddressFamily::Inet).await,
            set(&["10.42.1.0 0e:58:01:01:01:01", "10.42.4.0 0e:58:02:02:02:02"])
        );
        assert_eq!(
            vtep_entries(&h, AddressFamily::Bridge).await,
            set(&[
                "192.168.77.11 0e:58:01:01:01:01",
                "192.168.77.13 0e:58:02:02:02:02"
            ])
        );

        // n3 publishes its MAC, n4 leaves, n2 restarts with a new MAC and node IP.
        let peers = vec![
            peer("n2", "192.168.77.21", "10.42.1.0/24", Some(m3)),
            peer("n3", "192.168.77.12", "10.42.2.0/24", Some(m1)),
        ];
        cni.sync_peers(&peers).await.expect("sync changes");
        assert_eq!(
            our_routes(&h).await,
            set(&["10.42.1.0/24 via 10.42.1.0", "10.42.2.0/24 via 10.42.2.0"])
        );
        assert_eq!(
            vtep_entries(&h, AddressFamily::Inet).await,
            set(&["10.42.1.0 0e:58:03:03:03:03", "10.42.2.0 0e:58:01:01:01:01"])
        );
        assert_eq!(
            vtep_entries(&h, AddressFamily::Bridge).await,
            set(&[
                "192.168.77.21 0e:58:03:03:03:03",
                "192.168.77.12 0e:58:01:01:01:01"
            ])
        );

        cni.sync_peers(&[]).await.expect("sync to nothing");
        assert!(our_routes(&h).await.is_empty());
        assert!(vtep_entries(&h, AddressFamily::Inet).await.is_empty());
        assert!(vtep_entries(&h, AddressFamily::Bridge).await.is_empty());
        assert!(
            has_foreign_route(&h).await,
            "routes we did not make are kept"
        );
    });
}

#[test]
fn sync_peers_host_gw_installs_and_removes_exactly() {
    in_private_ns(|| async {
        let scratch = Scratch::new();
        let (h, cni) = single_node(&scratch, "10.42.0.0/24", Backend::HostGw).await;
        foreign_route(&h).await;
        let peers = vec![
            peer("n2", "192.168.77.11", "10.42.1.0/24", None),
            peer(
                "n3",
                "192.168.77.12",
                "10.42.2.0/24",
                Some([2, 0, 0, 0, 0, 1]),
            ),
        ];
        cni.sync_peers(&peers).await.expect("sync");
        assert_eq!(
            our_routes(&h).await,
            set(&[
                "10.42.1.0/24 via 192.168.77.11",
                "10.42.2.0/24 via 192.168.77.12"
            ])
        );
        cni.sync_peers(&[peer("n2", "192.168.77.14", "10.42.1.0/24", None)])
            .await
            .expect("sync");
        assert_eq!(
            our_routes(&h).await,
            set(&["10.42.1.0/24 via 192.168.77.14"])
        );
        cni.sync_peers(&[]).await.expect("sync to nothing");
        assert!(our_routes(&h).await.is_empty());
        assert!(has_foreign_route(&h).await);
    });
}

/// Two nodes (namespaces A and B joined by a veth pair as uplinks), a pod on each, and
/// TCP from pod A to pod B and back.
fn two_nodes_pass_pod_traffic(backend: Backend) {
    in_private_ns(move || async move {
        let mut scratch = Scratch::new();
        let (node_a, node_b) = (scratch.netns("node-a"), scratch.netns("node-b"));
        let (ip_a, ip_b): (Ipv4Addr, Ipv4Addr) = (
            "192.168.50.1".parse().unwrap(),
            "192.168.50.2".parse().unwrap(),
        );

        // Uplinks: veth `up0` in A whose peer `up0` goes straight into B.
        let b_fd = File::open(&node_b).expect("open node B");
        enter(&node_a);
        let ha = connect();
        let peer = LinkUnspec::new_with_name("up0")
            .setns_by_fd(b_fd.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name("up0".to_string())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        ha.link().add(msg).execute().await.expect("uplink veth");
        set_up(&ha, "up0", Some(ip_a)).await;
        let cni_a = Cni::start(scratch.node("a", "10.42.0.0/24", ip_a, backend))
            .await
            .expect("start A");

        enter(&node_b);
        set_up(&connect(), "up0", Some(ip_b)).await;
        let cni_b = Cni::start(scratch.node("b", "10.42.1.0/24", ip_b, backend))
            .await
            .expect("start B");

        let peer_a = Peer {
            name: "a".into(),
            node_ip: ip_a,
            pod_cidr: cni_a.cfg.pod_cidr,
            vtep_mac: cni_a.vtep_mac(),
        };
        let peer_b = Peer {
            name: "b".into(),
            node_ip: ip_b,
            pod_cidr: cni_b.cfg.pod_cidr,
            vtep_mac: cni_b.vtep_mac(),
        };
        cni_a
            .sync_peers(&[peer_a.clone(), peer_b.clone()])
            .await
            .expect("sync A");
        cni_b.sync_peers(&[peer_a, peer_b]).await.expect("sync B");

        let (pod_a, pod_b) = (scratch.netns("pod-a"), scratch.netns("pod-b"));
        let pa = cni_a.attach("uid-a", &pod_a).await.expect("attach on A");
        let pb = cni_b.attach("uid-b", &pod_b).await.expect("attach on B");
        assert!(cni_a.cfg.pod_cidr.contains(pa.ip) && cni_b.cfg.pod_cidr.contains(pb.ip));

        let seen_b = assert_tcp(&pod_a, &pod_b, pb.ip);
        assert_eq!(
            seen_b,
            pa.ip.to_string(),
            "pod IPs are kept across nodes (no masquerade)"
        );
        let seen_a = assert_tcp(&pod_b, &pod_a, pa.ip);
        assert_eq!(seen_a, pb.ip.to_string());
        // A pod reaches the other node's IP too, masqueraded (outside the cluster CIDR).
        let seen = assert_tcp(&pod_a, &node_b, ip_b);
        assert_eq!(
            seen,
            ip_a.to_string(),
            "pod traffic leaving the cluster CIDR is masqueraded"
        );

        // Removing the peer removes the path.
        cni_a.sync_peers(&[]).await.expect("sync A to nothing");
        let (addr, server) = serve_once(&pod_b, pb.ip);
        assert!(
            call_from(&pod_a, addr, "ping").is_err(),
            "no route to B's pods once B is gone"
        );
        // Release the listener with a local connection.
        call_from(&pod_b, addr, "bye").expect("local connection");
        server.join().expect("server thread");
    });
}

#[test]
fn two_nodes_pass_pod_traffic_over_vxlan() {
    two_nodes_pass_pod_traffic(Backend::Vxlan);
}

#[test]
fn two_nodes_pass_pod_traffic_over_host_gw() {
    two_nodes_pass_pod_traffic(Backend::HostGw);
}
