"""Real broker, server and client processes on loopback: edits reach every server,
offline edits sync later, accounts and ownership are enforced, malformed frames are
answered, and a server killed with SIGKILL keeps what it acknowledged.

One cluster (2 brokers, 3 servers) serves the whole module; each test uses its own users
and lists. Every process is started and stopped by the tests, by pid, also on failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
from cluster_harness import PASSWORD, poll, signed_up, user_name

from reference_cluster.errors import LoginFailed, UserExists
from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import LocalCluster, probe
from reference_cluster.protocol.messages import (
    WIRE_VERSION,
    Announce,
    BrokerStatus,
    Deliver,
    ErrorReply,
    ServerStatus,
    Status,
    SyncReply,
    decode,
)
from reference_cluster.protocol.placement import preference
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.client_store import ClientSession, ClientStore
from reference_cluster.storage.server_store import ServerStore

DEADLINE = 15.0


def eventually(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something truthy, at most ``timeout`` seconds."""
    return poll(check, what, timeout=timeout)


def server_digests(cluster: LocalCluster, list_id: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for s in cluster.servers:
        status = cluster.server_status(s)
        out[s] = None if status is None else status.digests.get(list_id)
    return out


def test_every_process_reports_ready_and_answers_status(cluster: LocalCluster) -> None:
    """Each broker holds the three servers live; each server answers with its id."""
    brokers = [cluster.broker_status(b) for b in cluster.brokers]
    servers = [cluster.server_status(s) for s in cluster.servers]
    assert [("s1", "s2", "s3")] * 2 == [b.servers if b else None for b in brokers]
    assert cluster.servers == [s.server if s else None for s in servers]


def test_a_client_edit_reaches_every_server(
    clients: Callable[[str], Client], cluster: LocalCluster
) -> None:
    """An acknowledged edit is on all three servers, with the client's digest."""
    alice = signed_up(clients, "alice")
    list_id = alice.create("Weekend")
    alice.edit(list_id, lambda s, r: s.add_item(r, "milk", 2))
    outcome = alice.sync([list_id])
    state = alice.state(list_id)
    assert (True, 0) == (outcome.ok, alice.queued(list_id))
    assert state is not None
    want = dict.fromkeys(cluster.servers, state.digest())
    eventually(lambda: server_digests(cluster, list_id) == want, "all servers hold the edit")


def test_offline_edits_survive_a_restart_and_sync_later(
    clients: Callable[[str], Client], cluster: LocalCluster, tmp_path: Path
) -> None:
    """Edits made offline stay queued on the device across a restart, then reach the
    servers and another user's device."""
    bob = signed_up(clients, "bob")
    session = bob.session
    assert session is not None
    bob.offline = True
    list_id = bob.create("Party")
    bob.edit(list_id, lambda s, r: s.add_item(r, "chips", 3))
    assert ({list_id: "offline"}, 2) == (bob.sync().failed, bob.queued(list_id))
    bob.close()
    restarted = Client(
        ClientStore(bob.store.path, ShoppingList),
        cluster.layout.frontends,
        broker_key=cluster.broker_key,
    )
    try:
        assert 2 == restarted.queued(list_id)
        assert (True, 0) == (restarted.sync().ok, restarted.queued(list_id))
        carol = signed_up(clients, "carol")
        restarted.members(list_id, add=[user_name(carol)])
        carol.open_list(list_id)
        assert carol.sync([list_id]).ok
        state = carol.state(list_id)
        assert state is not None and {"chips": 3} == {k: v.quantity for k, v in state.items.items()}
    finally:
        restarted.close()


def test_sign_up_log_in_and_rejected_tokens(clients: Callable[[str], Client]) -> None:
    """Sign-up and login give working sessions; a wrong password, a taken name and a
    forged token are refused."""
    dave = clients("dave")
    name = f"dave-{uuid.uuid4().hex[:6]}"
    dave.sign_up(name, PASSWORD)
    with pytest.raises(LoginFailed):
        dave.log_in(name, "not the password")
    with pytest.raises(UserExists):
        clients("mallory").sign_up(name, "another password")
    session = dave.log_in(name, PASSWORD)
    list_id = dave.create("Mine")
    assert dave.sync([list_id]).ok
    forged = clients("eve")
    forged.store.set_session(ClientSession(name, session.user_id, "A" * 43, session.expires))
    forged.core.token = "A" * 43
    forged.open_list(list_id)
    assert {list_id: "unknown_session"} == forged.sync([list_id]).failed
    anonymous = clients("anonymous")
    anonymous.open_list(list_id)
    assert {list_id: "unauthorized"} == anonymous.sync([list_id]).failed


def test_only_the_owner_can_delete_a_shared_list(
    clients: Callable[[str], Client], cluster: LocalCluster
) -> None:
    """A list shared with a member: the member may edit, only its owner may delete."""
    owner, friend = signed_up(clients, "frank"), signed_up(clients, "grace")
    list_id = owner.create("Shared")
    assert owner.sync([list_id]).ok
    owner.members(list_id, add=[user_name(friend)])
    friend.open_list(list_id)
    friend.edit(list_id, lambda s, r: s.add_item(r, "cake"))
    assert friend.sync([list_id]).ok
    assert ([], [list_id]) == (friend.owned_lists(), owner.owned_lists())
    friend.edit(list_id, lambda s, r: s.delete(r))
    assert {list_id: "forbidden"} == friend.sync([list_id]).failed
    owner.edit(list_id, lambda s, r: s.delete(r))
    assert owner.sync([list_id]).ok

    def deleted_everywhere() -> bool:
        for s in cluster.servers:
            status = cluster.server_status(s, states=True)
            encoded = None if status is None else status.states.get(list_id)
            if encoded is None or not ShoppingList.from_dict(encoded).deleted:
                return False
        return True

    eventually(deleted_everywhere, "every server holds the deletion")


@pytest.mark.parametrize("role", ["broker", "server"])
def test_a_malformed_frame_gets_an_error_reply_and_the_process_keeps_serving(
    cluster: LocalCluster, role: str
) -> None:
    """Garbage, a wrong version and an unknown kind are each answered with an error;
    the process then still answers a status request."""
    endpoint = cluster.layout.frontend(0) if role == "broker" else cluster.layout.peer(1)
    secure = cluster.dialer("b0" if role == "broker" else "s1")
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        secure(sock)
        sock.connect(endpoint)
        codes = []
        unknown = b'{"kind":"launch","v":%d}' % WIRE_VERSION
        for frame in (b"\xff not json", b'{"kind":"sync","v":99}', unknown):
            sock.send(frame)
            assert sock.poll(5000), "no reply"
            reply = decode(sock.recv())
            codes.append(reply.code if isinstance(reply, ErrorReply) else reply.kind)
        sock.close()
        status = probe(endpoint, Status("after"), timeout=5.0, ctx=ctx, secure=secure)
    finally:
        ctx.destroy(linger=0)  # closes a socket left open by a failed assertion
    assert ["malformed", "unsupported_version", "unknown_kind"] == codes
    assert isinstance(status, BrokerStatus if role == "broker" else ServerStatus)


def test_a_server_killed_with_sigkill_restarts_with_every_acknowledged_edit(
    clients: Callable[[str], Client], cluster: LocalCluster
) -> None:
    """Edits the list's server acknowledged just before a SIGKILL are in its store file,
    and it restarts from there."""
    henry = signed_up(clients, "henry")
    list_id = henry.create("Durable")
    victim = preference(list_id, cluster.servers)[0]  # first attempts go to it (healthy cluster)
    for n in range(5):
        item = f"item{n}"
        henry.edit(list_id, lambda s, r: s.add_item(r, item))  # noqa: B023 - called at once
        assert henry.sync([list_id]).ok
    state = henry.state(list_id)
    assert state is not None
    before = cluster.server_status(victim)
    cluster.kill(victim)
    with ServerStore(cluster.data_dir / f"{victim}.sqlite", ShoppingList) as store:
        stored = store.load(list_id)
    assert stored is not None and state <= stored
    cluster.restart(victim)
    status = eventually(lambda: cluster.server_status(victim), f"{victim} answers again")
    assert before is not None and before.incarnation + 1 == status.incarnation
    cluster.wait_for_servers(cluster.servers, timeout=DEADLINE)


def test_a_client_cannot_pose_as_a_server_at_the_front_end(cluster: LocalCluster) -> None:
    """An announcement or a delivery sent to a broker's front end is refused, and the
    broker's live servers stay the real ones."""
    endpoint = cluster.layout.frontend(1)
    secure = cluster.dialer("b1")
    fake = [
        probe(endpoint, Announce("s1", 9), timeout=5.0, secure=secure),
        probe(
            endpoint,
            Deliver("f:00", SyncReply("x.1", str(uuid.uuid4()), None)),
            timeout=5.0,
            secure=secure,
        ),
    ]
    status = cluster.broker_status("b1")
    assert ["unexpected_kind"] * 2 == [r.code if isinstance(r, ErrorReply) else r for r in fake]
    assert status is not None and ("s1", "s2", "s3") == status.servers
