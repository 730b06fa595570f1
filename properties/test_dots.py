"""Dots and causal contexts, against a plain Python set of dots as the model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import DecodeError, Dot, DotContext, InvalidArgument

REPLICAS = st.sampled_from(["a", "b", "c"])
DOTS = st.tuples(REPLICAS, st.integers(1, 10))


def prefixes_and_extras(parts: tuple[dict[str, int], frozenset[tuple[str, int]]]) -> set[Dot]:
    """The dots of a vector ``{r: n}`` (1..n for each r) plus some extra dots."""
    vv, extra = parts
    dots = {Dot(r, c) for r, n in vv.items() for c in range(1, n + 1)}
    return dots | {Dot(r, c) for r, c in extra}


# Sets of dots with contiguous prefixes (so vectors are exercised) and holes (so clouds are).
DOT_SETS = st.tuples(
    st.dictionaries(REPLICAS, st.integers(0, 6)), st.frozensets(DOTS, max_size=8)
).map(prefixes_and_extras)

# Every dot a test probes: a little past what the sets hold.
PROBES = [Dot(r, c) for r in ("a", "b", "c", "d") for c in range(1, 13)]


def assert_compact(ctx: DotContext) -> None:
    """Rule 1 of the module: no zero in the vector, cloud dots beyond vv[r] + 1."""
    vv = ctx.vv
    assert all(n >= 1 for n in vv.values())
    for r, c in ctx.cloud:
        assert c > vv.get(r, 0) + 1


def assert_holds_exactly(ctx: DotContext, model: set[Dot]) -> None:
    """The context holds the dots of ``model`` and no other, and is compact."""
    assert_compact(ctx)
    assert set(ctx.dots()) == model
    assert ctx.dot_count() == len(model)
    assert ctx.replicas == {r for r, _ in model}
    for dot in PROBES:
        assert ctx.contains(dot) == (dot in model)
        assert (dot in ctx) == (dot in model)


def test_dot_is_a_named_pair_equal_to_the_plain_tuple() -> None:
    """A Dot has replica and counter fields and equals the plain (replica, counter) tuple."""
    dot = Dot("a", 3)
    assert (dot.replica, dot.counter) == ("a", 3)
    assert dot == ("a", 3)
    assert hash(dot) == hash(("a", 3))
    assert Dot("a", 2) < Dot("a", 10) < Dot("b", 1)


@given(DOT_SETS)
def test_from_dots_holds_exactly_the_given_dots(model: set[Dot]) -> None:
    """from_dots builds a compact context that contains exactly the given dots."""
    assert_holds_exactly(DotContext.from_dots(model), model)


@given(DOT_SETS)
def test_vector_and_cloud_split_the_dots(model: set[Dot]) -> None:
    """The vector is each replica's contiguous prefix; the cloud is every other dot."""
    ctx = DotContext.from_dots(model)
    expected_vv = {}
    for r in {r for r, _ in model}:
        n = 0
        while Dot(r, n + 1) in model:
            n += 1
        if n:
            expected_vv[r] = n
    assert expected_vv == ctx.vv
    assert {d for d in model if d.counter > expected_vv.get(d.replica, 0)} == ctx.cloud
    assert len(ctx.cloud) == ctx.cloud_size()


@given(DOT_SETS, REPLICAS)
def test_next_dot_is_one_past_the_highest_seen(model: set[Dot], replica: str) -> None:
    """next_dot(r) is one past r's highest seen dot, and leaves the context unchanged."""
    ctx = DotContext.from_dots(model)
    highest = max((c for r, c in model if r == replica), default=0)
    assert Dot(replica, highest + 1) == ctx.next_dot(replica)
    assert_holds_exactly(ctx, model)


@given(DOT_SETS, DOTS)
def test_add_is_set_insertion(model: set[Dot], dot: tuple[str, int]) -> None:
    """add(dot) makes the context hold the model plus that dot, still compact."""
    ctx = DotContext.from_dots(model)
    ctx.add(Dot(*dot))
    assert_holds_exactly(ctx, model | {Dot(*dot)})


