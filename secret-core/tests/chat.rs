//! Scenario tests of the per-chat state machine: bytes on the wire, seq numbers, gaps and
//! resends, fatal cases, every service action, re-keying, persistence, and refused inputs.

mod common;

use common::{Store, ready_pair};
use secret_core::Role;
use secret_core::chat::*;
use secret_core::crypto::{self, AuthKey};
use secret_core::rand::{SecureRandom, SeededRandom};
use secret_core::record;
use secret_core::tl::enums::{DecryptedMessage, DecryptedMessageAction as A, SendMessageAction};
use secret_core::tl::{Deserializable, Serializable, types};

struct Duo {
    c: [Chat; 2],
    s: [Store; 2],
    rng: SeededRandom,
    now: u64,
}

fn sends(out: &Output) -> Vec<Transmit> {
    out.transmits().cloned().collect()
}

fn incoming(t: &Transmit) -> IncomingEncrypted {
    IncomingEncrypted {
        random_id: t.random_id,
        date: 1_700_000_000,
        data: t.data.clone(),
    }
}

/// Every key a chat can decrypt with, for test inspection.
fn keys_of(chat: &Chat) -> Vec<AuthKey> {
    let st = chat.state();
    let mut v: Vec<AuthKey> = st.pfs().key().iter().map(|k| k.key.clone()).collect();
    v.extend(st.pfs().old_key().cloned());
    if let Rekey::Accepted { key, .. } = st.pfs().rekey() {
        v.push(key.clone());
    }
    v
}

/// Decrypts a transmit of `sender` with the receiver's keys (as a peer would).
fn open(receiver: &Chat, sender_role: Role, t: &Transmit) -> types::DecryptedMessageLayer {
    for k in keys_of(receiver) {
        if k.fingerprint().0 == t.data[..8] {
            let p = crypto::decrypt_message(&k, sender_role.kdf_x(), &t.data).expect("decrypts");
            return types::DecryptedMessageLayer::from_bytes(&p).expect("parses");
        }
    }
    panic!("no key for transmit");
}

fn action_of(l: &types::DecryptedMessageLayer) -> A {
    match &l.message {
        DecryptedMessage::Service(s) => s.action.clone(),
        other => panic!("not a service message: {other:?}"),
    }
}

/// A message as `sender` would write it, with any seq numbers and layer (for the fatal cases).
fn forge(
    sender: &Chat,
    layer: i32,
    in_seq_no: i32,
    out_seq_no: i32,
    action: A,
    rng: &mut SeededRandom,
) -> IncomingEncrypted {
    forge_bytes(sender, layer, in_seq_no, out_seq_no, 31, action, rng)
}

fn forge_bytes(
    sender: &Chat,
    layer: i32,
    in_seq_no: i32,
    out_seq_no: i32,
    random_bytes: usize,
    action: A,
    rng: &mut SeededRandom,
) -> IncomingEncrypted {
    let key = sender.state().pfs().key().expect("key").key.clone();
    let random_id = rng.next_i64();
    let l = types::DecryptedMessageLayer {
        random_bytes: vec![5; random_bytes],
        layer,
        in_seq_no,
        out_seq_no,
        message: DecryptedMessage::Service(types::DecryptedMessageService { random_id, action }),
    };
    let data = crypto::encrypt_message(&key, sender.role().kdf_x(), &l.to_bytes(), rng);
    IncomingEncrypted {
        random_id,
        date: 1,
        data,
    }
}

fn service(random_id: i64, action: A) -> DecryptedMessage {
    DecryptedMessage::Service(types::DecryptedMessageService { random_id, action })
}

fn ttl(n: i32) -> A {
    A::SetMessageTTL(types::DecryptedMessageActionSetMessageTTL { ttl_seconds: n })
}

fn typing() -> A {
    A::Typing(types::DecryptedMessageActionTyping {
        action: SendMessageAction::SendMessageTypingAction(types::SendMessageTypingAction {}),
    })
}

impl Duo {
    /// Two ready chats whose NotifyLayer messages have been exchanged.
    fn new(seed: u64) -> Duo {
        let p = ready_pair(seed);
        let mut d = Duo {
            c: [p.a, p.b],
            s: [p.store_a, p.store_b],
            rng: p.rng,
            now: 10,
        };
        for (side, call) in p.setup_calls {
            if let Call::Send(t) = call {
                let _ = d.deliver(1 - side, &t).expect("layer notice delivered");
            }
        }
        d
    }

    fn send(&mut self, side: usize, action: A) -> (Sent, Vec<Transmit>) {
        let s = self.c[side]
            .send_action(action, self.now, &mut self.rng)
            .expect("send");
        self.s[side].persist(&self.c[side], &s.output);
        let t = sends(&s.output);
        (s, t)
    }

    fn deliver(&mut self, to: usize, t: &Transmit) -> Result<Output, ReceiveError> {
        self.receive(to, &incoming(t))
    }

    fn receive(&mut self, to: usize, m: &IncomingEncrypted) -> Result<Output, ReceiveError> {
        let r = self.c[to].receive(m, self.now, &mut self.rng);
        if let Ok(o) = &r {
            self.s[to].persist(&self.c[to], o);
        }
        r
    }

    /// Delivers every transmit (and everything it triggers) until both sides are quiet.
    fn pump(&mut self, from: usize, ts: Vec<Transmit>) -> Vec<(usize, Event)> {
        let mut events = vec![];
        let mut queue: Vec<(usize, Transmit)> = ts.into_iter().map(|t| (1 - from, t)).collect();
        while !queue.is_empty() {
            let (to, t) = queue.remove(0);
            if let Ok(o) = self.deliver(to, &t) {
                events.extend(o.events.iter().cloned().map(|e| (to, e)));
                queue.extend(sends(&o).into_iter().map(|t| (1 - to, t)));
            }
        }
        events
    }

    fn restart(&mut self, side: usize) {
        self.c[side] = self.s[side].restore();
    }
}

#[test]
fn first_messages_carry_documented_seq_numbers_and_decrypt_on_the_other_side() {
    let p = ready_pair(1);
    let t_acceptor: Vec<_> = p.setup_calls.iter().filter(|(s, _)| *s == 1).collect();
    // acceptEncryption goes first, then the acceptor's NotifyLayer.
    assert!(matches!(t_acceptor[0].1, Call::AcceptEncryption { .. }));
    let Call::Send(tb) = &t_acceptor[1].1 else {
        panic!("send expected")
    };
    let Some((_, Call::Send(ta))) = p.setup_calls.iter().find(|(s, _)| *s == 0) else {
        panic!("creator sends NotifyLayer")
    };
    assert_eq!(ta.method, SendMethod::SendEncryptedService);
    // Creator's first message: in 0, out 1; acceptor's first: in 1 (nothing processed), out 0.
    let la = open(&p.b, Role::Creator, ta);
    assert_eq!((la.in_seq_no, la.out_seq_no, la.layer), (0, 1, MIN_LAYER));
    assert_eq!(la.random_bytes.len(), RANDOM_BYTES_LEN);
    assert_eq!(
        action_of(&la),
        A::NotifyLayer(types::DecryptedMessageActionNotifyLayer { layer: 144 })
    );
    let DecryptedMessage::Service(s) = &la.message else {
        panic!()
    };
    assert_eq!(
        s.random_id, ta.random_id,
        "outer random_id equals the inner one"
    );
    assert_ne!(s.random_id, 0);
    let lb = open(&p.a, Role::Acceptor, tb);
    assert_eq!((lb.in_seq_no, lb.out_seq_no), (1, 0));
    // The wire layout: fingerprint, msg_key, a whole number of blocks.
    assert_eq!(ta.data[..8], p.a.key_fingerprint().expect("fp").0);
    assert_eq!((ta.data.len() - 24) % 16, 0);
    // Both agree on the key and its visualization.
    assert_eq!(p.a.key_fingerprint(), p.b.key_fingerprint());
    assert_eq!(p.a.visualization(), p.b.visualization());
}

