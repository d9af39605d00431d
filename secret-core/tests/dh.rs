//! Diffie-Hellman: agreement, public-value range checks, secret generation, config cache, and
//! agreement between the constant-time and the num-bigint exponentiation.

use num_bigint::BigUint;
use secret_core::crypto::{AuthKey, sha1, sha256};
use secret_core::dh::{
    DhConfig, DhConfigCache, DhError, DhKeyPair, DhSecret, TELEGRAM_DH_PRIME, bench_support,
    check_public_value, compute_shared_key, generate_key_pair, generate_secret, key_visualization,
    modpow_ct, modpow_num_bigint,
};
use secret_core::rand::{SecureRandom, SeededRandom};

fn cfg() -> DhConfig {
    DhConfig::validate(3, &TELEGRAM_DH_PRIME, 12).expect("Telegram prime with g = 3")
}

fn p() -> BigUint {
    BigUint::from_bytes_be(&TELEGRAM_DH_PRIME)
}

fn margin() -> BigUint {
    BigUint::from(1u32) << 1984u32
}

#[test]
fn two_parties_agree() {
    let cfg = cfg();
    let mut ra = SeededRandom::new(1);
    let mut rb = SeededRandom::new(2);
    let server_random = [0x5au8; 256];
    let a = generate_key_pair(&cfg, &mut ra, &server_random).expect("key pair A");
    let b = generate_key_pair(&cfg, &mut rb, &server_random).expect("key pair B");
    assert_ne!(a.secret, b.secret);
    assert!(check_public_value(&cfg, &a.public).is_ok());
    assert!(check_public_value(&cfg, &b.public).is_ok());
    // Minimal big-endian encoding: no leading zero byte.
    assert_ne!(a.public.first(), Some(&0));
    assert_ne!(b.public.first(), Some(&0));

    let ka = compute_shared_key(&cfg, &a.secret, &b.public).expect("A's key");
    let kb = compute_shared_key(&cfg, &b.secret, &a.public).expect("B's key");
    assert_eq!(ka, kb);
    assert_eq!(ka.fingerprint(), kb.fingerprint());

    // g^ab computed independently with num-bigint.
    let g = BigUint::from(3u32);
    let sa = BigUint::from_bytes_be(a.secret.as_bytes());
    let sb = BigUint::from_bytes_be(b.secret.as_bytes());
    let gab = g.modpow(&sa, &p()).modpow(&sb, &p());
    let mut expected = vec![0u8; 256];
    let bytes = gab.to_bytes_be();
    expected[256 - bytes.len()..].copy_from_slice(&bytes);
    assert_eq!(ka.as_bytes().to_vec(), expected);

    // Key visualisation of a fresh chat is the same on both sides.
    assert_eq!(key_visualization(&ka, &ka), key_visualization(&kb, &kb));
}

/// Known answer computed with Python's `pow` (g = 3, Telegram prime).
#[test]
fn known_answer() {
    let cfg = cfg();
    let a = DhSecret::from_array(std::array::from_fn(|i| (i * 7 + 1) as u8));
    let b = DhSecret::from_array(std::array::from_fn(|i| (i * 13 + 5) as u8));
    let g_a = hex::decode(concat!(
        "474d4bd10a65bd5dcf1743d9f6b14fc459d68e60ad11b32d09bcaed0590c0f18",
        "761d79310a16d78e1c91531c55329f42502a16b765b8861089892ca4e8a36397",
        "dbbe888f402425ecf636a7070aadbbafe7fc54947d45b6ab355e5bedda78f43e",
        "ec8dce6bda653b28eb444b13a94c75e8bcd9493076cb20edc2fdd9eaea7a25e2",
        "15987d60edc9d437bc3a5c3e86253228bdf4e1ff8af49828bc9245b279c61b2b",
        "58f6e549fac6711309fee7c05855af38d8d9360436f88e032a7e46c092cec50f",
        "6530151348c2f3d01f1f1d8a6eedc7087426292570743e22d92610b53bef4f86",
        "38f630849a465b50ee866c5ec938396320109f234085cdd913c4bd042b386e11",
    ))
    .expect("hex");
    let key = hex::decode(concat!(
        "b74fbf4a67bd03e0783b3089854b485943889fe584492c5892104e541da4c7b7",
        "29165a5837ffc94cd29b75073d319221a28a04038783e3e79827b774f6b25c0e",
        "2404f8407dd4fc4490ce0ac8c59823b16986c02abfc7b56fe870deac60855dcf",
        "7dd91a142219f107d1e4b52db887310cb6f23397d3fca5ff0c46ae62b5447051",
        "226f7ba1e08db7e01043738837ac0037dec97f9a369ec429436114b7e3802230",
        "e5d9965adfbc200891a9a7b545a7941f2b993bdcc650db6a9e63771e99d9852e",
        "b9da25e223498996755e8a09f79d89540aecf0828a0519497c39117569596bd0",
        "b27f618ad08c7b135b01613739de51c32e43622befb34bd613743ec810e001f2",
    ))
    .expect("hex");
    assert_eq!(
        modpow_ct(&[3], a.as_bytes(), &TELEGRAM_DH_PRIME).expect("modpow"),
        g_a
    );
    let k = compute_shared_key(&cfg, &b, &g_a).expect("shared key");
    assert_eq!(k.as_bytes().to_vec(), key);
    assert_eq!(
        k.fingerprint().0.to_vec(),
        hex::decode("59d67b227ccebf84").expect("hex")
    );
}

