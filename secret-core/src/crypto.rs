//! MTProto 2.0 end-to-end crypto: key fingerprint, KDF, msg_key, AES-256-IGE and the
//! secret-chat message layout (protocol digest §2).
//!
//! Two layers are provided:
//!
//! * the **packet** layer ([`encrypt_packet`], [`decrypt_packet`]) is the cloud-style MTProto 2.0
//!   primitive: `msg_key` over an already padded plaintext, KDF, IGE. It knows nothing about the
//!   end-to-end length prefix and is shared with the cloud-protocol simulator;
//! * the **message** layer ([`encrypt_message`], [`decrypt_message`]) builds and checks the wire
//!   `data` of a secret-chat message: `fingerprint(8) || msg_key(16) || IGE(P)` with
//!   `P = int32_le(len(payload)) || payload || padding(12..=1024)`.
//!
//! The KDF offset `x` is 0 for messages written by the chat creator and 8 for messages written by
//! the acceptor (see [`crate::Role::kdf_x`]); any other value is a programming error (see [`kdf`]).

use std::fmt;

use aes::Aes256;
use aes::cipher::{BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, KeyInit, KeyIvInit};
use crypto_bigint::ctutils::CtEq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

use crate::rand::SecureRandom;

/// Length in bytes of an MTProto authorization key / secret-chat shared key.
pub const AUTH_KEY_LEN: usize = 256;

/// The largest `data` blob [`decrypt_message`] accepts; larger input is rejected as
/// [`DecryptError::Undecryptable`] before any hashing or decryption.
pub const MAX_MESSAGE_DATA: usize = 1 << 20;

/// The largest payload whose [`encrypt_message`] output still fits in [`MAX_MESSAGE_DATA`].
pub const MAX_PAYLOAD_LEN: usize = MAX_MESSAGE_DATA - 24 - 4 - 1024;

/// Header bytes in front of the ciphertext in a secret-chat `data` blob (fingerprint + msg_key).
pub const MESSAGE_HEADER_LEN: usize = 24;

const BLOCK: usize = 16;

type IgeEnc = ige::Encryptor<Aes256>;
type IgeDec = ige::Decryptor<Aes256>;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Errors of the crypto primitives (never of decrypting untrusted input, see [`DecryptError`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoError {
    /// An auth key must be exactly [`AUTH_KEY_LEN`] bytes.
    InvalidKeyLength {
        /// The length that was given.
        len: usize,
    },
    /// The buffer length is not a multiple of the 16-byte AES block.
    NotBlockAligned,
    /// A packet plaintext must not be empty.
    EmptyPlaintext,
    /// Explicit end-to-end padding must be 12 to 1024 bytes and complete the plaintext to a
    /// multiple of 16 bytes.
    BadPadding {
        /// The padding length given.
        len: usize,
        /// The payload length.
        payload_len: usize,
    },
    /// The payload is longer than [`MAX_PAYLOAD_LEN`].
    PayloadTooLong {
        /// The payload length.
        len: usize,
    },
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::InvalidKeyLength { len } => {
                write!(f, "auth key must be {AUTH_KEY_LEN} bytes, got {len}")
            }
            CryptoError::NotBlockAligned => {
                f.write_str("buffer length is not a multiple of the 16-byte AES block")
            }
            CryptoError::EmptyPlaintext => f.write_str("packet plaintext is empty"),
            CryptoError::BadPadding { len, payload_len } => write!(
                f,
                "{len} bytes of padding after a {payload_len}-byte payload: need 12 to 1024 \
                 making the plaintext a multiple of 16"
            ),
            CryptoError::PayloadTooLong { len } => {
                write!(f, "payload of {len} bytes exceeds {MAX_PAYLOAD_LEN}")
            }
        }
    }
}

impl std::error::Error for CryptoError {}

