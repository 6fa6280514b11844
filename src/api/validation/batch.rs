//! Jobs and CronJobs (k8s.io/kubernetes pkg/apis/batch/validation, as the job registry
//! strategy calls it).

use serde_json::{Map, Value};

use super::super::selector::LabelSelector;
use super::super::status::FieldError;
use super::cron;
use super::field::{dedup, get, has, immutable, int, obj, same, str_of, Path};
use super::meta::{label_selector, non_negative_at};
use super::names::is_dns1123_label;
use super::pod::template;

/// Template labels the job strategy generates, and the one its selector uses.
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
/// See [`LEGACY_JOB_NAME_LABEL`].
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// See [`LEGACY_JOB_NAME_LABEL`].
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
/// See [`LEGACY_JOB_NAME_LABEL`].
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";

fn template_labels(spec: &Value) -> Option<&Map<String, Value>> {
    get(spec, "template")
        .and_then(|t| get(t, "metadata"))
        .and_then(|m| obj(m, "labels"))
}

/// `ValidateHasLabel` on the pod template.
fn has_label(spec: &Value, key: &str, want: &str, errs: &mut Vec<FieldError>) {
    let path = Path::new("spec")
        .child("template")
        .child("metadata")
        .child("labels")
        .key(key);
    let labels = template_labels(spec);
    match labels.and_then(|l| l.get(key)) {
        None => errs.push(FieldError::required_msg(path, &format!("must be '{want}'"))),
        Some(v) if v.as_str() != Some(want) => errs.push(FieldError::invalid(
            path,
            &labels.map_or(Value::Null, |l| Value::Object(l.clone())),
            &format!("must be '{want}'"),
        )),
        Some(_) => {}
    }
}

/// `validateJobSpec`: the rules shared by Jobs and CronJob job templates.
fn job_spec(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        errs.extend(non_negative_at(spec, f, &path.child(f)));
    }
    if has(spec, "maxFailedIndexes") && !has(spec, "backoffLimitPerIndex") {
        errs.push(FieldError::required_msg(
            path.child("backoffLimitPerIndex"),
            "when maxFailedIndexes is specified",
        ));
    }
    let mode = get(spec, "completionMode").and_then(Value::as_str);
    if let Some(m) = mode {
        if m != "NonIndexed" && m != "Indexed" {
            errs.push(FieldError::not_supported(
                path.child("completionMode"),
                &Value::from(m),
                &["NonIndexed", "Indexed"],
            ));
        }
    }
    if mode == Some("Indexed") {
        if !has(spec, "completions") {
            errs.push(FieldError::required_msg(
                path.child("completions"),
                "when completion mode is Indexed",
            ));
        }
        if let Some(p) = int(spec, "parallelism").filter(|p| *p > 100_000) {
            errs.push(FieldError::invalid(
                path.child("parallelism"),
                &Value::from(p),
                "must be less than or equal to 100000 when completion mode is Indexed",
            ));
        }
    } else {
        for f in ["backoffLimitPerIndex", "maxFailedIndexes"] {
            if let Some(v) = get(spec, f).filter(|v| !v.is_null()) {
                errs.push(FieldError::invalid(
                    path.child(f),
                    v,
                    "requires indexed completion mode",
                ));
            }
        }
    }
    if let Some(p) = get(spec, "podReplacementPolicy").and_then(Value::as_str) {
        if p != "Failed" && p != "TerminatingOrFailed" {
            errs.push(FieldError::not_supported(
                path.child("podReplacementPolicy"),
                &Value::from(p),
                &["Failed", "TerminatingOrFailed"],
            ));
        }
    }
    let tpath = path.child("template");
    let tmpl = get(spec, "template").filter(|v| !v.is_null());
    errs.extend(template(tmpl, &tpath));
    let rp_path = tpath.child("spec").child("restartPolicy");
    match tmpl
        .and_then(|t| get(t, "spec"))
        .map_or("", |s| str_of(s, "restartPolicy"))
    {
        "Always" | "" => errs.push(FieldError::required_msg(
            rp_path,
            "valid values: \"OnFailure\", \"Never\"",
        )),
        "OnFailure" if has(spec, "podFailurePolicy") => errs.push(FieldError::invalid(
            rp_path,
            &Value::from("OnFailure"),
            "only \"Never\" is supported when podFailurePolicy is specified",
        )),
        "OnFailure" | "Never" => {}
        other => errs.push(FieldError::not_supported(
            rp_path,
            &Value::from(other),
            &["OnFailure", "Never"],
        )),
    }
    errs
}

