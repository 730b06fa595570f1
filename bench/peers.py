"""The same OR-set work on this library and on its peers, each peer in its own process.

Usage::

    .venv/bin/python bench/peers.py                       # every peer, one markdown report
    .venv/bin/python bench/peers.py --sizes 1000 --runs 3 # a quick look
    .venv/bin/python bench/peers.py --peer pycrdt         # one peer alone; prints JSON

The peers are optional packages (``pip install -e '.[peers]'``); one that is not installed
is reported as such and skipped. The driver starts one process per peer
(``peers.py --peer NAME``), which measures that peer and plain Python on the same work and
prints its results as JSON; the driver prints one report.

The work, at each size (elements in the set):

- **add+remove**: 100 new elements added one at a time, then removed one at a time, on a
  replica that holds ``size`` elements; 200 operations. Each operation is the peer's own
  single-operation call, with whatever it produces: this library returns a delta, pycrdt
  runs each change in its own implicit transaction, automerge in its own transaction
  (one change each). Plain: ``s.add(x)``, then ``s.discard(x)``.
- **full merge**: a replica holding the half of the elements that one replica added
  merges the replica holding the other half, which another replica added; per element of
  the result. The timer covers every call the library needs to merge two replicas in one
  process: ``join`` here, ``merge`` for automerge, xotl.crdt and python3-crdt, encoding
  the other replica and applying that for the peers that merge from bytes (pycrdt's
  ``get_update``/``apply_update``, nexus-crdt's ``encode``/``merge``). Plain:
  ``s |= other``.
- **lookups**: 200 membership tests, half of them present. Plain: ``x in s``.

Timing is ``ratios.py``'s: CPU time of each batch less the timer's own cost, the CRDT and
plain sides alternating round by round, a run's figure the median round, several runs
(``--runs``, default 5) reported as the median ratio with the lowest and highest run.
Slow peers are bounded: no cell spends more than ``--limit`` seconds on its batches (it
makes fewer runs, down to one, and says so), a batch that alone runs over the limit is
stopped and reported, and bigger sizes of that work are skipped when a ten times bigger
batch would run over the limit.

Besides time: resident memory per element of one replica that merged the states of 8
writers (each added every 8th element) at the largest size that can be built within the
limit, beside a plain set of the same elements (RSS growth after a collection and
``malloc_trim``; both Python and native allocations count, the element strings do not);
and two semantic checks, each run with the two replicas' roles both ways round:

- **add-wins**: (1) both replicas hold x; one adds x again while the other removes it;
  (2) one adds x while the other adds x and then removes it. After merging both ways, x
  must be present on both replicas (an observed-remove set removes only what it saw).
- **other concurrent updates kept**: both hold x and y; one removes y while the other
  adds z. After merging both ways, both replicas must hold exactly {x, z}.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import datetime
import gc
import importlib
import importlib.metadata
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timing
from timing import Spread, spread_text

SIZES = (1_000, 10_000, 100_000)
WORKS = ("add+remove", "full merge", "lookups")
PLAIN_DOES = {
    "add+remove": "`s.add(x)` for 100 new x, then `s.discard(x)`",
    "full merge": "`s |= other`",
    "lookups": "`x in s`, half of them hits",
}
"""What the plain side does, as markdown (printed above the table, not in it)."""
CHANGES = 100
"""New elements added, then removed, in one add+remove batch."""
PROBES = 200
"""Membership tests in one lookups batch."""
WRITERS = 8
"""Replicas whose states one replica merges for the memory figure."""
ROUND_BUDGET = 0.3
"""Seconds of CRDT rounds to aim for in one run of a cell."""
MIN_ROUNDS, MAX_ROUNDS = 3, 30
"""Rounds in one run of a cell (fewer than the minimum only where the limit says so)."""


class OverLimit(BaseException):
    """Raised by the alarm in a batch that outruns ``--limit``. A ``BaseException``, so
    that a peer's own ``except Exception`` cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``OverLimit`` in the block if it is still running after ``seconds`` (wall)."""

    def _alarm(signum: int, frame: object) -> None:
        raise OverLimit

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def items(start: int, count: int) -> list[str]:
    """Distinct elements, as in ``workloads.items``."""
    return [f"item-{i}" for i in range(start, start + count)]


