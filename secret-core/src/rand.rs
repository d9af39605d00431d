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

/// ring's operating-system CSPRNG, for production use, read in blocks.
///
/// Small requests (a random_id, a layer's random_bytes, a message's padding: each under
/// [`SystemRandom::DIRECT_FROM`] bytes) are served from a [`SystemRandom::BLOCK`]-byte block
/// read with one `getrandom`, instead of one system call each (three per sent message, a tenth
/// of a chat actor's CPU at 64 callers). Every byte handed out is wiped from the block at once,
/// so the block only ever holds bytes nobody has seen, and the rest is wiped on drop. Larger
/// requests (Diffie-Hellman exponents) are read straight from the OS. Not `Clone`: two copies
/// would hand out the same bytes.
pub struct SystemRandom {
    os: ring::rand::SystemRandom,
    block: zeroize::Zeroizing<[u8; Self::BLOCK]>,
    /// Bytes of `block` before this index were handed out (and wiped).
    used: usize,
}

impl SystemRandom {
    /// The block read from the OS at a time.
    pub const BLOCK: usize = 256;
    /// Requests of at least this many bytes bypass the block.
    pub const DIRECT_FROM: usize = 64;

    /// A handle to the operating system's CSPRNG (nothing is read until the first request).
    pub fn new() -> Self {
        Self {
            os: ring::rand::SystemRandom::new(),
            block: zeroize::Zeroizing::new([0; Self::BLOCK]),
            used: Self::BLOCK,
        }
    }

    // A crypto daemon without entropy must stop rather than go on with predictable keys.
    #[allow(clippy::panic)]
    fn read_os(&self, dest: &mut [u8]) {
        use ring::rand::SecureRandom as _;
        // ok: ring's SystemRandom fails only when the OS has no entropy source at all
        // (getrandom unavailable), which is not a recoverable condition for a crypto daemon.
        if self.os.fill(dest).is_err() {
            panic!("the operating system's random number generator failed");
        }
    }
}

impl Default for SystemRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SystemRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemRandom").finish_non_exhaustive()
    }
}

impl SecureRandom for SystemRandom {
    fn fill(&mut self, dest: &mut [u8]) {
        if dest.len() >= Self::DIRECT_FROM {
            return self.read_os(dest);
        }
        if Self::BLOCK - self.used < dest.len() {
            let mut block = zeroize::Zeroizing::new([0; Self::BLOCK]);
            self.read_os(&mut block[..]);
            self.block = block;
            self.used = 0;
        }
        let end = self.used + dest.len();
        let fresh = &mut self.block[self.used..end];
        dest.copy_from_slice(fresh);
        zeroize::Zeroize::zeroize(fresh);
        self.used = end;
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
    fn system_random_hands_out_each_block_byte_once_and_wipes_it() {
        let mut r = SystemRandom::new();
        // Small requests come from one block: consecutive draws are its consecutive bytes,
        // and each is wiped from the block as it is handed out.
        let mut seen = Vec::new();
        for len in [8, 16, 12, 31, 1] {
            let mut b = vec![0u8; len];
            r.fill(&mut b);
            assert!(r.block[..r.used].iter().all(|&v| v == 0));
            seen.extend(b);
        }
        assert_eq!(r.used, seen.len());
        // 68 bytes of OS output are all zero with probability 2^-544.
        assert!(seen.iter().any(|&v| v != 0));
        // A request that does not fit the rest of the block reads a new block; one of
        // DIRECT_FROM bytes or more does not touch the block at all.
        let mut b = [0u8; SystemRandom::DIRECT_FROM - 1];
        for _ in 0..(SystemRandom::BLOCK / b.len() + 1) {
            r.fill(&mut b);
        }
        assert!(r.used <= SystemRandom::BLOCK && r.used > 0);
        let used = r.used;
        let mut big = [0u8; SystemRandom::DIRECT_FROM];
        r.fill(&mut big);
        assert_eq!(r.used, used);
        assert!(big.iter().any(|&v| v != 0));
        // Two generators read their own blocks (equal with probability 2^-64).
        assert_ne!(
            SystemRandom::new().next_u64(),
            SystemRandom::new().next_u64()
        );
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
