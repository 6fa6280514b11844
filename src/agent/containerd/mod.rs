//! The connection to containerd's core gRPC API: a lazily connected channel over the
//! unix socket, the `containerd-namespace` every request carries, leases that keep
//! half-written content and snapshots away from containerd's garbage collector, and
//! the choice of snapshotter.
//!
//! Everything that talks to containerd (images, runtime) goes through [`Client`]; the
//! child process itself is [`supervisor`]'s.

pub mod supervisor;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    images_client::ImagesClient, introspection_client::IntrospectionClient,
    leases_client::LeasesClient, snapshots::snapshots_client::SnapshotsClient,
    tasks_client::TasksClient, version_client::VersionClient,
};
use containerd_client::services::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest, PluginsRequest,
};
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

pub use supervisor::{Supervisor, SupervisorConfig};

/// The containerd namespace every k3rs object lives in (the one the CRI plugin and
/// k3s use, so `ctr -n k8s.io` shows them).
pub const NAMESPACE: &str = "k8s.io";

/// The runtime shim pods run with.
pub const RUNTIME_RUNC_V2: &str = "io.containerd.runc.v2";

/// Label that makes containerd's garbage collector drop a lease after a while, so a
/// crash in the middle of an import leaves nothing behind for long.
const LEASE_EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// What went wrong while talking to (or running) containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("containerd {op}: {} ({:?})", .status.message(), .status.code())]
    Rpc {
        op: &'static str,
        status: tonic::Status,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd at {socket}: {message}")]
    Unavailable { socket: PathBuf, message: String },
    #[error("containerd answered something unexpected: {0}")]
    Protocol(String),
}

impl Error {
    /// Wraps a gRPC status with the operation that failed.
    pub fn rpc(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |status| Error::Rpc { op, status }
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// The gRPC code, when containerd answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }

    pub fn is_already_exists(&self) -> bool {
        self.code() == Some(tonic::Code::AlreadyExists)
    }
}

/// A handle on containerd: cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    socket: Arc<Path>,
    namespace: Arc<str>,
    snapshotter: Arc<str>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .field("namespace", &self.namespace)
            .field("snapshotter", &self.snapshotter)
            .finish()
    }
}

/// A containerd lease held while content or snapshots are being made. Requests sent
/// with [`Client::leased`] attach what they create to it; [`Client::delete_lease`]
/// releases it once the objects are referenced by an image or a container.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
}

