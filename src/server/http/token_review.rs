//! `authentication.k8s.io/v1` TokenReview: the API server checks a bearer token for someone
//! else (kubelets in webhook authentication mode) with the same authenticator chain its own
//! requests go through. Like upstream, an invalid token is an answer
//! (`status.authenticated: false` with `status.error`), not a failed request; nothing is
//! stored.

use super::auth::{Authenticator, Identity};
use super::reviews::user_info;
use serde_json::{json, Value};

/// The review `obj` with `status` filled in for its `spec.token`.
pub async fn answer(authn: &Authenticator, mut obj: Value) -> Value {
    let token = obj["spec"]["token"]
        .as_str()
        .unwrap_or("")
        .trim()
        .to_string();
    let status = review(authn, &token).await;
    if let Some(m) = obj.as_object_mut() {
        m.insert("status".into(), status);
        m.entry("metadata").or_insert_with(|| json!({}));
    }
    obj
}

async fn review(authn: &Authenticator, token: &str) -> Value {
    let denied = |error: &str| json!({"authenticated": false, "user": {}, "error": error});
    if token.is_empty() {
        return denied("token is required");
    }
    let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) else {
        return denied("invalid bearer token");
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    match authn.authenticate(None, &headers).await {
        // No token authenticator recognized it: the chain would fall back to anonymous.
        Ok(id) if id == Identity::anonymous() => denied("invalid bearer token"),
        Ok(id) => json!({"authenticated": true, "user": user_info(&id)}),
        Err(_) => denied("invalid bearer token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::http::auth::tests::Fixed;
    use std::sync::Arc;

    #[tokio::test]
    async fn valid_tokens_name_the_user_and_others_are_unauthenticated() {
        let chain = Authenticator::new().with_token_authenticator(Arc::new(Fixed));
        let ok = answer(&chain, json!({"spec": {"token": "good"}})).await;
        assert_eq!(ok["status"]["authenticated"], true);
        assert_eq!(ok["status"]["user"]["username"], "sa");
        let groups = ok["status"]["user"]["groups"].as_array().unwrap();
        assert!(groups.iter().any(|g| g == "system:authenticated"));
        for t in ["bad", "unknown", ""] {
            let no = answer(&chain, json!({"spec": {"token": t}})).await;
            assert_eq!(no["status"]["authenticated"], false, "{t}");
            assert!(no["status"]["error"].is_string());
        }
    }
}
