//! The kubelet path `/metrics/node`: the node's own metrics under node_exporter's names,
//! so dashboards built for node_exporter work without running it — CPU seconds per CPU
//! and mode, every `/proc/meminfo` field, filesystem sizes per mount, network device
//! counters, load averages and boot time. Read from `/proc` and `statvfs` at request time.

use std::ffi::CString;

use super::exposition::{Kind, Writer};
use super::network;

/// `/proc/stat` columns of a `cpuN` line, in order, under node_exporter's mode names.
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];
/// Clock ticks per second of `/proc/stat` (USER_HZ).
const USER_HZ: f64 = 100.0;

/// node_exporter's default `--collector.filesystem.fs-types-exclude`: pseudo and
/// read-only image filesystems nobody fills.
const IGNORED_FS_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "erofs",
    "sysfs",
    "tracefs",
];

/// The document.
pub fn text() -> String {
    let mut w = Writer::new();
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    cpu(&mut w, &stat);
    memory(&mut w);
    filesystems(&mut w);
    network_devices(&mut w);
    load(&mut w);
    w.family(
        "node_boot_time_seconds",
        "Node boot time, in unixtime.",
        Kind::Gauge,
    );
    if let Some(btime) = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        w.sample("node_boot_time_seconds", &[], btime, None);
    }
    w.family(
        "node_time_seconds",
        "System time in seconds since epoch (1970).",
        Kind::Gauge,
    );
    let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
    w.sample("node_time_seconds", &[], now, None);
    w.finish()
}

fn cpu(w: &mut Writer, stat: &str) {
    const NAME: &str = "node_cpu_seconds_total";
    w.family(NAME, "Seconds the CPUs spent in each mode.", Kind::Counter);
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        // The aggregate `cpu ` line has no number and is not a CPU.
        let Some(n) = fields.next().filter(|n| n.parse::<u32>().is_ok()) else {
            continue;
        };
        for (mode, ticks) in CPU_MODES.iter().zip(fields) {
            if let Ok(t) = ticks.parse::<u64>() {
                w.sample(
                    NAME,
                    &[("cpu", n), ("mode", mode)],
                    t as f64 / USER_HZ,
                    None,
                );
            }
        }
    }
}

/// Every `/proc/meminfo` line as `node_memory_<Field>_bytes` (kB fields) or
/// `node_memory_<Field>` (counts), with `(x)` spelled `_x` as node_exporter does.
fn memory(w: &mut Writer) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mut name = String::with_capacity(48);
    for line in text.lines() {
        let Some((field, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(Ok(v)) = parts.next().map(str::parse::<u64>) else {
            continue;
        };
        let kb = parts.next() == Some("kB");
        name.clear();
        name.push_str("node_memory_");
        for c in field.chars() {
            match c {
                '(' => name.push('_'),
                ')' => {}
                c => name.push(c),
            }
        }
        if kb {
            name.push_str("_bytes");
        }
        let help = format!(
            "Memory information field {}.",
            &name["node_memory_".len()..]
        );
        w.family(&name, &help, Kind::Gauge);
        w.sample(&name, &[], if kb { v * 1024 } else { v } as f64, None);
    }
}

/// A mount from `/proc/mounts`, octal escapes decoded.
struct Mount {
    device: String,
    mountpoint: String,
    fstype: String,
    readonly: bool,
}

fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mounts(text: &str) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [device, mountpoint, fstype, options, ..] = f[..] else {
            continue;
        };
        let mountpoint = unescape(mountpoint);
        // node_exporter's default mount-points-exclude.
        let skip_point = ["/dev", "/proc", "/sys"]
            .iter()
            .any(|p| mountpoint == *p || mountpoint.starts_with(&format!("{p}/")))
            || mountpoint.starts_with("/run/credentials/")
            || mountpoint.starts_with("/var/lib/docker/")
            || mountpoint.starts_with("/var/lib/containers/storage/");
        if skip_point || IGNORED_FS_TYPES.contains(&fstype) {
            continue;
        }
        // A later mount on the same point hides the earlier one: report what is visible.
        out.retain(|m| m.mountpoint != mountpoint);
        out.push(Mount {
            device: unescape(device),
            mountpoint,
            fstype: fstype.to_string(),
            readonly: options.split(',').any(|o| o == "ro"),
        });
    }
    out
}

