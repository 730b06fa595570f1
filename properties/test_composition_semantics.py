"""Semantics of flags, registers, maps and records: concurrency, removal, nesting, bounds,
and clear errors."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from crdts import (
    AWORSet,
    CCounter,
    DecodeError,
    DWFlag,
    EWFlag,
    InvalidArgument,
    InvalidElement,
    LWWRegister,
    MVRegister,
    ORMap,
    Record,
)


class Item(Record):
    """A record used by these tests."""

    type_name = "TestItem"
    fields: ClassVar[dict[str, type[Any]]] = {"count": CCounter, "done": EWFlag}


# -- flags ---------------------------------------------------------------------------------


def test_ewflag_concurrent_enable_and_disable_gives_enabled() -> None:
    """Enable wins: a disable cannot remove an enable it has not seen."""
    a, b = EWFlag(), EWFlag()
    b.join(a.enable("a"))
    a.disable("a")
    b.enable("b")
    assert (True, True) == ((a | b).value, (b | a).value)


def test_ewflag_disabled_is_bottom() -> None:
    """A disabled enable-wins flag holds no dot, so it leaves nothing in a map."""
    f = EWFlag()
    f.enable("a")
    f.disable("a")
    assert (False, 0) == (f.value, f.stats().entries)


def test_dwflag_concurrent_enable_and_disable_gives_disabled() -> None:
    """Disable wins: a concurrent disable leaves a dot beside the enable."""
    a, b = DWFlag(), DWFlag()
    a.enable("a")
    b.disable("b")
    assert (False, False) == ((a | b).value, (b | a).value)
    c = a | b
    c.enable("a")
    assert c.value


# -- registers -----------------------------------------------------------------------------


def test_mvregister_keeps_concurrent_writes_until_a_later_write() -> None:
    """Concurrent writes are all kept; a write that saw them replaces them all."""
    a, b = MVRegister(), MVRegister()
    a.write("a", "tea")
    b.write("b", "coffee")
    merged = a | b
    assert frozenset({"tea", "coffee"}) == merged.value
    merged.write("a", "water")
    assert frozenset({"water"}) == (merged | a | b).value


def test_lwwregister_loses_the_concurrent_write_with_the_lower_timestamp() -> None:
    """LWW keeps one value: the write with the greater (timestamp, replica, value)."""
    a, b = LWWRegister(), LWWRegister()
    a.write("a", "tea", 5)
    b.write("b", "coffee", 7)
    assert ("coffee", "coffee") == ((a | b).value, (b | a).value)
    tie_a, tie_b = LWWRegister(), LWWRegister()
    tie_a.write("a", "x", 3)
    tie_b.write("b", "y", 3)
    assert ("y", "b") == ((tie_a | tie_b).value, (tie_b | tie_a).writer)


def test_lwwregister_default_timestamp_is_one_past_the_held_one() -> None:
    """Without a timestamp a write follows the one it has seen (a Lamport clock)."""
    r = LWWRegister()
    r.write("a", 1, 10)
    r.write("b", 2)
    assert (2, 11) == (r.value, r.timestamp)


# -- maps ----------------------------------------------------------------------------------


def test_ormap_remove_concurrent_with_update_keeps_only_the_unseen_update() -> None:
    """At 3, removing the key concurrently with +1 gives 1: an observed reset."""
    m = ORMap.of(CCounter)
    a, b = m(), m()
    b.join(a.apply("a", "milk", "increment", 3))
    d_remove = a.remove("a", "milk")
    d_inc = b.apply("b", "milk", "increment", 1)
    assert {"milk": 1} == (a | b).value == (b | a).value == (a | d_inc).value
    assert {"milk": 1} == (b | d_remove).value


def test_ormap_remove_concurrent_with_a_nested_update() -> None:
    """In a map of maps, removing an outer key keeps only the inner updates it never saw."""
    m = ORMap.of(ORMap.of(EWFlag))
    a, b = m(), m()
    b.join(a.apply("a", "x", "apply", "p", "enable"))
    b.join(a.apply("a", "x", "apply", "q", "enable"))
    a.remove("a", "x")
    b.apply("b", "x", "apply", "q", "enable")
    assert {"x": {"q": True}} == (a | b).value


def test_ormap_of_sets_is_a_map_of_observed_remove_sets() -> None:
    """AWORSets embed too: a remove of the key keeps a concurrent add of an element."""
    m = ORMap.of(AWORSet)
    a, b = m(), m()
    b.join(a.apply("a", "k", "add", 1))
    a.remove("a", "k")
    b.apply("b", "k", "add", 2)
    assert {"k": frozenset({2})} == (a | b).value


def test_removed_keys_do_not_leak() -> None:
    """After 200 keys are added and removed, the map holds no entry and a tiny encoding."""
    m = ORMap.of(Item)()
    for i in range(200):
        m.apply("a", f"k{i}", "apply", "count", "increment", 2)
        m.apply("a", f"k{i}", "apply", "done", "enable")
    for i in range(200):
        m.remove("a", f"k{i}")
    stats = m.stats()
    assert (0, 0, 1) == (stats.entries, stats.cloud, stats.replicas)
    assert stats.encoded_bytes < 80
    assert {} == m.value


def test_a_value_back_at_bottom_drops_its_key() -> None:
    """Disabling the only flag under a key removes the key."""
    m = ORMap.of(EWFlag)()
    m.apply("a", "k", "enable")
    m.apply("a", "k", "disable")
    assert ("k" in m, len(m)) == (False, 0)


def test_getitem_returns_the_value_and_raises_key_error_when_absent() -> None:
    """m[key] is the key's value (not a state that could be mutated to no effect) and an
    absent key raises KeyError, as in a dict; state_at is the explicit copy."""
    m = ORMap.of(CCounter)()
    m.apply("a", "k", "increment", 1)
    copied = m.state_at("k")
    copied.increment("a", 5)
    assert (1, 1, 6) == (m["k"], m.value["k"], copied.value)
    with pytest.raises(KeyError):
        m["absent"]


def test_map_delta_is_small_whatever_the_map_size() -> None:
    """The delta of one update has one entry, in a map of 1 or 1000 keys."""
    sizes = []
    for n in (1, 1000):
        m = ORMap.of(CCounter)()
        for i in range(n):
            m.apply("a", i, "increment", 1)
        sizes.append(len(m.apply("b", 0, "increment", 1).to_json()))
    assert sizes[0] == sizes[1]


def test_value_at_and_holds_read_nested_paths() -> None:
    """value_at and holds walk nested keys; absent paths read as bottom."""
    m = ORMap.of(Item)()
    m.apply("a", "k", "apply", "count", "increment", 4)
    assert (4, False, True, False) == (
        m.value_at("k", "count"),
        m.value_at("k", "done"),
        m.holds("k", "count"),
        m.holds("other"),
    )


def test_record_reads_every_field_and_resets_one() -> None:
    """A record shows bottom values for empty fields; reset clears one field as observed."""
    r = Item()
    assert {"count": 0, "done": False} == r.value
    r.apply("a", "count", "increment", 2)
    r.apply("a", "done", "enable")
    r.reset("a", "done")
    assert {"count": 2, "done": False} == r.value


# -- stats -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "mutate"),
    [
        (EWFlag, lambda s: s.enable("a")),
        (DWFlag, lambda s: s.disable("a")),
        (MVRegister, lambda s: s.write("a", "v")),
        (LWWRegister, lambda s: s.write("a", "v", 1)),
        (CCounter, lambda s: s.increment("a", 1)),
        (ORMap.of(CCounter), lambda s: s.apply("a", "k", "increment", 1)),
        (Item, lambda s: s.apply("a", "done", "enable")),
    ],
)
def test_stats_count_replicas_entries_and_bytes(factory: Any, mutate: Any) -> None:
    """stats() reports the replica, the entry and the encoded size of every type."""
    state = factory()
    mutate(state)
    stats = state.stats()
    assert (1, 1, 0) == (stats.replicas, stats.entries, stats.cloud)
    assert len(state.to_json()) == stats.encoded_bytes


# -- errors ------------------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors_and_change_nothing() -> None:
    """Bad replica ids, amounts, values, keys, ops and fields are refused before any change."""
    m = ORMap.of(Item)()
    m.apply("a", "k", "apply", "count", "increment", 1)
    before = m.to_dict()
    with pytest.raises(InvalidArgument, match="replica id"):
        m.apply("", "k", "apply", "count", "increment", 1)
    with pytest.raises(InvalidArgument, match="increment must be"):
        m.apply("a", "k", "apply", "count", "increment", 0)
    with pytest.raises(InvalidArgument, match="not a mutator"):
        m.apply("a", "k", "join", "count")
    with pytest.raises(InvalidArgument, match="no field"):
        m.apply("a", "k", "apply", "colour", "enable")
    with pytest.raises(InvalidElement):
        m.apply("a", ["unhashable"], "apply", "done", "enable")
    with pytest.raises(InvalidElement):
        MVRegister().write("a", 1.5)
    with pytest.raises(InvalidArgument, match="timestamp"):
        LWWRegister().write("a", 1, -1)
    assert before == m.to_dict()


def test_map_types_need_a_causal_value_type() -> None:
    """ORMap.of refuses what it cannot embed, and ORMap() alone names the fix."""
    with pytest.raises(InvalidArgument, match="causal CRDT class"):
        ORMap.of(LWWRegister)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ORMap\.of"):
        ORMap()


@pytest.mark.parametrize(
    ("cls", "mutate", "path"),
    [
        (CCounter, lambda e: e[0].__setitem__(2, "1"), "amount must be"),
        (DWFlag, lambda e: e[0].__setitem__(2, None), "true or false"),
        (ORMap.of(CCounter), lambda e: e[0].__setitem__(2, ["k"]), "expected \\[key, payload\\]"),
        (Item, lambda e: e[0].__setitem__(2, ["colour", 1]), "no field"),
        (MVRegister, lambda e: e[0].__setitem__(2, 1.5), "expected an element"),
    ],
)
def test_decoding_garbage_names_what_is_wrong(cls: Any, mutate: Any, path: str) -> None:
    """from_dict raises DecodeError naming the bad payload."""
    state = cls()
    if cls is CCounter:
        state.increment("a", 1)
    elif cls is DWFlag:
        state.enable("a")
    elif cls is Item:
        state.apply("a", "count", "increment", 1)
    elif cls is MVRegister:
        state.write("a", 1)
    else:
        state.apply("a", "k", "increment", 1)
    data = json.loads(json.dumps(state.to_dict()))
    mutate(data["entries"])
    with pytest.raises(DecodeError, match=path):
        cls.from_dict(data)


def test_lwwregister_decoding_checks_the_write() -> None:
    """A malformed LWW write is refused with its path."""
    with pytest.raises(DecodeError, match=r"LWWRegister.write"):
        LWWRegister.from_dict({"type": "LWWRegister", "v": 1, "write": [1, "a"]})
