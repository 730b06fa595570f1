"""The hash tree of list digests (reference_cluster.protocol.hashtree): laws and descent."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from reference_cluster.protocol.hashtree import (
    BUCKETS,
    FANOUT,
    MAX_DEPTH,
    STORED_DEPTH,
    HashTree,
    check_prefix,
    key_of,
    node_hex,
)

ids = st.integers(0, 2**20).map(lambda i: str(uuid.UUID(int=i, version=4)))
digests = st.sampled_from(["d0", "d1", "d2"])
entries = st.dictionaries(ids, digests, max_size=40)


def tree_of(entries: dict[str, str]) -> HashTree:
    tree = HashTree()
    for list_id, digest in entries.items():
        tree.put(list_id, digest)
    return tree


def descend(a: HashTree, b: HashTree, small: int = 4) -> set[str]:
    """The lists a descent from the root finds under differing nodes (as two servers do)."""
    found: set[str] = set()
    frontier = [""]
    for _ in range(MAX_DEPTH + 1):
        deeper = []
        for prefix in frontier:
            if a.node(prefix) == b.node(prefix):
                continue
            if min(a.population(prefix), b.population(prefix)) <= small:
                found.update(a.lists_under(prefix), b.lists_under(prefix))
            else:
                deeper.extend(prefix + d for d in "0123456789abcdef")
        frontier = deeper
    return found


@given(entries, st.randoms(use_true_random=False))
def test_the_root_depends_on_the_entries_not_their_order(
    entries: dict[str, str], rnd: object
) -> None:
    """Putting the same lists in any order, with changes and drops on the way, gives the
    same nodes as putting them once."""
    items = list(entries.items())
    rnd.shuffle(items)  # type: ignore[attr-defined]
    tree = HashTree()
    for list_id, digest in items:
        tree.put(list_id, "other")
        tree.put(list_id, digest)
    tree.put(str(uuid.UUID(int=2**21, version=4)), "gone")
    tree.drop(str(uuid.UUID(int=2**21, version=4)))
    plain = tree_of(entries)
    prefixes = ["", *(k[:n] for k in map(key_of, entries) for n in range(1, 6))]
    assert [(tree.node(p), tree.population(p)) for p in prefixes] == [
        (plain.node(p), plain.population(p)) for p in prefixes
    ]
    assert len(tree) == len(entries)


@given(entries, entries)
def test_descent_finds_exactly_the_lists_that_differ(
    left: dict[str, str], right: dict[str, str]
) -> None:
    """Comparing two trees from the root reaches every list whose digest differs (or that
    one side lacks), and equal trees have equal roots."""
    a, b = tree_of(left), tree_of(right)
    differ = {k for k in {*left, *right} if left.get(k) != right.get(k)}
    assert differ <= descend(a, b)
    assert (a.root() == b.root()) == (not differ)


def test_an_empty_tree_has_a_zero_root_and_no_children() -> None:
    """The empty tree's nodes are all 0 and it has no lists."""
    tree = HashTree()
    assert (0, {}, [], node_hex(0)) == (
        tree.root(),
        tree.children(""),
        tree.lists_under(""),
        "0" * 32,
    )


def test_children_below_the_stored_depth_are_computed_from_the_bucket() -> None:
    """A node deeper than the stored ones has the XOR of the lists under it, as stored
    nodes do; children of a node cover exactly its lists."""
    tree = tree_of({str(uuid.UUID(int=i, version=4)): "d" for i in range(3000)})
    for prefix in {key_of(str(uuid.UUID(int=i, version=4)))[:5] for i in range(0, 3000, 300)}:
        for depth in range(len(prefix) + 1):
            node = prefix[:depth]
            value = 0
            for child in tree.children(node).values():
                value ^= child
            assert value == tree.node(node)
            assert sum(tree.population(node + d) for d in "0123456789abcdef") == tree.population(
                node
            )
    assert FANOUT == 16 and STORED_DEPTH == 3


def test_check_repairs_wrong_entries_and_nodes() -> None:
    """A wrong entry (a missed update) and a wrong stored node are both put right by
    checking the buckets they are in."""
    right = {str(uuid.UUID(int=i, version=4)): f"d{i}" for i in range(500)}
    tree = tree_of(right)
    good = tree.root()
    victim = sorted(right)[7]
    tree.put(victim, "stale")
    stale = tree.root()
    wrong = tree.check(BUCKETS, right.get)
    assert (stale != good, [victim], good) == (True, wrong, tree.root())
    bucket = key_of(victim)[:STORED_DEPTH]
    tree._nodes[bucket] ^= 1
    assert ([], good) == (tree.check([bucket], right.get), tree.root())
    assert tree.nodes_repaired == 1


def test_check_drops_lists_the_owner_no_longer_has() -> None:
    """An entry for a list the owner does not have leaves the tree at its check."""
    tree = tree_of({"a": "1", "b": "2"})
    assert (["b"], 1) == (tree.check(BUCKETS, {"a": "1"}.get), len(tree))


def test_prefixes_are_checked() -> None:
    """Node names are lowercase hex of at most MAX_DEPTH digits."""
    assert [check_prefix(p) is None for p in ("", "0af", "A", "g", "0" * 17, 3)] == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]
