//! The cluster token: k3s's secure format `K10<sha256 of the server CA PEM>::server:<secret>`,
//! kept in `<data-dir>/server/token` (mode 0600, with a `node-token` symlink like k3s).
//!
//! The hash lets a joining node pin the CA it downloads from `/cacerts` before trusting it; the
//! secret authenticates the node. The secret never goes to the log.

use std::path::Path;

use crate::server::pki::{write_private, PkiError};

/// Every secure token starts with this.
pub const TOKEN_PREFIX: &str = "K10";
/// The user name of the server token.
pub const SERVER_USER: &str = "server";
/// The token file, under the server directory.
pub const TOKEN_FILE: &str = "token";
/// The k3s-compatible alias of the token file (a symlink to it).
pub const NODE_TOKEN_FILE: &str = "node-token";

const FORMAT_HINT: &str = "must be in format K10<CA-HASH>::<USERNAME>:<PASSWORD> or <PASSWORD>";

/// A parsed token. `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedToken {
    /// Lower-case hex SHA-256 of the CA bundle, when the token carries one.
    pub ca_hash: Option<String>,
    /// The user name (`server`, `node`, ...); empty for a bare secret, so the caller picks.
    pub username: String,
    /// The shared secret.
    pub secret: String,
}

impl std::fmt::Debug for ParsedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedToken")
            .field("ca_hash", &self.ca_hash)
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Errors reading, checking or writing the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token text is malformed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A full token whose CA hash is not this cluster's.
    #[error(
        "the token's CA hash {given} does not match this cluster's CA (hash {actual}); use the \
         token from {path}"
    )]
    CaMismatch {
        /// Hash in the given token.
        given: String,
        /// Hash of this cluster's CA.
        actual: String,
        /// The token file that holds the right token.
        path: String,
    },
    /// A given secret that differs from the one the cluster was created with.
    #[error(
        "token does not match the existing cluster token in {path}; start the server with the \
         original token, or without --token to use the stored one"
    )]
    Mismatch {
        /// The token file.
        path: String,
    },
    /// Reading the token file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the token file failed.
    #[error(transparent)]
    Write(#[from] PkiError),
}

/// Lower-case hex SHA-256 of the CA bundle bytes, as in the token and as a joining node
/// computes it over what `/cacerts` returns.
pub fn ca_hash(ca_pem: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses `K10<hash>::<user>:<secret>` (the hash may be empty) or a bare secret (which may
/// itself contain `:`), like k3s. Surrounding whitespace is ignored.
pub fn parse_token(s: &str) -> Result<ParsedToken, TokenError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(TokenError::Invalid("token must not be empty".into()));
    }
    let Some(rest) = s.strip_prefix(TOKEN_PREFIX) else {
        return Ok(ParsedToken {
            ca_hash: None,
            username: String::new(),
            secret: s.to_string(),
        });
    };
    let bad = || TokenError::Invalid(FORMAT_HINT.into());
    let (hash, creds) = rest.split_once("::").ok_or_else(bad)?;
    if !hash.is_empty() && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(TokenError::Invalid(
            "the CA hash must be 64 hexadecimal characters".into(),
        ));
    }
    let (user, secret) = creds.split_once(':').ok_or_else(bad)?;
    if secret.is_empty() {
        return Err(bad());
    }
    Ok(ParsedToken {
        ca_hash: (!hash.is_empty()).then(|| hash.to_ascii_lowercase()),
        username: user.to_string(),
        secret: secret.to_string(),
    })
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The full server token for `secret` under the CA `ca_pem`.
pub fn full_token(ca_pem: &str, secret: &str) -> String {
    format!("{TOKEN_PREFIX}{}::{SERVER_USER}:{secret}", ca_hash(ca_pem))
}

/// Returns the cluster's full token, creating `<server_dir>/token` on first start.
///
/// - `given` (from `--token`) may be a bare secret or a full token; a full token's CA hash must
///   match `ca_pem`.
/// - When the token file exists its secret is the cluster's; a different `given` secret is an
///   error (as in k3s, the token cannot be changed by restarting with another one).
/// - Otherwise the secret is `given`, or 32 random hex characters.
pub fn ensure_token(
    server_dir: &Path,
    ca_pem: &str,
    given: Option<&str>,
) -> Result<String, TokenError> {
    let path = server_dir.join(TOKEN_FILE);
    let path_str = path.display().to_string();
    let hash = ca_hash(ca_pem);
    let given = match given.map(str::trim).filter(|g| !g.is_empty()) {
        Some(g) => Some(parse_token(g)?),
        None => None,
    };
    if let Some(h) = given.as_ref().and_then(|g| g.ca_hash.as_ref()) {
        if *h != hash {
            return Err(TokenError::CaMismatch {
                given: h.clone(),
                actual: hash,
                path: path_str,
            });
        }
    }

    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => Some(parse_token(&text).map_err(|e| {
            TokenError::Invalid(format!("{path_str}: {e}; fix or remove the file"))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(TokenError::Io {
                path: path_str,
                source: e,
            })
        }
    };

    let token = match stored {
        Some(stored) => {
            if let Some(g) = &given {
                if !constant_time_eq(g.secret.as_bytes(), stored.secret.as_bytes()) {
                    return Err(TokenError::Mismatch { path: path_str });
                }
            }
            let token = full_token(ca_pem, &stored.secret);
            if stored.ca_hash.as_deref() != Some(hash.as_str()) || stored.username != SERVER_USER {
                tracing::warn!("updating {path_str} to the current CA hash");
                write_private(&path, format!("{token}\n").as_bytes(), 0o600)?;
            }
            token
        }
        None => {
            let secret = match given {
                Some(g) => g.secret,
                None => random_secret()?,
            };
            let token = full_token(ca_pem, &secret);
            write_private(&path, format!("{token}\n").as_bytes(), 0o600)?;
            tracing::info!("wrote the cluster token to {path_str}");
            token
        }
    };
    link_node_token(server_dir)?;
    Ok(token)
}

/// `node-token` → `token`, as k3s has it (users `cat` either).
fn link_node_token(server_dir: &Path) -> Result<(), TokenError> {
    let link = server_dir.join(NODE_TOKEN_FILE);
    match std::fs::symlink_metadata(&link) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::os::unix::fs::symlink(TOKEN_FILE, &link) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(TokenError::Io {
                    path: link.display().to_string(),
                    source: e,
                }),
            }
        }
        Err(e) => Err(TokenError::Io {
            path: link.display().to_string(),
            source: e,
        }),
    }
}

