//! The remote command protocol of exec and attach, over either transport kubectl
//! uses, behind one interface ([`Io`]) the exec and attach sessions drive:
//!
//! - WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`):
//!   every message is one channel byte (0 stdin, 1 stdout, 2 stderr, 3 error,
//!   4 resize; v5 adds 255 = close `[255, id]`) then the payload; base64 variants use
//!   text messages with the channel as an ASCII digit. The session ends with the
//!   error channel's `metav1.Status` and a normal close.
//! - SPDY/3.1 (`v4.channel.k8s.io`): the client opens one stream per channel,
//!   named by its `streamType` header; the session ends with the status on the error
//!   stream and FIN on every stream we write.
//!
//! Resize messages are `{"Width":w,"Height":h}` (one per WebSocket message; a stream
//! of concatenated objects over SPDY). The upgrade handshake itself is in
//! [`super::upgrade`].

use std::time::Duration;

use base64::Engine;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::spdy::{self, Session, StreamWriter};
pub use super::upgrade::{negotiate, Transport, STREAM_PROTOCOL_HEADER};
use super::websocket::{self as ws, Message};
use super::KubeletError;
use crate::server::http::request::Query;

/// WebSocket subprotocols for exec/attach, in our order of preference.
pub const WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
];
/// The SPDY stream protocol version we speak (kubectl offers v5..v1; upstream
/// kubelets pick v4 over SPDY).
pub const SPDY_PROTOCOLS: &[&str] = &["v4.channel.k8s.io"];
/// How long the client has to open its SPDY streams (upstream's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Which streams the client wants (query `stdin`, `stdout`, `stderr`, `tty`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    /// Parses and validates like upstream's `remotecommand.NewOptions`.
    pub fn parse(query: &Query) -> Result<Options, KubeletError> {
        let tty = query.flag("tty");
        let o = Options {
            stdin: query.flag("stdin") || query.flag("input"),
            stdout: query.flag("stdout") || query.flag("output"),
            // A terminal merges stderr into stdout.
            stderr: query.flag("stderr") && !tty,
            tty,
        };
        if !o.stdin && !o.stdout && !query.flag("stderr") {
            return Err(KubeletError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(o)
    }
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client went away.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the client went away")]
pub struct Gone;

/// A remote command session's channels.
pub struct Io {
    /// What the client types; ends at the client's stdin close.
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    /// Terminal resizes (tty only).
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Our output side.
    pub out: Output,
    /// Becomes true when the client connection ended.
    pub closed: watch::Receiver<bool>,
}

/// Sends output and the final status.
pub enum Output {
    Ws {
        frames: mpsc::Sender<Vec<u8>>,
        base64: bool,
    },
    Spdy {
        stdout: Option<StreamWriter>,
        stderr: Option<StreamWriter>,
        error: StreamWriter,
        closer: spdy::Closer,
    },
}

impl Output {
    /// Writes to stdout.
    pub async fn stdout(&self, data: &[u8]) -> Result<(), Gone> {
        self.channel(1, data).await
    }

    /// Writes to stderr.
    pub async fn stderr(&self, data: &[u8]) -> Result<(), Gone> {
        self.channel(2, data).await
    }

    async fn channel(&self, id: u8, data: &[u8]) -> Result<(), Gone> {
        match self {
            Output::Ws { frames, base64 } => {
                for chunk in data.chunks(32 * 1024) {
                    frames
                        .send(ws_data_frame(id, chunk, *base64))
                        .await
                        .map_err(|_| Gone)?;
                }
                Ok(())
            }
            Output::Spdy { stdout, stderr, .. } => {
                let w = if id == 1 { stdout } else { stderr };
                match w {
                    Some(w) => w.write(data).await.map_err(|_| Gone),
                    None => Ok(()),
                }
            }
        }
    }

    /// Ends the session with `status` (a `metav1.Status`) on the error channel.
    pub async fn finish(self, status: &Value) {
        let body = status.to_string().into_bytes();
        match self {
            Output::Ws { frames, base64 } => {
                let _ = frames.send(ws_data_frame(3, &body, base64)).await;
                let close = ws::close_payload(ws::CLOSE_NORMAL, "");
                let _ = frames
                    .send(ws::encode_frame(ws::OP_CLOSE, true, &close, None))
                    .await;
            }
            Output::Spdy {
                stdout,
                stderr,
                error,
                closer,
            } => {
                let _ = error.write(&body).await;
                let _ = error.finish().await;
                for w in [stdout, stderr].into_iter().flatten() {
                    let _ = w.finish().await;
                }
                closer.close().await;
            }
        }
    }
}

fn ws_data_frame(channel: u8, data: &[u8], base64: bool) -> Vec<u8> {
    if base64 {
        let mut text = vec![b'0' + channel];
        text.extend(
            base64::engine::general_purpose::STANDARD
                .encode(data)
                .into_bytes(),
        );
        ws::encode_frame(ws::OP_TEXT, true, &text, None)
    } else {
        let mut payload = Vec::with_capacity(data.len() + 1);
        payload.push(channel);
        payload.extend_from_slice(data);
        ws::encode_frame(ws::OP_BINARY, true, &payload, None)
    }
}

/// `{"metadata":{},"status":"Success"}`.
pub fn status_success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

/// The status of a command that exited non-zero, worded like upstream (containerd's
/// `error executing command [..], exit code N` wrapped by the kubelet).
pub fn status_exit_code(command: &[String], code: u32) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
    })
}