@given(DOT_SETS, DOT_SETS)
def test_join_is_set_union(left: set[Dot], right: set[Dot]) -> None:
    """join is set union; the argument is left unchanged."""
    a, b = DotContext.from_dots(left), DotContext.from_dots(right)
    a.join(b)
    assert_holds_exactly(a, left | right)
    assert_holds_exactly(b, right)


@given(DOT_SETS)
def test_join_with_itself_changes_nothing(model: set[Dot]) -> None:
    """Joining a context with itself leaves it as it was."""
    ctx = DotContext.from_dots(model)
    ctx.join(ctx)
    assert_holds_exactly(ctx, model)


@given(DOT_SETS, DOT_SETS)
def test_order_is_set_inclusion(left: set[Dot], right: set[Dot]) -> None:
    """a <= b iff every dot of a is in b; == iff they hold the same dots."""
    a, b = DotContext.from_dots(left), DotContext.from_dots(right)
    assert (a <= b) == (left <= right)
    assert (a == b) == (left == right)
    assert a <= DotContext.from_dots(left | right)


@given(DOT_SETS)
def test_compact_finds_nothing_to_do(model: set[Dot]) -> None:
    """Every public operation leaves the context compact, so compact() changes nothing."""
    ctx = DotContext.from_dots(model)
    before = ctx.to_dict()
    ctx.compact()
    assert before == ctx.to_dict()


@given(st.permutations([Dot(r, c) for r in ("a", "b") for c in range(1, 7)]))
def test_seeing_every_dot_in_any_order_leaves_no_cloud(order: list[Dot]) -> None:
    """After every dot 1..n of each replica, in any order, the context is {r: n}, no cloud."""
    ctx = DotContext()
    for dot in order:
        ctx.add(dot)
    assert {"a": 6, "b": 6} == ctx.vv
    assert frozenset() == ctx.cloud


def test_compact_repairs_a_context_built_through_the_internal_shortcut() -> None:
    """compact() folds cloud dots that extend the vector (only internal builds need it)."""
    ctx = DotContext._of({"a": 2}, {"a": {1, 3, 4, 6}, "b": {1, 2}})
    ctx.compact()
    assert {"a": 4, "b": 2} == ctx.vv
    assert frozenset({Dot("a", 6)}) == ctx.cloud


@given(st.lists(DOTS, max_size=20))
def test_internal_raw_dot_constructor_matches_from_dots(dots: list[tuple[str, int]]) -> None:
    """The unchecked constructor the mutators use builds the same context as from_dots."""
    assert DotContext.from_dots(dots) == DotContext._of_raw_dots(dots)


@given(DOT_SETS)
def test_encoding_round_trips_through_json(model: set[Dot]) -> None:
    """to_dict is JSON-safe and canonical (sorted cloud); from_dict gives the context back."""
    ctx = DotContext.from_dots(model)
    data = ctx.to_dict()
    assert sorted(data["cloud"]) == data["cloud"]
    back = DotContext.from_dict(json.loads(json.dumps(data)))
    assert ctx == back
    assert data == back.to_dict()


@given(DOT_SETS)
def test_copy_is_independent(model: set[Dot]) -> None:
    """Adding to a copy leaves the original unchanged."""
    ctx = DotContext.from_dots(model)
    dup = ctx.copy()
    dup.add(Dot("d", 1))
    dup.add(Dot("a", 12))
    assert_holds_exactly(ctx, model)
    assert dup == DotContext.from_dots(model | {Dot("d", 1), Dot("a", 12)})


def test_views_are_fresh_copies() -> None:
    """Changing the vv dict returned by the property does not change the context."""
    ctx = DotContext.from_dots([("a", 1), ("a", 3)])
    vv = ctx.vv
    vv["a"] = 5  # type: ignore[index]
    assert {"a": 1} == ctx.vv
    assert frozenset({Dot("a", 3)}) == ctx.cloud


