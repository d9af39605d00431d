//! Server salts of one auth key.
//!
//! A salt is attached to the auth key, not to a session. Salts follow Telegram's published
//! schedule: each one lives [`SessionConfig::salt_lifetime_secs`] (1 hour) and a new one starts
//! every [`SessionConfig::salt_period_secs`] (30 minutes), so two consecutive salts overlap by
//! half an hour. Salts are drawn lazily from the injected randomness, never 0.
//!
//! [`SessionConfig::salt_lifetime_secs`]: super::SessionConfig::salt_lifetime_secs
//! [`SessionConfig::salt_period_secs`]: super::SessionConfig::salt_period_secs

use std::collections::VecDeque;

use secret_core::rand::SecureRandom;

/// A salt may be used this many seconds before its `valid_since` (clock skew).
const EARLY_TOLERANCE_SECS: i64 = 60;

/// The most salts one `get_future_salts` returns (the documented maximum).
pub const MAX_FUTURE_SALTS: usize = 64;

/// One salt and its validity window (Unix seconds, inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Salt {
    /// First second the salt is valid.
    pub valid_since: i64,
    /// Last second the salt is valid.
    pub valid_until: i64,
    /// The salt.
    pub salt: i64,
}

/// The salt schedule of one auth key.
#[derive(Debug, Default)]
pub(crate) struct SaltSchedule {
    /// Salts in order of `valid_since`, none expired at the last pruning.
    salts: VecDeque<Salt>,
    /// Whether a message under this key has been accepted (after which salt 0 is refused).
    pub(crate) contacted: bool,
}

impl SaltSchedule {
    fn prune(&mut self, now: i64) {
        while self.salts.front().is_some_and(|s| s.valid_until < now) {
            self.salts.pop_front();
        }
    }

    /// Makes sure salts are scheduled from `now` on, `count` of them at least.
    fn ensure(
        &mut self,
        now: i64,
        count: usize,
        period: i64,
        lifetime: i64,
        rng: &mut dyn SecureRandom,
    ) {
        self.prune(now);
        let period = period.max(1);
        let lifetime = lifetime.max(period);
        while self.salts.len() < count.max(1) {
            let valid_since = match self.salts.back() {
                Some(last) => last.valid_since.saturating_add(period),
                None => now - now.rem_euclid(period),
            };
            let mut salt = rng.next_i64();
            if salt == 0 {
                salt = 1;
            }
            self.salts.push_back(Salt {
                valid_since,
                valid_until: valid_since.saturating_add(lifetime),
                salt,
            });
        }
    }

    /// The salt to announce at `now`: the newest one already valid.
    pub(crate) fn current(
        &mut self,
        now: i64,
        period: i64,
        lifetime: i64,
        rng: &mut dyn SecureRandom,
    ) -> i64 {
        self.ensure(now, 2, period, lifetime, rng);
        self.salts
            .iter()
            .rev()
            .find(|s| s.valid_since <= now && now <= s.valid_until)
            .or(self.salts.front())
            .map_or(1, |s| s.salt)
    }

    /// Whether `salt` is valid at `now`.
    pub(crate) fn is_valid(&self, salt: i64, now: i64) -> bool {
        salt != 0
            && self.salts.iter().any(|s| {
                s.salt == salt
                    && s.valid_since.saturating_sub(EARLY_TOLERANCE_SECS) <= now
                    && now <= s.valid_until
            })
    }

    /// Up to `num` salts (1..=64) from the current one on, for `future_salts`.
    pub(crate) fn future(
        &mut self,
        now: i64,
        num: usize,
        period: i64,
        lifetime: i64,
        rng: &mut dyn SecureRandom,
    ) -> Vec<Salt> {
        let num = num.clamp(1, MAX_FUTURE_SALTS);
        // The current salt may be preceded by an older, still valid one: skip that.
        self.ensure(now, num + 1, period, lifetime, rng);
        let current = self.current(now, period, lifetime, rng);
        self.salts
            .iter()
            .skip_while(|s| s.salt != current)
            .take(num)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secret_core::rand::SeededRandom;

    #[test]
    fn schedule_overlaps_and_expires() {
        let mut rng = SeededRandom::new(1);
        let mut s = SaltSchedule::default();
        let t0 = 1_700_000_000;
        let first = s.current(t0, 1800, 3600, &mut rng);
        assert!(s.is_valid(first, t0));
        assert!(!s.is_valid(0, t0));
        // Half an hour on, the next salt is current but the first is still accepted.
        let start = t0 - t0 % 1800;
        let second = s.current(start + 1800, 1800, 3600, &mut rng);
        assert_ne!(first, second);
        assert!(s.is_valid(first, start + 1800));
        assert!(s.is_valid(second, start + 1800));
        // After an hour the first one is gone.
        let _ = s.current(start + 3601, 1800, 3600, &mut rng);
        assert!(!s.is_valid(first, start + 3601));
        let future = s.future(start + 3601, 5, 1800, 3600, &mut rng);
        assert_eq!(future.len(), 5);
        assert_eq!(
            future[0].salt,
            s.current(start + 3601, 1800, 3600, &mut rng)
        );
        assert!(
            future
                .windows(2)
                .all(|w| w[1].valid_since == w[0].valid_since + 1800)
        );
        assert_eq!(s.future(start, 1000, 1800, 3600, &mut rng).len(), 64);
    }
}
