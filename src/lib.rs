//! k3rs: a lightweight Kubernetes distribution for the edge.
//!
//! The crate is one library shared by the `k3rs` binary and the tests:
//! - [`api`]: the object model (resource table, metadata, selectors, validation,
//!   defaulting, patch, Status errors). Pure: no I/O.
//! - [`server`]: the control plane (store, HTTPS API, PKI, join, RBAC, scheduler,
//!   controllers, services, storage, metrics).
//! - [`agent`]: the node (containerd, pods, probes, kubelet endpoint, service proxy, DNS,
//!   metrics).
//! - [`cni`]: the built-in bridge CNI (bridge, veth, IPAM, vxlan/host-gw routes).
//! - [`cli`]: the `token` and `certificate` subcommands.
//! - [`config`]: command-line flags, `K3RS_*` environment and config.yaml.
//! - [`check_config`]: `k3rs check-config`, the host's kernel features and programs.
//! - [`notify`]: tells systemd (`Type=notify`) when k3rs is ready or stopping.

// `ApiError` carries upstream's whole Status object (message, reason, details) and is
// returned only on the error path, where its size costs nothing measurable.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod api;
pub mod check_config;
pub mod cli;
pub mod cni;
pub mod config;
pub mod notify;
pub mod server;
pub mod tls;
pub mod version;
