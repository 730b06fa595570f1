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
Mutators validate before changing anything, so a refused call changes nothing. The typed
path (``m.at(key).update(replica, T.mutator, *args)``, a :class:`KeyPath`) takes the same
road; the live objects never leave this module, so no caller can change one behind the
map's back.

Rule 4 (a key is its dots). A key is present exactly while its embedded state holds a
dot. Removing a key is an observed reset: the delta's context holds the key's dots and the
delta holds no entries, so updates the remover did not see survive and everything it saw
is gone. An embedded value that returns to bottom leaves no entry, so removed keys never
leak memory; what remains is the context, which is one integer per replica once synced.

Rule 5 (folding). Causal counters fold consecutive changes into open dots (see
:mod:`crdts._ccounter`). The open set belongs to the object the replica mutates, here the
outermost map; it is handed down to the embedded object for each call. ``seal()`` on the
outer map seals every counter inside it. The map's delta carries the sealed interval it
was made in, so the guard against shipping a stale delta alone holds for maps too.

Rule 6 (reading). ``m[key]`` is the key's value, read-only (a nested map or record reads
as a read-only mapping), and raises ``KeyError`` for an absent key, as a dict does; it
is never a state that could be mutated to no effect. ``state_at`` gives an independent
copy of an embedded state, under a name that says so.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar, cast

from crdts._aworset import AWORSet
from crdts._ccounter import Epoch, Sealed
from crdts._codec import check_element, decode_element, describe, encode_element
from crdts._dots import DotContext, RawDot, check_replica
from crdts._kernel import Causal
from crdts.errors import DecodeError, InvalidArgument

__all__ = ["ORMap", "Record", "mutators_of", "type_below"]

if TYPE_CHECKING:
    from crdts._keypath import KeyPath

V = TypeVar("V", bound=Causal)
W = TypeVar("W", bound=Causal)
_Call = Callable[[Causal], Causal]

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


