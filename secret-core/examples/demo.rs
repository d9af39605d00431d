//! Two secret chats (creator and acceptor) talking through a lossy, reordering relay.
//!
//! Run: `cargo run --release -p secret-core --example demo`
//!
//! This is what secret-core does on its own, before tgsim and the daemon exist: the DH handshake,
//! a service message shown on the wire and decrypted, then a few hundred service messages each way
//! through a relay that drops, duplicates and reorders — with gaps filled by Resend and keys
//! rotated on the way.

use secret_core::chat::{
    Call, Chat, ChatRequest, Event, IncomingEncrypted, Output, RemoteChat, Transmit,
};
use secret_core::crypto;
use secret_core::dh::{DhConfig, TELEGRAM_DH_PRIME};
use secret_core::rand::{SecureRandom, SeededRandom};
use secret_core::tl::enums::{DecryptedMessageAction as A, SendMessageAction};
use secret_core::tl::{self, Serializable, types};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn action(rng: &mut SeededRandom) -> A {
    match rng.below(4) {
        0 => A::SetMessageTTL(types::DecryptedMessageActionSetMessageTTL {
            ttl_seconds: rng.below(60) as i32,
        }),
        1 => A::ReadMessages(types::DecryptedMessageActionReadMessages {
            random_ids: vec![rng.next_i64()],
        }),
        2 => A::DeleteMessages(types::DecryptedMessageActionDeleteMessages {
            random_ids: vec![rng.next_i64()],
        }),
        _ => A::Typing(types::DecryptedMessageActionTyping {
            action: SendMessageAction::SendMessageTypingAction(types::SendMessageTypingAction {}),
        }),
    }
}

struct Relay {
    queue: Vec<(usize, Transmit)>,
    rng: SeededRandom,
    dropped: u32,
    duplicated: u32,
}

