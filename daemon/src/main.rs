//! `tgsecretd`: the command line around [`tgsecretd::instance::Daemon`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use tgsecretd::instance::{Bus, Daemon, Options, Server};
use tgsecretd::notify::{Notifier, first_directory};
use tgsecretd::shared::AcceptPolicy;

/// mimalloc instead of glibc's malloc: at 64 callers a fifth of the daemon's CPU samples were
/// inside glibc's allocator, mostly on memory that one thread allocates and another frees (the
/// D-Bus task, the chat's actor, the store's threads), which glibc serves outside its
/// per-thread cache. With mimalloc the daemon's CPU per accepted call fell from 49-54 us to
/// 36-42 us. `no_thp` keeps its heaps off transparent huge pages: with them an idle daemon's
/// RSS was 55 MB instead of 11 MB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--call-timeout`'s default, in seconds: shorter than the 25 s a D-Bus client waits for a
/// method's answer by default (the synchronous methods that wait for Telegram must answer first).
const DEFAULT_CALL_TIMEOUT: u64 = 20;
const _: () = assert!(DEFAULT_CALL_TIMEOUT < 25);

/// Keeps your Telegram secret chats and serves them to desktop applications over D-Bus
/// (io.github.tgsecretd on the session bus).
///
/// Each setting comes from its flag, else from the config file, else from its default. The
/// config file is --config, else $CONFIGURATION_DIRECTORY/config.toml when systemd sets that
/// variable (ConfigurationDirectory=), else $XDG_CONFIG_HOME/tgsecretd/config.toml; every key is
/// optional and named like the flag with `_` for `-`. The state (the store: chats, keys,
/// session; 0700) lives in --state-dir, else the config's state_dir, else $STATE_DIRECTORY when
/// systemd sets it (StateDirectory=; the first of several ':'-separated paths), else
/// $XDG_STATE_HOME/tgsecretd.
///
/// Under a Type=notify unit (NOTIFY_SOCKET set) it tells systemd READY=1 once it is on the bus,
/// STOPPING=1 when it stops, and WATCHDOG=1 every WATCHDOG_USEC/2 when the unit has
/// WatchdogSec=.
///
/// It stops (exit 0) on SIGTERM or Ctrl-C, and when its bus goes away; a stop keeps everything
/// pending, which resumes at the next start.
///
/// Example, against a local tgsim: tgsecretd --server 127.0.0.1:4430 --auth-key-file alice.key
/// --api-id 1 --api-hash x --accept always
#[derive(Parser, Debug)]
#[command(name = "tgsecretd", version)]
struct Cli {
    /// The config file (default $CONFIGURATION_DIRECTORY/config.toml under systemd, else
    /// $XDG_CONFIG_HOME/tgsecretd/config.toml; a missing default file is no error).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the state lives (default: the config's state_dir, else $STATE_DIRECTORY under
    /// systemd, else $XDG_STATE_HOME/tgsecretd).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The application's api_id (https://my.telegram.org).
    #[arg(long)]
    api_id: Option<i32>,
    /// The application's api_hash.
    #[arg(long)]
    api_hash: Option<String>,
    /// `production` (default), `test` (Telegram's test DCs), or IP:PORT of a local server with
    /// a provisioned key (--auth-key-file).
    #[arg(long, value_name = "WHERE")]
    server: Option<String>,
    /// A file holding the 256-byte auth key in hex, for --server IP:PORT.
    #[arg(long, value_name = "FILE")]
    auth_key_file: Option<PathBuf>,
    /// `session` (default: DBUS_SESSION_BUS_ADDRESS, else the user's bus) or a bus address.
    #[arg(long, value_name = "BUS")]
    bus: Option<String>,
    /// What happens to a secret chat someone opens with us: `ask` (default: it waits, the
    /// Manager1.ChatRequested signal tells the desktop, AcceptChat / DeclineChat decide),
    /// `always` (accepted at once), `never` (declined at once), or a comma-separated list of
    /// user ids accepted at once (others wait, as with `ask`).
    #[arg(long, value_name = "POLICY")]
    accept: Option<String>,
    /// Seconds to wait for one answer from Telegram before the call counts as lost (default
    /// 20: below the 25 s that busctl, gdbus and most D-Bus libraries wait by default, so a
    /// method that waits for Telegram, such as LoginCode or Logout, answers with a typed error
    /// rather than a D-Bus NoReply).
    #[arg(long, value_name = "SECONDS")]
    call_timeout: Option<u64>,
    /// Log filter (error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL")]
    log: Option<String>,
}

/// The config file (every key optional).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    state_dir: Option<PathBuf>,
    api_id: Option<i32>,
    api_hash: Option<String>,
    server: Option<String>,
    auth_key_file: Option<PathBuf>,
    bus: Option<String>,
    accept: Option<String>,
    call_timeout: Option<u64>,
    log: Option<String>,
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(fallback),
    }
}

