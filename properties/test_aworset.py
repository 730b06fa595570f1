"""AWORSet: add-wins semantics, deltas, elements, encoding and invalid arguments.

Includes the two bugs of the design this set replaces: concurrent adds of one element by
two replicas shared a dot, and merges gave different states in different orders.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet, Dot, DotContext, InvalidArgument, InvalidElement, ReadOnlyError
from crdts.testing import History, aworsets, histories, operations_for


def synced(*states: AWORSet) -> AWORSet:
    """The join of ``states``."""
    result = AWORSet()
    for s in states:
        result.join(s)
    return result


def test_concurrent_adds_of_one_element_get_distinct_dots() -> None:
    """Two replicas adding the same element concurrently create two different dots."""
    a, b = AWORSet(), AWORSet()
    da = a.add("a", "milk")
    db = b.add("b", "milk")
    assert a.dots_of("milk").isdisjoint(b.dots_of("milk"))
    merged = synced(da, db)
    assert {("a", 1), ("b", 1)} == merged.dots_of("milk")
    # A remove that observed only a's add leaves b's add standing.
    a.remove("a", "milk")
    assert "milk" in (a | b)


def test_adds_after_a_merge_do_not_reuse_a_seen_dot() -> None:
    """A replica's next dot is past every dot of its own it has seen, also after a merge."""
    a, b = AWORSet(), AWORSet()
    a.add("a", "x")
    a.add("a", "y")
    b.join(a)
    copy_of_a = AWORSet.from_dict(a.to_dict())
    d = copy_of_a.add("a", "z")
    assert {("a", 3)} == d.dots_of("z")
    assert {("a", 3)} == b.copy().add("a", "w").dots_of("w")


@given(histories(AWORSet, operations_for(AWORSet), replicas=3, max_ops=30))
def test_every_add_creates_a_fresh_dot(h: History[AWORSet]) -> None:
    """No two adds in any history share a dot, across replicas and syncs."""
    seen: set[tuple[str, int]] = set()
    for delta in h.deltas:
        new = {d for e in delta for d in delta.dots_of(e)}
        assert seen.isdisjoint(new)
        seen |= new


@given(histories(AWORSet, operations_for(AWORSet), replicas=4, max_ops=30), st.randoms())
def test_merging_in_any_order_gives_the_same_state(h: History[AWORSet], rnd: Any) -> None:
    """Joining the replicas' states in any order and grouping gives one state."""
    states = list(h.replicas)
    expected = synced(*states)
    rnd.shuffle(states)
    left = synced(*states)
    states.reverse()
    right = AWORSet()
    for s in states:
        right = s | right
    assert expected == left == right
    assert expected.digest() == left.digest() == right.digest()


def test_add_wins_over_a_concurrent_remove() -> None:
    """An add concurrent with a remove of the same element survives the merge."""
    a, b = AWORSet(), AWORSet()
    b.join(a.add("a", "milk"))
    d_remove = a.remove("a", "milk")
    d_add = b.add("b", "milk")
    a.join(d_add)
    b.join(d_remove)
    assert a == b
    assert frozenset({"milk"}) == a.value
    assert {("b", 1)} == a.dots_of("milk")


def test_remove_deletes_only_what_it_observed() -> None:
    """A remove keeps adds it has not seen and deletes those it has, wherever they arrive."""
    a, b, c = AWORSet(), AWORSet(), AWORSet()
    d1 = a.add("a", "x")
    b.join(d1)
    d2 = c.add("c", "x")  # not seen by b
    removal = b.remove("b", "x")
    assert frozenset({Dot("a", 1)}) == frozenset(removal.context.dots())
    everyone = synced(d1, d2, removal)
    assert frozenset({"x"}) == everyone.value
    assert {("c", 1)} == everyone.dots_of("x")


def test_readding_replaces_the_element_dot() -> None:
    """Adding a present element again keeps one dot, the new one; the delta covers both."""
    s = AWORSet()
    s.add("a", "x")
    d = s.add("a", "x")
    assert {("a", 2)} == s.dots_of("x")
    assert frozenset({Dot("a", 1), Dot("a", 2)}) == frozenset(d.context.dots())
    assert frozenset({"x"}) == d.value