impl Relay {
    fn push(&mut self, from: usize, out: &Output) {
        for t in out.transmits() {
            match self.rng.below(100) {
                0..=4 => self.dropped += 1,
                5..=9 => {
                    self.duplicated += 1;
                    self.queue.push((1 - from, t.clone()));
                    self.queue.push((1 - from, t.clone()));
                }
                _ => self.queue.push((1 - from, t.clone())),
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = SeededRandom::new(2026);
    let dh = DhConfig::validate(3, &TELEGRAM_DH_PRIME, 1)?;
    println!(
        "== DH config: g = {}, p = {}… (2048-bit safe prime, validated)",
        dh.g,
        hex(&dh.p[..8])
    );

    // Creation: A requests, B accepts, A completes.
    let (mut a, req, _) = Chat::request(4242, 1001, 2002, dh.clone(), &[0x5a; 256], 0, &mut rng)?;
    println!(
        "A -> messages.requestEncryption(user 2002, random_id {}, g_a {} bytes)",
        req.random_id,
        req.g_a.len()
    );
    let request = ChatRequest {
        chat_id: req.random_id,
        access_hash: 77,
        admin_id: 1001,
        participant_id: 2002,
        g_a: req.g_a,
    };
    let (mut b, _) = Chat::from_request(&request, 2002, dh, 0)?;
    let accepted = b.accept(&[0xa5; 256], 0, &mut rng)?;
    let Some(Call::AcceptEncryption {
        g_b,
        key_fingerprint,
    }) = accepted.calls.first().cloned()
    else {
        return Err("no acceptEncryption".into());
    };
    println!(
        "B -> messages.acceptEncryption(g_b {} bytes, key_fingerprint {key_fingerprint})",
        g_b.len()
    );
    let ready = a.on_remote_update(
        &RemoteChat::Accepted {
            access_hash: 77,
            g_a_or_b: g_b,
            key_fingerprint,
        },
        0,
        &mut rng,
    );
    println!(
        "both ready; key fingerprint {:?}",
        a.key_fingerprint().ok_or("no key")?
    );
    println!(
        "key visualization (compare on both phones): {}",
        hex(&a.visualization().ok_or("no key")?)
    );
    assert_eq!(a.visualization(), b.visualization());

    let mut relay = Relay {
        queue: vec![],
        rng: SeededRandom::new(7),
        dropped: 0,
        duplicated: 0,
    };

    // One service message, shown on the wire and decrypted by the peer.
    let sent = a.send_action(
        A::SetMessageTTL(types::DecryptedMessageActionSetMessageTTL { ttl_seconds: 30 }),
        1,
        &mut rng,
    )?;
    let t = sent
        .output
        .transmits()
        .next()
        .ok_or("nothing to send")?
        .clone();
    println!("\n== A sends decryptedMessageActionSetMessageTTL(30)");
    println!(
        "method {}, random_id {}, out_seq_no {}, in_seq_no {}, layer {}",
        t.method.tl_name(),
        sent.random_id,
        sent.out_seq_no,
        sent.in_seq_no,
        sent.layer
    );
    println!(
        "data ({} bytes) = fingerprint {} | msg_key {} | ciphertext {}…",
        t.data.len(),
        hex(&t.data[..8]),
        hex(&t.data[8..24]),
        hex(&t.data[24..56])
    );
    let key = b.state().pfs().key().ok_or("no key")?.key.clone();
    let plain = crypto::decrypt_message(&key, secret_core::Role::Creator.kdf_x(), &t.data)?;
    println!(
        "B decrypts: {}",
        serde_json::to_string_pretty(&tl::boxed_to_json(&plain)?)?
    );

    // Setup traffic (both NotifyLayer messages) plus the TTL message go through the relay.
    relay.push(1, &accepted);
    relay.push(0, &ready);
    relay.push(0, &sent.output);

    let mut chats = [a, b];
    let first = (
        sent.random_id,
        A::SetMessageTTL(types::DecryptedMessageActionSetMessageTTL { ttl_seconds: 30 }),
    );
    let mut sent_by = [vec![first], vec![]];
    let mut got_by = [vec![], vec![]];
    let mut key_changes = [0, 0];
    let mut resends = 0;
    let mut now = 2;
    let total = 300;
    println!(
        "\n== {total} service messages each way through a relay that drops 5% and duplicates 5%, reordering everything"
    );
    let mut round = 0;
    loop {
        round += 1;
        now += 1;
        for side in 0..2 {
            let act = if sent_by[side].len() < total + usize::from(side == 0) {
                action(&mut rng)
            } else {
                A::Noop(types::DecryptedMessageActionNoop {})
            };
            let app = !matches!(act, A::Noop(_));
            let s = chats[side].send_action(act.clone(), now, &mut rng)?;
            if app {
                sent_by[side].push((s.random_id, act));
            }
            relay.push(side, &s.output);
        }
        // Deliver in random order.
        while !relay.queue.is_empty() {
            let i = relay.rng.below(relay.queue.len() as u64) as usize;
            let (to, t) = relay.queue.swap_remove(i);
            let msg = IncomingEncrypted {
                random_id: t.random_id,
                date: now as i32,
                data: t.data,
            };
            if let Ok(out) = chats[to].receive(&msg, now, &mut rng) {
                for e in &out.events {
                    match e {
                        Event::Action {
                            random_id, action, ..
                        } => got_by[to].push((*random_id, action.clone())),
                        Event::KeyChanged(fp) => {
                            key_changes[to] += 1;
                            if to == 0 {
                                println!("  round {round}: re-keyed, new key {fp:?}");
                            }
                        }
                        _ => {}
                    }
                }
                resends += out
                    .transmits()
                    .filter(|t| {
                        t.in_outbox && out.outbox_put.iter().all(|e| e.random_id != t.random_id)
                    })
                    .count();
                relay.push(to, &out);
            }
            if relay.queue.len() > 10_000 {
                return Err("relay overflow".into());
            }
        }
        if sent_by[0].len() >= total
            && sent_by[1].len() >= total
            && got_by[1] == sent_by[0]
            && got_by[0] == sent_by[1]
        {
            break;
        }
        if round > total + 200 {
            for (i, c) in chats.iter().enumerate() {
                let st = c.state().seq();
                eprintln!(
                    "side {i}: in_raw {} out_raw {} peer_in {} queue {:?} resend {:?} sent {} got {}",
                    st.in_raw(),
                    st.out_raw(),
                    st.peer_in_raw(),
                    c.gap_queue().map(|q| q.out_raw).take(5).collect::<Vec<_>>(),
                    st.resend_request(),
                    sent_by[i].len(),
                    got_by[i].len()
                );
            }
            return Err("did not converge".into());
        }
    }
    println!(
        "relay dropped {} and duplicated {} messages; {resends} resent from the outbox",
        relay.dropped, relay.duplicated
    );
    println!("re-keys: A {} / B {}", key_changes[0], key_changes[1]);
    println!(
        "A -> B: {} sent, {} delivered in order, each once",
        sent_by[0].len(),
        got_by[1].len()
    );
    println!(
        "B -> A: {} sent, {} delivered in order, each once",
        sent_by[1].len(),
        got_by[0].len()
    );
    let last = &got_by[1][got_by[1].len() - 1];
    let msg = types::DecryptedMessageService {
        random_id: last.0,
        action: last.1.clone(),
    };
    println!(
        "last message A -> B as JSON: {}",
        tl::boxed_to_json(&msg.to_bytes())?
    );
    Ok(())
}
