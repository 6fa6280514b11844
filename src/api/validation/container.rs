//! Container rules shared by Pods and every pod template (k8s.io/kubernetes
//! pkg/apis/core/validation: validateContainers, validateInitContainers,
//! validateContainerCommon and what they call): names, images, ports, env, mounts, pull
//! policy and resources. Probes and hooks are in `probe.rs`.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::super::status::FieldError;
use super::field::{arr, get, has, int, not_found, obj, str_of, Path};
use super::names::{
    inclusive_range_error, is_config_map_key, is_dns1123_label, is_dns1123_subdomain,
    is_qualified_name, is_relaxed_env_var_name, is_valid_port_name, is_valid_port_num,
};
use super::probe::lifecycle_and_probes;
use super::quantity;

/// What container validation needs to know about the surrounding pod spec.
pub(super) struct Ctx<'a> {
    /// Names of the volumes that validated cleanly (mounts may only refer to these).
    pub volumes: &'a HashSet<String>,
    /// `terminationGracePeriodSeconds`, for sleep hooks.
    pub grace: Option<i64>,
}

const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

fn ports(list: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: HashSet<&str> = HashSet::new();
    for (i, p) in list.iter().enumerate() {
        let ip = path.index(i);
        let name = str_of(p, "name");
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(FieldError::invalid(
                        ip.child("name"),
                        &Value::from(name),
                        &m,
                    ));
                }
            } else if !names.insert(name) {
                errs.push(FieldError::duplicate(ip.child("name"), &Value::from(name)));
            }
        }
        match int(p, "containerPort").unwrap_or(0) {
            0 => errs.push(FieldError::required(ip.child("containerPort"))),
            n => {
                for m in is_valid_port_num(n) {
                    errs.push(FieldError::invalid(
                        ip.child("containerPort"),
                        &Value::from(n),
                        &m,
                    ));
                }
            }
        }
        let host = int(p, "hostPort").unwrap_or(0);
        if host != 0 {
            for m in is_valid_port_num(host) {
                errs.push(FieldError::invalid(
                    ip.child("hostPort"),
                    &Value::from(host),
                    &m,
                ));
            }
        }
        match str_of(p, "protocol") {
            "" => errs.push(FieldError::required(ip.child("protocol"))),
            proto if !PROTOCOLS.contains(&proto) => errs.push(FieldError::not_supported(
                ip.child("protocol"),
                &Value::from(proto),
                &PROTOCOLS,
            )),
            _ => {}
        }
    }
    errs
}

const ENV_FIELD_PATHS: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

fn key_selector(s: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_of(s, "name");
    for m in is_dns1123_subdomain(name) {
        errs.push(FieldError::invalid(
            path.child("name"),
            &Value::from(name),
            &m,
        ));
    }
    let key = str_of(s, "key");
    if key.is_empty() {
        errs.push(FieldError::required(path.child("key")));
    } else {
        for m in is_config_map_key(key) {
            errs.push(FieldError::invalid(
                path.child("key"),
                &Value::from(key),
                &m,
            ));
        }
    }
    errs
}

fn field_ref(f: &Value, path: &Path) -> Vec<FieldError> {
    if str_of(f, "apiVersion").is_empty() {
        return vec![FieldError::required(path.child("apiVersion"))];
    }
    let fp = str_of(f, "fieldPath");
    if fp.is_empty() {
        return vec![FieldError::required(path.child("fieldPath"))];
    }
    // `metadata.labels['k']` and `metadata.annotations['k']` select one entry.
    if let Some((base, rest)) = fp.split_once("['") {
        if let Some(sub) = rest.strip_suffix("']") {
            let key = if base == "metadata.annotations" {
                sub.to_lowercase()
            } else {
                sub.to_string()
            };
            if base == "metadata.labels" || base == "metadata.annotations" {
                return is_qualified_name(&key)
                    .into_iter()
                    .map(|m| FieldError::invalid(path, &Value::from(key.as_str()), &m))
                    .collect();
            }
            return vec![FieldError::invalid(
                path,
                &Value::from(base),
                "does not support subscript",
            )];
        }
    }
    if !ENV_FIELD_PATHS.contains(&fp) {
        let mut supported = ENV_FIELD_PATHS.to_vec();
        supported.sort_unstable();
        return vec![FieldError::not_supported(
            path.child("fieldPath"),
            &Value::from(fp),
            &supported,
        )];
    }
    Vec::new()
}

