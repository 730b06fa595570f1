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

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import attrs

from crdts._codec import canonical_json, digest

__all__ = ["Crdt", "Stats"]


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