class _Embedding(Sealed):
    """A dot kernel whose payloads are ``(key, inner payload)``; the shared machinery of
    :class:`ORMap` and :class:`Record`."""

    __slots__ = ("_index",)
    _INDEXED: ClassVar[bool] = True
    _FOLDS: ClassVar[bool] = True

    _index: dict[Any, Causal]

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
        return self._mutate(key, inner_type, lambda sub: getattr(sub, op)(replica, *args))

    def _edit(
        self,
        replica: str,
        path: tuple[Any, ...],
        op: Callable[..., object],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Self:
        """Call the mutator ``op`` on the embedded state at ``path`` (checked by
        :class:`KeyPath`); return the delta."""
        key, rest = path[0], path[1:]

        def call(sub: Causal) -> Causal:
            if rest:
                return cast(_Embedding, sub)._edit(replica, rest, op, args, kwargs)
            return cast(Causal, op(sub, replica, *args, **kwargs))

        return self._mutate(key, self._type_of(key), call)

    def _mutate(self, key: Any, inner_type: type[Causal], call: _Call) -> Self:
        """Run ``call`` (one mutator) on the live object under ``key`` and mirror what it
        did in this store (Rule 3); return the delta tagged with ``key``."""
        sub = self._index.get(key)
        created = sub is None
        if sub is None:
            sub = inner_type._make({}, self._ctx)
        folds = getattr(inner_type, "_FOLDS", False)
        if folds:
            cast(Any, sub)._open = getattr(self, "_open", None)
        delta = call(sub)
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
        result = self._make(tagged, delta._ctx)
        if folds:
            made_in = getattr(delta, "_made_in", None)
            if made_in is not None:
                result._made_in = made_in
        return result

    def _remove_key(self, replica: str, key: Any) -> Self:
        check_replica(replica)
        self._type_of(key)
        sub = self._index.get(key)
        if sub is None:
            return type(self)()
        return self._delta_removing(list(sub._entries))

    def seal(self) -> None:
        """Seal every causal counter inside (see :meth:`crdts.CCounter.seal`): call it each
        time anything of this replica is shipped, and ship what was made since the
        previous call as one delta."""
        self._open = Epoch()

    # -- reading ----------------------------------------------------------------------------

    def _live(self, path: tuple[Any, ...]) -> tuple[Causal | None, type[Causal]]:
        """The live object at ``path`` (or None if absent) and its type."""
        state: Causal | None = self
        t: type[Causal] = type(self)
        for key in path:
            if not issubclass(t, _Embedding):
                raise InvalidArgument(
                    f"{t.__name__} embeds nothing; cannot look up {describe(key)}"
                )
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
        """An independent copy of the embedded state at ``path`` (bottom if absent):
        changing it does not change this state.

        Raises:
            InvalidArgument: a key or field that this type cannot hold.
        """
        state, t = self._live(path)
        return state.copy() if state is not None else t()

    def _read_only(self) -> Mapping[Any, Any]:
        """The value, with every nested map and record as a read-only mapping."""
        raise NotImplementedError


def _read_only_value(state: Causal) -> Any:
    """``state.value``, with maps and records inside as read-only mappings (Rule 6)."""
    if isinstance(state, _Embedding):
        return state._read_only()
    return state.value


def type_below(t: type[_Embedding], key: Any, kind: object) -> type[Causal]:
    """The type under ``key`` of the map or record type ``t``; for a record, ``kind``
    must be the field's declared type (what lets a type checker know it).

    Raises:
        InvalidArgument: a field ``t`` lacks, or ``kind`` is not its type (or is given
        for a map key). InvalidElement: a map key the encoding cannot carry.
    """
    if issubclass(t, Record):
        inner = t._type_of(key)
        if kind is None or kind is not inner:
            raise InvalidArgument(
                f"{t.type_name}.{key} is a {inner.__name__}: pass it as "
                f"at({key!r}, {inner.__name__}), got {describe(kind)}"
            )
        return inner
    if kind is not None:
        raise InvalidArgument(f"a key of {t.type_name} takes no type (got {describe(kind)})")
    return t._type_of(key)


_MAP_TYPES: dict[type[Causal], type[ORMap[Any]]] = {}
_NO_DOTS = DotContext()
"""The context of the throw-away bottom states that read an empty field (never mutated)."""


class ORMap(_Embedding, Generic[V]):
    """An observed-remove map from keys to embedded causal CRDTs sharing one context.

    ``ORMap.of(T)`` is the map type with values of causal type ``T`` (``CCounter``,
    ``EWFlag``, ``MVRegister``, ``AWORSet``, another ``ORMap.of(...)``, a :class:`Record`);
    a type checker sees it as ``ORMap[T]``.

    >>> from crdts import CCounter
    >>> Counts = ORMap.of(CCounter)
    >>> a, b = Counts(), Counts()
    >>> b.join(a.at("milk").update("a", CCounter.increment, 3))
    >>> _ = a.remove("a", "milk"); _ = b.apply("b", "milk", "increment", 1)  # concurrent
    >>> (a | b).value, (a | b)["milk"]
    ({'milk': 1}, 1)
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
    def of(cls, value_type: type[W]) -> type[ORMap[W]]:
        """The map type whose values are of causal type ``value_type`` (one class per type).

        Raises:
            InvalidArgument: ``value_type`` is not a causal CRDT class listing its mutators.
        """
        vt = _check_embeddable(value_type)
        made = _MAP_TYPES.get(vt)
        if made is None:
            name = f"ORMap[{vt.type_name}]"
            made = cast(
                type[ORMap[Any]],
                type(name, (ORMap,), {"__slots__": (), "type_name": name, "value_type": vt}),
            )
            made.__module__ = ORMap.__module__
            _MAP_TYPES[vt] = made
        return cast(type[ORMap[W]], made)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Decode :meth:`to_dict` output. On ``ORMap`` itself, the tag picks the map type
        (``ORMap[CCounter]`` decodes as ``ORMap.of(CCounter)``, a record's tag must be
        registered: see :func:`crdts.decode`).

        Raises:
            DecodeError: (a ``ValueError``) the input is malformed; the message says how.
        """
        if cls is ORMap:
            from crdts._registry import decode_as  # the registry imports this module

            return cast(Self, decode_as(ORMap, data))
        return super().from_dict(data)

    @classmethod
    def _type_of(cls, key: Any) -> type[Causal]:
        check_element(key, "map key")
        return cls.value_type

    @classmethod
    def _stored_type(cls, key: Any) -> type[Causal]:
        return cls.value_type

    # -- mutators ---------------------------------------------------------------------------

    def at(self, key: Hashable) -> KeyPath[V, Self]:
        """The typed path to the value under ``key``: ``m.at(key).update(replica,
        T.mutator, *args)`` changes it and returns this map's delta (see :class:`KeyPath`).

        Raises:
            InvalidElement: a key the encoding cannot carry.
        """
        from crdts._keypath import KeyPath  # it reads this module

        return KeyPath(self, (key,), cast(type[V], self._type_of(key)))

    def apply(self, replica: str, key: Any, op: str, *args: Any) -> Self:
        """Call the embedded mutator ``op`` (with ``replica`` and ``args``) on the value
        under ``key``, creating it from bottom if absent; return the delta.

        Nesting: ``m.apply(r, "a", "apply", "b", "increment", 2)``. For code that knows
        its types, :meth:`at` offers the same edit checked by a type checker.

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

    def __getitem__(self, key: Any) -> Any:
        """The value under ``key``, read-only (a nested map or record as a read-only
        mapping), as :attr:`value` holds it.

        Raises:
            KeyError: ``key`` is not present (as in a dict). Use :meth:`get` for a default,
            :meth:`state_at` for a copy of the embedded state, :meth:`at` to change it.
        """
        sub = self._index.get(key)
        if sub is None:
            raise KeyError(key)
        return _read_only_value(sub)

    def get(self, key: Any, default: Any = None) -> Any:
        """The value under ``key`` as ``m[key]`` reads it, or ``default`` if absent."""
        sub = self._index.get(key)
        return default if sub is None else _read_only_value(sub)

    def _read_only(self) -> Mapping[Any, Any]:
        return MappingProxyType({k: _read_only_value(sub) for k, sub in self._index.items()})

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
    is an observed reset of one field. ``rec.at("count", CCounter).update(replica,
    CCounter.increment, 2)`` is the typed edit of a field (see :class:`crdts.KeyPath`);
    ``rec["count"]`` reads its value. To decode a record by its tag (:func:`crdts.decode`,
    a map of records), register it with :func:`crdts.register`: its fields are not in
    its tag.
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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Decode :meth:`to_dict` output. On ``Record`` itself, the tag picks the record
        type, which must be registered (:func:`crdts.register`): its fields are not in
        its tag.

        Raises:
            DecodeError: (a ``ValueError``) the input is malformed; the message says how.
        """
        if not cls.fields:
            from crdts._registry import decode_as  # the registry imports this module

            return cast(Self, decode_as(Record, data))
        return super().from_dict(data)

    def at(self, field: str, kind: type[W]) -> KeyPath[W, Self]:
        """The typed path to ``field``, whose type ``kind`` a type checker cannot read
        from ``fields`` and so is named here (and checked):
        ``rec.at("count", CCounter).update(replica, CCounter.increment, 2)``.

        Raises:
            InvalidArgument: no such field, or ``kind`` is not its type.
        """
        from crdts._keypath import KeyPath  # it reads this module

        return KeyPath(self, (field,), cast(type[W], type_below(type(self), field, kind)))

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

    def __getitem__(self, field: str) -> Any:
        """The value of ``field``, read-only (a nested map or record as a read-only
        mapping); a field that holds no dot reads as its type's bottom value.

        Raises:
            KeyError: the record has no such field. Use :meth:`state_at` for a copy of
            the field's state, :meth:`at` to change it.
        """
        t = self.fields.get(field) if type(field) is str else None
        if t is None:
            raise KeyError(field)
        sub = self._index.get(field)
        return _read_only_value(sub if sub is not None else t._make({}, _NO_DOTS))

    def _read_only(self) -> Mapping[str, Any]:
        index = self._index
        return MappingProxyType(
            {
                name: _read_only_value(index[name] if name in index else t._make({}, _NO_DOTS))
                for name, t in self.fields.items()
            }
        )

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.value.items())
        return f"{self.type_name}({shown})"
