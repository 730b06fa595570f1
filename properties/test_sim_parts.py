"""The simulator's parts: the network model, schedules, the fake stores and the checkers."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet
from reference_cluster.errors import MalformedMessage
from reference_cluster.protocol.effects import Acked, Persist, SaveEdit, SaveMerge
from reference_cluster.protocol.messages import Heartbeat as Beat
from reference_cluster.protocol.messages import decode, encode
from reference_cluster.sim import (
    Crash,
    FaultSchedule,
    LinkFaults,
    Network,
    Op,
    Partition,
    SetModel,
    ShoppingListModel,
    Topology,
    random_schedule,
)
from reference_cluster.sim.checkers import check_final, rounds_to_converge
from reference_cluster.sim.durable import FakeClientStore, FakeServerStore
from reference_cluster.sim.runner import SimConfig, Simulation, SimulationError
from reference_cluster.sim.workload import EditRecord

LIST = "00000000-0000-4000-8000-000000000001"
TOPOLOGY = Topology.of(5, 2, 3)


def net(**faults: float) -> Network:
    n = Network(TOPOLOGY.nodes, random.Random(1), (0.001, 0.002))
    n.faults = LinkFaults(**faults)
    return n


# -- network ----------------------------------------------------------------------------------


def test_partitions_and_isolation_decide_who_can_talk() -> None:
    """Same group and nobody isolated: connected; anything else: cut; heal restores all."""
    n = net()
    n.partition([("s1", "b1"), ("s2",)])
    n.isolate("c1")
    before = (n.connected("s1", "b1"), n.connected("s1", "s2"), n.connected("s3", "c2"))
    isolated = (n.connected("c1", "c2"), n.connected("c2", "c1"))
    n.heal()
    assert ((True, False, True), (False, False), True) == (
        before,
        isolated,
        n.connected("s1", "s2") and n.connected("c1", "c2"),
    )


def test_a_healthy_link_delivers_one_intact_copy_within_the_base_delay() -> None:
    """No faults: exactly one copy, unchanged, 1 to 2 ms later."""
    (copy,) = net().transmit(b"hello", 10.0)
    assert (b"hello", False, True) == (copy.data, copy.truncated, 10.001 <= copy.arrives <= 10.002)


def test_certain_faults_drop_duplicate_and_truncate() -> None:
    """Probability 1 makes each fault happen every time."""
    dropped = net(drop=1.0).transmit(b"x" * 10, 0.0)
    doubled = net(duplicate=1.0).transmit(b"x" * 10, 0.0)
    cut = net(truncate=1.0).transmit(b"x" * 10, 0.0)
    assert ([], 2, True) == (
        dropped,
        len(doubled),
        all(c.truncated and len(c.data) < 10 for c in cut),
    )


@given(st.integers(0, 2**32))
def test_a_truncated_message_never_decodes(seed: int) -> None:
    """Truncation always yields a malformed frame, never a different valid message."""
    n = Network(TOPOLOGY.nodes, random.Random(seed), (0.0, 0.0))
    n.faults = LinkFaults(truncate=1.0)
    (copy,) = n.transmit(encode(Beat("s1")), 0.0)
    with pytest.raises(MalformedMessage):
        decode(copy.data)


def test_extra_delay_reorders_messages() -> None:
    """With a large extra delay, some later message arrives before an earlier one."""
    n = net(max_extra_delay=0.5)
    arrivals = [n.transmit(b"m", i * 0.01)[0].arrives for i in range(50)]
    assert arrivals != sorted(arrivals)


@pytest.mark.parametrize("field", ["drop", "duplicate", "truncate"])
def test_fault_probabilities_are_checked(field: str) -> None:
    """A probability outside [0, 1] is refused."""
    with pytest.raises(ValueError, match=f"{field} must be a probability"):
        LinkFaults(**{field: 1.5})


# -- schedules ----------------------------------------------------------------------------------


def test_faults_after_the_heal_are_refused() -> None:
    """A schedule is a prefix of the run: nothing may happen at or after heal_at."""
    with pytest.raises(ValueError, match="not within"):
        FaultSchedule((Crash(5.0, "s1"),), 5.0)


def test_faults_naming_unknown_nodes_are_refused() -> None:
    """check() names the unknown nodes."""
    schedule = FaultSchedule((Partition(1.0, (("s1", "s9"),)),), 5.0)
    with pytest.raises(ValueError, match=r"unknown nodes \['s9'\]"):
        schedule.check(TOPOLOGY)


@given(st.integers(0, 2**32))
def test_random_schedules_are_valid_and_reproducible(seed: int) -> None:
    """The generator's schedules fit the topology and depend only on the seed."""
    a = random_schedule(random.Random(seed), TOPOLOGY, 20.0)
    b = random_schedule(random.Random(seed), TOPOLOGY, 20.0)
    a.check(TOPOLOGY)
    assert (a, True) == (b, sum(a.counts().values()) > 0)


