//! Adoption: after an agent restart, a pod's worker takes over the containers the
//! previous agent started (found by their labels), keeping running ones untouched and
//! their start times and restart counts as the API last saw them.

use serde_json::Value;

use super::*;

impl Worker {
    /// Takes over containers a previous agent started: the newest attempt of each
    /// container becomes the slot's current run; a live one keeps running untouched.
    pub(super) fn adopt(&mut self, existing: Vec<ContainerInfo>) {
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
}

pub(super) fn attempt_of(c: &ContainerInfo) -> u32 {
    c.labels
        .get(layout::LABEL_RESTART_COUNT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

pub(super) fn previous_container<'a>(status: &'a Value, name: &str, init: bool) -> &'a Value {
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

pub(super) fn terminated_from_json(v: &Value) -> Option<Terminated> {
    v.is_object().then(|| Terminated {
        exit_code: v["exitCode"].as_i64().unwrap_or(0),
        reason: v["reason"].as_str().unwrap_or_default().to_string(),
        message: v["message"].as_str().map(str::to_string),
        started_at: v["startedAt"].as_str().unwrap_or_default().to_string(),
        finished_at: v["finishedAt"].as_str().unwrap_or_default().to_string(),
        container_id: v["containerID"].as_str().unwrap_or_default().to_string(),
    })
}
