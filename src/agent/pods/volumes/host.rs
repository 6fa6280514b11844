//! Volumes that are plain host directories: emptyDir (a directory in the pod dir,
//! or a tmpfs mount for `medium: Memory`), hostPath with upstream's type checks, the
//! tmpfs that keeps secret content off the disk, and the unmounting teardown needs.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, HostPathVolumeSource};

use super::quantity::Quantity;
use super::{IoError, SetUpError};

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SetUpError + 'a {
    move |e| SetUpError::Io(IoError::at(what, path)(e))
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// Whether `dir` is the root of a mount (its device differs from its parent's).
pub fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let meta = std::fs::symlink_metadata(dir)?;
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let pmeta = std::fs::metadata(parent)?;
    Ok(meta.dev() != pmeta.dev() || meta.ino() == pmeta.ino())
}

/// Mounts a tmpfs on `dir` unless one is there already.
pub fn ensure_tmpfs(dir: &Path, size: Option<i64>) -> io::Result<()> {
    if is_mount_point(dir)? {
        return Ok(());
    }
    let mut data = "mode=0777".to_string();
    if let Some(size) = size.filter(|s| *s > 0) {
        data.push_str(&format!(",size={size}"));
    }
    let target = cstr(dir)?;
    let data = CString::new(data).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates (or checks) an emptyDir at `dir`.
pub fn empty_dir(
    dir: &Path,
    src: &EmptyDirVolumeSource,
    fs_group: Option<u32>,
) -> Result<(), SetUpError> {
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    match src.medium.as_deref().unwrap_or_default() {
        "" => {}
        "Memory" => {
            let size = match &src.size_limit {
                Some(q) => Some(
                    Quantity::parse(&q.0)
                        .map_err(|e| SetUpError::Invalid(e.to_string()))?
                        .value(),
                ),
                None => None,
            };
            ensure_tmpfs(dir, size).map_err(io_err("mount tmpfs on", dir))?;
        }
        other => return Err(SetUpError::UnsupportedMedium(other.to_string())),
    }
    // World-writable like upstream (a container running as any user can use it);
    // with fsGroup, group-owned and setgid so new files inherit the group.
    let mut mode = 0o777;
    if let Some(gid) = fs_group {
        std::os::unix::fs::chown(dir, None, Some(gid)).map_err(io_err("chown", dir))?;
        mode |= 0o2000;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", dir))?;
    Ok(())
}

/// Checks (and for the `OrCreate` types creates) a hostPath; returns its path.
pub fn host_path(src: &HostPathVolumeSource) -> Result<PathBuf, SetUpError> {
    let path = PathBuf::from(&src.path);
    let kind = src.type_.as_deref().unwrap_or_default();
    let meta = std::fs::metadata(&path).ok();
    let fail = |what: &'static str| SetUpError::HostPathType {
        path: src.path.clone(),
        what,
    };
    let ft = meta.as_ref().map(|m| m.file_type());
    match kind {
        "" => {}
        "DirectoryOrCreate" | "Directory" => {
            if ft.is_none() && kind == "DirectoryOrCreate" {
                std::fs::create_dir_all(&path).map_err(io_err("create directory", &path))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &path))?;
            } else if !ft.is_some_and(|t| t.is_dir()) {
                return Err(fail("a directory"));
            }
        }
        "FileOrCreate" | "File" => {
            if ft.is_none() && kind == "FileOrCreate" {
                // Like upstream, the parent directory must exist.
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(io_err("create file", &path))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                    .map_err(io_err("chmod", &path))?;
            } else if !ft.is_some_and(|t| t.is_file()) {
                return Err(fail("a file"));
            }
        }
        "Socket" if !ft.is_some_and(|t| t.is_socket()) => return Err(fail("a socket file")),
        "CharDevice" if !ft.is_some_and(|t| t.is_char_device()) => {
            return Err(fail("a character device"))
        }
        "BlockDevice" if !ft.is_some_and(|t| t.is_block_device()) => {
            return Err(fail("a block device"))
        }
        "Socket" | "CharDevice" | "BlockDevice" => {}
        other => return Err(SetUpError::InvalidHostPathType(other.to_string())),
    }
    Ok(path)
}

/// Undoes `\040`-style escapes of /proc/self/mountinfo.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.dedup();
    Ok(found)
}

/// Unmounts `path` (lazily if it is busy: a container may still hold it).
pub fn unmount(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        Some(libc::EBUSY) => {
            // SAFETY: as above.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(path: &Path, kind: &str) -> HostPathVolumeSource {
        HostPathVolumeSource {
            path: path.to_string_lossy().into_owned(),
            type_: Some(kind.to_string()),
        }
    }

    #[test]
    fn host_path_types_check_and_create() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("made/deep");
        assert_eq!(host_path(&hp(&d, "DirectoryOrCreate")).unwrap(), d);
        assert!(d.is_dir());
        let f = dir.path().join("f");
        host_path(&hp(&f, "FileOrCreate")).unwrap();
        assert!(f.is_file());
        let no_parent = dir.path().join("nope/f");
        assert!(host_path(&hp(&no_parent, "FileOrCreate")).is_err());

        let msg = |p: &Path, k: &str| host_path(&hp(p, k)).unwrap_err().to_string();
        assert_eq!(
            msg(&f, "Directory"),
            format!(
                "hostPath type check failed: {} is not a directory",
                f.display()
            )
        );
        assert_eq!(
            msg(&d, "File"),
            format!("hostPath type check failed: {} is not a file", d.display())
        );
        assert_eq!(
            msg(&dir.path().join("missing"), "Directory"),
            format!(
                "hostPath type check failed: {} is not a directory",
                dir.path().join("missing").display()
            )
        );
        assert!(msg(&f, "Socket").ends_with("is not a socket file"));
        assert!(msg(&f, "CharDevice").ends_with("is not a character device"));
        assert!(host_path(&hp(Path::new("/dev/null"), "CharDevice")).is_ok());
        assert_eq!(msg(&f, "Weird"), "Weird is an invalid volume type");
        // No type: no check, even for a missing path.
        assert!(host_path(&hp(&dir.path().join("missing"), "")).is_ok());
    }

    #[test]
    fn mountinfo_escapes_decode() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
