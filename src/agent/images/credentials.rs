//! Registry credentials from a pod's imagePullSecrets (`kubernetes.io/dockerconfigjson`
//! and the legacy `kubernetes.io/dockercfg`), and which of them apply to an image,
//! matched the way the kubelet's keyring does: by registry host (with `*` globs per
//! host label), port, and repository path prefix; Docker Hub's many spellings
//! (`https://index.docker.io/v1/`, `docker.io`) all mean `docker.io` images.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

/// One credential for the registries its key matches.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    /// The matching key: `host[:port][/path]`, scheme and `/v1/`/`/v2/` removed
    /// (`index.docker.io`, `*.example.com`, `registry:5000/team`).
    pub registry: String,
    pub username: String,
    pub password: String,
    /// OAuth2 refresh token for the registry's token endpoint.
    pub identity_token: String,
    /// A bearer token to send as is.
    pub registry_token: String,
}

impl std::fmt::Debug for RegistryCredential {
    // Secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The kubelet's name for Docker Hub in credential keys.
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerConfigEntry>,
}

#[derive(Deserialize, Default)]
struct DockerConfigEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

/// Every credential in `secrets`, in secret order; within a secret, longer (more
/// specific) keys first. Secrets of other types and undecodable entries are skipped
/// with a warning (the kubelet does the same).
pub fn credentials_from_secrets(secrets: &[Secret]) -> Vec<RegistryCredential> {
    let mut out = Vec::new();
    for secret in secrets {
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        let data = secret.data.as_ref();
        let key = match secret.type_.as_deref() {
            Some("kubernetes.io/dockerconfigjson") => ".dockerconfigjson",
            Some("kubernetes.io/dockercfg") => ".dockercfg",
            _ => continue,
        };
        let Some(bytes) = data.and_then(|d| d.get(key)) else {
            tracing::warn!(secret = %name, "image pull secret has no {key} key; ignored");
            continue;
        };
        let entries = if key == ".dockerconfigjson" {
            serde_json::from_slice::<DockerConfigJson>(&bytes.0).map(|c| c.auths)
        } else {
            serde_json::from_slice::<BTreeMap<String, DockerConfigEntry>>(&bytes.0)
        };
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, "image pull secret is not valid JSON; ignored");
                continue;
            }
        };
        let mut creds: Vec<RegistryCredential> = Vec::new();
        for (registry, entry) in entries {
            match credential(&registry, entry) {
                Some(c) => creds.push(c),
                None => tracing::warn!(secret = %name, %registry,
                    "image pull secret entry has an undecodable auth field; ignored"),
            }
        }
        // The kubelet's keyring sorts keys in reverse order so the most specific wins.
        creds.sort_by(|a, b| b.registry.cmp(&a.registry));
        out.extend(creds);
    }
    out
}

fn credential(registry: &str, mut entry: DockerConfigEntry) -> Option<RegistryCredential> {
    if !entry.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(entry.auth.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, pass) = decoded.split_once(':')?;
        entry.username = user.to_string();
        entry.password = pass.to_string();
    }
    Some(RegistryCredential {
        registry: credential_key(registry)?,
        username: entry.username,
        password: entry.password,
        identity_token: entry.identitytoken,
        registry_token: entry.registrytoken,
    })
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `reg:5000/v2/team` → `reg:5000/team`.
fn credential_key(raw: &str) -> Option<String> {
    let rest = raw.split_once("://").map(|(_, r)| r).unwrap_or(raw);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let path = path
        .strip_prefix("/v2/")
        .or_else(|| path.strip_prefix("/v1/"))
        .map(|p| format!("/{p}"))
        .unwrap_or_else(|| path.to_string());
    let path = path.trim_end_matches('/');
    Some(format!("{host}{path}"))
}

impl RegistryCredential {
    /// Whether this credential applies to the image repository `name`
    /// (`docker.io/library/busybox`, no tag).
    pub fn matches(&self, name: &str) -> bool {
        urls_match(&self.registry, name)
    }
}

/// The credentials to try for repository `name` (normalised, without tag), most
/// specific first; Docker Hub keys apply to `docker.io` images when no other does.
pub fn credentials_for<'a>(
    credentials: &'a [RegistryCredential],
    name: &str,
) -> Vec<&'a RegistryCredential> {
    let found: Vec<&RegistryCredential> = credentials.iter().filter(|c| c.matches(name)).collect();
    if !found.is_empty() {
        return found;
    }
    let host = name.split('/').next().unwrap_or_default();
    if host == "docker.io" || host == DEFAULT_REGISTRY_HOST {
        return credentials
            .iter()
            .filter(|c| c.registry == DEFAULT_REGISTRY_HOST || c.registry == "docker.io")
            .collect();
    }
    Vec::new()
}

