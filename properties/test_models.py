"""Semantics against sequential models, delivery of deltas, and context compaction.

The models know nothing of dots or contexts. Each operation is an *event*; a replica knows
a set of events (its own, and those that reached it through a delta or a state); its
value is a function of that set:

* a counter's value is the sum of the increments it knows minus the decrements (a tally
  delta carries a replica's whole tally, so knowing a replica's k-th increment means
  knowing its first k);
* an add-wins set holds every element with an add event that no known event *observed*:
  an add, remove or clear observes the adds of its elements that were live at its
  replica when it ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet, Crdt, GCounter, PNCounter
from crdts.testing import History, Op, Step, Sync, histories, operations_for, replica_name

T = TypeVar("T", bound=Crdt)

ELEMENTS = st.sampled_from(["a", "b", "c", 1])
N_REPLICAS = 3


@attrs.frozen
class Event:
    """One operation, as the model sees it."""

    id: int
    kind: str
    replica: int
    seq: int  # position in the replica's stream of events of this kind
    element: Any = None
    amount: int = 0
    observed: frozenset[int] = frozenset()


def live_adds(known: Iterable[Event]) -> list[Event]:
    """The add events that no known event observed."""
    known = list(known)
    dead = set().union(*(e.observed for e in known))
    return [e for e in known if e.kind == "add" and e.id not in dead]


def set_model(known: Iterable[Event]) -> frozenset[Any]:
    """The elements of the add-wins set that knows ``known``."""
    return frozenset(e.element for e in live_adds(known))


def steps_strategy(ops: dict[str, st.SearchStrategy[tuple[Any, ...]]]) -> st.SearchStrategy[Any]:
    """Lists of mutations and syncs (by state, or by one earlier delta) on the replicas."""
    index = st.integers(0, N_REPLICAS - 1)
    op_steps = [st.builds(Op, index, st.just(name), args) for name, args in sorted(ops.items())]
    sync = st.builds(Sync, index, index, st.none() | st.integers(0, 1000))
    return st.lists(st.one_of(*op_steps, sync), max_size=30)


SET_OPS = {
    "add": ELEMENTS.map(lambda e: (e,)),
    "remove": ELEMENTS.map(lambda e: (e,)),
    "clear": st.just(()),
}
COUNTER_OPS = {"increment": st.integers(1, 5).map(lambda n: (n,))}
PN_OPS = {**COUNTER_OPS, "decrement": st.integers(1, 5).map(lambda n: (n,))}


def replay_with_model(
    factory: Callable[[], T],
    steps: Sequence[Step],
    make_event: Callable[[int, Op, set[Event], dict[tuple[int, str], int]], Event],
    check: Callable[[T, set[Event], list[Event]], None],
) -> tuple[list[T], list[set[Event]], list[Event]]:
    """Replay ``steps`` on the states and on the model side by side, calling ``check`` on
    every replica after every step."""
    states = [factory() for _ in range(N_REPLICAS)]
    known: list[set[Event]] = [set() for _ in range(N_REPLICAS)]
    deltas: list[T] = []
    events: list[Event] = []
    seqs: dict[tuple[int, str], int] = {}
    for step in steps:
        if isinstance(step, Op):
            event = make_event(len(events), step, known[step.replica], seqs)
            delta = getattr(states[step.replica], step.name)(replica_name(step.replica), *step.args)
            deltas.append(delta)
            events.append(event)
            known[step.replica].add(event)
        elif step.delta is None:
            states[step.target].join(states[step.source])
            known[step.target] |= known[step.source]
        elif deltas:
            i = step.delta % len(deltas)
            states[step.target].join(deltas[i])
            known[step.target].add(events[i])
        for state, k in zip(states, known, strict=True):
            check(state, k, events)
    return states, known, events


def next_seq(seqs: dict[tuple[int, str], int], replica: int, kind: str) -> int:
    """The next position in ``replica``'s stream of ``kind`` events."""
    seqs[(replica, kind)] = seqs.get((replica, kind), 0) + 1
    return seqs[(replica, kind)]


def set_event(i: int, op: Op, known: set[Event], seqs: dict[tuple[int, str], int]) -> Event:
    """The model event of an AWORSet operation: what it observed at its replica."""
    element = op.args[0] if op.args else None
    live = live_adds(known)
    if op.name == "clear":
        observed = frozenset(e.id for e in live)
    else:
        observed = frozenset(e.id for e in live if e.element == element)
    return Event(i, op.name, op.replica, next_seq(seqs, op.replica, op.name), element, 0, observed)


