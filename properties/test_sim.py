"""The simulator: determinism, a seed sweep, Hypothesis-driven fault schedules, and proof
that the checkers catch deliberately broken cores."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from reference_cluster.cores.server import ServerCore
from reference_cluster.sim import (
    ClientOp,
    Crash,
    FaultSchedule,
    HealPartition,
    Isolate,
    LinkFaults,
    Op,
    Partition,
    Rejoin,
    Restart,
    SetLinkFaults,
    SimConfig,
    Simulation,
    Topology,
    Workload,
    run,
)
from reference_cluster.sim.__main__ import main
from reference_cluster.sim.mutants import (
    AckBeforePersistServer,
    ForgetfulClient,
    HastyHandoffServer,
    HintBeforePersistServer,
    HintHoardingServer,
    HoardingServer,
    ListHoardingServer,
    NoAntiEntropyServer,
    QuorumOfOneServer,
    UnrecordedRepairServer,
)
from reference_cluster.sim.workload import new_list_id

TOPOLOGY = SimConfig().topology
SMALL = SimConfig(heal_at=8.0, settle=4.0, edits_per_client=6)
"""A shorter run for the schedule searches (same cluster shape)."""
EXAMPLES = max(5, settings().max_examples // 3)


@pytest.fixture(autouse=True)
def _quiet_cores() -> Iterator[None]:
    """Faults make the cores log warnings by design; keep the test output readable."""
    logger = logging.getLogger("reference_cluster")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


# -- determinism -----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_trace_bytes() -> None:
    """Twenty seeds run twice produce identical trace hashes, and different seeds differ."""
    first = [run(seed).trace_hash for seed in range(20)]
    second = [run(seed).trace_hash for seed in range(20)]
    assert (first, 20) == (second, len(set(first)))


def test_traces_do_not_depend_on_the_interpreter_hash_seed() -> None:
    """A run in another process with another PYTHONHASHSEED has the same trace hash."""
    code = (
        "import logging; logging.disable(logging.CRITICAL)\n"
        "from reference_cluster.sim import run\n"
        "print(' '.join(run(s).trace_hash for s in (3, 4)))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert [run(3).trace_hash, run(4).trace_hash] == out.stdout.split()


def test_replaying_a_seed_from_the_command_line_prints_the_same_trace() -> None:
    """``python -m reference_cluster.sim --seed N --trace`` prints identical output twice."""
    cmd = [sys.executable, "-m", "reference_cluster.sim", "--seed", "7", "--trace"]
    outs = [
        subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        for _ in range(2)
    ]
    assert (0, outs[0].stdout, True) == (
        outs[0].returncode,
        outs[1].stdout,
        " recv " in outs[0].stdout and "trace sha256" in outs[0].stdout,
    )


# -- the correct cluster passes ----------------------------------------------------------------


def test_a_sweep_of_seeds_passes_every_checker() -> None:
    """Two dozen seeded runs (5 servers, 2 brokers, 3 clients, partitions, crashes, lossy
    links) end converged within 2 rounds, with no lost, phantom or double-counted edit."""
    results = [run(seed) for seed in range(1000, 1024)]
    bad = {r.seed: r.problems[:3] for r in results if not r.ok(2)}
    edits = sum(r.edits for r in results)
    assert ({}, True) == (bad, edits > 24 * 10 and all(r.acked == r.edits for r in results))


def test_every_run_evicts_and_reloads_server_lists() -> None:
    """The simulated servers keep 1 decoded list of 3, so every run reads lists back from
    the store after evicting them, and still passes every checker (which compares each
    server's memory with its store at the end)."""
    results = [run(seed) for seed in range(2000, 2006)]
    loads = [dict(r.stats).get("server loads from store", 0) for r in results]
    assert ([], True) == ([r.problems for r in results if r.problems], min(loads) > 0)


def test_the_command_line_sweep_prints_the_table_and_succeeds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--seeds N`` prints the summary table and exits 0 for a correct cluster."""
    code = main(["--seeds", "3", "--workers", "1"])
    out = capsys.readouterr().out
    assert (0, True, True) == (code, "divergent lists" in out, "FAILED" not in out)


# -- each list on 3 of the 5 servers ---------------------------------------------------------

PLACED = SimConfig(replicas=3)
"""Today's cluster shape with each list on 3 of the 5 servers."""


def test_a_sweep_with_three_replicas_of_five_servers_passes_every_checker() -> None:
    """With each list on 3 of 5 servers, seeded runs under partitions, crashes (of holders
    too) and lossy links end with every list's holders in agreement, every acknowledged
    edit on each of them, no copy on any other server, and 3 copies of each list."""
    results = [run(seed, config=PLACED) for seed in range(3000, 3016)]
    bad = {r.seed: r.problems[:3] for r in results if not r.ok(2)}
    copies = {
        sum(v for k, v in r.stats if k.startswith("placement: lists held by "))
        / dict(r.stats)["placement: lists"]
        for r in results
    }
    assert ({}, 0, {3.0}) == (bad, sum(r.misplaced for r in results), copies)


@settings(max_examples=max(3, EXAMPLES // 2))
@given(st.deferred(lambda: fault_schedules(TOPOLOGY, SMALL.heal_at)))
def test_any_fault_schedule_with_three_replicas_ends_converged(schedule: FaultSchedule) -> None:
    """Whatever faults come before the heal, with 3 replicas of 5 every checker passes."""
    config = SimConfig(heal_at=8.0, settle=4.0, edits_per_client=6, replicas=3)
    result = run(7, config=config, schedule=schedule)
    assert ((), True) == (result.problems, result.rounds is not None and result.rounds <= 2)


def test_edits_wait_on_the_clients_while_every_holder_of_their_list_is_down() -> None:
    """With all 3 holders of a list crashed and the other 2 servers up, the brokers
    answer ``unavailable`` and no other server takes the list; the edits wait on the
    clients, reach the holders after the heal, and nothing is lost."""
    lists = (new_list_id(__import__("random").Random(11)),)
    config = SimConfig(heal_at=8.0, settle=4.0, replicas=3)
    holders = Simulation(0, config=config).membership.holders(lists[0], 3)
    ops = tuple(
        ClientOp(1.5 + i, f"c{1 + i % 3}", 0, Op("add_item", (f"item {i}", 1 + i)))
        for i in range(5)
    )
    crashes = tuple(Crash(1.0, h) for h in holders)
    result = run(
        3, config=config, schedule=FaultSchedule(crashes, 8.0), workload=Workload(lists, ops)
    )
    stats = dict(result.stats)
    assert (True, 0, True, 5, 5) == (
        result.ok(2),
        result.misplaced,
        stats.get("error replies: unavailable", 0) > 0,
        result.edits,
        result.acked,
    )


def test_a_server_that_keeps_lists_placed_elsewhere_is_caught() -> None:
    """A mutant server that takes every list as its own leaves copies on servers that do
    not hold them, and the placement checker says so."""
    broken = [run(s, config=PLACED, server_factory=HoardingServer) for s in range(3)]
    assert all(r.misplaced > 0 and not r.ok(2) for r in broken)


# -- write quorum, hints and membership changes -----------------------------------------------

CHURN = SimConfig(replicas=3, spares=1)
"""3 replicas of 5 servers, a spare, and one or two membership changes a run."""


def test_a_sweep_with_membership_changes_passes_every_checker() -> None:
    """With servers joining and leaving during the faults, every list ends on exactly its
    holders by the last membership, every server and broker follows it, every handoff
    waited for the holders, no hint is left, and every edit was acknowledged by W = 2
    durable copies."""
    results = [run(seed, config=CHURN) for seed in range(4000, 4012)]
    bad = {r.seed: r.problems[:3] for r in results if not r.ok(2)}
    stats = [dict(r.stats) for r in results]
    changed = sum(s.get("faults: ChangeMembership", 0) for s in stats)
    handed = sum(s.get("lists handed over", 0) for s in stats)
    hinted = sum(s.get("hints taken", 0) for s in stats)
    assert ({}, True, True, True) == (bad, changed >= 12, handed > 0, hinted > 0)


@pytest.mark.parametrize(
    ("mutant", "config"),
    [
        (QuorumOfOneServer, PLACED),
        (HintBeforePersistServer, PLACED),
        (HintHoardingServer, PLACED),
        (ListHoardingServer, CHURN),
        (HastyHandoffServer, CHURN),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_random_schedules_catch_the_quorum_hint_and_handoff_mutants(
    mutant: type[ServerCore[Any]], config: SimConfig
) -> None:
    """Each broken server fails some of 8 seeds that the correct server passes:
    acknowledging with one copy, confirming a hint before it is durable, keeping hints,
    keeping lists it no longer holds, forgetting them before their holders had them."""
    broken = [run(s, config=config, server_factory=mutant) for s in range(8)]
    assert any(not r.ok(2) for r in broken)


def test_the_command_line_sweep_places_lists_with_replicas(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--replicas 3`` runs the placed cluster and prints each server's share."""
    code = main(["--seeds", "2", "--replicas", "3", "--workers", "1"])
    out = capsys.readouterr().out
    assert (0, True, "FAILED" not in out) == (code, "share of the lists per server" in out, True)


# -- fault schedules drawn by Hypothesis ------------------------------------------------------


def fault_schedules(topology: Topology, heal_at: float) -> st.SearchStrategy[FaultSchedule]:
    """Schedules of any faults on ``topology`` before ``heal_at``; they shrink towards
    fewer, earlier, simpler faults."""
    times = st.floats(0.0, heal_at - 0.01, allow_nan=False)
    nodes = st.sampled_from(topology.nodes)
    groups = st.lists(st.lists(nodes, min_size=1, max_size=5, unique=True), min_size=1, max_size=3)
    links = st.builds(
        LinkFaults,
        drop=st.floats(0.0, 0.5),
        duplicate=st.floats(0.0, 0.3),
        truncate=st.floats(0.0, 0.05),
        max_extra_delay=st.floats(0.0, 0.3),
    )
    fault = st.one_of(
        st.builds(Partition, times, groups.map(lambda gs: tuple(tuple(g) for g in gs))),
        st.builds(HealPartition, times),
        st.builds(Isolate, times, nodes),
        st.builds(Rejoin, times, nodes),
        st.builds(Crash, times, nodes, st.booleans()),
        st.builds(Restart, times, nodes),
        st.builds(SetLinkFaults, times, links),
    )
    return st.lists(fault, max_size=12).map(lambda fs: FaultSchedule(tuple(fs), heal_at))


@settings(max_examples=EXAMPLES)
@given(fault_schedules(TOPOLOGY, SMALL.heal_at), st.integers(0, 2**32))
def test_any_fault_schedule_ends_converged_with_nothing_lost(
    schedule: FaultSchedule, seed: int
) -> None:
    """Whatever Hypothesis throws at the cluster before the heal, every checker passes
    (a failure shrinks to a minimal schedule and prints it)."""
    result = run(seed, config=SMALL, schedule=schedule)
    assert ((), True) == (result.problems, result.rounds is not None and result.rounds <= 2)


# -- broken cores are caught ------------------------------------------------------------------

CUT_OFF_S1 = Partition(0.5, (("s1", "b1", "b2", "c1", "c2", "c3"), ("s2", "s3", "s4", "s5")))
"""Brokers and clients keep only s1; the other servers never hear of what s1 applies."""


def _one_edit_workload() -> Workload:
    lists = (new_list_id(__import__("random").Random(5)),)
    return Workload(lists, (ClientOp(4.5, "c1", 0, Op("add_item", ("milk", 2))),))


def test_a_server_that_acks_before_persisting_loses_an_acknowledged_edit() -> None:
    """s1 is cut off from its peers and crashes in the middle of the write that follows
    c1's edit: the mutant has already acknowledged it, so the edit is lost for good; the
    correct server acknowledges only after the write, and nothing is lost."""
    schedule = FaultSchedule((CUT_OFF_S1, Crash(4.0, "s1", True), Restart(5.0, "s1")), 8.0)
    kwargs = {"config": SMALL, "schedule": schedule, "workload": _one_edit_workload()}
    broken = run(1, server_factory=AckBeforePersistServer, **kwargs)
    correct = run(1, server_factory=ServerCore, **kwargs)
    assert ((1, 1), ()) == ((broken.lost_acked, broken.divergent), correct.problems)


def test_an_acknowledgement_ahead_of_its_write_is_caught_without_a_crash() -> None:
    """With no fault at all, the mutant's acknowledgement leaves while its write is in
    flight: the at-acknowledgement check counts it, and the correct server has none."""
    kwargs = {"config": SMALL, "schedule": FaultSchedule((), 8.0), "workload": _one_edit_workload()}
    broken = run(1, server_factory=AckBeforePersistServer, **kwargs)
    correct = run(1, server_factory=ServerCore, **kwargs)
    assert ((1, 0), (0, ())) == (
        (broken.acked_not_durable, broken.lost_acked),
        (correct.acked_not_durable, correct.problems),
    )


def test_random_schedules_catch_the_server_that_acks_before_persisting() -> None:
    """The seeded runs expose the early acknowledgement in every seed (it used to take a
    crash in a narrow window: 1 seed of 300)."""
    broken = [run(s, server_factory=AckBeforePersistServer) for s in range(5)]
    assert [True] * 5 == [r.acked_not_durable > 0 and not r.ok(2) for r in broken]


def test_random_schedules_catch_a_server_that_leaves_repairs_out_of_its_changes() -> None:
    """A reply since a version that misses what anti-entropy brought leaves the client
    short of the server's state: the check at each reply catches it in several of a dozen
    seeds, and the correct server in none."""
    broken = [run(s, server_factory=UnrecordedRepairServer) for s in range(12)]
    correct = [run(s) for s in range(12)]
    caught = [r.seed for r in broken if r.short_replies and not r.ok(2)]
    assert (True, 0) == (len(caught) >= 3, sum(r.short_replies for r in correct))


def test_a_server_that_skips_anti_entropy_leaves_lists_divergent() -> None:
    """A propagation cut by a partition is never repaired without anti-entropy (with
    W = 1, so that s1 acknowledges the edit alone; with W = 2 the retries after the heal
    carry it)."""
    schedule = FaultSchedule((CUT_OFF_S1,), 8.0)
    config = attrs.evolve(SMALL, write_quorum=1)
    kwargs = {"config": config, "schedule": schedule, "workload": _one_edit_workload()}
    broken = run(1, server_factory=NoAntiEntropyServer, **kwargs)
    correct = run(1, **kwargs)
    assert ((1, None), ((), 1)) == (
        (broken.divergent, broken.rounds),
        (correct.problems, correct.rounds),
    )


def test_a_client_that_does_not_persist_its_edits_reuses_a_dot() -> None:
    """An offline client forgets an unsent edit in a crash and issues its dot again."""
    lists = _one_edit_workload().list_ids
    ops = (
        ClientOp(1.0, "c1", 0, Op("add_item", ("milk", 1))),
        ClientOp(4.0, "c1", 0, Op("add_item", ("eggs", 1))),
    )
    schedule = FaultSchedule((Isolate(0.5, "c1"), Crash(2.0, "c1"), Restart(3.0, "c1")), 8.0)
    kwargs = {"config": SMALL, "schedule": schedule, "workload": Workload(lists, ops)}
    broken = run(1, client_factory=ForgetfulClient, **kwargs)
    correct = run(1, **kwargs)
    assert ((1, True), ()) == ((broken.reused_dots, broken.shrunk > 0), correct.problems)


def test_random_schedules_catch_the_server_without_anti_entropy() -> None:
    """The seeded nemesis alone exposes the missing repair in most runs."""
    failed = [s for s in range(6) if not run(s, server_factory=NoAntiEntropyServer).ok(2)]
    assert len(failed) >= 4


def test_hypothesis_shrinks_a_failing_schedule_to_a_minimal_one() -> None:
    """Searching schedules against the broken server finds a failure and shrinks it to at
    most two faults, which still fail."""
    small = SimConfig(heal_at=6.0, settle=4.0, edits_per_client=4)

    def diverges(schedule: FaultSchedule) -> bool:
        return (
            run(2, config=small, schedule=schedule, server_factory=NoAntiEntropyServer).divergent
            > 0
        )

    minimal = find(
        fault_schedules(TOPOLOGY, small.heal_at),
        diverges,
        settings=settings(max_examples=200, database=None, derandomize=True),
    )
    assert (True, True) == (len(minimal.faults) <= 2, diverges(minimal))


# -- a Byzantine collaborator (issue 12: authorship) ------------------------------------------


def test_the_default_runs_include_a_byzantine_client_whose_forgeries_all_fail() -> None:
    """Every seeded run has a collaborator forging every kind of push; each kind is tried
    and refused, and no forged dot or claim reaches any server."""
    from reference_cluster.sim.byzantine import FORGERIES

    results = [run(seed) for seed in range(6)]
    stats: dict[str, int] = {}
    for r in results:
        for k, v in r.stats:
            stats[k] = stats.get(k, 0) + v
    tried = {k.split(": ")[1] for k in stats if k.startswith("byzantine forgeries: ")}
    refused = {k.split(": ")[1] for k in stats if k.startswith("byzantine refusals: ")}
    expected_tried = set(FORGERIES) - {"honest"}
    assert (expected_tried, True) == (tried, {"forbidden", "behind", "quota", "invalid"} <= refused)
    assert ([], [0] * 6) == (
        [r.problems for r in results if r.problems],
        [r.forged for r in results],
    )


def test_the_sweep_catches_a_server_without_the_authorship_check() -> None:
    """With the check removed, the forgeries get through in every seed: forged dots on the
    servers, and a victim that can no longer edit (its counter claimed to 2**63 - 1)."""
    from reference_cluster.sim.mutants import NoAuthorshipServer

    broken = [run(s, server_factory=NoAuthorshipServer) for s in range(4)]
    assert [True] * 4 == [r.forged > 0 and not r.ok(2) for r in broken]
    assert any("has issued its last dot" in p for r in broken for p in r.problems)


def test_the_byzantine_client_can_be_left_out() -> None:
    """``SimConfig(byzantine=False)`` runs the honest cluster alone (no forgery sent)."""
    result = run(3, config=SimConfig(byzantine=False))
    assert ((), False) == (
        result.problems,
        any(k.startswith("byzantine") for k, _ in result.stats),
    )
