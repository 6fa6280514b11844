//! Service proxy benchmark, in a network namespace of its own (the bench re-runs itself
//! under `unshare --net`). Prints:
//! - the time to write the whole table for S services × E endpoints (first start);
//! - the time from an endpoint change to its rule in place (build, diff, `nft -f`), p50
//!   and p99 over N changes at that size (target: p99 under 100 ms for 1000 × 10);
//! - the added latency of a ClusterIP hop: new TCP connection + one request/answer
//!   through a ClusterIP (DNAT in the nat output hook) versus straight to the backend IP.
//!
//! Needs root, util-linux `unshare`, iproute2 and nftables. Run: `cargo bench --bench
//! proxy` (`K3RS_BENCH_SERVICES` S, default 1000; `K3RS_BENCH_ENDPOINTS` E, default 10;
//! `K3RS_BENCH_CHANGES` N, default 200).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::pct;
use k3rs::agent::proxy::model::{Backend, ServicePort};
use k3rs::agent::proxy::{Applier, ProxyOptions};

const MARK: &str = "K3RS_BENCH_PROXY_IN_NETNS";
const CIDR: &str = "10.42.0.0/16";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn service(i: usize, endpoints: usize, generation: u32) -> ServicePort {
    let ip = |n: usize| Ipv4Addr::new(10, 42, (n / 250) as u8 % 250, (n % 250) as u8 + 2);
    ServicePort {
        id: format!("bench/svc-{i}/tcp/http"),
        protocol: "tcp",
        cluster_ip: Some(Ipv4Addr::new(
            10,
            43,
            (i / 250) as u8 + 1,
            (i % 250) as u8 + 1,
        )),
        port: 80,
        node_port: None,
        external_ips: Vec::new(),
        affinity_timeout: None,
        internal_local: false,
        external_local: false,
        backends: (0..endpoints)
            .map(|e| Backend {
                ip: ip(i * endpoints + e + generation as usize * 7),
                port: 8080,
                node: format!("node-{}", e % 3),
            })
            .collect(),
    }
}

fn sh(cmd: &[&str]) {
    let st = Command::new(cmd[0])
        .args(&cmd[1..])
        .status()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?} failed");
}

/// Median and p99 of new-connection + request/answer round trips to `addr`.
fn round_trips(addr: SocketAddr, n: usize) -> (f64, f64) {
    let mut times = Vec::with_capacity(n);
    let mut buf = [0u8; 4];
    for _ in 0..n {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.write_all(b"ping").expect("write");
        s.read_exact(&mut buf).expect("read");
        times.push(t.elapsed());
    }
    times.sort();
    (pct(&times, 0.5), pct(&times, 0.99))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::var_os(MARK).is_none() {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the proxy benchmark needs root (nftables in a network namespace)"
        );
        let me = std::env::current_exe().expect("own path");
        let st = Command::new("unshare")
            .args(["--net", "--"])
            .arg(me)
            .args(std::env::args_os().skip(1))
            .env(MARK, "1")
            .status()
            .expect("unshare (util-linux) is needed");
        std::process::exit(st.code().unwrap_or(1));
    }
    let services = env_usize("K3RS_BENCH_SERVICES", 1000);
    let endpoints = env_usize("K3RS_BENCH_ENDPOINTS", 10);
    let changes = env_usize("K3RS_BENCH_CHANGES", 200);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut ports: Vec<ServicePort> = (0..services).map(|i| service(i, endpoints, 0)).collect();
    let mut applier = Applier::new(ProxyOptions {
        node_name: "node-0".into(),
        cluster_cidr: CIDR.into(),
    });
    let t = Instant::now();
    rt.block_on(applier.apply(&ports)).expect("full table");
    println!(
        "proxy: full table, {services} services x {endpoints} endpoints: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let mut times = Vec::with_capacity(changes);
    for n in 0..changes {
        let i = (n * 7919) % services;
        ports[i] = service(i, endpoints, n as u32 + 1);
        // Every tenth change empties a service (map and set updates, chain removal).
        if n % 10 == 5 {
            ports[i].backends.clear();
        }
        let t = Instant::now();
        rt.block_on(applier.apply(&ports))
            .expect("incremental update");
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "proxy: endpoint change to rule in place ({changes} changes): p50 {:.1} ms, p99 {:.1} ms (target p99 < 100 ms)",
        pct(&times, 0.5),
        pct(&times, 0.99)
    );

    // ClusterIP hop: a backend on a local veth address, reached directly and through DNAT.
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&[
        "ip", "link", "add", "bench0", "type", "veth", "peer", "name", "bench1",
    ]);
    sh(&["ip", "link", "set", "bench1", "up"]);
    sh(&["ip", "addr", "add", "10.42.0.2/24", "dev", "bench0"]);
    sh(&["ip", "link", "set", "bench0", "up"]);
    let listener = TcpListener::bind("10.42.0.2:8080").expect("bind backend");
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() {
                let _ = s.write_all(&buf);
            }
        }
    });
    let mut hop = service(0, 1, 0);
    hop.cluster_ip = Some(Ipv4Addr::new(10, 43, 200, 1));
    hop.backends = vec![Backend {
        ip: Ipv4Addr::new(10, 42, 0, 2),
        port: 8080,
        node: "node-0".into(),
    }];
    hop.id = "bench/hop/tcp/http".into();
    ports.push(hop);
    rt.block_on(applier.apply(&ports)).expect("hop service");
    sh(&["ip", "route", "add", "10.43.0.0/16", "dev", "bench0"]);
    let rounds = 2000;
    let direct = round_trips("10.42.0.2:8080".parse().expect("addr"), rounds);
    let via = round_trips("10.43.200.1:80".parse().expect("addr"), rounds);
    println!(
        "proxy: connect+request to the pod IP: p50 {:.3} ms, p99 {:.3} ms; through the ClusterIP: p50 {:.3} ms, p99 {:.3} ms (added p50 {:.3} ms)",
        direct.0,
        direct.1,
        via.0,
        via.1,
        via.0 - direct.0
    );
}
