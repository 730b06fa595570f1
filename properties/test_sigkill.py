"""SIGKILL at any moment loses no acknowledged edit: 20 kill-and-restart cycles of real
servers on loopback while three client agents keep editing.

Each cycle sends a round of edits, kills one server (every fifth cycle: all three at
once) a seeded few milliseconds later, while those edits are in flight, and checks at
once that every edit acknowledged before the kill is durable: in the killed servers'
store files, read straight from disk, or in a live server. Then the victims restart from
their stores (their incarnation counts up) and the clients must make progress again.
After the last cycle every server and client must hold the same lists, with every
acknowledged edit and exact counters (the simulator's checkers).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from cluster_harness import (
    RealCluster,
    Workload,
    check_cluster,
    decoded_client_states,
    poll,
    wait_quiescent,
)

from reference_cluster.processes.cluster import Timing
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.server_store import ServerStore

TIMING = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5, cache_lists=1)
CYCLES = 20
ALL_AT_ONCE_EVERY = 5
CLIENTS = ("c1", "c2", "c3")
PROGRESS_WITHIN = 20.0


def durable_states(
    cluster: RealCluster, killed: list[str], lists: list[str]
) -> dict[str, ShoppingList]:
    """The join, per list, of what the killed servers' store files hold and what the live
    servers hold in memory: everything the cluster can still recover."""
    joined = {k: ShoppingList() for k in lists}
    for s in cluster.servers:
        if s in killed:
            with ServerStore(cluster.store_path(s), ShoppingList) as store:
                found = {k: store.load(k) for k in lists}
        else:
            status = cluster.server_status(s, states=True, timeout=5.0)
            assert status is not None, f"live server {s} does not answer"
            found = {k: ShoppingList.from_dict(v) for k, v in status.states.items() if k in lists}
        for k, state in found.items():
            if state is not None:
                joined[k].join(state)
    return joined


def test_twenty_sigkill_restart_cycles_lose_no_acknowledged_edit(tmp_path: Path) -> None:
    """Every edit acknowledged before a SIGKILL is durable right after it, and after 20
    cycles every server and client holds every acknowledged edit."""
    rng = random.Random(20)
    lost: list[str] = []
    incarnations: dict[str, list[int]] = {}
    acked_at_kill: list[int] = []
    t0 = time.monotonic()
    with RealCluster(tmp_path, timing=TIMING) as cluster:
        cluster.start()
        wl = Workload(cluster, CLIENTS, lists=2, rng=rng)
        wl.setup()
        for cycle in range(CYCLES):
            every = cycle % ALL_AT_ONCE_EVERY == ALL_AT_ONCE_EVERY - 1
            victims = list(cluster.servers) if every else [rng.choice(cluster.servers)]
            wl.client_states()
            acked = [e for e in wl.edits if e.acked]
            wl.burst(3)  # these edits are being synced while the kill lands
            time.sleep(rng.uniform(0.0, 0.05))  # a seeded moment within the syncs
            for s in victims:
                cluster.kill(s)
            acked_at_kill.append(len(acked))
            durable = durable_states(cluster, victims, wl.list_ids)
            lost += [
                f"cycle {cycle}: edit #{e.number} ({e.client} {e.op})"
                for e in acked
                if not e.delta <= durable[e.list_id]
            ]
            for s in victims:
                incarnations.setdefault(s, []).append(int(cluster.restart(s)["incarnation"]))
            before = wl.acked

            def progress(before: int = before) -> bool:
                wl.burst(1)
                wl.client_states()
                return wl.acked > before

            poll(progress, f"new acknowledgements after cycle {cycle}", timeout=PROGRESS_WITHIN)
        assert [] == lost  # acknowledged edits the kills destroyed
        converged_s, _ = wait_quiescent(wl, timeout=30.0)
        wl.sync_all(timeout=10.0)
        servers = cluster.server_states(wl.list_ids)
        clients = decoded_client_states(wl.client_states(states=True))
        found = check_cluster(wl, servers, clients)
    assert all(proc.poll() is not None for proc in cluster.started)  # all stopped by pid
    print(
        f"{CYCLES} cycles, {sum(len(v) for v in incarnations.values())} kills, "
        f"{len(wl.edits)} edits ({wl.refused} refused), {wl.acked} acknowledged, "
        f"{acked_at_kill[-1]} acknowledged before the last kill; converged "
        f"{converged_s:.2f}s after it; {time.monotonic() - t0:.1f}s in all"
    )
    assert all(v == list(range(v[0], v[0] + len(v))) for v in incarnations.values())
    assert len(wl.edits) == wl.acked and acked_at_kill[-1] > acked_at_kill[0] > 0
    assert (0, 0, 0, 0, []) == (
        found.divergent,
        found.lost_acked,
        found.counter_violations,
        found.phantoms,
        found.problems,
    )