#[test]
fn layer_is_raised_by_the_peer_and_sent_as_min_of_both() {
    let mut d = Duo::new(2);
    assert_eq!(d.c[0].state().config().peer_layer(), 144);
    let (s, t) = d.send(0, ttl(5));
    assert_eq!(s.layer, 144);
    let l = open(&d.c[1], Role::Creator, &t[0]);
    assert_eq!(l.layer, 144);
    // A peer announcing 151 is fine: we keep sending 144.
    let m = forge(
        &d.c[1],
        144,
        3,
        2,
        A::NotifyLayer(types::DecryptedMessageActionNotifyLayer { layer: 151 }),
        &mut d.rng,
    );
    let o = d.receive(0, &m).expect("accepted");
    assert!(o.events.contains(&Event::PeerLayer(151)));
    assert_eq!(d.c[0].send_layer(), 144);
}

#[test]
fn send_returns_numbers_and_the_outbox_keeps_the_exact_bytes_until_acknowledged() {
    let mut d = Duo::new(3);
    let (s1, t1) = d.send(0, ttl(30));
    assert_eq!((s1.out_seq_no, s1.in_seq_no), (3, 2));
    assert_eq!(t1.len(), 1);
    assert_eq!(
        t1[0].method,
        SendMethod::SendEncrypted,
        "TTL goes with sendEncrypted (TDLib)"
    );
    let e = d.c[0]
        .outbox_entry(s1.random_id)
        .expect("in outbox")
        .clone();
    assert_eq!(e.data, t1[0].data);
    // The stored record holds the same bytes.
    assert_eq!(d.s[0].restore().outbox_entry(s1.random_id), Some(&e));
    let (s2, t2) = d.send(0, typing());
    assert_eq!(t2[0].method, SendMethod::SendEncryptedService);
    assert_eq!(s2.out_seq_no, 5);
    d.pump(0, t1);
    d.pump(0, t2);
    assert!(
        d.c[0].outbox_entry(s1.random_id).is_some(),
        "not acknowledged until the peer writes"
    );
    // The server accepted the first; its answer for the second is not in yet.
    let o = d.c[0].on_sent(s1.random_id, 1_700_000_001);
    d.s[0].persist(&d.c[0], &o);
    let (_, tb) = d.send(1, typing());
    let ev = d.pump(1, tb);
    assert!(ev.iter().any(|(side, e)| *side == 0 && matches!(e, Event::Acknowledged(ids) if ids.contains(&s1.random_id) && ids.contains(&s2.random_id))));
    assert!(d.c[0].outbox_entry(s1.random_id).is_none());
    assert!(
        d.s[0].restore().outbox_entry(s1.random_id).is_none(),
        "removal persisted"
    );
    // Acknowledged before the server's answer: kept (and sent again after a restart), so that
    // the answer is still learned; removed once it comes.
    assert!(d.c[0].outbox_entry(s2.random_id).is_some());
    d.restart(0);
    assert!(d.c[0].unsent().iter().any(|t| t.random_id == s2.random_id));
    let o = d.c[0].on_sent(s2.random_id, 1_700_000_002);
    assert!(o.events.contains(&Event::Sent {
        random_id: s2.random_id,
        date: 1_700_000_002
    }));
    assert_eq!(o.outbox_remove, vec![2]);
    d.s[0].persist(&d.c[0], &o);
    assert!(d.s[0].restore().outbox_entry(s2.random_id).is_none());
}

#[test]
fn a_gap_queues_messages_and_asks_for_exactly_one_resend() {
    let mut d = Duo::new(4);
    let mut ts = vec![];
    for i in 0..6 {
        ts.push(d.send(0, ttl(i)).1.remove(0));
    }
    let mut resends = vec![];
    for t in &ts[2..] {
        let o = d.deliver(1, t).expect("queued");
        assert!(
            o.events.iter().all(|e| !matches!(e, Event::Action { .. })),
            "nothing delivered early"
        );
        resends.extend(sends(&o));
    }
    assert_eq!(
        resends.len(),
        1,
        "one Resend for the hole, not one per message"
    );
    let l = open(&d.c[0], Role::Acceptor, &resends[0]);
    // B has processed one A message (NotifyLayer, out 1); the hole is A's out 3 and 5.
    assert_eq!(
        action_of(&l),
        A::Resend(types::DecryptedMessageActionResend {
            start_seq_no: 3,
            end_seq_no: 5
        })
    );
    assert_eq!(d.c[1].gap_queue().count(), 4);
    // A answers with the original bytes.
    let o = d.deliver(0, &resends[0]).expect("resend handled");
    let answers = sends(&o);
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].data, ts[0].data);
    assert_eq!(answers[1].data, ts[1].data);
    let mut got = vec![];
    for t in &answers {
        let o = d.deliver(1, t).expect("fills the gap");
        for e in o.events {
            if let Event::Action {
                action: A::SetMessageTTL(x),
                ..
            } = e
            {
                got.push(x.ttl_seconds);
            }
        }
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4, 5], "delivered once each, in order");
    assert!(d.c[1].gap_queue().next().is_none());
    assert_eq!(d.c[1].state().seq().resend_request(), None);
}

#[test]
fn an_unanswered_resend_is_repeated_only_after_the_retry_time() {
    let mut d = Duo::new(5);
    let t: Vec<_> = (0..3).map(|i| d.send(0, ttl(i)).1.remove(0)).collect();
    let o = d.deliver(1, &t[2]).expect("queued");
    assert_eq!(sends(&o).len(), 1);
    d.now += 1;
    assert!(sends(&d.c[1].tick(d.now, &mut d.rng)).is_empty());
    d.now += RESEND_RETRY_SECS;
    let o = d.c[1].tick(d.now, &mut d.rng);
    assert_eq!(sends(&o).len(), 1, "asked again after the retry time");
}

#[test]
fn duplicates_are_dropped_and_change_nothing() {
    let mut d = Duo::new(6);
    let (_, t) = d.send(0, ttl(9));
    let _ = d.deliver(1, &t[0]).expect("first copy");
    let before = postcard::to_stdvec(d.c[1].state()).expect("encodes");
    assert!(matches!(
        d.deliver(1, &t[0]),
        Err(ReceiveError::Duplicate { out_seq_no: 3 })
    ));
    assert_eq!(
        postcard::to_stdvec(d.c[1].state()).expect("encodes"),
        before
    );
    // A duplicate of a queued message is dropped too.
    let t2: Vec<_> = (0..2).map(|i| d.send(0, ttl(i)).1.remove(0)).collect();
    let _ = d.deliver(1, &t2[1]).expect("queued");
    assert!(matches!(
        d.deliver(1, &t2[1]),
        Err(ReceiveError::Duplicate { .. })
    ));
}

fn assert_discarded(
    d: &mut Duo,
    side: usize,
    o: Output,
    check: impl Fn(&ProtocolViolation) -> bool,
) {
    assert!(o.calls.contains(&Call::DiscardEncryption {
        delete_history: false
    }));
    match d.c[side].status() {
        Status::Discarded(DiscardReason::Protocol(v)) => assert!(check(&v), "reason {v:?}"),
        s => panic!("not discarded: {s:?}"),
    }
    // The closure is persisted and survives a restart.
    d.restart(side);
    assert!(matches!(d.c[side].status(), Status::Discarded(_)));
    assert!(matches!(
        d.c[side].send_action(ttl(1), 0, &mut d.rng),
        Err(SendError::WrongState { .. })
    ));
}

#[test]
fn wrong_parity_is_fatal() {
    let mut d = Duo::new(7);
    // B (acceptor) must write even out_seq_no and odd in_seq_no.
    let m = forge(&d.c[1], 144, 3, 3, typing(), &mut d.rng);
    let o = d.receive(0, &m).expect("processed");
    assert_discarded(&mut d, 0, o, |v| {
        matches!(v, ProtocolViolation::BadSeqParity { .. })
    });
}

