//! `completions SHELL` and `man [COMMAND]`.

use crate::cli::{CompletionsArgs, ManArgs, command};
use crate::error::CliError;

/// Prints the completion script of a shell.
pub fn completions(a: CompletionsArgs) -> Result<(), CliError> {
    let mut cmd = command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "tgsecret", &mut script);
    crate::output::write_out(&script);
    Ok(())
}

/// The man page (roff) of `tgsecret`, or of one subcommand (`tgsecret-chat`).
pub fn man_page(sub: Option<&str>) -> Result<Vec<u8>, CliError> {
    let mut cmd = command();
    cmd.build();
    let page = match sub {
        None => cmd,
        // After build(), a subcommand's display name is `tgsecret-NAME`.
        Some(name) => cmd.find_subcommand(name).cloned().ok_or_else(|| {
            CliError::Usage(format!("no subcommand {name:?} (see tgsecret --help)"))
        })?,
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| CliError::failed("Io", e.to_string()))?;
    Ok(out)
}

/// Prints the man page.
pub fn man(a: ManArgs) -> Result<(), CliError> {
    let page = man_page(a.command.as_deref())?;
    crate::output::write_out(&page);
    Ok(())
}