# -- fake stores ------------------------------------------------------------------------------


def test_a_server_store_keeps_completed_writes_and_loses_the_rest_in_a_crash() -> None:
    """Only completed writes survive a crash."""
    store = FakeServerStore(AWORSet)
    d1, d2 = AWORSet().add("c1", "a"), AWORSet().add("c2", "b")
    store.begin(Persist(1, LIST, d1))
    store.begin(Persist(2, LIST, d2))
    done = store.complete(1)
    lost = store.crash()
    assert (True, 1, False, {LIST: d1}) == (done, lost, store.complete(2), store.load_all())


def test_a_client_store_keeps_edits_merges_and_acks() -> None:
    """A restarted client sees its state, its unacknowledged queue and its next seq."""
    store = FakeClientStore(AWORSet)
    d1, d2 = AWORSet().add("c1", "a"), AWORSet().add("c2", "b")
    store.save_edit(SaveEdit(LIST, 1, d1))
    store.save_edit(SaveEdit(LIST, 2, d1))
    store.save_merge(SaveMerge(LIST, d2))
    store.ack(Acked(LIST, 1))
    saved = store.load()[LIST]
    assert (d1 | d2, (2,), 3) == (saved.state, tuple(s for s, _ in saved.queue), saved.next_seq)


# -- checkers ---------------------------------------------------------------------------------


def _edit(number: int, op: Op, delta: Any, *, acked: bool = True) -> EditRecord:
    return EditRecord(number, "c1", 0, LIST, number + 1, op, delta, (), acked)


def test_check_final_passes_equal_complete_states() -> None:
    """Servers and a client holding every acknowledged edit: nothing to report."""
    s = AWORSet()
    edits = [_edit(0, Op("add", ("a",)), s.add("c1", "a"))]
    out = check_final(
        SetModel(), [LIST], {"s1": {LIST: s}, "s2": {LIST: s.copy()}}, {"c1": {LIST: s}}, edits
    )
    assert (0, 0, 0, []) == (out.divergent, out.lost_acked, out.phantoms, out.problems)


def test_check_final_reports_divergence_lost_edits_and_phantoms() -> None:
    """A server missing an acked edit diverges and loses it; an element nobody added is
    a phantom."""
    full = AWORSet()
    d = full.add("c1", "a")
    full.add("c9", "ghost")
    edits = [_edit(0, Op("add", ("a",)), d)]
    out = check_final(SetModel(), [LIST], {"s1": {LIST: full}, "s2": {}}, {}, edits)
    assert (1, 1, 1) == (out.divergent, out.lost_acked, out.phantoms)