# -- the peers -----------------------------------------------------------------------------


def count_in(container: Any, probes: list[str]) -> int:
    """How many of ``probes`` are ``in`` the container: the lookups of every peer whose
    set answers ``in``, and of plain Python, timed the same way."""
    hits = 0
    for x in probes:
        if x in container:
            hits += 1
    return hits


class Peer:
    """One library's OR-set (or a map used as a set) behind the calls the work needs.

    ``replica`` arguments are small ints; each peer turns them into its own replica ids
    (names, client ids, actor ids). Batch methods loop over the library's own
    single-operation calls, as an application would call them.
    """

    name = ""
    title = ""
    dist = ""
    build = ""
    native = False
    """Written in a compiled language: its memory is measured as resident-set growth."""

    def load(self) -> None:
        """Import the library (``ModuleNotFoundError`` if it is not installed). The peers
        import by name (``importlib``), so that this file type-checks without them."""

    def version(self) -> str:
        return importlib.metadata.version(self.dist)

    def new(self, replica: int) -> Any:
        raise NotImplementedError

    def add_all(self, state: Any, replica: int, xs: list[str]) -> None:
        raise NotImplementedError

    def remove_all(self, state: Any, replica: int, xs: list[str]) -> None:
        raise NotImplementedError

    def fork(self, state: Any, replica: int) -> Any:
        """A new replica ``replica`` holding ``state``'s state (``state`` unchanged)."""
        raise NotImplementedError

    def export(self, state: Any) -> Any:
        """What ``merge`` takes: the state itself, or its encoding."""
        return state

    def merge(self, state: Any, other: Any) -> None:
        raise NotImplementedError

    def lookups(self, state: Any, probes: list[str]) -> int:
        raise NotImplementedError

    def value(self, state: Any) -> frozenset[str]:
        raise NotImplementedError


class Dotted(Peer):
    name, title, dist = "dotted-crdts", "dotted-crdts (this library)", ""
    build = "pure Python, this tree"

    def load(self) -> None:
        from crdts import AWORSet

        self.AWORSet = AWORSet

    def version(self) -> str:
        return str(importlib.import_module("crdts").__version__)

    def new(self, replica: int) -> Any:
        return self.AWORSet()

    def add_all(self, state: Any, replica: int, xs: list[str]) -> None:
        r = f"r{replica}"
        for x in xs:
            _delta = state.add(r, x)

    def remove_all(self, state: Any, replica: int, xs: list[str]) -> None:
        r = f"r{replica}"
        for x in xs:
            _delta = state.remove(r, x)

    def fork(self, state: Any, replica: int) -> Any:
        return state.copy()

    def merge(self, state: Any, other: Any) -> None:
        state.join(other)

    def lookups(self, state: Any, probes: list[str]) -> int:
        return count_in(state, probes)

    def value(self, state: Any) -> frozenset[str]:
        return frozenset(state.value)


class Pycrdt(Peer):
    """pycrdt (Rust Yrs): a ``Map`` of element -> True. State: (doc, map)."""

    name, title, dist = "pycrdt", "pycrdt", "pycrdt"
    build = "Rust (Yrs) bindings; a Map of element -> True"
    native = True

    def load(self) -> None:
        pycrdt = importlib.import_module("pycrdt")
        self.Doc, self.Map = pycrdt.Doc, pycrdt.Map

    def _of(self, doc: Any) -> tuple[Any, Any]:
        return doc, doc.get("s", type=self.Map)

    def new(self, replica: int) -> Any:
        return self._of(self.Doc(client_id=replica + 1))

    def add_all(self, state: Any, replica: int, xs: list[str]) -> None:
        m = state[1]
        for x in xs:
            m[x] = True

    def remove_all(self, state: Any, replica: int, xs: list[str]) -> None:
        m = state[1]
        for x in xs:
            del m[x]

    def fork(self, state: Any, replica: int) -> Any:
        doc = self.Doc(client_id=replica + 1)
        doc.apply_update(state[0].get_update())
        return self._of(doc)

    def export(self, state: Any) -> Any:
        return state[0].get_update()

    def merge(self, state: Any, other: Any) -> None:
        state[0].apply_update(other)

    def lookups(self, state: Any, probes: list[str]) -> int:
        return count_in(state[1], probes)

    def value(self, state: Any) -> frozenset[str]:
        return frozenset(state[1].keys())


