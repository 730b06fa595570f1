"""pytest-benchmark cases: every CRDT operation beside the same work on a plain set/dict.

Run with ``.venv/bin/python -m pytest bench --benchmark-only``; ``bench/ratios.py`` turns
the results into the ratio table. Each benchmark is grouped with its plain counterpart, so
pytest-benchmark's own table shows the two side by side. Nothing here asserts on time.
"""

from __future__ import annotations

from typing import Any

import pytest
from workloads import Case, cases

CASES = list(cases())


@pytest.mark.parametrize(
    ("case", "impl"),
    [(case, impl) for case in CASES for impl in ("crdt", "plain")],
    ids=[f"{case.id}-{impl}" for case in CASES for impl in ("crdt", "plain")],
)
def test_bench(benchmark: Any, case: Case, impl: str) -> None:
    """Times one side of a case; both sides of the case reach the same result."""
    pair = case.pair()
    workload = pair.crdt if impl == "crdt" else pair.plain
    benchmark.group = case.id
    benchmark.extra_info.update(case=case.id, impl=impl, ops=case.ops)
    result = benchmark.pedantic(
        workload.run,
        setup=lambda: (workload.setup(), {}),
        rounds=case.rounds,
        warmup_rounds=1,
    )
    other = pair.plain if impl == "crdt" else pair.crdt
    assert workload.value(result) == other.value(other.run(*other.setup()))
