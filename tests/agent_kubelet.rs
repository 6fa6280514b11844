//! The kubelet endpoint against real containerd and runc: busybox containers carrying
//! the pod worker's labels, `serve` on a loopback port with certificates made here,
//! and a small client speaking what kubectl speaks: container logs (tail, timestamps,
//! previous, follow to the end of a container), exec over WebSocket v5 (output, exit
//! code in the error channel, stdin with the v5 close) and over SPDY/3.1,
//! port-forward over SPDY (directly and tunnelled through a WebSocket) to busybox
//! httpd inside the pod's network namespace, and 403 for a client outside
//! system:masters.
//!
//! Needs root, containerd, runc and busybox-static (`apt-get install containerd runc
//! busybox-static`); fails loudly, never skips, when one is missing. This test binary
//! plays the shim's CRI logger (see tests/common/containerd.rs).

#[path = "common/containerd.rs"]
mod containerd;
#[path = "common/images.rs"]
mod images;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use containerd::TempContainerd;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k3rs::agent::images as agent_images;
use k3rs::agent::kubelet::spdy::frame::{Decoder, Encoder, Frame, FLAG_FIN};
use k3rs::agent::kubelet::websocket::{self as ws, Message};
use k3rs::agent::layout;
use k3rs::agent::logger::LoggerConfig;
use k3rs::agent::netns;
use k3rs::agent::runtime::{ContainerSpec, Namespace, NewContainer, StartOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "default";
const POD: &str = "web";
const UID: &str = "3f1c2a9e-0000-4000-8000-00000000k3rs";

/// containerd on temp dirs, the busybox image, a pod netns. Dropping it removes the
/// containers and the netns and stops containerd (see [`TempContainerd`]).
struct Node {
    containerd: TempContainerd,
    data: PathBuf,
    netns: PathBuf,
    stdin_holders: std::sync::Mutex<Vec<std::fs::File>>,
}

impl Node {
    async fn start() -> Node {
        images::require_agent_environment("agent_kubelet");
        let containerd = TempContainerd::start().await;
        let data = containerd.data_dir().to_path_buf();
        let archive = data.join("busybox.tar");
        images::write_oci_archive(&archive, "busybox:kubelet", false);
        agent_images::import_file(&containerd.client(), &archive)
            .await
            .expect("import busybox");
        let netns = netns::create(&containerd.netns_dir(), "pod-web").expect("pod netns");
        Node {
            data,
            netns,
            containerd,
            stdin_holders: Default::default(),
        }
    }

    /// Runs `script` as attempt `attempt` of container `name` of the pod.
    async fn run(&self, name: &str, attempt: u32, script: &str) -> String {
        self.run_with(name, attempt, script, false).await
    }

    /// [`Node::run`]; with `stdin`, the task reads a FIFO (what attach writes to).
    async fn run_with(&self, name: &str, attempt: u32, script: &str, stdin: bool) -> String {
        let image =
            agent_images::image_config(self.containerd.runtime().client(), "busybox:kubelet")
                .await
                .expect("image config");
        let args = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        let mut spec = ContainerSpec::from_image(&image, Some(&args), None, &[]).expect("spec");
        spec.network = Namespace::Path(self.netns.clone());
        spec.terminal = stdin;
        let id = layout::container_id(UID, name, attempt);
        spec.cgroups_path = format!("/k3rs-kubelet-test-{}-{}", std::process::id(), &id[..12]);
        let log_dir = layout::pod_log_dir(&self.data.join("pods"), NS, POD, UID);
        let log = layout::container_log_path(&log_dir, name, attempt);
        let mut labels: HashMap<String, String> = [
            (layout::LABEL_POD_NAMESPACE, NS.to_string()),
            (layout::LABEL_POD_NAME, POD.to_string()),
            (layout::LABEL_POD_UID, UID.to_string()),
            (layout::LABEL_CONTAINER_NAME, name.to_string()),
            (layout::LABEL_RESTART_COUNT, attempt.to_string()),
            (layout::LABEL_LOG_PATH, log.display().to_string()),
            (layout::LABEL_NETNS, self.netns.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut opts = StartOptions::default();
        if stdin {
            let fifo = self.data.join(format!("{id}.stdin"));
            let c = std::ffi::CString::new(fifo.display().to_string()).expect("path");
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
            // Like the pod worker: hold a writer so the container never reads EOF
            // between attaches.
            let holder = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo)
                .expect("open stdin FIFO");
            self.stdin_holders.lock().expect("lock").push(holder);
            labels.insert(layout::LABEL_STDIN_FIFO.into(), fifo.display().to_string());
            // The runc shim wires a stdin FIFO only to a terminal when stdout goes
            // to a binary:// logger, so stdin containers run with a tty here.
            labels.insert(layout::LABEL_TTY.into(), "true".into());
            opts.stdin_fifo = Some(fifo);
            opts.terminal = true;
        }
        self.containerd
            .runtime()
            .create(&NewContainer {
                id: id.clone(),
                image: "busybox:kubelet".into(),
                spec,
                labels,
            })
            .await
            .expect("create container");
        self.containerd
            .runtime()
            .start_with(&id, &LoggerConfig::new(&log), &opts)
            .await
            .expect("start container");
        id
    }
}

/// CA, serving certificate for 127.0.0.1, and client certificates.
struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "k3rs-test-ca");
        let cert = params.self_signed(&key).expect("CA");
        Pki {
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (cert PEM, key PEM).
    fn issue(&self, cn: &str, orgs: &[&str], server: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let sans = if server {
            vec!["127.0.0.1".to_string()]
        } else {
            vec![]
        };
        let mut params = rcgen::CertificateParams::new(sans).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

/// A client of the endpoint with one identity.
struct Client {
    addr: std::net::SocketAddr,
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    fn new(addr: std::net::SocketAddr, pki: &Pki, cn: &str, orgs: &[&str]) -> Client {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = pki.issue(cn, orgs, false);
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("ca"))
            .expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth");
        Client {
            addr,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> hyper::Response<hyper::body::Incoming> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let tls = self.tls.connect(name, tcp).await.expect("TLS handshake");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn.with_upgrades());
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        sender
            .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("response")
    }

    /// Status and whole body.
    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.send("GET", path, &[]).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Upgrades and returns the raw connection.
    async fn upgrade(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> TokioIo<hyper::upgrade::Upgraded> {
        let resp = self.send(method, path, headers).await;
        if resp.status().as_u16() != 101 {
            let status = resp.status();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            panic!("{path}: {status} {}", String::from_utf8_lossy(&body));
        }
        TokioIo::new(hyper::upgrade::on(resp).await.expect("upgraded"))
    }

    async fn websocket(&self, path: &str, protocol: &str) -> TokioIo<hyper::upgrade::Upgraded> {
        self.upgrade(
            "GET",
            path,
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-protocol", protocol),
            ],
        )
        .await
    }
}

fn ws_send(payload: &[u8]) -> Vec<u8> {
    ws::encode_frame(ws::OP_BINARY, true, payload, Some([0x12, 0x34, 0x56, 0x78]))
}

/// Reads a v5 exec session to its end: bytes per channel.
async fn ws_session(
    conn: TokioIo<hyper::upgrade::Upgraded>,
    input: &[&[u8]],
) -> HashMap<u8, Vec<u8>> {
    let (rd, mut wr) = tokio::io::split(conn);
    for msg in input {
        wr.write_all(&ws_send(msg)).await.expect("send");
    }
    let mut reader = ws::Reader::new(rd, false);
    let mut channels: HashMap<u8, Vec<u8>> = HashMap::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), reader.next()).await {
            Ok(Ok(Some(Message::Binary(b)))) if !b.is_empty() => {
                channels.entry(b[0]).or_default().extend_from_slice(&b[1..])
            }
            Ok(Ok(Some(Message::Close(code, _)))) => {
                assert_eq!(code, ws::CLOSE_NORMAL);
                break;
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("websocket: {e}"),
            Err(_) => panic!("exec session did not end within 60s: {channels:?}"),
        }
    }
    channels
}

