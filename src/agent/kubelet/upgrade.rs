//! The HTTP/1.1 upgrade handshake of exec, attach and port-forward: choosing
//! WebSocket (RFC 6455 accept key, subprotocol in the client's order of preference)
//! or SPDY/3.1 (`X-Stream-Protocol-Version`, upstream's 403 wording when no version
//! matches), and the 101 response. kubectl falls back from WebSocket to SPDY on any
//! non-101 answer.

use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::websocket as ws;
use super::KubeletError;

/// The header carrying SPDY protocol versions.
pub const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// The negotiated transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    WebSocket { protocol: String },
    Spdy { protocol: String },
}

/// Picks the transport from the upgrade request and builds the 101 response, or the
/// error response upstream gives (kubectl falls back to SPDY on any non-101).
pub fn negotiate(
    headers: &HeaderMap,
    ws_protocols: &[&str],
    spdy_protocols: &[&str],
) -> Result<(Transport, Response<()>), KubeletError> {
    if ws::is_upgrade(headers) {
        let key = headers
            .get(http::header::SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                KubeletError::bad_request("websocket upgrade without Sec-WebSocket-Key")
            })?;
        let protocol = ws::choose_protocol(headers, ws_protocols).ok_or_else(|| {
            KubeletError::bad_request(format!(
                "unable to upgrade: unable to negotiate protocol: server accepts {ws_protocols:?}"
            ))
        })?;
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "websocket")
            .header(http::header::SEC_WEBSOCKET_ACCEPT, ws::accept_key(key))
            .header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol.as_str())
            .body(())
            .map_err(|e| KubeletError::bad_request(e.to_string()))?;
        return Ok((Transport::WebSocket { protocol }, resp));
    }
    let spdy = headers
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.trim().eq_ignore_ascii_case("SPDY/3.1"));
    if !spdy {
        return Err(KubeletError::bad_request("Upgrade request required"));
    }
    let offered: Vec<&str> = headers
        .get_all(STREAM_PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let Some(protocol) = offered.iter().find(|p| spdy_protocols.contains(p)) else {
        return Err(KubeletError::Request {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {spdy_protocols:?}"
            ),
        });
    };
    let resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1")
        .header(
            STREAM_PROTOCOL_HEADER,
            HeaderValue::from_str(protocol)
                .map_err(|e| KubeletError::bad_request(e.to_string()))?,
        )
        .body(())
        .map_err(|e| KubeletError::bad_request(e.to_string()))?;
    Ok((
        Transport::Spdy {
            protocol: protocol.to_string(),
        },
        resp,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::kubelet::remote::{SPDY_PROTOCOLS, WS_PROTOCOLS};

    #[test]
    fn negotiation_picks_websocket_or_spdy() {
        let mut h = HeaderMap::new();
        h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            http::header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        let (t, resp) = negotiate(&h, WS_PROTOCOLS, SPDY_PROTOCOLS).expect("ws");
        assert_eq!(
            t,
            Transport::WebSocket {
                protocol: "v5.channel.k8s.io".into()
            }
        );
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            resp.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );

        let mut h = HeaderMap::new();
        h.insert(http::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        for p in [
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
        ] {
            h.append(STREAM_PROTOCOL_HEADER, HeaderValue::from_static(p));
        }
        let (t, resp) = negotiate(&h, WS_PROTOCOLS, SPDY_PROTOCOLS).expect("spdy");
        assert_eq!(
            t,
            Transport::Spdy {
                protocol: "v4.channel.k8s.io".into()
            }
        );
        assert_eq!(resp.headers()[STREAM_PROTOCOL_HEADER], "v4.channel.k8s.io");

        let mut h = HeaderMap::new();
        h.insert(http::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(
            STREAM_PROTOCOL_HEADER,
            HeaderValue::from_static("channel.k8s.io"),
        );
        let e = negotiate(&h, WS_PROTOCOLS, SPDY_PROTOCOLS).expect_err("no common protocol");
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let e = negotiate(&HeaderMap::new(), WS_PROTOCOLS, SPDY_PROTOCOLS).expect_err("no upgrade");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}
