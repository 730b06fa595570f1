"""The public API used as a careful Python user would: typed edits of embedded values,
``m[key]``, decoding by tag, telling an unset register from a written ``None``, the guard
against shipping a stale delta alone, the context view, and bounded decode errors on
hostile keys."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

import crdts
from crdts import (
    AWORSet,
    CCounter,
    ContextView,
    Crdt,
    DecodeError,
    Dot,
    DotContext,
    DWFlag,
    EWFlag,
    GCounter,
    InvalidArgument,
    InvalidElement,
    KeyPath,
    LWWRegister,
    MVRegister,
    ORMap,
    PNCounter,
    ReadOnlyError,
    Record,
    StaleDelta,
    _registry,
)
from crdts.testing import aworsets, histories, operations_for, ormaps


@pytest.fixture(autouse=True)
def _registrations_undone() -> Any:
    """Each test's registrations end with it, so that a test defining and registering a
    class can run again in the same process (as mutation testing does)."""
    saved = dict(_registry._TYPES)
    yield
    _registry._TYPES.clear()
    _registry._TYPES.update(saved)


ROOT = Path(__file__).resolve().parent.parent


class Part(Record):
    """A record with a field of each kind (registered: its tag alone cannot name them)."""

    type_name = "ErgonomicsPart"
    fields: ClassVar[dict[str, type[Any]]] = {
        "count": CCounter,
        "done": EWFlag,
        "tags": AWORSet,
        "notes": ORMap.of(MVRegister),
    }


crdts.register(Part)

Counts = ORMap.of(CCounter)
Nested = ORMap.of(ORMap.of(CCounter))
Parts = ORMap.of(Part)


# -- 1. typed edits of embedded values ------------------------------------------------------

KEYS = st.sampled_from(["milk", "eggs", 3, ("a", b"z")])
REPLICAS = st.sampled_from(["r0", "r1"])
AMOUNTS = st.integers(1, 4)

# (string ops for apply, the same edit through a KeyPath) on a map of records
PART_EDITS = st.one_of(
    st.tuples(st.just(("count", "increment")), AMOUNTS),
    st.tuples(st.just(("count", "decrement")), AMOUNTS),
    st.tuples(st.just(("count", "reset")), st.none()),
    st.tuples(st.just(("done", "enable")), st.none()),
    st.tuples(st.just(("done", "disable")), st.none()),
    st.tuples(st.just(("tags", "add")), st.sampled_from(["x", "y"])),
    st.tuples(st.just(("tags", "remove")), st.sampled_from(["x", "y"])),
    st.tuples(st.just(("notes", "write")), st.sampled_from(["a", "b"])),
)
_TYPED: dict[tuple[str, str], Any] = {
    ("count", "increment"): CCounter.increment,
    ("count", "decrement"): CCounter.decrement,
    ("count", "reset"): CCounter.reset,
    ("done", "enable"): EWFlag.enable,
    ("done", "disable"): EWFlag.disable,
    ("tags", "add"): AWORSet.add,
    ("tags", "remove"): AWORSet.remove,
}


def _edit_part(
    by_apply: Any, by_path: Any, replica: str, key: Any, edit: tuple[tuple[str, str], Any]
) -> tuple[Any, Any]:
    """One edit of a map of parts, through apply and through at(...).update."""
    (field, op), arg = edit
    args = () if arg is None else (arg,)
    if field == "notes":
        d1 = by_apply.apply(replica, key, "apply", "notes", "apply", "k", op, *args)
        path = by_path.at(key).at("notes", ORMap.of(MVRegister)).at("k")
        return d1, path.update(replica, MVRegister.write, *args)
    d1 = by_apply.apply(replica, key, "apply", field, op, *args)
    kind = Part.fields[field]
    return d1, by_path.at(key).at(field, kind).update(replica, _TYPED[field, op], *args)


@given(st.lists(st.tuples(REPLICAS, KEYS, PART_EDITS, st.booleans()), max_size=25))
def test_typed_path_edits_equal_apply_on_a_map_of_records(
    steps: list[tuple[str, Any, Any, bool]],
) -> None:
    """Every edit through at(...).update gives the state and the delta apply gives, for
    counters, flags, sets and a map inside a record inside a map; sealing between edits
    included (the folding counters see the same open dots)."""
    by_apply, by_path = Parts(), Parts()
    for replica, key, edit, seal in steps:
        d1, d2 = _edit_part(by_apply, by_path, replica, key, edit)
        assert (d1, d1.to_dict()) == (d2, d2.to_dict())
        assert by_apply == by_path
        if seal:
            by_apply.seal()
            by_path.seal()
    assert by_apply.to_dict() == by_path.to_dict()


@given(
    st.lists(
        st.tuples(REPLICAS, KEYS, KEYS, st.sampled_from(["increment", "decrement", "reset"])),
        max_size=25,
    )
)
def test_typed_path_edits_equal_apply_on_nested_maps(
    steps: list[tuple[str, Any, Any, str]],
) -> None:
    """A map of maps of counters: at(k1).at(k2).update equals apply(k1, "apply", k2, ...)."""
    by_apply, by_path = Nested(), Nested()
    typed = {
        "increment": CCounter.increment,
        "decrement": CCounter.decrement,
        "reset": CCounter.reset,
    }
    for replica, k1, k2, op in steps:
        args = () if op == "reset" else (2,)
        d1 = by_apply.apply(replica, k1, "apply", k2, op, *args)
        d2 = by_path.at(k1).at(k2).update(replica, typed[op], *args)
        assert (d1.to_dict(), by_apply) == (d2.to_dict(), by_path)


def test_a_path_reads_and_changes_what_it_names() -> None:
    """A path reads the root as it is (value, holds, an independent state copy), keyword
    arguments reach the mutator, and removing a nested key goes through the map's own
    mutator."""
    m = Nested()
    path = m.at("shop").at("milk")
    assert (0, False) == (path.value, path.holds())
    d = path.update("a", CCounter.increment, amount=3)
    copied = path.state()
    copied.increment("a", 10)
    assert (3, True, 3, {"shop": {"milk": 3}}) == (
        path.value,
        path.holds(),
        m["shop"]["milk"],
        d.value,
    )
    m.at("shop").update("a", ORMap.remove, "milk")
    assert ({}, False) == (m.value, path.holds())
    assert "KeyPath(ORMap[ORMap[CCounter]], ['shop', 'milk'] -> CCounter)" == repr(path)


def test_a_record_field_path_checks_the_declared_type() -> None:
    """rec.at(field, T) needs T to be the field's declared type; unknown fields and
    looking inside a value that embeds nothing are refused."""
    part = Part()
    d = part.at("done", EWFlag).update("a", EWFlag.enable)
    assert (True, True) == (part["done"], d["done"])
    with pytest.raises(InvalidArgument, match=r"ErgonomicsPart\.done is a EWFlag"):
        part.at("done", DWFlag)
    with pytest.raises(InvalidArgument, match="no field 'nope'"):
        part.at("nope", EWFlag)
    with pytest.raises(InvalidArgument, match="CCounter embeds nothing"):
        Counts().at("milk").at("deeper")  # type: ignore[misc]  # what mypy refuses too
    with pytest.raises(InvalidElement):
        Counts().at(1.5)


@pytest.mark.parametrize(
    "op",
    [
        EWFlag.enable,  # another type's mutator
        CCounter.__init__,  # a method that is no mutator
        CCounter().increment,  # a bound method of some other object
        lambda c, r: c.increment(r, 1),  # an arbitrary function
        "increment",  # a name: that is what apply is for
    ],
    ids=["other type", "not a mutator", "bound method", "function", "string"],
)
def test_update_takes_only_the_value_types_own_mutators(op: Any) -> None:
    """Anything but the value type's own mutator function is refused before any change,
    so no caller ever holds the live embedded object."""
    m = Counts()
    m.at("milk").update("a", CCounter.increment, 1)
    before = m.copy()
    with pytest.raises(InvalidArgument, match="is not a mutator of CCounter"):
        m.at("milk").update("a", op)
    with pytest.raises(InvalidArgument, match="replica id"):
        m.at("milk").update("", CCounter.increment, 1)
    with pytest.raises(InvalidArgument, match="increment"):
        m.at("milk").update("a", CCounter.increment, 0)
    assert before == m


MYPY_SNIPPET = """\
from typing import ClassVar
from crdts import AWORSet, CCounter, EWFlag, ORMap, Record

