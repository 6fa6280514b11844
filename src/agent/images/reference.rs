//! Image references: validation and normalisation the way containerd and Docker do it
//! (`busybox` → `docker.io/library/busybox:latest`), so an image imported from a
//! tarball and a pod's `image:` field name the same containerd image.

/// Why an image reference is invalid (the pod gets `InvalidImageName`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: &'static str,
}

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO: &str = "library";
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalised reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port): `docker.io`, `localhost:5000`.
    pub domain: String,
    /// Repository path within the registry: `library/busybox`.
    pub path: String,
    /// Tag, unless the reference pins a digest.
    pub tag: Option<String>,
    /// `sha256:…` when pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")
        } else if let Some(tag) = &self.tag {
            write!(f, ":{tag}")
        } else {
            Ok(())
        }
    }
}

/// Parses and normalises like containerd's `ParseDockerRef`: default domain
/// `docker.io`, `library/` for official images, tag `latest` when there is neither a
/// tag nor a digest, and a digest wins over a tag.
pub fn parse(reference: &str) -> Result<Reference, ReferenceError> {
    let err = |reason| ReferenceError {
        reference: reference.to_string(),
        reason,
    };
    if reference.is_empty() {
        return Err(err("empty"));
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => {
            validate_digest(digest).map_err(err)?;
            (rest, Some(digest.to_string()))
        }
        None => (reference, None),
    };
    // A ':' after the last '/' starts the tag; one before it is a registry port.
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        validate_tag(tag).map_err(err)?;
    }
    if name.is_empty() {
        return Err(err("no repository name"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(err("repository name longer than 255 characters"));
    }
    let (mut domain, mut path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        path = format!("{OFFICIAL_REPO}/{path}");
    }
    validate_domain(&domain).map_err(err)?;
    if path.to_lowercase() != path {
        return Err(err("repository name must be lowercase"));
    }
    for component in path.split('/') {
        validate_component(component).map_err(err)?;
    }
    let tag = match (&digest, tag) {
        (Some(_), _) => None,
        (None, Some(t)) => Some(t.to_string()),
        (None, None) => Some("latest".to_string()),
    };
    Ok(Reference {
        domain,
        path,
        tag,
        digest,
    })
}

/// The normalised string form: `busybox:1.36` → `docker.io/library/busybox:1.36`.
pub fn normalize(reference: &str) -> Result<String, ReferenceError> {
    parse(reference).map(|r| r.to_string())
}

fn validate_digest(digest: &str) -> Result<(), &'static str> {
    let (algo, hex) = digest.split_once(':').ok_or("digest without algorithm")?;
    let hex_ok = |len: usize| {
        hex.len() == len
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match algo {
        "sha256" if hex_ok(64) => Ok(()),
        "sha512" if hex_ok(128) => Ok(()),
        "sha256" | "sha512" => Err("malformed digest"),
        _ => Err("unsupported digest algorithm"),
    }
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    match bytes.first() {
        Some(&b) if word(b) => {}
        _ => return Err("invalid tag"),
    }
    if bytes.len() > 128 || !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') {
        return Err("invalid tag");
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn validate_component(c: &str) -> Result<(), &'static str> {
    const BAD: &str = "invalid repository path component";
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(BAD);
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: one '.', one '_', "__", or any number of '-'.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(BAD);
        }
    }
    Ok(())
}

fn validate_domain(domain: &str) -> Result<(), &'static str> {
    const BAD: &str = "invalid registry host";
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        // [ipv6]:port
        let (inner, after) = rest.split_once(']').ok_or(BAD)?;
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(BAD);
        }
        (None, after.strip_prefix(':'))
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(BAD);
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BAD);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_containerd() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/library/busybox:1",
                "docker.io/library/busybox:1",
            ),
            (
                "rancher/k3s:v1.30.0-k3s1",
                "docker.io/rancher/k3s:v1.30.0-k3s1",
            ),
            ("localhost:5000/foo", "localhost:5000/foo:latest"),
            ("localhost/foo:bar", "localhost/foo:bar"),
            ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
            ("quay.io/coreos/etcd:v3.5.0", "quay.io/coreos/etcd:v3.5.0"),
            ("ghcr.io/a_b/c--d/e.f:x", "ghcr.io/a_b/c--d/e.f:x"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn digest_wins_over_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize(&format!("busybox:1.36@{d}")).as_deref(),
            Ok(format!("docker.io/library/busybox@{d}").as_str())
        );
        let r = parse(&format!("busybox@{d}")).expect("valid");
        assert_eq!(r.tag, None);
        assert_eq!(r.name(), "docker.io/library/busybox");
    }

    #[test]
    fn rejects_invalid_names() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "busybox:1.36 ",
            "foo/Bar",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }
}