#[test]
fn in_seq_no_going_backwards_is_fatal() {
    let mut d = Duo::new(8);
    let (_, t) = d.send(0, ttl(1));
    d.pump(0, t);
    let (_, t) = d.send(1, ttl(2)); // B's in = 5 now (processed 2 of A's)
    d.pump(1, t);
    let m = forge(&d.c[1], 144, 3, 4, typing(), &mut d.rng);
    let o = d.receive(0, &m).expect("processed");
    assert_discarded(&mut d, 0, o, |v| {
        matches!(
            v,
            ProtocolViolation::InSeqNoDecreased {
                previous: 2,
                received: 1
            }
        )
    });
}

#[test]
fn in_seq_no_beyond_what_was_sent_is_fatal() {
    let mut d = Duo::new(9);
    let m = forge(&d.c[1], 144, 41, 2, typing(), &mut d.rng);
    let o = d.receive(0, &m).expect("processed");
    assert_discarded(&mut d, 0, o, |v| {
        matches!(
            v,
            ProtocolViolation::InSeqNoAhead {
                received: 20,
                sent: 1
            }
        )
    });
}

#[test]
fn layer_going_down_is_fatal() {
    let mut d = Duo::new(10);
    // B knows A's layer now, so its next message is written at 144.
    let (s, t) = d.send(1, typing());
    assert_eq!(s.layer, 144);
    d.pump(1, t);
    let m = forge(&d.c[1], 100, 3, 4, typing(), &mut d.rng);
    let o = d.receive(0, &m).expect("processed");
    assert_discarded(&mut d, 0, o, |v| {
        matches!(
            v,
            ProtocolViolation::LayerDecreased {
                previous: 144,
                received: 100
            }
        )
    });
}

#[test]
fn legacy_in_seq_no_minus_one_is_tolerated_not_fatal() {
    let mut d = Duo::new(11);
    let m = forge(&d.c[1], 144, -1, 2, typing(), &mut d.rng);
    assert_eq!(d.receive(0, &m), Err(ReceiveError::Unsequenced));
    assert_eq!(d.c[0].status(), Status::Ready);
}

#[test]
fn too_few_random_bytes_are_ignored() {
    let mut d = Duo::new(12);
    let m = forge_bytes(&d.c[1], 144, 3, 2, 14, typing(), &mut d.rng);
    assert_eq!(d.receive(0, &m), Err(ReceiveError::TooFewRandomBytes(14)));
    let m = forge_bytes(&d.c[1], 144, 3, 2, 15, typing(), &mut d.rng);
    assert!(d.receive(0, &m).is_ok());
}

#[test]
fn a_resend_for_an_acknowledged_slot_is_filled_with_a_noop_in_that_slot() {
    let mut d = Duo::new(13);
    let (s, t) = d.send(0, ttl(1)); // A out 3
    d.pump(0, t);
    let o = d.c[0].on_sent(s.random_id, 1);
    d.s[0].persist(&d.c[0], &o);
    let (_, t) = d.send(1, typing()); // acknowledges A's out 3
    d.pump(1, t);
    assert!(d.c[0].outbox_entry(s.random_id).is_none());
    let m = forge(
        &d.c[1],
        144,
        5,
        4,
        A::Resend(types::DecryptedMessageActionResend {
            start_seq_no: 3,
            end_seq_no: 3,
        }),
        &mut d.rng,
    );
    let o = d.receive(0, &m).expect("answered");
    assert_eq!(d.c[0].status(), Status::Ready);
    let ts = sends(&o);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].out_seq_no, 3);
    let l = open(&d.c[1], Role::Creator, &ts[0]);
    assert_eq!(l.out_seq_no, 3);
    assert_eq!(action_of(&l), A::Noop(types::DecryptedMessageActionNoop {}));
}

#[test]
fn resends_that_cannot_be_honoured_are_fatal() {
    for (start, end) in [(3, 2003 + 2), (1, 41), (2, 4), (5, 3)] {
        let mut d = Duo::new(14);
        let m = forge(
            &d.c[1],
            144,
            3,
            2,
            A::Resend(types::DecryptedMessageActionResend {
                start_seq_no: start,
                end_seq_no: end,
            }),
            &mut d.rng,
        );
        let o = d.receive(0, &m).expect("processed");
        assert_discarded(&mut d, 0, o, |v| {
            matches!(v, ProtocolViolation::BadResend { .. })
        });
    }
}

