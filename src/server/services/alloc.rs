//! The pure part of Service address allocation: the service CIDR and NodePort range as
//! numbers, what the stored Services already hold, and the pick of a free value.
//!
//! Dynamic picks come from the upper part of each range first, as upstream's allocators do
//! since 1.27: the lower band stays for users who choose addresses and ports by hand, so a
//! hand-picked value rarely collides with a dynamic one.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A service CIDR, as `u128` (IPv4 in the low 32 bits).
#[derive(Clone, Debug)]
pub struct IpRange {
    /// The CIDR as configured (for messages).
    pub cidr: String,
    base: u128,
    bits: u8,
    prefix: u8,
}

impl IpRange {
    /// Parses one CIDR (`10.43.0.0/16`).
    pub fn parse(cidr: &str) -> Result<IpRange, String> {
        let (ip, prefix) = crate::config::parse_cidr(cidr.trim())?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        if bits - prefix < 2 {
            return Err(format!("service CIDR {cidr} is too small"));
        }
        let host = host_mask(prefix, bits);
        Ok(IpRange {
            cidr: cidr.trim().to_string(),
            base: to_u128(ip) & !host,
            bits,
            prefix,
        })
    }

    /// True for an IPv4 range.
    pub fn is_v4(&self) -> bool {
        self.bits == 32
    }

    /// Number of usable offsets: the network address (offset 0) and, for IPv4, the
    /// broadcast address are never handed out. Capped for huge IPv6 ranges.
    fn size(&self) -> u128 {
        let all = host_mask(self.prefix, self.bits)
            .saturating_add(1)
            .min(1 << 64);
        if self.is_v4() {
            all - 2
        } else {
            all - 1
        }
    }

    /// The offset (1-based) of `ip` in this range, or None when it is outside or is the
    /// network/broadcast address.
    pub fn offset(&self, ip: IpAddr) -> Option<u128> {
        if ip.is_ipv4() != self.is_v4() {
            return None;
        }
        let v = to_u128(ip);
        if v & !host_mask(self.prefix, self.bits) != self.base {
            return None;
        }
        let off = v - self.base;
        (off >= 1 && off <= self.size()).then_some(off)
    }

    /// The address at `offset`.
    pub fn at(&self, offset: u128) -> IpAddr {
        let v = self.base + offset;
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::from(v as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(v))
        }
    }

    /// A free address, or None when the range is full. `random` seeds the pick.
    pub fn pick(&self, used: &HashSet<u128>, random: u64) -> Option<IpAddr> {
        let size = self.size();
        // Upstream: the lower min(max(16, size/16), 256) addresses are preferred for static use.
        let band = (size / 16).clamp(16, 256).min(size);
        pick_offset(1, size, band, used, random).map(|o| self.at(o))
    }
}

/// `--service-node-port-range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub base: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            base: 30000,
            last: 32767,
        }
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.base, self.last)
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    /// `30000-32767` (or a single port, or `base+size` as upstream accepts).
    fn from_str(s: &str) -> Result<PortRange, String> {
        let bad = || format!("{s:?} is not a port range (expected e.g. 30000-32767)");
        let s = s.trim();
        let (base, last) = if let Some((a, b)) = s.split_once('-') {
            let a: u16 = a.trim().parse().map_err(|_| bad())?;
            let b: u16 = b.trim().parse().map_err(|_| bad())?;
            (a, b)
        } else if let Some((a, n)) = s.split_once('+') {
            let a: u16 = a.trim().parse().map_err(|_| bad())?;
            let n: u16 = n.trim().parse().map_err(|_| bad())?;
            (a, a.checked_add(n).ok_or_else(bad)?)
        } else {
            let a: u16 = s.parse().map_err(|_| bad())?;
            (a, a)
        };
        if base == 0 || last < base {
            return Err(bad());
        }
        Ok(PortRange { base, last })
    }
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: i64) -> bool {
        port >= i64::from(self.base) && port <= i64::from(self.last)
    }

    /// A free port, or None when the range is full.
    pub fn pick(&self, used: &HashSet<u128>, random: u64) -> Option<u16> {
        let size = u128::from(self.last - self.base) + 1;
        // Upstream: the lower min(max(16, size/32), 128) ports are preferred for static use.
        let band = (size / 32).clamp(16, 128).min(size);
        let used_off: HashSet<u128> = used
            .iter()
            .filter(|p| **p >= u128::from(self.base))
            .map(|p| *p - u128::from(self.base))
            .collect();
        pick_offset(0, size, band, &used_off, random).map(|o| self.base + o as u16)
    }
}

/// A free offset in `first..first+size`: a random start in the upper part (after `band`),
/// then the next free one from there, wrapping over the whole range.
fn pick_offset(
    first: u128,
    size: u128,
    band: u128,
    used: &HashSet<u128>,
    random: u64,
) -> Option<u128> {
    if size == 0 {
        return None;
    }
    let upper = size - band;
    if upper > 0 {
        let start = u128::from(random) % upper;
        // Among `used.len() + 1` consecutive values at least one is free unless the
        // upper band is full; then fall back to the whole range.
        for i in 0..upper.min(used.len() as u128 + 1) {
            let off = first + band + (start + i) % upper;
            if !used.contains(&off) {
                return Some(off);
            }
        }
    }
    (0..size).map(|o| first + o).find(|o| !used.contains(o))
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn host_mask(prefix: u8, bits: u8) -> u128 {
    let host = bits.saturating_sub(prefix);
    if host == 0 {
        0
    } else if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_offsets_exclude_network_and_broadcast() {
        let r = IpRange::parse("10.43.0.0/16").unwrap();
        assert_eq!(r.offset("10.43.0.1".parse().unwrap()), Some(1));
        assert_eq!(r.offset("10.43.0.0".parse().unwrap()), None);
        assert_eq!(r.offset("10.43.255.255".parse().unwrap()), None);
        assert_eq!(r.offset("10.44.0.1".parse().unwrap()), None);
        assert_eq!(r.at(10).to_string(), "10.43.0.10");
    }

    #[test]
    fn dynamic_ips_avoid_the_static_band_and_used_ones() {
        let r = IpRange::parse("10.43.0.0/16").unwrap();
        let mut used = HashSet::new();
        for seed in 0..500u64 {
            let ip = r.pick(&used, seed.wrapping_mul(2654435761)).unwrap();
            let off = r.offset(ip).unwrap();
            assert!(off > 256, "{ip} is in the static band");
            assert!(used.insert(off), "{ip} handed out twice");
        }
    }

    #[test]
    fn a_small_range_fills_up_completely_then_refuses() {
        let r = IpRange::parse("10.0.0.0/29").unwrap();
        let mut used = HashSet::new();
        for seed in 0..6u64 {
            let ip = r.pick(&used, seed * 7).expect("free address");
            assert!(used.insert(r.offset(ip).unwrap()));
        }
        assert_eq!(r.pick(&used, 3), None);
    }

    #[test]
    fn node_ports_come_from_the_range_without_repeats() {
        let range: PortRange = "30000-30099".parse().unwrap();
        let mut used = HashSet::new();
        for seed in 0..100u64 {
            let p = range.pick(&used, seed * 31).expect("free port");
            assert!(range.contains(i64::from(p)));
            assert!(used.insert(u128::from(p)));
        }
        assert_eq!(range.pick(&used, 1), None);
        assert!("32767-30000".parse::<PortRange>().is_err());
        assert_eq!(
            "30000+10".parse::<PortRange>().unwrap(),
            PortRange {
                base: 30000,
                last: 30010
            }
        );
    }
}
