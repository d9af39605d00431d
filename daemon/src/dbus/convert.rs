//! D-Bus values ↔ the daemon's API: the options of the send calls, a service action named by
//! its TL name with its fields as `a{sv}`, and the dictionaries the service answers with.
//!
//! | D-Bus (in `params`) | JSON given to the TL codec |
//! | --- | --- |
//! | `y n q i u x t` | number (the TL field's type decides the range: `int`, `long`) |
//! | `d` | number |
//! | `b` | `true` / `false` (TL `Bool`, or a flag of type `true`) |
//! | `s`, `o`, `g` | string (a `long` may be a decimal string; `bytes` base64 or `0x` hex) |
//! | `ay` | base64 string (TL `bytes`) |
//! | `a…` | array (TL `Vector`) |
//! | `a{sv}` | object (a nested TL object, `"_"` naming its constructor) |
//! | `v` | its content |
//!
//! `RequestKey` may leave out `exchange_id` and `g_a` (the chat chooses both: it starts a
//! re-key). A string where the TL field wants an object (`Typing`'s `action`:
//! `"sendMessageTypingAction"`) is read as `{"_": string}`. Structures and file descriptors are
//! refused.

use std::collections::HashMap;

use base64::Engine as _;
use ipc_proto::options;
use secret_core::tl::enums::{DecryptedMessage, DecryptedMessageAction};
use secret_core::tl::{JsonError, TlJson};
use serde_json::{Map, Value as Json};
use zbus::{OwnedVariant, Str, Variant};

use crate::errors_api::ServiceError;

/// Nesting allowed in `params` (a TL action nests two levels at most).
const MAX_DEPTH: usize = 8;

/// The TL name prefix of every service action.
const ACTION_PREFIX: &str = "decryptedMessageAction";

/// A dictionary value, if it converts (`None` is dropped by [`Dict::put`]).
pub fn variant<T: Into<Variant<'static>>>(v: T) -> Option<OwnedVariant> {
    OwnedVariant::try_from(v.into()).ok()
}

/// A string value.
pub fn string_variant(s: &str) -> Option<OwnedVariant> {
    OwnedVariant::try_from(Variant::from(Str::from(s.to_owned()))).ok()
}

/// An `a{sv}` being built.
#[derive(Default)]
pub struct Dict(pub HashMap<String, OwnedVariant>);

impl Dict {
    /// Adds `key` (a value that does not convert is left out).
    pub fn put(&mut self, key: &str, v: Option<OwnedVariant>) -> &mut Dict {
        if let Some(v) = v {
            self.0.insert(key.to_owned(), v);
        }
        self
    }
}

/// The parsed options of the send calls (`SendEncryptedService`, `SendServiceAction`, `Call`).
#[derive(Debug, Default)]
pub struct SendArgs {
    /// `handle_token`.
    pub token: Option<String>,
    /// `random_id`.
    pub random_id: Option<i64>,
    /// `notify`.
    pub notify: bool,
}

fn bad_option(k: &str, w: &str) -> ServiceError {
    ServiceError::InvalidArgument(format!("option {k}: {w}"))
}

/// Reads the options; an unknown key or a value of the wrong type is an error.
pub fn send_args(opts: &HashMap<String, OwnedVariant>) -> Result<SendArgs, ServiceError> {
    let mut a = SendArgs::default();
    for (k, v) in opts {
        match k.as_str() {
            options::HANDLE_TOKEN => {
                let s = match &**v {
                    Variant::Str(s) => s.as_str().to_owned(),
                    _ => return Err(bad_option(k, "must be a string (s)")),
                };
                if !ipc_proto::valid_token(&s) {
                    return Err(bad_option(k, "must be 1 to 255 of [A-Za-z0-9_]"));
                }
                a.token = Some(s);
            }
            options::RANDOM_ID => {
                a.random_id = Some(
                    i64::try_from(v).map_err(|_| bad_option(k, "must be a 64-bit integer (x)"))?,
                );
            }
            options::NOTIFY => {
                a.notify = bool::try_from(v).map_err(|_| bad_option(k, "must be a boolean (b)"))?;
            }
            other => return Err(bad_option(other, "unknown option")),
        }
    }
    Ok(a)
}

