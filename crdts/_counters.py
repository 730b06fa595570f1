"""Grow-only and positive-negative counters.

A counter keeps one tally per replica; a replica only ever raises its own tally, so the
join is the pointwise maximum and the value is the sum of the tallies. A delta carries
the acting replica's new tally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from crdts._base import Crdt, LightDelta, Stats, light_type
from crdts._codec import FORMAT_VERSION, MAX_INT, check_header, describe
from crdts._dots import check_counter, check_replica, decode_replica
from crdts.errors import DecodeError, InvalidArgument

__all__ = ["GCounter", "PNCounter"]


def _join_tallies(mine: dict[str, int], other: Mapping[str, int]) -> None:
    for r, n in other.items():
        if n > mine.get(r, 0):
            mine[r] = n


def _tallies_le(mine: Mapping[str, int], other: Mapping[str, int]) -> bool:
    return all(n <= other.get(r, 0) for r, n in mine.items())


def _decode_tallies(data: object, path: str) -> dict[str, int]:
    if not isinstance(data, Mapping):
        raise DecodeError(f"{path}: expected an object, got {type(data).__name__}")
    out: dict[str, int] = {}
    for r, n in data.items():
        decode_replica(r, path)
        if type(n) is not int or not 0 <= n <= MAX_INT:
            raise DecodeError(
                f"{path}[{describe(r)}]: tally must be an int from 0 to 2**63 - 1, "
                f"got {describe(n)}"
            )
        if n:
            out[r] = n
    return out


def _overflow(replica: str) -> InvalidArgument:
    return InvalidArgument(f"the tally of replica {replica!r:.80} would pass 2**63 - 1")


def _check_step(replica: object, amount: object, what: str) -> None:
    """The full argument checks of a mutator (the mutators test the usual case inline)."""
    check_replica(replica)
    check_counter(amount, what)


# A mutator builds its delta with object.__new__ and sets its fields directly: the
# constructor would allocate empty dicts only for them to be replaced. Mutators are the
# hot path of a counter (bench/).
_new = object.__new__


class GCounter(Crdt):
    """A grow-only counter.

    >>> c = GCounter()
    >>> d = c.increment("a", 2)
    >>> c.value, d.value
    (2, 2)
    """

    __slots__ = ("_counts", "_r", "_t")
    type_name = "GCounter"
    _light_type: ClassVar[type[Any]]
    # A light delta (crdts._base.LightDelta) holds the replica ``_r`` and its new tally
    # ``_t``; its dict is built the first time anything reads it.
    _r: str
    _t: int

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not issubclass(cls, LightDelta):  # a subclass's deltas are of its own type
            cls._light_type = _light_of(cls)

    @classmethod
    def _of(cls, counts: dict[str, int]) -> Self:
        c = cls.__new__(cls)
        c._counts = counts
        return c

    def _materialize_light(self) -> None:
        self._counts = {self._r: self._t}

    def _copy_light(self) -> Self:
        c = _new(type(self))
        c._r = self._r
        c._t = self._t
        return c

    def increment(self, replica: str, amount: int = 1) -> Self:
        """Add ``amount`` (an int >= 1) on behalf of ``replica``; return the delta.

        Raises:
            InvalidArgument: bad replica id or amount; nothing changed.
        """
        if type(replica) is not str or not replica or type(amount) is not int or amount < 1:
            _check_step(replica, amount, "increment")
        counts = self._counts
        total = counts.get(replica, 0) + amount
        if total > MAX_INT:
            _check_step(replica, amount, "increment")  # the amount itself may be too big
            raise _overflow(replica)
        counts[replica] = total
        delta: Self = _new(self._light_type)
        delta._r = replica
        delta._t = total
        return delta

    @property
    def value(self) -> int:
        """The sum of every replica's tally."""
        return sum(self._counts.values())

    @property
    def counts(self) -> Mapping[str, int]:
        """A fresh dict of the per-replica tallies."""
        return dict(self._counts)

    def join(self, other: Self) -> None:
        if type(other) is self._light_type:
            counts = self._counts
            if other._t > counts.get(other._r, 0):
                counts[other._r] = other._t
            return
        if type(other) is not type(self):
            self._check_same_type(other)
        _join_tallies(self._counts, other._counts)

    def __le__(self, other: Self) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return _tallies_le(self._counts, other._counts)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, GCounter)
        return self._counts == other._counts

    def copy(self) -> Self:
        return self._of(dict(self._counts))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "v": FORMAT_VERSION, "counts": dict(self._counts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        d = check_header(data, cls.type_name, frozenset({"counts"}))
        return cls._of(_decode_tallies(d["counts"], f"{cls.type_name}.counts"))

    def stats(self) -> Stats:
        n = len(self._counts)
        return Stats(replicas=n, entries=n, cloud=0, encoded_bytes=len(self.to_json()))

    def __repr__(self) -> str:
        return f"GCounter(value={self.value}, counts={dict(sorted(self._counts.items()))!r})"


class PNCounter(Crdt):
    """A counter that can go up and down: two grow-only tallies per replica.

    >>> c = PNCounter()
    >>> _ = c.increment("a", 5); _ = c.decrement("b", 2)
    >>> c.value
    3
    """

    __slots__ = ("_n", "_p", "_r", "_t")
    type_name = "PNCounter"
    _light_type: ClassVar[type[Any]]
    # A light delta (crdts._base.LightDelta) holds the replica ``_r`` and its new tally
    # ``_t``, negated for the decrement tally; its dicts are built the first time anything
    # reads them.
    _r: str
    _t: int

    def __init__(self) -> None:
        self._p: dict[str, int] = {}
        self._n: dict[str, int] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not issubclass(cls, LightDelta):  # a subclass's deltas are of its own type
            cls._light_type = _light_of(cls)

    @classmethod
    def _of(cls, p: dict[str, int], n: dict[str, int]) -> Self:
        c = cls.__new__(cls)
        c._p = p
        c._n = n
        return c

    def _materialize_light(self) -> None:
        t = self._t
        self._p, self._n = ({self._r: t}, {}) if t > 0 else ({}, {self._r: -t})

    def _copy_light(self) -> Self:
        c = _new(type(self))
        c._r = self._r
        c._t = self._t
        return c

    def increment(self, replica: str, amount: int = 1) -> Self:
        """Add ``amount`` (an int >= 1); return the delta.

        Raises:
            InvalidArgument: bad replica id or amount; nothing changed.
        """
        if type(replica) is not str or not replica or type(amount) is not int or amount < 1:
            _check_step(replica, amount, "increment")
        tally = self._p
        total = tally.get(replica, 0) + amount
        if total > MAX_INT:
            _check_step(replica, amount, "increment")  # the amount itself may be too big
            raise _overflow(replica)
        tally[replica] = total
        delta: Self = _new(self._light_type)
        delta._r = replica
        delta._t = total
        return delta

    def decrement(self, replica: str, amount: int = 1) -> Self:
        """Subtract ``amount`` (an int >= 1); return the delta.

        Raises:
            InvalidArgument: bad replica id or amount; nothing changed.
        """
        if type(replica) is not str or not replica or type(amount) is not int or amount < 1:
            _check_step(replica, amount, "decrement")
        tally = self._n
        total = tally.get(replica, 0) + amount
        if total > MAX_INT:
            _check_step(replica, amount, "decrement")  # the amount itself may be too big
            raise _overflow(replica)
        tally[replica] = total
        delta: Self = _new(self._light_type)
        delta._r = replica
        delta._t = -total
        return delta

    @property
    def value(self) -> int:
        """Increments minus decrements, over every replica."""
        return sum(self._p.values()) - sum(self._n.values())

    @property
    def increments(self) -> Mapping[str, int]:
        """A fresh dict of the per-replica increment tallies."""
        return dict(self._p)

    @property
    def decrements(self) -> Mapping[str, int]:
        """A fresh dict of the per-replica decrement tallies."""
        return dict(self._n)

    def join(self, other: Self) -> None:
        if type(other) is self._light_type:
            t = other._t
            if t > 0:
                tally = self._p
            else:
                tally = self._n
                t = -t
            if t > tally.get(other._r, 0):
                tally[other._r] = t
            return
        if type(other) is not type(self):
            self._check_same_type(other)
        _join_tallies(self._p, other._p)
        _join_tallies(self._n, other._n)

    def __le__(self, other: Self) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return _tallies_le(self._p, other._p) and _tallies_le(self._n, other._n)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, PNCounter)
        return self._p == other._p and self._n == other._n

    def copy(self) -> Self:
        return self._of(dict(self._p), dict(self._n))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "v": FORMAT_VERSION, "p": dict(self._p), "n": dict(self._n)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        d = check_header(data, cls.type_name, frozenset({"p", "n"}))
        name = cls.type_name
        return cls._of(_decode_tallies(d["p"], f"{name}.p"), _decode_tallies(d["n"], f"{name}.n"))

    def stats(self) -> Stats:
        return Stats(
            replicas=len(set(self._p) | set(self._n)),
            entries=len(self._p) + len(self._n),
            cloud=0,
            encoded_bytes=len(self.to_json()),
        )

    def __repr__(self) -> str:
        return f"PNCounter(value={self.value})"


def _light_of(cls: type[GCounter] | type[PNCounter]) -> type[Any]:
    """The light delta type of a counter class (see crdts._base.LightDelta)."""
    lazy = frozenset({"_counts"}) if issubclass(cls, GCounter) else frozenset({"_p", "_n"})
    return light_type(
        cls,
        {
            "_LAZY_FIELDS": lazy,
            "_materialize": cls._materialize_light,
            "copy": cls._copy_light,
        },
    )


GCounter._light_type = _light_of(GCounter)
PNCounter._light_type = _light_of(PNCounter)
