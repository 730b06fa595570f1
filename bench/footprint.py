"""What a state costs besides time: memory, garbage-collector work, metadata, encoding.

Each function returns rows for ``ratios.py`` to print; none asserts anything.
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from workloads import REPLICAS, items, spread, synced_set

from crdts import AWORSet

Row = tuple[str, ...]


def _traced_bytes(build: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes still allocated after ``build()`` returns (its result is kept alive)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, result


def _tracked_objects(build: Callable[[], Any]) -> tuple[int, Any]:
    """How many more objects the garbage collector tracks once ``build()``'s result exists."""
    gc.collect()
    before = len(gc.get_objects())
    result = build()
    gc.collect()
    return len(gc.get_objects()) - before, result


def _concurrently_added(elements: list[str]) -> AWORSet:
    """Every element added by two replicas concurrently, so each keeps two dots."""
    a, b = AWORSet(), AWORSet()
    for x in elements:
        a.add("a", x)
        b.add("b", x)
    a.join(b)
    return a


def memory(size: int = 100_000) -> list[Row]:
    """Bytes and garbage-collected objects per element; the elements themselves excluded."""
    elements = items(0, size)
    shapes: list[tuple[str, Callable[[], Any]]] = [
        ("plain set", lambda: set(elements)),
        ("AWORSet, one writer", lambda: _one_writer(elements)),
        ("AWORSet, four writers, synced", lambda: synced_set(elements)),
        ("AWORSet, every element added concurrently twice", lambda: _concurrently_added(elements)),
    ]
    rows: list[Row] = []
    for name, build in shapes:
        nbytes, kept = _traced_bytes(build)
        del kept
        tracked, kept = _tracked_objects(build)
        del kept
        rows.append((name, f"{nbytes / size:.0f}", f"{tracked / size:.2f}"))
    return rows


def _one_writer(elements: list[str]) -> AWORSet:
    s = AWORSet()
    for x in elements:
        s.add("a", x)
    return s


