//! The pure rules of the Job controller, kept apart from its I/O so they can be tested
//! alone: completion-index math (`status.completedIndexes` and which indexes still need a
//! pod), podFailurePolicy matching, the pod-failure back-off, and building a Job's pod.

use super::owned::{controller_ref, from_template, set_annotation, set_label};
use crate::api::meta;
use crate::api::validation::{
    CONTROLLER_UID_LABEL, JOB_NAME_LABEL, LEGACY_CONTROLLER_UID_LABEL, LEGACY_JOB_NAME_LABEL,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The annotation (and label) carrying an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable an Indexed Job's containers get the index in.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Upstream's initial delay before a failed pod is replaced (doubles per failure).
const BACKOFF_BASE_SECS: i64 = 10;
/// Upstream's cap on that delay.
const BACKOFF_MAX_SECS: i64 = 360;

/// The completion index of a pod, if it has a valid one.
pub fn pod_index(pod: &Value) -> Option<i64> {
    pod["metadata"]["annotations"][COMPLETION_INDEX]
        .as_str()
        .and_then(|s| s.parse().ok())
        .filter(|i: &i64| *i >= 0)
}

/// Renders a set of indexes as upstream does: runs of three or more as `a-b`,
/// everything else comma-separated (`1,3-5,7,8`).
pub fn format_indexes(set: &BTreeSet<i64>) -> String {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &i in set {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|&(a, b)| match b - a {
            0 => a.to_string(),
            1 => format!("{a},{b}"),
            _ => format!("{a}-{b}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `status.completedIndexes` back (invalid parts are skipped).
pub fn parse_indexes(s: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<i64>().ok()),
        }
    }
    out
}

/// The lowest `count` indexes in `0..completions` that neither succeeded nor have an
/// active pod.
pub fn missing_indexes(
    completions: i64,
    succeeded: &BTreeSet<i64>,
    active: &BTreeSet<i64>,
    count: usize,
) -> Vec<i64> {
    (0..completions)
        .filter(|i| !succeeded.contains(i) && !active.contains(i))
        .take(count)
        .collect()
}

/// What a podFailurePolicy rule says about a failed pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureAction {
    /// Fail the whole Job at once (the message says why).
    FailJob(String),
    /// Do not count the failure against backoffLimit.
    Ignore,
    /// Count it (the default without a matching rule).
    Count,
}

/// Applies `spec.podFailurePolicy` to a failed pod: the first rule that matches decides.
pub fn failure_action(policy: &Value, pod: &Value) -> FailureAction {
    let Some(rules) = policy["rules"].as_array() else {
        return FailureAction::Count;
    };
    let pod_ref = format!("{}/{}", meta::namespace(pod), meta::name(pod));
    for (i, rule) in rules.iter().enumerate() {
        let action = rule["action"].as_str().unwrap_or("Count");
        let reason = if let Some(codes) = rule.get("onExitCodes").filter(|c| c.is_object()) {
            exit_code_match(codes, pod).map(|(c, code)| {
                format!("Container {c} for pod {pod_ref} failed with exit code {code} matching {action} rule at index {i}")
            })
        } else {
            rule["onPodConditions"].as_array().and_then(|pats| {
                pats.iter().find_map(|p| {
                    let t = p["type"].as_str().unwrap_or("");
                    let want = p["status"].as_str().unwrap_or("True");
                    let has = pod["status"]["conditions"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == want));
                    has.then(|| {
                        format!(
                            "Pod {pod_ref} has condition {t} matching {action} rule at index {i}"
                        )
                    })
                })
            })
        };
        if let Some(msg) = reason {
            return match action {
                "FailJob" => FailureAction::FailJob(msg),
                "Ignore" => FailureAction::Ignore,
                _ => FailureAction::Count,
            };
        }
    }
    FailureAction::Count
}