def test_removing_an_absent_element_returns_bottom() -> None:
    """Removing an element that is not there changes nothing and returns the bottom delta."""
    s = AWORSet()
    s.add("a", "x")
    before = s.to_dict()
    d = s.remove("a", "y")
    assert AWORSet() == d
    assert before == s.to_dict()


def test_remove_delta_carries_the_removed_dots_only() -> None:
    """A remove delta holds no entries and a context of exactly the removed dots."""
    s = AWORSet()
    s.add("a", "x")
    s.join(AWORSet().add("b", "x"))
    s.add("a", "y")
    d = s.remove("a", "x")
    assert frozenset() == d.value
    assert frozenset({Dot("a", 1), Dot("b", 1)}) == frozenset(d.context.dots())
    assert frozenset({"y"}) == s.value


def test_clear_removes_every_observed_element() -> None:
    """clear() removes everything this replica has seen, not concurrent adds."""
    a, b = AWORSet(), AWORSet()
    for e in ("x", "y", "z"):
        b.join(a.add("a", e))
    d_clear = b.clear("b")
    d_add = a.add("a", "w")
    assert frozenset() == b.value
    assert frozenset({"w"}) == synced(a, b, d_clear, d_add).value
    assert AWORSet().clear("b") == AWORSet()


def test_container_protocol() -> None:
    """len, in, iter, bool and value agree with the elements held."""
    s = AWORSet()
    assert not s
    assert 0 == len(s)
    for e in ("x", 1, b"z", None, (1, ("a", b""))):
        s.add("r", e)
    assert 5 == len(s)
    assert s
    assert (1, ("a", b"")) in s
    assert "q" not in s
    assert s.value == frozenset(s)
    assert frozenset() == s.dots_of("q")


def test_true_and_one_are_one_element() -> None:
    """As in a Python set, True and 1 are the same element, and 1 survives encoding."""
    s = AWORSet()
    s.add("r", True)
    s.add("r", 1)
    assert 1 == len(s)
    back = AWORSet.from_dict(json.loads(s.to_json()))
    assert back == s
    assert frozenset({1}) == back.value


def test_iterating_while_mutating_is_safe() -> None:
    """Iteration walks a snapshot, so removing elements during it is allowed."""
    s = AWORSet()
    for e in range(5):
        s.add("r", e)
    for e in s:
        s.remove("r", e)
    assert frozenset() == s.value


def test_context_property_is_a_read_only_view() -> None:
    """The returned context refuses changes (the set is untouched), follows the set, and
    its copy() is an independent DotContext."""
    s = AWORSet()
    s.add("r", "x")
    ctx = s.context
    with pytest.raises(ReadOnlyError):
        ctx.add(Dot("r", 2))
    mine = ctx.copy()
    mine.add(Dot("r", 5))
    s.add("r", "y")
    assert (frozenset({Dot("r", 1), Dot("r", 2)}), DotContext) == (
        frozenset(ctx.dots()),
        type(mine),
    )
    assert frozenset({Dot("r", 1), Dot("r", 5)}) == frozenset(mine.dots())


def test_repr_lists_elements_sorted() -> None:
    """The repr shows the elements' reprs, sorted."""
    s = AWORSet()
    s.add("r", "b")
    s.add("r", "a")
    assert "AWORSet({'a', 'b'})" == repr(s)


@given(aworsets(st.sampled_from(["a", "b", (1, b"x"), None, -5])))
def test_encoding_round_trips_with_every_element_type(s: AWORSet) -> None:
    """Strings, ints, None, bytes and tuples survive JSON; stats describe the state."""
    back = AWORSet.from_dict(json.loads(s.to_json()))
    assert s == back
    assert s.value == back.value
    stats = s.stats()
    assert len(s.context.replicas) == stats.replicas
    assert s.context.cloud_size() == stats.cloud
    assert len(s.to_json()) == stats.encoded_bytes
    assert sum(len(s.dots_of(e)) for e in s) == stats.entries


