//! The node's upstream resolvers and forwarding to them: which resolv.conf counts
//! (k3s's rule), which of its nameservers can be used, and a forwarder over UDP (TCP
//! when the client used TCP or the answer was truncated) with a small answer cache.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::agent::pods::volumes::parse_resolv_conf;

/// Where resolv.conf lives when nothing says otherwise.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of real upstreams (k3s's second choice).
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
/// k3s's fallback when the host only has loopback nameservers.
pub const FALLBACK_NAMESERVER: &str = "8.8.8.8";

/// How long one upstream gets to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time a forwarded answer is served from the cache.
const MAX_CACHE_TTL: u32 = 30;
/// Cached answers at most; the cache starts over when full.
const MAX_CACHE_ENTRIES: usize = 10_000;

/// Forwarding failures.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream DNS server answered (tried {0}); check the nameservers in the node's resolv.conf or --resolv-conf")]
    NoAnswer(String),
}

/// Usable nameservers of resolv.conf text: not loopback (pods, and the node-local
/// server itself, cannot use the host's stub resolver), not one of `own` (that would
/// loop back to us).
pub fn usable_nameservers(text: &str, own: &[IpAddr]) -> Vec<IpAddr> {
    parse_resolv_conf(text)
        .nameservers
        .iter()
        .filter_map(|n| n.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !own.contains(ip))
        .collect()
}

/// The resolv.conf the node uses for upstreams and for pods with dnsPolicy Default, as
/// k3s picks it: `--resolv-conf` when given; else /etc/resolv.conf when it names a
/// non-loopback nameserver; else systemd-resolved's file when that does; else a file
/// written under `agent_dir` naming 8.8.8.8.
pub fn node_resolv_conf(flag: Option<&Path>, agent_dir: &Path) -> std::io::Result<PathBuf> {
    choose_resolv_conf(
        flag,
        &[Path::new(HOST_RESOLV_CONF), Path::new(SYSTEMD_RESOLV_CONF)],
        agent_dir,
    )
}

/// [`node_resolv_conf`] with the candidate files given (tests use their own).
fn choose_resolv_conf(
    flag: Option<&Path>,
    candidates: &[&Path],
    agent_dir: &Path,
) -> std::io::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    for candidate in candidates {
        if let Ok(text) = std::fs::read_to_string(candidate) {
            if !usable_nameservers(&text, &[]).is_empty() {
                return Ok(candidate.to_path_buf());
            }
        }
    }
    let dir = agent_dir.join("etc");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("resolv.conf");
    crate::agent::pods::volumes::write_if_changed(
        &path,
        format!("nameserver {FALLBACK_NAMESERVER}\n").as_bytes(),
    )?;
    tracing::warn!(
        path = %path.display(),
        "the host resolv.conf has no usable nameserver (only loopback ones); pods and cluster DNS use {FALLBACK_NAMESERVER}"
    );
    Ok(path)
}

/// What the cache keys on: lower-case name, type, class, and the query's DO bit
/// (answers differ with DNSSEC records).
pub type CacheKey = (String, u16, u16, bool);

struct Cached {
    stored: Instant,
    expires: Instant,
    /// The upstream's answer; its first two bytes (the ID) are replaced per client.
    packet: Vec<u8>,
}

/// Sends queries to the upstream resolvers, remembering answers for their TTL (capped).
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<HashMap<CacheKey, Cached>>,
    ids: std::collections::hash_map::RandomState,
    counter: std::sync::atomic::AtomicU64,
}

impl Forwarder {
    /// A forwarder to `upstreams` (port 53 unless given).
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder {
            upstreams,
            cache: Mutex::new(HashMap::new()),
            ids: Default::default(),
            counter: Default::default(),
        }
    }

    /// The upstream servers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// An unpredictable query ID (spoofed answers must guess it).
    fn next_id(&self) -> u16 {
        let mut h = self.ids.build_hasher();
        h.write_u64(
            self.counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        h.finish() as u16
    }

    /// A cached answer for `key`, with `id` as its ID.
    /// Its TTLs count down from when it was stored, as a cache's answers must.
    pub fn cached(&self, key: &CacheKey, id: u16) -> Option<Vec<u8>> {
        let (mut packet, age) = {
            let cache = self.cache.lock().ok()?;
            let c = cache.get(key)?;
            let now = Instant::now();
            if c.expires <= now {
                return None;
            }
            (
                c.packet.clone(),
                now.duration_since(c.stored).as_secs() as u32,
            )
        };
        if age > 0 {
            packet = age_ttls(&packet, age)?;
        }
        packet[..2].copy_from_slice(&id.to_be_bytes());
        Some(packet)
    }

    fn store(&self, key: CacheKey, packet: &[u8], ttl: u32) {
        if ttl == 0 || packet.len() < 12 {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= MAX_CACHE_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, c| c.expires > now);
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
        }
        let expires = Instant::now() + Duration::from_secs(u64::from(ttl.min(MAX_CACHE_TTL)));
        cache.insert(
            key,
            Cached {
                stored: Instant::now(),
                expires,
                packet: packet.to_vec(),
            },
        );
    }

    /// Forwards the raw `query` (a client's packet) and returns the upstream's answer
    /// with the client's ID. `tcp`: the client asked over TCP, so ask upstream over TCP
    /// too (a truncated UDP answer is retried over TCP either way when `tcp`).
    /// `cache`: the key and the TTL rule for storing the answer.
    pub async fn forward(
        &self,
        query: &[u8],
        tcp: bool,
        cache: Option<CacheKey>,
    ) -> Result<Vec<u8>, UpstreamError> {
        if query.len() < 12 {
            return Err(UpstreamError::NoAnswer("a malformed query".into()));
        }
        let client_id = [query[0], query[1]];
        let id = self.next_id();
        let mut out = query.to_vec();
        out[..2].copy_from_slice(&id.to_be_bytes());
        for upstream in &self.upstreams {
            let answer = if tcp {
                ask_tcp(*upstream, &out).await
            } else {
                ask_udp(*upstream, &out, id).await
            };
            match answer {
                Ok(mut packet) if packet.len() >= 12 && packet[..2] == id.to_be_bytes() => {
                    packet[..2].copy_from_slice(&client_id);
                    if let Some(key) = cache {
                        if let Some(ttl) = cache_ttl(&packet) {
                            self.store(key, &packet, ttl);
                        }
                    }
                    return Ok(packet);
                }
                Ok(_) => tracing::debug!(%upstream, "upstream DNS answer with a wrong ID"),
                Err(e) => tracing::debug!(%upstream, error = %e, "upstream DNS server failed"),
            }
        }
        let tried: Vec<String> = self.upstreams.iter().map(|u| u.to_string()).collect();
        Err(UpstreamError::NoAnswer(if tried.is_empty() {
            "no nameservers configured".into()
        } else {
            tried.join(", ")
        }))
    }
}

