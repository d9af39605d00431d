//! Tests of the generated TL module (`secret_core::tl`).
//!
//! The schema is re-parsed here by an independent mini parser, which drives a sample builder
//! (a non-trivial JSON value for every constructor) and an independent encoder (expected bytes
//! for that JSON). A constructor added to the schema is covered without editing this file; a new
//! *type* makes `every_type_is_checked_typed` fail until it is added to `typed_check!` below.
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use serde_json::{Value, json};

use secret_core::tl::{
    self, ALL_CONSTRUCTORS, Deserializable, Identifiable, JsonError, Reader, Serializable, TlError,
    TlJson, boxed_to_json, constructor_name, enums, json_to_boxed, types,
};

// ---- independent schema parser ------------------------------------------------------------------

#[derive(Clone, Debug)]
enum T {
    Int,
    Long,
    Double,
    Str,
    Bytes,
    True,
    Vector(Box<T>),
    Boxed(String),
}

#[derive(Debug)]
struct P {
    name: String,
    ty: T,
    /// `Some(bit)` for `flags.N?...`.
    flag: Option<u32>,
    is_flags: bool,
}

#[derive(Debug)]
struct C {
    name: String,
    id: u32,
    ty: String,
    params: Vec<P>,
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn parse_type(s: &str) -> T {
    match s {
        "int" => T::Int,
        "long" => T::Long,
        "double" => T::Double,
        "string" => T::Str,
        "bytes" => T::Bytes,
        "true" => T::True,
        _ => {
            if let Some(inner) = s.strip_prefix("Vector<").and_then(|r| r.strip_suffix('>')) {
                T::Vector(Box::new(parse_type(inner)))
            } else {
                assert!(s.starts_with(|c: char| c.is_ascii_uppercase()), "type {s}");
                T::Boxed(s.to_owned())
            }
        }
    }
}

fn schema() -> &'static [C] {
    static SCHEMA: OnceLock<Vec<C>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let src = include_str!("../schema/secret_api.tl");
        let text: String = src
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let types_part = text.split("---functions---").next().unwrap();
        let mut out = Vec::new();
        for def in types_part.split(';') {
            let def = def.split_whitespace().collect::<Vec<_>>().join(" ");
            if def.is_empty() {
                continue;
            }
            let (lhs, ty) = def.split_once(" = ").unwrap();
            let mut toks = lhs.split(' ');
            let head = toks.next().unwrap();
            let (name, id) = match head.split_once('#') {
                Some((n, h)) => (n, Some(u32::from_str_radix(h, 16).unwrap())),
                None => (head, None),
            };
            if ["int", "long", "double", "string", "bytes", "vector"].contains(&name) {
                continue;
            }
            // Only parameterless definitions lack an id here; their id is crc32 of the text.
            let id = id.unwrap_or_else(|| {
                assert!(toks.clone().next().is_none(), "{def}");
                crc32(def.as_bytes())
            });
            let params = toks
                .map(|t| {
                    let (pname, pty) = t.split_once(':').unwrap();
                    if pty == "#" {
                        return P {
                            name: pname.into(),
                            ty: T::Int,
                            flag: None,
                            is_flags: true,
                        };
                    }
                    let (flag, pty) = match pty.split_once('?') {
                        Some((f, rest)) => {
                            let bit = f.strip_prefix("flags.").unwrap().parse().unwrap();
                            (Some(bit), rest)
                        }
                        None => (None, pty),
                    };
                    P {
                        name: pname.into(),
                        ty: parse_type(pty),
                        flag,
                        is_flags: false,
                    }
                })
                .collect();
            out.push(C {
                name: name.into(),
                id,
                ty: ty.into(),
                params,
            });
        }
        out
    })
}

fn ctors_of(ty: &str) -> Vec<&'static C> {
    schema().iter().filter(|c| c.ty == ty).collect()
}

fn ctor_named(name: &str) -> &'static C {
    schema().iter().find(|c| c.name == name).unwrap()
}

// ---- sample builder ---------------------------------------------------------------------------

/// Deterministic value source: each call yields the next counter value.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

fn sample_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut b: Vec<u8> = (0..len)
        .map(|i| (i as u64 * 31 + seed * 7 + 1) as u8)
        .collect();
    // Keep the base64 from starting with "0x" (tested separately): byte 0 must not be 0xd3.
    if b.first() == Some(&0xd3) {
        b[0] = 0;
    }
    b
}

fn sample_value(t: &T, g: &mut Gen, depth: usize) -> Value {
    let n = g.next();
    match t {
        T::Int => {
            let opts = [0, 1, -1, i32::MIN, i32::MAX, 123_456, -7_654_321];
            json!(opts[(n % 7) as usize])
        }
        T::Long => {
            let opts = [
                i64::MIN,
                i64::MAX,
                -2,
                (1i64 << 53) + 1,
                0x1234_5678_9abc_def0,
                0,
            ];
            json!(opts[(n % 6) as usize])
        }
        T::Double => {
            let opts = [0.0, -1.5, 1e300, std::f64::consts::PI, -0.0, 5e-324];
            json!(opts[(n % 6) as usize])
        }
        T::Str => {
            let long = "x".repeat(300);
            let opts = ["", "hello", "héllo wörld ✓ 🔐", long.as_str(), "z"];
            json!(opts[(n % 5) as usize])
        }
        T::Bytes => {
            let lens = [0, 1, 2, 3, 4, 253, 254, 255, 300, 16];
            let len = lens[(n % 10) as usize];
            json!(STANDARD.encode(sample_bytes(len, n)))
        }
        T::True => json!(true),
        T::Vector(inner) => {
            let count = [2, 0, 1, 3][(n % 4) as usize];
            Value::Array((0..count).map(|_| sample_value(inner, g, depth)).collect())
        }
        T::Boxed(ty) => {
            let cs = ctors_of(ty);
            assert!(!cs.is_empty(), "no constructor for {ty}");
            let c = cs[(n as usize) % cs.len()];
            sample_ctor(c, true, g, depth + 1)
        }
    }
}

