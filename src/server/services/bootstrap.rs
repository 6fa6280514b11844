//! The Services every cluster has, created at server start: `kubernetes` in `default`
//! (the first address of the service CIDR, port 443 to the API server's port, with its
//! Endpoints and EndpointSlice pointing at the server's advertise address, kept current
//! on every start) and `kube-dns` in `kube-system` (the cluster DNS address, answered by
//! every node's built-in resolver, so it carries no selector and the proxy skips it).

use crate::api::status::ApiError;
use crate::server::informer::builtin;
use crate::server::registry::{Registry, WriteOptions};
use serde_json::{json, Value};
use std::net::IpAddr;

/// Label on the `kube-dns` Service: the node answers on its ClusterIP itself, so the
/// service proxy must leave it alone.
pub const NODE_LOCAL_DNS_LABEL: &str = "k3rs.io/node-local-dns";

/// Where the built-in Services point.
#[derive(Clone, Debug)]
pub struct BuiltinServices {
    /// ClusterIP of `kubernetes` (first address of the service CIDR).
    pub api_service_ip: Option<IpAddr>,
    /// ClusterIP of `kube-dns` (`--cluster-dns`).
    pub dns_service_ip: Option<IpAddr>,
    /// The API server's address as other nodes and pods reach it.
    pub advertise_ip: IpAddr,
    /// The API server's port.
    pub port: u16,
}

fn opts() -> WriteOptions {
    WriteOptions {
        field_manager: "kube-apiserver".into(),
        ..Default::default()
    }
}

/// Creates what is missing, and points `kubernetes`'s endpoints at this server.
pub async fn ensure(registry: &Registry, b: &BuiltinServices) -> Result<(), ApiError> {
    let svcs = builtin("", "v1", "services");
    if let Some(ip) = b.api_service_ip {
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": ip.to_string(), "type": "ClusterIP", "sessionAffinity": "None",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": b.port}]}
        });
        create_missing(registry, svcs, "default", svc).await?;
        let family = if b.advertise_ip.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        };
        let endpoints = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": b.advertise_ip.to_string()}],
                "ports": [{"name": "https", "port": b.port, "protocol": "TCP"}]}]
        });
        put(
            registry,
            builtin("", "v1", "endpoints"),
            "default",
            endpoints,
        )
        .await?;
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": family,
            "endpoints": [{"addresses": [b.advertise_ip.to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false}}],
            "ports": [{"name": "https", "port": b.port, "protocol": "TCP"}]
        });
        put(
            registry,
            builtin("discovery.k8s.io", "v1", "endpointslices"),
            "default",
            slice,
        )
        .await?;
    }
    if let Some(ip) = b.dns_service_ip {
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                    "kubernetes.io/name": "CoreDNS", NODE_LOCAL_DNS_LABEL: "true"},
                "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
            "spec": {"clusterIP": ip.to_string(), "type": "ClusterIP", "sessionAffinity": "None",
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}
        });
        create_missing(registry, svcs, "kube-system", svc).await?;
    }
    Ok(())
}

async fn create_missing(
    registry: &Registry,
    res: &'static crate::api::resources::Resource,
    ns: &str,
    obj: Value,
) -> Result<(), ApiError> {
    match registry.create(res, ns, obj, &opts()).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `obj`, or replaces the stored one's content when it differs.
async fn put(
    registry: &Registry,
    res: &'static crate::api::resources::Resource,
    ns: &str,
    obj: Value,
) -> Result<(), ApiError> {
    let name = crate::api::meta::name(&obj).to_string();
    match registry.create(res, ns, obj.clone(), &opts()).await {
        Ok(_) => return Ok(()),
        Err(e) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    registry
        .update_with(res, ns, &name, |cur| {
            for k in ["subsets", "endpoints", "ports", "addressType"] {
                if let Some(v) = obj.get(k) {
                    cur[k] = v.clone();
                }
            }
            Ok(())
        })
        .await
        .map(drop)
}
