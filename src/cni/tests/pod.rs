//! Node setup and per-pod wiring on one node: start, attach, detach, gc.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::cni::{host_veth_name, ipam, Cni, BRIDGE, VXLAN_DEVICE};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

#[test]
fn start_twice_is_idempotent() {
    in_private_ns(|| async {
        let scratch = Scratch::new();
        let h = connect();
        dummy_uplink(&h, "uplink0", NODE_IP).await;
        let cfg = scratch.node("n1", "10.42.3.0/24", NODE_IP, Backend::Vxlan);

        let first = Cni::start(cfg.clone()).await.expect("first start");
        assert_eq!(first.mtu(), 1450, "uplink 1500 minus vxlan overhead");
        let mac = first.vtep_mac().expect("vxlan has a VTEP MAC");
        let bridge = nl::link_by_name(&h, BRIDGE)
            .await
            .unwrap()
            .expect("cni0 exists");
        let vtep = nl::link_by_name(&h, VXLAN_DEVICE)
            .await
            .unwrap()
            .expect("flannel.1 exists");
        drop(first);

        let second = Cni::start(cfg).await.expect("second start");
        assert_eq!(
            second.vtep_mac(),
            Some(mac),
            "VTEP MAC kept across restarts"
        );
        let bridge2 = nl::link_by_name(&h, BRIDGE).await.unwrap().expect("cni0");
        let vtep2 = nl::link_by_name(&h, VXLAN_DEVICE)
            .await
            .unwrap()
            .expect("flannel.1");
        assert_eq!(
            bridge.header.index, bridge2.header.index,
            "bridge not recreated"
        );
        assert_eq!(
            vtep.header.index, vtep2.header.index,
            "flannel.1 not recreated"
        );
        assert_eq!(nl::mtu(&bridge2), Some(1450));
        assert_eq!(nl::mtu(&vtep2), Some(1450));
        assert_eq!(nl::mac(&vtep2), Some(mac));

        let addrs = |idx| {
            let h = h.clone();
            async move {
                nl::ipv4_addrs(&h, idx, "test")
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(a, p, _)| (a, p))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            addrs(bridge2.header.index).await,
            vec![(ip("10.42.3.1"), 24)]
        );
        assert_eq!(addrs(vtep2.header.index).await, vec![(ip("10.42.3.0"), 32)]);
        let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(fwd.trim(), "1", "ip_forward enabled in the node namespace");

        let table = nft_table();
        assert!(
            table.contains("ip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade"),
            "masquerade rule in:\n{table}"
        );
        assert!(
            table.contains("ip daddr 10.42.0.0/16 accept"),
            "forward rule in:\n{table}"
        );
        assert_eq!(
            table.matches("masquerade").count(),
            1,
            "table replaced, not appended:\n{table}"
        );
    });
}

#[test]
fn switching_backend_to_host_gw_removes_vxlan_device() {
    in_private_ns(|| async {
        let scratch = Scratch::new();
        let h = connect();
        dummy_uplink(&h, "uplink0", NODE_IP).await;
        Cni::start(scratch.node("n1", "10.42.3.0/24", NODE_IP, Backend::Vxlan))
            .await
            .expect("vxlan start");
        let cni = Cni::start(scratch.node("n1", "10.42.3.0/24", NODE_IP, Backend::HostGw))
            .await
            .expect("host-gw start");
        assert_eq!(cni.mtu(), 1500);
        assert_eq!(cni.vtep_mac(), None);
        assert!(nl::link_by_name(&h, VXLAN_DEVICE).await.unwrap().is_none());
    });
}

#[test]
fn start_fails_clearly_without_the_node_ip() {
    in_private_ns(|| async {
        let scratch = Scratch::new();
        let err = Cni::start(scratch.node("n1", "10.42.3.0/24", NODE_IP, Backend::HostGw))
            .await
            .err()
            .expect("no link has the node IP");
        assert!(err.to_string().contains("192.168.77.10"), "{err}");
        assert!(err.to_string().contains("--node-ip"), "{err}");
    });
}

