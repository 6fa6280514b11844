//! Leader election on the Lease `kube-system/k3rs-controllers` with upstream's timings
//! (15 s lease, 10 s renew deadline, 2 s retry period), so that when several servers
//! share a datastore only one runs the controllers and the scheduler. A single server
//! simply acquires the Lease.
//!
//! [`run_while_leader`] starts a set of tasks on gaining the Lease and aborts them when
//! it is lost.

use crate::api::meta;
use crate::api::resources;
use crate::server::registry::{Registry, Target, WriteOptions};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Namespace of the controllers' Lease.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// Name of the controllers' Lease.
pub const LEASE_NAME: &str = "k3rs-controllers";
/// How long a Lease holds without renewal.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader that could not renew for this long stops acting.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a non-leader retries, and a leader renews.
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Parses a Lease time (`metav1.MicroTime`).
fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

/// Whether the Lease `lease` may be taken by `identity` now.
fn may_acquire(lease: &Value, identity: &str, now: jiff::Timestamp) -> bool {
    let spec = &lease["spec"];
    let holder = spec["holderIdentity"].as_str().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let secs = spec["leaseDurationSeconds"]
        .as_i64()
        .unwrap_or(LEASE_DURATION.as_secs() as i64);
    match spec["renewTime"].as_str().and_then(parse_time) {
        Some(renewed) => now.as_second() > renewed.as_second() + secs,
        None => true,
    }
}

/// One attempt to acquire or renew. Ok(true) when `identity` holds the Lease now.
async fn try_acquire(registry: &Registry, identity: &str) -> Result<bool, crate::api::ApiError> {
    let res = resources::find("coordination.k8s.io", "v1", "leases")
        .ok_or_else(|| crate::api::ApiError::internal("the leases resource is not served"))?;
    let now = meta::now_rfc3339_micro();
    let current = match registry.get(res, LEASE_NAMESPACE, LEASE_NAME).await {
        Ok(o) => o.value()?,
        Err(e) if e.code == 404 => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
                "spec": {
                    "holderIdentity": identity,
                    "leaseDurationSeconds": LEASE_DURATION.as_secs(),
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            });
            return match registry
                .create(res, LEASE_NAMESPACE, lease, &WriteOptions::default())
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    if !may_acquire(&current, identity, jiff::Timestamp::now()) {
        return Ok(false);
    }
    let mut next = current.clone();
    let spec = &mut next["spec"];
    if spec["holderIdentity"].as_str() != Some(identity) {
        spec["acquireTime"] = json!(now);
        spec["leaseTransitions"] = json!(spec["leaseTransitions"].as_i64().unwrap_or(0) + 1);
        spec["holderIdentity"] = json!(identity);
    }
    spec["renewTime"] = json!(now);
    spec["leaseDurationSeconds"] = json!(LEASE_DURATION.as_secs());
    // The resourceVersion in `next` makes this a compare-and-swap: a server that lost a
    // race gets 409 and stays a follower.
    match registry
        .update(
            res,
            LEASE_NAMESPACE,
            LEASE_NAME,
            next,
            Target::Main,
            &WriteOptions::default(),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the election until `shutdown`; the returned channel says whether this server
/// leads. `identity` must be unique per server (upstream: hostname + random suffix).
pub fn start(
    registry: Registry,
    identity: String,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut last_renew = tokio::time::Instant::now();
        loop {
            match try_acquire(&registry, &identity).await {
                Ok(true) => {
                    last_renew = tokio::time::Instant::now();
                    if !*tx.borrow() {
                        tracing::info!(lease = %format!("{LEASE_NAMESPACE}/{LEASE_NAME}"), identity, "became the controllers' leader");
                        tx.send_replace(true);
                    }
                }
                Ok(false) => {
                    if *tx.borrow() {
                        tracing::warn!(
                            identity,
                            "another server took the controllers' lease; stopping controllers"
                        );
                        tx.send_replace(false);
                    }
                }
                Err(_) if *shutdown.borrow() => return,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read or renew the lease");
                    if *tx.borrow() && last_renew.elapsed() > RENEW_DEADLINE {
                        tracing::warn!(
                            identity,
                            "lease not renewed within the deadline; stopping controllers"
                        );
                        tx.send_replace(false);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PERIOD) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
    rx
}

/// Starts the tasks `start` returns each time this server becomes leader, and aborts
/// them when leadership is lost or `shutdown` flips.
pub async fn run_while_leader<F>(
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    start: F,
) where
    F: Fn() -> Vec<JoinHandle<()>>,
{
    loop {
        tokio::select! {
            r = leader.wait_for(|l| *l) => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let tasks = start();
        tokio::select! {
            _ = leader.wait_for(|l| !*l) => {}
            _ = shutdown.changed() => {}
        }
        for t in &tasks {
            t.abort();
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_or_own_lease_may_be_taken() {
        let now: jiff::Timestamp = "2025-01-01T00:01:00Z".parse().unwrap();
        let lease = |holder: &str, renew: &str| json!({"spec": {"holderIdentity": holder, "renewTime": renew, "leaseDurationSeconds": 15}});
        assert!(may_acquire(
            &lease("me", "2025-01-01T00:00:59.000000Z"),
            "me",
            now
        ));
        assert!(!may_acquire(
            &lease("other", "2025-01-01T00:00:50.000000Z"),
            "me",
            now
        ));
        assert!(may_acquire(
            &lease("other", "2025-01-01T00:00:40.000000Z"),
            "me",
            now
        ));
        assert!(may_acquire(
            &lease("", "2025-01-01T00:00:59.000000Z"),
            "me",
            now
        ));
    }
}
