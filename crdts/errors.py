"""The errors the library raises.

Every error is a :class:`CrdtError`. Errors caused by what a caller passed in also inherit
the matching built-in (``ValueError`` or ``TypeError``), so ordinary ``except ValueError``
code keeps working.
"""

from __future__ import annotations

__all__ = [
    "CrdtError",
    "DecodeError",
    "InvalidArgument",
    "InvalidElement",
    "ReadOnlyError",
    "StaleDelta",
]


class CrdtError(Exception):
    """Base class of every error raised by :mod:`crdts`."""


class InvalidArgument(CrdtError, ValueError):
    """A mutator or constructor got a value outside its domain (for example a
    non-positive increment or an empty replica id). The state was not changed."""


class InvalidElement(CrdtError, TypeError):
    """An element, key or register value is of a type the encoding cannot carry.
    The state was not changed."""


class DecodeError(CrdtError, ValueError):
    """``from_dict`` was given something that is not a valid encoded state.

    The message names the path inside the input and what was wrong there.
    """


class ReadOnlyError(CrdtError, TypeError):
    """A mutator was called on a read-only view (``state.context``). Nothing changed;
    ``copy()`` gives an object you can change."""


class StaleDelta(CrdtError, ValueError):
    """A delta was encoded (``to_dict``, ``to_json``, ``digest``) after a later change of
    the same replica folded into one of its dots, with no ``seal()`` between them.

    Shipped alone, it could let a concurrent reset see the earlier change without the
    later one, and the fold would bring the earlier change back. Ship the join of every
    delta made since the last ``seal()`` (or the state) instead; see
    :mod:`crdts._ccounter`, Rule 2. Nothing changed.
    """
