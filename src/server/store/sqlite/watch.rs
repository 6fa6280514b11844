//! Watches: the in-memory window of recent events, the live broadcast, and replay of
//! older revisions from the log.
//!
//! A watch subscribes to the live broadcast and snapshots the window under one lock,
//! the same lock the writer holds to append to the window and broadcast. So every
//! event is either in the snapshot or arrives live (or both; duplicates are dropped by
//! revision). Revisions older than the window come from the log, read up to the
//! window's start.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc};

use super::writer::{KIND_CREATED, KIND_DELETED, KIND_UPDATED};
use super::{backend, blob, prefix_end, read_meta, Shared};
use crate::server::store::{Event, EventKind, KeyValue, Revision, StoreError, Watch};

/// The window keeps at most this many recent events...
const WINDOW_EVENTS: usize = 4096;
/// ...and at most this many bytes of keys and values (idle memory matters more than
/// replaying from memory instead of the log).
const WINDOW_BYTES: usize = 4 << 20;
/// Commit batches the live broadcast buffers for a slow watcher before it lags.
pub(super) const LIVE_BATCHES: usize = 1024;
/// Events buffered between a watch task and its receiver.
pub(super) const WATCH_BUFFER: usize = 1024;
/// Log rows read per read transaction during replay.
const REPLAY_CHUNK: i64 = 1000;

/// Recent events and the live feed. Guarded by `Shared::hub`.
pub(super) struct Hub {
    /// Commit batches in revision order, with their size in bytes.
    batches: VecDeque<(Arc<[Event]>, usize)>,
    events: usize,
    bytes: usize,
    /// Every event with a revision greater than this is in `batches`.
    pub(super) from: Revision,
    /// `None` once the writer stopped: watches end.
    live: Option<broadcast::Sender<Arc<[Event]>>>,
}

impl Hub {
    pub(super) fn new(revision: Revision) -> Self {
        let (live, _) = broadcast::channel(LIVE_BATCHES);
        Hub {
            batches: VecDeque::new(),
            events: 0,
            bytes: 0,
            from: revision,
            live: Some(live),
        }
    }

    /// Appends one committed batch (in revision order) and sends it to live watchers.
    pub(super) fn publish(&mut self, events: Vec<Event>) {
        let bytes = events
            .iter()
            .map(|e| e.kv.key.len() + e.kv.value.len())
            .sum::<usize>();
        let batch: Arc<[Event]> = events.into();
        self.events += batch.len();
        self.bytes += bytes;
        self.batches.push_back((batch.clone(), bytes));
        while self.batches.len() > 1 && (self.events > WINDOW_EVENTS || self.bytes > WINDOW_BYTES) {
            if let Some((old, old_bytes)) = self.batches.pop_front() {
                self.events -= old.len();
                self.bytes -= old_bytes;
                if let Some(last) = old.last() {
                    self.from = last.kv.mod_revision;
                }
            }
        }
        if let Some(live) = &self.live {
            // An error only means nobody watches right now.
            let _ = live.send(batch);
        }
    }

    /// Ends all watches: their live receivers see `Closed`.
    pub(super) fn close(&mut self) {
        self.live = None;
    }
}

/// Starts a watch of `prefix` after revision `after`.
pub(super) async fn start(
    shared: Arc<Shared>,
    prefix: String,
    after: Revision,
) -> Result<Watch, StoreError> {
    let compacted = shared.compacted.load(Ordering::Acquire);
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let (live, window, from) = {
        let hub = shared.hub();
        let Some(sender) = &hub.live else {
            return Err(StoreError::Backend(format!(
                "store {} is closed",
                shared.path.display()
            )));
        };
        let live = sender.subscribe();
        let window: Vec<Arc<[Event]>> = hub
            .batches
            .iter()
            .filter(|(b, _)| b.last().is_some_and(|e| e.kv.mod_revision > after))
            .map(|(b, _)| b.clone())
            .collect();
        (live, window, hub.from)
    };
    // The first log chunk is read here so that a compaction that raced the check above
    // still shows as `Compacted` to the caller.
    let first = if after < from {
        Some(read_log(&shared, &prefix, after, from).await?)
    } else {
        None
    };
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    tokio::spawn(forward(
        shared, prefix, after, from, first, window, live, tx,
    ));
    Ok(Watch { events: rx })
}

