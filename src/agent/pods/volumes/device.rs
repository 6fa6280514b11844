//! Filesystems on block devices, for `local` PersistentVolumes whose path names a
//! device (volumeMode Filesystem): [`mount_filesystem`] mounts the device's filesystem
//! on a directory of the pod (`<pod dir>/volumes/kubernetes.io~local-volume/<volume>`),
//! which the containers then bind-mount like any directory; the pod's teardown
//! unmounts it with everything else under the pod dir.
//!
//! An unformatted device is formatted first, as upstream's SafeFormatAndMount does: the
//! device is probed with `blkid` and, only when it holds no filesystem and no partition
//! table, `mkfs.<fsType>` runs. Both are one-off programs at mount time (util-linux and
//! e2fsprogs/xfsprogs), never in a hot path. A device holding another filesystem than
//! the volume asks for is never reformatted.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::host;

/// The filesystem a `local` volume on a device gets when `local.fsType` is unset.
pub const DEFAULT_FS_TYPE: &str = "ext4";

/// Why a device's filesystem could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A helper program is missing or could not be started.
    #[error("cannot run {program} for {device}: {source}; install {package} on this node")]
    Program {
        program: String,
        package: &'static str,
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `blkid` failed for another reason than "nothing found".
    #[error("cannot probe {device} for a filesystem: blkid exited with {code}: {output}")]
    Probe {
        device: PathBuf,
        code: i32,
        output: String,
    },
    /// Formatting failed (upstream's wording).
    #[error("format of disk {device:?} failed: type:({fs_type:?}) target:({target:?}) errcode:({code}) output:({output})")]
    Format {
        device: PathBuf,
        fs_type: String,
        target: PathBuf,
        code: i32,
        output: String,
    },
    /// The device holds another filesystem (or partitions) and the mount failed.
    #[error("failed to mount the volume as {fs_type:?}, it already contains {existing}. Mount error: mount {device} on {target}: {source}")]
    WrongFormat {
        device: PathBuf,
        target: PathBuf,
        fs_type: String,
        existing: String,
        #[source]
        source: io::Error,
    },
    /// mount(2) failed.
    #[error("mount failed: mount -t {fs_type} {device} {target}: {source}")]
    Mount {
        device: PathBuf,
        target: PathBuf,
        fs_type: String,
        #[source]
        source: io::Error,
    },
    /// The mount directory could not be made or checked.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether `path` is a block device (following symlinks, like `/dev/disk/by-id/...`).
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// The package that has `mkfs.<fs_type>` on Debian.
fn mkfs_package(fs_type: &str) -> &'static str {
    match fs_type {
        "xfs" => "xfsprogs",
        "btrfs" => "btrfs-progs",
        "vfat" | "fat" => "dosfstools",
        _ => "e2fsprogs",
    }
}

/// What `device` holds: `None` when it is unformatted (no filesystem, no partition
/// table), else the filesystem type or `unknown data, probably partitions`.
pub fn probe_format(device: &Path) -> Result<Option<String>, DeviceError> {
    let out = Command::new("blkid")
        .args(["-p", "-s", "TYPE", "-s", "PTTYPE", "-o", "export"])
        .arg(device)
        .output()
        .map_err(|source| DeviceError::Program {
            program: "blkid".into(),
            package: "util-linux",
            device: device.into(),
            source,
        })?;
    match out.status.code() {
        // blkid's "nothing identified".
        Some(2) => return Ok(None),
        Some(0) => {}
        code => {
            return Err(DeviceError::Probe {
                device: device.into(),
                code: code.unwrap_or(-1),
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    Ok(match (value("TYPE"), value("PTTYPE")) {
        (Some(t), _) => Some(t),
        (None, Some(_)) => Some("unknown data, probably partitions".to_string()),
        (None, None) => None,
    })
}

/// Formats `device` with `mkfs.<fs_type>` (ext2/3/4: `-F -m0`, as upstream: forced,
/// no blocks reserved for root).
fn format(device: &Path, fs_type: &str, target: &Path) -> Result<(), DeviceError> {
    let program = format!("mkfs.{fs_type}");
    let mut cmd = Command::new(&program);
    match fs_type {
        "ext2" | "ext3" | "ext4" => {
            cmd.args(["-F", "-m0"]);
        }
        "xfs" | "btrfs" => {
            cmd.arg("-f");
        }
        _ => {}
    }
    tracing::info!(device = %device.display(), fs_type, "formatting an unformatted device for a local volume");
    let out = cmd
        .arg(device)
        .output()
        .map_err(|source| DeviceError::Program {
            program: program.clone(),
            package: mkfs_package(fs_type),
            device: device.into(),
            source,
        })?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(DeviceError::Format {
            device: device.into(),
            fs_type: fs_type.into(),
            target: target.into(),
            code: out.status.code().unwrap_or(-1),
            output: output.trim().to_string(),
        });
    }
    Ok(())
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn mount(device: &Path, target: &Path, fs_type: &str) -> io::Result<()> {
    let (src, dst) = (cstr(device)?, cstr(target)?);
    let fs = CString::new(fs_type).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration;
    // no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts the `fs_type` filesystem of `device` on `target` (made if missing),
/// formatting an unformatted device first. Idempotent: a `target` that is a mount point
/// already is left alone (the pod's volumes are prepared again and again).
pub fn mount_filesystem(device: &Path, fs_type: &str, target: &Path) -> Result<(), DeviceError> {
    let io = |what: &'static str| {
        move |source| DeviceError::Io {
            what,
            path: target.into(),
            source,
        }
    };
    std::fs::create_dir_all(target).map_err(io("create directory"))?;
    if host::is_mount_point(target).map_err(io("check mount point"))? {
        return Ok(());
    }
    let existing = probe_format(device)?;
    if existing.is_none() {
        format(device, fs_type, target)?;
    }
    match mount(device, target, fs_type) {
        Ok(()) => {
            tracing::info!(device = %device.display(), target = %target.display(), fs_type, "mounted a local volume's device");
            Ok(())
        }
        Err(source) => match existing {
            Some(existing) if existing != fs_type => Err(DeviceError::WrongFormat {
                device: device.into(),
                target: target.into(),
                fs_type: fs_type.into(),
                existing,
                source,
            }),
            _ => Err(DeviceError::Mount {
                device: device.into(),
                target: target.into(),
                fs_type: fs_type.into(),
                source,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_block_devices_count() {
        assert!(!is_block_device(Path::new("/dev/null")));
        assert!(!is_block_device(Path::new("/nonexistent/disk")));
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_block_device(dir.path()));
    }

    #[test]
    fn errors_say_what_to_install_and_what_the_disk_holds() {
        let e = DeviceError::Program {
            program: "mkfs.xfs".into(),
            package: mkfs_package("xfs"),
            device: "/dev/sdb".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(e.to_string().contains("install xfsprogs"), "{e}");
        let e = DeviceError::WrongFormat {
            device: "/dev/sdb".into(),
            target: "/t".into(),
            fs_type: "ext4".into(),
            existing: "xfs".into(),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert!(
            e.to_string()
                .starts_with("failed to mount the volume as \"ext4\", it already contains xfs."),
            "{e}"
        );
    }
}
