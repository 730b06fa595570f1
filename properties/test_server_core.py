"""The server core: durable-before-acknowledged, propagation, anti-entropy, timers."""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet, DotContext
from reference_cluster.cores.server import ServerConfig, ServerCore
from reference_cluster.protocol.effects import Effect, Persist, Send
from reference_cluster.protocol.messages import (
    AeContexts,
    AeDeltas,
    AeLeaves,
    AeTree,
    Announce,
    Deliver,
    ErrorReply,
    Forward,
    Goodbye,
    Heartbeat,
    Hint,
    Message,
    Propagate,
    Replicate,
    SyncReply,
    SyncRequest,
    encode,
)
from reference_cluster.protocol.placement import Membership
from reference_cluster.shopping_list import ShoppingList

LIST = str(uuid.UUID(int=1, version=4))
OTHER = str(uuid.UUID(int=2, version=4))
CONFIG = ServerConfig(heartbeat_interval=1.0, anti_entropy_interval=2.0, first_round_within=0.5)


def server(name: str = "s1", lists: dict[str, AWORSet] | None = None) -> ServerCore[AWORSet]:
    peers = ("s1", "s2", "s3")
    return ServerCore(
        name,
        AWORSet,
        peers=peers,
        brokers=("b1", "b2"),
        lists=lists,
        config=CONFIG,
        rng=random.Random(0),
        write_quorum=1,  # one copy acknowledges: W >= 2 is test_write_quorum's
    )


def push(delta: AWORSet | None, ctx: DotContext | None = None, rid: str = "n.1") -> bytes:
    req = SyncRequest(
        rid,
        LIST,
        "c1",
        0,
        None if ctx is None else ctx.to_dict(),
        None if delta is None else delta.to_dict(),
    )
    return encode(Forward("client-1", req))


def sends(effects: list[Effect]) -> list[tuple[str, Message]]:
    return [(e.to, e.message) for e in effects if isinstance(e, Send)]


def writes(effects: list[Effect]) -> list[Persist]:
    return [e for e in effects if isinstance(e, Persist)]


def test_a_push_is_persisted_and_propagated_but_not_acknowledged_yet() -> None:
    """Rule 1: the core asks for a write and tells the peers; the client waits."""
    s = server()
    delta = AWORSet().add("c1", "milk")
    out = s.receive("b1", push(delta), 1.0)
    (write,) = writes(out)
    propagate = Propagate("s1", LIST, delta.to_dict())
    assert (LIST, delta) == (write.list_id, write.delta)
    assert [("s2", propagate), ("s3", propagate)] == sorted(sends(out), key=lambda x: x[0])
    assert 1 == s.pending_acks


def test_the_acknowledgement_comes_when_the_write_is_durable() -> None:
    """persisted(token) sends the reply, through the broker the request came from."""
    s = server()
    client = AWORSet()
    delta = client.add("c1", "milk")
    (write,) = writes(s.receive("b2", push(delta, client.context), 1.0))
    out = s.persisted(write.token, 1.1)
    ((to, msg),) = sends(out)
    assert isinstance(msg, Deliver) and isinstance(msg.reply, SyncReply)
    assert ("b2", "client-1", "n.1", 0) == (to, msg.client, msg.reply.request_id, s.pending_acks)


def test_a_retry_of_an_applied_delta_waits_for_a_write_of_its_own() -> None:
    """A retry is persisted again (the first write may still be in flight) and not
    propagated again."""
    s = server()
    delta = AWORSet().add("c1", "milk")
    s.receive("b1", push(delta), 1.0)
    out = s.receive("b2", push(delta, rid="n.1"), 1.2)
    assert (1, [], 2) == (len(writes(out)), sends(out), s.pending_acks)


def test_an_unknown_token_acknowledges_nothing() -> None:
    """A write that belongs to no waiting request (a propagation) sends nothing."""
    assert [] == server().persisted(99, 1.0)


def test_a_failed_write_tells_the_client_to_retry() -> None:
    """persist_failed answers ``persist_failed``, a retryable error."""
    s = server()
    (write,) = writes(s.receive("b1", push(AWORSet().add("c1", "x")), 1.0))
    ((_, msg),) = sends(s.persist_failed(write.token, "disk full", 1.1))
    assert isinstance(msg, Deliver) and isinstance(msg.reply, ErrorReply)
    assert ("persist_failed", True) == (msg.reply.code, msg.reply.retryable)


