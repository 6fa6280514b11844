//! The pod status the agent reports, computed the kubelet's way from what it knows of
//! each container: phase (upstream's `getPhase` rules), the conditions
//! PodReadyToStartContainers, Initialized, ContainersReady, Ready and PodScheduled (with
//! transition times kept while a condition does not change), container statuses with
//! state, lastState, restartCount, started and ready (from the probes), host and pod
//! IPs, startTime and qosClass.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Map, Value};

/// One container's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated(Terminated),
}

/// How one run of a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i64,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub container_id: String,
}

impl Terminated {
    fn to_json(&self) -> Value {
        let mut t = json!({
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        });
        if let Some(m) = &self.message {
            t["message"] = m.clone().into();
        }
        t
    }
}

/// The reason the kubelet gives a finished container: Completed, OOMKilled or Error.
pub fn termination_reason(exit_code: i64, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// What the agent knows of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// `containerd://<id>` of the current (or last) run.
    pub container_id: Option<String>,
    pub restart_count: u32,
    pub state: State,
    pub last: Option<Terminated>,
    /// Running and past its startup probe (the worker sets it from the probes).
    pub started: bool,
    /// Started and passing its readiness probe (the worker sets it from the probes).
    pub ready: bool,
}

impl ContainerStatus {
    pub fn new(name: &str, image: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            container_id: None,
            restart_count: 0,
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            started: false,
            ready: false,
        }
    }

    pub fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    pub fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }

    fn to_json(&self, ready: bool) -> Value {
        let state = match &self.state {
            State::Waiting { reason, message } => {
                let mut w = json!({ "reason": reason });
                if let Some(m) = message {
                    w["message"] = m.clone().into();
                }
                json!({ "waiting": w })
            }
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated(t) => json!({ "terminated": t.to_json() }),
        };
        let mut c = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": state,
            "lastState": match &self.last {
                Some(t) => json!({ "terminated": t.to_json() }),
                None => json!({}),
            },
        });
        if let Some(id) = &self.container_id {
            c["containerID"] = id.clone().into();
        }
        c
    }
}

/// Everything the status is computed from.
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub init: &'a [ContainerStatus],
    pub app: &'a [ContainerStatus],
    pub sandbox_ready: bool,
    pub host_ip: &'a str,
    pub pod_ips: &'a [String],
    pub start_time: &'a str,
    /// The status currently on the server (for condition transition times).
    pub previous: &'a Value,
    pub now: &'a str,
}

/// The pod's restartPolicy with upstream's default (Always).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Upstream's pod phase rules.
pub fn phase(view: &PodView) -> &'static str {
    let init_done = view.init.iter().all(|c| c.succeeded());
    if !init_done {
        let failed_for_good = restart_policy(view.pod) == "Never"
            && view
                .init
                .iter()
                .any(|c| matches!(&c.state, State::Terminated(t) if t.exit_code != 0));
        return if failed_for_good { "Failed" } else { "Pending" };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in view.app {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } => {
                if c.last.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match restart_policy(view.pod) {
            "Always" => "Running",
            "OnFailure" if stopped == succeeded => "Succeeded",
            "OnFailure" => "Running",
            _ if stopped == succeeded => "Succeeded",
            _ => "Failed",
        };
    }
    "Pending"
}

/// The pod's QoS class from its containers' requests and limits.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all: Vec<_> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.as_ref();
        let requests = r.and_then(|r| r.requests.as_ref());
        let limits = r.and_then(|r| r.limits.as_ref());
        if requests.is_some_and(|m| !m.is_empty()) || limits.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|l| l.get(res)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn condition(
    view: &PodView,
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let old = view.previous["conditions"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["type"] == kind));
    let transition = match old {
        Some(o) if o["status"] == status && o["lastTransitionTime"].is_string() => {
            o["lastTransitionTime"].clone()
        }
        _ => view.now.into(),
    };
    let mut c = Map::new();
    c.insert("type".into(), kind.into());
    c.insert("status".into(), status.into());
    c.insert("lastProbeTime".into(), Value::Null);
    c.insert("lastTransitionTime".into(), transition);
    if let Some(r) = reason {
        c.insert("reason".into(), r.into());
    }
    if let Some(m) = message {
        c.insert("message".into(), m.into());
    }
    Value::Object(c)
}

/// While init containers run, containers not created yet wait with the kubelet's
/// reason PodInitializing rather than ContainerCreating.
fn initializing(c: &ContainerStatus, initialized: bool) -> std::borrow::Cow<'_, ContainerStatus> {
    match &c.state {
        State::Waiting { reason, .. }
            if !initialized && reason == "ContainerCreating" && c.container_id.is_none() =>
        {
            let mut shown = c.clone();
            shown.state = State::Waiting {
                reason: "PodInitializing".into(),
                message: None,
            };
            std::borrow::Cow::Owned(shown)
        }
        _ => std::borrow::Cow::Borrowed(c),
    }
}

