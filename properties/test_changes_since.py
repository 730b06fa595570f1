"""Replies that cost the change (Rule 10 of the server core).

A client sends back the version of its last reply; a server that can vouch for it answers
with what changed since, and with what the client's context lacks otherwise. Whatever
happens in between (other clients, propagation, repairs, eviction, failed writes,
restarts), a client that has taken a reply holds everything the server held.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crdts import AWORSet
from reference_cluster.cores.client import ClientCore
from reference_cluster.cores.server import (
    MAX_CHANGES,
    MIN_CHANGED_LISTS,
    ServerConfig,
    ServerCore,
)
from reference_cluster.protocol.effects import Effect, Persist, Send
from reference_cluster.protocol.messages import (
    AeDeltas,
    Deliver,
    Forward,
    Propagate,
    SyncReply,
    SyncRequest,
    encode,
)
from reference_cluster.sim.durable import FakeServerStore
from reference_cluster.sim.mutants import UnrecordedRepairServer

LISTS = [str(uuid.UUID(int=i + 1, version=4)) for i in range(3)]
LIST = LISTS[0]


def server(
    store: FakeServerStore[AWORSet],
    *,
    cls: type[ServerCore[AWORSet]] = ServerCore,
    incarnation: int = 0,
    cache_lists: int = 1000,
) -> ServerCore[AWORSet]:
    return cls(
        "s1",
        AWORSet,
        peers=("s1", "s2"),
        brokers=("b1",),
        store=store,
        incarnation=incarnation,
        config=ServerConfig(cache_lists=cache_lists),
        rng=random.Random(incarnation),
        write_quorum=1,  # one copy acknowledges: W >= 2 is test_write_quorum's
    )


class Device:
    """A client replica of the lists, syncing by hand: its state and last versions."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.states = {k: AWORSet() for k in LISTS}
        self.versions: dict[str, str | None] = {}
        self.sent = 0

    def request(self, list_id: str, delta: AWORSet | None = None) -> bytes:
        self.sent += 1
        req = SyncRequest(
            f"{self.name}.{self.sent}",
            list_id,
            self.name,
            0,
            self.states[list_id].context.to_dict(),
            None if delta is None else delta.to_dict(),
            since=self.versions.get(list_id),
        )
        return encode(Forward(self.name, req))

    def take(self, reply: SyncReply) -> None:
        if reply.delta is not None:
            self.states[reply.list_id].join(AWORSet.from_dict(reply.delta))
        self.versions[reply.list_id] = reply.version


def carry(
    core: ServerCore[AWORSet], store: FakeServerStore[AWORSet], effects: list[Effect]
) -> list[SyncReply]:
    """Make every write durable at once; the replies that come out."""
    replies: list[SyncReply] = []
    for e in effects:
        if isinstance(e, Persist):
            store.begin(e)
            store.complete(e.token)
            replies.extend(carry(core, store, core.persisted(e.token, 0.0)))
        elif isinstance(e, Send) and isinstance(e.message, Deliver):
            reply = e.message.reply
            assert isinstance(reply, SyncReply)
            replies.append(reply)
    return replies


def sync(
    core: ServerCore[AWORSet],
    store: FakeServerStore[AWORSet],
    device: Device,
    list_id: str = LIST,
    delta: AWORSet | None = None,
) -> SyncReply:
    """One request of ``device`` carried to its one reply, which the device takes."""
    (reply,) = carry(core, store, core.receive("b1", device.request(list_id, delta), 0.0))
    device.take(reply)
    return reply


def edit(device: Device, item: str, list_id: str = LIST) -> AWORSet:
    return device.states[list_id].add(device.name, item)


def big_store(items: int) -> FakeServerStore[AWORSet]:
    store = FakeServerStore(AWORSet)
    state = AWORSet()
    for i in range(items):
        state.add("c0", f"item {i}")
    store.lists[LIST] = state
    return store


def test_a_sync_since_a_version_costs_the_change_not_the_list() -> None:
    """A device in step with a 1,000-item list is sent one item when another device adds
    one, instead of a walk of the whole list, and ends with the server's state."""
    store = big_store(1000)
    core = server(store)
    d1, d2 = Device("d1"), Device("d2")
    first = sync(core, store, d1)
    sync(core, store, d2)
    sync(core, store, d2, delta=edit(d2, "new"))
    since = sync(core, store, d1)
    assert since.delta is not None and first.delta is not None
    shipped = AWORSet.from_dict(since.delta)
    assert (shipped.value, 1001, 2) == ({"new"}, len(d1.states[LIST].value), core.replies_since)
    assert d1.states[LIST] == core.state(LIST)
    assert len(encode(since)) * 50 < len(encode(first))