#[test]
fn attach_wires_pods_that_talk_to_each_other_and_the_gateway() {
    in_private_ns(|| async {
        let mut scratch = Scratch::new();
        let (h, cni) = single_node(&scratch, "10.42.3.0/24", Backend::HostGw).await;
        let (ns1, ns2) = (scratch.netns("pod1"), scratch.netns("pod2"));
        let a = cni.attach("uid-1", &ns1).await.expect("attach pod1");
        let b = cni.attach("uid-2", &ns2).await.expect("attach pod2");

        let subnet: ipam::Ipv4Subnet = "10.42.3.0/24".parse().unwrap();
        assert_ne!(a.ip, b.ip);
        for p in [&a, &b] {
            assert!(subnet.contains(p.ip) && p.ip != p.gateway, "{p:?}");
            assert_eq!((p.prefix, p.gateway), (24, ip("10.42.3.1")));
        }
        assert_eq!(a.host_veth, host_veth_name("uid-1"));
        let veth = nl::link_by_name(&h, &a.host_veth)
            .await
            .unwrap()
            .expect("host veth exists");
        assert_eq!(
            nl::controller(&veth),
            Some(cni.bridge_index),
            "host veth on cni0"
        );
        assert_eq!(nl::alias(&veth).as_deref(), Some("k3rs:uid-1"));
        assert!(hairpin(&veth), "hairpin on the bridge port: {veth:?}");

        for (ns, p) in [(&ns1, &a), (&ns2, &b)] {
            let view = pod_view(ns).expect("eth0 in pod");
            assert!(view.eth0_up, "{view:?}");
            assert_eq!(view.mtu, 1500);
            assert_eq!(view.addrs, vec![(p.ip, 24)]);
            assert_eq!(view.default_gw, Some(p.gateway));
        }

        let node_ns = own_ns();
        // Let the async side idle while blocking threads probe (current-thread runtime).
        let (ns1c, ns2c, bip, gw) = (ns1.clone(), ns2.clone(), b.ip, a.gateway);
        let seen = tokio::task::spawn_blocking(move || {
            let seen = assert_tcp(&ns1c, &ns2c, bip);
            assert_tcp(&ns2c, &node_ns, gw);
            seen
        })
        .await
        .unwrap();
        assert_eq!(
            seen,
            a.ip.to_string(),
            "pod-to-pod traffic is not masqueraded"
        );
    });
}

/// Whether a bridge port has hairpin mode on.
fn hairpin(link: &rtnetlink::packet_route::link::LinkMessage) -> bool {
    use rtnetlink::packet_route::link::{InfoBridgePort, InfoPortData, LinkAttribute, LinkInfo};
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| match i {
            LinkInfo::PortData(InfoPortData::BridgePort(p)) => {
                p.contains(&InfoBridgePort::HairpinMode(true))
            }
            _ => false,
        }),
        _ => false,
    })
}

#[test]
fn concurrent_attaches_get_distinct_addresses() {
    in_private_ns(|| async {
        let mut scratch = Scratch::new();
        let (h, cni) = single_node(&scratch, "10.42.3.0/24", Backend::HostGw).await;
        let nss: Vec<_> = (0..16).map(|i| scratch.netns(&format!("pod{i}"))).collect();
        let uids: Vec<String> = (0..16).map(|i| format!("uid-{i}")).collect();
        let nets =
            futures_util::future::join_all(uids.iter().zip(&nss).map(|(u, ns)| cni.attach(u, ns)))
                .await;
        let ips: HashSet<Ipv4Addr> = nets.into_iter().map(|n| n.expect("attach").ip).collect();
        assert_eq!(ips.len(), 16, "every pod its own address");
        let veths = nl::all_links(&h).await.unwrap();
        assert_eq!(
            veths
                .iter()
                .filter(|l| nl::controller(l) == Some(cni.bridge_index))
                .count(),
            16
        );
        futures_util::future::join_all(uids.iter().map(|u| cni.detach(u)))
            .await
            .into_iter()
            .for_each(|r| r.expect("detach"));
        assert!(cni.ipam.owned().unwrap().is_empty());
    });
}

#[test]
fn attach_twice_is_idempotent_and_recovers_half_done_work() {
    in_private_ns(|| async {
        let mut scratch = Scratch::new();
        let h = connect();
        dummy_uplink(&h, "uplink0", NODE_IP).await;
        let cfg = scratch.node("n1", "10.42.3.0/24", NODE_IP, Backend::HostGw);
        let cni = Cni::start(cfg.clone()).await.expect("start");
        let ns = scratch.netns("pod1");
        let first = cni.attach("uid-1", &ns).await.expect("attach");
        let again = cni.attach("uid-1", &ns).await.expect("attach again");
        assert_eq!(first, again);
        let view = pod_view(&ns).unwrap();
        assert_eq!(view.addrs, vec![(first.ip, 24)]);
        assert_eq!(view.default_gw, Some(first.gateway));

        // Agent restart: a new Cni adopts the running pod without changing it.
        drop(cni);
        let cni = Cni::start(cfg).await.expect("restart");
        assert_eq!(
            cni.attach("uid-1", &ns)
                .await
                .expect("attach after restart"),
            first
        );

        // Crash after allocation, before any link existed: same address, full setup.
        let ns2 = scratch.netns("pod2");
        let reserved = cni.ipam.allocate(cni.cfg.pod_cidr, "uid-2").unwrap();
        assert_eq!(
            cni.attach("uid-2", &ns2).await.expect("attach").ip,
            reserved
        );

        // A stray eth0 in the pod (half-made earlier attempt) is replaced.
        let ns3 = scratch.netns("pod3");
        query_in(&ns3, |h| async move {
            h.link()
                .add(rtnetlink::LinkVeth::new("eth0", "stray").build())
                .execute()
                .await
                .expect("stray eth0");
        });
        let p3 = cni
            .attach("uid-3", &ns3)
            .await
            .expect("attach over a stray eth0");
        let view = pod_view(&ns3).unwrap();
        assert_eq!(
            (view.addrs, view.default_gw),
            (vec![(p3.ip, 24)], Some(p3.gateway))
        );
        assert!(view.eth0_up);
    });
}

