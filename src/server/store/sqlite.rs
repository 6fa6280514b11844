//! The embedded SQLite backend of [`super::Store`]: one database file that holds the
//! current objects, a revision log for watch replay, and the revision counters.
//!
//! # Schema (version 1)
//!
//! ```sql
//! CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
//!   -- 'schema_version' = 1, 'revision' = last committed revision,
//!   -- 'compacted' = log rows with rev <= this are gone
//! CREATE TABLE log (
//!   rev        INTEGER PRIMARY KEY,        -- one row per revision
//!   key        TEXT    NOT NULL,
//!   kind       INTEGER NOT NULL,           -- 0 created, 1 updated, 2 deleted
//!   create_rev INTEGER NOT NULL,           -- revision that created the key
//!   prev_rev   INTEGER NOT NULL,           -- the key's previous revision, 0 for created
//!   value      BLOB    NOT NULL);          -- new value; for deleted: the last value
//! CREATE TABLE objects (
//!   key        TEXT    NOT NULL UNIQUE,    -- current state only; deleted keys have no row
//!   create_rev INTEGER NOT NULL,
//!   mod_rev    INTEGER NOT NULL,
//!   value      BLOB    NOT NULL);
//! ```
//!
//! Invariants, all kept by writing every table in the same transaction:
//! - `meta.revision` = the highest `log.rev` ever written; revisions are dense (every
//!   revision in `(compacted, revision]` has exactly one `log` row).
//! - `objects` is exactly the fold of the whole log: for each key whose last log row is
//!   not a delete, one row with that row's `create_rev`, `rev` (as `mod_rev`) and value.
//!   So get/list/count read `objects` only, and the log is pure history.
//! - Compaction deletes `log` rows with `rev <= compacted`; nothing else needs them.
//!
//! Replay reads `log` by its `rev` primary key (a range bounded by the retention window)
//! and filters the key prefix on the way; no extra index on `log(key)` is kept because
//! it would cost every write a third b-tree insert for a scan that is at most
//! `history_revisions` rows long.
//!
//! # Concurrency
//!
//! One writer thread ([`writer`]) owns the write connection and group-commits whatever is
//! queued (one fsync per batch). Reads go through a few read connections (WAL readers
//! never block the writer) on `spawn_blocking`. Watches ([`watch`]) replay from an
//! in-memory window of recent events or from the log, then follow a broadcast of live
//! batches.

mod schema;
#[cfg(test)]
mod tests;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row};
use tokio::sync::{mpsc, oneshot};

use super::{KeyValue, ListPage, Revision, Store, StoreError, StoreFuture, Watch};
use writer::{Msg, Op, Reply};

/// How many read connections the pool keeps. Reads are short; two cores.
const READ_CONNECTIONS: usize = 3;

/// Tuning of a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Keep at least this many recent revisions in the log for watch replay.
    pub history_revisions: i64,
    /// How often the background task compacts; `Duration::ZERO` = never automatically.
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

/// State shared by the store handle, the writer thread and watch tasks.
struct Shared {
    path: PathBuf,
    readers: ReadPool,
    revision: AtomicI64,
    compacted: AtomicI64,
    hub: Mutex<watch::Hub>,
    /// Write transactions committed since open (each holds one or more writes).
    commits: AtomicU64,
}

impl Shared {
    fn hub(&self) -> MutexGuard<'_, watch::Hub> {
        // A panic while holding the lock leaves the window consistent (pushes are
        // single operations), so poisoning is not a reason to fail every watch.
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The embedded SQLite store. Cheap to share as `Arc<SqliteStore>`.
pub struct SqliteStore {
    shared: Arc<Shared>,
    writer: Mutex<Option<mpsc::Sender<Msg>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, creating its parent directory, and
    /// starts the writer thread and, unless `opts.compact_interval` is zero, the
    /// background compaction task. Must be called inside a tokio runtime.
    pub async fn open(path: &Path, opts: StoreOptions) -> Result<Arc<SqliteStore>, StoreError> {
        let path = path.to_path_buf();
        let p = path.clone();
        let (conn, state, readers) = tokio::task::spawn_blocking(move || {
            let (conn, state) = schema::open_writer(&p)?;
            let readers = (0..READ_CONNECTIONS)
                .map(|_| schema::open_reader(&p).map(Mutex::new))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, StoreError>((conn, state, readers))
        })
        .await
        .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))??;

