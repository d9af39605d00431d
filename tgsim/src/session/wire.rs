//! TL reading and writing helpers for the MTProto service layer.
//!
//! Incoming client data is read with [`Reader`], a bounds-checked cursor that never panics and
//! never allocates more than the input it was given (vector counts are checked against the bytes
//! left before anything is reserved). Outgoing service objects are serialised with
//! `grammers-tl-types`; the few objects that TL schema files leave to hand-written code
//! (`rpc_result`, `msg_container`, `gzip_packed`) are written here.

use std::fmt;
use std::io::Read;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// `rpc_result#f35c6d01 req_msg_id:long result:Object = RpcResult;`
pub const RPC_RESULT: u32 = 0xf35c_6d01;
/// `msg_container#73f1f8dc messages:vector<message> = MessageContainer;`
pub const MSG_CONTAINER: u32 = 0x73f1_f8dc;
/// `msg_copy#e06046b2 orig_message:Message = MessageCopy;`
pub const MSG_COPY: u32 = 0xe060_46b2;
/// `gzip_packed#3072cfa1 packed_data:string = Object;`
pub const GZIP_PACKED: u32 = 0x3072_cfa1;
/// `msgs_ack#62d6b459 msg_ids:Vector<long> = MsgsAck;`
pub const MSGS_ACK: u32 = 0x62d6_b459;
/// `ping#7abe77ec ping_id:long = Pong;`
pub const PING: u32 = 0x7abe_77ec;
/// `ping_delay_disconnect#f3427b8c ping_id:long disconnect_delay:int = Pong;`
pub const PING_DELAY_DISCONNECT: u32 = 0xf342_7b8c;
/// `get_future_salts#b921bd04 num:int = FutureSalts;`
pub const GET_FUTURE_SALTS: u32 = 0xb921_bd04;
/// `destroy_session#e7512126 session_id:long = DestroySessionRes;`
pub const DESTROY_SESSION: u32 = 0xe751_2126;
/// `msg_resend_req#7d861a08 msg_ids:Vector<long> = MsgResendReq;`
pub const MSG_RESEND_REQ: u32 = 0x7d86_1a08;
/// `msg_resend_ans_req#8610baeb msg_ids:Vector<long> = MsgResendReq;`
pub const MSG_RESEND_ANS_REQ: u32 = 0x8610_baeb;
/// `msgs_state_req#da69fb52 msg_ids:Vector<long> = MsgsStateReq;`
pub const MSGS_STATE_REQ: u32 = 0xda69_fb52;
/// `http_wait#9299359f max_delay:int wait_after:int max_wait:int = HttpWait;`
pub const HTTP_WAIT: u32 = 0x9299_359f;
/// `rpc_drop_answer#58e4a740 req_msg_id:long = RpcDropAnswer;`
pub const RPC_DROP_ANSWER: u32 = 0x58e4_a740;
/// `invokeWithLayer#da9b0d0d {X:Type} layer:int query:!X = X;`
pub const INVOKE_WITH_LAYER: u32 = 0xda9b_0d0d;
/// `initConnection#c1cd5ea9 {X:Type} flags:# api_id:int ... query:!X = X;`
pub const INIT_CONNECTION: u32 = 0xc1cd_5ea9;
/// `invokeAfterMsg#cb9f372d {X:Type} msg_id:long query:!X = X;`
pub const INVOKE_AFTER_MSG: u32 = 0xcb9f_372d;
/// `invokeAfterMsgs#3dc4b4f0 {X:Type} msg_ids:Vector<long> query:!X = X;`
pub const INVOKE_AFTER_MSGS: u32 = 0x3dc4_b4f0;
/// `invokeWithoutUpdates#bf9459b7 {X:Type} query:!X = X;`
pub const INVOKE_WITHOUT_UPDATES: u32 = 0xbf94_59b7;

