//! Masquerade and forwarding rules for pod traffic: one nftables table of our own
//! ([`NFT_TABLE`]), replaced atomically at agent start in one `nft -f -` transaction
//! (add, delete, define again: the add makes the delete succeed on a first start).
//!
//! Traffic from the cluster CIDR to anything outside it (except multicast) leaves with
//! the node's address, as flannel's `--ip-masq` rules do; forwarding to and from the
//! cluster CIDR is accepted. `nft` runs in the node namespace (`setns` in the child
//! before exec). Without `nft` pods still reach each other, so that case only warns.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::AsyncWriteExt;

use super::ipam::Ipv4Subnet;
use super::{CniError, NFT_TABLE};

/// Warn about a missing `nft` only once per process.
static WARNED_MISSING: AtomicBool = AtomicBool::new(false);

/// The whole table, as one `nft -f` transaction.
pub(crate) fn ruleset(cluster: Ipv4Subnet) -> String {
    format!(
        "add table ip {NFT_TABLE}\n\
         delete table ip {NFT_TABLE}\n\
         table ip {NFT_TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {cluster} ip daddr {cluster} return\n\
         \t\tip saddr {cluster} ip daddr != 224.0.0.0/4 masquerade fully-random\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tip saddr {cluster} accept\n\
         \t\tip daddr {cluster} accept\n\
         \t}}\n\
         }}\n"
    )
}

/// Replaces our table in the namespace `host_ns` with the rules for `cluster`.
pub(crate) async fn apply(host_ns: &File, cluster: Ipv4Subnet) -> Result<(), CniError> {
    let fd = host_ns.as_raw_fd();
    let mut cmd = tokio::process::Command::new("nft");
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: between fork and exec only setns(2), which is async-signal-safe; `fd` is
    // kept open by `host_ns`, borrowed for this whole function.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !WARNED_MISSING.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "nft not found: pod traffic leaving the cluster CIDR {cluster} is not \
                     masqueraded; install nftables (apt-get install nftables) and restart the agent"
                );
            }
            return Ok(());
        }
        Err(e) => return Err(CniError::Nft(format!("cannot run nft: {e}"))),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset(cluster).as_bytes())
            .await
            .map_err(|e| CniError::Nft(format!("writing rules to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| CniError::Nft(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(CniError::Nft(format!(
            "nft -f exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    tracing::debug!(table = NFT_TABLE, %cluster, "masquerade rules applied");
    Ok(())
}
