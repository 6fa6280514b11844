//! Upstream's `EncryptionConfiguration` (apiserver.config.k8s.io/v1) as k3s writes it to
//! `<data-dir>/server/cred/encryption-config.json`, limited to what k3s uses: the `secrets`
//! resource with `aescbc` keys and `identity`, and the aescbc wire format
//! (`k8s:enc:aescbc:v1:<key name>:` + 16-byte IV + AES-CBC ciphertext, PKCS#7 padded).

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The prefix of values written by the aescbc provider (the key name and `:` follow).
pub const AESCBC_PREFIX: &str = "k8s:enc:aescbc:v1:";
/// Any provider's prefix: a value starting with it is never plaintext JSON.
const ENC_PREFIX: &str = "k8s:enc:";

/// Why a value could not be encrypted or decrypted, or the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// The stored value names a key the configuration does not have.
    #[error("no key named {0:?} in the encryption configuration: the secret was encrypted with a key that has been removed")]
    UnknownKey(String),
    /// The stored value is from a provider k3rs does not support.
    #[error("stored value uses an unsupported encryption provider ({0})")]
    UnknownProvider(String),
    /// Wrong key, or corrupted data.
    #[error("cannot decrypt with key {0:?}: wrong key or corrupted data")]
    Decrypt(String),
    /// The configuration file is not usable.
    #[error("encryption configuration: {0}")]
    Config(String),
}

/// One aescbc key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// The key's name (written into every value it encrypts).
    pub name: String,
    /// 32 bytes, standard base64.
    pub secret: String,
}

impl Key {
    /// A new random 256-bit key called `name`.
    pub fn generate(name: &str) -> Result<Key, CryptError> {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| CryptError::Config("no randomness available".into()))?;
        Ok(Key {
            name: name.to_string(),
            secret: base64::engine::general_purpose::STANDARD.encode(b),
        })
    }

    fn bytes(&self) -> Result<[u8; 32], CryptError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.secret.trim())
            .map_err(|_| CryptError::Config(format!("key {:?} is not base64", self.name)))?;
        raw.try_into().map_err(|_| {
            CryptError::Config(format!("key {:?} must be 32 bytes (AES-256)", self.name))
        })
    }
}

/// The providers of the `secrets` resource, in order: the first one writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretsProviders {
    /// aescbc keys, the first one writes.
    pub keys: Vec<Key>,
    /// Whether aescbc comes before identity (encryption enabled).
    pub enabled: bool,
}

impl SecretsProviders {
    /// A fresh, enabled configuration with one key named `aescbckey` (k3s's first key).
    pub fn generate() -> Result<SecretsProviders, CryptError> {
        Ok(SecretsProviders {
            keys: vec![Key::generate("aescbckey")?],
            enabled: true,
        })
    }

