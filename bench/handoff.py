"""What it costs to hand lists over when a server joins a cluster (Rule 13 of the server
core), in process over real SQLite stores.

M servers (``s1`` .. ``sM``) hold ``n`` small lists (five items each, as in
``bench/scale.py``), each list on N of them (``--replicas``); a new server ``s(M+1)``
joins. The default is the cluster ``cluster up`` runs, 3 servers and 3 replicas (every
server holds every list), growing to 4: then every list for which the new server is
among its first 3 servers (about 3 in 4) loses one old holder, which hands the list to
its 3 new holders and forgets it once all 3 confirmed it.

How it runs:

- Each old server is a :class:`~reference_cluster.cores.server.ServerCore` over its own
  :class:`~reference_cluster.storage.server_store.ServerStore` in a temporary folder
  (WAL, ``synchronous=FULL``), built with ``apply_many`` (10,000 lists a transaction; when
  every server holds every list, one store is built and copied). The new server starts
  over an empty store with the new membership (epoch 1), as ``LocalCluster.add_server``
  starts it; then the operator's ``MembershipUpdate`` is given to each old server
  (``core.adopt``), as ``LocalCluster`` tells each running server.
- Then anti-entropy rounds: each server in turn runs ``_anti_entropy_round`` (what its
  timer runs every ``anti_entropy_interval``), and every message it causes is carried,
  encoded and decoded by the real codec, until quiet, as the server shell would: writes
  (``Persist``) are committed in groups with ``apply_many`` (at most 256 a group, as the
  shell drains 256 frames before it commits; otherwise when nothing is left to carry),
  then ``persisted``; a ``DropList`` is ``forget_list`` (one transaction each, as the
  shell does); ``SaveMembership`` is recorded. Rounds go on until every server's
  ``handing`` is 0 (at most ``--max-rounds``).
- Counted: messages and encoded bytes by kind (not counted: what ZeroMQ framing and
  CURVE add to each message on the wire), lists moved and forgotten, rounds, CPU seconds
  (``time.process_time``: the cores, the codec, the store) and the wall time of the
  store's commits and forgets (``fsync`` included).
- Checked at the end (a failure raises): every server follows the new membership and
  has nothing left to hand; every list is stored with its original state on exactly its
  holders by the new membership (a forgotten list keeps an empty row); each old holder
  forgot exactly the lists it no longer holds; one more round is idle (one tree root per
  peer and nothing else).

Handoffs are bounded per round (``MAX_HANDOFFS`` lists a server, in
``reference_cluster/cores/server.py``), so the time at the real interval is about the
rounds times ``anti_entropy_interval`` (2 s by default).

Run ``.venv/bin/python bench/handoff.py`` (10,000 and 100,000 lists at N = 3, about 11
minutes here); ``--lists 10000`` for a quick look (about a minute); ``--replicas 3 2``
to add 2 copies of each list. The stores go to a temporary folder (``--workdir`` to
choose where: 100,000 lists take about 52 MB a store).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from scale import BUILD_BATCH, list_id_of, sample_list

from reference_cluster.cores.server import MAX_HANDOFFS, ServerConfig, ServerCore
from reference_cluster.protocol.effects import (
    DropHint,
    DropList,
    Effect,
    Persist,
    SaveMembership,
    Send,
)
from reference_cluster.protocol.messages import MembershipUpdate, encode
from reference_cluster.protocol.placement import Membership
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.server_store import ServerStore

__all__ = ["HandoffReport", "Mesh", "build_stores", "main", "measure_handoff"]

DRAIN = 256
"""Writes committed in one group at most (the server shell drains 256 frames)."""
MAX_CARRIED = 5_000_000
"""Most messages one round may cause before it is called runaway."""
NOW = 1000.0
"""The cores' clock at the first round; each round adds the interval."""


# -- stores ---------------------------------------------------------------------------------


