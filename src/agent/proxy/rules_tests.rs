//! Tests of the proxy's rules: what goes where, and that `nft` accepts the full table and
//! the diffs (in a throw-away network namespace: `unshare --net`, needs root and nft).

use super::*;
use crate::agent::proxy::model::{all_ports, Backend, ServicePort};
use serde_json::json;
use std::collections::BTreeMap;

const CIDR: &str = "10.42.0.0/16";

fn port(id: &str, backends: &[(&str, &str)]) -> ServicePort {
    ServicePort {
        id: id.into(),
        protocol: "tcp",
        cluster_ip: Some("10.43.0.20".parse().unwrap()),
        port: 80,
        node_port: Some(30080),
        external_ips: vec!["172.30.0.11".parse().unwrap()],
        affinity_timeout: None,
        internal_local: false,
        external_local: false,
        backends: backends
            .iter()
            .map(|(ip, node)| Backend {
                ip: ip.parse().unwrap(),
                port: 8080,
                node: node.to_string(),
            })
            .collect(),
    }
}

/// Runs the scripts one after another with `nft -f` in a new network namespace.
fn nft_accepts(scripts: &[String]) {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test needs root (it runs nft in a new network namespace): run it as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = String::new();
    for (i, s) in scripts.iter().enumerate() {
        let p = dir.path().join(format!("{i}.nft"));
        std::fs::write(&p, s).unwrap();
        cmd.push_str(&format!("nft -f {} && ", p.display()));
    }
    cmd.push_str("nft list table ip k3rs-services >/dev/null");
    let out = std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", &cmd])
        .output()
        .expect("unshare (util-linux) and nft (apt-get install nftables) are needed");
    assert!(
        out.status.success(),
        "nft refused the rules: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        scripts.join("\n----\n")
    );
}

#[test]
fn ready_backends_get_a_random_dnat_and_empty_services_are_rejected() {
    let rs = build(
        &[
            port(
                "default/web/tcp/http",
                &[("10.42.1.2", "n1"), ("10.42.2.2", "n2")],
            ),
            port("default/empty/tcp/-", &[]),
        ],
        "n1",
        CIDR,
    );
    let svc = &rs.chains["svc-default/web/tcp/http"];
    assert_eq!(
        svc,
        &vec!["meta l4proto tcp dnat to numgen random mod 2 map { 0 : 10.42.1.2 . 8080, 1 : 10.42.2.2 . 8080 }".to_string()]
    );
    assert!(rs.elements["svc-vmap"]
        .contains(&"10.43.0.20 . tcp . 80 : goto svc-default/web/tcp/http".to_string()));
    assert!(rs.elements["no-ep"].contains(&"10.43.0.20 . tcp . 80".to_string()));
    assert!(rs.elements["no-ep-np"].contains(&"tcp . 30080".to_string()));
    assert!(rs.elements["nodeport-vmap"]
        .contains(&"tcp . 30080 : goto ext-default/web/tcp/http".to_string()));
    assert!(!rs.chains.contains_key("svc-default/empty/tcp/-"));
}

#[test]
fn local_policies_use_only_this_nodes_backends() {
    let mut p = port(
        "default/web/tcp/http",
        &[("10.42.1.2", "n1"), ("10.42.2.2", "n2")],
    );
    p.internal_local = true;
    p.external_local = true;
    let rs = build(&[p], "n1", CIDR);
    assert_eq!(
        rs.chains["loc-default/web/tcp/http"],
        vec!["meta l4proto tcp dnat to 10.42.1.2:8080".to_string()]
    );
    assert!(rs.elements["svc-vmap"]
        .contains(&"10.43.0.20 . tcp . 80 : goto loc-default/web/tcp/http".to_string()));
    let rs = build(
        &[{
            let mut p = port("default/web/tcp/http", &[("10.42.2.2", "n2")]);
            p.external_local = true;
            p
        }],
        "n1",
        CIDR,
    );
    assert_eq!(
        rs.chains["ext-default/web/tcp/http"].last().unwrap(),
        "drop"
    );
}

#[test]
fn the_full_table_and_diffs_are_accepted_by_nft() {
    let a = build(
        &[port("default/web/tcp/http", &[("10.42.1.2", "n1")])],
        "n1",
        CIDR,
    );
    let mut aff = port(
        "default/web/tcp/http",
        &[("10.42.1.2", "n1"), ("10.42.2.3", "n2")],
    );
    aff.affinity_timeout = Some(60);
    let b = build(&[aff, port("default/other/tcp/-", &[])], "n1", CIDR);
    let c = build(&[], "n1", CIDR);
    let ab = match diff(&a, &b) {
        Change::Partial(t) => t,
        other => panic!("expected a partial change, got {other:?}"),
    };
    let bc = match diff(&b, &c) {
        Change::Partial(t) => t,
        other => panic!("expected a partial change, got {other:?}"),
    };
    assert_eq!(diff(&c, &c), Change::Nothing);
    nft_accepts(&[full(&a, CIDR), ab, bc, full(&b, CIDR)]);
}

#[test]
fn services_and_slices_become_ports_with_ready_backends() {
    let mut services = BTreeMap::new();
    services.insert("default/web".to_string(), json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"clusterIP": "10.43.0.20", "type": "LoadBalancer", "sessionAffinity": "None",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http", "nodePort": 30080}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "172.30.0.11"}]}}
    }));
    services.insert("kube-system/kube-dns".to_string(), json!({
        "metadata": {"namespace": "kube-system", "name": "kube-dns", "labels": {"k3rs.io/node-local-dns": "true"}},
        "spec": {"clusterIP": "10.43.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}
    }));
    let mut slices = BTreeMap::new();
    slices.insert("default/web-abcde".to_string(), json!({
        "metadata": {"namespace": "default", "name": "web-abcde", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.1.2"], "conditions": {"ready": true}, "nodeName": "n1"},
            {"addresses": ["10.42.1.3"], "conditions": {"ready": false}, "nodeName": "n1"}]
    }));
    let ports = all_ports(&services, &slices);
    assert_eq!(ports.len(), 1, "kube-dns is left to the node's resolver");
    assert_eq!(ports[0].backends.len(), 1);
    assert_eq!(ports[0].backends[0].port, 8080);
    assert_eq!(ports[0].node_port, Some(30080));
    assert_eq!(
        ports[0].external_ips,
        vec!["172.30.0.11".parse::<std::net::Ipv4Addr>().unwrap()]
    );
}
