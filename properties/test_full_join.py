"""The full join's shortcuts against the join as the kernel's Rule 3 defines it.

A state that holds every dot it has seen takes the other store whole, and so does a state
whose context shares no replica with the other's (``crdts._kernel``, Rule 5); AWORSet
then merges the two element indexes with dict operations, and keeps the extra dots of
elements added concurrently in a side dict. These tests build states that take those
paths (grow-only histories, concurrent adds, replicas that never met) and states that do
not (removes, re-adds, clouds left by deltas joined out of order), join them, with light
deltas on either side, and compare the result with a join computed from the definition:
keep a dot both stores hold, or one store holds and the other context has not seen.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet, CCounter, DotContext, DWFlag, EWFlag, MVRegister, ORMap
from crdts._kernel import Causal
from crdts.testing import (
    AWORSET_ELEMENTS,
    History,
    aworset_operations,
    histories,
    operations_for,
)

# Enough elements that a replica seldom adds one it holds (a re-add drops the old dot,
# and the state no longer holds every dot it has seen), a few of several types.
MANY_ELEMENTS = st.sampled_from([f"e{i}" for i in range(12)] + [1, (2, "x"), b"z"])
ADDS_ONLY = {"add": MANY_ELEMENTS.map(lambda x: (x,))}


def by_definition(a: Causal, b: Causal) -> tuple[dict[Any, Any], DotContext]:
    """The store and context of ``a | b`` by Rule 3, from full copies of both."""
    a, b = a.copy(), b.copy()
    ea, eb, ca, cb = a._entries, b._entries, a._ctx, b._ctx
    kept = {d: p for d, p in ea.items() if d in eb or not cb.contains(d)}
    kept.update({d: p for d, p in eb.items() if d in ea or not ca.contains(d)})
    ctx = ca.copy()
    ctx.join(cb)
    return kept, ctx


def index_is_sound(s: AWORSet) -> bool:
    """The element index says what the store says: each element's dots, each dot once,
    extra dots only for present elements."""
    by_element: dict[Any, set[Any]] = {}
    for dot, element in s._entries.items():
        by_element.setdefault(element, set()).add(dot)
    listed = [s._dots(e) for e in s._index]
    return (
        s._also.keys() <= s._index.keys()
        and s.value == frozenset(by_element)
        and all(len(set(dots)) == len(dots) for dots in listed)
        and sum(map(len, listed)) == len(s._entries)
        and all(s.dots_of(e) == dots for e, dots in by_element.items())
    )


def check_join(a: AWORSet, b: AWORSet) -> AWORSet:
    """Join copies of ``a`` and ``b`` (light deltas stay light: ``copy`` keeps them) and
    check the result against the definition; return it."""
    entries, ctx = by_definition(a, b)
    joined = a.copy()
    joined.join(b.copy())
    expected = AWORSet._make(entries, ctx)
    assert joined == expected
    assert joined.to_dict() == expected.to_dict()
    assert joined.digest() == expected.digest()
    assert index_is_sound(joined)
    return joined


def check_afterwards(s: AWORSet) -> None:
    """Removing and re-adding each element of a joined state keeps its index sound."""
    for x in list(s):
        removed = s.copy()
        gone = removed.remove("z", x)
        assert x not in removed and index_is_sound(removed)
        assert gone.dots_of(x) == frozenset()
        assert {d for d in s.dots_of(x)} <= set(gone.context.dots())
        readded = s.copy()
        readded.add("z", x)
        assert len(readded.dots_of(x)) == 1 and index_is_sound(readded)


def parts_of(h: History[AWORSet]) -> list[AWORSet]:
    """The replicas, every delta (light), and full forms of a few deltas."""
    fulls = [AWORSet.from_dict(d.copy().to_dict()) for d in h.deltas[:4]]
    return [*h.replicas, *h.deltas, *fulls]


@given(
    histories(AWORSet, ADDS_ONLY, replicas=4, max_ops=40),
    st.data(),
)
def test_grow_only_states_join_as_defined(h: History[AWORSet], data: st.DataObject) -> None:
    """Replicas that add (and rarely re-add) and sync: most joins take the whole store."""
    parts = parts_of(h)
    for _ in range(4):
        a = data.draw(st.sampled_from(parts))
        b = data.draw(st.sampled_from(parts))
        check_afterwards(check_join(a, b))


@given(
    histories(AWORSet, aworset_operations(AWORSET_ELEMENTS), replicas=3, max_ops=40),
    st.data(),
)
def test_any_states_join_as_defined(h: History[AWORSet], data: st.DataObject) -> None:
    """Adds, removes, clears and syncs, deltas out of order: the shortcuts where they
    apply, the walks where they do not."""
    parts = parts_of(h)
    for _ in range(4):
        a = data.draw(st.sampled_from(parts))
        b = data.draw(st.sampled_from(parts))
        check_afterwards(check_join(a, b))


def apart(names: tuple[str, str]) -> st.SearchStrategy[list[AWORSet]]:
    """The states and deltas of two replicas ``names`` that sync only with each other."""
    step = st.tuples(
        st.sampled_from(names), st.sampled_from(["add", "add", "remove", "sync"]), MANY_ELEMENTS
    )

    def replay(steps: list[tuple[str, str, Any]]) -> list[AWORSet]:
        states = {n: AWORSet() for n in names}
        deltas: list[AWORSet] = []
        for replica, op, x in steps:
            if op == "sync":
                other = names[1] if replica == names[0] else names[0]
                states[replica].join(states[other].copy())
            else:
                deltas.append(getattr(states[replica], op)(replica, x))
        return [*states.values(), *deltas[-3:]]

    return st.lists(step, max_size=25).map(replay)


@given(apart(("p", "q")), apart(("x", "y")), st.data())
def test_states_of_replicas_that_never_met_join_as_defined(
    mine: list[AWORSet], theirs: list[AWORSet], data: st.DataObject
) -> None:
    """No replica in common: no dot of either side is seen by the other, elements both
    hold keep the dots of both, whatever each side removed."""
    a = data.draw(st.sampled_from(mine))
    b = data.draw(st.sampled_from(theirs))
    check_afterwards(check_join(a, b))
    check_afterwards(check_join(b, a))
    both = check_join(a, b)
    again = check_join(both, data.draw(st.sampled_from(theirs + mine)))
    check_afterwards(check_join(again, both))


FEW_ELEMENTS = st.sampled_from(["m", "n", "o", "p", "q", 1, (2, "x")])


def grown(replica: str, *elements: Any) -> AWORSet:
    s = AWORSet()
    for x in elements:
        s.add(replica, x)
    return s


def grown_on(state: AWORSet, replica: str, elements: list[Any]) -> AWORSet:
    """``state`` plus adds by ``replica`` of those of ``elements`` it lacks (adding one it
    holds would drop the old dot: the state would no longer hold all it has seen)."""
    s = state.copy()
    for x in elements:
        if x not in s:
            s.add(replica, x)
    return s


def exact_states() -> st.SearchStrategy[list[AWORSet]]:
    """States that hold every dot they have seen (Rule 5 on both sides of every join).

    A shared past (replicas c and d, concurrent adds of the same elements, synced), then
    two sides, each adding elements of its own (a, b), and each joining a group that
    the other side never met (e, f: two replicas adding concurrently). Few elements, so
    that the cases of the index merge all come up: an element held on both sides with
    the same dot or with different dots, with several dots on one side or both, or on
    one side only, with one dot or several."""
    lists = st.lists(FEW_ELEMENTS, max_size=5)

    def build(parts: tuple[list[Any], ...]) -> list[AWORSet]:
        c, d, a, b, e1, e2, f1, f2 = parts
        past = grown_on(AWORSet(), "c", c) | grown_on(AWORSet(), "d", d)
        e = grown_on(AWORSet(), "e1", e1) | grown_on(AWORSet(), "e2", e2)
        f = grown_on(AWORSet(), "f1", f1) | grown_on(AWORSet(), "f2", f2)
        left = grown_on(past, "a", a)
        right = grown_on(past, "b", b)
        return [left, right, left | e, right | f, past, e, f, left | f]

    return st.tuples(*[lists] * 8).map(build)


@given(exact_states())
def test_states_that_hold_all_they_have_seen_join_as_defined(states: list[AWORSet]) -> None:
    """Every pair of the states, both ways."""
    for a in states:
        for b in states:
            check_afterwards(check_join(a, b))


def test_elements_held_on_both_sides_with_one_dot_each() -> None:
    """Shared history plus each side's own adds: one dot per element, no extra dots."""
    base = grown("a", "x", "y") | grown("b", "z")
    mine, theirs = base.copy(), base.copy()
    mine.add("a", "m")
    theirs.add("b", "n")
    joined = check_join(mine, theirs)
    assert joined.value == frozenset("xyzmn") and not joined._also
    assert joined.dots_of("n") == {("b", 2)}


