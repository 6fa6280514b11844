//! The service proxy every node runs (kube-proxy's job, in the agent): it follows
//! Services and EndpointSlices from the API server and keeps the nftables table
//! [`rules::TABLE`] in step with them. Nothing else on the node is touched.
//!
//! - [`model`]: Services and slices as proxied ports with ready backends.
//! - [`rules`]: the table's rules, whole or as a diff.
//!
//! Changes are debounced (a burst of events becomes one update) and each update is one
//! `nft -f` transaction, so packets see the old rules or the new ones, never a mix. The
//! first update after a start replaces the whole table, so an agent restart rebuilds it
//! from the API's state; later ones carry only the chains, maps and sets that changed
//! (and fall back to a full replace if that fails, e.g. someone deleted the table).

pub mod model;
pub mod rules;

use crate::agent::client::{query_escape, ApiClient};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Notify};

/// How long a change waits for more changes before the rules are written.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// How long the rules may lag behind a stream of changes at most.
const MAX_DELAY: Duration = Duration::from_millis(50);
/// Watches end and relist after this long (a resync).
const WATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// Writing the rules failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `nft` is not installed.
    #[error("nft not found: services cannot be proxied on this node; install nftables (apt-get install nftables) and restart the agent")]
    NftMissing,
    /// `nft` ran and refused the rules or failed.
    #[error("nft -f failed: {0}")]
    Nft(String),
}

/// What the proxy needs to know about its node.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// This node's name (for the Local traffic policies).
    pub node_name: String,
    /// The pod network (traffic from elsewhere to NodePorts is masqueraded).
    pub cluster_cidr: String,
}

/// Runs `nft -f -` with `rules` on stdin (in the agent's own network namespace).
pub async fn nft_apply(rules: &str) -> Result<(), ProxyError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ProxyError::NftMissing,
            _ => ProxyError::Nft(format!("cannot run nft: {e}")),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .await
            .map_err(|e| ProxyError::Nft(format!("writing rules to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| ProxyError::Nft(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ProxyError::Nft(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Deletes the proxy's table (for tests and uninstall).
pub async fn remove_table() -> Result<(), ProxyError> {
    nft_apply(&format!(
        "add table ip {t}\ndelete table ip {t}\n",
        t = rules::TABLE
    ))
    .await
}

/// The objects the proxy follows, keyed `namespace/name`.
#[derive(Default)]
struct State {
    services: BTreeMap<String, Value>,
    slices: BTreeMap<String, Value>,
    synced: [bool; 2],
}

/// Keeps rules applied from state; `applied` is what the kernel has (None: unknown).
pub struct Applier {
    opts: ProxyOptions,
    applied: Option<rules::Ruleset>,
}

impl Applier {
    /// An applier that starts with a full replace.
    pub fn new(opts: ProxyOptions) -> Applier {
        Applier {
            opts,
            applied: None,
        }
    }

    /// Writes the rules for `ports`: the diff to what was applied, else the whole table.
    pub async fn apply(&mut self, ports: &[model::ServicePort]) -> Result<(), ProxyError> {
        let want = rules::build(ports, &self.opts.node_name, &self.opts.cluster_cidr);
        if let Some(old) = &self.applied {
            match rules::diff(old, &want) {
                rules::Change::Nothing => return Ok(()),
                rules::Change::Partial(text) => match nft_apply(&text).await {
                    Ok(()) => {
                        self.applied = Some(want);
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "incremental service rules failed; replacing the table");
                    }
                },
                rules::Change::Full => {}
            }
        }
        self.applied = None;
        nft_apply(&rules::full(&want, &self.opts.cluster_cidr)).await?;
        self.applied = Some(want);
        Ok(())
    }
}

/// Follows one resource (list, then watch from the list's revision; relist when the
/// watch ends or fails) into `state`, waking `dirty` on every change.
async fn follow(
    api: ApiClient,
    path: &'static str,
    which: usize,
    state: Arc<Mutex<State>>,
    dirty: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = |o: &Value| {
        format!(
            "{}/{}",
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap_or("")
        )
    };
    loop {
        let list: Value = match api.request_json(http::Method::GET, path, None).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(path, error = %e, "service proxy cannot list; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            let map = if which == 0 {
                &mut st.services
            } else {
                &mut st.slices
            };
            map.clear();
            for o in list["items"].as_array().into_iter().flatten() {
                map.insert(key(o), o.clone());
            }
            st.synced[which] = true;
        }
        dirty.notify_one();
        let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0");
        let wpath = format!(
            "{path}?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={}",
            query_escape(rv),
            WATCH_TIMEOUT.as_secs()
        );
        let mut stream = match api.watch(&wpath).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(path, error = %e, "service proxy cannot watch; relisting");
                continue;
            }
        };
        loop {
            let ev = tokio::select! {
                e = stream.next() => e,
                _ = shutdown.changed() => return,
            };
            let ev = match ev {
                Ok(Some(ev)) => ev,
                Ok(None) | Err(_) => break,
            };
            let k = key(&ev.object);
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            let map = if which == 0 {
                &mut st.services
            } else {
                &mut st.slices
            };
            match ev.kind.as_str() {
                "ADDED" | "MODIFIED" => {
                    map.insert(k, ev.object);
                }
                "DELETED" => {
                    map.remove(&k);
                }
                _ => continue,
            }
            drop(st);
            dirty.notify_one();
        }
    }
}

/// Runs the proxy until `shutdown`: follows Services and EndpointSlices and keeps the
/// table current. Leaves the table in place on shutdown (connections keep working while
/// the agent restarts; the next start replaces it).
pub async fn run(api: ApiClient, opts: ProxyOptions, mut shutdown: watch::Receiver<bool>) {
    let state = Arc::new(Mutex::new(State::default()));
    let dirty = Arc::new(Notify::new());
    let followers = [
        tokio::spawn(follow(
            api.clone(),
            "/api/v1/services",
            0,
            state.clone(),
            dirty.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(follow(
            api.clone(),
            "/apis/discovery.k8s.io/v1/endpointslices",
            1,
            state.clone(),
            dirty.clone(),
            shutdown.clone(),
        )),
    ];
    let mut applier = Applier::new(opts);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = dirty.notified() => {}
            // Retry a failed update.
            _ = tokio::time::sleep(Duration::from_secs(if failing { 2 } else { 3600 })) => {}
            _ = shutdown.changed() => break,
        }
        // Debounce: gather what else arrives shortly, within MAX_DELAY of the first change.
        let first = Instant::now();
        while first.elapsed() < MAX_DELAY {
            if tokio::time::timeout(DEBOUNCE, dirty.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        let ports = {
            let st = state.lock().unwrap_or_else(|e| e.into_inner());
            if !st.synced.iter().all(|s| *s) {
                continue;
            }
            model::all_ports(&st.services, &st.slices)
        };
        let started = Instant::now();
        match applier.apply(&ports).await {
            Ok(()) => {
                if failing {
                    tracing::info!("service rules applied again");
                }
                failing = false;
                tracing::debug!(ports = ports.len(), took = ?started.elapsed(), "service rules applied");
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot apply the service rules; retrying");
                }
                failing = true;
            }
        }
    }
    for f in followers {
        f.abort();
    }
}
