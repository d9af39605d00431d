//! The per-chat state machine.
//!
//! A [`Chat`] takes inputs (an application send, an encrypted message from the server, a chat update,
//! a send result, a clock tick) and answers each with an [`Output`]: what to store, what to send and
//! what to tell the application. The caller must apply an output in this order:
//!
//! 1. persist, in one durable batch: the records of [`Chat::state`] that [`Output::changed`]
//!    names, the `outbox_*` and `gap_*` entries, and the events if the application's inbox is
//!    stored;
//! 2. only then perform the `calls` (in order, per chat) and deliver the events.
//!
//! A chat rebuilt with [`Chat::restore`] from any records it once reported continues correctly:
//! seq numbers are never reused, the outbox keeps the exact bytes of every unacknowledged message,
//! and a new key is stored before AcceptKey or CommitKey can leave.
//!
//! # Entry points
//!
//! | flow | starts in |
//! | --- | --- |
//! | creating a chat | [`Chat::request`], [`Chat::from_request`] + [`Chat::accept`], then [`Chat::on_remote_update`] (`handshake.rs`) |
//! | the application sends | [`Chat::send_message`] (`send.rs`); [`Chat::discard`] |
//! | the server answers a send | [`Chat::on_sent`], [`Chat::on_send_failed`] (`send.rs`) |
//! | a peer message arrives | [`Chat::receive`] (`receive.rs`), which may answer a Resend (`resend.rs`) or step a re-key (`rekey.rs`) |
//! | time passes | [`Chat::tick`] at [`Chat::next_deadline`] (re-key after 7 days, repeated Resend requests) |
//! | a restart | [`Chat::restore`], [`Chat::after_restart`], [`Chat::unsent`] |
//!
//! # The one exception to "a seq slot is never reused under one key"
//!
//! When the peer asks us (Resend) for a slot whose message it has already acknowledged, we no
//! longer hold its bytes; the slot is filled with a new Noop under the same seq numbers (TDLib
//! closes the chat instead). The peer processed the original, so it drops the Noop as a
//! duplicate: two different texts under one (key, out_seq_no) can only exist in this case.

mod errors;
mod handshake;
mod inbound;
mod outbox;
mod outputs;
mod receive;
mod rekey;
mod resend;
mod send;
mod state;

pub use errors::{HandshakeError, ReceiveError, RestoreError, SendError};
pub use inbound::{MAX_GAP_BYTES, MAX_GAP_QUEUE};
pub use outputs::{
    Call, Changed, ChatRequest, Event, IncomingEncrypted, MessageEntropy, Output, RemoteChat,
    RequestEncryption, SendFailure, Sent, Transmit,
};
pub use receive::Peek;
pub use send::default_method;
pub use state::{
    AuthState, ChatState, ChatSummary, ConfigState, DiscardReason, EarlyMessage, KeyState,
    OutboxEntry, PfsState, ProtocolViolation, QueuedMessage, Rekey, ResendRequest, SendMethod,
    SeqState, Stage, Status,
};

use crate::Role;
use crate::crypto::KeyFingerprint;
use crate::rand::SecureRandom;
use crate::tl::enums::DecryptedMessageAction;
use crate::tl::{self, types};

use inbound::GapQueue;
use outbox::Outbox;

