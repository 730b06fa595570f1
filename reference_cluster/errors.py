"""The errors the reference cluster raises.

Every error is a :class:`ClusterError`. Errors caused by what a user or a peer sent (a bad
list id, a wrong password, someone else's list) also inherit ``ValueError``, so ordinary
``except ValueError`` code keeps working. Errors about the machine itself (an unreadable
or corrupt store) do not: they are not the caller's mistake.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "ClusterError",
    "ClusterUnavailable",
    "InvalidEdit",
    "InvalidEndpoint",
    "InvalidListId",
    "InvalidPassword",
    "InvalidUserName",
    "ListDeleted",
    "LoginFailed",
    "MalformedMessage",
    "NotLoggedIn",
    "RequestRefused",
    "SessionExpired",
    "SessionInvalid",
    "StaleState",
    "StoreCorrupt",
    "StoreError",
    "UnknownItem",
    "UnknownList",
    "UnsyncedEdits",
    "UserExists",
    "WrongStateType",
]


class ClusterError(Exception):
    """Base class of every error raised by :mod:`reference_cluster`."""


# -- stores -------------------------------------------------------------------------------


class StoreError(ClusterError):
    """A store file cannot be opened or used (not a database, another program's file, a
    newer schema, a disk error). The message names the file."""


class StoreCorrupt(StoreError):
    """A row read from a store is not what this program wrote (garbage, a wrong type, a
    truncated encoding). The message names the table, the row and what was wrong."""


class InvalidListId(ClusterError, ValueError):
    """A list id is not a UUID in its canonical text form."""


class WrongStateType(ClusterError, TypeError):
    """A store was handed a state (or delta) of another type than the one it holds."""


class StaleState(ClusterError, ValueError):
    """A state to save does not include what the store already holds; saving it would
    lose edits (and let a replica reuse a dot)."""


class ListDeleted(ClusterError, ValueError):
    """The list was deleted by its owner; it takes no more edits."""


class InvalidEdit(ClusterError, ValueError):
    """An edit of a shopping list got a bad argument (an empty item name, a quantity out
    of range, a change of 0, a drop below zero). The list was not changed."""


class UnknownItem(InvalidEdit):
    """An edit names an item that is not on the list, as this replica sees it."""


class AccessDenied(ClusterError, ValueError):
    """The user may not do this to the list (only the owner may delete it)."""


class UnknownList(ClusterError, ValueError):
    """No list on this device matches the id (or the prefix matches several)."""


# -- accounts -----------------------------------------------------------------------------


class InvalidUserName(ClusterError, ValueError):
    """A user name breaks the naming rules; the message says which."""


class InvalidPassword(ClusterError, ValueError):
    """A new password breaks the length rules; the message says which (never the
    password)."""


class UserExists(ClusterError, ValueError):
    """Sign-up with a user name that is already taken."""


class LoginFailed(ClusterError, ValueError):
    """Unknown user name or wrong password (deliberately not told apart)."""


class SessionInvalid(ClusterError, ValueError):
    """A session token that the server does not know (or that was logged out)."""


class SessionExpired(SessionInvalid):
    """A session token that was valid but whose time is up; log in again."""


class NotLoggedIn(ClusterError, ValueError):
    """A command that needs a user ran before any sign-up or login on this device."""


class InvalidEndpoint(ClusterError, ValueError):
    """A ZeroMQ endpoint (a flag, an environment variable) is not one: no scheme, no port,
    a port outside 1..65535, a host that cannot be connected to."""


class KeysMissing(ClusterError, FileNotFoundError):
    """A CURVE key file a process needs is missing or unreadable (the message names it
    and says how to make the keys: ``shoplist cluster keys``). Also: no broker key is
    configured for a client (``--broker-key``, ``SHOPLIST_BROKER_KEY``)."""


class UnsyncedEdits(ClusterError, ValueError):
    """Forgetting a list on this device would leave edits that no server has yet (the
    command says how to sync first, or to insist)."""


# -- protocol -----------------------------------------------------------------------------


class ClusterUnavailable(ClusterError):
    """No broker answered in time, or no server was live: the cluster cannot be reached
    now (edits stay saved on the device and sync later). Recoverable by waiting."""


class RequestRefused(ClusterError, ValueError):
    """The cluster answered a request with an error that a retry cannot fix;
    :attr:`code` is the wire error code (see ``messages.ERROR_CODES``)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class MalformedMessage(ClusterError, ValueError):
    """Bytes from the network are not a valid message: not JSON, an unknown kind or wire
    version, a missing or unexpected key, or a field out of its domain. The message names
    the path of the first bad field; :attr:`code` is the error code a core answers with
    (``malformed``, ``unknown_kind`` or ``unsupported_version``)."""

    def __init__(self, message: str, *, code: str = "malformed") -> None:
        super().__init__(message)
        self.code = code