const VECTOR: u32 = 0x1cb5_c415;
const INPUT_CLIENT_PROXY: u32 = 0x7558_8b3f;
const BOOL_TRUE: u32 = 0x9972_75b5;
const BOOL_FALSE: u32 = 0xbc79_9737;
const JSON_NULL: u32 = 0x3f6d_7b68;
const JSON_BOOL: u32 = 0xc734_5e6a;
const JSON_NUMBER: u32 = 0x2be0_dfa4;
const JSON_STRING: u32 = 0xb71e_767a;
const JSON_ARRAY: u32 = 0xf744_4763;
const JSON_OBJECT: u32 = 0x99c1_d49d;
const JSON_OBJECT_VALUE: u32 = 0xc0de_1bd9;

/// How deeply a `JSONValue` in `initConnection.params` may nest before it is refused.
pub const MAX_JSON_DEPTH: usize = 32;

/// Why a piece of client TL could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The data ended before the object did.
    Eof,
    /// A constructor that cannot appear here.
    UnexpectedConstructor {
        /// The constructor found.
        id: u32,
    },
    /// A length or count field is negative, misaligned or larger than the data left.
    BadLength,
    /// Objects nested deeper than this server accepts (gzip in gzip, wrappers, JSON).
    TooDeep,
    /// `gzip_packed` data that does not inflate.
    BadGzip,
    /// `gzip_packed` data that inflates past the size limit.
    TooLarge,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Eof => f.write_str("unexpected end of TL data"),
            WireError::UnexpectedConstructor { id } => {
                write!(f, "unexpected TL constructor {id:#010x}")
            }
            WireError::BadLength => f.write_str("invalid TL length or count"),
            WireError::TooDeep => f.write_str("TL objects nested too deeply"),
            WireError::BadGzip => f.write_str("gzip_packed data does not inflate"),
            WireError::TooLarge => f.write_str("gzip_packed data inflates past the size limit"),
        }
    }
}

impl std::error::Error for WireError {}

/// A bounds-checked little-endian TL reader over a byte slice.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Eof)?;
        let out = self.buf.get(self.pos..end).ok_or(WireError::Eof)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A TL `int`.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    /// A constructor id (an unsigned TL `int`).
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A TL `long`.
    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Reads the expected constructor id.
    pub fn expect_id(&mut self, id: u32) -> Result<(), WireError> {
        let found = self.u32()?;
        if found == id {
            Ok(())
        } else {
            Err(WireError::UnexpectedConstructor { id: found })
        }
    }

    /// A TL `bytes` / `string`: the raw bytes, padding skipped.
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let first = *self.take(1)?.first().ok_or(WireError::Eof)?;
        let (len, header) = if first == 254 {
            let b = self.take(3)?;
            let len = usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16;
            (len, 4usize)
        } else if first == 255 {
            return Err(WireError::BadLength);
        } else {
            (usize::from(first), 1usize)
        };
        let data = self.take(len)?;
        let padding = (4 - (header + len) % 4) % 4;
        self.take(padding)?;
        Ok(data)
    }

    /// A TL `string` as text (invalid UTF-8 replaced).
    pub fn string(&mut self) -> Result<String, WireError> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }

    /// A boxed `Vector<long>`.
    pub fn vec_i64(&mut self) -> Result<Vec<i64>, WireError> {
        self.expect_id(VECTOR)?;
        let count = usize::try_from(self.i32()?).map_err(|_| WireError::BadLength)?;
        if count > self.remaining() / 8 {
            return Err(WireError::BadLength);
        }
        (0..count).map(|_| self.i64()).collect()
    }

    /// Skips one boxed `Bool`.
    fn skip_bool(&mut self) -> Result<(), WireError> {
        match self.u32()? {
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            id => Err(WireError::UnexpectedConstructor { id }),
        }
    }

    /// Skips one boxed `JSONValue`, refusing nesting deeper than [`MAX_JSON_DEPTH`].
    pub fn skip_json_value(&mut self, depth: usize) -> Result<(), WireError> {
        if depth > MAX_JSON_DEPTH {
            return Err(WireError::TooDeep);
        }
        match self.u32()? {
            JSON_NULL => Ok(()),
            JSON_BOOL => self.skip_bool(),
            JSON_NUMBER => self.take(8).map(|_| ()),
            JSON_STRING => self.bytes().map(|_| ()),
            JSON_ARRAY => {
                let count = self.vector_count()?;
                for _ in 0..count {
                    self.skip_json_value(depth + 1)?;
                }
                Ok(())
            }
            JSON_OBJECT => {
                let count = self.vector_count()?;
                for _ in 0..count {
                    self.expect_id(JSON_OBJECT_VALUE)?;
                    self.bytes()?;
                    self.skip_json_value(depth + 1)?;
                }
                Ok(())
            }
            id => Err(WireError::UnexpectedConstructor { id }),
        }
    }

    /// The count of a boxed vector whose items take at least 4 bytes each.
    fn vector_count(&mut self) -> Result<usize, WireError> {
        self.expect_id(VECTOR)?;
        let count = usize::try_from(self.i32()?).map_err(|_| WireError::BadLength)?;
        if count > self.remaining() / 4 {
            return Err(WireError::BadLength);
        }
        Ok(count)
    }

    /// Skips an `inputClientProxy` and returns `(address, port)`.
    pub fn input_client_proxy(&mut self) -> Result<(String, i32), WireError> {
        self.expect_id(INPUT_CLIENT_PROXY)?;
        let address = self.string()?;
        let port = self.i32()?;
        Ok((address, port))
    }
}

