"""Where lists live: the functions every routing and storing decision goes through.

Theory of operation
-------------------
Rule 1 (preference). :func:`preference` orders servers by rendezvous hashing (highest
``sha256(list_id, server)`` first). The order of any two servers for one list does not
depend on which other servers are present, so adding or removing a server moves only the
lists for which that server is among the first ones.

Rule 2 (holders). A list lives on the first ``replicas`` servers of its preference order
over the *members* of the cluster (:func:`holders`), not over the servers that happen to be
alive: a dead holder is still a holder. With ``replicas`` at least the number of members,
every member holds every list.

Rule 3 (membership). :class:`Membership` is the set of member servers with an epoch. Of
two memberships the one with the larger epoch wins (:meth:`Membership.newer`); today the
membership is static (built from the servers a process is configured with, epoch 0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import attrs

__all__ = ["DEFAULT_REPLICAS", "Membership", "holders", "preference"]

DEFAULT_REPLICAS = 3
"""How many servers hold each list unless configured otherwise."""


def _score(list_id: str, server: str) -> bytes:
    return hashlib.sha256(f"{list_id}\x00{server}".encode()).digest()


def preference(list_id: str, servers: Iterable[str]) -> tuple[str, ...]:
    """Every server among ``servers`` (each once), most preferred for ``list_id`` first.

    Deterministic: the same list id and set of servers give the same order everywhere,
    whatever the order ``servers`` come in (Rule 1).
    """
    unique = set(servers)
    return tuple(sorted(unique, key=lambda s: (_score(list_id, s), s), reverse=True))


def holders(list_id: str, members: Iterable[str], replicas: int) -> tuple[str, ...]:
    """The members that hold ``list_id``: the first ``replicas`` of its preference order
    over ``members`` (Rule 2), most preferred first.

    Raises:
        ValueError: ``replicas`` below 1.
    """
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    return preference(list_id, members)[:replicas]


def _server_ids(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


def _check_servers(_inst: object, _attr: attrs.Attribute[frozenset[str]], value: object) -> None:
    if not isinstance(value, frozenset) or not value:
        raise ValueError("a membership has at least one server")
    for server in value:
        if not isinstance(server, str) or not server:
            raise ValueError(f"a server id is a non-empty str, got {server!r}")


def _check_epoch(_inst: object, _attr: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"an epoch is an int >= 0, got {value!r}")


@attrs.frozen
class Membership:
    """The member servers of a cluster, with the epoch that orders memberships (Rule 3).

    Attributes:
        servers: the members' ids (at least one).
        epoch: larger is newer.

    Raises:
        ValueError: no server, an empty or non-str id, or an epoch that is not an int >= 0.
    """

    servers: frozenset[str] = attrs.field(converter=_server_ids, validator=_check_servers)
    epoch: int = attrs.field(default=0, validator=_check_epoch)

    def newer(self, other: Membership) -> Membership:
        """Whichever of ``self`` and ``other`` is later (:meth:`later_than`; ``self``
        when they are equal)."""
        return other if other.later_than(self) else self

    def later_than(self, other: Membership) -> bool:
        """Whether ``self`` replaces ``other``: a larger epoch, or at equal epochs above
        0 the larger sorted list of members (two changes made at once with the same
        epoch still order the same way everywhere). Epoch 0 is each process's own
        configuration, which never replaces another's."""
        if self.epoch != other.epoch:
            return self.epoch > other.epoch
        return self.epoch > 0 and sorted(self.servers) > sorted(other.servers)

    def preference(self, list_id: str) -> tuple[str, ...]:
        """Every member, most preferred for ``list_id`` first."""
        return preference(list_id, self.servers)

    def holders(self, list_id: str, replicas: int) -> tuple[str, ...]:
        """The members that hold ``list_id`` (Rule 2).

        Raises:
            ValueError: ``replicas`` below 1.
        """
        return holders(list_id, self.servers, replicas)

    def everywhere(self, replicas: int) -> bool:
        """Whether every member holds every list with ``replicas`` copies."""
        return replicas >= len(self.servers)
