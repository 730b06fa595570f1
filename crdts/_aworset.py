"""The add-wins observed-remove set on the dot kernel.

Each add creates a fresh dot for the element and drops the element's older dots (which the
adding replica has observed). A remove drops exactly the dots it has observed: a
concurrent add carries a dot the remove never saw, so the add wins.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from crdts._codec import check_element, decode_element, encode_element
from crdts._dots import DotContext, RawDot, check_replica
from crdts._kernel import Causal

__all__ = ["AWORSet"]

# An element's dots: usually one dot, a frozenset while concurrent adds coexist. Keeping a
# single dot unboxed saves a container per element.
_Dots = RawDot | frozenset[RawDot]

# Deltas are built with object.__new__ and their fields set directly: the constructors
# would allocate empty stores and contexts only for them to be replaced.
_new = object.__new__


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
    """

    __slots__ = ("_index",)
    type_name = "AWORSet"
    _INDEXED: ClassVar[bool] = True

    def _index_rebuild(self) -> None:
        self._index: dict[Any, _Dots] = {}
        for dot, element in self._entries.items():
            self._index_insert(dot, element)

    def _index_copy_from(self, other: AWORSet) -> None:
        self._index = dict(other._index)

    def _index_insert(self, dot: RawDot, element: Any) -> None:
        index = self._index
        cur = index.get(element)
        if cur is None:
            index[element] = dot
        elif isinstance(cur, frozenset):
            index[element] = cur | {dot}
        else:
            index[element] = frozenset((cur, dot))

    def _index_insert_all(self, dots: list[RawDot], store: Mapping[RawDot, Any]) -> None:
        # What _index_insert does for each dot, without a call per dot (joins).
        setdefault = self._index.setdefault
        for dot in dots:
            element = store[dot]
            if setdefault(element, dot) is not dot:  # the element already had dots
                self._index_insert(dot, element)

    def _index_delete(self, dot: RawDot, element: Any) -> None:
        index = self._index
        cur = index[element]
        if isinstance(cur, frozenset):
            rest = cur - {dot}
            index[element] = next(iter(rest)) if len(rest) == 1 else rest
        else:
            del index[element]

    @classmethod
    def _encode_payload(cls, payload: Any) -> Any:
        return encode_element(payload)

    @classmethod
    def _decode_payload(cls, data: Any, path: str) -> Any:
        return decode_element(data, path)

    # -- mutators -----------------------------------------------------------------------

    def add(self, replica: str, element: Any) -> AWORSet:
        """Add ``element`` on behalf of ``replica``; return the delta.

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
        counter = self._ctx._issue(replica)
        dot = (replica, counter)
        self._entries[dot] = element
        index[element] = dot
        # The hottest path (bench/): the delta is built field by field, see _new.
        delta = _new(AWORSet)
        delta._entries = {dot: element}
        delta._ctx = _one_dot_context(dot)
        delta._index = {element: dot}
        return delta

    def _readd(self, replica: str, element: Any, old: _Dots) -> AWORSet:
        """Add ``element``, present with dots ``old``: a new dot replaces the old ones."""
        counter = self._ctx._issue(replica)
        dot = (replica, counter)
        entries = self._entries
        old_dots: tuple[RawDot, ...] = tuple(old) if isinstance(old, frozenset) else (old,)
        for d in old_dots:
            del entries[d]
        entries[dot] = element
        self._index[element] = dot
        return self._make({dot: element}, DotContext._of_raw_dots((dot, *old_dots)))

    def remove(self, replica: str, element: Any) -> AWORSet:
        """Remove ``element`` as this replica has observed it; return the delta.

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
        if isinstance(old, frozenset):  # concurrent adds left several dots
            for d in old:
                del entries[d]
            return self._make({}, DotContext._of_raw_dots(old))
        # One dot, the usual case: drop it and build the delta directly (see _new).
        del entries[old]
        delta = _new(AWORSet)
        delta._entries = {}
        delta._ctx = _one_dot_context(old)
        delta._index = {}
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
        return cur if isinstance(cur, frozenset) else frozenset((cur,))

    def __repr__(self) -> str:
        shown = sorted(map(repr, self._index))
        return f"AWORSet({{{', '.join(shown)}}})"