fn read_config(path: Option<&Path>) -> Result<FileConfig, String> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (
            // systemd's ConfigurationDirectory= first, then the XDG default.
            match first_directory(std::env::var_os("CONFIGURATION_DIRECTORY")) {
                Some(dir) => dir.join("config.toml"),
                None => xdg("XDG_CONFIG_HOME", ".config").join("tgsecretd/config.toml"),
            },
            false,
        ),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
            Ok(FileConfig::default())
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn read_key(path: &Path) -> Result<[u8; 256], String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let hex: String = text.split_whitespace().collect();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()
        .ok_or_else(|| format!("{}: not hex", path.display()))?;
    <[u8; 256]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{}: an auth key is 256 bytes", path.display()))
}

fn accept_policy(s: &str) -> Result<AcceptPolicy, String> {
    AcceptPolicy::parse(s).map_err(|e| format!("--accept: {e}"))
}

fn options(cli: Cli) -> Result<(Options, String), String> {
    let file = read_config(cli.config.as_deref())?;
    let state_dir = cli
        .state_dir
        .or(file.state_dir)
        .or_else(|| first_directory(std::env::var_os("STATE_DIRECTORY")))
        .unwrap_or_else(|| xdg("XDG_STATE_HOME", ".local/state").join("tgsecretd"));
    let server = match cli.server.or(file.server).as_deref() {
        None | Some("production") => Server::Production,
        Some("test") => Server::Test,
        Some(addr) => {
            let addr = addr
                .parse()
                .map_err(|_| format!("--server: {addr:?} is not production, test or IPv4:PORT"))?;
            let key_file = cli
                .auth_key_file
                .or(file.auth_key_file)
                .ok_or("--server IP:PORT needs --auth-key-file")?;
            Server::Pinned {
                addr,
                auth_key: Box::new(read_key(&key_file)?),
            }
        }
    };
    let bus = match cli.bus.or(file.bus).as_deref() {
        None | Some("session") => Bus::Session,
        Some(a) => Bus::Address(a.to_owned()),
    };
    let accept = accept_policy(cli.accept.or(file.accept).as_deref().unwrap_or("ask"))?;
    let log = cli.log.or(file.log).unwrap_or_else(|| "info".into());
    Ok((
        Options {
            state_dir,
            server,
            api_id: cli.api_id.or(file.api_id).unwrap_or(0),
            api_hash: cli.api_hash.or(file.api_hash).unwrap_or_default(),
            bus,
            accept,
            call_timeout: Duration::from_secs(
                cli.call_timeout
                    .or(file.call_timeout)
                    .unwrap_or(DEFAULT_CALL_TIMEOUT),
            ),
        },
        log,
    ))
}

fn init_logging(level: &str) {
    let level = level.parse().unwrap_or(tracing::Level::INFO);
    // Under systemd (JOURNAL_STREAM set) the journal adds its own timestamps.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if journal {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (opts, log) = match options(cli) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tgsecretd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&log);
    // Files the daemon creates are the user's alone.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        rt.worker_threads(worker_threads());
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tgsecretd: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(opts))
}

async fn run(opts: Options) -> ExitCode {
    // systemd (Type=notify): READY=1 once on the bus, WATCHDOG=1 while serving, STOPPING=1.
    let notify = Notifier::from_env();
    // Listening before anything starts: a SIGTERM right after READY=1 stops cleanly.
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        eprintln!("tgsecretd: cannot listen for SIGTERM");
        return ExitCode::FAILURE;
    };
    let mut daemon = match Daemon::start(opts).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tgsecretd: {e}");
            notify.status(&format!("cannot start: {e}"));
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("serving");
    notify.ready(&format!("serving {}", ipc_proto::BUS_NAME));
    let watchdog = notify.spawn_watchdog();
    // The bus going away ends the session the daemon serves: it stops as after a SIGTERM, exit
    // 0 (Restart=on-failure would only start it again without a bus), and so releases the
    // store for the daemon of the next session (D-Bus activation starts one there). What was
    // pending resumes then.
    let bus_closed = daemon.bus_closed();
    let code = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); ExitCode::SUCCESS }
        _ = bus_closed => { tracing::warn!("the bus went away: stopping"); ExitCode::SUCCESS }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: stopping"); ExitCode::SUCCESS }
        why = daemon.failed() => { tracing::error!(%why, "cannot continue"); ExitCode::FAILURE }
    };
    stopping(&notify, watchdog, "stopping").await;
    daemon.stop().await;
    code
}

/// Ends the watchdog pings, then tells systemd the daemon is stopping (in this order, so no
/// WATCHDOG=1 follows STOPPING=1).
async fn stopping(notify: &Notifier, watchdog: Option<tgsecretd::notify::Watchdog>, status: &str) {
    if let Some(w) = watchdog {
        w.stop().await;
    }
    notify.stopping(status);
}

/// The runtime's worker threads (D-Bus, the API, the Telegram link): one core fewer than the
/// machine has, at least one, since the chat actors' thread, the store's writer and sled's I/O
/// threads take a core's worth of work beside them (on 2 cores, six interleaved quick runs of
/// `cargo bench -p daemon --bench daemon` accepted 0.36-0.43x the echo floor with two workers,
/// 0.41-0.53x with one).
/// `TOKIO_WORKER_THREADS` overrides it.
fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}
