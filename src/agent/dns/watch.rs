//! Keeps the zone current: list and watch Services, EndpointSlices and Pods (each in a
//! task of its own, relisting when a watch ends or breaks), fold the events into
//! [`Sources`], and rebuild the [`Zone`] shortly after changes, batching bursts.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::server::Resolver;
use super::sources::{Kind, Sources};
use super::zone::Zone;
use crate::agent::client::{query_escape, ApiClient};

/// A watch is restarted (with a fresh list) at least this often.
const WATCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Changes arriving within this window go into one rebuild.
const BATCH: Duration = Duration::from_millis(20);

/// The objects followed so far, and the signal that they changed.
pub struct Followed {
    sources: Mutex<Sources>,
    changed: Notify,
}

impl Followed {
    fn with<R>(&self, f: impl FnOnce(&mut Sources) -> R) -> R {
        match self.sources.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// Starts following the cluster into `resolver`'s zone for `domain`.
pub fn start(
    api: ApiClient,
    resolver: Arc<Resolver>,
    domain: String,
    dns_ip: Option<IpAddr>,
    shutdown: watch::Receiver<bool>,
) {
    let followed = Arc::new(Followed {
        sources: Mutex::new(Sources::default()),
        changed: Notify::new(),
    });
    for kind in [Kind::Service, Kind::EndpointSlice, Kind::Pod] {
        tokio::spawn(follow(
            api.clone(),
            kind,
            followed.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(rebuild(followed, resolver, domain, dns_ip, shutdown));
}

async fn rebuild(
    followed: Arc<Followed>,
    resolver: Arc<Resolver>,
    domain: String,
    dns_ip: Option<IpAddr>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut serial: u32 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1);
    loop {
        tokio::select! {
            _ = followed.changed.notified() => {}
            _ = shutdown.changed() => return,
        }
        tokio::time::sleep(BATCH).await;
        let sources = followed.with(|s| s.clone());
        serial = serial.wrapping_add(1);
        let zone = Zone::build(&domain, dns_ip, &sources, serial);
        tracing::debug!(names = zone.len(), "cluster DNS zone rebuilt");
        resolver.set_zone(zone);
    }
}

/// Lists and watches one kind for as long as the agent runs.
async fn follow(
    api: ApiClient,
    kind: Kind,
    followed: Arc<Followed>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let list: Value = match api.request_json(http::Method::GET, kind.path(), None).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, path = kind.path(), "cluster DNS cannot list; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let items = list["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        followed.with(|s| s.replace(kind, items));
        followed.changed.notify_one();
        let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0");
        let path = format!(
            "{}?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={}",
            kind.path(),
            query_escape(rv),
            WATCH_TIMEOUT.as_secs()
        );
        let mut stream = match api.watch(&path).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, path = kind.path(), "cluster DNS cannot watch; relisting");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = shutdown.changed() => return,
            };
            match event {
                Ok(Some(ev)) => {
                    if followed.with(|s| s.apply(kind, &ev.kind, &ev.object)) {
                        followed.changed.notify_one();
                    }
                }
                // Ended, broke or expired (410): relist.
                Ok(None) | Err(_) => break,
            }
        }
    }
}
