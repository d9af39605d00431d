//! The MTProto session layer against grammers' client state machine, and against a hand-rolled
//! client that builds packets with arbitrary msg_ids, seq_nos and salts.
#![allow(clippy::unwrap_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use grammers_crypto::DequeBuffer;
use grammers_mtproto::MsgId;
use grammers_mtproto::mtp::{Deserialization, Encrypted, Mtp};
use grammers_tl_types::{self as tl, Deserializable, Identifiable, Serializable};
use proptest::prelude::*;
use secret_core::crypto::{AuthKey, decrypt_packet, encrypt_packet};
use secret_core::rand::SeededRandom;
use tgsim::session::wire::{self, GZIP_PACKED, MSG_CONTAINER, RPC_RESULT};
use tgsim::session::{
    AuthKeys, BadMsgCode, Event, PacketError, Received, RpcCall, SessionConfig, SessionKey,
    Sessions, auth_key_id, msg_id_at,
};

const ACCOUNT: i64 = 777;
const OTHER_SESSION: i64 = 0x0be5;
/// A fixed clock for the hand-rolled client tests (Unix ms).
const T: u64 = 1_700_000_000_000;

fn key_bytes(seed: u8) -> [u8; 256] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Server {
    sessions: Sessions,
    rng: SeededRandom,
}

impl Server {
    fn new(config: SessionConfig) -> Self {
        let mut keys = AuthKeys::new();
        keys.insert(AuthKey::from_array(key_bytes(1)), ACCOUNT);
        Server {
            sessions: Sessions::new(keys, config),
            rng: SeededRandom::new(42),
        }
    }

    fn recv(&mut self, packet: &[u8], now: u64) -> Received {
        self.sessions
            .handle_packet(packet, now, &mut self.rng)
            .unwrap()
    }

    fn flush(&mut self, key: SessionKey, now: u64) -> Vec<Vec<u8>> {
        self.sessions.flush(key, now, &mut self.rng)
    }
}