    /// Parses an EncryptionConfiguration document.
    pub fn parse(json: &[u8]) -> Result<SecretsProviders, CryptError> {
        let v: Value = serde_json::from_slice(json)
            .map_err(|e| CryptError::Config(format!("not JSON: {e}")))?;
        let entry = v["resources"]
            .as_array()
            .and_then(|r| {
                r.iter().find(|e| {
                    e["resources"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|x| x == "secrets"))
                })
            })
            .ok_or_else(|| CryptError::Config("no entry for the secrets resource".into()))?;
        let providers = entry["providers"]
            .as_array()
            .ok_or_else(|| CryptError::Config("secrets has no providers".into()))?;
        let mut keys = Vec::new();
        let mut enabled = None;
        for p in providers {
            if let Some(k) = p.get("aescbc") {
                let parsed: Vec<Key> = serde_json::from_value(k["keys"].clone())
                    .map_err(|e| CryptError::Config(format!("aescbc keys: {e}")))?;
                for k in &parsed {
                    k.bytes()?;
                }
                keys.extend(parsed);
                enabled.get_or_insert(true);
            } else if p.get("identity").is_some() {
                enabled.get_or_insert(false);
            } else {
                return Err(CryptError::Config(format!(
                    "unsupported provider {p}: k3rs supports aescbc and identity"
                )));
            }
        }
        let enabled = enabled.unwrap_or(false) && !keys.is_empty();
        Ok(SecretsProviders { keys, enabled })
    }

    /// The EncryptionConfiguration document (k3s's layout: aescbc then identity, or the
    /// reverse when disabled).
    pub fn to_json(&self) -> Vec<u8> {
        let aescbc = serde_json::json!({"aescbc": {"keys": self.keys}});
        let identity = serde_json::json!({"identity": {}});
        let providers = if self.enabled {
            vec![aescbc, identity]
        } else {
            vec![identity, aescbc]
        };
        let doc = serde_json::json!({
            "kind": "EncryptionConfiguration",
            "apiVersion": "apiserver.config.k8s.io/v1",
            "resources": [{"resources": ["secrets"], "providers": providers}],
        });
        serde_json::to_vec_pretty(&doc).unwrap_or_default()
    }

    /// The key new writes use, when encryption is enabled.
    pub fn write_key(&self) -> Option<&Key> {
        self.keys.first().filter(|_| self.enabled)
    }

    /// `plain` as stored: encrypted with the write key, or unchanged when disabled.
    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, CryptError> {
        let Some(key) = self.write_key() else {
            return Ok(plain.to_vec());
        };
        let k = key.bytes()?;
        let mut iv = [0u8; 16];
        use ring::rand::SecureRandom;
        ring::rand::SystemRandom::new()
            .fill(&mut iv)
            .map_err(|_| CryptError::Config("no randomness available".into()))?;
        let ct = cbc::Encryptor::<aes::Aes256>::new(&k.into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plain);
        let mut out = format!("{AESCBC_PREFIX}{}:", key.name).into_bytes();
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// The plaintext of a stored value: aescbc values with any configured key, anything
    /// without a provider prefix as is (identity).
    pub fn decrypt(&self, stored: &[u8]) -> Result<Vec<u8>, CryptError> {
        let Some(rest) = stored.strip_prefix(AESCBC_PREFIX.as_bytes()) else {
            if stored.starts_with(ENC_PREFIX.as_bytes()) {
                let p = String::from_utf8_lossy(&stored[..stored.len().min(24)]).into_owned();
                return Err(CryptError::UnknownProvider(p));
            }
            return Ok(stored.to_vec());
        };
        // Key names may hold colons (k3s's are RFC 3339 times): match each key's full
        // prefix, as upstream does.
        let (key, data) = self
            .keys
            .iter()
            .find_map(|k| {
                let p = format!("{}:", k.name);
                rest.strip_prefix(p.as_bytes()).map(|d| (k, d))
            })
            .ok_or_else(|| {
                let shown = String::from_utf8_lossy(&rest[..rest.len().min(40)]);
                let name = shown.rsplit_once(':').map(|(n, _)| n).unwrap_or(&shown);
                CryptError::UnknownKey(name.to_string())
            })?;
        let name = key.name.clone();
        if data.len() < 32 || data.len() % 16 != 0 {
            return Err(CryptError::Decrypt(name));
        }
        let (iv, ct) = data.split_at(16);
        let iv: [u8; 16] = iv
            .try_into()
            .map_err(|_| CryptError::Decrypt(name.clone()))?;
        cbc::Decryptor::<aes::Aes256>::new(&key.bytes()?.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(|_| CryptError::Decrypt(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_rotation_and_identity_reads() {
        let mut p = SecretsProviders::generate().unwrap();
        let plain = br#"{"data":{"password":"c2VjcmV0"}}"#;
        let old = p.encrypt(plain).unwrap();
        assert!(old.starts_with(b"k8s:enc:aescbc:v1:aescbckey:"));
        assert!(!old.windows(8).any(|w| w == b"password"));
        assert_eq!(p.decrypt(&old).unwrap(), plain);
        assert_eq!(p.decrypt(plain).unwrap(), plain, "identity reads");
        // A second key first: new writes use it, old values still read.
        p.keys
            .insert(0, Key::generate("aescbckey-2024-01-02T03:04:05Z").unwrap());
        let new = p.encrypt(plain).unwrap();
        assert!(new.starts_with(b"k8s:enc:aescbc:v1:aescbckey-2024-01-02T03:04:05Z:"));
        assert_eq!(p.decrypt(&new).unwrap(), plain);
        assert_eq!(p.decrypt(&old).unwrap(), plain);
        // The document round-trips; disabled writes plaintext.
        let parsed = SecretsProviders::parse(&p.to_json()).unwrap();
        assert_eq!(parsed, p);
        p.enabled = false;
        assert_eq!(p.encrypt(plain).unwrap(), plain);
        assert!(!SecretsProviders::parse(&p.to_json()).unwrap().enabled);
        // Removed keys and tampered data are errors, not garbage.
        p.keys.truncate(1);
        assert!(matches!(p.decrypt(&old), Err(CryptError::UnknownKey(_))));
        let mut bad = new.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(p.decrypt(&bad).is_err());
        assert!(p.decrypt(b"k8s:enc:kms:v2:x:abc").is_err());
    }
}
