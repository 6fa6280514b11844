//! What a container may do beyond the ordinary: capability sets (containerd's
//! default, every one the kernel knows, the ones this process holds) and the host's
//! device nodes a privileged container gets.

/// containerd's default capability set (also Docker's).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel knows, in bit order (index = capability number).
/// Privileged containers get the subset we hold ([`current_capabilities`]).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities this process holds (`CapEff` of /proc/self/status), like
/// containerd's `WithAllCurrentCapabilities`: runc cannot grant a container more than
/// its parent has (in a restricted host container it fails with EPERM). All of
/// [`ALL_CAPABILITIES`] if the file cannot be read.
pub fn current_capabilities() -> Vec<String> {
    let all = || ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return all();
    };
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    let Some(mask) = mask else {
        return all();
    };
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// A device node created in the container (`linux.devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Directories of /dev whose nodes are not devices a container should get (the same
/// list runc's `HostDevices` skips).
const SKIPPED_DEV_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// The host's character and block devices under `/dev`, for privileged containers
/// (containerd's `WithHostDevices`).
pub fn host_devices() -> std::io::Result<Vec<Device>> {
    let mut out = Vec::new();
    collect_devices(std::path::Path::new("/dev"), &mut out)?;
    Ok(out)
}

fn collect_devices(dir: &std::path::Path, out: &mut Vec<Device>) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            if !SKIPPED_DEV_DIRS.iter().any(|d| name == *d) {
                collect_devices(&entry.path(), out)?;
            }
            continue;
        }
        if name == "console" {
            continue;
        }
        let kind = if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else {
            continue;
        };
        // A device can vanish between readdir and stat (hotplug): skip it.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let rdev = meta.rdev();
        out.push(Device {
            path: entry.path().to_string_lossy().into_owned(),
            kind,
            major: libc::major(rdev) as u64,
            minor: libc::minor(rdev) as u64,
            file_mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_capabilities_are_known_names() {
        let caps = current_capabilities();
        assert!(!caps.is_empty());
        assert!(caps.iter().all(|c| ALL_CAPABILITIES.contains(&c.as_str())));
    }
}
