//! The gap queue: peer messages that arrived ahead of a hole, decrypted and authenticated, kept
//! until the hole is filled.
//!
//! Invariant: every key is `>= in_raw` (the next expected peer message); at most
//! [`MAX_GAP_QUEUE`] entries and [`MAX_GAP_BYTES`] of plaintext are held, so a peer (or a
//! replaying server) cannot make the chat grow without bound.

use std::collections::BTreeMap;

use super::state::QueuedMessage;

/// Most peer messages held ahead of a gap; further ones are dropped and asked for again later.
pub const MAX_GAP_QUEUE: usize = 1000;
/// Most plaintext bytes held ahead of a gap.
pub const MAX_GAP_BYTES: usize = 16 << 20;

/// Peer messages held ahead of a gap, by raw out number.
#[derive(Clone, Debug, Default)]
pub(crate) struct GapQueue {
    held: BTreeMap<u32, QueuedMessage>,
    bytes: usize,
}

/// The queue has no room for a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

impl GapQueue {
    /// Builds the queue from stored entries, dropping those already processed (`< in_raw`).
    pub(crate) fn restore(entries: impl IntoIterator<Item = QueuedMessage>, in_raw: u32) -> Self {
        let mut q = GapQueue::default();
        for m in entries {
            if m.out_raw >= in_raw {
                q.bytes += m.plaintext.len();
                q.held.insert(m.out_raw, m);
            }
        }
        q
    }

    pub(crate) fn contains(&self, out_raw: u32) -> bool {
        self.held.contains_key(&out_raw)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether a message of `len` plaintext bytes would fit.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.held.len() < MAX_GAP_QUEUE && self.bytes.saturating_add(len) <= MAX_GAP_BYTES
    }

    /// Holds a message (the caller checked it is ahead of `in_raw` and not held yet).
    pub(crate) fn insert(&mut self, m: QueuedMessage) -> Result<(), Full> {
        if !self.has_room(m.plaintext.len()) {
            return Err(Full);
        }
        self.bytes += m.plaintext.len();
        if let Some(old) = self.held.insert(m.out_raw, m) {
            self.bytes -= old.plaintext.len();
        }
        Ok(())
    }

    /// Takes the message in slot `out_raw`, if held.
    pub(crate) fn take(&mut self, out_raw: u32) -> Option<QueuedMessage> {
        let m = self.held.remove(&out_raw)?;
        self.bytes -= m.plaintext.len();
        Some(m)
    }

    /// The hole before the first held message, as inclusive raw numbers, given the next
    /// expected one; `None` if nothing is held or there is no hole.
    pub(crate) fn first_hole(&self, in_raw: u32) -> Option<(u32, u32)> {
        let (&first, _) = self.held.iter().next()?;
        (first > in_raw).then(|| (in_raw, first - 1))
    }

    /// Empties the queue; returns the removed keys.
    pub(crate) fn clear(&mut self) -> Vec<u32> {
        self.bytes = 0;
        std::mem::take(&mut self.held).into_keys().collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.held.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyFingerprint;

    fn q(out_raw: u32, len: usize) -> QueuedMessage {
        QueuedMessage {
            out_raw,
            random_id: i64::from(out_raw),
            date: 0,
            plaintext: vec![0; len],
            key_fingerprint: KeyFingerprint([0; 8]),
            resend_done: false,
        }
    }

    #[test]
    fn the_first_hole_lies_before_the_first_held_message() {
        let mut g = GapQueue::default();
        assert_eq!(g.first_hole(3), None);
        g.insert(q(7, 4)).expect("room");
        g.insert(q(5, 4)).expect("room");
        assert_eq!(g.first_hole(3), Some((3, 4)));
        assert_eq!(
            g.first_hole(5),
            None,
            "no hole when the next expected one is held"
        );
        assert_eq!(g.take(5).map(|m| m.out_raw), Some(5));
        assert_eq!(g.first_hole(6), Some((6, 6)));
    }

    #[test]
    fn the_queue_is_bounded_by_count_and_by_bytes() {
        let mut g = GapQueue::default();
        for i in 0..MAX_GAP_QUEUE as u32 {
            g.insert(q(i + 1, 1)).expect("room");
        }
        assert_eq!(g.insert(q(5000, 1)), Err(Full));
        g.clear();
        g.insert(q(1, MAX_GAP_BYTES - 10)).expect("room");
        assert_eq!(g.insert(q(2, 11)), Err(Full));
        g.insert(q(2, 10)).expect("exactly full");
        assert_eq!(
            g.take(1).map(|m| m.plaintext.len()),
            Some(MAX_GAP_BYTES - 10)
        );
        g.insert(q(3, 100)).expect("room again");
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn restore_keeps_only_unprocessed_messages() {
        let g = GapQueue::restore([q(1, 2), q(4, 2), q(9, 2)], 4);
        assert_eq!(g.iter().map(|m| m.out_raw).collect::<Vec<_>>(), vec![4, 9]);
        assert!(g.contains(9) && !g.contains(1));
    }
}
