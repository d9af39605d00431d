#!/usr/bin/env python3
"""Keep a live list of tgsecretd's secret chats, the way a desktop app's chat list does.

Every secret chat is an object ``/io/github/tgsecretd/chat/<id>`` with the interface
``io.github.tgsecretd.SecretChat1`` (its properties: ``ChatId``, ``PeerUserId``, ``State``,
``TtlSeconds``, ``Pending``...). Their parent, ``/io/github/tgsecretd/chat``, serves the standard
``org.freedesktop.DBus.ObjectManager``, so a client needs no daemon-specific listing call:

1. it subscribes first: ``InterfacesAdded`` / ``InterfacesRemoved`` of the ObjectManager,
   ``PropertiesChanged`` of every object under it (one match rule with ``path_namespace``), and
   the bus's ``NameOwnerChanged`` of ``io.github.tgsecretd``;
2. then reads ``GetManagedObjects``: the chat objects with all their properties (each chat's
   values are one stored state). The daemon exports every chat of a store of up to 1,000 at
   start; beyond, a chat's object comes at its first change, ``GetChat`` or ``ListChats``, and
   then ``InterfacesAdded`` says so;
3. then replays, in order, the signals that came while it waited for that reply (a signal can
   arrive before the reply and still be newer than what the reply holds, so none is dropped:
   applied in order they end in the daemon's latest state), and applies the later ones as they
   come;
4. when the daemon goes away, its chats leave the list; when it is back (a restart, or D-Bus
   activation), the list is read again: a restarted daemon exports its objects before it takes
   the bus name, so their ``InterfacesAdded`` never reach a client that matches on the name.

Output, one JSON document per line (keys sorted)::

    {"event": "chat", "path": "/io/...", "properties": {"ChatId": 12345, "State": "ready", ...}}
    {"event": "listening"}                                          # the first list is done
    {"event": "added", "path": "/io/...", "properties": {...}}      # a chat object appeared
    {"changed": {"State": "ready", ...}, "event": "changed", "path": "/io/..."}
    {"event": "removed", "path": "/io/..."}                         # ForgetChat removed it
    {"event": "daemon", "owner": ""}                                # the daemon went away
    {"event": "daemon", "owner": ":1.42"}                           # it is back: listed again
    {"chats": {"12345": "ready", ...}, "event": "list"}             # the list at the end

The watch ends after ``--watch`` seconds, or at Ctrl-C / SIGTERM; the list is printed either
way. Exit status: 0; 1 when the daemon cannot be reached or answers with an error; 2 for a bad
command line. Requires dbus-fast (``pip install dbus-fast``). Examples::

    chat_list.py                      # the chats now
    chat_list.py --watch 3600         # and an hour of changes (Ctrl-C ends it)
    chat_list.py --address unix:path=/tmp/dbus-XXXX --watch 5
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from send_service import (
    BUS_NAME, CHAT_INTERFACE, MANAGER_PATH, add_match, call, connect, emit, plain, run_main,
)

CHATS_PATH = f"{MANAGER_PATH}/chat"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"
DBUS = "org.freedesktop.DBus"


def is_owner_change(msg: Message) -> bool:
    return (
        msg.interface == DBUS
        and msg.member == "NameOwnerChanged"
        and bool(msg.body)
        and msg.body[0] == BUS_NAME
    )


class ChatList:
    """The chats by object path: their SecretChat1 properties, kept up to date."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.chats: dict[str, dict[str, Any]] = {}
        # Signals kept while a listing is awaited (replayed once it is applied); None: apply
        # them as they come.
        self.kept: list[Message] | None = []
        self.tasks: set[asyncio.Task[None]] = set()

    def on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if is_owner_change(msg):
            _name, _old, new = msg.body
            emit({"event": "daemon", "owner": new})
            self.vanish()
            if new:
                self.kept = []
                task = asyncio.get_running_loop().create_task(self.relist())
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            return
        if self.kept is not None:
            self.kept.append(msg)
        else:
            self.apply(msg)

    def apply(self, msg: Message) -> None:
        if msg.path == CHATS_PATH and msg.interface == OBJECT_MANAGER:
            if msg.member == "InterfacesAdded":
                path, interfaces = msg.body
                if CHAT_INTERFACE in interfaces:
                    self.put(path, plain(interfaces[CHAT_INTERFACE]))
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

    def put(self, path: str, props: dict[str, Any]) -> None:
        """A chat's properties as a whole: added if new, else changed."""
        if path in self.chats:
            self.chats[path].update(props)
            emit({"event": "changed", "path": path, "changed": props})
        else:
            self.chats[path] = props
            emit({"event": "added", "path": path, "properties": props})

    def vanish(self) -> None:
        """The daemon went away (or was replaced): its objects with it."""
        for path in sorted(self.chats):
            emit({"event": "removed", "path": path})
        self.chats.clear()

    async def listing(self) -> dict[str, dict[str, Any]]:
        (objects,) = await call(self.bus, Message(
            destination=BUS_NAME, path=CHATS_PATH, interface=OBJECT_MANAGER,
            member="GetManagedObjects",
        ))
        return {
            path: plain(interfaces[CHAT_INTERFACE])
            for path, interfaces in sorted(objects.items())
            if CHAT_INTERFACE in interfaces
        }

    def replay(self) -> None:
        kept, self.kept = self.kept or [], None
        for msg in kept:
            self.apply(msg)

    async def first(self) -> None:
        for path, props in (await self.listing()).items():
            self.chats[path] = props
            emit({"event": "chat", "path": path, "properties": props})
        self.replay()

    async def relist(self) -> None:
        try:
            listed = await self.listing()
        except (DBusError, OSError) as e:  # the daemon went again, or failed: say so, go on
            emit({"event": "error", "message": str(e)})
            listed = {}
        for path, props in listed.items():
            self.put(path, props)
        self.replay()

    def summary(self) -> dict[str, str]:
        return {
            str(props.get("ChatId", path)): props.get("State", "?")
            for path, props in sorted(self.chats.items())
        }


async def run(args: argparse.Namespace) -> int:
    bus = await connect(args.address)
    chats = ChatList(bus)
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
    await add_match(
        bus,
        f"type='signal',sender='{DBUS}',interface='{DBUS}',member='NameOwnerChanged',"
        f"arg0='{BUS_NAME}'",
    )

    # 2. and 3. The chats, then what happened meanwhile.
    await chats.first()
    emit({"event": "listening"})

    # 4. Until the time is up, or Ctrl-C / SIGTERM.
    if args.watch > 0:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await asyncio.wait_for(stop.wait(), args.watch)
        except asyncio.TimeoutError:
            pass
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
                   help="seconds to follow the chats' changes after the list; Ctrl-C or "
                   "SIGTERM ends it sooner (default: 0)")
    return run_main(run, p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