class Item(Record):
    type_name = "Item"
    fields: ClassVar[dict[str, type[CCounter] | type[EWFlag]]] = {"count": CCounter, "done": EWFlag}

counts = ORMap.of(CCounter)()
d: ORMap[CCounter] = counts.at("milk").update("a", CCounter.increment, 2)
nested = ORMap.of(ORMap.of(CCounter))()
d2: ORMap[ORMap[CCounter]] = nested.at("x").at("y").update("a", CCounter.increment, 2)
items = ORMap.of(Item)()
d3: ORMap[Item] = items.at("milk").at("count", CCounter).update("a", CCounter.increment)
d4: Item = Item().at("done", EWFlag).update("a", EWFlag.enable)
ORMap.of(AWORSet)().at("k").update("a", AWORSet.add, "x")
nested.at("x").update("a", ORMap.remove, "y")
counts.at("milk").update("a", CCounter.incremnt, 2)  # ERROR
counts.at("milk").update("a", EWFlag.enable)  # ERROR
counts.at("milk").update("a", CCounter.increment, "2")  # ERROR
nested.at("x").at("y").update("a", EWFlag.enable)  # ERROR
items.at("milk").at("count", CCounter).update("a", EWFlag.enable)  # ERROR
counts.at("milk").at("deeper")  # ERROR
"""


def test_mypy_checks_typed_edits(tmp_path: Path) -> None:
    """mypy --strict accepts the typed edits of maps, nested maps and records (and the
    README's example), and reports each mistyped mutator name, another type's mutator, a
    wrong argument type and a path into a value that embeds nothing: errors on exactly the
    marked lines."""
    pytest.importorskip("mypy")
    source = tmp_path / "snippet.py"
    source.write_text(MYPY_SNIPPET, "utf-8")
    example = ROOT / "properties" / "readme_typed_example.py"
    # One mypy run, in a process of its own: mypy.api.run in this one would raise the
    # recursion limit and change the garbage collector's settings for every later test.
    env = {**os.environ, "MYPYPATH": str(ROOT)}  # this tree's crdts, not an installed one
    argv = ["--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            *argv,
            "--python-version",
            "3.11",
            str(source),
            str(example),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    flagged = sorted(
        (Path(m.group(1)).name, int(m.group(2)))
        for m in re.finditer(r"^(\S+\.py):(\d+): error:", done.stdout, re.M)
    )
    marked = [
        ("snippet.py", i)
        for i, line in enumerate(MYPY_SNIPPET.splitlines(), 1)
        if "# ERROR" in line
    ]
    assert (1, marked) == (done.returncode, flagged), done.stdout + done.stderr


# -- 2. m[key] -------------------------------------------------------------------------------


def test_getitem_reads_the_value_and_refuses_mutation_loudly() -> None:
    """m[key] is what m.value[key] holds, read-only all the way down: a nested map or a
    record is a read-only mapping, so changing it raises instead of doing nothing."""
    m = Nested()
    m.apply("a", "shop", "apply", "milk", "increment", 2)
    parts = Parts()
    parts.at("bolt").at("tags", AWORSet).update("a", AWORSet.add, "x")
    inner = m["shop"]
    with pytest.raises(TypeError):
        inner["milk"] = 5
    with pytest.raises(TypeError):
        parts["bolt"]["notes"]["k"] = "x"
    with pytest.raises(AttributeError):
        parts["bolt"]["tags"].add("y")
    assert ({"milk": 2}, 2, {"shop": {"milk": 2}}) == (inner, m["shop"]["milk"], m.value)
    assert {"count": 0, "done": False, "tags": frozenset({"x"}), "notes": {}} == parts["bolt"]


def test_getitem_raises_key_error_for_absent_keys_and_unknown_fields() -> None:
    """An absent key raises KeyError, as in a dict, and so does a field a record lacks;
    get() gives a default, and a record's field without a dot reads as bottom."""
    m = Counts()
    m.apply("a", "milk", "increment", 1)
    part = Part()
    with pytest.raises(KeyError):
        m["eggs"]
    with pytest.raises(KeyError):
        part["nope"]
    with pytest.raises(KeyError):
        part[3]  # type: ignore[index]
    assert (1, None, 0, 0, False) == (
        m["milk"],
        m.get("eggs"),
        m.get("eggs", 0),
        part["count"],
        part["done"],
    )


@given(ormaps(ORMap.of(Part), replicas=2, max_ops=20))
def test_getitem_agrees_with_value_for_every_present_key(m: Any) -> None:
    """For every key of a generated map of maps of records, m[key] == m.value[key]."""
    value = m.value
    assert value == {key: m[key] for key in m}


# -- 3. decoding by tag ------------------------------------------------------------------------


def _history_states(cls: Any) -> st.SearchStrategy[Any]:
    return histories(cls, operations_for(cls), replicas=2, max_ops=10).map(lambda h: h.replicas[0])


SHIPPED_STATES = st.one_of(
    [
        _history_states(t)
        for t in (
            GCounter,
            PNCounter,
            EWFlag,
            DWFlag,
            MVRegister,
            LWWRegister,
            CCounter,
            ORMap.of(CCounter),
            ORMap.of(EWFlag),
            ORMap.of(MVRegister),
            ORMap.of(AWORSet),
            Nested,
        )
    ]
    + [aworsets(), ormaps(Part, max_ops=10), ormaps(ORMap.of(ORMap.of(AWORSet)), max_ops=10)]
)


@given(SHIPPED_STATES)
def test_decode_picks_the_type_from_the_tag(state: Crdt) -> None:
    """crdts.decode(s.to_dict()) rebuilds s, as its own type, for every shipped type, maps
    nested three deep and a map of registered records, also through JSON."""
    back = crdts.decode(json.loads(json.dumps(state.to_dict())))
    assert (type(state), state) == (type(back), back)


def test_ormap_from_dict_accepts_a_concrete_map_tag() -> None:
    """ORMap.from_dict decodes ORMap[...] tags as the right ORMap.of(...) (and Record
    .from_dict a registered record); another type's tag is refused with a pointer to
    crdts.decode."""
    m = Nested()
    m.apply("a", "x", "apply", "y", "increment", 2)
    part = Part()
    part.apply("a", "count", "increment", 1)
    back = ORMap.from_dict(m.to_dict())
    assert (Nested, m) == (type(back), back)
    assert part == Record.from_dict(part.to_dict())
    with pytest.raises(DecodeError, match=r"cannot decode tag 'GCounter'.*crdts.decode\(data\)"):
        ORMap.from_dict(GCounter().to_dict())
    with pytest.raises(DecodeError, match=r"Record\.from_dict cannot decode tag 'ORMap"):
        Record.from_dict(m.to_dict())


def test_a_record_decodes_by_tag_only_once_registered() -> None:
    """A record's fields are not in its tag: unregistered, it (and a map of it) gives a
    DecodeError that says to register it; registered, both decode."""

    class Unlisted(Record):
        type_name = "ErgonomicsUnlisted"
        fields: ClassVar[dict[str, type[Any]]] = {"n": CCounter}

    state = ORMap.of(Unlisted)()
    state.apply("a", "k", "apply", "n", "increment", 1)
    for data in (state.to_dict(), Unlisted().to_dict()):
        with pytest.raises(DecodeError, match=r"crdts.register\(cls\)"):
            crdts.decode(data)
    assert Unlisted is crdts.register(Unlisted)
    assert Unlisted is crdts.register(Unlisted)  # again: nothing changes
    assert state == crdts.decode(state.to_dict())
    assert Unlisted() == crdts.decode(Unlisted().to_dict())


def test_a_type_of_your_own_decodes_once_registered() -> None:
    """A user type (here a GCounter under a tag of its own) decodes by tag once
    registered; register works as a class decorator."""

    @crdts.register
    class Tally(GCounter):
        type_name = "ErgonomicsTally"

    t = Tally()
    t.increment("a", 2)
    back = crdts.decode(t.to_dict())
    assert (Tally, 2) == (type(back), back.value)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (GCounter, "is taken by crdts._counters.GCounter"),
        (ORMap.of(CCounter), "is a map's tag"),
        (Record, "a type_name of its own"),
        (ORMap, "a type_name of its own"),
        (Crdt, "takes a concrete CRDT class"),
        (int, "takes a concrete CRDT class"),
        ("GCounter", "takes a concrete CRDT class"),
    ],
    ids=["taken tag", "map type", "Record", "ORMap", "abstract", "not a CRDT", "a string"],
)
def test_register_refuses_what_it_cannot_decode(cls: Any, message: str) -> None:
    """A tag another class owns, a map type (its tag names its value type), the abstract
    bases and anything that is not a CRDT class are refused with InvalidArgument."""
    if cls is GCounter:

        class Impostor(GCounter):
            type_name = "GCounter"

        cls = Impostor
    with pytest.raises(InvalidArgument, match=message):
        crdts.register(cls)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "Nope", "v": 1}, "unknown type tag 'Nope'"),
        ({"type": "ORMap[ORMap[Nope]]", "v": 1}, "unknown type tag 'Nope' in"),
        ({"type": "ORMap", "v": 1}, "unknown type tag 'ORMap'"),
        ({"type": "ORMap[GCounter]", "v": 1}, "must be a causal CRDT class"),
        ({"type": "ORMap[LWWRegister]", "v": 1}, "must be a causal CRDT class"),
        ({"type": "ORMap[" * 40 + "CCounter" + "]" * 40}, "nests maps deeper than 32"),
        ({"type": "x" * 100_000}, "type tag of 100000 characters"),
        ({"type": 10**5000}, "expected a type tag (a string), got <int of"),
        ({"type": [[[[[[[]]]]]]]}, "expected a type tag (a string)"),
        ({"v": 1}, "expected a type tag (a string), got None"),
        ([], "expected an encoded state"),
        (
            {"type": "CCounter", "v": 1, "ctx": [], "entries": []},
            "CCounter.ctx: expected an object",
        ),
    ],
)
def test_decode_refuses_unknown_and_hostile_tags(data: Any, message: str) -> None:
    """Unknown, non-string, over-long and over-nested tags give a short DecodeError."""
    with pytest.raises(DecodeError) as info:
        crdts.decode(data)
    assert (True, True) == (message in str(info.value), len(str(info.value)) < 400)