def test_some_elements_held_on_both_sides_with_different_dots() -> None:
    """Shared history, then both add "m" concurrently: "m" has two dots, the others one."""
    base = grown("a", "x") | grown("b", "y")
    mine, theirs = base.copy(), base.copy()
    mine.add("a", "m")
    theirs.add("b", "m")
    theirs.add("b", "n")
    joined = check_join(mine, theirs)
    assert joined.dots_of("m") == {("a", 2), ("b", 2)}
    assert joined.dots_of("x") == {("a", 1)} and joined.dots_of("n") == {("b", 3)}
    assert set(joined._also) == {"m"}
    check_afterwards(joined)


def test_replicas_that_never_met_and_added_the_same_elements() -> None:
    mine, theirs = grown("a", "m", "n", "o"), grown("b", "n", "o", "p")
    joined = check_join(mine, theirs)
    assert joined.dots_of("n") == {("a", 2), ("b", 1)}
    assert joined.dots_of("p") == {("b", 3)} and joined.dots_of("m") == {("a", 1)}
    assert set(joined._also) == {"n", "o"}
    check_afterwards(joined)


def test_elements_with_several_dots_on_either_side() -> None:
    """Extra dots on both sides: an element's dots are the union, each once."""
    ab = grown("a", "m", "n") | grown("b", "m")  # m: a and b
    cd = grown("c", "m", "o") | grown("d", "o", "m")  # m: c and d; o: c and d
    joined = check_join(ab, cd)
    assert joined.dots_of("m") == {("a", 1), ("b", 1), ("c", 1), ("d", 2)}
    assert joined.dots_of("o") == {("c", 2), ("d", 1)}
    shared = ab | grown("c", "m")  # shares a and b with ab: m's dots partly the same
    joined = check_join(shared, ab | cd)
    assert joined.dots_of("m") == {("a", 1), ("b", 1), ("c", 1), ("d", 2)}
    check_afterwards(joined)
    assert check_join(ab, ab) == ab


