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

Rule 3 (bounded metadata). With sealing, a counter holds at most one dot per replica per
*sealed interval* in which that replica changed it since the last reset that observed
it: growth follows sync rounds, not changes. A reset removes everything observed, so a
reset counter is bottom. A fold that sums to zero keeps a dot of amount 0: folding is
invisible, and unfolded +2 and -2 would leave two dots too (a map key stays present).

The open set lives outside the lattice state: it is not compared, encoded or copied
(a copy and a decoded state start with nothing open, which is always safe).
"""

from __future__ import annotations

from typing import Any, ClassVar

from crdts._codec import MAX_INT, MIN_INT, describe
from crdts._dots import DotContext, RawDot, check_counter, check_replica
from crdts._kernel import Causal
from crdts.errors import DecodeError, InvalidArgument

__all__ = ["CCounter"]


class CCounter(Causal):
    """A causal counter: increments and decrements, and a reset of exactly what it saw.

    >>> a, b = CCounter(), CCounter()
    >>> b.join(a.increment("a", 3))
    >>> _ = a.reset("a"); _ = b.increment("b", 1)   # concurrent
    >>> (a | b).value
    1
    """

    __slots__ = ("_open",)
    type_name = "CCounter"
    mutators: ClassVar[frozenset[str]] = frozenset({"increment", "decrement", "reset"})
    _FOLDS: ClassVar[bool] = True

    _open: set[RawDot] | None

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
        call. Call it each time anything of this replica is shipped (Rule 2)."""
        self._open = set()

    def _change(self, replica: str, amount: int) -> CCounter:
        entries = self._entries
        ctx = self._ctx
        open_dots: set[RawDot] | None = getattr(self, "_open", None)
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
            assert open_dots is not None
            open_dots.discard(folded)
        counter = ctx._next_counter(replica)
        dot = (replica, counter)
        entries[dot] = amount
        ctx._add(replica, counter)
        if open_dots is not None:
            open_dots.add(dot)
        touched.append(dot)
        return self._make({dot: amount}, DotContext._of_raw_dots(touched))

    # -- reading ------------------------------------------------------------------------

    @property
    def value(self) -> int:
        """The sum of every change held (changes observed by a reset are gone)."""
        return sum(self._entries.values())

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"CCounter(value={self.value}, dots={len(self._entries)})"