# -- 4. an unset register and a written None ----------------------------------------------------


def test_an_unset_register_differs_from_one_holding_none() -> None:
    """value is None both before any write and after writing None; is_set and get()
    tell them apart, also after a join and through the encoding."""
    unset, written = LWWRegister(), LWWRegister()
    d = written.write("a", None)
    joined = LWWRegister() | d
    decoded = LWWRegister.from_dict(written.to_dict())
    assert [None, None, None, None] == [r.value for r in (unset, written, joined, decoded)]
    assert [False, True, True, True] == [r.is_set for r in (unset, written, joined, decoded)]
    assert ["-", None, None] == [r.get("-") for r in (unset, written, decoded)]


@given(_history_states(LWWRegister))
def test_is_set_means_above_bottom(r: LWWRegister) -> None:
    """is_set is exactly "not bottom", and get(default) is value when set."""
    assert (r != LWWRegister(), r.value if r.is_set else "-") == (r.is_set, r.get("-"))


# -- 5. shipping deltas one by one, with seal() between them --------------------------------


def _ship(delta: Any) -> Any:
    """What a peer receives of ``delta``: its encoding, through JSON."""
    return type(delta).from_dict(json.loads(json.dumps(delta.to_dict())))


def test_shipping_a_delta_that_a_later_fold_replaced_is_refused() -> None:
    """a folds +3 then +1 into one dot before shipping; shipping the +3 delta alone, then a
    seal, a reset on b, then the +1 delta, used to end at 4 everywhere. Now the first
    delta refuses to encode, naming the way out."""
    a = CCounter()
    a.seal()
    d1 = a.increment("a", 3)
    d2 = a.increment("a", 1)  # folds into d1's dot
    with pytest.raises(StaleDelta, match="Ship the join of every delta made since the last"):
        _ship(d1)
    for encode in (d1.to_json, d1.digest, d1.copy().to_dict, (d1 | CCounter()).to_dict):
        with pytest.raises(StaleDelta):
            encode()
    assert (4, 4, 4) == (_ship(d2).value, _ship(d1 | d2).value, _ship(d2 | d1).value)