fn calls(events: &[Event]) -> Vec<RpcCall> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RpcCall(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn bad_codes(events: &[Event]) -> Vec<(i64, BadMsgCode)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::BadMessage { msg_id, code } => Some((*msg_id, *code)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// grammers client
// ---------------------------------------------------------------------------------------------

/// What the grammers client reported, in a comparable form.
#[derive(Debug, PartialEq)]
enum Got {
    Result(MsgId, Vec<u8>),
    Error(MsgId, i32, String),
    Bad(MsgId, i32),
    Update(Vec<u8>),
    Other,
}

struct Client {
    mtp: Encrypted,
}

impl Client {
    fn new(key: [u8; 256]) -> Self {
        Client {
            mtp: Encrypted::build().finish(key),
        }
    }

    /// Pushes the requests and finalizes: the msg_id of each (None if grammers held it back)
    /// and the packet.
    fn send(&mut self, requests: &[&[u8]]) -> (Vec<Option<MsgId>>, Vec<u8>) {
        let mut buf = DequeBuffer::with_capacity(0, 0);
        let ids = requests
            .iter()
            .map(|r| self.mtp.push(&mut buf, r))
            .collect();
        self.mtp.finalize(&mut buf);
        (ids, buf.as_ref().to_vec())
    }

    fn receive(&mut self, packets: Vec<Vec<u8>>) -> Vec<Got> {
        let mut out = Vec::new();
        for mut p in packets {
            for d in self.mtp.deserialize(&mut p).unwrap() {
                out.push(match d {
                    Deserialization::RpcResult(r) => Got::Result(r.msg_id, r.body),
                    Deserialization::RpcError(e) => {
                        Got::Error(e.msg_id, e.error.error_code, e.error.error_message)
                    }
                    Deserialization::BadMessage(b) => Got::Bad(b.msg_id, b.code),
                    Deserialization::Update(u) => Got::Update(u),
                    _ => Got::Other,
                });
            }
        }
        out
    }
}

/// Sends `request` from the client until grammers puts it in a packet (it first fetches future
/// salts once it has a real salt), answering the server in between. Returns the request's
/// msg_id and the server's events for the packet that carried it.
fn submit(server: &mut Server, client: &mut Client, request: &[u8]) -> (MsgId, Received) {
    for _ in 0..4 {
        let (ids, packet) = client.send(&[request]);
        let now = wall_ms();
        let received = server.recv(&packet, now);
        if let Some(id) = ids[0] {
            return (id, received);
        }
        assert!(calls(&received.events).is_empty());
        let out = server.flush(received.session, now);
        let got = client.receive(out);
        assert!(got.iter().all(|g| *g == Got::Other), "{got:?}");
    }
    panic!("grammers never sent the request");
}

fn init_get_config() -> Vec<u8> {
    tl::functions::InvokeWithLayer {
        layer: tl::LAYER,
        query: tl::functions::InitConnection {
            api_id: 12345,
            device_model: "tgsim-test".into(),
            system_version: "linux".into(),
            app_version: "0.1".into(),
            system_lang_code: "en".into(),
            lang_pack: "".into(),
            lang_code: "en".into(),
            proxy: None,
            params: Some(tl::enums::Jsonvalue::JsonNull),
            query: tl::functions::help::GetConfig {},
        },
    }
    .to_bytes()
}

#[test]
fn grammers_init_connection_get_config_new_session_and_gzip_result() {
    let mut server = Server::new(SessionConfig::default());
    let mut client = Client::new(key_bytes(1));

    // First contact: salt 0 is accepted; the session announces itself.
    let (req_id, received) = submit(&mut server, &mut client, &init_get_config());
    assert_eq!(received.account, ACCOUNT);
    assert!(
        matches!(received.events[0], Event::NewSession { .. }),
        "{:?}",
        received.events
    );
    let call = calls(&received.events).pop().expect("an RPC call");
    assert_eq!(
        call.constructor,
        tl::functions::help::GetConfig::CONSTRUCTOR_ID
    );
    assert_eq!(call.query, tl::functions::help::GetConfig {}.to_bytes());
    assert_eq!(call.layer, Some(tl::LAYER));
    let init = call.init_connection.as_ref().expect("initConnection");
    assert_eq!(init.api_id, 12345);
    assert_eq!(init.device_model, "tgsim-test");
    assert_eq!(init.lang_code, "en");
    assert_eq!(
        init.params.as_deref(),
        Some(&tl::enums::Jsonvalue::JsonNull.to_bytes()[..])
    );
    let session = server.sessions.session(received.session).unwrap();
    assert_eq!(session.layer(), Some(tl::LAYER));
    assert_eq!(session.pending_calls(), vec![call.msg_id]);

    // A large compressible result goes out as gzip_packed; grammers inflates it.
    let result = tl::enums::Jsonvalue::JsonString(tl::types::JsonString {
        value: "x".repeat(5000),
    })
    .to_bytes();
    server
        .sessions
        .session_mut(received.session)
        .unwrap()
        .rpc_result(call.msg_id, &result)
        .unwrap();
    let packets = server.flush(received.session, wall_ms());
    assert_eq!(packets.len(), 1);
    assert!(packets[0].len() < 2000, "the result was not compressed");
    let got = client.receive(packets);
    assert!(got.contains(&Got::Result(req_id, result)), "{got:?}");
    assert!(
        server
            .sessions
            .session(received.session)
            .unwrap()
            .pending_calls()
            .is_empty()
    );

    // The client took the salt from new_session_created: its next request (after the
    // future-salts round trip, answered with a bare future_salts) is accepted, and it carries
    // the acknowledgments of new_session_created and the rpc_result in a container.
    let ping = tl::functions::Ping { ping_id: 99 }.to_bytes();
    let (ping_id, received) = submit(&mut server, &mut client, &ping);
    assert!(
        bad_codes(&received.events).is_empty(),
        "{:?}",
        received.events
    );
    let packets = server.flush(received.session, wall_ms());
    let got = client.receive(packets);
    let pong = got
        .iter()
        .find_map(|g| match g {
            Got::Result(id, body) if *id == ping_id => Some(body.clone()),
            _ => None,
        })
        .expect("pong");
    let tl::enums::Pong::Pong(pong) = tl::enums::Pong::from_bytes(&pong).unwrap();
    assert_eq!(pong.ping_id, 99);
    assert_eq!(
        server
            .sessions
            .session(received.session)
            .unwrap()
            .unacked_count(),
        0,
        "grammers acknowledged new_session_created and the rpc_result"
    );
}

#[test]
fn grammers_rpc_error_flood_wait_and_update() {
    let mut server = Server::new(SessionConfig::default());
    let mut client = Client::new(key_bytes(1));
    let query = tl::functions::help::GetNearestDc {}.to_bytes();
    let (req_id, received) = submit(&mut server, &mut client, &query);
    let call = calls(&received.events).pop().unwrap();
    assert_eq!(
        call.constructor,
        tl::functions::help::GetNearestDc::CONSTRUCTOR_ID
    );
    assert_eq!(call.layer, None);
    let session = server.sessions.session_mut(received.session).unwrap();
    session.rpc_error(call.msg_id, 420, "FLOOD_WAIT_5").unwrap();
    // Answering twice is refused.
    assert!(session.rpc_error(call.msg_id, 420, "FLOOD_WAIT_5").is_err());
    // A server-initiated update rides along.
    let update = tl::enums::Updates::TooLong.to_bytes();
    session.push_update(&update).unwrap();
    let packets = server.flush(received.session, wall_ms());
    let got = client.receive(packets);
    assert!(
        got.contains(&Got::Error(req_id, 420, "FLOOD_WAIT_5".into())),
        "{got:?}"
    );
    assert!(got.contains(&Got::Update(update)), "{got:?}");
}

#[test]
fn grammers_bad_server_salt_dance() {
    // Salt 0 is refused from the start: the client learns the salt from bad_server_salt and
    // re-sends.
    let config = SessionConfig {
        accept_zero_salt_on_first_contact: false,
        ..SessionConfig::default()
    };
    let mut server = Server::new(config);
    let mut client = Client::new(key_bytes(1));
    let query = tl::functions::help::GetNearestDc {}.to_bytes();
    let (ids, packet) = client.send(&[&query]);
    let first = ids[0].unwrap();
    let now = wall_ms();
    let received = server.recv(&packet, now);
    let bad = bad_codes(&received.events);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].1, BadMsgCode::BadServerSalt);
    assert!(calls(&received.events).is_empty());
    let got = client.receive(server.flush(received.session, now));
    assert_eq!(got, vec![Got::Bad(first, 48)]);

    // The retry carries the right salt: the session starts now.
    let (req_id, received) = submit(&mut server, &mut client, &query);
    assert!(
        bad_codes(&received.events).is_empty(),
        "{:?}",
        received.events
    );
    let call = calls(&received.events).pop().unwrap();
    server
        .sessions
        .session_mut(received.session)
        .unwrap()
        .rpc_result(call.msg_id, &true.to_bytes())
        .unwrap();
    let got = client.receive(server.flush(received.session, wall_ms()));
    assert!(
        got.contains(&Got::Result(req_id, true.to_bytes())),
        "{got:?}"
    );
}

#[test]
fn grammers_second_client_on_same_key_gets_bad_server_salt() {
    // With the default policy, salt 0 is accepted only on the key's first contact: a second
    // client (new session, same key) starting with salt 0 is told the salt.
    let mut server = Server::new(SessionConfig::default());
    let mut first = Client::new(key_bytes(1));
    let ping = tl::functions::Ping { ping_id: 1 }.to_bytes();
    let (_, received) = submit(&mut server, &mut first, &ping);
    assert!(bad_codes(&received.events).is_empty());
    let first_session = received.session;
    first.receive(server.flush(first_session, wall_ms()));

    let mut second = Client::new(key_bytes(1));
    let (ids, packet) = second.send(&[&ping]);
    let received = server.recv(&packet, wall_ms());
    assert_ne!(received.session, first_session);
    let bad = bad_codes(&received.events);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].1, BadMsgCode::BadServerSalt);
    let got = second.receive(server.flush(received.session, wall_ms()));
    assert_eq!(got, vec![Got::Bad(ids[0].unwrap(), 48)]);
    let (ping_id, received) = submit(&mut server, &mut second, &ping);
    assert!(
        bad_codes(&received.events).is_empty(),
        "{:?}",
        received.events
    );
    assert!(
        server
            .sessions
            .session(received.session)
            .unwrap()
            .first_msg_id()
            .is_some()
    );
    let got = second.receive(server.flush(received.session, wall_ms()));
    assert!(
        got.iter()
            .any(|g| matches!(g, Got::Result(id, _) if *id == ping_id))
    );
    assert_eq!(server.sessions.sessions_of(ACCOUNT).len(), 2);
}

