"""The server's logic: apply deltas, acknowledge only what is durable, replicate.

Theory of operation
-------------------
Rule 1 (durable before acknowledged). A client's delta is joined into the in-memory state
at once and handed to the shell as a :class:`~reference_cluster.protocol.effects.Persist` effect.
The reply that acknowledges it is sent only from :meth:`ServerCore.persisted`, when the
shell reports the write durable. A retry of the same delta is persisted and acknowledged
again (the join is idempotent), so an acknowledgement never depends on an earlier write
that might still be in flight.

Rule 2 (what memory holds, the store will hold). Every delta that changes a list's state
(from a client, a peer's propagation or anti-entropy) becomes one ``Persist``. So a
list's state in memory is its stored state joined with its writes in flight, and a
restart loses only writes that nobody was told about.

Rule 3 (states on demand). With a ``store`` (a :class:`ListSource`), the core starts from
the stored digests alone and keeps at most ``config.cache_lists`` decoded states, least
recently used first out. A list is loaded when a request, a propagation or a repair needs
it. A list with writes in flight is pinned (never evicted), so Rule 2 holds with
eviction: an evicted list's stored state is its whole state. A write that failed drops
the list from memory once its other writes are done (memory goes back to what is stored),
and the next round reloads it. Without a store, every list stays in memory.

Rule 4 (propagate, then repair). A client's delta is sent at once to every other server
that holds the list (Rule 6): as a :class:`~reference_cluster.protocol.messages.Replicate`
that each confirms when the write quorum is above one (Rule 11), else as a
:class:`~reference_cluster.protocol.messages.Propagate` (no reply).
What a lost propagation misses, anti-entropy repairs, by descent of a hash tree of the
lists' digests (:mod:`reference_cluster.protocol.hashtree`). A list's digest is computed
when a round needs it, not on every write (a dirty list's digest waits in memory). Every
``anti_entropy_interval`` the server sends each peer the root of the tree of the lists
they share (Rule 6; :class:`~reference_cluster.protocol.messages.AeTree`); a peer whose
root is equal stays silent, so an idle round is one small message per peer whatever the
number of lists.
Otherwise the two sides answer each other's differing nodes with their children until a
node has few lists under it, then send those lists' digests
(:class:`~reference_cluster.protocol.messages.AeLeaves`). For the lists whose digests
differ, the receiver answers with its causal contexts; the other side answers with
exactly what those contexts lack (``delta_for``) and its own contexts; the first answers
with what the second lacks. A round that finds k differing lists costs about k times the
depth in node digests, plus the deltas.

Rule 5 (the tree checks itself). Each round also re-reads ``config.sweep_per_round``
lists from the store (a slow full sweep: a stored state that differs from its digest,
or a digest the tree got wrong, is found and put right) and re-checks
``config.check_buckets_per_round`` of the tree's 4,096 buckets against the digests
(:meth:`~reference_cluster.protocol.hashtree.HashTree.check`). So no wrong entry hides a
difference for ever.

Rule 6 (placement). A list is held by the first ``replicas`` servers of its rendezvous
order over the members (:meth:`~reference_cluster.protocol.placement.Membership.holders`;
the membership defaults to this server and its peers). A server stores, serves and
repairs only the lists it holds: a client's request for another list is refused with the
retryable ``not_holder`` (nothing is stored; the broker routes the client's retry
elsewhere), and a propagation or a repair of another list is dropped. Its edits go only
to the list's other holders. Anti-entropy with a peer covers the lists both hold: the
server keeps one hash tree per peer, over the lists it shares with that peer (one tree
for all peers when every member holds every list, as with ``replicas`` at least the
number of members). Lists of the store that the server does not hold are not served;
they are handed to their holders and then forgotten (Rule 13); :attr:`ServerCore.unheld`
counts those found at start.

Rule 7 (liveness). The server announces itself to every broker at start, heartbeats to
each every ``heartbeat_interval``, and says goodbye on an orderly stop.

Rule 8 (admission). A shell may pass ``admit``: it sees every client request with its
decoded delta before anything is applied, and may refuse it with an error reply (the
real server checks the session token and that only a list's owner deletes it). Requests
from peers (propagation, anti-entropy) are not admitted again: peers admitted them.

Rule 9 (authorship). An admitted push is checked against the list's state before it is
applied (:func:`reference_cluster.cores.authorship.check_push`): it may create dots only of
the pushing replica (``SyncRequest.replica``), never change the payload of a dot already
held, claim no dot of another replica that this server has not seen (``behind``, which
clients retry), move its own counter by at most ``push_limits.max_new_dots``, and stay
within the quotas of :class:`~reference_cluster.cores.authorship.PushLimits`. A refused
push changes nothing.

Rule 10 (replies that cost the change). A reply to a client names the version of the
list it brings the client up to (:attr:`SyncReply.version`: this server, this run of it,
and a counter). For each list that clients sync (the last ``max(cache_lists,``
:data:`MIN_CHANGED_LISTS` ``)`` of them), the core keeps the last :data:`MAX_CHANGES`
deltas that changed it from a client or a peer's propagation, each under a new value of
the counter. A request whose ``since`` names a version of this run that those deltas
reach back to is answered with their join since that version, which costs what changed
rather than what the list holds: the client holds that version (it joined its reply,
and states only grow), so it then holds the state. Anything else is answered with what
the request's context lacks (``delta_for``). A list whose state changes otherwise (an
anti-entropy delta, which may be large) or may have gone back (a failed write, a read
back with another digest than the one in memory) starts its changes afresh under a new
value, so no version of before is taken for it. Eviction alone keeps them: an evicted
list is read back as it was (Rule 3), which the digest confirms.

Rule 11 (write quorum). With ``write_quorum`` W above one, a client's push is
acknowledged once W servers hold it durably: this server (its own write, Rule 1) and the
other holders that answered its :class:`~reference_cluster.protocol.messages.Replicate`
with :class:`~reference_cluster.protocol.messages.Stored`, or servers that keep it as a
hint for a holder (Rule 12). The reply says how many (:attr:`SyncReply.copies`). A peer
confirms only after its own write of the delta is durable, and writes it again if it
already held it, as Rule 1 does for a client's retry; a confirmation counts only from a
server asked for that push and that list, once. A push short of W at
``config.write_timeout`` after its latest attempt is answered with the retryable
``unavailable`` (what was written stays written and spreads as any write does). A retry
of a push (the same request id and delta) while its copies are on their way joins it:
the other servers are not asked again, and the acknowledgement goes to the retry; a
retry after the push was answered asks every copy again. With W = 1 nothing waits: a
push is acknowledged once durable here and propagated as before.

Rule 12 (sloppy quorum and hinted handoff). A holder that has not confirmed a push
within ``config.hint_after`` is taken for silent until any message of it arrives. For as
many copies as the push still lacks, the servers after the holders in the list's
preference order are asked in turn (one new server per silent holder every
``hint_after``) to keep the delta as a hint for that holder
(:class:`~reference_cluster.protocol.messages.Hint`); a push made while a holder is
known to be silent asks at once. A server keeps a hint only for a holder of the list
other than itself (a holder of the list takes a hint as a write of the list): it joins
the delta into the hint kept for that (list, holder), makes it durable
(:class:`~reference_cluster.protocol.effects.Persist` with ``hint_for``), confirms it,
and keeps it across restarts (the store's hints are read back at start). Every
anti-entropy round it hands each hint with no write in flight to its holder (a
``Replicate``); when the holder confirms, and the hint is still the state it handed, the
hint is dropped from memory and from the store, at that state's digest
(:class:`~reference_cluster.protocol.effects.DropHint`), so a hint that grew since is
handed again rather than lost. A hint is not a list: it is never served, and it is not
in any hash tree.

Rule 13 (membership changes). The membership (the member servers and their peer end
points, at an epoch) changes when an operator says so
(:class:`~reference_cluster.protocol.messages.MembershipUpdate`, :meth:`ServerCore.adopt`).
A server adopts a later one (:meth:`~reference_cluster.protocol.placement.Membership.later_than`:
epoch 0, its own flags, never replaces another), records it first
(:class:`~reference_cluster.protocol.effects.SaveMembership`), and sends it to every
server of the old and the new membership; it answers an older one with its own. Every
tree message carries the sender's epoch: trees are compared only at equal epochs, and a
peer at another epoch is answered with this server's membership. On adopting, the server
places every list by the new membership and builds its trees anew: a list it no longer
holds leaves memory (once its writes are done) and is handed over, each anti-entropy round
(at most :data:`MAX_HANDOFFS` lists), to each of its holders as a ``Replicate`` of its
stored state; once every holder has confirmed the state the store still has, the list is
forgotten (:class:`~reference_cluster.protocol.effects.DropList`, at that digest, so a
state that changed since is handed over again). Lists found in the store at start that
this server does not hold are handed over the same way. A hint whose holder no longer
holds the list goes to the list's first holder, and one for a list this server now holds
is joined into it and dropped once that write is durable. A server that is not a member
serves nothing, hands everything over (:attr:`ServerCore.handing` counts what is left),
and still sends its empty tree root, so that it hears of later changes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Protocol

import attrs

from crdts import DotContext
from reference_cluster.cores.authorship import DEFAULT_LIMITS, PushLimits, check_push
from reference_cluster.cores.quorum import MAX_HINTS, Hints, PendingReply, Quorum
from reference_cluster.cores.quorum import write_quorum as write_quorum_of
from reference_cluster.errors import MalformedMessage
from reference_cluster.protocol.effects import (
    DropHint,
    DropList,
    Effect,
    Persist,
    SaveMembership,
    Send,
)
from reference_cluster.protocol.hashtree import BUCKETS, MAX_DEPTH, HashTree, key_of, node_hex
from reference_cluster.protocol.messages import (
    MAX_TREE_NODES,
    AeContexts,
    AeDeltas,
    AeLeaves,
    AeTree,
    Announce,
    Deliver,
    EncodedState,
    ErrorReply,
    Forward,
    Goodbye,
    Heartbeat,
    Hint,
    MembershipUpdate,
    Message,
    Propagate,
    Replicate,
    Stored,
    SyncReply,
    SyncRequest,
    decode,
)
from reference_cluster.protocol.placement import DEFAULT_REPLICAS, Membership
from reference_cluster.protocol.replication import S, context_of, missing_for

__all__ = ["ListSource", "ServerConfig", "ServerCore"]

log = logging.getLogger(__name__)

_EMPTY_CONTEXT: Mapping[str, Any] = DotContext().to_dict()

SMALL_NODE = 16
"""A differing tree node with at most this many lists under it is answered with their
digests instead of its children."""
MAX_AE_LISTS = 2048
"""Most lists in one :class:`AeLeaves` or :class:`AeContexts` message."""
MAX_AE_MESSAGES = 16
"""Most such messages in one answer: a larger difference takes more rounds."""
MAX_CHANGES = 16
"""Deltas kept per list for replies since a version (Rule 10)."""
MIN_CHANGED_LISTS = 64
"""Lists whose changes are kept, at least (Rule 10); more with a larger cache."""
MAX_HANDOFFS = 256
"""Most hints handed to their holders in one anti-entropy round (Rule 12)."""


class ListSource(Protocol[S]):  # type: ignore[misc]
    """Where a server core finds the lists it does not keep in memory (Rule 3): the
    server's durable store, or the simulator's model of it."""

    def digests(self) -> Mapping[str, str]:
        """``{list id: digest of its stored state}`` for every stored list."""
        ...

    def load(self, list_id: str) -> S | None:
        """The list's stored state (a fresh object), or None if it is not stored."""
        ...


