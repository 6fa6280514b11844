//! Tests of the SQLite store: semantics of the `Store` contract, group commit, watches,
//! compaction, durability across reopen and across a real `kill -9`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{prefix_end, SqliteStore, StoreOptions};
use crate::server::store::{Event, EventKind, Revision, Store, StoreError, Watch};

fn opts() -> StoreOptions {
    StoreOptions {
        compact_interval: Duration::ZERO,
        ..StoreOptions::default()
    }
}

async fn open_in(dir: &tempfile::TempDir, opts: StoreOptions) -> Arc<SqliteStore> {
    SqliteStore::open(&dir.path().join("db/state.db"), opts)
        .await
        .expect("open store")
}

/// Creates `n` keys `{prefix}{i:05}` with 32 concurrent writers; returns their revisions.
async fn fill(store: &Arc<SqliteStore>, prefix: &str, n: usize, value_len: usize) -> Vec<Revision> {
    let mut set = JoinSet::new();
    for w in 0..32 {
        let (store, prefix) = (store.clone(), prefix.to_owned());
        set.spawn(async move {
            let mut revs = Vec::new();
            for i in (w..n).step_by(32) {
                revs.push(
                    store
                        .create(format!("{prefix}{i:05}"), vec![b'v'; value_len])
                        .await
                        .expect("create"),
                );
            }
            revs
        });
    }
    let mut revs = Vec::new();
    while let Some(r) = set.join_next().await {
        revs.extend(r.expect("writer task"));
    }
    revs.sort_unstable();
    revs
}

async fn next_event(w: &mut Watch) -> Event {
    tokio::time::timeout(Duration::from_secs(10), w.events.recv())
        .await
        .expect("event within 10 s")
        .expect("watch still open")
}

/// Receives events until one has revision `upto`.
async fn events_until(w: &mut Watch, upto: Revision) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let e = next_event(w).await;
        let rev = e.kv.mod_revision;
        out.push(e);
        if rev >= upto {
            return out;
        }
    }
}

fn assert_strictly_increasing(events: &[Event]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].kv.mod_revision < pair[1].kv.mod_revision,
            "events out of order: {} then {}",
            pair[0].kv.mod_revision,
            pair[1].kv.mod_revision
        );
    }
}

