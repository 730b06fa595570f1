"""Write quorum and hinted handoff: what a server core remembers about them.

A client's push is acknowledged once ``need`` (W) servers hold it durably: the
coordinating holder, the other holders that confirmed it, and the servers that took it as
a hint for a holder that did not answer (sloppy quorum). :class:`Quorum` is one such push
on its way; :class:`Hints` is what a server keeps for other servers' holders. The rules
they serve are Rules 11 and 12 of :mod:`reference_cluster.cores.server`; nothing here
sends or stores anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic

import attrs

from crdts import DotContext
from reference_cluster.protocol.messages import EncodedState
from reference_cluster.protocol.replication import S

__all__ = [
    "DEFAULT_WRITE_QUORUM",
    "MAX_HINTS",
    "Hints",
    "PendingReply",
    "Quorum",
    "write_quorum",
]

DEFAULT_WRITE_QUORUM = 2
"""W when none is given: 2, or 1 where a list has a single holder."""

MAX_HINTS = 100_000
"""Most hints (list, holder) one server keeps; a hint beyond them is not taken (not
confirmed), so the coordinator asks the next server."""


def write_quorum(asked: int | None, copies: int) -> int:
    """W for lists held by ``copies`` servers: ``asked``, or the default.

    Raises:
        ValueError: ``asked`` is below 1 or above ``copies``.
    """
    if asked is None:
        return min(DEFAULT_WRITE_QUORUM, copies)
    if not 1 <= asked <= copies:
        raise ValueError(
            f"the write quorum must be between 1 and the {copies} servers that hold a list, "
            f"got {asked}"
        )
    return asked


@attrs.frozen
class PendingReply:
    """A client's sync waiting for its write to be durable: where its reply goes and
    what it is built from."""

    broker: str
    client: str
    request_id: str
    list_id: str
    context: DotContext | None
    since: str | None
    ask: int | None = None
    """The push's :class:`Quorum`, or None when one copy is enough."""


@attrs.define
class Quorum:
    """A client's push waiting until ``need`` servers hold it durably.

    Attributes:
        reply: the client's sync.
        list_id: the list.
        delta: the pushed delta, encoded once for every server asked.
        need: W.
        others: the list's other holders, asked at once.
        fallbacks: the servers after the holders in the list's preference order, asked
            in turn to keep a hint for a holder that did not confirm.
        hint_at: when the holders that have not confirmed are taken for silent and
            hints go out for them.
        deadline: when the push is given up (the client hears ``unavailable`` and
            retries; what was written stays written).
    """

    reply: PendingReply
    list_id: str
    delta: EncodedState
    need: int
    others: tuple[str, ...]
    fallbacks: tuple[str, ...]
    hint_at: float
    deadline: float
    local: bool = False
    """Whether the coordinator's own write is durable."""
    confirmed: set[str] = attrs.Factory(set)
    """Servers (holders or hint takers) that confirmed the delta durable."""
    covered: set[str] = attrs.Factory(set)
    """Holders that confirmed, or whose hint a taker confirmed."""
    stand_ins: dict[str, str] = attrs.Factory(dict)
    """Hint taker -> the holder it keeps the hint for."""
    used: int = 0
    """Fallbacks asked so far."""

    @property
    def copies(self) -> int:
        """How many servers hold the delta durably now."""
        return len(self.confirmed) + self.local

    @property
    def met(self) -> bool:
        """Whether the push may be acknowledged."""
        return self.local and self.copies >= self.need

    def confirm(self, server: str) -> bool:
        """``server`` confirmed; False if it was not asked for this push."""
        if server in self.others:
            self.covered.add(server)
        elif server in self.stand_ins:
            self.covered.add(self.stand_ins[server])
        else:
            return False
        self.confirmed.add(server)
        return True

    def short(self) -> int:
        """Copies still missing once the coordinator's write is durable."""
        return max(0, self.need - 1 - len(self.confirmed))

    def hints(self, silent: Mapping[str, float], count: int) -> list[tuple[str, str]]:
        """Take fallbacks for up to ``count`` holders that are not covered (silent ones
        first); ``(taker, holder)`` pairs to send a :class:`Hint` to."""
        waiting = [h for h in self.others if h not in self.covered]
        waiting.sort(key=lambda h: h not in silent)
        out: list[tuple[str, str]] = []
        for holder in waiting[:count]:
            if self.used >= len(self.fallbacks):
                break
            taker = self.fallbacks[self.used]
            self.used += 1
            self.stand_ins[taker] = holder
            out.append((taker, holder))
        return out


@attrs.define
class Hints(Generic[S]):
    """The hints a server keeps: ``(list id, holder) -> the join of their deltas``."""

    states: dict[tuple[str, str], S] = attrs.Factory(dict)
    writes: dict[int, tuple[str, str]] = attrs.Factory(dict)
    """Token -> hint of every hint write in flight."""
    handing: dict[int, tuple[tuple[str, str], str, str]] = attrs.Factory(dict)
    """Ask -> (hint, digest of the state handed, the server it went to) of every
    handoff in flight."""
    _asks: dict[tuple[str, str], int] = attrs.Factory(dict)
    taken: int = 0
    """Hint writes made durable."""
    handed: int = 0
    """Hints a holder confirmed and this server dropped."""

    def __len__(self) -> int:
        return len(self.states)

    def busy(self, key: tuple[str, str]) -> bool:
        """Whether a write of this hint is in flight."""
        return key in self.writes.values()

    def add(self, key: tuple[str, str], delta: S, token: int) -> None:
        """Join ``delta`` into the hint (a write in flight under ``token``)."""
        state = self.states.get(key)
        if state is None:
            self.states[key] = delta.copy()
        else:
            state.join(delta)
        self.writes[token] = key

    def done(self, token: int) -> bool:
        """A hint write ended; True if ``token`` was one."""
        return self.writes.pop(token, None) is not None

    def hand(self, key: tuple[str, str], ask: int, to: str) -> None:
        """Record a handoff of the hint to ``to`` under ``ask`` (replacing an earlier
        one)."""
        old = self._asks.pop(key, None)
        if old is not None:
            self.handing.pop(old, None)
        self._asks[key] = ask
        self.handing[ask] = (key, self.states[key].digest(), to)

    def confirmed(self, ask: int, server: str) -> tuple[str, str, str] | None:
        """``server`` confirmed the handoff ``ask``: forget the hint if it went to that
        server, is what was handed, and no write of it is in flight; ``(list id,
        holder, digest)`` to delete from the store, or None."""
        entry = self.handing.get(ask)
        if entry is None or entry[2] != server:
            return None
        key, digest, _ = entry
        del self.handing[ask]
        self._asks.pop(key, None)
        return self.forget(key, digest)

    def forget(self, key: tuple[str, str], digest: str) -> tuple[str, str, str] | None:
        """The hint's state with ``digest`` is durable where it belongs: forget the hint
        if it is still that state and no write of it is in flight; ``(list id, holder,
        digest)`` to delete from the store, or None."""
        state = self.states.get(key)
        if state is None or self.busy(key) or state.digest() != digest:
            return None
        del self.states[key]
        self._asks.pop(key, None)
        self.handed += 1
        return key[0], key[1], digest

    def idle(self) -> Iterator[tuple[tuple[str, str], S]]:
        """The hints with no write in flight, oldest first."""
        busy = set(self.writes.values())
        return ((k, v) for k, v in self.states.items() if k not in busy)
