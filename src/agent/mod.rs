//! The node agent (the kubelet of k3rs): it starts or connects to containerd, registers
//! the node and keeps its status and Lease fresh, imports image tarballs, and runs the
//! pods bound to this node.
//!
//! - [`client`]: the HTTPS client for the API server.
//! - [`node`]: Node registration, status, Lease.
//! - [`pods`]: the pod sync loop and per-pod workers (lifecycle, status, volumes).
//! - [`containerd`]: our supervised containerd child (or an external one) and the
//!   gRPC client every other part uses (namespace `k8s.io`, leases, snapshotter).
//! - [`images`]: image tarball import (OCI layout, docker save), naming, unpacking.
//! - [`runtime`]: containers and their tasks (OCI spec, create, start, wait, kill,
//!   stop, remove, list for adoption).
//! - [`logger`]: the shim-side CRI log writer (the k3rs binary run by the runc shim).
//! - [`netns`]: pod network namespaces held by bind mounts under /run/k3rs/netns.
//! - [`network`]: the node's pod network (built-in CNI on the node's podCIDR) and the
//!   routes to the other nodes.
//! - [`proxy`]: the service proxy (ClusterIP, NodePort, LoadBalancer in nftables).
//! - [`dns`]: node-local cluster DNS (on cni0's address and the kube-dns ClusterIP).
//! - [`layout`]: labels and paths the parts agree on.

pub mod client;
pub mod containerd;
pub mod dns;
pub mod images;
pub mod join;
pub mod kubelet;
pub mod layout;
pub mod logger;
pub mod metrics;
pub mod netns;
pub mod network;
pub mod node;
pub mod pods;
pub mod proxy;
pub mod runtime;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::AgentSettings;

/// What one agent runs with (from `k3rs server` for its own node, or `k3rs agent`).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The data dir; the agent keeps its state in `<data_dir>/agent`.
    pub data_dir: PathBuf,
    pub node_name: String,
    /// Credentials for the API server.
    pub kubeconfig: PathBuf,
    /// This node also runs the control plane.
    pub control_plane: bool,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub settings: AgentSettings,
}