BAD_ELEMENTS: list[tuple[Any, type[Exception]]] = [
    ([1], InvalidElement),
    ({"a": 1}, InvalidElement),
    ({1}, InvalidElement),
    (1.5, InvalidElement),
    (object(), InvalidElement),
    ((1, [2]), InvalidElement),
    (("a", 1.0), InvalidElement),
    (bytearray(b"x"), InvalidElement),
    (2**63, InvalidArgument),
    (-(2**63) - 1, InvalidArgument),
    ((1, (2**70,)), InvalidArgument),
]


def nested_tuple(depth: int) -> Any:
    """A tuple nested ``depth`` levels deep."""
    value: Any = ()
    for _ in range(depth):
        value = (value,)
    return value


@pytest.mark.parametrize(
    ("element", "error"),
    [*BAD_ELEMENTS, (nested_tuple(32), InvalidElement)],
    ids=lambda v: type(v).__name__,
)
def test_bad_element_raises_before_any_change(element: Any, error: type[Exception]) -> None:
    """add/remove of an element the encoding cannot carry raises and changes nothing."""
    s = AWORSet()
    s.add("r", "x")
    before = s.to_dict()
    with pytest.raises(error):
        s.add("r", element)
    with pytest.raises(error):
        s.remove("r", element)
    assert before == s.to_dict()


def test_nesting_up_to_the_limit_is_allowed() -> None:
    """32 tuples nested in each other make an element; the encoding carries it."""
    s = AWORSet()
    s.add("r", nested_tuple(31))
    assert AWORSet.from_dict(json.loads(s.to_json())) == s


@pytest.mark.parametrize("replica", ["", 1, None, b"r"], ids=repr)
def test_bad_replica_raises_before_any_change(replica: Any) -> None:
    """add/remove/clear with an empty or non-string replica id raise InvalidArgument."""
    s = AWORSet()
    s.add("r", "x")
    before = s.to_dict()
    with pytest.raises(InvalidArgument):
        s.add(replica, "y")
    with pytest.raises(InvalidArgument):
        s.remove(replica, "x")
    with pytest.raises(InvalidArgument):
        s.clear(replica)
    assert before == s.to_dict()


def test_joining_another_type_is_a_type_error() -> None:
    """Joining a set with a non-set raises TypeError and changes nothing."""
    s = AWORSet()
    s.add("r", "x")
    with pytest.raises(TypeError):
        s.join(DotContext())  # type: ignore[arg-type]
    assert frozenset({"x"}) == s.value


MAX = 2**63 - 1


def test_a_replica_with_its_own_dots_in_the_cloud_issues_past_them() -> None:
    """If a replica's own later dots reached it before earlier ones, its next dot is past
    the highest, and the context stays compact."""
    s = AWORSet.from_dict(
        {"type": "AWORSet", "v": 1, "ctx": {"vv": {"a": 1}, "cloud": [["a", 3]]}, "entries": []}
    )
    assert {("a", 4)} == s.add("a", "x").dots_of("x")
    assert {("a", 5)} == s.add("a", "y").dots_of("y")
    ctx = s.context
    assert {"a": 1} == ctx.vv
    assert frozenset({Dot("a", 3), Dot("a", 4), Dot("a", 5)}) == ctx.cloud


def test_an_exhausted_replica_cannot_add() -> None:
    """A replica whose counter reached 2**63 - 1 gets InvalidArgument; nothing changes."""
    s = AWORSet.from_dict(
        {"type": "AWORSet", "v": 1, "ctx": {"vv": {"a": MAX}, "cloud": []}, "entries": []}
    )
    before = s.to_dict()
    with pytest.raises(InvalidArgument, match="has issued its last dot"):
        s.add("a", "x")
    assert before == s.to_dict()
    assert {("b", 1)} == s.add("b", "x").dots_of("x")


def test_bool_elements_encode_as_ints() -> None:
    """True is stored as given but encodes as 1 (the same element)."""
    s = AWORSet()
    s.add("r", True)
    s.add("r", (False, b"z"))
    assert [["r", 1, 1], ["r", 2, [0, {"b64": "eg=="}]]] == s.to_dict()["entries"]


