"""A damaged stored state is quarantined on load, never served: the server starts without
it, keeps the list's owner, and anti-entropy brings the state back from the peers.

The damage is done the way a disk or a stray tool would do it: bytes changed in the file
(same length, so SQLite's own integrity check still passes), a row rewritten with garbage
under a matching digest, text that is no longer UTF-8.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cluster_harness import poll

from reference_cluster.cli.shoplist import main as shoplist
from reference_cluster.cores.client import ClientConfig
from reference_cluster.cores.server import ServerCore
from reference_cluster.errors import StoreCorrupt
from reference_cluster.processes.client import Client
from reference_cluster.processes.cluster import LocalCluster, Timing, free_base_port
from reference_cluster.processes.config import LocalLayout
from reference_cluster.protocol.effects import Effect, Persist, Send
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.client_store import ClientSession, ClientStore
from reference_cluster.storage.server_store import ServerStore
from reference_cluster.storage.sqlite import digest_of, encode

LIST_A = str(uuid.UUID(int=0xA))
LIST_B = str(uuid.UUID(int=0xB))
LIST_C = str(uuid.UUID(int=0xC))
OWNER = "u-alice"


def a_list(name: str, *items: str, deleted: bool = False) -> ShoppingList:
    """A shopping list named ``name`` holding ``items`` (deleted afterwards if asked)."""
    s = ShoppingList()
    s.rename("r1", name)
    for item in items:
        s.add_item("r1", item, 2)
    if deleted:
        s.delete("r1")
    return s


def fill(path: Path, lists: Mapping[str, ShoppingList]) -> None:
    """A server store holding ``lists``, each owned by OWNER, each whole in its stored
    state (its log folded: these tests damage the stored state)."""
    with ServerStore(path, ShoppingList) as store:
        for list_id, state in lists.items():
            store.create_list(list_id, OWNER)
            store.apply_delta(list_id, state)
            store.fold(list_id)


def flip_in_file(path: Path, text: str, old: bytes, new: bytes) -> None:
    """Change ``old`` to ``new`` (same length) inside the one copy of ``text`` in the
    file's bytes, as a bad disk sector or a stray write would; SQLite is not involved."""
    assert len(old) == len(new)
    data = path.read_bytes()
    needle = text.encode("ascii")
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, "the state must be in the file once"
    inner = needle.index(old)
    path.write_bytes(data[: at + inner] + new + data[at + inner + len(old) :])


def start(store: ServerStore[ShoppingList]) -> dict[str, ShoppingList | None]:
    """What a server reads as it starts and then loads each list on demand: the stored
    digests, then every live list's state."""
    return {list_id: store.load(list_id) for list_id in store.digests()}


def integrity(path: Path) -> str:
    """What SQLite's own integrity check says of the file."""
    with sqlite3.connect(path) as raw:
        return str(raw.execute("PRAGMA integrity_check").fetchone()[0])


# -- the store ----------------------------------------------------------------------------


def test_a_same_length_byte_change_is_quarantined_and_the_others_load(tmp_path: Path) -> None:
    """A state changed in one byte on disk passes SQLite's integrity check, but loads as an
    empty list with its owner kept, sits in quarantine, and the other lists load intact;
    the stored digest then agrees with what loads."""
    path = tmp_path / "s.sqlite"
    a, b = a_list("Weekend", "milk-aaaa"), a_list("Party", "chips")
    fill(path, {LIST_A: a, LIST_B: b})
    flip_in_file(path, encode(a), b"milk-aaaa", b"milk-aaab")
    assert "ok" == integrity(path)
    with ServerStore(path, ShoppingList) as store:
        loaded = start(store)
        assert {LIST_A: ShoppingList(), LIST_B: b} == loaded
        assert {LIST_A: ShoppingList().digest(), LIST_B: b.digest()} == store.digests()
        quarantined = [(q.list_id, "digest" in q.reason) for q in store.quarantined()]
        owners = store.owners()
    assert ([(LIST_A, True)], {LIST_A: OWNER, LIST_B: OWNER}) == (quarantined, owners)


