"""How evenly placement spreads the lists: stored lists per server for M servers and N
replicas, against the target of N/M of all lists.

For each M (default 3, 6 and 9 servers, ``s1`` .. ``sM``) with N replicas (default 3),
over ``--lists`` list ids (default 10,000 random UUIDs from a seeded generator, so a run
repeats exactly):

- **placed**: how many lists :func:`reference_cluster.protocol.placement.holders` puts
  on each server;
- **held**: how many lists each server's core actually keeps: a
  :class:`~reference_cluster.cores.server.ServerCore` per server, started over a store
  that holds every list, counted with ``list_ids()`` (what a real server does with a
  store from before placement, or after a change of ``--replicas``).

Per M, the minimum, median and maximum over the servers, beside the target
``min(N, M) / M`` of all lists. The checks, each of which fails the run (exit status 1):

1. every server's placed count is within ``--tolerance`` (default 20%) of the target;
2. placement makes exactly ``min(N, M)`` copies of each list;
3. each core keeps exactly the lists placement gives its server (with ``--cores``, the
   default; ``--no-cores`` skips the cores).

Run ``.venv/bin/python bench/placement.py`` (a few seconds); ``--json`` prints the rows as
JSON. ``bench/test_placement.py`` runs it small and shows each check failing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from reference_cluster.cores.server import ServerConfig, ServerCore
from reference_cluster.protocol.placement import Membership, holders
from reference_cluster.shopping_list import ShoppingList

__all__ = ["Row", "check", "core_counts", "list_ids", "main", "measure", "table"]

Place = Callable[[str, Sequence[str], int], Sequence[str]]
"""What puts a list on servers: :func:`holders`, or a stand-in a test gives."""
Keep = Callable[[Sequence[str], Sequence[str], Sequence[str], int], Mapping[str, int]]
"""What counts the lists each server's core keeps: :func:`core_counts`, or a stand-in."""


