"""A Byzantine collaborator: a logged-in device that forges pushes against the servers.

It pulls the lists like any client, then every ``interval`` sends one forged push (through
a broker, to a server chosen by the attempt number) built from what it last saw:

* ``foreign-next``: an entry under a victim's next dot;
* ``foreign-seen``: another payload under a victim's dot that the servers hold;
* ``claim-max`` / ``claim-far``: a context claiming a victim's counter at 2**63 - 1, or
  far ahead; ``claim-near``: a victim's dot a little ahead (looks like lag: refused as
  ``behind``);
* ``own-jump``: an entry of its own far past its own counter;
* ``own-rewrite``: another payload under one of its own dots that every server's store
  holds (its ``honest`` renames put such dots there);
* ``oversized``: more new items than a list may hold; ``counter``: a quantity change of
  2**40; ``control``: an item name holding an escape sequence.

The runner's checkers then assert that nothing forged reached any server: every entry of
every server is one an honest edit (or the Byzantine's own honest rename) made, with its
payload, and no server's context claims a dot that no one issued.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from crdts._codec import MAX_INT
from reference_cluster.cores.authorship import kernel_of
from reference_cluster.errors import MalformedMessage
from reference_cluster.protocol.effects import Effect, Send
from reference_cluster.protocol.messages import ErrorReply, SyncReply, SyncRequest, decode

__all__ = ["FORGERIES", "ByzantineCore"]

FORGERIES = (
    "foreign-next",
    "foreign-seen",
    "claim-max",
    "claim-far",
    "claim-near",
    "own-jump",
    "own-rewrite",
    "oversized",
    "counter",
    "control",
    "honest",
)

Dot = tuple[str, int]


def _top(state: Any, replica: str) -> int:
    kernel = kernel_of(state)
    if kernel is None:
        return 0
    ctx = kernel._ctx
    cloud = ctx._cloud.get(replica)
    top = ctx._vv.get(replica, 0)
    return max(top, *cloud) if cloud else top


class ByzantineCore:
    """A device that tries every forgery (see the module notes) and never retries.

    Args:
        replica: its replica id.
        doc_type: the list type (the shopping list: forgeries are encoded by hand).
        brokers: the brokers' addresses.
        list_ids: the lists it attacks.
        victims: honest replicas whose dots it forges.
        servers: how many servers there are (attempts spread the forgeries among them).
        rng: its choices.
        held_everywhere: ``held_everywhere(list_id, dot)`` tells whether every server's
            durable store holds ``dot`` (for ``own-rewrite``, which must hit a server that
            has seen the dot: a rewrite racing the original to two servers is the
            equivocation that the servers do not detect, see docs).
        max_items: the servers' item quota (``oversized`` pushes one more).
        interval: seconds between forgeries.
        until: no forgery after this time.
    """

    def __init__(
        self,
        replica: str,
        doc_type: type[Any],
        *,
        brokers: Sequence[str],
        list_ids: Sequence[str],
        victims: Sequence[str],
        servers: int,
        rng: random.Random,
        held_everywhere: Callable[[str, Dot], bool],
        max_items: int,
        interval: float = 0.6,
        until: float = float("inf"),
    ) -> None:
        self.replica = replica
        self.doc_type = doc_type
        self.brokers = tuple(brokers)
        self.list_ids = tuple(list_ids)
        self.victims = tuple(victims)
        self.servers = servers
        self._rng = rng
        self._held_everywhere = held_everywhere
        self.max_items = max_items
        self.interval = interval
        self.until = until
        self.views: dict[str, Any] = {k: doc_type() for k in list_ids}
        self.honest: dict[tuple[str, Dot], Any] = {}
        """(list id, dot) -> payload of every honest rename it pushed."""
        self.forged: list[tuple[str, str, Mapping[str, Any]]] = []
        """(kind, list id, encoded delta) of every forgery sent."""
        self.refusals: dict[str, int] = {}
        self._own_top: dict[str, int] = dict.fromkeys(list_ids, 0)
        self._requests = 0
        self._at: float | None = None

    busy = False

    def start(self, now: float) -> list[Effect]:
        self._at = now + self.interval
        return [self._send(k, None) for k in self.list_ids]

    def next_deadline(self) -> float | None:
        return self._at

    def on_timer(self, now: float) -> list[Effect]:
        if self._at is None or self._at > now:
            return []
        if now >= self.until:
            self._at = None
            return []
        self._at = now + self.interval
        list_id = self._rng.choice(self.list_ids)
        kind = self._rng.choice(FORGERIES)
        out = [self._send(list_id, None)]
        delta = self._forge(kind, list_id)
        if delta is not None:
            if kind != "honest":
                self.forged.append((kind, list_id, delta))
            out.append(self._send(list_id, delta))
        return out

    def receive(self, peer: str, data: bytes, now: float) -> list[Effect]:
        try:
            msg = decode(data)
        except MalformedMessage:
            return []
        if isinstance(msg, SyncReply) and msg.delta is not None and msg.list_id in self.views:
            try:
                self.views[msg.list_id].join(self.doc_type.from_dict(msg.delta))
            except (ValueError, TypeError):
                return []
        elif isinstance(msg, ErrorReply):
            self.refusals[msg.code] = self.refusals.get(msg.code, 0) + 1
        return []

    # -- forging --------------------------------------------------------------------------

    def _send(self, list_id: str, delta: Mapping[str, Any] | None) -> Effect:
        self._requests += 1
        request = SyncRequest(
            request_id=f"z.{self._requests}",
            list_id=list_id,
            replica=self.replica,
            attempt=self._rng.randrange(self.servers),
            context=None,
            delta=delta,
        )
        return Send(self._rng.choice(self.brokers), request)

    def _own(self, list_id: str) -> int:
        """A fresh counter of its own (never reused, so its honest edits never equivocate)."""
        top = max(self._own_top[list_id], _top(self.views[list_id], self.replica)) + 1
        self._own_top[list_id] = top
        return top

    def _forge(self, kind: str, list_id: str) -> dict[str, Any] | None:
        view = self.views[list_id]
        victim = self._rng.choice(self.victims)
        me = self.replica
        if kind == "foreign-next":
            return _delta([[victim, _top(view, victim) + 1, _item("forged", 1)]])
        if kind == "foreign-seen":
            kernel = kernel_of(view)
            held = (
                [] if kernel is None else sorted(d for d in kernel._entries if d[0] in self.victims)
            )
            if not held:
                return None
            r, c = self._rng.choice(held)
            return _delta([[r, c, _item("forged", 7)]])
        if kind == "claim-max":
            return _delta([], vv={victim: MAX_INT})
        if kind == "claim-far":
            return _delta([], cloud=[[victim, _top(view, victim) + 2**21]])
        if kind == "claim-near":
            # Near enough to look like lag, far enough that the victim never issues it
            # in a run: a claim of a dot a server has seen would be a legitimate removal.
            return _delta([], cloud=[[victim, _top(view, victim) + 1000]])
        if kind == "own-jump":
            return _delta([[me, self._own(list_id) + 2**21, _item("forged", 1)]])
        if kind == "own-rewrite":
            mine = sorted(
                d for (k, d) in self.honest if k == list_id and self._held_everywhere(k, d)
            )
            if not mine:
                return None
            r, c = self._rng.choice(mine)
            return _delta([[r, c, ["name", "forged"]]])
        if kind == "oversized":
            first = self._own(list_id)
            entries = [[me, first + i, _item(f"forged {i}", 1)] for i in range(self.max_items + 1)]
            self._own_top[list_id] = first + self.max_items
            return _delta(entries)
        if kind == "counter":
            return _delta([[me, self._own(list_id), ["items", ["count-apples", ["add", 2**40]]]]])
        if kind == "control":
            return _delta([[me, self._own(list_id), _item("forged\x1b[2J", 1)]])
        # honest: a rename of the list, a dot of its own that the servers accept.
        dot = (me, self._own(list_id))
        payload = ("name", f"z{dot[1]}")
        self.honest[(list_id, dot)] = payload
        return _delta([[me, dot[1], list(payload)]])


def _item(name: str, quantity: int) -> list[Any]:
    return ["items", [name, ["set", quantity]]]


def _delta(
    entries: list[list[Any]], vv: dict[str, int] | None = None, cloud: Sequence[list[Any]] = ()
) -> dict[str, Any]:
    dots = [[r, c] for r, c, _ in entries]
    return {
        "type": "ShoppingList",
        "v": 1,
        "ctx": {"vv": dict(vv or {}), "cloud": sorted([*dots, *cloud])},
        "entries": sorted(entries, key=lambda e: (e[0], e[1])),
    }
