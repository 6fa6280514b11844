//! The metrics paths of the kubelet endpoint: `GET /stats/summary` (JSON) and
//! `GET /metrics/resource` and `GET /metrics/cadvisor` (Prometheus text), each from a
//! fresh [`super::collect`], and `GET /metrics/node` (node_exporter's names, [`super::node`]).
//! All answer 404 when the agent runs with `--disable-metrics`.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::agent::kubelet::server::Body;
use crate::agent::kubelet::KubeletError;
use crate::agent::runtime::Runtime;

use super::{exposition, summary};

/// Serves `/<first>/<second>`; 404 for metrics paths this agent does not have.
pub async fn serve(
    runtime: &Runtime,
    first: &str,
    second: &str,
) -> Result<Response<Body>, KubeletError> {
    let content_type = match (first, second) {
        _ if super::disabled() => return Err(KubeletError::not_found("404 page not found")),
        ("stats", "summary") => "application/json",
        ("metrics", "resource" | "cadvisor" | "node") => exposition::CONTENT_TYPE,
        _ => return Err(KubeletError::not_found("404 page not found")),
    };
    if second == "node" {
        let body = tokio::task::spawn_blocking(super::node::text)
            .await
            .map_err(|e| KubeletError::Request {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("failed to read node metrics: {e}"),
            })?;
        return Ok(response(content_type, body.into_bytes()));
    }
    let snap = super::collect(runtime)
        .await
        .map_err(|e| KubeletError::Request {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("failed to get node stats: {e}"),
        })?;
    let body = if first == "stats" {
        serde_json::to_vec(&summary::summary(&snap, &super::node_name())).unwrap_or_default()
    } else if second == "cadvisor" {
        super::cadvisor::text(&snap).into_bytes()
    } else {
        summary::resource_text(&snap).into_bytes()
    };
    Ok(response(content_type, body))
}

fn response(content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(Bytes::from(body))));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
