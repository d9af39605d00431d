//! The Telegram model driven directly with serialized TL calls (no network): a full secret chat
//! between two accounts running secret-core's real state machine, every documented error, the
//! qts queue (getDifference / receivedQueue), duplicate random_ids and persistence.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use grammers_tl_types::{
    Deserializable, Identifiable, RemoteCall, Serializable, enums, functions, types,
};
use secret_core::chat::{
    Call, Chat, ChatRequest, Event, IncomingEncrypted, Output, ReceiveError, RemoteChat, SendMethod,
};
use secret_core::dh::{self, DhConfig};
use secret_core::rand::SeededRandom;
use secret_core::tl::enums::{DecryptedMessageAction as A, SendMessageAction};
use secret_core::tl::types as st;
use tgsim::api::{ApiHandler, CallContext, RpcError, UpdateSink};
use tgsim::model::{self, Model};
use tgsim::session::AccountId;

const ALICE: AccountId = 1001;
const BOB: AccountId = 2002;
const CAROL: AccountId = 3003;
const NOW_MS: u64 = 1_700_000_000_000;

#[derive(Default)]
struct Sink(Mutex<Vec<(AccountId, Vec<u8>)>>);

impl UpdateSink for Sink {
    fn push(&self, account: AccountId, updates: Vec<u8>) {
        self.0.lock().unwrap().push((account, updates));
    }
}

impl Sink {
    /// Takes the updates pushed to `account`, flattened.
    fn take(&self, account: AccountId) -> Vec<enums::Update> {
        let mut all = self.0.lock().unwrap();
        let (mine, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|(a, _)| *a == account);
        *all = rest;
        mine.into_iter()
            .flat_map(|(_, b)| match enums::Updates::from_bytes(&b).unwrap() {
                enums::Updates::Updates(u) => {
                    assert_eq!(u.seq, 0);
                    u.updates
                }
                enums::Updates::UpdateShort(u) => vec![u.update],
                other => panic!("unexpected updates shape {other:?}"),
            })
            .collect()
    }
}

struct World {
    model: Model,
    sink: Arc<Sink>,
    now_ms: u64,
}

fn ctx(account: AccountId, now_ms: u64) -> CallContext {
    CallContext {
        account,
        layer: Some(grammers_tl_types::LAYER),
        now_ms,
        connection: None,
    }
}

impl World {
    fn new() -> World {
        Self::with_path(None)
    }

    fn with_path(path: Option<std::path::PathBuf>) -> World {
        let sink = Arc::new(Sink::default());
        let model = Model::with_rng(sink.clone(), path, Box::new(SeededRandom::new(7)));
        model.add_account(ALICE, "+999 66 1 1001", "Alice").unwrap();
        model.add_account(BOB, "9996621002", "Bob").unwrap();
        model.add_account(CAROL, "9996631003", "Carol").unwrap();
        World {
            model,
            sink,
            now_ms: NOW_MS,
        }
    }

    fn raw(&self, who: AccountId, bytes: &[u8]) -> Result<Vec<u8>, RpcError> {
        let ctor = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        self.model.call(&ctx(who, self.now_ms), ctor, bytes)
    }

    fn call<F: RemoteCall>(&self, who: AccountId, f: &F) -> Result<F::Return, RpcError> {
        self.raw(who, &f.to_bytes())
            .map(|b| F::Return::from_bytes(&b).expect("answer parses"))
    }

    fn err<F: RemoteCall>(&self, who: AccountId, f: &F) -> RpcError {
        match self.call(who, f) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }
}

fn input_user(id: i64) -> enums::InputUser {
    enums::InputUser::User(types::InputUser {
        user_id: id,
        access_hash: 0,
    })
}

fn peer(chat_id: i32, access_hash: i64) -> enums::InputEncryptedChat {
    enums::InputEncryptedChat::Chat(types::InputEncryptedChat {
        chat_id,
        access_hash,
    })
}

fn get_dh(w: &World, who: AccountId) -> (DhConfig, Vec<u8>) {
    let r = w
        .call(
            who,
            &functions::messages::GetDhConfig {
                version: 0,
                random_length: 256,
            },
        )
        .unwrap();
    let enums::messages::DhConfig::Config(c) = r else {
        panic!("expected a full dhConfig");
    };
    assert_eq!(c.random.len(), 256);
    (DhConfig::validate(c.g, &c.p, c.version).unwrap(), c.random)
}

fn get_difference(w: &World, who: AccountId, pts: i32, qts: i32) -> enums::updates::Difference {
    w.call(
        who,
        &functions::updates::GetDifference {
            pts,
            pts_limit: None,
            pts_total_limit: None,
            date: (w.now_ms / 1000) as i32,
            qts,
            qts_limit: None,
        },
    )
    .unwrap()
}

/// One side of a chat: the secret-core state machine and what it has seen.
struct Side {
    id: AccountId,
    chat: Chat,
    access_hash: i64,
    qts: i32,
    actions: Vec<A>,
    /// The random_id of every send answered, repeats included.
    sent_ids: Vec<i64>,
    /// The date answered to the first send of each random_id.
    first_dates: BTreeMap<i64, i32>,
}

/// A client: performs the calls of an Output against the model (acceptEncryption excluded).
fn perform(w: &World, s: &mut Side, out: &Output) {
    for e in &out.events {
        if let Event::Action { action, .. } = e {
            s.actions.push(action.clone());
        }
    }
    for t in out.transmits() {
        let p = peer(s.chat.id(), s.access_hash);
        let r = match t.method {
            SendMethod::SendEncrypted => w.call(
                s.id,
                &functions::messages::SendEncrypted {
                    silent: false,
                    peer: p,
                    random_id: t.random_id,
                    data: t.data.clone(),
                },
            ),
            SendMethod::SendEncryptedService => w.call(
                s.id,
                &functions::messages::SendEncryptedService {
                    peer: p,
                    random_id: t.random_id,
                    data: t.data.clone(),
                },
            ),
        };
        let enums::messages::SentEncryptedMessage::Message(m) = r.unwrap() else {
            panic!("sentEncryptedMessage expected");
        };
        // A repeat (a Resend answer) is answered with the first date.
        let first = *s
            .first_dates
            .entry(t.random_id)
            .or_insert((w.now_ms / 1000) as i32);
        assert_eq!(m.date, first);
        s.sent_ids.push(t.random_id);
        let o = s.chat.on_sent(t.random_id, m.date);
        perform(w, s, &o);
    }
}

/// Feeds an encrypted message to a side (in qts order, skipping what it has seen).
fn deliver(
    w: &World,
    s: &mut Side,
    msg: &enums::EncryptedMessage,
    qts: i32,
    rng: &mut SeededRandom,
) {
    if qts <= s.qts {
        return;
    }
    assert_eq!(qts, s.qts + 1, "qts without holes");
    s.qts = qts;
    let (random_id, date, data) = match msg {
        enums::EncryptedMessage::Service(m) => (m.random_id, m.date, m.bytes.clone()),
        enums::EncryptedMessage::Message(m) => (m.random_id, m.date, m.bytes.clone()),
    };
    let out = s
        .chat
        .receive(
            &IncomingEncrypted {
                random_id,
                date,
                data,
            },
            0,
            rng,
        )
        .expect("decrypts and is accepted");
    perform(w, s, &out);
}

