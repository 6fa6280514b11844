//! RFC 6455 WebSocket, as much as the kubelet endpoint needs: the server handshake
//! (accept key, subprotocol choice), reading messages from a client (unmasking,
//! reassembling fragmented messages, control frames between fragments) and encoding
//! frames (unmasked from the server; masked for the tests' client).
//!
//! kubectl speaks it through gorilla/websocket for exec and attach (`v5.channel.k8s.io`)
//! and to tunnel SPDY for port-forward (`SPDY/3.1+portforward.k8s.io`).

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The GUID every server appends to the client's key (RFC 6455 §1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest message accepted from a client; kubectl sends at most 32 KiB per message.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Frame opcodes.
pub const OP_CONTINUATION: u8 = 0x0;
/// A UTF-8 text message (the base64 channel protocols).
pub const OP_TEXT: u8 = 0x1;
/// A binary message (everything kubectl sends).
pub const OP_BINARY: u8 = 0x2;
/// Close, with an optional code and reason.
pub const OP_CLOSE: u8 = 0x8;
/// Ping; answered with a pong carrying the same payload.
pub const OP_PING: u8 = 0x9;
/// Pong.
pub const OP_PONG: u8 = 0xA;

/// Normal closure.
pub const CLOSE_NORMAL: u16 = 1000;

/// What went wrong on a WebSocket connection.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("websocket connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    #[error("websocket message of {0} bytes exceeds the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
}

/// One message (a whole data message, or one control frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// Close code (1005 "no status" when the frame had none) and reason.
    Close(u16, String),
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &str) -> String {
    let mut input = client_key.trim().as_bytes().to_vec();
    input.extend_from_slice(ACCEPT_GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Whether a request asks for a WebSocket upgrade.
pub fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
}

/// The first subprotocol the client offers (in its order of preference) that
/// `supported` contains.
pub fn choose_protocol(headers: &http::HeaderMap, supported: &[&str]) -> Option<String> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| supported.contains(p))
        .map(str::to_string)
}

/// Encodes one frame. `mask` is `None` for server frames (servers never mask).
pub fn encode_frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame's payload: code and reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// Reads messages from one side of a connection.
pub struct Reader<R> {
    inner: R,
    /// Servers require masked frames from clients; the tests' client reads unmasked
    /// server frames with `false`.
    expect_masked: bool,
    /// A fragmented data message being reassembled (opcode, bytes so far): kept
    /// across calls, since control frames may arrive between its fragments.
    partial: Option<(u8, Vec<u8>)>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader of client frames (`expect_masked`) or of server frames.
    pub fn new(inner: R, expect_masked: bool) -> Reader<R> {
        Reader {
            inner,
            expect_masked,
            partial: None,
        }
    }

    /// The next message; `None` at a clean end of the connection between frames.
    /// Control frames arriving between the fragments of a data message are returned
    /// first; the fragments read so far are kept.
    pub async fn next(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let Some((fin, opcode, payload)) = self.frame().await? else {
                return match self.partial {
                    None => Ok(None),
                    Some(_) => Err(WsError::Protocol("connection ended inside a message")),
                };
            };
            let partial = &mut self.partial;
            match opcode {
                OP_PING => return Ok(Some(Message::Ping(payload))),
                OP_PONG => return Ok(Some(Message::Pong(payload))),
                OP_CLOSE => {
                    let (code, reason) = match payload.len() {
                        0 => (1005, String::new()),
                        1 => return Err(WsError::Protocol("close frame with a 1-byte payload")),
                        _ => (
                            u16::from_be_bytes([payload[0], payload[1]]),
                            String::from_utf8_lossy(&payload[2..]).into_owned(),
                        ),
                    };
                    return Ok(Some(Message::Close(code, reason)));
                }
                OP_TEXT | OP_BINARY => {
                    if partial.is_some() {
                        return Err(WsError::Protocol("new message inside a fragmented one"));
                    }
                    if fin {
                        return Ok(Some(data_message(opcode, payload)));
                    }
                    *partial = Some((opcode, payload));
                }
                OP_CONTINUATION => {
                    let Some((op, mut data)) = partial.take() else {
                        return Err(WsError::Protocol("continuation frame without a message"));
                    };
                    data.extend_from_slice(&payload);
                    if data.len() > MAX_MESSAGE {
                        return Err(WsError::TooLarge(data.len()));
                    }
                    if fin {
                        return Ok(Some(data_message(op, data)));
                    }
                    *partial = Some((op, data));
                }
                _ => return Err(WsError::Protocol("unknown opcode")),
            }
        }
    }

    /// One frame: (fin, opcode, unmasked payload); `None` on EOF before a frame.
    async fn frame(&mut self) -> Result<Option<(bool, u8, Vec<u8>)>, WsError> {
        let mut head = [0u8; 2];
        match self.inner.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.inner.read_exact(&mut head[1..]).await?;
        let fin = head[0] & 0x80 != 0;
        if head[0] & 0x70 != 0 {
            return Err(WsError::Protocol(
                "reserved bits set (no extension was negotiated)",
            ));
        }
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        if masked != self.expect_masked {
            return Err(WsError::Protocol(if self.expect_masked {
                "client frame is not masked"
            } else {
                "server frame is masked"
            }));
        }
        let len = match head[1] & 0x7f {
            126 => self.inner.read_u16().await? as u64,
            127 => self.inner.read_u64().await?,
            n => n as u64,
        };
        if opcode >= 0x8 && (len > 125 || !fin) {
            return Err(WsError::Protocol("control frame too long or fragmented"));
        }
        if len > MAX_MESSAGE as u64 {
            return Err(WsError::TooLarge(len as usize));
        }
        let mut key = [0u8; 4];
        if masked {
            self.inner.read_exact(&mut key).await?;
        }
        let mut payload = vec![0u8; len as usize];
        self.inner.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        Ok(Some((fin, opcode, payload)))
    }
}