def test_shipping_by_the_rules_gives_the_exact_answer() -> None:
    """The same edits shipped as Rule 2 asks (the join of the interval's deltas, or one
    delta per seal) end at 1: the reset saw the 3, not the concurrent +1."""
    for joined in (True, False):
        a, b = CCounter(), CCounter()
        a.seal()
        d1 = a.increment("a", 3)
        if joined:
            d2 = a.increment("a", 1)
            b.join(_ship(d1 | d2))  # b saw 4 (both changes), so the reset removes 4
            a.seal()
            expected = 0
        else:
            b.join(_ship(d1))
            a.seal()
            d2 = a.increment("a", 1)  # a fresh dot: the shipped one is closed
            expected = 1
        d_reset = b.reset("b")
        b.join(_ship(d2))
        a.join(_ship(d_reset))
        assert (expected, expected) == (a.value, b.value)


def test_maps_and_paths_guard_their_deltas_too() -> None:
    """A map's delta whose counter a later edit folded refuses to encode alone, through
    apply, a typed path and a nested map; the join of both encodes."""
    for m, edit in (
        (Counts(), lambda m: m.apply("a", "milk", "increment", 1)),
        (Counts(), lambda m: m.at("milk").update("a", CCounter.increment, 1)),
        (Nested(), lambda m: m.at("x").at("y").update("a", CCounter.increment, 1)),
        (Parts(), lambda m: m.at("p").at("count", CCounter).update("a", CCounter.increment)),
    ):
        m.seal()
        d1 = edit(m)
        d2 = edit(m)
        with pytest.raises(StaleDelta, match=re.escape(f"this {type(m).__name__} delta")):
            d1.to_dict()
        assert m == _ship(d1 | d2) == _ship(d2 | d1)