/// The secret layer this implementation speaks.
pub const OUR_LAYER: i32 = tl::LAYER;
/// The lowest layer we ever write in `decryptedMessageLayer` (MTProto 2.0).
pub const MIN_LAYER: i32 = 73;
/// The peer layer assumed until the peer tells us more (the docs' starting value).
pub const INITIAL_PEER_LAYER: i32 = 46;
/// Re-key after this many messages (in + out) under one key.
pub const REKEY_AFTER_MESSAGES: u32 = 100;
/// Re-key after a key has been in use this long (seconds, injected clock).
pub const REKEY_AFTER_SECS: u64 = 7 * 24 * 3600;
/// Largest Resend range honoured (TDLib's MAX_RESEND_COUNT).
pub const MAX_RESEND_RANGE: u32 = 1000;
/// Most messages held while waiting for the peer's acceptance.
pub const MAX_EARLY: usize = 64;
/// Most encrypted bytes held while waiting for the peer's acceptance.
pub const MAX_EARLY_BYTES: usize = 1 << 20;
/// Largest outgoing message (serialized `DecryptedMessage`).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Bytes of `random_bytes` in each message (the docs demand at least 15; TDLib sends 31).
pub const RANDOM_BYTES_LEN: usize = 31;
/// Fewest `random_bytes` accepted from the peer (docs: ignore messages with fewer).
pub const MIN_RANDOM_BYTES: usize = 15;
/// A Resend request without an answer is repeated after this long (seconds).
pub const RESEND_RETRY_SECS: u64 = 30;
/// Largest raw seq number (so that `2 * raw + 1` fits an `int`).
const MAX_RAW_SEQ: u32 = (i32::MAX as u32 - 1) / 2;

fn encode_seq(raw: u32, parity: i32) -> i32 {
    // raw <= MAX_RAW_SEQ keeps this in range.
    (raw as i32).wrapping_mul(2).wrapping_add(parity)
}

/// One secret chat.
#[derive(Clone, Debug)]
pub struct Chat {
    state: ChatState,
    outbox: Outbox,
    gap: GapQueue,
    /// Records changed since the last output was handed out (never persisted).
    dirty: Changed,
}

impl Chat {
    fn from_state(state: ChatState, outbox: Outbox, gap: GapQueue) -> Chat {
        Chat {
            state,
            outbox,
            gap,
            dirty: Changed::default(),
        }
    }

    // ------------------------------------------------------------------------------------------
    // Change tracking: every mutable access to a record marks it; every public input hands the
    // marks out in its Output, so a record can never change without being reported.

    fn auth_mut(&mut self) -> &mut AuthState {
        self.dirty.auth = true;
        &mut self.state.auth
    }

    fn config_mut(&mut self) -> &mut ConfigState {
        self.dirty.config = true;
        &mut self.state.config
    }

    fn pfs_mut(&mut self) -> &mut PfsState {
        self.dirty.pfs = true;
        &mut self.state.pfs
    }

    fn seq_mut(&mut self) -> &mut SeqState {
        self.dirty.seq = true;
        &mut self.state.seq
    }

    /// Hands the change marks out with the output of a public input.
    fn finish(&mut self, mut out: Output) -> Output {
        out.changed.include(std::mem::take(&mut self.dirty));
        out
    }

    /// For a refused input: nothing changed (a record may have been touched and put back).
    fn refuse<T, E>(&mut self, r: Result<T, E>) -> Result<T, E> {
        if r.is_err() {
            self.dirty = Changed::default();
        }
        r
    }

    /// Records changed but not yet reported in an output. Always empty between inputs; the
    /// tests check it after every output.
    #[doc(hidden)]
    pub fn unreported_changes(&self) -> Changed {
        self.dirty
    }

    // ------------------------------------------------------------------------------------------
    // Restoring

    /// Restores a chat from the records earlier outputs made the caller store.
    pub fn restore(
        state: ChatState,
        outbox: impl IntoIterator<Item = OutboxEntry>,
        gap: impl IntoIterator<Item = QueuedMessage>,
    ) -> Result<Chat, RestoreError> {
        let bad = |w: &str| RestoreError::Inconsistent(w.into());
        let seq = &state.seq;
        if seq.in_raw > MAX_RAW_SEQ || seq.out_raw > MAX_RAW_SEQ || seq.peer_in_raw > seq.out_raw {
            return Err(bad("seq counters out of range"));
        }
        let ready = matches!(state.auth.stage, Stage::Ready);
        if ready && state.pfs.key.is_none() {
            return Err(bad("ready chat without a key"));
        }
        if !ready
            && !state.auth.stage.is_discarded()
            && (seq.out_raw != 0 || seq.in_raw != 0 || state.pfs.key.is_some())
        {
            return Err(bad("keys or messages before the chat was ready"));
        }
        if let Some(k) = &state.pfs.key
            && k.since_seq > seq.out_raw.saturating_add(seq.in_raw)
        {
            return Err(bad("key counted from beyond the seq counters"));
        }
        let outbox = Outbox::restore(outbox, seq.out_raw, seq.peer_in_raw).map_err(bad)?;
        let gap = GapQueue::restore(gap, seq.in_raw);
        Ok(Chat::from_state(state, outbox, gap))
    }