def build_stores(
    folder: Path,
    count: int,
    members: Membership,
    replicas: int,
    *,
    progress: Callable[[str], None],
) -> tuple[dict[str, Path], float]:
    """One store per member holding the lists it holds (lists ``0 .. count - 1`` of
    :func:`scale.sample_list`), built ``BUILD_BATCH`` lists a transaction with
    ``apply_many``; when every member holds every list, one store is built and copied.

    Returns:
        Each member's store, and the seconds the build took.
    """
    start = time.perf_counter()
    names = sorted(members.servers)
    everywhere = members.everywhere(replicas)
    paths = {s: folder / f"{s}.sqlite" for s in names}
    for name in names[:1] if everywhere else names:
        held = [j for j in range(count) if name in members.holders(list_id_of(j), replicas)]
        for first in range(0, len(held), BUILD_BATCH):
            store: ServerStore[ShoppingList] = ServerStore(paths[name], ShoppingList)
            try:
                batch = held[first : first + BUILD_BATCH]
                written = store.apply_many((list_id_of(j), sample_list(j)) for j in batch)
                if len(written) != len(batch):
                    raise RuntimeError(f"apply_many took {len(written)} of {len(batch)} lists")
            finally:
                store.close()
        progress(f"  {name}: {len(held):,} lists stored")
    if everywhere:
        for name in names[1:]:
            shutil.copyfile(paths[names[0]], paths[name])
    return paths, time.perf_counter() - start


# -- carrying messages between cores ----------------------------------------------------------


@attrs.define
class Tally:
    """What the carried exchanges cost, by server and by kind."""

    messages: Counter[str] = attrs.field(factory=Counter)
    bytes: Counter[str] = attrs.field(factory=Counter)
    cpu: defaultdict[str, float] = attrs.field(factory=lambda: defaultdict(float))
    """Server -> CPU seconds (cores, codec, store) spent on its behalf."""
    cpu_by_part: defaultdict[str, float] = attrs.field(factory=lambda: defaultdict(float))
    """"core", "encode", "commit", "forget" -> CPU seconds, all servers."""
    wall_by_part: defaultdict[str, float] = attrs.field(factory=lambda: defaultdict(float))
    """The same parts -> wall seconds, all servers (``fsync`` included)."""
    longest: tuple[float, str, str] = (0.0, "", "")
    """The CPU seconds of the longest single call, its server and what it was (a call
    holds the server's loop: nothing else runs on it meanwhile)."""
    commits: int = 0
    writes: int = 0
    forgotten: dict[str, list[str]] = attrs.field(factory=dict)
    """Server -> lists its store forgot."""


