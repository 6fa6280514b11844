//! The HorizontalPodAutoscaler controller, as upstream's: every 15 s (and whenever an
//! HPA's spec changes) it reads the target's scale (Deployment, ReplicaSet,
//! StatefulSet, ReplicationController: `spec.replicas` and the selector), computes a
//! replica count from each Resource / ContainerResource metric out of the server's own
//! pod metrics (what `metrics.k8s.io` serves), takes the highest, normalizes it
//! ([`super::hpa_rules`]), writes the new size through the target and reports status
//! (currentReplicas, desiredReplicas, currentMetrics, lastScaleTime, the AbleToScale /
//! ScalingActive / ScalingLimited conditions) and upstream's events.

use super::events::EventRecorder;
use super::hpa_metrics;
use super::hpa_normalize::{self as normalize, History, Normalized};
use crate::api::meta;
use crate::api::resources;
use crate::api::selector::LabelSelector;
use crate::server::informer::{
    builtin, run_controller, Informer, InformerEvent, Informers, ObjectKey, WorkQueue,
};
use crate::server::metrics::ResourceMetrics;
use crate::server::registry::{Registry, Target as WriteTarget, WriteOptions};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const COMPONENT: &str = "horizontal-pod-autoscaler";
/// Upstream's `--horizontal-pod-autoscaler-sync-period`.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);

struct Controller {
    registry: Registry,
    events: EventRecorder,
    hpas: Informer,
    pods: Informer,
    metrics: Arc<ResourceMetrics>,
    queue: WorkQueue<ObjectKey>,
    history: Mutex<HashMap<ObjectKey, History>>,
}

/// Runs the HPA controller until `shutdown` flips, reading pod usage from `metrics`.
pub async fn run(
    informers: Informers,
    metrics: Arc<ResourceMetrics>,
    shutdown: watch::Receiver<bool>,
) {
    let hpas = informers.get(builtin("autoscaling", "v2", "horizontalpodautoscalers"));
    let pods = informers.get(builtin("", "v1", "pods"));
    let queue = WorkQueue::new();
    let ctl = Arc::new(Controller {
        registry: informers.registry().clone(),
        events: EventRecorder::new(informers.registry().clone(), COMPONENT),
        hpas: hpas.clone(),
        pods: pods.clone(),
        metrics,
        queue: queue.clone(),
        history: Mutex::new(HashMap::new()),
    });
    watch_hpas(ctl.clone(), &shutdown);
    hpas.wait_synced().await;
    pods.wait_synced().await;
    for h in hpas.list_all() {
        queue.add(ObjectKey::of(&h));
    }
    queue.shut_down_on(shutdown.clone());
    run_controller(
        "horizontal-pod-autoscaler",
        queue,
        2,
        move |key: ObjectKey| {
            let ctl = ctl.clone();
            async move {
                ctl.sync(&key).await;
                Ok::<(), std::convert::Infallible>(())
            }
        },
    )
    .await;
}

/// Queues an HPA when it appears or its spec changes (not on our own status writes,
/// which would resync it at once); forgets the memory of deleted ones.
fn watch_hpas(ctl: Arc<Controller>, stop: &watch::Receiver<bool>) {
    let mut events = ctl.hpas.subscribe();
    super::owned::spawn_until(stop, async move {
        while let Some(ev) = events.recv().await {
            match ev {
                InformerEvent::Added(o) => ctl.queue.add(ObjectKey::of(&o)),
                InformerEvent::Updated { old, new } => {
                    if old["spec"] != new["spec"]
                        || old["metadata"]["uid"] != new["metadata"]["uid"]
                    {
                        ctl.queue.add(ObjectKey::of(&new));
                    }
                }
                InformerEvent::Deleted(o) => {
                    ctl.history().remove(&ObjectKey::of(&o));
                }
                InformerEvent::Resync => ctl
                    .hpas
                    .list_all()
                    .iter()
                    .for_each(|o| ctl.queue.add(ObjectKey::of(o))),
            }
        }
    });
}

/// The target's scale, as its scale subresource shows it.
struct Scale {
    res: &'static resources::Resource,
    name: String,
    replicas: i64,
    selector: Result<LabelSelector, String>,
}

