//! The API server's proxy to node kubelets: `pods/log` (a streamed GET) and `pods/exec`,
//! `pods/attach`, `pods/portforward` (HTTP/1.1 upgrades to WebSocket or SPDY).
//!
//! Like upstream's pod registry, the server validates the request against the pod (container
//! chosen or defaulted, node assigned), finds the node's kubelet (address and port from the
//! Node object), and then only moves bytes: it connects over TLS with its
//! `client-kube-apiserver` certificate, verifies the kubelet's serving certificate against
//! the server CA, and streams the log body or splices the two upgraded connections. No
//! streaming protocol is parsed here; the kubelet and the client speak it end to end.

use super::auth::{self, Identity};
use super::body::{error_response, Resp, ResponseBody};
use super::request::{Query, RequestInfo};
use super::AppState;
use crate::api::resources;
use crate::api::status::{ApiError, FieldError};
use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use std::sync::Arc;

#[path = "proxy_conn.rs"]
mod conn;
#[path = "proxy_tls.rs"]
mod tls;
pub use conn::get_from_kubelet;
pub use tls::KubeletClient;

/// The kubelet port when a Node does not report one (upstream's default).
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// Node address types tried in order (k3s's `--kubelet-preferred-address-types`).
const PREFERRED_ADDRESS_TYPES: [&str; 3] = ["InternalIP", "ExternalIP", "Hostname"];

/// Whether the request is one this module serves.
pub(super) fn is_proxied(info: &RequestInfo) -> bool {
    info.group.is_empty()
        && info.resource == "pods"
        && !info.name.is_empty()
        && matches!(
            info.subresource.as_str(),
            "log" | "exec" | "attach" | "portforward"
        )
}

/// Serves a `pods/{log,exec,attach,portforward}` request (see [`is_proxied`]).
pub(super) async fn handle(
    state: &Arc<AppState>,
    who: &Identity,
    parts: http::request::Parts,
    info: &RequestInfo,
    query: &Query,
) -> Resp {
    match serve(state, who, parts, info, query).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn serve(
    state: &Arc<AppState>,
    who: &Identity,
    parts: http::request::Parts,
    info: &RequestInfo,
    query: &Query,
) -> Result<Resp, ApiError> {
    let sub = info.subresource.as_str();
    let allowed: &[&str] = if sub == "log" {
        &["get"]
    } else {
        &["get", "create"]
    };
    if info.namespace.is_empty() {
        return Err(ApiError::no_route());
    }
    if !allowed.contains(&info.verb) {
        return Err(ApiError::method_not_allowed(
            parts.method.as_str(),
            &format!("pods/{sub}"),
        ));
    }
    if sub != "log" && info.verb != "create" {
        // Upstream authorizes WebSocket (GET) upgrades as `create` too, so that read-only
        // users cannot exec.
        let as_create = RequestInfo {
            verb: "create",
            ..info.clone()
        };
        auth::authorize(&state.authz, who, &as_create)?;
    }
    let pods = resources::find("", "v1", "pods").ok_or_else(ApiError::no_route)?;
    let pod = state
        .registry
        .get(pods, &info.namespace, &info.name)
        .await?
        .value()?;
    let name = info.name.as_str();
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();

    let (path, params) = match sub {
        "log" => {
            let opts = LogOptions::parse(name, query)?;
            let container = pick_container(&pod, query.get("container").unwrap_or(""))?;
            if node.is_empty() {
                // Upstream streams nothing for a pod no node has taken yet.
                let mut r = Response::new(ResponseBody::Full(Full::new(Bytes::new())));
                *r.status_mut() = StatusCode::NO_CONTENT;
                return Ok(r);
            }
            let path = format!("/containerLogs/{}/{name}/{container}", info.namespace);
            let target = find_kubelet(state, &node).await?;
            let query = encode_query(&opts.params);
            return conn::stream_log(state, &target, name, &path, &query, opts.insecure).await;
        }
        "exec" | "attach" => {
            let container = pick_container(&pod, query.get("container").unwrap_or(""))?;
            require_node(name, &node)?;
            let path = format!("/{sub}/{}/{name}/{container}", info.namespace);
            (path, stream_params(sub, query)?)
        }
        _ => {
            require_node(name, &node)?;
            let path = format!("/portForward/{}/{name}", info.namespace);
            (path, stream_params(sub, query)?)
        }
    };
    if !is_upgrade(&parts.headers) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let target = find_kubelet(state, &node).await?;
    let uri = if params.is_empty() {
        path
    } else {
        format!("{path}?{params}")
    };
    conn::forward_upgrade(state, &target, parts, &uri).await
}

fn require_node(pod: &str, node: &str) -> Result<(), ApiError> {
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {pod} does not have a host assigned"
        )));
    }
    Ok(())
}

