//! Decrypt + parse + seq logic on arbitrary bytes: no panic, and no state change for a refused
//! message. See `secret_core::fuzzing`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secret_core::fuzzing::ReceiveHarness;

static HARNESS: OnceLock<Option<ReceiveHarness>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    if let Some(h) = HARNESS.get_or_init(ReceiveHarness::new) {
        h.run(data);
    }
});
