//! Node-local cluster DNS (what CoreDNS does in k3s, without a pod): the agent answers
//! DNS over UDP and TCP on port 53 of the node's bridge address (cni0, the podCIDR's
//! `.1`) and of the kube-dns ClusterIP (`--cluster-dns`, 10.43.0.10), which it adds as
//! a /32 on `lo` so pods reach it without any proxy rule.
//!
//! - [`sources`]: the parts of Services, EndpointSlices and Pods DNS needs.
//! - [`watch`]: list + watch of those into the zone.
//! - [`zone`]: the records of the cluster domain and how a query is answered.
//! - [`names`]: name helpers (dashed IPs, reverse names, parents).
//! - [`upstream`]: the node's upstream resolvers (k3s's resolv.conf rule) and forwarding.
//! - [`server`]: the packet handler and the UDP/TCP loops.

pub mod names;
pub mod server;
pub mod sources;
pub mod upstream;
pub mod watch;
pub mod zone;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::TryStreamExt;
use tokio::net::{TcpListener, UdpSocket};

pub use server::Resolver;
pub use upstream::Forwarder;
pub use zone::Zone;

use crate::agent::client::ApiClient;

/// The DNS port.
pub const PORT: u16 = 53;

/// What the node-local DNS server runs with.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// `--cluster-domain` (`cluster.local`).
    pub cluster_domain: String,
    /// `--cluster-dns` addresses (the kube-dns ClusterIP): added to `lo` and served.
    pub cluster_dns: Vec<IpAddr>,
    /// The node's bridge address (`None` without a pod network).
    pub bridge_ip: Option<Ipv4Addr>,
    /// The resolv.conf naming the upstream resolvers (see [`upstream::node_resolv_conf`]).
    pub resolv_conf: PathBuf,
}

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cluster DNS: cannot add {ip}/32 to lo: {message}; the agent needs CAP_NET_ADMIN (run as root)")]
    Address { ip: IpAddr, message: String },
    #[error("cluster DNS: cannot listen on {addr}: {source}; is another DNS server (dnsmasq, systemd-resolved, CoreDNS) bound to it?")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cluster DNS: cannot read {path}: {source}; pass --resolv-conf with a file naming the upstream nameservers")]
    ResolvConf {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Starts the server: adds the cluster DNS addresses to `lo`, binds UDP and TCP on
/// them and the bridge address, and follows the cluster into the zone. Runs until
/// `shutdown`; returns the resolver (for tests and stats).
pub async fn start(
    api: &ApiClient,
    opts: DnsOptions,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<Resolver>, DnsError> {
    for ip in &opts.cluster_dns {
        add_to_lo(*ip).await?;
    }
    let mut listen: Vec<IpAddr> = opts.cluster_dns.clone();
    listen.extend(opts.bridge_ip.map(IpAddr::V4));
    let text =
        std::fs::read_to_string(&opts.resolv_conf).map_err(|source| DnsError::ResolvConf {
            path: opts.resolv_conf.clone(),
            source,
        })?;
    let upstreams: Vec<SocketAddr> = upstream::usable_nameservers(&text, &listen)
        .into_iter()
        .map(|ip| SocketAddr::new(ip, PORT))
        .collect();
    if upstreams.is_empty() {
        tracing::warn!(
            path = %opts.resolv_conf.display(),
            "no usable upstream nameserver: names outside the cluster will not resolve"
        );
    }
    let dns_ip = opts.cluster_dns.first().copied();
    let resolver = Arc::new(Resolver::new(
        Zone::empty(&opts.cluster_domain, dns_ip),
        Forwarder::new(upstreams.clone()),
    ));
    for ip in &listen {
        let addr = SocketAddr::new(*ip, PORT);
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Listen { addr, source })?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| DnsError::Listen { addr, source })?;
        tokio::spawn(server::serve_udp(resolver.clone(), udp, shutdown.clone()));
        tokio::spawn(server::serve_tcp(resolver.clone(), tcp, shutdown.clone()));
    }
    watch::start(
        api.clone(),
        resolver.clone(),
        opts.cluster_domain.clone(),
        dns_ip,
        shutdown,
    );
    tracing::info!(
        listen = ?listen,
        upstreams = ?upstreams,
        domain = %opts.cluster_domain,
        "cluster DNS is serving"
    );
    Ok(resolver)
}

/// Adds `ip` as a host address (/32, /128) on `lo` of the agent's network namespace;
/// an address already there is fine (agent restarts).
async fn add_to_lo(ip: IpAddr) -> Result<(), DnsError> {
    let fail = |message: String| DnsError::Address { ip, message };
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| fail(e.to_string()))?;
    let conn_task = tokio::spawn(conn);
    let result = async {
        let lo = handle
            .link()
            .get()
            .match_name("lo".to_string())
            .execute()
            .try_next()
            .await
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail("no loopback link".into()))?;
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        match handle
            .address()
            .add(lo.header.index, ip, prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::EEXIST => Ok(()),
            Err(e) => Err(fail(e.to_string())),
        }
    }
    .await;
    conn_task.abort();
    result
}
