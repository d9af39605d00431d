//! The client's errors, their exit codes (see the crate docs) and how they print.

use std::fmt;

use zbus::DBusError as _;

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// Exit 1: the request failed (Response code 2: `name` is the Telegram error) or the daemon
    /// answered with an error (`name` is the short name of `io.github.tgsecretd.Error.<Name>`,
    /// else the full D-Bus error name).
    Failed {
        /// The error's name.
        name: String,
        /// Words for a person.
        message: String,
    },
    /// Exit 2: bad input on the command line.
    Usage(String),
    /// Exit 3: the bus or the daemon cannot be reached.
    Unreachable(String),
    /// Exit 4: no Response in time.
    Timeout(String),
    /// Exit 5: the request was cancelled.
    Cancelled(String),
}

/// D-Bus errors that mean "nobody owns the daemon's name on this bus".
const NOT_RUNNING: [&str; 3] = [
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
];

impl CliError {
    /// A failure with a name and words.
    pub fn failed(name: impl Into<String>, message: impl Into<String>) -> CliError {
        CliError::Failed {
            name: name.into(),
            message: message.into(),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed { .. } => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable(_) => 3,
            CliError::Timeout(_) => 4,
            CliError::Cancelled(_) => 5,
        }
    }

    /// The error's name as printed.
    pub fn name(&self) -> &str {
        match self {
            CliError::Failed { name, .. } => name,
            CliError::Usage(_) => "Usage",
            CliError::Unreachable(_) => "Unreachable",
            CliError::Timeout(_) => "Timeout",
            CliError::Cancelled(_) => "Cancelled",
        }
    }

    /// The words.
    pub fn message(&self) -> &str {
        match self {
            CliError::Failed { message, .. } => message,
            CliError::Usage(m)
            | CliError::Unreachable(m)
            | CliError::Timeout(m)
            | CliError::Cancelled(m) => m,
        }
    }

    /// The `--json` form: `{"error": NAME, "message": TEXT}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": self.name(), "message": self.message()})
    }

    /// Prints the error: on stderr, or as JSON on stdout.
    pub fn report(&self, json: bool) {
        if json {
            crate::output::say(self.to_json());
        } else {
            eprintln!("{self}");
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}: {}", self.name(), self.message())
    }
}

impl std::error::Error for CliError {}

impl From<ipc_proto::Error> for CliError {
    fn from(e: ipc_proto::Error) -> CliError {
        match e {
            ipc_proto::Error::ZBus(z) => CliError::from(z),
            typed => {
                let full = typed.name().to_string();
                let short = full
                    .strip_prefix(ipc_proto::ERROR_PREFIX)
                    .and_then(|s| s.strip_prefix('.'))
                    .unwrap_or(&full)
                    .to_owned();
                let text = typed.description().unwrap_or_default().to_owned();
                CliError::failed(short, text)
            }
        }
    }
}

impl From<zbus::Error> for CliError {
    fn from(e: zbus::Error) -> CliError {
        match &e {
            zbus::Error::MethodError(name, detail, _) => {
                let text = detail.clone().unwrap_or_default();
                if NOT_RUNNING.contains(&name.as_str()) {
                    return not_running(&text);
                }
                CliError::failed(name.as_str(), text)
            }
            zbus::Error::FDO(fdo) => {
                let name = fdo.name().to_string();
                let text = fdo.description().unwrap_or_default().to_owned();
                if NOT_RUNNING.contains(&name.as_str()) {
                    return not_running(&text);
                }
                CliError::failed(name, text)
            }
            zbus::Error::InputOutput(_) | zbus::Error::Address(_) | zbus::Error::Handshake(_) => {
                CliError::Unreachable(format!("the bus: {e}"))
            }
            _ => CliError::failed("org.freedesktop.DBus.Error.Failed", e.to_string()),
        }
    }
}

impl From<zbus::fdo::Error> for CliError {
    fn from(e: zbus::fdo::Error) -> CliError {
        CliError::from(zbus::Error::FDO(Box::new(e)))
    }
}

fn not_running(text: &str) -> CliError {
    CliError::Unreachable(format!(
        "the daemon ({}) is not running on this bus (start it, e.g. `systemctl --user start \
         tgsecretd`, or pass --bus ADDRESS): {text}",
        ipc_proto::BUS_NAME
    ))
}

/// A usage error from anything displayable.
pub fn usage(e: impl fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_keep_their_short_name() {
        let e = CliError::from(ipc_proto::Error::NoSuchChat("no chat 5".into()));
        assert_eq!(e.name(), "NoSuchChat");
        assert_eq!(e.message(), "no chat 5");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "error: NoSuchChat: no chat 5");
        assert_eq!(
            e.to_json(),
            serde_json::json!({"error": "NoSuchChat", "message": "no chat 5"})
        );
    }

    #[test]
    fn a_missing_daemon_is_unreachable() {
        let e = CliError::from(zbus::fdo::Error::ServiceUnknown("gone".into()));
        assert_eq!(e.exit_code(), 3);
        assert!(e.message().contains("not running"), "{e}");
        let e = CliError::from(zbus::fdo::Error::UnknownMethod("GetChat".into()));
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.name(), "org.freedesktop.DBus.Error.UnknownMethod");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::Usage(String::new()).exit_code(), 2);
        assert_eq!(CliError::Unreachable(String::new()).exit_code(), 3);
        assert_eq!(CliError::Timeout(String::new()).exit_code(), 4);
        assert_eq!(CliError::Cancelled(String::new()).exit_code(), 5);
    }
}
