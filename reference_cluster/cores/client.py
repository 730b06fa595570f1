"""The client's logic: a local-first replica of the user's lists, and its sync loop.

Theory of operation
-------------------
Rule 1 (local first). An edit applies to the local state at once and is queued as a
delta under a sequence number. The shell makes the new state and the queued delta durable
(:class:`~reference_cluster.protocol.effects.SaveEdit`) before it sends anything, so a dot never
leaves the device before it is on disk, and a restart never issues a dot twice.

Rule 2 (one request at a time). A sync of one list pushes the join of that list's queued
deltas and the client's causal context; the reply acknowledges the push (the server made
it durable) and carries exactly what the context lacked. One request is in flight at a
time; lists wait their turn in the order they were marked for sync. Every list is marked
every ``sync_interval``, and a list is marked when it is edited.

Rule 3 (retries). A request that times out, or meets a retryable error, is sent again
after a capped, jittered back-off (:func:`~reference_cluster.cores.backoff.backoff_delay`),
through the other broker, with the same request id and the **same delta**: joins are
idempotent, so a retry never counts anything twice. After ``max_attempts`` the request is
given up (:class:`~reference_cluster.protocol.effects.SyncFailed`); its deltas stay queued for the
next sync. A late reply to an earlier attempt is as good as any: it has the same id and
acknowledges the same delta.

Rule 4 (sealing). When a request ships the client's own deltas, the state is sealed
(:func:`reference_cluster.protocol.replication.seal`), so that no later change folds into a dot
that has left the device.

Rule 5 (what changed since). Each reply names the server's version of the list that the
client holds once it has joined the reply (:attr:`SyncReply.version`); the client keeps
the last one per list in memory and sends it as :attr:`SyncRequest.since`, so a server
that still knows that version answers with what changed since, not with a walk of the
whole list. A reply that was not joined (it did not decode) leaves the version as it
was. Versions are not stored: after a restart the first sync of a list is answered from
its context alone.

The request's life is a small state machine, written as data in :data:`TRANSITIONS`.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Generic

import attrs

from reference_cluster.cores.backoff import backoff_delay
from reference_cluster.errors import MalformedMessage
from reference_cluster.protocol.effects import Acked, Effect, SaveEdit, SaveMerge, Send, SyncFailed
from reference_cluster.protocol.messages import ErrorReply, Message, SyncReply, SyncRequest, decode
from reference_cluster.protocol.replication import S, context_of, seal

__all__ = ["TRANSITIONS", "ClientConfig", "ClientCore", "Event", "Phase", "SavedList"]

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    """Where the client's one request is in its life."""

    IDLE = "idle"
    """No request in flight."""
    WAITING = "waiting"
    """A request was sent; waiting for its reply until the request timeout."""
    BACKOFF = "backoff"
    """The last attempt failed; waiting to send it again."""


class Event(enum.Enum):
    """What can happen to the request."""

    SEND = "send"
    """A new request goes out."""
    REPLY = "reply"
    """Its reply arrived (to this attempt or an earlier one)."""
    TIMEOUT = "timeout"
    """No reply within the request timeout; attempts are left."""
    RETRYABLE_ERROR = "retryable_error"
    """A retryable error reply; attempts are left."""
    EXHAUSTED = "exhausted"
    """A timeout or retryable error on the last attempt: give up."""
    FINAL_ERROR = "final_error"
    """An error that a retry cannot fix: give up."""
    RETRY = "retry"
    """The back-off elapsed: send the same request again."""


TRANSITIONS: Final[Mapping[tuple[Phase, Event], Phase]] = {
    (Phase.IDLE, Event.SEND): Phase.WAITING,
    (Phase.WAITING, Event.REPLY): Phase.IDLE,
    (Phase.WAITING, Event.TIMEOUT): Phase.BACKOFF,
    (Phase.WAITING, Event.RETRYABLE_ERROR): Phase.BACKOFF,
    (Phase.WAITING, Event.EXHAUSTED): Phase.IDLE,
    (Phase.WAITING, Event.FINAL_ERROR): Phase.IDLE,
    (Phase.BACKOFF, Event.REPLY): Phase.IDLE,
    (Phase.BACKOFF, Event.RETRY): Phase.WAITING,
}
"""The request state machine: ``(phase, event) -> next phase``. Any other pair is a bug."""


