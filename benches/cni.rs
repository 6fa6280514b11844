//! Pod network benchmark: the built-in CNI on two simulated nodes (two network
//! namespaces joined by a veth "LAN", each running `Cni::start` as its node), with no
//! containerd in the way. Prints:
//! - pod network setup (attach) and teardown (detach) time, p50/p99 over N pods;
//! - pod-to-pod TCP throughput across the two nodes with vxlan and with host-gw, next to
//!   the same transfer between two namespaces joined by one plain veth pair (the limit
//!   of this machine's network stack).
//!
//! Needs root and iproute2 (`ip`, used here only to build the simulated LAN). Run:
//! `cargo bench --bench cni` (`K3RS_BENCH_CNI_PODS` sets N, default 200;
//! `K3RS_BENCH_CNI_SECS` the seconds per transfer, default 3).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pct;
use k3rs::cni::{Backend, Cni, NodeNetwork, Peer};

/// A named network namespace made with `ip netns add`, deleted on drop.
struct NamedNs(String);

impl NamedNs {
    fn new(name: &str) -> NamedNs {
        // A leftover of an interrupted run, if any (quietly: usually there is none).
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", name]);
        let ns = NamedNs(name.to_string());
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for NamedNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip")
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run ip (install iproute2): {e}"));
    assert!(st.success(), "ip {} failed", args.join(" "));
}

/// Runs `f` on a fresh thread inside the namespace at `path`.
fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(path).expect("open netns");
    std::thread::spawn(move || {
        // SAFETY: setns affects only this thread, which ends after `f`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

/// Two namespaces joined by a veth pair `up0` with 172.30.0.1/24 and .2/24.
fn lan(prefix: &str) -> (NamedNs, NamedNs) {
    let a = NamedNs::new(&format!("{prefix}-a"));
    let b = NamedNs::new(&format!("{prefix}-b"));
    a.ip(&[
        "link", "add", "up0", "type", "veth", "peer", "name", "up0", "netns", &b.0,
    ]);
    a.ip(&["addr", "add", "172.30.0.1/24", "dev", "up0"]);
    b.ip(&["addr", "add", "172.30.0.2/24", "dev", "up0"]);
    a.ip(&["link", "set", "up0", "up"]);
    b.ip(&["link", "set", "up0", "up"]);
    (a, b)
}

/// Starts the CNI as the node whose namespace is `ns`.
fn start_node(
    rt: &tokio::runtime::Handle,
    ns: &NamedNs,
    index: u8,
    backend: Backend,
    state: &Path,
) -> Arc<Cni> {
    let rt = rt.clone();
    let cfg = NodeNetwork {
        pod_cidr: format!("10.42.{index}.0/24").parse().expect("cidr"),
        cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
        node_ip: Ipv4Addr::new(172, 30, 0, index + 1),
        backend,
        state_dir: state.join(format!("node{index}")),
    };
    in_netns(&ns.path(), move || {
        let _guard = rt.enter();
        rt.block_on(Cni::start(cfg)).expect("Cni::start")
    })
    .into()
}

/// Bytes per second of one TCP stream from `client_ns` to `server_ip:5201` in `server_ns`.
fn throughput(client_ns: &Path, server_ns: &Path, server_ip: Ipv4Addr, secs: u64) -> f64 {
    let addr = SocketAddr::from((server_ip, 5201));
    let listener = in_netns(server_ns, move || TcpListener::bind(addr).expect("listen"));
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 17];
        let mut total = 0u64;
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    let conn = in_netns(client_ns, move || {
        TcpStream::connect(addr).expect("connect")
    });
    let started = Instant::now();
    let buf = vec![0x5au8; 1 << 17];
    let mut conn = conn;
    while started.elapsed() < Duration::from_secs(secs) {
        conn.write_all(&buf).expect("send");
    }
    drop(conn);
    let total = reader.join().expect("reader");
    total as f64 / started.elapsed().as_secs_f64()
}

fn gbit(bytes_per_sec: f64) -> f64 {
    bytes_per_sec * 8.0 / 1e9
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the cni benchmark needs root (network namespaces); run it as root");
        std::process::exit(1);
    }
    let pods: usize = std::env::var("K3RS_BENCH_CNI_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let secs: u64 = std::env::var("K3RS_BENCH_CNI_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let tag = format!("k3rs-bench-{}", std::process::id());

    // The limit: one plain veth pair between two namespaces.
    let limit = {
        let (a, b) = lan(&format!("{tag}-raw"));
        throughput(&a.path(), &b.path(), Ipv4Addr::new(172, 30, 0, 2), secs)
    };
    println!(
        "plain veth between two namespaces:        {:7.2} Gbit/s (the limit here)",
        gbit(limit)
    );

    for (backend, name) in [(Backend::Vxlan, "vxlan"), (Backend::HostGw, "host-gw")] {
        let (a, b) = lan(&format!("{tag}-{name}"));
        let state = tmp.path().join(name);
        let na = start_node(rt.handle(), &a, 0, backend, &state);
        let nb = start_node(rt.handle(), &b, 1, backend, &state);
        let peer = |i: u8, mac| Peer {
            name: format!("node{i}"),
            node_ip: Ipv4Addr::new(172, 30, 0, i + 1),
            pod_cidr: format!("10.42.{i}.0/24").parse().expect("cidr"),
            vtep_mac: mac,
        };
        rt.block_on(na.sync_peers(&[peer(1, nb.vtep_mac())]))
            .expect("sync peers");
        rt.block_on(nb.sync_peers(&[peer(0, na.vtep_mac())]))
            .expect("sync peers");
        let pods_dir = state.join("netns");
        let pa = k3rs::agent::netns::create(&pods_dir, "pa").expect("pod netns");
        let pb = k3rs::agent::netns::create(&pods_dir, "pb").expect("pod netns");
        rt.block_on(na.attach("pa", &pa)).expect("attach pa");
        let b_ip = rt.block_on(nb.attach("pb", &pb)).expect("attach pb").ip;
        let bps = throughput(&pa, &pb, b_ip, secs);
        println!(
            "pod to pod across nodes, {name:8}         {:7.2} Gbit/s ({:.0}% of the limit)",
            gbit(bps),
            bps / limit * 100.0
        );

        if backend == Backend::Vxlan {
            // Setup and teardown of one pod network, N times in a row on node a.
            let mut setup = Vec::with_capacity(pods);
            let mut teardown = Vec::with_capacity(pods);
            let mut netns = Vec::with_capacity(pods);
            for i in 0..pods {
                let uid = format!("bench-{i}");
                let t = Instant::now();
                let path = k3rs::agent::netns::create(&pods_dir, &uid).expect("pod netns");
                netns.push(t.elapsed());
                let t = Instant::now();
                rt.block_on(na.attach(&uid, &path)).expect("attach");
                setup.push(t.elapsed());
                let t = Instant::now();
                rt.block_on(na.detach(&uid)).expect("detach");
                teardown.push(t.elapsed());
                k3rs::agent::netns::remove(&path).expect("remove netns");
            }
            for v in [&mut setup, &mut teardown, &mut netns] {
                v.sort();
            }
            println!(
                "pod network setup (attach), {pods} pods:    p50 {:6.2} ms  p99 {:6.2} ms",
                pct(&setup, 0.5),
                pct(&setup, 0.99)
            );
            println!(
                "pod network teardown (detach):          p50 {:6.2} ms  p99 {:6.2} ms",
                pct(&teardown, 0.5),
                pct(&teardown, 0.99)
            );
            println!(
                "pod namespace creation (for reference): p50 {:6.2} ms  p99 {:6.2} ms",
                pct(&netns, 0.5),
                pct(&netns, 0.99)
            );
        }
        for (cni, uid, path) in [(&na, "pa", &pa), (&nb, "pb", &pb)] {
            let _ = rt.block_on(cni.detach(uid));
            let _ = k3rs::agent::netns::remove(path);
        }
    }
}
