"""The SQLite stores: what is written is what is read back, in one transaction per write,
through SIGKILL, and garbage on disk is a clear error."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdts import AWORSet, Dot, GCounter
from reference_cluster.cores.accounts import Account, Session
from reference_cluster.errors import (
    AccessDenied,
    InvalidListId,
    ListDeleted,
    StaleState,
    StoreCorrupt,
    StoreError,
    UserExists,
    WrongStateType,
)
from reference_cluster.storage.client_store import StoredList
from reference_cluster.storage.server_store import (
    ClientSession,
    ClientStore,
    ServerStore,
    check_list_id,
)

LIST_A = str(uuid.UUID(int=1))
LIST_B = str(uuid.UUID(int=2))

# Every example here writes durably (fsync); half the profile's examples is plenty.
on_disk = settings(max_examples=max(10, settings().max_examples // 2))

# One step of a multi-replica history: (replica, add?, element).
steps = st.lists(st.tuples(st.sampled_from("abc"), st.booleans(), st.integers(0, 6)), max_size=25)


def deltas_of(history: list[tuple[str, bool, int]]) -> tuple[list[AWORSet], AWORSet]:
    """Replay a history on three replicas that share every delta at once; return the
    deltas in order and the join of all of them."""
    replicas = {r: AWORSet() for r in "abc"}
    out: list[AWORSet] = []
    for replica, add, element in history:
        s = replicas[replica]
        d = s.add(replica, element) if add else s.remove(replica, element)
        out.append(d)
        for other in replicas.values():
            other.join(d)
    total = AWORSet()
    for d in out:
        total.join(d)
    return out, total


@contextlib.contextmanager
def temp_dir() -> Iterator[Path]:
    """A fresh directory per Hypothesis example (tmp_path is per test)."""
    with tempfile.TemporaryDirectory(prefix="store-test-") as d:
        yield Path(d)


# -- server store: lists ------------------------------------------------------------------


@on_disk
@given(steps)
def test_applied_deltas_read_back_as_their_join_after_reopening(
    history: list[tuple[str, bool, int]],
) -> None:
    """Deltas applied one per transaction read back, after each and after reopening, as
    their join."""
    deltas, total = deltas_of(history)
    running, expected_digests = AWORSet(), []
    for delta in deltas:
        running.join(delta)
        expected_digests.append(running.digest())
    with temp_dir() as d:
        with ServerStore(d / "s.db", AWORSet) as store:
            digests = []
            for delta in deltas:
                store.apply_delta(LIST_A, delta)
                digests.append(store.load(LIST_A).digest())  # type: ignore[union-attr]
        with ServerStore(d / "s.db", AWORSet) as store:
            loaded = store.load(LIST_A)
            stored_digests = store.digests()
    assert expected_digests == digests
    if deltas:
        assert (total, {LIST_A: total.digest()}) == (loaded, stored_digests)
    else:
        assert (None, {}) == (loaded, stored_digests)


@on_disk
@given(steps, st.lists(st.sampled_from([LIST_A, LIST_B]), min_size=25, max_size=25))
def test_group_commit_equals_one_transaction_per_delta(
    history: list[tuple[str, bool, int]], targets: list[str]
) -> None:
    """apply_many over several lists (repeats included) stores what single applies store."""
    deltas, _ = deltas_of(history)
    pairs = list(zip(targets, deltas, strict=False))
    with (
        temp_dir() as d,
        ServerStore(d / "one.db", AWORSet) as one,
        ServerStore(d / "many.db", AWORSet) as many,
    ):
        for list_id, delta in pairs:
            one.apply_delta(list_id, delta)
        returned = many.apply_many(pairs)
        assert (one.digests(), {k for k, _ in pairs}) == (many.digests(), returned)
        assert [one.load(x) for x in (LIST_A, LIST_B)] == [many.load(x) for x in (LIST_A, LIST_B)]


def test_group_commit_with_a_bad_pair_writes_nothing(tmp_path: Path) -> None:
    """A wrong-typed delta anywhere in a group fails the whole group before any write."""
    s = AWORSet()
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        with pytest.raises(WrongStateType, match="holds AWORSet states, got a delta of type"):
            store.apply_many([(LIST_A, s.add("r", 1)), (LIST_B, GCounter())])  # type: ignore[list-item]
        assert [] == store.list_ids()


def test_loaded_state_is_a_copy(tmp_path: Path) -> None:
    """Changing a loaded state does not change the store's view of the list."""
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        store.apply_delta(LIST_A, AWORSet().add("r", "milk"))
        loaded = store.load(LIST_A)
        assert loaded is not None
        loaded.add("x", "rogue")
        assert frozenset({"milk"}) == store.load(LIST_A).value  # type: ignore[union-attr]


