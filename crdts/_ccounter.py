"""A causal counter with an exact observed reset.

Theory of operation
-------------------
The counter is the dot kernel with a signed amount as payload; its value is the sum of
the amounts held. A ``reset`` removes exactly the dots it has observed, so after every
delta has been delivered the value is the sum of the changes that no reset observed.
That is the only answer that does not depend on delivery order: with a counter at 3, a
reset on one replica concurrent with ``+1`` on another gives 1 everywhere.

Rule 1 (never fold what may have been seen). The delta-CRDT paper's causal counter keeps
one dot per replica and, on each increment, replaces it with a new dot holding the
replica's running total. A reset that observed the old dot cannot subtract the old total
from the new dot, so 3, reset || +1 ends at 4. Here a change folds into an earlier dot of
the same replica only while that dot is *open*: created by this very object since its last
:meth:`~CCounter.seal`, so no other replica can have observed it. Everything else gets a
fresh dot holding just its own amount.

Rule 2 (sealing is the caller's promise). :meth:`seal` says "everything this object holds
may now have left". Call it every time you ship anything of this replica (a delta or the
state), and ship what was made since the previous seal as one delta (the join of the
deltas, or the state): a delta made before a later fold, shipped alone, could let a
concurrent reset miss one change. Until the first ``seal()`` nothing is open, so an object
whose owner never seals is exact and simply keeps one dot per change.

Rule 3 (the guard). Each delta remembers the sealed interval (:class:`Epoch`) it was made
in, and the interval remembers the dots its folds removed. A delta that still holds such
a dot is *stale*: shipped alone it is the "3, reset || +1 gives 4" answer (a reset that
saw it misses the change folded into its dot, and the fold brings it back). Encoding a
stale delta (``to_dict``, ``to_json``, ``digest``) raises :class:`~crdts.errors.StaleDelta`.
Joining the deltas of an interval, in any order, drops the folded dots, so what Rule 2
asks to ship always encodes; copies keep the guard. Joining a stale delta into another
state in the same process is not refused (it is how the shipment is built); the guard
stands where a delta leaves the process, its encoding.

Rule 4 (bounded metadata). With sealing, a counter holds at most one dot per replica per
*sealed interval* in which that replica changed it since the last reset that observed
it: growth follows sync rounds, not changes. A reset removes everything observed, so a
reset counter is bottom. A fold that sums to zero keeps a dot of amount 0: folding is
invisible, and unfolded +2 and -2 would leave two dots too (a map key stays present).

The open set lives outside the lattice state: it is not compared, encoded or copied
(a copy and a decoded state start with nothing open, which is always safe).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from crdts._codec import MAX_INT, MIN_INT, describe
from crdts._dots import DotContext, RawDot, check_counter, check_replica
from crdts._kernel import Causal
from crdts.errors import DecodeError, InvalidArgument, StaleDelta

__all__ = ["CCounter", "Epoch", "check_not_stale"]


class Epoch:
    """One sealed interval of a folding object: the dots it may still fold into (open) and
    the dots its folds removed (Rules 1 and 3). ``seal()`` starts a new one."""

    __slots__ = ("folded", "open")

    def __init__(self) -> None:
        self.open: set[RawDot] = set()
        self.folded: set[RawDot] = set()


def check_not_stale(state: Causal) -> None:
    """Raise StaleDelta if ``state`` is a delta that holds a dot a later fold removed
    (Rule 3); any other state passes."""
    epoch: Epoch | None = getattr(state, "_made_in", None)
    if epoch is None or not epoch.folded or epoch.folded.isdisjoint(state._entries):
        return
    raise StaleDelta(
        f"this {type(state).__name__} delta holds a change that a later change of the same "
        "replica folded into a new dot (no seal() between them); shipped alone, a reset "
        "that sees it would not see the later change and the fold would bring it back. "
        "Ship the join of every delta made since the last seal() (for example d1 | d2), "
        "or the state"
    )


class Sealed(Causal):
    """A causal type that folds changes between seals (CCounter, and the maps and records
    that may hold one): its deltas remember the sealed interval they were made in, a copy
    keeps it, and encoding a delta a later fold made stale raises (Rule 3)."""

    __slots__ = ("_made_in", "_open")

    _open: Epoch | None
    _made_in: Epoch | None

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON-safe form (see :meth:`crdts.Crdt.to_dict`).

        Raises:
            StaleDelta: this is a delta that holds a change a later fold replaced, with no
            ``seal()`` between them (Rule 3).
        """
        check_not_stale(self)
        return super().to_dict()

    def copy(self) -> Self:
        s = super().copy()
        made_in = getattr(self, "_made_in", None)
        if made_in is not None:
            s._made_in = made_in
        return s