#[test]
fn grammers_gzip_packed_request_and_container() {
    let mut server = Server::new(SessionConfig::default());
    let mut client = Client::new(key_bytes(1));
    // Settle the session first (salt, then future salts).
    for ping_id in [5, 6] {
        let ping = tl::functions::Ping { ping_id }.to_bytes();
        let (_, received) = submit(&mut server, &mut client, &ping);
        client.receive(server.flush(received.session, wall_ms()));
    }

    // grammers compresses requests of 512 bytes and more into gzip_packed.
    let big = tl::functions::account::UpdateProfile {
        first_name: None,
        last_name: None,
        about: Some("a".repeat(2000)),
    }
    .to_bytes();
    let small = tl::functions::help::GetNearestDc {}.to_bytes();
    let (ids, packet) = client.send(&[&big, &small]);
    assert!(ids.iter().all(Option::is_some));
    // The packet holds a container whose first request is gzip_packed.
    let plain = open_client_packet(&packet);
    assert_eq!(wire::constructor_of(&plain[32..]), Ok(MSG_CONTAINER));
    let inner = wire::parse_container(&plain[32..32 + body_len(&plain)], 100).unwrap();
    assert!(
        inner
            .iter()
            .any(|m| wire::constructor_of(m.body) == Ok(GZIP_PACKED))
    );
    let received = server.recv(&packet, wall_ms());
    let got_calls = calls(&received.events);
    assert_eq!(got_calls.len(), 2, "{:?}", received.events);
    assert_eq!(got_calls[0].query, big);
    assert_eq!(
        got_calls[0].constructor,
        tl::functions::account::UpdateProfile::CONSTRUCTOR_ID
    );
    assert_eq!(got_calls[1].query, small);
    assert!(
        bad_codes(&received.events).is_empty(),
        "{:?}",
        received.events
    );

    let session = server.sessions.session_mut(received.session).unwrap();
    session
        .rpc_result(got_calls[1].msg_id, &false.to_bytes())
        .unwrap();
    session
        .rpc_result(got_calls[0].msg_id, &true.to_bytes())
        .unwrap();
    let packets = server.flush(received.session, wall_ms());
    assert_eq!(packets.len(), 1, "both answers in one container");
    let got = client.receive(packets);
    assert!(got.contains(&Got::Result(ids[0].unwrap(), true.to_bytes())));
    assert!(got.contains(&Got::Result(ids[1].unwrap(), false.to_bytes())));
}

/// Decrypts a client packet (as the server does) to look at what grammers sent.
fn open_client_packet(packet: &[u8]) -> Vec<u8> {
    let key = AuthKey::from_array(key_bytes(1));
    let mk: [u8; 16] = packet[8..24].try_into().unwrap();
    decrypt_packet(&key, 0, &mk, &packet[24..]).unwrap()
}

fn body_len(plain: &[u8]) -> usize {
    i32::from_le_bytes(plain[28..32].try_into().unwrap()) as usize
}

// ---------------------------------------------------------------------------------------------
// Hand-rolled client
// ---------------------------------------------------------------------------------------------

struct Raw {
    key: AuthKey,
    session_id: i64,
}

/// A server message as the raw client sees it.
#[derive(Debug, Clone)]
struct ServerMsg {
    msg_id: i64,
    seq_no: i32,
    body: Vec<u8>,
}

impl ServerMsg {
    fn constructor(&self) -> u32 {
        u32::from_le_bytes(self.body[..4].try_into().unwrap())
    }
}

impl Raw {
    fn new(seed: u8, session_id: i64) -> Self {
        Raw {
            key: AuthKey::from_array(key_bytes(seed)),
            session_id,
        }
    }

    fn packet(&self, salt: i64, msg_id: i64, seq_no: i32, body: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&salt.to_le_bytes());
        plain.extend_from_slice(&self.session_id.to_le_bytes());
        plain.extend_from_slice(&msg_id.to_le_bytes());
        plain.extend_from_slice(&seq_no.to_le_bytes());
        plain.extend_from_slice(&(body.len() as i32).to_le_bytes());
        plain.extend_from_slice(body);
        let pad = 12 + (16 - (plain.len() + 12) % 16) % 16;
        plain.extend(std::iter::repeat_n(0xaa, pad));
        self.seal(&plain)
    }

    fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let (mk, ct) = encrypt_packet(&self.key, 0, plain).unwrap();
        let mut out = auth_key_id(&self.key).to_le_bytes().to_vec();
        out.extend_from_slice(&mk);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts a server packet; returns its salt and its messages (a container expanded, with
    /// the container itself first).
    fn open(&self, packet: &[u8]) -> (i64, Vec<ServerMsg>) {
        assert_eq!(&packet[..8], &auth_key_id(&self.key).to_le_bytes());
        let mk: [u8; 16] = packet[8..24].try_into().unwrap();
        let plain = decrypt_packet(&self.key, 8, &mk, &packet[24..]).unwrap();
        let salt = i64::from_le_bytes(plain[..8].try_into().unwrap());
        assert_eq!(
            i64::from_le_bytes(plain[8..16].try_into().unwrap()),
            self.session_id,
            "the session_id is echoed"
        );
        let msg_id = i64::from_le_bytes(plain[16..24].try_into().unwrap());
        let seq_no = i32::from_le_bytes(plain[24..28].try_into().unwrap());
        let len = i32::from_le_bytes(plain[28..32].try_into().unwrap()) as usize;
        let pad = plain.len() - 32 - len;
        assert!((12..=1024).contains(&pad));
        let top = ServerMsg {
            msg_id,
            seq_no,
            body: plain[32..32 + len].to_vec(),
        };
        let mut out = vec![top.clone()];
        if top.constructor() == MSG_CONTAINER {
            for m in wire::parse_container(&top.body, 10_000).unwrap() {
                assert!(m.msg_id < msg_id);
                out.push(ServerMsg {
                    msg_id: m.msg_id,
                    seq_no: m.seq_no,
                    body: m.body.to_vec(),
                });
            }
        }
        (salt, out)
    }

    fn open_all(&self, packets: &[Vec<u8>]) -> Vec<ServerMsg> {
        packets.iter().flat_map(|p| self.open(p).1).collect()
    }
}

fn mid(k: i64) -> i64 {
    (msg_id_at(T) & !3) + 4 * k
}

fn ping(id: i64) -> Vec<u8> {
    tl::functions::Ping { ping_id: id }.to_bytes()
}

fn query() -> Vec<u8> {
    tl::functions::help::GetNearestDc {}.to_bytes()
}

fn ack(ids: Vec<i64>) -> Vec<u8> {
    tl::enums::MsgsAck::Ack(tl::types::MsgsAck { msg_ids: ids }).to_bytes()
}