def test_a_second_connection_sees_writes_of_the_first(tmp_path: Path) -> None:
    """Two store objects on one file never serve a stale cached state."""
    with (
        ServerStore(tmp_path / "s.db", AWORSet) as one,
        ServerStore(tmp_path / "s.db", AWORSet) as two,
    ):
        one.apply_delta(LIST_A, AWORSet().add("r", "milk"))
        assert frozenset({"milk"}) == two.load(LIST_A).value  # type: ignore[union-attr]
        two.apply_delta(LIST_A, AWORSet().add("s", "eggs"))
        one.apply_delta(LIST_A, AWORSet().add("t", "tea"))
        assert frozenset({"milk", "eggs", "tea"}) == two.load(LIST_A).value  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad",
    ["", "x", str(uuid.UUID(int=2**128 - 1)).upper(), "{" + LIST_A + "}", 42, None, LIST_A + " "],
)
def test_list_ids_must_be_canonical_uuids(tmp_path: Path, bad: object) -> None:
    """Anything but a lower-case hyphenated UUID is refused as a list id."""
    with (
        ServerStore(tmp_path / "s.db", AWORSet) as store,
        pytest.raises(InvalidListId, match="a list id is a UUID"),
    ):
        store.apply_delta(bad, AWORSet())  # type: ignore[arg-type]
    assert LIST_A == check_list_id(LIST_A)


# -- server store: owners and deletion ----------------------------------------------------


def test_only_the_owner_deletes_and_a_deleted_list_stays_deleted(tmp_path: Path) -> None:
    """Non-owners cannot delete; after deletion deltas are refused or skipped, and the
    tombstone survives reopening."""
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        assert store.create_list(LIST_A, "alice") is True
        assert store.create_list(LIST_A, "alice") is False
        with pytest.raises(AccessDenied):
            store.create_list(LIST_A, "bob")
        store.apply_delta(LIST_A, AWORSet().add("r", "milk"))
        with pytest.raises(AccessDenied, match="only the owner"):
            store.delete_list(LIST_A, "bob")
        assert "alice" == store.owner(LIST_A)
        store.delete_list(LIST_A, "alice")
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        with pytest.raises(ListDeleted):
            store.apply_delta(LIST_A, AWORSet().add("r", "eggs"))
        assert {LIST_B} == store.apply_many(
            [(LIST_A, AWORSet().add("r", 1)), (LIST_B, AWORSet().add("r", 1))]
        )
        assert {LIST_B: AWORSet().add("r", 1).digest()} == store.digests()
        assert (None, True, [LIST_A], [LIST_B]) == (
            store.load(LIST_A),
            store.is_deleted(LIST_A),
            store.list_ids(deleted=True),
            store.list_ids(),
        )


def test_load_all_and_start_count_survive_reopening(tmp_path: Path) -> None:
    """load_all returns every live list, empty ones included; the start count grows by
    one per start."""
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        store.apply_delta(LIST_A, AWORSet())
        store.apply_delta(LIST_B, AWORSet().add("r", "milk"))
        assert 0 == store.start_incarnation()
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        assert 1 == store.start_incarnation()
        assert {LIST_A: AWORSet(), LIST_B: AWORSet().add("r", "milk")} == store.load_all()


