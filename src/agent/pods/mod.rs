//! Pods on this node: the sync loop that watches the pods bound here (list, then watch
//! from that revision; relist on 410 or a broken stream) and gives each pod a worker
//! ([`worker`]) that drives it towards its spec on containerd. At the first list it
//! also removes what is left of pods that no longer exist (deleted while the agent was
//! down): containers, namespaces, volumes, logs and cgroups.

pub mod backoff;
pub mod hooks;
pub mod image;
pub mod probes;
pub mod spec;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::agent::client::{query_escape, ApiClient};
use crate::agent::layout;
use crate::agent::runtime::Runtime;
use volumes::NodeFacts;

/// What every pod worker shares.
pub struct PodContext {
    pub client: ApiClient,
    pub runtime: Runtime,
    pub node_name: String,
    pub node_ip: String,
    /// `<data-dir>/agent`.
    pub agent_dir: PathBuf,
    /// Container logs (`/var/log/pods`).
    pub log_dir: PathBuf,
    /// Pod network namespaces (`/run/k3rs/netns`).
    pub netns_dir: PathBuf,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// Mirrors and credentials from registries.yaml.
    pub registries: crate::agent::images::Registries,
    /// The pod network (`None` with `--flannel-backend none`: loopback only).
    pub network: Option<Arc<crate::cni::Cni>>,
    /// The node's resolv.conf (`--resolv-conf`, or k3s's choice): dnsPolicy Default.
    pub host_resolv_conf: PathBuf,
}

impl PodContext {
    /// Node facts for a pod's volumes and spec; `pod_ip` is the pod's own address
    /// (hostNetwork pods have the node's).
    pub fn node_facts(&self, pod: &Pod, pod_ip: Option<&str>) -> NodeFacts {
        let host_net = volumes::host_network(pod);
        NodeFacts {
            node_name: self.node_name.clone(),
            host_ip: Some(self.node_ip.clone()),
            pod_ips: if host_net {
                vec![self.node_ip.clone()]
            } else {
                pod_ip.map(str::to_string).into_iter().collect()
            },
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            host_resolv_conf: self.host_resolv_conf.clone(),
        }
    }

    /// Records an event about `pod` (fire and forget: events are best effort).
    pub fn event(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        let m = &pod.metadata;
        let ns = m.namespace.clone().unwrap_or_else(|| "default".into());
        let now = crate::api::meta::now_rfc3339();
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                // The kubelet's naming: <object>.<unix nanos in hex>.
                "name": format!("{}.{:x}", m.name.as_deref().unwrap_or("pod"), unix_nanos()),
                "namespace": ns,
            },
            "involvedObject": {
                "apiVersion": "v1", "kind": "Pod",
                "name": m.name, "namespace": ns, "uid": m.uid,
                "resourceVersion": m.resource_version,
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": self.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node_name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let client = self.client.clone();
        let path = format!("/api/v1/namespaces/{ns}/events");
        tokio::spawn(async move {
            if let Err(e) = client.create::<_, Value>(&path, &event).await {
                tracing::debug!(error = %e, "cannot record event");
            }
        });
    }

