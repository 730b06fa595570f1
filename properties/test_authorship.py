"""Authorship: a server accepts in a client's push only that device's own new dots, no
claim about others beyond what it has seen, bounded jumps, and pushes within quotas."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdts import AWORSet
from crdts._codec import MAX_INT
from reference_cluster.cores.authorship import PushLimits, Refusal, check_push
from reference_cluster.cores.client import ClientConfig, ClientCore
from reference_cluster.cores.server import ServerConfig, ServerCore
from reference_cluster.protocol.effects import Acked, Effect, Persist, Send, SyncFailed
from reference_cluster.protocol.messages import (
    RETRYABLE_CODES,
    Deliver,
    ErrorReply,
    Forward,
    Message,
    SyncReply,
    SyncRequest,
)
from reference_cluster.shopping_list import ShoppingList

LIST = str(uuid.UUID(int=7, version=4))
EMPTY_CTX: dict[str, Any] = {"vv": {}, "cloud": []}


@pytest.fixture(autouse=True)
def _quiet_cores() -> Iterator[None]:
    """Refusals log warnings by design; keep the test output readable."""
    logger = logging.getLogger("reference_cluster")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def forged(
    entries: list[list[Any]], vv: dict[str, int] | None = None, cloud: list[list[Any]] = ()
) -> ShoppingList:
    """A delta built by hand: ``entries`` of ``[replica, counter, payload]`` and a context
    holding them plus ``vv`` and ``cloud``."""
    dots = [[r, c] for r, c, _ in entries]
    return ShoppingList.from_dict(
        {
            "type": "ShoppingList",
            "v": 1,
            "ctx": {"vv": dict(vv or {}), "cloud": [*dots, *cloud]},
            "entries": entries,
        }
    )


def item(name: str, quantity: int = 1) -> list[Any]:
    """The encoded payload of "set ``name`` to ``quantity``"."""
    return ["items", [name, ["set", quantity]]]


def shared() -> ShoppingList:
    """A server's list: alice (device "a") added milk and eggs, bob ("b") added tea."""
    s = ShoppingList()
    s.add_item("a", "milk", 2)
    s.add_item("a", "eggs", 6)
    s.add_item("b", "tea")
    return s


def code(refusal: Refusal | None) -> str | None:
    return None if refusal is None else refusal.code


# -- the pure check -------------------------------------------------------------------------


def test_an_honest_push_is_accepted() -> None:
    """bob's own edits, a removal of alice's item he saw, and a retry of both pass."""
    server = shared()
    bob = server.copy()
    delta = bob.add_item("b", "bread")
    delta.join(bob.remove_item("b", "milk"))
    assert None is check_push(server, delta, "b")
    server.join(delta)
    assert None is check_push(server, delta, "b")


def test_a_dot_of_another_replica_is_forbidden() -> None:
    """bob pushing an entry under alice's next dot is a forgery."""
    refusal = check_push(shared(), forged([["a", 3, item("forged")]]), "b")
    assert "forbidden" == code(refusal)
    assert refusal is not None and "only hold its own dots" in refusal.detail


def test_another_payload_under_a_seen_dot_is_forbidden() -> None:
    """A dot names one edit: the same dot with another payload is refused, the same payload
    (a retry) is not, and a dot the server saw and removed is harmless."""
    server = shared()
    assert "forbidden" == code(check_push(server, forged([["b", 1, item("tea", 9)]]), "b"))
    assert None is check_push(server, forged([["b", 1, item("tea")]]), "b")
    server.remove_item("a", "tea")
    assert None is check_push(server, forged([["b", 1, item("tea", 9)]]), "b")


def test_a_context_claiming_a_counter_far_ahead_is_forbidden() -> None:
    """The reported attack: a context claiming alice's counter at 2**63 - 1."""
    refusal = check_push(shared(), forged([], vv={"a": MAX_INT}), "b")
    assert "forbidden" == code(refusal)
    cloud = check_push(shared(), forged([], cloud=[["a", 2**40]]), "b")
    assert "forbidden" == code(cloud)


