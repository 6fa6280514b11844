//! The controller runtime every in-server controller and the scheduler share: one
//! informer per resource (a keyed cache kept current by list + watch on the store, with
//! relist when the watch falls behind or is compacted, and a periodic resync), a
//! rate-limited work queue with client-go's semantics ([`WorkQueue`]), a
//! [`run_controller`] loop, and leader election on a Lease ([`leader`]).
//!
//! Everything runs in-process on the [`Registry`]: no HTTP to ourselves.
//!
//! ```ignore
//! let informers = Informers::new(registry.clone(), shutdown.clone());
//! let rcs = informers.get(resources::find("", "v1", "replicationcontrollers").unwrap());
//! let queue: WorkQueue<ObjectKey> = WorkQueue::new();
//! // Feed the queue from the event stream (a `Resync` re-enqueues every object).
//! let mut events = rcs.subscribe();
//! let (q, cache) = (queue.clone(), rcs.clone());
//! tokio::spawn(async move {
//!     while let Some(ev) = events.recv().await {
//!         match ev {
//!             InformerEvent::Resync => cache.list_all().iter().for_each(|o| q.add(ObjectKey::of(o))),
//!             ev => q.add(ObjectKey::of(ev.object().unwrap())),
//!         }
//!     }
//! });
//! rcs.wait_synced().await;
//! run_controller("replicationcontroller", queue, 2, move |key: ObjectKey| {
//!     let cache = rcs.clone();
//!     async move { reconcile(&cache, &key).await }
//! }).await;
//! ```

pub mod leader;
mod queue;

pub use queue::{run_controller, WorkQueue};

use crate::api::meta;
use crate::api::resources::Resource;
use crate::api::selector::LabelSelector;
use crate::server::registry::{ListOptions, Registry};
use crate::server::store::{EventKind, Revision};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How often subscribers get a [`InformerEvent::Resync`] (upstream's default resync of
/// level-triggered controllers is of this order; it repairs anything a bug dropped).
const RESYNC_PERIOD: Duration = Duration::from_secs(300);

/// How many events a slow subscriber may fall behind before it gets a `Resync` instead.
const EVENT_BUFFER: usize = 16384;

/// A resource of the built-in table by group, version and plural (`("", "v1", "pods")`).
/// Panics on a name the table does not have: callers pass literals, so that is a bug
/// caught by the first test that runs the caller.
pub fn builtin(group: &str, version: &str, plural: &str) -> &'static Resource {
    crate::api::resources::find(group, version, plural)
        .unwrap_or_else(|| panic!("{group}/{version} {plural} is not in the resource table"))
}

