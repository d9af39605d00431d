#!/usr/bin/env python3
"""Send a secret-chat service action through tgsecretd, the way a desktop app would.

tgsecretd serves Telegram secret chats on the session bus as ``io.github.tgsecretd``. A send
follows the xdg-desktop-portal Request convention: ``SendServiceAction`` returns at once with
the object path of a *request*, and that request emits exactly one
``io.github.tgsecretd.Request1.Response(u code, a{sv} results)`` signal once the message went
out (code 0), was cancelled (1) or failed (2, with ``error`` and ``message`` in the results).

The request's path can be predicted before the call::

    /io/github/tgsecretd/request/<SENDER>/<TOKEN>

where SENDER is our unique bus name without the leading ``:`` and every other character that is
not a letter or a digit written ``_`` (``:1.42`` -> ``1_42``), and TOKEN is the ``handle_token``
option we pass. So this program subscribes to the Response *before* calling: a Response can
never slip by between the call returning and the subscription.

It also listens to the chat's ``io.github.tgsecretd.SecretChat1`` signals (what the peer does:
``TtlChanged``, ``Typing``, ``MessagesRead``, ``ServiceAction``...) for a few seconds after the
Response, and prints everything as JSON, one document per line::

    {"event": "response", "handle": "/io/...", "code": 0, "results": {"date": ..., ...}}
    {"event": "signal", "member": "TtlChanged", "path": "/io/...", "args": [30]}

Exit status: 0 if the Response says sent (code 0); 1 otherwise (a D-Bus error such as
``io.github.tgsecretd.Error.NoSuchChat``, a cancelled or failed request, no Response in time);
2 for a bad command line (argparse's usage error).

Requires dbus-fast (``pip install dbus-fast``). Examples::

    send_service.py --chat 12345                       # SetMessageTTL, 30 s
    send_service.py --chat 12345 --ttl 86400 --notify  # through messages.sendEncrypted
    send_service.py --chat 12345 --action Typing --param action=s:sendMessageTypingAction
    send_service.py --chat 12345 --action ReadMessages --param random_ids=ax:11,12
    send_service.py --address unix:path=/run/user/1000/bus --chat 12345
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError, InterfaceNotFoundError

BUS_NAME = "io.github.tgsecretd"
MANAGER_PATH = "/io/github/tgsecretd"
MANAGER_INTERFACE = "io.github.tgsecretd.Manager1"
CHAT_INTERFACE = "io.github.tgsecretd.SecretChat1"
REQUEST_INTERFACE = "io.github.tgsecretd.Request1"

RESPONSE_CODES = {0: "sent", 1: "cancelled", 2: "failed"}


def request_path(unique_name: str, token: str) -> str:
    """The handle the daemon will return for our call with ``handle_token`` = token."""
    sender = "".join(
        c if c.isascii() and c.isalnum() else "_" for c in unique_name.lstrip(":")
    )
    return f"{MANAGER_PATH}/request/{sender}/{token}"


def chat_path(chat_id: int) -> str:
    """The chat's object path (a negative id is written ``_`` + its absolute value)."""
    return f"{MANAGER_PATH}/chat/{chat_id}" if chat_id >= 0 else f"{MANAGER_PATH}/chat/_{-chat_id}"


def plain(value: Any) -> Any:
    """D-Bus values (Variants, dicts, byte arrays) as JSON-friendly Python values."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    return value


def emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, sort_keys=True), flush=True)


PARAM_TYPES = {
    "i": int, "x": int, "u": int, "t": int,
    "s": str,
    "b": lambda s: s.lower() in ("1", "true", "yes"),
}


def parse_param(text: str) -> tuple[str, Variant]:
    """``name=SIG:value`` -> (name, Variant(SIG, value)); SIG one of i x u t s b ai ax."""
    try:
        name, rest = text.split("=", 1)
        sig, raw = rest.split(":", 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want NAME=SIG:VALUE, e.g. ttl_seconds=i:30")
    if sig in PARAM_TYPES:
        return name, Variant(sig, PARAM_TYPES[sig](raw))
    if sig in ("ai", "ax"):
        return name, Variant(sig, [int(v) for v in raw.split(",") if v])
    raise argparse.ArgumentTypeError(f"{text!r}: signature {sig!r} is not one of i x u t s b ai ax")


async def call(bus: MessageBus, msg: Message) -> list[Any]:
    """A method call's reply body; a D-Bus error is raised."""
    reply = await bus.call(msg)
    if reply is None:
        return []
    if reply.message_type == MessageType.ERROR:
        raise DBusError(reply.error_name, str(reply.body[0] if reply.body else ""), reply)
    return reply.body


async def add_match(bus: MessageBus, rule: str) -> None:
    """Asks the bus for the signals that match `rule`."""
    await call(bus, Message(
        destination="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        member="AddMatch",
        signature="s",
        body=[rule],
    ))


async def connect(address: str | None) -> MessageBus:
    """The bus at `address`, else the session bus."""
    if address:
        return await MessageBus(bus_address=address).connect()
    return await MessageBus(bus_type=BusType.SESSION).connect()


