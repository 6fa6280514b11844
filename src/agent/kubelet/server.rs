//! The kubelet endpoint's listener: TLS (client certificates verified when offered),
//! HTTP/1.1 with upgrades (hyper), who may call it (`system:masters` always; anyone else,
//! also bearer-token callers, as the API server's webhooks say: [`super::auth`]), routing
//! of upstream kubelet's paths to logs, exec, attach, port-forward, stats and metrics, and
//! graceful shutdown.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::agent::layout::{LABEL_LOG_PATH, LABEL_NETNS, LABEL_POD_UID};
use crate::agent::runtime::Runtime;
use crate::server::http::request::Query;

use super::auth::{bearer_token, request_attributes, Webhook};
use super::containers;
use super::logs::{self, Follower};
use super::portforward::{self, Target};
use super::remote::{self, Options, Transport};
use super::{attach, exec, KubeletError, ADMIN_GROUP};
use crate::server::http::auth::Identity;

/// A response body: fixed bytes or a stream fed through a channel.
pub enum Body {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl Body {
    fn text(s: impl Into<String>) -> Body {
        Body::Full(Some(Bytes::from(s.into())))
    }

    fn empty() -> Body {
        Body::Full(None)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }
}

/// The client certificate's subject CN and organizations, when one was presented.
type CertIdentity = Option<(String, Vec<String>)>;

/// [`serve_with_auth`] without webhooks: only `system:masters` certificates get in.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    runtime: Runtime,
    shutdown: watch::Receiver<bool>,
) {
    serve_with_auth(listener, tls, runtime, None, shutdown).await
}

/// Accepts connections until `shutdown` flips, then waits (bounded) for open
/// requests. Upgraded sessions (exec, port-forward) run on until they end. `webhook`
/// authenticates bearer tokens and authorizes callers outside `system:masters`.
pub async fn serve_with_auth(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    runtime: Runtime,
    webhook: Option<Arc<Webhook>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    while let Some(tcp) = next_connection(&listener, &mut shutdown).await {
        tokio::spawn(serve_one(
            acceptor.clone(),
            tcp,
            runtime.clone(),
            webhook.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("kubelet endpoint: some connections did not close within 10s");
    }
}

/// The next accepted TCP connection; `None` once shutdown was requested.
async fn next_connection(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<tokio::net::TcpStream> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some(tcp);
                }
                Err(e) => {
                    // Out of fds and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "kubelet endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return None,
        }
    }
}

/// One connection: TLS handshake (bounded), then HTTP/1.1 with upgrades whose
/// requests carry the client certificate's identity.
async fn serve_one(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    runtime: Runtime,
    webhook: Option<Arc<Webhook>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "kubelet endpoint: TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let identity: CertIdentity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| crate::server::pki::client_identity(c.as_ref()));
    let svc = hyper::service::service_fn(move |req| {
        let runtime = runtime.clone();
        let identity = identity.clone();
        let webhook = webhook.clone();
        async move { Ok::<_, Infallible>(handle(runtime, webhook, identity, req).await) }
    });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .http1_only();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "kubelet endpoint: connection ended with an error");
    }
}

fn text_response(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    let mut r = Response::new(Body::text(message));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn error_response(e: &KubeletError) -> Response<Body> {
    text_response(e.status(), e.to_string())
}

/// Who sent `req`: the certificate's identity, else the bearer token's user; `Err` is the
/// 401 (or 500 when the API server could not be asked) to answer.
async fn authenticate(
    webhook: Option<&Webhook>,
    cert: CertIdentity,
    req: &Request<Incoming>,
) -> Result<Identity, Response<Body>> {
    if let Some((user, groups)) = cert {
        return Ok(Identity {
            user,
            groups,
            ..Default::default()
        });
    }
    let unauthorized = || text_response(StatusCode::UNAUTHORIZED, "Unauthorized");
    let (Some(token), Some(webhook)) = (bearer_token(req.headers()), webhook) else {
        return Err(unauthorized());
    };
    match webhook.authenticate(token).await {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(unauthorized()),
        Err(e) => {
            tracing::warn!(error = %e, "kubelet endpoint: token review failed");
            Err(unauthorized())
        }
    }
}

/// Whether `who` may send `req`; `Err` is upstream kubelet's 403 (or a 500).
async fn authorize(
    webhook: Option<&Webhook>,
    who: &Identity,
    req: &Request<Incoming>,
) -> Result<(), Response<Body>> {
    if who.in_group(ADMIN_GROUP) {
        return Ok(());
    }
    let attrs = request_attributes(req.method(), req.uri().path());
    let allowed = match webhook {
        Some(w) => w.authorize(who, &attrs).await.map_err(|e| {
            tracing::warn!(error = %e, "kubelet endpoint: subject access review failed");
            text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "Authorization error (user={}, verb={}, resource=nodes, subresource={})",
                    who.user, attrs.verb, attrs.subresource
                ),
            )
        })?,
        None => false,
    };
    if allowed {
        return Ok(());
    }
    Err(text_response(
        StatusCode::FORBIDDEN,
        format!(
            "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
            who.user, attrs.verb, attrs.subresource
        ),
    ))
}