def test_a_delta_used_as_the_accumulator_is_not_stale_once_the_later_delta_is_in() -> None:
    """Joining the later deltas into the first one (in place) removes the folded dot, so
    the accumulated delta encodes; a reset's delta never goes stale."""
    a = CCounter()
    a.seal()
    batch = a.increment("a", 1)
    batch.join(a.increment("a", 2))
    d_reset = a.reset("a")
    a.increment("a", 5)
    assert (3, 0) == (_ship(batch).value, _ship(d_reset).value)


CHANGES = st.lists(st.one_of(st.integers(-3, 4).filter(bool), st.just("seal")), max_size=20)


@given(CHANGES, st.data())
def test_every_delta_that_encodes_is_safe_to_ship_alone(steps: list[Any], data: Any) -> None:
    """Replica a makes changes, sealing now and then, and keeps every delta. Replica b
    receives, by encoding, any of them that encode, in any order, then resets; then each
    gets the rest. Both end at a's total minus what b's reset saw: no change the reset
    removed comes back. The join of every delta always encodes, as does the last."""
    a, b = CCounter(), CCounter()
    a.seal()
    deltas = []
    for step in steps:
        if step == "seal":
            a.seal()
        else:
            deltas.append(a.increment("a", step) if step > 0 else a.decrement("a", -step))
    for d in data.draw(st.permutations(deltas)):
        if data.draw(st.booleans()):
            with contextlib.suppress(StaleDelta):  # the guard: it may not leave alone
                b.join(_ship(d))
    seen = b.value
    d_reset = b.reset("b")
    everything = CCounter()
    for d in deltas:
        everything.join(d)
    b.join(_ship(everything))
    a.join(_ship(d_reset))
    total = sum(s for s in steps if s != "seal")
    assert (total - seen, a) == (a.value, b)
    assert everything == _ship(everything)
    if deltas:
        assert deltas[-1] == _ship(deltas[-1])


