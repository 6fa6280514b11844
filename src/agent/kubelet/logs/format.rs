//! What `kubectl logs` shows for CRI log lines: parsing `<RFC3339Nano> <stream> <P|F>
//! <content>`, joining partial (`P`) pieces into whole lines per stream, the options
//! that filter and shape them (stream, since, timestamps, tail, limitBytes), and the
//! output bytes (content, optionally prefixed with upstream's fixed-width
//! RFC3339Nano timestamp).

use std::collections::VecDeque;

use crate::server::http::request::Query;

/// Which container output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One parsed CRI record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub at: jiff::Timestamp,
    pub stream: Stream,
    /// `P`: a piece of a longer (or unterminated) line.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one CRI record (without its newline); `None` when malformed.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let at = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Record {
        at,
        stream,
        partial,
        content: parts.next().unwrap_or(b""),
    })
}

/// A whole log line (or the unterminated rest of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When its first piece was written.
    pub at: jiff::Timestamp,
    pub stream: Stream,
    /// Content with its newline (none for an unterminated rest).
    pub content: Vec<u8>,
}

/// Joins partial records into lines, one pending line per stream (the streams'
/// pieces interleave in the file).
#[derive(Debug, Default)]
pub struct Assembler {
    pending: [Option<(jiff::Timestamp, Vec<u8>)>; 2],
}

impl Assembler {
    /// Feeds one record; returns the line it completes.
    pub fn push(&mut self, r: &Record<'_>) -> Option<Line> {
        let slot = &mut self.pending[r.stream as usize];
        let (at, mut content) = slot.take().unwrap_or((r.at, Vec::new()));
        content.extend_from_slice(r.content);
        if r.partial {
            *slot = Some((at, content));
            return None;
        }
        content.push(b'\n');
        Some(Line {
            at,
            stream: r.stream,
            content,
        })
    }

    /// The unterminated rests (at the end of the logs), oldest first.
    pub fn flush(&mut self) -> Vec<Line> {
        let mut out: Vec<Line> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .filter_map(|s| {
                self.pending[s as usize].take().map(|(at, content)| Line {
                    at,
                    stream: s,
                    content,
                })
            })
            .collect();
        out.sort_by_key(|l| l.at);
        out
    }
}

/// `kubectl logs` options, from the query of `/containerLogs/...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Only lines written at or after this.
    pub since: Option<jiff::Timestamp>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
    /// Only this stream (`stream=Stdout|Stderr`); `None`: both.
    pub stream: Option<Stream>,
}

impl LogOptions {
    /// Parses and validates like upstream (`PodLogOptions`); `now` anchors
    /// `sinceSeconds`. The error is the message for a 400.
    pub fn parse(query: &Query, now: jiff::Timestamp) -> Result<LogOptions, String> {
        let flag = |k: &str| -> Result<bool, String> {
            match query.get(k) {
                None => Ok(false),
                Some(v) => match v {
                    "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
                    "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
                    _ => Err(format!("invalid value {v:?} for {k}: must be a boolean")),
                },
            }
        };
        let int = |k: &str| -> Result<Option<i64>, String> {
            query
                .get(k)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| format!("invalid value {v:?} for {k}: must be an integer"))
                })
                .transpose()
        };
        let mut o = LogOptions {
            follow: flag("follow")?,
            previous: flag("previous")?,
            timestamps: flag("timestamps")?,
            ..Default::default()
        };
        if let Some(n) = int("tailLines")? {
            if n < 0 {
                return Err("tailLines: Invalid value: must be greater than or equal to 0".into());
            }
            o.tail = Some(n as usize);
        }
        if let Some(n) = int("limitBytes")? {
            if n < 1 {
                return Err("limitBytes: Invalid value: must be greater than 0".into());
            }
            o.limit_bytes = Some(n as u64);
        }
        let since_seconds = int("sinceSeconds")?;
        let since_time = query.get("sinceTime");
        if since_seconds.is_some() && since_time.is_some() {
            return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into());
        }
        if let Some(s) = since_seconds {
            if s < 1 {
                return Err("sinceSeconds: Invalid value: must be greater than 0".into());
            }
            o.since = Some(
                now.checked_sub(jiff::SignedDuration::from_secs(s))
                    .unwrap_or(jiff::Timestamp::MIN),
            );
        }
        if let Some(t) = since_time {
            o.since = Some(
                t.parse()
                    .map_err(|_| format!("invalid value {t:?} for sinceTime: must be RFC 3339"))?,
            );
        }
        o.stream = match query.get("stream") {
            None | Some("") | Some("All") => None,
            Some("Stdout") => Some(Stream::Stdout),
            Some("Stderr") => Some(Stream::Stderr),
            Some(s) => {
                return Err(format!(
                    "invalid value {s:?} for stream: must be All, Stdout or Stderr"
                ))
            }
        };
        if o.tail.is_some() && o.stream.is_some() {
            return Err("tailLines and specific stream are mutually exclusive for now".into());
        }
        Ok(o)
    }
}

/// upstream's `RFC3339NanoFixed`: always nine fractional digits.
pub fn timestamp_fixed(at: jiff::Timestamp) -> String {
    format!(
        "{}.{:09}Z",
        at.strftime("%Y-%m-%dT%H:%M:%S"),
        at.subsec_nanosecond()
    )
}

/// Applies the options to lines and turns them into output bytes: filters, tail
/// buffer (while reading what already exists), timestamps, byte limit.
#[derive(Debug)]
pub struct Shaper {
    opts: LogOptions,
    remaining: Option<u64>,
    tail: Option<VecDeque<Line>>,
}

