"""The broker's logic: which servers are alive, and where a client's request goes.

Theory of operation
-------------------
Rule 1 (liveness). A server is live from the first message the broker receives from it
(usually :class:`~reference_cluster.protocol.messages.Announce` or a heartbeat) until ``liveness``
seconds after the last one. Any message counts, replies included. Servers heartbeat
every ``heartbeat_interval``, well under ``liveness`` (a third of it by default), so a
lost heartbeat or two never purges a live server.

Rule 2 (purge). A server silent for the liveness window is purged at that deadline
(:meth:`BrokerCore.on_timer`). Routing never picks a server whose window has passed, even
if the shell calls ``on_timer`` late. A :class:`~reference_cluster.protocol.messages.Goodbye`
purges at once, and so does a report from the shell that the server's address is
unreachable (:meth:`BrokerCore.peer_unreachable`, for a ROUTER_MANDATORY failure).

Rule 3 (one address per server). A server id maps to the address it last spoke from; a
message from a new address (the server restarted and reconnected) replaces the old one.

Rule 4 (routing). A request for list ``L`` with ``attempt`` ``k`` goes to the
``k mod n``-th of the ``n`` live servers that hold ``L``, most preferred first. With a
``membership``, the holders are the first ``replicas`` members of ``L``'s rendezvous
order (:meth:`reference_cluster.protocol.placement.Membership.holders`), whether or not
they are live, and only the live ones among them are candidates; without one, every live
server is a candidate, in the order of :func:`reference_cluster.protocol.placement.preference`
(a server that does not hold ``L`` answers the retryable ``not_holder``). A first attempt
goes to the preferred live holder; a retry goes to another one, so it avoids a server that
died but is not yet purged. With no live holder the client gets the retryable
``unavailable`` at once and tries again later (its edits wait in its own store; no other
server takes them). Account requests (sign-up, login, a user's lists) go the same way to
any live server, since every server holds the directory, ordered by the user name (or the
session token) instead of a list id, so the sign-ups of one name meet at one server while
it lives. A :class:`~reference_cluster.protocol.messages.Status` request is answered
by the broker itself with the servers it holds live.

Rule 4b (limits per source). The shell passes each client frame's source address (the
peer's IP). Password attempts (login, sign-up, password change, account deletion) from one
source are limited to ``logins`` (a token bucket), and sign-ups to ``signups`` besides;
over the limit the client gets ``rate_limited`` at once, with the wait, and nothing
reaches a server (:mod:`reference_cluster.cores.limits`; in memory only). The server's
:class:`~reference_cluster.protocol.messages.Relay` carries the source on, for its logs.

Rule 5 (no request state). The broker never retries and keeps nothing per request: the
client retries (joins are idempotent, so a duplicate does no harm), and a server's reply
names the client address it goes back to.

Rule 6 (nothing durable). After a restart a broker knows no server; each reappears with
its next heartbeat, within one heartbeat interval. Meanwhile clients get ``unavailable``
and retry, possibly through the other broker. Two brokers run side by side and do not
talk to each other: every server heartbeats to both, every client uses one and moves to
the other when a request fails.

Rule 7 (the newest membership). Every server's heartbeat carries the membership it
follows (its epoch and its members). A broker routes by the newest it has heard
(:meth:`~reference_cluster.protocol.placement.Membership.later_than`), so a membership
changed at the servers reaches every broker within a heartbeat interval, and a broker
started with older ``--member`` flags (or none) follows the servers. The replica count
stays the broker's own.
"""

from __future__ import annotations

import logging

import attrs

from reference_cluster.cores.limits import Rate, RateLimiter, retry_text
from reference_cluster.errors import MalformedMessage
from reference_cluster.protocol.effects import Effect, Send
from reference_cluster.protocol.messages import (
    AccountRequest,
    Announce,
    BrokerStatus,
    ChangePassword,
    DeleteAccount,
    Deliver,
    ErrorReply,
    Forward,
    Goodbye,
    Heartbeat,
    ListsRequest,
    LogIn,
    LogOut,
    Members,
    Message,
    Relay,
    SignUp,
    Status,
    SyncRequest,
    decode,
)
from reference_cluster.protocol.placement import DEFAULT_REPLICAS, Membership, preference

