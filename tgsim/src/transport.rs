//! The server side of the four MTProto TCP transports, sans-IO.
//!
//! Reference: <https://core.telegram.org/mtproto/mtproto-transports>. A
//! [`ServerCodec`] is fed the bytes read from one TCP connection
//! ([`ServerCodec::feed`]), hands back whole client frames
//! ([`ServerCodec::next_frame`]) and frames server-to-client payloads
//! ([`ServerCodec::encode`], [`ServerCodec::encode_error`],
//! [`ServerCodec::encode_quick_ack`]). It does no I/O and keeps no clock.
//!
//! # Wire formats (client to server)
//!
//! | transport | init bytes | envelope |
//! |---|---|---|
//! | abridged | `ef` | `len/4` as 1 byte if `< 0x7f`, else `7f` + `len/4` as 3 bytes LE; payload |
//! | intermediate | `ee ee ee ee` | `len: u32 LE`; payload |
//! | padded intermediate | `dd dd dd dd` | `len: u32 LE` (payload + padding); payload; 0..=15 random bytes |
//! | full | none | `len: u32 LE` (whole frame, 12 + payload); `seq: u32 LE`; payload; `crc32: u32 LE` |
//!
//! The quick-ack request is the top bit of the first length byte (abridged:
//! `0x80..=0xfe` short form, `0xff` long form) or of the `u32` length
//! (intermediate, padded intermediate); it is reported in
//! [`Frame::quick_ack`] and never counts towards the length. The full
//! transport has no quick ack.
//!
//! # Transport detection
//!
//! The server learns the transport from the first bytes of the connection:
//! `ef` → abridged; `ee ee ee ee` → intermediate; `dd dd dd dd` → padded
//! intermediate (the init bytes are consumed); anything else is the start of
//! a full frame and is only accepted if it looks like one: a length field in
//! `12..=MAX+12` that is a multiple of 4 *and* a sequence number of 0.
//! Everything else is [`TransportError::UnrecognizedTransport`]. That covers
//! the obfuscated transports (out of scope), whose 64-byte random header is
//! built so that its first word is none of the tags and its second word is
//! never 0, and HTTP (`POST`, `GET `, `HEAD` read as absurd lengths). A
//! consequence: a full-transport first frame with a wrong length or seq is
//! reported as unrecognized rather than as the specific error.
//!
//! # Padded intermediate
//!
//! The frame length covers the payload *and* 0..=15 padding bytes, so the
//! transport cannot tell where the payload ends. [`Frame::payload`] is the
//! whole frame body, padding included; the MTProto layer ignores trailing
//! bytes: an unencrypted message is `auth_key_id = 0 (8)`, `msg_id (8)`,
//! `message_data_length (4)`, data; an encrypted one is `auth_key_id (8)`,
//! `msg_key (16)` and `16·k` bytes of ciphertext, so its real length is
//! `24 + 16·⌊(len − 24) / 16⌋`.
//!
//! # Server to client
//!
//! [`ServerCodec::encode`] uses the envelope of the detected transport (the
//! abridged and intermediate length fields never have the top bit set; the
//! padded intermediate adds 0..=15 random bytes drawn from the
//! [`RandomSource`] given to [`ServerCodec::new`]; the full transport counts
//! its own send sequence from 0). Payloads must be non-empty multiples of 4
//! no longer than the frame limit, as MTProto payloads always are.
//!
//! Transport errors ([`ServerCodec::encode_error`]) are the 4-byte `int32 LE`
//! code (e.g. `-404`) framed as a payload, as the documentation says, except
//! for the full transport: there the code is written three times, raw
//! (12 bytes, no CRC), which is what Telegram's servers have been observed to
//! send and what clients (grammers: a negative length; Telethon: negative
//! length and seq) recognise. On the padded intermediate the padding is
//! limited to 0..=11 bytes so that the frame stays shorter than 16 bytes,
//! which TDLib requires to see it as an error rather than a message.
//!
//! Quick acks ([`ServerCodec::encode_quick_ack`]): the token always gets its
//! top bit set. Abridged: the 4 token bytes byte-swapped (big-endian, so the
//! first byte has its top bit set), raw, without a length. Intermediate: the
//! 4 token bytes little-endian, raw, without a length (TDLib reads a length
//! with the top bit set as a quick ack). Padded intermediate: a normal frame
//! whose body is `ff ff ff ff`, the token LE and 0..=7 random bytes (the
//! documentation allows 0..=8; 8 would make a 16-byte body that TDLib would
//! parse as a message). Full: unsupported.
//!
//! # Limits and errors
//!
//! Frames whose payload (padding included) is longer than the codec's limit
//! ([`MAX_FRAME_LEN`] by default) are rejected as soon as their header
//! arrives, before any of their body is buffered. Empty frames, lengths that
//! are not a multiple of 4 (intermediate, full), a bad CRC and a wrong
//! sequence number (full) each have their own [`TransportError`] variant.
//! After the first error the codec is *failed*: every later
//! [`ServerCodec::next_frame`] returns that same error, since the byte stream
//! cannot be resynchronised; the server should close the connection (after
//! [`ServerCodec::encode_error`] if it wants to). No input makes the codec
//! panic.