/// The fields a Job update may not change; the template may change its scheduling
/// directives while the job is suspended and has never started.
fn job_update(spec: &Value, old: &Value) -> Vec<FieldError> {
    let path = Path::new("spec");
    let old_spec = get(old, "spec").unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    let indexed = str_of(spec, "completionMode") == "Indexed";
    if !indexed {
        errs.extend(immutable(
            get(spec, "completions"),
            get(old_spec, "completions"),
            &path.child("completions"),
        ));
    } else if !same(get(spec, "completions"), get(old_spec, "completions")) {
        if let Some(c) = int(spec, "completions") {
            if Some(c) != int(spec, "parallelism") {
                errs.push(FieldError::invalid(
                    path.child("completions"),
                    &Value::from(c),
                    "can only be modified in tandem with spec.parallelism",
                ));
            }
        }
    }
    errs.extend(immutable(
        get(spec, "selector"),
        get(old_spec, "selector"),
        &path.child("selector"),
    ));

    let new_tmpl = get(spec, "template").cloned().unwrap_or(Value::Null);
    let mut old_tmpl = get(old_spec, "template").cloned().unwrap_or(Value::Null);
    let suspended = get(old_spec, "suspend").and_then(Value::as_bool) == Some(true);
    let not_started = get(old, "status")
        .and_then(|s| get(s, "startTime"))
        .is_none_or(Value::is_null);
    if suspended && not_started {
        // Scheduling directives of a job that never ran may still be adjusted.
        if let (Some(o), Some(n)) = (old_tmpl.as_object_mut(), new_tmpl.as_object()) {
            let mut meta = o
                .get("metadata")
                .cloned()
                .unwrap_or(Value::Object(Map::new()));
            if let (Some(m), Some(nm)) = (meta.as_object_mut(), n.get("metadata")) {
                for k in ["labels", "annotations"] {
                    match get(nm, k) {
                        Some(v) => m.insert(k.to_string(), v.clone()),
                        None => m.remove(k),
                    };
                }
            }
            o.insert("metadata".into(), meta);
            let nspec = n.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(Value::Object(os)) = o.get_mut("spec") {
                for k in ["nodeSelector", "tolerations", "schedulingGates"] {
                    match get(&nspec, k) {
                        Some(v) => os.insert(k.to_string(), v.clone()),
                        None => os.remove(k),
                    };
                }
                let node_affinity = get(&nspec, "affinity")
                    .and_then(|a| get(a, "nodeAffinity"))
                    .cloned();
                let aff = os
                    .entry("affinity")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(a) = aff.as_object_mut() {
                    match node_affinity {
                        Some(na) => a.insert("nodeAffinity".into(), na),
                        None => a.remove("nodeAffinity"),
                    };
                }
            }
        }
    }
    errs.extend(immutable(
        Some(&new_tmpl),
        Some(&old_tmpl),
        &path.child("template"),
    ));
    for f in [
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ] {
        errs.extend(immutable(get(spec, f), get(old_spec, f), &path.child(f)));
    }
    errs
}

