"""The servers' directory: sign-up, login, admission of syncs, ownership, and replication
with its race rules, on real server stores and without sockets."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference_cluster.cores.accounts import ScryptParams
from reference_cluster.cores.directory import Directory
from reference_cluster.errors import AccessDenied
from reference_cluster.protocol.effects import Send
from reference_cluster.protocol.messages import (
    DirectoryDigest,
    DirectoryPush,
    ErrorReply,
    ListsReply,
    ListsRequest,
    LogIn,
    SignUp,
    SyncRequest,
    Welcome,
    decode,
    encode,
)
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.server_store import ServerStore

CHEAP = ScryptParams(n=2**8, r=8, p=1)
PASSWORD = "correct horse battery"
LIST = str(uuid.UUID(int=11, version=4))
NOW = 1_000_000.0

Stores = dict[str, ServerStore[ShoppingList]]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    """Three server stores, closed after the test."""
    opened = {s: ServerStore(tmp_path / f"{s}.sqlite", ShoppingList) for s in ("s1", "s2", "s3")}
    yield opened
    for store in opened.values():
        store.close()


def directory(stores: Stores, sid: str) -> Directory:
    return Directory(sid, stores[sid], peers=sorted(stores), interval=1.0, params=CHEAP)


def welcome(reply: object) -> Welcome:
    assert isinstance(reply, Welcome), reply
    return reply


def deliver(dirs: dict[str, Directory], sends: list[Send], sender: str, now: float) -> int:
    """Deliver messages (through the codec) until none is left; return how many."""
    queue = [(sender, s) for s in sends]
    delivered = 0
    while queue and delivered < 1000:
        src, send = queue.pop(0)
        msg = decode(encode(send.message))
        assert isinstance(msg, DirectoryPush | DirectoryDigest)
        replies = dirs[send.to].receive(src, msg, now)
        replies += dirs[send.to].take_outgoing()
        queue.extend((send.to, r) for r in replies)
        delivered += 1
    assert not queue
    return delivered


def anti_entropy(dirs: dict[str, Directory], now: float) -> None:
    for sid, d in dirs.items():
        d.start(now - 10)
        deliver(dirs, d.on_timer(now), sid, now)


def sync(token: str | None, *, list_id: str = LIST) -> SyncRequest:
    return SyncRequest("r.1", list_id, "dev1", 0, None, None, token)


def test_sign_up_then_log_in_and_the_token_admits_syncs(stores: Stores) -> None:
    """A sign-up returns a working token; a login returns another; both admit a sync."""
    d = directory(stores, "s1")
    first = welcome(d.handle(SignUp("a", "Alice", PASSWORD), NOW))
    second = welcome(d.handle(LogIn("b", "alice", PASSWORD), NOW))
    assert ("alice", first.user_id) == (second.name, second.user_id)
    assert first.token != second.token
    assert [None, None] == [d.admit(sync(w.token), None, NOW) for w in (first, second)]


def test_login_failures_and_bad_sign_ups_get_their_codes(stores: Stores) -> None:
    """Wrong password and unknown user fail alike; a taken name or a short password are
    refused with their own codes."""
    d = directory(stores, "s1")
    welcome(d.handle(SignUp("a", "alice", PASSWORD), NOW))
    codes = [
        d.handle(LogIn("b", "alice", "wrong password"), NOW),
        d.handle(LogIn("c", "nobody", PASSWORD), NOW),
        d.handle(SignUp("d", "alice", "another password"), NOW),
        d.handle(SignUp("e", "bob", "short"), NOW),
        d.handle(SignUp("f", "1bad name", PASSWORD), NOW),
    ]
    assert ["login_failed", "login_failed", "user_exists", "invalid", "invalid"] == [
        r.code if isinstance(r, ErrorReply) else r for r in codes
    ]


def test_a_password_with_a_lone_surrogate_gets_an_answer(stores: Stores) -> None:
    """Sign-up and login frames whose password holds JSON "\\ud800" are answered
    ``invalid`` (a new name), ``user_exists`` (a taken one) or ``login_failed``."""
    d = directory(stores, "s1")
    welcome(d.handle(SignUp("a", "alice", PASSWORD), NOW))
    replies = []
    for msg in (
        SignUp("b", "bob", "x"),
        SignUp("c", "alice", "x"),
        LogIn("d", "alice", "x"),
        LogIn("e", "nobody", "x"),
    ):
        frame = encode(msg).replace(b'"password":"x"', b'"password":"pass\\ud800word"')
        request = decode(frame)
        assert isinstance(request, SignUp | LogIn) and "\ud800" in request.password
        reply = d.handle(request, NOW)
        assert isinstance(reply, ErrorReply) and "\ud800" not in reply.detail
        replies.append(reply.code)
    assert ["invalid", "user_exists", "login_failed", "login_failed"] == replies


def test_a_repeated_sign_up_with_the_right_password_logs_in(stores: Stores) -> None:
    """A sign-up retried after a lost reply succeeds for the same account."""
    d = directory(stores, "s1")
    first = welcome(d.handle(SignUp("a", "alice", PASSWORD), NOW))
    again = welcome(d.handle(SignUp("a", "alice", PASSWORD), NOW + 1))
    assert first.user_id == again.user_id


def test_admission_refuses_missing_malformed_unknown_and_expired_tokens(stores: Stores) -> None:
    """No token, a malformed or an expired one: unauthorized; an unknown one: the
    retryable unknown_session."""
    d = Directory("s1", stores["s1"], peers=[], params=CHEAP, ttl=60.0)
    token = welcome(d.handle(SignUp("a", "alice", PASSWORD), NOW)).token
    refusals = [
        d.admit(sync(None), None, NOW),
        d.admit(sync("short"), None, NOW),
        d.admit(sync("A" * 43), None, NOW),
        d.admit(sync(token), None, NOW + 61),
    ]
    codes = [(r.code, r.retryable) if r else None for r in refusals]
    assert [
        ("unauthorized", False),
        ("unauthorized", False),
        ("unknown_session", True),
        ("unauthorized", False),
    ] == codes


def test_the_first_pusher_owns_the_list_and_only_the_owner_deletes(stores: Stores) -> None:
    """Ownership goes to the first admitted push; a delete by anyone else is forbidden."""
    d = directory(stores, "s1")
    alice = welcome(d.handle(SignUp("a", "alice", PASSWORD), NOW))
    bob = welcome(d.handle(SignUp("b", "bob", PASSWORD), NOW))
    state = ShoppingList()
    create = state.rename("dev-a", "Weekend")
    assert d.admit(sync(alice.token), create, NOW) is None
    assert d.admit(sync(bob.token), state.add_item("dev-b", "milk"), NOW) is None
    delete = state.copy().delete("dev-b")
    refused = d.admit(sync(bob.token), delete, NOW)
    assert ("forbidden", None) == (
        refused.code if refused else None,
        d.admit(sync(alice.token), delete, NOW),
    )
    assert (alice.user_id, alice.user_id) == (d.owner(LIST), stores["s1"].owner(LIST))
    lists = d.handle(ListsRequest("l", bob.token), NOW)
    assert isinstance(lists, ListsReply) and () == lists.owned


def test_directories_converge_through_pushes_and_anti_entropy(stores: Stores) -> None:
    """What one server learns reaches the others, and anti-entropy repairs a lost push."""
    dirs = {s: directory(stores, s) for s in stores}
    alice = welcome(dirs["s1"].handle(SignUp("a", "alice", PASSWORD), NOW))
    deliver(dirs, dirs["s1"].take_outgoing(), "s1", NOW)
    bob = welcome(dirs["s2"].handle(SignUp("b", "bob", PASSWORD), NOW))
    dirs["s2"].take_outgoing()  # lost
    assert dirs["s3"].admit(sync(alice.token), ShoppingList(), NOW) is None
    assert "unknown_session" == getattr(dirs["s3"].admit(sync(bob.token), None, NOW), "code", None)
    anti_entropy(dirs, NOW)
    assert 1 == len({d.digest for d in dirs.values()})
    assert dirs["s3"].admit(sync(bob.token), None, NOW) is None
    assert alice.user_id == dirs["s2"].owner(LIST)


def test_a_name_signed_up_on_both_sides_goes_to_the_first_account(stores: Stores) -> None:
    """Two accounts for one name: everywhere the earlier one wins and the loser's
    sessions stop working."""
    dirs = {s: directory(stores, s) for s in stores}
    early = welcome(dirs["s1"].handle(SignUp("a", "carol", PASSWORD), NOW))
    late = welcome(dirs["s2"].handle(SignUp("b", "carol", "other password"), NOW + 5))
    dirs["s1"].take_outgoing()
    dirs["s2"].take_outgoing()
    anti_entropy(dirs, NOW + 6)
    ids = {s: stores[s].account_by_name("carol") for s in stores}
    assert {early.user_id} == {a.user_id for a in ids.values() if a is not None}
    assert 1 == len({d.digest for d in dirs.values()})
    refused = dirs["s2"].admit(sync(late.token), None, NOW + 6)
    assert (None, True) == (dirs["s2"].admit(sync(early.token), None, NOW + 6), refused is not None)


def test_two_owners_of_one_list_settle_on_the_smaller_user_id(stores: Stores) -> None:
    """Concurrent first pushes at two servers: every server picks the same owner."""
    dirs = {s: directory(stores, s) for s in stores}
    a = welcome(dirs["s1"].handle(SignUp("a", "alice", PASSWORD), NOW))
    b = welcome(dirs["s1"].handle(SignUp("b", "bob", PASSWORD), NOW))
    deliver(dirs, dirs["s1"].take_outgoing(), "s1", NOW)
    assert dirs["s1"].admit(sync(a.token), ShoppingList(), NOW) is None
    assert dirs["s2"].admit(sync(b.token), ShoppingList(), NOW) is None
    dirs["s1"].take_outgoing()
    dirs["s2"].take_outgoing()
    anti_entropy(dirs, NOW)
    owners = {s: (dirs[s].owner(LIST), stores[s].owner(LIST)) for s in stores}
    winner = min(a.user_id, b.user_id)
    assert {s: (winner, winner) for s in stores} == owners


def test_a_push_entry_the_store_refuses_is_skipped_and_logged(
    stores: Stores, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An owner the store refuses is skipped with a log line, and the rest of the push is
    merged; nothing escapes from ``receive``."""
    bad = str(uuid.UUID(int=12, version=4))
    store = stores["s1"]
    set_owner = store.set_owner

    def refusing(list_id: str, owner: str) -> None:
        if list_id == bad:
            raise AccessDenied("an owner is a user id (1 to 64 characters)")
        set_owner(list_id, owner)

    monkeypatch.setattr(store, "set_owner", refusing)
    d = directory(stores, "s1")
    push = DirectoryPush("s2", (), (), {bad: "u1", LIST: "u2"})
    with caplog.at_level(logging.WARNING, logger="reference_cluster.cores.directory"):
        out = d.receive("s2", push, NOW)
    assert ([], {LIST: "u2"}, (None, "u2"), True) == (
        out,
        store.owners(),
        (d.owner(bad), d.owner(LIST)),
        f"skipped a bad owner of {bad} from s2" in caplog.text,
    )
