//! Re-keying (perfect forward secrecy, digest §5): RequestKey → AcceptKey → CommitKey, with
//! AbortKey, simultaneous requests resolved by exchange_id, and the old key kept until the peer
//! has used the new one.
//!
//! The exchange's state is [`Rekey`] in the PFS record: our secret `a` is stored with the
//! RequestKey that carries `g_a`; the acceptor's new key with the AcceptKey that announces it;
//! the initiator switches in the same output as its CommitKey (the last message under the old
//! key), the acceptor on the CommitKey, after which it sends a Noop under the new key.

use super::outputs::{Event, Output, Sent};
use super::state::{KeyState, ProtocolViolation, Rekey, SendMethod};
use super::{Chat, REKEY_AFTER_MESSAGES, REKEY_AFTER_SECS, SendError};
use crate::crypto::AuthKey;
use crate::dh;
use crate::rand::SecureRandom;
use crate::tl::enums::DecryptedMessageAction as A;
use crate::tl::types;

/// What to do with the peer's RequestKey, given our exchange state (pure; the chat then also
/// checks whether it still holds a previous key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerRequest {
    /// Our own pending request has the larger exchange_id: ignore theirs; they accept ours.
    OursWins,
    /// Both sides picked the same exchange_id: both exchanges are abandoned (digest §5.4).
    BothAbandoned { ours: i64 },
    /// A repeat of the request we already accepted.
    Repeat,
    /// A new request while we wait for the CommitKey of an accepted one.
    Conflict,
    /// Accept theirs, abandoning ours (if any).
    Accept { abandoned: Option<i64> },
}

pub(crate) fn on_peer_request(rekey: &Rekey, theirs: i64) -> PeerRequest {
    match rekey {
        Rekey::Idle => PeerRequest::Accept { abandoned: None },
        Rekey::Requested { exchange_id, .. } if *exchange_id > theirs => PeerRequest::OursWins,
        Rekey::Requested { exchange_id, .. } if *exchange_id == theirs => {
            PeerRequest::BothAbandoned { ours: *exchange_id }
        }
        Rekey::Requested { exchange_id, .. } => PeerRequest::Accept {
            abandoned: Some(*exchange_id),
        },
        Rekey::Accepted { exchange_id, .. } if *exchange_id == theirs => PeerRequest::Repeat,
        Rekey::Accepted { .. } => PeerRequest::Conflict,
    }
}

/// Whether the peer's AbortKey ends our exchange.
pub(crate) fn abort_matches(rekey: &Rekey, exchange_id: i64) -> bool {
    rekey.exchange_id() == Some(exchange_id)
}

fn abort_key(exchange_id: i64) -> A {
    A::AbortKey(types::DecryptedMessageActionAbortKey { exchange_id })
}

impl Chat {
    /// Messages (in + out) under the key in use.
    pub(super) fn messages_under_key(&self) -> u32 {
        let seq = &self.state.seq;
        let total = seq.out_raw.saturating_add(seq.in_raw);
        self.state
            .pfs
            .key
            .as_ref()
            .map_or(0, |k| total.saturating_sub(k.since_seq))
    }

    /// When the 7-day rule makes a re-key due, if one could start.
    pub(super) fn rekey_deadline(&self) -> Option<u64> {
        let pfs = &self.state.pfs;
        let k = pfs.key.as_ref()?;
        (self.is_ready() && pfs.rekey == Rekey::Idle && pfs.old_key.is_none())
            .then(|| k.since.saturating_add(REKEY_AFTER_SECS))
    }

    fn rekey_due(&self, now: u64) -> bool {
        self.rekey_deadline()
            .is_some_and(|at| now >= at || self.messages_under_key() >= REKEY_AFTER_MESSAGES)
    }

    pub(super) fn maybe_start_rekey(&mut self, now: u64, rng: &mut dyn SecureRandom) -> Output {
        if !self.rekey_due(now) {
            return Output::default();
        }
        // An automatic re-key that cannot start (e.g. no seq numbers left) is not a message the
        // protocol owes anyone: the chat carries on with its key.
        match self.start_rekey_inner(None, SendMethod::SendEncryptedService, now, rng) {
            Ok(s) => s.output,
            Err(_) => Output::default(),
        }
    }

