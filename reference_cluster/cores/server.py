"""The server's logic: apply deltas, acknowledge only what is durable, replicate.

Theory of operation
-------------------
Rule 1 (durable before acknowledged). A client's delta is joined into the in-memory state
at once and handed to the shell as a :class:`~reference_cluster.protocol.effects.Persist` effect.
The reply that acknowledges it is sent only from :meth:`ServerCore.persisted`, when the
shell reports the write durable. A retry of the same delta is persisted and acknowledged
again (the join is idempotent), so an acknowledgement never depends on an earlier write
that might still be in flight.

Rule 2 (what memory holds, the store will hold). Every delta that changes the in-memory
state (from a client, a peer's propagation or anti-entropy) becomes one ``Persist``. So
the state in memory is the stored state joined with the writes in flight, and a restart
loses only writes that nobody was told about.

Rule 3 (propagate, then repair). A client's delta is sent at once to every other server
that holds the list (:class:`~reference_cluster.protocol.messages.Propagate`, no reply). What a
lost propagation misses, anti-entropy repairs: every ``anti_entropy_interval`` the server
sends its per-list digests to each peer. The peer answers, for the lists whose digests
differ, with its causal contexts; the initiator answers with exactly what those contexts
lack (``delta_for``) and its own contexts; the peer answers with what the initiator
lacks. A round with nothing to repair costs one small message per peer.

Rule 4 (placement). Which servers hold a list is decided by
:func:`reference_cluster.protocol.placement.holders` alone (today: all of them).

Rule 5 (liveness). The server announces itself to every broker at start, heartbeats to
each every ``heartbeat_interval``, and says goodbye on an orderly stop.

Rule 6 (admission). A shell may pass ``admit``: it sees every client request with its
decoded delta before anything is applied, and may refuse it with an error reply (the
real server checks the session token and that only a list's owner deletes it). Requests
from peers (propagation, anti-entropy) are not admitted again: peers admitted them.

Rule 7 (authorship). An admitted push is checked against the list's state before it is
applied (:func:`reference_cluster.cores.authorship.check_push`): it may create dots only of
the pushing replica (``SyncRequest.replica``), never change the payload of a dot already
held, claim no dot of another replica that this server has not seen (``behind``, which
clients retry), move its own counter by at most ``push_limits.max_new_dots``, and stay
within the quotas of :class:`~reference_cluster.cores.authorship.PushLimits`. A refused
push changes nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic

import attrs

from crdts import DotContext
from reference_cluster.cores.authorship import DEFAULT_LIMITS, PushLimits, check_push
from reference_cluster.errors import MalformedMessage
from reference_cluster.protocol.effects import Effect, Persist, Send
from reference_cluster.protocol.messages import (
    AeContexts,
    AeDeltas,
    AeDigests,
    Announce,
    Deliver,
    EncodedState,
    ErrorReply,
    Forward,
    Goodbye,
    Heartbeat,
    Message,
    Propagate,
    SyncReply,
    SyncRequest,
    decode,
)
from reference_cluster.protocol.placement import holders
from reference_cluster.protocol.replication import S, context_of, missing_for

__all__ = ["ServerConfig", "ServerCore"]

log = logging.getLogger(__name__)

_EMPTY_CONTEXT: Mapping[str, Any] = DotContext().to_dict()


@attrs.frozen
class ServerConfig:
    """Server timing.

    Attributes:
        heartbeat_interval: seconds between heartbeats to each broker.
        anti_entropy_interval: seconds between anti-entropy rounds.
        first_round_within: the first round starts within this many seconds of
            :meth:`ServerCore.start` (a restarted server catches up quickly).
    """

    heartbeat_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    anti_entropy_interval: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    first_round_within: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))


@attrs.frozen
class _PendingAck:
    broker: str
    client: str
    request_id: str
    list_id: str
    context: DotContext | None


class _BadState(Exception):
    """A state or context in a message does not decode (internal)."""


class ServerCore(Generic[S]):
    """A server replica of every list it holds.

    Args:
        server_id: this server's id (also its address among peers).
        doc_type: the class of the lists (``ShoppingList``).
        peers: the other servers' ids.
        brokers: the brokers' addresses.
        lists: the lists read back from the durable store (the core keeps copies).
        incarnation: how many times this server started before (for logs).
        config: timing.
        rng: the source of the timers' jitter.
        admit: ``admit(request, delta, now)`` returns an error reply to refuse a client's
            request (Rule 6), or None to go on; ``delta`` is the decoded delta or None.
        push_limits: the bounds of a client's push (Rule 7).
    """

    def __init__(
        self,
        server_id: str,
        doc_type: type[S],
        *,
        peers: Sequence[str],
        brokers: Sequence[str],
        lists: Mapping[str, S] | None = None,
        incarnation: int = 0,
        config: ServerConfig | None = None,
        rng: random.Random,
        admit: Callable[[SyncRequest, S | None, float], ErrorReply | None] | None = None,
        push_limits: PushLimits = DEFAULT_LIMITS,
    ) -> None:
        self.server_id = server_id
        self.doc_type = doc_type
        self.peers = tuple(sorted(set(peers) - {server_id}))
        self.brokers = tuple(brokers)
        self.incarnation = incarnation
        self.config = config or ServerConfig()
        self._rng = rng
        self._admit = admit
        self.push_limits = push_limits
        self._lists: dict[str, S] = {k: v.copy() for k, v in sorted((lists or {}).items())}
        self._digests: dict[str, str] = {}
        self._pending: dict[int, _PendingAck] = {}
        self._next_token = 1
        self._round = 0
        self._heartbeat_at: float | None = None
        self._anti_entropy_at: float | None = None

    # -- readers --------------------------------------------------------------------------

    def list_ids(self) -> tuple[str, ...]:
        """The ids of the lists this server holds, in the order it learned them."""
        return tuple(self._lists)

    def state(self, list_id: str) -> S | None:
        """A copy of a list's in-memory state, or ``None``."""
        state = self._lists.get(list_id)
        return None if state is None else state.copy()

    def digest(self, list_id: str) -> str | None:
        """The digest of a list's in-memory state (cached), or ``None``."""
        cached = self._digests.get(list_id)
        if cached is None:
            state = self._lists.get(list_id)
            if state is None:
                return None
            cached = self._digests[list_id] = state.digest()
        return cached

    @property
    def pending_acks(self) -> int:
        """Acknowledgements waiting for a write to become durable."""
        return len(self._pending)

    # -- the core API ---------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Announce to every broker and arm the timers (Rule 5)."""
        self._heartbeat_at = now + self.config.heartbeat_interval
        self._anti_entropy_at = now + self._rng.uniform(0, self.config.first_round_within)
        return [Send(b, Announce(self.server_id, self.incarnation)) for b in self.brokers]

    def stop(self, now: float) -> list[Effect]:
        """Say goodbye to every broker (an orderly shutdown) and disarm the timers."""
        self._heartbeat_at = self._anti_entropy_at = None
        return [Send(b, Goodbye(self.server_id)) for b in self.brokers]

    def receive(self, peer: str, data: bytes, now: float) -> list[Effect]:
        """Handle one frame from ``peer`` (a broker or another server)."""
        try:
            msg = decode(data)
        except MalformedMessage as exc:
            log.warning("server %s: malformed message from %s: %s", self.server_id, peer, exc)
            return [Send(peer, ErrorReply.about(None, exc.code, exc))]
        return self.receive_message(peer, msg, now)

    def receive_message(self, peer: str, msg: Message, now: float) -> list[Effect]:
        """Handle one message already decoded by the shell (as :meth:`receive` does)."""
        try:
            return self._handle(peer, msg, now)
        except _BadState as exc:
            log.warning("server %s: bad state from %s: %s", self.server_id, peer, exc)
            return [Send(peer, ErrorReply.about(None, "bad_state", exc))]

    def persisted(self, token: int, now: float) -> list[Effect]:
        """The write ``token`` is durable: send the acknowledgement waiting for it."""
        pending = self._pending.pop(token, None)
        if pending is None:
            return []
        state = self._lists[pending.list_id]
        delta = missing_for(state, pending.context)
        reply = SyncReply(pending.request_id, pending.list_id, delta.to_dict())
        return [Send(pending.broker, Deliver(pending.client, reply))]

    def persist_failed(self, token: int, reason: str, now: float) -> list[Effect]:
        """The write ``token`` failed: tell the waiting client (it will retry)."""
        pending = self._pending.pop(token, None)
        log.error("server %s: write %d failed: %s", self.server_id, token, reason)
        if pending is None:
            return []
        reply = ErrorReply(pending.request_id, "persist_failed", reason[:200])
        return [Send(pending.broker, Deliver(pending.client, reply))]

    def next_deadline(self) -> float | None:
        """The earliest of the heartbeat and anti-entropy timers."""
        times = [t for t in (self._heartbeat_at, self._anti_entropy_at) if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> list[Effect]:
        """Send heartbeats and start an anti-entropy round when they are due."""
        out: list[Effect] = []
        if self._heartbeat_at is not None and self._heartbeat_at <= now:
            self._heartbeat_at = now + self.config.heartbeat_interval
            out.extend(Send(b, Heartbeat(self.server_id)) for b in self.brokers)
        if self._anti_entropy_at is not None and self._anti_entropy_at <= now:
            self._anti_entropy_at = now + self.config.anti_entropy_interval
            out.extend(self._anti_entropy_round(now))
        return out

    # -- state ----------------------------------------------------------------------------

    def _holds(self, list_id: str) -> bool:
        return self.server_id in holders(list_id, (*self.peers, self.server_id))

    def _decode_state(self, data: EncodedState, what: str) -> S:
        try:
            state = self.doc_type.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise _BadState(f"{what}: {str(exc)[:300]}") from None
        if type(state) is not self.doc_type:  # pragma: no cover - from_dict returns cls
            raise _BadState(f"{what}: expected a {self.doc_type.__name__}")
        return state

    @staticmethod
    def _decode_context(data: Mapping[str, Any] | None, what: str) -> DotContext | None:
        if data is None:
            return None
        try:
            return DotContext.from_dict(data, what)
        except ValueError as exc:
            raise _BadState(str(exc)[:300]) from None

    def _context(self, list_id: str) -> Mapping[str, Any]:
        state = self._lists.get(list_id)
        ctx = None if state is None else context_of(state)
        return _EMPTY_CONTEXT if ctx is None else ctx.to_dict()

    def _apply(self, list_id: str, delta: S) -> Persist | None:
        """Join ``delta`` into the list; return the write to persist, or None if the
        delta changes nothing (Rule 2)."""
        state = self._lists.get(list_id)
        if state is None:
            state = self._lists[list_id] = self.doc_type()
        elif delta <= state:
            return None
        state.join(delta)
        self._digests.pop(list_id, None)
        token = self._next_token
        self._next_token += 1
        return Persist(token, list_id, delta)

    def _propagate(self, list_id: str, delta: S) -> list[Effect]:
        encoded = delta.to_dict()
        targets = holders(list_id, (*self.peers, self.server_id))
        return [
            Send(p, Propagate(self.server_id, list_id, encoded))
            for p in targets
            if p != self.server_id
        ]

    # -- handlers -------------------------------------------------------------------------

    def _handle(self, peer: str, msg: Message, now: float) -> list[Effect]:
        if isinstance(msg, Forward):
            return self._on_forward(peer, msg, now)
        if isinstance(msg, Propagate):
            if not self._holds(msg.list_id):
                return []
            write = self._apply(msg.list_id, self._decode_state(msg.delta, "propagate.delta"))
            return [] if write is None else [write]
        if isinstance(msg, AeDigests):
            return self._on_digests(peer, msg)
        if isinstance(msg, AeContexts):
            return self._on_contexts(peer, msg)
        if isinstance(msg, AeDeltas):
            return self._on_deltas(peer, msg)
        if isinstance(msg, ErrorReply):
            log.warning(
                "server %s: error from %s: %s %s", self.server_id, peer, msg.code, msg.detail
            )
            return []
        log.warning("server %s: unexpected %s from %s", self.server_id, msg.kind, peer)
        return [Send(peer, ErrorReply(None, "unexpected_kind", f"a server takes no {msg.kind}"))]

    def _on_forward(self, broker: str, fwd: Forward, now: float) -> list[Effect]:
        req = fwd.request
        reply: SyncReply | ErrorReply
        if not self._holds(req.list_id):
            reply = ErrorReply(req.request_id, "not_holder", f"{self.server_id} lacks the list")
            return [Send(broker, Deliver(fwd.client, reply))]
        try:
            ctx = self._decode_context(req.context, "sync.context")
            delta = None if req.delta is None else self._decode_state(req.delta, "sync.delta")
        except _BadState as exc:
            log.warning("server %s: bad state from %s: %s", self.server_id, fwd.client, exc)
            reply = ErrorReply.about(req.request_id, "bad_state", exc)
            return [Send(broker, Deliver(fwd.client, reply))]
        if self._admit is not None:
            refusal = self._admit(req, delta, now)
            if refusal is not None:
                return [Send(broker, Deliver(fwd.client, refusal))]
        if delta is None:
            state = self._lists.get(req.list_id)
            encoded = None if state is None else missing_for(state, ctx).to_dict()
            reply = SyncReply(req.request_id, req.list_id, encoded)
            return [Send(broker, Deliver(fwd.client, reply))]
        refusal = self._check_push(req, delta)
        if refusal is not None:
            return [Send(broker, Deliver(fwd.client, refusal))]
        return self._on_push(broker, fwd, delta, ctx, now)

    def _check_push(self, req: SyncRequest, delta: S) -> ErrorReply | None:
        """Rule 7: an error reply refusing the push, or None to apply it."""
        refusal = check_push(self._lists.get(req.list_id), delta, req.replica, self.push_limits)
        if refusal is None:
            return None
        log.warning(
            "server %s: refused a push of %s from %s: %s %s",
            self.server_id,
            req.list_id,
            req.replica,
            refusal.code,
            refusal.detail,
        )
        return ErrorReply.about(req.request_id, refusal.code, refusal.detail)

    def _on_push(
        self, broker: str, fwd: Forward, delta: S, ctx: DotContext | None, now: float
    ) -> list[Effect]:
        """Apply a client's delta: persist it, propagate it, acknowledge once durable."""
        req = fwd.request
        write = self._apply(req.list_id, delta)
        out: list[Effect] = []
        if write is None:
            # Already applied (a retry): persist again so the ack waits for a write of
            # its own (Rule 1), but there is nothing new to propagate.
            write = Persist(self._next_token, req.list_id, delta)
            self._next_token += 1
        else:
            out.extend(self._propagate(req.list_id, delta))
        self._pending[write.token] = _PendingAck(
            broker, fwd.client, req.request_id, req.list_id, ctx
        )
        out.insert(0, write)
        return out

    # -- anti-entropy (Rule 3) ------------------------------------------------------------

    def _anti_entropy_round(self, now: float) -> list[Effect]:
        self._round += 1
        digests = {k: d for k in self._lists if (d := self.digest(k)) is not None}
        return [Send(p, AeDigests(self.server_id, self._round, digests)) for p in self.peers]

    def _differing(self, theirs: Mapping[str, str]) -> list[str]:
        names = [k for k in theirs if k not in self._lists]
        names.extend(self._lists)
        return [k for k in names if self._holds(k) and theirs.get(k) != self.digest(k)]

    def _on_digests(self, peer: str, msg: AeDigests) -> list[Effect]:
        differing = self._differing(msg.digests)
        if not differing:
            return []
        contexts = {k: self._context(k) for k in differing}
        return [Send(peer, AeContexts(self.server_id, msg.round, contexts))]

    def _missing(self, contexts: Mapping[str, Any], what: str) -> dict[str, EncodedState]:
        deltas: dict[str, EncodedState] = {}
        for list_id, encoded in contexts.items():
            state = self._lists.get(list_id)
            if state is not None and self._holds(list_id):
                ctx = self._decode_context(encoded, f"{what}[{list_id}]")
                deltas[list_id] = missing_for(state, ctx).to_dict()
        return deltas

    def _on_contexts(self, peer: str, msg: AeContexts) -> list[Effect]:
        deltas = self._missing(msg.contexts, "ae_contexts.contexts")
        mine = {k: self._context(k) for k in msg.contexts if self._holds(k)}
        return [Send(peer, AeDeltas(self.server_id, msg.round, deltas, mine))]

    def _on_deltas(self, peer: str, msg: AeDeltas) -> list[Effect]:
        out: list[Effect] = []
        decoded = [
            (k, self._decode_state(v, f"ae_deltas.deltas[{k}]"))
            for k, v in msg.deltas.items()
            if self._holds(k)
        ]
        out.extend(w for k, d in decoded if (w := self._apply(k, d)) is not None)
        if msg.contexts:
            deltas = self._missing(msg.contexts, "ae_deltas.contexts")
            if deltas:
                out.append(Send(peer, AeDeltas(self.server_id, msg.round, deltas, {})))
        return out
