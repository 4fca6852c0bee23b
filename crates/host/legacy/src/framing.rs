//! Per-connection version detection and framing.
//!
//! Nothing on the wire says which version a client speaks: only the struct size differs. The
//! framer buffers the connection's first bytes and keeps the versions under which they read as
//! a sequence of plausible messages. A message *head* (its first [`HEAD_BYTES`]) is plausible
//! when its type byte names a request, its padding bytes are zero and its device id is in
//! range (-1 allowed, for DEVICE_INFO_QUERY). Every candidate boundary the buffered bytes reach
//! is checked, and P4's trailing padding too. P4's grid holds every other P1 boundary; a head
//! found mid-way through a would-be P4 message (where a P4 request has zero reply fields) rules
//! P4 out. Then:
//!
//! 1. one version left with at least one whole message buffered: it is the version;
//! 2. several left, and the client has gone quiet (the daemon waits a short grace period with
//!    no new bytes): the version whose whole messages fill the buffer exactly, preferring the one
//!    with the most boundaries verified. A single short QUERY, which fits no larger layout, is
//!    decided this way;
//! 3. several left after [`DECIDE_BYTES`] bytes: the same choice without waiting;
//! 4. none left: the stream cannot be framed and is refused.
//!
//! After detection every message's type byte must name a type (1–12); a byte that does not
//! means the stream lost its framing, and it is refused rather than read with stale offsets.

use crate::wire::{HEAD_BYTES, Message, MsgType, Version, padding_is_zero};

/// Device ids a message may name (-1 is "all / count").
pub const MAX_DEVICE_ID: i32 = 1024;
/// Bytes after which an ambiguous stream is decided without waiting for the client to pause.
pub const DECIDE_BYTES: usize = 2048;
/// The most bytes a framer holds (an undecided stream is decided long before).
pub const MAX_BUFFERED: usize = 1 << 20;

/// Why a stream cannot be framed. The connection is closed with this as the logged reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The first bytes read as no version's message.
    #[error("the first {len} bytes are no P1-P4 message ({why})")]
    NoVersionFits {
        /// Bytes seen.
        len: usize,
        /// What was wrong with the first message or a boundary.
        why: String,
    },
    /// A message's type byte names no type: the stream lost its framing.
    #[error("message {index} (at byte {offset}) has type byte {byte}: the stream is not {version} framed")]
    BadType {
        /// Message number on the connection (0-based).
        index: u64,
        /// Byte offset on the connection.
        offset: u64,
        /// The type byte.
        byte: u8,
        /// The connection's version.
        version: Version,
    },
    /// The client sent more than the framer holds without a whole message.
    #[error("more than {0} bytes buffered")]
    Overflow(usize),
}

/// What [`Framer::detect`] concluded.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Detection {
    /// The connection speaks this version.
    Decided(Version),
    /// More bytes (or, if the client is quiet, calling again with `quiet`) are needed.
    NeedMore,
}

/// Why a head is implausible, or `None` when it is plausible as far as its bytes reach (a
/// partial head is judged on the bytes it has).
fn head_problem(b: &[u8]) -> Option<String> {
    let head = &b[..b.len().min(HEAD_BYTES)];
    let &first = head.first()?;
    match MsgType::from_u8(first) {
        Some(t) if t.is_request() => {}
        _ => return Some(format!("type byte {first}")),
    }
    let padding = head.iter().take(4).skip(1).chain(head.iter().take(20).skip(17));
    if padding.copied().any(|x| x != 0) {
        return Some("non-zero padding".into());
    }
    if let Some(d) = head.get(4..8) {
        let device = i32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        if !(-1..MAX_DEVICE_ID).contains(&device) {
            return Some(format!("device id {device}"));
        }
    }
    None
}

/// How well the buffered bytes read as version `v`: `None` if they cannot, else the number of
/// message boundaries verified after the first.
fn boundaries_verified(b: &[u8], v: Version) -> Option<usize> {
    let s = v.size();
    let mut verified = 0;
    let mut at = s;
    while at < b.len() {
        if head_problem(&b[at..]).is_some() {
            return None;
        }
        verified += 1;
        at += s;
    }
    if v == Version::P4 {
        let mut at = 0;
        while at + s <= b.len() {
            if !padding_is_zero(&b[at..at + s], v) {
                return None;
            }
            at += s;
        }
    }
    Some(verified)
}

/// A connection's byte stream, turned into messages.
#[derive(Debug)]
pub struct Framer {
    version: Option<Version>,
    buf: Vec<u8>,
    start: usize,
    messages: u64,
    consumed: u64,
    first_read: Option<usize>,
    padding_errors: u64,
}

