"""Durable SQLite stores: one per server, one per user and device.

Theory of operation
-------------------
Rule 1 (durable before visible). Every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT``
transaction in WAL mode with ``synchronous=FULL``: when a write method returns, the write
survives a crash of the process or the machine. A server acknowledges an edit only after
the method that applied it returned; a client sends an edit only after it was queued.

Rule 2 (no dot is ever reused). A client's edit writes the new state, whose causal context
holds the new dot, in the same transaction as the queued delta. After a restart the state
read back knows every dot the device ever created, so the next edit takes a fresh one.
The device's replica id is generated once and kept in the store.

Rule 3 (what is on disk is data, never code). States are stored as the canonical JSON of
``to_dict()`` and read back with ``json.loads`` and ``from_dict``; a row that does not
decode raises :class:`~reference_cluster.errors.StoreCorrupt` naming the table and row.
Nothing read from disk reaches ``eval``, ``exec`` or ``pickle``.

Rule 4 (the cache never lies). Each store keeps the decoded states it has read, so that
applying a delta costs a join and an encode, not a decode. The cache is dropped whenever
``PRAGMA data_version`` shows that another connection wrote the file, and an entry is
dropped when the transaction that changed it fails.

The stores are generic in the state type (``ServerStore(path, ShoppingList)``,
``ServerStore(path, AWORSet)``): any :class:`crdts.Crdt` with ``from_dict``/``to_dict``.
A store object belongs to the thread that opened it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Generic, Self, TypeVar

import attrs

from crdts import Crdt
from crdts._codec import canonical_json
from reference_cluster.accounts import Account, Session
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

__all__ = [
    "ClientSession",
    "ClientStore",
    "ServerStore",
    "check_list_id",
]

S = TypeVar("S", bound=Crdt)

_SERVER_APP_ID = 0x53484C53  # "SHLS"
_CLIENT_APP_ID = 0x53484C43  # "SHLC"
_SCHEMA_VERSION = 1
_MAX_REPLICA_ID = 64

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
"""

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


def check_list_id(list_id: object) -> str:
    """Return ``list_id`` if it is a UUID in canonical text form (lower-case, hyphenated).

    Raises:
        InvalidListId: anything else.
    """
    if isinstance(list_id, str) and len(list_id) == 36:
        try:
            if str(uuid.UUID(list_id)) == list_id:
                return list_id
        except ValueError:
            pass
    shown = repr(list_id)[:60]
    raise InvalidListId(f"a list id is a UUID like '{uuid.UUID(int=0)}', got {shown}")


