//! One module per group of subcommands; [`dispatch`] runs the parsed command line.

use std::io::Read;
use std::time::Duration;

use crate::bus::Client;
use crate::cli::{Cli, Command, WaitArgs};
use crate::error::CliError;
use crate::request::Follow;

pub mod account;
pub mod chats;
pub mod codec;
pub mod demo;
pub mod docs;
pub mod send;
pub mod watch;

/// The global flags.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// `--bus`.
    pub bus: Option<String>,
    /// `--json`.
    pub json: bool,
    /// `-q`.
    pub quiet: bool,
}

impl Ctx {
    /// A client on the chosen bus.
    pub async fn client(&self) -> Result<Client, CliError> {
        Client::connect(self.bus.as_deref()).await
    }

    /// How to follow a request, from `--wait`/`--timeout`.
    pub fn follow(&self, w: WaitArgs) -> Result<Follow, CliError> {
        Ok(Follow {
            wait: w.wait,
            timeout: seconds(w.timeout)?,
            quiet: self.quiet,
        })
    }

    /// An informational line on stdout (not with `-q` or `--json`).
    pub fn info(&self, line: impl std::fmt::Display) {
        if !self.quiet && !self.json {
            crate::output::say(line);
        }
    }
}

/// A duration from seconds given on the command line.
pub fn seconds(s: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| CliError::Usage(format!("{s} is not a number of seconds")))
}

/// The argument itself, or stdin when it is `-`.
pub fn arg_or_stdin(arg: &str) -> Result<String, CliError> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| CliError::Usage(format!("reading stdin: {e}")))?;
    Ok(s)
}

/// Runs one command line.
pub async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let ctx = Ctx {
        bus: cli.bus,
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::SendService(a) => send::send_service(&ctx, a).await,
        Command::Call(a) => send::call(&ctx, a).await,
        Command::Result(a) => send::result(&ctx, a).await,
        Command::Close(a) => send::close(&ctx, a).await,
        Command::Chats => chats::list(&ctx).await,
        Command::Chat(c) => chats::chat(&ctx, c).await,
        Command::Login(a) => account::login(&ctx, a).await,
        Command::Logout => account::logout(&ctx).await,
        Command::Status => account::status(&ctx).await,
        Command::Watch(a) => watch::watch(&ctx, a).await,
        Command::Codec(c) => codec::run(&ctx, c),
        Command::Demo(a) => demo::run(&ctx, a).await,
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
    }
}
