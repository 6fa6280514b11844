//! Facts about this machine that go into the Node object: addresses, capacity, OS and
//! kernel, ids, and the pressure readings behind the node conditions. Read from /proc,
//! /sys, /etc and statvfs; no external programs.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// The Kubernetes architecture name of this build's target.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The kernel release (`uname -r`).
pub fn kernel_version() -> String {
    read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into())
}

/// `PRETTY_NAME` from os-release.
pub fn os_image() -> String {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Some(v) = text
                .lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim().trim_matches('"').to_string())
            {
                return v;
            }
        }
    }
    "Linux".into()
}

pub fn machine_id() -> String {
    read_trim("/etc/machine-id")
        .or_else(|| read_trim("/var/lib/dbus/machine-id"))
        .unwrap_or_default()
}

pub fn system_uuid() -> String {
    read_trim("/sys/class/dmi/id/product_uuid")
        .map(|s| s.to_lowercase())
        .unwrap_or_else(machine_id)
}

pub fn boot_id() -> String {
    read_trim("/proc/sys/kernel/random/boot_id").unwrap_or_default()
}

/// Online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// (MemTotal, MemAvailable) in bytes.
pub fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// (total, available) bytes of the filesystem holding `path`.
pub fn filesystem(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return (0, 0);
    };
    // SAFETY: statvfs writes into the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return (0, 0);
        }
        let frsize = s.f_frsize as u64;
        (s.f_blocks as u64 * frsize, s.f_bavail as u64 * frsize)
    }
}

/// (running processes, pid_max) for the PID pressure condition.
pub fn pids() -> (u64, u64) {
    let max = read_trim("/proc/sys/kernel/pid_max")
        .and_then(|s| s.parse().ok())
        .unwrap_or(32768);
    let running = read_trim("/proc/loadavg")
        .and_then(|s| {
            s.split_whitespace()
                .nth(3)
                .and_then(|f| f.split('/').nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0);
    (running, max)
}

/// The name of the interface the default IPv4 route uses, from /proc/net/route.
fn default_route_interface() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_string())
    })
}

/// The first IPv4 address of `iface`.
fn interface_ipv4(iface: &str) -> Option<Ipv4Addr> {
    let mut found = None;
    // SAFETY: getifaddrs allocates a list we walk read-only and free exactly once.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return None;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null()
                && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET
                && std::ffi::CStr::from_ptr(ifa.ifa_name).to_bytes() == iface.as_bytes()
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    found
}

/// The node's InternalIP when `--node-ip` is not given: the default route's interface
/// address, else loopback.
pub fn default_node_ip() -> IpAddr {
    default_route_interface()
        .and_then(|i| interface_ipv4(&i))
        .map(IpAddr::V4)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_are_plausible() {
        assert!(cpus() >= 1);
        let (total, avail) = memory();
        assert!(total > 0 && avail <= total);
        let (size, free) = filesystem(Path::new("/"));
        assert!(size > 0 && free <= size);
        assert!(!kernel_version().is_empty());
        assert!(["amd64", "arm64", "arm"].contains(&arch()));
        let (running, max) = pids();
        assert!(running > 0 && running < max);
    }
}
