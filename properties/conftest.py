"""Shared pytest configuration: Hypothesis profiles.

``HYPOTHESIS_PROFILE`` selects one: ``ci`` (default; derandomized, bounded, what
``.ci/run`` uses), ``dev`` (random, a few more examples) or ``deep`` (thousands of
examples for long runs on demand).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Brokers
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
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two brokers and three servers with keys, one cluster per test module, on fast
    timing (every process it started is stopped by pid after the module)."""
    from reference_cluster.processes.cluster import LocalCluster, Timing, free_base_port
    from reference_cluster.processes.config import LocalLayout

    data = tmp_path_factory.mktemp("cluster")
    timing = Timing(heartbeat=0.25, anti_entropy=0.5, liveness=1.0, zmq_heartbeat=0.5)
    layout = LocalLayout("127.0.0.1", free_base_port())
    with LocalCluster(data, layout=layout, timing=timing) as running:
        running.start()
        yield running


@pytest.fixture
def clients(cluster: Any, tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    """Makes in-process clients of the module's cluster (a fresh store each, patient on a
    loaded machine) and closes them after the test."""
    from reference_cluster.cores.client import ClientConfig
    from reference_cluster.processes.client import Client
    from reference_cluster.shopping_list import ShoppingList
    from reference_cluster.storage.client_store import ClientStore

    made: list[Client] = []

    def make(name: str) -> Client:
        store: ClientStore[ShoppingList] = ClientStore(
            tmp_path / f"{name}-{len(made)}.sqlite", ShoppingList
        )
        client = Client(
            store,
            cluster.layout.frontends,
            broker_key=cluster.broker_key,
            config=ClientConfig(request_timeout=2.0),
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture(scope="module")
def brokers(cluster: Any) -> Brokers:
    """How the command line reaches the module's cluster: its front ends and key."""
    assert cluster.broker_key is not None
    return Brokers(cluster.layout.frontends, cluster.broker_key.decode())