fn data_message(opcode: u8, payload: Vec<u8>) -> Message {
    if opcode == OP_TEXT {
        Message::Text(payload)
    } else {
        Message::Binary(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: Vec<u8>, masked: bool) -> Vec<Result<Message, String>> {
        let mut r = Reader::new(&bytes[..], masked);
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn masked_frames_of_every_length_round_trip() {
        for len in [0usize, 5, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = encode_frame(OP_BINARY, true, &payload, Some([1, 2, 3, 4]));
            if len > 0 {
                assert_ne!(
                    &frame[frame.len() - len..],
                    &payload[..],
                    "payload is masked"
                );
            }
            let got = read_all(frame, true).await;
            assert_eq!(got, vec![Ok(Message::Binary(payload))], "length {len}");
        }
    }

    #[tokio::test]
    async fn fragmented_message_with_a_ping_in_between() {
        let key = Some([9, 8, 7, 6]);
        let mut bytes = encode_frame(OP_BINARY, false, b"\x01hel", key);
        bytes.extend(encode_frame(OP_PING, true, b"p", key));
        bytes.extend(encode_frame(OP_CONTINUATION, false, b"lo ", key));
        bytes.extend(encode_frame(OP_CONTINUATION, true, b"world", key));
        bytes.extend(encode_frame(OP_TEXT, true, b"1aGk=", key));
        let got = read_all(bytes, true).await;
        assert_eq!(
            got,
            vec![
                Ok(Message::Ping(b"p".to_vec())),
                Ok(Message::Binary(b"\x01hello world".to_vec())),
                Ok(Message::Text(b"1aGk=".to_vec())),
            ]
        );
    }

    #[tokio::test]
    async fn close_frames_carry_code_and_reason() {
        let mut bytes = encode_frame(OP_CLOSE, true, &close_payload(1000, "bye"), Some([0; 4]));
        bytes.extend(encode_frame(OP_CLOSE, true, b"", Some([5; 4])));
        let got = read_all(bytes, true).await;
        assert_eq!(
            got,
            vec![
                Ok(Message::Close(1000, "bye".into())),
                Ok(Message::Close(1005, String::new()))
            ]
        );
    }

    #[tokio::test]
    async fn protocol_violations_are_errors() {
        // Unmasked client frame.
        let got = read_all(encode_frame(OP_BINARY, true, b"x", None), true).await;
        assert!(
            matches!(&got[0], Err(e) if e.contains("not masked")),
            "{got:?}"
        );
        // Continuation without a start.
        let got = read_all(
            encode_frame(OP_CONTINUATION, true, b"x", Some([1; 4])),
            true,
        )
        .await;
        assert!(
            matches!(&got[0], Err(e) if e.contains("continuation")),
            "{got:?}"
        );
        // Truncated inside a message.
        let got = read_all(encode_frame(OP_BINARY, false, b"x", Some([1; 4])), true).await;
        assert!(
            matches!(&got[0], Err(e) if e.contains("inside a message")),
            "{got:?}"
        );
        // Server frames read by a client.
        let got = read_all(encode_frame(OP_BINARY, true, b"ok", None), false).await;
        assert_eq!(got, vec![Ok(Message::Binary(b"ok".to_vec()))]);
    }

    #[test]
    fn subprotocol_follows_client_preference() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        h.append(
            http::header::UPGRADE,
            http::HeaderValue::from_static("WebSocket"),
        );
        assert!(is_upgrade(&h));
        assert_eq!(
            choose_protocol(&h, &["v4.channel.k8s.io", "v5.channel.k8s.io"]).as_deref(),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(choose_protocol(&h, &["base64.channel.k8s.io"]), None);
    }
}
