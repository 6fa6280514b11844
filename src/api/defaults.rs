//! Upstream's defaulting for built-in kinds (SetDefaults_* in k8s.io/kubernetes/pkg/apis).
//! (Being written.)

use serde_json::Value;

/// Fills in defaults on an object in place.
pub type DefaultFn = fn(obj: &mut Value);

/// No defaults.
pub fn none(_obj: &mut Value) {}
