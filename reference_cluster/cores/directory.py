"""The servers' directory: accounts, sessions and list owners, replicated between servers.

Theory of operation
-------------------
Rule 1 (what it holds). Accounts (user id, name, scrypt hash of the password, creation
time, password version), sessions (the SHA-256 of a token, the user, the expiry, the
device's replica id, the account version), ended sessions (a logout's token hash until
the session would have expired), deleted accounts (kept for ever) and the owner of each
list. The server's store keeps them durably; the directory mirrors them in memory, so
checking a token costs a hash and a dictionary lookup. Every change is written to the
store (one transaction) before it is used or sent.

Rule 2 (two phases: no hashing here). Checking or making a password hash is slow on
purpose, so :meth:`Directory.handle` never does it: a request that needs one gets a
:class:`Pending` (a :class:`~reference_cluster.cores.accounts.HashJob` and a
continuation). The shell runs the job in a bounded worker pool and calls
``pending.resume(result, now)`` on its own loop, which answers (or asks for one more
job). The continuation checks again what it relied on (the account may have changed
meanwhile) and starts over if needed. A request that needs no hash is answered at once.

Rule 3 (sign-up and login). A sign-up creates the account and opens a session in one
request. Signing up with a name that exists and the right password logs in instead, so a
sign-up retried after a lost reply (perhaps at another server, which has meanwhile learned
the account) still succeeds. Unknown names and wrong passwords fail alike
(``login_failed``) and cost the same (an unknown name is checked against a hash no
password matches). Failed logins are logged with the name and the client's address,
never the password. After ``free`` failures in a row an account is locked for a time
that doubles with each further failure (:class:`~reference_cluster.cores.limits.Lockout`,
in memory, per server): ``rate_limited`` with the wait, before any hashing. A server
takes at most so many sign-ups a minute in all.

Rule 4 (admission). Every sync carries a session token. No token, a malformed, an expired
or an ended one (logout, password change, deleted account): ``unauthorized``. A
well-formed token this server does not know: ``unknown_session``, which clients retry,
because a session opened at another server a moment ago may still be on its way here. A
session is bound to the replica id its login named: a sync naming another replica is
``forbidden`` (a session whose login named none may pull but not push).

Rule 5 (ownership and quota). The first admitted push of a list whose owner is unknown
makes the pusher its owner (normally the creator, whose client pushes the list when it
syncs), unless the pusher already owns ``quota`` live lists (``quota``). A push whose
delta carries the list's tombstone (a delete) is refused with ``forbidden`` unless it
comes from the owner. The lists of a deleted account are refused to everyone
(``forbidden``). Ownership never changes afterwards, except to settle a race.

Rule 6 (replication). Each change is pushed at once to every peer
(:class:`~reference_cluster.protocol.messages.DirectoryPush`). Every anti-entropy interval
the server sends the digest of its whole directory; a peer whose digest differs answers
with its whole directory, and the first answers back with its own if they still differ.
Merging is idempotent and order-free:

* one user id: its name and creation time never change (a record saying otherwise is
  refused and logged); its password is the one with the highest ``version`` (ties: the
  larger hash), so the newest password change wins everywhere, never an older record,
  whatever its ``created``. Sessions of an older version are dropped;
* one name, two user ids (signed up on both sides of a partition): the account created
  first wins, then the smaller user id; the loser's account and sessions are dropped. A
  deleted account still takes part, so its name stays reserved;
* a deleted account never comes back, and neither do its sessions;
* an ended session never comes back (its token hash is kept until its expiry);
* one list, two owners: the smaller user id wins;
* a session is taken only for an account known here (accounts travel first), and expired
  sessions and ended-session records are dropped at every round.

Rule 7 (no I/O here). The store is passed in (the server's
:class:`~reference_cluster.storage.server_store.ServerStore`), the time comes in as ``now``,
randomness from ``random_bytes``, and messages go out as
:class:`~reference_cluster.protocol.effects.Send` effects.

Rule 8 (access lists). Besides its owner, a list has members
(:mod:`reference_cluster.cores.membership`): a :class:`~reference_cluster.protocol.messages.Members`
request from the owner adds and removes users by name, one from a member may only remove
themself (leave), and anyone else is ``forbidden``. A sync of a list whose owner is known
here is admitted only for the owner and the members (``forbidden`` otherwise); a list whose
owner no server recorded yet is open to its first pusher (Rule 5). The lists request
answers the lists a user owns and those shared with them. Members replicate with the
rest of the directory (their sets join) and count in its digest.

The peer end point that carries these messages must be reachable by member servers only
(CURVE with an allow-list): a directory push is trusted. The merge rules above limit what
a stale or replayed push can do; they cannot stop a member that forges records.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

import attrs

from crdts import AWORSet
from crdts._codec import canonical_json
from reference_cluster.cores.accounts import (
    DEFAULT_SCRYPT,
    DEFAULT_SESSION_TTL,
    Account,
    DeletedAccount,
    HashJob,
    HashResult,
    ScryptParams,
    Session,
    check_new_password,
    hash_token,
    new_token,
    normalize_user_name,
    unmatchable_hash,
)
from reference_cluster.cores.limits import Lockout, Rate, RateLimiter, retry_text
from reference_cluster.cores.membership import Memberships, MembershipStore, QuotaExceeded
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
)

__all__ = [
    "DEFAULT_QUOTA",
    "DEFAULT_SIGNUPS",
    "Directory",
    "DirectoryStore",
    "Outcome",
    "Pending",
    "run_inline",
]

log = logging.getLogger(__name__)

_NOT_A_MEMBER = (
    "you are not a member of this list: its owner can add you (shoplist share LIST NAME)"
)

DEFAULT_QUOTA = 1000
"""The most live lists one user may own."""
DEFAULT_SIGNUPS = Rate(60, 60.0)
"""Sign-ups one server takes, in all: 60 a minute (and a burst of 60)."""
_FUTURE_SKEW = 300.0  # an account "created" further in the future than this is refused
_MAX_RESTARTS = 8  # continuations that start over because the account changed meanwhile


class DirectoryStore(MembershipStore, Protocol):
    """What the directory needs from a durable store (``ServerStore`` has it all)."""

    def add_account(self, account: Account) -> None: ...
    def put_account(self, account: Account) -> bool: ...
    def replace_account(self, account: Account) -> list[str]: ...
    def update_account(self, account: Account, drop_sessions: Iterable[str] = ()) -> None: ...
    def accounts(self) -> list[Account]: ...
    def add_session(self, session: Session) -> None: ...
    def delete_session(self, token_hash: str) -> None: ...
    def sessions(self) -> list[Session]: ...
    def purge_sessions(self, now: float) -> int: ...
    def revoke_session(self, token_hash: str, expires: float) -> None: ...
    def revoked(self) -> dict[str, float]: ...
    def delete_account(self, tomb: DeletedAccount) -> None: ...
    def drop_account(self, user_id: str) -> None: ...
    def deleted_accounts(self) -> list[DeletedAccount]: ...
    def owners(self) -> dict[str, str]: ...
    def set_owner(self, list_id: str, owner: str) -> None: ...


@attrs.frozen
class Pending:
    """An answer that waits for a password hash (Rule 2): run ``job`` off the event loop,
    then call ``resume(result, now)`` on it for the answer (which may be another
    :class:`Pending`)."""

    request_id: str
    job: HashJob
    resume: Callable[[HashResult, float], Outcome] = attrs.field(repr=False)


Outcome: TypeAlias = Welcome | ListsReply | AccountDone | MembersReply | ErrorReply | Pending
"""What :meth:`Directory.handle` gives back: an answer, or work to do first."""


def run_inline(
    outcome: Outcome, now: float
) -> Welcome | ListsReply | AccountDone | MembersReply | ErrorReply:
    """Run every hash job of ``outcome`` here and now, and return the answer (tests and
    tools; a server runs them in its worker pool instead)."""
    for _ in range(2 * _MAX_RESTARTS + 4):
        if not isinstance(outcome, Pending):
            return outcome
        outcome = outcome.resume(outcome.job.run(), now)
    raise RuntimeError("a directory request asked for too many hash jobs")


# -- records on the wire and in the digest --------------------------------------------------


def _account_wire(a: Account) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "user_id": a.user_id,
        "name": a.name,
        "password_hash": a.password_hash,
        "created": a.created,
    }
    if a.version:
        wire["version"] = a.version
    return wire


def _session_wire(s: Session) -> dict[str, Any]:
    wire: dict[str, Any] = {"token_hash": s.token_hash, "user_id": s.user_id, "expires": s.expires}
    if s.replica is not None:
        wire["replica"] = s.replica
    if s.version:
        wire["version"] = s.version
    return wire


def _deleted_wire(d: DeletedAccount) -> dict[str, Any]:
    return {"user_id": d.user_id, "name": d.name, "created": d.created, "deleted": d.deleted}


def _account(wire: Mapping[str, Any]) -> Account:
    return Account(
        str(wire["user_id"]),
        str(wire["name"]),
        str(wire["password_hash"]),
        float(wire["created"]),
        int(wire.get("version", 0)),
    )


def _session(wire: Mapping[str, Any]) -> Session:
    replica = wire.get("replica")
    return Session(
        str(wire["token_hash"]),
        str(wire["user_id"]),
        float(wire["expires"]),
        None if replica is None else str(replica),
        int(wire.get("version", 0)),
    )


def _deleted(wire: Mapping[str, Any]) -> DeletedAccount:
    return DeletedAccount(
        str(wire["user_id"]), str(wire["name"]), float(wire["created"]), float(wire["deleted"])
    )


def _race_key(record: Account | DeletedAccount) -> tuple[float, str]:
    """The order of the sign-up race for a name (Rule 6): first created, then smaller id."""
    return (record.created, record.user_id)


def _digest(
    accounts: Iterable[Account],
    sessions: Iterable[Session],
    owners: Mapping[str, str],
    revoked: Mapping[str, float],
    deleted: Iterable[DeletedAccount],
    *,
    members: Iterable[tuple[str, str]] = (),
) -> str:
    data = {
        "accounts": sorted(
            [a.user_id, a.name, a.password_hash, float(a.created), a.version] for a in accounts
        ),
        "sessions": sorted(
            [s.token_hash, s.user_id, float(s.expires), s.replica or "", s.version]
            for s in sessions
        ),
        "owners": sorted([k, v] for k, v in owners.items()),
        "revoked": sorted([h, float(e)] for h, e in revoked.items()),
        "deleted": sorted([d.user_id, d.name, float(d.created), float(d.deleted)] for d in deleted),
        "members": [list(item) for item in members],
    }
    return hashlib.sha256(canonical_json(data)).hexdigest()


class Directory:
    """One server's directory: answers account requests, admits syncs, replicates.

    Args:
        server_id: this server's id (the ``origin`` of its pushes).
        store: the durable store (Rule 7).
        peers: the other servers' ids.
        interval: seconds between anti-entropy rounds.
        ttl: how long a session lasts.
        params: the scrypt cost of new password hashes (old hashes keep their own).
        quota: the most live lists a user may own (Rule 5).
        lockout: the failed-login rule (Rule 3); by default 5 free failures, then 1 s
            doubling up to 15 minutes.
        signups: sign-ups this server takes in all (Rule 3).
        is_deleted: whether a list is deleted (the server core knows); deleted lists do
            not count against the quota.
        random_bytes: the source of salts, tokens and user ids.
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
        quota: int = DEFAULT_QUOTA,
        lockout: Lockout | None = None,
        signups: Rate = DEFAULT_SIGNUPS,
        is_deleted: Callable[[str], bool] | None = None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"the anti-entropy interval must be > 0, got {interval!r}")
        if not ttl > 0:
            raise ValueError(f"a session lasts a positive time, got {ttl!r}")
        if quota < 0:
            raise ValueError(f"the list quota is >= 0, got {quota!r}")
        self.server_id = server_id
        self.peers = tuple(sorted(set(peers) - {server_id}))
        self.interval = interval
        self._store = store
        self._ttl = float(ttl)
        self._params = params
        self._quota = quota
        self._lockout = lockout if lockout is not None else Lockout()
        self._signups = RateLimiter(signups, max_keys=1)
        self._is_deleted = is_deleted or (lambda _list_id: False)
        self._random = random_bytes
        self._dummy = unmatchable_hash(params, random_bytes)
        self._accounts: dict[str, Account] = {a.user_id: a for a in store.accounts()}
        self._gone: dict[str, DeletedAccount] = {d.user_id: d for d in store.deleted_accounts()}
        self._by_name: dict[str, str] = {}
        records: list[Account | DeletedAccount] = [*self._gone.values(), *self._accounts.values()]
        for record in records:
            held = self._holder(record.name)
            if held is None or _race_key(record) < _race_key(held):
                self._by_name[record.name] = record.user_id
        self._sessions: dict[str, Session] = {s.token_hash: s for s in store.sessions()}
        self._revoked: dict[str, float] = store.revoked()
        self._owners: dict[str, str] = store.owners()
        self.members = Memberships(server_id, store)
        """Who besides its owner may use each list (:mod:`reference_cluster.cores.membership`)."""
        self._owned: dict[str, int] = {}
        for owner in self._owners.values():
            self._owned[owner] = self._owned.get(owner, 0) + 1
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
        """The account with this user id, if known here (and not deleted)."""
        return self._accounts.get(user_id)

    def deleted_account(self, user_id: str) -> DeletedAccount | None:
        """What is left of a deleted account, if this server knows of the deletion."""
        return self._gone.get(user_id)

    def session_of(self, token: str) -> Session | None:
        """The session record of a token, if known here (whatever its state)."""
        try:
            return self._sessions.get(hash_token(token))
        except SessionInvalid:
            return None

    @property
    def digest(self) -> str:
        """The digest of the whole directory (what anti-entropy compares)."""
        if self._digest_cache is None:
            self._digest_cache = _digest(
                self._accounts.values(),
                self._sessions.values(),
                self._owners,
                self._revoked,
                self._gone.values(),
                members=self.members.digest_items(),
            )
        return self._digest_cache

    def take_outgoing(self) -> list[Send]:
        """The pushes to peers caused by the last calls (the shell sends them)."""
        out, self._outbox = self._outbox, []
        return out

    # -- client requests (Rules 2 and 3) --------------------------------------------------

    def handle(self, request: AccountRequest, now: float, source: str | None = None) -> Outcome:
        """Answer an account request, or say which hash it waits for (Rule 2).

        Args:
            request: a sign-up, login, lists request, logout, password change or account
                deletion.
            now: seconds since the epoch.
            source: the client's address as the broker saw it (for the logs).

        Store errors are answered ``persist_failed`` (the client may retry).
        """
        return self._guarded(request.request_id, self._dispatch, request, source, now)

    def _dispatch(self, request: AccountRequest, source: str | None, now: float) -> Outcome:
        rid = request.request_id
        if isinstance(request, SignUp):
            return self._sign_up(request, source, now)
        if isinstance(request, LogIn):
            return self._log_in(request, source, now)
        if isinstance(request, ChangePassword):
            return self._change_password(request, source, now)
        if isinstance(request, DeleteAccount):
            return self._delete_account(request, source, now)
        session = self._session_for(request.token, now)
        if isinstance(request, LogOut):
            return self._log_out(rid, request.token, session)
        assert isinstance(request, ListsRequest | Members)
        if isinstance(session, ErrorReply):
            return attrs.evolve(session, request_id=rid)
        if isinstance(request, Members):
            return self._members(request, session)
        user = session.user_id
        return ListsReply(rid, user, tuple(self.owned_by(user)), tuple(self.members.lists_of(user)))

    def _guarded(self, rid: str, fn: Callable[..., Outcome], *args: Any) -> Outcome:
        """Call ``fn(*args)``; turn the errors a request may meet into their replies."""
        try:
            return fn(*args)
        except (InvalidUserName, InvalidPassword) as exc:
            return ErrorReply.about(rid, "invalid", exc)
        except LoginFailed as exc:
            return ErrorReply.about(rid, "login_failed", exc)
        except UserExists as exc:
            return ErrorReply.about(rid, "user_exists", exc)
        except StoreError as exc:
            log.error("directory %s: store failed: %s", self.server_id, exc)
            return ErrorReply(rid, "persist_failed", "the server could not write its store")

    def _pending(
        self, rid: str, job: HashJob, then: Callable[[HashResult, float], Outcome]
    ) -> Pending:
        def resume(result: HashResult, now: float) -> Outcome:
            if result.error is not None:
                log.error("directory %s: a stored password hash: %s", self.server_id, result.error)
                return ErrorReply(rid, "persist_failed", "the server's store is damaged")
            return self._guarded(rid, then, result, now)

        return Pending(rid, job, resume)

    def _rate_limited(self, rid: str, why: str, wait: float) -> ErrorReply:
        return ErrorReply(rid, "rate_limited", f"{why}; {retry_text(wait)}")

    def _locked(self, rid: str, name: str, now: float) -> ErrorReply | None:
        wait = self._lockout.locked(name, now)
        if wait is None:
            return None
        return self._rate_limited(rid, f"too many failed logins for {name!r}", wait)

    def _failed(self, name: str, source: str | None, what: str, now: float) -> None:
        count = self._lockout.failed(name, now)
        log.warning(
            "directory %s: failed %s for %r from %s (%d in a row)",
            self.server_id,
            what,
            name,
            source or "an unknown address",
            count,
        )

    def _holder(self, name: str) -> Account | DeletedAccount | None:
        """The record that holds ``name``: a live account, a deleted one, or none."""
        user_id = self._by_name.get(name)
        if user_id is None:
            return None
        return self._accounts.get(user_id) or self._gone.get(user_id)

    # sign-up

    def _sign_up(self, req: SignUp, source: str | None, now: float, restarts: int = 0) -> Outcome:
        rid = req.request_id
        name = normalize_user_name(req.name)
        holder = self._holder(name)
        if isinstance(holder, DeletedAccount):
            raise UserExists(
                f"the user name {name!r} belonged to a deleted account; it stays taken"
            )
        if holder is not None:
            locked = self._locked(rid, name, now)
            if locked is not None:
                return locked
            job = HashJob.verify(req.password, holder.password_hash)
            then = functools.partial(self._signed_up_again, req=req, source=source, account=holder)
            return self._pending(rid, job, then)
        password = check_new_password(req.password)
        wait = self._signups.take("all", now)
        if wait is not None:
            return self._rate_limited(rid, "this server takes no more sign-ups for now", wait)
        job = HashJob.new_hash(password, self._params, self._random(16))
        return self._pending(
            rid, job, functools.partial(self._signed_up, req=req, source=source, restarts=restarts)
        )

    def _signed_up_again(
        self, result: HashResult, now: float, *, req: SignUp, source: str | None, account: Account
    ) -> Outcome:
        if not result.verified:
            self._failed(account.name, source, "sign-up (as a login)", now)
            raise UserExists(f"the user name {account.name!r} is taken")
        if self._accounts.get(account.user_id) != account:  # changed meanwhile: start over
            return self._sign_up(req, source, now)
        self._lockout.succeeded(account.name)
        welcome, session = self._open_session(req.request_id, account, req.replica, now)
        self._push(sessions=[session])
        return welcome

    def _signed_up(
        self, result: HashResult, now: float, *, req: SignUp, source: str | None, restarts: int
    ) -> Outcome:
        name = normalize_user_name(req.name)
        if self._holder(name) is not None:  # taken meanwhile: check the password against it
            if restarts >= _MAX_RESTARTS:
                raise UserExists(f"the user name {name!r} is taken")
            return self._sign_up(req, source, now, restarts + 1)
        assert result.encoded is not None
        account = Account(
            user_id=str(uuid.UUID(bytes=self._random(16), version=4)),
            name=name,
            password_hash=result.encoded,
            created=float(now),
        )
        self._store.add_account(account)
        self._remember_account(account)
        welcome, session = self._open_session(req.request_id, account, req.replica, now)
        log.info("directory %s: signed up %s from %s", self.server_id, name, source or "?")
        self._push(accounts=[account], sessions=[session])  # together: Rule 6
        return attrs.evolve(welcome, created=True)

    # login

    def _log_in(self, req: LogIn, source: str | None, now: float) -> Outcome:
        rid = req.request_id
        try:
            name = normalize_user_name(req.name)
        except InvalidUserName:
            name = req.name.lower()[:40]
        locked = self._locked(rid, name, now)
        if locked is not None:
            return locked
        holder = self._holder(name)
        account = holder if isinstance(holder, Account) else None
        encoded = self._dummy if account is None else account.password_hash
        then = functools.partial(
            self._logged_in, req=req, source=source, name=name, account=account
        )
        return self._pending(rid, HashJob.verify(req.password, encoded), then)

    def _logged_in(
        self,
        result: HashResult,
        now: float,
        *,
        req: LogIn,
        source: str | None,
        name: str,
        account: Account | None,
    ) -> Outcome:
        current = None if account is None else self._accounts.get(account.user_id)
        if account is None or not result.verified or current != account:
            self._failed(name, source, "login", now)
            raise LoginFailed("unknown user name or wrong password")
        self._lockout.succeeded(name)
        welcome, session = self._open_session(req.request_id, account, req.replica, now)
        self._push(sessions=[session])
        return welcome

    def _open_session(
        self, rid: str, account: Account, replica: str | None, now: float
    ) -> tuple[Welcome, Session]:
        token = new_token(self._random)
        session = Session(
            hash_token(token), account.user_id, float(now) + self._ttl, replica, account.version
        )
        self._store.add_session(session)
        self._remember_session(session)
        return Welcome(rid, account.user_id, account.name, token, session.expires), session

    # logout, password change, deletion

    def _log_out(self, rid: str, token: str, session: Session | ErrorReply) -> Outcome:
        if isinstance(session, ErrorReply):
            if session.code == "unauthorized":  # over already (expired, ended): done
                return AccountDone(rid, "logged_out", 0)
            return attrs.evolve(session, request_id=rid)
        self._revoke([session])
        return AccountDone(rid, "logged_out", 1)

    def _revoke(self, sessions: Sequence[Session]) -> None:
        for session in sessions:
            self._store.revoke_session(session.token_hash, session.expires)
            self._sessions.pop(session.token_hash, None)
            self._revoked[session.token_hash] = session.expires
        self._digest_cache = None
        self._push(revoked={s.token_hash: s.expires for s in sessions})

    def _change_password(
        self, req: ChangePassword, source: str | None, now: float, restarts: int = 0
    ) -> Outcome:
        rid = req.request_id
        session = self._session_for(req.token, now)
        if isinstance(session, ErrorReply):
            return attrs.evolve(session, request_id=rid)
        account = self._accounts[session.user_id]
        check_new_password(req.new_password)
        locked = self._locked(rid, account.name, now)
        if locked is not None:
            return locked
        if restarts > _MAX_RESTARTS:
            return ErrorReply(rid, "busy", "the account keeps changing; try again")
        then = functools.partial(
            self._checked_old, req=req, source=source, account=account, restarts=restarts
        )
        return self._pending(rid, HashJob.verify(req.old_password, account.password_hash), then)

    def _checked_old(
        self,
        result: HashResult,
        now: float,
        *,
        req: ChangePassword,
        source: str | None,
        account: Account,
        restarts: int,
    ) -> Outcome:
        if not result.verified:
            self._failed(account.name, source, "password change", now)
            raise LoginFailed("the current password is wrong")
        if self._accounts.get(account.user_id) != account:
            return self._change_password(req, source, now, restarts + 1)
        self._lockout.succeeded(account.name)
        new = check_new_password(req.new_password)
        job = HashJob.new_hash(new, self._params, self._random(16))
        then = functools.partial(
            self._hashed_new, req=req, source=source, account=account, restarts=restarts
        )
        return self._pending(req.request_id, job, then)

    def _hashed_new(
        self,
        result: HashResult,
        now: float,
        *,
        req: ChangePassword,
        source: str | None,
        account: Account,
        restarts: int,
    ) -> Outcome:
        rid = req.request_id
        session = self._session_for(req.token, now)
        if isinstance(session, ErrorReply):
            return attrs.evolve(session, request_id=rid)
        if self._accounts.get(account.user_id) != account:
            return self._change_password(req, source, now, restarts + 1)
        assert result.encoded is not None
        changed = attrs.evolve(account, password_hash=result.encoded, version=account.version + 1)
        kept = attrs.evolve(session, version=changed.version)
        ended = [
            h
            for h, s in self._sessions.items()
            if s.user_id == account.user_id and h != kept.token_hash and not s.expired(now)
        ]
        # The other sessions stay on record, refused for their older version (Rule 4),
        # so that every server that knows one answers ``unauthorized``, not "unknown".
        self._store.update_account(changed)
        self._store.add_session(kept)
        self._remember_account(changed)
        self._remember_session(kept)
        log.info(
            "directory %s: password of %s changed, %d other sessions ended",
            self.server_id,
            account.name,
            len(ended),
        )
        self._push(accounts=[changed], sessions=[kept])
        return AccountDone(rid, "password_changed", len(ended))

    def _delete_account(self, req: DeleteAccount, source: str | None, now: float) -> Outcome:
        rid = req.request_id
        session = self._session_for(req.token, now)
        if isinstance(session, ErrorReply):
            return attrs.evolve(session, request_id=rid)
        account = self._accounts[session.user_id]
        locked = self._locked(rid, account.name, now)
        if locked is not None:
            return locked
        then = functools.partial(self._deletion_confirmed, req=req, source=source, account=account)
        return self._pending(rid, HashJob.verify(req.password, account.password_hash), then)

    def _deletion_confirmed(
        self,
        result: HashResult,
        now: float,
        *,
        req: DeleteAccount,
        source: str | None,
        account: Account,
    ) -> Outcome:
        if not result.verified:
            self._failed(account.name, source, "account deletion", now)
            raise LoginFailed("the password is wrong")
        if account.user_id in self._gone:
            return AccountDone(req.request_id, "account_deleted", 0)
        tomb = DeletedAccount(account.user_id, account.name, account.created, float(now))
        ended = self._forget_account(tomb)
        log.info("directory %s: account %s deleted", self.server_id, account.name)
        self._push(deleted=[tomb])
        return AccountDone(req.request_id, "account_deleted", ended)

    def _forget_account(self, tomb: DeletedAccount) -> int:
        """Record a deletion (store first); return how many sessions it ended here."""
        self._store.delete_account(tomb)
        self._accounts.pop(tomb.user_id, None)
        self._gone[tomb.user_id] = tomb
        holder = self._holder(tomb.name)
        if holder is None or _race_key(tomb) <= _race_key(holder):
            self._by_name[tomb.name] = tomb.user_id
        ended = [s for s in self._sessions.values() if s.user_id == tomb.user_id]
        for session in ended:  # refused as ended (Rule 4), not as unknown
            self._store.revoke_session(session.token_hash, session.expires)
            del self._sessions[session.token_hash]
            self._revoked[session.token_hash] = session.expires
        self._digest_cache = None
        return len(ended)

    # -- admission (Rules 4 and 5) --------------------------------------------------------

    def _session_for(self, token: str | None, now: float) -> Session | ErrorReply:
        """The live session of a token, or the error to answer (Rule 4)."""
        if token is None:
            return ErrorReply(None, "unauthorized", "no session token: log in first")
        try:
            token_hash = hash_token(token)
        except SessionInvalid as exc:
            return ErrorReply.about(None, "unauthorized", exc)
        if token_hash in self._revoked:
            return ErrorReply(
                None, "unauthorized", "the session was ended (logout or account deleted)"
            )
        session = self._sessions.get(token_hash)
        if session is None:
            return ErrorReply(None, "unknown_session", "this server does not know the session")
        if session.expired(now):
            return ErrorReply(None, "unauthorized", "the session has expired; log in again")
        account = self._accounts.get(session.user_id)
        if account is None:
            why = "was deleted" if session.user_id in self._gone else "no longer exists"
            return ErrorReply(None, "unauthorized", f"the account {why}")
        if session.version < account.version:
            return ErrorReply(
                None, "unauthorized", "the password was changed since this login; log in again"
            )
        return session

    def authenticate(self, token: str | None, now: float) -> str | ErrorReply:
        """The user id of a session token, or the error to answer (Rule 4)."""
        session = self._session_for(token, now)
        return session if isinstance(session, ErrorReply) else session.user_id

    def admit(self, request: SyncRequest, delta: Any, now: float) -> ErrorReply | None:
        """The server core's admission hook (Rules 4 and 5): None admits the request."""
        rid = request.request_id
        session = self._session_for(request.token, now)
        if isinstance(session, ErrorReply):
            return attrs.evolve(session, request_id=rid)
        if session.replica is not None and request.replica != session.replica:
            return ErrorReply.about(
                rid,
                "forbidden",
                f"this session belongs to device {session.replica!r}, the request names "
                f"{request.replica!r}",
            )
        user = session.user_id
        owner = self._owners.get(request.list_id)
        if owner is not None and owner in self._gone:
            return ErrorReply(rid, "forbidden", "the list's owner deleted their account")
        if owner not in (None, user) and not self.members.is_member(request.list_id, user):
            return ErrorReply(rid, "forbidden", _NOT_A_MEMBER)
        if delta is None:
            return None
        if session.replica is None:
            return ErrorReply(
                rid, "forbidden", "this session is bound to no device; log in again to edit"
            )
        if getattr(delta, "deleted", False) and owner not in (None, user):
            return ErrorReply(rid, "forbidden", "only the list's owner may delete it")
        if owner is None:
            if self._owned.get(user, 0) >= self._quota and self._live_owned(user) >= self._quota:
                return ErrorReply(
                    rid,
                    "quota",
                    f"you own {self._quota} lists, the most one user may; delete one first",
                )
            try:
                self._store.set_owner(request.list_id, user)
            except StoreError as exc:
                log.error("directory %s: store failed: %s", self.server_id, exc)
                return ErrorReply(rid, "persist_failed", "store write failed")
            self._set_owner(request.list_id, user)
            self._push(owners={request.list_id: user})
        return None

    def _members(self, req: Members, session: Session) -> MembersReply | ErrorReply:
        """Read and change a list's members (Rule 8): the owner changes anyone, a member
        may only leave; the change goes to the peers before the answer does."""
        rid, list_id, user = req.request_id, req.list_id, session.user_id
        owner = self._owners.get(list_id)
        member = self.members.is_member(list_id, user)
        if owner is not None and owner in self._gone:
            return ErrorReply(rid, "forbidden", "the list's owner deleted their account")
        if user != owner and not member:
            if owner is None:
                return ErrorReply(
                    rid, "forbidden", "no server has this list yet: its owner syncs it first"
                )
            return ErrorReply(rid, "forbidden", _NOT_A_MEMBER)
        try:
            add = [self._user_named(n) for n in req.add]
            remove = [self._user_named(n) for n in req.remove]
        except LookupError as exc:
            return ErrorReply.about(rid, "invalid", str(exc.args[0]))
        if user != owner and (add or set(remove) - {user}):
            return ErrorReply(
                rid, "forbidden", "only the list's owner adds or removes others; you may leave"
            )
        if owner in add or owner in remove:
            return ErrorReply(rid, "invalid", "the owner is always on the list")
        try:
            delta = self.members.change(list_id, add=add, remove=remove)
        except QuotaExceeded as exc:
            return ErrorReply.about(rid, "quota", exc)
        if delta is not None:
            self._digest_cache = None
            self._push(members={list_id: delta})
        return MembersReply(
            rid,
            list_id,
            self._name_of(owner),
            tuple(sorted(self._name_of(u) or u for u in self.members.members(list_id))),
        )

    def _user_named(self, name: str) -> str:
        """The user id of a live account by name.

        Raises:
            LookupError: no such user (the message says so).
        """
        try:
            held = self._holder(normalize_user_name(name))
        except InvalidUserName:
            held = None
        if not isinstance(held, Account):
            raise LookupError(f"no user named {name!r}")
        return held.user_id

    def _name_of(self, user_id: str | None) -> str | None:
        account = None if user_id is None else self._accounts.get(user_id)
        return None if account is None else account.name

    def _live_owned(self, user: str) -> int:
        return sum(1 for k, v in self._owners.items() if v == user and not self._is_deleted(k))

    def _set_owner(self, list_id: str, owner: str) -> None:
        old = self._owners.get(list_id)
        if old is not None:
            self._owned[old] -= 1
        self._owners[list_id] = owner
        self._owned[owner] = self._owned.get(owner, 0) + 1
        self._digest_cache = None

    # -- replication (Rule 6) -------------------------------------------------------------

    def start(self, now: float) -> None:
        """Arm the anti-entropy timer."""
        self._round_at = now + min(self.interval, 0.5)

    def next_deadline(self) -> float | None:
        """When the next anti-entropy round is due."""
        return self._round_at

    def on_timer(self, now: float) -> list[Send]:
        """Drop expired sessions and ended-session records, and send the directory's
        digest to every peer."""
        if self._round_at is None or self._round_at > now:
            return []
        self._round_at = now + self.interval
        expired = [h for h, s in self._sessions.items() if s.expired(now)]
        over = [h for h, e in self._revoked.items() if e <= now]
        if expired or over:
            try:
                self._store.purge_sessions(now)
            except StoreError as exc:
                log.error("directory %s: store failed: %s", self.server_id, exc)
            else:
                for h in expired:
                    del self._sessions[h]
                for h in over:
                    del self._revoked[h]
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
            with contextlib.suppress(ValueError, TypeError):
                theirs = _digest(
                    [_account(a) for a in msg.accounts],
                    [s for s in map(_session, msg.sessions) if not s.expired(now)],
                    msg.owners,
                    {str(r["token_hash"]): float(r["expires"]) for r in msg.revoked},
                    [_deleted(d) for d in msg.deleted],
                    members=sorted(
                        (k, AWORSet.from_dict(v).digest()) for k, v in msg.members.items()
                    ),
                )
                if theirs == self.digest:
                    return []
            return [Send(peer, self._snapshot(answer=False))]
        return []

    def _snapshot(self, *, answer: bool) -> DirectoryPush:
        return DirectoryPush(
            self.server_id,
            tuple(_account_wire(a) for a in sorted(self._accounts.values(), key=_by_id)),
            tuple(_session_wire(s) for _, s in sorted(self._sessions.items())),
            dict(sorted(self._owners.items())),
            answer,
            tuple({"token_hash": h, "expires": e} for h, e in sorted(self._revoked.items())),
            tuple(_deleted_wire(d) for _, d in sorted(self._gone.items())),
            self.members.encoded(),
        )

    def _push(
        self,
        *,
        accounts: Sequence[Account] = (),
        sessions: Sequence[Session] = (),
        owners: Mapping[str, str] | None = None,
        revoked: Mapping[str, float] | None = None,
        deleted: Sequence[DeletedAccount] = (),
        members: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        msg = DirectoryPush(
            self.server_id,
            tuple(_account_wire(a) for a in accounts),
            tuple(_session_wire(s) for s in sessions),
            dict(owners or {}),
            False,
            tuple({"token_hash": h, "expires": e} for h, e in (revoked or {}).items()),
            tuple(_deleted_wire(d) for d in deleted),
            dict(members or {}),
        )
        self._outbox.extend(Send(p, msg) for p in self.peers)

    def _merge(self, msg: DirectoryPush, now: float) -> None:
        """Merge every entry of a push; an entry the store refuses is skipped and logged.

        Deletions first (so a stale copy of a deleted account in the same push is
        refused), then accounts, ended sessions, sessions and owners.

        Raises:
            StoreError: the store failed (the entries before it are merged).
        """
        for wire in msg.deleted:
            with self._entry(msg.origin, "deleted account"):
                self._merge_deleted(_deleted(wire))
        for wire in msg.accounts:
            with self._entry(msg.origin, "account"):
                self._merge_account(_account(wire), now)
        for wire in msg.revoked:
            with self._entry(msg.origin, "ended session"):
                self._merge_revoked(str(wire["token_hash"]), float(wire["expires"]), now)
        for wire in msg.sessions:
            with self._entry(msg.origin, "session"):
                self._merge_session(_session(wire), now)
        for list_id, owner in msg.owners.items():
            with self._entry(msg.origin, f"owner of {list_id}"):
                self._merge_owner(list_id, owner)
        for list_id, state in msg.members.items():
            with self._entry(msg.origin, f"members of {list_id}"):
                if self.members.merge(list_id, state):
                    self._digest_cache = None

    @contextlib.contextmanager
    def _entry(self, origin: str, what: str) -> Iterator[None]:
        """Skip (and log) one entry of a push that the store refuses; a store failure
        stops the merge."""
        try:
            yield
        except StoreError:
            raise
        except (ClusterError, ValueError) as exc:
            log.warning(
                "directory %s: skipped a bad %s from %s: %s", self.server_id, what, origin, exc
            )

    def _merge_deleted(self, tomb: DeletedAccount) -> None:
        if tomb.user_id not in self._gone:
            self._forget_account(tomb)
            self._drop_losers(tomb.name)

    def _merge_revoked(self, token_hash: str, expires: float, now: float) -> None:
        if expires <= now or token_hash in self._revoked:
            return
        self._store.revoke_session(token_hash, expires)
        self._sessions.pop(token_hash, None)
        self._revoked[token_hash] = expires
        self._digest_cache = None

    def _merge_session(self, session: Session, now: float) -> None:
        account = self._accounts.get(session.user_id)
        if account is None or session.token_hash in self._revoked or session.expired(now):
            return
        known = self._sessions.get(session.token_hash)
        if known is not None:
            if (known.user_id, known.replica, known.expires) != (
                session.user_id,
                session.replica,
                session.expires,
            ):
                raise ValueError("it contradicts the session known here")
            if session.version <= known.version:
                return
        self._store.add_session(session)
        self._remember_session(session)

    def _merge_owner(self, list_id: str, owner: str) -> None:
        known = self._owners.get(list_id)
        if known is None or owner < known:
            self._store.set_owner(list_id, owner)
            self._set_owner(list_id, owner)

    def _merge_account(self, account: Account, now: float) -> None:
        if account.user_id in self._gone:
            return  # a deleted account never comes back
        if account.created > now + _FUTURE_SKEW:
            raise ValueError(f"account {account.name!r} claims to be created in the future")
        known = self._accounts.get(account.user_id)
        if known is not None:
            if (known.name, known.created) != (account.name, account.created):
                raise ValueError(
                    f"account {account.user_id} is {known.name!r} created at {known.created}, "
                    f"not {account.name!r} created at {account.created}"
                )
            if (account.version, account.password_hash) > (known.version, known.password_hash):
                self._store.update_account(account)
                self._remember_account(account)
            return
        holder = self._holder(account.name)
        if holder is None:
            self._store.put_account(account)
            self._remember_account(account)
            return
        if _race_key(holder) < _race_key(account):
            return  # it lost the sign-up race for the name
        self._store.replace_account(account)
        self._remember_account(account)
        self._drop_losers(account.name)

    def _drop_losers(self, name: str) -> None:
        """Drop every live account named ``name`` other than the name's holder (Rule 6)."""
        holder = self._by_name.get(name)
        for loser in [a for a in self._accounts.values() if a.name == name]:
            if loser.user_id == holder:
                continue
            self._store.drop_account(loser.user_id)
            del self._accounts[loser.user_id]
            for token_hash in [h for h, s in self._sessions.items() if s.user_id == loser.user_id]:
                del self._sessions[token_hash]
            self._digest_cache = None
            log.warning(
                "directory %s: account %s (%s) lost a sign-up race to %s",
                self.server_id,
                loser.name,
                loser.user_id,
                holder,
            )

    def _remember_account(self, account: Account) -> None:
        self._accounts[account.user_id] = account
        holder = self._holder(account.name)
        if (
            holder is None
            or holder.user_id == account.user_id
            or (_race_key(account) < _race_key(holder))
        ):
            self._by_name[account.name] = account.user_id
        self._digest_cache = None

    def _remember_session(self, session: Session) -> None:
        self._sessions[session.token_hash] = session
        self._digest_cache = None


def _by_id(a: Account) -> str:
    return a.user_id
