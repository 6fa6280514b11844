//! Probe connections into a pod's network namespace, and the tcpSocket probe.
//!
//! A socket belongs to the network namespace it was created in, whatever thread uses
//! it later. So one shared thread (started on first use) enters a pod's namespace,
//! creates the bare socket and hands it back; the connect, the I/O and the timeouts
//! then run on tokio like any other socket. No thread per probe or per connection, and
//! no tokio worker ever changes namespace.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

use super::Outcome;

/// Where a pod's probes connect from and to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNet {
    /// The pod's network namespace (`None`: hostNetwork, the agent's own).
    pub netns: Option<PathBuf>,
    /// The pod's address (`None`: the pod has loopback only).
    pub ip: Option<IpAddr>,
}

impl PodNet {
    /// The address a probe without `host` goes to: the pod's IP like upstream, or
    /// loopback inside the namespace when the pod has no other address.
    pub fn default_host(&self) -> IpAddr {
        self.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

struct SocketRequest {
    netns: PathBuf,
    v6: bool,
    reply: oneshot::Sender<io::Result<OwnedFd>>,
}

/// The sender to the socket-making thread, started on first use.
fn maker() -> io::Result<mpsc::Sender<SocketRequest>> {
    static MAKER: OnceLock<Mutex<Option<mpsc::Sender<SocketRequest>>>> = OnceLock::new();
    let slot = MAKER.get_or_init(|| Mutex::new(None));
    let mut guard = slot
        .lock()
        .map_err(|_| io::Error::other("socket maker lock poisoned"))?;
    if let Some(tx) = guard.as_ref() {
        return Ok(tx.clone());
    }
    let (tx, rx) = mpsc::channel::<SocketRequest>();
    std::thread::Builder::new()
        .name("k3rs-probe-netns".into())
        .spawn(move || {
            // This thread only ever creates sockets, so it may stay in whichever
            // namespace it entered last.
            for req in rx {
                let _ = req.reply.send(socket_in(&req.netns, req.v6));
            }
        })?;
    *guard = Some(tx.clone());
    Ok(tx)
}

fn socket_in(netns: &Path, v6: bool) -> io::Result<OwnedFd> {
    let ns = std::fs::File::open(netns)?;
    // SAFETY: setns(2) on a valid fd; it changes only this dedicated thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A TCP socket in `netns` (`None`: the agent's namespace) for `addr`'s family.
async fn socket(netns: Option<&Path>, addr: SocketAddr) -> io::Result<TcpSocket> {
    let Some(netns) = netns else {
        return if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
    };
    let (reply, rx) = oneshot::channel();
    maker()?
        .send(SocketRequest {
            netns: netns.to_path_buf(),
            v6: addr.is_ipv6(),
            reply,
        })
        .map_err(|_| io::Error::other("the probe socket thread is gone"))?;
    let fd = rx
        .await
        .map_err(|_| io::Error::other("the probe socket thread is gone"))??;
    Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(fd)))
}

/// Connects to `addr` from inside `netns` within `timeout`. The error reads like Go's
/// dialer ("dial tcp 10.42.0.5:80: connect: connection refused"), as upstream's
/// messages embed it.
pub async fn connect(
    netns: Option<&Path>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let attempt = async {
        let s = socket(netns, addr).await?;
        s.connect(addr).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(dial_error(addr, &e)),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// Go's wording of a failed dial.
fn dial_error(addr: SocketAddr, e: &io::Error) -> String {
    let what = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => match e.raw_os_error() {
            Some(libc::ENETUNREACH) => "connect: network is unreachable".into(),
            Some(libc::EHOSTUNREACH) => "connect: no route to host".into(),
            _ => format!("connect: {e}"),
        },
    };
    format!("dial tcp {addr}: {what}")
}

/// The tcpSocket probe: success when a connection opens within the timeout.
pub async fn probe_tcp(net: &PodNet, addr: SocketAddr, timeout: Duration) -> Outcome {
    match connect(net.netns.as_deref(), addr, timeout).await {
        Ok(_) => Outcome::Success,
        Err(e) => Outcome::Failure(e),
    }
}

/// The address of `host` (an IP, or a name resolved from the agent's namespace as
/// the kubelet would) and `port`.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("dial tcp: lookup {bare}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("dial tcp: lookup {bare}: no such host"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_probe_succeeds_on_a_listener_and_fails_like_go_without_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let net = PodNet::default();
        assert_eq!(
            probe_tcp(&net, addr, Duration::from_secs(1)).await,
            Outcome::Success
        );
        drop(listener);
        match probe_tcp(&net, addr, Duration::from_secs(1)).await {
            Outcome::Failure(m) => {
                assert_eq!(m, format!("dial tcp {addr}: connect: connection refused"))
            }
            other => panic!("want a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn sockets_made_in_a_namespace_connect_there() {
        // The agent's own namespace through its /proc path exercises the same thread
        // and hand-over as a pod's bind-mounted namespace.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let net = PodNet {
            netns: Some(PathBuf::from("/proc/self/ns/net")),
            ip: None,
        };
        let got = probe_tcp(&net, addr, Duration::from_secs(2)).await;
        assert_eq!(
            got,
            Outcome::Success,
            "setns needs root (CAP_SYS_ADMIN): run the agent unit tests as root"
        );
    }
}