class _CollectorClock:
    """Counts collections and the time spent in them, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start
            self.collections[info["generation"]] += 1


def _churn_set(state: AWORSet, new: list[str], old: list[str]) -> None:
    for x, y in zip(new, old, strict=True):
        _delta = state.add("a", x)
        _delta = state.remove("a", y)


def _churn_plain(state: set[str], new: list[str], old: list[str]) -> None:
    for x, y in zip(new, old, strict=True):
        state.add(x)
        _delta = {x}
        state.discard(y)
        _delta = {y}


def gc_effect(size: int = 100_000, ops: int = 100_000, rounds: int = 5) -> list[Row]:
    """Churn on a long-lived set of ``size`` elements under each collector setting.

    Each round copies the state and times ``ops`` operations: adds of new elements and
    removes of old ones, alternately, returning deltas; the size stays put. Settings:

    * enabled: a full collection first, so the copy is old, as in a long-running process;
    * disabled: the same, then ``gc.disable()``;
    * frozen: ``gc.freeze()`` instead of the collection, which moves everything alive
      into a generation the collector never walks.
    """
    elements = items(0, size)
    new, old = items(size, ops // 2), spread(elements, ops // 2)
    crdt_base, plain_base = synced_set(elements), set(elements)
    modes = ("enabled", "disabled", "frozen")
    sides: list[tuple[str, Callable[[], Any], Callable[[Any, list[str], list[str]], None]]] = [
        ("AWORSet", crdt_base.copy, _churn_set),
        ("plain set", lambda: set(plain_base), _churn_plain),
    ]
    results: dict[tuple[str, str], list[tuple[float, float, list[int]]]] = {}
    was_enabled = gc.isenabled()
    try:
        for i in range(rounds):
            for mode in modes[i % 3 :] + modes[: i % 3]:
                for name, copy, churn in sides:
                    state = copy()
                    if mode == "frozen":
                        gc.freeze()
                    else:
                        gc.collect()
                    if mode == "disabled":
                        gc.disable()
                    clock = _CollectorClock()
                    gc.callbacks.append(clock)
                    t0 = time.process_time()
                    churn(state, new, old)
                    elapsed = time.process_time() - t0
                    gc.callbacks.remove(clock)
                    gc.unfreeze()
                    gc.enable()
                    del state
                    runs = results.setdefault((name, mode), [])
                    runs.append((elapsed / ops, clock.seconds / elapsed, clock.collections))
    finally:
        gc.unfreeze()
        if not was_enabled:
            gc.disable()
    rows: list[Row] = []
    for name, _, _ in sides:
        enabled = statistics.median(r[0] for r in results[(name, "enabled")])
        for mode in modes:
            runs = results[(name, mode)]
            per_op = statistics.median(r[0] for r in runs)
            share = statistics.median(r[1] for r in runs)
            counts = runs[len(runs) // 2][2]
            rows.append(
                (
                    name,
                    mode,
                    f"{per_op * 1e9:,.0f}",
                    f"{per_op / enabled:.2f}x",
                    f"{share:.0%}",
                    "/".join(map(str, counts)),
                )
            )
    for name, copy, _ in sides:
        state = copy()
        gc.collect()
        t0 = time.process_time()
        gc.collect()
        elapsed = time.process_time() - t0
        del state
        rows.append((name, "one full gc.collect()", f"{elapsed * 1e6:,.0f} us", "", "", ""))
    return rows


def _edit_and_sync(loss: float, ops: int, seed: int) -> tuple[int, int, int, bool]:
    """Four replicas edit one set and send each other every delta; ``loss`` of them are
    lost and the rest arrive in random order. At the end the rest is delivered, then (if
    any were lost) every replica joins every other's full state, as anti-entropy would.

    Returns the largest cloud seen on the way, then the most vector entries and cloud
    dots of any replica at the end, and whether all replicas ended equal.
    """
    rng = random.Random(seed)
    replicas = {r: AWORSet() for r in REPLICAS}
    pending: list[tuple[str, AWORSet]] = []
    elements = items(0, 500)
    worst_cloud = 0
    for i in range(ops):
        r = rng.choice(REPLICAS)
        s = replicas[r]
        x = rng.choice(elements)
        delta = s.remove(r, x) if x in s and rng.random() < 0.4 else s.add(r, x)
        pending += [(t, delta) for t in REPLICAS if t != r and rng.random() >= loss]
        if len(pending) > 40:  # deliver a random half, out of order
            rng.shuffle(pending)
            half = len(pending) // 2
            for target, d in pending[:half]:
                replicas[target].join(d)
            del pending[:half]
        if i % 100 == 0:
            worst_cloud = max(worst_cloud, *(s.context.cloud_size() for s in replicas.values()))
    for target, d in pending:
        replicas[target].join(d)
    if loss:
        for a in replicas.values():
            for b in replicas.values():
                a.join(b)
    contexts = [s.context for s in replicas.values()]
    converged = len({s.digest() for s in replicas.values()}) == 1
    entries = max(len(c.vv) for c in contexts)
    return worst_cloud, entries, max(c.cloud_size() for c in contexts), converged


def context_after_sync(ops: int = 20_000, seed: int = 1) -> list[Row]:
    """The causal context of four replicas after ``ops`` edits, once every replica has
    everything (see :func:`_edit_and_sync`), with no delta lost and with one in ten lost."""
    rows: list[Row] = []
    for loss, how in ((0.0, "every delta delivered, out of order"), (0.1, "1 delta in 10 lost")):
        worst, entries, cloud, converged = _edit_and_sync(loss, ops, seed)
        end = "then a full-state sync" if loss else "no full-state sync"
        rows.append(
            (
                f"{ops:,} edits, {len(REPLICAS)} replicas, {how}, {end}",
                f"{worst:,}",
                f"{entries} / {cloud}",
                "yes" if converged else "NO",
            )
        )
    return rows


def encoded_size(sizes: tuple[int, ...] = (1_000, 100_000)) -> list[Row]:
    """Bytes per element of the canonical encoding, beside a JSON list of the elements."""
    rows: list[Row] = []
    for size in sizes:
        elements = items(0, size)
        plain = len(json.dumps(sorted(elements), separators=(",", ":")).encode())
        state = synced_set(elements)
        encoded = len(state.to_json())
        rows.append(
            (
                f"{size:,} elements, four writers",
                f"{encoded / size:.1f} B",
                f"{plain / size:.1f} B ({encoded / plain:.2f}x)",
            )
        )
    return rows
