"""The per-list delta log of both SQLite stores: a write appends the join of its deltas
and leaves the stored state alone, a fold joins the log into the state once the log
outweighs it, and whatever is read (a state, the digests a server starts from) is the join
of the stored state and every logged delta, across reopening, crashes and damage."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from crdts import AWORSet
from reference_cluster.errors import StoreCorrupt
from reference_cluster.shopping_list import ShoppingList
from reference_cluster.storage.client_store import ClientStore
from reference_cluster.storage.server_store import ServerStore
from reference_cluster.storage.sqlite import digest_of, encode

LIST_A = str(uuid.UUID(int=0xA1))
LIST_B = str(uuid.UUID(int=0xB2))
LIST_C = str(uuid.UUID(int=0xC3))
LISTS = (LIST_A, LIST_B, LIST_C)

# Every example writes durably (fsync); half the profile's examples is plenty.
on_disk = settings(max_examples=max(10, settings().max_examples // 2), deadline=None)


@contextlib.contextmanager
def temp_dir() -> Iterator[Path]:
    """A fresh directory per Hypothesis example (tmp_path is per test)."""
    with tempfile.TemporaryDirectory(prefix="delta-log-test-") as d:
        yield Path(d)


def query(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Rows of ``sql`` read through a separate connection (the store may be open)."""
    raw = sqlite3.connect(path)
    try:
        return list(raw.execute(sql, args).fetchall())
    finally:
        raw.close()


def base_text(path: Path, list_id: str) -> str:
    """The stored state text of a list (the base the log is joined onto)."""
    ((text,),) = query(path, "SELECT state FROM lists WHERE list_id = ?", list_id)
    assert isinstance(text, str)
    return text


def log_rows(path: Path, list_id: str) -> list[str]:
    """The logged delta texts of a list, oldest first."""
    rows = query(path, "SELECT delta FROM list_log WHERE list_id = ? ORDER BY seq", list_id)
    return [str(r[0]) for r in rows]


def items(n: int) -> tuple[ShoppingList, ShoppingList]:
    """A writer replica and a list holding ``n`` items it added."""
    writer, state = ShoppingList(), ShoppingList()
    for i in range(n):
        state.join(writer.add_item("w", f"item-{i}", 1))
    return writer, state


def text_written(path: Path, list_id: str, before: tuple[str, list[str]]) -> int:
    """Characters of state and delta text one write stored: the base's length if the
    base changed, plus the length of every log row it added."""
    base, logged = before
    after_base = base_text(path, list_id)
    after_log = log_rows(path, list_id) if _has_log(path) else []
    return (len(after_base) if after_base != base else 0) + sum(
        len(t) for t in after_log[len(logged) :]
    )


def _has_log(path: Path) -> bool:
    return bool(query(path, "SELECT 1 FROM sqlite_master WHERE name = 'list_log'"))


def snapshot(path: Path, list_id: str) -> tuple[str, list[str]]:
    """The base text and log texts of a list, to compare after a write."""
    return base_text(path, list_id), log_rows(path, list_id) if _has_log(path) else []


# -- server store: what one write costs ---------------------------------------------------


def test_an_edit_of_a_big_list_appends_one_small_row_and_leaves_the_base(tmp_path: Path) -> None:
    """One edit of a 10,000-item list leaves the stored state text as it was and adds one
    log row holding the edit's delta, a few hundred characters."""
    path = tmp_path / "s.db"
    writer, big = items(10_000)
    with ServerStore(path, ShoppingList) as store:
        store.apply_delta(LIST_A, big)
        before = base_text(path, LIST_A)
        store.apply_delta(LIST_A, writer.add_item("w", "one more", 2))
        assert before == base_text(path, LIST_A)
        logged = log_rows(path, LIST_A)
        assert 1 == len(logged)
        assert len(logged[0]) < 1000


