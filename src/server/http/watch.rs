//! Watch streams (`?watch=1`): the initial state as ADDED events when asked for
//! (resourceVersion unset or 0, or `sendInitialEvents=true` ending with the
//! `k8s.io/initial-events-end` bookmark), then every change after the revision, encoded
//! as JSON WatchEvents one per line (or one-row Tables), until `timeoutSeconds`, the
//! client leaving, or server shutdown.

use super::body::{Resp, ResponseBody};
use super::handlers::Encoding;
use super::request::Query;
use super::{table, AppState};
use crate::api::meta;
use crate::api::resources::Resource;
use crate::api::status::{ApiError, FieldError};
use crate::server::registry::{matches_value, ListOptions, StoredObject};
use crate::server::store::{Event, EventKind, Revision, StoreError};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often an idle watch with `allowWatchBookmarks` gets a bookmark.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

struct Stream {
    res: &'static Resource,
    enc: Encoding,
    include: table::IncludeObject,
    opts: ListOptions,
    filtering: bool,
    tx: mpsc::Sender<Bytes>,
    sent_columns: bool,
    last_rev: Revision,
    /// Stored → served version, for a version served by conversion.
    convert: Option<fn(Value) -> Value>,
    /// apiVersion of the served version (bookmarks carry it).
    api_version: String,
}

impl Stream {
    fn encode(
        &mut self,
        kind: &str,
        obj_bytes: Option<Vec<u8>>,
        obj: Option<&Value>,
    ) -> Option<Bytes> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        match self.enc {
            Encoding::Table(mv) if kind != "BOOKMARK" && kind != "ERROR" => {
                let v = obj?;
                let rows = vec![table::row(self.res, v, self.include, mv)];
                let t = table::table(
                    self.res,
                    rows,
                    meta::meta_str(v, "resourceVersion"),
                    None,
                    mv,
                    !self.sent_columns,
                );
                self.sent_columns = true;
                out.extend_from_slice(&serde_json::to_vec(&t).ok()?);
            }
            _ => match (obj_bytes, obj) {
                (Some(b), _) => out.extend_from_slice(&b),
                (None, Some(v)) => out.extend_from_slice(&serde_json::to_vec(v).ok()?),
                (None, None) => return None,
            },
        }
        out.extend_from_slice(b"}\n");
        Some(Bytes::from(out))
    }

    async fn send(&mut self, kind: &str, obj: &StoredObject) -> bool {
        let table = matches!(self.enc, Encoding::Table(_));
        let chunk = if table || self.convert.is_some() {
            match obj.value() {
                Ok(v) => match self.convert {
                    Some(f) if !table => self.encode(kind, None, Some(&f(v))),
                    _ => self.encode(kind, None, Some(&v)),
                },
                Err(_) => None,
            }
        } else {
            self.encode(kind, Some(obj.json_bytes()), None)
        };
        self.last_rev = self.last_rev.max(obj.revision);
        match chunk {
            Some(c) => self.tx.send(c).await.is_ok(),
            None => true,
        }
    }

    async fn bookmark(&mut self, initial_end: bool) -> bool {
        let mut m = json!({"resourceVersion": self.last_rev.to_string()});
        if initial_end {
            m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let v = json!({"kind": self.res.kind, "apiVersion": self.api_version, "metadata": m});
        match self.encode("BOOKMARK", None, Some(&v)) {
            Some(c) => self.tx.send(c).await.is_ok(),
            None => true,
        }
    }

    /// Forwards one store event, applying selector transitions like upstream's watch
    /// cache: an object leaving the selector is DELETED, one entering it is ADDED.
    async fn forward(&mut self, ev: Event) -> bool {
        let obj = StoredObject {
            bytes: ev.kv.value.clone(),
            revision: ev.kv.mod_revision,
        };
        if !self.filtering {
            let kind = match ev.kind {
                EventKind::Created => "ADDED",
                EventKind::Updated => "MODIFIED",
                EventKind::Deleted => "DELETED",
            };
            return self.send(kind, &obj).await;
        }
        let Ok(cur) = obj.value() else { return true };
        let now = matches_value(self.res, &cur, &self.opts);
        let before = match (&ev.kind, &ev.prev) {
            (EventKind::Created, _) => false,
            (_, Some(p)) => StoredObject {
                bytes: p.value.clone(),
                revision: p.mod_revision,
            }
            .value()
            .map(|v| matches_value(self.res, &v, &self.opts))
            .unwrap_or(false),
            (EventKind::Deleted, None) => now,
            (EventKind::Updated, None) => now,
        };
        let kind = match ev.kind {
            EventKind::Deleted if before || now => "DELETED",
            EventKind::Deleted => {
                self.last_rev = self.last_rev.max(obj.revision);
                return true;
            }
            _ => match (before, now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => {
                    self.last_rev = self.last_rev.max(obj.revision);
                    return true;
                }
            },
        };
        self.send(kind, &obj).await
    }
}

