//! The HTTPS API listener: TLS with optional client certificates, HTTP/2 and HTTP/1.1 on
//! one port, routing to discovery, health, OpenAPI, the generic resource handlers and the
//! proxy to kubelets, and graceful shutdown.

pub mod auth;
pub mod body;
mod convert;
pub mod discovery;
pub mod handlers;
pub mod openapi;
pub mod openapi_v2;
pub mod proxy;
pub mod request;
pub mod reviews;
mod subresources;
pub mod table;
pub mod token_review;
pub mod watch;

use crate::api::status::ApiError;
use crate::server::registry::Registry;
use auth::Identity;
use body::{bytes_response, error_response, json_bytes, json_response, text_response, Resp};
use http::{header, HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use request::{Query, Route};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch as tokio_watch;
use tokio_rustls::TlsAcceptor;

/// Shared state of the API handlers.
pub struct AppState {
    /// The generic registry over the store.
    pub registry: Registry,
    /// PEM of the server CA, served at /cacerts.
    pub ca_pem: String,
    /// host:port clients should use (legacy discovery's serverAddressByClientCIDRs).
    pub server_address: String,
    /// Flips to true when the server shuts down; long requests (watches) end.
    pub shutdown: tokio_watch::Receiver<bool>,
    /// True once start-up finished (readyz).
    pub ready: AtomicBool,
    /// TLS settings for the proxy to kubelets (logs, exec, attach, port-forward).
    pub kubelet_client: proxy::KubeletClient,
    /// The authentication chain (client certificate, bearer tokens, anonymous).
    pub authn: auth::Authenticator,
    /// RBAC and the node authorizer.
    pub authz: Arc<crate::server::rbac::Authorizer>,
    /// The node bootstrap endpoints (`/v1-k3rs/*`).
    pub join: Arc<crate::server::join::JoinState>,
    /// Service-account token signing (TokenRequest) and the CSR signers' CAs.
    pub service_accounts: Arc<crate::server::serviceaccount::ServiceAccounts>,
    /// The latest kubelet summaries behind `metrics.k8s.io`.
    pub resource_metrics: Arc<crate::server::metrics::ResourceMetrics>,
}

/// Accepts connections until `shutdown` flips, then waits (bounded) for open requests.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    mut shutdown: tokio_watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let identity = auth::from_peer_certificates(tls.get_ref().1.peer_certificates());
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let identity = identity.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(handle(state, identity, peer.ip(), req).await)
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .max_concurrent_streams(1000)
                .keep_alive_interval(Some(Duration::from_secs(30)));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within 10s");
    }
}

/// Routes one request.
async fn handle(
    state: Arc<AppState>,
    identity: Option<Identity>,
    peer: std::net::IpAddr,
    req: Request<Incoming>,
) -> Resp {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = Query::parse(parts.uri.query());
    let method = parts.method.clone();
    let labels = crate::server::metrics::apiserver::labels(&method, &path, &query);
    let mut resp = if crate::server::join::is_join_path(&path) {
        // The bootstrap endpoints authenticate the token themselves.
        match body::read_body(body, None).await {
            Ok(bytes) => {
                crate::server::join::handle_request(
                    &state.join,
                    state.ready.load(Ordering::Relaxed),
                    identity.as_ref(),
                    peer,
                    &parts.method,
                    &path,
                    &parts.headers,
                    bytes,
                )
                .await
            }
            Err(e) => error_response(&e),
        }
    } else {
        route(&state, identity, parts, &path, query, body).await
    };
    resp.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache, private"));
    if let Some(labels) = labels {
        crate::server::metrics::apiserver::observe(
            labels,
            resp.status().as_u16(),
            started.elapsed(),
        );
    }
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}

async fn route(
    state: &Arc<AppState>,
    identity: Option<Identity>,
    parts: http::request::Parts,
    path: &str,
    query: Query,
    body: Incoming,
) -> Resp {
    let who = match state
        .authn
        .authenticate(identity.as_ref(), &parts.headers)
        .await
    {
        Ok(who) => who,
        Err(e) => return error_response(&e),
    };
    if auth::is_public_path(path) {
        return public_endpoint(state, path, &query);
    }
    let who = match crate::server::rbac::impersonate::impersonate(&state.authz, who, &parts.headers)
    {
        Ok(who) => who,
        Err(e) => return error_response(&e),
    };
    let route = request::route(&parts.method, path, &query);
    let authorized = match &route {
        Route::Resource(info) => auth::authorize(&state.authz, &who, info),
        _ => auth::authorize_path(&state.authz, &who, &parts.method, path),
    };
    if let Err(e) = authorized {
        return error_response(&e);
    }
    if is_health_or_version(path) {
        return public_endpoint(state, path, &query);
    }
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match route {
        Route::RootDiscovery { legacy_core } => {
            let agg = discovery::wants_aggregated(&accept);
            let (bytes, is_agg) = if legacy_core {
                discovery::api_root(agg, &state.server_address)
            } else {
                discovery::apis_root(agg)
            };
            if is_agg {
                let mut r = bytes_response(StatusCode::OK, discovery::AGGREGATED_V2, bytes);
                r.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("Accept"));
                r
            } else {
                json_bytes(StatusCode::OK, bytes)
            }
        }
        Route::GroupDiscovery { group } => match discovery::group(&group) {
            Some(v) => json_response(StatusCode::OK, &v),
            None => error_response(&ApiError::no_route()),
        },
        Route::VersionDiscovery { group, version } => match discovery::version(&group, &version) {
            Some(v) => json_response(StatusCode::OK, &v),
            None => error_response(&ApiError::no_route()),
        },
        Route::Resource(info) => {
            if crate::server::metrics::api::is_metrics_request(&info) {
                return crate::server::metrics::api::handle(state, &info, &query).await;
            }
            if proxy::is_proxied(&info) {
                return proxy::handle(state, &who, parts, &info, &query).await;
            }
            handlers::handle(
                state.clone(),
                who,
                parts.method,
                parts.headers,
                info,
                query,
                body,
            )
            .await
        }
        Route::Other if path == "/metrics" => {
            crate::server::metrics::objects::serve(state, &parts.method).await
        }
        Route::Other => other_endpoint(&parts.method, path, &query, &accept),
    }
}

