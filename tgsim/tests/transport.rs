//! Tests of the server side of the MTProto TCP transports: round trips with a
//! reference client written from the specification, interop with grammers'
//! client transports, malformed input and a never-panics property.
// Tests may unwrap: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use grammers_crypto::DequeBuffer;
use grammers_mtproto::transport::{
    Abridged, Error as GrammersError, Full, Intermediate, Transport, UnpackedOffset,
};
use proptest::prelude::*;
use tgsim::transport::{
    Frame, MAX_FRAME_LEN, ServerCodec, TransportError, TransportKind, TransportKind::*,
};

// ---------------------------------------------------------------- helpers

/// xorshift64*: deterministic randomness for chunking, payloads and padding.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

fn new_codec(seed: u64) -> ServerCodec {
    let mut rng = Rng(seed | 1);
    ServerCodec::new(move |buf: &mut [u8]| rng.fill(buf))
}

/// A payload of `len` bytes whose first word is non-negative as an i32
/// (grammers' abridged client takes a short frame starting with a negative
/// word for a transport error).
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1).fill(&mut out);
    if let Some(b) = out.get_mut(3) {
        *b &= 0x7f;
    }
    out
}

const SIZES: &[usize] = &[
    4,
    8,
    16,
    500,
    504, // 0x7e words: the longest abridged short form
    508, // 0x7f words: the first abridged long form
    512,
    1020,
    4096,
    65_536,
    (1 << 20) - 4,
    1 << 20,
    MAX_FRAME_LEN,
];

fn full_frame(seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((payload.len() + 12) as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// What a client receives from the server.
#[derive(Debug, PartialEq)]
enum ServerMsg {
    Payload(Vec<u8>),
    QuickAck(u32),
    Error(i32),
}

/// A client-side codec written from the transport documentation, independent
/// of the code under test.
struct RefClient {
    kind: TransportKind,
    init_sent: bool,
    send_seq: u32,
    recv_seq: u32,
    buf: Vec<u8>,
}

impl RefClient {
    fn new(kind: TransportKind) -> Self {
        RefClient {
            kind,
            init_sent: false,
            send_seq: 0,
            recv_seq: 0,
            buf: Vec::new(),
        }
    }

    /// Frames `payload`; `pad` is the padded intermediate's padding.
    fn pack(&mut self, payload: &[u8], quick_ack: bool, pad: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.init_sent {
            out.extend_from_slice(self.kind.init_bytes());
            self.init_sent = true;
        }
        let qa = if quick_ack { 0x8000_0000u32 } else { 0 };
        match self.kind {
            Abridged => {
                let words = payload.len() / 4;
                if words < 0x7f {
                    out.push(words as u8 | if quick_ack { 0x80 } else { 0 });
                } else {
                    out.push(if quick_ack { 0xff } else { 0x7f });
                    out.extend_from_slice(&(words as u32).to_le_bytes()[..3]);
                }
                out.extend_from_slice(payload);
            }
            Intermediate => {
                out.extend_from_slice(&(payload.len() as u32 | qa).to_le_bytes());
                out.extend_from_slice(payload);
            }
            PaddedIntermediate => {
                out.extend_from_slice(&((payload.len() + pad.len()) as u32 | qa).to_le_bytes());
                out.extend_from_slice(payload);
                out.extend_from_slice(pad);
            }
            Full => {
                assert!(!quick_ack);
                out.extend_from_slice(&full_frame(self.send_seq, payload));
                self.send_seq += 1;
            }
        }
        out
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.buf.len() < n {
            return None;
        }
        Some(self.buf.drain(..n).collect())
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.buf.get(at..at + 4)?.try_into().ok()?,
        ))
    }

    fn next(&mut self) -> Option<ServerMsg> {
        match self.kind {
            Abridged => {
                let first = *self.buf.first()?;
                if first & 0x80 != 0 {
                    let b = self.take(4)?;
                    return Some(ServerMsg::QuickAck(u32::from_be_bytes(
                        b.try_into().unwrap(),
                    )));
                }
                let (header, len) = if first == 0x7f {
                    let w = self.u32_at(0)?;
                    (4, (w >> 8) as usize * 4)
                } else {
                    (1, first as usize * 4)
                };
                if self.buf.len() < header + len {
                    return None;
                }
                let body = self.take(header + len)?.split_off(header);
                Some(body_msg(body))
            }
            Intermediate => {
                let raw = self.u32_at(0)?;
                if raw & 0x8000_0000 != 0 {
                    self.take(4)?;
                    return Some(ServerMsg::QuickAck(raw));
                }
                let len = raw as usize;
                if self.buf.len() < 4 + len {
                    return None;
                }
                Some(body_msg(self.take(4 + len)?.split_off(4)))
            }
            PaddedIntermediate => {
                let len = self.u32_at(0)? as usize;
                if self.buf.len() < 4 + len {
                    return None;
                }
                let body = self.take(4 + len)?.split_off(4);
                if body.len() < 16 {
                    let code = i32::from_le_bytes(body[..4].try_into().unwrap());
                    if code == -1 {
                        let token = u32::from_le_bytes(body[4..8].try_into().unwrap());
                        return Some(ServerMsg::QuickAck(token));
                    }
                    return Some(ServerMsg::Error(code));
                }
                Some(ServerMsg::Payload(body))
            }
            Full => {
                let len = self.u32_at(0)? as i32;
                if len < 0 {
                    let raw = self.take(12)?;
                    assert_eq!(raw[0..4], raw[4..8]);
                    assert_eq!(raw[0..4], raw[8..12]);
                    return Some(ServerMsg::Error(len));
                }
                let len = len as usize;
                if self.buf.len() < len {
                    return None;
                }
                let frame = self.take(len)?;
                let crc = u32::from_le_bytes(frame[len - 4..].try_into().unwrap());
                assert_eq!(crc, crc32fast::hash(&frame[..len - 4]), "server CRC");
                let seq = u32::from_le_bytes(frame[4..8].try_into().unwrap());
                assert_eq!(seq, self.recv_seq, "server seq");
                self.recv_seq += 1;
                Some(ServerMsg::Payload(frame[8..len - 4].to_vec()))
            }
        }
    }
}