def test_decoded_set_supports_every_mutator() -> None:
    """After decoding, elements (one dot or several) can be removed and re-added."""
    a, b, c = AWORSet(), AWORSet(), AWORSet()
    for replica, state in (("a", a), ("b", b), ("c", c)):
        state.add(replica, "x")
    a.add("a", "y")
    s = AWORSet.from_dict(synced(a, b, c).to_dict())
    assert {("a", 1), ("b", 1), ("c", 1)} == s.dots_of("x")
    assert {("a", 2)} == s.dots_of("y")
    d = s.remove("d", "x")
    assert frozenset({Dot("a", 1), Dot("b", 1), Dot("c", 1)}) == frozenset(d.context.dots())
    assert frozenset({"y"}) == s.value
    s.remove("d", "y")
    assert not s


def test_three_concurrent_adds_all_support_the_element() -> None:
    """Joining three concurrent adds of one element keeps all three dots."""
    states = [AWORSet() for _ in range(3)]
    for i, state in enumerate(states):
        state.add(f"r{i}", "x")
    merged = AWORSet()
    for state in states:
        merged.join(state)
    assert {("r0", 1), ("r1", 1), ("r2", 1)} == merged.dots_of("x")


def test_integer_elements_at_the_limits_are_allowed() -> None:
    """The smallest and largest 64-bit integers are elements and survive encoding."""
    s = AWORSet()
    s.add("r", MAX)
    s.add("r", -(2**63))
    s.add("r", (MAX, -(2**63)))
    assert AWORSet.from_dict(json.loads(s.to_json())) == s


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.add("", "x"), "replica id must be a non-empty string, got ''"),
        (lambda s: s.remove("", "x"), "replica id must be a non-empty string, got ''"),
        (
            lambda s: s.add("r", [1]),
            "element must be str, int, bool, bytes, None or a tuple of these, got list",
        ),
        (
            lambda s: s.remove("r", (1, [2])),
            "element must be str, int, bool, bytes, None or a tuple of these, got list",
        ),
        (
            lambda s: s.add("r", 2**63),
            "element 9223372036854775808 is outside the signed 64-bit range",
        ),
        (
            lambda s: s.add("r", ("a", 2**200)),
            "element <int of 201 bits> is outside the signed 64-bit range",
        ),
        (lambda s: s.add("r", nested_tuple(32)), "element nests tuples deeper than 32"),
        (lambda s: s.join(DotContext()), "cannot join AWORSet with DotContext"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_errors_say_what_was_expected_and_what_arrived(call: Any, message: str) -> None:
    """Each argument error names what was expected and what arrived."""
    with pytest.raises((TypeError, ValueError)) as info:
        call(AWORSet())
    assert message == str(info.value)


def test_canonical_form_is_fixed() -> None:
    """The canonical bytes are pinned: digests must agree across versions and replicas."""
    from crdts._codec import canonical_json, describe, element_sort_key

    s = AWORSet()
    s.add("r", "é")
    s.add("r", (1, b"z"))
    assert (
        b'{"ctx":{"cloud":[],"vv":{"r":2}},"entries":[["r",1,"\\u00e9"],'
        b'["r",2,[1,{"b64":"eg=="}]]],"type":"AWORSet","v":1}'
    ) == s.to_json()
    assert '[1,{"b64":"eg=="}]' == element_sort_key([1, {"b64": "eg=="}])
    assert '{"a":2,"b":1}' == element_sort_key({"b": 1, "a": 2})
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    assert "<int of 129 bits>" == describe(2**128)
    assert str(2**127) == describe(2**127)
    assert "[[[[...]]]]" == describe([[[[[[1]]]]]])


def test_element_errors_name_what_was_checked() -> None:
    """Callers name what they check (a map key, a register value), also inside tuples."""
    from crdts._codec import check_element

    with pytest.raises(InvalidArgument) as info:
        check_element((1, 2**63), "map key")
    assert "map key 9223372036854775808 is outside the signed 64-bit range" == str(info.value)
    with pytest.raises(InvalidElement) as element_info:
        check_element((1, 1.5), "register value")
    assert str(element_info.value).startswith("register value must be str, int")
