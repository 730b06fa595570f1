"""The client core: local-first edits, the request state machine, retries, restarts."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdts import AWORSet, Dot
from reference_cluster.cores.client import (
    TRANSITIONS,
    ClientConfig,
    ClientCore,
    Event,
    Phase,
    SavedList,
)
from reference_cluster.protocol.effects import Acked, Effect, SaveEdit, SaveMerge, Send, SyncFailed
from reference_cluster.protocol.messages import (
    ErrorReply,
    Heartbeat,
    SyncReply,
    SyncRequest,
    encode,
)
from reference_cluster.shopping_list import ShoppingList

LIST = str(uuid.UUID(int=1, version=4))
OTHER = str(uuid.UUID(int=2, version=4))
CONFIG = ClientConfig(
    request_timeout=0.5, max_attempts=3, backoff_base=0.1, backoff_cap=1.0, sync_interval=10.0
)


def client(
    saved: dict[str, SavedList[Any]] | None = None, doc: type[Any] = AWORSet
) -> ClientCore[Any]:
    return ClientCore(
        "c1", doc, brokers=("b1", "b2"), saved=saved, config=CONFIG, rng=random.Random(3)
    )


def add(element: str) -> Callable[[AWORSet, str], AWORSet]:
    return lambda s, r: s.add(r, element)


def requests(effects: list[Effect]) -> list[tuple[str, SyncRequest]]:
    return [
        (e.to, e.message)
        for e in effects
        if isinstance(e, Send) and isinstance(e.message, SyncRequest)
    ]


def reply(req: SyncRequest, delta: AWORSet | None = None) -> bytes:
    return encode(
        SyncReply(req.request_id, req.list_id, None if delta is None else delta.to_dict())
    )


def deadline(c: ClientCore[Any]) -> float:
    d = c.next_deadline()
    assert d is not None
    return d


def test_an_edit_is_saved_before_anything_is_sent() -> None:
    """Rule 1: the SaveEdit effect comes first; the request then pushes that delta."""
    c = client()
    delta, out = c.edit(LIST, add("milk"), 0.0)
    assert isinstance(out[0], SaveEdit)
    ((_, req),) = requests(out)
    assert req.delta is not None and req.context is not None
    assert (
        (LIST, 1, delta),
        Phase.WAITING,
        delta,
        c.state(LIST).context.to_dict(),  # type: ignore[union-attr]
    ) == (
        (out[0].list_id, out[0].seq, out[0].delta),
        c.phase,
        AWORSet.from_dict(req.delta),
        req.context,
    )


def test_edits_made_while_waiting_go_out_together_after_the_reply() -> None:
    """One request at a time: the next one pushes the join of the edits queued meanwhile."""
    c = client()
    _, out = c.edit(LIST, add("a"), 0.0)
    ((_, first),) = requests(out)
    d2, _ = c.edit(LIST, add("b"), 0.1)
    d3, _ = c.edit(LIST, add("c"), 0.2)
    out = c.receive("b1", reply(first), 0.3)
    ((_, second),) = requests(out)
    acked = [e for e in out if isinstance(e, Acked)]
    assert second.delta is not None
    assert ([Acked(LIST, 1)], d2 | d3, 2) == (
        acked,
        AWORSet.from_dict(second.delta),
        c.queued(LIST),
    )


def test_a_timed_out_request_is_retried_with_the_same_delta_through_the_other_broker() -> None:
    """Rule 3: same request id, same delta, next attempt number, other broker."""
    c = client()
    _, out = c.edit(LIST, add("milk"), 0.0)
    ((to1, first),) = requests(out)
    assert [] == c.on_timer(deadline(c))
    ((to2, second),) = requests(c.on_timer(deadline(c)))
    assert (first.request_id, first.delta, 1, True) == (
        second.request_id,
        second.delta,
        second.attempt,
        to1 != to2,
    )


def test_a_request_is_given_up_after_max_attempts_and_its_deltas_stay_queued() -> None:
    """After three timeouts: SyncFailed, idle, and the delta is still queued."""
    c = client()
    c.edit(LIST, add("milk"), 0.0)
    failed: list[SyncFailed] = []
    for _ in range(10):
        if c.phase is Phase.IDLE:
            break
        failed += [e for e in c.on_timer(deadline(c)) if isinstance(e, SyncFailed)]
    assert ([LIST], Phase.IDLE, 1) == ([f.list_id for f in failed], c.phase, c.queued(LIST))


def test_the_next_periodic_sync_pushes_what_a_given_up_request_left() -> None:
    """Nothing is lost by giving up: the periodic sync sends the same delta again."""
    c = client()
    c.start(0.0)
    delta, _ = c.edit(LIST, add("milk"), 0.0)
    for _ in range(10):
        if c.phase is Phase.IDLE:
            break
        c.on_timer(deadline(c))
    assert 10.0 == deadline(c)
    ((_, req),) = requests(c.on_timer(10.0))
    assert req.delta is not None and delta == AWORSet.from_dict(req.delta)


def test_a_reply_merges_what_the_server_sent() -> None:
    """The pulled delta joins the local state and is saved."""
    c = client()
    _, out = c.edit(LIST, add("milk"), 0.0)
    ((_, req),) = requests(out)
    remote = AWORSet()
    remote.add("c2", "eggs")
    out = c.receive("b1", reply(req, remote), 0.2)
    merges = [e for e in out if isinstance(e, SaveMerge)]
    assert ({"milk", "eggs"}, 1) == (set(c.state(LIST).value), len(merges))  # type: ignore[union-attr]


def test_a_reply_to_another_request_is_merged_but_acknowledges_nothing() -> None:
    """A stale reply (another request id) still carries good state, but no ack."""
    c = client()
    c.edit(LIST, add("milk"), 0.0)
    remote = AWORSet()
    remote.add("c2", "eggs")
    stale = SyncReply("other.1", LIST, remote.to_dict())
    out = c.receive("b1", encode(stale), 0.2)
    assert ([], Phase.WAITING, True) == (
        [e for e in out if isinstance(e, Acked)],
        c.phase,
        "eggs" in c.state(LIST).value,  # type: ignore[union-attr]
    )


def test_a_reply_with_a_state_that_does_not_decode_counts_as_a_failed_attempt() -> None:
    """A bad state is never joined; the request backs off and is retried."""
    c = client()
    _, out = c.edit(LIST, add("milk"), 0.0)
    ((_, req),) = requests(out)
    bad = SyncReply(req.request_id, LIST, {"type": "AWORSet", "v": 1, "ctx": 5, "entries": []})
    c.receive("b1", encode(bad), 0.2)
    assert (Phase.BACKOFF, 1) == (c.phase, c.queued(LIST))


def test_a_malformed_frame_gets_an_error_and_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """Garbage from a broker never raises out of the client."""
    with caplog.at_level(logging.WARNING, logger="reference_cluster.cores.client"):
        out = client().receive("b1", b"{", 0.0)
    assert (["malformed"], True) == (
        [e.message.code for e in out if isinstance(e, Send)],  # type: ignore[attr-defined]
        "malformed message from b1" in caplog.text,
    )


def test_an_unexpected_kind_gets_an_error() -> None:
    """A client takes only replies."""
    (out,) = client().receive("b1", encode(Heartbeat("s1")), 0.0)
    assert "unexpected_kind" == out.message.code  # type: ignore[union-attr]


def test_an_edit_that_raises_changes_nothing() -> None:
    """A failing mutator leaves no list, no queue and no effect behind."""
    c = client()

    def boom(state: AWORSet, replica: str) -> AWORSet:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        c.edit(LIST, boom, 0.0)
    with pytest.raises(TypeError, match="must return a AWORSet delta"):
        c.edit(LIST, lambda s, r: 5, 0.0)
    assert ((), Phase.IDLE) == (c.list_ids(), c.phase)


def test_opening_a_shared_list_records_it_and_pulls_it() -> None:
    """open_list saves the empty list, then sends a pull (no delta)."""
    c = client()
    out = c.open_list(OTHER, 0.0)
    ((_, req),) = requests(out)
    assert (SaveMerge, OTHER, None) == (type(out[0]), req.list_id, req.delta)


def test_start_syncs_every_list_one_request_at_a_time() -> None:
    """Each list gets a pull in turn; the periodic timer marks them all again."""
    saved = {LIST: SavedList(AWORSet()), OTHER: SavedList(AWORSet())}
    c = client(saved)
    ((_, first),) = requests(c.start(0.0))
    ((_, second),) = requests(c.receive("b1", reply(first), 0.1))
    out = c.receive("b1", reply(second), 0.2)
    assert ([LIST, OTHER], [], 10.0) == (
        [first.list_id, second.list_id],
        requests(out),
        deadline(c),
    )


def test_a_restart_continues_sequence_numbers_and_dots() -> None:
    """A client rebuilt from its store never reuses a dot or a sequence number."""
    c = client()
    d1, _ = c.edit(LIST, add("a"), 0.0)
    state = c.state(LIST)
    assert state is not None
    again = client({LIST: SavedList(state, ((1, d1),))})
    d2, out = again.edit(LIST, add("b"), 1.0)
    edit = out[0]
    assert isinstance(edit, SaveEdit)
    assert (2, [Dot("c1", 2)], 2) == (edit.seq, sorted(d2.context.dots()), again.queued(LIST))


def test_shipping_seals_the_shopping_list_so_later_changes_take_fresh_dots() -> None:
    """Rule 4: after a request ships the deltas, a change does not fold into a shipped dot."""
    c = client(doc=ShoppingList)
    _, out = c.edit(LIST, lambda s, r: s.add_item(r, "milk", 1), 0.0)
    ((_, req),) = requests(out)
    c.edit(LIST, lambda s, r: s.change_quantity(r, "milk", 1), 0.1)
    c.receive("b1", encode(SyncReply(req.request_id, LIST, None)), 0.2)
    delta, _ = c.edit(LIST, lambda s, r: s.change_quantity(r, "milk", 1), 0.3)
    own = [d for d in delta.context.dots() if d.replica == "c1"]
    assert [Dot("c1", 3)] == own


# -- the request state machine, walked row by row -------------------------------------------


Scenario = tuple[ClientCore[Any], Callable[[], object]]


def _waiting() -> tuple[ClientCore[Any], SyncRequest]:
    c = client()
    _, out = c.edit(LIST, add("milk"), 0.0)
    ((_, req),) = requests(out)
    return c, req


def _backoff() -> tuple[ClientCore[Any], SyncRequest]:
    c, req = _waiting()
    c.on_timer(deadline(c))
    return c, req


def _send() -> Scenario:
    c = client()
    return c, lambda: c.edit(LIST, add("x"), 0.0)


def _reply() -> Scenario:
    c, req = _waiting()
    return c, lambda: c.receive("b1", reply(req), 0.1)


def _timeout() -> Scenario:
    c, _ = _waiting()
    return c, lambda: c.on_timer(deadline(c))


def _retryable_error() -> Scenario:
    c, req = _waiting()
    return c, lambda: c.receive("b1", encode(ErrorReply(req.request_id, "unavailable")), 0.1)


def _exhausted() -> Scenario:
    c, _ = _waiting()
    for _ in range(2 * (CONFIG.max_attempts - 1)):
        c.on_timer(deadline(c))
    return c, lambda: c.on_timer(deadline(c))


def _final_error() -> Scenario:
    c, req = _waiting()
    return c, lambda: c.receive("b1", encode(ErrorReply(req.request_id, "bad_state")), 0.1)


def _late_reply() -> Scenario:
    c, req = _backoff()
    return c, lambda: c.receive("b1", reply(req), 0.2)


def _retry() -> Scenario:
    c, _ = _backoff()
    return c, lambda: c.on_timer(deadline(c))


ROWS: dict[tuple[Phase, Event], Callable[[], Scenario]] = {
    (Phase.IDLE, Event.SEND): _send,
    (Phase.WAITING, Event.REPLY): _reply,
    (Phase.WAITING, Event.TIMEOUT): _timeout,
    (Phase.WAITING, Event.RETRYABLE_ERROR): _retryable_error,
    (Phase.WAITING, Event.EXHAUSTED): _exhausted,
    (Phase.WAITING, Event.FINAL_ERROR): _final_error,
    (Phase.BACKOFF, Event.REPLY): _late_reply,
    (Phase.BACKOFF, Event.RETRY): _retry,
}
"""For each row of the table: a client in the row's phase, and what causes its event."""


