"""What the cores need from a list's state, and the two ways to ship a difference.

The cores are generic in the document type: :class:`~reference_cluster.shopping_list.
ShoppingList` in the application, :class:`crdts.AWORSet` in some tests. A type needs the
:class:`ListState` contract. If it is also causal (a :class:`crdts.Causal`, with
``context`` and ``delta_for``), anti-entropy and client pulls ship exactly what the peer's
context lacks; otherwise they ship the whole state, which is correct (join is
idempotent) but costs more bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, Self, TypeVar

from crdts import DotContext

__all__ = ["ListState", "S", "context_of", "missing_for", "seal"]


class ListState(Protocol):
    """The contract the cores use: a join-semilattice with a canonical encoding."""

    def join(self, other: Self, /) -> None: ...
    def __le__(self, other: Self, /) -> bool: ...
    def copy(self) -> Self: ...
    def to_dict(self) -> dict[str, Any]: ...
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], /) -> Self: ...
    def digest(self) -> str: ...


S = TypeVar("S", bound=ListState)


def context_of(state: ListState) -> DotContext | None:
    """The causal context of ``state``, or ``None`` if its type is not causal."""
    ctx = getattr(state, "context", None)
    return ctx if isinstance(ctx, DotContext) else None


def missing_for(state: S, peer: DotContext | None) -> S:
    """What a peer whose context is ``peer`` lacks of ``state``.

    Exactly the difference (``state.delta_for(peer)``) for a causal type and a known
    context; a copy of the whole state otherwise.
    """
    delta_for = getattr(state, "delta_for", None)
    if peer is not None and delta_for is not None:
        result: S = delta_for(peer)
        return result
    return state.copy()


def seal(state: ListState) -> None:
    """Tell ``state`` that everything it holds may now have left this replica.

    Types whose counters fold later changes into earlier dots (see
    :mod:`crdts._ccounter`) offer ``seal()``; call this each time a replica ships
    anything of its own. Types without it need nothing.
    """
    method = getattr(state, "seal", None)
    if method is not None:
        method()