def test_an_acknowledgement_since_a_version_carries_the_others_edits() -> None:
    """A push's acknowledgement, since the device's version, brings what another device
    added in between: nothing is left for the next pull."""
    store = big_store(10)
    core = server(store)
    d1, d2 = Device("d1"), Device("d2")
    sync(core, store, d1)
    sync(core, store, d2, delta=edit(d2, "eggs"))
    sync(core, store, d1, delta=edit(d1, "milk"))
    assert (d1.states[LIST], 1) == (core.state(LIST), core.replies_since)


def test_a_repair_reaches_a_device_that_syncs_since_a_version() -> None:
    """What anti-entropy brings is part of the changes since a version (here it starts
    them afresh): the device gets it. The mutant that leaves repairs out of the changes
    leaves the device short, so this test can fail."""
    outcomes = []
    for cls in (ServerCore, UnrecordedRepairServer):
        store = big_store(10)
        core = server(store, cls=cls)
        d1 = Device("d1")
        sync(core, store, d1)
        repair = AWORSet().add("c9", "from the other side")
        message = AeDeltas("s2", 1, {LIST: repair.to_dict()}, {})
        carry(core, store, core.receive_message("s2", message, 0.0))
        sync(core, store, d1)
        outcomes.append(d1.states[LIST] == core.state(LIST))
    assert [True, False] == outcomes


def test_a_propagation_is_part_of_the_changes() -> None:
    """A peer's propagation of another client's edit is sent since the version."""
    store = big_store(10)
    core = server(store)
    d1 = Device("d1")
    sync(core, store, d1)
    other = AWORSet().add("c9", "propagated")
    carry(core, store, core.receive_message("s2", Propagate("s2", LIST, other.to_dict()), 0.0))
    reply = sync(core, store, d1)
    assert reply.delta is not None
    assert (AWORSet.from_dict(reply.delta).value, 1) == ({"propagated"}, core.replies_since)
    assert d1.states[LIST] == core.state(LIST)


def _versions_the_server_cannot_vouch_for() -> dict[str, Any]:
    """``{case: (core, store, device)}``: the device's version names a state the server
    no longer vouches for, and the server holds something the device lacks."""
    cases: dict[str, Any] = {}

    def base() -> tuple[ServerCore[AWORSet], FakeServerStore[AWORSet], Device]:
        store = big_store(10)
        core = server(store)
        device = Device("d1")
        sync(core, store, device)
        return core, store, device

    edits = iter(range(1000))

    def others_edit(core: ServerCore[AWORSet], store: FakeServerStore[AWORSet]) -> None:
        other = Device("d2")
        sync(core, store, other)
        sync(core, store, other, delta=edit(other, f"x{next(edits)}"))

    core, store, device = base()
    device.versions[LIST] = "s2.0.000000000000:5"  # another server's
    others_edit(core, store)
    cases["another server"] = (core, store, device)

    core, store, device = base()
    others_edit(core, store)
    core = server(store, incarnation=1)  # a restart: the same counter values come again
    for _ in range(3):
        others_edit(core, store)
    cases["an earlier run"] = (core, store, device)

    for name, version in [("garbage", "x"), ("no number", "s1.0:"), ("a future one", "9:99")]:
        core, store, device = base()
        tag = (device.versions[LIST] or "").rpartition(":")[0]
        device.versions[LIST] = version if name != "a future one" else f"{tag}:999999"
        others_edit(core, store)
        cases[name] = (core, store, device)

    core, store, device = base()
    for _ in range(MAX_CHANGES + 1):
        others_edit(core, store)
    cases["older than the changes kept"] = (core, store, device)

    core, store, device = base()
    other = Device("d2")
    sync(core, store, other)
    (write,) = [
        e
        for e in core.receive("b1", other.request(LIST, edit(other, "lost")), 0.0)
        if isinstance(e, Persist)
    ]
    core.persist_failed(write.token, "disk full", 0.0)  # memory goes back to the store
    others_edit(core, store)
    cases["before a failed write"] = (core, store, device)
    return cases


def test_a_version_the_server_cannot_vouch_for_gets_the_whole_difference() -> None:
    """Another server's version, an earlier run's, garbage, a future number, one older
    than the changes kept, one from before a failed write: each is answered from the
    device's context, and the device ends with the server's state."""
    results = {}
    for name, (core, store, device) in _versions_the_server_cannot_vouch_for().items():
        before = core.replies_since
        sync(core, store, device)
        results[name] = (device.states[LIST] == core.state(LIST), core.replies_since - before)
    assert {name: (True, 0) for name in results} == results