def test_repr_shows_vector_and_cloud() -> None:
    """The repr lists the vector and the cloud, sorted."""
    ctx = DotContext.from_dots([("b", 1), ("a", 3), ("a", 1)])
    assert "DotContext(vv={'a': 1, 'b': 1}, cloud=[Dot(replica='a', counter=3)])" == repr(ctx)


def test_from_dict_folds_a_redundant_cloud() -> None:
    """A cloud that repeats or extends the vector decodes to the compact context."""
    ctx = DotContext.from_dict({"vv": {"a": 2, "b": 0}, "cloud": [["a", 1], ["a", 3], ["b", 2]]})
    assert {"a": 3} == ctx.vv
    assert frozenset({Dot("b", 2)}) == ctx.cloud


def test_comparing_with_another_type_is_not_supported() -> None:
    """<= against a non-context raises TypeError; == is simply False."""
    ctx = DotContext()
    with pytest.raises(TypeError):
        assert ctx <= {}  # type: ignore[operator]
    assert ctx != {"vv": {}, "cloud": []}


def test_exhausted_replica_cannot_issue_another_dot() -> None:
    """A replica whose counter reached 2**63 - 1 gets InvalidArgument, not a bad dot."""
    ctx = DotContext.from_dict({"vv": {"a": 2**63 - 1}, "cloud": []})
    with pytest.raises(InvalidArgument):
        ctx.next_dot("a")
    assert Dot("b", 1) == ctx.next_dot("b")


@pytest.mark.parametrize(
    "dot",
    [
        ("", 1),
        (1, 1),
        (None, 1),
        ("a", 0),
        ("a", -1),
        ("a", True),
        ("a", 1.0),
        ("a", "1"),
        ("a", 2**63),
        ("a",),
        ("a", 1, 2),
        "ab",
        ["a", 1],
        None,
    ],
    ids=repr,
)
def test_add_rejects_invalid_dots_without_change(dot: object) -> None:
    """add() of an invalid dot raises InvalidArgument and leaves the context unchanged."""
    ctx = DotContext.from_dots([("a", 1), ("b", 3)])
    before = ctx.to_dict()
    with pytest.raises(InvalidArgument):
        ctx.add(dot)  # type: ignore[arg-type]
    assert before == ctx.to_dict()


@pytest.mark.parametrize("replica", ["", 1, None, b"a", ("a",)], ids=repr)
def test_next_dot_rejects_invalid_replica_ids(replica: object) -> None:
    """next_dot() of a non-string or empty replica id raises InvalidArgument."""
    with pytest.raises(InvalidArgument):
        DotContext().next_dot(replica)  # type: ignore[arg-type]


@pytest.mark.parametrize("dots", [[("a", 1), ("", 2)], [("a", 0)], [("a", False)]], ids=repr)
def test_from_dots_rejects_invalid_dots(dots: list[tuple[str, int]]) -> None:
    """from_dots() raises InvalidArgument on any invalid dot."""
    with pytest.raises(InvalidArgument):
        DotContext.from_dots(dots)


@pytest.mark.parametrize(
    "data",
    [
        [],
        None,
        {"vv": [], "cloud": []},
        {"vv": {}, "cloud": {}},
        {"vv": {"a": -1}, "cloud": []},
        {"vv": {"a": True}, "cloud": []},
        {"vv": {"a": 1.5}, "cloud": []},
        {"vv": {"a": 2**63}, "cloud": []},
        {"vv": {"": 1}, "cloud": []},
        {"vv": {}, "cloud": [["a", 1], ["a", 1]]},
        {"vv": {}, "cloud": [["a", 0]]},
        {"vv": {}, "cloud": [["a"]]},
        {"vv": {}, "cloud": [["a", 1, 2]]},
        {"vv": {}, "cloud": ["a1"]},
        {"vv": {}, "cloud": [], "extra": 1},
    ],
    ids=repr,
)
def test_from_dict_rejects_malformed_contexts(data: object) -> None:
    """from_dict() raises DecodeError on every malformed context."""
    with pytest.raises(DecodeError):
        DotContext.from_dict(data)


