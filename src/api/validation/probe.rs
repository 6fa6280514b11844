//! Probes and lifecycle hooks (validateProbe, validateHandler and friends): exactly one
//! handler, sane thresholds, and ports given as numbers or IANA names.

use serde_json::Value;

use super::super::status::FieldError;
use super::field::{arr, get, int, str_of, Path};
use super::meta::non_negative_at;
use super::names::{is_http_header_name, is_valid_port_name, is_valid_port_num};

/// A port given as a number or an IANA name (`ValidatePortNumOrName`).
pub(super) fn port_num_or_name(v: Option<&Value>, path: &Path) -> Vec<FieldError> {
    match v {
        Some(Value::String(s)) => is_valid_port_name(s)
            .into_iter()
            .map(|m| FieldError::invalid(path, &Value::from(s.as_str()), &m))
            .collect(),
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            is_valid_port_num(n)
                .into_iter()
                .map(|m| FieldError::invalid(path, &Value::from(n), &m))
                .collect()
        }
        _ => is_valid_port_num(0)
            .into_iter()
            .map(|m| FieldError::invalid(path, &Value::from(0), &m))
            .collect(),
    }
}

fn handler(h: &Value, sleep_allowed: bool, grace: Option<i64>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut count = 0;
    let kinds: &[&str] = if sleep_allowed {
        &["exec", "httpGet", "tcpSocket", "grpc", "sleep"]
    } else {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    };
    for &kind in kinds {
        let Some(v) = get(h, kind).filter(|v| !v.is_null()) else {
            continue;
        };
        let p = path.child(kind);
        if count > 0 {
            errs.push(FieldError::forbidden(
                &p,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        count += 1;
        match kind {
            "exec" => {
                if arr(v, "command").is_empty() {
                    errs.push(FieldError::required(p.child("command")));
                }
            }
            "httpGet" => {
                if str_of(v, "path").is_empty() {
                    errs.push(FieldError::required(p.child("path")));
                }
                errs.extend(port_num_or_name(get(v, "port"), &p.child("port")));
                let scheme = str_of(v, "scheme");
                if scheme != "HTTP" && scheme != "HTTPS" {
                    errs.push(FieldError::not_supported(
                        p.child("scheme"),
                        &Value::from(scheme),
                        &["HTTP", "HTTPS"],
                    ));
                }
                for hdr in arr(v, "httpHeaders") {
                    let name = str_of(hdr, "name");
                    for m in is_http_header_name(name) {
                        errs.push(FieldError::invalid(
                            p.child("httpHeaders"),
                            &Value::from(name),
                            &m,
                        ));
                    }
                }
            }
            "tcpSocket" => errs.extend(port_num_or_name(get(v, "port"), &p.child("port"))),
            "grpc" => errs.extend(port_num_or_name(
                Some(&Value::from(int(v, "port").unwrap_or(0))),
                &p.child("port"),
            )),
            _ => {
                let secs = int(v, "seconds").unwrap_or(0);
                if let Some(g) = grace {
                    if secs < 0 || secs > g {
                        errs.push(FieldError::invalid(
                            &p,
                            &Value::from(secs),
                            &format!("must be non-negative and less than terminationGracePeriodSeconds ({g})"),
                        ));
                    }
                }
            }
        }
    }
    if count == 0 {
        errs.push(FieldError::required_msg(
            path,
            "must specify a handler type",
        ));
    }
    errs
}

fn probe(p: Option<&Value>, kind: &str, grace: Option<i64>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(p) = p.filter(|v| !v.is_null()) else {
        return errs;
    };
    errs.extend(handler(p, false, grace, path));
    for f in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        errs.extend(non_negative_at(p, f, &path.child(f)));
    }
    if let Some(t) = int(p, "terminationGracePeriodSeconds") {
        if t <= 0 {
            errs.push(FieldError::invalid(
                path.child("terminationGracePeriodSeconds"),
                &Value::from(t),
                "must be greater than 0",
            ));
        }
    }
    match kind {
        "readinessProbe" => {
            if let Some(t) = get(p, "terminationGracePeriodSeconds").filter(|v| !v.is_null()) {
                errs.push(FieldError::invalid(
                    path.child("terminationGracePeriodSeconds"),
                    t,
                    "must not be set for readinessProbes",
                ));
            }
        }
        _ => {
            let s = int(p, "successThreshold").unwrap_or(0);
            if s != 1 {
                errs.push(FieldError::invalid(
                    path.child("successThreshold"),
                    &Value::from(s),
                    "must be 1",
                ));
            }
        }
    }
    errs
}

pub(super) fn lifecycle_and_probes(c: &Value, grace: Option<i64>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(l) = get(c, "lifecycle").filter(|v| !v.is_null()) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = get(l, hook).filter(|v| !v.is_null()) {
                errs.extend(handler(
                    h,
                    true,
                    grace,
                    &path.child("lifecycle").child(hook),
                ));
            }
        }
    }
    for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
        errs.extend(probe(get(c, kind), kind, grace, &path.child(kind)));
    }
    errs
}