/// Runs the agent until `shutdown`. Containers keep running when it stops; the next
/// start adopts them.
pub async fn run(opts: AgentOptions, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "the node agent needs root (it runs containerd, mounts container filesystems and \
             creates network namespaces): run k3rs as root, or pass --disable-agent to run \
             the control plane alone"
        );
    }
    let agent_dir = opts.data_dir.join("agent");
    let images_dir = agent_dir.join("images");
    std::fs::create_dir_all(&images_dir)
        .with_context(|| format!("creating {}", images_dir.display()))?;
    let s = &opts.settings;

    let ctrd_config = containerd::SupervisorConfig::new(&opts.data_dir).with_run_dir(&s.run_dir);
    let runc_root = ctrd_config.runc_root();
    let ctrd = containerd::Containerd::start(ctrd_config, s.container_runtime_endpoint.as_deref())
        .await
        .context("container runtime")?;
    let ctrd_client = ctrd.client();
    let runtime_version = ctrd_client
        .version()
        .await
        .context("asking containerd for its version")?;
    let logger = std::env::current_exe().context("finding the k3rs executable")?;
    let runtime = runtime::Runtime::new(
        ctrd_client.clone(),
        &logger,
        s.container_runtime_endpoint
            .is_none()
            .then_some(runc_root.as_path()),
    );

    let registries = images::Registries::load(&s.private_registry).with_context(|| {
        format!(
            "private registry configuration {}",
            s.private_registry.display()
        )
    })?;
    // Tarballs in <data-dir>/agent/images: imported before any pod starts, then
    // whenever one appears.
    for (path, result) in images::import_dir(&ctrd_client, &images_dir).await {
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "cannot import image");
        }
    }
    let import_task = tokio::spawn(images::watch_import_dir(
        ctrd_client.clone(),
        images_dir.clone(),
        shutdown.clone(),
    ));

    let config = client::load_kubeconfig(&opts.kubeconfig)?;
    let api = client::ApiClient::new(
        config,
        &format!("k3rs-agent/{}", crate::version::git_version()),
    )?;
    let node_ip = s.node_ip.unwrap_or_else(node::host::default_node_ip);
    let node_cfg = node::NodeConfig {
        name: opts.node_name.clone(),
        node_ip,
        kubelet_port: s.kubelet_port,
        control_plane: opts.control_plane,
        labels: s.node_labels.clone(),
        data_dir: opts.data_dir.clone(),
        runtime_version,
    };
    let mut shutdown_wait = shutdown.clone();
    loop {
        match node::register(&api, &node_cfg).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register the node yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown_wait.changed() => {
                        ctrd.shutdown().await;
                        return Ok(());
                    }
                }
            }
        }
    }

    let health_client = ctrd_client.clone();
    let (network_ready, network_ready_rx) = watch::channel(false);
    let node_task = tokio::spawn(node::run(
        api.clone(),
        node_cfg,
        move || {
            let c = health_client.clone();
            async move { c.version().await.is_ok() }
        },
        network_ready_rx,
        shutdown.clone(),
    ));
    let network = network::start(
        &api,
        network::NetworkOptions {
            node_name: opts.node_name.clone(),
            node_ip: match node_ip {
                std::net::IpAddr::V4(ip) => ip,
                std::net::IpAddr::V6(_) => anyhow::bail!(
                    "node IP {node_ip} is IPv6: the built-in pod network needs an IPv4 node IP \
                     (pass --node-ip)"
                ),
            },
            backend: s.flannel_backend,
            cluster_cidr: s.cluster_cidr,
            state_dir: agent_dir.join("cni"),
        },
        shutdown.clone(),
    )
    .await?;
    if *shutdown.borrow() {
        let _ = node_task.await;
        ctrd.shutdown().await;
        return Ok(());
    }
    let _ = network_ready.send(true);
    // Services need the pod network; without it (flannel backend none) the node's
    // firewall is left alone.
    let proxy_task = network.as_ref().map(|_| {
        tokio::spawn(proxy::run(
            api.clone(),
            proxy::ProxyOptions {
                node_name: opts.node_name.clone(),
                cluster_cidr: s.cluster_cidr.to_string(),
            },
            shutdown.clone(),
        ))
    });
    let resolv_conf = dns::upstream::node_resolv_conf(s.resolv_conf.as_deref(), &agent_dir)
        .context("choosing the node's resolv.conf")?;
    start_dns(
        &api,
        &opts,
        network.as_deref(),
        &resolv_conf,
        shutdown.clone(),
    )
    .await;
    let ctx = Arc::new(pods::PodContext {
        client: api.clone(),
        runtime: runtime.clone(),
        node_name: opts.node_name.clone(),
        node_ip: node_ip.to_string(),
        agent_dir: agent_dir.clone(),
        log_dir: s.pod_log_dir.clone(),
        netns_dir: s.run_dir.join("netns"),
        cluster_dns: opts.cluster_dns.clone(),
        cluster_domain: opts.cluster_domain.clone(),
        registries,
        network,
        host_resolv_conf: resolv_conf,
    });
    let pods_task = tokio::spawn(pods::run(ctx, shutdown.clone()));
    tokio::spawn(pods::volumes::pvc::run_cleanup(
        api.clone(),
        agent_dir.clone(),
        shutdown.clone(),
    ));
    metrics::set_node_name(&opts.node_name);
    metrics::set_disabled(s.disable_metrics);
    let webhook = Arc::new(kubelet::auth::Webhook::new(api.clone(), &opts.node_name));
    let kubelet_task = start_kubelet(
        &agent_dir,
        s.kubelet_port,
        runtime.clone(),
        webhook,
        shutdown.clone(),
    )
    .await?;
    tracing::info!(node = %opts.node_name, ip = %node_ip, "agent is running");

    let mut shutdown = shutdown;
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    let _ = pods_task.await;
    if let Some(p) = proxy_task {
        let _ = p.await;
    }
    let _ = node_task.await;
    let _ = import_task.await;
    if let Some(k) = kubelet_task {
        let _ = k.await;
    }
    ctrd.shutdown().await;
    tracing::info!("agent stopped");
    Ok(())
}

