"""Durable SQLite stores: one per server (:class:`ServerStore`), one per user and device
(:class:`~reference_cluster.storage.client_store.ClientStore`, re-exported here).

Every write is one durable transaction (WAL, ``synchronous=FULL``): a server acknowledges
an edit only after the method that applied it returned. The rules the stores keep are in
:mod:`reference_cluster.storage.sqlite`. The stores are generic in the state type
(``ServerStore(path, ShoppingList)``, ``ServerStore(path, AWORSet)``): any
:class:`crdts.Crdt` with ``from_dict``/``to_dict``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from reference_cluster.cores.accounts import Account, Session
from reference_cluster.errors import (
    AccessDenied,
    ListDeleted,
    StoreCorrupt,
    StoreError,
    UserExists,
)
from reference_cluster.storage.client_store import ClientSession, ClientStore, StoredList
from reference_cluster.storage.sqlite import S, SqliteStore, check_list_id, digest_of, encode

__all__ = [
    "ClientSession",
    "ClientStore",
    "ServerStore",
    "StoredList",
    "check_list_id",
]

_SERVER_APP_ID = 0x53484C53  # "SHLS"

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
        text = encode(state)
        digest = digest_of(text)
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
                text = encode(self._state_type())
                conn.execute(
                    "INSERT INTO lists (list_id, owner, state, digest) VALUES (?, ?, ?, ?)",
                    (list_id, owner, text, digest_of(text)),
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

    def load_all(self) -> dict[str, S]:
        """Copies of every live list's state (what a server core starts from).

        Raises:
            StoreCorrupt: a stored state does not decode.
        """
        states: dict[str, S] = {}
        for list_id in self.list_ids():
            state = self.load(list_id)
            if state is not None:  # not ``if state``: an empty list is falsy
                states[list_id] = state
        return states

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
        text = encode(self._state_type())
        conn.execute(
            "INSERT INTO lists (list_id, owner, state, digest, deleted) VALUES (?, NULL, ?, ?, 1) "
            "ON CONFLICT (list_id) DO UPDATE SET state = excluded.state, "
            "digest = excluded.digest, deleted = 1",
            (list_id, text, digest_of(text)),
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
        text = encode(self._state_type())
        with self._transaction("set owner") as conn:
            conn.execute(
                "INSERT INTO lists (list_id, owner, state, digest) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (list_id) DO UPDATE SET owner = excluded.owner",
                (list_id, owner, text, digest_of(text)),
            )

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
                "SELECT user_id, name, password_hash, created FROM accounts "
                "WHERE user_id = ? OR name = ?",
                (account.user_id, account.name),
            ).fetchall()
            if not clash:
                conn.execute(
                    "INSERT INTO accounts (user_id, name, password_hash, created) "
                    "VALUES (?, ?, ?, ?)",
                    (account.user_id, account.name, account.password_hash, account.created),
                )
                return True
        mine = (account.user_id, account.name, account.password_hash, account.created)
        if len(clash) == 1 and tuple(clash[0]) == mine:
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
            conn.execute(
                "INSERT INTO accounts (user_id, name, password_hash, created) VALUES (?, ?, ?, ?)",
                (account.user_id, account.name, account.password_hash, account.created),
            )
        return dropped

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

    def sessions(self) -> list[Session]:
        """Every session, by token hash (for replicating sessions between servers)."""
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT token_hash, user_id, expires FROM sessions ORDER BY token_hash"
            ).fetchall()
        out = []
        for token_hash, user_id, expires in rows:
            if not isinstance(token_hash, str) or not isinstance(user_id, str):
                raise StoreCorrupt(f"{self.path}: table sessions: wrong column types")
            if not isinstance(expires, float | int):
                raise StoreCorrupt(f"{self.path}: table sessions: wrong column types")
            out.append(Session(token_hash, user_id, float(expires)))
        return out

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
