//! The agent's images directory (`<data-dir>/agent/images`, k3s's airgap image
//! dir): every image tarball in it (`.tar`, `.tar.gz`/`.tgz`, `.tar.zst`/`.tzst`)
//! is imported when the agent starts, and again whenever a file appears or changes
//! while it runs. The directory is polled on (name, size, mtime), which works on
//! every filesystem; a new or changed file is imported once it stopped changing for
//! one poll, so a tarball still being copied in is not read half-written.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{import_file, is_archive_name, Error, ImportedImage};
use crate::agent::containerd::Client;

/// How often the directory is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(3);

/// (size, mtime) of a file as last seen.
type Stamp = (u64, Option<SystemTime>);

/// Imports every tarball in `dir` now, then keeps importing new and changed ones
/// until `shutdown` turns true (or its sender is dropped).
pub async fn watch_import_dir(client: Client, dir: PathBuf, shutdown: watch::Receiver<bool>) {
    watch_import_dir_every(client, dir, POLL_INTERVAL, shutdown).await
}

/// [`watch_import_dir`] with another poll interval (tests use a short one).
pub async fn watch_import_dir_every(
    client: Client,
    dir: PathBuf,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(dir = %dir.display(), "watching image import directory");
    // Files imported (or failed) at this stamp; files seen changing, not yet stable.
    let mut done: HashMap<PathBuf, Stamp> = HashMap::new();
    let mut pending: HashMap<PathBuf, Stamp> = HashMap::new();
    let mut first = true;
    loop {
        if *shutdown.borrow() {
            return;
        }
        for (path, stamp) in scan(&dir) {
            if done.get(&path) == Some(&stamp) {
                continue;
            }
            // At start the files are at rest; later, wait one poll for copies to end.
            let stable = first || pending.get(&path) == Some(&stamp);
            if !stable {
                pending.insert(path, stamp);
                continue;
            }
            pending.remove(&path);
            tracing::info!(archive = %path.display(), bytes = stamp.0, "importing image archive");
            match import_any(&client, &path).await {
                Ok(images) => {
                    let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
                    tracing::info!(archive = %path.display(), images = ?names, "image archive imported");
                }
                Err(e) => tracing::warn!(archive = %path.display(), error = %e,
                    "image archive import failed; it is retried when the file changes"),
            }
            done.insert(path, stamp);
            if *shutdown.borrow() {
                return;
            }
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// The archives in `dir` and their stamps; a missing dir has none.
fn scan(dir: &Path) -> Vec<(PathBuf, Stamp)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Stamp)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with('.') && is_archive_name(&name)
        })
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file()
                .then(|| (e.path(), (meta.len(), meta.modified().ok())))
        })
        .collect();
    out.sort();
    out
}

fn is_zstd_name(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.ends_with(".tar.zst") || name.ends_with(".tzst")
}

/// Imports a tarball; a zstd one is first decompressed next to it (hidden name,
/// removed afterwards), since the import reads plain and gzip tars.
pub async fn import_any(client: &Client, path: &Path) -> Result<Vec<ImportedImage>, Error> {
    if !is_zstd_name(path) {
        return import_file(client, path).await;
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let plain = path.with_file_name(format!(".k3rs-unzstd-{name}.tar"));
    let (from, to) = (path.to_path_buf(), plain.clone());
    let decoded = tokio::task::spawn_blocking(move || unzstd(&from, &to))
        .await
        .map_err(|e| {
            Error::Format(format!(
                "{}: decompression task failed: {e}",
                path.display()
            ))
        })
        .and_then(|r| r.map_err(|e| Error::Format(format!("{}: {e}", path.display()))));
    let result = match decoded {
        Ok(()) => import_file(client, &plain).await,
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&plain);
    result
}

/// Decompresses every zstd frame of `from` into `to`.
fn unzstd(from: &Path, to: &Path) -> Result<(), String> {
    let file = std::fs::File::open(from).map_err(|e| format!("open: {e}"))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let out = std::fs::File::create(to).map_err(|e| format!("create {}: {e}", to.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    loop {
        let more = reader.fill_buf().map_err(|e| format!("read: {e}"))?;
        if more.is_empty() {
            break;
        }
        let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut reader)
            .map_err(|e| format!("not a zstd stream: {e}"))?;
        std::io::copy(&mut decoder, &mut out).map_err(|e| format!("zstd: {e}"))?;
    }
    out.flush()
        .map_err(|e| format!("write {}: {e}", to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_lists_archives_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "b.tar",
            "a.tar.gz",
            "c.tar.zst",
            "notes.txt",
            ".k3rs-unzstd-x.tar",
        ] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        std::fs::create_dir(dir.path().join("d.tar")).expect("dir");
        let names: Vec<String> = scan(dir.path())
            .into_iter()
            .map(|(p, _)| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, vec!["a.tar.gz", "b.tar", "c.tar.zst"]);
        assert!(scan(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn unzstd_decodes_and_rejects_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let compressed = ruzstd::encoding::compress_to_vec(
            data.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        // Two frames back to back, as parallel compressors write.
        let mut two = compressed.clone();
        two.extend_from_slice(&compressed);
        let from = dir.path().join("x.tar.zst");
        let to = dir.path().join("x.tar");
        std::fs::write(&from, &two).expect("write");
        unzstd(&from, &to).expect("decode");
        let mut want = data.clone();
        want.extend_from_slice(&data);
        assert_eq!(std::fs::read(&to).expect("read"), want);
        std::fs::write(&from, b"not zstd at all").expect("write");
        assert!(unzstd(&from, &to).expect_err("garbage").contains("zstd"));
    }
}
