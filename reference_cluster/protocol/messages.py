"""The wire protocol: one closed family of message classes and their codec.

Every message is a frozen attrs class whose fields are checked at construction, so a
message object that exists is well formed. On the wire a message is one JSON object with
sorted keys and no spaces::

    {"kind": "sync", "v": 1, "request_id": "...", "list_id": "...", ...}

``v`` is :data:`WIRE_VERSION`; ``kind`` selects the class in :data:`KINDS`, the one table
from kind to class. :func:`decode` checks the version, the kind, the exact key set and
every field, and raises :class:`~reference_cluster.errors.MalformedMessage` (a
``ValueError``) with the path of the first bad field. The cores catch it and answer with
an :class:`ErrorReply`; nothing read from the network reaches ``eval`` or ``pickle``.

CRDT states (deltas, whole states) and causal contexts travel in their canonical
``to_dict()`` form. The codec checks their outer shape; the core that uses one decodes it
with the document type's ``from_dict`` (the broker, which only routes, never pays for
that) and answers a state that does not decode with a ``bad_state`` error. The encoded
forms held by a message are shared, not copied: treat them as read-only.

Adding a kind is compatible (an old peer answers ``unknown_kind``); changing a field is
not, and bumps :data:`WIRE_VERSION`.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, TypeAlias

import attrs

from crdts._codec import describe
from reference_cluster.errors import MalformedMessage
from reference_cluster.protocol.hashtree import check_prefix

__all__ = [
    "ERROR_CODES",
    "KINDS",
    "MAX_MEMBER_CHANGES",
    "MAX_MESSAGE_BYTES",
    "RETRYABLE_CODES",
    "WIRE_VERSION",
    "AccountDone",
    "AccountRequest",
    "AeContexts",
    "AeDeltas",
    "AeLeaves",
    "AeTree",
    "Announce",
    "BrokerStatus",
    "ChangePassword",
    "DeleteAccount",
    "Deliver",
    "DirectoryDigest",
    "DirectoryPush",
    "EncodedContext",
    "EncodedState",
    "ErrorReply",
    "Forward",
    "Goodbye",
    "Heartbeat",
    "Hint",
    "ListsReply",
    "ListsRequest",
    "LogIn",
    "LogOut",
    "Members",
    "MembersReply",
    "MembershipUpdate",
    "Message",
    "Propagate",
    "Relay",
    "Replicate",
    "Reply",
    "Request",
    "ServerStatus",
    "SignUp",
    "Status",
    "Stored",
    "SyncReply",
    "SyncRequest",
    "Welcome",
    "check_list_id",
    "decode",
    "encode",
]

WIRE_VERSION: Final = 2
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""Larger frames are refused before parsing."""

MAX_ID = 128
MAX_USER_ID = 64
"""Most characters in a user id (the bound the server store keeps for a list's owner)."""
MAX_TOKEN = 512
MAX_DETAIL = 2000
"""Most characters in an :class:`ErrorReply`'s detail (and in a decode error's text)."""
MAX_SECRET = 4096
MAX_ITEMS = 1_000_000
MAX_NAT = 2**53

EncodedState: TypeAlias = Mapping[str, Any]
"""A CRDT state or delta in its ``to_dict()`` form."""
EncodedContext: TypeAlias = Mapping[str, Any]
"""A :class:`crdts.DotContext` in its ``to_dict()`` form."""

ERROR_CODES: Final = frozenset(
    {
        "bad_state",  # a delta or context in the request does not decode as the list type
        # -- authorship (reference_cluster.cores.authorship) --
        "behind",  # the push claims others' dots this server has not seen yet: retry
        # --
        # -- accounts (reference_cluster.cores.directory) --
        "busy",  # the server's password-hashing queue is full: try again in a moment
        "quota",  # the user owns as many lists as a user may
        "rate_limited",  # too many password attempts (per account or per source); see detail
        # --
        "forbidden",  # the user may not do this (only a list's owner may delete it)
        "invalid",  # a sign-up with a user name or password that breaks the rules
        "login_failed",  # unknown user name or wrong password
        "malformed",  # the frame is not a valid message (see the detail)
        "not_holder",  # this server does not hold the list (placement: another server does)
        "persist_failed",  # the server's store failed to write the delta
        "unauthorized",  # no session token, or a malformed or expired one: log in again
        "unavailable",  # no live server holds the list now, or too few copies in time
        "unexpected_kind",  # a valid message sent to a role that does not take it
        "unknown_kind",  # a kind this peer does not know (a newer peer?)
        "unknown_session",  # a token this server does not know (yet: sessions replicate)
        "unsupported_version",  # a wire version this peer does not speak
        "user_exists",  # a sign-up with a user name that is taken
    }
)
RETRYABLE_CODES: Final = frozenset(
    {"not_holder", "persist_failed", "unavailable", "unknown_session"}
    | {"busy"}  # accounts: a full hashing queue at one server
    | {"behind"}  # authorship: this server has not yet seen dots the client learned
)
"""Errors after which the same request may succeed later (through the other broker)."""

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEX32 = re.compile(r"[0-9a-f]{32}\Z")
MAX_TREE_NODES: Final = 4096
"""Most tree nodes in one :class:`AeTree` or :class:`AeLeaves`."""


# -- field checks --------------------------------------------------------------------------