#[test]
fn shared_key_is_left_padded() {
    // A modulus-sized result with leading zero bytes must still give a 256-byte key: find a
    // peer value and secret with a short result by brute force over small secrets.
    let cfg = cfg();
    let peer = {
        let mut v = vec![0u8; 256];
        v[0] = 0x40;
        v[255] = 1;
        v
    };
    for e in 1u16..2000 {
        let mut s = [0u8; 256];
        s[254..].copy_from_slice(&e.to_be_bytes());
        let secret = DhSecret::from_array(s);
        let k = compute_shared_key(&cfg, &secret, &peer).expect("in range");
        if k.as_bytes()[0] == 0 {
            let expected = modpow_num_bigint(&peer, &s, &TELEGRAM_DH_PRIME);
            assert_eq!(k.as_bytes().to_vec(), expected);
            return;
        }
    }
    panic!("no short result among 2000 small exponents (probability ~2^-11)");
}

fn to_bytes(v: &BigUint) -> Vec<u8> {
    v.to_bytes_be()
}

#[test]
fn public_value_range() {
    let cfg = cfg();
    let p = p();
    let m = margin();
    let one = BigUint::from(1u32);
    let reject: Vec<(&str, Vec<u8>)> = vec![
        ("empty (0)", vec![]),
        ("0", vec![0]),
        ("1", vec![1]),
        ("2", vec![2]),
        ("2^1984 - 1", to_bytes(&(&m - &one))),
        ("p - 1", to_bytes(&(&p - &one))),
        ("p", TELEGRAM_DH_PRIME.to_vec()),
        ("p + 1", to_bytes(&(&p + &one))),
        ("p - 2^1984 + 1", to_bytes(&(&p - &m + &one))),
        ("257 bytes", {
            let mut v = vec![1u8];
            v.extend_from_slice(&[0u8; 256]);
            v
        }),
        ("all ones", vec![0xff; 256]),
    ];
    for (name, v) in &reject {
        assert_eq!(
            check_public_value(&cfg, v),
            Err(DhError::PublicValueOutOfRange),
            "{name}"
        );
    }
    let accept: Vec<(&str, Vec<u8>)> = vec![
        ("2^1984", to_bytes(&m)),
        ("p - 2^1984", to_bytes(&(&p - &m))),
        ("p / 2", to_bytes(&(&p >> 1u32))),
        ("2^1984 with leading zeros", {
            let mut v = vec![0u8; 40];
            v.extend_from_slice(&to_bytes(&m));
            v
        }),
        ("p - 2^1984 as 257 bytes", {
            let mut v = vec![0u8];
            v.extend_from_slice(&to_bytes(&(&p - &m)));
            v
        }),
    ];
    for (name, v) in &accept {
        assert_eq!(check_public_value(&cfg, v), Ok(()), "{name}");
    }

    // compute_shared_key applies the same check to the peer's value.
    let secret = DhSecret::from_array([7u8; 256]);
    for (name, v) in &reject {
        assert_eq!(
            compute_shared_key(&cfg, &secret, v),
            Err(DhError::PublicValueOutOfRange),
            "{name}"
        );
    }
}

