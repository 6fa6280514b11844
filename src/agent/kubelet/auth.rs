//! Authentication and authorization of kubelet endpoint requests, like upstream kubelet's
//! `--authentication-token-webhook` and `--authorization-mode=Webhook`:
//!
//! - a client certificate from the cluster's client CA names the user (CN) and groups (O);
//! - otherwise `Authorization: Bearer <token>` is checked with a TokenReview at the API
//!   server (answers cached 2 minutes, keyed by the token's SHA-256, never the token);
//! - no credentials is a 401 (k3s runs kubelets with anonymous auth off).
//!
//! `system:masters` (the API server's kubelet-client identity) may do anything; everyone
//! else is asked about with a SubjectAccessReview on `nodes/<subresource>` of this node,
//! with upstream's mapping of paths to subresources (`/stats` → stats, `/metrics*` →
//! metrics, `/logs` → log, everything else — exec, attach, portForward, run,
//! containerLogs — → proxy) and of methods to verbs. Allowed answers are cached 5 minutes,
//! denials 30 seconds (upstream's defaults).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};

use crate::agent::client::ApiClient;
use crate::server::http::auth::Identity;
use crate::server::http::reviews::strings;

/// How long a TokenReview answer is reused.
const AUTHN_TTL: Duration = Duration::from_secs(120);
/// How long an "allowed" SubjectAccessReview answer is reused.
const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a "denied" SubjectAccessReview answer is reused.
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Cache entries above this are dropped wholesale (a flood of distinct tokens must not
/// grow memory without bound).
const MAX_ENTRIES: usize = 4096;

/// Why a webhook check could not be answered (the request then fails with 500 for
/// TokenReview/SAR transport errors, like upstream's webhook authenticator errors).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The API server could not be asked.
    #[error("asking the API server ({what}) failed: {message}")]
    Api {
        /// TokenReview or SubjectAccessReview.
        what: &'static str,
        /// What failed.
        message: String,
    },
}

/// What a request asks of the node: upstream's kubelet authorizer attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestAttributes {
    /// get, create, update, patch, delete.
    pub verb: String,
    /// stats, metrics, log or proxy.
    pub subresource: String,
}

/// Upstream kubelet's mapping of a request to `nodes/<subresource>` and a verb.
pub fn request_attributes(method: &Method, path: &str) -> RequestAttributes {
    let first = path.split('/').find(|s| !s.is_empty()).unwrap_or_default();
    let subresource = match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        _ => "proxy",
    };
    let verb = match *method {
        // Streaming sessions start with an upgrade GET (WebSocket) but start processes or
        // open connections: judge them as create, like their SPDY POSTs.
        Method::GET | Method::HEAD
            if matches!(first, "exec" | "attach" | "portForward" | "run") =>
        {
            "create"
        }
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    RequestAttributes {
        verb: verb.to_string(),
        subresource: subresource.to_string(),
    }
}

struct Cached<T> {
    at: Instant,
    ttl: Duration,
    value: T,
}

type AuthzKey = (String, Vec<String>, RequestAttributes);

/// Asks the API server about bearer tokens and permissions of non-admin callers, and
/// caches the answers.
pub struct Webhook {
    api: ApiClient,
    node_name: String,
    authn: Mutex<HashMap<[u8; 32], Cached<Option<Identity>>>>,
    authz: Mutex<HashMap<AuthzKey, Cached<bool>>>,
}

fn lookup<K: std::hash::Hash + Eq, T: Clone>(
    map: &Mutex<HashMap<K, Cached<T>>>,
    key: &K,
) -> Option<T> {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.get(key)
        .filter(|c| c.at.elapsed() < c.ttl)
        .map(|c| c.value.clone())
}

fn store<K: std::hash::Hash + Eq, T>(
    map: &Mutex<HashMap<K, Cached<T>>>,
    key: K,
    value: T,
    ttl: Duration,
) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, c| c.at.elapsed() < c.ttl);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
    map.insert(
        key,
        Cached {
            at: Instant::now(),
            ttl,
            value,
        },
    );
}

