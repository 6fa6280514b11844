//! The API server's own Prometheus metrics: `apiserver_request_total` and
//! `apiserver_request_duration_seconds` with upstream's labels (verb, group, version,
//! resource, subresource, scope, component, code), recorded by the HTTP layer for every
//! request, and the `process_*` metrics of this process from `/proc/self`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::agent::metrics::exposition::{Kind, Writer};
use crate::server::http::request::{self, Query, Route};

/// Upstream's bucket bounds of `apiserver_request_duration_seconds` (seconds).
const BUCKETS: [f64; 21] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0,
];

/// The labels of one request, without the code: verb, group, version, resource,
/// subresource, scope.
pub type RequestLabels = [String; 6];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Table {
    totals: BTreeMap<(RequestLabels, u16), u64>,
    durations: BTreeMap<RequestLabels, Histogram>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

/// The labels of a request, as upstream's instrumentation names them (`LIST`, `GET`,
/// `POST`, `WATCH`, ...; scope `cluster`, `namespace` or `resource`). `None` for paths that are
/// not resource requests (upstream counts those with empty labels too; we keep them out to
/// bound cardinality by path).
pub fn labels(method: &http::Method, path: &str, query: &Query) -> Option<RequestLabels> {
    let Route::Resource(info) = request::route(method, path, query) else {
        return None;
    };
    let scope = if !info.name.is_empty() {
        "resource"
    } else if !info.namespace.is_empty() {
        "namespace"
    } else {
        "cluster"
    };
    // Upstream's CleanVerb: the HTTP method, except LIST and WATCH.
    let verb = match info.verb {
        "list" => "LIST",
        "watch" => "WATCH",
        "get" => "GET",
        "create" => "POST",
        "update" => "PUT",
        "patch" => "PATCH",
        "delete" | "deletecollection" => "DELETE",
        other => other,
    };
    Some([
        verb.to_string(),
        info.group,
        info.version,
        info.resource,
        info.subresource,
        scope.to_string(),
    ])
}

/// Counts one finished request; watches are counted but kept out of the latency
/// histogram (upstream does the same: their duration is the watch's lifetime).
pub fn observe(labels: RequestLabels, code: u16, elapsed: Duration) {
    let mut guard = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let t = guard.get_or_insert_with(Table::default);
    let watch = labels[0] == "WATCH";
    *t.totals.entry((labels.clone(), code)).or_insert(0) += 1;
    if !watch {
        let h = t.durations.entry(labels).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }
}

fn named(l: &RequestLabels) -> Vec<(&'static str, &str)> {
    vec![
        ("component", "apiserver"),
        ("group", &l[1]),
        ("resource", &l[3]),
        ("scope", &l[5]),
        ("subresource", &l[4]),
        ("verb", &l[0]),
        ("version", &l[2]),
    ]
}

/// Writes the request metrics.
pub fn write_requests(w: &mut Writer) {
    let guard = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let empty = Table::default();
    let t = guard.as_ref().unwrap_or(&empty);
    w.family(
        "apiserver_request_total",
        "[STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.",
        Kind::Counter,
    );
    for ((l, code), n) in &t.totals {
        let code = code.to_string();
        let mut labels = named(l);
        labels.insert(0, ("code", &code));
        w.sample("apiserver_request_total", &labels, *n as f64, None);
    }
    w.family(
        "apiserver_request_duration_seconds",
        "[STABLE] Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.",
        Kind::Histogram,
    );
    for (l, h) in &t.durations {
        let base = named(l);
        for (i, b) in BUCKETS.iter().enumerate() {
            let le = b.to_string();
            let mut labels = base.clone();
            labels.push(("le", &le));
            w.sample(
                "apiserver_request_duration_seconds_bucket",
                &labels,
                h.counts[i] as f64,
                None,
            );
        }
        let mut labels = base.clone();
        labels.push(("le", "+Inf"));
        w.sample(
            "apiserver_request_duration_seconds_bucket",
            &labels,
            h.count as f64,
            None,
        );
        w.sample("apiserver_request_duration_seconds_sum", &base, h.sum, None);
        w.sample(
            "apiserver_request_duration_seconds_count",
            &base,
            h.count as f64,
            None,
        );
    }
}

/// Writes `process_*` metrics of this process (Linux `/proc/self`).
pub fn write_process(w: &mut Writer) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15,
    // starttime 22, rss (pages) 24.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let hz = 100.0;
    let page = 4096.0;
    if let (Some(u), Some(s)) = (field(14), field(15)) {
        w.family(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            Kind::Counter,
        );
        w.sample("process_cpu_seconds_total", &[], (u + s) / hz, None);
    }
    if let Some(rss) = field(24) {
        w.family(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            Kind::Gauge,
        );
        w.sample("process_resident_memory_bytes", &[], rss * page, None);
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
    });
    if let (Some(start), Some(boot)) = (field(22), boot) {
        w.family(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            Kind::Gauge,
        );
        w.sample("process_start_time_seconds", &[], boot + start / hz, None);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        w.family(
            "process_open_fds",
            "Number of open file descriptors.",
            Kind::Gauge,
        );
        w.sample("process_open_fds", &[], fds.count() as f64, None);
    }
}