/// Why an incoming encrypted blob was rejected.
///
/// Everything that can go wrong up to and including the msg_key check is reported as the single
/// variant [`DecryptError::Undecryptable`], so that a sender learns nothing from the error about
/// *why* a forged message failed (digest §2.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecryptError {
    /// Malformed, truncated, oversized, or failed the msg_key (integrity) check.
    Undecryptable,
    /// The blob names a different key (its 8-byte fingerprint is public information).
    WrongKey {
        /// The fingerprint found in the blob.
        found: KeyFingerprint,
    },
    /// The message is authentic (msg_key matched) but its plaintext layout is invalid: the
    /// declared length is negative, not a multiple of 4, too long, or leaves a padding outside
    /// 12..=1024 bytes.
    BadLayout {
        /// The int32 length prefix found in the plaintext.
        declared_len: i32,
        /// The length of the whole decrypted plaintext (prefix, payload and padding).
        plaintext_len: usize,
    },
}

impl fmt::Display for DecryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecryptError::Undecryptable => f.write_str("message could not be decrypted"),
            DecryptError::WrongKey { found } => {
                write!(
                    f,
                    "message is encrypted with another key (fingerprint {found})"
                )
            }
            DecryptError::BadLayout {
                declared_len,
                plaintext_len,
            } => write!(
                f,
                "authenticated plaintext has an invalid layout: declared length {declared_len} \
                 in {plaintext_len} decrypted bytes"
            ),
        }
    }
}

impl std::error::Error for DecryptError {}

// ---------------------------------------------------------------------------------------------
// Fingerprint and key
// ---------------------------------------------------------------------------------------------

/// A key fingerprint: `SHA1(key)[12..20]`, in wire byte order.
///
/// As a TL `long` (e.g. `acceptEncryption.key_fingerprint`) this is the little-endian int64 of
/// these bytes; see [`KeyFingerprint::to_i64`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyFingerprint(pub [u8; 8]);

impl KeyFingerprint {
    /// The fingerprint as a TL `long` (little-endian int64 of the bytes).
    pub fn to_i64(self) -> i64 {
        i64::from_le_bytes(self.0)
    }

    /// The fingerprint from a TL `long`.
    pub fn from_i64(v: i64) -> Self {
        KeyFingerprint(v.to_le_bytes())
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint({self})")
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A 256-byte MTProto key (a secret-chat shared key `g^ab mod p`, or a cloud auth key).
///
/// `Debug` prints only the fingerprint. The key bytes are wiped when the value is dropped.
/// Equality is constant-time. Serialised as a byte string of exactly 256 bytes.
#[derive(Clone)]
pub struct AuthKey {
    bytes: Box<[u8; AUTH_KEY_LEN]>,
    fingerprint: KeyFingerprint,
}

impl AuthKey {
    /// A key from exactly [`AUTH_KEY_LEN`] bytes.
    pub fn from_bytes(b: &[u8]) -> Result<AuthKey, CryptoError> {
        let arr: [u8; AUTH_KEY_LEN] = b
            .try_into()
            .map_err(|_| CryptoError::InvalidKeyLength { len: b.len() })?;
        Ok(AuthKey::from_array(arr))
    }

    /// A key from a 256-byte array.
    pub fn from_array(mut bytes: [u8; AUTH_KEY_LEN]) -> AuthKey {
        let boxed = Box::new(bytes);
        bytes.zeroize();
        let h = sha1(&[&boxed[..]]);
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&h[12..20]);
        AuthKey {
            bytes: boxed,
            fingerprint: KeyFingerprint(fp),
        }
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; AUTH_KEY_LEN] {
        &self.bytes
    }

    /// `SHA1(key)[12..20]` (computed once, when the key is created).
    pub fn fingerprint(&self) -> KeyFingerprint {
        self.fingerprint
    }
}

impl PartialEq for AuthKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes[..].ct_eq(&other.bytes[..]).to_bool()
    }
}

impl Eq for AuthKey {}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Drop for AuthKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl Serialize for AuthKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.bytes[..])
    }
}

