"""Print the ratio table: each CRDT operation's median cost over the same work done plain.

Usage::

    .venv/bin/python bench/ratios.py                 # measure everything (under a minute)
    .venv/bin/python bench/ratios.py --sizes 1000    # a quick look at one size
    .venv/bin/python bench/ratios.py --json out.json # ratios from a pytest-benchmark run
                                                     # (pytest bench --benchmark-json=out.json)

Measuring here, the two sides of a case alternate round by round (in alternating order),
so both see the same machine load, and each round is timed in CPU time of this process
(``time.process_time``), which other work on a shared machine does not inflate. The table
quotes medians over the rounds. Then come the delta-join scaling check, which reports and
never fails, and the footprint reports: memory, garbage collector, causal context after
sync, encoded size.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import footprint
from workloads import SIZES, Case, Workload, cases

Medians = dict[str, tuple[float, float]]
"""Case id -> (CRDT, plain) median seconds per operation."""


_previous: dict[int, tuple[object, ...]] = {}


def _time(workload: Workload) -> float:
    """CPU seconds of one timed batch: the process's own time, so that other work on a
    shared machine does not count (the collector and allocator run in the process).

    The previous round's states stay alive until the next copy exists (as in
    pytest-benchmark): freeing a big state first lets the C allocator hand the memory
    back to the system, and the next round would then pay page faults for it.
    """
    args = workload.setup()
    _previous[id(workload)] = args
    t0 = time.process_time()
    workload.run(*args)
    return time.process_time() - t0


def measure(case: Case) -> tuple[float, float]:
    """Median seconds per operation of the CRDT side and the plain side, interleaved."""
    case.check()
    pair = case.pair()
    crdt: list[float] = []
    plain: list[float] = []
    _time(pair.crdt)  # warm up
    _time(pair.plain)
    for i in range(case.rounds):
        if i % 2:
            plain.append(_time(pair.plain))
            crdt.append(_time(pair.crdt))
        else:
            crdt.append(_time(pair.crdt))
            plain.append(_time(pair.plain))
    _previous.clear()
    gc.collect()
    return statistics.median(crdt) / case.ops, statistics.median(plain) / case.ops


def from_json(path: Path, all_cases: list[Case]) -> Medians:
    """Per-operation medians from a pytest-benchmark JSON file."""
    ops = {case.id: case.ops for case in all_cases}
    found: dict[str, dict[str, float]] = {}
    for bench in json.loads(path.read_text())["benchmarks"]:
        info = bench["extra_info"]
        found.setdefault(info["case"], {})[info["impl"]] = bench["stats"]["median"]
    return {
        case_id: (sides["crdt"] / ops[case_id], sides["plain"] / ops[case_id])
        for case_id, sides in found.items()
        if "crdt" in sides and "plain" in sides
    }


def _ns(seconds: float) -> str:
    return f"{seconds * 1e9:,.0f}"


def ratio_table(all_cases: list[Case], medians: Medians, sizes: tuple[int, ...]) -> list[str]:
    head = "| type | operation | plain side does | " + " | ".join(f"{s:,}" for s in sizes)
    lines = [
        head + " | target |",
        "|---|---|---|" + "---:|" * len(sizes) + "---|",
    ]
    seen: list[tuple[str, str]] = []
    for case in all_cases:
        if (case.kind, case.op) not in seen:
            seen.append((case.kind, case.op))
    for kind, op in seen:
        row = [c for c in all_cases if (c.kind, c.op) == (kind, op)]
        cells = []
        for size in sizes:
            hit = [c for c in row if c.size == size and c.id in medians]
            if hit:
                mine, plain = medians[hit[0].id]
                cells.append(f"{mine / plain:.1f}x")
            else:
                cells.append("")
        target = row[0].target
        verdict = _verdict([medians[c.id] for c in row if c.id in medians], target)
        lines.append(
            f"| {kind} | {op} | `{row[0].plain_does}` | " + " | ".join(cells) + f" | {verdict} |"
        )
    return lines


def _verdict(measured: list[tuple[float, float]], target: float | None) -> str:
    if target is None:
        return "see scaling"
    worst = max((mine / plain for mine, plain in measured), default=0.0)
    return f"<= {target:g}x: {'met' if worst <= target else 'NOT met'}"


def cost_table(all_cases: list[Case], medians: Medians) -> list[str]:
    lines = ["| case | CRDT ns/op | plain ns/op | ratio |", "|---|---:|---:|---:|"]
    for case in all_cases:
        if case.id in medians:
            mine, plain = medians[case.id]
            lines.append(f"| {case.id} | {_ns(mine)} | {_ns(plain)} | {mine / plain:.1f}x |")
    return lines


def scaling(all_cases: list[Case], medians: Medians) -> list[str]:
    """Delta-join cost at the largest size over the smallest: the target is within 2x."""
    lines = []
    for kind in ("AWORSet", "GCounter", "PNCounter"):
        row = sorted(
            (c for c in all_cases if c.kind == kind and c.op == "delta join" and c.id in medians),
            key=lambda c: c.size,
        )
        if len(row) < 2:
            continue
        small, big = medians[row[0].id][0], medians[row[-1].id][0]
        verdict = "met" if big / small <= 2 else "NOT met"
        lines.append(
            f"- {kind} delta join: {_ns(small)} ns/op at {row[0].size:,}, {_ns(big)} ns/op at "
            f"{row[-1].size:,}: {big / small:.2f}x (target <= 2x: {verdict})"
        )
    return lines


def table(rows: list[tuple[str, ...]], head: tuple[str, ...]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--json", type=Path, help="read a pytest-benchmark JSON file instead")
    parser.add_argument("--no-footprint", action="store_true", help="skip memory/gc/encoding")
    args = parser.parse_args(argv)
    sizes = tuple(args.sizes)
    all_cases = list(cases(sizes))

    if args.json:
        medians = from_json(args.json, all_cases)
    else:
        medians = {}
        for case in all_cases:
            medians[case.id] = measure(case)
            mine, plain = medians[case.id]
            print(f"  {case.id}: {mine / plain:.1f}x", file=sys.stderr, flush=True)

    timer = "pytest-benchmark's timer" if args.json else "CPU time"
    print(f"Python {sys.version.split()[0]}; medians of {timer}; ratio = CRDT / plain.\n")
    print("\n".join(ratio_table(all_cases, medians, sizes)))
    print("\nDelta-join scaling (cost per delta, largest state over smallest):")
    print("\n".join(scaling(all_cases, medians)))
    print("\nPer operation:\n")
    print("\n".join(cost_table(all_cases, medians)))

    if not args.no_footprint:
        big = max(sizes)
        print(f"\nMemory at {big:,} elements (tracemalloc; elements excluded):\n")
        rows = footprint.memory(big)
        print(
            "\n".join(table(rows, ("state", "bytes/element", "gc-tracked objects/element"))),
        )
        print(f"\nGarbage collector, add/remove churn at {big:,} elements:\n")
        head = ("state", "collector", "ns/op", "vs enabled", "time in gc", "gen0/1/2 runs")
        print("\n".join(table(footprint.gc_effect(big), head)))
        print("\nCausal context after all replicas synced:\n")
        head = ("run", "largest cloud on the way", "vector entries / cloud dots", "converged")
        print("\n".join(table(footprint.context_after_sync(), head)))
        print("\nEncoded size (canonical JSON) beside a JSON list of the elements:\n")
        rows = footprint.encoded_size(tuple(sorted({min(sizes), big})))
        print("\n".join(table(rows, ("state", "bytes/element", "JSON list"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
