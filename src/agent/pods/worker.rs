//! One pod's life on this node. A worker task per pod owns everything about it: the
//! network namespace, volumes, its containers in containerd (adopted after an agent
//! restart), restarts with back-off, graceful termination, and the status it reports.
//! It wakes on a new version of the pod, a container exit, a back-off expiry, or a
//! periodic resync (which also refreshes configMap/secret volumes).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::backoff::{self, Backoff};
use super::hooks;
use super::image;
use super::spec::{self, SpecContext};
use super::status::{self, ContainerStatus, PodView, State, Terminated};
use super::volumes::{self, Objects, PodVolumes};
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
    volumes: Option<PodVolumes>,
    objects: Objects,
    start_time: String,
    previous: Value,
    last_posted: Option<Value>,
    exits_tx: mpsc::UnboundedSender<ExitMsg>,
    exits_rx: mpsc::UnboundedReceiver<ExitMsg>,
}

fn meta(pod: &Pod) -> (String, String, String) {
    let m = &pod.metadata;
    (
        m.uid.clone().unwrap_or_default(),
        m.namespace.clone().unwrap_or_else(|| "default".into()),
        m.name.clone().unwrap_or_default(),
    )
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
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
        let mut w = Worker {
            ctx,
            pod,
            uid,
            ns,
            name,
            slots,
            netns: None,
            volumes: None,
            objects: Objects::default(),
            start_time,
            previous,
            last_posted: None,
            exits_tx,
            exits_rx,
        };
        w.adopt(existing);
        w
    }

    /// Takes over containers a previous agent started: the newest attempt of each
    /// container becomes the slot's current run; a live one keeps running untouched.
    fn adopt(&mut self, existing: Vec<ContainerInfo>) {
        let mut waiters = Vec::new();
        for slot in &mut self.slots {
            let kind = if slot.init { "init" } else { "app" };
            let newest = existing
                .iter()
                .filter(|c| {
                    c.labels.get(layout::LABEL_CONTAINER_NAME) == Some(&slot.spec.name)
                        && c.labels
                            .get(layout::LABEL_CONTAINER_KIND)
                            .map(String::as_str)
                            == Some(kind)
                })
                .max_by_key(|c| attempt_of(c));
            let Some(c) = newest else { continue };
            let attempt = attempt_of(c);
            let cid = format!("containerd://{}", c.id);
            let old = previous_container(&self.previous, &slot.spec.name, slot.init);
            let same_run = old["containerID"].as_str() == Some(cid.as_str());
            slot.status.restart_count = attempt;
            slot.status.container_id = Some(cid.clone());
            slot.status.image_id = old["imageID"].as_str().unwrap_or_default().to_string();
            if same_run || old["restartCount"].as_u64() == Some(attempt.into()) {
                slot.status.last = terminated_from_json(&old["lastState"]["terminated"]);
            }
            slot.id = Some(c.id.clone());
            let started_at = old["state"]["running"]["startedAt"]
                .as_str()
                .or(old["state"]["terminated"]["startedAt"].as_str())
                .filter(|_| same_run)
                .map(str::to_string)
                .unwrap_or_else(|| ts(c.created_at));
            match &c.task {
                Some(t) if t.status != TaskStatus::Stopped => {
                    slot.status.state = State::Running { started_at };
                    slot.started = Some(Instant::now());
                    slot.live = true;
                    waiters.push(c.id.clone());
                    tracing::info!(pod = %self.name, container = %slot.spec.name, "adopted running container");
                }
                None if same_run && old["state"]["terminated"].is_object() => {
                    if let Some(t) = terminated_from_json(&old["state"]["terminated"]) {
                        slot.status.state = State::Terminated(t);
                    }
                }
                t => {
                    let code = t.as_ref().and_then(|t| t.exit_code).unwrap_or(0) as i64;
                    slot.status.state = State::Terminated(Terminated {
                        exit_code: code,
                        reason: status::termination_reason(code, false).into(),
                        message: None,
                        started_at,
                        finished_at: ts(t.as_ref().and_then(|t| t.exited_at)),
                        container_id: cid,
                    });
                }
            }
        }
        self.spawn_waiters(waiters);
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

    /// Creates and starts the next attempt of slot `i`.
    async fn start(&mut self, i: usize) -> Result<(), Option<Instant>> {
        let ctx = self.ctx.clone();
        let spec = self.slots[i].spec.clone();
        let first_run = self.slots[i].id.is_none();
        let image = match image::ensure(&ctx, &self.pod, &spec).await {
            Ok((config, pulled)) => {
                let slot = &mut self.slots[i];
                slot.pull_backoff.reset();
                slot.status.image_id = config.id.clone();
                if !pulled && first_run {
                    ctx.event(
                        &self.pod,
                        "Normal",
                        "Pulled",
                        &format!(
                            "Container image \"{}\" already present on machine",
                            spec.image.as_deref().unwrap_or_default()
                        ),
                    );
                }
                config
            }
            Err(f) => {
                let slot = &mut self.slots[i];
                // Unlike a crash, a failed pull always waits before the next try.
                let now = Instant::now();
                slot.pull_backoff.failed(now, None);
                if !slot.pull_backoff.waiting(now) {
                    slot.pull_backoff.failed(now, None);
                }
                ctx.event(
                    &self.pod,
                    "Warning",
                    "Failed",
                    &format!(
                        "Failed to pull image \"{}\": {}",
                        spec.image.as_deref().unwrap_or_default(),
                        f.message
                    ),
                );
                slot.status.state = State::Waiting {
                    reason: f.reason.into(),
                    message: Some(f.message),
                };
                return Err(slot.pull_backoff.until());
            }
        };
        let network = match &self.netns {
            Some(p) => Namespace::Path(p.clone()),
            None => Namespace::Host,
        };
        let facts = ctx.node_facts(&self.pod);
        let Some(volumes) = self.volumes.as_ref() else {
            return Err(Some(Instant::now() + RETRY));
        };
        let sctx = SpecContext {
            network,
            volumes,
            objects: &self.objects,
            node: &facts,
            cgroup_parent: format!("/k3rs/{}", self.uid),
        };
        let built = spec::container_spec(&self.pod, &spec, &image, &sctx);
        let slot = &mut self.slots[i];
        let mut cspec = match built {
            Ok(s) => s,
            Err(e) => {
                slot.status.state = State::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(e.to_string()),
                };
                ctx.event(&self.pod, "Warning", "Failed", &format!("Error: {e}"));
                return Err(Some(Instant::now() + RETRY));
            }
        };
        let attempt = if first_run {
            slot.status.restart_count
        } else {
            slot.status.restart_count + 1
        };
        let id = layout::container_id(&self.uid, &spec.name, attempt);
        let log_dir = layout::pod_log_dir(&ctx.log_dir, &self.ns, &self.name, &self.uid);
        let log_path = layout::container_log_path(&log_dir, &spec.name, attempt);
        if let Some(parent) = log_path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        cspec
            .annotations
            .insert("io.kubernetes.pod.name".into(), self.name.clone());
        let mut labels = HashMap::new();
        for (k, v) in [
            (layout::LABEL_POD_NAMESPACE, self.ns.clone()),
            (layout::LABEL_POD_NAME, self.name.clone()),
            (layout::LABEL_POD_UID, self.uid.clone()),
            (layout::LABEL_CONTAINER_NAME, spec.name.clone()),
            (layout::LABEL_RESTART_COUNT, attempt.to_string()),
            (
                layout::LABEL_CONTAINER_KIND,
                if slot.init { "init" } else { "app" }.to_string(),
            ),
            (
                layout::LABEL_LOG_PATH,
                log_path.to_string_lossy().into_owned(),
            ),
            (
                layout::LABEL_NETNS,
                self.netns
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        ] {
            labels.insert(k.to_string(), v);
        }
        if spec.tty.unwrap_or(false) {
            labels.insert(layout::LABEL_TTY.to_string(), "true".into());
        }
        // A leftover of this attempt (agent crashed between create and start) goes first.
        let _ = ctx.runtime.remove(&id).await;
        let new = NewContainer {
            id: id.clone(),
            image: image.name.clone(),
            spec: cspec,
            labels,
        };
        let result = async {
            ctx.runtime.create(&new).await?;
            ctx.runtime.start(&id, &LoggerConfig::new(&log_path)).await
        }
        .await;
        let slot = &mut self.slots[i];
        if let Err(e) = result {
            let _ = ctx.runtime.remove(&id).await;
            tracing::warn!(pod = %self.name, container = %spec.name, error = %e, "cannot start container");
            ctx.event(&self.pod, "Warning", "Failed", &format!("Error: {e}"));
            slot.status.state = State::Waiting {
                reason: "RunContainerError".into(),
                message: Some(e.to_string()),
            };
            slot.backoff.failed(Instant::now(), None);
            return Err(slot.backoff.until().or(Some(Instant::now() + RETRY)));
        }
        // Like the kubelet, keep the last dead run (for `logs --previous`) and remove
        // the one before it, with its log.
        slot.id = Some(id.clone());
        if attempt >= 2 {
            let older = layout::container_id(&self.uid, &spec.name, attempt - 2);
            let rt = ctx.runtime.clone();
            tokio::spawn(async move {
                let _ = rt.remove(&older).await;
            });
        }
        if let State::Terminated(t) = &slot.status.state {
            slot.status.last = Some(t.clone());
        }
        if attempt >= 2 {
            let _ = std::fs::remove_file(layout::container_log_path(
                &log_dir,
                &spec.name,
                attempt - 2,
            ));
        }
        slot.status.restart_count = attempt;
        slot.status.container_id = Some(format!("containerd://{id}"));
        slot.status.state = State::Running { started_at: now() };
        slot.started = Some(Instant::now());
        slot.live = true;
        tracing::info!(pod = %format!("{}/{}", self.ns, self.name), container = %spec.name, attempt, "container started");
        ctx.event(
            &self.pod,
            "Normal",
            "Created",
            &format!("Created container: {}", spec.name),
        );
        ctx.event(
            &self.pod,
            "Normal",
            "Started",
            &format!("Started container {}", spec.name),
        );
        self.spawn_waiter(id.clone());
        if let Some(hook) = spec.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let ports = named_ports(&spec);
            if let Err(e) = hooks::run(&ctx.runtime, &id, hook, self.netns.clone(), &ports).await {
                // Like the kubelet: the container is killed and restarted per policy.
                tracing::warn!(pod = %self.name, container = %spec.name, error = %e, "postStart hook failed");
                ctx.event(
                    &self.pod,
                    "Warning",
                    "FailedPostStartHook",
                    &format!("PostStartHook failed: {e}"),
                );
                let _ = ctx.runtime.kill(&id, libc::SIGKILL as u32, true).await;
            }
        }
        Ok(())
    }

    async fn ensure_sandbox(&mut self) -> Result<(), String> {
        if host_network(&self.pod) || self.netns.is_some() {
            return Ok(());
        }
        let dir = self.ctx.netns_dir.clone();
        let uid = self.uid.clone();
        let path = tokio::task::spawn_blocking(move || crate::agent::netns::create(&dir, &uid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.netns = Some(path);
        Ok(())
    }

    async fn ensure_volumes(&mut self) -> Result<(), String> {
        let refs = volumes::references(&self.pod);
        let mut objects = Objects::default();
        for name in &refs.config_maps {
            let path = format!("/api/v1/namespaces/{}/configmaps/{name}", self.ns);
            match self.ctx.client.get(&path).await {
                Ok(Some(cm)) => {
                    objects.config_maps.insert(name.clone(), cm);
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        for name in &refs.secrets {
            let path = format!("/api/v1/namespaces/{}/secrets/{name}", self.ns);
            match self.ctx.client.get(&path).await {
                Ok(Some(s)) => {
                    objects.secrets.insert(name.clone(), s);
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let pod_dir = layout::pod_dir(&self.ctx.agent_dir, &self.uid);
        let facts = self.ctx.node_facts(&self.pod);
        let pod = self.pod.clone();
        let objects_for_prepare = std::mem::take(&mut objects);
        let (result, objects) = tokio::task::spawn_blocking(move || {
            let r = volumes::prepare(&pod_dir, &pod, &objects_for_prepare, &facts);
            (r, objects_for_prepare)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.objects = objects;
        match result {
            Ok(v) => {
                self.volumes = Some(v);
                Ok(())
            }
            Err(e) => {
                for slot in &mut self.slots {
                    if slot.id.is_none() {
                        slot.status.state = State::Waiting {
                            reason: "ContainerCreating".into(),
                            message: None,
                        };
                    }
                }
                Err(e.to_string())
            }
        }
    }

    /// Stops every running container: SIGTERM (the image's stop signal), then SIGKILL
    /// once `grace` (default: the pod's terminationGracePeriodSeconds) is over.
    async fn terminate(&mut self, grace: Option<Duration>) {
        let grace = grace.unwrap_or_else(|| {
            Duration::from_secs(
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
                    .max(0) as u64,
            )
        });
        let mut stops = Vec::new();
        for slot in &self.slots {
            let Some(id) = slot.id.clone() else { continue };
            if !slot.live {
                continue;
            }
            self.ctx.event(
                &self.pod,
                "Normal",
                "Killing",
                &format!("Stopping container {}", slot.spec.name),
            );
            let rt = self.ctx.runtime.clone();
            let pre_stop = slot
                .spec
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.clone());
            let ports = named_ports(&slot.spec);
            let netns = self.netns.clone();
            let ctx = self.ctx.clone();
            let pod = self.pod.clone();
            let name = slot.spec.name.clone();
            stops.push(tokio::spawn(async move {
                // preStop runs first and counts against the grace period.
                let started = std::time::Instant::now();
                if let Some(hook) = pre_stop {
                    match tokio::time::timeout(grace, hooks::run(&rt, &id, &hook, netns, &ports)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => ctx.event(&pod, "Warning", "FailedPreStopHook", &format!("PreStopHook failed: {e}")),
                        Err(_) => tracing::info!(container = %name, "preStop hook did not finish within the grace period"),
                    }
                }
                let left = grace.saturating_sub(started.elapsed()).max(Duration::from_secs(2).min(grace));
                let r = rt.stop(&id, libc::SIGTERM as u32, left).await;
                (id, r)
            }));
        }
        for s in stops {
            if let Ok((id, r)) = s.await {
                let (code, at) = match r {
                    Ok(Some(exit)) => (exit.code as i64, ts(exit.at)),
                    Ok(None) => (0, now()),
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "cannot stop container");
                        (137, now())
                    }
                };
                self.on_exit(ExitMsg { id, code, at });
            }
        }
        // Drain the waiters' reports of the same exits.
        while self.exits_rx.try_recv().is_ok() {}
        for slot in &mut self.slots {
            slot.live = false;
            if let State::Waiting { .. } = slot.status.state {
                if slot.status.last.is_none() {
                    continue;
                }
            }
        }
    }

    /// Removes containers, volumes, the namespace, logs and cgroups of the pod.
    async fn cleanup(&mut self) {
        let mut ids: Vec<String> = self.slots.iter().filter_map(|s| s.id.clone()).collect();
        match self.ctx.runtime.list().await {
            Ok(all) => ids.extend(
                all.into_iter()
                    .filter(|c| c.labels.get(layout::LABEL_POD_UID) == Some(&self.uid))
                    .map(|c| c.id),
            ),
            Err(e) => tracing::warn!(error = %e, "cannot list containers for cleanup"),
        }
        ids.sort();
        ids.dedup();
        for id in &ids {
            if let Err(e) = self.ctx.runtime.remove(id).await {
                tracing::warn!(%id, error = %e, "cannot remove container");
            }
        }
        self.ctx
            .cleanup_pod(&self.uid, Some((&self.ns, &self.name)))
            .await;
        self.netns = None;
        tracing::info!(pod = %format!("{}/{}", self.ns, self.name), "pod cleaned up");
    }

    async fn delete_object(&self) {
        let path = format!("/api/v1/namespaces/{}/pods/{}", self.ns, self.name);
        let options = json!({
            "kind": "DeleteOptions", "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        });
        if let Err(e) = self.ctx.client.delete(&path, &options).await {
            if !e.is_conflict() {
                tracing::warn!(pod = %self.name, error = %e, "cannot remove the pod object");
            }
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
            .map(|s| s.status.clone())
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
                &[]
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

/// The container's named ports (for hooks and probes that name a port).
fn named_ports(c: &Container) -> Vec<(String, u16)> {
    c.ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect()
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

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn attempt_of(c: &ContainerInfo) -> u32 {
    c.labels
        .get(layout::LABEL_RESTART_COUNT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

fn previous_container<'a>(status: &'a Value, name: &str, init: bool) -> &'a Value {
    let key = if init {
        "initContainerStatuses"
    } else {
        "containerStatuses"
    };
    status[key]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn terminated_from_json(v: &Value) -> Option<Terminated> {
    v.is_object().then(|| Terminated {
        exit_code: v["exitCode"].as_i64().unwrap_or(0),
        reason: v["reason"].as_str().unwrap_or_default().to_string(),
        message: v["message"].as_str().map(str::to_string),
        started_at: v["startedAt"].as_str().unwrap_or_default().to_string(),
        finished_at: v["finishedAt"].as_str().unwrap_or_default().to_string(),
        container_id: v["containerID"].as_str().unwrap_or_default().to_string(),
    })
}

/// Whether the kernel's OOM killer hit the container's cgroup (v1 memory.oom_control's
/// oom_kill counter, v2 memory.events' oom_kill).
fn cgroup_oom_killed(pod_uid: &str, container: &str) -> bool {
    for path in [
        format!("/sys/fs/cgroup/memory/k3rs/{pod_uid}/{container}/memory.oom_control"),
        format!("/sys/fs/cgroup/k3rs/{pod_uid}/{container}/memory.events"),
    ] {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0)
                    > 0
            });
        }
    }
    false
}

/// The container's termination message (terminationMessagePath), at most 4 KiB.
fn read_termination_message(ctx: &PodContext, uid: &str, c: &Container) -> Option<String> {
    let pod_dir = layout::pod_dir(&ctx.agent_dir, uid);
    let path = spec::termination_message_path(&pod_dir, &c.name);
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)])
        .trim_end()
        .to_string();
    (!text.is_empty()).then_some(text)
}