fn body_msg(body: Vec<u8>) -> ServerMsg {
    if body.len() == 4 {
        ServerMsg::Error(i32::from_le_bytes(body.try_into().unwrap()))
    } else {
        ServerMsg::Payload(body)
    }
}

/// How a stream is cut into the `feed` calls.
#[derive(Clone, Copy, Debug)]
enum Feeding {
    AllAtOnce,
    ByteByByte,
    RandomChunks(u64),
}

/// Feeds `stream` as told, draining frames after every feed.
fn drain_stream(codec: &mut ServerCodec, stream: &[u8], feeding: Feeding) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut drain = |codec: &mut ServerCodec| {
        while let Some(frame) = codec.next_frame().expect("valid stream") {
            frames.push(frame);
        }
    };
    match feeding {
        Feeding::AllAtOnce => {
            codec.feed(stream);
            drain(codec);
        }
        Feeding::ByteByByte => {
            for b in stream {
                codec.feed(std::slice::from_ref(b));
                drain(codec);
            }
        }
        Feeding::RandomChunks(seed) => {
            let mut rng = Rng(seed | 1);
            let mut rest = stream;
            while !rest.is_empty() {
                // Mostly small chunks, sometimes large ones.
                let max = if rng.below(4) == 0 { 1 << 17 } else { 64 };
                let n = (1 + rng.below(max)).min(rest.len());
                codec.feed(&rest[..n]);
                rest = &rest[n..];
                drain(codec);
            }
        }
    }
    assert_eq!(codec.buffered_len(), 0);
    frames
}

/// A codec that has seen the init bytes (and, for full, one frame).
fn detected(kind: TransportKind, seed: u64) -> ServerCodec {
    let mut codec = new_codec(seed);
    let mut client = RefClient::new(kind);
    codec.feed(&client.pack(&payload(8, 0), false, &[]));
    assert_eq!(codec.next_frame().unwrap().unwrap().payload, payload(8, 0));
    assert_eq!(codec.transport(), Some(kind));
    codec
}

/// Feeds `bytes` to a fresh codec and returns the first non-`Ok(Some)`.
fn first_problem(bytes: &[u8]) -> Result<Option<Frame>, TransportError> {
    let mut codec = new_codec(7);
    codec.feed(bytes);
    loop {
        match codec.next_frame() {
            Ok(Some(_)) => continue,
            other => return other,
        }
    }
}

// ---------------------------------------------------------------- round trips

