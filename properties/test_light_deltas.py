"""AWORSet's light deltas: the delta ``add`` and ``remove`` return holds only the dot,
the element and the dots removed, and builds its store, context and index on first use.

These tests check that a light delta is the same value as the full delta it stands for,
whatever reads it first, and that ``join`` takes the same decisions on its light path as
on the general one (``crdts.testing.check_laws`` checks the same for every type).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet, DotContext, GCounter, PNCounter
from crdts.testing import AWORSET_ELEMENTS, History, aworset_operations, histories


def is_light(s: AWORSet) -> bool:
    """Light deltas are instances of a subclass until something reads their full form."""
    return isinstance(s, AWORSet) and type(s) is not AWORSet


def full(delta: AWORSet) -> AWORSet:
    """The delta as the general form (decoded from its encoding)."""
    return AWORSet.from_dict(delta.to_dict())


def test_add_and_remove_return_light_deltas_that_copy_light() -> None:
    s = AWORSet()
    added = s.add("a", "milk")
    removed = s.remove("a", "milk")
    assert is_light(added) and is_light(removed)
    assert is_light(added.copy())
    assert added.copy() == added


@pytest.mark.parametrize(
    "read",
    [
        lambda d: d.value,
        len,
        lambda d: "milk" in d,
        lambda d: d.context,
        lambda d: d.to_dict(),
        lambda d: d.dots_of("milk"),
        lambda d: d.stats(),
        repr,
        lambda d: d <= AWORSet(),
    ],
    ids=["value", "len", "in", "context", "to_dict", "dots_of", "stats", "repr", "le"],
)
def test_any_read_sees_the_full_delta(read: Any) -> None:
    s = AWORSet()
    s.add("a", "eggs")
    s.add("a", "milk")
    light = s.add("a", "milk")  # a re-add: one new dot, one removed
    expected = full(light)
    assert read(light) == read(expected)
    assert type(light) is AWORSet  # built once, then an ordinary state
    assert light == expected
    assert light.to_dict() == expected.to_dict()


def test_a_light_delta_mutated_as_a_state_stays_consistent() -> None:
    s = AWORSet()
    delta = s.add("a", "milk")
    delta.add("b", "eggs")
    delta.remove("b", "milk")
    assert delta.value == frozenset({"eggs"})
    assert delta.context == DotContext.from_dots([("a", 1), ("b", 1)])
    assert not is_light(delta)
    # The state that made it did not change.
    assert s.value == frozenset({"milk"})


def test_light_into_light_and_into_itself() -> None:
    s = AWORSet()
    a = s.add("a", "milk")
    b = s.add("a", "eggs")
    a.join(b)
    assert a.value == frozenset({"milk", "eggs"})
    c = s.remove("a", "milk")
    before = full(c.copy())
    c.join(c)
    assert c == before


def test_unknown_attributes_still_raise_attribute_error() -> None:
    delta = AWORSet().add("a", "milk")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = delta.nope  # type: ignore[attr-defined]
    assert is_light(delta)


@given(
    histories(AWORSet, aworset_operations(AWORSET_ELEMENTS), replicas=3, max_ops=30),
    st.integers(0, 2),
    st.randoms(use_true_random=False),
)
def test_light_and_full_deltas_join_alike_in_any_order(
    h: History[AWORSet], target: int, rnd: Any
) -> None:
    """Every delta, joined light or full, into any replica, in any order and repeated:
    the states stay equal after every step."""
    deltas = list(h.deltas) + rnd.sample(h.deltas, len(h.deltas) // 2)
    rnd.shuffle(deltas)
    light_side, full_side = h.replicas[target].copy(), h.replicas[target].copy()
    fulls = [full(d.copy()) for d in deltas]
    for d, f in zip(deltas, fulls, strict=True):
        light_side.join(d.copy())
        full_side.join(f)
        assert light_side == full_side
        assert light_side.value == full_side.value
        assert light_side.to_dict() == full_side.to_dict()


def test_a_light_delta_shows_the_full_type_and_compares_both_ways() -> None:
    s = AWORSet()
    light = s.add("a", "milk")
    other = AWORSet()
    other.add("a", "milk")
    assert type(light).__name__ == "AWORSet"
    assert light == other and other == light.copy()
    assert other <= light.copy() and light.copy() <= other
    assert light.copy() >= other and not other < light.copy()
    assert (other | light.copy()) == other
    assert (light.copy() | other) == other
    assert copy.deepcopy(light) == other
    with pytest.raises(TypeError, match="cannot join AWORSet with GCounter"):
        light.copy().join(GCounter())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot join GCounter with AWORSet"):
        GCounter().join(light.copy())  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [GCounter, PNCounter])
def test_counter_deltas_are_light_and_the_same_value(cls: type[Any]) -> None:
    c = cls()
    c.increment("a", 3)
    delta = c.increment("a", 2)
    assert type(delta) is not cls and isinstance(delta, cls)
    assert type(delta.copy()) is type(delta)
    expected = cls.from_dict(delta.to_dict())
    assert type(delta) is cls  # to_dict read the full form
    assert delta == expected and delta.value == 5
    state = cls()
    state.join(c.increment("b", 1))
    state.join(c.increment("a", 1))
    assert state == cls.from_dict(
        {
            "type": cls.type_name,
            "v": 1,
            **(
                {"counts": {"a": 6, "b": 1}}
                if cls is GCounter
                else {"p": {"a": 6, "b": 1}, "n": {}}
            ),
        }
    )


def test_pn_counter_decrement_delta_is_light_and_joins_its_tally() -> None:
    c = PNCounter()
    c.decrement("a", 4)
    state = PNCounter()
    state.join(c.decrement("a", 1))
    assert state.decrements == {"a": 5} and state.increments == {}
    state.join(c.increment("a", 2))
    assert state.value == -3


@pytest.mark.parametrize("base", [GCounter, PNCounter])
def test_a_subclass_of_a_counter_gets_light_deltas_of_its_own_type(base: type[Any]) -> None:
    class Tally(base):  # type: ignore[valid-type,misc]
        """A user subclass: its deltas must be of its own type."""

    c = Tally()
    delta = c.increment("a", 2)
    assert isinstance(delta, Tally) and type(delta) is not Tally
    assert type(delta).__name__ == "Tally"
    copied = delta.copy()
    assert type(copied) is type(delta)  # a copy stays light
    state = Tally()
    state.join(delta)
    assert state.value == 2 and state == delta and type(delta) is Tally
    assert copied.to_dict() == state.to_dict() and type(copied) is Tally
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = c.increment("a", 1).nope
    if base is PNCounter:
        down = c.decrement("b", 3)
        assert type(down) is not Tally
        assert down.decrements == {"b": 3} and down.increments == {}


@pytest.mark.parametrize("cls", [AWORSet, GCounter, PNCounter])
def test_operators_between_two_light_deltas(cls: type[Any]) -> None:
    s = cls()
    mutate = s.add if cls is AWORSet else (lambda r, x: s.increment(r))
    d1, d2 = mutate("a", "x"), mutate("a", "y")
    e1, e2 = (cls.from_dict(d.copy().to_dict()) for d in (d1, d2))
    assert (d1.copy() | d2.copy()) == (e1 | e2)
    assert (d1.copy() == d2.copy()) == (e1 == e2)
    assert (d1.copy() <= d2.copy()) == (e1 <= e2)
    assert (d1.copy() >= d2.copy()) == (e1 >= e2)
    assert (d1.copy() < d2.copy()) == (e1 < e2)
    assert (d1.copy() > d2.copy()) == (e1 > e2)
    joined = d1.copy()
    joined.join(d2.copy())
    assert joined == e1 | e2


def index_agrees_with_store(s: AWORSet) -> bool:
    """The element index (values, membership, dots_of) says what the dot store says."""
    by_element: dict[Any, set[Any]] = {}
    for dot, element in s._entries.items():
        by_element.setdefault(element, set()).add(dot)
    return s.value == frozenset(by_element) and all(
        s.dots_of(e) == dots for e, dots in by_element.items()
    )


def test_a_join_brings_an_element_with_two_dots_into_a_state_without_it() -> None:
    a, b = AWORSet(), AWORSet()
    a.add("a", "milk")
    b.add("b", "milk")
    both = a | b  # milk has two dots
    target = AWORSet()
    target.add("c", "eggs")
    target.join(both)
    assert target.dots_of("milk") == {("a", 1), ("b", 1)}
    assert index_agrees_with_store(target)
    target.remove("c", "milk")
    assert "milk" not in target and index_agrees_with_store(target)


@given(
    histories(AWORSet, aworset_operations(AWORSET_ELEMENTS), replicas=4, max_ops=40),
    st.randoms(use_true_random=False),
)
def test_the_index_agrees_with_the_store_after_any_joins(h: History[AWORSet], rnd: Any) -> None:
    """Full states and deltas joined in any order: every replica's element index matches
    its dot store at every step (equality and digests read only the store)."""
    states = [r.copy() for r in h.replicas]
    parts = states + list(h.deltas)
    for _ in range(3 * len(states)):
        target = rnd.choice(states)
        target.join(rnd.choice(parts).copy())
        assert index_agrees_with_store(target)


def test_a_light_remove_joined_where_the_element_has_more_dots_keeps_the_others() -> None:
    """The remover saw one of the element's dots: joining its light delta drops exactly
    that dot, and the index keeps the others (two, then one)."""
    a, b, c = AWORSet(), AWORSet(), AWORSet()
    a.add("a", "milk")
    b.add("b", "milk")
    c.add("c", "milk")
    state = a | b | c  # three dots
    state.join(a.remove("a", "milk"))
    assert state.dots_of("milk") == {("b", 1), ("c", 1)}
    assert index_agrees_with_store(state)
    state.join(b.remove("b", "milk"))
    assert state.dots_of("milk") == {("c", 1)}
    assert index_agrees_with_store(state)
    full_state = a | b | c
    full_state.join(AWORSet.from_dict(a.remove("a", "milk").to_dict()))
    assert index_agrees_with_store(full_state) and "milk" in full_state
