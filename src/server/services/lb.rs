//! ServiceLB, k3s's cloud-less LoadBalancer: every Service of type LoadBalancer gets
//! `status.loadBalancer.ingress` = the InternalIPs of the nodes that serve it (the nodes
//! labelled `svccontroller.k3s.cattle.io/enablelb=true` when any node has that label, else
//! every node). The agents' service proxy answers the service port on those addresses.

use crate::api::meta;
use crate::server::informer::{builtin, Informer, Informers};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::watch;

/// The node label that limits ServiceLB to some nodes (k3s's name).
pub const ENABLE_LB_LABEL: &str = "svccontroller.k3s.cattle.io/enablelb";

/// The ingress addresses, in node-name order, for these nodes.
pub fn ingress_ips(nodes: &[std::sync::Arc<Value>]) -> Vec<String> {
    let labelled = |n: &Value| n["metadata"]["labels"][ENABLE_LB_LABEL].as_str() == Some("true");
    let any_labelled = nodes.iter().any(|n| labelled(n));
    let mut chosen: Vec<&Value> = nodes
        .iter()
        .map(|n| n.as_ref())
        .filter(|n| !meta::is_deleting(n) && (!any_labelled || labelled(n)))
        .collect();
    chosen.sort_by_key(|n| meta::name(n).to_string());
    let mut ips = Vec::new();
    for n in chosen {
        for a in n["status"]["addresses"].as_array().into_iter().flatten() {
            if a["type"] == "InternalIP" {
                if let Some(ip) = a["address"].as_str() {
                    if !ips.iter().any(|i| i == ip) {
                        ips.push(ip.to_string());
                    }
                }
            }
        }
    }
    ips
}

/// Runs until `shutdown` flips.
pub async fn run(informers: Informers, mut shutdown: watch::Receiver<bool>) {
    let services = informers.get(builtin("", "v1", "services"));
    let nodes = informers.get(builtin("", "v1", "nodes"));
    let mut svc_events = services.subscribe();
    let mut node_events = nodes.subscribe();
    services.wait_synced().await;
    nodes.wait_synced().await;
    loop {
        sync(&informers, &services, &nodes).await;
        tokio::select! {
            _ = svc_events.recv() => {}
            _ = node_events.recv() => {}
            // A failed write is retried on this tick.
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = shutdown.changed() => return,
        }
        // Let a burst of events settle into one pass.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sync(informers: &Informers, services: &Informer, nodes: &Informer) {
    let ips = ingress_ips(&nodes.list_all());
    let want_lb: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    let res = builtin("", "v1", "services");
    for svc in services.list_all() {
        let is_lb = svc["spec"]["type"] == "LoadBalancer";
        let has = svc["status"]["loadBalancer"]["ingress"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let want = if is_lb { want_lb.clone() } else { Vec::new() };
        // A non-LB service keeps whatever someone else put there unless it is ours to clear:
        // only clear when the type changed away from LoadBalancer and we left IPs behind.
        if has == want || (!is_lb && has.is_empty()) {
            continue;
        }
        let (ns, name) = (meta::namespace(&svc), meta::name(&svc));
        let result = informers
            .registry()
            .update_with(res, ns, name, |cur| {
                cur["status"]["loadBalancer"] = if want.is_empty() {
                    json!({})
                } else {
                    json!({"ingress": want})
                };
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::debug!(service = %format!("{ns}/{name}"), error = %e.message, "cannot set the load balancer status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(name: &str, ip: &str, lb: bool) -> Arc<Value> {
        let mut n = json!({"metadata": {"name": name, "labels": {}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}});
        if lb {
            n["metadata"]["labels"][ENABLE_LB_LABEL] = json!("true");
        }
        Arc::new(n)
    }

    #[test]
    fn all_nodes_unless_some_are_labelled() {
        let nodes = vec![node("b", "10.0.0.2", false), node("a", "10.0.0.1", false)];
        assert_eq!(ingress_ips(&nodes), vec!["10.0.0.1", "10.0.0.2"]);
        let nodes = vec![node("b", "10.0.0.2", true), node("a", "10.0.0.1", false)];
        assert_eq!(ingress_ips(&nodes), vec!["10.0.0.2"]);
    }
}
