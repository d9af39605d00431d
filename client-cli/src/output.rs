//! D-Bus values as JSON, and the text forms of results.
//!
//! Numbers stay numbers, strings, object paths and signatures become strings, `ay` becomes a
//! lowercase hex string, other arrays and structs JSON arrays, dictionaries JSON objects (keys
//! as strings), a variant its content.

use serde_json::{Map, Value as J};
use zbus::{Signature, Variant};

use ipc_proto::Dict;

/// The JSON form of a D-Bus value.
pub fn variant_to_json(v: &Variant<'_>) -> J {
    match v {
        Variant::U8(n) => J::from(*n),
        Variant::Bool(b) => J::from(*b),
        Variant::I16(n) => J::from(*n),
        Variant::U16(n) => J::from(*n),
        Variant::I32(n) => J::from(*n),
        Variant::U32(n) => J::from(*n),
        Variant::I64(n) => J::from(*n),
        Variant::U64(n) => J::from(*n),
        Variant::F64(d) => {
            serde_json::Number::from_f64(*d).map_or_else(|| J::from(d.to_string()), J::Number)
        }
        Variant::Str(s) => J::from(s.as_str()),
        Variant::Signature(s) => J::from(s.to_string()),
        Variant::ObjectPath(p) => J::from(p.as_str()),
        Variant::Variant(inner) => variant_to_json(inner),
        Variant::Array(a) => array_to_json(a.element_signature(), a.inner()),
        Variant::Dict(d) => {
            let mut m = Map::new();
            for (k, v) in d.iter() {
                m.insert(key_string(k), variant_to_json(v));
            }
            J::Object(m)
        }
        Variant::Structure(s) => J::Array(s.fields().iter().map(variant_to_json).collect()),
        #[cfg(unix)]
        Variant::Fd(_) => J::from("<fd>"),
    }
}

fn array_to_json(element: &Signature, items: &[Variant<'_>]) -> J {
    if *element == Signature::U8 {
        let bytes: Vec<u8> = items
            .iter()
            .filter_map(|v| match v {
                Variant::U8(b) => Some(*b),
                _ => None,
            })
            .collect();
        return J::from(hex::encode(bytes));
    }
    J::Array(items.iter().map(variant_to_json).collect())
}

fn key_string(k: &Variant<'_>) -> String {
    match variant_to_json(k) {
        J::String(s) => s,
        other => other.to_string(),
    }
}

/// The JSON object of a dictionary the daemon returned.
pub fn dict_to_json(d: &Dict) -> J {
    J::Object(
        d.iter()
            .map(|(k, v)| (k.clone(), variant_to_json(v)))
            .collect(),
    )
}

/// A JSON value as text: strings bare, anything else compact JSON.
pub fn plain(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `key: value` lines of an object, keys sorted.
pub fn key_value_lines(obj: &J) -> String {
    let Some(m) = obj.as_object() else {
        return plain(obj);
    };
    let width = m.keys().map(String::len).max().unwrap_or(0);
    m.iter()
        .map(|(k, v)| format!("{k:width$}  {}", plain(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints one result: the JSON document (one line) with `--json`, else the text.
pub fn emit(json: bool, doc: &J, text: impl FnOnce() -> String) {
    if json {
        say(doc);
    } else {
        say(text());
    }
}

/// Writes a line on stdout. When stdout is a pipe whose reader has gone (`tgsecret watch |
/// head`), the command's output is no longer wanted: the process ends at once with status 0,
/// as a filter does, instead of panicking as `println!` would. Any other write error ends it
/// with status 1 (failed) and a word on stderr.
pub fn say(line: impl std::fmt::Display) {
    write_out(format!("{line}\n").as_bytes());
}

/// Writes bytes on stdout and flushes them, ending the process as [`say`] does on failure.
pub fn write_out(bytes: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("tgsecret: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// A table: a header and rows, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

/// A key visualization (or any bytes) as 4 rows of hex groups of 3 bytes, e.g. for 36 bytes
/// four rows of three 6-digit groups; empty bytes give no rows.
pub fn hex_block(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let per_row = bytes.len().div_ceil(4);
    bytes
        .chunks(per_row)
        .map(|row| row.chunks(3).map(hex::encode).collect::<Vec<_>>().join(" "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_block_is_four_rows() {
        let b: Vec<u8> = (0u8..36).collect();
        let rows = hex_block(&b);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0], "000102 030405 060708");
        assert_eq!(rows[3], "1b1c1d 1e1f20 212223");
        assert!(hex_block(&[]).is_empty());
    }

    #[test]
    fn variants() {
        assert_eq!(variant_to_json(&Variant::from(7i32)), J::from(7));
        assert_eq!(
            variant_to_json(&Variant::from(vec![1u8, 255])),
            J::from("01ff")
        );
        assert_eq!(
            variant_to_json(&Variant::from(vec![1i64, 2])),
            serde_json::json!([1, 2])
        );
    }
}
