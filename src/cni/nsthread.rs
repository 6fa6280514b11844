//! Network namespace threads for the CNI.
//!
//! `setns(2)` changes only the calling thread, and a tokio worker must never change
//! namespace (other tasks would run in the wrong one). So every namespace switch happens
//! on a fresh `std::thread` that enters the namespace, does its work and ends. A netlink
//! socket stays bound to the namespace it was created in, which is how the pod-side
//! connection works: the thread creates it and hands it back to async code.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use super::CniError;

/// The calling thread's network namespace.
pub(crate) const SELF_NS: &str = "/proc/thread-self/ns/net";

/// Opens the calling thread's network namespace.
pub(crate) fn current() -> Result<File, CniError> {
    File::open(SELF_NS).map_err(|source| CniError::Io {
        what: "open own network namespace",
        path: SELF_NS.into(),
        source,
    })
}

/// Opens a bind-mounted namespace file.
pub(crate) fn open(path: &Path) -> Result<File, CniError> {
    File::open(path).map_err(|source| CniError::Io {
        what: "open network namespace",
        path: path.to_path_buf(),
        source,
    })
}

/// Moves the calling thread into `ns`. Only for threads this module (or a test) owns.
pub(crate) fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: setns(2) on a valid fd; it affects only the calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread inside `ns` and awaits its result without blocking the
/// async runtime.
pub(crate) async fn run_in<T, F>(ns: Arc<File>, what: &str, f: F) -> Result<T, CniError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, CniError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let label = what.to_string();
    std::thread::Builder::new()
        .name("k3rs-cni-ns".into())
        .spawn(move || {
            let result = match enter(&ns) {
                Ok(()) => f(),
                Err(source) => Err(CniError::Io {
                    what: "enter network namespace for",
                    path: label.into(),
                    source,
                }),
            };
            let _ = tx.send(result);
        })
        .map_err(|source| CniError::Io {
            what: "spawn namespace thread for",
            path: what.into(),
            source,
        })?;
    rx.await.map_err(|_| CniError::Thread(what.to_string()))?
}

/// A netlink connection bound to `ns`: the socket is created on a thread inside it and
/// its connection task runs on the current tokio runtime (it ends when the handle is
/// dropped).
pub(crate) async fn connect_in(ns: Arc<File>, what: &str) -> Result<rtnetlink::Handle, CniError> {
    let rt = tokio::runtime::Handle::current();
    let label = what.to_string();
    run_in(ns, what, move || {
        let _entered = rt.enter();
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| CniError::Io {
            what: "open netlink socket in network namespace of",
            path: label.into(),
            source,
        })?;
        tokio::spawn(conn);
        Ok(handle)
    })
    .await
}
