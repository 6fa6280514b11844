//! Upstream's atomic writer for configMap, secret, downwardAPI and projected volumes:
//! each version of the content lives in its own timestamped directory
//! (`..2024_01_02_15_04_05.123456`), `..data` is a symlink to the current one swapped
//! with a rename, and each top-level key is a symlink `key -> ..data/key`. A
//! container reading through the keys sees either the old or the new set of files,
//! never a mix, and content that did not change is not rewritten.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU32, Ordering};

use super::IoError;

/// The symlink to the current content directory.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a volume's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits (`defaultMode` or the item's `mode`).
    pub mode: u32,
}

/// Relative path → file, as configMap/secret/downwardAPI items describe it.
pub type Payload = BTreeMap<String, FileProjection>;

/// Why a volume's content could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    #[error("invalid path {path:?} in volume content: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error(transparent)]
    Io(#[from] IoError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AtomicError + 'a {
    move |e| AtomicError::Io(IoError::at(what, path)(e))
}

/// Checks a payload path like upstream's `validatePath` and returns it cleaned.
fn clean_path(path: &str) -> Result<String, AtomicError> {
    let bad = |why| {
        Err(AtomicError::InvalidPath {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return bad("must not be empty");
    }
    if path.len() > 4096 {
        return bad("must be less than or equal to 4096 characters");
    }
    if path.starts_with('/') {
        return bad("must be relative");
    }
    if path.starts_with("..") {
        return bad("must not start with '..'");
    }
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => {
                let p = p.to_str().unwrap_or_default();
                if p.len() > 255 {
                    return bad("each path segment must be at most 255 characters");
                }
                parts.push(p);
            }
            Component::CurDir => {}
            _ => return bad("must not contain '..'"),
        }
    }
    if parts.is_empty() {
        return bad("must name a file");
    }
    Ok(parts.join("/"))
}

/// The bits a file ends up with: fsGroup volumes are made group-readable (upstream's
/// `SetVolumeOwnership` read-only mask).
fn effective_mode(mode: u32, fs_group: Option<u32>) -> u32 {
    let mode = mode & 0o7777;
    if fs_group.is_some() {
        mode | 0o440
    } else {
        mode
    }
}

/// Files (relative paths) under a content directory.
fn walk(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else {
            out.insert(rel);
        }
    }
    Ok(())
}

fn first_component(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Whether the current content equals the payload (same files, bytes and modes).
fn unchanged(current: &Path, payload: &Payload, fs_group: Option<u32>) -> bool {
    let mut existing = BTreeSet::new();
    if walk(current, "", &mut existing).is_err() {
        return false;
    }
    if existing.len() != payload.len() || !payload.keys().all(|k| existing.contains(k)) {
        return false;
    }
    payload.iter().all(|(path, f)| {
        let file = current.join(path);
        let same_mode = std::fs::symlink_metadata(&file)
            .map(|m| m.permissions().mode() & 0o7777 == effective_mode(f.mode, fs_group))
            .unwrap_or(false);
        same_mode && std::fs::read(&file).map(|d| d == f.data).unwrap_or(false)
    })
}

/// A new, uniquely named `..<UTC timestamp>.<n>` directory in `target`.
fn new_ts_dir(target: &Path) -> Result<String, AtomicError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y_%m_%d_%H_%M_%S").to_string();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let suffix = now.subsec_nanosecond() as u32 ^ n.wrapping_mul(2_654_435_761);
        let name = format!("..{stamp}.{suffix}");
        let path = target.join(&name);
        match std::fs::create_dir(&path) {
            Ok(()) => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &path))?;
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create directory", &path)(e)),
        }
    }
}

fn write_payload(dir: &Path, payload: &Payload, fs_group: Option<u32>) -> Result<(), AtomicError> {
    for (rel, f) in payload {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        }
        std::fs::write(&path, &f.data).map_err(io_err("write", &path))?;
        let mode = effective_mode(f.mode, fs_group);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", &path))?;
        if let Some(gid) = fs_group {
            std::os::unix::fs::lchown(&path, None, Some(gid)).map_err(io_err("chown", &path))?;
        }
    }
    Ok(())
}

