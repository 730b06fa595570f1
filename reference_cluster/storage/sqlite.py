"""What both SQLite stores share: opening and checking the file, write transactions,
decoding rows, and the cache of decoded states.

Theory of operation
-------------------
Rule 1 (durable before visible). Every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT``
transaction in WAL mode with ``synchronous=FULL``: when a write method returns, the write
survives a crash of the process or the machine.

Rule 2 (what is on disk is data, never code). States are stored as the canonical JSON of
``to_dict()`` and read back with ``json.loads`` and ``from_dict``; a row that does not
decode raises :class:`~reference_cluster.errors.StoreCorrupt` naming the table and row.
Nothing read from disk reaches ``eval``, ``exec`` or ``pickle``.

Rule 3 (the cache never lies). A store keeps the decoded states it has read, so that
applying a delta costs a join and an encode, not a decode. The cache is dropped whenever
``PRAGMA data_version`` shows that another connection wrote the file, and an entry is
dropped when the transaction that changed it fails.

Rule 4 (each file says what it is). A store stamps its kind in ``PRAGMA application_id``
and its schema version in ``PRAGMA user_version``; any other file is refused with
:class:`~reference_cluster.errors.StoreError`.

Rule 5 (private files). A store file is created readable and writable by its owner only
(0600), and an existing file, ``-wal`` or ``-shm`` that others may read is tightened to
that when the store opens it (SQLite gives the ``-wal`` and ``-shm`` files it creates the
mode of the database file). :func:`make_private_folder` creates the folders that hold
stores 0700. A mode that cannot be changed (another user's file) is logged, not fatal.

A store object belongs to the thread that opened it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import stat
import uuid
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Generic, Self, TypeVar

from crdts import Crdt
from crdts._codec import canonical_json
from reference_cluster.errors import InvalidListId, StoreCorrupt, StoreError, WrongStateType

__all__ = [
    "FILE_MODE",
    "FOLDER_MODE",
    "SCHEMA_VERSION",
    "S",
    "SqliteStore",
    "check_list_id",
    "digest_of",
    "encode",
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


def encode(state: Crdt) -> str:
    """The canonical JSON text of a state, as stored."""
    return canonical_json(state.to_dict()).decode("ascii")


def digest_of(text: str) -> str:
    """SHA-256 (hex) of stored text; for a state's encoding it equals ``state.digest()``."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()


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
    """What both stores share: opening, schema check, transactions, decoding, the cache.

    Subclasses set ``_APP_ID``, ``_SCHEMA`` (statements separated by ``;``) and ``_KIND``,
    and may fill rows a fresh file needs in :meth:`_init_rows`.
    """

    _APP_ID: int
    _SCHEMA: str
    _KIND: str

    def __init__(self, path: str | os.PathLike[str], state_type: type[S]) -> None:
        if not (isinstance(state_type, type) and issubclass(state_type, Crdt)):
            raise TypeError(f"state_type must be a crdts.Crdt subclass, got {state_type!r}")
        self.path = os.fspath(path)
        self._state_type = state_type
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
                    for statement in self._SCHEMA.split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
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
