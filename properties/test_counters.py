"""GCounter and PNCounter: deltas, views, encoding, and invalid arguments.

The value-against-a-sum model and delivery properties live in ``test_models.py``; the
lattice laws in ``test_laws.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given

from crdts import GCounter, InvalidArgument, PNCounter
from crdts.testing import gcounters, pncounters

MAX = 2**63 - 1

BAD_AMOUNTS = [0, -1, True, False, 1.0, "1", None, 2**63]
BAD_REPLICAS = ["", 1, None, b"r", ("r",)]


def test_gcounter_increment_returns_the_new_tally_as_delta() -> None:
    """An increment raises the replica's tally and returns a delta holding that tally."""
    c = GCounter()
    c.increment("a", 2)
    d = c.increment("a", 3)
    c.increment("b")
    assert {"a": 5} == d.counts
    assert {"a": 5, "b": 1} == c.counts
    assert 6 == c.value
    assert 5 == d.value


def test_pncounter_increment_and_decrement_return_deltas() -> None:
    """Increment and decrement raise separate tallies; the deltas carry only what changed."""
    c = PNCounter()
    c.increment("a", 5)
    d_inc = c.increment("a", 1)
    d_dec = c.decrement("b", 4)
    assert ({"a": 6}, {}) == (d_inc.increments, d_inc.decrements)
    assert ({}, {"b": 4}) == (d_dec.increments, d_dec.decrements)
    assert 2 == c.value
    assert -4 == d_dec.value


def test_stale_delta_does_not_lower_a_tally() -> None:
    """Joining an older delta after a newer one changes nothing (join is a maximum)."""
    c = GCounter()
    old = c.increment("a", 1)
    new = c.increment("a", 1)
    other = GCounter()
    other.join(new)
    other.join(old)
    assert {"a": 2} == other.counts


def test_views_are_fresh_copies() -> None:
    """Changing a returned tally dict does not change the counter."""
    g, p = GCounter(), PNCounter()
    g.increment("a", 1)
    p.increment("a", 1)
    p.decrement("a", 1)
    g.counts["a"] = 100  # type: ignore[index]
    p.increments["a"] = 100  # type: ignore[index]
    p.decrements["a"] = 100  # type: ignore[index]
    assert (1, 0) == (g.value, p.value)


@pytest.mark.parametrize("cls", [GCounter, PNCounter])
@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=repr)
def test_bad_increment_raises_before_any_change(
    cls: type[GCounter | PNCounter], amount: Any
) -> None:
    """A non-positive, non-int, bool or too large increment raises and changes nothing."""
    c = cls()
    c.increment("a", 3)
    before = c.to_dict()
    with pytest.raises(InvalidArgument):
        c.increment("a", amount)
    assert before == c.to_dict()


@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=repr)
def test_bad_decrement_raises_before_any_change(amount: Any) -> None:
    """A non-positive, non-int, bool or too large decrement raises and changes nothing."""
    c = PNCounter()
    c.decrement("a", 3)
    before = c.to_dict()
    with pytest.raises(InvalidArgument):
        c.decrement("a", amount)
    assert before == c.to_dict()


@pytest.mark.parametrize("replica", BAD_REPLICAS, ids=repr)
def test_bad_replica_raises_before_any_change(replica: Any) -> None:
    """An empty or non-string replica id raises InvalidArgument for every mutator."""
    g, p = GCounter(), PNCounter()
    g.increment("a")
    p.increment("a")
    before = (g.to_dict(), p.to_dict())
    for call in (g.increment, p.increment, p.decrement):
        with pytest.raises(InvalidArgument):
            call(replica, 1)
    assert before == (g.to_dict(), p.to_dict())


def test_tally_overflow_raises_before_any_change() -> None:
    """An increment that would take a tally past 2**63 - 1 raises and changes nothing."""
    g, p = GCounter(), PNCounter()
    g.increment("a", MAX - 1)
    p.increment("a", MAX)
    p.decrement("a", MAX)
    g.increment("a", 1)
    before = (g.to_dict(), p.to_dict())
    for call in (g.increment, p.increment, p.decrement):
        with pytest.raises(InvalidArgument, match="2\\*\\*63"):
            call("a", 1)
    assert before == (g.to_dict(), p.to_dict())
    assert MAX == g.value
    assert 0 == p.value


def test_joining_another_type_is_a_type_error() -> None:
    """join, |, and <= between a GCounter and a PNCounter raise TypeError; == is False."""
    g, p = GCounter(), PNCounter()
    with pytest.raises(TypeError):
        g.join(p)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        p.join(g)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _ = g | p  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = g <= p  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = p < g  # type: ignore[operator]
    assert g != p


def test_strict_order_operators_follow_the_lattice_order() -> None:
    """<, >, >= derive from <=: strictly below, strictly above, at or above."""
    low, high = GCounter(), GCounter()
    high.increment("a")
    assert low < high
    assert high > low
    assert high >= low
    assert not low < low  # noqa: PLR0124  # irreflexivity is the point
    concurrent = GCounter()
    concurrent.increment("b")
    assert not (high <= concurrent or concurrent <= high)


