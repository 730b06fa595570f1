"""Shared pytest configuration: Hypothesis profiles.

``HYPOTHESIS_PROFILE`` selects one: ``ci`` (default; derandomized, bounded, what
``.ci/run`` uses), ``dev`` (random, a few more examples) or ``deep`` (thousands of
examples for long runs on demand).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, Verbosity, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
settings.register_profile("dev", max_examples=150, deadline=None, print_blob=True)
settings.register_profile(
    "deep",
    max_examples=5_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=list(Phase),
    verbosity=Verbosity.normal,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A running local cluster's broker front ends, one cluster per test module (every
    process it started is stopped by pid after the module)."""
    from reference_cluster.processes.cluster import LocalCluster, Timing, free_base_port
    from reference_cluster.processes.config import LocalLayout

    data = tmp_path_factory.mktemp("cluster")
    timing = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5)
    layout = LocalLayout("127.0.0.1", free_base_port())
    with LocalCluster(data, layout=layout, timing=timing) as cluster:
        cluster.start()
        yield layout.frontends
