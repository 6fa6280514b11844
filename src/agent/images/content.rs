//! containerd's content store as the image code uses it: streaming a blob in
//! (`Content.Write` with a ref, offsets and the expected digest at commit), reading one
//! back, checking presence, and setting the garbage-collection labels that tie an
//! image's blobs and snapshots to it.

use std::collections::HashMap;

use containerd_client::services::v1::{
    Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use tokio::sync::mpsc;

use crate::agent::containerd::{unique_suffix, Client, Error as CtrdError, Lease};

/// Size of the data messages sent to containerd (its gRPC limit is 16 MiB).
pub const CHUNK: usize = 1 << 20;

/// A piece of a blob on its way into the content store.
pub enum Chunk {
    Data(Vec<u8>),
    /// The blob is complete: its digest as computed while reading, its first bytes
    /// (for sniffing compression) and, when asked for, all of it (small JSON).
    End {
        digest: String,
        head: Vec<u8>,
        kept: Option<Vec<u8>>,
    },
}

/// What a completed write stored.
#[derive(Debug)]
pub struct Written {
    pub digest: String,
    pub size: i64,
    pub head: Vec<u8>,
    pub kept: Option<Vec<u8>>,
}

/// Failure of a blob write.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Containerd(#[from] CtrdError),
    #[error("blob is corrupt: expected {expected}, read {actual}")]
    Digest { expected: String, actual: String },
    #[error("the archive reader stopped in the middle of a blob")]
    Truncated,
}

/// Streams `chunks` into the content store under `lease`. With `expected`, containerd
/// answers "already exists" at once for a blob it has, and that counts as success.
pub async fn write_stream(
    client: &Client,
    lease: &Lease,
    expected: Option<&str>,
    total: i64,
    mut chunks: mpsc::Receiver<Chunk>,
    labels: HashMap<String, String>,
) -> Result<Written, WriteError> {
    let reference = format!("k3rs-import-{}", unique_suffix());
    let (tx, rx) = mpsc::channel::<WriteContentRequest>(4);
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut content = client.content();
    let request = client.leased(requests, Some(lease));
    let call = async move {
        let mut responses = content.write(request).await?.into_inner();
        while let Some(resp) = responses.message().await? {
            if resp.action == WriteAction::Commit as i32 {
                return Ok(Some(resp.digest));
            }
        }
        Ok::<_, tonic::Status>(None)
    };
    let expected_owned = expected.map(str::to_string);
    let feed = async move {
        let mut offset = 0i64;
        loop {
            let msg = match chunks.recv().await {
                Some(Chunk::Data(data)) => {
                    let len = data.len() as i64;
                    let msg = WriteContentRequest {
                        action: WriteAction::Write as i32,
                        r#ref: reference.clone(),
                        total,
                        expected: expected_owned.clone().unwrap_or_default(),
                        offset,
                        data,
                        labels: HashMap::new(),
                    };
                    offset += len;
                    msg
                }
                Some(Chunk::End { digest, head, kept }) => {
                    if let Some(want) = &expected_owned {
                        if *want != digest {
                            return Err(WriteError::Digest {
                                expected: want.clone(),
                                actual: digest,
                            });
                        }
                    }
                    let commit = WriteContentRequest {
                        action: WriteAction::Commit as i32,
                        r#ref: reference.clone(),
                        total: offset,
                        expected: digest.clone(),
                        offset,
                        data: Vec::new(),
                        labels,
                    };
                    // A send error means the call already ended; its result says why.
                    let _ = tx.send(commit).await;
                    return Ok(Written {
                        digest,
                        size: offset,
                        head,
                        kept,
                    });
                }
                None => return Err(WriteError::Truncated),
            };
            if tx.send(msg).await.is_err() {
                // containerd ended the call (error or "already exists"); drain
                // nothing more, the call's result decides.
                return Err(WriteError::Truncated);
            }
        }
    };
    let (call, feed) = tokio::join!(call, feed);
    match (call, feed) {
        (Ok(Some(_)), Ok(written)) => Ok(written),
        // At commit (all read, digest computed) or at open (digest given up front).
        (Err(status), Ok(written)) if status.code() == tonic::Code::AlreadyExists => Ok(written),
        (Err(status), Err(_))
            if status.code() == tonic::Code::AlreadyExists && expected.is_some() =>
        {
            Ok(Written {
                digest: expected.map(str::to_string).unwrap_or_default(),
                size: total,
                head: Vec::new(),
                kept: None,
            })
        }
        (Err(status), _) => Err(CtrdError::rpc("write content")(status).into()),
        (Ok(_), Err(e)) => Err(e),
        (Ok(None), Ok(_)) => Err(CtrdError::Protocol(
            "content write ended without a commit answer".to_string(),
        )
        .into()),
    }
}