/// The first four bytes of `body` as a constructor id.
pub fn constructor_of(body: &[u8]) -> Result<u32, WireError> {
    Reader::new(body).u32()
}

/// Appends a TL `bytes` value.
pub fn write_bytes(out: &mut Vec<u8>, data: &[u8]) {
    let len = data.len();
    let header = if len < 254 {
        out.push(len as u8);
        1
    } else {
        out.push(254);
        out.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
        4
    };
    out.extend_from_slice(data);
    let padding = (4 - (header + len) % 4) % 4;
    out.extend(std::iter::repeat_n(0u8, padding));
}

/// `rpc_result req_msg_id result`.
pub fn rpc_result(req_msg_id: i64, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + result.len());
    out.extend_from_slice(&RPC_RESULT.to_le_bytes());
    out.extend_from_slice(&req_msg_id.to_le_bytes());
    out.extend_from_slice(result);
    out
}

/// `gzip_packed` of `data`, or `None` if compressing fails (it does not for in-memory data).
pub fn gzip_packed(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).ok()?;
    let packed = enc.finish().ok()?;
    let mut out = Vec::with_capacity(packed.len() + 8);
    out.extend_from_slice(&GZIP_PACKED.to_le_bytes());
    write_bytes(&mut out, &packed);
    Some(out)
}

/// Inflates the body of a `gzip_packed` object (`body` starts with its constructor), refusing
/// output larger than `limit` bytes.
pub fn gunzip_packed(body: &[u8], limit: usize) -> Result<Vec<u8>, WireError> {
    let mut r = Reader::new(body);
    r.expect_id(GZIP_PACKED)?;
    let packed = r.bytes()?;
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    GzDecoder::new(packed)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|_| WireError::BadGzip)?;
    if out.len() > limit {
        return Err(WireError::TooLarge);
    }
    Ok(out)
}

/// One message of a container: `msg_id:long seqno:int bytes:int body:Object`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMessage<'a> {
    /// The message id.
    pub msg_id: i64,
    /// The sequence number.
    pub seq_no: i32,
    /// The body (exactly `bytes` long).
    pub body: &'a [u8],
}