impl<'de> Deserialize<'de> for AuthKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut arr = fixed_bytes::deserialize::<D, AUTH_KEY_LEN>(d)?;
        let key = AuthKey::from_array(arr);
        arr.zeroize();
        Ok(key)
    }
}

/// serde support for fixed-length byte strings (bytes in binary formats, a sequence in JSON).
pub(crate) mod fixed_bytes {
    use serde::Deserializer;
    use serde::de::{Error, SeqAccess, Visitor};
    use std::fmt;

    struct FixedVisitor<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for FixedVisitor<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a byte string of exactly {N} bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<[u8; N], E> {
            v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            if seq.next_element::<u8>()?.is_some() {
                return Err(A::Error::invalid_length(N + 1, &self));
            }
            Ok(out)
        }
    }

    /// Serialises the array as a byte string (for `#[serde(with = ...)]`).
    pub(crate) fn serialize<S: serde::Serializer, const N: usize>(
        v: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Deserialises exactly `N` bytes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        d.deserialize_bytes(FixedVisitor::<N>)
    }
}

// ---------------------------------------------------------------------------------------------
// Hashes, KDF, msg_key
// ---------------------------------------------------------------------------------------------

fn digest<const N: usize>(alg: &'static ring::digest::Algorithm, parts: &[&[u8]]) -> [u8; N] {
    let mut ctx = ring::digest::Context::new(alg);
    for p in parts {
        ctx.update(p);
    }
    let d = ctx.finish();
    let mut out = [0u8; N];
    // ok: N is the output length of `alg` at both call sites (20 for SHA-1, 32 for SHA-256).
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-1 over the concatenation of `parts`.
pub fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, parts)
}

/// SHA-256 over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    digest(&ring::digest::SHA256, parts)
}

/// Maps the KDF offset to 0 or 8. Only 0 and 8 are meaningful; debug builds assert that.
#[inline]
fn kdf_offset(x: usize) -> usize {
    debug_assert!(
        x == 0 || x == 8,
        "MTProto 2.0 KDF offset must be 0 or 8, got {x}"
    );
    if x == 0 { 0 } else { 8 }
}

/// The MTProto 2.0 KDF: `(aes_key, aes_iv)` for `msg_key` under `key` with offset `x`
/// (digest §2.3). The same function serves cloud MTProto (x = 0 client→server, 8 server→client).
///
/// `x` must be 0 or 8. Debug builds assert this; release builds treat any non-zero `x` as 8.
pub fn kdf(key: &AuthKey, msg_key: &[u8; 16], x: usize) -> ([u8; 32], [u8; 32]) {
    let x = kdf_offset(x);
    let k = key.as_bytes();
    let a = sha256(&[msg_key, &k[x..x + 36]]);
    let b = sha256(&[&k[40 + x..76 + x], msg_key]);
    let mut aes_key = [0u8; 32];
    aes_key[..8].copy_from_slice(&a[..8]);
    aes_key[8..24].copy_from_slice(&b[8..24]);
    aes_key[24..].copy_from_slice(&a[24..]);
    let mut aes_iv = [0u8; 32];
    aes_iv[..8].copy_from_slice(&b[..8]);
    aes_iv[8..24].copy_from_slice(&a[8..24]);
    aes_iv[24..].copy_from_slice(&b[24..]);
    (aes_key, aes_iv)
}

/// `msg_key = SHA256(key[88+x .. 120+x] || plaintext)[8..24]` (digest §2.2). `plaintext` is the
/// whole padded plaintext (for secret chats including the length prefix and the padding).
///
/// `x` as in [`kdf`].
pub fn msg_key(key: &AuthKey, plaintext: &[u8], x: usize) -> [u8; 16] {
    let x = kdf_offset(x);
    let k = key.as_bytes();
    let large = sha256(&[&k[88 + x..120 + x], plaintext]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&large[8..24]);
    out
}

// ---------------------------------------------------------------------------------------------
// AES
// ---------------------------------------------------------------------------------------------

