"""Anti-entropy by hash-tree descent, and states on demand, in the server core.

Two cores exchange frames in process (no network): what a round costs, what it finds,
what it repairs, and that eviction, reloads and failed writes never lose a write or leave
memory ahead of the store.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from crdts import AWORSet
from reference_cluster.cores.server import ServerConfig, ServerCore
from reference_cluster.protocol.effects import Effect, Persist, Send
from reference_cluster.protocol.hashtree import BUCKETS
from reference_cluster.protocol.messages import (
    AeLeaves,
    AeTree,
    Forward,
    Propagate,
    SyncReply,
    SyncRequest,
    decode,
    encode,
)
from reference_cluster.sim.durable import FakeServerStore


def list_id(i: int) -> str:
    return str(uuid.UUID(int=i + 1, version=4))


def filled(count: int) -> FakeServerStore[AWORSet]:
    """A durable store of ``count`` small lists, the same for every call."""
    store = FakeServerStore(AWORSet)
    for i in range(count):
        state = AWORSet()
        state.add("c1", f"item {i}")
        store.lists[list_id(i)] = state
    return store


def core(name: str, store: FakeServerStore[AWORSet], **config: Any) -> ServerCore[AWORSet]:
    return ServerCore(
        name,
        AWORSet,
        peers=("s1", "s2"),
        brokers=(),
        store=store,
        config=ServerConfig(**config),
        rng=random.Random(0),
        write_quorum=1,  # one copy acknowledges: W >= 2 is test_write_quorum's
    )


class Pair:
    """Two cores over two fake stores; carries frames and writes until quiet."""

    def __init__(self, a: ServerCore[AWORSet], b: ServerCore[AWORSet]) -> None:
        self.cores = {a.server_id: a, b.server_id: b}
        self.stores = {a.server_id: a._store, b.server_id: b._store}
        self.messages = 0
        self.bytes = 0
        self.kinds: list[str] = []

    def carry(self, src: str, effects: list[Effect], queue: list[tuple[str, str, bytes]]) -> None:
        for e in effects:
            if isinstance(e, Persist):
                store = self.stores[src]
                assert isinstance(store, FakeServerStore)
                store.begin(e)
                store.complete(e.token)
                self.carry(src, self.cores[src].persisted(e.token, 0.0), queue)
            elif isinstance(e, Send) and e.to in self.cores:
                queue.append((src, e.to, encode(e.message)))

    def round(self, initiator: str) -> None:
        """One anti-entropy round started by ``initiator``, carried until quiet."""
        queue: list[tuple[str, str, bytes]] = []
        self.carry(initiator, self.cores[initiator]._anti_entropy_round(0.0), queue)
        for _ in range(200):
            if not queue:
                return
            src, dst, data = queue.pop(0)
            self.messages += 1
            self.bytes += len(data)
            self.kinds.append(decode(data).kind)
            self.carry(dst, self.cores[dst].receive(src, data, 0.0), queue)
        raise AssertionError("the exchange did not end")

    def states(self, name: str) -> dict[str, AWORSet]:
        c = self.cores[name]
        return {k: s for k in c.list_ids() if (s := c.state(k)) is not None}


def test_an_idle_round_is_one_small_message_whatever_the_number_of_lists() -> None:
    """Two servers holding the same 10,000 lists exchange one message of under 200 bytes
    per round, and decode none of the lists to do it (but for the sweep's few)."""
    a = core("s1", filled(10_000), sweep_per_round=0)
    b = core("s2", filled(10_000), sweep_per_round=0)
    pair = Pair(a, b)
    pair.round("s1")
    pair.round("s2")
    assert (2, ["ae_tree", "ae_tree"], True, 0, 0) == (
        pair.messages,
        pair.kinds,
        pair.bytes < 400,
        a.loads,
        b.loads,
    )


def test_one_changed_list_of_10000_is_found_and_repaired_in_one_round() -> None:
    """A list changed at one server only is found by descent and repaired by the next
    round, which loads that list alone and costs a few kB."""
    a = core("s1", filled(10_000), sweep_per_round=0)
    b = core("s2", filled(10_000), sweep_per_round=0)
    changed = list_id(4321)
    delta = a.state(changed)
    assert delta is not None
    write = a.receive_message("s2", Propagate("s2", changed, delta.add("c2", "new").to_dict()), 0.0)
    pair = Pair(a, b)
    pair.carry("s1", write, [])
    pair.round("s2")
    assert b.state(changed) == a.state(changed)
    assert "new" in b.state(changed).value  # type: ignore[union-attr]
    assert (a.tree_root(), b.loads <= 2, a.loads <= 2) == (b.tree_root(), True, True)
    assert pair.messages <= 9 and pair.bytes < 8_000
    assert pair.kinds[:1] == ["ae_tree"] and "ae_leaves" in pair.kinds


def test_k_changed_lists_cost_bytes_in_proportion_to_k() -> None:
    """Repairing 50 lists of 10,000 costs far less than the digests of every list, and
    about 50 times one list's repair."""
    a, b = core("s1", filled(10_000)), core("s2", filled(10_000))
    pair = Pair(a, b)
    for i in range(0, 5000, 100):
        delta = AWORSet().add("c9", f"x{i}")
        pair.carry(
            "s1", a.receive_message("s2", Propagate("s2", list_id(i), delta.to_dict()), 0.0), []
        )
    pair.round("s1")
    assert a.tree_root() == b.tree_root()
    assert pair.bytes < 50 * 3_000  # the old digests message alone was ~1 MB at 10,000 lists


def test_a_fresh_server_catches_up_with_every_list() -> None:
    """An empty server gets every one of 3,000 lists from a peer in a few rounds, in
    messages of bounded size."""
    a, b = core("s1", filled(3_000)), core("s2", FakeServerStore(AWORSet))
    pair = Pair(a, b)
    for _ in range(3):
        pair.round("s2")
    assert (len(b.list_ids()), a.tree_root()) == (3_000, b.tree_root())


def test_a_digest_a_crash_left_stale_is_found_by_the_sweep() -> None:
    """A stored digest that claims an older state (the state on disk moved on, the digest
    did not) would hide the difference from the tree; the sweep reads the list back, puts
    the digest right, and the same round repairs the peer."""
    store_a, store_b = filled(10), filled(10)
    victim = list_id(3)
    stale = store_a.lists[victim].digest()
    store_a.lists[victim].add("c2", "after")
    store_a.digests = lambda: {
        k: (stale if k == victim else v.digest()) for k, v in store_a.lists.items()
    }  # type: ignore[method-assign]
    a, b = core("s1", store_a, sweep_per_round=16), core("s2", store_b)
    assert a.tree_root() == b.tree_root()  # the difference is hidden
    pair = Pair(a, b)
    pair.round("s1")
    assert ("after" in b.state(victim).value, a.repaired_digests) == (True, 1)  # type: ignore[union-attr]


def test_a_wrong_tree_entry_is_put_right_by_the_tree_check() -> None:
    """A tree entry that hides a difference is corrected by the bucket check within one
    pass over the 4,096 buckets, and the next round repairs the peer."""
    a, b = core("s1", filled(10), sweep_per_round=0), core("s2", filled(10))
    victim = list_id(5)
    pair = Pair(a, b)
    delta = AWORSet().add("c2", "hidden")
    pair.carry("s1", a.receive_message("s2", Propagate("s2", victim, delta.to_dict()), 0.0), [])
    a.tree_root()
    a._trees["s2"].put(victim, b.digest(victim) or "")  # the tree now agrees with the peer
    rounds = 0
    while "hidden" not in b.state(victim).value and rounds < 300:  # type: ignore[union-attr]
        pair.round("s1")
        rounds += 1
    per_pass = len(BUCKETS) // a.config.check_buckets_per_round
    assert ("hidden" in b.state(victim).value, rounds <= per_pass + 1) == (True, True)  # type: ignore[union-attr]


def test_eviction_keeps_the_cache_bounded_and_loses_nothing() -> None:
    """With room for 2 states, propagations to 20 lists leave at most 2 in memory, and
    every list reads back with its write."""
    store = filled(20)
    s = core("s1", store, cache_lists=2)
    pair = Pair(s, core("s2", filled(0)))
    for i in range(20):
        delta = AWORSet().add("c2", f"new {i}")
        pair.carry(
            "s1", s.receive_message("s2", Propagate("s2", list_id(i), delta.to_dict()), 0.0), []
        )
        assert s.cached <= 2
    assert s.evictions >= 18
    assert all(f"new {i}" in s.state(list_id(i)).value for i in range(20))  # type: ignore[union-attr]
    assert all(f"new {i}" in store.lists[list_id(i)].value for i in range(20))


def test_a_list_with_a_write_in_flight_is_never_evicted() -> None:
    """A list whose write is not yet durable stays in memory however many others are
    loaded, so its digest and the acknowledgement waiting for it see the write."""
    store = filled(10)
    s = core("s1", store, cache_lists=1)
    delta = AWORSet().add("c7", "pending")
    req = SyncRequest("r.1", list_id(0), "c7", 0, None, delta.to_dict())
    effects = s.receive_message("b1", Forward("client", req), 0.0)
    (write,) = [e for e in effects if isinstance(e, Persist)]
    store.begin(write)
    for i in range(1, 10):
        s.state(list_id(i))
    assert "pending" in s.view(list_id(0)).value  # type: ignore[union-attr]
    store.complete(write.token)
    (ack,) = [e for e in s.persisted(write.token, 0.0) if isinstance(e, Send)]
    assert isinstance(ack.message.reply, SyncReply)  # type: ignore[attr-defined]
    assert ("pending" in store.lists[list_id(0)].value, s.cached) == (True, 1)


def test_a_failed_write_leaves_memory_as_the_store_has_it() -> None:
    """A write that failed is dropped from memory once nothing else is in flight, and the
    next round reloads the list from the store: memory never claims what is not stored."""
    store = filled(3)
    s = core("s1", store)
    delta = AWORSet().add("c2", "lost")
    (write,) = s.receive_message("s2", Propagate("s2", list_id(1), delta.to_dict()), 0.0)
    assert isinstance(write, Persist)
    s.persist_failed(write.token, "disk full", 0.0)
    s._anti_entropy_round(0.0)
    assert (s.state(list_id(1)), s.digest(list_id(1))) == (
        store.lists[list_id(1)],
        store.lists[list_id(1)].digest(),
    )


def test_hostile_tree_messages_get_bounded_answers() -> None:
    """Tree messages naming every deep node, or leaves with foreign digests, are answered
    within the message bounds and change nothing."""
    s = core("s1", filled(100))
    before = s.tree_root()
    nodes = {f"{i:03x}": "f" * 32 for i in range(4096)}
    out = s.receive_message("s2", AeTree("s2", 1, nodes), 0.0)
    sizes = [len(encode(e.message)) for e in out if isinstance(e, Send)]
    assert all(size < 2_000_000 for size in sizes) and len(sizes) <= 17
    foreign = {list_id(5000 + i): "0" * 64 for i in range(100)}
    out = s.receive_message("s2", AeLeaves("s2", 1, ("abc",), foreign), 0.0)
    assert (s.tree_root(), len(s.list_ids())) == (before, 100)
    assert all(isinstance(e, Send) for e in out)


def test_a_list_written_since_the_last_round_is_not_taken_for_a_tree_error() -> None:
    """A round after a write checks the tree against the written list's new digest, so it
    finds nothing wrong (it once dropped the list and counted a repair)."""
    s = core("s1", filled(50), check_buckets_per_round=4096)
    pair = Pair(s, core("s2", filled(50)))
    for i in range(50):
        delta = AWORSet().add("c2", f"new {i}")
        pair.carry(
            "s1", s.receive_message("s2", Propagate("s2", list_id(i), delta.to_dict()), 0.0), []
        )
    pair.round("s1")
    assert (0, 0) == (s.repaired_digests, s._trees["s2"].nodes_repaired)


def test_a_store_that_fails_to_read_does_not_stop_the_round() -> None:
    """A read error during the sweep is logged and the list read again at a later
    round; the round still sends its root."""
    store = filled(5)
    s = core("s1", store)
    real = store.load
    failing = {"on": True}

    def load(list_id: str) -> AWORSet | None:
        if failing["on"]:
            raise OSError("disk went away")
        return real(list_id)

    store.load = load  # type: ignore[method-assign]
    out = s._anti_entropy_round(0.0)
    failing["on"] = False
    s._anti_entropy_round(0.0)
    assert (["ae_tree"], 1 + 5, 0) == (
        [e.message.kind for e in out if isinstance(e, Send)][:1],
        s.loads,
        len(s._suspect),
    )
