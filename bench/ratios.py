"""Print the ratio table: each CRDT operation's cost over the same work done plain, in runs.

Usage::

    .venv/bin/python bench/ratios.py                  # 5 runs of everything (about 2 minutes)
    .venv/bin/python bench/ratios.py --runs 3 --sizes 1000 --no-footprint  # a quick look
    .venv/bin/python bench/ratios.py --json out.json  # ratios from a pytest-benchmark run
                                                      # (pytest bench --benchmark-json=out.json)

How it measures:

- **Runs.** ``--runs`` (default 5) independent runs in one process; each run builds every
  case's states afresh and measures every case once, so a run that met a busy spell of the
  machine shows up as a run, not as a few rounds hidden in a median. Every ratio is the
  median over the runs, written with the lowest and highest run: ``11.1x (10.6-11.8)``.
  Verdicts use the median.
- **Rounds.** In a run the two sides of a case alternate round by round (in alternating
  order), so both see the same machine load. A round copies the states (untimed) and
  times one batch in CPU time of this process (``time.process_time``), which other work
  on a shared machine does not inflate. A run's figure for a side is the median round.
- **The timer's own cost** (an empty batch timed the same way, measured at the start of
  every run: ``timing.timer_cost``) is subtracted from every timed batch on both sides
  before dividing by the operations; the output says how much that was.
- **Delta-join scaling.** A one-element delta join should cost the same at every state
  size. Both sides slow down in a bigger state (cache misses in a bigger table), so the
  check compares the CRDT's growth from the smallest to the largest size with the plain
  side's growth over the same sizes, run by run: (CRDT cost at the largest / at the
  smallest) / (plain cost at the largest / at the smallest), which is the ratio at the
  largest size over the ratio at the smallest. The target is that this is at most 2x.

Then come the footprint reports: memory, garbage collector, causal context after sync,
encoded size. The printed output is markdown, ready to paste into ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import footprint
import timing
from timing import Spread, spread_text
from workloads import SIZES, Case, Workload, cases

PerOp = tuple[float, float]
"""(CRDT, plain) seconds per operation in one run."""

Runs = dict[str, list[PerOp]]
"""Case id -> one ``PerOp`` per run."""

SCALING_TARGET = 2.0
"""A delta join's growth from the smallest to the largest state, beyond plain Python's."""


_previous: dict[int, tuple[object, ...]] = {}


def _time(workload: Workload, cost: float) -> float:
    """CPU seconds of one timed batch, less the timer's own cost.

    The previous round's states stay alive until the next copy exists (as in
    pytest-benchmark): freeing a big state first lets the C allocator hand the memory
    back to the system, and the next round would then pay page faults for it.
    """
    args = workload.setup()
    _previous[id(workload)] = args
    return timing.timed(workload.run, args, cost)


def measure(case: Case, cost: float) -> PerOp:
    """One run of a case: median seconds per operation of each side, rounds interleaved."""
    pair = case.pair()
    crdt: list[float] = []
    plain: list[float] = []
    _time(pair.crdt, cost)  # warm up
    _time(pair.plain, cost)
    for i in range(case.rounds):
        if i % 2:
            plain.append(_time(pair.plain, cost))
            crdt.append(_time(pair.crdt, cost))
        else:
            crdt.append(_time(pair.crdt, cost))
            plain.append(_time(pair.plain, cost))
    _previous.clear()
    gc.collect()
    return statistics.median(crdt) / case.ops, statistics.median(plain) / case.ops


def measure_runs(all_cases: list[Case], runs: int) -> tuple[Runs, list[float]]:
    """``runs`` runs of every case; also the timer cost subtracted in each run."""
    found: Runs = {case.id: [] for case in all_cases}
    costs: list[float] = []
    for run in range(runs):
        cost = timing.timer_cost()
        costs.append(cost)
        print(f"run {run + 1}/{runs}: timer cost {cost * 1e9:,.0f} ns", file=sys.stderr)
        for case in all_cases:
            if run == 0:
                case.check()
            mine, plain = measure(case, cost)
            found[case.id].append((mine, plain))
            print(f"  {case.id}: {mine / plain:.1f}x", file=sys.stderr, flush=True)
    return found, costs


def from_json(path: Path, all_cases: list[Case]) -> tuple[Runs, str]:
    """Per-operation medians from a pytest-benchmark JSON file, as one run each.

    The timer the file names is timed here on an empty batch and its cost subtracted
    from each median round (measured in this process, not in the benchmark's).
    """
    ops = {case.id: case.ops for case in all_cases}
    data = json.loads(path.read_text())
    found: dict[str, dict[str, float]] = {}
    names: set[str] = set()
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        found.setdefault(info["case"], {})[info["impl"]] = bench["stats"]["median"]
        names.add(str(bench.get("options", {}).get("timer", "")).removeprefix("time."))
    timer = timing.TIMERS.get(names.pop()) if len(names) == 1 else None
    if timer is None:
        cost, note = 0.0, "the file's timer is not one this script knows: nothing subtracted"
    else:
        cost = timing.timer_cost(timer=timer)
        note = f"its timer's own cost here, {cost * 1e9:,.0f} ns, subtracted from each batch"
    runs: Runs = {
        case_id: [((sides["crdt"] - cost) / ops[case_id], (sides["plain"] - cost) / ops[case_id])]
        for case_id, sides in found.items()
        if "crdt" in sides and "plain" in sides and case_id in ops
    }
    return runs, note


def _ns(seconds: float) -> str:
    return f"{seconds * 1e9:,.0f}"


def _ratios(per_run: Sequence[PerOp]) -> Spread:
    return Spread.of([mine / plain for mine, plain in per_run])


def _rows(all_cases: list[Case]) -> list[list[Case]]:
    """The cases grouped by (type, operation), in order, each group by size."""
    groups: dict[tuple[str, str], list[Case]] = {}
    for case in all_cases:
        groups.setdefault((case.kind, case.op), []).append(case)
    return [sorted(group, key=lambda c: c.size) for group in groups.values()]


def ratio_table(all_cases: list[Case], runs: Runs, sizes: tuple[int, ...]) -> list[str]:
    head = "| type | operation | plain side does | " + " | ".join(f"{s:,}" for s in sizes)
    lines = [head + " | target |", "|---|---|---|" + "---:|" * len(sizes) + "---|"]
    for row in _rows(all_cases):
        measured = {c.size: _ratios(runs[c.id]) for c in row if runs.get(c.id)}
        cells = [spread_text(measured[s]) if s in measured else "" for s in sizes]
        first = row[0]
        does = first.plain_does.replace("|", "\\|")  # a bar would end the table cell
        lines.append(
            f"| {first.kind} | {first.op} | `{does}` | "
            + " | ".join(cells)
            + f" | {verdict(measured, first.target)} |"
        )
    return lines


def verdict(measured: dict[int, Spread], target: float) -> str:
    """Met when the median ratio is within the target at every size measured."""
    if not measured:
        return f"<= {target:g}x: not measured"
    worst_size = max(measured, key=lambda s: measured[s].median)
    worst = measured[worst_size]
    if worst.median > target:
        return f"<= {target:g}x: NOT met ({worst.median:.1f}x at {worst_size:,})"
    high = max(s.high for s in measured.values())
    if high > target:
        return f"<= {target:g}x: met (single runs up to {high:.1f}x)"
    return f"<= {target:g}x: met"


def cost_table(all_cases: list[Case], runs: Runs) -> list[str]:
    lines = [
        "| case | CRDT ns/op | plain ns/op | ratio (runs: min–max) |",
        "|---|---:|---:|---:|",
    ]
    for case in all_cases:
        per_run = runs.get(case.id)
        if per_run:
            mine = statistics.median(m for m, _ in per_run)
            plain = statistics.median(p for _, p in per_run)
            lines.append(
                f"| {case.id} | {_ns(mine)} | {_ns(plain)} | {spread_text(_ratios(per_run))} |"
            )
    return lines


def scaling(all_cases: list[Case], runs: Runs) -> list[str]:
    """Delta-join cost at the largest size over the smallest, beyond plain Python's growth.

    Judged run by run on (CRDT growth) / (plain growth), median over the runs: the
    plain side's own slow-down in a bigger state (cache misses) is not the CRDT's.
    """
    lines = [
        "| case | CRDT ns/op, smallest -> largest | CRDT growth | plain growth "
        f"| CRDT growth beyond plain's | target <= {SCALING_TARGET:g}x |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in _rows(all_cases):
        done = [c for c in row if c.op.endswith("delta join") and runs.get(c.id)]
        if len(done) < 2:
            continue
        small, big = runs[done[0].id], runs[done[-1].id]
        pairs = list(zip(small, big, strict=True))
        crdt = Spread.of([b[0] / s[0] for s, b in pairs])
        plain = Spread.of([b[1] / s[1] for s, b in pairs])
        beyond = Spread.of([(b[0] / s[0]) / (b[1] / s[1]) for s, b in pairs])
        met = "met" if beyond.median <= SCALING_TARGET else "NOT met"
        costs = (
            f"{_ns(statistics.median(m for m, _ in small))} -> "
            f"{_ns(statistics.median(m for m, _ in big))} "
            f"({done[0].size:,} -> {done[-1].size:,})"
        )
        lines.append(
            f"| {done[0].kind} {done[0].op} | {costs} | {spread_text(crdt)} "
            f"| {spread_text(plain)} | {spread_text(beyond)} | {met} |"
        )
    return lines


def table(rows: list[tuple[str, ...]], head: tuple[str, ...]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def preamble(runs: int, costs: list[float]) -> list[str]:
    today = datetime.date.today().isoformat()
    cost = Spread.of(costs)
    return [
        f"Python {sys.version.split()[0]}, {today}; {runs} runs in one process, each "
        "building its states afresh. Each cell: the median ratio (CRDT / plain) over the "
        "runs, then the lowest and highest run.",
        "",
        "Timed in CPU time (`time.process_time`). The timer's own cost, measured on an "
        f"empty batch at the start of each run, {_ns(cost.median)} ns per batch (runs: "
        f"{_ns(cost.low)}–{_ns(cost.high)}), was subtracted from every timed batch on both "
        "sides before dividing by the operations in the batch.",
        "",
        "Size = entries in the state: elements of a set; (replica, count) entries of a "
        "counter's tallies (a PNCounter of n entries has n/2 replicas in each tally).",
    ]


def _footprint(sizes: tuple[int, ...]) -> None:
    big = max(sizes)
    print(f"\nMemory at {big:,} elements (tracemalloc; elements excluded):\n")
    rows = footprint.memory(big)
    print("\n".join(table(rows, ("state", "bytes/element", "gc-tracked objects/element"))))
    print(f"\nGarbage collector, add/remove churn at {big:,} elements:\n")
    gc_head = ("state", "collector", "ns/op", "vs enabled", "time in gc", "gen0/1/2 runs")
    print("\n".join(table(footprint.gc_effect(big), gc_head)))
    print("\nCausal context after all replicas synced:\n")
    sync_head = ("run", "largest cloud on the way", "vector entries / cloud dots", "converged")
    print("\n".join(table(footprint.context_after_sync(), sync_head)))
    print("\nEncoded size (canonical JSON) beside a JSON list of the elements:\n")
    rows = footprint.encoded_size(tuple(sorted({min(sizes), big})))
    print("\n".join(table(rows, ("state", "bytes/element", "JSON list"))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--runs", type=int, default=5, help="independent runs (default 5)")
    parser.add_argument("--json", type=Path, help="read a pytest-benchmark JSON file instead")
    parser.add_argument("--no-footprint", action="store_true", help="skip memory/gc/encoding")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    sizes = tuple(sorted(set(args.sizes)))
    all_cases = list(cases(sizes))

    if args.json:
        runs, note = from_json(args.json, all_cases)
        print(
            f"Python {sys.version.split()[0]}; one pytest-benchmark run ({args.json.name}), "
            f"{note}; medians of its rounds; ratio = CRDT / plain."
        )
    else:
        runs, costs = measure_runs(all_cases, args.runs)
        print("\n".join(preamble(args.runs, costs)))
    print()
    print("\n".join(ratio_table(all_cases, runs, sizes)))
    lines = scaling(all_cases, runs)
    if len(lines) > 2:
        print(
            "\nDelta-join scaling: cost per delta at the largest state over the smallest, "
            "for the CRDT and for plain Python, judged on the CRDT's growth beyond plain's "
            "(median over the runs, lowest and highest run):\n"
        )
        print("\n".join(lines))
    print("\nPer operation (medians over the runs):\n")
    print("\n".join(cost_table(all_cases, runs)))
    if not args.no_footprint:
        _footprint(sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
