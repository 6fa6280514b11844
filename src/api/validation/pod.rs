//! Pods and pod specs (`ValidatePodSpec`, `ValidatePodTemplateSpec`, `ValidatePodCreate`,
//! `ValidatePodUpdate`). The pod spec rules are reused for every workload template under
//! `spec.template.spec`.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::super::status::FieldError;
use super::container::{self, Ctx};
use super::field::{arr, dedup, flag, get, has, int, obj, str_of, Path};
use super::meta::{annotations, label_selector, labels};
use super::names::{
    inclusive_range_error, is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_ip,
    is_valid_label_value,
};
use super::pod_update;
use super::volume;

const MAX_INT32: i64 = i32::MAX as i64;

fn subdomain_field(spec: &Value, key: &str, path: &Path) -> Vec<FieldError> {
    let v = str_of(spec, key);
    if v.is_empty() {
        return Vec::new();
    }
    is_dns1123_subdomain(v)
        .into_iter()
        .map(|m| FieldError::invalid(path.child(key), &Value::from(v), &m))
        .collect()
}

fn label_field(spec: &Value, key: &str, path: &Path) -> Vec<FieldError> {
    let v = str_of(spec, key);
    if v.is_empty() {
        return Vec::new();
    }
    is_dns1123_label(v)
        .into_iter()
        .map(|m| FieldError::invalid(path.child(key), &Value::from(v), &m))
        .collect()
}

