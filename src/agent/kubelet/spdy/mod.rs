//! A SPDY/3.1 session, server side, as kubectl's client (moby/spdystream) uses it: the
//! client opens every stream (SYN_STREAM with a `streamType` header), we answer each
//! with SYN_REPLY, and both sides send DATA with FIN to half-close. spdystream does no
//! flow control (it ignores WINDOW_UPDATE and SETTINGS), so neither do we; pings are
//! echoed; GOAWAY ends the session.
//!
//! One task reads frames and routes data to per-stream channels; one task owns the
//! writing half and the header compressor, so frames leave in the order they were
//! queued (a SYN_REPLY always precedes the stream's first DATA).

pub mod dictionary;
pub mod frame;

use std::collections::HashMap;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

pub use frame::{header, Frame, Headers};

/// Data frames we send are cut to this size (spdystream reads any size).
const MAX_DATA: usize = 32 * 1024;

/// The client is gone (or reset the stream): nothing more can be sent.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the SPDY stream is closed")]
pub struct Closed;

enum Op {
    Frame(Frame),
    /// GOAWAY, then close the connection.
    Shutdown,
}

/// The sending half of one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    ops: mpsc::Sender<Op>,
}

impl StreamWriter {
    /// The stream's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends `data` (in frames of at most 32 KiB).
    pub async fn write(&self, data: &[u8]) -> Result<(), Closed> {
        for chunk in data.chunks(MAX_DATA) {
            self.frame(chunk.to_vec(), 0).await?;
        }
        Ok(())
    }

    /// Half-closes the stream (DATA with FIN): the client reads EOF.
    pub async fn finish(&self) -> Result<(), Closed> {
        self.frame(Vec::new(), frame::FLAG_FIN).await
    }

    /// Aborts the stream (RST_STREAM CANCEL).
    pub async fn reset(&self) {
        let _ = self
            .ops
            .send(Op::Frame(Frame::RstStream {
                stream_id: self.id,
                status: frame::RST_CANCEL,
            }))
            .await;
    }

    async fn frame(&self, data: Vec<u8>, flags: u8) -> Result<(), Closed> {
        self.ops
            .send(Op::Frame(Frame::Data {
                stream_id: self.id,
                flags,
                data,
            }))
            .await
            .map_err(|_| Closed)
    }
}

/// A stream the client opened.
pub struct Stream {
    /// Its SYN_STREAM headers (names lower-case).
    pub headers: Headers,
    /// What the client sends; ends (None) at the client's FIN, a reset or the end of
    /// the session.
    pub data: mpsc::Receiver<Vec<u8>>,
    /// Our half.
    pub writer: StreamWriter,
}

impl Stream {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// A running session: the streams the client opens arrive through [`Session::accept`].
pub struct Session {
    incoming: mpsc::Receiver<Stream>,
    ops: mpsc::Sender<Op>,
}

impl Session {
    /// Starts the session's reader and writer tasks on a connection already switched
    /// to SPDY (after the 101 response).
    pub fn start<R, W>(reader: R, writer: W) -> Session
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (ops_tx, ops_rx) = mpsc::channel(256);
        let (incoming_tx, incoming) = mpsc::channel(16);
        tokio::spawn(write_loop(writer, ops_rx));
        tokio::spawn(read_loop(reader, ops_tx.clone(), incoming_tx));
        Session {
            incoming,
            ops: ops_tx,
        }
    }

    /// The next stream the client opens; `None` once the session ended.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// A handle that can end the session from elsewhere.
    pub fn closer(&self) -> Closer {
        Closer {
            ops: self.ops.clone(),
        }
    }
}

/// Ends a session: GOAWAY after everything queued before, then the connection closes.
#[derive(Clone)]
pub struct Closer {
    ops: mpsc::Sender<Op>,
}