class Mesh:
    """Server cores over real stores in one process; carries every message (encoded)
    and every write, group-committed, until quiet."""

    def __init__(self, cores: Mapping[str, ServerCore[ShoppingList]], stores: Mapping[str, Any]):
        self.cores = dict(cores)
        self.stores = dict(stores)
        self.tally = Tally()
        self.now = NOW
        self._queue: deque[tuple[str, str, bytes, str]] = deque()
        self._batches: dict[str, list[Persist]] = {s: [] for s in self.cores}

    def _timed(
        self, server: str, part: str, call: Callable[..., Any], *args: Any, label: str = ""
    ) -> Any:
        """``call(*args)``, its CPU and wall time put down to ``server`` and ``part``
        (``label``: what the call does, if its name does not say)."""
        cpu, wall = time.process_time(), time.perf_counter()
        out = call(*args)
        spent = time.process_time() - cpu
        if spent > self.tally.longest[0]:
            self.tally.longest = (spent, server, label or getattr(call, "__name__", "?"))
        self.tally.cpu[server] += spent
        self.tally.cpu_by_part[part] += spent
        self.tally.wall_by_part[part] += time.perf_counter() - wall
        return out

    def take(self, server: str, effects: list[Effect]) -> None:
        """Carry out ``server``'s effects as the server shell does."""
        tally = self.tally
        for effect in effects:
            if isinstance(effect, Send):
                if effect.to not in self.cores:
                    continue  # a broker: there is none here
                data = self._timed(server, "encode", encode, effect.message)
                self._queue.append((server, effect.to, data, effect.message.kind))
                tally.messages[effect.message.kind] += 1
                tally.bytes[effect.message.kind] += len(data)
            elif isinstance(effect, Persist):
                batch = self._batches[server]
                batch.append(effect)
                if len(batch) >= DRAIN:
                    self.commit(server)
            elif isinstance(effect, DropList):
                forget = self.stores[server].forget_list
                if self._timed(server, "forget", forget, effect.list_id, effect.digest):
                    tally.forgotten.setdefault(server, []).append(effect.list_id)
            elif isinstance(effect, DropHint):
                drop = self.stores[server].drop_hint
                self._timed(server, "forget", drop, effect.list_id, effect.holder, effect.digest)
            elif isinstance(effect, SaveMembership):
                self.stores[server].record_cluster_membership(effect.epoch, dict(effect.servers))

    def commit(self, server: str) -> None:
        """Write ``server``'s pending writes in one transaction, then tell its core."""
        batch, self._batches[server] = self._batches[server], []
        if not batch:
            return
        store, core = self.stores[server], self.cores[server]
        written = self._timed(
            server,
            "commit",
            store.apply_many,
            [(p.list_id, p.delta) for p in batch if p.hint_for is None],
            [(p.list_id, p.hint_for, p.delta) for p in batch if p.hint_for is not None],
        )
        self.tally.commits += 1
        self.tally.writes += len(batch)
        for p in batch:
            if p.hint_for is not None or p.list_id in written:
                effects = self._timed(server, "core", core.persisted, p.token, self.now)
            else:
                effects = self._timed(
                    server, "core", core.persist_failed, p.token, "the list is gone", self.now
                )
            self.take(server, effects)

    def settle(self, deadline: float) -> int:
        """Carry messages and commit writes until nothing is left; the messages carried.

        Raises:
            RuntimeError: more than ``MAX_CARRIED`` messages. TimeoutError: past
                ``deadline`` (``time.monotonic``).
        """
        carried = 0
        for step in range(2 * MAX_CARRIED):  # a message or a commit pass each
            if not self._queue:
                pending = [s for s, b in self._batches.items() if b]
                if not pending:
                    return carried
                for server in pending:
                    self.commit(server)
                continue
            if step % 1024 == 0 and time.monotonic() > deadline:
                raise TimeoutError(f"still carrying after {carried:,} messages")
            src, dst, data, kind = self._queue.popleft()
            carried += 1
            receive = self.cores[dst].receive
            self.take(dst, self._timed(dst, "core", receive, src, data, self.now, label=kind))
        raise RuntimeError(f"the exchange did not end within {MAX_CARRIED:,} messages")

    def run(
        self, server: str, call: Callable[..., list[Effect]], *args: Any, deadline: float
    ) -> int:
        """``call(*args)`` (of ``server``'s core), then carry all it causes; the
        messages carried."""
        self.take(server, self._timed(server, "core", call, *args, label=call.__name__))
        return self.settle(deadline)


# -- the measurement --------------------------------------------------------------------------


@attrs.frozen
class HandoffReport:
    """One server joining M servers that hold ``lists`` lists with ``replicas`` copies.

    Attributes:
        lists: lists in the cluster.
        servers: M, before the join.
        replicas: N.
        moved: lists whose holders changed (each loses one old holder).
        to_new: lists the new server holds now.
        most_away: the most lists one old server had to hand over (rounds are about
            this over ``MAX_HANDOFFS``).
        rounds: anti-entropy rounds (of every server) until nothing was left to hand.
        new_full_after: rounds until the new server's store held all its lists.
        messages: messages sent, by kind (the membership's spread included).
        bytes: their encoded bytes, by kind.
        writes, commits: durable writes asked for, and the transactions that made them.
        forgets: ``forget_list`` transactions.
        cpu: CPU seconds, all servers, by part ("core": the cores, decoding included;
            "encode"; "commit": ``apply_many``; "forget": ``forget_list``).
        cpu_per_round: CPU seconds of the busiest server in each round.
        cpu_by_server: CPU seconds by server, all rounds.
        longest: the CPU seconds of the longest single call (a message handled, a
            round started, a commit, a forget), its server and what it was.
        wall_store: wall seconds in the store ("commit", "forget"), all servers.
        wall: wall seconds from the membership change until nothing was left to hand.
        build: seconds the stores took to build (not part of the handoff).
        interval: the servers' anti-entropy interval.
    """

    lists: int
    servers: int
    replicas: int
    moved: int
    to_new: int
    most_away: int
    rounds: int
    new_full_after: int
    messages: dict[str, int]
    bytes: dict[str, int]
    writes: int
    commits: int
    forgets: int
    cpu: dict[str, float]
    cpu_per_round: tuple[float, ...]
    cpu_by_server: dict[str, float]
    longest: tuple[float, str, str]
    wall_store: dict[str, float]
    wall: float
    build: float
    interval: float

    @property
    def at_interval(self) -> float:
        """Seconds the handoff takes at the servers' interval: one round each interval
        (the first may come up to an interval after the change)."""
        return self.rounds * self.interval


