"""What both SQLite stores share: opening and checking the file, write transactions,
decoding rows, the per-list delta log, and the cache of decoded states.

Theory of operation
-------------------
Rule 1 (durable before visible). Every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT``
transaction in WAL mode with ``synchronous=FULL``: when a write method returns, the write
survives a crash of the process or the machine.

Rule 2 (what is on disk is data, never code). States are stored as the canonical JSON of
``to_dict()`` and read back with ``json.loads`` and ``from_dict``; a row that does not
decode raises :class:`~reference_cluster.errors.StoreCorrupt` naming the table and row
(the server store sets such a row aside instead). Nothing read from disk reaches
``eval``, ``exec`` or ``pickle``.

Rule 3 (the cache never lies). The client store keeps the decoded states it has read (base
joined with log), so that an edit costs a mutation and the delta's encoding, not a decode.
The cache is dropped whenever ``PRAGMA data_version`` shows that another connection wrote
the file, and an entry is dropped when the transaction that changed it fails. The server
store keeps no decoded state: its core holds a bounded cache of its own.

Rule 4 (each file says what it is). A store stamps its kind in ``PRAGMA application_id``
and its schema version in ``PRAGMA user_version``; any other file is refused with
:class:`~reference_cluster.errors.StoreError`. Tables and columns added since version 1
(the log, ``base_bytes``, the server's quarantine) are created by every open if missing,
without a version change.

Rule 5 (private files). A store file is created readable and writable by its owner only
(0600), and an existing file, ``-wal`` or ``-shm`` that others may read is tightened to
that when the store opens it (SQLite gives the ``-wal`` and ``-shm`` files it creates the
mode of the database file). :func:`make_private_folder` creates the folders that hold
stores 0700. A mode that cannot be changed (another user's file) is logged, not fatal.

Rule 6 (a write costs the delta). Each list has a stored state, its *base* (the ``state``
column of ``lists``), and a *log* (table ``list_log``): a write appends one row holding
the join of the transaction's deltas for that list, with the SHA-256 of its text, and
leaves the base alone. A list's state is its base joined with every row of its log, in
any order (a join is commutative, associative and idempotent, so a row read twice or a
fold that ran before a crash changes nothing).

Rule 7 (folding is paid for by the writes). Each log row records how many characters the
list's log holds with it (``logged``); once that exceeds the base's length (``lists.
base_bytes``) or :data:`FOLD_MIN_BYTES`, whichever is larger, the same transaction
*folds*: it joins base and log, writes the result as the new base and drops the log rows.
A fold costs O(state), and it comes only after O(state) characters of deltas, so a write
costs O(delta) amortised, and the log never holds much more than the base.

Rule 8 (quiet logs drain). A list that was written a few times and then left alone keeps
its log until it is next written, and a restart folds it (the replay). So that a restart
replays only what was written lately, a server calls :meth:`SqliteStore.fold_quiet` now
and then: it folds a bounded number of lists whose log rows are older than its previous
call.

A store object belongs to the thread that opened it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Generic, Self, TypeVar

import attrs

from crdts import Crdt
from crdts._codec import canonical_json
from reference_cluster.errors import InvalidListId, StoreCorrupt, StoreError, WrongStateType

__all__ = [
    "FILE_MODE",
    "FOLDER_MODE",
    "FOLD_MIN_BYTES",
    "SCHEMA_VERSION",
    "LogRow",
    "S",
    "SqliteStore",
    "check_list_id",
    "digest_of",
    "encode",
    "join_all",
    "make_private_file",
    "make_private_folder",
]

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Crdt)
SCHEMA_VERSION = 1
FILE_MODE = 0o600
"""The mode of store files (and their ``-wal`` and ``-shm`` files): the owner only."""
FOLDER_MODE = 0o700
"""The mode of the folders the program creates for stores, keys and logs."""
_SIDE_FILES = ("-wal", "-shm", "-journal")
# What str(uuid.UUID(...)) gives: lower-case hex, hyphenated 8-4-4-4-12 (ASCII only).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FOLD_MIN_BYTES = 4096
"""A list's log is folded once it holds more characters than this and than its base
(Rule 7)."""

# The delta log (Rules 6 and 7), added after schema version 1 shipped, without a version
# change: every open creates what is missing. ``logged`` is the number of characters of
# the list's log up to and including the row, so that a write reads one index entry to
# know when to fold, and writes nothing to the list's row.
_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS list_log (
    seq     INTEGER PRIMARY KEY,
    list_id TEXT NOT NULL,
    delta   TEXT NOT NULL,
    digest  TEXT NOT NULL,
    logged  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS list_log_list ON list_log (list_id)
"""
# Read as bytes with their storage class, so that text that is no longer UTF-8 is a
# damaged row, not an exception in the driver.
_RAW_LOG = "seq, CAST(delta AS BLOB), typeof(delta), CAST(digest AS BLOB), typeof(digest)"


