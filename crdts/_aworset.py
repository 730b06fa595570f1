"""The add-wins observed-remove set on the dot kernel.

Each add creates a fresh dot for the element and drops the element's older dots (which the
adding replica has observed). A remove drops exactly the dots it has observed: a
concurrent add carries a dot the remove never saw, so the add wins.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, cast

from crdts._base import light_type
from crdts._codec import MAX_INT, check_element, decode_element, encode_element
from crdts._dots import DotContext, RawDot, check_replica
from crdts._kernel import Causal

__all__ = ["AWORSet"]

# An element's dots past its first: one dot, or a tuple of dots where there are several
# (told apart by their first item: a dot's is its replica id, a string).
_Extra = RawDot | tuple[RawDot, ...]

# Deltas are built with object.__new__ and their fields set directly: the constructors
# would allocate empty stores and contexts only for them to be replaced.
_new = object.__new__

# A light delta (see AWORSet): the dot added and its element (None, None for a removal),
# and the dots removed.
_Light = tuple[RawDot | None, Any, tuple[RawDot, ...]]


def _as_dots(extra: _Extra) -> tuple[RawDot, ...]:
    """An element's extra dots as a tuple of dots."""
    if type(extra[0]) is str:
        return (extra,)
    return cast(tuple[RawDot, ...], extra)


def _with(extra: _Extra | None, dot: RawDot) -> _Extra:
    """The extra dots ``extra`` (or none) and ``dot``."""
    if extra is None:
        return dot
    if type(extra[0]) is str:
        return (extra, dot)
    return (*cast(tuple[RawDot, ...], extra), dot)


def _index_singles(
    index: dict[Any, RawDot], o_index: Mapping[Any, RawDot], *, differ: bool
) -> dict[Any, _Extra]:
    """Put the elements of ``o_index`` in ``index``, where every element has one dot on
    either side, each dot kept: return, for the elements held on both sides with
    different dots, the dot of ``o_index`` (the element's second). ``differ`` says that
    each element held on both sides has different dots (no dot is in both)."""
    also: dict[Any, _Extra] = {}
    if differ:
        for x, d in o_index.items():
            if x in index:
                also[x] = d
            else:
                index[x] = d
        return also
    for x, d in o_index.items():
        cur = index.get(x)
        if cur is None:
            index[x] = d
        elif cur != d:
            also[x] = d
    return also


def _one_dot_context(dot: RawDot) -> DotContext:
    """The (compact) context holding exactly ``dot``."""
    replica, counter = dot
    ctx = _new(DotContext)
    if counter == 1:
        ctx._vv = {replica: 1}
        ctx._cloud = {}
    else:
        ctx._vv = {}
        ctx._cloud = {replica: {counter}}
    return ctx