class Automerge(Peer):
    """automerge (Rust): the document's root map, element -> True, one change per op."""

    name, title, dist = "automerge", "automerge", "automerge"
    build = "Rust bindings; the root map, element -> True"
    native = True

    def load(self) -> None:
        self.core = importlib.import_module("automerge.core")

    def new(self, replica: int) -> Any:
        return self.core.Document(f"replica-{replica}".encode())

    def add_all(self, state: Any, replica: int, xs: list[str]) -> None:
        root, boolean = self.core.ROOT, self.core.ScalarType.Boolean
        for x in xs:
            with state.transaction() as tx:
                tx.put(root, x, boolean, True)

    def remove_all(self, state: Any, replica: int, xs: list[str]) -> None:
        root = self.core.ROOT
        for x in xs:
            with state.transaction() as tx:
                tx.delete(root, x)

    def fork(self, state: Any, replica: int) -> Any:
        doc = state.fork()
        doc.set_actor(f"replica-{replica}".encode())
        return doc

    def merge(self, state: Any, other: Any) -> None:
        state.merge(other)

    def lookups(self, state: Any, probes: list[str]) -> int:
        root = self.core.ROOT
        hits = 0
        for x in probes:
            if state.get(root, x) is not None:
                hits += 1
        return hits

    def value(self, state: Any) -> frozenset[str]:
        return frozenset(state.keys(self.core.ROOT))


class Nexus(Peer):
    """nexus-crdt: a ``NexusMap`` OR-set field; merges from the encoded log."""

    name, title, dist = "nexus-crdt", "nexus-crdt", "nexus-crdt"
    build = "pure Python; OR-set field of a map"

    def load(self) -> None:
        self.NexusMap = importlib.import_module("nexus").NexusMap

    def _of(self, m: Any) -> tuple[Any, Any]:
        return m, m.or_set("s")

    def new(self, replica: int) -> Any:
        return self._of(self.NexusMap(f"r{replica}"))

    def add_all(self, state: Any, replica: int, xs: list[str]) -> None:
        s = state[1]
        for x in xs:
            s.add(x)

    def remove_all(self, state: Any, replica: int, xs: list[str]) -> None:
        s = state[1]
        for x in xs:
            s.remove(x)

    def fork(self, state: Any, replica: int) -> Any:
        return self._of(self.NexusMap.decode(state[0].encode(), f"r{replica}"))

    def export(self, state: Any) -> Any:
        return state[0].encode()

    def merge(self, state: Any, other: Any) -> None:
        state[0].merge(other)

    def lookups(self, state: Any, probes: list[str]) -> int:
        return count_in(state[1], probes)

    def value(self, state: Any) -> frozenset[str]:
        return frozenset(state[1].values())


class Py3crdt(Peer):
    """python3-crdt (``py3crdt``): the caller makes each add's unique tag."""

    name, title, dist = "python3-crdt", "python3-crdt", "python3-crdt"
    build = "pure Python; sorted lists of tags"

    def load(self) -> None:
        self.ORSet = importlib.import_module("py3crdt.orset").ORSet
        self.tags = itertools.count()

    def new(self, replica: int) -> Any:
        return self.ORSet(f"r{replica}")

    def add_all(self, state: Any, replica: int, xs: list[str]) -> None:
        tags = self.tags
        for x in xs:
            state.add(x, (replica, next(tags)))

    def remove_all(self, state: Any, replica: int, xs: list[str]) -> None:
        for x in xs:
            state.remove(x)

    def fork(self, state: Any, replica: int) -> Any:
        # Its merge walks both lists for every element; a deep copy is the fast way to
        # a second replica holding the same state (the id is only a label).
        forked = copy.deepcopy(state)
        forked.id = f"r{replica}"
        return forked

    def merge(self, state: Any, other: Any) -> None:
        state.merge(other)

    def lookups(self, state: Any, probes: list[str]) -> int:
        hits = 0
        for x in probes:
            if state.query(x):
                hits += 1
        return hits

    def value(self, state: Any) -> frozenset[str]:
        # query() walks the lists per element; the documented A and R lists give the
        # same answer in one pass.
        removed = {entry["elem"]: set(entry["tags"]) for entry in state.R}
        return frozenset(
            entry["elem"]
            for entry in state.A
            if set(entry["tags"]) - removed.get(entry["elem"], set())
        )


