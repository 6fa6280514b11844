//! PriorityClasses (`scheduling.k8s.io/v1`): upstream's ValidatePriorityClass and
//! ValidatePriorityClassUpdate — the reserved `system-` prefix, the ceiling on
//! user-defined values, the preemption policy, and value and policy fixed after creation.

use serde_json::Value;

use super::super::status::FieldError;

/// The highest value a user-defined class may have (upstream's HighestUserDefinablePriority).
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;
/// The name prefix reserved for the built-in classes.
pub const SYSTEM_PRIORITY_CLASS_PREFIX: &str = "system-";
/// The built-in classes: name and value (neither is a global default).
pub const SYSTEM_PRIORITY_CLASSES: [(&str, i64); 2] = [
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];
/// The preemption policies a class or pod may name.
pub const PREEMPTION_POLICIES: [&str; 2] = ["Never", "PreemptLowerPriority"];

/// Why a `system-` name is not acceptable (upstream's IsKnownSystemPriorityClass).
fn known_system_class(name: &str, value: i64, global_default: bool) -> Result<(), String> {
    match SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _)| *n == name) {
        None => Err(format!("{name} is not a known system priority class")),
        Some((n, v)) if *v != value => Err(format!("value of {n} PriorityClass must be {v}")),
        Some((n, _)) if global_default => {
            Err(format!("globalDefault of {n} PriorityClass must be false"))
        }
        Some(_) => Ok(()),
    }
}

/// Validates a PriorityClass (after defaulting) and, on update, what may not change.
pub fn priority_class(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = new["metadata"]["name"].as_str().unwrap_or("");
    let value = new["value"].as_i64().unwrap_or(0);
    if let Some(old) = old {
        if new["value"] != old["value"] {
            errs.push(FieldError::forbidden(
                "value",
                "may not be changed in an update.",
            ));
        }
        if new["preemptionPolicy"] != old["preemptionPolicy"] {
            errs.push(FieldError::immutable(
                "preemptionPolicy",
                &new["preemptionPolicy"],
            ));
        }
        return errs;
    }
    if name.starts_with(SYSTEM_PRIORITY_CLASS_PREFIX) {
        let global = new["globalDefault"].as_bool().unwrap_or(false);
        if let Err(why) = known_system_class(name, value, global) {
            errs.push(FieldError::forbidden(
                "metadata.name",
                &format!(
                    "priority class names with '{SYSTEM_PRIORITY_CLASS_PREFIX}' prefix are reserved for system use only. error: {why}"
                ),
            ));
        }
    } else if value > HIGHEST_USER_DEFINABLE_PRIORITY {
        errs.push(FieldError::forbidden(
            "value",
            &format!(
                "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
            ),
        ));
    }
    match &new["preemptionPolicy"] {
        Value::Null => {}
        Value::String(p) if PREEMPTION_POLICIES.contains(&p.as_str()) => {}
        other => errs.push(FieldError::not_supported(
            "preemptionPolicy",
            other,
            &PREEMPTION_POLICIES,
        )),
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(name: &str, value: i64) -> Value {
        json!({"metadata": {"name": name}, "value": value, "preemptionPolicy": "PreemptLowerPriority"})
    }

    #[test]
    fn reserved_names_and_ceiling() {
        assert!(priority_class(&class("system-node-critical", 2_000_001_000), None).is_empty());
        let e = priority_class(&class("system-mine", 5), None);
        assert_eq!(
            e[0].display(),
            "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"
        );
        let e = priority_class(&class("high", 2_000_000_000), None);
        assert_eq!(
            e[0].display(),
            "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
        );
        assert!(priority_class(&class("high", 1_000_000_000), None).is_empty());
    }

    #[test]
    fn value_is_fixed_after_creation() {
        let e = priority_class(&class("high", 2), Some(&class("high", 1)));
        assert_eq!(
            e[0].display(),
            "value: Forbidden: may not be changed in an update."
        );
        assert!(priority_class(&class("high", 1), Some(&class("high", 1))).is_empty());
    }
}
