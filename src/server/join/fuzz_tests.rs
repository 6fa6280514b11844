//! Property test of the bootstrap endpoints: random methods, paths, credentials, headers and
//! bodies (random bytes, mangled CSRs) never panic and never produce a 5xx; garbage with a
//! valid token is a 4xx, and the node password rule holds throughout.

use super::*;
use crate::server::http::auth::Identity;
use crate::server::store::sqlite::{SqliteStore, StoreOptions};
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn write_ca(dir: &std::path::Path, name: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    cert.pem()
}

fn csr(cn: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
        .into_bytes()
}

#[tokio::test]
async fn random_requests_never_panic_or_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let server_ca = write_ca(&tls, "server-ca");
    write_ca(&tls, "client-ca");
    let store = SqliteStore::open(&dir.path().join("db/state.db"), StoreOptions::default())
        .await
        .unwrap();
    let registry = Registry::new(store);
    registry.ensure_system_namespaces().await.unwrap();
    let token = crate::server::bootstrap::full_token(&server_ca, "goodsecret");
    let cluster = ClusterConfig {
        cluster_cidr: "10.42.0.0/16".into(),
        service_cidr: "10.43.0.0/16".into(),
        cluster_dns: "10.43.0.10".into(),
        cluster_domain: "cluster.local".into(),
        flannel_backend: "none".into(),
    };
    let state = JoinState::new(registry, dir.path(), &server_ca, &token, None, cluster).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let good_auth = format!("Basic {}", b64("node:goodsecret"));
    let good_csr = csr("system:node:n1");
    let paths = [
        "/v1-k3rs/config",
        "/v1-k3rs/readyz",
        "/v1-k3rs/client-ca.crt",
        "/v1-k3rs/server-ca.crt",
        "/v1-k3rs/client-kubelet.crt",
        "/v1-k3rs/serving-kubelet.crt",
        "/v1-k3rs/token",
        "/v1-k3rs/",
        "/v1-k3rs/../etc/passwd",
    ];
    let methods = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let node_cert = Identity::new("system:node:n1", &["system:nodes"]);
    for i in 0..400u32 {
        let method = methods[rng.below(methods.len())].clone();
        let path = paths[rng.below(paths.len())];
        let mut headers = HeaderMap::new();
        let auth = match rng.below(6) {
            0 => None,
            1 => Some(good_auth.clone()),
            2 => Some(format!(
                "Basic {}",
                b64(&String::from_utf8_lossy(&rng.bytes(40)))
            )),
            3 => Some(format!(
                "Bearer {}",
                String::from_utf8_lossy(&rng.bytes(30))
            )),
            4 => Some("Bearer abcdef.0123456789abcdef".into()),
            _ => Some(good_auth.clone()),
        };
        if let Some(a) = auth {
            if let Ok(v) = HeaderValue::from_str(&a) {
                headers.insert(http::header::AUTHORIZATION, v);
            }
        }
        for h in [NODE_NAME_HEADER, NODE_PASSWORD_HEADER, NODE_IP_HEADER] {
            let v: Vec<u8> = match rng.below(4) {
                0 => continue,
                1 => rng.bytes(20),
                _ => match h {
                    NODE_NAME_HEADER => b"n1".to_vec(),
                    NODE_PASSWORD_HEADER => b"pw-one".to_vec(),
                    _ => b"10.0.0.1,::1".to_vec(),
                },
            };
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                headers.insert(h, v);
            }
        }
        let body = match rng.below(4) {
            0 => rng.bytes(300),
            1 => {
                let mut b = good_csr.clone();
                let at = rng.below(b.len());
                b[at] ^= 1 << rng.below(8);
                b
            }
            2 => good_csr.clone(),
            _ => Vec::new(),
        };
        let identity = (rng.below(4) == 0).then_some(&node_cert);
        // A different address each time, so the limiter never makes the test wait.
        let peer = std::net::IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
        let resp = handle_request(
            &state,
            true,
            identity,
            peer,
            &method,
            path,
            &headers,
            bytes::Bytes::from(body),
        )
        .await;
        let code = resp.status().as_u16();
        assert!(code < 500, "request {i}: {method} {path} gave {code}");
    }

    // The password rule held: one Secret for n1, and another password is refused.
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, good_auth.parse().unwrap());
    headers.insert(NODE_NAME_HEADER, "n1".parse().unwrap());
    headers.insert(NODE_PASSWORD_HEADER, "pw-one".parse().unwrap());
    let ok = handle_request(
        &state,
        true,
        None,
        "10.9.9.9".parse().unwrap(),
        &Method::POST,
        "/v1-k3rs/client-kubelet.crt",
        &headers,
        bytes::Bytes::from(good_csr.clone()),
    )
    .await;
    let first = ok.status().as_u16();
    headers.insert(NODE_PASSWORD_HEADER, "pw-two".parse().unwrap());
    let refused = handle_request(
        &state,
        true,
        None,
        "10.9.9.9".parse().unwrap(),
        &Method::POST,
        "/v1-k3rs/client-kubelet.crt",
        &headers,
        bytes::Bytes::from(good_csr),
    )
    .await;
    // Either the fuzzing stored pw-one first (200 now), or a random password won (403 now);
    // a second, different password is always refused once one is stored.
    assert!(first == 200 || first == 403, "{first}");
    assert_eq!(refused.status().as_u16(), 403);
}