/// Starts the node-local cluster DNS server. A failure (port 53 taken by another DNS
/// server) is logged, not fatal: pods still run, only cluster names do not resolve.
/// Without a pod network (`--flannel-backend none`: pods have loopback only) nobody
/// could ask it, so it stays off and the node's addresses stay untouched.
async fn start_dns(
    api: &client::ApiClient,
    opts: &AgentOptions,
    network: Option<&crate::cni::Cni>,
    resolv_conf: &std::path::Path,
    shutdown: watch::Receiver<bool>,
) {
    if network.is_none() {
        tracing::info!("no pod network: cluster DNS is off");
        return;
    }
    let dns_opts = dns::DnsOptions {
        cluster_domain: opts.cluster_domain.clone(),
        cluster_dns: opts
            .cluster_dns
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect(),
        bridge_ip: network.map(|n| crate::cni::ipam::gateway(n.config().pod_cidr)),
        resolv_conf: resolv_conf.to_path_buf(),
    };
    if let Err(e) = dns::start(api, dns_opts, shutdown).await {
        tracing::error!(error = %e, "cluster DNS is not running");
    }
}

/// Serves the kubelet endpoint (logs, exec, attach, port-forward for the API server)
/// with the node's serving certificate, accepting client certificates of the cluster's
/// client CA and bearer tokens (checked by `webhook`). Without certificates (a standalone agent that has not joined)
/// the endpoint stays off.
async fn start_kubelet(
    agent_dir: &std::path::Path,
    port: u16,
    runtime: runtime::Runtime,
    webhook: Arc<kubelet::auth::Webhook>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let read = |name: &str| std::fs::read_to_string(agent_dir.join(name));
    let (cert, key, ca) = match (
        read("serving-kubelet.crt"),
        read("serving-kubelet.key"),
        read("client-ca.crt"),
    ) {
        (Ok(c), Ok(k), Ok(ca)) => (c, k, ca),
        _ => {
            tracing::warn!(
                dir = %agent_dir.display(),
                "no kubelet serving certificate: logs, exec and port-forward are unavailable on this node"
            );
            return Ok(None);
        }
    };
    let tls = kubelet::tls_config(&cert, &key, &ca).context("kubelet endpoint TLS")?;
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("kubelet endpoint: listen tcp {addr}"))?;
    Ok(Some(tokio::spawn(kubelet::serve_with_auth(
        listener,
        Arc::new(tls),
        runtime,
        Some(webhook),
        shutdown,
    ))))
}

/// `k3rs agent`: runs until SIGTERM/SIGINT.
pub async fn run_standalone(cfg: crate::config::AgentConfig) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::server::wait_for_signal().await;
        tracing::info!("shutting down");
        crate::notify::stopping();
        let _ = tx.send(true);
    });
    let mut cfg = cfg;
    if let Some(mut join) = cfg.join.take() {
        let node_ip = cfg
            .settings
            .node_ip
            .unwrap_or_else(node::host::default_node_ip);
        join.node_ips = vec![node_ip];
        let joined = join::ensure_joined(&join).await?;
        cfg.node_name = joined.node_name;
        cfg.kubeconfig = joined.kubeconfig;
        if let Some(cluster) = joined.cluster {
            apply_cluster_config(&mut cfg, &cluster)?;
        }
    }
    crate::notify::ready("agent started");
    run(
        AgentOptions {
            data_dir: cfg.data_dir,
            node_name: cfg.node_name,
            kubeconfig: cfg.kubeconfig,
            control_plane: false,
            cluster_dns: cfg.cluster_dns,
            cluster_domain: cfg.cluster_domain,
            settings: cfg.settings,
        },
        rx,
    )
    .await
}

/// The server's settings win over the agent's hidden defaults, as in k3s.
fn apply_cluster_config(
    cfg: &mut crate::config::AgentConfig,
    cluster: &crate::server::join::ClusterConfig,
) -> anyhow::Result<()> {
    use crate::cni::Backend;
    cfg.settings.flannel_backend = match cluster.flannel_backend.as_str() {
        "vxlan" => Backend::Vxlan,
        "host-gw" => Backend::HostGw,
        "none" => Backend::None,
        other => anyhow::bail!(
            "the server uses flannel backend {other:?}, which this agent does not support"
        ),
    };
    if let Some(v4) = cluster
        .cluster_cidr
        .split(',')
        .map(str::trim)
        .find(|c| !c.contains(':'))
    {
        cfg.settings.cluster_cidr = v4
            .parse()
            .map_err(|e| anyhow::anyhow!("the server's cluster CIDR {v4:?}: {e}"))?;
    }
    if !cluster.cluster_dns.is_empty() {
        cfg.cluster_dns = vec![cluster.cluster_dns.clone()];
    }
    if !cluster.cluster_domain.is_empty() {
        cfg.cluster_domain = cluster.cluster_domain.clone();
    }
    Ok(())
}
