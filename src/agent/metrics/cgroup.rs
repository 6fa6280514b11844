//! Readers of the kernel's resource accounting: CPU time and memory of a cgroup (v1 or
//! v2, at the cgroupfs paths the pod worker gives runc: `/k3rs/<pod uid>[/<container>]`)
//! and of the whole node (`/proc/stat`, `/proc/meminfo`). Working set follows the kubelet:
//! usage minus inactive file pages, floored at zero.

use std::path::{Path, PathBuf};

/// Where cgroup filesystems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Clock ticks per second of `/proc/stat` (USER_HZ; 100 on every Linux ABI k3rs targets).
const USER_HZ: u64 = 100;

/// Memory figures of a cgroup or the node, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Total charged memory (page cache included).
    pub usage: u64,
    /// `usage − inactive_file`: what the kubelet and `kubectl top` call memory.
    pub working_set: u64,
    /// Anonymous memory (rss).
    pub rss: u64,
    /// Bytes free for the node (node only; 0 for cgroups).
    pub available: u64,
}

/// The cgroup hierarchy in use on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Per-controller hierarchies (`/sys/fs/cgroup/<controller>/...`).
    V1,
    /// The unified hierarchy (`/sys/fs/cgroup/...`).
    V2,
}

/// Which hierarchy this host mounts (v2 when the root lists its controllers).
pub fn version() -> Version {
    if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        Version::V2
    } else {
        Version::V1
    }
}

fn join(base: &str, rel: &str, file: &str) -> PathBuf {
    Path::new(base).join(rel.trim_start_matches('/')).join(file)
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Cumulative CPU time of the cgroup at `rel` (e.g. `/k3rs/<uid>/app`), in nanoseconds;
/// `None` when the cgroup does not exist (container gone, or not started yet).
pub fn cpu_usage_ns(rel: &str) -> Option<u64> {
    match version() {
        Version::V2 => {
            let text = std::fs::read_to_string(join(CGROUP_ROOT, rel, "cpu.stat")).ok()?;
            stat_value(&text, "usage_usec").map(|us| us.saturating_mul(1000))
        }
        Version::V1 => ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]
            .iter()
            .find_map(|c| read_u64(&join(&format!("{CGROUP_ROOT}/{c}"), rel, "cpuacct.usage"))),
    }
}

/// Memory of the cgroup at `rel`; `None` when it does not exist.
pub fn memory(rel: &str) -> Option<Memory> {
    let (usage, stat, inactive_key, rss_key) = match version() {
        Version::V2 => (
            read_u64(&join(CGROUP_ROOT, rel, "memory.current"))?,
            join(CGROUP_ROOT, rel, "memory.stat"),
            "inactive_file",
            "anon",
        ),
        Version::V1 => {
            let base = format!("{CGROUP_ROOT}/memory");
            (
                read_u64(&join(&base, rel, "memory.usage_in_bytes"))?,
                join(&base, rel, "memory.stat"),
                "total_inactive_file",
                "total_rss",
            )
        }
    };
    let stat = std::fs::read_to_string(stat).unwrap_or_default();
    let inactive = stat_value(&stat, inactive_key).unwrap_or(0);
    Some(Memory {
        usage,
        working_set: usage.saturating_sub(inactive),
        rss: stat_value(&stat, rss_key).unwrap_or(0),
        available: 0,
    })
}

/// Cumulative busy CPU time of the node (all CPUs, idle and iowait excluded) from
/// `/proc/stat`, in nanoseconds.
pub fn node_cpu_usage_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_proc_stat(&text)
}

fn parse_proc_stat(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| *v)
        .sum();
    Some(busy.saturating_mul(1_000_000_000 / USER_HZ))
}

/// Memory of the node from `/proc/meminfo`: usage = total − free, working set = usage −
/// inactive file pages (what the kubelet reports for the root cgroup).
pub fn node_memory() -> Option<Memory> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<Memory> {
    let kib = |key: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total = kib("MemTotal")? * 1024;
    let free = kib("MemFree")? * 1024;
    let usage = total.saturating_sub(free);
    Some(Memory {
        usage,
        working_set: usage.saturating_sub(kib("Inactive(file)").unwrap_or(0) * 1024),
        rss: kib("AnonPages").unwrap_or(0) * 1024,
        available: kib("MemAvailable").unwrap_or(free / 1024) * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_counts_busy_time_only() {
        let t = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(
            parse_proc_stat(t),
            Some((100 + 5 + 50 + 1 + 2 + 3) * 10_000_000)
        );
    }

    #[test]
    fn meminfo_working_set_excludes_inactive_file() {
        let t = "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 500 kB\nInactive(file): 100 kB\nAnonPages: 300 kB\n";
        let m = parse_meminfo(t).unwrap();
        assert_eq!(m.usage, 800 * 1024);
        assert_eq!(m.working_set, 700 * 1024);
        assert_eq!(m.available, 500 * 1024);
        assert_eq!(m.rss, 300 * 1024);
    }

    #[test]
    fn stat_keys_match_whole_words() {
        let t = "total_inactive_file 10\ninactive_file 4\n";
        assert_eq!(stat_value(t, "inactive_file"), Some(4));
        assert_eq!(stat_value(t, "total_inactive_file"), Some(10));
    }
}
