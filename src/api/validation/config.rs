//! ConfigMaps and Secrets: key syntax, the 1 MiB size limit, type-specific Secret keys,
//! and the `immutable: true` rules on update.

use serde_json::{Map, Value};

use super::super::status::FieldError;
use super::field::{dedup, get, obj, str_of, Path};
use super::names::is_config_map_key;

/// Upstream's `MaxSecretSize`, which also bounds ConfigMaps.
pub const MAX_SIZE: usize = 1024 * 1024;

const IMMUTABLE_MSG: &str = "field is immutable when `immutable` is set";

fn decode_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes standard padded base64 like Go's `base64.StdEncoding` (which is how a Secret's
/// `data` values are read): CR and LF are skipped, and an error carries the byte offset Go
/// reports, for `illegal base64 data at input byte N`.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, usize> {
    let src = s.as_bytes();
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    loop {
        let mut buf = [0u8; 4];
        let mut j = 0;
        let mut dlen = 4;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                return Err(si - j);
            }
            let c = src[si];
            si += 1;
            if let Some(v) = decode_value(c) {
                buf[j] = v;
                j += 1;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                continue;
            }
            if c != b'=' {
                return Err(si - 1);
            }
            // Padding: only valid after two or three symbols, and it ends the input.
            match j {
                0 | 1 => return Err(si - 1),
                2 => {
                    while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(src.len());
                    }
                    if src[si] != b'=' {
                        return Err(si - 1);
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                si += 1;
            }
            if si < src.len() {
                return Err(si);
            }
            dlen = j;
            break;
        }
        let n = (u32::from(buf[0]) << 18)
            | (u32::from(buf[1]) << 12)
            | (u32::from(buf[2]) << 6)
            | u32::from(buf[3]);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..dlen - 1]);
        if dlen < 4 {
            return Ok(out);
        }
    }
}

/// Upstream rejects bad base64 in Secret `data` (and ConfigMap `binaryData`) while decoding
/// the request, with a 400 whose message ends in this text. The pipeline can call this at
/// decode time for exact parity; validation reports the same problem as a field error so an
/// undecodable value is never stored either way.
pub fn base64_error(obj_value: &Value, member: &str) -> Option<String> {
    let map = obj(obj_value, member)?;
    for v in map.values() {
        if let Err(at) = decode_base64(v.as_str().unwrap_or("")) {
            return Some(format!("illegal base64 data at input byte {at}"));
        }
    }
    None
}

/// Key syntax for one data map; returns the total size of its values (decoded for base64
/// maps) and reports undecodable values.
fn data_map(
    map: Option<&Map<String, Value>>,
    path: &Path,
    base64: bool,
    errs: &mut Vec<FieldError>,
) -> usize {
    let mut total = 0;
    let Some(map) = map else { return total };
    for (k, v) in map {
        for m in is_config_map_key(k) {
            errs.push(FieldError::invalid(
                path.key(k),
                &Value::from(k.as_str()),
                &m,
            ));
        }
        let text = v.as_str().unwrap_or("");
        if base64 {
            match decode_base64(text) {
                Ok(bytes) => total += bytes.len(),
                Err(at) => errs.push(FieldError::invalid(
                    path.key(k),
                    &Value::from("<secret contents redacted>"),
                    &format!("illegal base64 data at input byte {at}"),
                )),
            }
        } else {
            total += text.len();
        }
    }
    total
}

fn immutable_rules(new: &Value, old: &Value, members: &[&str]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if get(old, "immutable").and_then(Value::as_bool) != Some(true) {
        return errs;
    }
    if get(new, "immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(FieldError::forbidden("immutable", IMMUTABLE_MSG));
    }
    for m in members {
        let empty = |v: Option<&Value>| {
            v.is_none_or(|v| v.is_null() || v.as_object().is_some_and(Map::is_empty))
        };
        let (n, o) = (get(new, m), get(old, m));
        if !(n == o || (empty(n) && empty(o))) {
            errs.push(FieldError::forbidden(*m, IMMUTABLE_MSG));
        }
    }
    errs
}

