//! The built-in bridge CNI: pod network namespaces, bridge and veth, IPAM,
//! cross-node routes. Not built yet.
