//! `k3rs secrets-encrypt status|enable|disable|rotate-keys|reencrypt` (k3s's subcommands and
//! wording): asks the local server's `/v1-k3rs/encrypt/*` with the admin kubeconfig and
//! prints k3s's status fields. The server applies every change at once (no restart needed).

use std::path::PathBuf;

use http::Method;
use serde_json::{json, Value};

use crate::agent::client::ApiClient;
use crate::server::encryption::Status;

/// `k3rs secrets-encrypt` flags.
#[derive(clap::Args, Debug)]
pub struct SecretsEncryptArgs {
    #[command(subcommand)]
    action: Action,
    /// Admin kubeconfig for the server (default: the one the server writes)
    #[arg(long, global = true, env = "K3RS_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug, Clone, Copy)]
enum Action {
    /// Print current status of secrets encryption
    Status,
    /// Enable secrets encryption (existing secrets follow on reencrypt)
    Enable,
    /// Disable secrets encryption (existing secrets follow on reencrypt)
    Disable,
    /// Rotate secrets encryption keys and reencrypt all secrets
    RotateKeys,
    /// Reencrypt all secrets with the active key and drop the unused keys
    Reencrypt,
}

/// Runs `k3rs secrets-encrypt ...`.
pub async fn run(args: SecretsEncryptArgs) -> anyhow::Result<()> {
    let kc = super::admin_kubeconfig(args.kubeconfig.as_deref())?;
    let api = ApiClient::new(
        kc,
        &format!("k3rs-secrets-encrypt/{}", crate::version::git_version()),
    )?;
    let action = match args.action {
        Action::Status => {
            let v = call(&api, Method::GET, "status", None).await?;
            let s: Status = serde_json::from_value(v)?;
            print!("{}", status_text(&s));
            return Ok(());
        }
        Action::Enable => "enable",
        Action::Disable => "disable",
        Action::RotateKeys => "rotate-keys",
        Action::Reencrypt => "reencrypt",
    };
    let v = call(&api, Method::PUT, "config", Some(json!({"action": action}))).await?;
    match action {
        "enable" => println!("secrets-encryption enabled"),
        "disable" => println!("secrets-encryption disabled"),
        "rotate-keys" => println!("keys rotated, reencryption finished"),
        _ => println!("reencryption finished"),
    }
    if let Some(n) = v["reencrypted"].as_u64() {
        println!("{n} secret(s) reencrypted");
    }
    Ok(())
}

async fn call(
    api: &ApiClient,
    method: Method,
    what: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    super::bootstrap_call(
        api,
        method,
        &format!("encrypt/{what}"),
        body,
        "secrets-encrypt",
    )
    .await
}

/// k3s's `secrets-encrypt status` text.
fn status_text(s: &Status) -> String {
    if s.keys.is_empty() {
        return "Encryption Status: Disabled, no configuration file found\n".into();
    }
    let mut out = format!(
        "Encryption Status: {}\nCurrent Rotation Stage: {}\nServer Encryption Hashes: {}\n\n",
        if s.enable { "Enabled" } else { "Disabled" },
        s.stage,
        if s.hash_match {
            "All hashes match"
        } else {
            "hashes do not match"
        }
    );
    out.push_str("Active  Key Type  Name\n------  --------  ----\n");
    for (i, k) in s.keys.iter().enumerate() {
        let active = if i == 0 && s.enable { " *" } else { "" };
        out.push_str(&format!("{active:<8}AES-CBC   {k}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_k3s_fields() {
        let s = Status {
            enable: true,
            stage: "start".into(),
            hash_match: true,
            keys: vec!["aescbckey".into()],
        };
        assert_eq!(
            status_text(&s),
            "Encryption Status: Enabled\nCurrent Rotation Stage: start\nServer Encryption Hashes: All hashes match\n\nActive  Key Type  Name\n------  --------  ----\n *      AES-CBC   aescbckey\n"
        );
        assert!(status_text(&Status::default()).contains("Disabled, no configuration file found"));
    }
}
