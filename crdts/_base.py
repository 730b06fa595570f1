"""The contract every CRDT type follows, and what all of them share.

Every type ``T`` is a join-semilattice:

* ``T()`` is the bottom element;
* ``s.join(o)`` joins in place, ``s | o`` returns a new state, ``s <= o`` is the lattice
  order, ``==`` is state equality, ``copy()`` is deep;
* mutators take the acting replica first, change the state in place and return a delta
  ``d`` of type ``T`` with ``old | d == new``;
* ``to_dict()``/``T.from_dict()`` round-trip through a canonical JSON-safe form, and
  ``digest()`` hashes it, so equal states have equal digests.
"""

from __future__ import annotations

from abc import ABC, ABCMeta, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

import attrs

from crdts._codec import canonical_json, digest

__all__ = ["Crdt", "LightDelta", "Stats", "light_type"]


@attrs.frozen
class Stats:
    """How much metadata a state carries.

    Attributes:
        replicas: replicas the state knows of (in its context or tallies).
        entries: stored entries (dots for causal types, tallies for counters).
        cloud: dots in the causal context beyond its version vector.
        encoded_bytes: length of the canonical JSON encoding.
    """

    replicas: int
    entries: int
    cloud: int
    encoded_bytes: int


class Crdt(ABC):
    """Abstract base of every state-based CRDT in this package."""

    __slots__ = ()

    type_name: ClassVar[str]
    """The type tag written by :meth:`to_dict`."""

    @abstractmethod
    def join(self, other: Self) -> None:
        """Join ``other`` into this state, in place."""

    @abstractmethod
    def __le__(self, other: Self) -> bool:
        """The lattice order: ``self <= other`` iff ``self | other == other``."""

    @abstractmethod
    def __eq__(self, other: object) -> bool: ...

    @abstractmethod
    def copy(self) -> Self:
        """Return an independent (deep) copy."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON-safe form, with ``type`` and format version ``v``."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Decode :meth:`to_dict` output.

        Raises:
            DecodeError: (a ``ValueError``) the input is malformed; the message says how.
        """

    @property
    @abstractmethod
    def value(self) -> Any:
        """The user-facing value."""

    @abstractmethod
    def stats(self) -> Stats:
        """How much metadata this state carries."""

    __hash__ = None  # type: ignore[assignment]  # states are mutable

    def __or__(self, other: Self) -> Self:
        if type(other) is not type(self):
            return NotImplemented
        result = self.copy()
        result.join(other)
        return result

    def __ge__(self, other: Self) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return other.__le__(self)

    def __lt__(self, other: Self) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__le__(other) and not self.__eq__(other)

    def __gt__(self, other: Self) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return other.__lt__(self)

    def to_json(self) -> bytes:
        """The canonical JSON bytes of :meth:`to_dict`."""
        return canonical_json(self.to_dict())

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical encoding; equal states give equal digests."""
        return digest(self.to_dict())

    def _check_same_type(self, other: object) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot join {type(self).__name__} with {type(other).__name__}")


class LightDelta(Crdt):
    """Mixin of a *light delta* class: a subclass of a CRDT type, with the same slots,
    whose instances hold only a mutator's change in a few fields of their own.

    Rule 1 (the same value). A light delta is the delta it stands for: the first read
    of a field of the full form (a name in ``_LAZY_FIELDS``) builds the full form with
    ``_materialize()`` and turns the object into an instance of the full type, and every
    operation that compares types (join, order, equality, ``|``) does so first.

    Rule 2 (its own path). The full type's ``join`` recognises the light type and reads
    the change from the light fields directly: this is what makes a mutator and the join
    of its delta cost a few dictionary steps. ``check_laws`` checks that a delta joins as
    its encoding does.

    The full type keeps no ``__getattr__``: attribute reads on ordinary states stay on
    the interpreter's fast path. Only light deltas, which are read once or twice, pay.
    """

    __slots__ = ()
    _full_type: ClassVar[type[Crdt]]
    _LAZY_FIELDS: ClassVar[frozenset[str]]

    def _materialize(self) -> None:
        """Set the full form's fields from the light ones (each type defines it)."""
        raise NotImplementedError

    def _become_full(self) -> None:
        self._materialize()
        object.__setattr__(self, "__class__", self._full_type)

    if not TYPE_CHECKING:  # (so that type checkers still catch misspelt attributes)

        def __getattr__(self, name: str) -> Any:
            # Reached only for a slot not set: a field of the full form.
            if name in self._LAZY_FIELDS:
                self._become_full()
                return getattr(self, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # Each operation that compares types first turns both operands full (a binary
    # operator is not tried reflected when both operands have the same light type).

    def join(self, other: Self) -> None:
        self._become_full()
        self.join(other)  # the full type's join reads a light ``other`` directly

    def __eq__(self, other: object) -> bool:
        _become_full(self, other)
        return self.__eq__(other)

    def __le__(self, other: Self) -> bool:
        _become_full(self, other)
        return self.__le__(other)

    def __ge__(self, other: Self) -> bool:
        _become_full(self, other)
        return self.__ge__(other)

    def __lt__(self, other: Self) -> bool:
        _become_full(self, other)
        return self.__lt__(other)

    def __gt__(self, other: Self) -> bool:
        _become_full(self, other)
        return self.__gt__(other)

    def __or__(self, other: Self) -> Self:
        _become_full(self, other)
        return self.__or__(other)

    def __ror__(self, other: Self) -> Self:
        _become_full(self, other)
        return other.__or__(self)

    def __copy__(self) -> Self:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self.copy()


def _become_full(*states: object) -> None:
    for state in states:
        if isinstance(state, LightDelta):
            state._become_full()


def light_type(full: type[Crdt], namespace: dict[str, Any]) -> type[Any]:
    """The light delta class of ``full``: ``LightDelta`` first, then ``full``; it shows
    the same name, so errors and reprs read as the full type's."""
    ns = {
        "__slots__": (),
        "__module__": full.__module__,
        "__qualname__": full.__qualname__,
        "__doc__": f"A light delta of {full.__name__} (see crdts._base.LightDelta).",
        "_full_type": full,
        **namespace,
    }
    made: type[Any] = ABCMeta(full.__name__, (LightDelta, full), ns)
    return made
