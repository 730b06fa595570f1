"""The client: a ZeroMQ and SQLite shell around :class:`~reference_cluster.cores.client.ClientCore`.

A :class:`Client` is one user's lists on one device: a
:class:`~reference_cluster.storage.client_store.ClientStore` (every edit is durable before it is
sent, so everything works offline and survives restarts), a core, and one DEALER socket
per broker. The core picks the broker for each attempt and moves to the other one when a
request fails, so a sync goes through whichever broker answers; timeouts, retries, back-off
and giving up all come from the core. Account requests (sign-up, login, the user's lists)
and status requests are sent by the shell itself, lazy-pirate style: one attempt per
broker in turn, each with a timeout, the same request id every time.

The core only ever knows what the store holds: it is built from the store, and built
again from it whenever carrying out its effects fails (a ``SaveEdit`` that raised would
leave in the core an edit that is not on disk: a retry would send its dot, and after a
restart the device would issue that dot again), and when a list is forgotten or comes
back.

Failing fast. Each broker socket has a ZeroMQ monitor, and
:class:`~reference_cluster.processes.reachability.Reachability` reads its events by
three rules. Rule 1: a broker is *up* from a completed handshake until it
disconnects. Rule 2: it is *down* while it is not up and one of its connection attempts
failed (refused, timed out, host not found, handshake failed, link dropped) since the
current wait began. Rule 3: a request or a sync stops waiting early, as *unreachable*,
once every broker is down and the wait has lasted ``grace`` seconds (ZeroMQ redials a
refused connection every 0.1 to 1 s, so a broker that comes up meanwhile is still used).
A broker that is up but slow gets the whole timeout.

The agent (``python -m reference_cluster.processes.agent``) keeps a client running and
syncing in the background and takes JSON commands on standard input, for tests and the
demo.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from reference_cluster.cores.backoff import backoff_delay
from reference_cluster.cores.client import ClientConfig, ClientCore, SavedList
from reference_cluster.errors import (
    AccessDenied,
    ClusterError,
    ClusterUnavailable,
    InvalidEndpoint,
    LoginFailed,
    MalformedMessage,
    NotLoggedIn,
    RequestRefused,
    SessionInvalid,
    StoreError,
    UserExists,
)
from reference_cluster.processes.config import (
    require_endpoint,
    tune_socket,
)
from reference_cluster.processes.reachability import MONITORED, Reachability, close_monitored
from reference_cluster.processes.security import client_keys
from reference_cluster.protocol.effects import Acked, Effect, SaveEdit, SaveMerge, Send, SyncFailed
from reference_cluster.protocol.messages import (
    AccountDone,
    AccountRequest,
    BrokerStatus,
    ChangePassword,
    DeleteAccount,
    ErrorReply,
    ListsReply,
    ListsRequest,
    LogIn,
    LogOut,
    Members,
    MembersReply,
    Message,
    SignUp,
    Status,
    Welcome,
    decode,
    encode,
)
from reference_cluster.shopping_list import ShoppingList, new_list_id
from reference_cluster.storage.client_store import ClientSession, ClientStore

__all__ = ["Asked", "Client", "Mutate", "SyncOutcome", "refusal_error"]

log = logging.getLogger(__name__)

_MAX_WAIT = 1.0
_GRACE = 1.0
_HASH_ATTEMPT = 5.0  # one attempt of a request that hashes a password (about 0.5 s each)
Mutate = Callable[[ShoppingList, str], ShoppingList]
Asked = AccountRequest | Status


def refusal_error(reply: ErrorReply) -> ClusterError:
    """The exception that tells a user what an error reply means."""
    detail = reply.detail or reply.code
    if reply.code == "login_failed":
        return LoginFailed(detail)
    if reply.code == "user_exists":
        return UserExists(detail)
    if reply.code in ("unauthorized", "unknown_session"):
        return SessionInvalid(f"the cluster refused the session ({detail}); log in again")
    if reply.code == "forbidden":
        return AccessDenied(detail)
    if reply.code == "rate_limited":
        return RequestRefused(f"the cluster refused: {detail}", code=reply.code)
    if reply.retryable:
        return ClusterUnavailable(f"the cluster could not answer: {detail}")
    return RequestRefused(f"the cluster refused the request: {detail}", code=reply.code)


class SyncOutcome:
    """What a sync achieved: the lists it synced and the ones it gave up on (with the
    reason: ``timeout`` or an error code)."""

    def __init__(self) -> None:
        self.acked: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self.copies: dict[str, int] = {}
        """List -> how many servers held its pushed edits durably when acknowledged."""

    @property
    def ok(self) -> bool:
        """Whether nothing was given up."""
        return not self.failed


class Client:
    """One user's lists on one device, connected to the brokers.

    Args:
        store: the device's store (its session, if any, gives the token).
        brokers: the brokers' front ends (ZeroMQ end points, used unchanged).
        broker_key: the front ends' CURVE public key (Z85; the cluster's
            ``keys/frontend.key``): every link is encrypted and a broker that cannot prove
            it holds the matching secret key is never talked to. None is insecure mode
            (experiments only; a warning is logged).
        config: request timing (timeouts, attempts, back-off).
        offline: never open a socket; edits stay queued in the store.
        heartbeat: ZeroMQ connection heartbeat in seconds (0 for none).
        rng: the source of request ids and jitter.
        grace: while every broker refuses connections (or cannot be reached), a request
            or a sync gives up after this many seconds instead of its whole timeout.
    """

    def __init__(
        self,
        store: ClientStore[ShoppingList],
        brokers: Sequence[str],
        *,
        broker_key: bytes | None,
        config: ClientConfig | None = None,
        offline: bool = False,
        heartbeat: float = 1.0,
        rng: random.Random | None = None,
        grace: float = _GRACE,
    ) -> None:
        self.store = store
        self.brokers = tuple(brokers)
        self.security = client_keys(broker_key)
        self.config = config or ClientConfig()
        self.offline = offline
        self._heartbeat = heartbeat
        self._rng = rng or random.Random()
        self._background = False
        self._restart_background = False
        self.core: ClientCore[ShoppingList] = self._load_core()
        self._ctx: zmq.Context[Any] | None = None
        self._socks: dict[str, zmq.Socket[Any]] = {}
        self._monitors: dict[str, zmq.Socket[Any]] = {}
        # A connection attempt into a partition is given up after one heartbeat (see
        # tune_socket); one given up in less than half of that was refused.
        self._reach = Reachability(
            self.brokers, grace=grace, refused_within=heartbeat / 2 if heartbeat > 0 else 5.0
        )
        self._replies: dict[str, Message] = {}
        self._waiting: set[str] = set()
        self.outcome = SyncOutcome()
        self._requests = 0
        self.signed_up = False
        """Whether the last sign-up made the account (False: it existed, same password)."""
        self._nonce = f"{self._rng.getrandbits(64):016x}"

    # -- reading --------------------------------------------------------------------------

    @property
    def replica(self) -> str:
        """The device's replica id."""
        return self.store.replica_id

    @property
    def session(self) -> ClientSession | None:
        """The saved login, if any."""
        return self.store.session()

    def list_ids(self) -> tuple[str, ...]:
        """The ids of the lists on this device."""
        return self.core.list_ids()

    def state(self, list_id: str) -> ShoppingList | None:
        """A copy of a list's local state, or None."""
        return self.core.state(list_id)

    def queued(self, list_id: str) -> int:
        """How many of a list's edits wait for a server's acknowledgement."""
        return self.core.queued(list_id)

    # -- local edits ----------------------------------------------------------------------

    def edit(self, list_id: str, mutate: Mutate) -> ShoppingList:
        """Apply an edit now (durably) and start sending it; return the delta.

        Raises:
            What the mutation raises (InvalidEdit, UnknownItem, ListDeleted...); nothing
            changed then. StoreError: the edit could not be saved; nothing changed then
            either (the core is rebuilt from the store) and nothing was sent.
        """
        self._bring_back(list_id)
        delta, effects = self.core.edit(list_id, mutate, time.monotonic())
        self._carry_out(effects)
        return delta

    def create(self, name: str) -> str:
        """Create a list named ``name`` on this device; return its new id."""
        list_id = new_list_id()
        self.edit(list_id, lambda s, r: s.rename(r, name))
        return list_id

    def open_list(self, list_id: str) -> None:
        """Track a list shared by its id (it is pulled at the next sync); a list this
        device forgot comes back as it was."""
        self._bring_back(list_id)
        self._carry_out(self.core.open_list(list_id, time.monotonic()))

    def forget(self, list_id: str) -> None:
        """Stop tracking a list on this device (it stays in the cluster): it leaves
        :meth:`list_ids` and is no longer synced; its queued edits are not sent.

        The store keeps the list's state, queue and sequence numbers out of sight (the
        record of the dots this device issued for it), so opening or editing the same id
        again brings it back as it was and never issues a dot twice.
        """
        self.store.forget(list_id)
        self._reload_core()

    def _bring_back(self, list_id: str) -> None:
        """If the store holds ``list_id`` as forgotten, bring it back into the store and
        the core, so that its next edit continues its dots and sequence numbers."""
        if list_id not in self.core.list_ids() and self.store.restore(list_id):
            self._reload_core()

    # -- syncing --------------------------------------------------------------------------

    def sync(self, list_ids: Iterable[str] | None = None, *, timeout: float = 10.0) -> SyncOutcome:
        """Push and pull the given lists (default: all) and wait until done or given up.

        Returns:
            What was acknowledged and what was given up. Offline, everything is
            "given up" with the reason ``offline``; when no broker can be reached (see
            the module notes), with ``unreachable`` after ``grace`` seconds; else,
            what is not done in time, with ``timeout``.
        """
        self.outcome = SyncOutcome()
        now = time.monotonic()
        targets = list(self.core.list_ids() if list_ids is None else list_ids)
        if self.offline:
            self.outcome.failed.update(dict.fromkeys(targets, "offline"))
            return self.outcome
        self.connect_all()
        self._reach.begin(now)
        try:
            for list_id in targets:
                self._carry_out(self.core.sync(list_id, now))
            done = self.run(lambda: not self.core.busy or self._unreachable(), timeout)
            if not done or self.core.busy:
                reason = "unreachable" if done else "timeout"
                for list_id in targets:
                    self.outcome.failed.setdefault(list_id, reason)
        finally:
            self._reach.end()
        return self.outcome

    def run(self, until: Callable[[], bool], timeout: float) -> bool:
        """Serve sockets and timers until ``until()`` holds or ``timeout`` passes.

        Returns:
            Whether ``until()`` held.
        """
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.step(left)
        return True

    def step(self, wait: float, extra: Sequence[int] = ()) -> list[int]:
        """Wait at most ``wait`` seconds for a frame or a timer, and handle what came.

        Args:
            extra: more file descriptors to watch.

        Returns:
            Those of ``extra`` that are readable.
        """
        if self._restart_background:
            self._restart_background = False
            self._carry_out(self.core.start(time.monotonic()))
        core_deadline = self.core.next_deadline()
        if core_deadline is not None:
            wait = min(wait, core_deadline - time.monotonic())
        poller = zmq.Poller()
        for sock in [*self._socks.values(), *self._monitors.values()]:
            poller.register(sock, zmq.POLLIN)
        for fd in extra:
            poller.register(fd, zmq.POLLIN)
        ready: list[int] = []
        if poller.sockets:
            events = dict(poller.poll(max(0, int(min(wait, _MAX_WAIT) * 1000) + 1)))
            for broker, monitor in self._monitors.items():
                if monitor in events:
                    self._watch(broker, monitor)
            for broker, sock in self._socks.items():
                if sock in events:
                    self._drain(broker, sock)
            ready = [fd for fd in extra if fd in events]
        else:
            time.sleep(max(0.0, min(wait, _MAX_WAIT)))
        now = time.monotonic()
        core_deadline = self.core.next_deadline()
        if core_deadline is not None and core_deadline <= now:
            self._carry_out(self.core.on_timer(now))
        return ready

    def start_background(self) -> None:
        """Sync every list now and every ``sync_interval`` from now on (the agent)."""
        self._background = True
        self._restart_background = False
        self._carry_out(self.core.start(time.monotonic()))

    # -- account and status requests ------------------------------------------------------

    def sign_up(self, name: str, password: str, *, timeout: float = 10.0) -> ClientSession:
        """Create an account (or log in to it with the right password) and save the session.

        Raises:
            UserExists, RequestRefused (a bad name or password), ClusterUnavailable.
        """
        rid = self._request_id()
        replica = self.replica
        reply = self.request(
            lambda k: SignUp(rid, name, password, k, replica),
            timeout=timeout,
            attempt_timeout=_HASH_ATTEMPT,
        )
        return self._welcome(reply)

    def log_in(self, name: str, password: str, *, timeout: float = 10.0) -> ClientSession:
        """Open a session and save it.

        Raises:
            LoginFailed, ClusterUnavailable.
        """
        rid = self._request_id()
        replica = self.replica
        reply = self.request(
            lambda k: LogIn(rid, name, password, k, replica),
            timeout=timeout,
            attempt_timeout=_HASH_ATTEMPT,
        )
        return self._welcome(reply)

    def _welcome(self, reply: Message) -> ClientSession:
        if isinstance(reply, ErrorReply):
            raise refusal_error(reply)
        if not isinstance(reply, Welcome):
            raise ClusterUnavailable(f"unexpected answer {reply.kind!r}")
        session = ClientSession(reply.name, reply.user_id, reply.token, reply.expires)
        self.store.set_session(session)
        self.core.token = reply.token
        self.signed_up = reply.created
        return session

    def log_out(self, *, timeout: float = 10.0) -> int:
        """End this device's session on the servers (every server refuses its token from
        then on), then forget it here. Offline, or if the cluster does not answer, the
        session is still forgotten here and the error raised.

        Returns:
            How many sessions the server ended (1, or 0 if it was over already).

        Raises:
            NotLoggedIn: no session here. ClusterUnavailable: the servers were not told.
        """
        token = self.core.token
        if token is None:
            raise NotLoggedIn("not logged in on this device")
        rid = self._request_id()
        try:
            reply = self.request(lambda k: LogOut(rid, token, k), timeout=timeout)
        finally:
            self.store.clear_session()
            self.core.token = None
        return self._done(reply).sessions_ended

    def change_password(self, old: str, new: str, *, timeout: float = 10.0) -> int:
        """Change the logged-in user's password; every other session of the user ends
        (this device's stays).

        Returns:
            How many other sessions the server ended.

        Raises:
            NotLoggedIn, LoginFailed (``old`` is wrong), RequestRefused (``new`` breaks
            the rules, or too many attempts), SessionInvalid, ClusterUnavailable.
        """
        token = self._token()
        rid = self._request_id()
        reply = self.request(
            lambda k: ChangePassword(rid, token, old, new, k),
            timeout=timeout,
            attempt_timeout=_HASH_ATTEMPT,
        )
        return self._done(reply).sessions_ended

    def delete_account(self, password: str, *, timeout: float = 10.0) -> None:
        """Delete the logged-in user's account (confirmed by its password): its sessions
        end everywhere and its lists become unreachable. The session is forgotten here.

        Raises:
            NotLoggedIn, LoginFailed (wrong password), SessionInvalid, ClusterUnavailable.
        """
        token = self._token()
        rid = self._request_id()
        reply = self.request(
            lambda k: DeleteAccount(rid, token, password, k),
            timeout=timeout,
            attempt_timeout=_HASH_ATTEMPT,
        )
        self._done(reply)
        self.store.clear_session()
        self.core.token = None

    def _token(self) -> str:
        token = self.core.token
        if token is None:
            raise NotLoggedIn("log in first (shoplist login NAME)")
        return token

    def _done(self, reply: Message) -> AccountDone:
        if isinstance(reply, ErrorReply):
            raise refusal_error(reply)
        if not isinstance(reply, AccountDone):
            raise ClusterUnavailable(f"unexpected answer {reply.kind!r}")
        return reply

    def owned_lists(self, *, timeout: float = 10.0) -> list[str]:
        """The ids of the lists the logged-in user owns, as the cluster knows them.

        Raises:
            NotLoggedIn, SessionInvalid, ClusterUnavailable.
        """
        return list(self.cluster_lists(timeout=timeout).owned)

    def cluster_lists(self, *, timeout: float = 10.0) -> ListsReply:
        """The lists the logged-in user owns and those others shared with them, as the
        cluster knows them.

        Raises:
            NotLoggedIn, SessionInvalid, ClusterUnavailable.
        """
        token = self._token()
        rid = self._request_id()
        reply = self.request(lambda k: ListsRequest(rid, token, k), timeout=timeout)
        if isinstance(reply, ErrorReply):
            raise refusal_error(reply)
        if not isinstance(reply, ListsReply):
            raise ClusterUnavailable(f"unexpected answer {reply.kind!r}")
        return reply

    def members(
        self,
        list_id: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> MembersReply:
        """A list's owner and members (user names), after adding and removing the given
        user names: the owner may change anyone, a member may only remove themself.

        Raises:
            NotLoggedIn, SessionInvalid, AccessDenied (not the owner, or not a member),
            RequestRefused (no such user, or too many members), ClusterUnavailable.
        """
        token = self._token()
        rid = self._request_id()
        reply = self.request(
            lambda k: Members(rid, token, list_id, tuple(add), tuple(remove), k), timeout=timeout
        )
        if isinstance(reply, ErrorReply):
            raise refusal_error(reply)
        if not isinstance(reply, MembersReply):
            raise ClusterUnavailable(f"unexpected answer {reply.kind!r}")
        return reply

    def broker_status(self, broker: str, *, timeout: float = 2.0) -> BrokerStatus | None:
        """Ask one broker for its status; None if it does not answer in time."""
        rid = self._request_id()
        try:
            reply = self._attempt(broker, Status(rid), timeout)
        except ClusterUnavailable:
            return None
        return reply if isinstance(reply, BrokerStatus) else None

    def request(
        self,
        make: Callable[[int], Asked],
        *,
        timeout: float = 10.0,
        attempt_timeout: float | None = None,
    ) -> Message:
        """Send ``make(attempt)`` to the brokers in turn until one answers with anything
        but a retryable error (lazy pirate: every attempt reuses the request id).

        Args:
            attempt_timeout: how long one attempt waits (default: twice the configured
                request timeout; requests that hash a password wait longer).

        Raises:
            ClusterUnavailable: no answer within ``timeout`` (or only retryable errors),
                or no broker reachable for ``grace`` seconds (see the module notes).
            InvalidEndpoint: a broker's endpoint is not a ZeroMQ endpoint.
        """
        if self.offline:
            raise ClusterUnavailable("offline: this command needs the cluster")
        self.connect_all()
        self._reach.begin(time.monotonic())
        try:
            return self._request(make, timeout, attempt_timeout)
        finally:
            self._reach.end()

    def _request(
        self, make: Callable[[int], Asked], timeout: float, attempt_timeout: float | None
    ) -> Message:
        deadline = time.monotonic() + timeout
        last = "no broker was tried"
        cfg = self.config
        per_attempt = max(cfg.request_timeout * 2, attempt_timeout or 0.0)
        attempt = 0
        start = self._rng.randrange(len(self.brokers))
        while (left := deadline - time.monotonic()) > 0:
            broker = self.brokers[(start + attempt) % len(self.brokers)]
            try:
                reply = self._attempt(broker, make(attempt), min(left, per_attempt))
            except ClusterUnavailable as exc:
                last = str(exc)
            else:
                if not (isinstance(reply, ErrorReply) and reply.retryable):
                    return reply
                last = f"{broker} answered {reply.detail or reply.code}"
            if self._unreachable():
                raise ClusterUnavailable(self._reach.describe())
            pause = backoff_delay(
                attempt, base=cfg.backoff_base, cap=cfg.backoff_cap, jitter=self._rng.random()
            )
            attempt += 1
            self.run(self._unreachable, min(pause, max(0.0, deadline - time.monotonic())))
        raise ClusterUnavailable(
            f"the cluster did not answer within {timeout:g}s (last try: {last})"
        )

    def _attempt(self, broker: str, msg: Asked, timeout: float) -> Message:
        rid = msg.request_id
        self._waiting.add(rid)
        try:
            self._send(Send(broker, msg))
            self.run(lambda: rid in self._replies or self._unreachable(), timeout)
            if rid not in self._replies:
                if self._reach.down(broker):
                    raise ClusterUnavailable(f"{broker}: {self._reach.why(broker)}")
                raise ClusterUnavailable(f"{broker} gave no reply")
            return self._replies.pop(rid)
        finally:
            self._waiting.discard(rid)
            self._replies.pop(rid, None)

    def _unreachable(self) -> bool:
        return self._reach.unreachable(time.monotonic())

    def _request_id(self) -> str:
        self._requests += 1
        return f"x{self._nonce}.{self._requests}"

    # -- frames and effects ---------------------------------------------------------------

    def _drain(self, broker: str, sock: zmq.Socket[Any]) -> None:
        for _ in range(256):
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode(data)
            except MalformedMessage as exc:
                log.warning("client %s: malformed message from %s: %s", self.replica, broker, exc)
                continue
            rid = getattr(msg, "request_id", None)
            if isinstance(rid, str) and rid in self._waiting:
                self._replies[rid] = msg
                continue
            self._carry_out(self.core.receive_message(broker, msg, time.monotonic()))

    def _load_core(self) -> ClientCore[ShoppingList]:
        """A core that knows exactly what the store holds: its lists with their queues and
        sequence numbers, and the saved session's token."""
        session = self.store.session()
        saved = {
            k: SavedList(v.state, v.queue, v.next_seq)
            for k, v in sorted(self.store.saved().items())
        }
        return self._new_core(saved, None if session is None else session.token)

    def _new_core(
        self, saved: Mapping[str, SavedList[ShoppingList]], token: str | None
    ) -> ClientCore[ShoppingList]:
        return ClientCore(
            self.store.replica_id,
            ShoppingList,
            brokers=self.brokers,
            saved=saved,
            config=self.config,
            rng=self._rng,
            token=token,
        )

    def _reload_core(self) -> None:
        """Replace the core by one built from the store, so that it knows only what is
        durable. A request in flight is dropped (its deltas stay queued; a late reply is
        harmless); background syncing starts again at the next :meth:`step`.

        If the store cannot be read, the new core knows no list at all (it sends nothing,
        and an edit of a list the store holds fails to save) until the next rebuild.
        """
        try:
            core = self._load_core()
        except StoreError:
            log.exception("client %s: cannot read the store; tracking no list", self.replica)
            core = self._new_core({}, self.core.token)
        self.core = core
        self._restart_background = self._background

    def _carry_out(self, effects: list[Effect]) -> None:
        """Carry out a core's effects in order. If one raises, the core may hold what the
        store does not (an unsaved edit or merge, an ack not recorded): rebuild it from
        the store, then re-raise."""
        try:
            for effect in effects:
                self._carry_out_one(effect)
        except BaseException:
            self._reload_core()
            raise

    def _carry_out_one(self, effect: Effect) -> None:
        if isinstance(effect, Send):
            self._send(effect)
        elif isinstance(effect, SaveEdit):
            self.store.save_edit(effect.list_id, effect.seq, effect.delta)
        elif isinstance(effect, SaveMerge):
            self.store.merge(effect.list_id, effect.delta)
        elif isinstance(effect, Acked):
            self.store.ack(effect.list_id, effect.through_seq)
            self.outcome.acked[effect.list_id] = effect.through_seq
            if effect.copies is not None:
                self.outcome.copies[effect.list_id] = effect.copies
        elif isinstance(effect, SyncFailed):
            self.outcome.failed[effect.list_id] = effect.reason

    def _socket(self, broker: str) -> zmq.Socket[Any]:
        """The broker's socket, opened (with its monitor) and connecting on first use.

        Raises:
            InvalidEndpoint: ``broker`` is not a ZeroMQ endpoint; nothing is left open.
        """
        sock = self._socks.get(broker)
        if sock is not None:
            return sock
        require_endpoint(broker, "bad broker endpoint")
        if self._ctx is None:
            self._ctx = zmq.Context()
            self.security.start(self._ctx)  # warns in insecure mode
        sock = self._ctx.socket(zmq.DEALER)
        monitor: zmq.Socket[Any] | None = None
        try:
            tune_socket(sock, heartbeat=self._heartbeat, linger=0)
            # Not IMMEDIATE: a request sent while the connection is still being made
            # waits for it; one queued for a broker that is down is retried elsewhere
            # by the core, and a late delivery is harmless (joins are idempotent).
            sock.setsockopt(zmq.SNDHWM, 100)
            self.security.dial_broker(sock)
            monitor = sock.get_monitor_socket(MONITORED)
            monitor.setsockopt(zmq.LINGER, 0)
            sock.connect(broker)
        except zmq.ZMQError as exc:
            close_monitored(sock, monitor)
            raise InvalidEndpoint(f"bad broker endpoint {broker!r}: {exc.strerror}") from None
        except BaseException:
            close_monitored(sock, monitor)
            raise
        self._socks[broker] = sock
        self._monitors[broker] = monitor
        return sock

    def _watch(self, broker: str, monitor: zmq.Socket[Any]) -> None:
        """Hand the monitor's events about ``broker`` to the reachability rules."""
        for _ in range(256):
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            self._reach.on_event(broker, int(event["event"]), time.monotonic())

    def _send(self, effect: Send) -> None:
        if self.offline:
            return
        try:
            self._socket(effect.to).send(encode(effect.message), zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno != errno.EAGAIN:
                raise
            log.debug(
                "client %s: %s is not connected; %s dropped",
                self.replica,
                effect.to,
                effect.message.kind,
            )

    def connect_all(self) -> None:
        """Open the sockets to every broker now (they connect in the background)."""
        if not self.offline:
            for broker in self.brokers:
                self._socket(broker)

    def close(self) -> None:
        """Close the sockets and the store."""
        for broker, sock in self._socks.items():
            close_monitored(sock, self._monitors.get(broker))
        self._socks.clear()
        self._monitors.clear()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        self.store.close()
