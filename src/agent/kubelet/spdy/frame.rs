//! SPDY/3 frames on the wire: control frames (SYN_STREAM, SYN_REPLY, RST_STREAM,
//! SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE) and data frames, and the header
//! blocks inside them: 32-bit length-prefixed names and values (several values of one
//! name joined by NUL), compressed as one zlib stream per direction primed with the
//! SPDY/3 dictionary and sync-flushed after every block (what moby/spdystream, and so
//! kubectl, speaks).

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::DICTIONARY;

/// Flag on SYN_STREAM, SYN_REPLY, HEADERS and DATA: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// Largest payload a frame can describe (24-bit length).
pub const MAX_FRAME: usize = (1 << 24) - 1;

const VERSION: u16 = 3;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status: the stream was refused or is not known.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: the stream was cancelled.
pub const RST_CANCEL: u32 = 5;

/// Header name/value pairs, names lower-case; a name may repeat.
pub type Headers = Vec<(String, String)>;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// Settings are read and ignored (spdystream sends none and ignores ours).
    Settings,
    Ping(u32),
    GoAway {
        last_good_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of a type SPDY/3 does not define (skipped).
    Unknown(u16),
}

/// A malformed frame or header block.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY protocol error: {0}")]
    Protocol(&'static str),
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("SPDY header block does not decompress: {0}")]
    Compression(String),
}

/// Writes frames; owns the compressing half of the header zlib stream.
pub struct Encoder {
    compress: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        let mut compress = Compress::new(Compression::best(), true);
        // Fails only without a zlib backend; the crate is built with zlib-rs.
        if let Err(e) = compress.set_dictionary(DICTIONARY) {
            tracing::error!(error = %e, "SPDY header dictionary not accepted by zlib");
        }
        Encoder { compress }
    }

    /// Appends `frame`'s bytes to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
        match frame {
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                flags,
                headers,
            } => {
                let block = self.header_block(headers)?;
                control(out, TYPE_SYN_STREAM, *flags, 10 + block.len());
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&(associated_id & 0x7fff_ffff).to_be_bytes());
                out.push((priority & 0x7) << 5);
                out.push(0);
                out.extend_from_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => self.with_headers(out, TYPE_SYN_REPLY, *stream_id, *flags, headers)?,
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => self.with_headers(out, TYPE_HEADERS, *stream_id, *flags, headers)?,
            Frame::RstStream { stream_id, status } => {
                control(out, TYPE_RST_STREAM, 0, 8);
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::Settings => {
                control(out, TYPE_SETTINGS, 0, 4);
                out.extend_from_slice(&0u32.to_be_bytes());
            }
            Frame::Ping(id) => {
                control(out, TYPE_PING, 0, 4);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Frame::GoAway {
                last_good_id,
                status,
            } => {
                control(out, TYPE_GOAWAY, 0, 8);
                out.extend_from_slice(&(last_good_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, TYPE_WINDOW_UPDATE, 0, 8);
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_FRAME {
                    return Err(FrameError::Protocol("data frame longer than 16 MiB"));
                }
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&((*flags as u32) << 24 | data.len() as u32).to_be_bytes());
                out.extend_from_slice(data);
            }
            Frame::Unknown(_) => {
                return Err(FrameError::Protocol("cannot encode an unknown frame"))
            }
        }
        Ok(())
    }

    fn with_headers(
        &mut self,
        out: &mut Vec<u8>,
        kind: u16,
        stream_id: u32,
        flags: u8,
        headers: &Headers,
    ) -> Result<(), FrameError> {
        let block = self.header_block(headers)?;
        control(out, kind, flags, 4 + block.len());
        out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(&block);
        Ok(())
    }

    /// The compressed header block: pairs grouped by name, values NUL-joined.
    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let mut names: Vec<(String, Vec<&str>)> = Vec::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            match names.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => names.push((name, vec![value])),
            }
        }
        let mut plain = (names.len() as u32).to_be_bytes().to_vec();
        for (name, values) in &names {
            let value = values.join("\0");
            plain.extend_from_slice(&(name.len() as u32).to_be_bytes());
            plain.extend_from_slice(name.as_bytes());
            plain.extend_from_slice(&(value.len() as u32).to_be_bytes());
            plain.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let start_in = self.compress.total_in();
        loop {
            let done = (self.compress.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(plain.len() + 64);
            }
            let status = self
                .compress
                .compress_vec(&plain[done..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            let done = (self.compress.total_in() - start_in) as usize;
            // A sync flush is complete once all input is taken and output space remains.
            if done == plain.len() && out.len() < out.capacity() {
                break;
            }
            if status == Status::StreamEnd {
                return Err(FrameError::Compression("zlib stream ended".into()));
            }
        }
        Ok(out)
    }
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, len: usize) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((flags as u32) << 24 | (len as u32 & 0x00ff_ffff)).to_be_bytes());
}