@attrs.frozen
class ServerConfig:
    """Server timing and memory.

    Attributes:
        heartbeat_interval: seconds between heartbeats to each broker.
        anti_entropy_interval: seconds between anti-entropy rounds.
        first_round_within: the first round starts within this many seconds of
            :meth:`ServerCore.start` (a restarted server catches up quickly).
        cache_lists: most decoded list states kept in memory when the core has a store
            (Rule 3); lists with writes in flight may exceed it for a moment.
        sweep_per_round: stored lists re-read and re-checked each round (Rule 5).
        check_buckets_per_round: tree buckets re-checked each round (Rule 5).
        hint_after: seconds a holder has to confirm a write before hints go out for
            it (Rule 12).
        write_timeout: seconds a push waits for its write quorum, from its latest
            attempt, before the client is told ``unavailable`` (Rule 11). Longer than a
            client's request timeout: a retry joins the push still waiting, so copies
            that take long (a large push) are waited for, not started over.
    """

    heartbeat_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    anti_entropy_interval: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    first_round_within: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    cache_lists: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    sweep_per_round: int = attrs.field(default=16, validator=attrs.validators.ge(0))
    check_buckets_per_round: int = attrs.field(default=16, validator=attrs.validators.ge(0))
    hint_after: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    write_timeout: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))


@attrs.define
class _Changes(Generic[S]):
    """Rule 10: the deltas that changed a list after version ``base`` (a reply since any
    version from ``base`` on is their join after that version)."""

    base: int
    deltas: list[tuple[int, S]] = attrs.Factory(list)


class _BadState(Exception):
    """A state or context in a message does not decode (internal)."""


