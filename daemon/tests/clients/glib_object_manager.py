"""GLib's own ObjectManager client (Gio.DBusObjectManagerClient) on tgsecretd's chats.

Run by daemon/tests/e2e_clients.rs with Debian's Python and PyGObject (package python3-gi):
    /usr/bin/python3 glib_object_manager.py BUS_ADDRESS
Prints JSON lines: each chat GLib lists ({"event": "chat", "path", "chat_id", "state"}), then
{"event": "listening"}, then what GLib reports: "added" (object-added, with the proxy's cached
ChatId and State) and "changed" (interface-proxy-properties-changed, the State if it changed).
Exits 0 once a chat that was not listed at first became ready, 1 after 30 s without that.
"""

import json
import sys

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

BUS_NAME = "io.github.tgsecretd"
CHATS_PATH = "/io/github/tgsecretd/chat"
CHAT_INTERFACE = "io.github.tgsecretd.SecretChat1"


def emit(doc):
    print(json.dumps(doc, sort_keys=True), flush=True)


def cached(proxy, name):
    v = proxy.get_cached_property(name)
    return None if v is None else v.unpack()


def main():
    conn = Gio.DBusConnection.new_for_address_sync(
        sys.argv[1],
        Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
        | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
        None,
        None,
    )
    manager = Gio.DBusObjectManagerClient.new_sync(
        conn, Gio.DBusObjectManagerClientFlags.NONE, BUS_NAME, CHATS_PATH, None, None, None
    )
    listed = set()
    for obj in manager.get_objects():
        proxy = obj.get_interface(CHAT_INTERFACE)
        listed.add(obj.get_object_path())
        emit({"event": "chat", "path": obj.get_object_path(),
              "chat_id": cached(proxy, "ChatId"), "state": cached(proxy, "State")})
    emit({"event": "listening"})

    loop = GLib.MainLoop()
    status = [1]

    def added(_manager, obj):
        proxy = obj.get_interface(CHAT_INTERFACE)
        emit({"event": "added", "path": obj.get_object_path(),
              "chat_id": cached(proxy, "ChatId"), "state": cached(proxy, "State")})

    def changed(_manager, obj, _proxy, changed_properties, _invalidated):
        state = changed_properties.unpack().get("State")
        emit({"event": "changed", "path": obj.get_object_path(), "state": state})
        if state == "ready" and obj.get_object_path() not in listed:
            status[0] = 0
            loop.quit()

    manager.connect("object-added", added)
    manager.connect("interface-proxy-properties-changed", changed)
    GLib.timeout_add_seconds(30, loop.quit)
    loop.run()
    return status[0]


if __name__ == "__main__":
    sys.exit(main())
