//! The embedded SQLite backend of [`super::Store`]. (Being written.)

use super::*;
use std::path::Path;
use std::time::Duration;

/// Tuning of the SQLite store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Recent revisions kept for watch replay.
    pub history_revisions: i64,
    /// How often compaction runs.
    pub compact_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            history_revisions: 10_000,
            compact_interval: Duration::from_secs(300),
        }
    }
}

/// Placeholder.
pub struct SqliteStore;

impl SqliteStore {
    /// Placeholder.
    pub fn open(_path: &Path, _opts: StoreOptions) -> Result<Arc<SqliteStore>, StoreError> {
        Err(StoreError::Backend("not implemented".into()))
    }
}

impl Store for SqliteStore {
    fn create(&self, _key: String, _value: Vec<u8>) -> StoreFuture<'_, Revision> {
        Box::pin(async { Err(StoreError::Backend("x".into())) })
    }
    fn update(
        &self,
        _key: String,
        _value: Vec<u8>,
        _e: Option<Revision>,
    ) -> StoreFuture<'_, Revision> {
        Box::pin(async { Err(StoreError::Backend("x".into())) })
    }
    fn delete(&self, _key: String, _e: Option<Revision>) -> StoreFuture<'_, KeyValue> {
        Box::pin(async { Err(StoreError::Backend("x".into())) })
    }
    fn get(&self, _key: String) -> StoreFuture<'_, Option<KeyValue>> {
        Box::pin(async { Err(StoreError::Backend("x".into())) })
    }
    fn list(&self, _p: String, _s: Option<String>, _l: usize) -> StoreFuture<'_, ListPage> {
        Box::pin(async { Err(StoreError::Backend("x".into())) })
    }
    fn count(&self, _p: String) -> StoreFuture<'_, u64> {
        Box::pin(async { Err(StoreError::Backend("x".into())) })
    }
    fn watch(&self, _p: String, _a: Revision) -> StoreFuture<'_, Watch> {
        Box::pin(async { Err(StoreError::Backend("x".into())) })
    }
    fn current_revision(&self) -> Revision {
        0
    }
    fn compacted_revision(&self) -> Revision {
        0
    }
    fn compact(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
