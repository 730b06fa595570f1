"""The servers' directory: sign-up, login, admission of syncs, ownership, and replication
with its race rules, on real server stores and without sockets."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference_cluster.cores.accounts import ScryptParams, hash_password, hash_token
from reference_cluster.cores.directory import Directory, Pending, run_inline
from reference_cluster.cores.limits import Lockout, Rate
from reference_cluster.errors import AccessDenied
from reference_cluster.protocol.effects import Send
from reference_cluster.protocol.messages import (
    AccountDone,
    AccountRequest,
    ChangePassword,
    DeleteAccount,
    DirectoryDigest,
    DirectoryPush,
    ErrorReply,
    ListsReply,
    ListsRequest,
    LogIn,
    LogOut,
    Members,
    MembersReply,
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


def ask(d: Directory, request: AccountRequest, now: float) -> object:
    """The directory's answer, with its hash jobs run here (a server runs them in its pool)."""
    return run_inline(d.handle(request, now), now)


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


def sync(token: str | None, *, list_id: str = LIST, replica: str = "dev1") -> SyncRequest:
    return SyncRequest("r.1", list_id, replica, 0, None, None, token)


def test_sign_up_then_log_in_and_the_token_admits_syncs(stores: Stores) -> None:
    """A sign-up returns a working token; a login returns another; both admit a sync."""
    d = directory(stores, "s1")
    first = welcome(ask(d, SignUp("a", "Alice", PASSWORD, replica="dev1"), NOW))
    second = welcome(ask(d, LogIn("b", "alice", PASSWORD, replica="dev1"), NOW))
    assert ("alice", first.user_id) == (second.name, second.user_id)
    assert first.token != second.token
    assert [None, None] == [d.admit(sync(w.token), None, NOW) for w in (first, second)]


