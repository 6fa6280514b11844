//! `metrics.k8s.io/v1beta1` as metrics-server serves it: NodeMetrics and PodMetrics (get
//! and list, label selectors, all namespaces or one), with usage quantities in
//! metrics-server's units (CPU in nanocores `n`, memory in `Ki`), `timestamp` and
//! `window`; plus the discovery entries that make `kubectl top` find the API.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::Usage;
use crate::api::resources;
use crate::api::selector::LabelSelector;
use crate::api::status::ApiError;
use crate::server::http::body::{error_response, json_response, Resp};
use crate::server::http::request::{Query, RequestInfo};
use crate::server::http::AppState;
use crate::server::registry::ListOptions;

/// The API group.
pub const GROUP: &str = "metrics.k8s.io";
/// Its only version.
pub const VERSION: &str = "v1beta1";

/// Whether `info` addresses this API.
pub fn is_metrics_request(info: &RequestInfo) -> bool {
    info.group == GROUP
}

/// `/apis/metrics.k8s.io` (APIGroup).
pub fn group_doc() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [gv], "preferredVersion": gv})
}

/// The group entry of the legacy `/apis` APIGroupList.
pub fn group_list_entry() -> Value {
    let mut g = group_doc();
    if let Some(o) = g.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    g
}

/// `/apis/metrics.k8s.io/v1beta1` (APIResourceList).
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ]
    })
}

/// The group's entry in aggregated (apidiscovery.k8s.io/v2) `/apis`.
pub fn aggregated_entry() -> Value {
    let res = |plural: &str, kind: &str, scope: &str| json!({"resource": plural, "responseKind": {"group": "", "version": "", "kind": kind}, "scope": scope, "singularResource": "", "verbs": ["get", "list"]});
    json!({
        "metadata": {"name": GROUP},
        "versions": [{"version": VERSION, "freshness": "Current", "resources": [
            res("nodes", "NodeMetrics", "Cluster"),
            res("pods", "PodMetrics", "Namespaced"),
        ]}],
    })
}

/// metrics-server's CPU quantity: nanocores.
fn cpu_quantity(n: u64) -> String {
    format!("{n}n")
}

/// metrics-server's memory quantity: binary SI, `Ki` when exact.
fn memory_quantity(b: u64) -> String {
    if b > 0 && b.is_multiple_of(1024) {
        format!("{}Ki", b / 1024)
    } else {
        b.to_string()
    }
}

fn window(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs_f64().round() as u64)
}

fn usage_doc(u: &Usage) -> Value {
    json!({"cpu": cpu_quantity(u.nano_cores), "memory": memory_quantity(u.memory_bytes)})
}

fn metadata(obj: &Value, name: &str, ns: Option<&str>) -> Value {
    let mut m = json!({
        "name": name,
        "creationTimestamp": jiff::Timestamp::now().to_string(),
    });
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    if let Some(l) = obj["metadata"]["labels"].as_object() {
        m["labels"] = Value::Object(l.clone());
    }
    m
}

/// Serves a `metrics.k8s.io` request (already authorized).
pub async fn handle(state: &Arc<AppState>, info: &RequestInfo, query: &Query) -> Resp {
    match serve(state, info, query).await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error_response(&e),
    }
}

async fn serve(
    state: &Arc<AppState>,
    info: &RequestInfo,
    query: &Query,
) -> Result<Value, ApiError> {
    if info.version != VERSION || !info.subresource.is_empty() {
        return Err(ApiError::no_route());
    }
    if !matches!(info.verb, "get" | "list") {
        return Err(ApiError::method_not_allowed(info.verb, &info.resource));
    }
    let selector = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
    match info.resource.as_str() {
        "nodes" => nodes(state, info, &selector).await,
        "pods" => pods(state, info, &selector).await,
        _ => Err(ApiError::no_route()),
    }
}

/// The stored objects of `plural` in `ns` that match `selector`, by (namespace, name).
async fn objects(
    state: &Arc<AppState>,
    plural: &str,
    ns: &str,
    selector: &LabelSelector,
) -> Result<Vec<Value>, ApiError> {
    let res = resources::find("", "v1", plural).ok_or_else(ApiError::no_route)?;
    let opts = ListOptions {
        labels: selector.clone(),
        ..Default::default()
    };
    let list = state.registry.list(res, ns, &opts).await?;
    Ok(list.items.iter().filter_map(|o| o.value().ok()).collect())
}

fn labels_of(v: &Value) -> Option<&Map<String, Value>> {
    v["metadata"]["labels"].as_object()
}

async fn nodes(
    state: &Arc<AppState>,
    info: &RequestInfo,
    selector: &LabelSelector,
) -> Result<Value, ApiError> {
    let metrics = &state.resource_metrics;
    let doc = |node: &Value, name: &str, u: &Usage| {
        json!({
            "kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": metadata(node, name, None),
            "timestamp": u.timestamp.to_string(), "window": window(u.window),
            "usage": usage_doc(u),
        })
    };
    let all = objects(state, "nodes", "", selector).await?;
    if !info.name.is_empty() {
        let node = all
            .iter()
            .find(|n| n["metadata"]["name"].as_str() == Some(info.name.as_str()));
        return match (node, metrics.node(&info.name)) {
            (Some(n), Some(u)) => Ok(doc(n, &info.name, &u)),
            _ => Err(ApiError::not_found(GROUP, "nodes", &info.name)),
        };
    }
    let items: Vec<Value> = all
        .iter()
        .filter(|n| selector.matches(labels_of(n)))
        .filter_map(|n| {
            let name = n["metadata"]["name"].as_str()?;
            metrics.node(name).map(|u| doc(n, name, &u))
        })
        .collect();
    Ok(
        json!({"kind": "NodeMetricsList", "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items}),
    )
}

async fn pods(
    state: &Arc<AppState>,
    info: &RequestInfo,
    selector: &LabelSelector,
) -> Result<Value, ApiError> {
    let stored = objects(state, "pods", &info.namespace, selector).await?;
    let find = |ns: &str, name: &str| {
        stored.iter().find(|p| {
            p["metadata"]["namespace"].as_str() == Some(ns)
                && p["metadata"]["name"].as_str() == Some(name)
        })
    };
    let items: Vec<Value> = state
        .resource_metrics
        .pods()
        .into_iter()
        .filter(|u| info.namespace.is_empty() || u.namespace == info.namespace)
        .filter(|u| info.name.is_empty() || u.name == info.name)
        .filter_map(|u| {
            let pod = find(&u.namespace, &u.name)?;
            let first = u.containers.first()?.1;
            let containers: Vec<Value> = u
                .containers
                .iter()
                .map(|(n, c)| json!({"name": n, "usage": usage_doc(c)}))
                .collect();
            Some(json!({
                "kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
                "metadata": metadata(pod, &u.name, Some(&u.namespace)),
                "timestamp": first.timestamp.to_string(), "window": window(first.window),
                "containers": containers,
            }))
        })
        .collect();
    if !info.name.is_empty() {
        return items
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found(GROUP, "pods", &info.name));
    }
    Ok(
        json!({"kind": "PodMetricsList", "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items}),
    )
}
