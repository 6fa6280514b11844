//! Join tokens as a node presents them: the k3s forms `K10<hash>::<user>:<secret>` and the bare
//! secret (parsed by [`crate::server::bootstrap::parse_token`]), plus bootstrap tokens
//! `<id>.<secret>` (kubeadm's `[a-z0-9]{6}.[a-z0-9]{16}`, also as `K10<hash>::<id>.<secret>`),
//! and the kube-system Secrets bootstrap tokens are stored in, laid out exactly like upstream's
//! (`bootstrap-token-<id>`, type `bootstrap.kubernetes.io/token`).

use base64::Engine;
use serde_json::{json, Value};

use crate::server::bootstrap::{self, TOKEN_PREFIX};

/// The Secret type of bootstrap tokens.
pub const BOOTSTRAP_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Prefix of a bootstrap token Secret's name.
pub const BOOTSTRAP_SECRET_PREFIX: &str = "bootstrap-token-";
/// The namespace bootstrap token Secrets live in.
pub const BOOTSTRAP_NAMESPACE: &str = "kube-system";
/// The user name agents send with the server or agent token (k3s's `node`).
pub const NODE_USER: &str = "node";

/// Errors from reading a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinTokenError {
    /// The text is not a token in any accepted form.
    #[error(
        "invalid token: {0}; a token looks like K10<CA-HASH>::<USERNAME>:<PASSWORD>, \
         K10<CA-HASH>::<ID>.<SECRET>, or a bare secret"
    )]
    Invalid(String),
}

/// How a node proves it may join.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// HTTP Basic `user:secret` (the server or agent token).
    Basic {
        /// `server` or `node`.
        user: String,
        /// The shared secret.
        secret: String,
    },
    /// A bootstrap token, sent as `Authorization: Bearer <id>.<secret>`.
    Bootstrap(BootstrapToken),
}

/// A token given to `k3rs agent --token`: the CA hash to pin (if any) and the credential.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lower-case hex SHA-256 of the CA bundle, when the token carries one.
    pub ca_hash: Option<String>,
    /// What the agent authenticates with.
    pub credential: Credential,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.credential {
            Credential::Basic { user, .. } => format!("basic user {user}"),
            Credential::Bootstrap(b) => format!("bootstrap token {}", b.id),
        };
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .field("credential", &kind)
            .finish()
    }
}

/// A bootstrap token `<id>.<secret>`. `Debug` shows only the id (the public part).
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// Six characters of `[a-z0-9]`, public (it names the Secret).
    pub id: String,
    /// Sixteen characters of `[a-z0-9]`.
    pub secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

