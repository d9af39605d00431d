//! Signing in and out: the two-step password (SRP, as <https://core.telegram.org/api/srp>
//! describes the server's side) and the per-account login state.
//!
//! The server never keeps the password: [`Password::new`] stores the salts and the verifier
//! `v = g^x mod p`, `x = PH2(password, salt1, salt2)`. `account.getPassword` starts an SRP round
//! ([`Password::start`]: a fresh secret `b`, `B = (k·v + g^b) mod p`, a fresh `srp_id`); the
//! client answers `auth.checkPassword(srp_id, A, M1)` and [`Password::check`] recomputes
//! `S = (A·v^u)^b mod p`, `K = H(S)` and `M1 = H(H(p) xor H(g) | H(salt1) | H(salt2) | A | B | K)`.
//! All numbers travel as 256-byte big-endian values; `H` is SHA-256.
//!
//! | check | error |
//! |---|---|
//! | no SRP round started, or `srp_id` not the latest round's | `400 SRP_ID_INVALID` |
//! | `A` not in `1 < A < p - 1` | `400 SRP_A_INVALID` |
//! | `M1` differs | `400 PASSWORD_HASH_INVALID` (the round stays: the client may retry) |

use num_bigint::BigUint;
use ring::pbkdf2;
use secret_core::crypto::sha256;
use secret_core::dh::TELEGRAM_DH_PRIME;
use secret_core::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// The generator the password algorithm names (Telegram's DH prime is safe for `g = 3`).
pub const SRP_G: i32 = 3;
/// PBKDF2-HMAC-SHA512 iterations of `passwordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow`.
pub const PBKDF2_ITERATIONS: u32 = 100_000;
/// Length of the SRP numbers on the wire.
const LEN: usize = 256;

/// An account's two-step password, as the server keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Password {
    /// `salt1` of the algorithm (40 random bytes).
    pub salt1: Vec<u8>,
    /// `salt2` of the algorithm (16 random bytes).
    pub salt2: Vec<u8>,
    /// `v = g^x mod p`, 256 bytes big-endian.
    pub verifier: Vec<u8>,
    /// The hint shown before the password is asked for.
    pub hint: String,
}

/// A started SRP round: what `auth.checkPassword` is checked against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrpRound {
    /// The round's id (`srp_id`).
    pub id: i64,
    /// The server's secret `b`, 256 bytes.
    pub b: Vec<u8>,
    /// `B`, 256 bytes (sent as `srp_B`).
    pub big_b: Vec<u8>,
}

/// The login state of an account's device, beside its auth key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The two-step password, if the account has one.
    pub password: Option<Password>,
    /// Logged out (`auth.logOut`) and not signed in again: every call but the login calls is
    /// `401 AUTH_KEY_UNREGISTERED`.
    pub signed_out: bool,
    /// `auth.signIn` accepted the code and asked for the password: `auth.checkPassword` may
    /// finish the login.
    pub code_accepted: bool,
    /// The latest SRP round (`account.getPassword`).
    pub srp: Option<SrpRound>,
}

/// Why `auth.checkPassword` was refused (the Telegram error name).
pub fn srp_error(e: SrpError) -> &'static str {
    match e {
        SrpError::NoRound => "SRP_ID_INVALID",
        SrpError::BadA => "SRP_A_INVALID",
        SrpError::Mismatch => "PASSWORD_HASH_INVALID",
    }
}

/// What [`Password::check`] found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrpError {
    /// No round, or another round's id.
    NoRound,
    /// `A` out of range.
    BadA,
    /// `M1` differs: the password is wrong.
    Mismatch,
}

impl Password {
    /// The record of `password` under fresh salts.
    pub fn new(password: &str, hint: &str, rng: &mut dyn SecureRandom) -> Password {
        let mut salt1 = vec![0u8; 40];
        let mut salt2 = vec![0u8; 16];
        rng.fill(&mut salt1);
        rng.fill(&mut salt2);
        let x = BigUint::from_bytes_be(&ph2(password.as_bytes(), &salt1, &salt2));
        let verifier = pad(&g().modpow(&x, &p()));
        Password {
            salt1,
            salt2,
            verifier,
            hint: hint.to_owned(),
        }
    }

    /// Starts a round: a fresh `b`, `B = (k·v + g^b) mod p` and `srp_id`.
    pub fn start(&self, rng: &mut dyn SecureRandom) -> SrpRound {
        let mut b = vec![0u8; LEN];
        rng.fill(&mut b);
        let mut id = [0u8; 8];
        rng.fill(&mut id);
        let p = p();
        let v = BigUint::from_bytes_be(&self.verifier);
        let k = BigUint::from_bytes_be(&sha256(&[&TELEGRAM_DH_PRIME, &pad(&g())]));
        let g_b = g().modpow(&BigUint::from_bytes_be(&b), &p);
        let big_b = pad(&((k * v + g_b) % &p));
        SrpRound {
            id: i64::from_le_bytes(id),
            b,
            big_b,
        }
    }

