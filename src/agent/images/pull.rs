//! Pulling an image from a registry into containerd, client-side (containerd 1.6 has
//! no transfer service): resolve the reference on the endpoints registries.yaml
//! gives (mirrors first, the registry itself last), with the pod's pull secrets or
//! the configured auth; store the manifest documents, the config and the layers
//! (streamed, digest-checked) in the content store under a lease; unpack for this
//! node's platform and record the image — the same end state as an import, so
//! `Runtime::create` cannot tell the two apart.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::content::{self, Chunk, CHUNK};
use super::credentials::{credentials_for, RegistryCredential};
use super::oci::{self, Descriptor, Index, Manifest, Platform};
use super::reference::{parse, Reference, ReferenceError};
use super::registries::{Endpoint, Registries};
use super::registry::{error_chain, FetchedManifest, RegistryClient, RegistryError};
use super::resolve::{resolve, Blobs};
use super::{finish_unpack, get_image, put_image, Error, ImportedImage, IMPORT_LEASE};
use crate::agent::containerd::{Client, Lease};

/// A layer download that receives nothing for this long is abandoned.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Nested indexes and their manifests fetched per pull, at most.
const MAX_DOCUMENTS: usize = 64;

/// What a pull may use besides the image name.
pub struct PullOptions<'a> {
    /// From the pod's imagePullSecrets ([`super::credentials::credentials_from_secrets`]).
    pub credentials: &'a [RegistryCredential],
    /// The node's registries.yaml.
    pub registries: &'a Registries,
}

/// Why a pull failed; its Display matches containerd's CRI messages, which the
/// kubelet shows in pod events.
#[derive(Debug, thiserror::Error)]
#[error("failed to pull and unpack image {image:?}: {kind}")]
pub struct PullError {
    /// The image as normalised (or as given, when it does not parse).
    pub image: String,
    kind: Kind,
}

#[derive(Debug, thiserror::Error)]
enum Kind {
    #[error(transparent)]
    Reference(ReferenceError),
    #[error("failed to resolve reference {reference:?}: {reference}: not found")]
    NotFound { reference: String },
    #[error("failed to resolve reference {reference:?}: {message}")]
    Resolve {
        reference: String,
        message: String,
        source: RegistryError,
    },
    #[error("failed to fetch {what}: {source}")]
    Fetch {
        what: String,
        #[source]
        source: RegistryError,
    },
    #[error("failed to store {what}: {message}")]
    Store { what: String, message: String },
    #[error(transparent)]
    Image(#[from] Error),
}

impl PullError {
    /// No endpoint has the image (kubelet: `ErrImagePull` with "not found").
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, Kind::NotFound { .. })
    }

    /// The registry refused the credentials (or their absence).
    pub fn is_unauthorized(&self) -> bool {
        match &self.kind {
            Kind::Resolve { source, .. } | Kind::Fetch { source, .. } => source.is_unauthorized(),
            _ => false,
        }
    }

    /// The reference itself is invalid (kubelet: `InvalidImageName`).
    pub fn is_invalid_reference(&self) -> bool {
        matches!(self.kind, Kind::Reference(_))
    }
}