fn bad_notifications(msgs: &[ServerMsg]) -> Vec<(i64, i32)> {
    msgs.iter()
        .filter_map(
            |m| match tl::enums::BadMsgNotification::from_bytes(&m.body) {
                Ok(b) => Some((b.bad_msg_id(), b.error_code())),
                Err(_) => None,
            },
        )
        .collect()
}

/// A server with one session started by a ping (salt 0, first contact); returns the current
/// salt.
fn started(config: SessionConfig) -> (Server, Raw, i64, SessionKey) {
    let mut server = Server::new(config);
    let raw = Raw::new(1, 0x5e55);
    let received = server.recv(&raw.packet(0, mid(0), 1, &ping(1)), T);
    let msgs = raw.open_all(&server.flush(received.session, T));
    let created = msgs
        .iter()
        .find_map(|m| tl::enums::NewSession::from_bytes(&m.body).ok())
        .expect("new_session_created");
    let tl::enums::NewSession::Created(created) = created;
    assert_eq!(created.first_msg_id, mid(0));
    (server, raw, created.server_salt, received.session)
}

#[test]
fn raw_first_contact_messages_have_the_documented_layout() {
    let (mut server, raw, salt, key) = started(SessionConfig::default());
    assert_ne!(salt, 0);
    assert_eq!(
        server
            .sessions
            .current_salt(key.auth_key_id, T, &mut server.rng),
        salt
    );
    // The ping was answered by a pong in the same container as new_session_created and no
    // separate ack (pong answers it).
    let received = server.recv(&raw.packet(salt, mid(1), 3, &ping(2)), T);
    assert!(received.events.is_empty(), "{:?}", received.events);
    let packets = server.flush(key, T);
    let (packet_salt, msgs) = raw.open(&packets[0]);
    assert_eq!(packet_salt, salt);
    assert_eq!(msgs.len(), 1);
    let tl::enums::Pong::Pong(pong) = tl::enums::Pong::from_bytes(&msgs[0].body).unwrap();
    assert_eq!((pong.msg_id, pong.ping_id), (mid(1), 2));
    assert_eq!(msgs[0].msg_id & 3, 1, "responses are 1 mod 4");
    assert_eq!(msgs[0].seq_no % 2, 0, "pong is not content-related");
}

#[test]
fn raw_server_msg_ids_and_seq_nos() {
    let (mut server, raw, salt, key) = started(SessionConfig::default());
    // A query, then its answer plus two updates.
    let received = server.recv(&raw.packet(salt, mid(1), 3, &query()), T);
    let call = calls(&received.events).pop().unwrap();
    let session = server.sessions.session_mut(key).unwrap();
    session
        .push_update(&tl::enums::Updates::TooLong.to_bytes())
        .unwrap();
    session.rpc_result(call.msg_id, &true.to_bytes()).unwrap();
    session
        .push_update(&tl::enums::Updates::TooLong.to_bytes())
        .unwrap();
    let msgs = raw.open_all(&server.flush(key, T + 1));
    let container = &msgs[0];
    assert_eq!(container.constructor(), MSG_CONTAINER);
    assert_eq!(container.seq_no % 2, 0);
    let inner = msgs[1..].to_vec();
    assert_eq!(
        inner.len(),
        3,
        "no msgs_ack: the rpc_result answers the query"
    );
    for w in inner.windows(2) {
        assert!(w[0].msg_id < w[1].msg_id);
        assert!(w[0].seq_no < w[1].seq_no);
    }
    for m in &inner {
        assert_eq!(m.seq_no % 2, 1, "content-related");
        let expect = if m.constructor() == RPC_RESULT { 1 } else { 3 };
        assert_eq!(m.msg_id & 3, expect);
    }
    // new_session_created (seq 1) went out before: these are 3, 5, 7 and the container 8.
    assert_eq!(
        inner.iter().map(|m| m.seq_no).collect::<Vec<_>>(),
        vec![3, 5, 7]
    );
    assert_eq!(container.seq_no, 8);
    assert_eq!(server.sessions.session(key).unwrap().unacked_count(), 4);

    // A query that is not answered right away is acknowledged.
    let received = server.recv(&raw.packet(salt, mid(2), 5, &query()), T);
    let pending = calls(&received.events).pop().unwrap();
    let msgs = raw.open_all(&server.flush(key, T + 2));
    let tl::enums::MsgsAck::Ack(a) = tl::enums::MsgsAck::from_bytes(&msgs[0].body).unwrap();
    assert_eq!(a.msg_ids, vec![pending.msg_id]);
    assert_eq!(msgs[0].seq_no % 2, 0);

    // The client acknowledges what it got (not new_session_created).
    let sent: Vec<i64> = inner.iter().map(|m| m.msg_id).collect();
    let received = server.recv(&raw.packet(salt, mid(3), 6, &ack(sent.clone())), T);
    assert_eq!(received.events, vec![Event::Acked { msg_ids: sent }]);
    assert_eq!(server.sessions.session(key).unwrap().unacked_count(), 1);
    assert_eq!(server.sessions.session(key).unwrap().acked_total(), 3);
}

#[test]
fn raw_bad_msg_id_codes() {
    let (mut server, raw, salt, key) = started(SessionConfig::default());
    let cases: Vec<(i64, BadMsgCode)> = vec![
        (mid(10) + 1, BadMsgCode::MsgIdNotDivisibleBy4),
        (mid(10) + 2, BadMsgCode::MsgIdNotDivisibleBy4),
        (msg_id_at(T - 301_000) & !3, BadMsgCode::MsgIdTooLow),
        (msg_id_at(T + 31_000) & !3, BadMsgCode::MsgIdTooHigh),
    ];
    for (msg_id, code) in cases {
        let received = server.recv(&raw.packet(salt, msg_id, 3, &query()), T);
        assert_eq!(bad_codes(&received.events), vec![(msg_id, code)]);
        let msgs = raw.open_all(&server.flush(key, T));
        assert_eq!(bad_notifications(&msgs), vec![(msg_id, code.code())]);
        assert_eq!(msgs[0].msg_id & 3, 1);
        assert_eq!(msgs[0].seq_no % 2, 0, "notifications need no ack");
    }
    // Just inside the window is fine.
    let ok = msg_id_at(T - 299_000) & !3;
    let received = server.recv(&raw.packet(salt, ok, 0, &ping(3)), T);
    assert!(bad_codes(&received.events).is_empty());
    let ok = msg_id_at(T + 29_000) & !3;
    let received = server.recv(&raw.packet(salt, ok, 3, &ping(4)), T);
    assert!(bad_codes(&received.events).is_empty());
}

