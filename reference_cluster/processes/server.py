"""The server process: a ZeroMQ and SQLite shell around
:class:`~reference_cluster.cores.server.ServerCore` and
:class:`~reference_cluster.cores.directory.Directory`.

Sockets: one DEALER to each broker's back end (the core's ``brokers`` are their end
points); one ROUTER bound on the server's *peer end point*, where the other servers'
DEALERs connect (each with its server id as routing id) and where tools ask for
:class:`~reference_cluster.protocol.messages.Status`; one DEALER to each peer's end point. So a
message to a peer always leaves through the DEALER to that peer, and one from a peer
always arrives on the ROUTER.

Theory of operation
-------------------
Rule 1 (acknowledged means committed). The core asks for writes with ``Persist`` effects.
The shell collects the writes asked for while it drains what the sockets hold (up to
:data:`_DRAIN` frames), commits them in one SQLite transaction (``apply_many``: WAL,
``synchronous=FULL``), and only then calls ``core.persisted`` for each, which releases
the acknowledgements. Many concurrent edits cost one ``fsync`` (group commit). A server
killed at any moment restarts from its store with every acknowledged edit. Writes that
no acknowledgement waits for (a peer's propagation, anti-entropy) may wait up to
:data:`_LAZY_COMMIT` seconds for company: a peer then commits a stream of propagated
edits in a few transactions instead of one per edit. A crash loses only such writes,
which no client was told about and anti-entropy brings back (Rule 2 of the core).

Rule 2 (the directory guards the core). Account requests (``Relay``) go to the directory;
every client sync passes the directory's ``admit`` (session token, owner-only delete)
inside the core, after its delta is decoded once. Directory and status messages on the
peer end point are answered by the shell; everything else goes to the core.

Rule 4 (hashing off the loop). A password hash (login, sign-up, password change, account
deletion) never runs on the loop: the directory answers such a request with a
:class:`~reference_cluster.cores.directory.Pending` hash job, which the shell hands to its
bounded :class:`~reference_cluster.processes.hashpool.HashPool`; the result wakes the loop
through the pool's socket pair and the request resumes there. With the pool full, the
request is answered ``busy`` at once (retryable). So heartbeats never wait behind a hash.

Rule 5 (quiet logs drain). Every anti-entropy interval the shell folds the delta logs of
up to :data:`_FOLD_QUIET` lists that were not written since the previous time
(:meth:`~reference_cluster.storage.sqlite.SqliteStore.fold_quiet`, about 0.15 ms a small
list), so that a restart replays only the lists written lately.

Rule 3 (never stop on input). A frame that does not decode gets an error reply; a bug
while handling one frame is logged and the frame dropped.

Run ``python -m reference_cluster.processes.server --help`` for the flags.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import logging
import os
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import zmq

from reference_cluster.cores.directory import Directory, Outcome, Pending
from reference_cluster.cores.server import ServerConfig, ServerCore
from reference_cluster.errors import ClusterError, KeysMissing, MalformedMessage
from reference_cluster.processes.config import (
    LocalLayout,
    StopSignal,
    add_common_flags,
    add_seconds_flag,
    add_security_flags,
    bind_endpoint,
    bound_member_port,
    env,
    env_list,
    local_layout,
    parse_positive,
    print_ready,
    require_endpoint,
    setup_logging,
    tune_socket,
)
from reference_cluster.processes.hashpool import (
    AccountSettings,
    HashPool,
    account_settings_from_args,
    add_account_flags,
)
from reference_cluster.processes.security import Security
from reference_cluster.protocol.effects import (
    DropHint,
    DropList,
    Effect,
    Persist,
    SaveMembership,
    Send,
)
from reference_cluster.protocol.messages import (
    Deliver,
    DirectoryDigest,
    DirectoryPush,
    ErrorReply,
    ListsReply,
    MembershipUpdate,
    Message,
    Relay,
    ServerStatus,
    Status,
    decode,
    encode,
)
from reference_cluster.protocol.placement import DEFAULT_REPLICAS, Membership
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.server_store import ServerStore
from reference_cluster.storage.sqlite import make_private_folder

__all__ = ["Server", "ServerSettings", "main", "parse_broker", "parse_peer"]

log = logging.getLogger(__name__)

_REDIAL_AFTER = 2.0
"""Seconds of failed sends to a peer or broker before it is dialed again."""

_DRAIN = 256  # frames handled per socket before the batch is committed
_MAX_WAIT = 1.0
_LAZY_COMMIT = 0.02  # seconds a write no acknowledgement waits for may wait (Rule 1)
_FOLD_QUIET = 200  # lists whose quiet delta logs are folded each anti-entropy interval (Rule 5)


def parse_peer(text: str) -> tuple[str, str]:
    """``ID=ENDPOINT`` -> ``(id, endpoint)``.

    Raises:
        ValueError: no ``=``, an empty side, or not an endpoint (see ``check_endpoint``).
    """
    peer_id, sep, endpoint = text.partition("=")
    if not sep or not peer_id or not endpoint:
        raise ValueError(f"a peer is ID=ENDPOINT (s2=tcp://127.0.0.1:7202), got {text!r}")
    return peer_id, require_endpoint(endpoint, f"peer {peer_id}")


def parse_broker(text: str) -> tuple[str | None, str]:
    """``ID=ENDPOINT`` -> ``(id, endpoint)``; a bare ``ENDPOINT`` -> ``(None, endpoint)``
    (insecure mode only: a secure server finds a broker's key by its id).

    Raises:
        ValueError: an empty side, or not an endpoint.
    """
    if "=" in text:
        return parse_peer(text)
    return None, require_endpoint(text, "broker")


@attrs.frozen
class ServerSettings:
    """Everything a server needs to start.

    Attributes:
        server_id: the server's id (unique in the cluster; its routing id at peers).
        store: the SQLite file.
        bind: the peer end point to bind (``*`` as port picks one).
        brokers: ``(id, back end)`` of the brokers to connect to (the id is None only in
            insecure mode).
        peers: ``(id, end point)`` of every other server.
        keys: the key folder (see :mod:`reference_cluster.processes.security`); None for
            insecure mode.
        config: heartbeat and anti-entropy timing.
        heartbeat: ZeroMQ connection heartbeat in seconds (0 for none).
    """

    server_id: str
    store: Path
    bind: str
    brokers: tuple[tuple[str | None, str], ...]
    peers: tuple[tuple[str, str], ...]
    keys: Path | None
    config: ServerConfig = attrs.field(factory=ServerConfig)
    heartbeat: float = 1.0
    accounts: AccountSettings = attrs.field(factory=AccountSettings)
    """Password hashing, its worker pool, sign-up rate and list quota."""
    replicas: int = DEFAULT_REPLICAS
    """How many of the servers (this one and its peers) hold each list."""
    write_quorum: int | None = None
    """How many servers hold a push durably before it is acknowledged (None: 2, or 1
    where a list has one holder)."""


class Server:
    """A server with its store open and its sockets bound; :meth:`run` serves.

    Raises:
        StoreError: the store cannot be opened. zmq.ZMQError: the end point cannot be bound.
        KeysMissing, ValueError: a key is missing or malformed, or a broker has no id.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = s = settings
        self.security = (
            Security.insecure() if s.keys is None else Security.member(s.keys, s.server_id)
        )
        if s.keys is not None and any(name is None for name, _ in s.brokers):
            raise ValueError("a secure server dials each broker as ID=ENDPOINT (b0=tcp://...)")
        self.store: ServerStore[ShoppingList] = ServerStore(s.store, ShoppingList)
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._socks: list[zmq.Socket[Any]] = []
        try:
            self.security.start(self._ctx)
            self.incarnation = self.store.start_incarnation()
            membership, addresses = self._first_membership()
            peer_ids = sorted(membership.servers - {s.server_id})
            self.directory = Directory(
                s.server_id,
                self.store,
                peers=peer_ids,
                interval=s.config.anti_entropy_interval,
                params=s.accounts.params,
                quota=s.accounts.list_quota,
                signups=s.accounts.signups,
                is_deleted=self._deleted,
            )
            self._hashes = HashPool(s.accounts.hash_workers, s.accounts.hash_queue)
            self._hashing: dict[int, tuple[str, Relay, Pending]] = {}
            self._jobs = itertools.count()
            self.core: ServerCore[ShoppingList] = ServerCore(
                s.server_id,
                ShoppingList,
                peers=peer_ids,
                brokers=[endpoint for _, endpoint in s.brokers],
                store=self.store,
                incarnation=self.incarnation,
                config=s.config,
                rng=random.Random(),
                admit=lambda req, delta, _now: self.directory.admit(req, delta, time.time()),
                replicas=s.replicas,
                write_quorum=s.write_quorum,
                membership=membership,
                addresses=addresses,
            )
            self._router = self._socket(zmq.ROUTER)
            self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # A restarted peer takes its routing id back at once (see the broker).
            self._router.setsockopt(zmq.ROUTER_HANDOVER, 1)
            bound_member_port(self._router)  # queue bounds per connection
            self.security.serve_members(self._router)
            self._router.bind(s.bind)
            self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
            self._out: dict[str, zmq.Socket[Any]] = {}
            self._poller: zmq.Poller | None = None
            self._inbound: dict[zmq.Socket[Any], str] = {}
            self._broker_ids = {endpoint: broker for broker, endpoint in s.brokers}
            for broker, endpoint in s.brokers:
                self._out[endpoint] = self._dealer(endpoint, broker)
            self._peer_ids: dict[bytes, str] = {}
            self._dialed: dict[str, str] = {}
            self._cut_off: dict[str, float] = {}
            """Peer or broker -> since when sends to it fail (see :meth:`_redial`)."""
            self._reach(addresses)
        except BaseException:
            self.close()
            raise
        self._batch: list[Persist] = []
        self._batch_since = 0.0
        self._fold_at = time.monotonic()
        self.commits = 0
        log.info(
            "server %s: incarnation %d, %d lists, peer end point %s",
            s.server_id,
            self.incarnation,
            len(self.core.list_ids()),
            self.endpoint,
        )

    def _first_membership(self) -> tuple[Membership, dict[str, str]]:
        """The membership to start from: the flags' (this server and its peers, epoch 0),
        or the one recorded in the store if it is later (Rule 13 of the server core)."""
        s = self.settings
        addresses = {p: endpoint for p, endpoint in s.peers}
        flags = Membership({s.server_id, *addresses})
        recorded = self.store.cluster_membership()
        if recorded is None:
            return flags, addresses
        epoch, servers = recorded
        saved = Membership(servers, epoch)
        if not saved.later_than(flags):
            return flags, addresses
        log.info("server %s: membership epoch %d from the store", s.server_id, epoch)
        return saved, {k: v or addresses.get(k, "") for k, v in servers.items()}

    def _reach(self, addresses: Mapping[str, str]) -> None:
        """Dial every member with a known end point that this server does not reach yet
        (or reaches at another end point)."""
        for peer_id, endpoint in sorted(addresses.items()):
            if peer_id == self.settings.server_id:
                continue
            # A member dials with its id as routing id: know it even before dialing it.
            self._peer_ids[peer_id.encode()] = peer_id
            if not endpoint or self._dialed.get(peer_id) == endpoint:
                continue
            old = self._out.pop(peer_id, None)
            if old is not None:
                self._forget_socket(old)
            self._dialed[peer_id] = endpoint
            try:
                sock = self._out[peer_id] = self._dealer(endpoint, peer_id)
            except (KeysMissing, ValueError, zmq.ZMQError) as exc:
                log.error("server %s: cannot reach %s: %s", self.settings.server_id, peer_id, exc)
                continue
            self._watch(sock, peer_id)

    def _redial(self, now: float) -> None:
        """Dial again every peer (or broker) that sends have failed to reach for
        :data:`_REDIAL_AFTER` seconds. A connection refused during its handshake (a
        member whose key this server, or the peer, did not trust yet when they met) is
        not tried again by ZeroMQ: a fresh socket tries once more."""
        for name, since in list(self._cut_off.items()):
            if now - since < _REDIAL_AFTER:
                continue
            del self._cut_off[name]
            endpoint = self._dialed.pop(name, None)
            if endpoint is not None:
                self._reach({name: endpoint})
                continue
            broker = self._broker_ids.get(name)
            old = self._out.pop(name, None)
            if old is None:
                continue
            self._forget_socket(old)
            sock = self._out[name] = self._dealer(name, broker)
            self._watch(sock, name)

    def _forget_socket(self, sock: zmq.Socket[Any]) -> None:
        if self._poller is not None:
            self._poller.unregister(sock)
        self._inbound.pop(sock, None)
        self._socks.remove(sock)
        sock.close(linger=0)

    def _watch(self, sock: zmq.Socket[Any], name: str) -> None:
        if self._poller is not None:
            self._poller.register(sock, zmq.POLLIN)
            self._inbound[sock] = name

    def _socket(self, kind: int) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self._ctx.socket(kind)
        self._socks.append(sock)
        tune_socket(sock, heartbeat=self.settings.heartbeat)
        return sock

    def _dealer(self, endpoint: str, member: str | None) -> zmq.Socket[Any]:
        sock = self._socket(zmq.DEALER)
        if member is not None:
            self.security.dial_member(sock, member)
        sock.setsockopt(zmq.ROUTING_ID, self.settings.server_id.encode())
        sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a link that is down
        sock.connect(endpoint)
        return sock

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: StopSignal) -> None:
        """Serve until ``stop`` says so, then say goodbye to the brokers."""
        poller = self._poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        inbound = self._inbound
        inbound[self._router] = ""
        for name, sock in self._out.items():
            poller.register(sock, zmq.POLLIN)
            inbound[sock] = name
        poller.register(stop.fd, zmq.POLLIN)
        poller.register(self._hashes.fd, zmq.POLLIN)
        self.directory.start(time.time())
        self._carry_out(self.core.start(time.monotonic()))
        while not stop.check():
            wait = self._wait()
            events = dict(poller.poll(max(0, int(min(wait, _MAX_WAIT) * 1000) + 1)))
            if stop.fd in events:
                stop.drain()
            for sock, name in list(inbound.items()):
                if sock in events:
                    self._drain(sock, name)
            if self._hashes.fd in events:
                self._hashed()
            self._commit()
            try:
                self._timers()
            except Exception:  # Rule 3: a failed round is logged; the next one runs
                log.exception("server %s: a timer failed", self.settings.server_id)
        log.info("server %s: stopping (%s)", self.settings.server_id, stop.reason or "asked")
        self._commit(force=True)
        self._carry_out(self.core.stop(time.monotonic()))

    def _wait(self) -> float:
        times = []
        core = self.core.next_deadline()
        if core is not None:
            times.append(core - time.monotonic())
        directory = self.directory.next_deadline()
        if directory is not None:
            times.append(directory - time.time())
        if self._batch:  # a lazy batch (Rule 1)
            times.append(self._batch_since + _LAZY_COMMIT - time.monotonic())
        times.append(self._fold_at - time.monotonic())
        return min(times)

    def _timers(self) -> None:
        now = time.monotonic()
        if self._fold_at <= now:  # Rule 5
            self._fold_at = now + self.settings.config.anti_entropy_interval
            try:
                self.store.fold_quiet(_FOLD_QUIET)
            except ClusterError as exc:
                log.error("server %s: folding logs failed: %s", self.settings.server_id, exc)
            self._redial(now)
        deadline = self.core.next_deadline()
        if deadline is not None and deadline <= now:
            self._carry_out(self.core.on_timer(now))
        wall = time.time()
        deadline = self.directory.next_deadline()
        if deadline is not None and deadline <= wall:
            self._carry_out(list(self.directory.on_timer(wall)))

    def _drain(self, sock: zmq.Socket[Any], name: str) -> None:
        for _ in range(_DRAIN):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if sock is self._router:
                    ident = frames[0]
                    peer = self._peer_ids.get(ident) or "r:" + ident.hex()
                else:
                    peer = name
                self._on_frame(peer, frames[-1])
            except Exception:  # Rule 3
                log.exception("server %s: failed to handle a frame", self.settings.server_id)

    def _on_frame(self, peer: str, data: bytes) -> None:
        try:
            msg = decode(data)
        except MalformedMessage as exc:
            log.warning(
                "server %s: malformed message from %s: %s", self.settings.server_id, peer, exc
            )
            self._send(Send(peer, ErrorReply.about(None, exc.code, exc)))
            return
        self._carry_out(self._handle(peer, msg))

    def _handle(self, peer: str, msg: Message) -> list[Effect]:
        if isinstance(msg, Relay):
            outcome = self.directory.handle(msg.request, time.time(), msg.source)
            return self._answer(peer, msg, outcome, resumed=False)
        if isinstance(msg, DirectoryPush | DirectoryDigest):
            return list(self.directory.receive(peer, msg, time.time()))
        if isinstance(msg, Status):
            return [Send(peer, self._status(msg))]
        if isinstance(msg, MembershipUpdate) and peer not in self._peer_ids.values():
            # An operator's tool (it dials with the admin key): take the membership if
            # it is newer, and answer with the status that shows what this server follows.
            effects = self.core.adopt(msg, time.monotonic())
            return [*effects, Send(peer, self._status(Status("membership")))]
        return self.core.receive_message(peer, msg, time.monotonic())

    def _answer(self, peer: str, msg: Relay, outcome: Outcome, *, resumed: bool) -> list[Effect]:
        """Send an account request's answer, or hand its hash job to the pool (Rule 4)."""
        if isinstance(outcome, Pending):
            key = next(self._jobs)
            if self._hashes.submit(key, outcome.job, force=resumed):
                self._hashing[key] = (peer, msg, outcome)
                return []
            log.warning(
                "server %s: hash queue full, a request is answered busy", self.settings.server_id
            )
            outcome = ErrorReply(
                msg.request.request_id, "busy", "the server is busy checking passwords; try again"
            )
        if isinstance(outcome, ListsReply):  # a deleted list is nobody's any more
            owned = tuple(i for i in outcome.owned if not self._deleted(i))
            shared = tuple(i for i in outcome.shared if not self._deleted(i))
            outcome = attrs.evolve(outcome, owned=owned, shared=shared)
        # The new session goes to the peers before the client hears of it, so its
        # next request, routed to another server, most likely finds it there.
        return [*self.directory.take_outgoing(), Send(peer, Deliver(msg.client, outcome))]

    def _hashed(self) -> None:
        """Resume the requests whose hash jobs finished (Rule 4)."""
        for key, result in self._hashes.done():
            entry = self._hashing.pop(key, None)  # type: ignore[call-overload]
            if entry is None:
                continue
            peer, msg, pending = entry
            try:
                outcome = pending.resume(result, time.time())
                self._carry_out(self._answer(peer, msg, outcome, resumed=True))
            except Exception:  # Rule 3
                log.exception("server %s: failed to resume a request", self.settings.server_id)

    def _deleted(self, list_id: str) -> bool:
        state = self.core.view(list_id)
        return state is not None and state.deleted

    def _status(self, msg: Status) -> ServerStatus:
        ids = self.core.list_ids()
        digests = {k: d for k in ids if (d := self.core.digest(k)) is not None}
        states: dict[str, Any] = {}
        if msg.states:
            states = {k: st.to_dict() for k in ids if (st := self.core.state(k)) is not None}
        core = self.core
        return ServerStatus(
            msg.request_id,
            self.settings.server_id,
            self.incarnation,
            digests,
            states,
            core.membership.epoch,
            tuple(sorted(core.membership.servers)),
            core.handing,
        )

    # -- effects --------------------------------------------------------------------------

    def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self._send(effect)
            elif isinstance(effect, Persist):
                if not self._batch:
                    self._batch_since = time.monotonic()
                self._batch.append(effect)
            elif isinstance(effect, DropHint):
                self._drop_hint(effect)
            elif isinstance(effect, DropList):
                self._forget(effect)
            elif isinstance(effect, SaveMembership):
                self._save_membership(effect)
        for send in self.directory.take_outgoing():
            self._send(send)

    def _commit(self, *, force: bool = False) -> None:
        """Write the batch in one transaction, then release what waited for it (Rule 1).
        A batch no acknowledgement waits for is written once it is :data:`_LAZY_COMMIT`
        old (or ``force``)."""
        if not self._batch:
            return
        lazy = not force and self.core.pending_acks == 0
        if lazy and time.monotonic() < self._batch_since + _LAZY_COMMIT:
            return
        batch, self._batch = self._batch, []
        now = time.monotonic()
        effects: list[Effect] = []
        try:
            written = self.store.apply_many(
                ((p.list_id, p.delta) for p in batch if p.hint_for is None),
                [(p.list_id, p.hint_for, p.delta) for p in batch if p.hint_for is not None],
            )
        except (ClusterError, OSError) as exc:
            log.error("server %s: commit failed: %s", self.settings.server_id, exc)
            for p in batch:
                effects.extend(self.core.persist_failed(p.token, str(exc), now))
        else:
            self.commits += 1
            for p in batch:
                if p.hint_for is not None or p.list_id in written:
                    effects.extend(self.core.persisted(p.token, now))
                else:
                    effects.extend(self.core.persist_failed(p.token, "the list is gone", now))
        self._carry_out(effects)

    def _save_membership(self, effect: SaveMembership) -> None:
        """Record a newer membership, reach its members, and trust their keys (Rule 13
        of the server core)."""
        sid = self.settings.server_id
        try:
            self.store.record_cluster_membership(effect.epoch, dict(effect.servers))
        except (ClusterError, OSError) as exc:
            log.error("server %s: recording the membership failed: %s", sid, exc)
        try:
            self.security.reload_members()
        except (KeysMissing, ValueError) as exc:
            log.error("server %s: reloading the members' keys failed: %s", sid, exc)
        self._reach(effect.servers)
        self.directory.peers = tuple(sorted(set(effect.servers) - {sid}))

    def _forget(self, effect: DropList) -> None:
        """Forget a list its holders all confirmed (Rule 13 of the server core); one
        that cannot be forgotten now is handed over again after a restart."""
        try:
            self.store.forget_list(effect.list_id, effect.digest)
        except (ClusterError, OSError) as exc:
            log.error("server %s: forgetting a list failed: %s", self.settings.server_id, exc)

    def _drop_hint(self, effect: DropHint) -> None:
        """Delete a hint its holder confirmed (Rule 12 of the server core); one that
        cannot be deleted now is handed over again after a restart."""
        try:
            self.store.drop_hint(effect.list_id, effect.holder, effect.digest)
        except (ClusterError, OSError) as exc:
            log.error("server %s: dropping a hint failed: %s", self.settings.server_id, exc)

    def _send(self, effect: Send) -> None:
        data = encode(effect.message)
        sock = self._out.get(effect.to)
        try:
            if sock is not None:
                sock.send(data, zmq.NOBLOCK)
                self._cut_off.pop(effect.to, None)
            elif effect.to.startswith("r:"):
                self._router.send_multipart([bytes.fromhex(effect.to[2:]), data], zmq.NOBLOCK)
            else:
                log.error("server %s: no socket for %r", self.settings.server_id, effect.to)
        except zmq.ZMQError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EHOSTUNREACH):
                raise
            # The link is down (or the asker left): the core's timers and the client's
            # retries cover a lost message.
            if sock is not None:
                self._cut_off.setdefault(effect.to, time.monotonic())
            log.debug(
                "server %s: %s unreachable, %s dropped",
                self.settings.server_id,
                effect.to,
                effect.message.kind,
            )

    def close(self) -> None:
        """Close the sockets (with linger), the context, the hash pool and the store."""
        with contextlib.suppress(AttributeError):  # an __init__ that failed early
            self._hashes.close()
        for sock in self._socks:
            sock.close()
        self.security.stop()
        self._ctx.term()
        self.store.close()


