"""Flags on the dot kernel: enable-wins and disable-wins.

An :class:`EWFlag` is on while its store holds a dot. ``enable`` creates a fresh dot and
drops the dots it observed; ``disable`` drops the dots it observed and creates none. A
concurrent enable carries a dot the disable never saw, so the enable wins; a disabled flag
is the bottom state, so a flag embedded in a map leaves no trace once disabled.

A :class:`DWFlag` marks both operations with a dot whose payload says which one it was;
the flag is on when it holds dots and all of them are enables. A concurrent disable leaves
a ``False`` dot beside the enable's ``True`` one, so the disable wins. The price: a
disabled DWFlag keeps one dot (it is not bottom).
"""

from __future__ import annotations

from typing import Any, ClassVar

from crdts._codec import describe
from crdts._dots import DotContext, RawDot, check_replica
from crdts._kernel import Causal
from crdts.errors import DecodeError

__all__ = ["DWFlag", "EWFlag"]


def _replace_all(state: Causal, replica: str, payload: Any) -> tuple[RawDot, list[RawDot]]:
    """Drop every dot of ``state``'s store and add one fresh dot of ``replica``."""
    ctx = state._ctx
    counter = ctx._next_counter(replica)
    dot = (replica, counter)
    old = list(state._entries)
    state._entries.clear()
    state._entries[dot] = payload
    ctx._add(replica, counter)
    return dot, old


class EWFlag(Causal):
    """An enable-wins flag: concurrent ``enable`` and ``disable`` give ``True``.

    >>> a, b = EWFlag(), EWFlag()
    >>> b.join(a.enable("a"))
    >>> _ = a.disable("a"); _ = b.enable("b")   # concurrent
    >>> (a | b).value
    True
    """

    __slots__ = ()
    type_name = "EWFlag"
    mutators: ClassVar[frozenset[str]] = frozenset({"enable", "disable"})

    def enable(self, replica: str) -> EWFlag:
        """Turn the flag on; return the delta.

        Raises:
            InvalidArgument: bad replica id; nothing changed.
        """
        check_replica(replica)
        dot, old = _replace_all(self, replica, None)
        return self._make({dot: None}, DotContext._of_raw_dots([dot, *old]))

    def disable(self, replica: str) -> EWFlag:
        """Turn the flag off as this replica observed it; return the delta.

        A concurrent enable, which this replica has not seen, survives.

        Raises:
            InvalidArgument: bad replica id; nothing changed.
        """
        return self._reset_observed(replica)

    @property
    def value(self) -> bool:
        """Whether the flag is on."""
        return bool(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __repr__(self) -> str:
        return f"EWFlag({self.value})"


class DWFlag(Causal):
    """A disable-wins flag: concurrent ``enable`` and ``disable`` give ``False``.

    Both operations leave one dot (``True`` for enable, ``False`` for disable) and drop the
    dots they observed, so a disabled DWFlag is not bottom.

    >>> a, b = DWFlag(), DWFlag()
    >>> _ = a.enable("a"); _ = b.disable("b")   # concurrent
    >>> (a | b).value
    False
    """

    __slots__ = ()
    type_name = "DWFlag"
    mutators: ClassVar[frozenset[str]] = frozenset({"enable", "disable"})

    @classmethod
    def _encode_payload(cls, payload: Any) -> Any:
        return payload

    @classmethod
    def _decode_payload(cls, data: Any, path: str) -> Any:
        if type(data) is not bool:
            raise DecodeError(f"{path}: expected true or false, got {describe(data)}")
        return data

    def _set(self, replica: str, on: bool) -> DWFlag:
        check_replica(replica)
        dot, old = _replace_all(self, replica, on)
        return self._make({dot: on}, DotContext._of_raw_dots([dot, *old]))

    def enable(self, replica: str) -> DWFlag:
        """Turn the flag on; a concurrent disable wins. Return the delta.

        Raises:
            InvalidArgument: bad replica id; nothing changed.
        """
        return self._set(replica, True)

    def disable(self, replica: str) -> DWFlag:
        """Turn the flag off; it wins over concurrent enables. Return the delta.

        Raises:
            InvalidArgument: bad replica id; nothing changed.
        """
        return self._set(replica, False)

    @property
    def value(self) -> bool:
        """Whether the flag is on: some dot, and every dot an enable."""
        entries = self._entries
        return bool(entries) and all(entries.values())

    def __bool__(self) -> bool:
        return self.value

    def __repr__(self) -> str:
        return f"DWFlag({self.value})"