def test_eviction_keeps_the_changes_and_a_damaged_read_back_drops_them() -> None:
    """With one cached list, a list evicted between two syncs is read back as it was and
    still answered since the version; one read back with another state is not."""
    store = big_store(10)
    store.lists[LISTS[1]] = AWORSet()
    core = server(store, cache_lists=1)
    d1, d2 = Device("d1"), Device("d2")
    sync(core, store, d1)
    sync(core, store, d2, LISTS[1])  # evicts LIST
    sync(core, store, d2, delta=edit(d2, "after eviction"))
    sync(core, store, d2, LISTS[1])  # evicts LIST again
    before = core.replies_since
    sync(core, store, d1)
    kept = (core.replies_since - before, d1.states[LIST] == core.state(LIST))
    store.lists[LIST].add("c7", "behind the server's back")
    sync(core, store, d2, LISTS[1])
    before = core.replies_since
    sync(core, store, d1)
    dropped = (core.replies_since - before, d1.states[LIST] == core.state(LIST))
    assert ((1, True), (0, True), True) == (kept, dropped, core.evictions >= 2)


def test_the_changes_kept_are_bounded() -> None:
    """Each list keeps at most MAX_CHANGES deltas, and only a bounded number of lists."""
    store = big_store(0)
    store.lists.update({str(uuid.UUID(int=100 + i, version=4)): AWORSet() for i in range(200)})
    core = server(store, cache_lists=1)
    device = Device("d1")
    sync(core, store, device)
    for i in range(3 * MAX_CHANGES):
        sync(core, store, device, delta=edit(device, f"i{i}"))
    kept = len(core._changes[LIST].deltas)
    for list_id in list(store.lists)[1:]:
        device.states.setdefault(list_id, AWORSet())
        sync(core, store, device, list_id)
    assert (MAX_CHANGES, MIN_CHANGED_LISTS) == (kept, len(core._changes))


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("pull"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("remove"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("propagate"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("repair"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("fail"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("restart"), st.integers(0, 2), st.integers(0, 2)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(OPS, st.integers(1, 3))
def test_every_reply_leaves_the_device_with_all_the_server_held(
    ops: list[tuple[str, int, int]], cache_lists: int
) -> None:
    """Any mix of pushes, pulls, removals, propagations, repairs, failed writes and
    restarts over three lists and three devices, with a small cache: after each reply a
    device holds everything the server held."""
    store: FakeServerStore[AWORSet] = FakeServerStore(AWORSet)
    incarnation = 0
    core = server(store, cache_lists=cache_lists)
    devices = [Device(f"d{i}") for i in range(3)]
    peer = AWORSet()
    for n, (op, who, which) in enumerate(ops):
        device, list_id = devices[who], LISTS[which]
        if op in ("push", "pull", "remove"):
            delta = None
            if op == "push":
                delta = edit(device, f"item {n % 5}", list_id)
            elif op == "remove" and device.states[list_id].value:
                item = sorted(device.states[list_id].value)[0]
                delta = device.states[list_id].remove(device.name, item)
            sync(core, store, device, list_id, delta)
            held = core.state(list_id)
            assert held is None or held <= device.states[list_id]
        elif op in ("propagate", "repair"):
            delta = peer.add("p9", f"peer {n}")
            msg: Any = (
                Propagate("s2", list_id, delta.to_dict())
                if op == "propagate"
                else AeDeltas("s2", n, {list_id: delta.to_dict()}, {})
            )
            carry(core, store, core.receive_message("s2", msg, 0.0))
        elif op == "fail":
            delta = edit(device, f"failed {n}", list_id)
            for e in core.receive("b1", device.request(list_id, delta), 0.0):
                if isinstance(e, Persist):
                    core.persist_failed(e.token, "disk full", 0.0)
        else:
            incarnation += 1
            core = server(store, incarnation=incarnation, cache_lists=cache_lists)


def test_the_client_core_sends_back_the_version_it_took() -> None:
    """The client core keeps each list's last version in memory and sends it as
    ``since``; a reply that does not decode leaves it as it was."""
    client: ClientCore[AWORSet] = ClientCore("c1", AWORSet, brokers=("b1",), rng=random.Random(1))

    def requests(effects: list[Effect]) -> list[SyncRequest]:
        sent = [e.message for e in effects if isinstance(e, Send)]
        return [m for m in sent if isinstance(m, SyncRequest)]

    (first,) = requests(client.open_list(LIST, 0.0))
    item = AWORSet().add("s", "x").to_dict()
    client.receive_message("b1", SyncReply(first.request_id, LIST, item, "s1.0.ab:7"), 0.1)
    (second,) = requests(client.sync(LIST, 0.2))
    bad = SyncReply(second.request_id, LIST, {**item, "v": 99}, "s1.0.ab:9")
    client.receive_message("b1", bad, 0.3)
    for t in range(1, 60):  # the bad reply's request is retried, then given up
        client.on_timer(float(t))
    (third,) = requests(client.sync(LIST, 100.0))
    assert (None, "s1.0.ab:7", "s1.0.ab:7") == (first.since, second.since, third.since)