/// Reads frames; owns the decompressing half of the header zlib stream.
pub struct Decoder {
    decompress: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            decompress: Decompress::new(true),
        }
    }

    /// Takes one whole frame off the front of `buf`; `None` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            return Ok(None);
        }
        buf.advance(8);
        let mut body = buf.split_to(len);
        if word & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: word,
                flags,
                data: body.to_vec(),
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = (word & 0xffff) as u16;
        let need = |n: usize| {
            if body.len() < n {
                Err(FrameError::Protocol("control frame too short"))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            TYPE_SYN_STREAM => {
                need(10)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let associated_id = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                body.advance(1);
                Frame::SynStream {
                    stream_id,
                    associated_id,
                    priority,
                    flags,
                    headers: self.headers(&body)?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(4)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let headers = self.headers(&body)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            TYPE_SETTINGS => Frame::Settings,
            TYPE_PING => {
                need(4)?;
                Frame::Ping(body.get_u32())
            }
            TYPE_GOAWAY => {
                need(8)?;
                Frame::GoAway {
                    last_good_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown(other),
        };
        Ok(Some(frame))
    }

    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let plain = self.inflate(compressed)?;
        parse_header_block(&plain)
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let start_in = self.decompress.total_in();
        loop {
            let done = (self.decompress.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let before_out = out.len();
            match self
                .decompress
                .decompress_vec(&input[done..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.decompress
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| FrameError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(FrameError::Compression(e.to_string())),
            }
            let done_now = (self.decompress.total_in() - start_in) as usize;
            if done_now == input.len() && out.len() < out.capacity() {
                break;
            }
            if done_now == done && out.len() == before_out {
                return Err(FrameError::Compression("no progress".into()));
            }
            if out.len() > MAX_FRAME {
                return Err(FrameError::Protocol("header block too large"));
            }
        }
        Ok(out)
    }
}

/// Parses an uncompressed header block.
pub fn parse_header_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], FrameError> {
        if b.len() < n {
            return Err(FrameError::Protocol("header block truncated"));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn word(b: &mut &[u8]) -> Result<usize, FrameError> {
        let w = take(b, 4)?;
        Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as usize)
    }
    let count = word(&mut b)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let n = word(&mut b)?;
        let name = String::from_utf8_lossy(take(&mut b, n)?).to_ascii_lowercase();
        let n = word(&mut b)?;
        let value = String::from_utf8_lossy(take(&mut b, n)?).into_owned();
        for v in value.split('\0') {
            out.push((name.clone(), v.to_string()));
        }
    }
    Ok(out)
}

/// The first value of `name` in `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        // zlib's dictionary id (Adler-32) as computed independently from the spec bytes.
        let (mut a, mut b) = (1u32, 0u32);
        for &x in DICTIONARY {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6a7c2);
    }

    /// Two consecutive header blocks compressed by another zlib (Python's, primed
    /// with the dictionary taken from moby/spdystream), as kubectl would send them.
    #[test]
    fn decodes_header_blocks_compressed_elsewhere() {
        let blocks = [
            hex("78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff"),
            hex("c2aa19540e2512d60b000000ffff"),
        ];
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        for (i, block) in blocks.iter().enumerate() {
            let mut syn = Vec::new();
            control(&mut syn, TYPE_SYN_STREAM, 0, 10 + block.len());
            syn.extend_from_slice(&(2 * i as u32 + 1).to_be_bytes());
            syn.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            syn.extend_from_slice(block);
            buf.extend_from_slice(&syn);
        }
        let first = d.decode(&mut buf).expect("decode").expect("frame");
        let second = d.decode(&mut buf).expect("decode").expect("frame");
        assert!(buf.is_empty());
        assert_eq!(
            first,
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 0,
                flags: 0,
                headers: h(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0")
                ])
            }
        );
        let Frame::SynStream {
            stream_id, headers, ..
        } = second
        else {
            panic!("{second:?}")
        };
        assert_eq!(stream_id, 3);
        assert_eq!(header(&headers, "streamType"), Some("data"));
    }

    #[test]
    fn frames_round_trip_through_encoder_and_decoder() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 5,
                associated_id: 0,
                priority: 3,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "stdout"), ("x", "a"), ("x", "b")]),
            },
            Frame::SynReply {
                stream_id: 5,
                flags: 0,
                headers: vec![],
            },
            Frame::Headers {
                stream_id: 5,
                flags: 0,
                headers: h(&[("streamtype", "stderr")]),
            },
            Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: vec![7; 70000],
            },
            Frame::Data {
                stream_id: 7,
                flags: 0,
                data: vec![],
            },
            Frame::RstStream {
                stream_id: 9,
                status: RST_CANCEL,
            },
            Frame::Ping(42),
            Frame::GoAway {
                last_good_id: 9,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 5,
                delta: 1000,
            },
            Frame::Settings,
        ];
        let mut e = Encoder::new();
        let mut wire = Vec::new();
        for f in &frames {
            e.encode(f, &mut wire).expect("encode");
        }
        let mut d = Decoder::new();
        // Byte by byte: the decoder waits for whole frames.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(1000) {
            buf.extend_from_slice(chunk);
            while let Some(f) = d.decode(&mut buf).expect("decode") {
                got.push(f);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got.len(), frames.len());
        // Repeated names come back as separate pairs in order.
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(&[0x80, 0x02, 0, 1, 0, 0, 0, 0][..]);
        assert!(matches!(d.decode(&mut buf), Err(FrameError::Version(2))));
        let mut syn = Vec::new();
        control(&mut syn, TYPE_SYN_STREAM, 0, 14);
        syn.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        let mut buf = BytesMut::from(&syn[..]);
        assert!(matches!(
            Decoder::new().decode(&mut buf),
            Err(FrameError::Compression(_))
        ));
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
    }
}
