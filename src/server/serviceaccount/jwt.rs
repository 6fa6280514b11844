//! Service-account tokens as JSON Web Tokens: the ES256 signing key under
//! `<data-dir>/server/tls/service.key` (created 0600 on first start), signing of the
//! claims upstream's token issuer writes (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti`
//! and the private `kubernetes.io` claim naming the namespace, service account and bound
//! pod), and verification of signature, issuer, audience and time. Whether the bound
//! objects still exist is checked by the authenticator, which has the store.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The issuer k3s (and so k3rs) puts into service-account tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audiences the API server accepts (k3s's `--api-audiences` default).
pub const API_AUDIENCES: &[&str] = &[ISSUER, "k3s"];
/// The file name of the signing key in the server's tls directory.
pub const KEY_FILE: &str = "service.key";
/// Tokens may be a little early or late: clocks of agents drift (upstream allows 60 s).
const LEEWAY_SECS: i64 = 60;

/// Why a key could not be loaded, a token not made or not accepted.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The key file could not be read or written.
    #[error("service-account signing key {path}: {source}")]
    KeyIo {
        /// The key file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds no usable P-256 PKCS#8 key.
    #[error("service-account signing key {0} is not a PKCS#8 P-256 private key; move it away and restart to create a new one (existing tokens stop working)")]
    KeyFormat(String),
    /// Signing failed (no randomness).
    #[error("cannot sign the service-account token: {0}")]
    Sign(String),
    /// The token is not a JWT of ours (wrong shape, algorithm or issuer): another
    /// authenticator may know it.
    #[error("not a service-account token")]
    NotOurs,
    /// The token is ours but not acceptable.
    #[error("invalid service-account token: {0}")]
    Invalid(&'static str),
}

/// `{name, uid}` of an object the token names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// Object name.
    pub name: String,
    /// Object uid.
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeClaims {
    /// Namespace of the service account.
    pub namespace: String,
    /// The service account.
    pub serviceaccount: Ref,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    /// The node of the bound pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
    /// The secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
}

/// The claims of a service-account token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Issuer.
    pub iss: String,
    /// Token id.
    pub jti: String,
    /// The Kubernetes claim.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubeClaims,
    /// Not before.
    pub nbf: i64,
    /// `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: String,
}

/// Signs and verifies service-account tokens with one ES256 key.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish()
    }
}

impl TokenSigner {
    /// Loads `<tls_dir>/service.key`, creating it (0600) when missing.
    pub fn load_or_create(tls_dir: &Path) -> Result<TokenSigner, JwtError> {
        let path = tls_dir.join(KEY_FILE);
        let io = |source| JwtError::KeyIo {
            path: path.display().to_string(),
            source,
        };
        let pem = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| JwtError::Sign("no randomness for a new key".into()))?;
                let pem = pem_encode("PRIVATE KEY", pkcs8.as_ref());
                crate::server::pki::write_private(&path, pem.as_bytes(), 0o600)
                    .map_err(|e| io(std::io::Error::other(e.to_string())))?;
                pem.into_bytes()
            }
            Err(e) => return Err(io(e)),
        };
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem)
            .map_err(|_| JwtError::KeyFormat(path.display().to_string()))?;
        Self::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|_| JwtError::KeyFormat(path.display().to_string()))
    }

    /// A signer over a PKCS#8 P-256 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<TokenSigner, JwtError> {
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| JwtError::KeyFormat("(in memory)".into()))?;
        // Like upstream, the key id is derived from the public key, so every server with
        // the same key names it the same.
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = B64.encode(digest.as_ref());
        Ok(TokenSigner { key, kid })
    }

    /// A signer with a fresh key (tests).
    pub fn generate() -> Result<TokenSigner, JwtError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map_err(|_| JwtError::Sign("no randomness for a new key".into()))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// Signs `claims` into a compact JWS.
    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        let header = Header {
            alg: "ES256".into(),
            kid: self.kid.clone(),
        };
        let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(claims)?);
        let sig = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| JwtError::Sign("ECDSA signing failed".into()))?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }

    /// Checks signature, issuer, time (`now`, seconds since the epoch) and that one
    /// audience is one of `audiences`; returns the claims.
    pub fn verify(&self, token: &str, audiences: &[&str], now: i64) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::NotOurs);
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwtError::NotOurs)?;
        let payload = B64.decode(c).map_err(|_| JwtError::NotOurs)?;
        // An issuer that is not ours means another authenticator's token (upstream
        // checks the issuer before the signature for the same reason).
        let iss = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v["iss"].as_str().map(str::to_string))
            .ok_or(JwtError::NotOurs)?;
        if iss != ISSUER {
            return Err(JwtError::NotOurs);
        }
        if header.alg != "ES256" {
            return Err(JwtError::Invalid("unsupported signing algorithm"));
        }
        let sig = B64
            .decode(s)
            .map_err(|_| JwtError::Invalid("malformed signature"))?;
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        let signed = &token[..h.len() + 1 + c.len()];
        public
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| JwtError::Invalid("signature does not verify"))?;
        let claims: Claims =
            serde_json::from_slice(&payload).map_err(|_| JwtError::Invalid("malformed claims"))?;
        if now > claims.exp + LEEWAY_SECS {
            return Err(JwtError::Invalid("token has expired"));
        }
        if now + LEEWAY_SECS < claims.nbf {
            return Err(JwtError::Invalid("token is not valid yet"));
        }
        if !claims.aud.iter().any(|a| audiences.contains(&a.as_str())) {
            return Err(JwtError::Invalid("token audiences do not match"));
        }
        Ok(claims)
    }
}

