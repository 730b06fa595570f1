"""Placement: every server holds every list, in a stable rendezvous-hash preference order."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from reference_cluster.protocol.placement import holders

servers = st.lists(st.sampled_from([f"s{i}" for i in range(1, 9)]), min_size=1, unique=True)
list_ids = st.uuids().map(str)


@given(list_ids, servers)
def test_every_server_holds_every_list(list_id: str, names: list[str]) -> None:
    """The holders are exactly the servers given, each once."""
    assert sorted(names) == sorted(holders(list_id, names))


@given(list_ids, servers, st.randoms())
def test_the_order_does_not_depend_on_the_order_given(
    list_id: str, names: list[str], rnd: random.Random
) -> None:
    """Shuffling the servers does not change the preference order."""
    shuffled = list(names)
    rnd.shuffle(shuffled)
    assert holders(list_id, names) == holders(list_id, shuffled)


@given(list_ids, servers, st.data())
def test_losing_a_server_keeps_the_order_of_the_others(
    list_id: str, names: list[str], data: st.DataObject
) -> None:
    """Removing one server leaves the others in the same relative order (rendezvous)."""
    gone = data.draw(st.sampled_from(names))
    before = [s for s in holders(list_id, names) if s != gone]
    assert before == list(holders(list_id, [s for s in names if s != gone]))


def test_lists_spread_over_servers() -> None:
    """Over many lists, each of five servers is the first choice for some of them."""
    names = [f"s{i}" for i in range(1, 6)]
    firsts = {holders(f"00000000-0000-4000-8000-{i:012d}", names)[0] for i in range(200)}
    assert set(names) == firsts