    /// Pulls `image` for `pod` with the credentials of its imagePullSecrets (then those
    /// of registries.yaml). The error is the message the pod's waiting state shows.
    pub async fn pull(&self, pod: &Pod, image: &str) -> Result<(), String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut secrets = Vec::new();
        let names = pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten());
        for r in names {
            let path = format!("/api/v1/namespaces/{ns}/secrets/{}", r.name);
            match self.client.get(&path).await {
                Ok(Some(secret)) => secrets.push(secret),
                Ok(None) => tracing::warn!(secret = %r.name, "imagePullSecret not found"),
                Err(e) => {
                    tracing::warn!(secret = %r.name, error = %e, "cannot read imagePullSecret")
                }
            }
        }
        let credentials = crate::agent::images::credentials_from_secrets(&secrets);
        let opts = crate::agent::images::PullOptions {
            credentials: &credentials,
            registries: &self.registries,
        };
        self.event(
            pod,
            "Normal",
            "Pulling",
            &format!("Pulling image \"{image}\""),
        );
        let started = std::time::Instant::now();
        match crate::agent::images::pull(self.runtime.client(), image, &opts).await {
            Ok(_) => {
                self.event(
                    pod,
                    "Normal",
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Removes the node-side leftovers of a pod: its network (veth, address), volumes,
    /// network namespace, cgroups and (when known) its log directory.
    pub async fn cleanup_pod(&self, uid: &str, name: Option<(&str, &str)>) {
        if let Some(net) = &self.network {
            if let Err(e) = net.detach(uid).await {
                tracing::warn!(pod_uid = %uid, error = %e, "cannot remove the pod's network");
            }
        }
        let pod_dir = layout::pod_dir(&self.agent_dir, uid);
        let netns = self.netns_dir.join(uid);
        let log_dir = name.map(|(ns, n)| layout::pod_log_dir(&self.log_dir, ns, n, uid));
        let uid = uid.to_string();
        let result = tokio::task::spawn_blocking(move || {
            if let Err(e) = volumes::teardown(&pod_dir) {
                tracing::warn!(pod_uid = %uid, error = %e, "cannot remove pod volumes");
            }
            if netns.exists() {
                if let Err(e) = crate::agent::netns::remove(&netns) {
                    tracing::warn!(pod_uid = %uid, error = %e, "cannot remove pod network namespace");
                }
            }
            if let Some(d) = log_dir {
                let _ = std::fs::remove_dir_all(d);
            }
            remove_pod_cgroups(&uid);
        })
        .await;
        if result.is_err() {
            tracing::warn!("pod cleanup panicked");
        }
    }
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Removes the pod-level cgroup directories runc leaves behind (`/k3rs/<uid>` under each
/// v1 controller, or in the v2 unified tree). Container cgroups are runc's to remove.
fn remove_pod_cgroups(uid: &str) {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join("k3rs").join(uid)];
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            dirs.push(e.path().join("k3rs").join(uid));
        }
    }
    for d in dirs {
        if d.is_dir() {
            // Children first (a container cgroup runc did not remove), then the pod's.
            if let Ok(children) = std::fs::read_dir(&d) {
                for c in children.flatten() {
                    if c.path().is_dir() {
                        let _ = std::fs::remove_dir(c.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&d);
        }
    }
}

struct Entry {
    updates: watch::Sender<Option<Pod>>,
    task: tokio::task::JoinHandle<()>,
}

/// Watches this node's pods and runs their workers until `shutdown`. Running
/// containers are left alone on shutdown: the next agent adopts them.
pub async fn run(ctx: Arc<PodContext>, mut shutdown: watch::Receiver<bool>) {
    let selector = query_escape(&format!("spec.nodeName={}", ctx.node_name));
    let mut workers: HashMap<String, Entry> = HashMap::new();
    let mut first = true;
    loop {
        let list_path = format!("/api/v1/pods?fieldSelector={selector}");
        let list: Value = match ctx
            .client
            .request_json(http::Method::GET, &list_path, None)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list pods; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let pods: Vec<Pod> = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|p| serde_json::from_value(p.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let live: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        if first {
            first = false;
            cleanup_orphans(&ctx, &live).await;
        }
        // Containers to adopt: listed once per (re)list; pods that appear later are new.
        let existing = match ctx.runtime.list().await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list containers for adoption");
                Vec::new()
            }
        };
        for pod in pods {
            dispatch(&ctx, &mut workers, pod, &existing);
        }
        for (uid, e) in workers.iter() {
            if !live.contains(uid) {
                let _ = e.updates.send(None);
            }
        }
        workers.retain(|_, e| !e.task.is_finished());

        let watch_path = format!(
            "/api/v1/pods?fieldSelector={selector}&watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=300"
        );
        let mut stream = match ctx.client.watch(&watch_path).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch pods; relisting");
                continue;
            }
        };
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = shutdown.changed() => {
                    drop(workers);
                    return;
                }
            };
            match event {
                Ok(Some(ev)) => {
                    if ev.kind == "BOOKMARK" {
                        continue;
                    }
                    let Ok(pod) = serde_json::from_value::<Pod>(ev.object) else {
                        continue;
                    };
                    if ev.kind == "DELETED" {
                        if let Some(e) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                            let _ = e.updates.send(None);
                        }
                    } else {
                        dispatch(&ctx, &mut workers, pod, &[]);
                    }
                    workers.retain(|_, e| !e.task.is_finished());
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_gone() {
                        tracing::debug!(error = %e, "pod watch ended");
                    }
                    break;
                }
            }
        }
    }
}