#[test]
fn every_application_action_reaches_the_peer_with_its_effect() {
    let mut d = Duo::new(15);
    let ids = vec![11, 22];
    let actions = vec![
        ttl(60),
        A::ReadMessages(types::DecryptedMessageActionReadMessages {
            random_ids: ids.clone(),
        }),
        A::DeleteMessages(types::DecryptedMessageActionDeleteMessages {
            random_ids: ids.clone(),
        }),
        A::ScreenshotMessages(types::DecryptedMessageActionScreenshotMessages {
            random_ids: ids.clone(),
        }),
        A::FlushHistory(types::DecryptedMessageActionFlushHistory {}),
        typing(),
        A::Noop(types::DecryptedMessageActionNoop {}),
        A::NotifyLayer(types::DecryptedMessageActionNotifyLayer { layer: 144 }),
    ];
    let mut got = vec![];
    for a in &actions {
        let (_, t) = d.send(0, a.clone());
        for (side, e) in d.pump(0, t) {
            if side == 1 {
                got.push(e);
            }
        }
    }
    let delivered: Vec<A> = got
        .iter()
        .filter_map(|e| match e {
            Event::Action { action, .. } => Some(action.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        delivered,
        actions[..6].to_vec(),
        "app actions delivered; Noop/NotifyLayer are internal"
    );
    assert!(got.contains(&Event::TtlChanged(60)));
    assert_eq!(d.c[1].state().config().ttl_seconds(), 60);
    assert_eq!(
        d.c[0].state().config().ttl_seconds(),
        60,
        "the sender applies its own TTL too"
    );
}

#[test]
fn protocol_actions_cannot_be_sent_by_the_application_and_bad_input_changes_nothing() {
    let mut d = Duo::new(16);
    let before = postcard::to_stdvec(d.c[0].state()).expect("encodes");
    let r = |d: &mut Duo, a: A| d.c[0].send_action(a, 0, &mut d.rng);
    assert!(matches!(
        r(
            &mut d,
            A::Resend(types::DecryptedMessageActionResend {
                start_seq_no: 1,
                end_seq_no: 1
            })
        ),
        Err(SendError::NotAllowed { .. })
    ));
    assert!(matches!(
        r(
            &mut d,
            A::AcceptKey(types::DecryptedMessageActionAcceptKey {
                exchange_id: 1,
                g_b: vec![1],
                key_fingerprint: 1
            })
        ),
        Err(SendError::NotAllowed { .. })
    ));
    assert!(matches!(
        r(
            &mut d,
            A::CommitKey(types::DecryptedMessageActionCommitKey {
                exchange_id: 1,
                key_fingerprint: 1
            })
        ),
        Err(SendError::NotAllowed { .. })
    ));
    assert!(matches!(
        r(
            &mut d,
            A::RequestKey(types::DecryptedMessageActionRequestKey {
                exchange_id: 5,
                g_a: vec![]
            })
        ),
        Err(SendError::InvalidField { .. })
    ));
    assert!(matches!(
        r(
            &mut d,
            A::AbortKey(types::DecryptedMessageActionAbortKey { exchange_id: 0 })
        ),
        Err(SendError::RekeyBusy(_))
    ));
    assert!(matches!(
        r(&mut d, ttl(-1)),
        Err(SendError::InvalidField { ref field, .. }) if field == "ttl_seconds"
    ));
    assert!(matches!(
        r(
            &mut d,
            A::NotifyLayer(types::DecryptedMessageActionNotifyLayer { layer: 999 })
        ),
        Err(SendError::InvalidField { .. })
    ));
    assert!(matches!(
        r(
            &mut d,
            A::ReadMessages(types::DecryptedMessageActionReadMessages { random_ids: vec![] })
        ),
        Err(SendError::InvalidField { .. })
    ));
    let huge = A::DeleteMessages(types::DecryptedMessageActionDeleteMessages {
        random_ids: vec![7; 10_000],
    });
    assert!(matches!(r(&mut d, huge), Err(SendError::TooLarge { .. })));
    let legacy = DecryptedMessage::Service8(types::DecryptedMessageService8 {
        random_id: 1,
        random_bytes: vec![0; 16],
        action: ttl(1),
    });
    assert!(matches!(
        d.c[0].send_message(legacy, SendMethod::SendEncryptedService, 0, &mut d.rng),
        Err(SendError::NotAllowed { .. })
    ));
    assert_eq!(
        postcard::to_stdvec(d.c[0].state()).expect("encodes"),
        before,
        "nothing changed"
    );
    // A random_id still in flight cannot be reused.
    let (s, _) = d.send(0, ttl(1));
    assert_eq!(
        d.c[0].send_message(
            service(s.random_id, ttl(2)),
            SendMethod::SendEncrypted,
            0,
            &mut d.rng
        ),
        Err(SendError::BadRandomId(s.random_id))
    );
    assert_eq!(
        postcard::to_stdvec(d.c[0].state()).expect("encodes"),
        postcard::to_stdvec(d.s[0].restore().state()).expect("encodes"),
        "refusals left the chat as stored"
    );
}

#[test]
fn sending_before_ready_is_a_wrong_state_error() {
    let mut rng = SeededRandom::new(17);
    let (mut a, _, _) =
        Chat::request(1, 1, 2, common::dh_config(), &[], 0, &mut rng).expect("request");
    assert!(matches!(
        a.send_action(ttl(1), 0, &mut rng),
        Err(SendError::WrongState { ref status, .. }) if status == "waiting"
    ));
}

#[test]
fn garbage_and_tampered_ciphertext_are_undecryptable_and_change_nothing() {
    let mut d = Duo::new(18);
    let (_, t) = d.send(0, ttl(3));
    let before = postcard::to_stdvec(d.c[1].state()).expect("encodes");
    // Same fingerprint, random rest.
    let mut g = t[0].data.clone();
    d.rng.fill(&mut g[8..]);
    assert_eq!(
        d.receive(
            1,
            &IncomingEncrypted {
                random_id: 1,
                date: 1,
                data: g
            }
        ),
        Err(ReceiveError::Undecryptable)
    );
    // One flipped bit anywhere after the fingerprint.
    for i in [8, 20, 24, 40, t[0].data.len() - 1] {
        let mut m = t[0].data.clone();
        m[i] ^= 0x10;
        assert_eq!(
            d.receive(
                1,
                &IncomingEncrypted {
                    random_id: 1,
                    date: 1,
                    data: m
                }
            ),
            Err(ReceiveError::Undecryptable),
            "bit at {i}"
        );
    }
    // Unknown key, too short, empty.
    let mut u = t[0].data.clone();
    u[0] ^= 1;
    assert!(matches!(
        d.receive(
            1,
            &IncomingEncrypted {
                random_id: 1,
                date: 1,
                data: u
            }
        ),
        Err(ReceiveError::UnknownKey(_))
    ));
    for n in [0, 7, 8, 23, 24, 30] {
        let data = t[0].data[..n].to_vec();
        assert!(
            d.receive(
                1,
                &IncomingEncrypted {
                    random_id: 1,
                    date: 1,
                    data
                }
            )
            .is_err()
        );
    }
    assert_eq!(
        postcard::to_stdvec(d.c[1].state()).expect("encodes"),
        before
    );
    // The real message still goes through afterwards.
    assert!(d.deliver(1, &t[0]).is_ok());
}

fn count_keychanges(ev: &[(usize, Event)], side: usize) -> usize {
    ev.iter()
        .filter(|(s, e)| *s == side && matches!(e, Event::KeyChanged(_)))
        .count()
}

#[test]
fn rekey_after_100_messages_switches_both_sides_without_losing_anything() {
    let mut d = Duo::new(19);
    let fp0 = d.c[0].key_fingerprint();
    let mut ev = vec![];
    let mut n = 0;
    while count_keychanges(&ev, 0) == 0 || count_keychanges(&ev, 1) == 0 {
        let side = n % 2;
        let (_, t) = d.send(side, ttl(n as i32));
        ev.extend(d.pump(side, t));
        n += 1;
        assert!(n < 200, "no re-key after {n} messages");
    }
    assert!(n <= 110, "re-key started late ({n})");
    let fp1 = d.c[0].key_fingerprint();
    assert_ne!(fp0, fp1);
    assert_eq!(fp1, d.c[1].key_fingerprint());
    assert_eq!(d.c[0].visualization(), d.c[1].visualization());
    // Every TTL arrived exactly once.
    let got: Vec<i32> = ev
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Action {
                action: A::SetMessageTTL(t),
                ..
            } => Some(t.ttl_seconds),
            _ => None,
        })
        .collect();
    assert_eq!(got, (0..n as i32).collect::<Vec<_>>());
    // After traffic both ways the old keys are gone.
    for side in [0, 1, 0] {
        let (_, t) = d.send(side, typing());
        d.pump(side, t);
    }
    assert!(d.c[0].state().pfs().old_key().is_none() && d.c[1].state().pfs().old_key().is_none());
    let (_, t) = d.send(0, typing());
    assert_eq!(
        t[0].data[..8],
        fp1.expect("fp").0,
        "new messages use the new key"
    );
}

#[test]
fn the_new_key_is_stored_before_accept_key_and_commit_key_leave() {
    let mut d = Duo::new(20);
    let s = d.c[0].start_rekey(None, d.now, &mut d.rng).expect("start");
    d.s[0].persist(&d.c[0], &s.output);
    assert!(
        matches!(
            d.s[0].restore().state().pfs().rekey(),
            &Rekey::Requested { .. }
        ),
        "secret stored with RequestKey"
    );
    let req = sends(&s.output);
    let o = d.deliver(1, &req[0]).expect("request handled");
    let accept = sends(&o);
    assert!(matches!(
        action_of(&open(&d.c[0], Role::Acceptor, &accept[0])),
        A::AcceptKey(_)
    ));
    // The output that carries AcceptKey stores the pending key with it.
    assert!(o.changed.pfs);
    let restored_b = d.s[1].restore();
    let Rekey::Accepted { key, .. } = restored_b.state().pfs().rekey() else {
        panic!("pending key not stored")
    };
    let new_fp = key.fingerprint();
    let o = d.deliver(0, &accept[0]).expect("accept handled");
    let commit = sends(&o);
    assert!(matches!(
        action_of(&open(&d.c[1], Role::Creator, &commit[0])),
        A::CommitKey(_)
    ));
    // CommitKey itself still travels under the old key; the stored state already has the new one.
    assert_ne!(commit[0].data[..8], new_fp.0);
    assert_eq!(d.s[0].restore().key_fingerprint(), Some(new_fp));
    // Restart B before the CommitKey arrives: it still completes.
    d.restart(1);
    let o = d.deliver(1, &commit[0]).expect("commit handled");
    assert!(o.events.contains(&Event::KeyChanged(new_fp)));
    // B answers with a Noop under the new key, so that A can drop the old one.
    let noop = sends(&o);
    assert_eq!(noop[0].data[..8], new_fp.0);
    let _ = d.deliver(0, &noop[0]).expect("noop");
    assert!(d.c[0].state().pfs().old_key().is_none());
}