/// Every container name of a pod: init containers, containers, then ephemeral containers
/// (upstream's `VisitContainers` order).
fn container_names(pod: &Value) -> Vec<&str> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod["spec"][*k].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// The container a request addresses, with upstream's defaulting and messages: the named
/// container must exist; with no name, a pod with one container means that one. The server
/// does not read `kubectl.kubernetes.io/default-container`; kubectl applies it before asking.
pub(super) fn pick_container(pod: &Value, requested: &str) -> Result<String, ApiError> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    let names = container_names(pod);
    if !requested.is_empty() {
        if names.contains(&requested) {
            return Ok(requested.to_string());
        }
        return Err(ApiError::bad_request(format!(
            "container {requested} is not valid for pod {pod_name}"
        )));
    }
    let regular = pod["spec"]["containers"].as_array();
    match regular.map(Vec::len).unwrap_or(0) {
        1 => Ok(regular
            .and_then(|c| c[0]["name"].as_str())
            .unwrap_or("")
            .to_string()),
        0 => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}"
        ))),
        // Go prints a []string as `[a b c]`.
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

/// Where a node's kubelet listens: host (an address of the first preferred type) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KubeletTarget {
    /// IP address or host name; also the TLS server name checked against the certificate.
    pub host: String,
    /// The kubelet's port.
    pub port: u16,
}

