//! The endpoints controller: for every Service with a selector, the pods it selects
//! become its `Endpoints` (ready addresses and `notReadyAddresses`, repacked into one
//! subset per distinct port list) and its EndpointSlices ([`super::endpointslices`]).
//!
//! Which pods count and how ([`endpoint_groups`]) follows upstream: a pod needs an IP and
//! must not have finished; it is ready when its Ready condition is True (or the Service
//! publishes not-ready addresses); a terminating pod is listed only in slices (as
//! terminating) unless not-ready addresses are published; named target ports are
//! resolved per pod against its container ports, so pods of one Service may serve on
//! different ports.
//!
//! One work queue of Service keys; pod changes enqueue the Services whose selectors match
//! the pod's old or new labels, so a pod turning ready is in the endpoints within
//! milliseconds.

use crate::api::meta;
use crate::api::selector::LabelSelector;
use crate::api::status::ApiError;
use crate::server::informer::{
    builtin, run_controller, Informer, InformerEvent, Informers, ObjectKey, WorkQueue,
};
use crate::server::registry::WriteOptions;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Label upstream puts on the Endpoints and slices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// One port of an endpoint group, as Endpoints and EndpointSlices write it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointPort {
    /// The Service port's name ("" when unnamed).
    pub name: String,
    /// The pod's port the Service port resolves to.
    pub port: i64,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The Service port's appProtocol, if any.
    pub app_protocol: Option<String>,
}

impl EndpointPort {
    /// The JSON form (shared by `EndpointPort` and `discovery/v1` `EndpointPort`).
    pub fn to_json(&self) -> Value {
        let mut p = json!({"port": self.port, "protocol": self.protocol});
        if !self.name.is_empty() {
            p["name"] = json!(self.name);
        }
        if let Some(a) = &self.app_protocol {
            p["appProtocol"] = json!(a);
        }
        p
    }
}

/// One selected pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodEndpoint {
    /// The pod IP.
    pub ip: String,
    /// Ready to receive traffic (what clients are sent to).
    pub ready: bool,
    /// Ready, ignoring termination.
    pub serving: bool,
    /// Being deleted.
    pub terminating: bool,
    /// `spec.nodeName`.
    pub node_name: String,
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod uid.
    pub uid: String,
    /// `spec.hostname` when the pod's subdomain is the Service's name.
    pub hostname: Option<String>,
}

impl PodEndpoint {
    /// The `targetRef` both kinds carry.
    pub fn target_ref(&self) -> Value {
        json!({"kind": "Pod", "namespace": self.namespace, "name": self.name, "uid": self.uid})
    }
}

/// Pods that serve the same port list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointGroup {
    /// Ports in Service order.
    pub ports: Vec<EndpointPort>,
    /// Pods, by IP.
    pub endpoints: Vec<PodEndpoint>,
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The container port a Service's `targetPort` names in `pod`, or the number itself.
fn resolve_target_port(pod: &Value, target: &Value, protocol: &str) -> Option<i64> {
    match target {
        Value::Number(n) => n.as_i64().filter(|p| *p > 0),
        Value::String(name) => {
            if let Ok(n) = name.parse::<i64>() {
                return Some(n);
            }
            pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| {
                    p["name"].as_str() == Some(name.as_str())
                        && p["protocol"].as_str().unwrap_or("TCP") == protocol
                })
                .and_then(|p| p["containerPort"].as_i64())
        }
        _ => None,
    }
}

/// The selector of a Service the controllers manage, None for ExternalName Services
/// and Services without a selector (their endpoints are the user's).
pub fn managed_selector(svc: &Value) -> Option<LabelSelector> {
    if svc["spec"]["type"] == "ExternalName" {
        return None;
    }
    let sel = svc["spec"]["selector"]
        .as_object()
        .filter(|m| !m.is_empty())?;
    Some(LabelSelector::from_map(sel))
}