#[test]
fn server_random_is_mixed_in() {
    let mut r1 = SeededRandom::new(42);
    let mut r2 = SeededRandom::new(42);
    let mut r3 = SeededRandom::new(42);
    let mut local = [0u8; 256];
    SeededRandom::new(42).fill(&mut local);

    let plain = generate_secret(&mut r1, &[]);
    assert_eq!(
        plain.as_bytes(),
        &local,
        "no server random: the local bytes"
    );

    let server: Vec<u8> = (0..256).map(|i| (i * 31 + 7) as u8).collect();
    let mixed = generate_secret(&mut r2, &server);
    assert_ne!(mixed, plain);
    let expected: Vec<u8> = local.iter().zip(&server).map(|(a, b)| a ^ b).collect();
    assert_eq!(mixed.as_bytes().to_vec(), expected);

    // The server's bytes alone never become the secret: a server sending our own bytes
    // would cancel them, but it cannot know them; with the same server random and another
    // local stream the secret differs.
    let mut other = SeededRandom::new(43);
    assert_ne!(generate_secret(&mut other, &server), mixed);

    // Short server random: only the overlap is mixed; longer: the excess is ignored.
    let short = generate_secret(&mut r3, &[0xff; 10]);
    assert_eq!(&short.as_bytes()[10..], &local[10..]);
    assert!(
        short.as_bytes()[..10]
            .iter()
            .zip(&local[..10])
            .all(|(a, b)| *a == !b)
    );
    let long = generate_secret(&mut SeededRandom::new(42), &[0u8; 1000]);
    assert_eq!(long.as_bytes(), &local);

    // And it changes the key pair.
    let cfg = cfg();
    let a = generate_key_pair(&cfg, &mut SeededRandom::new(5), &[]).expect("pair");
    let b = generate_key_pair(&cfg, &mut SeededRandom::new(5), &[1]).expect("pair");
    assert_ne!(a.public, b.public);
}

#[test]
fn config_cache_by_version() {
    let mut cache = DhConfigCache::new();
    assert_eq!(cache.get(1), None);
    assert_eq!(cache.latest(), None);

    let c1 = cache
        .validate_and_insert(3, &TELEGRAM_DH_PRIME, 1)
        .expect("valid");
    assert_eq!(cache.get(1), Some(&c1));
    let c5 = cache
        .validate_and_insert(7, &TELEGRAM_DH_PRIME, 5)
        .expect("valid");
    assert_eq!(cache.get(5), Some(&c5));
    assert_eq!(cache.latest(), Some(&c5));
    assert_eq!(cache.get(1).map(|c| c.g), Some(3));

    // A known p with a bad generator is still rejected; the cache is unchanged.
    assert_eq!(
        cache.validate_and_insert(2, &TELEGRAM_DH_PRIME, 1),
        Err(DhError::GeneratorResidue { g: 2 })
    );
    assert_eq!(cache.get(1), Some(&c1));

    // A different p under a known version is validated again (and here rejected).
    let mut other = TELEGRAM_DH_PRIME;
    other[255] ^= 2; // p - 2: odd, 2048 bits, divisible by 3 (p ≡ 2 mod 3)
    assert_eq!(
        cache.validate_and_insert(4, &other, 1),
        Err(DhError::PrimeNotSafe)
    );
    assert_eq!(cache.get(1), Some(&c1));

    // Serde round trip (the cache is part of the daemon's stored state).
    let bytes = postcard::to_allocvec(&cache).expect("postcard");
    let back: DhConfigCache = postcard::from_bytes(&bytes).expect("postcard");
    assert_eq!(back, cache);
    let json = serde_json::to_string(&cache).expect("json");
    let back: DhConfigCache = serde_json::from_str(&json).expect("json");
    assert_eq!(back, cache);
}

#[test]
fn secrets_are_redacted_and_serialisable() {
    let cfg = cfg();
    let pair = generate_key_pair(&cfg, &mut SeededRandom::new(9), &[]).expect("pair");
    let dbg = format!("{pair:?}");
    assert!(dbg.contains("redacted"), "{dbg}");
    let secret_hex = hex::encode(pair.secret.as_bytes());
    assert!(!dbg.contains(&secret_hex[..16]), "{dbg}");
    let secret_dec = format!("{:?}", &pair.secret.as_bytes()[..4]);
    assert!(!dbg.contains(&secret_dec[1..secret_dec.len() - 1]), "{dbg}");

    let bytes = postcard::to_allocvec(&pair).expect("postcard");
    let back: DhKeyPair = postcard::from_bytes(&bytes).expect("postcard");
    assert_eq!(back, pair);
    let json = serde_json::to_string(&pair).expect("json");
    let back: DhKeyPair = serde_json::from_str(&json).expect("json");
    assert_eq!(back, pair);

    // Wrong lengths are rejected on deserialisation.
    let short = postcard::to_allocvec(&serde_bytes_like(&[1u8; 255])).expect("postcard");
    assert!(postcard::from_bytes::<DhSecret>(&short).is_err());
    let key = AuthKey::from_array([3u8; 256]);
    let k_bytes = postcard::to_allocvec(&key).expect("postcard");
    assert_eq!(k_bytes.len(), 2 + 256, "varint length + raw bytes");
    assert_eq!(
        postcard::from_bytes::<AuthKey>(&k_bytes).expect("postcard"),
        key
    );
    assert!(postcard::from_bytes::<AuthKey>(&short).is_err());
}