fn as_blocks(buf: &mut [u8]) -> Result<&mut [aes::Block], CryptoError> {
    let (blocks, tail) = aes::Block::slice_as_chunks_mut(buf);
    if !tail.is_empty() {
        return Err(CryptoError::NotBlockAligned);
    }
    Ok(blocks)
}

/// AES-256-IGE encryption in place. `iv[0..16]` is the initial "previous ciphertext" block and
/// `iv[16..32]` the initial "previous plaintext" block (Telegram's layout).
///
/// Fails with [`CryptoError::NotBlockAligned`] unless `buf.len() % 16 == 0`.
pub fn aes_ige_encrypt(key: &[u8; 32], iv: &[u8; 32], buf: &mut [u8]) -> Result<(), CryptoError> {
    let blocks = as_blocks(buf)?;
    IgeEnc::new(key.into(), iv.into()).encrypt_blocks(blocks);
    Ok(())
}

/// AES-256-IGE decryption in place; the inverse of [`aes_ige_encrypt`] (same IV layout).
///
/// Fails with [`CryptoError::NotBlockAligned`] unless `buf.len() % 16 == 0`.
pub fn aes_ige_decrypt(key: &[u8; 32], iv: &[u8; 32], buf: &mut [u8]) -> Result<(), CryptoError> {
    let blocks = as_blocks(buf)?;
    IgeDec::new(key.into(), iv.into()).decrypt_blocks(blocks);
    Ok(())
}

/// Raw AES-256 encryption of every whole 16-byte block of `buf` in place (ECB; a trailing partial
/// block is left untouched). Not a mode to use for data: it exists as the benchmark baseline for
/// the IGE throughput (same crate, same key schedule).
pub fn aes256_encrypt_blocks(key: &[u8; 32], buf: &mut [u8]) {
    let (blocks, _tail) = aes::Block::slice_as_chunks_mut(buf);
    Aes256::new(key.into()).encrypt_blocks(blocks);
}

/// AES-256 one block at a time over the whole blocks of `buf`, each block encrypted alone (no
/// batching, no pipelining), inside one session of the crate's backend: the floor for any
/// sequential mode such as IGE, whose blocks cannot be pipelined. The benchmark's baseline for
/// IGE throughput.
///
/// One backend session matters: `BlockCipherEncrypt::encrypt_block` on `Aes256` re-dispatches
/// to the CPU's backend on every call, and on CPUs with VAES / AVX-512 that set-up costs several
/// times the AES rounds themselves, while IGE (like any mode in the RustCrypto crates) runs all
/// its blocks in one session. [`aes256_encrypt_block_calls`] is that per-call path.
pub fn aes256_encrypt_single_blocks(key: &[u8; 32], buf: &mut [u8]) {
    use aes::cipher::consts::U16;
    use aes::cipher::{BlockCipherEncBackend, BlockCipherEncClosure, BlockSizeUser};

    struct OneByOne<'a>(&'a mut [aes::Block]);
    impl BlockSizeUser for OneByOne<'_> {
        type BlockSize = U16;
    }
    impl BlockCipherEncClosure for OneByOne<'_> {
        fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
            for block in self.0 {
                backend.encrypt_block(block.into());
            }
        }
    }
    let (blocks, _tail) = aes::Block::slice_as_chunks_mut(buf);
    Aes256::new(key.into()).encrypt_with_backend(OneByOne(blocks));
}

/// AES-256 with one `encrypt_block` call per block (the crate re-dispatches to its backend on
/// each call). A benchmark row beside [`aes256_encrypt_single_blocks`].
pub fn aes256_encrypt_block_calls(key: &[u8; 32], buf: &mut [u8]) {
    let (blocks, _tail) = aes::Block::slice_as_chunks_mut(buf);
    let cipher = Aes256::new(key.into());
    for block in blocks {
        cipher.encrypt_block(block);
    }
}

// ---------------------------------------------------------------------------------------------
// Packet layer (cloud-style)
// ---------------------------------------------------------------------------------------------

