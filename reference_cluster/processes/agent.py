"""The client agent (``python -m reference_cluster.processes.agent``): a client process that
tests and the demo drive, one JSON command a line on its standard input.

The agent keeps a client running and syncing in the background, and takes one JSON
command per line on standard input, answering each with one JSON line on standard output
(after its ``READY`` line). Commands::

    {"op": "signup" | "login", "name": N, "password": P}
    {"op": "create", "name": N}                -> {"list_id": ...}
    {"op": "open", "list": ID}
    {"op": "share", "list": ID, "users": [N, ...]}  -> {"owner": N, "members": [...]}
    {"op": "edit", "list": ID, "action": A, ...}   A: add (item, qty), change (item, by),
                                                   set (item, qty), buy, unbuy, remove
                                                   (item), rename (name), delete;
                                                   "wait": true waits for the ack;
                                                   "delta": true returns the edit's delta
                                                   -> {"seq", "queued", "acked", "ms",
                                                   "delta"}
    {"op": "sync", "timeout": S}               -> {"synced": bool, "failed": {...}}
    {"op": "state"}                            -> {"lists": {ID: {"digest", "value",
                                                   "queued", "acked_through"}}, "replica": ...}
                                                   ("states": true adds each list's
                                                   encoded "state")
    {"op": "online", "value": false}           (drop every message: offline)
    {"op": "quit"}

Every answer has ``"ok"`` and echoes the command's ``"id"``; a bad command gets
``{"ok": false, "error": ...}`` and the agent goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from reference_cluster.cores.client import ClientConfig
from reference_cluster.errors import ClusterError
from reference_cluster.processes.client import Client, Mutate
from reference_cluster.processes.config import (
    StopSignal,
    add_broker_key_flags,
    add_common_flags,
    add_seconds_flag,
    broker_key_from_args,
    check_endpoint,
    env,
    env_endpoints,
    local_layout,
    print_ready,
    setup_logging,
)
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.client_store import ClientStore

__all__ = ["Agent", "main", "mutator"]

# The longest one step of the loop waits for input before the client runs its timers.
_MAX_WAIT = 1.0


# -- edits by name ------------------------------------------------------------------------


def mutator(action: str, args: Mapping[str, Any]) -> Mutate:
    """The mutation an edit command names (the agent's and the command line's).

    Raises:
        ValueError: an unknown action or a missing argument.
    """

    def need(key: str) -> Any:
        if key not in args:
            raise ValueError(f"edit {action!r} needs {key!r}")
        return args[key]

    if action == "add":
        item, qty = need("item"), args.get("qty", 1)
        return lambda s, r: s.add_item(r, item, qty)
    if action == "change":
        item, by = need("item"), need("by")
        return lambda s, r: s.change_quantity(r, item, by)
    if action == "set":
        item, qty = need("item"), need("qty")
        return lambda s, r: s.set_quantity(r, item, qty)
    if action in ("buy", "unbuy"):
        item = need("item")
        return lambda s, r: s.mark_bought(r, item, action == "buy")
    if action == "remove":
        item = need("item")
        return lambda s, r: s.remove_item(r, item)
    if action == "rename":
        name = need("name")
        return lambda s, r: s.rename(r, name)
    if action == "delete":
        return lambda s, r: s.delete(r)
    raise ValueError(f"unknown edit {action!r}")


# -- the agent ----------------------------------------------------------------------------


class Agent:
    """Runs JSON commands against a :class:`Client` (see the module notes)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.quit = False

    def command(self, cmd: Mapping[str, Any]) -> dict[str, Any]:
        """Run one command; return the answer's fields (raises on a bad command)."""
        op = cmd.get("op")
        c = self.client
        if op in ("signup", "login"):
            fn = c.sign_up if op == "signup" else c.log_in
            session = fn(str(cmd.get("name")), str(cmd.get("password")))
            return {"user_id": session.user_id, "name": session.user_name}
        if op == "create":
            return {"list_id": c.create(str(cmd.get("name")))}
        if op == "open":
            c.open_list(str(cmd.get("list")))
            return {}
        if op == "share":
            users = cmd.get("users")
            if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
                raise ValueError("share: 'users' is a list of user names")
            reply = c.members(str(cmd.get("list")), add=users)
            return {"owner": reply.owner, "members": list(reply.members)}
        if op == "edit":
            list_id = str(cmd.get("list"))
            start = time.monotonic()
            delta = c.edit(list_id, mutator(str(cmd.get("action")), cmd))
            # The edit's sequence number: it is acknowledged once acked_through reaches it.
            answer: dict[str, Any] = {"seq": c.core.next_seq(list_id) - 1}
            if cmd.get("delta"):
                answer["delta"] = delta.to_dict()
            if cmd.get("wait"):
                timeout = float(cmd.get("timeout", 10.0))
                answer["acked"] = c.run(lambda: c.queued(list_id) == 0, timeout)
                answer["ms"] = round((time.monotonic() - start) * 1000, 3)
            return {**answer, "queued": c.queued(list_id)}
        if op == "sync":
            outcome = c.sync(timeout=float(cmd.get("timeout", 10.0)))
            return {"synced": outcome.ok, "failed": outcome.failed}
        if op == "state":
            lists = {}
            for list_id in c.list_ids():
                state = c.state(list_id)
                assert state is not None
                entry: dict[str, Any] = {
                    "digest": state.digest(),
                    "value": state.value,
                    "queued": c.queued(list_id),
                    # the queue is always the newest edits: everything before it is acked
                    "acked_through": c.core.next_seq(list_id) - 1 - c.queued(list_id),
                }
                if cmd.get("states"):
                    entry["state"] = state.to_dict()
                lists[list_id] = entry
            return {"replica": c.replica, "lists": lists}
        if op == "online":
            c.offline = not bool(cmd.get("value", True))
            return {"online": not c.offline}
        if op == "quit":
            self.quit = True
            return {}
        raise ValueError(f"unknown op {op!r}")

    def line(self, text: str) -> str:
        """Run one line of input; return the line to print (never raises for bad input)."""
        cmd: Any = None
        try:
            cmd = json.loads(text)
            if not isinstance(cmd, dict):
                raise ValueError("a command is a JSON object")
            answer = {"ok": True, **self.command(cmd)}
        except (ValueError, TypeError, ClusterError) as exc:
            answer = {"ok": False, "error": str(exc), "type": type(exc).__name__}
        if isinstance(cmd, dict) and "id" in cmd:
            answer["id"] = cmd["id"]
        return json.dumps(answer, sort_keys=True)


