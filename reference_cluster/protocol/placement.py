"""Where lists live: the one function every routing decision goes through.

Today every server holds every list; :func:`holders` orders them by rendezvous hashing
(highest ``sha256(list_id, server)`` first), so that requests for one list prefer the same
server, and when it dies they move to the next one without reshuffling other lists.
Placing each list on a subset of servers later means changing this function only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["holders"]


def _score(list_id: str, server: str) -> bytes:
    return hashlib.sha256(f"{list_id}\x00{server}".encode()).digest()


def holders(list_id: str, servers: Iterable[str]) -> tuple[str, ...]:
    """The servers among ``servers`` that hold ``list_id``, most preferred first.

    Deterministic: the same list id and set of servers give the same order everywhere.
    """
    unique = set(servers)
    return tuple(sorted(unique, key=lambda s: (_score(list_id, s), s), reverse=True))
