//! Who is asking (authentication) and whether they may (authorization).
//!
//! Authentication is a short chain, like upstream's union authenticator:
//! 1. a client certificate verified against the client CA during the TLS handshake
//!    (user = CN, groups = O);
//! 2. a bearer token (`Authorization: Bearer ...`), offered to each registered
//!    [`TokenAuthenticator`] in turn (service-account JWTs plug in here);
//! 3. anonymous: `system:anonymous` in `system:unauthenticated`, which RBAC then judges
//!    (the default policy lets it reach /healthz, /livez, /readyz and /version).
//!
//! Every authenticated user also gets the group `system:authenticated`. Credentials that
//! are present but wrong (an unknown bearer token) are a 401, never a fall back to
//! anonymous. Authorization is [`crate::server::rbac::Authorizer`]; [`authorize`] turns
//! its answer into upstream's 403.

use super::request::RequestInfo;
use crate::api::status::ApiError;
use crate::server::rbac::{self, Attributes, Authorizer, Decision};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user of anonymous requests.
pub const ANONYMOUS: &str = "system:anonymous";

/// An authenticated user (upstream's `user.Info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// User name, e.g. `system:admin`.
    pub user: String,
    /// Groups, e.g. `system:masters`.
    pub groups: Vec<String>,
    /// A unique id of the user, when the authenticator knows one (service accounts).
    pub uid: String,
    /// Extra attributes (e.g. the pod a service-account token is bound to).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// A user with groups and nothing else.
    pub fn new(user: &str, groups: &[&str]) -> Self {
        Identity {
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    /// The anonymous user.
    pub fn anonymous() -> Self {
        Identity::new(ANONYMOUS, &[UNAUTHENTICATED])
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Adds `system:authenticated` unless the user is anonymous or already carries one of
    /// the two marker groups (upstream's AuthenticatedGroupAdder).
    pub fn with_authenticated_group(mut self) -> Self {
        if self.user != ANONYMOUS
            && !self.in_group(AUTHENTICATED)
            && !self.in_group(UNAUTHENTICATED)
        {
            self.groups.push(AUTHENTICATED.to_string());
        }
        self
    }
}

/// Future returned by a [`TokenAuthenticator`].
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Identity>, ApiError>> + Send + 'a>>;

/// Checks bearer tokens of one kind (service-account JWTs, bootstrap tokens).
///
/// `Ok(Some(identity))`: the token is of this kind and valid. `Ok(None)`: not a token of
/// this kind, ask the next authenticator. `Err(_)`: of this kind but invalid (expired,
/// bad signature): the request fails with that error (use [`ApiError::unauthorized`]).
/// The chain adds `system:authenticated` itself.
pub trait TokenAuthenticator: Send + Sync + 'static {
    /// Authenticates `token` (the text after `Bearer `).
    fn authenticate<'a>(&'a self, token: &'a str) -> TokenFuture<'a>;
}

/// The authentication chain: client certificate → bearer tokens → anonymous.
#[derive(Clone, Default)]
pub struct Authenticator {
    tokens: Vec<Arc<dyn TokenAuthenticator>>,
}

impl Authenticator {
    /// A chain with no bearer-token authenticators (client certificates and anonymous).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a bearer-token authenticator at the end of the token stage.
    pub fn with_token_authenticator(mut self, a: Arc<dyn TokenAuthenticator>) -> Self {
        self.tokens.push(a);
        self
    }

    /// Who sent a request: `cert` is the identity of the connection's verified client
    /// certificate. Errors are 401s.
    pub async fn authenticate(
        &self,
        cert: Option<&Identity>,
        headers: &http::HeaderMap,
    ) -> Result<Identity, ApiError> {
        if let Some(id) = cert {
            return Ok(id.clone().with_authenticated_group());
        }
        if let Some(token) = bearer_token(headers)? {
            for a in &self.tokens {
                if let Some(id) = a.authenticate(token).await? {
                    return Ok(id.with_authenticated_group());
                }
            }
            // A token nobody recognizes is bad credentials, not an anonymous request.
            return Err(ApiError::unauthorized());
        }
        Ok(Identity::anonymous())
    }
}

/// The bearer token of a request, if it sends one. A malformed Authorization header is
/// a 401.
fn bearer_token(headers: &http::HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| ApiError::unauthorized())?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Err(ApiError::unauthorized())
            } else {
                Ok(Some(token))
            }
        }
        // Other schemes (Basic) are not supported: upstream ignores them too.
        _ => Ok(None),
    }
}

/// Paths that need neither credentials nor authorization: the CA bundle agents fetch
/// before they trust anything, the ping k3s agents use, and the join endpoints under
/// `/v1-k3rs/` (they check the join token themselves). Health and version go through
/// RBAC (system:public-info-viewer lets anonymous users read them).
pub fn is_public_path(path: &str) -> bool {
    matches!(path, "/cacerts" | "/ping") || path.starts_with("/v1-k3rs/")
}

/// The identity of a connection from its client certificate chain, if any.
pub fn from_peer_certificates(
    certs: Option<&[rustls_pki_types::CertificateDer<'_>]>,
) -> Option<Identity> {
    let leaf = certs?.first()?;
    let (user, groups) = crate::server::pki::client_identity(leaf.as_ref())?;
    Some(Identity {
        user,
        groups,
        ..Default::default()
    })
}

/// Decides whether `who` may perform the resource request; a denial is upstream's 403.
pub fn authorize(authz: &Authorizer, who: &Identity, info: &RequestInfo) -> Result<(), ApiError> {
    check(authz, &Attributes::from_request(who, info))
}

/// Decides whether `who` may send `method` to the non-resource `path` (/healthz, /api).
pub fn authorize_path(
    authz: &Authorizer,
    who: &Identity,
    method: &http::Method,
    path: &str,
) -> Result<(), ApiError> {
    check(
        authz,
        &Attributes::non_resource(who, rbac::path_verb(method), path),
    )
}

/// Authorizes any attributes; a denial is upstream's 403.
pub fn check(authz: &Authorizer, a: &Attributes<'_>) -> Result<(), ApiError> {
    match authz.authorize(a) {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(rbac::forbidden(a, &reason)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Knows one token, "good", of user `sa`.
    pub(crate) struct Fixed;
    impl TokenAuthenticator for Fixed {
        fn authenticate<'a>(&'a self, token: &'a str) -> TokenFuture<'a> {
            Box::pin(async move {
                Ok((token == "good").then(|| Identity::new("sa", &["system:serviceaccounts"])))
            })
        }
    }

    fn headers(auth: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn chain_order_and_groups() {
        let chain = Authenticator::new().with_token_authenticator(Arc::new(Fixed));
        let cert = Identity::new("alice", &["dev"]);
        let id = chain
            .authenticate(Some(&cert), &headers("Bearer bad"))
            .await
            .unwrap();
        assert_eq!(id.groups, vec!["dev", AUTHENTICATED]);
        let id = chain
            .authenticate(None, &headers("Bearer good"))
            .await
            .unwrap();
        assert_eq!(id.user, "sa");
        assert!(id.in_group(AUTHENTICATED));
        let err = chain
            .authenticate(None, &headers("Bearer bad"))
            .await
            .unwrap_err();
        assert_eq!(err.code, 401);
        let anon = chain
            .authenticate(None, &http::HeaderMap::new())
            .await
            .unwrap();
        assert_eq!(anon, Identity::anonymous());
        // Without any token authenticator a bearer token is a 401, not anonymous.
        let err = Authenticator::new()
            .authenticate(None, &headers("Bearer x"))
            .await
            .unwrap_err();
        assert_eq!(err.code, 401);
    }
}
