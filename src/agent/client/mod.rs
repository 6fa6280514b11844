//! The agent's client for the Kubernetes API: one HTTP/2 connection over TLS (client
//! certificate from a kubeconfig), reopened when it breaks, carrying every request and
//! watch the agent makes. JSON in and out; API errors come back as [`ClientError::Api`]
//! with the server's `Status` reason and message.

mod kubeconfig;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

pub use kubeconfig::{load_kubeconfig, Kubeconfig, KubeconfigError};

/// What can go wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the API server at {server}: {message}")]
    Connect { server: String, message: String },
    #[error("request to the API server failed: {0}")]
    Http(String),
    /// The server answered with an error `Status`.
    #[error("{message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("cannot decode the API server's answer: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status of an API error (0 for transport errors).
    pub fn code(&self) -> u16 {
        match self {
            ClientError::Api { code, .. } => *code,
            _ => 0,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == 404
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == 409
    }

    /// 410 Gone: a watch asked for a compacted revision; relist.
    pub fn is_gone(&self) -> bool {
        self.code() == 410
    }
}

/// How a patch body is to be read.
#[derive(Debug, Clone, Copy)]
pub enum PatchType {
    Merge,
    Strategic,
}

impl PatchType {
    fn content_type(self) -> &'static str {
        match self {
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
        }
    }
}

/// A cheap-to-clone handle on the API server.
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: Kubeconfig,
    tls: tokio_rustls::TlsConnector,
    user_agent: String,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("server", &self.inner.config.server)
            .finish()
    }
}

impl ApiClient {
    /// A client for the cluster a kubeconfig describes. Connects on first use.
    pub fn new(config: Kubeconfig, user_agent: &str) -> Result<ApiClient, KubeconfigError> {
        let tls = config.tls_config()?;
        Ok(ApiClient {
            inner: Arc::new(Inner {
                config,
                tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
                user_agent: user_agent.to_string(),
                conn: Mutex::new(None),
            }),
        })
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.inner.config.server
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let cfg = &self.inner.config;
        let err = |message: String| ClientError::Connect {
            server: cfg.server.clone(),
            message,
        };
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)),
        )
        .await
        .map_err(|_| err("connection timed out".into()))?
        .map_err(|e| err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .inner
            .tls
            .connect(cfg.server_name.clone(), tcp)
            .await
            .map_err(|e| err(format!("TLS handshake: {e}")))?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| err(format!("HTTP/2 handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "API connection closed");
            }
        });
        Ok(send)
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let mut guard = self.inner.conn.lock().await;
        if let Some(s) = guard.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let s = self.connect().await?;
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Sends one request; the response body is left to the caller (watches stream it).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let uri = format!("{}{}", self.inner.config.server, path);
        let mut attempt = 0;
        loop {
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header(http::header::ACCEPT, "application/json")
                .header(http::header::USER_AGENT, &self.inner.user_agent);
            let payload = match &body {
                Some((bytes, content_type)) => {
                    builder = builder.header(http::header::CONTENT_TYPE, *content_type);
                    Bytes::from(bytes.clone())
                }
                None => Bytes::new(),
            };
            let req = builder
                .body(Full::new(payload))
                .map_err(|e| ClientError::Http(e.to_string()))?;
            let mut sender = self.sender().await?;
            let result = async {
                sender
                    .ready()
                    .await
                    .map_err(|e| ClientError::Http(e.to_string()))?;
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| ClientError::Http(e.to_string()))
            }
            .await;
            match result {
                Ok(resp) => return Ok(resp),
                // A connection that died between uses: reconnect once.
                Err(e) if attempt == 0 => {
                    tracing::debug!(error = %e, "API request failed; reconnecting");
                    *self.inner.conn.lock().await = None;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a request and reads the whole answer as JSON (errors as `Status`).
    pub async fn request_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<T, ClientError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// GET; `Ok(None)` on 404.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ClientError> {
        match self.request_json(Method::GET, path, None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// POST a new object to a collection path.
    pub async fn create<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        object: &B,
    ) -> Result<T, ClientError> {
        let body = to_json(object)?;
        self.request_json(Method::POST, path, Some((body, "application/json")))
            .await
    }

    /// PUT an object (replace, with its resourceVersion as precondition).
    pub async fn replace<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        object: &B,
    ) -> Result<T, ClientError> {
        let body = to_json(object)?;
        self.request_json(Method::PUT, path, Some((body, "application/json")))
            .await
    }

    /// PATCH an object.
    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        kind: PatchType,
        patch: &Value,
    ) -> Result<T, ClientError> {
        let body = to_json(patch)?;
        self.request_json(Method::PATCH, path, Some((body, kind.content_type())))
            .await
    }

    /// DELETE with options (grace period, preconditions); 404 counts as done.
    pub async fn delete(&self, path: &str, options: &Value) -> Result<(), ClientError> {
        let body = to_json(options)?;
        match self
            .request_json::<Value>(Method::DELETE, path, Some((body, "application/json")))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Starts a watch (`path` carries `watch=1` and the other query parameters); events
    /// come out of the returned stream one by one.
    pub async fn watch(&self, path: &str) -> Result<WatchStream, ClientError> {
        let resp = self.send(Method::GET, path, None).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?
                .to_bytes();
            return Err(api_error(status, &bytes));
        }
        Ok(WatchStream {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }
}

fn to_json<B: Serialize>(object: &B) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(object).map_err(|e| ClientError::Decode(e.to_string()))
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = || String::from_utf8_lossy(body).trim().to_string();
    ClientError::Api {
        code: status.as_u16(),
        reason: v["reason"].as_str().unwrap_or_default().to_string(),
        message: v["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(text),
    }
}

/// One watch event.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.
    pub kind: String,
    pub object: Value,
}

/// The events of a watch, decoded from the newline-delimited JSON stream.
pub struct WatchStream {
    body: Incoming,
    buf: Vec<u8>,
}

impl WatchStream {
    /// The next event; `Ok(None)` when the server ended the watch. An `ERROR` event
    /// (e.g. 410 Gone) is returned as [`ClientError::Api`].
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let mut v: Value = serde_json::from_slice(&line)
                    .map_err(|e| ClientError::Decode(format!("watch event: {e}")))?;
                let kind = v["type"].as_str().unwrap_or_default().to_string();
                let object = v["object"].take();
                if kind == "ERROR" {
                    return Err(ClientError::Api {
                        code: object["code"].as_u64().unwrap_or(500) as u16,
                        reason: object["reason"].as_str().unwrap_or_default().to_string(),
                        message: object["message"].as_str().unwrap_or_default().to_string(),
                    });
                }
                return Ok(Some(WatchEvent { kind, object }));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Http(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Percent-encodes a query parameter value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_carry_status_reason_and_message() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"kind":"Status","reason":"NotFound","message":"pods \"x\" not found","code":404}"#,
        );
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "pods \"x\" not found");
        let e = api_error(StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(e.code(), 502);
        assert_eq!(e.to_string(), "upstream down");
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_escape("spec.nodeName=n1"), "spec.nodeName%3Dn1");
        assert_eq!(query_escape("a b/c"), "a%20b%2Fc");
    }
}
