//! `demo`: the product on one machine, no Telegram account.
//!
//! Starts a private `dbus-daemon` (unless `--bus` names one, which must not have a tgsecretd
//! already), `tgsim` with Alice (us) and Bob (a simulated peer that echoes every action), and
//! `tgsecretd` on that bus with Alice's key and `--accept always`; requests a chat with Bob,
//! waits for it to be ready, then sends every kind of service action through
//! `SendServiceAction` and waits for each Response (the protocol's own actions —
//! ResendMessages and the re-key actions — must be refused with `NotAllowed`); prints Bob's
//! echoes as they come and Bob's decrypted view (tgsim's transcript); stops everything. Exits
//! non-zero if any step failed.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value as J, json};
use zbus::MessageStream;

use super::{Ctx, seconds};
use crate::bus::Client;
use crate::cli::DemoArgs;
use crate::commands::chats::wait_state;
use crate::commands::send::action_and_wait;
use crate::commands::watch::{rule, signal_json};
use crate::error::CliError;
use crate::lab::{Lab, LabOptions};
use crate::params::{Param, ParamValue};
use crate::request::Follow;

/// One step: the action, its params, and the outcomes that count as success: `"sent"`
/// (Response code 0) and the names of typed errors.
struct Step {
    action: &'static str,
    params: Vec<Param>,
    expect: &'static [&'static str],
}

fn p(key: &str, value: ParamValue) -> Param {
    Param {
        key: key.into(),
        value,
    }
}

const SENT: &[&str] = &["sent"];
const REFUSED: &[&str] = &["NotAllowed"];

/// Every kind of service action after SetMessageTTL; `rid` is a random_id of ours for the ones
/// that name messages. Resend, AcceptKey and CommitKey are the protocol's own (refused);
/// RequestKey with zero fields starts a re-key and AbortKey aborts ours, unless Bob's
/// AcceptKey already arrived (then it is a WrongState).
fn steps(rid: i64) -> Vec<Step> {
    use ParamValue::{Int, Ints, Str};
    let s = |action, params, expect| Step {
        action,
        params,
        expect,
    };
    let ids = || vec![p("random_ids", Ints(vec![rid]))];
    let exchange = |more: Vec<Param>| [vec![p("exchange_id", Int(0))], more].concat();
    vec![
        s("ReadMessages", ids(), SENT),
        s("ScreenshotMessages", ids(), SENT),
        s("DeleteMessages", ids(), SENT),
        s("FlushHistory", vec![], SENT),
        s(
            "Typing",
            vec![p("action", Str("sendMessageTypingAction".into()))],
            SENT,
        ),
        s(
            "NotifyLayer",
            vec![p("layer", Int(secret_core::tl::LAYER.into()))],
            SENT,
        ),
        s("Noop", vec![], SENT),
        s(
            "Resend",
            vec![p("start_seq_no", Int(0)), p("end_seq_no", Int(0))],
            REFUSED,
        ),
        s(
            "AcceptKey",
            exchange(vec![
                p("g_b", Str(String::new())),
                p("key_fingerprint", Int(0)),
            ]),
            REFUSED,
        ),
        s(
            "CommitKey",
            exchange(vec![p("key_fingerprint", Int(0))]),
            REFUSED,
        ),
        s(
            "RequestKey",
            exchange(vec![p("g_a", Str(String::new()))]),
            SENT,
        ),
        s("AbortKey", exchange(vec![]), &["sent", "WrongState"]),
    ]
}

/// What the demo prints: text lines, or one JSON document per line.
struct Out<'a>(&'a Ctx);

impl Out<'_> {
    fn say(&self, doc: J, text: impl FnOnce() -> String) {
        if self.0.json {
            crate::output::say(doc);
        } else if !self.0.quiet || doc.get("error").is_some() {
            crate::output::say(text());
        }
    }
}

/// `demo`.
pub async fn run(ctx: &Ctx, a: DemoArgs) -> Result<(), CliError> {
    let step = seconds(a.timeout)?;
    if let Some(bus) = &ctx.bus {
        refuse_busy_bus(bus).await?;
    }
    let dir = std::env::temp_dir().join(format!("tgsecret-demo-{}", std::process::id()));
    let mut opts = LabOptions::new(&dir);
    opts.bin_dir = a.bin_dir;
    opts.bus = ctx.bus.clone();
    let out = Out(ctx);
    out.say(json!({"demo": "start", "dir": dir}), || {
        format!(
            "tgsecret demo: tgsim (Alice {}, Bob {} who echoes) and tgsecretd in {}",
            opts.account,
            opts.peer,
            dir.display()
        )
    });
    let mut lab = Lab::start(opts).map_err(|e| CliError::failed("DemoSetup", e))?;
    let result = body(&out, &mut lab, step).await;
    let problems = lab.shutdown();
    finish(&out, &lab, result, problems, a.keep)
}

/// A demo on a bus that already has a tgsecretd would drive that one: refuse.
async fn refuse_busy_bus(bus: &str) -> Result<(), CliError> {
    let conn = crate::bus::connect(Some(bus)).await?;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
    let name = zbus::names::BusName::try_from(ipc_proto::BUS_NAME)
        .map_err(|e| CliError::failed("DemoSetup", e.to_string()))?;
    if dbus.name_has_owner(name).await? {
        return Err(CliError::failed(
            "DemoSetup",
            format!(
                "{} already runs on {bus}: the demo starts its own daemon; run `tgsecret demo` \
                 without --bus (it starts a private bus)",
                ipc_proto::BUS_NAME
            ),
        ));
    }
    Ok(())
}