#[test]
fn client_to_server_round_trip_every_transport_and_feeding() {
    for kind in TransportKind::ALL {
        let mut client = RefClient::new(kind);
        let mut rng = Rng(42);
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (i, &size) in SIZES.iter().enumerate() {
            let body = payload(size, i as u64);
            let quick_ack = kind.supports_quick_ack() && i % 2 == 1;
            let mut pad = vec![0u8; rng.below(16)];
            rng.fill(&mut pad);
            if kind != PaddedIntermediate {
                pad.clear();
            }
            if kind == PaddedIntermediate && size == MAX_FRAME_LEN {
                pad.clear(); // padding counts towards the limit
            }
            stream.extend_from_slice(&client.pack(&body, quick_ack, &pad));
            let mut got = body;
            got.extend_from_slice(&pad);
            expected.push(Frame {
                payload: got,
                quick_ack,
            });
        }
        for feeding in [
            Feeding::AllAtOnce,
            Feeding::ByteByByte,
            Feeding::RandomChunks(1),
            Feeding::RandomChunks(2),
            Feeding::RandomChunks(3),
        ] {
            let mut codec = new_codec(9);
            let frames = drain_stream(&mut codec, &stream, feeding);
            assert_eq!(codec.transport(), Some(kind));
            assert_eq!(frames.len(), expected.len(), "{kind} {feeding:?}");
            for (got, want) in frames.iter().zip(&expected) {
                assert!(
                    got == want,
                    "{kind} {feeding:?}: frame of {} bytes",
                    want.payload.len()
                );
            }
        }
    }
}

#[test]
fn several_small_frames_in_one_feed() {
    for kind in TransportKind::ALL {
        let mut client = RefClient::new(kind);
        let mut stream = Vec::new();
        for i in 0..50 {
            stream.extend_from_slice(&client.pack(&payload(4 * (i + 1), i as u64), false, &[]));
        }
        let mut codec = new_codec(1);
        let frames = drain_stream(&mut codec, &stream, Feeding::AllAtOnce);
        assert_eq!(frames.len(), 50);
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame.payload, payload(4 * (i + 1), i as u64), "{kind}");
            assert!(!frame.quick_ack);
        }
    }
}

#[test]
fn server_to_client_round_trip() {
    for kind in TransportKind::ALL {
        let mut codec = detected(kind, 5);
        let mut client = RefClient::new(kind);
        let mut wire = Vec::new();
        // Payloads of at least 16 bytes: shorter ones are transport errors or
        // quick acks to a client (MTProto payloads are at least 24 bytes).
        for (i, &size) in SIZES.iter().enumerate().filter(|(_, s)| **s >= 16) {
            codec.encode(&payload(size, i as u64), &mut wire).unwrap();
        }
        let mut rng = Rng(77);
        let mut received = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(5000)).min(rest.len());
            client.feed(&rest[..n]);
            rest = &rest[n..];
            while let Some(msg) = client.next() {
                received.push(msg);
            }
        }
        assert!(client.buf.is_empty());
        let sizes: Vec<_> = SIZES
            .iter()
            .enumerate()
            .filter(|(_, s)| **s >= 16)
            .collect();
        assert_eq!(received.len(), sizes.len(), "{kind}");
        for (msg, (i, &size)) in received.into_iter().zip(sizes) {
            let ServerMsg::Payload(body) = msg else {
                panic!("{kind}: expected a payload, got {msg:?}");
            };
            let want = payload(size, i as u64);
            if kind == PaddedIntermediate {
                assert!(body.len() - want.len() < 16, "padding 0..=15");
                assert_eq!(&body[..want.len()], &want[..]);
            } else {
                assert_eq!(body, want, "{kind}");
            }
        }
    }
}

#[test]
fn abridged_length_forms() {
    let mut codec = detected(Abridged, 1);
    let mut out = Vec::new();
    codec.encode(&[0; 504], &mut out).unwrap();
    assert_eq!(out[0], 0x7e);
    assert_eq!(out.len(), 1 + 504);
    out.clear();
    codec.encode(&[0; 508], &mut out).unwrap();
    assert_eq!(out[..4], [0x7f, 0x7f, 0, 0]);
    assert_eq!(out.len(), 4 + 508);
    out.clear();
    codec.encode(&vec![0; (1 << 20) - 4], &mut out).unwrap();
    assert_eq!(out[..4], [0x7f, 0xff, 0xff, 0x03]);

    // The client's long form, also with a non-canonical small length.
    let mut codec = new_codec(1);
    codec.feed(&[0xef, 0x7f, 0x01, 0x00, 0x00, 1, 2, 3, 4]);
    assert_eq!(
        codec.next_frame(),
        Ok(Some(Frame {
            payload: vec![1, 2, 3, 4],
            quick_ack: false
        }))
    );
}

#[test]
fn padded_intermediate_padding_is_random_and_bounded() {
    let mut codec = detected(PaddedIntermediate, 3);
    let mut pads = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let mut out = Vec::new();
        codec.encode(&[7; 32], &mut out).unwrap();
        let len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(out.len(), 4 + len);
        assert_eq!(out[4..36], [7; 32]);
        pads.insert(len - 32);
    }
    assert_eq!(pads, (0..16).collect());
}

