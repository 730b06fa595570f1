"""Write quorum and hinted handoff in the server core (Rules 11 and 12).

Five cores, each list on three of them, W = 2 unless a test says otherwise. The tests
drive the cores by hand: they decide which writes complete and which frames arrive, so
that each step of a push, a hint and a handoff can be looked at.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crdts import AWORSet
from reference_cluster.cores.quorum import Quorum, write_quorum
from reference_cluster.cores.server import ServerConfig, ServerCore
from reference_cluster.protocol.effects import DropHint, Effect, Persist, Send
from reference_cluster.protocol.messages import (
    Deliver,
    ErrorReply,
    Forward,
    Hint,
    Message,
    Replicate,
    Stored,
    SyncReply,
    SyncRequest,
    encode,
)
from reference_cluster.protocol.placement import Membership
from reference_cluster.sim.durable import FakeServerStore
from reference_cluster.storage.server_store import ServerStore

MEMBERS = Membership([f"s{i}" for i in range(1, 6)])
N = 3
LIST = str(uuid.UUID(int=7, version=4))
ORDER = MEMBERS.preference(LIST)
COORD, SECOND, THIRD = ORDER[:N]
"""The list's holders, most preferred first."""
FALLBACK, LAST = ORDER[N:]
"""The servers after the holders: the first to take a hint, then the next."""
CONFIG = ServerConfig(hint_after=0.1, write_timeout=0.4)


def core(
    name: str, store: FakeServerStore[AWORSet] | None = None, w: int | None = None
) -> ServerCore[AWORSet]:
    return ServerCore(
        name,
        AWORSet,
        peers=(),
        brokers=("b1",),
        store=store if store is not None else FakeServerStore(AWORSet),
        config=CONFIG,
        rng=random.Random(0),
        replicas=N,
        membership=MEMBERS,
        write_quorum=w,
    )


def push(delta: AWORSet, rid: str = "n.1") -> bytes:
    return encode(Forward("client-1", SyncRequest(rid, LIST, "c1", 0, None, delta.to_dict())))


def sends(effects: list[Effect]) -> list[tuple[str, Message]]:
    return [(e.to, e.message) for e in effects if isinstance(e, Send)]


def writes(effects: list[Effect]) -> list[Persist]:
    return [e for e in effects if isinstance(e, Persist)]


def replies(effects: list[Effect]) -> list[SyncReply | ErrorReply]:
    out: list[SyncReply | ErrorReply] = []
    for _, msg in sends(effects):
        if isinstance(msg, Deliver):
            assert isinstance(msg.reply, SyncReply | ErrorReply)
            out.append(msg.reply)
    return out


def durable(c: ServerCore[AWORSet], effects: list[Effect], now: float = 0.0) -> list[Effect]:
    """Complete every write among ``effects`` in ``c``'s store; what ``c`` does then."""
    store = c._store
    assert isinstance(store, FakeServerStore)
    out: list[Effect] = []
    for w in writes(effects):
        store.begin(w)
        assert store.complete(w.token)
        out.extend(c.persisted(w.token, now))
    return out


def deliver(c: ServerCore[AWORSet], src: str, msg: Message, now: float = 0.0) -> list[Effect]:
    return c.receive(src, encode(msg), now)


def stored_answer(c: ServerCore[AWORSet], src: str, msg: Message) -> Stored:
    """``c`` takes ``msg`` from ``src`` and makes it durable: its confirmation."""
    ((to, answer),) = sends(durable(c, deliver(c, src, msg)))
    assert (to, type(answer)) == (src, Stored)
    assert isinstance(answer, Stored)
    return answer


def test_a_push_waits_for_a_second_copy_and_says_how_many_hold_it() -> None:
    """W = 2: the coordinator's own durable write is not enough; one other holder's
    confirmation is, and the reply says two servers hold the push."""
    c = core(COORD)
    out = c.receive("b1", push(AWORSet().add("c1", "milk")), 0.0)
    asked = sorted(to for to, msg in sends(out) if isinstance(msg, Replicate))
    alone = durable(c, out)
    ((_, replicate),) = [(t, m) for t, m in sends(out) if t == SECOND]
    confirmation = stored_answer(core(SECOND), COORD, replicate)
    (reply,) = replies(deliver(c, SECOND, confirmation))
    assert (sorted([SECOND, THIRD]), [], 2, 0) == (
        asked,
        alone,
        reply.copies,  # type: ignore[union-attr]
        c.pending_acks,
    )


