"""Durable SQLite stores: one per server (:class:`ServerStore`), one per user and device
(:class:`~reference_cluster.storage.client_store.ClientStore`, re-exported here).

Every write is one durable transaction (WAL, ``synchronous=FULL``): a server acknowledges
an edit only after the method that applied it returned. The rules the stores keep are in
:mod:`reference_cluster.storage.sqlite`. The stores are generic in the state type
(``ServerStore(path, ShoppingList)``, ``ServerStore(path, AWORSet)``): any
:class:`crdts.Crdt` with ``from_dict``/``to_dict``.

Lists, their log, and what a server starts from
-----------------------------------------------
A list's row in ``lists`` holds its owner, its deletion flag and its *base*: a state's
canonical JSON with its SHA-256 ``digest``. A write appends the join of its deltas to the
list's log and reads only the owner and the deletion flag (the rules of the log and its
folding are Rules 6 and 7 of :mod:`reference_cluster.storage.sqlite`). Nothing decoded is
kept: :meth:`ServerStore.load` decodes the base and the log when asked, and the server
core keeps a bounded cache of its own. A server starts from :meth:`ServerStore.digests`,
which reads the stored digests without decoding a state, after folding the lists that
still have log rows (what was written since their last fold: the replay after a stop or
a crash).

Quarantine (damaged states are set aside, never served)
-------------------------------------------------------
A byte changed on disk can leave a state that still decodes (SQLite's own checks pass),
and anti-entropy could never repair it: the causal context would still claim
everything. So every base read from disk is checked against its digest, and every log
row against its own. A base that does not match its digest, is not ASCII text or does not
decode, or whose list id, owner, deletion flag or digest is unreadable, is copied byte
for byte into the ``quarantine`` table with the reason and the time, logged as an error,
and replaced in ``lists`` by the empty state. The row keeps the list's owner, deletion
flag and log, so ownership is never lost to the next pusher and the deltas logged since
are kept; the list's digest then differs from the peers', and the next anti-entropy round
brings the rest back (the server's context asks for what it lacks). A log row that does
not match its digest or does not decode is copied to ``quarantine`` the same way and
dropped. A row whose list id is unreadable leaves ``lists`` altogether.

Where damage is found: :meth:`ServerStore.digests` checks the cheap columns (id, owner,
flag, digest) of every row and decodes the lists it folds; :meth:`ServerStore.load`
checks the list it decodes; a write quarantines a row whose cheap columns are damaged and
never fails a group commit over a damaged state, which the next load sets aside. A base
changed under an intact digest is seen only when the list is decoded: the server core's
sweep loads a few lists every round, so it reaches every list in turn.
:meth:`ServerStore.quarantine_damaged` checks every row at once (a tool).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterable, Sequence

import attrs

from crdts import AWORSet
from reference_cluster.cores.accounts import Account, DeletedAccount, Session
from reference_cluster.errors import (
    AccessDenied,
    InvalidListId,
    ListDeleted,
    StoreCorrupt,
    StoreError,
    UserExists,
)
from reference_cluster.storage.client_store import ClientSession, ClientStore, StoredList
from reference_cluster.storage.cluster_record import CLUSTER_TABLE, load_cluster, store_cluster
from reference_cluster.storage.hints import HINTS_TABLE, drop_hint, load_hints, store_hints
from reference_cluster.storage.memberships import (
    MEMBERS_TABLE,
    load_memberships,
    store_membership,
)
from reference_cluster.storage.sqlite import (
    LogRow,
    S,
    SqliteStore,
    check_list_id,
    digest_of,
    encode,
    join_all,
)

__all__ = [
    "ClientSession",
    "ClientStore",
    "QuarantinedRow",
    "ServerStore",
    "StoredList",
    "check_list_id",
]

log = logging.getLogger(__name__)

_SERVER_APP_ID = 0x53484C53  # "SHLS"
_MAX_USER_ID = 64

_SERVER_SCHEMA = """
CREATE TABLE lists (
    list_id TEXT PRIMARY KEY,
    owner   TEXT,
    state   TEXT NOT NULL,
    digest  TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX lists_owner ON lists (owner);
CREATE TABLE accounts (
    user_id       TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created       REAL NOT NULL
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires    REAL NOT NULL
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

# Added after schema version 1 shipped, without a version change: an older program ignores
# it. Every open creates it if missing. The copied columns are declared BLOB so that what
# was on disk is kept exactly, whatever it is.
_QUARANTINE_TABLE = """
CREATE TABLE IF NOT EXISTS quarantine (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    list_id BLOB,
    owner   BLOB,
    state   BLOB,
    digest  BLOB,
    deleted BLOB,
    reason  TEXT NOT NULL,
    at      TEXT NOT NULL
)
"""

_SERVER_SCHEMA += _QUARANTINE_TABLE + ";"

# Columns of ``lists`` read as bytes with their storage class, so that text that is not
# UTF-8 any more is a reason to quarantine, not an exception in the driver.
_RAW_ROW = (
    "rowid, CAST(list_id AS BLOB), typeof(list_id), CAST(owner AS BLOB), typeof(owner), "
    "CAST(state AS BLOB), typeof(state), CAST(digest AS BLOB), typeof(digest), deleted"
)
# The same without the state, which a write and the digests never read.
_RAW_META = (
    "rowid, CAST(list_id AS BLOB), typeof(list_id), CAST(owner AS BLOB), typeof(owner), "
    "NULL, typeof(state), CAST(digest AS BLOB), typeof(digest), deleted"
)
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


@attrs.frozen
class QuarantinedRow:
    """A list's stored state that failed its check, as kept in the ``quarantine`` table.

    Attributes:
        list_id: the list's id (undecodable bytes shown escaped).
        reason: what was wrong (a digest mismatch, not decoding, an unreadable column).
        at: when it was set aside, UTC, ISO 8601.
    """

    list_id: str
    reason: str
    at: str


@attrs.frozen
class _RawRow:
    """One row of ``lists`` as bytes (see ``_RAW_ROW``)."""

    rowid: int
    list_id: bytes | None
    list_id_type: str
    owner: bytes | None
    owner_type: str
    state: bytes | None
    state_type: str
    digest: bytes | None
    digest_type: str
    deleted: object

    @property
    def shown_id(self) -> str:
        return _shown(self.list_id or b"")

    @property
    def owner_text(self) -> str | None:
        """The owner's user id, or None if there is none or it is unreadable."""
        if self.owner_type != "text" or self.owner is None:
            return None
        try:
            owner = self.owner.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return owner if 0 < len(owner) <= _MAX_USER_ID else None


class ServerStore(SqliteStore[S]):
    """A server's lists, their owners, and the accounts and sessions of the cluster.

    Args:
        path: the SQLite file (created if missing).
        state_type: the class of the stored lists (``ShoppingList``, ``AWORSet``, ...).

    Raises:
        StoreError: the file is not a server store of this version, or cannot be opened.
    """

    _APP_ID = _SERVER_APP_ID
    _SCHEMA = _SERVER_SCHEMA
    _KIND = "server"
    _BASE_DIGEST = True

    def _init_rows(self) -> None:
        self._conn.execute(_QUARANTINE_TABLE)
        self._init_account_tables()  # accounts: see "accounts and sessions" below
        self._conn.execute(MEMBERS_TABLE)
        self._conn.execute(HINTS_TABLE)
        self._conn.execute(CLUSTER_TABLE)

    # -- members of lists (storage.memberships) ----------------------------------------

    def memberships(self) -> dict[str, AWORSet]:
        """Every list's members (``cores.membership``)."""
        with self._errors("read members"):
            return load_memberships(self._conn)

    def put_membership(self, list_id: str, state: AWORSet) -> None:
        """Store a list's members durably (replacing what was there)."""
        with self._transaction("write members") as conn:
            store_membership(conn, check_list_id(list_id), state)

    # -- lists --------------------------------------------------------------------------

    def apply_delta(self, list_id: str, delta: S, *, owner: str | None = None) -> None:
        """Join ``delta`` into the list (creating it if new) in one durable transaction.

        The write logs the delta (it reads the list's owner and deletion flag, never its
        state, except when the log is due to be folded); it is on disk when this returns.

        Args:
            list_id: the list's UUID.
            delta: a delta or a whole state of the store's type.
            owner: the owner's user id, recorded if the list has none yet.

        Raises:
            InvalidListId, WrongStateType: bad arguments. ListDeleted: the owner deleted the
            list. AccessDenied: ``owner`` differs from the recorded owner. StoreError: the
            write failed.
        """
        check_list_id(list_id)
        self._check_state(delta)
        with self._transaction("apply") as conn:
            took = self._apply(conn, list_id, [delta], owner)
        if not took:
            raise ListDeleted(f"list {list_id} was deleted by its owner")

    def apply_many(
        self, items: Iterable[tuple[str, S]], hints: Iterable[tuple[str, str, S]] = ()
    ) -> set[str]:
        """Apply many ``(list_id, delta)`` pairs in one durable transaction (group commit).

        Deltas for the same list are joined together and logged as one row. Deltas for
        deleted lists are skipped; every other pair is applied, or (on error) none is.
        ``hints`` are ``(list_id, holder, delta)`` joined into the hints kept for other
        servers (:mod:`reference_cluster.storage.hints`) in the same transaction.

        Returns:
            The ids of the lists that took their deltas.

        Raises:
            InvalidListId, WrongStateType: a bad pair (checked before anything is written).
            StoreError: the write failed.
        """
        grouped: dict[str, list[S]] = {}
        for list_id, delta in items:
            check_list_id(list_id)
            grouped.setdefault(list_id, []).append(self._check_state(delta))
        hinted = [(check_list_id(k), h, self._check_state(d)) for k, h, d in hints]
        took: set[str] = set()
        if not grouped and not hinted:
            return took
        with self._transaction("group apply") as conn:
            for list_id, deltas in grouped.items():
                if self._apply(conn, list_id, deltas, None):
                    took.add(list_id)
            store_hints(conn, hinted, self._state_type.from_dict)
        return took

    def cluster_membership(self) -> tuple[int, dict[str, str]] | None:
        """The membership last recorded: ``(epoch, {server id: peer end point})``."""
        with self._reading() as conn:
            return load_cluster(conn)

    def record_cluster_membership(self, epoch: int, servers: dict[str, str]) -> None:
        """Durably record the cluster's membership (replacing the last).

        Raises:
            StoreError: the write failed.
        """
        with self._transaction("record membership") as conn:
            store_cluster(conn, epoch, servers)

    def forget_list(self, list_id: str, digest: str) -> bool:
        """Durably forget the state of a list handed to its holders, if it is still the
        state with ``digest``: its state becomes empty and its log goes; its row stays
        with its owner and deletion flag (what the accounts directory keeps there).
        Whether it was forgotten.

        Raises:
            StoreError: the write failed.
        """
        check_list_id(list_id)
        with self._transaction("forget") as conn:
            if self._meta_row(conn, list_id) is None:
                return False
            if self._fold(conn, list_id).digest() != digest:
                return False
            self._write_base(conn, list_id, self._state_type())
            return True

    def hints(self) -> dict[tuple[str, str], S]:
        """Every hint kept for another server: ``(list id, holder) -> state``."""
        with self._reading() as conn:
            return load_hints(conn, self._state_type.from_dict)

    def drop_hint(self, list_id: str, holder: str, digest: str) -> bool:
        """Durably delete the hint for ``holder`` of ``list_id`` if its digest is still
        ``digest``; whether it was deleted.

        Raises:
            StoreError: the write failed.
        """
        with self._transaction("drop hint") as conn:
            return drop_hint(conn, list_id, holder, digest)

    def _apply(
        self, conn: sqlite3.Connection, list_id: str, deltas: list[S], owner: str | None
    ) -> bool:
        """Log ``deltas`` for the list (a new list gets their join as its base); False if
        the list is deleted."""
        raw = self._meta_row(conn, list_id)
        if raw is None:
            text = encode(join_all(deltas))
            conn.execute(
                "INSERT INTO lists (list_id, owner, state, digest, base_bytes) "
                "VALUES (?, ?, ?, ?, ?)",
                (list_id, owner, text, digest_of(text), len(text)),
            )
            return True
        reason = _meta_problem(raw)
        if reason is not None:  # damaged while running (another program wrote the file)
            self._quarantine(conn, raw, reason)
            raw = self._meta_row(conn, list_id)
            assert raw is not None  # its id was readable: the row stays
        if raw.deleted:
            return False
        known_owner = raw.owner_text
        if owner is not None and known_owner is not None and owner != known_owner:
            raise AccessDenied(f"list {list_id} already has another owner")
        if owner is not None and known_owner is None:
            conn.execute("UPDATE lists SET owner = ? WHERE rowid = ?", (owner, raw.rowid))
        self._append(conn, list_id, deltas)
        return True

    def create_list(self, list_id: str, owner: str) -> bool:
        """Record a new, empty list owned by ``owner``.

        Returns:
            True if the list is new; False if it existed with this owner (or none yet,
            which then becomes ``owner``).

        Raises:
            AccessDenied: the list exists with another owner. ListDeleted: it was deleted.
        """
        check_list_id(list_id)
        _check_user_id(owner)
        with self._transaction("create") as conn:
            row = conn.execute(
                "SELECT owner, deleted FROM lists WHERE list_id = ?", (list_id,)
            ).fetchone()
            if row is None:
                self._insert_empty(conn, list_id, owner)
                return True
            if row[1]:
                raise ListDeleted(f"list {list_id} was deleted by its owner")
            if row[0] is not None and row[0] != owner:
                raise AccessDenied(f"list {list_id} already has another owner")
            conn.execute("UPDATE lists SET owner = ? WHERE list_id = ?", (owner, list_id))
            return False

    def _insert_empty(
        self, conn: sqlite3.Connection, list_id: str, owner: str | None, *, or_owner: bool = False
    ) -> None:
        """Insert the list with an empty base (with ``or_owner``: if it exists, only set
        its owner)."""
        text = encode(self._state_type())
        conflict = " ON CONFLICT (list_id) DO UPDATE SET owner = excluded.owner" if or_owner else ""
        conn.execute(
            "INSERT INTO lists (list_id, owner, state, digest, base_bytes) VALUES (?, ?, ?, ?, ?)"
            + conflict,
            (list_id, owner, text, digest_of(text), len(text)),
        )

    def load(self, list_id: str) -> S | None:
        """The list's state (its base joined with its log, decoded now), or None if the
        list is unknown or deleted.

        A damaged base (it does not decode or does not match its digest) is set aside as
        the module notes say and the list's log is joined onto an empty state; a damaged
        log row is set aside and left out. Either way the repaired state is written as the
        list's base, and returned.

        Raises:
            InvalidListId: bad id. StoreError: the file cannot be read or written.
        """
        check_list_id(list_id)
        damaged: list[LogRow] = []
        with self._reading() as conn:
            raw = self._raw_row(conn, list_id)
            if raw is None or raw.deleted == 1:
                return None
            reason, state = self._row_problem(raw)
            if state is not None:
                state = self._replay(
                    state, self._log_of(conn, list_id), lambda r, _: damaged.append(r)
                )
        if reason is None and not damaged:
            return state
        with self._transaction("repair") as conn:
            state = self._fold(conn, list_id) if self._meta_row(conn, list_id) else None
            raw = self._meta_row(conn, list_id)
        return None if raw is None or raw.deleted else state

    def _logged_state(self, conn: sqlite3.Connection, list_id: str) -> S:
        """Base joined with log; a damaged base or log row is quarantined on the way."""
        raw = self._raw_row(conn, list_id)
        state: S | None = None
        if raw is not None:
            reason, state = self._row_problem(raw)
            if reason is not None:
                self._quarantine(conn, raw, reason)
        return self._replay(
            state if state is not None else self._state_type(),
            self._log_of(conn, list_id),
            lambda row, why: self._quarantine_log(conn, row, why),
        )

    def load_all(self) -> dict[str, S]:
        """Every live list's state, each decoded (a tool: a server starts from
        :meth:`digests`), after setting aside every damaged row
        (:meth:`quarantine_damaged`): a list whose base was damaged loads as its log alone,
        and anti-entropy brings the rest back from the peers.

        Raises:
            StoreError: the file cannot be read or written.
        """
        self.quarantine_damaged()
        states: dict[str, S] = {}
        for list_id in self.list_ids():
            state = self.load(list_id)
            if state is not None:  # not ``if state``: an empty list is falsy
                states[list_id] = state
        return states

    def digests(self) -> dict[str, str]:
        """``{list_id: digest}`` of every live list (the digest of its canonical JSON,
        equal to ``state.digest()``): what a server starts from.

        Reads the stored digests without decoding states, after one durable transaction
        that sets aside every row whose list id, owner, deletion flag or digest is
        unreadable (see the module notes) and folds every list that still has log rows
        (written since its last fold: this is the replay after a stop or a crash, one
        decode per such list). A base whose text was damaged under an intact digest is
        found when the list is loaded (:meth:`load`, :meth:`quarantine_damaged`).

        Raises:
            StoreError: the file cannot be read or written.
        """
        with self._transaction("read digests") as conn:
            for raw in self._raw_rows(conn, with_state=False):
                reason = _meta_problem(raw)
                if reason is not None:
                    self._quarantine(conn, raw, reason)
            self._fold_all(conn)
            rows = conn.execute(
                "SELECT list_id, digest FROM lists WHERE deleted = 0 ORDER BY list_id"
            ).fetchall()
        return dict(rows)

    def _fold_all(self, conn: sqlite3.Connection) -> None:
        """Fold every live list that has log rows; drop those of deleted lists and set
        aside those of no list (their list's row was set aside for an unreadable id)."""
        for (raw_id,) in conn.execute(
            "SELECT DISTINCT CAST(list_id AS BLOB) FROM list_log"
        ).fetchall():
            list_id = _id_text(raw_id)
            meta = None if list_id is None else self._meta_row(conn, list_id)
            if list_id is None or meta is None:
                for row in self._log_rows(conn, "CAST(list_id AS BLOB) = ?", (raw_id,)):
                    self._quarantine_log(conn, row, "no list holds this log row")
            elif meta.deleted:
                conn.execute("DELETE FROM list_log WHERE list_id = ?", (list_id,))
            else:
                self._fold(conn, list_id)

    def quarantine_damaged(self) -> list[QuarantinedRow]:
        """Check every row of ``lists`` and of the log, decoding each, and set aside the
        damaged ones (see the module notes), in one transaction; each is logged as an
        error. A tool: a server finds damage as it loads lists.

        Returns:
            The rows set aside now (earlier ones: :meth:`quarantined`).
        """
        found: list[QuarantinedRow] = []
        with self._transaction("check") as conn:
            for raw in self._raw_rows(conn):
                reason, _ = self._row_problem(raw)
                if reason is not None:
                    found.append(self._quarantine(conn, raw, reason))
            self._replay(
                self._state_type(),
                self._log_rows(conn),
                lambda row, why: found.append(self._quarantine_log(conn, row, why)),
            )
        return found

    def quarantined(self) -> list[QuarantinedRow]:
        """Every row ever set aside, oldest first."""
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT CAST(list_id AS BLOB), reason, at FROM quarantine ORDER BY id"
            ).fetchall()
        return [QuarantinedRow(_shown(k), str(reason), str(at)) for k, reason, at in rows]

    def _raw_rows(self, conn: sqlite3.Connection, *, with_state: bool = True) -> list[_RawRow]:
        columns = _RAW_ROW if with_state else _RAW_META
        rows = conn.execute(f"SELECT {columns} FROM lists ORDER BY rowid").fetchall()
        return [_RawRow(*r) for r in rows]

    def _raw_row(self, conn: sqlite3.Connection, list_id: str) -> _RawRow | None:
        row = conn.execute(f"SELECT {_RAW_ROW} FROM lists WHERE list_id = ?", (list_id,)).fetchone()
        return None if row is None else _RawRow(*row)

    def _meta_row(self, conn: sqlite3.Connection, list_id: str) -> _RawRow | None:
        """The list's row without its state (which a write never reads)."""
        row = conn.execute(f"SELECT {_RAW_META} FROM lists WHERE list_id = ?", (list_id,))
        found = row.fetchone()
        return None if found is None else _RawRow(*found)

    def _row_problem(self, raw: _RawRow) -> tuple[str | None, S | None]:
        """``(None, state)`` for a sound row; ``(reason, None)`` for a damaged one."""
        reason = _meta_problem(raw)
        if reason is not None:
            return reason, None
        return self._stored_problem("state", raw.state, raw.state_type, raw.digest, raw.digest_type)

    def _quarantine(self, conn: sqlite3.Connection, raw: _RawRow, reason: str) -> QuarantinedRow:
        """Copy the row into ``quarantine``, then empty its base in ``lists`` keeping its
        owner, deletion flag and log (or drop it, if its id is unreadable)."""
        at = self._set_aside(
            conn,
            "SELECT list_id, owner, state, digest, deleted, ?, {now} FROM lists WHERE rowid = ?",
            (reason, raw.rowid),
        )
        list_id = _id_text(raw.list_id) if raw.list_id_type == "text" else None
        if list_id is None:
            conn.execute("DELETE FROM lists WHERE rowid = ?", (raw.rowid,))
        else:
            text = encode(self._state_type())
            conn.execute(
                "UPDATE lists SET state = ?, digest = ?, base_bytes = ?, "
                "owner = CASE WHEN ? THEN owner ELSE NULL END, "
                "deleted = CASE WHEN deleted IN (0, 1) THEN deleted ELSE 0 END "
                "WHERE rowid = ?",
                (text, digest_of(text), len(text), raw.owner_text is not None, raw.rowid),
            )
        log.error(
            "%s: list %r quarantined, it starts empty and is fetched again from the peers: %s",
            self.path,
            raw.shown_id,
            reason,
        )
        return QuarantinedRow(raw.shown_id, reason, at)

    def _quarantine_log(self, conn: sqlite3.Connection, row: LogRow, reason: str) -> QuarantinedRow:
        """Copy a damaged log row into ``quarantine`` and drop it from the log."""
        why = f"log row {row.seq}: {reason}"
        (raw_id,) = conn.execute(
            "SELECT CAST(list_id AS BLOB) FROM list_log WHERE seq = ?", (row.seq,)
        ).fetchone()
        shown = _shown(raw_id)
        at = self._set_aside(
            conn,
            "SELECT list_id, NULL, delta, digest, NULL, ?, {now} FROM list_log WHERE seq = ?",
            (why, row.seq),
        )
        conn.execute("DELETE FROM list_log WHERE seq = ?", (row.seq,))
        log.error("%s: a logged delta of list %r set aside and dropped: %s", self.path, shown, why)
        return QuarantinedRow(shown, why, at)

    def _set_aside(self, conn: sqlite3.Connection, select: str, args: tuple[object, ...]) -> str:
        """Insert what ``select`` picks (``{now}``: the time) into ``quarantine``; return
        the time it was set aside."""
        cursor = conn.execute(
            "INSERT INTO quarantine (list_id, owner, state, digest, deleted, reason, at) "
            + select.format(now=_NOW),
            args,
        )
        (at,) = conn.execute(
            "SELECT at FROM quarantine WHERE id = ?", (cursor.lastrowid,)
        ).fetchone()
        return str(at)

    def start_incarnation(self) -> int:
        """Durably count one more start of this server; return how many came before."""
        with self._transaction("count start") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'starts'").fetchone()
            before = 0 if row is None else row[0]
            if type(before) is not int or before < 0:
                raise StoreCorrupt(f"{self.path}: table meta: bad start count")
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('starts', ?)", (before + 1,)
            )
        return before

    def owner(self, list_id: str) -> str | None:
        """The owner's user id, or None if the list or its owner is unknown."""
        check_list_id(list_id)
        with self._errors("read"):
            row = self._conn.execute(
                "SELECT owner FROM lists WHERE list_id = ?", (list_id,)
            ).fetchone()
        if row is None:
            return None
        if row[0] is not None and not isinstance(row[0], str):
            raise StoreCorrupt(f"{self.path}: table lists, row {list_id!r}: owner is not text")
        return row[0]

    def is_deleted(self, list_id: str) -> bool:
        """Whether the list was deleted (a tombstone is kept so it is never revived)."""
        check_list_id(list_id)
        with self._errors("read"):
            row = self._conn.execute(
                "SELECT deleted FROM lists WHERE list_id = ?", (list_id,)
            ).fetchone()
        return row is not None and bool(row[0])

    def delete_list(self, list_id: str, user_id: str) -> None:
        """Delete a list on behalf of ``user_id``, who must be its owner.

        The state is dropped and a tombstone kept; later deltas for the list are refused.

        Raises:
            AccessDenied: ``user_id`` is not the recorded owner (or no owner is known).
        """
        check_list_id(list_id)
        with self._transaction("delete") as conn:
            row = conn.execute("SELECT owner FROM lists WHERE list_id = ?", (list_id,)).fetchone()
            if row is None or row[0] is None or row[0] != user_id:
                raise AccessDenied(f"only the owner of list {list_id} may delete it")
            self._tombstone(conn, list_id)

    def tombstone(self, list_id: str) -> None:
        """Record a deletion learned from a peer (which checked the owner)."""
        check_list_id(list_id)
        with self._transaction("tombstone") as conn:
            self._tombstone(conn, list_id)

    def _tombstone(self, conn: sqlite3.Connection, list_id: str) -> None:
        text = encode(self._state_type())
        conn.execute(
            "INSERT INTO lists (list_id, owner, state, digest, deleted, base_bytes) "
            "VALUES (?, NULL, ?, ?, 1, ?) "
            "ON CONFLICT (list_id) DO UPDATE SET state = excluded.state, "
            "digest = excluded.digest, deleted = 1, base_bytes = excluded.base_bytes",
            (list_id, text, digest_of(text), len(text)),
        )
        conn.execute("DELETE FROM list_log WHERE list_id = ?", (list_id,))

    def list_ids(self, *, deleted: bool = False) -> list[str]:
        """The ids of the live lists (or, with ``deleted=True``, of the deleted ones),
        sorted."""
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT list_id FROM lists WHERE deleted = ? ORDER BY list_id", (int(deleted),)
            ).fetchall()
        return [self._text(r[0], "lists", "list_id") for r in rows]

    def owned_by(self, user_id: str) -> list[str]:
        """The ids of the live lists whose owner is ``user_id``, sorted."""
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT list_id FROM lists WHERE owner = ? AND deleted = 0 ORDER BY list_id",
                (user_id,),
            ).fetchall()
        return [self._text(r[0], "lists", "list_id") for r in rows]

    def owners(self) -> dict[str, str]:
        """``{list_id: owner}`` of every list whose owner is known (deleted ones included)."""
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT list_id, owner FROM lists WHERE owner IS NOT NULL ORDER BY list_id"
            ).fetchall()
        return {self._text(k, "lists", "list_id"): self._text(o, "lists", "owner") for k, o in rows}

    def set_owner(self, list_id: str, owner: str) -> None:
        """Record ``owner`` as the list's owner, replacing any other one (servers that
        learned different owners during a partition agree on a winner and call this); an
        unknown list is recorded empty."""
        check_list_id(list_id)
        _check_user_id(owner)
        with self._transaction("set owner") as conn:
            self._insert_empty(conn, list_id, owner, or_owner=True)

    def _text(self, value: object, table: str, column: str) -> str:
        if not isinstance(value, str):
            raise StoreCorrupt(f"{self.path}: table {table}, column {column}: not text")
        return value

    # -- accounts and sessions ----------------------------------------------------------
    #
    # Added after schema version 1 shipped, without a version change (as the quarantine
    # table): every open adds what is missing (``_init_account_tables``). accounts.version
    # counts password changes; sessions.replica is the device a session is bound to and
    # sessions.version the account version it belongs to; ``revoked`` keeps the token
    # hashes of ended sessions until they would have expired; ``deleted_accounts`` keeps
    # deleted accounts for ever (their names stay reserved).

    def _init_account_tables(self) -> None:
        """Add the account columns and tables a store made before them lacks."""
        for table, column, decl in _ACCOUNT_COLUMNS:
            have = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        self._execute_all(_ACCOUNT_TABLES)

    def add_account(self, account: Account) -> None:
        """Record a new account.

        Raises:
            UserExists: the name (or the user id) is taken, or was a deleted account's.
        """
        try:
            with self._transaction("add account") as conn:
                gone = conn.execute(
                    "SELECT 1 FROM deleted_accounts WHERE user_id = ? OR name = ?",
                    (account.user_id, account.name),
                ).fetchone()
                if gone is not None:
                    raise UserExists(
                        f"the user name {account.name!r} belonged to a deleted account"
                    )
                _insert_account(conn, account)
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise UserExists(f"the user name {account.name!r} is taken") from None
            raise

    def put_account(self, account: Account) -> bool:
        """Record an account learned from a peer server, idempotently.

        Returns:
            True if it was new, False if this exact account was already here.

        Raises:
            UserExists: the name or the user id belongs to a different account (two
            servers signed up one name during a partition; the caller decides).
        """
        with self._transaction("put account") as conn:
            clash = conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS_READ} FROM accounts WHERE user_id = ? OR name = ?",
                (account.user_id, account.name),
            ).fetchall()
            if not clash:
                _insert_account(conn, account)
                return True
        if len(clash) == 1 and self._account_row(clash[0], account.user_id) == account:
            return False
        raise UserExists(f"the user name {account.name!r} belongs to another account")

    def replace_account(self, account: Account) -> list[str]:
        """Record ``account``, dropping every other account with its name or user id, and
        their sessions (the loser of a sign-up race between two partitioned servers, once
        the caller has picked the winner).

        Returns:
            The user ids of the dropped accounts.
        """
        with self._transaction("replace account") as conn:
            rows = conn.execute(
                "SELECT user_id FROM accounts WHERE user_id = ? OR name = ?",
                (account.user_id, account.name),
            ).fetchall()
            dropped = sorted(str(r[0]) for r in rows if r[0] != account.user_id)
            conn.execute(
                "DELETE FROM accounts WHERE user_id = ? OR name = ?",
                (account.user_id, account.name),
            )
            for user_id in dropped:
                conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
            _insert_account(conn, account)
        return dropped

    def update_account(self, account: Account, drop_sessions: Iterable[str] = ()) -> None:
        """Replace the record of ``account.user_id`` (a password change) and forget the
        sessions ``drop_sessions`` (token hashes), in one transaction."""
        with self._transaction("update account") as conn:
            conn.execute(
                "UPDATE accounts SET password_hash = ?, version = ? WHERE user_id = ?",
                (account.password_hash, account.version, account.user_id),
            )
            conn.executemany(
                "DELETE FROM sessions WHERE token_hash = ?", [(h,) for h in drop_sessions]
            )

    def drop_account(self, user_id: str) -> None:
        """Forget an account and its sessions (the loser of a sign-up race)."""
        with self._transaction("drop account") as conn:
            conn.execute("DELETE FROM accounts WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def delete_account(self, tomb: DeletedAccount) -> None:
        """Record an account's deletion: its record and sessions go, the tombstone stays
        (idempotent)."""
        with self._transaction("delete account") as conn:
            conn.execute("DELETE FROM accounts WHERE user_id = ?", (tomb.user_id,))
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (tomb.user_id,))
            conn.execute(
                "INSERT OR IGNORE INTO deleted_accounts (user_id, name, created, deleted) "
                "VALUES (?, ?, ?, ?)",
                (tomb.user_id, tomb.name, tomb.created, tomb.deleted),
            )

    def deleted_accounts(self) -> list[DeletedAccount]:
        """Every deleted account's tombstone, by user id."""
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT user_id, name, created, deleted FROM deleted_accounts ORDER BY user_id"
            ).fetchall()
        out = []
        for user_id, name, created, deleted in rows:
            if not (isinstance(user_id, str) and isinstance(name, str)) or not all(
                isinstance(v, float | int) for v in (created, deleted)
            ):
                raise StoreCorrupt(f"{self.path}: table deleted_accounts: wrong column types")
            out.append(DeletedAccount(user_id, name, float(created), float(deleted)))
        return out

    def account_by_name(self, name: str) -> Account | None:
        """The account with this (normalised) name, if any."""
        return self._account("name", name)

    def account(self, user_id: str) -> Account | None:
        """The account with this user id, if any."""
        return self._account("user_id", user_id)

    def _account(self, column: str, value: str) -> Account | None:
        with self._errors("read"):
            row = self._conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS_READ} FROM accounts "
                f"WHERE {column} = ?",  # column is one of two literals above
                (value,),
            ).fetchone()
        return None if row is None else self._account_row(row, value)

    def _account_row(self, row: Sequence[object], key: str) -> Account:
        user_id, name, password_hash, created, version = row
        if (
            not all(isinstance(v, str) for v in (user_id, name, password_hash))
            or not isinstance(created, float | int)
            or type(version) is not int
        ):
            raise StoreCorrupt(f"{self.path}: table accounts, row {key!r}: wrong column types")
        return Account(str(user_id), str(name), str(password_hash), float(created), version)

    def accounts(self) -> list[Account]:
        """Every account, by name (for replicating accounts between servers)."""
        with self._errors("read"):
            rows = self._conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS_READ} FROM accounts ORDER BY name"
            ).fetchall()
        return [self._account_row(r, str(r[1])) for r in rows]

    def add_session(self, session: Session) -> None:
        """Record a session (replacing one with the same token hash)."""
        with self._transaction("add session") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO sessions (token_hash, user_id, expires, replica, version) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    session.token_hash,
                    session.user_id,
                    session.expires,
                    session.replica,
                    session.version,
                ),
            )

    def session(self, token_hash: str) -> Session | None:
        """The session with this token hash, if any."""
        with self._errors("read"):
            row = self._conn.execute(
                f"SELECT {_SESSION_COLUMNS_READ} FROM sessions WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        return None if row is None else self._session_row(row)

    def _session_row(self, row: Sequence[object]) -> Session:
        token_hash, user_id, expires, replica, version = row
        if (
            not isinstance(token_hash, str)
            or not isinstance(user_id, str)
            or not isinstance(expires, float | int)
            or not (replica is None or isinstance(replica, str))
            or type(version) is not int
        ):
            raise StoreCorrupt(f"{self.path}: table sessions: wrong column types")
        return Session(token_hash, user_id, float(expires), replica, version)

    def sessions(self) -> list[Session]:
        """Every session, by token hash (for replicating sessions between servers)."""
        with self._errors("read"):
            rows = self._conn.execute(
                f"SELECT {_SESSION_COLUMNS_READ} FROM sessions ORDER BY token_hash"
            ).fetchall()
        return [self._session_row(r) for r in rows]

    def delete_session(self, token_hash: str) -> None:
        """Forget a session (no error if unknown)."""
        with self._transaction("delete session") as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    def revoke_session(self, token_hash: str, expires: float) -> None:
        """End a session for good: forget it and keep its token hash until ``expires``,
        so that no stale copy brings it back."""
        with self._transaction("revoke session") as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
            conn.execute(
                "INSERT OR REPLACE INTO revoked (token_hash, expires) VALUES (?, ?)",
                (token_hash, expires),
            )

    def revoked(self) -> dict[str, float]:
        """``{token hash: expiry}`` of every ended session not yet expired."""
        with self._errors("read"):
            rows = self._conn.execute("SELECT token_hash, expires FROM revoked").fetchall()
        out = {}
        for token_hash, expires in rows:
            if not isinstance(token_hash, str) or not isinstance(expires, float | int):
                raise StoreCorrupt(f"{self.path}: table revoked: wrong column types")
            out[token_hash] = float(expires)
        return out

    def purge_sessions(self, now: float) -> int:
        """Forget every session, and every ended session's record, expired at ``now``;
        return how many sessions."""
        with self._transaction("purge sessions") as conn:
            conn.execute("DELETE FROM revoked WHERE expires <= ?", (now,))
            return conn.execute("DELETE FROM sessions WHERE expires <= ?", (now,)).rowcount


def _shown(raw: object) -> str:
    """Bytes from a damaged row as text: UTF-8 where it decodes, escaped elsewhere."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace")
    return str(raw)


def _id_text(raw: bytes | None) -> str | None:
    """The list id ``raw`` holds (UTF-8 text of a canonical UUID), or None."""
    if raw is None:
        return None
    try:
        return check_list_id(raw.decode("utf-8"))
    except (UnicodeDecodeError, InvalidListId):
        return None


def _meta_problem(raw: _RawRow) -> str | None:
    """What is wrong with a row's list id, owner, deletion flag or digest (read without
    decoding its state), or None."""
    if raw.list_id_type != "text" or _id_text(raw.list_id) is None:
        return f"the list id is not a list id ({raw.list_id_type})"
    if raw.owner_type != "null" and raw.owner_text is None:
        return f"the owner is not a user id ({raw.owner_type})"
    if type(raw.deleted) is not int or raw.deleted not in (0, 1):
        return "the deleted flag is not 0 or 1"
    if raw.digest_type != "text" or not _is_digest(raw.digest):
        shown = _shown(raw.digest)[:16]
        return f"column digest: expected 64 hex digits, got {raw.digest_type} {shown!r}..."
    return None


def _is_digest(raw: bytes | None) -> bool:
    return raw is not None and _DIGEST.fullmatch(raw) is not None


_DIGEST = re.compile(rb"[0-9a-f]{64}")

_ACCOUNT_COLUMNS = (
    ("accounts", "version", "INTEGER NOT NULL DEFAULT 0"),
    ("sessions", "replica", "TEXT"),
    ("sessions", "version", "INTEGER NOT NULL DEFAULT 0"),
)
_ACCOUNT_TABLES = """
CREATE TABLE IF NOT EXISTS revoked (
    token_hash TEXT PRIMARY KEY,
    expires    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deleted_accounts (
    user_id TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    created REAL NOT NULL,
    deleted REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deleted_accounts_name ON deleted_accounts (name)
"""
_ACCOUNT_COLUMNS_READ = "user_id, name, password_hash, created, version"
_SESSION_COLUMNS_READ = "token_hash, user_id, expires, replica, version"


def _insert_account(conn: sqlite3.Connection, account: Account) -> None:
    conn.execute(
        "INSERT INTO accounts (user_id, name, password_hash, created, version) "
        "VALUES (?, ?, ?, ?, ?)",
        (account.user_id, account.name, account.password_hash, account.created, account.version),
    )


def _check_user_id(user_id: object) -> str:
    if not isinstance(user_id, str) or not 0 < len(user_id) <= _MAX_USER_ID:
        raise AccessDenied(f"an owner is a user id (1 to 64 characters), got {user_id!r:.60}")
    return user_id
