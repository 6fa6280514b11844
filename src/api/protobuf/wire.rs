//! The protobuf wire format, read side: varints, field keys, length-delimited and fixed-size
//! values. Every read is bounds-checked; malformed input is an error, never a panic.

use std::fmt;

/// How a field's value is laid out on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireType {
    Varint,
    Fixed64,
    Len,
    StartGroup,
    EndGroup,
    Fixed32,
}

impl WireType {
    fn from_bits(bits: u64) -> Result<Self, WireError> {
        Ok(match bits {
            0 => Self::Varint,
            1 => Self::Fixed64,
            2 => Self::Len,
            3 => Self::StartGroup,
            4 => Self::EndGroup,
            5 => Self::Fixed32,
            other => return Err(WireError::BadWireType(other as u8)),
        })
    }
}

impl fmt::Display for WireType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Varint => "varint",
            Self::Fixed64 => "64-bit",
            Self::Len => "length-delimited",
            Self::StartGroup => "start-group",
            Self::EndGroup => "end-group",
            Self::Fixed32 => "32-bit",
        })
    }
}

/// What is wrong with the bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    TruncatedVarint,
    VarintOverflow,
    BadWireType(u8),
    BadFieldNumber(u64),
    /// A length prefix larger than what is left.
    LengthPastEnd {
        len: u64,
        left: usize,
    },
    /// A fixed-size value cut short.
    Truncated {
        need: usize,
        left: usize,
    },
    /// Groups are a proto2 feature Kubernetes never uses.
    Group,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TruncatedVarint => f.write_str("truncated varint"),
            Self::VarintOverflow => f.write_str("varint longer than 64 bits"),
            Self::BadWireType(t) => write!(f, "invalid wire type {t}"),
            Self::BadFieldNumber(n) => write!(f, "invalid field number {n}"),
            Self::LengthPastEnd { len, left } => write!(
                f,
                "length {len} runs past the end of the message ({left} bytes left)"
            ),
            Self::Truncated { need, left } => {
                write!(f, "truncated value: need {need} bytes, {left} left")
            }
            Self::Group => f.write_str("groups (wire types 3 and 4) are not supported"),
        }
    }
}

/// A cursor over one message's bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn varint(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(WireError::TruncatedVarint);
            };
            self.pos += 1;
            // The 10th byte may only carry the 64th bit.
            if i == 9 && byte > 1 {
                return Err(WireError::VarintOverflow);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::VarintOverflow)
    }

    /// The next field key: (field number, wire type).
    pub fn key(&mut self) -> Result<(u32, WireType), WireError> {
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(WireError::BadFieldNumber(number));
        }
        Ok((number as u32, WireType::from_bits(key & 7)?))
    }

    /// A length-prefixed value.
    pub fn len_delimited(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        let left = self.left();
        if len > left as u64 {
            return Err(WireError::LengthPastEnd { len, left });
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let left = self.left();
        let bytes = self
            .buf
            .get(self.pos..self.pos + N)
            .ok_or(WireError::Truncated { need: N, left })?;
        self.pos += N;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn fixed64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.fixed::<8>()?))
    }

    pub fn fixed32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.fixed::<4>()?))
    }

    /// Skips a value of a field the schema does not know; says whether it was not the zero
    /// value (0, or no bytes).
    pub fn skip(&mut self, wire: WireType) -> Result<bool, WireError> {
        match wire {
            WireType::Varint => self.varint().map(|v| v != 0),
            WireType::Fixed64 => self.fixed64().map(|v| v != 0),
            WireType::Len => self.len_delimited().map(|b| !b.is_empty()),
            WireType::Fixed32 => self.fixed32().map(|v| v != 0),
            WireType::StartGroup | WireType::EndGroup => Err(WireError::Group),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(Reader::new(&[0x96, 0x01]).varint(), Ok(150));
        assert_eq!(
            Reader::new(&[0x96]).varint(),
            Err(WireError::TruncatedVarint)
        );
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&max).varint(), Ok(u64::MAX));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(Reader::new(&over).varint(), Err(WireError::VarintOverflow));
        let long = [0x80; 11];
        assert_eq!(Reader::new(&long).varint(), Err(WireError::VarintOverflow));
    }

    #[test]
    fn keys_and_lengths() {
        assert_eq!(Reader::new(&[0x0a]).key(), Ok((1, WireType::Len)));
        assert_eq!(
            Reader::new(&[0x07]).key(),
            Err(WireError::BadFieldNumber(0))
        );
        assert_eq!(Reader::new(&[0x0e]).key(), Err(WireError::BadWireType(6)));
        assert_eq!(
            Reader::new(&[0x05, b'a']).len_delimited(),
            Err(WireError::LengthPastEnd { len: 5, left: 1 })
        );
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(matches!(
            Reader::new(&huge).len_delimited(),
            Err(WireError::LengthPastEnd { .. })
        ));
        assert_eq!(
            Reader::new(&[1, 2, 3]).fixed64(),
            Err(WireError::Truncated { need: 8, left: 3 })
        );
        assert_eq!(
            Reader::new(&[]).skip(WireType::StartGroup),
            Err(WireError::Group)
        );
    }
}
