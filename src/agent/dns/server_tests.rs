//! Tests of the DNS server over real loopback sockets: UDP and TCP answers, truncation,
//! malformed and unsupported queries, forwarding with its cache, SERVFAIL when no
//! upstream answers.

use super::*;
use crate::agent::dns::sources::{Kind, Sources};
use hickory_proto::op::{Edns, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};

fn zone() -> Zone {
    let mut s = Sources::default();
    s.replace(
        Kind::Service,
        &[
            json!({"metadata": {"name": "web", "namespace": "default"},
                   "spec": {"clusterIP": "10.43.0.50"}}),
            json!({"metadata": {"name": "big", "namespace": "default"},
                   "spec": {"clusterIP": "None"}}),
        ],
    );
    let eps: Vec<_> = (0..100)
        .map(|i| json!({"addresses": [format!("10.42.{}.{}", i / 200, i % 200 + 2)]}))
        .collect();
    s.replace(
        Kind::EndpointSlice,
        &[json!({"metadata": {"name": "big-x", "namespace": "default",
                  "labels": {"kubernetes.io/service-name": "big"}}, "endpoints": eps})],
    );
    Zone::build("cluster.local", None, &s, 1)
}

fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        m.set_edns(Edns::new());
    }
    m.to_vec().unwrap()
}

/// A fake upstream answering `*.example.` A with 192.0.2.1 (TTL 60); counts queries.
async fn fake_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            c.fetch_add(1, Ordering::SeqCst);
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.add_queries(q.queries.clone());
            let name = q.queries[0].name().clone();
            r.add_answer(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 1))));
            let _ = sock.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    (addr, count)
}

async fn server(upstreams: Vec<SocketAddr>) -> (SocketAddr, SocketAddr, watch::Sender<bool>) {
    let resolver = Arc::new(Resolver::new(zone(), Forwarder::new(upstreams)));
    let (tx, rx) = watch::channel(false);
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (u, t) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    tokio::spawn(serve_udp(resolver.clone(), udp, rx.clone()));
    tokio::spawn(serve_tcp(resolver, tcp, rx));
    (u, t, tx)
}

async fn ask_udp(server: SocketAddr, packet: &[u8]) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn ask_tcp(server: SocketAddr, packet: &[u8]) -> Message {
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_all(&(packet.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(packet).await.unwrap();
    let n = s.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

#[tokio::test]
async fn answers_over_udp_and_tcp() {
    let (udp, tcp, _stop) = server(vec![]).await;
    let q = query("web.default.svc.cluster.local.", RecordType::A, false);
    for m in [ask_udp(udp, &q).await, ask_tcp(tcp, &q).await] {
        assert_eq!(m.metadata.id, u16::from_be_bytes([q[0], q[1]]));
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data.to_string(), "10.43.0.50");
    }
}

#[tokio::test]
async fn large_udp_answers_are_truncated_tcp_ones_are_not() {
    let (udp, tcp, _stop) = server(vec![]).await;
    let q = query("big.default.svc.cluster.local.", RecordType::A, false);
    let m = ask_udp(udp, &q).await;
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    let m = ask_tcp(tcp, &q).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
    // With EDNS the UDP limit is 1232 bytes: 100 A records (16 + name each) still do not fit,
    // but the OPT record comes back.
    let m = ask_udp(
        udp,
        &query("big.default.svc.cluster.local.", RecordType::A, true),
    )
    .await;
    assert!(m.metadata.truncation);
    assert!(m.edns.is_some());
}

#[tokio::test]
async fn malformed_and_unsupported_queries() {
    let (udp, _tcp, _stop) = server(vec![]).await;
    // A header only, claiming one question that is not there.
    let m = ask_udp(udp, &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]).await;
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    let mut update = Message::new(7, MessageType::Query, OpCode::Update);
    update.add_query(Query::query(
        Name::from_ascii("cluster.local.").unwrap(),
        RecordType::SOA,
    ));
    let m = ask_udp(udp, &update.to_vec().unwrap()).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
}

#[tokio::test]
async fn other_names_are_forwarded_and_cached() {
    let (up, count) = fake_upstream().await;
    let (udp, tcp, _stop) = server(vec![up]).await;
    let q = query("www.example.", RecordType::A, false);
    let m = ask_udp(udp, &q).await;
    assert_eq!(m.metadata.id, u16::from_be_bytes([q[0], q[1]]));
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.1");
    let again = query("WWW.example.", RecordType::A, false);
    let m = ask_udp(udp, &again).await;
    assert_eq!(m.metadata.id, u16::from_be_bytes([again[0], again[1]]));
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.1");
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "the second answer came from the cache"
    );
    // Cluster names never reach the upstream, also not misses of the search path.
    let m = ask_udp(
        udp,
        &query(
            "www.example.default.svc.cluster.local.",
            RecordType::A,
            false,
        ),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Over TCP the upstream is asked over TCP: the fake has no TCP, so SERVFAIL.
    let m = ask_tcp(tcp, &query("tcp.example.", RecordType::A, false)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn servfail_when_no_upstream_answers() {
    // A port nobody listens on: the ICMP error ends the wait at once.
    let dead = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (udp, _tcp, _stop) = server(vec![dead]).await;
    let m = ask_udp(udp, &query("www.example.", RecordType::A, false)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.queries.len(), 1);
}
