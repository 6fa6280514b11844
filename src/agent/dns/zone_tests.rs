//! Unit tests of the cluster zone: records a client sees for services, headless
//! endpoints, pods, PTR, SRV, ExternalName and unknown names.

use super::*;
use crate::agent::dns::sources::{self, Sources};
use hickory_proto::op::{Message, OpCode};
use serde_json::json;

fn sources() -> Sources {
    let mut s = Sources::default();
    let services = [
        json!({"metadata": {"name": "web", "namespace": "default"},
               "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.50", "clusterIPs": ["10.43.0.50"],
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 8080}]}}),
        json!({"metadata": {"name": "db", "namespace": "shop"},
               "spec": {"clusterIP": "None", "ports": [{"name": "mysql", "port": 3306}]}}),
        json!({"metadata": {"name": "ext", "namespace": "default"},
               "spec": {"type": "ExternalName", "externalName": "example.com."}}),
        json!({"metadata": {"name": "alias", "namespace": "default"},
               "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}}),
    ];
    s.replace(sources::Kind::Service, &services);
    let slices = [json!({
        "metadata": {"name": "db-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "mysql", "port": 3306, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.2.6"], "conditions": {"ready": true}},
            {"addresses": ["10.42.2.7"], "conditions": {"ready": false}},
        ],
    })];
    s.replace(sources::Kind::EndpointSlice, &slices);
    let pods = [
        json!({"metadata": {"name": "client", "namespace": "default"},
               "spec": {}, "status": {"podIP": "10.42.3.9", "podIPs": [{"ip": "10.42.3.9"}]}}),
        json!({"metadata": {"name": "db-1", "namespace": "shop"},
               "spec": {"hostname": "db-1", "subdomain": "db"}, "status": {"podIP": "10.42.2.8"}}),
        json!({"metadata": {"name": "hostnet", "namespace": "default"},
               "spec": {"hostNetwork": true}, "status": {"podIP": "172.30.0.11"}}),
    ];
    s.replace(sources::Kind::Pod, &pods);
    s
}

fn zone() -> Zone {
    Zone::build(
        "cluster.local",
        Some("10.43.0.10".parse().unwrap()),
        &sources(),
        7,
    )
}

fn ask(z: &Zone, name: &str, qtype: RecordType) -> (Outcome, Message) {
    let mut m = Message::response(1, OpCode::Query);
    let n = Name::from_ascii(name).unwrap();
    let o = z.answer(&n, qtype, &mut m);
    (o, m)
}

fn answers(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

#[test]
fn cluster_ip_services_resolve() {
    let z = zone();
    let (o, m) = ask(&z, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(o, Outcome::Answered);
    assert!(m.metadata.authoritative);
    assert_eq!(answers(&m), ["10.43.0.50"]);
    assert_eq!(m.answers[0].ttl, TTL);
    // Case does not matter; the owner keeps the asker's spelling.
    let (_, m) = ask(&z, "WEB.Default.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&m), ["10.43.0.50"]);
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "WEB.Default.svc.cluster.local."
    );
    // No AAAA: NODATA with the SOA.
    let (_, m) = ask(&z, "web.default.svc.cluster.local.", RecordType::AAAA);
    assert!(m.answers.is_empty());
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn srv_for_named_ports() {
    let z = zone();
    let (_, m) = ask(
        &z,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(answers(&m), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(m.additionals[0].data.to_string(), "10.43.0.50");
    let (_, m) = ask(
        &z,
        "_mysql._tcp.db.shop.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        answers(&m),
        [
            "0 50 3306 10-42-2-6.db.shop.svc.cluster.local.",
            "0 50 3306 db-0.db.shop.svc.cluster.local."
        ]
    );
}

#[test]
fn headless_services_resolve_to_ready_endpoints() {
    let z = zone();
    let (_, m) = ask(&z, "db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&m), ["10.42.1.5", "10.42.2.6"]);
    let (_, m) = ask(&z, "db-0.db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&m), ["10.42.1.5"]);
    let (_, m) = ask(&z, "10-42-2-6.db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&m), ["10.42.2.6"]);
    // Pod hostname + subdomain of a headless service.
    let (_, m) = ask(&z, "db-1.db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&m), ["10.42.2.8"]);
}

#[test]
fn pod_records_and_ptr() {
    let z = zone();
    let (_, m) = ask(&z, "10-42-3-9.default.pod.cluster.local.", RecordType::A);
    assert_eq!(answers(&m), ["10.42.3.9"]);
    let ptr = |ip: &str| {
        let (o, m) = ask(
            &z,
            &format!("{}.", names::reverse_name(ip.parse().unwrap())),
            RecordType::PTR,
        );
        (o, answers(&m))
    };
    assert_eq!(ptr("10.43.0.50").1, ["web.default.svc.cluster.local."]);
    assert_eq!(ptr("10.42.1.5").1, ["db-0.db.shop.svc.cluster.local."]);
    assert_eq!(ptr("10.42.2.8").1, ["db-1.db.shop.svc.cluster.local."]);
    assert_eq!(ptr("10.42.3.9").1, ["10-42-3-9.default.pod.cluster.local."]);
    // Not a cluster address (hostNetwork pods have the node's): upstream's business.
    assert_eq!(ptr("172.30.0.11").0, Outcome::Forward);
}

#[test]
fn external_names_are_cnames() {
    let z = zone();
    let (o, m) = ask(&z, "ext.default.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&m), ["example.com."]);
    assert_eq!(o, Outcome::Chase(Name::from_ascii("example.com.").unwrap()));
    // A target inside the cluster is followed here.
    let (o, m) = ask(&z, "alias.default.svc.cluster.local.", RecordType::A);
    assert_eq!(o, Outcome::Answered);
    assert_eq!(
        answers(&m),
        ["10.43.0.50", "web.default.svc.cluster.local."]
    );
}

#[test]
fn unknown_cluster_names_are_nxdomain_with_soa() {
    let z = zone();
    for name in [
        "nope.default.svc.cluster.local.",
        "web.default.svc.cluster.local.default.svc.cluster.local.",
        "example.com.svc.cluster.local.",
    ] {
        let (o, m) = ask(&z, name, RecordType::A);
        assert_eq!(o, Outcome::Answered, "{name}");
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        let soa = &m.authorities[0];
        assert_eq!(soa.name.to_ascii(), "cluster.local.");
        assert!(
            soa.data
                .to_string()
                .starts_with("ns.dns.cluster.local. hostmaster.cluster.local. 7 "),
            "{}",
            soa.data
        );
    }
    // Empty non-terminals exist.
    for name in [
        "default.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
    ] {
        let (_, m) = ask(&z, name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
    }
    let (o, _) = ask(&z, "example.com.", RecordType::A);
    assert_eq!(o, Outcome::Forward);
}

#[test]
fn sources_ignore_unchanged_pod_updates() {
    let mut s = sources();
    let pod = json!({"metadata": {"name": "client", "namespace": "default"},
                     "spec": {}, "status": {"podIP": "10.42.3.9", "phase": "Running"}});
    assert!(!s.apply(sources::Kind::Pod, "MODIFIED", &pod));
    assert!(s.apply(sources::Kind::Pod, "DELETED", &pod));
    assert!(!s.apply(sources::Kind::Pod, "DELETED", &pod));
}