#[test]
fn simultaneous_requests_are_resolved_by_exchange_id() {
    for seed in 21..27 {
        let mut d = Duo::new(seed);
        let sa = d.c[0]
            .start_rekey(None, d.now, &mut d.rng)
            .expect("a starts");
        let sb = d.c[1]
            .start_rekey(None, d.now, &mut d.rng)
            .expect("b starts");
        d.s[0].persist(&d.c[0], &sa.output);
        d.s[1].persist(&d.c[1], &sb.output);
        let ea = match d.c[0].state().pfs().rekey() {
            Rekey::Requested { exchange_id, .. } => *exchange_id,
            _ => panic!(),
        };
        let eb = match d.c[1].state().pfs().rekey() {
            Rekey::Requested { exchange_id, .. } => *exchange_id,
            _ => panic!(),
        };
        let (ta, tb) = (sends(&sa.output), sends(&sb.output));
        let oa = d.deliver(0, &tb[0]).expect("a gets b's request");
        let ob = d.deliver(1, &ta[0]).expect("b gets a's request");
        let mut ev = d.pump(0, sends(&oa));
        ev.extend(d.pump(1, sends(&ob)));
        assert_eq!(count_keychanges(&ev, 0), 1, "seed {seed}");
        assert_eq!(count_keychanges(&ev, 1), 1, "seed {seed}");
        assert_eq!(d.c[0].key_fingerprint(), d.c[1].key_fingerprint());
        // The larger exchange_id (signed) won: its owner is the one that sent CommitKey.
        let winner = if ea > eb { 0 } else { 1 };
        assert!(
            d.c[winner].state().pfs().old_key().is_some()
                || d.c[1 - winner].state().pfs().old_key().is_some()
        );
        assert_eq!(d.c[0].state().pfs().rekey(), &Rekey::Idle);
        assert_eq!(d.c[1].state().pfs().rekey(), &Rekey::Idle);
    }
}

#[test]
fn a_mismatched_accept_key_aborts_the_exchange_but_keeps_the_chat() {
    let mut d = Duo::new(27);
    let s = d.c[0].start_rekey(None, d.now, &mut d.rng).expect("start");
    d.s[0].persist(&d.c[0], &s.output);
    let Rekey::Requested { exchange_id, .. } = d.c[0].state().pfs().rekey().clone() else {
        panic!()
    };
    let g_b = d.c[0].state().auth().dh().p[..200].to_vec(); // in range but the fingerprint is wrong
    let mut g = g_b.clone();
    g[0] = 0x40;
    let m = forge(
        &d.c[1],
        144,
        5,
        2,
        A::AcceptKey(types::DecryptedMessageActionAcceptKey {
            exchange_id,
            g_b: vec![0x40; 256],
            key_fingerprint: 12345,
        }),
        &mut d.rng,
    );
    let o = d.receive(0, &m).expect("handled");
    assert_eq!(d.c[0].status(), Status::Ready);
    assert_eq!(d.c[0].state().pfs().rekey(), &Rekey::Idle);
    assert!(o.events.contains(&Event::RekeyAborted { exchange_id }));
    let t = sends(&o);
    assert_eq!(
        action_of(&open(&d.c[1], Role::Creator, &t[0])),
        A::AbortKey(types::DecryptedMessageActionAbortKey { exchange_id })
    );
    // The peer side of an abort: a pending accepted key is dropped.
    let _ = g;
}

#[test]
fn the_seven_day_rule_survives_a_restart() {
    let mut d = Duo::new(28);
    d.now = 6 * 24 * 3600;
    assert!(sends(&d.c[0].tick(d.now, &mut d.rng)).is_empty());
    d.restart(0);
    d.now = REKEY_AFTER_SECS + 1;
    let o = d.c[0].tick(d.now, &mut d.rng);
    let t = sends(&o);
    assert_eq!(t.len(), 1, "restarted chat still knows the key's age");
    assert!(matches!(
        action_of(&open(&d.c[1], Role::Creator, &t[0])),
        A::RequestKey(_)
    ));
}

/// A creator waiting for acceptance, an acceptor that just accepted, and the acceptance values.
struct HalfOpen {
    a: Chat,
    b: Chat,
    rng: SeededRandom,
    accepted: Output,
    g_b: Vec<u8>,
    key_fingerprint: i64,
}

fn half_open(seed: u64) -> HalfOpen {
    let mut rng = SeededRandom::new(seed);
    let dh = common::dh_config();
    let (a, req, _) = Chat::request(7, 1, 2, dh.clone(), &[], 0, &mut rng).expect("request");
    let request = ChatRequest {
        chat_id: 7,
        access_hash: 5,
        admin_id: 1,
        participant_id: 2,
        g_a: req.g_a,
    };
    let (mut b, _) = Chat::from_request(&request, 2, dh, 0).expect("from_request");
    let accepted = b.accept(&[], 0, &mut rng).expect("accept");
    let Some(Call::AcceptEncryption {
        g_b,
        key_fingerprint,
    }) = accepted.calls.first().cloned()
    else {
        panic!("acceptEncryption comes first")
    };
    HalfOpen {
        a,
        b,
        rng,
        accepted,
        g_b,
        key_fingerprint,
    }
}

#[test]
fn messages_that_overtake_the_acceptance_are_kept_and_processed() {
    let HalfOpen {
        mut a,
        mut b,
        mut rng,
        accepted,
        g_b,
        key_fingerprint,
    } = half_open(29);
    let notify = sends(&accepted).remove(0);
    let s = b.send_action(ttl(7), 0, &mut rng).expect("send");
    let ttl_msg = sends(&s.output).remove(0);
    // The messages arrive before updateEncryption.
    assert!(a.receive(&incoming(&notify), 0, &mut rng).is_ok());
    assert!(a.receive(&incoming(&ttl_msg), 0, &mut rng).is_ok());
    let o = a.on_remote_update(
        &RemoteChat::Accepted {
            access_hash: 5,
            g_a_or_b: g_b,
            key_fingerprint,
        },
        0,
        &mut rng,
    );
    assert!(o.events.contains(&Event::TtlChanged(7)));
    assert_eq!(a.state().seq().in_raw(), 2);
}

#[test]
fn a_wrong_fingerprint_at_creation_discards_the_chat() {
    let HalfOpen {
        mut a,
        mut rng,
        g_b,
        key_fingerprint,
        ..
    } = half_open(30);
    let o = a.on_remote_update(
        &RemoteChat::Accepted {
            access_hash: 5,
            g_a_or_b: g_b,
            key_fingerprint: key_fingerprint ^ 1,
        },
        0,
        &mut rng,
    );
    assert!(o.calls.contains(&Call::DiscardEncryption {
        delete_history: false
    }));
    assert_eq!(
        a.status(),
        Status::Discarded(DiscardReason::Protocol(
            ProtocolViolation::KeyFingerprintMismatch
        ))
    );
}

#[test]
fn a_bad_g_a_discards_instead_of_accepting() {
    let mut rng = SeededRandom::new(31);
    let dh = common::dh_config();
    let (mut b, _) = Chat::from_request(
        &ChatRequest {
            chat_id: 7,
            access_hash: 5,
            admin_id: 1,
            participant_id: 2,
            g_a: vec![1],
        },
        2,
        dh,
        0,
    )
    .expect("req");
    let o = b.accept(&[], 0, &mut rng).expect("handled");
    assert!(
        o.calls
            .iter()
            .all(|c| !matches!(c, Call::AcceptEncryption { .. }))
    );
    assert!(matches!(
        b.status(),
        Status::Discarded(DiscardReason::Protocol(ProtocolViolation::BadDhValue(_)))
    ));
}

#[test]
fn remote_discard_and_fatal_send_errors_close_the_chat() {
    let mut d = Duo::new(32);
    let o = d.c[0].on_remote_update(
        &RemoteChat::Discarded {
            history_deleted: true,
        },
        0,
        &mut d.rng,
    );
    assert!(
        o.calls.is_empty(),
        "no discardEncryption for a chat the peer closed"
    );
    assert_eq!(
        d.c[0].status(),
        Status::Discarded(DiscardReason::Remote {
            history_deleted: true
        })
    );
    assert_eq!(
        d.c[0].receive(
            &IncomingEncrypted {
                random_id: 1,
                date: 1,
                data: vec![0; 64]
            },
            0,
            &mut d.rng
        ),
        Err(ReceiveError::ChatClosed)
    );
    let (s, _) = d.send(1, ttl(1));
    assert!(
        d.c[1]
            .on_send_failed(s.random_id, &SendFailure::Retry)
            .is_empty()
    );
    let o = d.c[1].on_send_failed(
        s.random_id,
        &SendFailure::Fatal {
            error: "USER_IS_BLOCKED".into(),
        },
    );
    assert!(o.outbox_remove.contains(&(s.out_seq_no as u32 / 2)));
    assert_eq!(
        d.c[1].status(),
        Status::Discarded(DiscardReason::ServerRefused {
            error: "USER_IS_BLOCKED".into()
        })
    );
}

