"""Membership changes (Rule 13 of the server core, Rule 7 of the broker core).

Cores exchange frames in process over fake stores; a mesh carries frames and completes
writes until quiet, dropping what a test says to drop. The last test runs real
processes: a server joins a running cluster and another leaves it.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster_harness import PASSWORD, poll

from crdts import AWORSet
from reference_cluster.cores.broker import BrokerCore
from reference_cluster.cores.client import ClientConfig
from reference_cluster.cores.server import ServerConfig, ServerCore
from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import LocalCluster, Timing, free_base_port
from reference_cluster.processes.config import LocalLayout
from reference_cluster.protocol.effects import (
    DropHint,
    DropList,
    Effect,
    Persist,
    SaveMembership,
    Send,
)
from reference_cluster.protocol.messages import (
    AeTree,
    Forward,
    Heartbeat,
    Hint,
    MembershipUpdate,
    Message,
    Propagate,
    Replicate,
    Stored,
    SyncRequest,
    decode,
    encode,
)
from reference_cluster.protocol.placement import Membership
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.sim.durable import FakeServerStore
from reference_cluster.storage.client_store import ClientStore
from reference_cluster.storage.server_store import ServerStore

FOUR = Membership([f"s{i}" for i in range(1, 5)])
N = 2
LISTS = [str(uuid.UUID(int=i + 1, version=4)) for i in range(24)]


def core(name: str, store: FakeServerStore[AWORSet], members: Membership) -> ServerCore[AWORSet]:
    return ServerCore(
        name,
        AWORSet,
        peers=(),
        brokers=("b1",),
        store=store,
        config=ServerConfig(),
        rng=random.Random(0),
        replicas=N,
        membership=members,
    )


def sends(effects: list[Effect]) -> list[tuple[str, Message]]:
    return [(e.to, e.message) for e in effects if isinstance(e, Send)]


def update(members: Membership, origin: str = "operator") -> MembershipUpdate:
    return MembershipUpdate(origin, members.epoch, {s: "" for s in sorted(members.servers)})


class Mesh:
    """Servers over fake stores; carries frames, completes writes, drops what
    ``drop`` says, and carries out the drops of hints and lists."""

    def __init__(self, names: list[str], members: Membership) -> None:
        self.stores = {s: FakeServerStore(AWORSet) for s in names}
        self.cores = {s: core(s, self.stores[s], members) for s in names}
        self.drop: Callable[[str, str, Message], bool] = lambda _s, _d, _m: False
        self.forgotten: list[tuple[str, str]] = []

    def carry(self, src: str, effects: list[Effect]) -> None:
        queue: list[tuple[str, str, bytes]] = []
        self._take(src, effects, queue)
        for _ in range(20_000):
            if not queue:
                return
            frm, dst, data = queue.pop(0)
            self._take(dst, self.cores[dst].receive(frm, data, 0.0), queue)
        raise AssertionError("the exchange did not end")

    def _take(self, src: str, effects: list[Effect], queue: list[tuple[str, str, bytes]]) -> None:
        store = self.stores[src]
        for e in effects:
            if isinstance(e, Persist):
                store.begin(e)
                store.complete(e.token)
                self._take(src, self.cores[src].persisted(e.token, 0.0), queue)
            elif isinstance(e, DropList):
                if store.drop_list(e):
                    self.forgotten.append((src, e.list_id))
            elif isinstance(e, SaveMembership):
                store.membership = (e.epoch, dict(e.servers))
            elif isinstance(e, Send) and e.to in self.cores and not self.drop(src, e.to, e.message):
                queue.append((src, e.to, encode(e.message)))

    def push(self, list_id: str, item: str, members: Membership) -> None:
        """A client's edit of ``list_id`` through its first holder."""
        first = members.holders(list_id, N)[0]
        req = SyncRequest(f"r-{item}", list_id, "c1", 0, None, AWORSet().add("c1", item).to_dict())
        self.carry(first, self.cores[first].receive("b1", encode(Forward("b1", req)), 0.0))

    def change(self, members: Membership) -> None:
        """An operator tells one member; gossip does the rest (a round each)."""
        first = sorted(members.servers)[0]
        self.carry(first, self.cores[first].adopt(update(members), 0.0))

    def rounds(self, count: int) -> None:
        for _ in range(count):
            for name, c in self.cores.items():
                self.carry(name, c._anti_entropy_round(0.0))


