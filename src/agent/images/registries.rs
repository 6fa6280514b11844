//! The node's registry configuration, `/etc/k3rs/registries.yaml`, in k3s's format
//! (`mirrors` with `endpoint` lists and `rewrite` rules, `configs` with `auth` and
//! `tls` per registry host), and the ordered list of endpoints a pull tries for an
//! image: the mirror's endpoints (rewritten), then the registry's own default
//! endpoint, which k3s/containerd always try last.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::Reference;

/// Why registries.yaml could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    #[error("cannot read registry configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry configuration {path} is not valid: {message}; see https://docs.k3s.io/installation/private-registry for the format")]
    Parse { path: PathBuf, message: String },
}

/// The whole file: registry mirrors and per-host settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Registries {
    /// Mirrors by registry name (`docker.io`, `registry.example.com:5000`, or `*` for
    /// every registry without its own entry).
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Auth and TLS settings by registry host (`host:port`, or `*`).
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

/// Where to pull a registry's images from instead of (before) the registry itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Mirror {
    /// Endpoint URLs, tried in order (`https://mirror:5000`, `http://10.0.0.1:5000/v2`,
    /// or a URL with another path, used as is instead of `/v2`).
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Regular expression → replacement (with `$1`…) applied to the repository path
    /// for the mirror endpoints (not for the default endpoint).
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

/// Per-host settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegistryConfig {
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Credentials for a registry host.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// base64 of `username:password`.
    #[serde(default)]
    pub auth: String,
    /// An OAuth2 refresh token (the registry's token endpoint trades it).
    #[serde(default, alias = "identity_token")]
    pub identitytoken: String,
}

impl std::fmt::Debug for AuthConfig {
    // Secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// TLS settings for a registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// One place a pull may fetch an image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// `host` or `host:port` to connect to.
    pub host: String,
    /// Path prefix of the API: `/v2`, or the endpoint's own path (override).
    pub path: String,
    /// The repository path on this endpoint (after rewrites).
    pub repository: String,
    /// Auth and TLS for this endpoint's host.
    pub config: RegistryConfig,
    /// The registry's own endpoint (last resort), not a mirror.
    pub is_default: bool,
}

impl Endpoint {
    /// `<scheme>://<host><path>/<repository>/<kind>/<reference>`.
    pub fn url(&self, kind: &str, reference: &str) -> String {
        format!(
            "{}://{}{}/{}/{kind}/{reference}",
            self.scheme,
            self.host,
            self.path.trim_end_matches('/'),
            self.repository
        )
    }
}

impl Registries {
    /// Reads the file at `path`; a missing file is an empty configuration (pull
    /// straight from each image's registry).
    pub fn load(path: &Path) -> Result<Registries, RegistriesError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registries::default()),
            Err(source) => {
                return Err(RegistriesError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Registries::parse(&text).map_err(|message| RegistriesError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the YAML text of registries.yaml (empty text is an empty configuration).
    pub fn parse(text: &str) -> Result<Registries, String> {
        if text.trim().is_empty() {
            return Ok(Registries::default());
        }
        let parsed: Option<Registries> =
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let parsed = parsed.unwrap_or_default();
        for (name, mirror) in &parsed.mirrors {
            for pattern in mirror.rewrite.keys() {
                regex::Regex::new(pattern)
                    .map_err(|e| format!("mirror {name:?}: rewrite {pattern:?}: {e}"))?;
            }
        }
        Ok(parsed)
    }

    /// The endpoints to try for `reference`, in order: the mirror entry for its
    /// registry (else the `*` entry), then the registry's default endpoint.
    pub fn endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let domain = reference.domain.as_str();
        let mut out: Vec<Endpoint> = Vec::new();
        let mirror = self.mirrors.get(domain).or_else(|| self.mirrors.get("*"));
        if let Some(mirror) = mirror {
            let repository = rewrite(&mirror.rewrite, &reference.path);
            for raw in &mirror.endpoint {
                let Some(parsed) = parse_endpoint(raw) else {
                    tracing::warn!(endpoint = %raw, registry = %domain,
                        "ignoring invalid mirror endpoint URL in registries.yaml");
                    continue;
                };
                let endpoint = Endpoint {
                    config: self.config_for(&parsed.registry),
                    scheme: parsed.scheme,
                    host: parsed.host,
                    path: parsed.path,
                    repository: repository.clone(),
                    is_default: false,
                };
                if !out.iter().any(|e| same_place(e, &endpoint)) {
                    out.push(endpoint);
                }
            }
        }
        if let Some(default) = parse_endpoint(domain) {
            let endpoint = Endpoint {
                config: self.config_for(domain),
                scheme: default.scheme,
                host: default.host,
                path: default.path,
                repository: reference.path.clone(),
                is_default: true,
            };
            // A mirror list ending in the registry itself: that one is the default.
            if let Some(last) = out.last() {
                if same_place(last, &endpoint) {
                    out.pop();
                }
            }
            out.push(endpoint);
        }
        out
    }

    /// Settings for a registry host: its own entry (also under Docker Hub's real
    /// host name), else the `*` entry.
    pub fn config_for(&self, host: &str) -> RegistryConfig {
        let real = default_host(host);
        [real, host, "*"]
            .iter()
            .find_map(|h| self.configs.get(*h))
            .cloned()
            .unwrap_or_default()
    }
}

fn same_place(a: &Endpoint, b: &Endpoint) -> bool {
    a.scheme == b.scheme && a.host == b.host && a.path == b.path
}

/// Docker Hub's API host for the `docker.io` name.
pub fn default_host(host: &str) -> &str {
    if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    }
}

