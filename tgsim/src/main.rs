//! tgsim, a local Telegram server for secret chats: the command line.
//!
//! `tgsim --listen 127.0.0.1:PORT --key-file PATH` serves MTProto 2.0 on that address with the
//! auth keys of the key file and prints the bound address on stdout. There is no Telegram model
//! yet: besides `help.getConfig` / `help.getNearestDc`, every method is answered with
//! `400 INPUT_METHOD_INVALID_<constructor>`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use secret_core::crypto::AuthKey;
use tgsim::server::{NoMethods, Server};
use tgsim::session::{AccountId, AuthKeys};

/// tgsim: a local Telegram server (MTProto 2.0 over TCP) for testing secret chats.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// File of provisioned auth keys, one per line: `ACCOUNT_ID HEX_AUTH_KEY` (the key is
    /// 256 bytes, 512 hex digits). Blank lines and lines starting with `#` are ignored.
    #[arg(long)]
    key_file: PathBuf,

    /// Allow listening on a non-loopback address (the server has no real authentication).
    #[arg(long)]
    allow_non_loopback: bool,

    /// Log level on stderr (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

fn load_keys(path: &Path) -> Result<AuthKeys, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    parse_keys(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_keys(text: &str) -> Result<AuthKeys, String> {
    let mut keys = AuthKeys::new();
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
        keys.insert(key, account);
    }
    if keys.is_empty() {
        return Err("no auth key".into());
    }
    Ok(keys)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .init();
    if !args.listen.ip().is_loopback() && !args.allow_non_loopback {
        eprintln!(
            "tgsim: refusing to listen on non-loopback address {} (use --allow-non-loopback)",
            args.listen
        );
        return ExitCode::from(2);
    }
    let keys = match load_keys(&args.key_file) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("tgsim: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::bind(args.listen, keys, Arc::new(NoMethods)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tgsim: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("{}", server.local_addr());
    let handle = server.handle();
    let run = server.spawn();
    tokio::select! {
        r = run => match r {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                eprintln!("tgsim: {e}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("tgsim: server task failed: {e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => {
            handle.shutdown();
            ExitCode::SUCCESS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_lines() {
        let key = "ab".repeat(256);
        let text = format!("# comment\n\n7 {key}\n  -3 {}  \n", "01".repeat(256));
        let keys = parse_keys(&text).expect("valid file");
        assert_eq!(keys.len(), 2);
        assert!(parse_keys("").is_err());
        assert!(parse_keys(&format!("x {key}")).is_err());
        assert!(parse_keys("7 abcd").is_err());
        assert!(parse_keys(&format!("7 {key} extra")).is_err());
    }
}
