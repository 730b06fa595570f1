"""The servers' directory: accounts, sessions and list owners, replicated between servers.

Theory of operation
-------------------
Rule 1 (what it holds). Accounts (user id, name, scrypt hash of the password, creation
time), sessions (the SHA-256 of a token, the user, the expiry) and the owner of each list.
The server's store keeps them durably; the directory mirrors them in memory, so checking
a token costs a hash and a dictionary lookup. Every change is written to the store (one
transaction) before it is used or sent.

Rule 2 (sign-up and login). A sign-up creates the account and opens a session in one
request. Signing up with a name that exists and the right password logs in instead, so a
sign-up retried after a lost reply (perhaps at another server, which has meanwhile learned
the account) still succeeds. Unknown names and wrong passwords fail alike
(``login_failed``).

Rule 3 (admission). Every sync carries a session token. No token, a malformed or an
expired one: ``unauthorized``. A well-formed token this server does not know:
``unknown_session``, which clients retry, because a session opened at another server a
moment ago may still be on its way here.

Rule 4 (ownership). The first admitted push of a list whose owner is unknown makes the
pusher its owner (normally the creator, whose client pushes the list when it syncs).
A push whose delta carries the list's tombstone (a delete) is refused with ``forbidden``
unless it comes from the owner. Ownership never changes afterwards, except to settle a race.

Rule 5 (replication). Each change is pushed at once to every peer
(:class:`~reference_cluster.protocol.messages.DirectoryPush`). Every anti-entropy interval the
server sends the digest of its whole directory; a peer whose digest differs answers with
its whole directory, and the first answers back with its own if they still differ. Merging
is idempotent and order-free, and races are settled the same way everywhere:

* one name, two accounts (signed up on both sides of a partition): the account created
  first wins, then the smaller user id; the loser's account and sessions are dropped;
* one list, two owners: the smaller user id wins;
* a session is taken only for an account known here (accounts travel first), and expired
  sessions are dropped at every round.

Rule 6 (no I/O here). The store is passed in (the server's
:class:`~reference_cluster.storage.server_store.ServerStore`), the time comes in as ``now``, and
messages go out as :class:`~reference_cluster.protocol.effects.Send` effects.

The peer end point that carries these messages must be reachable by servers (and
operators) only: a directory push is trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import attrs

from crdts._codec import canonical_json
from reference_cluster.cores.accounts import (
    DEFAULT_SCRYPT,
    DEFAULT_SESSION_TTL,
    Account,
    Accounts,
    ScryptParams,
    Session,
    hash_token,
    new_token,
    normalize_user_name,
    verify_password,
)
from reference_cluster.errors import (
    ClusterError,
    InvalidPassword,
    InvalidUserName,
    LoginFailed,
    SessionInvalid,
    StoreError,
    UserExists,
)
from reference_cluster.protocol.effects import Send
from reference_cluster.protocol.messages import (
    AccountRequest,
    DirectoryDigest,
    DirectoryPush,
    ErrorReply,
    ListsReply,
    ListsRequest,
    LogIn,
    SignUp,
    SyncRequest,
    Welcome,
)

__all__ = ["Directory", "DirectoryStore"]

log = logging.getLogger(__name__)


class DirectoryStore(Protocol):
    """What the directory needs from a durable store (``ServerStore`` has it all)."""

    def add_account(self, account: Account) -> None: ...
    def put_account(self, account: Account) -> bool: ...
    def replace_account(self, account: Account) -> list[str]: ...
    def account_by_name(self, name: str) -> Account | None: ...
    def accounts(self) -> list[Account]: ...
    def add_session(self, session: Session) -> None: ...
    def session(self, token_hash: str) -> Session | None: ...
    def delete_session(self, token_hash: str) -> None: ...
    def sessions(self) -> list[Session]: ...
    def purge_sessions(self, now: float) -> int: ...
    def owners(self) -> dict[str, str]: ...
    def set_owner(self, list_id: str, owner: str) -> None: ...


def _account_wire(a: Account) -> dict[str, Any]:
    return {
        "user_id": a.user_id,
        "name": a.name,
        "password_hash": a.password_hash,
        "created": a.created,
    }


def _session_wire(s: Session) -> dict[str, Any]:
    return {"token_hash": s.token_hash, "user_id": s.user_id, "expires": s.expires}


def _wins(a: Account, b: Account) -> bool:
    """Whether account ``a`` beats ``b`` for a name (Rule 5)."""
    return (a.created, a.user_id) < (b.created, b.user_id)


def _digest(
    accounts: Iterable[Account], sessions: Iterable[Session], owners: Mapping[str, str]
) -> str:
    data = {
        "accounts": sorted(
            [a.user_id, a.name, a.password_hash, float(a.created)] for a in accounts
        ),
        "sessions": sorted([s.token_hash, s.user_id, float(s.expires)] for s in sessions),
        "owners": sorted([k, v] for k, v in owners.items()),
    }
    return hashlib.sha256(canonical_json(data)).hexdigest()


class Directory:
    """One server's directory: answers account requests, admits syncs, replicates.

    Args:
        server_id: this server's id (the ``origin`` of its pushes).
        store: the durable store (Rule 6).
        peers: the other servers' ids.
        interval: seconds between anti-entropy rounds.
        ttl: how long a session lasts.
        params: the scrypt cost of new password hashes.
    """

    def __init__(
        self,
        server_id: str,
        store: DirectoryStore,
        *,
        peers: Sequence[str],
        interval: float = 2.0,
        ttl: float = DEFAULT_SESSION_TTL,
        params: ScryptParams = DEFAULT_SCRYPT,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"the anti-entropy interval must be > 0, got {interval!r}")
        self.server_id = server_id
        self.peers = tuple(sorted(set(peers) - {server_id}))
        self.interval = interval
        self._store = store
        self._ttl = ttl
        self._service = Accounts(store, ttl=ttl, params=params)
        self._accounts: dict[str, Account] = {a.user_id: a for a in store.accounts()}
        self._by_name: dict[str, str] = {a.name: a.user_id for a in self._accounts.values()}
        self._sessions: dict[str, Session] = {s.token_hash: s for s in store.sessions()}
        self._owners: dict[str, str] = store.owners()
        self._digest_cache: str | None = None
        self._round_at: float | None = None
        self._outbox: list[Send] = []

    # -- readers --------------------------------------------------------------------------

    def owner(self, list_id: str) -> str | None:
        """The user id of the list's owner, if known here."""
        return self._owners.get(list_id)

    def owned_by(self, user_id: str) -> list[str]:
        """The ids of the lists ``user_id`` owns, sorted."""
        return sorted(k for k, v in self._owners.items() if v == user_id)

    def account(self, user_id: str) -> Account | None:
        """The account with this user id, if known here."""
        return self._accounts.get(user_id)

    @property
    def digest(self) -> str:
        """The digest of the whole directory (what anti-entropy compares)."""
        if self._digest_cache is None:
            self._digest_cache = _digest(
                self._accounts.values(), self._sessions.values(), self._owners
            )
        return self._digest_cache

    def take_outgoing(self) -> list[Send]:
        """The pushes to peers caused by the last calls (the shell sends them)."""
        out, self._outbox = self._outbox, []
        return out

    # -- client requests (Rules 2 and 3) --------------------------------------------------

    def handle(self, request: AccountRequest, now: float) -> Welcome | ListsReply | ErrorReply:
        """Answer a sign-up, a login or a lists request.

        Store errors are answered ``persist_failed`` (the client may retry).
        """
        rid = request.request_id
        try:
            if isinstance(request, SignUp):
                return self._sign_up(request, now)
            if isinstance(request, LogIn):
                return self._log_in(request.request_id, request.name, request.password, now)
            assert isinstance(request, ListsRequest)
            user = self.authenticate(request.token, now)
            if isinstance(user, ErrorReply):
                return user
            return ListsReply(rid, user, tuple(self.owned_by(user)))
        except (InvalidUserName, InvalidPassword) as exc:
            return ErrorReply.about(rid, "invalid", exc)
        except LoginFailed as exc:
            return ErrorReply.about(rid, "login_failed", exc)
        except UserExists as exc:
            return ErrorReply.about(rid, "user_exists", exc)
        except StoreError as exc:
            log.error("directory %s: store failed: %s", self.server_id, exc)
            return ErrorReply(rid, "persist_failed", "the server could not write its store")

    def _sign_up(self, request: SignUp, now: float) -> Welcome | ErrorReply:
        name = normalize_user_name(request.name)
        known = self._by_name.get(name)
        if known is not None:
            account = self._accounts[known]
            if not verify_password(request.password, account.password_hash):
                raise UserExists(f"the user name {name!r} is taken")
            welcome, session = self._open_session(request.request_id, account, now)
            self._push(sessions=[session])
            return welcome
        account = self._service.sign_up(name, request.password, now)
        self._remember_account(account)
        welcome, session = self._open_session(request.request_id, account, now)
        welcome = attrs.evolve(welcome, created=True)
        log.info("directory %s: signed up %s", self.server_id, name)
        self._push(accounts=[account], sessions=[session])  # together: Rule 5
        return welcome

    def _log_in(self, rid: str, name: str, password: str, now: float) -> Welcome:
        result = self._service.log_in(name, password, now)
        session = Session(hash_token(result.token), result.user_id, result.expires)
        self._remember_session(session)
        self._push(sessions=[session])
        return Welcome(rid, result.user_id, result.name, result.token, result.expires)

    def _open_session(self, rid: str, account: Account, now: float) -> tuple[Welcome, Session]:
        token = new_token()
        session = Session(hash_token(token), account.user_id, float(now) + self._ttl)
        self._store.add_session(session)
        self._remember_session(session)
        return Welcome(rid, account.user_id, account.name, token, session.expires), session

    def authenticate(self, token: str | None, now: float) -> str | ErrorReply:
        """The user id of a session token, or the error to answer (Rule 3)."""
        if token is None:
            return ErrorReply(None, "unauthorized", "no session token: log in first")
        try:
            token_hash = hash_token(token)
        except SessionInvalid as exc:
            return ErrorReply.about(None, "unauthorized", exc)
        session = self._sessions.get(token_hash)
        if session is None:
            return ErrorReply(None, "unknown_session", "this server does not know the session")
        if session.expired(now):
            return ErrorReply(None, "unauthorized", "the session has expired; log in again")
        if session.user_id not in self._accounts:
            return ErrorReply(None, "unauthorized", "the account no longer exists")
        return session.user_id

    def admit(self, request: SyncRequest, delta: Any, now: float) -> ErrorReply | None:
        """The server core's admission hook (Rules 3 and 4): None admits the request."""
        user = self.authenticate(request.token, now)
        if isinstance(user, ErrorReply):
            return ErrorReply(request.request_id, user.code, user.detail)
        if delta is None:
            return None
        owner = self._owners.get(request.list_id)
        if getattr(delta, "deleted", False) and owner not in (None, user):
            return ErrorReply(
                request.request_id, "forbidden", "only the list's owner may delete it"
            )
        if owner is None:
            try:
                self._store.set_owner(request.list_id, user)
            except StoreError as exc:
                log.error("directory %s: store failed: %s", self.server_id, exc)
                return ErrorReply(request.request_id, "persist_failed", "store write failed")
            self._owners[request.list_id] = user
            self._digest_cache = None
            self._push(owners={request.list_id: user})
        return None

    # -- replication (Rule 5) -------------------------------------------------------------

    def start(self, now: float) -> None:
        """Arm the anti-entropy timer."""
        self._round_at = now + min(self.interval, 0.5)

    def next_deadline(self) -> float | None:
        """When the next anti-entropy round is due."""
        return self._round_at

    def on_timer(self, now: float) -> list[Send]:
        """Drop expired sessions and send the directory's digest to every peer."""
        if self._round_at is None or self._round_at > now:
            return []
        self._round_at = now + self.interval
        expired = [h for h, s in self._sessions.items() if s.expired(now)]
        if expired:
            try:
                self._store.purge_sessions(now)
            except StoreError as exc:
                log.error("directory %s: store failed: %s", self.server_id, exc)
            else:
                for h in expired:
                    del self._sessions[h]
                self._digest_cache = None
        return [Send(p, DirectoryDigest(self.server_id, self.digest)) for p in self.peers]

    def receive(self, peer: str, msg: DirectoryPush | DirectoryDigest, now: float) -> list[Send]:
        """Merge a peer's push, or answer its digest."""
        if isinstance(msg, DirectoryDigest):
            if msg.digest == self.digest:
                return []
            return [Send(peer, self._snapshot(answer=True))]
        try:
            self._merge(msg, now)
        except StoreError as exc:
            log.error("directory %s: store failed while merging: %s", self.server_id, exc)
            return []
        if msg.answer:
            theirs = _digest(
                [_account(a) for a in msg.accounts],
                [s for s in map(_session, msg.sessions) if not s.expired(now)],
                msg.owners,
            )
            if theirs != self.digest:
                return [Send(peer, self._snapshot(answer=False))]
        return []

    def _snapshot(self, *, answer: bool) -> DirectoryPush:
        return DirectoryPush(
            self.server_id,
            tuple(_account_wire(a) for a in sorted(self._accounts.values(), key=_by_id)),
            tuple(_session_wire(s) for _, s in sorted(self._sessions.items())),
            dict(sorted(self._owners.items())),
            answer,
        )

    def _push(
        self,
        *,
        accounts: Sequence[Account] = (),
        sessions: Sequence[Session] = (),
        owners: Mapping[str, str] | None = None,
    ) -> None:
        msg = DirectoryPush(
            self.server_id,
            tuple(_account_wire(a) for a in accounts),
            tuple(_session_wire(s) for s in sessions),
            dict(owners or {}),
            False,
        )
        self._outbox.extend(Send(p, msg) for p in self.peers)

    def _merge(self, msg: DirectoryPush, now: float) -> None:
        """Merge every entry of a push; an entry the store refuses is skipped and logged.

        Raises:
            StoreError: the store failed (the entries before it are merged).
        """
        for wire in msg.accounts:
            with self._entry(msg.origin, "account"):
                self._merge_account(_account(wire))
        for wire in msg.sessions:
            with self._entry(msg.origin, "session"):
                self._merge_session(_session(wire), now)
        for list_id, owner in msg.owners.items():
            with self._entry(msg.origin, f"owner of {list_id}"):
                self._merge_owner(list_id, owner)

    @contextlib.contextmanager
    def _entry(self, origin: str, what: str) -> Iterator[None]:
        """Skip (and log) one entry of a push that the store refuses; a store failure
        stops the merge."""
        try:
            yield
        except StoreError:
            raise
        except ClusterError as exc:
            log.warning(
                "directory %s: skipped a bad %s from %s: %s", self.server_id, what, origin, exc
            )

    def _merge_session(self, session: Session, now: float) -> None:
        if (
            session.token_hash not in self._sessions
            and session.user_id in self._accounts
            and not session.expired(now)
        ):
            self._store.add_session(session)
            self._remember_session(session)

    def _merge_owner(self, list_id: str, owner: str) -> None:
        known = self._owners.get(list_id)
        if known is None or owner < known:
            self._store.set_owner(list_id, owner)
            self._owners[list_id] = owner
            self._digest_cache = None

    def _merge_account(self, account: Account) -> None:
        by_id = self._accounts.get(account.user_id)
        if by_id == account:
            return
        clashes = {by_id.user_id} if by_id is not None else set()
        named = self._by_name.get(account.name)
        if named is not None:
            clashes.add(named)
        if not clashes:
            self._store.put_account(account)
            self._remember_account(account)
            return
        if not all(_wins(account, self._accounts[c]) for c in clashes):
            return
        self._store.replace_account(account)
        for user_id in clashes:
            loser = self._accounts.pop(user_id)
            self._by_name.pop(loser.name, None)
            for token_hash in [h for h, s in self._sessions.items() if s.user_id == user_id]:
                del self._sessions[token_hash]
            log.warning(
                "directory %s: account %s (%s) lost a sign-up race to %s",
                self.server_id,
                loser.name,
                loser.user_id,
                account.user_id,
            )
        self._remember_account(account)

    def _remember_account(self, account: Account) -> None:
        self._accounts[account.user_id] = account
        self._by_name[account.name] = account.user_id
        self._digest_cache = None

    def _remember_session(self, session: Session) -> None:
        self._sessions[session.token_hash] = session
        self._digest_cache = None


def _by_id(a: Account) -> str:
    return a.user_id


def _account(wire: Mapping[str, Any]) -> Account:
    return Account(
        str(wire["user_id"]), str(wire["name"]), str(wire["password_hash"]), float(wire["created"])
    )


def _session(wire: Mapping[str, Any]) -> Session:
    return Session(str(wire["token_hash"]), str(wire["user_id"]), float(wire["expires"]))
