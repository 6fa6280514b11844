//! The built-in bridge CNI: pod network namespaces, bridge and veth, IPAM,
//! cross-node routes. So far only [`ipam`], the host-local pod address allocator;
//! namespaces, bridge/veth and routes are not built yet.

pub mod ipam;
