//! Helpers shared by the chat tests: a two-party setup and a store that persists exactly what
//! each Output says, through the real record encoding (postcard).
#![allow(dead_code)]

use std::collections::BTreeMap;

use secret_core::chat::{
    Call, Chat, ChatRequest, ChatState, Event, OutboxEntry, Output, RemoteChat,
};
use secret_core::dh::{DhConfig, TELEGRAM_DH_PRIME};
use secret_core::rand::SeededRandom;

pub const CREATOR_ID: i64 = 1001;
pub const ACCEPTOR_ID: i64 = 2002;
pub const CHAT_ID: i32 = 4242;

pub fn dh_config() -> DhConfig {
    DhConfig::validate(3, &TELEGRAM_DH_PRIME, 12).expect("the Telegram prime validates")
}

/// What a daemon would have stored for one chat.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Store {
    pub state: Vec<u8>,
    pub outbox: BTreeMap<u32, Vec<u8>>,
}

impl Store {
    pub fn persist(&mut self, chat: &Chat, out: &Output) {
        if out.state_changed {
            self.state = postcard::to_stdvec(chat.state()).expect("state encodes");
        }
        for e in &out.outbox_put {
            self.outbox
                .insert(e.out_raw, postcard::to_stdvec(e).expect("entry encodes"));
        }
        for k in &out.outbox_remove {
            self.outbox.remove(k);
        }
    }

    pub fn restore(&self) -> Chat {
        let state: ChatState = postcard::from_bytes(&self.state).expect("state decodes");
        let outbox: Vec<OutboxEntry> = self
            .outbox
            .values()
            .map(|b| postcard::from_bytes(b).expect("entry decodes"))
            .collect();
        Chat::restore(state, outbox).expect("restores")
    }
}

/// Two ready chats (creator, acceptor), their stores, and the calls each side's setup produced.
pub struct Pair {
    pub a: Chat,
    pub b: Chat,
    pub store_a: Store,
    pub store_b: Store,
    pub rng: SeededRandom,
    /// Calls made during setup: (side, call).
    pub setup_calls: Vec<(usize, Call)>,
    pub setup_events: Vec<(usize, Event)>,
}

pub fn ready_pair(seed: u64) -> Pair {
    let mut rng = SeededRandom::new(seed);
    let dh = dh_config();
    let mut store_a = Store::default();
    let mut store_b = Store::default();
    let mut setup_calls = Vec::new();
    let mut setup_events = Vec::new();
    let (mut a, req, out) = Chat::request(
        CHAT_ID,
        CREATOR_ID,
        ACCEPTOR_ID,
        dh.clone(),
        &[7u8; 256],
        0,
        &mut rng,
    )
    .expect("request");
    store_a.persist(&a, &out);
    let r = a.on_remote_update(&RemoteChat::Waiting { access_hash: 99 }, 0, &mut rng);
    store_a.persist(&a, &r);
    let request = ChatRequest {
        chat_id: req.random_id,
        access_hash: 99,
        admin_id: CREATOR_ID,
        participant_id: ACCEPTOR_ID,
        g_a: req.g_a.clone(),
    };
    let (mut b, out) = Chat::from_request(&request, ACCEPTOR_ID, dh, 0).expect("from_request");
    store_b.persist(&b, &out);
    let out = b.accept(&[9u8; 256], 0, &mut rng).expect("accept");
    store_b.persist(&b, &out);
    let mut accepted = None;
    for c in &out.calls {
        if let Call::AcceptEncryption {
            g_b,
            key_fingerprint,
        } = c
        {
            accepted = Some((g_b.clone(), *key_fingerprint));
        }
        setup_calls.push((1, c.clone()));
    }
    setup_events.extend(out.events.into_iter().map(|e| (1, e)));
    let (g_b, fp) = accepted.expect("acceptEncryption call");
    let out = a.on_remote_update(
        &RemoteChat::Accepted {
            access_hash: 99,
            g_a_or_b: g_b,
            key_fingerprint: fp,
        },
        0,
        &mut rng,
    );
    store_a.persist(&a, &out);
    setup_calls.extend(out.calls.iter().cloned().map(|c| (0, c)));
    setup_events.extend(out.events.into_iter().map(|e| (0, e)));
    Pair {
        a,
        b,
        store_a,
        store_b,
        rng,
        setup_calls,
        setup_events,
    }
}
