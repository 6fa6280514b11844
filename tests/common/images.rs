//! Test images built from Debian's static busybox (package `busybox-static`), so node
//! tests never pull from the internet: a two-layer image (busybox with its applet
//! links; then a web root for httpd), written as an OCI image-layout tar and as a
//! docker-save tar, with correct config, digests and diff IDs.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

/// Applets linked in /bin (what the tests and later httpd/exec tests use).
pub const APPLETS: &[&str] = &[
    "sh", "ash", "echo", "sleep", "httpd", "cat", "wget", "ls", "env", "id", "true", "false", "ps",
    "kill", "mkdir", "rm", "hostname", "ip", "printf", "test", "[", "touch", "grep", "head",
    "tail", "wc", "date", "seq", "nc", "uname", "mount", "tr", "yes",
];

/// Content of /var/www/index.html in the second layer.
pub const INDEX_HTML: &str = "hello from k3rs\n";

/// The static busybox, or a loud failure saying how to get it.
pub fn busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = PathBuf::from(p);
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.is_file() {
                return path;
            }
        }
    }
    panic!(
        "test images need a static busybox at /bin/busybox: install it with \
         `apt-get install busybox-static` (.ci/run does)"
    );
}

/// `sha256:<hex>`.
pub fn sha256(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The platform architecture in Go's names.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    // A fixed mtime keeps the layer (and so every digest) reproducible.
    h.set_mtime(1_700_000_000);
    h
}

fn add_dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    b.append_data(&mut h, path, std::io::empty())
        .expect("tar dir");
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data).expect("tar file");
}

fn add_symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, path, target).expect("tar symlink");
}

/// Layer 1: a minimal root filesystem around busybox.
pub fn rootfs_layer() -> Vec<u8> {
    let busybox = std::fs::read(busybox()).expect("read busybox");
    let mut b = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o755),
        ("root", 0o700),
        ("sys", 0o755),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("var", 0o755),
    ] {
        add_dir(&mut b, dir, mode);
    }
    add_file(&mut b, "bin/busybox", 0o755, &busybox);
    for applet in APPLETS {
        add_symlink(&mut b, &format!("bin/{applet}"), "busybox");
    }
    add_file(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    );
    add_file(&mut b, "etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n");
    b.into_inner().expect("finish layer")
}

/// Layer 2: the web root httpd serves.
pub fn www_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add_dir(&mut b, "var/www", 0o755);
    add_file(&mut b, "var/www/index.html", 0o644, INDEX_HTML.as_bytes());
    b.into_inner().expect("finish layer")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// What the tests need to know about a built image.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Uncompressed layer digests, in order.
    pub diff_ids: Vec<String>,
    /// Chain IDs of the layer stack; the last is the unpacked top snapshot.
    pub chain_ids: Vec<String>,
    pub config_digest: String,
}

struct Parts {
    layers: Vec<Vec<u8>>,
    diff_ids: Vec<String>,
    config: Vec<u8>,
}

fn parts() -> Parts {
    let layers = vec![rootfs_layer(), www_layer()];
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": host_arch(),
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2023-11-14T22:13:20Z", "created_by": "k3rs test: busybox"},
            {"created": "2023-11-14T22:13:20Z", "created_by": "k3rs test: www"},
        ],
    }))
    .expect("config json");
    Parts {
        layers,
        diff_ids,
        config,
    }
}

fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => sha256(format!("{p} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn finish(path: &Path, tar: Vec<u8>, gzip_archive: bool) {
    let data = if gzip_archive { gzip(&tar) } else { tar };
    std::fs::write(path, data).expect("write archive");
}

/// Writes an OCI image-layout tar (gzip layers) naming the image `name` in
/// index.json (`io.containerd.image.name` plus the OCI ref name).
pub fn write_oci_archive(path: &Path, name: &str, gzip_archive: bool) -> BuiltImage {
    let p = parts();
    let mut b = tar::Builder::new(Vec::new());
    add_file(
        &mut b,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    add_dir(&mut b, "blobs", 0o755);
    add_dir(&mut b, "blobs/sha256", 0o755);
    let mut layer_descs = Vec::new();
    for layer in &p.layers {
        let gz = gzip(layer);
        let digest = sha256(&gz);
        add_file(
            &mut b,
            &format!("blobs/sha256/{}", hex(&digest)),
            0o644,
            &gz,
        );
        layer_descs.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": gz.len(),
        }));
    }
    let config_digest = sha256(&p.config);
    add_file(
        &mut b,
        &format!("blobs/sha256/{}", hex(&config_digest)),
        0o644,
        &p.config,
    );
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": p.config.len(),
        },
        "layers": layer_descs,
    }))
    .expect("manifest json");
    let manifest_digest = sha256(&manifest);
    add_file(
        &mut b,
        &format!("blobs/sha256/{}", hex(&manifest_digest)),
        0o644,
        &manifest,
    );
    let tag = name.rsplit(':').next().unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
            "platform": {"architecture": host_arch(), "os": "linux"},
        }],
    }))
    .expect("index json");
    add_file(&mut b, "index.json", 0o644, &index);
    finish(path, b.into_inner().expect("finish archive"), gzip_archive);
    BuiltImage {
        chain_ids: chain_ids(&p.diff_ids),
        diff_ids: p.diff_ids,
        config_digest,
    }
}

/// Writes a classic `docker save` tar (uncompressed `<id>/layer.tar` layers,
/// `<config hex>.json`, manifest.json with RepoTags, repositories).
pub fn write_docker_archive(path: &Path, repo_tag: &str, gzip_archive: bool) -> BuiltImage {
    let p = parts();
    let mut b = tar::Builder::new(Vec::new());
    let mut layer_paths = Vec::new();
    let mut parent: Option<String> = None;
    for (layer, diff_id) in p.layers.iter().zip(&p.diff_ids) {
        // Legacy layer IDs: any unique hex works for the layout.
        let id = hex(&sha256(format!("{parent:?} {diff_id}").as_bytes())).to_string();
        add_dir(&mut b, &id, 0o755);
        add_file(&mut b, &format!("{id}/VERSION"), 0o644, b"1.0");
        let legacy = json!({"id": id, "parent": parent});
        add_file(
            &mut b,
            &format!("{id}/json"),
            0o644,
            &serde_json::to_vec(&legacy).expect("json"),
        );
        add_file(&mut b, &format!("{id}/layer.tar"), 0o644, layer);
        layer_paths.push(format!("{id}/layer.tar"));
        parent = Some(id);
    }
    let config_digest = sha256(&p.config);
    let config_name = format!("{}.json", hex(&config_digest));
    add_file(&mut b, &config_name, 0o644, &p.config);
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [repo_tag],
        "Layers": layer_paths,
    }]))
    .expect("manifest json");
    add_file(&mut b, "manifest.json", 0o644, &manifest);
    let (repo, tag) = repo_tag.rsplit_once(':').unwrap_or((repo_tag, "latest"));
    let repositories = json!({ repo: { tag: parent } });
    add_file(
        &mut b,
        "repositories",
        0o644,
        &serde_json::to_vec(&repositories).expect("json"),
    );
    finish(path, b.into_inner().expect("finish archive"), gzip_archive);
    BuiltImage {
        chain_ids: chain_ids(&p.diff_ids),
        diff_ids: p.diff_ids,
        config_digest,
    }
}

/// Fails loudly unless this is root with containerd, runc and busybox-static: what every
/// test that runs real containers needs. `test` names the test file for the hint.
pub fn require_agent_environment(test: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "{test} tests need root (they run containerd, mount snapshots and create \
             network namespaces): run them as root, e.g. `sudo -E cargo test --test {test}`; \
             CI (.ci/run) runs them as root"
        );
    }
    for bin in ["containerd", "containerd-shim-runc-v2", "runc"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "{bin} is not on PATH: install containerd and runc (`apt-get install containerd runc`)"
        );
    }
    busybox();
}
