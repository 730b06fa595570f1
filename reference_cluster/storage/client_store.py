"""A user's lists on one device, the deltas not yet acknowledged, and the session.

Theory of operation
-------------------
Rule 1 (durable before sent). An edit is written (logged delta and queued delta, one
durable transaction) before the client sends it; an edit made offline waits in the queue
across restarts until a server acknowledges it.

Rule 2 (no dot is ever reused). An edit logs its delta, which holds the new dot, in the
same transaction as the queued delta (the list's state is its stored base joined with its
log, :mod:`reference_cluster.storage.sqlite` Rules 6 and 7). After a restart the state
read back knows every dot the device ever created, so the next edit takes a fresh one.
The device's replica id is generated once and kept in the store.

Rule 3 (sequence numbers are never reused). Each list has its own counter of queued
deltas, kept in the list's row, so an acknowledgement by sequence number can never drop a
newer delta, even after the queue emptied.

Rule 4 (forgetting keeps the dots). A forgotten list is only marked as forgotten (table
``forgotten``): it leaves :meth:`~ClientStore.list_ids`, :meth:`~ClientStore.saved`,
:meth:`~ClientStore.load` and the queue's readers, but its state, its queued deltas and
its sequence counter stay on disk, the only record of the dots this device issued for it.
Opening or editing the same id again (anything that goes through ``_ensure``) brings it
back as it was, so its next edit continues the dots instead of issuing ``(device, 1)``
again, which a server already holds and would acknowledge without applying. A list this
device never edited holds none of its dots and is deleted outright.

Rule 5 (a damaged list is left alone). A list whose stored state, logged deltas or queued
deltas do not decode (or are no longer text, or a logged delta no longer matches its
digest) is left out of :meth:`~ClientStore.saved`, so the device
starts and every other list works; :meth:`~ClientStore.damaged` names each such list with
what is wrong. A write to a list whose state does not decode raises
:class:`~reference_cluster.errors.StoreCorrupt` naming the list, before anything is
written. Its rows stay on disk as they are. The device store is not quarantined and
refilled the way a server's is: its state is the only record of the dots this device
issued and of edits no server has acknowledged, and starting the list again from an empty
state would reuse dots (Rule 2), which servers take for edits they already hold.

The general rules of the stores (durability, decoding, the cache, the delta log) are in
:mod:`reference_cluster.storage.sqlite`. Opening the store decodes nothing; a list is
decoded the first time it is read or written, and kept decoded (Rule 3 there), so an
edit of a long list costs its delta.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable
from typing import Generic

import attrs

from reference_cluster.errors import StaleState, StoreCorrupt
from reference_cluster.storage.sqlite import LogRow, S, SqliteStore, check_list_id, encode

__all__ = ["ClientSession", "ClientStore", "StoredList"]

log = logging.getLogger(__name__)

_CLIENT_APP_ID = 0x53484C43  # "SHLC"
_MAX_REPLICA_ID = 64

_CLIENT_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE lists (
    list_id  TEXT PRIMARY KEY,
    state    TEXT NOT NULL,
    next_seq INTEGER NOT NULL
);
CREATE TABLE outbox (
    list_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    delta   TEXT NOT NULL,
    PRIMARY KEY (list_id, seq)
);
CREATE TABLE session (
    slot      INTEGER PRIMARY KEY CHECK (slot = 1),
    user_name TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    token     TEXT NOT NULL,
    expires   REAL NOT NULL
);
"""

# Added after schema version 1 shipped, without a version change: an older program ignores
# the table (and sees a forgotten list as present, which reuses no dot). Every open creates
# it if missing, so stores made before it keep working.
_FORGOTTEN_TABLE = """
CREATE TABLE IF NOT EXISTS forgotten (
    list_id TEXT PRIMARY KEY
)
"""

# Added the same way: what the device knows about who owns its lists (``mine``: lists
# created here, or that the cluster said the user owns; ownership never changes), and the
# lists the user left on this device (``left``: not opened again by itself, even if the
# user owns them, until the user opens one by its id).
_NOTE_TABLES = """
CREATE TABLE IF NOT EXISTS mine (
    list_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS left_lists (
    list_id TEXT PRIMARY KEY
)
"""

