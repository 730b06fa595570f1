"""Stateful tests: 2 to 5 replicas mutate, sync by state or by delta over a network that
drops and duplicates deliveries, and are checked against the event models of
``test_models.py`` after every step.

Invariants: each replica's state only grows; each replica equals the join of the deltas
of the events it knows (so replicas that have exchanged everything are equal); and each
replica's value is the model's value for the events it knows, the converged value
included.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from test_models import ELEMENTS, Event, counter_value, set_event, set_model

from crdts import AWORSet, Crdt, PNCounter
from crdts.testing import Op, replica_name

INDEX = st.integers(0, 4)  # taken modulo the number of replicas
AMOUNTS = st.integers(1, 5)


class Replicas(RuleBasedStateMachine):
    """Replicas of one type, a lossy duplicating network, and the event model."""

    factory: ClassVar[type[Crdt]]

    def __init__(self) -> None:
        super().__init__()
        self.states: list[Any] = []
        self.known: list[set[Event]] = []
        self.before: list[Any] = []
        self.deltas: list[Any] = []
        self.events: list[Event] = []
        self.seqs: dict[tuple[int, str], int] = {}
        self.network: list[tuple[int, int]] = []  # (target replica, event index) in flight

    @initialize(n=st.integers(2, 5))
    def start(self, n: int) -> None:
        self.states = [self.factory() for _ in range(n)]
        self.known = [set() for _ in range(n)]
        self.before = [s.copy() for s in self.states]

    def replica(self, i: int) -> int:
        return i % len(self.states)

    def model_value(self, known: set[Event]) -> Any:
        raise NotImplementedError

    def make_event(self, replica: int, name: str, args: tuple[Any, ...]) -> Event:
        raise NotImplementedError

    def mutate(self, i: int, name: str, *args: Any) -> None:
        """Run a mutator on replica ``i`` and send its delta to every other replica."""
        r = self.replica(i)
        event = self.make_event(r, name, args)
        delta = getattr(self.states[r], name)(replica_name(r), *args)
        self.deltas.append(delta)
        self.events.append(event)
        self.known[r].add(event)
        self.network += [(t, event.id) for t in range(len(self.states)) if t != r]

    def next_seq(self, replica: int, kind: str) -> int:
        self.seqs[(replica, kind)] = self.seqs.get((replica, kind), 0) + 1
        return self.seqs[(replica, kind)]

    # -- syncs and faults ----------------------------------------------------------------

    @rule(source=INDEX, dest=INDEX)
    def sync_by_state(self, source: int, dest: int) -> None:
        s, t = self.replica(source), self.replica(dest)
        self.states[t].join(self.states[s])
        self.known[t] |= self.known[s]

    @precondition(lambda self: self.network)
    @rule(k=st.integers(0, 10_000))
    def deliver(self, k: int) -> None:
        target, event = self.network.pop(k % len(self.network))
        self.states[target].join(self.deltas[event])
        self.known[target].add(self.events[event])

    @precondition(lambda self: self.network)
    @rule(k=st.integers(0, 10_000))
    def drop(self, k: int) -> None:
        self.network.pop(k % len(self.network))

    @precondition(lambda self: self.network)
    @rule(k=st.integers(0, 10_000))
    def duplicate(self, k: int) -> None:
        self.network.append(self.network[k % len(self.network)])

    @rule()
    def exchange_everything(self) -> None:
        """Every replica joins every other's state; all then know every event."""
        for t, state in enumerate(self.states):
            for s, other in enumerate(self.states):
                if s != t:
                    state.join(other)
                    self.known[t] |= self.known[s]
        assert all(k == set(self.events) for k in self.known)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def states_only_grow(self) -> None:
        for before, state in zip(self.before, self.states, strict=True):
            assert before <= state
        self.before = [s.copy() for s in self.states]

    @invariant()
    def each_replica_is_the_join_of_the_deltas_it_knows(self) -> None:
        for state, known in zip(self.states, self.known, strict=True):
            expected = self.factory()
            for event in known:
                expected.join(self.deltas[event.id])
            assert expected == state

    @invariant()
    def replicas_that_know_the_same_events_are_equal(self) -> None:
        for i, state in enumerate(self.states):
            for j in range(i):
                if self.known[i] == self.known[j]:
                    assert self.states[j] == state
                    assert self.states[j].digest() == state.digest()

    @invariant()
    def values_match_the_model(self) -> None:
        for state, known in zip(self.states, self.known, strict=True):
            assert self.model_value(known) == state.value


class AWORSetReplicas(Replicas):
    """AWORSet replicas against the observed-remove event model."""

    factory = AWORSet

    def model_value(self, known: set[Event]) -> Any:
        return set_model(known)

    def make_event(self, replica: int, name: str, args: tuple[Any, ...]) -> Event:
        return set_event(len(self.events), Op(replica, name, args), self.known[replica], self.seqs)

    @rule(i=INDEX, element=ELEMENTS)
    def add(self, i: int, element: Any) -> None:
        self.mutate(i, "add", element)

    @rule(i=INDEX, element=ELEMENTS)
    def remove(self, i: int, element: Any) -> None:
        self.mutate(i, "remove", element)

    @rule(i=INDEX)
    def clear(self, i: int) -> None:
        self.mutate(i, "clear")


class PNCounterReplicas(Replicas):
    """PNCounter replicas against the sum-of-known-increments model."""

    factory = PNCounter

    def model_value(self, known: set[Event]) -> Any:
        return counter_value(known, self.events)

    def make_event(self, replica: int, name: str, args: tuple[Any, ...]) -> Event:
        seq = self.next_seq(replica, name)
        return Event(len(self.events), name, replica, seq, amount=args[0])

    @rule(i=INDEX, amount=AMOUNTS)
    def increment(self, i: int, amount: int) -> None:
        self.mutate(i, "increment", amount)

    @rule(i=INDEX, amount=AMOUNTS)
    def decrement(self, i: int, amount: int) -> None:
        self.mutate(i, "decrement", amount)


TestAWORSetReplicas = AWORSetReplicas.TestCase
TestPNCounterReplicas = PNCounterReplicas.TestCase