/// Delivers everything pushed to `s` (updateNewEncryptedMessage only).
fn pump(w: &World, s: &mut Side, rng: &mut SeededRandom) -> usize {
    let ups = w.sink.take(s.id);
    let n = ups.len();
    for u in ups {
        match u {
            enums::Update::NewEncryptedMessage(m) => deliver(w, s, &m.message, m.qts, rng),
            other => panic!("unexpected update {other:?}"),
        }
    }
    n
}

fn typing() -> A {
    A::Typing(st::DecryptedMessageActionTyping {
        action: SendMessageAction::SendMessageTypingAction(st::SendMessageTypingAction {}),
    })
}

fn ttl(n: i32) -> A {
    A::SetMessageTTL(st::DecryptedMessageActionSetMessageTTL { ttl_seconds: n })
}

const CHAT_ID: i32 = 777;

/// Creates and accepts a chat between Alice (creator) and Bob through the model, exchanging the
/// layer notices. Returns (alice, bob).
fn establish(w: &World, rng: &mut SeededRandom) -> (Side, Side) {
    let (dh_a, rand_a) = get_dh(w, ALICE);
    let (mut chat_a, req, _) = Chat::request(CHAT_ID, ALICE, BOB, dh_a, &rand_a, 0, rng).unwrap();
    let answer = w
        .call(
            ALICE,
            &functions::messages::RequestEncryption {
                user_id: input_user(req.user_id),
                random_id: req.random_id,
                g_a: req.g_a.clone(),
            },
        )
        .unwrap();
    let enums::EncryptedChat::Waiting(waiting) = answer else {
        panic!("encryptedChatWaiting expected, got {answer:?}");
    };
    assert_eq!(
        (waiting.id, waiting.admin_id, waiting.participant_id),
        (CHAT_ID, ALICE, BOB)
    );
    let _ = chat_a.on_remote_update(
        &RemoteChat::Waiting {
            access_hash: waiting.access_hash,
        },
        0,
        rng,
    );
    assert!(w.sink.take(ALICE).is_empty());

    // Bob learns about the request.
    let ups = w.sink.take(BOB);
    assert_eq!(ups.len(), 1);
    let enums::Update::Encryption(types::UpdateEncryption {
        chat: enums::EncryptedChat::Requested(r),
        ..
    }) = &ups[0]
    else {
        panic!("updateEncryption(requested) expected, got {ups:?}");
    };
    assert_eq!(r.g_a, req.g_a);
    let (dh_b, rand_b) = get_dh(w, BOB);
    let request = ChatRequest {
        chat_id: r.id,
        access_hash: r.access_hash,
        admin_id: r.admin_id,
        participant_id: r.participant_id,
        g_a: r.g_a.clone(),
    };
    let (chat_b, _) = Chat::from_request(&request, BOB, dh_b, 0).unwrap();
    let mut bob = Side {
        id: BOB,
        chat: chat_b,
        access_hash: r.access_hash,
        qts: model::FIRST_QTS,
        actions: Vec::new(),
        sent_ids: Vec::new(),
        first_dates: BTreeMap::new(),
    };
    let mut alice = Side {
        id: ALICE,
        chat: chat_a,
        access_hash: waiting.access_hash,
        qts: model::FIRST_QTS,
        actions: Vec::new(),
        sent_ids: Vec::new(),
        first_dates: BTreeMap::new(),
    };
    let out = bob.chat.accept(&rand_b, 0, rng).unwrap();
    let Some(Call::AcceptEncryption {
        g_b,
        key_fingerprint,
    }) = out.calls.first().cloned()
    else {
        panic!("acceptEncryption first");
    };
    let accepted = w
        .call(
            BOB,
            &functions::messages::AcceptEncryption {
                peer: peer(CHAT_ID, bob.access_hash),
                g_b: g_b.clone(),
                key_fingerprint,
            },
        )
        .unwrap();
    let enums::EncryptedChat::Chat(c) = accepted else {
        panic!("encryptedChat expected");
    };
    assert_eq!(c.g_a_or_b, req.g_a, "the acceptor sees g_a");
    assert_eq!(c.key_fingerprint, key_fingerprint);
    // Bob hears of his own acceptance too, with the same chat; for his chat (ready since
    // `accept`) it is a repeat that changes nothing.
    let ups = w.sink.take(BOB);
    assert!(
        matches!(&ups[..], [enums::Update::Encryption(types::UpdateEncryption {
            chat: enums::EncryptedChat::Chat(u), ..
        })] if *u == c),
        "{ups:?}"
    );
    let repeat = bob.chat.on_remote_update(
        &RemoteChat::Accepted {
            access_hash: c.access_hash,
            g_a_or_b: c.g_a_or_b.clone(),
            key_fingerprint: c.key_fingerprint,
        },
        0,
        rng,
    );
    assert!(repeat.calls.is_empty() && repeat.events.is_empty());
    perform(w, &mut bob, &out); // Bob's NotifyLayer

    // Alice learns about the acceptance (before Bob's first message, which is queued).
    let ups = w.sink.take(ALICE);
    let enums::Update::Encryption(types::UpdateEncryption {
        chat: enums::EncryptedChat::Chat(c),
        ..
    }) = &ups[0]
    else {
        panic!("updateEncryption(encryptedChat) expected, got {ups:?}");
    };
    assert_eq!(c.g_a_or_b, g_b);
    assert_eq!(c.key_fingerprint, key_fingerprint);
    let out = alice.chat.on_remote_update(
        &RemoteChat::Accepted {
            access_hash: c.access_hash,
            g_a_or_b: c.g_a_or_b.clone(),
            key_fingerprint: c.key_fingerprint,
        },
        0,
        rng,
    );
    assert_eq!(alice.chat.key_fingerprint(), bob.chat.key_fingerprint());
    perform(w, &mut alice, &out); // Alice's NotifyLayer
    for u in &ups[1..] {
        let enums::Update::NewEncryptedMessage(m) = u else {
            panic!("unexpected {u:?}");
        };
        deliver(w, &mut alice, &m.message, m.qts, rng);
    }
    pump(w, &mut bob, rng);
    pump(w, &mut alice, rng);
    (alice, bob)
}

