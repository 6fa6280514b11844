//! Administrative subcommands that act on a running or stopped cluster from the command line:
//! `k3rs token` (bootstrap tokens and the server token, through the local server's API) and
//! `k3rs certificate` (the certificate files under the data directory), `k3rs secrets-encrypt`
//! (secrets encryption at rest, through the local server's `/v1-k3rs/encrypt/*`).

pub mod certificate;
pub mod secrets_encrypt;
pub mod token;

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Sends `body` (JSON) to `/v1-k3rs/<what>` and returns the JSON answer; a non-2xx answer
/// is an error "the server refused <doing> (<status>): <message>".
pub async fn bootstrap_call(
    api: &crate::agent::client::ApiClient,
    method: http::Method,
    what: &str,
    body: Option<serde_json::Value>,
    doing: &str,
) -> anyhow::Result<serde_json::Value> {
    use http_body_util::BodyExt;
    let body = body.map(|b| (b.to_string().into_bytes(), "application/json"));
    let resp = api.send(method, &format!("/v1-k3rs/{what}"), body).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "the server refused {doing} ({status}): {}",
            v["message"].as_str().unwrap_or("no message")
        );
    }
    Ok(v)
}

/// Loads the admin kubeconfig at `path`, or the one the server writes by default.
pub fn admin_kubeconfig(path: Option<&Path>) -> anyhow::Result<crate::agent::client::Kubeconfig> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => default_kubeconfig().context(
            "no admin kubeconfig found (the server writes /etc/k3rs/k3rs.yaml): pass --kubeconfig",
        )?,
    };
    Ok(crate::agent::client::load_kubeconfig(&path)?)
}

/// The admin kubeconfig the server writes by default: `/etc/k3rs/k3rs.yaml` for root,
/// `~/.kube/k3rs.yaml` (else the root one, when readable) for other users.
pub fn default_kubeconfig() -> Option<PathBuf> {
    let system = PathBuf::from("/etc/k3rs/k3rs.yaml");
    let host = crate::config::Host::current();
    let user = host.home.map(|h| h.join(".kube/k3rs.yaml"));
    let candidates = if host.root {
        vec![Some(system)]
    } else {
        vec![user, Some(system)]
    };
    candidates
        .into_iter()
        .flatten()
        .find(|p| std::fs::File::open(p).is_ok())
}

/// The default data directory: `/var/lib/k3rs` for root, `~/.k3rs` otherwise.
pub fn default_data_dir() -> PathBuf {
    let host = crate::config::Host::current();
    match (host.root, host.home) {
        (false, Some(home)) => home.join(".k3rs"),
        _ => PathBuf::from("/var/lib/k3rs"),
    }
}