def list_ids(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct list ids, random UUIDs (version 4) from a generator seeded
    with ``seed``."""
    rng = random.Random(seed)
    out: dict[str, None] = {}
    for _ in range(2 * count + 10):
        if len(out) == count:
            break
        out[str(uuid.UUID(int=rng.getrandbits(128), version=4))] = None
    return list(out)


class _EveryList:
    """A store that holds every list: the digests a server core starts from (a state is
    never loaded to start, so none is kept)."""

    def __init__(self, ids: Sequence[str]) -> None:
        self._digests = {i: hashlib.sha256(i.encode()).hexdigest() for i in ids}

    def digests(self) -> Mapping[str, str]:
        return self._digests

    def load(self, list_id: str) -> ShoppingList | None:
        return None


def core_counts(
    ids: Sequence[str], servers: Sequence[str], members: Sequence[str], replicas: int
) -> dict[str, int]:
    """How many of ``ids`` the core of each of ``servers`` keeps once started over a store
    holding all of them, in a cluster of ``members`` with ``replicas`` copies a list."""
    store = _EveryList(ids)
    out: dict[str, int] = {}
    for name in servers:
        core = ServerCore(
            name,
            ShoppingList,
            peers=[m for m in members if m != name],
            brokers=("b0",),
            store=store,
            config=ServerConfig(),
            rng=random.Random(0),
            replicas=replicas,
            membership=Membership(members),
        )
        core.start(0.0)
        out[name] = len(core.list_ids())
    return out


@attrs.frozen
class Row:
    """One M and N: the lists placed on and held by each server."""

    servers: int
    replicas: int
    lists: int
    placed: dict[str, int]
    held: dict[str, int] | None
    """None when the cores were not counted."""
    seconds: float

    @property
    def copies(self) -> int:
        """How many servers hold each list: N, or every server when N >= M."""
        return min(self.replicas, self.servers)

    @property
    def target(self) -> float:
        """The lists each server should hold: N/M of all (all, when N >= M)."""
        return self.lists * self.copies / self.servers

    def spread(self, counts: Mapping[str, int]) -> tuple[int, float, int]:
        """Minimum, median and maximum over the servers."""
        values = sorted(counts.values())
        return values[0], statistics.median(values), values[-1]

    def deviation(self) -> tuple[float, float]:
        """The lowest and the highest placed count, relative to the target (-0.05 is 5%
        under)."""
        low, _, high = self.spread(self.placed)
        return low / self.target - 1, high / self.target - 1


def measure(
    servers: int,
    replicas: int,
    ids: Sequence[str],
    *,
    cores: bool = True,
    place: Place = holders,
    keep: Keep = core_counts,
) -> Row:
    """Place ``ids`` on ``servers`` servers with ``replicas`` copies and count what each
    server gets (and, with ``cores``, what each one's core keeps)."""
    members = [f"s{j}" for j in range(1, servers + 1)]
    started = time.perf_counter()
    placed = Counter[str]({m: 0 for m in members})
    for list_id in ids:
        placed.update(place(list_id, members, replicas))
    held = dict(keep(ids, members, members, replicas)) if cores else None
    return Row(servers, replicas, len(ids), dict(placed), held, time.perf_counter() - started)


def check(row: Row, tolerance: float) -> list[str]:
    """What is wrong with ``row`` (nothing: an empty list), one line each."""
    problems = []
    label = f"{row.replicas} of {row.servers}"
    for name, count in sorted(row.placed.items()):
        off = count / row.target - 1
        if abs(off) > tolerance:
            problems.append(
                f"{label}: {name} holds {count:,} lists, {off:+.1%} from the target "
                f"{row.target:,.0f} (allowed {tolerance:.0%})"
            )
    total = sum(row.placed.values())
    if total != row.copies * row.lists:
        problems.append(
            f"{label}: {total:,} copies of {row.lists:,} lists, expected "
            f"{row.copies * row.lists:,} ({row.copies} each)"
        )
    if row.held is not None:
        for name in sorted(row.placed):
            kept, placed = row.held.get(name), row.placed[name]
            if kept != placed:
                problems.append(
                    f"{label}: the core of {name} keeps {kept} lists, placement gives it {placed:,}"
                )
    return problems


def _median(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def table(rows: Sequence[Row], tolerance: float) -> str:
    """The markdown table of ``rows``."""
    lines = [
        "| servers (M) | replicas (N) | target: N/M of the lists | placed: min / median / max"
        " | min, max vs target | held by started cores: min / median / max"
        f" | within {tolerance:.0%} |",
        "|---:|---:|---:|---|---|---|---|",
    ]
    for row in rows:
        low, mid, high = row.spread(row.placed)
        under, over = row.deviation()
        if row.held is None:
            held = "not counted"
        else:
            h_low, h_mid, h_high = row.spread(row.held)
            same = "each as placed" if row.held == row.placed else "**not as placed**"
            held = f"{h_low:,} / {_median(h_mid)} / {h_high:,} ({same})"
        share = f"{row.copies}/{row.servers}"
        ok = "yes" if not check(row, tolerance) else "**no**"
        lines.append(
            f"| {row.servers} | {row.replicas} | {row.target:,.0f} ({share} of {row.lists:,})"
            f" | {low:,} / {_median(mid)} / {high:,} | {under:+.1%}, {over:+.1%} | {held}"
            f" | {ok} |"
        )
    return "\n".join(lines)


def _counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 3,6,9, got {text!r}") from None
    if not values or any(v < 1 or v > 1000 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers from 1 to 1000, got {text!r}")
    return values


def _positive(text: str) -> int:
    value = _counts(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one number, got {text!r}")
    return value[0]


def _lists(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 10_000_000:
        raise argparse.ArgumentTypeError(f"expected 1 to 10,000,000 lists, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to below 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lists", type=_lists, default=10_000, help="list ids (default 10,000)")
    parser.add_argument(
        "--servers", type=_counts, default=[3, 6, 9], help="values of M (default 3,6,9)"
    )
    parser.add_argument("--replicas", type=_positive, default=3, help="N (default 3)")
    parser.add_argument(
        "--tolerance", type=_fraction, default=0.2, help="allowed distance from N/M (0.2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the list ids (default 0)")
    parser.add_argument(
        "--no-cores", dest="cores", action="store_false", help="do not start server cores"
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    place: Place = holders,
    keep: Keep = core_counts,
) -> int:
    """Measure every M, print the table (or JSON) and the problems; 0 if there are none,
    1 otherwise. ``place`` and ``keep`` stand in for placement and the cores in tests."""
    args = _parser().parse_args(argv)
    # A core started over every list logs how many it leaves unserved: expected here.
    logging.getLogger("reference_cluster.cores.server").setLevel(logging.ERROR)
    ids = list_ids(args.lists, args.seed)
    rows = [
        measure(m, args.replicas, ids, cores=args.cores, place=place, keep=keep)
        for m in args.servers
    ]
    problems = [p for row in rows for p in check(row, args.tolerance)]
    if args.json:
        out: dict[str, Any] = {
            "rows": [attrs.asdict(row) | {"target": row.target} for row in rows],
            "problems": problems,
        }
        print(json.dumps(out, sort_keys=True))
    else:
        seconds = sum(row.seconds for row in rows)
        print(table(rows, args.tolerance))
        print(f"\n{args.lists:,} lists, seed {args.seed}, {seconds:.1f} s")
        for line in problems:
            print(f"FAILED: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
