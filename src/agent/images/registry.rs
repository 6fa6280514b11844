//! A client for one registry endpoint, speaking the OCI distribution API v2 the way
//! containerd's resolver does: manifests (OCI and Docker schema 2, single and
//! multi-platform) by tag or digest, blobs (streamed, following redirects to
//! storage), and authentication on demand — anonymous first, then `Basic`, or the
//! `Bearer` token flow the `WWW-Authenticate` challenge describes.
//!
//! TLS trust is the system bundle plus the endpoint's `ca_file` (or no verification
//! with `insecure_skip_verify`); `cert_file`/`key_file` give a client certificate.

mod auth;
mod connect;

pub use auth::{parse_challenges, Challenge, Credentials};

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

use super::credentials::RegistryCredential;
use super::oci;
use super::registries::Endpoint;

/// The manifest types a pull accepts, most wanted first (as containerd sends them).
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, */*";
/// Manifests and configs larger than this are refused (containerd's limit).
pub const JSON_LIMIT: usize = 4 << 20;
/// How long a registry may take to answer a request (headers, not the whole body).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 8;

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 404 from the registry.
    #[error("{url}: not found")]
    NotFound { url: String },
    /// Another unexpected status (401/403 after authenticating: unauthorized).
    #[error("unexpected status from {method} request to {url}: {status}{detail}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        /// `: <registry's error message>` when it sent one.
        detail: String,
    },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("failed to fetch {kind} token from {realm}: {message}")]
    Token {
        kind: &'static str,
        realm: String,
        message: String,
        status: Option<StatusCode>,
    },
    #[error("{what} is corrupt: expected digest {expected}, got {actual}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} is larger than the {limit} bytes allowed for it")]
    TooLarge { what: String, limit: usize },
    #[error("invalid TLS settings for registry {host}: {message}")]
    Tls { host: String, message: String },
    #[error("unsupported manifest type {media_type:?} for {what} (schema 1 images are not supported; push it again with a current client)")]
    MediaType { what: String, media_type: String },
}

impl RegistryError {
    /// The registry answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// The registry (or its token service) refused our credentials or their absence.
    pub fn is_unauthorized(&self) -> bool {
        let refused =
            |s: &StatusCode| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::FORBIDDEN;
        match self {
            RegistryError::Status { status, .. } => refused(status),
            RegistryError::Token { status, .. } => status.as_ref().is_some_and(refused),
            _ => false,
        }
    }
}

/// A manifest (or index) as the registry sent it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub data: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

impl FetchedManifest {
    pub fn descriptor(&self) -> oci::Descriptor {
        oci::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.data.len() as i64,
            ..Default::default()
        }
    }
}

/// A client for one endpoint and repository.
pub struct RegistryClient {
    endpoint: Endpoint,
    http: HttpClient<connect::Connector, Full<Bytes>>,
    credentials: Credentials,
    /// The `Authorization` value that last worked (token or basic), reused until
    /// the registry asks again.
    authorization: Mutex<Option<HeaderValue>>,
}

impl RegistryClient {
    /// A client for `endpoint`; `secret` (from imagePullSecrets) wins over the
    /// endpoint's registries.yaml auth.
    pub fn new(
        endpoint: Endpoint,
        secret: Option<&RegistryCredential>,
    ) -> Result<RegistryClient, RegistryError> {
        let connector = connect::Connector::new(&endpoint)?;
        let credentials = match (secret, &endpoint.config.auth) {
            (Some(s), _) => Credentials::from_secret(s),
            (None, Some(a)) => Credentials::from_config(a),
            (None, None) => Credentials::Anonymous,
        };
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(RegistryClient {
            endpoint,
            http,
            credentials,
            authorization: Mutex::new(None),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Fetches the manifest for a tag or digest; a digest reference is verified.
    pub async fn manifest(&self, reference: &str) -> Result<FetchedManifest, RegistryError> {
        let url = self.endpoint.url("manifests", reference);
        let resp = self.get(&url, MANIFEST_ACCEPT).await?;
        let header_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let data = read_limited(resp.into_body(), JSON_LIMIT, &url).await?;
        let digest = oci::sha256_digest(&data);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(RegistryError::Digest {
                what: format!("manifest {url}"),
                expected: reference.to_string(),
                actual: digest,
            });
        }
        // The document's own mediaType is authoritative; some registries send
        // `application/json` or `application/octet-stream`.
        let body_type = serde_json::from_slice::<serde_json::Value>(&data)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            });
        let media_type = match body_type {
            Some(t) if !t.is_empty() => t,
            _ if oci::is_index(&header_type) || oci::is_manifest(&header_type) => header_type,
            _ => {
                let v: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
                if v.get("manifests").is_some() {
                    oci::MT_OCI_INDEX.to_string()
                } else if v.get("config").is_some() && v.get("layers").is_some() {
                    oci::MT_OCI_MANIFEST.to_string()
                } else {
                    header_type
                }
            }
        };
        if !(oci::is_index(&media_type) || oci::is_manifest(&media_type)) {
            return Err(RegistryError::MediaType {
                what: url,
                media_type,
            });
        }
        Ok(FetchedManifest {
            data,
            media_type,
            digest,
        })
    }

    /// A small blob (a config), whole and verified.
    pub async fn blob_bytes(&self, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let url = self.endpoint.url("blobs", digest);
        let resp = self.get(&url, "*/*").await?;
        let data = read_limited(resp.into_body(), JSON_LIMIT, &url).await?;
        let actual = oci::sha256_digest(&data);
        if actual != digest {
            return Err(RegistryError::Digest {
                what: format!("blob {url}"),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(data)
    }

    /// A blob as a stream (the caller verifies its digest while storing it).
    pub async fn blob(&self, digest: &str) -> Result<Incoming, RegistryError> {
        let url = self.endpoint.url("blobs", digest);
        Ok(self.get(&url, "*/*").await?.into_body())
    }

    /// GET with authentication on demand and redirects followed; non-2xx answers
    /// become errors.
    async fn get(&self, url: &str, accept: &str) -> Result<Response<Incoming>, RegistryError> {
        let mut current = url.to_string();
        let mut authenticated = false;
        let mut same_host = true;
        for _ in 0..MAX_REDIRECTS {
            // Credentials never follow a redirect to another host (blob storage).
            let authorization = if same_host {
                self.authorization.lock().ok().and_then(|a| a.clone())
            } else {
                None
            };
            let resp = self
                .send(Method::GET, &current, accept, authorization.clone(), None)
                .await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && same_host && !authenticated {
                authenticated = true;
                let challenges: Vec<Challenge> = resp
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(parse_challenges)
                    .collect();
                if let Some(value) = self.authorize(&challenges).await? {
                    if let Ok(mut a) = self.authorization.lock() {
                        *a = Some(value);
                    }
                    continue;
                }
                return Err(status_error(Method::GET, &current, resp).await);
            }
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| RegistryError::Transport {
                        url: current.clone(),
                        message: format!("{status} without a Location"),
                    })?;
                let next = resolve_location(&current, location).ok_or_else(|| {
                    RegistryError::Transport {
                        url: current.clone(),
                        message: format!("cannot follow redirect to {location:?}"),
                    }
                })?;
                same_host = authority_of(&next) == Some(self.endpoint.host.clone());
                tracing::debug!(from = %current, to = %redact(&next), "following registry redirect");
                current = next;
                continue;
            }
            if status == StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound { url: current });
            }
            if !status.is_success() {
                return Err(status_error(Method::GET, &current, resp).await);
            }
            return Ok(resp);
        }
        Err(RegistryError::Transport {
            url: url.to_string(),
            message: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        accept: &str,
        authorization: Option<HeaderValue>,
        form: Option<String>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let transport = |message: String| RegistryError::Transport {
            url: redact(url),
            message,
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| transport(format!("invalid URL: {e}")))?;
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, accept)
            .header(
                header::USER_AGENT,
                concat!("k3rs/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(a) = authorization {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        let body = match form {
            Some(form) => {
                builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::from(form))
            }
            None => Full::new(Bytes::new()),
        };
        let req = builder
            .body(body)
            .map_err(|e| transport(format!("cannot build request: {e}")))?;
        match tokio::time::timeout(RESPONSE_TIMEOUT, self.http.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                let mut message = error_chain(&e);
                if message.contains("invalid peer certificate") {
                    message.push_str(&format!(
                        " (trust the registry's CA with configs.\"{}\".tls.ca_file in registries.yaml)",
                        self.endpoint.host
                    ));
                }
                Err(transport(message))
            }
            Err(_) => Err(transport(format!("no answer within {RESPONSE_TIMEOUT:?}"))),
        }
    }
}