class ServerCore(Generic[S]):
    """A server replica of every list it holds.

    Args:
        server_id: this server's id (also its address among peers).
        doc_type: the class of the lists (``ShoppingList``).
        peers: the other servers' ids.
        brokers: the brokers' addresses.
        lists: without a ``store``: the lists to start from, all kept in memory.
        store: where the lists live (Rule 3); the core starts from its digests and
            loads states on demand. Give ``lists`` or ``store``, not both.
        incarnation: how many times this server started before (for logs).
        config: timing and memory.
        rng: the source of the timers' jitter.
        admit: ``admit(request, delta, now)`` returns an error reply to refuse a client's
            request (Rule 8), or None to go on; ``delta`` is the decoded delta or None.
        push_limits: the bounds of a client's push (Rule 9).
        replicas: how many members hold each list (Rule 6).
        membership: the member servers (default: this server and ``peers``, epoch 0);
            it must name this server. ``peers`` are then the other members.
        write_quorum: how many servers must hold a push durably before it is
            acknowledged (Rule 11); default 2, or 1 where a list has one holder.
        addresses: the members' peer end points, spread with the membership when it
            changes (Rule 13); default: none known.

    Raises:
        ValueError: both ``lists`` and ``store``; a membership without this server;
            ``replicas`` below 1; a write quorum outside 1 to the holders of a list.
    """

    def __init__(
        self,
        server_id: str,
        doc_type: type[S],
        *,
        peers: Sequence[str],
        brokers: Sequence[str],
        lists: Mapping[str, S] | None = None,
        store: ListSource[S] | None = None,
        incarnation: int = 0,
        config: ServerConfig | None = None,
        rng: random.Random,
        admit: Callable[[SyncRequest, S | None, float], ErrorReply | None] | None = None,
        push_limits: PushLimits = DEFAULT_LIMITS,
        replicas: int = DEFAULT_REPLICAS,
        membership: Membership | None = None,
        write_quorum: int | None = None,
        addresses: Mapping[str, str] | None = None,
    ) -> None:
        if lists is not None and store is not None:
            raise ValueError("a server core starts from lists or from a store, not both")
        self.server_id = server_id
        self.doc_type = doc_type
        first = membership or Membership({server_id, *peers})
        if server_id not in first.servers and first.epoch == 0:
            raise ValueError(f"server {server_id} is not a member of {sorted(first.servers)}")
        self._init_copies(rng, addresses)
        self._place(first, replicas)
        self.write_quorum = write_quorum_of(write_quorum, self._copies)
        self.brokers = tuple(brokers)
        self.incarnation = incarnation
        self.config = config or ServerConfig()
        self._rng = rng
        self._admit = admit
        self.push_limits = push_limits
        self._store = store
        self._cache: dict[str, S] = {}
        """Decoded states, least recently used first (Rule 3)."""
        self._digests: dict[str, str | None] = {}
        """Every list this server holds -> its digest (None while dirty: Rule 4)."""
        self._dirty: set[str] = set()
        self._pins: dict[str, int] = {}
        self._writes: dict[int, str] = {}
        """Token -> list of every write in flight."""
        self._suspect: set[str] = set()
        """Lists whose last write failed: reloaded at the next round (Rule 3)."""
        self._sweep_queue: list[str] = []
        self._check_at = 0
        self.evictions = 0
        self.loads = 0
        self.repaired_digests = 0
        """Digests the sweep or the tree check found wrong (Rule 5)."""
        self.replies_since = 0
        """Replies to clients made of the changes since their version (Rule 10)."""
        self._fill(lists, store)
        self._pending: dict[int, PendingReply] = {}
        self._changes: dict[str, _Changes[S]] = {}
        self._version = 0
        self._version_tag = f"{server_id}.{incarnation}.{rng.getrandbits(48):012x}"
        """Names this run of this server in reply versions (Rule 10)."""
        self._next_token = 1
        self._round = 0
        self._heartbeat_at: float | None = None
        self._anti_entropy_at: float | None = None

    def _init_copies(self, rng: random.Random, addresses: Mapping[str, str] | None) -> None:
        """What the core keeps for the copies of lists on other servers: quorums,
        hints and handoffs (Rules 11 to 13)."""
        self._quorums: dict[int, Quorum] = {}
        """Ask -> a client's push waiting for its write quorum (Rule 11)."""
        self._by_request: dict[tuple[str, str], int] = {}
        """(list, request id) -> the ask of the push waiting for its copies."""
        self._peer_acks: dict[int, tuple[str, str, int]] = {}
        """Token -> (server, list, ask) of a write a peer waits to hear is durable."""
        self._silent: dict[str, float] = {}
        """Holders that let a write's ``hint_after`` pass -> since when; cleared by any
        message from them (Rule 12)."""
        self._next_ask = rng.getrandbits(48)
        self._hints: Hints[S] = Hints()
        """Rule 12: what this server keeps for other servers' holders."""
        self._hint_merges: dict[int, tuple[tuple[str, str], str]] = {}
        """Token -> (hint, digest) of a hint joined into a list this server now holds
        (Rule 13): dropped once that write is durable."""
        self._addresses = dict(addresses or {})
        self._bottom = self.doc_type().digest()
        self._away: dict[str, str] = {}
        """Rule 13: stored lists this server does not hold -> their digest, to hand to
        their holders and then forget."""
        self._away_states: dict[str, S] = {}
        """The states of those lists, for a core without a store."""
        self._list_asks: dict[int, tuple[str, str, str]] = {}
        """Ask -> (list, digest, holder) of every list handoff in flight (the last one
        to each holder of each list: :attr:`_last_ask`)."""
        self._last_ask: dict[tuple[str, str], int] = {}
        self._list_confirmed: dict[str, tuple[str, set[str]]] = {}
        """List -> (digest handed, holders that confirmed it)."""
        self.lists_handed = 0
        """Lists handed to their holders and forgotten here since start (Rule 13)."""
        self.unheld = 0
        """Lists given at start that this server does not hold (Rules 6 and 13)."""

    def _place(self, membership: Membership, replicas: int) -> None:
        """Take the membership and the replica count, and set up the trees (Rule 6)."""
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        self.membership = membership
        self.replicas = replicas
        self.member = self.server_id in membership.servers
        self._everywhere = self.member and membership.everywhere(replicas)
        self._copies = min(replicas, len(membership.servers))
        self.peers = tuple(sorted(membership.servers - {self.server_id}))
        self._trees: dict[str, HashTree]
        """Peer -> the tree of the lists shared with it: one object for every peer when
        every member holds every list."""
        if self._everywhere:
            shared = HashTree()
            self._trees = dict.fromkeys(self.peers, shared)
            self._all_trees = [shared]
        else:
            self._trees = {p: HashTree() for p in self.peers}
            self._all_trees = list(self._trees.values())

    def _fill(self, lists: Mapping[str, S] | None, store: ListSource[S] | None) -> None:
        """Start from ``lists`` or from the store's digests, keeping the held lists."""
        if store is None:
            for list_id, state in sorted((lists or {}).items()):
                if not self._holds(list_id):
                    self.unheld += 1
                    self._away_states[list_id] = state.copy()
                    self._away[list_id] = state.digest()
                    continue
                self._cache[list_id] = state.copy()
                self._mark_dirty(list_id)
            return
        stored_hints = getattr(store, "hints", None)
        if callable(stored_hints):
            for key, state in sorted(stored_hints().items()):
                self._hints.states[key] = state
        for list_id, digest in store.digests().items():
            if self._holds(list_id):
                self._note(list_id, digest)
            elif digest != self._bottom:  # an empty row (an owner's record) has nothing
                self.unheld += 1
                self._away[list_id] = digest
        if self.unheld:
            log.warning(
                "server %s: %d stored lists are held by other servers; handing them over",
                self.server_id,
                self.unheld,
            )

    # -- readers --------------------------------------------------------------------------

    def list_ids(self) -> tuple[str, ...]:
        """The ids of the lists this server holds, in the order it learned them."""
        return tuple(self._digests)

    def state(self, list_id: str) -> S | None:
        """A copy of a list's state (loaded if need be), or ``None``."""
        state = self._get(list_id)
        return None if state is None else state.copy()

    def view(self, list_id: str) -> S | None:
        """A list's state itself (loaded if need be), or ``None``: read it, never change
        it, and do not keep it (it may be evicted and reloaded)."""
        return self._get(list_id)

    def digest(self, list_id: str) -> str | None:
        """The digest of a list's state, or ``None``."""
        if list_id in self._dirty:
            self._clean(list_id)
        return self._digests.get(list_id)

    def tree_root(self, peer: str | None = None) -> str:
        """The root of the hash tree shared with ``peer`` (after computing the dirty
        digests): two servers holding the same shared lists in the same states have equal
        roots. ``peer`` may be left out when every member holds every list (one tree).

        Raises:
            ValueError: ``peer`` is not a peer, or left out while trees differ by peer.
        """
        self._refresh()
        if peer is None:
            if not self._everywhere:
                raise ValueError("each peer has its own tree: name the peer")
            return node_hex(self._all_trees[0].root())
        tree = self._trees.get(peer)
        if tree is None:
            raise ValueError(f"{peer!r} is not a peer of {self.server_id}")
        return node_hex(tree.root())

    def holds(self, list_id: str) -> bool:
        """Whether this server holds ``list_id`` (Rule 6)."""
        return self._holds(list_id)

    @property
    def pending_acks(self) -> int:
        """Acknowledgements (to clients, or to peers: Rules 11 and 12) waiting for a
        write to become durable."""
        return len(self._pending) + len(self._peer_acks)

    @property
    def hints(self) -> int:
        """How many hints this server keeps for other servers (Rule 12)."""
        return len(self._hints)

    @property
    def handing(self) -> int:
        """Lists and hints this server still has to hand to other servers (Rules 12
        and 13): a server that left the membership may stop once this is 0."""
        return len(self._away) + len(self._hints)

    @property
    def addresses(self) -> Mapping[str, str]:
        """The members' peer end points as this server knows them (Rule 13)."""
        return dict(self._addresses)

    @property
    def hints_taken(self) -> int:
        """Hint writes made durable since start (Rule 12)."""
        return self._hints.taken

    @property
    def hints_handed(self) -> int:
        """Hints handed to their holder and dropped since start (Rule 12)."""
        return self._hints.handed

    @property
    def cached(self) -> int:
        """How many decoded states are in memory."""
        return len(self._cache)

    # -- the core API ---------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Announce to every broker and arm the timers (Rule 7)."""
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
        out: list[Effect] = []
        if pending is not None:
            if pending.ask is None:
                out.append(self._acknowledge(pending, 1))
            else:
                quorum = self._quorums.get(pending.ask)
                if quorum is not None:
                    quorum.local = True
                    out.extend(self._quorum_met(pending.ask, quorum))
        peer_ack = self._peer_acks.pop(token, None)
        if peer_ack is not None:
            to, list_id, ask = peer_ack
            out.append(Send(to, Stored(self.server_id, list_id, ask)))
        if self._hints.done(token):
            self._hints.taken += 1
        else:
            self._unpin(token, failed=False)
        merged = self._hint_merges.pop(token, None)
        if merged is not None:
            dropped = self._hints.forget(*merged)
            if dropped is not None:
                out.append(DropHint(*dropped))
        return out

    def _acknowledge(self, pending: PendingReply, copies: int) -> Send:
        """The reply to a push now held by ``copies`` servers (Rules 1 and 11). If the
        list moved to other servers meanwhile (Rule 13), the client hears the retryable
        ``not_holder`` instead: its retry, to a holder, is acknowledged there."""
        reply = self._reply(pending.request_id, pending.list_id, pending.context, pending.since)
        if reply.delta is None:
            detail = f"the list moved to {', '.join(self._holders(pending.list_id))}"
            moved = ErrorReply(pending.request_id, "not_holder", detail[:200])
            return Send(pending.broker, Deliver(pending.client, moved))
        return Send(pending.broker, Deliver(pending.client, attrs.evolve(reply, copies=copies)))

    def persist_failed(self, token: int, reason: str, now: float) -> list[Effect]:
        """The write ``token`` failed: tell the waiting client (it will retry)."""
        pending = self._pending.pop(token, None)
        log.error("server %s: write %d failed: %s", self.server_id, token, reason)
        self._peer_acks.pop(token, None)  # the peer hears nothing and asks elsewhere
        self._hint_merges.pop(token, None)  # the hint stays, and is joined in again
        if not self._hints.done(token):
            self._unpin(token, failed=True)
        if pending is None:
            return []
        if pending.ask is not None and pending.ask in self._quorums:
            self._end_quorum(pending.ask)
        reply = ErrorReply(pending.request_id, "persist_failed", reason[:200])
        return [Send(pending.broker, Deliver(pending.client, reply))]

    def next_deadline(self) -> float | None:
        """The earliest of the heartbeat, anti-entropy and write quorum timers."""
        times = [t for t in (self._heartbeat_at, self._anti_entropy_at) if t is not None]
        times.extend(min(q.hint_at, q.deadline) for q in self._quorums.values())
        return min(times) if times else None

    def on_timer(self, now: float) -> list[Effect]:
        """Send heartbeats and start an anti-entropy round when they are due."""
        out: list[Effect] = []
        if self._heartbeat_at is not None and self._heartbeat_at <= now:
            self._heartbeat_at = now + self.config.heartbeat_interval
            beat = Heartbeat(
                self.server_id, self.membership.epoch, tuple(sorted(self.membership.servers))
            )
            out.extend(Send(b, beat) for b in self.brokers)
        if self._anti_entropy_at is not None and self._anti_entropy_at <= now:
            self._anti_entropy_at = now + self.config.anti_entropy_interval
            out.extend(self._anti_entropy_round(now))
        if self._quorums:
            out.extend(self._quorum_timers(now))
        return out

    # -- memory (Rule 3) and digests (Rules 4 and 5) --------------------------------------

    def _get(self, list_id: str) -> S | None:
        """A list's state, loaded if need be and marked most recently used."""
        cache = self._cache
        state = cache.pop(list_id, None)
        if state is not None:
            cache[list_id] = state
            return state
        if self._store is None or list_id not in self._digests:
            return None
        state = self._load(list_id)
        if state is not None:
            cache[list_id] = state
            self._evict(keep=list_id)
        return state

    def _load(self, list_id: str) -> S | None:
        """Read a list from the store and put its digest right; None (and the list
        forgotten) if the store no longer has it."""
        assert self._store is not None
        self.loads += 1
        state = self._store.load(list_id)
        if state is None:
            log.warning("server %s: list %s is gone from the store", self.server_id, list_id)
            self._forget(list_id)
            return None
        digest = state.digest()
        known = self._digests.get(list_id)
        if known != digest:
            self._changes.pop(list_id, None)  # not the state they led to (Rule 10)
        if known is not None and known != digest:
            self.repaired_digests += 1
            log.warning(
                "server %s: list %s read back with another digest than recorded; put right",
                self.server_id,
                list_id,
            )
        self._note(list_id, digest)
        return state

    def _forget(self, list_id: str) -> None:
        self._drop(list_id)
        self._digests.pop(list_id, None)
        self._dirty.discard(list_id)
        for tree in self._trees_of(list_id):
            tree.drop(list_id)

    def _evict(self, keep: str | None = None) -> None:
        """Drop least recently used unpinned states down to the limit (a dirty one has
        its digest computed first); never ``keep``, which a caller is about to use."""
        cache, cap = self._cache, self.config.cache_lists
        if len(cache) <= cap:
            return
        for list_id in list(cache):
            if len(cache) <= cap:
                return
            if self._pins.get(list_id) or list_id == keep:
                continue
            if list_id in self._dirty:
                self._clean(list_id)
            del cache[list_id]
            self.evictions += 1

    def _mark_dirty(self, list_id: str) -> None:
        self._digests[list_id] = None
        self._dirty.add(list_id)

    def _note(self, list_id: str, digest: str) -> None:
        self._digests[list_id] = digest
        self._dirty.discard(list_id)
        for tree in self._trees_of(list_id):
            tree.put(list_id, digest)

    def _clean(self, list_id: str) -> None:
        """Compute a dirty list's digest (it is in memory: Rule 3)."""
        self._note(list_id, self._cache[list_id].digest())

    def _refresh(self) -> None:
        """Compute every dirty digest and bring the tree up to date."""
        for list_id in list(self._dirty):
            self._clean(list_id)

    def _pin(self, token: int, list_id: str) -> None:
        self._writes[token] = list_id
        self._pins[list_id] = self._pins.get(list_id, 0) + 1

    def _unpin(self, token: int, *, failed: bool) -> None:
        list_id = self._writes.pop(token, None)
        if list_id is None:
            return
        left = self._pins[list_id] - 1
        if left:
            self._pins[list_id] = left
        else:
            del self._pins[list_id]
        if failed and self._store is not None:
            self._suspect.add(list_id)
        if not left and list_id in self._suspect and self._store is not None:
            # Memory goes back to what is stored (Rule 3); the next round reloads it
            # and puts its digest right.
            if list_id in self._dirty:
                self._clean(list_id)
            self._drop(list_id)
        self._evict()

    def _drop(self, list_id: str) -> None:
        """Drop a list's state and its changes from memory (Rules 3 and 10)."""
        self._cache.pop(list_id, None)
        self._changes.pop(list_id, None)

    def _maintain(self) -> None:
        """Rule 5: reload the suspects and a slice of the store; check a slice of the
        tree (against digests computed first: a dirty list's is not known yet)."""
        self._refresh()
        store = self._store
        if store is not None:
            queue = self._sweep_queue
            due = dict.fromkeys(sorted(self._suspect))
            refilled = False
            for _ in range(self.config.sweep_per_round):
                if not queue:
                    if refilled:  # every list once a round at most
                        break
                    queue.extend(reversed(self._digests))
                    refilled = True
                    if not queue:
                        break
                due[queue.pop()] = None
            for list_id in due:
                if self._pins.get(list_id) or list_id not in self._digests:
                    continue
                self._suspect.discard(list_id)
                if list_id in self._dirty:
                    self._clean(list_id)
                cached = list_id in self._cache
                try:
                    state = self._load(list_id)
                except Exception as exc:  # a store that fails to read: try again later
                    log.error("server %s: reading %s failed: %s", self.server_id, list_id, exc)
                    self._suspect.add(list_id)
                    break
                if state is not None and cached:
                    self._cache[list_id] = state
        count = self.config.check_buckets_per_round
        if count:
            names = BUCKETS
            at = self._check_at % len(names)
            slice_ = [names[(at + i) % len(names)] for i in range(min(count, len(names)))]
            self._check_at = at + len(slice_)
            # The trees are built anew with every membership (Rule 13), so a list is in
            # a peer's tree only if they share it: each tree is checked against the digests.
            wrong: list[str] = []
            for tree in self._all_trees:
                wrong.extend(tree.check(slice_, self._digests.get))
            if wrong:
                self.repaired_digests += len(wrong)
                log.warning(
                    "server %s: %d tree entries were wrong; put right",
                    self.server_id,
                    len(wrong),
                )

    # -- state ----------------------------------------------------------------------------

    def _holds(self, list_id: str) -> bool:
        return self._everywhere or self.server_id in self._holders(list_id)

    def _holders(self, list_id: str) -> tuple[str, ...]:
        return self.membership.holders(list_id, self.replicas)

    def _shares(self, peer: str, list_id: str) -> bool:
        """Whether this server and ``peer`` both hold ``list_id`` (Rule 6)."""
        if self._everywhere:
            return peer in self._trees
        held = self._holders(list_id)
        return self.server_id in held and peer in held

    def _trees_of(self, list_id: str) -> list[HashTree]:
        """The trees ``list_id`` belongs in: those of the peers that share it."""
        if self._everywhere:
            return self._all_trees
        held, trees = self._holders(list_id), self._trees
        if self.server_id not in held:
            return []
        return [trees[p] for p in held if p in trees]

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
        state = self._get(list_id)
        ctx = None if state is None else context_of(state)
        return _EMPTY_CONTEXT if ctx is None else ctx.to_dict()

    def _apply(self, list_id: str, delta: S, *, small: bool = True) -> Persist | None:
        """Join ``delta`` into the list; return the write to persist, or None if the
        delta changes nothing (Rule 2). ``small``: a client's delta or its propagation,
        kept for replies since a version (Rule 10); otherwise they start afresh."""
        state = self._get(list_id)
        if state is None:
            state = self._cache[list_id] = self.doc_type()
            self._changes.pop(list_id, None)
        elif delta <= state:
            return None
        state.join(delta)
        self._mark_dirty(list_id)
        changes = self._changes.get(list_id)
        if changes is not None:
            self._version += 1
            if not small:
                self._changes[list_id] = _Changes(self._version)
            else:
                kept = changes.deltas
                kept.append((self._version, delta.copy()))
                if len(kept) > MAX_CHANGES:
                    changes.base = kept.pop(0)[0]
        return self._write(list_id, delta)

    def _reply(
        self, request_id: str, list_id: str, ctx: DotContext | None, since: str | None
    ) -> SyncReply:
        """The reply to a client's sync of ``list_id`` (Rule 10)."""
        state = self._get(list_id)
        if state is None:
            return SyncReply(request_id, list_id, None)
        changes = self._changes.pop(list_id, None)
        if changes is None:
            self._version += 1
            changes = _Changes(self._version)
        self._changes[list_id] = changes  # most recently used last
        if len(self._changes) > max(self.config.cache_lists, MIN_CHANGED_LISTS):
            del self._changes[next(iter(self._changes))]
        delta = self._changes_since(changes, since)
        if delta is None:
            delta = missing_for(state, ctx)
        else:
            self.replies_since += 1
        return SyncReply(
            request_id, list_id, delta.to_dict(), f"{self._version_tag}:{self._version}"
        )

    def _changes_since(self, changes: _Changes[S], since: str | None) -> S | None:
        """The join of the changes after version ``since``, or None if ``since`` is not
        a version these changes reach back to."""
        if since is None:
            return None
        tag, _, number = since.rpartition(":")
        if tag != self._version_tag or not (number.isascii() and number.isdigit()):
            return None
        version = int(number)
        if not changes.base <= version <= self._version:
            return None
        out = self.doc_type()
        for at, delta in reversed(changes.deltas):
            if at <= version:
                break
            out.join(delta)
        return out

    def _new_token(self) -> int:
        token = self._next_token
        self._next_token += 1
        return token

    def _write(self, list_id: str, delta: S) -> Persist:
        token = self._new_token()
        self._pin(token, list_id)
        return Persist(token, list_id, delta)

    def _propagate(self, list_id: str, delta: S) -> list[Effect]:
        encoded = delta.to_dict()
        targets = self._holders(list_id)
        return [
            Send(p, Propagate(self.server_id, list_id, encoded))
            for p in targets
            if p != self.server_id
        ]

    # -- handlers -------------------------------------------------------------------------

    def _handle(self, peer: str, msg: Message, now: float) -> list[Effect]:
        if isinstance(msg, Forward):
            return self._on_forward(peer, msg, now)
        self._silent.pop(peer, None)  # it answers again (Rule 12)
        if isinstance(msg, Propagate):
            if not self._holds(msg.list_id):
                return []
            write = self._apply(msg.list_id, self._decode_state(msg.delta, "propagate.delta"))
            return [] if write is None else [write]
        if isinstance(msg, Replicate | Hint):
            return self._on_replicate(peer, msg)
        if isinstance(msg, MembershipUpdate):
            return self._on_membership(peer, msg)
        if isinstance(msg, Stored):
            return self._on_stored(peer, msg)
        if isinstance(msg, AeTree):
            return self._on_tree(peer, msg)
        if isinstance(msg, AeLeaves):
            return self._on_leaves(peer, msg)
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
            detail = f"{self.server_id} does not hold the list; its holders are " + ", ".join(
                self._holders(req.list_id)
            )
            reply = ErrorReply(req.request_id, "not_holder", detail[:200])
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
            reply = self._reply(req.request_id, req.list_id, ctx, req.since)
            return [Send(broker, Deliver(fwd.client, reply))]
        refusal = self._check_push(req, delta)
        if refusal is not None:
            return [Send(broker, Deliver(fwd.client, refusal))]
        return self._on_push(broker, fwd, delta, ctx, now)

    def _check_push(self, req: SyncRequest, delta: S) -> ErrorReply | None:
        """Rule 9: an error reply refusing the push, or None to apply it."""
        refusal = check_push(self._get(req.list_id), delta, req.replica, self.push_limits)
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
        """Apply a client's delta: persist it, send it to the other holders, and
        acknowledge once durable here (W = 1) or on W servers (Rule 11)."""
        req = fwd.request
        write = self._apply(req.list_id, delta)
        out: list[Effect] = []
        joined = self._join_quorum(broker, fwd, delta, ctx, now)
        if joined is not None:  # a retry while its copies are on their way (Rule 11)
            write = write or self._write(req.list_id, delta)
            self._pending[write.token] = joined
            return [write]
        ask = None if self.write_quorum == 1 else self._new_ask()
        reply = PendingReply(broker, fwd.client, req.request_id, req.list_id, ctx, req.since, ask)
        if ask is not None:
            self._by_request[(req.list_id, req.request_id)] = ask
            if write is None:  # a retry: every copy is asked to confirm again
                write = self._write(req.list_id, delta)
            out.extend(self._ask_quorum(reply, delta, now))
        elif write is None:
            # Already applied (a retry): persist again so the ack waits for a write of
            # its own (Rule 1), but there is nothing new to propagate.
            write = self._write(req.list_id, delta)
        else:
            out.extend(self._propagate(req.list_id, delta))
        self._pending[write.token] = reply
        out.insert(0, write)
        return out

    # -- write quorum and hinted handoff (Rules 11 and 12) --------------------------------

    def _join_quorum(
        self, broker: str, fwd: Forward, delta: S, ctx: DotContext | None, now: float
    ) -> PendingReply | None:
        """If the same push (its request id, its delta) is still waiting for its copies,
        make this attempt the one its acknowledgement goes to, give it a new deadline,
        and return its reply; else None (the other servers are not asked again)."""
        req = fwd.request
        ask = self._by_request.get((req.list_id, req.request_id))
        quorum = None if ask is None else self._quorums.get(ask)
        if quorum is None or quorum.delta != delta.to_dict():
            return None
        reply = PendingReply(broker, fwd.client, req.request_id, req.list_id, ctx, req.since, ask)
        quorum.reply = reply
        quorum.deadline = now + self.config.write_timeout
        return reply

    def _end_quorum(self, ask: int) -> Quorum:
        """Forget the push ``ask`` waits for (met, given up, or failed here)."""
        quorum = self._quorums.pop(ask)
        self._by_request.pop((quorum.list_id, quorum.reply.request_id), None)
        return quorum

    def _new_ask(self) -> int:
        self._next_ask = (self._next_ask + 1) % (1 << 53)
        return self._next_ask

    def _ask_quorum(self, reply: PendingReply, delta: S, now: float) -> list[Effect]:
        """Send a push to the list's other holders, and hints at once for those known
        to be silent if the others cannot make the quorum."""
        ask, list_id = reply.ask, reply.list_id
        assert ask is not None
        order = self.membership.preference(list_id)
        held = order[: self._copies]
        others = tuple(p for p in held if p != self.server_id)
        cfg = self.config
        quorum = Quorum(
            reply,
            list_id,
            delta.to_dict(),
            self.write_quorum,
            others,
            order[self._copies :],
            now + cfg.hint_after,
            now + cfg.write_timeout,
        )
        self._quorums[ask] = quorum
        out: list[Effect] = [
            Send(p, Replicate(self.server_id, list_id, quorum.delta, ask)) for p in others
        ]
        answering = sum(p not in self._silent for p in others)
        out.extend(self._send_hints(ask, quorum, max(0, quorum.short() - answering)))
        return out

    def _send_hints(self, ask: int, quorum: Quorum, count: int) -> list[Effect]:
        return [
            Send(taker, Hint(self.server_id, quorum.list_id, holder, quorum.delta, ask))
            for taker, holder in quorum.hints(self._silent, count)
        ]

    def _quorum_timers(self, now: float) -> list[Effect]:
        """Give up the pushes past their deadline; send hints for the holders silent
        past ``hint_after`` (Rule 12)."""
        out: list[Effect] = []
        for ask, quorum in list(self._quorums.items()):
            if quorum.deadline <= now:
                self._end_quorum(ask)
                out.extend(self._give_up(ask, quorum))
            elif quorum.hint_at <= now:
                quorum.hint_at = now + self.config.hint_after
                for p in quorum.others:
                    if p not in quorum.covered:
                        self._silent.setdefault(p, now)
                out.extend(self._send_hints(ask, quorum, quorum.short()))
        return out

    def _give_up(self, ask: int, quorum: Quorum) -> list[Effect]:
        """Tell the client its push did not reach the write quorum in time (the writes
        made go on; nobody waits for them)."""
        pending = quorum.reply
        detail = (
            f"{quorum.copies} of the {quorum.need} copies needed were durable "
            f"within {self.config.write_timeout:g}s"
        )
        reply = ErrorReply(pending.request_id, "unavailable", detail)
        return [Send(pending.broker, Deliver(pending.client, reply))]

    def _quorum_met(self, ask: int, quorum: Quorum) -> list[Effect]:
        """Acknowledge the push if enough servers hold it now (Rule 11)."""
        if not quorum.met:
            return []
        self._end_quorum(ask)
        return [self._acknowledge(quorum.reply, quorum.copies)]

    def _on_stored(self, peer: str, msg: Stored) -> list[Effect]:
        """A peer confirmed a write: a push's copy, or a hint handed back."""
        quorum = self._quorums.get(msg.ask)
        if quorum is not None:
            if quorum.list_id != msg.list_id or not quorum.confirm(peer):
                return []
            return self._quorum_met(msg.ask, quorum)
        if msg.ask in self._list_asks:
            return self._list_confirmed_by(peer, msg)
        dropped = self._hints.confirmed(msg.ask, peer)
        if dropped is None:
            return []
        return [DropHint(*dropped)]

    def _on_replicate(self, peer: str, msg: Replicate | Hint) -> list[Effect]:
        """Make a peer's delta durable (as the list, or as a hint) and confirm it."""
        list_id = msg.list_id
        if self._holds(list_id):
            delta = self._decode_state(msg.delta, f"{msg.kind}.delta")
            write = self._apply(list_id, delta) or self._write(list_id, delta)
        elif isinstance(msg, Hint) and self._takes_hint(list_id, msg.holder):
            delta = self._decode_state(msg.delta, "hint.delta")
            write = Persist(self._new_token(), list_id, delta, hint_for=msg.holder)
            self._hints.add((list_id, msg.holder), delta, write.token)
        else:
            log.warning(
                "server %s: %s of list %s from %s, held elsewhere; dropped",
                self.server_id,
                msg.kind,
                list_id,
                peer,
            )
            return []
        self._peer_acks[write.token] = (peer, list_id, msg.ask)
        return [write]

    def _takes_hint(self, list_id: str, holder: str) -> bool:
        """Whether this server keeps a hint for ``holder`` of ``list_id``."""
        if holder == self.server_id or holder not in self._holders(list_id):
            return False
        if len(self._hints) >= MAX_HINTS and (list_id, holder) not in self._hints.states:
            log.warning("server %s: %d hints kept; no more taken", self.server_id, MAX_HINTS)
            return False
        return True

    def _hand_hints(self) -> list[Effect]:
        """Hand each kept hint to its holder (a :class:`Replicate`); it is dropped when
        the holder confirms it (Rule 12). A hint whose holder no longer holds the list
        goes to the list's first holder (Rule 13)."""
        out: list[Effect] = []
        for (list_id, holder), state in list(self._hints.idle()):
            if len(out) >= MAX_HANDOFFS:
                break
            if self._holds(list_id):  # held here now: joined into the list, then dropped
                write = self._apply(list_id, state) or self._write(list_id, state)
                self._hint_merges[write.token] = ((list_id, holder), state.digest())
                out.append(write)
                continue
            held = self._holders(list_id)
            to = holder if holder in held else next(h for h in held if h != self.server_id)
            ask = self._new_ask()
            self._hints.hand((list_id, holder), ask, to)
            out.append(Send(to, Replicate(self.server_id, list_id, state.to_dict(), ask)))
        return out

    # -- membership changes (Rule 13) -----------------------------------------------------

    def _membership_message(self) -> MembershipUpdate:
        servers = {s: self._addresses.get(s, "") for s in sorted(self.membership.servers)}
        return MembershipUpdate(self.server_id, self.membership.epoch, servers)

    def adopt(self, update: MembershipUpdate, now: float) -> list[Effect]:
        """Take ``update`` if it is newer than this server's membership (as from a peer;
        an operator's tool calls this through the shell)."""
        return self._on_membership(update.origin, update)

    def _on_membership(self, peer: str, msg: MembershipUpdate) -> list[Effect]:
        """Adopt a newer membership; answer an older one with this server's own; take
        an operator's end points for the members of this one."""
        theirs = Membership(msg.servers, msg.epoch)
        operator = msg.origin not in self.membership.servers | theirs.servers
        if theirs.later_than(self.membership):
            return self._adopt(theirs, msg.servers, operator=operator)
        if self.membership.later_than(theirs):
            return [Send(peer, self._membership_message())]
        if operator and theirs == self.membership:
            changed = {s: a for s, a in msg.servers.items() if a and a != self._addresses.get(s)}
            if changed:
                self._addresses.update(changed)
                update = self._membership_message()
                return [SaveMembership(update.epoch, dict(update.servers))]
        return []

    def _adopt(
        self, new: Membership, addresses: Mapping[str, str], *, operator: bool
    ) -> list[Effect]:
        """Record ``new``, place the lists by it, and spread it (Rule 13). A peer's end
        points fill only those this server does not know (each server may reach another
        its own way); an operator's replace them."""
        log.info(
            "server %s: membership epoch %d: %s",
            self.server_id,
            new.epoch,
            " ".join(sorted(new.servers)),
        )
        before = set(self.peers)
        mine, given = self._addresses, {s: a for s, a in addresses.items() if a}
        known = mine | given if operator else given | {s: a for s, a in mine.items() if a}
        self._addresses = {s: known.get(s, "") for s in sorted(new.servers)}
        self._replace(new)
        update = self._membership_message()
        out: list[Effect] = [SaveMembership(new.epoch, dict(update.servers))]
        told = sorted((before | set(new.servers)) - {self.server_id})
        out.extend(Send(p, update) for p in told)
        return out

    def _replace(self, new: Membership) -> None:
        """Place every list by ``new``: lists no longer held go away (to be handed
        over), lists held again come back; the trees are built anew."""
        self._refresh()
        held = {k: d for k, d in self._digests.items() if d is not None}
        self._place(new, self.replicas)
        self._digests = {}
        self._list_confirmed.clear()
        self._list_asks.clear()
        self._last_ask.clear()
        for list_id, digest in held.items():
            if self._holds(list_id):
                self._note(list_id, digest)
            else:
                self._send_away(list_id, digest)
        for list_id in [k for k in self._away if self._holds(k)]:
            digest = self._away.pop(list_id)
            state = self._away_states.pop(list_id, None)
            if state is not None:
                self._cache[list_id] = state
            self._note(list_id, digest)

    def _send_away(self, list_id: str, digest: str) -> None:
        """A list this server no longer holds: out of memory (unless writes of it are in
        flight), to be handed over."""
        self._changes.pop(list_id, None)
        self._suspect.discard(list_id)
        if self._store is None:
            state = self._cache.pop(list_id, None)
            if state is not None:
                self._away_states[list_id] = state
        elif not self._pins.get(list_id):
            self._cache.pop(list_id, None)
        if digest != self._bottom:
            self._away[list_id] = digest

    def _away_state(self, list_id: str) -> S | None:
        """The state of a list to hand over, as stored (or kept, without a store)."""
        if self._store is None:
            return self._away_states.get(list_id)
        if self._pins.get(list_id):
            return None  # writes in flight: hand it over once they are done
        self._cache.pop(list_id, None)
        return self._store.load(list_id)

    def _hand_lists(self) -> list[Effect]:
        """Send each list this server no longer holds to its holders that have not
        confirmed it yet (Rule 13)."""
        out: list[Effect] = []
        for list_id in list(self._away)[:MAX_HANDOFFS]:
            state = self._away_state(list_id)
            if state is None:
                if not self._pins.get(list_id):
                    del self._away[list_id]  # gone from the store (deleted by its owner)
                continue
            digest = self._away[list_id] = state.digest()
            done = self._list_confirmed.get(list_id)
            if done is None or done[0] != digest:
                done = self._list_confirmed[list_id] = (digest, set())
            encoded = state.to_dict()
            for to in self._holders(list_id):
                if to == self.server_id or to in done[1]:
                    continue
                ask = self._new_ask()
                self._list_asks.pop(self._last_ask.get((list_id, to), -1), None)
                self._last_ask[(list_id, to)] = ask
                self._list_asks[ask] = (list_id, digest, to)
                out.append(Send(to, Replicate(self.server_id, list_id, encoded, ask)))
        return out

    def _list_confirmed_by(self, peer: str, msg: Stored) -> list[Effect]:
        """A holder confirmed a list handed over; forget the list once every holder
        has confirmed the state this server still has (Rule 13)."""
        list_id, digest, to = self._list_asks.pop(msg.ask)
        self._last_ask.pop((list_id, to), None)
        done = self._list_confirmed.get(list_id)
        if to != peer or list_id != msg.list_id or done is None or done[0] != digest:
            return []
        done[1].add(peer)
        holders = {h for h in self._holders(list_id) if h != self.server_id}
        if not holders <= done[1] or self._away.get(list_id) != digest:
            return []
        del self._away[list_id]
        del self._list_confirmed[list_id]
        self._away_states.pop(list_id, None)
        for holder in holders:
            self._list_asks.pop(self._last_ask.pop((list_id, holder), -1), None)
        self.lists_handed += 1
        return [DropList(list_id, digest)]

    # -- anti-entropy (Rules 4 and 5) -----------------------------------------------------

    def _anti_entropy_round(self, now: float) -> list[Effect]:
        self._round += 1
        self._maintain()
        self._refresh()
        roots: dict[int, str] = {}
        out: list[Effect] = []
        epoch = self.membership.epoch
        for p in self.peers:  # one that left sends an empty root: it hears of later changes
            tree = self._trees[p]
            root = roots.get(id(tree))
            if root is None:
                root = roots[id(tree)] = node_hex(tree.root())
            out.append(Send(p, AeTree(self.server_id, self._round, {"": root}, epoch)))
        if self._hints.states:
            out.extend(self._hand_hints())
        if self._away:
            out.extend(self._hand_lists())
        return out

    def _peer_tree(self, peer: str, kind: str) -> HashTree | None:
        """The tree shared with ``peer``; None (and a log line) for a sender that is no
        member of this server's membership."""
        tree = self._trees.get(peer)
        if tree is None:
            log.warning("server %s: %s from %s, not a peer; dropped", self.server_id, kind, peer)
        return tree

    def _on_tree(self, peer: str, msg: AeTree) -> list[Effect]:
        """Answer each differing node with its children, or its few lists' digests."""
        if msg.epoch != self.membership.epoch:  # Rule 13: agree on the members first
            return [Send(peer, self._membership_message())]
        if peer not in self._trees:
            return []  # a server that left, at this epoch: nothing to compare
        self._refresh()
        tree = self._peer_tree(peer, msg.kind)
        if tree is None:
            return []
        deeper: dict[str, str] = {}
        leaves: list[str] = []
        for prefix, theirs in sorted(msg.nodes.items()):
            if node_hex(tree.node(prefix)) == theirs:
                continue
            if tree.population(prefix) <= SMALL_NODE or len(prefix) >= MAX_DEPTH:
                leaves.append(prefix)
            elif len(deeper) + 16 <= MAX_TREE_NODES:
                kids = tree.children(prefix)
                for digit in "0123456789abcdef":
                    deeper[prefix + digit] = node_hex(kids.get(prefix + digit, 0))
        out: list[Effect] = []
        if deeper:
            out.append(Send(peer, AeTree(self.server_id, msg.round, deeper, self.membership.epoch)))
        out.extend(self._leaves(peer, tree, msg.round, leaves))
        return out

    def _leaves(self, peer: str, tree: HashTree, round_: int, prefixes: list[str]) -> list[Effect]:
        """AeLeaves for ``prefixes`` of ``tree``, at most :data:`MAX_AE_LISTS` digests
        each."""
        out: list[Effect] = []
        batch: list[str] = []
        digests: dict[str, str] = {}
        for prefix in prefixes:
            under = [k for k in tree.lists_under(prefix) if self._shares(peer, k)]
            if batch and (len(digests) + len(under) > MAX_AE_LISTS or len(batch) >= 256):
                out.append(Send(peer, AeLeaves(self.server_id, round_, tuple(batch), digests)))
                batch, digests = [], {}
                if len(out) >= MAX_AE_MESSAGES:
                    return out
            batch.append(prefix)
            for k in under[:MAX_AE_LISTS]:
                digest = self.digest(k)
                if digest:
                    digests[k] = digest
        if batch:
            out.append(Send(peer, AeLeaves(self.server_id, round_, tuple(batch), digests)))
        return out

    def _on_leaves(self, peer: str, msg: AeLeaves) -> list[Effect]:
        """Answer the lists under ``msg.prefixes`` whose digests differ with contexts."""
        self._refresh()
        tree = self._peer_tree(peer, msg.kind)
        if tree is None:
            return []
        prefixes = msg.prefixes
        names: set[str] = set()
        for prefix in prefixes:
            names.update(tree.lists_under(prefix))
        names.update(k for k in msg.digests if key_of(k).startswith(prefixes))
        differing = [
            k
            for k in sorted(names)
            if self._shares(peer, k) and msg.digests.get(k) != self._digests.get(k)
        ]
        return [
            Send(peer, AeContexts(self.server_id, msg.round, {k: self._context(k) for k in part}))
            for part in _chunks(differing)
        ]

    def _missing(
        self, peer: str, contexts: Mapping[str, Any], what: str
    ) -> dict[str, EncodedState]:
        deltas: dict[str, EncodedState] = {}
        for list_id, encoded in contexts.items():
            if not self._shares(peer, list_id):
                continue
            state = self._get(list_id)
            if state is not None:
                ctx = self._decode_context(encoded, f"{what}[{list_id}]")
                deltas[list_id] = missing_for(state, ctx).to_dict()
        return deltas

    def _on_contexts(self, peer: str, msg: AeContexts) -> list[Effect]:
        deltas = self._missing(peer, msg.contexts, "ae_contexts.contexts")
        mine = {k: self._context(k) for k in msg.contexts if self._shares(peer, k)}
        return [Send(peer, AeDeltas(self.server_id, msg.round, deltas, mine))]

    def _on_deltas(self, peer: str, msg: AeDeltas) -> list[Effect]:
        out: list[Effect] = []
        decoded = [
            (k, self._decode_state(v, f"ae_deltas.deltas[{k}]"))
            for k, v in msg.deltas.items()
            if self._holds(k)
        ]
        out.extend(w for k, d in decoded if (w := self._apply(k, d, small=False)) is not None)
        if msg.contexts:
            deltas = self._missing(peer, msg.contexts, "ae_deltas.contexts")
            if deltas:
                out.append(Send(peer, AeDeltas(self.server_id, msg.round, deltas, {})))
        return out


def _chunks(names: Iterable[str]) -> list[list[str]]:
    """``names`` in parts of at most :data:`MAX_AE_LISTS`, at most
    :data:`MAX_AE_MESSAGES` parts (the rest waits for the next round)."""
    out: list[list[str]] = []
    part: list[str] = []
    for name in names:
        part.append(name)
        if len(part) == MAX_AE_LISTS:
            out.append(part)
            part = []
            if len(out) == MAX_AE_MESSAGES:
                return out
    if part:
        out.append(part)
    return out