def test_owner_is_recorded_once_and_lists_by_owner(tmp_path: Path) -> None:
    """The first owner given sticks; a list with no owner cannot be deleted by anyone."""
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        store.apply_delta(LIST_A, AWORSet())
        assert store.owner(LIST_A) is None
        with pytest.raises(AccessDenied):
            store.delete_list(LIST_A, "alice")
        store.apply_delta(LIST_A, AWORSet(), owner="alice")
        store.apply_delta(LIST_B, AWORSet(), owner="bob")
        with pytest.raises(AccessDenied):
            store.apply_delta(LIST_A, AWORSet(), owner="bob")
        assert ([LIST_A], [LIST_B]) == (store.owned_by("alice"), store.owned_by("bob"))
        store.tombstone(LIST_B)
        assert [] == store.owned_by("bob")


# -- server store: accounts and sessions --------------------------------------------------


def test_accounts_and_sessions_round_trip(tmp_path: Path) -> None:
    """Accounts are unique by name; sessions are found by token hash and purged by time."""
    alice = Account("u-1", "alice", "scrypt$2$1$1$AAAAAAAAAAA$" + "A" * 43, 10.0)
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        store.add_account(alice)
        with pytest.raises(UserExists, match="'alice' is taken"):
            store.add_account(Account("u-2", "alice", "h", 11.0))
        store.add_session(Session("t1", "u-1", 100.0))
        store.add_session(Session("t2", "u-1", 200.0))
        assert 1 == store.purge_sessions(150.0)
        store.delete_session("unknown")
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        assert (alice, alice, None, [alice]) == (
            store.account_by_name("alice"),
            store.account("u-1"),
            store.account_by_name("bob"),
            store.accounts(),
        )
        assert (None, Session("t2", "u-1", 200.0)) == (store.session("t1"), store.session("t2"))


def test_accounts_from_peers_are_imported_idempotently(tmp_path: Path) -> None:
    """put_account adds a new account once, accepts the same one again, and refuses a
    different account under a known name or user id."""
    alice = Account("u-1", "alice", "hash-a", 10.0)
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        assert (True, False) == (store.put_account(alice), store.put_account(alice))
        for clash in (Account("u-2", "alice", "hash-b", 11.0), Account("u-1", "bob", "h", 1.0)):
            with pytest.raises(UserExists, match="another account"):
                store.put_account(clash)
        assert [alice] == store.accounts()


# -- garbage on disk ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"type": "GCounter", "v": 1, "n": {}}', "not a AWORSet"),
        ("[1, 2]", "not a AWORSet"),
        ("[" * 5000 + "]" * 5000, "not valid JSON"),
        (b"\x80\x81", "expected JSON text"),
        (7, "not a AWORSet"),  # TEXT affinity stores the number as "7"
    ],
)
def test_a_garbage_state_row_is_a_clear_error(tmp_path: Path, stored: object, message: str) -> None:
    """A state column that is not a valid encoding is set aside on load with a reason
    saying what is wrong, the list loads empty, and a later write starts it from its
    delta."""
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        store.apply_delta(LIST_A, AWORSet().add("r", 1))
    with sqlite3.connect(tmp_path / "s.db") as raw:
        raw.execute("UPDATE lists SET state = ?", (stored,))
    later = AWORSet().add("r", 2)
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        assert AWORSet() == store.load(LIST_A)
        (quarantined,) = store.quarantined()
        assert (LIST_A, True) == (quarantined.list_id, message in quarantined.reason)
        store.apply_delta(LIST_A, later)
        assert later == store.load(LIST_A)


@on_disk
@given(st.text(max_size=60) | st.binary(max_size=60))
def test_any_bytes_in_a_state_row_load_as_a_state(stored: str | bytes) -> None:
    """Whatever sits in a state row, loading gives a state (empty, and the row set aside,
    if it is damaged), never an exception, and digests() agrees with it."""
    with temp_dir() as d:
        with ServerStore(d / "s.db", AWORSet) as store:
            store.apply_delta(LIST_A, AWORSet())
        with sqlite3.connect(d / "s.db") as raw:
            raw.execute("UPDATE lists SET state = ?", (stored,))
        with ServerStore(d / "s.db", AWORSet) as store:
            loaded = store.load(LIST_A)
            assert isinstance(loaded, AWORSet)
            assert {LIST_A: loaded.digest()} == store.digests()