/// A JSON sample of constructor `c`; `full` sets every optional field and `true` flag.
fn sample_ctor(c: &C, full: bool, g: &mut Gen, depth: usize) -> Value {
    assert!(depth < 10, "schema recursion");
    let mut m = serde_json::Map::new();
    m.insert("_".into(), json!(c.name));
    for p in &c.params {
        if p.is_flags || (p.flag.is_some() && !full) {
            continue;
        }
        m.insert(p.name.clone(), sample_value(&p.ty, g, depth));
    }
    Value::Object(m)
}

// ---- independent encoder ----------------------------------------------------------------------

fn enc_tl_bytes(data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    if data.len() < 254 {
        out.push(data.len() as u8);
    } else {
        out.push(0xfe);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes()[..3]);
    }
    out.extend_from_slice(data);
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
}

fn enc_value(t: &T, v: &Value, out: &mut Vec<u8>) {
    match t {
        T::Int => out.extend_from_slice(&(v.as_i64().unwrap() as i32).to_le_bytes()),
        T::Long => out.extend_from_slice(&v.as_i64().unwrap().to_le_bytes()),
        T::Double => out.extend_from_slice(&v.as_f64().unwrap().to_le_bytes()),
        T::Str => enc_tl_bytes(v.as_str().unwrap().as_bytes(), out),
        T::Bytes => enc_tl_bytes(&STANDARD.decode(v.as_str().unwrap()).unwrap(), out),
        T::True => unreachable!("true is only used as a flag"),
        T::Vector(inner) => {
            let items = v.as_array().unwrap();
            out.extend_from_slice(&0x1cb5_c415u32.to_le_bytes());
            out.extend_from_slice(&(items.len() as i32).to_le_bytes());
            for item in items {
                enc_value(inner, item, out);
            }
        }
        T::Boxed(_) => enc_ctor(v, out),
    }
}

/// Boxed encoding of a constructor's JSON, independent of the library.
fn enc_ctor(v: &Value, out: &mut Vec<u8>) {
    let c = ctor_named(v["_"].as_str().unwrap());
    out.extend_from_slice(&c.id.to_le_bytes());
    for p in &c.params {
        if p.is_flags {
            let mut flags = 0u32;
            for q in &c.params {
                let Some(bit) = q.flag else { continue };
                let set = match q.ty {
                    T::True => v.get(&q.name) == Some(&Value::Bool(true)),
                    _ => v.get(&q.name).is_some_and(|x| !x.is_null()),
                };
                if set {
                    flags |= 1 << bit;
                }
            }
            out.extend_from_slice(&flags.to_le_bytes());
        } else if matches!(p.ty, T::True) {
            continue;
        } else if let Some(x) = v.get(&p.name).filter(|x| !x.is_null()) {
            enc_value(&p.ty, x, out);
        } else {
            assert!(p.flag.is_some(), "missing required {}", p.name);
        }
    }
}

fn expected_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    enc_ctor(v, &mut out);
    out
}

// ---- typed checks -----------------------------------------------------------------------------

fn check_typed<E>(bytes: &[u8], json: &Value)
where
    E: Serializable + Deserializable + TlJson + PartialEq + Debug,
{
    let v = E::from_bytes(bytes).unwrap();
    assert_eq!(v.to_bytes(), bytes, "bytes -> value -> bytes");
    assert_eq!(v.to_json(), *json, "bytes -> value -> JSON");
    let from_json = E::from_json(json).unwrap();
    assert_eq!(from_json, v, "JSON -> value");
    assert_eq!(from_json.to_json(), *json, "JSON -> value -> JSON");
    let mut r = Reader::new(bytes);
    E::deserialize(&mut r).unwrap();
    assert!(r.is_canonical());
    assert_eq!(r.position(), bytes.len());
    // Every truncation is an error (and none panics).
    for n in 0..bytes.len() {
        assert!(
            E::from_bytes(&bytes[..n]).is_err(),
            "prefix of {n} bytes decoded"
        );
    }
    // One extra byte is an error too.
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(
        E::from_bytes(&longer),
        Err(TlError::TrailingBytes { count: 1 })
    );
}

macro_rules! typed_check {
    ($($t:ident),* $(,)?) => {
        const TYPED: &[&str] = &[$(stringify!($t)),*];
        fn typed(ty: &str, bytes: &[u8], json: &Value) {
            match ty {
                $(stringify!($t) => check_typed::<enums::$t>(bytes, json),)*
                other => panic!("type {other} is not in typed_check!"),
            }
        }
    };
}

typed_check!(
    Bool,
    True,
    DecryptedMessage,
    DecryptedMessageMedia,
    DecryptedMessageAction,
    DecryptedMessageLayer,
    SendMessageAction,
    DocumentAttribute,
    PhotoSize,
    FileLocation,
    MessageEntity,
    InputStickerSet,
);

// ---- per-constructor round trips --------------------------------------------------------------