/// The TL name of a service action from what a caller wrote: the full name
/// (`decryptedMessageActionSetMessageTTL`) or the part after `decryptedMessageAction`
/// (`SetMessageTTL`), in any case.
pub fn action_name(given: &str) -> Result<&'static str, ServiceError> {
    let want = given.to_ascii_lowercase();
    let want = want
        .strip_prefix(&ACTION_PREFIX.to_ascii_lowercase())
        .unwrap_or(&want)
        .to_owned();
    secret_core::tl::ALL_CONSTRUCTORS
        .iter()
        .map(|(name, _)| *name)
        .filter(|n| n.starts_with(ACTION_PREFIX))
        .find(|n| n[ACTION_PREFIX.len()..].eq_ignore_ascii_case(&want))
        .ok_or_else(|| ServiceError::UnknownAction(given.to_owned()))
}

/// `decryptedMessageService{random_id: 0, action}` for `action` (as [`action_name`] reads it)
/// with its fields from `params`.
pub fn service_message(
    action: &str,
    params: &HashMap<String, OwnedVariant>,
) -> Result<DecryptedMessage, ServiceError> {
    let name = action_name(action)?;
    let mut fields = Map::new();
    for (k, v) in params {
        if k == "_" {
            return Err(ServiceError::InvalidArgument(
                "params: \"_\" is the action argument's job".into(),
            ));
        }
        let j = to_json(v, 0).map_err(|w| ServiceError::InvalidArgument(format!("{k}: {w}")))?;
        fields.insert(k.clone(), j);
    }
    if name == "decryptedMessageActionRequestKey" {
        // The chat chooses both: a re-key is asked for with none.
        fields.entry("exchange_id").or_insert(Json::from(0));
        fields.entry("g_a").or_insert(Json::from(""));
    }
    fields.insert("_".into(), Json::from(name));
    let action = match action_from_json(Json::Object(fields)) {
        Ok(a) => a,
        // The protocol's own actions are refused whatever their fields (with good ones, the
        // chat refuses them: `SendError::NotAllowed`).
        Err(_) if !ipc_proto::ACTIONS.contains(&&name[ACTION_PREFIX.len()..]) => {
            return Err(ServiceError::NotAllowed(format!(
                "{name} cannot be sent: the protocol sends it itself"
            )));
        }
        Err(e) => return Err(e),
    };
    Ok(DecryptedMessage::Service(
        secret_core::tl::types::DecryptedMessageService {
            random_id: 0,
            action,
        },
    ))
}

/// Reads the action, reading a string where an object is wanted as `{"_": string}` (once per
/// field).
fn action_from_json(mut v: Json) -> Result<DecryptedMessageAction, ServiceError> {
    for _ in 0..4 {
        match DecryptedMessageAction::from_json(&v) {
            Ok(a) => return Ok(a),
            Err(JsonError::WrongType { path, .. })
                if wrap_string(&mut v, path.trim_start_matches('.')) => {}
            Err(e) => return Err(ServiceError::InvalidArgument(format!("params: {e}"))),
        }
    }
    Err(ServiceError::InvalidArgument(
        "params: objects are written as a{sv}".into(),
    ))
}

fn wrap_string(v: &mut Json, field: &str) -> bool {
    let Some(slot) = v.as_object_mut().and_then(|m| m.get_mut(field)) else {
        return false;
    };
    let Json::String(s) = slot else {
        return false;
    };
    let name = std::mem::take(s);
    let mut m = Map::new();
    m.insert("_".into(), Json::String(name));
    *slot = Json::Object(m);
    true
}