impl Closer {
    pub async fn close(&self) {
        let _ = self.ops.send(Op::Shutdown).await;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut ops: mpsc::Receiver<Op>) {
    let mut encoder = frame::Encoder::new();
    let mut last_stream = 0u32;
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(op) = ops.recv().await {
        let mut shutdown = false;
        let mut next = Some(op);
        // Batch what is already queued into one write.
        while let Some(op) = next.take() {
            match op {
                Op::Frame(f) => {
                    if let Frame::SynReply { stream_id, .. } = &f {
                        last_stream = last_stream.max(*stream_id);
                    }
                    if let Err(e) = encoder.encode(&f, &mut buf) {
                        tracing::debug!(error = %e, "SPDY frame not encoded");
                    }
                }
                Op::Shutdown => {
                    let goaway = Frame::GoAway {
                        last_good_id: last_stream,
                        status: 0,
                    };
                    let _ = encoder.encode(&goaway, &mut buf);
                    shutdown = true;
                    break;
                }
            }
            if buf.len() < 256 * 1024 {
                next = ops.try_recv().ok();
            }
        }
        if writer.write_all(&buf).await.is_err() || writer.flush().await.is_err() {
            return;
        }
        buf.clear();
        if shutdown {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    ops: mpsc::Sender<Op>,
    incoming: mpsc::Sender<Stream>,
) {
    let mut decoder = frame::Decoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut streams: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut last_id = 0u32;
    'read: loop {
        loop {
            let f = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY session ended on a bad frame");
                    break 'read;
                }
            };
            match f {
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                    ..
                } => {
                    // Client streams are odd and increase (SPDY/3 §2.3.2).
                    if stream_id % 2 == 0 || stream_id <= last_id {
                        let rst = Frame::RstStream {
                            stream_id,
                            status: frame::RST_PROTOCOL_ERROR,
                        };
                        let _ = ops.send(Op::Frame(rst)).await;
                        continue;
                    }
                    last_id = stream_id;
                    let reply = Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Vec::new(),
                    };
                    if ops.send(Op::Frame(reply)).await.is_err() {
                        break 'read;
                    }
                    let (tx, rx) = mpsc::channel(128);
                    if flags & frame::FLAG_FIN == 0 {
                        streams.insert(stream_id, tx);
                    }
                    let stream = Stream {
                        headers,
                        data: rx,
                        writer: StreamWriter {
                            id: stream_id,
                            ops: ops.clone(),
                        },
                    };
                    if incoming.send(stream).await.is_err() {
                        tracing::debug!(stream_id, "SPDY stream opened after the session ended");
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    if let Some(tx) = streams.get(&stream_id) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            // Nobody reads this stream any more; drop what comes.
                            streams.remove(&stream_id);
                        }
                    }
                    if flags & frame::FLAG_FIN != 0 {
                        streams.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    streams.remove(&stream_id);
                }
                Frame::Ping(id) => {
                    let _ = ops.send(Op::Frame(Frame::Ping(id))).await;
                }
                Frame::GoAway { .. } => break 'read,
                Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::Settings
                | Frame::WindowUpdate { .. }
                | Frame::Unknown(_) => {}
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Dropping the senders ends every stream's data and the incoming queue.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_are_replied_routed_and_finished() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (sr, sw) = tokio::io::split(server);
        let mut session = Session::start(sr, sw);
        let (mut cr, mut cw) = tokio::io::split(client);

        let mut enc = frame::Encoder::new();
        let mut wire = Vec::new();
        for (id, kind) in [(1, "error"), (3, "stdin")] {
            enc.encode(
                &Frame::SynStream {
                    stream_id: id,
                    associated_id: 0,
                    priority: 0,
                    flags: 0,
                    headers: vec![("streamType".into(), kind.into())],
                },
                &mut wire,
            )
            .expect("encode");
        }
        enc.encode(&Frame::Ping(1), &mut wire).expect("encode");
        for data in [&b"hello "[..], &b"world"[..]] {
            enc.encode(
                &Frame::Data {
                    stream_id: 3,
                    flags: 0,
                    data: data.to_vec(),
                },
                &mut wire,
            )
            .expect("encode");
        }
        enc.encode(
            &Frame::Data {
                stream_id: 3,
                flags: frame::FLAG_FIN,
                data: vec![],
            },
            &mut wire,
        )
        .expect("encode");
        cw.write_all(&wire).await.expect("write");

        let error = session.accept().await.expect("error stream");
        assert_eq!(error.header("streamtype"), Some("error"));
        let mut stdin = session.accept().await.expect("stdin stream");
        assert_eq!(stdin.header("streamType"), Some("stdin"));
        let mut got = Vec::new();
        while let Some(d) = stdin.data.recv().await {
            got.extend(d);
        }
        assert_eq!(got, b"hello world");

        error
            .writer
            .write(b"{\"status\":\"Success\"}")
            .await
            .expect("write");
        error.writer.finish().await.expect("fin");
        session.closer().close().await;

        let mut back = Vec::new();
        cr.read_to_end(&mut back).await.expect("read");
        let mut dec = frame::Decoder::new();
        let mut buf = BytesMut::from(&back[..]);
        let mut frames = Vec::new();
        while let Some(f) = dec.decode(&mut buf).expect("decode") {
            frames.push(f);
        }
        let replies: Vec<u32> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::SynReply { stream_id, .. } => Some(*stream_id),
                _ => None,
            })
            .collect();
        assert_eq!(replies, vec![1, 3]);
        assert!(frames.contains(&Frame::Ping(1)), "ping echoed: {frames:?}");
        assert!(frames.contains(&Frame::Data {
            stream_id: 1,
            flags: frame::FLAG_FIN,
            data: vec![]
        }));
        assert!(matches!(
            frames.last(),
            Some(Frame::GoAway {
                last_good_id: 3,
                ..
            })
        ));
    }
}