/// `packet` with every record's TTL lowered by `age` seconds (the OPT record is no
/// record here: hickory keeps EDNS apart).
fn age_ttls(packet: &[u8], age: u32) -> Option<Vec<u8>> {
    let mut msg = hickory_proto::op::Message::from_vec(packet).ok()?;
    for r in msg
        .answers
        .iter_mut()
        .chain(msg.authorities.iter_mut())
        .chain(msg.additionals.iter_mut())
    {
        r.ttl = r.ttl.saturating_sub(age);
    }
    msg.to_vec().ok()
}

/// How long an answer may be cached: the smallest TTL of its records (for NXDOMAIN
/// and NODATA the SOA's), `None` for errors other than NXDOMAIN and truncated answers.
fn cache_ttl(packet: &[u8]) -> Option<u32> {
    let msg = hickory_proto::op::Message::from_vec(packet).ok()?;
    use hickory_proto::op::ResponseCode;
    if msg.metadata.truncation
        || !matches!(
            msg.metadata.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        )
    {
        return None;
    }
    msg.answers
        .iter()
        .chain(msg.authorities.iter())
        .map(|r| r.ttl)
        .min()
        .or(Some(0))
}

async fn ask_udp(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        // Stray datagrams with another ID are ignored, not taken as the answer.
        if n >= 12 && buf[..2] == id.to_be_bytes() {
            buf.truncate(n);
            if buf[2] & 0x02 != 0 {
                // Truncated: the full answer over TCP.
                return ask_tcp(upstream, query).await;
            }
            return Ok(buf);
        }
    }
}

async fn ask_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let io = async {
        let mut s = TcpStream::connect(upstream).await?;
        let len = u16::try_from(query.len())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        s.write_all(&framed).await?;
        let n = s.read_u16().await?;
        let mut buf = vec![0u8; usize::from(n)];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, io)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_own_nameservers_are_skipped() {
        let own: IpAddr = "10.43.0.10".parse().unwrap();
        let text = "nameserver 127.0.0.53\nnameserver 10.43.0.10\nnameserver 192.168.1.1\nnameserver fe80::1%eth0\n";
        assert_eq!(
            usable_nameservers(text, &[own]),
            vec![
                "192.168.1.1".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert!(usable_nameservers("nameserver 127.0.0.1\n", &[]).is_empty());
    }

    #[test]
    fn cached_answers_age() {
        use hickory_proto::op::{Message, OpCode};
        use hickory_proto::rr::{rdata::A, Name, RData, Record};
        let mut m = Message::response(9, OpCode::Query);
        m.add_answer(Record::from_rdata(
            Name::from_ascii("a.example.").unwrap(),
            20,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        let aged = Message::from_vec(&age_ttls(&m.to_vec().unwrap(), 7).unwrap()).unwrap();
        assert_eq!(aged.answers[0].ttl, 13);
        let f = Forwarder::new(vec![]);
        let key: CacheKey = ("a.example.".into(), 1, 1, false);
        f.store(key.clone(), &m.to_vec().unwrap(), 20);
        let hit = Message::from_vec(&f.cached(&key, 42).unwrap()).unwrap();
        assert_eq!((hit.metadata.id, hit.answers[0].ttl), (42, 20));
        assert!(f.cached(&("b.example.".into(), 1, 1, false), 1).is_none());
    }

    #[test]
    fn a_flag_wins_and_loopback_only_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("r.conf");
        assert_eq!(node_resolv_conf(Some(&flag), dir.path()).unwrap(), flag);
        // systemd-resolved's stub only: its list of real servers.
        let etc = dir.path().join("etc-resolv.conf");
        let systemd = dir.path().join("systemd-resolv.conf");
        std::fs::write(&etc, "nameserver 127.0.0.53\nsearch lan\n").unwrap();
        std::fs::write(&systemd, "nameserver 192.168.1.1\n").unwrap();
        let pick = |c: &[&Path]| choose_resolv_conf(None, c, dir.path()).unwrap();
        assert_eq!(pick(&[&etc, &systemd]), systemd);
        // Only loopback anywhere: k3s's 8.8.8.8 file.
        let fallback = pick(&[&etc, &dir.path().join("missing")]);
        assert_eq!(fallback, dir.path().join("etc/resolv.conf"));
        assert_eq!(
            std::fs::read_to_string(fallback).unwrap(),
            "nameserver 8.8.8.8\n"
        );
        let usable = dir.path().join("usable.conf");
        std::fs::write(&usable, "nameserver 10.0.0.2\n").unwrap();
        assert_eq!(pick(&[&usable, &systemd]), usable);
    }
}