def test_a_claim_just_ahead_of_the_server_is_behind_and_retryable() -> None:
    """A claim of a dot the server has not seen yet may be lag: ``behind``, retryable."""
    refusal = check_push(shared(), forged([], cloud=[["a", 3]]), "b")
    assert "behind" == code(refusal)
    assert "behind" in RETRYABLE_CODES
    assert "behind" == code(check_push(shared(), forged([], vv={"a": 5}), "b"))


def test_a_claim_of_seen_dots_is_a_legitimate_removal() -> None:
    """A context holding alice's seen dots (a remove bob observed) passes."""
    assert None is check_push(shared(), forged([], vv={"a": 2}), "b")


def test_the_own_counter_may_jump_at_most_the_bound() -> None:
    """bob's own next dot may be up to max_new_dots past what the server saw, not more."""
    limit = PushLimits().max_new_dots
    assert None is check_push(shared(), forged([["b", 1 + limit, item("x")]]), "b")
    jump = check_push(shared(), forged([["b", 2 + limit, item("x")]]), "b")
    assert "forbidden" == code(jump)
    assert "forbidden" == code(check_push(shared(), forged([], vv={"b": MAX_INT}), "b"))
    assert None is check_push(None, forged([["b", limit, item("x")]]), "b")


def test_the_number_of_items_is_bounded_but_removals_always_pass() -> None:
    """A list at its item quota refuses a new item and accepts a removal."""
    limits = PushLimits(max_map_keys=3)
    server = shared()
    bob = server.copy()
    assert "quota" == code(check_push(server, bob.add_item("b", "bread"), "b", limits))
    assert None is check_push(server, bob.add_item("b", "milk"), "b", limits)
    assert None is check_push(server, bob.remove_item("b", "eggs"), "b", limits)


def test_a_counter_cannot_be_driven_to_an_absurd_magnitude() -> None:
    """One forged dot adding 2**40 to milk's quantity is refused; 10**9 in all is not."""
    add = ["items", ["milk", ["add", 2**40]]]
    assert "quota" == code(check_push(shared(), forged([["b", 2, add]]), "b"))
    fine = ["items", ["milk", ["add", 10**9 - 2]]]
    assert None is check_push(shared(), forged([["b", 2, fine]]), "b")
    over = ["items", ["milk", ["add", 10**9 + 1]]]
    assert "quota" == code(check_push(shared(), forged([["b", 2, over]]), "b"))


def test_names_with_control_characters_are_refused() -> None:
    """An item or list name holding an escape or a newline is ``invalid``."""
    assert "invalid" == code(check_push(shared(), forged([["b", 2, item("x\x1b[2J")]]), "b"))
    assert "invalid" == code(check_push(shared(), forged([["b", 2, ["name", "a\nb"]]]), "b"))
    assert "invalid" == code(check_push(shared(), forged([["b", 2, item("x\u202e")]]), "b"))


def test_delta_and_state_sizes_are_bounded() -> None:
    """Too many dots in a push, too many bytes, or a state over its dot quota: ``quota``."""
    delta = ShoppingList()
    for i in range(5):
        delta.add_item("c", f"item {i}")
    assert "quota" == code(check_push(None, delta, "c", PushLimits(max_delta_entries=4)))
    assert "quota" == code(check_push(None, delta, "c", PushLimits(max_delta_bytes=100)))
    assert "quota" == code(check_push(shared(), delta, "c", PushLimits(max_state_entries=7)))
    assert None is check_push(shared(), delta, "c", PushLimits(max_state_entries=8))


def test_a_type_that_is_not_causal_is_not_checked() -> None:
    """A document without dots has nothing to forge: accepted."""
    from crdts import GCounter

    assert None is check_push(GCounter(), GCounter(), "b")


