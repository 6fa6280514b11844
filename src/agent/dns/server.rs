//! The DNS server proper: one [`Resolver`] (the current [`Zone`] plus the upstream
//! [`Forwarder`]) answering packets, and the UDP and TCP loops feeding it.
//!
//! The hot path (a cluster name, or a cached upstream answer) is synchronous: decode,
//! look up in the `Arc<Zone>` taken from a lock held only for the clone, encode, send.
//! Only queries that go upstream become tasks of their own.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use super::upstream::{CacheKey, Forwarder};
use super::zone::{Outcome, Zone};

/// Largest UDP answer to a client without EDNS (RFC 1035).
const PLAIN_UDP_LIMIT: usize = 512;
/// The payload size we announce and honour at most (the DNS flag day value).
const EDNS_PAYLOAD: u16 = 1232;
/// Idle TCP connections are closed after this.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What a packet needs next.
pub enum Handled {
    /// The answer, ready to send.
    Reply(Vec<u8>),
    /// Ask upstream (see [`Resolver::forward`]).
    Forward(Box<Pending>),
    /// Not worth an answer (not a query, or too short to carry an ID).
    Drop,
}

/// A query that goes upstream: either the client's packet as it is, or the chase of an
/// ExternalName target whose CNAME is already in `partial`.
pub struct Pending {
    raw: Vec<u8>,
    key: CacheKey,
    chase: Option<(Message, Name, RecordType)>,
    limit: usize,
}

/// Answers DNS packets from the cluster zone and the upstream resolvers.
pub struct Resolver {
    zone: RwLock<Arc<Zone>>,
    forwarder: Forwarder,
}

impl Resolver {
    /// A resolver starting with `zone`.
    pub fn new(zone: Zone, forwarder: Forwarder) -> Resolver {
        Resolver {
            zone: RwLock::new(Arc::new(zone)),
            forwarder,
        }
    }

    /// The zone in use now.
    pub fn zone(&self) -> Arc<Zone> {
        match self.zone.read() {
            Ok(z) => z.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the zone (queries in flight finish on the old one).
    pub fn set_zone(&self, zone: Zone) {
        let zone = Arc::new(zone);
        match self.zone.write() {
            Ok(mut z) => *z = zone,
            Err(poisoned) => *poisoned.into_inner() = zone,
        }
    }

    /// The upstream forwarder.
    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// Handles one packet from a client; `udp`: it came over UDP (answers are cut to the
    /// client's payload size).
    pub fn handle(&self, packet: &[u8], udp: bool) -> Handled {
        let req = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(_) if packet.len() >= 12 => {
                let id = u16::from_be_bytes([packet[0], packet[1]]);
                return reply(
                    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr),
                    None,
                    usize::MAX,
                );
            }
            Err(_) => return Handled::Drop,
        };
        if req.metadata.message_type != MessageType::Query {
            return Handled::Drop;
        }
        let limit = if !udp {
            usize::from(u16::MAX)
        } else {
            match &req.edns {
                Some(e) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
                None => PLAIN_UDP_LIMIT,
            }
        };
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.metadata.checking_disabled = req.metadata.checking_disabled;
        if req.metadata.op_code != OpCode::Query {
            resp.metadata.response_code = ResponseCode::NotImp;
            return reply(resp, req.edns.as_ref(), limit);
        }
        let [query] = req.queries.as_slice() else {
            resp.metadata.response_code = ResponseCode::FormErr;
            return reply(resp, req.edns.as_ref(), limit);
        };
        resp.add_query(query.clone());
        let dnssec_ok = req.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let zone = self.zone();
        match zone.answer(query.name(), query.query_type(), &mut resp) {
            Outcome::Answered => reply(resp, req.edns.as_ref(), limit),
            Outcome::Forward => {
                let key = cache_key(
                    query.name(),
                    query.query_type(),
                    u16::from(query.query_class()),
                    dnssec_ok,
                );
                if let Some(p) = self.forwarder.cached(&key, req.metadata.id) {
                    return Handled::Reply(p);
                }
                Handled::Forward(Box::new(Pending {
                    raw: packet.to_vec(),
                    key,
                    chase: None,
                    limit,
                }))
            }
            Outcome::Chase(target) => {
                let qtype = query.query_type();
                let key = cache_key(&target, qtype, u16::from(query.query_class()), false);
                if let Some(edns) = req.edns.as_ref() {
                    resp.set_edns(our_edns(edns));
                }
                let mut q = Message::query();
                q.metadata.recursion_desired = true;
                q.add_query(Query::query(target.clone(), qtype));
                let raw = match q.to_vec() {
                    Ok(r) => r,
                    Err(_) => return reply(resp, req.edns.as_ref(), limit),
                };
                Handled::Forward(Box::new(Pending {
                    raw,
                    key,
                    chase: Some((resp, target, qtype)),
                    limit,
                }))
            }
        }
    }