/// Makes `target` hold exactly `payload`. Returns whether anything was written
/// (`false`: the content was already current).
pub fn write(target: &Path, payload: &Payload, fs_group: Option<u32>) -> Result<bool, AtomicError> {
    let mut clean = Payload::new();
    for (path, f) in payload {
        clean.insert(clean_path(path)?, f.clone());
    }
    let data_link = target.join(DATA_DIR);
    let old_ts = std::fs::read_link(&data_link)
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let mut old_files = BTreeSet::new();
    if let Some(old) = &old_ts {
        let current = target.join(old);
        if unchanged(&current, &clean, fs_group) {
            make_visible(target, &clean)?;
            return Ok(false);
        }
        // A half-removed old directory only means fewer stale keys to clean up.
        let _ = walk(&current, "", &mut old_files);
    }

    let ts_name = new_ts_dir(target)?;
    let ts_path = target.join(&ts_name);
    if let Err(e) = write_payload(&ts_path, &clean, fs_group) {
        let _ = std::fs::remove_dir_all(&ts_path);
        return Err(e);
    }
    let tmp_link = target.join(DATA_DIR_TMP);
    match std::fs::remove_file(&tmp_link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &tmp_link)(e)),
    }
    symlink(&ts_name, &tmp_link).map_err(io_err("symlink", &tmp_link))?;
    // The swap: readers resolve `..data` either to the old or to the new directory.
    std::fs::rename(&tmp_link, &data_link).map_err(io_err("rename", &data_link))?;
    make_visible(target, &clean)?;

    let new_top: BTreeSet<&str> = clean.keys().map(|k| first_component(k)).collect();
    for gone in old_files.iter().map(|k| first_component(k)) {
        if !new_top.contains(gone) {
            let path = target.join(gone);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
        }
    }
    // The old version, and any left by a crash between write and swap.
    let entries = std::fs::read_dir(target).map_err(io_err("read directory", target))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && name.starts_with("..") && name != ts_name {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
        }
    }
    Ok(true)
}

/// The per-key symlinks `key -> ..data/key` for every top-level entry.
fn make_visible(target: &Path, payload: &Payload) -> Result<(), AtomicError> {
    let tops: BTreeSet<&str> = payload.keys().map(|k| first_component(k)).collect();
    for top in tops {
        let path = target.join(top);
        if std::fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        symlink(Path::new(DATA_DIR).join(top), &path).map_err(io_err("symlink", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn payload(entries: &[(&str, &str, u32)]) -> Payload {
        entries
            .iter()
            .map(|(k, v, m)| {
                (
                    k.to_string(),
                    FileProjection {
                        data: v.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    fn read(dir: &Path, key: &str) -> String {
        std::fs::read_to_string(dir.join(key)).expect(key)
    }

    #[test]
    fn writes_swaps_and_cleans_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        assert!(write(
            t,
            &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o600)]),
            None
        )
        .unwrap());
        assert_eq!(read(t, "a"), "1");
        assert_eq!(read(t, "sub/b"), "2");
        let link = std::fs::read_link(t.join("a")).unwrap();
        assert_eq!(link, Path::new("..data/a"));
        let ts1 = std::fs::read_link(t.join(DATA_DIR)).unwrap();
        assert!(ts1.to_string_lossy().starts_with("..20"), "{ts1:?}");
        let mode = std::fs::metadata(t.join("sub/b")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // Same content: nothing rewritten, the same directory stays.
        let inode = std::fs::metadata(t.join("a")).unwrap().ino();
        assert!(!write(
            t,
            &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o600)]),
            None
        )
        .unwrap());
        assert_eq!(std::fs::read_link(t.join(DATA_DIR)).unwrap(), ts1);
        assert_eq!(std::fs::metadata(t.join("a")).unwrap().ino(), inode);

        // Changed content: new directory, old one and dropped keys gone.
        assert!(write(t, &payload(&[("a", "3", 0o644)]), None).unwrap());
        assert_eq!(read(t, "a"), "3");
        let ts2 = std::fs::read_link(t.join(DATA_DIR)).unwrap();
        assert_ne!(ts1, ts2);
        assert!(!t.join(&ts1).exists());
        assert!(std::fs::symlink_metadata(t.join("sub")).is_err());

        // A mode change alone is an update too.
        assert!(write(t, &payload(&[("a", "3", 0o400)]), None).unwrap());
        assert_eq!(
            std::fs::metadata(t.join("a")).unwrap().mode() & 0o777,
            0o400
        );
    }

    #[test]
    fn rejects_escaping_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["/etc/passwd", "../x", "a/../../x", "..data", ""] {
            let err = write(dir.path(), &payload(&[(bad, "x", 0o644)]), None).unwrap_err();
            assert!(
                matches!(err, AtomicError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn empty_payload_makes_empty_volume() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(write(dir.path(), &Payload::new(), None).unwrap());
        assert!(dir.path().join(DATA_DIR).exists());
        assert!(!write(dir.path(), &Payload::new(), None).unwrap());
    }
}
