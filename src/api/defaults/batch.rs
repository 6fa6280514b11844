//! batch/v1 defaults (SetDefaults_Job, SetDefaults_CronJob) and the selector and template
//! labels the job registry strategy generates on create.

use serde_json::{Map, Value};

use super::pod::pod_template;
use super::{child, each, present, set_ptr, set_str, spec};
use crate::api::validation::{
    CONTROLLER_UID_LABEL, JOB_NAME_LABEL, LEGACY_CONTROLLER_UID_LABEL, LEGACY_JOB_NAME_LABEL,
};

/// SetDefaults_Job: completions and parallelism 1 when both are unset, parallelism 1,
/// backoffLimit 6 (unbounded with a per-index limit), completionMode NonIndexed, suspend
/// false, podReplacementPolicy, manualSelector false, and the job's labels from its
/// template when it has none.
pub fn job(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let template_labels = root
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.is_object())
        .cloned();
    if let Some(labels) = template_labels {
        if root
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
        {
            if let Some(meta) = child(root, "metadata") {
                meta.insert("labels".into(), labels);
            }
        }
    }
    let Some(s) = child(root, "spec") else { return };
    let unset = |s: &Map<String, Value>, k: &str| matches!(s.get(k), None | Some(Value::Null));
    if unset(s, "completions") && unset(s, "parallelism") {
        s.insert("completions".into(), Value::from(1));
        s.insert("parallelism".into(), Value::from(1));
    }
    set_ptr(s, "parallelism", Value::from(1));
    let backoff = if unset(s, "backoffLimitPerIndex") {
        6
    } else {
        i64::from(i32::MAX)
    };
    set_ptr(s, "backoffLimit", Value::from(backoff));
    set_ptr(s, "completionMode", Value::from("NonIndexed"));
    set_ptr(s, "suspend", Value::Bool(false));
    let replacement = if unset(s, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set_ptr(s, "podReplacementPolicy", Value::from(replacement));
    set_ptr(s, "manualSelector", Value::Bool(false));
    if let Some(policy) = present(s, "podFailurePolicy") {
        for rule in each(policy, "rules") {
            for pattern in each(rule, "onPodConditions") {
                set_str(pattern, "status", "True");
            }
        }
    }
    if let Some(t) = child(s, "template") {
        pod_template(t);
    }
}

/// The job strategy's selector generation (run on create, after the object has its uid and
/// after defaulting): unless `spec.manualSelector` is true, the template gets the
/// `controller-uid`/`job-name` labels (legacy and `batch.kubernetes.io/` forms) where the user
/// did not set them, and the selector matches on `batch.kubernetes.io/controller-uid`.
pub fn job_selector(obj: &mut Value, uid: &str) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(s) = child(root, "spec") else { return };
    if s.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    if let Some(labels) = child(s, "template")
        .and_then(|t| child(t, "metadata"))
        .and_then(|m| child(m, "labels"))
    {
        for (key, value) in [
            (LEGACY_JOB_NAME_LABEL, name.as_str()),
            (JOB_NAME_LABEL, name.as_str()),
            (LEGACY_CONTROLLER_UID_LABEL, uid),
            (CONTROLLER_UID_LABEL, uid),
        ] {
            labels.entry(key).or_insert_with(|| Value::from(value));
        }
    }
    if let Some(match_labels) = child(s, "selector").and_then(|sel| child(sel, "matchLabels")) {
        match_labels
            .entry(CONTROLLER_UID_LABEL)
            .or_insert_with(|| Value::from(uid));
    }
}

/// SetDefaults_CronJob: concurrencyPolicy Allow, suspend false, history limits 3 and 1, and
/// pod template defaults inside the job template (the job template itself gets no Job
/// defaults upstream).
pub fn cron_job(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_str(s, "concurrencyPolicy", "Allow");
    set_ptr(s, "suspend", Value::Bool(false));
    set_ptr(s, "successfulJobsHistoryLimit", Value::from(3));
    set_ptr(s, "failedJobsHistoryLimit", Value::from(1));
    if let Some(t) = child(s, "jobTemplate")
        .and_then(|jt| child(jt, "spec"))
        .and_then(|js| child(js, "template"))
    {
        pod_template(t);
    }
}