use std::fmt;

/// Default limit on a frame's payload length, padding included, in bytes
/// (2 MiB).
///
/// Telegram's largest legitimate payloads are file parts of 512 KiB plus a
/// little MTProto overhead; Telegram itself closes connections whose frames
/// exceed about 1 MiB. 2 MiB leaves room for tests of large frames while
/// bounding what one connection can make the server buffer.
pub const MAX_FRAME_LEN: usize = 2 * 1024 * 1024;

/// The largest limit [`ServerCodec::with_max_frame_len`] accepts: the
/// longest payload the abridged transport can express (`0xff_ffff` words).
pub const ABSOLUTE_MAX_FRAME_LEN: usize = 0x00ff_ffff * 4;

/// The abridged transport's init byte.
pub const ABRIDGED_TAG: u8 = 0xef;
/// The intermediate transport's init word.
pub const INTERMEDIATE_TAG: [u8; 4] = [0xee; 4];
/// The padded intermediate transport's init word.
pub const PADDED_INTERMEDIATE_TAG: [u8; 4] = [0xdd; 4];

const QUICK_ACK_BIT: u32 = 0x8000_0000;
/// Length, seq and CRC of the full transport.
const FULL_OVERHEAD: usize = 12;
/// Longest abridged length that fits the 1-byte form, in 4-byte words.
const ABRIDGED_SHORT_MAX_WORDS: usize = 0x7e;

/// One of the four MTProto TCP transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// Abridged: init byte `0xef`, 1- or 4-byte length in words.
    Abridged,
    /// Intermediate: init `0xeeeeeeee`, 4-byte length.
    Intermediate,
    /// Padded intermediate: init `0xdddddddd`, 4-byte length, random padding.
    PaddedIntermediate,
    /// Full: no init, length + seq + payload + CRC32.
    Full,
}

impl TransportKind {
    /// All four transports.
    pub const ALL: [TransportKind; 4] = [
        TransportKind::Abridged,
        TransportKind::Intermediate,
        TransportKind::PaddedIntermediate,
        TransportKind::Full,
    ];

    /// The bytes a client sends before its first frame (none for full).
    pub fn init_bytes(self) -> &'static [u8] {
        match self {
            TransportKind::Abridged => &[ABRIDGED_TAG],
            TransportKind::Intermediate => &INTERMEDIATE_TAG,
            TransportKind::PaddedIntermediate => &PADDED_INTERMEDIATE_TAG,
            TransportKind::Full => &[],
        }
    }

    /// Whether clients can request quick acks on this transport.
    pub fn supports_quick_ack(self) -> bool {
        !matches!(self, TransportKind::Full)
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Abridged => "abridged",
            TransportKind::Intermediate => "intermediate",
            TransportKind::PaddedIntermediate => "padded intermediate",
            TransportKind::Full => "full",
        })
    }
}

/// One frame received from the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The MTProto payload. For the padded intermediate transport it
    /// includes the trailing random padding (see the module docs).
    pub payload: Vec<u8>,
    /// The client set the quick-ack bit: it asks for
    /// [`ServerCodec::encode_quick_ack`] once the message is accepted.
    pub quick_ack: bool,
}

