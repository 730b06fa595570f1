"""The causal counter and a map of them against an event model, with folding and sealing.

Each replica folds its own consecutive changes (it is sealed at creation) and follows the
shipping contract: it ships either its whole state or the join of the deltas it made since
its last ship, and seals after each ship. Messages are delivered late, out of order and
twice. The model knows nothing of dots, contexts or folding: a replica's value is the sum
of the changes it has heard of that no reset it has heard of observed.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdts import CCounter, ORMap

N_REPLICAS = 3
KEYS = ("milk", "eggs")
Counts = ORMap.of(CCounter)


@attrs.define
class Event:
    """A change (``amount`` on ``key``) or a reset of ``key`` (killing ``observed``)."""

    key: str
    amount: int = 0
    observed: frozenset[int] = frozenset()
    is_reset: bool = False


@attrs.define
class Replica:
    """A replica's map, the join of its deltas since its last ship, and what it knows."""

    state: Any
    pending: Any
    pending_events: set[int] = attrs.field(factory=set)
    known: set[int] = attrs.field(factory=set)


def model_value(events: list[Event], known: set[int], key: str) -> int:
    """Sum of the known changes of ``key`` that no known reset observed."""
    killed: set[int] = set()
    for i in known:
        if events[i].is_reset:
            killed |= events[i].observed
    return sum(
        events[i].amount
        for i in known
        if not events[i].is_reset and events[i].key == key and i not in killed
    )


class CounterMapMachine(RuleBasedStateMachine):
    """Replicas of ``ORMap.of(CCounter)`` with folding, against the event model."""

    def __init__(self) -> None:
        super().__init__()
        self.replicas = []
        for _ in range(N_REPLICAS):
            state = Counts()
            state.seal()
            self.replicas.append(Replica(state, Counts()))
        self.events: list[Event] = []
        self.network: list[tuple[int, Any, frozenset[int]]] = []
        self.changes = 0

    def _record(self, r: int, event: Event, delta: Any) -> None:
        rep = self.replicas[r]
        self.events.append(event)
        i = len(self.events) - 1
        rep.known.add(i)
        rep.pending_events.add(i)
        rep.pending.join(delta)

    @rule(r=st.integers(0, N_REPLICAS - 1), key=st.sampled_from(KEYS), amount=st.integers(-3, 4))
    def change(self, r: int, key: str, amount: int) -> None:
        """A replica changes a counter by a non-zero amount."""
        if amount == 0:
            return
        rep = self.replicas[r]
        op = "increment" if amount > 0 else "decrement"
        delta = rep.state.apply(f"r{r}", key, op, abs(amount))
        self._record(r, Event(key, amount), delta)
        self.changes += 1

    @rule(r=st.integers(0, N_REPLICAS - 1), key=st.sampled_from(KEYS))
    def remove(self, r: int, key: str) -> None:
        """A replica removes a key: an observed reset of its counter."""
        rep = self.replicas[r]
        killed: set[int] = set()
        for i in rep.known:
            if self.events[i].is_reset:
                killed |= self.events[i].observed
        observed = frozenset(
            i
            for i in rep.known
            if not self.events[i].is_reset and self.events[i].key == key and i not in killed
        )
        delta = rep.state.remove(f"r{r}", key)
        self._record(r, Event(key, observed=observed, is_reset=True), delta)

    @rule(src=st.integers(0, N_REPLICAS - 1), dst=st.integers(0, N_REPLICAS - 1))
    def ship_deltas(self, src: int, dst: int) -> None:
        """A replica ships the join of its deltas since its last ship, then seals."""
        rep = self.replicas[src]
        self.network.append((dst, rep.pending, frozenset(rep.pending_events)))
        rep.pending, rep.pending_events = Counts(), set()
        rep.state.seal()

    @rule(src=st.integers(0, N_REPLICAS - 1), dst=st.integers(0, N_REPLICAS - 1))
    def ship_state(self, src: int, dst: int) -> None:
        """A replica's whole state reaches another at once; the sender seals."""
        a, b = self.replicas[src], self.replicas[dst]
        b.state.join(a.state)
        b.known |= a.known
        a.state.seal()

    @precondition(lambda self: self.network)
    @rule(pick=st.integers(0, 1000), keep=st.booleans())
    def deliver(self, pick: int, keep: bool) -> None:
        """Any message in flight arrives (and may stay in flight, to arrive again)."""
        k = pick % len(self.network)
        dst, delta, events = self.network[k] if keep else self.network.pop(k)
        self.replicas[dst].state.join(delta)
        self.replicas[dst].known |= events

    @invariant()
    def values_match_the_model(self) -> None:
        """Every replica's value of every key is the model's."""
        for rep in self.replicas:
            for key in KEYS:
                expected = model_value(self.events, rep.known, key)
                actual = rep.state.value.get(key, 0)
                assert expected == actual

    @invariant()
    def removed_keys_leave_no_entry(self) -> None:
        """A key is present only while its counter holds a dot."""
        for rep in self.replicas:
            for key in rep.state:
                assert rep.state.holds(key)

    def teardown(self) -> None:
        """After everyone has everything, all replicas are equal and match the model."""
        everything = set(range(len(self.events)))
        merged = Counts()
        for rep in self.replicas:
            merged.join(rep.state)
        for key in KEYS:
            assert model_value(self.events, everything, key) == merged.value.get(key, 0)
        for rep in self.replicas:
            assert merged == rep.state | merged