def _update(members: Membership) -> MembershipUpdate:
    return MembershipUpdate("operator", members.epoch, {s: "" for s in sorted(members.servers)})


def _core(
    name: str, store: Any, members: Membership, replicas: int, config: ServerConfig
) -> ServerCore[ShoppingList]:
    return ServerCore(
        name,
        ShoppingList,
        peers=sorted(members.servers - {name}),
        brokers=[],
        store=store,
        config=config,
        rng=random.Random(name),
        replicas=replicas,
        membership=members,
    )


def _check(
    mesh: Mesh, old: Membership, new: Membership, *, replicas: int, count: int, moved: set[str]
) -> None:
    """Every list on exactly its new holders with its original state; each old holder
    forgot exactly what it no longer holds; nothing left to hand.

    Raises:
        AssertionError: any of these fails.
    """
    bottom = ShoppingList().digest()
    stored: dict[str, dict[str, str]] = {}
    for name, store in mesh.stores.items():
        stored[name] = {k: d for k, d in store.digests().items() if d != bottom}
    for name, core in mesh.cores.items():
        if core.membership != new or core.handing:
            raise AssertionError(f"{name}: epoch {core.membership.epoch}, {core.handing} to hand")
    for j in range(count):
        list_id = list_id_of(j)
        want = sample_list(j).digest()
        holders = set(new.holders(list_id, replicas))
        on = {s for s, digests in stored.items() if list_id in digests}
        if on != holders:
            raise AssertionError(f"list {list_id} on {sorted(on)}, holders {sorted(holders)}")
        wrong = [s for s in holders if stored[s][list_id] != want]
        if wrong:
            raise AssertionError(f"list {list_id}: another state on {wrong}")
    for name in sorted(old.servers):
        expect = sorted(
            k
            for k in moved
            if name in old.holders(k, replicas) and name not in new.holders(k, replicas)
        )
        if sorted(mesh.tally.forgotten.get(name, [])) != expect:
            raise AssertionError(f"{name} forgot other lists than those it no longer holds")