#[test]
fn restore_rejects_inconsistent_records() {
    let d = Duo::new(33);
    // Records are private: an inconsistent one is made by editing its serde form.
    let edit = |f: &dyn Fn(&mut serde_json::Value)| -> ChatState {
        let mut v = serde_json::to_value(d.c[0].state()).expect("to json");
        f(&mut v);
        serde_json::from_value(v).expect("from json")
    };
    let restore = |st: ChatState, outbox: Vec<OutboxEntry>| Chat::restore(st, outbox, vec![]);
    assert!(restore(d.c[0].state().clone(), vec![]).is_ok());
    let no_key = edit(&|v| v["pfs"]["key"] = serde_json::Value::Null);
    assert!(matches!(
        restore(no_key, vec![]),
        Err(RestoreError::Inconsistent(_))
    ));
    let acked_beyond = edit(&|v| v["seq"]["peer_in_raw"] = 1_000_000.into());
    assert!(matches!(
        restore(acked_beyond, vec![]),
        Err(RestoreError::Inconsistent(_))
    ));
    let e = OutboxEntry {
        out_raw: d.c[0].state().seq().out_raw() + 5,
        in_raw: 0,
        random_id: 1,
        method: SendMethod::SendEncrypted,
        data: vec![],
        layer: 144,
        from_app: true,
        created_at: 0,
        sent_date: None,
    };
    assert!(matches!(
        restore(d.c[0].state().clone(), vec![e]),
        Err(RestoreError::Inconsistent(_))
    ));
    // A record of another layout version is refused before it reaches the chat.
    let mut seq = record::encode(d.c[0].state().seq()).expect("encodes");
    seq[0] = 99;
    assert!(matches!(
        record::decode::<SeqState>(&seq),
        Err(record::RecordError::Version { found: 99, .. })
    ));
}

#[test]
fn unsent_messages_are_sent_again_after_a_restart_with_identical_bytes() {
    let mut d = Duo::new(34);
    let (s1, t1) = d.send(0, ttl(1));
    let (s2, t2) = d.send(0, ttl(2));
    let o = d.c[0].on_sent(s1.random_id, 123);
    d.s[0].persist(&d.c[0], &o);
    d.restart(0);
    let again = d.c[0].unsent();
    assert!(
        again.iter().all(|t| t.random_id != s1.random_id),
        "confirmed message not resent"
    );
    let t = again
        .iter()
        .find(|t| t.random_id == s2.random_id)
        .expect("unconfirmed one is resent");
    assert_eq!(t.data, t2[0].data);
    assert_eq!(t.out_seq_no, s2.out_seq_no);
    assert!(
        again.windows(2).all(|w| w[0].out_seq_no < w[1].out_seq_no),
        "in seq order"
    );
    assert_eq!(
        d.c[0].outbox_entry(s1.random_id).and_then(|e| e.sent_date),
        Some(123)
    );
    let _ = t1;
}

#[test]
fn the_acceptor_can_start_a_rekey_too() {
    let mut d = Duo::new(35);
    let fp0 = d.c[0].key_fingerprint();
    let s = d.c[1]
        .start_rekey(None, d.now, &mut d.rng)
        .expect("acceptor starts");
    d.s[1].persist(&d.c[1], &s.output);
    let ev = d.pump(1, sends(&s.output));
    assert_eq!(count_keychanges(&ev, 0), 1);
    assert_eq!(count_keychanges(&ev, 1), 1);
    assert_ne!(d.c[0].key_fingerprint(), fp0);
    assert_eq!(d.c[0].key_fingerprint(), d.c[1].key_fingerprint());
    // Messages keep flowing both ways under the new key.
    let (_, t) = d.send(0, ttl(44));
    let ev = d.pump(0, t);
    assert!(ev.contains(&(1, Event::TtlChanged(44))));
    // A keeps the old key until the initiator has written under the new one.
    assert!(d.c[0].state().pfs().old_key().is_some());
    assert!(matches!(
        d.c[0].start_rekey(None, d.now, &mut d.rng),
        Err(SendError::RekeyBusy(_))
    ));
    let (_, t) = d.send(1, typing());
    d.pump(1, t);
    assert!(d.c[0].state().pfs().old_key().is_none());
    // A re-key cannot start while one runs.
    let s = d.c[0]
        .start_rekey(None, d.now, &mut d.rng)
        .expect("idle again");
    d.s[0].persist(&d.c[0], &s.output);
    assert!(matches!(
        d.c[0].start_rekey(None, d.now, &mut d.rng),
        Err(SendError::RekeyBusy(_))
    ));
    // The application can abort its own exchange.
    let a = d.c[0]
        .send_action(
            A::AbortKey(types::DecryptedMessageActionAbortKey { exchange_id: 0 }),
            d.now,
            &mut d.rng,
        )
        .expect("abort");
    assert_eq!(d.c[0].state().pfs().rekey(), &Rekey::Idle);
    let l = open(&d.c[1], Role::Creator, &sends(&a.output)[0]);
    assert!(matches!(action_of(&l), A::AbortKey(_)));
}

// ---- the parsing rule: malformed known content closes the chat, unknown ids are newer content ----

/// A message as `sender` would write it, with `message` as the raw TL bytes in the message slot
/// (and the next seq numbers of a Duo after setup).
fn forge_content(sender: &Chat, message: &[u8], rng: &mut SeededRandom) -> IncomingEncrypted {
    let key = sender.state().pfs().key().expect("key").key.clone();
    // After the setup both sides sent one NotifyLayer and processed the other's.
    let (in_seq_no, out_seq_no) = match sender.role() {
        Role::Creator => (2, 3),
        Role::Acceptor => (3, 2),
    };
    let mut payload = types::DecryptedMessageLayer {
        random_bytes: vec![5; 31],
        layer: 144,
        in_seq_no,
        out_seq_no,
        message: DecryptedMessage::Service(types::DecryptedMessageService {
            random_id: 1,
            action: typing(),
        }),
    }
    .to_bytes();
    // Keep the wrapper's header (id, 32 bytes of random_bytes, layer, in, out), swap the message.
    payload.truncate(4 + 32 + 12);
    payload.extend_from_slice(message);
    let data = crypto::encrypt_message(&key, sender.role().kdf_x(), &payload, rng);
    IncomingEncrypted {
        random_id: rng.next_i64(),
        date: 1,
        data,
    }
}

fn service_bytes(action: A) -> Vec<u8> {
    service(77, action).to_bytes()
}

#[test]
fn trailing_bytes_after_a_known_object_close_the_chat_for_both_roles() {
    for sender in [1usize, 0] {
        for extra in [4usize, 8] {
            for random in [false, true] {
                let mut d = Duo::new(40 + extra as u64);
                let mut content = service_bytes(ttl(9));
                let tail: Vec<u8> = if random {
                    (0..extra).map(|_| d.rng.next_u32() as u8).collect()
                } else {
                    vec![0; extra]
                };
                content.extend_from_slice(&tail);
                let m = forge_content(&d.c[sender], &content, &mut d.rng);
                let to = 1 - sender;
                let o = d.receive(to, &m).expect("authenticated, so processed");
                assert!(
                    !o.events
                        .iter()
                        .any(|e| matches!(e, Event::Unsupported { .. })),
                    "known content with {extra} trailing bytes is not newer-layer content"
                );
                assert_discarded(&mut d, to, o, |v| {
                    matches!(v, ProtocolViolation::MalformedMessage(_))
                });
            }
        }
    }
}

#[test]
fn a_known_constructor_cut_short_closes_the_chat() {
    for sender in [0usize, 1] {
        let mut d = Duo::new(50 + sender as u64);
        let full = service_bytes(A::ReadMessages(types::DecryptedMessageActionReadMessages {
            random_ids: vec![1, 2, 3],
        }));
        let cut = &full[..full.len() - 8];
        let m = forge_content(&d.c[sender], cut, &mut d.rng);
        let o = d.receive(1 - sender, &m).expect("processed");
        assert_discarded(&mut d, 1 - sender, o, |v| {
            matches!(v, ProtocolViolation::MalformedMessage(_))
        });
    }
}