impl Shaper {
    pub fn new(opts: &LogOptions) -> Shaper {
        Shaper {
            opts: opts.clone(),
            remaining: opts.limit_bytes,
            tail: opts.tail.map(|n| VecDeque::with_capacity(n.min(4096))),
        }
    }

    /// Whether the byte limit is used up (the response ends).
    pub fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Feeds a line; output bytes to send now (nothing while tail-buffering).
    pub fn line(&mut self, line: Line) -> Vec<u8> {
        if self.opts.stream.is_some_and(|s| s != line.stream)
            || self.opts.since.is_some_and(|s| line.at < s)
        {
            return Vec::new();
        }
        if let Some(buf) = self.tail.as_mut() {
            let n = self.opts.tail.unwrap_or(0);
            if n == 0 {
                return Vec::new();
            }
            if buf.len() == n {
                buf.pop_front();
            }
            buf.push_back(line);
            return Vec::new();
        }
        self.render(&line)
    }

    /// Ends tail buffering (the existing logs were read): the buffered last lines.
    pub fn end_of_backlog(&mut self) -> Vec<u8> {
        let Some(buf) = self.tail.take() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for line in buf {
            out.extend(self.render(&line));
        }
        out
    }

    fn render(&mut self, line: &Line) -> Vec<u8> {
        if self.done() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(line.content.len() + 32);
        if self.opts.timestamps {
            out.extend_from_slice(timestamp_fixed(line.at).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&line.content);
        if let Some(left) = self.remaining.as_mut() {
            if out.len() as u64 > *left {
                out.truncate(*left as usize);
            }
            *left -= out.len() as u64;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2024-05-01T10:00:00.000000001Z stdout F one
2024-05-01T10:00:01.5Z stderr P err-
2024-05-01T10:00:02Z stdout P two-a
2024-05-01T10:00:03Z stderr F part
2024-05-01T10:00:04Z stdout F -two-b
garbage line
2024-05-01T10:00:05Z stdout F three
2024-05-01T10:00:06Z stdout P tail-without-newline";

    /// Everything in LOG, as `kubectl logs` shows it.
    const ALL: &str = "one\nerr-part\ntwo-a-two-b\nthree\ntail-without-newline";

    fn run(opts: &LogOptions) -> String {
        let mut asm = Assembler::default();
        let mut shaper = Shaper::new(opts);
        let mut out = Vec::new();
        for l in LOG.lines() {
            if let Some(r) = parse_record(l.as_bytes()) {
                if let Some(line) = asm.push(&r) {
                    out.extend(shaper.line(line));
                }
            }
        }
        for line in asm.flush() {
            out.extend(shaper.line(line));
        }
        out.extend(shaper.end_of_backlog());
        String::from_utf8(out).expect("utf8")
    }

    fn query(q: &str) -> Query {
        Query::parse(Some(q))
    }

    fn opts(q: &str) -> LogOptions {
        LogOptions::parse(&query(q), "2024-05-01T10:00:10Z".parse().expect("ts")).expect("options")
    }

    #[test]
    fn partial_lines_are_joined_per_stream() {
        assert_eq!(run(&opts("")), ALL);
    }

    #[test]
    fn tail_counts_whole_lines() {
        assert_eq!(run(&opts("tailLines=2")), "three\ntail-without-newline");
        assert_eq!(run(&opts("tailLines=0")), "");
        assert_eq!(run(&opts("tailLines=100")), ALL);
    }

    #[test]
    fn since_filters_by_the_first_piece_time() {
        assert_eq!(run(&opts("sinceSeconds=6")), "three\ntail-without-newline");
        assert_eq!(
            run(&opts("sinceTime=2024-05-01T10:00:01Z")),
            "err-part\ntwo-a-two-b\nthree\ntail-without-newline"
        );
    }

    #[test]
    fn timestamps_are_fixed_width_rfc3339_nano() {
        let out = run(&opts("timestamps=true&tailLines=3"));
        assert_eq!(
            out,
            "2024-05-01T10:00:02.000000000Z two-a-two-b\n\
             2024-05-01T10:00:05.000000000Z three\n\
             2024-05-01T10:00:06.000000000Z tail-without-newline"
        );
        assert_eq!(
            timestamp_fixed("2024-05-01T10:00:00.000000001Z".parse().expect("ts")),
            "2024-05-01T10:00:00.000000001Z"
        );
    }

    #[test]
    fn limit_bytes_truncates_mid_line() {
        assert_eq!(run(&opts("limitBytes=10")), "one\nerr-pa");
        let mut s = Shaper::new(&opts("limitBytes=3"));
        let l = Line {
            at: jiff::Timestamp::UNIX_EPOCH,
            stream: Stream::Stdout,
            content: b"abcdef\n".to_vec(),
        };
        assert_eq!(s.line(l.clone()), b"abc");
        assert!(s.done());
        assert!(s.line(l).is_empty());
    }

    #[test]
    fn stream_selection() {
        assert_eq!(run(&opts("stream=Stderr")), "err-part\n");
    }

    #[test]
    fn invalid_options_say_why() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        for (q, want) in [
            ("tailLines=-1", "tailLines"),
            ("tailLines=x", "must be an integer"),
            (
                "sinceSeconds=1&sinceTime=2024-01-01T00:00:00Z",
                "at most one",
            ),
            ("follow=maybe", "boolean"),
            ("limitBytes=0", "limitBytes"),
            ("sinceTime=yesterday", "RFC 3339"),
        ] {
            let e = LogOptions::parse(&query(q), now).expect_err(q);
            assert!(e.contains(want), "{q}: {e}");
        }
        let o = opts("follow=1&previous=true&timestamps=T");
        assert!(o.follow && o.previous && o.timestamps);
    }
}