impl Client {
    /// A client for the socket at `socket`. The channel connects on first use (and
    /// reconnects after containerd restarts), so this never blocks and works before
    /// containerd is up.
    pub fn connect_lazy(socket: &Path) -> Result<Client, Error> {
        let path: Arc<Path> = Arc::from(socket);
        let dial = path.clone();
        // The URI is required by tonic but unused: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://[::1]:0")
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let dial = dial.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&*dial).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }));
        Ok(Client {
            channel,
            socket: path,
            namespace: Arc::from(NAMESPACE),
            snapshotter: Arc::from("overlayfs"),
        })
    }

    /// The same connection, working in another containerd namespace.
    pub fn with_namespace(mut self, namespace: &str) -> Client {
        self.namespace = Arc::from(namespace);
        self
    }

    /// The same connection, unpacking images into and creating containers on
    /// `snapshotter`.
    pub fn with_snapshotter(mut self, snapshotter: &str) -> Client {
        self.snapshotter = Arc::from(snapshotter);
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    /// A request carrying our namespace.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.leased(message, None)
    }

    /// A request carrying our namespace and, when given, a lease.
    pub fn leased<T>(&self, message: T, lease: Option<&Lease>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let md = request.metadata_mut();
        if let Ok(ns) = MetadataValue::try_from(&*self.namespace) {
            md.insert("containerd-namespace", ns);
        }
        if let Some(lease) = lease {
            if let Ok(id) = MetadataValue::try_from(lease.id.as_str()) {
                md.insert("containerd-lease", id);
            }
        }
        request
    }

    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    pub fn content(&self) -> ContentClient<Channel> {
        // Manifests and layers can be large; the default 4 MiB decode limit is for
        // messages, and content reads stream in chunks well below it.
        ContentClient::new(self.channel.clone())
    }

    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }

    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    pub fn introspection(&self) -> IntrospectionClient<Channel> {
        IntrospectionClient::new(self.channel.clone())
    }

    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }

    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// containerd's version string (`1.6.20~ds1`); also the readiness probe.
    pub async fn version(&self) -> Result<String, Error> {
        let resp = VersionClient::new(self.channel.clone())
            .version(tonic::Request::new(()))
            .await
            .map_err(Error::rpc("version"))?;
        Ok(resp.into_inner().version)
    }

    /// Picks the snapshotter: `overlayfs` when containerd loaded it, else `native`
    /// (overlay is missing on some kernels and inside some containers). containerd
    /// itself probes overlay support on its root when it loads the plugin, so its
    /// answer is the one that counts, also for an external containerd.
    pub async fn detect_snapshotter(&self) -> Result<String, Error> {
        let plugins = self
            .introspection()
            .plugins(self.request(PluginsRequest {
                filters: vec!["type==io.containerd.snapshotter.v1".to_string()],
            }))
            .await
            .map_err(Error::rpc("list plugins"))?
            .into_inner()
            .plugins;
        let loaded = |id: &str| plugins.iter().any(|p| p.id == id && p.init_err.is_none());
        for candidate in ["overlayfs", "native"] {
            if loaded(candidate) {
                return Ok(candidate.to_string());
            }
        }
        let summary: Vec<String> = plugins
            .iter()
            .map(|p| match &p.init_err {
                Some(e) => format!("{} ({})", p.id, e.message),
                None => p.id.clone(),
            })
            .collect();
        Err(Error::Protocol(format!(
            "neither the overlayfs nor the native snapshotter is loaded; snapshotters: [{}]",
            summary.join(", ")
        )))
    }

    /// Creates a lease that containerd drops by itself after `expire` if we never
    /// delete it (crash mid-import).
    pub async fn create_lease(&self, purpose: &str, expire: Duration) -> Result<Lease, Error> {
        let id = format!("k3rs-{purpose}-{}", unique_suffix());
        let deadline = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(expire).unwrap_or_default())
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let mut labels = std::collections::HashMap::new();
        labels.insert(LEASE_EXPIRE_LABEL.to_string(), deadline.to_string());
        let resp = self
            .leases()
            .create(self.request(CreateLeaseRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(Error::rpc("create lease"))?;
        let id = resp.into_inner().lease.map(|l| l.id).unwrap_or(id);
        Ok(Lease { id })
    }

    /// Releases a lease; what it held is kept only if something else references it.
    pub async fn delete_lease(&self, lease: &Lease) -> Result<(), Error> {
        match self
            .leases()
            .delete(self.request(DeleteLeaseRequest {
                id: lease.id.clone(),
                sync: false,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc("delete lease")(s)),
        }
    }
}

/// The containerd the agent uses: its own child process, or the one
/// `--container-runtime-endpoint` names.
pub enum Containerd {
    Supervised(Supervisor),
    External(Client),
}

impl Containerd {
    /// Starts and supervises our containerd, or, when `endpoint` is given
    /// (`/path/containerd.sock` or `unix:///path/containerd.sock`), waits for that one
    /// to answer (up to `config.ready_timeout`) and uses it.
    pub async fn start(
        config: SupervisorConfig,
        endpoint: Option<&str>,
    ) -> Result<Containerd, Error> {
        let Some(endpoint) = endpoint else {
            return Ok(Containerd::Supervised(Supervisor::start(config).await?));
        };
        let socket = Path::new(endpoint.strip_prefix("unix://").unwrap_or(endpoint));
        let client = Client::connect_lazy(socket)?;
        let deadline = std::time::Instant::now() + config.ready_timeout;
        loop {
            match client.version().await {
                Ok(version) => {
                    tracing::info!(socket = %socket.display(), %version, "using external containerd");
                    break;
                }
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(Error::Unavailable {
                        socket: socket.to_path_buf(),
                        message: format!(
                            "not answering ({e}); is containerd running with this \
                             --container-runtime-endpoint?"
                        ),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let snapshotter = client.detect_snapshotter().await?;
        Ok(Containerd::External(client.with_snapshotter(&snapshotter)))
    }

    pub fn client(&self) -> Client {
        match self {
            Containerd::Supervised(s) => s.client(),
            Containerd::External(c) => c.clone(),
        }
    }

    /// Stops our containerd (an external one is left alone).
    pub async fn shutdown(self) {
        if let Containerd::Supervised(s) = self {
            s.shutdown().await;
        }
    }
}

/// A short string that is unique within this host for the life of the process (and
/// very likely across restarts): for lease ids and temporary snapshot keys.
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}-{}-{n}", nanos, std::process::id())
}

/// The protobuf timestamp as a jiff timestamp (None for unset or out of range).
pub fn timestamp(ts: Option<&prost_types::Timestamp>) -> Option<jiff::Timestamp> {
    let ts = ts?;
    if ts.seconds == 0 && ts.nanos == 0 {
        return None;
    }
    jiff::Timestamp::new(ts.seconds, ts.nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_namespace_and_lease() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let client =
            Client::connect_lazy(Path::new("/nonexistent/containerd.sock")).expect("lazy client");
        let lease = Lease {
            id: "k3rs-test".to_string(),
        };
        let req = client.leased((), Some(&lease));
        let md = req.metadata();
        assert_eq!(
            md.get("containerd-namespace").and_then(|v| v.to_str().ok()),
            Some("k8s.io")
        );
        assert_eq!(
            md.get("containerd-lease").and_then(|v| v.to_str().ok()),
            Some("k3rs-test")
        );
        assert!(client
            .request(())
            .metadata()
            .get("containerd-lease")
            .is_none());
    }

    #[test]
    fn unreachable_socket_is_an_error_not_a_hang() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = rt.block_on(async {
            let client = Client::connect_lazy(Path::new("/nonexistent/containerd.sock"))
                .expect("lazy client");
            client.version().await
        });
        assert!(err.is_err());
    }

    #[test]
    fn timestamps_convert() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        assert_eq!(
            timestamp(Some(&ts)).map(|t| t.as_nanosecond()),
            Some(1_700_000_000_000_000_005)
        );
        assert_eq!(timestamp(Some(&prost_types::Timestamp::default())), None);
    }
}
