//! Container probes: liveness, readiness and startup, with the exec, httpGet,
//! tcpSocket and grpc actions, run the kubelet's way.
//!
//! A pod with probes gets one [`Prober`]: a single tokio task that keeps every probe of
//! the pod on one schedule (no thread or task per probe; a probe run in flight is a
//! short-lived future). The pod worker tells it which container runs exist
//! ([`Prober::set`]); it reports back over a channel ([`ProbeMsg`]): a run's
//! `started`/`ready` changed (the worker posts the status at once, since endpoints
//! follow readiness), or a liveness/startup probe failed and the run must be killed
//! and restarted per the restart policy. Each failed probe is recorded as an
//! `Unhealthy` event with upstream's wording (`Liveness probe failed: HTTP probe failed
//! with statuscode: 500`), repeats aggregated into one event's count ([`events`]).

pub mod events;
pub mod exec;
pub mod grpc;
pub mod http;
pub mod net;
mod runner;
pub mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::{mpsc, watch};

pub use net::PodNet;
pub use state::{Kind, Timing, Tracker};

use super::PodContext;

/// The result of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Counts as a success, with a warning event (a redirect to another host).
    Warning(String),
    /// The probe failed; the text is the event's message.
    Failure(String),
    /// The probe could not be run (no such container, unknown port name): upstream
    /// records an event and leaves the result as it was.
    Error(String),
}

/// What the prober tells the pod worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeMsg {
    /// The `started`/`ready` of container run `id` changed.
    Health(Health),
    /// A liveness or startup probe of run `id` failed past its threshold: kill it
    /// (the restart policy decides what comes next), with `grace` from the probe's
    /// terminationGracePeriodSeconds when set.
    Restart {
        container: String,
        id: String,
        kind: Kind,
        grace: Option<Duration>,
    },
}

/// What the probes say about one container run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub container: String,
    /// The containerd id of the run.
    pub id: String,
    /// The startup probe succeeded (or there is none).
    pub started: bool,
    /// Started, and the readiness probe succeeds (or there is none).
    pub ready: bool,
}

impl Health {
    /// A run's health before any probe result: started unless it has a startup
    /// probe; ready when started and without a readiness probe.
    pub fn initial(c: &Container, id: &str) -> Health {
        let started = c.startup_probe.is_none();
        Health {
            container: c.name.clone(),
            id: id.to_string(),
            started,
            ready: started && c.readiness_probe.is_none(),
        }
    }
}

/// A running container to probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub container: Container,
    /// The containerd id of this run (a new id is a new run: fresh probe state).
    pub id: String,
    /// When the run started (initialDelaySeconds counts from here).
    pub started: Instant,
}

/// Every running container of the pod, and where the pod's network is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    pub net: PodNet,
    pub runs: Vec<Target>,
}

/// Whether any of the pod's app containers has a probe (only such pods get a prober).
pub fn has_probes(pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| s.containers.iter()).any(|c| {
        c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
    })
}

/// The container's named ports (`ports[].name` to number), for probes and hooks
/// that name a port.
pub fn named_ports(c: &Container) -> Vec<(String, u16)> {
    c.ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect()
}

/// The probes of one pod; dropping it stops them.
pub struct Prober {
    targets: watch::Sender<Targets>,
    task: tokio::task::JoinHandle<()>,
}

impl Prober {
    /// Starts probing for `pod`; results go to `out`.
    pub fn spawn(ctx: Arc<PodContext>, pod: Pod, out: mpsc::UnboundedSender<ProbeMsg>) -> Prober {
        let (targets, rx) = watch::channel(Targets::default());
        let task = tokio::spawn(runner::run(ctx, pod, rx, out));
        Prober { targets, task }
    }

    /// The container runs to probe now (runs no longer listed stop being probed).
    pub fn set(&self, targets: Targets) {
        self.targets.send_if_modified(|t| {
            if *t == targets {
                return false;
            }
            *t = targets;
            true
        });
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}
