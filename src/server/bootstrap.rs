//! The cluster token (`K10<sha256 of CA>::server:<secret>`). (Being written.)

/// Ensures the token file exists; returns the full token. (Stub.)
pub fn ensure_token(
    _server_dir: &std::path::Path,
    _ca_pem: &str,
    _given: Option<&str>,
) -> Result<String, std::io::Error> {
    Ok(String::new())
}
