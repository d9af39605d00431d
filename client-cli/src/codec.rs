//! Offline conversions with secret-core: TL ↔ JSON (MadelineProto style, `"_"` names the
//! constructor) and MTProto 2.0 end-to-end encryption of a secret-chat message.
//!
//! The KDF offset x is the *writer's*: 0 for messages the chat's creator writes, 8 for those
//! the acceptor writes ([`secret_core::Role::kdf_x`]); decrypting a received message takes the
//! peer's role.

use secret_core::Role;
use secret_core::crypto::{
    AuthKey, MAX_PAYLOAD_LEN, decrypt_message, encrypt_message, encrypt_message_with_padding,
};
use secret_core::rand::SystemRandom;
use secret_core::tl::enums::DecryptedMessage;
use secret_core::tl::{MAX_BYTES_LEN, Serializable, TlJson, boxed_to_json, json_to_boxed};
use serde_json::Value;

use crate::cli::RoleArg;
use crate::error::CliError;

/// Hex as people paste it: whitespace anywhere and a leading `0x` are ignored.
pub fn parse_hex(what: &str, s: &str) -> Result<Vec<u8>, CliError> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let digits = clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
        .unwrap_or(&clean);
    hex::decode(digits).map_err(|e| CliError::Usage(format!("{what}: not hex: {e}")))
}

/// JSON text.
pub fn parse_json(what: &str, s: &str) -> Result<Value, CliError> {
    serde_json::from_str(s).map_err(|e| CliError::Usage(format!("{what}: not JSON: {e}")))
}

/// Any boxed object of the secret-chat schema → JSON.
pub fn tl_to_json(tl: &[u8]) -> Result<Value, CliError> {
    boxed_to_json(tl).map_err(|e| CliError::Usage(format!("TL: {e}")))
}

/// The JSON of any object of the secret-chat schema → its boxed TL.
pub fn json_to_tl(v: &Value) -> Result<Vec<u8>, CliError> {
    json_to_boxed(v).map_err(|e| CliError::Usage(format!("JSON: {e}")))
}

/// The JSON of a `DecryptedMessage` (any of its constructors) → its boxed TL.
pub fn decrypted_message_tl(v: &Value) -> Result<Vec<u8>, CliError> {
    let m = DecryptedMessage::from_json(v)
        .map_err(|e| CliError::Usage(format!("not a DecryptedMessage: {e}")))?;
    if m.serialized_len() > MAX_BYTES_LEN {
        return Err(CliError::Usage("the message is too large for TL".into()));
    }
    Ok(m.to_bytes())
}

/// The role of the side that writes.
pub fn role(r: RoleArg) -> Role {
    match r {
        RoleArg::Creator => Role::Creator,
        RoleArg::Acceptor => Role::Acceptor,
    }
}

fn auth_key(key: &[u8]) -> Result<AuthKey, CliError> {
    AuthKey::from_bytes(key).map_err(|e| CliError::Usage(format!("--key: {e}")))
}

/// Encrypts `payload` as `writer` writes it: `fingerprint || msg_key || AES-IGE(…)`. With
/// `padding` the result is fully determined; without, the padding is random (TDLib's buckets).
pub fn encrypt(
    key: &[u8],
    writer: Role,
    payload: &[u8],
    padding: Option<&[u8]>,
) -> Result<Vec<u8>, CliError> {
    let key = auth_key(key)?;
    if let Some(p) = padding {
        return encrypt_message_with_padding(&key, writer.kdf_x(), payload, p)
            .map_err(|e| CliError::Usage(e.to_string()));
    }
    if !payload.len().is_multiple_of(4) || payload.len() > MAX_PAYLOAD_LEN {
        return Err(CliError::Usage(format!(
            "a payload of {} bytes: TL payloads are a multiple of 4 bytes, at most {MAX_PAYLOAD_LEN}",
            payload.len()
        )));
    }
    Ok(encrypt_message(
        &key,
        writer.kdf_x(),
        payload,
        &mut SystemRandom::new(),
    ))
}

/// Decrypts a message `writer` wrote; the payload without length prefix and padding.
pub fn decrypt(key: &[u8], writer: Role, data: &[u8]) -> Result<Vec<u8>, CliError> {
    let key = auth_key(key)?;
    decrypt_message(&key, writer.kdf_x(), data)
        .map_err(|e| CliError::failed("DecryptFailed", e.to_string()))
}
