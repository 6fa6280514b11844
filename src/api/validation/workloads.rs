//! ReplicationControllers and the apps/v1 workloads (k8s.io/kubernetes
//! pkg/apis/core/validation for RCs, pkg/apis/apps/validation for the rest, plus the
//! selector immutability the apps/v1 registry strategies add on update).

use serde_json::{Map, Value};

use super::super::selector::LabelSelector;
use super::super::status::FieldError;
use super::field::{dedup, get, has, immutable, int, obj, same, str_of, Path};
use super::meta::{annotations, label_selector, labels, non_negative_at};
use super::names::is_valid_percent;
use super::pod::template;

fn spec_of(v: &Value) -> &Value {
    static EMPTY: Value = Value::Null;
    get(v, "spec").unwrap_or(&EMPTY)
}

fn template_labels(tmpl: Option<&Value>) -> Option<&Map<String, Value>> {
    tmpl.and_then(|t| get(t, "metadata"))
        .and_then(|m| obj(m, "labels"))
}

fn labels_value(tmpl: Option<&Value>) -> Value {
    template_labels(tmpl).map_or(Value::Null, |m| Value::Object(m.clone()))
}

fn mismatch(tmpl: Option<&Value>, path: &Path) -> FieldError {
    FieldError::invalid(
        path.child("metadata").child("labels"),
        &labels_value(tmpl),
        "`selector` does not match template `labels`",
    )
}

/// The checks every replicated workload applies to its template beyond the pod spec:
/// restartPolicy Always and no activeDeadlineSeconds.
fn always_restart(tmpl: Option<&Value>, kind: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = tmpl.and_then(|t| get(t, "spec"));
    let rp = spec.map_or("", |s| str_of(s, "restartPolicy"));
    if rp != "Always" {
        errs.push(FieldError::not_supported(
            path.child("spec").child("restartPolicy"),
            &Value::from(rp),
            &["Always"],
        ));
    }
    if spec.is_some_and(|s| has(s, "activeDeadlineSeconds")) {
        errs.push(FieldError::forbidden(
            path.child("spec").child("activeDeadlineSeconds"),
            &format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
    errs
}

/// ValidatePodTemplateSpecForReplicaSet (also used by Deployments): the selector must match
/// the template labels (a missing selector selects nothing, so it never matches).
fn template_for_replica_set(
    spec: &Value,
    selector: Option<&LabelSelector>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let tmpl = get(spec, "template").filter(|v| !v.is_null());
    let matched = match selector {
        Some(sel) => sel.is_empty() || sel.matches(template_labels(tmpl)),
        None => false,
    };
    if !matched {
        errs.push(mismatch(tmpl, path));
    }
    errs.extend(template(tmpl, path));
    errs.extend(always_restart(tmpl, "ReplicaSet", path));
    errs
}

/// The selector rules shared by ReplicaSets and Deployments; returns the parsed selector
/// when it is usable (`None` stands for upstream's "nothing" selector).
fn required_selector(
    spec: &Value,
    empty_msg: &str,
    path: &Path,
    errs: &mut Vec<FieldError>,
) -> Result<Option<LabelSelector>, ()> {
    let sel_path = path.child("selector");
    let Some(sel) = get(spec, "selector").filter(|v| !v.is_null()) else {
        errs.push(FieldError::required(&sel_path));
        return Ok(None);
    };
    errs.extend(label_selector(Some(sel), &sel_path));
    let count = obj(sel, "matchLabels").map_or(0, Map::len)
        + get(sel, "matchExpressions")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
    if count == 0 {
        errs.push(FieldError::invalid(&sel_path, sel, empty_msg));
    }
    match LabelSelector::from_json(sel) {
        Ok(s) => Ok(Some(s)),
        Err(_) => Err(()),
    }
}

fn replica_set_spec(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    errs.extend(non_negative_at(spec, "replicas", &path.child("replicas")));
    errs.extend(non_negative_at(
        spec,
        "minReadySeconds",
        &path.child("minReadySeconds"),
    ));
    match required_selector(
        spec,
        "empty selector is invalid for deployment",
        path,
        &mut errs,
    ) {
        Ok(sel) => errs.extend(template_for_replica_set(
            spec,
            sel.as_ref(),
            &path.child("template"),
        )),
        Err(()) => errs.push(FieldError::invalid(
            path.child("selector"),
            get(spec, "selector").unwrap_or(&Value::Null),
            "invalid label selector",
        )),
    }
    errs
}

fn selector_immutable(new: &Value, old: Option<&Value>) -> Option<FieldError> {
    let old = old?;
    immutable(
        get(spec_of(new), "selector"),
        get(spec_of(old), "selector"),
        &Path::new("spec").child("selector"),
    )
}

/// Validates a ReplicationController (`ValidateReplicationControllerSpec`).
pub fn replication_controller(new: &Value, _old: Option<&Value>) -> Vec<FieldError> {
    let spec = spec_of(new);
    let path = Path::new("spec");
    let mut errs = Vec::new();
    errs.extend(non_negative_at(
        spec,
        "minReadySeconds",
        &path.child("minReadySeconds"),
    ));
    let selector = obj(spec, "selector");
    if selector.is_none_or(Map::is_empty) {
        errs.push(FieldError::required(path.child("selector")));
    }
    errs.extend(non_negative_at(spec, "replicas", &path.child("replicas")));
    let tpath = path.child("template");
    match get(spec, "template").filter(|v| !v.is_null()) {
        None => errs.push(FieldError::required(&tpath)),
        Some(tmpl) => {
            let sel = selector.map(LabelSelector::from_map).unwrap_or_default();
            if !sel.is_empty() && !sel.matches(template_labels(Some(tmpl))) {
                errs.push(mismatch(Some(tmpl), &tpath));
            }
            errs.extend(template(Some(tmpl), &tpath));
            errs.extend(always_restart(Some(tmpl), "ReplicationController", &tpath));
        }
    }
    dedup(errs)
}

/// Validates a ReplicaSet; the selector may not change on update.
pub fn replica_set(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = replica_set_spec(spec_of(new), &Path::new("spec"));
    errs.extend(selector_immutable(new, old));
    dedup(errs)
}

/// An `IntOrString` that must be a non-negative integer or a percentage.
fn int_or_percent(v: Option<&Value>, path: &Path) -> Vec<FieldError> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => is_valid_percent(s)
            .into_iter()
            .map(|m| FieldError::invalid(path, &Value::from(s.as_str()), &m))
            .collect(),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) if n < 0 => vec![FieldError::invalid(
                path,
                &Value::from(n),
                "must be greater than or equal to 0",
            )],
            _ => Vec::new(),
        },
        Some(other) => vec![FieldError::invalid(
            path,
            other,
            "must be an integer or percentage (e.g '5%%')",
        )],
    }
}

