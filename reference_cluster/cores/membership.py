"""Who may read and write a list: its owner and its members (access lists).

Theory of operation
-------------------
Rule 1 (what it holds). A list's members are an add-wins observed-remove set of user ids
(:class:`crdts.AWORSet`), one per list; the owner is kept apart (the directory's owner of
the list) and is never a member of the set. The set's dots are minted by the server that
decides a change, as itself, so servers never mint the same dot: a server's next dot comes
after every dot of its id in the stored state, which is written before it is sent.

Rule 2 (who may change it). The owner adds and removes anyone. A member may remove only
themself (leaving). Nobody else may change or read a list's members.

Rule 3 (who may use a list). The owner and the members read and write it; a list whose
owner no server has recorded yet may be pushed by anyone logged in, and that push makes the
pusher its owner (the directory's Rule 4). Everyone else is refused on every path (pull,
push, delete, the list of their lists).

Rule 4 (replication). States join (commutative, associative, idempotent), so the
directory ships them as they are and merges them in any order. A concurrent add and
remove of the same user keep the user (add wins); a removal reaches every server within
an anti-entropy round of the directory, and until then a server that has not heard of it
still admits the removed member.

Rule 5 (bounds). At most :data:`MAX_MEMBERS` members per list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from crdts import AWORSet
from reference_cluster.errors import AccessDenied

__all__ = ["MAX_MEMBERS", "MembershipStore", "Memberships", "QuotaExceeded"]

MAX_MEMBERS = 100
"""The most members one list may have (its owner not counted)."""


class QuotaExceeded(AccessDenied):
    """A change would give a list more than :data:`MAX_MEMBERS` members."""


class MembershipStore(Protocol):
    """Where members are kept (the server store implements this)."""

    def memberships(self) -> dict[str, AWORSet]:
        """Every list's members as stored."""

    def put_membership(self, list_id: str, state: AWORSet) -> None:
        """Store a list's members durably (replacing what was there)."""


class Memberships:
    """Every list's members at one server.

    Args:
        server_id: the id this server mints dots as (Rule 1).
        store: where the states are kept; read once, written on every change.
    """

    def __init__(self, server_id: str, store: MembershipStore) -> None:
        self._id = server_id
        self._store = store
        self._sets: dict[str, AWORSet] = dict(store.memberships())
        self._lists_of: dict[str, set[str]] = {}
        for list_id, state in self._sets.items():
            for user in state.value:
                self._lists_of.setdefault(user, set()).add(list_id)

    # -- readers --------------------------------------------------------------------------

    def members(self, list_id: str) -> frozenset[str]:
        """The user ids of a list's members (the owner not included)."""
        state = self._sets.get(list_id)
        return frozenset() if state is None else frozenset(state.value)

    def is_member(self, list_id: str, user_id: str) -> bool:
        """Whether ``user_id`` is a member of the list."""
        return list_id in self._lists_of.get(user_id, ())

    def lists_of(self, user_id: str) -> list[str]:
        """The lists ``user_id`` is a member of, sorted."""
        return sorted(self._lists_of.get(user_id, ()))

    def encoded(self) -> dict[str, Mapping[str, Any]]:
        """Every list's members in their canonical ``to_dict()`` form (for a peer)."""
        return {k: v.to_dict() for k, v in sorted(self._sets.items())}

    def digest_items(self) -> list[tuple[str, str]]:
        """``(list id, digest of its members)`` for every list, sorted: the part of the
        directory's digest that members make."""
        return [(k, v.digest()) for k, v in sorted(self._sets.items())]

    # -- changes --------------------------------------------------------------------------

    def change(
        self, list_id: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> dict[str, Any] | None:
        """Add and remove members (the caller checked Rule 2), store the result, and
        return the encoded delta to send to peers (None if nothing changed). Adding a
        member again renews it, so it wins over a concurrent removal elsewhere; a user in
        both ``add`` and ``remove`` is added.

        Raises:
            QuotaExceeded: the list would have more than :data:`MAX_MEMBERS` members.
        """
        state = self._sets.get(list_id) or AWORSet()
        current = state.value
        adding = list(dict.fromkeys(add))  # a member added again gets a new dot (add wins)
        removing = [u for u in dict.fromkeys(remove) if u in current and u not in adding]
        if len(current | set(adding)) - len(removing) > MAX_MEMBERS:
            raise QuotaExceeded(f"a list has at most {MAX_MEMBERS} members")
        if not adding and not removing:
            return None
        state = state.copy()
        delta = AWORSet()
        for user in adding:
            delta.join(state.add(self._id, user))
        for user in removing:
            delta.join(state.remove(self._id, user))
        self._put(list_id, state)
        return delta.to_dict()

    def merge(self, list_id: str, encoded: Mapping[str, Any]) -> bool:
        """Join a peer's state (or delta) of a list's members; store it if it changed
        anything. Returns whether it did.

        Raises:
            ValueError: ``encoded`` is not an encoded AWORSet of user ids.
        """
        incoming = AWORSet.from_dict(encoded)
        if not all(type(u) is str and 0 < len(u) <= 64 for u in incoming.value):
            raise ValueError(f"members of {list_id}: expected user ids")
        state = self._sets.get(list_id)
        if state is not None and incoming <= state:
            return False
        joined = incoming if state is None else state | incoming
        self._put(list_id, joined)
        return True

    def _put(self, list_id: str, state: AWORSet) -> None:
        self._store.put_membership(list_id, state)  # durable before it is used (Rule 1)
        before = self.members(list_id)
        self._sets[list_id] = state
        after = frozenset(state.value)
        for user in before - after:
            self._lists_of.get(user, set()).discard(list_id)
        for user in after - before:
            self._lists_of.setdefault(user, set()).add(list_id)


def members_digest(items: Iterable[tuple[str, str]]) -> str:
    """One SHA-256 (hex) of ``(list id, digest)`` pairs in order."""
    h = hashlib.sha256()
    for list_id, digest in items:
        h.update(f"{list_id}={digest};".encode())
    return h.hexdigest()
