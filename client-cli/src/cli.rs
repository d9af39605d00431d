//! The command line (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::params::{Param, parse_param};

/// The command-line client of tgsecretd, the daemon that keeps your Telegram secret chats
///
/// tgsecret talks to tgsecretd (io.github.tgsecretd, on the D-Bus session bus unless --bus
/// says otherwise): it sends service messages, calls Telegram methods in the seed's JSON form,
/// follows or cancels requests, manages chats and the login, and prints the daemon's signals.
/// `codec` works offline.
#[derive(Parser, Debug)]
#[command(name = "tgsecret", version, after_help = crate::EXIT_CODES)]
pub struct Cli {
    /// The D-Bus address of the bus the daemon is on (default: the session bus, from
    /// DBUS_SESSION_BUS_ADDRESS or the user's bus).
    #[arg(long, global = true, value_name = "ADDRESS", value_parser = parse_bus_address)]
    pub bus: Option<String>,

    /// Machine output: one JSON document per result (one per line for streams); errors as
    /// {"error": NAME, "message": TEXT} on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Quiet: no progress and no informational lines, only results and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send a service action (typed parameters) or a whole DecryptedMessage to a secret chat.
    SendService(SendServiceArgs),
    /// Call a Telegram method by name with JSON parameters (Manager1.Call).
    Call(CallArgs),
    /// The result of a request by its handle (GetResult); --wait waits for it.
    Result(ResultArgs),
    /// Cancel a request none of whose messages has left the daemon (Request1.Close); exit 0
    /// once it is cancelled, 1 (NotCancelled) if it was sent, failed or is in flight already.
    Close(CloseArgs),
    /// List the secret chats (a table, or a JSON array with --json).
    Chats,
    /// One secret chat: show, request, accept, decline, discard, forget.
    #[command(subcommand)]
    Chat(ChatCommand),
    /// Log the daemon's account in (phone, code, then the password if two-step verification is
    /// on).
    Login(LoginArgs),
    /// Log the daemon's account out (Telegram closes its secret chats).
    Logout,
    /// The daemon's status (GetStatus).
    Status,
    /// Print the daemon's signals as they come, one line each, until Ctrl-C.
    Watch(WatchArgs),
    /// Offline TL/JSON conversion and MTProto 2.0 end-to-end encryption (no daemon needed).
    #[command(subcommand)]
    Codec(CodecCommand),
    /// Run the product demo: a private bus, tgsim with an echoing peer, tgsecretd, and every
    /// kind of service action.
    Demo(DemoArgs),
    /// Print a shell completion script to stdout.
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout.
    Man(ManArgs),
}

/// How long to wait for a request's Response.
#[derive(Args, Debug, Clone, Copy)]
pub struct WaitArgs {
    /// Wait for the request's Response and print the result (progress on stderr).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit code 4; the request goes on).
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub timeout: f64,
}

