//! Node-local DNS benchmark: the agent's DNS server (`k3rs::agent::dns`) with a zone of
//! 1000 services (half of them headless with 10 endpoints) on a single-threaded tokio
//! runtime (one core), driven over loopback UDP by a client thread keeping a window of
//! queries in flight. Prints queries answered per second for:
//! - cluster names (`web-N.default.svc.cluster.local` A);
//! - search-path misses (`example.com.default.svc.cluster.local`: NXDOMAIN from memory);
//! - forwarded names answered from the forward cache.
//!
//! No root needed. Run: `cargo bench --bench dns` (`K3RS_BENCH_DNS_SECS` sets the
//! seconds per case, default 3). Target from issue #8: over 20 000 queries/s.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use k3rs::agent::dns::{sources, Forwarder, Resolver, Zone};
use serde_json::json;

/// Queries kept in flight by the client.
const WINDOW: usize = 32;

fn zone() -> Zone {
    let mut s = sources::Sources::default();
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..1000u32 {
        let headless = i % 2 == 1;
        let ip = if headless {
            "None".to_string()
        } else {
            format!("10.43.{}.{}", i / 250 + 1, i % 250 + 1)
        };
        services.push(
            json!({"metadata": {"name": format!("web-{i}"), "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}),
        );
        if headless {
            let eps: Vec<_> = (0..10u32)
                .map(|e| json!({"addresses": [format!("10.42.{}.{}", i % 250, e + 2)], "conditions": {"ready": true}}))
                .collect();
            slices.push(
                json!({"metadata": {"name": format!("web-{i}-x"), "namespace": "default",
                "labels": {"kubernetes.io/service-name": format!("web-{i}")}},
                "ports": [{"name": "http", "port": 8080}], "endpoints": eps}),
            );
        }
    }
    s.replace(sources::Kind::Service, &services);
    s.replace(sources::Kind::EndpointSlice, &slices);
    Zone::build("cluster.local", None, &s, 1)
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    m.to_vec().expect("encode")
}

/// Sends queries for `names` round-robin for `secs`, `WINDOW` in flight; returns
/// answers per second.
fn drive(server: SocketAddr, names: &[String], secs: f64) -> f64 {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    sock.connect(server).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let packets: Vec<Vec<u8>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| query(i as u16, n))
        .collect();
    let mut buf = [0u8; 4096];
    let mut next = 0usize;
    let mut answered = 0u64;
    let mut in_flight = 0usize;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        while in_flight < WINDOW {
            sock.send(&packets[next % packets.len()]).expect("send");
            next += 1;
            in_flight += 1;
        }
        match sock.recv(&mut buf) {
            Ok(_) => {
                answered += 1;
                in_flight -= 1;
            }
            // A lost datagram: refill the window.
            Err(_) => in_flight = 0,
        }
    }
    answered as f64 / start.elapsed().as_secs_f64()
}

/// A tiny upstream answering every query with one A record (for the forwarding case).
fn upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("upstream socket");
    let addr = sock.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.add_queries(q.queries.clone());
            if let Some(q0) = q.queries.first() {
                r.add_answer(hickory_proto::rr::Record::from_rdata(
                    q0.name().clone(),
                    300,
                    hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, 1)),
                ));
            }
            let _ = sock.send_to(&r.to_vec().expect("encode"), peer);
        }
    });
    addr
}

fn main() {
    let secs: f64 = std::env::var("K3RS_BENCH_DNS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let built = Instant::now();
    let zone = zone();
    println!(
        "zone: {} names built in {:.1} ms",
        zone.len(),
        built.elapsed().as_secs_f64() * 1e3
    );
    let resolver = Arc::new(Resolver::new(zone, Forwarder::new(vec![upstream()])));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("server socket");
    sock.set_nonblocking(true).expect("nonblocking");
    let server = sock.local_addr().expect("addr");
    let (_tx, rx) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        // One core: a current-thread runtime.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let sock = tokio::net::UdpSocket::from_std(sock).expect("tokio socket");
            k3rs::agent::dns::server::serve_udp(resolver, sock, rx).await;
        });
    });
    let cluster: Vec<String> = (0..1000)
        .map(|i| format!("web-{i}.default.svc.cluster.local."))
        .collect();
    let misses: Vec<String> = (0..1000)
        .map(|i| format!("site{i}.example.com.default.svc.cluster.local."))
        .collect();
    let forwarded: Vec<String> = (0..100).map(|i| format!("site{i}.example.com.")).collect();
    println!(
        "cluster names (A):          {:>9.0} queries/s",
        drive(server, &cluster, secs)
    );
    println!(
        "search-path misses (NXDOMAIN): {:>6.0} queries/s",
        drive(server, &misses, secs)
    );
    // Warm the forward cache, then measure.
    drive(server, &forwarded, 0.5);
    println!(
        "forwarded, from cache:      {:>9.0} queries/s",
        drive(server, &forwarded, secs)
    );
}
