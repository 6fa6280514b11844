//! The per-pod probe loop: one schedule for all probes of the pod's container runs,
//! probe runs in flight as futures in one `JoinSet`, results through the thresholds
//! into [`ProbeMsg`]s. The gating follows the kubelet's workers: nothing before
//! initialDelaySeconds; liveness and readiness wait until the startup probe succeeded,
//! which then stops; after a liveness or startup kill a run is on hold (not probed)
//! until a new run replaces it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::events::Recorder;
use super::net::{self, PodNet};
use super::{exec, grpc, http, Health, Kind, Outcome, ProbeMsg, Targets, Timing, Tracker};
use crate::agent::pods::PodContext;
use crate::agent::runtime::Runtime;

/// One probe of one run.
struct Slot {
    kind: Kind,
    probe: Arc<Probe>,
    timing: Timing,
    tracker: Tracker,
    next: Instant,
    busy: bool,
}

/// One container run and its probes.
struct Run {
    container: Container,
    id: String,
    slots: Vec<Slot>,
    /// The container's named ports (for probes that name theirs).
    ports: Arc<[(String, u16)]>,
    /// Killed for a failed liveness/startup probe: no more probing.
    hold: bool,
    /// What the worker was last told.
    told: Health,
}

impl Run {
    fn new(container: Container, id: String, started: std::time::Instant) -> Run {
        let start = Instant::from_std(started);
        let mut slots = Vec::new();
        for (kind, probe) in [
            (Kind::Startup, &container.startup_probe),
            (Kind::Liveness, &container.liveness_probe),
            (Kind::Readiness, &container.readiness_probe),
        ] {
            if let Some(probe) = probe {
                let timing = Timing::of(probe, kind);
                slots.push(Slot {
                    kind,
                    probe: Arc::new(probe.clone()),
                    next: start + timing.initial_delay,
                    timing,
                    tracker: Tracker::new(kind),
                    busy: false,
                });
            }
        }
        let told = Health::initial(&container, &id);
        Run {
            ports: super::named_ports(&container).into(),
            container,
            id,
            slots,
            hold: false,
            told,
        }
    }

    fn started(&self) -> bool {
        self.slots
            .iter()
            .find(|s| s.kind == Kind::Startup)
            .is_none_or(|s| s.tracker.result() == Some(true))
    }

    fn health(&self) -> Health {
        let started = self.started();
        let ready = started
            && self
                .slots
                .iter()
                .find(|s| s.kind == Kind::Readiness)
                .is_none_or(|s| s.tracker.result() == Some(true));
        Health {
            container: self.container.name.clone(),
            id: self.id.clone(),
            started,
            ready,
        }
    }

    /// Whether slot `i` is to be probed at all now.
    fn active(&self, i: usize) -> bool {
        if self.hold {
            return false;
        }
        let started = self.started();
        match self.slots[i].kind {
            Kind::Startup => !started,
            _ => started,
        }
    }
}

type Done = (String, String, Kind, Outcome);

/// Runs the probes of `pod` until the worker drops its [`super::Prober`].
pub(super) async fn run(
    ctx: Arc<PodContext>,
    pod: Pod,
    mut targets: watch::Receiver<Targets>,
    out: mpsc::UnboundedSender<ProbeMsg>,
) {
    let mut runs: Vec<Run> = Vec::new();
    let mut net = PodNet::default();
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let mut events = Recorder::new(ctx.clone(), pod.clone());
    loop {
        let due = runs
            .iter()
            .flat_map(|r| (0..r.slots.len()).map(move |i| (r, i)))
            .filter(|(r, i)| r.active(*i) && !r.slots[*i].busy)
            .map(|(r, i)| r.slots[i].next)
            .min();
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
                let t = targets.borrow_and_update().clone();
                net = t.net;
                runs.retain(|r| t.runs.iter().any(|n| n.id == r.id));
                for target in t.runs {
                    if !runs.iter().any(|r| r.id == target.id) {
                        runs.push(Run::new(target.container, target.id, target.started));
                    }
                }
            }
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Ok(done) = done {
                    if let Some(msg) = finish(&mut events, &pod, &mut runs, done) {
                        let _ = out.send(msg);
                    }
                }
                for r in &mut runs {
                    let h = r.health();
                    if h != r.told {
                        r.told = h.clone();
                        let _ = out.send(ProbeMsg::Health(h));
                    }
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or(far)) => {
                let now = Instant::now();
                for r in &mut runs {
                    for i in 0..r.slots.len() {
                        if !r.active(i) || r.slots[i].busy || r.slots[i].next > now {
                            continue;
                        }
                        let slot = &mut r.slots[i];
                        slot.busy = true;
                        let job = Job {
                            runtime: ctx.runtime.clone(),
                            net: net.clone(),
                            probe: slot.probe.clone(),
                            id: r.id.clone(),
                            ports: r.ports.clone(),
                            timeout: slot.timing.timeout,
                        };
                        let (name, id, kind) = (r.container.name.clone(), r.id.clone(), slot.kind);
                        in_flight.spawn(async move { (name, id, kind, job.execute().await) });
                    }
                }
            }
        }
    }
}

