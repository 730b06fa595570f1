"""The broker core: liveness by heartbeats, purging on deadlines, routing by list id."""

from __future__ import annotations

import logging
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference_cluster.cores.broker import BrokerConfig, BrokerCore
from reference_cluster.cores.limits import Rate
from reference_cluster.protocol.effects import Send
from reference_cluster.protocol.messages import (
    Announce,
    ChangePassword,
    DeleteAccount,
    Deliver,
    ErrorReply,
    Forward,
    Goodbye,
    Heartbeat,
    LogIn,
    LogOut,
    Propagate,
    Relay,
    SignUp,
    SyncReply,
    SyncRequest,
    decode,
    encode,
)
from reference_cluster.protocol.placement import Membership, preference

LIST = str(uuid.UUID(int=42, version=4))
SERVERS = ("s1", "s2", "s3")


def request(attempt: int = 0, list_id: str = LIST) -> SyncRequest:
    return SyncRequest("n.1", list_id, "c1", attempt, None, None)


def broker_with(*servers: str, at: float = 0.0) -> BrokerCore:
    """A broker that heard an announce from each server (at address ``peer-<id>``)."""
    b = BrokerCore("b1", config=BrokerConfig(liveness=3.0))
    for s in servers:
        assert [] == b.receive(f"peer-{s}", encode(Announce(s, 0)), at)
    return b


def test_announced_servers_are_live_until_their_window_ends() -> None:
    """A server is live for ``liveness`` seconds after it was last heard from."""
    b = broker_with(*SERVERS)
    assert (SERVERS, ()) == (b.live_servers(2.9), b.live_servers(3.0))


def test_a_heartbeat_extends_the_window() -> None:
    """A heartbeat at t=2 keeps the server live until t=5."""
    b = broker_with("s1")
    b.receive("peer-s1", encode(Heartbeat("s1")), 2.0)
    assert (("s1",), ()) == (b.live_servers(4.9), b.live_servers(5.0))


def test_a_heartbeat_from_an_unknown_server_registers_it() -> None:
    """After a broker restart, servers come back with their next heartbeat (Rule 6)."""
    b = BrokerCore("b1")
    b.receive("peer-s2", encode(Heartbeat("s2")), 1.0)
    assert ("s2",) == b.live_servers(1.0)


def test_any_message_from_a_server_counts_as_a_sign_of_life() -> None:
    """A reply (Deliver) from a server extends its window like a heartbeat."""
    b = broker_with("s1")
    reply = Deliver("client-7", SyncReply("n.1", LIST, None))
    b.receive("peer-s1", encode(reply), 2.5)
    assert ("s1",) == b.live_servers(5.0)


def test_the_deadline_is_the_earliest_window_end_and_the_timer_purges() -> None:
    """next_deadline() names the first expiry; on_timer then purges exactly that server."""
    b = broker_with("s1", "s2")
    b.receive("peer-s2", encode(Heartbeat("s2")), 1.0)
    deadline = b.next_deadline()
    b.on_timer(3.0)
    assert (3.0, ("s2",), 4.0) == (deadline, b.live_servers(0.0), b.next_deadline())


def test_an_empty_broker_has_no_deadline() -> None:
    """With no server known there is nothing to wait for."""
    assert None is BrokerCore("b1").next_deadline()


def test_a_first_attempt_goes_to_the_preferred_live_holder() -> None:
    """Attempt 0 goes to the first holder in placement order."""
    b = broker_with(*SERVERS)
    first = preference(LIST, SERVERS)[0]
    assert [Send(f"peer-{first}", Forward("c-addr", request()))] == b.receive(
        "c-addr", encode(request()), 1.0
    )


@pytest.mark.parametrize("attempt", [0, 1, 2, 3, 4])
def test_attempt_k_goes_to_the_kth_live_holder(attempt: int) -> None:
    """Retries walk the holders, so a dead but unpurged server is skipped (Rule 4)."""
    b = broker_with(*SERVERS)
    order = preference(LIST, SERVERS)
    (out,) = b.receive("c-addr", encode(request(attempt)), 1.0)
    assert f"peer-{order[attempt % 3]}" == out.to  # type: ignore[union-attr]


