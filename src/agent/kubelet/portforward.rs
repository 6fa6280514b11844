//! Port-forward: SPDY/3.1 with `portforward.k8s.io`, either directly (Upgrade:
//! SPDY/3.1) or tunnelled as the binary messages of a WebSocket
//! (`SPDY/3.1+portforward.k8s.io`, kubectl ≥1.31). For each forwarded connection the
//! client opens an error and a data stream sharing `requestID` and `port`; we connect
//! to `localhost:<port>` inside the pod's network namespace and copy both ways
//! (half-closes included); a failed connect is reported on the error stream in
//! upstream's words.
//!
//! The socket is created on a short-lived thread that enters the namespace (setns
//! changes only the calling thread, and never a tokio worker's); the connected fd is
//! handed back to tokio.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::spdy::{Session, Stream};
use super::websocket::{self as ws, Message};

/// The SPDY protocol name.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol that tunnels it.
pub const WS_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pod being forwarded to.
#[derive(Debug, Clone)]
pub struct Target {
    /// `namespace/name`, for messages.
    pub pod: String,
    pub uid: String,
    /// The pod's network namespace file; `None` for host network.
    pub netns: Option<PathBuf>,
}

/// Serves a port-forward session on an upgraded connection.
pub async fn run(upgraded: Upgraded, websocket: bool, target: Target) {
    let io = TokioIo::new(upgraded);
    let (reader, writer) = tokio::io::split(io);
    let session = if websocket {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let (sr, sw) = tokio::io::split(theirs);
        tokio::spawn(tunnel(reader, writer, ours));
        Session::start(sr, sw)
    } else {
        Session::start(reader, writer)
    };
    serve_session(session, target).await;
}

/// Pairs streams by request id and forwards each pair.
async fn serve_session(mut session: Session, target: Target) {
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    while let Some(stream) = session.accept().await {
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        // Old clients did not send requestID; spdystream ids pair them instead
        // (error stream first, data stream next).
        let request = stream
            .header("requestid")
            .map(str::to_string)
            .unwrap_or_else(|| stream.header("port").unwrap_or("").to_string());
        let entry = pending.entry(request.clone()).or_default();
        match kind.as_str() {
            "error" => entry.0 = Some(stream),
            "data" => entry.1 = Some(stream),
            other => {
                tracing::debug!(stream_type = %other, "port-forward: unexpected stream type");
                stream.writer.reset().await;
                continue;
            }
        }
        if matches!(pending.get(&request), Some((Some(_), Some(_)))) {
            if let Some((Some(error), Some(data))) = pending.remove(&request) {
                tokio::spawn(forward(error, data, target.clone()));
            }
        }
    }
}

async fn forward(error: Stream, data: Stream, target: Target) {
    let port_text = data.header("port").unwrap_or("").to_string();
    let port = match port_text.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => {
            let msg = format!("invalid port {port_text:?}: must be a number between 1 and 65535");
            let _ = error.writer.write(msg.as_bytes()).await;
            let _ = error.writer.finish().await;
            let _ = data.writer.finish().await;
            return;
        }
    };
    let conn = match connect(target.netns.clone(), port).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                target.pod, target.uid
            );
            tracing::debug!(%msg, "port-forward connect failed");
            let _ = error.writer.write(msg.as_bytes()).await;
            let _ = error.writer.finish().await;
            let _ = data.writer.finish().await;
            return;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    let Stream {
        data: mut incoming,
        writer,
        ..
    } = data;
    let to_pod = async move {
        while let Some(chunk) = incoming.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The client closed its side: pass the half-close on.
        let _ = wr.shutdown().await;
    };
    let from_pod = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.write(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = writer.finish().await;
    };
    // Done when the pod's side ended (as upstream): the client's half-close only
    // half-closes the pod connection, but the pod closing ends the forward.
    tokio::pin!(to_pod);
    tokio::pin!(from_pod);
    let mut client_done = false;
    loop {
        tokio::select! {
            _ = &mut from_pod => break,
            _ = &mut to_pod, if !client_done => client_done = true,
        }
    }
    let _ = error.writer.finish().await;
}