/// 32 hex characters (128 bits) from the system CSPRNG.
fn random_secret() -> Result<String, TokenError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Invalid("no randomness available to generate a token".into()))?;
    Ok(hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const OTHER_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n";

    #[test]
    fn parses_the_k3s_forms() {
        let h = "a".repeat(64);
        let t = parse_token(&format!("K10{h}::server:s3cret\n")).unwrap();
        assert_eq!(t.ca_hash.as_deref(), Some(h.as_str()));
        assert_eq!(t.username, "server");
        assert_eq!(t.secret, "s3cret");

        let t = parse_token("K10::node:pw:with:colons").unwrap();
        assert_eq!(t.ca_hash, None);
        assert_eq!(t.username, "node");
        assert_eq!(t.secret, "pw:with:colons");

        let t = parse_token("just-a-secret").unwrap();
        assert_eq!(
            (t.ca_hash, t.username, t.secret.as_str()),
            (None, String::new(), "just-a-secret")
        );
        let t = parse_token("abcdef.0123456789abcdef").unwrap();
        assert_eq!(t.secret, "abcdef.0123456789abcdef");

        for bad in [
            "",
            "  \n",
            &format!("K10{h}::nocolon"),
            &format!("K10{h}::server:"),
            "K10abc::server:x",
            &format!("K10{}::server:x", "g".repeat(64)),
            "K10nohashseparator",
        ] {
            assert!(parse_token(bad).is_err(), "{bad:?} parsed");
        }
        let msg = parse_token(&format!("K10{h}::nocolon"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("K10<CA-HASH>::<USERNAME>:<PASSWORD>"), "{msg}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = parse_token("K10::server:topsecret").unwrap();
        assert!(!format!("{t:?}").contains("topsecret"));
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn generates_and_reuses_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let token = ensure_token(dir.path(), CA, None).unwrap();
        let t = parse_token(&token).unwrap();
        assert_eq!(t.ca_hash.as_deref(), Some(ca_hash(CA).as_str()));
        assert_eq!(t.username, "server");
        assert_eq!(t.secret.len(), 32);
        assert!(t.secret.bytes().all(|b| b.is_ascii_hexdigit()));
        // The hash is the SHA-256 of the PEM bytes.
        let digest = ring::digest::digest(&ring::digest::SHA256, CA.as_bytes());
        assert_eq!(ca_hash(CA), hex(digest.as_ref()));
        assert!(token.starts_with(&format!("K10{}::server:", ca_hash(CA))));

        let path = dir.path().join("token");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{token}\n")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let node_token = std::fs::read_to_string(dir.path().join("node-token")).unwrap();
        assert_eq!(node_token.trim(), token);

        // Restarts reuse it, with or without the secret or full token given again.
        assert_eq!(ensure_token(dir.path(), CA, None).unwrap(), token);
        assert_eq!(
            ensure_token(dir.path(), CA, Some(&t.secret)).unwrap(),
            token
        );
        assert_eq!(ensure_token(dir.path(), CA, Some(&token)).unwrap(), token);
    }

    #[test]
    fn given_secret_is_used_and_then_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let token = ensure_token(dir.path(), CA, Some("my-secret")).unwrap();
        assert_eq!(token, format!("K10{}::server:my-secret", ca_hash(CA)));

        let err = ensure_token(dir.path(), CA, Some("other-secret")).unwrap_err();
        assert!(matches!(err, TokenError::Mismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("does not match the existing cluster token"),
            "{msg}"
        );
        assert!(
            !msg.contains("other-secret") && !msg.contains("my-secret"),
            "{msg}"
        );
        // The file is unchanged.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("token"))
                .unwrap()
                .trim(),
            token
        );
    }

    #[test]
    fn full_token_must_match_this_ca() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = full_token(OTHER_CA, "abc");
        let err = ensure_token(dir.path(), CA, Some(&foreign)).unwrap_err();
        assert!(matches!(err, TokenError::CaMismatch { .. }), "{err}");
        assert!(!dir.path().join("token").exists());

        let ours = full_token(CA, "abc");
        assert_eq!(ensure_token(dir.path(), CA, Some(&ours)).unwrap(), ours);
    }

    #[test]
    fn stored_token_follows_a_new_ca_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let old = ensure_token(dir.path(), CA, Some("keep")).unwrap();
        let new = ensure_token(dir.path(), OTHER_CA, None).unwrap();
        assert_ne!(old, new);
        assert_eq!(new, full_token(OTHER_CA, "keep"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("token"))
                .unwrap()
                .trim(),
            new
        );

        std::fs::write(dir.path().join("token"), "K10zz::broken").unwrap();
        let msg = ensure_token(dir.path(), CA, None).unwrap_err().to_string();
        assert!(
            msg.contains("token") && msg.contains("fix or remove"),
            "{msg}"
        );
    }
}