/// The pods of `svc` grouped by the ports they serve (groups by port list, pods by IP).
/// `pods` are the pods of the Service's namespace that match its selector.
pub fn endpoint_groups(svc: &Value, pods: &[Arc<Value>]) -> Vec<EndpointGroup> {
    let publish = svc["spec"]["publishNotReadyAddresses"].as_bool() == Some(true);
    let svc_name = meta::name(svc);
    let svc_ports: Vec<&Value> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let mut groups: BTreeMap<Vec<EndpointPort>, Vec<PodEndpoint>> = BTreeMap::new();
    for pod in pods {
        let ip = pod["status"]["podIP"].as_str().unwrap_or("");
        let phase = pod["status"]["phase"].as_str().unwrap_or("");
        if ip.is_empty() || phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        let terminating = meta::is_deleting(pod);
        let serving = publish || pod_ready(pod);
        let ready = serving && (!terminating || publish);
        let mut ports = Vec::new();
        for sp in &svc_ports {
            let protocol = sp["protocol"].as_str().unwrap_or("TCP").to_string();
            let target = sp
                .get("targetPort")
                .cloned()
                .unwrap_or_else(|| sp["port"].clone());
            let Some(port) = resolve_target_port(pod, &target, &protocol) else {
                continue;
            };
            ports.push(EndpointPort {
                name: sp["name"].as_str().unwrap_or("").to_string(),
                port,
                protocol,
                app_protocol: sp["appProtocol"].as_str().map(str::to_string),
            });
        }
        if !svc_ports.is_empty() && ports.is_empty() {
            continue;
        }
        let hostname = pod["spec"]["hostname"]
            .as_str()
            .filter(|_| pod["spec"]["subdomain"].as_str() == Some(svc_name))
            .map(str::to_string);
        groups.entry(ports).or_default().push(PodEndpoint {
            ip: ip.to_string(),
            ready,
            serving,
            terminating,
            node_name: pod["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            name: meta::name(pod).to_string(),
            namespace: meta::namespace(pod).to_string(),
            uid: meta::uid(pod).to_string(),
            hostname,
        });
    }
    groups
        .into_iter()
        .map(|(ports, mut endpoints)| {
            endpoints.sort();
            EndpointGroup { ports, endpoints }
        })
        .collect()
}

/// The labels the Endpoints of `svc` carry: the Service's own, plus the headless mark.
pub fn derived_labels(svc: &Value) -> Map<String, Value> {
    let mut labels = meta::labels(svc).cloned().unwrap_or_default();
    if svc["spec"]["clusterIP"] == "None" {
        labels.insert(HEADLESS_LABEL.into(), json!(""));
    }
    labels
}

/// The `subsets` of the Endpoints object (terminating pods only with publishNotReady).
pub fn subsets(groups: &[EndpointGroup]) -> Vec<Value> {
    let mut out = Vec::new();
    for g in groups {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for e in &g.endpoints {
            if e.terminating && !e.ready {
                continue;
            }
            let mut a = json!({"ip": e.ip, "targetRef": e.target_ref()});
            if !e.node_name.is_empty() {
                a["nodeName"] = json!(e.node_name);
            }
            if let Some(h) = &e.hostname {
                a["hostname"] = json!(h);
            }
            if e.ready {
                ready.push(a);
            } else {
                not_ready.push(a);
            }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        let mut s = json!({});
        if !ready.is_empty() {
            s["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            s["notReadyAddresses"] = json!(not_ready);
        }
        if !g.ports.is_empty() {
            s["ports"] = json!(g
                .ports
                .iter()
                .map(EndpointPort::to_json)
                .collect::<Vec<_>>());
        }
        out.push(s);
    }
    out
}

fn write_opts() -> WriteOptions {
    WriteOptions {
        field_manager: "endpoint-controller".into(),
        ..Default::default()
    }
}

/// Brings the Endpoints of `svc` (None: deleted) in line with `groups`.
async fn sync_endpoints(
    informers: &Informers,
    endpoints: &Informer,
    key: &ObjectKey,
    svc: Option<&Value>,
    groups: &[EndpointGroup],
) -> Result<(), ApiError> {
    let res = builtin("", "v1", "endpoints");
    let registry = informers.registry();
    let current = endpoints.get(&key.namespace, &key.name);
    let Some(svc) = svc else {
        if current.is_some() {
            match registry
                .delete(res, &key.namespace, &key.name, &Default::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    };
    let subsets = subsets(groups);
    let labels = derived_labels(svc);
    let want_subsets = if subsets.is_empty() {
        Value::Null
    } else {
        json!(subsets)
    };
    if let Some(cur) = &current {
        let cur_subsets = cur.get("subsets").cloned().unwrap_or(Value::Null);
        let same_subsets = cur_subsets == want_subsets
            || (want_subsets.is_null() && cur_subsets.as_array().is_some_and(Vec::is_empty));
        if same_subsets && meta::labels(cur).cloned().unwrap_or_default() == labels {
            return Ok(());
        }
        registry
            .update_with(res, &key.namespace, &key.name, |obj| {
                meta::metadata_mut(obj).insert("labels".into(), json!(labels));
                match obj.as_object_mut() {
                    Some(m) if want_subsets.is_null() => {
                        m.remove("subsets");
                    }
                    Some(m) => {
                        m.insert("subsets".into(), want_subsets.clone());
                    }
                    None => {}
                }
                Ok(())
            })
            .await?;
        return Ok(());
    }
    let mut obj = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": key.name, "namespace": key.namespace, "labels": labels}});
    if !want_subsets.is_null() {
        obj["subsets"] = want_subsets;
    }
    // A 409 means the informer had not seen it yet: the retry updates it.
    registry
        .create(res, &key.namespace, obj, &write_opts())
        .await
        .map(drop)
}

/// One pass over one Service: its Endpoints and its EndpointSlices.
async fn reconcile(
    informers: &Informers,
    caches: &Caches,
    key: &ObjectKey,
) -> Result<(), ApiError> {
    let svc = caches.services.get(&key.namespace, &key.name);
    let selector = svc.as_deref().and_then(managed_selector);
    let groups = match (&svc, &selector) {
        (Some(svc), Some(sel)) => endpoint_groups(svc, &caches.pods.list(&key.namespace, sel)),
        _ => Vec::new(),
    };
    // Services without a selector keep the Endpoints their users wrote.
    if svc.is_none() || selector.is_some() {
        sync_endpoints(
            informers,
            &caches.endpoints,
            key,
            svc.as_deref().filter(|_| selector.is_some()),
            &groups,
        )
        .await?;
    }
    let managed = svc.as_deref().filter(|_| selector.is_some());
    super::endpointslices::sync(informers, &caches.slices, key, managed, &groups).await
}

struct Caches {
    services: Informer,
    pods: Informer,
    endpoints: Informer,
    slices: Informer,
}

/// The Services in `pod`'s namespace whose selector matches its labels.
fn services_of(services: &Informer, pod: &Value) -> Vec<ObjectKey> {
    let ns = meta::namespace(pod);
    services
        .list(ns, &LabelSelector::default())
        .iter()
        .filter(|s| managed_selector(s).is_some_and(|sel| sel.matches(meta::labels(pod))))
        .map(|s| ObjectKey::of(s))
        .collect()
}

/// Runs until `shutdown` flips.
pub async fn run(informers: Informers, shutdown: watch::Receiver<bool>) {
    let caches = Arc::new(Caches {
        services: informers.get(builtin("", "v1", "services")),
        pods: informers.get(builtin("", "v1", "pods")),
        endpoints: informers.get(builtin("", "v1", "endpoints")),
        slices: informers.get(builtin("discovery.k8s.io", "v1", "endpointslices")),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    let mut feeds = Vec::new();
    for which in 0..4 {
        let (q, c) = (queue.clone(), caches.clone());
        let informer = match which {
            0 => c.services.clone(),
            1 => c.pods.clone(),
            2 => c.endpoints.clone(),
            _ => c.slices.clone(),
        };
        let mut events = informer.subscribe();
        feeds.push(tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let objs: Vec<Arc<Value>> = match &ev {
                    InformerEvent::Resync => {
                        c.services
                            .list_all()
                            .iter()
                            .for_each(|s| q.add(ObjectKey::of(s)));
                        continue;
                    }
                    InformerEvent::Updated { old, new } => vec![old.clone(), new.clone()],
                    other => other.object().cloned().into_iter().collect(),
                };
                for o in objs {
                    match which {
                        1 => services_of(&c.services, &o)
                            .into_iter()
                            .for_each(|k| q.add(k)),
                        3 => {
                            if let Some(svc) =
                                o["metadata"]["labels"]["kubernetes.io/service-name"].as_str()
                            {
                                q.add(ObjectKey::new(meta::namespace(&o), svc));
                            }
                        }
                        _ => q.add(ObjectKey::of(&o)),
                    }
                }
            }
        }));
    }
    for c in [
        &caches.services,
        &caches.pods,
        &caches.endpoints,
        &caches.slices,
    ] {
        c.wait_synced().await;
    }
    for s in caches.services.list_all() {
        queue.add(ObjectKey::of(&s));
    }
    let stopper = {
        let (q, mut shutdown) = (queue.clone(), shutdown.clone());
        tokio::spawn(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
            q.shut_down();
        })
    };
    let inf = informers.clone();
    run_controller("endpoints", queue, 2, move |key: ObjectKey| {
        let (inf, caches) = (inf.clone(), caches.clone());
        async move { reconcile(&inf, &caches, &key).await.map_err(|e| e.message) }
    })
    .await;
    stopper.abort();
    for f in feeds {
        f.abort();
    }
}

#[cfg(test)]
#[path = "endpoints_tests.rs"]
mod tests;
