"""The benchmark cases: each CRDT operation beside the same work on a plain ``set``/``dict``.

Both ``test_bench.py`` (pytest-benchmark) and ``ratios.py`` (the ratio table) time these
cases, so the two always measure the same thing.

A case prepares its states once. Every timed round starts from a fresh copy made by the
case's ``setup`` (not timed) and runs one batch of ``ops`` operations (timed). The plain
side works on the same element objects. What each plain side does is written beside it
in ``Case.plain_does``; the rule is that it does the same work as the CRDT minus the
metadata: where the CRDT returns a delta, the plain side builds a one-element set or dict
that would carry the same change.

A case's size is the number of entries in the state: elements in a set (each with one
dot, except in the concurrent-adds full join, where the shared half has two), and
(replica, count) entries in a counter's tallies. A GCounter of size n has n replicas in its
one tally; a PNCounter of size n has n/2 replicas in each of its two tallies. The plain
side holds the same number of entries: a set of the same elements, a dict (or two) of the
same tallies.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from crdts import AWORSet, GCounter, PNCounter

SIZES = (1_000, 10_000, 100_000)
REPLICAS = ("a", "b", "c", "d")
"""The replicas that built the prepared sets (so a context has four entries)."""


@dataclass(frozen=True)
class Workload:
    """One side of a case.

    Attributes:
        setup: untimed; returns the arguments of ``run`` (fresh copies of the states).
        run: timed; one batch of operations. Returns the state it changed, or a count.
        value: maps what ``run`` returned to a plain value, to check both sides agree.
    """

    setup: Callable[[], tuple[Any, ...]]
    run: Callable[..., Any]
    value: Callable[[Any], Any]


@dataclass(frozen=True)
class Pair:
    """The CRDT side and the plain side of a case."""

    crdt: Workload
    plain: Workload


@dataclass(frozen=True)
class Case:
    """One operation of one type at one size."""

    kind: str
    op: str
    size: int
    ops: int
    rounds: int
    target: float
    plain_does: str
    build: Callable[[int, int], Pair]

    @property
    def id(self) -> str:
        return f"{self.kind}.{self.op}[{self.size}]"

    def pair(self) -> Pair:
        """The two workloads (built on first use; the last case built is kept)."""
        return _build(self.build, self.size, self.ops)

    def check(self) -> None:
        """Run both sides once and raise ``AssertionError`` if their results differ."""
        pair = self.pair()
        got = pair.crdt.value(pair.crdt.run(*pair.crdt.setup()))
        want = pair.plain.value(pair.plain.run(*pair.plain.setup()))
        if got != want:
            raise AssertionError(f"{self.id}: the CRDT and the plain side disagree")


@functools.lru_cache(maxsize=1)
def _build(build: Callable[[int, int], Pair], size: int, ops: int) -> Pair:
    return build(size, ops)


def items(start: int, count: int) -> list[str]:
    """Distinct elements, like short item names on a list."""
    return [f"item-{i}" for i in range(start, start + count)]


def spread(seq: list[str], count: int) -> list[str]:
    """``count`` entries of ``seq``, evenly spaced."""
    step = max(1, len(seq) // count)
    return seq[::step][:count]


def synced_set(elements: list[str]) -> AWORSet:
    """An AWORSet holding ``elements``, added round-robin by four replicas, then joined."""
    parts = [AWORSet() for _ in REPLICAS]
    for i, x in enumerate(elements):
        k = i % len(REPLICAS)
        parts[k].add(REPLICAS[k], x)
    state = AWORSet()
    for part in parts:
        state.join(part)
    return state


def _set_value(s: AWORSet) -> frozenset[Any]:
    return s.value


def _plain_set_value(s: set[str]) -> frozenset[str]:
    return frozenset(s)


def _same(x: Any) -> Any:
    return x


# -- AWORSet -------------------------------------------------------------------------------


def aworset_add(size: int, ops: int) -> Pair:
    base = items(0, size)
    state = synced_set(base)
    plain = set(base)
    new = items(size, ops)

    def crdt(s: AWORSet) -> AWORSet:
        for x in new:
            _delta = s.add("a", x)
        return s

    def baseline(s: set[str]) -> set[str]:
        for x in new:
            s.add(x)
            _delta = {x}
        return s

    return Pair(
        Workload(lambda: (state.copy(),), crdt, _set_value),
        Workload(lambda: (set(plain),), baseline, _plain_set_value),
    )


def aworset_remove(size: int, ops: int) -> Pair:
    base = items(0, size)
    state = synced_set(base)
    plain = set(base)
    gone = spread(base, ops)

    def crdt(s: AWORSet) -> AWORSet:
        for x in gone:
            _delta = s.remove("a", x)
        return s

    def baseline(s: set[str]) -> set[str]:
        for x in gone:
            s.discard(x)
            _delta = {x}
        return s

    return Pair(
        Workload(lambda: (state.copy(),), crdt, _set_value),
        Workload(lambda: (set(plain),), baseline, _plain_set_value),
    )


def aworset_contains(size: int, ops: int) -> Pair:
    base = items(0, size)
    state = synced_set(base)
    plain = set(base)
    # Half the probes are present, half absent.
    probes = [
        x for pair in zip(spread(base, ops // 2), items(size, ops // 2), strict=True) for x in pair
    ]

    def crdt(s: AWORSet) -> int:
        hits = 0
        for x in probes:
            if x in s:
                hits += 1
        return hits

    def baseline(s: set[str]) -> int:
        hits = 0
        for x in probes:
            if x in s:
                hits += 1
        return hits

    return Pair(
        Workload(lambda: (state,), crdt, _same),
        Workload(lambda: (plain,), baseline, _same),
    )


def _full_join_pair(size: int, mine: AWORSet, theirs: AWORSet) -> Pair:
    """Each replica adds its own half (``mine`` by "a", ``theirs`` by "b") to what it
    holds; the case is ``mine`` joining ``theirs``, beside ``s |= other``."""
    own = size - size // 2
    for x in items(size, own):
        mine.add("a", x)
    for x in items(2 * size, own):
        theirs.add("b", x)
    plain_mine, plain_theirs = set(mine.value), set(theirs.value)

    def crdt(s: AWORSet, other: AWORSet) -> AWORSet:
        s.join(other)
        return s

    def baseline(s: set[str], other: set[str]) -> set[str]:
        s |= other
        return s

    return Pair(
        Workload(lambda: (mine.copy(), theirs), crdt, _set_value),
        Workload(lambda: (set(plain_mine), plain_theirs), baseline, _plain_set_value),
    )


def aworset_full_join(size: int, ops: int) -> Pair:
    """Two replicas of ``size`` elements each: half shared history, half their own adds."""
    common = synced_set(items(0, size // 2))
    return _full_join_pair(size, common.copy(), common.copy())


def aworset_full_join_concurrent(size: int, ops: int) -> Pair:
    """Two replicas of ``size`` elements each that never synced: half the elements were
    added by both, concurrently ("a" in one state, "b" in the other), so after the join
    each shared element holds two dots; the other half is each replica's own adds."""
    mine, theirs = AWORSet(), AWORSet()
    for x in items(0, size // 2):
        mine.add("a", x)
        theirs.add("b", x)
    return _full_join_pair(size, mine, theirs)


def aworset_one_delta_join(size: int, ops: int) -> Pair:
    """One-element add deltas from another replica, each joined into the state, beside a
    one-element union of the same element."""
    base = items(0, size)
    state = synced_set(base)
    other = state.copy()
    new = items(size, ops)
    deltas = [other.add("b", x) for x in new]
    plain = set(base)
    plain_deltas = [{x} for x in new]

    def crdt(s: AWORSet) -> AWORSet:
        for delta in deltas:
            s.join(delta)
        return s

    def baseline(s: set[str]) -> set[str]:
        for delta in plain_deltas:
            s |= delta
        return s

    return Pair(
        Workload(lambda: (state.copy(),), crdt, _set_value),
        Workload(lambda: (set(plain),), baseline, _plain_set_value),
    )


def aworset_delta_join(size: int, ops: int) -> Pair:
    """One-element deltas from another replica: alternately an add and a remove."""
    base = items(0, size)
    state = synced_set(base)
    other = state.copy()
    pairs = list(zip(items(size, ops // 2), spread(base, ops // 2), strict=True))
    deltas = [(other.add("b", x), other.remove("b", y)) for x, y in pairs]
    plain = set(base)
    plain_deltas = [({x}, {y}) for x, y in pairs]

    def crdt(s: AWORSet) -> AWORSet:
        for added, removed in deltas:
            s.join(added)
            s.join(removed)
        return s

    def baseline(s: set[str]) -> set[str]:
        for added, removed in plain_deltas:
            s |= added
            s -= removed
        return s

    return Pair(
        Workload(lambda: (state.copy(),), crdt, _set_value),
        Workload(lambda: (set(plain),), baseline, _plain_set_value),
    )


# -- counters ------------------------------------------------------------------------------


def replica_ids(count: int) -> list[str]:
    return [f"r{i}" for i in range(count)]


def pn_replica_ids(entries: int) -> list[str]:
    """The replicas of a PNCounter of ``entries`` entries: each has one in either tally."""
    return replica_ids(entries // 2)


def tallies(replicas: list[str], seed: int) -> dict[str, int]:
    """A tally per replica, varied so that a join takes some values from each side."""
    return {r: (i * 7 + seed) % 13 + 1 for i, r in enumerate(replicas)}


def gcounter_of(counts: dict[str, int]) -> GCounter:
    c = GCounter()
    for r, n in counts.items():
        c.increment(r, n)
    return c


def pncounter_of(p: dict[str, int], n: dict[str, int]) -> PNCounter:
    c = PNCounter()
    for r, k in p.items():
        c.increment(r, k)
    for r, k in n.items():
        c.decrement(r, k)
    return c


def _gcounter_value(c: GCounter) -> dict[str, int]:
    return dict(c.counts)


def _pncounter_value(c: PNCounter) -> tuple[dict[str, int], dict[str, int]]:
    return dict(c.increments), dict(c.decrements)


def _plain_pn_value(c: tuple[dict[str, int], dict[str, int]]) -> Any:
    return c


def _join_dict(mine: dict[str, int], other: dict[str, int]) -> None:
    """The plain join: a per-replica maximum."""
    for r, n in other.items():
        if n > mine.get(r, 0):
            mine[r] = n


def gcounter_increment(size: int, ops: int) -> Pair:
    replicas = replica_ids(size)
    counts = tallies(replicas, 0)
    state = gcounter_of(counts)
    actors = spread(replicas, ops)

    def crdt(c: GCounter) -> GCounter:
        for r in actors:
            _delta = c.increment(r, 1)
        return c

    def baseline(c: dict[str, int]) -> dict[str, int]:
        for r in actors:
            total = c.get(r, 0) + 1
            c[r] = total
            _delta = {r: total}
        return c

    return Pair(
        Workload(lambda: (state.copy(),), crdt, _gcounter_value),
        Workload(lambda: (dict(counts),), baseline, _same),
    )


def gcounter_full_join(size: int, ops: int) -> Pair:
    replicas = replica_ids(size)
    mine, theirs = tallies(replicas, 0), tallies(replicas, 5)
    state, other = gcounter_of(mine), gcounter_of(theirs)

    def crdt(c: GCounter, o: GCounter) -> GCounter:
        c.join(o)
        return c

    def baseline(c: dict[str, int], o: dict[str, int]) -> dict[str, int]:
        _join_dict(c, o)
        return c

    return Pair(
        Workload(lambda: (state.copy(), other), crdt, _gcounter_value),
        Workload(lambda: (dict(mine), theirs), baseline, _same),
    )


def gcounter_delta_join(size: int, ops: int) -> Pair:
    replicas = replica_ids(size)
    counts = tallies(replicas, 0)
    state = gcounter_of(counts)
    other = state.copy()
    deltas = [other.increment(r, 1) for r in spread(replicas, ops)]
    plain_deltas = [dict(d.counts) for d in deltas]

    def crdt(c: GCounter) -> GCounter:
        for d in deltas:
            c.join(d)
        return c

    def baseline(c: dict[str, int]) -> dict[str, int]:
        for d in plain_deltas:
            _join_dict(c, d)
        return c

    return Pair(
        Workload(lambda: (state.copy(),), crdt, _gcounter_value),
        Workload(lambda: (dict(counts),), baseline, _same),
    )


def _pn_step(size: int, ops: int, decrement: bool) -> Pair:
    replicas = pn_replica_ids(size)
    p, n = tallies(replicas, 0), tallies(replicas, 3)
    state = pncounter_of(p, n)
    actors = spread(replicas, ops)

    def crdt_inc(c: PNCounter) -> PNCounter:
        for r in actors:
            _delta = c.increment(r, 1)
        return c

    def crdt_dec(c: PNCounter) -> PNCounter:
        for r in actors:
            _delta = c.decrement(r, 1)
        return c

    def baseline(c: tuple[dict[str, int], dict[str, int]]) -> Any:
        tally = c[1] if decrement else c[0]
        for r in actors:
            total = tally.get(r, 0) + 1
            tally[r] = total
            _delta = {r: total}
        return c

    return Pair(
        Workload(lambda: (state.copy(),), crdt_dec if decrement else crdt_inc, _pncounter_value),
        Workload(lambda: ((dict(p), dict(n)),), baseline, _plain_pn_value),
    )


def pncounter_increment(size: int, ops: int) -> Pair:
    return _pn_step(size, ops, decrement=False)


def pncounter_decrement(size: int, ops: int) -> Pair:
    return _pn_step(size, ops, decrement=True)


def pncounter_full_join(size: int, ops: int) -> Pair:
    replicas = pn_replica_ids(size)
    mine = tallies(replicas, 0), tallies(replicas, 3)
    theirs = tallies(replicas, 5), tallies(replicas, 9)
    state, other = pncounter_of(*mine), pncounter_of(*theirs)

    def crdt(c: PNCounter, o: PNCounter) -> PNCounter:
        c.join(o)
        return c

    def baseline(c: tuple[dict[str, int], dict[str, int]], o: Any) -> Any:
        _join_dict(c[0], o[0])
        _join_dict(c[1], o[1])
        return c

    return Pair(
        Workload(lambda: (state.copy(), other), crdt, _pncounter_value),
        Workload(lambda: ((dict(mine[0]), dict(mine[1])), theirs), baseline, _plain_pn_value),
    )


def pncounter_delta_join(size: int, ops: int) -> Pair:
    """One-entry deltas from another replica: alternately an increment and a decrement."""
    replicas = pn_replica_ids(size)
    p, n = tallies(replicas, 0), tallies(replicas, 3)
    state = pncounter_of(p, n)
    other = state.copy()
    deltas = [
        other.decrement(r, 1) if i % 2 else other.increment(r, 1)
        for i, r in enumerate(spread(replicas, ops))
    ]
    plain_deltas = [(dict(d.increments), dict(d.decrements)) for d in deltas]

    def crdt(c: PNCounter) -> PNCounter:
        for d in deltas:
            c.join(d)
        return c

    def baseline(c: tuple[dict[str, int], dict[str, int]]) -> Any:
        for dp, dn in plain_deltas:
            _join_dict(c[0], dp)
            _join_dict(c[1], dn)
        return c

    return Pair(
        Workload(lambda: (state.copy(),), crdt, _pncounter_value),
        Workload(lambda: ((dict(p), dict(n)),), baseline, _plain_pn_value),
    )


# -- the table of cases --------------------------------------------------------------------

_OPS = [
    # kind, op, builder, target ratio (every size), what the plain side does
    ("AWORSet", "add", aworset_add, 8.0, "s.add(x); delta = {x}"),
    ("AWORSet", "remove", aworset_remove, 8.0, "s.discard(x); delta = {x}"),
    ("AWORSet", "contains", aworset_contains, 8.0, "x in s (half hits)"),
    ("AWORSet", "full join", aworset_full_join, 10.0, "s |= other (each half shared)"),
    (
        "AWORSet",
        "full join, concurrent adds",
        aworset_full_join_concurrent,
        10.0,
        "s |= other (half added by both)",
    ),
    ("AWORSet", "delta join", aworset_delta_join, 20.0, "s |= {x}; s -= {y}"),
    ("AWORSet", "one-element delta join", aworset_one_delta_join, 20.0, "s |= {x}"),
    ("GCounter", "increment", gcounter_increment, 3.0, "t = d.get(r, 0) + 1; d[r] = t; {r: t}"),
    ("GCounter", "full join", gcounter_full_join, 3.0, "per-replica max over other's dict"),
    ("GCounter", "delta join", gcounter_delta_join, 3.0, "per-replica max of a 1-entry dict"),
    ("PNCounter", "increment", pncounter_increment, 3.0, "as GCounter, on the P dict"),
    ("PNCounter", "decrement", pncounter_decrement, 3.0, "as GCounter, on the N dict"),
    ("PNCounter", "full join", pncounter_full_join, 3.0, "per-replica max over two dicts"),
    ("PNCounter", "delta join", pncounter_delta_join, 3.0, "per-replica max, two 1-entry dicts"),
]


def ops_for(op: str, size: int) -> int:
    """Operations per timed batch: one full join of ``size``, else up to 1,000 small ops."""
    if op.startswith("full join"):
        return size
    return min(1_000, size // 10)


def rounds_for(size: int) -> int:
    """Timed rounds per side in one run; fewer for big states, whose setup copies cost more.
    ``ratios.py`` makes several runs (five by default), each with this many rounds."""
    return {1_000: 200, 10_000: 100}.get(size, 40)


def cases(sizes: tuple[int, ...] = SIZES) -> Iterator[Case]:
    """Every case, grouped by type and operation, smallest size first."""
    for kind, op, build, target, plain_does in _OPS:
        for size in sizes:
            yield Case(
                kind=kind,
                op=op,
                size=size,
                ops=ops_for(op, size),
                rounds=rounds_for(size),
                target=target,
                plain_does=plain_does,
                build=build,
            )