OPS = st.lists(
    st.tuples(
        st.sampled_from("abc"),
        st.sampled_from(["add", "plus", "set", "buy", "remove", "rename", "sync"]),
        st.sampled_from(["milk", "eggs", "tea"]),
    ),
    max_size=40,
)


@settings(deadline=None)
@given(OPS)
def test_honest_histories_are_always_accepted(ops: list[tuple[str, str, str]]) -> None:
    """Devices that edit, seal and push the join of their queued deltas to a server that
    has seen all they saw are never refused, whatever they do."""
    server = ShoppingList()
    devices = {r: ShoppingList() for r in "abc"}
    queues: dict[str, list[ShoppingList]] = {r: [] for r in "abc"}
    for replica, op, name in ops:
        state = devices[replica]
        if op == "sync":
            if queues[replica]:
                delta = queues[replica][0].copy()
                for d in queues[replica][1:]:
                    delta.join(d)
                state.seal()
                assert None is check_push(server, delta, replica)
                server.join(delta)
                queues[replica].clear()
            state.join(server)
            continue
        try:
            if op == "add":
                delta = state.add_item(replica, name, 2)
            elif op == "plus":
                delta = state.change_quantity(replica, name, 1)
            elif op == "set":
                delta = state.set_quantity(replica, name, 4)
            elif op == "buy":
                delta = state.mark_bought(replica, name)
            elif op == "remove":
                delta = state.remove_item(replica, name)
            else:
                delta = state.rename(replica, name)
        except ValueError:
            continue
        queues[replica].append(delta)


def test_the_check_reads_the_state_without_copying_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check never copies, encodes or walks the server's state (it costs the delta)."""
    server = ShoppingList()
    for i in range(200):
        server.add_item("a", f"item {i}")
    bob = server.copy()
    delta = bob.add_item("b", "item 7")

    kernel = server.dot_kernel()
    cls = type(kernel)

    def guarded(name: str) -> Any:
        original = getattr(cls, name)
        if isinstance(original, property):
            original = original.fget

        def method(self: Any, *args: Any) -> Any:
            if self is kernel:
                raise AssertionError(f"the check called {name} on the whole state")
            return original(self, *args)

        return method

    for name in ("copy", "to_dict", "delta_for", "__le__"):
        monkeypatch.setattr(cls, name, guarded(name))
    monkeypatch.setattr(cls, "context", property(guarded("context")))
    assert None is check_push(server, delta, "b")


# -- the server core ------------------------------------------------------------------------


def server_core(lists: dict[str, ShoppingList] | None = None) -> ServerCore[ShoppingList]:
    return ServerCore(
        "s1",
        ShoppingList,
        peers=("s1", "s2"),
        brokers=("b1",),
        lists=lists,
        config=ServerConfig(),
        rng=random.Random(0),
        write_quorum=1,  # one copy acknowledges: W >= 2 is test_write_quorum's
    )


def forward(delta: ShoppingList | None, replica: str, rid: str = "r.1") -> Forward:
    req = SyncRequest(rid, LIST, replica, 0, EMPTY_CTX, None if delta is None else delta.to_dict())
    return Forward("client", req)


def replies(effects: list[Effect]) -> list[Message]:
    return [
        e.message.reply for e in effects if isinstance(e, Send) and isinstance(e.message, Deliver)
    ]