def _encode(state: Crdt) -> str:
    return canonical_json(state.to_dict()).decode("ascii")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class _SqliteStore(Generic[S]):
    """What both stores share: opening, schema check, transactions, decoding, the cache."""

    _APP_ID: int
    _SCHEMA: str
    _KIND: str

    def __init__(self, path: str | os.PathLike[str], state_type: type[S]) -> None:
        if not (isinstance(state_type, type) and issubclass(state_type, Crdt)):
            raise TypeError(f"state_type must be a crdts.Crdt subclass, got {state_type!r}")
        self.path = os.fspath(path)
        self._state_type = state_type
        self._cache: dict[str, S] = {}
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the {self._KIND} store: {exc}") from exc
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise

    def _setup(self) -> None:
        with self._errors("open"):
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: the store needs WAL journaling, got {mode!r}")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                app_id = self._conn.execute("PRAGMA application_id").fetchone()[0]
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if app_id == 0 and version == 0 and tables == 0:
                    for statement in self._SCHEMA.split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA application_id={self._APP_ID}")
                    self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                elif app_id != self._APP_ID:
                    raise StoreError(
                        f"{self.path}: not a {self._KIND} store (application id {app_id:#x}, "
                        f"expected {self._APP_ID:#x})"
                    )
                elif version != _SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path}: {self._KIND} store schema version {version}, this "
                        f"program reads version {_SCHEMA_VERSION}"
                    )
                self._init_rows()
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            self._data_version = self._read_data_version()

    def _init_rows(self) -> None:
        """Fill rows a fresh store needs (inside the opening transaction)."""

    # -- plumbing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {self._KIND} store {what} failed: {exc}") from exc

    def _read_data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _check_cache(self) -> None:
        version = self._read_data_version()
        if version != self._data_version:
            self._cache.clear()
            self._data_version = version

    @contextlib.contextmanager
    def _transaction(self, what: str, touched: Iterable[str] = ()) -> Iterator[sqlite3.Connection]:
        """One write transaction; on any failure it rolls back and forgets ``touched``."""
        with self._errors(what):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_cache()
                yield self._conn
            except BaseException:
                for key in touched:
                    self._cache.pop(key, None)
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                for key in touched:
                    self._cache.pop(key, None)
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise

    def _decode(self, table: str, key: str, column: str, text: object) -> S:
        where = f"{self.path}: table {table}, row {key!r}, column {column}"
        if not isinstance(text, str):
            raise StoreCorrupt(f"{where}: expected JSON text, got {type(text).__name__}")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise StoreCorrupt(f"{where}: not valid JSON ({str(exc)[:80]})") from None
        try:
            return self._state_type.from_dict(data)
        except (ValueError, TypeError, RecursionError) as exc:
            raise StoreCorrupt(f"{where}: not a {self._state_type.__name__}: {exc}") from exc

    def _check_state(self, state: object, what: str = "delta") -> S:
        if type(state) is not self._state_type:
            raise WrongStateType(
                f"this store holds {self._state_type.__name__} states, got a {what} of type "
                f"{type(state).__name__}"
            )
        return state

    def _cached(self, list_id: str, text: object, table: str = "lists") -> S:
        state = self._cache.get(list_id)
        if state is None:
            state = self._decode(table, list_id, "state", text)
            self._cache[list_id] = state
        return state

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        self._cache.clear()
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- server -------------------------------------------------------------------------------


