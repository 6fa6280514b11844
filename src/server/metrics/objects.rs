//! Object-state metrics under kube-state-metrics' names, computed from the stored objects
//! at scrape time: pod phase, container restarts, Deployment available replicas, node
//! conditions. Also the server `/metrics` document that joins them with
//! [`super::apiserver`]'s request and process metrics.

use std::sync::Arc;

use http::{header, HeaderValue, StatusCode};
use serde_json::Value;

use crate::agent::metrics::exposition::{Kind, Writer, CONTENT_TYPE};
use crate::api::resources;
use crate::server::http::body::{bytes_response, error_response, Resp};
use crate::server::http::AppState;
use crate::server::registry::ListOptions;

const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

async fn list(state: &AppState, group: &str, version: &str, plural: &str) -> Vec<Value> {
    let Some(res) = resources::find(group, version, plural) else {
        return Vec::new();
    };
    match state.registry.list(res, "", &ListOptions::default()).await {
        Ok(l) => l.items.iter().filter_map(|o| o.value().ok()).collect(),
        Err(_) => Vec::new(),
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

type Sample<'a> = (Vec<(&'static str, &'a str)>, f64);

fn write(w: &mut Writer, (name, help, kind): (&str, &str, Kind), samples: Vec<Sample<'_>>) {
    w.family(name, help, kind);
    for (l, v) in samples {
        w.sample(name, &l, v, None);
    }
}

fn one_if(b: bool) -> f64 {
    f64::from(u8::from(b))
}

fn pod_ids(p: &Value) -> [&str; 3] {
    [
        s(p, "/metadata/namespace"),
        s(p, "/metadata/name"),
        s(p, "/metadata/uid"),
    ]
}

/// Writes the kube-state-metrics families of pods, Deployments and nodes.
fn write_objects(w: &mut Writer, pods: &[Value], deployments: &[Value], nodes: &[Value]) {
    let phases = pods.iter().flat_map(|p| {
        let [ns, name, uid] = pod_ids(p);
        let phase = s(p, "/status/phase");
        PHASES.map(|ph| {
            (
                vec![
                    ("namespace", ns),
                    ("phase", ph),
                    ("pod", name),
                    ("uid", uid),
                ],
                one_if(ph == phase),
            )
        })
    });
    write(
        w,
        (
            "kube_pod_status_phase",
            "The pods current phase.",
            Kind::Gauge,
        ),
        phases.collect(),
    );
    let restarts = pods.iter().flat_map(|p| {
        let [ns, name, uid] = pod_ids(p);
        p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(move |c| {
                let l = vec![
                    ("container", s(c, "/name")),
                    ("namespace", ns),
                    ("pod", name),
                    ("uid", uid),
                ];
                (l, c["restartCount"].as_f64().unwrap_or(0.0))
            })
    });
    write(
        w,
        (
            "kube_pod_container_status_restarts_total",
            "The number of container restarts per container.",
            Kind::Counter,
        ),
        restarts.collect(),
    );
    let available = deployments.iter().map(|d| {
        let l = vec![
            ("deployment", s(d, "/metadata/name")),
            ("namespace", s(d, "/metadata/namespace")),
        ];
        (l, d["status"]["availableReplicas"].as_f64().unwrap_or(0.0))
    });
    write(
        w,
        (
            "kube_deployment_status_replicas_available",
            "The number of available replicas per deployment.",
            Kind::Gauge,
        ),
        available.collect(),
    );
    let conditions = nodes.iter().flat_map(|n| {
        let name = s(n, "/metadata/name");
        n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(move |c| {
                let status = s(c, "/status").to_ascii_lowercase();
                ["true", "false", "unknown"].map(|want| {
                    (
                        vec![
                            ("condition", s(c, "/type")),
                            ("node", name),
                            ("status", want),
                        ],
                        one_if(status == want),
                    )
                })
            })
    });
    write(
        w,
        (
            "kube_node_status_condition",
            "The condition of a cluster node.",
            Kind::Gauge,
        ),
        conditions.collect(),
    );
}

/// The server's `/metrics` document (already authorized: RBAC `get` on the
/// nonResourceURL `/metrics`, as upstream's `system:monitoring` grants).
pub async fn serve(state: &Arc<AppState>, method: &http::Method) -> Resp {
    if method != http::Method::GET {
        return error_response(&crate::api::status::ApiError::method_not_allowed(
            "get", "metrics",
        ));
    }
    let mut w = Writer::new();
    super::apiserver::write_requests(&mut w);
    super::apiserver::write_process(&mut w);
    let pods = list(state, "", "v1", "pods").await;
    let deployments = list(state, "apps", "v1", "deployments").await;
    let nodes = list(state, "", "v1", "nodes").await;
    write_objects(&mut w, &pods, &deployments, &nodes);
    let mut r = bytes_response(StatusCode::OK, CONTENT_TYPE, w.finish().into_bytes());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}
