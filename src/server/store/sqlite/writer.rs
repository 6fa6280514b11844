//! The writer thread: the only owner of the write connection. It group-commits every
//! queued write in one transaction (one fsync), assigns revisions in commit order,
//! publishes the events of the batch, then answers each caller. It also runs
//! compaction, so compaction never races a write.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Statement};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::{blob, schema, Shared};
use crate::server::store::{Event, EventKind, KeyValue, Revision, StoreError};

/// Capacity of the request queue; senders wait when it is full.
pub(super) const QUEUE: usize = 4096;

/// At most this many writes go into one transaction.
const MAX_BATCH: usize = 512;

/// Compaction deletes at most this many revisions of log per transaction, and returns
/// at most this many free pages per step, so writes keep flowing during a long one.
/// (Tiny in tests, so that every test compaction takes several steps.)
const COMPACT_CHUNK: i64 = if cfg!(test) { 64 } else { 10_000 };
const VACUUM_CHUNK: i64 = if cfg!(test) { 64 } else { 4_096 };

/// `log.kind` values.
pub(super) const KIND_CREATED: i64 = 0;
pub(super) const KIND_UPDATED: i64 = 1;
pub(super) const KIND_DELETED: i64 = 2;

/// One write.
pub(super) enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

/// What a successful write answers.
pub(super) enum Reply {
    /// Create or update: the new revision.
    Written(Revision),
    /// Delete: the last value with `mod_revision` = the delete's revision.
    Deleted(KeyValue),
}

impl Reply {
    pub(super) fn revision(self) -> Revision {
        match self {
            Reply::Written(rev) => rev,
            Reply::Deleted(kv) => kv.mod_revision,
        }
    }
}

type Answer<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the writer thread.
pub(super) enum Msg {
    Write {
        op: Op,
        reply: Answer<Reply>,
    },
    Compact(Answer<()>),
    /// Commit what is queued before it, checkpoint, and stop.
    Close(Answer<()>),
    /// Tests: block the writer until the sender is dropped, so that the writes queued
    /// meanwhile go into one batch.
    #[cfg(test)]
    Hold(std::sync::mpsc::Receiver<()>),
}

/// Starts the writer thread on `conn`.
pub(super) fn spawn(
    conn: Connection,
    rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    history_revisions: i64,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name("k3rs-store-writer".into())
        .spawn(move || run(conn, rx, shared, history_revisions))
        .map_err(|e| StoreError::Backend(format!("starting the store writer thread: {e}")))
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Msg>, shared: Arc<Shared>, history_revisions: i64) {
    // Watches must end even if this thread panics, or they would wait forever.
    struct EndWatches<'a>(&'a Shared);
    impl Drop for EndWatches<'_> {
        fn drop(&mut self) {
            self.0.hub().close();
        }
    }
    let _end_watches = EndWatches(&shared);

    let path = shared.path.display().to_string();
    let close_reply = match Writer::new(&conn, &shared, history_revisions) {
        Ok(mut writer) => writer.serve(&mut rx),
        Err(e) => {
            tracing::error!(path, "store writer cannot start: {e}");
            let err =
                || StoreError::Backend(format!("store writer for {path} failed to start: {e}"));
            loop {
                match rx.blocking_recv() {
                    Some(Msg::Write { reply, .. }) => drop(reply.send(Err(err()))),
                    Some(Msg::Compact(reply)) => drop(reply.send(Err(err()))),
                    Some(Msg::Close(reply)) => break Some(reply),
                    #[cfg(test)]
                    Some(Msg::Hold(_)) => {}
                    None => break None,
                }
            }
        }
    };
    // Refuse further writes before the last checkpoint, and end every watch.
    drop(rx);
    shared.hub().close();
    let mut result = Ok(());
    match schema::checkpoint(&conn) {
        Ok(true) => {}
        Ok(false) => tracing::debug!(path, "final checkpoint incomplete: a reader was active"),
        Err(e) => {
            result = Err(StoreError::Backend(format!(
                "{path}: final checkpoint: {e}"
            )))
        }
    }
    if let Err((_, e)) = conn.close() {
        result = Err(StoreError::Backend(format!("{path}: closing: {e}")));
    }
    tracing::debug!(path, "store writer stopped");
    if let Some(reply) = close_reply {
        let _ = reply.send(result);
    }
}