def test_login_failures_and_bad_sign_ups_get_their_codes(stores: Stores) -> None:
    """Wrong password and unknown user fail alike; a taken name or a short password are
    refused with their own codes."""
    d = directory(stores, "s1")
    welcome(ask(d, SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    codes = [
        ask(d, LogIn("b", "alice", "wrong password", replica="dev1"), NOW),
        ask(d, LogIn("c", "nobody", PASSWORD, replica="dev1"), NOW),
        ask(d, SignUp("d", "alice", "another password", replica="dev1"), NOW),
        ask(d, SignUp("e", "bob", "short", replica="dev1"), NOW),
        ask(d, SignUp("f", "1bad name", PASSWORD, replica="dev1"), NOW),
    ]
    assert ["login_failed", "login_failed", "user_exists", "invalid", "invalid"] == [
        r.code if isinstance(r, ErrorReply) else r for r in codes
    ]


def test_a_password_with_a_lone_surrogate_gets_an_answer(stores: Stores) -> None:
    """Sign-up and login frames whose password holds JSON "\\ud800" are answered
    ``invalid`` (a new name), ``user_exists`` (a taken one) or ``login_failed``."""
    d = directory(stores, "s1")
    welcome(ask(d, SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    replies = []
    for msg in (
        SignUp("b", "bob", "x", replica="dev1"),
        SignUp("c", "alice", "x", replica="dev1"),
        LogIn("d", "alice", "x", replica="dev1"),
        LogIn("e", "nobody", "x", replica="dev1"),
    ):
        frame = encode(msg).replace(b'"password":"x"', b'"password":"pass\\ud800word"')
        request = decode(frame)
        assert isinstance(request, SignUp | LogIn) and "\ud800" in request.password
        reply = ask(d, request, NOW)
        assert isinstance(reply, ErrorReply) and "\ud800" not in reply.detail
        replies.append(reply.code)
    assert ["invalid", "user_exists", "login_failed", "login_failed"] == replies


def test_a_repeated_sign_up_with_the_right_password_logs_in(stores: Stores) -> None:
    """A sign-up retried after a lost reply succeeds for the same account."""
    d = directory(stores, "s1")
    first = welcome(ask(d, SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    again = welcome(ask(d, SignUp("a", "alice", PASSWORD, replica="dev1"), NOW + 1))
    assert first.user_id == again.user_id


def test_admission_refuses_missing_malformed_unknown_and_expired_tokens(stores: Stores) -> None:
    """No token, a malformed or an expired one: unauthorized; an unknown one: the
    retryable unknown_session."""
    d = Directory("s1", stores["s1"], peers=[], params=CHEAP, ttl=60.0)
    token = welcome(ask(d, SignUp("a", "alice", PASSWORD, replica="dev1"), NOW)).token
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
    alice = welcome(ask(d, SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    bob = welcome(ask(d, SignUp("b", "bob", PASSWORD, replica="dev1"), NOW))
    state = ShoppingList()
    create = state.rename("dev-a", "Weekend")
    assert d.admit(sync(alice.token), create, NOW) is None
    stranger = d.admit(sync(bob.token), state.add_item("dev-b", "milk"), NOW)
    assert ("forbidden", "not a member") == (
        getattr(stranger, "code", None),
        "not a member" if "not a member" in getattr(stranger, "detail", "") else "",
    )
    shared = ask(d, Members("m", alice.token, LIST, ("bob",), ()), NOW)
    assert isinstance(shared, MembersReply) and ("bob",) == shared.members
    assert d.admit(sync(bob.token), state.add_item("dev-b", "milk"), NOW) is None
    delete = state.copy().delete("dev-b")
    refused = d.admit(sync(bob.token), delete, NOW)
    assert ("forbidden", None) == (
        refused.code if refused else None,
        d.admit(sync(alice.token), delete, NOW),
    )
    assert (alice.user_id, alice.user_id) == (d.owner(LIST), stores["s1"].owner(LIST))
    lists = ask(d, ListsRequest("l", bob.token), NOW)
    assert isinstance(lists, ListsReply) and ((), (LIST,)) == (lists.owned, lists.shared)


def test_directories_converge_through_pushes_and_anti_entropy(stores: Stores) -> None:
    """What one server learns reaches the others, and anti-entropy repairs a lost push."""
    dirs = {s: directory(stores, s) for s in stores}
    alice = welcome(ask(dirs["s1"], SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    deliver(dirs, dirs["s1"].take_outgoing(), "s1", NOW)
    bob = welcome(ask(dirs["s2"], SignUp("b", "bob", PASSWORD, replica="dev1"), NOW))
    dirs["s2"].take_outgoing()  # lost
    assert dirs["s3"].admit(sync(alice.token), ShoppingList(), NOW) is None
    assert "unknown_session" == getattr(dirs["s3"].admit(sync(bob.token), None, NOW), "code", None)
    anti_entropy(dirs, NOW)
    assert 1 == len({d.digest for d in dirs.values()})
    assert bob.user_id == dirs["s3"].authenticate(bob.token, NOW)
    assert alice.user_id == dirs["s2"].owner(LIST)


def test_a_name_signed_up_on_both_sides_goes_to_the_first_account(stores: Stores) -> None:
    """Two accounts for one name: everywhere the earlier one wins and the loser's
    sessions stop working."""
    dirs = {s: directory(stores, s) for s in stores}
    early = welcome(ask(dirs["s1"], SignUp("a", "carol", PASSWORD, replica="dev1"), NOW))
    late = welcome(ask(dirs["s2"], SignUp("b", "carol", "other password", replica="dev1"), NOW + 5))
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
    a = welcome(ask(dirs["s1"], SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    b = welcome(ask(dirs["s1"], SignUp("b", "bob", PASSWORD, replica="dev1"), NOW))
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


# -- hashing off the loop, logout, password change, replica binding, limits, deletion, quota


def test_password_work_is_returned_as_a_hash_job_never_done_inline(stores: Stores) -> None:
    """Sign-up and login answer with a Pending hash job (the shell runs it); resuming it
    with the job's result gives the Welcome."""
    d = directory(stores, "s1")
    pending = d.handle(SignUp("a", "alice", PASSWORD, replica="dev1"), NOW)
    assert isinstance(pending, Pending) and pending.job.encoded is None
    assert isinstance(pending.resume(pending.job.run(), NOW), Welcome)
    login = d.handle(LogIn("b", "alice", PASSWORD, replica="dev1"), NOW)
    assert isinstance(login, Pending) and login.job.encoded is not None
    assert isinstance(login.resume(login.job.run(), NOW), Welcome)


def test_logout_ends_the_session_on_every_server_and_a_stale_copy_cannot_revive_it(
    stores: Stores,
) -> None:
    """After a logout the token is refused everywhere, also after a stale push of the
    session arrives, until the ended-session record expires with the session."""
    dirs = {s: directory(stores, s) for s in stores}
    w = welcome(ask(dirs["s1"], SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    stale = dirs["s1"].take_outgoing()[0].message
    deliver(dirs, stale_sends := [Send("s2", stale), Send("s3", stale)], "s1", NOW)
    done = ask(dirs["s2"], LogOut("b", w.token), NOW)
    deliver(dirs, dirs["s2"].take_outgoing(), "s2", NOW)
    deliver(dirs, stale_sends, "s1", NOW)  # the old session again, late
    codes = [getattr(d.admit(sync(w.token), None, NOW), "code", None) for d in dirs.values()]
    assert (AccountDone("b", "logged_out", 1), ["unauthorized"] * 3) == (done, codes)
    assert 1 == len({d.digest for d in dirs.values()})
    later = NOW + 31 * 24 * 3600
    for d in dirs.values():
        d.start(later - 10)
        d.on_timer(later)
    assert [{}, {}, {}] == [stores[s].revoked() for s in stores]


def test_a_password_change_ends_every_other_session_everywhere(stores: Stores) -> None:
    """The changing session keeps working; others, and a login made with the old password
    at a server that had not heard of the change yet, are refused once it arrives."""
    dirs = {s: directory(stores, s) for s in stores}
    first = welcome(ask(dirs["s1"], SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    deliver(dirs, dirs["s1"].take_outgoing(), "s1", NOW)
    other = welcome(ask(dirs["s2"], LogIn("b", "alice", PASSWORD, replica="dev2"), NOW))
    deliver(dirs, dirs["s2"].take_outgoing(), "s2", NOW)
    done = ask(dirs["s1"], ChangePassword("c", first.token, PASSWORD, "a new password"), NOW)
    change = dirs["s1"].take_outgoing()
    racing = welcome(ask(dirs["s3"], LogIn("d", "alice", PASSWORD, replica="dev3"), NOW))
    dirs["s3"].take_outgoing()
    deliver(dirs, change, "s1", NOW)
    states = {
        name: [
            getattr(d.admit(sync(w.token, replica=r), None, NOW), "code", None)
            for d in dirs.values()
        ]
        for name, w, r in (
            ("first", first, "dev1"),
            ("other", other, "dev2"),
            ("racing", racing, "dev3"),
        )
    }
    assert AccountDone("c", "password_changed", 1) == done
    assert {
        "first": [None] * 3,
        "other": ["unauthorized"] * 3,
        "racing": ["unknown_session", "unknown_session", "unauthorized"],
    } == states
    old = ask(dirs["s3"], LogIn("e", "alice", PASSWORD, replica="dev3"), NOW)
    assert ("login_failed", Welcome) == (
        getattr(old, "code", None),
        type(ask(dirs["s2"], LogIn("f", "alice", "a new password", replica="dev2"), NOW)),
    )


def test_a_wrong_current_password_changes_nothing(stores: Stores) -> None:
    """A password change with the wrong current password is login_failed; the old
    password still logs in."""
    d = directory(stores, "s1")
    w = welcome(ask(d, SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    refused = ask(d, ChangePassword("b", w.token, "not the password", "a new password"), NOW)
    assert ("login_failed", Welcome) == (
        getattr(refused, "code", None),
        type(ask(d, LogIn("c", "alice", PASSWORD, replica="dev1"), NOW)),
    )


def test_a_session_admits_only_the_replica_it_was_opened_for(stores: Stores) -> None:
    """A sync naming another replica than the session's is forbidden; a session opened
    without a replica may pull but not push."""
    d = directory(stores, "s1")
    bound = welcome(ask(d, SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    unbound = welcome(ask(d, LogIn("b", "alice", PASSWORD), NOW))
    delta = ShoppingList().rename("dev1", "Weekend")
    refusals = [
        d.admit(sync(bound.token, replica="dev2"), None, NOW),
        d.admit(sync(unbound.token, replica="dev2"), delta, NOW),
    ]
    assert [("forbidden", True), ("forbidden", True)] == [
        (r.code, "device" in r.detail) if r else None for r in refusals
    ]
    assert [None, None] == [
        d.admit(sync(bound.token), delta, NOW),
        d.admit(sync(unbound.token, replica="dev2"), None, NOW),
    ]
    assert "dev1" == stores["s1"].session(hash_token(bound.token)).replica  # type: ignore[union-attr]


def test_repeated_failed_logins_lock_the_account_and_are_logged_without_passwords(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    """After 5 failures in a row the account is locked (rate_limited, with the wait),
    even for the right password, until the lock-out passes; each failure is logged with
    the name and the source, never the password."""
    d = Directory("s1", stores["s1"], peers=[], params=CHEAP, lockout=Lockout(free=5, base=4.0))
    welcome(ask(d, SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    with caplog.at_level(logging.WARNING, logger="reference_cluster.cores.directory"):
        codes = [
            getattr(
                run_inline(d.handle(LogIn(f"x{i}", "alice", f"guess-{i}!"), NOW, "10.0.0.9"), NOW),
                "code",
                None,
            )
            for i in range(6)
        ]
    locked = ask(d, LogIn("y", "alice", PASSWORD, replica="dev1"), NOW + 1)
    assert ["login_failed"] * 6 + ["rate_limited"] == [*codes, getattr(locked, "code", None)]
    assert "retry after" in getattr(locked, "detail", "")
    assert isinstance(ask(d, LogIn("z", "alice", PASSWORD, replica="dev1"), NOW + 5), Welcome)
    assert "failed login for 'alice' from 10.0.0.9" in caplog.text
    assert "guess-" not in caplog.text


def test_a_server_limits_sign_ups_in_all(stores: Stores) -> None:
    """Past the server's sign-up rate, a sign-up is rate_limited before any hashing."""
    d = Directory("s1", stores["s1"], peers=[], params=CHEAP, signups=Rate(2, 60.0))
    replies = [
        d.handle(SignUp(f"r{i}", f"user{i}", PASSWORD, replica="dev1"), NOW) for i in range(3)
    ]
    assert [Pending, Pending, ErrorReply] == [type(r) for r in replies]
    assert "rate_limited" == getattr(replies[2], "code", None)


def test_a_deleted_account_is_gone_everywhere_its_name_stays_taken_and_its_lists_closed(
    stores: Stores,
) -> None:
    """Deleting an account (with its password) ends its sessions on every server, a stale
    copy of it never comes back, its name cannot be signed up again, and its lists are
    refused to everyone."""
    dirs = {s: directory(stores, s) for s in stores}
    alice = welcome(ask(dirs["s1"], SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    bob = welcome(ask(dirs["s1"], SignUp("b", "bob", PASSWORD, replica="dev2"), NOW))
    assert dirs["s1"].admit(sync(alice.token), ShoppingList().rename("dev1", "A"), NOW) is None
    stale = dirs["s1"].take_outgoing()
    deliver(dirs, stale, "s1", NOW)
    wrong = ask(dirs["s2"], DeleteAccount("c", alice.token, "not the password"), NOW)
    done = ask(dirs["s2"], DeleteAccount("d", alice.token, PASSWORD), NOW)
    deliver(dirs, dirs["s2"].take_outgoing(), "s2", NOW)
    deliver(dirs, stale, "s1", NOW)  # the account and session again, late
    again = ask(dirs["s3"], SignUp("e", "alice", PASSWORD, replica="dev1"), NOW)
    assert ("login_failed", AccountDone("d", "account_deleted", 1)) == (
        getattr(wrong, "code", None),
        done,
    )
    assert (["unauthorized"] * 3, ["forbidden"] * 3, "user_exists") == (
        [getattr(d.admit(sync(alice.token), None, NOW), "code", None) for d in dirs.values()],
        [
            getattr(d.admit(sync(bob.token, replica="dev2"), None, NOW), "code", None)
            for d in dirs.values()
        ],
        getattr(again, "code", None),
    )
    assert [None, None, None] == [stores[s].account_by_name("alice") for s in stores]
    assert 1 == len({d.digest for d in dirs.values()})


def test_a_user_may_own_only_so_many_live_lists(stores: Stores) -> None:
    """Beyond the quota a new list is refused with ``quota``; a deleted list frees its
    place."""
    deleted: set[str] = set()
    d = Directory(
        "s1", stores["s1"], peers=[], params=CHEAP, quota=2, is_deleted=deleted.__contains__
    )
    w = welcome(ask(d, SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    ids = [str(uuid.UUID(int=100 + i, version=4)) for i in range(4)]
    delta = ShoppingList().rename("dev1", "L")
    first = [d.admit(sync(w.token, list_id=i), delta, NOW) for i in ids[:3]]
    deleted.add(ids[0])
    after = d.admit(sync(w.token, list_id=ids[3]), delta, NOW)
    assert [None, None, "quota", None] == [getattr(r, "code", None) for r in [*first, after]]


def test_a_newer_password_version_from_a_peer_wins_an_older_one_never_does(
    stores: Stores,
) -> None:
    """Of two records of one user id, the higher password version wins, whatever the
    order of arrival and whatever their ``created`` claims."""
    d = directory(stores, "s1")
    w = welcome(ask(d, SignUp("a", "alice", PASSWORD, replica="dev1"), NOW))
    account = d.account(w.user_id)
    assert account is not None
    newer = {
        "user_id": w.user_id,
        "name": "alice",
        "password_hash": hash_password("a changed password", params=CHEAP),
        "created": account.created,
        "version": 1,
    }
    older = {**newer, "password_hash": hash_password("an old password", params=CHEAP)}
    del older["version"]
    for wire in (newer, older, {**older, "created": account.created - 50}):
        d.receive("s2", DirectoryPush("s2", (wire,), (), {}), NOW)
    assert [Welcome, ErrorReply, ErrorReply] == [
        type(ask(d, LogIn(r, "alice", p, replica="dev1"), NOW))
        for r, p in (("b", "a changed password"), ("c", "an old password"), ("d", PASSWORD))
    ]
