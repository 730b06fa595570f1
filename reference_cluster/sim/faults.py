"""The nemesis: fault schedules as data, and a seeded generator of them.

A :class:`FaultSchedule` is a tuple of timed faults and the time of the last heal. At
``heal_at`` the simulator ends every partition, isolation and link fault and restarts
every crashed node, whatever the schedule says; no fault may come later. Schedules are
plain values, so Hypothesis can build and shrink them (``properties/test_sim*.py``) and
the generator below draws them from a seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeAlias

import attrs

from reference_cluster.sim.network import LinkFaults

__all__ = [
    "ChangeMembership",
    "Crash",
    "Fault",
    "FaultSchedule",
    "HealPartition",
    "Isolate",
    "Partition",
    "Rejoin",
    "Restart",
    "SetLinkFaults",
    "Topology",
    "random_schedule",
]


@attrs.frozen
class Topology:
    """The names of the nodes of one simulated cluster."""

    servers: tuple[str, ...]
    brokers: tuple[str, ...]
    clients: tuple[str, ...]

    @classmethod
    def of(cls, servers: int, brokers: int, clients: int) -> Topology:
        """``s1..sN``, ``b1..bM``, ``c1..cK``."""
        return cls(
            tuple(f"s{i}" for i in range(1, servers + 1)),
            tuple(f"b{i}" for i in range(1, brokers + 1)),
            tuple(f"c{i}" for i in range(1, clients + 1)),
        )

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node, servers first."""
        return self.servers + self.brokers + self.clients


@attrs.frozen
class Partition:
    """Split the network into ``groups`` (unnamed nodes form one more group)."""

    at: float
    groups: tuple[tuple[str, ...], ...]


@attrs.frozen
class HealPartition:
    """End the current partition."""

    at: float


@attrs.frozen
class Isolate:
    """Cut one node off (a client going offline)."""

    at: float
    node: str


@attrs.frozen
class Rejoin:
    """Reconnect an isolated node."""

    at: float
    node: str


@attrs.frozen
class Crash:
    """Stop a node, losing everything its store has not made durable. With ``mid_write``
    the crash waits for the node's next write and strikes before it completes."""

    at: float
    node: str
    mid_write: bool = False


@attrs.frozen
class Restart:
    """Start a crashed node again from its durable store (no-op if it is up)."""

    at: float
    node: str


@attrs.frozen
class ChangeMembership:
    """An operator makes ``servers`` the members (the next epoch), telling every live
    server of the old and the new membership; a server not started yet (a spare) starts
    now. Servers down at that moment learn it from the others."""

    at: float
    servers: tuple[str, ...]


@attrs.frozen
class SetLinkFaults:
    """From now on, every link has these faults (``LinkFaults()`` clears them)."""

    at: float
    faults: LinkFaults


Fault: TypeAlias = (
    Partition
    | HealPartition
    | Isolate
    | Rejoin
    | Crash
    | Restart
    | SetLinkFaults
    | ChangeMembership
)


@attrs.frozen
class FaultSchedule:
    """Timed faults, all before ``heal_at``, when everything is healed and restarted."""

    faults: tuple[Fault, ...]
    heal_at: float

    def __attrs_post_init__(self) -> None:
        for f in self.faults:
            if not 0.0 <= f.at < self.heal_at:
                raise ValueError(f"fault {f!r} is not within [0, heal_at={self.heal_at})")

    def ordered(self) -> list[Fault]:
        """The faults by time (stable for equal times)."""
        return sorted(self.faults, key=lambda f: f.at)

    def check(self, topology: Topology) -> None:
        """Raise ValueError if a fault names a node the topology lacks."""
        nodes = set(topology.nodes)
        for f in self.faults:
            named: Sequence[str] = ()
            if isinstance(f, Partition):
                named = [n for g in f.groups for n in g]
            elif isinstance(f, Isolate | Rejoin | Crash | Restart):
                named = [f.node]
            elif isinstance(f, ChangeMembership):
                named = f.servers
            unknown = sorted(set(named) - nodes)
            if unknown:
                raise ValueError(f"fault {f!r} names unknown nodes {unknown}")

    def counts(self) -> dict[str, int]:
        """How many faults of each kind (for reports)."""
        out: dict[str, int] = {}
        for f in self.faults:
            key = type(f).__name__
            out[key] = out.get(key, 0) + 1
        return out