TestCounterMapAgainstModel = CounterMapMachine.TestCase


def test_reset_concurrent_with_increment_keeps_only_the_unseen_increment() -> None:
    """At 3, a reset on one replica concurrent with +1 on another gives 1 in every order."""
    a, b = CCounter(), CCounter()
    b.join(a.increment("a", 3))
    d_reset = a.reset("a")
    d_inc = b.increment("b", 1)
    states = [a | b, b | a, a | d_inc, b | d_reset, (CCounter() | d_inc) | d_reset]
    assert [1, 1, 1, 1, 1] == [s.value for s in states]


def test_same_replica_increments_after_a_shipped_dot_are_not_folded_into_it() -> None:
    """The 4-instead-of-1 trap: a's later +1 must not carry the 3 that b's reset removed."""
    a, b = CCounter(), CCounter()
    a.seal()
    b.join(a.increment("a", 3))
    a.seal()  # a shipped its state to b
    d_reset = b.reset("b")
    d_inc = a.increment("a", 1)
    assert 1 == (a | d_reset).value
    assert 1 == (b | d_inc).value


def test_folding_bounds_dots_by_sync_rounds_not_changes() -> None:
    """200 changes in 5 rounds leave at most 5 dots; without sealing, one dot per change."""
    sealed, unsealed = CCounter(), CCounter()
    sealed.seal()
    for _ in range(5):
        for i in range(40):
            sealed.increment("a", 1 + i % 3)
            unsealed.increment("a", 1 + i % 3)
        sealed.seal()
    assert unsealed.value == sealed.value
    assert 5 == sealed.stats().entries
    assert 200 == unsealed.stats().entries


def test_a_fold_back_to_zero_keeps_one_dot() -> None:
    """+2 then -2 before shipping leaves one dot of 0, as the unfolded two dots would keep
    the counter (and a map key holding it) present."""
    c = CCounter()
    c.seal()
    c.increment("a", 2)
    d = c.decrement("a", 2)
    assert (0, 1) == (c.value, c.stats().entries)
    assert [["a", 2, 0]] == d.to_dict()["entries"]


def test_copies_and_decoded_states_do_not_fold() -> None:
    """Open dots are a property of the live object: a copy starts with nothing open."""
    c = CCounter()
    c.seal()
    c.increment("a", 1)
    copied = c.copy()
    copied.increment("a", 1)
    decoded = CCounter.from_dict(c.to_dict())
    decoded.increment("a", 1)
    assert (2, 2) == (copied.stats().entries, decoded.stats().entries)
    c.increment("a", 1)
    assert 1 == c.stats().entries