/// A SPDY client session: opens streams, collects data per stream until FIN.
struct SpdyClient {
    conn: TokioIo<hyper::upgrade::Upgraded>,
    enc: Encoder,
    dec: Decoder,
    buf: BytesMut,
}

/// SYN_STREAM of a port-forward stream as kubectl opens it (error streams are
/// half-closed at once: kubectl never writes to them).
fn port_stream(id: u32, kind: &str, port: &str, request: &str) -> Frame {
    Frame::SynStream {
        stream_id: id,
        associated_id: 0,
        priority: 0,
        flags: if kind == "error" { FLAG_FIN } else { 0 },
        headers: vec![
            ("streamtype".into(), kind.into()),
            ("port".into(), port.into()),
            ("requestid".into(), request.into()),
        ],
    }
}

impl SpdyClient {
    /// Opens the error (`id`) and data (`id + 2`) streams of one forwarded connection.
    async fn open_pair(&mut self, id: u32, port: &str, request: &str) {
        self.write(&port_stream(id, "error", port, request)).await;
        self.write(&port_stream(id + 2, "data", port, request))
            .await;
    }

    async fn open(&mut self, id: u32, headers: &[(&str, &str)], fin: bool) {
        let f = Frame::SynStream {
            stream_id: id,
            associated_id: 0,
            priority: 0,
            flags: if fin { FLAG_FIN } else { 0 },
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        self.write(&f).await;
    }

    async fn write(&mut self, f: &Frame) {
        let mut out = Vec::new();
        self.enc.encode(f, &mut out).expect("encode");
        self.conn.write_all(&out).await.expect("write");
    }

    async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        let f = Frame::Data {
            stream_id: id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: data.to_vec(),
        };
        self.write(&f).await;
    }

