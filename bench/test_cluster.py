"""The cluster benchmark's machinery, on a small scale: real sync requests are driven
through a broker to a server and acknowledged, and the link proxies count the bytes of
every edit. Run ``.venv/bin/python bench/cluster.py`` for the figures; nothing here
asserts on time.
"""

from __future__ import annotations

from pathlib import Path

from cluster import (
    check_pairs,
    drive_frames,
    edit,
    edit_frames,
    lists_on,
    local_cluster,
    measure_wire_bytes,
    signed_up_client,
)

from reference_cluster.protocol.placement import preference
from reference_cluster.shopping_list import ShoppingList


def test_driven_edits_are_acknowledged_and_reach_every_server(tmp_path: Path) -> None:
    """Two REQ clients' edits each get their own acknowledgement, and every server ends
    with exactly the state the edits build."""
    with local_cluster(tmp_path / "cluster") as cluster:
        client = signed_up_client(
            tmp_path, "bench", cluster.layout.frontends, broker_key=cluster.broker_key
        )
        try:
            token = client.core.token
            assert token is not None
            lists = lists_on("s1", cluster.servers, 2)
            replica = client.core.replica  # a session belongs to one device
            frames = [edit_frames(token, k, replica, 40) for k in lists]
            stats, pairs = drive_frames(
                cluster.layout.frontend(0), frames, warmup=5, broker_key=cluster.broker_key
            )
            check_pairs(pairs)
            status = cluster.server_status("s1", states=True)
        finally:
            client.close()
    state = ShoppingList()
    for n in range(40):
        edit(state, replica, n)
    expected = [state.to_dict()] * 2
    assert (2, 70, 80) == (stats.clients, stats.requests, len(pairs))
    assert ["s1", "s1"] == [preference(k, cluster.servers)[0] for k in lists]
    assert status is not None
    assert expected == [status.states[k] for k in lists]


def test_wire_bytes_are_counted_on_every_kind_of_link(tmp_path: Path) -> None:
    """An edit crosses the client's link, the broker-server links and the server-server
    links, and is counted on each."""
    rows = measure_wire_bytes(tmp_path, sizes=(10,), edits=5, quiet=0.5)
    assert [10] == [r.items for r in rows]
    row = rows[0]
    assert row.client_broker > 300 and row.broker_server > 300 and row.server_server > 100
    assert row.first > 0 and row.last > 0
