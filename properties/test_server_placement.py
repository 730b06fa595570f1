"""Each list on N of M servers: what a server core stores, serves, sends and repairs.

Five cores (three replicas a list) exchange frames in process; a mesh carries frames and
completes writes until quiet, dropping what a test says to drop.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

import pytest

from crdts import AWORSet
from reference_cluster.cores.server import ServerConfig, ServerCore
from reference_cluster.protocol.effects import Effect, Persist, Send
from reference_cluster.protocol.hashtree import key_of
from reference_cluster.protocol.messages import (
    AeContexts,
    AeLeaves,
    AeTree,
    Forward,
    Message,
    Propagate,
    SyncRequest,
    decode,
    encode,
)
from reference_cluster.protocol.placement import Membership
from reference_cluster.sim.durable import FakeServerStore

MEMBERS = Membership([f"s{i}" for i in range(1, 6)])
N = 3


def list_id(i: int) -> str:
    return str(uuid.UUID(int=i + 1, version=4))


LISTS = [list_id(i) for i in range(40)]


def core(name: str, store: FakeServerStore[AWORSet] | None = None) -> ServerCore[AWORSet]:
    return ServerCore(
        name,
        AWORSet,
        peers=(),
        brokers=("b1",),
        store=store if store is not None else FakeServerStore(AWORSet),
        config=ServerConfig(),
        rng=random.Random(0),
        replicas=N,
        membership=MEMBERS,
        write_quorum=1,  # one copy acknowledges: W >= 2 is test_write_quorum's
    )


def push(target: str, delta: AWORSet, rid: str = "n.1") -> bytes:
    req = SyncRequest(rid, target, "c1", 0, None, delta.to_dict())
    return encode(Forward("client-1", req))


def sends(effects: list[Effect]) -> list[tuple[str, Message]]:
    return [(e.to, e.message) for e in effects if isinstance(e, Send)]


class Mesh:
    """Every member's core over its own fake store; carries frames and writes until quiet."""

    def __init__(self) -> None:
        self.cores = {s: core(s) for s in sorted(MEMBERS.servers)}
        self.kinds: list[str] = []
        self.drop: Callable[[str, str, Message], bool] = lambda _src, _dst, _msg: False

    def store(self, name: str) -> FakeServerStore[AWORSet]:
        store = self.cores[name]._store
        assert isinstance(store, FakeServerStore)
        return store

    def carry(self, src: str, effects: list[Effect]) -> None:
        queue: list[tuple[str, str, bytes]] = []
        self._take(src, effects, queue)
        for _ in range(10_000):
            if not queue:
                return
            frm, dst, data = queue.pop(0)
            self.kinds.append(decode(data).kind)
            self._take(dst, self.cores[dst].receive(frm, data, 0.0), queue)
        raise AssertionError("the exchange did not end")

    def _take(self, src: str, effects: list[Effect], queue: list[tuple[str, str, bytes]]) -> None:
        for e in effects:
            if isinstance(e, Persist):
                store = self.store(src)
                store.begin(e)
                store.complete(e.token)
                self._take(src, self.cores[src].persisted(e.token, 0.0), queue)
            elif isinstance(e, Send) and e.to in self.cores and not self.drop(src, e.to, e.message):
                queue.append((src, e.to, encode(e.message)))

    def round(self) -> None:
        """One anti-entropy round started by every server in turn."""
        for name, c in self.cores.items():
            self.carry(name, c._anti_entropy_round(0.0))


def test_a_push_goes_only_to_the_other_holders_of_the_list() -> None:
    """A holder persists a client's edit and propagates it to the list's N - 1 other
    holders, not to every server."""
    target = LISTS[0]
    first, *others = MEMBERS.holders(target, N)
    out = core(first).receive("b1", push(target, AWORSet().add("c1", "milk")), 0.0)
    propagated = sorted(to for to, msg in sends(out) if isinstance(msg, Propagate))
    assert sorted(others) == propagated


def test_a_server_that_does_not_hold_a_list_refuses_requests_and_propagations() -> None:
    """A non-holder answers a client's push with the retryable ``not_holder`` naming the
    holders, drops a peer's propagation of the list, and stores nothing."""
    target = LISTS[0]
    outsider = MEMBERS.preference(target)[-1]
    s = core(outsider)
    ((_, deliver),) = sends(s.receive("b1", push(target, AWORSet().add("c1", "x")), 0.0))
    delta = AWORSet().add("c1", "y").to_dict()
    dropped = s.receive("s9", encode(Propagate("s9", target, delta)), 0.0)
    reply = deliver.reply  # type: ignore[attr-defined]
    holders = MEMBERS.holders(target, N)
    assert ("not_holder", True, True, [], (), {}) == (
        reply.code,
        reply.retryable,
        all(h in reply.detail for h in holders),
        dropped,
        s.list_ids(),
        s._store.lists,  # type: ignore[union-attr]
    )


