//! Opening the database file: pragmas, creating or checking the schema, and recovering
//! the revision counters. Everything that can find a wrong file on disk lives here, so
//! it reports a clear `Backend` error naming the file instead of failing later.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::server::store::{Revision, StoreError};

/// The schema this code reads and writes (`meta.schema_version`).
pub(super) const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits on a lock held by another connection. Only checkpoints
/// and a second process opening the same file ever wait.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of the write connection and of each read connection, in KiB (negative
/// `cache_size`). Kept small: idle server RSS must stay low; the OS page cache holds
/// the rest of the file.
const WRITER_CACHE_KIB: i64 = 4000;
const READER_CACHE_KIB: i64 = 2000;

/// The WAL is truncated back to this size after a checkpoint resets it.
const JOURNAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

const CREATE_SCHEMA: &str = "
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE log (
    rev        INTEGER PRIMARY KEY,
    key        TEXT    NOT NULL,
    kind       INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
    create_rev INTEGER NOT NULL,
    prev_rev   INTEGER NOT NULL,
    value      BLOB    NOT NULL
);
CREATE TABLE objects (
    key        TEXT    NOT NULL UNIQUE,
    create_rev INTEGER NOT NULL,
    mod_rev    INTEGER NOT NULL,
    value      BLOB    NOT NULL
);
INSERT INTO meta (name, value) VALUES ('schema_version', 1), ('revision', 0), ('compacted', 0);
";

/// The revision counters found on disk.
#[derive(Clone, Copy, Debug)]
pub(super) struct State {
    pub revision: Revision,
    pub compacted: Revision,
}

fn err(path: &Path, what: &str, e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("{}: {what}: {e}", path.display()))
}

/// Opens the write connection: creates the parent directory and a fresh schema if the
/// file is new, otherwise checks that it is a k3rs store of a known version.
pub(super) fn open_writer(path: &Path) -> Result<(Connection, State), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Backend(format!(
                "creating directory {} for the store: {e}",
                dir.display()
            ))
        })?;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| err(path, "opening the store", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| err(path, "setting busy timeout", e))?;

    // The first read of the file: this is where a file that is not a database shows.
    let tables = user_tables(&conn).map_err(|e| not_a_database(path, e))?;
    if tables.is_empty() {
        // auto_vacuum only takes effect if set before the first table exists.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
            .map_err(|e| err(path, "setting auto_vacuum", e))?;
        set_wal(&conn, path)?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {CREATE_SCHEMA} COMMIT;"))
            .map_err(|e| err(path, "creating the schema", e))?;
    } else {
        check_schema(&conn, path, &tables)?;
        set_wal(&conn, path)?;
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;
         PRAGMA cache_size = -{WRITER_CACHE_KIB};
         PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};"
    ))
    .map_err(|e| err(path, "setting pragmas", e))?;

    let meta = |name: &str| -> Result<i64, StoreError> {
        conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .map_err(|e| err(path, &format!("reading meta {name}"), e))
    };
    let mut state = State {
        revision: meta("revision")?,
        compacted: meta("compacted")?,
    };
    // Both are written in the same transaction, so they agree; if a tool edited the file
    // by hand, never hand out a revision that the log already has.
    let max_log: Option<i64> = conn
        .query_row("SELECT max(rev) FROM log", [], |r| r.get(0))
        .map_err(|e| err(path, "reading the log", e))?;
    if let Some(max_log) = max_log.filter(|&m| m > state.revision) {
        tracing::warn!(path = %path.display(), meta = state.revision, log = max_log, "meta revision behind the log; using the log");
        state.revision = max_log;
    }
    state.compacted = state.compacted.min(state.revision);
    Ok((conn, state))
}

/// Opens one read connection on an existing store.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| err(path, "opening a read connection", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| err(path, "setting busy timeout", e))?;
    conn.execute_batch(&format!(
        "PRAGMA query_only = ON;
         PRAGMA foreign_keys = OFF;
         PRAGMA cache_size = -{READER_CACHE_KIB};"
    ))
    .map_err(|e| err(path, "setting read pragmas", e))?;
    Ok(conn)
}

fn user_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names
        .into_iter()
        .filter(|n| !n.starts_with("sqlite_"))
        .collect())
}

fn not_a_database(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::Backend(format!(
            "{} is not a SQLite database ({e}); move it away or point the server at another data directory",
            path.display()
        )),
        _ => err(path, "reading the schema", e),
    }
}

fn check_schema(conn: &Connection, path: &Path, tables: &[String]) -> Result<(), StoreError> {
    let unknown = || {
        StoreError::Backend(format!(
            "{} is a SQLite database but not a k3rs store of schema version {SCHEMA_VERSION} (tables: {})",
            path.display(),
            tables.join(", ")
        ))
    };
    if tables != ["log", "meta", "objects"] {
        return Err(unknown());
    }
    let version: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .ok();
    match version {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(v) => Err(StoreError::Backend(format!(
            "{} has store schema version {v}; this k3rs only knows version {SCHEMA_VERSION}",
            path.display()
        ))),
        None => Err(unknown()),
    }
}

fn set_wal(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| err(path, "enabling WAL", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "{}: the file system does not support WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    Ok(())
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`: copies the WAL into the database and truncates it.
/// Returns whether it completed (false when a reader kept it from finishing).
pub(super) fn checkpoint(conn: &Connection) -> rusqlite::Result<bool> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(busy == 0)
}
