"""Access lists as the servers keep them (``cores.membership``): changes made at several
servers merge to the same members in any order, a concurrent add and remove keep the
user, the index of a user's lists follows every change, and the bound holds."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet
from reference_cluster.cores.membership import MAX_MEMBERS, Memberships, QuotaExceeded

LISTS = ["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"]
USERS = ["u1", "u2", "u3"]


class MemoryStore:
    """An in-memory ``MembershipStore`` that records every write."""

    def __init__(self) -> None:
        self.rows: dict[str, AWORSet] = {}
        self.writes = 0

    def memberships(self) -> dict[str, AWORSet]:
        return {k: v.copy() for k, v in self.rows.items()}

    def put_membership(self, list_id: str, state: AWORSet) -> None:
        self.rows[list_id] = state.copy()
        self.writes += 1


changes = st.lists(
    st.tuples(
        st.sampled_from(["s1", "s2", "s3"]),
        st.sampled_from(LISTS),
        st.booleans(),
        st.sampled_from(USERS),
    ),
    max_size=12,
)


@given(changes, st.randoms(use_true_random=False))
def test_changes_at_several_servers_merge_alike_in_any_order(
    ops: list[tuple[str, str, bool, str]], rng: Any
) -> None:
    """Each server applies its own changes; then every delta is merged at a fresh server in
    two different orders (each twice): both end with the same members, and the index of
    each user's lists agrees with the members."""
    servers = {s: Memberships(s, MemoryStore()) for s in ("s1", "s2", "s3")}
    deltas: list[tuple[str, dict[str, Any]]] = []
    for server, list_id, add, user in ops:
        kwargs = {"add": [user]} if add else {"remove": [user]}
        delta = servers[server].change(list_id, **kwargs)
        if delta is not None:
            deltas.append((list_id, delta))
    shuffled = list(deltas)
    rng.shuffle(shuffled)
    ends = []
    for order in (deltas + deltas, shuffled + shuffled[::-1]):
        fresh = Memberships("s9", MemoryStore())
        for list_id, delta in order:
            fresh.merge(list_id, delta)
        ends.append({k: fresh.members(k) for k in LISTS})
        for user in USERS:
            assert [k for k in LISTS if user in fresh.members(k)] == fresh.lists_of(user)
    assert ends[0] == ends[1]


def test_a_concurrent_add_and_remove_keep_the_user() -> None:
    """s1 removes u1 while s2, which has not seen that, adds u1 again: after both merge,
    u1 is a member everywhere (add wins)."""
    s1, s2 = Memberships("s1", MemoryStore()), Memberships("s2", MemoryStore())
    first = s1.change(LISTS[0], add=["u1"])
    assert first is not None
    s2.merge(LISTS[0], first)
    removed = s1.change(LISTS[0], remove=["u1"])
    readded = s2.change(LISTS[0], add=["u1"])
    assert removed is not None and readded is not None
    s1.merge(LISTS[0], readded)
    s2.merge(LISTS[0], removed)
    assert (frozenset({"u1"}),) * 2 == (s1.members(LISTS[0]), s2.members(LISTS[0]))


def test_members_survive_a_restart_and_minting_goes_on() -> None:
    """A server reopened on its store has the same members, and its next change mints a
    dot after the stored ones (a peer that merges it sees the change)."""
    store = MemoryStore()
    before = Memberships("s1", store)
    before.change(LISTS[0], add=["u1", "u2"])
    peer = Memberships("s2", MemoryStore())
    peer.merge(LISTS[0], store.rows[LISTS[0]].to_dict())
    after = Memberships("s1", store)
    delta = after.change(LISTS[0], remove=["u1"], add=["u3"])
    assert delta is not None and peer.merge(LISTS[0], delta)
    assert (frozenset({"u2", "u3"}),) * 2 == (after.members(LISTS[0]), peer.members(LISTS[0]))


def test_removing_a_stranger_writes_nothing() -> None:
    """Removing a user who is not a member returns None and stores nothing."""
    store = MemoryStore()
    m = Memberships("s1", store)
    m.change(LISTS[0], add=["u1"])
    writes = store.writes
    assert (None, writes) == (m.change(LISTS[0], remove=["u2"]), store.writes)


def test_a_list_has_at_most_max_members() -> None:
    """The change that would pass the bound is refused whole, and nothing is stored."""
    store = MemoryStore()
    m = Memberships("s1", store)
    m.change(LISTS[0], add=[f"u{i}" for i in range(MAX_MEMBERS)])
    writes = store.writes
    with pytest.raises(QuotaExceeded, match=f"at most {MAX_MEMBERS} members"):
        m.change(LISTS[0], add=["one-more"])
    assert (MAX_MEMBERS, writes) == (len(m.members(LISTS[0])), store.writes)


@pytest.mark.parametrize(
    "encoded",
    [
        {"type": "GCounter", "v": 1, "tallies": {}},
        AWORSet().to_dict() | {"entries": [["s1", 1, 7]], "ctx": {"vv": {"s1": 1}, "cloud": []}},
        {"nonsense": True},
    ],
)
def test_a_malformed_state_from_a_peer_is_refused(encoded: dict[str, Any]) -> None:
    """A state that is not an AWORSet of user ids raises ValueError and changes nothing."""
    store = MemoryStore()
    m = Memberships("s1", store)
    with pytest.raises(ValueError):
        m.merge(LISTS[0], encoded)
    assert (frozenset(), 0) == (m.members(LISTS[0]), store.writes)


def test_merging_the_same_state_twice_changes_nothing() -> None:
    """The second merge of a state returns False and writes nothing (idempotent)."""
    source = Memberships("s1", MemoryStore())
    delta = source.change(LISTS[1], add=USERS)
    assert delta is not None
    store = MemoryStore()
    m = Memberships("s2", store)
    results = [m.merge(LISTS[1], delta) for _ in itertools.repeat(None, 2)]
    assert ([True, False], 1) == (results, store.writes)