def test_a_later_membership_replaces_an_earlier_one_and_epoch_0_never_does() -> None:
    """A larger epoch wins; at equal epochs above 0 the larger sorted member list wins
    (two changes made at once agree everywhere); epoch 0, a process's own flags, never
    replaces another membership."""
    a0, b0 = Membership(["s1", "s2"]), Membership(["s1", "s2", "s3"])
    a1, b1 = Membership(["s1", "s2"], 1), Membership(["s1", "s3"], 1)
    assert (False, False, True, False, True, False, b1) == (
        b0.later_than(a0),
        a0.later_than(b0),
        a1.later_than(b0),
        b0.later_than(a1),
        b1.later_than(a1),
        a1.later_than(b1),
        a1.newer(b1),
    )


def test_a_newer_membership_is_recorded_first_then_spread_and_an_older_is_answered() -> None:
    """A server that adopts a membership records it before anything else and tells every
    server of the old and the new membership; a peer at an older epoch is answered with
    the newer one; the same membership again changes nothing."""
    s1 = core("s1", FakeServerStore(AWORSet), FOUR)
    five = Membership([*FOUR.servers, "s5"], 1)
    out = s1.adopt(update(five), 0.0)
    older = sends(s1.receive("s2", encode(update(FOUR, "s2")), 0.0))
    again = s1.receive("s2", encode(update(five, "s2")), 0.0)
    first = out[0]
    assert isinstance(first, SaveMembership)
    assert (1, ["s2", "s3", "s4", "s5"], [("s2", 1)], [], five) == (
        first.epoch,
        sorted(to for to, m in sends(out) if isinstance(m, MembershipUpdate)),
        [(to, m.epoch) for to, m in older if isinstance(m, MembershipUpdate)],
        again,
        s1.membership,
    )


def test_trees_are_compared_only_at_equal_epochs() -> None:
    """A tree root from a peer at another epoch is answered with this server's
    membership, not with tree nodes."""
    s1 = core("s1", FakeServerStore(AWORSet), FOUR)
    ((to, msg),) = sends(s1.receive("s2", encode(AeTree("s2", 1, {"": "0" * 32}, 3)), 0.0))
    assert (to, type(msg), msg.epoch) == ("s2", MembershipUpdate, 0)  # type: ignore[attr-defined]


def _holders_states(mesh: Mesh, members: Membership) -> dict[str, set[str]]:
    """List -> the servers whose durable store holds it."""
    out: dict[str, set[str]] = {k: set() for k in LISTS}
    for name, store in mesh.stores.items():
        for list_id in store.lists:
            out[list_id].add(name)
    return out


def test_a_joining_server_gets_its_lists_and_the_old_holders_forget_theirs() -> None:
    """After a server joins, the lists whose holders changed are streamed to their new
    holders, and each old holder forgets a list only once every holder confirmed it:
    in the end each list is stored on exactly its holders by the new membership, with
    every edit."""
    names = [*sorted(FOUR.servers), "s5"]
    mesh = Mesh(names[:4], FOUR)
    for i, list_id in enumerate(LISTS):
        mesh.push(list_id, f"item {i}", FOUR)
    five = Membership(names, 1)
    mesh.stores["s5"] = FakeServerStore(AWORSet)
    mesh.stores["s5"].membership = (1, {s: "" for s in names})
    mesh.cores["s5"] = core("s5", mesh.stores["s5"], five)
    mesh.change(five)
    mesh.rounds(3)
    placed = {k: set(five.holders(k, N)) for k in LISTS}
    items = {
        k: {frozenset(mesh.stores[h].lists[k].value) for h in placed[k]}
        for k in LISTS
        if all(k in mesh.stores[h].lists for h in placed[k])
    }
    moved = [k for k in LISTS if set(FOUR.holders(k, N)) != placed[k]]
    assert placed == _holders_states(mesh, five)
    assert ({k: {frozenset({f"item {i}"})} for i, k in enumerate(LISTS)}, True) == (
        items,
        len(moved) > 0 and all(c.membership == five for c in mesh.cores.values()),
    )
    assert sorted(k for _, k in mesh.forgotten) == sorted(moved)