/// Whether `host` (with optional port) is this machine, for which containerd and
/// k3s default to plain HTTP.
pub fn is_localhost(host: &str) -> bool {
    let name = split_port(host).0;
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `(host, port)` of `host[:port]` and `[v6]:port`.
fn split_port(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((_, after)) => (
                &host[..rest.len() - after.len() + 1],
                after.strip_prefix(':'),
            ),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (host, None),
    }
}

struct ParsedEndpoint {
    /// The registry name the endpoint belongs to (for its `configs` entry).
    registry: String,
    scheme: String,
    host: String,
    path: String,
}

/// Normalises an endpoint address like k3s does: a scheme-less address is https,
/// except localhost on a port other than 443 (http); `docker.io` connects to
/// `registry-1.docker.io`; an empty, `/` or `/v2` path means `/v2`, any other path
/// is used as is.
fn parse_endpoint(raw: &str) -> Option<ParsedEndpoint> {
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, rest)) => (Some(s.to_ascii_lowercase()), rest),
        None => (None, raw),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
        return None;
    }
    let scheme = match scheme {
        Some(s) if s == "http" || s == "https" => s,
        Some(_) => return None,
        None => {
            let port = split_port(authority).1;
            if is_localhost(authority) && port.is_some_and(|p| p != "443") {
                "http".to_string()
            } else {
                "https".to_string()
            }
        }
    };
    let registry = if authority == "registry-1.docker.io" {
        "docker.io".to_string()
    } else {
        authority.to_string()
    };
    let path = match path.trim_end_matches('/') {
        "" | "/v2" => "/v2".to_string(),
        other => other.to_string(),
    };
    Some(ParsedEndpoint {
        registry,
        scheme,
        host: default_host(authority).to_string(),
        path,
    })
}