/// Serialises as a serde byte string (what `AuthKey`/`DhSecret` use).
struct BytesLike<'a>(&'a [u8]);
impl serde::Serialize for BytesLike<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}
fn serde_bytes_like(b: &[u8]) -> BytesLike<'_> {
    BytesLike(b)
}

#[test]
fn key_visualization_layout() {
    let a = AuthKey::from_array([1u8; 256]);
    let b = AuthKey::from_array([2u8; 256]);
    let v = key_visualization(&a, &b);
    assert_eq!(v[..16], sha1(&[a.as_bytes()])[..16]);
    assert_eq!(v[16..], sha256(&[b.as_bytes()])[..20]);
}

#[test]
fn modpow_implementations_agree() {
    let mut rng = SeededRandom::new(77);
    let p = TELEGRAM_DH_PRIME;
    for i in 0..6 {
        let mut base = [0u8; 256];
        rng.fill(&mut base);
        base[0] &= 0x7f; // < p
        let mut exp = [0u8; 256];
        rng.fill(&mut exp);
        if i == 0 {
            exp = [0u8; 256]; // x^0 = 1
        }
        let reference = modpow_num_bigint(&base, &exp, &p);
        assert_eq!(
            modpow_ct(&base, &exp, &p).expect("odd modulus"),
            reference,
            "boxed, {i}"
        );
        assert_eq!(
            bench_support::modpow_ct_u2048(&base, &exp, &p).to_vec(),
            reference,
            "u2048"
        );
        assert_eq!(
            bench_support::modpow_ct_u2048_amm(&base, &exp, &p).to_vec(),
            reference,
            "u2048 amm"
        );
    }
    // Other sizes, a base larger than the modulus, short exponents.
    for (mod_len, base_len, exp_len) in [(64usize, 100usize, 3usize), (24, 8, 256), (1, 1, 1)] {
        let mut m = vec![0u8; mod_len];
        rng.fill(&mut m);
        m[0] |= 0x80;
        m[mod_len - 1] |= 1;
        let mut base = vec![0u8; base_len];
        rng.fill(&mut base);
        let mut exp = vec![0u8; exp_len];
        rng.fill(&mut exp);
        assert_eq!(
            modpow_ct(&base, &exp, &m).expect("odd modulus"),
            modpow_num_bigint(&base, &exp, &m),
            "sizes {mod_len}/{base_len}/{exp_len}"
        );
    }
    // Even or empty modulus is refused, not a panic.
    assert_eq!(modpow_ct(&[2], &[3], &[8]), Err(DhError::KeyGeneration));
    assert_eq!(modpow_ct(&[2], &[3], &[]), Err(DhError::KeyGeneration));
}

#[test]
fn unvalidated_config_does_not_panic() {
    let bad = DhConfig {
        g: 3,
        p: vec![0x80; 256],
        version: 1,
    }; // even p
    let mut rng = SeededRandom::new(1);
    assert_eq!(
        generate_key_pair(&bad, &mut rng, &[]),
        Err(DhError::KeyGeneration)
    );
    let secret = DhSecret::from_array([1; 256]);
    assert!(compute_shared_key(&bad, &secret, &[0x40; 256]).is_err());
    let tiny = DhConfig {
        g: 3,
        p: vec![7],
        version: 1,
    };
    assert!(generate_key_pair(&tiny, &mut rng, &[]).is_err());
    assert!(check_public_value(&tiny, &[3]).is_err());
    for g in [0, 1, 8, 300, -3] {
        let bad_g = DhConfig {
            g,
            p: TELEGRAM_DH_PRIME.to_vec(),
            version: 1,
        };
        assert_eq!(
            generate_key_pair(&bad_g, &mut rng, &[]),
            Err(DhError::KeyGeneration)
        );
    }
}
