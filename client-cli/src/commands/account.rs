//! `status`, `login`, `logout`.

use std::io::IsTerminal;

use ipc_proto::{Dict, ManagerProxy};
use serde_json::Value as J;

use super::Ctx;
use crate::cli::LoginArgs;
use crate::error::CliError;
use crate::output::{dict_to_json, emit, key_value_lines, plain};
use crate::password::{prompt_line, prompt_password};

/// `status`.
pub async fn status(ctx: &Ctx) -> Result<(), CliError> {
    let client = ctx.client().await?;
    let doc = dict_to_json(&client.manager.get_status().await?);
    emit(ctx.json, &doc, || key_value_lines(&doc));
    Ok(())
}

/// `logout`.
pub async fn logout(ctx: &Ctx) -> Result<(), CliError> {
    ctx.client().await?.manager.logout().await?;
    if ctx.json {
        crate::output::say(serde_json::json!({"logged_out": true}));
    }
    ctx.info("logged out");
    Ok(())
}

fn field(d: &Dict, k: &str) -> String {
    let j = dict_to_json(d);
    j.get(k).map(plain).unwrap_or_default()
}

/// `login [--phone P]`: phone → code → password (when asked), each prompted on the terminal
/// (the password with echo off) or read as a line from stdin.
pub async fn login(ctx: &Ctx, a: LoginArgs) -> Result<(), CliError> {
    let client = ctx.client().await?;
    let mgr = &client.manager;
    let phone = match a.phone {
        Some(p) => p,
        None => prompt_line("Phone number: ")?,
    };
    let mut step = mgr.login_phone(&phone).await?;
    for _ in 0..4 {
        match field(&step, "next").as_str() {
            "code" => step = retrying(|| code_step(mgr)).await?,
            "password" => {
                let hint = field(&step, "hint");
                step = retrying(|| password_step(mgr, &hint)).await?;
            }
            "done" => return logged_in(ctx, &step),
            other => {
                return Err(CliError::failed(
                    "UnexpectedLoginStep",
                    format!("the daemon asks for {other:?}"),
                ));
            }
        }
    }
    Err(CliError::failed(
        "UnexpectedLoginStep",
        "too many login steps",
    ))
}

async fn code_step(mgr: &ManagerProxy<'static>) -> Result<Dict, CliError> {
    let code = prompt_line("Code: ")?;
    Ok(mgr.login_code(code.trim()).await?)
}

async fn password_step(mgr: &ManagerProxy<'static>, hint: &str) -> Result<Dict, CliError> {
    let prompt = match hint.is_empty() {
        true => "Password: ".to_owned(),
        false => format!("Password (hint: {hint}): "),
    };
    let pw = prompt_password(&prompt)?;
    Ok(mgr.login_password(&pw).await?)
}

/// Asks again (up to 3 times, on a terminal only) when Telegram refused what was typed.
async fn retrying<F, Fut>(mut step: F) -> Result<Dict, CliError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Dict, CliError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match step().await {
            Err(CliError::Failed { name, message })
                if name == "Telegram" && tries < 3 && std::io::stdin().is_terminal() =>
            {
                eprintln!("{message}; try again");
            }
            other => return other,
        }
    }
}

fn logged_in(ctx: &Ctx, d: &Dict) -> Result<(), CliError> {
    let doc = dict_to_json(d);
    if ctx.json {
        crate::output::say(doc);
        return Ok(());
    }
    match doc.get("user_id").filter(|v| !v.is_null()) {
        Some(J::Number(n)) => ctx.info(format!("logged in as user {n}")),
        _ => ctx.info("logged in"),
    }
    Ok(())
}
