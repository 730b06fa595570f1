"""Access lists against real processes: knowing a list's id no longer lets anyone read or
write it. The owner shares a list with users by name, removes them, and sees who they
are; a member can leave; every path (pull, push, delete, the members request, the lists
of a user) is checked by the server; a user's lists follow them to a new device.

One cluster (2 brokers, 3 servers) serves the module; each test has its own users.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from cluster_harness import PASSWORD, poll, signed_up, user_name

from reference_cluster.errors import AccessDenied, RequestRefused
from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import LocalCluster, probe
from reference_cluster.protocol.messages import Deliver, ErrorReply, Members, Relay

DEADLINE = 15.0


def user(clients: Callable[[str], Client], name: str) -> tuple[Client, str]:
    """A device with a fresh account; returns it and the user name."""
    client = signed_up(clients, name)
    return client, user_name(client)


def owned_list(owner: Client, *items: str) -> str:
    """A list the owner created and synced (so the cluster knows its owner)."""
    list_id = owner.create("Groceries")
    for item in items:
        owner.edit(list_id, lambda s, r, item=item: s.add_item(r, item))  # type: ignore[misc]
    assert owner.sync([list_id]).ok
    return list_id


def items_of(client: Client, list_id: str) -> set[str]:
    state = client.state(list_id)
    return set() if state is None else set(state.value["items"])


def test_knowing_the_id_is_not_enough(clients: Callable[[str], Client]) -> None:
    """A stranger who has a list's id can neither read it nor write it: both syncs are
    refused (``forbidden``), nothing of the list reaches the stranger, and the stranger's
    item never reaches the owner."""
    ann, _ = user(clients, "ann")
    eve, _ = user(clients, "eve")
    list_id = owned_list(ann, "milk")
    eve.open_list(list_id)
    pulled = eve.sync([list_id])
    eve.edit(list_id, lambda s, r: s.add_item(r, "forged"))
    pushed = eve.sync([list_id])
    assert ann.sync([list_id]).ok
    assert ({list_id: "forbidden"},) * 2 == (pulled.failed, pushed.failed)
    assert ({"forged"}, {"milk"}) == (items_of(eve, list_id), items_of(ann, list_id))


def test_a_shared_list_can_be_used_until_it_is_unshared(
    clients: Callable[[str], Client],
) -> None:
    """The owner shares with ben by name: ben reads and writes it; the owner removes ben:
    ben's next push is refused and never reaches the owner."""
    ann, _ = user(clients, "ann")
    ben, ben_name = user(clients, "ben")
    list_id = owned_list(ann, "milk")
    shared = ann.members(list_id, add=[ben_name])
    ben.open_list(list_id)
    assert ben.sync([list_id]).ok
    ben.edit(list_id, lambda s, r: s.add_item(r, "eggs"))
    assert ben.sync([list_id]).ok
    assert ann.sync([list_id]).ok
    before = items_of(ann, list_id)
    unshared = ann.members(list_id, remove=[ben_name])
    ben.edit(list_id, lambda s, r: s.add_item(r, "after"))
    refused = ben.sync([list_id])
    assert ann.sync([list_id]).ok
    assert ((ben_name,), ()) == (shared.members, unshared.members)
    assert ({"milk", "eggs"}, {list_id: "forbidden"}) == (before, refused.failed)
    assert {"milk", "eggs"} == items_of(ann, list_id)


def test_only_the_owner_changes_members_and_a_member_may_leave(
    clients: Callable[[str], Client],
) -> None:
    """A member may not add or remove others, nor can a stranger read the members; a
    member's own removal (leaving) works and ends their access."""
    ann, ann_name = user(clients, "ann")
    ben, ben_name = user(clients, "ben")
    cid, cid_name = user(clients, "cid")
    list_id = owned_list(ann, "milk")
    ann.members(list_id, add=[ben_name])
    with pytest.raises(AccessDenied, match="only the list's owner"):
        ben.members(list_id, add=[cid_name])
    with pytest.raises(AccessDenied, match="not a member"):
        cid.members(list_id)
    seen = ben.members(list_id)
    left = ben.members(list_id, remove=[ben_name])
    ben.open_list(list_id)
    after = ben.sync([list_id])
    assert ((ann_name, (ben_name,)), ()) == ((seen.owner, seen.members), left.members)
    assert {list_id: "forbidden"} == after.failed


def test_unknown_users_and_the_owner_are_refused_as_members(
    clients: Callable[[str], Client],
) -> None:
    """Sharing with a name nobody has, or adding the owner, is refused with a clear error
    and changes nothing."""
    ann, ann_name = user(clients, "ann")
    list_id = owned_list(ann)
    with pytest.raises(RequestRefused, match="no user named"):
        ann.members(list_id, add=["nobody-here-" + uuid.uuid4().hex[:6]])
    with pytest.raises(RequestRefused, match="owner is always on the list"):
        ann.members(list_id, add=[ann_name])
    assert () == ann.members(list_id).members


def test_shared_lists_follow_a_user_to_a_new_device(
    clients: Callable[[str], Client],
) -> None:
    """After ann shares a list with ben, ben's other device, logged in afresh, is told of
    it among the lists shared with him (on whichever server answers)."""
    ann, _ = user(clients, "ann")
    _, ben_name = user(clients, "ben")
    list_id = owned_list(ann, "milk")
    ann.members(list_id, add=[ben_name])
    laptop = clients("ben")
    laptop.log_in(ben_name, PASSWORD)
    replies = [laptop.cluster_lists() for _ in range(4)]
    assert all(list_id in r.shared and list_id not in r.owned for r in replies)


def test_a_removal_reaches_every_server(
    cluster: LocalCluster, clients: Callable[[str], Client]
) -> None:
    """Members replicate with the directory: after ben is added, then removed, every
    server (asked directly on its peer end point with ben's session) refuses him."""
    ann, _ = user(clients, "ann")
    ben, ben_name = user(clients, "ben")
    list_id = owned_list(ann)
    ann.members(list_id, add=[ben_name])
    token = ben.core.token
    assert token is not None

    def answers() -> dict[str, str]:
        out = {}
        for i, s in enumerate(cluster.servers):
            ask = Relay("f:00", Members(f"m{i}", token, list_id, (), ()))
            reply = probe(cluster.layout.peer(i + 1), ask, timeout=2.0, secure=cluster.dialer(s))
            inner = reply.reply if isinstance(reply, Deliver) else None
            out[s] = inner.code if isinstance(inner, ErrorReply) else getattr(inner, "kind", "-")
        return out

    everywhere = {s: "members_ok" for s in cluster.servers}
    poll(lambda: answers() == everywhere, "every server knows ben is a member", timeout=DEADLINE)
    ann.members(list_id, remove=[ben_name])
    refused = {s: "forbidden" for s in cluster.servers}
    poll(lambda: answers() == refused, "every server refuses ben", timeout=DEADLINE)