def test_an_undecodable_row_under_a_valid_digest_is_quarantined(tmp_path: Path) -> None:
    """Garbage text stored with its own correct digest does not stop the store from
    loading: the row is quarantined with the reason, kept byte for byte."""
    path = tmp_path / "s.sqlite"
    b = a_list("Party", "chips")
    fill(path, {LIST_A: a_list("Weekend", "milk"), LIST_B: b})
    garbage = '{"type": "ShoppingList", "v": 1, "junk": true}'
    with sqlite3.connect(path) as raw:
        raw.execute(
            "UPDATE lists SET state = ?, digest = ? WHERE list_id = ?",
            (garbage, digest_of(garbage), LIST_A),
        )
    with ServerStore(path, ShoppingList) as store:
        loaded = start(store)
        reasons = [q.reason for q in store.quarantined()]
        owner = store.owner(LIST_A)
    with sqlite3.connect(path) as raw:
        kept = raw.execute("SELECT state, reason FROM quarantine").fetchall()
    assert {LIST_A: ShoppingList(), LIST_B: b} == loaded
    assert (OWNER, 1, garbage) == (owner, len(kept), kept[0][0])
    assert "not a ShoppingList" in reasons[0]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("state", b"\xff"),  # no longer UTF-8: the driver cannot even read it as text
        ("digest", b"\xff"),
        ("owner", b"\xff"),
    ],
)
def test_a_byte_that_breaks_utf8_is_quarantined_not_a_crash(
    tmp_path: Path, column: str, value: bytes
) -> None:
    """A byte changed to 0xff in a text column leaves every other list loading and the
    damaged one quarantined (an owner that no longer reads is dropped, to be learned
    again from the peers)."""
    path = tmp_path / "s.sqlite"
    b = a_list("Party", "chips")
    fill(path, {LIST_A: a_list("Weekend", "milk"), LIST_B: b})
    with sqlite3.connect(path) as raw:
        raw.execute(
            f"UPDATE lists SET {column} = CAST(substr({column}, 1, 2) || ? || "  # column: literal
            f"substr({column}, 4) AS TEXT) WHERE list_id = ?",
            (value, LIST_A),
        )
    with ServerStore(path, ShoppingList) as store:
        loaded = start(store)
        quarantined = [q.list_id for q in store.quarantined()]
        owners = store.owners()
    assert ({LIST_A: ShoppingList(), LIST_B: b}, [LIST_A]) == (loaded, quarantined)
    assert OWNER == owners.get(LIST_B)


def test_a_deleted_list_keeps_its_owner_and_deletion_flag_in_quarantine(tmp_path: Path) -> None:
    """A store-level tombstone whose row is damaged stays a tombstone with its owner when
    the whole file is checked (load_all, quarantine_damaged: no start reads a deleted
    list's state)."""
    path = tmp_path / "s.sqlite"
    fill(path, {LIST_A: a_list("Weekend", "milk")})
    with ServerStore(path, ShoppingList) as store:
        store.delete_list(LIST_A, OWNER)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE lists SET state = 'garbage' WHERE list_id = ?", (LIST_A,))
        raw.execute("UPDATE lists SET owner = ? WHERE list_id = ?", (OWNER, LIST_A))
    with ServerStore(path, ShoppingList) as store:
        assert {} == store.load_all()
        after = (store.is_deleted(LIST_A), store.owner(LIST_A), len(store.quarantined()))
    assert (True, OWNER, 1) == after


def test_a_damaged_row_found_by_a_write_does_not_fail_the_group(tmp_path: Path) -> None:
    """A row damaged while the store is open (by another program) does not fail the next
    group commit, which writes every list; the next load sets the damaged state aside and
    keeps what was written after it."""
    path = tmp_path / "s.sqlite"
    fill(path, {LIST_A: a_list("Weekend", "milk"), LIST_B: a_list("Party")})
    more_a, more_b = a_list("Weekend"), a_list("Party", "chips")
    with ServerStore(path, ShoppingList) as store:
        start(store)
        with sqlite3.connect(path) as raw:
            raw.execute("UPDATE lists SET state = 'garbage' WHERE list_id = ?", (LIST_A,))
        written = store.apply_many([(LIST_A, more_a), (LIST_B, more_b)])
        states = (store.load(LIST_A), len(store.quarantined()))
    assert {LIST_A, LIST_B} == set(written)
    assert (more_a, 1) == states


def test_a_row_whose_list_id_is_unreadable_leaves_the_live_table(tmp_path: Path) -> None:
    """A list id damaged into something that is not a list id is moved out entirely."""
    path = tmp_path / "s.sqlite"
    b = a_list("Party", "chips")
    fill(path, {LIST_A: a_list("Weekend", "milk"), LIST_B: b})
    with sqlite3.connect(path) as raw:
        raw.execute(
            "UPDATE lists SET list_id = CAST(x'ff' || substr(list_id, 2) AS TEXT) "
            "WHERE list_id = ?",
            (LIST_A,),
        )
    with ServerStore(path, ShoppingList) as store:
        loaded = start(store)
        ids = (store.list_ids(), sorted(store.owners()), len(store.quarantined()))
    assert ({LIST_B: b}, ([LIST_B], [LIST_B], 1)) == (loaded, ids)


