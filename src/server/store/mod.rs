//! The revisioned key space that holds every API object.
//!
//! Keys are strings such as `/registry/pods/default/web-1`; values are opaque bytes (the
//! API layer stores JSON without `metadata.resourceVersion` and injects the revision on
//! the way out). One global, strictly increasing revision numbers every write; it is the
//! resourceVersion of the object written. Watches replay the log from a revision and
//! then follow live writes; revisions older than the compacted window are `Expired`.
//!
//! [`Store`] is the contract; [`sqlite::SqliteStore`] is the embedded backend. Other
//! backends (PostgreSQL, etcd) can implement the same trait.

pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A revision of the key space. Revision 0 means "nothing written yet".
pub type Revision = i64;

/// One stored object at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The stored bytes.
    pub value: Arc<[u8]>,
    /// Revision of the write that created this key (stable across updates).
    pub create_revision: Revision,
    /// Revision of the write that produced this value (the resourceVersion).
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key did not exist before this write.
    Created,
    /// The key existed and got a new value.
    Updated,
    /// The key was removed. The event's `kv` holds the last value, with `mod_revision`
    /// set to the revision of the delete.
    Deleted,
}

/// One change to the key space, as a watcher sees it.
#[derive(Clone, Debug)]
pub struct Event {
    /// Created, updated or deleted.
    pub kind: EventKind,
    /// The key and its value after the change (for deletes: the last value, with
    /// `mod_revision` = the delete's revision).
    pub kv: KeyValue,
    /// The value before the change, when known (always known for live events; replay
    /// from the log may not know it once the previous revision was compacted).
    pub prev: Option<KeyValue>,
}

/// A page of a list.
#[derive(Clone, Debug)]
pub struct ListPage {
    /// The objects, in key order.
    pub items: Vec<KeyValue>,
    /// The store's revision when the list was read (the list's resourceVersion).
    pub revision: Revision,
    /// When `limit` cut the list short: the last key returned, to continue after.
    pub continue_after: Option<String>,
    /// How many more keys matched the prefix after this page (only when cut short).
    pub remaining: Option<u64>,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` of a key that exists.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// `update`/`delete` of a key that does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// Compare-and-swap failed: the key's current revision is not the expected one.
    #[error("key {key} is at revision {current}, not {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The revision the key has.
        current: Revision,
    },
    /// A watch from a revision that was compacted away.
    #[error("too old resource version: {requested} ({compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still available.
        compacted: Revision,
    },
    /// The backend failed (disk, corruption, closed).
    #[error("storage failure: {0}")]
    Backend(String),
}

/// Boxed future returned by the store's async methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A live watch: replayed events first, then live ones, in revision order.
pub struct Watch {
    /// Receives events in revision order. The channel closes when the store shuts down
    /// or the watcher fell too far behind (the client then re-watches from its last
    /// revision, which replays from the log).
    pub events: tokio::sync::mpsc::Receiver<Event>,
}

/// The revisioned key space. All methods are safe to call concurrently.
pub trait Store: Send + Sync + 'static {
    /// Creates `key`. Fails with `AlreadyExists` if it exists. Returns the new revision.
    /// When this returns Ok, the write is durable (fsynced).
    fn create(&self, key: String, value: Vec<u8>) -> StoreFuture<'_, Revision>;

    /// Replaces the value of `key` if its current `mod_revision` equals `expected`
    /// (`None`: unconditionally). Fails with `NotFound` or `Conflict`. Returns the new revision.
    fn update(
        &self,
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> StoreFuture<'_, Revision>;

    /// Deletes `key` if its current `mod_revision` equals `expected` (`None`: unconditionally).
    /// Returns the deleted object with `mod_revision` set to the delete's revision.
    fn delete(&self, key: String, expected: Option<Revision>) -> StoreFuture<'_, KeyValue>;

    /// Reads one key at the current revision.
    fn get(&self, key: String) -> StoreFuture<'_, Option<KeyValue>>;

    /// Lists keys that start with `prefix`, in key order, starting after `start_after`
    /// (exclusive) when given, at most `limit` items when `limit > 0`.
    fn list(
        &self,
        prefix: String,
        start_after: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, ListPage>;

    /// Counts keys that start with `prefix`.
    fn count(&self, prefix: String) -> StoreFuture<'_, u64>;

    /// Watches keys starting with `prefix` for changes after revision `after`
    /// (exclusive: the first event has a revision > `after`). Fails with `Compacted` when
    /// `after` is older than the oldest revision kept.
    fn watch(&self, prefix: String, after: Revision) -> StoreFuture<'_, Watch>;

    /// The latest committed revision.
    fn current_revision(&self) -> Revision;

    /// The oldest revision a watch may start after (revisions before it were compacted).
    fn compacted_revision(&self) -> Revision;

    /// Drops history older than the retention window and returns unused file space.
    fn compact(&self) -> StoreFuture<'_, ()>;

    /// Flushes and stops the writer. Writes after this fail with `Backend`.
    fn close(&self) -> StoreFuture<'_, ()>;
}
