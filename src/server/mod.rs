//! The control plane: durable store, HTTPS API, PKI and bootstrap.

pub mod bootstrap;
pub mod pki;
pub mod store;

/// Runs the server until it is stopped. (Placeholder until the server loop is merged.)
pub async fn run(_cfg: crate::config::ServerConfig) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