# -- the process --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    defaults = ClientConfig()
    parser = argparse.ArgumentParser(
        prog="python -m reference_cluster.processes.agent",
        description="A shopping-list client agent: syncs in the background and takes "
        "JSON commands, one per line, on standard input.",
    )
    parser.add_argument("--store", required=True, metavar="FILE", help="the device's store")
    parser.add_argument(
        "--broker",
        action="append",
        type=check_endpoint,
        metavar="ENDPOINT",
        help="a broker's front end, repeatable (SHOPLIST_BROKERS, comma-separated; "
        f"default {','.join(local_layout().frontends)})",
    )
    add_seconds_flag(
        parser,
        "--request-timeout",
        "SHOPLIST_REQUEST_TIMEOUT",
        defaults.request_timeout,
        "wait this long for one attempt",
    )
    add_seconds_flag(
        parser,
        "--sync-interval",
        "SHOPLIST_SYNC_INTERVAL",
        defaults.sync_interval,
        "sync every list this often",
    )
    parser.add_argument(
        "--name", default=env("SHOPLIST_CLIENT_NAME", "client"), help="name in the logs"
    )
    add_common_flags(parser)
    add_broker_key_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent until ``quit``, end of input, SIGTERM or SIGINT."""
    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.name)
    config = ClientConfig(request_timeout=args.request_timeout, sync_interval=args.sync_interval)
    try:
        brokers = args.broker or env_endpoints("SHOPLIST_BROKERS", local_layout().frontends)
        broker_key = broker_key_from_args(args, None)
        store: ClientStore[ShoppingList] = ClientStore(args.store, ShoppingList)
    except (ClusterError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    client = Client(
        store, brokers, broker_key=broker_key, config=config, heartbeat=args.zmq_heartbeat
    )
    agent = Agent(client)
    stop = StopSignal(watch_parent=args.watch_parent)
    stdin = sys.stdin.fileno()
    buf = b""
    try:
        client.connect_all()
        client.start_background()
        print_ready(role="client", name=args.name, pid=os.getpid(), replica=client.replica)
        while not agent.quit and not stop.check():
            ready = client.step(_MAX_WAIT, extra=(stdin, stop.fd))
            if stop.fd in ready:
                stop.drain()
            if stdin not in ready:
                continue
            chunk = os.read(stdin, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf and not agent.quit:
                line, _, buf = buf.partition(b"\n")
                if line.strip():
                    print(agent.line(line.decode("utf-8", "replace")), flush=True)
    finally:
        with contextlib.suppress(Exception):
            client.close()
        stop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
