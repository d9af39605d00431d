//! `--param K=V` / `--param K:=JSON`: the typed fields of `SendServiceAction`.
//!
//! `K=V` guesses the D-Bus type from V: an integer is `x`, comma-separated integers are `ax`
//! (a trailing comma makes a one-element vector: `random_ids=5,`), `true`/`false` is `b`,
//! anything else is `s`. `K:=JSON` says it explicitly: an integer is `x`, a non-integral
//! number `d`, a boolean `b`, a string `s`, an array of integers (or `[]`) `ax`, an array of
//! strings `as`, an object `a{sv}` (a nested TL object: `"_"` names its constructor).
//!
//! The daemon reads TL `bytes` from a string (base64, or `0x` followed by hex) and a nested
//! object from a string naming its constructor too (`action=sendMessageTypingAction`).

use std::collections::HashMap;

use zbus::Variant;

/// A typed parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// `x`.
    Int(i64),
    /// `ax`.
    Ints(Vec<i64>),
    /// `b`.
    Bool(bool),
    /// `s`.
    Str(String),
    /// `d`.
    Double(f64),
    /// `as`.
    Strs(Vec<String>),
    /// `a{sv}`.
    Object(Vec<(String, ParamValue)>),
}

/// One `--param`: the field's TL name and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The field's TL name, e.g. `ttl_seconds`.
    pub key: String,
    /// Its value.
    pub value: ParamValue,
}

impl ParamValue {
    /// The D-Bus value.
    pub fn to_variant(&self) -> Variant<'static> {
        match self {
            ParamValue::Int(n) => Variant::from(*n),
            ParamValue::Ints(v) => Variant::from(v.clone()),
            ParamValue::Bool(b) => Variant::from(*b),
            ParamValue::Str(s) => Variant::from(s.clone()),
            ParamValue::Double(d) => Variant::from(*d),
            ParamValue::Strs(v) => Variant::from(v.clone()),
            ParamValue::Object(fields) => Variant::from(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_variant()))
                    .collect::<HashMap<String, Variant<'static>>>(),
            ),
        }
    }

    /// The D-Bus signature of the value.
    pub fn signature(&self) -> &'static str {
        match self {
            ParamValue::Int(_) => "x",
            ParamValue::Ints(_) => "ax",
            ParamValue::Bool(_) => "b",
            ParamValue::Str(_) => "s",
            ParamValue::Double(_) => "d",
            ParamValue::Strs(_) => "as",
            ParamValue::Object(_) => "a{sv}",
        }
    }
}

/// Parses `K=V` or `K:=JSON` (clap's value parser of `--param`).
pub fn parse_param(s: &str) -> Result<Param, String> {
    let (key, value) = match (s.find(":="), s.find('=')) {
        (Some(i), Some(j)) if i < j => (&s[..i], parse_json_value(&s[i + 2..])?),
        (_, Some(j)) => (&s[..j], guess_value(&s[j + 1..])),
        (_, None) => return Err(format!("{s:?}: expected K=V or K:=JSON")),
    };
    if key.is_empty() {
        return Err(format!("{s:?}: the field name is empty"));
    }
    Ok(Param {
        key: key.to_owned(),
        value,
    })
}

/// The type of `K=V`'s value, guessed from its text.
pub fn guess_value(v: &str) -> ParamValue {
    if let Ok(n) = v.parse::<i64>() {
        return ParamValue::Int(n);
    }
    match v {
        "true" => return ParamValue::Bool(true),
        "false" => return ParamValue::Bool(false),
        _ => {}
    }
    if v.contains(',') {
        let body = v.strip_suffix(',').unwrap_or(v);
        let ints: Result<Vec<i64>, _> = body.split(',').map(|p| p.trim().parse::<i64>()).collect();
        if let Ok(ints) = ints {
            return ParamValue::Ints(ints);
        }
    }
    ParamValue::Str(v.to_owned())
}

/// The value of `K:=JSON`.
pub fn parse_json_value(text: &str) -> Result<ParamValue, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("{text:?} is not JSON: {e}"))?;
    json_to_param(&v).ok_or_else(|| {
        format!(
            "{text:?}: only integers, numbers, booleans, strings, arrays of integers or of \
             strings, and objects of these can be parameters"
        )
    })
}

fn json_to_param(v: &serde_json::Value) -> Option<ParamValue> {
    use serde_json::Value as J;
    match v {
        J::Bool(b) => Some(ParamValue::Bool(*b)),
        J::Number(n) => n
            .as_i64()
            .map(ParamValue::Int)
            .or_else(|| n.as_f64().map(ParamValue::Double)),
        J::String(s) => Some(ParamValue::Str(s.clone())),
        J::Array(a) if a.iter().all(J::is_i64) => {
            Some(ParamValue::Ints(a.iter().filter_map(J::as_i64).collect()))
        }
        J::Array(a) if a.iter().all(J::is_string) => Some(ParamValue::Strs(
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
        )),
        J::Object(m) => m
            .iter()
            .map(|(k, v)| json_to_param(v).map(|p| (k.clone(), p)))
            .collect::<Option<Vec<_>>>()
            .map(ParamValue::Object),
        _ => None,
    }
}

/// The `a{sv}` of a list of params (a later one of the same key wins).
pub fn to_dict(params: &[Param]) -> HashMap<&str, Variant<'static>> {
    params
        .iter()
        .map(|p| (p.key.as_str(), p.value.to_variant()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses() {
        assert_eq!(guess_value("30"), ParamValue::Int(30));
        assert_eq!(guess_value("-7"), ParamValue::Int(-7));
        assert_eq!(guess_value("1,2"), ParamValue::Ints(vec![1, 2]));
        assert_eq!(guess_value("5,"), ParamValue::Ints(vec![5]));
        assert_eq!(guess_value("true"), ParamValue::Bool(true));
        assert_eq!(guess_value("a,b"), ParamValue::Str("a,b".into()));
        assert_eq!(guess_value(""), ParamValue::Str(String::new()));
    }
}