def test_files_that_are_not_our_store_are_refused(tmp_path: Path) -> None:
    """A non-database, another program's database, the other kind of store and a newer
    schema each raise StoreError naming the file."""
    (tmp_path / "junk.db").write_bytes(b"\x00garbage" * 1000)
    with sqlite3.connect(tmp_path / "other.db") as raw:
        raw.execute("CREATE TABLE t (x)")
    ClientStore(tmp_path / "client.db", AWORSet).close()
    ServerStore(tmp_path / "newer.db", AWORSet).close()
    with sqlite3.connect(tmp_path / "newer.db") as raw:
        raw.execute("PRAGMA user_version = 99")
    cases = [
        ("junk.db", "not a database"),
        ("other.db", "not a server store"),
        ("client.db", "not a server store"),
        ("newer.db", "schema version 99"),
    ]
    for name, message in cases:
        with pytest.raises(StoreError, match=message) as info:
            ServerStore(tmp_path / name, AWORSet)
        assert name in str(info.value)


def test_a_bad_session_row_is_a_clear_error(tmp_path: Path) -> None:
    """Wrongly typed account and session columns raise StoreCorrupt."""
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        store.add_account(Account("u-1", "alice", "h", 1.0))
        store.add_session(Session("t", "u-1", 5.0))
    with sqlite3.connect(tmp_path / "s.db") as raw:
        raw.execute("UPDATE accounts SET password_hash = x'0001'")
        raw.execute("UPDATE sessions SET expires = 'soon'")
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        with pytest.raises(StoreCorrupt, match="table accounts"):
            store.account_by_name("alice")
        with pytest.raises(StoreCorrupt, match="table sessions"):
            store.session("t")


# -- client store -------------------------------------------------------------------------


def test_replica_id_is_made_once_and_kept(tmp_path: Path) -> None:
    """The replica id comes from the factory on creation only, then from the file."""
    made: list[str] = []

    def factory() -> str:
        made.append(f"dev-{len(made)}")
        return made[-1]

    with ClientStore(tmp_path / "c.db", AWORSet, new_replica_id=factory) as store:
        first = store.replica_id
    with ClientStore(tmp_path / "c.db", AWORSet, new_replica_id=factory) as store:
        assert (["dev-0"], "dev-0", "dev-0") == (made, first, store.replica_id)
    with ClientStore(tmp_path / "d.db", AWORSet) as a, ClientStore(tmp_path / "e.db", AWORSet) as b:
        assert a.replica_id != b.replica_id


def test_edits_queue_deltas_and_acks_drop_them_by_sequence(tmp_path: Path) -> None:
    """Each edit is queued with a fresh sequence number; acks drop up to a number, and
    numbers are never reused, even after the queue emptied and the store reopened."""
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        d1, s1 = store.edit(LIST_A, lambda s, r: s.add(r, "milk"))
        d2, s2 = store.edit(LIST_A, lambda s, r: s.add(r, "eggs"))
        _, s3 = store.edit(LIST_B, lambda s, r: s.add(r, "tea"))
        assert ([(1, d1), (2, d2)], [LIST_A, LIST_B]) == (
            store.pending(LIST_A),
            store.pending_lists(),
        )
        assert (1, 2, 1) == (s1, s2, s3)
        assert 1 == store.ack(LIST_A, 1)
        assert 0 == store.ack(LIST_A, 1)
        assert 1 == store.ack(LIST_A, 5)
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        _, s4 = store.edit(LIST_A, lambda s, r: s.remove(r, "milk"))
        assert (3, [LIST_A, LIST_B]) == (s4, store.list_ids())
        assert frozenset({"eggs"}) == store.load(LIST_A).value  # type: ignore[union-attr]


def test_a_failed_edit_writes_nothing(tmp_path: Path) -> None:
    """A mutator that raises (after touching the state) leaves disk and cache as before."""

    def half_edit(s: AWORSet, r: str) -> AWORSet:
        s.add(r, "sneaky")
        raise ValueError("boom")

    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        store.edit(LIST_A, lambda s, r: s.add(r, "milk"))
        with pytest.raises(ValueError, match="boom"):
            store.edit(LIST_A, half_edit)
        with pytest.raises(WrongStateType):
            store.edit(LIST_A, lambda s, r: GCounter())  # type: ignore[arg-type,return-value]
        assert (frozenset({"milk"}), 1) == (
            store.load(LIST_A).value,  # type: ignore[union-attr]
            len(store.pending(LIST_A)),
        )


