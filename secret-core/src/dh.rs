//! Diffie-Hellman for secret-chat creation and re-keying (protocol digest §5, §6).
//!
//! * [`DhConfig::validate`] checks the server's `(g, p)`: a 2048-bit safe prime and a generator of
//!   the order-`(p-1)/2` subgroup (digest §6.3). The Telegram prime is in a built-in table of
//!   known-good primes, so the common case needs no primality test.
//! * [`generate_key_pair`] draws a 2048-bit secret exponent (local randomness XOR the server's
//!   `random`) and computes `g^a mod p`; [`compute_shared_key`] checks the peer's value and
//!   computes the 256-byte shared key. Both exponentiations with the secret exponent run in
//!   constant time ([`modpow_ct`], crypto-bigint Montgomery form).
//! * Public checks (range checks, Miller-Rabin on `p`) use num-bigint, which is variable-time but
//!   only ever sees public values.

use std::collections::BTreeMap;
use std::fmt;

use crypto_bigint::ctutils::CtEq;
use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use num_bigint::BigUint;
use num_traits::{One, Zero};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

use crate::crypto::{AUTH_KEY_LEN, AuthKey, fixed_bytes, sha1, sha256};

// The shared key g^ab mod p is an auth key: both are 256 bytes.
const _: () = assert!(DH_PRIME_LEN == AUTH_KEY_LEN);
use crate::rand::SecureRandom;

/// Size of the DH prime in bits.
pub const DH_PRIME_BITS: usize = 2048;

/// Size of the DH prime (and of the secret exponent and of the shared key) in bytes.
pub const DH_PRIME_LEN: usize = DH_PRIME_BITS / 8;

/// `g_a`/`g_b` must lie in `[2^(2048-64), p - 2^(2048-64)]` (digest §6.3).
pub const PUBLIC_VALUE_MARGIN_BITS: usize = DH_PRIME_BITS - 64;

/// Miller-Rabin rounds with hash-derived bases on `(p-1)/2`, after a base-2 round. 64 rounds
/// bound the error on an adversarial input by 2^-128 (and searching for a composite whose
/// derived bases all lie costs ~4^64 hash evaluations), matching OpenSSL's choice for ≥ 2048 bits.
pub const MILLER_RABIN_ROUNDS: u32 = 64;

/// How many times [`generate_key_pair`] draws a new exponent before giving up.
pub const KEY_GENERATION_TRIES: usize = 16;

/// The current Telegram server DH prime (big-endian), from the security guidelines and TDLib's
/// `test/secret.cpp`. A 2048-bit safe prime; of g ∈ 2..=7 only 3, 4 and 7 are valid with it.
pub const TELEGRAM_DH_PRIME: [u8; DH_PRIME_LEN] = hex_256(concat!(
    "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f",
    "48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c37",
    "20fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f64",
    "2477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4",
    "a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754",
    "fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4",
    "e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f",
    "0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b",
));

/// Primes known to be 2048-bit safe primes (verified offline with 40+ Miller-Rabin rounds on both
/// `p` and `(p-1)/2`): [`DhConfig::validate`] skips the primality test for them. Only the
/// generator residue rule is still checked.
pub const KNOWN_SAFE_PRIMES: &[&[u8; DH_PRIME_LEN]] = &[&TELEGRAM_DH_PRIME];

// Evaluated at compile time only: a panic here is a compile error, never a run-time one.
#[allow(clippy::panic)]
const fn hex_nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("invalid hex digit in constant"),
    }
}