fn env(list: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let ip = path.index(i);
        let name = str_of(e, "name");
        if name.is_empty() {
            errs.push(FieldError::required(ip.child("name")));
        } else {
            for m in is_relaxed_env_var_name(name) {
                errs.push(FieldError::invalid(
                    ip.child("name"),
                    &Value::from(name),
                    &m,
                ));
            }
        }
        let Some(from) = get(e, "valueFrom").filter(|v| !v.is_null()) else {
            continue;
        };
        let vp = ip.child("valueFrom");
        let mut sources = 0;
        if let Some(f) = get(from, "fieldRef").filter(|v| !v.is_null()) {
            sources += 1;
            errs.extend(field_ref(f, &vp.child("fieldRef")));
        }
        if let Some(r) = get(from, "resourceFieldRef").filter(|v| !v.is_null()) {
            sources += 1;
            if str_of(r, "resource").is_empty() {
                errs.push(FieldError::required(
                    vp.child("resourceFieldRef").child("resource"),
                ));
            }
        }
        if let Some(s) = get(from, "configMapKeyRef").filter(|v| !v.is_null()) {
            sources += 1;
            errs.extend(key_selector(s, &vp.child("configMapKeyRef")));
        }
        if let Some(s) = get(from, "secretKeyRef").filter(|v| !v.is_null()) {
            sources += 1;
            errs.extend(key_selector(s, &vp.child("secretKeyRef")));
        }
        let empty = Value::from("");
        if sources == 0 {
            errs.push(FieldError::invalid(
                &vp,
                &empty,
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !str_of(e, "value").is_empty() {
            errs.push(FieldError::invalid(
                &vp,
                &empty,
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                &vp,
                &empty,
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

fn env_from(list: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let ip = path.index(i);
        let prefix = str_of(e, "prefix");
        if !prefix.is_empty() {
            for m in is_relaxed_env_var_name(prefix) {
                errs.push(FieldError::invalid(
                    ip.child("prefix"),
                    &Value::from(prefix),
                    &m,
                ));
            }
        }
        let mut sources = 0;
        for src in ["configMapRef", "secretRef"] {
            if let Some(r) = get(e, src).filter(|v| !v.is_null()) {
                sources += 1;
                let name = str_of(r, "name");
                if name.is_empty() {
                    errs.push(FieldError::required(ip.child(src).child("name")));
                } else {
                    for m in is_dns1123_subdomain(name) {
                        errs.push(FieldError::invalid(
                            ip.child(src).child("name"),
                            &Value::from(name),
                            &m,
                        ));
                    }
                }
            }
        }
        let empty = Value::from("");
        if sources == 0 {
            errs.push(FieldError::invalid(
                path,
                &empty,
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                path,
                &empty,
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

/// `validateLocalDescendingPath`: relative, without `..` elements.
pub(super) fn local_descending_path(p: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if p.starts_with('/') {
        errs.push(FieldError::invalid(
            path,
            &Value::from(p),
            "must be a relative path",
        ));
    }
    if p.split(['/', '\\']).any(|part| part == "..") {
        errs.push(FieldError::invalid(
            path,
            &Value::from(p),
            "must not contain '..'",
        ));
    }
    errs
}

fn volume_mounts(list: &[Value], volumes: &HashSet<String>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut mount_points: HashSet<&str> = HashSet::new();
    for (i, m) in list.iter().enumerate() {
        let ip = path.index(i);
        let name = str_of(m, "name");
        if name.is_empty() {
            errs.push(FieldError::required(ip.child("name")));
        }
        if !volumes.contains(name) {
            errs.push(not_found(&ip.child("name"), &Value::from(name)));
        }
        let mount_path = str_of(m, "mountPath");
        if mount_path.is_empty() {
            errs.push(FieldError::required(ip.child("mountPath")));
        }
        if !mount_points.insert(mount_path) {
            errs.push(FieldError::invalid(
                ip.child("mountPath"),
                &Value::from(mount_path),
                "must be unique",
            ));
        }
        let sub = str_of(m, "subPath");
        if !sub.is_empty() {
            // Upstream reports these without the index.
            errs.extend(local_descending_path(sub, &path.child("subPath")));
        }
        let expr = str_of(m, "subPathExpr");
        if !expr.is_empty() {
            if !sub.is_empty() {
                errs.push(FieldError::invalid(
                    ip.child("subPathExpr"),
                    &Value::from(expr),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            errs.extend(local_descending_path(expr, &path.child("subPathExpr")));
        }
    }
    errs
}

const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];

fn pull_policy(c: &Value, path: &Path) -> Vec<FieldError> {
    match str_of(c, "imagePullPolicy") {
        "Always" | "IfNotPresent" | "Never" => Vec::new(),
        "" => vec![FieldError::required(path)],
        other => vec![FieldError::not_supported(
            path,
            &Value::from(other),
            &PULL_POLICIES,
        )],
    }
}

fn overcommit_allowed(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage" | "storage")
}

fn resource_name(name: &str, path: &Path) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> = is_qualified_name(name)
        .into_iter()
        .map(|m| FieldError::invalid(path, &Value::from(name), &m))
        .collect();
    if !errs.is_empty() {
        return errs;
    }
    if !name.contains('/') && !overcommit_allowed(name) && !name.starts_with("hugepages-") {
        errs.push(FieldError::invalid(
            path,
            &Value::from(name),
            "must be a standard resource type or fully qualified",
        ));
    }
    errs
}

/// Resource requirements: names, quantities, and requests within limits.
pub(super) fn resources(r: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(r) = r else { return errs };
    let lim_path = path.child("limits");
    let req_path = path.child("requests");
    let empty = Map::new();
    let limits = obj(r, "limits").unwrap_or(&empty);
    let requests = obj(r, "requests").unwrap_or(&empty);
    let parsed =
        |name: &str, v: &Value, p: &Path, errs: &mut Vec<FieldError>| -> Option<(String, f64)> {
            errs.extend(resource_name(name, p));
            let Some(text) = quantity::text(v) else {
                errs.push(FieldError::invalid(p, v, quantity::QUANTITY_FORMAT_ERROR));
                return None;
            };
            let Some(n) = quantity::parse(&text) else {
                errs.push(FieldError::invalid(
                    p,
                    &Value::from(text.as_str()),
                    quantity::QUANTITY_FORMAT_ERROR,
                ));
                return None;
            };
            if n < 0.0 {
                errs.push(FieldError::invalid(
                    p,
                    &Value::from(text.as_str()),
                    "must be greater than or equal to 0",
                ));
            }
            Some((text, n))
        };
    let mut lims = Vec::new();
    for (name, v) in limits {
        if let Some(q) = parsed(name, v, &lim_path.key(name), &mut errs) {
            lims.push((name.clone(), q));
        }
    }
    for (name, v) in requests {
        let Some((text, req)) = parsed(name, v, &req_path.key(name), &mut errs) else {
            continue;
        };
        match lims.iter().find(|(n, _)| n == name) {
            Some((_, (lim_text, lim))) => {
                if !overcommit_allowed(name) && req != *lim {
                    errs.push(FieldError::invalid(
                        &req_path,
                        &Value::from(text.as_str()),
                        &format!("must be equal to {name} limit of {lim_text}"),
                    ));
                } else if req > *lim {
                    errs.push(FieldError::invalid(
                        &req_path,
                        &Value::from(text.as_str()),
                        &format!("must be less than or equal to {name} limit of {lim_text}"),
                    ));
                }
            }
            None if !overcommit_allowed(name) => errs.push(FieldError::required_msg(
                &lim_path,
                "Limit must be set for non overcommitable resources",
            )),
            None => {}
        }
    }
    errs
}

fn security_context(sc: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(sc) = sc.filter(|v| !v.is_null()) else {
        return errs;
    };
    for f in ["runAsUser", "runAsGroup"] {
        if let Some(n) = int(sc, f) {
            if !(0..=i64::from(i32::MAX)).contains(&n) {
                errs.push(FieldError::invalid(
                    path.child(f),
                    &Value::from(n),
                    &inclusive_range_error(0, i64::from(i32::MAX)),
                ));
            }
        }
    }
    if get(sc, "privileged").and_then(Value::as_bool) == Some(true)
        && get(sc, "allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false)
    {
        errs.push(FieldError::invalid(
            path,
            sc,
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        ));
    }
    errs
}

/// validateContainerCommon: what every kind of container must satisfy.
fn common(c: &Value, ctx: &Ctx<'_>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_of(c, "name");
    if name.is_empty() {
        errs.push(FieldError::required(path.child("name")));
    } else {
        for m in is_dns1123_label(name) {
            errs.push(FieldError::invalid(
                path.child("name"),
                &Value::from(name),
                &m,
            ));
        }
    }
    if str_of(c, "image").is_empty() {
        errs.push(FieldError::required(path.child("image")));
    }
    match str_of(c, "terminationMessagePolicy") {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldError::required(path.child("terminationMessagePolicy"))),
        other => errs.push(FieldError::not_supported(
            path.child("terminationMessagePolicy"),
            &Value::from(other),
            &["File", "FallbackToLogsOnError"],
        )),
    }
    errs.extend(ports(arr(c, "ports"), &path.child("ports")));
    errs.extend(env(arr(c, "env"), &path.child("env")));
    errs.extend(env_from(arr(c, "envFrom"), &path.child("envFrom")));
    errs.extend(volume_mounts(
        arr(c, "volumeMounts"),
        ctx.volumes,
        &path.child("volumeMounts"),
    ));
    errs.extend(pull_policy(c, &path.child("imagePullPolicy")));
    errs.extend(resources(get(c, "resources"), &path.child("resources")));
    errs.extend(security_context(
        get(c, "securityContext"),
        &path.child("securityContext"),
    ));
    errs
}

/// Host ports must not collide (`protocol/hostIP/port`).
fn host_port_conflicts(
    containers: &[&Value],
    path: &Path,
    seen: &mut HashSet<String>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, p) in arr(c, "ports").iter().enumerate() {
            let port = int(p, "hostPort").unwrap_or(0);
            if port == 0 {
                continue;
            }
            let key = format!("{}/{}/{port}", str_of(p, "protocol"), str_of(p, "hostIP"));
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(
                    path.index(ci).child("ports").index(pi).child("hostPort"),
                    &Value::from(key),
                ));
            }
        }
    }
    errs
}

/// `spec.containers`: at least one, unique names, everything in [`common`], probes.
pub(super) fn containers(list: &[Value], ctx: &Ctx<'_>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if list.is_empty() {
        errs.push(FieldError::required(path));
        return errs;
    }
    let mut names: HashSet<&str> = HashSet::new();
    for (i, c) in list.iter().enumerate() {
        let p = path.index(i);
        errs.extend(common(c, ctx, &p));
        let name = str_of(c, "name");
        if !names.insert(name) {
            errs.push(FieldError::duplicate(p.child("name"), &Value::from(name)));
        }
        errs.extend(lifecycle_and_probes(c, ctx.grace, &p));
        if has(c, "restartPolicy") {
            errs.push(FieldError::forbidden(
                p.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    let refs: Vec<&Value> = list.iter().collect();
    errs.extend(host_port_conflicts(&refs, path, &mut HashSet::new()));
    errs
}

/// `spec.initContainers`: names unique across regular and init containers; probes and
/// hooks only for restartable (sidecar) init containers.
pub(super) fn init_containers(
    list: &[Value],
    regular: &[Value],
    ctx: &Ctx<'_>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: HashSet<&str> = regular.iter().map(|c| str_of(c, "name")).collect();
    for (i, c) in list.iter().enumerate() {
        let p = path.index(i);
        errs.extend(common(c, ctx, &p));
        let mut sidecar = false;
        if let Some(rp) = get(c, "restartPolicy").filter(|v| !v.is_null()) {
            let rp = rp.as_str().unwrap_or("");
            if rp == "Always" {
                sidecar = true;
            } else {
                errs.push(FieldError::not_supported(
                    p.child("restartPolicy"),
                    &Value::from(rp),
                    &["Always"],
                ));
            }
        }
        let name = str_of(c, "name");
        if names.contains(name) {
            errs.push(FieldError::duplicate(p.child("name"), &Value::from(name)));
        } else if !name.is_empty() {
            names.insert(name);
        }
        errs.extend(host_port_conflicts(&[c], path, &mut HashSet::new()));
        if sidecar {
            errs.extend(lifecycle_and_probes(c, ctx.grace, &p));
        } else {
            for f in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if has(c, f) {
                    errs.push(FieldError::forbidden(
                        p.child(f),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
    errs
}