    /// Asks upstream for a [`Pending`] query and returns the answer for the client
    /// (SERVFAIL when no upstream answers).
    pub async fn forward(&self, p: Box<Pending>, tcp: bool) -> Vec<u8> {
        let cached = if p.chase.is_some() {
            let id = u16::from_be_bytes([p.raw[0], p.raw[1]]);
            self.forwarder.cached(&p.key, id)
        } else {
            None
        };
        let answer = match cached {
            Some(a) => Ok(a),
            None => {
                self.forwarder
                    .forward(&p.raw, tcp, Some(p.key.clone()))
                    .await
            }
        };
        match (p.chase, answer) {
            (None, Ok(packet)) => packet,
            (None, Err(e)) => {
                tracing::debug!(error = %e, "forwarding a DNS query failed");
                servfail(&p.raw)
            }
            (Some((mut resp, _target, _qtype)), Ok(packet)) => {
                if let Ok(up) = Message::from_vec(&packet) {
                    resp.metadata.response_code = up.metadata.response_code;
                    resp.answers.extend(up.answers);
                }
                encode(resp, p.limit).unwrap_or_default()
            }
            (Some((mut resp, target, _)), Err(e)) => {
                tracing::debug!(error = %e, %target, "resolving an ExternalName target failed");
                resp.metadata.response_code = ResponseCode::ServFail;
                encode(resp, p.limit).unwrap_or_default()
            }
        }
    }
}

fn cache_key(name: &Name, qtype: RecordType, class: u16, dnssec_ok: bool) -> CacheKey {
    (
        name.to_lowercase().to_ascii(),
        u16::from(qtype),
        class,
        dnssec_ok,
    )
}

fn our_edns(theirs: &Edns) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(EDNS_PAYLOAD);
    e.set_dnssec_ok(theirs.flags().dnssec_ok);
    e
}

fn reply(mut resp: Message, edns: Option<&Edns>, limit: usize) -> Handled {
    if let Some(e) = edns {
        resp.set_edns(our_edns(e));
    }
    match encode(resp, limit) {
        Some(b) => Handled::Reply(b),
        None => Handled::Drop,
    }
}

/// Encodes `resp`, truncating (TC set, records dropped) when it exceeds `limit`.
fn encode(resp: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    resp.truncate().to_vec().ok()
}

/// SERVFAIL for a raw query (its ID and question kept).
fn servfail(raw: &[u8]) -> Vec<u8> {
    let Ok(req) = Message::from_vec(raw) else {
        return Vec::new();
    };
    let mut resp = Message::error_msg(
        req.metadata.id,
        req.metadata.op_code,
        ResponseCode::ServFail,
    );
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_queries(req.queries);
    resp.to_vec().unwrap_or_default()
}

/// Serves DNS over UDP on `socket` until `shutdown`.
pub async fn serve_udp(
    resolver: Arc<Resolver>,
    socket: UdpSocket,
    mut shutdown: watch::Receiver<bool>,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors of earlier sends surface here; keep serving.
                    tracing::debug!(error = %e, "DNS UDP receive failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        match resolver.handle(&buf[..n], true) {
            Handled::Reply(answer) => send(&socket, &answer, peer).await,
            Handled::Drop => {}
            Handled::Forward(p) => {
                let (resolver, socket) = (resolver.clone(), socket.clone());
                tokio::spawn(async move {
                    let answer = resolver.forward(p, false).await;
                    send(&socket, &answer, peer).await;
                });
            }
        }
    }
}

async fn send(socket: &UdpSocket, answer: &[u8], peer: SocketAddr) {
    if answer.is_empty() {
        return;
    }
    if let Err(e) = socket.send_to(answer, peer).await {
        tracing::debug!(error = %e, %peer, "DNS UDP send failed");
    }
}

/// Serves DNS over TCP on `listener` until `shutdown`.
pub async fn serve_tcp(
    resolver: Arc<Resolver>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        tokio::spawn(tcp_connection(resolver.clone(), stream));
    }
}

/// One TCP client: length-prefixed queries, answered in order, until it goes quiet.
async fn tcp_connection(resolver: Arc<Resolver>, mut stream: TcpStream) {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(n)) => usize::from(n),
            _ => return,
        };
        let mut packet = vec![0u8; len];
        if tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet))
            .await
            .is_err()
        {
            return;
        }
        let answer = match resolver.handle(&packet, false) {
            Handled::Reply(a) => a,
            Handled::Drop => return,
            Handled::Forward(p) => resolver.forward(p, true).await,
        };
        let Ok(n) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&answer);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