#[test]
fn prefix_end_bounds_the_prefix() {
    assert_eq!(
        prefix_end("/registry/pods/").as_deref(),
        Some("/registry/pods0")
    );
    assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
    assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
    assert_eq!(prefix_end(""), None);
    assert_eq!(prefix_end("\u{10FFFF}"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_with_compare_and_swap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir, opts()).await;
    assert_eq!(store.current_revision(), 0);

    let r1 = store
        .create("/registry/pods/default/a".into(), b"one".to_vec())
        .await
        .expect("create");
    assert!(r1 > 0);
    assert_eq!(store.current_revision(), r1);
    let err = store
        .create("/registry/pods/default/a".into(), b"again".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists(ref k) if k == "/registry/pods/default/a"),
        "{err:?}"
    );

    let kv = store
        .get("/registry/pods/default/a".into())
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (&*kv.value, kv.create_revision, kv.mod_revision),
        (&b"one"[..], r1, r1)
    );

    let r2 = store
        .update("/registry/pods/default/a".into(), b"two".to_vec(), Some(r1))
        .await
        .expect("update");
    assert!(r2 > r1);
    let err = store
        .update(
            "/registry/pods/default/a".into(),
            b"stale".to_vec(),
            Some(r1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref key, expected, current } if key == "/registry/pods/default/a" && expected == r1 && current == r2),
        "{err:?}"
    );
    let r3 = store
        .update("/registry/pods/default/a".into(), b"three".to_vec(), None)
        .await
        .expect("update");
    assert!(r3 > r2);
    let kv = store
        .get("/registry/pods/default/a".into())
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (&*kv.value, kv.create_revision, kv.mod_revision),
        (&b"three"[..], r1, r3)
    );

    let err = store
        .update("/registry/pods/default/missing".into(), b"x".to_vec(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let err = store
        .delete("/registry/pods/default/missing".into(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let err = store
        .delete("/registry/pods/default/a".into(), Some(r2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { current, .. } if current == r3),
        "{err:?}"
    );
    // Failed writes take no revision.
    assert_eq!(store.current_revision(), r3);

    let gone = store
        .delete("/registry/pods/default/a".into(), Some(r3))
        .await
        .expect("delete");
    assert_eq!(gone.mod_revision, r3 + 1);
    assert_eq!((&*gone.value, gone.create_revision), (&b"three"[..], r1));
    assert!(store
        .get("/registry/pods/default/a".into())
        .await
        .expect("get")
        .is_none());

    // A re-created key starts a new life.
    let r5 = store
        .create("/registry/pods/default/a".into(), b"new".to_vec())
        .await
        .expect("re-create");
    assert_eq!(r5, r3 + 2);
    let kv = store
        .get("/registry/pods/default/a".into())
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(kv.create_revision, r5);
    store.close().await.expect("close");
    let err = store.create("/x".into(), vec![]).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prefix_order_and_pagination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir, opts()).await;
    fill(&store, "/registry/pods/ns/p", 250, 100).await;
    fill(&store, "/registry/podtemplates/ns/t", 30, 100).await;
    fill(&store, "/registry/pods-extra/x", 5, 10).await;

    let page = store
        .list("/registry/pods/".into(), None, 0)
        .await
        .expect("list");
    assert_eq!(page.items.len(), 250);
    assert!(page
        .items
        .iter()
        .all(|kv| kv.key.starts_with("/registry/pods/")));
    assert!(
        page.items.windows(2).all(|w| w[0].key < w[1].key),
        "not in key order"
    );
    assert_eq!(page.revision, store.current_revision());
    assert_eq!((page.continue_after, page.remaining), (None, None));
    assert_eq!(
        store.count("/registry/pods/".into()).await.expect("count"),
        250
    );
    assert_eq!(
        store
            .count("/registry/podtemplates/".into())
            .await
            .expect("count"),
        30
    );
    assert_eq!(store.count("".into()).await.expect("count"), 285);

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list("/registry/pods/".into(), after.clone(), 37)
            .await
            .expect("page");
        assert!(page.items.len() <= 37);
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        match page.continue_after {
            Some(last) => {
                assert_eq!(Some(&last), seen.last());
                assert_eq!(page.remaining, Some(250 - seen.len() as u64));
                after = Some(last);
            }
            None => {
                assert_eq!(page.remaining, None);
                break;
            }
        }
    }
    let all: Vec<String> = (0..250)
        .map(|i| format!("/registry/pods/ns/p{i:05}"))
        .collect();
    assert_eq!(
        seen, all,
        "pagination must visit every key exactly once, in order"
    );

    // An exact fit is not "cut short".
    let page = store
        .list("/registry/podtemplates/".into(), None, 30)
        .await
        .expect("list");
    assert_eq!(
        (page.items.len(), page.continue_after, page.remaining),
        (30, None, None)
    );
    // start_after before the prefix starts at the prefix.
    let page = store
        .list("/registry/podtemplates/".into(), Some("/a".into()), 0)
        .await
        .expect("list");
    assert_eq!(page.items.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_window_then_live_with_prefix_filter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir, opts()).await;
    let a = store
        .create("/registry/pods/a".into(), b"a1".to_vec())
        .await
        .expect("create");
    store
        .create("/registry/podtemplates/t".into(), b"t".to_vec())
        .await
        .expect("create");
    let a2 = store
        .update("/registry/pods/a".into(), b"a2".to_vec(), Some(a))
        .await
        .expect("update");
    let d = store
        .delete("/registry/pods/a".into(), None)
        .await
        .expect("delete");

    let mut w = store
        .watch("/registry/pods/".into(), a - 1)
        .await
        .expect("watch");
    let replay = events_until(&mut w, d.mod_revision).await;
    let kinds: Vec<_> = replay.iter().map(|e| (e.kind, e.kv.mod_revision)).collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Created, a),
            (EventKind::Updated, a2),
            (EventKind::Deleted, d.mod_revision)
        ]
    );
    assert_eq!(
        &*replay[1].prev.as_ref().expect("prev of update").value,
        b"a1"
    );
    let del = &replay[2];
    assert_eq!((&*del.kv.value, del.kv.create_revision), (&b"a2"[..], a));
    assert_eq!(del.prev.as_ref().map(|p| p.mod_revision), Some(a2));

    // Live: only matching keys arrive.
    store
        .create("/registry/podtemplates/u".into(), b"u".to_vec())
        .await
        .expect("create");
    let b = store
        .create("/registry/pods/b".into(), b"b".to_vec())
        .await
        .expect("create");
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.kv.mod_revision),
        (EventKind::Created, "/registry/pods/b", b)
    );

    // Watching from the current revision sees only newer events.
    let mut w2 = store.watch("/registry/".into(), b).await.expect("watch");
    let c = store
        .create("/registry/pods/c".into(), b"c".to_vec())
        .await
        .expect("create");
    assert_eq!(next_event(&mut w2).await.kv.mod_revision, c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_from_log_beyond_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir, opts()).await;
    let revs = fill(&store, "/registry/configmaps/ns/c", 5000, 16).await;
    store
        .create("/registry/secrets/s".into(), b"s".to_vec())
        .await
        .expect("create");
    let start = revs[10];
    assert!(
        store.shared.hub().from > start,
        "the window must not cover the start, or the log path is not tested"
    );

    let mut w = store
        .watch("/registry/configmaps/".into(), start)
        .await
        .expect("watch");
    let last = *revs.last().expect("revs");
    let replay = events_until(&mut w, last).await;
    assert_strictly_increasing(&replay);
    let got: Vec<Revision> = replay.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(
        got,
        revs[11..].to_vec(),
        "replay must have every revision after the start, once"
    );
    assert!(replay
        .iter()
        .all(|e| e.kind == EventKind::Created && e.kv.key.starts_with("/registry/configmaps/")));

    let live = store
        .update(
            "/registry/configmaps/ns/c00001".into(),
            b"new".to_vec(),
            None,
        )
        .await
        .expect("update");
    let e = next_event(&mut w).await;
    assert_eq!((e.kind, e.kv.mod_revision), (EventKind::Updated, live));
    assert_eq!(&*e.prev.expect("prev").value, &[b'v'; 16][..]);

    // Replay from the log after a reopen (empty window), including deletes.
    store
        .delete("/registry/configmaps/ns/c00002".into(), None)
        .await
        .expect("delete");
    store.close().await.expect("close");
    drop(store);
    let store = open_in(&dir, opts()).await;
    let mut w = store
        .watch("/registry/configmaps/ns/c0000".into(), live - 1)
        .await
        .expect("watch");
    let events = events_until(&mut w, live + 1).await;
    let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.kv.key.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Updated, "/registry/configmaps/ns/c00001"),
            (EventKind::Deleted, "/registry/configmaps/ns/c00002")
        ]
    );
    assert_eq!(
        &*events[1].kv.value,
        &[b'v'; 16][..],
        "a deleted event carries the last value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_after_compaction_is_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(
        &dir,
        StoreOptions {
            history_revisions: 100,
            ..opts()
        },
    )
    .await;
    let revs = fill(&store, "/k/", 300, 8).await;
    store.compact().await.expect("compact");
    let current = store.current_revision();
    assert_eq!(store.compacted_revision(), current - 100);
    let log_rows = store
        .shared
        .readers
        .with(|c| {
            c.query_row("SELECT count(*), min(rev) FROM log", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| StoreError::Backend(e.to_string()))
        })
        .expect("count log");
    assert_eq!(
        log_rows,
        (100, current - 99),
        "exactly the retained history is left"
    );
    match store.watch("/k/".into(), revs[0]).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (revs[0], current - 100));
        }
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    }
    // From the compacted revision on, replay still works, from the log after a reopen.
    store.close().await.expect("close");
    let store = open_in(
        &dir,
        StoreOptions {
            history_revisions: 100,
            ..opts()
        },
    )
    .await;
    assert_eq!(store.compacted_revision(), current - 100);
    let mut w = store
        .watch("/k/".into(), current - 100)
        .await
        .expect("watch at the compacted revision");
    let events = events_until(&mut w, current).await;
    assert_eq!(events.len(), 100);
    assert!(matches!(
        store.watch("/k/".into(), current - 101).await,
        Err(StoreError::Compacted { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compaction_runs_on_its_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        history_revisions: 10,
        compact_interval: Duration::from_millis(50),
    };
    let store = open_in(&dir, options).await;
    fill(&store, "/b/", 100, 8).await;
    let current = store.current_revision();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.compacted_revision() < current - 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no background compaction within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        store.watch("/b/".into(), 0).await,
        Err(StoreError::Compacted { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_watches_and_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir, opts()).await;
    let mut w = store.watch("/".into(), 0).await.expect("watch");
    let rev = store.create("/a".into(), vec![1]).await.expect("create");
    assert_eq!(next_event(&mut w).await.kv.mod_revision, rev);
    store.close().await.expect("close");
    let end = tokio::time::timeout(Duration::from_secs(10), w.events.recv()).await;
    assert!(
        matches!(end, Ok(None)),
        "the watch must end when the store closes"
    );
    assert!(matches!(
        store.create("/b".into(), vec![]).await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        store.watch("/".into(), 0).await,
        Err(StoreError::Backend(_))
    ));
    // Reads still work on a closed store; a second close is harmless.
    assert!(store.get("/a".into()).await.expect("get").is_some());
    store.close().await.expect("second close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_never_gap_or_reorder_a_watch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir, opts()).await;
    let start = store.current_revision();
    let mut w = store
        .watch("/registry/leases/".into(), start)
        .await
        .expect("watch");
    let mut set = JoinSet::new();
    for writer in 0..8 {
        let store = store.clone();
        set.spawn(async move {
            let mut mine = Vec::new();
            let key = format!("/registry/leases/node-{writer}");
            let mut rev = store
                .create(key.clone(), b"0".to_vec())
                .await
                .expect("create");
            mine.push(rev);
            for i in 0..150 {
                rev = store
                    .update(key.clone(), format!("{i}").into_bytes(), Some(rev))
                    .await
                    .expect("update");
                mine.push(rev);
                // Noise that the watch must filter out.
                store
                    .create(format!("/registry/events/e-{writer}-{i}"), b"e".to_vec())
                    .await
                    .expect("noise");
            }
            mine
        });
    }
    let mut expected = BTreeSet::new();
    while let Some(r) = set.join_next().await {
        expected.extend(r.expect("writer"));
    }
    let last = *expected.last().expect("revisions");
    let events = events_until(&mut w, last).await;
    assert_strictly_increasing(&events);
    let got: BTreeSet<Revision> = events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(got.len(), events.len(), "duplicate events");
    assert_eq!(
        got, expected,
        "the watch must see exactly the matching writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_is_ended_not_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir, opts()).await;
    let mut w = store.watch("/".into(), 0).await.expect("watch");
    // More commits than the watch buffer plus the live backlog, without reading.
    for i in 0..(super::watch::WATCH_BUFFER + super::watch::LIVE_BATCHES + 50) {
        store
            .create(format!("/k/{i:05}"), vec![])
            .await
            .expect("create");
    }
    let mut received = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.events.recv()).await {
            Ok(Some(_)) => received += 1,
            Ok(None) => break,
            Err(_) => {
                panic!("a lagging watch must be closed, not left hanging ({received} events read)")
            }
        }
    }
    assert!(received < super::watch::WATCH_BUFFER + super::watch::LIVE_BATCHES + 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_64_concurrent_creates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir, opts()).await;
    let mut set = JoinSet::new();
    for i in 0..64 {
        let store = store.clone();
        set.spawn(async move { store.create(format!("/g/{i}"), vec![i as u8; 64]).await });
    }
    let mut revs = BTreeSet::new();
    while let Some(r) = set.join_next().await {
        assert!(
            revs.insert(r.expect("task").expect("create")),
            "duplicate revision"
        );
    }
    assert_eq!(revs.len(), 64);
    assert_eq!(
        revs.iter().copied().collect::<Vec<_>>(),
        (1..=64).collect::<Vec<_>>()
    );
    assert_eq!(store.current_revision(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_cas_failures_do_not_fail_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir, opts()).await;
    fill(&store, "/m/", 32, 8).await;
    let base = store.current_revision();

    // Hold the writer so that all 32 writes are queued and go into one transaction.
    let (release, hold) = std::sync::mpsc::channel();
    store
        .send(|| super::writer::Msg::Hold(hold))
        .await
        .expect("hold");
    let mut set = JoinSet::new();
    for i in 0..32usize {
        let store = store.clone();
        set.spawn(async move {
            let key = format!("/m/{i:05}");
            let result = match i % 4 {
                0 => store.create(key, vec![]).await.map(|_| ()), // exists
                1 => store
                    .update(key, vec![1], Some(1_000_000))
                    .await
                    .map(|_| ()), // stale
                2 => store.create(format!("/n/{i}"), vec![]).await.map(|_| ()),
                _ => store.update(key, vec![2], None).await.map(|_| ()),
            };
            (i, result)
        });
    }
    let queued = || {
        let tx = store.writer.lock().expect("lock").clone().expect("open");
        super::writer::QUEUE - tx.capacity()
    };
    while queued() < 32 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let commits = store.commits();
    drop(release);

    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        let (i, result) = r.expect("task");
        match (i % 4, result) {
            (0, Err(StoreError::AlreadyExists(_))) | (1, Err(StoreError::Conflict { .. })) => {}
            (2 | 3, Ok(())) => ok += 1,
            (_, other) => panic!("write {i}: unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 16);
    assert_eq!(
        store.commits(),
        commits + 1,
        "the 32 writes were one transaction"
    );
    // Exactly the successful writes took revisions, densely.
    assert_eq!(store.current_revision(), base + 16);
    let mut w = store.watch("/".into(), base).await.expect("watch");
    let events = events_until(&mut w, base + 16).await;
    assert_eq!(events.len(), 16);
    assert_strictly_increasing(&events);
}

fn file_size(db: &Path) -> u64 {
    let len = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(db.to_path_buf()) + len(PathBuf::from(format!("{}-wal", db.display())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_bounds_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(
        &dir,
        StoreOptions {
            history_revisions: 1000,
            ..opts()
        },
    )
    .await;
    let db = store.path().to_path_buf();
    let mut sizes = Vec::new();
    for round in 0..3 {
        fill(&store, &format!("/churn/{round}/"), 5000, 1024).await;
        let mut set = JoinSet::new();
        for w in 0..32 {
            let store = store.clone();
            set.spawn(async move {
                for i in (w..5000).step_by(32) {
                    store
                        .delete(format!("/churn/{round}/{i:05}"), None)
                        .await
                        .expect("delete");
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("deleter");
        }
        store.compact().await.expect("compact");
        sizes.push(file_size(&db));
    }
    assert_eq!(store.count("/".into()).await.expect("count"), 0);
    // What is left is ~1000 log rows of ~1 KiB: free pages went back to the file system.
    assert!(
        sizes[0] < 3 << 20,
        "free pages were not returned: {sizes:?}"
    );
    assert!(
        (sizes[2] as f64) < 1.5 * sizes[0] as f64,
        "file grew under churn despite compaction: {sizes:?} bytes after rounds 1..3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_file_uses_wal_and_incremental_vacuum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir, opts()).await;
    let path = store.path().to_path_buf();
    store.close().await.expect("close");
    let conn = rusqlite::Connection::open(&path).expect("open");
    let av: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .expect("auto_vacuum");
    let jm: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!((av, jm.as_str()), (2, "wal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir, opts()).await;
    fill(&store, "/d/", 100, 32).await;
    let upd = store
        .update("/d/00007".into(), b"seven".to_vec(), None)
        .await
        .expect("update");
    store.delete("/d/00008".into(), None).await.expect("delete");
    let rev = store.current_revision();
    store.close().await.expect("close");
    drop(store);

    let store = open_in(&dir, opts()).await;
    assert_eq!(store.current_revision(), rev);
    assert_eq!(store.count("/d/".into()).await.expect("count"), 99);
    let kv = store
        .get("/d/00007".into())
        .await
        .expect("get")
        .expect("present");
    assert_eq!((&*kv.value, kv.mod_revision), (&b"seven"[..], upd));
    assert_eq!(
        store.create("/d/new".into(), vec![]).await.expect("create"),
        rev + 1
    );

    // Dropping without close must not hang, and loses nothing acknowledged.
    drop(store);
    let store = open_in(&dir, opts()).await;
    assert_eq!(store.current_revision(), rev + 1);
    assert!(store.get("/d/new".into()).await.expect("get").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let garbage = b"this is not a database, just some text\n".repeat(400);
    std::fs::write(&path, &garbage).expect("write garbage");
    let err = match SqliteStore::open(&path, opts()).await {
        Err(e) => e,
        Ok(_) => panic!("opening garbage must fail"),
    };
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("not a SQLite database"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "the file must be left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_schema_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch("CREATE TABLE kine (id INTEGER PRIMARY KEY, name TEXT);")
        .expect("create");
    drop(conn);
    let err = match SqliteStore::open(&path, opts()).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opening a foreign schema must fail"),
    };
    assert!(
        err.contains(&path.display().to_string()) && err.contains("not a k3rs store"),
        "{err}"
    );
}

/// Set (to a database path) only in the child process of
/// `kill9_keeps_every_acknowledged_write`.
const CRASH_CHILD_ENV: &str = "K3RS_STORE_CRASH_CHILD";

/// Not a test on its own: the child process of `kill9_keeps_every_acknowledged_write`,
/// which runs this test binary again with `--exact` on this name. It writes keys with 8
/// concurrent writers and prints `ACK <key>` for each create that returned Ok, until it
/// is killed. Without `K3RS_STORE_CRASH_CHILD` (a normal test run) it returns at once.
#[test]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = SqliteStore::open(Path::new(&path), opts())
            .await
            .expect("child: open");
        for w in 0..8 {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0u64.. {
                    let key = format!("/crash/{w}/{i:08}");
                    store
                        .create(key.clone(), vec![b'c'; 700])
                        .await
                        .expect("child: create");
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ACK {key}");
                    let _ = out.flush();
                }
            });
        }
        // Only reached if nobody kills us.
        tokio::time::sleep(Duration::from_secs(120)).await;
        std::process::exit(3);
    });
}

#[test]
fn kill9_keeps_every_acknowledged_write() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data/state.db");
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "server::store::sqlite::tests::crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, &db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let pid = child.id() as libc::pid_t;
    // Watchdog: never hang the test run if the child stops printing. It is stopped and
    // joined before `wait` reaps the child, so it can only ever signal our own child.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(Duration::from_secs(90))
        {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });

    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut acked = Vec::new();
    let mut killed = false;
    let mut line = String::new();
    loop {
        line.clear();
        match out.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("reading the child: {e}"),
        }
        // A line cut by the kill has no newline: that key was not fully acknowledged.
        if let Some(key) = line.strip_prefix("ACK ").and_then(|l| l.strip_suffix('\n')) {
            acked.push(key.to_owned());
            if acked.len() >= 300 && !killed {
                // SAFETY: kill(2) on our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed = true;
            }
        }
    }
    drop(stop);
    watchdog.join().expect("watchdog");
    let status = child.wait().expect("wait");
    assert!(
        killed,
        "the child ended before 300 acknowledged writes: {status:?}"
    );
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = SqliteStore::open(&db, opts())
            .await
            .expect("reopen after kill -9");
        let page = store.list("/crash/".into(), None, 0).await.expect("list");
        let present: BTreeSet<&str> = page.items.iter().map(|kv| kv.key.as_str()).collect();
        let missing: Vec<&String> = acked
            .iter()
            .filter(|k| !present.contains(k.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged writes lost: {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
        let rev = store.current_revision();
        assert!(rev >= acked.len() as i64);
        assert_eq!(
            store
                .create("/crash/after".into(), vec![])
                .await
                .expect("write after crash"),
            rev + 1
        );
        store.close().await.expect("close");
    });
}
