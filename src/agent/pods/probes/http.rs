//! The httpGet probe, as the kubelet does it: a GET to `scheme://host:port/path` (host:
//! the pod's IP unless set), upstream's default headers (`User-Agent: kube-probe/1.35`,
//! `Accept: */*`) overridable by the probe's, no keep-alive, HTTPS without certificate
//! verification; 200–399 is success; redirects to the same host are followed (at most
//! 10), a redirect elsewhere ends the probe with a warning (still a success).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::HTTPGetAction;
use tokio::io::{AsyncRead, AsyncWrite};

use super::net::{self, PodNet};
use super::Outcome;

/// The User-Agent upstream's kubelet sends (kube-probe/<major>.<minor>).
pub const USER_AGENT: &str = "kube-probe/1.35";
/// Redirects followed before giving up, like Go's client.
const MAX_REDIRECTS: usize = 10;
/// How much of a body goes into a warning message.
const MAX_BODY: usize = 10 * 1024;

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    https: bool,
    /// The host as written in the URL (an IP or a name).
    host: String,
    port: u16,
    /// Path and query, starting with '/'.
    path: String,
}

impl Target {
    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let host = match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }

    /// Where a redirect's Location leads from here.
    fn follow(&self, location: &str) -> Option<Target> {
        let uri: http::Uri = location.parse().ok()?;
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(auth)) => {
                let https = scheme.eq_ignore_ascii_case("https");
                Some(Target {
                    https,
                    host: auth
                        .host()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    port: auth.port_u16().unwrap_or(if https { 443 } else { 80 }),
                    path,
                })
            }
            _ if location.starts_with('/') => Some(Target {
                path,
                ..self.clone()
            }),
            _ => {
                // A relative reference: resolved against the current path's directory.
                let base = self.path.split('?').next().unwrap_or("/");
                let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
                Some(Target {
                    path: format!("{}{location}", if dir.is_empty() { "/" } else { dir }),
                    ..self.clone()
                })
            }
        }
    }
}

/// Runs the httpGet probe `action` against `port` (already resolved from a name).
pub async fn probe_http(
    net: &PodNet,
    action: &HTTPGetAction,
    port: u16,
    timeout: Duration,
) -> Outcome {
    let explicit_host = action.host.as_deref().filter(|h| !h.is_empty());
    let mut path = action.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let target = Target {
        https: action
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")),
        host: explicit_host.map_or_else(|| net.default_host().to_string(), str::to_string),
        port,
        path,
    };
    // An explicit host is reached from the node, as the kubelet does; the pod's own
    // address from inside its namespace (it may have loopback only).
    let netns = if explicit_host.is_some() {
        None
    } else {
        net.netns.clone()
    };
    let headers: Vec<(String, String)> = action
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let url = target.url();
    match tokio::time::timeout(timeout, run(netns.as_deref(), target, &headers, timeout)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failure(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

async fn run(
    netns: Option<&std::path::Path>,
    mut target: Target,
    headers: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    let first_host = target.host.clone();
    for _ in 0..=MAX_REDIRECTS {
        let url = target.url();
        let (response, _conn) = match request(netns, &target, headers, timeout).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failure(format!("Get {url:?}: {e}")),
        };
        let status = response.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let next = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| target.follow(l));
            match next {
                Some(next) if next.host == first_host => {
                    target = next;
                    continue;
                }
                Some(_) => {
                    let body = read_body(response).await;
                    return Outcome::Warning(format!(
                        "Probe terminated redirects, Response body: {body}"
                    ));
                }
                None => {}
            }
        }
        let code = status.as_u16();
        return if (200..400).contains(&code) {
            Outcome::Success
        } else {
            Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    Outcome::Failure(format!(
        "Get {:?}: stopped after {MAX_REDIRECTS} redirects",
        target.url()
    ))
}

async fn read_body(response: Response<Incoming>) -> String {
    let mut body = response.into_body();
    let mut out = Vec::new();
    while out.len() < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    out.truncate(MAX_BODY);
    String::from_utf8_lossy(&out).into_owned()
}

/// One request: its response, and the task driving the connection.
async fn request(
    netns: Option<&std::path::Path>,
    target: &Target,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(Response<Incoming>, ConnTask), String> {
    let addr: SocketAddr = net::resolve(&target.host, target.port).await?;
    let stream = net::connect(netns, addr, timeout).await?;
    let authority = match addr.ip() {
        IpAddr::V6(_) if target.host.parse::<IpAddr>().is_ok() => {
            format!("[{}]:{}", target.host, target.port)
        }
        _ => format!("{}:{}", target.host, target.port),
    };
    let mut req = Request::get(target.path.as_str()).header(http::header::HOST, &authority);
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("user-agent") {
        req = req.header(http::header::USER_AGENT, USER_AGENT);
    }
    if !has("accept") {
        req = req.header(http::header::ACCEPT, "*/*");
    }
    req = req.header(http::header::CONNECTION, "close");
    let mut req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid request: {e}"))?;
    for (name, value) in headers {
        let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) else {
            return Err(format!("invalid header {name:?}"));
        };
        // The probe's own Host, User-Agent or Accept replaces the default.
        req.headers_mut().insert(n, v);
    }
    if target.https {
        let server_name = match target.host.parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            Err(_) => rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("invalid host {:?}: {e}", target.host))?,
        };
        let tls = tokio_rustls::TlsConnector::from(tls_config()?)
            .connect(server_name, stream)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        exchange(tls, req).await
    } else {
        exchange(stream, req).await
    }
}