class CCounter(Sealed):
    """A causal counter: increments and decrements, and a reset of exactly what it saw.

    >>> a, b = CCounter(), CCounter()
    >>> b.join(a.increment("a", 3))
    >>> _ = a.reset("a"); _ = b.increment("b", 1)   # concurrent
    >>> (a | b).value
    1
    """

    __slots__ = ()
    type_name = "CCounter"
    mutators: ClassVar[frozenset[str]] = frozenset({"increment", "decrement", "reset"})
    _FOLDS: ClassVar[bool] = True

    @classmethod
    def _encode_payload(cls, payload: Any) -> Any:
        return payload

    @classmethod
    def _decode_payload(cls, data: Any, path: str) -> Any:
        if type(data) is not int or not MIN_INT <= data <= MAX_INT:
            raise DecodeError(
                f"{path}: amount must be an int in the signed 64-bit range, got {describe(data)}"
            )
        return data

    # -- mutators -----------------------------------------------------------------------

    def increment(self, replica: str, amount: int = 1) -> CCounter:
        """Add ``amount`` (an int >= 1); return the delta.

        Raises:
            InvalidArgument: bad replica id or amount; nothing changed.
        """
        check_replica(replica)
        check_counter(amount, "increment")
        return self._change(replica, amount)

    def decrement(self, replica: str, amount: int = 1) -> CCounter:
        """Subtract ``amount`` (an int >= 1); return the delta.

        Raises:
            InvalidArgument: bad replica id or amount; nothing changed.
        """
        check_replica(replica)
        check_counter(amount, "decrement")
        return self._change(replica, -amount)

    def reset(self, replica: str) -> CCounter:
        """Remove every change this replica has observed; return the delta.

        Changes made concurrently elsewhere (which this replica has not seen) survive.

        Raises:
            InvalidArgument: bad replica id; nothing changed.
        """
        return self._reset_observed(replica)

    def seal(self) -> None:
        """Close every open dot: from now on, changes fold only into dots made after this
        call. Call it each time anything of this replica is shipped, and ship what was
        made since the previous call as one delta (Rule 2); a delta made before a later
        fold refuses to encode alone (:class:`~crdts.errors.StaleDelta`, Rule 3)."""
        self._open = Epoch()

    def _change(self, replica: str, amount: int) -> CCounter:
        entries = self._entries
        ctx = self._ctx
        epoch: Epoch | None = getattr(self, "_open", None)
        open_dots = None if epoch is None else epoch.open
        folded: RawDot | None = None
        if open_dots:
            for d in entries:
                if d[0] == replica and d in open_dots:
                    folded = d
                    break
        if folded is not None:
            amount += entries[folded]
        if not MIN_INT <= amount <= MAX_INT:
            raise InvalidArgument(f"the change would leave the signed 64-bit range: {amount}")
        touched: list[RawDot] = []
        if folded is not None:
            del entries[folded]
            touched.append(folded)
            assert epoch is not None and open_dots is not None
            open_dots.discard(folded)
            epoch.folded.add(folded)
        counter = ctx._next_counter(replica)
        dot = (replica, counter)
        entries[dot] = amount
        ctx._add(replica, counter)
        if open_dots is not None:
            open_dots.add(dot)
        touched.append(dot)
        delta = self._make({dot: amount}, DotContext._of_raw_dots(touched))
        delta._made_in = epoch
        return delta

    # -- reading ------------------------------------------------------------------------

    @property
    def value(self) -> int:
        """The sum of every change held (changes observed by a reset are gone)."""
        return sum(self._entries.values())

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"CCounter(value={self.value}, dots={len(self._entries)})"