fn other_endpoint(method: &Method, path: &str, query: &Query, accept: &str) -> Resp {
    if method != Method::GET {
        return error_response(&ApiError::no_route());
    }
    if path == "/openapi/v2" {
        if accept.contains("protobuf") {
            return bytes_response(
                StatusCode::OK,
                openapi_v2::PROTOBUF,
                openapi_v2::document().to_vec(),
            );
        }
        return json_response(StatusCode::OK, &openapi_v2::swagger(Default::default()));
    }
    if path == "/openapi/v3" || path == "/openapi/v3/" {
        return json_bytes(StatusCode::OK, openapi::index());
    }
    if let Some(gv) = path.strip_prefix("/openapi/v3/") {
        return match openapi::document(gv) {
            Some((body, hash)) => {
                let mut r = json_bytes(StatusCode::OK, body);
                let cc = if query.get("hash") == Some(hash) {
                    "public, immutable"
                } else {
                    "no-cache, no-store, must-revalidate"
                };
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
                if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
                    r.headers_mut().insert(header::ETAG, etag);
                }
                r
            }
            None => error_response(&ApiError::no_route()),
        };
    }
    error_response(&ApiError::no_route())
}

/// Health and version endpoints (authorized like any path; anonymous users may read them
/// through system:public-info-viewer).
fn is_health_or_version(path: &str) -> bool {
    path == "/version"
        || ["/healthz", "/livez", "/readyz"]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

fn public_endpoint(state: &Arc<AppState>, path: &str, query: &Query) -> Resp {
    match path {
        "/version" => json_response(
            StatusCode::OK,
            &json!({
                "major": crate::version::KUBE_MAJOR,
                "minor": crate::version::KUBE_MINOR,
                "emulationMajor": crate::version::KUBE_MAJOR,
                "emulationMinor": crate::version::KUBE_MINOR,
                "minCompatibilityMajor": crate::version::KUBE_MAJOR,
                "minCompatibilityMinor": "34",
                "gitVersion": crate::version::git_version(),
                "gitCommit": crate::version::git_commit(),
                "gitTreeState": "clean",
                "buildDate": option_env!("K3RS_BUILD_DATE").unwrap_or("1970-01-01T00:00:00Z"),
                "goVersion": "go1.24 (k3rs is built with Rust)",
                "compiler": "rustc",
                "platform": format!("linux/{}", std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")),
            }),
        ),
        "/cacerts" => text_response(StatusCode::OK, state.ca_pem.clone()),
        "/ping" => text_response(StatusCode::OK, "pong"),
        _ => health(state, path, query),
    }
}

/// /healthz, /livez, /readyz and their `?verbose` and per-check forms.
fn health(state: &Arc<AppState>, path: &str, query: &Query) -> Resp {
    let ready = state.ready.load(Ordering::Relaxed);
    let is_ready_check = path.starts_with("/readyz");
    let shutting_down = *state.shutdown.borrow();
    let mut checks: Vec<(&str, bool)> = vec![("ping", true), ("log", true), ("etcd", true)];
    if is_ready_check {
        checks.push(("informer-sync", ready));
        checks.push(("shutdown", !shutting_down));
    }
    checks.push(("poststarthook/start-k3rs-bootstrap", ready));
    let base = path.split('/').nth(1).unwrap_or("healthz");
    if let Some(one) = path.strip_prefix(&format!("/{base}/")) {
        return match checks.iter().find(|(n, _)| *n == one) {
            Some((_, true)) => text_response(StatusCode::OK, "ok"),
            Some((n, false)) => text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal server error: {n} check failed\n"),
            ),
            None => error_response(&ApiError::no_route()),
        };
    }
    let all_ok = checks.iter().all(|(_, ok)| *ok);
    let code = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    if query.get("verbose").is_some() || !all_ok {
        let mut s = String::new();
        for (n, ok) in &checks {
            s.push_str(&format!(
                "[{}]{n} {}\n",
                if *ok { "+" } else { "-" },
                if *ok { "ok" } else { "failed: reason withheld" }
            ));
        }
        s.push_str(&format!(
            "{base} check {}\n",
            if all_ok { "passed" } else { "failed" }
        ));
        return text_response(code, s);
    }
    text_response(code, "ok")
}