# -- 6. the context view ---------------------------------------------------------------------


def test_context_is_a_read_only_view_that_compares_as_a_context() -> None:
    """state.context is a DotContext for reading (==, <=, in, delta_for, joining it into
    another context) whose mutators raise ReadOnlyError and leave the state alone."""
    s = AWORSet()
    s.add("a", "milk")
    ctx = s.context
    for change in (lambda: ctx.add(Dot("a", 9)), lambda: ctx.join(DotContext()), ctx.compact):
        with pytest.raises(ReadOnlyError, match=r"call .copy\(\)"):
            change()
    other = DotContext()
    other.join(ctx)
    assert (True, True, True, True, True) == (
        isinstance(ctx, DotContext),
        ctx == DotContext.from_dots([("a", 1)]) == ctx,
        DotContext() <= ctx <= other,
        Dot("a", 1) in ctx,
        s.delta_for(ctx) <= s,
    )
    assert frozenset({Dot("a", 1)}) == frozenset(s.context.dots())


@given(st.lists(st.tuples(st.sampled_from(["add", "remove", "sync", "late"]), KEYS), max_size=30))
def test_a_context_view_follows_its_state(steps: list[tuple[str, Any]]) -> None:
    """A view taken at the start shows the state's context after any mix of mutations,
    joins of states and late deltas that leave dots in the cloud."""
    s, peer = AWORSet(), AWORSet()
    view = s.context
    late: list[AWORSet] = []
    for op, element in steps:
        if op == "add":
            s.add("s", element)
        elif op == "remove":
            s.remove("s", element)
        elif op == "sync":
            s.join(peer)
        else:
            late.append(peer.add("p", element))
            if len(late) > 1:
                s.join(late.pop())  # the newest first: older dots stay missing
    assert (s.to_dict()["ctx"], s.context) == (view.to_dict(), view)


