//! `codec tl-to-json|json-to-tl|encrypt|decrypt`: offline, no daemon.

use serde_json::json;

use super::{Ctx, arg_or_stdin};
use crate::cli::CodecCommand;
use crate::codec::{self, parse_hex, parse_json};
use crate::error::CliError;
use crate::output::emit;

/// Runs a codec command; results on stdout (hex, or JSON).
pub fn run(ctx: &Ctx, c: CodecCommand) -> Result<(), CliError> {
    match c {
        CodecCommand::TlToJson { input } => {
            let v = codec::tl_to_json(&parse_hex("TL", &arg_or_stdin(&input)?)?)?;
            emit(ctx.json, &v, || {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            });
        }
        CodecCommand::JsonToTl { input } => {
            let tl = codec::json_to_tl(&parse_json("JSON", &arg_or_stdin(&input)?)?)?;
            let h = hex::encode(tl);
            emit(ctx.json, &json!({"tl": h}), || h.clone());
        }
        CodecCommand::Encrypt {
            key,
            role,
            tl,
            padding,
        } => {
            let padding = padding.map(|p| parse_hex("--padding", &p)).transpose()?;
            let data = codec::encrypt(
                &parse_hex("--key", &key)?,
                codec::role(role),
                &parse_hex("--tl", &tl)?,
                padding.as_deref(),
            )?;
            let h = hex::encode(data);
            emit(ctx.json, &json!({"data": h}), || h.clone());
        }
        CodecCommand::Decrypt { key, role, data } => {
            let payload = codec::decrypt(
                &parse_hex("--key", &key)?,
                codec::role(role),
                &parse_hex("DATA", &arg_or_stdin(&data)?)?,
            )?;
            let h = hex::encode(&payload);
            let decoded = codec::tl_to_json(&payload).ok();
            emit(ctx.json, &json!({"tl": h, "json": decoded}), || h.clone());
        }
    }
    Ok(())
}