/// Reads the messages of a `msg_container` (`body` starts with its constructor), at most
/// `max_count` of them. The container must be consumed exactly.
pub fn parse_container(body: &[u8], max_count: usize) -> Result<Vec<RawMessage<'_>>, WireError> {
    let mut r = Reader::new(body);
    r.expect_id(MSG_CONTAINER)?;
    let count = usize::try_from(r.i32()?).map_err(|_| WireError::BadLength)?;
    // Each message takes at least its 16-byte header.
    if count > max_count || count > r.remaining() / 16 {
        return Err(WireError::BadLength);
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let msg_id = r.i64()?;
        let seq_no = r.i32()?;
        let len = usize::try_from(r.i32()?).map_err(|_| WireError::BadLength)?;
        if len % 4 != 0 {
            return Err(WireError::BadLength);
        }
        let body = r.take(len)?;
        out.push(RawMessage {
            msg_id,
            seq_no,
            body,
        });
    }
    if r.remaining() != 0 {
        return Err(WireError::BadLength);
    }
    Ok(out)
}

/// Writes a `msg_container` of already numbered messages.
pub fn write_container(messages: &[(i64, i32, &[u8])]) -> Vec<u8> {
    let size: usize = messages.iter().map(|(_, _, b)| 16 + b.len()).sum();
    let mut out = Vec::with_capacity(8 + size);
    out.extend_from_slice(&MSG_CONTAINER.to_le_bytes());
    out.extend_from_slice(&(messages.len() as i32).to_le_bytes());
    for (msg_id, seq_no, body) in messages {
        out.extend_from_slice(&msg_id.to_le_bytes());
        out.extend_from_slice(&seq_no.to_le_bytes());
        out.extend_from_slice(&(body.len() as i32).to_le_bytes());
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use grammers_tl_types::{self as tl, Identifiable, Serializable};

    #[test]
    fn constructor_ids_match_grammers() {
        assert_eq!(MSGS_ACK, tl::types::MsgsAck::CONSTRUCTOR_ID);
        assert_eq!(PING, tl::functions::Ping::CONSTRUCTOR_ID);
        assert_eq!(
            PING_DELAY_DISCONNECT,
            tl::functions::PingDelayDisconnect::CONSTRUCTOR_ID
        );
        assert_eq!(
            GET_FUTURE_SALTS,
            tl::functions::GetFutureSalts::CONSTRUCTOR_ID
        );
        assert_eq!(
            DESTROY_SESSION,
            tl::functions::DestroySession::CONSTRUCTOR_ID
        );
        assert_eq!(MSG_RESEND_REQ, tl::types::MsgResendReq::CONSTRUCTOR_ID);
        assert_eq!(
            MSG_RESEND_ANS_REQ,
            tl::types::MsgResendAnsReq::CONSTRUCTOR_ID
        );
        assert_eq!(MSGS_STATE_REQ, tl::types::MsgsStateReq::CONSTRUCTOR_ID);
        assert_eq!(HTTP_WAIT, tl::types::HttpWait::CONSTRUCTOR_ID);
        assert_eq!(
            RPC_DROP_ANSWER,
            tl::functions::RpcDropAnswer::CONSTRUCTOR_ID
        );
        assert_eq!(
            INVOKE_WITH_LAYER,
            tl::functions::InvokeWithLayer::<()>::CONSTRUCTOR_ID
        );
        assert_eq!(
            INIT_CONNECTION,
            tl::functions::InitConnection::<()>::CONSTRUCTOR_ID
        );
        assert_eq!(
            INVOKE_AFTER_MSG,
            tl::functions::InvokeAfterMsg::<()>::CONSTRUCTOR_ID
        );
        assert_eq!(
            INVOKE_AFTER_MSGS,
            tl::functions::InvokeAfterMsgs::<()>::CONSTRUCTOR_ID
        );
        assert_eq!(
            INVOKE_WITHOUT_UPDATES,
            tl::functions::InvokeWithoutUpdates::<()>::CONSTRUCTOR_ID
        );
        assert_eq!(VECTOR, 0x1cb5c415);
        assert_eq!(
            INPUT_CLIENT_PROXY,
            tl::types::InputClientProxy::CONSTRUCTOR_ID
        );
        assert_eq!(JSON_NULL, tl::types::JsonNull::CONSTRUCTOR_ID);
        assert_eq!(JSON_BOOL, tl::types::JsonBool::CONSTRUCTOR_ID);
        assert_eq!(JSON_NUMBER, tl::types::JsonNumber::CONSTRUCTOR_ID);
        assert_eq!(JSON_STRING, tl::types::JsonString::CONSTRUCTOR_ID);
        assert_eq!(JSON_ARRAY, tl::types::JsonArray::CONSTRUCTOR_ID);
        assert_eq!(JSON_OBJECT, tl::types::JsonObject::CONSTRUCTOR_ID);
        assert_eq!(
            JSON_OBJECT_VALUE,
            tl::types::JsonObjectValue::CONSTRUCTOR_ID
        );
        assert_eq!(true.to_bytes(), BOOL_TRUE.to_le_bytes());
        assert_eq!(false.to_bytes(), BOOL_FALSE.to_le_bytes());
    }

    #[test]
    fn bytes_round_trip_matches_grammers() {
        for len in [0usize, 1, 3, 4, 253, 254, 255, 1000, 70000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = Vec::new();
            write_bytes(&mut ours, &data);
            assert_eq!(ours, data.to_bytes(), "len {len}");
            let mut r = Reader::new(&ours);
            assert_eq!(r.bytes().expect("bytes"), &data[..]);
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn json_skipper_matches_grammers_serialisation() {
        let value = tl::enums::Jsonvalue::JsonObject(tl::types::JsonObject {
            value: vec![
                tl::types::JsonObjectValue {
                    key: "a".into(),
                    value: tl::enums::Jsonvalue::JsonArray(tl::types::JsonArray {
                        value: vec![
                            tl::enums::Jsonvalue::JsonNull,
                            tl::types::JsonBool { value: true }.into(),
                            tl::types::JsonNumber { value: 1.5 }.into(),
                            tl::types::JsonString {
                                value: "xyz".into(),
                            }
                            .into(),
                        ],
                    }),
                }
                .into(),
            ],
        });
        let bytes = value.to_bytes();
        let mut r = Reader::new(&bytes);
        r.skip_json_value(0).expect("skip");
        assert_eq!(r.remaining(), 0);

        // Deep nesting is refused rather than recursed into.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&JSON_ARRAY.to_le_bytes());
            deep.extend_from_slice(&VECTOR.to_le_bytes());
            deep.extend_from_slice(&1i32.to_le_bytes());
        }
        deep.extend_from_slice(&JSON_NULL.to_le_bytes());
        assert_eq!(
            Reader::new(&deep).skip_json_value(0),
            Err(WireError::TooDeep)
        );
    }

    #[test]
    fn gzip_round_trip_and_limit() {
        let data = vec![7u8; 10_000];
        let packed = gzip_packed(&data).expect("gzip");
        assert_eq!(gunzip_packed(&packed, 10_000).expect("gunzip"), data);
        assert_eq!(gunzip_packed(&packed, 9_999), Err(WireError::TooLarge));
        let mut bad = GZIP_PACKED.to_le_bytes().to_vec();
        write_bytes(&mut bad, b"not gzip at all");
        assert_eq!(gunzip_packed(&bad, 100), Err(WireError::BadGzip));
    }

    #[test]
    fn container_parse_rejects_bad_lengths() {
        let a = 1u32.to_le_bytes();
        let c = write_container(&[(4, 1, &a[..]), (8, 3, &a[..])]);
        let msgs = parse_container(&c, 10).expect("container");
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].msg_id, 8);
        assert!(parse_container(&c, 1).is_err());
        assert!(parse_container(&c[..c.len() - 1], 10).is_err());
        let mut extra = c.clone();
        extra.extend_from_slice(&[0; 4]);
        assert!(parse_container(&extra, 10).is_err());
    }
}