def test_reading_the_context_copies_nothing() -> None:
    """Reading .context of a state whose context holds 20,000 cloud dots allocates a
    small, fixed amount; a copy allocates the dots."""
    cloud = [["r", c] for c in range(2, 40_002, 2)]
    s = AWORSet.from_dict(
        {"type": "AWORSet", "v": 1, "ctx": {"vv": {}, "cloud": cloud}, "entries": []}
    )
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        view = s.context
        viewed = tracemalloc.get_traced_memory()[0] - base
        copied = view.copy()
        copy_cost = tracemalloc.get_traced_memory()[0] - base - viewed
    finally:
        tracemalloc.stop()
    assert (True, True, 20_000) == (viewed < 2_000, copy_cost > 200_000, copied.cloud_size())
    assert isinstance(view, ContextView)


# -- 7. hostile keys in from_dict ------------------------------------------------------------


def _deep_tuple(depth: int) -> Any:
    value: Any = ()
    for _ in range(depth):
        value = (value,)
    return value


HOSTILE_KEYS = [_deep_tuple(5000), 10**5000, -(10**5000), "k" * 1_000_000]
DECODERS: list[Any] = [
    GCounter,
    PNCounter,
    AWORSet,
    EWFlag,
    DWFlag,
    MVRegister,
    LWWRegister,
    CCounter,
    Counts,
    Nested,
    Part,
    Parts,
]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=["deep tuple", "huge int", "huge -int", "long"])
@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.type_name)
def test_a_hostile_unexpected_key_gives_a_short_decode_error(cls: Any, key: Any) -> None:
    """An unexpected key nested 5,000 deep, of 5,000 digits or a million characters, in a
    valid encoding of any type, gives a DecodeError of bounded length (it used to raise
    RecursionError, or ValueError for the int)."""
    data = {**cls().to_dict(), key: 1}
    for decode in (cls.from_dict, crdts.decode):
        with pytest.raises(DecodeError, match="unexpected keys") as info:
            decode(data)
        assert len(str(info.value)) < 400


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=["deep tuple", "huge int", "huge -int", "long"])
def test_a_hostile_unexpected_context_key_gives_a_short_decode_error(key: Any) -> None:
    """The same keys in an encoded context give a short DecodeError."""
    with pytest.raises(DecodeError, match="ctx: unexpected keys") as info:
        DotContext.from_dict({"vv": {}, "cloud": [], key: 1})
    assert len(str(info.value)) < 400


