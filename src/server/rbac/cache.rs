//! Keeps the authorizer's index and node graph current: lists the four RBAC kinds and
//! pods once, then follows the store's watch of each, re-listing when a watch ends
//! (store restart, watcher too slow, compaction). Level-triggered like the
//! controllers: a missed event is repaired by the next list.

use super::{Authorizer, PolicyIndex};
use crate::api::resources::{self, Resource};
use crate::api::status::ApiError;
use crate::server::registry::Registry;
use crate::server::store::{EventKind, KeyValue, Revision, Store};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The stored RBAC objects by store key, one map per kind.
#[derive(Default)]
struct Objects {
    kinds: [BTreeMap<String, Value>; 4],
}

const RBAC_KINDS: [&str; 4] = [
    "clusterroles",
    "roles",
    "clusterrolebindings",
    "rolebindings",
];

fn rbac_resource(plural: &str) -> Result<&'static Resource, ApiError> {
    resources::find("rbac.authorization.k8s.io", "v1", plural).ok_or_else(|| {
        ApiError::internal(format!(
            "resource table lacks {plural}.rbac.authorization.k8s.io"
        ))
    })
}

fn decode(kv: &KeyValue) -> Option<Value> {
    serde_json::from_slice(&kv.value).ok()
}

/// One kind's change, applied to shared state.
enum Change {
    Reset(Vec<KeyValue>),
    Put(KeyValue),
    Delete(String),
}

fn rebuild(authz: &Authorizer, objects: &Objects) {
    let [crs, roles, crbs, rbs] = &objects.kinds;
    authz.set_policy(PolicyIndex::build(
        crs.values(),
        roles.values(),
        crbs.values(),
        rbs.values(),
    ));
}

/// Lists everything once, then spawns the followers.
pub async fn start(
    authz: Arc<Authorizer>,
    registry: Registry,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    let store = registry.store().clone();
    let objects = Arc::new(Mutex::new(Objects::default()));
    for (i, plural) in RBAC_KINDS.iter().enumerate() {
        let prefix = rbac_resource(plural)?.key_prefix();
        let (items, rev) = list(&store, &prefix).await?;
        let apply = {
            let authz = authz.clone();
            let objects = objects.clone();
            move |c: Change| {
                let Ok(mut o) = objects.lock() else { return };
                let map = &mut o.kinds[i];
                match c {
                    Change::Reset(items) => {
                        map.clear();
                        for kv in items {
                            if let Some(v) = decode(&kv) {
                                map.insert(kv.key, v);
                            }
                        }
                    }
                    Change::Put(kv) => {
                        if let Some(v) = decode(&kv) {
                            map.insert(kv.key, v);
                        }
                    }
                    Change::Delete(key) => {
                        map.remove(&key);
                    }
                }
                rebuild(&authz, &o);
            }
        };
        apply(Change::Reset(items));
        tokio::spawn(follow(store.clone(), prefix, rev, apply, shutdown.clone()));
    }
    let pods = resources::find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("resource table lacks pods"))?;
    let prefix = pods.key_prefix();
    let (items, rev) = list(&store, &prefix).await?;
    let apply = {
        let authz = authz.clone();
        move |c: Change| {
            authz.with_graph(|g| match c {
                Change::Reset(items) => {
                    g.clear();
                    for kv in items {
                        if let Some(v) = decode(&kv) {
                            g.put_pod(&v);
                        }
                    }
                }
                Change::Put(kv) => {
                    if let Some(v) = decode(&kv) {
                        g.put_pod(&v);
                    }
                }
                Change::Delete(key) => {
                    // Keys are `<prefix><namespace>/<name>`.
                    if let Some(rest) = key.strip_prefix(&pods.key_prefix()) {
                        g.remove_pod(rest);
                    }
                }
            });
        }
    };
    apply(Change::Reset(items));
    tokio::spawn(follow(store, prefix, rev, apply, shutdown));
    Ok(())
}

async fn list(store: &Arc<dyn Store>, prefix: &str) -> Result<(Vec<KeyValue>, Revision), ApiError> {
    let page = store
        .list(prefix.to_string(), None, 0)
        .await
        .map_err(|e| ApiError::internal(format!("authorizer cache: listing {prefix}: {e}")))?;
    Ok((page.items, page.revision))
}

/// Applies watch events after `rev`; re-lists when the watch ends.
async fn follow(
    store: Arc<dyn Store>,
    prefix: String,
    mut rev: Revision,
    mut apply: impl FnMut(Change) + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Ok(mut w) = store.watch(prefix.clone(), rev).await {
            loop {
                let ev = tokio::select! {
                    ev = w.events.recv() => ev,
                    _ = shutdown.changed() => return,
                };
                let Some(ev) = ev else { break };
                rev = ev.kv.mod_revision;
                match ev.kind {
                    EventKind::Deleted => apply(Change::Delete(ev.kv.key)),
                    EventKind::Created | EventKind::Updated => apply(Change::Put(ev.kv)),
                }
            }
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        match list(&store, &prefix).await {
            Ok((items, r)) => {
                rev = r;
                apply(Change::Reset(items));
            }
            Err(e) => tracing::warn!(error = %e, "authorizer cache: re-list failed; retrying"),
        }
    }
}