/// Validates a ConfigMap: keys, no key in both `data` and `binaryData`, 1 MiB in total,
/// and nothing changes once `immutable` is set.
pub fn config_map(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        errs.extend(immutable_rules(new, old, &["data", "binaryData"]));
    }
    let data = obj(new, "data");
    let binary = obj(new, "binaryData");
    let data_path = Path::new("data");
    let mut total = data_map(data, &data_path, false, &mut errs);
    for k in data.into_iter().flat_map(Map::keys) {
        if binary.is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldError::invalid(
                data_path.key(k),
                &Value::from(k.as_str()),
                "duplicate of key present in binaryData",
            ));
        }
    }
    total += data_map(binary, &Path::new("binaryData"), true, &mut errs);
    if total > MAX_SIZE {
        // Upstream reports the whole object with an empty path, which renders as `[]`.
        errs.push(FieldError::too_long("[]", MAX_SIZE));
    }
    dedup(errs)
}

fn require_key(data: Option<&Map<String, Value>>, key: &str, errs: &mut Vec<FieldError>) -> bool {
    let present = data.is_some_and(|d| d.contains_key(key));
    if !present {
        errs.push(FieldError::required(Path::new("data").key(key)));
    }
    present
}

fn decoded(data: Option<&Map<String, Value>>, key: &str) -> Vec<u8> {
    data.and_then(|d| d.get(key))
        .and_then(Value::as_str)
        .and_then(|s| decode_base64(s).ok())
        .unwrap_or_default()
}

/// Validates a Secret: keys, base64 values, 1 MiB in total, the keys each well-known type
/// requires; on update the type may not change and nothing changes once `immutable` is set.
pub fn secret(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        if str_of(new, "type") != str_of(old, "type") {
            errs.push(FieldError::immutable(
                "type",
                &Value::from(str_of(new, "type")),
            ));
        }
        errs.extend(immutable_rules(new, old, &["data"]));
    }
    let data = obj(new, "data");
    let total = data_map(data, &Path::new("data"), true, &mut errs);
    if total > MAX_SIZE {
        errs.push(FieldError::too_long("data", MAX_SIZE));
    }
    let json_check = |key: &str, errs: &mut Vec<FieldError>| {
        if require_key(data, key, errs) {
            if let Err(e) = serde_json::from_slice::<Map<String, Value>>(&decoded(data, key)) {
                errs.push(FieldError::invalid(
                    Path::new("data").key(key),
                    &Value::from("<secret contents redacted>"),
                    &e.to_string(),
                ));
            }
        }
    };
    match str_of(new, "type") {
        "kubernetes.io/service-account-token" => {
            let meta = get(new, "metadata").unwrap_or(&Value::Null);
            let sa = obj(meta, "annotations")
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .and_then(Value::as_str);
            if sa.unwrap_or("").is_empty() {
                errs.push(FieldError::required(
                    Path::new("metadata")
                        .child("annotations")
                        .key("kubernetes.io/service-account.name"),
                ));
            }
        }
        "kubernetes.io/dockercfg" => json_check(".dockercfg", &mut errs),
        "kubernetes.io/dockerconfigjson" => json_check(".dockerconfigjson", &mut errs),
        "kubernetes.io/basic-auth" => {
            let has = |k| data.is_some_and(|d| d.contains_key(k));
            if !has("username") && !has("password") {
                errs.push(FieldError::required(Path::new("data").key("username")));
                errs.push(FieldError::required(Path::new("data").key("password")));
            }
        }
        "kubernetes.io/ssh-auth" if decoded(data, "ssh-privatekey").is_empty() => {
            errs.push(FieldError::required(
                Path::new("data").key("ssh-privatekey"),
            ));
        }
        "kubernetes.io/tls" => {
            require_key(data, "tls.crt", &mut errs);
            require_key(data, "tls.key", &mut errs);
        }
        _ => {}
    }
    dedup(errs)
}
