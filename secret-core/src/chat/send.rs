//! Sending: the application's messages, the seq slot each one takes, its encryption, the outbox
//! entry that keeps its exact bytes, and the server's answer.
//!
//! # The method rule
//!
//! The application chooses the method of each message it sends ([`Chat::send_message`]); it
//! is stored in the outbox entry, so a resend uses the same one. [`default_method`] is TDLib's
//! rule, for callers that have no preference: user-visible actions (TTL, read, delete,
//! screenshot, flush history) and content through `messages.sendEncrypted`, so that the peer's
//! devices notify; everything else through `messages.sendEncryptedService`. The messages the chat
//! sends on its own (NotifyLayer, Resend, the re-key set, Noop) always go through
//! `messages.sendEncryptedService`.

use super::outputs::{Call, Event, MessageEntropy, Output, SendFailure, Sent, Transmit};
use super::state::{DiscardReason, OutboxEntry, SendMethod};
use super::{
    Chat, MAX_MESSAGE_BYTES, MAX_RAW_SEQ, MIN_RANDOM_BYTES, OUR_LAYER, RANDOM_BYTES_LEN, SendError,
    encode_seq, service,
};
use crate::crypto::{self, AuthKey};
use crate::rand::SecureRandom;
use crate::tl::enums::{DecryptedMessage, DecryptedMessageAction as A};
use crate::tl::{Serializable, types};

/// TDLib's method for an application message (digest §9): `messages.sendEncrypted` for content
/// and for the user-visible actions (SetMessageTTL, Read/Delete/ScreenshotMessages,
/// FlushHistory), `messages.sendEncryptedService` for the rest.
pub fn default_method(message: &DecryptedMessage) -> SendMethod {
    let action = match message {
        DecryptedMessage::Service(s) => &s.action,
        DecryptedMessage::Service8(s) => &s.action,
        _ => return SendMethod::SendEncrypted,
    };
    match action {
        A::SetMessageTTL(_)
        | A::ReadMessages(_)
        | A::DeleteMessages(_)
        | A::ScreenshotMessages(_)
        | A::FlushHistory(_) => SendMethod::SendEncrypted,
        _ => SendMethod::SendEncryptedService,
    }
}

/// Whether the application may send `action` (RequestKey and AbortKey are steered to the
/// re-key functions by the caller).
fn check_app_action(action: &A) -> Result<(), SendError> {
    let ids = |ids: &[i64]| {
        if ids.is_empty() {
            Err(SendError::invalid("random_ids", "empty list"))
        } else {
            Ok(())
        }
    };
    match action {
        A::SetMessageTTL(a) if a.ttl_seconds < 0 => Err(SendError::invalid(
            "ttl_seconds",
            format!("{} is negative", a.ttl_seconds),
        )),
        A::ReadMessages(a) => ids(&a.random_ids),
        A::DeleteMessages(a) => ids(&a.random_ids),
        A::ScreenshotMessages(a) => ids(&a.random_ids),
        A::NotifyLayer(a) if a.layer != OUR_LAYER => Err(SendError::invalid(
            "layer",
            format!("only our own layer ({OUR_LAYER}) can be announced"),
        )),
        A::RequestKey(r) if r.exchange_id != 0 || !r.g_a.is_empty() => Err(SendError::invalid(
            "exchange_id/g_a",
            "chosen by the chat: leave them 0 and empty",
        )),
        A::Resend(_) => Err(SendError::not_allowed(
            "decryptedMessageActionResend",
            "the chat asks for missing messages itself",
        )),
        A::AcceptKey(_) => Err(SendError::not_allowed(
            "decryptedMessageActionAcceptKey",
            "it is sent by the protocol in answer to the peer's RequestKey",
        )),
        A::CommitKey(_) => Err(SendError::not_allowed(
            "decryptedMessageActionCommitKey",
            "it is sent by the protocol in answer to the peer's AcceptKey",
        )),
        _ => Ok(()),
    }
}

fn nonzero(random_id: i64) -> Option<i64> {
    (random_id != 0).then_some(random_id)
}

