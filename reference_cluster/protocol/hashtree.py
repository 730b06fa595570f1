"""A hash tree of list digests, kept up to date one list at a time (anti-entropy's index).

Theory of operation
-------------------
Rule 1 (where a list sits). A list's *key* is the SHA-256 of its id in hex. The tree is a
trie over keys with one hex digit per level (fan-out 16): a node is named by a key prefix,
``""`` the root, ``"a"`` one of its 16 children, ``"a3"`` one of those children's, and so on.
Servers agree on the shape without talking: it depends on the list ids alone.

Rule 2 (what a node says). A list's *leaf hash* is 128 bits of
``SHA-256(list id, 0, digest of its state)``; a node's digest is the XOR of the leaf hashes of
the lists under it (0 for none). Two servers whose node digests are equal hold the same
lists with the same states under that prefix (up to a 2**-128 accident); XOR makes every
update O(depth): a list's new digest changes its leaf hash, and the old and new ones are
XORed into every node on its path.

Rule 3 (what is kept). Nodes down to :data:`STORED_DEPTH` (4,369 of them) are stored; the
lists are kept in the buckets at that depth, so a deeper node (asked for only while
descending into a difference) is computed from its bucket on demand. Memory is the
buckets' entries (about 100 bytes a list) plus the fixed nodes; nothing grows with the
size of a list's state.

Rule 4 (checking itself). :meth:`HashTree.check` recomputes some buckets from the digests
the owner says are right and repairs any node that disagrees, so a bug or a missed update
cannot hide a difference for ever: the owner checks a slice each round and so the whole
tree every ``4096 / slice`` rounds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

__all__ = [
    "BUCKETS",
    "FANOUT",
    "MAX_DEPTH",
    "NODE_DIGEST_HEX",
    "STORED_DEPTH",
    "HashTree",
    "check_prefix",
    "key_of",
    "node_hex",
]

FANOUT = 16
"""Children per node: one hex digit of the key per level."""
STORED_DEPTH = 3
"""Nodes down to this depth are kept; the lists live in the 4,096 buckets at this depth."""
MAX_DEPTH = 16
"""The deepest node a peer may ask about (16**16 buckets: far more than lists)."""
NODE_DIGEST_HEX = 32
"""A node digest on the wire: 128 bits as 32 lowercase hex digits."""
_HEX = frozenset("0123456789abcdef")
_DIGITS = "0123456789abcdef"
BUCKETS: tuple[str, ...] = tuple(a + b + c for a in _DIGITS for b in _DIGITS for c in _DIGITS)
"""Every bucket's name (the 4,096 prefixes of :data:`STORED_DEPTH` digits), in order."""


def key_of(list_id: str) -> str:
    """A list's place in the tree (Rule 1): the first :data:`MAX_DEPTH` hex digits of
    the SHA-256 of its id."""
    return hashlib.sha256(list_id.encode()).hexdigest()[:MAX_DEPTH]


def leaf_hash(list_id: str, digest: str) -> int:
    """A list's contribution to every node above it (Rule 2)."""
    raw = hashlib.sha256(f"{list_id}\x00{digest}".encode()).digest()
    return int.from_bytes(raw[:16], "big")


def node_hex(value: int) -> str:
    """A node digest as sent on the wire."""
    return f"{value:032x}"


def check_prefix(prefix: object) -> str | None:
    """Why ``prefix`` is not a node name (lowercase hex, at most :data:`MAX_DEPTH`
    digits), or None."""
    if not isinstance(prefix, str):
        return f"a node is a str of hex digits, got {type(prefix).__name__}"
    if len(prefix) > MAX_DEPTH:
        return f"a node is at most {MAX_DEPTH} hex digits, got {len(prefix)}"
    if not _HEX.issuperset(prefix):
        return f"a node is lowercase hex digits, got {prefix[:MAX_DEPTH]!r}"
    return None


