"""Registers: multi-value (keeps concurrent writes) and last-writer-wins (drops them).

:class:`MVRegister` is the dot kernel with the written value as payload. A write creates
a fresh dot and drops every dot it observed, so writes that were concurrent all survive
(each holds a dot the others never saw) until a later write, which has seen them all,
replaces them. Nothing written concurrently is ever lost; the reader chooses how to show
several values.

:class:`LWWRegister` keeps one ``(timestamp, replica, value)`` triple and joins by taking
the greatest (ties on timestamp broken by replica id, then by value). Of concurrent
writes, all but one are **lost**; it suits values where a timestamp order is what users
want (the latest edit of a setting), not values where a lost write is a lost intention.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from crdts._base import Crdt, Stats
from crdts._codec import (
    FORMAT_VERSION,
    MAX_INT,
    check_element,
    check_header,
    decode_element,
    describe,
    element_sort_key,
    encode_element,
)
from crdts._dots import DotContext, check_replica, decode_replica
from crdts._kernel import Causal
from crdts.errors import DecodeError, InvalidArgument

__all__ = ["LWWRegister", "MVRegister"]


class MVRegister(Causal):
    """A multi-value register: concurrent writes are all kept until a later write.

    >>> a, b = MVRegister(), MVRegister()
    >>> _ = a.write("a", "tea"); _ = b.write("b", "coffee")   # concurrent
    >>> sorted((a | b).value)
    ['coffee', 'tea']
    """

    __slots__ = ()
    type_name = "MVRegister"
    mutators: ClassVar[frozenset[str]] = frozenset({"write", "clear"})

    @classmethod
    def _encode_payload(cls, payload: Any) -> Any:
        return encode_element(payload)

    @classmethod
    def _decode_payload(cls, data: Any, path: str) -> Any:
        return decode_element(data, path)

    def write(self, replica: str, value: Any) -> MVRegister:
        """Replace every value this replica has observed with ``value``; return the delta.

        Raises:
            InvalidArgument: bad replica id. InvalidElement: a value the encoding cannot
            carry. Nothing changed in either case.
        """
        check_replica(replica)
        check_element(value, "register value")
        ctx = self._ctx
        counter = ctx._next_counter(replica)
        dot = (replica, counter)
        old = list(self._entries)
        self._entries.clear()
        self._entries[dot] = value
        ctx._add(replica, counter)
        return self._make({dot: value}, DotContext._of_raw_dots([dot, *old]))

    def clear(self, replica: str) -> MVRegister:
        """Remove every value this replica has observed (an observed reset); return the delta.

        A concurrent write survives.

        Raises:
            InvalidArgument: bad replica id; nothing changed.
        """
        return self._reset_observed(replica)

    @property
    def value(self) -> frozenset[Any]:
        """Every value currently held: one after a write that saw the others, several
        after concurrent writes, none at bottom."""
        return frozenset(self._entries.values())

    def __repr__(self) -> str:
        shown = sorted(map(repr, self.value))
        return f"MVRegister({{{', '.join(shown)}}})"


_Write = tuple[int, str, Any]


def _order(write: _Write) -> tuple[int, str, str]:
    ts, replica, value = write
    return (ts, replica, element_sort_key(encode_element(value)))


class LWWRegister(Crdt):
    """A last-writer-wins register. Concurrent writes lose all values but one.

    The timestamp comes from the caller (wall-clock milliseconds, a hybrid logical clock,
    ...); left out, it is one more than the timestamp held, a Lamport clock. Ties are
    broken by replica id, then by the value's encoding, so every replica picks the same
    winner.

    >>> a, b = LWWRegister(), LWWRegister()
    >>> _ = a.write("a", "tea", 5); _ = b.write("b", "coffee", 7)
    >>> (a | b).value
    'coffee'
    """

    __slots__ = ("_write",)
    type_name = "LWWRegister"
    mutators: ClassVar[frozenset[str]] = frozenset({"write"})

    def __init__(self) -> None:
        self._write: _Write | None = None

    @classmethod
    def _of(cls, write: _Write | None) -> Self:
        r = cls.__new__(cls)
        r._write = write
        return r

    def write(self, replica: str, value: Any, timestamp: int | None = None) -> Self:
        """Write ``value`` at ``timestamp``; return the delta.

        A write whose ``(timestamp, replica, value)`` is not greater than the one held
        changes nothing (it lost), and its delta is still the write itself.

        Args:
            replica: the writing replica.
            value: an element (str, int, bool, bytes, None or a tuple of these).
            timestamp: an int from 0 to 2**63 - 1; default one past the held timestamp.

        Raises:
            InvalidArgument: bad replica id or timestamp. InvalidElement: a value the
            encoding cannot carry. Nothing changed in either case.
        """
        check_replica(replica)
        check_element(value, "register value")
        if timestamp is None:
            timestamp = 0 if self._write is None else self._write[0] + 1
        if type(timestamp) is not int or not 0 <= timestamp <= MAX_INT:
            raise InvalidArgument(
                f"timestamp must be an int from 0 to 2**63 - 1, got {describe(timestamp)}"
            )
        write: _Write = (timestamp, replica, value)
        if self._write is None or _order(self._write) < _order(write):
            self._write = write
        return self._of(write)

    @property
    def value(self) -> Any:
        """The winning value, or ``None`` if nothing was written: ``None`` also after a
        write of ``None``, so use :attr:`is_set` or :meth:`get` to tell the two apart."""
        return None if self._write is None else self._write[2]

    @property
    def is_set(self) -> bool:
        """Whether any write was made here or joined in (``False`` only at bottom).

        >>> r = LWWRegister()
        >>> r.is_set, r.value
        (False, None)
        >>> _ = r.write("a", None)
        >>> r.is_set, r.value
        (True, None)
        """
        return self._write is not None

    def get(self, default: Any = None) -> Any:
        """The winning value, or ``default`` if nothing was written (a written ``None``
        is returned as ``None``)."""
        return default if self._write is None else self._write[2]

    @property
    def timestamp(self) -> int | None:
        """The winning write's timestamp, or ``None`` if nothing was written."""
        return None if self._write is None else self._write[0]

    @property
    def writer(self) -> str | None:
        """The replica that made the winning write, or ``None``."""
        return None if self._write is None else self._write[1]

    def join(self, other: Self) -> None:
        self._check_same_type(other)
        theirs = other._write
        if theirs is not None and (self._write is None or _order(self._write) < _order(theirs)):
            self._write = theirs

    def __le__(self, other: Self) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        if self._write is None:
            return True
        if other._write is None:
            return False
        return _order(self._write) <= _order(other._write)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, LWWRegister)
        mine, theirs = self._write, other._write
        if mine is None or theirs is None:
            return mine is theirs
        return _order(mine) == _order(theirs)

    def copy(self) -> Self:
        return self._of(self._write)

    def to_dict(self) -> dict[str, Any]:
        w = self._write
        return {
            "type": self.type_name,
            "v": FORMAT_VERSION,
            "write": None if w is None else [w[0], w[1], encode_element(w[2])],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        d = check_header(data, cls.type_name, frozenset({"write"}))
        w = d["write"]
        path = f"{cls.type_name}.write"
        if w is None:
            return cls._of(None)
        if not isinstance(w, list) or len(w) != 3:
            raise DecodeError(
                f"{path}: expected null or [timestamp, replica, value], got {describe(w)}"
            )
        ts, replica, value = w
        if type(ts) is not int or not 0 <= ts <= MAX_INT:
            raise DecodeError(f"{path}[0]: timestamp must be an int >= 0, got {describe(ts)}")
        decode_replica(replica, f"{path}[1]")
        return cls._of((ts, replica, decode_element(value, f"{path}[2]")))

    def stats(self) -> Stats:
        n = 0 if self._write is None else 1
        return Stats(replicas=n, entries=n, cloud=0, encoded_bytes=len(self.to_json()))

    def __repr__(self) -> str:
        if self._write is None:
            return "LWWRegister()"
        ts, replica, value = self._write
        return f"LWWRegister({value!r}, timestamp={ts}, writer={replica!r})"
