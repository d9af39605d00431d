//! The fuzz target's property, run as a property test: arbitrary bytes through decrypt + parse +
//! the seq logic never panic, and a refused message never changes the stored state.

use std::sync::OnceLock;

use proptest::prelude::*;
use secret_core::fuzzing::ReceiveHarness;

fn harness() -> &'static ReceiveHarness {
    static H: OnceLock<ReceiveHarness> = OnceLock::new();
    H.get_or_init(|| ReceiveHarness::new().expect("harness builds"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_or_change_state(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        harness().run(&input);
    }

    #[test]
    fn fuzzed_headers_under_the_real_key(
        seqs in proptest::collection::vec(any::<u8>(), 12),
        tail in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut input = vec![3u8];
        input.extend(seqs);
        input.extend(tail);
        harness().run(&input);
    }
}

#[test]
fn structured_headers_reach_the_seq_checks() {
    // Hand-picked headers: valid in-order, gap, duplicate, wrong parity, huge numbers.
    let h = harness();
    for (layer, in_seq, out_seq) in [
        (144, 1, 0),
        (144, 1, 2),
        (144, 1, 10),
        (144, 0, 0),
        (73, 3, 0),
        (144, -1, 0),
        (i32::MAX, i32::MAX, i32::MAX - 1),
    ] {
        let mut input = vec![3u8];
        for v in [layer, in_seq, out_seq] {
            input.extend_from_slice(&v.to_le_bytes());
        }
        // A decryptedMessageService with a Noop.
        input.extend_from_slice(&0x73164160u32.to_le_bytes());
        input.extend_from_slice(&7i64.to_le_bytes());
        input.extend_from_slice(&0xa82fdd63u32.to_le_bytes());
        h.run(&input);
    }
}
