"""The errors the library raises.

Every error is a :class:`CrdtError`. Errors caused by what a caller passed in also inherit
the matching built-in (``ValueError`` or ``TypeError``), so ordinary ``except ValueError``
code keeps working.
"""

from __future__ import annotations

__all__ = ["CrdtError", "DecodeError", "InvalidArgument", "InvalidElement"]


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