#[test]
fn every_type_is_checked_typed() {
    let mut types: Vec<&str> = schema().iter().map(|c| c.ty.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    let mut typed: Vec<&str> = TYPED.to_vec();
    typed.sort_unstable();
    assert_eq!(types, typed);
}

#[test]
fn constructor_table_matches_schema() {
    // 86 constructors with an explicit id (85 end-to-end ones plus `true#3fedd339`) and the two
    // id-less `boolFalse`/`boolTrue`, whose ids are the CRC32 of their definition text.
    assert_eq!(ALL_CONSTRUCTORS.len(), 88);
    assert_eq!(schema().len(), 88);
    for (c, &(name, id)) in schema().iter().zip(ALL_CONSTRUCTORS) {
        assert_eq!((c.name.as_str(), c.id), (name, id));
        assert_eq!(constructor_name(id), Some(name));
    }
    assert!(ALL_CONSTRUCTORS.contains(&("boolFalse", 0xbc79_9737)));
    assert!(ALL_CONSTRUCTORS.contains(&("boolTrue", 0x9972_75b5)));
    assert!(ALL_CONSTRUCTORS.contains(&("true", 0x3fed_d339)));
    assert!(ALL_CONSTRUCTORS.contains(&("decryptedMessageActionReadMessages", 0x0c4f_40be)));
    assert_eq!(constructor_name(tl::VECTOR_CONSTRUCTOR_ID), None);
    assert_eq!(types::BoolFalse::CONSTRUCTOR_ID, 0xbc79_9737);
    assert_eq!(
        types::DecryptedMessageService8::NAME,
        "decryptedMessageService8"
    );
    assert_eq!(tl::LAYER, 144);
}

#[test]
fn every_constructor_round_trips() {
    let mut g = Gen(0);
    for c in schema() {
        let has_optional = c.params.iter().any(|p| p.flag.is_some());
        for full in [true, false] {
            if !full && !has_optional {
                continue;
            }
            // Several samples per constructor so that nested choices and lengths vary.
            for _ in 0..3 {
                let json = sample_ctor(c, full, &mut g, 0);
                let expected = expected_bytes(&json);
                let ctx = format!("{} {json}", c.name);
                assert_eq!(json_to_boxed(&json).unwrap(), expected, "{ctx}");
                assert_eq!(boxed_to_json(&expected).unwrap(), json, "{ctx}");
                assert_eq!(&expected[..4], &c.id.to_le_bytes());
                typed(&c.ty, &expected, &json);
            }
        }
    }
}

// ---- known encodings --------------------------------------------------------------------------

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '|'], "")).unwrap()
}

