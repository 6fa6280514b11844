//! Who is asking (authentication) and whether they may (authorization).
//!
//! Authentication: a client certificate verified against the client CA during the TLS
//! handshake (user = CN, groups = O). Anonymous requests may reach only the public
//! health, version and CA endpoints. Authorization is the one place RBAC plugs in; for
//! now every authenticated user may do everything.

use super::request::RequestInfo;
use crate::api::status::ApiError;

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name, e.g. `system:admin`.
    pub user: String,
    /// Groups, e.g. `system:masters`.
    pub groups: Vec<String>,
}

/// Paths anyone may read without credentials.
pub fn is_public_path(path: &str) -> bool {
    matches!(path, "/version" | "/cacerts" | "/ping")
        || ["/healthz", "/livez", "/readyz"]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// The identity of a connection from its client certificate chain, if any.
pub fn from_peer_certificates(
    certs: Option<&[rustls_pki_types::CertificateDer<'_>]>,
) -> Option<Identity> {
    let leaf = certs?.first()?;
    let (user, groups) = crate::server::pki::client_identity(leaf.as_ref())?;
    Some(Identity { user, groups })
}

/// Decides whether `who` may perform the request. RBAC and the node authorizer plug in
/// here; until they land, any authenticated user is allowed.
pub fn authorize(who: &Identity, _info: &RequestInfo) -> Result<(), ApiError> {
    if who.user.is_empty() {
        return Err(ApiError::unauthorized());
    }
    Ok(())
}