def test_save_edit_queues_under_the_callers_sequence_number(tmp_path: Path) -> None:
    """save_edit joins the delta and queues it under the given number; a used number is
    refused; saved() gives what a client core starts from after reopening."""
    core_state = AWORSet()
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        replica = store.replica_id
        d1 = core_state.add(replica, "milk")
        store.save_edit(LIST_A, 1, d1)
        d2 = core_state.add(replica, "eggs")
        store.save_edit(LIST_A, 5, d2)
        with pytest.raises(StaleState, match="sequence number 5 is already used"):
            store.save_edit(LIST_A, 5, core_state.add(replica, "tea"))
        assert (1, 6) == (store.next_seq(LIST_B), store.next_seq(LIST_A))
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        store.ack(LIST_A, 1)
        saved = store.saved()
        assert ([LIST_A], StoredList) == (list(saved), type(saved[LIST_A]))
        assert (frozenset({"milk", "eggs"}), ((5, d2),), 6) == (
            saved[LIST_A].state.value,
            saved[LIST_A].queue,
            saved[LIST_A].next_seq,
        )


def test_merge_joins_remote_state_durably(tmp_path: Path) -> None:
    """A merged remote delta is part of the local state after reopening, queue untouched."""
    remote = AWORSet()
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        store.edit(LIST_A, lambda s, r: s.add(r, "milk"))
        merged = store.merge(LIST_A, remote.add("server", "eggs"))
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        assert (frozenset({"milk", "eggs"}), merged, 1) == (
            merged.value,
            store.load(LIST_A),
            len(store.pending(LIST_A)),
        )
        store.forget(LIST_A)
        assert (None, []) == (store.load(LIST_A), store.pending_lists())


def test_a_forgotten_list_keeps_its_dots_and_comes_back_as_it_was(tmp_path: Path) -> None:
    """Forgetting hides a list but keeps its state, queue and counters; opening it again
    (after reopening the store) brings them back, so the next edit takes a fresh dot."""
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        d1, _ = store.edit(LIST_A, lambda s, r: s.add(r, "milk"))
        store.edit(LIST_A, lambda s, r: s.add(r, "eggs"))
        store.ack(LIST_A, 1)
        before = store.load(LIST_A)
        store.forget(LIST_A)
        assert (None, [], [], {}, []) == (
            store.load(LIST_A),
            store.list_ids(),
            store.pending_lists(),
            store.saved(),
            store.pending(LIST_A),
        )
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        replica = store.replica_id
        assert (False, before, 3) == (
            store.add_list(LIST_A),
            store.load(LIST_A),
            store.next_seq(LIST_A),
        )
        assert [2] == [seq for seq, _ in store.pending(LIST_A)]
        delta, seq = store.edit(LIST_A, lambda s, r: s.add(r, "tea"))
        assert ([Dot(replica, 3)], 3) == (list(delta.context.dots()), seq)
        assert frozenset({"milk", "eggs", "tea"}) == store.load(LIST_A).value  # type: ignore[union-attr]
    assert [Dot(replica, 1)] == list(d1.context.dots())


def test_a_list_never_edited_here_is_forgotten_outright(tmp_path: Path) -> None:
    """A list this device only pulled holds none of its dots: forgetting deletes it, and
    opening it again starts from nothing."""
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        store.merge(LIST_A, AWORSet().add("server", "milk"))
        store.forget(LIST_A)
        assert (False, True, AWORSet()) == (
            store.restore(LIST_A),
            store.add_list(LIST_A),
            store.load(LIST_A),
        )


def test_a_store_made_before_the_forgotten_table_still_opens_and_forgets(
    tmp_path: Path,
) -> None:
    """A client store without the forgotten-lists table (as older versions wrote it)
    opens, gains the table, and forgets and brings back a list."""
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        store.edit(LIST_A, lambda s, r: s.add(r, "milk"))
    with sqlite3.connect(tmp_path / "c.db") as raw:
        raw.execute("DROP TABLE forgotten")
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        store.forget(LIST_A)
        assert ([], True, [LIST_A], 2) == (
            store.list_ids(),
            store.restore(LIST_A),
            store.list_ids(),
            store.next_seq(LIST_A),
        )