impl Chat {
    /// Sends a message on behalf of the application, through `method` (see [`default_method`]
    /// for TDLib's choice). Normally a `decryptedMessageService`; `random_id` 0 means "choose
    /// one". `decryptedMessageActionRequestKey` (fields 0 / empty) starts a re-key and
    /// `decryptedMessageActionAbortKey` aborts ours; Resend, AcceptKey and CommitKey are the
    /// protocol's own ([`SendError::NotAllowed`]). On `Err` nothing changed.
    pub fn send_message(
        &mut self,
        message: DecryptedMessage,
        method: SendMethod,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        let r = self.send_inner(message, method, None, now, rng);
        self.finish_sent(r)
    }

    /// Sends `decryptedMessageService{random_id: chosen, action}` through [`default_method`]
    /// (TDLib's choice): [`Chat::send_message`] for callers that have only an action.
    pub fn send_action(
        &mut self,
        action: A,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        let message = service(0, action);
        let method = default_method(&message);
        self.send_message(message, method, now, rng)
    }

    /// [`Chat::send_message`] with the message's `random_bytes` and padding given instead of
    /// drawn, so that its `data` is fully determined (interoperability tests). A RequestKey or
    /// AbortKey takes no entropy ([`SendError::InvalidField`]).
    pub fn send_message_with_entropy(
        &mut self,
        message: DecryptedMessage,
        method: SendMethod,
        entropy: MessageEntropy,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        let r = self.send_inner(message, method, Some(entropy), now, rng);
        self.finish_sent(r)
    }

    /// Starts a re-key now (normally automatic after 100 messages or 7 days).
    pub fn start_rekey(
        &mut self,
        random_id: Option<i64>,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        let r = self.start_rekey_inner(random_id, SendMethod::SendEncryptedService, now, rng);
        self.finish_sent(r)
    }

    /// Aborts our own re-key before the peer's AcceptKey has been processed. `exchange_id` 0
    /// means "the running one".
    pub fn abort_rekey(
        &mut self,
        exchange_id: i64,
        random_id: Option<i64>,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        let r = self.abort_rekey_inner(
            exchange_id,
            random_id,
            SendMethod::SendEncryptedService,
            now,
            rng,
        );
        self.finish_sent(r)
    }

    fn finish_sent(&mut self, r: Result<Sent, SendError>) -> Result<Sent, SendError> {
        let mut sent = self.refuse(r)?;
        sent.output = self.finish(std::mem::take(&mut sent.output));
        Ok(sent)
    }

    fn send_inner(
        &mut self,
        message: DecryptedMessage,
        method: SendMethod,
        entropy: Option<MessageEntropy>,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        let (message, ttl) = match message {
            DecryptedMessage::Service(s) => {
                check_app_action(&s.action)?;
                let wanted = nonzero(s.random_id);
                match &s.action {
                    A::RequestKey(_) | A::AbortKey(_) if entropy.is_some() => {
                        return Err(SendError::invalid(
                            "entropy",
                            "a re-key message draws its own randomness",
                        ));
                    }
                    A::RequestKey(_) => return self.start_rekey_inner(wanted, method, now, rng),
                    A::AbortKey(a) => {
                        return self.abort_rekey_inner(a.exchange_id, wanted, method, now, rng);
                    }
                    _ => {}
                }
                self.check_sendable("send a service message")?;
                let random_id = self.pick_random_id(wanted, rng)?;
                let ttl = match &s.action {
                    A::SetMessageTTL(t) => Some(t.ttl_seconds),
                    _ => None,
                };
                (service(random_id, s.action), ttl)
            }
            DecryptedMessage::DecryptedMessage(mut m) => {
                self.check_sendable("send a message")?;
                m.random_id = self.pick_random_id(nonzero(m.random_id), rng)?;
                (DecryptedMessage::DecryptedMessage(m), None)
            }
            other => {
                return Err(SendError::not_allowed(
                    other.constructor_name(),
                    "legacy constructors below layer 73 are not sent",
                ));
            }
        };
        let mut sent = self.queue(message, method, true, entropy, now, rng)?;
        if let Some(ttl) = ttl
            && ttl != self.state.config.ttl_seconds
        {
            self.config_mut().ttl_seconds = ttl;
            sent.output.events.push(Event::TtlChanged(ttl));
        }
        sent.output.merge(self.maybe_start_rekey(now, rng));
        Ok(sent)
    }

    pub(super) fn check_sendable(&self, what: &str) -> Result<(), SendError> {
        if !self.is_ready() {
            return Err(SendError::wrong_state(self.state.auth.stage.name(), what));
        }
        Ok(())
    }