#[test]
fn full_transport_seq_counts_from_zero_each_way() {
    let mut codec = detected(Full, 1);
    let mut out = Vec::new();
    for seq in 0..3u32 {
        out.clear();
        codec.encode(&[1; 8], &mut out).unwrap();
        assert_eq!(out, full_frame(seq, &[1; 8]));
    }
}

// ---------------------------------------------------------------- grammers interop

fn grammers_pack(t: &mut impl Transport, payload: &[u8]) -> Vec<u8> {
    let mut buffer = DequeBuffer::with_capacity(payload.len(), 8);
    buffer.extend(payload);
    t.pack(&mut buffer);
    buffer[..].to_vec()
}

/// Unpacks every frame of `wire` with a grammers client transport.
fn grammers_unpack_all(
    t: &mut impl Transport,
    mut wire: Vec<u8>,
) -> Result<Vec<Vec<u8>>, GrammersError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let UnpackedOffset {
            data_range,
            next_offset,
        } = t.unpack(&mut wire[at..])?;
        out.push(wire[at..][data_range].to_vec());
        at += next_offset;
    }
    Ok(out)
}

const INTEROP_SIZES: &[usize] = &[8, 16, 20, 504, 508, 512, 4096, (1 << 20) - 4];

/// Packs payloads as a grammers client would send them.
type Packer = Box<dyn FnMut(&[u8]) -> Vec<u8>>;

fn grammers_client(kind: TransportKind) -> Packer {
    match kind {
        Abridged => {
            let mut t = Abridged::new();
            Box::new(move |p: &[u8]| grammers_pack(&mut t, p))
        }
        Intermediate => {
            let mut t = Intermediate::new();
            Box::new(move |p: &[u8]| grammers_pack(&mut t, p))
        }
        Full => {
            let mut t = Full::new();
            Box::new(move |p: &[u8]| grammers_pack(&mut t, p))
        }
        PaddedIntermediate => unreachable!("grammers has no padded intermediate"),
    }
}

#[test]
fn grammers_client_frames_are_unpacked_exactly() {
    for kind in [Abridged, Intermediate, Full] {
        let mut pack = grammers_client(kind);
        let mut stream = Vec::new();
        for (i, &size) in INTEROP_SIZES.iter().enumerate() {
            stream.extend_from_slice(&pack(&payload(size, i as u64)));
        }
        for feeding in [
            Feeding::AllAtOnce,
            Feeding::ByteByByte,
            Feeding::RandomChunks(11),
        ] {
            let mut codec = new_codec(2);
            let frames = drain_stream(&mut codec, &stream, feeding);
            assert_eq!(codec.transport(), Some(kind));
            let payloads: Vec<_> = frames.iter().map(|f| f.payload.clone()).collect();
            let want: Vec<_> = INTEROP_SIZES
                .iter()
                .enumerate()
                .map(|(i, &s)| payload(s, i as u64))
                .collect();
            assert!(payloads == want, "{kind} {feeding:?}");
            assert!(frames.iter().all(|f| !f.quick_ack));
        }
    }
}

fn server_wire(kind: TransportKind, sizes: &[usize]) -> Vec<u8> {
    let mut codec = detected(kind, 4);
    let mut wire = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        codec.encode(&payload(size, i as u64), &mut wire).unwrap();
    }
    wire
}

#[test]
fn server_frames_are_unpacked_by_grammers() {
    let want: Vec<_> = INTEROP_SIZES
        .iter()
        .enumerate()
        .map(|(i, &s)| payload(s, i as u64))
        .collect();
    let wire = |kind| server_wire(kind, INTEROP_SIZES);
    assert_eq!(
        grammers_unpack_all(&mut Abridged::new(), wire(Abridged)).unwrap(),
        want
    );
    assert_eq!(
        grammers_unpack_all(&mut Intermediate::new(), wire(Intermediate)).unwrap(),
        want
    );
    assert_eq!(
        grammers_unpack_all(&mut Full::new(), wire(Full)).unwrap(),
        want
    );
}

#[test]
fn server_transport_errors_are_recognised_by_grammers() {
    let err = |kind| {
        let mut codec = detected(kind, 4);
        let mut wire = Vec::new();
        codec.encode_error(-404, &mut wire).unwrap();
        wire
    };
    let want = Err(GrammersError::BadStatus { status: 404 });
    assert_eq!(
        grammers_unpack_all(&mut Abridged::new(), err(Abridged)),
        want
    );
    assert_eq!(
        grammers_unpack_all(&mut Intermediate::new(), err(Intermediate)),
        want
    );
    assert_eq!(grammers_unpack_all(&mut Full::new(), err(Full)), want);
}