class ServerStore(_SqliteStore[S]):
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

    # -- lists --------------------------------------------------------------------------

    def apply_delta(self, list_id: str, delta: S, *, owner: str | None = None) -> str:
        """Join ``delta`` into the list (creating it if new) in one durable transaction.

        Args:
            list_id: the list's UUID.
            delta: a delta or a whole state of the store's type.
            owner: the owner's user id, recorded if the list has none yet.

        Returns:
            The digest of the list's new state; the write is on disk when this returns.

        Raises:
            InvalidListId, WrongStateType: bad arguments. ListDeleted: the owner deleted the
            list. AccessDenied: ``owner`` differs from the recorded owner. StoreCorrupt,
            StoreError: the file is damaged or the write failed.
        """
        check_list_id(list_id)
        self._check_state(delta)
        with self._transaction("apply", (list_id,)) as conn:
            digest = self._apply(conn, list_id, [delta], owner)
        if digest is None:
            raise ListDeleted(f"list {list_id} was deleted by its owner")
        return digest

    def apply_many(self, items: Iterable[tuple[str, S]]) -> dict[str, str]:
        """Apply many ``(list_id, delta)`` pairs in one durable transaction (group commit).

        Deltas for the same list are joined together and written once. Deltas for deleted
        lists are skipped; every other pair is applied, or (on error) none is.

        Returns:
            ``{list_id: new digest}`` for every list that took its deltas.

        Raises:
            InvalidListId, WrongStateType: a bad pair (checked before anything is written).
            StoreCorrupt, StoreError: the file is damaged or the write failed.
        """
        grouped: dict[str, list[S]] = {}
        for list_id, delta in items:
            check_list_id(list_id)
            grouped.setdefault(list_id, []).append(self._check_state(delta))
        result: dict[str, str] = {}
        if not grouped:
            return result
        with self._transaction("group apply", grouped) as conn:
            for list_id, deltas in grouped.items():
                digest = self._apply(conn, list_id, deltas, None)
                if digest is not None:
                    result[list_id] = digest
        return result

    def _apply(
        self, conn: sqlite3.Connection, list_id: str, deltas: list[S], owner: str | None
    ) -> str | None:
        row = conn.execute(
            "SELECT owner, state, deleted FROM lists WHERE list_id = ?", (list_id,)
        ).fetchone()
        if row is None:
            state = self._state_type()
            self._cache[list_id] = state
        else:
            known_owner, text, deleted = row
            if deleted:
                self._cache.pop(list_id, None)
                return None
            if owner is not None and known_owner is not None and owner != known_owner:
                raise AccessDenied(f"list {list_id} already has another owner")
            state = self._cached(list_id, text)
        for delta in deltas:
            state.join(delta)
        text = _encode(state)
        digest = _digest(text)
        if row is None:
            conn.execute(
                "INSERT INTO lists (list_id, owner, state, digest) VALUES (?, ?, ?, ?)",
                (list_id, owner, text, digest),
            )
        else:
            conn.execute(
                "UPDATE lists SET state = ?, digest = ?, owner = coalesce(owner, ?) "
                "WHERE list_id = ?",
                (text, digest, owner, list_id),
            )
        return digest

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
                text = _encode(self._state_type())
                conn.execute(
                    "INSERT INTO lists (list_id, owner, state, digest) VALUES (?, ?, ?, ?)",
                    (list_id, owner, text, _digest(text)),
                )
                return True
            if row[1]:
                raise ListDeleted(f"list {list_id} was deleted by its owner")
            if row[0] is not None and row[0] != owner:
                raise AccessDenied(f"list {list_id} already has another owner")
            conn.execute("UPDATE lists SET owner = ? WHERE list_id = ?", (owner, list_id))
            return False

    def load(self, list_id: str) -> S | None:
        """A copy of the list's state, or None if the list is unknown or deleted.

        Raises:
            InvalidListId: bad id. StoreCorrupt: the stored state does not decode.
        """
        check_list_id(list_id)
        with self._errors("read"):
            self._check_cache()
            row = self._conn.execute(
                "SELECT state, deleted FROM lists WHERE list_id = ?", (list_id,)
            ).fetchone()
        if row is None or row[1]:
            return None
        return self._cached(list_id, row[0]).copy()

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
        with self._transaction("delete", (list_id,)) as conn:
            row = conn.execute("SELECT owner FROM lists WHERE list_id = ?", (list_id,)).fetchone()
            if row is None or row[0] is None or row[0] != user_id:
                raise AccessDenied(f"only the owner of list {list_id} may delete it")
            self._tombstone(conn, list_id)

    def tombstone(self, list_id: str) -> None:
        """Record a deletion learned from a peer (which checked the owner)."""
        check_list_id(list_id)
        with self._transaction("tombstone", (list_id,)) as conn:
            self._tombstone(conn, list_id)

    def _tombstone(self, conn: sqlite3.Connection, list_id: str) -> None:
        text = _encode(self._state_type())
        conn.execute(
            "INSERT INTO lists (list_id, owner, state, digest, deleted) VALUES (?, NULL, ?, ?, 1) "
            "ON CONFLICT (list_id) DO UPDATE SET state = excluded.state, "
            "digest = excluded.digest, deleted = 1",
            (list_id, text, _digest(text)),
        )
        self._cache.pop(list_id, None)

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

    def digests(self) -> dict[str, str]:
        """``{list_id: digest}`` of every live list (the digest of its canonical JSON,
        equal to ``state.digest()``)."""
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT list_id, digest FROM lists WHERE deleted = 0"
            ).fetchall()
        return {
            self._text(k, "lists", "list_id"): self._text(d, "lists", "digest") for k, d in rows
        }

    def _text(self, value: object, table: str, column: str) -> str:
        if not isinstance(value, str):
            raise StoreCorrupt(f"{self.path}: table {table}, column {column}: not text")
        return value

    # -- accounts and sessions ----------------------------------------------------------

    def add_account(self, account: Account) -> None:
        """Record a new account.

        Raises:
            UserExists: the name (or the user id) is taken.
        """
        try:
            with self._transaction("add account") as conn:
                conn.execute(
                    "INSERT INTO accounts (user_id, name, password_hash, created) "
                    "VALUES (?, ?, ?, ?)",
                    (account.user_id, account.name, account.password_hash, account.created),
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise UserExists(f"the user name {account.name!r} is taken") from None
            raise

    def account_by_name(self, name: str) -> Account | None:
        """The account with this (normalised) name, if any."""
        return self._account("name", name)

    def account(self, user_id: str) -> Account | None:
        """The account with this user id, if any."""
        return self._account("user_id", user_id)

    def _account(self, column: str, value: str) -> Account | None:
        with self._errors("read"):
            row = self._conn.execute(
                "SELECT user_id, name, password_hash, created FROM accounts "
                f"WHERE {column} = ?",  # column is one of two literals above
                (value,),
            ).fetchone()
        if row is None:
            return None
        user_id, name, password_hash, created = row
        if not all(isinstance(v, str) for v in (user_id, name, password_hash)) or not (
            isinstance(created, float | int)
        ):
            raise StoreCorrupt(f"{self.path}: table accounts, row {value!r}: wrong column types")
        return Account(user_id, name, password_hash, float(created))

    def accounts(self) -> list[Account]:
        """Every account, by name (for replicating accounts between servers)."""
        with self._errors("read"):
            names = [r[0] for r in self._conn.execute("SELECT name FROM accounts ORDER BY name")]
        found = [self.account_by_name(n) for n in names]
        return [a for a in found if a is not None]

    def add_session(self, session: Session) -> None:
        """Record a session (replacing one with the same token hash)."""
        with self._transaction("add session") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO sessions (token_hash, user_id, expires) VALUES (?, ?, ?)",
                (session.token_hash, session.user_id, session.expires),
            )

    def session(self, token_hash: str) -> Session | None:
        """The session with this token hash, if any."""
        with self._errors("read"):
            row = self._conn.execute(
                "SELECT user_id, expires FROM sessions WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        if row is None:
            return None
        user_id, expires = row
        if not isinstance(user_id, str) or not isinstance(expires, float | int):
            raise StoreCorrupt(f"{self.path}: table sessions: wrong column types")
        return Session(token_hash, user_id, float(expires))

    def delete_session(self, token_hash: str) -> None:
        """Forget a session (no error if unknown)."""
        with self._transaction("delete session") as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    def purge_sessions(self, now: float) -> int:
        """Forget every session expired at ``now``; return how many."""
        with self._transaction("purge sessions") as conn:
            return conn.execute("DELETE FROM sessions WHERE expires <= ?", (now,)).rowcount


def _check_user_id(user_id: object) -> str:
    if not isinstance(user_id, str) or not 0 < len(user_id) <= 64:
        raise AccessDenied(f"an owner is a user id (1 to 64 characters), got {user_id!r:.60}")
    return user_id


# -- client -------------------------------------------------------------------------------


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


class ClientStore(_SqliteStore[S]):
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
        """Start tracking a list (a new one, or one shared by its id); True if new."""
        check_list_id(list_id)
        with self._transaction("add list") as conn:
            return self._ensure(conn, list_id)

    def _ensure(self, conn: sqlite3.Connection, list_id: str) -> bool:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO lists (list_id, state, next_seq) VALUES (?, ?, 1)",
            (list_id, _encode(self._state_type())),
        )
        return cursor.rowcount == 1

    def list_ids(self) -> list[str]:
        """The ids of the lists on this device, sorted."""
        with self._errors("read"):
            rows = self._conn.execute("SELECT list_id FROM lists ORDER BY list_id").fetchall()
        for (value,) in rows:
            if not isinstance(value, str):
                raise StoreCorrupt(f"{self.path}: table lists: a list id is not text")
        return [r[0] for r in rows]

    def load(self, list_id: str) -> S | None:
        """A copy of the local state of the list, or None if it is not on this device."""
        check_list_id(list_id)
        with self._errors("read"):
            self._check_cache()
            row = self._conn.execute(
                "SELECT state FROM lists WHERE list_id = ?", (list_id,)
            ).fetchone()
        if row is None:
            return None
        return self._cached(list_id, row[0]).copy()

    def edit(self, list_id: str, mutate: Callable[[S, str], S]) -> tuple[S, int]:
        """Apply a local edit durably: ``mutate(state, replica_id)`` changes the stored
        state in place and returns the delta (``lambda s, r: s.add(r, "milk")``).

        The new state and the queued delta are written in one transaction; the list is
        created if new.

        Returns:
            ``(delta, seq)``: the delta to send and its sequence number in the queue.

        Raises:
            Whatever ``mutate`` raises (nothing is written then). WrongStateType: ``mutate``
            returned something else than a delta of the store's type.
        """
        check_list_id(list_id)
        with self._transaction("edit", (list_id,)) as conn:
            self._ensure(conn, list_id)
            state = self._current(conn, list_id)
            delta = self._check_state(mutate(state, self._replica), "delta returned by mutate")
            seq = self._write_edit(conn, list_id, state, delta)
        return delta.copy(), seq

    def record_edit(self, list_id: str, state: S, delta: S) -> int:
        """Durably save a state changed by a local edit, and queue the edit's delta.

        For callers that keep the state in memory (a client core): ``state`` must include
        everything the store holds for the list (it is the stored state plus edits).

        Returns:
            The delta's sequence number in the queue.

        Raises:
            StaleState: ``state`` lacks something the store holds, or ``delta`` is not part
            of ``state``; nothing is written.
        """
        check_list_id(list_id)
        self._check_state(state, "state")
        self._check_state(delta)
        # Joins, not ``<=``: the lattice order does not compare payloads, so it would
        # accept a state that reused a stored dot for another payload.
        if delta | state != state:
            raise StaleState(f"list {list_id}: the delta is not part of the state to save")
        with self._transaction("edit", (list_id,)) as conn:
            self._ensure(conn, list_id)
            if self._current(conn, list_id) | state != state:
                raise StaleState(f"list {list_id}: the state to save lacks stored edits")
            kept = state.copy()
            self._cache[list_id] = kept
            return self._write_edit(conn, list_id, kept, delta)

    def _current(self, conn: sqlite3.Connection, list_id: str) -> S:
        row = conn.execute("SELECT state FROM lists WHERE list_id = ?", (list_id,)).fetchone()
        return self._cached(list_id, row[0])

    def _write_edit(self, conn: sqlite3.Connection, list_id: str, state: S, delta: S) -> int:
        row = conn.execute("SELECT next_seq FROM lists WHERE list_id = ?", (list_id,)).fetchone()
        seq = row[0]
        if type(seq) is not int or seq < 1:
            raise StoreCorrupt(f"{self.path}: table lists, row {list_id!r}: bad next_seq")
        conn.execute(
            "UPDATE lists SET state = ?, next_seq = ? WHERE list_id = ?",
            (_encode(state), seq + 1, list_id),
        )
        conn.execute(
            "INSERT INTO outbox (list_id, seq, delta) VALUES (?, ?, ?)",
            (list_id, seq, _encode(delta)),
        )
        return seq

    def merge(self, list_id: str, remote: S) -> S:
        """Durably join a delta or state received from the cluster into the local state.

        Returns:
            A copy of the new local state.
        """
        check_list_id(list_id)
        self._check_state(remote)
        with self._transaction("merge", (list_id,)) as conn:
            self._ensure(conn, list_id)
            state = self._current(conn, list_id)
            state.join(remote)
            conn.execute("UPDATE lists SET state = ? WHERE list_id = ?", (_encode(state), list_id))
        return state.copy()

    def forget(self, list_id: str) -> None:
        """Remove a list and its queued deltas from this device (after it was deleted)."""
        check_list_id(list_id)
        with self._transaction("forget", (list_id,)) as conn:
            conn.execute("DELETE FROM outbox WHERE list_id = ?", (list_id,))
            conn.execute("DELETE FROM lists WHERE list_id = ?", (list_id,))
            self._cache.pop(list_id, None)

    # -- the queue of unacknowledged deltas ---------------------------------------------

    def pending(self, list_id: str) -> list[tuple[int, S]]:
        """The queued deltas of a list, ``(seq, delta)`` in order."""
        check_list_id(list_id)
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT seq, delta FROM outbox WHERE list_id = ? ORDER BY seq", (list_id,)
            ).fetchall()
        out: list[tuple[int, S]] = []
        for seq, text in rows:
            if type(seq) is not int:
                raise StoreCorrupt(f"{self.path}: table outbox, list {list_id!r}: bad seq")
            out.append((seq, self._decode("outbox", f"{list_id}#{seq}", "delta", text)))
        return out

    def pending_lists(self) -> list[str]:
        """The ids of the lists with queued deltas, sorted."""
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT DISTINCT list_id FROM outbox ORDER BY list_id"
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