def _parser() -> argparse.ArgumentParser:
    layout = local_layout()
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="python -m reference_cluster.processes.server",
        description="A shopping-list server: stores lists durably and replicates them.",
    )
    parser.add_argument(
        "--id", default=env("SHOPLIST_SERVER_ID", "s1"), help="server id (SHOPLIST_SERVER_ID)"
    )
    parser.add_argument(
        "--data-dir",
        default=env("SHOPLIST_DATA_DIR", "shoplist-data"),
        metavar="DIR",
        help="where the store lives, as ID.sqlite (SHOPLIST_DATA_DIR; default %(default)s)",
    )
    parser.add_argument(
        "--store", metavar="FILE", help="the SQLite store (default: DATA_DIR/ID.sqlite)"
    )
    parser.add_argument(
        "--bind",
        type=bind_endpoint,
        default=os.environ.get("SHOPLIST_BIND"),
        metavar="ENDPOINT",
        help="peer end point to bind (SHOPLIST_BIND; default: this id's port in the local layout)",
    )
    parser.add_argument(
        "--broker",
        action="append",
        metavar="ID=ENDPOINT",
        help="a broker's id and back end, repeatable (SHOPLIST_BROKER_BACKENDS, "
        f"comma-separated; default {','.join(_layout_brokers(layout))})",
    )
    parser.add_argument(
        "--peer",
        action="append",
        metavar="ID=ENDPOINT",
        help="another server, repeatable (SHOPLIST_PEERS, comma-separated; default: the "
        "other servers of the local layout)",
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="a cluster of this one server: dial no peer"
    )
    add_seconds_flag(
        parser,
        "--heartbeat",
        "SHOPLIST_HEARTBEAT",
        defaults.heartbeat_interval,
        "heartbeat to brokers every so often",
    )
    add_seconds_flag(
        parser,
        "--anti-entropy",
        "SHOPLIST_ANTI_ENTROPY",
        defaults.anti_entropy_interval,
        "anti-entropy round every so often",
    )
    parser.add_argument(
        "--cache-lists",
        type=parse_positive,
        default=os.environ.get("SHOPLIST_CACHE_LISTS", str(defaults.cache_lists)),
        metavar="N",
        help="most decoded lists kept in memory; others are read from the store when needed "
        f"(SHOPLIST_CACHE_LISTS; default {defaults.cache_lists})",
    )
    parser.add_argument(
        "--replicas",
        type=parse_positive,
        default=os.environ.get("SHOPLIST_REPLICAS", str(DEFAULT_REPLICAS)),
        metavar="N",
        help="how many of the servers (this one and its peers) hold each list; every "
        "server of a cluster must be given the same (SHOPLIST_REPLICAS; default "
        f"{DEFAULT_REPLICAS})",
    )
    parser.add_argument(
        "--write-quorum",
        type=parse_positive,
        default=os.environ.get("SHOPLIST_WRITE_QUORUM"),
        metavar="W",
        help="how many of a list's holders (or servers keeping a hint for one) hold an "
        "edit durably before it is acknowledged, at most --replicas (SHOPLIST_WRITE_QUORUM; "
        "default 2, or 1 with one replica)",
    )
    add_common_flags(parser)
    add_security_flags(parser, default_keys=None)
    add_account_flags(parser)
    return parser