/// Encrypts an already padded plaintext: returns `(msg_key, IGE(plaintext))`.
///
/// The plaintext must be non-empty and a multiple of 16 bytes. No length prefix and no padding
/// are added (cloud MTProto layout; the end-to-end layout is [`encrypt_message`]).
pub fn encrypt_packet(
    key: &AuthKey,
    x: usize,
    padded_plaintext: &[u8],
) -> Result<([u8; 16], Vec<u8>), CryptoError> {
    if padded_plaintext.is_empty() {
        return Err(CryptoError::EmptyPlaintext);
    }
    if !padded_plaintext.len().is_multiple_of(BLOCK) {
        return Err(CryptoError::NotBlockAligned);
    }
    let mk = msg_key(key, padded_plaintext, x);
    let (aes_key, aes_iv) = kdf(key, &mk, x);
    let mut buf = padded_plaintext.to_vec();
    aes_ige_encrypt(&aes_key, &aes_iv, &mut buf)?;
    Ok((mk, buf))
}

/// Decrypts `ciphertext` and checks, in constant time, that `msg_key` is the msg_key of the whole
/// decrypted plaintext. Returns the plaintext, padding included.
///
/// Empty or non-block-aligned ciphertext and a msg_key mismatch are all
/// [`DecryptError::Undecryptable`].
pub fn decrypt_packet(
    key: &AuthKey,
    x: usize,
    msg_key: &[u8; 16],
    ciphertext: &[u8],
) -> Result<Vec<u8>, DecryptError> {
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(BLOCK) {
        return Err(DecryptError::Undecryptable);
    }
    let (aes_key, aes_iv) = kdf(key, msg_key, x);
    let mut buf = ciphertext.to_vec();
    aes_ige_decrypt(&aes_key, &aes_iv, &mut buf).map_err(|_| DecryptError::Undecryptable)?;
    let expected = self::msg_key(key, &buf, x);
    if !expected.ct_eq(msg_key).to_bool() {
        buf.zeroize();
        return Err(DecryptError::Undecryptable);
    }
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// Message layer (end-to-end)
// ---------------------------------------------------------------------------------------------

const MIN_PADDING: usize = 12;
const MAX_PADDING: usize = 1024;

/// Number of padding bytes to append to a length-prefixed plaintext of `prefixed_len` bytes
/// (`4 + len(payload)`), following TDLib's deterministic size buckets (digest §2.1): the padded
/// size is the first of {64, 128, 192, 256, 384, 512, 768, 1024, 1280} that holds
/// `prefixed_len + 12` rounded up to 16, and above 1280 the next multiple of 448 past 1280.
///
/// The result is always in 12..=1024 (in fact at most ~460) and makes the total a multiple of 16.
/// Only the padding *length* is deterministic; [`encrypt_message`] fills it with random bytes.
pub fn padding_len(prefixed_len: usize) -> usize {
    const BUCKETS: [usize; 9] = [64, 128, 192, 256, 384, 512, 768, 1024, 1280];
    let min_total = prefixed_len.saturating_add(MIN_PADDING + 15) & !15;
    let total = match BUCKETS.iter().find(|&&b| min_total <= b) {
        Some(&b) => b,
        None => (min_total - 1280)
            .div_ceil(448)
            .saturating_mul(448)
            .saturating_add(1280),
    };
    total.saturating_sub(prefixed_len)
}

/// The fingerprint named by a secret-chat `data` blob (its first 8 bytes), for picking the key
/// (current or previous, digest §5.3) before calling [`decrypt_message`]. `None` if shorter.
pub fn message_fingerprint(data: &[u8]) -> Option<KeyFingerprint> {
    let fp: [u8; 8] = data.get(..8)?.try_into().ok()?;
    Some(KeyFingerprint(fp))
}

/// Encrypts a serialised TL payload (normally a boxed `decryptedMessageLayer`) into the wire
/// `data` of a secret-chat message: `fingerprint(8) || msg_key(16) || IGE(P)` with
/// `P = int32_le(len(payload)) || payload || random padding` (digest §2.1-§2.5).
///
/// `x` is the KDF offset of the *sender*, i.e. of this side ([`crate::Role::kdf_x`]).
///
/// `payload` should be a multiple of 4 bytes long (TL always is) and at most
/// [`MAX_PAYLOAD_LEN`] bytes; otherwise the receiver rejects the result (debug builds assert).
pub fn encrypt_message(
    key: &AuthKey,
    x: usize,
    payload: &[u8],
    rng: &mut dyn SecureRandom,
) -> Vec<u8> {
    debug_assert!(
        payload.len().is_multiple_of(4),
        "TL payload length must be a multiple of 4"
    );
    debug_assert!(
        payload.len() <= MAX_PAYLOAD_LEN,
        "payload too long for one message"
    );
    seal_e2e(key, x, payload, padding_len(4 + payload.len()), |pad| {
        rng.fill(pad)
    })
}

/// [`encrypt_message`] with the padding given instead of drawn, so that the result is fully
/// determined (interoperability tests against other implementations and published vectors).
///
/// `padding` must be 12 to 1024 bytes and make `4 + len(payload) + len(padding)` a multiple of
/// 16 ([`CryptoError::BadPadding`] otherwise); any such length is valid on the wire, the bucket
/// sizes of [`padding_len`] are only what we choose. The payload may have any length up to
/// [`MAX_PAYLOAD_LEN`] ([`CryptoError::PayloadTooLong`]).
pub fn encrypt_message_with_padding(
    key: &AuthKey,
    x: usize,
    payload: &[u8],
    padding: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(CryptoError::PayloadTooLong { len: payload.len() });
    }
    let total = 4 + payload.len() + padding.len();
    if !(MIN_PADDING..=MAX_PADDING).contains(&padding.len()) || !total.is_multiple_of(BLOCK) {
        return Err(CryptoError::BadPadding {
            len: padding.len(),
            payload_len: payload.len(),
        });
    }
    Ok(seal_e2e(key, x, payload, padding.len(), |pad| {
        pad.copy_from_slice(padding)
    }))
}