def test_confirmations_count_only_from_the_servers_asked_for_that_list() -> None:
    """A confirmation from a server that was not asked, of another list, or a second
    one from the same server, does not make the quorum."""
    c = core(COORD, w=3)
    out = c.receive("b1", push(AWORSet().add("c1", "milk")), 0.0)
    durable(c, out)
    (ask,) = {m.ask for _, m in sends(out) if isinstance(m, Replicate)}
    other = str(uuid.UUID(int=8, version=4))
    ignored = [
        deliver(c, FALLBACK, Stored(FALLBACK, LIST, ask)),
        deliver(c, SECOND, Stored(SECOND, other, ask)),
        deliver(c, SECOND, Stored(SECOND, LIST, ask + 1)),
        deliver(c, SECOND, Stored(SECOND, LIST, ask)),
        deliver(c, SECOND, Stored(SECOND, LIST, ask)),
    ]
    (reply,) = replies(deliver(c, THIRD, Stored(THIRD, LIST, ask)))
    assert ([[]] * 5, 3) == (ignored, reply.copies)  # type: ignore[union-attr]


def test_a_silent_holder_gets_a_hint_on_the_next_server_which_counts_toward_w() -> None:
    """Neither other holder answers within ``hint_after``: the next server of the
    list's preference order is asked to keep the push for one of them; its confirmation
    makes the quorum (sloppy quorum)."""
    c = core(COORD)
    durable(c, c.receive("b1", push(AWORSet().add("c1", "milk")), 0.0))
    early = c.on_timer(0.05)
    later = sends(c.on_timer(0.1))
    hints = [(to, m) for to, m in later if isinstance(m, Hint)]
    ((to, hint),) = hints
    assert isinstance(hint, Hint)
    taker = core(FALLBACK)
    confirmation = stored_answer(taker, COORD, hint)
    (reply,) = replies(deliver(c, FALLBACK, confirmation))
    assert ([], FALLBACK, SECOND, 2, 1, (), 1) == (
        early,
        to,
        hint.holder,
        reply.copies,  # type: ignore[union-attr]
        taker.hints,
        taker.list_ids(),
        taker.hints_taken,
    )


def test_a_holder_known_to_be_silent_gets_its_hint_at_once() -> None:
    """Once both other holders let a write's ``hint_after`` pass, the next push sends
    its hint at once; a message from a holder makes it count as answering again."""
    c, device = core(COORD), AWORSet()
    durable(c, c.receive("b1", push(device.add("c1", "milk"), "n.1"), 0.0))
    c.on_timer(0.1)
    second = sends(c.receive("b1", push(device.add("c1", "eggs"), "n.2"), 0.2))
    deliver(c, SECOND, Stored(SECOND, LIST, 1))  # any message: SECOND answers again
    third = sends(c.receive("b1", push(device.add("c1", "tea"), "n.3"), 0.3))
    assert (1, 0) == (
        sum(isinstance(m, Hint) for _, m in second),
        sum(isinstance(m, Hint) for _, m in third),
    )


def test_a_push_short_of_its_quorum_is_answered_unavailable_at_the_deadline() -> None:
    """No other server answers: at ``write_timeout`` the client hears the retryable
    ``unavailable`` with how many copies there were; a late confirmation changes
    nothing, and a retry asks every holder again."""
    c = core(COORD)
    out = c.receive("b1", push(AWORSet().add("c1", "milk")), 0.0)
    durable(c, out)
    c.on_timer(0.1)
    c.on_timer(0.2)
    (error,) = replies(c.on_timer(0.4))
    (ask,) = {m.ask for _, m in sends(out) if isinstance(m, Replicate)}
    late = deliver(c, SECOND, Stored(SECOND, LIST, ask))
    retry = sends(c.receive("b1", push(AWORSet().add("c1", "milk")), 0.5))
    assert isinstance(error, ErrorReply)
    assert ("unavailable", True, "1 of the 2 copies", [], {SECOND, THIRD}) == (
        error.code,
        error.retryable,
        error.detail[:17],
        late,
        {to for to, m in retry if isinstance(m, Replicate)},
    )


