"""The simulated network: who can reach whom, and what happens to a message on the way.

Connectivity is a partition into groups plus a set of isolated nodes (a client that went
offline): two nodes can talk if they are in the same group and neither is isolated. A
message is checked when it is sent and again when it arrives, so a partition also cuts
messages already in flight.

Link faults apply to every link while they are set: each message may be dropped,
truncated (which makes it malformed; truncating a JSON object never yields valid JSON),
duplicated, and is delayed by a base latency plus a random extra delay, which reorders
messages. Every random choice comes from the generator passed in.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import attrs

__all__ = ["LinkFaults", "Network", "Transit"]


@attrs.frozen
class LinkFaults:
    """Per-message fault probabilities and the largest extra delay, in seconds."""

    drop: float = 0.0
    duplicate: float = 0.0
    truncate: float = 0.0
    max_extra_delay: float = 0.0

    def __attrs_post_init__(self) -> None:
        for name in ("drop", "duplicate", "truncate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if not 0.0 <= self.max_extra_delay <= 60.0:
            raise ValueError(
                f"max_extra_delay must be in [0, 60] seconds, got {self.max_extra_delay!r}"
            )


@attrs.frozen
class Transit:
    """One copy of a message on its way: when it arrives and with which bytes."""

    arrives: float
    data: bytes
    truncated: bool


class Network:
    """Connectivity and link faults between named nodes.

    Args:
        nodes: every node's name.
        rng: the source of every random choice.
        base_delay: the smallest and largest latency of a healthy link, in seconds.
    """

    def __init__(
        self, nodes: Iterable[str], rng: random.Random, base_delay: tuple[float, float]
    ) -> None:
        self.nodes = tuple(nodes)
        self._rng = rng
        self._base = base_delay
        self._group: dict[str, int] = {}
        self._isolated: set[str] = set()
        self.faults = LinkFaults()

    # -- connectivity ---------------------------------------------------------------------

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Split the nodes into ``groups``; nodes not named form one more group."""
        self._group = {}
        for i, group in enumerate(groups, start=1):
            for node in group:
                self._group[node] = i

    def heal_partition(self) -> None:
        """Put every node back in one group."""
        self._group = {}

    def isolate(self, node: str) -> None:
        """Cut ``node`` off from everyone (it went offline)."""
        self._isolated.add(node)

    def rejoin(self, node: str) -> None:
        """Undo :meth:`isolate`."""
        self._isolated.discard(node)

    def heal(self) -> None:
        """End every partition, isolation and link fault."""
        self._group = {}
        self._isolated.clear()
        self.faults = LinkFaults()

    def connected(self, a: str, b: str) -> bool:
        """Whether a message from ``a`` can reach ``b`` now."""
        if a in self._isolated or b in self._isolated:
            return False
        return self._group.get(a, 0) == self._group.get(b, 0)

    # -- one message ----------------------------------------------------------------------

    def transmit(self, data: bytes, now: float) -> list[Transit]:
        """What becomes of one message sent at ``now``: zero, one or two copies."""
        faults = self.faults
        rng = self._rng
        if faults.drop and rng.random() < faults.drop:
            return []
        copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
        out = []
        for _ in range(copies):
            delay = rng.uniform(*self._base)
            if faults.max_extra_delay:
                delay += rng.uniform(0.0, faults.max_extra_delay)
            payload, cut = data, False
            if faults.truncate and rng.random() < faults.truncate and len(data) > 1:
                payload, cut = data[: rng.randrange(1, len(data))], True
            out.append(Transit(now + delay, payload, cut))
        return out