        let shared = Arc::new(Shared {
            path: path.clone(),
            readers: ReadPool {
                conns: readers,
                next: AtomicUsize::new(0),
            },
            revision: AtomicI64::new(state.revision),
            compacted: AtomicI64::new(state.compacted),
            hub: Mutex::new(watch::Hub::new(state.revision)),
            commits: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(writer::QUEUE);
        let thread = writer::spawn(conn, rx, shared.clone(), opts.history_revisions)?;
        let store = Arc::new(SqliteStore {
            shared,
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(thread)),
        });
        if !opts.compact_interval.is_zero() {
            tokio::spawn(compact_periodically(
                Arc::downgrade(&store),
                opts.compact_interval,
                opts.history_revisions,
            ));
        }
        tracing::info!(
            path = %path.display(),
            revision = state.revision,
            compacted = state.compacted,
            "opened store"
        );
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Write transactions committed since open; with the revision, this shows how well
    /// group commit batches (revisions per commit).
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    fn closed(&self) -> StoreError {
        StoreError::Backend(format!("store {} is closed", self.shared.path.display()))
    }

    async fn send(&self, msg: impl FnOnce() -> Msg) -> Result<(), StoreError> {
        let tx = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let tx = tx.ok_or_else(|| self.closed())?;
        tx.send(msg()).await.map_err(|_| self.closed())
    }

    async fn write(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(|| Msg::Write { op, reply }).await?;
        rx.await.map_err(|_| self.closed())?
    }

    /// Runs `f` on a read connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.readers.with(f))
            .await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

/// Compacts every `every`, and sooner when more than twice the retained history piled up
/// (so churn cannot grow the log faster than the clock compacts it).
async fn compact_periodically(store: Weak<SqliteStore>, every: Duration, history: i64) {
    let check = every.min(Duration::from_secs(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + check, check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        if store
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return;
        }
        let backlog = store.current_revision() - store.compacted_revision();
        if last.elapsed() < every && backlog <= 2 * history.max(1) {
            continue;
        }
        last = tokio::time::Instant::now();
        if let Err(e) = store.compact().await {
            tracing::warn!(path = %store.shared.path.display(), "compaction failed: {e}");
        }
    }
}

impl Store for SqliteStore {
    fn create(&self, key: String, value: Vec<u8>) -> StoreFuture<'_, Revision> {
        Box::pin(async move {
            self.write(Op::Create { key, value })
                .await
                .map(Reply::revision)
        })
    }

    fn update(
        &self,
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> StoreFuture<'_, Revision> {
        Box::pin(async move {
            self.write(Op::Update {
                key,
                value,
                expected,
            })
            .await
            .map(Reply::revision)
        })
    }

    fn delete(&self, key: String, expected: Option<Revision>) -> StoreFuture<'_, KeyValue> {
        Box::pin(async move {
            match self.write(Op::Delete { key, expected }).await? {
                Reply::Deleted(kv) => Ok(kv),
                Reply::Written(_) => Err(StoreError::Backend(
                    "writer answered a delete with a revision".into(),
                )),
            }
        })
    }

    fn get(&self, key: String) -> StoreFuture<'_, Option<KeyValue>> {
        Box::pin(self.read(move |conn| get_blocking(conn, key)))
    }

    fn list(
        &self,
        prefix: String,
        start_after: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, ListPage> {
        Box::pin(self.read(move |conn| list_blocking(conn, &prefix, start_after.as_deref(), limit)))
    }

    fn count(&self, prefix: String) -> StoreFuture<'_, u64> {
        Box::pin(self.read(move |conn| count_blocking(conn, &prefix)))
    }

    fn watch(&self, prefix: String, after: Revision) -> StoreFuture<'_, Watch> {
        Box::pin(watch::start(self.shared.clone(), prefix, after))
    }

    fn current_revision(&self) -> Revision {
        self.shared.revision.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::Acquire)
    }

    fn compact(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.send(|| Msg::Compact(reply)).await?;
            rx.await.map_err(|_| self.closed())?
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let tx = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
            let mut result = Ok(());
            if let Some(tx) = tx {
                let (reply, rx) = oneshot::channel();
                if tx.send(Msg::Close(reply)).await.is_ok() {
                    result = rx.await.unwrap_or(Ok(()));
                }
            }
            let thread = self
                .writer_thread
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(thread) = thread {
                let joined = tokio::task::spawn_blocking(move || thread.join()).await;
                if !matches!(joined, Ok(Ok(()))) {
                    return Err(StoreError::Backend("store writer thread panicked".into()));
                }
            }
            result
        })
    }
}

/// A few read connections; a read takes a free one, or waits on one.
struct ReadPool {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl ReadPool {
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(conn) = self.conns[(start + i) % n].try_lock() {
                return f(&conn);
            }
        }
        // A panic inside a read leaves the connection usable (rusqlite resets statements
        // and rolls back the transaction on drop).
        let conn = self.conns[start].lock().unwrap_or_else(|e| e.into_inner());
        f(&conn)
    }
}

