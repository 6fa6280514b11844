//! Secrets encryption at rest end to end (no root needed): `k3rs server
//! --secrets-encryption` writes an upstream EncryptionConfiguration at k3s's path, the
//! SQLite files never hold a Secret's plaintext, kubectl reads it back, and `k3rs
//! secrets-encrypt status|rotate-keys|reencrypt|disable|enable` behave like k3s's, also
//! across a server restart.

mod common;

use base64::Engine;
use common::{Run, Server};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const PLAINTEXT: &str = "pi-password-9f8e7d6c5b";

/// `k3rs secrets-encrypt <action>` the k3s way: `--data-dir` (the server token is read from
/// it) and `--server`.
fn secrets_encrypt(s: &Server, action: &str) -> Run {
    let server = format!("https://127.0.0.1:{}", s.port);
    run_k3rs(&[
        "secrets-encrypt",
        action,
        "--data-dir",
        s.data_dir().to_str().unwrap(),
        "--server",
        &server,
    ])
}

/// `k3rs secrets-encrypt <action> --kubeconfig <admin kubeconfig>`.
fn secrets_encrypt_admin(s: &Server, action: &str) -> Run {
    run_k3rs(&[
        "secrets-encrypt",
        action,
        "--kubeconfig",
        s.kubeconfig().to_str().unwrap(),
    ])
}

fn run_k3rs(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_k3rs"))
        .args(args)
        .env_remove("K3RS_TOKEN")
        .env_remove("K3RS_URL")
        .env("K3RS_CONFIG_FILE", "/dev/null")
        .output()
        .expect("run k3rs secrets-encrypt");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Everything SQLite has on disk (database and write-ahead log).
fn db_bytes(s: &Server) -> Vec<u8> {
    let db = s.data_dir().join("server/db");
    let mut all = Vec::new();
    for f in ["state.db", "state.db-wal"] {
        all.extend(std::fs::read(db.join(f)).unwrap_or_default());
    }
    assert!(!all.is_empty(), "no database under {}", db.display());
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Whether the database holds the secret's value, as given or base64-encoded (the form the
/// API stores `data` in).
fn db_has_plaintext(s: &Server) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD.encode(PLAINTEXT);
    let db = db_bytes(s);
    contains(&db, PLAINTEXT) || contains(&db, &b64)
}

fn read_back(s: &Server, name: &str) -> String {
    let b64 = s
        .kubectl(&["get", "secret", name, "-o", "jsonpath={.data.password}"])
        .ok()
        .trim()
        .to_string();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64 data");
    String::from_utf8(raw).expect("utf-8")
}

fn create_secret(s: &Server, name: &str) {
    s.kubectl(&[
        "create",
        "secret",
        "generic",
        name,
        &format!("--from-literal=password={PLAINTEXT}"),
    ])
    .ok();
}

#[test]
fn secrets_are_encrypted_at_rest_and_keys_rotate() {
    let mut s = Server::start_with(&["--secrets-encryption"]);
    let config = s.data_dir().join("server/cred/encryption-config.json");
    let doc = std::fs::read_to_string(&config).expect("encryption config at k3s's path");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let v: serde_json::Value = serde_json::from_str(&doc).expect("JSON");
    assert_eq!(v["kind"], "EncryptionConfiguration");
    assert_eq!(v["apiVersion"], "apiserver.config.k8s.io/v1");
    assert_eq!(v["resources"][0]["resources"][0], "secrets");
    assert_eq!(
        v["resources"][0]["providers"][0]["aescbc"]["keys"][0]["name"],
        "aescbckey"
    );
    assert!(v["resources"][0]["providers"][1]["identity"].is_object());

    create_secret(&s, "s1");
    assert_eq!(read_back(&s, "s1"), PLAINTEXT);
    assert!(
        !db_has_plaintext(&s),
        "the secret is in the database in clear"
    );
    assert!(contains(&db_bytes(&s), "k8s:enc:aescbc:v1:aescbckey:"));
    // Other resources are not encrypted.
    s.kubectl(&[
        "create",
        "configmap",
        "c1",
        "--from-literal=k=visible-config-value",
    ])
    .ok();
    assert!(contains(&db_bytes(&s), "visible-config-value"));

    let expected = "Encryption Status: Enabled\nCurrent Rotation Stage: start\nServer Encryption Hashes: All hashes match\n\nActive  Key Type  Name\n------  --------  ----\n *      AES-CBC   aescbckey\n";
    assert_eq!(secrets_encrypt(&s, "status").ok(), expected);
    assert_eq!(secrets_encrypt_admin(&s, "status").ok(), expected);

    // rotate-keys: a new key named like k3s's, every secret rewritten with it.
    let out = secrets_encrypt(&s, "rotate-keys");
    assert!(out.ok().contains("keys rotated"), "{}", out.stdout);
    let status = secrets_encrypt(&s, "status");
    let text = status.ok();
    assert!(
        text.contains("Current Rotation Stage: reencrypt_finished"),
        "{text}"
    );
    let active = text
        .lines()
        .find(|l| l.starts_with(" *"))
        .expect("an active key");
    assert!(active.contains("AES-CBC   aescbckey-20"), "{text}");
    let new_key = active.rsplit(' ').next().unwrap().to_string();
    assert!(contains(
        &db_bytes(&s),
        &format!("k8s:enc:aescbc:v1:{new_key}:")
    ));
    secrets_encrypt(&s, "reencrypt").ok();
    assert_eq!(read_back(&s, "s1"), PLAINTEXT);

    // A restart reads the configuration back.
    s.restart();
    s.kubectl(&["get", "ns", "default"]).ok();
    assert_eq!(read_back(&s, "s1"), PLAINTEXT);
    assert!(secrets_encrypt(&s, "status")
        .ok()
        .contains(&format!(" *      AES-CBC   {new_key}")));

    // disable: new writes are plaintext (identity) and still read; enable again encrypts.
    assert!(secrets_encrypt(&s, "disable").ok().contains("disabled"));
    assert!(secrets_encrypt(&s, "status")
        .ok()
        .starts_with("Encryption Status: Disabled\n"));
    create_secret(&s, "s2");
    assert_eq!(read_back(&s, "s2"), PLAINTEXT);
    assert!(db_has_plaintext(&s), "identity writes plaintext");
    assert!(secrets_encrypt(&s, "enable").ok().contains("enabled"));
    secrets_encrypt(&s, "reencrypt").ok();
    assert_eq!(read_back(&s, "s1"), PLAINTEXT);
    assert_eq!(read_back(&s, "s2"), PLAINTEXT);
}

#[test]
fn without_the_flag_status_says_disabled() {
    let s = Server::start();
    let status = secrets_encrypt(&s, "status");
    assert_eq!(
        status.ok().trim(),
        "Encryption Status: Disabled, no configuration file found"
    );
    let err = secrets_encrypt(&s, "rotate-keys");
    assert_ne!(err.code, 0);
    assert!(
        err.stderr.contains("--secrets-encryption"),
        "{}",
        err.stderr
    );
}
