//! The node agent: registration, pod sync, containerd runtime. Not built yet;
//! `k3rs server` runs without an agent until it lands.