// ---------------------------------------------------------------- transport errors and quick acks sent

#[test]
fn transport_error_encodings() {
    let cases: [(TransportKind, &[u8]); 3] = [
        (Abridged, &[0x01, 0x6c, 0xfe, 0xff, 0xff]),
        (Intermediate, &[4, 0, 0, 0, 0x6c, 0xfe, 0xff, 0xff]),
        (
            Full,
            &[
                0x6c, 0xfe, 0xff, 0xff, 0x6c, 0xfe, 0xff, 0xff, 0x6c, 0xfe, 0xff, 0xff,
            ],
        ),
    ];
    for (kind, bytes) in cases {
        let mut codec = detected(kind, 1);
        let mut out = Vec::new();
        codec.encode_error(-404, &mut out).unwrap();
        assert_eq!(out, bytes, "{kind}");
    }
    for seed in 0..50 {
        let mut codec = detected(PaddedIntermediate, seed);
        let mut out = Vec::new();
        codec.encode_error(-429, &mut out).unwrap();
        let len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        assert!((4..16).contains(&len), "padded error body shorter than 16");
        assert_eq!(out.len(), 4 + len);
        let mut client = RefClient::new(PaddedIntermediate);
        client.feed(&out);
        assert_eq!(client.next(), Some(ServerMsg::Error(-429)));
    }
    for kind in TransportKind::ALL {
        let mut codec = detected(kind, 1);
        let mut client = RefClient::new(kind);
        let mut out = Vec::new();
        codec.encode_error(-444, &mut out).unwrap();
        client.feed(&out);
        assert_eq!(client.next(), Some(ServerMsg::Error(-444)), "{kind}");
    }
}

#[test]
fn quick_ack_encodings() {
    let token = 0x1234_5678; // top bit is set by the codec
    let sent = 0x9234_5678u32;

    let mut out = Vec::new();
    detected(Abridged, 1)
        .encode_quick_ack(token, &mut out)
        .unwrap();
    assert_eq!(out, [0x92, 0x34, 0x56, 0x78], "abridged: bswapped, raw");

    out.clear();
    detected(Intermediate, 1)
        .encode_quick_ack(token, &mut out)
        .unwrap();
    assert_eq!(out, [0x78, 0x56, 0x34, 0x92], "intermediate: LE, raw");

    for seed in 0..50 {
        out.clear();
        detected(PaddedIntermediate, seed)
            .encode_quick_ack(token, &mut out)
            .unwrap();
        let len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        assert!((8..16).contains(&len));
        assert_eq!(out.len(), 4 + len);
        assert_eq!(out[4..12], [0xff, 0xff, 0xff, 0xff, 0x78, 0x56, 0x34, 0x92]);
    }

    out.clear();
    assert_eq!(
        detected(Full, 1).encode_quick_ack(token, &mut out),
        Err(TransportError::QuickAckUnsupported)
    );
    assert!(out.is_empty());

    // Interleaved with frames, the reference client tells them apart.
    for kind in [Abridged, Intermediate, PaddedIntermediate] {
        let mut codec = detected(kind, 8);
        let mut out = Vec::new();
        codec.encode(&payload(512, 1), &mut out).unwrap();
        codec.encode_quick_ack(token, &mut out).unwrap();
        codec.encode(&payload(24, 2), &mut out).unwrap();
        let mut client = RefClient::new(kind);
        client.feed(&out);
        let Some(ServerMsg::Payload(p)) = client.next() else {
            panic!("{kind}: payload expected");
        };
        assert_eq!(&p[..512], &payload(512, 1)[..]);
        assert_eq!(client.next(), Some(ServerMsg::QuickAck(sent)), "{kind}");
        let Some(ServerMsg::Payload(p)) = client.next() else {
            panic!("{kind}: payload expected");
        };
        assert_eq!(&p[..24], &payload(24, 2)[..]);
    }
}

#[test]
fn encode_rejects_payloads_no_client_accepts() {
    for kind in TransportKind::ALL {
        let mut codec = detected(kind, 1);
        let mut out = Vec::new();
        assert_eq!(codec.encode(&[], &mut out), Err(TransportError::EmptyFrame));
        assert_eq!(
            codec.encode(&[1, 2, 3], &mut out),
            Err(TransportError::LengthNotAligned { len: 3 })
        );
        assert_eq!(
            codec.encode(&vec![0; MAX_FRAME_LEN + 4], &mut out),
            Err(TransportError::FrameTooLarge {
                len: MAX_FRAME_LEN + 4,
                max: MAX_FRAME_LEN
            })
        );
        assert!(out.is_empty());
    }
}