def test_the_server_refuses_forgeries_and_changes_nothing() -> None:
    """Every forgery gets an error reply, and no write, propagation or state change."""
    core = server_core({LIST: shared()})
    before = core.digest(LIST)
    attacks = [
        ("forbidden", forged([["a", 3, item("forged")]])),
        ("forbidden", forged([], vv={"a": MAX_INT})),
        ("behind", forged([], cloud=[["a", 3]])),
        ("forbidden", forged([["b", 1, item("tea", 9)]])),
        ("forbidden", forged([["b", 2**40, item("x")]])),
        ("quota", forged([["b", 2, ["items", ["milk", ["add", 2**40]]]]])),
        ("invalid", forged([["b", 2, item("\x1b]0;pwned\x07")]])),
    ]
    for i, (expected, delta) in enumerate(attacks):
        out = core.receive_message("b1", forward(delta, "b", f"r.{i}"), 1.0)
        (reply,) = replies(out)
        assert isinstance(reply, ErrorReply)
        assert (expected, f"r.{i}") == (reply.code, reply.request_id)
        assert [] == [e for e in out if isinstance(e, Persist)]
        assert 1 == len(out)
    assert before == core.digest(LIST)


def test_an_offline_edit_survives_a_forged_claim_of_its_dot() -> None:
    """The reported attack on the core: bob claims alice's counter at 2**63 - 1; alice's
    queued edit then arrives and is on the list, and her next edit still gets a dot."""
    core = server_core({LIST: shared()})
    alice = shared()
    offline = alice.add_item("a", "bread")
    core.receive_message("b1", forward(forged([], vv={"a": MAX_INT}), "b"), 1.0)
    out = core.receive_message("b1", forward(offline, "a", "r.2"), 2.0)
    (write,) = [e for e in out if isinstance(e, Persist)]
    (reply,) = replies(core.persisted(write.token, 2.1))
    assert isinstance(reply, SyncReply)
    state = core.state(LIST)
    assert state is not None and "bread" in state
    alice.join(ShoppingList.from_dict(reply.delta or {}))
    assert 4 == alice.context.next_dot("a").counter


# -- the client retries ``behind`` ------------------------------------------------------------


def test_a_client_retries_a_push_refused_as_behind_and_keeps_it_queued() -> None:
    """``behind`` is retried (same delta) until a server takes it; given up, the edit stays
    queued for the next sync."""
    cfg = ClientConfig(request_timeout=0.5, max_attempts=2, backoff_base=0.01, backoff_cap=0.01)
    client: ClientCore[AWORSet] = ClientCore(
        "c1", AWORSet, brokers=("b1", "b2"), config=cfg, rng=random.Random(1)
    )
    _, out = client.edit(LIST, lambda s, r: s.add(r, "milk"), 0.0)
    (first,) = [e.message for e in out if isinstance(e, Send)]
    assert isinstance(first, SyncRequest)
    behind = ErrorReply(first.request_id, "behind", "not seen yet")
    assert [] == client.receive_message("b1", behind, 0.1)
    (retry,) = [e.message for e in client.on_timer(0.2) if isinstance(e, Send)]
    assert isinstance(retry, SyncRequest)
    assert (first.request_id, first.delta, 1) == (retry.request_id, retry.delta, retry.attempt)
    out = client.receive_message("b2", ErrorReply(first.request_id, "behind", ""), 0.3)
    assert [SyncFailed(LIST, first.request_id, "behind")] == out
    assert 1 == client.queued(LIST)
    (again,) = [e.message for e in client.sync(LIST, 0.4) if isinstance(e, Send)]
    assert isinstance(again, SyncRequest) and again.delta == first.delta
    out = client.receive_message("b1", SyncReply(again.request_id, LIST, None), 0.5)
    assert [Acked(LIST, 1)] == out
    assert 0 == client.queued(LIST)


def test_the_server_name_rule_is_the_lists_own() -> None:
    """Names an honest edit may write pass (emoji with a zero-width joiner); an item already
    on the list with a hostile name may still be edited; a new one is refused."""
    server = shared()
    bob = server.copy()
    assert None is check_push(server, bob.add_item("b", "👩\u200d🍳 spice"), "b")
    hostile = forged([["b", 2, item("bad\x1b[2J")]])
    assert "invalid" == code(check_push(server, hostile, "b"))
    server.join(hostile)
    plus = ["items", ["bad\x1b[2J", ["add", 1]]]
    assert None is check_push(server, forged([["b", 3, plus]]), "b")
