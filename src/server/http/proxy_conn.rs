//! The proxy's connections to kubelets: dial over TLS and speak HTTP/1.1, stream a log
//! body back as it arrives, and splice an upgraded client connection to an upgraded kubelet
//! connection. Bytes only: nothing here knows WebSocket or SPDY.

use super::super::body::{Resp, ResponseBody};
use super::super::AppState;
use super::{KubeletClient, KubeletTarget};
use crate::api::status::ApiError;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long connecting (TCP and TLS) to a kubelet may take (upstream's dial timeout).
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of a kubelet error body turned into a message (upstream's `maxReadLength`).
const MAX_ERROR_BODY: usize = 50_000;
/// Headers of the client's upgrade request not passed on to the kubelet: credentials meant
/// for the API server, and framing headers of the client's own connection.
const NOT_FORWARDED: [&str; 7] = [
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-length",
    "transfer-encoding",
    "keep-alive",
];

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// Opens an HTTP/1.1 connection over TLS to the kubelet (upgrades enabled).
pub(super) async fn connect(
    client: &KubeletClient,
    target: &KubeletTarget,
    insecure: bool,
) -> Result<Sender, String> {
    let cfg = if insecure {
        client.insecure.clone()
    } else {
        client.verified.clone()
    };
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| format!("invalid kubelet address {:?}: {e}", target.host))?;
    let dial = async {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("dial tcp {}: {e}", target.authority()))?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))
    };
    let stream = tokio::time::timeout(DIAL_TIMEOUT, dial)
        .await
        .map_err(|_| format!("dial tcp {}: i/o timeout", target.authority()))??;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", target.authority()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended with an error");
        }
    });
    Ok(sender)
}

fn kubelet_request(
    method: Method,
    target: &KubeletTarget,
    uri: &str,
) -> Result<http::request::Builder, ApiError> {
    let host = HeaderValue::from_str(&target.authority())
        .map_err(|_| ApiError::internal(format!("invalid kubelet address {:?}", target.host)))?;
    Ok(Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, host))
}

/// GETs the log from the kubelet and streams its body back as it arrives.
pub(super) async fn stream_log(
    state: &Arc<AppState>,
    target: &KubeletTarget,
    pod: &str,
    path: &str,
    query: &str,
    insecure: bool,
) -> Result<Resp, ApiError> {
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    // Upstream's message for a failed backend request names the URL, like Go's client.
    let failed = |e: String| {
        let mut err = ApiError::internal("");
        err.reason = "";
        err.message = format!("Get \"https://{}{uri}\": {e}", target.authority());
        err
    };
    let mut sender = connect(&state.kubelet_client, target, insecure)
        .await
        .map_err(failed)?;
    let req = kubelet_request(Method::GET, target, &uri)?
        .body(Empty::new())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = resp.status();
    if !(200..=206).contains(&status.as_u16()) {
        let body = read_limited(resp.into_body(), MAX_ERROR_BODY).await;
        return Err(kubelet_error(status, &String::from_utf8_lossy(&body), pod));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let mut body = resp.into_body();
    let shutdown = shutting_down(state);
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        // Keep the connection's sender alive while the body streams.
        let _sender = sender;
        loop {
            tokio::select! {
                frame = body.frame() => match frame {
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            if tx.send(data).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "log stream from the kubelet broke");
                        break;
                    }
                    None => break,
                },
                // The client went away: stop reading from the kubelet.
                _ = tx.closed() => break,
                _ = &mut shutdown => break,
            }
        }
    });
    let mut r = Response::new(ResponseBody::Stream(rx));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}