def test_a_state_that_holds_all_it_has_seen_joins_one_that_removed() -> None:
    """Rule 5 on one side only: what the other removed is removed here, the rest taken."""
    base = grown("a", "x", "y", "z")
    mine, theirs = base.copy(), base.copy()
    mine.add("a", "m")
    theirs.remove("b", "y")
    theirs.add("b", "n")
    joined = check_join(mine, theirs)
    assert joined.value == frozenset("xzmn")
    joined = check_join(theirs, mine)  # the other way: the walk over mine's store
    assert joined.value == frozenset("xzmn")


def test_equal_dots_that_are_different_objects() -> None:
    """A decoded copy holds equal dot tuples that are not the same objects."""
    base = grown("a", "x", "y")
    theirs = AWORSet.from_dict(base.to_dict())
    theirs.add("b", "n")
    joined = check_join(base, theirs)
    assert not joined._also and joined.value == frozenset("xyn")


def test_a_third_dot_through_the_walk_and_a_fourth_removed() -> None:
    """A state that removed something (so the join walks other's store) gets a third dot
    for an element; four dots, one removed, leave three."""
    s = grown("a", "m") | grown("b", "m")
    s.add("a", "x")
    s.remove("a", "x")
    other = grown("c", "m") | grown("a", "m")
    joined = check_join(s, other)
    assert joined.dots_of("m") == {("a", 1), ("b", 1), ("c", 1)}
    four = joined | grown("d", "m")
    assert check_join(four, grown("c", "m").remove("c", "m")).dots_of("m") == {
        ("a", 1),
        ("b", 1),
        ("d", 1),
    }
    light = grown("b", "m").remove("b", "m")
    assert check_join(four, light).dots_of("m") == {("a", 1), ("c", 1), ("d", 1)}
    check_afterwards(four)


def test_a_light_delta_joined_into_itself_and_into_a_state() -> None:
    s = grown("a", "x")
    delta = s.add("a", "m")
    assert check_join(delta, delta) == delta
    assert check_join(delta, s) == s
    assert check_join(grown("b", "m"), delta).dots_of("m") == {("a", 2), ("b", 1)}


CAUSAL_TYPES = [EWFlag, DWFlag, MVRegister, CCounter, ORMap.of(AWORSet), ORMap.of(CCounter)]


@pytest.mark.parametrize("cls", CAUSAL_TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_every_causal_type_joins_as_defined(cls: type[Causal], data: st.DataObject) -> None:
    """The kernel's Rule 5 holds for every type on it, not only for sets."""
    h = data.draw(histories(cls, operations_for(cls), replicas=3, max_ops=30))
    # Decoded replicas hold dots equal to, but not the same objects as, the others'.
    decoded = [cls.from_dict(r.to_dict()) for r in h.replicas]
    parts = [*h.replicas, *h.deltas, *decoded]
    for _ in range(4):
        a = data.draw(st.sampled_from(parts))
        b = data.draw(st.sampled_from(parts))
        entries, ctx = by_definition(a, b)
        joined = a.copy()
        joined.join(b.copy())
        expected = cls._make(entries, ctx)
        assert joined._entries == entries
        assert joined._ctx == ctx
        assert joined == expected
        assert index_of(joined) == index_of(expected)


def index_of(state: Causal) -> Any:
    """What a state's index says, nested states' too (AWORSet: each element's dots)."""
    if isinstance(state, AWORSet):
        return {x: sorted(state._dots(x)) for x in state}
    index = getattr(state, "_index", None)
    if index is None:
        return None
    return {key: (dict(sub._entries), index_of(sub)) for key, sub in index.items()}
