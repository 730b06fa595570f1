"""Composition on the dot kernel: maps and records of embedded causal CRDTs.

Theory of operation
-------------------
An embedding is one dot kernel whose payloads are tagged: ``{dot: (key, inner_payload)}``
plus one causal context shared by every embedded value.

Rule 1 (tagging is the join). Dots are unique, so a dot belongs to exactly one key, and
the kernel's join of the tagged store is the key-by-key join of embedded stores that
share the context. Nesting (a map of maps) is tagging again: ``(k1, (k2, payload))``.

Rule 2 (live views). The index keeps, per key, an embedded state object whose store is
that key's dots (untagged) and whose context *is* the map's context object. Inserting or
deleting a tagged dot updates that object (and, recursively, its own index), so reading
or mutating one key costs what the key holds, not what the map holds.

Rule 3 (mutating through a view). ``apply(replica, key, op, *args)`` calls the embedded
mutator ``op`` on the key's object. The mutator changes the object in place and advances
the shared context; the map mirrors the change in its own store (the delta's removed
dots go, its new dots are stored tagged) and returns the delta tagged with the key.
Mutators validate before changing anything, so a refused call changes nothing.

Rule 4 (a key is its dots). A key is present exactly while its embedded state holds a
dot. Removing a key is an observed reset: the delta's context holds the key's dots and the
delta holds no entries, so updates the remover did not see survive and everything it saw
is gone. An embedded value that returns to bottom leaves no entry, so removed keys never
leak memory; what remains is the context, which is one integer per replica once synced.

Rule 5 (folding). Causal counters fold consecutive changes into open dots (see
:mod:`crdts._ccounter`). The open set belongs to the object the replica mutates, here the
outermost map; it is handed down to the embedded object for each call. ``seal()`` on the
outer map seals every counter inside it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Self, cast

from crdts._aworset import AWORSet
from crdts._codec import check_element, decode_element, describe, encode_element
from crdts._dots import DotContext, RawDot, check_replica
from crdts._kernel import Causal
from crdts.errors import DecodeError, InvalidArgument

__all__ = ["ORMap", "Record", "mutators_of"]

_KNOWN_MUTATORS: dict[type, frozenset[str]] = {AWORSet: frozenset({"add", "remove", "clear"})}


def mutators_of(cls: type[Causal]) -> frozenset[str]:
    """The names of ``cls``'s mutators, which :meth:`ORMap.apply` may call.

    A causal type lists them in a ``mutators`` class attribute.
    """
    known = _KNOWN_MUTATORS.get(cls)
    if known is not None:
        return known
    names = getattr(cls, "mutators", None)
    if not isinstance(names, frozenset):
        raise InvalidArgument(f"{cls.__name__} does not list its mutators (a 'mutators' frozenset)")
    return names


def _check_embeddable(value_type: object) -> type[Causal]:
    if not isinstance(value_type, type) or not issubclass(value_type, Causal):
        raise InvalidArgument(
            f"an embedded value type must be a causal CRDT class (a subclass of Causal), "
            f"got {describe(value_type)}"
        )
    if value_type in (ORMap, Record):
        raise InvalidArgument(
            f"embed a concrete {value_type.__name__}: ORMap.of(T) or a Record subclass"
        )
    mutators_of(value_type)
    return value_type


class _Embedding(Causal):
    """A dot kernel whose payloads are ``(key, inner payload)``; the shared machinery of
    :class:`ORMap` and :class:`Record`."""

    __slots__ = ("_index", "_open")
    _INDEXED: ClassVar[bool] = True
    _FOLDS: ClassVar[bool] = True

    _index: dict[Any, Causal]
    _open: set[RawDot] | None

    # -- what subclasses say --------------------------------------------------------------

    @classmethod
    def _type_of(cls, key: Any) -> type[Causal]:
        """The embedded type under ``key`` (raise InvalidArgument for a bad key)."""
        raise NotImplementedError

    @classmethod
    def _encode_key(cls, key: Any) -> Any:
        return encode_element(key)

    @classmethod
    def _decode_key(cls, data: Any, path: str) -> Any:
        return decode_element(data, path)

    # -- payloads -------------------------------------------------------------------------

    @classmethod
    def _stored_type(cls, key: Any) -> type[Causal]:
        """The embedded type under ``key``, for a key already held (no checks)."""
        return cls._type_of(key)

    @classmethod
    def _encode_payload(cls, payload: Any) -> Any:
        key, inner = payload
        return [cls._encode_key(key), cls._stored_type(key)._encode_payload(inner)]

    @classmethod
    def _decode_payload(cls, data: Any, path: str) -> Any:
        if not isinstance(data, list) or len(data) != 2:
            raise DecodeError(f"{path}: expected [key, payload], got {describe(data)}")
        key = cls._decode_key(data[0], f"{path}[0]")
        try:
            inner_type = cls._type_of(key)
        except InvalidArgument as exc:
            raise DecodeError(f"{path}[0]: {exc}") from None
        return (key, inner_type._decode_payload(data[1], f"{path}[1]"))

    # -- the index of live embedded states (Rule 2) -----------------------------------------

    def _index_rebuild(self) -> None:
        self._index = {}
        insert = self._index_insert
        for dot, payload in self._entries.items():
            insert(dot, payload)

    def _index_insert(self, dot: RawDot, payload: Any) -> None:
        key, inner = payload
        sub = self._index.get(key)
        if sub is None:
            sub = self._stored_type(key)._make({}, self._ctx)
            self._index[key] = sub
        sub._entries[dot] = inner
        if sub._INDEXED:
            sub._index_insert(dot, inner)

    def _index_delete(self, dot: RawDot, payload: Any) -> None:
        key, inner = payload
        sub = self._index[key]
        del sub._entries[dot]
        if sub._INDEXED:
            sub._index_delete(dot, inner)
        if not sub._entries:
            del self._index[key]

    def _index_copy_from(self, other: Self) -> None:
        # The live objects share the context object, so a copy rebuilds them around its own.
        self._index_rebuild()

    # -- mutation (Rules 3 and 4) -----------------------------------------------------------

    def _apply(self, replica: str, key: Any, op: str, args: tuple[Any, ...]) -> Self:
        check_replica(replica)
        inner_type = self._type_of(key)
        if type(op) is not str or op not in mutators_of(inner_type):
            raise InvalidArgument(
                f"{describe(op)} is not a mutator of {inner_type.__name__}; "
                f"expected one of {sorted(mutators_of(inner_type))}"
            )
        sub = self._index.get(key)
        created = sub is None
        if sub is None:
            sub = inner_type._make({}, self._ctx)
        if getattr(inner_type, "_FOLDS", False):
            cast(Any, sub)._open = getattr(self, "_open", None)
        delta = getattr(sub, op)(replica, *args)
        # The mutator changed ``sub`` and the shared context; mirror it in our store.
        entries = self._entries
        tagged = {dot: (key, p) for dot, p in delta._entries.items()}
        for dot in delta._ctx._raw_dots():
            if dot not in tagged:
                entries.pop(dot, None)
        entries.update(tagged)
        if created:
            if sub._entries:
                self._index[key] = sub
        elif not sub._entries:
            del self._index[key]
        return self._make(tagged, delta._ctx)

    def _remove_key(self, replica: str, key: Any) -> Self:
        check_replica(replica)
        self._type_of(key)
        sub = self._index.get(key)
        if sub is None:
            return type(self)()
        return self._delta_removing(list(sub._entries))

    def seal(self) -> None:
        """Seal every causal counter inside (see :meth:`crdts.CCounter.seal`): call it each
        time anything of this replica is shipped."""
        self._open = set()

    # -- reading ----------------------------------------------------------------------------

    def _live(self, path: tuple[Any, ...]) -> tuple[Causal | None, type[Causal]]:
        """The live object at ``path`` (or None if absent) and its type."""
        state: Causal | None = self
        t: type[Causal] = type(self)
        for key in path:
            if not issubclass(t, _Embedding):
                raise InvalidArgument(f"{t.__name__} embeds nothing; cannot look up {key!r:.80}")
            inner_type = t._type_of(key)
            state = None if state is None else cast(_Embedding, state)._index.get(key)
            t = inner_type
        return state, t

    def value_at(self, *path: Any) -> Any:
        """The value of the embedded state at ``path`` (keys or fields, outermost first);
        the bottom value if nothing is there. Costs what that state holds.

        Raises:
            InvalidArgument: a key or field that this type cannot hold.
        """
        state, t = self._live(path)
        return (state if state is not None else t()).value

    def holds(self, *path: Any) -> bool:
        """Whether the embedded state at ``path`` holds any dot (a key is present).

        Raises:
            InvalidArgument: a key or field that this type cannot hold.
        """
        return self._live(path)[0] is not None

    def state_at(self, *path: Any) -> Causal:
        """An independent copy of the embedded state at ``path`` (bottom if absent).

        Raises:
            InvalidArgument: a key or field that this type cannot hold.
        """
        state, t = self._live(path)
        return state.copy() if state is not None else t()


_MAP_TYPES: dict[type[Causal], type[ORMap]] = {}
_NO_DOTS = DotContext()
"""The context of the throw-away bottom states that read an empty field (never mutated)."""


class ORMap(_Embedding):
    """An observed-remove map from keys to embedded causal CRDTs sharing one context.

    ``ORMap.of(T)`` is the map type with values of causal type ``T`` (``CCounter``,
    ``EWFlag``, ``MVRegister``, ``AWORSet``, another ``ORMap.of(...)``, a :class:`Record`).

    >>> from crdts import CCounter
    >>> Counts = ORMap.of(CCounter)
    >>> a, b = Counts(), Counts()
    >>> b.join(a.apply("a", "milk", "increment", 3))
    >>> _ = a.remove("a", "milk"); _ = b.apply("b", "milk", "increment", 1)  # concurrent
    >>> (a | b).value
    {'milk': 1}
    """

    __slots__ = ()
    type_name = "ORMap"
    value_type: ClassVar[type[Causal]]
    mutators: ClassVar[frozenset[str]] = frozenset({"apply", "remove", "clear"})

    def __init__(self) -> None:
        if type(self) is ORMap:
            raise TypeError("ORMap needs a value type: use ORMap.of(ValueType)()")
        super().__init__()

    @classmethod
    def of(cls, value_type: type[Causal]) -> type[ORMap]:
        """The map type whose values are of causal type ``value_type`` (one class per type).

        Raises:
            InvalidArgument: ``value_type`` is not a causal CRDT class listing its mutators.
        """
        vt = _check_embeddable(value_type)
        made = _MAP_TYPES.get(vt)
        if made is None:
            name = f"ORMap[{vt.type_name}]"
            made = cast(
                type[ORMap],
                type(name, (ORMap,), {"__slots__": (), "type_name": name, "value_type": vt}),
            )
            made.__module__ = ORMap.__module__
            _MAP_TYPES[vt] = made
        return made

    @classmethod
    def _type_of(cls, key: Any) -> type[Causal]:
        check_element(key, "map key")
        return cls.value_type

    @classmethod
    def _stored_type(cls, key: Any) -> type[Causal]:
        return cls.value_type

    # -- mutators ---------------------------------------------------------------------------

    def apply(self, replica: str, key: Any, op: str, *args: Any) -> Self:
        """Call the embedded mutator ``op`` (with ``replica`` and ``args``) on the value
        under ``key``, creating it from bottom if absent; return the delta.

        Nesting: ``m.apply(r, "a", "apply", "b", "increment", 2)``.

        Raises:
            InvalidArgument: bad replica id, or ``op`` is not a mutator of the value type,
            or the embedded mutator refused its arguments. InvalidElement: a key the
            encoding cannot carry. Nothing changed in any case.
        """
        return self._apply(replica, key, op, args)

    def remove(self, replica: str, key: Any) -> Self:
        """Remove ``key`` as this replica observed it (an observed reset of its value);
        return the delta. Updates the remover did not see survive. Removing an absent key
        returns the bottom delta.

        Raises:
            InvalidArgument: bad replica id. InvalidElement: a key the encoding cannot
            carry. Nothing changed in either case.
        """
        return self._remove_key(replica, key)

    def clear(self, replica: str) -> Self:
        """Remove every key this replica has observed; return the delta.

        Raises:
            InvalidArgument: bad replica id; nothing changed.
        """
        return self._reset_observed(replica)

    # -- reading ----------------------------------------------------------------------------

    @property
    def value(self) -> dict[Any, Any]:
        """A fresh dict of each present key to its embedded value."""
        return {key: sub.value for key, sub in self._index.items()}

    def __getitem__(self, key: Any) -> Causal:
        """An independent copy of the value under ``key`` (bottom if absent)."""
        return self.state_at(key)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(tuple(self._index))

    def __bool__(self) -> bool:
        return bool(self._index)

    def keys(self) -> frozenset[Any]:
        """The present keys."""
        return frozenset(self._index)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k!r}: {v!r}" for k, v in sorted(self._index.items(), key=repr))
        return f"{self.type_name}({{{shown}}})"


class Record(_Embedding):
    """A fixed set of named fields, each an embedded causal CRDT, sharing one context.

    Subclass it with ``type_name`` and ``fields``::

        class Item(Record):
            type_name = "Item"
            fields = {"count": CCounter, "done": EWFlag}

    A field that holds no dot reads as its type's bottom value; ``reset(replica, field)``
    is an observed reset of one field.
    """

    __slots__ = ()
    type_name = "Record"
    fields: ClassVar[Mapping[str, type[Causal]]] = {}
    mutators: ClassVar[frozenset[str]] = frozenset({"apply", "reset"})

    def __init__(self) -> None:
        if not self.fields:
            raise TypeError("Record is abstract: subclass it with type_name and fields")
        super().__init__()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, t in cls.fields.items():
            if type(name) is not str or not name:
                raise InvalidArgument(f"{cls.__name__}: a field name must be a non-empty str")
            _check_embeddable(t)

    @classmethod
    def _type_of(cls, key: Any) -> type[Causal]:
        t = cls.fields.get(key) if type(key) is str else None
        if t is None:
            raise InvalidArgument(
                f"{cls.type_name} has no field {describe(key)}; fields: {sorted(cls.fields)}"
            )
        return t

    @classmethod
    def _encode_key(cls, key: Any) -> Any:
        return key

    @classmethod
    def _decode_key(cls, data: Any, path: str) -> Any:
        if type(data) is not str:
            raise DecodeError(f"{path}: expected a field name, got {describe(data)}")
        return data

    def apply(self, replica: str, field: str, op: str, *args: Any) -> Self:
        """Call the mutator ``op`` of ``field`` with ``replica`` and ``args``; return the delta.

        Raises:
            InvalidArgument: bad replica id, unknown field, ``op`` not a mutator of the
            field's type, or the mutator refused its arguments. Nothing changed.
        """
        return self._apply(replica, field, op, args)

    def reset(self, replica: str, field: str) -> Self:
        """Reset ``field`` to bottom as this replica observed it; return the delta.

        Raises:
            InvalidArgument: bad replica id or unknown field; nothing changed.
        """
        return self._remove_key(replica, field)

    @property
    def value(self) -> dict[str, Any]:
        """A fresh dict of every field to its value (bottom's value if it holds no dot)."""
        index = self._index
        return {
            name: (index[name] if name in index else t._make({}, _NO_DOTS)).value
            for name, t in self.fields.items()
        }

    def __getitem__(self, field: str) -> Causal:
        """An independent copy of ``field``'s state."""
        return self.state_at(field)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.value.items())
        return f"{self.type_name}({shown})"