def test_an_expired_server_gets_no_request_even_before_the_timer_runs() -> None:
    """Routing ignores a server whose window passed, even if on_timer was late."""
    b = broker_with("s1")
    b.receive("peer-s2", encode(Heartbeat("s2")), 2.0)
    (out,) = b.receive("c-addr", encode(request()), 4.0)
    assert "peer-s2" == out.to  # type: ignore[union-attr]


def test_no_live_server_means_an_unavailable_error_at_once() -> None:
    """Without a live holder the client hears ``unavailable`` with its request id."""
    b = broker_with("s1")
    out = b.receive("c-addr", encode(request()), 10.0)
    reply = ErrorReply("n.1", "unavailable", "no live server holds the list")
    assert ([Send("c-addr", reply)], 1) == (out, b.refused)


FIVE = Membership([f"s{i}" for i in range(1, 6)])


def placed_broker(*live: str) -> BrokerCore:
    """A broker that places lists on 3 of the 5 members and heard from ``live``."""
    b = BrokerCore("b1", config=BrokerConfig(liveness=3.0), membership=FIVE, replicas=3)
    for s in live:
        b.receive(f"peer-{s}", encode(Announce(s, 0)), 0.0)
    return b


@pytest.mark.parametrize("attempt", [0, 1, 2, 3, 4, 5])
def test_with_a_membership_attempts_walk_only_the_holders(attempt: int) -> None:
    """With 3 of 5 servers holding a list, attempt k goes to the (k mod 3)-th holder,
    never to a live server that does not hold the list (Rule 4)."""
    b = placed_broker(*sorted(FIVE.servers))
    (out,) = b.receive("c-addr", encode(request(attempt)), 1.0)
    assert f"peer-{FIVE.holders(LIST, 3)[attempt % 3]}" == out.to  # type: ignore[union-attr]


def test_a_dead_holder_is_skipped_for_the_next_live_one() -> None:
    """Holders that are not live are left out; the first live one gets attempt 0."""
    first, second, third = FIVE.holders(LIST, 3)
    b = placed_broker(*sorted(FIVE.servers - {first}))
    targets = [b.receive("c-addr", encode(request(k)), 1.0)[0].to for k in range(3)]  # type: ignore[attr-defined]
    assert [f"peer-{second}", f"peer-{third}", f"peer-{second}"] == targets


def test_no_live_holder_is_unavailable_even_with_other_servers_live() -> None:
    """When every holder of a list is down, the client hears the retryable
    ``unavailable`` at once, though non-holders are live: no other
    server takes the list's edits (they wait in the client's store)."""
    holders = FIVE.holders(LIST, 3)
    b = placed_broker(*sorted(FIVE.servers - set(holders)))
    ((to, reply),) = [(e.to, e.message) for e in b.receive("c-addr", encode(request()), 1.0)]  # type: ignore[attr-defined]
    assert ("c-addr", "unavailable", True, 1) == (to, reply.code, reply.retryable, b.refused)


def test_account_requests_go_to_any_live_server_with_a_membership() -> None:
    """Every server holds the accounts directory, so a login goes to the most preferred
    live server, holder of no list in particular."""
    live = sorted(FIVE.servers)[3:]
    b = placed_broker(*live)
    (out,) = b.receive("c-addr", encode(LogIn("l.1", "alice", "pw")), 1.0)
    first = preference("user\x00alice", live)[0]
    assert f"peer-{first}" == out.to  # type: ignore[union-attr]


def test_a_server_reply_goes_to_the_client_it_names() -> None:
    """Deliver(client, reply) becomes the reply, sent to that client address."""
    b = broker_with("s1")
    reply = SyncReply("n.1", LIST, None)
    assert [Send("c-addr", reply)] == b.receive("peer-s1", encode(Deliver("c-addr", reply)), 1.0)


def test_goodbye_purges_at_once() -> None:
    """An orderly shutdown removes the server immediately."""
    b = broker_with("s1", "s2")
    b.receive("peer-s1", encode(Goodbye("s1")), 1.0)
    assert ("s2",) == b.live_servers(1.0)