class HashTree:
    """The digests of a set of lists, arranged for comparison by descent (module notes).

    ``put(list_id, digest)`` sets or changes a list, ``drop(list_id)`` removes it; every
    reader answers from what was put.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self._buckets: dict[str, dict[str, tuple[str, int]]] = {}
        self._where: dict[str, str] = {}
        self.nodes_repaired = 0
        """How many times :meth:`check` found stored nodes out of step and rebuilt them."""

    def __len__(self) -> int:
        return len(self._where)

    # -- writers --------------------------------------------------------------------------

    def put(self, list_id: str, digest: str) -> None:
        """Set ``list_id``'s digest (adding the list if new): O(depth)."""
        key = self._where.get(list_id)
        new = leaf_hash(list_id, digest)
        if key is None:
            key = self._where[list_id] = key_of(list_id)
            self._buckets.setdefault(key[:STORED_DEPTH], {})[list_id] = (key, new)
            self._update(key, new, +1)
            return
        bucket = self._buckets[key[:STORED_DEPTH]]
        old = bucket[list_id][1]
        if old != new:
            bucket[list_id] = (key, new)
            self._update(key, old ^ new, 0)

    def drop(self, list_id: str) -> None:
        """Remove ``list_id`` (no error if absent)."""
        key = self._where.pop(list_id, None)
        if key is None:
            return
        bucket = self._buckets[key[:STORED_DEPTH]]
        _, old = bucket.pop(list_id)
        if not bucket:
            del self._buckets[key[:STORED_DEPTH]]
        self._update(key, old, -1)

    def _update(self, key: str, flip: int, count: int) -> None:
        nodes, counts = self._nodes, self._counts
        for depth in range(STORED_DEPTH + 1):
            prefix = key[:depth]
            value = nodes.get(prefix, 0) ^ flip
            if value:
                nodes[prefix] = value
            else:
                nodes.pop(prefix, None)
            if count:
                left = counts.get(prefix, 0) + count
                if left:
                    counts[prefix] = left
                else:
                    counts.pop(prefix, None)

    # -- readers --------------------------------------------------------------------------

    def root(self) -> int:
        """The root's digest (0 for an empty tree)."""
        return self._nodes.get("", 0)

    def node(self, prefix: str) -> int:
        """The digest of the node named ``prefix`` (0 if no list is under it)."""
        if len(prefix) <= STORED_DEPTH:
            return self._nodes.get(prefix, 0)
        value = 0
        for key, leaf in self._in_bucket(prefix):
            if key.startswith(prefix):
                value ^= leaf
        return value

    def population(self, prefix: str) -> int:
        """How many lists are under ``prefix``."""
        if len(prefix) <= STORED_DEPTH:
            return self._counts.get(prefix, 0)
        return sum(1 for key, _ in self._in_bucket(prefix) if key.startswith(prefix))

    def children(self, prefix: str) -> dict[str, int]:
        """The digests of ``prefix``'s children that have lists under them."""
        if len(prefix) >= MAX_DEPTH:
            return {}
        if len(prefix) < STORED_DEPTH:
            nodes = self._nodes
            return {c: v for d in _DIGITS if (v := nodes.get(c := prefix + d, 0))}
        out: dict[str, int] = {}
        depth = len(prefix) + 1
        for key, leaf in self._in_bucket(prefix):
            if key.startswith(prefix):
                child = key[:depth]
                out[child] = out.get(child, 0) ^ leaf
        return {c: v for c, v in out.items() if v}

    def lists_under(self, prefix: str) -> list[str]:
        """The ids of the lists under ``prefix``, sorted."""
        if len(prefix) >= STORED_DEPTH:
            bucket = self._buckets.get(prefix[:STORED_DEPTH], {})
            return sorted(i for i, (key, _) in bucket.items() if key.startswith(prefix))
        return sorted(
            i for b, bucket in self._buckets.items() if b.startswith(prefix) for i in bucket
        )

    def _in_bucket(self, prefix: str) -> Iterator[tuple[str, int]]:
        return iter(self._buckets.get(prefix[:STORED_DEPTH], {}).values())

    # -- self-check (Rule 4) ----------------------------------------------------------------

    def check(self, buckets: Iterable[str], digest: Callable[[str], str | None]) -> list[str]:
        """Recompute the named buckets (3-digit prefixes) from ``digest(list_id)`` (the
        owner's record, None for a list it no longer has) and repair what disagrees.

        The stored nodes of those buckets and of their paths to the root are checked
        against what is under them too; if any disagrees, all stored nodes are rebuilt
        from the buckets (O(lists), counted in :attr:`nodes_repaired`).

        Returns:
            The ids of the lists whose entries were wrong (now put right).
        """
        wrong: list[str] = []
        names = list(buckets)
        for bucket in names:
            for list_id, (_, leaf) in list(self._buckets.get(bucket, {}).items()):
                right = digest(list_id)
                if right is None:
                    wrong.append(list_id)
                    self.drop(list_id)
                elif leaf_hash(list_id, right) != leaf:
                    wrong.append(list_id)
                    self.put(list_id, right)
        if not self._nodes_agree(names):
            self.nodes_repaired += 1
            self._rebuild_nodes()
        return wrong

    def _nodes_agree(self, buckets: list[str]) -> bool:
        """Whether the named buckets' nodes, and the stored nodes on their paths to the
        root, agree with what is under them."""
        nodes, counts = self._nodes, self._counts
        for bucket in buckets:
            entries = self._buckets.get(bucket, {})
            value = 0
            for _, leaf in entries.values():
                value ^= leaf
            if nodes.get(bucket, 0) != value or counts.get(bucket, 0) != len(entries):
                return False
        above = {b[:depth] for b in buckets for depth in range(STORED_DEPTH)}
        for prefix in above:
            value = count = 0
            for digit in _DIGITS:
                kid = prefix + digit
                value ^= nodes.get(kid, 0)
                count += counts.get(kid, 0)
            if nodes.get(prefix, 0) != value or counts.get(prefix, 0) != count:
                return False
        return True

    def _rebuild_nodes(self) -> None:
        """Recompute every stored node from the buckets (after a repair: a wrong entry may
        have left wrong nodes above it)."""
        self._nodes.clear()
        self._counts.clear()
        for bucket in self._buckets.values():
            for key, leaf in bucket.values():
                self._update(key, leaf, +1)