/// Decodes 512 lowercase hex digits at compile time (a bad constant is a compile error).
const fn hex_256(s: &str) -> [u8; DH_PRIME_LEN] {
    let b = s.as_bytes();
    assert!(
        b.len() == 2 * DH_PRIME_LEN,
        "hex constant must have 512 digits"
    );
    let mut out = [0u8; DH_PRIME_LEN];
    let mut i = 0;
    while i < DH_PRIME_LEN {
        out[i] = (hex_nibble(b[2 * i]) << 4) | hex_nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why DH parameters or values were rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DhError {
    /// `p` is not exactly 2048 bits (256 big-endian bytes with the top bit set).
    PrimeSize,
    /// `p` is not a safe prime (`p` or `(p-1)/2` is composite; includes even `p`).
    PrimeNotSafe,
    /// `g` is not in 2..=7.
    BadGenerator {
        /// The rejected generator.
        g: i32,
    },
    /// `g` does not generate the order-`(p-1)/2` subgroup of this `p` (digest §6.3 residue rule).
    GeneratorResidue {
        /// The rejected generator.
        g: i32,
    },
    /// A public value (`g_a`, `g_b`) is outside `[2^1984, p - 2^1984]`.
    PublicValueOutOfRange,
    /// No acceptable key pair after [`KEY_GENERATION_TRIES`] draws, or the configuration could
    /// not be used (an unvalidated, malformed `DhConfig`).
    KeyGeneration,
}

impl fmt::Display for DhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DhError::PrimeSize => f.write_str("DH prime is not exactly 2048 bits"),
            DhError::PrimeNotSafe => f.write_str("DH prime is not a safe prime"),
            DhError::BadGenerator { g } => write!(f, "DH generator {g} is not in 2..=7"),
            DhError::GeneratorResidue { g } => {
                write!(
                    f,
                    "DH generator {g} does not generate the prime-order subgroup of p"
                )
            }
            DhError::PublicValueOutOfRange => {
                f.write_str("DH public value is outside [2^1984, p - 2^1984]")
            }
            DhError::KeyGeneration => f.write_str("could not generate a DH key pair"),
        }
    }
}

impl std::error::Error for DhError {}

// ---------------------------------------------------------------------------------------------
// Configuration and validation
// ---------------------------------------------------------------------------------------------

/// Validated DH parameters from `messages.getDhConfig`.
///
/// Build it with [`DhConfig::validate`] (or through [`DhConfigCache`]). A value obtained by
/// deserialisation is trusted as stored; it is not re-validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhConfig {
    /// The generator, in 2..=7.
    pub g: i32,
    /// The 2048-bit safe prime, 256 big-endian bytes.
    pub p: Vec<u8>,
    /// The server's version number for this configuration.
    pub version: i32,
}

impl DhConfig {
    /// Validates `(g, p)` (digest §6.3) and returns the configuration.
    ///
    /// Checks, cheapest first: `p` is 256 bytes with the top bit set ([`DhError::PrimeSize`]);
    /// `g` in 2..=7 ([`DhError::BadGenerator`]); the residue rule for `g`
    /// ([`DhError::GeneratorResidue`]); `p` and `(p-1)/2` prime ([`DhError::PrimeNotSafe`]),
    /// skipped for the primes in [`KNOWN_SAFE_PRIMES`]. An unknown prime costs about 65 modular
    /// exponentiations (tens to hundreds of milliseconds); use [`DhConfigCache`] to do it once.
    pub fn validate(g: i32, p: &[u8], version: i32) -> Result<DhConfig, DhError> {
        Self::validate_inner(g, p, version, false)
    }

    fn validate_inner(
        g: i32,
        p: &[u8],
        version: i32,
        p_known_safe: bool,
    ) -> Result<DhConfig, DhError> {
        check_prime_shape(p)?;
        check_generator(g, p)?;
        let known = p_known_safe || KNOWN_SAFE_PRIMES.iter().any(|k| k[..] == *p);
        if !known && !is_safe_prime(p) {
            return Err(DhError::PrimeNotSafe);
        }
        Ok(DhConfig {
            g,
            p: p.to_vec(),
            version,
        })
    }
}

/// Size and parity checks on `p` (no primality test).
fn check_prime_shape(p: &[u8]) -> Result<(), DhError> {
    match (p.first(), p.last()) {
        (Some(&top), Some(&bottom)) if p.len() == DH_PRIME_LEN && top & 0x80 != 0 => {
            if bottom & 1 == 0 {
                Err(DhError::PrimeNotSafe)
            } else {
                Ok(())
            }
        }
        _ => Err(DhError::PrimeSize),
    }
}

/// `p mod m` for a small `m` (big-endian bytes).
fn mod_small(p: &[u8], m: u32) -> u32 {
    p.iter().fold(0u32, |r, &b| ((r << 8) | u32::from(b)) % m)
}

