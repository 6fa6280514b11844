//! Network interface counters from a `/proc/<pid>/net/dev` file: the host's (for the
//! node) or a pod process's (the file shows the network namespace of the process that
//! reads through that pid, so no `setns` is needed to see inside a pod).

use std::path::Path;

/// One interface's cumulative counters, as the kernel keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// The interface name (`eth0`).
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of the network namespace `pid` lives in; empty when the process is
/// gone (a container that just exited).
pub fn of_process(pid: u32) -> Vec<Interface> {
    read(Path::new(&format!("/proc/{pid}/net/dev")))
}

/// The interfaces of the agent's own network namespace (the node's).
pub fn of_node() -> Vec<Interface> {
    read(Path::new("/proc/net/dev"))
}

fn read(path: &Path) -> Vec<Interface> {
    std::fs::read_to_string(path)
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// Parses the `net/dev` table: two header lines, then `name: 16 counters` (receive:
/// bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets errs
/// drop fifo colls carrier compressed).
pub fn parse(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let mut f = [0u64; 16];
            let mut n = 0;
            for (slot, v) in f.iter_mut().zip(rest.split_whitespace()) {
                *slot = v.parse().ok()?;
                n += 1;
            }
            (n == 16).then(|| Interface {
                name: name.trim().to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

/// The node's default-route interface from `/proc/net/route` (the one the kubelet's
/// Summary names at node level); `None` without a default route.
pub fn default_route_interface() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let (iface, dest) = (f.next()?, f.next()?);
        (dest == "00000000").then(|| iface.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 123456     789    1    2    0     0          0         0    65432     321    3    4    0     0       0          0
";

    #[test]
    fn reads_receive_and_transmit_columns() {
        let got = parse(NET_DEV);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            Interface {
                name: "eth0".into(),
                rx_bytes: 123456,
                rx_packets: 789,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 65432,
                tx_packets: 321,
                tx_errors: 3,
                tx_dropped: 4,
            }
        );
    }

    #[test]
    fn own_namespace_has_loopback() {
        assert!(of_process(std::process::id())
            .iter()
            .any(|i| i.name == "lo"));
    }
}
