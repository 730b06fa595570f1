"""Dots and causal contexts.

Theory of operation
-------------------
A *dot* ``(replica, counter)`` names one event: the ``counter``-th event that ``replica``
created. Counters start at 1 and a replica never issues the same counter twice.

A :class:`DotContext` is the set of dots a replica has seen. It is stored as

* a version vector ``vv``: ``{replica: n}`` meaning dots ``(replica, 1..n)`` are all seen,
* a dot cloud: seen dots beyond the contiguous prefix, kept per replica.

Rule 1 (compactness). After every public operation the context is compact: every cloud
dot ``(r, c)`` has ``c > vv[r] + 1``; no replica has an empty cloud set or a zero in the
vector. So two contexts that hold the same set of dots hold the same vector and cloud,
and ``==`` and the encoding can compare them directly. ``compact()`` exists for callers
that want to say so; it finds nothing to do.

Rule 2 (boundedness). Once a replica has seen every dot up to some point, its cloud for
that replica is empty. After replicas have synced, a context is one integer per replica.

Internally dots are plain ``(str, int)`` tuples, which hash and compare fast; the public
:class:`Dot` is a named tuple and equal to the plain tuple with the same fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from crdts._codec import MAX_INT, describe, describe_keys
from crdts.errors import DecodeError, InvalidArgument

__all__ = ["Dot", "DotContext"]

RawDot = tuple[str, int]


class Dot(NamedTuple):
    """One event: the ``counter``-th event created by ``replica``."""

    replica: str
    counter: int


def check_replica(replica: object) -> str:
    """Return ``replica`` if it is a valid replica id, else raise.

    Raises:
        InvalidArgument: ``replica`` is not a non-empty string.
    """
    if type(replica) is not str or not replica:
        if isinstance(replica, str):
            raise InvalidArgument("replica id must be a non-empty string, got ''")
        raise InvalidArgument(
            f"replica id must be a non-empty string, got {type(replica).__name__}"
        )
    return replica


def check_counter(value: object, what: str = "counter") -> int:
    """Return ``value`` if it is an int from 1 to 2**63 - 1 (not a bool), else raise
    InvalidArgument."""
    if type(value) is not int or not 1 <= value <= MAX_INT:
        raise InvalidArgument(f"{what} must be an int from 1 to 2**63 - 1, got {describe(value)}")
    return value


class DotContext:
    """A causal context: the set of dots seen, as a version vector plus a dot cloud."""

    __slots__ = ("_cloud", "_vv")

    def __init__(self) -> None:
        self._vv: dict[str, int] = {}
        self._cloud: dict[str, set[int]] = {}

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_dots(cls, dots: Iterable[tuple[str, int]]) -> DotContext:
        """Build the context holding exactly ``dots``.

        Raises:
            InvalidArgument: a dot has an invalid replica id or counter.
        """
        ctx = cls()
        for replica, counter in dots:
            ctx.add(Dot(check_replica(replica), check_counter(counter)))
        return ctx

    @classmethod
    def _of(cls, vv: dict[str, int], cloud: dict[str, set[int]]) -> DotContext:
        """Wrap already-valid, already-compact parts without copying (internal)."""
        ctx = cls.__new__(cls)
        ctx._vv = vv
        ctx._cloud = cloud
        return ctx

    @classmethod
    def _of_raw_dots(cls, dots: Iterable[RawDot]) -> DotContext:
        """Context of already-valid dots (internal, no validation)."""
        ctx = cls()
        cloud = ctx._cloud
        for r, c in dots:
            s = cloud.get(r)
            if s is None:
                cloud[r] = {c}
            else:
                s.add(c)
        for r in list(cloud):
            ctx._compact_replica(r)
        return ctx

    def copy(self) -> DotContext:
        """Return an independent copy."""
        return DotContext._of(dict(self._vv), {r: set(s) for r, s in self._cloud.items()})

    # -- queries ------------------------------------------------------------------------

    def contains(self, dot: tuple[str, int]) -> bool:
        """Whether ``dot`` has been seen."""
        r, c = dot
        if c <= self._vv.get(r, 0):
            return True
        s = self._cloud.get(r)
        return s is not None and c in s

    __contains__ = contains

    def next_dot(self, replica: str) -> Dot:
        """The dot ``replica`` should issue next: one past every dot of it seen so far.

        The context is not changed; a mutator records the dot with :meth:`add`.
        """
        check_replica(replica)
        return Dot(replica, self._next_counter(replica))

    def _next_counter(self, replica: str) -> int:
        s = self._cloud.get(replica)
        top = self._vv.get(replica, 0)
        if s:
            highest = max(s)
            top = max(top, highest)
        if top >= MAX_INT:
            raise InvalidArgument(f"replica {replica!r:.80} has issued its last dot")
        return top + 1

    def _issue(self, replica: str) -> int:
        """Record the next dot of ``replica`` (a valid id) as seen and return its counter.

        Raises:
            InvalidArgument: ``replica`` has issued its last dot; nothing changed.
        """
        vv = self._vv
        n = vv.get(replica, 0)
        if replica not in self._cloud and n < MAX_INT:
            # The usual case, a mutator's hot path: the new dot extends the vector.
            vv[replica] = n + 1
            return n + 1
        counter = self._next_counter(replica)
        self._add(replica, counter)
        return counter

    @property
    def vv(self) -> Mapping[str, int]:
        """The version vector, as a fresh dict ``{replica: n}``."""
        return dict(self._vv)

    @property
    def cloud(self) -> frozenset[Dot]:
        """The dots seen beyond the version vector."""
        return frozenset(Dot(r, c) for r, s in self._cloud.items() for c in s)

    @property
    def replicas(self) -> frozenset[str]:
        """Every replica with at least one seen dot."""
        return frozenset(self._vv) | frozenset(self._cloud)

    def cloud_size(self) -> int:
        """How many dots the cloud holds."""
        return sum(map(len, self._cloud.values()))

    def dot_count(self) -> int:
        """How many dots the context covers (vector prefixes plus cloud)."""
        return sum(self._vv.values()) + sum(map(len, self._cloud.values()))

    def dots(self) -> Iterator[Dot]:
        """Every dot covered, replica by replica (this can be long: it expands the vector)."""
        for r in sorted(self.replicas):
            for c in range(1, self._vv.get(r, 0) + 1):
                yield Dot(r, c)
            for c in sorted(self._cloud.get(r, ())):
                yield Dot(r, c)

    def _raw_dots(self) -> Iterator[RawDot]:
        for r, n in self._vv.items():
            for c in range(1, n + 1):
                yield (r, c)
        for r, s in self._cloud.items():
            for c in s:
                yield (r, c)

    def _removed_from(
        self, store: Mapping[RawDot, Any], kept: Mapping[RawDot, Any]
    ) -> list[RawDot]:
        """The dots seen here that ``store`` holds and ``kept`` does not (walks every dot
        here, so it is for small contexts: the kernel's join with a delta)."""
        out: list[RawDot] = []
        for r, n in self._vv.items():
            for c in range(1, n + 1):
                d = (r, c)
                if d in store and d not in kept:
                    out.append(d)
        for r, s in self._cloud.items():
            for c in s:
                d = (r, c)
                if d in store and d not in kept:
                    out.append(d)
        return out

    def _limits(self, replicas: Iterable[str]) -> dict[str, int]:
        """``{r: vv[r]}`` (0 if absent) for each of ``replicas``: a walk over dots whose
        replicas are all among them reads a limit with ``[]`` instead of a ``get`` call."""
        get = self._vv.get
        return {r: get(r, 0) for r in replicas}

    def _seen_of(
        self, dots: Iterable[RawDot], skip: Mapping[RawDot, Any], of: DotContext
    ) -> list[RawDot]:
        """The dots of ``dots`` that this context has seen and ``skip`` lacks. Every dot of
        ``dots`` is in the context ``of``. The context is tested first: it hashes the
        replica id, whose hash Python keeps, where a test of ``skip`` hashes the dot."""
        cloud = self._cloud
        if not cloud:
            lim = self._limits(of._vv.keys() | of._cloud.keys())
            return [d for d in dots if d[1] <= lim[d[0]] and d not in skip]
        get = self._vv.get
        return [
            d
            for d in dots
            if (d[1] <= get(d[0], 0) or d[1] in cloud.get(d[0], ())) and d not in skip
        ]

    def _unseen_entries(self, entries: Mapping[RawDot, Any], of: DotContext) -> dict[RawDot, Any]:
        """The entries of ``entries`` whose dots this context has not seen. Every dot of
        ``entries`` is in the context ``of``."""
        cloud = self._cloud
        if not cloud:
            lim = self._limits(of._vv.keys() | of._cloud.keys())
            return {d: p for d, p in entries.items() if d[1] > lim[d[0]]}
        get = self._vv.get
        return {
            d: p
            for d, p in entries.items()
            if d[1] > get(d[0], 0) and d[1] not in cloud.get(d[0], ())
        }

    def _shares_replica(self, other: DotContext) -> bool:
        """Whether some replica has dots seen both here and in ``other``."""
        vv = self._vv
        cloud = self._cloud
        return any(r in vv or r in cloud for r in other._vv) or any(
            r in vv or r in cloud for r in other._cloud
        )

    def __le__(self, other: DotContext) -> bool:
        """Set inclusion: every dot seen here is seen by ``other``."""
        if not isinstance(other, DotContext):
            return NotImplemented
        ovv = other._vv
        for r, n in self._vv.items():
            # Compactness: other holds (r, 1..n) only if its vector reaches n.
            if ovv.get(r, 0) < n:
                return False
        contains = other.contains
        for r, s in self._cloud.items():
            for c in s:
                if not contains((r, c)):
                    return False
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DotContext):
            return NotImplemented
        return self._vv == other._vv and self._cloud == other._cloud

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        cloud = sorted(self.cloud)
        return f"DotContext(vv={dict(sorted(self._vv.items()))!r}, cloud={cloud!r})"

    def _holes_cost(self, replica: str, counters: list[int]) -> int:
        """How many dots :meth:`_without` moves from the version vector to the cloud to
        leave out ``counters`` of ``replica`` (which must be here)."""
        n = self._vv.get(replica, 0)
        below = [c for c in counters if c <= n]
        if not below:
            return 0
        return n - min(below) + 1 - len(below)

    def _without(self, holes: set[RawDot]) -> DotContext:
        """A compact context of every dot here except ``holes`` (which must be here).

        The version vector stops below each replica's first hole; later dots go to the
        cloud, so the result costs one cloud entry per dot between holes.
        """
        by_replica: dict[str, list[int]] = {}
        for r, c in holes:
            by_replica.setdefault(r, []).append(c)
        vv = dict(self._vv)
        cloud = {r: set(s) for r, s in self._cloud.items()}
        for r, cs in by_replica.items():
            cs.sort()
            n = vv.get(r, 0)
            s = cloud.setdefault(r, set())
            if cs[0] <= n:
                s.update(range(cs[0] + 1, n + 1))
                if cs[0] > 1:
                    vv[r] = cs[0] - 1
                else:
                    vv.pop(r, None)
            s.difference_update(cs)
            if not s:
                del cloud[r]
        return DotContext._of(vv, cloud)

    # -- updates ------------------------------------------------------------------------

    def add(self, dot: tuple[str, int]) -> None:
        """Record ``dot`` as seen.

        Raises:
            InvalidArgument: the dot has an invalid replica id or counter.
        """
        if not isinstance(dot, tuple) or len(dot) != 2:
            raise InvalidArgument(f"expected a dot (replica, counter), got {describe(dot)}")
        r, c = dot
        check_replica(r)
        check_counter(c)
        self._add(r, c)

    def _add(self, r: str, c: int) -> None:
        vv = self._vv
        n = vv.get(r, 0)
        if c <= n:
            return
        if c == n + 1:
            vv[r] = c
            if r in self._cloud:
                self._compact_replica(r)
            return
        s = self._cloud.get(r)
        if s is None:
            self._cloud[r] = {c}
        else:
            s.add(c)

    def join(self, other: DotContext) -> None:
        """Add every dot of ``other`` to this context (in place)."""
        vv = self._vv
        cloud = self._cloud
        touched: list[str] = []
        for r, n in other._vv.items():
            if n > vv.get(r, 0):
                vv[r] = n
                if r in cloud:
                    touched.append(r)
        for r, s in other._cloud.items():
            mine = cloud.get(r)
            if mine is None:
                if len(s) == 1:
                    # One dot, as in most deltas: place it without a compaction pass.
                    (c,) = s
                    n = vv.get(r, 0)
                    if c == n + 1:
                        vv[r] = c
                    elif c > n:
                        cloud[r] = {c}
                    continue
                cloud[r] = set(s)
            else:
                mine |= s
            touched.append(r)
        for r in touched:
            self._compact_replica(r)

    def compact(self) -> None:
        """Fold cloud dots that extend the version vector into it.

        Every public operation already leaves the context compact (Rule 1), so this only
        repairs contexts built through internal shortcuts; calling it is always safe.
        """
        for r in list(self._cloud):
            self._compact_replica(r)

    def _compact_replica(self, r: str) -> None:
        s = self._cloud.get(r)
        if s is None:
            return
        n = self._vv.get(r, 0)
        if n and min(s) <= n:
            s = {c for c in s if c > n}
        while n + 1 in s:
            n += 1
            s.discard(n)
        if n:
            self._vv[r] = n
        if s:
            self._cloud[r] = s
        else:
            del self._cloud[r]

    # -- encoding -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A canonical, JSON-safe form: ``{"vv": {r: n}, "cloud": [[r, c], ...]}``."""
        cloud = sorted((r, c) for r, s in self._cloud.items() for c in s)
        return {"vv": dict(self._vv), "cloud": [[r, c] for r, c in cloud]}

    @classmethod
    def from_dict(cls, data: object, path: str = "ctx") -> DotContext:
        """Decode :meth:`to_dict` output.

        Raises:
            DecodeError: the input is not a valid context; the message says where.
        """
        if not isinstance(data, Mapping):
            raise DecodeError(f"{path}: expected an object, got {type(data).__name__}")
        extra = set(data) - {"vv", "cloud"}
        if extra:
            raise DecodeError(f"{path}: unexpected keys {describe_keys(extra)}")
        vv_in = data.get("vv", {})
        cloud_in = data.get("cloud", [])
        if not isinstance(vv_in, Mapping):
            raise DecodeError(f"{path}.vv: expected an object, got {type(vv_in).__name__}")
        if not isinstance(cloud_in, list):
            raise DecodeError(f"{path}.cloud: expected a list, got {type(cloud_in).__name__}")
        vv: dict[str, int] = {}
        for r, n in vv_in.items():
            decode_replica(r, f"{path}.vv")
            if type(n) is not int or not 0 <= n <= MAX_INT:
                raise DecodeError(
                    f"{path}.vv[{describe(r)}]: expected an int from 0 to 2**63 - 1, "
                    f"got {describe(n)}"
                )
            if n:
                vv[r] = n
        cloud: dict[str, set[int]] = {}
        for i, item in enumerate(cloud_in):
            r, c = decode_dot(item, f"{path}.cloud[{i}]")
            s = cloud.setdefault(r, set())
            if c in s:
                raise DecodeError(f"{path}.cloud[{i}]: duplicate dot {describe([r, c])}")
            s.add(c)
        ctx = cls._of(vv, cloud)
        ctx.compact()
        return ctx


def decode_replica(value: object, path: str) -> str:
    """Check a decoded replica id, raising DecodeError naming ``path``."""
    if type(value) is not str or not value:
        raise DecodeError(f"{path}: replica id must be a non-empty string, got {describe(value)}")
    return value


def decode_dot(value: object, path: str) -> RawDot:
    """Check a decoded ``[replica, counter]`` pair, raising DecodeError naming ``path``."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise DecodeError(f"{path}: expected a dot [replica, counter], got {describe(value)}")
    r, c = value
    decode_replica(r, path)
    if type(c) is not int or not 1 <= c <= MAX_INT:
        raise DecodeError(
            f"{path}: dot counter must be an int from 1 to 2**63 - 1, got {describe(c)}"
        )
    return (r, c)