@given(
    st.lists(st.sampled_from("abcde"), max_size=6), st.lists(st.sampled_from("abcde"), max_size=6)
)
def test_a_pull_returns_exactly_what_the_client_lacks(mine: list[str], theirs: list[str]) -> None:
    """client | reply == client | server, and a pull needs no write."""
    held = AWORSet()
    for e in theirs:
        held.add("c2", e)
    client = AWORSet()
    for e in mine:
        client.add("c1", e)
    s = server(lists={LIST: held})
    out = s.receive("b1", push(None, client.context), 1.0)
    ((_, msg),) = sends(out)
    assert isinstance(msg, Deliver) and isinstance(msg.reply, SyncReply)
    assert msg.reply.delta is not None
    assert ([], client | held) == (writes(out), client | AWORSet.from_dict(msg.reply.delta))


def test_a_pull_of_an_unknown_list_returns_no_state() -> None:
    """A server that never saw the list answers with ``delta=None``."""
    ((_, msg),) = sends(server().receive("b1", push(None, DotContext()), 1.0))
    assert Deliver("client-1", SyncReply("n.1", LIST, None)) == msg


def test_a_propagation_is_persisted_once() -> None:
    """A peer's delta is written; the same delta again changes nothing and is not."""
    s = server()
    msg = encode(Propagate("s2", LIST, AWORSet().add("c1", "milk").to_dict()))
    first = s.receive("s2", msg, 1.0)
    again = s.receive("s3", msg, 1.1)
    assert (1, [], []) == (len(writes(first)), sends(first), again)


def test_a_bad_state_in_a_request_gets_a_bad_state_error() -> None:
    """A delta that does not decode as the list type is refused, via the broker."""
    s = server()
    bad = SyncRequest("n.1", LIST, "c1", 0, None, {"type": "GCounter", "v": 1, "counts": {}})
    ((to, msg),) = sends(s.receive("b1", encode(Forward("client-1", bad)), 1.0))
    assert isinstance(msg, Deliver) and isinstance(msg.reply, ErrorReply)
    assert ("b1", "bad_state", 0) == (to, msg.reply.code, s.pending_acks)


@pytest.mark.parametrize("where", ["state", "context"])
def test_a_bad_state_with_a_huge_key_still_gets_a_short_error(where: str) -> None:
    """A delta or context with thousands of long unexpected keys is answered with a
    ``bad_state`` error whose detail stays short (it used to be too long to send)."""
    s = server()
    junk = {f"{k:05d}" + "k" * 5_000: 0 for k in range(1_000)}
    state: dict[str, Any] = {"type": "AWORSet", "v": 1, "ctx": {}, "entries": []}
    if where == "state":
        state |= junk
    else:
        state["ctx"] = junk
    bad = SyncRequest("n.1", LIST, "c1", 0, None, state)
    ((to, msg),) = sends(s.receive("b1", encode(Forward("client-1", bad)), 1.0))
    assert isinstance(msg, Deliver) and isinstance(msg.reply, ErrorReply)
    assert ("b1", "bad_state", True) == (to, msg.reply.code, len(msg.reply.detail) < 400)


def test_error_reply_about_cuts_a_long_text() -> None:
    """An exception text longer than the detail limit is cut, with a mark, and builds."""
    reply = ErrorReply.about("n.1", "malformed", ValueError("x" * 10_000 + "\n"))
    assert (2000, True) == (len(reply.detail), reply.detail.endswith("..."))
    assert "a\tb" != ErrorReply.about(None, "malformed", "a\tb").detail


def test_a_bad_state_from_a_peer_gets_an_error_and_changes_nothing() -> None:
    """A propagation that does not decode is answered with ``bad_state``."""
    s = server()
    msg = Propagate("s2", LIST, {"type": "AWORSet", "v": 1, "ctx": {}, "entries": [[1]]})
    ((to, reply),) = sends(s.receive("s2", encode(msg), 1.0))
    assert ("s2", "bad_state", ()) == (to, reply.code, s.list_ids())  # type: ignore[attr-defined]


def test_a_malformed_frame_gets_an_error_and_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """Garbage never raises out of the core."""
    with caplog.at_level(logging.WARNING, logger="reference_cluster.cores.server"):
        ((to, msg),) = sends(server().receive("b1", b"\x00\x01", 1.0))
    assert ("b1", "malformed", True) == (
        to,
        msg.code,  # type: ignore[attr-defined]
        "malformed message from b1" in caplog.text,
    )