/// `send-service`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    tgsecret send-service 42 SetMessageTTL --param ttl_seconds=30 --wait\n  \
    tgsecret send-service 42 ReadMessages --param random_ids=1,2,3\n  \
    tgsecret send-service 42 Typing --param action=sendMessageTypingAction\n  \
    tgsecret send-service 42 --json-message '{\"_\":\"decryptedMessageService\",\"random_id\":0,\
\"action\":{\"_\":\"decryptedMessageActionSetMessageTTL\",\"ttl_seconds\":30}}'\n\n\
    --param K=V types V: an integer is x, comma-separated integers are ax (a trailing comma \
makes a one-element vector), true/false is b, anything else is s. K:=JSON gives the type \
explicitly: 5 is x, [5] or [] is ax, [\"a\"] is as, \"5\" is s, 1.5 is d, true is b.\n\n\
    The option that the D-Bus contract calls `--json MESSAGE` is --json-message (alias \
--message-json): --json is the global machine-output flag.")]
pub struct SendServiceArgs {
    /// The secret chat: its id, or its object path.
    #[arg(value_parser = parse_chat, allow_hyphen_values = true)]
    pub chat: i32,
    /// The action's TL name (decryptedMessageActionSetMessageTTL, or SetMessageTTL, any case).
    #[arg(required_unless_present_any = ["json_message", "tl"], value_parser = ActionName)]
    pub action: Option<String>,
    /// A field of the action: K=V or K:=JSON (repeatable; see below for the types).
    #[arg(long = "param", value_name = "K=V", value_parser = parse_param)]
    pub params: Vec<Param>,
    /// A whole DecryptedMessage in the project's JSON ("_" names the constructor), or `-` for
    /// stdin; sent with SendEncryptedService.
    #[arg(long, visible_alias = "message-json", value_name = "MESSAGE",
          conflicts_with_all = ["action", "tl", "params"])]
    pub json_message: Option<String>,
    /// A whole DecryptedMessage as boxed TL in hex, or `-` for stdin; sent with
    /// SendEncryptedService.
    #[arg(long, value_name = "HEX", conflicts_with_all = ["action", "params"])]
    pub tl: Option<String>,
    /// The message's random_id (a retry with the same one and the same message returns the
    /// first request's handle and sends nothing twice; another message under it is refused,
    /// BadRandomId).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub random_id: Option<i64>,
    /// Send through messages.sendEncrypted (the peer's devices notify).
    #[arg(long)]
    pub notify: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `call`.
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  tgsecret call messages.sendEncryptedService --params \
'{\"peer\": 42, \"message\": {\"_\": \"decryptedMessageService\", \"random_id\": 0, \"action\": \
{\"_\": \"decryptedMessageActionSetMessageTTL\", \"ttl_seconds\": 30}}}' --wait"
)]
pub struct CallArgs {
    /// The method, e.g. messages.sendEncryptedService.
    pub method: String,
    /// Its parameters as JSON (`-` for stdin).
    #[arg(long, value_name = "JSON")]
    pub params: String,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `result`.
#[derive(Args, Debug)]
pub struct ResultArgs {
    /// The request's handle (an object path under /io/github/tgsecretd/request/).
    pub handle: String,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `close`.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  \
    tgsecret close /io/github/tgsecretd/request/1_42/tgsecret_7_1\n\n\
    A cancelled request's messages never reach the peer: their seq slots are filled by Noops, \
so the peer sees no hole. Its Response has code 1.")]
pub struct CloseArgs {
    /// The request's handle (an object path under /io/github/tgsecretd/request/).
    pub handle: String,
}

/// `chat ...`.
#[derive(Subcommand, Debug)]
pub enum ChatCommand {
    /// A chat's properties and its key visualization (GetChat).
    Show {
        /// The chat id or object path.
        #[arg(value_parser = parse_chat, allow_hyphen_values = true)]
        chat: i32,
    },
    /// Open a secret chat with a user (RequestChat); prints the chat id.
    Request {
        /// The user's id.
        user_id: i64,
        /// The user's access_hash, if known.
        #[arg(long, value_name = "H", allow_hyphen_values = true)]
        access_hash: Option<i64>,
        /// The chat id to use (positive, drawn at random: it is Telegram's random_id for the
        /// request). Run again with the same id after an answer that was lost, it prints that
        /// chat instead of opening another.
        #[arg(long, value_name = "ID")]
        chat_id: Option<i32>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Accept a requested chat that waits for you (AcceptChat).
    Accept {
        /// The chat id or object path.
        #[arg(value_parser = parse_chat, allow_hyphen_values = true)]
        chat: i32,
    },
    /// Decline a requested chat that waits for you (DeclineChat).
    Decline {
        /// The chat id or object path.
        #[arg(value_parser = parse_chat, allow_hyphen_values = true)]
        chat: i32,
    },
    /// Close a chat (DiscardChat).
    Discard {
        /// The chat id or object path.
        #[arg(value_parser = parse_chat, allow_hyphen_values = true)]
        chat: i32,
        /// Ask the peer to delete the history too.
        #[arg(long)]
        delete_history: bool,
    },
    /// Remove a closed chat and everything stored for it: its state, events and request
    /// results (ForgetChat).
    Forget {
        /// The chat id or object path.
        #[arg(value_parser = parse_chat, allow_hyphen_values = true)]
        chat: i32,
    },
}

/// `login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The phone number (asked for if missing).
    #[arg(long)]
    pub phone: Option<String>,
}

/// `watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only this chat's signals (id or object path); default: every signal of the daemon.
    #[arg(value_parser = parse_chat, allow_hyphen_values = true)]
    pub chat: Option<i32>,
}

/// Who wrote an end-to-end message: it fixes the KDF offset x.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleArg {
    /// The chat's creator (x = 0).
    Creator,
    /// The chat's acceptor (x = 8).
    Acceptor,
}