def test_a_list_is_not_forgotten_while_a_holder_has_not_confirmed_it() -> None:
    """With every message to one new holder lost, the old holder keeps the list (and
    says it has lists to hand over); once the messages go through, it forgets it."""
    names = sorted(FOUR.servers)
    mesh = Mesh(names, FOUR)
    for i, list_id in enumerate(LISTS):
        mesh.push(list_id, f"item {i}", FOUR)
    three = Membership(names[:3], 1)
    moved = [k for k in LISTS if "s4" in FOUR.holders(k, N)]
    mesh.drop = lambda _src, dst, msg: dst == "s1" and isinstance(msg, Replicate)
    mesh.change(three)
    mesh.rounds(3)
    kept = mesh.cores["s4"].handing
    stuck = [k for k in moved if "s1" in three.holders(k, N)]
    mesh.drop = lambda _src, _dst, _msg: False
    mesh.rounds(2)
    assert stuck
    assert (True, 0, {k: set(three.holders(k, N)) for k in LISTS}) == (
        kept >= len(stuck),
        mesh.cores["s4"].handing,
        _holders_states(mesh, three),
    )


def test_handoffs_to_a_silent_holder_keep_one_ask_per_list_and_holder() -> None:
    """Round after round of unanswered handoffs leave at most one pending ask for each
    list and holder (memory does not grow while a holder is down)."""
    store: FakeServerStore[AWORSet] = FakeServerStore(AWORSet)
    for k in LISTS:
        store.lists[k] = AWORSet().add("c1", k)
    three = Membership(["s1", "s2", "s3"], 1)
    s4 = core("s4", store, FOUR)
    s4.adopt(update(three), 0.0)
    away = len(s4._away)
    sent = [len(sends(s4._anti_entropy_round(float(r)))) for r in range(5)]
    assert (True, away * N) == (away > 0, len(s4._list_asks))
    assert sent[0] == sent[-1]


def test_a_broker_follows_the_newest_membership_its_servers_announce() -> None:
    """A heartbeat carries the membership the server follows: the broker routes by a
    newer one, and not by an older one or another server's flags at epoch 0."""
    broker = BrokerCore("b1", membership=FOUR, replicas=N)
    five = Membership([*FOUR.servers, "s5"], 1)
    broker.receive("s9", encode(Heartbeat("s9", 0, ("s8", "s9"))), 0.0)
    at_zero = broker.membership
    broker.receive("s5", encode(Heartbeat("s5", 1, tuple(sorted(five.servers)))), 0.0)
    broker.receive("s1", encode(Heartbeat("s1", 0, tuple(sorted(FOUR.servers)))), 0.0)
    assert (FOUR, five) == (at_zero, broker.membership)


def test_the_store_records_the_membership_and_forgets_a_list_only_at_its_digest(
    tmp_path: Path,
) -> None:
    """The membership survives reopening; a list is forgotten only at the digest its
    holders confirmed, and its row keeps the owner (the accounts directory's record)."""
    path = tmp_path / "s.sqlite"
    store = ServerStore(path, AWORSet)
    list_id = LISTS[0]
    first = AWORSet().add("c1", "milk")
    store.apply_delta(list_id, first, owner="u1")
    store.record_cluster_membership(2, {"s1": "tcp://a:1", "s2": ""})
    stale = store.forget_list(list_id, AWORSet().digest())
    forgotten = store.forget_list(list_id, first.digest())
    store.close()
    again = ServerStore(path, AWORSet)
    try:
        assert (False, True, (2, {"s1": "tcp://a:1", "s2": ""}), AWORSet(), "u1") == (
            stale,
            forgotten,
            again.cluster_membership(),
            again.load(list_id),
            again.owner(list_id),
        )
    finally:
        again.close()