#[test]
fn sign_in_and_users() {
    let w = World::new();
    let sent = w
        .call(
            ALICE,
            &functions::auth::SendCode {
                phone_number: "+9996611001".into(),
                api_id: 1,
                api_hash: "x".into(),
                settings: enums::CodeSettings::Settings(types::CodeSettings {
                    allow_flashcall: false,
                    current_number: false,
                    allow_app_hash: false,
                    allow_missed_call: false,
                    allow_firebase: false,
                    unknown_number: false,
                    logout_tokens: None,
                    token: None,
                    app_sandbox: None,
                }),
            },
        )
        .unwrap();
    let enums::auth::SentCode::Code(code) = sent else {
        panic!("sentCode");
    };
    assert_eq!(code.phone_code_hash, model::PHONE_CODE_HASH);
    let sign_in = |code: Option<&str>, hash: &str| functions::auth::SignIn {
        phone_number: "9996611001".into(),
        phone_code_hash: hash.into(),
        phone_code: code.map(str::to_owned),
        email_verification: None,
    };
    let auth = w
        .call(
            ALICE,
            &sign_in(Some(model::PHONE_CODE), model::PHONE_CODE_HASH),
        )
        .unwrap();
    let enums::auth::Authorization::Authorization(a) = auth else {
        panic!("authorization");
    };
    let enums::User::User(u) = a.user else {
        panic!("user");
    };
    assert!(u.is_self);
    assert_eq!((u.id, u.first_name.as_deref()), (ALICE, Some("Alice")));
    let e = |r: RpcError| r.message;
    assert_eq!(
        e(w.err(ALICE, &sign_in(Some("11111"), model::PHONE_CODE_HASH))),
        "PHONE_CODE_INVALID"
    );
    assert_eq!(
        e(w.err(ALICE, &sign_in(None, model::PHONE_CODE_HASH))),
        "PHONE_CODE_EMPTY"
    );
    assert_eq!(
        e(w.err(ALICE, &sign_in(Some("22222"), "nope"))),
        "PHONE_CODE_EXPIRED"
    );
    assert_eq!(
        e(w.err(BOB, &sign_in(Some("22222"), model::PHONE_CODE_HASH))),
        "PHONE_NUMBER_INVALID"
    );

    let users = w
        .call(
            ALICE,
            &functions::users::GetUsers {
                id: vec![enums::InputUser::UserSelf, input_user(BOB), input_user(42)],
            },
        )
        .unwrap();
    assert_eq!(users.len(), 3);
    assert!(matches!(&users[0], enums::User::User(u) if u.is_self && u.id == ALICE));
    assert!(matches!(&users[1], enums::User::User(u) if !u.is_self && u.id == BOB));
    assert!(matches!(&users[2], enums::User::Empty(u) if u.id == 42));
    let full = w
        .call(
            ALICE,
            &functions::users::GetFullUser {
                id: input_user(BOB),
            },
        )
        .unwrap();
    let enums::users::UserFull::Full(full) = full;
    let enums::UserFull::Full(f) = full.full_user;
    assert_eq!(f.id, BOB);
    assert_eq!(full.users.len(), 1);
    let err = w.err(ALICE, &functions::users::GetFullUser { id: input_user(42) });
    assert_eq!(err, RpcError::new(400, "USER_ID_INVALID"));

    let enums::updates::State::State(st) = w.call(ALICE, &functions::updates::GetState {}).unwrap();
    assert!(st.pts >= 1);
    assert_eq!(st.qts, model::FIRST_QTS);
    assert_eq!(st.date, (NOW_MS / 1000) as i32);
}

#[test]
fn dh_config() {
    let w = World::new();
    let (cfg, _) = get_dh(&w, ALICE);
    assert_eq!((cfg.g, cfg.version), (3, 1));
    assert_eq!(cfg.p, secret_core::dh::TELEGRAM_DH_PRIME.to_vec());
    let r = w
        .call(
            ALICE,
            &functions::messages::GetDhConfig {
                version: 1,
                random_length: 0,
            },
        )
        .unwrap();
    assert!(matches!(r, enums::messages::DhConfig::NotModified(n) if n.random.len() == 256));
    for bad in [-1, 1025] {
        let e = w.err(
            ALICE,
            &functions::messages::GetDhConfig {
                version: 0,
                random_length: bad,
            },
        );
        assert_eq!(e, RpcError::new(400, "RANDOM_LENGTH_INVALID"));
    }
}

#[test]
fn full_secret_chat_queue_and_difference() {
    let w = World::new();
    let mut rng = SeededRandom::new(1);
    let (mut alice, mut bob) = establish(&w, &mut rng);

    // Both sides announced their layer; nothing is left in flight.
    assert_eq!(w.model.relayed().len(), 2);
    assert_eq!(alice.chat.unsent().len(), 0);

    // Both send service messages; each side receives the other's, in order.
    let script_a = [typing(), ttl(5), typing()];
    let script_b = [ttl(9), typing()];
    for a in &script_a {
        let s = alice.chat.send_action(a.clone(), 0, &mut rng).unwrap();
        perform(&w, &mut alice, &s.output);
    }
    for a in &script_b {
        let s = bob.chat.send_action(a.clone(), 0, &mut rng).unwrap();
        perform(&w, &mut bob, &s.output);
    }
    pump(&w, &mut bob, &mut rng);
    pump(&w, &mut alice, &mut rng);
    assert_eq!(bob.actions, script_a.to_vec());
    assert_eq!(alice.actions, script_b.to_vec());

    let relayed = w.model.relayed();
    assert_eq!(relayed.len(), 2 + 3 + 2);
    let from_alice: Vec<i64> = relayed
        .iter()
        .filter(|r| r.sender == ALICE)
        .map(|r| r.random_id)
        .collect();
    assert_eq!(from_alice, alice.sent_ids);
    assert!(relayed.iter().all(|r| r.chat_id == CHAT_ID));
    // The TTL went through sendEncrypted, typing through sendEncryptedService.
    assert!(relayed.iter().any(|r| !r.service) && relayed.iter().any(|r| r.service));
    // The queue holds everything not acknowledged, with consecutive qts.
    let queued: Vec<i32> = w.model.queued(BOB).iter().map(|m| m.qts).collect();
    assert_eq!(queued, (2..=bob.qts).collect::<Vec<_>>());

    // Bob "disconnects": the pushes for him are lost.
    for a in [ttl(1), typing(), ttl(2)] {
        let s = alice.chat.send_action(a, 0, &mut rng).unwrap();
        perform(&w, &mut alice, &s.output);
    }
    assert_eq!(w.sink.take(BOB).len(), 3);
    let seen = bob.qts;

    let enums::updates::State::State(state) =
        w.call(BOB, &functions::updates::GetState {}).unwrap();
    assert_eq!(state.qts, seen + 3);
    // getDifference from the qts Bob has processed: acknowledges those and returns the rest.
    let d = get_difference(&w, BOB, state.pts, seen);
    let enums::updates::Difference::Difference(d) = d else {
        panic!("difference expected, got {d:?}");
    };
    assert_eq!(d.new_encrypted_messages.len(), 3);
    let enums::updates::State::State(dstate) = &d.state;
    assert_eq!(dstate.qts, seen + 3);
    for (i, m) in d.new_encrypted_messages.iter().enumerate() {
        deliver(&w, &mut bob, m, seen + 1 + i as i32, &mut rng);
    }
    assert_eq!(&bob.actions[script_a.len()..], &[ttl(1), typing(), ttl(2)]);
    assert_eq!(w.model.queued(BOB).len(), 3);

    // receivedQueue acknowledges them and returns their random_ids.
    let ids = w
        .call(
            BOB,
            &functions::messages::ReceivedQueue { max_qts: bob.qts },
        )
        .unwrap();
    assert_eq!(ids, alice.sent_ids[alice.sent_ids.len() - 3..].to_vec());
    assert!(w.model.queued(BOB).is_empty());
    let d = get_difference(&w, BOB, state.pts, bob.qts);
    assert!(matches!(d, enums::updates::Difference::Empty(_)), "{d:?}");

    // A slice when qts_limit is smaller than what is queued.
    for a in [typing(), typing()] {
        let s = alice.chat.send_action(a, 0, &mut rng).unwrap();
        perform(&w, &mut alice, &s.output);
    }
    let d = w
        .call(
            BOB,
            &functions::updates::GetDifference {
                pts: state.pts,
                pts_limit: None,
                pts_total_limit: None,
                date: 0,
                qts: bob.qts,
                qts_limit: Some(1),
            },
        )
        .unwrap();
    let enums::updates::Difference::Slice(s) = d else {
        panic!("slice expected");
    };
    assert_eq!(s.new_encrypted_messages.len(), 1);
    let enums::updates::State::State(is) = s.intermediate_state;
    assert_eq!(is.qts, bob.qts + 1);

    // Read and typing notifications.
    let ok = w
        .call(
            BOB,
            &functions::messages::ReadEncryptedHistory {
                peer: peer(CHAT_ID, bob.access_hash),
                max_date: 5,
            },
        )
        .unwrap();
    assert!(ok);
    let ok = w
        .call(
            BOB,
            &functions::messages::SetEncryptedTyping {
                peer: peer(CHAT_ID, bob.access_hash),
                typing: true,
            },
        )
        .unwrap();
    assert!(ok);
    let ups = w.sink.take(ALICE);
    assert!(matches!(&ups[..], [
        enums::Update::EncryptedMessagesRead(r),
        enums::Update::EncryptedChatTyping(t),
    ] if r.chat_id == CHAT_ID && r.max_date == 5 && t.chat_id == CHAT_ID));
}

