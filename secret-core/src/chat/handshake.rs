//! Creating a chat (digest §6): the creator's request, the acceptor's acceptance, and the server's
//! view of the chat (`updateEncryption`, or a method's result) that completes the creator's side.
//!
//! The creator's secret `a` is stored (in [`Stage::Waiting`]) before `requestEncryption` leaves;
//! the acceptor's key is stored, and the chat is ready, before `acceptEncryption` leaves; both
//! sides announce their layer with NotifyLayer as their first message.

use super::outputs::{Call, ChatRequest, Event, IncomingEncrypted, Output, RemoteChat};
use super::state::{
    AuthState, ChatState, ConfigState, DiscardReason, KeyState, PfsState, ProtocolViolation, Rekey,
    SeqState, Stage,
};
use super::{
    Changed, Chat, GapQueue, HandshakeError, INITIAL_PEER_LAYER, OUR_LAYER, Outbox,
    RequestEncryption,
};
use crate::Role;
use crate::crypto::{self, AuthKey};
use crate::dh::{self, DhConfig, DhError, DhKeyPair, DhSecret};
use crate::rand::SecureRandom;
use crate::tl::enums::DecryptedMessageAction;
use crate::tl::types;

fn new_state(
    chat_id: i32,
    self_user_id: i64,
    peer_user_id: i64,
    role: Role,
    stage: Stage,
    dh: DhConfig,
    now: u64,
) -> ChatState {
    ChatState {
        auth: AuthState {
            chat_id,
            access_hash: 0,
            self_user_id,
            peer_user_id,
            role,
            stage,
            dh,
            created_at: now,
        },
        config: ConfigState {
            peer_layer: INITIAL_PEER_LAYER,
            peer_message_layer: 0,
            announced_layer: 0,
            ttl_seconds: 0,
        },
        pfs: PfsState {
            key: None,
            old_key: None,
            initial_key_sha1_16: None,
            rekey: Rekey::Idle,
        },
        seq: SeqState {
            out_raw: 0,
            in_raw: 0,
            peer_in_raw: 0,
            resend_request: None,
        },
    }
}

/// A new chat's output: every record is written.
fn created(status_event: Event) -> Output {
    Output {
        changed: Changed::all(),
        events: vec![status_event],
        ..Default::default()
    }
}

impl Chat {
    /// Starts a chat as its creator. The daemon calls `messages.requestEncryption` with the
    /// returned values (after storing the output) and then feeds the result to
    /// [`Chat::on_remote_update`]. `chat_id` is the int32 random_id (use
    /// [`super::random_chat_id`] and make sure it is not in use locally); `server_random` is the
    /// `random` of `messages.getDhConfig`, mixed into ours.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        chat_id: i32,
        self_user_id: i64,
        peer_user_id: i64,
        dh: DhConfig,
        server_random: &[u8],
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<(Chat, RequestEncryption, Output), HandshakeError> {
        let pair = dh::generate_key_pair(&dh, rng, server_random).map_err(HandshakeError::Dh)?;
        Ok(Self::requested_with(
            chat_id,
            self_user_id,
            peer_user_id,
            dh,
            pair,
            now,
        ))
    }

    /// [`Chat::request`] with the secret exponent `a` given instead of drawn (interoperability
    /// tests against published or independently computed values).
    pub fn request_with_secret(
        chat_id: i32,
        self_user_id: i64,
        peer_user_id: i64,
        dh: DhConfig,
        secret: DhSecret,
        now: u64,
    ) -> Result<(Chat, RequestEncryption, Output), HandshakeError> {
        let pair = dh::key_pair_from_secret(&dh, secret).map_err(HandshakeError::Dh)?;
        Ok(Self::requested_with(
            chat_id,
            self_user_id,
            peer_user_id,
            dh,
            pair,
            now,
        ))
    }

