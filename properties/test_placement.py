"""Placement: each list on the first N of the members' rendezvous-hash preference order."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference_cluster.protocol.placement import Membership, holders, preference

servers = st.lists(st.sampled_from([f"s{i}" for i in range(1, 9)]), min_size=1, unique=True)
list_ids = st.uuids().map(str)
replicas = st.integers(min_value=1, max_value=9)


@given(list_ids, servers)
def test_the_preference_order_names_every_server_once(list_id: str, names: list[str]) -> None:
    """The preference order is exactly the servers given, each once."""
    assert sorted(names) == sorted(preference(list_id, names))


@given(list_ids, servers, st.randoms())
def test_the_order_does_not_depend_on_the_order_given(
    list_id: str, names: list[str], rnd: random.Random
) -> None:
    """Shuffling the servers does not change the preference order or the holders."""
    shuffled = list(names)
    rnd.shuffle(shuffled)
    assert (preference(list_id, names), holders(list_id, names, 3)) == (
        preference(list_id, shuffled),
        holders(list_id, shuffled, 3),
    )


@given(list_ids, servers, st.data())
def test_losing_a_server_keeps_the_order_of_the_others(
    list_id: str, names: list[str], data: st.DataObject
) -> None:
    """Removing one server leaves the others in the same relative order (rendezvous)."""
    gone = data.draw(st.sampled_from(names))
    before = [s for s in preference(list_id, names) if s != gone]
    assert before == list(preference(list_id, [s for s in names if s != gone]))


@given(list_ids, servers, replicas)
def test_the_holders_are_the_first_n_distinct_members(
    list_id: str, names: list[str], n: int
) -> None:
    """A list has min(N, M) distinct holders: the head of its preference order."""
    got = holders(list_id, names, n)
    assert (len(got), len(set(got)), got) == (
        min(n, len(names)),
        min(n, len(names)),
        preference(list_id, names)[: min(n, len(names))],
    )


@given(list_ids, servers)
def test_n_at_least_m_is_every_server_holding_every_list(list_id: str, names: list[str]) -> None:
    """With as many replicas as members, every member holds every list (the old placement)."""
    assert sorted(names) == sorted(holders(list_id, names, len(names)))


@given(list_ids, servers, replicas, st.sampled_from([f"s{i}" for i in range(1, 10)]))
def test_a_membership_change_moves_only_the_lists_that_name_the_changed_member(
    list_id: str, names: list[str], n: int, changed: str
) -> None:
    """Adding or removing one member changes a list's holders only if that member was
    among them before or is among them after (minimal movement)."""
    before = set(names)
    after = before ^ {changed}
    if not after:
        return
    old, new = set(holders(list_id, before, n)), set(holders(list_id, after, n))
    if changed not in old | new:
        assert old == new
    else:
        assert (changed in old ^ new, len(old - new) <= 1, len(new - old) <= 1) == (
            True,
            True,
            True,
        )


def test_each_member_holds_about_n_over_m_of_many_lists() -> None:
    """Over 5,000 lists, 3 replicas on 7 members: each member holds 3/7 of them, within 10%."""
    names = [f"s{i}" for i in range(1, 8)]
    count: Counter[str] = Counter()
    total = 5_000
    for i in range(total):
        count.update(holders(f"00000000-0000-4000-8000-{i:012d}", names, 3))
    share = 3 / 7
    assert all(abs(count[s] / total - share) <= 0.1 * share for s in names), count


def test_lists_spread_over_servers() -> None:
    """Over many lists, each of five servers is the first choice for some of them."""
    names = [f"s{i}" for i in range(1, 6)]
    firsts = {preference(f"00000000-0000-4000-8000-{i:012d}", names)[0] for i in range(200)}
    assert set(names) == firsts


def test_replicas_below_one_are_refused() -> None:
    """Zero replicas is a mistake, said at once."""
    with pytest.raises(ValueError, match="at least 1"):
        holders("x", ["s1"], 0)


@given(list_ids, servers, replicas)
def test_a_membership_places_as_the_functions_do(list_id: str, names: list[str], n: int) -> None:
    """A membership's holders and preference are those of its servers."""
    m = Membership(names, 4)
    assert (m.holders(list_id, n), m.preference(list_id), m.everywhere(n)) == (
        holders(list_id, names, n),
        preference(list_id, names),
        n >= len(names),
    )


def test_the_newer_membership_wins() -> None:
    """Of two memberships, the larger epoch wins whichever side asks; at equal epochs
    above 0 the larger sorted list of members wins whichever side asks; at epoch 0 (each
    process's flags) each keeps its own."""
    old, new = Membership(["s1", "s2"], 1), Membership(["s1", "s2", "s3"], 2)
    same = Membership(["s9"], 1)
    flags, others = Membership(["s1"]), Membership(["s2"])
    assert (new, new, same, same, flags, others) == (
        old.newer(new),
        new.newer(old),
        old.newer(same),
        same.newer(old),
        flags.newer(others),
        others.newer(flags),
    )


@pytest.mark.parametrize(
    ("servers", "epoch"),
    [([], 0), ([""], 0), ([3], 0), (["s1"], -1), (["s1"], True), (["s1"], 1.0)],
)
def test_a_malformed_membership_is_refused(servers: list[object], epoch: object) -> None:
    """No server, an empty or non-str id, or a bad epoch: ValueError."""
    with pytest.raises(ValueError):
        Membership(servers, epoch)  # type: ignore[arg-type]