__all__ = ["BrokerConfig", "BrokerCore"]

log = logging.getLogger(__name__)


@attrs.frozen
class BrokerConfig:
    """Broker timing.

    Attributes:
        liveness: seconds of silence after which a server is purged (Rule 1).
    """

    liveness: float = attrs.field(default=3.0, validator=attrs.validators.gt(0))
    logins: Rate = attrs.field(factory=lambda: Rate(30, 60.0))
    """Password attempts per source (Rule 4b): 30 a minute, a burst of 30."""
    signups: Rate = attrs.field(factory=lambda: Rate(10, 3600.0))
    """Sign-ups per source, besides: 10 an hour, a burst of 10."""


@attrs.define
class _Server:
    peer: str
    expires: float


class BrokerCore:
    """A broker: ``receive`` messages from clients and servers, route, purge on deadlines.

    Args:
        broker_id: this broker's name (for logs).
        config: timing.
        membership: the member servers, for routing a list's requests to its holders
            (Rule 4); None routes them to any live server.
        replicas: how many members hold each list.

    Raises:
        ValueError: ``replicas`` below 1.
    """

    def __init__(
        self,
        broker_id: str,
        *,
        config: BrokerConfig | None = None,
        membership: Membership | None = None,
        replicas: int = DEFAULT_REPLICAS,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        self.broker_id = broker_id
        self.config = config or BrokerConfig()
        self.membership = membership
        self.replicas = replicas
        self._servers: dict[str, _Server] = {}
        self._by_peer: dict[str, str] = {}
        self._logins = RateLimiter(self.config.logins)
        self._signups = RateLimiter(self.config.signups)
        self.routed = 0
        """Requests forwarded to a server so far."""
        self.refused = 0
        """Requests answered ``unavailable`` so far."""
        self.limited = 0
        """Requests answered ``rate_limited`` so far."""

    # -- the core API ---------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Nothing to do at start: servers make themselves known (Rule 6)."""
        return []

    def receive(
        self, peer: str, data: bytes, now: float, source: str | None = None
    ) -> list[Effect]:
        """Handle one frame from ``peer`` (a client's or a server's address); ``source``
        is the network address it came from, if the shell knows it (Rule 4b)."""
        try:
            msg = decode(data)
        except MalformedMessage as exc:
            log.warning("broker %s: malformed message from %s: %s", self.broker_id, peer, exc)
            return [Send(peer, ErrorReply.about(None, exc.code, exc))]
        return self.receive_message(peer, msg, now, source)

    def receive_message(
        self, peer: str, msg: Message, now: float, source: str | None = None
    ) -> list[Effect]:
        """Handle one message already decoded by the shell (as :meth:`receive` does)."""
        server = self._by_peer.get(peer)
        if server is not None:
            self._servers[server].expires = now + self.config.liveness
        return self._handle(peer, msg, now, source)

    def peer_unreachable(self, peer: str, now: float) -> list[Effect]:
        """The shell could not send to ``peer``: purge the server there, if any (Rule 2)."""
        server = self._by_peer.get(peer)
        if server is not None:
            log.info("broker %s: server %s unreachable, purged", self.broker_id, server)
            self._purge(server)
        return []

    def next_deadline(self) -> float | None:
        """When the earliest live server's window ends."""
        if not self._servers:
            return None
        return min(s.expires for s in self._servers.values())

    def on_timer(self, now: float) -> list[Effect]:
        """Purge every server whose window has passed (Rule 2)."""
        for server in sorted(self._servers):
            if self._servers[server].expires <= now:
                log.info("broker %s: server %s silent, purged", self.broker_id, server)
                self._purge(server)
        return []

    def live_servers(self, now: float) -> tuple[str, ...]:
        """The ids of the servers live at ``now``, sorted."""
        return tuple(sorted(s for s, e in self._servers.items() if e.expires > now))

    # -- handlers -------------------------------------------------------------------------

    def _handle(self, peer: str, msg: Message, now: float, source: str | None) -> list[Effect]:
        if isinstance(msg, SyncRequest):
            return self._route(peer, msg, msg.list_id, now, placed=True)
        if isinstance(msg, SignUp | LogIn | ChangePassword | DeleteAccount):
            refusal = self._limit(msg, source, now)
            if refusal is not None:
                return [Send(peer, refusal)]
        if isinstance(msg, SignUp | LogIn):
            return self._route(peer, msg, f"user\x00{msg.name.lower()}", now, source)
        if isinstance(msg, ListsRequest | LogOut | ChangePassword | DeleteAccount | Members):
            return self._route(peer, msg, f"session\x00{msg.token}", now, source)
        if isinstance(msg, Status):
            status = BrokerStatus(msg.request_id, self.broker_id, self.live_servers(now))
            return [Send(peer, status)]
        if isinstance(msg, Deliver):
            return [Send(msg.client, msg.reply)]
        if isinstance(msg, Announce | Heartbeat):
            self._register(msg.server, peer, now)
            if isinstance(msg, Heartbeat) and msg.members:
                self._follow(Membership(msg.members, msg.epoch))
            return []
        if isinstance(msg, Goodbye):
            entry = self._servers.get(msg.server)
            if entry is not None and entry.peer == peer:
                log.info("broker %s: server %s said goodbye, purged", self.broker_id, msg.server)
                self._purge(msg.server)
            return []
        if isinstance(msg, ErrorReply):
            log.warning(
                "broker %s: error from %s: %s %s", self.broker_id, peer, msg.code, msg.detail
            )
            return []
        log.warning("broker %s: unexpected %s from %s", self.broker_id, msg.kind, peer)
        return [Send(peer, ErrorReply(None, "unexpected_kind", f"a broker takes no {msg.kind}"))]

    def _limit(
        self, msg: SignUp | LogIn | ChangePassword | DeleteAccount, source: str | None, now: float
    ) -> ErrorReply | None:
        """The ``rate_limited`` answer for a password attempt over its source's limit
        (Rule 4b), or None."""
        if source is None:
            return None
        wait = self._logins.take(source, now)
        what = "password attempts"
        if wait is None and isinstance(msg, SignUp):
            wait = self._signups.take(source, now)
            what = "sign-ups"
        if wait is None:
            return None
        self.limited += 1
        log.warning("broker %s: too many %s from %s", self.broker_id, what, source)
        detail = f"too many {what} from {source}; {retry_text(wait)}"
        return ErrorReply(msg.request_id, "rate_limited", detail)

    def _follow(self, heard: Membership) -> None:
        """Route by ``heard`` from now on if it is newer than the membership the broker
        has (Rule 7)."""
        if self.membership is not None and not heard.later_than(self.membership):
            return
        log.info(
            "broker %s: membership epoch %d: %s",
            self.broker_id,
            heard.epoch,
            " ".join(sorted(heard.servers)),
        )
        self.membership = heard

    def _register(self, server: str, peer: str, now: float) -> None:
        entry = self._servers.get(server)
        if entry is None:
            log.info("broker %s: server %s live at %s", self.broker_id, server, peer)
            self._servers[server] = _Server(peer, now + self.config.liveness)
        else:
            if entry.peer != peer:
                self._by_peer.pop(entry.peer, None)
                entry.peer = peer
            entry.expires = now + self.config.liveness
        self._by_peer[peer] = server

    def _purge(self, server: str) -> None:
        entry = self._servers.pop(server)
        self._by_peer.pop(entry.peer, None)

    def _route(
        self,
        peer: str,
        request: SyncRequest | AccountRequest,
        key: str,
        now: float,
        source: str | None = None,
        *,
        placed: bool = False,
    ) -> list[Effect]:
        servers = self._servers
        members = self.membership
        if placed and members is not None:
            placement = members.holders(key, self.replicas)
            candidates = tuple(s for s in placement if (e := servers.get(s)) and e.expires > now)
        else:
            candidates = preference(key, (s for s, e in servers.items() if e.expires > now))
        if not candidates:
            self.refused += 1
            reply = ErrorReply(request.request_id, "unavailable", "no live server holds the list")
            return [Send(peer, reply)]
        server = candidates[request.attempt % len(candidates)]
        self.routed += 1
        wrapped: Message
        if isinstance(request, SyncRequest):
            wrapped = Forward(peer, request)
        else:
            wrapped = Relay(peer, request, source)
        return [Send(self._servers[server].peer, wrapped)]