/// The residue rule of digest §6.3: `g` must be a quadratic residue mod `p` (so that it generates
/// the subgroup of order `(p-1)/2`), which for a safe prime reduces to a rule on `p mod` small m.
fn check_generator(g: i32, p: &[u8]) -> Result<(), DhError> {
    let ok = match g {
        2 => mod_small(p, 8) == 7,
        3 => mod_small(p, 3) == 2,
        4 => true,
        5 => matches!(mod_small(p, 5), 1 | 4),
        6 => matches!(mod_small(p, 24), 19 | 23),
        7 => matches!(mod_small(p, 7), 3 | 5 | 6),
        _ => return Err(DhError::BadGenerator { g }),
    };
    if ok {
        Ok(())
    } else {
        Err(DhError::GeneratorResidue { g })
    }
}

/// Odd primes below 2000, for trial division.
fn small_odd_primes() -> impl Iterator<Item = u32> {
    (3u32..2000).step_by(2).filter(|&n| {
        (3u32..)
            .step_by(2)
            .take_while(|d| d * d <= n)
            .all(|d| n % d != 0)
    })
}

/// Full safe-prime test of a 2048-bit candidate (public input; variable time).
///
/// 1. `p ≡ 3 (mod 4)` (so that `q = (p-1)/2` is odd) and, for each odd prime `r < 2000`,
///    `p mod r ∉ {0, 1}` (i.e. neither `p` nor `q` is divisible by `r`);
/// 2. Fermat test of `p` to base 2;
/// 3. Miller-Rabin on `q`: base 2, then [`MILLER_RABIN_ROUNDS`] bases derived from
///    `SHA-256(q || "tgsecretd-mr" || round || block)`.
///
/// Given `q` prime, step 2 together with `3 ∤ p` proves `p` prime (Pocklington with the factor
/// `q > √p` of `p - 1` and witness 2: `gcd(2^2 - 1, p) = 1`), so `p` needs no Miller-Rabin rounds.
fn is_safe_prime(p_bytes: &[u8]) -> bool {
    if p_bytes.len() < 2 || mod_small(p_bytes, 4) != 3 {
        return false;
    }
    if small_odd_primes().any(|r| matches!(mod_small(p_bytes, r), 0 | 1)) {
        return false;
    }
    let p = BigUint::from_bytes_be(p_bytes);
    let p_minus_1 = &p - 1u32;
    if BigUint::from(2u32).modpow(&p_minus_1, &p) != BigUint::one() {
        return false;
    }
    let q: BigUint = &p >> 1u32;
    if !miller_rabin_round(&q, &BigUint::from(2u32)) {
        return false;
    }
    let q_bytes = q.to_bytes_be();
    let q_minus_3 = &q - 3u32;
    for round in 0..MILLER_RABIN_ROUNDS {
        // A base in [2, q-2]: 2 + (288 hash bytes mod (q-3)); the 256 extra bits make the bias
        // negligible.
        let mut seed = Vec::with_capacity(9 * 32);
        for block in 0u32..9 {
            seed.extend_from_slice(&sha256(&[
                &q_bytes,
                b"tgsecretd-mr",
                &round.to_be_bytes(),
                &block.to_be_bytes(),
            ]));
        }
        let base = BigUint::from_bytes_be(&seed) % &q_minus_3 + 2u32;
        if !miller_rabin_round(&q, &base) {
            return false;
        }
    }
    true
}

/// One Miller-Rabin round for odd `n > 3` with base `a` in `[2, n-2]`.
fn miller_rabin_round(n: &BigUint, a: &BigUint) -> bool {
    let n_minus_1 = n - 1u32;
    let s = n_minus_1.trailing_zeros().unwrap_or(0);
    let d = &n_minus_1 >> s;
    let mut x = a.modpow(&d, n);
    if x.is_one() || x == n_minus_1 {
        return true;
    }
    for _ in 1..s {
        x = (&x * &x) % n;
        if x == n_minus_1 {
            return true;
        }
        if x.is_one() {
            return false;
        }
    }
    false
}

/// Validated DH configurations by server version, so that a prime is tested once.
///
/// Serialise it with the daemon's state; a deserialised cache is trusted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhConfigCache {
    configs: BTreeMap<i32, DhConfig>,
}