impl KubeletTarget {
    /// `host:port`, with brackets around IPv6 addresses.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The kubelet of a Node object: status.addresses (InternalIP, then ExternalIP, then
/// Hostname) and status.daemonEndpoints.kubeletEndpoint.Port (10250 when unset).
pub(super) fn kubelet_target(node: &Value) -> Result<KubeletTarget, ApiError> {
    let addresses = node["status"]["addresses"].as_array();
    let all = || addresses.into_iter().flatten();
    let host = PREFERRED_ADDRESS_TYPES.iter().find_map(|want| {
        all()
            .filter(|a| a["type"].as_str() == Some(*want))
            .filter_map(|a| a["address"].as_str())
            .find(|a| !a.is_empty())
    });
    let Some(host) = host else {
        let known: Vec<String> = all()
            .map(|a| {
                let t = a["type"].as_str().unwrap_or("");
                let addr = a["address"].as_str().unwrap_or("");
                format!("{{{t} {addr}}}")
            })
            .collect();
        return Err(ApiError::internal(format!(
            "no preferred addresses found; known addresses: [{}]",
            known.join(" ")
        )));
    };
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(KubeletTarget {
        host: host.to_string(),
        port,
    })
}

async fn find_kubelet(state: &Arc<AppState>, node: &str) -> Result<KubeletTarget, ApiError> {
    let nodes = resources::find("", "v1", "nodes").ok_or_else(ApiError::no_route)?;
    let obj = state.registry.get(nodes, "", node).await?.value()?;
    kubelet_target(&obj)
}

/// `pods/log` query options, validated like upstream's `ValidatePodLogOptions`.
#[derive(Debug, Default)]
struct LogOptions {
    /// The kubelet query, in upstream's (sorted) order.
    params: Vec<(&'static str, String)>,
    follow: bool,
    insecure: bool,
}

impl LogOptions {
    fn parse(pod: &str, q: &Query) -> Result<LogOptions, ApiError> {
        let int = |key: &str| -> Result<Option<i64>, ApiError> {
            match q.get(key) {
                None | Some("") => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| {
                    ApiError::bad_request(format!("{key}: invalid value {v:?}: not an integer"))
                }),
            }
        };
        let (tail, limit, since) = (int("tailLines")?, int("limitBytes")?, int("sinceSeconds")?);
        let since_time = match q.get("sinceTime").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(v.parse::<jiff::Timestamp>().map_err(|_| {
                ApiError::bad_request(format!(
                    "sinceTime: invalid value {v:?}: not an RFC 3339 time"
                ))
            })?),
        };
        let mut errs = Vec::new();
        if let Some(t) = tail.filter(|t| *t < 0) {
            errs.push(FieldError::invalid(
                "tailLines",
                &json!(t),
                "must be greater than or equal to 0",
            ));
        }
        if let Some(l) = limit.filter(|l| *l < 1) {
            errs.push(FieldError::invalid(
                "limitBytes",
                &json!(l),
                "must be greater than 0",
            ));
        }
        match (since, since_time) {
            (Some(_), Some(_)) => errs.push(FieldError::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            )),
            (Some(s), None) if s < 1 => errs.push(FieldError::invalid(
                "sinceSeconds",
                &json!(s),
                "must be greater than 0",
            )),
            _ => {}
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid("", "PodLogOptions", pod, errs));
        }
        let mut o = LogOptions {
            follow: q.flag("follow"),
            insecure: q.flag("insecureSkipTLSVerifyBackend"),
            ..Default::default()
        };
        let p = &mut o.params;
        if o.follow {
            p.push(("follow", "true".into()));
        }
        if let Some(l) = limit {
            p.push(("limitBytes", l.to_string()));
        }
        if q.flag("previous") {
            p.push(("previous", "true".into()));
        }
        if let Some(s) = since {
            p.push(("sinceSeconds", s.to_string()));
        }
        if let Some(t) = since_time {
            // Upstream re-encodes the time as RFC 3339 with whole seconds.
            p.push(("sinceTime", t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
        }
        if let Some(s) = q.get("stream").filter(|s| !s.is_empty()) {
            p.push(("stream", s.to_string()));
        }
        if let Some(t) = tail {
            p.push(("tailLines", t.to_string()));
        }
        if q.flag("timestamps") {
            p.push(("timestamps", "true".into()));
        }
        Ok(o)
    }
}

/// The kubelet query of exec, attach and portforward, rebuilt like upstream's
/// `streamParams`: the kubelet reads the stream flags as exactly `1`, whatever spelling of
/// true the client used, and `container` travels in the path instead.
fn stream_params(sub: &str, q: &Query) -> Result<String, ApiError> {
    let mut p: Vec<(&str, String)> = Vec::new();
    if sub == "portforward" {
        let ports: Vec<&str> = q
            .all("ports")
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        for port in &ports {
            if port.parse::<u16>().map_or(true, |n| n == 0) {
                return Err(ApiError::bad_request(format!(
                    "ports: invalid port {port:?}"
                )));
            }
        }
        if !ports.is_empty() {
            p.push(("port", ports.join(",")));
        }
        return Ok(encode_query(&p));
    }
    let command = q.all("command");
    if sub == "exec" && command.iter().all(|c| c.is_empty()) {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    for c in command.iter().filter(|c| !c.is_empty()) {
        p.push(("command", c.to_string()));
    }
    for key in ["stderr", "stdin", "stdout", "tty"] {
        if q.flag(key) {
            p.push((key, "1".into()));
        }
    }
    Ok(encode_query(&p))
}

fn encode_query(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether the headers ask for a protocol upgrade (`Connection: Upgrade` + `Upgrade`).
fn is_upgrade(h: &HeaderMap) -> bool {
    let connection_upgrade = h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    connection_upgrade && h.contains_key(header::UPGRADE)
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