class Xotl(Peer):
    """xotl.crdt: ``ORSet`` over a vector-clocked set of (element, process, tick)."""

    name, title, dist = "xotl.crdt", "xotl.crdt", "xotl.crdt"
    build = "pure Python; vector clock and a set of tagged elements"

    def load(self) -> None:
        self.Process = importlib.import_module("xotl.crdt.base").Process
        self.ORSet = importlib.import_module("xotl.crdt.sets").ORSet

    def new(self, replica: int) -> Any:
        return self.ORSet(process=self.Process(f"r{replica}", replica))

    def add_all(self, state: Any, replica: int, xs: list[str]) -> None:
        for x in xs:
            state.add(x)

    def remove_all(self, state: Any, replica: int, xs: list[str]) -> None:
        for x in xs:
            state.remove(x)

    def fork(self, state: Any, replica: int) -> Any:
        forked = self.new(replica)
        forked.merge(state)
        return forked

    def merge(self, state: Any, other: Any) -> None:
        state.merge(other)

    def lookups(self, state: Any, probes: list[str]) -> int:
        hits = 0
        for x in probes:
            if x in state.value:
                hits += 1
        return hits

    def value(self, state: Any) -> frozenset[str]:
        return frozenset(state.value)


PEERS: dict[str, Peer] = {
    peer.name: peer for peer in (Dotted(), Pycrdt(), Automerge(), Nexus(), Py3crdt(), Xotl())
}


# -- one cell: a peer's work at one size beside plain Python -------------------------------


@dataclass(frozen=True)
class Side:
    """One side of a cell: ``setup`` (untimed) makes the arguments of ``run`` (timed)."""

    setup: Callable[[], tuple[Any, ...]]
    run: Callable[..., Any]


@dataclass(frozen=True)
class Work:
    """A peer's side and the plain side of one work at one size, and its checks."""

    crdt: Side
    plain: Side
    ops: int
    agree: Callable[[Any, Any], bool]
    """Whether what the two sides' ``run`` returned agree (after the warm-up round)."""


def _round(side: Side, kept: list[Any], cost: float) -> float:
    args = side.setup()
    kept.append(args)  # the previous round's states stay alive until this one exists
    del kept[:-2]
    return timing.timed(side.run, args, cost)


def _warm_up(work: Work, limit: float) -> tuple[float, str]:
    """One untimed-for-the-table round of each side, under the limit: the seconds a CRDT
    round took (its setup included), and an error text if the two sides disagree."""
    t0 = time.perf_counter()
    with time_limit(limit):
        got = work.crdt.run(*work.crdt.setup())
    took = time.perf_counter() - t0
    want = work.plain.run(*work.plain.setup())
    return took, "" if work.agree(got, want) else "the peer's result differs from plain"


