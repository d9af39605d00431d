//! Resend (digest §4.3): asking the peer for a hole in its messages, and answering the peer's
//! requests from the outbox with the original bytes.
//!
//! We ask once per hole and again only after [`RESEND_RETRY_SECS`] (the request is in the seq
//! record, so the rule survives restarts). A requested slot we still hold is answered with its
//! exact bytes (same seq numbers, same random_id, same method); a slot the peer has already
//! acknowledged is filled with a Noop under the same seq numbers (the documented exception to
//! slot uniqueness, see [`super::Chat`]); a request for a slot we never used, or for more than
//! [`MAX_RESEND_RANGE`] slots, closes the chat.

use super::outputs::{Call, Output, Transmit};
use super::state::{DiscardReason, ProtocolViolation, ResendRequest, SendMethod};
use super::{Chat, MAX_RESEND_RANGE, RESEND_RETRY_SECS, encode_seq, service};
use crate::rand::SecureRandom;
use crate::tl::enums::DecryptedMessageAction as A;
use crate::tl::types;

impl Chat {
    /// Asks the peer for the hole before the first queued message, once per hole (again only
    /// after [`RESEND_RETRY_SECS`], or when `force`).
    pub(super) fn request_missing(
        &mut self,
        now: u64,
        rng: &mut dyn SecureRandom,
        force: bool,
    ) -> Output {
        let Some((start, end)) = self.gap.first_hole(self.state.seq.in_raw) else {
            return Output::default();
        };
        if let Some(r) = &self.state.seq.resend_request {
            let pending = r.start_raw <= start && r.end_raw >= start;
            if pending && !force && now < r.at.saturating_add(RESEND_RETRY_SECS) {
                return Output::default();
            }
        }
        let parity = self.state.auth.role.peer().out_parity();
        let action = A::Resend(types::DecryptedMessageActionResend {
            start_seq_no: encode_seq(start, parity),
            end_seq_no: encode_seq(end, parity),
        });
        self.seq_mut().resend_request = Some(ResendRequest {
            start_raw: start,
            end_raw: end,
            at: now,
        });
        self.internal(action, now, rng)
    }

    /// Answers the peer's Resend.
    pub(super) fn on_resend(
        &mut self,
        r: &types::DecryptedMessageActionResend,
        now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Output {
        let parity = self.state.auth.role.out_parity();
        let bad = || ProtocolViolation::BadResend {
            start_seq_no: r.start_seq_no,
            end_seq_no: r.end_seq_no,
        };
        if r.start_seq_no < 0
            || r.end_seq_no < r.start_seq_no
            || r.start_seq_no % 2 != parity
            || r.end_seq_no % 2 != parity
        {
            return self.fatal(bad());
        }
        let (s, e) = ((r.start_seq_no / 2) as u32, (r.end_seq_no / 2) as u32);
        if e - s + 1 > MAX_RESEND_RANGE || e >= self.state.seq.out_raw {
            return self.fatal(bad());
        }
        let mut out = Output::default();
        for raw in s..=e {
            match self.outbox.get(raw) {
                Some(entry) => out.calls.push(Call::Send(self.transmit_of(entry))),
                None => match self.filler(raw, now, rng) {
                    Ok(t) => out.calls.push(Call::Send(t)),
                    Err(error) => {
                        out.merge(self.close(
                            DiscardReason::CannotSend {
                                action: "decryptedMessageActionNoop".into(),
                                error,
                            },
                            Some(Call::DiscardEncryption {
                                delete_history: false,
                            }),
                        ));
                        return out;
                    }
                },
            }
        }
        out
    }

    /// A Noop in slot `raw`, which the peer has acknowledged and we no longer hold. Its
    /// in_seq_no lies between those of its neighbours (the next held entry's, or our current
    /// one), which keeps the peer's view of our in_seq_no monotonic.
    fn filler(
        &mut self,
        raw: u32,
        _now: u64,
        rng: &mut dyn SecureRandom,
    ) -> Result<Transmit, String> {
        let Some(key) = self.state.pfs.key.as_ref().map(|k| k.key.clone()) else {
            return Err("no key".into());
        };
        let role = self.state.auth.role;
        let in_raw = self.outbox.in_raw_for_filler(raw, self.state.seq.in_raw);
        let random_id = self.pick_random_id(None, rng).map_err(|e| e.to_string())?;
        let out_seq_no = encode_seq(raw, role.out_parity());
        let noop = service(random_id, A::Noop(types::DecryptedMessageActionNoop {}));
        let data = self
            .seal(
                &key,
                self.send_layer(),
                encode_seq(in_raw, role.peer().out_parity()),
                out_seq_no,
                noop,
                None,
                rng,
            )
            .map_err(|e| e.to_string())?;
        Ok(Transmit {
            method: SendMethod::SendEncryptedService,
            random_id,
            data,
            out_seq_no,
            in_outbox: false,
        })
    }
}
