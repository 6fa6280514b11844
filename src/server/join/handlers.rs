//! The `/v1-k3rs/*` handlers: authentication of the caller, then config, CA certificates,
//! CSR signing with the node password check, readyz and token rotation. Every malformed input
//! is a 4xx; nothing here panics on what a client sends.

use std::net::IpAddr;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

use super::password;
use super::sign::{CaSigner, Issue, SignError};
use super::token::{StoredBootstrapToken, BOOTSTRAP_NAMESPACE, NODE_USER};
use super::{parse_node_ips, JoinState, NODE_IP_HEADER, NODE_NAME_HEADER, NODE_PASSWORD_HEADER};
use crate::api::resources;
use crate::api::status::ApiError;
use crate::server::bootstrap::{constant_time_eq, SERVER_USER};
use crate::server::http::auth::Identity;
use crate::server::http::body::{error_response, json_response, text_response, Resp};
use crate::server::registry::{DeleteOptions, WriteOptions};

/// Who is calling, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Caller {
    /// The server token.
    Server,
    /// The agent token (or the server token with user `node`).
    Node,
    /// A bootstrap token (its id).
    Bootstrap(String),
    /// A kubelet client certificate of this node name (renewal).
    NodeCert(String),
    /// An admin client certificate (system:masters).
    Admin,
}

