//! Reading an image archive (an OCI image-layout tar or a docker-save tar, plain or
//! gzip-compressed) in one streaming pass: every blob goes straight into containerd's
//! content store, while the small JSON documents (index, manifests, configs) are kept
//! in memory for the import to interpret afterwards.
//!
//! The tar is read on a blocking thread; its entries travel to the async side through
//! bounded channels, so memory stays at a few chunks however large the layers are.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::content::{self, Chunk, WriteError, CHUNK};
use super::oci::{self, Compression};
use crate::agent::containerd::{Client, Lease};

/// JSON documents above this size are not kept in memory (containerd itself refuses
/// manifests over 4 MiB).
const JSON_MAX: u64 = 4 << 20;

/// Why an archive could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {entry}: {source}")]
    Store {
        path: PathBuf,
        entry: String,
        #[source]
        source: WriteError,
    },
}

/// A blob of the archive now in the content store.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub digest: String,
    pub size: i64,
    /// Sniffed from the first bytes; `None` when the blob was already in the store
    /// and not read again.
    pub compression: Option<Compression>,
}

/// What one pass over an archive found.
#[derive(Debug, Default)]
pub struct Archive {
    /// `index.json` (OCI image layout).
    pub index: Option<Vec<u8>>,
    /// `manifest.json` (docker save).
    pub docker_manifest: Option<Vec<u8>>,
    /// Every stored file by its path in the archive (`blobs/sha256/…`, `<id>/layer.tar`).
    pub files: HashMap<String, StoredFile>,
    /// Small JSON blobs by digest.
    pub json: HashMap<String, Vec<u8>>,
}

enum Item {
    File {
        path: String,
        size: u64,
        keep_json: bool,
        chunks: mpsc::Receiver<Chunk>,
    },
    Failed(String),
}

enum Kind {
    Metadata,
    Skip,
    Blob { expected: Option<String> },
}

fn classify(path: &str) -> Kind {
    match path {
        "index.json" | "manifest.json" => return Kind::Metadata,
        "oci-layout" | "repositories" => return Kind::Skip,
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("blobs/") {
        return match rest.split_once('/') {
            Some(("sha256", hex)) => {
                let digest = format!("sha256:{hex}");
                match oci::sha256_hex(&digest) {
                    Some(_) => Kind::Blob {
                        expected: Some(digest),
                    },
                    None => Kind::Skip,
                }
            }
            _ => Kind::Skip,
        };
    }
    // Legacy docker-save per-layer metadata, unused by containerd.
    if path.ends_with("/json") || path.ends_with("/VERSION") {
        return Kind::Skip;
    }
    Kind::Blob { expected: None }
}

/// Reads the archive at `path`, storing its blobs under `lease`.
pub async fn store(client: &Client, lease: &Lease, path: &Path) -> Result<Archive, ArchiveError> {
    let (items_tx, mut items_rx) = mpsc::channel(1);
    let file_path = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(message) = read_entries(&file_path, &items_tx) {
            let _ = items_tx.blocking_send(Item::Failed(message));
        }
    });
    let result = consume(client, lease, path, &mut items_rx).await;
    // Dropping the receiver stops the reader if we bailed out early.
    drop(items_rx);
    let _ = reader.await;
    result
}

async fn consume(
    client: &Client,
    lease: &Lease,
    path: &Path,
    items: &mut mpsc::Receiver<Item>,
) -> Result<Archive, ArchiveError> {
    let mut archive = Archive::default();
    let read_err = |message: String| ArchiveError::Read {
        path: path.to_path_buf(),
        message,
    };
    while let Some(item) = items.recv().await {
        let (name, size, keep_json, mut chunks) = match item {
            Item::Failed(message) => return Err(read_err(message)),
            Item::File {
                path,
                size,
                keep_json,
                chunks,
            } => (path, size, keep_json, chunks),
        };
        let total = i64::try_from(size).map_err(|_| read_err(format!("{name}: too large")))?;
        match classify(&name) {
            Kind::Skip => {}
            Kind::Metadata => {
                if size > 4 * JSON_MAX {
                    return Err(read_err(format!("{name}: {size} bytes is too large")));
                }
                let mut data = Vec::new();
                while let Some(chunk) = chunks.recv().await {
                    if let Chunk::Data(d) = chunk {
                        data.extend_from_slice(&d);
                    }
                }
                if data.len() as u64 != size {
                    return Err(read_err(format!("{name}: truncated")));
                }
                if name == "index.json" {
                    archive.index = Some(data);
                } else {
                    archive.docker_manifest = Some(data);
                }
            }
            Kind::Blob { expected } => {
                if let Some(digest) = &expected {
                    let present = content::size_of(client, digest).await.map_err(|e| {
                        ArchiveError::Store {
                            path: path.to_path_buf(),
                            entry: name.clone(),
                            source: e.into(),
                        }
                    })?;
                    if present == Some(total) {
                        tracing::debug!(%digest, "blob already in the content store");
                        archive.files.insert(
                            name,
                            StoredFile {
                                digest: digest.clone(),
                                size: total,
                                compression: None,
                            },
                        );
                        continue;
                    }
                }
                let written = content::write_stream(
                    client,
                    lease,
                    expected.as_deref(),
                    total,
                    chunks,
                    HashMap::new(),
                )
                .await
                .map_err(|source| ArchiveError::Store {
                    path: path.to_path_buf(),
                    entry: name.clone(),
                    source,
                })?;
                if keep_json {
                    if let Some(json) = written.kept {
                        archive.json.insert(written.digest.clone(), json);
                    }
                }
                let compression =
                    (!written.head.is_empty()).then(|| Compression::sniff(&written.head));
                archive.files.insert(
                    name,
                    StoredFile {
                        digest: written.digest,
                        size: written.size,
                        compression,
                    },
                );
            }
        }
    }
    Ok(archive)
}

