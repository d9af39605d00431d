//! Prompts on stderr and lines from stdin; a password is read with echo off when stdin is a
//! terminal (termios through rustix, already in the dependency tree).

use std::io::{BufRead, IsTerminal, Write};

use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};

use crate::error::CliError;

/// Prints `prompt` on stderr (when stdin is a terminal) and reads one line from stdin, without
/// its line end. End of input is an error.
pub fn prompt_line(prompt: &str) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    read_line(prompt)
}

fn read_line(what: &str) -> Result<String, CliError> {
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("reading stdin: {e}")))?;
    if n == 0 {
        return Err(CliError::Usage(format!(
            "stdin ended before {}",
            what.trim_end_matches([' ', ':'])
        )));
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Like [`prompt_line`], with echo off while reading when stdin is a terminal.
pub fn prompt_password(prompt: &str) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return read_line(prompt);
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let saved = tcgetattr(&stdin).map_err(|e| CliError::Usage(format!("terminal: {e}")))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&stdin, OptionalActions::Now, &quiet)
        .map_err(|e| CliError::Usage(format!("terminal: {e}")))?;
    let line = read_line(prompt);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    line
}
