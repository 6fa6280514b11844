//! The control plane: durable store, HTTPS API, PKI and bootstrap, and the controllers
//! that run in the server process. [`run`] starts it all and stops it on SIGTERM/SIGINT.

pub mod bootstrap;
pub mod controllers;
pub mod encryption;
pub mod http;
pub mod informer;
pub mod join;
pub mod metrics;
pub mod pki;
pub mod rbac;
pub mod registry;
pub mod scheduler;
pub mod serviceaccount;
pub mod services;
pub mod storage;
pub mod store;

use crate::config::ServerConfig;
use anyhow::Context;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn ensure_writable_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("data directory {} cannot be created", dir.display()))?;
    let probe = dir.join(".k3rs-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("data directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        crate::notify::stopping();
        let _ = shutdown_tx.send(true);
    });
    let result = run_until(cfg, shutdown_rx).await;
    signals.abort();
    result
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the server until `shutdown` flips to true.
pub async fn run_until(
    cfg: ServerConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let server_dir = cfg.data_dir.join("server");
    ensure_writable_dir(&server_dir)?;
    let addr = SocketAddr::new(cfg.bind_address, cfg.https_listen_port);
    // Bind first: a busy port should fail fast, before anything is written.
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("listen tcp {addr}: bind: address already in use (is another k3rs or Kubernetes API server running? choose another port with --https-listen-port)")
        } else {
            anyhow::anyhow!("listen tcp {addr}: {e}")
        }
    })?;

    let sans = pki::Sans::for_server(&cfg, &[]);
    let pki = pki::ensure(&server_dir.join("tls"), &sans).context("certificates")?;
    let token = bootstrap::ensure_token(&server_dir, &pki.server_ca_pem, cfg.token.as_deref())
        .context("cluster token")?;
    let tls = Arc::new(pki::server_tls_config(&pki).context("TLS configuration")?);

    let db_path = server_dir.join("db").join("state.db");
    let store = store::sqlite::SqliteStore::open(&db_path, store::sqlite::StoreOptions::default())
        .await
        .with_context(|| format!("opening the datastore {}", db_path.display()))?;
    let store_dyn: Arc<dyn store::Store> = store.clone();
    // Secrets encryption wraps the store when configured (or asked for by the flag).
    let encryption = encryption::Encryption::load(&server_dir, cfg.secrets_encryption)
        .context("secrets encryption")?
        .map(|e| {
            let s = Arc::new(encryption::store::EncryptingStore::new(
                store_dyn.clone(),
                e.clone(),
            ));
            (e, s)
        });
    let api_store: Arc<dyn store::Store> = match &encryption {
        Some((_, s)) => s.clone(),
        None => store_dyn.clone(),
    };
    let registry = registry::Registry::new(api_store);
    registry.set_service_allocator(Arc::new(services::ServiceAllocator::new(
        &cfg.service_cidr,
        cfg.controllers.service_node_port_range,
    )?));
    registry
        .ensure_system_namespaces()
        .await
        .map_err(|e| anyhow::anyhow!("creating system namespaces: {e}"))?;
    scheduler::priority::ensure_system_classes(&registry)
        .await
        .map_err(|e| anyhow::anyhow!("creating the built-in PriorityClasses: {e}"))?;
    rbac::bootstrap::ensure_default_policy(&registry)
        .await
        .map_err(|e| anyhow::anyhow!("creating the default RBAC policy: {e}"))?;
    // Aggregated roles (admin, edit, view) get their rules before the first request.
    rbac::aggregation::sync_once(&registry)
        .await
        .map_err(|e| anyhow::anyhow!("aggregating cluster roles: {e}"))?;
    let authz = rbac::Authorizer::start(registry.clone(), shutdown.clone())
        .await
        .map_err(|e| anyhow::anyhow!("loading the RBAC policy: {e}"))?;

    let local = listener.local_addr().unwrap_or(addr);
    let url_host = match cfg.bind_address {
        IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(a) if a.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    let server_url = format!("https://{url_host}:{}", local.port());
    let kubeconfig = pki::admin_kubeconfig(&server_url, &pki);
    pki::write_private(
        &cfg.write_kubeconfig,
        kubeconfig.as_bytes(),
        cfg.write_kubeconfig_mode,
    )
    .with_context(|| format!("writing kubeconfig {}", cfg.write_kubeconfig.display()))?;
    let advertise_ip = cfg
        .advertise_address
        .or(cfg.agent.node_ip)
        .unwrap_or_else(crate::agent::node::host::default_node_ip);
    services::bootstrap::ensure(
        &registry,
        &services::bootstrap::BuiltinServices {
            api_service_ip: cfg.api_service_ip(),
            dns_service_ip: cfg.cluster_dns(),
            advertise_ip,
            port: local.port(),
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "creating the kubernetes and kube-dns services: {}",
            e.message
        )
    })?;
    let advertise = cfg
        .advertise_address
        .map(|a| a.to_string())
        .unwrap_or_else(|| url_host.clone());

    let service_accounts = Arc::new(
        serviceaccount::ServiceAccounts::new(registry.clone(), &server_dir.join("tls"))
            .context("service-account signing key")?,
    );
    let resource_metrics = metrics::ResourceMetrics::new();
    let state = Arc::new(http::AppState {
        registry: registry.clone(),
        ca_pem: pki.server_ca_pem.clone(),
        server_address: format!("{advertise}:{}", local.port()),
        shutdown: shutdown.clone(),
        ready: Default::default(),
        kubelet_client: http::proxy::KubeletClient::new(&pki).context("kubelet client TLS")?,
        authn: http::auth::Authenticator::new()
            .with_token_authenticator(service_accounts.authenticator()),
        service_accounts: service_accounts.clone(),
        resource_metrics: resource_metrics.clone(),
        authz,
        join: Arc::new(
            join::JoinState::new(
                registry.clone(),
                &server_dir,
                &pki.server_ca_pem,
                &token,
                cfg.agent_token.as_deref(),
                join::ClusterConfig::from_server(&cfg),
            )
            .context("agent token")?
            .with_encryption(encryption),
        ),
    });
    crate::api::defaults::set_default_toleration_seconds(
        cfg.controllers.default_not_ready_toleration_seconds,
        cfg.controllers.default_unreachable_toleration_seconds,
    );
    // Informers and the election stop before the store closes, on every way out.
    let (runtime_stop, runtime_rx) = tokio::sync::watch::channel(false);
    let informers = informer::Informers::new(registry.clone(), runtime_rx.clone());
    let leader = informer::leader::start(
        registry.clone(),
        format!("{}_{}", cfg.node_name, crate::api::meta::new_uid()),
        runtime_rx,
    );
    let grace = cfg.controllers.node_monitor_grace_period;
    let storage_settings = storage::StorageSettings {
        local_storage_path: cfg
            .controllers
            .default_local_storage_path
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join("storage")),
    };
    let leading = {
        let (informers, stop) = (informers.clone(), shutdown.clone());
        let (root_ca, tls_dir) = (pki.server_ca_pem.clone(), server_dir.join("tls"));
        let resource_metrics = resource_metrics.clone();
        informer::leader::run_while_leader(leader, shutdown.clone(), move || {
            vec![
                tokio::spawn(scheduler::run(informers.clone(), stop.clone())),
                tokio::spawn(controllers::node_lifecycle::run(
                    informers.clone(),
                    grace,
                    stop.clone(),
                )),
                tokio::spawn(serviceaccount::controller::run(
                    informers.clone(),
                    root_ca.clone(),
                    stop.clone(),
                )),
                tokio::spawn(serviceaccount::csr::run_signer(
                    informers.clone(),
                    tls_dir.clone(),
                    stop.clone(),
                )),
                tokio::spawn(controllers::endpoints::run(informers.clone(), stop.clone())),
                tokio::spawn(services::lb::run(informers.clone(), stop.clone())),
                tokio::spawn(controllers::replicaset::run(
                    informers.clone(),
                    stop.clone(),
                )),
                tokio::spawn(controllers::deployment::run(
                    informers.clone(),
                    stop.clone(),
                )),
                tokio::spawn(controllers::job::run(informers.clone(), stop.clone())),
                tokio::spawn(controllers::hpa::run(
                    informers.clone(),
                    resource_metrics.clone(),
                    stop.clone(),
                )),
                tokio::spawn(controllers::cronjob::run(informers.clone(), stop.clone())),
                tokio::spawn(controllers::daemonset::run(informers.clone(), stop.clone())),
                tokio::spawn(controllers::statefulset::run(
                    informers.clone(),
                    stop.clone(),
                )),
                tokio::spawn(storage::run(
                    informers.clone(),
                    storage_settings.clone(),
                    stop.clone(),
                )),
            ]
        })
    };
    let controllers = [
        tokio::spawn(leading),
        tokio::spawn(metrics::run_poller(
            registry.clone(),
            Arc::new(http::proxy::KubeletClient::new(&pki).context("kubelet client TLS")?),
            resource_metrics.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(controllers::namespace::run(
            registry.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(controllers::gc::run(registry.clone(), shutdown.clone())),
        tokio::spawn(controllers::events_ttl::run(
            registry.clone(),
            cfg.controllers.event_ttl,
            shutdown.clone(),
        )),
        tokio::spawn(rbac::aggregation::run(registry.clone(), shutdown.clone())),
        tokio::spawn(controllers::node_ipam::run(
            registry.clone(),
            cfg.cluster_cidr.clone(),
            cfg.node_cidr_mask_size,
            shutdown.clone(),
        )),
        tokio::spawn(controllers::manifests::run(
            registry.clone(),
            server_dir.join("manifests"),
            shutdown.clone(),
        )),
    ];
    let server = tokio::spawn(http::serve(listener, tls, state.clone(), shutdown.clone()));
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(url = %server_url, kubeconfig = %cfg.write_kubeconfig.display(), "k3rs server is up and running");
    crate::notify::ready(&format!("API serving at {server_url}"));
    let agent = if cfg.disable_agent {
        tracing::info!("agent disabled: this server runs no workloads");
        None
    } else {
        let agent_dir = cfg.data_dir.join("agent");
        // The local agent reaches the API over loopback with its own node credentials
        // (system:node:<name>), and serves its kubelet endpoint with a certificate for
        // the node's addresses.
        let local_url = format!("https://127.0.0.1:{}", local.port());
        let node_ip = cfg
            .agent
            .node_ip
            .unwrap_or_else(crate::agent::node::host::default_node_ip);
        pki::write_local_agent_files(
            &server_dir.join("tls"),
            &agent_dir,
            &cfg.node_name,
            &[node_ip],
            &local_url,
        )
        .context("agent certificates")?;
        let kubeconfig = agent_dir.join(pki::AGENT_KUBECONFIG);
        let opts = crate::agent::AgentOptions {
            data_dir: cfg.data_dir.clone(),
            node_name: cfg.node_name.clone(),
            kubeconfig,
            control_plane: true,
            cluster_dns: cfg
                .cluster_dns()
                .map(|ip| vec![ip.to_string()])
                .unwrap_or_default(),
            cluster_domain: cfg.cluster_domain.clone(),
            settings: cfg.agent.clone(),
        };
        Some(tokio::spawn(crate::agent::run(opts, shutdown.clone())))
    };

    let result = match agent {
        None => {
            let _ = server.await;
            Ok(())
        }
        Some(mut agent) => {
            let mut server = server;
            tokio::select! {
                _ = &mut server => {
                    let _ = agent.await;
                    Ok(())
                }
                r = &mut agent => {
                    // The agent ended on its own: a start-up failure (no containerd...).
                    let r = match r {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(e.context("agent")),
                        Err(e) => Err(anyhow::anyhow!("agent panicked: {e}")),
                    };
                    if r.is_err() {
                        server.abort();
                    } else {
                        let _ = server.await;
                    }
                    r
                }
            }
        }
    };
    for c in controllers {
        c.abort();
    }
    let _ = runtime_stop.send(true);
    store_dyn
        .close()
        .await
        .map_err(|e| anyhow::anyhow!("closing the datastore: {e}"))?;
    tracing::info!("stopped");
    result
}