def counter_event(i: int, op: Op, known: set[Event], seqs: dict[tuple[int, str], int]) -> Event:
    """The model event of a counter operation."""
    seq = next_seq(seqs, op.replica, op.name)
    return Event(i, op.name, op.replica, seq, amount=op.args[0])


def counter_value(known: set[Event], events: list[Event]) -> int:
    """Increments minus decrements of every event within the known tally prefixes."""
    top: dict[tuple[int, str], int] = {}
    for e in known:
        key = (e.replica, e.kind)
        top[key] = max(top.get(key, 0), e.seq)
    return sum(
        (e.amount if e.kind == "increment" else -e.amount)
        for e in events
        if e.seq <= top.get((e.replica, e.kind), 0)
    )


# -- semantics --------------------------------------------------------------------------


@given(steps_strategy(PN_OPS))
def test_pncounter_value_is_increments_minus_decrements(steps: list[Step]) -> None:
    """Every replica's value is the sum of the increments minus decrements it knows of;
    after everyone syncs, it is the sum over the whole history."""

    def check(state: PNCounter, known: set[Event], events: list[Event]) -> None:
        assert counter_value(known, events) == state.value

    states, _, events = replay_with_model(PNCounter, steps, counter_event, check)
    total = sum(e.amount if e.kind == "increment" else -e.amount for e in events)
    everyone = PNCounter()
    for s in states:
        everyone.join(s)
    assert total == everyone.value


@given(steps_strategy(COUNTER_OPS))
def test_gcounter_value_is_the_sum_of_increments(steps: list[Step]) -> None:
    """Every replica's value is the sum of the increments it knows of; after everyone
    syncs, it is the sum of every increment."""

    def check(state: GCounter, known: set[Event], events: list[Event]) -> None:
        assert counter_value(known, events) == state.value

    states, _, events = replay_with_model(GCounter, steps, counter_event, check)
    everyone = GCounter()
    for s in states:
        everyone.join(s)
    assert sum(e.amount for e in events) == everyone.value


@given(steps_strategy(SET_OPS))
def test_aworset_matches_the_observed_remove_model(steps: list[Step]) -> None:
    """After every step, every replica holds exactly the elements with an add that no
    known event observed, whatever order deltas and states arrived in."""

    def check(state: AWORSet, known: set[Event], events: list[Event]) -> None:
        assert set_model(known) == state.value

    replay_with_model(AWORSet, steps, set_event, check)


SEQUENTIAL_OPS = st.lists(
    st.tuples(
        st.integers(0, N_REPLICAS - 1), st.sampled_from(["add", "remove", "clear"]), ELEMENTS
    ),
    max_size=30,
)


@given(SEQUENTIAL_OPS)
def test_aworset_without_concurrency_is_a_plain_set(ops: list[tuple[int, str, Any]]) -> None:
    """When each operation's replica has seen every earlier one, the set behaves as a
    Python set, at every step and on every replica after syncing."""
    states = [AWORSet() for _ in range(N_REPLICAS)]
    model: set[Any] = set()
    last = 0
    for replica, name, element in ops:
        state = states[replica]
        state.join(states[last])
        if name == "add":
            state.add(replica_name(replica), element)
            model.add(element)
        elif name == "remove":
            state.remove(replica_name(replica), element)
            model.discard(element)
        else:
            state.clear(replica_name(replica))
            model.clear()
        assert model == state.value
        last = replica
    for state in states:
        state.join(states[last])
        assert model == state.value


def run_ops(state: AWORSet, replica: str, ops: list[tuple[str, Any]]) -> list[AWORSet]:
    """Apply ``ops`` to ``state`` as ``replica``; return their deltas."""
    deltas = []
    for name, element in ops:
        if name == "clear":
            deltas.append(state.clear(replica))
        else:
            deltas.append(getattr(state, name)(replica, element))
    return deltas


def touched(ops: list[tuple[str, Any]], element: Any) -> bool:
    """Whether ``ops`` act on ``element`` (a clear acts on every element)."""
    return any(name == "clear" or e == element for name, e in ops)


CONCURRENT_OPS = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "clear"]), ELEMENTS), max_size=6
)