def test_text_written_by_one_edit_does_not_grow_with_the_list(tmp_path: Path) -> None:
    """The text one edit stores is about the same for a 10-item and a 10,000-item list."""
    written: dict[int, int] = {}
    for n in (10, 10_000):
        path = tmp_path / f"s{n}.db"
        writer, state = items(n)
        with ServerStore(path, ShoppingList) as store:
            store.apply_delta(LIST_A, state)
            store.apply_delta(LIST_A, writer.add_item("w", "warm-up", 1))
            before = snapshot(path, LIST_A)
            store.apply_delta(LIST_A, writer.add_item("w", "the edit", 2))
            written[n] = text_written(path, LIST_A, before)
    assert written[10_000] <= 2 * written[10], written


def test_a_group_commit_logs_one_row_per_list(tmp_path: Path) -> None:
    """Several deltas for one list in one apply_many become one log row, their join."""
    path = tmp_path / "s.db"
    writer = AWORSet()
    with ServerStore(path, AWORSet) as store:
        store.apply_delta(LIST_A, writer.add("w", "first"))
        deltas = [writer.add("w", f"x{i}") for i in range(5)]
        took = store.apply_many([(LIST_A, d) for d in deltas] + [(LIST_B, deltas[0])])
        (row,) = log_rows(path, LIST_A)
        assert ({LIST_A, LIST_B}, writer, writer.digest()) == (
            took,
            store.load(LIST_A),
            store.digests()[LIST_A],
        )
    joined = AWORSet()
    for d in deltas:
        joined.join(d)
    assert joined == AWORSet.from_dict(json.loads(row))


# -- server store: folding ----------------------------------------------------------------


def test_the_log_folds_once_it_outweighs_the_base_and_loses_nothing(tmp_path: Path) -> None:
    """Writes to a small list fold the log into the stored state now and then (so the log
    never holds much more than the larger of the state and 4 kB); what loads is the join
    of every delta."""
    path = tmp_path / "s.db"
    writer = AWORSet()
    folds, last = 0, 0
    with ServerStore(path, AWORSet) as store:
        store.apply_delta(LIST_A, writer.add("w", "start"))
        for i in range(120):
            store.apply_delta(LIST_A, writer.add("w", f"item-{i}"))
            logged = log_rows(path, LIST_A)
            size = sum(len(t) for t in logged)
            folds += len(logged) < last
            last = len(logged)
            assert size <= max(len(base_text(path, LIST_A)), 4096) + 200
        assert (writer, writer.digest()) == (store.load(LIST_A), store.digests()[LIST_A])
    assert folds >= 1


def test_fold_writes_the_join_and_empties_the_log(tmp_path: Path) -> None:
    """fold(list_id) stores the join of the state and its log, with its digest, and drops
    the log rows; a list without a log is left as it is."""
    path = tmp_path / "s.db"
    writer = AWORSet()
    with ServerStore(path, AWORSet) as store:
        for i in range(5):
            store.apply_delta(LIST_A, writer.add("w", i))
        store.apply_delta(LIST_B, AWORSet().add("w", "b"))
        base_b = base_text(path, LIST_B)
        assert 4 == len(log_rows(path, LIST_A))
        store.fold(LIST_A)
        store.fold(LIST_B)
        rows = query(path, "SELECT state, digest FROM lists WHERE list_id = ?", LIST_A)
        assert ([], [(encode(writer), writer.digest())], base_b) == (
            log_rows(path, LIST_A),
            rows,
            base_text(path, LIST_B),
        )


# -- the law: any mix of writes, folds and reopening reads back as the join ----------------

server_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("apply"),
            st.lists(
                st.tuples(
                    st.sampled_from(LISTS), st.sampled_from("ab"), st.booleans(), st.integers(0, 5)
                ),
                min_size=1,
                max_size=4,
            ),
        ),
        st.tuples(st.just("fold"), st.sampled_from(LISTS)),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("digests")),
    ),
    max_size=14,
)


