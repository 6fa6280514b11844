//! One pod's life on this node. A worker task per pod owns everything about it: the
//! network namespace, volumes, its containers in containerd (adopted after an agent
//! restart), restarts with back-off, graceful termination, and the status it reports.
//! It wakes on a new version of the pod, a container exit, a back-off expiry, a probe
//! result ([`super::probes`]), or a periodic resync (which also refreshes
//! configMap/secret volumes).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

mod adopt;
mod probing;
mod start;
mod stop;

use stop::{cgroup_oom_killed, read_termination_message};

use super::backoff::{self, Backoff};
use super::hooks;
use super::image;
use super::probes::{self, named_ports, ProbeMsg};
use super::spec::{self, SpecContext};
use super::status::{self, restart_policy, ContainerStatus, PodView, State, Terminated};
use super::volumes::{self, host_network, Objects, PodVolumes};
use super::PodContext;
use crate::agent::layout;
use crate::agent::logger::LoggerConfig;
use crate::agent::runtime::{ContainerInfo, Namespace, NewContainer, TaskStatus};

/// How often a quiet pod is looked at again (volume contents, lost events).
const RESYNC: Duration = Duration::from_secs(10);
/// Retry delay after a setup error (volume, config, runtime).
const RETRY: Duration = Duration::from_secs(2);

/// One container slot of the pod (init or app).
struct Slot {
    init: bool,
    spec: Container,
    status: ContainerStatus,
    /// containerd id of the current (or last) attempt.
    id: Option<String>,
    started: Option<Instant>,
    backoff: Backoff,
    pull_backoff: Backoff,
    /// A run is in flight (its waiter will report the exit).
    live: bool,
    /// Our end of the stdin FIFO of a `stdin` + `tty` container.
    stdin: Option<std::fs::File>,
    /// What the probes last said about the current run (`None`: nothing yet).
    health: Option<probes::Health>,
}

impl Slot {
    fn new(init: bool, spec: &Container) -> Slot {
        Slot {
            init,
            status: ContainerStatus::new(&spec.name, spec.image.as_deref().unwrap_or_default()),
            spec: spec.clone(),
            id: None,
            started: None,
            backoff: Backoff::default(),
            pull_backoff: Backoff::default(),
            live: false,
            stdin: None,
            health: None,
        }
    }
}

/// A container run that ended.
struct ExitMsg {
    id: String,
    code: i64,
    at: String,
}

pub struct Worker {
    ctx: Arc<PodContext>,
    pod: Pod,
    uid: String,
    ns: String,
    name: String,
    slots: Vec<Slot>,
    netns: Option<PathBuf>,
    /// The pod's address on the pod network, once its sandbox is up.
    pod_ip: Option<String>,
    volumes: Option<PodVolumes>,
    objects: Objects,
    start_time: String,
    previous: Value,
    last_posted: Option<Value>,
    exits_tx: mpsc::UnboundedSender<ExitMsg>,
    exits_rx: mpsc::UnboundedReceiver<ExitMsg>,
    /// The pod's probes (only for pods that have some).
    prober: Option<probes::Prober>,
    probe_tx: mpsc::UnboundedSender<ProbeMsg>,
    probe_rx: mpsc::UnboundedReceiver<ProbeMsg>,
}

fn meta(pod: &Pod) -> (String, String, String) {
    let m = &pod.metadata;
    (
        m.uid.clone().unwrap_or_default(),
        m.namespace.clone().unwrap_or_else(|| "default".into()),
        m.name.clone().unwrap_or_default(),
    )
}

fn now() -> String {
    crate::api::meta::now_rfc3339()
}

fn ts(t: Option<jiff::Timestamp>) -> String {
    t.map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(now)
}