fn finish(
    out: &Out<'_>,
    lab: &Lab,
    result: Result<usize, CliError>,
    problems: Vec<String>,
    keep: bool,
) -> Result<(), CliError> {
    for p in &problems {
        out.say(json!({"error": "Shutdown", "message": p}), || {
            format!("shutdown: {p}")
        });
    }
    let failed = match &result {
        Ok(n) => *n + problems.len(),
        Err(_) => 1 + problems.len(),
    };
    if keep || failed > 0 {
        out.say(json!({"demo": "kept", "dir": lab.opts.dir}), || {
            format!("states and logs kept in {}", lab.opts.dir.display())
        });
    } else {
        let _ = std::fs::remove_dir_all(&lab.opts.dir);
    }
    result?;
    if failed > 0 {
        return Err(CliError::failed(
            "DemoFailed",
            format!("{failed} step(s) failed"),
        ));
    }
    out.say(json!({"demo": "ok"}), || {
        "demo ok: everything stopped".into()
    });
    Ok(())
}

/// The demo proper; the number of failed steps.
async fn body(out: &Out<'_>, lab: &mut Lab, step: Duration) -> Result<usize, CliError> {
    let client = lab.wait_ready(step).await.map_err(CliError::Unreachable)?;
    out.say(
        json!({"demo": "daemon ready", "bus": lab.bus_address}),
        || format!("tgsecretd is up on {}", lab.bus_address),
    );
    let chat = open_chat(out, &client, lab.opts.peer, step).await?;
    let echoes = echo_printer(out.0.clone(), &client, chat).await?;
    let follow = Follow {
        wait: true,
        timeout: step,
        quiet: true,
    };
    let mut failed = 0;
    let ttl = Step {
        action: "SetMessageTTL",
        params: vec![p("ttl_seconds", ParamValue::Int(30))],
        expect: SENT,
    };
    let first = send_step(out, &client, follow, chat, &ttl).await;
    let rid = first.as_ref().ok().copied().flatten().unwrap_or(1);
    failed += usize::from(first.is_err());
    for s in steps(rid) {
        let r = send_step(out, &client, follow, chat, &s).await;
        failed += usize::from(r.is_err());
    }
    failed += usize::from(!print_transcript(out, lab, chat, step).await);
    echoes.abort();
    Ok(failed)
}

async fn open_chat(
    out: &Out<'_>,
    client: &Client,
    peer: i64,
    step: Duration,
) -> Result<i32, CliError> {
    let chat = client
        .manager
        .request_chat(peer, Default::default())
        .await?;
    out.say(json!({"demo": "chat requested", "chat_id": chat}), || {
        format!("requested secret chat {chat} with Bob ({peer})")
    });
    wait_state(client, chat, "ready", step).await?;
    out.say(json!({"demo": "chat ready", "chat_id": chat}), || {
        format!("chat {chat} is ready (keys exchanged)")
    });
    Ok(chat)
}

/// Prints the chat's signals (Bob's echoes) as they come, until aborted.
async fn echo_printer(
    ctx: Ctx,
    client: &Client,
    chat: i32,
) -> Result<tokio::task::JoinHandle<()>, CliError> {
    let mut stream = MessageStream::for_match_rule(rule(Some(chat))?, &client.conn, None).await?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            let doc = signal_json(&m);
            if doc["signal"] != "ServiceAction" {
                continue;
            }
            let action = doc["args"]["json"].clone();
            Out(&ctx).say(json!({"echo": action}), || {
                format!("  <- Bob echoed {action}")
            });
        }
    }))
}

/// One action with --wait semantics; `Ok(random_id)` when it went as expected.
async fn send_step(
    out: &Out<'_>,
    client: &Client,
    follow: Follow,
    chat: i32,
    step: &Step,
) -> Result<Option<i64>, ()> {
    let started = Instant::now();
    let r = action_and_wait(client, follow, chat, step.action, &step.params).await;
    let ms = started.elapsed().as_millis();
    let action = step.action;
    let got = match &r {
        Ok(_) => "sent",
        Err(e) => e.name(),
    };
    if !step.expect.contains(&got) {
        let text = match &r {
            Ok(o) => format!("sent ({}), expected {}", o.handle, step.expect.join(" or ")),
            Err(e) => format!("{e}, expected {}", step.expect.join(" or ")),
        };
        out.say(
            json!({"action": action, "error": "StepFailed", "message": text}),
            || format!("{action:<18} FAILED: {text}"),
        );
        return Err(());
    }
    match r {
        Ok(o) => {
            let doc = o.to_json();
            out.say(json!({"action": action, "ms": ms, "result": doc}), || {
                format!("{action:<18} sent in {ms} ms: {}", o.fields_text())
            });
            Ok(doc["results"]["random_id"].as_i64())
        }
        Err(e) => {
            out.say(json!({"action": action, "expected": e.to_json()}), || {
                format!(
                    "{action:<18} refused as expected: {}: {}",
                    e.name(),
                    e.message()
                )
            });
            Ok(None)
        }
    }
}

/// Bob's decrypted view; false if it misses the TTL action.
async fn print_transcript(out: &Out<'_>, lab: &Lab, chat: i32, step: Duration) -> bool {
    let deadline = Instant::now() + step;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        got = lab.transcript(chat).unwrap_or_default();
        if got.iter().any(|a| a["_"] == "decryptedMessageActionTyping") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ok = got
        .iter()
        .any(|a| a["_"] == "decryptedMessageActionSetMessageTTL");
    out.say(json!({"transcript": got, "chat_id": chat}), || {
        let lines: Vec<String> = got
            .iter()
            .enumerate()
            .map(|(i, a)| format!("  {:>2}. {a}", i + 1))
            .collect();
        format!(
            "Bob's decrypted view of chat {chat} (tgsim's transcript, {} actions):\n{}",
            got.len(),
            lines.join("\n")
        )
    });
    ok
}