/// One request to `/v1-k3rs/*`, body already read (at most the API's body limit).
#[allow(clippy::too_many_arguments)] // the request parts, kept apart so tests need no hyper body
pub async fn handle_request(
    state: &JoinState,
    ready: bool,
    identity: Option<&Identity>,
    peer: IpAddr,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Resp {
    let route = path.strip_prefix(super::PREFIX).unwrap_or("");
    let caller = match authenticate(state, identity, peer, headers).await {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let result = match (method, route) {
        (&Method::GET, "readyz") => Ok(if ready {
            text_response(StatusCode::OK, "ok")
        } else {
            text_response(StatusCode::SERVICE_UNAVAILABLE, "server is not ready")
        }),
        (&Method::GET, "config") => Ok(json_response(
            StatusCode::OK,
            &serde_json::to_value(&state.cluster).unwrap_or_default(),
        )),
        (&Method::GET, "server-ca.crt") => Ok(pem(state.server_ca_pem.clone())),
        (&Method::GET, "client-ca.crt") => CaSigner::load(&state.tls_dir, "client-ca")
            .map(|ca| pem(ca.cert_pem().to_string()))
            .map_err(|e| internal(&e)),
        (&Method::POST, "client-kubelet.crt") => {
            certificate(state, &caller, headers, &body, false).await
        }
        (&Method::POST, "serving-kubelet.crt") => {
            certificate(state, &caller, headers, &body, true).await
        }
        (_, "client-kubelet.crt" | "serving-kubelet.crt") => Err(ApiError::bad_request(
            "POST a PEM-encoded certificate signing request to this endpoint",
        )),
        (&Method::PUT, "token") => rotate_token(state, &caller, &body),
        (_, "encrypt/status" | "encrypt/config")
            if !matches!(caller, Caller::Server | Caller::Admin) =>
        {
            Err(forbidden(
                "only the server token or an admin certificate may manage secrets encryption",
            ))
        }
        (&Method::GET, "encrypt/status") => Ok(crate::server::encryption::http::status(
            state.encryption.as_ref(),
        )),
        (&Method::PUT, "encrypt/config") => {
            crate::server::encryption::http::config(state.encryption.as_ref(), &body).await
        }
        _ => Err(ApiError::no_route()),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

fn pem(s: String) -> Resp {
    crate::server::http::body::bytes_response(StatusCode::OK, "application/x-pem-file", s)
}

/// A 403 with exactly `message` (agents print it as it is).
fn forbidden(message: impl Into<String>) -> ApiError {
    let mut e = ApiError::forbidden("", "", "", "");
    e.message = message.into();
    e.details = None;
    e
}

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "join endpoint failed");
    ApiError::internal(e.to_string())
}

/// Authenticates the request; slow for addresses that keep failing.
async fn authenticate(
    state: &JoinState,
    identity: Option<&Identity>,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if auth.is_none() {
        // A client certificate of the cluster's client CA.
        if let Some(id) = identity {
            if id.groups.iter().any(|g| g == "system:masters") {
                return Ok(Caller::Admin);
            }
            if let Some(node) = id.user.strip_prefix("system:node:") {
                if id.groups.iter().any(|g| g == "system:nodes") && !node.is_empty() {
                    return Ok(Caller::NodeCert(node.to_string()));
                }
            }
        }
        return Err(ApiError::unauthorized());
    }
    let delay = state.limiter.delay(peer, Instant::now());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let caller = check_credentials(state, auth.unwrap_or_default()).await?;
    match caller {
        Some(c) => {
            state.limiter.success(peer);
            Ok(c)
        }
        None => {
            state.limiter.failure(peer, Instant::now());
            tracing::info!(%peer, "join request with invalid credentials refused");
            Err(ApiError::unauthorized())
        }
    }
}

/// Ok(None) for wrong credentials; Err only for a store failure.
async fn check_credentials(state: &JoinState, auth: &str) -> Result<Option<Caller>, ApiError> {
    let (scheme, value) = auth.split_once(' ').unwrap_or((auth, ""));
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let Some(decoded) = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return Ok(None);
        };
        let Some((user, secret)) = decoded.split_once(':') else {
            return Ok(None);
        };
        let server_ok = constant_time_eq(secret.as_bytes(), state.server_secret().as_bytes());
        return Ok(match user {
            SERVER_USER if server_ok => Some(Caller::Server),
            NODE_USER => {
                let agent_ok = state
                    .agent_secret
                    .as_ref()
                    .is_some_and(|a| constant_time_eq(secret.as_bytes(), a.as_bytes()));
                (agent_ok || server_ok).then_some(Caller::Node)
            }
            _ => None,
        });
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let Some(given) = super::token::BootstrapToken::parse(value) else {
            return Ok(None);
        };
        let Some(secrets) = resources::find("", "v1", "secrets") else {
            return Err(ApiError::internal("the secrets resource is missing"));
        };
        let stored = match state
            .registry
            .get(secrets, BOOTSTRAP_NAMESPACE, &given.secret_name())
            .await
        {
            Ok(obj) => obj.value()?,
            Err(e) if e.code == 404 => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(token) = StoredBootstrapToken::from_secret(&stored) else {
            return Ok(None);
        };
        let now = jiff::Timestamp::now();
        if token.expired(now) {
            // Expired tokens are removed, like upstream's token cleaner does.
            tracing::info!(id = %token.id, "deleting expired bootstrap token");
            let _ = state
                .registry
                .delete(
                    secrets,
                    BOOTSTRAP_NAMESPACE,
                    &given.secret_name(),
                    &DeleteOptions::default(),
                )
                .await;
            return Ok(None);
        }
        return Ok(token
            .authenticates(&given, now)
            .then(|| Caller::Bootstrap(token.id.clone())));
    }
    Ok(None)
}

/// Signs a kubelet client or serving certificate after the node password check.
async fn certificate(
    state: &JoinState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    serving: bool,
) -> Result<Resp, ApiError> {
    if matches!(caller, Caller::Admin) {
        return Err(forbidden(
            "node certificates are issued only to nodes (token or kubelet certificate)",
        ));
    }
    let header = |name: &str| -> Result<Option<String>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| ApiError::bad_request(format!("header {name} is not valid text"))),
        }
    };
    let node = header(NODE_NAME_HEADER)?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("the K3rs-Node-Name header is required"))?;
    if !super::valid_node_name(&node) {
        return Err(ApiError::bad_request(format!(
            "K3rs-Node-Name {node:?} is not a valid node name"
        )));
    }
    if let Caller::NodeCert(cert_node) = caller {
        if *cert_node != node {
            return Err(forbidden(format!(
                "a certificate of node {cert_node} cannot request certificates for node {node}"
            )));
        }
    }
    let pw = header(NODE_PASSWORD_HEADER)?
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("the K3rs-Node-Password header is required"))?;
    let ips = match header(NODE_IP_HEADER)? {
        Some(v) => parse_node_ips(&v).ok_or_else(|| {
            ApiError::bad_request("K3rs-Node-IP must be comma-separated IP addresses")
        })?,
        None => Vec::new(),
    };
    // Check the CSR before touching the password Secret, so garbage leaves no trace.
    let (ca_name, what) = if serving {
        (
            "server-ca",
            Issue::KubeletServing {
                node: node.clone(),
                ips,
            },
        )
    } else {
        ("client-ca", Issue::KubeletClient { node: node.clone() })
    };
    let ca = CaSigner::load(&state.tls_dir, ca_name).map_err(|e| internal(&e))?;
    // Parse and check first (cheap, and refuses garbage before the slow password hash).
    let chain = match ca.sign(body, &what) {
        Ok(c) => c,
        Err(SignError::BadCsr(m)) => return Err(ApiError::bad_request(m)),
        Err(e) => return Err(internal(&e)),
    };
    verify_node_password(state, &node, &pw).await?;
    tracing::info!(node = %node, kind = if serving { "serving" } else { "client" }, "issued kubelet certificate");
    Ok(pem(chain))
}