/// The task driving a probe's connection; aborted when the probe is done with it, so
/// that a server that never closes leaves nothing behind.
struct ConnTask(tokio::task::JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `req` over `io`; the response, and the connection task its body needs.
async fn exchange<S>(
    io: S,
    req: Request<Empty<Bytes>>,
) -> Result<(Response<Incoming>, ConnTask), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let task = ConnTask(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let response = sender.send_request(req).await.map_err(|e| {
        if e.is_incomplete_message() || e.is_closed() {
            "EOF".to_string()
        } else {
            e.to_string()
        }
    })?;
    Ok((response, task))
}

/// HTTPS probes skip certificate verification, as upstream's do.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = crate::tls::provider();
            let verifier = crate::tls::SkipServerVerification::new(provider.clone());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    Arc::new(
                        b.dangerous()
                            .with_custom_certificate_verifier(verifier)
                            .with_no_client_auth(),
                    )
                })
                .map_err(|e| format!("tls: {e}"))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tiny HTTP server: answers each request by `respond(path)`; returns the port
    /// and a receiver of the raw requests it saw.
    async fn serve(
        respond: fn(&str) -> String,
    ) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let _ = tx.send(head);
                    let _ = s.write_all(respond(&path).as_bytes()).await;
                });
            }
        });
        (port, rx)
    }

    fn action(path: &str, port: u16) -> HTTPGetAction {
        HTTPGetAction {
            path: Some(path.into()),
            port: k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port.into()),
            ..Default::default()
        }
    }

    fn reply(path: &str) -> String {
        let (status, extra) = match path {
            "/ok" => ("200 OK", ""),
            "/fail" => ("500 Internal Server Error", ""),
            "/moved" => ("302 Found", "Location: /ok\r\n"),
            "/away" => ("302 Found", "Location: http://192.0.2.1:9/x\r\n"),
            "/loop" => ("302 Found", "Location: /loop\r\n"),
            _ => ("404 Not Found", ""),
        };
        format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 4\r\nConnection: close\r\n\r\nbody")
    }

    #[tokio::test]
    async fn statuses_redirects_and_headers() {
        let (port, mut seen) = serve(reply).await;
        let net = PodNet::default();
        let t = Duration::from_secs(2);
        assert_eq!(
            probe_http(&net, &action("ok", port), port, t).await,
            Outcome::Success
        );
        let head = seen.recv().await.expect("request");
        assert!(head.starts_with("GET /ok HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("user-agent: kube-probe/1.35"), "{head}");
        assert!(head.contains(&format!("host: 127.0.0.1:{port}")), "{head}");
        assert_eq!(
            probe_http(&net, &action("/fail", port), port, t).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            probe_http(&net, &action("/moved", port), port, t).await,
            Outcome::Success
        );
        assert_eq!(
            probe_http(&net, &action("/away", port), port, t).await,
            Outcome::Warning("Probe terminated redirects, Response body: body".into())
        );
        assert_eq!(
            probe_http(&net, &action("/loop", port), port, t).await,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/loop\": stopped after 10 redirects"
            ))
        );
        let mut with_headers = action("/ok", port);
        with_headers.http_headers = Some(vec![k8s_openapi::api::core::v1::HTTPHeader {
            name: "Host".into(),
            value: "example.test".into(),
        }]);
        while seen.try_recv().is_ok() {}
        probe_http(&net, &with_headers, port, t).await;
        let head = seen.recv().await.expect("request");
        assert!(head.contains("host: example.test\r\n"), "{head}");
    }

    #[tokio::test]
    async fn refused_and_timed_out_read_like_upstream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let net = PodNet::default();
        // Accepted but never answered: the timeout message.
        let out = probe_http(&net, &action("/", port), port, Duration::from_millis(300)).await;
        assert_eq!(
            out,
            Outcome::Failure(format!("Get \"http://127.0.0.1:{port}/\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"))
        );
        drop(listener);
        // A closed port: refused. (Tests run in parallel, so another test may bind the
        // freed port in between; then try a freshly closed one.)
        let mut port = port;
        let mut out = probe_http(&net, &action("/", port), port, Duration::from_secs(1)).await;
        for _ in 0..5 {
            if out
                != Outcome::Failure(format!(
                    "Get \"http://127.0.0.1:{port}/\": connection error"
                ))
            {
                break;
            }
            port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            out = probe_http(&net, &action("/", port), port, Duration::from_secs(1)).await;
        }
        assert_eq!(
            out,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }

    #[test]
    fn locations_resolve_against_the_current_target() {
        let t = Target {
            https: false,
            host: "10.0.0.5".into(),
            port: 8080,
            path: "/a/b?x=1".into(),
        };
        assert_eq!(t.follow("/c").map(|n| n.path), Some("/c".into()));
        assert_eq!(t.follow("c").map(|n| n.path), Some("/a/c".into()));
        let abs = t.follow("https://10.0.0.5/z").expect("absolute");
        assert!(abs.https);
        assert_eq!((abs.port, abs.path.as_str()), (443, "/z"));
        assert_eq!(t.url(), "http://10.0.0.5:8080/a/b?x=1");
    }
}