/// Maps a SQLite error to `Backend` with what we were doing.
fn backend(what: &str, e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

/// The smallest string greater than every string that starts with `prefix`, or `None`
/// when there is none (empty prefix, or only `char::MAX`). SQLite compares TEXT as UTF-8
/// bytes, which orders like code points, so `prefix <= key < end` selects the prefix.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        let mut n = c as u32 + 1;
        if (0xD800..0xE000).contains(&n) {
            n = 0xE000;
        }
        if let Some(next) = char::from_u32(n) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Reads a BLOB (or TEXT) column into shared bytes: the one copy a value needs.
fn blob(row: &Row<'_>, idx: usize) -> rusqlite::Result<Arc<[u8]>> {
    match row.get_ref(idx)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(Arc::from(b)),
        ValueRef::Null => Ok(Arc::from(&[][..])),
        other => Err(rusqlite::Error::InvalidColumnType(
            idx,
            format!("value {idx}"),
            other.data_type(),
        )),
    }
}

fn get_blocking(conn: &Connection, key: String) -> Result<Option<KeyValue>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT create_rev, mod_rev, value FROM objects WHERE key = ?1")
        .map_err(|e| backend("preparing get", e))?;
    let found = stmt
        .query_row([&key], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, blob(row, 2)?))
        })
        .optional()
        .map_err(|e| backend(&format!("reading {key}"), e))?;
    Ok(
        found.map(|(create_revision, mod_revision, value)| KeyValue {
            key,
            value,
            create_revision,
            mod_revision,
        }),
    )
}

fn read_meta(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .map_err(|e| backend(&format!("reading meta {name}"), e))
}

fn list_blocking(
    conn: &Connection,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Result<ListPage, StoreError> {
    let end = prefix_end(prefix);
    // Start at the prefix, or strictly after `start_after` when that is further on.
    let (lower, op) = match start_after {
        Some(s) if s >= prefix => (s, ">"),
        _ => (prefix, ">="),
    };
    let limit_param = limit.min(i64::MAX as usize) as i64;
    let mut sql = format!("SELECT key, create_rev, mod_rev, value FROM objects WHERE key {op} ?1");
    let mut params: Vec<&dyn rusqlite::ToSql> = vec![&lower];
    if let Some(end) = &end {
        sql.push_str(" AND key < ?2");
        params.push(end);
    }
    sql.push_str(" ORDER BY key");
    if limit > 0 {
        sql.push_str(&format!(" LIMIT ?{}", params.len() + 1));
        params.push(&limit_param);
    }

    // One read transaction: the items and the revision come from the same snapshot.
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| backend("starting list", e))?;
    let revision = read_meta(&tx, "revision")?;
    let mut stmt = tx.prepare(&sql).map_err(|e| backend("preparing list", e))?;
    let read = |e| backend(&format!("listing {prefix}"), e);
    let mut rows = stmt.query(&params[..]).map_err(read)?;
    let mut items = Vec::new();
    while let Some(row) = rows.next().map_err(read)? {
        items.push(KeyValue {
            key: row.get(0).map_err(read)?,
            create_revision: row.get(1).map_err(read)?,
            mod_revision: row.get(2).map_err(read)?,
            value: blob(row, 3).map_err(read)?,
        });
    }
    drop(rows);
    drop(stmt);

    let (mut continue_after, mut remaining) = (None, None);
    if limit > 0 && items.len() == limit {
        if let Some(last) = items.last() {
            let rest = count_range(&tx, &last.key, false, end.as_deref())?;
            if rest > 0 {
                continue_after = Some(last.key.clone());
                remaining = Some(rest);
            }
        }
    }
    Ok(ListPage {
        items,
        revision,
        continue_after,
        remaining,
    })
}

/// Counts keys after `lower` (inclusive or not) and before `upper`.
fn count_range(
    conn: &Connection,
    lower: &str,
    inclusive: bool,
    upper: Option<&str>,
) -> Result<u64, StoreError> {
    let op = if inclusive { ">=" } else { ">" };
    let err = |e| backend("counting keys", e);
    let n: i64 = match upper {
        Some(upper) => conn
            .query_row(
                &format!("SELECT count(*) FROM objects WHERE key {op} ?1 AND key < ?2"),
                [lower, upper],
                |r| r.get(0),
            )
            .map_err(err)?,
        None => conn
            .query_row(
                &format!("SELECT count(*) FROM objects WHERE key {op} ?1"),
                [lower],
                |r| r.get(0),
            )
            .map_err(err)?,
    };
    Ok(n.max(0) as u64)
}

fn count_blocking(conn: &Connection, prefix: &str) -> Result<u64, StoreError> {
    count_range(conn, prefix, true, prefix_end(prefix).as_deref())
}