/// Sizes of a mounted filesystem: (size, free, avail in bytes, files, files free).
fn statvfs(path: &str) -> Option<[u64; 5]> {
    let c = CString::new(path).ok()?;
    // SAFETY: zeroed is a valid statvfs (plain integers) and `c` is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let bs = s.f_frsize as u64;
    Some([
        s.f_blocks as u64 * bs,
        s.f_bfree as u64 * bs,
        s.f_bavail as u64 * bs,
        s.f_files as u64,
        s.f_ffree as u64,
    ])
}

fn filesystems(w: &mut Writer) {
    let text = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    // statvfs on a hung network mount would block this (blocking-pool) thread, as it
    // would node_exporter's; local mounts answer from memory.
    let found: Vec<(Mount, [u64; 5])> = mounts(&text)
        .into_iter()
        .filter_map(|m| statvfs(&m.mountpoint).map(|s| (m, s)))
        .collect();
    let families: [(&str, &str); 6] = [
        ("node_filesystem_size_bytes", "Filesystem size in bytes."),
        (
            "node_filesystem_free_bytes",
            "Filesystem free space in bytes.",
        ),
        (
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes.",
        ),
        ("node_filesystem_files", "Filesystem total file nodes."),
        (
            "node_filesystem_files_free",
            "Filesystem total free file nodes.",
        ),
        ("node_filesystem_readonly", "Filesystem read-only status."),
    ];
    for (i, (name, help)) in families.iter().enumerate() {
        w.family(name, help, Kind::Gauge);
        for (m, s) in &found {
            let v = s.get(i).map_or(m.readonly as u64, |v| *v);
            let labels = [
                ("device", m.device.as_str()),
                ("fstype", m.fstype.as_str()),
                ("mountpoint", m.mountpoint.as_str()),
            ];
            w.sample(name, &labels, v as f64, None);
        }
    }
}

fn network_devices(w: &mut Writer) {
    type Pick = fn(&network::Interface) -> u64;
    let devices = network::of_node();
    let families: [(&str, &str, Pick); 8] = [
        ("receive_bytes", "receive_bytes", |i| i.rx_bytes),
        ("receive_packets", "receive_packets", |i| i.rx_packets),
        ("receive_errs", "receive_errs", |i| i.rx_errors),
        ("receive_drop", "receive_drop", |i| i.rx_dropped),
        ("transmit_bytes", "transmit_bytes", |i| i.tx_bytes),
        ("transmit_packets", "transmit_packets", |i| i.tx_packets),
        ("transmit_errs", "transmit_errs", |i| i.tx_errors),
        ("transmit_drop", "transmit_drop", |i| i.tx_dropped),
    ];
    for (stat, help, pick) in families {
        let name = format!("node_network_{stat}_total");
        w.family(
            &name,
            &format!("Network device statistic {help}."),
            Kind::Counter,
        );
        for d in &devices {
            w.sample(&name, &[("device", d.name.as_str())], pick(d) as f64, None);
        }
    }
}

fn load(w: &mut Writer) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut f = text.split_whitespace();
    for (name, help) in [
        ("node_load1", "1m load average."),
        ("node_load5", "5m load average."),
        ("node_load15", "15m load average."),
    ] {
        w.family(name, help, Kind::Gauge);
        if let Some(Ok(v)) = f.next().map(str::parse::<f64>) {
            w.sample(name, &[], v, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_skip_pseudo_filesystems_and_decode_spaces() {
        let t = "proc /proc proc rw 0 0\n/dev/sda1 / ext4 rw,relatime 0 0\n\
                 tmpfs /run tmpfs rw 0 0\noverlay /x overlay rw 0 0\n\
                 /dev/sdb1 /mnt/my\\040disk ext4 ro 0 0\n/dev/sdc1 /run tmpfs rw 0 0\n";
        let m = mounts(t);
        let points: Vec<&str> = m.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(points, ["/", "/mnt/my disk", "/run"]);
        assert!(m[1].readonly && !m[0].readonly);
        assert_eq!(m[2].device, "/dev/sdc1");
    }

    #[test]
    fn document_has_node_exporter_names() {
        let t = text();
        for want in [
            "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} ",
            "node_memory_MemTotal_bytes ",
            "node_memory_MemAvailable_bytes ",
            "# TYPE node_filesystem_avail_bytes gauge",
            "node_network_receive_bytes_total{device=\"lo\"} ",
            "node_load15 ",
            "node_boot_time_seconds ",
            "# TYPE node_network_transmit_bytes_total counter",
        ] {
            assert!(t.contains(want), "missing {want:?} in:\n{t}");
        }
    }
}
