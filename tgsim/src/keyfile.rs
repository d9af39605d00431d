//! Files of provisioned auth keys: one key per line, `ACCOUNT_ID HEX_AUTH_KEY` (256 bytes, 512
//! hex digits); blank lines and lines starting with `#` are ignored.
//!
//! The binary reads one optionally (`--key-file`, read only) and keeps the keys the admin
//! interface provisions in `<state-dir>/keys`, rewritten atomically (temp file with mode 0600,
//! fsync, rename, fsync of the directory) on every change.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use secret_core::crypto::AuthKey;

use crate::session::AccountId;

/// Parses the text of a key file.
pub fn parse(text: &str) -> Result<Vec<(AccountId, AuthKey)>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = n + 1;
        let mut fields = line.split_whitespace();
        let (Some(account), Some(hex_key), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("line {n}: expected `ACCOUNT_ID HEX_AUTH_KEY`"));
        };
        let account: AccountId = account
            .parse()
            .map_err(|e| format!("line {n}: bad account id: {e}"))?;
        let bytes = hex::decode(hex_key).map_err(|e| format!("line {n}: bad hex key: {e}"))?;
        let key = AuthKey::from_bytes(&bytes)
            .map_err(|e| format!("line {n}: bad auth key ({} bytes): {e}", bytes.len()))?;
        keys.push((account, key));
    }
    Ok(keys)
}

/// Reads a key file; a missing file is an empty list when `missing_ok`.
pub fn load(path: &Path, missing_ok: bool) -> Result<Vec<(AccountId, AuthKey)>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if missing_ok && e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read key file {}: {e}", path.display())),
    };
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The text of a key file holding `keys`.
pub fn format(keys: &[(AccountId, AuthKey)]) -> String {
    let mut out = String::from("# tgsim auth keys: ACCOUNT_ID HEX_AUTH_KEY\n");
    for (account, key) in keys {
        out.push_str(&format!("{account} {}\n", hex::encode(key.as_bytes())));
    }
    out
}

/// Writes `keys` to `path` atomically and durably, readable by the owner only.
pub fn save(path: &Path, keys: &[(AccountId, AuthKey)]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format(keys).as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_lines() {
        let key = "ab".repeat(256);
        let text = format!("# comment\n\n7 {key}\n  -3 {}  \n", "01".repeat(256));
        let keys = parse(&text).expect("valid file");
        assert_eq!(keys.len(), 2);
        assert_eq!(parse(&format(&keys)).expect("round trip").len(), 2);
        assert!(parse("").expect("empty is fine").is_empty());
        assert!(parse(&format!("x {key}")).is_err());
        assert!(parse("7 abcd").is_err());
        assert!(parse(&format!("7 {key} extra")).is_err());
    }
}
