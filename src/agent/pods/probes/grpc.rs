//! The grpc probe: one `grpc.health.v1.Health/Check` call over h2c (HTTP/2 without
//! TLS, as upstream's probe dials insecure) to the pod's IP and the probe's port.
//! SERVING is success; anything else fails with upstream's wording. The two tiny
//! messages are encoded by hand (field 1 of each: `service` string, `status` enum).

use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::net::{self, PodNet};
use super::Outcome;

const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// Calls the health service `service` ("" for the server as a whole) on `port`.
pub async fn probe_grpc(net: &PodNet, port: u16, service: &str, timeout: Duration) -> Outcome {
    let addr = std::net::SocketAddr::new(net.default_host(), port);
    let stream = match net::connect(net.netns.as_deref(), addr, timeout).await {
        Ok(s) => s,
        Err(e) if e.ends_with("i/o timeout") => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {:?} within {}: context deadline exceeded",
                addr.to_string(),
                go_duration(timeout)
            ))
        }
        Err(e) => {
            return Outcome::Failure(format!(
                "error: failed to connect service at {:?}: {e}",
                addr.to_string()
            ))
        }
    };
    match tokio::time::timeout(timeout, check(stream, &addr.to_string(), service)).await {
        Err(_) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {}",
            go_duration(timeout)
        )),
        Ok(Err(e)) => Outcome::Failure(e),
        Ok(Ok(1)) => Outcome::Success,
        Ok(Ok(status)) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            status_name(status)
        )),
    }
}

/// Go's rendering of whole-second durations ("1s", "2m0s").
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// Performs the call; the serving status number, or the failure message.
async fn check(
    stream: tokio::net::TcpStream,
    authority: &str,
    service: &str,
) -> Result<u64, String> {
    let rpc_error = |e: String| format!("error: health rpc probe failed: {e}");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| rpc_error(e.to_string()))?;
    let req = Request::post(format!("http://{authority}{CHECK_PATH}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, super::http::USER_AGENT)
        .body(Full::new(frame(&encode_request(service))))
        .map_err(|e| rpc_error(e.to_string()))?;
    let call = async {
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| rpc_error(e.to_string()))?;
        let (head, body) = response.into_parts();
        let collected = body.collect().await.map_err(|e| rpc_error(e.to_string()))?;
        let trailers = collected.trailers().cloned();
        let bytes = collected.to_bytes();
        // A trailers-only answer carries grpc-status in the headers.
        let field = |name: &str| {
            trailers
                .as_ref()
                .and_then(|t| t.get(name))
                .or_else(|| head.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let code = field("grpc-status").unwrap_or_else(|| "2".into());
        if code != "0" {
            let message = field("grpc-message").unwrap_or_default();
            if code == "12" {
                return Err(format!("error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"));
            }
            return Err(rpc_error(format!(
                "rpc error: code = {} desc = {message}",
                code_name(&code)
            )));
        }
        decode_response(&bytes).ok_or_else(|| rpc_error("malformed HealthCheckResponse".into()))
    };
    tokio::pin!(conn);
    tokio::select! {
        r = call => r,
        r = &mut conn => Err(rpc_error(match r {
            Ok(()) => "connection closed".into(),
            Err(e) => e.to_string(),
        })),
    }
}

fn code_name(code: &str) -> &str {
    match code {
        "1" => "Canceled",
        "2" => "Unknown",
        "4" => "DeadlineExceeded",
        "5" => "NotFound",
        "7" => "PermissionDenied",
        "13" => "Internal",
        "14" => "Unavailable",
        other => other,
    }
}

/// HealthCheckRequest { string service = 1; }
fn encode_request(service: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if !service.is_empty() {
        out.push(0x0a);
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// A gRPC length-prefixed message (uncompressed).
fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The `status` (field 1) of a framed HealthCheckResponse; unknown fields skipped,
/// an absent status is UNKNOWN (0) as in proto3.
fn decode_response(framed: &[u8]) -> Option<u64> {
    let mut buf = framed;
    if buf.remaining() < 5 || buf.get_u8() != 0 {
        return None;
    }
    let len = buf.get_u32() as usize;
    let mut msg = buf.get(..len)?;
    let mut status = 0;
    while msg.has_remaining() {
        let key = get_varint(&mut msg)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut msg)?,
            (_, 0) => {
                get_varint(&mut msg)?;
            }
            (_, 2) => {
                let n = get_varint(&mut msg)? as usize;
                msg = msg.get(n..)?;
            }
            (_, 1) => msg = msg.get(8..)?,
            (_, 5) => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// An h2c health server answering `status` for every service but "missing".
    async fn health_server(status: u8) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: Request<hyper::body::Incoming>| async move {
                            let path = req.uri().path().to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let wants_missing = body.windows(7).any(|w| w == b"missing");
                            let (code, message, out) = if path != CHECK_PATH {
                                ("12", "unknown method", Bytes::new())
                            } else if wants_missing {
                                ("5", "unknown service", Bytes::new())
                            } else {
                                ("0", "", frame(&[0x08, status]))
                            };
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static(code));
                            trailers
                                .insert("grpc-message", http::HeaderValue::from_static(message));
                            let body =
                                http_body_util::StreamBody::new(futures_util::stream::iter(vec![
                                    Ok::<_, Infallible>(hyper::body::Frame::data(out)),
                                    Ok(hyper::body::Frame::trailers(trailers)),
                                ]));
                            let resp = http::Response::builder()
                                .header("content-type", "application/grpc");
                            Ok::<_, Infallible>(resp.body(body).expect("response"))
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn serving_not_serving_and_errors() {
        let net = PodNet::default();
        let t = Duration::from_secs(2);
        let serving = health_server(1).await;
        assert_eq!(probe_grpc(&net, serving, "", t).await, Outcome::Success);
        let sick = health_server(2).await;
        assert_eq!(
            probe_grpc(&net, sick, "db", t).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        match probe_grpc(&net, serving, "missing", t).await {
            Outcome::Failure(m) => assert_eq!(
                m,
                "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_encode_and_decode() {
        assert_eq!(encode_request(""), Vec::<u8>::new());
        assert_eq!(encode_request("db"), vec![0x0a, 2, b'd', b'b']);
        assert_eq!(decode_response(&frame(&[0x08, 1])), Some(1));
        // An unknown string field before the status is skipped.
        assert_eq!(decode_response(&frame(&[0x12, 1, b'x', 0x08, 2])), Some(2));
        assert_eq!(decode_response(&frame(&[])), Some(0));
        assert_eq!(decode_response(&[0, 0, 0]), None);
    }
}