def test_session_round_trip_and_logout(tmp_path: Path) -> None:
    """The saved login reads back after reopening and is gone after clear_session."""
    login = ClientSession("alice", "u-1", "token-abc", 99.5)
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        assert store.session() is None
        store.set_session(login)
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        assert login == store.session()
        store.clear_session()
        assert store.session() is None


def test_a_garbage_queued_delta_is_a_clear_error(tmp_path: Path) -> None:
    """A queued delta that does not decode raises StoreCorrupt naming the outbox row."""
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        store.edit(LIST_A, lambda s, r: s.add(r, "milk"))
    with sqlite3.connect(tmp_path / "c.db") as raw:
        raw.execute('UPDATE outbox SET delta = \'{"type": "AWORSet"}\'')
    with (
        ClientStore(tmp_path / "c.db", AWORSet) as store,
        pytest.raises(StoreCorrupt, match="table outbox"),
    ):
        store.pending(LIST_A)


# -- SIGKILL in the middle of a write loop ------------------------------------------------

_SERVER_WRITER = """
import sys
from crdts import AWORSet
from reference_cluster.storage.server_store import ServerStore
store = ServerStore(sys.argv[1], AWORSet)
writer = AWORSet()
for i in range(int(sys.argv[3])):
    store.apply_delta(sys.argv[2], writer.add("w", i))
    print(i, flush=True)
"""

_CLIENT_WRITER = """
import sys
from crdts import AWORSet
from reference_cluster.storage.server_store import ClientStore
store = ClientStore(sys.argv[1], AWORSet)
for i in range(int(sys.argv[3])):
    _, seq = store.edit(sys.argv[2], lambda s, r: s.add(r, i))
    print(i, seq, flush=True)
"""


def run_until_killed(code: str, db: Path, after_lines: int) -> list[str]:
    """Run a writer child, SIGKILL it (by pid) once it reported ``after_lines`` commits,
    and return every line it printed (each line is a commit that returned)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(db), LIST_A, "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    out = b""
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 60.0
            while out.count(b"\n") < after_lines and time.monotonic() < deadline:
                if sel.select(timeout=0.5):
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    out += chunk
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        rest, err = proc.communicate(timeout=30.0)
    assert -signal.SIGKILL == proc.returncode, err.decode(errors="replace")[-2000:]
    lines = (out + rest).decode().splitlines()
    assert len(lines) >= after_lines
    return lines


def test_a_server_store_killed_mid_loop_keeps_every_returned_commit(tmp_path: Path) -> None:
    """After SIGKILL during a loop of applies, every apply that returned is on disk."""
    lines = run_until_killed(_SERVER_WRITER, tmp_path / "s.db", after_lines=150)
    acknowledged = {int(line) for line in lines}
    with ServerStore(tmp_path / "s.db", AWORSet) as store:
        state = store.load(LIST_A)
        assert state is not None
        assert acknowledged <= state.value
        assert store.digests()[LIST_A] == state.digest()


def test_a_client_store_killed_mid_loop_keeps_edits_and_never_reuses_a_dot(
    tmp_path: Path,
) -> None:
    """After SIGKILL during a loop of edits, every returned edit is in the state and the
    queue, and the next edit takes a dot the state has never seen."""
    lines = run_until_killed(_CLIENT_WRITER, tmp_path / "c.db", after_lines=150)
    acknowledged = {int(line.split()[0]) for line in lines}
    seqs = {int(line.split()[1]) for line in lines}
    with ClientStore(tmp_path / "c.db", AWORSet) as store:
        state = store.load(LIST_A)
        assert state is not None
        assert acknowledged <= state.value
        assert seqs <= {seq for seq, _ in store.pending(LIST_A)}
        delta, seq = store.edit(LIST_A, lambda s, r: s.add(r, "after restart"))
        (new_dot,) = delta.dots_of("after restart")
        assert not state.context.contains(new_dot)
        assert seq > max(seqs)
