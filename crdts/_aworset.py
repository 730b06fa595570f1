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

# An element's dots: usually one dot, a tuple of dots while concurrent adds coexist (told
# apart by their first item: a dot's is its replica id, a string). Keeping a
# single dot unboxed saves a container per element.
_Dots = RawDot | tuple[RawDot, ...]

# Deltas are built with object.__new__ and their fields set directly: the constructors
# would allocate empty stores and contexts only for them to be replaced.
_new = object.__new__

# A light delta (see AWORSet): the dot added and its element (None, None for a removal),
# and the dots the change removed.
_Light = tuple[RawDot | None, Any, tuple[RawDot, ...]]


def _as_dots(dots: _Dots) -> tuple[RawDot, ...]:
    """An element's dots as a tuple of dots."""
    if type(dots[0]) is str:
        return (dots,)
    return cast(tuple[RawDot, ...], dots)


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

    __slots__ = ("_index", "_light")
    type_name = "AWORSet"
    _INDEXED: ClassVar[bool] = True

    def _index_rebuild(self) -> None:
        self._index: dict[Any, _Dots] = {}
        for dot, element in self._entries.items():
            self._index_insert(dot, element)

    def _index_copy_from(self, other: AWORSet) -> None:
        self._index = dict(other._index)

    def _index_insert(self, dot: RawDot, element: Any) -> None:
        cur = self._index.setdefault(element, dot)
        if cur is not dot:  # the element already had dots
            self._index_also(element, cur, dot)

    def _index_also(self, element: Any, cur: _Dots, dot: RawDot) -> None:
        """Record ``dot`` as one more dot of ``element``, which has dots ``cur``."""
        if type(cur[0]) is str:
            self._index[element] = (cur, dot)
        else:
            self._index[element] = (*_as_dots(cur), dot)

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
        for dot, element in added.items():
            cur = setdefault(element, dot)
            if cur is not dot:  # the element already had dots
                index[element] = (cur, dot) if type(cur[0]) is str else (*cur, dot)

    def _index_delete(self, dot: RawDot, element: Any) -> None:
        index = self._index
        cur = index[element]
        if type(cur[0]) is str:
            del index[element]
        else:
            rest = tuple(d for d in _as_dots(cur) if d != dot)
            index[element] = rest[0] if len(rest) == 1 else rest

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
            self._index_also(element, cur, dot)
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
            return self._readd(replica, element, index[element])
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

    def _readd(self, replica: str, element: Any, old: _Dots) -> AWORSet:
        """Add ``element``, present with dots ``old``: a new dot replaces the old ones."""
        counter = self._ctx._issue(replica)
        dot = (replica, counter)
        entries = self._entries
        old_dots = _as_dots(old)
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
        gone = _as_dots(old)  # several dots where concurrent adds left them
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
        cur = self._index.get(element)
        if cur is None:
            return frozenset()
        return frozenset(_as_dots(cur))

    def __repr__(self) -> str:
        shown = sorted(map(repr, self._index))
        return f"AWORSet({{{', '.join(shown)}}})"


_LightAWORSet: type[AWORSet] = light_type(
    AWORSet,
    {
        "_LAZY_FIELDS": frozenset({"_entries", "_ctx", "_index"}),
        "_materialize": AWORSet._materialize_light,
        "copy": AWORSet._copy_light,
    },
)
