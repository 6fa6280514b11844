//! The garbage collector: deletes objects whose owners (metadata.ownerReferences) are all
//! gone, and carries out the `foregroundDeletion` and `orphan` finalizers that a delete
//! with propagationPolicy Foreground or Orphan leaves on an owner.
//!
//! Foreground deletion deletes every dependent and removes the owner once no dependent
//! with `blockOwnerDeletion: true` is left (as upstream, dependents without it do not
//! hold the owner); Orphan removes the owner's reference from its dependents first.
//!
//! It keeps a small in-memory graph (dependent key → owners, owner uid → dependents),
//! built from one full list at start and kept current from the store's watch, so a change
//! costs work proportional to the objects it touches, not to the cluster.

use crate::api::meta;
use crate::api::resources::{self, Resource};
use crate::api::ApiError;
use crate::server::registry::{DeleteOptions, ListOptions, Registry};
use crate::server::store::{EventKind, StoreError};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// Where a store key points.
fn locate(key: &str) -> Option<(&'static Resource, String, String)> {
    for r in resources::RESOURCES {
        let prefix = r.key_prefix();
        if let Some(rest) = key.strip_prefix(prefix.as_str()) {
            return if r.namespaced {
                let (ns, name) = rest.split_once('/')?;
                Some((r, ns.to_string(), name.to_string()))
            } else {
                Some((r, String::new(), rest.to_string()))
            };
        }
    }
    None
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["uid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Default)]
struct Graph {
    /// dependent key → owner uids
    owners: HashMap<String, Vec<String>>,
    /// owner uid → dependent keys
    dependents: HashMap<String, HashSet<String>>,
    /// uid → key of owners being deleted with a GC finalizer
    finalizing: HashMap<String, String>,
    /// (dependent key, owner uid) of references with `blockOwnerDeletion: true`
    blocking: HashSet<(String, String)>,
}

/// The owner uids whose references on `obj` have `blockOwnerDeletion: true`.
fn blocking_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|o| o["blockOwnerDeletion"].as_bool() == Some(true))
                .filter_map(|o| o["uid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Graph {
    fn set(&mut self, key: &str, obj: &Value) {
        self.remove(key);
        let uids = owner_uids(obj);
        for u in &uids {
            self.dependents
                .entry(u.clone())
                .or_default()
                .insert(key.to_string());
        }
        if !uids.is_empty() {
            self.owners.insert(key.to_string(), uids);
        }
        for u in blocking_uids(obj) {
            self.blocking.insert((key.to_string(), u));
        }
        let fins = meta::finalizers(obj);
        if meta::is_deleting(obj) && fins.iter().any(|f| f == FOREGROUND || f == ORPHAN) {
            self.finalizing
                .insert(meta::uid(obj).to_string(), key.to_string());
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(uids) = self.owners.remove(key) {
            for u in uids {
                if let Some(set) = self.dependents.get_mut(&u) {
                    set.remove(key);
                    if set.is_empty() {
                        self.dependents.remove(&u);
                    }
                }
            }
        }
        self.finalizing.retain(|_, k| k != key);
        self.blocking.retain(|(k, _)| k != key);
    }
}

/// Runs until `shutdown` flips.
pub async fn run(registry: Registry, mut shutdown: watch::Receiver<bool>) {
    loop {
        // (Re)build from a full list, then follow the watch from that revision.
        let rev = registry.store().current_revision();
        let mut todo: BTreeSet<String> = BTreeSet::new();
        let mut graph = Graph::default();
        for r in resources::RESOURCES
            .iter()
            .filter(|r| !r.ephemeral && r.conversion.is_none())
        {
            let Ok(page) = registry.list(r, "", &ListOptions::default()).await else {
                continue;
            };
            for item in page.items {
                if !contains(&item.bytes, b"ownerReferences")
                    && !contains(&item.bytes, b"deletionTimestamp")
                {
                    continue;
                }
                let Ok(v) = item.value() else { continue };
                let key = r.key(meta::namespace(&v), meta::name(&v));
                graph.set(&key, &v);
                if graph.owners.contains_key(&key) {
                    todo.insert(key);
                }
            }
        }
        let mut events = match registry.store().watch("/registry/".into(), rev).await {
            Ok(w) => w.events,
            Err(StoreError::Compacted { .. }) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector: cannot watch; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        loop {
            process(&registry, &mut graph, std::mem::take(&mut todo)).await;
            // Wait for changes, then take everything queued (debounced batches).
            let first = tokio::select! {
                ev = events.recv() => ev,
                _ = tokio::time::sleep(Duration::from_secs(30)) => { todo.extend(graph.finalizing.values().cloned()); continue; }
                _ = shutdown.changed() => return,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            tokio::time::sleep(Duration::from_millis(200)).await;
            while let Ok(ev) = events.try_recv() {
                batch.push(ev);
            }
            for ev in batch {
                let key = ev.kv.key.clone();
                match ev.kind {
                    EventKind::Deleted => {
                        let uid = meta::decode_stored(&ev.kv.value, 0)
                            .map(|v| meta::uid(&v).to_string())
                            .unwrap_or_default();
                        graph.remove(&key);
                        if let Some(deps) = graph.dependents.get(&uid) {
                            todo.extend(deps.iter().cloned());
                        }
                    }
                    _ => {
                        if !contains(&ev.kv.value, b"ownerReferences")
                            && !contains(&ev.kv.value, b"deletionTimestamp")
                        {
                            graph.remove(&key);
                            continue;
                        }
                        let Ok(v) = meta::decode_stored(&ev.kv.value, ev.kv.mod_revision) else {
                            continue;
                        };
                        graph.set(&key, &v);
                        if graph.owners.contains_key(&key) {
                            todo.insert(key.clone());
                        }
                    }
                }
            }
            todo.extend(graph.finalizing.values().cloned());
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn process(registry: &Registry, graph: &mut Graph, todo: BTreeSet<String>) {
    for key in todo {
        let Some((res, ns, name)) = locate(&key) else {
            continue;
        };
        let obj = match registry.get(res, &ns, &name).await {
            Ok(o) => match o.value() {
                Ok(v) => v,
                Err(_) => continue,
            },
            Err(_) => continue,
        };
        let result = if graph.finalizing.values().any(|k| *k == key) {
            finalize(registry, graph, res, &ns, &name, &obj).await
        } else {
            collect_orphan(registry, res, &ns, &name, &obj).await
        };
        if let Err(e) = result {
            if e.code != 404 && e.code != 409 {
                tracing::warn!(key = %key, error = %e, "garbage collector");
            }
        }
    }
}

/// Whether the owner a reference names still exists (same uid).
async fn owner_exists(registry: &Registry, ns: &str, owner: &Value) -> bool {
    let api_version = owner["apiVersion"].as_str().unwrap_or("");
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = owner["kind"].as_str().unwrap_or("");
    let Some(res) = resources::find_kind(group, kind) else {
        return true;
    };
    let scope = if res.namespaced { ns } else { "" };
    match registry
        .get(res, scope, owner["name"].as_str().unwrap_or(""))
        .await
    {
        Ok(o) => o
            .value()
            .map(|v| meta::uid(&v) == owner["uid"].as_str().unwrap_or(""))
            .unwrap_or(true),
        Err(e) => e.code != 404,
    }
}

/// Deletes a dependent whose owners are all gone.
async fn collect_orphan(
    registry: &Registry,
    res: &Resource,
    ns: &str,
    name: &str,
    obj: &Value,
) -> Result<(), ApiError> {
    let refs = obj["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if refs.is_empty() || meta::is_deleting(obj) {
        return Ok(());
    }
    for r in &refs {
        if owner_exists(registry, ns, r).await {
            return Ok(());
        }
    }
    tracing::info!(
        resource = res.plural,
        namespace = ns,
        name,
        "deleting object whose owners are gone"
    );
    let opts = DeleteOptions {
        uid: Some(meta::uid(obj).to_string()),
        propagation: Some("Background".into()),
        ..Default::default()
    };
    registry.delete(res, ns, name, &opts).await.map(|_| ())
}

/// Carries out `orphan` and `foregroundDeletion` on an owner being deleted.
async fn finalize(
    registry: &Registry,
    graph: &Graph,
    res: &Resource,
    ns: &str,
    name: &str,
    owner: &Value,
) -> Result<(), ApiError> {
    let uid = meta::uid(owner).to_string();
    let fins = meta::finalizers(owner);
    let deps: Vec<String> = graph
        .dependents
        .get(&uid)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    let mut done: Vec<&str> = Vec::new();
    if fins.iter().any(|f| f == ORPHAN) {
        for d in &deps {
            let Some((dres, dns, dname)) = locate(d) else {
                continue;
            };
            let u = uid.clone();
            let r = registry
                .update_with(dres, &dns, &dname, move |o| {
                    if let Some(refs) = o["metadata"]["ownerReferences"].as_array() {
                        let kept: Vec<Value> = refs
                            .iter()
                            .filter(|r| r["uid"] != u.as_str())
                            .cloned()
                            .collect();
                        if kept.is_empty() {
                            if let Some(m) = o["metadata"].as_object_mut() {
                                m.remove("ownerReferences");
                            }
                        } else {
                            o["metadata"]["ownerReferences"] = json!(kept);
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = r {
                if e.code != 404 {
                    return Err(e);
                }
            }
        }
        done.push(ORPHAN);
    }
    if fins.iter().any(|f| f == FOREGROUND) {
        // Only dependents with blockOwnerDeletion hold the owner back.
        let blocked = deps
            .iter()
            .any(|d| graph.blocking.contains(&(d.clone(), uid.clone())));
        if !blocked {
            done.push(FOREGROUND);
        }
        for d in &deps {
            let Some((dres, dns, dname)) = locate(d) else {
                continue;
            };
            let Ok(dep) = registry
                .get(dres, &dns, &dname)
                .await
                .and_then(|o| o.value())
            else {
                continue;
            };
            if meta::is_deleting(&dep) {
                continue;
            }
            // As upstream: a dependent with dependents of its own goes in the foreground
            // too, so the whole chain is gone before the owner.
            let policy = if graph.dependents.contains_key(meta::uid(&dep)) {
                "Foreground"
            } else {
                "Background"
            };
            let opts = DeleteOptions {
                uid: Some(meta::uid(&dep).to_string()),
                propagation: Some(policy.into()),
                ..Default::default()
            };
            if let Err(e) = registry.delete(dres, &dns, &dname, &opts).await {
                if e.code != 404 && e.code != 409 {
                    return Err(e);
                }
            }
        }
    }
    if done.is_empty() {
        return Ok(());
    }
    registry
        .update_with(res, ns, name, |o| {
            let kept: Vec<String> = meta::finalizers(o)
                .into_iter()
                .filter(|f| !done.contains(&f.as_str()))
                .collect();
            if let Some(m) = o["metadata"].as_object_mut() {
                if kept.is_empty() {
                    m.remove("finalizers");
                } else {
                    m.insert("finalizers".into(), json!(kept));
                }
            }
            Ok(())
        })
        .await
        .map(|_| ())
}
