//! Prints decoded JSON the way Go's `fmt` prints it (`%v`, `%s`, `reflect.Type`), so that
//! error messages carry upstream's exact wording: `map[image:nginx name:c]`, `[a b]`,
//! `1e+06`, `%!s(int64=5)`. Upstream decodes integers as int64 and other numbers as float64.

use serde_json::{Map, Value};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    V,
    S,
}

/// `fmt.Sprintf("%v", value)`.
pub(super) fn v(value: &Value) -> String {
    let mut out = String::new();
    write(&mut out, value, Verb::V);
    out
}

/// `fmt.Sprintf("%v", object)`.
pub(super) fn map_v(map: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_map(&mut out, map, Verb::V);
    out
}

/// `fmt.Sprintf("%v", lists)` for a `[][]interface{}`.
pub(super) fn lists_v(lists: &[&[Value]]) -> String {
    let inner: Vec<String> = lists.iter().map(|l| v(&Value::Array(l.to_vec()))).collect();
    format!("[{}]", inner.join(" "))
}

/// `fmt.Sprintf("%s", value)`.
pub(super) fn s(value: &Value) -> String {
    let mut out = String::new();
    write(&mut out, value, Verb::S);
    out
}

/// `fmt.Sprintf("%s", reflect.TypeOf(value))`; `None` stands for a Go nil.
pub(super) fn type_name(value: Option<&Value>) -> &'static str {
    match value {
        None | Some(Value::Null) => "%!s(<nil>)",
        Some(Value::Bool(_)) => "bool",
        Some(Value::Number(n)) if n.is_i64() => "int64",
        Some(Value::Number(_)) => "float64",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "[]interface {}",
        Some(Value::Object(_)) => "map[string]interface {}",
    }
}

fn write(out: &mut String, value: &Value, verb: Verb) {
    match value {
        Value::String(s) => out.push_str(s),
        Value::Object(m) => write_map(out, m, verb),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write(out, item, verb);
            }
            out.push(']');
        }
        scalar => {
            let (ty, text) = match scalar {
                Value::Bool(b) => ("bool", b.to_string()),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => ("int64", i.to_string()),
                    None => ("float64", float(n.as_f64().unwrap_or(0.0))),
                },
                _ => ("", "<nil>".to_string()),
            };
            match verb {
                Verb::V => out.push_str(&text),
                Verb::S if ty.is_empty() => out.push_str("%!s(<nil>)"),
                Verb::S => out.push_str(&format!("%!s({ty}={text})")),
            }
        }
    }
}

/// Go prints maps with their keys sorted.
fn write_map(out: &mut String, map: &Map<String, Value>, verb: Verb) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push_str("map[");
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push(':');
        write(out, &map[k.as_str()], verb);
    }
    out.push(']');
}

/// `strconv.FormatFloat(f, 'g', -1, 64)`: the shortest digits that round-trip, in exponent
/// form when the exponent is below -4 or at least 6 (Go's rule for shortest `%g`).
pub(super) fn float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    // Rust's `{:e}` yields the shortest round-trip digits, e.g. "-1.25e-7".
    let e = format!("{f:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let point = exp as usize + 1;
        if digits.len() <= point {
            out.push_str(&digits);
            for _ in digits.len()..point {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_like_go() {
        assert_eq!(float(1e6), "1e+06");
        assert_eq!(float(123456.0), "123456");
        assert_eq!(float(1.5), "1.5");
        assert_eq!(float(-0.00012), "-0.00012");
        assert_eq!(float(0.00001), "1e-05");
        assert_eq!(float(2.5e21), "2.5e+21");
        assert_eq!(float(0.0), "0");
        assert_eq!(float(100.0), "100");
    }

    #[test]
    fn values_like_go() {
        let m = json!({"name": "c", "image": "nginx", "ports": [{"containerPort": 80}], "x": null, "f": 1.5});
        assert_eq!(
            v(&m),
            "map[f:1.5 image:nginx name:c ports:[map[containerPort:80]] x:<nil>]"
        );
        assert_eq!(s(&json!("merge")), "merge");
        assert_eq!(s(&json!(true)), "%!s(bool=true)");
        assert_eq!(s(&json!(5)), "%!s(int64=5)");
        assert_eq!(s(&Value::Null), "%!s(<nil>)");
        assert_eq!(type_name(Some(&json!("a"))), "string");
        assert_eq!(type_name(Some(&json!({}))), "map[string]interface {}");
        assert_eq!(type_name(None), "%!s(<nil>)");
        let a = [json!("a"), json!("b")];
        let b = [json!(1)];
        assert_eq!(lists_v(&[&a, &b]), "[[a b] [1]]");
    }
}
