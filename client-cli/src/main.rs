//! `tgsecret`, the command-line client of tgsecretd: see the library's docs
//! ([`tgsecret_cli`]) for the commands and the exit codes (0 ok, 1 the request failed or the
//! daemon returned a typed error, 2 usage, 3 bus or daemon unreachable, 4 timeout, 5
//! cancelled).

use std::process::ExitCode;

use clap::Parser;
use tgsecret_cli::{Cli, CliError};

fn main() -> ExitCode {
    // Usage errors exit 2 here (clap); --help and --version exit 0.
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(tgsecret_cli::run(cli)),
        Err(e) => Err(CliError::failed("Runtime", e.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report(json);
            ExitCode::from(e.exit_code())
        }
    }
}