impl Webhook {
    /// Checks through `api` (the node's own credentials, which upstream's `system:node`
    /// role lets create tokenreviews and subjectaccessreviews) for node `node_name`.
    pub fn new(api: ApiClient, node_name: &str) -> Webhook {
        Webhook {
            api,
            node_name: node_name.to_string(),
            authn: Mutex::new(HashMap::new()),
            authz: Mutex::new(HashMap::new()),
        }
    }

    /// The user a bearer token belongs to; `None` when the API server says it is not valid.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Identity>, WebhookError> {
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        if let Some(hit) = lookup(&self.authn, &key) {
            return Ok(hit);
        }
        let review = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        });
        let answer: Value = self
            .api
            .create("/apis/authentication.k8s.io/v1/tokenreviews", &review)
            .await
            .map_err(|e| WebhookError::Api {
                what: "TokenReview",
                message: e.to_string(),
            })?;
        let status = &answer["status"];
        let id = (status["authenticated"] == true).then(|| identity_of(&status["user"]));
        store(&self.authn, key, id.clone(), AUTHN_TTL);
        Ok(id)
    }

    /// Whether `who` may do `attrs` on this node.
    pub async fn authorize(
        &self,
        who: &Identity,
        attrs: &RequestAttributes,
    ) -> Result<bool, WebhookError> {
        let key = (who.user.clone(), who.groups.clone(), attrs.clone());
        if let Some(hit) = lookup(&self.authz, &key) {
            return Ok(hit);
        }
        let mut spec = json!({
            "user": who.user,
            "groups": who.groups,
            "resourceAttributes": {
                "verb": attrs.verb,
                "group": "",
                "version": "v1",
                "resource": "nodes",
                "subresource": attrs.subresource,
                "name": self.node_name,
            },
        });
        if !who.uid.is_empty() {
            spec["uid"] = json!(who.uid);
        }
        if !who.extra.is_empty() {
            spec["extra"] = json!(who.extra);
        }
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        });
        let answer: Value = self
            .api
            .create(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                &review,
            )
            .await
            .map_err(|e| WebhookError::Api {
                what: "SubjectAccessReview",
                message: e.to_string(),
            })?;
        let allowed = answer["status"]["allowed"] == true;
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        store(&self.authz, key, allowed, ttl);
        Ok(allowed)
    }
}

fn identity_of(user: &Value) -> Identity {
    Identity {
        user: user["username"].as_str().unwrap_or_default().to_string(),
        groups: strings(&user["groups"]),
        uid: user["uid"].as_str().unwrap_or_default().to_string(),
        extra: user["extra"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
            .unwrap_or_default(),
    }
}

/// The bearer token of a request, if it sends a well-formed one.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_upstream_subresources_and_verbs() {
        let a = |m: Method, p: &str| {
            let r = request_attributes(&m, p);
            (r.verb, r.subresource)
        };
        let s = |v: &str, sub: &str| (v.to_string(), sub.to_string());
        assert_eq!(a(Method::GET, "/metrics/cadvisor"), s("get", "metrics"));
        assert_eq!(a(Method::GET, "/metrics"), s("get", "metrics"));
        assert_eq!(a(Method::GET, "/stats/summary"), s("get", "stats"));
        assert_eq!(a(Method::GET, "/logs/syslog"), s("get", "log"));
        assert_eq!(a(Method::GET, "/containerLogs/ns/p/c"), s("get", "proxy"));
        assert_eq!(a(Method::POST, "/exec/ns/p/c"), s("create", "proxy"));
        assert_eq!(a(Method::GET, "/exec/ns/p/c"), s("create", "proxy"));
        assert_eq!(a(Method::GET, "/portForward/ns/p"), s("create", "proxy"));
    }

    #[test]
    fn cache_entries_expire() {
        let m: Mutex<HashMap<u8, Cached<bool>>> = Mutex::new(HashMap::new());
        store(&m, 1, true, Duration::from_secs(60));
        store(&m, 2, false, Duration::ZERO);
        assert_eq!(lookup(&m, &1), Some(true));
        assert_eq!(lookup(&m, &2), None);
    }

    #[test]
    fn bearer_tokens_are_parsed() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
    }
}
