//! Fuzzing harness for the receive path (used by `fuzz/fuzz_targets/receive.rs` and by the
//! property tests). Not part of the stable API.
//!
//! The harness holds a ready chat and the peer's key. Each input is turned into an incoming
//! message in one of four ways: raw bytes, bytes behind the right key fingerprint, bytes
//! encrypted with the real key (so they reach the parser), or a `decryptedMessageLayer` header
//! with fuzzed seq numbers and layer followed by fuzzed content (so they reach the seq logic).
//! It panics if the chat panics, or if an input that was refused (`Err`) changed the state.

use crate::Role;
use crate::chat::{Call, Chat, ChatRequest, IncomingEncrypted, RemoteChat};
use crate::crypto::{self, AuthKey};
use crate::dh::{DhConfig, TELEGRAM_DH_PRIME};
use crate::rand::{SecureRandom, SeededRandom};
use crate::tl::{Identifiable, types};

/// A ready chat (the creator's side) and what its peer needs to write to it.
#[derive(Debug, Clone)]
pub struct ReceiveHarness {
    chat: Chat,
    peer_key: AuthKey,
}

impl ReceiveHarness {
    /// Builds a ready chat deterministically (three DH exponentiations).
    pub fn new() -> Option<Self> {
        let mut rng = SeededRandom::new(0xf022);
        let dh = DhConfig::validate(3, &TELEGRAM_DH_PRIME, 1).ok()?;
        let (mut a, req, _) = Chat::request(1, 1, 2, dh.clone(), &[], 0, &mut rng).ok()?;
        let request = ChatRequest {
            chat_id: 1,
            access_hash: 3,
            admin_id: 1,
            participant_id: 2,
            g_a: req.g_a,
        };
        let (mut b, _) = Chat::from_request(&request, 2, dh, 0).ok()?;
        let out = b.accept(&[], 0, &mut rng).ok()?;
        let (g_b, key_fingerprint) = out.calls.iter().find_map(|c| match c {
            Call::AcceptEncryption {
                g_b,
                key_fingerprint,
            } => Some((g_b.clone(), *key_fingerprint)),
            _ => None,
        })?;
        let _ = a.on_remote_update(
            &RemoteChat::Accepted {
                access_hash: 3,
                g_a_or_b: g_b,
                key_fingerprint,
            },
            0,
            &mut rng,
        );
        let peer_key = b.state().pfs().key()?.key.clone();
        Some(ReceiveHarness { chat: a, peer_key })
    }

    /// Feeds one fuzzed input to a fresh copy of the chat.
    pub fn run(&self, input: &[u8]) {
        let Some((&mode, rest)) = input.split_first() else {
            return;
        };
        let mut rng = SeededRandom::new(input.len() as u64);
        let x = Role::Acceptor.kdf_x();
        let data = match mode % 4 {
            0 => rest.to_vec(),
            1 => {
                let mut d = self.peer_key.fingerprint().0.to_vec();
                d.extend_from_slice(rest);
                d
            }
            2 => crypto::encrypt_message(&self.peer_key, x, &pad4(rest), &mut rng),
            _ => {
                let mut p = types::DecryptedMessageLayer::CONSTRUCTOR_ID
                    .to_le_bytes()
                    .to_vec();
                p.extend_from_slice(&[16; 17]); // bytes: length 16, then 16 bytes
                p.extend_from_slice(&[0; 3]); // padding to 4
                let take = rest.len().min(12);
                let mut head = [0u8; 12];
                head[..take].copy_from_slice(&rest[..take]);
                p.extend_from_slice(&head); // layer, in_seq_no, out_seq_no
                p.extend_from_slice(&rest[take..]);
                crypto::encrypt_message(&self.peer_key, x, &pad4(&p), &mut rng)
            }
        };
        let mut chat = self.chat.clone();
        let before = chat.state().clone();
        let gap_before: Vec<_> = chat.gap_queue().cloned().collect();
        let outbox_before: Vec<_> = chat.outbox().cloned().collect();
        let msg = IncomingEncrypted {
            random_id: rng.next_i64(),
            date: 1,
            data,
        };
        match chat.receive(&msg, 1, &mut rng) {
            Err(_) => {
                assert!(
                    chat.state() == &before,
                    "a refused message changed the state"
                );
                assert!(chat.gap_queue().cloned().collect::<Vec<_>>() == gap_before);
                assert!(chat.outbox().cloned().collect::<Vec<_>>() == outbox_before);
            }
            Ok(out) => {
                assert!(mode % 4 >= 2, "an unauthenticated message was accepted");
                let (now, was) = (chat.state(), &before);
                assert!(
                    out.changed.auth || now.auth() == was.auth(),
                    "auth changed silently"
                );
                assert!(
                    out.changed.config || now.config() == was.config(),
                    "config changed silently"
                );
                assert!(
                    out.changed.pfs || now.pfs() == was.pfs(),
                    "keys changed silently"
                );
                assert!(
                    out.changed.seq || now.seq() == was.seq(),
                    "seq changed silently"
                );
                assert!(!chat.unreported_changes().any(), "changes left unreported");
                // Whatever happened, the chat still answers sends or is closed; no panic.
                let _ = chat.tick(2, &mut rng);
            }
        }
    }
}

fn pad4(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}
