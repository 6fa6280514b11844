//! The node agent: registration, pod sync, containerd runtime. What exists so far is
//! the container runtime layer the pod sync loop will drive:
//!
//! - [`containerd`]: our supervised containerd child (or an external one) and the
//!   gRPC client every other part uses (namespace `k8s.io`, leases, snapshotter).
//! - [`images`]: image tarball import (OCI layout, docker save) into the content
//!   store, naming, unpacking for this platform, image config lookup.
//! - [`runtime`]: containers and their tasks (OCI spec, create, start, wait, kill,
//!   stop, remove, list for adoption).
//! - [`logger`]: the shim-side CRI log writer (the k3rs binary run by the runc shim).
//! - [`netns`]: pod network namespaces held by bind mounts under /run/k3rs/netns.
//!
//! `k3rs server` runs without an agent until the pod sync loop lands.

pub mod containerd;
pub mod images;
pub mod kubelet;
pub mod layout;
pub mod logger;
pub mod netns;
pub mod pods;
pub mod runtime;