/// Validates a Job. The generated selector and template labels must already be in place
/// (see `defaults::job_selector`), unless `spec.manualSelector` is true.
pub fn job(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let meta = get(new, "metadata").unwrap_or(&Value::Null);
    let spec = get(new, "spec").unwrap_or(&Value::Null);
    let path = Path::new("spec");
    let (uid, name) = (str_of(meta, "uid"), str_of(meta, "name"));
    let mut errs = Vec::new();

    let manual = get(spec, "manualSelector").and_then(Value::as_bool) == Some(true);
    if !manual && has(spec, "selector") {
        if uid.is_empty() {
            errs.push(FieldError::required("metadata.uid"));
        }
        // Jobs created before the prefixed labels existed keep validating without them.
        let prefixed = old.is_none_or(|o| {
            let l = template_labels(get(o, "spec").unwrap_or(&Value::Null));
            l.is_some_and(|l| {
                l.contains_key(JOB_NAME_LABEL) && l.contains_key(CONTROLLER_UID_LABEL)
            })
        });
        has_label(spec, LEGACY_CONTROLLER_UID_LABEL, uid, &mut errs);
        has_label(spec, LEGACY_JOB_NAME_LABEL, name, &mut errs);
        let mut expected = Map::new();
        if prefixed {
            has_label(spec, CONTROLLER_UID_LABEL, uid, &mut errs);
            has_label(spec, JOB_NAME_LABEL, name, &mut errs);
            expected.insert(CONTROLLER_UID_LABEL.into(), Value::from(uid));
            expected.insert(JOB_NAME_LABEL.into(), Value::from(name));
        }
        expected.insert(LEGACY_CONTROLLER_UID_LABEL.into(), Value::from(uid));
        expected.insert(LEGACY_JOB_NAME_LABEL.into(), Value::from(name));
        let sel = get(spec, "selector").unwrap_or(&Value::Null);
        if LabelSelector::from_json(sel).is_ok_and(|s| !s.matches(Some(&expected))) {
            errs.push(FieldError::invalid(
                path.child("selector"),
                sel,
                "`selector` not auto-generated",
            ));
        }
    }
    if str_of(spec, "completionMode") == "Indexed" {
        if let Some(c) = int(spec, "completions").filter(|c| *c > 0) {
            let host = format!("{name}-{}", c - 1);
            if !is_dns1123_label(&host).is_empty() {
                errs.push(FieldError::invalid(
                    "metadata.name",
                    &Value::from(name),
                    &format!("will not able to create pod with invalid DNS label: {host}"),
                ));
            }
        }
    }

    errs.extend(job_spec(spec, &path));
    let sel_path = path.child("selector");
    match get(spec, "selector").filter(|v| !v.is_null()) {
        None => errs.push(FieldError::required(&sel_path)),
        Some(sel) => {
            errs.extend(label_selector(Some(sel), &sel_path));
            if let Ok(s) = LabelSelector::from_json(sel) {
                if !s.matches(template_labels(spec)) {
                    errs.push(FieldError::invalid(
                        path.child("template").child("metadata").child("labels"),
                        &template_labels(spec).map_or(Value::Null, |l| Value::Object(l.clone())),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    if let Some(old) = old {
        errs.extend(job_update(spec, old));
    }
    dedup(errs)
}

fn time_zone(tz: &Value, path: &Path) -> Vec<FieldError> {
    let Some(s) = tz.as_str() else {
        return Vec::new();
    };
    if s.is_empty() {
        return vec![FieldError::invalid(
            path,
            tz,
            "timeZone must be nil or non-empty string",
        )];
    }
    let part_ok = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'))
    };
    if !s.split('/').all(part_ok) {
        return vec![FieldError::invalid(
            path,
            tz,
            &format!("unknown time zone {s}"),
        )];
    }
    if s.eq_ignore_ascii_case("local") {
        return vec![FieldError::invalid(
            path,
            tz,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        )];
    }
    Vec::new()
}

/// Validates a CronJob: schedule, time zone, concurrency policy, history limits and the job
/// template (whose selector is always generated).
pub fn cron_job(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let spec = get(new, "spec").unwrap_or(&Value::Null);
    let old_spec = old.and_then(|o| get(o, "spec"));
    let path = Path::new("spec");
    let mut errs = Vec::new();

    let schedule = str_of(spec, "schedule");
    let sched_path = path.child("schedule");
    if schedule.is_empty() {
        errs.push(FieldError::required(&sched_path));
    } else {
        if let Err(e) = cron::parse_standard(schedule) {
            errs.push(FieldError::invalid(&sched_path, &Value::from(schedule), &e));
        }
        let allow_tz = old_spec.is_some_and(|o| str_of(o, "schedule").contains("TZ"));
        if schedule.contains("TZ") {
            if !allow_tz {
                errs.push(FieldError::invalid(
                    &sched_path,
                    &Value::from(schedule),
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            } else if has(spec, "timeZone") {
                errs.push(FieldError::invalid(
                    &sched_path,
                    &Value::from(schedule),
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                ));
            }
        }
    }
    errs.extend(non_negative_at(
        spec,
        "startingDeadlineSeconds",
        &path.child("startingDeadlineSeconds"),
    ));
    if old_spec.is_none_or(|o| !same(get(o, "timeZone"), get(spec, "timeZone"))) {
        if let Some(tz) = get(spec, "timeZone") {
            errs.extend(time_zone(tz, &path.child("timeZone")));
        }
    }
    match str_of(spec, "concurrencyPolicy") {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errs.push(FieldError::required(path.child("concurrencyPolicy"))),
        other => errs.push(FieldError::not_supported(
            path.child("concurrencyPolicy"),
            &Value::from(other),
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let jt_spec_path = path.child("jobTemplate").child("spec");
    let jt_spec = get(spec, "jobTemplate")
        .and_then(|t| get(t, "spec"))
        .unwrap_or(&Value::Null);
    errs.extend(job_spec(jt_spec, &jt_spec_path));
    if let Some(sel) = get(jt_spec, "selector").filter(|v| !v.is_null()) {
        errs.push(FieldError::invalid(
            jt_spec_path.child("selector"),
            sel,
            "`selector` will be auto-generated",
        ));
    }
    if get(jt_spec, "manualSelector").and_then(Value::as_bool) == Some(true) {
        errs.push(FieldError::not_supported(
            jt_spec_path.child("manualSelector"),
            &Value::Bool(true),
            &["nil", "false"],
        ));
    }
    for f in ["successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        errs.extend(non_negative_at(spec, f, &path.child(f)));
    }
    if old.is_none() {
        let name = get(new, "metadata").map_or("", |m| str_of(m, "name"));
        if name.len() > 52 {
            errs.push(FieldError::invalid(
                "metadata.name",
                &Value::from(name),
                "must be no more than 52 characters",
            ));
        }
    }
    dedup(errs)
}
