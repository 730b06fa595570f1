"""What a core asks its shell to do: the effects returned by every core method.

A core never performs I/O. Each call (``receive``, ``on_timer``, ``persisted``, ``edit``
...) returns a list of effects, and the shell carries them out **in order**:

* :class:`Send` -- encode the message (:func:`reference_cluster.protocol.messages.encode`) and send
  it to the peer address.
* :class:`Persist` (server) -- durably join ``delta`` into list ``list_id``, then call
  ``core.persisted(token, now)`` (or ``core.persist_failed(token, reason, now)``). The
  write may be batched with others (group commit); the core waits for the callback
  before it acknowledges anything that depends on it.
* :class:`DropHint` (server) -- delete a hint that its holder confirmed, if unchanged.
* :class:`DropList` (server) -- forget a list handed to its new holders, if unchanged.
* :class:`SaveMembership` (server) -- record a newer membership and reach its members.
* :class:`SaveEdit`, :class:`SaveMerge`, :class:`Acked` (client) -- durable before the
  shell goes on to the next effect: a client's store is local, so these are synchronous.
  Because a :class:`SaveEdit` comes before any :class:`Send` of its delta, a delta never
  leaves a device before the dot it uses is on disk.
* :class:`SyncFailed` (client) -- tell the user; nothing to store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import attrs

from reference_cluster.protocol.messages import Message

__all__ = [
    "Acked",
    "DropHint",
    "DropList",
    "Effect",
    "Persist",
    "SaveEdit",
    "SaveMembership",
    "SaveMerge",
    "Send",
    "SyncFailed",
]


@attrs.frozen
class Send:
    """Send ``message`` to the peer at address ``to``."""

    to: str
    message: Message


@attrs.frozen(eq=False)
class Persist:
    """Server: durably join ``delta`` into list ``list_id`` (with ``hint_for``: into the
    hint kept for that holder of the list instead); then call ``persisted(token, now)``.
    ``delta`` is the core's and must not be changed."""

    token: int
    list_id: str
    delta: Any
    hint_for: str | None = None


@attrs.frozen
class DropHint:
    """Server: durably delete the hint kept for ``holder`` of ``list_id`` if its state's
    digest is still ``digest`` (the holder confirmed that state durable); a hint that
    grew since stays. Nothing waits for it: a hint left behind is handed over again."""

    list_id: str
    holder: str
    digest: str


@attrs.frozen
class DropList:
    """Server: durably forget the state of list ``list_id``, which this server no longer
    holds and whose holders all confirmed it, if its stored digest is still ``digest``
    (a state that changed since stays, and is handed over again). What the store keeps
    about the list besides its state (its owner, a deletion) stays."""

    list_id: str
    digest: str


@attrs.frozen
class SaveMembership:
    """Server: durably record the membership (``{server id: peer end point}`` at
    ``epoch``) before the next effect, and connect to the members it does not reach yet
    (a restarted server starts from the newest membership it recorded)."""

    epoch: int
    servers: Mapping[str, str]


@attrs.frozen(eq=False)
class SaveEdit:
    """Client: durably join ``delta`` (a local edit) into list ``list_id`` and queue it
    under sequence number ``seq``, in one transaction."""

    list_id: str
    seq: int
    delta: Any


@attrs.frozen(eq=False)
class SaveMerge:
    """Client: durably join ``delta`` (received from a server) into list ``list_id``
    (creating the list if the device does not have it yet)."""

    list_id: str
    delta: Any


@attrs.frozen
class Acked:
    """Client: a server made the queued deltas of ``list_id`` with ``seq <= through_seq``
    durable; durably drop them from the queue."""

    list_id: str
    through_seq: int
    copies: int | None = None
    """How many servers held the pushed deltas durably when the server replied
    (:attr:`~reference_cluster.protocol.messages.SyncReply.copies`), if it said."""


@attrs.frozen
class SyncFailed:
    """Client: a sync of ``list_id`` was given up (``reason`` is ``"timeout"`` or an
    error code); its queued deltas stay queued for the next sync."""

    list_id: str
    request_id: str
    reason: str


Effect: TypeAlias = (
    Send
    | Persist
    | DropHint
    | DropList
    | SaveMembership
    | SaveEdit
    | SaveMerge
    | Acked
    | SyncFailed
)