/// Applies one probe result to its run; a restart order when the run must die.
fn finish(events: &mut Recorder, pod: &Pod, runs: &mut [Run], done: Done) -> Option<ProbeMsg> {
    let (container, id, kind, outcome) = done;
    let run = runs.iter_mut().find(|r| r.id == id)?;
    let slot = run.slots.iter_mut().find(|s| s.kind == kind)?;
    slot.busy = false;
    slot.next = Instant::now() + slot.timing.period;
    let label = kind.label();
    let success = match outcome {
        Outcome::Success => true,
        Outcome::Warning(m) => {
            events.warn(
                &container,
                kind,
                "ProbeWarning",
                format!("{label} probe warning: {m}"),
            );
            true
        }
        Outcome::Failure(m) => {
            tracing::debug!(pod = ?pod.metadata.name, %container, probe = label, output = %m, "probe failed");
            events.warn(
                &container,
                kind,
                "Unhealthy",
                format!("{label} probe failed: {m}"),
            );
            false
        }
        Outcome::Error(m) => {
            events.warn(
                &container,
                kind,
                "Unhealthy",
                format!("{label} probe errored and resulted in unknown state: {m}"),
            );
            return None;
        }
    };
    let changed = slot.tracker.observe(success, &slot.timing);
    let killed = changed
        && slot.tracker.result() == Some(false)
        && matches!(kind, Kind::Liveness | Kind::Startup);
    if !killed {
        return None;
    }
    run.hold = true;
    tracing::info!(pod = ?pod.metadata.name, %container, probe = label, "probe failed past its threshold; restarting the container");
    Some(ProbeMsg::Restart {
        container,
        id,
        kind,
        grace: slot.timing.termination_grace,
    })
}

/// One probe run, with everything it needs owned.
struct Job {
    runtime: Runtime,
    net: PodNet,
    probe: Arc<Probe>,
    id: String,
    ports: Arc<[(String, u16)]>,
    timeout: Duration,
}

impl Job {
    async fn execute(self) -> Outcome {
        let p = &self.probe;
        if let Some(e) = &p.exec {
            let command = e.command.clone().unwrap_or_default();
            return exec::probe_exec(&self.runtime, &self.id, &command, self.timeout).await;
        }
        if let Some(h) = &p.http_get {
            let port = match self.port(&h.port) {
                Ok(p) => p,
                Err(e) => return Outcome::Error(e),
            };
            return http::probe_http(&self.net, h, port, self.timeout).await;
        }
        if let Some(t) = &p.tcp_socket {
            let port = match self.port(&t.port) {
                Ok(p) => p,
                Err(e) => return Outcome::Error(e),
            };
            let host = t
                .host
                .as_deref()
                .filter(|h| !h.is_empty())
                .map_or_else(|| self.net.default_host().to_string(), str::to_string);
            let addr = match net::resolve(&host, port).await {
                Ok(a) => a,
                Err(e) => return Outcome::Failure(e),
            };
            // An explicit host is dialled from the node, like the kubelet does.
            let from = if t.host.as_deref().is_some_and(|h| !h.is_empty()) {
                PodNet::default()
            } else {
                self.net.clone()
            };
            return net::probe_tcp(&from, addr, self.timeout).await;
        }
        if let Some(g) = &p.grpc {
            let Ok(port) = u16::try_from(g.port) else {
                return Outcome::Error(format!("invalid port number: {}", g.port));
            };
            let service = g.service.as_deref().unwrap_or_default();
            return grpc::probe_grpc(&self.net, port, service, self.timeout).await;
        }
        Outcome::Error("missing probe handler".into())
    }

    /// A port by number or by the container's port name.
    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid port number: {n}")),
            IntOrString::String(name) => match name.parse::<u16>() {
                Ok(n) => Ok(n),
                Err(_) => self
                    .ports
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| *p)
                    .ok_or_else(|| format!("couldn't find port: {name:?}")),
            },
        }
    }
}