async fn handle(
    runtime: Runtime,
    webhook: Option<Arc<Webhook>>,
    cert: CertIdentity,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let Some(first) = segments.first().map(String::as_str) else {
        return text_response(StatusCode::NOT_FOUND, "404 page not found");
    };
    let who = match authenticate(webhook.as_deref(), cert, &req).await {
        Ok(who) => who,
        Err(resp) => return resp,
    };
    if first == "healthz" && segments.len() == 1 {
        return text_response(StatusCode::OK, "ok");
    }
    if let Err(resp) = authorize(webhook.as_deref(), &who, &req).await {
        return resp;
    }
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let result = match (first, s.len()) {
        ("containerLogs", 4) if req.method() == Method::GET => {
            container_logs(&runtime, s[1], s[2], s[3], &req).await
        }
        ("exec" | "attach", 4 | 5) => {
            let container = s[s.len() - 1];
            remote_command(runtime, first == "exec", s[1], s[2], container, req).await
        }
        ("portForward", 3 | 4) => port_forward(runtime, s[1], s[2], req).await,
        ("stats" | "metrics", 2) if req.method() == Method::GET => {
            crate::agent::metrics::endpoint::serve(&runtime, first, s[1]).await
        }
        _ => return text_response(StatusCode::NOT_FOUND, "404 page not found"),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

async fn container_logs(
    runtime: &Runtime,
    ns: &str,
    pod: &str,
    container: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, KubeletError> {
    let query = Query::parse(req.uri().query());
    let rx = logs::container_logs(runtime, ns, pod, container, &query).await?;
    let mut r = Response::new(Body::Channel(rx));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(r)
}

/// Negotiates the transport, answers 101 and runs the session once upgraded.
async fn remote_command(
    runtime: Runtime,
    is_exec: bool,
    ns: &str,
    pod: &str,
    container: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, KubeletError> {
    let query = Query::parse(req.uri().query());
    let opts = Options::parse(&query)?;
    let command: Vec<String> = query
        .all("command")
        .into_iter()
        .map(str::to_string)
        .collect();
    if is_exec && command.is_empty() {
        return Err(KubeletError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let info = containers::find_running(&runtime, ns, pod, container).await?;
    let (transport, resp) =
        remote::negotiate(req.headers(), remote::WS_PROTOCOLS, remote::SPDY_PROTOCOLS)?;
    // Attach output is the log from now on: open it before answering.
    let follower = match (is_exec, info.labels.get(LABEL_LOG_PATH)) {
        (false, Some(p)) => Follower::open(std::path::Path::new(p), true).await.ok(),
        _ => None,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "remote command upgrade failed");
                return;
            }
        };
        let io = match remote::connect(upgraded, &transport, opts).await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "remote command streams not set up");
                return;
            }
        };
        if is_exec {
            exec::run(runtime, info.id, command, opts, io).await;
        } else {
            attach::run(runtime, info, opts, follower, io).await;
        }
    });
    Ok(resp.map(|_| Body::empty()))
}

async fn port_forward(
    runtime: Runtime,
    ns: &str,
    pod: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, KubeletError> {
    let all = containers::select(runtime.list().await?, ns, pod, None)?;
    let newest = all
        .iter()
        .filter(|c| containers::is_running(c))
        .max_by_key(|c| c.created_at)
        .or_else(|| all.iter().max_by_key(|c| c.created_at))
        .ok_or_else(|| KubeletError::not_found(format!("pod {pod:?} does not exist")))?;
    let netns = newest
        .labels
        .get(LABEL_NETNS)
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from);
    let target = Target {
        pod: format!("{ns}/{pod}"),
        uid: newest
            .labels
            .get(LABEL_POD_UID)
            .cloned()
            .unwrap_or_default(),
        netns,
    };
    let (transport, resp) = remote::negotiate(
        req.headers(),
        &[portforward::WS_TUNNEL_PROTOCOL],
        &[portforward::PROTOCOL],
    )?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(u) => {
                let websocket = matches!(transport, Transport::WebSocket { .. });
                portforward::run(u, websocket, target).await;
            }
            Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
        }
    });
    Ok(resp.map(|_| Body::empty()))
}