def test_goodbye_from_another_address_is_ignored() -> None:
    """Only the address a server speaks from can say goodbye for it."""
    b = broker_with("s1")
    b.receive("someone-else", encode(Goodbye("s1")), 1.0)
    assert ("s1",) == b.live_servers(1.0)


def test_goodbye_from_an_unknown_server_changes_nothing() -> None:
    """A goodbye for a server the broker does not hold, or for another server than the
    one at the sender's address, gets no answer and purges nothing."""
    b = broker_with("s1", "s2")
    before = (b.live_servers(1.0), b.next_deadline())
    outs = [
        b.receive("peer-s9", encode(Goodbye("s9")), 1.0),
        b.receive("peer-s1", encode(Goodbye("s9")), 1.0),
        b.receive("peer-s1", encode(Goodbye("s2")), 1.0),
    ]
    assert ([[], [], []], before) == (outs, (b.live_servers(1.0), b.next_deadline()))


def test_a_frame_with_a_long_bad_key_still_gets_an_error_reply() -> None:
    """A frame whose unexpected key is 5,000 characters long is answered ``malformed``."""
    b = broker_with("s1")
    data = encode(request()).replace(b'"kind":', b'"' + b"k" * 5000 + b'":1,"kind":')
    (out,) = b.receive("c-addr", data, 1.0)
    assert ("c-addr", "malformed") == (out.to, out.message.code)  # type: ignore[union-attr]


def test_an_unreachable_address_purges_its_server() -> None:
    """The shell reports a failed send (ROUTER_MANDATORY); the server is purged."""
    b = broker_with("s1", "s2")
    b.peer_unreachable("peer-s1", 1.0)
    b.peer_unreachable("peer-unknown", 1.0)
    assert ("s2",) == b.live_servers(1.0)


def test_a_restarted_server_at_a_new_address_replaces_the_old_one() -> None:
    """Requests follow the server to the address it last spoke from (Rule 3)."""
    b = broker_with("s1")
    b.receive("peer-s1-new", encode(Announce("s1", 1)), 1.0)
    (out,) = b.receive("c-addr", encode(request()), 1.5)
    b.peer_unreachable("peer-s1", 1.6)
    assert ("peer-s1-new", ("s1",)) == (out.to, b.live_servers(1.6))  # type: ignore[union-attr]


