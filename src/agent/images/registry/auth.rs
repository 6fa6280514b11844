//! Registry authentication: the credentials a pull may present, parsing the
//! `WWW-Authenticate` challenges of a 401, and answering them — `Basic` with a
//! username and password, `Bearer` through the registry's token service (anonymous,
//! with basic auth, or an OAuth2 refresh-token grant for an identity token).

use base64::Engine;
use http::{HeaderValue, Method, StatusCode};

use super::{read_limited, RegistryClient, RegistryError};
use crate::agent::images::credentials::RegistryCredential;
use crate::agent::images::registries::AuthConfig;

/// What a pull authenticates with.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`).
    IdentityToken(String),
    /// A ready bearer token (docker's `registrytoken`).
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Anonymous => "Anonymous",
            Credentials::Basic { .. } => "Basic",
            Credentials::IdentityToken(_) => "IdentityToken",
            Credentials::Bearer(_) => "Bearer",
        })
    }
}

impl Credentials {
    /// From an imagePullSecrets entry.
    pub fn from_secret(c: &RegistryCredential) -> Credentials {
        if !c.registry_token.is_empty() {
            Credentials::Bearer(c.registry_token.clone())
        } else if !c.identity_token.is_empty() {
            Credentials::IdentityToken(c.identity_token.clone())
        } else if !c.username.is_empty() || !c.password.is_empty() {
            Credentials::Basic {
                username: c.username.clone(),
                password: c.password.clone(),
            }
        } else {
            Credentials::Anonymous
        }
    }

    /// From a registries.yaml `auth` entry (`auth` is base64 of `user:password`).
    pub fn from_config(a: &AuthConfig) -> Credentials {
        if !a.identitytoken.is_empty() {
            return Credentials::IdentityToken(a.identitytoken.clone());
        }
        if !a.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            if let Some((user, pass)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                return Credentials::Basic {
                    username: user.to_string(),
                    password: pass.to_string(),
                };
            }
            tracing::warn!(username = %a.username,
                "registries.yaml auth field is not base64 of user:password; ignored");
        }
        if a.username.is_empty() && a.password.is_empty() {
            return Credentials::Anonymous;
        }
        Credentials::Basic {
            username: a.username.clone(),
            password: a.password.clone(),
        }
    }
}

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-cased: `bearer`, `basic`.
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `WWW-Authenticate` value (RFC 7235): one or more challenges, each a
/// scheme followed by comma-separated `key=value` or `key="quoted, \"value\""`.
pub fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    let skip = |i: &mut usize, pred: &dyn Fn(u8) -> bool| {
        while *i < bytes.len() && pred(bytes[*i]) {
            *i += 1;
        }
    };
    let token_char = |b: u8| !(b.is_ascii_whitespace() || b == b',' || b == b'=' || b == b'"');
    while i < bytes.len() {
        skip(&mut i, &|b| b.is_ascii_whitespace() || b == b',');
        let start = i;
        skip(&mut i, &token_char);
        if start == i {
            i += 1;
            continue;
        }
        let word = &value[start..i];
        skip(&mut i, &|b| b == b' ' || b == b'\t');
        if i < bytes.len() && bytes[i] == b'=' && !out.is_empty() {
            // key=value of the current challenge.
            i += 1;
            skip(&mut i, &|b| b == b' ' || b == b'\t');
            let mut val = String::new();
            if i < bytes.len() && bytes[i] == b'"' {
                i += 1;
                let mut chars = value[i..].char_indices();
                let mut end = value.len() - i;
                while let Some((at, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                val.push(n);
                            }
                        }
                        '"' => {
                            end = at + 1;
                            break;
                        }
                        c => val.push(c),
                    }
                }
                i += end;
            } else {
                let s = i;
                skip(&mut i, &|b| b != b',' && !b.is_ascii_whitespace());
                val.push_str(&value[s..i]);
            }
            if let Some(last) = out.last_mut() {
                last.params.push((word.to_ascii_lowercase(), val));
            }
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
    out
}

