//! Secrets encryption at rest (`k3rs server --secrets-encryption`, k3s's flag): Secrets are
//! stored encrypted with upstream's aescbc provider, configured by an upstream
//! `EncryptionConfiguration` at k3s's path `<data-dir>/server/cred/encryption-config.json`
//! (0600), and managed live with `k3rs secrets-encrypt status|enable|disable|rotate-keys|
//! reencrypt` through `/v1-k3rs/encrypt/*`.
//!
//! - [`config`]: the configuration document and the aescbc format;
//! - [`store`]: the store wrapper that encrypts `/registry/core/secrets/` values on write and
//!   decrypts them on every read (get, list, delete, watch);
//! - this file: the live state ([`Encryption`]): the providers, k3s's rotation stage
//!   (kept in `encryption-state.json` next to the config), and the operations.

pub mod config;
pub mod http;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

pub use config::{CryptError, Key, SecretsProviders};

/// The configuration file under `<data-dir>/server`.
pub const CONFIG_FILE: &str = "cred/encryption-config.json";
/// The rotation stage file under `<data-dir>/server`.
pub const STATE_FILE: &str = "cred/encryption-state.json";
/// The key prefix of Secrets in the store (the only resource encrypted, as in k3s).
pub const SECRETS_PREFIX: &str = "/registry/core/secrets/";

/// k3s's rotation stages (what `secrets-encrypt status` prints).
pub mod stage {
    /// Nothing happened since the server created its key.
    pub const START: &str = "start";
    /// Reencryption is running.
    pub const REENCRYPT_ACTIVE: &str = "reencrypt_active";
    /// Every secret was rewritten with the active key.
    pub const REENCRYPT_FINISHED: &str = "reencrypt_finished";
}

/// What `GET /v1-k3rs/encrypt/status` answers (k3s's EncryptionState fields).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// "Enabled" or "Disabled".
    pub enable: bool,
    /// The rotation stage.
    pub stage: String,
    /// Whether every server uses the same configuration (one server: always).
    pub hash_match: bool,
    /// Names of the aescbc keys; the first one is active when enabled.
    pub keys: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    stage: String,
}

/// Errors of the encryption state.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// The configuration or a value.
    #[error(transparent)]
    Crypt(#[from] CryptError),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// The live encryption settings of a server.
pub struct Encryption {
    server_dir: PathBuf,
    providers: RwLock<SecretsProviders>,
    stage: RwLock<String>,
}

impl Encryption {
    /// Loads `<server_dir>/cred/encryption-config.json`, creating it with a fresh key when
    /// `create` (the server flag) and it does not exist. `None` when there is no file and
    /// `create` is false (encryption was never turned on).
    pub fn load(
        server_dir: &Path,
        create: bool,
    ) -> Result<Option<Arc<Encryption>>, EncryptionError> {
        let path = server_dir.join(CONFIG_FILE);
        let providers = match std::fs::read(&path) {
            Ok(b) => SecretsProviders::parse(&b)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let p = SecretsProviders::generate()?;
                write_file(&path, &p.to_json())?;
                tracing::info!(path = %path.display(), "secrets encryption: created the encryption configuration");
                p
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(EncryptionError::File {
                    path,
                    message: e.to_string(),
                })
            }
        };
        let stage = std::fs::read(server_dir.join(STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<StateFile>(&b).ok())
            .map(|s| s.stage)
            .unwrap_or_else(|| stage::START.to_string());
        Ok(Some(Arc::new(Encryption {
            server_dir: server_dir.to_path_buf(),
            providers: RwLock::new(providers),
            stage: RwLock::new(stage),
        })))
    }

    /// A copy of the current providers.
    pub fn providers(&self) -> SecretsProviders {
        self.providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The status `secrets-encrypt status` prints.
    pub fn status(&self) -> Status {
        let p = self.providers();
        Status {
            enable: p.enabled,
            stage: self.stage.read().unwrap_or_else(|p| p.into_inner()).clone(),
            hash_match: true,
            keys: p.keys.iter().map(|k| k.name.clone()).collect(),
        }
    }

    /// Encrypts a value for the store.
    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, CryptError> {
        self.providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .encrypt(plain)
    }

    /// Decrypts a stored value.
    pub fn decrypt(&self, stored: &[u8]) -> Result<Vec<u8>, CryptError> {
        self.providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .decrypt(stored)
    }

    /// Replaces the providers (file first, then memory: a crash in between leaves the file
    /// the truth for the next start).
    pub fn set_providers(&self, p: SecretsProviders) -> Result<(), EncryptionError> {
        write_file(&self.server_dir.join(CONFIG_FILE), &p.to_json())?;
        *self.providers.write().unwrap_or_else(|e| e.into_inner()) = p;
        Ok(())
    }

    /// Sets and records the rotation stage.
    pub fn set_stage(&self, s: &str) -> Result<(), EncryptionError> {
        let doc = serde_json::to_vec(&StateFile {
            stage: s.to_string(),
        })
        .unwrap_or_default();
        write_file(&self.server_dir.join(STATE_FILE), &doc)?;
        *self.stage.write().unwrap_or_else(|e| e.into_inner()) = s.to_string();
        Ok(())
    }

    /// A new key named like k3s's (`aescbckey-<RFC 3339 time>`) in front of the others.
    pub fn add_key_first(&self) -> Result<String, EncryptionError> {
        let mut p = self.providers();
        let mut name = format!(
            "aescbckey-{}",
            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
        );
        // Two rotations within a second must not share a name.
        while p.keys.iter().any(|k| k.name == name) {
            name.push('x');
        }
        p.keys.insert(0, Key::generate(&name)?);
        self.set_providers(p)?;
        Ok(name)
    }
}

/// Writes a private file (0600) in a 0700 directory.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), EncryptionError> {
    let err = |e: &dyn std::fmt::Display| EncryptionError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(&e))?;
    }
    crate::server::pki::write_private(path, bytes, 0o600).map_err(|e| err(&e))
}