def measure(work: Work, runs: int, limit: float) -> dict[str, Any]:
    """Ratios of one cell over ``runs`` runs (fewer if the batches would outrun ``limit``)."""
    try:
        took, wrong = _warm_up(work, limit)
    except OverLimit:
        return {"over": f"one batch over {limit:g} s"}
    if wrong:
        return {"wrong": wrong, "round_s": took}
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(ROUND_BUDGET / took)))
    rounds = max(1, min(rounds, int(limit / took)))
    runs_here = max(1, min(runs, int(limit / (took * rounds))))
    ratios: list[float] = []
    mine: list[float] = []
    plain: list[float] = []
    kept: list[Any] = []
    try:
        with time_limit(limit * 3):
            for _ in range(runs_here):
                cost = timing.timer_cost()
                a: list[float] = []
                b: list[float] = []
                for i in range(rounds):
                    first, second = (work.plain, work.crdt) if i % 2 else (work.crdt, work.plain)
                    x = _round(first, kept, cost)
                    y = _round(second, kept, cost)
                    a.append(y if i % 2 else x)
                    b.append(x if i % 2 else y)
                mine.append(statistics.median(a) / work.ops)
                plain.append(statistics.median(b) / work.ops)
                ratios.append(mine[-1] / plain[-1])
                gc.collect()
    except OverLimit:
        if not ratios:  # the runs that finished still count
            return {"over": f"one run over {3 * limit:g} s"}
    return {
        "ratios": ratios,
        "crdt_ns": statistics.median(mine) * 1e9,
        "plain_ns": statistics.median(plain) * 1e9,
        "rounds": rounds,
        "round_s": took,
    }


# -- the works -----------------------------------------------------------------------------


@dataclass
class States:
    """A peer's prepared states at one size, and the plain ones."""

    full: Any
    half_a: Any
    half_b: Any
    elements: list[str]
    plain_a: set[str]
    plain_b: set[str]


def prepare(peer: Peer, size: int) -> States:
    elements = items(0, size)
    full = peer.new(0)
    peer.add_all(full, 0, elements)
    half = size // 2
    half_a, half_b = peer.new(0), peer.new(1)
    peer.add_all(half_a, 0, elements[:half])
    peer.add_all(half_b, 1, elements[half:])
    return States(
        full=full,
        half_a=half_a,
        half_b=half_b,
        elements=elements,
        plain_a=set(elements[:half]),
        plain_b=set(elements[half:]),
    )