    /// Reads until every stream in `until` has finished; data per stream.
    async fn collect(&mut self, until: &[u32]) -> HashMap<u32, Vec<u8>> {
        let mut data: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut finished: Vec<u32> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !until.iter().all(|id| finished.contains(id)) {
            while let Some(f) = self.dec.decode(&mut self.buf).expect("frame") {
                match f {
                    Frame::Data {
                        stream_id,
                        flags,
                        data: d,
                    } => {
                        data.entry(stream_id).or_default().extend(d);
                        if flags & FLAG_FIN != 0 {
                            finished.push(stream_id);
                        }
                    }
                    Frame::RstStream { stream_id, .. } => finished.push(stream_id),
                    Frame::GoAway { .. } => return data,
                    _ => {}
                }
            }
            if until.iter().all(|id| finished.contains(id)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "SPDY streams {until:?} not finished: {data:?}"
            );
            let n =
                tokio::time::timeout(Duration::from_secs(60), self.conn.read_buf(&mut self.buf))
                    .await
                    .unwrap_or_else(|_| panic!("SPDY streams {until:?} not finished: {data:?}"))
                    .expect("read");
            if n == 0 {
                break;
            }
        }
        data
    }
}

async fn spdy(conn: TokioIo<hyper::upgrade::Upgraded>) -> SpdyClient {
    SpdyClient {
        conn,
        enc: Encoder::new(),
        dec: Decoder::new(),
        buf: BytesMut::new(),
    }
}