def test_a_state_damaged_under_an_intact_digest_is_set_aside_when_read(tmp_path: Path) -> None:
    """digests() cannot see a byte changed in a stored state whose digest is intact; the
    first load of that list (a request, a repair, the server core's sweep) sets it aside,
    and the stored digest then agrees with what loads."""
    path = tmp_path / "s.sqlite"
    a, b, c = a_list("Weekend", "milk-aaaa"), a_list("Party", "chips"), a_list("Other")
    fill(path, {LIST_A: a, LIST_B: b, LIST_C: c})
    flip_in_file(path, encode(a), b"milk-aaaa", b"milk-aaab")
    with ServerStore(path, ShoppingList) as store:
        before = store.digests()[LIST_A]
        loaded = {k: store.load(k) for k in (LIST_A, LIST_B, LIST_C)}
        found = [q.list_id for q in store.quarantined()]
        digests = store.digests()
    empty = ShoppingList().digest()
    assert (a.digest(), [LIST_A]) == (before, found)
    assert (
        {LIST_A: ShoppingList(), LIST_B: b, LIST_C: c},
        {
            LIST_A: empty,
            LIST_B: b.digest(),
            LIST_C: c.digest(),
        },
    ) == (loaded, digests)


def exchange(
    cores: Mapping[str, ServerCore[ShoppingList]], store: ServerStore[ShoppingList]
) -> int:
    """Run anti-entropy rounds between the cores until no message is left, writing what
    ``s1`` persists into ``store``; return how many messages went."""
    now = 100.0
    queue: list[tuple[str, Effect]] = []
    for name, core in cores.items():
        core.start(now)
        queue.extend((name, e) for e in core.on_timer(now + 1.0))
    sent = 0
    for _ in range(1000):
        if not queue:
            break
        sender, effect = queue.pop(0)
        if isinstance(effect, Persist):
            if sender == "s1":
                store.apply_many([(effect.list_id, effect.delta)])
            continue
        assert isinstance(effect, Send)
        if effect.to in cores:
            sent += 1
            out = cores[effect.to].receive_message(sender, effect.message, now)
            queue.extend((effect.to, e) for e in out)
    return sent


def test_anti_entropy_refetches_a_quarantined_list_even_a_deleted_one(tmp_path: Path) -> None:
    """A server whose list A (live) and list B (deleted by its owner) were quarantined
    gets both states back whole from a peer in one anti-entropy round, stores them, and
    keeps their owner."""
    path = tmp_path / "s1.sqlite"
    states = {
        LIST_A: a_list("Weekend", "milk"),
        LIST_B: a_list("Party", "chips", deleted=True),
        LIST_C: a_list("Other", "tea"),
    }
    fill(path, states)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE lists SET state = 'garbage' WHERE list_id IN (?, ?)", (LIST_A, LIST_B))
    with ServerStore(path, ShoppingList) as store:
        loaded = store.load_all()

        def core(name: str, lists: Mapping[str, ShoppingList]) -> ServerCore[ShoppingList]:
            return ServerCore(
                name,
                ShoppingList,
                peers=["s1", "s2"],
                brokers=[],
                lists=lists,
                rng=random.Random(1),
            )

        cores = {"s1": core("s1", loaded), "s2": core("s2", states)}
        exchange(cores, store)
        digests = {k: cores["s1"].digest(k) for k in states}
        stored = {k: store.load(k) for k in states}
        owners = store.owners()
    assert {k: v.digest() for k, v in states.items()} == digests
    assert states == stored
    assert dict.fromkeys(states, OWNER) == owners


# -- real processes -----------------------------------------------------------------------

TIMING = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5)
DEADLINE = 20.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """One broker and two servers, stopped by pid at the end."""
    layout = LocalLayout("127.0.0.1", free_base_port(brokers=1, servers=2), brokers=1, servers=2)
    with LocalCluster(tmp_path / "data", layout=layout, timing=TIMING) as running:
        running.start()
        yield running