#[test]
fn raw_seq_no_codes() {
    let (mut server, raw, salt, key) = started(SessionConfig::default());
    // A query (content-related) with an even seq_no: 35.
    let r = server.recv(&raw.packet(salt, mid(1), 2, &query()), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![(mid(1), BadMsgCode::OddSeqNoExpected)]
    );
    // msgs_ack with an odd seq_no: 34.
    let r = server.recv(&raw.packet(salt, mid(2), 3, &ack(vec![])), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![(mid(2), BadMsgCode::EvenSeqNoExpected)]
    );
    // mid(0) had seq 1. A query at mid(10) with seq 9 is fine.
    let r = server.recv(&raw.packet(salt, mid(10), 9, &query()), T);
    assert!(bad_codes(&r.events).is_empty());
    // A higher msg_id with a lower seq_no: 32.
    let r = server.recv(&raw.packet(salt, mid(11), 7, &query()), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![(mid(11), BadMsgCode::SeqNoTooLow)]
    );
    // An equal odd seq_no after it: 32 as well.
    let r = server.recv(&raw.packet(salt, mid(12), 9, &query()), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![(mid(12), BadMsgCode::SeqNoTooLow)]
    );
    // A lower msg_id (between mid(0) and mid(10)) with a higher seq_no: 33.
    let r = server.recv(&raw.packet(salt, mid(5), 11, &query()), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![(mid(5), BadMsgCode::SeqNoTooHigh)]
    );
    // In between and consistent: accepted.
    let r = server.recv(&raw.packet(salt, mid(5), 5, &query()), T);
    assert!(bad_codes(&r.events).is_empty());
    let msgs = raw.open_all(&server.flush(key, T));
    let codes: Vec<i32> = bad_notifications(&msgs).iter().map(|b| b.1).collect();
    assert_eq!(codes, vec![35, 34, 32, 32, 33]);
    // Service queries take either parity.
    let r = server.recv(&raw.packet(salt, mid(20), 12, &ping(1)), T);
    assert!(bad_codes(&r.events).is_empty(), "{:?}", r.events);
}

#[test]
fn raw_bad_server_salt_then_retry() {
    let (mut server, raw, salt, key) = started(SessionConfig::default());
    // After first contact, salt 0 and a made-up salt are both refused with the right salt.
    for wrong in [0i64, 0x1234_5678] {
        let r = server.recv(&raw.packet(wrong, mid(1), 3, &query()), T);
        assert_eq!(
            bad_codes(&r.events),
            vec![(mid(1), BadMsgCode::BadServerSalt)]
        );
        assert!(calls(&r.events).is_empty());
        let msgs = raw.open_all(&server.flush(key, T));
        match tl::enums::BadMsgNotification::from_bytes(&msgs[0].body).unwrap() {
            tl::enums::BadMsgNotification::BadServerSalt(b) => {
                assert_eq!(b.bad_msg_id, mid(1));
                assert_eq!(b.bad_msg_seqno, 3);
                assert_eq!(b.error_code, 48);
                assert_eq!(b.new_server_salt, salt);
            }
            other => panic!("{other:?}"),
        }
    }
    // The same msg_id re-sent with the salt is accepted (the refused one was not recorded).
    let r = server.recv(&raw.packet(salt, mid(1), 3, &query()), T);
    assert_eq!(calls(&r.events).len(), 1);
    // Half an hour later the next salt is current, the old one still accepted; after the old
    // one's hour it is refused.
    let later = T + 1_800_000;
    let r = server.recv(&raw.packet(salt, msg_id_at(later) & !3, 5, &ping(1)), later);
    assert!(bad_codes(&r.events).is_empty());
    let much_later = T + 3_700_000;
    let id = msg_id_at(much_later) & !3;
    let r = server.recv(&raw.packet(salt, id, 7, &ping(1)), much_later);
    assert_eq!(bad_codes(&r.events), vec![(id, BadMsgCode::BadServerSalt)]);
}

#[test]
fn raw_duplicates_get_the_cached_answer_or_are_ignored() {
    let (mut server, raw, salt, key) = started(SessionConfig::default());
    let packet = raw.packet(salt, mid(1), 3, &query());
    let r = server.recv(&packet, T);
    let call = calls(&r.events).pop().unwrap();
    // Duplicate before the answer: ignored (acknowledged again).
    let r = server.recv(&packet, T);
    assert_eq!(
        r.events,
        vec![Event::Duplicate {
            msg_id: mid(1),
            resent: false
        }]
    );
    server
        .sessions
        .session_mut(key)
        .unwrap()
        .rpc_result(call.msg_id, &true.to_bytes())
        .unwrap();
    let first = raw.open_all(&server.flush(key, T));
    let answer = first
        .iter()
        .find(|m| m.constructor() == RPC_RESULT)
        .unwrap()
        .clone();
    // Duplicate after the answer, not acknowledged yet: the same answer again.
    let r = server.recv(&packet, T);
    assert_eq!(
        r.events,
        vec![Event::Duplicate {
            msg_id: mid(1),
            resent: true
        }]
    );
    let again = raw.open_all(&server.flush(key, T));
    let resent = again
        .iter()
        .find(|m| m.constructor() == RPC_RESULT)
        .unwrap();
    assert_eq!(
        (resent.msg_id, resent.seq_no, &resent.body),
        (answer.msg_id, answer.seq_no, &answer.body)
    );
    // Once acknowledged, a duplicate is ignored.
    server.recv(&raw.packet(salt, mid(2), 4, &ack(vec![answer.msg_id])), T);
    let r = server.recv(&packet, T);
    assert_eq!(
        r.events,
        vec![Event::Duplicate {
            msg_id: mid(1),
            resent: false
        }]
    );
    let later = raw.open_all(&server.flush(key, T));
    assert!(later.iter().all(|m| m.constructor() != RPC_RESULT));
}

#[test]
fn raw_message_too_old_when_forgotten() {
    let config = SessionConfig {
        remembered_msg_ids: 4,
        ..SessionConfig::default()
    };
    let (mut server, raw, salt, _key) = started(config);
    for k in 1..=6 {
        let r = server.recv(
            &raw.packet(salt, mid(10 + k), 2 * k as i32 + 1, &ping(k)),
            T,
        );
        assert!(bad_codes(&r.events).is_empty());
    }
    // mid(5) is older than the oldest remembered msg_id: cannot tell, 20.
    let r = server.recv(&raw.packet(salt, mid(5), 1, &ping(0)), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![(mid(5), BadMsgCode::MessageTooOld)]
    );
}

