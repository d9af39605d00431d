//! The outbox: our messages the peer has not acknowledged yet, with their exact ciphertext.
//!
//! Invariant: every entry has `out_raw < out_counter`; an entry below the peer's in_seq_no
//! (acknowledged) is kept only while the server's answer to it is unknown (`sent_date` is
//! `None`: its send may still be in flight, or lost with a crash), so that it is sent again
//! and its result learned — the server answers a repeated random_id with the first date;
//! random_ids are unique among entries.

use std::collections::{BTreeMap, HashMap};

use super::state::OutboxEntry;

/// Unacknowledged outgoing messages by raw out number, with a random_id index.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outbox {
    entries: BTreeMap<u32, OutboxEntry>,
    by_random_id: HashMap<i64, u32>,
}

impl Outbox {
    /// Builds the outbox from stored entries, dropping those acknowledged and answered (a
    /// removal that was not applied yet). `Err` names the first inconsistency.
    pub(crate) fn restore(
        entries: impl IntoIterator<Item = OutboxEntry>,
        out_raw: u32,
        peer_in_raw: u32,
    ) -> Result<Outbox, &'static str> {
        let mut outbox = Outbox::default();
        for e in entries {
            if e.out_raw >= out_raw {
                return Err("outbox entry beyond the out counter");
            }
            if e.out_raw < peer_in_raw && e.sent_date.is_some() {
                continue;
            }
            if outbox.by_random_id.contains_key(&e.random_id)
                || outbox.entries.contains_key(&e.out_raw)
            {
                return Err("two outbox entries share a random_id or a slot");
            }
            outbox.insert(e);
        }
        Ok(outbox)
    }

    /// Puts an entry (a new one, or an update of the same slot).
    pub(crate) fn insert(&mut self, e: OutboxEntry) {
        if let Some(old) = self.entries.get(&e.out_raw) {
            self.by_random_id.remove(&old.random_id);
        }
        self.by_random_id.insert(e.random_id, e.out_raw);
        self.entries.insert(e.out_raw, e);
    }

    pub(crate) fn get(&self, out_raw: u32) -> Option<&OutboxEntry> {
        self.entries.get(&out_raw)
    }

    pub(crate) fn find(&self, random_id: i64) -> Option<&OutboxEntry> {
        self.by_random_id
            .get(&random_id)
            .and_then(|raw| self.entries.get(raw))
    }

    pub(crate) fn contains_random_id(&self, random_id: i64) -> bool {
        self.by_random_id.contains_key(&random_id)
    }

    /// Records the server's date for an entry; returns the updated entry if it changed.
    pub(crate) fn mark_sent(&mut self, random_id: i64, date: i32) -> Option<OutboxEntry> {
        let raw = *self.by_random_id.get(&random_id)?;
        let e = self.entries.get_mut(&raw)?;
        if e.sent_date.is_some() {
            return None;
        }
        e.sent_date = Some(date);
        Some(e.clone())
    }

    /// Every entry below `peer_in_raw` (acknowledged by the peer) and not acknowledged before
    /// (at or above `previous`): the answered ones are removed, the others stay until
    /// [`Outbox::mark_sent`]. Returns (acknowledged entries, removed out_raws).
    pub(crate) fn acknowledge_below(
        &mut self,
        previous: u32,
        peer_in_raw: u32,
    ) -> (Vec<OutboxEntry>, Vec<u32>) {
        let acked: Vec<OutboxEntry> = self
            .entries
            .range(previous..peer_in_raw)
            .map(|(_, e)| e.clone())
            .collect();
        let mut removed = Vec::new();
        for e in acked.iter().filter(|e| e.sent_date.is_some()) {
            self.entries.remove(&e.out_raw);
            self.by_random_id.remove(&e.random_id);
            removed.push(e.out_raw);
        }
        (acked, removed)
    }

    /// Removes an entry (acknowledged and now answered).
    pub(crate) fn remove(&mut self, out_raw: u32) {
        if let Some(e) = self.entries.remove(&out_raw) {
            self.by_random_id.remove(&e.random_id);
        }
    }

    /// The in_raw a filler placed in slot `out_raw` must carry so that the peer sees its
    /// in_seq_no never decrease: that of the next entry we still hold, or `current`.
    pub(crate) fn in_raw_for_filler(&self, out_raw: u32, current: u32) -> u32 {
        self.entries
            .range(out_raw..)
            .next()
            .map_or(current, |(_, e)| e.in_raw)
    }

    /// Empties the outbox; returns the removed keys.
    pub(crate) fn clear(&mut self) -> Vec<u32> {
        self.by_random_id.clear();
        std::mem::take(&mut self.entries).into_keys().collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &OutboxEntry> {
        self.entries.values()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::SendMethod;
    use super::*;

    fn entry(out_raw: u32, in_raw: u32, random_id: i64) -> OutboxEntry {
        OutboxEntry {
            out_raw,
            in_raw,
            random_id,
            method: SendMethod::SendEncryptedService,
            data: vec![out_raw as u8],
            layer: 144,
            from_app: true,
            created_at: 0,
            sent_date: None,
        }
    }

    #[test]
    fn acknowledging_removes_exactly_the_entries_below() {
        let mut o = Outbox::default();
        for i in 0..5 {
            o.insert(entry(i, i / 2, 100 + i64::from(i)));
        }
        for i in 0..5 {
            o.mark_sent(100 + i64::from(i), 7);
        }
        let (acked, removed) = o.acknowledge_below(0, 3);
        let acked: Vec<u32> = acked.iter().map(|e| e.out_raw).collect();
        assert_eq!((acked, removed), (vec![0, 1, 2], vec![0, 1, 2]));
        assert_eq!(o.len(), 2);
        assert!(o.find(101).is_none() && !o.contains_random_id(102));
        assert_eq!(o.find(103).map(|e| e.out_raw), Some(3));
        assert_eq!(o.acknowledge_below(3, 3), (vec![], vec![]));
    }

    #[test]
    fn an_entry_acknowledged_before_its_answer_stays_until_the_answer() {
        let mut o = Outbox::default();
        o.insert(entry(0, 0, 1));
        o.insert(entry(1, 0, 2));
        o.mark_sent(1, 5);
        let (acked, removed) = o.acknowledge_below(0, 2);
        assert_eq!(acked.len(), 2);
        assert_eq!(removed, vec![0], "the answered one goes");
        assert!(o.find(2).is_some(), "the unanswered one stays");
        let r = Outbox::restore(o.iter().cloned(), 2, 2).expect("consistent");
        assert!(r.find(2).is_some(), "and survives a restart");
    }

    #[test]
    fn mark_sent_reports_a_change_once() {
        let mut o = Outbox::default();
        o.insert(entry(0, 0, 7));
        assert_eq!(o.mark_sent(7, 99).and_then(|e| e.sent_date), Some(99));
        assert_eq!(o.mark_sent(7, 100), None, "the first date stays");
        assert_eq!(o.mark_sent(8, 100), None, "unknown random_id");
        assert_eq!(o.get(0).and_then(|e| e.sent_date), Some(99));
    }

    #[test]
    fn a_filler_carries_the_in_raw_of_the_next_held_entry() {
        let mut o = Outbox::default();
        o.insert(entry(4, 2, 1));
        o.insert(entry(6, 5, 2));
        assert_eq!(o.in_raw_for_filler(3, 9), 2);
        assert_eq!(o.in_raw_for_filler(5, 9), 5);
        assert_eq!(o.in_raw_for_filler(7, 9), 9);
    }

    #[test]
    fn restore_drops_acknowledged_entries_and_refuses_inconsistent_ones() {
        let mut answered = entry(0, 0, 1);
        answered.sent_date = Some(1);
        let o =
            Outbox::restore([answered, entry(1, 0, 2), entry(2, 0, 3)], 3, 1).expect("consistent");
        assert_eq!(o.iter().map(|e| e.out_raw).collect::<Vec<_>>(), vec![1, 2]);
        assert!(Outbox::restore([entry(3, 0, 1)], 3, 0).is_err());
        assert!(Outbox::restore([entry(0, 0, 1), entry(1, 0, 1)], 3, 0).is_err());
    }

    #[test]
    fn replacing_an_entry_keeps_the_index_right() {
        let mut o = Outbox::default();
        o.insert(entry(0, 0, 1));
        let mut e = entry(0, 0, 1);
        e.sent_date = Some(5);
        o.insert(e);
        assert_eq!(o.find(1).and_then(|e| e.sent_date), Some(5));
        assert_eq!(o.clear(), vec![0]);
        assert!(o.find(1).is_none());
    }
}