/// Applies the first matching rewrite rule (in the file's key order) to `path`.
fn rewrite(rules: &BTreeMap<String, String>, path: &str) -> String {
    for (pattern, replacement) in rules {
        let Ok(re) = regex::Regex::new(pattern) else {
            continue;
        };
        if re.is_match(path) {
            return re.replace(path, replacement.as_str()).into_owned();
        }
    }
    path.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::images::reference::parse;

    const SAMPLE: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.example.com:5000"
      - "http://127.0.0.1:5000/v2"
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
  "*":
    endpoint:
      - "127.0.0.1:6000"
  registry.example.com:
    endpoint:
      - "https://proxy.example.com/v2/registry.example.com"
configs:
  "mirror.example.com:5000":
    auth:
      username: xxx
      password: yyy
    tls:
      ca_file: /etc/ssl/mirror-ca.pem
      insecure_skip_verify: true
  "docker.io":
    auth:
      auth: dXNlcjpwYXNz
  "*":
    tls:
      insecure_skip_verify: true
"#;

    fn urls(r: &Registries, image: &str) -> Vec<String> {
        let reference = parse(image).expect("reference");
        r.endpoints(&reference)
            .iter()
            .map(|e| e.url("manifests", "t"))
            .collect()
    }

    #[test]
    fn parses_k3s_registries_yaml() {
        let r = Registries::parse(SAMPLE).expect("parse");
        assert_eq!(r.mirrors.len(), 3);
        let auth = r.configs["mirror.example.com:5000"]
            .auth
            .clone()
            .expect("auth");
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("xxx", "yyy")
        );
        let tls = r.configs["mirror.example.com:5000"]
            .tls
            .clone()
            .expect("tls");
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/ssl/mirror-ca.pem")));
        assert!(tls.insecure_skip_verify);
        assert!(!format!("{auth:?}").contains("yyy"), "no secret in Debug");
        assert_eq!(Registries::parse("").expect("empty"), Registries::default());
        assert_eq!(
            Registries::parse("mirrors:\n").expect("null"),
            Registries::default()
        );
        let bad = Registries::parse("mirrors:\n  x:\n    rewrite:\n      '(': a\n");
        assert!(bad.expect_err("bad regex").contains("rewrite"));
        assert!(Registries::parse("mirrors: [1]").is_err());
    }

    #[test]
    fn missing_file_is_empty_and_broken_file_says_where() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registries.yaml");
        assert_eq!(
            Registries::load(&path).expect("missing"),
            Registries::default()
        );
        std::fs::write(&path, "mirrors: {a: {endpoint: 3}}").expect("write");
        let err = Registries::load(&path).expect_err("invalid");
        assert!(err.to_string().contains("registries.yaml"), "{err}");
    }

    #[test]
    fn mirrors_come_first_and_the_default_endpoint_last() {
        let r = Registries::parse(SAMPLE).expect("parse");
        assert_eq!(
            urls(&r, "rancher/coredns:1.6"),
            vec![
                "https://mirror.example.com:5000/v2/mirrorproject/rancher-images/coredns/manifests/t",
                "http://127.0.0.1:5000/v2/mirrorproject/rancher-images/coredns/manifests/t",
                // No rewrite on the default endpoint.
                "https://registry-1.docker.io/v2/rancher/coredns/manifests/t",
            ]
        );
        assert_eq!(
            urls(&r, "busybox")[2],
            "https://registry-1.docker.io/v2/library/busybox/manifests/t"
        );
        // Wildcard mirror for a registry without its own entry; localhost on a
        // port without scheme is plain http.
        assert_eq!(
            urls(&r, "quay.io/a/b"),
            vec![
                "http://127.0.0.1:6000/v2/a/b/manifests/t",
                "https://quay.io/v2/a/b/manifests/t",
            ]
        );
        // An endpoint path other than /v2 is used as is.
        assert_eq!(
            urls(&r, "registry.example.com/x")[0],
            "https://proxy.example.com/v2/registry.example.com/x/manifests/t"
        );
        // No configuration: the registry itself; localhost defaults to http.
        let empty = Registries::default();
        assert_eq!(
            urls(&empty, "127.0.0.1:5000/a:1"),
            vec!["http://127.0.0.1:5000/v2/a/manifests/t"]
        );
        assert_eq!(
            urls(&empty, "localhost:443/a"),
            vec!["https://localhost:443/v2/a/manifests/t"]
        );
        assert_eq!(
            urls(&empty, "ghcr.io/a/b"),
            vec!["https://ghcr.io/v2/a/b/manifests/t"]
        );
    }

    #[test]
    fn endpoint_configs_follow_the_endpoint_host() {
        let r = Registries::parse(SAMPLE).expect("parse");
        let eps = r.endpoints(&parse("rancher/x").expect("ref"));
        let mirror_auth = eps[0].config.auth.clone().expect("mirror auth");
        assert_eq!(mirror_auth.username, "xxx");
        // 127.0.0.1:5000 has no entry: the `*` entry applies.
        assert!(
            eps[1]
                .config
                .tls
                .as_ref()
                .expect("* tls")
                .insecure_skip_verify
        );
        assert_eq!(
            eps[2].config.auth.clone().expect("hub auth").auth,
            "dXNlcjpwYXNz"
        );
        assert!(eps[2].is_default && !eps[0].is_default);
    }

    #[test]
    fn a_mirror_list_ending_in_the_registry_does_not_repeat_it() {
        let r = Registries::parse(
            "mirrors:\n  127.0.0.1:5000:\n    endpoint: [\"http://127.0.0.1:5000\"]\n",
        )
        .expect("parse");
        assert_eq!(
            urls(&r, "127.0.0.1:5000/a"),
            vec!["http://127.0.0.1:5000/v2/a/manifests/t"]
        );
    }
}