def measure_handoff(
    folder: Path,
    *,
    lists: int,
    servers: int = 3,
    replicas: int = 3,
    max_rounds: int = 2000,
    timeout: float = 3600.0,
    progress: Callable[[str], None] = lambda _: None,
) -> HandoffReport:
    """Build the stores, let ``s(servers+1)`` join, run rounds until every server has
    handed everything over, and check the outcome (see the module notes).

    Raises:
        AssertionError: the outcome is wrong. TimeoutError, RuntimeError: more than
            ``max_rounds`` rounds, ``timeout`` seconds, or a runaway exchange.
    """
    names = [f"s{i}" for i in range(1, servers + 1)]
    joiner = f"s{servers + 1}"
    old, new = Membership(names, 0), Membership([*names, joiner], 1)
    paths, build = build_stores(folder, lists, old, replicas, progress=progress)
    config = ServerConfig()
    stores: dict[str, Any] = {s: ServerStore(paths[s], ShoppingList) for s in names}
    stores[joiner] = ServerStore(folder / f"{joiner}.sqlite", ShoppingList)
    try:
        cores = {s: _core(s, stores[s], old, replicas, config) for s in names}
        cores[joiner] = _core(joiner, stores[joiner], new, replicas, config)
        mesh = Mesh(cores, stores)
        ids = [list_id_of(j) for j in range(lists)]
        moved = {k for k in ids if set(old.holders(k, replicas)) != set(new.holders(k, replicas))}
        to_new = sum(1 for k in ids if joiner in new.holders(k, replicas))
        progress(f"  {len(moved):,} of {lists:,} lists move; {joiner} holds {to_new:,}")
        deadline = time.monotonic() + timeout
        start = time.perf_counter()
        for name in names:  # the operator tells every running server
            mesh.run(name, cores[name].adopt, _update(new), mesh.now, deadline=deadline)
        most_away = max(cores[s].handing for s in names)
        per_round: list[float] = []
        new_full_after = 0
        rounds = 0
        for rounds in range(1, max_rounds + 1):
            before = dict(mesh.tally.cpu)
            for name, core in cores.items():
                mesh.run(name, core._anti_entropy_round, mesh.now, deadline=deadline)
            per_round.append(max(mesh.tally.cpu[s] - before.get(s, 0.0) for s in cores))
            # Every write is committed once a round is carried: what the core holds is
            # stored (checked in the store at the end).
            if not new_full_after and len(cores[joiner].list_ids()) == to_new:
                new_full_after = rounds
            if rounds % 20 == 0:
                left = sum(c.handing for c in cores.values())
                progress(f"  round {rounds}: {left:,} lists left to hand over")
            if all(c.handing == 0 for c in cores.values()):
                break
            mesh.now += config.anti_entropy_interval
        else:
            raise TimeoutError(f"lists still to hand over after {max_rounds} rounds")
        wall = time.perf_counter() - start
        tally = mesh.tally
        report = HandoffReport(
            lists=lists,
            servers=servers,
            replicas=replicas,
            moved=len(moved),
            to_new=to_new,
            most_away=most_away,
            rounds=rounds,
            new_full_after=new_full_after,
            messages=dict(tally.messages),
            bytes=dict(tally.bytes),
            writes=tally.writes,
            commits=tally.commits,
            forgets=sum(len(v) for v in tally.forgotten.values()),
            cpu=dict(tally.cpu_by_part),
            cpu_per_round=tuple(per_round),
            cpu_by_server=dict(tally.cpu),
            longest=tally.longest,
            wall_store=dict(tally.wall_by_part),
            wall=wall,
            build=build,
            interval=config.anti_entropy_interval,
        )
        _check(mesh, old, new, replicas=replicas, count=lists, moved=moved)
        sent = Counter(tally.messages)
        mesh.now += config.anti_entropy_interval
        for name, core in cores.items():
            mesh.run(name, core._anti_entropy_round, mesh.now, deadline=deadline)
        idle = Counter(tally.messages) - sent
        if idle != Counter({"ae_tree": len(cores) * (len(cores) - 1)}):
            raise AssertionError(f"the round after the handoff was not idle: {dict(idle)}")
        return report
    finally:
        for store in stores.values():
            store.close()


# -- output ---------------------------------------------------------------------------------

KINDS = (
    ("membership", "membership (the operator's update spreading)"),
    ("replicate", "replicate (a list handed over, whole state)"),
    ("stored", "stored (a holder's confirmation)"),
    ("ae_tree", "ae_tree (anti-entropy: tree nodes)"),
    ("ae_leaves", "ae_leaves (anti-entropy: list digests)"),
    ("ae_contexts", "ae_contexts (anti-entropy: causal contexts)"),
    ("ae_deltas", "ae_deltas (anti-entropy: states)"),
)