def test_check_final_compares_only_the_holders_of_a_list() -> None:
    """With placement, a server that does not hold a list is not compared (it holds
    nothing of it), while a holder missing an acknowledged edit still diverges and loses
    it."""
    s = AWORSet()
    edits = [_edit(0, Op("add", ("a",)), s.add("c1", "a"))]
    servers = {"s1": {LIST: s}, "s2": {LIST: s.copy()}, "s3": {}}
    fine = check_final(SetModel(), [LIST], servers, {}, edits, holders={LIST: ("s1", "s2")})
    short = check_final(SetModel(), [LIST], servers, {}, edits, holders={LIST: ("s1", "s3")})
    assert ((0, 0), (1, 1)) == (
        (fine.divergent, fine.lost_acked),
        (short.divergent, short.lost_acked),
    )


def test_check_final_reports_a_client_that_differs() -> None:
    """A client that synced but holds something else counts as divergence."""
    s = AWORSet()
    s.add("c1", "a")
    out = check_final(SetModel(), [LIST], {"s1": {LIST: s}}, {"c2": {LIST: AWORSet()}}, [])
    assert 1 == out.divergent


def test_the_counter_check_counts_each_change_that_reached_the_state_once() -> None:
    """A counter that lost an included change, or counted one twice, is a violation."""
    model = ShoppingListModel()
    state = model.doc_type()
    create = state.add_item("c1", "count-apples", 1)
    plus = state.change_quantity("c1", "count-apples", 2)
    edits = [
        _edit(0, Op("add_item", ("count-apples", 1)), create),
        _edit(1, Op("change_quantity", ("count-apples", 2)), plus),
    ]
    good = model.check(state, edits)
    wrong = state.copy()
    wrong.change_quantity("c9", "count-apples", 1)
    assert ([], ["counter"]) == (good, [k for k, _ in model.check(wrong, edits)])


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([(10.0, ("a",)), (10.5, ("a",))], 0),
        ([(10.0, ("x",)), (11.0, ("a",)), (12.0, ("a",))], 1),
        ([(10.0, ("x",)), (12.5, ("a",))], 2),
        ([(10.0, ("a",)), (11.0, ("x",)), (13.0, ("a",))], 2),
        ([(10.0, ("x",)), (11.0, ("x",))], None),
    ],
)
def test_rounds_count_from_the_heal_to_the_last_change(
    samples: list[tuple[float, tuple[str, ...]]], expected: int | None
) -> None:
    """Rounds are anti-entropy intervals (here 2 s) from the heal (t=10) until the digests
    reached the final ones for good."""
    assert expected == rounds_to_converge(samples, ("a",), 10.0, 2.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("servers", 0, "'servers' must be >= 1"),
        ("edits_per_client", -1, "'edits_per_client' must be >= 0"),
        ("heal_at", float("inf"), "'heal_at' must be a finite time >= 0"),
        ("settle", -1.0, "'settle' must be a finite time >= 0"),
        ("growth_check_every", 0.0, "'growth_check_every' must be a finite step > 0"),
        ("converge_sample_every", -0.25, "'converge_sample_every' must be a finite step > 0"),
        ("timeline_every", float("nan"), "'timeline_every' must be a finite step > 0"),
        ("base_delay", (0.01, 0.001), "'base_delay' must be (low, high) with 0 <= low <= high"),
        ("store_latency", (-1.0, 0.0), "'store_latency' must be (low, high)"),
    ],
)
def test_a_config_that_cannot_run_is_refused(field: str, value: Any, message: str) -> None:
    """A count below 1, a time that is negative or infinite, a sampling step that is not
    above 0 (it would fill the schedule forever) and a reversed delay range are refused."""
    with pytest.raises(ValueError) as info:
        SimConfig(**{field: value})
    assert str(info.value).startswith(message)


def test_a_sampling_step_too_small_to_matter_is_an_error_not_a_hang() -> None:
    """A step so small that the schedule would need more events than the budget raises."""
    config = SimConfig(converge_sample_every=1e-9, max_events=10_000)
    with pytest.raises(SimulationError, match="takes more than 10000 events"):
        Simulation(1, config=config).run()