// ---------------------------------------------------------------- quick-ack requests

#[test]
fn quick_ack_requests_are_detected() {
    // abridged, short form: 0x80 | words
    let mut bytes = vec![0xef, 0x82];
    bytes.extend_from_slice(&[9; 8]);
    // abridged, long form: 0xff + words
    bytes.extend_from_slice(&[0xff, 0x80, 0x00, 0x00]);
    bytes.extend_from_slice(&[8; 512]);
    // and without the flag
    bytes.extend_from_slice(&[0x01, 1, 2, 3, 4]);
    let mut codec = new_codec(1);
    let frames = drain_stream(&mut codec, &bytes, Feeding::ByteByByte);
    assert_eq!(
        frames,
        [
            Frame {
                payload: vec![9; 8],
                quick_ack: true
            },
            Frame {
                payload: vec![8; 512],
                quick_ack: true
            },
            Frame {
                payload: vec![1, 2, 3, 4],
                quick_ack: false
            },
        ]
    );

    for kind in [Intermediate, PaddedIntermediate] {
        let mut bytes = kind.init_bytes().to_vec();
        bytes.extend_from_slice(&(0x8000_0008u32).to_le_bytes());
        bytes.extend_from_slice(&[5; 8]);
        bytes.extend_from_slice(&8u32.to_le_bytes());
        bytes.extend_from_slice(&[6; 8]);
        let mut codec = new_codec(1);
        let frames = drain_stream(&mut codec, &bytes, Feeding::ByteByByte);
        assert_eq!(
            frames,
            [
                Frame {
                    payload: vec![5; 8],
                    quick_ack: true
                },
                Frame {
                    payload: vec![6; 8],
                    quick_ack: false
                },
            ],
            "{kind}"
        );
    }
}

// ---------------------------------------------------------------- malformed input

#[test]
fn full_bad_crc() {
    let mut frame = full_frame(0, &[1; 16]);
    frame[10] ^= 0x01;
    let expected = crc32fast::hash(&frame[..frame.len() - 4]);
    let got = crc32fast::hash(&full_frame(0, &[1; 16])[..frame.len() - 4]);
    assert_eq!(
        first_problem(&frame),
        Err(TransportError::BadCrc { expected, got })
    );
}

#[test]
fn full_wrong_seq() {
    let mut bytes = full_frame(0, &[1; 16]);
    bytes.extend_from_slice(&full_frame(5, &[1; 16]));
    assert_eq!(
        first_problem(&bytes),
        Err(TransportError::BadSeq {
            expected: 1,
            got: 5
        })
    );
    // A replayed frame is a wrong seq too.
    let mut bytes = full_frame(0, &[1; 16]);
    bytes.extend_from_slice(&full_frame(1, &[2; 16]));
    bytes.extend_from_slice(&full_frame(1, &[2; 16]));
    assert_eq!(
        first_problem(&bytes),
        Err(TransportError::BadSeq {
            expected: 2,
            got: 1
        })
    );
    // A first frame with a seq other than 0 is not taken for the full
    // transport at all (obfuscated headers never have 0 there).
    assert_eq!(
        first_problem(&full_frame(1, &[1; 16])),
        Err(TransportError::UnrecognizedTransport { first_word: 28 })
    );
}

#[test]
fn oversize_lengths_are_rejected_from_the_header_alone() {
    let too_large = |len| {
        Err(TransportError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        })
    };
    let big = (MAX_FRAME_LEN + 4) as u32;
    assert_eq!(
        first_problem(&[0xef, 0x7f, 0xff, 0xff, 0xff]),
        too_large(0xff_ffff * 4)
    );
    let words = (big / 4).to_le_bytes();
    assert_eq!(
        first_problem(&[0xef, 0xff, words[0], words[1], words[2]]),
        too_large(big as usize)
    );
    for tag in [[0xee; 4], [0xdd; 4]] {
        let mut bytes = tag.to_vec();
        bytes.extend_from_slice(&big.to_le_bytes());
        assert_eq!(first_problem(&bytes), too_large(big as usize));
        let mut bytes = tag.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(first_problem(&bytes), too_large(0x7fff_ffff));
    }
    let mut bytes = full_frame(0, &[1; 8]);
    bytes.extend_from_slice(&(big + 12).to_le_bytes());
    assert_eq!(first_problem(&bytes), too_large(big as usize));
    let mut bytes = full_frame(0, &[1; 8]);
    bytes.extend_from_slice(&(-404i32).to_le_bytes());
    assert_eq!(first_problem(&bytes), too_large(0xffff_fe6c - 12));

    // A lower limit applies the same way.
    let mut codec = new_codec(1).with_max_frame_len(1024);
    codec.feed(&[0xee, 0xee, 0xee, 0xee, 0x04, 0x04, 0, 0]);
    assert_eq!(
        codec.next_frame(),
        Err(TransportError::FrameTooLarge {
            len: 1028,
            max: 1024
        })
    );
}