def check_list_id(list_id: object) -> str:
    """Return ``list_id`` if it is a UUID in canonical text form (lower-case, hyphenated).

    Raises:
        InvalidListId: anything else.
    """
    if isinstance(list_id, str) and _CANONICAL_UUID.fullmatch(list_id):
        return list_id
    shown = repr(list_id)[:60]
    raise InvalidListId(f"a list id is a UUID like '{uuid.UUID(int=0)}', got {shown}")


def encode(state: Crdt) -> str:
    """The canonical JSON text of a state, as stored."""
    return canonical_json(state.to_dict()).decode("ascii")


def digest_of(text: str) -> str:
    """SHA-256 (hex) of stored text; for a state's encoding it equals ``state.digest()``."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def join_all(deltas: Sequence[S]) -> S:
    """The join of one or more deltas: the only one itself, else a new state (the
    arguments are left as they are)."""
    if len(deltas) == 1:
        return deltas[0]
    joined = deltas[0].copy()
    for delta in deltas[1:]:
        joined.join(delta)
    return joined


@attrs.frozen
class LogRow:
    """One row of a list's delta log as stored: bytes and their storage class."""

    seq: int
    delta: bytes | None
    delta_type: str
    digest: bytes | None
    digest_type: str


def make_private_folder(folder: str | os.PathLike[str]) -> None:
    """Create ``folder`` and any missing parents, each with mode :data:`FOLDER_MODE`
    (whatever the umask); folders that exist already are left as they are.

    Raises:
        NotADirectoryError: ``folder`` or a folder above it is a file.
        OSError: a folder cannot be created.
    """
    path = os.path.abspath(os.fspath(folder))
    missing: list[str] = []
    while not os.path.isdir(path):
        if os.path.lexists(path):
            raise NotADirectoryError(f"{path} is a file, not a folder")
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, FOLDER_MODE)
        except FileExistsError:
            if not os.path.isdir(path):
                raise NotADirectoryError(f"{path} is a file, not a folder") from None
            continue  # made meanwhile by someone else: theirs to keep as it is
        os.chmod(path, FOLDER_MODE)  # the umask may have taken bits away


def _tighten(name: str, fd: int | None = None) -> None:
    """Take every group and other permission away from a regular file (Rule 5)."""
    target = name if fd is None else fd
    try:
        mode = os.stat(target).st_mode
        if stat.S_ISREG(mode) and stat.S_IMODE(mode) & 0o077:
            os.chmod(target, stat.S_IMODE(mode) & FILE_MODE)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot make %s private (mode %o): %s", name, FILE_MODE, exc)