def _layout_brokers(layout: LocalLayout) -> list[str]:
    return [f"b{i}={endpoint}" for i, endpoint in enumerate(layout.backends)]


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The settings the flags (and environment) describe.

    Raises:
        ValueError: a malformed flag.
    """
    layout = local_layout()
    server_id: str = args.id
    ids = layout.server_ids
    bind = args.bind
    if bind is None:
        if server_id not in ids:
            raise ValueError(f"--bind is needed for a server id outside {ids}")
        bind = layout.peer(ids.index(server_id) + 1)
    brokers = tuple(
        parse_broker(b)
        for b in args.broker or env_list("SHOPLIST_BROKER_BACKENDS", _layout_brokers(layout))
    )
    raw_peers = (
        []
        if args.no_peers
        else args.peer
        or env_list(
            "SHOPLIST_PEERS",
            [f"{p}={layout.peer(j + 1)}" for j, p in enumerate(ids) if p != server_id],
        )
    )
    peers = tuple(parse_peer(p) for p in raw_peers)
    if server_id in {p for p, _ in peers}:
        raise ValueError(f"server {server_id} is listed as its own peer")
    store = Path(args.store) if args.store else Path(args.data_dir) / f"{server_id}.sqlite"
    keys = None if args.insecure else Path(args.keys or Path(args.data_dir) / "keys")
    return ServerSettings(
        server_id=server_id,
        store=store,
        bind=bind,
        brokers=brokers,
        peers=peers,
        keys=keys,
        config=ServerConfig(
            heartbeat_interval=args.heartbeat,
            anti_entropy_interval=args.anti_entropy,
            cache_lists=args.cache_lists,
        ),
        heartbeat=args.zmq_heartbeat,
        accounts=account_settings_from_args(args),
        replicas=args.replicas,
        write_quorum=args.write_quorum,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run a server until SIGTERM or SIGINT; print ``READY {...}`` once it serves."""
    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.id)
    try:
        settings = settings_from_args(args)
        make_private_folder(settings.store.parent)  # 0700 (storage.sqlite, Rule 5)
        server = Server(settings)
    except (ValueError, ClusterError, OSError, zmq.ZMQError) as exc:
        print(f"error: server {args.id}: {exc}", file=sys.stderr)
        return 1
    stop = StopSignal(watch_parent=args.watch_parent)
    try:
        print_ready(
            role="server",
            id=settings.server_id,
            pid=os.getpid(),
            peer=server.endpoint,
            incarnation=server.incarnation,
            lists=len(server.core.list_ids()),
            secure=server.security.secure,
        )
        server.run(stop)
    finally:
        with contextlib.suppress(Exception):
            server.close()
        stop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