#[test]
fn detach_twice_is_fine_and_leaves_nothing() {
    in_private_ns(|| async {
        let mut scratch = Scratch::new();
        let (h, cni) = single_node(&scratch, "10.42.3.0/24", Backend::HostGw).await;
        let ns = scratch.netns("pod1");
        let p = cni.attach("uid-1", &ns).await.expect("attach");
        cni.detach("uid-1").await.expect("detach");
        cni.detach("uid-1").await.expect("detach again");
        assert!(
            nl::link_by_name(&h, &p.host_veth).await.unwrap().is_none(),
            "host veth gone"
        );
        assert!(pod_view(&ns).is_none(), "eth0 gone with its peer");
        assert!(cni.ipam.owned().unwrap().is_empty(), "address released");

        // Pod namespace already gone before detach.
        let ns2 = scratch.netns("pod2");
        let p2 = cni.attach("uid-2", &ns2).await.expect("attach");
        scratch.remove(&ns2);
        cni.detach("uid-2").await.expect("detach without namespace");
        assert!(nl::link_by_name(&h, &p2.host_veth).await.unwrap().is_none());
        assert!(cni.ipam.owned().unwrap().is_empty());
    });
}

#[test]
fn two_hundred_attach_detach_cycles_never_run_out() {
    in_private_ns(|| async {
        let mut scratch = Scratch::new();
        let (h, cni) = single_node(&scratch, "10.42.3.0/24", Backend::HostGw).await;
        let ns = scratch.netns("pod");
        let (mut attach, mut detach) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for i in 0..200 {
            let uid = format!("uid-{i}");
            let t = Instant::now();
            let p = cni
                .attach(&uid, &ns)
                .await
                .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
            attach.push(t.elapsed());
            let t = Instant::now();
            cni.detach(&uid)
                .await
                .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
            detach.push(t.elapsed());
            seen.insert(p.ip);
        }
        assert!(
            seen.len() > 100,
            "round-robin spreads addresses ({} distinct)",
            seen.len()
        );
        assert!(cni.ipam.owned().unwrap().is_empty());
        let veths = nl::all_links(&h)
            .await
            .unwrap()
            .iter()
            .filter_map(nl::name)
            .filter(|n| n.starts_with("veth"))
            .count();
        assert_eq!(veths, 0, "no veth left");
        // A figure for humans, never a pass/fail criterion.
        let total: Vec<Duration> = attach.iter().zip(&detach).map(|(a, d)| *a + *d).collect();
        for (what, mut v) in [
            ("attach", attach),
            ("detach", detach),
            ("attach+detach", total),
        ] {
            v.sort();
            let pct = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
            eprintln!(
                "{what} over 200 cycles: p50 {:?}, p99 {:?}",
                pct(0.50),
                pct(0.99)
            );
        }
    });
}

#[test]
fn gc_releases_dead_pods() {
    in_private_ns(|| async {
        let mut scratch = Scratch::new();
        let (h, cni) = single_node(&scratch, "10.42.3.0/24", Backend::HostGw).await;
        let mut pods = Vec::new();
        for i in 0..3 {
            let ns = scratch.netns(&format!("pod{i}"));
            pods.push((
                cni.attach(&format!("uid-{i}"), &ns).await.expect("attach"),
                ns,
            ));
        }
        cni.gc(&["uid-0".to_string()]).await.expect("gc");
        assert!(
            nl::link_by_name(&h, &pods[0].0.host_veth)
                .await
                .unwrap()
                .is_some(),
            "live pod kept"
        );
        for (p, ns) in &pods[1..] {
            assert!(
                nl::link_by_name(&h, &p.host_veth).await.unwrap().is_none(),
                "dead veth removed"
            );
            assert!(pod_view(ns).is_none());
        }
        let owned: Vec<String> = cni
            .ipam
            .owned()
            .unwrap()
            .into_iter()
            .map(|(_, o)| o)
            .collect();
        assert_eq!(owned, vec!["uid-0".to_string()]);
        assert_eq!(
            pod_view(&pods[0].1).unwrap().addrs,
            vec![(pods[0].0.ip, 24)]
        );
    });
}

/// The agent runs on a multi-thread runtime: start, attach and detach work there too.
#[test]
fn works_on_a_multi_thread_runtime() {
    require_root();
    std::thread::spawn(|| {
        // SAFETY: unshare affects only this thread, which nobody else uses.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        // Workers are created now, so they share this thread's private namespace.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut scratch = Scratch::new();
            let (_h, cni) = single_node(&scratch, "10.42.3.0/24", Backend::Vxlan).await;
            let cni = std::sync::Arc::new(cni);
            let ns = scratch.netns("pod1");
            let task = tokio::spawn({
                let cni = cni.clone();
                async move { cni.attach("uid-1", &ns).await }
            });
            let p = task.await.expect("task").expect("attach");
            assert_eq!(p.gateway, ip("10.42.3.1"));
            cni.detach("uid-1").await.expect("detach");
        });
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}
