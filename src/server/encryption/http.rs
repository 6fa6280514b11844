//! `/v1-k3rs/encrypt/status` and `/v1-k3rs/encrypt/config` (k3s's `/v1-k3s/encrypt/*`):
//! what `k3rs secrets-encrypt` reads and asks for. The join endpoints authenticate the caller
//! (server token or an admin certificate) before these run.
//!
//! `PUT config` takes `{"action": "enable" | "disable" | "rotate-keys" | "reencrypt"}`:
//! enable/disable choose whether new writes are encrypted (existing values follow on the
//! next reencrypt, as in k3s); rotate-keys puts a new key first and reencrypts; reencrypt
//! rewrites every Secret with the active key and then drops the keys nothing uses any more.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{json, Value};

use super::store::EncryptingStore;
use super::{stage, Encryption, Status};
use crate::api::status::ApiError;
use crate::server::http::body::{json_response, Resp};

/// The encryption state and the store wrapper of a server with a configuration.
pub type Live = (Arc<Encryption>, Arc<EncryptingStore>);

/// `GET status`: the status, or "disabled, no keys" without a configuration.
pub fn status(live: Option<&Live>) -> Resp {
    let s = live.map(|(e, _)| e.status()).unwrap_or_default();
    json_response(StatusCode::OK, &json!(s))
}

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

/// `PUT config`.
pub async fn config(live: Option<&Live>, body: &[u8]) -> Result<Resp, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "the body must be JSON {\"action\": \"enable|disable|rotate-keys|reencrypt\"}",
        )
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| bad())?;
    let action = v["action"].as_str().ok_or_else(bad)?;
    let Some((enc, store)) = live else {
        return Err(ApiError::bad_request(
            "secrets encryption is not configured on this server: start it with --secrets-encryption",
        ));
    };
    let mut reencrypted = None;
    match action {
        "enable" | "disable" => {
            let mut p = enc.providers();
            p.enabled = action == "enable";
            enc.set_providers(p).map_err(|e| internal(&e))?;
            tracing::info!(
                "secrets encryption {action}d; run reencrypt to rewrite existing secrets"
            );
        }
        "rotate-keys" => {
            let name = enc.add_key_first().map_err(|e| internal(&e))?;
            let mut p = enc.providers();
            // Rotating keys means encrypting, as in k3s.
            p.enabled = true;
            enc.set_providers(p).map_err(|e| internal(&e))?;
            tracing::info!(key = %name, "secrets encryption: new key added");
            reencrypted = Some(reencrypt(enc, store).await?);
        }
        "reencrypt" => reencrypted = Some(reencrypt(enc, store).await?),
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown action {other:?}: use enable, disable, rotate-keys or reencrypt"
            )))
        }
    }
    let status: Status = enc.status();
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": status, "reencrypted": reencrypted}),
    ))
}

/// Rewrites every Secret with the active provider, then keeps only the active key (when
/// enabled: nothing is encrypted with the others any more).
async fn reencrypt(enc: &Encryption, store: &EncryptingStore) -> Result<usize, ApiError> {
    enc.set_stage(stage::REENCRYPT_ACTIVE)
        .map_err(|e| internal(&e))?;
    let n = store.reencrypt().await.map_err(|e| internal(&e))?;
    let mut p = enc.providers();
    if p.enabled {
        p.keys.truncate(1);
        enc.set_providers(p).map_err(|e| internal(&e))?;
    }
    enc.set_stage(stage::REENCRYPT_FINISHED)
        .map_err(|e| internal(&e))?;
    tracing::info!(secrets = n, "secrets encryption: reencryption finished");
    Ok(n)
}
