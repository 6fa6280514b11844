//! DNS names the cluster zone understands: where a query name sits relative to the
//! cluster domain, the dashed-IP labels of pod and endpoint records
//! (`10-42-1-5`, `fd00--5`), and reverse (`in-addr.arpa` / `ip6.arpa`) names.
//!
//! Everything here works on lower-case ASCII names without the trailing dot (the zone's
//! keys), so a lookup is one lower-casing of the query name and string slicing after it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `name` relative to `domain`: `Some("")` for the apex, `Some("web.default.svc")` for
/// `web.default.svc.cluster.local`, `None` outside the domain. Both lower case, no
/// trailing dot.
pub fn relative<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    if name == domain {
        return Some("");
    }
    let rest = name.strip_suffix(domain)?;
    rest.strip_suffix('.')
}

/// The label a pod or endpoint IP gets in DNS: dots (IPv4) or colons (IPv6) become
/// dashes (upstream's dns-spec, CoreDNS's `endpointHostname`).
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The IP of a dashed label (`10-42-1-5` → 10.42.1.5, `fd00--5` → fd00::5).
pub fn undashed(label: &str) -> Option<IpAddr> {
    if label.is_empty() || label.len() > 63 {
        return None;
    }
    if label.bytes().filter(|b| *b == b'-').count() == 3 {
        if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
            return Some(IpAddr::V4(v4));
        }
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The address of a reverse name (`5.1.42.10.in-addr.arpa`, or the 32 nibbles of an
/// `ip6.arpa` name); `None` for partial or malformed names.
pub fn reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut labels = rest.split('.');
        for slot in octets.iter_mut().rev() {
            let label = labels.next()?;
            // "01" is not a canonical reverse label; only plain decimals.
            if label.len() > 1 && label.starts_with('0') {
                return None;
            }
            *slot = label.parse().ok()?;
        }
        return labels.next().is_none().then(|| IpAddr::V4(octets.into()));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let mut value: u128 = 0;
    let mut count = 0;
    for label in rest.split('.').collect::<Vec<_>>().into_iter().rev() {
        if label.len() != 1 {
            return None;
        }
        let nibble = u8::from_str_radix(label, 16).ok()?;
        value = (value << 4) | u128::from(nibble);
        count += 1;
    }
    (count == 32).then(|| IpAddr::V6(Ipv6Addr::from(value)))
}

/// The reverse name of `ip` (no trailing dot).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
                s.push('.');
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// The parents of `name` strictly between it and `domain` (`a.b.svc.cluster.local` →
/// `b.svc.cluster.local`, `svc.cluster.local`): names that exist without records of
/// their own (empty non-terminals answer NODATA, not NXDOMAIN).
pub fn parents<'a>(name: &'a str, domain: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let mut rest = name;
    std::iter::from_fn(move || {
        let (_, parent) = rest.split_once('.')?;
        if parent.len() <= domain.len() {
            return None;
        }
        rest = parent;
        Some(parent)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names() {
        let d = "cluster.local";
        assert_eq!(relative("cluster.local", d), Some(""));
        assert_eq!(
            relative("web.default.svc.cluster.local", d),
            Some("web.default.svc")
        );
        assert_eq!(relative("xcluster.local", d), None);
        assert_eq!(relative("example.com", d), None);
    }

    #[test]
    fn dashed_ips_round_trip() {
        let v4: IpAddr = "10.42.1.5".parse().unwrap();
        assert_eq!(dashed(v4), "10-42-1-5");
        assert_eq!(undashed("10-42-1-5"), Some(v4));
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(dashed(v6), "fd00--5");
        assert_eq!(undashed("fd00--5"), Some(v6));
        assert_eq!(undashed("web"), None);
        assert_eq!(undashed("10-42-1"), None);
        assert_eq!(undashed("10-42-1-500"), None);
    }

    #[test]
    fn reverse_names_round_trip() {
        let v4: IpAddr = "10.43.0.10".parse().unwrap();
        assert_eq!(reverse_name(v4), "10.0.43.10.in-addr.arpa");
        assert_eq!(reverse("10.0.43.10.in-addr.arpa"), Some(v4));
        assert_eq!(reverse("0.43.10.in-addr.arpa"), None);
        assert_eq!(reverse("010.0.43.10.in-addr.arpa"), None);
        let v6: IpAddr = "fd00::1:5".parse().unwrap();
        assert_eq!(reverse(&reverse_name(v6)), Some(v6));
        assert_eq!(reverse("1.0.ip6.arpa"), None);
    }

    #[test]
    fn parents_stop_above_the_domain() {
        let p: Vec<&str> = parents("a.web.default.svc.cluster.local", "cluster.local").collect();
        assert_eq!(
            p,
            [
                "web.default.svc.cluster.local",
                "default.svc.cluster.local",
                "svc.cluster.local"
            ]
        );
    }
}