/// A condition update, applied like upstream's setCondition (the transition time
/// changes only with the status).
fn set_condition(
    status: &mut Value,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    let mut list: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let st = if ok { "True" } else { "False" };
    let idx = match list.iter().position(|c| c["type"] == type_) {
        Some(i) => i,
        None => {
            list.push(json!({"type": type_}));
            list.len() - 1
        }
    };
    let c = &mut list[idx];
    if c["status"] != st {
        c["lastTransitionTime"] = json!(now);
    }
    c["status"] = json!(st);
    c["reason"] = json!(reason);
    c["message"] = json!(message);
    status["conditions"] = json!(list);
}

impl Controller {
    fn history(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, History>> {
        // Each critical section is one map operation: a poisoned lock is consistent.
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn sync(&self, key: &ObjectKey) {
        let Some(hpa) = self.hpas.get(&key.namespace, &key.name) else {
            self.history().remove(key);
            return;
        };
        if meta::is_deleting(&hpa) {
            return;
        }
        self.reconcile(key, &hpa).await;
        self.queue.add_after(key.clone(), SYNC_PERIOD);
    }

    async fn get_scale(&self, ns: &str, target: &Value) -> Result<Scale, String> {
        let api_version = target["apiVersion"].as_str().unwrap_or("");
        let kind = target["kind"].as_str().unwrap_or("");
        let name = target["name"].as_str().unwrap_or("").to_string();
        let group = match api_version.split_once('/') {
            Some((g, _)) => g,
            None => "",
        };
        let res = resources::find_kind(group, kind)
            .filter(|r| r.subresources.iter().any(|s| s.name == "scale"))
            .ok_or_else(|| {
                format!("unable to determine resource for scale target reference: no matches for kind \"{kind}\" in group \"{group}\"")
            })?;
        let obj = self
            .registry
            .get(res, ns, &name)
            .await
            .and_then(|o| o.value())
            .map_err(|e| e.message)?;
        let sel = &obj["spec"]["selector"];
        let selector = if res.plural == "replicationcontrollers" {
            Ok(sel
                .as_object()
                .map(LabelSelector::from_map)
                .unwrap_or_default())
        } else if sel.is_null() {
            Ok(LabelSelector::default())
        } else {
            LabelSelector::from_json(sel)
        };
        Ok(Scale {
            res,
            name,
            replicas: obj["spec"]["replicas"].as_i64().unwrap_or(0),
            selector,
        })
    }

    /// Upstream's reconcileAutoscaler for one HPA.
    async fn reconcile(&self, key: &ObjectKey, hpa: &Value) {
        let now = jiff::Timestamp::now();
        let (now_ms, now_s) = (
            now.as_millisecond(),
            super::owned::format_time(now.as_second()),
        );
        let spec = &hpa["spec"];
        let ns = meta::namespace(hpa);
        let mut status = match &hpa["status"] {
            Value::Object(_) => hpa["status"].clone(),
            _ => json!({}),
        };
        let target = &spec["scaleTargetRef"];
        let reference = format!(
            "{}/{}/{}",
            target["kind"].as_str().unwrap_or(""),
            ns,
            target["name"].as_str().unwrap_or("")
        );
        let scale = match self.get_scale(ns, target).await {
            Ok(s) => s,
            Err(msg) => {
                self.events.warning(hpa, "FailedGetScale", &msg).await;
                let m = format!(
                    "the HPA controller was unable to get the target's current scale: {msg}"
                );
                set_condition(
                    &mut status,
                    "AbleToScale",
                    false,
                    "FailedGetScale",
                    &m,
                    &now_s,
                );
                tracing::debug!(hpa = %key, error = %msg, "failed to query scale subresource for {reference}");
                return self.write_status(hpa, status).await;
            }
        };
        set_condition(
            &mut status,
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
            &now_s,
        );
        let current = scale.replicas;
        let min = spec["minReplicas"].as_i64().unwrap_or(1);
        let max = spec["maxReplicas"].as_i64().unwrap_or(min);
        let mut metric_statuses: Option<Vec<Value>> = None;
        let (desired, reason) = if current == 0 && min != 0 {
            set_condition(
                &mut status,
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
                &now_s,
            );
            (0, String::new())
        } else if current > max {
            (
                max,
                "Current number of replicas above Spec.MaxReplicas".to_string(),
            )
        } else if current < min {
            (
                min,
                "Current number of replicas below Spec.MinReplicas".to_string(),
            )
        } else {
            let (computed, statuses) = self.compute(hpa, &scale, &mut status, now_ms, &now_s).await;
            metric_statuses = Some(statuses);
            let (proposed, metric) = match computed {
                Ok(v) => v,
                Err(msg) => {
                    status["currentReplicas"] = json!(current);
                    // A failure before any metric was read leaves no statuses
                    // (upstream omits the field then).
                    match metric_statuses.as_ref().filter(|s| !s.is_empty()) {
                        Some(s) => status["currentMetrics"] = json!(s),
                        None => {
                            if let Some(m) = status.as_object_mut() {
                                m.remove("currentMetrics");
                            }
                        }
                    }
                    tracing::debug!(hpa = %key, error = %msg, "failed to compute desired number of replicas based on listed metrics for {reference}");
                    self.write_status(hpa, status.clone()).await;
                    self.events
                        .warning(hpa, "FailedComputeMetricsReplicas", &msg)
                        .await;
                    return;
                }
            };
            let reason = if proposed > current {
                format!("{metric} above target")
            } else if proposed < current {
                "All metrics below target".to_string()
            } else {
                String::new()
            };
            let normalized = {
                let mut all = self.history();
                let h = all.entry(key.clone()).or_default();
                match normalize::behavior_of(spec) {
                    Some(b) => normalize::normalize_with_behavior(
                        h, &b, current, proposed, min, max, now_ms,
                    ),
                    None => normalize::normalize(h, current, proposed, min, max, now_ms),
                }
            };
            let Normalized {
                replicas,
                able,
                limited,
            } = normalized;
            let (why, message) = able.text();
            set_condition(&mut status, "AbleToScale", true, why, message, &now_s);
            let (why, message) = limited.1.text();
            set_condition(
                &mut status,
                "ScalingLimited",
                limited.0,
                why,
                message,
                &now_s,
            );
            (replicas, reason)
        };
        let rescale = desired != current && !(current == 0 && min != 0);
        let desired = if rescale {
            if let Err(e) = self.update_scale(ns, &scale, desired).await {
                let msg = format!("New size: {desired}; reason: {reason}; error: {e}");
                self.events.warning(hpa, "FailedRescale", &msg).await;
                let m = format!("the HPA controller was unable to update the target scale: {e}");
                set_condition(
                    &mut status,
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    &m,
                    &now_s,
                );
                status["currentReplicas"] = json!(current);
                if let Some(s) = &metric_statuses {
                    status["currentMetrics"] = json!(s);
                }
                return self.write_status(hpa, status).await;
            }
            let m = format!("the HPA controller was able to update the target scale to {desired}");
            set_condition(
                &mut status,
                "AbleToScale",
                true,
                "SucceededRescale",
                &m,
                &now_s,
            );
            let msg = format!("New size: {desired}; reason: {reason}");
            self.events.normal(hpa, "SuccessfulRescale", &msg).await;
            tracing::info!(hpa = %key, target = %reference, from = current, to = desired, "{msg}");
            let behavior = normalize::behavior_of(spec);
            self.history().entry(key.clone()).or_default().record_scale(
                behavior.as_ref(),
                current,
                desired,
                now_ms,
            );
            status["lastScaleTime"] = json!(now_s);
            desired
        } else {
            current
        };
        status["currentReplicas"] = json!(current);
        status["desiredReplicas"] = json!(desired);
        match metric_statuses {
            Some(s) if !s.is_empty() => status["currentMetrics"] = json!(s),
            _ => {
                if let Some(m) = status.as_object_mut() {
                    m.remove("currentMetrics");
                }
            }
        }
        self.write_status(hpa, status).await;
    }

    /// Upstream's computeReplicasForMetrics: the highest proposal over the metrics, the
    /// ScalingActive condition, and each metric's status (an empty one where it failed).
    /// An error means no replica count (all metrics failed, or some did on a scale-down).
    async fn compute(
        &self,
        hpa: &Value,
        scale: &Scale,
        status: &mut Value,
        now_ms: i64,
        now_s: &str,
    ) -> (Result<(i64, String), String>, Vec<Value>) {
        let selector = match &scale.selector {
            Ok(s) if !s.is_empty() => s.clone(),
            Ok(_) => {
                self.events
                    .warning(hpa, "SelectorRequired", "selector is required")
                    .await;
                let m = "the HPA target's scale is missing a selector";
                set_condition(status, "ScalingActive", false, "InvalidSelector", m, now_s);
                return (Err("selector is required".into()), Vec::new());
            }
            Err(e) => {
                let m = format!(
                    "couldn't convert selector into a corresponding internal selector object: {e}"
                );
                self.events.warning(hpa, "InvalidSelector", &m).await;
                set_condition(status, "ScalingActive", false, "InvalidSelector", &m, now_s);
                return (Err(m), Vec::new());
            }
        };
        let ns = meta::namespace(hpa);
        let pods: Vec<Arc<Value>> = self.pods.list(ns, &selector);
        let default_metrics = vec![json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}})];
        let specs: Vec<Value> = match hpa["spec"]["metrics"].as_array() {
            Some(m) if !m.is_empty() => m.clone(),
            _ => default_metrics,
        };
        let mut statuses = Vec::with_capacity(specs.len());
        let (mut replicas, mut metric) = (0i64, String::new());
        let mut invalid = 0;
        let mut first_error: Option<hpa_metrics::MetricFailure> = None;
        for m in &specs {
            let (result, st) =
                hpa_metrics::compute_metric(&self.metrics, m, &pods, ns, scale.replicas, now_ms);
            statuses.push(st);
            match result {
                Ok((r, name)) => {
                    if replicas == 0 || r > replicas {
                        replicas = r;
                        metric = name;
                    }
                }
                Err(f) => {
                    self.events.warning(hpa, &f.reason, &f.inner).await;
                    first_error.get_or_insert(f);
                    invalid += 1;
                }
            }
        }
        if let Some(f) = first_error {
            if invalid >= specs.len() || replicas < scale.replicas {
                let m = format!(
                    "the HPA was unable to compute the replica count: {}",
                    f.inner
                );
                set_condition(status, "ScalingActive", false, &f.reason, &m, now_s);
                let e = format!(
                    "invalid metrics ({invalid} invalid out of {}), first error is: {}",
                    specs.len(),
                    f.outer
                );
                return (Err(e), statuses);
            }
        }
        let m = format!("the HPA was able to successfully calculate a replica count from {metric}");
        set_condition(status, "ScalingActive", true, "ValidMetricFound", &m, now_s);
        (Ok((replicas, metric)), statuses)
    }

    /// Writes the new size through the target's main endpoint, as the scale
    /// subresource does (so generation and managedFields move as for `kubectl scale`).
    async fn update_scale(&self, ns: &str, scale: &Scale, replicas: i64) -> Result<(), String> {
        let current = self
            .registry
            .get(scale.res, ns, &scale.name)
            .await
            .and_then(|o| o.value())
            .map_err(|e| e.message)?;
        let mut obj = current;
        obj["spec"]["replicas"] = json!(replicas);
        let opts = WriteOptions {
            field_manager: COMPONENT.to_string(),
            subresource: "scale",
            ..Default::default()
        };
        self.registry
            .update(scale.res, ns, &scale.name, obj, WriteTarget::Main, &opts)
            .await
            .map(|_| ())
            .map_err(|e| e.message)
    }

    async fn write_status(&self, hpa: &Value, status: Value) {
        if status == hpa["status"] {
            return;
        }
        let uid = meta::uid(hpa).to_string();
        let r = self
            .registry
            .update_with(
                self.hpas.resource(),
                meta::namespace(hpa),
                meta::name(hpa),
                |o| {
                    if meta::uid(o) == uid {
                        o["status"] = status.clone();
                    }
                    Ok(())
                },
            )
            .await;
        if let Err(e) = r {
            if e.code != 404 {
                tracing::debug!(hpa = meta::name(hpa), error = %e.message, "cannot update HPA status");
            }
        }
    }
}