/// Why a byte stream (or a payload to send) cannot be framed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The first bytes of the connection are no transport's init and do not
    /// look like a full-transport frame either (obfuscated transport, HTTP,
    /// garbage). `first_word` is the first 4 bytes, little-endian.
    UnrecognizedTransport {
        /// The first 4 bytes of the connection as a little-endian `u32`.
        first_word: u32,
    },
    /// A frame with an empty payload.
    EmptyFrame,
    /// A length field below the transport's minimum (padded intermediate:
    /// 4; full: 12, the envelope alone).
    FrameTooShort {
        /// The announced length.
        len: usize,
        /// The transport's minimum.
        min: usize,
    },
    /// A payload longer than the codec's limit.
    FrameTooLarge {
        /// The announced payload length (full: without the 12-byte envelope).
        len: usize,
        /// The codec's limit.
        max: usize,
    },
    /// A length that is not a multiple of 4 where the transport requires one
    /// (intermediate, full; and every payload given to `encode`).
    LengthNotAligned {
        /// The announced length.
        len: usize,
    },
    /// Full transport: the CRC32 does not match the frame.
    BadCrc {
        /// The CRC32 computed over length, seq and payload.
        expected: u32,
        /// The CRC32 the frame carries.
        got: u32,
    },
    /// Full transport: the frame's sequence number is not the next one.
    BadSeq {
        /// The sequence number expected.
        expected: u32,
        /// The one received.
        got: u32,
    },
    /// `encode*` was called before the transport was detected.
    NotDetected,
    /// `encode_quick_ack` on the full transport, which has no quick acks.
    QuickAckUnsupported,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::UnrecognizedTransport { first_word } => write!(
                f,
                "unrecognized transport (first bytes {first_word:#010x} LE): \
                 obfuscated transports are not supported"
            ),
            TransportError::EmptyFrame => write!(f, "empty transport frame"),
            TransportError::FrameTooShort { len, min } => {
                write!(f, "frame length {len} below the minimum {min}")
            }
            TransportError::FrameTooLarge { len, max } => {
                write!(f, "frame payload of {len} bytes exceeds the limit of {max}")
            }
            TransportError::LengthNotAligned { len } => {
                write!(f, "frame length {len} is not a multiple of 4")
            }
            TransportError::BadCrc { expected, got } => {
                write!(f, "bad CRC32 (expected {expected:#010x}, got {got:#010x})")
            }
            TransportError::BadSeq { expected, got } => {
                write!(f, "bad transport seq (expected {expected}, got {got})")
            }
            TransportError::NotDetected => {
                write!(f, "transport not detected yet: nothing can be sent")
            }
            TransportError::QuickAckUnsupported => {
                write!(f, "the full transport has no quick acks")
            }
        }
    }
}

impl std::error::Error for TransportError {}

/// Where the padded intermediate transport's random bytes come from.
///
/// Any `FnMut(&mut [u8]) + Send` closure is one, e.g.
/// `|buf: &mut [u8]| { let _ = ring_rng.fill(buf); }`, or a seeded generator
/// in tests.
pub trait RandomSource: Send {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

impl<F: FnMut(&mut [u8]) + Send> RandomSource for F {
    fn fill(&mut self, buf: &mut [u8]) {
        self(buf)
    }
}

/// The server side of one connection's MTProto transport, sans-IO.
///
/// See the [module docs](self) for the wire formats and the decisions.
pub struct ServerCodec {
    kind: Option<TransportKind>,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    max_frame_len: usize,
    recv_seq: u32,
    send_seq: u32,
    failed: Option<TransportError>,
    rng: Box<dyn RandomSource>,
}

impl fmt::Debug for ServerCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCodec")
            .field("kind", &self.kind)
            .field("buffered", &self.buffered_len())
            .field("max_frame_len", &self.max_frame_len)
            .field("recv_seq", &self.recv_seq)
            .field("send_seq", &self.send_seq)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
}