/// The whole `status` object.
pub fn render(view: &PodView) -> Value {
    let phase = phase(view);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let incomplete: Vec<&str> = view
        .init
        .iter()
        .filter(|c| !c.succeeded())
        .map(|c| c.name.as_str())
        .collect();
    let unready: Vec<&str> = view
        .app
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let initialized = incomplete.is_empty();
    let ready = unready.is_empty() && initialized && !terminal;
    let (ready_reason, ready_message) = if ready {
        (None, None)
    } else if terminal {
        (Some("PodCompleted"), None)
    } else if !initialized && unready.is_empty() {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: {}",
                list(&unready)
            )),
        )
    };
    let mut conditions = vec![
        condition(
            view,
            "PodReadyToStartContainers",
            view.sandbox_ready,
            None,
            None,
        ),
        condition(
            view,
            "Initialized",
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
            (!initialized)
                .then(|| format!("containers with incomplete status: {}", list(&incomplete))),
        ),
        condition(view, "Ready", ready, ready_reason, ready_message.clone()),
        condition(view, "ContainersReady", ready, ready_reason, ready_message),
    ];
    let scheduled = view.previous["conditions"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["type"] == "PodScheduled"))
        .cloned()
        .unwrap_or_else(|| condition(view, "PodScheduled", true, None, None));
    conditions.push(scheduled);
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "startTime": view.start_time,
        "qosClass": qos_class(view.pod),
        "containerStatuses": view
            .app
            .iter()
            .map(|c| initializing(c, initialized).to_json(c.ready && !terminal))
            .collect::<Vec<_>>(),
    });
    if !view.init.is_empty() {
        status["initContainerStatuses"] = view
            .init
            .iter()
            .map(|c| initializing(c, initialized).to_json(c.succeeded()))
            .collect::<Vec<_>>()
            .into();
    }
    if let Some(ip) = view.pod_ips.first() {
        status["podIP"] = ip.clone().into();
        status["podIPs"] = view
            .pod_ips
            .iter()
            .map(|ip| json!({"ip": ip}))
            .collect::<Vec<_>>()
            .into();
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "busybox"}]},
        }))
        .expect("pod")
    }

    fn terminated(code: i64) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            reason: termination_reason(code, false).into(),
            message: None,
            started_at: "t0".into(),
            finished_at: "t1".into(),
            container_id: "containerd://x".into(),
        })
    }

    fn view<'a>(pod: &'a Pod, app: &'a [ContainerStatus], prev: &'a Value) -> PodView<'a> {
        PodView {
            pod,
            init: &[],
            app,
            sandbox_ready: true,
            host_ip: "10.0.0.1",
            pod_ips: &[],
            start_time: "t0",
            previous: prev,
            now: "t2",
        }
    }

    #[test]
    fn phases_follow_restart_policy() {
        let null = Value::Null;
        let mut c = ContainerStatus::new("a", "busybox");
        let p = pod("Never");
        assert_eq!(phase(&view(&p, std::slice::from_ref(&c), &null)), "Pending");
        c.state = State::Running {
            started_at: "t".into(),
        };
        assert_eq!(phase(&view(&p, std::slice::from_ref(&c), &null)), "Running");
        c.state = terminated(0);
        assert_eq!(
            phase(&view(&p, std::slice::from_ref(&c), &null)),
            "Succeeded"
        );
        c.state = terminated(3);
        assert_eq!(phase(&view(&p, std::slice::from_ref(&c), &null)), "Failed");
        let always = pod("Always");
        assert_eq!(
            phase(&view(&always, std::slice::from_ref(&c), &null)),
            "Running"
        );
        // Crash loop: waiting with a last state counts as stopped, not pending.
        c.last = Some(Terminated {
            exit_code: 1,
            reason: "Error".into(),
            message: None,
            started_at: "a".into(),
            finished_at: "b".into(),
            container_id: "x".into(),
        });
        c.state = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        };
        assert_eq!(
            phase(&view(&always, std::slice::from_ref(&c), &null)),
            "Running"
        );
    }

    #[test]
    fn conditions_keep_transition_times() {
        let p = pod("Always");
        let mut c = ContainerStatus::new("a", "busybox");
        c.state = State::Running {
            started_at: "t".into(),
        };
        (c.started, c.ready) = (true, true);
        let prev = json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "old"}]});
        let s = render(&view(&p, std::slice::from_ref(&c), &prev));
        let ready = s["conditions"]
            .as_array()
            .expect("c")
            .iter()
            .find(|c| c["type"] == "Ready")
            .expect("ready")
            .clone();
        assert_eq!(ready["lastTransitionTime"], "old");
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        assert_eq!(s["qosClass"], "BestEffort");
        c.state = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        (c.started, c.ready) = (false, false);
        let s = render(&view(&p, std::slice::from_ref(&c), &prev));
        let ready = s["conditions"]
            .as_array()
            .expect("c")
            .iter()
            .find(|c| c["type"] == "Ready")
            .expect("ready")
            .clone();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["lastTransitionTime"], "t2");
        assert_eq!(ready["message"], "containers with unready status: [a]");
    }

    #[test]
    fn a_running_but_unready_container_keeps_the_pod_unready() {
        let p = pod("Always");
        let mut c = ContainerStatus::new("web", "busybox");
        c.state = State::Running {
            started_at: "t".into(),
        };
        // Past its startup probe, failing its readiness probe.
        (c.started, c.ready) = (true, false);
        let null = Value::Null;
        let s = render(&view(&p, std::slice::from_ref(&c), &null));
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["started"], true);
        assert_eq!(s["containerStatuses"][0]["ready"], false);
        for kind in ["Ready", "ContainersReady"] {
            let cond = s["conditions"]
                .as_array()
                .expect("conditions")
                .iter()
                .find(|c| c["type"] == kind)
                .expect("condition")
                .clone();
            assert_eq!(cond["status"], "False");
            assert_eq!(cond["reason"], "ContainersNotReady");
            assert_eq!(cond["message"], "containers with unready status: [web]");
        }
    }
}
