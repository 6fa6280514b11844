//! Parsers and checks for single flag values (durations, addresses, CIDRs, ports, modes,
//! DNS names): each turns one string into a typed value or says what is wrong with it.

use super::ConfigError;
use std::net::IpAddr;

/// A Go duration such as `40s`, `1m30s` or `500ms` (what kube-controller-manager takes).
pub(super) fn parse_go_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || "not a duration (examples: 40s, 1m30s, 500ms)".to_string();
    let mut rest = s;
    let mut total = std::time::Duration::ZERO;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(bad()),
        };
        total += std::time::Duration::from_secs_f64(n * secs);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A non-negative number of seconds.
pub(super) fn parse_seconds(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| "must be a non-negative number of seconds".to_string())
}

pub(super) fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| "not an IPv4 or IPv6 address".to_string())
}

pub(super) fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err("must be a port number between 1 and 65535".into()),
    }
}

pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "on" => Ok(true),
        "false" | "f" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

pub(super) fn parse_verbosity(s: &str) -> Result<u8, String> {
    s.parse::<u8>()
        .map_err(|_| "must be a number from 0 to 255".into())
}

/// `0644`, `644` or `0o644` → 0o644; at most 0777.
pub(super) fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err("must be an octal file mode such as 0600 or 0644".into());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
    if mode > 0o777 {
        return Err("must be at most 0777".into());
    }
    Ok(mode)
}

/// Parses `a.b.c.d/n` or `ipv6/n`.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("\"{s}\" is not a CIDR (expected address/prefix-length)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("\"{addr}\" is not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = match prefix.parse::<u8>() {
        Ok(p) if p <= max => p,
        _ => return Err(format!("prefix length \"{prefix}\" must be 0 to {max}")),
    };
    Ok((addr, prefix))
}

/// `--node-cidr-mask-size`: an IPv4 prefix length from 8 to 30 (a /31 or /32 leaves no
/// pod addresses).
pub(super) fn parse_node_mask(s: &str) -> Result<u8, String> {
    match s.parse::<u8>() {
        Ok(m) if (8..=30).contains(&m) => Ok(m),
        _ => Err("must be an IPv4 prefix length from 8 to 30".into()),
    }
}

/// Each node subnet must fit in its cluster CIDR: the IPv4 mask (`--node-cidr-mask-size`) and
/// the IPv6 mask (/64) may not be shorter than the cluster CIDR's prefix.
pub(super) fn check_node_masks(cluster_cidr: &str, mask_v4: u8) -> Result<(), ConfigError> {
    for c in cluster_cidr.split(',') {
        let (addr, prefix) = parse_cidr(c).map_err(ConfigError::Other)?;
        if addr.is_ipv4() && mask_v4 < prefix {
            return Err(ConfigError::Other(format!(
                "--node-cidr-mask-size {mask_v4} does not fit in the cluster CIDR {c}: give a \
                 mask of at least {prefix}, or a larger --cluster-cidr"
            )));
        }
        if addr.is_ipv6() && prefix > 64 {
            return Err(ConfigError::Other(format!(
                "the IPv6 cluster CIDR {c} cannot hold the /64 subnet each node gets: give a \
                 prefix of /64 or shorter in --cluster-cidr"
            )));
        }
    }
    Ok(())
}

/// A comma-separated list of one or two CIDRs (dual stack), normalised without spaces.
pub(super) fn parse_cidr_list(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() > 2 {
        return Err("at most two CIDRs (one IPv4, one IPv6) are allowed".into());
    }
    let mut v4 = 0;
    for p in &parts {
        let (addr, _) = parse_cidr(p)?;
        v4 += usize::from(addr.is_ipv4());
    }
    if parts.len() == 2 && v4 != 1 {
        return Err("two CIDRs must be one IPv4 and one IPv6".into());
    }
    Ok(parts.join(","))
}

/// The `n`-th address of the network `addr/prefix` (host bits of `addr` cleared first).
pub fn nth_address(addr: IpAddr, prefix: u8, n: u128) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4(((u32::from(a) & mask).wrapping_add(n as u32)).into())
        }
        IpAddr::V6(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6(((u128::from(a) & mask).wrapping_add(n)).into())
        }
    }
}

/// A DNS name (RFC 1123 subdomain), returned lower-cased.
pub(super) fn parse_dns_name(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if lower.is_empty() || lower.len() > 253 {
        return Err("must be a DNS name of 1 to 253 characters".into());
    }
    for label in lower.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "\"{label}\" is not a valid DNS label (letters, digits and '-', at most 63 \
                 characters, not starting or ending with '-')"
            ));
        }
    }
    Ok(lower)
}

/// A `--tls-san`: an IP address, or a DNS name (optionally `*.` wildcard).
pub(super) fn parse_san(s: &str) -> Result<String, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    match s.strip_prefix("*.") {
        Some(rest) => parse_dns_name(rest).map(|n| format!("*.{n}")),
        None => parse_dns_name(s),
    }
    .map_err(|_| "must be an IP address or a DNS name".to_string())
}