def test_anti_entropy_repairs_the_holders_and_no_one_else() -> None:
    """With every propagation lost, rounds of anti-entropy bring each list to its N
    holders, in equal states, and to no other server, in memory or in the store."""
    mesh = Mesh()
    mesh.drop = lambda _src, _dst, msg: isinstance(msg, Propagate)
    for i, target in enumerate(LISTS):
        first = MEMBERS.holders(target, N)[0]
        c = mesh.cores[first]
        mesh.carry(first, c.receive("b1", push(target, AWORSet().add("c1", f"item {i}")), 0.0))
    mesh.round()
    mesh.round()
    placed = {
        s: sorted(k for k in LISTS if s in MEMBERS.holders(k, N)) for s in sorted(MEMBERS.servers)
    }
    held = {s: sorted(c.list_ids()) for s, c in mesh.cores.items()}
    stored = {s: sorted(mesh.store(s).lists) for s in mesh.cores}
    digests = {k: {mesh.cores[s].digest(k) for s in MEMBERS.holders(k, N)} for k in LISTS}
    assert (placed, placed, [1] * len(LISTS)) == (
        held,
        stored,
        [len(d - {None}) for d in digests.values()],
    )


def test_an_idle_round_is_one_tree_root_per_peer() -> None:
    """Once the holders agree, a round from each server is one ``ae_tree`` per peer and
    nothing else, although each pair of servers shares only some lists."""
    mesh = Mesh()
    for i, target in enumerate(LISTS):
        first = MEMBERS.holders(target, N)[0]
        c = mesh.cores[first]
        mesh.carry(first, c.receive("b1", push(target, AWORSet().add("c1", f"item {i}")), 0.0))
    mesh.round()
    mesh.kinds.clear()
    mesh.round()
    assert ["ae_tree"] * 5 * 4 == mesh.kinds


def test_each_peer_has_a_tree_over_the_lists_shared_with_it() -> None:
    """Two servers' trees for each other are equal when they agree on the lists they
    share, whatever else each holds; the root without a peer is refused."""
    mesh = Mesh()
    for i, target in enumerate(LISTS):
        first = MEMBERS.holders(target, N)[0]
        c = mesh.cores[first]
        mesh.carry(first, c.receive("b1", push(target, AWORSet().add("c1", f"item {i}")), 0.0))
    a, b = mesh.cores["s1"], mesh.cores["s2"]
    shared = sum(1 for k in LISTS if {"s1", "s2"} <= set(MEMBERS.holders(k, N)))
    assert (a.tree_root("s2"), len(a._trees["s2"])) == (b.tree_root("s1"), shared)
    assert a.tree_root("s2") != a.tree_root("s3")
    with pytest.raises(ValueError, match="name the peer"):
        a.tree_root()


def test_stored_lists_held_elsewhere_are_left_in_the_store_and_not_served() -> None:
    """A store that holds lists placed on other servers (from before placement) starts a
    server that serves only its own lists and leaves the others where they are."""
    store = FakeServerStore(AWORSet)
    for i, k in enumerate(LISTS):
        store.lists[k] = AWORSet()
        store.lists[k].add("c1", f"item {i}")
    s = core("s1", store)
    mine = sorted(k for k in LISTS if "s1" in MEMBERS.holders(k, N))
    assert (mine, len(LISTS) - len(mine), len(LISTS)) == (
        sorted(s.list_ids()),
        s.unheld,
        len(store.lists),
    )


def test_anti_entropy_from_a_non_member_is_dropped() -> None:
    """Tree messages from a sender outside the membership get no answer."""
    s = core("s1")
    out = s.receive("s9", encode(AeTree("s9", 1, {"": "f" * 32})), 0.0)
    assert [] == out


def test_leaves_of_a_list_the_peer_does_not_hold_ask_for_nothing() -> None:
    """A peer's digest of a list it does not share with this server (by this server's
    placement) is not answered with a context, so nothing of it is exchanged."""
    target = next(
        k for k in LISTS if "s1" in MEMBERS.holders(k, N) and "s2" not in MEMBERS.holders(k, N)
    )
    s = core("s1")
    s.receive("b1", push(target, AWORSet().add("c1", "x")), 0.0)
    prefix = key_of(target)[:3]
    out = s.receive("s2", encode(AeLeaves("s2", 1, (prefix,), {target: "0" * 64})), 0.0)
    asked = [m for _, m in sends(out) if isinstance(m, AeContexts) and target in m.contexts]
    assert [] == asked


def test_a_membership_without_the_server_is_refused() -> None:
    """A server core must be one of the members it places lists on."""
    with pytest.raises(ValueError, match="not a member"):
        core("s9")