/// Lays out `int32_le(len(payload)) || payload || padding` directly in AES blocks (so the IGE
/// pass cannot meet a partial block), fills the padding with `fill`, and encrypts.
///
/// The blocks hold at least `pad_len` padding bytes; callers pass a `pad_len` that makes the
/// total a multiple of 16, so `fill` gets exactly `pad_len` bytes.
fn seal_e2e(
    key: &AuthKey,
    x: usize,
    payload: &[u8],
    pad_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let used = 4 + payload.len();
    let mut blocks = vec![aes::Block::default(); (used + pad_len).div_ceil(BLOCK)];
    let plain = aes::Block::slice_as_flattened_mut(&mut blocks);
    // ok: a payload over 4 GiB cannot reach here (MAX_PAYLOAD_LEN is 1 MiB; see the asserts).
    let len_prefix = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    plain[..4].copy_from_slice(&len_prefix.to_le_bytes());
    plain[4..used].copy_from_slice(payload);
    fill(&mut plain[used..]);

    let mk = msg_key(key, plain, x);
    let (aes_key, aes_iv) = kdf(key, &mk, x);
    IgeEnc::new((&aes_key).into(), (&aes_iv).into()).encrypt_blocks(&mut blocks);

    let cipher = aes::Block::slice_as_flattened(&blocks);
    let mut out = Vec::with_capacity(MESSAGE_HEADER_LEN + cipher.len());
    out.extend_from_slice(&key.fingerprint().0);
    out.extend_from_slice(&mk);
    out.extend_from_slice(cipher);
    out
}

