//! Pods on this node: the sync loop that watches the pods bound here and drives each
//! one towards its spec on containerd, with upstream's lifecycle and status.

pub mod spec;
pub mod volumes;