#[test]
fn zero_lengths_are_rejected() {
    assert_eq!(
        first_problem(&[0xef, 0x00]),
        Err(TransportError::EmptyFrame)
    );
    assert_eq!(
        first_problem(&[0xef, 0x80]),
        Err(TransportError::EmptyFrame)
    );
    assert_eq!(
        first_problem(&[0xef, 0x7f, 0, 0, 0]),
        Err(TransportError::EmptyFrame)
    );
    for tag in [[0xee; 4], [0xdd; 4]] {
        let mut bytes = tag.to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(first_problem(&bytes), Err(TransportError::EmptyFrame));
        let mut bytes = tag.to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 0x80]);
        assert_eq!(first_problem(&bytes), Err(TransportError::EmptyFrame));
    }
    assert_eq!(
        first_problem(&full_frame(0, &[])),
        Err(TransportError::EmptyFrame)
    );
    let mut bytes = full_frame(0, &[1; 4]);
    bytes.extend_from_slice(&full_frame(1, &[]));
    assert_eq!(first_problem(&bytes), Err(TransportError::EmptyFrame));
}

#[test]
fn unaligned_and_short_lengths_are_rejected() {
    assert_eq!(
        first_problem(&[0xee, 0xee, 0xee, 0xee, 5, 0, 0, 0]),
        Err(TransportError::LengthNotAligned { len: 5 })
    );
    // The padded intermediate allows any length of at least 4...
    let mut bytes = vec![0xdd, 0xdd, 0xdd, 0xdd, 5, 0, 0, 0, 1, 2, 3, 4, 5];
    assert_eq!(
        first_problem(&bytes),
        Ok(None),
        "padded: 4 bytes + 1 of padding"
    );
    // ...but not fewer.
    bytes.extend_from_slice(&[3, 0, 0, 0]);
    assert_eq!(
        first_problem(&bytes),
        Err(TransportError::FrameTooShort { len: 3, min: 4 })
    );
    let mut bytes = full_frame(0, &[1; 8]);
    bytes.extend_from_slice(&17u32.to_le_bytes());
    assert_eq!(
        first_problem(&bytes),
        Err(TransportError::LengthNotAligned { len: 17 })
    );
    let mut bytes = full_frame(0, &[1; 8]);
    bytes.extend_from_slice(&8u32.to_le_bytes());
    assert_eq!(
        first_problem(&bytes),
        Err(TransportError::FrameTooShort { len: 8, min: 12 })
    );
}

#[test]
fn garbage_first_bytes_are_unrecognized() {
    let unrecognized = |bytes: &[u8]| {
        matches!(
            first_problem(bytes),
            Err(TransportError::UnrecognizedTransport { .. })
        )
    };
    assert!(unrecognized(b"POST /api HTTP/1.1\r\n"));
    assert!(unrecognized(b"GET / HTTP/1.1\r\n"));
    assert!(unrecognized(b"HEAD / HTTP/1.1\r\n"));
    assert!(unrecognized(&[0xff; 64]));
    assert!(unrecognized(&[0x16, 0x03, 0x01, 0x02, 0x00])); // TLS ClientHello
    assert!(unrecognized(&[0x00; 8])); // length 0
    // Obfuscated headers as a client builds them: random, first word no
    // tag, first byte not 0xef, second word never 0.
    let mut rng = Rng(1234);
    let mut caught = 0;
    for _ in 0..2000 {
        let mut header = [0u8; 64];
        rng.fill(&mut header);
        if header[0] == 0xef
            || header[..4] == [0xee; 4]
            || header[..4] == [0xdd; 4]
            || header[4..8] == [0; 4]
        {
            continue;
        }
        caught += 1;
        assert!(unrecognized(&header), "{header:02x?}");
    }
    assert!(caught > 1900);
    // Partial garbage waits for enough bytes, then fails.
    let mut codec = new_codec(1);
    codec.feed(b"PO");
    assert_eq!(codec.next_frame(), Ok(None));
    codec.feed(b"ST");
    assert!(matches!(
        codec.next_frame(),
        Err(TransportError::UnrecognizedTransport {
            first_word: 0x5453_4f50
        })
    ));
}

