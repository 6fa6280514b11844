//! The worker's side of the probes: which runs the pod's [`probes::Prober`] watches,
//! what its results do (a run's `started`/`ready` in the status; a liveness or startup
//! failure kills the run, which then restarts per the restart policy), and the
//! container statuses shown with them.

use super::*;

/// Slot `s`'s status with `started` and `ready` from the probes of its current run.
pub(super) fn shown_status(s: &Slot) -> ContainerStatus {
    let mut status = s.status.clone();
    let running = status.running();
    let health = match (&s.health, &s.id) {
        (Some(h), Some(id)) if &h.id == id => h.clone(),
        _ => probes::Health::initial(&s.spec, s.id.as_deref().unwrap_or_default()),
    };
    status.started = running && health.started;
    status.ready = running && health.ready;
    status
}

impl Worker {
    /// Tells the prober (started on first need) which container runs are up now.
    pub(super) fn sync_probes(&mut self) {
        if !probes::has_probes(&self.pod) {
            return;
        }
        let runs = self
            .slots
            .iter()
            .filter(|s| !s.init && s.live && s.status.running())
            .filter_map(|s| {
                Some(probes::Target {
                    container: s.spec.clone(),
                    id: s.id.clone()?,
                    started: s.started?,
                })
            })
            .collect();
        let net = probes::PodNet {
            netns: self.netns.clone(),
            ip: if host_network(&self.pod) {
                self.ctx.node_ip.parse().ok()
            } else {
                self.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
            },
        };
        let prober = self.prober.get_or_insert_with(|| {
            probes::Prober::spawn(self.ctx.clone(), self.pod.clone(), self.probe_tx.clone())
        });
        prober.set(probes::Targets { net, runs });
    }

    /// Applies a probe report; whether the status changed (and must be posted).
    pub(super) fn on_probe(&mut self, msg: ProbeMsg) -> bool {
        match msg {
            ProbeMsg::Health(h) => {
                let Some(slot) = self
                    .slots
                    .iter_mut()
                    .find(|s| !s.init && s.id.as_deref() == Some(h.id.as_str()))
                else {
                    return false;
                };
                if slot.health.as_ref() == Some(&h) {
                    return false;
                }
                tracing::debug!(pod = %self.name, container = %h.container, started = h.started, ready = h.ready, "probe state changed");
                slot.health = Some(h);
                true
            }
            ProbeMsg::Restart {
                container,
                id,
                kind,
                grace,
            } => {
                self.kill_for_probe(&container, &id, kind, grace);
                false
            }
        }
    }

    /// Kills run `id` of `container` after its `kind` probe failed; its exit then goes
    /// through the usual restart path (policy and back-off).
    fn kill_for_probe(
        &mut self,
        container: &str,
        id: &str,
        kind: probes::Kind,
        grace: Option<Duration>,
    ) {
        let Some(slot) = self
            .slots
            .iter()
            .find(|s| !s.init && s.live && s.id.as_deref() == Some(id))
        else {
            return;
        };
        self.ctx.event(
            &self.pod,
            "Normal",
            "Killing",
            &format!(
                "Container {container} failed {} probe, will be restarted",
                kind.lower()
            ),
        );
        let grace = grace.unwrap_or_else(|| self.grace_period());
        let job = self.stop_job(slot, id.to_string(), grace);
        tokio::spawn(job.run());
    }
}