/// A status error with the registry's own message (`{"errors":[{"message":…}]}`).
async fn status_error(method: Method, url: &str, resp: Response<Incoming>) -> RegistryError {
    let status = resp.status();
    let body = read_limited(resp.into_body(), 64 << 10, url)
        .await
        .unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["errors"][0]["message"]
                .as_str()
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
        })
        .unwrap_or_default();
    RegistryError::Status {
        method,
        url: redact(url),
        status,
        detail,
    }
}

/// Reads a whole body, refusing more than `limit` bytes.
async fn read_limited(
    mut body: Incoming,
    limit: usize,
    url: &str,
) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| RegistryError::Transport {
            url: redact(url),
            message: error_chain(&e),
        })?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() > limit {
                return Err(RegistryError::TooLarge {
                    what: redact(url),
                    limit,
                });
            }
        }
    }
    Ok(out)
}

/// An error and its causes, `a: b: c` (hyper's own Display hides the cause).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

/// Storage redirects carry signed query strings; logs and errors get the path only.
fn redact(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

fn authority_of(url: &str) -> Option<String> {
    url.parse::<Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
}

/// Resolves a `Location` against the URL it came from.
fn resolve_location(base: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_string());
    }
    let uri: Uri = base.parse().ok()?;
    let origin = format!("{}://{}", uri.scheme_str()?, uri.authority()?.as_str());
    if location.starts_with("//") {
        return Some(format!("{}:{location}", uri.scheme_str()?));
    }
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    let dir = uri.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    Some(format!("{origin}{dir}/{location}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_and_urls_encode() {
        let base = "http://127.0.0.1:5000/v2/a/blobs/sha256:1";
        assert_eq!(
            resolve_location(base, "/storage/x?sig=1").as_deref(),
            Some("http://127.0.0.1:5000/storage/x?sig=1")
        );
        assert_eq!(
            resolve_location(base, "https://s3.example/x").as_deref(),
            Some("https://s3.example/x")
        );
        assert_eq!(
            resolve_location(base, "//cdn.example/x").as_deref(),
            Some("http://cdn.example/x")
        );
        assert_eq!(
            resolve_location(base, "other").as_deref(),
            Some("http://127.0.0.1:5000/v2/a/blobs/other")
        );
        assert_eq!(redact("https://s/x?X-Amz-Signature=abc"), "https://s/x");
    }
}
