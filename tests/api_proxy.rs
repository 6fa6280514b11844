//! End-to-end tests of the API server's proxy to kubelets (`pods/log`, `pods/exec`,
//! `pods/attach`): the real binary with `--disable-agent`, the real kubectl, and a fake
//! kubelet in this process that serves TLS with a certificate from the server's CA (issued
//! by `write_local_agent_files`) and requires a client certificate from the client CA.

mod common;

use bytes::Bytes;
use common::{eventually, Server};
use http::{Request, Response, StatusCode};
use http_body_util::{Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

const NODE: &str = "kubelet-node";

type Body = Pin<Box<dyn hyper::body::Body<Data = Bytes, Error = Infallible> + Send>>;

/// What the fake kubelet saw.
#[derive(Default)]
struct Seen {
    /// Request paths with their queries.
    uris: Mutex<Vec<String>>,
    /// Client certificate (CN, O) of every connection.
    clients: Mutex<Vec<(String, Vec<String>)>>,
    /// Lets the followed log stream go on after its first line.
    release_follow: Notify,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn roots(ca: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca) {
        roots.add(c).unwrap();
    }
    roots
}

/// Starts the fake kubelet on a free loopback port with the serving certificate in
/// `serving_dir`, accepting clients of the client CA in `client_ca_dir`; returns the port.
fn start_kubelet(
    rt: &tokio::runtime::Runtime,
    serving_dir: &Path,
    client_ca_dir: &Path,
    seen: Arc<Seen>,
) -> u16 {
    let roots = Arc::new(roots(&client_ca_dir.join("client-ca.crt")));
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&serving_dir.join("serving-kubelet.crt")),
            key(&serving_dir.join("serving-kubelet.key")),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                // A client without a certificate from the client CA fails here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(id) = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| k3rs::server::pki::client_identity(c))
                {
                    seen.clients.lock().unwrap().push(id);
                }
                let svc = hyper::service::service_fn(move |req| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(kubelet(seen, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

fn text(code: StatusCode, s: String) -> Response<Body> {
    let mut r = Response::new(Box::pin(Full::new(Bytes::from(s))) as Body);
    *r.status_mut() = code;
    r
}

/// The fake kubelet's routes.
async fn kubelet(seen: Arc<Seen>, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    seen.uris.lock().unwrap().push(format!("{path}?{query}"));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["containerLogs", _, pod, "waiting"] => text(
            StatusCode::BAD_REQUEST,
            format!(
                "container \"waiting\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ),
        ),
        ["containerLogs", _, pod, container] if query.contains("follow=true") => {
            let (tx, rx) = mpsc::channel::<Bytes>(4);
            let first = format!("first line of {pod}/{container}\n");
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from(first)).await;
                seen.release_follow.notified().await;
                let _ = tx.send(Bytes::from_static(b"second line\n")).await;
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                let b = rx.recv().await?;
                Some((Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            Response::new(Box::pin(StreamBody::new(stream)) as Body)
        }
        ["containerLogs", _, pod, container] => text(
            StatusCode::OK,
            format!("log of {pod}/{container}?{query}\n"),
        ),
        ["exec", ..] if req.headers().contains_key(http::header::UPGRADE) => {
            let upgrade = req.headers()[http::header::UPGRADE].clone();
            let protocol = req.headers().get("sec-websocket-protocol").cloned();
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(up) = on.await else { return };
                let mut io = TokioIo::new(up);
                let _ = io.write_all(b"hello from kubelet\n").await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            let mut r = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
            let h = r.headers_mut();
            h.insert(http::header::CONNECTION, "Upgrade".parse().unwrap());
            h.insert(http::header::UPGRADE, upgrade);
            if let Some(p) = protocol {
                h.insert("sec-websocket-protocol", p);
            }
            h.insert("x-fake-kubelet", "yes".parse().unwrap());
            r
        }
        ["attach", ..] => text(
            StatusCode::FORBIDDEN,
            "attach refused by the fake kubelet".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "404 page not found".into()),
    }
}

/// A raw TLS connection to the API server as the admin, speaking HTTP/1.1 only.
async fn admin_connection(
    server: &Server,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tls = server.data_dir().join("server/tls");
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&tls.join("server-ca.crt")))
        .with_client_auth_cert(
            certs(&tls.join("client-admin.crt")),
            key(&tls.join("client-admin.key")),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads a response head; returns it (lower-cased) and any bytes read past it.
async fn read_head(io: &mut (impl AsyncRead + Unpin)) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            return (head, buf[end + 4..].to_vec());
        }
        let n = io.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until `want` has arrived (after `have`).
async fn read_until(io: &mut (impl AsyncRead + Unpin), mut have: Vec<u8>, want: &[u8]) -> Vec<u8> {
    let mut chunk = [0u8; 1024];
    while !have.windows(want.len()).any(|w| w == want) {
        let n = io.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "stream closed; got {:?}",
            String::from_utf8_lossy(&have)
        );
        have.extend_from_slice(&chunk[..n]);
    }
    have
}

async fn upgrade_request(
    server: &Server,
    method: &str,
    path: &str,
    upgrade: &str,
) -> (String, Vec<u8>, impl AsyncRead + AsyncWrite + Unpin) {
    let mut io = admin_connection(server).await;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\n\
         Upgrade: {upgrade}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\
         X-Stream-Protocol-Version: v5.channel.k8s.io\r\n\r\n",
        port = server.port
    );
    io.write_all(req.as_bytes()).await.unwrap();
    let (head, rest) = read_head(&mut io).await;
    (head, rest, io)
}

fn pod_yaml(name: &str, node: Option<&str>, init: &[&str], containers: &[&str]) -> String {
    let list = |names: &[&str]| -> String {
        names
            .iter()
            .map(|n| format!("  - name: {n}\n    image: busybox\n"))
            .collect()
    };
    let mut y = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n");
    if containers.len() > 1 {
        // kubectl reads this; the server does not.
        y.push_str("  annotations:\n    kubectl.kubernetes.io/default-container: b\n");
    }
    y.push_str("spec:\n");
    if let Some(n) = node {
        y.push_str(&format!("  nodeName: {n}\n"));
    }
    if !init.is_empty() {
        y.push_str(&format!("  initContainers:\n{}", list(init)));
    }
    y.push_str(&format!("  containers:\n{}", list(containers)));
    y
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Issues the embedded agent's files from the server's CAs into `<test dir>/<name>`.
fn agent_files(server: &Server, tls_dir: &Path, name: &str) -> std::path::PathBuf {
    let dir = server.dir.path().join(name);
    k3rs::server::pki::write_local_agent_files(
        tls_dir,
        &dir,
        NODE,
        &["127.0.0.1".parse::<IpAddr>().unwrap()],
        &format!("https://127.0.0.1:{}", server.port),
    )
    .unwrap();
    dir
}

/// Registers a Node whose kubelet listens on 127.0.0.1:`port`.
fn register_node(server: &Server, name: &str, port: u16) {
    server
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"),
        )
        .ok();
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"Hostname","address":"{name}"}},{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    server
        .kubectl(&[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])
        .ok();
}

#[test]
fn logs_exec_and_attach_reach_the_kubelet() {
    let server = Server::start();
    let rt = runtime();
    // The fake kubelet's certificates come from the server's CAs, as the embedded agent's do.
    let agent_dir = agent_files(&server, &server.data_dir().join("server/tls"), "agent");
    let seen = Arc::new(Seen::default());
    let port = start_kubelet(&rt, &agent_dir, &agent_dir, seen.clone());
    register_node(&server, NODE, port);
    let pods = [
        pod_yaml("web", Some(NODE), &[], &["app"]),
        pod_yaml("multi", Some(NODE), &["waiting"], &["a", "b"]),
        pod_yaml("pending", None, &[], &["app"]),
    ]
    .join("---\n");
    server.kubectl_stdin(&["apply", "-f", "-"], &pods).ok();

    // kubectl logs: the kubelet's body, with the options passed on in upstream's spelling.
    let out = server.kubectl(&["logs", "web", "--tail=5", "--timestamps"]);
    assert_eq!(out.ok(), "log of web/app?tailLines=5&timestamps=true\n");

    // Several containers: the server wants a name and lists them all (init first) ...
    let raw = server.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/multi/log"]);
    assert!(
        raw.err().contains(
            "Error from server (BadRequest): a container name must be specified for pod multi, choose one of: [waiting a b]"
        ),
        "{}",
        raw.stderr
    );
    // ... while kubectl itself picks the annotated default container.
    let out = server.kubectl(&["logs", "multi"]);
    assert_eq!(out.ok(), "log of multi/b?\n");
    let out = server.kubectl(&["logs", "web", "-c", "nope"]);
    assert!(
        out.err()
            .contains("container nope is not valid for pod web"),
        "{}",
        out.stderr
    );
    // A kubelet error becomes a Status with its text.
    let out = server.kubectl(&["logs", "multi", "-c", "waiting"]);
    assert!(
        out.err().contains(
            "Error from server (BadRequest): container \"waiting\" in pod \"multi\" is waiting to start: ContainerCreating"
        ),
        "{}",
        out.stderr
    );
    // No node yet: logs are empty (upstream answers 204); exec is refused with upstream's words.
    assert_eq!(server.kubectl(&["logs", "pending"]).ok(), "");
    let out = server.kubectl(&["exec", "pending", "--", "ls"]);
    assert!(
        out.err()
            .contains("pod pending does not have a host assigned"),
        "{}",
        out.stderr
    );
    let raw = server.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/web/exec?command=ls&stdout=true",
    ]);
    assert!(
        raw.err().contains("Upgrade request required"),
        "{}",
        raw.stderr
    );

    // kubectl logs -f shows a line while the stream is still open.
    let follow_out = server.dir.path().join("follow.txt");
    let mut follow = server.kubectl_background(&["logs", "-f", "web"], &follow_out);
    let read = || std::fs::read_to_string(&follow_out).unwrap_or_default();
    assert!(
        eventually(60, || read().contains("first line of web/app")),
        "no first line: {}",
        read()
    );
    assert!(
        follow.try_wait().unwrap().is_none(),
        "kubectl logs -f ended early: {}",
        read()
    );
    assert!(!read().contains("second line"));
    seen.release_follow.notify_one();
    let status = follow.wait().unwrap();
    assert!(status.success(), "{}", read());
    assert_eq!(read(), "first line of web/app\nsecond line\n");

    rt.block_on(async {
        // An upgrade: 101 with the kubelet's headers, then bytes both ways.
        let (head, rest, mut io) = upgrade_request(
            &server,
            "GET",
            "/api/v1/namespaces/default/pods/web/exec?command=echo&command=hi%20there&stdout=true&stderr=true",
            "websocket",
        )
        .await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("sec-websocket-protocol: v5.channel.k8s.io"), "{head}");
        assert!(head.contains("x-fake-kubelet: yes"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        let got = read_until(&mut io, rest, b"hello from kubelet\n").await;
        assert_eq!(got, b"hello from kubelet\n");
        for msg in [&b"ping\n"[..], &[0u8, 1, 2, 255][..]] {
            io.write_all(msg).await.unwrap();
            assert_eq!(read_until(&mut io, Vec::new(), msg).await, msg);
        }
        drop(io);

        // A refused upgrade passes the kubelet's status and body back (kubectl falls back
        // from WebSocket to SPDY on that).
        let (head, rest, mut io) = upgrade_request(
            &server,
            "POST",
            "/api/v1/namespaces/default/pods/web/attach?stdout=true",
            "SPDY/3.1",
        )
        .await;
        assert!(head.starts_with("http/1.1 403"), "{head}");
        let body = read_until(&mut io, rest, b"attach refused by the fake kubelet").await;
        assert!(String::from_utf8_lossy(&body).ends_with("attach refused by the fake kubelet"));
    });

    let uris = seen.uris.lock().unwrap().clone();
    assert!(
        uris.contains(
            &"/exec/default/web/app?command=echo&command=hi%20there&stderr=1&stdout=1".to_string()
        ),
        "{uris:?}"
    );
    assert!(
        uris.contains(&"/containerLogs/default/web/app?follow=true".to_string()),
        "{uris:?}"
    );
    // Every connection to the kubelet carried the API server's kubelet client certificate.
    let clients = seen.clients.lock().unwrap().clone();
    assert!(!clients.is_empty());
    for (cn, groups) in clients {
        assert_eq!(cn, "system:apiserver");
        assert_eq!(groups, vec!["system:masters".to_string()]);
    }
}