class AWORSet(Causal):
    """An add-wins observed-remove set.

    >>> a, b = AWORSet(), AWORSet()
    >>> _ = a.add("a", "milk"); b.join(a)
    >>> _ = a.remove("a", "milk"); _ = b.add("b", "milk")   # concurrent
    >>> "milk" in (a | b)
    True

    Light deltas: :meth:`add` and :meth:`remove` return a light delta (see
    :class:`crdts._base.LightDelta`) that holds only the dot added, its element and the
    dots removed. Its store, context and index are built the first time anything reads
    them, so it is the same value, with the same encoding and laws, as the full delta it
    stands for; :meth:`join` reads the light fields directly, and ``copy()`` keeps them.
    """

    __slots__ = ("_also", "_index", "_light")
    type_name = "AWORSet"
    _INDEXED: ClassVar[bool] = True

    # The element index: ``_index`` maps each element to one of its dots, and ``_also``
    # maps the elements that have more dots (concurrent adds) to the others. Extra dots
    # are existing dot tuples, so a join that brings an element a second dot creates no
    # object for it: the garbage collector has nothing new to track.
    _index: dict[Any, RawDot]
    _also: dict[Any, _Extra]

    def _index_rebuild(self) -> None:
        self._index = {}
        self._also = {}
        for dot, element in self._entries.items():
            self._index_insert(dot, element)

    def _index_copy_from(self, other: AWORSet) -> None:
        self._index = dict(other._index)
        self._also = dict(other._also)

    def _index_insert(self, dot: RawDot, element: Any) -> None:
        cur = self._index.setdefault(element, dot)
        if cur is not dot:  # the element already had dots
            self._index_also(element, dot)

    def _index_also(self, element: Any, dot: RawDot) -> None:
        """Record ``dot`` as one more dot of ``element``, which has dots."""
        also = self._also
        also[element] = _with(also.get(element), dot)

    def _index_insert_items(self, added: Mapping[RawDot, Any]) -> None:
        # What _index_insert does for each entry, without a call per entry (joins).
        index = self._index
        elements = added.values()
        if index.keys().isdisjoint(elements):
            # Elements new here, the usual case of a join: one update in C, unless an
            # element arrived with two dots (then index them again, one at a time).
            before = len(index)
            index.update(zip(elements, added, strict=True))
            if len(index) == before + len(added):
                return
            for element in elements:
                index.pop(element, None)
        setdefault = index.setdefault
        also = self._also
        for dot, element in added.items():
            cur = setdefault(element, dot)
            if cur is not dot:  # the element already had dots
                also[element] = _with(also.get(element), dot)

    def _index_delete(self, dot: RawDot, element: Any) -> None:
        index = self._index
        also = self._also
        extra = also.pop(element, None) if also else None
        if extra is None:
            del index[element]
            return
        rest = tuple(d for d in (index[element], *_as_dots(extra)) if d != dot)
        index[element] = rest[0]
        if len(rest) > 1:
            also[element] = rest[1] if len(rest) == 2 else rest[1:]

    def _dots(self, element: Any) -> tuple[RawDot, ...]:
        """The dots of ``element``, which is present."""
        first = self._index[element]
        also = self._also
        extra = also.get(element) if also else None
        return (first,) if extra is None else (first, *_as_dots(extra))

    def _take_all(self, other: AWORSet, *, all_new: bool) -> None:
        # Rule 5 of the kernel: the store takes other's whole store in one update, and
        # the index other's elements, each keeping the union of its dots on both sides.
        # How many dots were new here tells the index merge all it needs (all_new too).
        entries = self._entries
        before = len(entries)
        entries.update(other._entries)
        added = len(entries) - before
        if added:
            self._index_union(other, added)

    def _index_union(self, other: AWORSet, added: int) -> None:
        """Index other's elements: every dot other holds is now in the store, ``added``
        of them new here (so ``added`` is at least 1)."""
        index = self._index
        o_index = other._index
        if self._also or other._also:
            self._index_union_dots(other)
            return
        # Every element has one dot on either side, so a dot of other new here belongs
        # to an element only other holds, or to one both hold with different dots
        # (which keeps both). Counting tells the cases apart: where every dot of other
        # is new, each element both hold has two dots; where as many are new as other
        # has elements we lack, none has (all in C); otherwise each is compared.
        if added != len(o_index):
            both = len(index.keys() & o_index.keys())
            if added == len(o_index) - both:
                index.update(o_index)
                return
        also = _index_singles(index, o_index, differ=added == len(o_index))
        if also:
            self._also = also  # it was empty

    def _index_union_dots(self, other: AWORSet) -> None:
        """:meth:`_index_union` where some element has several dots on either side."""
        index = self._index
        also = self._also
        o_also = other._also
        for x, first in other._index.items():
            extra = o_also.get(x)
            cur = index.get(x)
            if cur is None:
                index[x] = first
                if extra is not None:
                    also[x] = extra
                continue
            theirs = (first,) if extra is None else (first, *_as_dots(extra))
            mine = self._dots(x)
            new = tuple(d for d in theirs if d not in mine)
            if new:
                dots = mine[1:] + new
                also[x] = dots[0] if len(dots) == 1 else dots

    # -- light deltas -------------------------------------------------------------------

    _light: _Light  # set only in a light delta

    def _materialize_light(self) -> None:
        """Build the store, context and index of a light delta from ``_light``."""
        dot, element, gone = self._light
        if dot is None:
            self._entries = {}
            self._index = {}
            dots = gone
        else:
            self._entries = {dot: element}
            self._index = {element: dot}
            dots = (dot, *gone)
        self._also = {}
        self._ctx = _one_dot_context(dots[0]) if len(dots) == 1 else DotContext._of_raw_dots(dots)

    def _copy_light(self) -> AWORSet:
        c = _new(_LightAWORSet)
        c._light = self._light  # immutable: the copy may share it
        return c

    def join(self, other: AWORSet) -> None:
        """Join ``other`` into this state; a light delta costs a few dictionary steps."""
        if type(other) is not _LightAWORSet:
            super().join(other)
            return
        light = other._light
        dot, element, gone = light
        entries = self._entries
        ctx = self._ctx
        vv = ctx._vv
        cloud = ctx._cloud
        # The dots removed: drop those held here (held means seen), record the others.
        for d in gone:
            if d in entries:
                self._index_delete(d, entries.pop(d))
            else:
                r, c = d
                if c > vv.get(r, 0) and (not cloud or c not in cloud.get(r, ())):
                    ctx._add(r, c)
        if dot is None:
            return
        # The dot added: new here unless seen (then it is held, or was removed here).
        r, c = dot
        n = vv.get(r, 0)
        if c <= n or (cloud and c in cloud.get(r, ())):
            return
        entries[dot] = element
        cur = self._index.setdefault(element, dot)
        if cur is not dot:
            self._index_also(element, dot)
        if c == n + 1 and r not in cloud:
            vv[r] = c
        else:
            ctx._add(r, c)

    @classmethod
    def _encode_payload(cls, payload: Any) -> Any:
        return encode_element(payload)

    @classmethod
    def _decode_payload(cls, data: Any, path: str) -> Any:
        return decode_element(data, path)

    # -- mutators -----------------------------------------------------------------------

    def add(self, replica: str, element: Any) -> AWORSet:
        """Add ``element`` on behalf of ``replica``; return the delta (a light one).

        Raises:
            InvalidArgument: bad replica id. InvalidElement: element of a type the
            encoding cannot carry. Nothing changed in either case.
        """
        # Replica ids and elements are usually strings: check those inline and leave
        # everything else to the full checks, which raise with a clear message.
        if type(replica) is not str or not replica:
            check_replica(replica)
        if type(element) is not str:
            check_element(element)
        index = self._index
        if element in index:
            return self._readd(replica, element)
        # The hottest path (bench/): DotContext._issue inline, and a light delta.
        ctx = self._ctx
        vv = ctx._vv
        counter = vv.get(replica, 0) + 1
        if counter > MAX_INT or replica in ctx._cloud:
            counter = ctx._issue(replica)
        else:
            vv[replica] = counter
        dot = (replica, counter)
        self._entries[dot] = element
        index[element] = dot
        delta = _new(_LightAWORSet)
        delta._light = (dot, element, ())
        return delta

    def _readd(self, replica: str, element: Any) -> AWORSet:
        """Add ``element``, which is present: a new dot replaces its dots."""
        counter = self._ctx._issue(replica)
        dot = (replica, counter)
        entries = self._entries
        old_dots = self._dots(element)
        if len(old_dots) > 1:
            del self._also[element]
        for d in old_dots:
            del entries[d]
        entries[dot] = element
        self._index[element] = dot
        delta = _new(_LightAWORSet)
        delta._light = (dot, element, old_dots)
        return delta

    def remove(self, replica: str, element: Any) -> AWORSet:
        """Remove ``element`` as this replica has observed it; return the delta (a light
        one).

        Removing an absent element is allowed and returns the bottom delta.

        Raises:
            InvalidArgument: bad replica id. InvalidElement: element of a type the
            encoding cannot carry. Nothing changed in either case.
        """
        # The same inline checks as in add.
        if type(replica) is not str or not replica:
            check_replica(replica)
        if type(element) is not str:
            check_element(element)
        old = self._index.pop(element, None)
        if old is None:
            return AWORSet()
        entries = self._entries
        also = self._also
        extra = also.pop(element, None) if also else None
        # Several dots where concurrent adds left them.
        gone = (old,) if extra is None else (old, *_as_dots(extra))
        for d in gone:
            del entries[d]
        delta = _new(_LightAWORSet)
        delta._light = (None, None, gone)
        return delta

    def clear(self, replica: str) -> AWORSet:
        """Remove every element observed here; return the delta.

        Raises:
            InvalidArgument: bad replica id; nothing changed.
        """
        return self._reset_observed(replica)

    # -- reading ------------------------------------------------------------------------

    @property
    def value(self) -> frozenset[Any]:
        """The elements, as a frozenset."""
        return frozenset(self._index)

    def __contains__(self, element: object) -> bool:
        return element in self._index

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(tuple(self._index))

    def __bool__(self) -> bool:
        return bool(self._index)

    def dots_of(self, element: Any) -> frozenset[RawDot]:
        """The dots currently supporting ``element`` (empty if absent)."""
        if element not in self._index:
            return frozenset()
        return frozenset(self._dots(element))

    def __repr__(self) -> str:
        shown = sorted(map(repr, self._index))
        return f"AWORSet({{{', '.join(shown)}}})"


_LightAWORSet: type[AWORSet] = light_type(
    AWORSet,
    {
        "_LAZY_FIELDS": frozenset({"_entries", "_ctx", "_index", "_also"}),
        "_materialize": AWORSet._materialize_light,
        "copy": AWORSet._copy_light,
    },
)
