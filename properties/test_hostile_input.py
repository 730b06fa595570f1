"""Hostile input: every ``from_dict`` raises DecodeError (a ValueError) on malformed data,
never another exception, and whatever it accepts is a healthy state that later joins,
comparisons and encodings handle."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import crdts
from crdts import AWORSet, Crdt, DecodeError, DotContext, GCounter, PNCounter
from crdts.testing import histories, operations_for


def crdt_types() -> list[type[Crdt]]:
    """Every concrete CRDT type the package exports."""
    found = []
    for name in crdts.__all__:
        obj = getattr(crdts, name)
        if isinstance(obj, type) and issubclass(obj, Crdt) and "type_name" in vars(obj):
            found.append(obj)
    return found


def has_operations(cls: type[Crdt]) -> bool:
    """Whether crdts.testing can generate states of ``cls``."""
    try:
        operations_for(cls)
    except KeyError:
        return False
    return True


TYPES = crdt_types()
GENERATED_TYPES = [cls for cls in TYPES if has_operations(cls)]


def deep_list(depth: int) -> Any:
    """A list nested ``depth`` levels deep."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def deep_dict(depth: int) -> Any:
    """A dict nested ``depth`` levels deep."""
    value: Any = {}
    for _ in range(depth):
        value = {"a": value}
    return value


