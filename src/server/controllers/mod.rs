//! Controllers that run inside the server process. Each one is level-triggered: it
//! compares the objects with what should be and moves one step closer, and converges
//! again from a fresh list after any restart.

pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslices;
pub mod events;
pub mod events_ttl;
pub mod gc;
pub mod hpa;
pub mod hpa_metrics;
pub mod hpa_normalize;
pub mod hpa_rules;
pub mod job;
pub mod job_rules;
pub mod manifests;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod owned;
pub mod replicaset;
pub mod revisions;
pub mod statefulset;

/// Waits until something under `prefix` changes after `rev`, 30 s pass (a resync), or
/// `shutdown` flips. Returns false on shutdown.
pub async fn wait_for_change(
    registry: &crate::server::registry::Registry,
    prefix: String,
    rev: crate::server::store::Revision,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    use std::time::Duration;
    let mut events = registry
        .store()
        .watch(prefix, rev)
        .await
        .ok()
        .map(|w| w.events);
    tokio::select! {
        _ = async {
            match events.as_mut() {
                Some(rx) => { rx.recv().await; }
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        } => true,
        _ = tokio::time::sleep(Duration::from_secs(30)) => true,
        _ = shutdown.changed() => false,
    }
}
