//! Property tests of the end-to-end message layer: no panics on arbitrary input, round trips,
//! and single-bit tampering is always detected.

use proptest::prelude::*;
use secret_core::crypto::{
    AuthKey, DecryptError, MESSAGE_HEADER_LEN, decrypt_message, decrypt_packet, encrypt_message,
};
use secret_core::rand::SeededRandom;

fn test_key(seed: u8) -> AuthKey {
    AuthKey::from_array(std::array::from_fn(|i| {
        (i as u8).wrapping_mul(31).wrapping_add(seed)
    }))
}

fn is_reject(r: &Result<Vec<u8>, DecryptError>) -> bool {
    matches!(
        r,
        Err(DecryptError::Undecryptable) | Err(DecryptError::WrongKey { .. })
    )
}

/// Payloads of up to ~4 KiB whose length is a multiple of 4 (as TL always is).
fn payload() -> impl Strategy<Value = Vec<u8>> {
    (0usize..1024).prop_flat_map(|words| proptest::collection::vec(any::<u8>(), words * 4))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_data_is_rejected(data in proptest::collection::vec(any::<u8>(), 0..600), x in prop_oneof![Just(0usize), Just(8usize)]) {
        let key = test_key(1);
        prop_assert!(is_reject(&decrypt_message(&key, x, &data)));
    }

    #[test]
    fn arbitrary_data_with_right_fingerprint_is_undecryptable(body in proptest::collection::vec(any::<u8>(), 0..600), x in prop_oneof![Just(0usize), Just(8usize)]) {
        let key = test_key(2);
        let mut data = key.fingerprint().0.to_vec();
        data.extend_from_slice(&body);
        prop_assert_eq!(decrypt_message(&key, x, &data), Err(DecryptError::Undecryptable));
    }

    #[test]
    fn arbitrary_packets_are_undecryptable(mk in any::<[u8; 16]>(), ct in proptest::collection::vec(any::<u8>(), 0..600)) {
        let key = test_key(3);
        prop_assert_eq!(decrypt_packet(&key, 0, &mk, &ct), Err(DecryptError::Undecryptable));
        prop_assert_eq!(decrypt_packet(&key, 8, &mk, &ct), Err(DecryptError::Undecryptable));
    }

    #[test]
    fn round_trip(payload in payload(), seed in any::<u64>(), creator in any::<bool>()) {
        let key = test_key(4);
        let x = if creator { 0 } else { 8 };
        let mut rng = SeededRandom::new(seed);
        let data = encrypt_message(&key, x, &payload, &mut rng);
        prop_assert_eq!(&data[..8], &key.fingerprint().0[..]);
        prop_assert_eq!((data.len() - MESSAGE_HEADER_LEN) % 16, 0);
        let pad = data.len() - MESSAGE_HEADER_LEN - 4 - payload.len();
        prop_assert!((12..=1024).contains(&pad));
        prop_assert_eq!(decrypt_message(&key, x, &data), Ok(payload));
        // The receiver must use the sender's x; the other offset does not authenticate.
        prop_assert_eq!(decrypt_message(&key, 8 - x, &data), Err(DecryptError::Undecryptable));
        // Another key with the same data: wrong fingerprint.
        let other = test_key(5);
        let wrong = matches!(decrypt_message(&other, x, &data), Err(DecryptError::WrongKey { .. }));
        prop_assert!(wrong);
    }

    #[test]
    fn any_bit_flip_after_the_fingerprint_is_detected(payload in payload(), seed in any::<u64>(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let key = test_key(6);
        let mut rng = SeededRandom::new(seed);
        let mut data = encrypt_message(&key, 0, &payload, &mut rng);
        let i = 8 + pos.index(data.len() - 8);
        data[i] ^= 1 << bit;
        prop_assert_eq!(decrypt_message(&key, 0, &data), Err(DecryptError::Undecryptable));
    }

    #[test]
    fn truncation_and_extension_are_undecryptable(payload in payload(), cut in 1usize..64, extra in proptest::collection::vec(any::<u8>(), 1..48)) {
        let key = test_key(7);
        let mut rng = SeededRandom::new(1);
        let data = encrypt_message(&key, 8, &payload, &mut rng);
        let cut = cut.min(data.len() - 8);
        prop_assert_eq!(decrypt_message(&key, 8, &data[..data.len() - cut]), Err(DecryptError::Undecryptable));
        let mut longer = data.clone();
        longer.extend_from_slice(&extra);
        prop_assert_eq!(decrypt_message(&key, 8, &longer), Err(DecryptError::Undecryptable));
    }
}

#[test]
fn oversized_input_is_undecryptable() {
    let key = test_key(8);
    let mut data = key.fingerprint().0.to_vec();
    data.resize(secret_core::crypto::MAX_MESSAGE_DATA + 16 + 8, 0);
    assert_eq!(
        decrypt_message(&key, 0, &data),
        Err(DecryptError::Undecryptable)
    );
}

#[test]
fn empty_payload_round_trips() {
    let key = test_key(9);
    let data = encrypt_message(&key, 8, &[], &mut SeededRandom::new(3));
    assert_eq!(data.len(), 24 + 64);
    assert_eq!(decrypt_message(&key, 8, &data), Ok(vec![]));
}
