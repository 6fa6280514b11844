//! API benchmark: starts the real `k3rs server` (built with the bench profile) on a free
//! loopback port and drives it over HTTPS/2 with the admin certificate. Prints figures;
//! it passes or fails on nothing but errors.
//!
//! Run: `cargo bench --bench api` (env `K3RS_BENCH_PODS` changes the pod count, default
//! 20000; `K3RS_BENCH_CLIENTS` the concurrency, default 16).

mod common;

use base64::Engine;
use bytes::Bytes;
use common::{pct, rss_mb};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Creds {
    server: String,
    tls: Arc<rustls::ClientConfig>,
}

fn load_creds(kubeconfig: &Path) -> Creds {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let doc: Value = serde_yaml_ng::from_str(&text).expect("kubeconfig yaml");
    let b64 = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("field"))
            .expect("base64")
    };
    let cluster = &doc["clusters"][0]["cluster"];
    let user = &doc["users"][0]["user"];
    let ca = b64(&cluster["certificate-authority-data"]);
    let cert = b64(&user["client-certificate-data"]);
    let key = b64(&user["client-key-data"]);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.expect("ca pem")).expect("ca");
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .map(|c| c.expect("cert pem"))
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&key).expect("key pem");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client auth");
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Creds {
        server: cluster["server"]
            .as_str()
            .expect("server")
            .trim_start_matches("https://")
            .to_string(),
        tls: Arc::new(cfg),
    }
}

async fn connect(c: &Creds) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(&c.server)
        .await
        .expect("connect");
    tcp.set_nodelay(true).ok();
    let tls = tokio_rustls::TlsConnector::from(c.tls.clone())
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2");
    tokio::spawn(conn);
    send
}

async fn call(
    s: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> (StatusCode, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    s.ready().await.expect("ready");
    let resp = s.send_request(req).await.expect("send");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

fn db_size_mb(dir: &Path) -> f64 {
    let db = dir.join("server/db");
    let mut total = 0u64;
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        total += std::fs::metadata(db.join(f)).map(|m| m.len()).unwrap_or(0);
    }
    total as f64 / 1024.0 / 1024.0
}

fn pod(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i:06}"), "labels": {"app": "bench", "shard": format!("s{}", i % 16)}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/bench/app:1.0", "ports": [{"containerPort": 8080}],
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}, "env": [{"name": "MODE", "value": "bench"}]}]}
    }))
    .expect("json")
}

struct ServerProc {
    child: Child,
    dir: PathBuf,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path) -> ServerProc {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_k3rs"))
        .args([
            "server",
            "--disable-agent",
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &port.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--write-kubeconfig")
        .arg(dir.join("kubeconfig.yaml"))
        .env("K3RS_CONFIG_FILE", {
            let cfg = dir.join("config.yaml");
            std::fs::write(&cfg, "# benchmark: settings come from flags\n").expect("config");
            cfg
        })
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start k3rs");
    ServerProc {
        child,
        dir: dir.join("data"),
    }
}

async fn delete_all(creds: &Creds, clients: usize, n: usize) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut s = connect(creds).await;
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < n {
                let (st, b) = call(
                    &mut s,
                    Method::DELETE,
                    &format!("/api/v1/namespaces/default/pods/pod-{i:06}"),
                    None,
                )
                .await;
                assert!(
                    st.is_success(),
                    "delete: {st} {}",
                    String::from_utf8_lossy(&b)
                );
                i += clients;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

async fn create_all(creds: &Creds, clients: usize, n: usize) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut s = connect(creds).await;
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < n {
                let (st, b) = call(
                    &mut s,
                    Method::POST,
                    "/api/v1/namespaces/default/pods",
                    Some(pod(i)),
                )
                .await;
                assert_eq!(
                    st,
                    StatusCode::CREATED,
                    "create: {}",
                    String::from_utf8_lossy(&b)
                );
                i += clients;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    start.elapsed()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes benchmarks with --list
    }
    let pods: usize = std::env::var("K3RS_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let clients: usize = std::env::var("K3RS_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = start_server(tmp.path());
    let kubeconfig = tmp.path().join("kubeconfig.yaml");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let t0 = Instant::now();
        while !kubeconfig.exists() {
            assert!(t0.elapsed() < Duration::from_secs(60), "server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let creds = load_creds(&kubeconfig);
        let mut s = loop {
            if tokio::net::TcpStream::connect(&creds.server).await.is_ok() {
                break connect(&creds).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        loop {
            let (st, _) = call(&mut s, Method::GET, "/readyz", None).await;
            if st == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("startup to ready:               {:.0} ms", t0.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = server.child.id();
        println!("idle RSS after start:           {:.1} MB", rss_mb(pid));

        let mut lat = Vec::with_capacity(1000);
        for i in 0..1000 {
            let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")}, "data": {"k": "v"}})).expect("json");
            let t = Instant::now();
            let (st, b) = call(&mut s, Method::POST, "/api/v1/namespaces/default/configmaps", Some(body)).await;
            lat.push(t.elapsed());
            assert_eq!(st, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
        }
        lat.sort();
        println!("sequential ConfigMap create:    p50 {:.2} ms, p99 {:.2} ms (1000 creates)", pct(&lat, 0.5), pct(&lat, 0.99));

        let took = create_all(&creds, clients, pods).await;
        println!("concurrent pod create:          {:.0} creates/s ({pods} pods, {clients} clients, {:.1} s)", pods as f64 / took.as_secs_f64(), took.as_secs_f64());

        let t = Instant::now();
        let (st, body) = call(&mut s, Method::GET, "/api/v1/namespaces/default/pods", None).await;
        let list_time = t.elapsed();
        assert_eq!(st, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).expect("list json");
        assert_eq!(v["items"].as_array().map(Vec::len), Some(pods));
        println!("list {pods} pods:                {:.0} ms ({:.1} MB of JSON)", list_time.as_secs_f64() * 1000.0, body.len() as f64 / 1048576.0);
        drop(v);
        println!("RSS with {pods} pods:            {:.1} MB", rss_mb(pid));
        println!("DB size with {pods} pods:        {:.1} MB", db_size_mb(&server.dir));

        delete_all(&creds, clients, pods).await;
        println!("DB size after churn round 1:    {:.1} MB", db_size_mb(&server.dir));
        for round in 2..=3 {
            create_all(&creds, clients, pods).await;
            delete_all(&creds, clients, pods).await;
            println!("DB size after churn round {round}:    {:.1} MB", db_size_mb(&server.dir));
        }
        // Give the periodic compaction a moment, then report the settled size.
        tokio::time::sleep(Duration::from_secs(15)).await;
        println!("DB size after churn, settled:   {:.1} MB", db_size_mb(&server.dir));
        println!("RSS after churn:                {:.1} MB", rss_mb(pid));
    });
}