fn invalid(field: &str, msg: &str) -> ApiError {
    ApiError::invalid(
        "meta.k8s.io",
        "ListOptions",
        "",
        vec![FieldError::forbidden(field, msg)],
    )
}

/// Starts a watch and returns the streaming response.
pub async fn serve(
    state: Arc<AppState>,
    served: &'static Resource,
    ns: String,
    opts: ListOptions,
    q: &Query,
    enc: Encoding,
) -> Result<Resp, ApiError> {
    let res = crate::api::resources::stored(served);
    let send_initial = match q.get("sendInitialEvents") {
        None | Some("") => None,
        Some("true") | Some("1") => Some(true),
        Some("false") | Some("0") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid sendInitialEvents value: {other:?}"
            )))
        }
    };
    let rv_match = q.get("resourceVersionMatch").unwrap_or("");
    if send_initial.is_some() && rv_match != "NotOlderThan" {
        return Err(invalid(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if send_initial.is_none() && !rv_match.is_empty() {
        return Err(invalid(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let rv = q.get("resourceVersion").unwrap_or("");
    let after: Option<Revision> = if rv.is_empty() || rv == "0" {
        None
    } else {
        Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        )
    };
    // Initial events: for an unset/0 resourceVersion, or when asked for explicitly.
    let initial = send_initial.unwrap_or(after.is_none());
    let bookmarks = q.flag("allowWatchBookmarks");
    let include =
        table::IncludeObject::parse(q.get("includeObject")).map_err(ApiError::bad_request)?;
    let timeout = match q.get("timeoutSeconds") {
        Some(t) if !t.is_empty() => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?,
        ),
        _ => Duration::from_secs(1800 + u64::from(meta::random_bytes::<2>()[0]) * 7),
    };

    let (initial_items, start) = if initial {
        let page = state.registry.list(res, &ns, &opts).await?;
        let start = page.revision.max(after.unwrap_or(0));
        (page.items, start)
    } else {
        (
            Vec::new(),
            after.unwrap_or_else(|| state.registry.store().current_revision()),
        )
    };
    let store = state.registry.store().clone();
    let watch = store.watch(res.key_prefix_in(&ns), start).await;

    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let filtering = !opts.labels.is_empty() || !opts.fields.fields().is_empty();
    let mut stream = Stream {
        res,
        enc,
        include,
        opts,
        filtering,
        tx,
        sent_columns: false,
        last_rev: start,
        convert: served.conversion.map(|c| c.from_stored),
        api_version: served.api_version(),
    };
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let mut events = match watch {
            Ok(w) => w.events,
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => {
                let e = ApiError::expired(format!(
                    "too old resource version: {requested} ({compacted})"
                ));
                let _ = stream.tx.send(stream_error(&e)).await;
                return;
            }
            Err(e) => {
                let _ = stream
                    .tx
                    .send(stream_error(&ApiError::internal(e.to_string())))
                    .await;
                return;
            }
        };
        for item in &initial_items {
            if !stream.send("ADDED", item).await {
                return;
            }
        }
        stream.last_rev = start;
        if send_initial == Some(true) && !stream.bookmark(true).await {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => if !stream.forward(ev).await { return },
                    None => return,
                },
                _ = &mut deadline => return,
                _ = tick.tick(), if bookmarks => if !stream.bookmark(false).await { return },
                _ = shutdown.changed() => return,
                _ = stream.tx.closed() => return,
            }
        }
    });
    let mut r = Response::new(ResponseBody::Stream(rx));
    *r.status_mut() = StatusCode::OK;
    let ct = match enc {
        Encoding::Table(_) => "application/json;as=Table;v=v1;g=meta.k8s.io",
        _ => "application/json",
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

/// An ERROR watch event carrying a Status.
fn stream_error(e: &ApiError) -> Bytes {
    let v = json!({"type": "ERROR", "object": e.to_status()});
    let mut b = serde_json::to_vec(&v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}