/// The JSON form of a D-Bus value (see the module's table).
pub fn to_json(v: &Variant<'_>, depth: usize) -> Result<Json, String> {
    if depth > MAX_DEPTH {
        return Err("nested too deep".into());
    }
    Ok(match v {
        Variant::U8(n) => Json::from(*n),
        Variant::Bool(b) => Json::from(*b),
        Variant::I16(n) => Json::from(*n),
        Variant::U16(n) => Json::from(*n),
        Variant::I32(n) => Json::from(*n),
        Variant::U32(n) => Json::from(*n),
        Variant::I64(n) => Json::from(*n),
        Variant::U64(n) => Json::from(*n),
        Variant::F64(n) => serde_json::Number::from_f64(*n)
            .map(Json::Number)
            .ok_or("a double must be finite")?,
        Variant::Str(s) => Json::from(s.as_str()),
        Variant::Signature(s) => Json::from(s.to_string()),
        Variant::ObjectPath(p) => Json::from(p.as_str()),
        Variant::Variant(inner) => to_json(inner, depth + 1)?,
        Variant::Array(a) if a.element_signature().to_string() == "y" => {
            let bytes: Vec<u8> = a
                .inner()
                .iter()
                .filter_map(|b| match b {
                    Variant::U8(b) => Some(*b),
                    _ => None,
                })
                .collect();
            Json::from(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Variant::Array(a) => Json::Array(
            a.inner()
                .iter()
                .map(|e| to_json(e, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Variant::Dict(d) => {
            let mut m = Map::new();
            for (k, v) in d.iter() {
                let Variant::Str(k) = k else {
                    return Err("dictionary keys must be strings".into());
                };
                m.insert(k.as_str().to_owned(), to_json(v, depth + 1)?);
            }
            Json::Object(m)
        }
        Variant::Structure(_) => return Err("structures are not taken; use a{sv}".into()),
        #[cfg(unix)]
        Variant::Fd(_) => return Err("file descriptors are not taken".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: Vec<(&str, Variant<'static>)>) -> HashMap<String, OwnedVariant> {
        kv.into_iter()
            .map(|(k, v)| (k.to_owned(), OwnedVariant::try_from(v).expect("owned")))
            .collect()
    }

    fn action_json(m: &DecryptedMessage) -> Json {
        let DecryptedMessage::Service(s) = m else {
            panic!("not a service message: {m:?}")
        };
        s.action.to_json()
    }

    #[test]
    fn action_names_are_full_or_short_in_any_case() {
        assert_eq!(
            action_name("decryptedMessageActionSetMessageTTL").ok(),
            Some("decryptedMessageActionSetMessageTTL")
        );
        assert_eq!(
            action_name("setmessagettl").ok(),
            Some("decryptedMessageActionSetMessageTTL")
        );
        assert_eq!(
            action_name("DECRYPTEDMESSAGEACTIONNOOP").ok(),
            Some("decryptedMessageActionNoop")
        );
        for bad in [
            "",
            "Bogus",
            "decryptedMessageService",
            "sendMessageTypingAction",
        ] {
            assert!(
                matches!(action_name(bad), Err(ServiceError::UnknownAction(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_contract_lists_every_action_an_application_may_send() {
        let mut schema: Vec<&str> = secret_core::tl::ALL_CONSTRUCTORS
            .iter()
            .filter_map(|(n, _)| n.strip_prefix(ACTION_PREFIX))
            .filter(|n| !["Resend", "AcceptKey", "CommitKey"].contains(n))
            .collect();
        schema.sort_unstable();
        schema.dedup();
        let mut listed = ipc_proto::ACTIONS.to_vec();
        listed.sort_unstable();
        assert_eq!(listed, schema);
        for a in ipc_proto::ACTIONS {
            assert!(action_name(a).is_ok(), "{a}");
        }
    }

    #[test]
    fn params_become_the_actions_fields() {
        let m = service_message(
            "SetMessageTTL",
            &params(vec![("ttl_seconds", Variant::from(30u32))]),
        )
        .expect("ttl");
        assert_eq!(
            action_json(&m),
            serde_json::json!({"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 30})
        );
        let m = service_message(
            "readmessages",
            &params(vec![("random_ids", Variant::from(vec![1i64, -2]))]),
        )
        .expect("read");
        assert_eq!(action_json(&m)["random_ids"], serde_json::json!([1, -2]));
        // Typing's action as a bare constructor name.
        let m = service_message(
            "Typing",
            &params(vec![("action", Variant::from("sendMessageTypingAction"))]),
        )
        .expect("typing");
        assert_eq!(
            action_json(&m)["action"],
            serde_json::json!({"_": "sendMessageTypingAction"})
        );
        let m = service_message("FlushHistory", &HashMap::new()).expect("flush");
        assert_eq!(
            action_json(&m),
            serde_json::json!({"_": "decryptedMessageActionFlushHistory"})
        );
    }

    #[test]
    fn wrong_params_are_invalid_arguments() {
        let cases: Vec<(&str, Vec<(&str, Variant<'static>)>)> = vec![
            ("SetMessageTTL", vec![]),
            ("SetMessageTTL", vec![("ttl_seconds", Variant::from("x"))]),
            (
                "SetMessageTTL",
                vec![("ttl_seconds", Variant::from(1i64 << 40))],
            ),
            (
                "SetMessageTTL",
                vec![
                    ("ttl_seconds", Variant::from(1)),
                    ("extra", Variant::from(1)),
                ],
            ),
            ("ReadMessages", vec![("random_ids", Variant::from(5))]),
            ("SetMessageTTL", vec![("_", Variant::from("x"))]),
            ("Typing", vec![("action", Variant::from("noSuchAction"))]),
        ];
        for (a, p) in cases {
            let r = service_message(a, &params(p));
            assert!(
                matches!(r, Err(ServiceError::InvalidArgument(_))),
                "{a}: {r:?}"
            );
        }
        // The protocol's own actions are NotAllowed, whatever their fields.
        for a in ["Resend", "AcceptKey", "commitkey"] {
            let r = service_message(a, &params(vec![]));
            assert!(matches!(r, Err(ServiceError::NotAllowed(_))), "{a}: {r:?}");
        }
    }

    #[test]
    fn options_are_checked() {
        let o = |kv| params(kv);
        assert!(send_args(&o(vec![("handle_token", Variant::from("a/b"))])).is_err());
        assert!(send_args(&o(vec![("handle_token", Variant::from(5))])).is_err());
        assert!(send_args(&o(vec![("random_id", Variant::from("5"))])).is_err());
        assert!(send_args(&o(vec![("notify", Variant::from(1))])).is_err());
        assert!(send_args(&o(vec![("bogus", Variant::from(1))])).is_err());
        let a = send_args(&o(vec![
            ("handle_token", Variant::from("t_1")),
            ("random_id", Variant::from(9i64)),
            ("notify", Variant::from(true)),
        ]))
        .expect("good");
        assert_eq!(
            (a.token.as_deref(), a.random_id, a.notify),
            (Some("t_1"), Some(9), true)
        );
    }

    #[test]
    fn bytes_arrays_and_dicts_convert() {
        let v = Variant::from(vec![1u8, 2, 255]);
        assert_eq!(to_json(&v, 0), Ok(Json::from("AQL/")));
        let mut d: HashMap<&str, Variant<'_>> = HashMap::new();
        d.insert("_", Variant::from("x"));
        let j = to_json(&Variant::from(d), 0).expect("dict");
        assert_eq!(j, serde_json::json!({"_": "x"}));
        assert!(to_json(&Variant::from((1, 2)), 0).is_err());
        assert!(to_json(&Variant::from(f64::NAN), 0).is_err());
    }
}