impl RegistryClient {
    /// Answers a 401: the `Authorization` value to retry with, or `None` when we
    /// have nothing that could satisfy the challenge.
    pub(super) async fn authorize(
        &self,
        challenges: &[Challenge],
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let header = |v: String| HeaderValue::from_str(&v).ok();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            if let Credentials::Bearer(token) = &self.credentials {
                return Ok(header(format!("Bearer {token}")));
            }
            let token = self.fetch_token(bearer).await?;
            return Ok(header(format!("Bearer {token}")));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if let Credentials::Basic { username, password } = &self.credentials {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                return Ok(header(format!("Basic {encoded}")));
            }
        }
        Ok(None)
    }

    /// The bearer token flow: GET the realm (anonymously or with basic auth), or
    /// POST an OAuth2 refresh-token grant for an identity token.
    async fn fetch_token(&self, challenge: &Challenge) -> Result<String, RegistryError> {
        let realm = challenge.param("realm").unwrap_or_default().to_string();
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(RegistryError::Token {
                kind: "bearer",
                realm,
                message: "the registry's challenge names no usable realm".to_string(),
                status: None,
            });
        }
        let service = challenge.param("service").unwrap_or_default().to_string();
        let scope = challenge
            .param("scope")
            .map(str::to_string)
            .unwrap_or_else(|| format!("repository:{}:pull", self.endpoint.repository));
        let token_err = |kind: &'static str, message: String, status: Option<StatusCode>| {
            RegistryError::Token {
                kind,
                realm: realm.clone(),
                message,
                status,
            }
        };
        let (kind, resp) = match &self.credentials {
            Credentials::IdentityToken(refresh) => {
                let form = format!(
                    "grant_type=refresh_token&service={}&scope={}&client_id=k3rs&refresh_token={}",
                    encode(&service),
                    encode(&scope),
                    encode(refresh)
                );
                let resp = self
                    .send(Method::POST, &realm, "application/json", None, Some(form))
                    .await;
                ("oauth", resp)
            }
            creds => {
                let mut url = realm.clone();
                url.push(if url.contains('?') { '&' } else { '?' });
                if !service.is_empty() {
                    url.push_str(&format!("service={}&", encode(&service)));
                }
                url.push_str(&format!("scope={}", encode(&scope)));
                let (kind, auth) = match creds {
                    Credentials::Basic { username, password } => {
                        let encoded = base64::engine::general_purpose::STANDARD
                            .encode(format!("{username}:{password}"));
                        (
                            "bearer",
                            HeaderValue::from_str(&format!("Basic {encoded}")).ok(),
                        )
                    }
                    _ => ("anonymous", None),
                };
                (
                    kind,
                    self.send(Method::GET, &url, "application/json", auth, None)
                        .await,
                )
            }
        };
        let resp = resp.map_err(|e| token_err(kind, e.to_string(), None))?;
        let status = resp.status();
        let body = read_limited(resp.into_body(), 1 << 20, &realm).await?;
        if !status.is_success() {
            return Err(token_err(
                kind,
                format!("unexpected status: {status}"),
                Some(status),
            ));
        }
        let parsed: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| token_err(kind, format!("invalid token response: {e}"), None))?;
        ["token", "access_token"]
            .iter()
            .find_map(|k| parsed.get(*k).and_then(|t| t.as_str()))
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| token_err(kind, "the token response holds no token".to_string(), None))
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/busybox:pull"));

        let c = parse_challenges(r#"Basic realm="basic-realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("REALM"), Some("basic-realm"));

        // Several challenges, quoted commas and escapes, unquoted values, spaces.
        let c = parse_challenges(
            r#"Basic realm="a, \"b\"" , Bearer realm=https://t.example/token, scope="repository:x:pull,push" ,error="invalid_token""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].param("realm"), Some(r#"a, "b""#));
        assert_eq!(c[1].param("realm"), Some("https://t.example/token"));
        assert_eq!(c[1].param("scope"), Some("repository:x:pull,push"));
        assert_eq!(c[1].param("error"), Some("invalid_token"));
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn credentials_from_registries_yaml() {
        let auth = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:q"),
            ..Default::default()
        };
        assert_eq!(
            Credentials::from_config(&auth),
            Credentials::Basic {
                username: "u".into(),
                password: "p:q".into()
            }
        );
        assert_eq!(
            Credentials::from_config(&AuthConfig::default()),
            Credentials::Anonymous
        );
        let token = AuthConfig {
            identitytoken: "refresh".into(),
            ..Default::default()
        };
        assert_eq!(
            Credentials::from_config(&token),
            Credentials::IdentityToken("refresh".into())
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }

    /// A fake registry behind the bearer flow: the manifest needs token `tok`,
    /// which the token service hands out for `alice:pw` and the repository scope;
    /// the blob redirects to a storage path on the same server.
    async fn fake_registry() -> (u16, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split(' ').nth(1).unwrap_or_default().to_string();
                let auth = head
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: "))
                    .or_else(|| head.lines().find_map(|l| l.strip_prefix("Authorization: ")))
                    .unwrap_or_default()
                    .to_string();
                let basic = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("alice:pw")
                );
                let (status, extra, body): (&str, String, Vec<u8>) = if target
                    == "/token?service=fake&scope=repository%3Ateam%2Fapp%3Apull"
                {
                    if auth == basic {
                        ("200 OK", String::new(), br#"{"token":"tok"}"#.to_vec())
                    } else {
                        ("401 Unauthorized", String::new(), Vec::new())
                    }
                } else if auth != "Bearer tok" && target.starts_with("/v2/") {
                    let challenge = format!(
                        "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",\
                         service=\"fake\",scope=\"repository:team/app:pull\"\r\n"
                    );
                    ("401 Unauthorized", challenge, Vec::new())
                } else if target == "/v2/team/app/manifests/v1" {
                    let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:x","size":1},"layers":[]}"#;
                    ("200 OK", String::new(), m.to_vec())
                } else if target.starts_with("/v2/team/app/blobs/") {
                    let location = "Location: /storage/blob?sig=1\r\n".to_string();
                    ("307 Temporary Redirect", location, Vec::new())
                } else if target == "/storage/blob?sig=1" {
                    ("200 OK", String::new(), b"blob".to_vec())
                } else {
                    ("404 Not Found", String::new(), Vec::new())
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.write_all(&body).await;
                let _ = conn.shutdown().await;
            }
        });
        (port, task)
    }

    fn endpoint(port: u16) -> crate::agent::images::registries::Endpoint {
        crate::agent::images::registries::Endpoint {
            scheme: "http".into(),
            host: format!("127.0.0.1:{port}"),
            path: "/v2".into(),
            repository: "team/app".into(),
            config: Default::default(),
            is_default: true,
        }
    }

    #[tokio::test]
    async fn bearer_token_flow_and_redirects() {
        let (port, server) = fake_registry().await;
        let secret = RegistryCredential {
            registry: format!("127.0.0.1:{port}"),
            username: "alice".into(),
            password: "pw".into(),
            identity_token: String::new(),
            registry_token: String::new(),
        };
        let client = RegistryClient::new(endpoint(port), Some(&secret)).expect("client");
        let manifest = client.manifest("v1").await.expect("manifest with token");
        assert_eq!(
            manifest.media_type,
            crate::agent::images::oci::MT_OCI_MANIFEST
        );
        let blob = client
            .blob_bytes(&crate::agent::images::oci::sha256_digest(b"blob"))
            .await;
        assert_eq!(blob.expect("blob through redirect"), b"blob".to_vec());
        let missing = client.manifest("nope").await.expect_err("missing");
        assert!(missing.is_not_found(), "{missing}");

        // Anonymous: the token service refuses.
        let anonymous = RegistryClient::new(endpoint(port), None).expect("client");
        let err = anonymous.manifest("v1").await.expect_err("no token");
        assert!(err.is_unauthorized(), "{err}");
        assert!(err.to_string().contains("anonymous token"), "{err}");
        server.abort();
    }
}