#[test]
fn errors_display_and_are_std_errors() {
    let errors = [
        TransportError::UnrecognizedTransport { first_word: 1 },
        TransportError::EmptyFrame,
        TransportError::FrameTooShort { len: 1, min: 4 },
        TransportError::FrameTooLarge { len: 9, max: 4 },
        TransportError::LengthNotAligned { len: 5 },
        TransportError::BadCrc {
            expected: 1,
            got: 2,
        },
        TransportError::BadSeq {
            expected: 1,
            got: 2,
        },
        TransportError::NotDetected,
        TransportError::QuickAckUnsupported,
    ];
    let shown: std::collections::BTreeSet<String> = errors
        .iter()
        .map(|e| {
            let e: &dyn std::error::Error = e;
            e.to_string()
        })
        .collect();
    assert_eq!(shown.len(), errors.len());
    assert!(shown.iter().all(|s| !s.is_empty()));
}

// ---------------------------------------------------------------- properties

/// Feeds `stream` in the chunks `cuts` says and checks the codec's contract:
/// no panic, and an error, once returned, is returned forever.
fn feed_arbitrarily(stream: &[u8], cuts: &[usize]) {
    let mut codec = new_codec(3);
    let mut rest = stream;
    let mut failure: Option<TransportError> = None;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = (*cuts.next().unwrap_or(&1)).clamp(1, rest.len());
        codec.feed(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.next_frame() {
                Ok(Some(frame)) => {
                    assert!(failure.is_none());
                    assert!(!frame.payload.is_empty());
                    assert!(frame.payload.len() <= MAX_FRAME_LEN);
                }
                Ok(None) => {
                    assert!(failure.is_none());
                    break;
                }
                Err(err) => {
                    if let Some(prev) = &failure {
                        assert_eq!(prev, &err);
                    }
                    failure = Some(err);
                    break;
                }
            }
        }
    }
    // Encoding never panics either, whatever state the codec is in.
    let mut out = Vec::new();
    let _ = codec.encode(&[0; 16], &mut out);
    let _ = codec.encode_error(-404, &mut out);
    let _ = codec.encode_quick_ack(0x1234, &mut out);
}

fn tag_prefix(index: u8) -> &'static [u8] {
    match index % 5 {
        0 => &[],
        1 => &[0xef],
        2 => &[0xee; 4],
        3 => &[0xdd; 4],
        _ => &[0x20, 0, 0, 0, 0, 0, 0, 0], // a full frame's header, seq 0
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_streams_never_panic(
        tag in any::<u8>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(1usize..40, 1..8),
    ) {
        let mut stream = tag_prefix(tag).to_vec();
        stream.extend_from_slice(&bytes);
        feed_arbitrarily(&stream, &cuts);
    }

    #[test]
    fn arbitrary_framed_streams_round_trip(
        kind_index in 0usize..4,
        frames in proptest::collection::vec((1usize..300, any::<bool>(), 0usize..16, any::<u64>()), 1..12),
        chunk_seed in any::<u64>(),
    ) {
        let kind = TransportKind::ALL[kind_index];
        let mut client = RefClient::new(kind);
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for &(words, quick_ack, pad_len, seed) in &frames {
            let quick_ack = quick_ack && kind.supports_quick_ack();
            let body = payload(words * 4, seed);
            let pad = if kind == PaddedIntermediate { vec![0xaa; pad_len] } else { Vec::new() };
            stream.extend_from_slice(&client.pack(&body, quick_ack, &pad));
            let mut want = body;
            want.extend_from_slice(&pad);
            expected.push(Frame { payload: want, quick_ack });
        }
        let mut codec = new_codec(chunk_seed);
        let got = drain_stream(&mut codec, &stream, Feeding::RandomChunks(chunk_seed));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn corrupted_full_frames_never_pass(
        body in proptest::collection::vec(any::<u8>(), 1..64),
        flip in any::<usize>(),
        bit in 0u8..8,
    ) {
        let mut body = body;
        body.resize(body.len().div_ceil(4) * 4, 0);
        let mut bytes = full_frame(0, &[1; 8]);
        let second = full_frame(1, &body);
        let at = bytes.len() + flip % second.len();
        bytes.extend_from_slice(&second);
        bytes[at] ^= 1 << bit;
        let mut codec = new_codec(1);
        codec.feed(&bytes);
        prop_assert!(codec.next_frame().is_ok());
        // The corrupted frame is never returned as a valid one.
        if let Ok(Some(frame)) = codec.next_frame() {
            prop_assert!(false, "corruption passed: {:?}", frame);
        }
    }
}