/// Sends every matching event with a revision above the last one sent, from the log,
/// the window snapshot and then the live feed; returns (ending the watch) when the
/// receiver is gone, the feed lagged or closed, or the log was compacted under it.
#[allow(clippy::too_many_arguments)]
async fn forward(
    shared: Arc<Shared>,
    prefix: String,
    after: Revision,
    from: Revision,
    first: Option<Chunk>,
    window: Vec<Arc<[Event]>>,
    mut live: broadcast::Receiver<Arc<[Event]>>,
    tx: mpsc::Sender<Event>,
) {
    let mut last = after;
    if let Some(mut chunk) = first {
        loop {
            for event in chunk.events {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            last = chunk.cursor;
            if chunk.done {
                break;
            }
            chunk = match read_log(&shared, &prefix, last, from).await {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::debug!(prefix, "watch replay ended: {e}");
                    return;
                }
            };
        }
    }
    for batch in &window {
        if !send_batch(&tx, &prefix, batch, &mut last).await {
            return;
        }
    }
    drop(window);
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            received = live.recv() => match received {
                Ok(batch) => {
                    if !send_batch(&tx, &prefix, &batch, &mut last).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(prefix, missed = n, "watcher fell behind; ending the watch");
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Sends the events of `batch` newer than `last` that match `prefix`; false when the
/// receiver is gone.
async fn send_batch(
    tx: &mpsc::Sender<Event>,
    prefix: &str,
    batch: &[Event],
    last: &mut Revision,
) -> bool {
    for event in batch {
        let rev = event.kv.mod_revision;
        if rev <= *last {
            continue;
        }
        *last = rev;
        if event.kv.key.starts_with(prefix) && tx.send(event.clone()).await.is_err() {
            return false;
        }
    }
    true
}

/// Log rows `(cursor, upto]` of one prefix, one read transaction's worth.
struct Chunk {
    events: Vec<Event>,
    /// The last revision this chunk covers.
    cursor: Revision,
    /// Whether the chunk reached `upto`.
    done: bool,
}

async fn read_log(
    shared: &Arc<Shared>,
    prefix: &str,
    after: Revision,
    upto: Revision,
) -> Result<Chunk, StoreError> {
    let (s, prefix) = (shared.clone(), prefix.to_owned());
    tokio::task::spawn_blocking(move || {
        s.readers
            .with(|conn| read_log_blocking(conn, &prefix, after, upto))
    })
    .await
    .map_err(|e| StoreError::Backend(format!("watch replay task failed: {e}")))?
}

fn read_log_blocking(
    conn: &Connection,
    prefix: &str,
    after: Revision,
    upto: Revision,
) -> Result<Chunk, StoreError> {
    const SELECT: &str = "SELECT l.rev, l.key, l.kind, l.create_rev, l.prev_rev, l.value, p.value
        FROM log l LEFT JOIN log p ON p.rev = l.prev_rev
        WHERE l.rev > ?1 AND l.rev <= ?2 AND l.key >= ?3";
    let end = prefix_end(prefix);
    let sql = match end {
        Some(_) => format!("{SELECT} AND l.key < ?5 ORDER BY l.rev LIMIT ?4"),
        None => format!("{SELECT} ORDER BY l.rev LIMIT ?4"),
    };
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| backend("starting watch replay", e))?;
    let compacted = read_meta(&tx, "compacted")?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let mut stmt = tx
        .prepare(&sql)
        .map_err(|e| backend("preparing watch replay", e))?;
    let mut params: Vec<&dyn rusqlite::ToSql> = vec![&after, &upto, &prefix, &REPLAY_CHUNK];
    if let Some(end) = &end {
        params.push(end);
    }
    let read = |e| backend(&format!("replaying the log of {prefix}"), e);
    let mut rows = stmt.query(&params[..]).map_err(read)?;
    let mut events = Vec::new();
    let mut cursor = after;
    while let Some(row) = rows.next().map_err(read)? {
        let rev: Revision = row.get(0).map_err(read)?;
        let key: String = row.get(1).map_err(read)?;
        let kind: i64 = row.get(2).map_err(read)?;
        let create_revision: Revision = row.get(3).map_err(read)?;
        let prev_rev: Revision = row.get(4).map_err(read)?;
        let value = blob(row, 5).map_err(read)?;
        let prev_value = match row.get_ref(6).map_err(read)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(blob(row, 6).map_err(read)?),
        };
        let prev = |value: Arc<[u8]>| KeyValue {
            key: key.clone(),
            value,
            create_revision,
            mod_revision: prev_rev,
        };
        let event = match kind {
            KIND_CREATED => Event {
                kind: EventKind::Created,
                prev: None,
                kv: KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: rev,
                },
            },
            KIND_UPDATED => Event {
                kind: EventKind::Updated,
                prev: prev_value.map(prev),
                kv: KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: rev,
                },
            },
            // The delete row holds the last value, so `prev` is known even when the row
            // that wrote it was compacted.
            KIND_DELETED => Event {
                kind: EventKind::Deleted,
                prev: Some(prev(value.clone())),
                kv: KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: rev,
                },
            },
            other => {
                return Err(StoreError::Backend(format!(
                    "log row {rev} has unknown kind {other}"
                )));
            }
        };
        cursor = rev;
        events.push(event);
    }
    let done = (events.len() as i64) < REPLAY_CHUNK;
    Ok(Chunk {
        events,
        cursor: if done { upto } else { cursor },
        done,
    })
}