#[test]
fn known_encodings() {
    let read = types::DecryptedMessageActionReadMessages {
        random_ids: vec![1, -1],
    };
    assert_eq!(
        read.to_bytes(),
        hex("be404f0c 15c4b51c 02000000 0100000000000000 ffffffffffffffff")
    );

    let service = types::DecryptedMessageService {
        random_id: 7,
        action: enums::DecryptedMessageAction::SetMessageTTL(
            types::DecryptedMessageActionSetMessageTTL { ttl_seconds: 30 },
        ),
    };
    let bytes = hex("60411673 | 0700000000000000 | ec3a73a1 | 1e000000");
    assert_eq!(service.to_bytes(), bytes);
    let boxed = enums::DecryptedMessage::from(service.clone());
    assert_eq!(boxed.to_bytes(), bytes);
    assert_eq!(enums::DecryptedMessage::from_bytes(&bytes).unwrap(), boxed);
    assert_eq!(
        types::DecryptedMessageService::from_bytes(&bytes).unwrap(),
        service
    );
    let mut bare = Vec::new();
    service.serialize_bare(&mut bare);
    assert_eq!(bare, bytes[4..]);
    let mut r = Reader::new(&bytes[4..]);
    assert_eq!(
        types::DecryptedMessageService::deserialize_bare(&mut r).unwrap(),
        service
    );
    assert_eq!(
        boxed.to_json(),
        json!({"_": "decryptedMessageService", "random_id": 7,
               "action": {"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 30}})
    );
    assert_eq!(boxed.constructor_id(), 0x7316_4160);
    assert_eq!(boxed.constructor_name(), "decryptedMessageService");

    // Wrapped in the layer envelope.
    let layer = types::DecryptedMessageLayer {
        random_bytes: vec![0xab; 15],
        layer: 144,
        in_seq_no: 2,
        out_seq_no: 3,
        message: boxed,
    };
    let mut expected = hex("8917e31b 0f");
    expected.extend_from_slice(&[0xab; 15]);
    expected.extend_from_slice(&hex("90000000 02000000 03000000"));
    expected.extend_from_slice(&bytes);
    assert_eq!(layer.to_bytes(), expected);
    assert_eq!(
        enums::DecryptedMessageLayer::from_bytes(&expected).unwrap(),
        enums::DecryptedMessageLayer::DecryptedMessageLayer(layer)
    );
}

#[test]
fn bytes_framing() {
    let key = |n: usize| types::DecryptedMessageActionRequestKey {
        exchange_id: 1,
        g_a: vec![0xaa; n],
    };
    let prefix = hex("1b61c9f3 0100000000000000");
    // (length, header, padding)
    let cases: [(usize, &str, usize); 6] = [
        (0, "00", 3),
        (1, "01", 2),
        (3, "03", 0),
        (253, "fd", 2),
        (254, "fe fe0000", 2),
        (300, "fe 2c0100", 0),
    ];
    for (len, header, pad) in cases {
        let mut expected = prefix.clone();
        expected.extend_from_slice(&hex(header));
        expected.extend_from_slice(&vec![0xaa; len]);
        expected.extend_from_slice(&vec![0; pad]);
        assert_eq!(expected.len() % 4, 0);
        assert_eq!(key(len).to_bytes(), expected, "length {len}");
        assert_eq!(
            types::DecryptedMessageActionRequestKey::from_bytes(&expected).unwrap(),
            key(len)
        );
    }
}

#[test]
fn flags_encoding() {
    let msg = types::DecryptedMessage {
        silent: true,
        random_id: 1,
        ttl: 0,
        message: "hi".into(),
        media: None,
        entities: Some(vec![enums::MessageEntity::Bold(types::MessageEntityBold {
            offset: 0,
            length: 2,
        })]),
        via_bot_name: None,
        reply_to_random_id: Some(5),
        grouped_id: None,
    };
    // flags = silent(5) | entities(7) | reply_to_random_id(3) = 0xa8
    let expected = hex(
        "7446cc91 | a8000000 | 0100000000000000 | 00000000 | 02686900 \
         | 15c4b51c 01000000 c90b61bd 00000000 02000000 | 0500000000000000",
    );
    assert_eq!(msg.to_bytes(), expected);
    let decoded = enums::DecryptedMessage::from_bytes(&expected).unwrap();
    assert_eq!(
        decoded,
        enums::DecryptedMessage::DecryptedMessage(msg.clone())
    );
    assert_eq!(
        msg.to_json(),
        json!({"_": "decryptedMessage", "silent": true, "random_id": 1, "ttl": 0, "message": "hi",
               "entities": [{"_": "messageEntityBold", "offset": 0, "length": 2}],
               "reply_to_random_id": 5})
    );
    // silent = false: the key is omitted, the bit is clear.
    let quiet = types::DecryptedMessage {
        silent: false,
        ..msg
    };
    assert_eq!(quiet.to_bytes()[4], 0x88);
    assert!(quiet.to_json().get("silent").is_none());
    // documentAttributeVideo: a flags constructor whose only flag is a `true`.
    let video = types::DocumentAttributeVideo {
        round_message: true,
        duration: 1,
        w: 2,
        h: 3,
    };
    assert_eq!(
        video.to_bytes(),
        hex("e62cf00e 01000000 01000000 02000000 03000000")
    );
}

/// Constructs the names the rest of the crate codes against (a rename fails to compile).
#[test]
fn api_names() {
    use enums::DecryptedMessageAction as A;
    let actions = [
        A::SetMessageTTL(types::DecryptedMessageActionSetMessageTTL { ttl_seconds: 1 }),
        A::ReadMessages(types::DecryptedMessageActionReadMessages {
            random_ids: vec![1],
        }),
        A::DeleteMessages(types::DecryptedMessageActionDeleteMessages { random_ids: vec![] }),
        A::ScreenshotMessages(types::DecryptedMessageActionScreenshotMessages {
            random_ids: vec![],
        }),
        A::Resend(types::DecryptedMessageActionResend {
            start_seq_no: 0,
            end_seq_no: 2,
        }),
        A::NotifyLayer(types::DecryptedMessageActionNotifyLayer { layer: 144 }),
        A::Typing(types::DecryptedMessageActionTyping {
            action: enums::SendMessageAction::SendMessageTypingAction(
                types::SendMessageTypingAction {},
            ),
        }),
        A::RequestKey(types::DecryptedMessageActionRequestKey {
            exchange_id: 1,
            g_a: vec![],
        }),
        A::AcceptKey(types::DecryptedMessageActionAcceptKey {
            exchange_id: 1,
            g_b: vec![],
            key_fingerprint: 2,
        }),
        A::AbortKey(types::DecryptedMessageActionAbortKey { exchange_id: 1 }),
        A::CommitKey(types::DecryptedMessageActionCommitKey {
            exchange_id: 1,
            key_fingerprint: 2,
        }),
        A::Noop(types::DecryptedMessageActionNoop {}),
        A::FlushHistory(types::DecryptedMessageActionFlushHistory {}),
    ];
    for a in actions {
        assert_eq!(A::from_bytes(&a.to_bytes()).unwrap(), a);
    }
    let _ = enums::DecryptedMessage::Service8(types::DecryptedMessageService8 {
        random_id: 1,
        random_bytes: vec![],
        action: enums::DecryptedMessageAction::Noop(types::DecryptedMessageActionNoop {}),
    });
    let _ = |m: enums::DecryptedMessage| match m {
        enums::DecryptedMessage::DecryptedMessage8(_)
        | enums::DecryptedMessage::DecryptedMessage23(_)
        | enums::DecryptedMessage::DecryptedMessage46(_)
        | enums::DecryptedMessage::DecryptedMessage(_)
        | enums::DecryptedMessage::Service(_)
        | enums::DecryptedMessage::Service8(_) => (),
    };
    let _ = enums::Bool::False(types::BoolFalse {});
    let _ = enums::True::True(types::True {});
    let _ = enums::PhotoSize::PhotoCachedSize(types::PhotoCachedSize {
        r#type: "s".into(),
        location: enums::FileLocation::Unavailable(types::FileLocationUnavailable {
            volume_id: 1,
            local_id: 2,
            secret: 3,
        }),
        w: 1,
        h: 1,
        bytes: vec![],
    });
}

// ---- binary errors ----------------------------------------------------------------------------

#[test]
fn unknown_constructor() {
    let b = hex("efbeadde");
    assert_eq!(
        enums::DecryptedMessage::from_bytes(&b),
        Err(TlError::UnknownConstructor {
            id: 0xdead_beef,
            type_name: "DecryptedMessage"
        })
    );
    assert_eq!(
        boxed_to_json(&b),
        Err(TlError::UnknownConstructor {
            id: 0xdead_beef,
            type_name: "any constructor"
        })
    );
    // A valid constructor of another type.
    let noop = types::DecryptedMessageActionNoop {}.to_bytes();
    assert!(matches!(
        enums::DecryptedMessage::from_bytes(&noop),
        Err(TlError::UnknownConstructor {
            id: 0xa82f_dd63,
            ..
        })
    ));
    assert_eq!(
        types::DecryptedMessageService::from_bytes(&noop),
        Err(TlError::UnknownConstructor {
            id: 0xa82f_dd63,
            type_name: "decryptedMessageService"
        })
    );
    assert!(matches!(
        enums::DecryptedMessage::from_bytes(&[]),
        Err(TlError::UnexpectedEnd {
            needed: 4,
            remaining: 0
        })
    ));
    // Display works and names the id.
    let e = enums::DecryptedMessage::from_bytes(&b).unwrap_err();
    assert!(e.to_string().contains("0xdeadbeef"), "{e}");
}

#[test]
fn trailing_bytes() {
    let mut b = types::DecryptedMessageActionNoop {}.to_bytes();
    b.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        enums::DecryptedMessageAction::from_bytes(&b),
        Err(TlError::TrailingBytes { count: 4 })
    );
    assert_eq!(boxed_to_json(&b), Err(TlError::TrailingBytes { count: 4 }));
}

#[test]
fn vector_counts() {
    let with = |count: i32, extra: &[u8]| {
        let mut b = hex("be404f0c 15c4b51c");
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(extra);
        b
    };
    let dec = enums::DecryptedMessageAction::from_bytes;
    assert_eq!(
        dec(&with(-1, &[])),
        Err(TlError::InvalidVectorLength { count: -1 })
    );
    assert_eq!(
        dec(&with(i32::MIN, &[])),
        Err(TlError::InvalidVectorLength { count: i32::MIN })
    );
    assert_eq!(
        dec(&with(i32::MAX, &[0; 64])),
        Err(TlError::InvalidVectorLength { count: i32::MAX })
    );
    // Two longs announced, one present.
    assert_eq!(
        dec(&with(2, &[0; 8])),
        Err(TlError::InvalidVectorLength { count: 2 })
    );
    assert!(dec(&with(1, &[0; 8])).is_ok());
    assert!(dec(&with(0, &[])).is_ok());
    let mut bad_id = with(0, &[]);
    bad_id[4] = 0;
    assert_eq!(dec(&bad_id), Err(TlError::BadVectorId { id: 0x1cb5_c400 }));
    // Huge counts of boxed elements (entities) are rejected too.
    let mut b = hex("7446cc91 80000000 0100000000000000 00000000 00000000 15c4b51c");
    b.extend_from_slice(&0x4000_0000i32.to_le_bytes());
    assert_eq!(
        enums::DecryptedMessage::from_bytes(&b),
        Err(TlError::InvalidVectorLength { count: 0x4000_0000 })
    );
}

#[test]
fn string_errors_and_leniency() {
    let web = |payload: &str| hex(&format!("d81105e5 {payload}"));
    // Invalid UTF-8 in a string.
    assert_eq!(
        enums::DecryptedMessageMedia::from_bytes(&web("02c32800")),
        Err(TlError::InvalidUtf8)
    );
    // 0xff length prefix.
    assert_eq!(
        enums::DecryptedMessageMedia::from_bytes(&web("ff000000")),
        Err(TlError::BadBytesLength)
    );
    // Data shorter than the announced length.
    assert!(matches!(
        enums::DecryptedMessageMedia::from_bytes(&web("05616263")),
        Err(TlError::UnexpectedEnd { .. })
    ));
    let ok = web("02616200");
    let expected = enums::DecryptedMessageMedia::WebPage(types::DecryptedMessageMediaWebPage {
        url: "ab".into(),
    });
    assert_eq!(
        enums::DecryptedMessageMedia::from_bytes(&ok).unwrap(),
        expected
    );

    // Accepted but non-canonical: non-zero padding, long form for a short length, unknown flags.
    for input in [web("02616201"), web("fe020000 61620000")] {
        let mut r = Reader::new(&input);
        let v = enums::DecryptedMessageMedia::deserialize(&mut r).unwrap();
        assert!(!r.is_canonical());
        assert_eq!(v, expected);
        assert_eq!(v.to_bytes(), ok);
    }
    let mut unknown_flag = hex("7446cc91 01000000 0100000000000000 00000000 00000000");
    let mut r = Reader::new(&unknown_flag);
    let v = enums::DecryptedMessage::deserialize(&mut r).unwrap();
    assert!(!r.is_canonical());
    unknown_flag[4] = 0;
    assert_eq!(v.to_bytes(), unknown_flag);
}

/// Truncations of nested messages (every prefix) error; done for all samples above via
/// `check_typed`, and here for one deep message through the any-constructor entry point.
#[test]
fn truncated_layer_message() {
    for sample in layer_samples().iter().take(6) {
        for n in 0..sample.len() {
            assert!(boxed_to_json(&sample[..n]).is_err());
            assert!(enums::DecryptedMessageLayer::from_bytes(&sample[..n]).is_err());
        }
    }
}

// ---- JSON -------------------------------------------------------------------------------------

#[test]
fn json_errors() {
    let svc =
        |action: Value| json!({"_": "decryptedMessageService", "random_id": 7, "action": action});
    let ttl = json!({"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 30});
    assert!(json_to_boxed(&svc(ttl.clone())).is_ok());

    // Unknown field, with its path.
    let mut v = svc(json!({"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 30, "x": 1}));
    let e = enums::DecryptedMessage::from_json(&v).unwrap_err();
    assert_eq!(
        e,
        JsonError::UnknownField {
            path: ".action".into(),
            field: "x".into()
        }
    );
    assert!(e.to_string().contains("$.action"), "{e}");
    // Missing field.
    v = svc(json!({"_": "decryptedMessageActionSetMessageTTL"}));
    assert_eq!(
        json_to_boxed(&v),
        Err(JsonError::MissingField {
            path: ".action".into(),
            field: "ttl_seconds"
        })
    );
    assert_eq!(
        enums::DecryptedMessage::from_json(&json!({"random_id": 1})),
        Err(JsonError::MissingField {
            path: "".into(),
            field: "_"
        })
    );
    // Constructor of the wrong type.
    v = svc(json!({"_": "messageEntityBold", "offset": 0, "length": 1}));
    assert_eq!(
        json_to_boxed(&v),
        Err(JsonError::UnknownConstructor {
            path: ".action".into(),
            name: "messageEntityBold".into(),
            expected: "DecryptedMessageAction"
        })
    );
    assert!(matches!(
        json_to_boxed(&json!({"_": "nope"})),
        Err(JsonError::UnknownConstructor {
            expected: "any constructor",
            ..
        })
    ));
    assert!(matches!(
        types::DecryptedMessageService::from_json(&ttl),
        Err(JsonError::UnknownConstructor {
            expected: "decryptedMessageService",
            ..
        })
    ));
    // Wrong JSON types.
    assert!(matches!(
        json_to_boxed(&json!([1])),
        Err(JsonError::WrongType { .. })
    ));
    assert!(matches!(
        json_to_boxed(&json!({"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": "30"})),
        Err(JsonError::WrongType { .. })
    ));
    assert!(matches!(
        json_to_boxed(&json!({"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 1.5})),
        Err(JsonError::WrongType { .. })
    ));

    // long: number or decimal string; out of range is an error.
    let svc_id =
        |id: Value| json!({"_": "decryptedMessageService", "random_id": id, "action": ttl});
    let min =
        types::DecryptedMessageService::from_json(&svc_id(json!("-9223372036854775808"))).unwrap();
    assert_eq!(min.random_id, i64::MIN);
    assert_eq!(min.to_json()["random_id"], json!(i64::MIN));
    for bad in [
        json!(9_223_372_036_854_775_808u64),
        json!("9223372036854775808"),
    ] {
        assert_eq!(
            json_to_boxed(&svc_id(bad)),
            Err(JsonError::OutOfRange {
                path: ".random_id".into(),
                expected: "long"
            })
        );
    }
    assert!(matches!(
        json_to_boxed(&svc_id(json!("12a"))),
        Err(JsonError::WrongType { .. })
    ));
    assert!(matches!(
        json_to_boxed(&svc_id(json!(1e3))),
        Err(JsonError::WrongType { .. })
    ));
    // int out of range.
    assert_eq!(
        json_to_boxed(
            &json!({"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 2_147_483_648i64})
        ),
        Err(JsonError::OutOfRange {
            path: ".ttl_seconds".into(),
            expected: "int"
        })
    );

    // Vector element paths.
    let e =
        json_to_boxed(&json!({"_": "decryptedMessageActionReadMessages", "random_ids": [1, "x"]}))
            .unwrap_err();
    assert_eq!(e.path(), ".random_ids[1]");
}

#[test]
fn json_bytes_forms() {
    let key =
        |g_a: Value| json!({"_": "decryptedMessageActionRequestKey", "exchange_id": 1, "g_a": g_a});
    let get =
        |g_a: Value| types::DecryptedMessageActionRequestKey::from_json(&key(g_a)).map(|k| k.g_a);
    let data = vec![0xfb, 0xff, 0x01];
    assert_eq!(get(json!("+/8B")).unwrap(), data); // standard
    assert_eq!(get(json!("-_8B")).unwrap(), data); // URL-safe
    assert_eq!(get(json!("AQ")).unwrap(), vec![1]); // unpadded
    assert_eq!(get(json!("AQ==")).unwrap(), vec![1]);
    assert_eq!(get(json!("0xfbff01")).unwrap(), data); // hex
    assert_eq!(get(json!("0xFBFF01")).unwrap(), data);
    assert_eq!(get(json!("")).unwrap(), Vec::<u8>::new());
    assert_eq!(get(json!({"_": "bytes", "bytes": "+/8B"})).unwrap(), data);
    for bad in [
        json!("!!"),
        json!("A"),
        json!(5),
        json!({"_": "bytes"}),
        json!({"_": "x", "bytes": ""}),
    ] {
        assert!(get(bad.clone()).is_err(), "{bad}");
    }
    assert_eq!(
        get(json!("%%")),
        Err(JsonError::InvalidBytes {
            path: ".g_a".into()
        })
    );
    let out = types::DecryptedMessageActionRequestKey {
        exchange_id: 1,
        g_a: data.clone(),
    }
    .to_json();
    assert_eq!(out["g_a"], json!("+/8B"));

    // Base64 that would read back as hex ("0x" + hex digits) is written in the object form.
    let tricky = STANDARD.decode("0xAB").unwrap();
    assert_eq!(tricky, [0xd3, 0x10, 0x01]);
    let k = types::DecryptedMessageActionRequestKey {
        exchange_id: 1,
        g_a: tricky.clone(),
    };
    assert_eq!(k.to_json()["g_a"], json!({"_": "bytes", "bytes": "0xAB"}));
    assert_eq!(
        types::DecryptedMessageActionRequestKey::from_json(&k.to_json()).unwrap(),
        k
    );
    assert_eq!(get(json!("0xAB")).unwrap(), vec![0xab]);
    // "0x" followed by non-hex is base64 again.
    let b64 = STANDARD.decode("0xpq").unwrap();
    assert_eq!(get(json!("0xpq")).unwrap(), b64);
    let k = types::DecryptedMessageActionRequestKey {
        exchange_id: 1,
        g_a: b64,
    };
    assert_eq!(k.to_json()["g_a"], json!("0xpq"));
}

#[test]
fn json_optional_and_flags() {
    let base = json!({"_": "decryptedMessage", "random_id": 1, "ttl": 0, "message": ""});
    let m = types::DecryptedMessage::from_json(&base).unwrap();
    assert!(!m.silent && m.media.is_none() && m.entities.is_none());
    let mut v = base.clone();
    v["silent"] = json!(false);
    v["media"] = Value::Null;
    v["flags"] = json!(12345);
    assert_eq!(types::DecryptedMessage::from_json(&v).unwrap(), m);
    assert_eq!(m.to_json(), base);
    v["silent"] = json!(1);
    assert_eq!(
        types::DecryptedMessage::from_json(&v),
        Err(JsonError::WrongType {
            path: ".silent".into(),
            expected: "boolean"
        })
    );
    // doubles: numbers, and strings for non-finite values.
    let geo = |lat: Value| json!({"_": "decryptedMessageMediaGeoPoint", "lat": lat, "long": 2});
    let g = types::DecryptedMessageMediaGeoPoint::from_json(&geo(json!("NaN"))).unwrap();
    assert!(g.lat.is_nan() && g.long == 2.0);
    assert_eq!(g.to_json()["lat"], json!("NaN"));
    let g = types::DecryptedMessageMediaGeoPoint {
        lat: f64::NEG_INFINITY,
        long: 0.5,
    };
    assert_eq!(
        types::DecryptedMessageMediaGeoPoint::from_json(&g.to_json()).unwrap(),
        g
    );
    assert!(types::DecryptedMessageMediaGeoPoint::from_json(&geo(json!("x"))).is_err());
}

// ---- property tests ---------------------------------------------------------------------------

/// Boxed `decryptedMessageLayer` encodings wrapping a sample of each `DecryptedMessage`
/// constructor (all optional fields set, and none set).
fn layer_samples() -> &'static [Vec<u8>] {
    static SAMPLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let mut g = Gen(1000);
        let mut out = Vec::new();
        for c in ctors_of("DecryptedMessage") {
            for full in [true, false] {
                let message = sample_ctor(c, full, &mut g, 1);
                let layer = json!({"_": "decryptedMessageLayer",
                    "random_bytes": STANDARD.encode([7u8; 15]), "layer": 144,
                    "in_seq_no": 4, "out_seq_no": 7, "message": message});
                out.push(json_to_boxed(&layer).unwrap());
            }
        }
        out
    })
}

/// The decode -> encode property. Returns whether `input` decoded.
///
/// Exact statement: if `input` decodes and the reader stayed canonical, re-encoding reproduces
/// `input` byte for byte. Whatever decodes, its re-encoding `y` decodes canonically to a value
/// that re-encodes to `y` again, and the JSON form converts back to `y`.
fn check_reencode<E>(input: &[u8]) -> (bool, bool)
where
    E: Serializable + Deserializable + TlJson,
{
    let mut r = Reader::new(input);
    let Ok(v) = E::deserialize(&mut r) else {
        return (false, false);
    };
    if r.finish().is_err() {
        assert!(E::from_bytes(input).is_err());
        return (false, false);
    }
    let y = v.to_bytes();
    if r.is_canonical() {
        assert_eq!(y, input);
    }
    let mut r2 = Reader::new(&y);
    let v2 = E::deserialize(&mut r2).unwrap();
    assert!(r2.is_canonical() && r2.remaining() == 0);
    assert_eq!(v2.to_bytes(), y);
    // JSON keeps everything but NaN payloads ("NaN" reads back as the canonical NaN).
    let j = v.to_json();
    if !contains_nan(&j) {
        assert_eq!(E::from_json(&j).unwrap().to_bytes(), y);
        assert_eq!(json_to_boxed(&boxed_to_json(&y).unwrap()).unwrap(), y);
        // And through JSON text, as a caller sends it (doubles and longs stay exact).
        let text: Value = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(E::from_json(&text).unwrap().to_bytes(), y);
    }
    (true, r.is_canonical())
}

fn contains_nan(v: &Value) -> bool {
    match v {
        Value::String(s) => s == "NaN",
        Value::Array(a) => a.iter().any(contains_nan),
        Value::Object(m) => m.values().any(contains_nan),
        _ => false,
    }
}

fn mutate(mut b: Vec<u8>, muts: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, byte, op) in muts {
        if b.is_empty() {
            break;
        }
        let p = pos % b.len();
        match op % 4 {
            0 => b[p] = byte,
            1 => b[p] ^= 1 << (byte % 8),
            2 => b.insert(p, byte),
            _ => b.truncate(p),
        }
    }
    b
}

/// Deterministic check that the mutation-based property test really reaches both the canonical
/// and the lenient paths (so the proptest below is not vacuous).
#[test]
fn mutations_reach_both_paths() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut decoded, mut canonical, mut lenient) = (0, 0, 0);
    for _ in 0..3000 {
        let s = &layer_samples()[(rnd() as usize) % layer_samples().len()];
        let muts: Vec<(usize, u8, u8)> = (0..1 + rnd() % 2)
            .map(|_| (rnd() as usize, rnd() as u8, (rnd() % 2) as u8))
            .collect();
        let (ok, canon) = check_reencode::<enums::DecryptedMessageLayer>(&mutate(s.clone(), &muts));
        decoded += usize::from(ok);
        canonical += usize::from(ok && canon);
        lenient += usize::from(ok && !canon);
    }
    assert!(
        decoded > 300 && canonical > 100 && lenient > 10,
        "{decoded} {canonical} {lenient}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_reencode::<enums::DecryptedMessageLayer>(&b);
        check_reencode::<enums::DecryptedMessage>(&b);
        let _ = boxed_to_json(&b);
    }

    #[test]
    fn arbitrary_bytes_after_a_known_id(id in 0..ALL_CONSTRUCTORS.len(),
                                        b in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut input = ALL_CONSTRUCTORS[id].1.to_le_bytes().to_vec();
        input.extend_from_slice(&b);
        check_reencode::<enums::DecryptedMessage>(&input);
        check_reencode::<enums::DecryptedMessageMedia>(&input);
        check_reencode::<enums::DecryptedMessageAction>(&input);
        if let Ok(v) = boxed_to_json(&input) {
            // Anything decodable has a JSON form that converts back to a decodable encoding.
            let y = json_to_boxed(&v).unwrap();
            prop_assert_eq!(boxed_to_json(&y).unwrap(), v);
        }
    }

    #[test]
    fn mutated_messages(i in 0..64usize,
                        muts in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..5)) {
        let s = &layer_samples()[i % layer_samples().len()];
        let m = mutate(s.clone(), &muts);
        check_reencode::<enums::DecryptedMessageLayer>(&m);
        let _ = boxed_to_json(&m);
    }
}

#[test]
fn json_url_safe_alphabet_is_accepted_for_long_values() {
    let data: Vec<u8> = (0..=255).collect();
    let v = json!({"_": "decryptedMessageActionRequestKey", "exchange_id": "42",
                   "g_a": URL_SAFE_NO_PAD.encode(&data)});
    let k = types::DecryptedMessageActionRequestKey::from_json(&v).unwrap();
    assert_eq!((k.exchange_id, k.g_a), (42, data));
}

// ---- JSON text round trips ----------------------------------------------------------------------

/// bytes -> value -> JSON *text* -> value -> bytes, the path a D-Bus or HTTP caller takes.
fn through_json_text<E>(bytes: &[u8]) -> Vec<u8>
where
    E: Serializable + Deserializable + TlJson,
{
    let v = E::from_bytes(bytes).unwrap();
    let text = serde_json::to_string(&v.to_json()).unwrap();
    let parsed: Value = serde_json::from_str(&text).unwrap();
    E::from_json(&parsed).unwrap().to_bytes()
}

/// A `decryptedMessage` with a geo point, venue and the given long / double / bytes values.
fn geo_message(random_id: i64, reply_to: i64, lat: f64, long: f64, text: &str) -> Vec<u8> {
    let m = enums::DecryptedMessage::DecryptedMessage(types::DecryptedMessage {
        silent: false,
        random_id,
        ttl: 0,
        message: text.to_owned(),
        media: Some(enums::DecryptedMessageMedia::GeoPoint(
            types::DecryptedMessageMediaGeoPoint { lat, long },
        )),
        entities: None,
        via_bot_name: None,
        reply_to_random_id: Some(reply_to),
        grouped_id: Some(i64::MIN),
    });
    m.to_bytes()
}

#[test]
fn json_text_keeps_doubles_and_longs_exact() {
    // Values that a float parser without exact rounding gets wrong in the last place.
    let hard = [
        0.1,
        2.2250738585072014e-308,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        -0.0,
        55.755826,
        37.6173,
        1.0000000000000002,
        9007199254740993.0,
        f64::from_bits(0x3fd5_5555_5555_5555),
        f64::from_bits(0x7fef_ffff_ffff_fffe),
    ];
    for (i, &lat) in hard.iter().enumerate() {
        let long = hard[(i + 1) % hard.len()];
        for (rid, reply) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (0, -1)] {
            let b = geo_message(rid, reply, lat, long, "x");
            assert_eq!(
                through_json_text::<enums::DecryptedMessage>(&b),
                b,
                "{lat} {long}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Every finite double, every long (both extremes included by proptest's `any`), and random
    /// bytes survive JSON text exactly.
    #[test]
    fn json_text_round_trip(lat_bits in any::<u64>(), long_bits in any::<u64>(),
                            rid in any::<i64>(), reply in prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()],
                            key in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (lat, long) = (f64::from_bits(lat_bits), f64::from_bits(long_bits));
        prop_assume!(lat.is_finite() && long.is_finite());
        let b = geo_message(rid, reply, lat, long, "héllo");
        prop_assert_eq!(through_json_text::<enums::DecryptedMessage>(&b), b);
        // bytes: a RequestKey with random g_a and an extreme exchange_id.
        let k = enums::DecryptedMessageAction::RequestKey(types::DecryptedMessageActionRequestKey {
            exchange_id: reply,
            g_a: key,
        })
        .to_bytes();
        prop_assert_eq!(through_json_text::<enums::DecryptedMessageAction>(&k), k);
    }
}
