"""A read-only, live view of a state's causal context (what ``state.context`` returns).

The view shares the state's version vector and dot cloud instead of copying them, so
reading ``state.context`` costs the same whatever the size of the context. It is a
:class:`~crdts.DotContext` for every reading purpose (``contains``, ``in``, ``<=``, ``==``
with any context, ``vv``, ``cloud``, ``dots()``, ``to_dict()``, ``delta_for(view)``), and
it follows the state: after the state changes, the view shows the new context. Its
mutators (``add``, ``join``, ``compact``) raise :class:`~crdts.errors.ReadOnlyError`;
``copy()`` returns an independent :class:`~crdts.DotContext` to keep or change.
"""

from __future__ import annotations

from typing import NoReturn

from crdts._dots import DotContext
from crdts.errors import ReadOnlyError

__all__ = ["ContextView"]

_HOW = "a state's context is a read-only view; call .copy() for a DotContext you can change"


class ContextView(DotContext):
    """A read-only view of a causal context that follows it (no copy is made).

    Args:
        ctx: the context to show.
    """

    __slots__ = ()

    def __init__(self, ctx: DotContext) -> None:
        # The live dicts themselves: the view reads what the context holds now.
        self._vv = ctx._vv
        self._cloud = ctx._cloud

    def add(self, dot: tuple[str, int]) -> NoReturn:
        """Refused: raise ReadOnlyError."""
        raise ReadOnlyError(f"cannot add a dot: {_HOW}")

    def join(self, other: DotContext) -> NoReturn:
        """Refused: raise ReadOnlyError."""
        raise ReadOnlyError(f"cannot join into it: {_HOW}")

    def compact(self) -> NoReturn:
        """Refused: raise ReadOnlyError (the context is compact already)."""
        raise ReadOnlyError(f"cannot compact it: {_HOW}")

    def _add(self, r: str, c: int) -> NoReturn:
        raise ReadOnlyError(f"cannot add a dot: {_HOW}")

    def _issue(self, replica: str) -> NoReturn:
        raise ReadOnlyError(f"cannot issue a dot: {_HOW}")

    def _compact_replica(self, r: str) -> NoReturn:
        raise ReadOnlyError(f"cannot compact it: {_HOW}")

    def __repr__(self) -> str:
        return f"ContextView({super().__repr__()})"
