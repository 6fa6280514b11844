//! Node passwords (k3s's defence against node-name hijacking): the first certificate request
//! for a node name stores a hash of the node's password in an immutable Secret
//! `kube-system/<node>.node-password.k3rs`; later requests for that name must present the same
//! password. The hash is PBKDF2-HMAC-SHA256 with a random salt, so the Secret does not reveal
//! the password.

use std::num::NonZeroU32;

use base64::Engine;
use serde_json::{json, Value};

/// The Secret type of node password Secrets.
pub const NODE_PASSWORD_SECRET_TYPE: &str = "k3rs.io/node-password";
/// The Secret data key holding the hash.
pub const HASH_KEY: &str = "hash";
/// PBKDF2 rounds: slow enough to make guessing from a leaked Secret costly, fast enough for
/// one join.
const ITERATIONS: u32 = 100_000;
const ALGORITHM: &str = "pbkdf2-sha256";

/// k3s's message when a node presents another password for an existing name.
pub const REJECTED_MESSAGE: &str = "Node password rejected, duplicate hostname or contents of \
    '/etc/k3rs/node/password' may not match server node-passwd entry, try enabling a unique \
    node name with the --with-node-id flag";

/// The Secret's name for `node`.
pub fn secret_name(node: &str) -> String {
    format!("{node}.node-password.k3rs")
}

/// `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>` of `password` with a fresh salt.
pub fn hash(password: &str) -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut salt)?;
    Ok(hash_with(password, &salt, ITERATIONS))
}

fn hash_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; 32];
    let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        password.as_bytes(),
        &mut out,
    );
    format!("{ALGORITHM}${iterations}${}${}", hex(salt), hex(&out))
}

/// Whether `password` matches `stored` (in constant time; false for a malformed hash).
pub fn verify(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(ALGORITHM), Some(iter), Some(salt), Some(want), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(iter), Some(salt), Some(want)) = (iter.parse::<u32>(), unhex(salt), unhex(want)) else {
        return false;
    };
    if iter == 0 || iter > 10_000_000 {
        return false;
    }
    let rounds = NonZeroU32::new(iter).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        &salt,
        password.as_bytes(),
        &want,
    )
    .is_ok()
}

/// The immutable Secret that records `node`'s password hash.
pub fn to_secret(node: &str, hash: &str) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(node), "namespace": "kube-system"},
        "type": NODE_PASSWORD_SECRET_TYPE,
        "immutable": true,
        "data": {HASH_KEY: b64.encode(hash.as_bytes())},
    })
}

/// The hash stored in a node password Secret.
pub fn hash_from_secret(secret: &Value) -> Option<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let v = secret["data"][HASH_KEY].as_str()?;
    String::from_utf8(b64.decode(v).ok()?).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_hide_the_password() {
        let h = hash("0123456789abcdef").unwrap();
        assert!(h.starts_with("pbkdf2-sha256$100000$"), "{h}");
        assert!(!h.contains("0123456789abcdef"));
        assert!(verify("0123456789abcdef", &h));
        assert!(!verify("0123456789abcdeg", &h));
        // Salted: the same password hashes differently.
        assert_ne!(h, hash("0123456789abcdef").unwrap());
        let fast = hash_with("pw", b"salt", 2);
        assert!(verify("pw", &fast));
        for bad in [
            "",
            "pbkdf2-sha256$x$00$00",
            "md5$1$00$00",
            "pbkdf2-sha256$0$00$00",
            "pbkdf2-sha256$1$0$00",
            "pbkdf2-sha256$1$00$00$00",
        ] {
            assert!(!verify("pw", bad), "{bad}");
        }
    }

    #[test]
    fn secret_round_trip() {
        let s = to_secret("pi-1", "pbkdf2-sha256$1$00$00");
        assert_eq!(s["metadata"]["name"], "pi-1.node-password.k3rs");
        assert_eq!(s["immutable"], true);
        assert_eq!(
            hash_from_secret(&s).as_deref(),
            Some("pbkdf2-sha256$1$00$00")
        );
    }
}