#[test]
fn kubelet_with_a_certificate_from_another_ca_is_refused() {
    let server = Server::start();
    let rt = runtime();
    let agent_dir = agent_files(&server, &server.data_dir().join("server/tls"), "agent");
    // Another cluster's CA signs this kubelet's serving certificate; it still accepts the
    // server's client certificate, so only the server's check of the kubelet can refuse.
    let foreign_tls = server.dir.path().join("foreign-tls");
    k3rs::server::pki::ensure(&foreign_tls, &Default::default()).unwrap();
    let foreign = agent_files(&server, &foreign_tls, "foreign-agent");
    let seen = Arc::new(Seen::default());
    let port = start_kubelet(&rt, &foreign, &agent_dir, seen.clone());
    register_node(&server, NODE, port);
    server
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &pod_yaml("web", Some(NODE), &[], &["app"]),
        )
        .ok();

    let out = server.kubectl(&["logs", "web"]);
    assert!(out.err().contains("certificate"), "{}", out.stderr);
    assert!(seen.uris.lock().unwrap().is_empty());
    // kubectl's --insecure-skip-tls-verify-backend skips exactly that check.
    let out = server.kubectl(&["logs", "web", "--insecure-skip-tls-verify-backend"]);
    assert_eq!(out.ok(), "log of web/app?\n");
}