/// `ValidateTolerations`.
fn tolerations(list: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let p = path.index(i);
        let key = str_of(t, "key");
        let op = str_of(t, "operator");
        if !key.is_empty() {
            for m in is_qualified_name(key) {
                errs.push(FieldError::invalid(p.child("key"), &Value::from(key), &m));
            }
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                p.child("operator"),
                &Value::from(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        let effect = str_of(t, "effect");
        if has(t, "tolerationSeconds") && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                p.child("effect"),
                &Value::from(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        let value = str_of(t, "value");
        match op {
            "Equal" | "" => {
                let msgs = is_valid_label_value(value);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        p.child("operator"),
                        &Value::from(value),
                        &msgs.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(FieldError::invalid(
                        p.child("operator"),
                        &Value::from(value),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                p.child("operator"),
                &Value::from(other),
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            errs.push(FieldError::not_supported(
                p.child("effect"),
                &Value::from(effect),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
    errs
}

fn pod_security_context(sc: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(sc) = sc.filter(|v| !v.is_null()) else {
        return errs;
    };
    let range = inclusive_range_error(0, MAX_INT32);
    for f in ["fsGroup", "runAsUser", "runAsGroup"] {
        if let Some(n) = int(sc, f) {
            if !(0..=MAX_INT32).contains(&n) {
                errs.push(FieldError::invalid(path.child(f), &Value::from(n), &range));
            }
        }
    }
    for (g, gid) in arr(sc, "supplementalGroups").iter().enumerate() {
        if let Some(n) = gid.as_i64().filter(|n| !(0..=MAX_INT32).contains(n)) {
            errs.push(FieldError::invalid(
                path.child("supplementalGroups").index(g),
                &Value::from(n),
                &range,
            ));
        }
    }
    errs
}

fn dns_config(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let cfg = get(spec, "dnsConfig").filter(|v| !v.is_null());
    if str_of(spec, "dnsPolicy") == "None" {
        let Some(cfg) = cfg else {
            return vec![FieldError::required_msg(
                path,
                "must provide `dnsConfig` when `dnsPolicy` is None",
            )];
        };
        if arr(cfg, "nameservers").is_empty() {
            return vec![FieldError::required_msg(
                path.child("nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            )];
        }
    }
    let Some(cfg) = cfg else { return errs };
    let servers = arr(cfg, "nameservers");
    if servers.len() > 3 {
        errs.push(FieldError::invalid(
            path.child("nameservers"),
            &Value::from(servers.to_vec()),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in servers.iter().enumerate() {
        let s = ns.as_str().unwrap_or("");
        for m in is_valid_ip(s) {
            errs.push(FieldError::invalid(
                path.child("nameservers").index(i),
                &Value::from(s),
                &m,
            ));
        }
    }
    let searches = arr(cfg, "searches");
    if searches.len() > 32 {
        errs.push(FieldError::invalid(
            path.child("searches"),
            &Value::from(searches.to_vec()),
            "must not have more than 32 search paths",
        ));
    }
    for (i, s) in searches.iter().enumerate() {
        let s = s.as_str().unwrap_or("");
        if s == "." {
            continue;
        }
        let trimmed = s.strip_suffix('.').unwrap_or(s);
        for m in is_dns1123_subdomain(&trimmed.replace('_', "a")) {
            errs.push(FieldError::invalid(
                path.child("searches").index(i),
                &Value::from(trimmed),
                &m,
            ));
        }
    }
    for (i, o) in arr(cfg, "options").iter().enumerate() {
        if str_of(o, "name").is_empty() {
            errs.push(FieldError::required_msg(
                path.child("options").index(i),
                "must not be empty",
            ));
        }
    }
    errs
}

fn topology_spread(list: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let p = path.index(i);
        let skew = int(c, "maxSkew").unwrap_or(0);
        if skew <= 0 {
            errs.push(FieldError::invalid(
                p.child("maxSkew"),
                &Value::from(skew),
                "must be greater than zero",
            ));
        }
        if str_of(c, "topologyKey").is_empty() {
            errs.push(FieldError::required_msg(
                p.child("topologyKey"),
                "can not be empty",
            ));
        }
        let w = str_of(c, "whenUnsatisfiable");
        if !matches!(w, "DoNotSchedule" | "ScheduleAnyway") {
            errs.push(FieldError::not_supported(
                p.child("whenUnsatisfiable"),
                &Value::from(w),
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        errs.extend(label_selector(
            get(c, "labelSelector"),
            &p.child("labelSelector"),
        ));
    }
    errs
}

/// `ValidatePodSpec`: the rules for a pod spec at `path` (`spec` of a Pod or
/// `spec.template.spec` of a workload). `is_pod` enables the checks upstream applies only
/// to real pods.
pub fn pod_spec(spec: &Value, path: &Path, is_pod: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !has(spec, "terminationGracePeriodSeconds") {
        errs.push(FieldError::required(
            path.child("terminationGracePeriodSeconds"),
        ));
    }
    let (vols, verrs) = volume::volumes(arr(spec, "volumes"), &path.child("volumes"));
    errs.extend(verrs);
    let ctx = Ctx {
        volumes: &vols,
        grace: int(spec, "terminationGracePeriodSeconds"),
    };
    let regular = arr(spec, "containers");
    errs.extend(container::containers(
        regular,
        &ctx,
        &path.child("containers"),
    ));
    errs.extend(container::init_containers(
        arr(spec, "initContainers"),
        regular,
        &ctx,
        &path.child("initContainers"),
    ));

    if flag(spec, "hostNetwork") {
        for (i, c) in regular.iter().enumerate() {
            for (j, p) in arr(c, "ports").iter().enumerate() {
                let (hp, cp) = (
                    int(p, "hostPort").unwrap_or(0),
                    int(p, "containerPort").unwrap_or(0),
                );
                if (is_pod || hp != 0) && hp != cp {
                    errs.push(FieldError::invalid(
                        path.child("containers")
                            .index(i)
                            .child("ports")
                            .index(j)
                            .child("hostPort"),
                        &Value::from(hp),
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }

    match str_of(spec, "restartPolicy") {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(FieldError::required(path.child("restartPolicy"))),
        other => errs.push(FieldError::not_supported(
            path.child("restartPolicy"),
            &Value::from(other),
            &["Always", "OnFailure", "Never"],
        )),
    }
    match str_of(spec, "dnsPolicy") {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.push(FieldError::required(path.child("dnsPolicy"))),
        other => errs.push(FieldError::not_supported(
            path.child("dnsPolicy"),
            &Value::from(other),
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    errs.extend(labels(
        obj(spec, "nodeSelector"),
        path.child("nodeSelector").as_str(),
    ));
    errs.extend(pod_security_context(
        get(spec, "securityContext"),
        &path.child("securityContext"),
    ));
    for (i, s) in arr(spec, "imagePullSecrets").iter().enumerate() {
        if s.as_object().is_some_and(|m| m.keys().any(|k| k != "name")) {
            errs.push(FieldError::invalid(
                path.child("imagePullSecrets").index(i),
                s,
                "only name may be set",
            ));
        }
    }
    errs.extend(dns_config(spec, &path.child("dnsConfig")));
    for (i, g) in arr(spec, "readinessGates").iter().enumerate() {
        let t = str_of(g, "conditionType");
        for m in is_qualified_name(t) {
            errs.push(FieldError::invalid(
                path.child("readinessGates").index(i).child("conditionType"),
                &Value::from(t),
                &m,
            ));
        }
    }
    let mut gates: HashSet<&str> = HashSet::new();
    for (i, g) in arr(spec, "schedulingGates").iter().enumerate() {
        let name = str_of(g, "name");
        let p = path.child("schedulingGates").index(i);
        for m in is_qualified_name(name) {
            errs.push(FieldError::invalid(&p, &Value::from(name), &m));
        }
        if !gates.insert(name) {
            errs.push(FieldError::duplicate(&p, &Value::from(name)));
        }
    }
    errs.extend(topology_spread(
        arr(spec, "topologySpreadConstraints"),
        &path.child("topologySpreadConstraints"),
    ));
    errs.extend(subdomain_field(spec, "serviceAccountName", path));
    errs.extend(subdomain_field(spec, "nodeName", path));
    if let Some(v) = int(spec, "activeDeadlineSeconds") {
        if !(1..=MAX_INT32).contains(&v) {
            errs.push(FieldError::invalid(
                path.child("activeDeadlineSeconds"),
                &Value::from(v),
                &inclusive_range_error(1, MAX_INT32),
            ));
        }
    }
    errs.extend(label_field(spec, "hostname", path));
    errs.extend(label_field(spec, "subdomain", path));
    errs.extend(tolerations(
        arr(spec, "tolerations"),
        &path.child("tolerations"),
    ));
    for (i, a) in arr(spec, "hostAliases").iter().enumerate() {
        let p = path.child("hostAliases").index(i);
        let ip = str_of(a, "ip");
        for m in is_valid_ip(ip) {
            errs.push(FieldError::invalid(p.child("ip"), &Value::from(ip), &m));
        }
        for (j, h) in arr(a, "hostnames").iter().enumerate() {
            let h = h.as_str().unwrap_or("");
            for m in is_dns1123_subdomain(h) {
                errs.push(FieldError::invalid(
                    p.child("hostnames").index(j),
                    &Value::from(h),
                    &m,
                ));
            }
        }
    }
    errs.extend(subdomain_field(spec, "priorityClassName", path));
    if let Some(rc) = get(spec, "runtimeClassName").and_then(Value::as_str) {
        for m in is_dns1123_subdomain(rc) {
            errs.push(FieldError::invalid(
                path.child("runtimeClassName"),
                &Value::from(rc),
                &m,
            ));
        }
    }
    if let Some(p) = get(spec, "preemptionPolicy").and_then(Value::as_str) {
        match p {
            "PreemptLowerPriority" | "Never" => {}
            "" => errs.push(FieldError::required(path.child("preemptionPolicy"))),
            other => errs.push(FieldError::not_supported(
                path.child("preemptionPolicy"),
                &Value::from(other),
                &["PreemptLowerPriority", "Never"],
            )),
        }
    }
    if let Some(os) = get(spec, "os").filter(|v| !v.is_null()) {
        match str_of(os, "name") {
            "" => errs.push(FieldError::required_msg(
                path.child("os").child("name"),
                "cannot be empty",
            )),
            "linux" | "windows" => {}
            other => errs.push(FieldError::not_supported(
                path.child("os"),
                &Value::from(other),
                &["linux", "windows"],
            )),
        }
    }
    errs
}

/// `ValidatePodTemplateSpec` for a template at `path` (e.g. `spec.template`). Upstream
/// reports template labels at `<path>.labels`, without `metadata`.
pub fn template(tmpl: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let empty = Value::Object(Map::new());
    let tmpl = tmpl.filter(|v| !v.is_null()).unwrap_or(&empty);
    let meta = get(tmpl, "metadata").unwrap_or(&empty);
    let spec = get(tmpl, "spec").unwrap_or(&empty);
    let mut errs = labels(obj(meta, "labels"), path.child("labels").as_str());
    errs.extend(annotations(
        obj(meta, "annotations"),
        path.child("annotations").as_str(),
    ));
    errs.extend(pod_spec(spec, &path.child("spec"), false));
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden(
            path.child("spec").child("ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs
}

/// Validates a Pod (create, or update when `old` is given).
pub fn pod(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let empty = Value::Object(Map::new());
    let spec_path = Path::new("spec");
    let spec = get(new, "spec").unwrap_or(&empty);
    let mut errs = pod_spec(spec, &spec_path, true);

    if str_of(spec, "serviceAccountName").is_empty() {
        for (vi, v) in arr(spec, "volumes").iter().enumerate() {
            let Some(projected) = get(v, "projected") else {
                continue;
            };
            for (si, s) in arr(projected, "sources").iter().enumerate() {
                if has(s, "serviceAccountToken") {
                    errs.push(FieldError::forbidden(
                        spec_path
                            .child("volumes")
                            .index(vi)
                            .child("projected")
                            .child("sources")
                            .index(si)
                            .child("serviceAccountToken"),
                        "must not be specified when serviceAccountName is not set",
                    ));
                }
            }
        }
    }
    for list in ["containers", "initContainers"] {
        for (i, c) in arr(spec, list).iter().enumerate() {
            let image = str_of(c, "image");
            if image.trim() != image {
                errs.push(FieldError::invalid(
                    spec_path.child(list).index(i).child("image"),
                    &Value::from(image),
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    match old {
        None => {
            if !arr(spec, "ephemeralContainers").is_empty() {
                errs.push(FieldError::forbidden(
                    spec_path.child("ephemeralContainers"),
                    "cannot be set on create",
                ));
            }
            if !str_of(spec, "nodeName").is_empty() && !arr(spec, "schedulingGates").is_empty() {
                errs.push(FieldError::forbidden(
                    spec_path.child("nodeName"),
                    "cannot be set until all schedulingGates have been cleared",
                ));
            }
        }
        Some(old) => errs.extend(pod_update::spec_update(
            spec,
            get(old, "spec").unwrap_or(&empty),
        )),
    }
    dedup(errs)
}
