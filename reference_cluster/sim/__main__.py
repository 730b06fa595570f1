"""``python -m reference_cluster.sim``: sweep seeds, or replay one with its trace.

python -m reference_cluster.sim --seeds 1000           # sweep seeds 0..999
python -m reference_cluster.sim --seed 17 --trace      # replay seed 17 exactly
python -m reference_cluster.sim --seeds 50 --mutant ack-before-persist
python -m reference_cluster.sim --seeds 300 --replicas 3     # each list on 3 of 5 servers
python -m reference_cluster.sim --seeds 300 --replicas 3 --write-quorum 3
python -m reference_cluster.sim --seeds 300 --replicas 3 --spares 1   # servers join and leave
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from reference_cluster.sim.mutants import MUTANTS
from reference_cluster.sim.report import RunOptions, format_summary, run_options, summarize, sweep
from reference_cluster.sim.runner import SimConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reference_cluster.sim",
        description="Run the cluster's cores through seeded fault schedules and check them.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--seeds", type=int, metavar="N", help="sweep N seeds")
    what.add_argument("--seed", type=int, metavar="S", help="run one seed")
    p.add_argument("--start", type=int, default=0, help="first seed of a sweep (default 0)")
    p.add_argument("--trace", action="store_true", help="print the trace of --seed")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    p.add_argument("--model", choices=["shopping_list", "aworset"], default="shopping_list")
    p.add_argument(
        "--mutant",
        choices=sorted(MUTANTS),
        default=None,
        help="replace a core with a deliberately broken one",
    )
    p.add_argument("--servers", type=int, default=5)
    p.add_argument(
        "--replicas",
        type=int,
        default=None,
        metavar="N",
        help="servers that hold each list (default: every server)",
    )
    p.add_argument(
        "--write-quorum",
        type=int,
        default=None,
        metavar="W",
        help="servers that hold an edit durably before it is acknowledged (default 2, or "
        "1 with one replica)",
    )
    p.add_argument(
        "--spares",
        type=int,
        default=0,
        metavar="K",
        help="servers outside the first membership; each run then changes the membership "
        "once or twice (a spare joins, a member leaves, or both) before the heal",
    )
    p.add_argument("--brokers", type=int, default=2)
    p.add_argument("--clients", type=int, default=3)
    p.add_argument(
        "--max-rounds",
        type=int,
        default=2,
        help="fail a run that converges later than this (default 2)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show the cores' log lines")
    return p


def _shape(argv: Sequence[str] | None) -> str:
    """The flags of ``argv`` that a replay of one seed needs (all but the sweep's)."""
    words = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    skip = {"--seeds", "--start", "--workers"}
    i = 0
    while i < len(words):
        word = words[i]
        name = word.split("=", 1)[0]
        takes_value = name not in {"--trace", "-v", "--verbose"} and "=" not in word
        if name not in skip:
            out.append(word)
            if takes_value and i + 1 < len(words):
                out.append(words[i + 1])
        i += 2 if takes_value else 1
    return "".join(f" {w}" for w in out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 when every run passed every check."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if min(args.servers, args.brokers, args.clients) < 1:
        print("servers, brokers and clients must be at least 1", file=sys.stderr)
        return 2
    if args.replicas is not None and args.replicas < 1:
        print("--replicas must be at least 1", file=sys.stderr)
        return 2
    if args.spares < 0:
        print("--spares must be at least 0", file=sys.stderr)
        return 2
    if args.write_quorum is not None and args.write_quorum < 1:
        print("--write-quorum must be at least 1", file=sys.stderr)
        return 2
    config = SimConfig(
        servers=args.servers,
        brokers=args.brokers,
        clients=args.clients,
        replicas=args.replicas,
        write_quorum=args.write_quorum,
        spares=args.spares,
    )
    try:
        config.quorum  # noqa: B018 - checks W against the copies of a list
    except ValueError as exc:
        print(f"--write-quorum: {exc}", file=sys.stderr)
        return 2
    options = RunOptions(model=args.model, mutant=args.mutant, config=config)
    if args.seed is not None:
        result, lines = run_options(args.seed, options, trace=args.trace)
        for line in lines:
            print(line)
        print(format_summary(summarize([result], max_rounds=args.max_rounds)))
        print(f"trace sha256  {result.trace_hash}")
        for problem in result.problems:
            print(f"PROBLEM: {problem}")
        return 0 if result.ok(args.max_rounds) else 1
    if args.seeds < 1:
        print("--seeds must be at least 1", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = sweep(range(args.start, args.start + args.seeds), options, workers=args.workers)
    summary = summarize(results, max_rounds=args.max_rounds)
    print(format_summary(summary, time.perf_counter() - started))
    by_seed = {r.seed: r for r in results}
    for seed in summary.failed[:20]:
        r = by_seed[seed]
        first = r.problems[0] if r.problems else f"converged after {r.rounds} rounds"
        print(f"FAILED seed {seed}: {first}")
        print(f"  replay: python -m reference_cluster.sim --seed {seed} --trace{_shape(argv)}")
    return 0 if not summary.failed else 1


if __name__ == "__main__":
    sys.exit(main())
