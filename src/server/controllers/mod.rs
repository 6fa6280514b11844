//! Controllers that run inside the server process. Each one is level-triggered: it
//! compares the objects with what should be and moves one step closer, and converges
//! again from a fresh list after any restart.

pub mod gc;
pub mod manifests;
pub mod namespace;
pub mod node_ipam;
