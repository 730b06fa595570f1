"""The raw pyzmq hop with one durable commit per request: the cluster's latency floor.

Run with ``.venv/bin/python -m pytest bench/test_raw_hop.py -s`` to see the figures; a
benchmark of the real cluster measures itself the same way in the same run and reports
``raw_hop.ratio(cluster, raw)``. Nothing here asserts on time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from raw_hop import (
    TABLE_HEADER,
    HopStats,
    committed_rows,
    drive_req,
    ratio,
    raw_hop,
    summarize,
)


def test_raw_hop_with_1_and_8_clients(tmp_path: Path) -> None:
    """Every request is echoed and committed once; the figures are consistent."""
    requests = {1: 2000, 8: 4000}
    with raw_hop(tmp_path) as endpoint:
        results = {n: drive_req(endpoint, clients=n, requests=k) for n, k in requests.items()}
    print(f"\n{TABLE_HEADER}")
    for stats in results.values():
        print(stats.row("raw hop + durable commit"))
    warmups = 2 * 200
    assert sum(requests.values()) + warmups == committed_rows(tmp_path)
    for clients, stats in results.items():
        assert (clients, requests[clients]) == (stats.clients, stats.requests)
        assert 0 < stats.median_us <= stats.p99_us
        assert stats.per_second > 0


def test_summary_and_ratio_arithmetic() -> None:
    """Median, p99 and throughput come from the samples; ratios divide like for like."""
    samples = [i / 1e6 for i in range(1, 101)]  # 1..100 microseconds
    stats = summarize(samples, clients=2, elapsed=0.5)
    assert HopStats(2, 100, 50.5, 100.0, 200.0) == stats
    slower = HopStats(2, 100, 75.75, 150.0, 100.0)
    assert {"median": 1.5, "p99": 1.5, "throughput": 0.5} == ratio(slower, stats)
    with pytest.raises(ValueError, match="at least one round trip"):
        summarize([], clients=1, elapsed=1.0)
