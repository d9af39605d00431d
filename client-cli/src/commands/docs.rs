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

/// The man page (roff) of `tgsecret`, or of one subcommand (`tgsecret-chat`,
/// `tgsecret-chat-request`): clap_mangen's sections, except that the text after the help
/// keeps its lines and has a title of its own (EXIT STATUS on the main page, EXAMPLES or
/// NOTES on a subcommand's) where clap_mangen would flow it into one paragraph under "EXTRA".
pub fn man_page(sub: &[String]) -> Result<Vec<u8>, CliError> {
    let mut cmd = command();
    cmd.build();
    let mut page = cmd;
    for name in sub {
        // After build(), a subcommand's display name is `tgsecret-NAME`.
        page = page.find_subcommand(name).cloned().ok_or_else(|| {
            CliError::Usage(format!(
                "no subcommand {:?} (see tgsecret --help)",
                sub.join(" ")
            ))
        })?;
    }
    let after = page
        .get_after_long_help()
        .or_else(|| page.get_after_help())
        .map(|t| t.to_string());
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| CliError::failed("Io", e.to_string()))?;
    let mut roff = String::from_utf8(out).map_err(|e| CliError::failed("Io", e.to_string()))?;
    if let (Some(text), Some(at)) = (after, roff.find(".SH EXTRA\n")) {
        let title = if sub.is_empty() {
            "EXIT STATUS"
        } else if text.starts_with("Example") {
            "EXAMPLES"
        } else {
            "NOTES"
        };
        let end = roff[at + 1..]
            .find("\n.SH ")
            .map_or(roff.len(), |i| at + 1 + i + 1);
        roff.replace_range(at..end, &verbatim_section(title, &text));
    }
    Ok(roff.into_bytes())
}

/// A roff section: indented lines (examples, the exit code table) kept as written
/// (`.nf` … `.fi`), the other lines filled, a blank line a new paragraph; all escaped.
fn verbatim_section(title: &str, text: &str) -> String {
    let mut s = format!(".SH \"{title}\"\n");
    let text = ["Exit codes:\n", "Examples:\n", "Example:\n"]
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .unwrap_or(text);
    let mut kept = false;
    for line in text.lines() {
        let indented = line.starts_with(' ');
        if kept && !indented {
            s.push_str(".fi\n");
            kept = false;
        }
        if line.trim().is_empty() {
            s.push_str(".PP\n");
            continue;
        }
        if indented && !kept {
            s.push_str(".nf\n");
            kept = true;
        }
        let line = line.replace('\\', "\\e").replace('-', "\\-");
        if line.starts_with('.') || line.starts_with('\'') {
            s.push_str("\\&");
        }
        s.push_str(&line);
        s.push('\n');
    }
    if kept {
        s.push_str(".fi\n");
    }
    s
}

/// Prints the man page.
pub fn man(a: ManArgs) -> Result<(), CliError> {
    let page = man_page(&a.command)?;
    crate::output::write_out(&page);
    Ok(())
}