#[test]
fn chat_updates_survive_a_disconnect() {
    let w = World::new();
    let mut rng = SeededRandom::new(2);
    let (dh, random) = get_dh(&w, ALICE);
    let (_, req, _) = Chat::request(55, ALICE, BOB, dh, &random, 0, &mut rng).unwrap();
    w.call(
        ALICE,
        &functions::messages::RequestEncryption {
            user_id: input_user(BOB),
            random_id: 55,
            g_a: req.g_a.clone(),
        },
    )
    .unwrap();
    w.sink.take(BOB); // lost
    let d = get_difference(&w, BOB, 1, model::FIRST_QTS);
    let enums::updates::Difference::Difference(d) = d else {
        panic!("difference expected");
    };
    assert!(
        matches!(&d.other_updates[..], [enums::Update::Encryption(u)]
        if matches!(&u.chat, enums::EncryptedChat::Requested(r) if r.id == 55 && r.g_a == req.g_a))
    );
    assert_eq!(d.users.len(), 2);
    let enums::updates::State::State(s) = d.state;
    // Passing the new pts acknowledges it.
    let d = get_difference(&w, BOB, s.pts, s.qts);
    assert!(matches!(d, enums::updates::Difference::Empty(_)));
}

fn g_a(rng: &mut SeededRandom) -> Vec<u8> {
    let cfg = DhConfig::validate(3, &secret_core::dh::TELEGRAM_DH_PRIME, 1).unwrap();
    dh::generate_key_pair(&cfg, rng, &[]).unwrap().public
}

#[test]
fn request_and_accept_errors() {
    let w = World::new();
    let mut rng = SeededRandom::new(3);
    let good = g_a(&mut rng);
    let req = |user: i64, random_id: i32, g_a: Vec<u8>| functions::messages::RequestEncryption {
        user_id: input_user(user),
        random_id,
        g_a,
    };
    let name = |e: RpcError| e.message;
    assert_eq!(
        name(w.err(ALICE, &req(42, 1, good.clone()))),
        "USER_ID_INVALID"
    );
    assert_eq!(
        name(w.err(ALICE, &req(ALICE, 1, good.clone()))),
        "USER_ID_INVALID"
    );
    assert_eq!(name(w.err(ALICE, &req(BOB, 1, vec![1]))), "DH_G_A_INVALID");
    assert_eq!(
        name(w.err(ALICE, &req(BOB, 1, vec![0xff; 256]))),
        "DH_G_A_INVALID"
    );
    w.model.block(CAROL, ALICE).unwrap();
    assert_eq!(
        w.err(ALICE, &req(CAROL, 1, good.clone())),
        RpcError::new(403, "USER_IS_BLOCKED")
    );
    assert_eq!(
        name(w.err(CAROL, &req(ALICE, 1, good.clone()))),
        "YOU_BLOCKED_USER"
    );
    assert!(w.model.snapshot().chats.is_empty());

    let waiting = w.call(ALICE, &req(BOB, 10, good.clone())).unwrap();
    let enums::EncryptedChat::Waiting(c) = waiting else {
        panic!()
    };
    // A retry answers the same chat; another use of the id is refused.
    let again = w.call(ALICE, &req(BOB, 10, good.clone())).unwrap();
    assert!(
        matches!(again, enums::EncryptedChat::Waiting(ref d) if d.access_hash == c.access_hash)
    );
    assert_eq!(
        name(w.err(BOB, &req(ALICE, 10, good.clone()))),
        "RANDOM_ID_DUPLICATE"
    );

    let accept =
        |chat_id: i32, access_hash: i64, g_b: Vec<u8>| functions::messages::AcceptEncryption {
            peer: peer(chat_id, access_hash),
            g_b,
            key_fingerprint: 1234,
        };
    assert_eq!(
        name(w.err(BOB, &accept(11, c.access_hash, good.clone()))),
        "CHAT_ID_INVALID"
    );
    assert_eq!(
        name(w.err(BOB, &accept(10, c.access_hash ^ 1, good.clone()))),
        "CHAT_ID_INVALID"
    );
    assert_eq!(
        name(w.err(CAROL, &accept(10, c.access_hash, good.clone()))),
        "CHAT_ID_INVALID"
    );
    assert_eq!(
        name(w.err(ALICE, &accept(10, c.access_hash, good.clone()))),
        "CHAT_ID_INVALID"
    );
    assert_eq!(
        name(w.err(BOB, &accept(10, c.access_hash, vec![2]))),
        "DH_G_B_INVALID"
    );
    // Sending before acceptance.
    let send = |chat_id: i32, access_hash: i64, random_id: i64, data: Vec<u8>| {
        functions::messages::SendEncryptedService {
            peer: peer(chat_id, access_hash),
            random_id,
            data,
        }
    };
    assert_eq!(
        name(w.err(ALICE, &send(10, c.access_hash, 1, vec![0; 40]))),
        "ENCRYPTION_DECLINED"
    );
    w.call(BOB, &accept(10, c.access_hash, good.clone()))
        .unwrap();
    assert_eq!(
        name(w.err(BOB, &accept(10, c.access_hash, good.clone()))),
        "ENCRYPTION_ALREADY_ACCEPTED"
    );

    // Discard: both sides hear of it; later calls are refused.
    w.sink.take(ALICE);
    w.sink.take(BOB);
    let discard = |chat_id: i32| functions::messages::DiscardEncryption {
        delete_history: true,
        chat_id,
    };
    assert_eq!(name(w.err(ALICE, &discard(0))), "CHAT_ID_EMPTY");
    assert_eq!(name(w.err(ALICE, &discard(99))), "ENCRYPTION_ID_INVALID");
    assert_eq!(name(w.err(CAROL, &discard(10))), "ENCRYPTION_ID_INVALID");
    assert!(w.call(BOB, &discard(10)).unwrap());
    for who in [ALICE, BOB] {
        let ups = w.sink.take(who);
        assert!(matches!(&ups[..], [enums::Update::Encryption(u)]
            if matches!(&u.chat, enums::EncryptedChat::Discarded(d) if d.id == 10 && d.history_deleted)));
    }
    assert_eq!(
        name(w.err(ALICE, &discard(10))),
        "ENCRYPTION_ALREADY_DECLINED"
    );
    assert_eq!(
        name(w.err(BOB, &accept(10, c.access_hash, good.clone()))),
        "ENCRYPTION_ALREADY_DECLINED"
    );
    assert_eq!(
        name(w.err(ALICE, &send(10, c.access_hash, 1, vec![0; 40]))),
        "ENCRYPTION_DECLINED"
    );

    // Declining a request that was never accepted.
    let enums::EncryptedChat::Waiting(c2) = w.call(ALICE, &req(BOB, 20, good.clone())).unwrap()
    else {
        panic!()
    };
    assert!(w.call(BOB, &discard(20)).unwrap());
    assert_eq!(
        name(w.err(BOB, &accept(20, c2.access_hash, good))),
        "ENCRYPTION_ALREADY_DECLINED"
    );
}