impl Framer {
    /// A framer that detects the version, or uses `pinned`.
    pub fn new(pinned: Option<Version>) -> Framer {
        Framer {
            version: pinned,
            buf: Vec::new(),
            start: 0,
            messages: 0,
            consumed: 0,
            first_read: None,
            padding_errors: 0,
        }
    }

    /// The version, once known.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Bytes held that are not yet a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Messages framed so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Messages whose padding was not zero (framed and used, but counted).
    pub fn padding_errors(&self) -> u64 {
        self.padding_errors
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FramingError> {
        if self.first_read.is_none() {
            self.first_read = Some(bytes.len());
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        if self.buffered() + bytes.len() > MAX_BUFFERED {
            return Err(FramingError::Overflow(MAX_BUFFERED));
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Decides the version if the bytes allow it. `quiet` says the client has paused (no new
    /// bytes for the caller's grace period), which allows the exact-fit rule.
    pub fn detect(&mut self, quiet: bool) -> Result<Detection, FramingError> {
        if let Some(v) = self.version {
            return Ok(Detection::Decided(v));
        }
        let b = &self.buf[self.start..];
        if b.len() < HEAD_BYTES {
            // Not enough to judge yet, but bytes that are already wrong need not wait.
            if let Some(why) = head_problem(b) {
                return Err(FramingError::NoVersionFits { len: b.len(), why });
            }
            return Ok(Detection::NeedMore);
        }
        if let Some(why) = head_problem(b) {
            return Err(FramingError::NoVersionFits { len: b.len(), why });
        }
        let survivors: Vec<(Version, usize)> = Version::ALL
            .into_iter()
            .filter_map(|v| boundaries_verified(b, v).map(|n| (v, n)))
            .collect();
        // P4's grid is every other P1 boundary. A message head found in the middle of a would-be
        // P4 message sits where a P4 request carries zero reply fields: that stream is P1.
        let survivors: Vec<(Version, usize)> = survivors
            .iter()
            .copied()
            .filter(|&(large, n_large)| {
                !survivors.iter().any(|&(small, n_small)| {
                    small.size() < large.size() && large.size() % small.size() == 0 && n_small > n_large
                })
            })
            .collect();
        let decided = match survivors.as_slice() {
            [] => {
                return Err(FramingError::NoVersionFits {
                    len: b.len(),
                    why: "no struct size puts a message at every boundary".into(),
                });
            }
            [(v, _)] => (b.len() >= v.size()).then_some(*v),
            many if quiet || b.len() >= DECIDE_BYTES => {
                // Whole messages that fill the buffer exactly, most boundaries verified first;
                // the first read's size breaks what is left.
                let first = self.first_read.unwrap_or(0);
                many.iter()
                    .filter(|(v, _)| b.len() >= v.size() && b.len().is_multiple_of(v.size()))
                    .max_by_key(|(v, n)| (*n, first.is_multiple_of(v.size()), std::cmp::Reverse(v.size())))
                    .or_else(|| {
                        // Nothing fits exactly (a split read): the most evidence wins once enough
                        // bytes are in; a quiet client with a partial message waits.
                        (b.len() >= DECIDE_BYTES)
                            .then(|| many.iter().max_by_key(|(v, n)| (*n, std::cmp::Reverse(v.size()))))
                            .flatten()
                    })
                    .map(|(v, _)| *v)
            }
            _ => None,
        };
        match decided {
            Some(v) => {
                self.version = Some(v);
                Ok(Detection::Decided(v))
            }
            None => Ok(Detection::NeedMore),
        }
    }

    /// The next whole message, once the version is decided. A message with a type byte that
    /// names no type is a framing error.
    pub fn next_message(&mut self) -> Result<Option<Message>, FramingError> {
        let Some(v) = self.version else { return Ok(None) };
        let s = v.size();
        let b = &self.buf[self.start..];
        if b.len() < s {
            return Ok(None);
        }
        let bytes = &b[..s];
        if MsgType::from_u8(bytes[0]).is_none() {
            return Err(FramingError::BadType {
                index: self.messages,
                offset: self.consumed,
                byte: bytes[0],
                version: v,
            });
        }
        if !padding_is_zero(bytes, v) {
            self.padding_errors += 1;
        }
        let m = Message::decode(bytes, v);
        self.start += s;
        self.messages += 1;
        self.consumed += s as u64;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(v: Version, msgs: &[Message]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            m.encode_into(v, &mut out);
        }
        out
    }

    fn alloc(id: u64) -> Message {
        Message {
            msg_type: MsgType::Alloc as u8,
            device_id: 0,
            size: 1 << 20,
            buffer_type: 1,
            process_id: 4242,
            buffer_id: id,
            timestamp: 1_763_900_000_123_456_789,
            ..Message::default()
        }
    }

    fn detect_all(bytes: &[u8], quiet: bool) -> Result<Detection, FramingError> {
        let mut f = Framer::new(None);
        f.push(bytes)?;
        f.detect(quiet)
    }

    #[test]
    fn a_single_query_of_each_version_is_decided_once_the_client_is_quiet() {
        for v in Version::ALL {
            let q = stream(v, &[Message::request(MsgType::Query, 0)]);
            let loud = detect_all(&q, false).unwrap();
            // Only P4, the largest layout, is sure without waiting (nothing larger can pend).
            let expect = if v == Version::P4 {
                Detection::Decided(v)
            } else {
                Detection::NeedMore
            };
            assert_eq!(loud, expect, "{v}");
            assert_eq!(detect_all(&q, true).unwrap(), Detection::Decided(v), "{v}");
        }
    }

    #[test]
    fn streams_of_allocations_are_decided_by_their_boundaries() {
        for v in Version::ALL {
            let msgs: Vec<Message> = (1..=20).map(alloc).collect();
            let s = stream(v, &msgs);
            assert_eq!(detect_all(&s, false).unwrap(), Detection::Decided(v), "{v}");
            // Also when the first read ends in the middle of a message.
            assert_eq!(
                detect_all(&s[..s.len() - 5], true).unwrap(),
                Detection::Decided(v),
                "{v}"
            );
        }
    }

    #[test]
    fn two_p1_messages_are_not_one_p4_message() {
        let s = stream(Version::P1, &[alloc(1), Message::request(MsgType::Query, 0)]);
        assert_eq!(s.len(), 144);
        assert_eq!(detect_all(&s, true).unwrap(), Detection::Decided(Version::P1));
    }

    #[test]
    fn device_info_query_for_all_devices_is_plausible() {
        let s = stream(Version::P2, &[Message::request(MsgType::DeviceInfoQuery, -1)]);
        assert_eq!(detect_all(&s, true).unwrap(), Detection::Decided(Version::P2));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            detect_all(&[0xff; 200], true),
            Err(FramingError::NoVersionFits { .. })
        ));
        assert!(matches!(
            detect_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true),
            Err(FramingError::NoVersionFits { .. })
        ));
        let mut bad = stream(Version::P2, &[alloc(1)]);
        bad[4..8].copy_from_slice(&5000i32.to_le_bytes());
        assert!(detect_all(&bad, true).is_err());
    }

    #[test]
    fn a_short_stream_waits() {
        assert_eq!(detect_all(&[1, 0, 0], true).unwrap(), Detection::NeedMore);
    }

    #[test]
    fn framing_survives_any_split() {
        let msgs: Vec<Message> = (1..=6).map(alloc).collect();
        for v in Version::ALL {
            let s = stream(v, &msgs);
            for cut in 1..s.len() {
                let mut f = Framer::new(None);
                let mut got = Vec::new();
                // A client pauses only after whole messages (one struct per send()), so only
                // the end of the stream is quiet.
                for (part, quiet) in [(&s[..cut], false), (&s[cut..], true)] {
                    f.push(part).unwrap();
                    if f.detect(quiet).unwrap() == Detection::NeedMore {
                        continue;
                    }
                    while let Some(m) = f.next_message().unwrap() {
                        got.push(m);
                    }
                }
                assert_eq!(f.version(), Some(v), "{v} cut {cut}");
                assert_eq!(got, msgs, "{v} cut {cut}");
            }
        }
    }

    #[test]
    fn a_bad_type_after_detection_is_a_framing_error() {
        let mut s = stream(Version::P2, &[alloc(1), alloc(2), alloc(3)]);
        s[224] = 0;
        let mut f = Framer::new(Some(Version::P2));
        f.push(&s).unwrap();
        assert!(f.next_message().unwrap().is_some());
        assert!(f.next_message().unwrap().is_some());
        let e = f.next_message().unwrap_err();
        assert!(e.to_string().contains("message 2 (at byte 224)"), "{e}");
    }

    #[test]
    fn pinned_version_skips_detection() {
        let s = stream(Version::P1, &[alloc(1)]);
        let mut f = Framer::new(Some(Version::P1));
        f.push(&s[..10]).unwrap();
        assert_eq!(f.detect(false).unwrap(), Detection::Decided(Version::P1));
        assert_eq!(f.next_message().unwrap(), None);
        f.push(&s[10..]).unwrap();
        assert_eq!(f.next_message().unwrap(), Some(alloc(1)));
    }
}
