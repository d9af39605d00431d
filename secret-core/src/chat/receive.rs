//! Receiving: decryption, the parsing rule, the seq checks, in-order processing and the gap
//! queue.
//!
//! # The parsing rule
//!
//! An authenticated plaintext must be exactly one `decryptedMessageLayer` (digest §2.7: the TL
//! object fills the plaintext up to the padding) whose `message` is a `DecryptedMessage`:
//!
//! * it parses, with nothing left over: processed;
//! * the wrapper is well-formed and the message (or an object nested in it) has a constructor
//!   id that is in no layer of our schema: newer-layer content. Its seq slot is consumed and the
//!   application gets [`Event::Unsupported`] with that id (TDLib closes the chat here; a newer
//!   peer is not an attacker, so we carry on);
//! * anything else — trailing bytes after a known object, a known constructor cut short, an
//!   object of the wrong TL type in the `message` slot, a bad wrapper, a bad length or padding —
//!   is a peer that breaks the protocol under the shared key: the chat closes with
//!   [`ProtocolViolation::MalformedMessage`] and `discardEncryption`, as TDLib does
//!   (`SecretChatActor::do_inbound_message_decrypted_unchecked` fails the parse and the chat is
//!   closed by `on_fatal_error`). Dropping it instead would leave a hole the peer can only fill
//!   with the same bytes, so the chat would stall forever.
//!
//! What is *not* authenticated (wrong key, msg_key mismatch, garbage) is dropped with a
//! [`ReceiveError`] and changes nothing: anyone who can put bytes into the update stream could
//! otherwise close the chat.

use super::outputs::{Event, IncomingEncrypted, Output};
use super::state::{EarlyMessage, ProtocolViolation, QueuedMessage, Stage};
use super::{Chat, MAX_EARLY, MAX_EARLY_BYTES, MIN_RANDOM_BYTES, ReceiveError};
use crate::crypto::{self, AuthKey, DecryptError, KeyFingerprint};
use crate::rand::SecureRandom;
use crate::tl::enums::{DecryptedMessage, DecryptedMessageAction};
use crate::tl::{self, Deserializable, TlError, types};

/// What [`Chat::peek`] reads from an incoming message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peek {
    /// The key it is encrypted with.
    pub key_fingerprint: KeyFingerprint,
    /// Its out_seq_no.
    pub out_seq_no: i32,
    /// Whether it is a Noop (the filler of an acknowledged slot is one).
    pub noop: bool,
}

/// The content of a `decryptedMessageLayer`.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // transient: parsed, then moved into an event once
pub(crate) enum Content {
    /// A message of a layer we know.
    Known(DecryptedMessage),
    /// Newer-layer content: the constructor id in no layer of our schema.
    Unknown(u32),
}

/// A decoded `decryptedMessageLayer`.
#[derive(Debug)]
pub(crate) struct Layered {
    pub(crate) random_bytes_len: usize,
    pub(crate) layer: i32,
    pub(crate) in_seq_no: i32,
    pub(crate) out_seq_no: i32,
    pub(crate) content: Content,
}

/// Parses an authenticated plaintext by the rule in the module docs; `Err` says why it is
/// malformed.
pub(crate) fn parse_layered(plaintext: &[u8]) -> Result<Layered, String> {
    let mut r = tl::Reader::new(plaintext);
    let head = |e: TlError| format!("decryptedMessageLayer: {e}");
    let id = r.read_u32().map_err(head)?;
    if id != <types::DecryptedMessageLayer as tl::Identifiable>::CONSTRUCTOR_ID {
        return Err(format!(
            "expected decryptedMessageLayer, found constructor {id:#010x}"
        ));
    }
    let random_bytes_len = r.read_bytes().map_err(head)?.len();
    let layer = r.read_i32().map_err(head)?;
    let in_seq_no = r.read_i32().map_err(head)?;
    let out_seq_no = r.read_i32().map_err(head)?;
    let rest = r.read_raw(r.remaining()).map_err(head)?;
    let content = match DecryptedMessage::from_bytes(rest) {
        Ok(m) => Content::Known(m),
        Err(TlError::UnknownConstructor { id, .. }) if tl::constructor_name(id).is_none() => {
            Content::Unknown(id)
        }
        Err(e) => return Err(format!("message: {e}")),
    };
    Ok(Layered {
        random_bytes_len,
        layer,
        in_seq_no,
        out_seq_no,
        content,
    })
}

