"""``delta_for``: the delta a peer needs, computed from the peer's context alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet, DotContext
from crdts._kernel import ENTRY_COST_IN_DOTS
from crdts.testing import History, histories, operations_for

pick = st.integers(0, 3)
set_histories = histories(AWORSet, operations_for(AWORSet), replicas=4, max_ops=40)


@given(set_histories, pick, pick)
def test_peer_joined_with_delta_for_equals_peer_joined_with_state(
    h: History[AWORSet], i: int, j: int
) -> None:
    """p | s.delta_for(p.context) == p | s for any two replicas of one history."""
    s, p = h.replicas[i], h.replicas[j]
    assert p | s == p | s.delta_for(p.context)


@given(set_histories, pick, pick)
def test_delta_for_is_below_the_state(h: History[AWORSet], i: int, j: int) -> None:
    """The delta never carries more than the state it comes from."""
    s, p = h.replicas[i], h.replicas[j]
    assert s.delta_for(p.context) <= s


@given(set_histories, pick)
def test_delta_for_a_peer_that_has_everything_carries_nothing_it_lacks(
    h: History[AWORSet], i: int
) -> None:
    """A peer whose context covers the whole state is sent no entry it has not seen, and
    joining the delta changes nothing there."""
    s = h.replicas[i]
    d = s.delta_for(s.context)
    assert (True, s) == (all(dot in s.context for e in d for dot in d.dots_of(e)), s | d)


@given(set_histories, pick, pick)
def test_delta_for_context_stays_small(h: History[AWORSet], i: int, j: int) -> None:
    """The delta's cloud grows by at most ENTRY_COST_IN_DOTS dots per entry held here."""
    s, p = h.replicas[i], h.replicas[j]
    d = s.delta_for(p.context).stats()
    assert d.cloud <= s.stats().cloud + ENTRY_COST_IN_DOTS * s.stats().entries


def test_delta_for_ships_old_entries_rather_than_splitting_a_long_vector() -> None:
    """An entry made first, then many changes of others: the delta for a peer that has
    seen it all carries that one entry, not a cloud of every later dot."""
    s = AWORSet()
    s.add("r", "bread")
    for k in range(1_000):
        s.add("r", f"milk {k}")
        s.remove("r", f"milk {k}")
    d = s.delta_for(s.context)
    assert ({"bread"}, 0, 1) == (set(d.value), d.stats().cloud, len(d.context.vv))


def test_delta_for_a_context_with_a_huge_counter_is_quick_and_small() -> None:
    """A version vector near 2**63 (as a hostile peer may send) costs nothing to answer:
    the seen entry is shipped instead of a cloud of 2**63 dots."""
    top = 2**63 - 1
    ctx = {"vv": {"r": top}, "cloud": []}
    s = AWORSet.from_dict({"type": "AWORSet", "v": 1, "ctx": ctx, "entries": [["r", 1, "milk"]]})
    d = s.delta_for(DotContext.from_dots([("r", 1)]))
    assert ({"milk"}, 0, {"r": top}) == (set(d.value), d.stats().cloud, dict(d.context.vv))


def test_delta_for_an_empty_peer_is_the_whole_state() -> None:
    """A peer that has seen nothing gets the whole state."""
    s = AWORSet()
    for e in "abc":
        s.add("r", e)
    s.remove("r", "b")
    assert s == s.delta_for(DotContext())


def _set_with_history(kept: int, churn: int) -> AWORSet:
    """``kept`` elements added by "r" first (dots 1..kept), then ``churn`` elements added
    and removed again (the following dots)."""
    s = AWORSet()
    for k in range(kept):
        s.add("r", f"kept {k}")
    for k in range(churn):
        s.add("r", f"gone {k}")
        s.remove("r", f"gone {k}")
    return s


@pytest.mark.parametrize(
    ("kept", "churn", "entries", "cloud"),
    [
        (1, 4, 0, 4),  # splitting costs 4 cloud dots = 4 per entry: a tie keeps the split
        (1, 5, 1, 0),  # 5 > 4: the entry is shipped instead
        (2, 6, 0, 6),  # 6 <= 4 per entry for 2 entries
        (2, 9, 2, 0),  # 9 > 8
    ],
)
def test_delta_for_splits_a_vector_while_it_costs_at_most_four_dots_an_entry(
    kept: int, churn: int, entries: int, cloud: int
) -> None:
    """For a peer that has seen everything, the delta leaves the seen entries' dots out of
    its context while that costs at most ENTRY_COST_IN_DOTS cloud dots per entry (ties
    included), and ships the entries otherwise."""
    s = _set_with_history(kept, churn)
    d = s.delta_for(s.context).stats()
    assert (entries, cloud) == (d.entries, d.cloud)


@given(
    st.sets(st.integers(1, 40), min_size=1, max_size=30),
    st.sets(st.integers(1, 40), max_size=10),
    st.data(),
)
def test_holes_cost_is_what_leaving_the_dots_out_moves_to_the_cloud(
    seen: set[int], others: set[int], data: st.DataObject
) -> None:
    """_holes_cost(r, counters) is the number of dots of r that _without moves from the
    version vector to the cloud (for a replica with or without a vector entry)."""
    ctx = DotContext.from_dots([("r", c) for c in seen] + [("q", c) for c in others])
    holes = data.draw(st.sets(st.sampled_from(sorted(seen)), min_size=1))
    before = {c for r, c in ctx.cloud if r == "r"} - holes
    after = {c for r, c in ctx._without({("r", c) for c in holes}).cloud if r == "r"}
    assert len(after) - len(before) == ctx._holes_cost("r", sorted(holes))