def _episodes(
    rng: random.Random, end: float, count: int, lo: float, hi: float
) -> list[tuple[float, float]]:
    """Up to ``count`` non-overlapping ``(start, stop)`` windows inside ``[0, end)``."""
    out = []
    t = rng.uniform(0.0, end / 4)
    for _ in range(count):
        length = rng.uniform(lo, hi)
        if t + length >= end:
            break
        out.append((t, t + length))
        t += length + rng.uniform(0.2, end / 4)
    return out


def random_schedule(rng: random.Random, topology: Topology, heal_at: float) -> FaultSchedule:
    """A random schedule: partitions into two or three groups, offline clients, crashes
    of servers (some in the middle of a write), clients and a broker, and windows of
    lossy links (drop, duplicate, truncate, extra delay), all before ``heal_at``."""
    faults: list[Fault] = []
    nodes = list(topology.nodes)
    for start, stop in _episodes(rng, heal_at, rng.randint(1, 3), 1.0, 6.0):
        faults.append(Partition(start, _groups(rng, nodes, rng.randint(2, 3))))
        faults.append(HealPartition(stop))
    for client in topology.clients:
        for start, stop in _episodes(rng, heal_at, rng.randint(0, 2), 1.0, 5.0):
            faults.extend([Isolate(start, client), Rejoin(stop, client)])
    for start, stop in _episodes(rng, heal_at, rng.randint(1, 3), 0.2, 4.0):
        server = rng.choice(topology.servers)
        faults.extend([Crash(start, server, rng.random() < 0.4), Restart(stop, server)])
    for start, stop in _episodes(rng, heal_at, rng.randint(0, 2), 0.2, 3.0):
        client = rng.choice(topology.clients)
        faults.extend([Crash(start, client), Restart(stop, client)])
    if topology.brokers and rng.random() < 0.6:
        for start, stop in _episodes(rng, heal_at, 1, 0.5, 4.0):
            broker = rng.choice(topology.brokers)
            faults.extend([Crash(start, broker), Restart(stop, broker)])
    for start, stop in _episodes(rng, heal_at, rng.randint(1, 3), 1.0, 8.0):
        lossy = LinkFaults(
            drop=rng.uniform(0.0, 0.3),
            duplicate=rng.uniform(0.0, 0.2),
            truncate=rng.uniform(0.0, 0.02),
            max_extra_delay=rng.uniform(0.005, 0.2),
        )
        faults.extend([SetLinkFaults(start, lossy), SetLinkFaults(stop, LinkFaults())])
    # Faults that last until the heal, so that the replicas differ when it comes.
    tail = heal_at - rng.uniform(1.0, min(6.0, heal_at / 2))
    if rng.random() < 0.8:
        faults.append(Partition(tail, _groups(rng, nodes, rng.randint(2, 3))))
    if rng.random() < 0.5:
        faults.append(Crash(tail + rng.uniform(0.0, 0.5), rng.choice(topology.servers)))
    if rng.random() < 0.5:
        faults.append(SetLinkFaults(tail, LinkFaults(drop=0.2, duplicate=0.1, max_extra_delay=0.1)))
    return FaultSchedule(tuple(faults), heal_at)


def membership_changes(
    rng: random.Random, members: Sequence[str], spares: Sequence[str], heal_at: float
) -> list[ChangeMembership]:
    """One or two membership changes before ``heal_at``: a spare joins, a member leaves,
    or both at once (a replacement); never fewer than two members."""
    out: list[ChangeMembership] = []
    now = list(members)
    waiting = list(spares)
    t = rng.uniform(1.0, heal_at / 3)
    for _ in range(rng.randint(1, 2)):
        if t >= heal_at - 2.0:
            break
        kinds = [k for k, ok in (("join", waiting), ("leave", len(now) > 2)) if ok]
        if waiting and len(now) > 2:
            kinds.append("replace")
        if not kinds:
            break
        kind = rng.choice(kinds)
        if kind in ("join", "replace"):
            now.append(waiting.pop(0))
        if kind in ("leave", "replace"):
            now.remove(rng.choice(now[:-1] if kind == "replace" else now))
        out.append(ChangeMembership(t, tuple(sorted(now))))
        t += rng.uniform(1.0, heal_at / 3)
    return out


def _groups(rng: random.Random, nodes: Sequence[str], k: int) -> tuple[tuple[str, ...], ...]:
    groups: list[list[str]] = [[] for _ in range(k)]
    for node in nodes:
        groups[rng.randrange(k)].append(node)
    return tuple(tuple(g) for g in groups if g)
