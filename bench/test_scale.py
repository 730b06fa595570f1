"""The scale benchmark's machinery on a small scale: stores are built, two cores agree
after every exchange it carries, edits are acknowledged and stored, and one run measures
the before and the after code. Run ``.venv/bin/python bench/scale.py`` for the figures;
nothing here asserts on time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import scale


@pytest.fixture(scope="module")
def lists_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 300 sample lists, built once for the module."""
    path = tmp_path_factory.mktemp("scale") / "lists.sqlite"
    scale.build_store(path, 300, progress=lambda _: None)
    return path


def test_this_tree_speaks_the_tree_protocol() -> None:
    """The code of this tree is detected as hash-tree anti-entropy with states on demand."""
    code = scale.Code.detect()
    assert (False, True) == (code.digests_protocol, code.core_takes_store)


def test_rounds_are_idle_then_repair_what_changed(lists_store: Path) -> None:
    """Idle rounds are one message; each repair leaves the changed lists equal on both
    sides (checked inside), and more changed lists cost more bytes."""
    out = scale.measure_lists(scale.Code.detect(), lists_store, 300, idle_rounds=2, repeats=1)
    repairs = out["repair"]
    sizes = [repairs[str(k)]["bytes"] for k in scale.REPAIR_KS]
    assert (1, ["1", "10", "100"]) == (out["idle"]["messages"], sorted(repairs, key=int))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_one_edit_is_acknowledged_and_written(tmp_path: Path) -> None:
    """Every timed edit is acknowledged and reaches the store (checked inside), and each
    writes something to SQLite."""
    out = scale.measure_edits(scale.Code.detect(), tmp_path, sizes=(10, 200), edits=2, warmup=1)
    assert ["10", "200"] == sorted(out, key=int)
    assert all(row["wchar"] > 0 and row["edits"] == 2 for row in out.values())


def test_one_run_measures_before_and_after(tmp_path: Path, capsys: Any) -> None:
    """A run over 200 lists measures both codes and prints a figure in each column."""
    assert 0 == scale.main(["--sizes", "200", "--only", "lists", "--workdir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    idle = next(x for x in lines if x.startswith("| idle round, 200 lists: bytes per peer"))
    cells = [c.strip() for c in idle.strip("|").split("|")]
    assert cells[1].endswith(" B") and cells[2].endswith(" B"), idle


def test_idle_round_benchmark(benchmark: Any, lists_store: Path) -> None:
    """Times one idle round between two cores holding 300 lists; it is one message."""
    code = scale.Code.detect()
    cores, sources, store = scale._pair(code, lists_store)
    names = {"a": "s1", "b": "s2"}
    try:
        scale.carry(cores, sources, names, "a")
        stats = benchmark.pedantic(
            scale.carry, args=(cores, sources, names, "a"), rounds=5, warmup_rounds=1
        )
    finally:
        if store is not None:
            store.close()
    assert 1 == stats.messages
