"""The client agent's commands: what ``python -m reference_cluster.client`` does with
each line of its standard input.

The agent keeps a client running and syncing in the background, and takes one JSON
command per line on standard input, answering each with one JSON line on standard output
(after its ``READY`` line). Commands::

    {"op": "signup" | "login", "name": N, "password": P}
    {"op": "create", "name": N}                -> {"list_id": ...}
    {"op": "open", "list": ID}
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

import json
import time
from collections.abc import Mapping
from typing import Any

from reference_cluster.client import Client, Mutate
from reference_cluster.errors import ClusterError

__all__ = ["Agent", "mutator"]


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