#[test]
fn raw_containers() {
    let (mut server, raw, salt, key) = started(SessionConfig::default());
    let q = query();
    let p = ping(9);
    let a = ack(vec![]);
    let good = wire::write_container(&[(mid(1), 2, &a), (mid(2), 3, &q), (mid(3), 5, &p)]);
    let r = server.recv(&raw.packet(salt, mid(4), 6, &good), T);
    assert!(bad_codes(&r.events).is_empty(), "{:?}", r.events);
    assert_eq!(calls(&r.events).len(), 1);
    assert!(r.events.contains(&Event::Acked { msg_ids: vec![] }));
    let msgs = raw.open_all(&server.flush(key, T));
    // One packet: msgs_ack for the query, pong for the ping.
    assert_eq!(msgs[0].constructor(), MSG_CONTAINER);
    assert!(
        msgs.iter()
            .any(|m| m.constructor() == tl::types::Pong::CONSTRUCTOR_ID)
    );

    // The container's msg_id repeats an earlier message: 19.
    let reuse = wire::write_container(&[(mid(5), 7, &p)]);
    let r = server.recv(&raw.packet(salt, mid(2), 8, &reuse), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![(mid(2), BadMsgCode::ContainerMsgIdReused)]
    );
    // An odd seq_no on a container: 34.
    let r = server.recv(&raw.packet(salt, mid(30), 9, &reuse), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![(mid(30), BadMsgCode::EvenSeqNoExpected)]
    );
    // Inner msg_id not below the container's: 64.
    let late = wire::write_container(&[(mid(41), 7, &p)]);
    let r = server.recv(&raw.packet(salt, mid(40), 8, &late), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![(mid(40), BadMsgCode::InvalidContainer)]
    );
    // Nested container: 64.
    let nested = wire::write_container(&[(mid(50), 8, &reuse)]);
    let r = server.recv(&raw.packet(salt, mid(51), 8, &nested), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![(mid(51), BadMsgCode::InvalidContainer)]
    );
    // Truncated container: 64.
    let r = server.recv(&raw.packet(salt, mid(52), 8, &good[..good.len() - 4]), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![(mid(52), BadMsgCode::InvalidContainer)]
    );
    // Inner messages are checked one by one: a bad one does not spoil the rest.
    let mixed = wire::write_container(&[(mid(60) + 1, 9, &p), (mid(61), 2, &q), (mid(62), 11, &q)]);
    let r = server.recv(&raw.packet(salt, mid(63), 12, &mixed), T);
    assert_eq!(
        bad_codes(&r.events),
        vec![
            (mid(60) + 1, BadMsgCode::MsgIdNotDivisibleBy4),
            (mid(61), BadMsgCode::OddSeqNoExpected)
        ]
    );
    assert_eq!(calls(&r.events).len(), 1);
}

#[test]
fn raw_gzip_packed_messages() {
    let (mut server, raw, salt, key) = started(SessionConfig::default());
    let wrapped = tl::functions::InvokeWithLayer {
        layer: 230,
        query: tl::functions::help::GetNearestDc {},
    }
    .to_bytes();
    let packed = wire::gzip_packed(&wrapped).unwrap();
    assert_eq!(
        u32::from_le_bytes(packed[..4].try_into().unwrap()),
        GZIP_PACKED
    );
    let r = server.recv(&raw.packet(salt, mid(1), 3, &packed), T);
    let call = calls(&r.events).pop().expect("call");
    assert_eq!(call.layer, Some(230));
    assert_eq!(call.query, query());
    // A gzip_packed ping is answered too.
    let r = server.recv(
        &raw.packet(salt, mid(2), 5, &wire::gzip_packed(&ping(7)).unwrap()),
        T,
    );
    assert!(r.events.is_empty(), "{:?}", r.events);
    let msgs = raw.open_all(&server.flush(key, T));
    assert!(
        msgs.iter()
            .any(|m| m.constructor() == tl::types::Pong::CONSTRUCTOR_ID)
    );
    // Garbage inside gzip_packed: malformed, answered with an error, nothing crashes.
    let mut bad = GZIP_PACKED.to_le_bytes().to_vec();
    wire::write_bytes(&mut bad, b"definitely not gzip");
    let r = server.recv(&raw.packet(salt, mid(3), 7, &bad), T);
    assert!(matches!(r.events[0], Event::Malformed { msg_id, .. } if msg_id == mid(3)));
    let msgs = raw.open_all(&server.flush(key, T));
    let err = msgs
        .iter()
        .find(|m| m.constructor() == RPC_RESULT)
        .expect("rpc_error");
    let e = tl::enums::RpcError::from_bytes(&err.body[12..]).unwrap();
    let tl::enums::RpcError::Error(e) = e;
    assert_eq!(
        (e.error_code, e.error_message.as_str()),
        (400, "INPUT_FETCH_ERROR")
    );
}

#[test]
fn raw_wrappers_are_unwrapped() {
    let (mut server, raw, salt, _key) = started(SessionConfig::default());
    let body = tl::functions::InvokeAfterMsg {
        msg_id: mid(0),
        query: tl::functions::InvokeWithoutUpdates {
            query: tl::functions::InvokeAfterMsgs {
                msg_ids: vec![1, 2],
                query: tl::functions::help::GetNearestDc {},
            },
        },
    }
    .to_bytes();
    let r = server.recv(&raw.packet(salt, mid(1), 3, &body), T);
    let call = calls(&r.events).pop().unwrap();
    assert_eq!(call.after_msg, Some(mid(0)));
    assert_eq!(call.after_msgs, vec![1, 2]);
    assert!(call.without_updates);
    assert_eq!(
        call.constructor,
        tl::functions::help::GetNearestDc::CONSTRUCTOR_ID
    );
    assert_eq!(call.query, query());

    // initConnection with a proxy and nested JSON params.
    let body = tl::functions::InitConnection {
        api_id: 1,
        device_model: "d".into(),
        system_version: "s".into(),
        app_version: "a".into(),
        system_lang_code: "en".into(),
        lang_pack: "p".into(),
        lang_code: "en".into(),
        proxy: Some(
            tl::types::InputClientProxy {
                address: "127.0.0.1".into(),
                port: 1080,
            }
            .into(),
        ),
        params: Some(tl::enums::Jsonvalue::JsonArray(tl::types::JsonArray {
            value: vec![tl::types::JsonNumber { value: 2.0 }.into()],
        })),
        query: tl::functions::help::GetNearestDc {},
    }
    .to_bytes();
    let r = server.recv(&raw.packet(salt, mid(2), 5, &body), T);
    let call = calls(&r.events).pop().unwrap();
    let init = call.init_connection.unwrap();
    assert_eq!(init.proxy, Some(("127.0.0.1".into(), 1080)));
    assert!(init.params.is_some());
    assert_eq!(call.query, query());

    // A truncated wrapper is malformed and answered with INPUT_FETCH_ERROR.
    let r = server.recv(
        &raw.packet(salt, mid(3), 7, &wire::INVOKE_WITH_LAYER.to_le_bytes()),
        T,
    );
    assert!(
        matches!(r.events[0], Event::Malformed { .. }),
        "{:?}",
        r.events
    );
}