/// A kubelet's error reply as a Status, the way upstream's `GenericHttpResponseChecker`
/// turns it into one: 400 and 500 carry the kubelet's text; other codes get the generic
/// message for the code, naming `pods/log <pod>`.
pub(super) fn kubelet_error(status: StatusCode, body: &str, pod: &str) -> ApiError {
    let code = status.as_u16();
    let (reason, message) = match code {
        400 => return ApiError::bad_request(body),
        500 => return ApiError::internal(body),
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials".to_string(),
        ),
        403 => (
            "Forbidden",
            "the server does not allow access to the requested resource".to_string(),
        ),
        404 => (
            "NotFound",
            "the server could not find the requested resource".to_string(),
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request".to_string(),
        ),
        c if c >= 500 => (
            "InternalError",
            format!("an error on the server ({body:?}) has prevented the request from succeeding"),
        ),
        c => (
            "",
            format!(
                "the server responded with the status code {c} but did not return more information"
            ),
        ),
    };
    let mut e = ApiError::bad_request("");
    e.code = code;
    e.reason = reason;
    // Upstream formats `(<verb> <resource> <name>)` with an empty verb, hence the space.
    e.message = format!("{message} ( pods/log {pod})");
    e.details = Some(json!({"name": pod, "kind": "pods/log"}));
    e
}

async fn read_limited(mut body: Incoming, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d[..d.len().min(limit - out.len())]);
                }
            }
            _ => break,
        }
    }
    out
}

/// Sends the client's upgrade request to the kubelet. On 101, answers the client 101 with
/// the kubelet's headers and splices the two upgraded connections until one side closes;
/// otherwise passes the kubelet's status and body back (kubectl falls back from WebSocket
/// to SPDY on that).
pub(super) async fn forward_upgrade(
    state: &Arc<AppState>,
    target: &KubeletTarget,
    mut parts: http::request::Parts,
    uri: &str,
) -> Result<Resp, ApiError> {
    let dial_failed = |e: String| ApiError::internal(format!("error dialing backend: {e}"));
    let mut sender = connect(&state.kubelet_client, target, false)
        .await
        .map_err(dial_failed)?;
    let mut builder = kubelet_request(parts.method.clone(), target, uri)?;
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if NOT_FORWARDED.contains(&n) || n.starts_with("impersonate-") {
            continue;
        }
        builder = builder.header(name, value);
    }
    let req = builder
        .body(Empty::new())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| dial_failed(e.to_string()))?;

    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = read_limited(resp.into_body(), MAX_ERROR_BODY).await;
        let mut out = Response::new(ResponseBody::Full(Full::new(Bytes::from(body))));
        *out.status_mut() = status;
        if let Some(ct) = headers.get(header::CONTENT_TYPE) {
            out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        return Ok(out);
    }

    let Some(client_side) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        // Only HTTP/1.1 connections can switch protocols.
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let kubelet_side = hyper::upgrade::on(&mut resp);
    let mut out = Response::new(ResponseBody::Full(Full::new(Bytes::new())));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    let shutdown = shutting_down(state);
    tokio::spawn(async move {
        let (client, kubelet) = match tokio::join!(client_side, kubelet_side) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "upgrade to the kubelet stream failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut kubelet = TokioIo::new(kubelet);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut kubelet) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "kubelet stream ended with an error");
                }
            }
            _ = shutdown => {}
        }
    });
    Ok(out)
}

/// Resolves when the server starts shutting down (never, if nobody can tell it to).
fn shutting_down(state: &AppState) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = state.shutdown.clone();
    async move {
        if rx.wait_for(|down| *down).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// GETs `path` from the kubelet of `node` (a Node object) and returns the body of a 200,
/// at most `limit` bytes; used by the metrics poller (`/stats/summary`).
pub async fn get_from_kubelet(
    client: &KubeletClient,
    node: &serde_json::Value,
    path: &str,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let target = super::kubelet_target(node).map_err(|e| e.message)?;
    let mut sender = connect(client, &target, false).await?;
    let req = kubelet_request(Method::GET, &target, path)
        .map_err(|e| e.message)?
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET https://{}{path}: {e}", target.authority()))?;
    let status = resp.status();
    let body = read_limited(resp.into_body(), limit).await;
    if status != StatusCode::OK {
        return Err(format!(
            "GET https://{}{path}: {status}: {}",
            target.authority(),
            String::from_utf8_lossy(&body).trim()
        ));
    }
    Ok(body)
}