def test_errors_are_logged_not_answered() -> None:
    """An ErrorReply from a peer produces no effects."""
    assert [] == server().receive("s2", encode(ErrorReply(None, "bad_state", "x")), 1.0)


def test_a_request_sent_straight_to_a_server_gets_unexpected_kind() -> None:
    """Clients reach servers through a broker; a bare request is refused."""
    req = SyncRequest("n.1", LIST, "c1", 0, None, None)
    ((_, msg),) = sends(server().receive("c1", encode(req), 1.0))
    assert "unexpected_kind" == msg.code  # type: ignore[attr-defined]


def test_a_list_placed_elsewhere_is_refused_with_not_holder() -> None:
    """Placement decides (Rule 6): a server that does not hold the list says so, with a
    retryable error, and stores nothing."""
    members = Membership([f"s{i}" for i in range(1, 6)])
    outsider = members.preference(LIST)[-1]
    s = ServerCore(
        outsider,
        AWORSet,
        peers=(),
        brokers=("b1",),
        config=CONFIG,
        rng=random.Random(0),
        replicas=3,
        membership=members,
    )
    ((_, msg),) = sends(s.receive("b1", push(AWORSet().add("c1", "x")), 1.0))
    assert ("not_holder", True, (), None) == (
        msg.reply.code,  # type: ignore[attr-defined]
        msg.reply.retryable,  # type: ignore[attr-defined]
        s.list_ids(),
        s.state(LIST),
    )


def test_start_announces_and_arms_the_timers() -> None:
    """Start announces to both brokers; the first round comes within first_round_within."""
    s = server()
    out = s.start(10.0)
    deadline = s.next_deadline()
    assert [("b1", Announce("s1", 0)), ("b2", Announce("s1", 0))] == sends(out)
    assert deadline is not None and 10.0 <= deadline <= 10.5