def run_main(run: Any, args: argparse.Namespace) -> int:
    """Runs `run(args)`; a bus that cannot be reached or a D-Bus error is exit status 1."""
    try:
        return asyncio.run(run(args))
    except (OSError, DBusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


async def watch_response(bus: MessageBus, handle: str) -> None:
    """Asks the bus for the Response signal of `handle` (a match rule)."""
    await add_match(
        bus,
        f"type='signal',sender='{BUS_NAME}',interface='{REQUEST_INTERFACE}',"
        f"member='Response',path='{handle}'",
    )


async def run(args: argparse.Namespace) -> int:
    bus = await connect(args.address)

    token = args.token or f"py{os.getpid()}_{secrets.token_hex(4)}"
    handle = request_path(bus.unique_name, token)
    loop = asyncio.get_running_loop()
    response: asyncio.Future[list[Any]] = loop.create_future()

    # 1. The Response: a match rule for our predicted handle, installed before the call.
    #    (Messages on one connection are handled in order, so the bus has the rule before the
    #    daemon even sees our call.)
    def on_message(msg: Message) -> None:
        if (
            msg.message_type == MessageType.SIGNAL
            and msg.interface == REQUEST_INTERFACE
            and msg.member == "Response"
            and msg.path == handle
            and not response.done()
        ):
            response.set_result(msg.body)

    bus.add_message_handler(on_message)
    await watch_response(bus, handle)

    # 2. The chat's signals, through a proxy built from the daemon's introspection data. (No
    #    chat object: the call below gets the daemon's typed error, NoSuchChat.)
    path = chat_path(args.chat)
    try:
        chat_obj = bus.get_proxy_object(BUS_NAME, path, await bus.introspect(BUS_NAME, path))
        chat = chat_obj.get_interface(CHAT_INTERFACE)
    except (DBusError, InterfaceNotFoundError):
        chat = None

    def on_signal(member: str):
        return lambda *a: emit({"event": "signal", "member": member, "path": path, "args": plain(list(a))})

    for member in ("TtlChanged", "Typing", "MessagesRead", "MessagesDeleted",
                   "ScreenshotTaken", "HistoryFlushed", "ServiceAction", "Closed"):
        if chat is not None:
            snake = "".join("_" + c.lower() if c.isupper() else c for c in member).lstrip("_")
            getattr(chat, f"on_{snake}")(on_signal(member))

    # 3. The call.
    manager = bus.get_proxy_object(
        BUS_NAME, MANAGER_PATH, await bus.introspect(BUS_NAME, MANAGER_PATH)
    ).get_interface(MANAGER_INTERFACE)
    params = dict(args.param or [])
    if args.action.lower().removeprefix("decryptedmessageaction") == "setmessagettl":
        params.setdefault("ttl_seconds", Variant("i", args.ttl))
    options = {"handle_token": Variant("s", token)}
    if args.notify:
        options["notify"] = Variant("b", True)
    if args.random_id is not None:
        options["random_id"] = Variant("x", args.random_id)
    try:
        returned = await manager.call_send_service_action(args.chat, args.action, params, options)
    except DBusError as e:
        print(f"error: {e.type}: {e.text}", file=sys.stderr)
        return 1
    if returned != handle:
        # A retry with the same random_id returns the first request's handle (whose Response
        # may have gone out already: then ask GetResult).
        handle = returned
        await watch_response(bus, handle)
        code, results = await manager.call_get_result(handle)
        if code != 3 and not response.done():  # 3: still pending
            response.set_result([code, results])

    # 4. Its one Response.
    try:
        code, results = await asyncio.wait_for(response, args.timeout)
    except asyncio.TimeoutError:
        print(f"error: no Response on {handle} within {args.timeout} s", file=sys.stderr)
        return 1
    emit({
        "event": "response",
        "handle": handle,
        "code": code,
        "status": RESPONSE_CODES.get(code, "unknown"),
        "results": plain(results),
    })

    # 5. What the peer does in the next few seconds.
    if args.listen > 0:
        await asyncio.sleep(args.listen)
    bus.disconnect()
    return 0 if code == 0 else 1


def main() -> int:
    p = argparse.ArgumentParser(
        description="Send a service action to a secret chat through tgsecretd (D-Bus), "
        "wait for its Response and print it, with the chat's signals, as JSON lines.",
    )
    p.add_argument("--address", help="D-Bus address (default: the session bus)")
    p.add_argument("--chat", type=int, required=True, help="secret chat id")
    p.add_argument("--action", default="SetMessageTTL",
                   help="TL name of the action, full or short (default: SetMessageTTL)")
    p.add_argument("--ttl", type=int, default=30, help="ttl_seconds of SetMessageTTL (default: 30)")
    p.add_argument("--param", type=parse_param, action="append", metavar="NAME=SIG:VALUE",
                   help="an action field, e.g. random_ids=ax:1,2 (repeatable)")
    p.add_argument("--token", help="handle_token (default: a fresh one)")
    p.add_argument("--random-id", type=int, help="random_id (a retry with the same one is idempotent)")
    p.add_argument("--notify", action="store_true", help="send through messages.sendEncrypted")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for the Response")
    p.add_argument("--listen", type=float, default=3,
                   help="seconds to print the chat's signals after the Response (default: 3)")
    return run_main(run, p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