MAX = 2**63 - 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: DotContext().add(("a", 0)), "counter must be an int from 1 to 2**63 - 1, got 0"),
        (lambda: DotContext().add("ab"), "expected a dot (replica, counter), got 'ab'"),  # type: ignore[arg-type]
        (lambda: DotContext().add(("", 1)), "replica id must be a non-empty string, got ''"),
        (lambda: DotContext().add((7, 1)), "replica id must be a non-empty string, got int"),  # type: ignore[arg-type]
        (
            lambda: DotContext.from_dict({"vv": {"a": MAX}}).next_dot("a"),
            "replica 'a' has issued its last dot",
        ),
        (lambda: DotContext.from_dict([]), "ctx: expected an object, got list"),
        (lambda: DotContext.from_dict({"x": 1}), "ctx: unexpected keys ['x']"),
        (lambda: DotContext.from_dict({"vv": []}), "ctx.vv: expected an object, got list"),
        (lambda: DotContext.from_dict({"cloud": {}}), "ctx.cloud: expected a list, got dict"),
        (
            lambda: DotContext.from_dict({"vv": {"": 1}}),
            "ctx.vv: replica id must be a non-empty string, got ''",
        ),
        (
            lambda: DotContext.from_dict({"vv": {"a": -1}}),
            "ctx.vv['a']: expected an int from 0 to 2**63 - 1, got -1",
        ),
        (
            lambda: DotContext.from_dict({"cloud": ["a1"]}),
            "ctx.cloud[0]: expected a dot [replica, counter], got 'a1'",
        ),
        (
            lambda: DotContext.from_dict({"cloud": [["a", 0]]}),
            "ctx.cloud[0]: dot counter must be an int from 1 to 2**63 - 1, got 0",
        ),
        (
            lambda: DotContext.from_dict({"cloud": [["a", 3], ["a", 3]]}),
            "ctx.cloud[1]: duplicate dot ['a', 3]",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_errors_say_what_was_expected_and_what_arrived(call: Any, message: str) -> None:
    """Each error message names the path, what was expected and what arrived."""
    with pytest.raises((InvalidArgument, DecodeError)) as info:
        call()
    assert message == str(info.value)


def test_missing_parts_decode_as_empty() -> None:
    """A context encoding without vv or cloud decodes as if they were empty."""
    assert DotContext() == DotContext.from_dict({})
    assert {"a": 2} == DotContext.from_dict({"vv": {"a": 2}}).vv
    assert frozenset({Dot("a", 3)}) == DotContext.from_dict({"cloud": [["a", 3]]}).cloud


def test_largest_counter_is_accepted() -> None:
    """A vector entry or cloud dot of 2**63 - 1 decodes and round-trips."""
    ctx = DotContext.from_dict({"vv": {"a": MAX}, "cloud": [["b", MAX]]})
    assert Dot("b", MAX) in ctx
    assert ctx == DotContext.from_dict(ctx.to_dict())


def test_largest_counter_can_be_added() -> None:
    """add() accepts the dot counter 2**63 - 1."""
    ctx = DotContext.from_dots([("a", MAX)])
    assert frozenset({Dot("a", MAX)}) == ctx.cloud


@given(DOT_SETS)
def test_raw_dots_are_every_dot(model: set[Dot]) -> None:
    """The internal walk over every dot yields each dot of the context once."""
    raw = list(DotContext.from_dots(model)._raw_dots())
    assert len(model) == len(raw)
    assert model == set(raw)


@given(DOT_SETS, st.data())
def test_without_removes_exactly_the_holes(model: set[Dot], data: st.DataObject) -> None:
    """The context without some of its dots holds exactly the others, and is compact."""
    holes = data.draw(st.sets(st.sampled_from(sorted(model)))) if model else set()
    ctx = DotContext.from_dots(model)
    rest = ctx._without({(r, c) for r, c in holes})
    assert_holds_exactly(rest, model - holes)
    assert_holds_exactly(ctx, model)