@on_disk
@given(server_ops, st.sampled_from([0, 64, 4096]))
def test_any_mix_of_writes_folds_and_reopening_reads_back_as_the_join(
    ops: list[tuple[object, ...]], fold_min: int
) -> None:
    """Whatever the order of apply_many, fold, reopening and digests(), each list loads as
    the join of every delta written to it, and digests() gives that join's digest."""
    replicas = {k: {r: AWORSet() for r in "ab"} for k in LISTS}
    model: dict[str, AWORSet] = {}
    with temp_dir() as d:
        store = ServerStore(d / "s.db", AWORSet)
        store.fold_min_bytes = fold_min
        try:
            for op in ops:
                if op[0] == "apply":
                    pairs = []
                    for list_id, replica, add, element in op[1]:  # type: ignore[attr-defined]
                        mine = replicas[list_id][replica]
                        delta = mine.add(replica, element) if add else mine.remove(replica, element)
                        for other in replicas[list_id].values():
                            other.join(delta)
                        model.setdefault(list_id, AWORSet()).join(delta)
                        pairs.append((list_id, delta))
                    assert {k for k, _ in pairs} == store.apply_many(pairs)
                elif op[0] == "fold":
                    store.fold(str(op[1]))
                elif op[0] == "reopen":
                    store.close()
                    store = ServerStore(d / "s.db", AWORSet)
                    store.fold_min_bytes = fold_min
                else:
                    assert {k: v.digest() for k, v in model.items()} == store.digests()
            loaded = {k: store.load(k) for k in LISTS}
            digests = store.digests()
        finally:
            store.close()
    assert {k: model.get(k) for k in LISTS} == loaded
    assert {k: v.digest() for k, v in model.items()} == digests


# -- crashes ------------------------------------------------------------------------------


def test_a_copy_taken_while_open_holds_every_logged_write(tmp_path: Path) -> None:
    """The database and its WAL copied aside while the store is open (what a power cut
    leaves) reopen with every returned write: load and digests() give the join, through
    the log rows, which digests() then folds."""
    path, copy = tmp_path / "s.db", tmp_path / "copy"
    writer = AWORSet()
    with ServerStore(path, AWORSet) as store:
        store.fold_min_bytes = 1 << 20
        store.apply_delta(LIST_B, writer.add("w", "b"))
        for i in range(30):
            store.apply_many([(LIST_A, writer.add("w", i)), (LIST_B, writer.add("w", -i))])
        copy.mkdir()
        for suffix in ("", "-wal"):
            shutil.copyfile(f"{path}{suffix}", f"{copy / 's.db'}{suffix}")
    logged = len(query(copy / "s.db", "SELECT seq FROM list_log"))
    with ServerStore(copy / "s.db", AWORSet) as store:
        states = {k: store.load(k) for k in (LIST_A, LIST_B)}
        digests = store.digests()
        left = len(query(copy / "s.db", "SELECT seq FROM list_log"))
    assert logged >= 59
    assert {k: s.digest() for k, s in states.items() if s is not None} == digests
    assert {i for i in range(30)} <= states[LIST_A].value  # type: ignore[union-attr]
    assert {-i for i in range(30)} | {"b"} <= states[LIST_B].value  # type: ignore[union-attr]
    assert 0 == left


# -- damage -------------------------------------------------------------------------------


def test_a_damaged_base_is_quarantined_and_its_log_still_joined(tmp_path: Path) -> None:
    """A stored state whose text no longer matches its digest loads as the join of its
    log rows alone, is quarantined, and digests() agrees with what loads."""
    path = tmp_path / "s.db"
    writer = AWORSet()
    with ServerStore(path, AWORSet) as store:
        store.apply_delta(LIST_A, writer.add("w", "old-aaaa"))
        later = [writer.add("w", "new-1"), writer.add("w", "new-2")]
        for d in later:
            store.apply_delta(LIST_A, d)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE lists SET state = replace(state, 'old-aaaa', 'old-aaab')")
    with ServerStore(path, AWORSet) as store:
        loaded = store.load(LIST_A)
        quarantined = [(q.list_id, "digest" in q.reason) for q in store.quarantined()]
        digests = store.digests()
    joined = later[0] | later[1]
    assert (joined, [(LIST_A, True)], {LIST_A: joined.digest()}) == (
        loaded,
        quarantined,
        digests,
    )