impl BootstrapToken {
    /// Parses `<id>.<secret>` strictly (`[a-z0-9]{6}\.[a-z0-9]{16}`).
    pub fn parse(s: &str) -> Option<BootstrapToken> {
        let (id, secret) = s.split_once('.')?;
        let ok = |p: &str, n: usize| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        (ok(id, 6) && ok(secret, 16)).then(|| BootstrapToken {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// A new random token.
    pub fn generate() -> Result<BootstrapToken, JoinTokenError> {
        Ok(BootstrapToken {
            id: random_alnum(6)?,
            secret: random_alnum(16)?,
        })
    }

    /// `<id>.<secret>`.
    pub fn text(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The Secret's name, `bootstrap-token-<id>`.
    pub fn secret_name(&self) -> String {
        format!("{BOOTSTRAP_SECRET_PREFIX}{}", self.id)
    }

    /// The Secret upstream stores this token as. `expiration` is RFC 3339 (UTC).
    pub fn to_secret(&self, expiration: Option<&str>, description: Option<&str>) -> Value {
        let mut string_data = serde_json::Map::new();
        string_data.insert("token-id".into(), json!(self.id));
        string_data.insert("token-secret".into(), json!(self.secret));
        if let Some(e) = expiration {
            string_data.insert("expiration".into(), json!(e));
        }
        if let Some(d) = description.filter(|d| !d.is_empty()) {
            string_data.insert("description".into(), json!(d));
        }
        string_data.insert("usage-bootstrap-authentication".into(), json!("true"));
        string_data.insert("usage-bootstrap-signing".into(), json!("true"));
        string_data.insert(
            "auth-extra-groups".into(),
            json!("system:bootstrappers:k3rs:default-node-token"),
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let data: serde_json::Map<String, Value> = string_data
            .into_iter()
            .map(|(k, v)| {
                let s = v.as_str().unwrap_or_default().to_string();
                (k, json!(b64.encode(s.as_bytes())))
            })
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.secret_name(), "namespace": BOOTSTRAP_NAMESPACE},
            "type": BOOTSTRAP_SECRET_TYPE,
            "data": data,
        })
    }
}

/// `n` random characters of `[a-z0-9]` from the system CSPRNG (rejection sampling, so
/// every character is equally likely).
fn random_alnum(n: usize) -> Result<String, JoinTokenError> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        rng.fill(&mut buf)
            .map_err(|_| JoinTokenError::Invalid("no randomness available".into()))?;
        for b in buf {
            // 252 = 7 * 36: values above it would bias the first characters.
            if b < 252 && out.len() < n {
                out.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// Parses a token as `k3rs agent --token` takes it. A bare secret or `K10<hash>::<user>:...`
/// with an empty user authenticates as `node`; `<id>.<secret>` (bare or after `K10<hash>::`)
/// is a bootstrap token.
pub fn parse_join_token(s: &str) -> Result<JoinToken, JoinTokenError> {
    let s = s.trim();
    if let Some(b) = BootstrapToken::parse(s) {
        return Ok(JoinToken {
            ca_hash: None,
            credential: Credential::Bootstrap(b),
        });
    }
    if let Some((hash, rest)) = s
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|r| r.split_once("::"))
    {
        if let Some(b) = BootstrapToken::parse(rest) {
            let parsed = bootstrap::parse_token(&format!("{TOKEN_PREFIX}{hash}::x:x"))
                .map_err(|e| JoinTokenError::Invalid(strip_invalid(&e.to_string())))?;
            return Ok(JoinToken {
                ca_hash: parsed.ca_hash,
                credential: Credential::Bootstrap(b),
            });
        }
    }
    let t = bootstrap::parse_token(s)
        .map_err(|e| JoinTokenError::Invalid(strip_invalid(&e.to_string())))?;
    let user = if t.username.is_empty() {
        NODE_USER.to_string()
    } else {
        t.username
    };
    Ok(JoinToken {
        ca_hash: t.ca_hash,
        credential: Credential::Basic {
            user,
            secret: t.secret,
        },
    })
}

fn strip_invalid(msg: &str) -> String {
    msg.trim_start_matches("invalid token: ").to_string()
}

/// What a stored bootstrap token Secret says, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBootstrapToken {
    /// `token-id`.
    pub id: String,
    /// `token-secret` (never logged).
    pub secret: String,
    /// `expiration`, when set.
    pub expiration: Option<jiff::Timestamp>,
    /// `description`.
    pub description: String,
    /// The `usage-bootstrap-*` keys set to "true", without the prefix.
    pub usages: Vec<String>,
    /// `auth-extra-groups`, comma-separated.
    pub extra_groups: String,
}

impl StoredBootstrapToken {
    /// Reads a bootstrap token Secret (None when it is not one, or malformed).
    pub fn from_secret(secret: &Value) -> Option<StoredBootstrapToken> {
        if secret["type"].as_str() != Some(BOOTSTRAP_SECRET_TYPE) {
            return None;
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let data = secret["data"].as_object()?;
        let get = |k: &str| -> Option<String> {
            let v = data.get(k)?.as_str()?;
            String::from_utf8(b64.decode(v).ok()?).ok()
        };
        let id = get("token-id")?;
        let name = secret["metadata"]["name"].as_str()?;
        if name != format!("{BOOTSTRAP_SECRET_PREFIX}{id}") {
            return None;
        }
        let expiration = match get("expiration") {
            Some(e) => Some(e.parse::<jiff::Timestamp>().ok()?),
            None => None,
        };
        let mut usages: Vec<String> = data
            .keys()
            .filter_map(|k| k.strip_prefix("usage-bootstrap-"))
            .filter(|u| get(&format!("usage-bootstrap-{u}")).as_deref() == Some("true"))
            .map(str::to_string)
            .collect();
        usages.sort();
        Some(StoredBootstrapToken {
            id,
            secret: get("token-secret")?,
            expiration,
            description: get("description").unwrap_or_default(),
            usages,
            extra_groups: get("auth-extra-groups").unwrap_or_default(),
        })
    }

    /// True when the expiration has passed at `now`.
    pub fn expired(&self, now: jiff::Timestamp) -> bool {
        self.expiration.is_some_and(|e| e <= now)
    }

    /// Whether `given` is this token, usable for authentication at `now` (constant-time
    /// comparison of the secret).
    pub fn authenticates(&self, given: &BootstrapToken, now: jiff::Timestamp) -> bool {
        let secret_ok =
            bootstrap::constant_time_eq(self.secret.as_bytes(), given.secret.as_bytes());
        secret_ok
            && self.id == given.id
            && !self.expired(now)
            && self.usages.iter().any(|u| u == "authentication")
    }
}

/// Parses a `--ttl` such as `24h`, `30m`, `1h30m`, `90s`, `2d` (0 = never expires).
pub fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(format!("unknown unit {c:?} (use s, m, h or d)")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| "expected a number before the unit")?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err("a duration needs a unit, e.g. 24h or 30m".into());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_tokens_parse_strictly() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(t.id, "abcdef");
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        for bad in [
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef0123456789abcdef",
            "abcdef.0123456789abcdef.",
            "abcdef.0123456789abcdeF",
        ] {
            assert!(BootstrapToken::parse(bad).is_none(), "{bad}");
        }
        let g = BootstrapToken::generate().unwrap();
        assert!(BootstrapToken::parse(&g.text()) == Some(g.clone()));
        assert_ne!(g, BootstrapToken::generate().unwrap());
    }

    #[test]
    fn join_tokens_in_every_form() {
        let h = "ab".repeat(32);
        let t = parse_join_token(&format!("K10{h}::server:s3cret")).unwrap();
        assert_eq!(t.ca_hash.as_deref(), Some(h.as_str()));
        assert!(
            t.credential
                == Credential::Basic {
                    user: "server".into(),
                    secret: "s3cret".into()
                }
        );
        let t = parse_join_token("bare-secret").unwrap();
        assert_eq!(t.ca_hash, None);
        assert!(matches!(t.credential, Credential::Basic { ref user, .. } if user == "node"));
        let t = parse_join_token(&format!("K10{h}::abcdef.0123456789abcdef\n")).unwrap();
        assert_eq!(t.ca_hash.as_deref(), Some(h.as_str()));
        assert!(matches!(t.credential, Credential::Bootstrap(ref b) if b.id == "abcdef"));
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        let t = parse_join_token("abcdef.0123456789abcdef").unwrap();
        assert!(matches!(t.credential, Credential::Bootstrap(_)));

        let err = parse_join_token("K10abc::abcdef.0123456789abcdef").unwrap_err();
        assert!(err.to_string().contains("64 hexadecimal"), "{err}");
        assert!(parse_join_token("").is_err());
        assert!(parse_join_token(&format!("K10{h}::nocolon")).is_err());
    }

    #[test]
    fn secrets_round_trip_like_upstream() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let s = t.to_secret(Some("2030-01-01T00:00:00Z"), Some("for the pi"));
        assert_eq!(s["type"], BOOTSTRAP_SECRET_TYPE);
        assert_eq!(s["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(s["metadata"]["namespace"], "kube-system");
        assert_eq!(s["data"]["token-id"], "YWJjZGVm");
        let stored = StoredBootstrapToken::from_secret(&s).unwrap();
        assert_eq!(stored.id, "abcdef");
        assert_eq!(stored.description, "for the pi");
        assert_eq!(stored.usages, vec!["authentication", "signing"]);
        let before: jiff::Timestamp = "2029-12-31T00:00:00Z".parse().unwrap();
        let after: jiff::Timestamp = "2030-01-01T00:00:01Z".parse().unwrap();
        assert!(stored.authenticates(&t, before));
        assert!(!stored.authenticates(&t, after), "expired");
        assert!(stored.expired(after));
        let wrong = BootstrapToken::parse("abcdef.0123456789abcdee").unwrap();
        assert!(!stored.authenticates(&wrong, before));

        // Not a bootstrap token, or a name that does not match the id.
        let mut other = s.clone();
        other["type"] = json!("Opaque");
        assert!(StoredBootstrapToken::from_secret(&other).is_none());
        let mut other = s.clone();
        other["metadata"]["name"] = json!("bootstrap-token-zzzzzz");
        assert!(StoredBootstrapToken::from_secret(&other).is_none());
        // No expiration: never expires.
        let s = t.to_secret(None, None);
        let stored = StoredBootstrapToken::from_secret(&s).unwrap();
        assert!(stored.authenticates(&t, after));
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("24h").unwrap().as_secs(), 86400);
        assert_eq!(parse_ttl("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_ttl("2d").unwrap().as_secs(), 172800);
        assert_eq!(parse_ttl("0").unwrap().as_secs(), 0);
        assert!(parse_ttl("24").is_err());
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("").is_err());
    }
}