/// Decrypts the wire `data` of a secret-chat message and returns exactly the payload.
///
/// `x` is the KDF offset of the *sender*, i.e. of the peer ([`crate::Role::kdf_x`] of
/// `role.peer()`). Checks run in the order of digest §2.7:
///
/// 1. `24 <= len(data) <= MAX_MESSAGE_DATA`, and the ciphertext is a non-empty multiple of 16
///    bytes, else [`DecryptError::Undecryptable`];
/// 2. the fingerprint is `key`'s, else [`DecryptError::WrongKey`] (public information);
/// 3. IGE-decrypt, recompute msg_key over the whole plaintext and compare in constant time, else
///    [`DecryptError::Undecryptable`];
/// 4. the length prefix `L` satisfies `L % 4 == 0`, `L <= len(P) - 4` and the padding
///    `len(P) - 4 - L` is in 12..=1024, else [`DecryptError::BadLayout`].
pub fn decrypt_message(key: &AuthKey, x: usize, data: &[u8]) -> Result<Vec<u8>, DecryptError> {
    decrypt_e2e(key, x, data, true)
}

/// [`decrypt_message`] with the `L % 4 == 0` check optional, like TDLib's
/// `Transport::read_e2e_crypto(check_mod4)`.
///
/// Secret chats always use [`decrypt_message`] (TL payloads are whole 4-byte words). The same
/// end-to-end format also carries TDLib's encrypted push notifications, whose JSON payloads have
/// arbitrary lengths: those are read with `check_mod4 = false`.
pub fn decrypt_e2e(
    key: &AuthKey,
    x: usize,
    data: &[u8],
    check_mod4: bool,
) -> Result<Vec<u8>, DecryptError> {
    if data.len() > MAX_MESSAGE_DATA || data.len() < MESSAGE_HEADER_LEN {
        return Err(DecryptError::Undecryptable);
    }
    let (header, ciphertext) = data.split_at(MESSAGE_HEADER_LEN);
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(BLOCK) {
        return Err(DecryptError::Undecryptable);
    }
    let (fp, mk) = header.split_at(8);
    if fp != key.fingerprint().0 {
        let mut found = [0u8; 8];
        found.copy_from_slice(fp); // ok: `fp` is exactly 8 bytes (split_at(8) of 24)
        return Err(DecryptError::WrongKey {
            found: KeyFingerprint(found),
        });
    }
    let mk: &[u8; 16] = mk.try_into().map_err(|_| DecryptError::Undecryptable)?;
    let mut plain = decrypt_packet(key, x, mk, ciphertext)?;

    let plaintext_len = plain.len();
    let mut prefix = [0u8; 4];
    prefix.copy_from_slice(&plain[..4]); // ok: `plain` is at least one 16-byte block
    let declared_len = i32::from_le_bytes(prefix);
    let layout_ok = usize::try_from(declared_len).ok().filter(|&len| {
        (!check_mod4 || len.is_multiple_of(4))
            && len <= plaintext_len - 4
            && (MIN_PADDING..=MAX_PADDING).contains(&(plaintext_len - 4 - len))
    });
    let Some(len) = layout_ok else {
        plain.zeroize();
        return Err(DecryptError::BadLayout {
            declared_len,
            plaintext_len,
        });
    };
    plain.truncate(4 + len);
    plain.drain(..4);
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_raw_aes_paths_agree() {
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(7));
        let data: Vec<u8> = (0..16 * 37 + 5).map(|i| (i as u8) ^ 0x5c).collect();
        let (mut a, mut b, mut c) = (data.clone(), data.clone(), data.clone());
        aes256_encrypt_blocks(&key, &mut a);
        aes256_encrypt_single_blocks(&key, &mut b);
        aes256_encrypt_block_calls(&key, &mut c);
        assert_ne!(a, data);
        assert_eq!(a, b);
        assert_eq!(a, c);
        // The partial tail is left alone.
        assert_eq!(a[16 * 37..], data[16 * 37..]);
    }

    #[test]
    fn padding_len_rule() {
        for prefixed in 4..5000usize {
            let pad = padding_len(prefixed);
            assert!((12..=1024).contains(&pad), "len {prefixed} pad {pad}");
            assert_eq!((prefixed + pad) % 16, 0);
        }
        assert_eq!(padding_len(4), 60);
        assert_eq!(padding_len(52), 12);
        assert_eq!(padding_len(53), 128 - 53);
        assert_eq!(padding_len(1268), 12);
        assert_eq!(padding_len(1269), 1728 - 1269);
    }

    #[test]
    fn fingerprint_i64_round_trip() {
        let fp = KeyFingerprint([0x24, 0x38, 0x02, 0xb0, 0xb1, 0x25, 0x0e, 0x28]);
        assert_eq!(fp.to_i64(), 2886285856283441188);
        assert_eq!(KeyFingerprint::from_i64(fp.to_i64()), fp);
        assert_eq!(format!("{fp:?}"), "KeyFingerprint(243802b0b1250e28)");
    }

    #[test]
    fn auth_key_debug_hides_bytes_and_serde_checks_length() {
        let key = AuthKey::from_array([0xab; AUTH_KEY_LEN]);
        let dbg = format!("{key:?}");
        assert!(!dbg.contains("ab, ab") && !dbg.contains("abab"), "{dbg}");
        assert!(dbg.contains(&key.fingerprint().to_string()));
        assert!(AuthKey::from_bytes(&[0u8; 255]).is_err());
        assert!(AuthKey::from_bytes(&[0u8; 257]).is_err());

        let json = serde_json::to_string(&key).expect("serialize");
        let back: AuthKey = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, key);
        assert_eq!(back.fingerprint(), key.fingerprint());
        let short = serde_json::to_string(&vec![1u8; 255]).expect("serialize");
        assert!(serde_json::from_str::<AuthKey>(&short).is_err());
        let long = serde_json::to_string(&vec![1u8; 257]).expect("serialize");
        assert!(serde_json::from_str::<AuthKey>(&long).is_err());
    }

    #[test]
    fn decrypt_message_bad_layout_after_authentication() {
        let key = AuthKey::from_array(std::array::from_fn(|i| i as u8));
        // Authentic packet whose declared length is not a multiple of 4.
        let mut p = vec![0u8; 32];
        p[..4].copy_from_slice(&5i32.to_le_bytes());
        let (mk, ct) = encrypt_packet(&key, 0, &p).expect("aligned");
        let mut data = key.fingerprint().0.to_vec();
        data.extend_from_slice(&mk);
        data.extend_from_slice(&ct);
        assert_eq!(
            decrypt_message(&key, 0, &data),
            Err(DecryptError::BadLayout {
                declared_len: 5,
                plaintext_len: 32
            })
        );
        // Padding too short (8 bytes).
        p[..4].copy_from_slice(&20i32.to_le_bytes());
        let (mk, ct) = encrypt_packet(&key, 0, &p).expect("aligned");
        data.truncate(8);
        data.extend_from_slice(&mk);
        data.extend_from_slice(&ct);
        assert!(matches!(
            decrypt_message(&key, 0, &data),
            Err(DecryptError::BadLayout { .. })
        ));
        // Negative length.
        p[..4].copy_from_slice(&(-4i32).to_le_bytes());
        let (mk, ct) = encrypt_packet(&key, 0, &p).expect("aligned");
        data.truncate(8);
        data.extend_from_slice(&mk);
        data.extend_from_slice(&ct);
        assert!(matches!(
            decrypt_message(&key, 0, &data),
            Err(DecryptError::BadLayout { .. })
        ));
        // Correct: 16 bytes payload + 12 bytes padding.
        p[..4].copy_from_slice(&16i32.to_le_bytes());
        let (mk, ct) = encrypt_packet(&key, 0, &p).expect("aligned");
        data.truncate(8);
        data.extend_from_slice(&mk);
        data.extend_from_slice(&ct);
        assert_eq!(decrypt_message(&key, 0, &data), Ok(vec![0u8; 16]));
        // Same data decrypted with the other direction's x fails authentication.
        assert_eq!(
            decrypt_message(&key, 8, &data),
            Err(DecryptError::Undecryptable)
        );
    }
}
