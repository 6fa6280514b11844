//! A tiny `sd_notify(3)` client: tells a supervising systemd (a `Type=notify` unit) that
//! k3rs is ready (`READY=1`), is stopping (`STOPPING=1`), or what it is doing
//! (`STATUS=...`). The message goes as one datagram to the socket named by
//! `$NOTIFY_SOCKET`; a path starting with `@` is a Linux abstract socket. Without
//! `$NOTIFY_SOCKET` (not started by systemd) every call is a no-op.
//!
//! No crate needed: it is one `sendto` on a `UnixDatagram`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to `$NOTIFY_SOCKET`.
/// Returns `Ok(false)` when there is no supervisor to tell.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket` (a path, or `@name` for an abstract
/// socket).
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?
    } else if bytes.starts_with(b"/") {
        sock.send_to(state.as_bytes(), socket)?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "NOTIFY_SOCKET={} is neither an absolute path nor an abstract socket (@name)",
                socket.to_string_lossy()
            ),
        ));
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write to the notification socket",
        ));
    }
    Ok(())
}

fn send_logged(state: &str) {
    match notify(state) {
        Ok(true) => tracing::debug!(state, "notified systemd"),
        Ok(false) => {}
        // Not fatal: the service still works; systemd will just not see the state change.
        Err(e) => tracing::warn!(error = %e, state, "cannot notify systemd ($NOTIFY_SOCKET)"),
    }
}

/// `READY=1` with a status line: the service finished starting.
pub fn ready(status: &str) {
    send_logged(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// `STOPPING=1`: the service is shutting down.
pub fn stopping() {
    send_logged("STOPPING=1\nSTATUS=Shutting down");
}

/// `STATUS=...`: a free-form status line for `systemctl status`.
pub fn status(status: &str) {
    send_logged(&format!("STATUS={}", one_line(status)));
}

/// A newline would start a new assignment; keep the status to one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=up").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=up");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("k3rs-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(recv(&server), "STOPPING=1");
    }

    #[test]
    fn relative_socket_is_an_error() {
        let e = notify_to(OsStr::new("notify.sock"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn missing_socket_is_an_error_not_a_panic() {
        let e = notify_to(OsStr::new("/nonexistent/k3rs/notify.sock"), "READY=1");
        assert!(e.is_err());
    }

    #[test]
    fn status_stays_one_line() {
        assert_eq!(one_line("a\nb\rc"), "a b c");
    }
}