_CLIENT_SCHEMA += _FORGOTTEN_TABLE + ";" + _NOTE_TABLES + ";"

_LIVE = "list_id NOT IN (SELECT list_id FROM forgotten)"
# States and deltas are read as bytes with their storage class: text that is no longer
# UTF-8 is then a StoreCorrupt naming the list (Rule 5), not a driver error.
_RAW_STATE = "CAST(state AS BLOB), typeof(state)"
_RAW_DELTA = "CAST(delta AS BLOB), typeof(delta)"


def _text_of(raw: bytes | None, kind: str) -> object:
    """The stored text, or what to report if it is not ASCII text (canonical JSON is)."""
    if kind != "text" or raw is None:
        return raw
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return raw  # _decode reports "expected JSON text, got bytes"


@attrs.frozen
class StoredList(Generic[S]):
    """One list as the device's store holds it: the state, the queued deltas ``(seq,
    delta)`` in order, and the sequence number of the next edit."""

    state: S
    queue: tuple[tuple[int, S], ...]
    next_seq: int


@attrs.frozen
class ClientSession:
    """The login a device keeps: who, the token (in clear: the device needs it), and when
    it expires."""

    user_name: str
    user_id: str
    token: str = attrs.field(repr=False)
    expires: float


def _random_replica_id() -> str:
    return secrets.token_hex(8)