/// Whether an image record named `image` exists (for `imagePullPolicy:
/// IfNotPresent`/`Never`). An invalid name is never present.
pub async fn image_present(client: &Client, image: &str) -> Result<bool, Error> {
    match get_image(client, image).await {
        Ok(_) => Ok(true),
        Err(Error::NotFound(_)) | Err(Error::Reference(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Pulls `image` and unpacks it for this node; returns the image record it wrote.
pub async fn pull(
    client: &Client,
    image: &str,
    opts: &PullOptions<'_>,
) -> Result<ImportedImage, PullError> {
    let reference = parse(image).map_err(|e| PullError {
        image: image.to_string(),
        kind: Kind::Reference(e),
    })?;
    let name = reference.to_string();
    let fail = |kind: Kind| PullError {
        image: name.clone(),
        kind,
    };
    let endpoints = opts.registries.endpoints(&reference);
    let secrets = credentials_for(opts.credentials, &reference.name());
    // Like the kubelet: each matching pull secret in turn, else none (then the
    // endpoint's registries.yaml auth applies).
    let attempts: Vec<Option<&RegistryCredential>> = if secrets.is_empty() {
        vec![None]
    } else {
        secrets.into_iter().map(Some).collect()
    };
    let started = Instant::now();
    tracing::info!(image = %name, "pulling image");
    let mut last = None;
    for secret in attempts {
        let registry = match resolve_on(&reference, &endpoints, secret).await {
            Ok(found) => found,
            Err(kind) => {
                let retry = kind_is_unauthorized(&kind);
                last = Some(kind);
                if retry {
                    continue;
                }
                break;
            }
        };
        let (rc, top) = registry;
        let lease = client
            .create_lease("pull", IMPORT_LEASE)
            .await
            .map_err(|e| fail(Kind::Image(e.into())))?;
        let result = fetch_and_unpack(client, &lease, &rc, &name, top).await;
        if let Err(e) = client.delete_lease(&lease).await {
            tracing::warn!(error = %e, "cannot release pull lease (it expires by itself)");
        }
        match result {
            Ok(mut pulled) => {
                pulled.name = name.clone();
                tracing::info!(image = %name, digest = %pulled.digest, endpoint = %rc.endpoint().host,
                    elapsed = ?started.elapsed(), "pulled image");
                return Ok(pulled);
            }
            Err(kind) => {
                let retry = kind_is_unauthorized(&kind);
                last = Some(kind);
                if !retry {
                    break;
                }
            }
        }
    }
    let kind = last.unwrap_or(Kind::NotFound {
        reference: name.clone(),
    });
    Err(fail(kind))
}

fn kind_is_unauthorized(kind: &Kind) -> bool {
    match kind {
        Kind::Resolve { source, .. } | Kind::Fetch { source, .. } => source.is_unauthorized(),
        _ => false,
    }
}

/// The tag or digest to ask a registry for.
fn manifest_ref(reference: &Reference) -> String {
    reference
        .digest
        .clone()
        .or_else(|| reference.tag.clone())
        .unwrap_or_else(|| "latest".to_string())
}

/// Finds the first endpoint that has the manifest. All 404: not found; otherwise
/// the first other error (containerd's resolver does the same).
async fn resolve_on(
    reference: &Reference,
    endpoints: &[Endpoint],
    secret: Option<&RegistryCredential>,
) -> Result<(RegistryClient, FetchedManifest), Kind> {
    let wanted = manifest_ref(reference);
    let mut first: Option<(String, RegistryError)> = None;
    for endpoint in endpoints {
        let host = endpoint.host.clone();
        let attempt = async {
            let rc = RegistryClient::new(endpoint.clone(), secret)?;
            let manifest = rc.manifest(&wanted).await?;
            Ok::<_, RegistryError>((rc, manifest))
        };
        match attempt.await {
            Ok(found) => return Ok(found),
            Err(e) => {
                tracing::debug!(image = %reference, endpoint = %endpoint.url("manifests", &wanted),
                    error = %e, "endpoint cannot resolve image");
                if !e.is_not_found() && first.is_none() {
                    first = Some((host, e));
                }
            }
        }
    }
    let name = reference.to_string();
    match first {
        None => Err(Kind::NotFound { reference: name }),
        Some((host, source)) => {
            let message = match &source {
                RegistryError::Status { status, .. } => format!(
                    "pulling from host {host} failed with status code [manifests {wanted}]: {status}"
                ),
                other => other.to_string(),
            };
            Err(Kind::Resolve {
                reference: name,
                message,
                source,
            })
        }
    }
}

/// Stores the documents, fetches the layers, unpacks, records the image.
async fn fetch_and_unpack(
    client: &Client,
    lease: &Lease,
    rc: &RegistryClient,
    name: &str,
    top: FetchedManifest,
) -> Result<ImportedImage, Kind> {
    let platform = Platform::host();
    let target = top.descriptor();
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    store_json(client, lease, &target.digest, &top.data).await?;
    let mut queue = VecDeque::from([(target.clone(), top.data.clone())]);
    cache.insert(target.digest.clone(), top.data);
    // Fetch what resolving to this platform will read: the index's manifests that
    // may run here, and their configs.
    while let Some((desc, data)) = queue.pop_front() {
        if oci::is_index(&desc.media_type) {
            let index: Index = serde_json::from_slice(&data)
                .map_err(|e| Kind::Image(Error::Format(format!("index {}: {e}", desc.digest))))?;
            for m in index.manifests {
                let runs_here = m
                    .platform
                    .as_ref()
                    .is_none_or(|p| platform.rank(p).is_some());
                if !runs_here || cache.contains_key(&m.digest) {
                    continue;
                }
                if cache.len() >= MAX_DOCUMENTS {
                    return Err(Kind::Image(Error::Format(format!(
                        "{name}: more than {MAX_DOCUMENTS} manifests to read"
                    ))));
                }
                let child = rc.manifest(&m.digest).await.map_err(|source| Kind::Fetch {
                    what: format!("manifest {}", m.digest),
                    source,
                })?;
                store_json(client, lease, &child.digest, &child.data).await?;
                queue.push_back((child.descriptor(), child.data.clone()));
                cache.insert(child.digest, child.data);
            }
        } else {
            let manifest: Manifest = serde_json::from_slice(&data).map_err(|e| {
                Kind::Image(Error::Format(format!("manifest {}: {e}", desc.digest)))
            })?;
            let config = &manifest.config.digest;
            if !cache.contains_key(config) {
                let bytes = rc.blob_bytes(config).await.map_err(|source| Kind::Fetch {
                    what: format!("config {config}"),
                    source,
                })?;
                store_json(client, lease, config, &bytes).await?;
                cache.insert(config.clone(), bytes);
            }
        }
    }
    let blobs = Blobs {
        client,
        cache: Some(&cache),
    };
    let resolved = resolve(&blobs, name, &target, &platform).await?;
    fetch_layers(client, lease, rc, name, &resolved.manifest_doc.layers).await?;
    let chain_id = finish_unpack(client, lease, &resolved).await?;
    put_image(client, name, &target).await?;
    Ok(ImportedImage {
        name: name.to_string(),
        digest: target.digest.clone(),
        config_digest: resolved.manifest_doc.config.digest.clone(),
        chain_id,
    })
}

async fn store_json(client: &Client, lease: &Lease, digest: &str, data: &[u8]) -> Result<(), Kind> {
    content::write_bytes(client, lease, data.to_vec(), HashMap::new())
        .await
        .map(|_| ())
        .map_err(|e| Kind::Store {
            what: digest.to_string(),
            message: e.to_string(),
        })
}

/// Downloads the layers the content store lacks, one after another, logging each.
async fn fetch_layers(
    client: &Client,
    lease: &Lease,
    rc: &RegistryClient,
    name: &str,
    layers: &[Descriptor],
) -> Result<(), Kind> {
    let total = layers.len();
    let mut bytes_done: i64 = 0;
    for (i, layer) in layers.iter().enumerate() {
        let present = content::size_of(client, &layer.digest)
            .await
            .map_err(|e| Kind::Image(e.into()))?;
        if present == Some(layer.size) {
            tracing::info!(image = %name, layer = i + 1, layers = total, digest = %layer.digest,
                "layer already present");
            continue;
        }
        let started = Instant::now();
        let body = rc.blob(&layer.digest).await.map_err(|source| Kind::Fetch {
            what: format!("layer {}", layer.digest),
            source,
        })?;
        stream_layer(
            client,
            lease,
            layer,
            body,
            &rc.endpoint().url("blobs", &layer.digest),
        )
        .await?;
        bytes_done += layer.size;
        tracing::info!(image = %name, layer = i + 1, layers = total, digest = %layer.digest,
            bytes = layer.size, total_bytes = bytes_done, elapsed = ?started.elapsed(),
            "pulled layer");
    }
    Ok(())
}

/// Streams a blob body into the content store, hashing on the way; containerd
/// checks the digest again at commit.
async fn stream_layer(
    client: &Client,
    lease: &Lease,
    layer: &Descriptor,
    mut body: Incoming,
    url: &str,
) -> Result<(), Kind> {
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    let expected_size = layer.size;
    let feed = async move {
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
        let mut head: Vec<u8> = Vec::new();
        let mut received: i64 = 0;
        loop {
            let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
                Err(_) => return Err(format!("no data for {IDLE_TIMEOUT:?}")),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(error_chain(&e)),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            received += data.len() as i64;
            if received > expected_size {
                return Err(format!(
                    "more than the {expected_size} bytes the manifest says"
                ));
            }
            hasher.update(&data);
            if head.len() < 4 {
                head.extend(data.iter().take(4 - head.len()));
            }
            buf.extend_from_slice(&data);
            if buf.len() >= CHUNK {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK));
                if tx.send(Chunk::Data(full)).await.is_err() {
                    // The store ended the write (it has the blob, or failed): its
                    // result decides.
                    return Ok(());
                }
            }
        }
        if received != expected_size {
            return Err(format!("truncated: {received} of {expected_size} bytes"));
        }
        if !buf.is_empty() && tx.send(Chunk::Data(buf)).await.is_err() {
            return Ok(());
        }
        let digest = oci::digest_string(hasher.finish());
        let _ = tx
            .send(Chunk::End {
                digest,
                head,
                kept: None,
            })
            .await;
        Ok(())
    };
    let write = content::write_stream(
        client,
        lease,
        Some(&layer.digest),
        layer.size,
        rx,
        HashMap::new(),
    );
    let (fed, written) = tokio::join!(feed, write);
    let what = format!("layer {}", layer.digest);
    if let Err(message) = fed {
        return Err(Kind::Fetch {
            what,
            source: RegistryError::Transport {
                url: url.to_string(),
                message,
            },
        });
    }
    written.map(|_| ()).map_err(|e| match e {
        content::WriteError::Digest { expected, actual } => Kind::Fetch {
            what: what.clone(),
            source: RegistryError::Digest {
                what,
                expected,
                actual,
            },
        },
        other => Kind::Store {
            what,
            message: other.to_string(),
        },
    })
}
