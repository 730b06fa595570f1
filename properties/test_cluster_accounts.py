"""Sessions end on every server of a real cluster: a logout revokes the token, a password
change ends the other sessions, a deleted account's token and lists are refused. Each
server is asked directly (a sync forwarded to its peer end point, as a broker would), so
every one of them is checked, not just the one a broker picks.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from cluster_harness import poll

from reference_cluster.errors import LoginFailed
from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import LocalCluster, probe
from reference_cluster.protocol.messages import Deliver, ErrorReply, Forward, SyncRequest

PASSWORD = "correct horse battery"


def answers(cluster: LocalCluster, token: str, replica: str, list_id: str) -> list[str]:
    """What each server answers to a pull of ``list_id`` with ``token`` (``ok`` or the
    error code; ``none`` for no answer)."""
    out = []
    for j, server in enumerate(cluster.servers):
        request = SyncRequest(
            f"probe.{uuid.uuid4().hex[:8]}", list_id, replica, 0, None, None, token
        )
        reply = probe(
            cluster.layout.peer(j + 1),
            Forward("f:00", request),
            timeout=2.0,
            secure=cluster.dialer(server),
        )
        inner = reply.reply if isinstance(reply, Deliver) else reply
        if inner is None:
            out.append("none")
        else:
            out.append(inner.code if isinstance(inner, ErrorReply) else "ok")
    return out


def test_logout_revokes_the_token_on_every_server(
    cluster: LocalCluster, clients: Callable[[str], Client]
) -> None:
    """After ``log_out`` the old token is refused by all three servers (it was accepted
    by all three before)."""
    alice = clients("alice-laptop")
    session = alice.sign_up(f"alice-{uuid.uuid4().hex[:6]}", PASSWORD)
    list_id = alice.create("Weekend")
    assert alice.sync([list_id]).ok
    token = session.token
    poll(
        lambda: answers(cluster, token, alice.replica, list_id) == ["ok"] * 3,
        "every server accepts the session",
        timeout=15.0,
    )
    assert 1 == alice.log_out()
    poll(
        lambda: answers(cluster, token, alice.replica, list_id) == ["unauthorized"] * 3,
        "every server refuses the ended session",
        timeout=15.0,
    )
    assert None is alice.session


def test_a_password_change_ends_the_other_devices_sessions_everywhere(
    cluster: LocalCluster, clients: Callable[[str], Client]
) -> None:
    """The phone's session is refused everywhere after the laptop changes the password;
    the laptop's still works, and only the new password logs in."""
    name = f"bob-{uuid.uuid4().hex[:6]}"
    laptop, phone = clients("bob-laptop"), clients("bob-phone")
    laptop.sign_up(name, PASSWORD)
    phone_session = phone.log_in(name, PASSWORD)
    list_id = laptop.create("Party")
    assert laptop.sync([list_id]).ok
    assert 1 == laptop.change_password(PASSWORD, "a brand new password")
    laptop_token = laptop.session.token if laptop.session else ""
    poll(
        lambda: (
            (
                answers(cluster, phone_session.token, phone.replica, list_id),
                answers(cluster, laptop_token, laptop.replica, list_id),
            )
            == (["unauthorized"] * 3, ["ok"] * 3)
        ),
        "the phone refused and the laptop admitted everywhere",
        timeout=15.0,
    )
    with pytest.raises(LoginFailed):
        phone.log_in(name, PASSWORD)
    assert phone.log_in(name, "a brand new password").user_name == name


def test_a_deleted_account_is_refused_everywhere(
    cluster: LocalCluster, clients: Callable[[str], Client]
) -> None:
    """After deleting the account its token and its lists are refused by every server."""
    carol = clients("carol")
    session = carol.sign_up(f"carol-{uuid.uuid4().hex[:6]}", PASSWORD)
    list_id = carol.create("Old")
    assert carol.sync([list_id]).ok
    carol.delete_account(PASSWORD)
    poll(
        lambda: answers(cluster, session.token, carol.replica, list_id) == ["unauthorized"] * 3,
        "every server refuses the deleted account's session",
        timeout=15.0,
    )
    dave = clients("dave")
    dave_session = dave.sign_up(f"dave-{uuid.uuid4().hex[:6]}", PASSWORD)
    poll(
        lambda: answers(cluster, dave_session.token, dave.replica, list_id) == ["forbidden"] * 3,
        "every server refuses the deleted account's list to others",
        timeout=15.0,
    )