    fn requested_with(
        chat_id: i32,
        self_user_id: i64,
        peer_user_id: i64,
        dh: DhConfig,
        pair: DhKeyPair,
        now: u64,
    ) -> (Chat, RequestEncryption, Output) {
        let stage = Stage::Waiting {
            secret: pair.secret,
            early: Vec::new(),
        };
        let state = new_state(
            chat_id,
            self_user_id,
            peer_user_id,
            Role::Creator,
            stage,
            dh,
            now,
        );
        let chat = Chat::from_state(state, Outbox::default(), GapQueue::default());
        let req = RequestEncryption {
            user_id: peer_user_id,
            random_id: chat_id,
            g_a: pair.public,
        };
        (
            chat,
            req,
            created(Event::StatusChanged(super::Status::Waiting)),
        )
    }

    /// Records an incoming chat request (`encryptedChatRequested`); accept it with
    /// [`Chat::accept`] or decline it with [`Chat::discard`].
    pub fn from_request(
        req: &ChatRequest,
        self_user_id: i64,
        dh: DhConfig,
        now: u64,
    ) -> Result<(Chat, Output), HandshakeError> {
        if req.participant_id != self_user_id {
            return Err(HandshakeError::BadRequest(
                "participant_id is not us".into(),
            ));
        }
        if req.admin_id == self_user_id {
            return Err(HandshakeError::BadRequest("admin_id is us".into()));
        }
        let stage = Stage::Requested {
            g_a: req.g_a.clone(),
        };
        let mut state = new_state(
            req.chat_id,
            self_user_id,
            req.admin_id,
            Role::Acceptor,
            stage,
            dh,
            now,
        );
        state.auth.access_hash = req.access_hash;
        let chat = Chat::from_state(state, Outbox::default(), GapQueue::default());
        Ok((
            chat,
            created(Event::StatusChanged(super::Status::Requested)),
        ))
    }

