"""The placement benchmark on a small scale: it passes on this tree's placement and
cores, and each of its checks fails when what it checks is broken. Run
``.venv/bin/python bench/placement.py`` for the figures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import placement
import pytest

from reference_cluster.protocol.placement import holders

SMALL = ["--lists", "600", "--servers", "3,6,9"]


def test_a_small_run_passes_and_prints_a_row_per_m(capsys: pytest.CaptureFixture[str]) -> None:
    """600 lists on 3, 6 and 9 servers: every server within 20% of N/M, each core keeps
    what placement gives it."""
    assert 0 == placement.main(SMALL)
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert [3, 6, 9] == [int(row.split("|")[1]) for row in rows]
    assert all(row.endswith("| yes |") and "(each as placed)" in row for row in rows), rows
    assert not [line for line in lines if line.startswith("FAILED")]


def test_the_json_rows_hold_every_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 == placement.main([*SMALL, "--json"])
    out = json.loads(capsys.readouterr().out)
    placed = [sorted(row["placed"]) for row in out["rows"]]
    totals = [sum(row["placed"].values()) for row in out["rows"]]
    assert ([], [1800, 1800, 1800]) == (out["problems"], totals)
    assert [[f"s{j}" for j in range(1, m + 1)] for m in (3, 6, 9)] == [
        sorted(names, key=lambda s: int(s[1:])) for names in placed
    ]


def _skewed(list_id: str, members: Sequence[str], replicas: int) -> Sequence[str]:
    """Every list on the first N members."""
    return list(members)[:replicas]


def _one_copy_too_many(list_id: str, members: Sequence[str], replicas: int) -> Sequence[str]:
    return holders(list_id, members, replicas + 1)


def _hoarding(
    ids: Sequence[str], servers: Sequence[str], members: Sequence[str], replicas: int
) -> Mapping[str, int]:
    """Cores that keep every list they find in their store."""
    return dict.fromkeys(servers, len(ids))


def _cores_with_one_more_replica(
    ids: Sequence[str], servers: Sequence[str], members: Sequence[str], replicas: int
) -> Mapping[str, int]:
    """Real cores, started with a replica count the placement does not use."""
    return placement.core_counts(ids, servers, members, replicas + 1)


@pytest.mark.parametrize(
    ("argv", "stand_ins", "says"),
    [
        (["--tolerance", "0.005"], {}, "from the target"),
        ([], {"place": _skewed}, "s9 holds 0 lists, -100.0% from the target 200"),
        ([], {"place": _one_copy_too_many}, "copies of 600 lists, expected 1,800 (3 each)"),
        ([], {"keep": _hoarding}, "the core of s1 keeps 600 lists, placement gives it"),
        ([], {"keep": _cores_with_one_more_replica}, "the core of s"),
    ],
)
def test_each_check_can_fail(
    argv: list[str], stand_ins: dict[str, Any], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tolerance too tight, a placement that piles lists on some servers or makes a
    copy too many, and cores that keep more than placement gives them: exit status 1,
    with a FAILED line saying what."""
    assert 1 == placement.main([*SMALL, *argv], **stand_ins)
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAILED: ")]
    assert failed and any(says in line for line in failed), out
    assert "**no**" in out


@pytest.mark.parametrize(
    "argv", [["--lists", "0"], ["--servers", "3,x"], ["--tolerance", "1.5"], ["--replicas", "2,3"]]
)
def test_bad_arguments_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        placement.main(argv)
    assert (2, True) == (info.value.code, "error: argument" in capsys.readouterr().err)