/// An internal error (`apierrors.NewInternalError`), e.g. a command that cannot start.
pub fn status_internal(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500
    })
}

/// Sets up the session's channels on an upgraded connection.
pub async fn connect(
    upgraded: Upgraded,
    transport: &Transport,
    opts: Options,
) -> Result<Io, KubeletError> {
    let io = TokioIo::new(upgraded);
    let (reader, writer) = tokio::io::split(io);
    match transport {
        Transport::WebSocket { protocol } => Ok(connect_ws(reader, writer, protocol, opts)),
        Transport::Spdy { .. } => connect_spdy(Session::start(reader, writer), opts).await,
    }
}

/// Starts a task writing queued frames to `writer`; it ends (closing the
/// connection) after a close frame or when every sender is gone.
pub fn ws_writer<W>(mut writer: W) -> mpsc::Sender<Vec<u8>>
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(32);
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let is_close = frame.first().is_some_and(|b| b & 0x0f == ws::OP_CLOSE);
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            if is_close {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    tx
}

fn connect_ws<R, W>(reader: R, writer: W, protocol: &str, opts: Options) -> Io
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let base64 = protocol.contains("base64");
    let v5 = protocol.starts_with("v5.");
    let frames = ws_writer(writer);
    let (stdin_tx, stdin_rx) = mpsc::channel(16);
    let (resize_tx, resize_rx) = mpsc::channel(4);
    let (closed_tx, closed) = watch::channel(false);
    let pong = frames.clone();
    tokio::spawn(async move {
        let mut reader = ws::Reader::new(reader, true);
        let mut stdin = opts.stdin.then_some(stdin_tx);
        loop {
            let msg = match reader.next().await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => break,
            };
            let (channel, payload) = match msg {
                Message::Binary(b) if !b.is_empty() => (b[0], b[1..].to_vec()),
                Message::Text(t) if base64 && !t.is_empty() => {
                    let Ok(data) = base64::engine::general_purpose::STANDARD.decode(&t[1..]) else {
                        continue;
                    };
                    (t[0].wrapping_sub(b'0'), data)
                }
                Message::Ping(p) => {
                    let _ = pong
                        .send(ws::encode_frame(ws::OP_PONG, true, &p, None))
                        .await;
                    continue;
                }
                Message::Close(..) => {
                    let close = ws::close_payload(ws::CLOSE_NORMAL, "");
                    let _ = pong
                        .send(ws::encode_frame(ws::OP_CLOSE, true, &close, None))
                        .await;
                    break;
                }
                _ => continue,
            };
            match channel {
                0 => {
                    if let Some(tx) = stdin.as_ref() {
                        if tx.send(payload).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                4 => {
                    if let Ok(size) = serde_json::from_slice::<TermSize>(&payload) {
                        let _ = resize_tx.send(size).await;
                    }
                }
                255 if v5 && payload.first() == Some(&0) => stdin = None,
                _ => {}
            }
        }
        let _ = closed_tx.send(true);
    });
    Io {
        stdin: opts.stdin.then_some(stdin_rx),
        resize: opts.tty.then_some(resize_rx),
        out: Output::Ws { frames, base64 },
        closed,
    }
}