/// `codec ...`.
#[derive(Subcommand, Debug)]
pub enum CodecCommand {
    /// Boxed TL (hex, or `-` for stdin) of any secret-chat schema object → JSON.
    TlToJson {
        /// The TL in hex, or `-`.
        input: String,
    },
    /// JSON ("_" names the constructor; or `-` for stdin) → boxed TL in hex.
    JsonToTl {
        /// The JSON, or `-`.
        input: String,
    },
    /// Encrypt a TL payload into a secret-chat message's `data` (hex).
    Encrypt {
        /// The 256-byte shared key, in hex.
        #[arg(long, value_name = "HEX")]
        key: String,
        /// Who writes the message: creator (x = 0) or acceptor (x = 8).
        #[arg(long)]
        role: RoleArg,
        /// The payload (normally a boxed decryptedMessageLayer), in hex.
        #[arg(long, value_name = "HEX")]
        tl: String,
        /// The padding (12 to 1024 bytes making 4 + payload + padding a multiple of 16), in hex;
        /// default: random, in TDLib's size buckets.
        #[arg(long, value_name = "HEX")]
        padding: Option<String>,
    },
    /// Decrypt a secret-chat message's `data` (hex) into its TL payload (hex).
    Decrypt {
        /// The 256-byte shared key, in hex.
        #[arg(long, value_name = "HEX")]
        key: String,
        /// Who wrote the message (for a received one, the peer's role): creator (x = 0) or
        /// acceptor (x = 8).
        #[arg(long)]
        role: RoleArg,
        /// The message's data, in hex, or `-`.
        data: String,
    },
}

/// `demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where tgsim and tgsecretd are (default: beside this executable, then $PATH).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Keep the demo's directory (states and logs) instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// Seconds to wait for each step (the daemon up, the chat ready, each Response).
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    pub timeout: f64,
}

/// `completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// `man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// A subcommand's page instead of the main one (e.g. `send-service`, `chat`,
    /// `chat request`).
    pub command: Vec<String>,
}

/// A chat id: an integer (negative ones too) or the chat's object path.
pub fn parse_chat(s: &str) -> Result<i32, String> {
    if let Ok(id) = s.parse::<i32>() {
        return Ok(id);
    }
    ipc_proto::chat_id_of_path(s)
        .ok_or_else(|| format!("{s:?} is neither a chat id (a 32-bit integer) nor a chat path"))
}

/// An action name: any string (the daemon judges it, in any case, short or full), offered
/// from [`ipc_proto::ACTIONS`] to shell completion and listed in the help.
#[derive(Clone, Debug)]
pub struct ActionName;

impl clap::builder::TypedValueParser for ActionName {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        clap::builder::StringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            ipc_proto::ACTIONS
                .iter()
                .map(|a| clap::builder::PossibleValue::new(*a)),
        ))
    }
}

/// A D-Bus address (`unix:path=…`, `tcp:host=…,port=…`), checked here so that a malformed one
/// is a usage error (exit 2), not an unreachable bus (exit 3).
pub fn parse_bus_address(s: &str) -> Result<String, String> {
    s.parse::<zbus::Address>()
        .map(|_| s.to_owned())
        .map_err(|e| format!("{s:?} is not a D-Bus address: {e}"))
}

/// The clap command (for completions, man pages and tests).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
