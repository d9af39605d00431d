//! Injected randomness.
//!
//! secret-core never draws randomness on its own: every function that needs it takes a
//! [`SecureRandom`]. The daemon passes a CSPRNG (ring's `SystemRandom`); tests pass
//! [`SeededRandom`] so that every run is reproducible.

/// A source of cryptographically secure random bytes.
pub trait SecureRandom {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);

    /// A random `u64`.
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// A random `i64`.
    fn next_i64(&mut self) -> i64 {
        self.next_u64() as i64
    }

    /// A random `u32`.
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_le_bytes(b)
    }

    /// A uniformly distributed value in `0..n` (`n > 0`; returns 0 for `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Rejection sampling: no modulo bias.
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

impl<R: SecureRandom + ?Sized> SecureRandom for &mut R {
    fn fill(&mut self, dest: &mut [u8]) {
        (**self).fill(dest)
    }
}

impl<R: SecureRandom + ?Sized> SecureRandom for Box<R> {
    fn fill(&mut self, dest: &mut [u8]) {
        (**self).fill(dest)
    }
}

/// ring's operating-system CSPRNG, for production use.
#[derive(Debug)]
pub struct SystemRandom(ring::rand::SystemRandom);

impl SystemRandom {
    /// A handle to the operating system's CSPRNG.
    pub fn new() -> Self {
        Self(ring::rand::SystemRandom::new())
    }
}

impl Default for SystemRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl SecureRandom for SystemRandom {
    // A crypto daemon without entropy must stop rather than go on with predictable keys.
    #[allow(clippy::panic)]
    fn fill(&mut self, dest: &mut [u8]) {
        use ring::rand::SecureRandom as _;
        // ok: ring's SystemRandom fails only when the OS has no entropy source at all
        // (getrandom unavailable), which is not a recoverable condition for a crypto daemon.
        if self.0.fill(dest).is_err() {
            panic!("the operating system's random number generator failed");
        }
    }
}

/// A deterministic generator for tests and simulations: SHA-256 in counter mode over a seed.
///
/// Not for production keys (its output is predictable from the seed).
#[derive(Debug, Clone)]
pub struct SeededRandom {
    seed: [u8; 32],
    counter: u64,
    buf: [u8; 32],
    used: usize,
}

impl SeededRandom {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8..16].copy_from_slice(b"tgsecret");
        Self {
            seed: s,
            counter: 0,
            buf: [0; 32],
            used: 32,
        }
    }

    /// An independent generator derived from this one (for giving each party its own stream).
    pub fn fork(&mut self, label: u64) -> Self {
        let mut s = Self::new(self.next_u64() ^ label.rotate_left(17));
        s.seed[16..24].copy_from_slice(&label.to_le_bytes());
        s
    }
}

impl SecureRandom for SeededRandom {
    fn fill(&mut self, dest: &mut [u8]) {
        for b in dest.iter_mut() {
            if self.used == 32 {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                ctx.update(&self.seed);
                ctx.update(&self.counter.to_le_bytes());
                self.buf.copy_from_slice(ctx.finish().as_ref());
                self.counter += 1;
                self.used = 0;
            }
            *b = self.buf[self.used];
            self.used += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_random_is_deterministic_and_seed_dependent() {
        let mut a = SeededRandom::new(1);
        let mut b = SeededRandom::new(1);
        let mut c = SeededRandom::new(2);
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
        let mut big = [0u8; 100];
        a.fill(&mut big);
        assert!(big.iter().any(|&v| v != 0));
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SeededRandom::new(9);
        for n in [1u64, 2, 3, 7, 1000] {
            for _ in 0..200 {
                assert!(r.below(n) < n);
            }
        }
        assert_eq!(r.below(0), 0);
    }
}
