//! PriorityClass defaulting (upstream's SetDefaults_PriorityClass): a class that names no
//! preemption policy preempts lower-priority pods.

use serde_json::{json, Value};

/// Sets `preemptionPolicy: PreemptLowerPriority` when unset.
pub fn priority_class(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        if super::unset(m, "preemptionPolicy") {
            m.insert("preemptionPolicy".into(), json!("PreemptLowerPriority"));
        }
    }
}