def test_many_unexpected_keys_are_counted_not_listed() -> None:
    """The message names the first few unexpected keys, sorted, then how many there are."""
    data = {**GCounter().to_dict(), **{f"x{i}": i for i in range(9)}, 7: 1}
    with pytest.raises(DecodeError) as info:
        GCounter.from_dict(data)
    expected = "GCounter: unexpected keys ['x0', 'x1', 'x2', 'x3', 'x4', ...] (10 keys)"
    assert expected == str(info.value)


LONG = "r" * 1_000_000


@pytest.mark.parametrize(
    ("cls", "data", "where"),
    [
        (GCounter, {"type": "GCounter", "v": 1, "counts": {LONG: -1}}, "GCounter.counts["),
        (DotContext, {"vv": {LONG: -1}, "cloud": []}, "ctx.vv["),
        (
            DotContext,
            {"vv": {}, "cloud": [[LONG, 3], [LONG, 3]]},
            "ctx.cloud[1]: duplicate dot",
        ),
        (
            AWORSet,
            {
                "type": "AWORSet",
                "v": 1,
                "ctx": {"vv": {LONG: 1}, "cloud": []},
                "entries": [[LONG, 1, "x"], [LONG, 1, "x"]],
            },
            "duplicate dot",
        ),
        (
            AWORSet,
            {"type": "AWORSet", "v": 1, "ctx": {"vv": {}, "cloud": []}, "entries": [[LONG, 1, 1]]},
            "is not in the context",
        ),
    ],
    ids=["tally", "vector entry", "cloud dot", "duplicate entry", "entry outside"],
)
def test_a_million_character_replica_id_gives_a_short_message(
    cls: Any, data: Any, where: str
) -> None:
    """A replica id of a million characters is shown shortened in every decoder's
    message (the messages used to carry it whole)."""
    with pytest.raises(DecodeError, match=where.replace("[", r"\[")) as info:
        cls.from_dict(data)
    assert len(str(info.value)) < 400


def test_exports_are_the_documented_names() -> None:
    """The new public names are exported: decode, register, KeyPath, ContextView and the
    two errors."""
    names = {"decode", "register", "KeyPath", "ContextView", "ReadOnlyError", "StaleDelta"}
    assert names <= set(crdts.__all__)
    assert (True, True) == (
        issubclass(StaleDelta, ValueError),
        issubclass(ReadOnlyError, TypeError),
    )
    assert KeyPath is type(Counts().at("k"))
