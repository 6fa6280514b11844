//! Small readers of the raw JSON and the string forms the printers share: label maps
//! (`labels.FormatLabels`), label selectors (`metav1.FormatLabelSelector`), container
//! names and images, and lists cut off at a few entries ("a,b,c + 2 more...").

use serde_json::Value;

/// The value at a JSON pointer, treating `null` as missing.
pub(crate) fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    v.pointer(pointer).filter(|x| !x.is_null())
}

/// The string at a pointer, `""` when missing or not a string.
pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    at(v, pointer).and_then(Value::as_str).unwrap_or("")
}

/// The integer at a pointer, 0 when missing.
pub(crate) fn int_at(v: &Value, pointer: &str) -> i64 {
    at(v, pointer).and_then(int_of).unwrap_or(0)
}

/// An integer JSON value (also accepts a float with no fraction).
pub(crate) fn int_of(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

/// The integer at a pointer, or the given default when missing (upstream's defaulting).
pub(crate) fn int_or(v: &Value, pointer: &str, default: i64) -> i64 {
    at(v, pointer).and_then(int_of).unwrap_or(default)
}

/// The array at a pointer, empty when missing.
pub(crate) fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    at(v, pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Number of entries of the map or list at a pointer.
pub(crate) fn len_at(v: &Value, pointer: &str) -> i64 {
    let n = match at(v, pointer) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    n as i64
}

/// Whether the boolean at a pointer is true.
pub(crate) fn bool_at(v: &Value, pointer: &str) -> bool {
    at(v, pointer).and_then(Value::as_bool).unwrap_or(false)
}

/// `metadata.name`.
pub(crate) fn name(obj: &Value) -> &str {
    str_at(obj, "/metadata/name")
}

/// Whether `metadata.deletionTimestamp` is set.
pub(crate) fn deleting(obj: &Value) -> bool {
    at(obj, "/metadata/deletionTimestamp").is_some()
}

/// A scalar rendered as Go's `%v` would for the types the API uses.
pub(crate) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `labels.FormatLabels`: `k=v` pairs sorted and joined by commas, `<none>` when empty.
pub(crate) fn format_labels(map: Option<&Value>) -> String {
    let mut pairs: Vec<String> = match map.and_then(Value::as_object) {
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect(),
        None => Vec::new(),
    };
    // Upstream sorts the joined "k=v" strings, not the keys.
    pairs.sort();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs.join(",")
}

/// A `metav1.LabelSelector` as upstream's `labels.Selector` prints it
/// (`app=web,tier in (a,b),!legacy`), requirements sorted by key. `None` (nil) and an
/// empty selector both print as `""`. An operator upstream rejects is an error.
pub(crate) fn selector_string(sel: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = sel.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = at(sel, "/matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", scalar(v))));
        }
    }
    for expr in arr(sel, "/matchExpressions") {
        let key = str_at(expr, "/key");
        let mut values: Vec<String> = arr(expr, "/values").iter().map(scalar).collect();
        values.sort();
        let text = match str_at(expr, "/operator") {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` when empty or unset, `<error>` when invalid.
pub(crate) fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(()) => "<error>".to_string(),
    }
}

/// Container names and images of a pod spec, each joined by commas.
pub(crate) fn container_cells(pod_spec: Option<&Value>) -> (String, String) {
    let containers = pod_spec.map(|s| arr(s, "/containers")).unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// Joins the first `max` items and says how many more there were; `<unset>` when empty
/// (upstream's `listWithMoreString`).
pub(crate) fn list_with_more(items: &[String], max: usize) -> String {
    if items.is_empty() {
        return "<unset>".to_string();
    }
    let shown = items[..items.len().min(max)].join(",");
    if items.len() > max {
        return format!("{shown} + {} more...", items.len() - max);
    }
    shown
}

/// `net.JoinHostPort`: brackets around IPv6 hosts.
pub(crate) fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Load-balancer ingress points (IP, else hostname), sorted and de-duplicated, joined
/// by commas. The server prints wide, so upstream's 16-character clipping never applies.
pub(crate) fn load_balancer_ingress(status: Option<&Value>) -> String {
    let mut points: Vec<&str> = status
        .map(|s| arr(s, "/ingress"))
        .unwrap_or(&[])
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, "/ip");
            let host = str_at(i, "/hostname");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    points.sort_unstable();
    points.dedup();
    points.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_maps() {
        assert_eq!(format_labels(None), "<none>");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(
            format_labels(Some(&json!({"tier": "web", "app": "x", "a.b": "1"}))),
            "a.b=1,app=x,tier=web"
        );
    }

    #[test]
    fn label_selectors() {
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        let sel = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "zz", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        });
        assert_eq!(
            format_label_selector(Some(&sel)),
            "app=web,env notin (prod),!legacy,tier in (a,b),zz"
        );
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "Near", "values": ["x"]}]});
        assert_eq!(format_label_selector(Some(&bad)), "<error>");
        let empty_in = json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]});
        assert_eq!(format_label_selector(Some(&empty_in)), "<error>");
        assert_eq!(selector_string(None), Ok(String::new()));
    }

    #[test]
    fn lists_and_hosts() {
        let items: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(list_with_more(&items, 3), "a,b,c + 2 more...");
        assert_eq!(list_with_more(&items[..3], 3), "a,b,c");
        assert_eq!(list_with_more(&[], 3), "<unset>");
        assert_eq!(join_host_port("10.0.0.1", "80"), "10.0.0.1:80");
        assert_eq!(join_host_port("fd00::1", "80"), "[fd00::1]:80");
        let lb = json!({"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example"}, {"ip": "1.2.3.4"}, {"ip": "1.2.3.4"}]});
        assert_eq!(
            load_balancer_ingress(Some(&lb)),
            "1.2.3.4,5.6.7.8,lb.example"
        );
    }
}