def test_a_damaged_log_row_is_quarantined_and_the_others_kept(tmp_path: Path) -> None:
    """A log row whose text does not match its digest, and one that does not decode, are
    copied to quarantine and dropped; the state and every other row still load."""
    path = tmp_path / "s.db"
    writer = AWORSet()
    with ServerStore(path, AWORSet) as store:
        store.fold_min_bytes = 1 << 20
        first = writer.add("w", "base")
        store.apply_delta(LIST_A, first)
        deltas = [writer.add("w", f"d{i}") for i in range(4)]
        for d in deltas:
            store.apply_delta(LIST_A, d)
    seqs = [r[0] for r in query(path, "SELECT seq FROM list_log ORDER BY seq")]
    garbage = '{"type": "AWORSet", "junk": 1}'
    with sqlite3.connect(path) as raw:
        raw.execute(
            "UPDATE list_log SET delta = replace(delta, 'd1', 'd9') WHERE seq = ?", (seqs[1],)
        )
        raw.execute(
            "UPDATE list_log SET delta = ?, digest = ? WHERE seq = ?",
            (garbage, digest_of(garbage), seqs[3]),
        )
    with ServerStore(path, AWORSet) as store:
        loaded = store.load(LIST_A)
        reasons = [q.reason for q in store.quarantined()]
        digests = store.digests()
    kept = first | deltas[0] | deltas[2]
    assert (kept, {LIST_A: kept.digest()}) == (loaded, digests)
    assert 2 == len(reasons)
    assert "digest" in reasons[0]
    assert "not a AWORSet" in reasons[1]
    assert [] == query(path, "SELECT seq FROM list_log")


def test_a_deleted_list_drops_its_log_and_set_owner_makes_an_empty_one(tmp_path: Path) -> None:
    """Deleting a list with logged writes drops its log rows; set_owner on an unknown
    list records it empty; create_list on a list with a log keeps its state."""
    path = tmp_path / "s.db"
    writer = AWORSet()
    with ServerStore(path, AWORSet) as store:
        assert store.create_list(LIST_A, "alice")
        for i in range(3):
            store.apply_delta(LIST_A, writer.add("w", i))
        assert not store.create_list(LIST_A, "alice")
        assert writer == store.load(LIST_A)
        store.delete_list(LIST_A, "alice")
        store.set_owner(LIST_B, "bob")
        assert (None, [], AWORSet(), {LIST_B: AWORSet().digest()}) == (
            store.load(LIST_A),
            log_rows(path, LIST_A),
            store.load(LIST_B),
            store.digests(),
        )


# -- client store -------------------------------------------------------------------------


def test_a_device_edit_of_a_big_list_writes_only_the_delta(tmp_path: Path) -> None:
    """On a device, an edit of a 10,000-item list leaves the stored state text alone and
    stores about what an edit of a 10-item list stores."""
    written: dict[int, int] = {}
    for n in (10, 10_000):
        path = tmp_path / f"c{n}.db"
        _, state = items(n)
        with ClientStore(path, ShoppingList) as store:
            store.merge(LIST_A, state)
            store.edit(LIST_A, lambda s, r: s.add_item(r, "warm-up", 1))
            before = snapshot(path, LIST_A)
            store.edit(LIST_A, lambda s, r: s.add_item(r, "the edit", 2))
            assert before[0] == base_text(path, LIST_A)
            written[n] = text_written(path, LIST_A, before)
    assert written[10_000] <= 2 * written[10], written


client_ops = st.lists(
    st.one_of(
        st.tuples(st.just("edit"), st.sampled_from(LISTS), st.booleans(), st.integers(0, 5)),
        st.tuples(st.just("merge"), st.sampled_from(LISTS), st.booleans(), st.integers(0, 5)),
        st.tuples(st.just("fold"), st.sampled_from(LISTS)),
        st.tuples(st.just("reopen")),
    ),
    max_size=14,
)