    pub(super) fn start_rekey_inner(
        &mut self,
        random_id: Option<i64>,
        method: SendMethod,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        self.check_sendable("start a re-key")?;
        if self.state.pfs.rekey != Rekey::Idle {
            return Err(SendError::RekeyBusy(
                "an exchange is already running".into(),
            ));
        }
        if self.state.pfs.old_key.is_some() {
            return Err(SendError::RekeyBusy(
                "the previous key is still needed".into(),
            ));
        }
        let pair = dh::generate_key_pair(&self.state.auth.dh, rng, &[])
            .map_err(|e| SendError::invalid("dh", e.to_string()))?;
        let mut exchange_id = 0;
        while exchange_id == 0 {
            exchange_id = rng.next_i64();
        }
        let action = A::RequestKey(types::DecryptedMessageActionRequestKey {
            exchange_id,
            g_a: pair.public,
        });
        let random_id = self.pick_random_id(random_id, rng)?;
        // The secret is part of the state persisted with the RequestKey itself.
        let prev = std::mem::replace(
            &mut self.pfs_mut().rekey,
            Rekey::Requested {
                exchange_id,
                secret: pair.secret,
            },
        );
        self.queue_service(action, random_id, method, false, None, now, rng)
            .inspect_err(|_| self.pfs_mut().rekey = prev)
    }

