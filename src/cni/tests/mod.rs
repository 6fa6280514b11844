//! Tests of the bridge CNI against the real kernel. Each test runs on its own thread in a
//! private network namespace (so the "node" is that namespace and nothing touches the
//! machine's network); pod namespaces are bind mounts in a temporary directory. Needs
//! root: run `sudo -E cargo test --lib cni::`.
//!
//! This file holds the shared helpers: namespaces, netlink views of a namespace, and TCP
//! probes run from threads that entered a namespace.

mod cross;
mod pod;

use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::ipam::Ipv4Subnet;
use super::nl;
use super::{nsthread, Backend, Cni, NodeNetwork};

/// The node IP of single-node tests.
pub(super) const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);
use crate::agent::netns;

/// Fails the test with instructions when not root.
pub(super) fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "the CNI tests create network namespaces and links and need root: \
             run `sudo -E cargo test --lib cni::` (CI runs them as root)"
        );
    }
}

/// Runs `f` on a new thread inside a new private network namespace (with `lo` up) on a
/// current-thread runtime; that namespace is the node for a [`super::Cni`] started there.
pub(super) fn in_private_ns<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    require_root();
    let joined = std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread, which nobody else uses.
        assert_eq!(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare: {}",
            std::io::Error::last_os_error()
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async move {
            let h = connect();
            let lo = nl::link_by_name(&h, "lo")
                .await
                .expect("lo")
                .expect("lo exists");
            h.link()
                .set(LinkUnspec::new_with_index(lo.header.index).up().build())
                .execute()
                .await
                .expect("lo up");
            f().await
        })
    })
    .join();
    joined.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A netlink connection in the calling thread's namespace (on the current runtime).
pub(super) fn connect() -> Handle {
    let (conn, h, _) = rtnetlink::new_connection().expect("netlink socket");
    tokio::spawn(conn);
    h
}

/// Moves the calling (test-owned) thread into the namespace at `path`.
pub(super) fn enter(path: &Path) {
    let f = File::open(path).expect("open namespace");
    nsthread::enter(&f).expect("setns");
}

/// Runs `f` on a new thread inside the namespace `ns` and returns its result.
pub(super) fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = ns.to_path_buf();
    std::thread::spawn(move || {
        enter(&path);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs async netlink work inside `ns` on its own thread and runtime.
pub(super) fn query_in<T, F, Fut>(ns: &Path, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    in_ns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async move { f(connect()).await })
    })
}

/// The calling thread's namespace as a path other threads can enter.
pub(super) fn own_ns() -> PathBuf {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    PathBuf::from(format!("/proc/{}/task/{tid}/ns/net", std::process::id()))
}

/// Temporary state dir plus pod/node namespaces, all removed on drop.
pub(super) struct Scratch {
    pub dir: tempfile::TempDir,
    made: Vec<PathBuf>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
            made: Vec::new(),
        }
    }

    /// A new namespace held at `<tmp>/netns/<name>`.
    pub fn netns(&mut self, name: &str) -> PathBuf {
        let p = netns::create(&self.dir.path().join("netns"), name).expect("create netns");
        self.made.push(p.clone());
        p
    }

    pub fn remove(&mut self, path: &Path) {
        netns::remove(path).expect("remove netns");
        self.made.retain(|p| p != path);
    }

    /// A node configuration rooted in this scratch dir.
    pub fn node(
        &self,
        name: &str,
        pod_cidr: &str,
        node_ip: Ipv4Addr,
        backend: Backend,
    ) -> NodeNetwork {
        NodeNetwork {
            pod_cidr: pod_cidr.parse().expect("pod cidr"),
            cluster_cidr: "10.42.0.0/16".parse().expect("cluster cidr"),
            node_ip,
            backend,
            state_dir: self.dir.path().join(name).join("agent/cni"),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in self.made.drain(..) {
            let _ = netns::remove(&p);
        }
    }
}

/// Gives the calling thread's namespace an uplink: a veth `name` (the kernel here has no
/// dummy driver) with `ip/24`, up.
pub(super) async fn dummy_uplink(h: &Handle, name: &str, ip: Ipv4Addr) {
    let peer = format!("{name}p");
    h.link()
        .add(LinkVeth::new(name, &peer).build())
        .execute()
        .await
        .expect("add uplink veth");
    set_up(h, &peer, None).await;
    set_up(h, name, Some(ip)).await;
}