#[test]
fn an_object_of_the_wrong_type_in_the_message_slot_closes_the_chat() {
    for sender in [0usize, 1] {
        let mut d = Duo::new(52 + sender as u64);
        // A DecryptedMessageAction where a DecryptedMessage belongs.
        let m = forge_content(&d.c[sender], &ttl(5).to_bytes(), &mut d.rng);
        let o = d.receive(1 - sender, &m).expect("processed");
        assert_discarded(&mut d, 1 - sender, o, |v| {
            matches!(v, ProtocolViolation::MalformedMessage(_))
        });
    }
}

#[test]
fn an_unknown_constructor_id_is_newer_layer_content_that_consumes_its_slot() {
    for sender in [0usize, 1] {
        let mut d = Duo::new(54 + sender as u64);
        let to = 1 - sender;
        let before = d.c[to].state().seq().in_raw();
        // An id in no layer of the schema, with content we cannot read behind it.
        let mut content = 0x0bad_cafe_u32.to_le_bytes().to_vec();
        content.extend_from_slice(&[9; 12]);
        assert!(secret_core::tl::constructor_name(0x0bad_cafe).is_none());
        let m = forge_content(&d.c[sender], &content, &mut d.rng);
        let o = d.receive(to, &m).expect("processed");
        assert!(
            o.events.contains(&Event::Unsupported {
                random_id: m.random_id,
                layer: 144,
                constructor: 0x0bad_cafe,
            }),
            "{:?}",
            o.events
        );
        assert_eq!(d.c[to].status(), Status::Ready);
        assert_eq!(d.c[to].state().seq().in_raw(), before + 1, "slot consumed");
        // The next message in order is processed normally.
        let (in_seq_no, out_seq_no) = match d.c[sender].role() {
            Role::Creator => (2, 5),
            Role::Acceptor => (3, 4),
        };
        let next = forge(&d.c[sender], 144, in_seq_no, out_seq_no, ttl(3), &mut d.rng);
        let o = d.receive(to, &next).expect("processed");
        assert!(o.events.contains(&Event::TtlChanged(3)), "{:?}", o.events);
        assert_eq!(d.c[to].state().seq().in_raw(), before + 2);
    }
}

// ---- the method of an application message is the caller's ----

#[test]
fn the_application_chooses_the_method_and_resends_keep_it() {
    let mut d = Duo::new(60);
    // A user-visible action through the silent method, and typing through the notifying one.
    let s1 = d.c[0]
        .send_message(
            service(0, ttl(30)),
            SendMethod::SendEncryptedService,
            d.now,
            &mut d.rng,
        )
        .expect("send");
    d.s[0].persist(&d.c[0], &s1.output);
    let s2 = d.c[0]
        .send_message(
            service(0, typing()),
            SendMethod::SendEncrypted,
            d.now,
            &mut d.rng,
        )
        .expect("send");
    d.s[0].persist(&d.c[0], &s2.output);
    assert_eq!(
        sends(&s1.output)[0].method,
        SendMethod::SendEncryptedService
    );
    assert_eq!(sends(&s2.output)[0].method, SendMethod::SendEncrypted);
    assert_eq!(
        default_method(&service(0, ttl(30))),
        SendMethod::SendEncrypted,
        "TDLib's rule stays the default"
    );
    // After a restart the unsent messages go out with their own methods.
    d.restart(0);
    let unsent = d.c[0].unsent();
    let method_of = |rid: i64| unsent.iter().find(|t| t.random_id == rid).map(|t| t.method);
    assert_eq!(
        method_of(s1.random_id),
        Some(SendMethod::SendEncryptedService)
    );
    assert_eq!(method_of(s2.random_id), Some(SendMethod::SendEncrypted));
    // The peer asks for both again: the answers carry the same bytes and methods.
    let resend = forge(
        &d.c[1],
        144,
        3,
        2,
        A::Resend(types::DecryptedMessageActionResend {
            start_seq_no: 3,
            end_seq_no: 5,
        }),
        &mut d.rng,
    );
    let o = d.receive(0, &resend).expect("processed");
    let again = sends(&o);
    assert_eq!(again.len(), 2);
    assert_eq!(again[0].data, sends(&s1.output)[0].data);
    assert_eq!(again[0].method, SendMethod::SendEncryptedService);
    assert_eq!(again[1].method, SendMethod::SendEncrypted);
    // The chat's own protocol messages are always silent.
    let r = d.c[1].start_rekey(None, d.now, &mut d.rng).expect("rekey");
    assert_eq!(sends(&r.output)[0].method, SendMethod::SendEncryptedService);
}

// ---- no input panics; required protocol messages are never skipped ----

#[test]
fn oversized_fields_are_too_large_not_a_panic() {
    let mut d = Duo::new(61);
    let before = d.s[0].clone();
    let text = "x".repeat(17 << 20); // over the TL limit of a string (16 MiB - 1)
    let m = DecryptedMessage::DecryptedMessage(types::DecryptedMessage {
        silent: false,
        random_id: 0,
        ttl: 0,
        message: text,
        media: None,
        entities: None,
        via_bot_name: None,
        reply_to_random_id: None,
        grouped_id: None,
    });
    assert!(matches!(
        d.c[0].send_message(m, SendMethod::SendEncrypted, d.now, &mut d.rng),
        Err(SendError::TooLarge { size }) if size > 17 << 20
    ));
    let ids = A::ReadMessages(types::DecryptedMessageActionReadMessages {
        random_ids: vec![1; 3 << 20],
    });
    assert!(matches!(
        d.c[0].send_action(ids, d.now, &mut d.rng),
        Err(SendError::TooLarge { .. })
    ));
    d.s[0].check_mirrors(&d.c[0]);
    assert_eq!(d.s[0], before, "nothing stored changed");
}

/// A chat whose next message would be the last seq number it may use.
fn exhausted(d: &mut Duo, side: usize) {
    let mut v = serde_json::to_value(d.c[side].state()).expect("json");
    v["seq"]["out_raw"] = ((i32::MAX as u32 - 1) / 2).into();
    let st: ChatState = serde_json::from_value(v).expect("json");
    let outbox: Vec<_> = d.c[side].outbox().cloned().collect();
    d.c[side] = Chat::restore(st, outbox, vec![]).expect("restores");
}

#[test]
fn an_accept_key_that_cannot_be_queued_closes_the_chat() {
    let mut d = Duo::new(62);
    exhausted(&mut d, 1);
    let req = d.c[0]
        .start_rekey(None, d.now, &mut d.rng)
        .expect("request");
    let o = d.c[1]
        .receive(&incoming(&sends(&req.output)[0]), d.now, &mut d.rng)
        .expect("processed");
    assert!(
        matches!(
            d.c[1].status(),
            Status::Discarded(DiscardReason::CannotSend { ref action, .. })
                if action == "decryptedMessageActionAcceptKey"
        ),
        "{:?}",
        d.c[1].status()
    );
    assert!(o.calls.contains(&Call::DiscardEncryption {
        delete_history: false
    }));
    assert_eq!(d.c[1].state().pfs().rekey(), &Rekey::Idle);
}

#[test]
fn a_resend_request_that_cannot_be_queued_closes_the_chat() {
    let mut d = Duo::new(63);
    exhausted(&mut d, 0);
    // B's message 2 arrives before its message 1: A must ask for 1 and cannot.
    let (_, first) = d.send(1, ttl(1));
    let (_, second) = d.send(1, ttl(2));
    let _ = first;
    let o = d.c[0]
        .receive(&incoming(&second[0]), d.now, &mut d.rng)
        .expect("processed");
    assert!(matches!(
        d.c[0].status(),
        Status::Discarded(DiscardReason::CannotSend { ref action, .. })
            if action == "decryptedMessageActionResend"
    ));
    assert!(o.calls.contains(&Call::DiscardEncryption {
        delete_history: false
    }));
}

// ---- small records, keyed gap entries, one timer ----

