//! Tests that need no daemon: the codec against the published vectors and round trips, the
//! `--param` typing, completions and the man page, usage errors (exit 2) and an unreachable bus
//! (exit 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clap::Parser;
use common::{chat_path_vectors, ok, ok_json, run, stderr, stdout};
use serde_json::json;
use tgsecret_cli::Cli;
use tgsecret_cli::cli::{Command, command};
use tgsecret_cli::params::{ParamValue, parse_param};

/// The README's 20 bytes: decryptedMessageService{random_id: 0, SetMessageTTL{30}}.
const TTL_TL: &str = "604116730000000000000000ec3a73a11e000000";

fn ttl_json() -> serde_json::Value {
    json!({"_": "decryptedMessageService", "random_id": 0,
           "action": {"_": "decryptedMessageActionSetMessageTTL", "ttl_seconds": 30}})
}

/// (key, [(payload, padding, data) of the creator's, then the acceptor's message]).
fn vectors() -> (String, Vec<(String, String, String)>) {
    let v = chat_path_vectors();
    let get = |label: &str, n: usize| {
        v.iter()
            .filter(|(l, _)| l == label)
            .nth(n)
            .map(|(_, b)| hex::encode(b))
            .unwrap_or_else(|| panic!("VECTORS.md F: {label} #{n}"))
    };
    let key = get("key", 0);
    assert_eq!(key.len(), 512);
    let msgs = (0..2)
        .map(|n| (get("payload", n), get("padding", n), get("data", n)))
        .collect();
    (key, msgs)
}

#[test]
fn encrypt_reproduces_the_published_chat_path_vectors() {
    let (key, msgs) = vectors();
    for ((payload, padding, data), role) in msgs.iter().zip(["creator", "acceptor"]) {
        let args = [
            "codec",
            "encrypt",
            "--key",
            &key,
            "--role",
            role,
            "--tl",
            payload,
            "--padding",
            padding,
        ];
        assert_eq!(ok(&args).trim(), data, "{role}");
        let back = ok(&["codec", "decrypt", "--key", &key, "--role", role, data]);
        assert_eq!(back.trim(), payload, "{role}");
    }
}