/// Brings link `name` up, with `ip/24` when given.
pub(super) async fn set_up(h: &Handle, name: &str, ip: Option<Ipv4Addr>) {
    let idx = nl::link_by_name(h, name)
        .await
        .expect("lookup link")
        .unwrap_or_else(|| panic!("link {name} exists"))
        .header
        .index;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .expect("link up");
    if let Some(ip) = ip {
        h.address()
            .add(idx, IpAddr::V4(ip), 24)
            .execute()
            .await
            .expect("add address");
    }
}

/// The usual one-node setup: an uplink holding [`NODE_IP`] and a started Cni.
pub(super) async fn single_node(
    scratch: &Scratch,
    pod_cidr: &str,
    backend: Backend,
) -> (Handle, Cni) {
    let h = connect();
    dummy_uplink(&h, "uplink0", NODE_IP).await;
    let cni = Cni::start(scratch.node("n1", pod_cidr, NODE_IP, backend))
        .await
        .expect("start");
    (h, cni)
}

/// What a pod sees of its network.
#[derive(Debug)]
pub(super) struct PodView {
    pub eth0_up: bool,
    pub mtu: u32,
    pub addrs: Vec<(Ipv4Addr, u8)>,
    pub default_gw: Option<Ipv4Addr>,
}

/// Reads `eth0`, its addresses and the default route from inside the pod namespace;
/// `None` when there is no `eth0`.
pub(super) fn pod_view(ns: &Path) -> Option<PodView> {
    query_in(ns, |h| async move {
        let link = nl::link_by_name(&h, "eth0").await.expect("lookup eth0")?;
        let idx = link.header.index;
        let addrs = nl::ipv4_addrs(&h, idx, "eth0")
            .await
            .expect("addresses")
            .into_iter()
            .map(|(ip, p, _)| (ip, p))
            .collect();
        let routes = ipv4_routes(&h).await;
        let default_gw = routes.iter().find_map(|r| {
            (r.header.destination_prefix_length == 0)
                .then(|| gateway_of(r))
                .flatten()
        });
        Some(PodView {
            eth0_up: link
                .header
                .flags
                .contains(rtnetlink::packet_route::link::LinkFlags::Up),
            mtu: nl::mtu(&link).unwrap_or(0),
            addrs,
            default_gw,
        })
    })
}

/// Every IPv4 route of the main table in `h`'s namespace.
pub(super) async fn ipv4_routes(h: &Handle) -> Vec<RouteMessage> {
    h.route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .expect("list routes")
}

pub(super) fn gateway_of(r: &RouteMessage) -> Option<Ipv4Addr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

pub(super) fn destination_of(r: &RouteMessage) -> Option<Ipv4Subnet> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
            Ipv4Subnet::new(*ip, r.header.destination_prefix_length).ok()
        }
        _ => None,
    })
}

/// Listens on `ip` (port chosen by the kernel) inside `ns`; answers one connection by
/// echoing what it read prefixed with `pong `. Returns the address and the thread.
pub(super) fn serve_once(ns: &Path, ip: Ipv4Addr) -> (SocketAddr, std::thread::JoinHandle<String>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = ns.to_path_buf();
    let t = std::thread::spawn(move || {
        enter(&path);
        let l = TcpListener::bind((ip, 0)).expect("bind listener");
        tx.send(l.local_addr().expect("addr")).expect("send addr");
        let (mut s, peer) = l.accept().expect("accept");
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = [0u8; 64];
        // The caller checks the answer; a failed exchange shows up there.
        if let Ok(n) = s.read(&mut buf) {
            let _ = s.write_all(format!("pong {}", String::from_utf8_lossy(&buf[..n])).as_bytes());
        }
        peer.ip().to_string()
    });
    (rx.recv().expect("listener address"), t)
}

/// Connects to `addr` from inside `ns`, sends `msg`, returns the answer.
pub(super) fn call_from(ns: &Path, addr: SocketAddr, msg: &str) -> std::io::Result<String> {
    let msg = msg.to_string();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(msg.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// Asserts a TCP round trip from `from` to a listener on `ip` inside `to`, and returns
/// the source address the listener saw.
pub(super) fn assert_tcp(from: &Path, to: &Path, ip: Ipv4Addr) -> String {
    let (addr, server) = serve_once(to, ip);
    let answer =
        call_from(from, addr, "ping").unwrap_or_else(|e| panic!("TCP to {addr} failed: {e}"));
    assert_eq!(answer, "pong ping", "answer from {addr}");
    server.join().expect("server thread")
}

/// `nft list table ip k3rs-cni` run in the calling thread's namespace.
pub(super) fn nft_table() -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "ip", super::NFT_TABLE])
        .output()
        .expect("run nft (apt-get install nftables)");
    assert!(
        out.status.success(),
        "nft list table: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