def test_a_hint_is_handed_to_its_holder_and_dropped_once_confirmed() -> None:
    """The hint taker hands the hint over at its next round; the holder makes it
    durable and confirms; the taker then drops the hint (from memory, and from its
    store at the digest the holder confirmed)."""
    store: FakeServerStore[AWORSet] = FakeServerStore(AWORSet)
    taker = core(FALLBACK, store)
    delta = AWORSet().add("c1", "milk")
    stored_answer(taker, COORD, Hint(COORD, LIST, SECOND, delta.to_dict(), 5))
    handed = [
        (to, m) for to, m in sends(taker._anti_entropy_round(1.0)) if isinstance(m, Replicate)
    ]
    ((to, replicate),) = handed
    holder = core(SECOND)
    confirmation = stored_answer(holder, FALLBACK, replicate)
    out = deliver(taker, SECOND, confirmation)
    (drop,) = out
    assert isinstance(drop, DropHint)
    assert (SECOND, True, 0, 1, True) == (
        to,
        store.drop_hint(drop),
        taker.hints,
        taker.hints_handed,
        delta <= holder.view(LIST),  # type: ignore[operator]
    )


def test_a_hint_that_grew_after_its_handoff_is_kept_and_handed_again() -> None:
    """A confirmation of an older state of a hint does not drop it: the part taken
    since would be lost."""
    taker = core(FALLBACK)
    stored_answer(taker, COORD, Hint(COORD, LIST, SECOND, AWORSet().add("c1", "a").to_dict(), 1))
    ((_, first),) = sends(taker._anti_entropy_round(1.0))[-1:]
    stored_answer(taker, COORD, Hint(COORD, LIST, SECOND, AWORSet().add("c2", "b").to_dict(), 2))
    assert isinstance(first, Replicate)
    kept = deliver(taker, SECOND, Stored(SECOND, LIST, first.ask))
    again = [m for _, m in sends(taker._anti_entropy_round(3.0)) if isinstance(m, Replicate)]
    (second,) = again
    grown = AWORSet.from_dict(second.delta)
    assert ([], 1, {"a", "b"}) == (kept, taker.hints, grown.value)


def test_hints_outlive_a_restart_of_the_server_keeping_them() -> None:
    """A hint is durable: a core built again from the store keeps it and hands it over."""
    store: FakeServerStore[AWORSet] = FakeServerStore(AWORSet)
    stored_answer(
        core(FALLBACK, store),
        COORD,
        Hint(COORD, LIST, THIRD, AWORSet().add("c1", "a").to_dict(), 1),
    )
    again = core(FALLBACK, store)
    handed = [
        (to, m.list_id)
        for to, m in sends(again._anti_entropy_round(1.0))
        if isinstance(m, Replicate)
    ]
    assert (1, [(THIRD, LIST)]) == (again.hints, handed)


def test_a_hint_a_server_should_not_keep_is_not_confirmed() -> None:
    """A hint naming a server that does not hold the list, or naming the receiver
    itself, is dropped unconfirmed; a hint to one of the list's holders is taken as a
    write of the list."""
    delta = AWORSet().add("c1", "a").to_dict()
    outsider = core(FALLBACK)
    wrong = [
        deliver(outsider, COORD, Hint(COORD, LIST, LAST, delta, 1)),
        deliver(outsider, COORD, Hint(COORD, LIST, FALLBACK, delta, 2)),
    ]
    holder = core(THIRD)
    stored_answer(holder, COORD, Hint(COORD, LIST, SECOND, delta, 3))
    assert ([[], []], 0, 0, (LIST,)) == (wrong, outsider.hints, holder.hints, holder.list_ids())


def test_a_failed_write_of_a_peer_is_not_confirmed() -> None:
    """A holder whose write of a replicated push fails stays silent (the coordinator
    then asks another server)."""
    c = core(SECOND)
    (write,) = writes(
        deliver(c, COORD, Replicate(COORD, LIST, AWORSet().add("c1", "a").to_dict(), 4))
    )
    assert ([], 0) == (c.persist_failed(write.token, "disk full", 0.0), c.pending_acks)


