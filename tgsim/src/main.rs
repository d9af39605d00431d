//! tgsim, a local Telegram server for secret chats: the command line.
//!
//! See `tgsim --help` (the doc comment of [`Args`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tgsim::admin;
use tgsim::faults::Faults;
use tgsim::instance::{AccountSpec, Options, PeerSpec, StartError, Tgsim};
use tgsim::keyfile;
use tgsim::peer::Behaviour;
use tgsim::session::AccountId;

/// tgsim: a local Telegram server (MTProto 2.0 over TCP) for testing secret chats.
///
/// Serves the Telegram model (accounts, sign-in, secret chats, per-account qts queues) over
/// MTProto 2.0 on `--listen`, and an admin interface on a Unix socket. On start it prints two
/// lines on stdout: the bound address (`127.0.0.1:PORT`), then the admin socket path.
///
/// STATE. Everything lives in `--state-dir` (created with mode 0700 if missing):
/// `world.bin` holds accounts, blocks, chats, queues and the relay log, rewritten atomically
/// before any change is answered; `keys` holds the auth keys provisioned through the admin
/// socket (`ACCOUNT_ID HEX_AUTH_KEY` lines, mode 0600, rewritten atomically). After a crash
/// (even `kill -9`), starting again on the same directory continues where it stopped, and
/// clients reconnect with the same keys.
///
/// AUTH KEYS. There is no DH handshake: clients connect with a provisioned 256-byte auth key.
/// Get one with the admin command `add_account` (or `provision_key`), which answers
/// `{"account", "auth_key_id", "auth_key": HEX}`; with grammers:
/// `grammers_mtsender::connect_with_auth(Full::new(), ServerAddr::Tcp { address }, key)`
/// where `address` is the printed address and `key` the 256 bytes decoded from hex. Keys
/// from `--key-file` are accepted too (read only, never rewritten).
///
/// ADMIN SOCKET. One JSON object per line each way: request
/// `{"id": N, "cmd": "...", ...arguments}`, answer `{"id": N, "ok": true, "result": ...}` or
/// `{"id": N, "ok": false, "error": "..."}`. Commands: `add_account {user_id, phone,
/// first_name}`, `provision_key {account}`, `accounts`, `block {a, b}` (a blocks b),
/// `unblock {a, b}`, `relayed {since?}` (relayed encrypted messages with sender, recipient,
/// chat_id, random_id, date, qts, service and base64 `bytes`; a random_id sent again is
/// relayed again and listed once per delivery), `state {account}` (qts, pts, queue lengths,
/// and `listen`, the address the server is bound to), `close_connections {account}` (drops the
/// account's live connections; clients reconnect), `shutdown`. The socket has mode 0600. Example:
/// `echo '{"id":1,"cmd":"accounts"}' | socat - UNIX-CONNECT:DIR/admin.sock`.
/// From Rust: `tgsim::admin::AdminClient::connect(path)`.
///
/// SIMULATED PEERS. `--peer ID:PHONE:NAME[:BEHAVIOUR]` makes an account (created if missing) a
/// peer whose client runs inside tgsim (secret-core's Chat): it accepts, declines or ignores
/// chat requests by its behaviour (normal, echo [default: sends back every action it gets],
/// offline, never-accept, decline, block, silent), and every 500 ms polls
/// `updates.getDifference` like a real client. Peers live in memory: pass the flags again on
/// restart. Admin commands: `add_peer {user_id, phone, first_name, behaviour}`,
/// `set_behaviour {account, behaviour}`, `request_chat {peer, user_id}` (the peer starts a
/// chat; answers the chat id), `peer_send {peer, chat_id, action}` (a DecryptedMessageAction in
/// MadelineProto JSON, e.g. `{"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 5}`),
/// `peer_chats {peer}` (status, key fingerprint, received actions), `catch_up {peer}`.
///
/// FAULTS. Pushed updates (to real clients and peers) can be dropped, duplicated, reordered or
/// delayed, and calls (from both) failed with chosen errors or answered by closing the caller's
/// connection, before the call runs (`close_before`) or after it ran (`close_after`: the effect
/// stays, the answer is lost); `--faults FILE` sets them at start (a JSON record, e.g.
/// `{"seed": 1, "updates": {"drop": 100}, "calls": {"fail": 50, "close_after": 10, "errors":
/// [{"code": 420, "message": "FLOOD_WAIT_1"}]}}`, probabilities per mille; `account_updates`,
/// `chat_updates` and `account_calls` set them per account or chat), the admin command
/// `set_faults {faults}` replaces them, `faults` answers the configuration and counters;
/// `close_connections {account}` closes an account's connections at once.
///
/// EXAMPLE. A real client account 1001 and an echoing peer 2002:
/// `tgsim --state-dir /tmp/tg --account 1001:15550001:Alice --peer 2002:15550002:Bob:echo`,
/// then `add_account`/`provision_key {"account": 1001}` for Alice's key, connect, and request a
/// chat with user 2002 (or `request_chat {"peer": 2002, "user_id": 1001}`).
///
/// Sign-in, if a client wants it: `auth.sendCode` for the account's phone, then `auth.signIn`
/// with code 22222.
#[derive(Parser, Debug)]
#[command(version, about, verbatim_doc_comment)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Directory of the persistent state (`world.bin`, `keys`, by default `admin.sock`);
    /// created if missing.
    #[arg(long)]
    state_dir: PathBuf,

    /// An account to have (created if missing; repeatable): `USER_ID:PHONE:FIRST_NAME`.
    /// Provision a key for it with the admin command `provision_key`, or use --key-file.
    #[arg(long = "account", value_name = "ID:PHONE:NAME", value_parser = parse_account)]
    accounts: Vec<(AccountId, String, String)>,

    /// Extra auth keys, read only, one per line: `ACCOUNT_ID HEX_AUTH_KEY` (the key is
    /// 256 bytes, 512 hex digits). Blank lines and lines starting with `#` are ignored.
    #[arg(long)]
    key_file: Option<PathBuf>,

    /// Provision an auth key for an account at start and write it, in hex, to FILE (mode 0600;
    /// repeatable): `ACCOUNT_ID=FILE`. A client such as tgsecretd then connects with
    /// `--server ADDR --auth-key-file FILE`.
    #[arg(long = "export-key", value_name = "ID=FILE", value_parser = parse_export)]
    export_keys: Vec<(AccountId, PathBuf)>,

    /// Path of the admin socket [default: STATE_DIR/admin.sock].
    #[arg(long)]
    admin_socket: Option<PathBuf>,

    /// Allow listening on a non-loopback address (the server has no real authentication).
    #[arg(long)]
    allow_non_loopback: bool,

    /// A simulated peer (created if missing; repeatable): `USER_ID:PHONE:FIRST_NAME[:BEHAVIOUR]`,
    /// behaviour one of normal, echo, offline, never-accept, decline, block, silent [default:
    /// echo].
    #[arg(long = "peer", value_name = "ID:PHONE:NAME[:BEHAVIOUR]", value_parser = parse_peer)]
    peers: Vec<(AccountId, String, String, Behaviour)>,

    /// Faults applied at start: a JSON `Faults` record (see FAULTS above).
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,

    /// Seed of the simulated peers' randomness (and of the faults when --faults is not given).
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Log level on stderr (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

fn parse_account(s: &str) -> Result<(AccountId, String, String), String> {
    let mut parts = s.splitn(3, ':');
    let (Some(id), Some(phone), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected USER_ID:PHONE:FIRST_NAME".into());
    };
    let id: AccountId = id.parse().map_err(|e| format!("bad user id: {e}"))?;
    if id <= 0 {
        return Err("the user id must be positive".into());
    }
    if phone.is_empty() || name.is_empty() {
        return Err("the phone and first name must not be empty".into());
    }
    Ok((id, phone.to_owned(), name.to_owned()))
}

fn parse_export(s: &str) -> Result<(AccountId, PathBuf), String> {
    let (id, file) = s.split_once('=').ok_or("expected ACCOUNT_ID=FILE")?;
    let id: AccountId = id.parse().map_err(|e| format!("bad account id: {e}"))?;
    if file.is_empty() {
        return Err("the file must not be empty".into());
    }
    Ok((id, PathBuf::from(file)))
}

fn write_key(path: &std::path::Path, hex: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(hex.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn parse_peer(s: &str) -> Result<(AccountId, String, String, Behaviour), String> {
    let (id, phone, rest) = parse_account(s)?;
    // A trailing `:BEHAVIOUR` is taken as such only if it names one; else it is part of the name.
    if let Some((name, b)) = rest.rsplit_once(':')
        && let Ok(behaviour) = admin::parse_behaviour(b)
    {
        if name.is_empty() {
            return Err("the first name must not be empty".into());
        }
        return Ok((id, phone, name.to_owned(), behaviour));
    }
    Ok((id, phone, rest, Behaviour::Echo))
}

fn fail(msg: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("tgsim: {msg}");
    ExitCode::from(code)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .init();

    let faults = match &args.faults {
        None => Faults {
            seed: args.seed,
            ..Faults::none()
        },
        Some(path) => match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Faults>(&b).map_err(|e| e.to_string()))
        {
            Ok(f) => f,
            Err(e) => return fail(format!("{}: {e}", path.display()), 2),
        },
    };
    let spec = |(id, phone, first_name): &(AccountId, String, String)| AccountSpec {
        id: *id,
        phone: phone.clone(),
        first_name: first_name.clone(),
    };
    let mut extra_keys = Vec::new();
    if let Some(path) = &args.key_file {
        match keyfile::load(path, false) {
            Ok(keys) if keys.is_empty() => {
                return fail(format!("{}: no auth key", path.display()), 2);
            }
            Ok(keys) => extra_keys = keys,
            Err(e) => return fail(e, 2),
        }
    }
    let opts = Options {
        listen: args.listen,
        allow_non_loopback: args.allow_non_loopback,
        accounts: args.accounts.iter().map(spec).collect(),
        peers: args
            .peers
            .iter()
            .map(|(id, phone, name, behaviour)| PeerSpec {
                account: spec(&(*id, phone.clone(), name.clone())),
                behaviour: *behaviour,
            })
            .collect(),
        extra_keys,
        faults,
        seed: args.seed,
        admin_socket: args.admin_socket.clone(),
        ..Options::new(&args.state_dir)
    };
    let mut tgsim = match Tgsim::start(opts).await {
        Ok(t) => t,
        Err(e @ StartError::Usage(_)) => return fail(e, 2),
        Err(e @ (StartError::Bind(_) | StartError::Io(_))) => return fail(e, 1),
    };

    for (account, path) in &args.export_keys {
        let written = tgsim
            .provision_key(*account)
            .map_err(|e| e.to_string())
            .and_then(|k| write_key(path, &k.auth_key).map_err(|e| e.to_string()));
        if let Err(e) = written {
            return fail(format!("--export-key {account}={}: {e}", path.display()), 1);
        }
    }
    // Written once and never fatal: a parent that reads only the first line and closes the pipe
    // must not kill the server (println! would panic on EPIPE).
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}\n{}",
            tgsim.local_addr(),
            tgsim.admin_path().display()
        );
        let _ = out.flush();
    }
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tgsim.run_until(interrupt).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_arguments() {
        assert_eq!(
            parse_account("7:+1 555:Ann:B").expect("valid"),
            (7, "+1 555".into(), "Ann:B".into())
        );
        assert!(parse_account("7:555").is_err());
        assert!(parse_account("x:555:Ann").is_err());
        assert!(parse_account("0:555:Ann").is_err());
        assert!(parse_account("7::Ann").is_err());
    }

    #[test]
    fn peer_arguments() {
        assert_eq!(
            parse_peer("7:555:Ann").expect("valid"),
            (7, "555".into(), "Ann".into(), Behaviour::Echo)
        );
        assert_eq!(
            parse_peer("7:555:Ann:never-accept").expect("valid"),
            (7, "555".into(), "Ann".into(), Behaviour::NeverAccept)
        );
        assert_eq!(
            parse_peer("7:555:Ann:B").expect("valid"),
            (7, "555".into(), "Ann:B".into(), Behaviour::Echo)
        );
        assert!(parse_peer("7:555::offline").is_err());
        assert!(parse_peer("7:555").is_err());
    }

    #[test]
    fn help_parses() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
