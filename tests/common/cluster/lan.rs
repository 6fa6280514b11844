//! The simulated LAN of a test cluster: one network namespace per node plus one holding the
//! LAN bridge, veth pairs between them, link up/down to cut a node off, and running a
//! command inside a node's namespace (`setns` in `pre_exec`, so the child shares the
//! host's mount namespace — unlike `ip netns exec`, which makes a private one and would
//! hide the agent's mounts).
//!
//! Address plan (the same in scripts/cluster.sh): LAN 172.30.0.0/24; the bridge `br0` in
//! the LAN namespace holds 172.30.0.1 and is every node's default gateway (so "the
//! interface of the default route" means `eth0`, as on a real host); node i has `eth0` =
//! 172.30.0.(10+i)/24, and its peer on the bridge is `n<i>` inside the LAN namespace.
//! Every cluster has its own LAN namespace, so parallel clusters reuse these addresses;
//! namespace names are unique: `k3rs-<pid>-<n>-lan` and `k3rs-<pid>-<n>-node-<i>`.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The LAN's first three octets.
pub const LAN_NET: [u8; 3] = [172, 30, 0];
/// The LAN's prefix length.
pub const LAN_PREFIX_LEN: u8 = 24;

/// The bridge address, every node's default gateway.
pub fn gateway() -> Ipv4Addr {
    Ipv4Addr::new(LAN_NET[0], LAN_NET[1], LAN_NET[2], 1)
}

/// Node `i`'s (1-based) LAN address.
pub fn node_ip(i: usize) -> Ipv4Addr {
    assert!(
        (1..=200).contains(&i),
        "node index {i} out of range 1..=200"
    );
    Ipv4Addr::new(LAN_NET[0], LAN_NET[1], LAN_NET[2], 10 + i as u8)
}

/// Name of node `i`'s namespace in the cluster with `prefix` (`k3rs-<pid>-<n>`).
pub fn node_netns(prefix: &str, i: usize) -> String {
    format!("{prefix}-node-{i}")
}

/// Name of the LAN namespace of the cluster with `prefix`.
pub fn lan_netns(prefix: &str) -> String {
    format!("{prefix}-lan")
}

/// Where iproute2 keeps a named namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// The LAN-side end of node `i`'s veth pair (inside the LAN namespace).
fn lan_port(i: usize) -> String {
    format!("n{i}")
}

/// Runs `ip` with `args`, failing the test with its stderr.
#[track_caller]
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run ip: {e}; install iproute2 (`apt-get install iproute2`)")
    });
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `ip` with `args` and ignores failure (cleanup of things that may be gone already).
pub fn ip_quiet(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Creates the LAN namespace with its bridge. The caller records the name first, so a
/// failure half-way is still cleaned up.
pub fn create_lan(lan: &str) {
    ip(&["netns", "add", lan]);
    ip(&["-n", lan, "link", "set", "lo", "up"]);
    ip(&["-n", lan, "link", "add", "br0", "type", "bridge"]);
    let gw = format!("{}/{LAN_PREFIX_LEN}", gateway());
    ip(&["-n", lan, "addr", "add", &gw, "dev", "br0"]);
    ip(&["-n", lan, "link", "set", "br0", "up"]);
}

/// Creates node `i`'s namespace `node` and plugs it into the LAN `lan`: `eth0` with the
/// node's address and a default route via the bridge, loopback up.
pub fn create_node(lan: &str, node: &str, i: usize) {
    ip(&["netns", "add", node]);
    ip(&["-n", node, "link", "set", "lo", "up"]);
    let port = lan_port(i);
    ip(&[
        "-n", lan, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", node,
    ]);
    ip(&["-n", lan, "link", "set", &port, "master", "br0", "up"]);
    let addr = format!("{}/{LAN_PREFIX_LEN}", node_ip(i));
    ip(&["-n", node, "addr", "add", &addr, "dev", "eth0"]);
    ip(&["-n", node, "link", "set", "eth0", "up"]);
    ip(&[
        "-n",
        node,
        "route",
        "add",
        "default",
        "via",
        &gateway().to_string(),
    ]);
}

/// Sets node `i`'s LAN-side link down (cut off) or up (reconnected).
#[track_caller]
pub fn set_connected(lan: &str, i: usize, up: bool) {
    ip(&[
        "-n",
        lan,
        "link",
        "set",
        &lan_port(i),
        if up { "up" } else { "down" },
    ]);
}

/// Makes `cmd` start inside the network namespace at `netns` (a file under /run/netns).
/// Only the network namespace changes: mounts stay shared with the host.
pub fn enter(cmd: &mut Command, netns: &Path) -> std::io::Result<()> {
    let ns = File::open(netns)
        .map_err(|e| std::io::Error::new(e.kind(), format!("open {}: {e}", netns.display())))?;
    // SAFETY: the closure runs between fork and exec and only calls setns(2), which is
    // async-signal-safe; `ns` is moved in so its descriptor stays open until then (it is
    // close-on-exec, so the child does not keep it).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Names under /run/netns.
pub fn list_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
