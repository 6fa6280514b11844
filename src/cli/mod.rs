//! Administrative subcommands that act on a running or stopped cluster from the command line:
//! `k3rs token` (bootstrap tokens and the server token, through the local server's API) and
//! `k3rs certificate` (the certificate files under the data directory).

pub mod certificate;
pub mod token;

use std::path::PathBuf;

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
