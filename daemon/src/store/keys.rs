//! Key encodings whose byte order is the numeric order.
//!
//! sled orders keys by their bytes. A signed integer written big-endian with its sign bit
//! flipped (`x ^ 0x80…`) sorts in numeric order: `i32::MIN` becomes `00 00 00 00`, `-1`
//! becomes `7f ff ff ff`, `0` becomes `80 00 00 00`. Unsigned integers are plain big-endian.
//!
//! Composite keys are the concatenation of their parts, so `key_i32(chat)` is the prefix of
//! every `key_i32_*(chat, _)` key: `scan_prefix(tree, &key_i32(chat))` lists one chat's
//! entries in the order of the second part, and `last_with_prefix` finds its largest.
//!
//! The decoders return `None` unless the key has exactly the encoded length.

const SIGN_32: u32 = 0x8000_0000;
const SIGN_64: u64 = 0x8000_0000_0000_0000;

/// `a` as 4 bytes in numeric order.
pub fn key_i32(a: i32) -> [u8; 4] {
    ((a as u32) ^ SIGN_32).to_be_bytes()
}

/// `(a, b)` as 8 bytes in numeric order (by `a`, then `b`).
pub fn key_i32_u32(a: i32, b: u32) -> [u8; 8] {
    join(key_i32(a), b.to_be_bytes())
}

/// `(a, b)` as 12 bytes in numeric order (by `a`, then `b`).
pub fn key_i32_i64(a: i32, b: i64) -> [u8; 12] {
    join(key_i32(a), ((b as u64) ^ SIGN_64).to_be_bytes())
}

/// `(a, b)` as 12 bytes in numeric order (by `a`, then `b`).
pub fn key_i32_u64(a: i32, b: u64) -> [u8; 12] {
    join(key_i32(a), b.to_be_bytes())
}

/// The `i32` of a [`key_i32`] key.
pub fn decode_i32(key: &[u8]) -> Option<i32> {
    let bytes: [u8; 4] = key.try_into().ok()?;
    Some((u32::from_be_bytes(bytes) ^ SIGN_32) as i32)
}

/// The parts of a [`key_i32_u32`] key.
pub fn decode_i32_u32(key: &[u8]) -> Option<(i32, u32)> {
    let (a, b) = split::<4>(key)?;
    Some((a, u32::from_be_bytes(b)))
}

/// The parts of a [`key_i32_i64`] key.
pub fn decode_i32_i64(key: &[u8]) -> Option<(i32, i64)> {
    let (a, b) = split::<8>(key)?;
    Some((a, (u64::from_be_bytes(b) ^ SIGN_64) as i64))
}

/// The parts of a [`key_i32_u64`] key.
pub fn decode_i32_u64(key: &[u8]) -> Option<(i32, u64)> {
    let (a, b) = split::<8>(key)?;
    Some((a, u64::from_be_bytes(b)))
}

/// `a ‖ b`; `N` must be `4 + M` (checked by the callers' return types).
fn join<const M: usize, const N: usize>(a: [u8; 4], b: [u8; M]) -> [u8; N] {
    let mut out = [0u8; N];
    out[..4].copy_from_slice(&a);
    out[4..].copy_from_slice(&b);
    out
}

/// The leading `i32` and the `M` bytes after it, if `key` is exactly `4 + M` bytes long.
fn split<const M: usize>(key: &[u8]) -> Option<(i32, [u8; M])> {
    let (a, rest) = key.split_first_chunk::<4>()?;
    let b: [u8; M] = rest.try_into().ok()?;
    Some((decode_i32(a)?, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const I32S: [i32; 9] = [
        i32::MIN,
        i32::MIN + 1,
        -1_000_000,
        -2,
        -1,
        0,
        1,
        77,
        i32::MAX,
    ];
    const I64S: [i64; 7] = [i64::MIN, -(1 << 40), -1, 0, 1, 1 << 40, i64::MAX];
    const U64S: [u64; 5] = [0, 1, 255, 1 << 40, u64::MAX];
    const U32S: [u32; 5] = [0, 1, 255, 1 << 31, u32::MAX];

    /// Every pair of the sorted inputs encodes to strictly increasing bytes.
    fn assert_increasing<T: std::fmt::Debug, K: Ord + std::fmt::Debug>(
        items: &[T],
        key: impl Fn(&T) -> K,
    ) {
        for w in items.windows(2) {
            assert!(key(&w[0]) < key(&w[1]), "{:?} !< {:?}", w[0], w[1]);
        }
    }

    fn pairs<A: Copy, B: Copy>(a: &[A], b: &[B]) -> Vec<(A, B)> {
        a.iter()
            .flat_map(|&x| b.iter().map(move |&y| (x, y)))
            .collect()
    }

    #[test]
    fn i32_order_and_round_trip() {
        assert_increasing(&I32S, |&a| key_i32(a));
        for a in I32S {
            assert_eq!(decode_i32(&key_i32(a)), Some(a));
        }
        assert_eq!(key_i32(-1), [0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(key_i32(0), [0x80, 0, 0, 0]);
    }

    #[test]
    fn composite_order_and_round_trip() {
        let p = pairs(&I32S, &U32S);
        assert_increasing(&p, |&(a, b)| key_i32_u32(a, b));
        assert!(
            p.iter()
                .all(|&(a, b)| decode_i32_u32(&key_i32_u32(a, b)) == Some((a, b)))
        );
        let p = pairs(&I32S, &I64S);
        assert_increasing(&p, |&(a, b)| key_i32_i64(a, b));
        assert!(
            p.iter()
                .all(|&(a, b)| decode_i32_i64(&key_i32_i64(a, b)) == Some((a, b)))
        );
        let p = pairs(&I32S, &U64S);
        assert_increasing(&p, |&(a, b)| key_i32_u64(a, b));
        assert!(
            p.iter()
                .all(|&(a, b)| decode_i32_u64(&key_i32_u64(a, b)) == Some((a, b)))
        );
    }

    #[test]
    fn chat_key_is_the_prefix_of_its_composite_keys() {
        for a in I32S {
            assert!(key_i32_u32(a, 9).starts_with(&key_i32(a)));
            assert!(key_i32_i64(a, -9).starts_with(&key_i32(a)));
            assert!(key_i32_u64(a, 9).starts_with(&key_i32(a)));
        }
    }

    #[test]
    fn bad_lengths_decode_to_none() {
        assert_eq!(decode_i32(&[1, 2, 3]), None);
        assert_eq!(decode_i32(&[1, 2, 3, 4, 5]), None);
        assert_eq!(decode_i32_u32(&[0; 7]), None);
        assert_eq!(decode_i32_u32(&[0; 9]), None);
        assert_eq!(decode_i32_i64(&[0; 11]), None);
        assert_eq!(decode_i32_u64(&[0; 13]), None);
        assert_eq!(decode_i32_u64(&[]), None);
    }
}