async fn eventually_logs(client: &Client, path: &str, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = client.get(path).await;
        if status == 200 && body.contains(wanted) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {status} {body:?} lacks {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_endpoint_serves_logs_exec_and_port_forward() {
    let node = Node::start().await;
    let pki = Pki::new();
    let (cert, key) = pki.issue("kubelet", &[], true);
    let tls = k3rs::agent::kubelet::tls_config(&cert, &key, &pki.ca_pem).expect("tls config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(k3rs::agent::kubelet::serve(
        listener,
        Arc::new(tls),
        node.containerd.runtime().clone(),
        stop_rx,
    ));
    let admin = Client::new(
        addr,
        &pki,
        "kube-apiserver-kubelet-client",
        &["system:masters"],
    );
    let nobody = Client::new(addr, &pki, "bob", &["developers"]);

    assert_eq!(admin.get("/healthz").await, (200, "ok\n".to_string()));
    let (status, body) = nobody.get("/containerLogs/default/web/app").await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        "Forbidden (user=bob, verb=get, resource=nodes, subresource=proxy)\n"
    );

    // Attempt 0 of "app" ran and exited; attempt 1 runs httpd and stays up.
    let first = node.run("app", 0, "echo attempt zero").await;
    node.containerd
        .runtime()
        .wait(&first)
        .await
        .expect("attempt 0 exits");
    node.run(
        "app",
        1,
        "echo line 0; echo line 1; echo line 2; httpd -p 8080 -h /var/www; exec sleep 1000",
    )
    .await;
    eventually_logs(&admin, "/containerLogs/default/web/app", "line 2").await;
    let (_, tail) = admin
        .get("/containerLogs/default/web/app?tailLines=2")
        .await;
    assert_eq!(tail, "line 1\nline 2\n");
    let (_, stamped) = admin
        .get("/containerLogs/default/web/app?tailLines=1&timestamps=true")
        .await;
    let (ts, rest) = stamped.split_once(' ').expect("timestamp prefix");
    assert_eq!(rest, "line 2\n");
    assert_eq!(ts.len(), "2024-01-01T00:00:00.000000000Z".len(), "{ts}");
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
    assert_eq!(
        admin
            .get("/containerLogs/default/web/app?previous=true")
            .await,
        (200, "attempt zero\n".to_string())
    );
    let (_, limited) = admin
        .get("/containerLogs/default/web/app?limitBytes=8")
        .await;
    assert_eq!(limited, "line 0\nl");

    // Follow a container to its end: the body ends once it exited.
    node.run(
        "ticker",
        0,
        "for i in 0 1 2 3 4; do echo tick $i; sleep 0.2; done",
    )
    .await;
    let (status, followed) = tokio::time::timeout(
        Duration::from_secs(60),
        admin.get("/containerLogs/default/web/ticker?follow=true"),
    )
    .await
    .expect("follow ends after the container exits");
    assert_eq!(status, 200);
    assert_eq!(followed, "tick 0\ntick 1\ntick 2\ntick 3\ntick 4\n");
    assert_eq!(
        admin
            .get("/containerLogs/default/web/ticker?previous=true")
            .await,
        (
            400,
            "previous terminated container \"ticker\" in pod \"web\" not found\n".to_string()
        )
    );
    assert_eq!(admin.get("/containerLogs/default/web/db").await.0, 404);
    assert_eq!(admin.get("/containerLogs/default/nope/app").await.0, 404);

    // exec over WebSocket v5: output on 1 and 2, exit code 3 on the error channel.
    let conn = admin
        .websocket(
            "/exec/default/web/app?command=sh&command=-c&command=echo%20out%3B%20echo%20err%20%3E%262%3B%20exit%203&stdout=1&stderr=1",
            "v5.channel.k8s.io",
        )
        .await;
    let got = ws_session(conn, &[]).await;
    assert_eq!(got.get(&1).map(Vec::as_slice), Some(&b"out\n"[..]));
    assert_eq!(got.get(&2).map(Vec::as_slice), Some(&b"err\n"[..]));
    let status: serde_json::Value = serde_json::from_slice(&got[&3]).expect("status JSON");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert_eq!(
        status["message"],
        "command terminated with non-zero exit code: error executing command [sh -c echo out; echo err >&2; exit 3], exit code 3"
    );

    // stdin, closed the v5 way ([255, 0]), like kubectl at EOF.
    let conn = admin
        .websocket(
            "/exec/default/web/app?command=cat&stdin=1&stdout=1",
            "v5.channel.k8s.io",
        )
        .await;
    let got = ws_session(conn, &[b"\x00hello ", b"\x00kubelet\n", b"\xff\x00"]).await;
    assert_eq!(
        got.get(&1).map(Vec::as_slice),
        Some(&b"hello kubelet\n"[..]),
        "{:?}",
        got.get(&3).map(|s| String::from_utf8_lossy(s))
    );
    assert_eq!(got[&3], br#"{"metadata":{},"status":"Success"}"#.to_vec());

    // attach: stdin into the container's FIFO, its output (from the log) back, and
    // Success once it exits.
    node.run_with("reader", 0, "read line; echo got $line", true)
        .await;
    let conn = admin
        .websocket(
            "/attach/default/web/reader?stdin=1&stdout=1&tty=1",
            "v5.channel.k8s.io",
        )
        .await;
    let got = ws_session(
        conn,
        &[b"\x04{\"Width\":100,\"Height\":30}", b"\x00hello\r"],
    )
    .await;
    let shown = String::from_utf8_lossy(got.get(&1).map(Vec::as_slice).unwrap_or_default());
    assert!(shown.contains("got hello\r\n"), "{got:?}");
    assert_eq!(got[&3], br#"{"metadata":{},"status":"Success"}"#.to_vec());

    // exec over SPDY/3.1, as kubectl ≤1.29 and the fallback do.
    let conn = admin
        .upgrade(
            "POST",
            "/exec/default/web/app?command=sh&command=-c&command=echo%20spdy-out&stdout=1",
            &[
                ("connection", "Upgrade"),
                ("upgrade", "SPDY/3.1"),
                ("x-stream-protocol-version", "v5.channel.k8s.io"),
                ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ],
        )
        .await;
    let mut s = spdy(conn).await;
    s.open(1, &[("streamType", "error")], false).await;
    s.open(3, &[("streamType", "stdout")], false).await;
    let got = s.collect(&[1, 3]).await;
    assert_eq!(got.get(&3).map(Vec::as_slice), Some(&b"spdy-out\n"[..]));
    assert_eq!(got[&1], br#"{"metadata":{},"status":"Success"}"#.to_vec());

    // port-forward over SPDY to httpd in the pod's netns, and to a closed port.
    let request = b"GET /index.html HTTP/1.0\r\n\r\n";
    let pf_headers = [
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", "portforward.k8s.io"),
    ];
    let conn = admin
        .upgrade("POST", "/portForward/default/web", &pf_headers)
        .await;
    let mut s = spdy(conn).await;
    s.open_pair(1, "8080", "0").await;
    s.data(3, request, false).await;
    s.open_pair(5, "9", "1").await;
    let got = s.collect(&[1, 3, 5, 7]).await;
    let page = String::from_utf8_lossy(&got[&3]);
    assert!(
        page.starts_with("HTTP/1.") && page.contains("hello from k3rs"),
        "{page}"
    );
    assert!(got.get(&1).is_none_or(|e| e.is_empty()), "{got:?}");
    let refused = String::from_utf8_lossy(&got[&5]);
    assert!(
        refused.starts_with("error forwarding port 9 to pod default/web, uid ")
            && refused.contains("connection refused"),
        "{refused}"
    );

    // The same through the WebSocket tunnel of kubectl ≥1.31.
    let conn = admin
        .websocket("/portForward/default/web", "SPDY/3.1+portforward.k8s.io")
        .await;
    let (rd, mut wr) = tokio::io::split(conn);
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    for (id, kind) in [(1, "error"), (3, "data")] {
        enc.encode(&port_stream(id, kind, "8080", "0"), &mut out)
            .expect("encode");
    }
    enc.encode(
        &Frame::Data {
            stream_id: 3,
            flags: 0,
            data: request.to_vec(),
        },
        &mut out,
    )
    .expect("encode");
    // Split across two messages: the tunnel is a byte stream.
    let half = out.len() / 2;
    wr.write_all(&ws_send(&out[..half])).await.expect("send");
    wr.write_all(&ws_send(&out[half..])).await.expect("send");
    let mut reader = ws::Reader::new(rd, false);
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    let mut page = Vec::new();
    'tunnel: loop {
        match tokio::time::timeout(Duration::from_secs(60), reader.next()).await {
            Ok(Ok(Some(Message::Binary(b)))) => buf.extend_from_slice(&b),
            other => panic!("tunnel ended early: {other:?}"),
        }
        while let Some(f) = dec.decode(&mut buf).expect("frame") {
            if let Frame::Data {
                stream_id: 3,
                flags,
                data,
            } = f
            {
                page.extend(data);
                if flags & FLAG_FIN != 0 {
                    break 'tunnel;
                }
            }
        }
    }
    assert!(String::from_utf8_lossy(&page).contains("hello from k3rs"));

    stop_tx.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("serve returns after shutdown")
        .expect("serve task");
    drop(node);
}
