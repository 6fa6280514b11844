//! A registry for tests: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port with storage in a temp dir (optionally behind htpasswd basic auth,
//! or restarted with TLS), and a small pusher speaking the registry HTTP API v2 that
//! uploads the busybox test image as a Docker schema 2 manifest or a multi-platform
//! OCI index.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::images;

/// Debian's registry on a free loopback port, optionally behind htpasswd auth.
pub struct Registry {
    child: Child,
    pub port: u16,
    /// `user:password` the pusher sends, when auth is on.
    login: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Registry {
    pub fn start(login: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = login {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd: {out:?}");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).expect("write registry config");
        let child = Registry::spawn(dir.path());
        let registry = Registry {
            child,
            port,
            login: login.map(|(u, p)| (u.to_string(), p.to_string())),
            _dir: dir,
        };
        registry.wait_ready(&[200, 401]);
        registry
    }

    fn spawn(dir: &Path) -> Child {
        let log = std::fs::File::create(dir.join("registry.log")).expect("log");
        Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry")
    }

    /// Waits until `GET /v2/` over plain HTTP answers one of `statuses` (a TLS
    /// listener answers plain HTTP with 400).
    pub fn wait_ready(&self, statuses: &[u16]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((status, _, _)) = self.request("GET", "/v2/", &[], &[]) {
                if statuses.contains(&status) {
                    return;
                }
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self._dir.path().join("registry.log"))
                    .unwrap_or_default();
                panic!(
                    "docker-registry did not answer on port {}:\n{log}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Restarts the registry on the same port and storage, serving HTTPS with a
    /// certificate for 127.0.0.1 from a fresh CA; returns the CA's PEM file.
    pub fn restart_with_tls(&mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self._dir.path().to_path_buf();
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "k3rs test registry CA");
        let ca = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let key = rcgen::KeyPair::generate().expect("server key");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
        let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), &ca_key).expect("issuer");
        let cert = params.signed_by(&key, &issuer).expect("sign server cert");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
        let mut config = std::fs::read_to_string(dir.join("config.yml")).expect("config");
        config.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ));
        // `http:` is the last section of the config, so the tls block lands in it.
        assert!(config.contains(&format!("  addr: 127.0.0.1:{}\n  tls:", self.port)));
        std::fs::write(dir.join("config.yml"), config).expect("write config");
        self.child = Registry::spawn(&dir);
        self.wait_ready(&[400]);
        dir.join("ca.pem")
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One HTTP/1.1 request (`Connection: close`); returns status, headers, body.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, HashMap<String, String>, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host(),
            body.len()
        );
        if let Some((user, password)) = &self.login {
            use base64::Engine;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            head.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no header end"))?;
        let text = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = text.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
            body = dechunk(&body);
        }
        Ok((status, headers, body))
    }

    /// Monolithic blob upload (POST, then PUT with the digest), unless present.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = images::sha256(data);
        let (status, _, _) = self
            .request("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], &[])
            .expect("head blob");
        if status == 200 {
            return digest;
        }
        let (status, headers, body) = self
            .request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])
            .expect("start upload");
        assert_eq!(
            status,
            202,
            "start upload: {}",
            String::from_utf8_lossy(&body)
        );
        let location = headers.get("location").expect("upload location").clone();
        let path = location
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or(location);
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, _, body) = self
            .request(
                "PUT",
                &format!("{path}{sep}digest={digest}"),
                &[("Content-Type", "application/octet-stream")],
                data,
            )
            .expect("upload blob");
        assert_eq!(
            status,
            201,
            "upload blob: {}",
            String::from_utf8_lossy(&body)
        );
        digest
    }

    pub fn push_manifest(&self, repo: &str, tag: &str, media_type: &str, data: &[u8]) -> String {
        let (status, _, body) = self
            .request(
                "PUT",
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("Content-Type", media_type)],
                data,
            )
            .expect("put manifest");
        assert_eq!(
            status,
            201,
            "put manifest: {}",
            String::from_utf8_lossy(&body)
        );
        images::sha256(data)
    }

    /// Pushes the busybox test image (gzip layers, Docker schema 2 manifest) for
    /// `arch`; returns (manifest bytes, config digest).
    pub fn push_image(&self, repo: &str, tag: &str, arch: &str) -> (Vec<u8>, String) {
        let layers = [images::rootfs_layer(), images::www_layer()];
        let diff_ids: Vec<String> = layers.iter().map(|l| images::sha256(l)).collect();
        let mut descs = Vec::new();
        for layer in &layers {
            let gz = images::gzip(layer);
            let digest = self.push_blob(repo, &gz);
            descs.push(json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": digest, "size": gz.len(),
            }));
        }
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .expect("config");
        let config_digest = self.push_blob(repo, &config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest, "size": config.len(),
            },
            "layers": descs,
        }))
        .expect("manifest");
        self.push_manifest(
            repo,
            tag,
            "application/vnd.docker.distribution.manifest.v2+json",
            &manifest,
        );
        (manifest, config_digest)
    }

    /// An OCI index for another platform (listed first) and this one; returns
    /// (index digest, this platform's config digest).
    pub fn push_multi_arch(&self, repo: &str, tag: &str) -> (String, String) {
        let other = if images::host_arch() == "amd64" {
            "arm64"
        } else {
            "amd64"
        };
        let (foreign, _) = self.push_image(repo, "foreign", other);
        let (native, config) = self.push_image(repo, "native", images::host_arch());
        let entry = |m: &[u8], arch: &str| {
            json!({
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": images::sha256(m), "size": m.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })
        };
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry(&foreign, other), entry(&native, images::host_arch())],
        }))
        .expect("index");
        let digest =
            self.push_manifest(repo, tag, "application/vnd.oci.image.index.v1+json", &index);
        (digest, config)
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..i]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[i + 2..i + 2 + size]);
        data = &data[i + 2 + size + 2..];
    }
    out
}
