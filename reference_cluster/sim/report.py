"""Seed sweeps across processes, and the table they print."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import attrs

from reference_cluster.cores.client import ClientCore
from reference_cluster.cores.server import ServerCore
from reference_cluster.sim.checkers import RunResult
from reference_cluster.sim.mutants import MUTANTS
from reference_cluster.sim.runner import ClientFactory, ServerFactory, SimConfig, Simulation
from reference_cluster.sim.workload import DocumentModel, SetModel, ShoppingListModel

__all__ = [
    "RunOptions",
    "Summary",
    "format_summary",
    "placement_shares",
    "run_options",
    "summarize",
    "sweep",
]


@attrs.frozen
class RunOptions:
    """What to simulate, by name, so that it can cross into worker processes."""

    model: str = "shopping_list"
    mutant: str | None = None
    config: SimConfig = attrs.field(factory=SimConfig)


def _model(name: str) -> DocumentModel[Any]:
    if name == "shopping_list":
        return ShoppingListModel()
    if name == "aworset":
        return SetModel()
    raise ValueError(f"unknown model {name!r}; expected 'shopping_list' or 'aworset'")


def run_options(
    seed: int, options: RunOptions, *, trace: bool = False
) -> tuple[RunResult, list[str]]:
    """Run one seed as ``options`` say; return the result and the trace lines (if asked)."""

    server: ServerFactory = ServerCore
    client: ClientFactory = ClientCore
    if options.mutant is not None:
        if options.mutant not in MUTANTS:
            raise ValueError(
                f"unknown mutant {options.mutant!r}; expected one of {sorted(MUTANTS)}"
            )
        role, cls = MUTANTS[options.mutant]
        if role == "server":
            server = cls
        else:
            client = cls
    sim = Simulation(
        seed,
        config=options.config,
        model=_model(options.model),
        server_factory=server,
        client_factory=client,
        trace=trace,
    )
    result = sim.run()
    return result, list(sim.trace_lines or [])


def _one(job: tuple[int, RunOptions]) -> RunResult:
    logging.getLogger("reference_cluster").setLevel(logging.CRITICAL)
    return run_options(job[0], job[1])[0]


def sweep(
    seeds: Iterable[int], options: RunOptions, *, workers: int | None = None
) -> list[RunResult]:
    """Run every seed, in ``workers`` processes (default: one per CPU); results by seed."""
    jobs = [(s, options) for s in seeds]
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        return [_one(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_one, jobs, chunksize=max(1, len(jobs) // (workers * 8))))


@attrs.frozen
class Summary:
    """Totals over a sweep."""

    seeds: int
    failed: tuple[int, ...]
    divergent: int
    lost_acked: int
    acked_not_durable: int
    short_replies: int
    counter_violations: int
    phantoms: int
    shrunk: int
    reused_dots: int
    unsynced_clients: int
    max_rounds: int | None
    rounds: dict[str, int]
    edits: int
    acked: int
    messages_per_edit: float
    bytes_per_edit: float
    client_messages_per_edit: float
    client_bytes_per_edit: float
    stats: dict[str, int] = attrs.field(factory=dict)
    forged: int = 0
    misplaced: int = 0
    lost_handoffs: int = 0


def summarize(results: Sequence[RunResult], *, max_rounds: int = 2) -> Summary:
    """Add up a sweep's results."""
    edits = sum(r.edits for r in results) or 1
    rounds = Counter("never" if r.rounds is None else str(r.rounds) for r in results)
    converged = [r.rounds for r in results if r.rounds is not None]
    stats: Counter[str] = Counter()
    for r in results:
        stats.update(dict(r.stats))
    never = any(r.rounds is None for r in results)
    return Summary(
        seeds=len(results),
        failed=tuple(r.seed for r in results if not r.ok(max_rounds)),
        divergent=sum(r.divergent for r in results),
        lost_acked=sum(r.lost_acked for r in results),
        acked_not_durable=sum(r.acked_not_durable for r in results),
        short_replies=sum(r.short_replies for r in results),
        counter_violations=sum(r.counter_violations for r in results),
        phantoms=sum(r.phantoms for r in results),
        shrunk=sum(r.shrunk for r in results),
        reused_dots=sum(r.reused_dots for r in results),
        unsynced_clients=sum(r.unsynced_clients for r in results),
        max_rounds=None if never or not converged else max(converged),
        rounds=dict(sorted(rounds.items())),
        edits=sum(r.edits for r in results),
        acked=sum(r.acked for r in results),
        messages_per_edit=sum(r.messages for r in results) / edits,
        bytes_per_edit=sum(r.wire_bytes for r in results) / edits,
        client_messages_per_edit=sum(r.client_messages for r in results) / edits,
        client_bytes_per_edit=sum(r.client_bytes for r in results) / edits,
        stats=dict(sorted(stats.items())),
        forged=sum(r.forged for r in results),
        misplaced=sum(r.misplaced for r in results),
        lost_handoffs=sum(r.lost_handoffs for r in results),
    )


def placement_shares(s: Summary) -> dict[str, float]:
    """Server -> the share of all the sweep's lists it held (N/M when balanced)."""
    lists = s.stats.get("placement: lists", 0)
    prefix = "placement: lists held by "
    return {
        k.removeprefix(prefix): v / lists
        for k, v in s.stats.items()
        if k.startswith(prefix) and lists
    }


def format_summary(s: Summary, wall: float | None = None) -> str:
    """The sweep table, as printed by ``python -m reference_cluster.sim``."""
    rows = [
        ("seeds", f"{s.seeds}"),
        ("failed seeds", f"{len(s.failed)}"),
        ("divergent lists", f"{s.divergent}"),
        ("lost acknowledged edits", f"{s.lost_acked}"),
        ("acknowledged before durable", f"{s.acked_not_durable}"),
        ("replies that left a client short", f"{s.short_replies}"),
        ("counter violations", f"{s.counter_violations}"),
        ("phantom items", f"{s.phantoms}"),
        ("replicas that shrank", f"{s.shrunk}"),
        ("reused dots", f"{s.reused_dots}"),
        ("forged dots or claims accepted", f"{s.forged}"),
        ("lists kept by a server that does not hold them", f"{s.misplaced}"),
        ("lists forgotten before their holders had them", f"{s.lost_handoffs}"),
        ("clients not synced at the end", f"{s.unsynced_clients}"),
        (
            "max rounds to converge after heal",
            "never" if s.max_rounds is None else f"{s.max_rounds}",
        ),
        ("runs by rounds to converge", ", ".join(f"{k}: {v}" for k, v in s.rounds.items())),
        ("client edits (acknowledged)", f"{s.edits} ({s.acked})"),
        ("messages per edit, all traffic", f"{s.messages_per_edit:.1f}"),
        ("bytes per edit, all traffic", f"{s.bytes_per_edit:,.0f}"),
        ("messages per edit, client path", f"{s.client_messages_per_edit:.1f}"),
        ("bytes per edit, client path", f"{s.client_bytes_per_edit:,.0f}"),
    ]
    shares = placement_shares(s)
    if shares:
        rows.append(
            (
                "share of the lists per server",
                f"{min(shares.values()):.3f} to {max(shares.values()):.3f}",
            )
        )
    if wall is not None:
        rows.append(("wall time", f"{wall:.1f} s"))
    if s.stats:
        rows.append(("", ""))
        rows.append(("faults injected and coped with", "total"))
        rows.extend((f"  {k}", f"{v:,}") for k, v in s.stats.items())
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
