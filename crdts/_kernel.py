"""The dot kernel: one dot store plus one causal context, and the causal join.

Theory of operation
-------------------
A causal state is a pair ``(store, ctx)``. The store maps dots to payloads; the context
is the set of dots the replica has seen (:class:`~crdts.DotContext`).

Rule 1 (stores are covered). Every dot in the store is in the context.

Rule 2 (payloads are immutable). A dot's payload is fixed when the dot is created; to
change a value a replica creates a new dot and drops the old ones. So two states that both
hold a dot hold the same payload, and the join never merges payloads.

Rule 3 (the causal join). The join of ``(s1, c1)`` and ``(s2, c2)`` keeps a dot if both
stores hold it, or if one store holds it and the other context has not seen it; its
context is ``c1 | c2``. A dot that one side has seen but no longer holds was removed
there, and stays removed. This is commutative, associative and idempotent.

Rule 4 (cost follows the delta). Joining ``other`` into ``self`` visits ``other``'s
entries, plus the entries of ``self`` that ``other``'s context may have removed. The
latter are found by walking whichever is smaller: ``self``'s store, or the dots of
``other``'s context. A delta's context holds only the dots it touches, so joining a
one-element delta costs the same whatever the size of ``self``.

Rule 5 (nothing to decide). In a join, a state that holds every dot it has seen (its
store is its whole context: it removed nothing) keeps every dot the other side holds,
since each is held there too or unseen there. So where ``self`` holds every dot it has
seen, or where the two contexts share no replica (neither side has seen a dot of the
other), no dot of ``other`` needs a context test: the join adds ``other``'s store whole.
Likewise nothing of ``self`` is removed where ``other`` holds every dot it has seen, or
shares no replica with it; where both hold, the join is the union of the two stores.

Every causal type (sets, flags, registers, causal counters, maps) is this kernel with a
payload type and, where it helps, an index over payloads. Maps embed values by tagging
each payload with its key (``(key, inner_payload)``): since dots are unique, the join of
the tagged store equals the key-by-key join of embedded stores sharing one context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from crdts._base import Crdt, Stats
from crdts._codec import FORMAT_VERSION, check_header, describe
from crdts._context_view import ContextView
from crdts._dots import DotContext, RawDot, check_replica, decode_dot
from crdts.errors import DecodeError

__all__ = ["ENTRY_COST_IN_DOTS", "Causal"]

ENTRY_COST_IN_DOTS = 4
"""How many cloud dots one shipped entry is counted as, when :meth:`Causal.delta_for`
chooses between leaving seen dots out of a delta's context and shipping their entries
(an entry carries a replica id, a counter and a payload; a cloud dot, one integer)."""


class Causal(Crdt):
    """Base of every causal type: a dot store ``{dot: payload}`` and a :class:`DotContext`.

    Subclasses set ``type_name``, encode and decode payloads, and may keep an index over
    the store by overriding :meth:`_index_rebuild`, :meth:`_index_insert` and
    :meth:`_index_delete` (and setting ``_INDEXED = True``); an index that can take
    another state's index whole overrides :meth:`_take_all` (Rule 5).
    """

    __slots__ = ("_ctx", "_entries")
    _INDEXED: ClassVar[bool] = False

    def __init__(self) -> None:
        self._entries: dict[RawDot, Any] = {}
        self._ctx = DotContext()
        if self._INDEXED:
            self._index_rebuild()

    @classmethod
    def _make(cls, entries: dict[RawDot, Any], ctx: DotContext) -> Self:
        """Wrap a valid store and context without copying (internal)."""
        s = cls.__new__(cls)
        s._entries = entries
        s._ctx = ctx
        if cls._INDEXED:
            s._index_rebuild()
        return s

    # -- index hooks --------------------------------------------------------------------

    def _index_rebuild(self) -> None:
        """Build the index from ``_entries`` (called when the store is set wholesale)."""

    def _index_insert(self, dot: RawDot, payload: Any) -> None:
        """``dot`` with ``payload`` was added to the store."""

    def _index_delete(self, dot: RawDot, payload: Any) -> None:
        """``dot`` with ``payload`` was removed from the store."""

    def _index_insert_items(self, added: Mapping[RawDot, Any]) -> None:
        """The entries of ``added`` were added to the store (by a join); by default, one
        :meth:`_index_insert` each."""
        insert = self._index_insert
        for d, payload in added.items():
            insert(d, payload)

    # -- payloads -----------------------------------------------------------------------

    @classmethod
    def _encode_payload(cls, payload: Any) -> Any:
        return payload

    @classmethod
    def _decode_payload(cls, data: Any, path: str) -> Any:
        if data is not None:
            raise DecodeError(f"{path}: expected null, got {describe(data)}")
        return None

    # -- the contract -------------------------------------------------------------------

    @property
    def context(self) -> ContextView:
        """The causal context, as a read-only view that follows this state (no copy, so
        reading it costs the same whatever its size). ``.copy()`` gives a
        :class:`DotContext` of your own; the view's ``add``/``join``/``compact`` raise
        :class:`~crdts.errors.ReadOnlyError`."""
        return ContextView(self._ctx)

    def join(self, other: Self) -> None:
        """Join ``other`` into this state (Rule 3), at a cost that follows ``other`` (Rule 4)."""
        if type(other) is not type(self):
            self._check_same_type(other)
        entries = self._entries
        o_entries = other._entries
        o_ctx = other._ctx
        ctx = self._ctx

        # Where the contexts share no replica, neither side has seen a dot of the other:
        # the join keeps both stores whole (Rule 5), and neither walk below runs.
        shared = ctx._shares_replica(o_ctx)
        if not shared:
            self._take_all(other, all_new=True)
            ctx.join(o_ctx)
            return
        holds_all_seen = ctx.dot_count() == len(entries)  # before the walk removes any

        # Entries other has seen but no longer holds were removed there. The candidates
        # come from the smaller side: other's context, or our store (Rule 4). There are
        # none where other holds every dot it has seen (it removed nothing: its store is
        # its whole context, Rule 1); then the walk is skipped.
        if entries:
            seen_there = o_ctx.dot_count()
            if seen_there == len(o_entries):
                removed = []
            elif seen_there < len(entries):
                removed = o_ctx._removed_from(entries, o_entries)
            else:
                removed = o_ctx._seen_of(entries, skip=o_entries, of=ctx)
            if removed:
                self._remove_dots(removed)

        # Entries other holds that we have not seen are new here (and, by Rule 1, not
        # held here either). Where we hold every dot we have seen, that is every entry
        # other holds that we lack (Rule 5). Otherwise the new entries are collected in a
        # dict, so that hashing a dot tuple, which Python does on every lookup, happens
        # once per new entry: the store's update and the index read the dict's stored
        # hashes and items.
        if holds_all_seen:
            self._take_all(other, all_new=False)
        else:
            fresh = ctx._unseen_entries(o_entries, of=o_ctx)
            if fresh:
                entries.update(fresh)
                if self._INDEXED:
                    self._index_insert_items(fresh)
        ctx.join(o_ctx)

    def _take_all(self, other: Self, *, all_new: bool) -> None:
        """Add every entry of ``other``'s store, each of which is either held here already
        or new here (Rule 5): ``all_new`` if none is held here. Only the index needs
        to tell the two apart: the store takes other's whole store in one update (a
        dot held on both sides has the same payload, Rule 2)."""
        entries = self._entries
        o_entries = other._entries
        if not self._INDEXED:
            entries.update(o_entries)
            return
        fresh = o_entries if all_new else {d: p for d, p in o_entries.items() if d not in entries}
        if fresh:
            entries.update(fresh)
            self._index_insert_items(fresh)

    def _remove_dots(self, dots: list[RawDot]) -> None:
        """Drop ``dots`` (which the store holds) from the store and the index."""
        entries = self._entries
        if self._INDEXED:
            for d in dots:
                self._index_delete(d, entries.pop(d))
        else:
            for d in dots:
                del entries[d]

    def __le__(self, other: Self) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        ctx = self._ctx
        if not ctx <= other._ctx:
            return False
        mine = self._entries
        theirs = other._entries
        # Everything other holds that we have seen, we must still hold. The dots to test
        # come from the smaller side (Rule 4): other's store, or our context (a delta's).
        if ctx.dot_count() < len(theirs):
            return all(d in mine or d not in theirs for d in ctx._raw_dots())
        seen = ctx.contains
        return all(d in mine or not seen(d) for d in theirs)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Causal)
        return self._ctx == other._ctx and self._entries == other._entries

    def copy(self) -> Self:
        s = type(self).__new__(type(self))
        s._entries = dict(self._entries)
        s._ctx = self._ctx.copy()
        if self._INDEXED:
            s._index_copy_from(self)
        return s

    def _index_copy_from(self, other: Self) -> None:
        """Copy ``other``'s index (payloads are immutable); default: rebuild."""
        self._index_rebuild()

    def delta_for(self, peer: DotContext) -> Self:
        """The delta a peer whose context is ``peer`` needs to catch up with this state.

        For any state ``p`` with context ``peer`` (reached by the same history),
        ``p | self.delta_for(peer) == p | self``. The delta holds the entries whose dots
        the peer has not seen, and a context of every dot seen here except the entries
        held here that the peer has already seen (those must not be removed there).

        Leaving a dot out of the context splits its replica's version vector: every later
        dot of that replica moves to the cloud. Where that would cost more than shipping
        the replica's seen entries themselves (an entry counted as
        ``ENTRY_COST_IN_DOTS`` cloud dots), the delta carries those entries instead and
        keeps the vector whole; the join keeps or drops them exactly as the peer's state
        does. So the delta's cloud grows by at most that many dots per entry held here,
        whatever the counters in the context. A peer that has seen everything
        gets no entry it lacks, and no entry at all where leaving dots out is cheap.
        """
        seen_by_peer = peer.contains
        fresh: dict[RawDot, Any] = {}
        kept: dict[str, list[int]] = {}
        for d, payload in self._entries.items():
            if seen_by_peer(d):
                r, c = d
                cs = kept.get(r)
                if cs is None:
                    kept[r] = [c]
                else:
                    cs.append(c)
            else:
                fresh[d] = payload
        holes: set[RawDot] = set()
        ctx = self._ctx
        entries = self._entries
        for r, cs in kept.items():
            if ctx._holes_cost(r, cs) <= ENTRY_COST_IN_DOTS * len(cs):
                holes.update((r, c) for c in cs)
            else:
                for c in cs:
                    fresh[(r, c)] = entries[(r, c)]
        if not holes:
            return self._make(fresh, ctx.copy())
        return self._make(fresh, ctx._without(holes))

    def _reset_observed(self, replica: str) -> Self:
        """Remove every dot this state holds (an observed reset of all of it); return the
        delta. What other replicas did concurrently, unseen here, survives the join.

        Raises:
            InvalidArgument: bad replica id; nothing changed.
        """
        check_replica(replica)
        return self._delta_removing(list(self._entries))

    def _delta_removing(self, dots: list[RawDot]) -> Self:
        """Remove ``dots`` from the store; return the delta that records the removal."""
        self._remove_dots(dots)
        return self._make({}, DotContext._of_raw_dots(dots))

    def to_dict(self) -> dict[str, Any]:
        enc = self._encode_payload
        return {
            "type": self.type_name,
            "v": FORMAT_VERSION,
            "ctx": self._ctx.to_dict(),
            "entries": [[r, c, enc(self._entries[(r, c)])] for r, c in sorted(self._entries)],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        d = check_header(data, cls.type_name, frozenset({"ctx", "entries"}))
        name = cls.type_name
        ctx = DotContext.from_dict(d["ctx"], f"{name}.ctx")
        items = d["entries"]
        if not isinstance(items, list):
            raise DecodeError(f"{name}.entries: expected a list, got {type(items).__name__}")
        entries: dict[RawDot, Any] = {}
        for i, item in enumerate(items):
            path = f"{name}.entries[{i}]"
            if not isinstance(item, (list, tuple)) or len(item) != 3:
                raise DecodeError(
                    f"{path}: expected [replica, counter, payload], got {describe(item)}"
                )
            dot = decode_dot(item[:2], path)
            if dot in entries:
                raise DecodeError(f"{path}: duplicate dot {describe(list(dot))}")
            if not ctx.contains(dot):
                raise DecodeError(f"{path}: dot {describe(list(dot))} is not in the context")
            entries[dot] = cls._decode_payload(item[2], f"{path}[2]")
        state = cls._make(entries, ctx)
        state._check_decoded(name)
        return state

    def _check_decoded(self, path: str) -> None:
        """Check invariants across entries after decoding (raise DecodeError)."""

    def stats(self) -> Stats:
        return Stats(
            replicas=len(self._ctx.replicas),
            entries=len(self._entries),
            cloud=self._ctx.cloud_size(),
            encoded_bytes=len(self.to_json()),
        )