    /// Accepts a requested chat: computes the key, becomes ready, and asks the daemon to call
    /// `messages.acceptEncryption` and then to announce our layer. A g_a that fails validation
    /// discards the chat instead (the output then carries `DiscardEncryption`).
    pub fn accept(
        &mut self,
        server_random: &[u8],
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Output, HandshakeError> {
        let r = self.accept_inner(
            |dh, rng| dh::generate_key_pair(dh, rng, server_random),
            now,
            rng,
        );
        let out = self.refuse(r)?;
        Ok(self.finish(out))
    }

    /// [`Chat::accept`] with the secret exponent `b` given instead of drawn.
    pub fn accept_with_secret(
        &mut self,
        secret: DhSecret,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Output, HandshakeError> {
        let r = self.accept_inner(|dh, _| dh::key_pair_from_secret(dh, secret), now, rng);
        let out = self.refuse(r)?;
        Ok(self.finish(out))
    }

    fn accept_inner(
        &mut self,
        key_pair: impl FnOnce(&DhConfig, &mut dyn SecureRandom) -> Result<DhKeyPair, DhError>,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Output, HandshakeError> {
        let (Stage::Requested { g_a }, Role::Acceptor) =
            (&self.state.auth.stage, self.state.auth.role)
        else {
            return Err(HandshakeError::WrongState(
                "only a requested chat can be accepted".into(),
            ));
        };
        let g_a = g_a.clone();
        let dhc = self.state.auth.dh.clone();
        if let Err(e) = dh::check_public_value(&dhc, &g_a) {
            return Ok(self.fatal(ProtocolViolation::BadDhValue(e.to_string())));
        }
        let pair = key_pair(&dhc, rng).map_err(HandshakeError::Dh)?;
        let key = match dh::compute_shared_key(&dhc, &pair.secret, &g_a) {
            Ok(k) => k,
            Err(e) => return Ok(self.fatal(ProtocolViolation::BadDhValue(e.to_string()))),
        };
        let mut out = Output {
            calls: vec![Call::AcceptEncryption {
                g_b: pair.public,
                key_fingerprint: key.fingerprint().to_i64(),
            }],
            ..Default::default()
        };
        out.merge(self.become_ready(key, now, rng));
        Ok(out)
    }

    /// Applies the server's view of the chat (`updateEncryption`, or the result of
    /// requestEncryption / acceptEncryption). Repeats and stale views change nothing.
    pub fn on_remote_update(
        &mut self,
        update: &RemoteChat,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let out = self.remote_inner(update, now, rng);
        self.finish(out)
    }

    fn remote_inner(
        &mut self,
        update: &RemoteChat,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        if self.state.auth.stage.is_discarded() {
            return Output::default();
        }
        match update {
            RemoteChat::Waiting { access_hash } => {
                self.learn_access_hash(*access_hash);
                Output::default()
            }
            RemoteChat::Discarded { history_deleted } => self.close(
                DiscardReason::Remote {
                    history_deleted: *history_deleted,
                },
                None,
            ),
            RemoteChat::Accepted {
                access_hash,
                g_a_or_b,
                key_fingerprint,
            } => {
                let Stage::Waiting { secret, .. } = &self.state.auth.stage else {
                    // Our own acceptance echoed back, or a repeat: nothing to learn.
                    self.learn_access_hash(*access_hash);
                    return Output::default();
                };
                let key = match dh::compute_shared_key(&self.state.auth.dh, secret, g_a_or_b) {
                    Ok(k) => k,
                    Err(e) => return self.fatal(ProtocolViolation::BadDhValue(e.to_string())),
                };
                if key.fingerprint().to_i64() != *key_fingerprint {
                    return self.fatal(ProtocolViolation::KeyFingerprintMismatch);
                }
                self.learn_access_hash(*access_hash);
                let early = match &mut self.auth_mut().stage {
                    Stage::Waiting { early, .. } => std::mem::take(early),
                    _ => Vec::new(),
                };
                let mut out = self.become_ready(key, now, rng);
                // Messages that overtook the acceptance.
                for m in early {
                    let msg = IncomingEncrypted {
                        random_id: m.random_id,
                        date: m.date,
                        data: m.data,
                    };
                    if let Ok(o) = self.receive_inner(&msg, now, rng) {
                        out.merge(o);
                    }
                }
                out
            }
        }
    }

    fn learn_access_hash(&mut self, access_hash: i64) {
        if access_hash != 0 && self.state.auth.access_hash != access_hash {
            self.auth_mut().access_hash = access_hash;
        }
    }

    fn become_ready(&mut self, key: AuthKey, now: u64, rng: &mut dyn SecureRandom) -> Output {
        let fp = key.fingerprint();
        let sha1 = crypto::sha1(&[key.as_bytes()]);
        let mut initial = [0u8; 16];
        initial.copy_from_slice(&sha1[..16]);
        let since_seq = self.state.seq.out_raw.saturating_add(self.state.seq.in_raw);
        let pfs = self.pfs_mut();
        pfs.initial_key_sha1_16 = Some(initial);
        pfs.key = Some(KeyState {
            key,
            since: now,
            since_seq,
        });
        self.auth_mut().stage = Stage::Ready;
        let mut out = Output {
            events: vec![
                Event::StatusChanged(super::Status::Ready),
                Event::Ready {
                    key_fingerprint: fp,
                    visualization: self.visualization().unwrap_or([0; 36]),
                },
            ],
            ..Default::default()
        };
        out.merge(self.announce_layer(now, rng));
        out
    }

    pub(super) fn announce_layer(&mut self, now: u64, rng: &mut dyn SecureRandom) -> Output {
        let action =
            DecryptedMessageAction::NotifyLayer(types::DecryptedMessageActionNotifyLayer {
                layer: OUR_LAYER,
            });
        let out = self.internal(action, now, rng);
        if self.is_ready() {
            self.config_mut().announced_layer = OUR_LAYER;
        }
        out
    }
}
