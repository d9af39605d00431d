//! Helpers shared by the chat tests: a two-party setup and a store that persists exactly what
//! each Output says, through the real record encoding (postcard).
#![allow(dead_code)]

use std::collections::BTreeMap;

use secret_core::chat::{
    Call, Chat, ChatRequest, ChatState, Event, OutboxEntry, Output, QueuedMessage, RemoteChat,
};
use secret_core::dh::{DhConfig, TELEGRAM_DH_PRIME};
use secret_core::rand::SeededRandom;
use secret_core::record;

pub const CREATOR_ID: i64 = 1001;
pub const ACCEPTOR_ID: i64 = 2002;
pub const CHAT_ID: i32 = 4242;

pub fn dh_config() -> DhConfig {
    DhConfig::validate(3, &TELEGRAM_DH_PRIME, 12).expect("the Telegram prime validates")
}

/// What a daemon would have stored for one chat: each record through the real record encoding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Store {
    pub auth: Vec<u8>,
    pub config: Vec<u8>,
    pub pfs: Vec<u8>,
    pub seq: Vec<u8>,
    pub outbox: BTreeMap<u32, Vec<u8>>,
    pub gap: BTreeMap<u32, Vec<u8>>,
}

impl Store {
    /// Applies an output as a daemon does, then checks that what is stored is exactly the live
    /// chat: a record changed without being named in `changed` (or an entry not put) fails here.
    pub fn persist(&mut self, chat: &Chat, out: &Output) {
        let st = chat.state();
        let enc = |e: Result<Vec<u8>, record::RecordError>| e.expect("record encodes");
        if out.changed.auth {
            self.auth = enc(record::encode(st.auth()));
        }
        if out.changed.config {
            self.config = enc(record::encode(st.config()));
        }
        if out.changed.pfs {
            self.pfs = enc(record::encode(st.pfs()));
        }
        if out.changed.seq {
            self.seq = enc(record::encode(st.seq()));
        }
        for e in &out.outbox_put {
            assert!(
                !out.outbox_remove.contains(&e.out_raw),
                "put and remove overlap"
            );
            self.outbox.insert(e.out_raw, enc(record::encode(e)));
        }
        for k in &out.outbox_remove {
            self.outbox.remove(k);
        }
        for q in &out.gap_put {
            assert!(
                !out.gap_remove.contains(&q.out_raw),
                "put and remove overlap"
            );
            self.gap.insert(q.out_raw, enc(record::encode(q)));
        }
        for k in &out.gap_remove {
            self.gap.remove(k);
        }
        assert!(!chat.unreported_changes().any(), "changes left unreported");
        self.check_mirrors(chat);
    }

    /// The stored records decode to exactly the chat's state, outbox and gap queue.
    pub fn check_mirrors(&self, chat: &Chat) {
        let back = self.restore();
        assert_eq!(
            back.state(),
            chat.state(),
            "stored records differ from the chat"
        );
        let outbox = |c: &Chat| c.outbox().cloned().collect::<Vec<_>>();
        assert_eq!(outbox(&back), outbox(chat), "stored outbox differs");
        let gap = |c: &Chat| c.gap_queue().cloned().collect::<Vec<_>>();
        assert_eq!(gap(&back), gap(chat), "stored gap queue differs");
    }

    pub fn restore(&self) -> Chat {
        let state = ChatState::from_parts(
            record::decode(&self.auth).expect("auth decodes"),
            record::decode(&self.config).expect("config decodes"),
            record::decode(&self.pfs).expect("pfs decodes"),
            record::decode(&self.seq).expect("seq decodes"),
        );
        let outbox: Vec<OutboxEntry> = self
            .outbox
            .values()
            .map(|b| record::decode(b).expect("entry decodes"))
            .collect();
        let gap: Vec<QueuedMessage> = self
            .gap
            .values()
            .map(|b| record::decode(b).expect("entry decodes"))
            .collect();
        Chat::restore(state, outbox, gap).expect("restores")
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
