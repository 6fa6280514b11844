//! The bearer-token authenticator for service-account JWTs: a token whose signature,
//! issuer, audience and expiry check out is accepted only while what it names still
//! exists with the same uid (the service account, and the pod or secret it is bound to),
//! like upstream's legacy-free `serviceaccount.JWTTokenAuthenticator` with its
//! bound-object validator. The user is `system:serviceaccount:<ns>:<name>` in
//! `system:serviceaccounts` and `system:serviceaccounts:<ns>`.

use super::jwt::{self, Claims, JwtError, Ref, TokenSigner, API_AUDIENCES};
use crate::api::status::ApiError;
use crate::server::http::auth::{Identity, TokenAuthenticator, TokenFuture};
use crate::server::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Accepts service-account JWTs signed by this cluster.
pub struct JwtAuthenticator {
    signer: Arc<TokenSigner>,
    registry: Registry,
}

impl JwtAuthenticator {
    /// An authenticator verifying with `signer`'s key and looking objects up in `registry`.
    pub fn new(signer: Arc<TokenSigner>, registry: Registry) -> Self {
        JwtAuthenticator { signer, registry }
    }

    async fn check(&self, token: &str) -> Result<Option<Identity>, ApiError> {
        let claims = match self.signer.verify(token, API_AUDIENCES, jwt::unix_now()) {
            Ok(c) => c,
            Err(JwtError::NotOurs) => return Ok(None),
            Err(e) => {
                tracing::debug!(error = %e, "service-account token refused");
                return Err(ApiError::unauthorized());
            }
        };
        if let Err(why) = self.bound_objects_exist(&claims).await? {
            tracing::debug!(sub = %claims.sub, why, "service-account token refused");
            return Err(ApiError::unauthorized());
        }
        Ok(Some(identity(&claims)))
    }

    /// `Ok(Err(why))` when an object the token names is gone or was replaced.
    async fn bound_objects_exist(&self, c: &Claims) -> Result<Result<(), &'static str>, ApiError> {
        let ns = c.kubernetes.namespace.as_str();
        let checks: [(&str, Option<&Ref>, &'static str); 3] = [
            (
                "serviceaccounts",
                Some(&c.kubernetes.serviceaccount),
                "service account deleted or recreated",
            ),
            (
                "pods",
                c.kubernetes.pod.as_ref(),
                "bound pod deleted or recreated",
            ),
            (
                "secrets",
                c.kubernetes.secret.as_ref(),
                "bound secret deleted or recreated",
            ),
        ];
        for (plural, r, why) in checks {
            let Some(r) = r else { continue };
            let res = crate::server::informer::builtin("", "v1", plural);
            match self.registry.get(res, ns, &r.name).await {
                Ok(obj) => {
                    let v = obj.value()?;
                    if !r.uid.is_empty() && crate::api::meta::uid(&v) != r.uid {
                        return Ok(Err(why));
                    }
                }
                Err(e) if e.code == 404 => return Ok(Err(why)),
                Err(e) => return Err(e),
            }
        }
        Ok(Ok(()))
    }
}

/// The user a verified token stands for, with upstream's extra attributes.
pub fn identity(c: &Claims) -> Identity {
    let ns = &c.kubernetes.namespace;
    let mut extra = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        extra.insert(
            format!("authentication.kubernetes.io/{k}"),
            vec![v.to_string()],
        );
    };
    if let Some(p) = &c.kubernetes.pod {
        put("pod-name", &p.name);
        put("pod-uid", &p.uid);
    }
    if let Some(n) = &c.kubernetes.node {
        put("node-name", &n.name);
        put("node-uid", &n.uid);
    }
    if !c.jti.is_empty() {
        put("credential-id", &format!("JTI={}", c.jti));
    }
    Identity {
        user: super::user_name(ns, &c.kubernetes.serviceaccount.name),
        groups: vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
        ],
        uid: c.kubernetes.serviceaccount.uid.clone(),
        extra,
    }
}

impl TokenAuthenticator for JwtAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> TokenFuture<'a> {
        Box::pin(self.check(token))
    }
}