def test_a_malformed_frame_gets_an_error_reply_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Garbage never raises: the sender gets ``malformed`` and the broker logs it."""
    b = broker_with("s1")
    with caplog.at_level(logging.WARNING, logger="reference_cluster.cores.broker"):
        (out,) = b.receive("c-addr", b'{"v":1,"kind":"sync"', 1.0)
    assert isinstance(out, Send) and isinstance(out.message, ErrorReply)
    assert ("c-addr", "malformed", True) == (
        out.to,
        out.message.code,
        "malformed message from c-addr" in caplog.text,
    )


def test_an_error_reply_is_never_answered() -> None:
    """Errors are logged, not answered, so two peers cannot trade errors for ever."""
    b = broker_with("s1")
    assert [] == b.receive("peer-s1", encode(ErrorReply(None, "malformed", "x")), 1.0)


def test_a_message_for_another_role_gets_unexpected_kind() -> None:
    """A broker takes no propagation: the sender hears ``unexpected_kind``."""
    b = broker_with("s1")
    msg = Propagate("s1", LIST, {"type": "AWORSet", "v": 1, "ctx": {}, "entries": []})
    (out,) = b.receive("x", encode(msg), 1.0)
    assert "unexpected_kind" == out.message.code  # type: ignore[union-attr]


@given(
    st.lists(
        st.tuples(st.sampled_from(SERVERS), st.floats(0.0, 2.0, allow_nan=False)),
        max_size=30,
    )
)
def test_liveness_matches_a_model_of_last_heard_times(beats: list[tuple[str, float]]) -> None:
    """After any sequence of heartbeats and timer calls, the live servers are exactly those
    heard from within the last ``liveness`` seconds."""
    b = BrokerCore("b1", config=BrokerConfig(liveness=3.0))
    last: dict[str, float] = {}
    now = 0.0
    for server, gap in beats:
        now += gap
        b.on_timer(now)
        b.receive(f"peer-{server}", encode(Heartbeat(server)), now)
        last[server] = now
    expected = tuple(sorted(s for s, t in last.items() if t + 3.0 > now + 1.0))
    b.on_timer(now + 1.0)
    assert expected == b.live_servers(now + 1.0)


def test_forwarded_requests_keep_every_field() -> None:
    """The broker passes the request through unchanged, token included."""
    b = broker_with("s1")
    req = SyncRequest("n.9", LIST, "c1", 0, {"vv": {"c1": 2}, "cloud": []}, None, "tok")
    (out,) = b.receive("c-addr", encode(req), 1.0)
    assert Forward("c-addr", req) == decode(encode(out.message))  # type: ignore[union-attr]


# -- accounts: new kinds are routed, password attempts are limited per source ------------


def test_logout_password_change_and_deletion_are_relayed_with_the_source() -> None:
    """The account requests reach a live server as a Relay carrying the client's source
    address."""
    b = broker_with(*SERVERS)
    requests = [
        LogOut("o.1", "t" * 43),
        ChangePassword("p.1", "t" * 43, "old password", "new password"),
        DeleteAccount("d.1", "t" * 43, "the password"),
        LogIn("l.1", "alice", "the password", replica="dev1"),
    ]
    relayed = []
    for msg in requests:
        (send,) = b.receive("f:01", encode(msg), 1.0, "192.0.2.7")
        assert isinstance(send, Send)
        relayed.append(send.message)
    assert [Relay("f:01", m, "192.0.2.7") for m in requests] == relayed


def test_password_attempts_are_limited_per_source_with_the_wait() -> None:
    """Past the per-source limit a login gets rate_limited at once (with "retry after"),
    while another source still gets through; tokens come back with time."""
    b = BrokerCore("b1", config=BrokerConfig(logins=Rate(3, 60.0)))
    assert [] == b.receive("peer-s1", encode(Announce("s1", 0)), 0.0)

    def codes(source: str, at: float, n: int) -> list[str]:
        out = []
        for i in range(n):
            (send,) = b.receive("f:01", encode(LogIn(f"r{i}", "alice", "guess")), at, source)
            msg = send.message  # type: ignore[union-attr]
            out.append(msg.code if isinstance(msg, ErrorReply) else msg.kind)
        return out

    assert ["relay"] * 3 + ["rate_limited"] == codes("10.0.0.1", 1.0, 4)
    assert ["relay"] == codes("10.0.0.2", 1.0, 1)
    assert [] == b.receive("peer-s1", encode(Heartbeat("s1")), 20.0)
    assert ["relay"] == codes("10.0.0.1", 21.0, 1)
    (send,) = b.receive("f:01", encode(LogIn("x", "alice", "guess")), 21.0, "10.0.0.1")
    assert isinstance(send, Send) and "retry after 20 s" in getattr(send.message, "detail", "")


def test_sign_ups_have_their_own_tighter_limit_per_source() -> None:
    """Sign-ups past their per-source limit are refused; logins from there still pass."""
    b = BrokerCore("b1", config=BrokerConfig(signups=Rate(2, 3600.0)))
    assert [] == b.receive("peer-s1", encode(Announce("s1", 0)), 0.0)
    kinds = []
    for msg in [SignUp(f"s{i}", f"user{i}", "a password") for i in range(3)]:
        (send,) = b.receive("f:01", encode(msg), 1.0, "10.0.0.1")
        kinds.append(getattr(send.message, "code", send.message.kind))  # type: ignore[union-attr]
    (send,) = b.receive("f:01", encode(LogIn("l", "user0", "a password")), 1.0, "10.0.0.1")
    assert ["relay", "relay", "rate_limited", "relay"] == [*kinds, send.message.kind]  # type: ignore[union-attr]