/// The first terminated container whose exit code matches `onExitCodes`.
fn exit_code_match(codes: &Value, pod: &Value) -> Option<(String, i64)> {
    let only = codes["containerName"].as_str();
    let values: Vec<i64> = codes["values"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let not_in = codes["operator"] == "NotIn";
    let statuses = ["initContainerStatuses", "containerStatuses"];
    statuses
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .filter(|s| only.is_none_or(|n| s["name"] == n))
        .find_map(|s| {
            let code = s["state"]["terminated"]["exitCode"].as_i64()?;
            // Upstream: a container that exited 0 never matches NotIn.
            let hit = if not_in {
                code != 0 && !values.contains(&code)
            } else {
                values.contains(&code)
            };
            hit.then(|| (s["name"].as_str().unwrap_or("").to_string(), code))
        })
}

/// When the last failure happened: the latest `finishedAt` of the pods' containers.
pub fn last_failure(failed: &[&Value]) -> Option<i64> {
    failed
        .iter()
        .flat_map(|p| {
            p["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(|s| s["state"]["terminated"]["finishedAt"].as_str())
        .filter_map(super::owned::parse_time)
        .max()
}

/// Seconds to wait after the last failure before a replacement pod (10 s doubling per
/// counted failure, at most 6 minutes, as upstream).
pub fn backoff_delay(failures: i64) -> i64 {
    if failures <= 0 {
        return 0;
    }
    let shift = (failures - 1).min(10) as u32;
    (BACKOFF_BASE_SECS << shift).min(BACKOFF_MAX_SECS)
}

/// A pod for `job` (with its completion index for Indexed Jobs).
pub fn new_pod(job: &Value, index: Option<i64>) -> Value {
    let name = meta::name(job);
    let ns = meta::namespace(job);
    let mut pod = from_template(
        &job["spec"]["template"],
        "v1",
        "Pod",
        ns,
        controller_ref(job, "batch/v1", "Job"),
    );
    let generate = match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    };
    meta::metadata_mut(&mut pod).insert("generateName".into(), json!(generate));
    if job["spec"]["manualSelector"].as_bool() != Some(true) {
        let uid = meta::uid(job);
        for (k, v) in [
            (LEGACY_CONTROLLER_UID_LABEL, uid),
            (CONTROLLER_UID_LABEL, uid),
            (LEGACY_JOB_NAME_LABEL, name),
            (JOB_NAME_LABEL, name),
        ] {
            if pod["metadata"]["labels"][k].is_null() {
                set_label(&mut pod, k, v);
            }
        }
    }
    if let Some(i) = index {
        set_annotation(&mut pod, COMPLETION_INDEX, &i.to_string());
        set_label(&mut pod, COMPLETION_INDEX, &i.to_string());
        if pod["spec"]["hostname"].is_null() {
            pod["spec"]["hostname"] = json!(format!("{name}-{i}"));
        }
        let env = json!({
            "name": COMPLETION_INDEX_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}},
        });
        for list in ["initContainers", "containers"] {
            let Some(cs) = pod["spec"][list].as_array_mut() else {
                continue;
            };
            for c in cs {
                let has = c["env"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["name"] == COMPLETION_INDEX_ENV));
                if has {
                    continue;
                }
                match c["env"].as_array_mut() {
                    Some(e) => e.push(env.clone()),
                    None => c["env"] = json!([env.clone()]),
                }
            }
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_render_like_upstream() {
        let set: BTreeSet<i64> = [0, 1, 3, 4, 5, 7].into_iter().collect();
        assert_eq!(format_indexes(&set), "0,1,3-5,7");
        assert_eq!(parse_indexes("0,1,3-5,7"), set);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn missing_indexes_skip_done_and_running() {
        let done: BTreeSet<i64> = [0, 2].into_iter().collect();
        let running: BTreeSet<i64> = [1].into_iter().collect();
        assert_eq!(missing_indexes(6, &done, &running, 2), vec![3, 4]);
        assert_eq!(missing_indexes(3, &done, &running, 5), Vec::<i64>::new());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_delay(0), 0);
        assert_eq!(backoff_delay(1), 10);
        assert_eq!(backoff_delay(3), 40);
        assert_eq!(backoff_delay(20), 360);
    }

    fn failed_pod(code: i64) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Failed",
            "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": code}}}]}})
    }

    #[test]
    fn pod_failure_policy_matches_exit_codes_and_conditions() {
        let policy = json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]});
        assert_eq!(
            failure_action(&policy, &failed_pod(42)),
            FailureAction::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0"
                    .into()
            )
        );
        assert_eq!(
            failure_action(&policy, &failed_pod(1)),
            FailureAction::Count
        );
        let mut disrupted = failed_pod(137);
        disrupted["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True"}]);
        assert_eq!(failure_action(&policy, &disrupted), FailureAction::Ignore);
        let not_in = json!({"rules": [{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [1]}}]});
        assert_eq!(
            failure_action(&not_in, &failed_pod(0)),
            FailureAction::Count
        );
        assert!(matches!(
            failure_action(&not_in, &failed_pod(2)),
            FailureAction::FailJob(_)
        ));
    }

    #[test]
    fn indexed_pods_get_index_hostname_and_env() {
        let job = json!({"metadata": {"name": "j", "namespace": "d", "uid": "u"},
            "spec": {"template": {"metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let pod = new_pod(&job, Some(3));
        assert_eq!(pod["metadata"]["generateName"], "j-3-");
        assert_eq!(pod["metadata"]["annotations"][COMPLETION_INDEX], "3");
        assert_eq!(pod["metadata"]["labels"]["job-name"], "j");
        assert_eq!(pod["metadata"]["labels"][CONTROLLER_UID_LABEL], "u");
        assert_eq!(pod["spec"]["hostname"], "j-3");
        assert_eq!(
            pod["spec"]["containers"][0]["env"][0]["name"],
            COMPLETION_INDEX_ENV
        );
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    }
}
