"""In-memory stand-ins for the durable stores, with crash semantics.

A server's writes complete after a latency; a crash loses the writes not yet completed.
A client's writes are durable at once (its shell writes synchronously, before it sends).
What a store holds survives crashes; a restarted core is built from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic

from reference_cluster.cores.client import SavedList
from reference_cluster.protocol.effects import (
    Acked,
    DropHint,
    DropList,
    Persist,
    SaveEdit,
    SaveMerge,
)
from reference_cluster.protocol.placement import Membership
from reference_cluster.protocol.replication import S

__all__ = ["FakeClientStore", "FakeServerStore"]


class FakeServerStore(Generic[S]):
    """A server's durable lists and its writes in flight."""

    def __init__(self, doc_type: type[S]) -> None:
        self.doc_type = doc_type
        self.lists: dict[str, S] = {}
        self.hint_states: dict[tuple[str, str], S] = {}
        """(list id, holder) -> the hints kept for that holder (durable)."""
        self.membership: tuple[int, Mapping[str, str]] | None = None
        """The last membership recorded (epoch, ``{server: end point}``)."""
        self._in_flight: dict[int, Persist] = {}
        self.writes = 0
        self.loads = 0

    def begin(self, write: Persist) -> None:
        """Start a write; it is durable once :meth:`complete` runs."""
        self._in_flight[write.token] = write

    def complete(self, token: int) -> bool:
        """Make a write durable; False if a crash lost it."""
        write = self._in_flight.pop(token, None)
        if write is None:
            return False
        if write.hint_for is not None:
            key = (write.list_id, write.hint_for)
            state = self.hint_states.get(key)
            if state is None:
                state = self.hint_states[key] = self.doc_type()
        else:
            state = self.lists.get(write.list_id)
            if state is None:
                state = self.lists[write.list_id] = self.doc_type()
        state.join(write.delta)
        self.writes += 1
        return True

    @property
    def pending(self) -> int:
        """Writes started and not yet durable."""
        return len(self._in_flight)

    def crash(self) -> int:
        """Lose every write not yet durable; return how many were lost."""
        lost = len(self._in_flight)
        self._in_flight.clear()
        return lost

    def load_all(self) -> dict[str, S]:
        """Copies of the durable lists."""
        return {k: v.copy() for k, v in self.lists.items()}

    # -- what a server core reads (cores.server.ListSource) --------------------------

    def digests(self) -> dict[str, str]:
        """The durable lists' digests, which a restarted core starts from."""
        return {k: v.digest() for k, v in self.lists.items()}

    def hints(self) -> dict[tuple[str, str], S]:
        """Copies of the durable hints, which a restarted core keeps again."""
        return {k: v.copy() for k, v in self.hint_states.items()}

    def drop_hint(self, effect: DropHint) -> bool:
        """Delete a hint if its state is still the one its holder confirmed."""
        key = (effect.list_id, effect.holder)
        state = self.hint_states.get(key)
        if state is None or state.digest() != effect.digest:
            return False
        del self.hint_states[key]
        return True

    def drop_list(self, effect: DropList) -> bool:
        """Forget a list handed over if its state is still the one confirmed."""
        state = self.lists.get(effect.list_id)
        if state is None or state.digest() != effect.digest:
            return False
        del self.lists[effect.list_id]
        return True

    def saved_membership(self, default: Membership) -> Membership:
        """The membership a restarted server starts from: the last recorded, else
        ``default``."""
        if self.membership is None:
            return default
        epoch, servers = self.membership
        return Membership(servers, epoch)

    def holds(self, list_id: str, delta: S) -> bool:
        """Whether ``delta`` is durable here, in the list or in a hint for it."""
        state = self.lists.get(list_id)
        if state is not None and delta <= state:
            return True
        return any(k[0] == list_id and delta <= v for k, v in self.hint_states.items())

    def load(self, list_id: str) -> S | None:
        """A copy of one durable list, or None."""
        self.loads += 1
        state = self.lists.get(list_id)
        return None if state is None else state.copy()


class FakeClientStore(Generic[S]):
    """A client's durable lists and queue (every write is durable at once)."""

    def __init__(self, doc_type: type[S]) -> None:
        self.doc_type = doc_type
        self.lists: dict[str, S] = {}
        self.queues: dict[str, list[tuple[int, S]]] = {}
        self.next_seq: dict[str, int] = {}

    def _ensure(self, list_id: str) -> S:
        state = self.lists.get(list_id)
        if state is None:
            state = self.lists[list_id] = self.doc_type()
            self.queues[list_id] = []
            self.next_seq[list_id] = 1
        return state

    def save_edit(self, effect: SaveEdit) -> None:
        """Join the edit's delta into the state and queue it, in one step."""
        self._ensure(effect.list_id).join(effect.delta)
        self.queues[effect.list_id].append((effect.seq, effect.delta))
        self.next_seq[effect.list_id] = effect.seq + 1

    def save_merge(self, effect: SaveMerge) -> None:
        """Join a delta from a server into the state."""
        self._ensure(effect.list_id).join(effect.delta)

    def ack(self, effect: Acked) -> None:
        """Drop the acknowledged part of the queue."""
        queue = self.queues.get(effect.list_id, [])
        queue[:] = [(s, d) for s, d in queue if s > effect.through_seq]

    def load(self) -> dict[str, SavedList[S]]:
        """What a restarted client core starts from."""
        return {
            k: SavedList(v.copy(), tuple(self.queues[k]), self.next_seq[k])
            for k, v in self.lists.items()
        }