    /// Checks a client's `(srp_id, A, M1)` against `round`.
    pub fn check(
        &self,
        round: Option<&SrpRound>,
        srp_id: i64,
        a: &[u8],
        m1: &[u8],
    ) -> Result<(), SrpError> {
        let round = round.filter(|r| r.id == srp_id).ok_or(SrpError::NoRound)?;
        let p = p();
        let big_a = BigUint::from_bytes_be(a);
        let one = BigUint::from(1u8);
        if a.len() > LEN || big_a <= one || big_a >= &p - &one {
            return Err(SrpError::BadA);
        }
        let a = pad(&big_a);
        let u = BigUint::from_bytes_be(&sha256(&[&a, &round.big_b]));
        let v = BigUint::from_bytes_be(&self.verifier);
        let s = (big_a * v.modpow(&u, &p)).modpow(&BigUint::from_bytes_be(&round.b), &p);
        let k = sha256(&[&pad(&s)]);
        let h_p = sha256(&[&TELEGRAM_DH_PRIME]);
        let h_g = sha256(&[&pad(&g())]);
        let xored: Vec<u8> = h_p.iter().zip(h_g.iter()).map(|(x, y)| x ^ y).collect();
        let expected = sha256(&[
            &xored,
            &sha256(&[&self.salt1]),
            &sha256(&[&self.salt2]),
            &a,
            &round.big_b,
            &k,
        ]);
        let differs = expected.len() != m1.len()
            || expected
                .iter()
                .zip(m1)
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                != 0;
        if !differs {
            Ok(())
        } else {
            Err(SrpError::Mismatch)
        }
    }
}

fn p() -> BigUint {
    BigUint::from_bytes_be(&TELEGRAM_DH_PRIME)
}

fn g() -> BigUint {
    BigUint::from(SRP_G as u32)
}

/// `n` as 256 bytes big-endian (the numbers are below `p`, so they fit).
fn pad(n: &BigUint) -> Vec<u8> {
    let b = n.to_bytes_be();
    let mut out = vec![0u8; LEN.saturating_sub(b.len())];
    out.extend_from_slice(&b);
    out
}

/// `SH(data, salt) = H(salt | data | salt)`.
fn sh(data: &[u8], salt: &[u8]) -> [u8; 32] {
    sha256(&[salt, data, salt])
}

/// `PH2 = SH(pbkdf2(sha512, PH1, salt1, 100000), salt2)`, `PH1 = SH(SH(password, salt1), salt2)`.
fn ph2(password: &[u8], salt1: &[u8], salt2: &[u8]) -> [u8; 32] {
    let ph1 = sh(&sh(password, salt1), salt2);
    let mut hash = [0u8; 64];
    let iterations = NonZeroU32::new(PBKDF2_ITERATIONS).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        salt1,
        &ph1,
        &mut hash,
    );
    sh(&hash, salt2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secret_core::rand::SystemRandom;

    /// The client side is grammers' (`calculate_2fa`), an implementation nobody here wrote.
    fn client(p: &Password, round: &SrpRound, password: &str, a: &[u8]) -> ([u8; 32], [u8; 256]) {
        grammers_crypto::two_factor_auth::calculate_2fa(
            &p.salt1,
            &p.salt2,
            &TELEGRAM_DH_PRIME,
            &SRP_G,
            round.big_b.clone(),
            a.to_vec(),
            password,
        )
    }

    #[test]
    fn grammers_proves_the_right_password_and_fails_a_wrong_one() {
        let mut rng = SystemRandom::new();
        let pw = Password::new("correct horse", "horse", &mut rng);
        let round = pw.start(&mut rng);
        let mut a = [0u8; 256];
        rng.fill(&mut a);
        let (m1, g_a) = client(&pw, &round, "correct horse", &a);
        assert_eq!(pw.check(Some(&round), round.id, &g_a, &m1), Ok(()));
        let (m1, g_a) = client(&pw, &round, "correct hors", &a);
        assert_eq!(
            pw.check(Some(&round), round.id, &g_a, &m1),
            Err(SrpError::Mismatch)
        );
        // Another round's id, no round, an A out of range.
        assert_eq!(
            pw.check(Some(&round), round.id ^ 1, &g_a, &m1),
            Err(SrpError::NoRound)
        );
        assert_eq!(pw.check(None, round.id, &g_a, &m1), Err(SrpError::NoRound));
        assert_eq!(
            pw.check(Some(&round), round.id, &[1], &m1),
            Err(SrpError::BadA)
        );
        assert_eq!(
            pw.check(Some(&round), round.id, &TELEGRAM_DH_PRIME, &m1),
            Err(SrpError::BadA)
        );
    }

    #[test]
    fn a_proof_for_one_round_fails_the_next() {
        let mut rng = SystemRandom::new();
        let pw = Password::new("pw", "", &mut rng);
        let first = pw.start(&mut rng);
        let (m1, g_a) = client(&pw, &first, "pw", &[7u8; 256]);
        let second = pw.start(&mut rng);
        assert_ne!(first.big_b, second.big_b);
        assert_eq!(
            pw.check(Some(&second), first.id, &g_a, &m1),
            Err(SrpError::NoRound)
        );
        let forged = SrpRound {
            id: first.id,
            ..second
        };
        assert_eq!(
            pw.check(Some(&forged), first.id, &g_a, &m1),
            Err(SrpError::Mismatch)
        );
    }

    #[test]
    fn the_parameters_pass_grammers_checks() {
        assert!(grammers_crypto::two_factor_auth::check_p_and_g(
            &TELEGRAM_DH_PRIME,
            &SRP_G
        ));
    }
}
