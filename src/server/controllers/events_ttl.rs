//! Event expiry (the apiserver's `--event-ttl`, default one hour): upstream stores each
//! Event with an etcd lease renewed on every write, so an Event disappears a TTL after
//! its last update. Here a sweep pages through the Events of both APIs (`v1` and
//! `events.k8s.io/v1`) and deletes those whose latest timestamp is older than the TTL.

use crate::api::meta;
use crate::server::informer::builtin;
use crate::server::registry::{ListOptions, Registry};
use jiff::Timestamp;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::watch;

/// Upstream's default `--event-ttl`.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);
/// Events read per page, so a sweep holds a bounded number in memory.
const PAGE: usize = 500;

/// How often to sweep: a tenth of the TTL, between one second and one minute, so an
/// Event outlives its TTL by at most that much.
fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// When an Event was last written: the latest of the timestamps either API sets.
pub fn last_update(event: &Value) -> Option<Timestamp> {
    [
        "/lastTimestamp",
        "/deprecatedLastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| event.pointer(p)?.as_str()?.parse::<Timestamp>().ok())
    .max()
}

/// Whether an Event has outlived `ttl` at `now`. Events without any timestamp are left
/// alone: nothing says how old they are.
pub fn expired(event: &Value, ttl: Duration, now: Timestamp) -> bool {
    let Some(last) = last_update(event) else {
        return false;
    };
    let Ok(ttl) = jiff::SignedDuration::try_from(ttl) else {
        return false;
    };
    now.duration_since(last) > ttl
}

/// Deletes the expired Events of one API. Returns how many went.
async fn sweep_one(
    registry: &Registry,
    res: &'static crate::api::resources::Resource,
    ttl: Duration,
    now: Timestamp,
) -> usize {
    let mut deleted = 0;
    let mut opts = ListOptions {
        limit: PAGE,
        ..Default::default()
    };
    loop {
        let page = match registry.list(res, "", &opts).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list events for expiry");
                return deleted;
            }
        };
        for item in &page.items {
            let Ok(ev) = item.value() else { continue };
            if !expired(&ev, ttl, now) {
                continue;
            }
            let r = registry
                .delete(
                    res,
                    meta::namespace(&ev),
                    meta::name(&ev),
                    &Default::default(),
                )
                .await;
            match r {
                Ok(_) => deleted += 1,
                // Gone already (another server, a user): fine.
                Err(e) if e.code == 404 => {}
                Err(e) => {
                    tracing::debug!(error = %e, event = meta::name(&ev), "cannot expire event")
                }
            }
        }
        match page.continue_token {
            Some(t) if !t.is_empty() => opts.continue_token = Some(t),
            _ => return deleted,
        }
    }
}

/// Deletes the Events expired at `now`. Returns how many went.
pub async fn sweep(registry: &Registry, ttl: Duration, now: Timestamp) -> usize {
    sweep_one(registry, builtin("", "v1", "events"), ttl, now).await
        + sweep_one(registry, builtin("events.k8s.io", "v1", "events"), ttl, now).await
}

/// Sweeps until `shutdown` flips.
pub async fn run(registry: Registry, ttl: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(sweep_interval(ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                let n = sweep(&registry, ttl, Timestamp::now()).await;
                if n > 0 {
                    tracing::debug!(events = n, "expired events deleted");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn age_counts_from_the_last_update() {
        let now: Timestamp = "2024-06-01T12:00:00Z".parse().unwrap();
        let ttl = Duration::from_secs(3600);
        let old = json!({"firstTimestamp": "2024-06-01T09:00:00Z", "lastTimestamp": "2024-06-01T10:00:00Z"});
        assert!(expired(&old, ttl, now));
        // Bumped recently (count went up): kept though it was first seen long ago.
        let bumped = json!({"firstTimestamp": "2024-06-01T09:00:00Z", "lastTimestamp": "2024-06-01T11:30:00Z"});
        assert!(!expired(&bumped, ttl, now));
        let series = json!({"eventTime": "2024-06-01T09:00:00.000000Z",
                            "series": {"lastObservedTime": "2024-06-01T11:59:00.000000Z"}});
        assert!(!expired(&series, ttl, now));
        assert!(!expired(&json!({}), ttl, now));
        assert_eq!(sweep_interval(ttl), Duration::from_secs(60));
        assert_eq!(
            sweep_interval(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn sweep_deletes_only_expired_events() {
        let (registry, _dir) = super::super::events::test_registry().await;
        let events = builtin("", "v1", "events");
        // Checked two minutes from now with a one-minute TTL: "old" was written (created)
        // just now, "fresh" claims an update 100 s from now (a later bump).
        let now = Timestamp::now();
        let later = now + jiff::SignedDuration::from_secs(120);
        let soon = (now + jiff::SignedDuration::from_secs(100))
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        for (name, last) in [("old", "2000-01-01T00:00:00Z"), ("fresh", soon.as_str())] {
            let ev = json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                "reason": "Test", "message": "m", "type": "Normal",
                "firstTimestamp": last, "lastTimestamp": last, "count": 1});
            registry
                .create(events, "default", ev, &Default::default())
                .await
                .expect("create event");
        }
        assert_eq!(sweep(&registry, Duration::from_secs(60), later).await, 1);
        assert!(registry.get(events, "default", "old").await.is_err());
        assert!(registry.get(events, "default", "fresh").await.is_ok());
    }
}