#[test]
fn send_errors_and_duplicates() {
    let mut w = World::new();
    let mut rng = SeededRandom::new(4);
    let (mut alice, mut bob) = establish(&w, &mut rng);
    let name = |e: RpcError| e.message;
    let svc = |access_hash: i64, random_id: i64, data: Vec<u8>| {
        functions::messages::SendEncryptedService {
            peer: peer(CHAT_ID, access_hash),
            random_id,
            data,
        }
    };
    let h = alice.access_hash;
    assert_eq!(
        name(w.err(ALICE, &svc(h ^ 1, 1, vec![0; 40]))),
        "CHAT_ID_INVALID"
    );
    assert_eq!(
        name(w.err(CAROL, &svc(h, 1, vec![0; 40]))),
        "CHAT_ID_INVALID"
    );
    let other = functions::messages::SendEncrypted {
        silent: false,
        peer: peer(CHAT_ID + 1, h),
        random_id: 1,
        data: vec![0; 40],
    };
    assert_eq!(name(w.err(ALICE, &other)), "CHAT_ID_INVALID");
    for len in [0, 8, 23, 25, 39, 41] {
        assert_eq!(
            name(w.err(ALICE, &svc(h, 1, vec![0; len]))),
            "DATA_INVALID",
            "len {len}"
        );
    }
    let e = w.err(ALICE, &svc(h, 1, vec![0; model::MAX_DATA_LEN + 16]));
    assert_eq!(name(e), "DATA_TOO_LONG");
    // The fingerprint is not checked (see the module docs): garbage of a valid length goes
    // through, and the receiver drops it.
    let before = w.model.relayed().len();
    w.call(ALICE, &svc(h, 5, vec![0xAB; 40])).unwrap();
    assert_eq!(w.model.relayed().len(), before + 1);
    w.sink.take(BOB);
    bob.qts += 1;

    // A repeated random_id (a retry whose answer was lost) gets the first date and is relayed
    // again with the next qts; the receiving chat drops the true duplicate by its seq numbers.
    let s = alice.chat.send_action(typing(), 0, &mut rng).unwrap();
    let t = s.output.transmits().next().unwrap().clone();
    let enums::messages::SentEncryptedMessage::Message(first) =
        w.call(ALICE, &svc(h, t.random_id, t.data.clone())).unwrap()
    else {
        panic!()
    };
    let qts_after_first = w.model.qts(BOB);
    let relayed = w.model.relayed().len();
    w.now_ms += 5_000;
    let again = w.call(ALICE, &svc(h, t.random_id, t.data.clone())).unwrap();
    assert!(
        matches!(again, enums::messages::SentEncryptedMessage::Message(ref m) if m.date == first.date)
    );
    assert_eq!(w.model.qts(BOB), qts_after_first + 1);
    let log = w.model.relayed();
    assert_eq!(log.len(), relayed + 1);
    let (a, b) = (&log[relayed - 1], &log[relayed]);
    assert_eq!((a.random_id, b.random_id), (t.random_id, t.random_id));
    assert_eq!((&a.data, &b.data), (&t.data, &t.data));
    assert_eq!((a.qts, b.qts), (qts_after_first, qts_after_first + 1));
    assert_eq!((a.date, b.date), (first.date, first.date + 5));
    let queued: Vec<(i32, i64)> = w
        .model
        .queued(BOB)
        .iter()
        .map(|m| (m.qts, m.random_id))
        .collect();
    assert!(queued.ends_with(&[
        (qts_after_first, t.random_id),
        (qts_after_first + 1, t.random_id)
    ]));
    let ups = w.sink.take(BOB);
    assert_eq!(ups.len(), 2);
    let mut outcomes = Vec::new();
    for u in &ups {
        let enums::Update::NewEncryptedMessage(m) = u else {
            panic!("{u:?}")
        };
        assert_eq!(m.qts, bob.qts + 1);
        bob.qts = m.qts;
        let (chat_id, incoming) = tglink::convert::incoming_encrypted(&m.message);
        assert_eq!((chat_id, incoming.random_id), (CHAT_ID, t.random_id));
        let r = bob.chat.receive(&incoming, 0, &mut rng);
        if let Ok(o) = &r {
            perform(&w, &mut bob, o);
        }
        outcomes.push(r.map(|o| o.events.len()));
    }
    assert_eq!(
        outcomes,
        vec![
            Ok(1),
            Err(ReceiveError::Duplicate {
                out_seq_no: t.out_seq_no
            })
        ]
    );
    // The bytes are not compared with the first send's: a client that reused a random_id for
    // other bytes would see them relayed (and the peer drop them); the tests of the clients
    // check that each random_id carries one byte string.
    w.call(ALICE, &svc(h, t.random_id, vec![1; 40])).unwrap();
    assert_eq!(w.model.relayed().last().unwrap().data, vec![1; 40]);
    w.sink.take(BOB);
    bob.qts += 1;
    // The same random_id in another chat of the sender is refused.
    let enums::EncryptedChat::Waiting(other) = w
        .call(
            ALICE,
            &functions::messages::RequestEncryption {
                user_id: input_user(CAROL),
                random_id: 888,
                g_a: g_a(&mut rng),
            },
        )
        .unwrap()
    else {
        panic!()
    };
    w.call(
        CAROL,
        &functions::messages::AcceptEncryption {
            peer: peer(888, other.access_hash),
            g_b: g_a(&mut rng),
            key_fingerprint: 1,
        },
    )
    .unwrap();
    let elsewhere = functions::messages::SendEncryptedService {
        peer: peer(888, other.access_hash),
        random_id: t.random_id,
        data: t.data.clone(),
    };
    assert_eq!(name(w.err(ALICE, &elsewhere)), "RANDOM_ID_DUPLICATE");
    assert!(w.model.queued(CAROL).is_empty());
    w.sink.take(ALICE);
    w.sink.take(CAROL);

    // Blocking.
    w.model.block(BOB, ALICE).unwrap();
    let s = alice.chat.send_action(typing(), 0, &mut rng).unwrap();
    let t = s.output.transmits().next().unwrap().clone();
    assert_eq!(
        w.err(ALICE, &svc(h, t.random_id, t.data.clone())),
        RpcError::new(403, "USER_IS_BLOCKED")
    );
    assert_eq!(
        name(w.err(BOB, &svc(bob.access_hash, 77, vec![0; 40]))),
        "YOU_BLOCKED_USER"
    );
    w.model.unblock(BOB, ALICE).unwrap();
    w.call(ALICE, &svc(h, t.random_id, t.data.clone())).unwrap();
    pump(&w, &mut bob, &mut rng);
    assert_eq!(bob.actions, vec![typing(), typing()]);

    // Unknown methods and garbage.
    let e = w.raw(
        ALICE,
        &functions::messages::ReportEncryptedSpam {
            peer: peer(CHAT_ID, h),
        }
        .to_bytes(),
    );
    assert_eq!(e, Err(RpcError::new(400, "METHOD_NOT_IMPLEMENTED")));
    let e = w.raw(
        ALICE,
        &functions::messages::SendEncryptedService::CONSTRUCTOR_ID.to_le_bytes(),
    );
    assert_eq!(e, Err(RpcError::new(400, "INPUT_FETCH_FAIL")));
    let e = w.raw(9999, &functions::updates::GetState {}.to_bytes());
    assert_eq!(e, Err(RpcError::new(401, "AUTH_KEY_UNREGISTERED")));
    let e = w.err(BOB, &functions::messages::ReceivedQueue { max_qts: -1 });
    assert_eq!(name(e), "MAX_QTS_INVALID");
}

