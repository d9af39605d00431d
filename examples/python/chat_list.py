#!/usr/bin/env python3
"""Keep a live list of tgsecretd's secret chats, the way a desktop app's chat list does.

Every secret chat is an object ``/io/github/tgsecretd/chat/<id>`` with the interface
``io.github.tgsecretd.SecretChat1`` (its properties: ``ChatId``, ``PeerUserId``, ``State``,
``TtlSeconds``, ``Pending``...). Their parent, ``/io/github/tgsecretd/chat``, serves the standard
``org.freedesktop.DBus.ObjectManager``, so a client needs no daemon-specific listing call:

1. it subscribes first: ``InterfacesAdded`` / ``InterfacesRemoved`` of the ObjectManager, and
   ``PropertiesChanged`` of every object under it (one match rule with ``path_namespace``);
2. then reads ``GetManagedObjects``: every chat object with all its properties (each chat's
   values are one stored state);
3. then applies the signals that arrive after that reply, as they come. (Signals that arrived
   before the reply are already part of it.)

Output, one JSON document per line::

    {"event": "chat", "path": "/io/...", "properties": {"ChatId": 12345, "State": "ready", ...}}
    {"event": "listening"}                                          # the initial list is done
    {"event": "added", "path": "/io/...", "properties": {...}}      # a chat object appeared
    {"event": "changed", "path": "/io/...", "changed": {"State": "ready", ...}}
    {"event": "removed", "path": "/io/..."}                         # ForgetChat removed it
    {"event": "list", "chats": {"12345": "ready", ...}}             # the list at the end

Exit status: 0; 1 when the daemon cannot be reached or answers with an error; 2 for a bad
command line. Requires dbus-fast (``pip install dbus-fast``). Examples::

    chat_list.py                      # the chats now
    chat_list.py --watch 60           # and a minute of changes
    chat_list.py --address unix:path=/tmp/dbus-XXXX --watch 5
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from dbus_fast import Message, MessageType

from send_service import (
    BUS_NAME, CHAT_INTERFACE, MANAGER_PATH, add_match, call, connect, emit, plain, run_main,
)

CHATS_PATH = f"{MANAGER_PATH}/chat"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"


class ChatList:
    """The chats by object path: their SecretChat1 properties, kept up to date."""

    def __init__(self) -> None:
        self.chats: dict[str, dict[str, Any]] = {}
        self.ready = False

    def on_message(self, msg: Message) -> None:
        if not self.ready or msg.message_type != MessageType.SIGNAL:
            return
        if msg.path == CHATS_PATH and msg.interface == OBJECT_MANAGER:
            if msg.member == "InterfacesAdded":
                path, interfaces = msg.body
                if CHAT_INTERFACE in interfaces:
                    props = plain(interfaces[CHAT_INTERFACE])
                    self.chats[path] = props
                    emit({"event": "added", "path": path, "properties": props})
            elif msg.member == "InterfacesRemoved":
                path, interfaces = msg.body
                if CHAT_INTERFACE in interfaces and self.chats.pop(path, None) is not None:
                    emit({"event": "removed", "path": path})
        elif msg.interface == PROPERTIES and msg.member == "PropertiesChanged":
            interface, changed, _invalidated = msg.body
            if interface == CHAT_INTERFACE and msg.path in self.chats:
                changed = plain(changed)
                self.chats[msg.path].update(changed)
                emit({"event": "changed", "path": msg.path, "changed": changed})

    def summary(self) -> dict[str, str]:
        return {
            str(props.get("ChatId", path)): props.get("State", "?")
            for path, props in sorted(self.chats.items())
        }


async def run(args: argparse.Namespace) -> int:
    bus = await connect(args.address)
    chats = ChatList()
    bus.add_message_handler(chats.on_message)

    # 1. Subscribe before reading, so no change falls between the list and the signals.
    await add_match(
        bus,
        f"type='signal',sender='{BUS_NAME}',path='{CHATS_PATH}',interface='{OBJECT_MANAGER}'",
    )
    await add_match(
        bus,
        f"type='signal',sender='{BUS_NAME}',path_namespace='{CHATS_PATH}',"
        f"interface='{PROPERTIES}',member='PropertiesChanged'",
    )

    # 2. Every chat object with its properties.
    (objects,) = await call(bus, Message(
        destination=BUS_NAME, path=CHATS_PATH, interface=OBJECT_MANAGER,
        member="GetManagedObjects",
    ))
    for path, interfaces in sorted(objects.items()):
        if CHAT_INTERFACE in interfaces:
            chats.chats[path] = plain(interfaces[CHAT_INTERFACE])
            emit({"event": "chat", "path": path, "properties": chats.chats[path]})

    # 3. The signals from now on (dbus-fast hands them to `on_message` in arrival order).
    chats.ready = True
    emit({"event": "listening"})
    if args.watch > 0:
        await asyncio.sleep(args.watch)
    emit({"event": "list", "chats": chats.summary()})
    bus.disconnect()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(
        description="List tgsecretd's secret chats through its ObjectManager and follow "
        "their changes, as JSON lines.",
    )
    p.add_argument("--address", help="D-Bus address (default: the session bus)")
    p.add_argument("--watch", type=float, default=0,
                   help="seconds to follow the chats' changes after the list (default: 0)")
    return run_main(run, p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