    /// Work to do after a (re)start: announce a newer layer if this software gained one.
    /// Unsent outbox entries are in [`Chat::unsent`].
    pub fn after_restart(&mut self, now: u64, rng: &mut dyn SecureRandom) -> Output {
        let out = if self.is_ready() && self.state.config.announced_layer < OUR_LAYER {
            self.announce_layer(now, rng)
        } else {
            Output::default()
        };
        self.finish(out)
    }

    // ------------------------------------------------------------------------------------------
    // Accessors

    /// The persisted records (write those an output names in [`Output::changed`]).
    pub fn state(&self) -> &ChatState {
        &self.state
    }

    /// The outbox: unacknowledged outgoing messages, by raw out number.
    pub fn outbox(&self) -> impl Iterator<Item = &OutboxEntry> {
        self.outbox.iter()
    }

    /// The gap queue: peer messages held ahead of a hole, by raw out number.
    pub fn gap_queue(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.gap.iter()
    }

    /// Outbox entries the server has not yet accepted, in seq order: send these (again) after a
    /// restart or a failed attempt.
    pub fn unsent(&self) -> Vec<Transmit> {
        self.outbox
            .iter()
            .filter(|e| e.sent_date.is_none())
            .map(|e| self.transmit_of(e))
            .collect()
    }

    /// Looks up an outbox entry by random_id (for idempotent retries).
    pub fn outbox_entry(&self, random_id: i64) -> Option<&OutboxEntry> {
        self.outbox.find(random_id)
    }

    /// The chat id.
    pub fn id(&self) -> i32 {
        self.state.auth.chat_id
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.state.auth.stage.status()
    }

    /// The stage (the status with its data).
    pub fn stage(&self) -> &Stage {
        &self.state.auth.stage
    }

    fn is_ready(&self) -> bool {
        matches!(self.state.auth.stage, Stage::Ready)
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.state.auth.role
    }

    /// Fingerprint of the key in use.
    pub fn key_fingerprint(&self) -> Option<KeyFingerprint> {
        self.state.pfs.key.as_ref().map(|k| k.key.fingerprint())
    }

    /// The key visualization: SHA1(initial key)[..16] || SHA256(key in use)[..20].
    pub fn visualization(&self) -> Option<[u8; 36]> {
        self.state.visualization()
    }

    /// The chat as the outside world sees it (never the key).
    pub fn summary(&self) -> ChatSummary {
        self.state.summary()
    }

    /// The layer written in our next message: min(ours, peer's), at least [`MIN_LAYER`].
    pub fn send_layer(&self) -> i32 {
        OUR_LAYER.min(self.state.config.peer_layer).max(MIN_LAYER)
    }

    /// Messages (in + out) processed under the key in use.
    pub fn messages_since_rekey(&self) -> u32 {
        self.messages_under_key()
    }

    fn transmit_of(&self, e: &OutboxEntry) -> Transmit {
        Transmit {
            method: e.method,
            random_id: e.random_id,
            data: e.data.clone(),
            out_seq_no: encode_seq(e.out_raw, self.state.auth.role.out_parity()),
            in_outbox: true,
        }
    }

    // ------------------------------------------------------------------------------------------
    // Time