    pub(super) fn abort_rekey_inner(
        &mut self,
        exchange_id: i64,
        random_id: Option<i64>,
        method: SendMethod,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Sent, SendError> {
        self.check_sendable("abort a re-key")?;
        let Rekey::Requested {
            exchange_id: ours, ..
        } = self.state.pfs.rekey
        else {
            return Err(SendError::RekeyBusy(
                "no re-key of ours is waiting for the peer".into(),
            ));
        };
        if exchange_id != 0 && exchange_id != ours {
            return Err(SendError::invalid(
                "exchange_id",
                format!("the running exchange is {ours}"),
            ));
        }
        let random_id = self.pick_random_id(random_id, rng)?;
        let prev = std::mem::replace(&mut self.pfs_mut().rekey, Rekey::Idle);
        let mut sent = self
            .queue_service(abort_key(ours), random_id, method, false, None, now, rng)
            .inspect_err(|_| self.pfs_mut().rekey = prev)?;
        sent.output
            .events
            .push(Event::RekeyAborted { exchange_id: ours });
        Ok(sent)
    }

    /// Makes `new_key` the key in use; the previous one is kept for messages still in flight.
    fn switch_key(&mut self, new_key: AuthKey, now: u64) -> Output {
        let fp = new_key.fingerprint();
        let since_seq = self.state.seq.out_raw.saturating_add(self.state.seq.in_raw);
        let pfs = self.pfs_mut();
        let old = pfs.key.replace(KeyState {
            key: new_key,
            since: now,
            since_seq,
        });
        pfs.old_key = old.map(|k| k.key);
        pfs.rekey = Rekey::Idle;
        Output {
            events: vec![Event::KeyChanged(fp)],
            ..Default::default()
        }
    }

    pub(super) fn on_request_key(
        &mut self,
        a: types::DecryptedMessageActionRequestKey,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let mut out = Output::default();
        match on_peer_request(&self.state.pfs.rekey, a.exchange_id) {
            PeerRequest::OursWins | PeerRequest::Repeat => return out,
            PeerRequest::Conflict => {
                return self.fatal(ProtocolViolation::BadRekey(
                    "RequestKey while another exchange awaits CommitKey".into(),
                ));
            }
            PeerRequest::BothAbandoned { ours } => {
                self.pfs_mut().rekey = Rekey::Idle;
                out.events.push(Event::RekeyAborted { exchange_id: ours });
                return out;
            }
            PeerRequest::Accept { abandoned } => {
                if let Some(ours) = abandoned {
                    self.pfs_mut().rekey = Rekey::Idle;
                    out.events.push(Event::RekeyAborted { exchange_id: ours });
                }
            }
        }
        if self.state.pfs.old_key.is_some() {
            // Still holding a previous key: refuse politely instead of killing the chat.
            out.merge(self.internal(abort_key(a.exchange_id), now, rng));
            return out;
        }
        let dhc = self.state.auth.dh.clone();
        let computed = dh::generate_key_pair(&dhc, rng, &[]).and_then(|pair| {
            dh::compute_shared_key(&dhc, &pair.secret, &a.g_a).map(|k| (k, pair.public))
        });
        let Ok((key, g_b)) = computed else {
            out.merge(self.internal(abort_key(a.exchange_id), now, rng));
            return out;
        };
        let fp = key.fingerprint();
        self.pfs_mut().rekey = Rekey::Accepted {
            exchange_id: a.exchange_id,
            key,
        };
        out.merge(self.internal(
            A::AcceptKey(types::DecryptedMessageActionAcceptKey {
                exchange_id: a.exchange_id,
                g_b,
                key_fingerprint: fp.to_i64(),
            }),
            now,
            rng,
        ));
        out
    }

    pub(super) fn on_accept_key(
        &mut self,
        a: types::DecryptedMessageActionAcceptKey,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let Rekey::Requested {
            exchange_id,
            secret,
        } = &self.state.pfs.rekey
        else {
            return Output::default(); // stale: an exchange we abandoned
        };
        if *exchange_id != a.exchange_id {
            return Output::default();
        }
        let exchange_id = *exchange_id;
        let key = dh::compute_shared_key(&self.state.auth.dh, secret, &a.g_b);
        let key = match key {
            Ok(k) if k.fingerprint().to_i64() == a.key_fingerprint => k,
            _ => {
                // Bad g_b or fingerprint mismatch: abort the exchange, keep the chat.
                self.pfs_mut().rekey = Rekey::Idle;
                let mut out = self.internal(abort_key(exchange_id), now, rng);
                out.events.push(Event::RekeyAborted { exchange_id });
                return out;
            }
        };
        let fp = key.fingerprint();
        // CommitKey is the last message under the old key; the switch follows it.
        let mut out = self.internal(
            A::CommitKey(types::DecryptedMessageActionCommitKey {
                exchange_id,
                key_fingerprint: fp.to_i64(),
            }),
            now,
            rng,
        );
        if self.is_ready() {
            out.merge(self.switch_key(key, now));
        }
        out
    }

    pub(super) fn on_commit_key(
        &mut self,
        a: types::DecryptedMessageActionCommitKey,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let Rekey::Accepted { exchange_id, key } = &self.state.pfs.rekey else {
            return self.fatal(ProtocolViolation::BadRekey(
                "CommitKey without an accepted exchange".into(),
            ));
        };
        if *exchange_id != a.exchange_id || key.fingerprint().to_i64() != a.key_fingerprint {
            return self.fatal(ProtocolViolation::BadRekey(
                "CommitKey does not match the accepted exchange".into(),
            ));
        }
        let key = key.clone();
        let mut out = self.switch_key(key, now);
        // A message under the new key lets the initiator drop the old one (docs: send a Noop).
        out.merge(self.internal(A::Noop(types::DecryptedMessageActionNoop {}), now, rng));
        out
    }

    pub(super) fn on_abort_key(&mut self, a: types::DecryptedMessageActionAbortKey) -> Output {
        if !abort_matches(&self.state.pfs.rekey, a.exchange_id) {
            return Output::default();
        }
        self.pfs_mut().rekey = Rekey::Idle;
        Output {
            events: vec![Event::RekeyAborted {
                exchange_id: a.exchange_id,
            }],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dh::DhSecret;

    fn requested(id: i64) -> Rekey {
        Rekey::Requested {
            exchange_id: id,
            secret: DhSecret::from_array([1; 256]),
        }
    }

    fn accepted(id: i64) -> Rekey {
        Rekey::Accepted {
            exchange_id: id,
            key: AuthKey::from_array([2; 256]),
        }
    }

    #[test]
    fn simultaneous_requests_are_decided_by_exchange_id() {
        assert_eq!(
            on_peer_request(&Rekey::Idle, 5),
            PeerRequest::Accept { abandoned: None }
        );
        assert_eq!(on_peer_request(&requested(9), 5), PeerRequest::OursWins);
        assert_eq!(
            on_peer_request(&requested(5), 9),
            PeerRequest::Accept { abandoned: Some(5) }
        );
        assert_eq!(
            on_peer_request(&requested(5), 5),
            PeerRequest::BothAbandoned { ours: 5 }
        );
        // Negative ids compare as signed 64-bit numbers, as TDLib does.
        assert_eq!(on_peer_request(&requested(-1), -7), PeerRequest::OursWins);
    }

    #[test]
    fn an_accepted_exchange_takes_only_its_own_repeat() {
        assert_eq!(on_peer_request(&accepted(5), 5), PeerRequest::Repeat);
        assert_eq!(on_peer_request(&accepted(5), 6), PeerRequest::Conflict);
    }

    #[test]
    fn an_abort_ends_only_the_running_exchange() {
        assert!(abort_matches(&requested(5), 5));
        assert!(abort_matches(&accepted(5), 5));
        assert!(!abort_matches(&requested(5), 6));
        assert!(!abort_matches(&Rekey::Idle, 0));
    }
}
