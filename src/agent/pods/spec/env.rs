//! A container's environment as the kubelet computes it: envFrom first (with prefix,
//! invalid names skipped), then env in declaration order (plain values with `$(VAR)`
//! references to variables declared before, or valueFrom field, resource, ConfigMap
//! and Secret keys), and upstream's `$(VAR)` expansion, which command, args and
//! subPathExpr use too.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::ConfigError;
use crate::agent::pods::volumes::downward::{container_resource, pod_field, NodeCapacity};
use crate::agent::pods::volumes::{NodeFacts, Objects};

/// Expands `$(VAR)` with `lookup`; `$$` is a literal `$`, and unknown or unclosed
/// references stay as written (upstream's `expansion.Expand`).
pub fn expand(input: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if after.is_empty() {
            // A trailing `$` is kept.
            out.push('$');
            rest = after;
            break;
        }
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    // Unclosed: keep `$(` and go on after it.
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Whether `name` is a valid environment variable name (upstream's `IsEnvVarName`).
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_') => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Name → value in declaration order; a later declaration replaces the value but
/// keeps the place.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnvList(pub Vec<(String, String)>);

impl EnvList {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, name: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// `$(VAR)` expansion against these variables.
    pub fn expand(&self, input: &str) -> String {
        expand(input, |k| self.get(k).map(str::to_string))
    }
}

/// Which object and key a `configMapKeyRef` / `secretKeyRef` names.
enum KeyRef {
    ConfigMap(String, String),
    Secret(String, String),
}

/// The value of a key reference: `found` is `None` when the object is missing and
/// `Some(None)` when the key is; both are errors unless optional (`Ok(None)`: skip
/// the variable).
fn key_ref(
    found: Option<Option<String>>,
    optional: Option<bool>,
    which: KeyRef,
    namespace: &str,
) -> Result<Option<String>, ConfigError> {
    let optional = optional == Some(true);
    let namespace = namespace.to_string();
    match (found, which) {
        (Some(Some(v)), _) => Ok(Some(v)),
        _ if optional => Ok(None),
        (None, KeyRef::ConfigMap(name, _)) => Err(ConfigError::ConfigMapNotFound(name)),
        (None, KeyRef::Secret(name, _)) => Err(ConfigError::SecretNotFound(name)),
        (Some(None), KeyRef::ConfigMap(name, key)) => Err(ConfigError::ConfigMapKey {
            key,
            namespace,
            name,
        }),
        (Some(None), KeyRef::Secret(name, key)) => Err(ConfigError::SecretKey {
            key,
            namespace,
            name,
        }),
    }
}

/// The container's env vars (without the image's), or the CreateContainerConfigError
/// reason.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    objects: &Objects,
    node: &NodeFacts,
    capacity: &NodeCapacity,
) -> Result<EnvList, ConfigError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = EnvList::default();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let entries: Vec<(String, String)> = if let Some(r) = &from.config_map_ref {
            match objects.config_maps.get(&r.name) {
                Some(cm) => cm
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                None if r.optional == Some(true) => continue,
                None => return Err(ConfigError::ConfigMapNotFound(r.name.clone())),
            }
        } else if let Some(r) = &from.secret_ref {
            match objects.secrets.get(&r.name) {
                Some(s) => s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                    .collect(),
                None if r.optional == Some(true) => continue,
                None => return Err(ConfigError::SecretNotFound(r.name.clone())),
            }
        } else {
            continue;
        };
        let mut invalid = Vec::new();
        for (k, v) in entries {
            let k = format!("{prefix}{k}");
            if is_env_var_name(&k) {
                env.set(k, v);
            } else {
                invalid.push(k);
            }
        }
        if !invalid.is_empty() {
            tracing::warn!(container = %container.name, keys = ?invalid, "envFrom keys skipped: not valid environment variable names");
        }
    }

    for var in container.env.iter().flatten() {
        let value = var.value.clone().unwrap_or_default();
        let value = if !value.is_empty() {
            env.expand(&value)
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                pod_field(pod, &f.field_path, node).map_err(ConfigError::Field)?
            } else if let Some(r) = &from.resource_field_ref {
                container_resource(r, container, capacity).map_err(ConfigError::Field)?
            } else if let Some(r) = &from.config_map_key_ref {
                let found = objects
                    .config_maps
                    .get(&r.name)
                    .map(|cm| cm.data.as_ref().and_then(|d| d.get(&r.key)).cloned());
                match key_ref(
                    found,
                    r.optional,
                    KeyRef::ConfigMap(r.name.clone(), r.key.clone()),
                    ns,
                )? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = &from.secret_key_ref {
                let found = objects.secrets.get(&r.name).map(|s| {
                    let v = s.data.as_ref().and_then(|d| d.get(&r.key));
                    v.map(|v| String::from_utf8_lossy(&v.0).into_owned())
                });
                match key_ref(
                    found,
                    r.optional,
                    KeyRef::Secret(r.name.clone(), r.key.clone()),
                    ns,
                )? {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(k: &str) -> Option<String> {
        match k {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_upstream() {
        assert_eq!(expand("$(A)-$(A)", map), "alpha-alpha");
        assert_eq!(expand("$$(A)", map), "$(A)");
        assert_eq!(expand("$$$(A)", map), "$alpha");
        assert_eq!(expand("$(B)", map), "$(B)");
        assert_eq!(expand("$(EMPTY)x", map), "x");
        assert_eq!(expand("$(A", map), "$(A");
        assert_eq!(expand("a$b", map), "a$b");
        assert_eq!(expand("cost: 5$", map), "cost: 5$");
        assert_eq!(expand("$()", map), "$()");
        assert_eq!(expand("ünï$(A)çødé", map), "ünïalphaçødé");
    }

    #[test]
    fn env_names_validate() {
        assert!(is_env_var_name("FOO_1"));
        assert!(is_env_var_name("my.var-x"));
        assert!(!is_env_var_name("1FOO"));
        assert!(!is_env_var_name("A B"));
        assert!(!is_env_var_name(""));
    }
}