@pytest.mark.parametrize("garbage", [False, True], ids=["one byte", "one byte and garbage"])
def test_a_restarted_server_with_a_damaged_store_converges_again(
    cluster: LocalCluster, tmp_path: Path, garbage: bool
) -> None:
    """Stop a server, change one byte of its row of a live list (and write garbage into
    its row of a deleted list), restart it: it starts, and within a deadline its digests
    of both lists equal its peer's, while it keeps their owner."""
    store: ClientStore[ShoppingList] = ClientStore(tmp_path / "alice.sqlite", ShoppingList)
    config = ClientConfig(request_timeout=2.0)
    client = Client(store, cluster.layout.frontends, broker_key=cluster.broker_key, config=config)
    try:
        session = client.sign_up(f"alice-{uuid.uuid4().hex[:6]}", "correct horse battery")
        live, gone = client.create("Weekend"), client.create("Party")
        client.edit(live, lambda s, r: s.add_item(r, "milk-aaaa", 2))
        client.edit(gone, lambda s, r: s.add_item(r, "chips", 1))
        assert client.sync().ok
        client.edit(gone, lambda s, r: s.delete(r))
        assert client.sync().ok
        want = {k: st.digest() for k in (live, gone) if (st := client.state(k)) is not None}
    finally:
        client.close()

    def digests(server: str) -> dict[str, str | None] | None:
        status = cluster.server_status(server)
        return None if status is None else {k: status.digests.get(k) for k in want}

    poll(lambda: digests("s1") == digests("s2") == want, "both servers hold both", timeout=DEADLINE)
    cluster.stop("s1")
    path = cluster.data_dir / "s1.sqlite"
    with ServerStore(path, ShoppingList) as s1:
        s1.fold(live)  # the whole state in the stored state, the row the flip damages
        stored = s1.load(live)
    assert stored is not None
    flip_in_file(path, encode(stored), b"milk-aaaa", b"milk-aaab")
    if garbage:
        with sqlite3.connect(path) as raw:
            raw.execute("UPDATE lists SET state = 'garbage' WHERE list_id = ?", (gone,))
    cluster.restart("s1")
    damaged = sorted([live, gone] if garbage else [live])

    def found() -> list[str]:
        with ServerStore(path, ShoppingList) as s1:
            return sorted(q.list_id for q in s1.quarantined())

    # The server starts from the stored digests, which still claim the old states; its
    # sweep reads the lists back, sets the damage aside, and anti-entropy refills them.
    poll(
        lambda: found() == damaged and digests("s1") == want,
        "the restarted server finds the damage and converges",
        timeout=DEADLINE,
    )
    cluster.stop("s1")
    with ServerStore(path, ShoppingList) as s1:
        owners = {k: s1.owner(k) for k in want}
    assert dict.fromkeys(want, session.user_id) == owners


# -- the device store ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [
        ("lists", "state", "garbage"),
        ("lists", "state", b"{\xff"),  # not even UTF-8 text any more
        ("outbox", "delta", '{"type": "ShoppingList"}'),
    ],
)
def test_a_damaged_list_on_a_device_is_left_out_and_names_itself(
    tmp_path: Path, table: str, column: str, value: str | bytes
) -> None:
    """A device whose list A is damaged starts with list B only, names A and what is wrong,
    refuses to write to A (nothing changes, so no dot is reused), and edits B."""
    path = tmp_path / "alice.sqlite"
    with ClientStore(path, ShoppingList) as store:
        store.edit(LIST_A, lambda s, r: s.add_item(r, "milk", 1))
        store.edit(LIST_B, lambda s, r: s.add_item(r, "tea", 1))
    with sqlite3.connect(path) as raw:
        raw.execute(
            f"UPDATE {table} SET {column} = CAST(? AS TEXT) WHERE list_id = ?",  # literals
            (value, LIST_A),
        )
    with ClientStore(path, ShoppingList) as store:
        saved = sorted(store.saved())
        damaged = store.damaged()
        if table == "lists":  # the state holds the dots: no write without it
            with pytest.raises(StoreCorrupt, match=LIST_A):
                store.edit(LIST_A, lambda s, r: s.add_item(r, "eggs", 1))
            assert 2 == store.next_seq(LIST_A)
        store.edit(LIST_B, lambda s, r: s.add_item(r, "eggs", 1))
    assert ([LIST_B], [LIST_A]) == (saved, list(damaged))
    assert f"table {table}" in damaged[LIST_A]


def test_the_command_line_names_a_damaged_list_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``shoplist lists`` shows the good lists and names the damaged one on stderr;
    ``shoplist show`` of the damaged one is a one-line error naming it."""
    home = tmp_path / "home"
    home.mkdir()
    with ClientStore(home / "alice.sqlite", ShoppingList) as store:
        store.set_session(ClientSession("alice", "u-1", "token", 4e9))
        store.edit(LIST_A, lambda s, r: s.rename(r, "Weekend"))
        store.edit(LIST_B, lambda s, r: s.rename(r, "Party"))
    with sqlite3.connect(home / "alice.sqlite") as raw:
        raw.execute("UPDATE lists SET state = 'garbage' WHERE list_id = ?", (LIST_A,))
    flags = ["--home", str(home), "--user", "alice", "--offline"]
    listed = shoplist([*flags, "lists"])
    out, err = capsys.readouterr()
    shown = shoplist([*flags, "show", LIST_A])
    _, show_err = capsys.readouterr()
    assert (0, True, False) == (listed, "Party" in out, "Weekend" in out)
    assert f"list {LIST_A} is damaged on this device" in err
    assert 1 == shown
    assert [f"shoplist: error: list {LIST_A} is damaged"] == [
        line[: len("shoplist: error: list ") + 36 + len(" is damaged")]
        for line in show_err.splitlines()
    ]