/// Connects to `localhost:port` in `netns` (host network when `None`), IPv4 first
/// then IPv6; the error names both attempts, as containerd's does.
pub async fn connect(netns: Option<PathBuf>, port: u16) -> Result<TcpStream, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("k3rs-portfwd".to_string())
        .spawn(move || {
            let _ = tx.send(connect_blocking(netns.as_deref(), port));
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start a thread to connect: {e}"));
    }
    let stream = rx
        .await
        .map_err(|_| "the connecting thread died".to_string())??;
    stream
        .set_nonblocking(true)
        .map_err(|e| format!("socket setup: {e}"))?;
    TcpStream::from_std(stream).map_err(|e| format!("socket setup: {e}"))
}

/// Runs on its own thread: enters the namespace (the thread ends afterwards, so
/// nothing else ever runs in it) and connects.
fn connect_blocking(netns: Option<&std::path::Path>, port: u16) -> Result<StdTcpStream, String> {
    let where_ = match netns {
        Some(path) => {
            let ns = std::fs::File::open(path)
                .map_err(|e| format!("cannot open network namespace {}: {e}", path.display()))?;
            // SAFETY: setns(2) on a valid fd; it affects only this dedicated thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "cannot enter network namespace {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                ));
            }
            format!(" inside namespace {:?}", path.display().to_string())
        }
        None => String::new(),
    };
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let e4 = match StdTcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    let e6 = match StdTcpStream::connect_timeout(&v6, CONNECT_TIMEOUT) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    Err(format!(
        "failed to connect to localhost:{port}{where_}, IPv4: dial tcp4 {v4}: connect: {} IPv6 dial tcp6 {v6}: connect: {}",
        errno_text(&e4),
        errno_text(&e6)
    ))
}

/// Go's lower-case errno wording ("connection refused").
fn errno_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// Carries a byte stream over WebSocket binary messages (what client-go's
/// TunnelingConnection does on its side): client messages into `local`, `local`'s
/// output out as messages; pings answered; close ends both.
async fn tunnel<R, W>(reader: R, writer: W, local: tokio::io::DuplexStream)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let frames = super::remote::ws_writer(writer);
    let (mut local_rd, mut local_wr) = tokio::io::split(local);
    let out = frames.clone();
    let outbound = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match local_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out
                        .send(ws::encode_frame(ws::OP_BINARY, true, &buf[..n], None))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let close = ws::close_payload(ws::CLOSE_NORMAL, "");
        let _ = out
            .send(ws::encode_frame(ws::OP_CLOSE, true, &close, None))
            .await;
    });
    let mut reader = ws::Reader::new(reader, true);
    loop {
        match reader.next().await {
            Ok(Some(Message::Binary(b))) => {
                if local_wr.write_all(&b).await.is_err() {
                    break;
                }
            }
            Ok(Some(Message::Ping(p))) => {
                let _ = frames
                    .send(ws::encode_frame(ws::OP_PONG, true, &p, None))
                    .await;
            }
            Ok(Some(Message::Close(..))) | Ok(None) | Err(_) => break,
            Ok(Some(_)) => {}
        }
    }
    // The client is gone: the SPDY session sees EOF and ends its streams.
    let _ = local_wr.shutdown().await;
    drop(local_wr);
    let _ = outbound.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_on_the_host_and_refusal_wording() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        connect(None, port).await.expect("connects on the host");
        accept.await.expect("join").expect("accepted");
        // A port nothing listens on (the listener is gone).
        let e = connect(None, port).await.expect_err("refused");
        assert!(
            e.starts_with(&format!("failed to connect to localhost:{port}, IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused")),
            "{e}"
        );
    }
}