def test_a_restarted_server_starts_from_its_recorded_membership() -> None:
    """A server that left records the membership without itself; built again from its
    store, it serves nothing and hands over what it stored."""
    store: FakeServerStore[AWORSet] = FakeServerStore(AWORSet)
    s4 = core("s4", store, FOUR)
    held = [k for k in LISTS if s4.holds(k)]
    for k in held:
        store.lists[k] = AWORSet().add("c1", k)
    s4 = core("s4", store, FOUR)
    three = Membership(["s1", "s2", "s3"], 1)
    s4.adopt(update(three), 0.0)
    store.membership = (1, {s: "" for s in three.servers})
    again = core("s4", store, store.saved_membership(FOUR))
    handed = {
        m.list_id for _, m in sends(again._anti_entropy_round(0.0)) if isinstance(m, Replicate)
    }
    assert (False, (), set(held)) == (again.member, again.list_ids(), handed)
    assert decode(encode(update(three))) == update(three)


# -- real processes -------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_a_server_joins_and_another_leaves_a_running_cluster(tmp_path: Path) -> None:
    """3 servers, 2 replicas, W = 2, CURVE on every link. A client makes 8 lists; s4
    joins (its key is made and trusted on the way); then s1 leaves, hands its lists over
    and is stopped. Every list ends stored on exactly its 2 holders by the last
    membership (s2 s3 s4, epoch 2), with its item, and both brokers route by it."""
    layout = LocalLayout("127.0.0.1", free_base_port(servers=4))
    timing = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5)
    with LocalCluster(tmp_path / "data", layout=layout, timing=timing, replicas=2) as cluster:
        cluster.start()
        store: ClientStore[ShoppingList] = ClientStore(tmp_path / "c.sqlite", ShoppingList)
        client = Client(
            store,
            cluster.client_brokers("c"),
            broker_key=cluster.broker_key,
            config=ClientConfig(request_timeout=2.0),
        )
        try:
            client.sign_up(f"joiner-{os.getpid()}", PASSWORD)
            lists = [client.create(f"list {i}") for i in range(8)]
            for i, list_id in enumerate(lists):
                client.edit(list_id, lambda s, r, i=i: s.add_item(r, f"item {i}", 1))
            first = client.sync(lists)
            assert first.ok
            cluster.add_server()
            cluster.remove_server("s1")
            cluster.wait_handed_over("s1", timeout=60.0)
            cluster.retire("s1")
            final = cluster.membership

            def placed() -> dict[str, set[str]] | None:
                found: dict[str, set[str]] = {k: set() for k in lists}
                for name in final.servers:
                    status = cluster.server_status(name, states=True, timeout=1.0)
                    if status is None or status.epoch != final.epoch:
                        return None
                    for k in lists:
                        state = status.states.get(k)
                        if state is not None and ShoppingList.from_dict(state).items:
                            found[k].add(name)
                want = {k: set(final.holders(k, 2)) for k in lists}
                return found if found == want else None

            found = poll(placed, "every list on its holders", timeout=60.0, every=0.2)
            assert client.sync(lists).ok
            items = {k: sorted(client.state(k).items) for k in lists}  # type: ignore[union-attr]
        finally:
            client.close()
    assert (["s2", "s3", "s4"], 2) == (sorted(final.servers), final.epoch)
    assert {k: 2 for k in lists} == first.copies  # W = 2: both holders had each edit
    assert {k: [f"item {i}"] for i, k in enumerate(lists)} == items
    assert all(len(v) == 2 for v in found.values())