/// The blocking half: opens the file, undoes the outer compression, walks the tar.
/// Returns an error message; a closed channel (the async side gave up) is not one.
fn read_entries(path: &Path, items: &mpsc::Sender<Item>) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("open: {e}"))?;
    let mut buffered = BufReader::with_capacity(CHUNK, file);
    let head = buffered.fill_buf().map_err(|e| format!("read: {e}"))?;
    let reader: Box<dyn Read> = match Compression::sniff(head) {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            return Err("zstd-compressed archives are not supported yet; \
                        decompress it (`zstd -d`) or use gzip"
                .to_string())
        }
    };
    let mut tar = tar::Archive::new(reader);
    let entries = tar
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    let mut saw_any = false;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("bad tar entry: {e}"))?;
        saw_any = true;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let raw = entry
            .path()
            .map_err(|e| format!("bad tar entry name: {e}"))?
            .to_string_lossy()
            .into_owned();
        let name = raw
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        let size = entry.size();
        let keep_json = size <= JSON_MAX;
        let (tx, rx) = mpsc::channel(4);
        let item = Item::File {
            path: name.clone(),
            size,
            keep_json,
            chunks: rx,
        };
        if items.blocking_send(item).is_err() {
            return Ok(());
        }
        stream_entry(&mut entry, size, keep_json, &tx).map_err(|e| format!("{name}: {e}"))?;
    }
    if !saw_any {
        return Err("empty or not a tar archive".to_string());
    }
    Ok(())
}

/// Sends one entry's bytes, then its digest. If the receiver is gone (the blob was
/// skipped or already stored) the rest is still read, to reach the next entry.
fn stream_entry(
    entry: &mut impl Read,
    size: u64,
    keep_json: bool,
    tx: &mpsc::Sender<Chunk>,
) -> std::io::Result<()> {
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let mut head = Vec::with_capacity(4);
    let mut kept: Option<Vec<u8>> = None;
    let mut open = true;
    let mut read_total = 0u64;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < buf.len() {
            let n = entry.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        read_total += filled as u64;
        hasher.update(&buf);
        if head.is_empty() {
            head.extend(buf.iter().take(4));
            if keep_json && buf.first() == Some(&b'{') {
                kept = Some(Vec::with_capacity(size as usize));
            }
        }
        if let Some(k) = kept.as_mut() {
            k.extend_from_slice(&buf);
        }
        if open && tx.blocking_send(Chunk::Data(buf)).is_err() {
            open = false;
        }
    }
    if read_total != size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("truncated: {read_total} of {size} bytes"),
        ));
    }
    if open {
        let digest = oci::digest_string(hasher.finish());
        let _ = tx.blocking_send(Chunk::End { digest, head, kept });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_archive_paths() {
        let hex = "a".repeat(64);
        assert!(matches!(classify("index.json"), Kind::Metadata));
        assert!(matches!(classify("manifest.json"), Kind::Metadata));
        assert!(matches!(classify("oci-layout"), Kind::Skip));
        assert!(matches!(classify("abc/json"), Kind::Skip));
        match classify(&format!("blobs/sha256/{hex}")) {
            Kind::Blob { expected } => assert_eq!(expected, Some(format!("sha256:{hex}"))),
            _ => panic!("blob expected"),
        }
        assert!(matches!(classify("blobs/sha256/nothex"), Kind::Skip));
        assert!(matches!(
            classify("abc/layer.tar"),
            Kind::Blob { expected: None }
        ));
    }

    fn first_error(content: &[u8]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("image.tar");
        std::fs::write(&path, content).expect("write");
        let (tx, _rx) = mpsc::channel(16);
        read_entries(&path, &tx).expect_err("should fail")
    }

    #[test]
    fn unreadable_archives_say_why() {
        assert!(first_error(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]).contains("zstd"));
        assert!(first_error(b"").contains("empty or not a tar"));
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b"garbage").expect("gzip");
            e.finish().expect("gzip")
        };
        let msg = first_error(&gz);
        assert!(msg.contains("tar"), "{msg}");
    }

    #[test]
    fn stream_entry_hashes_and_keeps_json() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let data = br#"{"a":1}"#.to_vec();
        let (tx, mut rx) = mpsc::channel(4);
        let d = data.clone();
        let thread =
            std::thread::spawn(move || stream_entry(&mut d.as_slice(), d.len() as u64, true, &tx));
        let mut got = Vec::new();
        let end = rt.block_on(async {
            loop {
                match rx.recv().await {
                    Some(Chunk::Data(d)) => got.extend(d),
                    Some(Chunk::End { digest, head, kept }) => break Some((digest, head, kept)),
                    None => break None,
                }
            }
        });
        thread.join().expect("thread").expect("stream");
        let (digest, head, kept) = end.expect("end");
        assert_eq!(got, data);
        assert_eq!(digest, oci::sha256_digest(&data));
        assert_eq!(head, b"{\"a\"".to_vec());
        assert_eq!(kept, Some(data));
    }
}