/// A length from the wire as a `usize`.
fn to_usize(n: u32) -> usize {
    // u32 always fits the usize of the 32- and 64-bit targets tgsim runs on;
    // saturate elsewhere rather than panic.
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl ServerCodec {
    /// A codec for a new connection, transport not yet known, with the
    /// default frame limit [`MAX_FRAME_LEN`]. `rng` provides the padding of
    /// the padded intermediate transport.
    pub fn new(rng: impl RandomSource + 'static) -> Self {
        ServerCodec {
            kind: None,
            buf: Vec::new(),
            pos: 0,
            max_frame_len: MAX_FRAME_LEN,
            recv_seq: 0,
            send_seq: 0,
            failed: None,
            rng: Box::new(rng),
        }
    }

    /// Sets the limit on payload lengths (received and sent), clamped to
    /// `4..=ABSOLUTE_MAX_FRAME_LEN`.
    pub fn with_max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max.clamp(4, ABSOLUTE_MAX_FRAME_LEN);
        self
    }

    /// The payload limit in force.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The transport, once the first bytes have told it.
    pub fn transport(&self) -> Option<TransportKind> {
        self.kind
    }

    /// Bytes fed and not yet returned as frames.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The error that failed the codec, if any.
    pub fn failure(&self) -> Option<&TransportError> {
        self.failed.as_ref()
    }

    /// Appends bytes read from the connection. Frames may be split at any
    /// byte or several may come at once; call [`next_frame`](Self::next_frame)
    /// until it returns `Ok(None)`.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            // Amortised: the bytes moved are fewer than those consumed.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame: `Ok(None)` if more bytes are needed; an
    /// error (then every later call returns it too) if the stream is not a
    /// valid transport stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.try_next_frame();
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    fn available(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Takes `header + len` bytes and returns the last `len` of them, if
    /// they are all there.
    fn take(&mut self, header: usize, len: usize) -> Option<Vec<u8>> {
        let end = header.checked_add(len)?;
        let payload = self.available().get(header..end)?.to_vec();
        self.consume(end);
        Some(payload)
    }

    fn try_next_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        let kind = match self.kind {
            Some(kind) => kind,
            None => match self.detect()? {
                Some(kind) => {
                    self.kind = Some(kind);
                    kind
                }
                None => return Ok(None),
            },
        };
        match kind {
            TransportKind::Abridged => self.next_abridged(),
            TransportKind::Intermediate => self.next_intermediate(false),
            TransportKind::PaddedIntermediate => self.next_intermediate(true),
            TransportKind::Full => self.next_full(),
        }
    }

    /// Decides the transport from the first bytes, consuming the init tag.
    fn detect(&mut self) -> Result<Option<TransportKind>, TransportError> {
        let avail = self.available();
        match avail.first() {
            None => return Ok(None),
            Some(&ABRIDGED_TAG) => {
                self.consume(1);
                return Ok(Some(TransportKind::Abridged));
            }
            Some(_) => {}
        }
        let Some(first_word) = read_u32(avail, 0) else {
            return Ok(None);
        };
        match first_word.to_le_bytes() {
            INTERMEDIATE_TAG => {
                self.consume(4);
                return Ok(Some(TransportKind::Intermediate));
            }
            PADDED_INTERMEDIATE_TAG => {
                self.consume(4);
                return Ok(Some(TransportKind::PaddedIntermediate));
            }
            _ => {}
        }
        let total = to_usize(first_word);
        let plausible = total >= FULL_OVERHEAD
            && total.is_multiple_of(4)
            && total - FULL_OVERHEAD <= self.max_frame_len;
        if !plausible {
            return Err(TransportError::UnrecognizedTransport { first_word });
        }
        match read_u32(avail, 4) {
            None => Ok(None),
            Some(0) => Ok(Some(TransportKind::Full)),
            Some(_) => Err(TransportError::UnrecognizedTransport { first_word }),
        }
    }

    fn check_payload_len(&self, len: usize) -> Result<(), TransportError> {
        if len == 0 {
            Err(TransportError::EmptyFrame)
        } else if len > self.max_frame_len {
            Err(TransportError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            })
        } else {
            Ok(())
        }
    }

    fn next_abridged(&mut self) -> Result<Option<Frame>, TransportError> {
        let avail = self.available();
        let Some(&first) = avail.first() else {
            return Ok(None);
        };
        let quick_ack = first & 0x80 != 0;
        let marker = first & 0x7f;
        let (header, words) = if marker == 0x7f {
            match avail.get(1..4) {
                Some(&[a, b, c]) => (4, u32::from_le_bytes([a, b, c, 0])),
                _ => return Ok(None),
            }
        } else {
            (1, u32::from(marker))
        };
        // At most 0xff_ffff words: no overflow.
        let len = to_usize(words).saturating_mul(4);
        self.check_payload_len(len)?;
        Ok(self
            .take(header, len)
            .map(|payload| Frame { payload, quick_ack }))
    }

    fn next_intermediate(&mut self, padded: bool) -> Result<Option<Frame>, TransportError> {
        let Some(raw) = read_u32(self.available(), 0) else {
            return Ok(None);
        };
        let quick_ack = raw & QUICK_ACK_BIT != 0;
        let len = to_usize(raw & !QUICK_ACK_BIT);
        self.check_payload_len(len)?;
        if padded {
            if len < 4 {
                return Err(TransportError::FrameTooShort { len, min: 4 });
            }
        } else if !len.is_multiple_of(4) {
            return Err(TransportError::LengthNotAligned { len });
        }
        Ok(self
            .take(4, len)
            .map(|payload| Frame { payload, quick_ack }))
    }

    fn next_full(&mut self) -> Result<Option<Frame>, TransportError> {
        let avail = self.available();
        let Some(total) = read_u32(avail, 0).map(to_usize) else {
            return Ok(None);
        };
        if total < FULL_OVERHEAD {
            return Err(TransportError::FrameTooShort {
                len: total,
                min: FULL_OVERHEAD,
            });
        }
        self.check_payload_len(total - FULL_OVERHEAD)?;
        if !total.is_multiple_of(4) {
            return Err(TransportError::LengthNotAligned { len: total });
        }
        let Some(frame) = avail.get(..total) else {
            return Ok(None);
        };
        let body_end = total - 4;
        let (Some(body), Some(got_crc), Some(seq)) = (
            frame.get(..body_end),
            read_u32(frame, body_end),
            read_u32(frame, 4),
        ) else {
            return Ok(None);
        };
        let expected_crc = crc32fast::hash(body);
        if got_crc != expected_crc {
            return Err(TransportError::BadCrc {
                expected: expected_crc,
                got: got_crc,
            });
        }
        if seq != self.recv_seq {
            return Err(TransportError::BadSeq {
                expected: self.recv_seq,
                got: seq,
            });
        }
        let payload = body.get(8..).unwrap_or(&[]).to_vec();
        self.recv_seq = self.recv_seq.wrapping_add(1);
        self.consume(total);
        Ok(Some(Frame {
            payload,
            quick_ack: false,
        }))
    }

    fn random_below(&mut self, bound: u8) -> usize {
        let mut byte = [0u8; 1];
        self.rng.fill(&mut byte);
        usize::from(byte[0] % bound.max(1))
    }

    fn push_random(&mut self, out: &mut Vec<u8>, n: usize) {
        let start = out.len();
        out.resize(start + n, 0);
        if let Some(tail) = out.get_mut(start..) {
            self.rng.fill(tail);
        }
    }

    /// Appends `body` (padded with `pad` random bytes) to `out` behind a
    /// 4-byte length, as the padded intermediate transport frames it.
    fn push_padded(&mut self, body: &[u8], pad: usize, out: &mut Vec<u8>) {
        let len = u32::try_from(body.len() + pad).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        self.push_random(out, pad);
    }

    /// Appends to `out` the frame carrying `payload` to the client.
    ///
    /// Errors: [`TransportError::NotDetected`] before the transport is known;
    /// [`TransportError::EmptyFrame`], [`TransportError::FrameTooLarge`] or
    /// [`TransportError::LengthNotAligned`] for a payload that no client
    /// would accept. `out` is unchanged on error.
    pub fn encode(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), TransportError> {
        let kind = self.kind.ok_or(TransportError::NotDetected)?;
        let len = payload.len();
        self.check_payload_len(len)?;
        if !len.is_multiple_of(4) {
            return Err(TransportError::LengthNotAligned { len });
        }
        let too_large = || TransportError::FrameTooLarge {
            len,
            max: ABSOLUTE_MAX_FRAME_LEN,
        };
        match kind {
            TransportKind::Abridged => {
                let words = len / 4;
                if words <= ABRIDGED_SHORT_MAX_WORDS {
                    out.push(u8::try_from(words).map_err(|_| too_large())?);
                } else {
                    let words = u32::try_from(words).map_err(|_| too_large())?;
                    let [a, b, c, _] = words.to_le_bytes();
                    out.extend_from_slice(&[0x7f, a, b, c]);
                }
                out.extend_from_slice(payload);
            }
            TransportKind::Intermediate => {
                let len = u32::try_from(len).map_err(|_| too_large())?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(payload);
            }
            TransportKind::PaddedIntermediate => {
                let pad = self.random_below(16);
                self.push_padded(payload, pad, out);
            }
            TransportKind::Full => {
                let total = u32::try_from(len + FULL_OVERHEAD).map_err(|_| too_large())?;
                let start = out.len();
                out.extend_from_slice(&total.to_le_bytes());
                out.extend_from_slice(&self.send_seq.to_le_bytes());
                out.extend_from_slice(payload);
                let crc = crc32fast::hash(out.get(start..).unwrap_or(&[]));
                out.extend_from_slice(&crc.to_le_bytes());
                self.send_seq = self.send_seq.wrapping_add(1);
            }
        }
        Ok(())
    }

    /// Appends to `out` a transport error: `code` (negative, e.g. `-404`
    /// for an unknown auth key, `-429` for flood) as `int32 LE`, framed as
    /// described in the module docs (full transport: three raw copies).
    ///
    /// Errors: [`TransportError::NotDetected`] before the transport is known.
    pub fn encode_error(&mut self, code: i32, out: &mut Vec<u8>) -> Result<(), TransportError> {
        let kind = self.kind.ok_or(TransportError::NotDetected)?;
        let code = code.to_le_bytes();
        match kind {
            TransportKind::Abridged => {
                out.push(1);
                out.extend_from_slice(&code);
            }
            TransportKind::Intermediate => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&code);
            }
            TransportKind::PaddedIntermediate => {
                let pad = self.random_below(12);
                self.push_padded(&code, pad, out);
            }
            TransportKind::Full => {
                for _ in 0..3 {
                    out.extend_from_slice(&code);
                }
            }
        }
        Ok(())
    }

    /// Appends to `out` the quick ack of a frame that had
    /// [`Frame::quick_ack`] set, once its message is accepted. `token` is
    /// the first 4 bytes of the message's `msg_key_large` as a
    /// little-endian `u32`; its top bit is set here.
    ///
    /// Errors: [`TransportError::NotDetected`] before the transport is known;
    /// [`TransportError::QuickAckUnsupported`] on the full transport.
    pub fn encode_quick_ack(
        &mut self,
        token: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), TransportError> {
        let kind = self.kind.ok_or(TransportError::NotDetected)?;
        let token = token | QUICK_ACK_BIT;
        match kind {
            TransportKind::Abridged => out.extend_from_slice(&token.to_be_bytes()),
            TransportKind::Intermediate => out.extend_from_slice(&token.to_le_bytes()),
            TransportKind::PaddedIntermediate => {
                let mut body = [0xffu8; 8];
                body[4..].copy_from_slice(&token.to_le_bytes());
                let pad = self.random_below(8);
                self.push_padded(&body, pad, out);
            }
            TransportKind::Full => return Err(TransportError::QuickAckUnsupported),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero_rng(buf: &mut [u8]) {
        buf.fill(0);
    }

    #[test]
    fn detection_needs_enough_bytes() {
        let mut codec = ServerCodec::new(zero_rng);
        codec.feed(&[0xee, 0xee, 0xee]);
        assert_eq!(codec.next_frame(), Ok(None));
        assert_eq!(codec.transport(), None);
        codec.feed(&[0xee]);
        assert_eq!(codec.next_frame(), Ok(None));
        assert_eq!(codec.transport(), Some(TransportKind::Intermediate));
        assert_eq!(codec.buffered_len(), 0);
    }

    #[test]
    fn full_detection_waits_for_seq() {
        let mut codec = ServerCodec::new(zero_rng);
        codec.feed(&16u32.to_le_bytes());
        assert_eq!(codec.next_frame(), Ok(None));
        assert_eq!(codec.transport(), None);
        codec.feed(&1u32.to_le_bytes());
        assert_eq!(
            codec.next_frame(),
            Err(TransportError::UnrecognizedTransport { first_word: 16 })
        );
    }

    #[test]
    fn error_is_sticky() {
        let mut codec = ServerCodec::new(zero_rng);
        codec.feed(b"POST / HTTP/1.1\r\n");
        let err = codec.next_frame();
        assert!(matches!(
            err,
            Err(TransportError::UnrecognizedTransport { .. })
        ));
        codec.feed(&[0xef, 1, 0, 0, 0, 0]);
        assert_eq!(codec.next_frame(), err);
        assert_eq!(codec.failure(), err.err().as_ref());
    }

    #[test]
    fn max_frame_len_is_clamped() {
        let codec = ServerCodec::new(zero_rng).with_max_frame_len(usize::MAX);
        assert_eq!(codec.max_frame_len(), ABSOLUTE_MAX_FRAME_LEN);
        let codec = ServerCodec::new(zero_rng).with_max_frame_len(0);
        assert_eq!(codec.max_frame_len(), 4);
    }

    #[test]
    fn encode_before_detection_fails() {
        let mut codec = ServerCodec::new(zero_rng);
        let mut out = Vec::new();
        assert_eq!(
            codec.encode(&[0; 4], &mut out),
            Err(TransportError::NotDetected)
        );
        assert_eq!(
            codec.encode_error(-404, &mut out),
            Err(TransportError::NotDetected)
        );
        assert_eq!(
            codec.encode_quick_ack(1, &mut out),
            Err(TransportError::NotDetected)
        );
        assert!(out.is_empty());
    }
}