/// Hands `pod` to its worker, starting one (adopting its containers among
/// `existing`) when there is none.
fn dispatch(
    ctx: &Arc<PodContext>,
    workers: &mut HashMap<String, Entry>,
    pod: Pod,
    existing: &[crate::agent::runtime::ContainerInfo],
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if let Some(e) = workers.get(&uid) {
        if !e.task.is_finished() {
            let _ = e.updates.send(Some(pod));
            return;
        }
        // A finished worker handled the pod's deletion; nothing more to do.
        if pod.metadata.deletion_timestamp.is_some() {
            return;
        }
    }
    let mine = existing
        .iter()
        .filter(|c| c.labels.get(layout::LABEL_POD_UID) == Some(&uid))
        .cloned()
        .collect();
    let (tx, rx) = watch::channel(Some(pod.clone()));
    let w = worker::Worker::new(ctx.clone(), pod, mine);
    let task = tokio::spawn(w.run(rx));
    workers.insert(uid, Entry { updates: tx, task });
}

/// Removes containers, namespaces and pod directories of pods that are gone.
async fn cleanup_orphans(ctx: &Arc<PodContext>, live: &HashSet<String>) {
    let containers = match ctx.runtime.list().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list containers for cleanup");
            return;
        }
    };
    let mut gone: HashMap<String, Option<(String, String)>> = HashMap::new();
    for c in containers {
        let Some(uid) = c.labels.get(layout::LABEL_POD_UID) else {
            continue;
        };
        if live.contains(uid) {
            continue;
        }
        if let Err(e) = ctx.runtime.remove(&c.id).await {
            tracing::warn!(id = %c.id, error = %e, "cannot remove container of a deleted pod");
        }
        let ns = c.labels.get(layout::LABEL_POD_NAMESPACE).cloned();
        let name = c.labels.get(layout::LABEL_POD_NAME).cloned();
        gone.insert(uid.clone(), ns.zip(name));
    }
    for uid in crate::agent::netns::list(&ctx.netns_dir) {
        if !live.contains(&uid) {
            gone.entry(uid).or_insert(None);
        }
    }
    if let Ok(entries) = std::fs::read_dir(ctx.agent_dir.join("pods")) {
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if !live.contains(&uid) {
                gone.entry(uid).or_insert(None);
            }
        }
    }
    for (uid, name) in gone {
        tracing::info!(pod_uid = %uid, "cleaning up a pod deleted while the agent was away");
        let name = name.as_ref().map(|(ns, n)| (ns.as_str(), n.as_str()));
        ctx.cleanup_pod(&uid, name).await;
    }
    // Addresses of pods that never got as far as a namespace (the agent stopped in
    // between) are released too.
    if let Some(net) = &ctx.network {
        let live: Vec<String> = live.iter().cloned().collect();
        if let Err(e) = net.gc(&live).await {
            tracing::warn!(error = %e, "cannot release the addresses of deleted pods");
        }
    }
}
