"""Real processes, real packet loss: brokers, servers and client agents each on their own
host in a network namespace, random partitions cut with iptables, servers killed with
SIGKILL and restarted, concurrent edits throughout; after the last heal the simulator's
checkers run on the real final states.

Each scenario is seeded (the seed picks the edits, the partitions and the victims; the
processes' timing is real, so a run is not replayed exactly). ``REAL_PARTITION_RUNS``
sets how many seeded scenarios run (default 2; for example ``REAL_PARTITION_RUNS=20`` for
a long run). Without CAP_NET_ADMIN or iptables the tests skip and say why.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from cluster_harness import (
    RealCluster,
    Workload,
    check_cluster,
    decoded_client_states,
    poll,
    server_digests,
    wait_quiescent,
)
from netns import Namespace, namespace_or_skip

from reference_cluster.processes.cluster import Timing
from reference_cluster.sim.checkers import rounds_to_converge

TIMING = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5, cache_lists=1)
RUNS = int(os.environ.get("REAL_PARTITION_RUNS", "2"))
CYCLES = 3  # partition / heal cycles per scenario
HOLD = 3.0  # seconds each partition lasts while the clients keep editing
MAX_ROUNDS = 100  # edit rounds per partition, at most
CONVERGE_WITHIN = 45.0
CLIENTS = ("c1", "c2", "c3")


@pytest.fixture
def ns() -> Iterator[Namespace]:
    """A fresh network namespace, deleted after the test (skips where it cannot work)."""
    with namespace_or_skip("rc-part") as namespace:
        yield namespace


@attrs.frozen
class Report:
    """What one scenario did and found."""

    seed: int
    partitions: tuple[str, ...]
    kills: tuple[str, ...]
    edits: int
    refused: int
    acked_before_heal: int
    acked: int
    divergent: int
    lost_acked: int
    counter_violations: int
    phantoms: int
    problems: tuple[str, ...]
    converged_s: float
    rounds: int | None
    seconds: float


def random_groups(rng: random.Random, servers: list[str], others: list[str]) -> list[list[str]]:
    """A random partition: the servers split in two (most often) or three, every broker
    and client on a random side; or one process alone."""
    shape = rng.choice(("two", "two", "three", "alone"))
    if shape == "alone":
        everyone = [*servers, *others]
        lone = rng.choice(everyone)
        return [[lone], [n for n in everyone if n != lone]]
    sides = 2 if shape == "two" else 3
    shuffled = rng.sample(servers, len(servers))
    groups: list[list[str]] = [[s] for s in shuffled[:sides]]
    for name in [*shuffled[sides:], *others]:
        groups[rng.randrange(sides)].append(name)
    return groups


def run_scenario(cluster: RealCluster, seed: int, *, churn: bool = False) -> Report:
    """Edit, partition (``CYCLES`` times, a server killed and restarted in each), heal,
    wait for quiescence and check the final states. With ``churn`` a server joins before
    the second partition and a member leaves before the third (it hands its lists over
    after the heal, and must then hold none)."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    wl = Workload(cluster, CLIENTS, lists=3 if churn else 2, rng=rng)
    wl.setup()
    wl.burst(3)
    partitions, kills, left = [], [], []
    for cycle in range(CYCLES):
        if churn and cycle == 1:
            cluster.add_server()
        if churn and cycle == 2:
            left.append(rng.choice(cluster.members))
            cluster.remove_server(left[-1])
        running = [*cluster.members, *left]
        groups = random_groups(rng, running, [*cluster.brokers, *wl.names])
        cluster.partition(groups)
        partitions.append(" | ".join(",".join(sorted(g)) for g in groups))
        victim = rng.choice(cluster.members)
        kill_at, restart_at = rng.randrange(4), rng.randrange(5, 8)
        kills.append(victim)
        end = time.monotonic() + HOLD
        for r in range(MAX_ROUNDS):  # the partition holds while the clients edit
            wl.burst(1)
            if r == kill_at:
                cluster.kill(victim)
            elif r == restart_at:
                cluster.restart(victim)
            wl.client_states()
            if r > restart_at and time.monotonic() > end:
                break
            time.sleep(0.05)  # pacing between edit rounds
    acked_before_heal = wl.acked
    cluster.heal()
    healed = time.monotonic()
    try:
        converged_s, samples = wait_quiescent(wl, timeout=CONVERGE_WITHIN)
    except TimeoutError as exc:
        raise AssertionError(f"seed {seed}: {exc}") from None
    wl.sync_all(timeout=10.0)  # every client syncs once more after the heal
    for name in left:
        cluster.handed_over(name, timeout=CONVERGE_WITHIN)
        leftover = cluster.server_status(name, states=True)
        assert leftover is not None and not leftover.states, f"{name} still holds lists"
    servers = cluster.server_states(wl.list_ids)
    clients = decoded_client_states(wl.client_states(states=True))
    final = server_digests(cluster, wl.list_ids)
    assert final is not None
    found = check_cluster(wl, servers, clients)
    rounds = rounds_to_converge(samples, final, healed, TIMING.anti_entropy)
    return Report(
        seed=seed,
        partitions=tuple(partitions),
        kills=tuple(kills),
        edits=len(wl.edits),
        refused=wl.refused,
        acked_before_heal=acked_before_heal,
        acked=wl.acked,
        divergent=found.divergent,
        lost_acked=found.lost_acked,
        counter_violations=found.counter_violations,
        phantoms=found.phantoms,
        problems=tuple(found.problems),
        converged_s=round(converged_s, 2),
        rounds=rounds,
        seconds=round(time.monotonic() - t0, 1),
    )


