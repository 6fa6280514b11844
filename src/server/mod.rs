//! The control plane: durable store, HTTPS API, PKI and bootstrap.

pub mod store;