def works(peer: Peer, st: States) -> dict[str, Work]:
    size = len(st.elements)
    new = items(size, CHANGES)
    step = max(1, size // (PROBES // 2))
    present = st.elements[::step][: PROBES // 2]
    absent = items(2 * size, len(present))
    probes = [x for pair in zip(present, absent, strict=True) for x in pair]
    plain_full = set(st.elements)

    def add_remove(state: Any) -> Any:
        peer.add_all(state, 2, new)
        peer.remove_all(state, 2, new)
        return state

    def plain_add_remove(s: set[str]) -> set[str]:
        for x in new:
            s.add(x)
        for x in new:
            s.discard(x)
        return s

    def merge(state: Any, other: Any) -> Any:
        peer.merge(state, peer.export(other))
        return state

    def plain_merge(s: set[str], other: set[str]) -> set[str]:
        s |= other
        return s

    def plain_lookups(s: set[str]) -> int:
        return count_in(s, probes)

    def same_set(got: Any, want: set[str]) -> bool:
        return peer.value(got) == want

    return {
        "add+remove": Work(
            Side(lambda: (peer.fork(st.full, 2),), add_remove),
            Side(lambda: (set(plain_full),), plain_add_remove),
            2 * CHANGES,
            same_set,
        ),
        "full merge": Work(
            Side(lambda: (peer.fork(st.half_a, 2), st.half_b), merge),
            Side(lambda: (set(st.plain_a), st.plain_b), plain_merge),
            size,
            same_set,
        ),
        "lookups": Work(
            Side(lambda: (st.full, probes), peer.lookups),
            Side(lambda: (plain_full,), plain_lookups),
            len(probes),
            lambda got, want: bool(got == want),
        ),
    }


# -- memory and semantics ------------------------------------------------------------------


def _resident() -> int:
    """Resident bytes of this process after a collection and ``malloc_trim`` (Linux; 0
    where ``/proc/self/statm`` cannot be read, so the growth reads 0)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _writers(peer: Peer, elements: list[str]) -> list[Any]:
    """What ``WRITERS`` replicas, each adding every ``WRITERS``-th element, send."""
    parts = [peer.new(i) for i in range(WRITERS)]
    for i, part in enumerate(parts):
        peer.add_all(part, i, elements[i::WRITERS])
    return [peer.export(part) for part in parts]


def _merged(peer: Peer, exports: list[Any]) -> Any:
    merged = peer.new(WRITERS)
    for other in exports:
        peer.merge(merged, other)
    return merged


def _python_heap(peer: Peer, elements: list[str]) -> tuple[int, Any]:
    """Bytes of Python heap the merged replica holds (tracemalloc: live blocks only, so
    the writers' states, freed before the reading, and the elements do not count)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        merged = _merged(peer, _writers(peer, elements))
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, merged
    finally:
        tracemalloc.stop()


def _resident_growth(peer: Peer, elements: list[str]) -> tuple[int, Any]:
    """Resident-set growth while the replica merges the writers' states (those exist
    before the first reading and stay alive): what tracemalloc cannot see, the native
    memory of a library written in Rust."""
    exports = _writers(peer, elements)
    before = _resident()
    merged = _merged(peer, exports)
    after = _resident()
    del exports
    return after - before, merged


def memory(peer: Peer, size: int, limit: float) -> dict[str, Any]:
    """Bytes per element of one replica that merged ``WRITERS`` writers' states."""
    elements = items(0, size)
    with time_limit(limit * 3):
        measured = _resident_growth if peer.native else _python_heap
        nbytes, merged = measured(peer, elements)
    if peer.value(merged) != frozenset(elements):
        return {"size": size, "wrong": "the merged replica does not hold every element"}
    del merged
    plain, _kept = _python_heap(PlainSet(), elements)
    return {
        "size": size,
        "bytes_per_element": nbytes / size,
        "method": "resident set growth" if peer.native else "tracemalloc",
        "plain_bytes_per_element": plain / size,
    }


class PlainSet(Peer):
    """A plain ``set``: only for the memory reference (no replicas, nothing to merge but
    a union)."""

    def new(self, replica: int) -> Any:
        return set()

    def add_all(self, state: Any, replica: int, xs: list[str]) -> None:
        for x in xs:
            state.add(x)

    def merge(self, state: Any, other: Any) -> None:
        state |= other


def _exchange(peer: Peer, a: Any, b: Any) -> None:
    """Merge both ways: each replica takes the other's state as it was before."""
    from_a, from_b = peer.export(a), peer.export(b)
    if from_a is a:  # a peer that merges whole states: snapshot them first
        from_a, from_b = peer.fork(a, 8), peer.fork(b, 9)
    peer.merge(a, from_b)
    peer.merge(b, from_a)


def _add_wins_failures(peer: Peer) -> list[str]:
    failed: list[str] = []
    for p, q in ((0, 1), (1, 0)):
        order = f"replicas {p},{q}"
        a = peer.new(p)
        peer.add_all(a, p, ["x"])
        b = peer.fork(a, q)
        peer.add_all(a, p, ["x"])
        peer.remove_all(b, q, ["x"])
        _exchange(peer, a, b)
        if "x" not in peer.value(a) or "x" not in peer.value(b):
            failed.append(f"x added again on one replica, removed on the other: x lost ({order})")
        a, b = peer.new(p), peer.new(q)
        peer.add_all(a, p, ["x"])
        peer.add_all(b, q, ["x"])
        peer.remove_all(b, q, ["x"])
        _exchange(peer, a, b)
        if "x" not in peer.value(a) or "x" not in peer.value(b):
            failed.append(
                f"x added on one replica, added and removed on the other: x lost ({order})"
            )
    return failed


def _concurrent_failures(peer: Peer) -> list[str]:
    failed: list[str] = []
    for p, q in ((0, 1), (1, 0)):
        a = peer.new(p)
        peer.add_all(a, p, ["x", "y"])
        b = peer.fork(a, q)
        peer.remove_all(a, p, ["y"])
        peer.add_all(b, q, ["z"])
        _exchange(peer, a, b)
        values = (sorted(peer.value(a)), sorted(peer.value(b)))
        if values != (["x", "z"], ["x", "z"]):
            failed.append(
                f"y removed on one replica, z added on the other: {values[0]} and "
                f"{values[1]} where ['x', 'z'] was due (replicas {p},{q})"
            )
    return failed


def semantics(peer: Peer) -> dict[str, Any]:
    """The add-wins and concurrent-update checks, each with the replicas both ways round."""
    add_wins, kept = _add_wins_failures(peer), _concurrent_failures(peer)
    return {"add_wins": not add_wins, "concurrent_kept": not kept, "failed": add_wins + kept}


# -- one peer's process --------------------------------------------------------------------


def run_peer(peer: Peer, sizes: tuple[int, ...], runs: int, limit: float) -> dict[str, Any]:
    """Everything about one peer, as a JSON-ready dict."""
    out: dict[str, Any] = {"peer": peer.name, "python": sys.version.split()[0]}
    try:
        peer.load()
    except ModuleNotFoundError as exc:
        return out | {"installed": False, "error": f"not installed ({exc})"}
    except Exception as exc:  # a package that is there but does not import here
        return out | {"installed": False, "error": f"does not import: {type(exc).__name__}"}
    out |= {"installed": True, "version": peer.version(), "cells": {}}
    skipped: dict[str, str] = {}
    built: list[int] = []
    too_big = ""
    for size in sizes:
        t0 = time.perf_counter()
        try:
            if too_big:
                raise OverLimit
            with time_limit(limit * 2):
                st = prepare(peer, size)
        except OverLimit:
            too_big = too_big or f"building {size:,} elements took over {2 * limit:g} s"
            for work in WORKS:
                out["cells"].setdefault(work, {})[str(size)] = {"over": too_big}
            continue
        took = time.perf_counter() - t0
        if took * 10 > limit * 2:  # a ten times bigger state would not be built in time
            too_big = f"building {size:,} elements took {took:.1f} s"
        built.append(size)
        for name, todo in works(peer, st).items():
            cell: dict[str, Any] = (
                {"over": skipped[name]} if name in skipped else measure(todo, runs, limit)
            )
            out["cells"].setdefault(name, {})[str(size)] = cell
            print(f"{peer.name} {name} {size:,}: {_cell_text(cell)}", file=sys.stderr)
            if name not in skipped and ("over" in cell or cell.get("round_s", 0) * 10 > limit):
                skipped[name] = f"a batch at {size:,} predicts over {limit:g} s here"
        del st
        gc.collect()
    out["memory"] = _memory_at_largest(peer, built, limit)
    out["semantics"] = semantics(peer)
    return out


def _memory_at_largest(peer: Peer, built: list[int], limit: float) -> dict[str, Any]:
    for size in sorted(built, reverse=True):
        try:
            return memory(peer, size, limit)
        except OverLimit:
            continue
    return {"over": f"no size built within {3 * limit:g} s"}


# -- the driver ----------------------------------------------------------------------------


def _cell_text(cell: dict[str, Any]) -> str:
    if "ratios" in cell:
        text = spread_text(Spread.of(cell["ratios"]))
        n = len(cell["ratios"])
        return text if n > 1 else f"{text} (1 run)"
    if "wrong" in cell:
        return f"wrong result: {cell['wrong']}"
    return f"not measured: {cell['over']}"


def run_all(names: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each peer in a process of its own, one after another."""
    found = []
    for name in names:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--peer",
            name,
            "--runs",
            str(args.runs),
            "--limit",
            str(args.limit),
            "--sizes",
            *map(str, args.sizes),
        ]
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            done = subprocess.run(
                cmd, stdout=subprocess.PIPE, text=True, timeout=args.peer_timeout, check=False
            )
        except subprocess.TimeoutExpired:
            found.append({"peer": name, "failed": f"no answer within {args.peer_timeout:g} s"})
            continue
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            found.append({"peer": name, "failed": f"exit status {done.returncode}"})
            continue
        found.append(json.loads(lines[-1]))
    return found


def _why_not(peer: dict[str, Any]) -> str:
    """Why a peer has no figures: its process failed, or the package is not usable."""
    if "failed" in peer:
        return f"failed: {peer['failed']}"
    error = str(peer.get("error", ""))
    if error.startswith("not installed"):
        return f"not installed (`pip install {PEERS[peer['peer']].dist}`)"
    return error


def _at(size: int) -> str:
    return "" if size == max(SIZES) else f" (at {size:,} elements)"


def _memory_text(mem: dict[str, Any]) -> str:
    if "bytes_per_element" not in mem:
        return f"not measured: {mem.get('over') or mem.get('wrong')}"
    return f"{mem['bytes_per_element']:,.0f}{_at(mem['size'])}"


def report(found: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    sizes = args.sizes
    python = next((r["python"] for r in found if "python" in r), sys.version.split()[0])
    plain = "; ".join(f"{work}: {does}" for work, does in PLAIN_DOES.items())
    lines = [
        f"Python {python}, {datetime.date.today().isoformat()}; `python bench/peers.py "
        f"--runs {args.runs} --limit {args.limit:g}`; sizes "
        + ", ".join(f"{s:,}" for s in sizes)
        + ". Each peer in its own process; each cell is the peer's cost over plain "
        "Python's for the same work in that process (timer cost subtracted), the median "
        "over the runs (lowest–highest run).",
        "",
        f"Plain side: {plain}.",
        "",
        "| peer | work | " + " | ".join(f"{s:,}" for s in sizes) + " |",
        "|---|---|" + "---:|" * len(sizes),
    ]
    for peer in found:
        if not peer.get("installed", False):
            why = _why_not(peer)
            lines.append(f"| {peer['peer']} | {why} | " + " | ".join("" for _ in sizes) + " |")
            continue
        for work in WORKS:
            cells = peer["cells"].get(work, {})
            texts = [_cell_text(cells[str(s)]) if str(s) in cells else "" for s in sizes]
            lines.append(f"| {PEERS[peer['peer']].title} | {work} | " + " | ".join(texts) + " |")
    lines += [
        "",
        f"| peer | version | what it is | bytes/element of one replica merged from {WRITERS} "
        "writers | measured by | correct add-wins | other concurrent updates kept |",
        "|---|---|---|---:|---|---|---|",
    ]
    notes: list[str] = []
    plain = ""
    for peer in found:
        if not peer.get("installed", False):
            lines.append(f"| {peer['peer']} | {_why_not(peer)} | | | | | |")
            continue
        mem, sem, about = peer["memory"], peer["semantics"], PEERS[peer["peer"]]
        if "plain_bytes_per_element" in mem and not plain:
            plain = f"{mem['plain_bytes_per_element']:,.0f}{_at(mem['size'])}"
        lines.append(
            f"| {about.title} | {peer['version']} | {about.build} | {_memory_text(mem)} "
            f"| {mem.get('method', '')} | {'yes' if sem['add_wins'] else 'no'} "
            f"| {'yes' if sem['concurrent_kept'] else 'no'} |"
        )
        notes += [f"- {about.title}: {failure}" for failure in sem["failed"]]
    if plain:
        lines.append(f"| plain `set` | | | {plain} | tracemalloc | | |")
    if notes:
        lines += ["", "Semantic checks that failed:", "", *notes]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", choices=sorted(PEERS), help="measure one peer; print JSON")
    parser.add_argument("--only", nargs="+", choices=sorted(PEERS), help="peers to run")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--runs", type=int, default=5, help="independent runs (default 5)")
    parser.add_argument(
        "--limit", type=float, default=10.0, help="seconds of batches per cell (default 10)"
    )
    parser.add_argument(
        "--peer-timeout", type=float, default=900.0, help="seconds per peer process"
    )
    parser.add_argument("--json-out", type=Path, help="also write every peer's results here")
    parser.add_argument(
        "--from-json", type=Path, help="print the report of a --json-out file (no measuring)"
    )
    args = parser.parse_args(argv)
    args.sizes = sorted(set(args.sizes))
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.peer:
        result = run_peer(PEERS[args.peer], tuple(args.sizes), args.runs, args.limit)
        print(json.dumps(result))
        return 0
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        found = saved["peers"]
        args.sizes, args.runs, args.limit = saved["sizes"], saved["runs"], saved["limit"]
    else:
        found = run_all(args.only or list(PEERS), args)
    if args.json_out:
        saved = {"sizes": args.sizes, "runs": args.runs, "limit": args.limit, "peers": found}
        args.json_out.write_text(json.dumps(saved, indent=1) + "\n")
    print("\n".join(report(found, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