fn b64_json<T: Serialize>(v: &T) -> Result<String, JwtError> {
    serde_json::to_vec(v)
        .map(|b| B64.encode(b))
        .map_err(|e| JwtError::Sign(e.to_string()))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64, ttl: i64) -> Claims {
        Claims {
            aud: vec![ISSUER.into()],
            exp: now + ttl,
            iat: now,
            nbf: now,
            iss: ISSUER.into(),
            jti: "id-1".into(),
            sub: "system:serviceaccount:default:default".into(),
            kubernetes: KubeClaims {
                namespace: "default".into(),
                serviceaccount: Ref {
                    name: "default".into(),
                    uid: "u1".into(),
                },
                ..Default::default()
            },
        }
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let s = TokenSigner::generate().unwrap();
        let c = claims(1_000_000, 3600);
        let t = s.sign(&c).unwrap();
        assert_eq!(t.split('.').count(), 3);
        assert_eq!(s.verify(&t, API_AUDIENCES, 1_000_010).unwrap(), c);
        // Another key's signature is refused.
        let other = TokenSigner::generate().unwrap();
        assert!(matches!(
            other.verify(&t, API_AUDIENCES, 1_000_010),
            Err(JwtError::Invalid(_))
        ));
    }

    #[test]
    fn expiry_and_audience() {
        let s = TokenSigner::generate().unwrap();
        let t = s.sign(&claims(1_000_000, 600)).unwrap();
        let err = s
            .verify(&t, API_AUDIENCES, 1_000_000 + 600 + 61)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid service-account token: token has expired"
        );
        assert!(s.verify(&t, API_AUDIENCES, 1_000_000 + 600 + 59).is_ok());
        let err = s.verify(&t, &["vault"], 1_000_000).unwrap_err();
        assert!(err.to_string().contains("audiences"), "{err}");
        let err = s.verify(&t, API_AUDIENCES, 1_000_000 - 120).unwrap_err();
        assert!(err.to_string().contains("not valid yet"), "{err}");
    }

    #[test]
    fn tampering_is_detected() {
        let s = TokenSigner::generate().unwrap();
        let t = s.sign(&claims(1_000_000, 3600)).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        // Change the subject, keep the signature.
        let mut c = claims(1_000_000, 3600);
        c.sub = "system:serviceaccount:kube-system:admin".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(serde_json::to_vec(&c).unwrap()),
            parts[2]
        );
        assert!(matches!(
            s.verify(&forged, API_AUDIENCES, 1_000_000),
            Err(JwtError::Invalid("signature does not verify"))
        ));
        // "alg: none" is refused.
        let none = format!("{}.{}.", B64.encode(br#"{"alg":"none"}"#), parts[1]);
        assert!(matches!(
            s.verify(&none, API_AUDIENCES, 1_000_000),
            Err(JwtError::Invalid(_))
        ));
        // Not a JWT at all, or another issuer's: not ours (the next authenticator asks).
        for t in ["abcdef.0123456789abcdef", "a.b.c", "x"] {
            assert!(matches!(
                s.verify(t, API_AUDIENCES, 1_000_000),
                Err(JwtError::NotOurs)
            ));
        }
        let mut c = claims(1_000_000, 3600);
        c.iss = "https://elsewhere".into();
        let t = s.sign(&c).unwrap();
        assert!(matches!(
            s.verify(&t, API_AUDIENCES, 1_000_000),
            Err(JwtError::NotOurs)
        ));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = TokenSigner::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let t = a.sign(&claims(1_000_000, 3600)).unwrap();
        let b = TokenSigner::load_or_create(dir.path()).unwrap();
        assert!(b.verify(&t, API_AUDIENCES, 1_000_000).is_ok());
        std::fs::write(dir.path().join(KEY_FILE), "junk").unwrap();
        assert!(matches!(
            TokenSigner::load_or_create(dir.path()),
            Err(JwtError::KeyFormat(_))
        ));
    }
}