def make_private_file(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty with mode :data:`FILE_MODE` if it is missing, and take group
    and other permissions away from it and from its SQLite side files (``-wal``,
    ``-shm``) if they have any (Rule 5). A path that cannot be opened is left for SQLite
    to report."""
    name = os.fspath(path)
    if name in ("", ":memory:"):
        return
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError:
        return
    try:
        _tighten(name, fd)
    finally:
        os.close(fd)
    for suffix in _SIDE_FILES:
        _tighten(name + suffix)


class SqliteStore(Generic[S]):
    """What both stores share: opening, schema check, transactions, decoding, the delta
    log, the cache.

    Subclasses set ``_APP_ID``, ``_SCHEMA`` (statements separated by ``;``) and ``_KIND``,
    may fill rows a fresh file needs in :meth:`_init_rows`, and say how a list's state is
    read for a fold, damage included (:meth:`_logged_state`). Their schema has a table
    ``lists`` keyed by ``list_id`` with the base in ``state`` (and, if ``_BASE_DIGEST``,
    its SHA-256 in ``digest``).

    Attributes:
        fold_min_bytes: the smallest log that is folded (Rule 7); tests lower it on a
            store to fold often.
    """

    _APP_ID: int
    _SCHEMA: str
    _KIND: str
    _BASE_DIGEST = False
    fold_min_bytes: int = FOLD_MIN_BYTES

    def __init__(self, path: str | os.PathLike[str], state_type: type[S]) -> None:
        if not (isinstance(state_type, type) and issubclass(state_type, Crdt)):
            raise TypeError(f"state_type must be a crdts.Crdt subclass, got {state_type!r}")
        self.path = os.fspath(path)
        self._state_type = state_type
        self._fold_mark: int | None = None
        self._cache: dict[str, S] = {}
        make_private_file(self.path)
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
                    self._execute_all(self._SCHEMA)
                    self._conn.execute(f"PRAGMA application_id={self._APP_ID}")
                    self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                elif app_id != self._APP_ID:
                    raise StoreError(
                        f"{self.path}: not a {self._KIND} store (application id {app_id:#x}, "
                        f"expected {self._APP_ID:#x})"
                    )
                elif version != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path}: {self._KIND} store schema version {version}, this "
                        f"program reads version {SCHEMA_VERSION}"
                    )
                self._init_log()
                self._init_rows()
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            self._data_version = self._read_data_version()
        for suffix in _SIDE_FILES:  # WAL mode has just created them (Rule 5)
            _tighten(self.path + suffix)

    def _init_rows(self) -> None:
        """Fill rows a fresh store needs (inside the opening transaction)."""

    def _execute_all(self, statements: str) -> None:
        """Run SQL statements separated by ``;`` (schema text: no ``;`` inside one)."""
        for statement in statements.split(";"):
            if statement.strip():
                self._conn.execute(statement)

    def _init_log(self) -> None:
        """Add the delta log and the base's length column if the file lacks them."""
        self._execute_all(_LOG_SCHEMA)
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(lists)")}
        if "base_bytes" not in have:
            self._conn.execute("ALTER TABLE lists ADD COLUMN base_bytes INTEGER")

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
                self._conn.execute("COMMIT")
            except BaseException:
                for key in touched:
                    self._cache.pop(key, None)
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction, so that several statements see one snapshot (inside a
        write transaction: that one)."""
        with self._errors("read"):
            if self._conn.in_transaction:
                yield self._conn
                return
            self._conn.execute("BEGIN")
            try:
                self._check_cache()
                yield self._conn
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("COMMIT")

    # -- the delta log (Rules 6 and 7) --------------------------------------------------

    def fold(self, list_id: str) -> None:
        """Join the list's log into its stored state now, in one durable transaction (a
        list without log rows, or unknown, is left as it is). Writes fold by themselves
        (Rule 7); this is for tests and tools.

        Raises:
            InvalidListId: bad id. StoreError: the write failed.
        """
        check_list_id(list_id)
        with self._transaction("fold", (list_id,)) as conn:
            if (
                self._has_log(conn, list_id)
                and conn.execute("SELECT 1 FROM lists WHERE list_id = ?", (list_id,)).fetchone()
            ):
                self._fold(conn, list_id)

    def fold_quiet(self, limit: int) -> int:
        """Fold up to ``limit`` lists whose oldest log row was written before the previous
        call, oldest first, in one durable transaction (Rule 8); return how many.

        Raises:
            StoreError: the write failed.
        """
        mark, self._fold_mark = self._fold_mark, self._log_end()
        if mark is None or limit < 1:
            return 0
        with self._transaction("fold quiet lists") as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT list_id FROM list_log WHERE seq <= ? ORDER BY seq LIMIT ?",
                    (mark, limit * 4),
                )
            ]
            quiet = list(dict.fromkeys(i for i in ids if isinstance(i, str)))[:limit]
            for list_id in quiet:
                if conn.execute("SELECT 1 FROM lists WHERE list_id = ?", (list_id,)).fetchone():
                    self._fold(conn, list_id)
        return len(quiet)

    def _log_end(self) -> int:
        with self._errors("read"):
            (end,) = self._conn.execute("SELECT coalesce(max(seq), 0) FROM list_log").fetchone()
        return int(end)

    def _has_log(self, conn: sqlite3.Connection, list_id: str) -> bool:
        row = conn.execute("SELECT 1 FROM list_log WHERE list_id = ? LIMIT 1", (list_id,))
        return row.fetchone() is not None

    def _append(self, conn: sqlite3.Connection, list_id: str, deltas: Sequence[S]) -> None:
        """Log the join of ``deltas`` as one row of the list's log and fold the log if it
        now outweighs the base (Rules 6 and 7). The list's row must exist."""
        text = encode(join_all(deltas))
        last = conn.execute(
            "SELECT logged FROM list_log WHERE list_id = ? ORDER BY seq DESC LIMIT 1", (list_id,)
        ).fetchone()
        before = 0 if last is None else last[0]
        logged = len(text) + (before if type(before) is int and before >= 0 else 0)
        conn.execute(
            "INSERT INTO list_log (list_id, delta, digest, logged) VALUES (?, ?, ?, ?)",
            (list_id, text, digest_of(text), logged),
        )
        (base,) = conn.execute(
            "SELECT coalesce(base_bytes, length(state)) FROM lists WHERE list_id = ?", (list_id,)
        ).fetchone()
        if type(before) is not int or type(base) is not int:
            base = -1  # a damaged counter: folding writes both afresh
        if logged > max(base, self.fold_min_bytes) or base < 0:
            self._fold(conn, list_id)

    def _fold(self, conn: sqlite3.Connection, list_id: str) -> S:
        """Write the list's base joined with its log as the new base, drop the log rows,
        and return the state."""
        state = self._logged_state(conn, list_id)
        self._write_base(conn, list_id, state)
        return state

    def _logged_state(self, conn: sqlite3.Connection, list_id: str) -> S:
        """The list's base joined with every row of its log, inside a write transaction;
        each store handles a damaged base or log row its own way."""
        raise NotImplementedError

    def _write_base(self, conn: sqlite3.Connection, list_id: str, state: S) -> None:
        """Store ``state`` as the list's base (with its digest) and drop its log rows."""
        text = encode(state)
        if self._BASE_DIGEST:
            conn.execute(
                "UPDATE lists SET state = ?, digest = ?, base_bytes = ? WHERE list_id = ?",
                (text, digest_of(text), len(text), list_id),
            )
        else:
            conn.execute(
                "UPDATE lists SET state = ?, base_bytes = ? WHERE list_id = ?",
                (text, len(text), list_id),
            )
        conn.execute("DELETE FROM list_log WHERE list_id = ?", (list_id,))

    def _log_of(self, conn: sqlite3.Connection, list_id: str) -> list[LogRow]:
        """The list's log rows, oldest first."""
        return self._log_rows(conn, "list_id = ?", (list_id,))

    def _log_rows(
        self, conn: sqlite3.Connection, where: str = "1", args: tuple[object, ...] = ()
    ) -> list[LogRow]:
        """The log rows that ``where`` (SQL written by the store, never from input)
        picks, oldest first."""
        rows = conn.execute(f"SELECT {_RAW_LOG} FROM list_log WHERE {where} ORDER BY seq", args)
        return [LogRow(*r) for r in rows.fetchall()]

    def _replay(
        self, state: S, rows: Iterable[LogRow], damaged: Callable[[LogRow, str], object]
    ) -> S:
        """Join every sound log row into ``state`` (in place) and return it; each damaged
        row goes to ``damaged`` with what is wrong with it."""
        for row in rows:
            reason, delta = self._stored_problem(
                "delta", row.delta, row.delta_type, row.digest, row.digest_type
            )
            if delta is None:
                damaged(row, reason or "unreadable")
            else:
                state.join(delta)
        return state

    def _stored_problem(
        self,
        column: str,
        raw: bytes | None,
        kind: str,
        digest: bytes | None,
        digest_kind: str,
    ) -> tuple[str | None, S | None]:
        """``(None, state)`` if ``raw`` is the ASCII canonical JSON of a state whose
        SHA-256 is ``digest``; else ``(what is wrong, None)``."""
        if kind != "text" or raw is None:
            return f"column {column}: expected JSON text, got {kind}", None
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return f"column {column}: not ASCII text (a stored state is canonical JSON)", None
        try:
            state = self._decode_text(f"column {column}", text)
        except StoreCorrupt as exc:
            return str(exc), None
        stored = (digest or b"").decode("ascii", "backslashreplace")
        actual = digest_of(text)
        if digest_kind != "text" or stored != actual:
            return (
                f"the {column} does not match its digest (stored {stored[:16]!r}..., the "
                f"text hashes to {actual[:16]!r}...)",
                None,
            )
        return None, state

    # -- decoding -----------------------------------------------------------------------

    def _decode(self, table: str, key: str, column: str, text: object) -> S:
        where = f"{self.path}: table {table}, row {key!r}, column {column}"
        if not isinstance(text, str):
            raise StoreCorrupt(f"{where}: expected JSON text, got {type(text).__name__}")
        return self._decode_text(where, text)

    def _decode_text(self, where: str, text: str) -> S:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise StoreCorrupt(f"{where}: not valid JSON ({str(exc)[:80]})") from None
        try:
            return self._state_type.from_dict(data)
        except (ValueError, TypeError, RecursionError) as exc:
            raise StoreCorrupt(f"{where}: not a {self._state_type.__name__}: {exc}") from exc

    def _check_state(self, state: object, what: str = "delta") -> S:
        if not isinstance(state, self._state_type):  # (a light delta is a subclass)
            raise WrongStateType(
                f"this store holds {self._state_type.__name__} states, got a {what} of type "
                f"{type(state).__name__}"
            )
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