/// k3s's node password rule: the first request for a name stores the hash; later ones must
/// match it.
async fn verify_node_password(state: &JoinState, node: &str, pw: &str) -> Result<(), ApiError> {
    let Some(secrets) = resources::find("", "v1", "secrets") else {
        return Err(ApiError::internal("the secrets resource is missing"));
    };
    let name = password::secret_name(node);
    let rejected = || forbidden(password::REJECTED_MESSAGE);
    for _ in 0..3 {
        match state.registry.get(secrets, "kube-system", &name).await {
            Ok(obj) => {
                let stored = password::hash_from_secret(&obj.value()?).unwrap_or_default();
                let pw = pw.to_string();
                let ok = tokio::task::spawn_blocking(move || password::verify(&pw, &stored))
                    .await
                    .unwrap_or(false);
                return if ok { Ok(()) } else { Err(rejected()) };
            }
            Err(e) if e.code == 404 => {
                let pw2 = pw.to_string();
                let hash = tokio::task::spawn_blocking(move || password::hash(&pw2))
                    .await
                    .map_err(|e| internal(&e))?
                    .map_err(|_| ApiError::internal("no randomness available"))?;
                let secret = password::to_secret(node, &hash);
                match state
                    .registry
                    .create(secrets, "kube-system", secret, &WriteOptions::default())
                    .await
                {
                    Ok(_) => return Ok(()),
                    // Another request for the same name won the race: check against it.
                    Err(e) if e.code == 409 => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(rejected())
}

/// `PUT /v1-k3rs/token` `{"token": "<new secret>"}`: replaces the server token's secret.
/// Nodes that joined keep working with their certificates.
fn rotate_token(state: &JoinState, caller: &Caller, body: &[u8]) -> Result<Resp, ApiError> {
    if !matches!(caller, Caller::Server | Caller::Admin) {
        return Err(forbidden(
            "only the server token or an admin certificate may rotate the token",
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request("the body must be JSON {\"token\": \"<new secret>\"}")
    })?;
    let given = v["token"]
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("the body must be JSON {\"token\": \"<new secret>\"}")
        })?;
    let parsed = crate::server::bootstrap::parse_token(given)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if parsed.secret.contains(char::is_whitespace) || parsed.secret.len() < 8 {
        return Err(ApiError::bad_request(
            "the new token secret must be at least 8 characters without spaces",
        ));
    }
    let full = crate::server::bootstrap::full_token(&state.server_ca_pem, &parsed.secret);
    let path = state.server_dir.join(crate::server::bootstrap::TOKEN_FILE);
    crate::server::pki::write_private(&path, format!("{full}\n").as_bytes(), 0o600)
        .map_err(|e| internal(&e))?;
    *state
        .server_secret
        .write()
        .unwrap_or_else(|e| e.into_inner()) = parsed.secret;
    tracing::info!("server token rotated");
    Ok(json_response(StatusCode::OK, &json!({"token": full})))
}
