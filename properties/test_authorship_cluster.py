"""The reported authorship attack on real processes: a collaborator forges pushes about
another user's device; the servers refuse them, and the victim's offline edit arrives.

One cluster (2 brokers, 3 servers) on loopback, started and stopped by pid.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from cluster_harness import poll, signed_up

from crdts._codec import MAX_INT
from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import LocalCluster
from reference_cluster.protocol.messages import ErrorReply, Message, SyncRequest


def push_forged(client: Client, list_id: str, delta: dict[str, Any]) -> Message:
    """Send ``delta`` as ``client``'s own push (its replica id and session) and return the
    reply."""
    session = client.session
    request = SyncRequest(
        request_id=f"forged.{uuid.uuid4().hex[:8]}",
        list_id=list_id,
        replica=client.store.replica_id,
        attempt=0,
        context=None,
        delta=delta,
        token=None if session is None else session.token,
    )
    client.connect_all()
    for _ in range(20):  # a broker may still be connecting: bounded retries
        try:
            return client._attempt(client.brokers[0], request, 2.0)  # type: ignore[arg-type]
        except Exception:  # ClusterUnavailable while the socket connects
            continue
    raise AssertionError("no broker answered the forged push")


def shopping_delta(entries: list[list[Any]], vv: dict[str, int], cloud: list[list[Any]]) -> dict:
    return {
        "type": "ShoppingList",
        "v": 1,
        "ctx": {"vv": vv, "cloud": cloud},
        "entries": entries,
    }


def digests(cluster: LocalCluster, list_id: str) -> set[str | None]:
    out: set[str | None] = set()
    for s in cluster.servers:
        status = cluster.server_status(s)
        out.add(None if status is None else status.digests.get(list_id))
    return out


def test_forged_pushes_about_another_device_are_refused_and_its_offline_edit_arrives(
    clients: Callable[[str], Client], cluster: LocalCluster
) -> None:
    """bob pushes a context claiming alice's device counter at 2**63 - 1, then an item
    under the very dot alice's queued offline edit used; both are refused, alice syncs,
    her edit is on every server and both devices, and she can still edit."""
    alice, bob = signed_up(clients, "alice"), signed_up(clients, "bob")
    list_id = alice.create("Shared")
    alice.edit(list_id, lambda s, r: s.add_item(r, "milk", 2))
    assert alice.sync([list_id]).ok
    bob_session = bob.session
    assert bob_session is not None
    alice.members(list_id, add=[bob_session.user_name])  # bob is a collaborator
    bob.open_list(list_id)
    assert bob.sync([list_id]).ok
    victim = alice.store.replica_id
    alice.offline = True
    offline = alice.edit(list_id, lambda s, r: s.add_item(r, "bread", 1))
    (dot,) = {d for d in offline.context.dots() if d.replica == victim}

    claim = push_forged(bob, list_id, shopping_delta([], {victim: MAX_INT}, []))
    payload = ["items", ["forged", ["set", 9]]]
    under = push_forged(
        bob, list_id, shopping_delta([[victim, dot.counter, payload]], {}, [[victim, dot.counter]])
    )
    assert ("forbidden", "forbidden") == (
        claim.code if isinstance(claim, ErrorReply) else type(claim).__name__,
        under.code if isinstance(under, ErrorReply) else type(under).__name__,
    )

    alice.offline = False
    assert alice.sync([list_id]).ok
    assert 0 == alice.queued(list_id)
    state = alice.state(list_id)
    assert state is not None
    assert {"milk": 2, "bread": 1} == {k: v.quantity for k, v in state.items.items()}
    poll(
        lambda: digests(cluster, list_id) == {state.digest()},
        "every server holds alice's list",
        timeout=15.0,
    )
    assert bob.sync([list_id]).ok
    bob_state = bob.state(list_id)
    assert bob_state is not None and state.digest() == bob_state.digest()
    alice.edit(list_id, lambda s, r: s.add_item(r, "eggs", 6))
    assert alice.sync([list_id]).ok