    /// `wanted` if it is free, or a fresh random_id. A random_id is free unless it is 0 or held
    /// by an outbox entry (the daemon keeps the random_ids of every request it accepted, which
    /// is where a repeated one is answered idempotently).
    pub(super) fn pick_random_id(
        &self,
        wanted: Option<i64>,
        rng: &mut dyn SecureRandom,
    ) -> Result<i64, SendError> {
        let used = |id: i64| id == 0 || self.outbox.contains_random_id(id);
        match wanted {
            Some(id) if used(id) => Err(SendError::BadRandomId(id)),
            Some(id) => Ok(id),
            None => loop {
                let id = rng.next_i64();
                if !used(id) {
                    return Ok(id);
                }
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue_service(
        &mut self,
        action: A,
        random_id: i64,
        method: SendMethod,
        from_app: bool,
        entropy: Option<MessageEntropy>,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        self.queue(
            service(random_id, action),
            method,
            from_app,
            entropy,
            now,
            rng,
        )
    }

    /// Assigns the next seq slot, wraps, encrypts with the current key, and puts the exact
    /// bytes in the outbox. Every check comes before the first change.
    fn queue(
        &mut self,
        message: DecryptedMessage,
        method: SendMethod,
        from_app: bool,
        entropy: Option<MessageEntropy>,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        let random_id = message.random_id();
        // Measured without serializing: no field can be too long for the TL writer past here.
        let size = message.serialized_len();
        if size > MAX_MESSAGE_BYTES {
            return Err(SendError::TooLarge { size });
        }
        let seq = &self.state.seq;
        if seq.out_raw >= MAX_RAW_SEQ {
            return Err(SendError::SeqExhausted);
        }
        let Some(key) = self.state.pfs.key.as_ref().map(|k| k.key.clone()) else {
            return Err(SendError::wrong_state(self.state.auth.stage.name(), "send"));
        };
        let role = self.state.auth.role;
        let (out_raw, in_raw) = (seq.out_raw, seq.in_raw);
        let layer = self.send_layer();
        let out_seq_no = encode_seq(out_raw, role.out_parity());
        let in_seq_no = encode_seq(in_raw, role.peer().out_parity());
        let data = self.seal(&key, layer, in_seq_no, out_seq_no, message, entropy, rng)?;
        let entry = OutboxEntry {
            out_raw,
            in_raw,
            random_id,
            method,
            data,
            layer,
            from_app,
            created_at: now,
            sent_date: None,
        };
        self.seq_mut().out_raw += 1;
        let transmit = self.transmit_of(&entry);
        self.outbox.insert(entry.clone());
        Ok(Sent {
            random_id,
            out_seq_no,
            in_seq_no,
            layer,
            output: Output {
                outbox_put: vec![entry],
                calls: vec![Call::Send(transmit)],
                ..Default::default()
            },
        })
    }

    /// Cancels an application message that has not left the process: its outbox entry (the
    /// slot it took) is replaced by a `decryptedMessageActionNoop` under a fresh random_id, in
    /// the same slot, with the same in_seq_no and layer, under the key in use, so the peer sees
    /// no hole. Returns the output (the new outbox entry) and the Noop's [`Transmit`], which
    /// takes the place of the cancelled one in the send queue.
    ///
    /// The caller must know that no send of the message was ever attempted (not even one whose
    /// answer was lost): a second ciphertext in a slot that may have reached the server would
    /// break the slot's uniqueness. Refused (nothing changed) when the message is not in the
    /// outbox, was accepted by the server, is the protocol's own, or was sealed under another
    /// key than the one in use.
    pub fn cancel_unsent(
        &mut self,
        random_id: i64,
        rng: &mut dyn SecureRandom,
    ) -> Result<(Output, Transmit), SendError> {
        let r = self.cancel_inner(random_id, rng);
        let r = self.refuse(r);
        r.map(|(out, t)| (self.finish(out), t))
    }

    fn cancel_inner(
        &mut self,
        random_id: i64,
        rng: &mut dyn SecureRandom,
    ) -> Result<(Output, Transmit), SendError> {
        let what = "cancel a message";
        let entry = self
            .outbox
            .find(random_id)
            .cloned()
            .ok_or_else(|| SendError::wrong_state(self.status().name(), what))?;
        if entry.sent_date.is_some() || !entry.from_app {
            return Err(SendError::wrong_state("sent", what));
        }
        let key = self
            .state
            .pfs
            .key
            .as_ref()
            .map(|k| k.key.clone())
            .ok_or_else(|| SendError::wrong_state(self.status().name(), what))?;
        if entry.data.get(..8) != Some(&key.fingerprint().0[..]) {
            return Err(SendError::wrong_state("sealed under an earlier key", what));
        }
        let role = self.state.auth.role;
        let noop_id = self.pick_random_id(None, rng)?;
        let out_seq_no = encode_seq(entry.out_raw, role.out_parity());
        let noop = service(noop_id, A::Noop(types::DecryptedMessageActionNoop {}));
        let data = self.seal(
            &key,
            entry.layer,
            encode_seq(entry.in_raw, role.peer().out_parity()),
            out_seq_no,
            noop,
            None,
            rng,
        )?;
        let replacement = OutboxEntry {
            random_id: noop_id,
            method: SendMethod::SendEncryptedService,
            data,
            from_app: false,
            ..entry
        };
        self.outbox.insert(replacement.clone());
        let transmit = self.transmit_of(&replacement);
        let out = Output {
            outbox_put: vec![replacement],
            ..Output::default()
        };
        Ok((out, transmit))
    }

    /// Wraps `message` in `decryptedMessageLayer` and encrypts it (random bytes and padding
    /// from `entropy` if given, else from `rng`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn seal(
        &self,
        key: &AuthKey,
        layer: i32,
        in_seq_no: i32,
        out_seq_no: i32,
        message: DecryptedMessage,
        entropy: Option<MessageEntropy>,
        rng: &mut dyn SecureRandom,
    ) -> Result<Vec<u8>, SendError> {
        let x = self.state.auth.role.kdf_x();
        let wrap = |random_bytes| {
            types::DecryptedMessageLayer {
                random_bytes,
                layer,
                in_seq_no,
                out_seq_no,
                message,
            }
            .to_bytes()
        };
        match entropy {
            None => {
                let mut random_bytes = vec![0u8; RANDOM_BYTES_LEN];
                rng.fill(&mut random_bytes);
                Ok(crypto::encrypt_message(key, x, &wrap(random_bytes), rng))
            }
            Some(e) => {
                if !(MIN_RANDOM_BYTES..=255).contains(&e.random_bytes.len()) {
                    return Err(SendError::invalid(
                        "random_bytes",
                        format!("{MIN_RANDOM_BYTES} to 255 bytes"),
                    ));
                }
                crypto::encrypt_message_with_padding(key, x, &wrap(e.random_bytes), &e.padding)
                    .map_err(|err| SendError::invalid("padding", err.to_string()))
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // The server's answers

    /// Reports that the server accepted an outgoing message. An entry the peer already
    /// acknowledged (its answer came late) is removed now.
    pub fn on_sent(&mut self, random_id: i64, date: i32) -> Output {
        let out = match self.outbox.mark_sent(random_id, date) {
            Some(entry) if entry.out_raw < self.state.seq.peer_in_raw => {
                self.outbox.remove(entry.out_raw);
                Output {
                    outbox_remove: vec![entry.out_raw],
                    events: vec![Event::Sent { random_id, date }],
                    ..Default::default()
                }
            }
            Some(entry) => Output {
                outbox_put: vec![entry],
                events: vec![Event::Sent { random_id, date }],
                ..Default::default()
            },
            None => Output::default(),
        };
        self.finish(out)
    }

    /// Reports that the server refused an outgoing message. `Retry` changes nothing (send the
    /// same bytes again later); `Fatal` closes the chat, since a used seq slot that can never be
    /// delivered leaves the peer with a permanent gap (digest §9, as TDLib). Unless the error
    /// says the chat is already gone (`ENCRYPTION_DECLINED`), the server is told with
    /// `discardEncryption`.
    pub fn on_send_failed(&mut self, random_id: i64, failure: &SendFailure) -> Output {
        let out = match failure {
            _ if self.outbox.find(random_id).is_none() => Output::default(),
            SendFailure::Retry => Output::default(),
            SendFailure::Fatal { error } if error == "ENCRYPTION_DECLINED" => self.close(
                DiscardReason::Remote {
                    history_deleted: false,
                },
                None,
            ),
            SendFailure::Fatal { error } => self.close(
                DiscardReason::ServerRefused {
                    error: error.clone(),
                },
                Some(Call::DiscardEncryption {
                    delete_history: false,
                }),
            ),
        };
        self.finish(out)
    }
}