#[test]
fn raw_service_messages() {
    let (mut server, raw, salt, key) = started(SessionConfig::default());
    // ping_delay_disconnect: pong and a deadline.
    let body = tl::functions::PingDelayDisconnect {
        ping_id: 5,
        disconnect_delay: 75,
    }
    .to_bytes();
    let r = server.recv(&raw.packet(salt, mid(1), 3, &body), T);
    assert_eq!(
        r.events,
        vec![Event::DisconnectDeadline { at_ms: T + 75_000 }]
    );
    assert_eq!(
        server.sessions.session(key).unwrap().disconnect_deadline(),
        Some(T + 75_000)
    );

    // get_future_salts: a bare future_salts, starting with the current salt.
    let body = tl::functions::GetFutureSalts { num: 3 }.to_bytes();
    server.recv(&raw.packet(salt, mid(2), 5, &body), T);
    let msgs = raw.open_all(&server.flush(key, T));
    assert!(
        msgs.iter()
            .any(|m| m.constructor() == tl::types::Pong::CONSTRUCTOR_ID)
    );
    let salts = msgs
        .iter()
        .find_map(|m| tl::enums::FutureSalts::from_bytes(&m.body).ok())
        .expect("future_salts");
    let tl::enums::FutureSalts::Salts(salts) = salts;
    assert_eq!(salts.req_msg_id, mid(2));
    assert_eq!(salts.now as u64, T / 1000);
    assert_eq!(salts.salts.0.len(), 3);
    assert_eq!(salts.salts.0[0].salt, salt);
    assert!(salts.salts.0[0].valid_since as u64 <= T / 1000);

    // destroy_session: another session of the key is destroyed; an unknown one is not.
    let other = Raw::new(1, OTHER_SESSION);
    server.recv(&other.packet(salt, mid(3), 1, &ping(1)), T);
    assert_eq!(server.sessions.len(), 2);
    let body = tl::functions::DestroySession {
        session_id: OTHER_SESSION,
    }
    .to_bytes();
    let r = server.recv(&raw.packet(salt, mid(4), 7, &body), T);
    assert_eq!(
        r.events,
        vec![Event::SessionDestroyed {
            session_id: OTHER_SESSION,
            existed: true
        }]
    );
    assert_eq!(server.sessions.len(), 1);
    let body = tl::functions::DestroySession { session_id: 1 }.to_bytes();
    server.recv(&raw.packet(salt, mid(5), 9, &body), T);
    let msgs = raw.open_all(&server.flush(key, T));
    let res: Vec<tl::enums::DestroySessionRes> = msgs
        .iter()
        .filter_map(|m| tl::enums::DestroySessionRes::from_bytes(&m.body).ok())
        .collect();
    assert!(
        matches!(&res[0], tl::enums::DestroySessionRes::DestroySessionOk(x) if x.session_id == OTHER_SESSION)
    );
    assert!(
        matches!(&res[1], tl::enums::DestroySessionRes::DestroySessionNone(x) if x.session_id == 1)
    );

    // msg_resend_req: an unacknowledged content message is re-sent, unknown ids get
    // msgs_state_info.
    let session = server.sessions.session_mut(key).unwrap();
    session
        .push_update(&tl::enums::Updates::TooLong.to_bytes())
        .unwrap();
    let update = raw
        .open_all(&server.flush(key, T))
        .into_iter()
        .find(|m| m.msg_id & 3 == 3)
        .unwrap();
    let body = tl::enums::MsgResendReq::Req(tl::types::MsgResendReq {
        msg_ids: vec![update.msg_id, 12345 * 4 + 1],
    })
    .to_bytes();
    server.recv(&raw.packet(salt, mid(6), 11, &body), T);
    let msgs = raw.open_all(&server.flush(key, T));
    let again = msgs
        .iter()
        .find(|m| m.msg_id == update.msg_id)
        .expect("re-sent");
    assert_eq!((again.seq_no, &again.body), (update.seq_no, &update.body));
    let info = msgs
        .iter()
        .find_map(|m| tl::enums::MsgsStateInfo::from_bytes(&m.body).ok())
        .expect("msgs_state_info");
    let tl::enums::MsgsStateInfo::Info(info) = info;
    assert_eq!(info.req_msg_id, mid(6));
    assert_eq!(info.info, vec![4, 1]);

    // http_wait is ignored.
    let body = tl::enums::HttpWait::Wait(tl::types::HttpWait {
        max_delay: 0,
        wait_after: 0,
        max_wait: 0,
    })
    .to_bytes();
    let r = server.recv(&raw.packet(salt, mid(7), 12, &body), T);
    assert!(r.events.is_empty());
}

#[test]
fn raw_rpc_drop_answer() {
    let (mut server, raw, salt, key) = started(SessionConfig::default());
    let r = server.recv(&raw.packet(salt, mid(1), 3, &query()), T);
    let call = calls(&r.events).pop().unwrap();
    let drop = tl::functions::RpcDropAnswer {
        req_msg_id: call.msg_id,
    }
    .to_bytes();
    server.recv(&raw.packet(salt, mid(2), 5, &drop), T);
    server
        .sessions
        .session_mut(key)
        .unwrap()
        .rpc_result(call.msg_id, &true.to_bytes())
        .unwrap();
    let msgs = raw.open_all(&server.flush(key, T));
    let results: Vec<(i64, u32)> = msgs
        .iter()
        .filter(|m| m.constructor() == RPC_RESULT)
        .map(|m| {
            (
                i64::from_le_bytes(m.body[4..12].try_into().unwrap()),
                u32::from_le_bytes(m.body[12..16].try_into().unwrap()),
            )
        })
        .collect();
    let dropped_running = tl::types::RpcAnswerDroppedRunning::CONSTRUCTOR_ID;
    assert_eq!(
        results,
        vec![(mid(2), dropped_running), (mid(1), dropped_running)]
    );
}

