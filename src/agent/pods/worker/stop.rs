//! Stopping a pod: preStop hooks and SIGTERM with the grace period, then SIGKILL;
//! removing everything of it from the node; the final deletion of the pod object; and
//! what a finished container leaves to read (OOM kill, termination message).

use super::*;

/// Stopping one container run: its preStop hook, then the stop signal, then SIGKILL
/// when the grace period (which the hook counts against) is over.
pub(super) struct StopJob {
    ctx: Arc<PodContext>,
    pod: Pod,
    id: String,
    name: String,
    pre_stop: Option<k8s_openapi::api::core::v1::LifecycleHandler>,
    ports: Vec<(String, u16)>,
    netns: Option<PathBuf>,
    grace: Duration,
}

impl StopJob {
    /// Runs the stop; the run's id and how it ended.
    pub(super) async fn run(
        self,
    ) -> (
        String,
        Result<Option<crate::agent::runtime::Exit>, crate::agent::runtime::Error>,
    ) {
        let rt = &self.ctx.runtime;
        let started = std::time::Instant::now();
        if let Some(hook) = &self.pre_stop {
            let hook = hooks::run(rt, &self.id, hook, self.netns.clone(), &self.ports);
            match tokio::time::timeout(self.grace, hook).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.ctx.event(
                    &self.pod,
                    "Warning",
                    "FailedPreStopHook",
                    &format!("PreStopHook failed: {e}"),
                ),
                Err(_) => {
                    tracing::info!(container = %self.name, "preStop hook did not finish within the grace period")
                }
            }
        }
        let left = self
            .grace
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(2).min(self.grace));
        let r = rt.stop(&self.id, libc::SIGTERM as u32, left).await;
        (self.id, r)
    }
}

impl Worker {
    /// The pod's terminationGracePeriodSeconds (default 30 s).
    pub(super) fn grace_period(&self) -> Duration {
        Duration::from_secs(
            self.pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64,
        )
    }

    /// The stop of `slot`'s run `id` with `grace`.
    pub(super) fn stop_job(&self, slot: &Slot, id: String, grace: Duration) -> StopJob {
        StopJob {
            ctx: self.ctx.clone(),
            pod: self.pod.clone(),
            id,
            name: slot.spec.name.clone(),
            pre_stop: slot
                .spec
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.clone()),
            ports: named_ports(&slot.spec),
            netns: self.netns.clone(),
            grace,
        }
    }

    /// Stops every running container: SIGTERM (the image's stop signal), then SIGKILL
    /// once `grace` (default: the pod's terminationGracePeriodSeconds) is over.
    pub(super) async fn terminate(&mut self, grace: Option<Duration>) {
        // The probes stop first: a dying container is not probed or restarted.
        self.prober = None;
        let grace = grace.unwrap_or_else(|| self.grace_period());
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
            stops.push(tokio::spawn(self.stop_job(slot, id, grace).run()));
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
    pub(super) async fn cleanup(&mut self) {
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
        self.pod_ip = None;
        tracing::info!(pod = %format!("{}/{}", self.ns, self.name), "pod cleaned up");
    }

    pub(super) async fn delete_object(&self) {
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
}

/// Whether the kernel's OOM killer hit the container's cgroup (v1 memory.oom_control's
/// oom_kill counter, v2 memory.events' oom_kill).
pub(super) fn cgroup_oom_killed(pod_uid: &str, container: &str) -> bool {
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
pub(super) fn read_termination_message(
    ctx: &PodContext,
    uid: &str,
    c: &Container,
) -> Option<String> {
    let pod_dir = layout::pod_dir(&ctx.agent_dir, uid);
    let path = spec::termination_message_path(&pod_dir, &c.name);
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)])
        .trim_end()
        .to_string();
    (!text.is_empty()).then_some(text)
}