#[test]
fn an_ordinary_message_rewrites_only_the_small_seq_record() {
    let mut d = Duo::new(64);
    // The first message after the setup raises the layer the peer writes in (a config change).
    let (_, t) = d.send(0, typing());
    d.pump(0, t);
    let (s, t) = d.send(0, typing());
    assert_eq!(
        s.output.changed,
        Changed {
            seq: true,
            ..Default::default()
        }
    );
    let o = d.deliver(1, &t[0]).expect("delivered");
    assert_eq!(
        o.changed,
        Changed {
            seq: true,
            ..Default::default()
        }
    );
    let seq = record::encode(d.c[1].state().seq()).expect("encodes");
    assert!(seq.len() < 24, "seq record is {} bytes", seq.len());
    // The keys are only rewritten by a re-key.
    let r = d.c[0].start_rekey(None, d.now, &mut d.rng).expect("rekey");
    assert!(r.output.changed.pfs);
}

#[test]
fn messages_held_ahead_of_a_gap_are_keyed_records_of_their_own() {
    let mut d = Duo::new(65);
    let (_, t1) = d.send(0, ttl(1));
    let (_, t2) = d.send(0, ttl(2));
    let (_, t3) = d.send(0, ttl(3));
    let o2 = d.deliver(1, &t2[0]).expect("held");
    assert_eq!(
        o2.gap_put.iter().map(|q| q.out_raw).collect::<Vec<_>>(),
        vec![2]
    );
    assert!(!o2.changed.auth && !o2.changed.pfs && !o2.changed.config);
    let o3 = d.deliver(1, &t3[0]).expect("held");
    assert_eq!(
        o3.gap_put.iter().map(|q| q.out_raw).collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(d.s[1].gap.len(), 2, "stored apart from the state");
    d.restart(1);
    let o1 = d.deliver(1, &t1[0]).expect("fills the gap");
    assert_eq!(o1.gap_remove, vec![2, 3]);
    assert!(d.s[1].gap.is_empty());
    let ttls: Vec<_> = o1
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TtlChanged(t) => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(ttls, vec![1, 2, 3]);
}

#[test]
fn next_deadline_names_the_resend_retry_and_the_seven_day_rekey() {
    let mut d = Duo::new(66);
    let week = REKEY_AFTER_SECS;
    assert_eq!(
        d.c[1].next_deadline(),
        Some(week),
        "the key came into use at 0"
    );
    let (_, _lost) = d.send(0, ttl(1));
    let (_, t2) = d.send(0, ttl(2));
    let _ = d.deliver(1, &t2[0]).expect("held");
    let retry = d.now + RESEND_RETRY_SECS;
    assert_eq!(d.c[1].next_deadline(), Some(retry));
    // Before the deadline a tick does nothing; at it, the Resend is repeated.
    let early = d.c[1].tick(retry - 1, &mut d.rng);
    assert!(early.is_empty());
    let due = d.c[1].tick(retry, &mut d.rng);
    d.s[1].persist(&d.c[1], &due);
    let again = sends(&due);
    assert_eq!(again.len(), 1);
    assert!(matches!(
        action_of(&open(&d.c[0], Role::Acceptor, &again[0])),
        A::Resend(_)
    ));
    assert_eq!(d.c[1].next_deadline(), Some(retry + RESEND_RETRY_SECS));
    // The deadline survives a restart.
    d.restart(1);
    assert_eq!(d.c[1].next_deadline(), Some(retry + RESEND_RETRY_SECS));
}

// ---- serde: events, calls and errors have a stable encoding ----

#[test]
fn events_calls_and_errors_round_trip_through_postcard_and_json() {
    let mut d = Duo::new(67);
    let (s, t) = d.send(0, ttl(7));
    let o = d.deliver(1, &t[0]).expect("delivered");
    let mut events = o.events.clone();
    events.extend(s.output.events.clone());
    events.push(Event::Unsupported {
        random_id: 1,
        layer: 200,
        constructor: 0xdead_beef,
    });
    events.push(Event::StatusChanged(Status::Discarded(
        DiscardReason::CannotSend {
            action: "x".into(),
            error: "y".into(),
        },
    )));
    assert!(events.iter().any(|e| matches!(e, Event::Action { .. })));
    for e in &events {
        let b = record::encode(e).expect("encodes");
        assert_eq!(&record::decode::<Event>(&b).expect("decodes"), e);
        let j = serde_json::to_string(e).expect("json");
        assert_eq!(&serde_json::from_str::<Event>(&j).expect("json back"), e);
    }
    // In JSON a TL action is readable MadelineProto-style JSON.
    let action = events
        .iter()
        .find(|e| matches!(e, Event::Action { .. }))
        .expect("action");
    let j = serde_json::to_value(action).expect("json");
    assert_eq!(
        j["Action"]["action"]["_"],
        "decryptedMessageActionSetMessageTTL"
    );
    for c in &s.output.calls {
        let b = postcard::to_stdvec(c).expect("encodes");
        assert_eq!(&postcard::from_bytes::<Call>(&b).expect("decodes"), c);
    }
    let errors = [
        SendError::TooLarge { size: 5 },
        SendError::WrongState {
            status: "waiting".into(),
            what: "send".into(),
        },
    ];
    for e in errors {
        let j = serde_json::to_string(&e).expect("json");
        assert_eq!(serde_json::from_str::<SendError>(&j).expect("back"), e);
    }
    let r = ReceiveError::Duplicate { out_seq_no: 4 };
    let b = postcard::to_stdvec(&r).expect("encodes");
    assert_eq!(postcard::from_bytes::<ReceiveError>(&b).expect("back"), r);
}

#[test]
fn a_cancelled_unsent_message_becomes_a_noop_in_its_slot() {
    let mut d = Duo::new(21);
    let (s1, t1) = d.send(0, ttl(30));
    let (s2, t2) = d.send(0, typing());
    // The first is cancelled before anything was sent: a Noop takes its slot.
    let (out, noop) = d.c[0]
        .cancel_unsent(s1.random_id, &mut d.rng)
        .expect("cancelled");
    d.s[0].persist(&d.c[0], &out);
    assert_eq!(noop.out_seq_no, s1.out_seq_no, "same slot");
    assert_ne!(noop.random_id, s1.random_id);
    assert_eq!(noop.method, SendMethod::SendEncryptedService);
    assert!(d.c[0].outbox_entry(s1.random_id).is_none());
    assert_eq!(
        d.s[0]
            .restore()
            .outbox_entry(noop.random_id)
            .map(|e| e.data.clone()),
        Some(noop.data.clone()),
        "the Noop is what is stored"
    );
    assert!(d.c[0].unsent().iter().all(|t| t.random_id != s1.random_id));
    let layer = open(&d.c[1], Role::Creator, &noop);
    assert_eq!(layer.out_seq_no, s1.out_seq_no);
    assert_eq!(layer.in_seq_no, s1.in_seq_no);
    assert!(matches!(action_of(&layer), A::Noop(_)));
    // The peer gets the Noop then the second message: no hole, no TTL change.
    let mut ev = d.pump(0, vec![noop]);
    ev.extend(d.pump(0, t2));
    assert!(
        ev.iter()
            .all(|(_, e)| !matches!(e, Event::TtlChanged(_) | Event::StatusChanged(_))),
        "{ev:?}"
    );
    assert!(ev.iter().any(|(side, e)| *side == 1
        && matches!(e, Event::Action { random_id, .. } if *random_id == s2.random_id)));
    // Refused, nothing changed: unknown, already accepted by the server, the protocol's own.
    let before = d.c[0].state().clone();
    assert!(d.c[0].cancel_unsent(s1.random_id, &mut d.rng).is_err());
    let _ = d.c[0].on_sent(s2.random_id, 1_700_000_000);
    assert!(matches!(
        d.c[0].cancel_unsent(s2.random_id, &mut d.rng),
        Err(SendError::WrongState { .. })
    ));
    let _ = t1;
    assert_eq!(d.c[0].unreported_changes(), Changed::default());
    assert_eq!(d.c[0].state().seq(), before.seq());
}