def _malformed(text: str, *, code: str = "malformed") -> MalformedMessage:
    """A MalformedMessage whose text fits an :class:`ErrorReply`'s detail."""
    if len(text) > MAX_DETAIL:
        text = text[: MAX_DETAIL - 3] + "..."
    return MalformedMessage(text, code=code)


def _short(value: object) -> str:
    """A ``repr`` of a value from the network, bounded in length (and cost)."""
    shown = describe(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _fail(path: str, expected: str, value: object) -> MalformedMessage:
    return _malformed(f"{path}: expected {expected}, got {_short(value)}")


def check_list_id(value: object, path: str = "list_id") -> str:
    """Return ``value`` if it is a UUID in canonical text form, else raise.

    Raises:
        MalformedMessage: anything else.
    """
    if type(value) is str and len(value) == 36:
        try:
            if str(uuid.UUID(value)) == value:
                return value
        except ValueError:
            pass
    raise _fail(path, "a list id (a UUID in canonical form)", value)


def _check_id(value: object, path: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_ID or not value.isprintable():
        raise _fail(path, f"a printable string of 1 to {MAX_ID} characters", value)
    return value


def _check_user_id(value: object, path: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_USER_ID or not value.isprintable():
        raise _fail(path, f"a user id (a printable string of 1 to {MAX_USER_ID} characters)", value)
    return value


def _check_nat(value: object, path: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_NAT:
        raise _fail(path, "an int >= 0", value)
    return value


def _check_state(value: object, path: str) -> EncodedState:
    if (
        not isinstance(value, Mapping)
        or type(value.get("type")) is not str
        or type(value.get("v")) is not int
    ):
        raise _fail(path, "an encoded state (an object with 'type' and 'v')", value)
    return value


def _check_context(value: object, path: str) -> EncodedContext:
    if not isinstance(value, Mapping) or not set(value) <= {"vv", "cloud"}:
        raise _fail(path, "an encoded context (an object with 'vv' and 'cloud')", value)
    return value


def _check_map(check: Callable[[object, str], object]) -> Callable[[object, str], object]:
    def check_map(value: object, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise _fail(path, "an object keyed by list id", value)
        for key, item in value.items():
            check_list_id(key, f"{path} key")
            check(item, f"{path}[{key}]")
        return value

    return check_map


def _check_digest(value: object, path: str) -> str:
    if type(value) is not str or not _HEX64.match(value):
        raise _fail(path, "a SHA-256 digest in lower-case hex", value)
    return value


def _check_nodes(value: object, path: str) -> Mapping[str, str]:
    if not isinstance(value, Mapping) or len(value) > MAX_TREE_NODES:
        raise _fail(path, f"an object of at most {MAX_TREE_NODES} tree nodes", value)
    for key, digest in value.items():
        problem = check_prefix(key)
        if problem is not None:
            raise _malformed(f"{path} key: {problem}")
        if type(digest) is not str or not _HEX32.match(digest):
            raise _fail(f"{path}[{key}]", "a node digest (32 lower-case hex digits)", digest)
    return value


MAX_MEMBERS: Final = 64
"""Most servers in a membership."""
MAX_ENDPOINT = 256


def _check_members(value: object, path: str) -> Mapping[str, str]:
    if not isinstance(value, Mapping) or not 0 < len(value) <= MAX_MEMBERS:
        raise _fail(path, f"an object of 1 to {MAX_MEMBERS} servers", value)
    for server, endpoint in value.items():
        _check_id(server, f"{path} key")
        if type(endpoint) is not str or len(endpoint) > MAX_ENDPOINT or not endpoint.isprintable():
            raise _fail(f"{path}[{_short(server)}]", "an end point (a printable string)", endpoint)
    return value


def _check_member_ids(value: object, path: str) -> tuple[str, ...]:
    if type(value) is not tuple or len(value) > MAX_MEMBERS:
        raise _fail(path, f"an array of at most {MAX_MEMBERS} server ids", value)
    for i, item in enumerate(value):
        _check_id(item, f"{path}[{i}]")
    return value


def _check_prefixes(value: object, path: str) -> tuple[str, ...]:
    if type(value) is not tuple or len(value) > MAX_TREE_NODES:
        raise _fail(path, f"an array of at most {MAX_TREE_NODES} tree nodes", value)
    for i, prefix in enumerate(value):
        problem = check_prefix(prefix)
        if problem is not None:
            raise _malformed(f"{path}[{i}]: {problem}")
    return value


def _check_token(value: object, path: str) -> str | None:
    if value is None:
        return None
    if type(value) is not str or not 0 < len(value) <= MAX_TOKEN or not value.isprintable():
        raise _fail(path, f"null or a printable token of 1 to {MAX_TOKEN} characters", value)
    return value


def _check_code(value: object, path: str) -> str:
    if value not in ERROR_CODES or type(value) is not str:
        raise _fail(path, f"one of {sorted(ERROR_CODES)}", value)
    return value


def _check_detail(value: object, path: str) -> str:
    if type(value) is not str or len(value) > MAX_DETAIL:
        raise _fail(path, f"a string of at most {MAX_DETAIL} characters", value)
    return value


def _check_secret(value: object, path: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_SECRET:
        # Never echo the value: it may be a password.
        raise _malformed(f"{path}: expected a string of 1 to {MAX_SECRET} characters")
    return value


def _check_number(value: object, path: str) -> float:
    if type(value) not in (int, float) or not 0 <= value <= MAX_NAT:  # type: ignore[operator]
        raise _fail(path, "a number >= 0", value)
    return value  # type: ignore[return-value]


def _check_flag(value: object, path: str) -> bool:
    if type(value) is not bool:
        raise _fail(path, "true or false", value)
    return value


def _as_tuple(value: object) -> object:
    """Converter: a JSON array arrives as a list; keep messages immutable."""
    return tuple(value) if type(value) is list else value


def _check_tuple(check: Callable[[object, str], object]) -> Callable[[object, str], object]:
    def check_tuple(value: object, path: str) -> object:
        if type(value) is not tuple or len(value) > MAX_ITEMS:
            raise _fail(path, f"an array of at most {MAX_ITEMS} items", value)
        for i, item in enumerate(value):
            check(item, f"{path}[{i}]")
        return value

    return check_tuple


def _check_record(fields: Mapping[str, Callable[[object, str], object]]) -> Any:
    """A check for a JSON object with exactly the keys of ``fields``, each checked."""

    def check_record(value: object, path: str) -> object:
        if not isinstance(value, Mapping) or set(value) != set(fields):
            raise _fail(path, f"an object with keys {sorted(fields)}", value)
        for key, check in fields.items():
            check(value[key], f"{path}.{key}")
        return value

    return check_record


def _optional(check: Callable[[object, str], object]) -> Callable[[object, str], object]:
    def check_optional(value: object, path: str) -> object:
        return None if value is None else check(value, path)

    return check_optional


def _check_record_optional(
    fields: Mapping[str, Callable[[object, str], object]],
    optional: Mapping[str, Callable[[object, str], object]],
) -> Any:
    """A check for a JSON object with the keys of ``fields`` and any of ``optional``."""
    required = set(fields)
    allowed = required | set(optional)

    def check_record(value: object, path: str) -> object:
        if not isinstance(value, Mapping) or not required <= set(value) <= allowed:
            shown = f"{sorted(fields)} (and optionally {sorted(optional)})"
            raise _fail(path, f"an object with keys {shown}", value)
        for key, item in value.items():
            (fields.get(key) or optional[key])(item, f"{path}.{key}")
        return value

    return check_record


# Directory records (reference_cluster.cores.directory). An account's "version" counts
# its password changes; a session's "replica" is the device it is bound to and its
# "version" the account version it was opened (or last confirmed) at.
_check_account = _check_record_optional(
    {
        "user_id": _check_user_id,
        "name": _check_id,
        "password_hash": _check_secret,
        "created": _check_number,
    },
    {"version": _check_nat},
)
_check_session = _check_record_optional(
    {"token_hash": _check_digest, "user_id": _check_user_id, "expires": _check_number},
    {"replica": _optional(_check_id), "version": _check_nat},
)
_check_revoked = _check_record({"token_hash": _check_digest, "expires": _check_number})
_check_deleted_account = _check_record(
    {
        "user_id": _check_user_id,
        "name": _check_id,
        "created": _check_number,
        "deleted": _check_number,
    }
)


def _nested(*classes: type[Message]) -> Callable[[object, str], object]:
    expected = f"a {classes[0].kind} message"
    if len(classes) > 1:
        expected += f" (or {', '.join(c.kind for c in classes[1:])})"

    def check_nested(value: object, path: str) -> object:
        if not isinstance(value, classes):
            raise _fail(path, expected, value)
        return value

    return check_nested


def _valid(check: Callable[[object, str], object]) -> Callable[[Any, Any, Any], None]:
    """An attrs validator that runs ``check(value, path)`` at construction."""

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check(value, f"{type(instance).__name__}.{attribute.name}")

    return validate


# -- the family ----------------------------------------------------------------------------


class Message:
    """Base of every message; ``kind`` is the tag written on the wire."""

    __slots__ = ()
    kind: ClassVar[str]


@attrs.frozen
class SyncRequest(Message):
    """Client to broker (and, inside :class:`Forward`, to a server): push and pull one list.

    Attributes:
        request_id: chosen by the client; every attempt of one request reuses it.
        list_id: the list; brokers route by it.
        replica: the client's replica id (for logs).
        attempt: 0 for the first send; a broker sends attempt ``k`` to the ``k``-th live
            holder of the list, so retries avoid a server that died but is not yet purged.
        context: the client's causal context; the reply carries exactly what it lacks.
            ``None`` asks for the whole state.
        delta: the join of the client's queued deltas, or ``None`` for a pure pull.
        token: the session token (optional today; checked once accounts exist).
        since: the ``version`` of the last reply for this list that the client joined,
            or ``None``. A server that recognises it answers with what changed since
            (the cost of the change, not of the list); otherwise with what ``context``
            lacks.
    """

    kind: ClassVar[str] = "sync"
    request_id: str = attrs.field(validator=_valid(_check_id))
    list_id: str = attrs.field(validator=_valid(check_list_id))
    replica: str = attrs.field(validator=_valid(_check_id))
    attempt: int = attrs.field(validator=_valid(_check_nat))
    context: EncodedContext | None = attrs.field(validator=_valid(_optional(_check_context)))
    delta: EncodedState | None = attrs.field(validator=_valid(_optional(_check_state)))
    token: str | None = attrs.field(validator=_valid(_check_token), default=None)
    since: str | None = attrs.field(validator=_valid(_check_token), default=None)


@attrs.frozen
class SyncReply(Message):
    """Server to client (through the broker): the pushed delta is durable at the server,
    and here is what the client lacks (``None`` if the server has no such list).

    ``version`` names the server's state of the list that the client holds once it has
    joined ``delta``; the client sends it back as :attr:`SyncRequest.since`. It is opaque
    to the client, and ``None`` from a server that offers none.
    """

    kind: ClassVar[str] = "sync_ok"
    request_id: str = attrs.field(validator=_valid(_check_id))
    list_id: str = attrs.field(validator=_valid(check_list_id))
    delta: EncodedState | None = attrs.field(validator=_valid(_optional(_check_state)))
    version: str | None = attrs.field(validator=_valid(_check_token), default=None)
    copies: int | None = attrs.field(validator=_valid(_optional(_check_nat)), default=None)
    """For a push: how many servers held the pushed delta durably when the reply left
    (the replying holder, the other holders that confirmed it and the servers that took
    it as a hint); at least the write quorum. ``None`` for a pull."""


@attrs.frozen
class ErrorReply(Message):
    """Any peer to any peer: the request (``request_id`` if it could be read) failed.

    A core never answers an ErrorReply, so two peers cannot trade errors forever.
    """

    kind: ClassVar[str] = "error"
    request_id: str | None = attrs.field(validator=_valid(_optional(_check_id)))
    code: str = attrs.field(validator=_valid(_check_code))
    detail: str = attrs.field(validator=_valid(_check_detail), default="")

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later."""
        return self.code in RETRYABLE_CODES

    @classmethod
    def about(cls, request_id: str | None, code: str, error: BaseException | str) -> ErrorReply:
        """An error reply that tells of ``error`` (an exception or a text), cut to
        :data:`MAX_DETAIL` printable characters so that it always builds."""
        text = "".join(ch if ch.isprintable() else " " for ch in str(error)[: MAX_DETAIL + 1])
        if len(text) > MAX_DETAIL:
            text = text[: MAX_DETAIL - 3] + "..."
        return cls(request_id, code, text)


@attrs.frozen
class SignUp(Message):
    """Client to broker (and, inside :class:`Forward`, to a server): create an account and
    open a session. Answered by :class:`Welcome`. The server checks the naming and length
    rules and keeps only a salted hash of the password.

    Attributes:
        request_id: chosen by the client; a retry reuses it, so a server that already
            answered it answers the same again.
        name: the user name.
        password: the password, in clear (never logged or shown).
        attempt: as in :class:`SyncRequest`; the broker routes by the user name.
        replica: the device's replica id; the session is bound to it, and a sync made
            with the session must name the same replica (``forbidden`` otherwise).
    """

    kind: ClassVar[str] = "signup"
    request_id: str = attrs.field(validator=_valid(_check_id))
    name: str = attrs.field(validator=_valid(_check_id))
    password: str = attrs.field(validator=_valid(_check_secret), repr=False)
    attempt: int = attrs.field(validator=_valid(_check_nat), default=0)
    replica: str | None = attrs.field(validator=_valid(_optional(_check_id)), default=None)
    """The device's replica id; the session binds it (a sync must carry the same one)."""


@attrs.frozen
class LogIn(Message):
    """Client to broker (and to a server): open a session. Answered by :class:`Welcome`,
    or ``login_failed`` for an unknown name or a wrong password (not told apart)."""

    kind: ClassVar[str] = "login"
    request_id: str = attrs.field(validator=_valid(_check_id))
    name: str = attrs.field(validator=_valid(_check_id))
    password: str = attrs.field(validator=_valid(_check_secret), repr=False)
    attempt: int = attrs.field(validator=_valid(_check_nat), default=0)
    replica: str | None = attrs.field(validator=_valid(_optional(_check_id)), default=None)
    """The device's replica id, as in :class:`SignUp`."""


@attrs.frozen
class Welcome(Message):
    """Server to client: a session is open. ``token`` goes with every later request;
    ``expires`` is when it stops working (seconds since the epoch); ``created`` says that
    this sign-up made the account (False for a login, and for a sign-up that found the
    account already there with the same password)."""

    kind: ClassVar[str] = "welcome"
    request_id: str = attrs.field(validator=_valid(_check_id))
    user_id: str = attrs.field(validator=_valid(_check_id))
    name: str = attrs.field(validator=_valid(_check_id))
    token: str = attrs.field(validator=_valid(_check_secret), repr=False)
    expires: float = attrs.field(validator=_valid(_check_number))
    created: bool = attrs.field(validator=_valid(_check_flag), default=False)


@attrs.frozen
class ListsRequest(Message):
    """Client to broker (and to a server): which lists does the session's user own?"""

    kind: ClassVar[str] = "lists"
    request_id: str = attrs.field(validator=_valid(_check_id))
    token: str = attrs.field(validator=_valid(_check_secret), repr=False)
    attempt: int = attrs.field(validator=_valid(_check_nat), default=0)


@attrs.frozen
class ListsReply(Message):
    """Server to client: the user's id, the ids of the lists the user owns, and of the
    lists others shared with the user (a member of them), each sorted."""

    kind: ClassVar[str] = "lists_ok"
    request_id: str = attrs.field(validator=_valid(_check_id))
    user_id: str = attrs.field(validator=_valid(_check_id))
    owned: tuple[str, ...] = attrs.field(
        converter=_as_tuple, validator=_valid(_check_tuple(check_list_id))
    )
    shared: tuple[str, ...] = attrs.field(
        converter=_as_tuple, validator=_valid(_check_tuple(check_list_id)), default=()
    )


# -- access lists --------------------------------------------------------------------------

MAX_MEMBER_CHANGES = 100
"""Most user names one :class:`Members` request may add or remove."""


def _check_names(value: object, path: str) -> tuple[str, ...]:
    if type(value) is not tuple or len(value) > MAX_MEMBER_CHANGES:
        raise _fail(path, f"an array of at most {MAX_MEMBER_CHANGES} user names", value)
    for i, item in enumerate(value):
        _check_user_id(item, f"{path}[{i}]")
    return value


@attrs.frozen
class Members(Message):
    """Client to broker (and to a server): read, and change, who may use a list. The
    owner may add and remove anyone (by user name); a member may remove only themself
    (leave); anyone else gets ``forbidden``. Answered by :class:`MembersReply`."""

    kind: ClassVar[str] = "members"
    request_id: str = attrs.field(validator=_valid(_check_id))
    token: str = attrs.field(validator=_valid(_check_secret), repr=False)
    list_id: str = attrs.field(validator=_valid(check_list_id))
    add: tuple[str, ...] = attrs.field(converter=_as_tuple, validator=_valid(_check_names))
    remove: tuple[str, ...] = attrs.field(converter=_as_tuple, validator=_valid(_check_names))
    attempt: int = attrs.field(validator=_valid(_check_nat), default=0)


@attrs.frozen
class MembersReply(Message):
    """Server to client: a list's owner and members (user names, sorted) after the
    request's changes. ``owner`` is None while no server has recorded one (the list was
    never synced)."""

    kind: ClassVar[str] = "members_ok"
    request_id: str = attrs.field(validator=_valid(_check_id))
    list_id: str = attrs.field(validator=_valid(check_list_id))
    owner: str | None = attrs.field(validator=_valid(_optional(_check_user_id)))
    members: tuple[str, ...] = attrs.field(
        converter=_as_tuple, validator=_valid(_check_tuple(_check_user_id))
    )


# -- accounts: logout, password change, account deletion ----------------------------------


@attrs.frozen
class LogOut(Message):
    """Client to broker (and to a server): end this session on every server. Answered
    by :class:`AccountDone` (``logged_out``)."""

    kind: ClassVar[str] = "logout"
    request_id: str = attrs.field(validator=_valid(_check_id))
    token: str = attrs.field(validator=_valid(_check_secret), repr=False)
    attempt: int = attrs.field(validator=_valid(_check_nat), default=0)


@attrs.frozen
class ChangePassword(Message):
    """Client to broker (and to a server): replace the password of the session's user;
    every other session of the user ends. Answered by :class:`AccountDone`
    (``password_changed``), ``login_failed`` if ``old_password`` is wrong, ``invalid`` if
    ``new_password`` breaks the rules."""

    kind: ClassVar[str] = "passwd"
    request_id: str = attrs.field(validator=_valid(_check_id))
    token: str = attrs.field(validator=_valid(_check_secret), repr=False)
    old_password: str = attrs.field(validator=_valid(_check_secret), repr=False)
    new_password: str = attrs.field(validator=_valid(_check_secret), repr=False)
    attempt: int = attrs.field(validator=_valid(_check_nat), default=0)


@attrs.frozen
class DeleteAccount(Message):
    """Client to broker (and to a server): delete the session's user, confirmed by the
    password. Its sessions end, its lists become unreachable, its name stays reserved.
    Answered by :class:`AccountDone` (``account_deleted``)."""

    kind: ClassVar[str] = "delete_account"
    request_id: str = attrs.field(validator=_valid(_check_id))
    token: str = attrs.field(validator=_valid(_check_secret), repr=False)
    password: str = attrs.field(validator=_valid(_check_secret), repr=False)
    attempt: int = attrs.field(validator=_valid(_check_nat), default=0)


_ACCOUNT_ACTIONS = frozenset({"logged_out", "password_changed", "account_deleted"})


def _check_action(value: object, path: str) -> str:
    if type(value) is not str or value not in _ACCOUNT_ACTIONS:
        raise _fail(path, f"one of {sorted(_ACCOUNT_ACTIONS)}", value)
    return value


@attrs.frozen
class AccountDone(Message):
    """Server to client: a logout, password change or account deletion is done;
    ``sessions_ended`` counts the sessions it ended at this server."""

    kind: ClassVar[str] = "account_ok"
    request_id: str = attrs.field(validator=_valid(_check_id))
    action: str = attrs.field(validator=_valid(_check_action))
    sessions_ended: int = attrs.field(validator=_valid(_check_nat), default=0)


AccountRequest: TypeAlias = (
    SignUp | LogIn | ListsRequest | LogOut | ChangePassword | DeleteAccount | Members
)
Reply: TypeAlias = SyncReply | ErrorReply | Welcome | ListsReply | AccountDone | MembersReply


@attrs.frozen
class Forward(Message):
    """Broker to server: a client's request; ``client`` is the client's address at the
    broker, echoed back in :class:`Deliver`."""

    kind: ClassVar[str] = "forward"
    client: str = attrs.field(validator=_valid(_check_id))
    request: SyncRequest = attrs.field(validator=_valid(_nested(SyncRequest)))


@attrs.frozen
class Relay(Message):
    """Broker to server: a client's account request (sign-up, login, the user's lists),
    as :class:`Forward` is for a sync; the answer comes back in :class:`Deliver`."""

    kind: ClassVar[str] = "relay"
    client: str = attrs.field(validator=_valid(_check_id))
    request: AccountRequest = attrs.field(
        validator=_valid(
            _nested(SignUp, LogIn, ListsRequest, LogOut, ChangePassword, DeleteAccount, Members)
        )
    )
    source: str | None = attrs.field(validator=_valid(_optional(_check_id)), default=None)
    """The client's network address as the broker saw it (for limits and logs)."""


@attrs.frozen
class Deliver(Message):
    """Server to broker: pass ``reply`` to the client at address ``client``."""

    kind: ClassVar[str] = "deliver"
    client: str = attrs.field(validator=_valid(_check_id))
    reply: Reply = attrs.field(
        validator=_valid(
            _nested(SyncReply, ErrorReply, Welcome, ListsReply, AccountDone, MembersReply)
        )
    )


@attrs.frozen
class Announce(Message):
    """Server to broker, on start: the server is ready. ``incarnation`` grows with each
    restart (for logs)."""

    kind: ClassVar[str] = "announce"
    server: str = attrs.field(validator=_valid(_check_id))
    incarnation: int = attrs.field(validator=_valid(_check_nat))


@attrs.frozen
class Heartbeat(Message):
    """Server to broker, every heartbeat interval: the server is alive, and the
    membership it follows (its ``epoch`` and its ``members``; empty before any is
    known), so that a broker routes by the newest membership it has heard."""

    kind: ClassVar[str] = "heartbeat"
    server: str = attrs.field(validator=_valid(_check_id))
    epoch: int = attrs.field(validator=_valid(_check_nat), default=0)
    members: tuple[str, ...] = attrs.field(
        converter=_as_tuple, validator=_valid(_check_member_ids), default=()
    )


@attrs.frozen
class Goodbye(Message):
    """Server to broker, on orderly shutdown: purge me now."""

    kind: ClassVar[str] = "goodbye"
    server: str = attrs.field(validator=_valid(_check_id))


@attrs.frozen
class Propagate(Message):
    """Server to server: a delta just applied at ``origin``; join it (no reply)."""

    kind: ClassVar[str] = "propagate"
    origin: str = attrs.field(validator=_valid(_check_id))
    list_id: str = attrs.field(validator=_valid(check_list_id))
    delta: EncodedState = attrs.field(validator=_valid(_check_state))


@attrs.frozen
class Replicate(Message):
    """Server to server: join ``delta`` into ``list_id``, make it durable, and answer
    :class:`Stored` with ``ask``. A list's coordinating holder sends a client's push to
    the other holders this way (write quorum), and a server hands a hint back to its
    holder this way (hinted handoff)."""

    kind: ClassVar[str] = "replicate"
    origin: str = attrs.field(validator=_valid(_check_id))
    list_id: str = attrs.field(validator=_valid(check_list_id))
    delta: EncodedState = attrs.field(validator=_valid(_check_state))
    ask: int = attrs.field(validator=_valid(_check_nat))


@attrs.frozen
class Hint(Message):
    """Server to server (sloppy quorum): ``holder``, a holder of ``list_id``, did not
    confirm a write; keep ``delta`` durably for it, answer :class:`Stored` with ``ask``,
    and hand the hint to ``holder`` (a :class:`Replicate`) once it answers again."""

    kind: ClassVar[str] = "hint"
    origin: str = attrs.field(validator=_valid(_check_id))
    list_id: str = attrs.field(validator=_valid(check_list_id))
    holder: str = attrs.field(validator=_valid(_check_id))
    delta: EncodedState = attrs.field(validator=_valid(_check_state))
    ask: int = attrs.field(validator=_valid(_check_nat))


@attrs.frozen
class MembershipUpdate(Message):
    """Operator or server to server: the member servers (``{id: peer end point}``, an
    end point may be empty where the sender does not know it) at ``epoch``. A receiver
    adopts a newer membership (a larger epoch; at equal epochs the larger sorted list of
    members), persists it and spreads it; it answers an older one with its own."""

    kind: ClassVar[str] = "membership"
    origin: str = attrs.field(validator=_valid(_check_id))
    epoch: int = attrs.field(validator=_valid(_check_nat))
    servers: Mapping[str, str] = attrs.field(validator=_valid(_check_members))


@attrs.frozen
class Stored(Message):
    """Server to server: the delta of the :class:`Replicate` or :class:`Hint` numbered
    ``ask`` is durable at ``origin``."""

    kind: ClassVar[str] = "stored"
    origin: str = attrs.field(validator=_valid(_check_id))
    list_id: str = attrs.field(validator=_valid(check_list_id))
    ask: int = attrs.field(validator=_valid(_check_nat))


@attrs.frozen
class AeTree(Message):
    """Anti-entropy by descent (:mod:`reference_cluster.protocol.hashtree`): digests of
    nodes of the sender's hash tree, keyed by node name (a hex prefix, ``""`` the root).
    A round starts with the root alone. The receiver answers each node whose digest
    differs from its own with that node's children (another ``AeTree``) or, for a node
    with few lists under it, with those lists' digests (:class:`AeLeaves`); equal nodes
    get no answer, so an idle round is this one message."""

    kind: ClassVar[str] = "ae_tree"
    origin: str = attrs.field(validator=_valid(_check_id))
    round: int = attrs.field(validator=_valid(_check_nat))
    nodes: Mapping[str, str] = attrs.field(validator=_valid(_check_nodes))
    epoch: int = attrs.field(validator=_valid(_check_nat), default=0)
    """The sender's membership epoch: trees are compared only at equal epochs; a
    receiver at another epoch answers with its :class:`MembershipUpdate`."""


@attrs.frozen
class AeLeaves(Message):
    """Anti-entropy, the bottom of a descent: the digest of every list the sender holds
    under ``prefixes``. The receiver answers with :class:`AeContexts` for the lists under
    those prefixes (its own or the sender's) whose digests differ."""

    kind: ClassVar[str] = "ae_leaves"
    origin: str = attrs.field(validator=_valid(_check_id))
    round: int = attrs.field(validator=_valid(_check_nat))
    prefixes: tuple[str, ...] = attrs.field(converter=_as_tuple, validator=_valid(_check_prefixes))
    digests: Mapping[str, str] = attrs.field(validator=_valid(_check_map(_check_digest)))


@attrs.frozen
class AeContexts(Message):
    """Anti-entropy step 2, peer to initiator: the lists whose digests differ, with the
    peer's context of each (empty for a list the peer lacks)."""

    kind: ClassVar[str] = "ae_contexts"
    origin: str = attrs.field(validator=_valid(_check_id))
    round: int = attrs.field(validator=_valid(_check_nat))
    contexts: Mapping[str, EncodedContext] = attrs.field(
        validator=_valid(_check_map(_check_context))
    )


@attrs.frozen
class AeDeltas(Message):
    """Anti-entropy steps 3 and 4: ``deltas`` holds exactly what the receiver's contexts
    lacked. In step 3 ``contexts`` holds the sender's contexts, asking for step 4; in
    step 4 it is empty and nobody answers."""

    kind: ClassVar[str] = "ae_deltas"
    origin: str = attrs.field(validator=_valid(_check_id))
    round: int = attrs.field(validator=_valid(_check_nat))
    deltas: Mapping[str, EncodedState] = attrs.field(validator=_valid(_check_map(_check_state)))
    contexts: Mapping[str, EncodedContext] = attrs.field(
        validator=_valid(_check_map(_check_context))
    )


@attrs.frozen
class Status(Message):
    """Anyone to a broker (front end) or a server (peer end point): who are you and what
    do you hold? A broker answers :class:`BrokerStatus`, a server :class:`ServerStatus`
    (with every list's encoded state if ``states`` is true). Tools and tests use it to
    see that a process is up."""

    kind: ClassVar[str] = "status"
    request_id: str = attrs.field(validator=_valid(_check_id))
    states: bool = attrs.field(validator=_valid(_check_flag), default=False)


@attrs.frozen
class BrokerStatus(Message):
    """Broker to the asker: its id and the servers it holds live, sorted."""

    kind: ClassVar[str] = "broker_status"
    request_id: str = attrs.field(validator=_valid(_check_id))
    broker: str = attrs.field(validator=_valid(_check_id))
    servers: tuple[str, ...] = attrs.field(
        converter=_as_tuple, validator=_valid(_check_tuple(_check_id))
    )


@attrs.frozen
class ServerStatus(Message):
    """Server to the asker: its id, how many times it started before, the digest of every
    list it holds, (if asked) their encoded states, the membership it follows (``epoch``,
    ``members``), and how many lists and hints it still has to hand to other servers."""

    kind: ClassVar[str] = "server_status"
    request_id: str = attrs.field(validator=_valid(_check_id))
    server: str = attrs.field(validator=_valid(_check_id))
    incarnation: int = attrs.field(validator=_valid(_check_nat))
    digests: Mapping[str, str] = attrs.field(validator=_valid(_check_map(_check_digest)))
    states: Mapping[str, EncodedState] = attrs.field(
        validator=_valid(_check_map(_check_state)), factory=dict
    )
    epoch: int = attrs.field(validator=_valid(_check_nat), default=0)
    members: tuple[str, ...] = attrs.field(
        converter=_as_tuple, validator=_valid(_check_member_ids), default=()
    )
    handing: int = attrs.field(validator=_valid(_check_nat), default=0)


@attrs.frozen
class DirectoryPush(Message):
    """Server to server: accounts, sessions and list owners (see
    :mod:`reference_cluster.cores.directory`). Sent with what just changed, and in full when a
    peer's :class:`DirectoryDigest` differs; ``answer`` asks the receiver to send its
    own in full back if the two still differ."""

    kind: ClassVar[str] = "directory"
    origin: str = attrs.field(validator=_valid(_check_id))
    accounts: tuple[Mapping[str, Any], ...] = attrs.field(
        converter=_as_tuple, validator=_valid(_check_tuple(_check_account))
    )
    sessions: tuple[Mapping[str, Any], ...] = attrs.field(
        converter=_as_tuple, validator=_valid(_check_tuple(_check_session))
    )
    owners: Mapping[str, str] = attrs.field(validator=_valid(_check_map(_check_user_id)))
    answer: bool = attrs.field(validator=_valid(_check_flag), default=False)
    revoked: tuple[Mapping[str, Any], ...] = attrs.field(
        converter=_as_tuple, validator=_valid(_check_tuple(_check_revoked)), default=()
    )
    """Ended sessions (logouts): ``{token_hash, expires}``, kept until they expire."""
    deleted: tuple[Mapping[str, Any], ...] = attrs.field(
        converter=_as_tuple, validator=_valid(_check_tuple(_check_deleted_account)), default=()
    )
    """Deleted accounts: ``{user_id, name, created, deleted}``, kept for ever."""
    members: Mapping[str, EncodedState] = attrs.field(
        validator=_valid(_check_map(_check_state)), factory=dict
    )
    """Lists' members: ``{list id: encoded AWORSet of user ids}`` (states or deltas)."""


@attrs.frozen
class DirectoryDigest(Message):
    """Server to server, every anti-entropy interval: the digest of the sender's
    directory. A peer whose directory differs answers with a full :class:`DirectoryPush`."""

    kind: ClassVar[str] = "directory_digest"
    origin: str = attrs.field(validator=_valid(_check_id))
    digest: str = attrs.field(validator=_valid(_check_digest))


Request: TypeAlias = SyncRequest

KINDS: Final[Mapping[str, type[Message]]] = {
    cls.kind: cls
    for cls in (
        SyncRequest,
        SyncReply,
        ErrorReply,
        Forward,
        Deliver,
        Announce,
        Heartbeat,
        Goodbye,
        Propagate,
        Replicate,
        Hint,
        Stored,
        MembershipUpdate,
        AeTree,
        AeLeaves,
        AeContexts,
        AeDeltas,
        SignUp,
        LogIn,
        Welcome,
        ListsRequest,
        ListsReply,
        Relay,
        Status,
        BrokerStatus,
        ServerStatus,
        DirectoryPush,
        DirectoryDigest,
        # accounts
        LogOut,
        ChangePassword,
        DeleteAccount,
        AccountDone,
        # access lists
        Members,
        MembersReply,
    )
}
"""Every message kind of :data:`WIRE_VERSION` and its class."""

_NESTED: Final = frozenset({"request", "reply"})


# -- the codec -----------------------------------------------------------------------------


def _to_wire(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": msg.kind}
    for a in attrs.fields(type(msg)):  # type: ignore[arg-type]
        value = getattr(msg, a.name)
        out[a.name] = _to_wire(value) if a.name in _NESTED else value
    return out


def encode(msg: Message) -> bytes:
    """The wire bytes of ``msg``: canonical JSON (sorted keys, no spaces, ASCII)."""
    wire = _to_wire(msg)
    wire["v"] = WIRE_VERSION
    return json.dumps(wire, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """``parse_float`` for the decoder: a number too large for a float (``1e999``) would
    parse as an infinity, which :func:`encode` cannot write back."""
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise _malformed(f"message: expected a finite number, got {shown}")
    return value


def _shown_keys(keys: set[str]) -> str:
    """The first few of ``keys``, sorted and each shortened, for an error message."""
    first = sorted(keys)[:5]
    shown = f"[{', '.join(_short(k) for k in first)}]"
    return shown if len(keys) <= len(first) else f"{shown[:-1]}, ...] ({len(keys)} keys)"


def _from_wire(data: object, path: str, *, top: bool) -> Message:
    if not isinstance(data, dict):
        raise _fail(path, "a JSON object", data)
    if top:
        version = data.get("v")
        if type(version) is not int or version != WIRE_VERSION:
            raise _malformed(
                f"{path}.v: unsupported wire version {_short(version)}, expected {WIRE_VERSION}",
                code="unsupported_version",
            )
    kind = data.get("kind")
    cls = KINDS.get(kind) if type(kind) is str else None
    if cls is None:
        raise _malformed(
            f"{path}.kind: unknown message kind {_short(kind)}, expected one of the "
            f"{len(KINDS)} kinds of wire version {WIRE_VERSION}",
            code="unknown_kind",
        )
    fields = attrs.fields(cls)  # type: ignore[arg-type]
    names = {a.name for a in fields}
    keys = set(data) - {"kind", "v"} if top else set(data) - {"kind"}
    extra = keys - names
    if extra:
        raise _malformed(f"{path} ({kind}): unexpected keys {_shown_keys(set(map(str, extra)))}")
    values: dict[str, Any] = {}
    for a in fields:
        if a.name not in data:
            if a.default is attrs.NOTHING:
                raise _malformed(f"{path} ({kind}): missing key {a.name!r}")
            continue
        value = data[a.name]
        if a.name in _NESTED:
            value = _from_wire(value, f"{path}.{a.name}", top=False)
        values[a.name] = value
    try:
        return cls(**values)
    except MalformedMessage:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - validators raise the above
        raise _malformed(f"{path} ({kind}): {exc}") from None


def decode(data: bytes) -> Message:
    """Decode and validate one message.

    Raises:
        MalformedMessage: the bytes are not a valid message of :data:`WIRE_VERSION`; the
            message names the path of the first bad field, and ``.code`` is the error code
            to answer with (``malformed``, ``unsupported_version`` or ``unknown_kind``).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail("message", "bytes", data)
    if len(data) > MAX_MESSAGE_BYTES:
        raise _malformed(f"message: {len(data)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        parsed = json.loads(
            bytes(data).decode("utf-8"),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except MalformedMessage:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _malformed(f"message: not UTF-8 JSON ({str(exc)[:120]})") from None
    return _from_wire(parsed, "message", top=True)