#[test]
fn packet_errors_are_typed() {
    let mut server = Server::new(SessionConfig::default());
    let raw = Raw::new(1, 7);
    let good = raw.packet(0, mid(0), 1, &ping(1));
    let mut rng = SeededRandom::new(3);
    let mut try_packet = |p: &[u8]| server.sessions.handle_packet(p, T, &mut rng);

    assert_eq!(
        try_packet(&good[..10]),
        Err(PacketError::TooShort { len: 10 })
    );
    let stranger = Raw::new(2, 7);
    let unknown = try_packet(&stranger.packet(0, mid(0), 1, &ping(1))).unwrap_err();
    assert!(matches!(unknown, PacketError::UnknownAuthKey { .. }));
    assert_eq!(unknown.transport_error(), Some(-404));
    let mut zero = good.clone();
    zero[..8].fill(0);
    assert_eq!(try_packet(&zero), Err(PacketError::Unencrypted));
    assert_eq!(
        try_packet(&good[..good.len() - 1]),
        Err(PacketError::NotBlockAligned {
            len: good.len() - 25
        })
    );
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let err = try_packet(&flipped).unwrap_err();
    assert!(matches!(err, PacketError::BadMsgKey { .. }));
    assert_eq!(err.transport_error(), None);
    // Encrypted under another key but naming ours.
    let mut forged = stranger.packet(0, mid(0), 1, &ping(1));
    forged[..8].copy_from_slice(&good[..8]);
    assert!(matches!(
        try_packet(&forged),
        Err(PacketError::BadMsgKey { .. })
    ));
    // Server-direction encryption (x = 8) is refused too.
    let mut plain = vec![0u8; 64];
    plain[28..32].copy_from_slice(&16i32.to_le_bytes());
    let (mk, ct) = encrypt_packet(&raw.key, 8, &plain).unwrap();
    let mut wrong_x = good[..8].to_vec();
    wrong_x.extend_from_slice(&mk);
    wrong_x.extend_from_slice(&ct);
    assert!(matches!(
        try_packet(&wrong_x),
        Err(PacketError::BadMsgKey { .. })
    ));
    // Authentic, but the declared length does not fit (padding 0 / 1040 / misaligned).
    for declared in [32i32, -4, 6, 1_000_000] {
        let mut plain = vec![0u8; 64];
        plain[28..32].copy_from_slice(&declared.to_le_bytes());
        let p = raw.seal(&plain);
        assert_eq!(
            try_packet(&p),
            Err(PacketError::BadLength {
                declared_len: declared,
                plaintext_len: 64
            })
        );
    }
    let mut plain = vec![0u8; 32 + 4 + 1036];
    plain[28..32].copy_from_slice(&4i32.to_le_bytes());
    assert!(matches!(
        try_packet(&raw.seal(&plain)),
        Err(PacketError::BadLength { .. })
    ));
    // Nothing above created a session.
    assert!(server.sessions.is_empty());
    for e in [unknown, err] {
        assert!(!e.to_string().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Arbitrary words, sometimes starting with a known constructor.
        (
            prop::sample::select(vec![
                MSG_CONTAINER,
                GZIP_PACKED,
                wire::MSGS_ACK,
                wire::PING,
                wire::PING_DELAY_DISCONNECT,
                wire::GET_FUTURE_SALTS,
                wire::DESTROY_SESSION,
                wire::MSG_RESEND_REQ,
                wire::MSGS_STATE_REQ,
                wire::RPC_DROP_ANSWER,
                wire::INVOKE_WITH_LAYER,
                wire::INIT_CONNECTION,
                wire::INVOKE_AFTER_MSGS,
                wire::MSG_COPY,
                0x1234_5678,
            ]),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(c, mut rest)| {
                rest.truncate(rest.len() / 4 * 4);
                let mut v = c.to_le_bytes().to_vec();
                v.extend(rest);
                v
            }),
        prop::collection::vec(any::<u8>(), 0..32).prop_map(|mut v| {
            v.truncate(v.len() / 4 * 4);
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes, with or without a known auth_key_id in front, never panic.
    #[test]
    fn arbitrary_packets_never_panic(
        known in any::<bool>(),
        data in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut server = Server::new(SessionConfig::default());
        let mut packet = data;
        if known && packet.len() >= 8 {
            let id = auth_key_id(&AuthKey::from_array(key_bytes(1)));
            packet[..8].copy_from_slice(&id.to_le_bytes());
        }
        let mut rng = SeededRandom::new(1);
        let r = server.sessions.handle_packet(&packet, T, &mut rng);
        prop_assert!(r.is_err());
    }

    /// Authentic packets with arbitrary headers and bodies (containers, gzip, wrappers with
    /// garbage) never panic, and whatever the server sends back decrypts.
    #[test]
    fn authentic_garbage_never_panics(
        salt_zero in any::<bool>(),
        offset in -400i64..60,
        low in 0i64..4,
        seq_no in any::<i32>(),
        bodies in prop::collection::vec(any_body(), 1..4),
        in_container in any::<bool>(),
    ) {
        let mut server = Server::new(SessionConfig::default());
        let raw = Raw::new(1, 3);
        let base = (msg_id_at((T as i64 + offset * 1000) as u64) & !3) + low;
        let body = if in_container {
            let items: Vec<(i64, i32, &[u8])> = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| (base - 4 * (i as i64 + 1), seq_no.wrapping_add(i as i32), &b[..]))
                .collect();
            wire::write_container(&items)
        } else {
            bodies[0].clone()
        };
        let salt = if salt_zero { 0 } else { 99 };
        for _ in 0..2 {
            let received = server.recv(&raw.packet(salt, base, seq_no, &body), T);
            for packet in server.flush(received.session, T) {
                raw.open(&packet);
            }
        }
    }

    /// Flipping any byte of a valid packet gives a typed error, never a panic.
    #[test]
    fn corrupted_packets_are_refused(index in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut server = Server::new(SessionConfig::default());
        let raw = Raw::new(1, 3);
        let mut packet = raw.packet(0, mid(0), 1, &query());
        let i = index.index(packet.len());
        packet[i] ^= 1 << bit;
        let mut rng = SeededRandom::new(1);
        prop_assert!(server.sessions.handle_packet(&packet, T, &mut rng).is_err());
    }
}
