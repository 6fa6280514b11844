//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`) as exact numbers, for
//! cgroup limits, emptyDir size limits and the downward API. Values round up like
//! upstream's `Quantity.Value()` / `MilliValue()`.

/// Nano-units per unit: quantities are held as integer nanos so `1n` and `1Ei` fit.
const NANO: i128 = 1_000_000_000;

/// A parsed quantity, in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i128);

/// Why a quantity string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
pub struct QuantityError(pub String);

impl Quantity {
    /// Parses a quantity such as `100m`, `64Mi`, `1.5`, `1e3`.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let err = || QuantityError(s.to_string());
        let s = s.trim();
        let (neg, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(split);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err());
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let digits = format!("{int_part}{frac_part}");
        // More digits than an i128 holds is not a quantity anyone means.
        if digits.len() > 30 {
            return Err(err());
        }
        let mantissa: i128 = digits.parse().map_err(|_| err())?;
        let frac_digits = frac_part.len() as i32;
        // value = mantissa * 10^-frac * multiplier, in nanos.
        let (num, den): (i128, i128) = match suffix {
            "" => (1, 1),
            "Ki" => (1 << 10, 1),
            "Mi" => (1 << 20, 1),
            "Gi" => (1 << 30, 1),
            "Ti" => (1 << 40, 1),
            "Pi" => (1 << 50, 1),
            "Ei" => (1 << 60, 1),
            "n" => (1, 1_000_000_000),
            "u" => (1, 1_000_000),
            "m" => (1, 1_000),
            "k" => (1_000, 1),
            "M" => (1_000_000, 1),
            "G" => (1_000_000_000, 1),
            "T" => (1_000_000_000_000, 1),
            "P" => (1_000_000_000_000_000, 1),
            "E" => (1_000_000_000_000_000_000, 1),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..].parse().map_err(|_| err())?;
                if !(-18..=18).contains(&e) {
                    return Err(err());
                }
                if e >= 0 {
                    (10i128.pow(e as u32), 1)
                } else {
                    (1, 10i128.pow((-e) as u32))
                }
            }
            _ => return Err(err()),
        };
        let den = den
            .checked_mul(10i128.pow(frac_digits as u32))
            .ok_or_else(err)?;
        let scaled = mantissa
            .checked_mul(num)
            .and_then(|v| v.checked_mul(NANO))
            .ok_or_else(err)?;
        // Round up to a whole nano, as upstream rounds toward +infinity.
        let nanos = (scaled + den - 1) / den;
        Ok(Quantity(if neg { -nanos } else { nanos }))
    }

    /// From whole units (bytes, cores).
    pub fn from_units(units: i64) -> Quantity {
        Quantity(units as i128 * NANO)
    }

    /// From thousandths (millicores).
    pub fn from_milli(milli: i64) -> Quantity {
        Quantity(milli as i128 * 1_000_000)
    }

    /// Whole units, rounded up (`Quantity.Value()`).
    pub fn value(self) -> i64 {
        clamp(ceil_div(self.0, NANO))
    }

    /// Thousandths, rounded up (`Quantity.MilliValue()`).
    pub fn milli_value(self) -> i64 {
        clamp(ceil_div(self.0, 1_000_000))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) {
        q + 1
    } else {
        q
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).expect(s)
    }

    #[test]
    fn parses_upstream_forms() {
        assert_eq!(q("500m").milli_value(), 500);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("1.5Gi").value(), 1_610_612_736);
        assert_eq!(q("64Mi").value(), 67_108_864);
        assert_eq!(q("128M").value(), 128_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("1Ki").value(), 1024);
        // Rounds up like Quantity.Value().
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("1n").milli_value(), 1);
        assert_eq!(q("-1").value(), -1);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1.2.3", "1x", "Mi", "."] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }
}