JUNK: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(2**63) - 1,
    10**5000,
    1.5,
    math.nan,
    math.inf,
    "",
    "x",
    [],
    {},
    [1, 2, 3],
    ["a", 1],
    ["a", True],
    ["", 1],
    {"b64": "!!"},
    {"b64": "YQ"},
    {"b64": 5},
    deep_list(3000),
    deep_dict(3000),
    b"bytes",
    (1, 2),
    {1, 2},
    object(),
]
JUNK_VALUES = st.sampled_from(JUNK)

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=15,
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (tuple of keys and indices) to a value inside ``doc``, ``()`` included."""
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += paths(value, (*prefix, i))
    return found


def get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


MUTATIONS = ["replace", "delete", "duplicate", "extra_key", "wrap", "bool_for_int", "negate"]


def mutate(doc: Any, path: tuple[Any, ...], how: str, junk: Any) -> Any:
    """A deep copy of ``doc`` with the value at ``path`` mutated ``how``."""
    doc = copy.deepcopy(doc)
    if not path:
        return junk if how == "replace" else [doc]
    parent, key = get(doc, path[:-1]), path[-1]
    value = parent[key]
    if how == "replace":
        parent[key] = junk
    elif how == "delete":
        del parent[key]
    elif how == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(value))
    elif how in {"duplicate", "extra_key"}:
        target = value if isinstance(value, dict) else parent
        if isinstance(target, dict):
            target["zz-extra"] = junk
        else:
            target.append(junk)
    elif how == "wrap":
        parent[key] = [value]
    elif how == "bool_for_int":
        parent[key] = bool(value) if type(value) is int else True
    elif how == "negate":
        parent[key] = -value if type(value) is int else -1
    return doc


def assert_healthy(cls: type[Crdt], state: Crdt, others: list[Crdt]) -> None:
    """A decoded state encodes, round-trips and joins lawfully with ``others`` (states
    consistent with it: its own descendants)."""
    data = state.to_dict()
    json.dumps(data, allow_nan=False)
    back = cls.from_dict(data)
    assert back == state
    assert back.digest() == state.digest()
    assert state | state == state
    for other in others:
        joined = state | other
        assert joined == other | state
        assert state <= joined
        assert other <= joined
        assert joined | other == joined
        assert cls.from_dict(joined.to_dict()) == joined


def decode(cls: type[Crdt], data: Any) -> Crdt | None:
    """``cls.from_dict(data)``, or None if it raised DecodeError; any other exception
    fails the test."""
    try:
        return cls.from_dict(data)
    except DecodeError as exc:
        assert str(exc)
        return None


def valid_states(cls: type[Crdt]) -> st.SearchStrategy[list[Crdt]]:
    """Two replicas of one generated history of ``cls``."""
    return histories(cls, operations_for(cls), replicas=2, max_ops=12).map(
        lambda h: list(h.replicas)
    )


def descendants(cls: type[Crdt], state: Crdt, data: st.DataObject) -> list[Crdt]:
    """Two concurrent branches grown from ``state`` by generated operations of replicas
    r0 and r1 (the ids the encoding was made with), and their delta-free join.

    A decoded state can only be checked against states consistent with it: a valid
    state from elsewhere may hold one of its dots with another payload, which no decoder
    can see in isolation (dots are unique only across honest replicas).
    """
    ops = operations_for(cls)
    branches = []
    for replica in ("r0", "r1"):
        branch = state.copy()
        for _ in range(data.draw(st.integers(0, 3))):
            name = data.draw(st.sampled_from(sorted(ops)))
            getattr(branch, name)(replica, *data.draw(ops[name]))
        branches.append(branch)
    return [*branches, branches[0] | branches[1]]


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_junk_is_rejected_or_decodes_to_a_healthy_state(
    cls: type[Crdt], data: st.DataObject
) -> None:
    """Arbitrary JSON-like values, with or without the right header, give DecodeError or a
    healthy state."""
    header = st.fixed_dictionaries({"type": st.just(cls.type_name), "v": st.just(1)})
    doc = data.draw(
        JSONISH
        | JUNK_VALUES
        | st.tuples(header, st.dictionaries(st.text(max_size=8), JSONISH, max_size=4)).map(
            lambda hd: {**hd[1], **hd[0]}
        )
    )
    state = decode(cls, doc)
    if state is not None:
        assert_healthy(cls, state, [])


@pytest.mark.parametrize("cls", GENERATED_TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_mutated_encodings_are_rejected_or_healthy(cls: type[Crdt], data: st.DataObject) -> None:
    """A valid encoding with one value replaced, deleted, duplicated, wrapped, negated or
    turned into a bool gives DecodeError or a state that still joins lawfully."""
    states = data.draw(valid_states(cls))
    doc = json.loads(json.dumps(states[0].to_dict()))
    path = data.draw(st.sampled_from(paths(doc)))
    how = data.draw(st.sampled_from(MUTATIONS))
    junk = data.draw(JUNK_VALUES | JSONISH)
    state = decode(cls, mutate(doc, path, how, junk))
    if state is not None:
        assert_healthy(cls, state, descendants(cls, state, data))


@given(data=st.data())
def test_mutated_contexts_are_rejected_or_compact(data: st.DataObject) -> None:
    """DotContext.from_dict rejects a mutated context or returns a compact one."""
    dots = data.draw(st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 6)), max_size=8))
    doc = DotContext.from_dots(dots).to_dict()
    path = data.draw(st.sampled_from(paths(doc)))
    mutated = mutate(doc, path, data.draw(st.sampled_from(MUTATIONS)), data.draw(JUNK_VALUES))
    try:
        ctx = DotContext.from_dict(mutated)
    except DecodeError:
        return
    assert ctx == DotContext.from_dots(ctx.dots())
    assert DotContext.from_dict(ctx.to_dict()) == ctx


def with_entries(entries: list[Any], vv: Any = None, cloud: Any = None) -> dict[str, Any]:
    """An AWORSet encoding with the given entries and context."""
    ctx = {"vv": {"a": 2} if vv is None else vv, "cloud": [] if cloud is None else cloud}
    return {"type": "AWORSet", "v": 1, "ctx": ctx, "entries": entries}


def gcounter(counts: Any) -> dict[str, Any]:
    """A GCounter encoding with the given tallies."""
    return {"type": "GCounter", "v": 1, "counts": counts}


CASES: list[tuple[str, type[Crdt], Any]] = [
    # wrong type tag or version
    ("tag of another type", GCounter, {"type": "PNCounter", "v": 1, "counts": {}}),
    ("set decoded as counter", GCounter, with_entries([])),
    ("no type tag", GCounter, {"v": 1, "counts": {}}),
    ("unknown version", PNCounter, {"type": "PNCounter", "v": 2, "p": {}, "n": {}}),
    ("version as string", PNCounter, {"type": "PNCounter", "v": "1", "p": {}, "n": {}}),
    ("version as bool", PNCounter, {"type": "PNCounter", "v": True, "p": {}, "n": {}}),
    # negative counters
    ("negative tally", GCounter, gcounter({"a": -1})),
    ("negative decrement tally", PNCounter, {"type": "PNCounter", "v": 1, "p": {}, "n": {"a": -3}}),
    ("negative vector entry", AWORSet, with_entries([], vv={"a": -1})),
    ("negative cloud counter", AWORSet, with_entries([], cloud=[["b", -2]])),
    ("zero dot counter", AWORSet, with_entries([["a", 0, "x"]])),
    # dots outside the context, duplicate dots
    ("entry outside context", AWORSet, with_entries([["b", 1, "x"]])),
    ("entry past the vector", AWORSet, with_entries([["a", 3, "x"]])),
    ("duplicate entry dot", AWORSet, with_entries([["a", 1, "x"], ["a", 1, "y"]])),
    ("duplicate cloud dot", AWORSet, with_entries([], cloud=[["b", 4], ["b", 4]])),
    # wrong shapes
    ("not an object", GCounter, ["GCounter", 1, {}]),
    ("string", AWORSet, "AWORSet"),
    ("missing key", AWORSet, {"type": "AWORSet", "v": 1, "ctx": {"vv": {}, "cloud": []}}),
    ("extra key", GCounter, {**gcounter({}), "p": {}}),
    ("tallies as list", GCounter, gcounter([["a", 1]])),
    ("entries as object", AWORSet, with_entries({"a": 1})),  # type: ignore[arg-type]
    ("short entry", AWORSet, with_entries([["a", 1]])),
    ("long entry", AWORSet, with_entries([["a", 1, "x", "y"]])),
    ("entry as object", AWORSet, with_entries([{"r": "a", "c": 1, "e": "x"}])),
    ("context as list", AWORSet, {"type": "AWORSet", "v": 1, "ctx": [], "entries": []}),
    ("dot as string", AWORSet, with_entries([], cloud=["b4"])),
    ("element as float", AWORSet, with_entries([["a", 1, 1.5]])),
    ("element as object", AWORSet, with_entries([["a", 1, {"x": 1}]])),
    ("bad base64", AWORSet, with_entries([["a", 1, {"b64": "!!"}]])),
    ("non-canonical base64", AWORSet, with_entries([["a", 1, {"b64": "YR=="}]])),
    ("empty replica id", GCounter, gcounter({"": 1})),
    ("non-string replica id", GCounter, gcounter({1: 1})),
    ("empty replica in dot", AWORSet, with_entries([["", 1, "x"]])),
    # deep nesting
    ("deeply nested element", AWORSet, with_entries([["a", 1, deep_list(5000)]])),
    ("element nested past the limit", AWORSet, with_entries([["a", 1, deep_list(32)]])),
    ("deeply nested tag", GCounter, {"type": deep_list(5000), "v": 1, "counts": {}}),
    ("deeply nested tally", GCounter, gcounter({"a": deep_dict(5000)})),
    ("deeply nested entries", AWORSet, with_entries(deep_list(5000))),
    # huge ints
    ("huge tally", GCounter, gcounter({"a": 2**64})),
    ("enormous tally", GCounter, gcounter({"a": 10**5000})),
    ("huge vector entry", AWORSet, with_entries([], vv={"a": 10**30})),
    ("huge dot counter", AWORSet, with_entries([], cloud=[["b", 2**63]])),
    ("huge element", AWORSet, with_entries([["a", 1, 10**5000]])),
    ("huge version", GCounter, {"type": "GCounter", "v": 10**5000, "counts": {}}),
    # bools where ints belong
    ("bool tally", GCounter, gcounter({"a": True})),
    ("bool vector entry", AWORSet, with_entries([], vv={"a": True})),
    ("bool dot counter", AWORSet, with_entries([["a", True, "x"]])),
    ("bool element", AWORSet, with_entries([["a", 1, True]])),
]


@pytest.mark.parametrize(("cls", "data"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_kind_of_malformed_encoding_raises_decode_error(cls: type[Crdt], data: Any) -> None:
    """Each listed malformation raises DecodeError with a short message naming the type."""
    with pytest.raises(DecodeError) as info:
        cls.from_dict(data)
    assert cls.type_name in str(info.value)
    assert len(str(info.value)) < 400


def test_all_listed_cases_start_from_a_valid_encoding() -> None:
    """The baselines the cases are built from do decode (so each case tests one fault)."""
    decoders: list[Callable[[], Crdt]] = [
        lambda: AWORSet.from_dict(with_entries([["a", 1, "x"], ["a", 2, {"b64": "YQ=="}]])),
        lambda: GCounter.from_dict(gcounter({"a": 1})),
        lambda: PNCounter.from_dict({"type": "PNCounter", "v": 1, "p": {"a": 1}, "n": {}}),
    ]
    for decoder in decoders:
        assert decoder().value


def entries_of(*entries: Any) -> dict[str, Any]:
    """An AWORSet encoding whose context covers dots a1 and a2."""
    return with_entries(list(entries))


MAX = 2**63 - 1

MESSAGES: list[tuple[type[Crdt], Any, str]] = [
    (GCounter, [], "GCounter: expected an object, got list"),
    (
        GCounter,
        {"type": "X", "v": 1, "counts": {}},
        "GCounter: wrong type tag 'X', expected 'GCounter'",
    ),
    (
        GCounter,
        {"type": "GCounter", "v": 2, "counts": {}},
        "GCounter: unsupported format version 2, expected 1",
    ),
    (GCounter, {**gcounter({}), "zz": 1}, "GCounter: unexpected keys ['zz']"),
    (GCounter, {"type": "GCounter", "v": 1}, "GCounter: missing keys ['counts']"),
    (GCounter, gcounter([]), "GCounter.counts: expected an object, got list"),
    (GCounter, gcounter({"": 1}), "GCounter.counts: replica id must be a non-empty string, got ''"),
    (
        GCounter,
        gcounter({"a": -1}),
        "GCounter.counts['a']: tally must be an int from 0 to 2**63 - 1, got -1",
    ),
    (
        GCounter,
        gcounter({"a": 2**200}),
        "GCounter.counts['a']: tally must be an int from 0 to 2**63 - 1, got <int of 201 bits>",
    ),
    (
        PNCounter,
        {"type": "PNCounter", "v": 1, "p": {"a": True}, "n": {}},
        "PNCounter.p['a']: tally must be an int from 0 to 2**63 - 1, got True",
    ),
    (
        PNCounter,
        {"type": "PNCounter", "v": 1, "p": {}, "n": []},
        "PNCounter.n: expected an object, got list",
    ),
    (AWORSet, with_entries({}), "AWORSet.entries: expected a list, got dict"),  # type: ignore[arg-type]
    (
        AWORSet,
        entries_of(["a", 1]),
        "AWORSet.entries[0]: expected [replica, counter, payload], got ['a', 1]",
    ),
    (
        AWORSet,
        entries_of(["a", 1, "x"], ["a", 1, "y"]),
        "AWORSet.entries[1]: duplicate dot ['a', 1]",
    ),
    (AWORSet, entries_of(["b", 1, "x"]), "AWORSet.entries[0]: dot ['b', 1] is not in the context"),
    (
        AWORSet,
        entries_of(["a", 0, "x"]),
        "AWORSet.entries[0]: dot counter must be an int from 1 to 2**63 - 1, got 0",
    ),
    (
        AWORSet,
        entries_of([1, 1, "x"]),
        "AWORSet.entries[0]: replica id must be a non-empty string, got 1",
    ),
    (
        AWORSet,
        entries_of(["a", 1, 1.5]),
        "AWORSet.entries[0][2]: expected an element (string, integer, null, list or "
        "{'b64': ...}), got 1.5",
    ),
    (
        AWORSet,
        entries_of(["a", 1, [1, [2**63]]]),
        "AWORSet.entries[0][2][1][0]: integer 9223372036854775808 is outside the signed "
        "64-bit range",
    ),
    (
        AWORSet,
        entries_of(["a", 1, -(2**63) - 1]),
        "AWORSet.entries[0][2]: integer -9223372036854775809 is outside the signed 64-bit range",
    ),
    (
        AWORSet,
        entries_of(["a", 1, deep_list(32)]),
        "AWORSet.entries[0][2]" + "[0]" * 32 + ": element nests deeper than 32",
    ),
    (
        AWORSet,
        entries_of(["a", 1, {"b64": 5}]),
        "AWORSet.entries[0][2].b64: expected a base64 string, got 5",
    ),
    (
        AWORSet,
        entries_of(["a", 1, {"b64": "YR=="}]),
        "AWORSet.entries[0][2].b64: base64 is not in canonical form",
    ),
    (
        AWORSet,
        {"type": "AWORSet", "v": 1, "ctx": [], "entries": []},
        "AWORSet.ctx: expected an object, got list",
    ),
    (
        AWORSet,
        with_entries([], cloud=[["b", 3], ["b", 3]]),
        "AWORSet.ctx.cloud[1]: duplicate dot ['b', 3]",
    ),
]


@pytest.mark.parametrize(("cls", "data", "message"), MESSAGES, ids=[m[2][:60] for m in MESSAGES])
def test_decode_errors_say_where_what_was_expected_and_what_arrived(
    cls: type[Crdt], data: Any, message: str
) -> None:
    """A DecodeError names the path inside the input, what was expected and what arrived."""
    with pytest.raises(DecodeError) as info:
        cls.from_dict(data)
    assert message == str(info.value)


def test_integer_limits_are_inclusive() -> None:
    """The largest tally, counter and element, and the smallest element, decode."""
    assert MAX == GCounter.from_dict(gcounter({"a": MAX})).value
    s = AWORSet.from_dict(
        with_entries([["a", 1, MAX], ["a", 2, -(2**63)], ["b", MAX, "x"]], cloud=[["b", MAX]])
    )
    assert frozenset({MAX, -(2**63), "x"}) == s.value
    assert AWORSet.from_dict(s.to_dict()) == s


def test_lists_of_unexpected_keys_read_the_same_way_every_time() -> None:
    """The bounded key lists of decode errors: strings sorted first, then other keys in
    the order they come, five at most, then how many there are."""
    from crdts._codec import describe_keys

    assert describe_keys(["b", "a"]) == "['a', 'b']"
    assert describe_keys(list("edcba")) == "['a', 'b', 'c', 'd', 'e']"
    assert describe_keys(["a", 1, 2, 3, 4, 5, 6]) == "['a', 1, 2, 3, 4, ...] (7 keys)"
    assert describe_keys(list("gfedcba")) == "['a', 'b', 'c', 'd', 'e', ...] (7 keys)"
