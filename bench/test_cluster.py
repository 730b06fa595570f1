"""The cluster benchmark's machinery, on a small scale: real sync requests are driven
through a broker to a server and acknowledged, at W = 1 and W = 2 with replies that
claim the copies W asks for, and the link proxies count the bytes of every edit. Run
``.venv/bin/python bench/cluster.py`` for the figures; nothing here asserts on time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster import (
    check_pairs,
    drive_frames,
    edit,
    edit_frames,
    lists_on,
    local_cluster,
    measure_quorum,
    measure_wire_bytes,
    quorum_table,
    signed_up_client,
)

from reference_cluster.protocol.messages import SyncReply, SyncRequest, decode, encode
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


def test_write_quorum_rows_are_measured_at_w1_and_w2(tmp_path: Path) -> None:
    """One round of the W = 1 against W = 2 measurement: the raw hop and both clusters
    give positive figures for 1 and 8 clients (each reply was checked inside to claim the
    copies its W asks for), and the table has a row for each."""
    report = measure_quorum(tmp_path, requests=80, warmup=16, rounds=1)
    medians = [report.median(s, c) for s in ("raw", "w1", "w2") for c in (1, 8)]
    lines = quorum_table(report)
    assert [("raw", "w1", "w2")] == report.orders
    assert all(m.median_us > 0 and m.per_second > 0 for m in medians), medians
    assert [1, 8] * 3 == [m.clients for m in medians]
    assert 2 == sum(line.startswith("| 3 servers, W = 1 |") for line in lines)
    assert 2 == sum(line.startswith("| 3 servers, W = 2 (default) |") for line in lines)


def _pair(copies: int | None) -> tuple[bytes, bytes]:
    list_id = lists_on("s1", ["s1", "s2", "s3"], 1)[0]
    (frame,) = edit_frames("t" * 32, list_id, "dev", 1)
    request = decode(frame)
    assert isinstance(request, SyncRequest)
    reply = SyncReply(request.request_id, list_id, ShoppingList().to_dict(), copies=copies)
    return frame, encode(reply)


def test_replies_are_checked_for_the_copies_their_write_quorum_asks() -> None:
    """A reply claiming one copy fails the W = 2 check, two or three pass it; at W = 1
    only exactly one passes."""
    check_pairs([_pair(2), _pair(3)], copies=2)
    check_pairs([_pair(1)], copies=1)
    for pairs, w in (([_pair(1)], 2), ([_pair(None)], 2), ([_pair(2)], 1)):
        with pytest.raises(AssertionError, match="copies"):
            check_pairs(pairs, copies=w)