@given(SEQUENTIAL_OPS, CONCURRENT_OPS, CONCURRENT_OPS, st.booleans())
def test_add_wins_and_remove_deletes_only_what_it_observed(
    prefix: list[tuple[int, str, Any]],
    ops_a: list[tuple[str, Any]],
    ops_b: list[tuple[str, Any]],
    by_delta: bool,
) -> None:
    """From a shared state, two replicas act concurrently, then exchange: an element is
    present iff a replica that acted on it last added it, or neither acted on it and it
    was there before. So a concurrent add beats a remove, and a remove (or clear) deletes
    only the adds it had seen."""
    shared = AWORSet()
    for _, name, element in prefix:
        run_ops(shared, "p", [(name, element)])
    a, b = shared.copy(), shared.copy()
    deltas_a = run_ops(a, "a", ops_a)
    deltas_b = run_ops(b, "b", ops_b)
    if by_delta:
        for d in deltas_b:
            a.join(d)
        for d in deltas_a:
            b.join(d)
    else:
        a, b = a | b, b | a
    assert a == b
    candidates = set(shared.value) | {e for _, e in ops_a} | {e for _, e in ops_b}
    expected = {
        e
        for e in candidates
        if (touched(ops_a, e) and e in run_alone(shared, ops_a))
        or (touched(ops_b, e) and e in run_alone(shared, ops_b))
        or (not touched(ops_a, e) and not touched(ops_b, e) and e in shared)
    }
    assert expected == a.value


def run_alone(shared: AWORSet, ops: list[tuple[str, Any]]) -> frozenset[Any]:
    """The value a replica reaches applying ``ops`` to ``shared`` on its own."""
    state = shared.copy()
    run_ops(state, "solo", ops)
    return state.value


# -- delivery ---------------------------------------------------------------------------

TYPES: list[tuple[Callable[[], Any], Any]] = [
    (GCounter, operations_for(GCounter)),
    (PNCounter, operations_for(PNCounter)),
    (AWORSet, operations_for(AWORSet)),
]

ANY_HISTORY = st.sampled_from(TYPES).flatmap(
    lambda t: histories(t[0], t[1], replicas=N_REPLICAS, max_ops=30)
)


def fold(states: Iterable[T], start: T) -> T:
    """Join ``states`` into ``start`` in order; return it."""
    for s in states:
        start.join(s)
    return start


def everyone_synced(h: History[T]) -> list[T]:
    """The replicas after each has joined every other's state."""
    converged = h.converged()
    return [fold([converged], r.copy()) for r in h.replicas]


@given(ANY_HISTORY, st.data())
def test_any_subset_in_any_order_with_duplicates_then_the_rest(
    h: History[Any], data: st.DataObject
) -> None:
    """Applying any subset of the deltas (shuffled, some twice), then all the rest, gives
    the state of applying every delta once, in order."""
    bottom = type(h.replicas[0])
    once = fold(h.deltas, bottom())
    n = len(h.deltas)
    first = data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=2 * n) if n else st.just([]))
    rest = data.draw(st.permutations([i for i in range(n) if i not in set(first)]))
    state = fold((h.deltas[i] for i in first), bottom())
    state = fold((h.deltas[i] for i in rest), state)
    assert once == state
    assert once.digest() == state.digest()


@given(ANY_HISTORY)
def test_join_of_every_delta_equals_every_synced_replica(h: History[Any]) -> None:
    """Bottom joined with every delta produced anywhere equals each replica once it has
    seen everything."""
    everything = fold(h.deltas, type(h.replicas[0])())
    for replica in everyone_synced(h):
        assert everything == replica


# -- compaction -------------------------------------------------------------------------


@given(histories(AWORSet, operations_for(AWORSet), replicas=4, max_ops=40), st.randoms())
def test_contexts_compact_after_everyone_has_everything(h: History[AWORSet], rnd: Any) -> None:
    """Once replicas have exchanged everything, by state or by shuffled deltas, every
    context holds one vector entry per replica that made a dot, and no cloud."""
    issuers = {replica_name(s.replica) for s in h.steps if isinstance(s, Op) and s.name == "add"}
    deltas = list(h.deltas)
    rnd.shuffle(deltas)
    by_delta = fold(deltas, AWORSet())
    for state in [*everyone_synced(h), by_delta]:
        ctx = state.context
        assert issuers == set(ctx.vv)
        assert frozenset() == ctx.cloud
        assert 0 == state.stats().cloud
        assert len(issuers) == state.stats().replicas