def _assert_clean(report: Report) -> None:
    """Edits were made and acknowledged before the heal, every client synced everything
    after it, and every checker found nothing."""
    print(report)
    assert report.edits > 0 and report.acked_before_heal > 0
    assert report.edits == report.acked  # every client synced everything after the heal
    assert (0, 0, 0, 0, ()) == (
        report.divergent,
        report.lost_acked,
        report.counter_violations,
        report.phantoms,
        report.problems,
    )


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(RUNS))
def test_partitions_and_sigkills_converge_without_losing_acknowledged_edits(
    ns: Namespace, tmp_path: Path, seed: int
) -> None:
    """After random partitions, server kills and concurrent edits, every server and
    client holds the same lists, with every acknowledged edit and exact counters."""
    with RealCluster(tmp_path, ns=ns, timing=TIMING) as cluster:
        cluster.start()
        report = run_scenario(cluster, seed)
    _assert_clean(report)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(RUNS))
def test_five_servers_three_replicas_w2_while_a_server_joins_and_one_leaves(
    ns: Namespace, tmp_path: Path, seed: int
) -> None:
    """5 servers, each list on 3, W = 2: random partitions and SIGKILLs while a sixth
    server joins and a member leaves; every list's holders (by the last membership) and
    every client end equal, with every acknowledged edit, and the server that left
    holds nothing."""
    with RealCluster(tmp_path, ns=ns, servers=5, replicas=3, timing=TIMING) as cluster:
        cluster.start()
        report = run_scenario(cluster, seed, churn=True)
        assert (6, 5, 2) == (len(cluster.servers), len(cluster.members), cluster.epoch)
    _assert_clean(report)


def test_a_client_cut_off_from_every_broker_waits_and_catches_up(
    ns: Namespace, tmp_path: Path
) -> None:
    """While iptables cuts a client from every broker its edit is not acknowledged and a
    connected client's is; after the heal both are acknowledged and the two agree."""
    with RealCluster(tmp_path, ns=ns, timing=TIMING) as cluster:
        cluster.start()
        wl = Workload(cluster, ("c1", "c2"), lists=1, rng=random.Random(7))
        wl.setup()
        cluster.partition([["c2"], [*cluster.brokers, *cluster.servers, "c1"]])
        list_id = wl.list_ids[0]
        c1, c2 = wl.agents["c1"], wl.agents["c2"]
        edit: dict[str, Any] = {"list": list_id, "action": "add", "wait": True, "timeout": 2.0}
        cut = c2.wait(c2.begin("edit", item="cut", **edit))
        kept = c1.wait(c1.begin("edit", item="kept", **edit))
        assert (False, True) == (cut["acked"], kept["acked"])
        cluster.heal()

        def caught_up() -> bool:
            answers = wl.client_states()
            entries = [answers[n]["lists"][list_id] for n in ("c1", "c2")]
            same = entries[0]["digest"] == entries[1]["digest"]
            return same and all(e["queued"] == 0 for e in entries)

        poll(caught_up, "both clients acknowledged and equal", timeout=CONVERGE_WITHIN)
        value = wl.agents["c1"].call("state")["lists"][list_id]["value"]
    assert {"cut", "kept"} <= set(value["items"])
    assert all(proc.poll() is not None for proc in cluster.started)  # all stopped by pid