impl DhConfigCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated configuration stored under `version`.
    pub fn get(&self, version: i32) -> Option<&DhConfig> {
        self.configs.get(&version)
    }

    /// The configuration with the highest version (what to pass as `version` to
    /// `messages.getDhConfig`, and what to use on `messages.dhConfigNotModified`).
    pub fn latest(&self) -> Option<&DhConfig> {
        self.configs.values().next_back()
    }

    /// Validates `(g, p)` and stores it under `version`, replacing what was there.
    ///
    /// A `p` already present in the cache (under any version) is not tested for primality again;
    /// the cheap size and generator checks always run. On error the cache is unchanged.
    pub fn validate_and_insert(
        &mut self,
        g: i32,
        p: &[u8],
        version: i32,
    ) -> Result<DhConfig, DhError> {
        let known = self.configs.values().any(|c| c.p == p);
        let cfg = DhConfig::validate_inner(g, p, version, known)?;
        self.configs.insert(version, cfg.clone());
        Ok(cfg)
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets and key pairs
// ---------------------------------------------------------------------------------------------

/// A 2048-bit secret exponent (`a` or `b`), big-endian.
///
/// `Debug` is redacted; the bytes are wiped on drop; equality is constant-time. Serialised as a
/// 256-byte byte string (it must be persisted while a chat request or re-key is pending).
#[derive(Clone)]
pub struct DhSecret(Box<[u8; DH_PRIME_LEN]>);

impl DhSecret {
    /// A secret from raw bytes (for tests and restoring state).
    pub fn from_array(mut bytes: [u8; DH_PRIME_LEN]) -> DhSecret {
        let s = DhSecret(Box::new(bytes));
        bytes.zeroize();
        s
    }

    /// The exponent, big-endian.
    pub fn as_bytes(&self) -> &[u8; DH_PRIME_LEN] {
        &self.0
    }
}

impl PartialEq for DhSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0[..].ct_eq(&other.0[..]).to_bool()
    }
}

impl Eq for DhSecret {}

impl fmt::Debug for DhSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DhSecret(<redacted>)")
    }
}

impl Drop for DhSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Serialize for DhSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0[..])
    }
}

impl<'de> Deserialize<'de> for DhSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(DhSecret::from_array(fixed_bytes::deserialize::<
            D,
            DH_PRIME_LEN,
        >(d)?))
    }
}

/// A fresh 2048-bit secret: 256 bytes from `rng`, XORed byte by byte with `server_random` over
/// their overlap (the server's `messages.dhConfig.random` is mixed in, never used alone).
pub fn generate_secret(rng: &mut dyn SecureRandom, server_random: &[u8]) -> DhSecret {
    let mut bytes = [0u8; DH_PRIME_LEN];
    rng.fill(&mut bytes);
    for (b, r) in bytes.iter_mut().zip(server_random) {
        *b ^= r;
    }
    DhSecret::from_array(bytes)
}

/// Checks a public value `g_x` (the peer's `g_a`/`g_b`, or our own): an unsigned big-endian
/// number of any length (leading zero bytes allowed) in `[2^1984, p - 2^1984]`, which implies
/// `1 < g_x < p - 1` (digest §6.3).
pub fn check_public_value(cfg: &DhConfig, g_x: &[u8]) -> Result<(), DhError> {
    let v = BigUint::from_bytes_be(g_x);
    let p = BigUint::from_bytes_be(&cfg.p);
    let lower = BigUint::one() << PUBLIC_VALUE_MARGIN_BITS;
    if p <= &lower << 1u32 {
        return Err(DhError::PublicValueOutOfRange);
    }
    let upper = &p - &lower;
    if v < lower || v > upper {
        return Err(DhError::PublicValueOutOfRange);
    }
    Ok(())
}

/// A secret exponent and its public value `g^secret mod p`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhKeyPair {
    /// The secret exponent.
    pub secret: DhSecret,
    /// `g^secret mod p` as minimal big-endian bytes (TDLib's `to_binary()`), ready for
    /// `requestEncryption.g_a`, `acceptEncryption.g_b` or the PFS actions.
    pub public: Vec<u8>,
}

/// Draws a secret (see [`generate_secret`]) and computes `g^a mod p` in constant time, retrying
/// (at most [`KEY_GENERATION_TRIES`] times) until the public value passes
/// [`check_public_value`]. A retry is needed with probability about 2^-63 per draw.
pub fn generate_key_pair(
    cfg: &DhConfig,
    rng: &mut dyn SecureRandom,
    server_random: &[u8],
) -> Result<DhKeyPair, DhError> {
    for _ in 0..KEY_GENERATION_TRIES {
        match key_pair_from_secret(cfg, generate_secret(rng, server_random)) {
            Err(DhError::PublicValueOutOfRange) => continue,
            other => return other,
        }
    }
    Err(DhError::KeyGeneration)
}