/// Stores an in-memory blob (a manifest k3rs writes) and returns its digest.
pub async fn write_bytes(
    client: &Client,
    lease: &Lease,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> Result<String, WriteError> {
    let digest = super::oci::sha256_digest(&data);
    let total = data.len() as i64;
    let (tx, rx) = mpsc::channel(2);
    let head = data.iter().take(4).copied().collect();
    if !data.is_empty() {
        let _ = tx.send(Chunk::Data(data)).await;
    }
    let _ = tx
        .send(Chunk::End {
            digest: digest.clone(),
            head,
            kept: None,
        })
        .await;
    drop(tx);
    // Labels land only on a fresh commit: use `set_labels` for a blob that may exist.
    write_stream(client, lease, Some(&digest), total, rx, labels).await?;
    Ok(digest)
}

/// The blob's size, or `None` when the store does not have it.
pub async fn size_of(client: &Client, digest: &str) -> Result<Option<i64>, CtrdError> {
    match client
        .content()
        .info(client.request(InfoRequest {
            digest: digest.to_string(),
        }))
        .await
    {
        Ok(resp) => Ok(resp.into_inner().info.map(|i| i.size)),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(CtrdError::rpc("content info")(s)),
    }
}

/// Reads up to `limit` bytes of a blob from offset 0 (`limit` 0: all, but refuse more
/// than `max`).
pub async fn read(
    client: &Client,
    digest: &str,
    limit: usize,
    max: usize,
) -> Result<Vec<u8>, CtrdError> {
    let mut stream = client
        .content()
        .read(client.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: limit as i64,
        }))
        .await
        .map_err(CtrdError::rpc("read content"))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream
        .message()
        .await
        .map_err(CtrdError::rpc("read content"))?
    {
        out.extend_from_slice(&msg.data);
        if out.len() > max {
            return Err(CtrdError::Protocol(format!(
                "blob {digest} is larger than the {max} bytes allowed for it"
            )));
        }
        if limit > 0 && out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(out)
}

/// Sets (adds or replaces) labels on a blob, leaving its other labels alone.
pub async fn set_labels(
    client: &Client,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<(), CtrdError> {
    if labels.is_empty() {
        return Ok(());
    }
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    client
        .content()
        .update(client.request(UpdateRequest {
            info: Some(Info {
                digest: digest.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .map_err(CtrdError::rpc("update content labels"))?;
    Ok(())
}

/// The GC labels of a manifest: its config and layers are kept while it is.
pub fn manifest_gc_labels(manifest: &super::oci::Manifest) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    labels.insert(
        "containerd.io/gc.ref.content.config".to_string(),
        manifest.config.digest.clone(),
    );
    for (i, layer) in manifest.layers.iter().enumerate() {
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            layer.digest.clone(),
        );
    }
    labels
}

/// The GC labels of an index: its manifests are kept while it is.
pub fn index_gc_labels(index: &super::oci::Index) -> HashMap<String, String> {
    index
        .manifests
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                format!("containerd.io/gc.ref.content.m.{i}"),
                m.digest.clone(),
            )
        })
        .collect()
}