async fn connect_spdy(mut session: Session, opts: Options) -> Result<Io, KubeletError> {
    let mut error = None;
    let mut stdin = None;
    let mut stdout = None;
    let mut stderr = None;
    let mut resize = None;
    let complete = |e: &Option<spdy::Stream>,
                    i: &Option<spdy::Stream>,
                    o: &Option<spdy::Stream>,
                    er: &Option<spdy::Stream>,
                    r: &Option<spdy::Stream>| {
        e.is_some()
            && (i.is_some() || !opts.stdin)
            && (o.is_some() || !opts.stdout)
            && (er.is_some() || !opts.stderr)
            && (r.is_some() || !opts.tty)
    };
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !complete(&error, &stdin, &stdout, &stderr, &resize) {
        let stream = match tokio::time::timeout_at(deadline, session.accept()).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(KubeletError::bad_request("client closed the connection")),
            Err(_) => {
                return Err(KubeletError::bad_request(
                    "timed out waiting for client to create streams",
                ))
            }
        };
        let slot = match stream.header("streamtype") {
            Some("error") => &mut error,
            Some("stdin") => &mut stdin,
            Some("stdout") => &mut stdout,
            Some("stderr") => &mut stderr,
            Some("resize") => &mut resize,
            other => {
                tracing::debug!(stream_type = ?other, "unexpected stream type; resetting");
                stream.writer.reset().await;
                continue;
            }
        };
        *slot = Some(stream);
    }
    let Some(error) = error else {
        return Err(KubeletError::bad_request("no error stream"));
    };
    let (closed_tx, closed) = watch::channel(false);
    let closer = session.closer();
    // Keep accepting (and refusing) streams, to see the connection end.
    tokio::spawn(async move {
        while let Some(s) = session.accept().await {
            s.writer.reset().await;
        }
        let _ = closed_tx.send(true);
    });
    let resize_rx = resize.map(|s| {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(decode_resizes(s.data, tx));
        rx
    });
    Ok(Io {
        stdin: stdin.map(|s| s.data),
        resize: resize_rx,
        out: Output::Spdy {
            stdout: stdout.map(|s| s.writer),
            stderr: stderr.map(|s| s.writer),
            error: error.writer,
            closer,
        },
        closed,
    })
}

/// Splits a byte stream of concatenated JSON objects into sizes.
async fn decode_resizes(mut data: mpsc::Receiver<Vec<u8>>, tx: mpsc::Sender<TermSize>) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = data.recv().await {
        buf.extend(chunk);
        let mut consumed = 0;
        let mut iter = serde_json::Deserializer::from_slice(&buf).into_iter::<TermSize>();
        loop {
            match iter.next() {
                Some(Ok(size)) => {
                    consumed = iter.byte_offset();
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    // Not a size: drop what we have and resynchronise on new data.
                    consumed = buf.len();
                    break;
                }
                None => {
                    consumed = buf.len();
                    break;
                }
            }
        }
        buf.drain(..consumed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_status_matches_upstream() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let s = status_exit_code(&cmd, 3);
        assert_eq!(
            s["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(
            status_success().to_string(),
            r#"{"metadata":{},"status":"Success"}"#
        );
    }

    #[tokio::test]
    async fn resize_stream_is_split_into_sizes() {
        let (dtx, drx) = mpsc::channel(4);
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(decode_resizes(drx, tx));
        dtx.send(br#"{"Width":80,"Height":24}{"Wid"#.to_vec())
            .await
            .expect("send");
        dtx.send(br#"th":100,"Height":40}"#.to_vec())
            .await
            .expect("send");
        drop(dtx);
        assert_eq!(
            rx.recv().await,
            Some(TermSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(
            rx.recv().await,
            Some(TermSize {
                width: 100,
                height: 40
            })
        );
        assert_eq!(rx.recv().await, None);
    }

    #[test]
    fn options_follow_upstream_rules() {
        let o =
            Options::parse(&Query::parse(Some("stdin=1&stdout=1&stderr=1&tty=1"))).expect("opts");
        assert!(o.stdin && o.stdout && o.tty && !o.stderr);
        assert!(Options::parse(&Query::parse(Some("tty=1"))).is_err());
    }
}
