"""The handoff benchmark on a small scale: a server joins, every moved list ends on
exactly its new holders and is forgotten by the holder it left, and the check fails when
an old holder never forgets. Run ``.venv/bin/python bench/handoff.py`` for the figures;
nothing here asserts on time.
"""

from __future__ import annotations

from pathlib import Path

import handoff
import pytest
from scale import list_id_of

from reference_cluster.cores.server import MAX_HANDOFFS
from reference_cluster.protocol.placement import Membership
from reference_cluster.storage.server_store import ServerStore

LISTS = 300


@pytest.mark.parametrize("replicas", [3, 2])
def test_a_joining_server_gets_its_lists_and_the_old_holders_forget_them(
    tmp_path: Path, replicas: int
) -> None:
    """3 -> 4 servers over 300 lists: the lists whose holders change are those for which
    s4 is among the first N; each is handed once to each new holder (a ``replicate`` and
    a ``stored`` per holder), forgotten once, and the handoff ends within the rounds
    ``MAX_HANDOFFS`` allows (the outcome on every store is checked inside)."""
    report = handoff.measure_handoff(tmp_path, lists=LISTS, replicas=replicas)
    old, new = Membership(["s1", "s2", "s3"]), Membership(["s1", "s2", "s3", "s4"], 1)
    ids = [list_id_of(j) for j in range(LISTS)]
    moved = [k for k in ids if set(old.holders(k, replicas)) != set(new.holders(k, replicas))]
    assert (len(moved), len(moved)) == (report.moved, report.forgets)
    assert moved and all("s4" in new.holders(k, replicas) for k in moved)
    assert replicas * len(moved) == report.messages["replicate"] == report.messages["stored"]
    assert 1 <= report.rounds <= report.most_away // MAX_HANDOFFS + 2
    assert report.bytes["replicate"] > 0 and report.writes >= replicas * len(moved)
    lines = handoff.table([report])
    assert (
        lines[2]
        == f"| lists moved (one old holder each) | {len(moved):,} ({len(moved) / LISTS:.0%}) |"
    )


def test_an_old_holder_that_never_forgets_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``forget_list`` doing nothing, the moved lists stay on the holder that left
    them, and the benchmark says so instead of reporting figures."""
    monkeypatch.setattr(ServerStore, "forget_list", lambda _self, _list, _digest: False)
    with pytest.raises(AssertionError, match="holders"):
        handoff.measure_handoff(tmp_path, lists=100)


def test_a_handoff_that_cannot_finish_in_the_rounds_given_stops(tmp_path: Path) -> None:
    """Every loop is bounded: more lists to hand than one round allows, one round given."""
    with pytest.raises(TimeoutError, match="after 1 rounds"):
        handoff.measure_handoff(tmp_path, lists=6 * MAX_HANDOFFS, max_rounds=1)
