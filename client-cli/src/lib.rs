//! `tgsecret`, the command-line client of tgsecretd (`io.github.tgsecretd` on the D-Bus session
//! bus), as a library: the binary (`src/main.rs`) only parses the command line and calls
//! [`run`]; the tests use the pieces directly.
//!
//! Commands (see `tgsecret --help` and `tgsecret help COMMAND`):
//!
//! * `send-service`: a service action (`SendServiceAction`, typed `--param`s) or a whole
//!   `DecryptedMessage` (`--json-message`, `--tl`: `SendEncryptedService`); `--wait` follows the
//!   request to its `Response`.
//! * `call`: `Manager1.Call`, a Telegram method with JSON parameters.
//! * `result`: `GetResult` of a handle (and `--wait` for it).
//! * `chats`, `chat show|request|accept|decline|discard`, `status`, `login`, `logout`.
//! * `watch`: the daemon's signals, one line each, until Ctrl-C.
//! * `codec`: offline TL ↔ JSON and MTProto 2.0 end-to-end encryption (secret-core).
//! * `demo`: a private bus, tgsim with an echoing peer, tgsecretd, and every service action.
//! * `completions SHELL`, `man`.
//!
//! # Requests
//!
//! `SendEncryptedService`, `SendServiceAction` and `Call` follow xdg-desktop-portal's Request
//! pattern: the client picks a `handle_token`, subscribes to `Response` on the handle path it
//! predicts ([`ipc_proto::request_path`]) *before* calling, then calls; after the call it asks
//! `GetResult` too, in case the Response went out before it listened (an idempotent retry
//! returns the handle of an older request). See [`request`].
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the request failed (Response code 2) or the daemon returned a typed error (`io.github.tgsecretd.Error.*`, or any other D-Bus error) |
//! | 2 | usage error (bad arguments, unreadable hex or JSON given on the command line) |
//! | 3 | the bus or the daemon cannot be reached |
//! | 4 | timeout while waiting (`--wait --timeout S`) |
//! | 5 | the request was cancelled (Response code 1) |
//!
//! Errors print as `error: <Name>: <text>` on stderr; with `--json`, as
//! `{"error": "<Name>", "message": "<text>"}` on stdout. `<Name>` is the last element of an
//! `io.github.tgsecretd.Error.<Name>` error, the full name of any other D-Bus error, the
//! Telegram error name of a failed request (e.g. `ENCRYPTION_DECLINED`), or one of `Usage`,
//! `Unreachable`, `Timeout`, `Cancelled` for the client's own conditions.

pub mod admin;
pub mod bus;
pub mod cli;
pub mod codec;
pub mod commands;
pub mod error;
pub mod lab;
pub mod output;
pub mod params;
pub mod password;
pub mod progress;
pub mod request;

pub use cli::Cli;
pub use error::CliError;

/// The text of `--help`'s "Exit codes" section (also in the module docs above).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the request failed (Response code 2) or the daemon returned a typed error
     (io.github.tgsecretd.Error.*, or any other D-Bus error)
  2  usage error (bad arguments, unreadable hex or JSON on the command line)
  3  the bus or the daemon cannot be reached
  4  timeout while waiting (--wait --timeout S)
  5  the request was cancelled (Response code 1)

Errors print as `error: <Name>: <text>` on stderr; with --json as
{\"error\": \"<Name>\", \"message\": \"<text>\"} on stdout.";

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    commands::dispatch(cli).await
}