    /// When [`Chat::tick`] must next run (injected clock), if ever: the 7-day re-key, or the
    /// repetition of an unanswered Resend request. Arm one timer for it; call it again after
    /// every output.
    pub fn next_deadline(&self) -> Option<u64> {
        let resend = (self.is_ready() && !self.gap.is_empty()).then(|| {
            self.state
                .seq
                .resend_request
                .as_ref()
                .map_or(0, |r| r.at.saturating_add(RESEND_RETRY_SECS))
        });
        match (self.rekey_deadline(), resend) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time-driven work: the 7-day re-key and repeating an unanswered Resend request. Call it at
    /// [`Chat::next_deadline`] and after a restart; calling it early does no harm.
    pub fn tick(&mut self, now: u64, rng: &mut dyn SecureRandom) -> Output {
        let mut out = Output::default();
        if self.is_ready() {
            out = self.maybe_start_rekey(now, rng);
            if !self.gap.is_empty() && self.is_ready() {
                out.merge(self.request_missing(now, rng, false));
            }
        }
        self.finish(out)
    }

    // ------------------------------------------------------------------------------------------
    // Closing

    /// Closes the chat on the user's request (also declines a requested chat).
    pub fn discard(&mut self, delete_history: bool) -> Output {
        let out = self.close(
            DiscardReason::Local { delete_history },
            Some(Call::DiscardEncryption { delete_history }),
        );
        self.finish(out)
    }

    /// Closes the chat because the server refused a chat-level call for good (a
    /// `requestEncryption` or `acceptEncryption` answered with a terminal error): the chat does
    /// not exist at the server, so nothing is sent.
    pub fn close_refused(&mut self, error: &str) -> Output {
        let out = self.close(
            DiscardReason::ServerRefused {
                error: error.into(),
            },
            None,
        );
        self.finish(out)
    }

    /// Closes the chat because the account logged out: Telegram discarded it with the
    /// device's authorization, so nothing is sent.
    pub fn close_logged_out(&mut self) -> Output {
        let out = self.close(DiscardReason::LoggedOut, None);
        self.finish(out)
    }

    fn close(&mut self, reason: DiscardReason, call: Option<Call>) -> Output {
        if self.state.auth.stage.is_discarded() {
            return Output::default();
        }
        self.auth_mut().stage = Stage::Discarded(reason.clone());
        let pfs = &self.state.pfs;
        if pfs.key.is_some() || pfs.old_key.is_some() || pfs.rekey != Rekey::Idle {
            // Nothing of the chat's secrets outlives it.
            let pfs = self.pfs_mut();
            pfs.key = None;
            pfs.old_key = None;
            pfs.rekey = Rekey::Idle;
        }
        if self.state.seq.resend_request.is_some() {
            self.seq_mut().resend_request = None;
        }
        Output {
            outbox_remove: self.outbox.clear(),
            gap_remove: self.gap.clear(),
            calls: call.into_iter().collect(),
            events: vec![Event::StatusChanged(Status::Discarded(reason))],
            ..Default::default()
        }
    }

    fn fatal(&mut self, v: ProtocolViolation) -> Output {
        self.close(
            DiscardReason::Protocol(v),
            Some(Call::DiscardEncryption {
                delete_history: false,
            }),
        )
    }

    /// Sends a protocol message of our own (NotifyLayer, Resend, the re-key set, Noop). If it
    /// cannot be created, the chat closes: moving on without it would leave the peer waiting
    /// for a message that never comes.
    fn internal(
        &mut self,
        action: DecryptedMessageAction,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let name = action.constructor_name();
        let sent = self.pick_random_id(None, rng).and_then(|random_id| {
            self.queue_service(
                action,
                random_id,
                SendMethod::SendEncryptedService,
                false,
                None,
                now,
                rng,
            )
        });
        match sent {
            Ok(s) => s.output,
            Err(e) => self.close(
                DiscardReason::CannotSend {
                    action: name.into(),
                    error: e.to_string(),
                },
                Some(Call::DiscardEncryption {
                    delete_history: false,
                }),
            ),
        }
    }
}

/// A random positive chat id for `messages.requestEncryption` (check it is unused locally).
pub fn random_chat_id(rng: &mut dyn SecureRandom) -> i32 {
    loop {
        let v = (rng.next_u32() & 0x7fff_ffff) as i32;
        if v != 0 {
            return v;
        }
    }
}

fn service(random_id: i64, action: DecryptedMessageAction) -> tl::enums::DecryptedMessage {
    tl::enums::DecryptedMessage::Service(types::DecryptedMessageService { random_id, action })
}
