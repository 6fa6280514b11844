//! Pods' network counters on a node with a pod network (a one-node test cluster in its
//! own namespace): after the node downloads a file from a pod's httpd, the kubelet's
//! `/metrics/cadvisor` (`container_network_*` under cAdvisor's names) and `/stats/summary`
//! (`network`) show at least those bytes leaving the pod's `eth0`.

use serde_json::Value;

use super::common::cluster::Cluster;
use super::common::eventually;

/// Bytes of the file the pod serves.
const FILE_BYTES: u64 = 200_000;

/// `GET https://<node 1>:10250<path>` from inside node 1 with the API server's kubelet
/// client certificate.
fn kubelet(c: &Cluster, path: &str) -> String {
    let tls = c.data_dir(1).join("server/tls");
    let (cert, key) = (
        tls.join("client-kube-apiserver.crt"),
        tls.join("client-kube-apiserver.key"),
    );
    let url = format!("https://{}:10250{path}", c.node_ip(1));
    let out = c.exec_in_node(
        1,
        &[
            "curl",
            "-sfk",
            "--cert",
            &cert.to_string_lossy(),
            "--key",
            &key.to_string_lossy(),
            &url,
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the sample whose series is exactly `series` in an exposition document.
fn sample(doc: &str, series: &str) -> Option<f64> {
    doc.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[test]
fn pod_network_counters_in_cadvisor_and_summary() {
    let c = Cluster::start(1);
    c.run_pod(
        "web",
        1,
        &format!(
            "mkdir -p /w && head -c {FILE_BYTES} /dev/zero > /w/f && exec httpd -f -p 8080 -h /w"
        ),
    );
    c.wait_pod_running("web");
    let ip = c.jsonpath("pod/web", "{.status.podIP}");
    assert!(!ip.is_empty(), "pod web has no IP");
    let fetched = eventually(30, || {
        let out = c.exec_in_node(
            1,
            &[
                "curl",
                "-sf",
                "-o",
                "/dev/null",
                &format!("http://{ip}:8080/f"),
            ],
        );
        out.status.success()
    });
    assert!(fetched, "cannot download from the pod at {ip}");

    let tx = "container_network_transmit_bytes_total{container=\"\",interface=\"eth0\",namespace=\"default\",pod=\"web\"}";
    let rx = "container_network_receive_packets_total{container=\"\",interface=\"eth0\",namespace=\"default\",pod=\"web\"}";
    let cadvisor = kubelet(&c, "/metrics/cadvisor");
    assert!(
        sample(&cadvisor, tx).is_some_and(|v| v >= FILE_BYTES as f64),
        "pod web sent {FILE_BYTES} bytes; /metrics/cadvisor says:\n{cadvisor}"
    );
    assert!(
        sample(&cadvisor, rx).is_some_and(|v| v > 0.0),
        "pod web received packets; /metrics/cadvisor says:\n{cadvisor}"
    );
    for family in [
        "container_network_receive_bytes_total",
        "container_network_receive_errors_total",
        "container_network_receive_packets_dropped_total",
        "container_network_transmit_packets_total",
        "container_network_transmit_errors_total",
        "container_network_transmit_packets_dropped_total",
    ] {
        assert!(
            cadvisor.contains(&format!("# TYPE {family} counter")),
            "/metrics/cadvisor lacks {family}"
        );
    }
    assert!(
        !cadvisor.contains("interface=\"lo\""),
        "loopback is not reported (cAdvisor leaves it out):\n{cadvisor}"
    );

    let summary: Value = serde_json::from_str(&kubelet(&c, "/stats/summary")).unwrap_or_default();
    let pod = summary["pods"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["podRef"]["name"] == "web"))
        .cloned()
        .unwrap_or_default();
    let net = &pod["network"];
    assert_eq!(net["name"], "eth0", "summary network of web: {pod}");
    assert!(
        net["txBytes"].as_u64().is_some_and(|b| b >= FILE_BYTES)
            && net["rxBytes"].as_u64().is_some_and(|b| b > 0),
        "summary network of web: {net}"
    );
    assert!(
        net["interfaces"]
            .as_array()
            .is_some_and(|i| i.len() == 1 && i[0]["name"] == "eth0"),
        "summary interfaces of web: {net}"
    );
    assert!(
        summary["node"]["network"]["interfaces"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["name"] == "eth0")),
        "node network in the summary: {}",
        summary["node"]["network"]
    );
}