#[test]
fn decrypt_with_the_wrong_role_fails_with_exit_1() {
    let (key, msgs) = vectors();
    let (_, _, data) = &msgs[0];
    let o = run(&[
        "codec", "decrypt", "--key", &key, "--role", "acceptor", data,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("error: DecryptFailed:"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_vector_payloads_decode_as_layer_messages() {
    let (_, msgs) = vectors();
    let v = ok_json(&["--json", "codec", "tl-to-json", &msgs[0].0]);
    assert_eq!(v["_"], "decryptedMessageLayer");
    assert_eq!(v["layer"], 73);
    assert_eq!(v["out_seq_no"], 3);
    assert_eq!(v["message"]["random_id"], 0x0123_4567_89ab_cdef_i64);
    assert_eq!(v["message"]["action"]["ttl_seconds"], 30);
}

#[test]
fn random_padding_round_trips() {
    let (key, _) = vectors();
    let data = ok(&[
        "codec", "encrypt", "--key", &key, "--role", "acceptor", "--tl", TTL_TL,
    ]);
    let data = data.trim();
    assert!(
        data.starts_with("f9faba217fe7179c"),
        "the key's fingerprint: {data}"
    );
    let v = ok_json(&[
        "--json", "codec", "decrypt", "--key", &key, "--role", "acceptor", data,
    ]);
    assert_eq!(v["tl"], TTL_TL);
    assert_eq!(v["json"], ttl_json());
}

#[test]
fn tl_and_json_round_trip() {
    let tl = ok(&["codec", "json-to-tl", &ttl_json().to_string()]);
    assert_eq!(tl.trim(), TTL_TL);
    let back = ok_json(&["--json", "codec", "tl-to-json", TTL_TL]);
    assert_eq!(back, ttl_json());
    // Any object of the schema, and hex with spaces and 0x.
    let typing = json!({"_": "decryptedMessageActionTyping",
                        "action": {"_": "sendMessageUploadPhotoAction"}});
    let tl = ok(&["codec", "json-to-tl", &typing.to_string()]);
    let spaced = format!("0x{} {}", &tl.trim()[..8], &tl.trim()[8..]);
    assert_eq!(ok_json(&["--json", "codec", "tl-to-json", &spaced]), typing);
    // The library agrees with the binary, and checks that a message is a DecryptedMessage.
    let lib = tgsecret_cli::codec::decrypted_message_tl(&ttl_json()).unwrap();
    assert_eq!(hex::encode(lib), TTL_TL);
    assert!(tgsecret_cli::codec::decrypted_message_tl(&typing).is_err());
}

#[test]
fn codec_reads_stdin() {
    use std::io::Write;
    let mut child = std::process::Command::new(common::exe())
        .args(["codec", "tl-to-json", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{TTL_TL}\n").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, ttl_json());
}

#[test]
fn params_are_typed_from_their_text() {
    let t = |s: &str| parse_param(s).unwrap().value;
    assert_eq!(t("ttl_seconds=30"), ParamValue::Int(30));
    assert_eq!(t("exchange_id=-5"), ParamValue::Int(-5));
    assert_eq!(t("random_ids=1,2,-3"), ParamValue::Ints(vec![1, 2, -3]));
    assert_eq!(t("random_ids=7,"), ParamValue::Ints(vec![7]));
    assert_eq!(t("silent=true"), ParamValue::Bool(true));
    assert_eq!(t("silent=false"), ParamValue::Bool(false));
    assert_eq!(
        t("action=sendMessageTypingAction"),
        ParamValue::Str("sendMessageTypingAction".into())
    );
    assert_eq!(t("g_a=0x0102"), ParamValue::Str("0x0102".into()));
    assert_eq!(t("text=a=b"), ParamValue::Str("a=b".into()));
    assert_eq!(t("x="), ParamValue::Str(String::new()));
    assert_eq!(parse_param("k=v").unwrap().key, "k");
}

#[test]
fn explicit_json_params() {
    let t = |s: &str| parse_param(s).unwrap().value;
    assert_eq!(t("n:=5"), ParamValue::Int(5));
    assert_eq!(t("ids:=[5]"), ParamValue::Ints(vec![5]));
    assert_eq!(t("ids:=[]"), ParamValue::Ints(vec![]));
    assert_eq!(t("s:=\"5\""), ParamValue::Str("5".into()));
    assert_eq!(t("d:=1.5"), ParamValue::Double(1.5));
    assert_eq!(t("b:=true"), ParamValue::Bool(true));
    assert_eq!(
        t("l:=[\"a\",\"b\"]"),
        ParamValue::Strs(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        t("action:={\"_\":\"sendMessageTypingAction\"}"),
        ParamValue::Object(vec![(
            "_".into(),
            ParamValue::Str("sendMessageTypingAction".into())
        )])
    );
    assert_eq!(t("ids:=[5]").signature(), "ax");
    assert_eq!(t("action:={}").signature(), "a{sv}");
    for bad in ["novalue", "=5", "k:=[1,\"a\"]", "k:=nul", "k:=null"] {
        assert!(parse_param(bad).is_err(), "{bad}");
    }
}

#[test]
fn send_service_parses_its_params_and_alias() {
    let cli = Cli::try_parse_from([
        "tgsecret",
        "send-service",
        "_7",
        "SetMessageTTL",
        "--param",
        "ttl_seconds=30",
        "--param",
        "random_ids=1,2",
        "--wait",
        "--timeout",
        "5",
    ]);
    // `_7` is not a chat id, nor a path; a path and a negative id are.
    assert!(cli.is_err());
    for chat in ["/io/github/tgsecretd/chat/_7", "-7"] {
        let cli = Cli::try_parse_from([
            "tgsecret",
            "send-service",
            chat,
            "SetMessageTTL",
            "--param",
            "ttl_seconds=30",
            "--param",
            "random_ids=1,2",
            "--wait",
            "--timeout",
            "5",
        ])
        .unwrap();
        let Command::SendService(a) = cli.command else {
            panic!("not send-service");
        };
        assert_eq!(a.chat, -7);
        assert_eq!(a.params[0].value, ParamValue::Int(30));
        assert_eq!(a.params[1].value, ParamValue::Ints(vec![1, 2]));
        assert!(a.wait.wait);
    }
    let cli =
        Cli::try_parse_from(["tgsecret", "send-service", "1", "--message-json", "{}"]).unwrap();
    let Command::SendService(a) = cli.command else {
        panic!("not send-service");
    };
    assert_eq!(a.json_message.as_deref(), Some("{}"));
    assert!(a.action.is_none());
}

fn subcommands() -> Vec<String> {
    command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect()
}

#[test]
fn completions_mention_every_subcommand() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ok(&["completions", shell]);
        assert!(out.len() > 500, "{shell}: {} bytes", out.len());
        for sub in subcommands() {
            assert!(out.contains(&sub), "{shell} completions lack {sub}");
        }
        // send-service's ACTION completes to the contract's action names (clap_complete
        // offers a positional's values in bash and zsh only).
        if ["bash", "zsh"].contains(&shell) {
            for action in ipc_proto::ACTIONS {
                assert!(out.contains(action), "{shell} completions lack {action}");
            }
        }
    }
    // Offered, not imposed: any case and the full TL name still parse.
    for action in [
        "setmessagettl",
        "decryptedMessageActionFlushHistory",
        "Dance",
    ] {
        assert!(
            tgsecret_cli::cli::Cli::try_parse_from(["tgsecret", "send-service", "1", action])
                .is_ok(),
            "{action}"
        );
    }
}

#[test]
fn man_page_mentions_every_subcommand() {
    // roff writes `-` as `\-`.
    let page = ok(&["man"]).replace("\\-", "-");
    assert!(
        page.starts_with(".ie") || page.contains(".TH"),
        "roff: {}",
        &page[..80]
    );
    for sub in subcommands() {
        assert!(page.contains(&sub), "man page lacks {sub}");
    }
    // NAME says what it is once; the exit codes are their own section, line by line.
    assert!(
        page.contains(".SH NAME\ntgsecret - The command-line client of tgsecretd"),
        "{page}"
    );
    assert!(!page.contains(".SH EXTRA"), "{page}");
    let exit = &page[page
        .find(".SH \"EXIT STATUS\"\n.nf\n")
        .expect("EXIT STATUS")..];
    for code in 0..=5 {
        assert!(
            exit.contains(&format!("\n  {code}  ")),
            "exit code {code}: {exit}"
        );
    }
    let chat = ok(&["man", "chat"]);
    for sub in ["show", "request", "accept", "decline", "discard", "forget"] {
        assert!(chat.contains(sub), "tgsecret-chat(1) lacks {sub}");
    }
    // Every page, nested ones too (`man chat request`), renders.
    let mut pages = vec![vec![]];
    for sub in command().get_subcommands() {
        pages.push(vec![sub.get_name().to_owned()]);
        for nested in sub.get_subcommands() {
            pages.push(vec![
                sub.get_name().to_owned(),
                nested.get_name().to_owned(),
            ]);
        }
    }
    assert!(pages.len() > 20, "{pages:?}");
    for p in &pages {
        let args: Vec<&str> = std::iter::once("man")
            .chain(p.iter().map(String::as_str))
            .collect();
        let page = ok(&args);
        let name = std::iter::once("tgsecret")
            .chain(p.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("-");
        assert!(page.contains(&format!(".TH {name} 1")), "{p:?}: {page}");
    }
    let examples = ok(&["man", "send-service"]);
    assert!(examples.contains(".SH \"EXAMPLES\"\n.nf\n"), "{examples}");
    assert_eq!(run(&["man", "nope"]).status.code(), Some(2));
    assert_eq!(run(&["man", "chat", "nope"]).status.code(), Some(2));
}

/// `tgsecret … | head`: when the reader of stdout has gone, the CLI ends quietly with status 0
/// (as a filter killed by SIGPIPE would stop), for text, JSON, man and completions output, and
/// never panics.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let cases: &[&[&str]] = &[
        &["man"],
        &["completions", "bash"],
        &["--json", "codec", "tl-to-json", TTL_TL],
        &["codec", "tl-to-json", TTL_TL],
    ];
    for args in cases {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = std::process::Command::new(common::exe())
            .args(*args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run tgsecret");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn help_documents_the_exit_codes() {
    let help = ok(&["--help"]);
    for line in [
        "0  success",
        "2  usage error",
        "3  the bus",
        "4  timeout",
        "5  the request was cancelled",
    ] {
        assert!(help.contains(line), "--help lacks {line:?}");
    }
}

#[test]
fn bad_usage_exits_2() {
    let cases: &[&[&str]] = &[
        &[],
        &["--bogus", "status"],
        &["send-service"],
        &["send-service", "1"],
        &["send-service", "x", "Noop"],
        &["send-service", "1", "Noop", "--param", "novalue"],
        &["send-service", "1", "Noop", "--json-message", "{}"],
        &["send-service", "1", "--json-message", "{}", "--tl", "00"],
        &["call", "messages.sendEncryptedService"],
        &["chat", "show"],
        &["completions", "tcsh"],
        &["codec", "tl-to-json", "zz"],
        &["codec", "json-to-tl", "{not json"],
        &[
            "codec", "encrypt", "--key", "00", "--role", "creator", "--tl", "00000000",
        ],
        &[
            "codec", "encrypt", "--key", "00", "--role", "king", "--tl", "00000000",
        ],
        // A malformed address is bad input, not an unreachable bus.
        &["--bus", "not-an-address", "status"],
        &["--bus", "unix:", "chats"],
    ];
    for args in cases {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty(), "{args:?}: no message");
    }
    // Bad local input is checked before the bus is reached.
    let o = run(&[
        "--bus",
        "unix:path=/nonexistent",
        "send-service",
        "1",
        "--json-message",
        "{\"_\":\"x\"}",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn an_unreachable_bus_exits_3_with_a_clear_message() {
    let bus = "unix:path=/nonexistent/tgsecret-test-bus";
    for args in [
        vec!["--bus", bus, "status"],
        vec!["--bus", bus, "chats"],
        vec![
            "--bus",
            bus,
            "send-service",
            "1",
            "SetMessageTTL",
            "--param",
            "ttl_seconds=1",
        ],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(3), "{args:?}");
        let e = stderr(&o);
        assert!(
            e.starts_with("error: Unreachable: cannot connect to bus"),
            "{e}"
        );
        assert!(stdout(&o).is_empty());
    }
    let o = run(&["--json", "--bus", bus, "status"]);
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["error"], "Unreachable");
    assert!(v["message"].as_str().unwrap().contains(bus));
}