def test_timers_send_heartbeats_and_start_rounds_on_their_intervals() -> None:
    """Over 10 seconds: 10 heartbeat ticks to each broker, 5 or 6 anti-entropy rounds."""
    s = server(lists={LIST: AWORSet()})
    s.start(0.0)
    beats = rounds = 0
    for _ in range(100):
        deadline = s.next_deadline()
        assert deadline is not None
        if deadline > 10.0:
            break
        for _to, msg in sends(s.on_timer(deadline)):
            beats += isinstance(msg, Heartbeat)
            rounds += isinstance(msg, AeTree)
    assert (20, True) == (beats, rounds // 2 in (5, 6))


def test_stop_says_goodbye_and_disarms() -> None:
    """An orderly stop tells both brokers and leaves no deadline."""
    s = server()
    s.start(0.0)
    out = s.stop(1.0)
    assert ([("b1", Goodbye("s1")), ("b2", Goodbye("s1"))], None) == (sends(out), s.next_deadline())


def _run_exchange(a: ServerCore[Any], b: ServerCore[Any]) -> int:
    """Start one anti-entropy round at ``a`` towards ``b`` and carry every message and
    write until quiet; return the number of messages."""
    by_name = {a.server_id: a, b.server_id: b}
    queue: list[tuple[str, str, bytes]] = []

    def carry(src: str, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, Persist):
                carry(src, by_name[src].persisted(e.token, 0.0))
            elif isinstance(e, Send) and e.to in by_name:
                queue.append((src, e.to, encode(e.message)))

    carry(a.server_id, a._anti_entropy_round(0.0))
    count = 0
    for _ in range(20):
        if not queue:
            break
        src, dst, data = queue.pop(0)
        count += 1
        carry(dst, by_name[dst].receive(src, data, 0.0))
    return count


def _states(draw: Callable[[st.SearchStrategy[Any]], Any], replica: str) -> dict[str, AWORSet]:
    out = {}
    for list_id in draw(st.lists(st.sampled_from([LIST, OTHER]), unique=True)):
        s = AWORSet()
        for e in draw(st.lists(st.sampled_from("abcd"), max_size=4)):
            s.add(replica, e)
        for e in draw(st.lists(st.sampled_from("abcd"), max_size=2)):
            s.remove(replica, e)
        out[list_id] = s
    return out


@given(st.data())
def test_one_exchange_makes_two_servers_equal(data: st.DataObject) -> None:
    """After one anti-entropy exchange both servers hold the join of what each held,
    list by list, in at most five messages (root, leaves, contexts, deltas, deltas)."""
    common = _states(data.draw, "c1")
    left = {k: v.copy() for k, v in common.items()}
    right = {k: v.copy() for k, v in common.items()}
    for k, v in _states(data.draw, "c2").items():
        left[k] = left[k] | v if k in left else v
    for k, v in _states(data.draw, "c3").items():
        right[k] = right[k] | v if k in right else v
    a, b = server("s1", left), server("s2", right)
    count = _run_exchange(a, b)
    expected = {k: left.get(k, AWORSet()) | right.get(k, AWORSet()) for k in {*left, *right}}
    got_a = {k: a.state(k) for k in a.list_ids()}
    got_b = {k: b.state(k) for k in b.list_ids()}
    assert (expected, expected, True) == (got_a, got_b, count <= 5)


def test_servers_in_sync_exchange_one_message() -> None:
    """Equal digests: the peer sends nothing back."""
    s = AWORSet()
    s.add("c1", "milk")
    assert 1 == _run_exchange(server("s1", {LIST: s}), server("s2", {LIST: s.copy()}))


def test_anti_entropy_ships_exactly_what_the_peer_lacks() -> None:
    """Step 3 carries delta_for(peer context), not the whole state."""
    big = AWORSet()
    for i in range(50):
        big.add("c1", f"item-{i}")
    peer = big.copy()
    big.add("c1", "new")
    a, b = server("s1", {LIST: big}), server("s2", {LIST: peer})
    (contexts_msg,) = [
        m
        for _, m in sends(
            b.receive("s1", encode(AeLeaves("s1", 1, ("",), {LIST: big.digest()})), 0.0)
        )
    ]
    assert isinstance(contexts_msg, AeContexts)
    ((_, deltas_msg),) = sends(a.receive("s2", encode(contexts_msg), 0.0))
    assert isinstance(deltas_msg, AeDeltas)
    shipped = AWORSet.from_dict(deltas_msg.deltas[LIST])
    assert ({"new"}, big.delta_for(peer.context)) == (set(shipped.value), shipped)


# -- garbage in states never escapes as an exception ------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**70) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


def _garbled(data: st.DataObject, good: dict[str, Any]) -> dict[str, Any]:
    """``good`` with one value somewhere below the header replaced by random JSON."""
    out: dict[str, Any] = json.loads(json.dumps(good))
    paths: list[list[Any]] = []

    def walk(value: Any, path: list[Any]) -> None:
        paths.append(path)
        items = (
            value.items()
            if isinstance(value, dict)
            else enumerate(value)
            if isinstance(value, list)
            else ()
        )
        for k, v in items:
            walk(v, [*path, k])

    walk(out, [])
    path = data.draw(st.sampled_from([p for p in paths[1:] if p[0] not in ("type", "v")]))
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(_json)
    return out


@given(st.data())
def test_garbled_states_and_contexts_never_raise_out_of_the_server(data: st.DataObject) -> None:
    """Every message that carries a state or a context, with garbage deep inside, gets an
    answer or nothing, never an exception, and leaves the held list valid."""
    held = ShoppingList()
    held.add_item("c1", "milk", 2)
    held.remove_item("c1", "milk")
    held.add_item("c2", "eggs", 1)
    state = _garbled(data, held.to_dict())
    ctx = data.draw(st.fixed_dictionaries({}, optional={"vv": _json, "cloud": _json}))
    s = ServerCore(
        "s1", ShoppingList, peers=["s2"], brokers=["b1"], lists={LIST: held}, rng=random.Random(0)
    )
    for msg in (
        Propagate("s2", LIST, state),
        Replicate("s2", LIST, state, 7),
        Hint("s2", LIST, "s2", state, 8),
        Forward("c", SyncRequest("r", LIST, "c1", 0, ctx, state)),
        AeDeltas("s2", 1, {LIST: state}, {LIST: ctx}),
        AeContexts("s2", 1, {LIST: ctx}),
    ):
        assert isinstance(s.receive("s2", encode(msg), 1.0), list)
    after = s.state(LIST)
    assert after is not None and after == ShoppingList.from_dict(after.to_dict())