/// The key pair of a given secret exponent: `g^secret mod p` in constant time, as minimal
/// big-endian bytes. [`DhError::PublicValueOutOfRange`] if the public value fails
/// [`check_public_value`] (a drawn secret is then replaced; a given one is refused).
///
/// Production code draws its secrets ([`generate_key_pair`]); this exists for deterministic
/// interoperability tests.
pub fn key_pair_from_secret(cfg: &DhConfig, secret: DhSecret) -> Result<DhKeyPair, DhError> {
    check_prime_shape(&cfg.p).map_err(|_| DhError::KeyGeneration)?;
    let g = u8::try_from(cfg.g)
        .ok()
        .filter(|g| (2..=7).contains(g))
        .ok_or(DhError::KeyGeneration)?;
    let full = modpow_ct(&[g], secret.as_bytes(), &cfg.p)?;
    let first_nonzero = full.iter().position(|&b| b != 0).unwrap_or(full.len());
    let public = full[first_nonzero..].to_vec();
    check_public_value(cfg, &public)?;
    Ok(DhKeyPair { secret, public })
}

/// Checks the peer's public value and computes the shared key `peer_public^secret mod p` in
/// constant time, left-padded with zeros to exactly 256 bytes (digest §6.1 step 5).
pub fn compute_shared_key(
    cfg: &DhConfig,
    secret: &DhSecret,
    peer_public: &[u8],
) -> Result<AuthKey, DhError> {
    check_prime_shape(&cfg.p)?;
    check_public_value(cfg, peer_public)?;
    let mut key = modpow_ct(peer_public, secret.as_bytes(), &cfg.p)?;
    let out = AuthKey::from_bytes(&key).map_err(|_| DhError::KeyGeneration);
    key.zeroize();
    out
}

/// The key visualisation users compare: `SHA1(initial)[0..16] || SHA256(current)[0..20]`
/// (digest §2.6). For a chat that never re-keyed, `initial` and `current` are the same key.
pub fn key_visualization(initial: &AuthKey, current: &AuthKey) -> [u8; 36] {
    let mut out = [0u8; 36];
    out[..16].copy_from_slice(&sha1(&[initial.as_bytes()])[..16]);
    out[16..].copy_from_slice(&sha256(&[current.as_bytes()])[..20]);
    out
}

// ---------------------------------------------------------------------------------------------
// Modular exponentiation
// ---------------------------------------------------------------------------------------------

/// `base^exponent mod modulus`, constant-time in `exponent` (crypto-bigint `BoxedMontyForm`,
/// fixed-window exponentiation with constant-time table lookups over all `8 * exponent.len()`
/// bits). The result is big-endian, left-padded to `modulus.len()` bytes.
///
/// `base` and `modulus` are treated as public: `base` is reduced mod `modulus` with a
/// variable-time division first. `modulus` must be odd and non-empty, else
/// [`DhError::KeyGeneration`].
pub fn modpow_ct(base: &[u8], exponent: &[u8], modulus: &[u8]) -> Result<Vec<u8>, DhError> {
    let mod_len = modulus.len();
    if mod_len == 0 || modulus.last().is_none_or(|b| b & 1 == 0) {
        return Err(DhError::KeyGeneration);
    }
    let bits = limb_bits(mod_len);
    let m = BoxedUint::from_be_slice(modulus, bits).map_err(|_| DhError::KeyGeneration)?;
    let m = Odd::new(m).into_option().ok_or(DhError::KeyGeneration)?;
    let params = BoxedMontyParams::new_vartime(m);

    // Public base: reduce it with num-bigint, then widen to the modulus precision.
    let base = BigUint::from_bytes_be(base) % BigUint::from_bytes_be(modulus);
    let base =
        BoxedUint::from_be_slice(&base.to_bytes_be(), bits).map_err(|_| DhError::KeyGeneration)?;
    let mut exp = BoxedUint::from_be_slice(exponent, limb_bits(exponent.len().max(1)))
        .map_err(|_| DhError::KeyGeneration)?;

    let mut result = BoxedMontyForm::new(base, &params).pow(&exp).retrieve();
    exp.as_mut_words().zeroize();
    let mut bytes = result.to_be_bytes();
    result.as_mut_words().zeroize();
    // `bytes` has `bits / 8 >= mod_len` bytes and the value is < modulus, so the excess leading
    // bytes are zero.
    let start = bytes.len().saturating_sub(mod_len);
    let mut out = vec![0u8; mod_len.saturating_sub(bytes.len())];
    out.extend_from_slice(&bytes[start..]);
    bytes.zeroize();
    Ok(out)
}

