//! Pod network namespaces: the agent creates one per pod and holds it with a bind
//! mount at `/run/k3rs/netns/<id>` (no pause container), every container of the pod
//! joins it by path, and the agent removes it when the pod is gone.
//!
//! Namespace switching affects only the calling thread, so all of it happens on a
//! short-lived dedicated `std::thread` (never a tokio worker): `unshare(CLONE_NEWNET)`,
//! bind-mount `/proc/thread-self/ns/net` onto the file, bring `lo` up with an ioctl on
//! a socket made inside the namespace, and let the thread end.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the agent keeps pod namespaces.
pub const DEFAULT_DIR: &str = "/run/k3rs/netns";

/// nsfs's `statfs` magic: a path with it is a live namespace bind mount.
const NSFS_MAGIC: i64 = 0x6e73_6673;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid network namespace name {0:?}")]
    InvalidName(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace thread panicked")]
    Thread,
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn check_name(id: &str) -> Result<(), NetnsError> {
    if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        return Err(NetnsError::InvalidName(id.to_string()));
    }
    Ok(())
}

fn cstr(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
}

fn last_os_error<T>() -> std::io::Result<T> {
    Err(std::io::Error::last_os_error())
}

/// Creates and holds a new network namespace at `<dir>/<id>` with `lo` up; returns
/// its path. An existing live namespace of that name is kept as it is (idempotent).
pub fn create(dir: &Path, id: &str) -> Result<PathBuf, NetnsError> {
    check_name(id)?;
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let path = dir.join(id);
    if is_namespace(&path) {
        return Ok(path);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("create", &path))?;
    let target = path.clone();
    let result = std::thread::Builder::new()
        .name("k3rs-netns".to_string())
        .spawn(move || new_namespace_at(&target))
        .map_err(io_err("spawn thread for", &path))?
        .join()
        .map_err(|_| NetnsError::Thread)?;
    if let Err(e) = result {
        let _ = remove(&path);
        return Err(e);
    }
    Ok(path)
}

/// Runs on its own thread: the thread ends in the new namespace and is thrown away.
fn new_namespace_at(path: &Path) -> Result<(), NetnsError> {
    // SAFETY: unshare(2) affects only this thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io_err("unshare network namespace for", path)(
            std::io::Error::last_os_error(),
        ));
    }
    let source = Path::new("/proc/thread-self/ns/net");
    bind_mount(source, path).map_err(io_err("bind-mount network namespace on", path))?;
    loopback_up().map_err(io_err("bring up lo in", path))?;
    Ok(())
}

fn bind_mount(source: &Path, target: &Path) -> std::io::Result<()> {
    let (src, dst) = (cstr(source)?, cstr(target)?);
    let fstype = c"none";
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return last_os_error();
    }
    Ok(())
}

/// `ip link set lo up` for the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket(2); the fd is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return last_os_error();
    }
    let result = (|| {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: fd is a socket and ifr a properly sized ifreq for these requests.
        if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr) } < 0 {
            return last_os_error();
        }
        // SAFETY: after SIOCGIFFLAGS the flags member of the union is the live one.
        unsafe {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        }
        // SAFETY: as above.
        if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr) } < 0 {
            return last_os_error();
        }
        Ok(())
    })();
    // SAFETY: fd is ours and still open.
    unsafe {
        libc::close(fd);
    }
    result
}

/// Whether `path` is a live namespace bind mount.
pub fn is_namespace(path: &Path) -> bool {
    let Ok(c) = cstr(path) else { return false };
    // SAFETY: statfs is plain old data; the pointers are valid for the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == NSFS_MAGIC
}

/// Releases the namespace at `path` (unmount, remove the file). Missing is fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    let c = cstr(path).map_err(io_err("unmount", path))?;
    // SAFETY: valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // EINVAL: not a mount point (half-created); ENOENT: already gone.
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Err(io_err("unmount", path)(e));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Names of the namespaces held under `dir` (for adoption after a restart).
pub fn list(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| is_namespace(&e.path()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names() {
        let dir = Path::new("/nonexistent");
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(create(dir, bad), Err(NetnsError::InvalidName(_))));
        }
    }

    #[test]
    fn removing_a_missing_namespace_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        remove(&dir.path().join("nothing")).expect("remove missing");
        assert!(!is_namespace(&dir.path().join("nothing")));
        assert!(list(dir.path()).is_empty());
    }
}
