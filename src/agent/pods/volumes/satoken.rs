//! Service-account tokens for projected volumes, like the kubelet's token manager: for
//! each `serviceAccountToken` source of a pod the agent asks the API (TokenRequest on the
//! pod's service account, bound to the pod, with the source's audience and
//! `expirationSeconds`) and keeps the answer until 80% of its lifetime has passed, then
//! asks again; the volume code writes the current token into the pod's files on every
//! resync. A failed refresh keeps the old token while it is still valid.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, ServiceAccountTokenProjection};
use serde_json::{json, Value};

use crate::agent::client::{ApiClient, ClientError};

/// Which token a source asks for: audience (empty = the API server's) and lifetime.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The requested audience, empty for the API server's own audiences.
    pub audience: String,
    /// Requested lifetime in seconds.
    pub expiration_seconds: i64,
}

impl TokenKey {
    /// The key of a projection source.
    pub fn of(p: &ServiceAccountTokenProjection) -> TokenKey {
        TokenKey {
            audience: p.audience.clone().unwrap_or_default(),
            expiration_seconds: p.expiration_seconds.unwrap_or(3600),
        }
    }
}

/// A token the API issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// When it was issued (seconds since the epoch, this node's clock).
    pub issued_at: i64,
    /// When it expires (seconds since the epoch).
    pub expires_at: i64,
}

impl IssuedToken {
    /// Whether the token should be replaced at `now`: past 80% of its lifetime, or
    /// older than a day (the kubelet's rules).
    pub fn needs_refresh(&self, now: i64) -> bool {
        let ttl = (self.expires_at - self.issued_at).max(0);
        now >= self.issued_at + ttl * 8 / 10 || now >= self.issued_at + 86400
    }
}

/// The tokens of one pod.
pub type Tokens = HashMap<TokenKey, IssuedToken>;

/// The token sources of a pod's projected volumes.
pub fn wanted(pod: &Pod) -> Vec<TokenKey> {
    let mut keys = Vec::new();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for v in volumes.into_iter().flatten() {
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(t) = &src.service_account_token {
                let k = TokenKey::of(t);
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
    }
    keys
}

/// Refreshes `cache` for `pod` at `now`: keeps fresh tokens, requests missing and aging
/// ones, drops those no source asks for any more.
pub async fn ensure(
    client: &ApiClient,
    pod: &Pod,
    mut cache: Tokens,
    now: i64,
) -> Result<Tokens, ClientError> {
    let keys = wanted(pod);
    cache.retain(|k, _| keys.contains(k));
    for key in keys {
        if cache.get(&key).is_some_and(|t| !t.needs_refresh(now)) {
            continue;
        }
        match request(client, pod, &key, now).await {
            Ok(t) => {
                cache.insert(key, t);
            }
            Err(e) => match cache.get(&key) {
                Some(old) if old.expires_at > now => {
                    tracing::warn!(pod = ?pod.metadata.name, error = %e, "cannot refresh the service account token; keeping the current one until it expires");
                }
                _ => return Err(e),
            },
        }
    }
    Ok(cache)
}

async fn request(
    client: &ApiClient,
    pod: &Pod,
    key: &TokenKey,
    now: i64,
) -> Result<IssuedToken, ClientError> {
    let m = &pod.metadata;
    let ns = m.namespace.as_deref().unwrap_or("default");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let audiences: Vec<&str> = if key.audience.is_empty() {
        vec![]
    } else {
        vec![key.audience.as_str()]
    };
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audiences,
            "expirationSeconds": key.expiration_seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": m.name, "uid": m.uid},
        },
    });
    let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
    let answer: Value = client.create(&path, &body).await?;
    let token = answer["status"]["token"].as_str().unwrap_or("").to_string();
    if token.is_empty() {
        return Err(ClientError::Decode(
            "the TokenRequest answer has no status.token".into(),
        ));
    }
    let expires_at = answer["status"]["expirationTimestamp"]
        .as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .unwrap_or(now + key.expiration_seconds);
    Ok(IssuedToken {
        token,
        issued_at: now,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_eighty_percent() {
        let t = IssuedToken {
            token: "t".into(),
            issued_at: 1000,
            expires_at: 1000 + 3607,
        };
        assert!(!t.needs_refresh(1000));
        assert!(!t.needs_refresh(1000 + 2884));
        assert!(t.needs_refresh(1000 + 2886));
        let long = IssuedToken {
            expires_at: 1000 + 7 * 86400,
            ..t
        };
        assert!(long.needs_refresh(1000 + 86400));
    }

    #[test]
    fn wanted_lists_each_source_once() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "volumes": [
                {"name": "a", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}},
                {"name": "b", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"serviceAccountToken": {"path": "vault", "audience": "vault", "expirationSeconds": 600}}
                ]}}
            ]}
        }))
        .unwrap();
        let keys = wanted(&pod);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].audience, "vault");
    }
}
