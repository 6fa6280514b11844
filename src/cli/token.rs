//! `k3rs token create|list|delete|rotate`: bootstrap tokens stored as kube-system Secrets
//! (kubeadm's layout), created and listed through the local server's API with the admin
//! kubeconfig, and rotation of the server token (`PUT /v1-k3rs/token`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use http::Method;
use serde_json::{json, Value};

use crate::agent::client::ApiClient;
use crate::server::join::token::{
    parse_ttl, BootstrapToken, StoredBootstrapToken, BOOTSTRAP_SECRET_TYPE,
};

/// `k3rs token` flags.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    action: TokenAction,
    /// Admin kubeconfig for the server (default: the one the server writes)
    #[arg(long, global = true, env = "K3RS_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum TokenAction {
    /// Create a bootstrap token on the server and print the join token
    Create {
        /// The token to create (<id>.<secret>; default: a random one)
        token: Option<String>,
        /// How long the token is valid (e.g. 24h, 30m; 0 = never expires)
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        ttl: String,
        /// A human friendly description of how this token is used
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// List bootstrap tokens on the server
    List {
        /// Output format: table or json
        #[arg(short = 'o', long, default_value = "table", value_name = "FORMAT")]
        output: String,
    },
    /// Delete bootstrap tokens on the server
    Delete {
        /// Token ids (or full <id>.<secret> tokens) to delete
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Rotate the server token (joined nodes keep working with their certificates)
    Rotate {
        /// The new token secret (default: a random one)
        #[arg(
            long,
            env = "K3RS_NEW_TOKEN",
            hide_env_values = true,
            value_name = "TOKEN"
        )]
        new_token: Option<String>,
    },
}

fn client(args: &TokenArgs) -> anyhow::Result<(ApiClient, String)> {
    let kc = super::admin_kubeconfig(args.kubeconfig.as_deref())?;
    let ca = String::from_utf8(kc.ca_pem.clone()).context("the kubeconfig's CA is not PEM")?;
    let hash = crate::server::bootstrap::ca_hash(&ca);
    let api = ApiClient::new(kc, &format!("k3rs-token/{}", crate::version::git_version()))?;
    Ok((api, hash))
}

const SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";

/// Runs `k3rs token ...`.
pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let (api, hash) = client(&args)?;
    match args.action {
        TokenAction::Create {
            token,
            ttl,
            description,
        } => {
            let t = match token {
                Some(t) => BootstrapToken::parse(t.trim())
                    .context("a bootstrap token must match [a-z0-9]{6}.[a-z0-9]{16}")?,
                None => BootstrapToken::generate()?,
            };
            let ttl = parse_ttl(&ttl).map_err(|e| anyhow::anyhow!("invalid --ttl {ttl:?}: {e}"))?;
            let expiration = (!ttl.is_zero())
                .then(|| {
                    jiff::Timestamp::now()
                        .checked_add(jiff::SignedDuration::from_secs(ttl.as_secs() as i64))
                        .ok()
                        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                })
                .flatten();
            let secret = t.to_secret(expiration.as_deref(), description.as_deref());
            api.create::<_, Value>(SECRETS, &secret)
                .await
                .with_context(|| format!("creating bootstrap token {}", t.id))?;
            println!("K10{hash}::{}", t.text());
        }
        TokenAction::List { output } => {
            let list: Value = api
                .get(SECRETS)
                .await?
                .unwrap_or_else(|| json!({"items": []}));
            let tokens: Vec<StoredBootstrapToken> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["type"] == BOOTSTRAP_SECRET_TYPE)
                .filter_map(StoredBootstrapToken::from_secret)
                .collect();
            match output.as_str() {
                "table" => print!("{}", table(&tokens, jiff::Timestamp::now())),
                "json" => {
                    let items: Vec<Value> = tokens
                        .iter()
                        .map(|t| {
                            json!({"token": format!("{}.{}", t.id, t.secret),
                                   "expires": t.expiration.map(|e| e.to_string()),
                                   "usages": t.usages, "description": t.description,
                                   "groups": t.extra_groups})
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&items)?);
                }
                o => bail!("unknown output format {o:?}: use table or json"),
            }
        }
        TokenAction::Delete { ids } => {
            for id in ids {
                let id = id.split('.').next().unwrap_or_default().to_string();
                let path = format!("{SECRETS}/bootstrap-token-{id}");
                if api.get::<Value>(&path).await?.is_none() {
                    bail!("bootstrap token {id:?} not found");
                }
                match api.delete(&path, &json!({})).await {
                    Ok(()) => println!("bootstrap token {id:?} deleted"),
                    Err(e) if e.is_not_found() => bail!("bootstrap token {id:?} not found"),
                    Err(e) => return Err(e).context(format!("deleting bootstrap token {id}")),
                }
            }
        }
        TokenAction::Rotate { new_token } => {
            let new = match new_token {
                Some(t) => t,
                None => {
                    let a = BootstrapToken::generate()?;
                    format!("{}{}", a.id, a.secret)
                }
            };
            let v = super::bootstrap_call(
                &api,
                Method::PUT,
                "token",
                Some(json!({"token": new})),
                "to rotate the token",
            )
            .await?;
            println!("Token rotated. The new server token is:");
            println!("{}", v["token"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

/// kubeadm's `token list` table: TOKEN, TTL, EXPIRES, USAGES, DESCRIPTION, EXTRA GROUPS.
fn table(tokens: &[StoredBootstrapToken], now: jiff::Timestamp) -> String {
    let mut rows = vec![[
        "TOKEN".to_string(),
        "TTL".into(),
        "EXPIRES".into(),
        "USAGES".into(),
        "DESCRIPTION".into(),
        "EXTRA GROUPS".into(),
    ]];
    for t in tokens {
        let (ttl, expires) = match t.expiration {
            None => ("<forever>".to_string(), "<never>".to_string()),
            Some(e) => {
                let left = e.as_second() - now.as_second();
                let ttl = if left <= 0 {
                    "<invalid>".to_string()
                } else if left >= 3600 {
                    format!("{}h", (left + 1800) / 3600)
                } else {
                    format!("{}m", (left + 30) / 60)
                };
                (ttl, e.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            }
        };
        let or_none = |s: &str| {
            if s.is_empty() {
                "<none>".to_string()
            } else {
                s.to_string()
            }
        };
        rows.push([
            format!("{}.{}", t.id, t.secret),
            ttl,
            expires,
            t.usages.join(","),
            or_none(&t.description),
            or_none(&t.extra_groups),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_kubeadm_columns() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let s = StoredBootstrapToken::from_secret(&t.to_secret(Some("2030-01-02T00:00:00Z"), None))
            .unwrap();
        let now: jiff::Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let out = table(&[s], now);
        let mut lines = out.lines();
        let head = lines.next().unwrap();
        for col in [
            "TOKEN",
            "TTL",
            "EXPIRES",
            "USAGES",
            "DESCRIPTION",
            "EXTRA GROUPS",
        ] {
            assert!(head.contains(col), "{head}");
        }
        let row = lines.next().unwrap();
        assert!(row.starts_with("abcdef.0123456789abcdef"), "{row}");
        assert!(
            row.contains(" 24h ") && row.contains("2030-01-02T00:00:00Z"),
            "{row}"
        );
        assert!(row.contains("authentication,signing"), "{row}");
    }
}
