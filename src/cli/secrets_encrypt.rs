//! `k3rs secrets-encrypt status|enable|disable|rotate-keys|reencrypt` (k3s's subcommands and
//! wording): asks the server's `/v1-k3rs/encrypt/*` and prints k3s's status fields. Like
//! k3s, it talks to `--server` (default https://127.0.0.1:6443) with the server token
//! (`--token`, else `<data-dir>/server/token`), checking the server's CA against the token;
//! with `--kubeconfig` it uses that admin kubeconfig instead. The server applies every
//! change at once (no restart needed).

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
    /// Admin kubeconfig to use instead of the server token
    #[arg(long, global = true, env = "K3RS_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Folder holding the server's state (its token is read from here)
    #[arg(long, short = 'd', global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Server to connect to
    #[arg(
        long,
        short = 's',
        global = true,
        env = "K3RS_URL",
        default_value = "https://127.0.0.1:6443",
        value_name = "URL"
    )]
    server: String,
    /// Token to use for authentication (default: the server's token file)
    #[arg(
        long,
        short = 't',
        global = true,
        env = "K3RS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
}

/// How the CLI reaches the server.
enum Conn {
    Admin(ApiClient),
    Token { server: String, token: String },
}

fn connect(args: &SecretsEncryptArgs) -> anyhow::Result<Conn> {
    if args.kubeconfig.is_none() {
        let token = match &args.token {
            Some(t) => Some(t.trim().to_string()),
            None => {
                let dir = args
                    .data_dir
                    .clone()
                    .unwrap_or_else(super::default_data_dir);
                std::fs::read_to_string(
                    dir.join("server")
                        .join(crate::server::bootstrap::TOKEN_FILE),
                )
                .ok()
                .map(|t| t.trim().to_string())
            }
        };
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            return Ok(Conn::Token {
                server: args.server.clone(),
                token,
            });
        }
    }
    let kc = super::admin_kubeconfig(args.kubeconfig.as_deref())?;
    Ok(Conn::Admin(ApiClient::new(
        kc,
        &format!("k3rs-secrets-encrypt/{}", crate::version::git_version()),
    )?))
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
    let api = connect(&args)?;
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
    conn: &Conn,
    method: Method,
    what: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let what = format!("encrypt/{what}");
    match conn {
        Conn::Admin(api) => {
            super::bootstrap_call(api, method, &what, body, "secrets-encrypt").await
        }
        Conn::Token { server, token } => {
            let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
            let bytes =
                crate::agent::join::token_request(server, token, method, &what, body).await?;
            Ok(serde_json::from_slice(&bytes)?)
        }
    }
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