def test_the_write_quorum_is_checked_and_defaults_to_two() -> None:
    """W defaults to 2 (1 with a single copy of each list); W outside 1..N is refused."""
    with pytest.raises(ValueError, match="between 1 and the 3 servers"):
        core(COORD, w=4)
    with pytest.raises(ValueError, match="between 1 and the 3 servers"):
        write_quorum(0, 3)
    assert (2, 1, 3, 2) == (
        write_quorum(None, 3),
        write_quorum(None, 1),
        write_quorum(3, 3),
        core(COORD).write_quorum,
    )


def test_hints_go_to_the_fallbacks_in_order_and_no_further() -> None:
    """Each hint takes the next server after the holders; when they run out, none."""
    q = Quorum(None, LIST, {}, 3, (SECOND, THIRD), (FALLBACK, LAST), 0.0, 1.0)  # type: ignore[arg-type]
    first = q.hints({}, 2)
    none_left = q.hints({}, 2)
    q.confirm(FALLBACK)
    assert ([(FALLBACK, SECOND), (LAST, THIRD)], [], {SECOND}, 1) == (
        first,
        none_left,
        q.covered,
        q.short(),
    )


# -- the SQLite store ------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[ServerStore[AWORSet]]:
    store = ServerStore(tmp_path / "s.sqlite", AWORSet)
    yield store
    store.close()


def test_the_sqlite_store_keeps_hints_with_the_lists_and_drops_them_by_digest(
    tmp_path: Path, sqlite_store: ServerStore[AWORSet]
) -> None:
    """Hint writes join in the group commit; a drop at another digest keeps the hint;
    what is kept is there after reopening."""
    a, b = AWORSet().add("c1", "a"), AWORSet().add("c2", "b")
    sqlite_store.apply_many([(LIST, a)], [(LIST, SECOND, a), (LIST, SECOND, b), (LIST, THIRD, a)])
    both = (a | b).digest()
    kept = sqlite_store.drop_hint(LIST, SECOND, a.digest())
    dropped = sqlite_store.drop_hint(LIST, THIRD, a.digest())
    sqlite_store.close()
    again = ServerStore(tmp_path / "s.sqlite", AWORSet)
    try:
        hints: dict[tuple[str, str], Any] = again.hints()
        assert (False, True, {(LIST, SECOND): both}, a) == (
            kept,
            dropped,
            {k: v.digest() for k, v in hints.items()},
            again.load(LIST),
        )
    finally:
        again.close()


def test_a_damaged_hint_row_is_left_out(sqlite_store: ServerStore[AWORSet]) -> None:
    """A hint whose text no longer matches its digest is not handed over as it is."""
    a = AWORSet().add("c1", "a")
    sqlite_store.apply_many([], [(LIST, SECOND, a), (LIST, THIRD, a)])
    with sqlite_store._transaction("damage") as conn:
        conn.execute("UPDATE hints SET state = '{\"type\": 1}' WHERE holder = ?", (SECOND,))
    assert [(LIST, THIRD)] == list(sqlite_store.hints())


def test_a_retry_while_the_copies_are_on_their_way_joins_its_quorum() -> None:
    """A large push takes the other holders longer than the client waits: the client's
    retry (same request id) does not ask them again, it waits for the same copies, and
    their late confirmation acknowledges the retry."""
    c = core(COORD)
    delta = AWORSet().add("c1", "milk")
    first = c.receive("b1", push(delta, "big.1"), 0.0)
    durable(c, first)
    (ask,) = {m.ask for _, m in sends(first) if isinstance(m, Replicate)}
    retry = encode(Forward("client-2", SyncRequest("big.1", LIST, "c1", 1, None, delta.to_dict())))
    again = c.receive("b2", retry, 0.5)
    asked_again = [m for _, m in sends(again) if isinstance(m, Replicate | Hint)]
    durable(c, again, 0.5)
    timers = replies(c.on_timer(0.8))
    out = deliver(c, SECOND, Stored(SECOND, LIST, ask), 1.0)
    ((to, msg),) = sends(out)
    assert isinstance(msg, Deliver)
    assert ([], [], "b2", "client-2", 2) == (
        asked_again,
        timers,
        to,
        msg.client,
        msg.reply.copies,  # type: ignore[union-attr]
    )
