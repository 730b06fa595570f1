"""``delta_for``: the delta a peer needs, computed from the peer's context alone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet, DotContext
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
def test_delta_for_a_peer_that_has_everything_has_no_entries(h: History[AWORSet], i: int) -> None:
    """A peer whose context covers the whole state is sent no entries."""
    s = h.replicas[i]
    assert s.delta_for(s.context).stats().entries == 0


def test_delta_for_an_empty_peer_is_the_whole_state() -> None:
    """A peer that has seen nothing gets the whole state."""
    s = AWORSet()
    for e in "abc":
        s.add("r", e)
    s.remove("r", "b")
    assert s == s.delta_for(DotContext())