def table(reports: Sequence[HandoffReport]) -> list[str]:
    """The handoff table, one column per report, as markdown lines."""
    head = " | ".join(
        f"{r.lists:,} lists, {r.servers} -> {r.servers + 1}, N = {r.replicas}" for r in reports
    )
    lines = [f"| | {head} |", "|---|" + "---:|" * len(reports)]

    def row(label: str, cell: Callable[[HandoffReport], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(r) for r in reports) + " |")

    row("lists moved (one old holder each)", lambda r: f"{r.moved:,} ({r.moved / r.lists:.0%})")
    row("lists the new server holds", lambda r: f"{r.to_new:,}")
    row(
        "most lists one old server hands over",
        lambda r: f"{r.most_away:,} (/ {MAX_HANDOFFS} = {r.most_away / MAX_HANDOFFS:,.1f})",
    )
    row("rounds until nothing is left to hand", lambda r: f"{r.rounds:,}")
    row("rounds until the new server holds all its lists", lambda r: f"{r.new_full_after:,}")
    row(
        "time at the 2 s anti-entropy interval",
        lambda r: f"{r.at_interval:,.0f} s ({r.at_interval / 60:.1f} min)",
    )
    row("messages, all kinds", lambda r: f"{sum(r.messages.values()):,}")
    row("bytes, all kinds", lambda r: f"{sum(r.bytes.values()):,} B")
    for kind, label in KINDS:

        def count(r: HandoffReport, k: str = kind) -> str:
            return f"{r.messages.get(k, 0):,}: {r.bytes.get(k, 0):,} B"

        row(f"- {label}", count)
    row(
        "bytes per list moved",
        lambda r: f"{sum(r.bytes.values()) / max(1, r.moved):,.0f} B",
    )
    row("durable writes (in commits)", lambda r: f"{r.writes:,} ({r.commits:,})")
    row("forget_list transactions", lambda r: f"{r.forgets:,}")
    row("CPU, all servers", lambda r: f"{sum(r.cpu.values()):.1f} s")
    row(
        "- cores / encoding / apply_many / forget_list",
        lambda r: (
            " / ".join(f"{r.cpu.get(p, 0.0):.1f}" for p in ("core", "encode", "commit", "forget"))
            + " s"
        ),
    )
    row(
        "- by server (the last one joined)",
        lambda r: (
            " / ".join(f"{r.cpu_by_server.get(f's{i}', 0.0):.1f}" for i in range(1, r.servers + 2))
            + " s"
        ),
    )
    row(
        "busiest server's CPU per round: median, max",
        lambda r: (
            f"{statistics.median(r.cpu_per_round) * 1000:,.0f} ms, "
            f"{max(r.cpu_per_round) * 1000:,.0f} ms"
        ),
    )
    row(
        "wall time in the store: apply_many, forget_list",
        lambda r: (
            f"{r.wall_store.get('commit', 0.0):.1f} s, {r.wall_store.get('forget', 0.0):.1f} s"
        ),
    )
    row(
        "longest single call (holds that server's loop)",
        lambda r: f"{r.longest[0] * 1000:,.0f} ms: {r.longest[1]}, {r.longest[2]}",
    )
    row("wall time in process, all rounds back to back", lambda r: f"{r.wall:.1f} s")
    row("stores built in (not part of the handoff)", lambda r: f"{r.build:.1f} s")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Print the handoff table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--servers", type=int, default=3, help="M before the join (default 3)")
    parser.add_argument("--replicas", type=int, nargs="+", default=[3], help="N (default 3)")
    parser.add_argument("--max-rounds", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, help="where the stores go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.servers < 1 or min(args.replicas) < 1 or min(args.lists) < 1:
        parser.error("--servers, --replicas and --lists must be at least 1")
    reports = []
    with tempfile.TemporaryDirectory(prefix="bench-handoff-", dir=args.workdir) as tmp:
        for replicas in args.replicas:
            for count in args.lists:
                folder = Path(tmp) / f"{count}-{replicas}"
                folder.mkdir()
                print(f"{count:,} lists, N = {replicas}:", file=sys.stderr, flush=True)
                report = measure_handoff(
                    folder,
                    lists=count,
                    servers=args.servers,
                    replicas=replicas,
                    max_rounds=args.max_rounds,
                    progress=lambda line: print(line, file=sys.stderr, flush=True),
                )
                reports.append(report)
                shutil.rmtree(folder)
    print("\n".join(table(reports)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