/// `getIntOrPercentValue`: the number, or the percentage for a valid percent string.
fn int_or_percent_value(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.strip_suffix('%').unwrap_or(s).parse().unwrap_or(0),
        _ => 0,
    }
}

fn over_100_percent(v: Option<&Value>, path: &Path) -> Option<FieldError> {
    let s = v?.as_str()?;
    if !is_valid_percent(s).is_empty() {
        return None;
    }
    (int_or_percent_value(v) > 100)
        .then(|| FieldError::invalid(path, &Value::from(s), "must not be greater than 100%"))
}

fn deployment_strategy(s: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = Value::Object(Map::new());
    let s = s.filter(|v| !v.is_null()).unwrap_or(&empty);
    let ru = get(s, "rollingUpdate").filter(|v| !v.is_null());
    match str_of(s, "type") {
        "Recreate" => {
            if ru.is_some() {
                errs.push(FieldError::forbidden(
                    path.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match ru {
            None => errs.push(FieldError::required_msg(
                path.child("rollingUpdate"),
                "this should be defaulted and never be nil",
            )),
            Some(ru) => {
                let p = path.child("rollingUpdate");
                let (mu, ms) = (get(ru, "maxUnavailable"), get(ru, "maxSurge"));
                errs.extend(int_or_percent(mu, &p.child("maxUnavailable")));
                errs.extend(int_or_percent(ms, &p.child("maxSurge")));
                if int_or_percent_value(mu) == 0 && int_or_percent_value(ms) == 0 {
                    errs.push(FieldError::invalid(
                        p.child("maxUnavailable"),
                        mu.unwrap_or(&Value::from(0)),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                errs.extend(over_100_percent(mu, &p.child("maxUnavailable")));
            }
        },
        _ => errs.push(FieldError::not_supported(
            path,
            s,
            &["Recreate", "RollingUpdate"],
        )),
    }
    errs
}

/// Validates a Deployment; the selector may not change on update.
pub fn deployment(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let spec = spec_of(new);
    let path = Path::new("spec");
    let mut errs = Vec::new();
    errs.extend(non_negative_at(spec, "replicas", &path.child("replicas")));
    match required_selector(
        spec,
        "empty selector is invalid for deployment",
        &path,
        &mut errs,
    ) {
        Ok(sel) => errs.extend(template_for_replica_set(
            spec,
            sel.as_ref(),
            &path.child("template"),
        )),
        Err(()) => errs.push(FieldError::invalid(
            path.child("selector"),
            get(spec, "selector").unwrap_or(&Value::Null),
            "invalid label selector",
        )),
    }
    errs.extend(deployment_strategy(
        get(spec, "strategy"),
        &path.child("strategy"),
    ));
    errs.extend(non_negative_at(
        spec,
        "minReadySeconds",
        &path.child("minReadySeconds"),
    ));
    errs.extend(non_negative_at(
        spec,
        "revisionHistoryLimit",
        &path.child("revisionHistoryLimit"),
    ));
    if let Some(p) = int(spec, "progressDeadlineSeconds") {
        errs.extend(non_negative_at(
            spec,
            "progressDeadlineSeconds",
            &path.child("progressDeadlineSeconds"),
        ));
        if p <= int(spec, "minReadySeconds").unwrap_or(0) {
            errs.push(FieldError::invalid(
                path.child("progressDeadlineSeconds"),
                &Value::from(p),
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs.extend(selector_immutable(new, old));
    dedup(errs)
}

fn retention_policy(p: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(p) = p.filter(|v| !v.is_null()) else {
        return errs;
    };
    for f in ["whenDeleted", "whenScaled"] {
        let v = str_of(p, f);
        if v != "Retain" && v != "Delete" {
            errs.push(FieldError::not_supported(
                path.child(f),
                &Value::from(v),
                &["Retain", "Delete"],
            ));
        }
    }
    errs
}

fn stateful_set_spec(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match str_of(spec, "podManagementPolicy") {
        "" => errs.push(FieldError::required(path.child("podManagementPolicy"))),
        "OrderedReady" | "Parallel" => {}
        other => errs.push(FieldError::invalid(
            path.child("podManagementPolicy"),
            &Value::from(other),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let empty = Value::Object(Map::new());
    let strategy = get(spec, "updateStrategy")
        .filter(|v| !v.is_null())
        .unwrap_or(&empty);
    let sp = path.child("updateStrategy");
    let ru = get(strategy, "rollingUpdate").filter(|v| !v.is_null());
    match str_of(strategy, "type") {
        "" => errs.push(FieldError::required(&sp)),
        "OnDelete" => {
            if let Some(ru) = ru {
                errs.push(FieldError::invalid(
                    sp.child("rollingUpdate"),
                    ru,
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = ru {
                let rp = sp.child("rollingUpdate");
                errs.extend(non_negative_at(ru, "partition", &rp.child("partition")));
                if let Some(mu) = get(ru, "maxUnavailable").filter(|v| !v.is_null()) {
                    let mp = rp.child("maxUnavailable");
                    errs.extend(int_or_percent(Some(mu), &mp));
                    if int_or_percent_value(Some(mu)) == 0 {
                        errs.push(FieldError::invalid(&mp, mu, "cannot be 0"));
                    }
                    errs.extend(over_100_percent(Some(mu), &mp));
                }
            }
        }
        _ => errs.push(FieldError::invalid(
            &sp,
            strategy,
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    errs.extend(retention_policy(
        get(spec, "persistentVolumeClaimRetentionPolicy"),
        &path.child("persistentVolumeClaimRetentionPolicy"),
    ));
    errs.extend(non_negative_at(spec, "replicas", &path.child("replicas")));
    errs.extend(non_negative_at(
        spec,
        "minReadySeconds",
        &path.child("minReadySeconds"),
    ));
    if let Some(ord) = get(spec, "ordinals").filter(|v| !v.is_null()) {
        errs.extend(non_negative_at(ord, "start", &path.child("ordinals.start")));
    }
    let tpath = path.child("template");
    let tmpl = get(spec, "template").filter(|v| !v.is_null());
    match required_selector(
        spec,
        "empty selector is invalid for statefulset",
        path,
        &mut errs,
    ) {
        Ok(sel) => {
            let matched = sel
                .as_ref()
                .is_some_and(|s| s.is_empty() || s.matches(template_labels(tmpl)));
            if !matched {
                errs.push(mismatch(tmpl, &tpath));
            }
            // Upstream checks only the template's labels and annotations here, not its pod
            // spec (pods are validated when the controller creates them).
            let meta = tmpl.and_then(|t| get(t, "metadata"));
            errs.extend(labels(
                meta.and_then(|m| obj(m, "labels")),
                tpath.child("labels").as_str(),
            ));
            errs.extend(annotations(
                meta.and_then(|m| obj(m, "annotations")),
                tpath.child("annotations").as_str(),
            ));
        }
        Err(()) => errs.push(FieldError::invalid(
            path.child("selector"),
            get(spec, "selector").unwrap_or(&Value::Null),
            "",
        )),
    }
    let tspec = tmpl.and_then(|t| get(t, "spec"));
    let rp = tspec.map_or("", |s| str_of(s, "restartPolicy"));
    if rp != "Always" {
        errs.push(FieldError::not_supported(
            tpath.child("spec").child("restartPolicy"),
            &Value::from(rp),
            &["Always"],
        ));
    }
    if tspec.is_some_and(|s| has(s, "activeDeadlineSeconds")) {
        errs.push(FieldError::forbidden(
            tpath.child("spec").child("activeDeadlineSeconds"),
            "activeDeadlineSeconds in StatefulSet is not Supported",
        ));
    }
    errs
}

/// Validates a StatefulSet. On update only replicas, ordinals, template, updateStrategy,
/// persistentVolumeClaimRetentionPolicy and minReadySeconds may change (upstream reports any
/// other change, including the selector, with one `spec: Forbidden` error).
pub fn stateful_set(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let spec = spec_of(new);
    let mut errs = stateful_set_spec(spec, &Path::new("spec"));
    if let Some(old) = old {
        let mutable = [
            "replicas",
            "template",
            "updateStrategy",
            "minReadySeconds",
            "ordinals",
            "persistentVolumeClaimRetentionPolicy",
        ];
        let strip = |s: &Value| {
            let mut m = s.as_object().cloned().unwrap_or_default();
            for k in mutable {
                m.remove(k);
            }
            Value::Object(m)
        };
        if !same(Some(&strip(spec)), Some(&strip(spec_of(old)))) {
            errs.push(FieldError::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
    dedup(errs)
}

fn daemon_set_strategy(s: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = Value::Object(Map::new());
    let s = s.filter(|v| !v.is_null()).unwrap_or(&empty);
    match str_of(s, "type") {
        "OnDelete" => {}
        "RollingUpdate" => {
            let Some(ru) = get(s, "rollingUpdate").filter(|v| !v.is_null()) else {
                errs.push(FieldError::required(path.child("rollingUpdate")));
                return errs;
            };
            let p = path.child("rollingUpdate");
            let (mu, ms) = (get(ru, "maxUnavailable"), get(ru, "maxSurge"));
            errs.extend(int_or_percent(mu, &p.child("maxUnavailable")));
            errs.extend(int_or_percent(ms, &p.child("maxSurge")));
            errs.extend(over_100_percent(mu, &p.child("maxUnavailable")));
            errs.extend(over_100_percent(ms, &p.child("maxSurge")));
            let (has_u, has_s) = (int_or_percent_value(mu) != 0, int_or_percent_value(ms) != 0);
            if has_u && has_s {
                errs.push(FieldError::invalid(
                    p.child("maxSurge"),
                    ms.unwrap_or(&Value::Null),
                    "may not be set when maxUnavailable is non-zero",
                ));
            } else if !has_u && !has_s {
                errs.push(FieldError::required_msg(
                    p.child("maxUnavailable"),
                    "cannot be 0 when maxSurge is 0",
                ));
            }
        }
        _ => errs.push(FieldError::not_supported(
            path,
            s,
            &["RollingUpdate", "OnDelete"],
        )),
    }
    errs
}

/// Validates a DaemonSet; the selector may not change on update.
pub fn daemon_set(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let spec = spec_of(new);
    let path = Path::new("spec");
    let sel_path = path.child("selector");
    let mut errs = label_selector(get(spec, "selector"), &sel_path);
    let tpath = path.child("template");
    let tmpl = get(spec, "template").filter(|v| !v.is_null());
    let sel = get(spec, "selector").filter(|v| !v.is_null());
    // A missing selector selects nothing, so it cannot match the template.
    let parsed = sel.map(LabelSelector::from_json);
    let matches = match &parsed {
        None => Some(false),
        Some(Ok(s)) => Some(s.matches(template_labels(tmpl))),
        Some(Err(_)) => None,
    };
    if matches == Some(false) {
        errs.push(mismatch(tmpl, &tpath));
    }
    if let Some(sel) = sel {
        let count = obj(sel, "matchLabels").map_or(0, Map::len)
            + get(sel, "matchExpressions")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
        if count == 0 {
            errs.push(FieldError::invalid(
                &sel_path,
                sel,
                "empty selector is invalid for daemonset",
            ));
        }
    }
    errs.extend(template(tmpl, &tpath));
    errs.extend(always_restart(tmpl, "DaemonSet", &tpath));
    errs.extend(non_negative_at(
        spec,
        "minReadySeconds",
        &path.child("minReadySeconds"),
    ));
    errs.extend(daemon_set_strategy(
        get(spec, "updateStrategy"),
        &path.child("updateStrategy"),
    ));
    errs.extend(non_negative_at(
        spec,
        "revisionHistoryLimit",
        &path.child("revisionHistoryLimit"),
    ));
    errs.extend(selector_immutable(new, old));
    dedup(errs)
}