@attrs.frozen
class ClientConfig:
    """Client timing.

    Attributes:
        request_timeout: seconds to wait for a reply to one attempt.
        max_attempts: attempts of one request before it is given up.
        backoff_base: the back-off ceiling of the first retry, in seconds.
        backoff_cap: the largest back-off ceiling, in seconds.
        sync_interval: seconds between syncs of every list (pulling others' edits).
    """

    request_timeout: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    max_attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    backoff_base: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    backoff_cap: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    sync_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))


@attrs.frozen
class SavedList(Generic[S]):
    """One list as the client's durable store holds it.

    Attributes:
        state: the local state.
        queue: the deltas not yet acknowledged, ``(seq, delta)`` in order.
        next_seq: the sequence number of the next edit (default: one past the queue).
    """

    state: S
    queue: tuple[tuple[int, S], ...] = ()
    next_seq: int | None = None


@attrs.define
class _InFlight:
    request: SyncRequest
    through_seq: int
    deadline: float


class ClientCore(Generic[S]):
    """A client replica: local edits, a queue of deltas, and one sync request at a time.

    Args:
        replica: the device's replica id (kept in its store for ever).
        doc_type: the class of the lists (``ShoppingList``).
        brokers: the brokers' addresses; requests fail over between them.
        saved: the lists read back from the durable store.
        config: timing.
        rng: the source of request-id nonces and back-off jitter.
        token: the session token sent with each request (``None`` before accounts).
    """

    def __init__(
        self,
        replica: str,
        doc_type: type[S],
        *,
        brokers: Sequence[str],
        saved: Mapping[str, SavedList[S]] | None = None,
        config: ClientConfig | None = None,
        rng: random.Random,
        token: str | None = None,
    ) -> None:
        if not brokers:
            raise ValueError("a client needs at least one broker")
        self.replica = replica
        self.doc_type = doc_type
        self.brokers = tuple(brokers)
        self.config = config or ClientConfig()
        self.token = token
        self._rng = rng
        self._nonce = f"{rng.getrandbits(64):016x}"
        self._requests = 0
        self._broker = rng.randrange(len(self.brokers))
        self._lists: dict[str, S] = {}
        self._queues: dict[str, list[tuple[int, S]]] = {}
        self._next_seq: dict[str, int] = {}
        for list_id, saved_list in sorted((saved or {}).items()):
            self._lists[list_id] = saved_list.state.copy()
            self._queues[list_id] = list(saved_list.queue)
            top = saved_list.queue[-1][0] if saved_list.queue else 0
            self._next_seq[list_id] = max(saved_list.next_seq or 1, top + 1)
        self._versions: dict[str, str] = {}
        """List -> the server version the local state holds (Rule 5)."""
        self._dirty: dict[str, None] = {}
        self.phase = Phase.IDLE
        self._inflight: _InFlight | None = None
        self._sync_at: float | None = None

    # -- readers --------------------------------------------------------------------------

    def list_ids(self) -> tuple[str, ...]:
        """The ids of the lists on this device."""
        return tuple(self._lists)

    def state(self, list_id: str) -> S | None:
        """A copy of a list's local state, or ``None``."""
        state = self._lists.get(list_id)
        return None if state is None else state.copy()

    def queued(self, list_id: str) -> int:
        """How many of a list's edits wait for acknowledgement."""
        return len(self._queues.get(list_id, ()))

    def next_seq(self, list_id: str) -> int:
        """The sequence number the list's next edit will get."""
        return self._next_seq.get(list_id, 1)

    @property
    def busy(self) -> bool:
        """Whether a request is in flight or lists wait to be synced."""
        return self.phase is not Phase.IDLE or bool(self._dirty)

    # -- the core API ---------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Sync every list now and every ``sync_interval`` from now on."""
        self._sync_at = now + self.config.sync_interval
        return self.sync_all(now)

    def edit(
        self, list_id: str, mutate: Callable[[S, str], S], now: float
    ) -> tuple[S, list[Effect]]:
        """Apply a local edit: ``mutate(state, replica)`` changes the state and returns the
        delta (``lambda s, r: s.add_item(r, "milk")``).

        Returns:
            The delta, and the effects: a :class:`SaveEdit`, then any :class:`Send`.

        Raises:
            Whatever ``mutate`` raises (nothing changed then). TypeError: ``mutate``
            returned something else than a delta of the list's type.
        """
        state = self._lists.get(list_id)
        new = state is None
        if state is None:
            state = self.doc_type()
        delta = mutate(state, self.replica)
        if not isinstance(delta, self.doc_type):  # a light delta is a subclass
            raise TypeError(
                f"mutate must return a {self.doc_type.__name__} delta, got {type(delta).__name__}"
            )
        if new:
            self._lists[list_id] = state
            self._queues[list_id] = []
            self._next_seq[list_id] = 1
        seq = self._next_seq[list_id]
        self._next_seq[list_id] = seq + 1
        self._queues[list_id].append((seq, delta))
        out: list[Effect] = [SaveEdit(list_id, seq, delta)]
        self._dirty[list_id] = None
        out.extend(self._pump(now))
        return delta, out

    def open_list(self, list_id: str, now: float) -> list[Effect]:
        """Start tracking a list shared by its id: record it, then pull it."""
        out: list[Effect] = []
        if list_id not in self._lists:
            bottom = self.doc_type()
            self._lists[list_id] = bottom.copy()
            self._queues[list_id] = []
            self._next_seq[list_id] = 1
            out.append(SaveMerge(list_id, bottom))
        return out + self.sync(list_id, now)

    def sync(self, list_id: str, now: float) -> list[Effect]:
        """Mark one list for sync; send at once if no request is in flight."""
        if list_id in self._lists:
            self._dirty[list_id] = None
        return self._pump(now)

    def sync_all(self, now: float) -> list[Effect]:
        """Mark every list for sync; send at once if no request is in flight."""
        for list_id in self._lists:
            self._dirty[list_id] = None
        return self._pump(now)

    def receive(self, peer: str, data: bytes, now: float) -> list[Effect]:
        """Handle one frame from a broker."""
        try:
            msg = decode(data)
        except MalformedMessage as exc:
            log.warning("client %s: malformed message from %s: %s", self.replica, peer, exc)
            return [Send(peer, ErrorReply.about(None, exc.code, exc))]
        return self.receive_message(peer, msg, now)

    def receive_message(self, peer: str, msg: Message, now: float) -> list[Effect]:
        """Handle one message already decoded by the shell (as :meth:`receive` does)."""
        if isinstance(msg, SyncReply):
            return self._on_reply(msg, now)
        if isinstance(msg, ErrorReply):
            return self._on_error(peer, msg, now)
        log.warning("client %s: unexpected %s from %s", self.replica, msg.kind, peer)
        return [Send(peer, ErrorReply(None, "unexpected_kind", f"a client takes no {msg.kind}"))]

    def next_deadline(self) -> float | None:
        """The earliest of the request's deadline and the next periodic sync."""
        times = [self._sync_at] if self._sync_at is not None else []
        if self._inflight is not None:
            times.append(self._inflight.deadline)
        return min(times) if times else None

    def on_timer(self, now: float) -> list[Effect]:
        """Time out, retry, and start periodic syncs when they are due."""
        out: list[Effect] = []
        flight = self._inflight
        if flight is not None and flight.deadline <= now:
            if self.phase is Phase.WAITING:
                out.extend(self._attempt_failed("timeout", now))
            else:
                out.extend(self._retry(now))
        if self._sync_at is not None and self._sync_at <= now:
            self._sync_at = now + self.config.sync_interval
            for list_id in self._lists:
                self._dirty[list_id] = None
        out.extend(self._pump(now))
        return out

    # -- the request machine --------------------------------------------------------------

    def _fire(self, event: Event) -> None:
        nxt = TRANSITIONS.get((self.phase, event))
        if nxt is None:
            raise RuntimeError(
                f"client request machine: no transition from {self.phase} on {event}"
            )
        self.phase = nxt

    def _pump(self, now: float) -> list[Effect]:
        if self.phase is not Phase.IDLE or not self._dirty:
            return []
        list_id = next(iter(self._dirty))
        del self._dirty[list_id]
        state = self._lists[list_id]
        queue = self._queues[list_id]
        encoded: dict[str, Any] | None = None
        through = 0
        if queue:
            through = queue[-1][0]
            joined = queue[0][1].copy()
            for _, delta in queue[1:]:
                joined.join(delta)
            encoded = joined.to_dict()
            seal(state)
        ctx = context_of(state)
        self._requests += 1
        request = SyncRequest(
            request_id=f"{self._nonce}.{self._requests}",
            list_id=list_id,
            replica=self.replica,
            attempt=0,
            context=None if ctx is None else ctx.to_dict(),
            delta=encoded,
            token=self.token,
            since=self._versions.get(list_id),
        )
        self._fire(Event.SEND)
        self._inflight = _InFlight(request, through, now + self.config.request_timeout)
        return [Send(self.brokers[self._broker], request)]

    def _attempt_failed(self, reason: str, now: float) -> list[Effect]:
        flight = self._inflight
        assert flight is not None
        attempt = flight.request.attempt
        if attempt + 1 >= self.config.max_attempts:
            self._fire(Event.EXHAUSTED)
            self._inflight = None
            self._broker = (self._broker + 1) % len(self.brokers)
            log.info("client %s: gave up %s: %s", self.replica, flight.request.request_id, reason)
            return [SyncFailed(flight.request.list_id, flight.request.request_id, reason)]
        self._fire(Event.TIMEOUT if reason == "timeout" else Event.RETRYABLE_ERROR)
        cfg = self.config
        delay = backoff_delay(
            attempt, base=cfg.backoff_base, cap=cfg.backoff_cap, jitter=self._rng.random()
        )
        flight.deadline = now + delay
        self._broker = (self._broker + 1) % len(self.brokers)
        return []

    def _retry(self, now: float) -> list[Effect]:
        flight = self._inflight
        assert flight is not None
        self._fire(Event.RETRY)
        flight.request = attrs.evolve(flight.request, attempt=flight.request.attempt + 1)
        flight.deadline = now + self.config.request_timeout
        return [Send(self.brokers[self._broker], flight.request)]

    # -- replies --------------------------------------------------------------------------

    def _merge(self, list_id: str, encoded: Mapping[str, Any]) -> list[Effect]:
        """Join a server's delta into a known list (nothing if it does not decode)."""
        state = self._lists.get(list_id)
        if state is None:
            return []
        delta = self.doc_type.from_dict(encoded)
        if delta <= state:
            return []
        state.join(delta)
        return [SaveMerge(list_id, delta)]

    def _on_reply(self, msg: SyncReply, now: float) -> list[Effect]:
        flight = self._inflight
        current = flight is not None and msg.request_id == flight.request.request_id
        out: list[Effect] = []
        if msg.delta is not None:
            try:
                out.extend(self._merge(msg.list_id, msg.delta))
            except (ValueError, TypeError) as exc:
                log.warning("client %s: bad state in reply: %s", self.replica, str(exc)[:200])
                if current and self.phase is Phase.WAITING:
                    return self._attempt_failed("bad_state", now)
                return []
        if msg.list_id in self._lists:
            if msg.version is None or msg.delta is None:
                self._versions.pop(msg.list_id, None)
            else:
                self._versions[msg.list_id] = msg.version
        if not current or flight is None or msg.list_id != flight.request.list_id:
            return out
        self._fire(Event.REPLY)
        self._inflight = None
        if flight.through_seq:
            queue = self._queues[msg.list_id]
            queue[:] = [(seq, d) for seq, d in queue if seq > flight.through_seq]
            out.append(Acked(msg.list_id, flight.through_seq, msg.copies))
        out.extend(self._pump(now))
        return out

    def _on_error(self, peer: str, msg: ErrorReply, now: float) -> list[Effect]:
        flight = self._inflight
        if (
            flight is None
            or msg.request_id != flight.request.request_id
            or self.phase is not Phase.WAITING
        ):
            log.info("client %s: error from %s: %s %s", self.replica, peer, msg.code, msg.detail)
            return []
        if msg.retryable:
            return self._attempt_failed(msg.code, now) + self._pump(now)
        self._fire(Event.FINAL_ERROR)
        self._inflight = None
        log.warning("client %s: request failed: %s %s", self.replica, msg.code, msg.detail)
        out: list[Effect] = [
            SyncFailed(flight.request.list_id, flight.request.request_id, msg.code)
        ]
        return out + self._pump(now)
