//! Finding a pod's container attempts in containerd by the labels the pod worker sets
//! ([`crate::agent::layout`]): every attempt of `(namespace, pod, container)`, the
//! newest (highest restartCount) and the previous one, with upstream kubelet's error
//! wording when something is missing.

use crate::agent::layout::{
    LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_RESTART_COUNT,
};
use crate::agent::runtime::{ContainerInfo, Runtime, TaskStatus};

use super::KubeletError;

/// Which attempt of a container a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Newest,
    /// The attempt before the newest (`kubectl logs --previous`).
    Previous,
}

/// The restart count label of a container (0 when missing or unreadable).
pub fn attempt(c: &ContainerInfo) -> u32 {
    c.labels
        .get(LABEL_RESTART_COUNT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether the container's main process is (still) running.
pub fn is_running(c: &ContainerInfo) -> bool {
    matches!(
        c.task.as_ref().map(|t| t.status),
        Some(TaskStatus::Running) | Some(TaskStatus::Paused) | Some(TaskStatus::Created)
    )
}

/// From a full listing: the attempts of one container, oldest first; `Err` with
/// upstream's 404 wording when the pod or the container is unknown.
pub fn select(
    all: Vec<ContainerInfo>,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<Vec<ContainerInfo>, KubeletError> {
    let label = |c: &ContainerInfo, k: &str| c.labels.get(k).cloned().unwrap_or_default();
    let of_pod: Vec<ContainerInfo> = all
        .into_iter()
        .filter(|c| label(c, LABEL_POD_NAMESPACE) == namespace && label(c, LABEL_POD_NAME) == pod)
        .collect();
    if of_pod.is_empty() {
        return Err(KubeletError::not_found(format!(
            "pod {pod:?} does not exist"
        )));
    }
    let Some(name) = container else {
        return Ok(of_pod);
    };
    let mut attempts: Vec<ContainerInfo> = of_pod
        .into_iter()
        .filter(|c| label(c, LABEL_CONTAINER_NAME) == name)
        .collect();
    if attempts.is_empty() {
        return Err(KubeletError::not_found(format!(
            "container {name:?} not found in pod {pod:?}"
        )));
    }
    attempts.sort_by_key(attempt);
    Ok(attempts)
}

/// One attempt of a container.
pub async fn find(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
    which: Which,
) -> Result<ContainerInfo, KubeletError> {
    let mut attempts = select(runtime.list().await?, namespace, pod, Some(container))?;
    match which {
        Which::Newest => attempts
            .pop()
            .ok_or_else(|| KubeletError::not_found(format!("container {container:?} not found"))),
        Which::Previous => {
            attempts.pop();
            attempts.pop().ok_or_else(|| {
                KubeletError::bad_request(format!(
                    "previous terminated container {container:?} in pod {pod:?} not found"
                ))
            })
        }
    }
}

/// The newest attempt, which must be running (exec, attach).
pub async fn find_running(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<ContainerInfo, KubeletError> {
    let c = find(runtime, namespace, pod, container, Which::Newest).await?;
    if !is_running(&c) {
        return Err(KubeletError::bad_request(format!(
            "container {container:?} in pod {pod:?} is not running"
        )));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn info(id: &str, ns: &str, pod: &str, name: &str, attempt: &str) -> ContainerInfo {
        let labels: BTreeMap<String, String> = [
            (LABEL_POD_NAMESPACE, ns),
            (LABEL_POD_NAME, pod),
            (LABEL_CONTAINER_NAME, name),
            (LABEL_RESTART_COUNT, attempt),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        ContainerInfo {
            id: id.into(),
            image: String::new(),
            labels,
            created_at: None,
            task: None,
        }
    }

    #[test]
    fn attempts_sort_by_restart_count_and_errors_say_what_is_missing() {
        let all = vec![
            info("a10", "default", "web", "app", "10"),
            info("a2", "default", "web", "app", "2"),
            info("s0", "default", "web", "side", "0"),
            info("o0", "other", "web", "app", "0"),
        ];
        let got = select(all.clone(), "default", "web", Some("app")).expect("attempts");
        let ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, vec!["a2", "a10"]);
        let e = select(all.clone(), "default", "nope", Some("app")).expect_err("no pod");
        assert_eq!(e.to_string(), "pod \"nope\" does not exist");
        assert_eq!(e.status(), http::StatusCode::NOT_FOUND);
        let e = select(all, "default", "web", Some("db")).expect_err("no container");
        assert_eq!(e.to_string(), "container \"db\" not found in pod \"web\"");
    }
}