/// The service actions the application reacts to (the others are the protocol's own).
fn is_app_action(action: &DecryptedMessageAction) -> bool {
    use DecryptedMessageAction as A;
    matches!(
        action,
        A::SetMessageTTL(_)
            | A::ReadMessages(_)
            | A::DeleteMessages(_)
            | A::ScreenshotMessages(_)
            | A::FlushHistory(_)
            | A::Typing(_)
    )
}

impl Chat {
    /// Handles an encrypted message from the server. `Err` means it was dropped and nothing
    /// changed; `Ok` carries what to persist (and, for a peer that broke the protocol, the
    /// chat's closure).
    pub fn receive(
        &mut self,
        msg: &IncomingEncrypted,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Output, ReceiveError> {
        let r = self.receive_inner(msg, now, rng);
        let out = self.refuse(r)?;
        Ok(self.finish(out))
    }

    /// What an incoming message says about its slot, without processing it: the key it is
    /// under, its out_seq_no, and whether it is a Noop. `None` unless it is authentic under a key
    /// the chat holds and parses. Changes nothing (for diagnostics and tests that check slot
    /// uniqueness from the receiving side).
    pub fn peek(&self, msg: &IncomingEncrypted) -> Option<Peek> {
        let fp = crypto::message_fingerprint(&msg.data)?;
        let (key, _) = self.key_for(&fp)?;
        let x = self.state.auth.role.peer().kdf_x();
        let plaintext = crypto::decrypt_message(&key, x, &msg.data).ok()?;
        let p = parse_layered(&plaintext).ok()?;
        let noop = matches!(
            &p.content,
            Content::Known(DecryptedMessage::Service(s))
                if matches!(s.action, DecryptedMessageAction::Noop(_))
        );
        Some(Peek {
            key_fingerprint: fp,
            out_seq_no: p.out_seq_no,
            noop,
        })
    }

    fn key_for(&self, fp: &KeyFingerprint) -> Option<(AuthKey, bool)> {
        let pfs = &self.state.pfs;
        if let Some(k) = &pfs.key
            && k.key.fingerprint() == *fp
        {
            return Some((k.key.clone(), true));
        }
        if let Some(k) = &pfs.old_key
            && k.fingerprint() == *fp
        {
            return Some((k.clone(), false));
        }
        if let super::Rekey::Accepted { key, .. } = &pfs.rekey
            && key.fingerprint() == *fp
        {
            return Some((key.clone(), false));
        }
        None
    }

    /// A message that overtook the acceptance (the creator is still waiting): held, encrypted.
    fn hold_early(&mut self, msg: &IncomingEncrypted) -> Result<Output, ReceiveError> {
        if msg.data.len() > crypto::MAX_MESSAGE_DATA {
            return Err(ReceiveError::Undecryptable);
        }
        let Stage::Waiting { early, .. } = &self.state.auth.stage else {
            return Err(ReceiveError::NotReady(self.state.auth.stage.name().into()));
        };
        if early.iter().any(|e| e.data == msg.data) {
            return Err(ReceiveError::Duplicate { out_seq_no: -1 });
        }
        let held: usize = early.iter().map(|e| e.data.len()).sum();
        if early.len() >= MAX_EARLY || held.saturating_add(msg.data.len()) > MAX_EARLY_BYTES {
            return Err(ReceiveError::QueueFull);
        }
        if let Stage::Waiting { early, .. } = &mut self.auth_mut().stage {
            early.push(EarlyMessage {
                random_id: msg.random_id,
                date: msg.date,
                data: msg.data.clone(),
            });
        }
        Ok(Output::default())
    }

    pub(super) fn receive_inner(
        &mut self,
        msg: &IncomingEncrypted,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Output, ReceiveError> {
        match &self.state.auth.stage {
            Stage::Ready => {}
            Stage::Discarded(_) => return Err(ReceiveError::ChatClosed),
            Stage::Requested { .. } => return Err(ReceiveError::NotReady("requested".into())),
            Stage::Waiting { .. } => return self.hold_early(msg),
        }
        let data = &msg.data;
        if data.len() > crypto::MAX_MESSAGE_DATA {
            return Err(ReceiveError::Undecryptable);
        }
        let fp = crypto::message_fingerprint(data).ok_or(ReceiveError::Undecryptable)?;
        let (key, is_current) = self.key_for(&fp).ok_or(ReceiveError::UnknownKey(fp))?;
        let x = self.state.auth.role.peer().kdf_x();
        let plaintext = match crypto::decrypt_message(&key, x, data) {
            Ok(p) => p,
            Err(DecryptError::BadLayout { .. }) => {
                return Ok(self.fatal(ProtocolViolation::MalformedMessage(
                    "authenticated message with a bad length or padding".into(),
                )));
            }
            Err(_) => return Err(ReceiveError::Undecryptable),
        };
        let parsed = match parse_layered(&plaintext) {
            Ok(p) => p,
            Err(why) => return Ok(self.fatal(ProtocolViolation::MalformedMessage(why))),
        };
        if parsed.random_bytes_len < MIN_RANDOM_BYTES {
            return Err(ReceiveError::TooFewRandomBytes(parsed.random_bytes_len));
        }
        if parsed.in_seq_no == -1 {
            return Err(ReceiveError::Unsequenced);
        }
        let role = self.state.auth.role;
        if parsed.out_seq_no < 0
            || parsed.in_seq_no < 0
            || parsed.out_seq_no % 2 != role.peer().out_parity()
            || parsed.in_seq_no % 2 != role.out_parity()
        {
            return Ok(self.fatal(ProtocolViolation::BadSeqParity {
                in_seq_no: parsed.in_seq_no,
                out_seq_no: parsed.out_seq_no,
            }));
        }
        let r_out = (parsed.out_seq_no / 2) as u32;
        if r_out < self.state.seq.in_raw || self.gap.contains(r_out) {
            return Err(ReceiveError::Duplicate {
                out_seq_no: parsed.out_seq_no,
            });
        }
        if r_out > self.state.seq.in_raw {
            return self.hold_ahead(r_out, msg, plaintext, parsed, fp, now, rng);
        }
        let mut out =
            self.process_in_order(parsed, msg.random_id, msg.date, is_current, false, now, rng);
        out.merge(self.drain_queue(now, rng));
        Ok(out)
    }

    /// A message ahead of a hole: held decrypted, and the hole asked for.
    #[allow(clippy::too_many_arguments)]
    fn hold_ahead(
        &mut self,
        r_out: u32,
        msg: &IncomingEncrypted,
        plaintext: Vec<u8>,
        parsed: Layered,
        fp: KeyFingerprint,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Output, ReceiveError> {
        if !self.gap.has_room(plaintext.len()) {
            return Err(ReceiveError::QueueFull);
        }
        let mut out = Output::default();
        let mut queued = QueuedMessage {
            out_raw: r_out,
            random_id: msg.random_id,
            date: msg.date,
            plaintext,
            key_fingerprint: fp,
            resend_done: false,
        };
        // A Resend is acted on at once, even out of order (digest §4.3).
        if let Content::Known(DecryptedMessage::Service(s)) = &parsed.content
            && let DecryptedMessageAction::Resend(r) = &s.action
        {
            queued.resend_done = true;
            out.merge(self.on_resend(r, now, rng));
            if !self.is_ready() {
                return Ok(out);
            }
        }
        if self.gap.insert(queued.clone()).is_err() {
            return Err(ReceiveError::QueueFull); // unreachable: room was checked
        }
        out.gap_put.push(queued);
        out.merge(self.request_missing(now, rng, false));
        Ok(out)
    }

    fn drain_queue(&mut self, now: u64, rng: &mut dyn SecureRandom) -> Output {
        let mut out = Output::default();
        while self.is_ready() {
            let Some(q) = self.gap.take(self.state.seq.in_raw) else {
                break;
            };
            out.gap_remove.push(q.out_raw);
            let is_current = self
                .key_fingerprint()
                .is_some_and(|fp| fp == q.key_fingerprint);
            match parse_layered(&q.plaintext) {
                Ok(p) => out.merge(self.process_in_order(
                    p,
                    q.random_id,
                    q.date,
                    is_current,
                    q.resend_done,
                    now,
                    rng,
                )),
                Err(why) => out.merge(self.fatal(ProtocolViolation::MalformedMessage(why))),
            }
        }
        if self.is_ready() {
            // A filled gap ends our request; a remaining one needs asking for.
            if let Some(r) = &self.state.seq.resend_request
                && self.state.seq.in_raw > r.end_raw
            {
                self.seq_mut().resend_request = None;
            }
            if !self.gap.is_empty() {
                out.merge(self.request_missing(now, rng, false));
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn process_in_order(
        &mut self,
        p: Layered,
        random_id: i64,
        date: i32,
        is_current_key: bool,
        resend_done: bool,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let r_in = (p.in_seq_no / 2) as u32;
        let seq = &self.state.seq;
        if r_in < seq.peer_in_raw {
            return self.fatal(ProtocolViolation::InSeqNoDecreased {
                previous: seq.peer_in_raw,
                received: r_in,
            });
        }
        if r_in > seq.out_raw {
            return self.fatal(ProtocolViolation::InSeqNoAhead {
                received: r_in,
                sent: seq.out_raw,
            });
        }
        let previous_layer = self.state.config.peer_message_layer;
        if p.layer < previous_layer {
            return self.fatal(ProtocolViolation::LayerDecreased {
                previous: previous_layer,
                received: p.layer,
            });
        }
        let mut out = Output::default();
        if p.layer != previous_layer {
            self.config_mut().peer_message_layer = p.layer;
        }
        self.raise_peer_layer(p.layer, &mut out);
        self.seq_mut().in_raw += 1;
        // Acknowledgements.
        if r_in > self.state.seq.peer_in_raw {
            let previous = self.state.seq.peer_in_raw;
            self.seq_mut().peer_in_raw = r_in;
            let (acked, removed) = self.outbox.acknowledge_below(previous, r_in);
            out.outbox_remove.extend(removed);
            let ids: Vec<i64> = acked
                .iter()
                .filter(|e| e.from_app)
                .map(|e| e.random_id)
                .collect();
            if !ids.is_empty() {
                out.events.push(Event::Acknowledged(ids));
            }
        }
        // The peer used the new key in order: no earlier gap can need the old one.
        if is_current_key && self.state.pfs.old_key.is_some() {
            self.pfs_mut().old_key = None;
        }
        match p.content {
            Content::Unknown(constructor) => out.events.push(Event::Unsupported {
                random_id,
                layer: p.layer,
                constructor,
            }),
            Content::Known(DecryptedMessage::Service(s)) => {
                out.merge(self.on_action(s.action, s.random_id, date, resend_done, now, rng));
            }
            Content::Known(DecryptedMessage::Service8(s)) => {
                out.merge(self.on_action(s.action, s.random_id, date, resend_done, now, rng));
            }
            Content::Known(m) => out.events.push(Event::Message {
                random_id: m.random_id(),
                date,
                message: m,
            }),
        }
        if self.is_ready() {
            out.merge(self.maybe_start_rekey(now, rng));
        }
        out
    }

    fn raise_peer_layer(&mut self, layer: i32, out: &mut Output) {
        if layer > self.state.config.peer_layer {
            self.config_mut().peer_layer = layer;
            out.events.push(Event::PeerLayer(layer));
        }
    }

    fn on_action(
        &mut self,
        action: DecryptedMessageAction,
        random_id: i64,
        date: i32,
        resend_done: bool,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        use DecryptedMessageAction as A;
        let mut out = Output::default();
        match action {
            A::SetMessageTTL(ref t) => {
                let ttl = t.ttl_seconds.max(0);
                if ttl != self.state.config.ttl_seconds {
                    self.config_mut().ttl_seconds = ttl;
                    out.events.push(Event::TtlChanged(ttl));
                }
            }
            A::NotifyLayer(ref n) => self.raise_peer_layer(n.layer, &mut out),
            A::Resend(ref r) if !resend_done => out.merge(self.on_resend(r, now, rng)),
            A::RequestKey(r) => return self.on_request_key(r, now, rng),
            A::AcceptKey(a) => return self.on_accept_key(a, now, rng),
            A::CommitKey(c) => return self.on_commit_key(c, now, rng),
            A::AbortKey(a) => return self.on_abort_key(a),
            _ => {}
        }
        if is_app_action(&action) {
            out.events.push(Event::Action {
                random_id,
                date,
                action,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tl::Serializable;

    fn layer_bytes(message: Vec<u8>) -> Vec<u8> {
        let mut b = types::DecryptedMessageLayer {
            random_bytes: vec![1; 15],
            layer: 144,
            in_seq_no: 0,
            out_seq_no: 1,
            message: DecryptedMessage::Service(types::DecryptedMessageService {
                random_id: 1,
                action: DecryptedMessageAction::Noop(types::DecryptedMessageActionNoop {}),
            }),
        }
        .to_bytes();
        // Replace the message with the given bytes (everything after the wrapper's header).
        let header = 4 + 16 + 12;
        b.truncate(header);
        b.extend_from_slice(&message);
        b
    }

    fn noop(random_id: i64) -> Vec<u8> {
        DecryptedMessage::Service(types::DecryptedMessageService {
            random_id,
            action: DecryptedMessageAction::Noop(types::DecryptedMessageActionNoop {}),
        })
        .to_bytes()
    }

    #[test]
    fn a_known_message_parses() {
        let p = parse_layered(&layer_bytes(noop(5))).expect("parses");
        assert!(matches!(
            p.content,
            Content::Known(DecryptedMessage::Service(_))
        ));
        assert_eq!((p.random_bytes_len, p.layer, p.out_seq_no), (15, 144, 1));
    }

    #[test]
    fn trailing_bytes_truncation_and_wrong_types_are_malformed() {
        let mut trailing = noop(5);
        trailing.extend_from_slice(&[0; 4]);
        assert!(parse_layered(&layer_bytes(trailing)).is_err());
        let mut cut = noop(5);
        cut.truncate(8);
        assert!(parse_layered(&layer_bytes(cut)).is_err());
        let wrong = DecryptedMessageAction::Noop(types::DecryptedMessageActionNoop {}).to_bytes();
        assert!(parse_layered(&layer_bytes(wrong)).is_err());
        assert!(
            parse_layered(&layer_bytes(vec![])).is_err(),
            "no message at all"
        );
        assert!(parse_layered(&noop(5)).is_err(), "no wrapper");
    }

    #[test]
    fn only_an_id_unknown_to_every_layer_is_newer_content() {
        let p = parse_layered(&layer_bytes(vec![0xef, 0xbe, 0xad, 0xde, 1, 2, 3, 4]))
            .expect("newer content");
        assert!(matches!(p.content, Content::Unknown(0xdead_beef)));
        // Nested: a service message whose action is unknown.
        let mut nested = 0x7316_4160u32.to_le_bytes().to_vec();
        nested.extend_from_slice(&7i64.to_le_bytes());
        nested.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        let p = parse_layered(&layer_bytes(nested)).expect("newer content");
        assert!(matches!(p.content, Content::Unknown(0x1234_5678)));
        assert!(tl::constructor_name(0x1234_5678).is_none());
    }
}