def test_a_push_whose_list_moves_away_before_its_quorum_is_answered_not_holder() -> None:
    """The coordinator's write is durable, then a membership change takes the list away
    from it before the second copy is confirmed: the client hears the retryable
    ``not_holder`` (its retry goes to a holder), not a reply built from nothing."""
    list_id = LISTS[0]
    first = FOUR.holders(list_id, N)[0]
    store: FakeServerStore[AWORSet] = FakeServerStore(AWORSet)
    c = core(first, store, FOUR)
    req = SyncRequest("r1", list_id, "c1", 0, None, AWORSet().add("c1", "milk").to_dict())
    out = c.receive("b1", encode(Forward("b1", req)), 0.0)
    (write,) = [e for e in out if isinstance(e, Persist)]
    store.begin(write)
    store.complete(write.token)
    c.persisted(write.token, 0.0)
    others = sorted(FOUR.servers - {first})
    c.adopt(update(Membership(others, 1)), 0.0)
    (ask,) = {m.ask for _, m in sends(out) if isinstance(m, Replicate)}
    second = FOUR.holders(list_id, N)[1]
    ((_, deliver),) = sends(c.receive(second, encode(Stored(second, list_id, ask)), 0.0))
    reply = deliver.reply  # type: ignore[attr-defined]
    assert ("not_holder", True) == (reply.code, reply.retryable)


def test_a_hint_for_a_list_the_server_now_holds_is_joined_in_and_then_dropped() -> None:
    """A server keeping a hint becomes a holder of the list: its next round joins the
    hint into its own copy and drops the hint only once that write is durable."""
    list_id = LISTS[1]
    outsider = FOUR.preference(list_id)[-1]
    holder = FOUR.holders(list_id, N)[0]
    store: FakeServerStore[AWORSet] = FakeServerStore(AWORSet)
    c = core(outsider, store, FOUR)
    hint = Hint("s9", list_id, holder, AWORSet().add("c1", "milk").to_dict(), 3)
    for e in c.receive("s9", encode(hint), 0.0):
        if isinstance(e, Persist):
            store.begin(e)
            store.complete(e.token)
            c.persisted(e.token, 0.0)
    c.adopt(update(Membership([outsider, holder], 1)), 0.0)
    (write,) = [e for e in c._anti_entropy_round(0.0) if isinstance(e, Persist)]
    kept = c.hints
    store.begin(write)
    store.complete(write.token)
    (drop,) = c.persisted(write.token, 0.0)
    assert isinstance(drop, DropHint)
    assert (1, 0, True, {"milk"}) == (
        kept,
        c.hints,
        store.drop_hint(drop),
        set(store.lists[list_id].value),
    )


@pytest.mark.parametrize("epoch", [0, 1])
def test_anti_entropy_descends_the_tree_at_any_epoch(epoch: int) -> None:
    """Two servers share 100 lists and one misses an edit: one round of anti-entropy
    repairs it whatever the epoch (the tree's deeper nodes carry the epoch too)."""
    members = Membership(["s1", "s2"], epoch)
    ids = [str(uuid.UUID(int=1000 + i, version=4)) for i in range(100)]
    mesh = Mesh(["s1", "s2"], members)
    for name in ("s1", "s2"):
        for k in ids:
            mesh.stores[name].lists[k] = AWORSet().add("c1", k)
    mesh.cores = {s: core(s, mesh.stores[s], members) for s in ("s1", "s2")}
    missed = AWORSet().add("c2", "late")
    mesh.drop = lambda _src, _dst, _msg: True
    mesh.carry(
        "s1", mesh.cores["s1"].receive("s9", encode(Propagate("s9", ids[7], missed.to_dict())), 0.0)
    )
    mesh.drop = lambda _src, _dst, _msg: False
    mesh.carry("s1", mesh.cores["s1"]._anti_entropy_round(0.0))
    assert missed <= mesh.stores["s2"].lists[ids[7]]