class ClientStore(SqliteStore[S]):
    """One user's lists on one device, the deltas not yet acknowledged, and the session.

    Args:
        path: the SQLite file (created if missing).
        state_type: the class of the stored lists.
        new_replica_id: makes the device's replica id the first time the file is created
            (16 random hex digits by default); later opens read it back.

    Raises:
        StoreError: the file is not a client store of this version, or cannot be opened.
    """

    _APP_ID = _CLIENT_APP_ID
    _SCHEMA = _CLIENT_SCHEMA
    _KIND = "client"

    def __init__(
        self,
        path: str | os.PathLike[str],
        state_type: type[S],
        *,
        new_replica_id: Callable[[], str] = _random_replica_id,
    ) -> None:
        self._new_replica_id = new_replica_id
        super().__init__(path, state_type)
        with self._errors("read"):
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'replica'").fetchone()
        if row is None or not _valid_replica(row[0]):
            raise StoreCorrupt(f"{self.path}: table meta: missing or invalid replica id")
        self._replica: str = row[0]

    def _init_rows(self) -> None:
        self._conn.execute(_FORGOTTEN_TABLE)
        self._execute_all(_NOTE_TABLES)
        if self._conn.execute("SELECT 1 FROM meta WHERE key = 'replica'").fetchone() is None:
            replica = self._new_replica_id()
            if not _valid_replica(replica):
                raise ValueError(f"a replica id is 1 to {_MAX_REPLICA_ID} characters")
            self._conn.execute("INSERT INTO meta (key, value) VALUES ('replica', ?)", (replica,))

    @property
    def replica_id(self) -> str:
        """This device's replica id (made once, kept forever)."""
        return self._replica

    # -- lists --------------------------------------------------------------------------

    def add_list(self, list_id: str) -> bool:
        """Start tracking a list (a new one, or one shared by its id; a forgotten one
        comes back as it was); True if new."""
        check_list_id(list_id)
        with self._transaction("add list") as conn:
            return self._ensure(conn, list_id)

    def _ensure(self, conn: sqlite3.Connection, list_id: str) -> bool:
        """Make sure the list is on the device: bring it back if it was forgotten (its
        state, queue and sequence counter), or create it empty; True if created."""
        conn.execute("DELETE FROM forgotten WHERE list_id = ?", (list_id,))
        text = encode(self._state_type())
        cursor = conn.execute(
            "INSERT OR IGNORE INTO lists (list_id, state, next_seq, base_bytes) "
            "VALUES (?, ?, 1, ?)",
            (list_id, text, len(text)),
        )
        return cursor.rowcount == 1

    def list_ids(self) -> list[str]:
        """The ids of the lists on this device (not the forgotten ones), sorted."""
        with self._errors("read"):
            rows = self._conn.execute(
                f"SELECT list_id FROM lists WHERE {_LIVE} ORDER BY list_id"
            ).fetchall()
        for (value,) in rows:
            if not isinstance(value, str):
                raise StoreCorrupt(f"{self.path}: table lists: a list id is not text")
        return [r[0] for r in rows]

    def load(self, list_id: str) -> S | None:
        """A copy of the local state of the list, or None if it is not on this device (or
        forgotten)."""
        check_list_id(list_id)
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT 1 FROM lists WHERE list_id = ? AND {_LIVE}", (list_id,)
            ).fetchone()
            return None if row is None else self._logged_state(conn, list_id).copy()

    def edit(self, list_id: str, mutate: Callable[[S, str], S]) -> tuple[S, int]:
        """Apply a local edit durably: ``mutate(state, replica_id)`` changes the stored
        state in place and returns the delta (``lambda s, r: s.add(r, "milk")``).

        The delta is logged and queued in one transaction (the stored state is not
        rewritten); the list is created if new.

        Returns:
            ``(delta, seq)``: the delta to send and its sequence number in the queue.

        Raises:
            Whatever ``mutate`` raises (nothing is written then). WrongStateType: ``mutate``
            returned something else than a delta of the store's type.
        """
        check_list_id(list_id)
        with self._transaction("edit", (list_id,)) as conn:
            self._ensure(conn, list_id)
            state = self._logged_state(conn, list_id)
            delta = self._check_state(mutate(state, self._replica), "delta returned by mutate")
            seq = self._write_edit(conn, list_id, delta)
        return delta.copy(), seq

    def _logged_state(self, conn: sqlite3.Connection, list_id: str) -> S:
        """The list's decoded state (cached: base joined with log), which the caller may
        change in place inside a write transaction that names the list as touched.

        Raises:
            StoreCorrupt: the base or a log row is damaged (Rule 5).
        """
        state = self._cache.get(list_id)
        if state is None:
            row = conn.execute(
                f"SELECT {_RAW_STATE} FROM lists WHERE list_id = ?", (list_id,)
            ).fetchone()
            base = self._decode("lists", list_id, "state", _text_of(*row))

            def damaged(log_row: LogRow, reason: str) -> None:
                raise StoreCorrupt(
                    f"{self.path}: table list_log, list {list_id!r}, row {log_row.seq}: {reason}"
                )

            state = self._replay(base, self._log_of(conn, list_id), damaged)
            self._cache[list_id] = state
        return state

    def _write_edit(
        self, conn: sqlite3.Connection, list_id: str, delta: S, seq: int | None = None
    ) -> int:
        """Log and queue ``delta``, already joined into the cached state, under ``seq``
        (default: the list's next sequence number); return the sequence number used."""
        if seq is None:
            seq = self._next_seq(conn, list_id)
        conn.execute("UPDATE lists SET next_seq = ? WHERE list_id = ?", (seq + 1, list_id))
        conn.execute(
            "INSERT INTO outbox (list_id, seq, delta) VALUES (?, ?, ?)",
            (list_id, seq, encode(delta)),
        )
        self._append(conn, list_id, [delta])
        return seq

    def save_edit(self, list_id: str, seq: int, delta: S) -> None:
        """Durably join a local edit's ``delta`` into the list and queue it under ``seq``
        (chosen by the caller, a client core), in one transaction; the list is created if
        new. This is the shell's side of a core's ``SaveEdit`` effect.

        Raises:
            StaleState: ``seq`` is below the list's next sequence number (already used);
            nothing is written. WrongStateType: ``delta`` is of another type.
        """
        check_list_id(list_id)
        self._check_state(delta)
        if type(seq) is not int or seq < 1:
            raise TypeError(f"a sequence number is a positive int, got {seq!r}")
        with self._transaction("edit", (list_id,)) as conn:
            self._ensure(conn, list_id)
            next_seq = self._next_seq(conn, list_id)
            if seq < next_seq:
                raise StaleState(
                    f"list {list_id}: sequence number {seq} is already used (next is {next_seq})"
                )
            self._logged_state(conn, list_id).join(delta)
            self._write_edit(conn, list_id, delta, seq)

    def next_seq(self, list_id: str) -> int:
        """The sequence number the list's next edit takes (1 for an unknown list; a
        forgotten list's next edit continues its numbers)."""
        check_list_id(list_id)
        with self._errors("read"):
            row = self._conn.execute("SELECT 1 FROM lists WHERE list_id = ?", (list_id,)).fetchone()
            return 1 if row is None else self._next_seq(self._conn, list_id)

    def _next_seq(self, conn: sqlite3.Connection, list_id: str) -> int:
        seq = conn.execute("SELECT next_seq FROM lists WHERE list_id = ?", (list_id,)).fetchone()[0]
        if type(seq) is not int or seq < 1:
            raise StoreCorrupt(f"{self.path}: table lists, row {list_id!r}: bad next_seq")
        return seq

    def saved(self) -> dict[str, StoredList[S]]:
        """Every list on the device with its queue and next sequence number: what a client
        core starts from (``SavedList(s.state, s.queue, s.next_seq)``). A damaged list is
        left out and logged as an error (Rule 5; :meth:`damaged` names them)."""
        out: dict[str, StoredList[S]] = {}
        for list_id in self.list_ids():
            try:
                out[list_id] = self._stored(list_id)
            except StoreCorrupt as exc:
                log.error("left out a damaged list: %s", exc)
        return out

    def _stored(self, list_id: str) -> StoredList[S]:
        state = self.load(list_id)  # not ``or``: a state with no items is falsy, yet
        # its context holds the dots this device issued (Rule 2)
        return StoredList(
            state=self._state_type() if state is None else state,
            queue=tuple(self.pending(list_id)),
            next_seq=self.next_seq(list_id),
        )

    def damaged(self) -> dict[str, str]:
        """``{list_id: what is wrong}`` for each list on the device whose state, queued
        deltas or sequence counter cannot be read (Rule 5)."""
        found: dict[str, str] = {}
        for list_id in self.list_ids():
            try:
                self._stored(list_id)
            except StoreCorrupt as exc:
                found[list_id] = str(exc)
        return found

    def merge(self, list_id: str, remote: S) -> S:
        """Durably join a delta or state received from the cluster into the local state
        (logged: the stored state is not rewritten).

        Returns:
            A copy of the new local state.
        """
        check_list_id(list_id)
        self._check_state(remote)
        with self._transaction("merge", (list_id,)) as conn:
            self._ensure(conn, list_id)
            state = self._logged_state(conn, list_id)
            state.join(remote)
            self._append(conn, list_id, [remote])
        return state.copy()

    def forget(self, list_id: str) -> None:
        """Stop showing a list on this device (after it was deleted, say): it leaves
        :meth:`list_ids`, :meth:`saved`, :meth:`load` and the queue's readers.

        Its state, queued deltas and sequence counter are kept out of sight (they record
        the dots this device issued); opening or editing the list again brings them back
        (:meth:`restore`). A list this device never edited is deleted outright.
        """
        check_list_id(list_id)
        with self._transaction("forget", (list_id,)) as conn:
            if conn.execute("SELECT 1 FROM lists WHERE list_id = ?", (list_id,)).fetchone() is None:
                return
            if self._next_seq(conn, list_id) > 1:
                conn.execute("INSERT OR IGNORE INTO forgotten (list_id) VALUES (?)", (list_id,))
                return
            conn.execute("DELETE FROM outbox WHERE list_id = ?", (list_id,))
            conn.execute("DELETE FROM list_log WHERE list_id = ?", (list_id,))
            conn.execute("DELETE FROM lists WHERE list_id = ?", (list_id,))
            self._cache.pop(list_id, None)

    def restore(self, list_id: str) -> bool:
        """Bring a forgotten list back as it was (state, queue, sequence counter); True if
        it was forgotten. Every write to the list does this too."""
        check_list_id(list_id)
        with self._transaction("restore", (list_id,)) as conn:
            cursor = conn.execute("DELETE FROM forgotten WHERE list_id = ?", (list_id,))
            return cursor.rowcount == 1

    # -- what the device knows about its lists ------------------------------------------

    def mark_mine(self, list_ids: Iterable[str]) -> None:
        """Record that the user owns these lists (made here, or the cluster said so)."""
        ids = [check_list_id(i) for i in list_ids]
        with self._transaction("mark owned") as conn:
            conn.executemany("INSERT OR IGNORE INTO mine (list_id) VALUES (?)", [(i,) for i in ids])

    def mine(self) -> set[str]:
        """The lists the user is known to own."""
        return self._id_set("mine")

    def mark_left(self, list_id: str, left: bool = True) -> None:
        """Record that the user left the list on this device (or, ``left=False``, came
        back to it)."""
        check_list_id(list_id)
        with self._transaction("mark left") as conn:
            if left:
                conn.execute("INSERT OR IGNORE INTO left_lists (list_id) VALUES (?)", (list_id,))
            else:
                conn.execute("DELETE FROM left_lists WHERE list_id = ?", (list_id,))

    def left(self) -> set[str]:
        """The lists the user left on this device."""
        return self._id_set("left_lists")

    def _id_set(self, table: str) -> set[str]:
        with self._errors("read"):
            rows = self._conn.execute(f"SELECT list_id FROM {table}").fetchall()
        if not all(isinstance(r[0], str) for r in rows):
            raise StoreCorrupt(f"{self.path}: table {table}: a list id is not text")
        return {r[0] for r in rows}

    # -- the queue of unacknowledged deltas ---------------------------------------------

    def pending(self, list_id: str) -> list[tuple[int, S]]:
        """The queued deltas of a list, ``(seq, delta)`` in order (none while it is
        forgotten)."""
        check_list_id(list_id)
        with self._errors("read"):
            rows = self._conn.execute(
                f"SELECT seq, {_RAW_DELTA} FROM outbox WHERE list_id = ? AND {_LIVE} ORDER BY seq",
                (list_id,),
            ).fetchall()
        out: list[tuple[int, S]] = []
        for seq, raw, kind in rows:
            if type(seq) is not int:
                raise StoreCorrupt(f"{self.path}: table outbox, list {list_id!r}: bad seq")
            text = _text_of(raw, kind)
            out.append((seq, self._decode("outbox", f"{list_id}#{seq}", "delta", text)))
        return out

    def pending_lists(self) -> list[str]:
        """The ids of the lists with queued deltas (not the forgotten ones), sorted."""
        with self._errors("read"):
            rows = self._conn.execute(
                f"SELECT DISTINCT list_id FROM outbox WHERE {_LIVE} ORDER BY list_id"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def ack(self, list_id: str, upto_seq: int) -> int:
        """Drop the queued deltas of a list with ``seq <= upto_seq`` (acknowledged by a
        server); return how many were dropped."""
        check_list_id(list_id)
        if type(upto_seq) is not int:
            raise TypeError(f"a sequence number is an int, got {type(upto_seq).__name__}")
        with self._transaction("ack") as conn:
            return conn.execute(
                "DELETE FROM outbox WHERE list_id = ? AND seq <= ?", (list_id, upto_seq)
            ).rowcount

    # -- session ------------------------------------------------------------------------

    def session(self) -> ClientSession | None:
        """The saved login, if any."""
        with self._errors("read"):
            row = self._conn.execute(
                "SELECT user_name, user_id, token, expires FROM session WHERE slot = 1"
            ).fetchone()
        if row is None:
            return None
        name, user_id, token, expires = row
        if not all(isinstance(v, str) for v in (name, user_id, token)) or not isinstance(
            expires, float | int
        ):
            raise StoreCorrupt(f"{self.path}: table session: wrong column types")
        return ClientSession(name, user_id, token, float(expires))

    def set_session(self, session: ClientSession) -> None:
        """Save the login (replacing any earlier one)."""
        with self._transaction("save session") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO session (slot, user_name, user_id, token, expires) "
                "VALUES (1, ?, ?, ?, ?)",
                (session.user_name, session.user_id, session.token, session.expires),
            )

    def clear_session(self) -> None:
        """Forget the login (log out)."""
        with self._transaction("clear session") as conn:
            conn.execute("DELETE FROM session")


def _valid_replica(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_REPLICA_ID and value.isprintable()
