//! Version strings: the k3rs release and the Kubernetes version it serves.

/// The Kubernetes major version the API claims to be.
pub const KUBE_MAJOR: &str = "1";
/// The Kubernetes minor version the API claims to be (matches the k8s-openapi feature).
pub const KUBE_MINOR: &str = "35";
/// The Kubernetes patch release we report.
pub const KUBE_PATCH: &str = "0";
/// The k3rs build suffix, like k3s's `+k3s1`.
pub const K3RS_SUFFIX: &str = "k3rs1";

/// `v1.35.0+k3rs1`: the semver `gitVersion` of `/version` and `k3rs --version`.
pub fn git_version() -> String {
    format!("v{KUBE_MAJOR}.{KUBE_MINOR}.{KUBE_PATCH}+{K3RS_SUFFIX}")
}

/// The git commit the binary was built from, when the build was given one.
pub fn git_commit() -> &'static str {
    option_env!("K3RS_GIT_COMMIT").unwrap_or("unknown")
}