/// The kubelet's `URLsMatch`: same number of host labels, each matching the glob's
/// label (`*` wildcards), same port, and the glob's path a prefix of the target's.
fn urls_match(glob: &str, target: &str) -> bool {
    let split = |s: &str| -> (String, String) {
        match s.find('/') {
            Some(i) => (s[..i].to_string(), s[i..].to_string()),
            None => (s.to_string(), String::new()),
        }
    };
    let (glob_host, glob_path) = split(glob);
    let (target_host, target_path) = split(target);
    let host_port = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), p.to_string()),
            _ => (h.to_string(), String::new()),
        }
    };
    let (glob_name, glob_port) = host_port(&glob_host);
    let (target_name, target_port) = host_port(&target_host);
    if glob_port != target_port {
        return false;
    }
    let glob_labels: Vec<&str> = glob_name.split('.').collect();
    let target_labels: Vec<&str> = target_name.split('.').collect();
    if glob_labels.len() != target_labels.len() {
        return false;
    }
    if !glob_labels
        .iter()
        .zip(&target_labels)
        .all(|(g, t)| glob_match(g, t))
    {
        return false;
    }
    target_path.starts_with(&glob_path)
}

/// Shell-style match of one host label: `*` any run of characters, `?` one.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(type_: &str, key: &str, json: &str) -> Secret {
        Secret {
            type_: Some(type_.to_string()),
            data: Some([(key.to_string(), ByteString(json.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn reads_dockerconfigjson_and_dockercfg() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let creds = credentials_from_secrets(&[
            secret(
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                &format!(
                    r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},
                    "registry.example.com:5000":{{"username":"bob","password":"pw"}}}}}}"#
                ),
            ),
            secret(
                "kubernetes.io/dockercfg",
                ".dockercfg",
                r#"{"quay.io":{"username":"carol","password":"x","email":"c@x"}}"#,
            ),
            secret("Opaque", ".dockerconfigjson", "{}"),
            secret(
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                "not json",
            ),
        ]);
        let summary: Vec<(&str, &str, &str)> = creds
            .iter()
            .map(|c| {
                (
                    c.registry.as_str(),
                    c.username.as_str(),
                    c.password.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("registry.example.com:5000", "bob", "pw"),
                ("index.docker.io", "alice", "s3cret"),
                ("quay.io", "carol", "x"),
            ]
        );
        assert!(!format!("{creds:?}").contains("s3cret"));
    }

    fn cred(registry: &str) -> RegistryCredential {
        RegistryCredential {
            registry: credential_key(registry).expect("key"),
            username: registry.to_string(),
            password: String::new(),
            identity_token: String::new(),
            registry_token: String::new(),
        }
    }

    fn users(creds: &[RegistryCredential], name: &str) -> Vec<String> {
        credentials_for(creds, name)
            .iter()
            .map(|c| c.username.clone())
            .collect()
    }

    #[test]
    fn matches_hosts_like_the_kubelet() {
        let creds = vec![
            cred("registry.example.com:5000/team"),
            cred("registry.example.com:5000"),
            cred("*.example.org"),
            cred("https://index.docker.io/v1/"),
            cred("http://127.0.0.1:5000/v2/"),
        ];
        assert_eq!(
            users(&creds, "registry.example.com:5000/team/app"),
            vec![
                "registry.example.com:5000/team",
                "registry.example.com:5000"
            ]
        );
        assert_eq!(
            users(&creds, "registry.example.com:5000/other/app"),
            vec!["registry.example.com:5000"]
        );
        // The port must match.
        assert!(users(&creds, "registry.example.com/team/app").is_empty());
        // Globs match one label each.
        assert_eq!(users(&creds, "a.example.org/x"), vec!["*.example.org"]);
        assert!(users(&creds, "a.b.example.org/x").is_empty());
        // Docker Hub keys apply to docker.io images.
        assert_eq!(
            users(&creds, "docker.io/library/busybox"),
            vec!["https://index.docker.io/v1/"]
        );
        assert_eq!(
            users(&creds, "127.0.0.1:5000/busybox"),
            vec!["http://127.0.0.1:5000/v2/"]
        );
        assert!(users(&creds, "quay.io/a").is_empty());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "abc"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match("abc", "abd"));
    }
}