def test_every_row_of_the_table_has_a_scenario() -> None:
    """The walk below covers the transition table exactly."""
    assert set(TRANSITIONS) == set(ROWS)


def _row_key(row: tuple[Phase, Event]) -> tuple[str, str]:
    return (row[0].value, row[1].value)


ROW_ORDER: list[tuple[Phase, Event]] = sorted(TRANSITIONS.keys(), key=_row_key)


@pytest.mark.parametrize("row", ROW_ORDER)
def test_walk_the_transition_table(
    row: tuple[Phase, Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Driving the client into the row's phase and causing its event fires exactly that
    transition and lands in the table's next phase."""
    c, trigger = ROWS[row]()
    fired: list[tuple[Phase, Event]] = []
    real = c._fire

    def spy(event: Event) -> None:
        fired.append((c.phase, event))
        real(event)

    monkeypatch.setattr(c, "_fire", spy)
    before = c.phase
    trigger()
    assert (row[0], [row], TRANSITIONS[row]) == (before, fired, c.phase)


@pytest.mark.parametrize(
    "pair",
    [(p, e) for p in Phase for e in Event if (p, e) not in TRANSITIONS],
    ids=lambda pair: f"{pair[0].value}-{pair[1].value}",
)
def test_pairs_outside_the_table_are_refused(pair: tuple[Phase, Event]) -> None:
    """Any other (phase, event) is a bug, and the machine says so instead of drifting."""
    c = client()
    c.phase = pair[0]
    with pytest.raises(RuntimeError, match="no transition"):
        c._fire(pair[1])


def test_every_phase_is_reachable() -> None:
    """Each phase is the target of some row or the start."""
    assert set(Phase) == {Phase.IDLE} | set(TRANSITIONS.values())


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-3, 2**70) | st.text(max_size=4),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=10,
    ),
    st.sampled_from(["ShoppingList", "AWORSet"]),
)
def test_a_garbled_state_in_a_reply_never_raises_out_of_the_client(junk: Any, tag: str) -> None:
    """A reply whose state does not decode is logged and retried, never raised."""
    c = client(doc=ShoppingList)
    _, out = c.edit(LIST, lambda s, r: s.add_item(r, "milk", 1), 0.0)
    ((_, req),) = requests(out)
    bad = SyncReply(req.request_id, LIST, {"type": tag, "v": 1, "ctx": junk, "fields": junk})
    assert isinstance(c.receive("b1", encode(bad), 0.1), list)
    assert (Phase.BACKOFF, 1) == (c.phase, c.queued(LIST))