def test_zero_tallies_decode_to_the_canonical_state() -> None:
    """A zero tally in an encoding is dropped, so the decoded state encodes canonically."""
    c = PNCounter.from_dict({"type": "PNCounter", "v": 1, "p": {"a": 0, "b": 2}, "n": {"a": 0}})
    assert {"type": "PNCounter", "v": 1, "p": {"b": 2}, "n": {}} == c.to_dict()
    assert PNCounter.from_dict(c.to_dict()) == c


@given(gcounters(replicas=3))
def test_gcounter_encoding_round_trips(c: GCounter) -> None:
    """A GCounter survives JSON, and its stats count one tally per replica."""
    back = GCounter.from_dict(json.loads(c.to_json()))
    assert c == back
    assert c.digest() == back.digest()
    stats = c.stats()
    assert (len(c.counts), len(c.counts), 0) == (stats.replicas, stats.entries, stats.cloud)
    assert len(c.to_json()) == stats.encoded_bytes


@given(pncounters(replicas=3))
def test_pncounter_encoding_round_trips(c: PNCounter) -> None:
    """A PNCounter survives JSON, and its stats count both tallies."""
    back = PNCounter.from_dict(json.loads(c.to_json()))
    assert c == back
    assert c.digest() == back.digest()
    stats = c.stats()
    assert len(set(c.increments) | set(c.decrements)) == stats.replicas
    assert len(c.increments) + len(c.decrements) == stats.entries


def test_repr_shows_value_and_tallies() -> None:
    """The reprs show the value (and a GCounter's sorted tallies)."""
    g, p = GCounter(), PNCounter()
    g.increment("b", 2)
    g.increment("a", 1)
    p.decrement("a", 2)
    assert "GCounter(value=3, counts={'a': 1, 'b': 2})" == repr(g)
    assert "PNCounter(value=-2)" == repr(p)


def test_default_amount_is_one() -> None:
    """increment() and decrement() without an amount count one."""
    g, p = GCounter(), PNCounter()
    g.increment("a")
    p.increment("a")
    p.decrement("b")
    assert {"a": 1} == g.counts
    assert ({"a": 1}, {"b": 1}) == (p.increments, p.decrements)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: GCounter().increment("a", 0),
            "increment must be an int from 1 to 2**63 - 1, got 0",
        ),
        (
            lambda: PNCounter().increment("a", -2),
            "increment must be an int from 1 to 2**63 - 1, got -2",
        ),
        (
            lambda: PNCounter().decrement("a", True),
            "decrement must be an int from 1 to 2**63 - 1, got True",
        ),
        (lambda: GCounter().increment("", 1), "replica id must be a non-empty string, got ''"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_errors_say_what_was_expected_and_what_arrived(call: Any, message: str) -> None:
    """Each argument error names the argument, what was expected and what arrived."""
    with pytest.raises(InvalidArgument) as info:
        call()
    assert message == str(info.value)


@pytest.mark.parametrize("name", ["increment", "decrement"])
def test_overflow_message_names_the_replica(name: str) -> None:
    """The overflow error names the replica whose tally would pass the limit."""
    c = PNCounter()
    getattr(c, name)("a", MAX)
    with pytest.raises(InvalidArgument) as info:
        getattr(c, name)("a", 1)
    assert "the tally of replica 'a' would pass 2**63 - 1" == str(info.value)
    g = GCounter()
    g.increment("b", MAX)
    with pytest.raises(InvalidArgument) as info:
        g.increment("b")
    assert "the tally of replica 'b' would pass 2**63 - 1" == str(info.value)


def test_pncounter_stats_describe_the_state() -> None:
    """A PNCounter's stats: replicas, one entry per tally, no cloud, encoded size."""
    c = PNCounter()
    c.increment("a", 2)
    c.decrement("a", 1)
    c.decrement("b", 1)
    stats = c.stats()
    assert (2, 3, 0) == (stats.replicas, stats.entries, stats.cloud)
    assert len(c.to_json()) == stats.encoded_bytes


def test_largest_tally_decodes() -> None:
    """A tally of 2**63 - 1 decodes and round-trips."""
    data = {"type": "PNCounter", "v": 1, "p": {"a": MAX}, "n": {"a": MAX}}
    c = PNCounter.from_dict(data)
    assert 0 == c.value
    assert data == c.to_dict()


@pytest.mark.parametrize(
    ("cls", "name"), [(GCounter, "increment"), (PNCounter, "increment"), (PNCounter, "decrement")]
)
def test_too_large_amount_is_named_as_such(cls: type[GCounter | PNCounter], name: str) -> None:
    """An amount past 2**63 - 1 is reported as a bad amount, not as an overflow."""
    with pytest.raises(InvalidArgument) as info:
        getattr(cls(), name)("a", 2**63)
    assert f"{name} must be an int from 1 to 2**63 - 1, got 9223372036854775808" == str(info.value)


def test_join_type_error_names_both_types() -> None:
    """Joining counters of different types names both in the TypeError."""
    with pytest.raises(TypeError) as info:
        GCounter().join(PNCounter())  # type: ignore[arg-type]
    assert "cannot join GCounter with PNCounter" == str(info.value)
    with pytest.raises(TypeError) as info:
        PNCounter().join(GCounter())  # type: ignore[arg-type]
    assert "cannot join PNCounter with GCounter" == str(info.value)