/// Bits of precision for an `len`-byte number, rounded up to whole 64-bit limbs.
fn limb_bits(len: usize) -> u32 {
    let bits = u32::try_from(len.saturating_mul(8)).unwrap_or(u32::MAX - 63);
    bits.div_ceil(64) * 64
}

/// `base^exponent mod modulus` with num-bigint's `modpow`: **variable-time** in the exponent, so
/// only for public exponents (it is the benchmark baseline and the Miller-Rabin workhorse).
/// Result big-endian, left-padded to `modulus.len()` bytes; a zero modulus gives an empty vector.
pub fn modpow_num_bigint(base: &[u8], exponent: &[u8], modulus: &[u8]) -> Vec<u8> {
    let m = BigUint::from_bytes_be(modulus);
    if m.is_zero() {
        return Vec::new();
    }
    let r = BigUint::from_bytes_be(base).modpow(&BigUint::from_bytes_be(exponent), &m);
    let bytes = r.to_bytes_be();
    let bytes = if r.is_zero() { &[][..] } else { &bytes[..] };
    let mut out = vec![0u8; modulus.len().saturating_sub(bytes.len())];
    out.extend_from_slice(bytes);
    out
}

/// Entry points for the benchmark and the slow tests; not a stable API.
#[doc(hidden)]
pub mod bench_support {
    use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
    use crypto_bigint::{Odd, U2048};

    /// The full safe-prime test, bypassing the known-prime table.
    pub fn is_safe_prime_uncached(p: &[u8]) -> bool {
        super::check_prime_shape(p).is_ok() && super::is_safe_prime(p)
    }

    /// Constant-time modpow with the fixed-size `U2048` + `FixedMontyForm` (the alternative to
    /// the heap-allocated `BoxedMontyForm` used by [`super::modpow_ct`]). `base` must be < p.
    pub fn modpow_ct_u2048(base: &[u8; 256], exponent: &[u8; 256], p: &[u8; 256]) -> [u8; 256] {
        let m = U2048::from_be_slice(p);
        let Some(m) = Odd::new(m).into_option() else {
            return [0u8; 256];
        };
        let params = FixedMontyParams::new_vartime(m);
        let x = FixedMontyForm::new(&U2048::from_be_slice(base), &params);
        let r = x.pow(&U2048::from_be_slice(exponent)).retrieve();
        r.to_be_bytes().into()
    }

    /// Like [`modpow_ct_u2048`] with crypto-bigint's Almost-Montgomery-Multiplication ladder.
    pub fn modpow_ct_u2048_amm(base: &[u8; 256], exponent: &[u8; 256], p: &[u8; 256]) -> [u8; 256] {
        let m = U2048::from_be_slice(p);
        let Some(m) = Odd::new(m).into_option() else {
            return [0u8; 256];
        };
        let params = FixedMontyParams::new_vartime(m);
        let x = FixedMontyForm::new(&U2048::from_be_slice(base), &params);
        let r = x.pow_amm(&U2048::from_be_slice(exponent)).retrieve();
        r.to_be_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_primes_table() {
        let v: Vec<u32> = small_odd_primes().take(6).collect();
        assert_eq!(v, [3, 5, 7, 11, 13, 17]);
        assert_eq!(small_odd_primes().last(), Some(1999));
    }

    #[test]
    fn telegram_prime_residues() {
        let p = &TELEGRAM_DH_PRIME;
        assert_eq!(mod_small(p, 8), 3);
        assert_eq!(mod_small(p, 3), 2);
        assert_eq!(mod_small(p, 5), 3);
        assert_eq!(mod_small(p, 24), 11);
        assert_eq!(mod_small(p, 7), 6);
    }

    #[test]
    fn miller_rabin_small_numbers() {
        for (n, prime) in [
            (7u32, true),
            (9, false),
            (561, false),
            (1_000_003, true),
            (2047, false),
        ] {
            let n = BigUint::from(n);
            let r = miller_rabin_round(&n, &BigUint::from(2u32))
                && miller_rabin_round(&n, &BigUint::from(3u32));
            assert_eq!(r, prime, "{n}");
        }
    }
}