/// The receiving chat loses a delivered message (its client took it from the server and
/// acknowledged it, but the chat never saw it), gets the next one, and asks for the hole with a
/// Resend; the sender answers with the stored query unchanged (same random_id, same bytes),
/// which the model relays again and which fills the hole.
#[test]
fn a_resend_answer_repeats_the_random_id_and_fills_the_gap() {
    let mut w = World::new();
    let mut rng = SeededRandom::new(8);
    let (mut alice, mut bob) = establish(&w, &mut rng);
    let start = w.model.relayed().len();
    let sent: Vec<_> = [ttl(1), ttl(2), typing()]
        .into_iter()
        .map(|a| {
            let s = alice.chat.send_action(a, 0, &mut rng).unwrap();
            let t = s.output.transmits().next().unwrap().clone();
            perform(&w, &mut alice, &s.output);
            t
        })
        .collect();
    let ups = w.sink.take(BOB);
    let msgs: Vec<_> = ups
        .iter()
        .map(|u| match u {
            enums::Update::NewEncryptedMessage(m) => m.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(msgs.len(), 3);
    // The first is lost before Bob's chat processes it, and acknowledged: the server no
    // longer has it for him.
    let lost_qts = msgs[0].qts;
    w.call(
        BOB,
        &functions::messages::ReceivedQueue { max_qts: lost_qts },
    )
    .unwrap();
    bob.qts = lost_qts;
    let queued_before: Vec<i32> = w.model.queued(BOB).iter().map(|m| m.qts).collect();
    assert_eq!(queued_before, vec![msgs[1].qts, msgs[2].qts]);
    // The next two arrive; Bob's chat holds them and asks for the hole (one Resend).
    w.now_ms += 7_000;
    for m in &msgs[1..] {
        deliver(&w, &mut bob, &m.message, m.qts, &mut rng);
    }
    assert!(bob.actions.is_empty(), "{:?}", bob.actions);
    let resends = w.model.relayed()[start + 3..].to_vec();
    assert_eq!(resends.len(), 1, "one Resend for the hole");
    assert_eq!(resends[0].sender, BOB);

    // Alice answers it from her outbox: the first message's query, unchanged.
    w.now_ms += 7_000;
    pump(&w, &mut alice, &mut rng);
    let log = w.model.relayed();
    let again: Vec<_> = log[start + 4..].iter().collect();
    assert_eq!(again.len(), 1, "{again:?}");
    let (first, repeat) = (&log[start], again[0]);
    assert_eq!(
        (first.random_id, repeat.random_id),
        (sent[0].random_id, sent[0].random_id)
    );
    assert_eq!(first.data, sent[0].data);
    assert_eq!(repeat.data, first.data, "the same bytes");
    assert_eq!(repeat.service, first.service);
    assert_eq!((repeat.sender, repeat.recipient), (ALICE, BOB));
    // A new delivery: Bob's next qts, today's date; Alice was answered the first date (checked
    // by `perform`).
    assert!(repeat.qts > msgs[2].qts);
    assert_eq!(repeat.date, first.date + 14);
    assert_eq!(
        alice
            .sent_ids
            .iter()
            .filter(|&&r| r == sent[0].random_id)
            .count(),
        2
    );
    assert_eq!(
        w.model.queued(BOB).last().unwrap().random_id,
        sent[0].random_id
    );

    // It reaches Bob through the model and fills the hole: everything, in order, once.
    pump(&w, &mut bob, &mut rng);
    assert_eq!(bob.actions, vec![ttl(1), ttl(2), typing()]);
    assert_eq!(bob.chat.state().seq().resend_request(), None);
    // Each (sender, random_id) carried one byte string, however often it was relayed.
    let mut bytes: BTreeMap<(AccountId, i64), &Vec<u8>> = BTreeMap::new();
    for r in &log {
        assert_eq!(
            *bytes.entry((r.sender, r.random_id)).or_insert(&r.data),
            &r.data
        );
    }
    assert_eq!(bytes.len(), log.len() - 1);
}

/// An acceptor whose `acceptEncryption` ran but whose answer was lost: the retry is
/// `ENCRYPTION_ALREADY_ACCEPTED`, and its own update queue tells it of the acceptance with the
/// answer's `g_a_or_b` and fingerprint.
#[test]
fn an_acceptor_whose_answer_was_lost_learns_of_the_acceptance() {
    let w = World::new();
    let mut rng = SeededRandom::new(9);
    let enums::updates::State::State(bob0) = w.call(BOB, &functions::updates::GetState {}).unwrap();
    let (dh, random) = get_dh(&w, ALICE);
    let (mut chat_a, req, _) = Chat::request(66, ALICE, BOB, dh, &random, 0, &mut rng).unwrap();
    w.call(
        ALICE,
        &functions::messages::RequestEncryption {
            user_id: input_user(BOB),
            random_id: 66,
            g_a: req.g_a.clone(),
        },
    )
    .unwrap();
    let ups = w.sink.take(BOB);
    let [
        enums::Update::Encryption(types::UpdateEncryption {
            chat: enums::EncryptedChat::Requested(r),
            ..
        }),
    ] = &ups[..]
    else {
        panic!("{ups:?}")
    };
    let (dh_b, rand_b) = get_dh(&w, BOB);
    let request = ChatRequest {
        chat_id: r.id,
        access_hash: r.access_hash,
        admin_id: r.admin_id,
        participant_id: r.participant_id,
        g_a: r.g_a.clone(),
    };
    let (mut chat_b, _) = Chat::from_request(&request, BOB, dh_b, 0).unwrap();
    let out = chat_b.accept(&rand_b, 0, &mut rng).unwrap();
    let Some(Call::AcceptEncryption {
        g_b,
        key_fingerprint,
    }) = out.calls.first().cloned()
    else {
        panic!("acceptEncryption first");
    };
    let accept = functions::messages::AcceptEncryption {
        peer: peer(66, r.access_hash),
        g_b: g_b.clone(),
        key_fingerprint,
    };
    // The call runs; its answer is lost (ignored here), and so is the push (Bob is offline).
    let _lost = w.call(BOB, &accept).unwrap();
    let pushed = w.sink.take(BOB);
    let to_alice = w.sink.take(ALICE);
    // The retry: already accepted; nothing changes, nothing is pushed.
    let before = w.model.snapshot();
    assert_eq!(
        w.err(BOB, &accept),
        RpcError::new(400, "ENCRYPTION_ALREADY_ACCEPTED")
    );
    assert_eq!(w.model.snapshot(), before);
    assert!(w.sink.take(BOB).is_empty() && w.sink.take(ALICE).is_empty());

    // Bob's queue holds his own acceptance: what was pushed is what getDifference returns.
    let expect = |u: &enums::Update| {
        let enums::Update::Encryption(types::UpdateEncryption {
            chat: enums::EncryptedChat::Chat(c),
            ..
        }) = u
        else {
            panic!("updateEncryption(encryptedChat) expected, got {u:?}");
        };
        assert_eq!((c.id, c.admin_id, c.participant_id), (66, ALICE, BOB));
        assert_eq!(c.access_hash, r.access_hash);
        assert_eq!(c.g_a_or_b, req.g_a, "the acceptor sees g_a");
        assert_eq!(c.key_fingerprint, key_fingerprint);
        c.clone()
    };
    assert_eq!(pushed.len(), 1);
    let from_push = expect(&pushed[0]);
    // Bob saw the request (pts + 1); his acceptance is the next pts.
    let d = get_difference(&w, BOB, bob0.pts + 1, bob0.qts);
    let enums::updates::Difference::Difference(d) = d else {
        panic!("difference expected, got {d:?}");
    };
    assert_eq!(d.other_updates.len(), 1);
    assert_eq!(expect(&d.other_updates[0]), from_push);
    let enums::updates::State::State(st) = &d.state;
    assert_eq!(st.pts, bob0.pts + 2);
    // For Bob's chat (ready since `accept`, with the same key) it is a repeat: no call, no event.
    let fp = chat_b.key_fingerprint().unwrap().to_i64();
    assert_eq!(fp, key_fingerprint);
    let o = chat_b.on_remote_update(
        &RemoteChat::Accepted {
            access_hash: from_push.access_hash,
            g_a_or_b: from_push.g_a_or_b.clone(),
            key_fingerprint: from_push.key_fingerprint,
        },
        0,
        &mut rng,
    );
    assert!(o.calls.is_empty() && o.events.is_empty());
    assert_eq!(chat_b.status(), secret_core::chat::Status::Ready);
    // Passing the new pts acknowledges it.
    let d = get_difference(&w, BOB, st.pts, st.qts);
    assert!(matches!(d, enums::updates::Difference::Empty(_)), "{d:?}");
    // The creator completes from its own update, with the same key.
    let [
        enums::Update::Encryption(types::UpdateEncryption {
            chat: enums::EncryptedChat::Chat(c),
            ..
        }),
    ] = &to_alice[..]
    else {
        panic!("{to_alice:?}")
    };
    assert_eq!((&c.g_a_or_b, c.key_fingerprint), (&g_b, key_fingerprint));
    let _ = chat_a.on_remote_update(
        &RemoteChat::Accepted {
            access_hash: c.access_hash,
            g_a_or_b: c.g_a_or_b.clone(),
            key_fingerprint: c.key_fingerprint,
        },
        0,
        &mut rng,
    );
    assert_eq!(chat_a.key_fingerprint(), chat_b.key_fingerprint());

    // A discarded chat: ENCRYPTION_ALREADY_DECLINED.
    assert!(
        w.call(
            ALICE,
            &functions::messages::DiscardEncryption {
                delete_history: false,
                chat_id: 66,
            },
        )
        .unwrap()
    );
    assert_eq!(
        w.err(BOB, &accept),
        RpcError::new(400, "ENCRYPTION_ALREADY_DECLINED")
    );
}

#[test]
fn persistence_across_reopen() {
    let dir = std::env::temp_dir().join(format!("tgsim-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("world.bin");
    let _ = std::fs::remove_file(&path);
    let w = World::with_path(Some(path.clone()));
    let mut rng = SeededRandom::new(5);
    let (mut alice, _bob) = establish(&w, &mut rng);
    let s = alice.chat.send_action(typing(), 0, &mut rng).unwrap();
    perform(&w, &mut alice, &s.output);
    let before = w.model.snapshot();
    let queued = w.model.queued(BOB);
    assert!(!queued.is_empty());

    // "kill -9": drop nothing explicitly, just read the file as a new process would.
    let sink = Arc::new(Sink::default());
    let reopened = Model::open(sink.clone(), &path).unwrap();
    assert_eq!(reopened.snapshot(), before);
    assert_eq!(
        reopened.chat(CHAT_ID).unwrap().status,
        model::ChatStatus::Accepted
    );
    assert_eq!(reopened.queued(BOB), queued);
    assert_eq!(reopened.qts(BOB), w.model.qts(BOB));
    assert_eq!(reopened.relayed(), w.model.relayed());

    // The reopened world keeps working: the queue comes back through getDifference, and the
    // acknowledgement is persisted too.
    let w2 = World {
        model: reopened,
        sink,
        now_ms: NOW_MS,
    };
    let d = get_difference(&w2, BOB, 1, model::FIRST_QTS);
    let enums::updates::Difference::Difference(d) = d else {
        panic!("difference expected");
    };
    assert_eq!(d.new_encrypted_messages.len(), queued.len());
    let last = queued.last().unwrap().qts;
    let ids = w2
        .call(BOB, &functions::messages::ReceivedQueue { max_qts: last })
        .unwrap();
    assert_eq!(ids, queued.iter().map(|m| m.random_id).collect::<Vec<_>>());
    let again = Model::open(Arc::new(Sink::default()), &path).unwrap();
    assert!(again.queued(BOB).is_empty());
    assert_eq!(again.qts(BOB), last);

    // A damaged file is refused, not silently replaced.
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(Model::open(Arc::new(Sink::default()), &path).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The password proof grammers (a client nobody here wrote) computes for `password`.
fn srp_proof(w: &World, who: AccountId, password: &str) -> functions::auth::CheckPassword {
    let enums::account::Password::Password(p) =
        w.call(who, &functions::account::GetPassword {}).unwrap();
    let Some(enums::PasswordKdfAlgo::Sha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow(algo)) =
        p.current_algo
    else {
        panic!("the current algorithm expected");
    };
    assert!(grammers_crypto::two_factor_auth::check_p_and_g(
        &algo.p, &algo.g
    ));
    let (m1, g_a) = grammers_crypto::two_factor_auth::calculate_2fa(
        &algo.salt1,
        &algo.salt2,
        &algo.p,
        &algo.g,
        p.srp_b.unwrap(),
        p.secure_random,
        password,
    );
    functions::auth::CheckPassword {
        password: enums::InputCheckPasswordSrp::Srp(types::InputCheckPasswordSrp {
            srp_id: p.srp_id.unwrap(),
            a: g_a.to_vec(),
            m1: m1.to_vec(),
        }),
    }
}

#[test]
fn two_step_password_and_log_out() {
    let w = World::new();
    let mut rng = SeededRandom::new(11);
    let (_alice, _bob) = establish(&w, &mut rng);
    let sign_in = functions::auth::SignIn {
        phone_number: "9996611001".into(),
        phone_code_hash: model::PHONE_CODE_HASH.into(),
        phone_code: Some(model::PHONE_CODE.into()),
        email_verification: None,
    };
    let e = |r: RpcError| (r.code, r.message);
    // No password: getPassword says so, checkPassword has nothing to check.
    let enums::account::Password::Password(none) =
        w.call(ALICE, &functions::account::GetPassword {}).unwrap();
    assert!(!none.has_password && none.current_algo.is_none() && none.srp_b.is_none());
    assert_eq!(none.secure_random.len(), 256);

    w.model
        .set_password(ALICE, Some(("hunter2", "pets")))
        .unwrap();
    assert_eq!(
        e(w.err(ALICE, &sign_in)),
        (401, "SESSION_PASSWORD_NEEDED".into())
    );
    let enums::account::Password::Password(p) =
        w.call(ALICE, &functions::account::GetPassword {}).unwrap();
    assert!(p.has_password);
    assert_eq!(p.hint.as_deref(), Some("pets"));
    let wrong = srp_proof(&w, ALICE, "hunter3");
    assert_eq!(
        e(w.err(ALICE, &wrong)),
        (400, "PASSWORD_HASH_INVALID".into())
    );
    // A proof for an older round is refused once a new round started.
    let stale = srp_proof(&w, ALICE, "hunter2");
    let _newer = srp_proof(&w, ALICE, "hunter2");
    assert_eq!(e(w.err(ALICE, &stale)), (400, "SRP_ID_INVALID".into()));
    let right = srp_proof(&w, ALICE, "hunter2");
    let enums::auth::Authorization::Authorization(a) = w.call(ALICE, &right).unwrap() else {
        panic!("authorization");
    };
    assert!(matches!(a.user, enums::User::User(u) if u.id == ALICE && u.is_self));

    // Log out: the chat is discarded and Bob is told; Alice's key answers only login calls.
    let _ = w.sink.take(BOB);
    let enums::auth::LoggedOut::Out(_) = w.call(ALICE, &functions::auth::LogOut {}).unwrap();
    assert!(matches!(
        w.model.chat(CHAT_ID).unwrap().status,
        model::ChatStatus::Discarded {
            history_deleted: false
        }
    ));
    let bob = w.sink.take(BOB);
    assert!(
        matches!(bob.as_slice(), [enums::Update::Encryption(u)] if matches!(&u.chat, enums::EncryptedChat::Discarded(d) if d.id == CHAT_ID)),
        "{bob:?}"
    );
    assert!(w.sink.take(ALICE).is_empty());
    for denied in [
        w.raw(ALICE, &functions::updates::GetState {}.to_bytes()),
        w.raw(ALICE, &functions::auth::LogOut {}.to_bytes()),
        // The password alone does not sign a logged-out key in: the code comes first.
        w.raw(ALICE, &srp_proof(&w, ALICE, "hunter2").to_bytes()),
    ] {
        assert_eq!(
            denied.map(drop).map_err(e),
            Err((401, "AUTH_KEY_UNREGISTERED".into()))
        );
    }
    // A chat Bob requests now is not pushed to the logged-out device.
    w.call(
        BOB,
        &functions::messages::RequestEncryption {
            user_id: input_user(ALICE),
            random_id: 4242,
            g_a: g_a(&mut rng),
        },
    )
    .unwrap();
    assert!(w.sink.take(ALICE).is_empty());

    // Code, then password: signed in again.
    assert_eq!(
        e(w.err(ALICE, &sign_in)),
        (401, "SESSION_PASSWORD_NEEDED".into())
    );
    w.call(ALICE, &srp_proof(&w, ALICE, "hunter2")).unwrap();
    w.call(ALICE, &functions::updates::GetState {}).unwrap();

    // Without a password, the code alone signs a logged-out key in again.
    w.call(ALICE, &functions::auth::LogOut {}).unwrap();
    w.model.set_password(ALICE, None).unwrap();
    w.call(ALICE, &sign_in).unwrap();
    w.call(ALICE, &functions::updates::GetState {}).unwrap();
    assert_eq!(e(w.err(ALICE, &right)), (400, "PASSWORD_EMPTY".into()));
}

#[test]
fn a_version_1_state_file_is_read() {
    let w = World::new();
    let mut rng = SeededRandom::new(3);
    let _ = establish(&w, &mut rng);
    let world = w.model.snapshot();
    assert!(world.logins.is_empty());
    let v2 = model::encode_world(&world).unwrap();
    // Version 1 is the same body without the (empty) logins map: one byte, its length 0.
    assert_eq!(v2.last(), Some(&0));
    let body = &v2[16..v2.len() - 1];
    let mut v1 = v2[..8].to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    v1.extend_from_slice(body);
    assert_eq!(model::decode_world(&v1).unwrap(), world);
    let mut v3 = v2.clone();
    v3[8] = 3;
    assert!(model::decode_world(&v3).is_err());
}