struct Writer<'c> {
    conn: &'c Connection,
    shared: &'c Shared,
    history_revisions: i64,
    /// The last revision handed out (committed, or in the open transaction).
    revision: Revision,
    begin: Statement<'c>,
    commit: Statement<'c>,
    exists: Statement<'c>,
    current: Statement<'c>,
    insert_log: Statement<'c>,
    insert_object: Statement<'c>,
    update_object: Statement<'c>,
    delete_object: Statement<'c>,
    set_revision: Statement<'c>,
    compaction: Option<Compaction>,
}

impl<'c> Writer<'c> {
    fn new(
        conn: &'c Connection,
        shared: &'c Shared,
        history_revisions: i64,
    ) -> rusqlite::Result<Self> {
        Ok(Writer {
            conn,
            shared,
            history_revisions,
            revision: shared.revision.load(Ordering::Acquire),
            begin: conn.prepare("BEGIN IMMEDIATE")?,
            commit: conn.prepare("COMMIT")?,
            exists: conn.prepare("SELECT 1 FROM objects WHERE key = ?1")?,
            current: conn.prepare("SELECT create_rev, mod_rev, value FROM objects WHERE key = ?1")?,
            insert_log: conn.prepare(
                "INSERT INTO log (rev, key, kind, create_rev, prev_rev, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            insert_object: conn
                .prepare("INSERT INTO objects (key, create_rev, mod_rev, value) VALUES (?1, ?2, ?2, ?3)")?,
            update_object: conn.prepare("UPDATE objects SET mod_rev = ?2, value = ?3 WHERE key = ?1")?,
            delete_object: conn.prepare("DELETE FROM objects WHERE key = ?1")?,
            set_revision: conn.prepare("UPDATE meta SET value = ?1 WHERE name = 'revision'")?,
            compaction: None,
        })
    }

    /// Serves requests until the queue closes or `Close` arrives (whose answer is
    /// returned, to be sent once the connection is closed). A compaction in progress
    /// advances one bounded step per turn, between write batches.
    fn serve(&mut self, rx: &mut mpsc::Receiver<Msg>) -> Option<Answer<()>> {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut open = true;
        loop {
            let first = if self.compaction.is_some() {
                match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            } else if open {
                Some(rx.blocking_recv()?)
            } else {
                return None;
            };
            let mut next = first;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Write { op, reply } => {
                        batch.push((op, reply));
                        // Group commit: take whatever else is already queued.
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(Msg::Write { op, reply }) => batch.push((op, reply)),
                                Ok(other) => {
                                    next = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.commit_batch(&mut batch);
                    }
                    Msg::Compact(reply) => self.start_compaction(reply),
                    Msg::Close(reply) => {
                        while self.compaction.is_some() {
                            self.compact_step();
                        }
                        return Some(reply);
                    }
                    #[cfg(test)]
                    Msg::Hold(release) => {
                        let _ = release.recv();
                    }
                }
            }
            if self.compaction.is_some() {
                self.compact_step();
            }
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<(Op, Answer<Reply>)>) {
        let base = self.revision;
        let (ops, replies): (Vec<Op>, Vec<Answer<Reply>>) = batch.drain(..).unzip();
        let mut results = Vec::with_capacity(ops.len());
        let mut events = Vec::new();
        match self.apply_all(ops, &mut results, &mut events) {
            Ok(()) => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                if !events.is_empty() {
                    self.shared.revision.store(self.revision, Ordering::Release);
                    // Publish before answering: once a write returns, a watch from an
                    // earlier revision sees it.
                    self.shared.hub().publish(events);
                }
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                self.revision = base;
                let msg = format!("{}: writing: {e}", self.shared.path.display());
                tracing::error!("store write failed: {msg}");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(msg.clone())));
                }
            }
        }
    }

    /// Runs every op in one transaction. A failed compare-and-swap only fails its own op
    /// (each op checks before it writes, so a failure leaves nothing behind); a SQLite
    /// error fails the whole batch.
    fn apply_all(
        &mut self,
        ops: Vec<Op>,
        results: &mut Vec<Result<Reply, StoreError>>,
        events: &mut Vec<Event>,
    ) -> rusqlite::Result<()> {
        self.begin.execute([])?;
        for op in ops {
            let rev = self.revision + 1;
            match self.apply(op, rev)? {
                Ok((reply, event)) => {
                    self.revision = rev;
                    results.push(Ok(reply));
                    events.push(event);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if !events.is_empty() {
            self.set_revision.execute([self.revision])?;
        }
        self.commit.execute([])?;
        Ok(())
    }

    fn apply(
        &mut self,
        op: Op,
        rev: Revision,
    ) -> rusqlite::Result<Result<(Reply, Event), StoreError>> {
        match op {
            Op::Create { key, value } => {
                if self
                    .exists
                    .query_row([&key], |_| Ok(()))
                    .optional()?
                    .is_some()
                {
                    return Ok(Err(StoreError::AlreadyExists(key)));
                }
                let value: Arc<[u8]> = value.into();
                self.insert_log
                    .execute(params![rev, key, KIND_CREATED, rev, 0, &value[..]])?;
                self.insert_object.execute(params![key, rev, &value[..]])?;
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: rev,
                    mod_revision: rev,
                };
                Ok(Ok((
                    Reply::Written(rev),
                    Event {
                        kind: EventKind::Created,
                        kv,
                        prev: None,
                    },
                )))
            }
            Op::Update {
                key,
                value,
                expected,
            } => {
                let prev = match self.check(key, expected)? {
                    Ok(prev) => prev,
                    Err(e) => return Ok(Err(e)),
                };
                let value: Arc<[u8]> = value.into();
                self.insert_log.execute(params![
                    rev,
                    prev.key,
                    KIND_UPDATED,
                    prev.create_revision,
                    prev.mod_revision,
                    &value[..]
                ])?;
                self.update_object
                    .execute(params![prev.key, rev, &value[..]])?;
                let kv = KeyValue {
                    key: prev.key.clone(),
                    value,
                    create_revision: prev.create_revision,
                    mod_revision: rev,
                };
                Ok(Ok((
                    Reply::Written(rev),
                    Event {
                        kind: EventKind::Updated,
                        kv,
                        prev: Some(prev),
                    },
                )))
            }
            Op::Delete { key, expected } => {
                let prev = match self.check(key, expected)? {
                    Ok(prev) => prev,
                    Err(e) => return Ok(Err(e)),
                };
                self.insert_log.execute(params![
                    rev,
                    prev.key,
                    KIND_DELETED,
                    prev.create_revision,
                    prev.mod_revision,
                    &prev.value[..]
                ])?;
                self.delete_object.execute([&prev.key])?;
                let kv = KeyValue {
                    mod_revision: rev,
                    ..prev.clone()
                };
                let reply = Reply::Deleted(kv.clone());
                Ok(Ok((
                    reply,
                    Event {
                        kind: EventKind::Deleted,
                        kv,
                        prev: Some(prev),
                    },
                )))
            }
        }
    }

    /// The key's current object, if it exists and is at `expected` (when given).
    fn check(
        &mut self,
        key: String,
        expected: Option<Revision>,
    ) -> rusqlite::Result<Result<KeyValue, StoreError>> {
        let found = self
            .current
            .query_row([&key], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, blob(r, 2)?))
            })
            .optional()?;
        let Some((create_revision, mod_revision, value)) = found else {
            return Ok(Err(StoreError::NotFound(key)));
        };
        match expected {
            Some(expected) if expected != mod_revision => Ok(Err(StoreError::Conflict {
                key,
                expected,
                current: mod_revision,
            })),
            _ => Ok(Ok(KeyValue {
                key,
                value,
                create_revision,
                mod_revision,
            })),
        }
    }

    fn start_compaction(&mut self, reply: Answer<()>) {
        match &mut self.compaction {
            Some(running) => running.replies.push(reply),
            None => {
                let target = self.revision.saturating_sub(self.history_revisions.max(0));
                self.compaction = Some(Compaction {
                    target,
                    vacuumed: false,
                    replies: vec![reply],
                });
            }
        }
    }

    /// Runs one bounded step of the compaction in progress; answers its callers when
    /// it is done or failed.
    fn compact_step(&mut self) {
        let Some(mut running) = self.compaction.take() else {
            return;
        };
        let result = match self.compact_once(&mut running) {
            Ok(false) => {
                self.compaction = Some(running);
                return;
            }
            Ok(true) => Ok(()),
            Err(e) => {
                tracing::warn!("store compaction failed: {e}");
                Err(e)
            }
        };
        for reply in running.replies {
            let _ = reply.send(result.clone().map_err(StoreError::Backend));
        }
    }

    /// One step: delete a chunk of old log rows, or return a chunk of free pages to the
    /// file system, or (last) truncate the WAL. Returns whether the compaction is done.
    fn compact_once(&mut self, running: &mut Compaction) -> Result<bool, String> {
        let path = self.shared.path.display().to_string();
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if compacted < running.target {
            let upto = running.target.min(compacted.saturating_add(COMPACT_CHUNK));
            let deleted = (|| -> rusqlite::Result<usize> {
                self.begin.execute([])?;
                let n = self
                    .conn
                    .execute("DELETE FROM log WHERE rev <= ?1", [upto])?;
                self.conn.execute(
                    "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
                    [upto],
                )?;
                self.commit.execute([])?;
                Ok(n)
            })();
            return match deleted {
                Ok(n) => {
                    self.shared.compacted.store(upto, Ordering::Release);
                    tracing::debug!(path, compacted = upto, deleted = n, "compacted the log");
                    Ok(false)
                }
                Err(e) => {
                    if !self.conn.is_autocommit() {
                        let _ = self.conn.execute_batch("ROLLBACK");
                    }
                    Err(format!("{path}: compacting: {e}"))
                }
            };
        }
        if !running.vacuumed {
            let vacuum = || -> rusqlite::Result<(i64, i64)> {
                let free = |c: &Connection| {
                    c.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))
                };
                let before = free(self.conn)?;
                // Each step of this pragma frees one page: run it to the end
                // (`execute_batch` would step it only once).
                let mut stmt = self
                    .conn
                    .prepare(&format!("PRAGMA incremental_vacuum({VACUUM_CHUNK})"))?;
                let mut rows = stmt.query([])?;
                while rows.next()?.is_some() {}
                drop(rows);
                Ok((before, free(self.conn)?))
            };
            let (before, after) =
                vacuum().map_err(|e| format!("{path}: incremental vacuum: {e}"))?;
            // Stop when nothing is left, or nothing moved (never loop forever).
            running.vacuumed = after == 0 || after >= before;
            return Ok(false);
        }
        match schema::checkpoint(self.conn) {
            Ok(true) => {}
            Ok(false) => tracing::debug!(path, "checkpoint incomplete: a reader was active"),
            Err(e) => return Err(format!("{path}: checkpoint: {e}")),
        }
        Ok(true)
    }
}

/// A compaction in progress.
struct Compaction {
    /// Delete log rows up to here.
    target: Revision,
    /// Free pages were returned to the file system.
    vacuumed: bool,
    /// Everyone who asked for this compaction.
    replies: Vec<Answer<()>>,
}