/// `namespace/name` (or `name` for cluster-scoped objects): the key of the cache and
/// the usual work-queue item.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of an object.
    pub fn of(obj: &Value) -> ObjectKey {
        ObjectKey {
            namespace: meta::namespace(obj).to_string(),
            name: meta::name(obj).to_string(),
        }
    }

    /// A key from its parts.
    pub fn new(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One change the informer saw. Objects carry `metadata.resourceVersion`.
#[derive(Clone, Debug)]
pub enum InformerEvent {
    /// A new object (also every object of the first list).
    Added(Arc<Value>),
    /// An object changed.
    Updated {
        /// Its previous state in the cache.
        old: Arc<Value>,
        /// Its new state.
        new: Arc<Value>,
    },
    /// An object is gone (its last state).
    Deleted(Arc<Value>),
    /// Re-examine everything in the cache: the periodic resync, or this subscriber fell
    /// behind and missed events.
    Resync,
}

impl InformerEvent {
    /// The object the event is about (the new state for updates), None for `Resync`.
    pub fn object(&self) -> Option<&Arc<Value>> {
        match self {
            InformerEvent::Added(o) | InformerEvent::Deleted(o) => Some(o),
            InformerEvent::Updated { new, .. } => Some(new),
            InformerEvent::Resync => None,
        }
    }
}

/// A subscriber's stream of [`InformerEvent`]s.
pub struct EventStream {
    rx: broadcast::Receiver<InformerEvent>,
}

impl EventStream {
    /// The next event; None once the informer stopped. A subscriber that fell behind gets
    /// one `Resync` in place of what it missed.
    pub async fn recv(&mut self) -> Option<InformerEvent> {
        match self.rx.recv().await {
            Ok(ev) => Some(ev),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(InformerEvent::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

struct Inner {
    res: &'static Resource,
    prefix: String,
    cache: RwLock<HashMap<ObjectKey, Arc<Value>>>,
    events: broadcast::Sender<InformerEvent>,
    synced: watch::Sender<bool>,
    revision: std::sync::atomic::AtomicI64,
}

/// A shared, always-current cache of one resource. Cheap to clone.
#[derive(Clone)]
pub struct Informer {
    inner: Arc<Inner>,
}

impl Informer {
    /// Starts an informer for `res` over `registry`; it runs until `shutdown` flips.
    /// Prefer [`Informers::get`], which shares one informer per resource.
    pub fn new(
        registry: Registry,
        res: &'static Resource,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (synced, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            res,
            prefix: res.key_prefix(),
            cache: RwLock::new(HashMap::new()),
            events,
            synced,
            revision: Default::default(),
        });
        tokio::spawn(run(inner.clone(), registry, shutdown));
        Informer { inner }
    }

    /// The resource this informer follows.
    pub fn resource(&self) -> &'static Resource {
        self.inner.res
    }

    /// Subscribes to changes from now on. Call before [`Informer::wait_synced`] to see
    /// the initial objects as `Added`, or list the cache after it.
    pub fn subscribe(&self) -> EventStream {
        EventStream {
            rx: self.inner.events.subscribe(),
        }
    }

    /// Waits until the first list is in the cache.
    pub async fn wait_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Whether the first list is in the cache.
    pub fn has_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// The store revision the cache reflects.
    pub fn revision(&self) -> Revision {
        self.inner
            .revision
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One object from the cache.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.read().get(&ObjectKey::new(namespace, name)).cloned()
    }

    /// Every object in the cache.
    pub fn list_all(&self) -> Vec<Arc<Value>> {
        self.read().values().cloned().collect()
    }

    /// Objects in `namespace` (all namespaces when empty) whose labels match `selector`.
    pub fn list(&self, namespace: &str, selector: &LabelSelector) -> Vec<Arc<Value>> {
        self.read()
            .iter()
            .filter(|(k, _)| namespace.is_empty() || k.namespace == namespace)
            .filter(|(_, v)| selector.is_empty() || selector.matches(meta::labels(v)))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// How many objects the cache holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjectKey, Arc<Value>>> {
        // A panic while holding the lock leaves a map that is still consistent (every
        // write is a single insert or remove), so a poisoned lock is safe to use.
        self.inner.cache.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shared informers of one server: one per resource, started on first use.
#[derive(Clone)]
pub struct Informers {
    registry: Registry,
    shutdown: watch::Receiver<bool>,
    started: Arc<Mutex<HashMap<String, Informer>>>,
}

impl Informers {
    /// A factory over `registry`; informers stop when `shutdown` flips.
    pub fn new(registry: Registry, shutdown: watch::Receiver<bool>) -> Self {
        Informers {
            registry,
            shutdown,
            started: Default::default(),
        }
    }

    /// The informer of `res`, started if it is not running yet.
    pub fn get(&self, res: &'static Resource) -> Informer {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        started
            .entry(res.key_prefix())
            .or_insert_with(|| Informer::new(self.registry.clone(), res, self.shutdown.clone()))
            .clone()
    }

    /// The registry informers read from (for writes).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

fn write_cache(inner: &Inner) -> std::sync::RwLockWriteGuard<'_, HashMap<ObjectKey, Arc<Value>>> {
    inner.cache.write().unwrap_or_else(|e| e.into_inner())
}

/// Replaces the cache with a fresh list and tells subscribers what differs.
fn replace_all(inner: &Inner, items: HashMap<ObjectKey, Arc<Value>>) {
    let mut cache = write_cache(inner);
    let mut events = Vec::new();
    for (k, old) in cache.iter() {
        if !items.contains_key(k) {
            events.push(InformerEvent::Deleted(old.clone()));
        }
    }
    for (k, new) in &items {
        match cache.get(k) {
            None => events.push(InformerEvent::Added(new.clone())),
            Some(old) if old != new => events.push(InformerEvent::Updated {
                old: old.clone(),
                new: new.clone(),
            }),
            Some(_) => {}
        }
    }
    *cache = items;
    drop(cache);
    for ev in events {
        let _ = inner.events.send(ev);
    }
}

/// Applies one store event to the cache and forwards it.
fn apply(inner: &Inner, ev: crate::server::store::Event) {
    let Ok(obj) = meta::decode_stored(&ev.kv.value, ev.kv.mod_revision) else {
        tracing::warn!(key = %ev.kv.key, "informer: stored object is not valid JSON; skipped");
        return;
    };
    let key = ObjectKey::of(&obj);
    let obj = Arc::new(obj);
    let out = {
        let mut cache = write_cache(inner);
        match ev.kind {
            EventKind::Deleted => cache.remove(&key).map(|_| InformerEvent::Deleted(obj)),
            EventKind::Created | EventKind::Updated => match cache.insert(key, obj.clone()) {
                Some(old) => Some(InformerEvent::Updated { old, new: obj }),
                None => Some(InformerEvent::Added(obj)),
            },
        }
    };
    inner
        .revision
        .store(ev.kv.mod_revision, std::sync::atomic::Ordering::Relaxed);
    if let Some(out) = out {
        let _ = inner.events.send(out);
    }
}

/// List, then watch from the list's revision; re-watch from the last revision seen
/// when the watch ends, and relist when that revision was compacted away.
async fn run(inner: Arc<Inner>, registry: Registry, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    'relist: loop {
        let list = match registry.list(inner.res, "", &ListOptions::default()).await {
            Ok(l) => l,
            Err(_) if *shutdown.borrow() => return,
            Err(e) => {
                tracing::warn!(resource = inner.res.plural, error = %e, "informer: list failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut items = HashMap::with_capacity(list.items.len());
        for item in &list.items {
            if let Ok(v) = item.value() {
                items.insert(ObjectKey::of(&v), Arc::new(v));
            }
        }
        replace_all(&inner, items);
        let mut rev = list.revision;
        inner
            .revision
            .store(rev, std::sync::atomic::Ordering::Relaxed);
        inner.synced.send_replace(true);
        let mut resync =
            tokio::time::interval_at(tokio::time::Instant::now() + RESYNC_PERIOD, RESYNC_PERIOD);
        loop {
            let mut w = match registry.store().watch(inner.prefix.clone(), rev).await {
                Ok(w) => w,
                Err(e) => {
                    // Compacted (410) or a store failure: start over from a fresh list.
                    tracing::debug!(resource = inner.res.plural, error = %e, "informer: relisting");
                    continue 'relist;
                }
            };
            loop {
                tokio::select! {
                    ev = w.events.recv() => match ev {
                        Some(ev) => {
                            rev = ev.kv.mod_revision;
                            apply(&inner, ev);
                        }
                        // The store dropped a watcher that fell behind: re-watch from `rev`.
                        None => break,
                    },
                    _ = resync.tick() => { let _ = inner.events.send(InformerEvent::Resync); }
                    _ = shutdown.changed() => return,
                }
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
