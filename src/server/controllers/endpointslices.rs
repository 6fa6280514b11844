//! EndpointSlices (`discovery.k8s.io/v1`) of Services with a selector, from the endpoint
//! groups the endpoints controller computed ([`super::endpoints::endpoint_groups`]): one
//! slice per port list and at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints each, labelled
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`, owned by the
//! Service (so the garbage collector removes them with it). A Service that selects no pod
//! keeps one empty placeholder slice, as upstream's controller does.
//!
//! Existing slices are rewritten in place where possible (same port list first), so a pod
//! turning ready changes one slice rather than replacing them all.

use super::endpoints::{derived_labels, EndpointGroup, EndpointPort, PodEndpoint};
use crate::api::meta;
use crate::api::status::ApiError;
use crate::server::informer::{builtin, Informer, Informers, ObjectKey};
use crate::server::registry::WriteOptions;
use serde_json::{json, Value};
use std::sync::Arc;

/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The label that names a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that names a slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`] (upstream's).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// The content of one desired slice.
#[derive(Debug, PartialEq)]
struct Desired {
    address_type: &'static str,
    ports: Vec<Value>,
    endpoints: Vec<Value>,
}

fn endpoint_json(e: &PodEndpoint) -> Value {
    let mut v = json!({
        "addresses": [e.ip],
        "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
        "targetRef": e.target_ref(),
    });
    if !e.node_name.is_empty() {
        v["nodeName"] = json!(e.node_name);
    }
    if let Some(h) = &e.hostname {
        v["hostname"] = json!(h);
    }
    v
}

fn address_type(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn desired(groups: &[EndpointGroup]) -> Vec<Desired> {
    let mut out = Vec::new();
    for g in groups {
        let ports: Vec<Value> = g.ports.iter().map(EndpointPort::to_json).collect();
        for family in ["IPv4", "IPv6"] {
            let eps: Vec<&PodEndpoint> = g
                .endpoints
                .iter()
                .filter(|e| address_type(&e.ip) == family)
                .collect();
            for chunk in eps.chunks(MAX_ENDPOINTS_PER_SLICE) {
                out.push(Desired {
                    address_type: family,
                    ports: ports.clone(),
                    endpoints: chunk.iter().map(|e| endpoint_json(e)).collect(),
                });
            }
        }
    }
    if out.is_empty() {
        out.push(Desired {
            address_type: "IPv4",
            ports: Vec::new(),
            endpoints: Vec::new(),
        });
    }
    out
}

fn matches(slice: &Value, d: &Desired) -> bool {
    slice["addressType"] == d.address_type
        && slice["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]) == d.ports.as_slice()
        && slice["endpoints"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            == d.endpoints.as_slice()
}

fn same_ports(slice: &Value, d: &Desired) -> bool {
    slice["addressType"] == d.address_type
        && slice["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]) == d.ports.as_slice()
}

/// Brings the slices of Service `key` in line with `groups`; `svc` None (deleted, or no
/// longer selecting) removes ours.
pub async fn sync(
    informers: &Informers,
    slices: &Informer,
    key: &ObjectKey,
    svc: Option<&Value>,
    groups: &[EndpointGroup],
) -> Result<(), ApiError> {
    let res = builtin("discovery.k8s.io", "v1", "endpointslices");
    let registry = informers.registry();
    let mut mine: Vec<Arc<Value>> = slices
        .list(&key.namespace, &Default::default())
        .into_iter()
        .filter(|s| {
            s["metadata"]["labels"][SERVICE_NAME_LABEL].as_str() == Some(key.name.as_str())
                && s["metadata"]["labels"][MANAGED_BY_LABEL].as_str() == Some(MANAGED_BY)
        })
        .collect();
    mine.sort_by_key(|s| meta::name(s).to_string());
    let want = match svc {
        Some(_) => desired(groups),
        None => Vec::new(),
    };
    let mut labels = svc.map(derived_labels).unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), json!(key.name));
    labels.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY));
    let labels = Value::Object(labels);
    // Pair each desired slice with an existing one: identical first, then same ports,
    // then any; the rest are created, the unpaired old ones deleted.
    let mut pairs: Vec<Option<Arc<Value>>> = vec![None; want.len()];
    for pass in 0..3 {
        for (i, d) in want.iter().enumerate() {
            if pairs[i].is_some() {
                continue;
            }
            let pos = mine.iter().position(|s| match pass {
                0 => matches(s, d),
                1 => same_ports(s, d),
                _ => true,
            });
            if let Some(pos) = pos {
                pairs[i] = Some(mine.remove(pos));
            }
        }
    }
    for (d, existing) in want.iter().zip(pairs) {
        match existing {
            Some(s) if matches(&s, d) && s["metadata"]["labels"] == labels => {}
            Some(s) => {
                registry
                    .update_with(res, &key.namespace, meta::name(&s), |obj| {
                        meta::metadata_mut(obj).insert("labels".into(), labels.clone());
                        obj["addressType"] = json!(d.address_type);
                        obj["ports"] = json!(d.ports);
                        obj["endpoints"] = json!(d.endpoints);
                        Ok(())
                    })
                    .await?;
            }
            None => {
                let Some(svc) = svc else { continue };
                let obj = json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {
                        "generateName": format!("{}-", key.name),
                        "namespace": key.namespace,
                        "labels": labels,
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                            "name": key.name, "uid": meta::uid(svc),
                            "controller": true, "blockOwnerDeletion": true}],
                    },
                    "addressType": d.address_type,
                    "ports": d.ports,
                    "endpoints": d.endpoints,
                });
                let opts = WriteOptions {
                    field_manager: "endpointslice-controller".into(),
                    ..Default::default()
                };
                let created = registry.create(res, &key.namespace, obj, &opts).await?;
                // Wait (briefly) for the cache to see it, so a pass right after this one
                // does not create it a second time.
                for _ in 0..200 {
                    if slices.get(&key.namespace, meta::name(&created)).is_some() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }
    }
    for s in mine {
        match registry
            .delete(res, &key.namespace, meta::name(&s), &Default::default())
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