impl Worker {
    /// A worker for `pod`; `existing` are the pod's containers found in containerd.
    pub fn new(ctx: Arc<PodContext>, pod: Pod, existing: Vec<ContainerInfo>) -> Worker {
        let (uid, ns, name) = meta(&pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let mut slots: Vec<Slot> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| Slot::new(true, c))
            .collect();
        slots.extend(spec.containers.iter().map(|c| Slot::new(false, c)));
        let previous = serde_json::to_value(&pod.status).unwrap_or(Value::Null);
        let start_time = previous["startTime"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(now);
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let mut w = Worker {
            ctx,
            pod,
            uid,
            ns,
            name,
            slots,
            netns: None,
            pod_ip: None,
            volumes: None,
            objects: Objects::default(),
            start_time,
            previous,
            last_posted: None,
            exits_tx,
            exits_rx,
            prober: None,
            probe_tx,
            probe_rx,
        };
        w.adopt(existing);
        w
    }

    fn spawn_waiters(&self, ids: Vec<String>) {
        for id in ids {
            self.spawn_waiter(id);
        }
    }

    fn spawn_waiter(&self, id: String) {
        let runtime = self.ctx.runtime.clone();
        let tx = self.exits_tx.clone();
        tokio::spawn(async move {
            let (code, at) = match runtime.wait(&id).await {
                Ok(exit) => (exit.code as i64, ts(exit.at)),
                Err(e) => {
                    tracing::debug!(%id, error = %e, "wait failed");
                    (137, now())
                }
            };
            let _ = tx.send(ExitMsg { id, code, at });
        });
    }

    /// Runs the pod until it is deleted and cleaned up.
    pub async fn run(mut self, mut updates: watch::Receiver<Option<Pod>>) {
        loop {
            let current = updates.borrow_and_update().clone();
            let Some(pod) = current else {
                // Gone from the API (deleted with grace 0, or while we were away).
                self.terminate(Some(Duration::from_secs(2))).await;
                self.cleanup().await;
                return;
            };
            self.pod = pod;
            if self.pod.metadata.deletion_timestamp.is_some() {
                let grace = self
                    .pod
                    .metadata
                    .deletion_grace_period_seconds
                    .map(|s| Duration::from_secs(s.max(0) as u64));
                self.terminate(grace).await;
                self.cleanup().await;
                self.post_status().await;
                self.delete_object().await;
                return;
            }
            let wake = self.sync().await;
            self.sync_probes();
            self.post_status().await;
            let sleep = wake
                .map(|w| w.saturating_duration_since(Instant::now()))
                .unwrap_or(RESYNC)
                .min(RESYNC);
            let deadline = tokio::time::Instant::now() + sleep;
            loop {
                tokio::select! {
                    r = updates.changed() => {
                        if r.is_err() {
                            return; // the manager is shutting down: leave containers running
                        }
                        // Our own status writes come back as updates; like the kubelet,
                        // only a change of what the pod asks for triggers a sync.
                        let new = updates.borrow().clone();
                        match new {
                            Some(p) if !wants_sync(&self.pod, &p) => self.pod = p,
                            _ => break,
                        }
                    }
                    Some(exit) = self.exits_rx.recv() => {
                        self.on_exit(exit);
                        break;
                    }
                    Some(msg) = self.probe_rx.recv() => {
                        // Readiness is posted at once: endpoints follow it.
                        if self.on_probe(msg) {
                            self.post_status().await;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
    }

    fn on_exit(&mut self, exit: ExitMsg) {
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| s.id.as_deref() == Some(&exit.id))
        else {
            return;
        };
        slot.live = false;
        let started_at = match &slot.status.state {
            State::Running { started_at } => started_at.clone(),
            _ => exit.at.clone(),
        };
        let oom = exit.code == 137 && cgroup_oom_killed(&self.uid, &slot.spec.name);
        tracing::info!(pod = %self.name, container = %slot.spec.name, code = exit.code, "container exited");
        slot.status.state = State::Terminated(Terminated {
            exit_code: exit.code,
            reason: status::termination_reason(exit.code, oom).into(),
            message: read_termination_message(&self.ctx, &self.uid, &slot.spec),
            started_at,
            finished_at: exit.at,
            container_id: format!("containerd://{}", exit.id),
        });
        // The finished task's shim is not needed any more; the container record stays
        // (the kubelet keeps the last dead container).
        let rt = self.ctx.runtime.clone();
        let finished = exit.id.clone();
        tokio::spawn(async move {
            let _ = rt.delete_task(&finished).await;
        });
        let ran = slot.started.map(|s| s.elapsed());
        let policy = restart_policy(&self.pod);
        let failed = exit.code != 0;
        let restarts = slot.init && failed && policy != "Never"
            || !slot.init && (policy == "Always" || policy == "OnFailure" && failed);
        if restarts {
            slot.backoff.failed(Instant::now(), ran);
        }
    }

    /// One pass towards the spec. Returns when it wants to be woken up.
    async fn sync(&mut self) -> Option<Instant> {
        if matches!(self.phase().as_str(), "Succeeded" | "Failed") {
            return None;
        }
        if let Err(e) = self.ensure_sandbox().await {
            tracing::warn!(pod = %self.name, error = %e, "pod sandbox setup failed");
            self.ctx
                .event(&self.pod, "Warning", "FailedCreatePodSandBox", &e);
            return Some(Instant::now() + RETRY);
        }
        if let Err(e) = self.ensure_volumes().await {
            self.ctx.event(&self.pod, "Warning", "FailedMount", &e);
            return Some(Instant::now() + RETRY);
        }
        let policy = restart_policy(&self.pod).to_string();
        let mut wake: Option<Instant> = None;
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
            }
        };
        // Init containers, one at a time, each to success.
        let n_init = self.slots.iter().filter(|s| s.init).count();
        for i in 0..n_init {
            let slot = &self.slots[i];
            if slot.status.succeeded() {
                continue;
            }
            if slot.live {
                return wake;
            }
            let failed_before =
                matches!(&slot.status.state, State::Terminated(t) if t.exit_code != 0);
            if failed_before && policy == "Never" {
                return None;
            }
            earliest(self.start_or_wait(i).await);
            return wake;
        }
        for i in n_init..self.slots.len() {
            let slot = &self.slots[i];
            if slot.live {
                continue;
            }
            let must_run = match &slot.status.state {
                State::Terminated(t) => {
                    policy == "Always" || policy == "OnFailure" && t.exit_code != 0
                }
                State::Waiting { .. } => slot.status.last.is_none() || policy != "Never",
                State::Running { .. } => false,
            };
            if must_run {
                earliest(self.start_or_wait(i).await);
            }
        }
        wake
    }

    /// Starts slot `i` unless its back-off holds it; returns the back-off's end.
    async fn start_or_wait(&mut self, i: usize) -> Option<Instant> {
        let now_i = Instant::now();
        let (uid, ns, name) = (self.uid.clone(), self.ns.clone(), self.name.clone());
        let slot = &mut self.slots[i];
        if slot.backoff.waiting(now_i) {
            if let State::Terminated(t) = &slot.status.state {
                slot.status.last = Some(t.clone());
            }
            let message = backoff::crash_loop_message(
                slot.backoff.delay(),
                &slot.spec.name,
                &name,
                &ns,
                &uid,
            );
            if !matches!(&slot.status.state, State::Waiting { reason, .. } if reason == "CrashLoopBackOff")
            {
                self.ctx.event(
                    &self.pod,
                    "Warning",
                    "BackOff",
                    &format!(
                        "Back-off restarting failed container {} in pod {name}_{ns}({uid})",
                        slot.spec.name
                    ),
                );
            }
            let slot = &mut self.slots[i];
            slot.status.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(message),
            };
            return slot.backoff.until();
        }
        if slot.pull_backoff.waiting(now_i) {
            if let State::Waiting { reason, .. } = &mut slot.status.state {
                if reason == "ErrImagePull" {
                    *reason = "ImagePullBackOff".into();
                }
            }
            return slot.pull_backoff.until();
        }
        match self.start(i).await {
            Ok(()) => None,
            Err(wake) => wake,
        }
    }

    fn phase(&self) -> String {
        let (init, app) = self.split();
        let view = self.view(&init, &app, "");
        status::phase(&view).to_string()
    }

    fn split(&self) -> (Vec<ContainerStatus>, Vec<ContainerStatus>) {
        let init = self
            .slots
            .iter()
            .filter(|s| s.init)
            .map(|s| s.status.clone())
            .collect();
        let app = self
            .slots
            .iter()
            .filter(|s| !s.init)
            .map(probing::shown_status)
            .collect();
        (init, app)
    }

    fn view<'a>(
        &'a self,
        init: &'a [ContainerStatus],
        app: &'a [ContainerStatus],
        now: &'a str,
    ) -> PodView<'a> {
        PodView {
            pod: &self.pod,
            init,
            app,
            sandbox_ready: self.netns.is_some() || host_network(&self.pod),
            host_ip: &self.ctx.node_ip,
            pod_ips: if host_network(&self.pod) {
                std::slice::from_ref(&self.ctx.node_ip)
            } else {
                self.pod_ip.as_slice()
            },
            start_time: &self.start_time,
            previous: &self.previous,
            now,
        }
    }

    /// Sends the status when it differs from what was last sent.
    async fn post_status(&mut self) {
        let (init, app) = self.split();
        let now = now();
        let status = status::render(&self.view(&init, &app, &now));
        if self.last_posted.as_ref() == Some(&status) {
            return;
        }
        let path = format!("/api/v1/namespaces/{}/pods/{}/status", self.ns, self.name);
        let patch = json!({"metadata": {"uid": self.uid}, "status": status});
        match self
            .ctx
            .client
            .patch::<Value>(&path, crate::agent::client::PatchType::Merge, &patch)
            .await
        {
            Ok(_) => {
                self.previous = status.clone();
                self.last_posted = Some(status);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "cannot update pod status"),
        }
    }
}

/// Whether a new version of the pod changes anything the agent acts on (spec,
/// deletion, labels and annotations for the downward API), as opposed to status only.
fn wants_sync(old: &Pod, new: &Pod) -> bool {
    let (o, n) = (&old.metadata, &new.metadata);
    old.spec != new.spec
        || o.deletion_timestamp != n.deletion_timestamp
        || o.deletion_grace_period_seconds != n.deletion_grace_period_seconds
        || o.labels != n.labels
        || o.annotations != n.annotations
}