@on_disk
@given(client_ops, st.sampled_from([0, 64, 4096]))
def test_device_edits_merges_folds_and_reopening_read_back_as_the_join(
    ops: list[tuple[object, ...]], fold_min: int
) -> None:
    """On a device, any mix of edits, merges of a remote replica's deltas, folds and
    reopening loads each list as the join of everything written, and the next edit takes
    a fresh dot."""
    remote = {k: AWORSet() for k in LISTS}
    model: dict[str, AWORSet] = {}
    with temp_dir() as d:
        store = ClientStore(d / "c.db", AWORSet)
        store.fold_min_bytes = fold_min
        try:
            for op in ops:
                if op[0] == "edit":
                    _, list_id, add, element = op
                    assert isinstance(list_id, str)
                    delta, _ = store.edit(
                        list_id,
                        lambda s, r, a=add, e=element: s.add(r, e) if a else s.remove(r, e),
                    )
                    model.setdefault(list_id, AWORSet()).join(delta)
                elif op[0] == "merge":
                    _, list_id, add, element = op
                    assert isinstance(list_id, str)
                    mine = remote[list_id]
                    delta = mine.add("srv", element) if add else mine.remove("srv", element)
                    model.setdefault(list_id, AWORSet()).join(delta)
                    store.merge(list_id, delta)
                elif op[0] == "fold":
                    store.fold(str(op[1]))
                else:
                    store.close()
                    store = ClientStore(d / "c.db", AWORSet)
                    store.fold_min_bytes = fold_min
            loaded = {k: store.load(k) for k in LISTS}
            saved = {k: s.state for k, s in store.saved().items()}
            fresh, _ = store.edit(LIST_A, lambda s, r: s.add(r, "after"))
        finally:
            store.close()
    expected = {k: model.get(k) for k in LISTS}
    assert expected == {k: v if k in model else None for k, v in loaded.items()}
    assert {k: v for k, v in expected.items() if v is not None} == {
        k: v for k, v in saved.items() if k in model
    }
    (dot,) = fresh.dots_of("after")
    assert not model.get(LIST_A, AWORSet()).context.contains(dot)


def test_a_damaged_device_log_row_leaves_the_list_out_and_names_it(tmp_path: Path) -> None:
    """A device's log row that no longer matches its digest makes that list damaged (left
    out of saved(), named by damaged(), no write to it) while the others load."""
    path = tmp_path / "c.db"
    with ClientStore(path, AWORSet) as store:
        store.fold_min_bytes = 1 << 20
        store.edit(LIST_A, lambda s, r: s.add(r, "milk"))
        store.edit(LIST_A, lambda s, r: s.add(r, "eggs"))
        store.edit(LIST_B, lambda s, r: s.add(r, "tea"))
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE list_log SET delta = replace(delta, 'eggs', 'eggz')")
    with ClientStore(path, AWORSet) as store:
        saved, damaged = sorted(store.saved()), store.damaged()
        try:
            store.edit(LIST_A, lambda s, r: s.add(r, "tea"))
        except StoreCorrupt as exc:
            refused = LIST_A in str(exc)
        else:
            refused = False
    assert ([LIST_B], [LIST_A], True) == (saved, list(damaged), refused)
    assert "table list_log" in damaged[LIST_A]


def test_quiet_logs_are_folded_and_fresh_ones_wait(tmp_path: Path) -> None:
    """fold_quiet folds the lists logged before its previous call, at most ``limit`` of
    them, and leaves a list first logged since then alone; what reads back is unchanged."""
    path = tmp_path / "s.sqlite"
    with ServerStore(path, AWORSet) as store:
        for list_id in LISTS:
            store.apply_delta(list_id, AWORSet().add("w", "first"))
        for list_id in (LIST_A, LIST_B):
            store.apply_delta(list_id, AWORSet().add("w", "second"))
        assert 0 == store.fold_quiet(10)  # the first call only sets the mark
        store.apply_delta(LIST_C, AWORSet().add("w", "second"))
        first = store.fold_quiet(1)
        logged_after_one = [bool(log_rows(path, k)) for k in LISTS]
        store.apply_delta(LIST_A, AWORSet().add("w", "third"))
        before = {k: store.load(k) for k in LISTS}
        second = store.fold_quiet(10)
        after = {k: store.load(k) for k in LISTS}
    assert (1, [False, True, True]) == (first, logged_after_one)
    assert (2, [True, False, False]) == (second, [bool(log_rows(path, k)) for k in LISTS])
    assert before == after
